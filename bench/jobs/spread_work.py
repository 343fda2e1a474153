"""The multi-node benchmark's job (bench/multinode.py): CPU-bound work meant for two
executors of one core each, with a shuffle between them, ending in a checksum that is right
only if every partition was computed.

  spark-submit spread_work.py [ROUNDS]

Each of 8 partitions hashes its 20,000 numbers ROUNDS times (pure-Python work in the
executors' Python workers, so the executors, not the driver, do the computing), then the
results are grouped by key across partitions (a shuffle: each executor fetches the other's
blocks) and summed into one checksum. The default (ROUNDS=160) is sized for about 25 s of
wall time on two executors of the idle development machine (estimated from the Python work
alone); on a loaded machine it takes several times that.
"""
import hashlib
import sys

from pyspark.sql import SparkSession

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 160
PARTITIONS = 8
PER_PARTITION = 20_000

spark = SparkSession.builder.appName("bench-spread-work").getOrCreate()
sc = spark.sparkContext


def work(n):
    h = n.to_bytes(8, "little")
    for _ in range(ROUNDS):
        h = hashlib.sha256(h).digest()
    return (n % 97, int.from_bytes(h[:4], "little"))


pairs = sc.parallelize(range(PARTITIONS * PER_PARTITION), PARTITIONS).map(work)
# The shuffle: 97 keys over 4 reduce partitions, built from all 8 map partitions.
by_key = pairs.reduceByKey(lambda a, b: (a + b) % (1 << 61), 4).collect()
checksum = sum(v * (k + 1) for k, v in by_key) % (1 << 61)
print("keys: %d" % len(by_key))
print("checksum: %d" % checksum)
spark.stop()
