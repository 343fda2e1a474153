//! The Spark Connect gateway: a transparent gRPC (HTTP/2) reverse proxy. It checks the
//! caller's Hearth token, then forwards each call, streams unbuffered, over h2c on loopback
//! to the caller's own engine with the token replaced by that engine's secret. It decodes no
//! protobuf: each user has their own engine, so whatever `user_id` or `session_id` a client
//! claims only ever reaches sessions of its own engine.
//!
//! TLS (Hearth's CA or the admin's certificate) for everyone; plaintext h2c only from
//! loopback, because PySpark speaks plaintext to a host named exactly `localhost`.

use crate::interactive::engines::{self, LeasedBody};
use crate::interactive::relay;
use crate::App;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// What clients need to reach the gateway.
#[derive(Clone)]
pub struct ConnectInfo {
    pub addr: SocketAddr,
    /// The names the certificate covers.
    pub hosts: Vec<String>,
    /// Hearth's CA, when Hearth made the certificate.
    pub ca_pem: Option<String>,
}

/// gRPC status codes the gateway answers with itself.
/// Not retried by Spark Connect clients, unlike UNAVAILABLE: waiting will not help soon.
const INVALID_ARGUMENT: u16 = 3;
const RESOURCE_EXHAUSTED: u16 = 8;
const UNAVAILABLE: u16 = 14;
const UNAUTHENTICATED: u16 = 16;

type Upstream = Client<ToEngine, Incoming>;

/// Connects the gateway's HTTP/2 client to an engine by its port: on the engine's own
/// loopback, entering its network namespace, or on the machine's when it has none. Engines'
/// ports differ from one another, so each keeps its own pooled connection.
#[derive(Clone)]
struct ToEngine(std::sync::Weak<App>);

impl tower_service::Service<hyper::Uri> for ToEngine {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let app = self.0.upgrade();
        Box::pin(async move {
            let port = uri
                .port_u16()
                .ok_or_else(|| std::io::Error::other("no engine port"))?;
            let app = app.ok_or_else(|| std::io::Error::other("Hearth is stopping"))?;
            let engine = app
                .engines
                .by_port(port)
                .ok_or_else(|| std::io::Error::other("that engine has ended"))?;
            let stream = engine.connect(app.task_network.is_none(), port).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// How long a new connection may take to say anything and finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Open connections at most, in all and from one address: one client cannot take every
/// descriptor (or every engine's attention) from the others.
const MAX_CONNECTIONS: usize = 4096;
const MAX_PER_ADDRESS: usize = 256;

/// Counts open connections, in all and by address.
struct Slots {
    max: usize,
    per_address: usize,
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// One open connection's place: given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    ip: std::net::IpAddr,
}

impl Slots {
    fn new(max: usize, per_address: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_address,
            open: Default::default(),
        })
    }

    /// A place for a connection from `ip`, or None when it is over a limit.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.max || from >= self.per_address {
            return None;
        }
        open.0 += 1;
        open.1.insert(ip, from + 1);
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until `stop` flips.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut stop: crate::background::Stop,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // One multiplexed HTTP/2 connection per engine, kept open between calls.
    let upstream: Upstream = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(ToEngine(Arc::downgrade(&app)));
    let slots = Slots::new(MAX_CONNECTIONS, MAX_PER_ADDRESS);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("gateway accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::background::stopped(&mut stop) => return,
        };
        let Some(slot) = slots.take(peer.ip()) else {
            tracing::warn!(%peer, "gateway: connection refused, too many open (from this address, or in all)");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, acceptor, upstream) = (app.clone(), acceptor.clone(), upstream.clone());
        tokio::spawn(async move {
            let _slot = slot;
            // A TLS record starts with 0x16 (handshake); an h2c client starts with "PRI".
            // A client that says nothing, or never finishes its handshake, is let go.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(1)) => {}
                _ => return,
            }
            if first[0] == 0x16 {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => route(app, upstream, tls).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "gateway TLS handshake: {e}"),
                    Err(_) => tracing::debug!(%peer, "gateway: no TLS handshake within 10 s"),
                }
            } else if plaintext_allowed(&app, &stream, peer) {
                route(app, upstream, stream).await;
            } else {
                tracing::debug!(%peer, "gateway: plaintext refused from a remote address");
            }
        });
    }
}

