#!/usr/bin/env python3
"""Issue 13's benchmarks: what a network of its own costs a task. Two `hearth up` (release
build) side by side, one giving every task its own network (the default), one started with
`--insecure-shared-network` (tasks share the machine's, as before): the baseline, measured in
the same run.

  setup    making a task's network inside its launch (the shim's `net_setup_ms`, from each
           job's `started` file), over N small jobs: median and p95 (goal: median < 50 ms)
  shuffle  bench/jobs/shuffle.py (20M rows, two shuffles, local[2]) `submit --wait`, own
           network vs shared, alternating: ratio of medians (goal <= 1.02)
  connect  Spark Connect `select 1` warm through the gateway, own network vs shared, in
           alternating blocks: ratio of medians (goal <= 1.02)

Usage (as root, after scripts/test.sh; the runtime's python has pyspark for `connect`):
  cargo build --release -p hearth
  /var/cache/hearth/test-runtime/bin/python bench/network.py [setup|shuffle|connect|all] [--runs N]
"""
import argparse, importlib.util, json, os, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/platform.py would shadow the standard library's `platform` (pyspark imports it).
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
spec = importlib.util.spec_from_file_location("hearth_platform_bench", os.path.join(HERE, "platform.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
ROOT, BIN = bench.ROOT, bench.BIN
SLEEPY = os.path.join(ROOT, "crates", "hearth", "tests", "apps", "sleepy.py")
SHUFFLE = os.path.join(ROOT, "bench", "jobs", "shuffle.py")


def wait_all(h, ids):
    while True:
        jobs = {j["id"]: j for j in h.api("/api/v1/jobs?limit=1000")["jobs"]}
        if all(jobs.get(i, {}).get("state") in ("succeeded", "failed") for i in ids):
            return jobs
        time.sleep(0.5)


def setup(runs):
    h = bench.Hearth("--engine-cores", "1")
    try:
        ids = []
        for _ in range(runs):
            out = h.cli(h.user, "submit", "--num-executors", "0", "--driver-memory", "512m", SLEEPY, "1", "0")
            ids.append(int(out.stdout.strip()))
        wait_all(h, ids)
        ms = []
        for i in ids:
            started = json.load(open(os.path.join(h.work, "data", "jobs", f"{i}-1", "task", "started")))
            ms.append(started["net_setup_ms"])
    finally:
        h.close()
    ms.sort()
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"| setup: a task's own network made inside its launch, {len(ms)} jobs | "
          f"median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {max(ms):.1f} ms | - | median < 50 ms |")


def side_by_side(*extra):
    """Two instances side by side: own networks (the default) and shared (the baseline),
    each with its own gateway port and no cluster port."""
    def one(*more):
        return bench.Hearth("--connect-listen", f"127.0.0.1:{bench.free_port()}", "--cluster-listen", "off",
                            *extra, *more)
    return one(), one("--insecure-shared-network")


def submit_wait(h, *args):
    t = time.perf_counter()
    out = h.cli(h.user, "submit", "--wait", *args)
    if out.returncode != 0:
        sys.exit(f"job failed: {out.stderr[-2000:]}")
    return time.perf_counter() - t


def shuffle(runs):
    own, shared = side_by_side()
    args = ("--num-executors", "1", "--driver-memory", "2g", "--executor-memory", "1g", SHUFFLE)
    try:
        submit_wait(own, *args)  # warm the page cache
        a, b = [], []
        for r in range(runs):
            # Alternate which goes first, so drift hits both alike.
            pair = [(own, a), (shared, b)] if r % 2 == 0 else [(shared, b), (own, a)]
            for h, times in pair:
                times.append(submit_wait(h, *args))
    finally:
        own.close()
        shared.close()
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| shuffle: bench/jobs/shuffle.py submit --wait, own network vs shared, {runs} runs each | "
          f"own {ma:.2f} s, shared {mb:.2f} s (median) | ratio {ma / mb:.3f} | <= 1.02 |")


def connect(runs):
    from pyspark.sql import SparkSession
    own, shared = side_by_side("--engine-cores", "1")
    sessions = []
    try:
        for h in (own, shared):
            out = h.cli(h.user, "connect")
            url = [l for l in out.stdout.splitlines() if l.startswith("export SPARK_REMOTE=")][0]
            token = url.split("x-hearth-token=", 1)[1].strip("'\"")
            port = url.split("sc://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
            # Plaintext h2c to `localhost` (as a notebook's kernels speak), so that one
            # process can talk to two Hearths with different CAs.
            url = f"sc://localhost:{port}/;x-hearth-token={token}"
            s = SparkSession.builder.remote(url).create()
            s.sql("select 1").collect()  # starts the engine
            for _ in range(20):
                s.sql("select 1").collect()
            sessions.append(s)
        times = ([], [])
        for r in range(runs):
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                for _ in range(10):
                    t = time.perf_counter()
                    sessions[k].sql("select 1").collect()
                    times[k].append(time.perf_counter() - t)
    finally:
        own.close()
        shared.close()
    ma, mb = statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000
    print(f"| connect: select 1 warm through the gateway, own network vs shared, {runs * 10} calls each | "
          f"own {ma:.2f} ms, shared {mb:.2f} ms (median) | ratio {ma / mb:.3f} | <= 1.02 |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", nargs="?", default="all", choices=["setup", "shuffle", "connect", "all"])
    p.add_argument("--runs", type=int, default=0)
    a = p.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p hearth")
    if a.what in ("setup", "all"):
        setup(a.runs or 30)
    if a.what in ("shuffle", "all"):
        shuffle(a.runs or 5)
    if a.what in ("connect", "all"):
        connect(a.runs or 30)


if __name__ == "__main__":
    main()
