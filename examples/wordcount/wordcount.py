"""Hearth's example job: count the words of a small text with PySpark.

Run it with the README's first command, or by hand:
    hearth submit examples/wordcount/wordcount.py --files examples/wordcount/hearth.txt --follow --wait

Reads the text shipped with --files, prints the ten most frequent words, and writes every
count to wordcount/counts.csv in your workspace (the job's working directory).
"""

import sys

from pyspark import SparkFiles
from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def main(argv):
    name = argv[1] if len(argv) > 1 else "hearth.txt"
    out = argv[2] if len(argv) > 2 else "wordcount"
    spark = SparkSession.builder.appName("wordcount").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")

    lines = spark.read.text(SparkFiles.get(name))
    words = (
        lines.select(F.explode(F.split(F.lower(F.col("value")), r"[^a-z']+")).alias("word"))
        .where(F.length("word") > 0)
    )
    counts = words.groupBy("word").count().orderBy(F.desc("count"), F.asc("word"))

    total = words.count()
    print(f"{total} words, {counts.count()} distinct")
    print("top 10:")
    for row in counts.limit(10).collect():
        print(f"  {row['word']:<12} {row['count']}")

    counts.coalesce(1).write.mode("overwrite").option("header", True).csv(out)
    print(f"all counts written to {out}/ in your workspace")
    spark.stop()


if __name__ == "__main__":
    main(sys.argv)
