//! Joined machines and their join tokens: listing, drain/undrain/remove (admins), and
//! `/node-tokens`, whose secrets are shown once and stored only as SHA-256.

use super::{parse_id, ApiJson, AppState, Caller};
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::store::{now_ms, NodeTokenRow};
use crate::App;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hearth_model::api;
use hearth_model::cluster::{format_join_token, NodeState, TOKEN_SECRET_BYTES};
use sha2::{Digest, Sha256};

/// A join token's lifetime unless asked otherwise.
const DEFAULT_TTL_SECONDS: u64 = 3600;

/// Joined nodes as the API shows them, by name (the server's own machine is shown apart,
/// see `api::jobs::nodes`).
pub fn joined(app: &App) -> ApiResult<Vec<api::NodeInfo>> {
    let cluster = &app.cluster;
    let now = now_ms();
    let ready = cluster.job_ready();
    Ok(app
        .store
        .nodes()?
        .iter()
        .filter(|n| n.name != crate::LOCAL_NODE)
        .map(|n| {
            let report = cluster.report(n.id, &app.instance);
            let problems = report.as_ref().and_then(|r| r.isolation_problems.clone());
            let state = cluster.state(n, now);
            api::NodeInfo {
                name: n.name.clone(),
                cores: n.cores,
                memory_mib: n.memory_mib,
                used_cores: 0,
                used_memory_mib: 0,
                running_jobs: 0,
                isolation: problems.as_ref().is_some_and(|p| p.is_empty()),
                held: cluster.held(n),
                // Connected and reporting a runtime: it can run jobs.
                runtime: ready.get(&n.id).map(|p| p.runtime.spark_home.clone()),
                problems: problems.unwrap_or_default(),
                shared_workspace: report.map(|r| r.shared_workspace),
                state,
                joined: true,
                labels: n.labels.clone(),
                last_seen_ms: cluster.last_heartbeat(n),
                cert_sha256: Some(n.cert_sha256.clone()),
                // A silent node may still hold its connection for a while: a down node's
                // last figures are not its use now.
                measured: (state != NodeState::Down)
                    .then(|| cluster.machine(n.id))
                    .flatten()
                    .map(Into::into),
            }
        })
        .collect())
}

/// How many nodes are in each state, the local one (always ready) included.
pub fn counts(app: &App) -> ApiResult<Vec<(NodeState, u64)>> {
    let mut counts: Vec<(NodeState, u64)> = NodeState::ALL.iter().map(|s| (*s, 0)).collect();
    counts[0].1 = 1;
    for n in joined(app)? {
        if let Some(c) = counts.iter_mut().find(|(s, _)| *s == n.state) {
            c.1 += 1;
        }
    }
    Ok(counts)
}

/// The cluster port's address, which join commands name.
fn cluster_addr(app: &App) -> ApiResult<std::net::SocketAddr> {
    app.cluster.addr.ok_or_else(|| {
        ApiError::conflict(
            "cluster_off",
            "the cluster port is off: start `hearth up` with --cluster-listen ADDR:PORT",
        )
    })
}

fn token_view(t: &NodeTokenRow) -> api::NodeToken {
    api::NodeToken {
        id: t.id as u64,
        created_by: t.created_by.clone(),
        created_at_ms: t.created_at,
        expires_at_ms: t.expires_at,
        revoked_at_ms: t.revoked_at,
        uses: t.uses.max(0) as u64,
        max_uses: t.max_uses.map(|m| m.max(0) as u64),
        max_cores: t.max_cores,
        max_memory_mib: t.max_memory_mib,
    }
}

