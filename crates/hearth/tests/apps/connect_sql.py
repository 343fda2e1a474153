"""Runs SQL through Spark Connect with stock PySpark: connect_sql.py URL SQL...

Prints one line per statement: `OK <rows as JSON>` or `ERROR <what the client raised>`.
Leaves the session open (no spark.stop()), so a later run with the same session_id finds
its temp views.
"""
import json
import sys

from pyspark.sql import SparkSession

url, statements = sys.argv[1], sys.argv[2:]
try:
    spark = SparkSession.builder.remote(url).getOrCreate()
except Exception as e:  # noqa: BLE001 - the test reads whatever the client says
    print("ERROR", " ".join(str(e).split())[:400], flush=True)
    sys.exit(0)
for sql in statements:
    # Test choreography: @signal FILE makes FILE; @wait FILE waits (up to 5 min) for it.
    if sql.startswith("@signal "):
        open(sql.split(" ", 1)[1], "w").close()
        continue
    if sql.startswith("@wait "):
        import os, time
        path, deadline = sql.split(" ", 1)[1], time.time() + 300
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.1)
        continue
    try:
        if sql == "@groupby":
            df = spark.createDataFrame([("a", 1), ("b", 2), ("a", 3)], ["k", "v"])
            rows = sorted([r["k"], r["total"]] for r in df.groupBy("k").agg({"v": "sum"}).withColumnRenamed("sum(v)", "total").collect())
        else:
            rows = [list(r) for r in spark.sql(sql).collect()]
        print("OK", json.dumps(rows), flush=True)
    except Exception as e:  # noqa: BLE001
        print("ERROR", " ".join(str(e).split())[:400], flush=True)
