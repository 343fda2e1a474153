//! Resource limits for a task's whole process tree: cgroup v1 (memory, cpu, pids, freezer
//! hierarchies, as on the development machines) and v2 (one unified hierarchy, most modern
//! hosts), behind one interface.
//!
//! Every task gets its own cgroup named after the task id, under a folder `hearth` of our
//! own in each hierarchy (never inside the cgroup of whoever started us: that one belongs to
//! the machine's session machinery). The `hearth` folder is shared by every Hearth instance
//! on the machine and never removed.

use crate::{Error, Result};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "hearth";
const CPU_PERIOD_US: u64 = 100_000;
/// How long `kill_all` keeps killing before it gives up: long enough for a process stuck in
/// uninterruptible I/O to come back and die.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// How long `remove` retries while the last processes are being reaped.
const REMOVE_DEADLINE: Duration = Duration::from_secs(3);
/// How long we wait for a freeze to settle; past that we signal anyway (a process in
/// uninterruptible sleep can keep a cgroup in FREEZING).
const FREEZE_DEADLINE: Duration = Duration::from_millis(500);

/// Which cgroup interface this machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// Finds a usable cgroup interface: v2 if the unified hierarchy at /sys/fs/cgroup offers
/// memory, cpu and pids; otherwise v1 if the memory hierarchy is mounted.
pub fn detect() -> Option<Version> {
    detect_at(Path::new(ROOT))
}

fn detect_at(root: &Path) -> Option<Version> {
    if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) {
        let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
        if has("memory") && has("cpu") && has("pids") {
            return Some(Version::V2);
        }
    }
    if root.join("memory").join("cgroup.procs").is_file() {
        return Some(Version::V1);
    }
    None
}

/// What a task may use. `None` leaves that resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory and swap together: a task never swaps.
    pub memory_bytes: Option<u64>,
    /// CPU time, in whole cores (1 = 100 % of one core).
    pub cpu_cores: Option<u32>,
    /// Processes and threads together.
    pub pids_max: Option<u32>,
}

#[derive(Debug, Clone)]
enum Layout {
    /// One directory per hierarchy. Membership is the same in all of them (we always add a
    /// process to every one), so processes are listed from the freezer's, or else memory's.
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
        freezer: Option<PathBuf>,
    },
    V2 {
        dir: PathBuf,
    },
}

/// The cgroup(s) of one task.
#[derive(Debug, Clone)]
pub struct TaskCgroup {
    layout: Layout,
}

impl TaskCgroup {
    /// Creates the task's cgroup(s) with `limits`. An existing empty cgroup of the same id
    /// (left by a crash) is reused; one that still holds processes is an error.
    pub fn create(id: &str, limits: &Limits) -> Result<TaskCgroup> {
        let version = detect().ok_or_else(|| {
            Error::Other(
                "no usable cgroup hierarchy: need cgroup v2 with the memory, cpu and pids \
                 controllers at /sys/fs/cgroup, or cgroup v1 with /sys/fs/cgroup/memory"
                    .into(),
            )
        })?;
        create_at(version, Path::new(ROOT), PARENT, id, limits)
    }

    /// The cgroup(s) of task `id` if they exist (for stopping a task from another process).
    pub fn open(id: &str) -> Option<TaskCgroup> {
        let version = detect()?;
        open_at(version, Path::new(ROOT), PARENT, id)
    }

    /// Every task cgroup under Hearth's folder on this machine, of every Hearth instance,
    /// with its id. On a v1 machine that also mounts cgroup v2 beside (hybrid), those in
    /// the unified hierarchy's Hearth folder too.
    pub fn all() -> Vec<(String, TaskCgroup)> {
        let Some(version) = detect() else {
            return Vec::new();
        };
        let root = Path::new(ROOT);
        let mut places = vec![(version, root.to_path_buf())];
        let unified = root.join("unified");
        if version == Version::V1 && unified.join("cgroup.procs").is_file() {
            places.push((Version::V2, unified));
        }
        list_at(&places, PARENT)
    }

    pub fn version(&self) -> Version {
        match self.layout {
            Layout::V1 { .. } => Version::V1,
            Layout::V2 { .. } => Version::V2,
        }
    }

