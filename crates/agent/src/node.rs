//! `hearth agent`: joins this machine to a Hearth server and keeps one mutual-TLS
//! connection to it. The private key is made here and never leaves the machine; the server
//! is trusted by the SHA-256 of its CA certificate, given once with the join token.
//! Also the JSON-line framing both ends of the cluster port use.

use hearth_model::cluster::{
    self, decode, encode, AgentMessage, NodeOffer, ServerMessage, TaskRef, MAX_FRAME, SERVER_NAME,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long connecting, the TLS handshake and the server's first answer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Reads one line-delimited message into `buf` (with its newline, which JSON decoding
/// ignores). False at a clean end of stream; an error for a line longer than [`MAX_FRAME`]
/// or a stream cut mid-line.
///
/// Cancel-safe, so it can be one branch of a `select!`: a call dropped in the middle of a
/// line leaves what it read in `buf` (no newline yet), and the next call with the same
/// `buf` goes on from there; only a complete line (ending in a newline) is cleared first.
pub async fn read_frame<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
    if buf.last() == Some(&b'\n') {
        buf.clear();
    }
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return if buf.is_empty() {
                Ok(false)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed in the middle of a message",
                ))
            };
        }
        let (take, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if buf.len() + take >= MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message longer than {} KiB", MAX_FRAME / 1024),
            ));
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(if done { take + 1 } else { take });
        if done {
            buf.push(b'\n');
            return Ok(true);
        }
    }
}

/// Writes one message as a line.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> io::Result<()> {
    let line = encode(msg).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "a message over the size limit")
    })?;
    w.write_all(&line).await?;
    w.flush().await
}

/// Why the agent stopped.
#[derive(Debug)]
pub enum AgentError {
    /// The server said no; retrying would not help.
    Refused(String),
    /// Bad flags or files, or a server that is not the one pinned; retrying would not help.
    Fatal(String),
    /// The network or the server is away for now: worth trying again.
    Transient(String),
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::Refused(r) => write!(f, "the server refused this node: {r}"),
            AgentError::Fatal(r) | AgentError::Transient(r) => f.write_str(r),
        }
    }
}

/// What `hearth agent` was told.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// HOST:PORT of the server's cluster port; remembered after joining.
    pub server: Option<String>,
    pub token: Option<String>,
    pub ca_sha256: Option<String>,
    pub data_dir: PathBuf,
    pub offer: NodeOffer,
    /// How tasks' shims are started (this binary's `internal shim`).
    pub shim: crate::sandbox::ShimCommand,
    pub network: crate::net::NetworkMode,
}

/// What a joined agent keeps in DATA_DIR/node.json (its key and certificate are beside).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Joined {
    server: String,
    ca_sha256: String,
    name: String,
}

/// Parses a `--ca-sha256` pin: 64 hex digits (colons, as some tools print them, allowed).
pub fn parse_pin(s: &str) -> Result<[u8; 32], String> {
    let clean: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(clean.to_ascii_lowercase()).ok();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            "--ca-sha256: write the 64 hex digits `hearth node token create` printed".to_string()
        })
}

fn check_server(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!(
            "--server {s}: write HOST:PORT of the server's cluster port, e.g. 10.0.0.1:7070"
        )),
    }
}

/// Trusts exactly the server whose chain holds the pinned CA, and only a certificate that
/// CA made for Hearth's cluster port (not, say, another node's certificate).
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's CA does not match --ca-sha256: this is not the Hearth server \
                     the join command was made for (check the address and the pin)"
                        .into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the pinned CA is unusable: {e}")))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("the pinned CA is unusable: {e}")))?;
        let name =
            ServerName::try_from(SERVER_NAME).map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client config that pins the CA and, once joined, presents the node's certificate.
pub fn client_config(
    pin: [u8; 32],
    identity: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin, provider }));
    let cfg = match identity {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the node certificate is unreadable: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| format!("the node key is unreadable: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the node certificate and key do not go together: {e}"))?
        }
    };
    Ok(Arc::new(cfg))
}

type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// Explains a failed connection, and whether trying again could help.
fn connect_error(server: &str, e: io::Error) -> AgentError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::General(why)) => AgentError::Fatal(why.clone()),
        Some(rustls::Error::InvalidCertificate(why)) => AgentError::Fatal(format!(
            "the server at {server} has a certificate the pinned CA did not make for Hearth's cluster port ({why:?})"
        )),
        Some(rustls::Error::AlertReceived(alert)) => AgentError::Fatal(format!(
            "the server at {server} refused this node's certificate during the TLS handshake ({alert:?}): \
             was it issued by another Hearth? Join again with a token from this server"
        )),
        _ => AgentError::Transient(format!("cannot reach the server at {server}: {e}")),
    }
}

