//! The messages of the REST API under `/api/v1`. Requests refuse unknown fields so that a
//! typo in a script is an error, not a silently ignored setting.

use crate::{JobResources, JobState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every error the API returns: a stable `code` for programs, a `message` for people that
/// says what to fix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    /// A label for the token, e.g. the client machine's name.
    #[serde(default)]
    pub token_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub user: User,
    pub token: String,
    pub token_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub admin: bool,
    /// The Linux uid the user's processes run as.
    pub uid: u32,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    /// Omitted: the server generates one and returns it once.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedUser {
    pub user: User,
    /// Present only when the server generated the password.
    pub generated_password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Lifetime in seconds; omitted: the token does not expire.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// `api` (default: everything its user may do) or `connect` (Spark Connect only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub id: u64,
    pub name: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    /// What it opens: `api` or `connect` (Spark Connect only).
    #[serde(default = "api_scope")]
    pub scope: String,
}

fn api_scope() -> String {
    "api".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: Token,
    /// The secret, shown this once; the server keeps only a slow salted hash of it.
    pub secret: String,
}

/// A file the client uploaded first (`PUT /api/v1/blobs/{sha256}`), named as the job sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// File name in the job's directory (no slashes).
    pub name: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequest {
    #[serde(default)]
    pub driver_cores: Option<u32>,
    /// e.g. "2g"
    #[serde(default)]
    pub driver_memory: Option<String>,
    #[serde(default)]
    pub executor_cores: Option<u32>,
    #[serde(default)]
    pub executor_memory: Option<String>,
    #[serde(default)]
    pub num_executors: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    #[serde(default)]
    pub name: Option<String>,
    /// The application: a `.py` file, or a `.jar` (with `class`, or a Main-Class manifest).
    pub main: FileRef,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// `--conf k=v` pairs, passed to Spark as they are.
    #[serde(default)]
    pub conf: BTreeMap<String, String>,
    #[serde(default)]
    pub py_files: Vec<FileRef>,
    #[serde(default)]
    pub files: Vec<FileRef>,
    #[serde(default)]
    pub archives: Vec<FileRef>,
    #[serde(default)]
    pub jars: Vec<FileRef>,
    #[serde(default)]
    pub resources: ResourceRequest,
    /// The queue (default: the user's group's queue).
    #[serde(default)]
    pub queue: Option<String>,
    /// low, normal or high: order among the user's own jobs.
    #[serde(default)]
    pub priority: Option<String>,
    /// May run on idle capacity beyond its share, and gives way (is requeued) when work
    /// with a rightful claim waits.
    #[serde(default)]
    pub preemptible: bool,
    /// `key=value` labels a node must have to run the job (`--constraint`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
}

/// A job as the API shows it.
/// `count` of something (executors) on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCount {
    pub node: String,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub name: String,
    pub owner: String,
    pub state: JobState,
    pub main: String,
    pub class: Option<String>,
    pub args: Vec<String>,
    pub resources: JobResources,
    /// Local-mode cores (`local[N]`): driver plus executors.
    pub cores: u32,
    /// The OS limit on the job's memory: heap plus Spark's overhead.
    pub memory_limit_mib: u64,
    pub submitted_at_ms: i64,
    /// When the scheduler admitted the job and its processes began to start.
    pub started_at_ms: Option<i64>,
    /// When the job's process was running.
    pub running_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub exit_code: Option<i32>,
    /// Why a queued job waits, or why a finished job ended as it did.
    pub reason: Option<String>,
    /// The job's process tree was killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// Where it runs: the whole job, or a spread job's driver.
    pub node: Option<String>,
    /// A job spread over several nodes: how many executors run on which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executors_by_node: Vec<NodeCount>,
    pub queue: String,
    pub priority: String,
    pub preemptible: bool,
    /// Earlier runs that were preempted, oldest first.
    pub attempts: Vec<Attempt>,
    /// Its Spark UI through Hearth's door (a path on the web port), while it runs.
    #[serde(default)]
    pub ui_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// One entry of a workspace directory listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub dir: bool,
    pub size: u64,
    pub modified_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
}

/// The machine's offer and what jobs use of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    /// Held on this node by running (and starting) jobs and live interactive engines.
    pub used_cores: u32,
    pub used_memory_mib: u64,
    /// Jobs starting or running on this node (engines not counted).
    #[serde(default)]
    pub running_jobs: u32,
    pub isolation: bool,
    pub runtime: Option<String>,
    pub problems: Vec<String>,
    /// Why the node is offered no work until an admin approves it (`hearth node approve`):
    /// it offers more than it was approved for, or than its machine measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// ready, draining or down; the local node is always ready.
    #[serde(default = "ready")]
    pub state: crate::cluster::NodeState,
    /// True for a node that joined with `hearth agent` (false for the server's own machine).
    #[serde(default)]
    pub joined: bool,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The last heartbeat of a joined node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
    /// The SHA-256 of a joined node's certificate, which identifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// A connected joined node: whether its workspaces are the server's own (mounted
    /// there), so that jobs on it, and jobs spread over it and others, see the same files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_workspace: Option<bool>,
    /// What the node's machine has in use, measured there (every process, Hearth's or not);
    /// null when unknown: a node down or not connected, or an agent too old to measure.
    #[serde(default)]
    pub measured: Option<MeasuredUse>,
}

/// A machine's use as measured on it, beside what jobs hold (`used_cores`,
/// `used_memory_mib` of [`NodeInfo`], which are granted, not measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasuredUse {
    /// Online CPUs of the machine.
    pub cpus: u32,
    /// Cores busy, averaged over the last few seconds (at least one); null until two
    /// readings were taken.
    pub busy_cores: Option<f64>,
    /// The machine's memory.
    pub memory_mib: u64,
    /// Memory in use: total less what the kernel could hand back (`MemAvailable`).
    pub used_memory_mib: u64,
}

