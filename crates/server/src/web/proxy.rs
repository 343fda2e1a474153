//! The door: users' own web servers behind Hearth's one login. Every running job's Spark UI
//! at `/ui/jobs/ID/` and every Spark Connect engine's at `/ui/sessions/ID/` (owner and
//! admins); each user's notebook at `/user/NAME/` (the owner alone: a notebook runs code as
//! its owner, so not even admins get in; Jupyter's own token is added by Hearth).
//!
//! The servers listen on guarded loopback ports (`hearth_agent::portguard`) that only Hearth
//! can reach, so this proxy is the one way in, and it checks who is asking on every request:
//! the console's session cookie or a bearer token. What it forwards never carries Hearth's
//! credentials: the bearer header and Hearth's cookies are removed, and the upstream cannot
//! set Hearth's cookies either. A request authenticated by cookie that changes something
//! (or opens a WebSocket) must come from this site (`Origin`), since the upstream knows
//! nothing of Hearth's CSRF header. An admin looking at someone else's UI gets it in a CSP
//! sandbox: the page is the owner's code, and must not act with the admin's session.

use crate::error::ApiError;
use crate::interactive::engines::{self, EngineKind, LeasedBody};
use crate::store::UserRow;
use crate::web::api::AppState;
use crate::web::session;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/{*rest}", any(serve))
        .route("/ui/", any(serve))
        .route("/user/{*rest}", any(serve))
}

/// Whose web server a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    JobUi(i64),
    EngineUi(i64),
    /// A user's notebook, by user name.
    Notebook(String),
}

/// A request path split into the target, its prefix (`/ui/jobs/7`) and what follows it.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    target: Target,
    prefix: String,
    /// The path after the prefix, from its `/`; empty when the path is the bare prefix.
    rest: String,
}

