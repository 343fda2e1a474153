//! What `hearth up`, `hearth server` and `hearth agent` check before they write anything
//! into their data directory: that the jobs can reach it, and that its file system has room. A data directory that fails either
//! would otherwise let Hearth start and every job fail later without saying why (Spark's
//! "Invalid properties file" when a parent is closed to the jobs' uids).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Below this much free space on the data directory's file system Hearth refuses to start:
/// the store, uploaded files, job logs and the jobs' Spark event logs all land there, and a
/// disk that fills fails jobs with errors that do not name the cause. Low enough to start on
/// a small test machine, high enough that the first few jobs do not fill it.
pub const MIN_FREE_BYTES: u64 = 1 << 30;

/// Refuses a data directory the jobs could not use. `isolation`: jobs run as other uids, who
/// must pass through every directory above it. Reads only; creates nothing.
pub fn check(data_dir: &Path, isolation: bool) -> Result<(), String> {
    if isolation {
        let mut closed = untraversable(data_dir, mode_of);
        // Through a symbolic link, the directories it leads to must be passable too.
        if let Some(real) = resolved(data_dir) {
            for c in untraversable(&real, mode_of) {
                if !closed.iter().any(|(d, _)| *d == c.0) {
                    closed.push(c);
                }
            }
        }
        if !closed.is_empty() {
            return Err(untraversable_message(data_dir, &closed));
        }
    }
    let existing = deepest_existing(data_dir);
    let free = free_bytes(existing)
        .map_err(|e| format!("measuring the free space on {}: {e}", existing.display()))?;
    if free < MIN_FREE_BYTES {
        return Err(format!(
            "the data directory {}'s file system has {} MiB free; Hearth needs at least {} MiB \
             there for its store, uploaded files and the jobs' logs. Free some space on it, or \
             use a data directory on another file system (--data-dir DIR)",
            data_dir.display(),
            free >> 20,
            MIN_FREE_BYTES >> 20
        ));
    }
    Ok(())
}

/// Creates the data directory, and any missing directory above it traversable (0711) rather
/// than private: the umask Hearth runs with would close them to the jobs.
pub fn create_data_dir(data_dir: &Path) -> Result<(), String> {
    let missing: Vec<PathBuf> = data_dir
        .ancestors()
        .skip(1)
        .take_while(|d| std::fs::symlink_metadata(d).is_err())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("creating the data directory {}: {e}", data_dir.display()))?;
    for dir in missing {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("making {} traversable: {e}", dir.display()))?;
    }
    Ok(())
}

/// The directories above `path` (outermost first) that lack the others' execute bit, with
/// their modes; `mode_of` is `None` for one that does not exist yet (Hearth creates it
/// traversable).
pub fn untraversable(path: &Path, mode_of: impl Fn(&Path) -> Option<u32>) -> Vec<(PathBuf, u32)> {
    let mut above: Vec<&Path> = path.ancestors().skip(1).collect();
    above.reverse();
    above
        .into_iter()
        .filter_map(|dir| mode_of(dir).map(|mode| (dir.to_path_buf(), mode & 0o7777)))
        .filter(|(_, mode)| mode & 0o001 == 0)
        .collect()
}

/// What to say about `closed` (from [`untraversable`], not empty), naming both ways out.
pub fn untraversable_message(data_dir: &Path, closed: &[(PathBuf, u32)]) -> String {
    let (first, mode) = match closed.first() {
        Some(c) => c,
        None => return String::new(),
    };
    let dirs: Vec<String> = closed
        .iter()
        .map(|(d, _)| d.display().to_string())
        .collect();
    let it = if closed.len() == 1 { "it" } else { "them" };
    format!(
        "the data directory {} is under {} (mode {mode:04o}), which the users' jobs cannot pass \
         through: every job would fail. Use a data directory outside it (--data-dir \
         /var/lib/hearth, or any directory every uid can pass through), or make {it} traversable: chmod o+x {}",
        data_dir.display(),
        first.display(),
        dirs.join(" ")
    )
}

fn mode_of(dir: &Path) -> Option<u32> {
    std::fs::metadata(dir).ok().map(|m| m.permissions().mode())
}

/// The nearest of `path` and the directories above it that exists.
fn deepest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"))
}

/// `path` with its existing part's symbolic links resolved, when that differs.
fn resolved(path: &Path) -> Option<PathBuf> {
    let existing = deepest_existing(path);
    let rest = path.strip_prefix(existing).ok()?;
    let real = existing.canonicalize().ok()?.join(rest);
    (real != path).then_some(real)
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the zeroed struct it is given from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_closed_directory_above_outermost_first() {
        let modes = |d: &Path| match d.to_str() {
            Some("/") => Some(0o40755),
            Some("/root") => Some(0o40700),
            Some("/root/x") => Some(0o40750),
            Some("/root/x/y") => Some(0o40711),
            _ => None,
        };
        let closed = untraversable(Path::new("/root/x/y/new/.hearth"), modes);
        assert_eq!(
            closed,
            vec![
                (PathBuf::from("/root"), 0o700),
                (PathBuf::from("/root/x"), 0o750)
            ]
        );
        let msg = untraversable_message(Path::new("/root/x/y/new/.hearth"), &closed);
        assert!(msg.contains("is under /root (mode 0700)"), "{msg}");
        assert!(msg.contains("chmod o+x /root /root/x"), "{msg}");
        assert!(msg.contains("--data-dir /var/lib/hearth"), "{msg}");
    }

    #[test]
    fn a_traversable_path_passes_and_its_own_mode_does_not_count() {
        let modes = |d: &Path| match d.to_str() {
            Some("/var/lib/hearth") => Some(0o40700),
            Some(_) => Some(0o40711),
            None => None,
        };
        assert!(untraversable(Path::new("/var/lib/hearth"), modes).is_empty());
    }
}