/// Connects and shakes hands, within [`CONNECT_TIMEOUT`].
pub async fn dial(server: &str, cfg: Arc<rustls::ClientConfig>) -> Result<Stream, AgentError> {
    let go = async {
        let tcp = TcpStream::connect(server).await.map_err(|e| {
            AgentError::Transient(format!("cannot reach the server at {server}: {e}"))
        })?;
        let _ = tcp.set_nodelay(true);
        let name =
            ServerName::try_from(SERVER_NAME).map_err(|e| AgentError::Fatal(e.to_string()))?;
        tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|e| connect_error(server, e))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, go)
        .await
        .unwrap_or_else(|_| {
            Err(AgentError::Transient(format!(
                "the server at {server} did not answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )))
        })
}

/// The next message from the server. A refusal is an error, so callers see it whatever
/// they were waiting for.
async fn next_message<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<ServerMessage, AgentError> {
    match read_frame(r, buf).await {
        // With TLS 1.3 the server checks a client certificate after the client thinks the
        // handshake is done: its refusal arrives here, as an alert.
        Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(alert)) => Err(AgentError::Fatal(format!(
                "the server refused this node's certificate during the TLS handshake ({alert:?}): \
                 was it issued by another Hearth? Join again with a token from this server"
            ))),
            _ => Err(AgentError::Transient(format!("the connection broke: {e}"))),
        },
        Ok(false) => Err(AgentError::Transient(
            "the server closed the connection".into(),
        )),
        Ok(true) => match decode::<ServerMessage>(buf) {
            Ok(ServerMessage::Refused { reason }) => Err(AgentError::Refused(reason)),
            Ok(m) => Ok(m),
            Err(e) => Err(AgentError::Transient(format!("the server sent {e}"))),
        },
    }
}

/// One message from the server, within `wait`.
async fn receive<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    wait: Duration,
) -> Result<ServerMessage, AgentError> {
    tokio::time::timeout(wait, next_message(r, buf))
        .await
        .unwrap_or_else(|_| {
            Err(AgentError::Transient(format!(
                "the server did not answer within {}s",
                wait.as_secs()
            )))
        })
}

/// Proves the join token and returns the certificate (PEM) the server made for `key`.
pub async fn join(
    server: &str,
    pin: [u8; 32],
    token: &str,
    key: &rcgen::KeyPair,
    offer: &NodeOffer,
) -> Result<String, AgentError> {
    let stream = dial(server, client_config(pin, None).map_err(AgentError::Fatal)?).await?;
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let msg = AgentMessage::Join {
        token: token.trim().to_string(),
        public_key: hex::encode(key.public_key_raw()),
        offer: offer.clone(),
    };
    write_frame(&mut w, &msg)
        .await
        .map_err(|e| AgentError::Transient(format!("sending the join request: {e}")))?;
    let mut buf = Vec::new();
    match receive(&mut r, &mut buf, CONNECT_TIMEOUT).await? {
        ServerMessage::Joined { certificate, .. } => Ok(certificate),
        other => Err(AgentError::Transient(format!(
            "the server answered the join with {other:?}"
        ))),
    }
}