fn parse_target(path: &str) -> Option<Parsed> {
    if let Some(after) = path.strip_prefix("/user/") {
        let (name, rest) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        if name.is_empty() {
            return None;
        }
        return Some(Parsed {
            target: Target::Notebook(name.to_string()),
            prefix: format!("/user/{name}"),
            rest: rest.to_string(),
        });
    }
    let after = path.strip_prefix("/ui/")?;
    let (kind, tail) = after.split_once('/').unwrap_or((after, ""));
    let (id, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    let id: i64 = id.parse().ok().filter(|n| *n > 0)?;
    let target = match kind {
        "jobs" => Target::JobUi(id),
        "sessions" => Target::EngineUi(id),
        _ => return None,
    };
    Some(Parsed {
        target,
        prefix: format!("/ui/{kind}/{id}"),
        rest: rest.to_string(),
    })
}

/// Where a target's server listens, and whose it is.
struct Upstream {
    port: u16,
    owner: UserRow,
    /// Jupyter's token, sent as its `Authorization: token` header.
    token: Option<String>,
    /// Keeps a notebook in use while the request (or WebSocket) lasts.
    lease: Option<engines::Lease>,
    /// Jupyter serves under the door's path; Spark serves at `/` with prefixed links.
    strip_prefix: bool,
    /// A job's UI: (node, job, attempt), reached through the node's connection, the
    /// in-process node's too (the node checks the port as the door does here). None: an
    /// engine's, on this machine.
    remote: Option<(String, i64, u32)>,
    /// The engine's own network namespace and a process in it: its ports are on its own
    /// loopback there. None: the machine's loopback.
    place: Option<(std::path::PathBuf, u32)>,
}

fn not_found(what: &str) -> Response {
    ApiError::not_found(what.to_string()).into_response()
}

async fn serve(State(app): State<AppState>, req: Request) -> Response {
    let uri = req.uri().clone();
    let Some(parsed) = parse_target(uri.path()) else {
        return not_found(
            "nothing here: Spark UIs live at /ui/jobs/ID/ and /ui/sessions/ID/, notebooks at /user/NAME/",
        );
    };
    let caller = match authenticate(&app, req.method(), req.headers()).await {
        Ok(u) => u,
        Err(refusal) => return refusal.respond(req.method(), req.headers(), &uri),
    };
    let upstream = match find(&app, &parsed.target, &caller) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    if parsed.rest.is_empty() {
        // Relative links resolve against a directory: `/ui/jobs/7` -> `/ui/jobs/7/`.
        let q = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        return redirect(&format!("{}/{q}", parsed.prefix));
    }
    // Only a port nobody else can reach (the task's own loopback, or a guarded one of the
    // machine's), with the owner's own server on it: never hand a request (or a page of
    // the owner's) to whatever else grabbed the number. A node checks its own tasks'.
    let owner_uid = Some(upstream.owner.task_uid(&app));
    let ready = match &upstream.place {
        _ if upstream.remote.is_some() => true,
        Some((_, pid)) => hearth_agent::net::listener_uid(*pid, upstream.port) == owner_uid,
        None => {
            app.port_is_guarded(upstream.port)
                && crate::layout::listener_uid(upstream.port) == owner_uid
        }
    };
    if !ready {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "it is not up yet: try again in a few seconds",
        )
        .into_response();
    }
    let path = if upstream.strip_prefix {
        parsed.rest.as_str()
    } else {
        uri.path()
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let sandboxed = caller.id != upstream.owner.id;
    let prefix = if upstream.strip_prefix {
        parsed.prefix.clone()
    } else {
        String::new()
    };
    // Cookies the app sets are confined below its own place under the door.
    let scope = format!("{}/", parsed.prefix);
    forward(
        &app,
        req,
        upstream,
        &path_and_query,
        &prefix,
        &scope,
        sandboxed,
    )
    .await
}

/// The job's or engine's server, if the caller may see it (the owner, or an admin).
/// Anything else answers 404, as if it did not exist.
fn find(app: &AppState, target: &Target, caller: &UserRow) -> Result<Upstream, ApiError> {
    if let Target::Notebook(name) = target {
        // The owner alone, and only a running notebook.
        let mine = &caller.name == name;
        let lease = mine
            .then(|| app.engines.lease_running(caller.id, EngineKind::Notebook))
            .flatten();
        let Some(lease) = lease else {
            if mine && app.engines.has(caller.id, EngineKind::Notebook) {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "your notebook is starting: try again in a few seconds",
                ));
            }
            return Err(ApiError::not_found(format!(
                "no notebook of yours runs at /user/{name}/: start one with `hearth notebook start`"
            )));
        };
        return Ok(Upstream {
            port: lease.engine.port,
            owner: caller.clone(),
            token: Some(lease.engine.secret.clone()),
            place: lease.engine.place(),
            lease: Some(lease),
            strip_prefix: false,
            remote: None,
        });
    }
    let (owner_id, port, remote, place) = match target {
        Target::JobUi(id) => {
            let job = app
                .store
                .job(*id)
                .map_err(ApiError::from)?
                .filter(|j| j.user_id == caller.id || caller.admin)
                .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
            if job.state != hearth_model::JobState::Running {
                return Err(ApiError::not_found(format!(
                    "job {id} is {}: a job's Spark UI is there only while it runs",
                    job.state
                )));
            }
            let port = crate::jobs::dispatch::ui_port(app, *id)
                .ok_or_else(|| ApiError::not_found(format!("job {id} runs without a Spark UI")))?;
            // Through the driver's node, this machine's own too: the node knows where the
            // task's UI is (its own loopback, in its own network).
            let node = job.driver_node().to_string();
            let remote = Some((node, *id, job.attempts.len() as u32 + 1));
            (job.user_id, port, remote, None)
        }
        Target::EngineUi(id) => {
            let engine = app
                .engines
                .get(*id)
                .filter(|e| e.user_id == caller.id || caller.admin)
                .ok_or_else(|| {
                    ApiError::not_found(format!("no session {id}: see `hearth sessions`"))
                })?;
            let port = engine.ui_port.ok_or_else(|| {
                ApiError::not_found(format!("session {id} runs without a Spark UI"))
            })?;
            (engine.user_id, port, None, engine.place())
        }
        Target::Notebook(_) => unreachable!("handled above"),
    };
    let owner = app
        .store
        .user_by_id(owner_id)
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("its owner no longer exists"))?;
    Ok(Upstream {
        port,
        owner,
        token: None,
        lease: None,
        strip_prefix: true,
        remote,
        place,
    })
}

/// Why a request has no user.
enum Refusal {
    /// No credentials, or ones no longer valid (an expired session).
    Unauthenticated(String),
    /// Valid credentials, but a cookie-borne change from another site.
    Forbidden(String),
}

impl Refusal {
    /// A browser asking for a page goes to the login and comes back; anything else gets
    /// the reason.
    fn respond(self, method: &Method, headers: &HeaderMap, uri: &Uri) -> Response {
        match self {
            Refusal::Unauthenticated(why) => {
                let wants_page = method == Method::GET
                    && headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|a| a.contains("text/html"));
                if wants_page {
                    let back = uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or(uri.path());
                    let to = format!("/?next={}", encode_component(back));
                    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
                } else {
                    ApiError::unauthorized(why).into_response()
                }
            }
            Refusal::Forbidden(why) => {
                ApiError::new(StatusCode::FORBIDDEN, "cross_site", why).into_response()
            }
        }
    }
}

