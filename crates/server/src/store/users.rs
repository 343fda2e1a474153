//! Users and their API tokens: the `users` and `tokens` tables (a user's tokens go with
//! them). Deleting a user reads `jobs` to refuse while they have jobs under way.

use super::{Result, Store};
use rusqlite::{params, OptionalExtension, Row};

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
    /// What it opens: `api` or `connect` (see `auth::Scope`).
    pub scope: String,
}

const USER_COLS: &str = "id, name, admin, password_hash, uid, gid, linux_name, created_at";
const TOKEN_COLS: &str =
    "id, user_id, name, secret_hash, created_at, expires_at, last_used_at, scope";

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
        scope: r.get(7)?,
    })
}

impl Store {
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
            "INSERT INTO tokens (user_id, name, secret_hash, created_at, expires_at, scope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                t.user_id,
                t.name,
                t.secret_hash,
                t.created_at,
                t.expires_at,
                t.scope
            ],
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
}