    /// Every directory of this task's cgroup(s).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 {
                memory,
                cpu,
                pids,
                freezer,
            } => std::iter::once(memory)
                .chain(cpu)
                .chain(pids)
                .chain(freezer)
                .cloned()
                .collect(),
            Layout::V2 { dir } => vec![dir.clone()],
        }
    }

    /// The files a process writes its pid into to join; a launcher writes them in the child
    /// between fork and exec, so that no process of the task ever runs outside its limits.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` (and so its future children) into the cgroup(s).
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        for file in self.procs_files() {
            write_file(&file, &pid.to_string())?;
        }
        Ok(())
    }

    fn list_dir(&self) -> &Path {
        match &self.layout {
            Layout::V1 {
                memory, freezer, ..
            } => freezer.as_deref().unwrap_or(memory),
            Layout::V2 { dir } => dir,
        }
    }

    /// The processes in the cgroup (v2: including any child cgroups).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        collect_pids(self.list_dir(), &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Sends `signal` to every process in the cgroup except those in `spare`. The cgroup is
    /// frozen meanwhile, so a process cannot fork a child that misses the signal.
    pub fn signal_all(&self, signal: i32, spare: &[u32]) -> Result<()> {
        // Thawed when the guard drops: on every path out of here, errors and panics included.
        let _frozen = self.freeze();
        for pid in self.pids()?.into_iter().filter(|p| !spare.contains(p)) {
            send_signal(pid, signal);
        }
        Ok(())
    }

    /// Kills every process in the cgroup, including ones forking while we kill, and returns
    /// once the cgroup is empty. Whatever happens, the cgroup is left thawed: also one that
    /// was frozen before (by a process that died before it could thaw it), whose processes
    /// could not die otherwise (a frozen v1 process does not act on SIGKILL).
    pub fn kill_all(&self) -> Result<()> {
        self.thaw();
        let result = self.kill_all_thawed();
        self.thaw();
        result
    }

    fn kill_all_thawed(&self) -> Result<()> {
        let start = Instant::now();
        let kill_file = match &self.layout {
            Layout::V2 { dir } => Some(dir.join("cgroup.kill")).filter(|f| f.exists()),
            Layout::V1 { .. } => None,
        };
        loop {
            if self.pids()?.is_empty() {
                return Ok(());
            }
            if start.elapsed() > KILL_DEADLINE {
                let left = self.pids()?;
                if left.is_empty() {
                    return Ok(());
                }
                return Err(Error::Other(format!(
                    "processes {left:?} are still in {} after killing for {} s",
                    self.list_dir().display(),
                    KILL_DEADLINE.as_secs()
                )));
            }
            match &kill_file {
                // The kernel kills the whole subtree atomically, forks included.
                Some(file) => write_file(file, "1")?,
                None => self.signal_all(libc::SIGKILL, &[])?,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many processes the kernel's OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = match &self.layout {
            Layout::V1 { memory, .. } => memory.join("memory.oom_control"),
            Layout::V2 { dir } => dir.join("memory.events"),
        };
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let mut words = line.split_whitespace();
                    (words.next() == Some("oom_kill"))
                        .then(|| words.next()?.parse().ok())
                        .flatten()
                })
            })
            .unwrap_or(0)
    }

    /// Whether the OOM killer killed any process of the task.
    pub fn oom_killed(&self) -> bool {
        self.oom_kills() > 0
    }

    /// Removes the cgroup(s), retrying briefly while the last processes exit. Call
    /// `kill_all` first.
    pub fn remove(&self) -> Result<()> {
        let start = Instant::now();
        for dir in self.dirs().iter().rev() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && start.elapsed() < REMOVE_DEADLINE =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
                }
            }
        }
        Ok(())
    }

    /// Freezes the cgroup if it can be frozen, for as long as the returned guard lives: it
    /// thaws the cgroup when dropped. The only way to freeze a task's cgroup, so that no
    /// path can leave one frozen (short of this process being killed meanwhile, which the
    /// shim's watch and the start-up sweep, `sandbox::sweep_stale_tasks`, undo).
    pub fn freeze(&self) -> Option<Frozen<'_>> {
        let (request, value) = match &self.layout {
            Layout::V1 {
                freezer: Some(dir), ..
            } => (dir.join("freezer.state"), "FROZEN"),
            Layout::V1 { freezer: None, .. } => return None,
            Layout::V2 { dir } => (dir.join("cgroup.freeze"), "1"),
        };
        // Armed before the request: a failed write may still have frozen part of it.
        let guard = Frozen { cgroup: self };
        if write_file(&request, value).is_err() {
            return None;
        }
        let start = Instant::now();
        while start.elapsed() < FREEZE_DEADLINE && !self.is_frozen() {
            std::thread::sleep(Duration::from_millis(2));
        }
        Some(guard)
    }

    /// Whether the cgroup is frozen or freezing (v1 `FROZEN` or `FREEZING`, v2 a freeze
    /// requested in `cgroup.freeze`); false if it cannot be told.
    pub fn freeze_requested(&self) -> bool {
        match &self.layout {
            Layout::V1 {
                freezer: Some(dir), ..
            } => std::fs::read_to_string(dir.join("freezer.state"))
                .map(|t| matches!(t.trim(), "FROZEN" | "FREEZING"))
                .unwrap_or(false),
            Layout::V1 { freezer: None, .. } => false,
            Layout::V2 { dir } => std::fs::read_to_string(dir.join("cgroup.freeze"))
                .map(|t| t.trim() == "1")
                .unwrap_or(false),
        }
    }

    fn is_frozen(&self) -> bool {
        // Unreadable counts as frozen: waiting on it would not help.
        match &self.layout {
            Layout::V1 {
                freezer: Some(dir), ..
            } => std::fs::read_to_string(dir.join("freezer.state"))
                .map(|t| t.trim() == "FROZEN")
                .unwrap_or(true),
            Layout::V1 { freezer: None, .. } => false,
            Layout::V2 { dir } => std::fs::read_to_string(dir.join("cgroup.events"))
                .map(|t| t.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(true),
        }
    }

    /// Thaws the cgroup (whoever froze it). A cgroup already removed needs no thawing.
    pub fn thaw(&self) {
        let file = match &self.layout {
            Layout::V1 {
                freezer: Some(dir), ..
            } => dir.join("freezer.state"),
            Layout::V1 { freezer: None, .. } => return,
            Layout::V2 { dir } => dir.join("cgroup.freeze"),
        };
        let value = match self.layout {
            Layout::V1 { .. } => "THAWED",
            Layout::V2 { .. } => "0",
        };
        if let Err(e) = std::fs::write(&file, value) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!("thawing {}: {e}", self.list_dir().display());
            }
        }
    }
}