/// The caller: a bearer token, or the console's session cookie. Another kind of
/// `Authorization` header (a web app's own scheme) is not Hearth's and is ignored.
async fn authenticate(
    app: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<UserRow, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let token = match bearer {
        Some(t) => t,
        None => {
            let t = session::cookie(headers, session::SESSION_COOKIE).ok_or_else(|| {
                Refusal::Unauthenticated(
                    "no credentials: log in on the web console, or send `Authorization: Bearer <token>`"
                        .into(),
                )
            })?;
            let changes = !(method == Method::GET || method == Method::HEAD);
            if (changes || is_upgrade(headers)) && !same_origin(headers) {
                return Err(Refusal::Forbidden(
                    "this request came from another site: open the page from this Hearth".into(),
                ));
            }
            t
        }
    };
    crate::auth::user_for_token(app, &token, crate::auth::Scope::Api)
        .await
        .map_err(|e| Refusal::Unauthenticated(e.message))
}

/// Whether the request's `Origin` is this site (the host it was sent to).
fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host == Some(host)
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Percent-encodes a URL component (everything but unreserved characters and `/`).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn redirect(to: &str) -> Response {
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
}

/// Headers that belong to one connection, not to the request (RFC 9110 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Response headers a proxied app may send back through the door: what its pages need, and
/// nothing that acts on the rest of Hearth's origin (no `Clear-Site-Data`, no
/// `Refresh` to elsewhere, no authentication challenges for Hearth's paths). `Set-Cookie` is
/// let through only confined to the app's own path ([`confine_cookie`]); `Location` is kept
/// under the door. A WebSocket's answer keeps its handshake headers.
const RESPONSE_HEADERS: &[&str] = &[
    "accept-ranges",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-range",
    "content-security-policy",
    "content-type",
    "date",
    "etag",
    "expires",
    "last-modified",
    "location",
    "referrer-policy",
    "set-cookie",
    "vary",
    "x-content-type-options",
    "x-frame-options",
];
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
];

/// Whether a response header from a proxied app reaches the browser.
fn passes(name: &str, upgrading: bool) -> bool {
    RESPONSE_HEADERS.contains(&name) || (upgrading && UPGRADE_HEADERS.contains(&name))
}

/// A proxied app's `Set-Cookie`, rebuilt so that the browser sends it back only below the
/// app's own place under the door (`scope`, e.g. `/ui/jobs/7/` or `/user/alice/`): its
/// `Path` kept if it lies there, else set to `scope`; no `Domain`; only the attributes a
/// cookie needs. None (dropped) for a cookie Hearth's own paths could receive or confuse:
/// one without a name, named like Hearth's cookies, with a prefix (`__Host-`, `__Secure-`)
/// the rebuilt path would break, or with anything but visible ASCII.
fn confine_cookie(value: &str, scope: &str) -> Option<String> {
    if !value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return None;
    }
    let mut parts = value.split(';');
    let pair = parts.next()?.trim();
    let (name, val) = pair.split_once('=')?;
    let name = name.trim();
    const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={}";
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !SEPARATORS.contains(&b));
    let lower = name.to_ascii_lowercase();
    let hearths = [session::SESSION_COOKIE, session::CSRF_COOKIE]
        .iter()
        .any(|h| lower == h.to_ascii_lowercase());
    if !token || hearths || lower.starts_with("__host-") || lower.starts_with("__secure-") {
        return None;
    }
    let mut path = scope.to_string();
    let mut kept = Vec::new();
    for attr in parts {
        let attr = attr.trim();
        let (key, v) = attr.split_once('=').unwrap_or((attr, ""));
        match key.trim().to_ascii_lowercase().as_str() {
            "path" if v.trim().starts_with(scope) => path = v.trim().to_string(),
            "expires" | "max-age" | "samesite" => kept.push(attr.to_string()),
            "secure" | "httponly" => kept.push(key.trim().to_string()),
            // Domain, a Path outside the scope, and anything else: dropped.
            _ => {}
        }
    }
    let mut out = format!("{name}={}; Path={path}", val.trim());
    for a in kept {
        out.push_str("; ");
        out.push_str(&a);
    }
    Some(out)
}

