//! File access on behalf of a user: the server runs as root, so it opens workspace files with
//! the user's fsuid/fsgid on a thread of its own. A symlink a job planted in its workspace
//! then leads nowhere the user could not go themselves.
//!
//! Every function here blocks (it starts and joins a thread when running as root): call
//! them from `tokio::task::spawn_blocking` in async code. File descriptors they return are
//! ordinary and usable from any thread; only opening them is done as the user.

use crate::LinuxUser;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Runs `f` on a fresh thread whose filesystem identity is `user` (with no capabilities).
/// Without root (isolation off) it runs `f` as the current user.
pub fn as_user<T: Send + 'static>(
    user: &LinuxUser,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return f();
    }
    let (uid, gid) = (user.uid, user.gid);
    std::thread::Builder::new()
        .name(format!("fs-as-{uid}"))
        .spawn(move || {
            become_fs_user(uid, gid)?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("the file access thread panicked"))?
}

/// Changes the calling thread's filesystem identity for good (the thread is thrown away).
///
/// Raw syscalls on purpose: glibc's setgroups() changes every thread of the process, and
/// the kernel's are per thread. The kernel drops the filesystem capabilities
/// (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, ...) from the thread's effective set
/// as soon as its fsuid is non-zero, so root's overrides do not apply either.
fn become_fs_user(uid: u32, gid: u32) -> io::Result<()> {
    // Root's supplementary groups (gid 0 at least) would otherwise open group-root files.
    // SAFETY: setgroups with a count of 0 does not read the list pointer.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<u32>()) };
    if rc != 0 {
        return Err(io::Error::other(format!(
            "dropping supplementary groups: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: setfsgid/setfsuid take plain integers and only return the previous id.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    // They report no errors: calling again with an invalid id returns the current one.
    // SAFETY: as above; u32::MAX is never a valid id, so nothing changes.
    let (fsgid, fsuid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsgid, u32::MAX),
            libc::syscall(libc::SYS_setfsuid, u32::MAX),
        )
    };
    if fsgid != i64::from(gid) || fsuid != i64::from(uid) {
        return Err(io::Error::other(format!(
            "could not switch file access to uid {uid} gid {gid} (still {fsuid}/{fsgid})"
        )));
    }
    Ok(())
}

/// Opens a file for reading as `user`.
pub fn open_read(user: &LinuxUser, path: &Path) -> io::Result<File> {
    let path = path.to_path_buf();
    as_user(user, move || File::open(path))
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The file name (not the path); non-UTF-8 bytes are replaced.
    pub name: String,
    /// A symlink is never a directory here, wherever it points.
    pub is_dir: bool,
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch.
    pub mtime_ms: i64,
}

/// Lists a directory as `user`, sorted by name. Symlinks are listed, not followed.
pub fn list_dir(user: &LinuxUser, path: &Path) -> io::Result<Vec<Entry>> {
    let path = path.to_path_buf();
    as_user(user, move || {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?;
            // lstat, so the size and time are the link's own.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Removed between readdir and stat.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            entries.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.file_type().is_dir(),
                size: meta.len(),
                mtime_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    })
}

/// Creates (or truncates) a file for writing as `user`: a new file is owned by the user,
/// mode 0644.
pub fn create_file(user: &LinuxUser, path: &Path) -> io::Result<File> {
    let path = path.to_path_buf();
    as_user(user, move || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(path)
    })
}

/// Creates a directory and its missing parents as `user`.
pub fn create_dir_all(user: &LinuxUser, path: &Path) -> io::Result<()> {
    let path = path.to_path_buf();
    as_user(user, move || std::fs::create_dir_all(path))
}

/// Removes a file, a symlink (not its target) or a whole directory tree as `user`. Symlinks
/// inside the tree are removed, never followed. Everything the user could not remove
/// themselves fails with "permission denied".
pub fn remove(user: &LinuxUser, path: &Path) -> io::Result<()> {
    let path: PathBuf = path.to_path_buf();
    as_user(user, move || {
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
    })
}
