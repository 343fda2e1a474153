#!/usr/bin/env python3
"""Web console benchmark: how fast the console's page and its first page of jobs load with
10,000 jobs in history, and what 1,000 live jobs cost the event stream.

Starts a real `hearth up` (no Spark runtime: queued jobs stay queued), stops it, writes the
job history straight into its SQLite store (the same columns as crates/server/src/store.rs),
starts it again and times requests over keep-alive connections, like a browser's. GET /healthz
in the same run is the baseline: the ratios say what the console adds to a bare request.

    CARGO_TARGET_DIR=/work/target-web cargo build --release -p hearth
    python3 bench/web.py --bin /work/target-web/release/hearth

Stdlib only. Run as root (hearth up creates Linux users only for users added; none are here).
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ADMIN_PASSWORD = "bench-admin-password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, data_dir, port):
        self.binary, self.data_dir, self.port = binary, data_dir, port
        self.proc = None

    def start(self):
        env = dict(os.environ, HEARTH_ADMIN_PASSWORD=ADMIN_PASSWORD, HEARTH_LOG="warn")
        self.log = open(os.path.join(os.path.dirname(self.data_dir), "server.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "up", "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{self.port}",
             # No runtime: jobs stay queued, so the live jobs below stay live.
             "--runtime", os.path.join(os.path.dirname(self.data_dir), "no-runtime")],
            env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if request(self.conn(), "GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("hearth up did not come up; see server.log")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


def request(conn, method, path, headers=None, body=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def timed(conn, path, headers=None, n=50):
    """Milliseconds of n sequential GETs over one keep-alive connection (after one warm-up)."""
    status, _ = request(conn, "GET", path, headers)
    assert status == 200, f"{path}: {status}"
    out = []
    for _ in range(n):
        t = time.perf_counter()
        status, body = request(conn, "GET", path, headers)
        out.append((time.perf_counter() - t) * 1000)
        assert status == 200, f"{path}: {status}"
    return out, len(body)


def stats(ms):
    ms = sorted(ms)
    return statistics.median(ms), ms[max(0, int(round(0.95 * len(ms))) - 1)]


def insert_jobs(db, owner_id, owner, finished, live):
    spec = json.dumps({"main": {"name": "etl.py", "sha256": "0" * 64}, "args": ["--day", "2024-01-01"]})
    res = json.dumps({"driver_cores": 1, "driver_memory_mib": 1024, "executor_cores": 1,
                      "executor_memory_mib": 1024, "num_executors": 1})
    now = int(time.time() * 1000)
    rows = []
    start = now - finished * 60_000
    for i in range(finished):
        sub = start + i * 60_000
        state, code = random.choice([("succeeded", 0)] * 8 + [("failed", 1), ("cancelled", None)])
        rows.append((owner_id, owner, f"etl-{i}", state, spec, res, sub, sub + 500, sub + 4000,
                     sub + 40_000, code, None if state == "succeeded" else "exited with 1"))
    for i in range(live):
        rows.append((owner_id, owner, f"live-{i}", "queued", spec, res, now - i, None, None, None,
                     None, None))
    c = sqlite3.connect(db)
    with c:
        c.executemany(
            "INSERT INTO jobs (user_id, owner, name, state, spec, resources, submitted_at, started_at,"
            " running_at, finished_at, exit_code, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    c.close()


def first_event(port, headers):
    """Seconds until the first `jobs` event of /api/v1/events, and its size in bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t = time.perf_counter()
    conn.request("GET", "/api/v1/events", headers=dict(headers, Accept="text/event-stream"))
    r = conn.getresponse()
    assert r.status == 200, r.status
    size = 0
    while True:
        line = r.fp.readline()
        size += len(line)
        if line.startswith(b"data:") and size > 100:
            took = time.perf_counter() - t
            conn.close()
            return took, size


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="/work/target-web/release/hearth")
    ap.add_argument("--jobs", type=int, default=10_000, help="finished jobs in history")
    ap.add_argument("--live", type=int, default=1_000, help="queued (live) jobs")
    ap.add_argument("--loads", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    args = ap.parse_args()
    random.seed(1)

    work = tempfile.mkdtemp(prefix="hearth-bench-web-")
    data = os.path.join(work, "data")
    srv = Server(args.bin, data, free_port())
    srv.start()
    status, body = request(srv.conn(), "POST", "/api/v1/login", {"content-type": "application/json"},
                           json.dumps({"user": "admin", "password": ADMIN_PASSWORD}))
    assert status == 200, body
    token = json.loads(body)["token"]
    srv.stop()
    t = time.perf_counter()
    insert_jobs(os.path.join(data, "hearth.db"), 1, "admin", args.jobs, 0)
    print(f"inserted {args.jobs} finished jobs in {time.perf_counter() - t:.2f}s")
    srv.start()
    auth = {"Authorization": f"Bearer {token}"}
    conn = srv.conn()

    results = {}
    results["GET /healthz (baseline)"] = timed(conn, "/healthz", n=args.loads)
    results["GET / (console page)"] = timed(conn, "/", n=args.loads)
    results["GET /assets/app.js"] = timed(conn, "/assets/app.js", n=args.loads)
    results["GET /api/v1/whoami"] = timed(conn, "/api/v1/whoami", auth, n=args.loads)
    results["GET /api/v1/jobs?limit=200 (console's first page)"] = timed(
        conn, "/api/v1/jobs?limit=200", auth, n=args.loads)
    results["GET /api/v1/jobs?state=failed&limit=200"] = timed(
        conn, "/api/v1/jobs?state=failed&limit=200", auth, n=args.loads)
    results["GET /metrics (scans all jobs)"] = timed(conn, "/metrics", auth, n=args.loads)

    # A whole cold page load as the browser makes it: the page, its two assets, who am I,
    # the first page of jobs, one after another on one connection.
    cold = []
    for _ in range(args.loads):
        t = time.perf_counter()
        for path, h in [("/", {}), ("/assets/app.js", {}), ("/assets/style.css", {}),
                        ("/api/v1/whoami", auth), ("/api/v1/jobs?limit=200", auth)]:
            s, _ = request(conn, "GET", path, h)
            assert s == 200, path
        cold.append((time.perf_counter() - t) * 1000)
    results["page load: / + assets + whoami + jobs?limit=200"] = (cold, 0)

    base = stats(results["GET /healthz (baseline)"][0])[0]
    print(f"\n{args.jobs} jobs in history, {args.loads} loads each, keep-alive, release build")
    print(f"{'request':58} {'median ms':>10} {'p95 ms':>8} {'x healthz':>10} {'bytes':>9}")
    for name, (ms, size) in results.items():
        med, p95 = stats(ms)
        print(f"{name:58} {med:10.2f} {p95:8.2f} {med / base:10.1f} {size or '':>9}")

    # Live jobs: what the event stream costs with 1,000 queued jobs.
    srv.stop()
    insert_jobs(os.path.join(data, "hearth.db"), 1, "admin", 0, args.live)
    srv.start()
    took, size = first_event(srv.port, auth)
    print(f"\n{args.live} live jobs: first events message after {took * 1000:.0f} ms, {size / 1024:.0f} KiB")
    conns = []
    for _ in range(5):
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("GET", "/api/v1/events", headers=dict(auth, Accept="text/event-stream"))
        conns.append(c.getresponse())
    time.sleep(2)
    before, t = cpu_seconds(srv.proc.pid), time.perf_counter()
    time.sleep(10)
    used = cpu_seconds(srv.proc.pid) - before
    wall = time.perf_counter() - t
    print(f"5 open event streams over {args.live} live jobs: server CPU {100 * used / wall:.1f}% of one core")
    med, p95 = stats(timed(srv.conn(), "/api/v1/jobs?limit=200", auth, n=args.loads)[0])
    print(f"GET /api/v1/jobs?limit=200 meanwhile: median {med:.2f} ms, p95 {p95:.2f} ms")
    for r in conns:
        r.close()
    srv.stop()
    if args.keep:
        print(f"\n(data and server.log in {work})")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