/// The request's `Cookie` header without Hearth's own cookies: the session token is for
/// Hearth alone.
fn strip_hearth_cookies(value: &str) -> Option<String> {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|c| {
            let name = c.split('=').next().unwrap_or("").trim();
            !c.is_empty() && name != session::SESSION_COOKIE && name != session::CSRF_COOKIE
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// A `Location` from the upstream, kept under the door: the upstream's absolute URLs (Jetty
/// builds them from `Host`) lose their origin, and paths outside the prefix gain it.
fn rewrite_location(location: &str, prefix: &str) -> String {
    let path = match location.split_once("://") {
        Some((_, after)) => match after.find('/') {
            Some(i) => &after[i..],
            None => "/",
        },
        None => location,
    };
    if !path.starts_with('/') || path == prefix || path.starts_with(&format!("{prefix}/")) {
        path.to_string()
    } else {
        format!("{prefix}{path}")
    }
}

/// Sends the request to the server on `port` over a fresh loopback connection and streams
/// its answer back; a WebSocket upgrade is spliced through both ways.
async fn forward(
    app: &AppState,
    mut req: Request,
    upstream: Upstream,
    path_and_query: &str,
    prefix: &str,
    scope: &str,
    sandboxed: bool,
) -> Response {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query);
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) {
            continue;
        }
        if name == header::AUTHORIZATION && value.to_str().is_ok_and(|v| v.starts_with("Bearer ")) {
            continue;
        }
        if name == header::COOKIE {
            if let Some(kept) = value.to_str().ok().and_then(strip_hearth_cookies) {
                if let Ok(v) = HeaderValue::from_str(&kept) {
                    out = out.header(header::COOKIE, v);
                }
            }
            continue;
        }
        out = out.header(name, value);
    }
    if upgrade {
        out = out
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket");
    }
    if let Some(token) = &upstream.token {
        out = out.header(header::AUTHORIZATION, format!("token {token}"));
    }
    let Ok(out) = out.body(body) else {
        return ApiError::bad_request("invalid_request", "the request could not be forwarded")
            .into_response();
    };
    let unavailable =
        |why: String| ApiError::new(StatusCode::BAD_GATEWAY, "upstream", why).into_response();
    let connected = match &upstream.remote {
        None => {
            let netns = upstream.place.as_ref().map(|(ns, _)| ns.as_path());
            crate::interactive::upstream::connect_local(netns, upstream.port).await
        }
        Some((node, job, attempt)) => match app.cluster.open_tunnel(node, *job, *attempt).await {
            Ok(stream) => crate::interactive::upstream::handshake(stream).await,
            Err(why) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
                    .into_response()
            }
        },
    };
    let mut sender = match connected {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let mut answer = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return unavailable(format!("the web server failed to answer: {e}")),
    };
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let server_upgrade = hyper::upgrade::on(&mut answer);
            // The lease lives as long as the WebSocket: an open kernel channel is use.
            let lease = upstream.lease;
            tokio::spawn(async move {
                if let (Ok(client), Ok(server)) = tokio::join!(client_upgrade, server_upgrade) {
                    let mut client = TokioIo::new(client);
                    let mut server = TokioIo::new(server);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                drop(lease);
            });
            let (mut head, _) = answer.into_parts();
            head.headers = answer_headers(&head, prefix, scope, sandboxed);
            return Response::from_parts(head, Body::empty());
        }
    }
    let (mut head, body) = answer.into_parts();
    head.headers = answer_headers(&head, prefix, scope, sandboxed);
    Response::from_parts(head, Body::new(LeasedBody::new(body, upstream.lease)))
}

