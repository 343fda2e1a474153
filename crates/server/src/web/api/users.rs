//! Login, accounts and tokens.

use super::{parse_id, ApiJson, AppState, Caller, Peer};
use crate::accounts;
use crate::auth::{self, format_token, new_token};
use crate::error::{ApiError, ApiResult};
use crate::store::{TokenRow, UserRow};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_model::api;
use serde::Deserialize;

fn user_view(u: &UserRow) -> api::User {
    api::User {
        name: u.name.clone(),
        admin: u.admin,
        uid: u.uid,
        created_at_ms: u.created_at,
    }
}

fn token_view(t: &TokenRow) -> api::Token {
    api::Token {
        id: t.id as u64,
        name: t.name.clone(),
        created_at_ms: t.created_at,
        expires_at_ms: t.expires_at,
        last_used_at_ms: t.last_used_at,
        scope: t.scope.clone(),
    }
}

pub async fn login(
    State(app): State<AppState>,
    Peer(address): Peer,
    ApiJson(req): ApiJson<api::LoginRequest>,
) -> ApiResult<Json<api::LoginResponse>> {
    if req.token_name.as_ref().is_some_and(|n| n.len() > 100) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a token name has at most 100 characters",
        ));
    }
    let user = auth::check_login(&app, &req.user, req.password, address).await?;
    let _slot = app.hashing.acquire().await?;
    let name = req.token_name.unwrap_or_else(|| "login".into());
    let user2 = user.clone();
    let t = tokio::task::spawn_blocking(move || {
        new_token(&user2, &name, None, crate::auth::Scope::Api)
    })
    .await
    .map_err(|e| ApiError::internal("creating a token", e))?;
    let id = app.store.insert_token(&t.row)?;
    Ok(Json(api::LoginResponse {
        user: user_view(&user),
        token: format_token(id, &t.secret),
        token_id: id as u64,
    }))
}

pub async fn whoami(caller: Caller) -> Json<api::User> {
    Json(user_view(&caller.0))
}

pub async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<api::User>>> {
    caller.require_admin()?;
    Ok(Json(app.store.users()?.iter().map(user_view).collect()))
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<api::CreateUser>,
) -> ApiResult<(StatusCode, Json<api::CreatedUser>)> {
    caller.require_admin()?;
    let app2 = app.clone();
    let (user, generated) = tokio::task::spawn_blocking(move || {
        accounts::create(&app2, &req.name, req.admin, req.password)
    })
    .await
    .map_err(|e| ApiError::internal("creating the user", e))??;
    Ok((
        StatusCode::CREATED,
        Json(api::CreatedUser {
            user: user_view(&user),
            generated_password: generated,
        }),
    ))
}

pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require_admin()?;
    if name == caller.0.name {
        return Err(ApiError::bad_request(
            "cannot_remove_self",
            "you cannot remove your own account: ask another admin",
        ));
    }
    let user = app
        .store
        .user_by_name(&name)?
        .ok_or_else(|| ApiError::not_found(format!("no user named {name}")))?;
    let kept = accounts::remove(&app, &user)?;
    Ok(Json(
        serde_json::json!({ "removed": name, "workspace_kept_at": kept }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensQuery {
    /// Another user's tokens (admins).
    #[serde(default)]
    user: Option<String>,
}

/// Whose tokens a call is about: the caller's own, or (admins only) the named user's.
fn token_owner(
    app: &AppState,
    caller: &Caller,
    q: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<UserRow> {
    let q = q
        .map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    match q.user {
        None => Ok(caller.0.clone()),
        Some(name) if name == caller.0.name => Ok(caller.0.clone()),
        Some(name) => {
            caller
                .require_admin()
                .map_err(|_| ApiError::forbidden("only admins may manage other users' tokens"))?;
            app.store
                .user_by_name(&name)?
                .ok_or_else(|| ApiError::not_found(format!("no user named {name}")))
        }
    }
}

pub async fn list_tokens(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<api::Token>>> {
    let owner = token_owner(&app, &caller, q)?;
    Ok(Json(
        app.store
            .tokens_of(owner.id)?
            .iter()
            .map(token_view)
            .collect(),
    ))
}

pub async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<TokensQuery>, axum::extract::rejection::QueryRejection>,
    ApiJson(req): ApiJson<api::CreateToken>,
) -> ApiResult<(StatusCode, Json<api::CreatedToken>)> {
    let owner = token_owner(&app, &caller, q)?;
    if req.name.trim().is_empty() || req.name.len() > 100 {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a token needs a name of 1-100 characters, e.g. `laptop` or `ci`",
        ));
    }
    if req.ttl_seconds == Some(0) || req.ttl_seconds > Some(auth::MAX_TTL_SECONDS) {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            "a token's ttl must be between one second and ten years; omit it for a token that does not expire",
        ));
    }
    let scope = match req.scope.as_deref() {
        None => auth::Scope::Api,
        Some(s) => auth::Scope::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_scope",
                "a token's scope is `api` (the default: everything you may do) or `connect` (Spark Connect only)",
            )
        })?,
    };
    let t =
        tokio::task::spawn_blocking(move || new_token(&owner, &req.name, req.ttl_seconds, scope))
            .await
            .map_err(|e| ApiError::internal("creating a token", e))?;
    let id = app.store.insert_token(&t.row)?;
    Ok((
        StatusCode::CREATED,
        Json(api::CreatedToken {
            token: token_view(&TokenRow { id, ..t.row }),
            secret: format_token(id, &t.secret),
        }),
    ))
}

pub async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id("token", &id)?;
    // Admins revoke anyone's token; everyone else only their own (another's is a 404).
    let owner = match app.store.token(id)? {
        Some(t) if caller.0.admin => t.user_id,
        _ => caller.0.id,
    };
    if !app.store.delete_token(id, owner)? {
        return Err(ApiError::not_found(format!("you have no token {id}")));
    }
    app.tokens.forget(id);
    Ok(StatusCode::NO_CONTENT)
}
