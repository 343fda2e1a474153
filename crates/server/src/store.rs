//! The metadata store: users, tokens, blobs and jobs in SQLite (WAL, migrations, one
//! transaction per change), so a kill -9 at any moment leaves a consistent store.
//! Every query of the server lives here; nothing else speaks SQL. A job's life is decided
//! by `hearth_model::lifecycle` alone: the store reads the job, asks it, and writes the
//! answer, in one transaction.

use hearth_model::api::{Attempt, SubmitJob};
use hearth_model::lifecycle::{self, Event, JobLife, Transition};
use hearth_model::{JobResources, JobState};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

/// Each entry upgrades the schema by one version; never edit one that has shipped.
/// Ids are AUTOINCREMENT: a new user must never inherit a removed user's id (and with it
/// their jobs and logs), nor a new token a revoked token's.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL,
    password_hash TEXT NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    linux_name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER
);
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE blob_owners (
    sha256 TEXT NOT NULL REFERENCES blobs(sha256),
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (sha256, user_id)
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    resources TEXT NOT NULL,
    submitted_at INTEGER NOT NULL,
    started_at INTEGER,
    running_at INTEGER,
    finished_at INTEGER,
    exit_code INTEGER,
    reason TEXT,
    oom_killed INTEGER NOT NULL DEFAULT 0,
    node TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_user ON jobs(user_id, id);
"#,
    r#"
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
ALTER TABLE jobs ADD COLUMN preemptible INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN preempt_reason TEXT;
"#,
    // Machines that joined with `hearth agent`, known by their certificate's SHA-256; a
    // removed node keeps its row so that its certificate stays refused.
    r#"
CREATE TABLE node_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    secret_sha256 TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    uses INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL UNIQUE,
    cores INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    joined_at INTEGER NOT NULL,
    last_seen_at INTEGER,
    draining INTEGER NOT NULL DEFAULT 0,
    removed_at INTEGER
);
CREATE UNIQUE INDEX nodes_by_live_name ON nodes(name) WHERE removed_at IS NULL;
"#,
    // A job spread over several nodes: how many executors run on which (JSON), beside
    // `node`, the driver's.
    r#"
ALTER TABLE jobs ADD COLUMN workers TEXT;
"#,
];

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Store {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub password_hash: String,
    pub uid: u32,
    pub gid: u32,
    pub linux_name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NodeTokenRow {
    pub id: i64,
    pub secret_sha256: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub uses: i64,
}

/// A machine that joined with `hearth agent`.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: i64,
    pub name: String,
    pub cert_sha256: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub joined_at: i64,
    pub last_seen_at: Option<i64>,
    pub draining: bool,
    pub removed_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub user_id: i64,
    pub owner: String,
    pub name: String,
    pub state: JobState,
    pub spec: SubmitJob,
    pub resources: JobResources,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub running_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub oom_killed: bool,
    pub node: Option<String>,
    pub cancel_requested: bool,
    pub queue: String,
    pub priority: String,
    pub preemptible: bool,
    /// Earlier runs that did not end it (preempted, lost).
    pub attempts: Vec<Attempt>,
    /// Set while a preemption stops the job: why, for its attempt history.
    pub preempt_reason: Option<String>,
    /// A job spread over several nodes (a standalone cluster of its own): executors by
    /// node, the driver's `node` among them if it runs some. Empty in local mode.
    pub workers: Vec<Workers>,
}

pub use hearth_model::lifecycle::Workers;

impl JobRow {
    /// What its life's transitions read and change.
    pub fn life(&self) -> JobLife {
        JobLife {
            state: self.state,
            cancel_requested: self.cancel_requested,
            preempt_reason: self.preempt_reason.clone(),
            attempts: self.attempts.clone(),
            node: self.node.clone(),
            workers: self.workers.clone(),
            started_at: self.started_at,
            running_at: self.running_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            oom_killed: self.oom_killed,
            memory_limit_mib: self.resources.memory_limit_mib(),
        }
    }
}

