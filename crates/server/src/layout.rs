//! What a task needs laid out before it starts, for jobs and engines alike: folders and
//! secret files with the modes and owners the sandbox relies on, and a loopback port.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// The parts of a task's directory that belong to its user: `tmp` (bound at /tmp) and
/// `conf`, whose `spark.properties` holds the task's Spark secrets, readable by that user
/// only.
pub struct PrivateDirs {
    pub tmp: PathBuf,
    pub conf: PathBuf,
    pub properties: PathBuf,
}

/// Creates `dir/tmp` and `dir/conf` owned by `owner` (0700) and writes `properties` into
/// `dir/conf/spark.properties` (0400).
pub fn private_dirs(
    dir: &Path,
    owner: Option<(u32, u32)>,
    properties: &str,
) -> Result<PrivateDirs, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let tmp = dir.join("tmp");
    mkdir(&tmp, 0o700, owner).map_err(|e| io("creating the task's /tmp", e))?;
    let conf = dir.join("conf");
    mkdir(&conf, 0o700, owner).map_err(|e| io("creating the task's conf", e))?;
    let file = conf.join("spark.properties");
    write_secret(&file, properties, owner)
        .map_err(|e| io("writing the task's Spark properties", e))?;
    Ok(PrivateDirs {
        tmp,
        conf,
        properties: file,
    })
}

pub use hearth_agent::portguard::{free_local_port, listener_uid};
