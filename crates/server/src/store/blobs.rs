//! Uploaded files by content: the `blobs` and `blob_owners` tables (who holds which;
//! the bytes themselves are the blob store's, on disk).

use super::{now_ms, Result, Store};
use rusqlite::{params, OptionalExtension};

impl Store {
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
}
