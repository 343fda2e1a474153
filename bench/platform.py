#!/usr/bin/env python3
"""Issue 2's platform benchmarks, on a real `hearth up` (release build) and real Spark.

  overhead   `hearth submit --wait` of bench/jobs/small.py vs plain `spark-submit --master
             local[2]` of the same job, alternating runs; ratio of medians (goal <= 1.05).
  dispatch   Hearth's own time from a queued job's resources becoming free (the previous
             job's end recorded) to its process running; median and p95 (goal < 100 ms).
  idle       RSS and CPU of an idle `hearth up` (goal: RSS < 30 MB, CPU near zero).

Usage (as root, after scripts/test.sh or `hearth runtime install`):
  python3 bench/platform.py [overhead|dispatch|idle|all] [--runs N]
Prints one markdown row per measurement; BENCHMARKS.md records them.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "hearth")
RUNTIME = os.environ.get("HEARTH_TEST_RUNTIME", "/var/cache/hearth/test-runtime")
JOB = os.path.join(ROOT, "bench", "jobs", "small.py")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Hearth:
    def __init__(self, *extra):
        self.work = tempfile.mkdtemp(prefix="hearth-bench-")
        # Jobs run as other uids: they must pass through (hearth up refuses otherwise).
        os.chmod(self.work, 0o711)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HEARTH_ADMIN_PASSWORD="bench-admin-password")
        self.log = open(os.path.join(self.work, "up.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "up", "--data-dir", os.path.join(self.work, "data"), "--listen", f"127.0.0.1:{self.port}",
             "--runtime", RUNTIME, *extra], env=env, stdout=self.log, stderr=self.log)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        self.admin = self.login("admin", "bench-admin-password")
        self.cli(self.admin, "user", "add", "bench", "--password-stdin", stdin="bench-password-1\n")
        self.user = self.login("bench", "bench-password-1")

    def login(self, name, password):
        cfg = os.path.join(self.work, f"{name}.json")
        subprocess.run([BIN, "login", "--server", self.url, "--user", name, "--password-stdin", "--config", cfg],
                       input=password + "\n", text=True, check=True, capture_output=True)
        return cfg

    def cli(self, cfg, *args, stdin=None):
        return subprocess.run([BIN, "--config", cfg, *args], input=stdin, text=True, capture_output=True)

    def api(self, path):
        token = json.load(open(self.user))["token"]
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
        return json.load(urllib.request.urlopen(req))

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        # The Linux accounts Hearth made for its users (admin included): homes under work.
        import pwd
        for p in pwd.getpwall():
            if p.pw_dir.startswith(self.work + "/"):
                subprocess.run(["pkill", "-9", "-u", p.pw_name], capture_output=True)
                subprocess.run(["userdel", p.pw_name], capture_output=True)
                subprocess.run(["groupdel", p.pw_name], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


def spark_env():
    site = [d for d in os.listdir(os.path.join(RUNTIME, "lib")) if d.startswith("python")][0]
    home = os.path.join(RUNTIME, "lib", site, "site-packages", "pyspark")
    py = os.path.join(RUNTIME, "bin", "python")
    return home, dict(os.environ, SPARK_HOME=home, PYSPARK_PYTHON=py, PYSPARK_DRIVER_PYTHON=py,
                      SPARK_LOCAL_IP="127.0.0.1")


def timed(cmd, **kw):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{cmd[:3]} failed: {r.stderr[-2000:]}")
    return time.perf_counter() - t


def overhead(runs):
    h = Hearth()
    home, env = spark_env()
    plain_cmd = [os.path.join(home, "bin", "spark-submit"), "--master", "local[2]", "--driver-memory", "2g",
                 "--conf", "spark.ui.showConsoleProgress=false", JOB]
    hearth_cmd = [BIN, "--config", h.user, "submit", "--wait", "--num-executors", "1", "--driver-memory", "1g",
                  "--executor-memory", "1g", JOB]
    try:
        timed(plain_cmd, env=env, cwd=tempfile.gettempdir())  # warm the page cache for both
        plain, via = [], []
        for _ in range(runs):
            plain.append(timed(plain_cmd, env=env, cwd=tempfile.gettempdir()))
            via.append(timed(hearth_cmd))
    finally:
        h.close()
    mp, mh = statistics.median(plain), statistics.median(via)
    print(f"| overhead: submit --wait vs spark-submit local[2], {runs} runs each | "
          f"plain {mp:.2f} s, hearth {mh:.2f} s (median) | ratio {mh / mp:.3f} | <= 1.05 |")


def dispatch(runs):
    h = Hearth("--cores", "1", "--engine-cores", "1")
    tiny = os.path.join(ROOT, "crates", "hearth", "tests", "apps", "sleepy.py")
    try:
        ids = []
        for _ in range(runs + 1):
            out = h.cli(h.user, "submit", "--num-executors", "0", "--driver-memory", "512m", tiny, "1", "0")
            ids.append(int(out.stdout.strip()))
        while True:
            jobs = {j["id"]: j for j in h.api("/api/v1/jobs")["jobs"]}
            if all(jobs[i]["state"] in ("succeeded", "failed") for i in ids):
                break
            time.sleep(0.5)
    finally:
        h.close()
    gaps = []
    for prev, nxt in zip(ids, ids[1:]):
        gaps.append(jobs[nxt]["running_at_ms"] - jobs[prev]["finished_at_ms"])
    gaps.sort()
    p95 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.95))]
    print(f"| dispatch: previous job's end recorded -> next job's process running, {len(gaps)} jobs | "
          f"median {statistics.median(gaps):.0f} ms, p95 {p95} ms, max {max(gaps)} ms | - | < 100 ms |")


def idle(seconds):
    h = Hearth()
    try:
        time.sleep(5)
        pid = h.proc.pid
        tick = os.sysconf("SC_CLK_TCK")
        def cpu():
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / tick
        c0, t0 = cpu(), time.time()
        time.sleep(seconds)
        c1, t1 = cpu(), time.time()
        rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
    finally:
        h.close()
    print(f"| idle hearth up over {seconds} s | RSS {int(rss) / 1024:.1f} MB, CPU {100 * (c1 - c0) / (t1 - t0):.2f}% of a core | - | RSS < 30 MB |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=["overhead", "dispatch", "idle", "all"])
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release -p hearth")
    print(f"machine: {os.cpu_count()} cores, " + open("/proc/meminfo").readline().split(":")[1].strip())
    if a.what in ("idle", "all"):
        idle(30)
    if a.what in ("dispatch", "all"):
        dispatch(max(a.runs, 10))
    if a.what in ("overhead", "all"):
        overhead(a.runs)
