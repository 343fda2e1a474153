//! The words agents and the server share on the cluster port: join tokens, the JSON-line
//! messages of a node's one connection, and what state a node is in. Pure: no I/O, no clock
//! (callers pass `now`), so every rule here is unit tested.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The largest message either side accepts, newline included. A peer that sends more is
/// cut off: nothing an agent says needs more, and a bound keeps a bad peer from filling
/// the server's memory.
pub const MAX_FRAME: usize = 64 * 1024;

/// The name the server's cluster certificate is made for and agents check, whatever
/// address they dial (an IP, a NAT'd name): the CA is pinned by hash, so the name only
/// has to tell Hearth's cluster certificate apart from others the same CA signed.
pub const SERVER_NAME: &str = "hearth-cluster";

/// How often agents send a heartbeat at most; faster when the node timeout is short.
pub const MAX_HEARTBEAT_MS: u64 = 5_000;

/// The heartbeat interval for a node timeout: three beats fit in one timeout, so a single
/// late or lost beat never marks a node down.
pub fn heartbeat_interval_ms(node_timeout_ms: u64) -> u64 {
    (node_timeout_ms / 3).clamp(100, MAX_HEARTBEAT_MS)
}

const TOKEN_PREFIX: &str = "hjt_";
/// Bytes of randomness in a join token's secret (hex-encoded: twice as many characters).
pub const TOKEN_SECRET_BYTES: usize = 32;

/// Formats a join token: `hjt_<id>_<64 hex digits>`.
pub fn format_join_token(id: i64, secret_hex: &str) -> String {
    format!("{TOKEN_PREFIX}{id}_{secret_hex}")
}

/// Splits a join token into its id and secret, or says what is wrong with it (never
/// repeating the token itself, which may be a mistyped secret).
pub fn parse_join_token(token: &str) -> Result<(i64, &str), String> {
    const SHAPE: &str = "a join token looks like hjt_<id>_<64 hex digits>: copy it whole from `hearth node token create`";
    let rest = token
        .trim()
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| format!("the join token is malformed (wrong prefix): {SHAPE}"))?;
    let (id, secret) = rest
        .split_once('_')
        .ok_or_else(|| format!("the join token is malformed (no id): {SHAPE}"))?;
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("the join token is malformed (bad id): {SHAPE}"))?;
    if secret.len() != TOKEN_SECRET_BYTES * 2
        || !secret
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(format!(
            "the join token is malformed (the secret is not 64 lowercase hex digits): {SHAPE}"
        ));
    }
    Ok((id, secret))
}

/// What a node offers and says about itself; sent when joining and at every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOffer {
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's version, for the admin's eyes.
    #[serde(default)]
    pub version: String,
    /// Where this node's Spark runtime is; a node without one is offered no jobs.
    #[serde(default)]
    pub runtime: Option<NodeRuntime>,
    /// The agent's data dir, absolute: the server builds paths on the node's side from it
    /// (see [`TaskLayout`]).
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Why tasks on this node would run without isolation (empty: isolated); None from an
    /// agent that does not say.
    #[serde(default)]
    pub isolation_problems: Option<Vec<String>>,
    /// What the node's workspaces directory holds in [`WORKSPACE_MARK`], if anything: the
    /// server's instance id when it is the server's own workspaces, shared (mounted) here.
    #[serde(default)]
    pub workspace_mark: Option<String>,
}

/// The file the server keeps in its workspaces directory, holding its instance id: a node
/// that finds the same one in its own workspaces directory shares them with the server.
pub const WORKSPACE_MARK: &str = ".hearth-workspaces";

/// A node's Spark runtime, as paths on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRuntime {
    /// The directory every task must be able to read (bound read-only into sandboxes).
    pub root: String,
    pub spark_home: String,
    pub python: String,
}

/// Where one attempt of a job lives on a node, under the agent's data dir. Both ends use
/// this, so the server can build a task's command line with the node's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLayout {
    pub dir: PathBuf,
    /// The job's files, by their names (hard links into the node's blob cache).
    pub files: PathBuf,
    /// Owned by the task's uid: `spark.properties` with the job's secret.
    pub conf: PathBuf,
    pub properties: PathBuf,
    pub tmp: PathBuf,
    /// The shim's control files.
    pub task: PathBuf,
    pub log: PathBuf,
}

