# A job meant to run on several nodes: its executors say where they run (in their own
# output, which Spark's workers keep in files that Hearth copies into the job's log),
# and the driver prints a sum that is right only if every partition was computed.
import socket
import sys
import time

from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("spread").getOrCreate()
sc = spark.sparkContext


partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 8
# Seconds each partition takes, to keep a job running while a test kills a node.
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


def tagged(index, rows):
    rows = list(rows)
    time.sleep(pause)
    print("partition %d computed on %s" % (index, socket.gethostname()), flush=True)
    return [sum(rows)]

total = sc.parallelize(range(1, 100001), partitions).mapPartitionsWithIndex(tagged).sum()
# A shuffle: executors fetch each other's blocks, across nodes.
groups = dict(
    sc.parallelize(range(1000), partitions).map(lambda x: (x % 10, 1)).reduceByKey(lambda a, b: a + b, 4).collect()
)
print("groups: %d of %s" % (len(groups), sorted(set(groups.values()))))
executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1
print("sum: %d" % total)
print("executors: %d" % executors)
spark.stop()
