//! Browser sessions: one sign-on for the console (and, later, notebooks). A session is an
//! ordinary Hearth token kept in an HttpOnly cookie, so revoking it works like any token.
//! Because browsers send cookies on their own, a cookie-authenticated request that changes
//! something must also carry a CSRF header that only a page of ours can compute.

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::web::api::{ApiJson, AppState, Caller, Peer};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::Json;
use hearth_model::api;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Holds the token; never readable by scripts.
pub const SESSION_COOKIE: &str = "hearth_session";
/// Holds the CSRF value; readable by our page, which echoes it in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "hearth_csrf";
pub const CSRF_HEADER: &str = "x-hearth-csrf";
/// A browser session lasts a working week; a stolen cookie does not last forever.
const SESSION_TTL_SECONDS: u64 = 7 * 86_400;

/// The CSRF value of a session token: derived, so the server keeps no extra state, and
/// unguessable without the token (which a script cannot read).
pub fn csrf_for(token: &str) -> String {
    let digest = Sha256::digest(format!("hearth-csrf\0{token}").as_bytes());
    hex::encode(&digest[..16])
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Refuses a cookie-authenticated request that may change something unless it proves it
/// comes from our own page. Reads need no proof: SameSite=Strict already keeps other
/// sites' requests from carrying the cookie, and this is the second lock on the door.
pub fn check_csrf(method: &axum::http::Method, headers: &HeaderMap, token: &str) -> ApiResult<()> {
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return Ok(());
    }
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let want = csrf_for(token);
    // Compare without an early exit: the time taken reveals nothing about the value.
    let same = sent.len() == want.len()
        && sent
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!(
                "a request authenticated by the session cookie must carry the `{CSRF_HEADER}` header \
                 (the value of the `{CSRF_COOKIE}` cookie); scripts should send `Authorization: Bearer <token>` instead"
            ),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub user: String,
    pub password: String,
}

#[derive(Serialize)]
pub struct SessionResponse {
    pub user: api::User,
    /// What to send in `x-hearth-csrf` (also in the `hearth_csrf` cookie).
    pub csrf: String,
}

/// Cookies are `Secure` when the browser reached us over TLS (through a proxy that says so),
/// so that a session made over https never travels over plain http.
fn secure(headers: &HeaderMap) -> &'static str {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if tls {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookies(
    headers: &HeaderMap,
    token: &str,
    max_age: u64,
) -> [(header::HeaderName, String); 2] {
    let secure = secure(headers);
    [
        (
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"),
        ),
        (
            header::SET_COOKIE,
            format!(
                "{CSRF_COOKIE}={}; Path=/; Max-Age={max_age}; SameSite=Strict{secure}",
                if token.is_empty() { String::new() } else { csrf_for(token) }
            ),
        ),
    ]
}

/// `POST /api/v1/session`: checks the password exactly as `login` does (same cost for an
/// unknown user) and puts a new, expiring token in the session cookie.
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    Peer(address): Peer,
    ApiJson(req): ApiJson<SessionRequest>,
) -> ApiResult<Response> {
    let user = auth::check_login(&app, &req.user, req.password, address).await?;
    let user2 = user.clone();
    let t = {
        let _slot = app.hashing.acquire().await?;
        tokio::task::spawn_blocking(move || {
            auth::new_token(
                &user2,
                "web console",
                Some(SESSION_TTL_SECONDS),
                auth::Scope::Api,
            )
        })
        .await
        .map_err(|e| ApiError::internal("creating a session", e))?
    };
    let id = app.store.insert_token(&t.row)?;
    let token = auth::format_token(id, &t.secret);
    let body = SessionResponse {
        user: api::User {
            name: user.name.clone(),
            admin: user.admin,
            uid: user.uid,
            created_at_ms: user.created_at,
        },
        csrf: csrf_for(&token),
    };
    let cookies = set_cookies(&headers, &token, SESSION_TTL_SECONDS);
    Ok((StatusCode::CREATED, AppendHeaders(cookies), Json(body)).into_response())
}

/// The token id of a session cookie's token (`hth_<id>_<secret>`).
fn token_id(token: &str) -> Option<i64> {
    token
        .strip_prefix("hth_")
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(id, _)| id.parse().ok())
}

/// `DELETE /api/v1/session`: logs out: revokes the session's token (not the caller's other
/// tokens) and clears the cookies.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        .as_deref()
        .and_then(token_id)
    {
        // Only the caller's own token: a cookie of someone else's cannot be revoked here.
        if app.store.delete_token(id, caller.0.id)? {
            app.tokens.forget(id);
        }
    }
    let cookies = set_cookies(&headers, "", 0);
    Ok((StatusCode::NO_CONTENT, AppendHeaders(cookies)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Method};

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hearth_session=hth_3_abc ; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("hth_3_abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(token_id("hth_3_abc"), Some(3));
    }

    #[test]
    fn changes_need_the_csrf_header_reads_do_not() {
        let token = "hth_1_secret";
        let mut h = HeaderMap::new();
        assert!(check_csrf(&Method::GET, &h, token).is_ok());
        let e = check_csrf(&Method::POST, &h, token).expect_err("no header");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        h.insert(CSRF_HEADER, HeaderValue::from_static("wrong"));
        assert!(check_csrf(&Method::DELETE, &h, token).is_err());
        h.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_for(token)).expect("hex"),
        );
        assert!(check_csrf(&Method::POST, &h, token).is_ok());
        assert_ne!(csrf_for(token), csrf_for("hth_1_other"));
    }
}
