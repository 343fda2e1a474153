//! The REST API under `/api/v1`: routing, authentication of every call, and the JSON body
//! extractor that turns malformed input into a clear 4xx.

mod files;
pub(crate) mod jobs;
pub(crate) mod nodes;
pub mod openapi;
mod policy;
mod sessions;
mod users;

use crate::error::{ApiError, ApiResult};
use crate::store::UserRow;
use crate::web;
use crate::App;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use std::sync::Arc;

pub type AppState = Arc<App>;

/// Every route: (method, path as in the OpenAPI document). The router and the document are
/// both checked against this list by tests.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/login"),
    ("post", "/api/v1/session"),
    ("delete", "/api/v1/session"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/whoami"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("delete", "/api/v1/users/{name}"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("put", "/api/v1/blobs/{sha256}"),
    ("get", "/api/v1/blobs/{sha256}"),
    ("get", "/api/v1/jobs"),
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("get", "/api/v1/jobs/{id}/logs"),
    ("get", "/api/v1/files"),
    ("get", "/api/v1/files/{path}"),
    ("put", "/api/v1/files/{path}"),
    ("delete", "/api/v1/files/{path}"),
    ("get", "/api/v1/nodes"),
    ("delete", "/api/v1/nodes/{name}"),
    ("post", "/api/v1/nodes/{name}/drain"),
    ("post", "/api/v1/nodes/{name}/undrain"),
    ("post", "/api/v1/nodes/{name}/approve"),
    ("get", "/api/v1/node-tokens"),
    ("post", "/api/v1/node-tokens"),
    ("delete", "/api/v1/node-tokens/{id}"),
    ("get", "/api/v1/usage"),
    ("get", "/api/v1/policy"),
    ("put", "/api/v1/policy"),
    ("get", "/api/v1/queues"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/notebooks"),
    ("get", "/api/v1/sessions"),
    ("delete", "/api/v1/sessions/{id}"),
    ("get", "/api/v1/connect"),
    ("get", "/api/v1/ca.pem"),
];

/// The address a request came from (the TCP peer), when the server was started with it.
pub struct Peer(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(Peer(addr))
    }
}

pub fn router(app: AppState) -> Router {
    let api = Router::new()
        .route("/login", post(users::login))
        .route(
            "/session",
            post(web::session::create).delete(web::session::delete),
        )
        .route("/events", get(web::events::stream))
        .route("/whoami", get(users::whoami))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{name}", axum::routing::delete(users::remove))
        .route("/tokens", get(users::list_tokens).post(users::create_token))
        .route("/tokens/{id}", axum::routing::delete(users::revoke_token))
        .route("/blobs/{sha256}", put(files::put_blob).get(files::get_blob))
        .route("/jobs", get(jobs::list).post(jobs::submit))
        .route("/jobs/{id}", get(jobs::show))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/logs", get(jobs::logs))
        .route("/files", get(files::get_root))
        .route(
            "/files/{*path}",
            get(files::get).put(files::put).delete(files::remove),
        )
        .route("/nodes", get(jobs::nodes))
        .route("/nodes/{name}", axum::routing::delete(nodes::remove))
        .route("/nodes/{name}/drain", post(nodes::drain))
        .route("/nodes/{name}/undrain", post(nodes::undrain))
        .route("/nodes/{name}/approve", post(nodes::approve))
        .route(
            "/node-tokens",
            get(nodes::list_tokens).post(nodes::create_token),
        )
        .route(
            "/node-tokens/{id}",
            axum::routing::delete(nodes::revoke_token),
        )
        .route("/usage", get(jobs::usage))
        .route("/policy", get(policy::get).put(policy::put))
        .route("/queues", get(policy::queues))
        .route("/openapi.json", get(openapi::serve))
        .route("/notebooks", post(sessions::start_notebook))
        .route("/sessions", get(sessions::list))
        .route("/sessions/{id}", axum::routing::delete(sessions::stop))
        .route("/connect", get(sessions::connect_info))
        .route("/ca.pem", get(sessions::ca_pem))
        .fallback(|| async {
            ApiError::not_found("no such API endpoint: see /api/v1/openapi.json")
        });
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(web::router())
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            web::metrics::track,
        ))
        // Uploads stream and enforce their own limit; everything else is small JSON.
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(app)
}

/// The authenticated user of a request.
pub struct Caller(pub UserRow);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> ApiResult<Self> {
        // A bearer token (the CLI, scripts) or the console's session cookie; the header wins
        // when both are sent.
        let token = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(header) => header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    ApiError::unauthorized("the Authorization header must read `Bearer <token>`")
                })?
                .trim()
                .to_string(),
            None => {
                let token = web::session::cookie(&parts.headers, web::session::SESSION_COOKIE)
                    .ok_or_else(|| {
                        ApiError::unauthorized(
                            "no credentials: send `Authorization: Bearer <token>` (hearth login stores one), or log in on the web console",
                        )
                    })?;
                web::session::check_csrf(&parts.method, &parts.headers, &token)?;
                token
            }
        };
        crate::auth::user_for_token(app, &token, crate::auth::Scope::Api)
            .await
            .map(Caller)
    }
}

impl Caller {
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.0.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("only admins may do this"))
        }
    }
}

/// A JSON body whose every defect (syntax, unknown field, wrong type) is a 400 that says
/// what was wrong.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(ApiError::new(rej.status(), "invalid_body", rej.body_text())),
        }
    }
}

/// Parses an id from a path segment.
pub fn parse_id(what: &str, s: &str) -> ApiResult<i64> {
    s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_id",
            format!("`{s}` is not a {what} id: ids are positive numbers"),
        )
    })
}
