# One machine's part of a job's own Spark standalone cluster, run inside the job's sandbox
# as the job's user (server::spark::standalone_argv builds the command line; this file is
# embedded in the binary and passed with `python -c`).
#
# It starts the cluster's daemons that belong on this machine (the master on the driver's
# node, a worker where executors run), copies their output and every executor's stdout and
# stderr (which Spark's worker writes to files under its work dir) into this task's output,
# one prefixed line at a time, so that the job's one log shows every node and process.
# With a driver, it runs it and exits with its code; without one it runs until stopped.
# A SIGTERM (cancel, job end) stops the daemons, whose executors go with them.
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

spec = json.loads(sys.argv[1])
out_lock = threading.Lock()
children = []
stopping = threading.Event()


def emit(prefix, line):
    with out_lock:
        sys.stdout.write(prefix + line.rstrip("\n") + "\n")
        sys.stdout.flush()


def copy(stream, prefix):
    for raw in iter(stream.readline, b""):
        emit(prefix, raw.decode("utf-8", "replace"))


def daemon(argv, prefix):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    children.append(proc)
    t = threading.Thread(target=copy, args=(proc.stdout, prefix), daemon=True)
    t.start()
    return proc, t


class Follow:
    """Tails WORK_DIR/<app>/<executor>/{stdout,stderr} as the worker creates them."""

    def __init__(self, work_dir, prefix):
        self.work_dir, self.prefix, self.files = work_dir, prefix, {}

    def poll(self):
        try:
            apps = sorted(os.listdir(self.work_dir))
        except OSError:
            return
        for app in apps:
            app_dir = os.path.join(self.work_dir, app)
            try:
                execs = sorted(os.listdir(app_dir))
            except OSError:
                continue
            for ex in execs:
                for name in ("stdout", "stderr"):
                    path = os.path.join(app_dir, ex, name)
                    if path not in self.files and os.path.isfile(path):
                        # O_NOFOLLOW: the work dir is the user's own, but never follow a link.
                        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                        self.files[path] = [os.fdopen(fd, "rb"), b"", "executor %s" % ex]
        for path, f in self.files.items():
            chunk = f[0].read()
            if not chunk:
                continue
            data = f[1] + chunk
            *lines, f[1] = data.split(b"\n")
            for line in lines:
                emit("%s[%s] " % (self.prefix, f[2]), line.decode("utf-8", "replace"))

    def flush(self):
        self.poll()
        for f in self.files.values():
            if f[1]:
                emit("%s[%s] " % (self.prefix, f[2]), f[1].decode("utf-8", "replace"))
                f[1] = b""


def stop_daemons():
    for proc in reversed(children):
        if proc.poll() is None:
            proc.terminate()
    # Briefly: the job's end waits for this, and whatever is left when the task ends is
    # killed with its cgroup anyway.
    deadline = time.time() + 3
    for proc in children:
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


def on_term(signum, frame):
    stopping.set()


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)


def wait_for_master(master):
    """Until the master's port answers (False if the master here ended, or we are stopped).

    A worker that starts before its master logs a stack trace per failed try; and on the
    driver's node, a driver starting beside the master halves the CPU the master starts
    with (the part's cgroup holds the driver's cores only): it starts once the master is up.
    """
    host, port = spec["master_addr"]
    deadline = time.time() + 600
    while not stopping.is_set() and time.time() < deadline:
        if master is not None and master.poll() is not None:
            emit(prefix, "the Spark master ended (exit %s)" % master.returncode)
            return False
        try:
            socket.create_connection((host, port), timeout=2).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


prefix = spec.get("prefix", "")
master = None
if spec.get("master"):
    master, _ = daemon(spec["master"], prefix + "[master] ")
worker = None
follow = None
master_up = wait_for_master(master)
if spec.get("worker") and master_up:
    os.makedirs(spec["work_dir"], mode=0o700, exist_ok=True)
    worker, _ = daemon(spec["worker"], prefix + "[worker] ")
    follow = Follow(spec["work_dir"], prefix)

code = 0 if master_up or stopping.is_set() else 1
driver = None
if spec.get("driver") and master_up:
    # The driver's output goes straight to this task's output: it is the job's own.
    driver = subprocess.Popen(spec["driver"])
while master_up and not stopping.is_set():
    if follow:
        follow.poll()
    if driver is not None and driver.poll() is not None:
        code = driver.returncode
        break
    if driver is None and worker is not None and worker.poll() is not None:
        emit(prefix, "the Spark worker ended (exit %s)" % worker.returncode)
        code = 1
        break
    time.sleep(0.3)
if driver is not None and driver.poll() is None:
    driver.terminate()
    try:
        driver.wait(10)
    except subprocess.TimeoutExpired:
        driver.kill()
    code = 128 + signal.SIGTERM
stop_daemons()
if follow:
    follow.flush()
sys.exit(code if code >= 0 else 128 - code)
