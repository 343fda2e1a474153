"""A shuffle-heavy local job: 20M rows grouped by 200k keys over all its cores, then
joined back (two shuffles), for bench/network.py."""
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

spark = SparkSession.builder.appName("bench-shuffle").getOrCreate()
df = spark.range(20_000_000).withColumn("k", F.col("id") % 200_000)
sums = df.groupBy("k").agg(F.sum("id").alias("s"))
print("rows", df.join(sums, "k").count())
spark.stop()
