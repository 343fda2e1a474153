#!/usr/bin/env python3
"""Spark Connect gateway overhead: `spark.sql("select 1").collect()`, warm, median of 100,
through Hearth's gateway vs straight to the same engine (with its secret, read from the data
dir as root). Calls alternate between the two so machine noise hits both alike.

    CARGO_TARGET_DIR=/work/target-connect cargo build --release -p hearth
    /opt/hearth-dev-runtime/bin/python bench/connect.py \
        --bin /work/target-connect/release/hearth --runtime /opt/hearth-dev-runtime

Needs the runtime's pyspark (run it with the runtime's python) and root (hearth up makes the
user's Linux account). Target: gateway / direct <= 1.05.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import sys
import time

# bench/platform.py would shadow the standard library's `platform`, which pyspark imports.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]
from pyspark.sql import SparkSession  # noqa: E402

ADMIN_PASSWORD = "bench-admin-password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(binary, config, *args, stdin=None):
    return subprocess.run([binary, "--config", config, *args], input=stdin, text=True,
                          capture_output=True, check=True).stdout


def timed(spark, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        spark.sql("select 1").collect()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runtime", required=True)
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hearth-bench-connect-")
    data, port, cport = os.path.join(work, "data"), free_port(), free_port()
    env = dict(os.environ, HEARTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
    server = subprocess.Popen(
        [args.bin, "up", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
         "--connect-listen", f"127.0.0.1:{cport}", "--runtime", args.runtime],
        env=env, stdout=open(os.path.join(work, "server.log"), "w"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        admin, user = os.path.join(work, "admin.json"), os.path.join(work, "bench.json")
        cli(args.bin, admin, "login", "--server", url, "--user", "admin", "--password-stdin",
            stdin=ADMIN_PASSWORD + "\n")
        cli(args.bin, admin, "user", "add", "benchuser", "--password-stdin", stdin="bench-password-1\n")
        cli(args.bin, user, "login", "--server", url, "--user", "benchuser", "--password-stdin",
            stdin="bench-password-1\n")
        token = json.load(open(user))["token"]
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = os.path.join(data, "tls", "ca.pem")

        t = time.perf_counter()
        # `localhost`: plaintext h2c, as the direct connection is; `127.0.0.1`: TLS.
        gw = SparkSession.builder.remote(f"sc://localhost:{cport}/;token={token}").create()
        gw.sql("select 1").collect()
        cold = time.perf_counter() - t
        gw_tls = SparkSession.builder.remote(f"sc://127.0.0.1:{cport}/;token={token}").create()
        sessions = json.loads(cli(args.bin, user, "sessions", "-o", "json"))
        eid = sessions[0]["id"]
        spec = json.load(open(os.path.join(data, "engines", str(eid), "task", "spec.json")))
        eport = next(a.split("=", 1)[1] for a in spec["argv"]
                     if a.startswith("spark.connect.grpc.binding.port="))
        props = open(os.path.join(data, "engines", str(eid), "conf", "spark.properties")).read()
        secret = next(l.split("=", 1)[1] for l in props.splitlines()
                      if l.startswith("spark.connect.authenticate.token="))
        direct = SparkSession.builder.remote(f"sc://localhost:{eport}/;token={secret}").create()

        for s in (gw, gw_tls, direct):
            timed(s, 20)  # warm-up
        results = {"gateway": [], "gateway_tls": [], "direct": []}
        for _ in range(args.n):
            results["gateway"] += timed(gw, 1)
            results["gateway_tls"] += timed(gw_tls, 1)
            results["direct"] += timed(direct, 1)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"cold start (first query, engine start included): {cold:.1f} s")
        for k, v in med.items():
            print(f"select 1 warm, median of {args.n}, {k:12}: {v:.2f} ms")
        print(f"ratio gateway (h2c) / direct: {med['gateway'] / med['direct']:.3f}")
        print(f"ratio gateway (TLS) / direct: {med['gateway_tls'] / med['direct']:.3f}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
