//! Machines that joined with `hearth agent` and the join tokens they proved: the
//! `node_tokens` and `nodes` tables.

use super::{bad_json, Result, Store};
use rusqlite::{params, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct NodeTokenRow {
    pub id: i64,
    pub secret_sha256: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub uses: i64,
    /// How many joins it is good for; None: any number (tokens from before this limit).
    pub max_uses: Option<i64>,
    /// The most a node that joins with it may offer.
    pub max_cores: Option<u32>,
    pub max_memory_mib: Option<u64>,
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
    /// The most it may offer: its join token's caps, else what it offered at its join, or
    /// what an admin approved since (`approved_by`). None: no limit recorded.
    pub approved_cores: Option<u32>,
    pub approved_memory_mib: Option<u64>,
    /// The admin who approved its offer as it is (it is then believed even beyond what its
    /// machine measures).
    pub approved_by: Option<String>,
}

const NODE_TOKEN_COLS: &str = "id, secret_sha256, created_by, created_at, expires_at, \
     revoked_at, uses, max_uses, max_cores, max_memory_mib";
const NODE_COLS: &str = "id, name, cert_sha256, cores, memory_mib, labels, joined_at, \
     last_seen_at, draining, removed_at, approved_cores, approved_memory_mib, approved_by";

fn node_token_row(r: &Row) -> Result<NodeTokenRow> {
    Ok(NodeTokenRow {
        id: r.get(0)?,
        secret_sha256: r.get(1)?,
        created_by: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
        uses: r.get(6)?,
        max_uses: r.get(7)?,
        max_cores: r.get(8)?,
        max_memory_mib: r.get::<_, Option<i64>>(9)?.map(|m| m.max(0) as u64),
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
        approved_cores: r.get(10)?,
        approved_memory_mib: r.get::<_, Option<i64>>(11)?.map(|m| m.max(0) as u64),
        approved_by: r.get(12)?,
    })
}

impl Store {
    pub fn insert_node_token(&self, t: &NodeTokenRow) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO node_tokens (secret_sha256, created_by, created_at, expires_at,
                                      max_uses, max_cores, max_memory_mib)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                t.secret_sha256,
                t.created_by,
                t.created_at,
                t.expires_at,
                t.max_uses,
                t.max_cores,
                t.max_memory_mib.map(|m| m as i64)
            ],
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
    /// Records a node that joined with join token `token_id` (None: the server's own
    /// machine), counting the use in the same transaction: None, and nothing recorded, if
    /// the token has no use left (two joins racing for its last use: one wins).
    pub fn insert_node(&self, node: &NodeRow, token_id: Option<i64>) -> Result<Option<i64>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(token) = token_id {
            let counted = tx.execute(
                "UPDATE node_tokens SET uses = uses + 1
                 WHERE id = ?1 AND (max_uses IS NULL OR uses < max_uses)",
                [token],
            )?;
            if counted == 0 {
                return Ok(None);
            }
        }
        tx.execute(
            "INSERT INTO nodes (name, cert_sha256, cores, memory_mib, labels, joined_at,
                                approved_cores, approved_memory_mib)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                node.name,
                node.cert_sha256,
                node.cores,
                node.memory_mib as i64,
                serde_json::to_string(&node.labels).map_err(bad_json)?,
                node.joined_at,
                node.approved_cores,
                node.approved_memory_mib.map(|m| m as i64)
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Some(id))
    }

    /// An admin approves what a live node offers now, as it is: its caps become its offer
    /// and it is believed beyond what its machine measures. False if no such node.
    /// An admin approves a live node's offer of `cores` and `memory_mib`, as it is: false
    /// (nothing changed) unless that is what it offers now.
    pub fn approve_node(&self, name: &str, by: &str, cores: u32, memory_mib: u64) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET approved_cores = ?3, approved_memory_mib = ?4, approved_by = ?2
             WHERE name = ?1 AND removed_at IS NULL AND cores = ?3 AND memory_mib = ?4",
            params![name, by, cores, memory_mib as i64],
        )?;
        Ok(n > 0)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

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
            max_uses: None,
            max_cores: None,
            max_memory_mib: None,
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
            approved_cores: Some(2),
            approved_memory_mib: Some(1024),
            approved_by: None,
        };
        store.insert_node(&node("c1"), Some(tid)).expect("first");
        assert!(
            store.insert_node(&node("c2"), Some(tid)).is_err(),
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
            .insert_node(&node("c2"), Some(tid))
            .expect("the name is free again");
        assert_eq!(store.node_token(tid).expect("get").map(|t| t.uses), Some(2));
        assert!(store.revoke_node_token(tid, 5).expect("revoke"));
        assert!(!store.revoke_node_token(tid, 6).expect("once"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_join_token_is_good_for_its_uses_and_no_more() {
        let (store, dir) = temp_store();
        let token = NodeTokenRow {
            id: 0,
            secret_sha256: "ab".into(),
            created_by: "admin".into(),
            created_at: 0,
            expires_at: 10,
            revoked_at: None,
            uses: 0,
            max_uses: Some(2),
            max_cores: Some(4),
            max_memory_mib: None,
        };
        let tid = store.insert_node_token(&token).expect("token");
        let node = |name: &str| NodeRow {
            id: 0,
            name: name.into(),
            cert_sha256: format!("cert-{name}"),
            cores: 64,
            memory_mib: 1 << 20,
            labels: Default::default(),
            joined_at: 1,
            last_seen_at: None,
            draining: false,
            removed_at: None,
            approved_cores: Some(4),
            approved_memory_mib: None,
            approved_by: None,
        };
        assert!(store
            .insert_node(&node("a"), Some(tid))
            .expect("a")
            .is_some());
        assert!(store
            .insert_node(&node("b"), Some(tid))
            .expect("b")
            .is_some());
        assert_eq!(store.insert_node(&node("c"), Some(tid)).expect("c"), None);
        assert!(
            store.live_node_named("c").expect("c").is_none(),
            "nothing recorded"
        );
        let a = store.live_node_named("a").expect("a").expect("a");
        assert_eq!(
            (a.approved_cores, a.approved_by.as_deref()),
            (Some(4), None)
        );
        assert!(!store
            .approve_node("a", "admin", 4, 1 << 20)
            .expect("not what it offers"));
        assert!(store
            .approve_node("a", "admin", 64, 1 << 20)
            .expect("approve"));
        let a = store.live_node_named("a").expect("a").expect("a");
        assert_eq!(
            (
                a.approved_cores,
                a.approved_memory_mib,
                a.approved_by.as_deref()
            ),
            (Some(64), Some(1 << 20), Some("admin"))
        );
        assert!(!store.approve_node("nobody", "admin", 1, 1).expect("none"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