impl TaskLayout {
    pub fn new(data_dir: &Path, job: i64, attempt: u32) -> TaskLayout {
        let dir = data_dir.join("jobs").join(format!("{job}-{attempt}"));
        let conf = dir.join("conf");
        TaskLayout {
            files: dir.join("files"),
            properties: conf.join("spark.properties"),
            conf,
            tmp: dir.join("tmp"),
            task: dir.join("task"),
            log: dir.join("output.log"),
            dir,
        }
    }
}

/// A user's workspace on a node (not shared with the server's unless the admin mounts it so).
pub fn node_workspace(data_dir: &Path, hearth_user: &str) -> PathBuf {
    data_dir.join("workspaces").join(hearth_user)
}

/// A file name a task may be given: one path component, nothing hidden behind it.
pub fn check_file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a plain file name"))
    }
}

/// Checks a SHA-256 in hex (what names a blob in the node's cache).
pub fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(format!("`{s}` is not a SHA-256 in lowercase hex"))
    }
}

/// The most bytes of a file one [`ServerMessage::Chunk`] carries: hex doubles them, and the
/// line must stay under [`MAX_FRAME`] with room for the rest of the message.
pub const CHUNK_BYTES: usize = 24 * 1024;

/// One of a job's files for a task: the node fetches what its cache lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub name: String,
    pub sha256: String,
}

/// One attempt of a job, as a node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    pub job: i64,
    pub attempt: u32,
}

/// The user a task runs as: the node makes the same Linux user (same uid) if it lacks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskUser {
    /// The Hearth user's name (names the workspace).
    pub name: String,
    /// The Linux user's name, e.g. `hearth200000`.
    pub linux_name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Everything a node needs to run one attempt of a job. The command line and environment
/// come built by the server (`server::spark`, the one place for Spark command lines), with
/// the node's paths from [`TaskLayout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    pub job: i64,
    pub attempt: u32,
    /// The task's id on the node (names its cgroup).
    pub task_id: String,
    pub user: TaskUser,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub files: Vec<TaskFile>,
    /// The task's `spark.properties` (holds its secret: never logged).
    pub properties: String,
    pub memory_limit_mib: u64,
    pub cpu_cores: u32,
    pub pids_max: u32,
    /// Give the task a Spark UI, reached through Hearth's door under this path (e.g.
    /// `/ui/jobs/7`): the node reserves a port it guards and adds [`ui_properties`] to the
    /// task's properties. None: no UI (`spark.ui.enabled=false` is then added).
    #[serde(default)]
    pub ui_base: Option<String>,
    /// Where the task may connect beyond its own network; None: anywhere the node allows.
    #[serde(default)]
    pub egress: Option<crate::net::Egress>,
    /// Networks the task may not reach besides the node's own list (the policy's).
    #[serde(default)]
    pub deny: Vec<crate::net::Cidr>,
    /// The task runs in its node's network instead of one of its own: a part of a job
    /// spread over several nodes, which the other nodes' parts must reach.
    #[serde(default)]
    pub shared_network: bool,
}

/// The Spark properties that place a task's UI: on `port` of loopback behind the door's
/// `proxy_base`, never on another port; or, with None, no UI at all. The one place these
/// are written, for the server's own tasks and the ones nodes place.
pub fn ui_properties(ui: Option<(u16, &str)>) -> Vec<(&'static str, String)> {
    match ui {
        Some((port, proxy_base)) => vec![
            ("spark.ui.port", port.to_string()),
            ("spark.ui.proxyBase", proxy_base.to_string()),
            // Never wander to the next port: only the guarded one is safe.
            ("spark.port.maxRetries", "0".into()),
        ],
        None => vec![("spark.ui.enabled", "false".into())],
    }
}

/// Part of a byte stream between the server and a node (see `hearth_agent::tunnel`):
/// bytes (hex), an acknowledgement of bytes taken, or the end of the sender's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelFrame {
    pub stream: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub close: bool,
}

/// Checks a node name: what `hearth node drain NAME` must be able to type.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name `{name}`: use 1-63 letters, digits, `-`, `_` or `.`, starting with a letter or digit (pass --name)"
        ))
    }
}

/// Checks one `--label key=value`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let good = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    };
    match s.split_once('=') {
        Some((k, v)) if good(k) && good(v) => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "--label {s}: write key=value with letters, digits, `-`, `_`, `.` or `/` (at most 63 each), e.g. disk=ssd"
        )),
    }
}

