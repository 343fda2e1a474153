"""Prints N numbered lines, one every INTERVAL seconds, then exits 0. No SparkSession: a
cheap stand-in for a long job (spark-submit still launches it through Spark's JVM)."""
import sys, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
# Something private in this job's /tmp, for other jobs to fail to see.
with open("/tmp/sleepy-was-here", "w") as f:
    f.write("private")
for i in range(n):
    print(f"line {i:05d}", flush=True)
    time.sleep(interval)
print("sleepy done", flush=True)