/// Which jobs a listing shows; every field narrows it, None does not.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter {
    pub user_id: Option<i64>,
    pub state: Option<JobState>,
    /// Only jobs older (smaller id) than this one.
    pub before: Option<i64>,
}

/// A job as submitted, before it has an id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub spec: SubmitJob,
    pub resources: JobResources,
    pub queue: String,
    pub priority: String,
    pub preemptible: bool,
}

fn bad_json(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

const USER_COLS: &str = "id, name, admin, password_hash, uid, gid, linux_name, created_at";
const TOKEN_COLS: &str = "id, user_id, name, secret_hash, created_at, expires_at, last_used_at";
const JOB_COLS: &str = "id, user_id, owner, name, state, spec, resources, submitted_at, \
     started_at, running_at, finished_at, exit_code, reason, oom_killed, node, cancel_requested, \
     queue, priority, preemptible, attempts, preempt_reason, workers";

const NODE_TOKEN_COLS: &str =
    "id, secret_sha256, created_by, created_at, expires_at, revoked_at, uses";
const NODE_COLS: &str = "id, name, cert_sha256, cores, memory_mib, labels, joined_at, \
     last_seen_at, draining, removed_at";

fn node_token_row(r: &Row) -> Result<NodeTokenRow> {
    Ok(NodeTokenRow {
        id: r.get(0)?,
        secret_sha256: r.get(1)?,
        created_by: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
        uses: r.get(6)?,
    })
}

fn node_row(r: &Row) -> Result<NodeRow> {
    Ok(NodeRow {
        id: r.get(0)?,
        name: r.get(1)?,
        cert_sha256: r.get(2)?,
        cores: r.get(3)?,
        memory_mib: r.get::<_, i64>(4)?.max(0) as u64,
        labels: serde_json::from_str(&r.get::<_, String>(5)?).map_err(bad_json)?,
        joined_at: r.get(6)?,
        last_seen_at: r.get(7)?,
        draining: r.get(8)?,
        removed_at: r.get(9)?,
    })
}

fn user_row(r: &Row) -> Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        name: r.get(1)?,
        admin: r.get(2)?,
        password_hash: r.get(3)?,
        uid: r.get(4)?,
        gid: r.get(5)?,
        linux_name: r.get(6)?,
        created_at: r.get(7)?,
    })
}

fn token_row(r: &Row) -> Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        last_used_at: r.get(6)?,
    })
}

