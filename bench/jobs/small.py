"""The benchmark's small PySpark job (as measured in shared/notes/spark-runtime.md):
a 10M-row count and a groupBy."""
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

spark = SparkSession.builder.appName("bench-small").getOrCreate()
df = spark.range(10_000_000)
print("count", df.count())
print("groups", df.groupBy((F.col("id") % 100).alias("k")).count().count())
spark.stop()
