"""A job with a Spark UI worth looking at: runs one Spark job, says `ready`, then waits
SECONDS (default 300) so that its UI can be visited while it runs."""
import sys, time
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("ui-job").getOrCreate()
print("count", spark.range(1000).count(), flush=True)
print("ready", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 300)
spark.stop()