/// The headers of a proxied app's answer as they reach the browser, a WebSocket's
/// handshake included: the allow-list, cookies confined below the app's place, `Location`
/// kept under the door, and a CSP sandbox on someone else's page.
fn answer_headers(
    head: &hyper::http::response::Parts,
    prefix: &str,
    scope: &str,
    sandboxed: bool,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let upgrading = head.status == StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in &head.headers {
        let n = name.as_str();
        if !passes(n, upgrading) {
            continue;
        }
        if name == header::SET_COOKIE {
            let confined = value
                .to_str()
                .ok()
                .and_then(|v| confine_cookie(v, scope))
                .and_then(|v| HeaderValue::from_str(&v).ok());
            if let Some(v) = confined {
                headers.append(header::SET_COOKIE, v);
            }
            continue;
        }
        if name == header::LOCATION {
            if let Some(v) = value
                .to_str()
                .ok()
                .map(|l| rewrite_location(l, prefix))
                .and_then(|l| HeaderValue::from_str(&l).ok())
            {
                headers.append(header::LOCATION, v);
            }
            continue;
        }
        headers.append(name, value.clone());
    }
    if sandboxed {
        // Someone else's page: no scripts with this origin's cookies, no forms to submit.
        // Added beside the page's own policies: every one of them applies.
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_targets() {
        assert_eq!(
            parse_target("/ui/jobs/7/jobs/"),
            Some(Parsed {
                target: Target::JobUi(7),
                prefix: "/ui/jobs/7".into(),
                rest: "/jobs/".into()
            })
        );
        assert_eq!(
            parse_target("/ui/sessions/3"),
            Some(Parsed {
                target: Target::EngineUi(3),
                prefix: "/ui/sessions/3".into(),
                rest: "".into()
            })
        );
        assert_eq!(parse_target("/ui/jobs/x/"), None);
        assert_eq!(parse_target("/ui/jobs/0/"), None);
        assert_eq!(parse_target("/ui/other/1/"), None);
        assert_eq!(parse_target("/ui/"), None);
    }

    #[test]
    fn an_apps_cookies_stay_below_its_own_path_and_never_touch_hearths() {
        let scope = "/ui/jobs/7/";
        // Hearth's own names, in any case, a nameless one, prefixed ones, non-ASCII: dropped.
        for bad in [
            "hearth_session=x; Path=/",
            "HEARTH_SESSION=x",
            "=hearth_session=x; Path=/api/",
            "hearth_csrf=y",
            "__Host-a=b; Path=/; Secure",
            "__Secure-a=b; Secure",
            "caf\u{e9}=1",
            "a=b\u{e9}",
            "no-equals-sign",
            "a b=c",
        ] {
            assert_eq!(confine_cookie(bad, scope), None, "{bad}");
        }
        // A path elsewhere (Hearth's API, the root) is pulled under the scope; Domain goes.
        assert_eq!(
            confine_cookie("sid=1; Path=/api/; Domain=example.com; HttpOnly", scope).as_deref(),
            Some("sid=1; Path=/ui/jobs/7/; HttpOnly")
        );
        assert_eq!(
            confine_cookie("sid=1", scope).as_deref(),
            Some("sid=1; Path=/ui/jobs/7/")
        );
        // Jupyter's own, already under its place, kept as it is.
        assert_eq!(
            confine_cookie(
                "_xsrf=2|ab|cd|1; expires=Wed, 06 Jan 2027 00:00:00 GMT; Path=/user/alice/",
                "/user/alice/"
            )
            .as_deref(),
            Some("_xsrf=2|ab|cd|1; Path=/user/alice/; expires=Wed, 06 Jan 2027 00:00:00 GMT")
        );
        // A longer-looking path that only shares a prefix string is not under the scope.
        assert_eq!(
            confine_cookie("a=1; Path=/ui/jobs/70/", scope).as_deref(),
            Some("a=1; Path=/ui/jobs/7/")
        );
    }

    #[test]
    fn only_allowed_headers_come_back() {
        for ok in [
            "content-type",
            "set-cookie",
            "location",
            "content-security-policy",
        ] {
            assert!(passes(ok, false), "{ok}");
        }
        for no in [
            "clear-site-data",
            "refresh",
            "www-authenticate",
            "link",
            "upgrade",
            "x-anything",
        ] {
            assert!(!passes(no, false), "{no}");
        }
        assert!(passes("sec-websocket-accept", true));
        assert!(!passes("sec-websocket-accept", false));
    }

    #[test]
    fn hearth_cookies_never_reach_the_upstream() {
        assert_eq!(
            strip_hearth_cookies("hearth_session=s; a=1; hearth_csrf=c; b=2").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_hearth_cookies("hearth_session=s"), None);
    }

    #[test]
    fn redirects_stay_under_the_door() {
        assert_eq!(
            rewrite_location("http://127.0.0.1:8080/ui/jobs/7/jobs/", "/ui/jobs/7"),
            "/ui/jobs/7/jobs/"
        );
        assert_eq!(rewrite_location("/jobs/", "/ui/jobs/7"), "/ui/jobs/7/jobs/");
        assert_eq!(
            rewrite_location("http://localhost:4040", "/ui/jobs/7"),
            "/ui/jobs/7/"
        );
        assert_eq!(rewrite_location("stages/", "/ui/jobs/7"), "stages/");
    }

    #[test]
    fn only_this_site_may_send_cookie_borne_changes() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("hearth:8080"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil:8080"));
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://hearth:8080"),
        );
        assert!(same_origin(&h));
        assert_eq!(encode_component("/ui/jobs/7/?a=b"), "/ui/jobs/7/%3Fa%3Db");
    }
}