/// Plaintext (h2c) only from this machine: over loopback, or from a task on it through
/// its network's gateway (forwarded to loopback, or coming from the tasks' range). PySpark
/// speaks plaintext to `localhost`, and to any host when the token travels as plain
/// metadata (`x-hearth-token`), as notebook kernels' does.
fn plaintext_allowed(app: &App, stream: &tokio::net::TcpStream, peer: SocketAddr) -> bool {
    let local = stream.local_addr().map(|a| a.ip());
    let from_task = match (&app.task_network, peer.ip()) {
        (Some(n), std::net::IpAddr::V4(ip)) => n.range.contains(ip),
        _ => false,
    };
    peer.ip().is_loopback() || local.is_ok_and(|ip| ip.is_loopback()) || from_task
}

/// A connection whose first call the relay takes (a valid token, an engine that runs) is
/// relayed (`relay`); every other one is served call by call.
async fn route<S>(app: Arc<App>, upstream: Upstream, mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    // gRPC clients wait for the server's SETTINGS before their first call.
    if stream.write_all(&relay::EMPTY_SETTINGS).await.is_err() {
        return;
    }
    let mut stream = relay::StripAck::new(stream);
    let mut first = Vec::new();
    let mut refused = None;
    if let Some(call) = relay::read_first(&mut stream, &mut first).await {
        if let Some((user, kind)) = relay::takes(&app, &call).await {
            match engines::acquire(&app, &user, kind).await {
                Ok(lease) => {
                    let shared = app.task_network.is_none();
                    let engine = lease.engine.connect(shared, lease.engine.port).await;
                    // An engine gone already: the ordinary path answers (and starts another).
                    if let Ok(upstream) = engine {
                        let token = call.token().unwrap_or_default().to_string();
                        return relay::relay(app, user, token, lease, upstream, stream, first)
                            .await;
                    }
                }
                // Said to the first call by the ordinary path, without starting another.
                Err(e) => refused = Some(e),
            }
        }
    }
    serve_connection(app, upstream, refused, TokioIo::new(stream.replay(first))).await
}

/// Serves the connection call by call. `refused`: why its first call's engine could not be
/// had, found out already while the relay looked at it.
async fn serve_connection<I>(
    app: Arc<App>,
    upstream: Upstream,
    refused: Option<engines::AcquireError>,
    io: I,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let refused = Arc::new(std::sync::Mutex::new(refused));
    let service = hyper::service::service_fn(move |req| {
        let (app, upstream) = (app.clone(), upstream.clone());
        let refused = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
        async move { Ok::<_, Infallible>(handle(app, upstream, refused, req).await) }
    });
    if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await
    {
        tracing::debug!("gateway connection: {e}");
    }
}

/// The Hearth token of a call, or what to do without one: from its `x-hearth-token` and
/// `authorization` values, read by the ordinary path and the relay alike. Two forms:
/// `authorization: Bearer T` (PySpark's `;token=T`) and `x-hearth-token: T`
/// (`;x-hearth-token=T`, plain metadata), which wins when both come. The second exists for
/// speed: PySpark turns `;token=` into gRPC call credentials, which run a Python callback on
/// a thread pool for every call (about 1.6 ms per `collect()`, measured: more than the whole
/// relay to Sail costs), while plain metadata costs nothing.
pub fn token_of<'a>(
    plain: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Result<&'a str, &'static str> {
    if let Some(t) = plain {
        return Some(t.trim()).filter(|t| !t.is_empty()).ok_or(
            "x-hearth-token must hold a Hearth token: put it in the URL as ;x-hearth-token=TOKEN",
        );
    }
    let Some(h) = authorization else {
        return Err("no Hearth token: connect with sc://HOST:PORT/;use_ssl=true;x-hearth-token=TOKEN or Spark's sc://HOST:PORT/;token=TOKEN (`hearth connect` prints the URL; `hearth token create` makes a token)");
    };
    h.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or("the authorization header must read `Bearer <Hearth token>`: put the token in the URL as ;token=TOKEN")
}

