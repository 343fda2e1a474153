//! The shim's body: one process per task, root, in a session of its own, that starts the
//! task, waits for it and records how it ended. It holds no state but the task's dir, so
//! Hearth may restart meanwhile; and when the shim dies the task dies with it (bubblewrap's
//! --die-with-parent, or PR_SET_PDEATHSIG without isolation), so no task runs unwatched.
//!
//! The shim never leaves its task's cgroups frozen or behind: it thaws, empties and removes
//! them on every way out, also when it is told to end by SIGTERM, SIGINT, SIGHUP or SIGQUIT
//! (a thread of its own takes those, ends the task, and the shim records the end and cleans
//! up as after any end). That thread also thaws the cgroup if it stays frozen for seconds:
//! a stop freezes it for a moment only, so such a freeze was left by a process that died
//! in the middle of one. Only SIGKILL leaves cleaning to others (`sandbox::stop`, or the
//! start-up sweep `sandbox::sweep_stale_tasks`).

use crate::cgroup::{Limits, TaskCgroup};
use crate::net;
use crate::sandbox::{find_program, is_root, probe, TaskExit, TaskSpec};
use crate::taskdir::{self, Started};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Signals that ask the shim to end: it stops its task and cleans up first.
const STOP_SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
/// How often the watch looks whether the task's cgroup is frozen.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// A task's cgroup frozen at this many looks in a row was left frozen by a process that
/// died before it could thaw it (a stop freezes it for a moment only): the watch thaws it.
const FROZEN_LOOKS: u32 = 5;

/// What a stop signal to the shim must end.
#[derive(Debug)]
enum Target {
    Nothing,
    Cgroup(TaskCgroup),
    /// The process group of a task run without isolation.
    Group(u32),
}

/// Shared between the shim's main thread and its watch thread.
struct Watch {
    target: Mutex<Target>,
    stopping: AtomicBool,
}

impl Watch {
    fn set(&self, target: Target) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = target;
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Ends the target at once (a frozen cgroup is thawed first: see `kill_all`).
    fn end_target(&self) {
        let target = self.target.lock().unwrap_or_else(PoisonError::into_inner);
        match &*target {
            Target::Nothing => {}
            Target::Cgroup(cgroup) => {
                if let Err(e) = cgroup.kill_all() {
                    eprintln!("hearth shim: {e}");
                }
            }
            Target::Group(pid) => {
                if let Ok(group) = libc::pid_t::try_from(*pid) {
                    // SAFETY: kill has no memory effects.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
            }
        }
    }

    /// Thaws the task's cgroup if it stayed frozen for `FROZEN_LOOKS` looks in a row.
    fn look(&self, frozen_looks: &mut u32) {
        let target = self.target.lock().unwrap_or_else(PoisonError::into_inner);
        let Target::Cgroup(cgroup) = &*target else {
            *frozen_looks = 0;
            return;
        };
        if !cgroup.freeze_requested() {
            *frozen_looks = 0;
            return;
        }
        *frozen_looks += 1;
        if *frozen_looks >= FROZEN_LOOKS {
            eprintln!(
                "hearth shim: the task's cgroup stayed frozen for {} s: thawing it",
                FROZEN_LOOKS
            );
            cgroup.thaw();
            *frozen_looks = 0;
        }
    }
}

fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only writes into it. Both are
    // async-signal-safe and allocate nothing, so this may run between fork and exec.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in STOP_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks the stop signals in this thread (and so in every thread started after) and
/// starts the thread that takes them instead: on one, the task is ended, so that the main
/// thread sees it end and cleans up as after any end. Also thaws a cgroup left frozen.
/// Children get an empty signal mask again (the standard library resets it before exec).
fn start_watch() -> Arc<Watch> {
    let watch = Arc::new(Watch {
        target: Mutex::new(Target::Nothing),
        stopping: AtomicBool::new(false),
    });
    let set = stop_signal_set();
    // SAFETY: the set is initialised; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        eprintln!(
            "hearth shim: cannot block stop signals: {}",
            io::Error::from_raw_os_error(rc)
        );
        return watch;
    }
    let shared = Arc::clone(&watch);
    let spawned = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || watch_loop(&shared, &set));
    if let Err(e) = spawned {
        eprintln!("hearth shim: cannot start its watch: {e}");
        // Without the watch, the signals would never be taken: let them act as before.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
    watch
}

