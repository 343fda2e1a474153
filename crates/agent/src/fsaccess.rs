//! File access on behalf of a user: the server runs as root, so it opens workspace files with
//! the user's fsuid/fsgid on a thread of its own, and resolves every path with
//! `openat2(RESOLVE_BENEATH)` so that it never leaves the workspace. A symlink a job planted
//! there leads nowhere: not to what the user could read themselves (the host's /proc, say,
//! which shows other users' command lines), not to a FIFO that would hang the server.
//!
//! Every function here blocks (it starts and joins a thread when running as root): call
//! them from `tokio::task::spawn_blocking` in async code. File descriptors they return are
//! ordinary and usable from any thread; only opening them is done as the user.

use crate::LinuxUser;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

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

/// `openat2(2)`'s number on every architecture Hearth runs on (x86_64, aarch64): the
/// syscalls added since Linux 5.1 share one numbering.
const SYS_OPENAT2: libc::c_long = 437;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

fn check_relative(rel: &Path) -> io::Result<()> {
    if rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path must stay inside the workspace (relative, without ..)",
        ))
    }
}

/// Opens `rel` inside the directory `root` such that resolution can never leave `root`:
/// symlinks that point outside, absolute symlinks, `..` above it and /proc's magic links
/// all fail (EXDEV/ELOOP). The caller's identity decides permissions, as for `open`.
fn open_beneath(root: &Path, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    check_relative(rel)?;
    let root = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let path = cstring(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    };
    // SAFETY: valid fd, NUL-terminated path and a correctly sized open_how; the kernel
    // returns a new fd we take ownership of, or -1.
    let fd = unsafe {
        libc::syscall(
            SYS_OPENAT2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the path leads outside the workspace (through a symlink)",
            ),
            _ => e,
        });
    }
    // SAFETY: the kernel just handed us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// What a workspace path is. Only regular files and directories are served: a FIFO or a
/// device would block or misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

fn kind_of(file: &File) -> io::Result<Kind> {
    let ft = file.metadata()?.file_type();
    if ft.is_dir() {
        Ok(Kind::Dir)
    } else if ft.is_file() {
        Ok(Kind::File)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or directory",
        ))
    }
}

/// Whether `rel` in the user's workspace is a file or a directory.
pub fn kind(user: &LinuxUser, rel: &Path) -> io::Result<Kind> {
    let (home, rel) = (user.home.clone(), rel.to_path_buf());
    as_user(user, move || {
        let fd = open_beneath(&home, &rel, libc::O_PATH, 0)?;
        kind_of(&File::from(fd))
    })
}

/// Opens a regular file of the user's workspace for reading, as the user.
pub fn open_read(user: &LinuxUser, rel: &Path) -> io::Result<File> {
    let (home, rel) = (user.home.clone(), rel.to_path_buf());
    as_user(user, move || {
        // Non-blocking, so that opening a FIFO cannot hang; files ignore the flag.
        let file = File::from(open_beneath(
            &home,
            &rel,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )?);
        match kind_of(&file)? {
            Kind::File => Ok(file),
            Kind::Dir => Err(io::Error::new(io::ErrorKind::InvalidInput, "a directory")),
        }
    })
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

/// Lists a directory of the user's workspace, sorted by name. Symlinks are listed, not
/// followed.
pub fn list_dir(user: &LinuxUser, rel: &Path) -> io::Result<Vec<Entry>> {
    let (home, rel) = (user.home.clone(), rel.to_path_buf());
    as_user(user, move || {
        let dir = open_beneath(&home, &rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        // The open descriptor, not the path: a rename after the check cannot redirect us.
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
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

/// The parent directory of `rel` (created as the user if missing) and the final name.
fn open_parent(home: &Path, rel: &Path, create: bool) -> io::Result<(OwnedFd, CString)> {
    check_relative(rel)?;
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "name a file"))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    if create {
        let mut sofar = PathBuf::new();
        for c in parent.components() {
            sofar.push(c);
            match open_beneath(home, &sofar, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let up = open_beneath(
                        home,
                        sofar.parent().unwrap_or(Path::new("")),
                        libc::O_PATH | libc::O_DIRECTORY,
                        0,
                    )?;
                    let leaf = cstring(Path::new(c.as_os_str()))?;
                    // SAFETY: valid directory fd and NUL-terminated name.
                    if unsafe { libc::mkdirat(up.as_raw_fd(), leaf.as_ptr(), 0o755) } != 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() != io::ErrorKind::AlreadyExists {
                            return Err(e);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    let dir = open_beneath(home, parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok((dir, cstring(Path::new(name))?))
}

/// A file being written into a workspace under a temporary name; [`TempFile::commit`]
/// renames it into place, dropping it without committing leaves nothing behind.
pub struct TempFile {
    pub file: File,
    user: LinuxUser,
    dir: Option<OwnedFd>,
    tmp: CString,
    name: CString,
}

/// Starts writing `rel` in the user's workspace, as the user: parents are created, the
/// content goes to a hidden temporary file next to it.
pub fn create_temp(user: &LinuxUser, rel: &Path) -> io::Result<TempFile> {
    let (home, rel) = (user.home.clone(), rel.to_path_buf());
    let owner = user.clone();
    as_user(user, move || {
        let (dir, name) = open_parent(&home, &rel, true)?;
        let mut suffix = [0u8; 6];
        // SAFETY: getrandom fills the buffer it is given.
        unsafe { libc::getrandom(suffix.as_mut_ptr().cast(), suffix.len(), 0) };
        let tmp = CString::new(format!(
            ".{}.upload-{}",
            name.to_string_lossy(),
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad file name"))?;
        // SAFETY: valid directory fd and NUL-terminated name; O_EXCL|O_NOFOLLOW never
        // follows or reuses anything that is there.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TempFile {
            // SAFETY: a descriptor we just opened.
            file: unsafe { File::from_raw_fd(fd) },
            user: owner,
            dir: Some(dir),
            tmp,
            name,
        })
    })
}

impl TempFile {
    /// Syncs and renames the file into place (replacing a file of that name).
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        let dir = self
            .dir
            .take()
            .ok_or_else(|| io::Error::other("already done"))?;
        let (tmp, name) = (self.tmp.clone(), self.name.clone());
        as_user(&self.user, move || {
            // SAFETY: valid directory fd and NUL-terminated names.
            let rc = unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    dir.as_raw_fd(),
                    name.as_ptr(),
                )
            };
            let res = if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            };
            if res.is_err() {
                // SAFETY: as above.
                unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
            }
            res
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let tmp = self.tmp.clone();
            let _ = as_user(&self.user, move || {
                // SAFETY: valid directory fd and NUL-terminated name.
                unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
                Ok(())
            });
        }
    }
}

/// Removes a file, a symlink (not its target) or a whole directory tree of the user's
/// workspace, as the user. Symlinks inside the tree are removed, never followed.
pub fn remove(user: &LinuxUser, rel: &Path) -> io::Result<()> {
    let (home, rel) = (user.home.clone(), rel.to_path_buf());
    as_user(user, move || {
        let (dir, name) = open_parent(&home, &rel, false)?;
        // Through the parent's descriptor: the final name is looked at without following.
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
    })
}