/// A freeze of a task's cgroup, from [`TaskCgroup::freeze`]; dropping it thaws the cgroup.
#[must_use = "the cgroup is thawed as soon as the guard is dropped"]
#[derive(Debug)]
pub struct Frozen<'a> {
    cgroup: &'a TaskCgroup,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.cgroup.thaw();
    }
}

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "task id {id:?} cannot name a cgroup: use letters, digits, '-', '_' and '.'"
        )))
    }
}

fn v1_hierarchy(root: &Path, controller: &str) -> Option<PathBuf> {
    let dir = root.join(controller);
    dir.join("cgroup.procs").is_file().then_some(dir)
}

/// The hierarchies a task's cgroups live in under `root` (v1: one per controller we use).
fn hierarchies(version: Version, root: &Path) -> Vec<PathBuf> {
    match version {
        Version::V1 => std::iter::once(root.join("memory"))
            .chain(
                ["cpu", "pids", "freezer"]
                    .iter()
                    .filter_map(|c| v1_hierarchy(root, c)),
            )
            .collect(),
        Version::V2 => vec![root.to_path_buf()],
    }
}

fn layout_at(version: Version, root: &Path, parent: &str, id: &str) -> Layout {
    let task = |hierarchy: PathBuf| hierarchy.join(parent).join(id);
    match version {
        Version::V1 => Layout::V1 {
            memory: task(root.join("memory")),
            cpu: v1_hierarchy(root, "cpu").map(task),
            pids: v1_hierarchy(root, "pids").map(task),
            freezer: v1_hierarchy(root, "freezer").map(task),
        },
        Version::V2 => Layout::V2 {
            dir: task(root.to_path_buf()),
        },
    }
}

