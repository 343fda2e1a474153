//! The metadata store: users, tokens, blobs and jobs in SQLite (WAL, migrations, one
//! transaction per change), so a kill -9 at any moment leaves a consistent store.
//! Every query of the server lives here; nothing else speaks SQL. A job's life is decided
//! by `hearth_model::lifecycle` alone: the store reads the job, asks it, and writes the
//! answer, in one transaction.
//!
//! One file per group of tables, each adding its own `impl Store`: `users` (users, API
//! tokens), `nodes` (join tokens, nodes), `blobs` (blobs and who holds them), `jobs`.
//! Here: opening (WAL, migrations), `meta`, and what the groups share.

use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

mod blobs;
mod jobs;
mod nodes;
mod users;

pub use jobs::{JobFilter, JobRow, NewJob, Workers};
pub use nodes::{NodeRow, NodeTokenRow};
pub use users::{TokenRow, UserRow};

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
    // Join tokens are good for a number of joins (NULL: tokens made before, any number)
    // and may cap what their nodes offer; a node offering more than it was approved for
    // (or than its machine measures, unless an admin approved it) is held.
    r#"
ALTER TABLE node_tokens ADD COLUMN max_uses INTEGER;
ALTER TABLE node_tokens ADD COLUMN max_cores INTEGER;
ALTER TABLE node_tokens ADD COLUMN max_memory_mib INTEGER;
ALTER TABLE nodes ADD COLUMN approved_cores INTEGER;
ALTER TABLE nodes ADD COLUMN approved_memory_mib INTEGER;
ALTER TABLE nodes ADD COLUMN approved_by TEXT;
"#,
    // What a token opens: `api` (everything its user may do) or `connect` (Spark Connect
    // only: the tokens of notebooks' kernels and of `hearth connect`).
    r#"
ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'api';
UPDATE tokens SET scope = 'connect' WHERE name LIKE 'notebook-kernel-%';
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

fn bad_json(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn temp_store() -> (Store, std::path::PathBuf) {
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
}