/// What an agent says. The first message on a connection is `Join` (no client
/// certificate yet) or `Hello` (with the node's certificate); then heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMessage {
    /// Asks for a certificate for `public_key` (the raw uncompressed P-256 point, hex),
    /// proving the join token.
    Join {
        token: String,
        public_key: String,
        offer: NodeOffer,
    },
    Hello {
        offer: NodeOffer,
    },
    Heartbeat {
        seq: u64,
        /// The machine's measured use; absent from older agents, and when /proc is unreadable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine: Option<MachineUse>,
    },
    /// A task's process is running; its Spark UI on `ui_port` of the node's loopback, if
    /// the server asked for one and the node could guard a port for it.
    Started {
        job: i64,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ui_port: Option<u16>,
    },
    /// The answer to `Open`: the stream is connected, or `error` says why not.
    Opened {
        stream: u64,
        error: Option<String>,
    },
    /// Part of a stream the server opened.
    Tunnel(TunnelFrame),
    /// Every attempt the node holds (running, or ended but not yet forgotten by the
    /// server): sent first on each connection, so a restarted server adopts what still
    /// runs and a reconnected node's missing starts are known at once.
    Tasks {
        tasks: Vec<TaskRef>,
    },
    /// Lines a task wrote (each at most a few KiB; a message stays under the cap): the
    /// bytes `offset..next` of the node's copy of the task's log. The server appends a batch
    /// only at the offset it expects, so a batch sent twice is logged once.
    Output {
        job: i64,
        attempt: u32,
        offset: u64,
        next: u64,
        lines: Vec<String>,
    },
    /// A task ended, or could not start (`error` says why). Sent only once the server
    /// acknowledged all its output, and again on each connection until it says `Forget`.
    Ended {
        job: i64,
        attempt: u32,
        code: Option<i32>,
        signal: Option<i32>,
        oom_killed: bool,
        error: Option<String>,
    },
    /// Asks for part of a job file the node's cache lacks.
    Fetch {
        sha256: String,
        offset: u64,
    },
}

/// A machine's use as measured on it (every process, Hearth's or not: see
/// `hearth_agent::machine` for why machine-wide), sent with each heartbeat. A few numbers,
/// so a heartbeat stays a short line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineUse {
    /// Online CPUs.
    pub cpus: u32,
    /// Thousandths of a core busy, averaged since an earlier reading at least a second
    /// before; None until there is one (CPU use needs two readings).
    #[serde(default)]
    pub cpu_millicores: Option<u32>,
    pub memory_total_mib: u64,
    /// In use: total less what the kernel could hand back (`MemAvailable`).
    pub memory_mib: u64,
}

/// What the server says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// The node's certificate (PEM), signed by Hearth's CA; the agent reconnects with it.
    Joined { certificate: String, name: String },
    /// The node is connected; heartbeat every `heartbeat_ms`.
    Welcome { name: String, heartbeat_ms: u64 },
    /// A heartbeat arrived.
    Ack { seq: u64 },
    /// No: why, and what to do. The connection closes after it.
    Refused { reason: String },
    /// Run a task.
    StartTask(Box<StartTask>),
    /// Stop a task (cancelled or preempted), within `grace_ms`.
    StopTask {
        job: i64,
        attempt: u32,
        grace_ms: u64,
    },
    /// The server waits for this attempt: send its output from `offset` (what the server's
    /// log holds), on this connection. The answer to `Tasks`, and to a batch that came at
    /// another offset than expected.
    Resume { job: i64, attempt: u32, offset: u64 },
    /// The task's output up to `offset` is in the server's log.
    Logged { job: i64, attempt: u32, offset: u64 },
    /// The server wants nothing more of this attempt (its end is recorded, or it was
    /// given up on): stop it within `grace_ms` if it still runs, and forget it.
    Forget {
        job: i64,
        attempt: u32,
        grace_ms: u64,
    },
    /// Open a byte stream to the Spark UI of this attempt (the door reaching it).
    Open { stream: u64, job: i64, attempt: u32 },
    /// Part of a stream the server opened.
    Tunnel(TunnelFrame),
    /// Part of a file the node asked for: `data` in hex, `eof` on the last part; `error`
    /// when the server will not or cannot send it.
    Chunk {
        sha256: String,
        offset: u64,
        data: String,
        eof: bool,
        error: Option<String>,
    },
}

/// Encodes one message as a line; None if it would exceed [`MAX_FRAME`].
pub fn encode<T: Serialize>(msg: &T) -> Option<Vec<u8>> {
    let mut line = serde_json::to_vec(msg).ok()?;
    line.push(b'\n');
    (line.len() <= MAX_FRAME).then_some(line)
}

/// Decodes one line (without its newline), saying what was wrong with it.
pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|e| format!("a malformed message ({e})"))
}

