//! The server's one configuration struct and the layout of its data directory.

use crate::runtime::RuntimeLocation;
use hearth_agent::sandbox::ShimCommand;
use hearth_agent::users::UidRange;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// What this machine offers to jobs.
    pub cores: u32,
    pub memory_mib: u64,
    pub uid_range: UidRange,
    pub runtime: RuntimeLocation,
    pub max_upload_bytes: u64,
    /// The first start's admin password; generated and printed once when None.
    pub admin_password: Option<String>,
    pub shim: ShimCommand,
    /// SIGTERM-to-SIGKILL grace when a job is cancelled or Hearth stops.
    pub stop_grace: Duration,
    /// The Spark Connect gateway's address; None turns it off.
    pub connect_listen: Option<SocketAddr>,
    /// Extra names (hosts or IPs) for the gateway's certificate.
    pub connect_hosts: Vec<String>,
    /// The admin's own certificate and key (PEM) instead of one from Hearth's CA.
    pub connect_cert: Option<(PathBuf, PathBuf)>,
    /// Each user's Spark Connect engine: cores, heap, and how long it may sit unused.
    pub engine_cores: u32,
    pub engine_memory_mib: u64,
    pub engine_idle_timeout: Duration,
    /// Each user's notebook server: its memory limit, and how long it may sit unused.
    pub notebook_memory_mib: u64,
    pub notebook_idle_timeout: Duration,
    /// The cluster port, where agents join and connect; None turns it off.
    pub cluster_listen: Option<SocketAddr>,
    /// A joined node that has not sent a heartbeat for this long is down.
    pub node_timeout: Duration,
    /// How many times a batch job whose node was lost is run again before it fails.
    pub max_retries: u32,
    /// How often the usage history (`usage`) samples the machine.
    pub usage_interval: Duration,
    /// Whether this machine runs batch jobs (`hearth up`), or is the control plane alone
    /// (`hearth server`: joined nodes run the jobs; users' interactive engines still run
    /// here, as the gateway and the door reach them on loopback).
    pub local_jobs: bool,
    /// How this machine's tasks (jobs, engines, notebooks) are networked.
    pub network: hearth_agent::net::NetworkMode,
}

/// Where everything lives under the data directory.
impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("hearth.db")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }
    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("jobs")
    }
    pub fn job_dir(&self, id: i64) -> PathBuf {
        self.jobs_dir().join(id.to_string())
    }
    pub fn workspaces_dir(&self) -> PathBuf {
        self.data_dir.join("workspaces")
    }
    pub fn workspace(&self, user: &str) -> PathBuf {
        self.workspaces_dir().join(user)
    }
}

/// The machine's cores and memory, as the kernel reports them.
pub fn machine_resources() -> (u32, u64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    (cores, mem_kib / 1024)
}
