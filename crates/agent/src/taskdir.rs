//! The control files in a task's directory: the only channel between Hearth and a shim, so
//! that a restarted Hearth finds its tasks again. Every file is written whole (temp file +
//! rename), so a reader never sees half of one.

use crate::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The `TaskSpec` as JSON, written by `Task::launch`.
pub const SPEC: &str = "spec.json";
/// The shim's pid, written first thing by the shim (before `started`).
pub const SHIM_PID: &str = "shim.pid";
/// `Started` as JSON, once the task's process exists.
pub const STARTED: &str = "started";
/// `TaskExit` as JSON, once the task has ended.
pub const EXIT: &str = "exit.json";
/// Why the shim could not start the task, in words.
pub const ERROR: &str = "error";
/// The shim's own standard output and error.
pub const SHIM_LOG: &str = "shim.log";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    /// The task's top process: bubblewrap when isolated, else the command itself (which
    /// then leads its own process group).
    pub pid: u32,
    pub shim_pid: u32,
    pub started_ms: i64,
    /// Whether the task runs in a sandbox with cgroups (else it runs directly).
    pub isolated: bool,
    /// The slot of the task's own network ([`crate::net`]), when it has one.
    #[serde(default)]
    pub net_slot: Option<u32>,
    /// How long making that network took, in milliseconds (for `bench/network.py`).
    #[serde(default)]
    pub net_setup_ms: Option<f64>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // A crash right after the rename must not leave an empty file behind.
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Other(format!("encoding {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// `Ok(None)` if the file does not exist (yet).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Other(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

pub fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Opens a log for appending, root-owned and private; never through a symlink, since the
/// log's folder may be one a job can write to.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// The end of what was written to `path` after byte `from`, for error messages.
pub fn tail(path: &Path, from: u64) -> String {
    const MAX: u64 = 4000;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = from.max(len.saturating_sub(MAX));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(MAX).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    };
    read().unwrap_or_default()
}

/// Whether `pid` is a live shim supervising `dir`: its command line ends with `dir`. Guards
/// against the pid having been reused by an unrelated process since.
pub fn is_shim_of(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie has an empty command line, so it does not count as alive.
    cmdline
        .split(|b| *b == 0)
        .rfind(|arg| !arg.is_empty())
        .is_some_and(|last| last == dir.as_os_str().as_bytes())
}

pub fn shim_pid(dir: &Path) -> Option<u32> {
    read_text(&dir.join(SHIM_PID))?.parse().ok()
}

/// The task ids of every live shim on this machine, of any Hearth instance: processes of
/// root whose last argument is a task dir whose `shim.pid` names them and whose spec names
/// the task. Files are read through each process's own root, so that a shim in another
/// mount namespace is found too; the pid is the one in the shim's own PID namespace.
pub fn live_shim_task_ids() -> std::collections::HashSet<String> {
    #[derive(Deserialize)]
    struct SpecId {
        id: String,
    }
    let mut ids = std::collections::HashSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return ids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = entry.path();
        let Some(own_pid) = root_process_pid(&proc_dir) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let Some(last) = cmdline.split(|b| *b == 0).rfind(|arg| !arg.is_empty()) else {
            continue;
        };
        if last.first() != Some(&b'/') {
            continue;
        }
        // `/proc/PID/root` + the absolute dir, as the process sees it.
        let mut seen = proc_dir.join("root").into_os_string().into_vec();
        seen.extend_from_slice(last);
        let dir = std::path::PathBuf::from(std::ffi::OsString::from_vec(seen));
        if shim_pid(&dir) != Some(own_pid) {
            continue;
        }
        if let Ok(Some(spec)) = read_json::<SpecId>(&dir.join(SPEC)) {
            // Still the same process: a pid reused meanwhile is no shim.
            if std::fs::read(proc_dir.join("cmdline")).is_ok_and(|again| again == cmdline) {
                tracing::trace!(pid, task = %spec.id, "a live shim");
                ids.insert(spec.id);
            }
        }
    }
    ids
}

/// For a process of root (effective uid 0): its pid in its own PID namespace.
fn root_process_pid(proc_dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
    };
    let uids = field("Uid:")?;
    if uids.get(1) != Some(&"0") {
        return None;
    }
    field("NSpid:")?.last()?.parse().ok()
}