/// A node as the scheduler and the admin see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating and taking work.
    Ready,
    /// Heartbeating, but takes no new work (`hearth node drain`).
    Draining,
    /// Missed its heartbeats for longer than the node timeout (or never connected).
    Down,
}

impl NodeState {
    pub const ALL: [NodeState; 3] = [NodeState::Ready, NodeState::Draining, NodeState::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a node is held (offered no work until an admin approves it with `hearth node
/// approve`), if it is: it offers more than it was approved for (its join token's caps, or
/// what it offered when it joined), or, unless an admin approved its offer as it is, more
/// than its own machine measures in its heartbeats (a machine made to look bigger than it
/// is would otherwise receive every job, its files and its secret).
pub fn held(
    offer: (u32, u64),
    approved: (Option<u32>, Option<u64>),
    admin_approved: bool,
    measured: Option<&MachineUse>,
) -> Option<String> {
    let (cores, memory_mib) = offer;
    let approve = "`hearth node approve NAME` to accept it";
    if let Some(max) = approved.0.filter(|m| cores > *m) {
        return Some(format!(
            "offers {cores} cores, more than the {max} it was approved for: {approve}"
        ));
    }
    if let Some(max) = approved.1.filter(|m| memory_mib > *m) {
        return Some(format!(
            "offers {memory_mib} MiB, more than the {max} MiB it was approved for: {approve}"
        ));
    }
    if admin_approved {
        return None;
    }
    let m = measured?;
    if cores > m.cpus || memory_mib > m.memory_total_mib {
        return Some(format!(
            "offers {cores} cores and {memory_mib} MiB, but its machine measures {} cores and {} MiB: {approve}",
            m.cpus, m.memory_total_mib
        ));
    }
    None
}

/// A node's state from its last heartbeat: down once it is older than `timeout_ms`
/// (whatever else is true: a silent node takes no work), else draining or ready.
pub fn node_state(
    last_heartbeat_ms: Option<i64>,
    now_ms: i64,
    timeout_ms: u64,
    draining: bool,
) -> NodeState {
    let fresh = last_heartbeat_ms
        .is_some_and(|t| now_ms.saturating_sub(t) <= i64::try_from(timeout_ms).unwrap_or(i64::MAX));
    match (fresh, draining) {
        (false, _) => NodeState::Down,
        (true, true) => NodeState::Draining,
        (true, false) => NodeState::Ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_down_once_its_last_heartbeat_is_older_than_the_timeout() {
        assert_eq!(
            node_state(Some(1_000), 4_000, 3_000, false),
            NodeState::Ready
        );
        assert_eq!(
            node_state(Some(1_000), 4_001, 3_000, false),
            NodeState::Down
        );
        assert_eq!(node_state(None, 0, 3_000, false), NodeState::Down);
        // A clock that went backwards is not a reason to call a node down.
        assert_eq!(
            node_state(Some(5_000), 4_000, 3_000, false),
            NodeState::Ready
        );
    }

    #[test]
    fn a_node_offering_more_than_approved_or_measured_is_held() {
        let machine = MachineUse {
            cpus: 2,
            cpu_millicores: None,
            memory_total_mib: 4096,
            memory_mib: 1000,
        };
        let ok = held((2, 4000), (Some(2), Some(4096)), false, Some(&machine));
        assert_eq!(ok, None);
        // More than its token or its join allowed.
        let over = held((4, 4000), (Some(2), None), false, Some(&machine));
        assert!(over.is_some_and(|w| w.contains("4 cores, more than the 2")));
        // Within what it was approved for, but more than its machine has.
        let fake = held(
            (64, 1 << 20),
            (Some(64), Some(1 << 20)),
            false,
            Some(&machine),
        );
        assert!(
            fake.is_some_and(|w| w.contains("measures 2 cores")),
            "a 2-core machine"
        );
        // Not measured yet: only the approval counts; an admin's approval is believed.
        assert_eq!(held((64, 1 << 20), (None, None), false, None), None);
        assert_eq!(
            held(
                (64, 1 << 20),
                (Some(64), Some(1 << 20)),
                true,
                Some(&machine)
            ),
            None
        );
        let still = held(
            (65, 1 << 20),
            (Some(64), Some(1 << 20)),
            true,
            Some(&machine),
        );
        assert!(
            still.is_some(),
            "approval covers the offer approved, not more"
        );
    }

    #[test]
    fn draining_shows_only_while_the_node_is_alive() {
        assert_eq!(
            node_state(Some(1_000), 2_000, 3_000, true),
            NodeState::Draining
        );
        assert_eq!(node_state(Some(1_000), 9_000, 3_000, true), NodeState::Down);
    }

    #[test]
    fn heartbeats_fit_three_times_in_the_timeout() {
        assert_eq!(heartbeat_interval_ms(3_000), 1_000);
        assert_eq!(heartbeat_interval_ms(30_000), MAX_HEARTBEAT_MS);
        assert_eq!(heartbeat_interval_ms(10), 100);
    }

    #[test]
    fn join_tokens_round_trip_and_bad_ones_say_why() {
        let secret = "ab".repeat(32);
        let t = format_join_token(7, &secret);
        assert_eq!(parse_join_token(&t), Ok((7, secret.as_str())));
        for bad in ["", "hth_7_x", "hjt_7", "hjt_x_ab", "hjt_0_ab", "hjt_7_abc"] {
            let err = parse_join_token(bad).expect_err(bad);
            assert!(err.contains("malformed"), "{bad}: {err}");
        }
        let upper = format_join_token(7, &"AB".repeat(32));
        assert!(parse_join_token(&upper).is_err());
    }

    #[test]
    fn names_and_labels_are_checked() {
        assert!(check_node_name("worker-1.lab").is_ok());
        assert!(check_node_name("-x").is_err());
        assert!(check_node_name("a b").is_err());
        assert_eq!(parse_label("disk=ssd"), Ok(("disk".into(), "ssd".into())));
        assert!(parse_label("disk").is_err());
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn messages_are_json_lines_within_the_cap() {
        let m = AgentMessage::Heartbeat {
            seq: 3,
            machine: Some(MachineUse {
                cpus: 64,
                cpu_millicores: Some(12_345),
                memory_total_mib: 512 * 1024,
                memory_mib: 100_000,
            }),
        };
        let line = encode(&m).expect("small");
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(line.len() < 128, "{}", String::from_utf8_lossy(&line));
        let back: AgentMessage = decode(&line[..line.len() - 1]).expect("decodes");
        assert_eq!(back, m);
        // An older agent's heartbeat, without its machine's use, still reads.
        assert_eq!(
            decode::<AgentMessage>(br#"{"type":"heartbeat","seq":4}"#),
            Ok(AgentMessage::Heartbeat {
                seq: 4,
                machine: None
            })
        );
        let huge = ServerMessage::Refused {
            reason: "x".repeat(MAX_FRAME),
        };
        assert!(encode(&huge).is_none());
        assert!(decode::<AgentMessage>(b"{\"type\":\"nope\"}").is_err());
    }

    #[test]
    fn a_full_tunnel_frame_fits_and_reads_back() {
        let f = TunnelFrame {
            stream: u64::MAX,
            data: Some("ab".repeat(24 * 1024)),
            ack: None,
            close: false,
        };
        for line in [
            encode(&ServerMessage::Tunnel(f.clone())).expect("fits"),
            encode(&AgentMessage::Tunnel(f.clone())).expect("fits"),
        ] {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
            let back = decode::<ServerMessage>(text.as_bytes())
                .map(|m| matches!(m, ServerMessage::Tunnel(g) if g == f))
                .or_else(|_| {
                    decode::<AgentMessage>(text.as_bytes())
                        .map(|m| matches!(m, AgentMessage::Tunnel(g) if g == f))
                });
            assert_eq!(back, Ok(true), "{}", &text[..80]);
        }
        // An older agent's start, without a UI port, still reads.
        assert_eq!(
            decode::<AgentMessage>(br#"{"type":"started","job":1,"attempt":2}"#),
            Ok(AgentMessage::Started {
                job: 1,
                attempt: 2,
                ui_port: None
            })
        );
    }

    #[test]
    fn a_full_chunk_fits_in_a_frame() {
        let m = ServerMessage::Chunk {
            sha256: "a".repeat(64),
            offset: u64::MAX,
            data: "ab".repeat(CHUNK_BYTES),
            eof: false,
            error: None,
        };
        assert!(encode(&m).is_some());
    }

    #[test]
    fn task_paths_stay_under_the_data_dir_and_names_are_plain() {
        let l = TaskLayout::new(Path::new("/d"), 7, 2);
        assert_eq!(l.dir, Path::new("/d/jobs/7-2"));
        assert_eq!(l.properties, Path::new("/d/jobs/7-2/conf/spark.properties"));
        assert!(check_file_name("app.py").is_ok());
        for bad in ["", "..", ".", "a/b", "../x"] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
        assert!(check_sha256(&"0f".repeat(32)).is_ok());
        assert!(check_sha256("../../etc/passwd").is_err());
    }
}
