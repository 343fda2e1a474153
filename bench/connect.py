#!/usr/bin/env python3
"""Spark Connect through Hearth's gateway, against the same engine reached directly.

Warm: `spark.sql("select 1").collect()`, median of N, through the gateway vs straight to the
same engine (with its secret, read from the data dir as root; Sail's guarded port lets root
in). Each round calls every route once, in a fresh random order, so machine noise hits all
alike. Each route is measured with both forms of a token: Spark's `;token=` (per-call gRPC
credentials in PySpark, a Python callback each call) and plain metadata (`;x-hearth-token=`
through the gateway, `;authorization=Bearer SECRET` straight to a JVM engine); ratios compare
like with like. Targets: JVM engine <= 1.05, Sail <= 1.2.

Cold (--cold K): time to the first result for a user with no engine, Hearth (the gateway starts
the engine) vs a Connect server started by hand with the same settings, alternating, K each.
Targets: JVM ratio <= 1.1; Sail under 1 s.

    cargo build --release -p hearth
    /var/cache/hearth/test-runtime/bin/python bench/connect.py \
        --bin target/release/hearth --runtime /var/cache/hearth/test-runtime [--engine sail] [--cold 3]

With --keep the data dir and server.log stay; run with HEARTH_LOG=hearth_server=debug,
hearth_agent=debug and server.log times the cold path's steps (admission and ports, the
engine's directory, the shim starting the task, the engine ready: `start_ms`).

Needs the runtime's pyspark (run it with the runtime's python) and root (hearth up makes the
user's Linux account).
"""
import argparse
import json
import os
import random
import re
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