/// A node's connection, once the server has welcomed it. A task reads what the server
/// says, so a refusal (the node was removed) is seen at once, even between heartbeats.
pub struct Session {
    incoming: tokio::sync::mpsc::Receiver<Result<ServerMessage, AgentError>>,
    reader: tokio::task::JoinHandle<()>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// The interval the server asked for.
    pub heartbeat: Duration,
    /// The node's name, as its certificate says.
    pub name: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Session {
    /// Connects with the node's certificate and says what the node offers.
    pub async fn open(
        server: &str,
        cfg: Arc<rustls::ClientConfig>,
        offer: &NodeOffer,
    ) -> Result<Session, AgentError> {
        let stream = dial(server, cfg).await?;
        Session::over(stream, offer).await
    }

    /// Says what the node offers on a connection already made (mutual TLS to a server, or
    /// the in-process stream of `hearth up`'s own node) and waits for the welcome.
    pub async fn over<S>(stream: S, offer: &NodeOffer) -> Result<Session, AgentError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, writer) = tokio::io::split(stream);
        let mut writer: Box<dyn AsyncWrite + Send + Unpin> = Box::new(writer);
        let mut reader = BufReader::new(r);
        write_frame(
            &mut writer,
            &AgentMessage::Hello {
                offer: offer.clone(),
            },
        )
        .await
        .map_err(|e| AgentError::Transient(format!("sending hello: {e}")))?;
        let mut buf = Vec::new();
        let (name, heartbeat_ms) = match receive(&mut reader, &mut buf, CONNECT_TIMEOUT).await? {
            ServerMessage::Welcome { name, heartbeat_ms } => (name, heartbeat_ms),
            other => {
                return Err(AgentError::Transient(format!(
                    "the server answered hello with {other:?}"
                )))
            }
        };
        let (tx, incoming) = tokio::sync::mpsc::channel(16);
        let reader = tokio::spawn(async move {
            loop {
                let got = next_message(&mut reader, &mut buf).await;
                let last = got.is_err();
                if tx.send(got).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Session {
            incoming,
            reader,
            writer,
            heartbeat: Duration::from_millis(heartbeat_ms.max(100)),
            name,
        })
    }

    /// The next message, within `wait` (None when it passed).
    async fn next(&mut self, wait: Duration) -> Option<Result<ServerMessage, AgentError>> {
        match tokio::time::timeout(wait, self.incoming.recv()).await {
            Err(_) => None,
            Ok(None) => Some(Err(AgentError::Transient(
                "the server closed the connection".into(),
            ))),
            Ok(Some(m)) => Some(m),
        }
    }

    /// Sends one heartbeat and waits for its acknowledgement; returns the round trip.
    pub async fn heartbeat(&mut self, seq: u64) -> Result<Duration, AgentError> {
        let began = Instant::now();
        write_frame(
            &mut self.writer,
            &AgentMessage::Heartbeat { seq, machine: None },
        )
        .await
        .map_err(|e| AgentError::Transient(format!("the connection broke: {e}")))?;
        let deadline = began + (self.heartbeat * 3).max(CONNECT_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                None => {
                    return Err(AgentError::Transient(format!(
                        "the server did not acknowledge a heartbeat within {}s",
                        (deadline - began).as_secs()
                    )))
                }
                Some(Ok(ServerMessage::Ack { seq: s })) if s == seq => return Ok(began.elapsed()),
                // An ack of an earlier beat that came late: keep waiting for ours.
                Some(Ok(ServerMessage::Ack { .. })) => continue,
                Some(Ok(other)) => {
                    return Err(AgentError::Transient(format!(
                        "the server sent {other:?} instead of an acknowledgement"
                    )))
                }
                Some(Err(e)) => return Err(e),
            }
        }
    }

    /// Waits `d` between heartbeats, returning early if the server refuses the node or the
    /// connection breaks.
    pub async fn idle(&mut self, d: Duration) -> Result<(), AgentError> {
        let until = Instant::now() + d;
        loop {
            match self
                .next(until.saturating_duration_since(Instant::now()))
                .await
            {
                None => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
            }
        }
    }
}

fn io_fatal(what: &str, path: &Path, e: io::Error) -> AgentError {
    AgentError::Fatal(format!("{what} {}: {e}", path.display()))
}

/// Writes a file readable only by its owner, all at once (a temporary name, then renamed).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_fatal("creating", &tmp, e))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_fatal("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_fatal("writing", path, e))
}