/// [`token_of`] a request's headers (a value that is not text counts as an empty one).
fn bearer(req: &Request<Incoming>) -> Result<&str, &'static str> {
    let text = |name| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
    token_of(
        text(TOKEN_HEADER),
        text(hyper::header::AUTHORIZATION.as_str()),
    )
}

/// What a call carries to the engine instead of what it came with: the engine's address, and
/// the engine's secret in place of the Hearth token, which never reaches the engine (in
/// either form), as the engine's secret never leaves Hearth.
fn to_engine(
    parts: &mut hyper::http::request::Parts,
    port: u16,
    secret: &str,
) -> Result<(), &'static str> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = format!("http://127.0.0.1:{port}{path}")
        .parse()
        .map_err(|_| "the request's path is not valid")?;
    parts.headers.remove(TOKEN_HEADER);
    let secret = format!("Bearer {secret}")
        .parse()
        .map_err(|_| "the engine's secret is not a valid header")?;
    parts.headers.insert(hyper::header::AUTHORIZATION, secret);
    Ok(())
}

async fn handle(
    app: Arc<App>,
    upstream: Upstream,
    refused: Option<engines::AcquireError>,
    req: Request<Incoming>,
) -> Response<LeasedBody> {
    let token = match bearer(&req) {
        Ok(t) => t.to_string(),
        Err(why) => return grpc_error(UNAUTHENTICATED, why),
    };
    let user = match crate::auth::user_for_token(&app, &token, crate::auth::Scope::Connect).await {
        Ok(u) => u,
        Err(e) if e.status == hyper::StatusCode::UNAUTHORIZED => {
            return grpc_error(
                UNAUTHENTICATED,
                &format!("Hearth token refused: {}; make a new one with `hearth connect` or `hearth token create`", e.message),
            )
        }
        Err(e) => return grpc_error(UNAVAILABLE, &format!("checking the token: {}", e.message)),
    };
    drop(token);
    // Which engine: `;x-hearth-engine=sail` in the client's URL arrives as this header.
    let kind = match req.headers().get(ENGINE_HEADER).map(|v| v.to_str()) {
        None => engines::EngineKind::Spark,
        Some(Ok(name)) => match engines::EngineKind::for_connect(name.trim()) {
            Some(k) => k,
            None => {
                return grpc_error(
                    INVALID_ARGUMENT,
                    &format!(
                        "no engine `{}`: write ;x-hearth-engine=spark (the default) or ;x-hearth-engine=sail in the URL",
                        name.trim()
                    ),
                )
            }
        },
        Some(Err(_)) => {
            return grpc_error(
                INVALID_ARGUMENT,
                "x-hearth-engine must be spark or sail",
            )
        }
    };
    // Clients release their session when they exit (PySpark does at interpreter exit, and so
    // does every notebook kernel): with no engine running there is nothing to release, and
    // starting a JVM just to hear that would waste a minute of a core and gigabytes.
    if req.uri().path() == RELEASE_SESSION && !app.engines.has(user.id, kind) {
        return grpc_ok_empty_message();
    }
    let acquired = match refused {
        Some(why) => Err(why),
        None => engines::acquire(&app, &user, kind).await,
    };
    let lease = match acquired {
        Ok(l) => l,
        Err(engines::AcquireError::NoRoom(why)) => return grpc_error(RESOURCE_EXHAUSTED, &why),
        Err(engines::AcquireError::Failed(why)) => {
            return grpc_error(
                UNAVAILABLE,
                &format!("your Spark engine is not available: {why}"),
            )
        }
    };
    let (mut parts, body) = req.into_parts();
    if let Err(why) = to_engine(&mut parts, lease.engine.port, &lease.engine.secret) {
        return grpc_error(UNAVAILABLE, why);
    }
    match upstream.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|inner| LeasedBody::new(inner, Some(lease))),
        Err(e) => {
            tracing::warn!(engine = lease.engine.id, "forwarding to the engine: {e}");
            grpc_error(
                UNAVAILABLE,
                "your Spark engine did not answer: it may have stopped; retry to start a new one",
            )
        }
    }
}

/// The metadata key naming the engine a client wants.
const ENGINE_HEADER: &str = "x-hearth-engine";

