//! Everything that touches one machine's processes: Linux accounts for Hearth users, cgroup
//! limits (v1 and v2 behind one interface), the sandbox every task runs in, and the shim
//! that supervises a task so it outlives a restart of Hearth. The one place that launches
//! user processes.

pub mod cgroup;
pub mod fsaccess;
pub mod machine;
pub mod net;
pub mod node;
pub mod portguard;
pub mod preflight;
pub mod remote;
pub mod sandbox;
pub mod shim;
mod taskdir;
pub mod tunnel;
pub mod users;

use std::path::PathBuf;

/// The Linux identity a Hearth user's processes run as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinuxUser {
    pub uid: u32,
    pub gid: u32,
    /// The passwd name, e.g. `hearth200000`.
    pub name: String,
    /// The passwd home: the user's workspace.
    pub home: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
