//! Launching a task: a shim process (root, outlives Hearth) starts the task's command under
//! bubblewrap in new PID/mount/IPC/UTS namespaces with a private /tmp, drops to the user's
//! uid with no capabilities and no-new-privileges, puts it in its cgroups, appends its
//! output to the task's log, and records its exit status (and OOM kill) in the task's dir.
//!
//! The shim is `hearth internal shim DIR` (any command taking DIR as its last argument and
//! calling `shim::run`). DIR holds, all root-owned and written whole:
//! `spec.json` (the [`TaskSpec`]), `shim.pid`, `started` (JSON: `pid`, `shim_pid`,
//! `started_ms`, `isolated`), `exit.json` (the [`TaskExit`]), `error` (why the task did not
//! start, in words) and `shim.log` (the shim's own messages).
//!
//! In the sandbox the process tree is: bwrap (the pid in `started`) -> bwrap's init (pid 1
//! of the task's PID namespace) -> the command (after `setpriv` and a short `sh` script that
//! reports "command not found" precisely). All of them are in the task's cgroups from their
//! first instruction. A command killed by signal N is reported as `signal: Some(N)`, also
//! in the sandbox, where bubblewrap turns it into exit code 128+N: so an exit code above 128
//! from a sandboxed command reads as a signal.

use crate::cgroup::{self, TaskCgroup};
use crate::taskdir::{self, Started};
use crate::{Error, LinuxUser, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What to run and how to confine it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// Unique on this machine across Hearth instances; names the task's cgroups.
    pub id: String,
    /// Root-owned directory for the task's control files (spec, pid, exit status).
    pub dir: PathBuf,
    pub user: LinuxUser,
    pub argv: Vec<String>,
    /// The task's whole environment (Hearth's own is never inherited).
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Bound read-write at the same path (the workspace).
    pub rw_paths: Vec<PathBuf>,
    /// Bound read-only at the same path, after hiding (job files, the Spark runtime).
    pub ro_paths: Vec<PathBuf>,
    /// Replaced by an empty directory (Hearth's data dir, other users' homes).
    pub hidden_paths: Vec<PathBuf>,
    /// A directory owned by the user, bound at /tmp.
    pub tmp_dir: PathBuf,
    /// Standard output and error are appended here (created root-owned, mode 0600; keep it
    /// out of every path the task can write, so the task cannot swap it for a symlink).
    pub log_path: PathBuf,
    /// Memory plus swap; 0 = no limit.
    pub memory_limit_mib: u64,
    /// CPU time in whole cores; 0 = no limit.
    pub cpu_cores: u32,
    /// Processes and threads together; 0 = no limit.
    pub pids_max: u32,
    /// A network of the task's own ([`crate::net`]); None shares the machine's.
    #[serde(default)]
    pub network: Option<crate::net::TaskNetwork>,
}

/// How a task ended. `code` and `signal` both `None` means the shim died and the task's
/// end was not recorded (the task died with its shim).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_ms: i64,
}

/// What this machine can enforce; `problems` says in words why isolation is off.
#[derive(Debug, Clone)]
pub struct Isolation {
    pub enabled: bool,
    pub problems: Vec<String>,
}

