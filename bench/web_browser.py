#!/usr/bin/env python3
"""Web console benchmark in a real browser: how long until the jobs page shows its first rows,
with 0 jobs (the baseline), with 10,000 jobs in history, and with 1,000 live jobs whose view
changes every second; and how smooth the page stays while those 1,000 jobs update.

Starts a real `hearth up` (no Spark runtime: queued jobs stay queued), writes jobs straight
into its SQLite store (the columns of crates/server/src/store.rs, as bench/web.py does), and
drives headless Debian chromium through chromedriver (W3C WebDriver, stdlib HTTP). The time is
the page's own `hearth-jobs-drawn` performance mark (set by app.js after the first page of rows
is drawn), measured from the navigation's start: HTML, assets, login check, the jobs request and
the drawing all count. Each case loads the page `--loads` times with a warm cache.

    CARGO_TARGET_DIR=/work/target-console cargo build --release -p hearth
    python3 bench/web_browser.py --bin /work/target-console/release/hearth

Stdlib only. Run as root (like the tests), with chromium and chromium-driver installed.
"""
import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from web import ADMIN_PASSWORD, Server, free_port, insert_jobs  # noqa: E402


class Browser:
    """One chromedriver and one headless chromium session."""

    def __init__(self, profile):
        self.port = free_port()
        self.driver = subprocess.Popen(["chromedriver", f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("chromedriver did not start")
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking", "--window-size=1280,900",
                     f"--user-data-dir={profile}"]}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        url = f"http://127.0.0.1:{self.port}" + (path if path == "/session" else f"/session/{self.session}{path}")
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]

    def js(self, script, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        return self.call("POST", "/execute/async", {"script": script, "args": list(args)})

    def goto(self, url):
        self.call("POST", "/url", {"url": url})

    def wait(self, expr, timeout=60):
        deadline = time.time() + timeout
        while not self.js(f"try {{ return !!({expr}); }} catch (e) {{ return false; }}"):
            if time.time() > deadline:
                raise SystemExit(f"timed out waiting for {expr}:\n" + str(self.js("return document.body.innerText")))
            time.sleep(0.05)

    def close(self):
        try:
            self.call("DELETE", "")
        except OSError:
            pass
        self.driver.kill()
        self.driver.wait()


def login(b, url):
    b.goto(f"{url}/#/jobs")
    b.wait("document.querySelector('#login-form') || document.querySelector('#jobs-table')")
    if b.js("return !!document.querySelector('#login-form')"):
        b.js("document.querySelector('#login-user').value = 'admin';"
             "document.querySelector('#login-password').value = arguments[0];"
             "document.querySelector('#login-submit').click(); return null", ADMIN_PASSWORD)
    b.wait("document.querySelector('#jobs-table')")


def page_loads(b, url, n, want_rows):
    """Milliseconds from navigation start to the first rows drawn, for n fresh page loads."""
    out = []
    for i in range(n + 1):
        b.goto("about:blank")
        b.goto(f"{url}/#/jobs")
        b.wait("performance.getEntriesByName('hearth-jobs-drawn').length > 0")
        rows = b.js("return document.querySelectorAll('#jobs-body tr[data-job-id]').length")
        assert rows == want_rows, f"{rows} rows drawn, wanted {want_rows}"
        if i:  # the first load warms the cache and the server up
            out.append(b.js("return performance.getEntriesByName('hearth-jobs-drawn')[0].startTime"))
    return out


def frames(b, seconds):
    """Frame gaps (ms) of the jobs page over `seconds`, while its jobs update."""
    return b.js_async("""
        const done = arguments[arguments.length - 1], end = performance.now() + arguments[0] * 1000;
        const gaps = []; let last = performance.now();
        function f(t) { gaps.push(t - last); last = t; if (t < end) requestAnimationFrame(f); else done(gaps); }
        requestAnimationFrame(f);""", seconds)


def stats(ms):
    ms = sorted(ms)
    return statistics.median(ms), ms[max(0, int(round(0.95 * len(ms))) - 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="/work/target-console/release/hearth")
    ap.add_argument("--jobs", type=int, default=10_000, help="finished jobs in history")
    ap.add_argument("--live", type=int, default=1_000, help="live (queued, updating) jobs")
    ap.add_argument("--loads", type=int, default=15)
    ap.add_argument("--verbose", action="store_true", help="print every load's time")
    args = ap.parse_args()
    random.seed(1)
    work = tempfile.mkdtemp(prefix="hearth-bench-browser-")
    data = os.path.join(work, "data")
    db = os.path.join(data, "hearth.db")
    srv = Server(args.bin, data, free_port())
    url = f"http://127.0.0.1:{srv.port}"
    srv.start()
    b = Browser(os.path.join(work, "profile"))
    results = {}
    try:
        login(b, url)
        results["0 jobs (baseline)"] = page_loads(b, url, args.loads, 0)

        srv.stop()
        insert_jobs(db, 1, "admin", args.jobs, 0)
        srv.start()
        login(b, url)
        results[f"{args.jobs:,} jobs in history"] = page_loads(b, url, args.loads, 200)

        srv.stop()
        insert_jobs(db, 1, "admin", 0, args.live)
        srv.start()
        login(b, url)
        # Every second every live job's view changes (its reason), so the event stream sends
        # all of them each second, as it would for 1,000 jobs moving.
        stop = threading.Event()

        def churn():
            c = sqlite3.connect(db, timeout=30)
            tick = 0
            while not stop.is_set():
                tick += 1
                with c:
                    c.execute("UPDATE jobs SET reason = ? WHERE state = 'queued'", (f"bench tick {tick}",))
                stop.wait(1.0)
            c.close()

        t = threading.Thread(target=churn, daemon=True)
        t.start()
        results[f"{args.jobs:,} in history + {args.live:,} live, updating"] = page_loads(b, url, args.loads, 200)
        b.goto(f"{url}/#/jobs")
        b.wait("document.querySelectorAll('#jobs-body tr[data-job-id]').length === 200")
        # Count the job updates the page takes in meanwhile (S is app.js's global state).
        b.js("window.__updates = 0; const on = S.onJobs; S.onJobs = j => { window.__updates += j.length; on(j); }; return null")
        gaps = frames(b, 10)
        updates = b.js("return window.__updates")
        stop.set()
        t.join()
    finally:
        b.close()
        srv.stop()

    base = stats(results["0 jobs (baseline)"])[0]
    print(f"\nheadless chromium, release build, {args.loads} page loads each (warm cache)")
    print(f"{'time to the first rows drawn':52} {'median ms':>10} {'p95 ms':>8} {'x 0 jobs':>9}")
    for name, ms in results.items():
        med, p95 = stats(ms)
        print(f"{name:52} {med:10.1f} {p95:8.1f} {med / base:9.2f}")
        if args.verbose:
            print("    " + " ".join(f"{m:.0f}" for m in ms))
    med, p95 = stats(gaps)
    print(f"\nframes while {args.live:,} live jobs update (10 s, {updates:,} job updates received): "
          f"{len(gaps)} frames, median gap {med:.1f} ms, "
          f"p95 {p95:.1f} ms, longest {max(gaps):.1f} ms, {sum(g > 50 for g in gaps)} over 50 ms")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