impl From<crate::cluster::MachineUse> for MeasuredUse {
    fn from(m: crate::cluster::MachineUse) -> MeasuredUse {
        MeasuredUse {
            cpus: m.cpus,
            busy_cores: m.cpu_millicores.map(|c| f64::from(c) / 1000.0),
            memory_mib: m.memory_total_mib,
            used_memory_mib: m.memory_mib,
        }
    }
}

fn ready() -> crate::cluster::NodeState {
    crate::cluster::NodeState::Ready
}

/// A join token as listed (its secret is shown only once, at creation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeToken {
    pub id: u64,
    pub created_by: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
    /// How many nodes joined with it.
    pub uses: u64,
    /// How many joins it is good for (none: any number, a token from before the limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// The most a node joining with it may offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNodeToken {
    /// Default one hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// How many machines may join with it; default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u64>,
    /// The most a node joining with it may offer; more is held until an admin approves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
}

/// `POST /nodes/{name}/approve`: the offer the admin saw and approves; refused if the node
/// offers something else by then.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveNode {
    pub cores: u32,
    pub memory_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedNodeToken {
    pub token: NodeToken,
    /// The token itself, shown once.
    pub secret: String,
    /// The cluster port as agents should dial it.
    pub server: String,
    /// The SHA-256 of Hearth's CA certificate (DER), which agents pin.
    pub ca_sha256: String,
    /// The exact command to run on the joining machine.
    pub command: String,
}

/// Cores and memory for a queue's guarantee or maximum; `None` is none (or no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// e.g. "64g"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// A queue: shares the machines with other queues by weight (Dominant Resource Fairness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    pub name: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// What the queue gets whenever it asks, preempting preemptible work if need be.
    #[serde(default)]
    pub guaranteed: ResourceLimit,
    /// What the queue's jobs may hold together at most.
    #[serde(default)]
    pub max: ResourceLimit,
    /// Every job of a best-effort queue is preemptible.
    #[serde(default)]
    pub best_effort: bool,
    /// Groups whose members may submit here besides the groups whose own queue it is
    /// (`default` is open to everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_to: Vec<String>,
    /// Where its jobs may connect beyond their own networks (default: open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::net::Egress>,
}

fn one() -> u32 {
    1
}

/// Limits on what a user (or a group together) may hold and queue; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cores: Option<u32>,
    /// e.g. "32g"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_jobs: Option<u32>,
    /// Submissions beyond it are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_jobs: Option<u32>,
}

/// A group of users: its jobs go to one queue; it may limit its members together and each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    /// Where members' jobs go unless a job names a queue (default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Limits on all members together.
    #[serde(default)]
    pub quota: Quota,
    /// Limits on each member without a quota of their own.
    #[serde(default)]
    pub member_quota: Quota,
    /// Where members' jobs, engines and notebooks may connect (default: open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::net::Egress>,
}

/// A user's place in the scheduling policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPolicy {
    /// `None`: the group `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `None`: the group's member quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// The highest `--priority` the user may ask for (low, normal, high).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_priority: Option<String>,
    /// Where the user's jobs, engines and notebooks may connect (default: open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::net::Egress>,
}

/// The whole scheduling policy, read and written as one document. A write must carry the
/// `version` it read; a stale one is refused, so two admins never overwrite each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedPolicy {
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub queues: Vec<QueueSpec>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub users: BTreeMap<String, UserPolicy>,
    /// SIGTERM-to-SIGKILL time for preempted jobs (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_grace_seconds: Option<u64>,
    /// Networks no task may reach, whatever its egress (an office LAN, a database
    /// subnet), besides those no task ever reaches: this machine, other tasks, link-local.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_networks: Vec<crate::net::Cidr>,
}

/// What one user holds and waits for in a queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserUsage {
    pub user: String,
    pub running_jobs: u32,
    pub queued_jobs: u32,
    pub cores: u32,
    pub memory_mib: u64,
    /// max(cores share, memory share) of the cluster: what DRF equalises.
    pub dominant_share: f64,
    /// The limits that apply to this user alone (their own, or their group's per-member).
    pub quota: Quota,
}

/// A queue's use against its fair share and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueStatus {
    pub spec: QueueSpec,
    pub running_jobs: u32,
    pub queued_jobs: u32,
    pub cores: u32,
    pub memory_mib: u64,
    pub dominant_share: f64,
    /// weight / total weight of the queues that have work: DRF's target share.
    pub fair_share: f64,
    pub users: Vec<UserUsage>,
}

/// One sample of the machine's use: what jobs hold against what is offered, and how many
/// jobs run and wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSample {
    pub at_ms: i64,
    pub cores: u32,
    pub used_cores: u32,
    pub memory_mib: u64,
    pub used_memory_mib: u64,
    /// Starting or running.
    pub running_jobs: u32,
    pub queued_jobs: u32,
}

/// The usage history the server keeps in memory (a day at most), oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageHistory {
    pub interval_seconds: u64,
    pub samples: Vec<UsageSample>,
}

/// One earlier run of a job that did not end it (`outcome`: preempted, or lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub started_at_ms: Option<i64>,
    pub running_at_ms: Option<i64>,
    pub ended_at_ms: i64,
    pub outcome: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_refuses_unknown_fields() {
        let e = serde_json::from_str::<SubmitJob>(
            r#"{"main":{"name":"a.py","sha256":"00"},"executor_memroy":"1g"}"#,
        )
        .expect_err("unknown field");
        assert!(
            e.to_string().contains("unknown field `executor_memroy`"),
            "{e}"
        );
    }
}
