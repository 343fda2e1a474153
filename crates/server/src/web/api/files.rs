//! Uploads (content-addressed blobs) and each user's private workspace. Workspace files are
//! touched with the user's own filesystem identity, never root's.

use super::{AppState, Caller};
use crate::blobs::is_sha256_hex;
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_agent::{fsaccess, LinuxUser};
use hearth_model::api;
use std::io::Write;
use std::path::{Component, PathBuf};
use tokio_stream::StreamExt;

fn check_digest(sha256: &str) -> ApiResult<()> {
    if is_sha256_hex(sha256) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_digest",
            format!("`{sha256}` is not a SHA-256: use 64 lowercase hex digits"),
        ))
    }
}

pub async fn put_blob(
    State(app): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<api::BlobInfo>)> {
    check_digest(&sha256)?;
    if let Some(size) = app.store.blob_of(&sha256, caller.0.id)? {
        return Ok((StatusCode::OK, Json(api::BlobInfo { sha256, size })));
    }
    let size = app
        .blobs
        .put(&sha256, body, app.cfg.max_upload_bytes)
        .await?;
    app.store.add_blob(&sha256, size, caller.0.id)?;
    Ok((StatusCode::CREATED, Json(api::BlobInfo { sha256, size })))
}

/// Whether the caller already uploaded this content (so the CLI can skip the upload).
pub async fn get_blob(
    State(app): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
) -> ApiResult<Json<api::BlobInfo>> {
    check_digest(&sha256)?;
    match app.store.blob_of(&sha256, caller.0.id)? {
        Some(size) => Ok(Json(api::BlobInfo { sha256, size })),
        None => Err(ApiError::not_found(format!(
            "you have not uploaded {sha256}"
        ))),
    }
}

/// A workspace-relative path; `..` and absolute paths are refused here, and the agent's
/// `fsaccess` resolves it so that no symlink can lead out of the workspace either.
fn workspace_path(app: &AppState, caller: &Caller, rel: &str) -> ApiResult<(LinuxUser, PathBuf)> {
    let user = caller.0.linux(app);
    let mut path = PathBuf::new();
    for c in std::path::Path::new(rel).components() {
        match c {
            Component::Normal(p) => path.push(p),
            Component::CurDir => {}
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_path",
                    format!("`{rel}` leaves your workspace: use a path relative to it, without .."),
                ))
            }
        }
    }
    Ok((user, path))
}

fn fs_error(rel: &str, e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            ApiError::not_found(format!("no such file in your workspace: {rel}"))
        }
        std::io::ErrorKind::PermissionDenied => {
            ApiError::forbidden(format!("permission denied: {rel}: {e}"))
        }
        std::io::ErrorKind::AlreadyExists => {
            ApiError::conflict("exists", format!("{rel} already exists"))
        }
        std::io::ErrorKind::InvalidInput => {
            ApiError::bad_request("invalid_path", format!("{rel}: {e}"))
        }
        _ => ApiError::bad_request("file_error", format!("{rel}: {e}")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ApiResult<std::io::Result<T>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("accessing the workspace", e))
}

pub async fn get_root(state: State<AppState>, caller: Caller) -> ApiResult<Response> {
    get(state, caller, Path(String::new())).await
}

pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(rel): Path<String>,
) -> ApiResult<Response> {
    let (user, path) = workspace_path(&app, &caller, &rel)?;
    let (u2, p2) = (user.clone(), path.clone());
    let kind = blocking(move || fsaccess::kind(&u2, &p2))
        .await?
        .map_err(|e| fs_error(&rel, e))?;
    if kind == fsaccess::Kind::Dir {
        let entries = blocking(move || fsaccess::list_dir(&user, &path))
            .await?
            .map_err(|e| fs_error(&rel, e))?;
        let list: Vec<api::FileEntry> = entries
            .into_iter()
            .map(|e| api::FileEntry {
                name: e.name,
                dir: e.is_dir,
                size: e.size,
                modified_ms: e.mtime_ms,
            })
            .collect();
        return Ok(Json(list).into_response());
    }
    let file = blocking(move || fsaccess::open_read(&user, &path))
        .await?
        .map_err(|e| fs_error(&rel, e))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Writes a file into the workspace: to a temporary name first, renamed when complete, so a
/// cut-off upload never leaves half a file.
pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    Path(rel): Path<String>,
    body: Body,
) -> ApiResult<(StatusCode, Json<api::FileEntry>)> {
    let (user, path) = workspace_path(&app, &caller, &rel)?;
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else {
        return Err(ApiError::bad_request(
            "invalid_path",
            "name a file to write",
        ));
    };
    let mut temp = blocking(move || fsaccess::create_temp(&user, &path))
        .await?
        .map_err(|e| fs_error(&rel, e))?;
    let max = app.cfg.max_upload_bytes;
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    let mut result: ApiResult<()> = Ok(());
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                result = Err(ApiError::bad_request(
                    "upload_interrupted",
                    format!("the upload was cut off: {e}"),
                ));
                break;
            }
        };
        size += chunk.len() as u64;
        if size > max {
            crate::blobs::drain(&mut stream).await;
            result = Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_too_large",
                format!(
                    "the file is larger than the upload limit of {} MiB",
                    max / (1024 * 1024)
                ),
            ));
            break;
        }
        // Small blocking writes to a local disk; chunks are at most a few hundred KiB.
        if let Err(e) = temp.file.write_all(&chunk) {
            result = Err(fs_error(&rel, e));
            break;
        }
    }
    // Committed on success; otherwise dropping it removes the temporary file.
    let committed = blocking(move || match result {
        Ok(()) => temp.commit().map(Ok),
        Err(e) => Ok(Err(e)),
    })
    .await?
    .map_err(|e| fs_error(&rel, e))?;
    committed?;
    Ok((
        StatusCode::CREATED,
        Json(api::FileEntry {
            name,
            dir: false,
            size,
            modified_ms: crate::store::now_ms(),
        }),
    ))
}

pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(rel): Path<String>,
) -> ApiResult<StatusCode> {
    let (user, path) = workspace_path(&app, &caller, &rel)?;
    if path.as_os_str().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_path",
            "you cannot remove your workspace itself",
        ));
    }
    blocking(move || fsaccess::remove(&user, &path))
        .await?
        .map_err(|e| fs_error(&rel, e))?;
    Ok(StatusCode::NO_CONTENT)
}