/// The node's private key: made once, here, and kept at DATA_DIR/node.key (0600).
fn load_or_make_key(path: &Path) -> Result<rcgen::KeyPair, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| AgentError::Fatal(format!("{} is not a usable key: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate()
                .map_err(|e| AgentError::Fatal(format!("making the node key: {e}")))?;
            write_private(path, key.serialize_pem().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(io_fatal("reading", path, e)),
    }
}

/// Runs the agent until the server refuses it (or a fatal error). Joins first when this
/// data dir holds no certificate yet; then reconnects for ever, backing off, on failures
/// that might pass.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    cluster::check_node_name(&cfg.offer.name).map_err(AgentError::Fatal)?;
    // Said once at start, like the server does: a node that cannot isolate runs its tasks
    // without namespaces or cgroup limits (e.g. under `ip netns exec`, whose fresh /sys
    // hides the cgroup mounts).
    let isolation = crate::sandbox::probe();
    if !isolation.enabled {
        eprintln!(
            "WARNING: isolation is OFF on this node. Jobs of different users are not separated:"
        );
        for p in &isolation.problems {
            eprintln!("  - {p}");
        }
    }
    // Tasks reach the server by its address, as anything outside this machine.
    let network = crate::net::node_network(&cfg.network, isolation.enabled, Vec::new())
        .map_err(AgentError::Fatal)?;
    if network.is_none() && isolation.enabled {
        eprintln!("WARNING: --insecure-shared-network: every task here shares this machine's network; a user's job reaches what any other task listens on");
    }
    let _ = tokio::task::spawn_blocking(crate::sandbox::sweep_stale_tasks).await;
    let key_path = cfg.data_dir.join("node.key");
    let cert_path = cfg.data_dir.join("node.pem");
    let state_path = cfg.data_dir.join("node.json");
    let joined: Option<Joined> = match std::fs::read(&state_path) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
            AgentError::Fatal(format!(
                "{} is damaged ({e}): remove the data dir and join again",
                state_path.display()
            ))
        })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_fatal("reading", &state_path, e)),
    };
    let server = cfg
        .server
        .clone()
        .or_else(|| joined.as_ref().map(|j| j.server.clone()))
        .ok_or_else(|| {
            AgentError::Fatal("pass --server HOST:PORT (the join command has it)".into())
        })?;
    check_server(&server).map_err(AgentError::Fatal)?;
    let pin_hex = cfg
        .ca_sha256
        .clone()
        .or_else(|| joined.as_ref().map(|j| j.ca_sha256.clone()))
        .ok_or_else(|| {
            AgentError::Fatal("pass --ca-sha256 HEX (the join command has it)".into())
        })?;
    let pin = parse_pin(&pin_hex).map_err(AgentError::Fatal)?;
    if joined.is_none() {
        match cfg.token.as_deref() {
            None => {
                return Err(AgentError::Fatal(
                    "this data dir has not joined a server yet: pass --token (from `hearth node token create`)"
                        .into(),
                ))
            }
            Some(t) => {
                cluster::parse_join_token(t).map_err(AgentError::Fatal)?;
            }
        }
    }
    // Only now, with every flag checked, does anything get written: into a data dir the
    // tasks' uids can reach, on a file system with room.
    crate::preflight::check(&cfg.data_dir, isolation.enabled).map_err(AgentError::Fatal)?;
    crate::preflight::create_data_dir(&cfg.data_dir).map_err(AgentError::Fatal)?;
    // Traversable, not listable: tasks reach their workspaces under it by their own uid;
    // the key and certificate inside stay 0600.
    std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| io_fatal("securing", &cfg.data_dir, e))?;
    let key = load_or_make_key(&key_path)?;

    let mut offer = cfg.offer.clone();
    let mut problems = isolation.problems.clone();
    if isolation.enabled && network.is_none() {
        problems.push(crate::net::SHARED_NETWORK_PROBLEM.to_string());
    }
    offer.isolation_problems = Some(problems);
    // Read at start: mount the server's workspaces here before starting the agent.
    offer.workspace_mark = std::fs::read_to_string(
        cfg.data_dir
            .join("workspaces")
            .join(cluster::WORKSPACE_MARK),
    )
    .ok()
    .map(|s| s.trim().to_string());
    let cert_pem = match (&joined, std::fs::read_to_string(&cert_path)) {
        (Some(j), Ok(pem)) => {
            if cfg.token.is_some() {
                eprintln!(
                    "hearth agent: {} already joined as node {}; the token is not needed (an empty --data-dir joins anew)",
                    cfg.data_dir.display(),
                    j.name
                );
            }
            // The certificate names the node; a different --name would not be believed.
            offer.name = j.name.clone();
            pem
        }
        _ => {
            let token = cfg.token.as_deref().ok_or_else(|| {
                AgentError::Fatal(
                    "this data dir has not joined a server yet: pass --token (from `hearth node token create`)"
                        .into(),
                )
            })?;
            cluster::parse_join_token(token).map_err(AgentError::Fatal)?;
            // A server that is away (or slow) is waited for; a refusal is final.
            let mut backoff = Duration::from_secs(1);
            let pem = loop {
                match join(&server, pin, token, &key, &offer).await {
                    Ok(pem) => break pem,
                    Err(AgentError::Transient(why)) => {
                        eprintln!(
                            "hearth agent: could not join {server} yet: {why}; retrying in {}s",
                            backoff.as_secs()
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => return Err(e),
                }
            };
            write_private(&cert_path, pem.as_bytes())?;
            let state = Joined {
                server: server.clone(),
                ca_sha256: hex::encode(pin),
                name: offer.name.clone(),
            };
            let json = serde_json::to_vec_pretty(&state)
                .map_err(|e| AgentError::Fatal(format!("saving the node state: {e}")))?;
            write_private(&state_path, &json)?;
            eprintln!(
                "hearth agent: joined {server} as node {}; certificate in {}",
                offer.name,
                cert_path.display()
            );
            pem
        }
    };
    let tls =
        client_config(pin, Some((&cert_pem, &key.serialize_pem()))).map_err(AgentError::Fatal)?;

    offer.data_dir = Some(cfg.data_dir.display().to_string());
    let runtime_root = offer.runtime.as_ref().map(|r| PathBuf::from(&r.root));
    // Tasks' Spark UIs listen on loopback ports this node keeps for itself (the door
    // reaches them through the connection); its own nftables table, named for its data dir.
    let ports = if isolation.enabled {
        crate::portguard::PortGuard::new(&crate::portguard::agent_instance(&cfg.data_dir))
            .map(Arc::new)
    } else {
        Err("isolation is off".to_string())
    };
    if let (true, Err(why)) = (isolation.enabled, &ports) {
        eprintln!("WARNING: jobs here run without Spark UIs: their ports cannot be kept from other users ({why})");
    }
    if let Ok(guard) = &ports {
        // The agent's own life: it checks while it runs.
        tokio::spawn(crate::portguard::keep_guarded(
            Arc::downgrade(guard),
            std::future::pending(),
        ));
    }
    let (runner, mut outgoing) = crate::remote::Runner::new(
        cfg.data_dir.clone(),
        cfg.data_dir.join("cache"),
        isolation.enabled,
        cfg.shim.clone(),
        runtime_root,
        ports,
        network,
    );
    // What an earlier run of this agent started and still runs (its shims outlive it).
    runner.reattach();
    let mut backoff = Duration::from_secs(1);
    // Retries come at least once a heartbeat interval, so a server that comes back hears
    // from its nodes within its node timeout (it loses their jobs after that).
    let mut max_backoff = Duration::from_secs(10);
    // Kept across connections, its first reading taken now: heartbeats carry a CPU figure
    // (averaged over at least a second) from a second after start, reconnections included.
    let mut meter = crate::machine::Meter::new();
    meter.measure();
    loop {
        let err = match Session::open(&server, tls.clone(), &offer).await {
            Ok(mut s) => {
                eprintln!(
                    "hearth agent: connected to {server} as node {}; heartbeat every {} ms",
                    s.name,
                    s.heartbeat.as_millis()
                );
                backoff = Duration::from_secs(1);
                max_backoff = s.heartbeat.clamp(Duration::from_secs(1), max_backoff);
                let err = serve(&mut s, &runner, &mut outgoing, &mut meter).await;
                runner.disconnected();
                err
            }
            Err(e) => e,
        };
        match err {
            AgentError::Transient(why) => {
                eprintln!(
                    "hearth agent: lost the server at {server}: {why}; retrying in {}s",
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
            fatal => return Err(fatal),
        }
    }
}

/// One connection's life: heartbeats, the server's requests (tasks, file parts) and what
/// the node's tasks say, until the connection fails. The same for a joined node's
/// mutual-TLS connection and for the in-process node of `hearth up`.
pub async fn serve(
    s: &mut Session,
    runner: &Arc<crate::remote::Runner>,
    outgoing: &mut tokio::sync::mpsc::UnboundedReceiver<AgentMessage>,
    meter: &mut crate::machine::Meter,
) -> AgentError {
    let mut seq = 0u64;
    let mut beat = tokio::time::interval(s.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let patience = (s.heartbeat * 3).max(CONNECT_TIMEOUT);
    let mut last_ack = Instant::now();
    // First what the node holds: the server adopts it, or tells the node to forget it.
    if let Err(e) = write_frame(&mut s.writer, &runner.connected()).await {
        return AgentError::Transient(format!("the connection broke: {e}"));
    }
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if last_ack.elapsed() > patience {
                    return AgentError::Transient(format!(
                        "the server acknowledged no heartbeat for {}s",
                        patience.as_secs()
                    ));
                }
                seq += 1;
                let hb = AgentMessage::Heartbeat { seq, machine: meter.measure() };
                if let Err(e) = write_frame(&mut s.writer, &hb).await {
                    return AgentError::Transient(format!("the connection broke: {e}"));
                }
            }
            got = s.incoming.recv() => match got {
                None => return AgentError::Transient("the server closed the connection".into()),
                Some(Err(e)) => return e,
                Some(Ok(msg)) => match msg {
                    ServerMessage::Ack { .. } => last_ack = Instant::now(),
                    ServerMessage::StartTask(task) => runner.start(*task),
                    ServerMessage::StopTask { job, attempt, grace_ms } => {
                        runner.stop(job, attempt, Duration::from_millis(grace_ms))
                    }
                    ServerMessage::Resume { job, attempt, offset } => {
                        runner.resume(TaskRef { job, attempt }, offset)
                    }
                    ServerMessage::Logged { job, attempt, offset } => {
                        runner.logged(TaskRef { job, attempt }, offset)
                    }
                    ServerMessage::Forget { job, attempt, grace_ms } => {
                        runner.forget(TaskRef { job, attempt }, Duration::from_millis(grace_ms))
                    }
                    ServerMessage::Open { stream, job, attempt } => {
                        runner.open(stream, TaskRef { job, attempt })
                    }
                    ServerMessage::Tunnel(frame) => runner.tunnel(frame),
                    ServerMessage::Chunk { sha256, offset, data, eof, error } => {
                        let data = match error {
                            Some(why) => Err(why),
                            None => hex::decode(&data).map_err(|e| format!("a malformed part ({e})")),
                        };
                        runner.deliver(&sha256, offset, crate::remote::Chunk { data, eof });
                    }
                    other => tracing::warn!("the server sent {other:?} mid-session; ignored"),
                },
            },
            msg = outgoing.recv() => {
                let Some(msg) = msg else {
                    return AgentError::Fatal("the node's task queue closed".into());
                };
                // What fails to go out is not lost: output and ends are sent again, from
                // the server's own offsets, on the next connection.
                if let Err(e) = write_frame(&mut s.writer, &msg).await {
                    return AgentError::Transient(format!("the connection broke: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_lines_and_long_ones_are_refused() {
        let data = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
        let mut r = BufReader::new(&data[..]);
        let mut buf = Vec::new();
        assert!(read_frame(&mut r, &mut buf).await.expect("first"));
        assert_eq!(buf, b"{\"a\":1}\n");
        assert!(read_frame(&mut r, &mut buf).await.expect("second"));
        assert!(!read_frame(&mut r, &mut buf).await.expect("end"));
        let long = vec![b'x'; MAX_FRAME + 10];
        let mut r = BufReader::new(&long[..]);
        let err = read_frame(&mut r, &mut buf).await.expect_err("too long");
        assert!(err.to_string().contains("longer than 64 KiB"), "{err}");
        let cut = b"{\"a\"".to_vec();
        let mut r = BufReader::new(&cut[..]);
        assert!(read_frame(&mut r, &mut buf).await.is_err());
    }

    #[tokio::test]
    async fn a_read_cancelled_mid_line_goes_on_where_it_stopped() {
        // A line arriving in two parts, the read dropped in between (as a `select!` does
        // when another branch is ready): nothing of the line is lost.
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut r = BufReader::new(rx);
        let mut buf = Vec::new();
        tx.write_all(b"{\"type\":\"heart").await.expect("write");
        let cut = tokio::time::timeout(Duration::from_millis(50), read_frame(&mut r, &mut buf));
        assert!(cut.await.is_err(), "no whole line yet");
        tx.write_all(b"beat\",\"seq\":7}\n{\"type\":\"heartbeat\",\"seq\":8}\n")
            .await
            .expect("write");
        for seq in [7, 8] {
            assert!(read_frame(&mut r, &mut buf).await.expect("a line"));
            assert_eq!(
                decode::<AgentMessage>(&buf),
                Ok(AgentMessage::Heartbeat { seq, machine: None })
            );
        }
    }

    #[test]
    fn pins_and_servers_are_checked() {
        assert!(parse_pin(&"ab".repeat(32)).is_ok());
        assert!(parse_pin(&"AB:".repeat(32)).is_ok());
        assert!(parse_pin("abc").is_err());
        assert!(check_server("10.0.0.1:7070").is_ok());
        assert!(check_server("10.0.0.1").is_err());
        assert!(check_server(":7070").is_err());
    }
}