/// Checks root, bubblewrap, setpriv and cgroups.
pub fn probe() -> Isolation {
    let mut problems = Vec::new();
    if !is_root() {
        problems.push(
            "Hearth is not running as root: jobs run as your own user, without separate \
             uids, namespaces or cgroup limits"
                .to_string(),
        );
    }
    if find_program("bwrap").is_none() {
        problems.push("bubblewrap is not installed: apt-get install bubblewrap".to_string());
    }
    if find_program("setpriv").is_none() {
        problems.push("setpriv is not installed: apt-get install util-linux".to_string());
    }
    if cgroup::detect().is_none() {
        problems.push(
            "no usable cgroups: need cgroup v2 at /sys/fs/cgroup with the memory, cpu and \
             pids controllers, or cgroup v1 with /sys/fs/cgroup/memory mounted"
                .to_string(),
        );
    }
    Isolation {
        enabled: problems.is_empty(),
        problems,
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks in the system folders first (what runs as root should not depend on PATH), then
/// in PATH.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let system = [
        "/usr/bin",
        "/bin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ];
    system
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The command that runs the shim: the `hearth` binary with `internal shim`.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// How long `launch` waits for the shim to start the task.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a reattached task's files are looked at.
const POLL: Duration = Duration::from_millis(100);

/// A task started by a shim: by this process (`launch`) or an earlier one (`reattach`).
/// Dropping it leaves the task running.
#[derive(Debug)]
pub struct Task {
    dir: PathBuf,
    /// The task's top process (see `started`), once known.
    pid: Option<u32>,
    shim_pid: Option<u32>,
    /// Our child when we launched it: waiting on it notices the end at once.
    shim: Option<tokio::process::Child>,
    exit: Option<TaskExit>,
    /// The slot of its own network, when it has one.
    net_slot: Option<u32>,
}

impl Task {
    /// Writes the spec into `spec.dir`, starts the shim, and returns once the task's
    /// process exists.
    pub async fn launch(spec: &TaskSpec, shim: &ShimCommand) -> Result<Task> {
        let t0 = Instant::now();
        let dir = prepare_dir(&spec.dir)?;
        let mut spec = spec.clone();
        spec.dir = dir.clone();
        taskdir::write_json(&dir.join(taskdir::SPEC), &spec)?;
        let shim_log = dir.join(taskdir::SHIM_LOG);
        let log = taskdir::open_log(&shim_log)
            .map_err(|e| Error::io(format!("opening {}", shim_log.display()), e))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stdout = log
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", shim_log.display()), e))?;
        let mut command = tokio::process::Command::new(&shim.program);
        command
            .args(&shim.args)
            .arg(&dir)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe. A session of its own: the shim must outlive
        // us and our terminal or service stop.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(format!("starting the shim {}", shim.program.display()), e))?;
        let spawned_ms = t0.elapsed().as_millis();
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        loop {
            let exited = child
                .try_wait()
                .map_err(|e| Error::io("waiting for the shim", e))?;
            // Read after try_wait: a shim that exited has written everything it will.
            if let Some(started) = taskdir::read_json::<Started>(&dir.join(taskdir::STARTED))? {
                tracing::debug!(
                    task = %spec.id,
                    spawned_ms,
                    started_ms = t0.elapsed().as_millis(),
                    "the shim was spawned, then started the task"
                );
                return Ok(Task {
                    dir,
                    pid: Some(started.pid),
                    shim_pid: Some(started.shim_pid),
                    shim: exited.is_none().then_some(child),
                    exit: None,
                    net_slot: started.net_slot,
                });
            }
            if let Some(message) = taskdir::read_text(&dir.join(taskdir::ERROR)) {
                let _ = child.wait().await;
                return Err(Error::Other(message));
            }
            if let Some(status) = exited {
                let said = taskdir::tail(&shim_log, log_start);
                return Err(Error::Other(format!(
                    "the shim {} exited ({status}) before starting the task{}{said}",
                    shim.program.display(),
                    if said.is_empty() { "" } else { ": " },
                )));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let id = spec.id.clone();
                let _ = tokio::task::spawn_blocking(move || clean_up_task(&id)).await;
                return Err(Error::Other(format!(
                    "the shim did not start the task within {} s (see {})",
                    LAUNCH_TIMEOUT.as_secs(),
                    shim_log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Finds a task started by an earlier Hearth process. `None` if it is neither running
    /// nor has a recorded exit (it was lost).
    pub fn reattach(dir: &Path) -> Result<Option<Task>> {
        let dir = match dir.canonicalize() {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", dir.display()), e)),
        };
        let task = |exit: Option<TaskExit>| -> Result<Task> {
            let started = taskdir::read_json::<Started>(&dir.join(taskdir::STARTED))?;
            Ok(Task {
                dir: dir.clone(),
                pid: started.as_ref().map(|s| s.pid),
                net_slot: started.as_ref().and_then(|s| s.net_slot),
                shim_pid: started
                    .map(|s| s.shim_pid)
                    .or_else(|| taskdir::shim_pid(&dir)),
                shim: None,
                exit,
            })
        };
        if let Some(exit) = taskdir::read_json::<TaskExit>(&dir.join(taskdir::EXIT))? {
            return task(Some(exit)).map(Some);
        }
        if taskdir::shim_pid(&dir).is_some_and(|pid| taskdir::is_shim_of(pid, &dir)) {
            return task(None).map(Some);
        }
        // It may have ended between the two looks.
        if let Some(exit) = taskdir::read_json::<TaskExit>(&dir.join(taskdir::EXIT))? {
            return task(Some(exit)).map(Some);
        }
        clean_up_lost(&dir);
        Ok(None)
    }

    /// Waits for the task to end.
    pub async fn wait(&mut self) -> TaskExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = match &mut self.shim {
            Some(child) => {
                if let Err(e) = child.wait().await {
                    tracing::warn!("waiting for the shim of {}: {e}", self.dir.display());
                }
                self.shim = None;
                self.recorded_exit()
            }
            None => loop {
                if let Some(exit) = self.recorded_exit() {
                    break Some(exit);
                }
                let alive = self
                    .shim_pid
                    .or_else(|| taskdir::shim_pid(&self.dir))
                    .is_some_and(|pid| taskdir::is_shim_of(pid, &self.dir));
                if !alive {
                    break self.recorded_exit();
                }
                tokio::time::sleep(POLL).await;
            },
        };
        let exit = match exit {
            Some(exit) => exit,
            None => {
                tracing::warn!(
                    "the shim of {} ended without recording the task's exit",
                    self.dir.display()
                );
                let dir = self.dir.clone();
                let _ = tokio::task::spawn_blocking(move || clean_up_lost(&dir)).await;
                TaskExit {
                    code: None,
                    signal: None,
                    oom_killed: false,
                    finished_ms: taskdir::now_ms(),
                }
            }
        };
        self.exit = Some(exit.clone());
        exit
    }

    fn recorded_exit(&self) -> Option<TaskExit> {
        match taskdir::read_json::<TaskExit>(&self.dir.join(taskdir::EXIT)) {
            Ok(exit) => exit,
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    /// The task's control directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The task's top process in this machine's PID namespace: bubblewrap when isolated,
    /// else the command. `None` for a reattached task whose shim was still starting it.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The shim supervising the task.
    pub fn shim_pid(&self) -> Option<u32> {
        self.shim_pid
    }

    /// The slot of the task's own network ([`crate::net`]), when it has one.
    pub fn net_slot(&self) -> Option<u32> {
        self.net_slot
    }

    /// The task's own network namespace (what [`crate::net::connect`] enters), or None
    /// when it shares the machine's.
    pub fn netns(&self) -> Option<PathBuf> {
        self.net_slot.map(crate::net::netns_path)
    }
}

fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating task dir {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("making task dir {} mode 0700", dir.display()), e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("resolving task dir {}", dir.display()), e))?;
    // Left by an earlier run in the same dir: they would be read as this run's.
    for name in [
        taskdir::STARTED,
        taskdir::EXIT,
        taskdir::ERROR,
        taskdir::SHIM_PID,
    ] {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing stale {name}"), e)),
        }
    }
    Ok(dir)
}

/// A lost task's shim is gone; its processes should be too, but a cgroup or its network
/// may be left.
fn clean_up_lost(dir: &Path) {
    if let Ok(Some(spec)) = taskdir::read_json::<TaskSpec>(&dir.join(taskdir::SPEC)) {
        clean_up_task(&spec.id);
    }
}

/// What a task whose shim is gone left: its cgroups (processes killed first), then its
/// network.
fn clean_up_task(id: &str) {
    if let Some(cgroup) = TaskCgroup::open(id) {
        if let Err(e) = cgroup.kill_all().and_then(|()| cgroup.remove()) {
            tracing::warn!("cleaning up the cgroup of task {id}: {e}");
        }
    }
    crate::net::release(id);
}

/// What [`sweep_stale_tasks`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Task ids whose cgroups were left behind: thawed, their processes killed, removed.
    pub removed: Vec<String>,
    /// Task ids whose cgroups could not be cleaned, and why.
    pub failed: Vec<(String, String)>,
    /// How many cgroups were left alone because their task's shim still runs.
    pub live: usize,
    /// Slots of task networks left behind, removed.
    pub networks: Vec<u32>,
}

/// Cleans up the task cgroups and networks that Hearth instances left behind on this machine (crashed,
/// killed in the middle of a stop, a shim killed): every cgroup in Hearth's folder, of any
/// instance, whose task has no live shim is thawed, its processes killed (waiting until it
/// is empty) and removed, in every hierarchy. A cgroup whose shim still runs is never
/// touched: it belongs to a running task, maybe another Hearth instance's, and its shim
/// removes it when the task ends (and thaws it if it stays frozen).
///
/// Call it at start, before any task is launched; it blocks (a process stuck in
/// uninterruptible sleep may take seconds to die), so from async code run it with
/// `tokio::task::spawn_blocking`. Its findings are logged too.
pub fn sweep_stale_tasks() -> Sweep {
    let mut sweep = sweep_stale_cgroups();
    // After the cgroups: a network is removed once no process of its task is left.
    sweep.networks = crate::net::sweep(taskdir::live_shim_task_ids);
    sweep
}

fn sweep_stale_cgroups() -> Sweep {
    let mut sweep = Sweep::default();
    // Listed before the shims are looked for: a shim makes its cgroup only after it wrote
    // its pid, so the shim of any cgroup listed here is found below unless it has ended.
    let cgroups = TaskCgroup::all();
    if cgroups.is_empty() {
        return sweep;
    }
    let live = taskdir::live_shim_task_ids();
    for (id, cgroup) in cgroups {
        if live.contains(&id) {
            sweep.live += 1;
            continue;
        }
        let frozen = cgroup.freeze_requested();
        let pids = cgroup.pids().unwrap_or_default();
        match cgroup.kill_all().and_then(|()| cgroup.remove()) {
            Ok(()) => {
                tracing::info!(
                    task = %id,
                    frozen,
                    processes = pids.len(),
                    "removed a task cgroup left behind"
                );
                sweep.removed.push(id);
            }
            Err(e) => {
                tracing::warn!("cleaning up the cgroup {id} left behind: {e}");
                sweep.failed.push((id, e.to_string()));
            }
        }
    }
    sweep
}

/// SIGTERM to every process of the task in `dir`, SIGKILL to what is left after `grace`.
/// Works for a reattached task too; a task that already ended is left alone.
///
/// In the sandbox, bubblewrap's own two processes are spared the SIGTERM: killing them
/// would tear down the PID namespace with SIGKILL before the command could shut down.
///
/// The task's cgroup is only ever frozen for the moment of a signal and thawed on every
/// path (see [`TaskCgroup::freeze`]). Once the shim is gone, whether it ended or was killed,
/// whatever is left of the task's cgroups is thawed, killed and removed here, since no shim
/// will do it any more.
pub async fn stop(dir: &Path, grace: Duration) {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(Some(spec)) = taskdir::read_json::<TaskSpec>(&dir.join(taskdir::SPEC)) else {
        return;
    };
    stop_task(&dir, &spec, grace).await;
    if !shim_alive(&dir) {
        let id = spec.id.clone();
        let _ = tokio::task::spawn_blocking(move || clean_up_task(&id)).await;
    }
}

fn shim_alive(dir: &Path) -> bool {
    taskdir::shim_pid(dir).is_some_and(|pid| taskdir::is_shim_of(pid, dir))
}

async fn stop_task(dir: &Path, spec: &TaskSpec, grace: Duration) {
    let dir = dir.to_path_buf();
    let exited = |dir: &Path| dir.join(taskdir::EXIT).exists();
    // A task being launched right now has no `started` yet.
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.is_none() && !exited(&dir) && shim_alive(&dir) && Instant::now() < deadline {
        started = taskdir::read_json::<Started>(&dir.join(taskdir::STARTED))
            .ok()
            .flatten();
        if started.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if exited(&dir) {
        return;
    }
    let Some(started) = started else {
        // Lost or never started: only a cgroup may be left, cleaned by the caller once the
        // shim is gone. A shim still starting the task after all this time gets no task.
        if shim_alive(&dir) {
            let id = spec.id.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(cgroup) = TaskCgroup::open(&id) {
                    if let Err(e) = cgroup.kill_all() {
                        tracing::warn!("stopping task {id} while it starts: {e}");
                    }
                }
            })
            .await;
        }
        return;
    };
    let signal = |signal: i32| {
        let (id, started, dir) = (spec.id.clone(), started.clone(), dir.clone());
        tokio::task::spawn_blocking(move || signal_task(&id, &started, &dir, signal))
    };
    let _ = signal(libc::SIGTERM).await;
    let deadline = Instant::now() + grace;
    while !exited(&dir) && shim_alive(&dir) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if exited(&dir) {
        return;
    }
    let _ = signal(libc::SIGKILL).await;
    // Return once the shim has recorded the end, so the caller's next look sees it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exited(&dir) && shim_alive(&dir) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal_task(id: &str, started: &Started, dir: &Path, signal: i32) {
    if started.isolated {
        let Some(cgroup) = TaskCgroup::open(id) else {
            return;
        };
        let result = if signal == libc::SIGKILL {
            cgroup.kill_all()
        } else {
            cgroup.pids().and_then(|pids| {
                let spare: Vec<u32> = pids
                    .iter()
                    .copied()
                    .filter(|&p| p == started.pid || parent_of(p) == Some(started.pid))
                    .collect();
                cgroup.signal_all(signal, &spare)
            })
        };
        if let Err(e) = result {
            tracing::warn!("signalling task {id}: {e}");
        }
    } else if taskdir::is_shim_of(started.shim_pid, dir) {
        // Only while its shim lives is the process group surely still the task's.
        if let Ok(group) = libc::pid_t::try_from(started.pid) {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(-group, signal) };
        }
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