fn open_at(version: Version, root: &Path, parent: &str, id: &str) -> Option<TaskCgroup> {
    check_id(id).ok()?;
    let cgroup = TaskCgroup {
        layout: layout_at(version, root, parent, id),
    };
    cgroup.dirs().iter().any(|d| d.is_dir()).then_some(cgroup)
}

fn list_at(places: &[(Version, PathBuf)], parent: &str) -> Vec<(String, TaskCgroup)> {
    let mut found = Vec::new();
    for (version, root) in places {
        let mut ids = std::collections::BTreeSet::new();
        for hierarchy in hierarchies(*version, root) {
            let Ok(entries) = std::fs::read_dir(hierarchy.join(parent)) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if let Ok(name) = entry.file_name().into_string() {
                        ids.insert(name);
                    }
                }
            }
        }
        for id in ids {
            if let Some(cgroup) = open_at(*version, root, parent, &id) {
                found.push((id, cgroup));
            }
        }
    }
    found
}

/// `root` is the mount point (v2) or the folder holding the v1 hierarchies; tests point it
/// at the hybrid unified hierarchy.
fn create_at(
    version: Version,
    root: &Path,
    parent: &str,
    id: &str,
    limits: &Limits,
) -> Result<TaskCgroup> {
    check_id(id)?;
    let cgroup = TaskCgroup {
        layout: layout_at(version, root, parent, id),
    };
    match &cgroup.layout {
        Layout::V1 { cpu, pids, .. } => {
            if limits.cpu_cores.is_some() && cpu.is_none() {
                return Err(Error::Other(format!(
                    "a CPU limit needs the cgroup v1 cpu controller at {}",
                    root.join("cpu").display()
                )));
            }
            if limits.pids_max.is_some() && pids.is_none() {
                return Err(Error::Other(format!(
                    "a process limit needs the cgroup v1 pids controller at {}",
                    root.join("pids").display()
                )));
            }
        }
        Layout::V2 { .. } => {
            // v2 only offers a controller's files in a child if every ancestor enables it.
            let mut wanted = Vec::new();
            if limits.memory_bytes.is_some() {
                wanted.push("memory");
            }
            if limits.cpu_cores.is_some() {
                wanted.push("cpu");
            }
            if limits.pids_max.is_some() {
                wanted.push("pids");
            }
            let parent = root.join(parent);
            make_dir(&parent)?;
            for dir in [root, parent.as_path()] {
                for controller in &wanted {
                    write_file(
                        &dir.join("cgroup.subtree_control"),
                        &format!("+{controller}"),
                    )?;
                }
            }
        }
    }
    for dir in cgroup.dirs() {
        if let Some(parent) = dir.parent() {
            make_dir(parent)?;
        }
        make_dir(&dir)?;
    }
    let held = cgroup.pids()?;
    if !held.is_empty() {
        return Err(Error::Other(format!(
            "cgroup {} already exists and holds processes {held:?}",
            cgroup.list_dir().display()
        )));
    }
    if let Err(e) = cgroup.apply(limits) {
        let _ = cgroup.remove();
        return Err(e);
    }
    Ok(cgroup)
}

/// The machine's CPUs: Hearth's parent cgroup weighs as much as that many busy processes.
/// Without this, every task of Hearth's together would compete for CPU like one process
/// against everything outside it, and a task granted N cores like one thread: a JVM started
/// by hand beside Hearth would win the machine. Each task weighs as its granted cores.
fn machine_cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