pub async fn list_tokens(
    State(app): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<api::NodeToken>>> {
    caller.require_admin()?;
    Ok(Json(
        app.store.node_tokens()?.iter().map(token_view).collect(),
    ))
}

pub async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<api::CreateNodeToken>,
) -> ApiResult<(StatusCode, Json<api::CreatedNodeToken>)> {
    caller.require_admin()?;
    let addr = cluster_addr(&app)?;
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl == 0 || ttl > auth::MAX_TTL_SECONDS {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "a join token's ttl must be between one second and ten years (default one hour)",
        ));
    }
    let uses = req.uses.unwrap_or(1);
    if uses == 0 || uses > 10_000 {
        return Err(ApiError::bad_request(
            "invalid_uses",
            "a join token's uses must be between 1 and 10000 (default 1: one machine)",
        ));
    }
    if req.max_cores == Some(0) || req.max_memory_mib == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_caps",
            "a join token's --max-cores and --max-memory must be above zero",
        ));
    }
    let secret = auth::random_hex(TOKEN_SECRET_BYTES);
    let now = now_ms();
    let mut row = NodeTokenRow {
        id: 0,
        secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        created_by: caller.0.name.clone(),
        created_at: now,
        expires_at: now.saturating_add((ttl as i64).saturating_mul(1000)),
        revoked_at: None,
        uses: 0,
        max_uses: Some(uses as i64),
        max_cores: req.max_cores,
        max_memory_mib: req.max_memory_mib,
    };
    row.id = app.store.insert_node_token(&row)?;
    // Agents dial the cluster port's address; when it listens on every address, the host
    // the admin reached the API by is the best guess of one that machines can reach.
    let server = if addr.ip().is_unspecified() {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| match h.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => host.to_string(),
                _ => h.to_string(),
            })
            .unwrap_or_else(|| "SERVER".into());
        format!("{host}:{}", addr.port())
    } else {
        addr.to_string()
    };
    let token = format_join_token(row.id, &secret);
    let command = format!(
        "hearth agent --server {server} --token {token} --ca-sha256 {}",
        app.cluster.tls.ca_sha256
    );
    Ok((
        StatusCode::CREATED,
        Json(api::CreatedNodeToken {
            token: token_view(&row),
            secret: token,
            server,
            ca_sha256: app.cluster.tls.ca_sha256.clone(),
            command,
        }),
    ))
}

pub async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let id = parse_id("join token", &id)?;
    if !app.store.revoke_node_token(id, now_ms())? {
        return Err(ApiError::not_found(format!(
            "no join token {id} that is not already revoked (see `hearth node token list`)"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn no_node(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no joined node named {name} (see `hearth nodes`; the local node cannot be drained or removed)"
    ))
}

pub async fn drain(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    set_draining(&app, &caller, &name, true)
}

pub async fn undrain(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    set_draining(&app, &caller, &name, false)
}

/// An admin accepts what a node offers now, as it is (a node held for offering more than
/// it was approved for, or than its machine measures, takes work again).
pub async fn approve(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<api::ApproveNode>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    // Only the offer the admin saw: a node that changed it meanwhile is not approved.
    if !app
        .store
        .approve_node(&name, &caller.0.name, req.cores, req.memory_mib)?
    {
        let node = app
            .store
            .live_node_named(&name)?
            .ok_or_else(|| no_node(&name))?;
        return Err(ApiError::conflict(
            "offer_changed",
            format!(
                "node {name} now offers {} cores and {} MiB, not the {} cores and {} MiB you approved: look again (`hearth nodes`) and approve what it offers",
                node.cores, node.memory_mib, req.cores, req.memory_mib
            ),
        ));
    }
    eprintln!(
        "Node {name}'s offer ({} cores, {} MiB) approved by {}",
        req.cores, req.memory_mib, caller.0.name
    );
    app.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

fn set_draining(
    app: &AppState,
    caller: &Caller,
    name: &str,
    draining: bool,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if !app.store.set_node_draining(name, draining)? {
        return Err(no_node(name));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a node: its certificate is refused from now on, and its connection is cut.
pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if name == crate::LOCAL_NODE {
        return Err(ApiError::conflict(
            "local_node",
            "the server's own machine cannot be removed: drain it (`hearth node drain local`) to run no new jobs there, or run the control plane alone with `hearth server`",
        ));
    }
    let node = app
        .store
        .remove_node(&name, now_ms())?
        .ok_or_else(|| no_node(&name))?;
    app.cluster.disconnect(node.id);
    eprintln!(
        "Node {name} removed by {}: its certificate (sha256 {}) is revoked",
        caller.0.name, node.cert_sha256
    );
    Ok(StatusCode::NO_CONTENT)
}
