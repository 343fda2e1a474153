//! Task directories on disk, for jobs and engines alike: folders and secret files created
//! with the mode and owner the sandbox relies on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Creates `path` (and parents) with `mode`, owned by `owner` when given (else root's).
pub fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Writes a file only its owner may read (0400): a task's Spark secrets.
pub fn write_secret(path: &Path, content: &str, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}
