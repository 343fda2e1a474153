"""Alice's job trying to get at Bob. Prints REFUSED or LEAKED for each attempt.
argv: bob_workspace bob_host_pid hearth_data_dir"""
import os, sys, signal

bob_ws, bob_pid, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def attempt(what, fn):
    try:
        result = fn()
        print(f"LEAKED {what}: {str(result)[:80]}", flush=True)
    except (OSError, ProcessLookupError, PermissionError) as e:
        print(f"REFUSED {what}: {type(e).__name__}", flush=True)

print(f"uid={os.getuid()} gid={os.getgid()} euid={os.geteuid()}", flush=True)
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith(("CapEff", "CapPrm", "NoNewPrivs")):
            print(line.strip(), flush=True)
print(f"visible pids: {len([p for p in os.listdir('/proc') if p.isdigit()])}", flush=True)

attempt("read bob's secret", lambda: open(os.path.join(bob_ws, "secret.txt")).read())
attempt("list bob's workspace", lambda: os.listdir(bob_ws))
attempt("signal bob's process", lambda: os.kill(bob_pid, signal.SIGTERM))
attempt("see bob's process", lambda: open(f"/proc/{bob_pid}/cmdline").read() or "empty")
attempt("read hearth's database", lambda: open(os.path.join(data_dir, "hearth.db"), "rb").read(16))
def only_mine(path, mine):
    """Lists a directory; what is there besides this job's own entry (a job's attempt
    directories are named JOB-ATTEMPT) is a leak."""
    def own(e):
        return e == mine or (e.startswith(mine + "-") and e[len(mine) + 1:].isdigit())
    others = [e for e in os.listdir(path) if not own(e)]
    if not others:
        raise FileNotFoundError(f"nothing but {mine}")
    return others

def visible(*paths):
    found = [p for p in paths if os.path.exists(p)]
    if not found:
        raise FileNotFoundError("none visible")
    return found

attempt("list hearth's data dir", lambda: visible(*(os.path.join(data_dir, n) for n in ("hearth.db", "blobs", "hearth.db-wal"))))
attempt("list other workspaces", lambda: only_mine(os.path.join(data_dir, "workspaces"), os.environ["SPARK_USER"]))
attempt("list other jobs", lambda: only_mine(os.path.join(data_dir, "jobs"), os.environ["HEARTH_JOB_ID"]))
attempt("read another job's /tmp", lambda: open("/tmp/sleepy-was-here").read())
attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
attempt("write outside the workspace", lambda: open("/usr/local/hearth-was-here", "w").write("x"))
with open("/tmp/alice-was-here", "w") as f:
    f.write("alice")
print("snoop done", flush=True)
