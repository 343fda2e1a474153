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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub id: u64,
    pub name: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
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
}

/// A job as the API shows it.
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
    pub node: Option<String>,
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
    pub used_cores: u32,
    pub used_memory_mib: u64,
    pub isolation: bool,
    pub runtime: Option<String>,
    pub problems: Vec<String>,
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
