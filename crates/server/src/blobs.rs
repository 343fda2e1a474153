//! Uploaded files, content-addressed by SHA-256 and stored once however many jobs or users
//! use them. An upload streams to a temporary file, is hashed on the way, and only a
//! complete, verified upload is renamed into place: nothing is ever half-written.

use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

/// How long the rest of an upload over the limit is read and dropped before the refusal
/// goes out (most clients only read an answer once they sent everything).
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the rest of a refused upload (for at most `DRAIN_FOR`) and drops it: a client
/// still sending when the connection closes sees a broken pipe, not the refusal.
pub async fn drain<S, E>(stream: &mut S)
where
    S: tokio_stream::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
{
    let rest = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = tokio::time::timeout(DRAIN_FOR, rest).await;
}

pub struct BlobStore {
    root: PathBuf,
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    pub fn open(root: PathBuf) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(root.join("tmp"))?;
        // Leftovers of uploads cut off by a crash.
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(BlobStore { root })
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    /// Streams `body` into the store; its digest must be `expected`. Returns the size.
    pub async fn put(&self, expected: &str, body: Body, max_bytes: u64) -> ApiResult<u64> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{expected}.{}", crate::auth::random_hex(8)));
        let result = self.receive(&tmp, expected, body, max_bytes).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn receive(&self, tmp: &Path, expected: &str, body: Body, max: u64) -> ApiResult<u64> {
        let io = |e: std::io::Error| ApiError::internal("storing the upload", e);
        let mut file = tokio::fs::File::create(tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request("upload_interrupted", format!("the upload was cut off: {e}"))
            })?;
            size += chunk.len() as u64;
            if size > max {
                drain(&mut stream).await;
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "upload_too_large",
                    format!(
                        "the file is larger than the server's upload limit of {} MiB: ask an admin to raise --max-upload, or read big data from the workspace instead",
                        max / (1024 * 1024)
                    ),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        if size == 0 {
            return Err(ApiError::bad_request(
                "empty_upload",
                "the file is empty: a job file must have content",
            ));
        }
        let actual = hex::encode(hasher.finalize());
        if actual != expected {
            return Err(ApiError::bad_request(
                "digest_mismatch",
                format!("the upload's SHA-256 is {actual}, not {expected} as the URL says: the file changed or was corrupted on the way; upload it again"),
            ));
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let dest = self.path(expected);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        // Read-only for everyone: job directories hard-link these files and a job's uid
        // reads them through its sandbox.
        tokio::fs::set_permissions(tmp, std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .await
            .map_err(io)?;
        tokio::fs::rename(tmp, &dest).await.map_err(io)?;
        Ok(size)
    }
}
