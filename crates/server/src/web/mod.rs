//! The web console: a single-page app over the same REST API the CLI uses, every asset
//! embedded in the binary (it must work on a closed network), plus what only a browser needs:
//! cookie sessions ([`session`]), live job events ([`events`]) and Prometheus [`metrics`].

pub mod api;
pub mod events;
pub mod metrics;
pub mod proxy;
pub mod session;
pub mod usage;

use crate::web::api::AppState;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The console's routes (the API it calls lives under /api/v1).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/metrics", get(metrics::serve))
        .merge(proxy::router())
}

/// A digest of every asset: it versions their URLs, so that they can be cached for good and
/// a new binary's assets are still fetched at once.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h = Sha256::new();
        for a in [INDEX_HTML, APP_JS, STYLE_CSS] {
            h.update(a.as_bytes());
        }
        hex::encode(&h.finalize()[..6])
    })
}

fn index_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| INDEX_HTML.replace("__VERSION__", version()))
}

/// Headers of every console response: only our own scripts and styles run, the page cannot
/// be framed (clickjacking), and no URL leaks to other sites.
fn security_headers() -> [(header::HeaderName, &'static str); 4] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ]
}

async fn index(headers: HeaderMap) -> Response {
    let etag = format!("\"{}\"", version());
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        security_headers(),
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            // Always revalidated (cheaply, by ETag): it names the current assets.
            (header::CACHE_CONTROL, "no-cache".to_string()),
            (header::ETAG, etag),
        ],
        index_html(),
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => {
            return crate::error::ApiError::not_found(format!("no console asset {name}"))
                .into_response()
        }
    };
    (
        security_headers(),
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            // URLs carry ?v=<version>: a given URL's content never changes.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}