def wait_listening(port, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def by_hand_cold(args, spark_home):
    """A Connect server started by hand as the docs say, to its first answer."""
    port = free_port()
    t = time.perf_counter()
    if args.engine == "sail":
        cmd = [os.path.join(args.runtime, "bin", "sail"), "spark", "server", "--ip", "127.0.0.1",
               "--port", str(port)]
    else:
        cmd = [os.path.join(spark_home, "bin", "spark-submit"), "--class",
               "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", "local[2]",
               "--driver-memory", "2g", "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
               "--conf", f"spark.connect.grpc.binding.port={port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_listening(port)
        s = SparkSession.builder.remote(f"sc://localhost:{port}").create()
        s.sql("select 1").collect()
        took = time.perf_counter() - t
        s.stop()
        return took
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runtime", required=True)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--engine", choices=["spark", "sail"], default="spark")
    ap.add_argument("--cold", type=int, default=0, help="cold-start rounds (each side)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the data dir and server.log (run with HEARTH_LOG=debug for the "
                         "cold path's steps, timed)")
    args = ap.parse_args()
    extra = ";x-hearth-engine=sail" if args.engine == "sail" else ""
    work = tempfile.mkdtemp(prefix="hearth-bench-connect-")
    data, port, cport = os.path.join(work, "data"), free_port(), free_port()
    env = dict(os.environ, HEARTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
    server = subprocess.Popen(
        [args.bin, "up", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
         "--connect-listen", f"127.0.0.1:{cport}", "--cluster-listen", "off",
         "--runtime", args.runtime],
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
        gw = SparkSession.builder.remote(f"sc://localhost:{cport}/;token={token}{extra}").create()
        gw.sql("select 1").collect()
        cold = time.perf_counter() - t
        sessions = json.loads(cli(args.bin, user, "sessions", "-o", "json"))
        eid = sessions[0]["id"]
        spec = json.load(open(os.path.join(data, "engines", str(eid), "task", "spec.json")))
        if args.engine == "sail":
            eport = spec["argv"][spec["argv"].index("--port") + 1]
            secret = None
        else:
            eport = next(a.split("=", 1)[1] for a in spec["argv"]
                         if a.startswith("spark.connect.grpc.binding.port="))
            props = open(os.path.join(data, "engines", str(eid), "conf", "spark.properties")).read()
            secret = next(l.split("=", 1)[1] for l in props.splitlines()
                          if l.startswith("spark.connect.authenticate.token="))
        # The routes, each a client of its own. PySpark sends `;token=` through gRPC call
        # credentials (a Python callback per call) and any other `;key=value` as plain
        # metadata, so each route is measured with both forms of the token where it has one:
        # `x-hearth-token` is Hearth's plain form; a direct JVM engine takes its secret as a
        # plain `authorization` header just as well. Sail checks no token: its direct route
        # has none (what a user of Sail by hand runs), and a dummy `;token=` shows what the
        # call credentials alone cost.
        routes = {
            "gateway": f"sc://localhost:{cport}/;token={token}{extra}",
            "gateway_tls": f"sc://127.0.0.1:{cport}/;token={token}{extra}",
            "gateway_plain": f"sc://localhost:{cport}/;x-hearth-token={token}{extra}",
            "gateway_plain_tls": f"sc://127.0.0.1:{cport}/;use_ssl=true;x-hearth-token={token}{extra}",
        }
        if secret is None:
            routes["direct"] = f"sc://localhost:{eport}"
            routes["direct_token"] = f"sc://localhost:{eport}/;token=unused"
        else:
            routes["direct_token"] = f"sc://localhost:{eport}/;token={secret}"
            routes["direct"] = f"sc://localhost:{eport}/;authorization=Bearer {secret}"
        spark = {k: gw if k == "gateway" else SparkSession.builder.remote(u).create()
                 for k, u in routes.items()}
        for s in spark.values():
            timed(s, 20)  # warm-up
        results = {k: [] for k in spark}
        order = list(spark)
        for _ in range(args.n):
            # A fresh order each round: no route always follows the same one.
            random.shuffle(order)
            for k in order:
                results[k] += timed(spark[k], 1)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"cold start (first query, engine start included): {cold:.1f} s")
        for k, v in med.items():
            print(f"select 1 warm, median of {args.n}, {k:17}: {v:.2f} ms")
        # Like for like: the same form of credentials on both sides.
        print(f"ratio gateway / direct, ;token= (h2c / TLS): {med['gateway'] / med['direct_token']:.3f}"
              f" / {med['gateway_tls'] / med['direct_token']:.3f}")
        print(f"ratio gateway / direct, plain metadata (h2c / TLS): "
              f"{med['gateway_plain'] / med['direct']:.3f} / {med['gateway_plain_tls'] / med['direct']:.3f}")
        if secret is None:
            print(f"ratio gateway ;token= / Sail without a token (h2c / TLS): "
                  f"{med['gateway'] / med['direct']:.3f} / {med['gateway_tls'] / med['direct']:.3f}")
        # Released now: PySpark releases open sessions at exit, and retries for minutes
        # against a server already gone.
        for s in spark.values():
            s.stop()
        if args.cold:
            spark_home = os.path.join(args.runtime, "lib", next(
                d for d in os.listdir(os.path.join(args.runtime, "lib")) if d.startswith("python")),
                "site-packages", "pyspark")
            hearth_cold, hand_cold = [], []
            for _ in range(args.cold):
                for e in json.loads(cli(args.bin, user, "sessions", "-o", "json")):
                    cli(args.bin, user, "session", "stop", str(e["id"]))
                t = time.perf_counter()
                # The URL `hearth connect` prints (plain metadata; h2c on localhost).
                s = SparkSession.builder.remote(
                    f"sc://localhost:{cport}/;x-hearth-token={token}{extra}").create()
                s.sql("select 1").collect()
                hearth_cold.append(time.perf_counter() - t)
                s.stop()
                hand_cold.append(by_hand_cold(args, spark_home))
            hc, bc = statistics.median(hearth_cold), statistics.median(hand_cold)
            print(f"cold, median of {args.cold}: Hearth {hc:.2f} s, by hand {bc:.2f} s, "
                  f"ratio {hc / bc:.3f}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        # What went wrong, if anything, on Hearth's side.
        for line in open(os.path.join(work, "server.log"), errors="replace"):
            # tracing colours its levels even into a file.
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            if " WARN " in line or " ERROR " in line:
                print("server:", line.rstrip())
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
