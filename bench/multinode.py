#!/usr/bin/env python3
"""Issue 4's multi-node goal: a job spread over several nodes via Hearth against the same
job on a Spark standalone cluster started by hand with the same workers (goal: ratio of
medians <= 1.05).

All on this one machine, as real processes:

  hearth     a release `hearth up --cores 1` (the driver's node) and two joined
             `hearth agent --cores 1` (one executor each): `hearth submit --wait` of
             bench/jobs/spread_work.py with 2 executors of 1 core / 512m and a 512m driver
             fits no single node, so Hearth runs it on a standalone cluster of its own
             (checked in each run's log). Wall time: submit to the CLI's exit.
  per-job    by hand, the cluster per job, as Hearth does it: a standalone master and two
             workers (`--cores 1 --memory 512m`) started with spark-class, then
             spark-submit in client mode with the same executors, driver and security
             (spark.authenticate with a secret, spark.network.crypto.enabled). Wall time:
             from starting the master to spark-submit's exit (stopping it is reported
             apart: Hearth stops its master inside the job's time, its workers after).
  running    by hand, one cluster kept up across runs: spark-submit's time alone.

Runs alternate (hearth, per-job, running, hearth, ...) so the machine's noise hits each
alike; every run's checksum must match. Prints one markdown row per measurement, the ratios
of medians Hearth/per-job (the goal's comparison: Hearth's cluster is per job) and
Hearth/running, and where the time went (from the Spark logs' timestamps, 1 s resolution).

Usage (as root, with the runtime scripts/test.sh installs):
  cargo build --release -p hearth        # honours CARGO_TARGET_DIR, as this script does
  python3 bench/multinode.py [--runs 5] [--rounds 160] [--keep-logs DIR] [--bin PATH]
"""
import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "hearth")
RUNTIME = os.environ.get("HEARTH_TEST_RUNTIME", "/var/cache/hearth/test-runtime")
JOB = os.path.join(ROOT, "bench", "jobs", "spread_work.py")
ADMIN_PASSWORD = "bench-admin-password"
# The job's shape: 2 executors of 1 core / 512m and a 512m driver, as in the cluster test.
EXECUTORS, EXECUTOR_CORES, EXECUTOR_MEMORY, DRIVER_MEMORY = 2, 1, "512m", "512m"
# A run that takes longer than this has hung: fail rather than wait forever.
RUN_TIMEOUT = 900


class BenchError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(procs, timeout):
    """SIGTERM to each (last started first), then SIGKILL to the group of any still up."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_port(port, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def spark_env():
    """SPARK_HOME and the environment of the runtime's pyspark, as bench/platform.py does."""
    site = [d for d in os.listdir(os.path.join(RUNTIME, "lib")) if d.startswith("python")][0]
    home = os.path.join(RUNTIME, "lib", site, "site-packages", "pyspark")
    py = os.path.join(RUNTIME, "bin", "python")
    env = dict(os.environ, SPARK_HOME=home, PYSPARK_PYTHON=py, PYSPARK_DRIVER_PYTHON=py,
               SPARK_LOCAL_IP="127.0.0.1",
               # Hearth's standalone daemons run with this heap (spark::standalone_env).
               SPARK_DAEMON_MEMORY="128m")
    # Hearth builds a job's environment from nothing: keep ours from leaking config in.
    for k in ("SPARK_CONF_DIR", "PYTHONPATH"):
        env.pop(k, None)
    return home, env