fn job_row(r: &Row) -> Result<JobRow> {
    let state: String = r.get(4)?;
    let spec: String = r.get(5)?;
    let resources: String = r.get(6)?;
    Ok(JobRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        state: JobState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown job state {state}").into(),
            )
        })?,
        spec: serde_json::from_str(&spec).map_err(bad_json)?,
        resources: serde_json::from_str(&resources).map_err(bad_json)?,
        submitted_at: r.get(7)?,
        started_at: r.get(8)?,
        running_at: r.get(9)?,
        finished_at: r.get(10)?,
        exit_code: r.get(11)?,
        reason: r.get(12)?,
        oom_killed: r.get(13)?,
        node: r.get(14)?,
        cancel_requested: r.get(15)?,
        queue: r.get(16)?,
        priority: r.get(17)?,
        preemptible: r.get(18)?,
        attempts: serde_json::from_str(&r.get::<_, String>(19)?).map_err(bad_json)?,
        preempt_reason: r.get(20)?,
        workers: match r.get::<_, Option<String>>(21)? {
            Some(text) => serde_json::from_str(&text).map_err(bad_json)?,
            None => Vec::new(),
        },
    })
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn();
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    // ---- users ----

    pub fn user_count(&self) -> Result<i64> {
        self.conn()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
    }

    pub fn insert_user(&self, u: &UserRow) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO users (name, admin, password_hash, uid, gid, linux_name, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                u.name,
                u.admin,
                u.password_hash,
                u.uid,
                u.gid,
                u.linux_name,
                u.created_at
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE name = ?1"),
                [name],
                user_row,
            )
            .optional()
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<UserRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_row,
            )
            .optional()
    }

    pub fn users(&self) -> Result<Vec<UserRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY name"))?;
        let rows = st.query_map([], user_row)?;
        rows.collect()
    }

    /// Deletes a user who has no queued or running jobs, in one transaction; false if they
    /// have some.
    pub fn delete_idle_user(&self, id: i64) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let active: i64 = tx.query_row(
            "SELECT count(*) FROM jobs WHERE user_id = ?1
             AND state IN ('queued', 'starting', 'running')",
            [id],
            |r| r.get(0),
        )?;
        if active > 0 {
            return Ok(false);
        }
        tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(true)
    }

    // ---- tokens ----

    pub fn insert_token(&self, t: &TokenRow) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tokens (user_id, name, secret_hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.user_id, t.name, t.secret_hash, t.created_at, t.expires_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn token(&self, id: i64) -> Result<Option<TokenRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1"),
                [id],
                token_row,
            )
            .optional()
    }

    pub fn tokens_of(&self, user_id: i64) -> Result<Vec<TokenRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {TOKEN_COLS} FROM tokens WHERE user_id = ?1 ORDER BY id"
        ))?;
        let rows = st.query_map([user_id], token_row)?;
        rows.collect()
    }

    /// Deletes the token if `user_id` owns it; false if there was no such token of theirs.
    pub fn delete_token(&self, id: i64, user_id: i64) -> Result<bool> {
        let n = self.conn().execute(
            "DELETE FROM tokens WHERE id = ?1 AND user_id = ?2",
            [id, user_id],
        )?;
        Ok(n > 0)
    }

    /// Deletes every token whose name starts with `prefix` (tokens Hearth made for its own
    /// tasks), but those in `keep`; returns their ids.
    pub fn delete_tokens_named_like(&self, prefix: &str, keep: &[i64]) -> Result<Vec<i64>> {
        let conn = self.conn();
        let ids: Vec<i64> = {
            let mut st = conn.prepare("SELECT id FROM tokens WHERE substr(name, 1, ?2) = ?1")?;
            let rows =
                st.query_map(params![prefix, prefix.chars().count() as i64], |r| r.get(0))?;
            rows.collect::<Result<Vec<i64>>>()?
                .into_iter()
                .filter(|id| !keep.contains(id))
                .collect()
        };
        for id in &ids {
            conn.execute("DELETE FROM tokens WHERE id = ?1", [id])?;
        }
        Ok(ids)
    }

    pub fn touch_token(&self, id: i64, at: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
            [id, at],
        )?;
        Ok(())
    }

    // ---- join tokens and nodes ----

    pub fn insert_node_token(&self, t: &NodeTokenRow) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO node_tokens (secret_sha256, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![t.secret_sha256, t.created_by, t.created_at, t.expires_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn node_token(&self, id: i64) -> Result<Option<NodeTokenRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {NODE_TOKEN_COLS} FROM node_tokens WHERE id = ?1"),
                [id],
                node_token_row,
            )
            .optional()
    }

    pub fn node_tokens(&self) -> Result<Vec<NodeTokenRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {NODE_TOKEN_COLS} FROM node_tokens ORDER BY id"
        ))?;
        let rows = st.query_map([], node_token_row)?;
        rows.collect()
    }

    /// Revokes a join token; false if there is none with that id or it already was.
    pub fn revoke_node_token(&self, id: i64, at: i64) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE node_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            [id, at],
        )?;
        Ok(n > 0)
    }

    /// Records a node that proved join token `token_id`, in one transaction with the
    /// token's use; an error if a live node already has the name (a unique index says so).
    pub fn insert_node(&self, node: &NodeRow, token_id: i64) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO nodes (name, cert_sha256, cores, memory_mib, labels, joined_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                node.name,
                node.cert_sha256,
                node.cores,
                node.memory_mib as i64,
                serde_json::to_string(&node.labels).map_err(bad_json)?,
                node.joined_at
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE node_tokens SET uses = uses + 1 WHERE id = ?1",
            [token_id],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Whether a live (not removed) node has this name.
    pub fn live_node_named(&self, name: &str) -> Result<Option<NodeRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE name = ?1 AND removed_at IS NULL"),
                [name],
                node_row,
            )
            .optional()
    }

    pub fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<NodeRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE cert_sha256 = ?1"),
                [cert_sha256],
                node_row,
            )
            .optional()
    }

    /// Live nodes, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE removed_at IS NULL ORDER BY name"
        ))?;
        let rows = st.query_map([], node_row)?;
        rows.collect()
    }

    /// What a node offers, as it said when it last connected.
    pub fn update_node_offer(
        &self,
        id: i64,
        cores: u32,
        memory_mib: u64,
        labels: &std::collections::BTreeMap<String, String>,
        seen_at: i64,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE nodes SET cores = ?2, memory_mib = ?3, labels = ?4, last_seen_at = ?5
             WHERE id = ?1",
            params![
                id,
                cores,
                memory_mib as i64,
                serde_json::to_string(labels).map_err(bad_json)?,
                seen_at
            ],
        )?;
        Ok(())
    }

    /// Records many nodes' last heartbeats in one transaction.
    pub fn touch_nodes(&self, seen: &[(i64, i64)]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare(
                "UPDATE nodes SET last_seen_at = ?2 WHERE id = ?1
                 AND (last_seen_at IS NULL OR last_seen_at < ?2)",
            )?;
            for (id, at) in seen {
                st.execute([id, at])?;
            }
        }
        tx.commit()
    }

    /// Sets a live node's draining flag; false if there is no live node of that name.
    pub fn set_node_draining(&self, name: &str, draining: bool) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET draining = ?2 WHERE name = ?1 AND removed_at IS NULL",
            params![name, draining],
        )?;
        Ok(n > 0)
    }

    /// Removes a live node: its certificate is refused from now on.
    pub fn remove_node(&self, name: &str, at: i64) -> Result<Option<NodeRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let node = tx
            .query_row(
                &format!("SELECT {NODE_COLS} FROM nodes WHERE name = ?1 AND removed_at IS NULL"),
                [name],
                node_row,
            )
            .optional()?;
        if let Some(n) = &node {
            tx.execute("UPDATE nodes SET removed_at = ?2 WHERE id = ?1", [n.id, at])?;
        }
        tx.commit()?;
        Ok(node)
    }

    // ---- blobs ----

    /// Records that `user_id` holds the blob (uploading it proves possession).
    pub fn add_blob(&self, sha256: &str, size: u64, user_id: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO blobs (sha256, size, created_at) VALUES (?1, ?2, ?3)",
            params![sha256, size as i64, now_ms()],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO blob_owners (sha256, user_id) VALUES (?1, ?2)",
            params![sha256, user_id],
        )?;
        tx.commit()
    }

    /// The blob's size if `user_id` holds it. Nobody learns of another user's blobs.
    pub fn blob_of(&self, sha256: &str, user_id: i64) -> Result<Option<u64>> {
        self.conn()
            .query_row(
                "SELECT b.size FROM blobs b JOIN blob_owners o ON o.sha256 = b.sha256
                 WHERE b.sha256 = ?1 AND o.user_id = ?2",
                params![sha256, user_id],
                |r| r.get::<_, i64>(0).map(|s| s as u64),
            )
            .optional()
    }

    // ---- jobs ----

    pub fn insert_job(&self, user: &UserRow, new: &NewJob) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO jobs (user_id, owner, name, state, spec, resources, submitted_at,
                               queue, priority, preemptible)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                user.id,
                user.name,
                new.name,
                serde_json::to_string(&new.spec).map_err(bad_json)?,
                serde_json::to_string(&new.resources).map_err(bad_json)?,
                now_ms(),
                new.queue,
                new.priority,
                new.preemptible,
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn job(&self, id: i64) -> Result<Option<JobRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
    }

    /// Jobs newest first, as `filter` narrows them; pages go backwards from `before`.
    pub fn jobs(&self, filter: &JobFilter, limit: i64) -> Result<Vec<JobRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR user_id = ?1)
             AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let rows = st.query_map(
            params![
                filter.user_id,
                filter.state.map(|s| s.as_str()),
                filter.before,
                limit
            ],
            job_row,
        )?;
        rows.collect()
    }

    /// How many jobs are in each state, over the whole history.
    pub fn job_counts(&self) -> Result<Vec<(JobState, u64)>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT state, count(*) FROM jobs GROUP BY state")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (state, n) = row?;
            if let Some(s) = JobState::parse(&state) {
                counts.push((s, n.max(0) as u64));
            }
        }
        Ok(counts)
    }

    pub fn jobs_in(&self, states: &[JobState]) -> Result<Vec<JobRow>> {
        let conn = self.conn();
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let mut st = conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE state IN ({}) ORDER BY id",
            list.join(",")
        ))?;
        let rows = st.query_map([], job_row)?;
        rows.collect()
    }

    /// Applies one scheduling plan in one transaction: admitted jobs become `starting` on
    /// their node (as `lifecycle` says); waiting jobs get their current reason. Returns the
    /// jobs actually admitted (a job cancelled meanwhile is not), with their transitions.
    pub fn apply_plan(
        &self,
        placements: &[(i64, String, Vec<Workers>)],
        waiting: &[(i64, String)],
        policy: &lifecycle::Policy,
    ) -> Result<Vec<(i64, Transition)>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        let mut admitted = Vec::new();
        for (id, node, workers) in placements {
            let event = Event::Admitted {
                node: node.clone(),
                workers: workers.clone(),
            };
            if let Some(t) = apply_in(&tx, *id, &event, policy, now)? {
                admitted.push((*id, t));
            }
        }
        for (id, reason) in waiting {
            tx.execute(
                "UPDATE jobs SET reason = ?2
                 WHERE id = ?1 AND state = 'queued' AND reason IS NOT ?2",
                params![id, reason],
            )?;
        }
        tx.commit()?;
        Ok(admitted)
    }

    /// Applies `event` to a job in one transaction: reads its row, asks
    /// `lifecycle::apply`, writes the result. None if there is no such job or the event
    /// changes nothing; the caller carries out the transition's effects.
    pub fn apply_event(
        &self,
        id: i64,
        event: &Event,
        policy: &lifecycle::Policy,
    ) -> Result<Option<Transition>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let t = apply_in(&tx, id, event, policy, now_ms())?;
        tx.commit()?;
        Ok(t)
    }
}