impl TaskCgroup {
    fn apply(&self, limits: &Limits) -> Result<()> {
        let cpu_quota = limits
            .cpu_cores
            .map(|cores| u64::from(cores.max(1)) * CPU_PERIOD_US);
        match &self.layout {
            Layout::V1 {
                memory, cpu, pids, ..
            } => {
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                let has_memsw = memsw.exists();
                // memsw must never be below the memory limit: lift it first, then set both.
                if has_memsw {
                    write_file(&memsw, "-1")?;
                }
                let bytes = limits
                    .memory_bytes
                    .map_or_else(|| "-1".to_string(), |b| b.to_string());
                write_file(&memory.join("memory.limit_in_bytes"), &bytes)?;
                if has_memsw {
                    write_file(&memsw, &bytes)?;
                }
                if let Some(cpu) = cpu {
                    write_file(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let quota = cpu_quota.map_or_else(|| "-1".to_string(), |q| q.to_string());
                    write_file(&cpu.join("cpu.cfs_quota_us"), &quota)?;
                    if let Some(cores) = limits.cpu_cores {
                        // cpu.shares default 1024 = one busy process.
                        if let Some(parent) = cpu.parent() {
                            write_file(
                                &parent.join("cpu.shares"),
                                &(1024 * machine_cores()).to_string(),
                            )?;
                        }
                        write_file(
                            &cpu.join("cpu.shares"),
                            &(1024 * u64::from(cores.max(1))).to_string(),
                        )?;
                    }
                }
                if let Some(pids) = pids {
                    let max = limits
                        .pids_max
                        .map_or_else(|| "max".to_string(), |p| p.to_string());
                    write_file(&pids.join("pids.max"), &max)?;
                }
            }
            Layout::V2 { dir } => {
                if let Some(bytes) = limits.memory_bytes {
                    write_file(&dir.join("memory.max"), &bytes.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write_file(&swap, "0")?;
                    }
                }
                if let Some(quota) = cpu_quota {
                    write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                if let Some(cores) = limits.cpu_cores {
                    // cpu.weight default 100 = one busy process; at most 10000.
                    let weight = |n: u64| (100 * n).clamp(1, 10_000).to_string();
                    if let Some(parent) = dir.parent() {
                        write_file(&parent.join("cpu.weight"), &weight(machine_cores()))?;
                    }
                    write_file(&dir.join("cpu.weight"), &weight(u64::from(cores.max(1))))?;
                }
                if let Some(max) = limits.pids_max {
                    write_file(&dir.join("pids.max"), &max.to_string())?;
                }
            }
        }
        Ok(())
    }
}

fn make_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("creating cgroup {}", dir.display()), e)),
    }
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .map_err(|e| Error::io(format!("writing {value:?} to {}", path.display()), e))
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>) -> Result<()> {
    let text = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(text) => text,
        // Removed meanwhile: nothing is left in it.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                format!("reading {}", dir.join("cgroup.procs").display()),
                e,
            ))
        }
    };
    pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    // Only v2 nests: a v1 task cgroup's children would need root to create.
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(_) => return Ok(()),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_pids(&entry.path(), pids)?;
        }
    }
    Ok(())
}