/// Async-signal-safe, for between fork and exec: the task must get the signals the shim
/// takes in its watch (the standard library resets the mask too; this does not rely on it).
fn unblock_stop_signals() -> io::Result<()> {
    let set = stop_signal_set();
    // SAFETY: pthread_sigmask reads a set on our stack.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn watch_loop(watch: &Watch, set: &libc::sigset_t) {
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(WATCH_EVERY.as_secs()).unwrap_or(1),
        tv_nsec: 0,
    };
    let mut frozen_looks = 0;
    loop {
        // SAFETY: a null info pointer is allowed; the set and timeout live on our stack.
        let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
        if signal > 0 {
            eprintln!("hearth shim: got signal {signal}: stopping the task");
            watch.stopping.store(true, Ordering::SeqCst);
            watch.end_target();
        } else {
            watch.look(&mut frozen_looks);
        }
    }
}

enum Failure {
    /// The task never ran: reported to the launcher through the `error` file.
    NotStarted(String),
    /// Something broke after the task started: only the shim's log can tell.
    Later(String),
}

use Failure::{Later, NotStarted};

pub fn run(dir: &Path) -> i32 {
    // Orphans of the task (bwrap's init once bwrap is gone, double-forked children without
    // isolation) become ours instead of the machine's init, so we can reap them.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        eprintln!(
            "hearth shim: cannot become a subreaper: {}",
            io::Error::last_os_error()
        );
    }
    let watch = start_watch();
    let result = supervise(dir, &watch);
    reap_orphans();
    match result {
        Ok(()) => 0,
        Err(NotStarted(msg)) => {
            eprintln!("hearth shim: the task did not start: {msg}");
            if let Err(e) = taskdir::write_atomic(&dir.join(taskdir::ERROR), msg.as_bytes()) {
                eprintln!("hearth shim: {e}");
            }
            1
        }
        Err(Later(msg)) => {
            eprintln!("hearth shim: {msg}");
            1
        }
    }
}

fn supervise(dir: &Path, watch: &Watch) -> Result<(), Failure> {
    let not_started = |e: crate::Error| NotStarted(e.to_string());
    taskdir::write_atomic(
        &dir.join(taskdir::SHIM_PID),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(not_started)?;
    let spec: TaskSpec = taskdir::read_json(&dir.join(taskdir::SPEC))
        .map_err(not_started)?
        .ok_or_else(|| NotStarted(format!("{} is missing", dir.join(taskdir::SPEC).display())))?;
    if spec.argv.is_empty() {
        return Err(NotStarted("the task's command line is empty".into()));
    }
    let log = taskdir::open_log(&spec.log_path).map_err(|e| {
        NotStarted(format!(
            "opening the task log {}: {e}",
            spec.log_path.display()
        ))
    })?;
    if watch.stopping() {
        return Err(NotStarted("the shim was told to stop".into()));
    }
    if probe().enabled {
        run_isolated(dir, &spec, log, watch)
    } else {
        run_direct(dir, &spec, log, watch)
    }
}

/// Ends with the task's cgroups thawed, emptied and removed, on every path (panics too).
struct CgroupCleanup<'a> {
    cgroup: &'a TaskCgroup,
    watch: &'a Watch,
}

impl Drop for CgroupCleanup<'_> {
    fn drop(&mut self) {
        self.watch.set(Target::Nothing);
        if let Err(e) = self.cgroup.kill_all() {
            eprintln!("hearth shim: {e}");
        }
        if let Err(e) = self.cgroup.remove() {
            eprintln!("hearth shim: {e}");
        }
    }
}

/// Ends with the task's network removed and its slot given back, on every path (panics
/// too). Made before the cgroup's guard, so dropped after it: once no process is left.
struct NetworkCleanup(u32);

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        net::teardown(self.0);
    }
}