def kill_tree_of(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pids_where(pred):
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            if pred(int(e)):
                out.append(int(e))
        except OSError:
            continue
    return out


def cmdline_has(needle):
    def pred(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return needle.encode() in f.read()
    return pred


def owned_by(uid):
    def pred(pid):
        return os.stat(f"/proc/{pid}").st_uid == uid
    return pred


# --- where the time goes: Spark's log lines, by their timestamps -----------------------

# Spark's default log4j layout starts each line with `yy/MM/dd HH:mm:ss`.
STAMP = re.compile(r"(\d\d)/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) ")
MARKS = [
    ("master up", r"Starting Spark master|I have been elected leader"),
    ("1st worker registered", r"Registering worker|Successfully registered with master"),
    ("app registered", r"Registering app |Connected to Spark cluster with app ID"),
    ("1st executor registered", r"Registered executor NettyRpcEndpointRef"),
    ("1st task", r"Starting task \d+\.\d+ in stage 0\.0"),
    ("last job done", r"Job \d+ finished"),
    ("context stopped", r"Successfully stopped SparkContext"),
]


def marks(text, t0):
    """Seconds from t0 (epoch) to each mark's first line (the last for 'last job done')."""
    found = {}
    for name, pat in MARKS:
        rx = re.compile(pat)
        hits = [line for line in text.splitlines() if rx.search(line)]
        if name == "last job done":
            hits = hits[-1:]
        for line in hits:
            m = STAMP.search(line)
            if m:
                y, mo, d, h, mi, s = (int(g) for g in m.groups())
                t = time.mktime((2000 + y, mo, d, h, mi, s, 0, 0, -1))
                found[name] = t - t0
                break
    return found


# --- Hearth's side ----------------------------------------------------------------------

class Hearth:
    def __init__(self, work, spark_home):
        self.work = work
        self.procs = []
        self.uid = None
        self.made_uids = []
        self.port, self.cport = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HEARTH_ADMIN_PASSWORD=ADMIN_PASSWORD)
        log = open(os.path.join(work, "up.log"), "w")
        # The driver's node: one core, so the driver (and the master beside it) fit, but
        # no executor does; the executors must go to the agents.
        self.up = subprocess.Popen(
            [BIN, "up", "--data-dir", os.path.join(work, "data"), "--listen", f"127.0.0.1:{self.port}",
             "--cluster-listen", f"127.0.0.1:{self.cport}", "--runtime", RUNTIME, "--cores", "1",
             "--engine-cores", "1"],
            env=env, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(self.up)
        end = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                break
            except OSError:
                if self.up.poll() is not None or time.time() > end:
                    raise BenchError(f"hearth up did not start:\n{self.tail('up.log')}")
                time.sleep(0.05)
        self.admin = self.login("admin", ADMIN_PASSWORD)
        self.cli(self.admin, "user", "add", "bench", "--password-stdin", stdin="bench-password-1\n")
        self.user = self.login("bench", "bench-password-1")
        users = json.loads(self.cli(self.admin, "user", "list", "-o", "json"))
        self.uid = [u["uid"] for u in users if u["name"] == "bench"][0]
        self.made_uids = [u["uid"] for u in users]
        words = self.cli(self.admin, "node", "token", "create", "--ttl", "1h").split()
        join = {w: words[i + 1] for i, w in enumerate(words) if w in ("--server", "--token", "--ca-sha256")}
        for name in ("wa", "wb"):
            alog = open(os.path.join(work, f"agent-{name}.log"), "w")
            self.procs.append(subprocess.Popen(
                [BIN, "agent", "--server", join["--server"], "--token", join["--token"],
                 "--ca-sha256", join["--ca-sha256"], "--name", name, "--cores", "1", "--memory", "3g",
                 "--runtime", RUNTIME, "--data-dir", os.path.join(work, f"agent-{name}")],
                stdin=subprocess.DEVNULL, stdout=alog, stderr=alog, start_new_session=True))
        end = time.time() + 120
        while True:
            nodes = self.api(self.admin, "/api/v1/nodes")
            ready = {n["name"] for n in nodes if n.get("joined") and n["state"] == "ready"}
            if {"wa", "wb"} <= ready:
                break
            if time.time() > end:
                raise BenchError(f"agents not ready after 120 s: {nodes}\n{self.tail('agent-wa.log')}")
            time.sleep(0.2)
        for name in ("wa", "wb"):
            if "isolation is OFF" in open(os.path.join(work, f"agent-{name}.log")).read():
                raise BenchError(f"agent {name} cannot isolate its tasks: not Hearth's real path")

    def tail(self, name, n=3000):
        try:
            return open(os.path.join(self.work, name)).read()[-n:]
        except OSError:
            return ""

    def login(self, name, password):
        cfg = os.path.join(self.work, f"{name}.json")
        r = subprocess.run([BIN, "login", "--server", self.url, "--user", name, "--password-stdin",
                            "--config", cfg], input=password + "\n", text=True, capture_output=True)
        if r.returncode != 0:
            raise BenchError(f"login {name} failed: {r.stderr}")
        return cfg

    def cli(self, cfg, *args, stdin=None):
        r = subprocess.run([BIN, "--config", cfg, *args], input=stdin, text=True, capture_output=True)
        if r.returncode != 0:
            raise BenchError(f"hearth {' '.join(args[:3])} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def api(self, cfg, path):
        token = json.load(open(cfg))["token"]
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
        return json.load(urllib.request.urlopen(req, timeout=10))

    def run(self, rounds):
        cmd = [BIN, "--config", self.user, "submit", "--wait", "--num-executors", str(EXECUTORS),
               "--executor-cores", str(EXECUTOR_CORES), "--executor-memory", EXECUTOR_MEMORY,
               "--driver-memory", DRIVER_MEMORY, JOB, str(rounds)]
        t0 = time.time()
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        took = time.perf_counter() - t
        m = re.search(r"Submitted job (\d+)", r.stderr)
        if not m:
            raise BenchError(f"hearth submit failed ({r.returncode}): {r.stderr}")
        jid = m.group(1)
        log = subprocess.run([BIN, "--config", self.user, "logs", jid], capture_output=True,
                             text=True).stdout
        if r.returncode != 0:
            raise BenchError(f"hearth job {jid} failed ({r.returncode}): {r.stderr}\n{log[-4000:]}")
        if "a standalone cluster of its own" not in log:
            raise BenchError(f"hearth job {jid} did not run spread:\n{log[-4000:]}")
        job = self.api(self.user, f"/api/v1/jobs/{jid}")
        spread = sorted(f"{e['node']}={e['count']}" for e in job.get("executors_by_node", []))
        if spread != ["wa=1", "wb=1"]:
            raise BenchError(f"hearth job {jid}: executors by node {spread}, not one on each agent")
        phases = {
            "queued+launch": (job["running_at_ms"] - job["submitted_at_ms"]) / 1000,
            "running": (job["finished_at_ms"] - job["running_at_ms"]) / 1000,
        }
        return took, checksum_of(log, f"hearth job {jid}"), log, marks(log, t0), phases

    def close(self):
        """Stops everything this Hearth started, even after a failed run; returns how many
        leftover processes had to be killed."""
        killed = []
        if self.uid is not None:
            # A job still going (a failed run) first: its processes run as the user's uid.
            killed += pids_where(owned_by(self.uid))
            kill_tree_of(killed)
            try:
                self.cli(self.admin, "user", "remove", "bench")
            except BenchError as e:
                print(f"cleanup: {e}", file=sys.stderr)
        terminate(self.procs, 60)
        # Shims outlive Hearth and its agents by design; theirs name our data dirs.
        left = pids_where(cmdline_has(self.work))
        if self.uid is not None:
            left += pids_where(owned_by(self.uid))
        kill_tree_of(left)
        # Every Linux user this Hearth made: theirs have their home in our data dir. (A user
        # made lazily after the list was read, e.g. the admin's, is found the same way.)
        for uid in set(self.made_uids) | set(ours(self.work)):
            if passwd_name(uid) == f"hearth{uid}" and uid in ours(self.work):
                subprocess.run(["userdel", f"hearth{uid}"], capture_output=True)
                subprocess.run(["groupdel", f"hearth{uid}"], capture_output=True)
        return len(killed) + len(left)


def ours(work):
    """uids of /etc/passwd entries whose home is under `work`."""
    out = []
    for line in open("/etc/passwd"):
        f = line.split(":")
        if len(f) > 5 and f[5].startswith(work + "/") and f[2].isdigit():
            out.append(int(f[2]))
    return out


def passwd_name(uid):
    for line in open("/etc/passwd"):
        f = line.split(":")
        if len(f) > 2 and f[2] == str(uid):
            return f[0]
    return None


def checksum_of(text, what):
    m = re.search(r"^(?:\S+ )?checksum: (\d+)$", text, re.M)
    if not m:
        raise BenchError(f"{what}: no checksum in its output:\n{text[-4000:]}")
    return m.group(1)


# --- by hand: Spark's own standalone cluster ---------------------------------------------

class ByHand:
    """A standalone master and two workers on 127.0.0.1, started with spark-class as its
    docs say, with Hearth's security settings: one secret, RPC encryption."""

    def __init__(self, work, spark_home, env, name):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        self.spark_home, self.env = spark_home, env
        self.port = free_port()
        self.props = os.path.join(self.dir, "spark.properties")
        with open(os.open(self.props, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in [
                ("spark.authenticate", "true"),
                ("spark.authenticate.secret", secrets.token_hex(32)),
                ("spark.network.crypto.enabled", "true"),
                ("spark.master.rest.enabled", "false"),
                ("spark.local.dir", os.path.join(self.dir, "local")),
                ("spark.ui.showConsoleProgress", "false"),
            ]))
        self.procs = []
        self.logs = []

    def _daemon(self, name, argv):
        log = os.path.join(self.dir, f"{name}.log")
        self.logs.append(log)
        self.procs.append(subprocess.Popen(
            [os.path.join(self.spark_home, "bin", "spark-class"), *argv, "--properties-file", self.props],
            env=self.env, cwd=self.dir, stdout=open(log, "a"), stderr=subprocess.STDOUT,
            start_new_session=True))

    def start(self):
        cls = "org.apache.spark.deploy"
        self._daemon("master", [f"{cls}.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                                "--webui-port", "0"])
        # Workers started before their master's port answers only log failed tries; Hearth's
        # launcher waits for the port too.
        wait_port(self.port)
        for w in ("w1", "w2"):
            self._daemon(w, [f"{cls}.worker.Worker", "--host", "127.0.0.1", "--webui-port", "0",
                             "--cores", str(EXECUTOR_CORES), "--memory", EXECUTOR_MEMORY,
                             "--work-dir", os.path.join(self.dir, f"work-{w}"),
                             f"spark://127.0.0.1:{self.port}"])

    def wait_workers(self, timeout=180):
        """Until both workers have registered with the master (the kept-up cluster's
        runs are to time spark-submit alone)."""
        end = time.time() + timeout
        while self.daemon_logs().count("Registering worker") < 2:
            if time.time() > end:
                raise BenchError(f"workers not registered after {timeout} s:\n{self.daemon_logs()[-3000:]}")
            time.sleep(0.2)

    def submit(self, rounds):
        """spark-submit in client mode, as Hearth's driver runs (spark::standalone_submit_argv)."""
        cmd = [os.path.join(self.spark_home, "bin", "spark-submit"), "--master",
               f"spark://127.0.0.1:{self.port}", "--deploy-mode", "client",
               "--properties-file", self.props, "--driver-memory", DRIVER_MEMORY,
               "--executor-memory", EXECUTOR_MEMORY, "--executor-cores", str(EXECUTOR_CORES),
               "--conf", f"spark.cores.max={EXECUTOR_CORES * EXECUTORS}",
               "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
               JOB, str(rounds)]
        r = subprocess.run(cmd, env=self.env, cwd=self.dir, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
        out = r.stdout + r.stderr
        if r.returncode != 0:
            raise BenchError(f"spark-submit failed ({r.returncode}):\n{out[-4000:]}")
        return out

    def daemon_logs(self):
        return "".join(open(p).read() for p in self.logs if os.path.exists(p))

    def stop(self):
        # SIGTERM as stop-master.sh / stop-worker.sh do; their executors go with them.
        terminate(self.procs, 30)
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # an executor left in the worker's group
            except ProcessLookupError:
                pass
        self.procs = []
        kill_tree_of(pids_where(cmdline_has(self.dir)))


def per_job_run(work, spark_home, env, i, rounds):
    c = ByHand(work, spark_home, env, f"per-job-{i}")
    t0 = time.time()
    t = time.perf_counter()
    try:
        c.start()
        out = c.submit(rounds)
        took = time.perf_counter() - t
        s = time.perf_counter()
    finally:
        c.stop()
    stop = time.perf_counter() - s
    text = out + c.daemon_logs()
    return took, checksum_of(out, "per-job spark-submit"), text, marks(text, t0), stop


def wait_quiet(work, uid, keep):
    """Waits (60 s at most) until no Spark JVM of an earlier run is left (an executor, a
    worker Hearth stops after the job's end, a JVM still exiting), so that no run pays for
    another's tail. `keep`: the pids of the cluster kept running, which stay."""
    def busy(pid):
        if pid in keep:
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"org.apache.spark" not in f.read():
                return False
        return os.stat(f"/proc/{pid}").st_uid == uid or os.readlink(f"/proc/{pid}/cwd").startswith(work)
    end = time.time() + 60
    while pids_where(busy) and time.time() < end:
        time.sleep(0.2)


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of each kind (default 5)")
    ap.add_argument("--rounds", type=int, default=160, help="the job's work (hash rounds per number)")
    ap.add_argument("--keep-logs", help="copy every run's log into this directory (and keep the "
                    "scratch dir of a failed run)")
    ap.add_argument("--bin", default=BIN, help=f"the hearth binary (default {BIN})")
    a = ap.parse_args()
    globals()["BIN"] = a.bin
    if os.geteuid() != 0:
        sys.exit("run as root: Hearth makes Linux users and cgroups")
    if not os.path.exists(BIN):
        sys.exit(f"no {BIN}: build first (cargo build --release -p hearth)")
    spark_home, env = spark_env()
    work = tempfile.mkdtemp(prefix="hearth-bench-multinode-")
    os.chmod(work, 0o711)  # Hearth's users reach their workspaces under its data dir
    print(f"machine: {os.cpu_count()} cores, " + open("/proc/meminfo").readline().split(":")[1].strip()
          + f", load average at start {os.getloadavg()[0]:.1f}", flush=True)
    h = running = None
    results = {"hearth": [], "per-job": [], "running": []}
    detail = {"hearth": [], "per-job": [], "running": []}
    loads = []
    checksums = set()
    failed = None
    try:
        h = Hearth(work, spark_home)
        running = ByHand(work, spark_home, env, "running")
        running.start()
        running.wait_workers()
        for i in range(a.runs):
            for kind in ("hearth", "per-job", "running"):
                wait_quiet(work, h.uid, {p.pid for p in running.procs})
                loads.append(os.getloadavg()[0])
                if kind == "hearth":
                    took, cs, log, mk, phases = h.run(a.rounds)
                    extra = " ".join(f"{k} {v:.1f}s" for k, v in phases.items())
                elif kind == "per-job":
                    took, cs, log, mk, stop = per_job_run(work, spark_home, env, i, a.rounds)
                    extra = f"stop {stop:.1f}s"
                else:
                    t0 = time.time()
                    t = time.perf_counter()
                    out = running.submit(a.rounds)
                    took = time.perf_counter() - t
                    cs, log = checksum_of(out, "spark-submit on the running cluster"), out
                    mk, extra = marks(out, t0), ""
                checksums.add(cs)
                if len(checksums) != 1:
                    raise BenchError(f"checksums differ between runs: {checksums}")
                results[kind].append(took)
                detail[kind].append(mk)
                if a.keep_logs:
                    os.makedirs(a.keep_logs, exist_ok=True)
                    with open(os.path.join(a.keep_logs, f"{i}-{kind}.log"), "w") as f:
                        f.write(log)
                marks_s = ", ".join(f"{k} +{v:.0f}" for k, v in sorted(mk.items(), key=lambda kv: kv[1]))
                print(f"run {i + 1} {kind}: {took:.2f} s {extra} (load {loads[-1]:.1f}) [{marks_s}]",
                      flush=True)
    except (BenchError, subprocess.TimeoutExpired) as e:
        failed = e
    finally:
        if running is not None:
            running.stop()
        left = h.close() if h is not None else 0
        if left:
            print(f"cleanup: killed {left} leftover processes of Hearth's jobs", file=sys.stderr)
        if not (a.keep_logs and failed):
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        sys.exit(f"FAILED: {failed}")
    mh, mp, mr = med(results["hearth"]), med(results["per-job"]), med(results["running"])
    print()
    print(f"{a.runs} alternating runs of each; checksum {checksums.pop()}; "
          f"load average during the runs {min(loads):.1f}-{max(loads):.1f}")
    print()
    print("| run | result (median of wall times) | ratio Hearth / this | goal |")
    print("|---|---|---|---|")
    print(f"| Hearth: `submit --wait`, spread over 2 agents (its own standalone cluster) | {mh:.2f} s "
          f"(all: {', '.join(f'{x:.1f}' for x in results['hearth'])}) | - | |")
    print(f"| by hand, cluster per job: start master + 2 workers, spark-submit | {mp:.2f} s "
          f"(all: {', '.join(f'{x:.1f}' for x in results['per-job'])}) | {mh / mp:.3f} | <= 1.05: "
          f"{'met' if mh / mp <= 1.05 else 'NOT met'} |")
    print(f"| by hand, cluster already running: spark-submit alone | {mr:.2f} s "
          f"(all: {', '.join(f'{x:.1f}' for x in results['running'])}) | {mh / mr:.3f} | - |")
    print()
    print("Median seconds from the run's start to each mark (Spark's log timestamps, 1 s resolution):")
    print()
    print("| mark | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for name, _ in MARKS:
        cells = []
        for kind in results:
            vals = [d[name] for d in detail[kind] if name in d]
            cells.append(f"{med(vals):.0f}" if vals else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