fn send_signal(pid: u32, signal: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory effects; a vanished pid only yields ESRCH.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!("signal {signal} to {pid}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    fn is_root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Apart from Hearth's own folder: these cgroups have no shim, so a start-up sweep of
    /// a Hearth running meanwhile would take them for leftovers.
    const TEST_PARENT: &str = "hearth-unit-test";

    fn create(id: &str, limits: &Limits) -> Result<TaskCgroup> {
        let version = detect().ok_or_else(|| Error::Other("no cgroups".into()))?;
        create_at(version, Path::new(ROOT), TEST_PARENT, id, limits)
    }

    fn open(id: &str) -> Option<TaskCgroup> {
        open_at(detect()?, Path::new(ROOT), TEST_PARENT, id)
    }

    /// Removes the test folder once no test uses it any more (busy meanwhile: left).
    fn remove_test_parent(place: Option<(Version, &Path)>) {
        let Some((version, root)) = place.or_else(|| Some((detect()?, Path::new(ROOT)))) else {
            return;
        };
        for hierarchy in hierarchies(version, root) {
            let _ = std::fs::remove_dir(hierarchy.join(TEST_PARENT));
        }
    }

    fn unique(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("test-{name}-{}-{nanos}", std::process::id())
    }

    /// The script starts after a pause, so that it is in the cgroup before it forks.
    fn spawn(script: &str) -> Child {
        Command::new("/bin/sh")
            .args(["-c", &format!("sleep 0.2; {script}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sh")
    }

    #[test]
    fn task_ids_that_could_escape_the_parent_folder_are_refused() {
        for id in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(check_id(id).is_err(), "{id:?} accepted");
        }
        assert!(check_id("job-12_a.3").is_ok());
    }

    #[test]
    fn limits_are_written_to_the_controllers() {
        if !is_root() || detect() != Some(Version::V1) {
            eprintln!("skipped: needs root and cgroup v1");
            return;
        }
        let id = unique("limits");
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_cores: Some(2),
            pids_max: Some(33),
        };
        let cg = create(&id, &limits).expect("create");
        let read = |dir: &Path, file: &str| {
            std::fs::read_to_string(dir.join(file))
                .expect("read")
                .trim()
                .to_string()
        };
        let Layout::V1 {
            memory,
            cpu,
            pids,
            freezer,
        } = &cg.layout
        else {
            panic!("expected v1")
        };
        assert_eq!(
            read(memory, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(memory, "memory.memsw.limit_in_bytes"),
                (64u64 << 20).to_string()
            );
        }
        let cpu = cpu.as_ref().expect("cpu hierarchy");
        assert_eq!(read(cpu, "cpu.cfs_quota_us"), "200000");
        assert_eq!(read(cpu, "cpu.cfs_period_us"), "100000");
        // Granted 2 cores: weighs as 2 busy processes.
        assert_eq!(read(cpu, "cpu.shares"), "2048");
        assert_eq!(read(pids.as_ref().expect("pids"), "pids.max"), "33");
        assert!(freezer.is_some());
        assert!(open(&id).is_some());
        cg.remove().expect("remove");
        assert!(cg.dirs().iter().all(|d| !d.exists()));
        assert!(open(&id).is_none());
        remove_test_parent(None);
    }

    #[test]
    fn kill_all_empties_a_cgroup_whose_processes_keep_forking() {
        if !is_root() || detect().is_none() {
            eprintln!("skipped: needs root and cgroups");
            return;
        }
        let id = unique("forkers");
        let cg = create(
            &id,
            &Limits {
                pids_max: Some(64),
                ..Limits::default()
            },
        )
        .expect("create");
        let mut child = spawn("while :; do sleep 100 & sleep 0.01; done");
        cg.add_pid(child.id()).expect("add");
        std::thread::sleep(Duration::from_millis(500));
        let pids = cg.pids().expect("pids");
        assert!(pids.contains(&child.id()));
        assert!(pids.len() > 3, "expected several sleepers, got {pids:?}");
        cg.kill_all().expect("kill_all");
        assert!(cg.pids().expect("pids").is_empty());
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!cg.oom_killed());
        cg.remove().expect("remove");
        remove_test_parent(None);
    }

    #[test]
    fn exceeding_the_memory_limit_counts_an_oom_kill() {
        if !is_root() || detect().is_none() {
            eprintln!("skipped: needs root and cgroups");
            return;
        }
        let id = unique("oom");
        let cg = create(
            &id,
            &Limits {
                memory_bytes: Some(32 << 20),
                ..Limits::default()
            },
        )
        .expect("create");
        let mut child = spawn("exec /usr/bin/python3 -c 'b = b\"x\" * (128 << 20)'");
        cg.add_pid(child.id()).expect("add");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(cg.oom_killed());
        cg.kill_all().expect("kill_all");
        cg.remove().expect("remove");
        remove_test_parent(None);
    }

    #[test]
    fn v2_interface_adds_lists_freezes_and_kills() {
        // The hybrid unified hierarchy has no resource controllers here, but cgroup.procs,
        // cgroup.freeze and cgroup.kill work, which is all this checks.
        let root = Path::new("/sys/fs/cgroup/unified");
        if !is_root() || !root.join("cgroup.procs").is_file() {
            eprintln!(
                "skipped: needs root and a cgroup2 mount at {}",
                root.display()
            );
            return;
        }
        let id = unique("v2");
        let cg =
            create_at(Version::V2, root, TEST_PARENT, &id, &Limits::default()).expect("create");
        assert_eq!(cg.version(), Version::V2);
        let mut child = spawn("while :; do sleep 100 & sleep 0.01; done");
        cg.add_pid(child.id()).expect("add");
        std::thread::sleep(Duration::from_millis(400));
        assert!(cg.pids().expect("pids").contains(&child.id()));
        cg.signal_all(libc::SIGSTOP, &[]).expect("signal");
        cg.kill_all().expect("kill_all");
        assert!(cg.pids().expect("pids").is_empty());
        let _ = child.wait();
        assert_eq!(cg.oom_kills(), 0);
        cg.remove().expect("remove");
        assert!(open_at(Version::V2, root, TEST_PARENT, &id).is_none());
        remove_test_parent(Some((Version::V2, root)));
    }
}