/// The metadata key a Hearth token may come in instead of `authorization` (see [`bearer`]).
pub const TOKEN_HEADER: &str = "x-hearth-token";

const RELEASE_SESSION: &str = "/spark.connect.SparkConnectService/ReleaseSession";

/// A successful unary answer with an empty message (every field at its default).
fn grpc_ok_empty_message() -> Response<LeasedBody> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    // A message frame: not compressed (0), length 0.
    let message = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let mut resp = Response::new(LeasedBody::frames(vec![
        Frame::data(message),
        Frame::trailers(trailers),
    ]));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A gRPC error in the trailers-only form: HTTP 200, status and message in the headers.
fn grpc_error(code: u16, message: &str) -> Response<LeasedBody> {
    let mut resp = Response::new(LeasedBody::empty());
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", code.into());
    if let Ok(v) = percent_encode(message).parse() {
        h.insert("grpc-message", v);
    }
    resp
}

/// gRPC's grpc-message encoding: printable ASCII except '%' as is, the rest as %XX.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_limited_in_all_and_by_address() {
        let slots = Slots::new(3, 2);
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let b: std::net::IpAddr = [10, 0, 0, 2].into();
        let a1 = slots.take(a).expect("first");
        let a2 = slots.take(a).expect("second");
        assert!(slots.take(a).is_none(), "a third from one address");
        let b1 = slots.take(b).expect("another address");
        assert!(slots.take(b).is_none(), "over the total");
        drop(a1);
        let a3 = slots.take(a).expect("a place given back");
        drop((a2, a3, b1));
        assert_eq!(slots.open.lock().expect("lock").0, 0);
        assert!(slots.open.lock().expect("lock").1.is_empty());
    }
    use hyper::body::Body;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(
            percent_encode("no token: 100% ü"),
            "no token: 100%25 %C3%BC"
        );
    }

    #[test]
    fn an_auth_failure_is_a_trailers_only_unauthenticated() {
        let r = grpc_error(UNAUTHENTICATED, "no Hearth token");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(r.headers()["grpc-message"], "no Hearth token");
        assert!(r.body().is_end_stream());
    }

    #[test]
    fn either_form_of_the_token_is_read_the_plain_one_first() {
        assert_eq!(token_of(Some(" hth_1_p "), None), Ok("hth_1_p"));
        assert_eq!(
            token_of(Some("hth_1_p"), Some("Bearer hth_1_b")),
            Ok("hth_1_p")
        );
        assert_eq!(token_of(None, Some("Bearer hth_1_b ")), Ok("hth_1_b"));
        assert!(token_of(Some(" "), Some("Bearer hth_1_b")).is_err());
        assert!(token_of(None, Some("Basic x"))
            .unwrap_err()
            .contains(";token=TOKEN"));
        assert!(token_of(None, None)
            .unwrap_err()
            .contains("no Hearth token"));
    }

    #[test]
    fn the_engine_gets_its_secret_and_never_the_hearth_token() {
        let req = Request::builder()
            .uri("http://gateway/spark.connect.SparkConnectService/ExecutePlan")
            .header("x-hearth-token", "hth_1_p")
            .header("authorization", "Bearer hth_1_b")
            .header("x-hearth-engine", "spark")
            .body(())
            .expect("request");
        let (mut parts, ()) = req.into_parts();
        assert_eq!(to_engine(&mut parts, 4242, "engine-secret"), Ok(()));
        assert_eq!(
            parts.uri.to_string(),
            "http://127.0.0.1:4242/spark.connect.SparkConnectService/ExecutePlan"
        );
        assert!(parts.headers.get("x-hearth-token").is_none());
        let auth: Vec<_> = parts.headers.get_all("authorization").iter().collect();
        assert_eq!(auth, vec!["Bearer engine-secret"]);
        assert_eq!(parts.headers["x-hearth-engine"], "spark");
    }

    #[test]
    fn a_release_with_no_engine_is_answered_with_one_empty_message_and_ok() {
        let r = grpc_ok_empty_message();
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.body().size_hint().exact(), Some(5));
        assert!(!r.body().is_end_stream());
    }
}