fn run_isolated(dir: &Path, spec: &TaskSpec, log: File, watch: &Watch) -> Result<(), Failure> {
    let missing = |what: &str| NotStarted(format!("{what} is not installed"));
    let bwrap = find_program("bwrap").ok_or_else(|| missing("bubblewrap"))?;
    let setpriv = find_program("setpriv").ok_or_else(|| missing("setpriv"))?;
    let network = match &spec.network {
        None => None,
        Some(n) => {
            let t0 = std::time::Instant::now();
            let slot = net::claim(&spec.id, &n.range)
                .map_err(|e| NotStarted(format!("the task's network: {e}")))?;
            let cleanup = NetworkCleanup(slot);
            net::setup(slot, n).map_err(|e| NotStarted(format!("the task's network: {e}")))?;
            let ns = File::open(net::netns_path(slot))
                .map_err(|e| NotStarted(format!("opening the task's network namespace: {e}")))?;
            Some((cleanup, ns, t0.elapsed().as_secs_f64() * 1000.0))
        }
    };
    let mib = spec.memory_limit_mib;
    let limits = Limits {
        memory_bytes: (mib > 0).then(|| mib.saturating_mul(1 << 20)),
        cpu_cores: (spec.cpu_cores > 0).then_some(spec.cpu_cores),
        pids_max: (spec.pids_max > 0).then_some(spec.pids_max),
    };
    let cgroup =
        TaskCgroup::create(&spec.id, &limits).map_err(|e| NotStarted(format!("cgroup: {e}")))?;
    let _cleanup = CgroupCleanup {
        cgroup: &cgroup,
        watch,
    };
    watch.set(Target::Cgroup(cgroup.clone()));
    if watch.stopping() {
        return Err(NotStarted("the shim was told to stop".into()));
    }
    let netns = network
        .as_ref()
        .map(|(slot, ns, ms)| (slot.0, ns.as_raw_fd(), *ms));
    let tools = Tools {
        bwrap: &bwrap,
        setpriv: &setpriv,
        netns,
    };
    run_in_sandbox(dir, spec, log, &cgroup, &tools, watch)
}

/// What the sandbox is made with: the programs, and the task's network namespace (its
/// slot, and the namespace open as a descriptor) when it has one.
#[derive(Clone, Copy)]
struct Tools<'a> {
    bwrap: &'a Path,
    setpriv: &'a Path,
    /// The slot, the namespace as a descriptor, and how long making it took (ms).
    netns: Option<(u32, RawFd, f64)>,
}