/// One event on one job, inside the caller's transaction.
fn apply_in(
    conn: &Connection,
    id: i64,
    event: &Event,
    policy: &lifecycle::Policy,
    now: i64,
) -> Result<Option<Transition>> {
    let job = conn
        .query_row(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
            [id],
            job_row,
        )
        .optional()?;
    let Some(job) = job else {
        return Ok(None);
    };
    let before = job.life();
    let Ok(t) = lifecycle::apply(&before, event, policy, now) else {
        return Ok(None);
    };
    if t.life != before {
        write_life(conn, id, &t.life)?;
    }
    Ok(Some(t))
}

/// Writes every column a job's life holds.
fn write_life(conn: &Connection, id: i64, life: &JobLife) -> Result<()> {
    let workers = if life.workers.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&life.workers).map_err(bad_json)?)
    };
    conn.execute(
        "UPDATE jobs SET state = ?2, cancel_requested = ?3, preempt_reason = ?4, attempts = ?5,
         node = ?6, workers = ?7, started_at = ?8, running_at = ?9, finished_at = ?10,
         exit_code = ?11, reason = ?12, oom_killed = ?13
         WHERE id = ?1",
        params![
            id,
            life.state.as_str(),
            life.cancel_requested,
            life.preempt_reason,
            serde_json::to_string(&life.attempts).map_err(bad_json)?,
            life.node,
            workers,
            life.started_at,
            life.running_at,
            life.finished_at,
            life.exit_code,
            life.reason,
            life.oom_killed,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued job of a new user alice; its id.
    fn queued_job(store: &Store) -> i64 {
        let user = UserRow {
            id: 0,
            name: "alice".into(),
            admin: false,
            password_hash: "x".into(),
            uid: 1,
            gid: 1,
            linux_name: "a".into(),
            created_at: 0,
        };
        let uid = store.insert_user(&user).expect("user");
        let user = UserRow { id: uid, ..user };
        let spec: SubmitJob =
            serde_json::from_str(r#"{"main":{"name":"a.py","sha256":"ab"}}"#).expect("spec");
        let new = NewJob {
            name: "a".into(),
            spec,
            resources: JobResources::default(),
            queue: "default".into(),
            priority: "normal".into(),
            preemptible: false,
        };
        store.insert_job(&user, &new).expect("job")
    }

    fn temp_store() -> (Store, std::path::PathBuf) {
        // Tests may share a process (cargo test): a counter keeps their stores apart.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hearth-store-test-{}-{}-{}",
            std::process::id(),
            now_ms(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        (Store::open(&dir.join("db.sqlite")).expect("open"), dir)
    }

    #[test]
    fn migrations_run_once_and_reopen_cleanly() {
        let (store, dir) = temp_store();
        store.set_meta("k", "v").expect("meta");
        drop(store);
        let store = Store::open(&dir.join("db.sqlite")).expect("reopen");
        assert_eq!(store.meta("k").expect("meta").as_deref(), Some("v"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_removed_nodes_name_is_free_again_but_its_certificate_stays_known() {
        let (store, dir) = temp_store();
        let token = NodeTokenRow {
            id: 0,
            secret_sha256: "ab".into(),
            created_by: "admin".into(),
            created_at: 0,
            expires_at: 10,
            revoked_at: None,
            uses: 0,
        };
        let tid = store.insert_node_token(&token).expect("token");
        let node = |cert: &str| NodeRow {
            id: 0,
            name: "n1".into(),
            cert_sha256: cert.into(),
            cores: 2,
            memory_mib: 1024,
            labels: [("disk".to_string(), "ssd".to_string())].into(),
            joined_at: 1,
            last_seen_at: None,
            draining: false,
            removed_at: None,
        };
        store.insert_node(&node("c1"), tid).expect("first");
        assert!(
            store.insert_node(&node("c2"), tid).is_err(),
            "two live nodes with one name"
        );
        assert!(store.set_node_draining("n1", true).expect("drain"));
        store.touch_nodes(&[(1, 50), (1, 40)]).expect("touch");
        let n = store.node_by_cert("c1").expect("get").expect("exists");
        assert_eq!(
            (n.draining, n.last_seen_at, n.labels["disk"].as_str()),
            (true, Some(50), "ssd")
        );
        assert!(store.remove_node("n1", 99).expect("remove").is_some());
        assert!(store.remove_node("n1", 99).expect("again").is_none());
        assert!(store.nodes().expect("list").is_empty());
        assert_eq!(
            store
                .node_by_cert("c1")
                .expect("get")
                .and_then(|n| n.removed_at),
            Some(99)
        );
        store
            .insert_node(&node("c2"), tid)
            .expect("the name is free again");
        assert_eq!(store.node_token(tid).expect("get").map(|t| t.uses), Some(2));
        assert!(store.revoke_node_token(tid, 5).expect("revoke"));
        assert!(!store.revoke_node_token(tid, 6).expect("once"));
        let _ = std::fs::remove_dir_all(dir);
    }

    const POLICY: lifecycle::Policy = lifecycle::Policy {
        max_retries: 1,
        shutting_down: false,
        stop_grace_ms: 1000,
    };

    fn state_after(store: &Store, id: i64, event: Event) -> Option<JobState> {
        store
            .apply_event(id, &event, &POLICY)
            .expect("apply")
            .map(|t| t.life.state)
    }

    #[test]
    fn a_lost_job_runs_again_while_retries_remain_then_fails_with_the_reason() {
        let (store, dir) = temp_store();
        let id = queued_job(&store);
        let place = || {
            store
                .apply_plan(&[(id, "n1".into(), Vec::new())], &[], &POLICY)
                .expect("plan")
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
        };
        assert_eq!(place(), vec![id]);
        assert_eq!(
            state_after(&store, id, Event::Running),
            Some(JobState::Running)
        );
        let lost = |why: &str| Event::Lost { why: why.into() };
        assert_eq!(
            state_after(&store, id, lost("lost: node n1 sent no heartbeat for 3s")),
            Some(JobState::Queued)
        );
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!(job.node, None);
        assert_eq!(job.attempts.len(), 1);
        assert_eq!(job.attempts[0].outcome, "lost");
        assert!(job.attempts[0].running_at_ms.is_some());
        assert_eq!(place(), vec![id]);
        assert_eq!(
            state_after(&store, id, lost("lost: node n1 was removed")),
            Some(JobState::Failed)
        );
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.attempts.len(), 2);
        assert!(
            job.reason.as_deref().is_some_and(|r| r.contains("node n1 was removed")
                && r.contains("no retries left")),
            "{:?}",
            job.reason
        );
        // Already terminal: nothing more is recorded.
        assert_eq!(state_after(&store, id, lost("again")), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_finished_job_is_recorded_once() {
        let (store, dir) = temp_store();
        let id = queued_job(&store);
        let admitted = store
            .apply_plan(&[(id, "local".into(), Vec::new())], &[], &POLICY)
            .expect("plan");
        assert_eq!(admitted.len(), 1);
        let exit = |code| Event::Exited {
            code: Some(code),
            signal: None,
            oom_killed: false,
        };
        assert_eq!(state_after(&store, id, exit(0)), Some(JobState::Succeeded));
        assert_eq!(state_after(&store, id, exit(1)), None);
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!((job.state, job.exit_code), (JobState::Succeeded, Some(0)));
        assert!(job.finished_at.is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_transition_is_written_whole_and_reads_back_as_it_was_decided() {
        let (store, dir) = temp_store();
        let id = queued_job(&store);
        let workers = vec![Workers {
            node: "n2".into(),
            count: 2,
        }];
        store
            .apply_plan(&[(id, "n1".into(), workers.clone())], &[], &POLICY)
            .expect("plan");
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!((job.node.as_deref(), &job.workers), (Some("n1"), &workers));
        for event in [
            Event::Running,
            Event::Preempt {
                why: "preempted for job 9".into(),
                grace_ms: 5,
            },
            Event::Exited {
                code: Some(143),
                signal: None,
                oom_killed: false,
            },
        ] {
            let before = store.job(id).expect("get").expect("exists").life();
            let t = store
                .apply_event(id, &event, &POLICY)
                .expect("apply")
                .expect("a transition");
            let after = store.job(id).expect("get").expect("exists").life();
            assert_eq!(after, t.life, "{event:?} from {before:?}");
        }
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!(job.state, JobState::Queued);
        assert!(job.workers.is_empty() && job.node.is_none());
        assert_eq!(job.attempts[0].outcome, "preempted");
        // A cancel of a queued job ends it at once.
        assert_eq!(
            state_after(&store, id, Event::Cancel),
            Some(JobState::Cancelled)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
