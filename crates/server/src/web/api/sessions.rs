//! Spark Connect sessions: a user's engines (list, stop) and what a client needs to reach
//! the gateway (its port and the CA to trust).

use super::{AppState, Caller};
use crate::error::{ApiError, ApiResult};
use crate::interactive::engines::{self, AcquireError, EngineKind, EngineState};
use crate::store::now_ms;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

#[derive(serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
}

fn describe(e: &engines::Engine) -> Value {
    let now = now_ms();
    let state = e.state();
    // An engine serving a request, or holding an open stream, is not idle.
    let idle_ms = if e.active() > 0 {
        0
    } else {
        (now - e.last_used_ms()).max(0)
    };
    json!({
        "id": e.id,
        "user": e.user,
        "kind": e.kind.name(),
        "url": e.url(),
        "state": state.name(),
        "started_at_ms": e.started_ms,
        "uptime_ms": (now - e.started_ms).max(0),
        "idle_ms": idle_ms,
        "active_requests": e.active(),
        "cores": e.cores,
        "memory_limit_mib": e.memory_limit_mib,
        "ui_url": e.ui_port.map(|_| format!("/ui/sessions/{}/", e.id)),
        "stopped_reason": match state { EngineState::Stopped(why) => Some(why), _ => None },
    })
}

/// The caller's engines; every user's with `?all=true` (admins).
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let all = match q {
        Ok(Query(q)) => q.all,
        Err(e) => return Err(ApiError::bad_request("invalid_query", e.body_text())),
    };
    if all {
        caller.require_admin().map_err(|_| {
            ApiError::forbidden(
                "only admins may list every user's sessions (all=true): drop --all to list your own",
            )
        })?;
    }
    let sessions: Vec<Value> = app
        .engines
        .list()
        .iter()
        .filter(|e| all || e.user_id == caller.0.id)
        .map(|e| describe(e))
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

/// Stops one of the caller's engines (admins: anyone's). Another user's answers 404.
pub async fn stop(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = super::parse_id("session", &id)?;
    let engine = app
        .engines
        .get(id)
        .filter(|e| e.user_id == caller.0.id || caller.0.admin)
        .ok_or_else(|| ApiError::not_found(format!("no session {id}: see `hearth sessions`")))?;
    engines::stop(&app, &engine).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts the caller's notebook, or finds the one running; answers at once (a cold start
/// takes seconds: poll `GET /sessions` until it is `running`, then open its `url`).
pub async fn start_notebook(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    match engines::start(&app, &caller.0, EngineKind::Notebook) {
        Ok(lease) => Ok(Json(describe(&lease.engine))),
        Err(AcquireError::NoRoom(why)) => Err(ApiError::conflict("no_room", why)),
        Err(AcquireError::Failed(why)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "notebook_unavailable",
            why,
        )),
    }
}

fn gateway(app: &AppState) -> ApiResult<&crate::interactive::gateway::ConnectInfo> {
    app.connect.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "Spark Connect is off on this server: start `hearth up` with --connect-listen",
        )
    })
}

/// The gateway's port, names and CA, for `hearth connect`.
pub async fn connect_info(State(app): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    let c = gateway(&app)?;
    Ok(Json(json!({
        "port": c.addr.port(),
        "hosts": c.hosts,
        "ca_pem": c.ca_pem,
    })))
}

/// The CA certificate that signed the gateway's certificate (when Hearth made it).
pub async fn ca_pem(State(app): State<AppState>, _caller: Caller) -> ApiResult<impl IntoResponse> {
    let pem = gateway(&app)?.ca_pem.clone().ok_or_else(|| {
        ApiError::not_found("the gateway uses the admin's own certificate: ask them for its CA")
    })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}