fn run_in_sandbox(
    dir: &Path,
    spec: &TaskSpec,
    log: File,
    cgroup: &TaskCgroup,
    tools: &Tools,
    watch: &Watch,
) -> Result<(), Failure> {
    let Tools {
        bwrap,
        setpriv,
        netns,
    } = *tools;
    let (ready_read, ready_write) =
        pipe().map_err(|e| NotStarted(format!("creating a pipe: {e}")))?;
    let ready_fd = ready_write.as_raw_fd();
    // The launcher script names it in a redirection, and sh only takes one digit there.
    if ready_fd > 9 {
        return Err(NotStarted(format!(
            "the shim has too many files open (pipe got fd {ready_fd})"
        )));
    }
    let procs = cgroup
        .procs_files()
        .into_iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NotStarted(format!("cgroup path: {e}")))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let stdout = log
        .try_clone()
        .map_err(|e| NotStarted(format!("duplicating the log: {e}")))?;

    // The machine's resolver is on its loopback, which the task's network does not reach:
    // the task asks its gateway instead (forwarded there by its rules).
    let resolv_conf = match spec.network.as_ref().filter(|n| n.dns.is_some()) {
        None => None,
        Some(n) => {
            let file = dir.join("resolv.conf");
            let machine = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let text = net::task_resolv_conf(&machine, net::TaskNetwork::gateway(&n.range));
            std::fs::write(&file, text)
                .and_then(|()| {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                })
                .map_err(|e| NotStarted(format!("writing the task's resolv.conf: {e}")))?;
            Some(file)
        }
    };
    let mut command = Command::new(bwrap);
    command
        .args(bwrap_args(spec, setpriv, ready_fd, resolv_conf.as_deref()))
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log);
    // SAFETY: between fork and exec we only make raw syscalls on memory prepared before the
    // fork (no allocation, no locks).
    unsafe {
        command.pre_exec(move || {
            unblock_stop_signals()?;
            // Joining before exec: every process of the task, bwrap included, starts inside
            // its cgroups and its network.
            join_cgroups(&procs)?;
            if let Some((_, fd, _)) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Handed on through bwrap and setpriv to the launcher script.
            if libc::fcntl(ready_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        NotStarted(format!(
            "bwrap: cannot start {} in the task's cgroups: {e}",
            bwrap.display()
        ))
    })?;
    drop(ready_write);
    // A stop signal taken before bwrap joined the cgroup found nothing to end there.
    if watch.stopping() {
        if let Err(e) = cgroup.kill_all() {
            eprintln!("hearth shim: {e}");
        }
    }

    // The launcher script writes "x" right before it execs the command, or says why it
    // cannot; end of file with nothing means bubblewrap or setpriv failed (their message
    // is in the log).
    let mut said = Vec::new();
    let _ = File::from(ready_read).read_to_end(&mut said);
    if said != b"x" {
        let status = child.wait().ok();
        let msg = if !said.is_empty() {
            String::from_utf8_lossy(&said).trim().to_string()
        } else {
            let logged = taskdir::tail(&spec.log_path, log_start);
            if logged.is_empty() {
                format!(
                    "the sandbox failed before the task started (bwrap {})",
                    status.map_or_else(|| "vanished".to_string(), |s| s.to_string())
                )
            } else {
                logged
            }
        };
        return Err(NotStarted(msg));
    }
    record_started(dir, child.id(), true, netns.map(|(slot, _, ms)| (slot, ms)))?;
    let status = child
        .wait()
        .map_err(|e| Later(format!("waiting for bwrap: {e}")))?;
    // The task's own process is gone; nothing else of it may stay behind.
    if let Err(e) = cgroup.kill_all() {
        eprintln!("hearth shim: {e}");
    }
    let exit = exit_of(status, true, cgroup.oom_killed());
    record_exit(dir, &exit)
}

fn bwrap_args(
    spec: &TaskSpec,
    setpriv: &Path,
    ready_fd: RawFd,
    resolv_conf: Option<&Path>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut push = |items: &[&std::ffi::OsStr]| args.extend(items.iter().map(|s| s.into()));
    let s = |x: &'static str| std::ffi::OsStr::new(x);
    push(&[
        s("--unshare-pid"),
        s("--unshare-ipc"),
        s("--unshare-uts"),
        // No cgroup namespace: JDK 17 then misreads its container limits and fails to build
        // its platform MBean server, which Spark needs (measured: InstanceNotFoundException
        // for java.nio:type=BufferPool,name=direct). The task sees its own cgroup path only.
        s("--new-session"),
        s("--die-with-parent"),
        s("--ro-bind"),
        s("/"),
        s("/"),
        s("--dev"),
        s("/dev"),
        // Python's multiprocessing needs a writable /dev/shm; it is the task's own, in memory
        // charged to the task.
        s("--perms"),
        s("1777"),
        s("--tmpfs"),
        s("/dev/shm"),
        s("--proc"),
        s("/proc"),
    ]);
    if let Some(file) = resolv_conf {
        push(&[s("--ro-bind"), file.as_os_str(), s("/etc/resolv.conf")]);
    }
    // Hide first, then bind: a workspace inside a hidden folder is exposed again. A path
    // that does not exist hides nothing (and bwrap could not create it on a read-only /).
    for hidden in spec.hidden_paths.iter().filter(|p| p.exists()) {
        push(&[s("--tmpfs"), hidden.as_os_str()]);
    }
    push(&[s("--bind"), spec.tmp_dir.as_os_str(), s("/tmp")]);
    // bwrap would create missing mount points (in a hidden tmpfs, or in the user's tmp_dir
    // when a path is under /tmp) as root with mode 0700, leaving the task unable to reach
    // its own workspace by absolute path: create them first, traversable.
    let mut made: Vec<&Path> = Vec::new();
    let binds = spec
        .rw_paths
        .iter()
        .map(|p| ("--bind", p))
        .chain(spec.ro_paths.iter().map(|p| ("--ro-bind", p)));
    for (kind, path) in binds {
        let mut parents: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .filter(|a| a.parent().is_some())
            .collect();
        parents.reverse();
        for parent in parents {
            if !made.contains(&parent) {
                made.push(parent);
                push(&[s("--perms"), s("0755"), s("--dir"), parent.as_os_str()]);
            }
        }
        push(&[s(kind), path.as_os_str(), path.as_os_str()]);
    }
    push(&[s("--chdir"), spec.cwd.as_os_str(), s("--")]);
    let uid = spec.user.uid.to_string();
    let gid = spec.user.gid.to_string();
    let keep_pwd = spec.env.iter().any(|(k, _)| k == "PWD");
    let script = launcher_script(ready_fd, spec.user.uid, keep_pwd);
    push(&[
        setpriv.as_os_str(),
        s("--reuid"),
        uid.as_ref(),
        s("--regid"),
        gid.as_ref(),
        s("--clear-groups"),
        s("--no-new-privs"),
        s("--inh-caps=-all"),
        s("--bounding-set=-all"),
        s("--"),
        s("/bin/sh"),
        s("-c"),
        script.as_ref(),
        s("hearth-task"),
    ]);
    args.extend(spec.argv.iter().map(|a| a.into()));
    args
}

/// Runs as the user inside the sandbox, right before the command: finds the command the way
/// execvp will, so that "command not found" or "permission denied" reach the launcher as an
/// error instead of a task that failed with 127. Only digits are spliced in.
fn launcher_script(fd: RawFd, uid: u32, keep_pwd: bool) -> String {
    let unset_pwd = if keep_pwd { "" } else { " PWD" };
    format!(
        r#"__hearth_c=$1
case $__hearth_c in
*/*) __hearth_p=$__hearth_c ;;
*)
  __hearth_p=
  IFS=:
  set -f
  for __hearth_d in ${{PATH-/usr/local/bin:/usr/bin:/bin}}; do
    [ -n "$__hearth_d" ] || __hearth_d=.
    if [ -f "$__hearth_d/$__hearth_c" ] && [ -x "$__hearth_d/$__hearth_c" ]; then
      __hearth_p=$__hearth_d/$__hearth_c
      break
    fi
  done
  set +f
  unset IFS ;;
esac
if [ -z "$__hearth_p" ] || [ ! -e "$__hearth_p" ]; then
  printf 'command not found: %s' "$__hearth_c" >&{fd}
  exit 127
elif [ -d "$__hearth_p" ]; then
  printf 'cannot run %s: it is a directory' "$__hearth_p" >&{fd}
  exit 126
elif [ ! -x "$__hearth_p" ]; then
  printf 'permission denied: uid {uid} cannot execute %s' "$__hearth_p" >&{fd}
  exit 126
fi
unset __hearth_c __hearth_p __hearth_d{unset_pwd}
printf x >&{fd}
exec {fd}>&-
exec "$@"
"#
    )
}

/// Without isolation: the command runs directly, in a process group of its own (so `stop`
/// reaches its children), as the user if we are root.
fn run_direct(dir: &Path, spec: &TaskSpec, log: File, watch: &Watch) -> Result<(), Failure> {
    match std::fs::metadata(&spec.cwd) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(NotStarted(format!(
                "working directory {} is not a directory",
                spec.cwd.display()
            )))
        }
        Err(e) => {
            return Err(NotStarted(format!(
                "working directory {}: {e}",
                spec.cwd.display()
            )))
        }
    }
    let stdout = log
        .try_clone()
        .map_err(|e| NotStarted(format!("duplicating the log: {e}")))?;
    let program = &spec.argv[0];
    let mut command = Command::new(program);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log);
    let become_user = is_root() && spec.user.uid != 0;
    let (uid, gid) = (spec.user.uid, spec.user.gid);
    // SAFETY: getpid cannot fail.
    let shim = unsafe { libc::getpid() };
    // SAFETY: only raw syscalls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            unblock_stop_signals()?;
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if become_user
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            // After the uid change, which would clear it; then check we did not miss it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != shim {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        NotStarted(match e.raw_os_error() {
            Some(libc::ENOENT) => format!("command not found: {program}"),
            Some(libc::EACCES) => format!("permission denied: cannot execute {program}"),
            _ => format!("cannot run {program}: {e}"),
        })
    })?;
    let pid = child.id();
    watch.set(Target::Group(pid));
    if watch.stopping() {
        watch.end_target();
    }
    record_started(dir, pid, false, None)?;
    let status = child.wait();
    watch.set(Target::Nothing);
    let status = status.map_err(|e| Later(format!("waiting for the task: {e}")))?;
    // Whatever it left running in its process group goes too.
    if let Ok(group) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    record_exit(dir, &exit_of(status, false, false))
}

fn record_started(
    dir: &Path,
    pid: u32,
    isolated: bool,
    net: Option<(u32, f64)>,
) -> Result<(), Failure> {
    let started = Started {
        pid,
        shim_pid: std::process::id(),
        started_ms: taskdir::now_ms(),
        isolated,
        net_slot: net.map(|(slot, _)| slot),
        net_setup_ms: net.map(|(_, ms)| ms),
    };
    // The task runs already: without this file the launcher would wait in vain, so say it.
    taskdir::write_json(&dir.join(taskdir::STARTED), &started).map_err(|e| Later(e.to_string()))
}

fn record_exit(dir: &Path, exit: &TaskExit) -> Result<(), Failure> {
    taskdir::write_json(&dir.join(taskdir::EXIT), exit).map_err(|e| Later(e.to_string()))
}

/// bwrap reports a command killed by signal N as exit code 128+N (as shells do), so in the
/// sandbox such codes are read back as signals; bwrap itself being killed shows directly.
fn exit_of(status: ExitStatus, isolated: bool, oom_killed: bool) -> TaskExit {
    let (code, signal) = match (status.code(), status.signal()) {
        (Some(code), _) if isolated && (129..=128 + 64).contains(&code) => (None, Some(code - 128)),
        (code, signal) => (code, signal),
    };
    TaskExit {
        code,
        signal,
        oom_killed,
        finished_ms: taskdir::now_ms(),
    }
}

/// Reaps every child left (all are the task's, and have been killed): the task is only
/// over for the caller once none of its processes exists, not even as a zombie.
fn reap_orphans() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // SAFETY: waitpid with a null status pointer.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid > 0 {
            continue;
        }
        if pid < 0 || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Async-signal-safe: runs between fork and exec.
fn join_cgroups(files: &[CString]) -> io::Result<()> {
    let mut digits = [0u8; 20];
    // SAFETY: getpid cannot fail.
    let mut pid = unsafe { libc::getpid() } as u64;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let text = &digits[start..];
    for file in files {
        // SAFETY: a NUL-terminated path prepared before fork.
        let fd = unsafe { libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: writes from a live stack buffer to an fd we own.
        let written = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
        let error = io::Error::last_os_error();
        // SAFETY: closing the fd we opened.
        unsafe { libc::close(fd) };
        if usize::try_from(written).ok() != Some(text.len()) {
            return Err(error);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_folded_into_exit_codes_by_bwrap_are_read_back_as_signals() {
        let exit = exit_of(ExitStatus::from_raw(137 << 8), true, true);
        assert_eq!(
            (exit.code, exit.signal, exit.oom_killed),
            (None, Some(9), true)
        );
        let exit = exit_of(ExitStatus::from_raw(3 << 8), true, false);
        assert_eq!((exit.code, exit.signal), (Some(3), None));
        let exit = exit_of(ExitStatus::from_raw(libc::SIGKILL), true, false);
        assert_eq!((exit.code, exit.signal), (None, Some(9)));
        let exit = exit_of(ExitStatus::from_raw(137 << 8), false, false);
        assert_eq!((exit.code, exit.signal), (Some(137), None));
    }

    fn test_watch() -> Watch {
        Watch {
            target: Mutex::new(Target::Nothing),
            stopping: AtomicBool::new(false),
        }
    }

    fn spec_for_direct_run(dir: &Path, argv: &[&str]) -> TaskSpec {
        TaskSpec {
            id: "direct".into(),
            dir: dir.to_path_buf(),
            user: crate::LinuxUser {
                uid: 65534,
                gid: 65534,
                name: "nobody".into(),
                home: "/".into(),
            },
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/".into(),
            rw_paths: vec![],
            ro_paths: vec![],
            hidden_paths: vec![],
            tmp_dir: "/tmp".into(),
            log_path: dir.join("task.log"),
            memory_limit_mib: 0,
            cpu_cores: 0,
            pids_max: 0,
            network: None,
        }
    }

    #[test]
    fn without_isolation_the_command_runs_directly_and_takes_its_group_along() {
        let dir = std::env::temp_dir().join(format!(
            "hearth-agent-direct-{}-{}",
            std::process::id(),
            taskdir::now_ms()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let spec = spec_for_direct_run(
            &dir,
            &["/bin/sh", "-c", "echo hi; id -u; (sleep 30 &); exit 4"],
        );
        let log = taskdir::open_log(&spec.log_path).expect("log");
        assert!(run_direct(&dir, &spec, log, &test_watch()).is_ok());
        let exit: TaskExit = taskdir::read_json(&dir.join(taskdir::EXIT))
            .expect("exit.json")
            .expect("recorded");
        assert_eq!(
            (exit.code, exit.signal, exit.oom_killed),
            (Some(4), None, false)
        );
        let started: Started = taskdir::read_json(&dir.join(taskdir::STARTED))
            .expect("started")
            .expect("recorded");
        assert!(!started.isolated);
        let text = std::fs::read_to_string(&spec.log_path).expect("log");
        // SAFETY: geteuid cannot fail.
        let uid = if unsafe { libc::geteuid() } == 0 {
            65534
        } else {
            unsafe { libc::geteuid() }
        };
        assert_eq!(text, format!("hi\n{uid}\n"));
        // The background sleep went with the process group (it may linger as a zombie of
        // the machine's init for a moment).
        let group_alive = || {
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter_map(|stat| {
                    let rest = stat[stat.rfind(')')? + 1..].to_string();
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    Some((
                        fields.first()?.to_string(),
                        fields.get(2)?.parse::<u32>().ok()?,
                    ))
                })
                .any(|(state, pgid)| pgid == started.pid && state != "Z")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while group_alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!group_alive(), "a process of the task's group survived");

        let spec = spec_for_direct_run(&dir, &["no-such-command-hearth"]);
        let log = taskdir::open_log(&spec.log_path).expect("log");
        match run_direct(&dir, &spec, log, &test_watch()) {
            Err(NotStarted(msg)) => assert_eq!(msg, "command not found: no-such-command-hearth"),
            _ => panic!("expected a start failure"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hidden_paths_come_before_the_binds_that_expose_parts_of_them() {
        let spec = TaskSpec {
            id: "t".into(),
            dir: "/x/tasks/t".into(),
            user: crate::LinuxUser {
                uid: 1234,
                gid: 1235,
                name: "hearth1234".into(),
                home: "/tmp/ws".into(),
            },
            argv: vec!["echo".into(), "hi".into()],
            env: vec![],
            cwd: "/tmp".into(),
            rw_paths: vec!["/tmp/ws".into()],
            ro_paths: vec!["/usr".into()],
            hidden_paths: vec!["/tmp".into(), "/does/not/exist".into()],
            tmp_dir: "/var/tmp".into(),
            log_path: "/x/log".into(),
            memory_limit_mib: 0,
            cpu_cores: 0,
            pids_max: 0,
            network: None,
        };
        let args: Vec<String> = bwrap_args(&spec, Path::new("/usr/bin/setpriv"), 5, None)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |needle: &[&str]| {
            args.windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{needle:?} missing in {args:?}"))
        };
        let hide = at(&["--tmpfs", "/tmp"]);
        let tmp = at(&["--bind", "/var/tmp", "/tmp"]);
        let rw = at(&["--bind", "/tmp/ws", "/tmp/ws"]);
        let ro = at(&["--ro-bind", "/usr", "/usr"]);
        assert!(hide < tmp && tmp < rw && rw < ro);
        assert!(!args.iter().any(|a| a == "/does/not/exist"));
        let setpriv = at(&["/usr/bin/setpriv", "--reuid", "1234", "--regid", "1235"]);
        assert!(at(&["--chdir", "/tmp", "--"]) < setpriv);
        assert_eq!(&args[args.len() - 3..], ["hearth-task", "echo", "hi"]);
    }
}
