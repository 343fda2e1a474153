//! HTTP/1.1 to users' own web servers (Spark UIs, notebooks): on this machine's loopback,
//! or over a node's tunnel. Used by the door (`web::proxy`) and by the engine reaper,
//! which asks a notebook whether its kernels are busy.

use axum::body::Body;
use axum::http::header;
use hyper_util::rt::TokioIo;
use std::path::Path;
use tokio::net::TcpStream;

/// A TCP connection to `port` on loopback: a task's own (entering its network namespace,
/// `netns`), or the machine's.
pub async fn connect_tcp(netns: Option<&Path>, port: u16) -> std::io::Result<TcpStream> {
    let stream = match netns {
        Some(ns) => hearth_agent::net::connect(ns, port, CONNECT_TIMEOUT).await?,
        None => tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An HTTP/1.1 connection to a web server on loopback, a task's own or the machine's (a
/// fresh one per request: it costs microseconds here, and a request never waits behind
/// another's long poll).
pub async fn connect_local<B>(
    netns: Option<&Path>,
    port: u16,
) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect_tcp(netns, port)
        .await
        .map_err(|e| format!("the web server did not answer: {e}"))?;
    handshake(stream).await
}

/// HTTP/1.1 over a connection to a web server (on loopback, or through a node's tunnel).
pub async fn handshake<S, B>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("the web server did not answer: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// GET `path` from the web server on `port` with an `Authorization` header: Hearth asking a
/// notebook whether its kernels are busy. Status and body (at most 1 MiB).
pub async fn get_local(
    netns: Option<&Path>,
    port: u16,
    path: &str,
    authorization: &str,
) -> Result<(u16, Vec<u8>), String> {
    use http_body_util::BodyExt;
    let mut sender = connect_local::<Body>(netns, port).await?;
    let req = hyper::Request::builder()
        .uri(path)
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .header(header::AUTHORIZATION, authorization)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
}
