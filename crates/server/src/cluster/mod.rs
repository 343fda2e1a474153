//! The cluster port: where `hearth agent`s join and then keep one mutual-TLS connection
//! each. A connection without a client certificate may only join (prove a join token, get
//! a certificate); every other one must present a certificate from Hearth's CA that belongs
//! to a node that was not removed. Heartbeats are kept in memory and written to the store
//! every few seconds, so a thousand nodes cost little.

pub mod local;

use crate::store::{now_ms, NodeRow};
use crate::tls::{cert_sha256, ClusterTls};
use hearth_agent::node::{read_frame, write_frame};
use hearth_model::cluster::{
    self, decode, heartbeat_interval_ms, node_state, AgentMessage, MachineUse, NodeOffer,
    NodeRuntime, NodeState, ServerMessage, TaskRef, CHUNK_BYTES,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;

/// How long a new connection may take to shake hands and say what it wants.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often heartbeats held in memory are written to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// The most labels a node may report.
const MAX_LABELS: usize = 64;

/// Where a node's answer to an `Open` goes: None, connected; else why not.
type Answer = tokio::sync::oneshot::Sender<Option<String>>;

/// What the server does with what nodes say of their tasks: the jobs' side of the
/// protocol (`jobs::remote::NodeTasks`). The registry carries the messages and decides
/// nothing about jobs; it is handed this once the server is assembled.
pub trait TaskEvents: Send + Sync {
    /// A task's process runs, its Spark UI on `ui_port` of the node.
    fn started(&self, node_id: i64, job: i64, attempt: u32, ui_port: Option<u16>);
    /// What a node holds, first on each of its connections.
    fn report(&self, node_id: i64, node: &str, conn: u64, tasks: &[TaskRef]);
    /// Lines of a task's log, the bytes `bytes` of the node's copy.
    fn output(
        &self,
        node_id: i64,
        node: &str,
        task: TaskRef,
        bytes: std::ops::Range<u64>,
        lines: &[String],
    );
    /// A task ended, or could not start.
    #[allow(clippy::too_many_arguments)]
    fn ended(
        &self,
        node_id: i64,
        node: &str,
        job: i64,
        attempt: u32,
        exit: hearth_agent::sandbox::TaskExit,
        error: Option<String>,
    );
}

/// The cluster port's state, shared with the API.
pub struct Cluster {
    events: std::sync::OnceLock<Arc<dyn TaskEvents>>,
    pub tls: ClusterTls,
    /// Where the cluster port listens; None when it is off (`hearth up` still has its
    /// in-process node).
    pub addr: Option<SocketAddr>,
    /// A node whose last heartbeat is older than this is down.
    pub node_timeout: Duration,
    live: Mutex<HashMap<i64, Live>>,
    next_conn: AtomicU64,
    /// Jobs running on joined nodes, by job: which node and attempt the server waits on.
    tasks: Mutex<HashMap<i64, RemoteTask>>,
    /// The workers of spread jobs (a standalone cluster of their own) on joined nodes
    /// other than the driver's, by (job, node id): their output goes into the job's log,
    /// their end is not the job's.
    workers: Mutex<HashMap<(i64, i64), RemoteTask>>,
    /// This server's address as joined nodes reach it (the local end of their
    /// connections): where the local node's part of a spread job is reached.
    server_ip: Mutex<Option<IpAddr>>,
    /// When this server started: every node gets a node timeout from then to report the
    /// jobs it runs before they count as lost.
    pub started_ms: i64,
    /// Streams asked of nodes and not yet answered, by id, with the node asked: only that
    /// node's answer goes to the waiter.
    opening: Mutex<HashMap<u64, (i64, Answer)>>,
    next_stream: AtomicU64,
}

/// A connected node.
struct Live {
    conn: u64,
    name: String,
    last_heartbeat_ms: i64,
    /// Cuts the connection (the node was removed).
    kick: Arc<tokio::sync::Notify>,
    /// Messages for the node, written by its connection's task.
    tx: tokio::sync::mpsc::UnboundedSender<ServerMessage>,
    /// Where the node keeps its runtime and its tasks; a node without both runs no jobs.
    paths: Option<NodePaths>,
    /// The node's address as the server sees it: where Spark's traffic reaches it.
    ip: IpAddr,
    /// What the node said about itself on this connection (isolation, workspaces).
    offer: NodeOffer,
    /// The server's own machine, connected in process (`hearth up`).
    in_process: bool,
    /// Byte streams to its tasks' web servers (the door's), carried on this connection.
    tunnels: Arc<hearth_agent::tunnel::Tunnels>,
    /// The node's machine as its last heartbeat measured it (memory only: it is stale by
    /// the next heartbeat, so it is never stored).
    machine: Option<MachineUse>,
}

/// What a connected node said about itself that the admin should see.
#[derive(Debug, Clone, Default)]
pub struct NodeReport {
    /// Why its tasks would run without isolation (empty: isolated); None: not said.
    pub isolation_problems: Option<Vec<String>>,
    /// Whether its workspaces are the server's own (a shared mount).
    pub shared_workspace: bool,
}

/// Where things are on a node, as it reported them.
#[derive(Debug, Clone)]
pub struct NodePaths {
    pub runtime: NodeRuntime,
    pub data_dir: std::path::PathBuf,
}

/// An attempt of a job on a joined node, as the server knows it.
#[derive(Debug, Clone)]
pub struct RemoteTask {
    pub node_id: i64,
    pub node: String,
    pub attempt: u32,
    /// The blobs this task may fetch (the job's files), by SHA-256.
    pub files: std::collections::HashSet<String>,
    /// The node's connection the task was sent on (set by [`Cluster::start_task`]), or
    /// that the node reported it on; 0 for a task restored at a restart, not yet reported.
    pub conn: u64,
    /// How far into the node's log of the task the server's log holds its output; None
    /// until known (after a restart, read back when the node reports the task).
    pub logged: Option<u64>,
}

impl Cluster {
    pub fn new(tls: ClusterTls, addr: Option<SocketAddr>, node_timeout: Duration) -> Cluster {
        Cluster {
            events: std::sync::OnceLock::new(),
            tls,
            addr,
            node_timeout,
            live: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            tasks: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            server_ip: Mutex::new(None),
            started_ms: now_ms(),
            opening: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(1),
        }
    }

    /// Hands the registry what to do with nodes' task messages (once, at start).
    pub fn set_events(&self, events: Arc<dyn TaskEvents>) {
        let _ = self.events.set(events);
    }

    fn events(&self) -> Option<&Arc<dyn TaskEvents>> {
        self.events.get()
    }

    /// A byte stream to the Spark UI of `job`'s `attempt` on `node`, carried over the
    /// node's connection (the door's way to a joined node's loopback). The node connects
    /// only to a port it guards with the task's uid listening; Err says why not.
    pub async fn open_tunnel(
        &self,
        node: &str,
        job: i64,
        attempt: u32,
    ) -> Result<tokio::io::DuplexStream, String> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = tokio::sync::oneshot::channel();
        // The stream is ours before the node is asked: whatever it sends right after its
        // answer (even a close at once) finds it.
        let (door, tunnel) = tokio::io::duplex(64 * 1024);
        let tunnels = {
            let live = self.live();
            let (node_id, l) = live
                .iter()
                .find(|(_, l)| l.name == node)
                .ok_or_else(|| format!("node {node} is not connected"))?;
            if !l.tunnels.attach(stream, tunnel) {
                return Err("a stream with that id is open already".into());
            }
            self.opening
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(stream, (*node_id, answer));
            if l.tx
                .send(ServerMessage::Open {
                    stream,
                    job,
                    attempt,
                })
                .is_err()
            {
                l.tunnels.abort(stream);
                return Err(format!("node {node} is not connected"));
            }
            l.tunnels.clone()
        };
        let got = tokio::time::timeout(Duration::from_secs(10), answered).await;
        self.opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&stream);
        match got {
            Ok(Ok(None)) => Ok(door),
            Ok(Ok(Some(why))) => {
                tunnels.abort(stream);
                Err(why)
            }
            _ => {
                // Told to the node too: a stream it opens late is closed at once.
                tunnels.abort(stream);
                Err(format!("node {node} did not answer within 10 s"))
            }
        }
    }

    /// A node's answer to an `Open`; an answer from another node than the one asked is
    /// ignored.
    fn opened(&self, node_id: i64, stream: u64, error: Option<String>) {
        let mut opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if opening
            .get(&stream)
            .is_some_and(|(asked, _)| *asked == node_id)
        {
            if let Some((_, w)) = opening.remove(&stream) {
                let _ = w.send(error);
            }
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RemoteTask>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nodes connected now that can run jobs (they reported a runtime), by id.
    pub fn job_ready(&self) -> HashMap<i64, NodePaths> {
        self.live()
            .iter()
            .filter_map(|(id, l)| l.paths.clone().map(|p| (*id, p)))
            .collect()
    }

    /// The paths of a connected node, by name.
    pub fn paths(&self, node: &str) -> Option<(i64, NodePaths)> {
        self.live()
            .iter()
            .find(|(_, l)| l.name == node)
            .and_then(|(id, l)| l.paths.clone().map(|p| (*id, p)))
    }

    /// Sends a message to a connected node; false if it is not connected.
    pub fn send(&self, node_id: i64, msg: ServerMessage) -> bool {
        self.live()
            .get(&node_id)
            .is_some_and(|l| l.tx.send(msg).is_ok())
    }

    /// Sends a task to its node and waits for it there; false if the node is not
    /// connected (then nothing is waited for).
    pub fn start_task(&self, job: i64, mut task: RemoteTask, msg: ServerMessage) -> bool {
        let live = self.live();
        let Some(l) = live.get(&task.node_id) else {
            return false;
        };
        task.conn = l.conn;
        // Tracked before the node can answer, so that its first report finds the task.
        self.tasks().insert(job, task.clone());
        if l.tx.send(msg).is_err() {
            self.tasks().remove(&job);
            return false;
        }
        true
    }

    /// Waits for a task that was running when the server restarted, until its node reports
    /// it (or goes down).
    pub fn restore(&self, job: i64, task: RemoteTask) {
        self.tasks().insert(job, task);
    }

    /// The node reported the task on connection `conn`: if it is the attempt the server
    /// waits on, it is adopted (what the server's log holds of it returned, if known).
    pub fn adopt(&self, job: i64, node_id: i64, attempt: u32, conn: u64) -> Option<Option<u64>> {
        let mut tasks = self.tasks();
        let t = tasks
            .get_mut(&job)
            .filter(|t| t.node_id == node_id && t.attempt == attempt)?;
        t.conn = conn;
        Some(t.logged)
    }

    /// The jobs the server waits for on `node_id` that were sent before connection `conn`
    /// and that the node did not report on it: it never got them, or (true beside the job:
    /// waited for since a restart of the server) its processes were gone meanwhile.
    pub fn unreported(&self, node_id: i64, conn: u64, reported: &[TaskRef]) -> Vec<(i64, bool)> {
        self.tasks()
            .iter()
            .filter(|(job, t)| {
                t.node_id == node_id
                    && t.conn != conn
                    && !reported
                        .iter()
                        .any(|r| r.job == **job && r.attempt == t.attempt)
            })
            .map(|(job, t)| (*job, t.conn == 0))
            .collect()
    }

    /// What the server's log holds of the task's output (an offset in the node's log).
    pub fn logged(&self, job: i64, node_id: i64, attempt: u32) -> Option<u64> {
        self.tasks()
            .get(&job)
            .filter(|t| t.node_id == node_id && t.attempt == attempt)
            .and_then(|t| t.logged)
    }

    pub fn set_logged(&self, job: i64, node_id: i64, attempt: u32, offset: u64) {
        if let Some(t) = self
            .tasks()
            .get_mut(&job)
            .filter(|t| t.node_id == node_id && t.attempt == attempt)
        {
            t.logged = Some(offset);
        }
    }

    /// Whether the server follows any task (a job's or a spread job's worker) on `node_id`.
    pub fn holds_tasks(&self, node_id: i64) -> bool {
        self.tasks().values().any(|t| t.node_id == node_id)
            || self.workers().keys().any(|(_, n)| *n == node_id)
    }

    /// The attempt of `job` the server waits for, if it runs on a joined node.
    pub fn task(&self, job: i64) -> Option<RemoteTask> {
        self.tasks().get(&job).cloned()
    }

    /// Whether `node_id` runs the attempt of `job` the server waits for.
    pub fn is_current(&self, job: i64, node_id: i64, attempt: u32) -> bool {
        self.tasks()
            .get(&job)
            .is_some_and(|t| t.node_id == node_id && t.attempt == attempt)
    }

    /// Stops waiting for `job` on `node_id`'s `attempt` (any node and attempt with None):
    /// true if the server was waiting for it. Only one caller ever gets true, so an end is
    /// recorded once even if a lost node reports late.
    pub fn untrack(&self, job: i64, only: Option<(i64, u32)>) -> bool {
        let mut tasks = self.tasks();
        let current = tasks
            .get(&job)
            .is_some_and(|t| only.is_none_or(|(n, a)| t.node_id == n && t.attempt == a));
        if current {
            tasks.remove(&job);
        }
        current
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, i64), RemoteTask>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a spread job's worker to its node and follows it there; false if the node is
    /// not connected.
    pub fn start_worker(&self, job: i64, mut task: RemoteTask, msg: ServerMessage) -> bool {
        let live = self.live();
        let Some(l) = live.get(&task.node_id) else {
            return false;
        };
        task.conn = l.conn;
        let key = (job, task.node_id);
        self.workers().insert(key, task);
        if l.tx.send(msg).is_err() {
            self.workers().remove(&key);
            return false;
        }
        true
    }

    /// Every worker followed: (job, node id, attempt).
    pub fn worker_keys(&self) -> Vec<(i64, i64, u32)> {
        self.workers()
            .iter()
            .map(|((job, node), w)| (*job, *node, w.attempt))
            .collect()
    }

    /// Follows a worker that was running when the server restarted.
    pub fn restore_worker(&self, job: i64, task: RemoteTask) {
        self.workers().insert((job, task.node_id), task);
    }

    /// Whether `node_id`'s `attempt` of `job` is one of the job's workers; if so, what the
    /// server's log holds of its output (None: not known yet), and the connection it is
    /// now reported on, if `conn` is given.
    pub fn worker(
        &self,
        job: i64,
        node_id: i64,
        attempt: u32,
        conn: Option<u64>,
    ) -> Option<Option<u64>> {
        let mut workers = self.workers();
        let w = workers
            .get_mut(&(job, node_id))
            .filter(|w| w.attempt == attempt)?;
        if let Some(conn) = conn {
            w.conn = conn;
        }
        Some(w.logged)
    }

    pub fn set_worker_logged(&self, job: i64, node_id: i64, offset: u64) {
        if let Some(w) = self.workers().get_mut(&(job, node_id)) {
            w.logged = Some(offset);
        }
    }

    /// Stops following `job`'s workers (on `node_id` only, if given); returns them.
    pub fn untrack_workers(&self, job: i64, node_id: Option<i64>) -> Vec<RemoteTask> {
        let mut workers = self.workers();
        let keys: Vec<(i64, i64)> = workers
            .keys()
            .filter(|(j, n)| *j == job && node_id.is_none_or(|id| id == *n))
            .copied()
            .collect();
        keys.iter().filter_map(|k| workers.remove(k)).collect()
    }

    /// The workers sent to `node_id` before connection `conn` that it did not report.
    pub fn unreported_workers(&self, node_id: i64, conn: u64, reported: &[TaskRef]) -> Vec<i64> {
        self.workers()
            .iter()
            .filter(|((job, n), w)| {
                *n == node_id
                    && w.conn != conn
                    && !reported
                        .iter()
                        .any(|r| r.job == *job && r.attempt == w.attempt)
            })
            .map(|((job, _), _)| *job)
            .collect()
    }

    /// What a connected node reported about itself, by node id.
    pub fn report(&self, node_id: i64, instance: &str) -> Option<NodeReport> {
        self.live().get(&node_id).map(|l| NodeReport {
            isolation_problems: l.offer.isolation_problems.clone(),
            shared_workspace: l.offer.workspace_mark.as_deref() == Some(instance),
        })
    }

    /// A connected node's address as other nodes reach it, by name: the server's own
    /// machine's is the server's address as joined nodes see it (loopback while none has
    /// connected: then no other node needs to reach it).
    pub fn node_ip(&self, node: &str) -> Option<IpAddr> {
        let (ip, in_process) = self
            .live()
            .values()
            .find(|l| l.name == node)
            .map(|l| (l.ip, l.in_process))?;
        if in_process {
            return Some(self.server_ip().unwrap_or(ip));
        }
        Some(ip)
    }

    /// Whether `node` is the server's own machine, connected in process: its loopback is
    /// the server's, where the door reaches tasks' web servers.
    pub fn is_in_process(&self, node: &str) -> bool {
        self.live().values().any(|l| l.name == node && l.in_process)
    }

    /// This server's address as nodes reach it, once one has connected.
    pub fn server_ip(&self) -> Option<IpAddr> {
        *self.server_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest heartbeat of a node: in memory while it is connected, else as stored.
    pub fn last_heartbeat(&self, node: &NodeRow) -> Option<i64> {
        let mem = self.live().get(&node.id).map(|l| l.last_heartbeat_ms);
        mem.max(node.last_seen_at)
    }

    /// Why a node is held (see `hearth_model::cluster::held`), from what it offers now (if
    /// connected, else as stored) and what its machine measures.
    pub fn held(&self, node: &NodeRow) -> Option<String> {
        let live = self.live();
        let l = live.get(&node.id);
        let offer = l.map_or((node.cores, node.memory_mib), |l| {
            (l.offer.cores, l.offer.memory_mib)
        });
        cluster::held(
            offer,
            (node.approved_cores, node.approved_memory_mib),
            node.approved_by.is_some(),
            l.and_then(|l| l.machine.as_ref()),
        )
    }

    /// A connected node's machine use from its last heartbeat (None when it sent none).
    pub fn machine(&self, node_id: i64) -> Option<MachineUse> {
        self.live().get(&node_id).and_then(|l| l.machine)
    }

    pub fn state(&self, node: &NodeRow, now: i64) -> NodeState {
        node_state(
            self.last_heartbeat(node),
            now,
            self.node_timeout.as_millis() as u64,
            node.draining,
        )
    }

    /// Drops a node's connection now, telling it why.
    pub fn disconnect(&self, node_id: i64) {
        if let Some(l) = self.live().get(&node_id) {
            l.kick.notify_one();
        }
    }

    fn heartbeat_ms(&self) -> u64 {
        heartbeat_interval_ms(self.node_timeout.as_millis() as u64)
    }
}

/// Accepts cluster connections until `stop` turns true.
pub async fn serve(
    app: Arc<crate::App>,
    cluster: Arc<Cluster>,
    listener: tokio::net::TcpListener,
    mut stop: crate::background::Stop,
) {
    loop {
        tokio::select! {
            _ = crate::background::stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(connection(app.clone(), cluster.clone(), tcp, peer));
                }
                Err(e) => {
                    tracing::warn!("cluster port: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Writes the heartbeats held in memory to the store, so a restarted server still knows
/// when each node was last seen.
pub async fn flush(app: Arc<crate::App>, cluster: Arc<Cluster>, mut stop: crate::background::Stop) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = crate::background::stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let seen: Vec<(i64, i64)> = cluster
            .live()
            .iter()
            .map(|(id, l)| (*id, l.last_heartbeat_ms))
            .collect();
        if seen.is_empty() {
            continue;
        }
        let app2 = app.clone();
        let res = tokio::task::spawn_blocking(move || app2.store.touch_nodes(&seen)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!("recording node heartbeats: {e}");
        }
    }
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, reason: &str) {
    let _ = write_frame(
        w,
        &ServerMessage::Refused {
            reason: reason.to_string(),
        },
    )
    .await;
}

async fn connection(app: Arc<crate::App>, cluster: Arc<Cluster>, tcp: TcpStream, peer: SocketAddr) {
    // A TLS connection starts with a handshake record (0x16); anything else is someone
    // speaking plain text to the port, which deserves a clearer line than a TLS error.
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            tracing::warn!(
                "refused a cluster connection from {peer}: not TLS (plain text?); agents speak mutual TLS"
            );
            return;
        }
        _ => return,
    }
    if let Ok(local) = tcp.local_addr() {
        // An address other machines can reach beats loopback (a test's agent on this
        // machine may connect over either).
        let mut ip = cluster.server_ip.lock().unwrap_or_else(|p| p.into_inner());
        if ip.is_none_or(|ip| ip.is_loopback()) {
            *ip = Some(local.ip());
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(cluster.tls.server.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(c)) => format!(
                    "its certificate was not issued by this Hearth's CA ({c:?}); a node of another Hearth must join this one with a token"
                ),
                _ => format!("TLS handshake failed: {e}"),
            };
            tracing::warn!("refused a cluster connection from {peer}: {why}");
            return;
        }
        Err(_) => {
            tracing::warn!("refused a cluster connection from {peer}: no TLS handshake within 15s");
            return;
        }
    };
    let fingerprint = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| cert_sha256(c.as_ref()));
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut r, &mut buf)).await {
        Ok(Ok(true)) => decode::<AgentMessage>(&buf),
        Ok(Ok(false)) => return,
        Ok(Err(e)) => Err(format!("a broken message ({e})")),
        Err(_) => Err("nothing within 15s".to_string()),
    };
    match (first, fingerprint) {
        (Err(why), _) => {
            tracing::warn!("refused a cluster connection from {peer}: it sent {why}");
            refuse(
                &mut w,
                &format!("the server could not read your message: {why}"),
            )
            .await;
        }
        (
            Ok(AgentMessage::Join {
                token,
                public_key,
                offer,
            }),
            None,
        ) => {
            let reply = join(&app, &cluster, peer, &token, &public_key, offer).await;
            let _ = write_frame(&mut w, &reply).await;
        }
        (Ok(AgentMessage::Hello { offer }), Some(fp)) => {
            session(&app, &cluster, peer, &fp, offer, &mut r, &mut w, &mut buf).await;
        }
        (Ok(AgentMessage::Hello { .. }), None) => {
            tracing::warn!("refused a cluster connection from {peer}: no client certificate");
            refuse(&mut w, "no client certificate: join first with --token").await;
        }
        (Ok(other), _) => {
            tracing::warn!(
                "refused a cluster connection from {peer}: unexpected first message {other:?}"
            );
            refuse(&mut w, "unexpected first message").await;
        }
    }
}

fn check_offer(offer: &NodeOffer) -> Result<(), String> {
    cluster::check_node_name(&offer.name)?;
    if offer.cores == 0 || offer.memory_mib == 0 {
        return Err("a node must offer at least one core and some memory".into());
    }
    if offer.labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (k, v) in &offer.labels {
        cluster::parse_label(&format!("{k}={v}"))?;
    }
    Ok(())
}

/// Compares two digests in time that does not depend on where they differ.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A join: the token must be known, its secret right, not revoked, not expired. Log lines
/// say which (never the token); the agent is told what to do next.
async fn join(
    app: &Arc<crate::App>,
    cluster: &Cluster,
    peer: SocketAddr,
    token: &str,
    public_key: &str,
    offer: NodeOffer,
) -> ServerMessage {
    let refused = |log: String, reason: &str| {
        tracing::warn!("refused a join from {peer}: {log}");
        ServerMessage::Refused {
            reason: reason.to_string(),
        }
    };
    const NEW_TOKEN: &str = "ask an admin for a new one (`hearth node token create`)";
    let (id, secret) = match cluster::parse_join_token(token) {
        Ok(t) => t,
        Err(why) => return refused(format!("malformed join token: {why}"), &why),
    };
    let row = match app.store.node_token(id) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("reading join token {id}: {e}");
            return ServerMessage::Refused {
                reason: "the server could not check the token; try again".into(),
            };
        }
    };
    let digest = Sha256::digest(secret.as_bytes());
    let Some(row) = row.filter(|r| {
        hex::decode(&r.secret_sha256).is_ok_and(|stored| same_digest(&stored, digest.as_slice()))
    }) else {
        return refused(
            format!("wrong join token (no token {id} with that secret)"),
            &format!("the join token is wrong: {NEW_TOKEN}"),
        );
    };
    if row.revoked_at.is_some() {
        return refused(
            format!("join token {id} was revoked"),
            &format!("the join token was revoked: {NEW_TOKEN}"),
        );
    }
    if row.expires_at <= now_ms() {
        return refused(
            format!("join token {id} has expired"),
            &format!("the join token has expired: {NEW_TOKEN}"),
        );
    }
    let used_up = format!(
        "the join token was already used{}: {NEW_TOKEN}, or `--uses N` for several machines",
        row.max_uses
            .map(|m| format!(" ({m} of {m} joins)"))
            .unwrap_or_default()
    );
    if row.max_uses.is_some_and(|m| row.uses >= m) {
        return refused(format!("join token {id} has no use left"), &used_up);
    }
    if let Err(why) = check_offer(&offer) {
        return refused(format!("bad node description: {why}"), &why);
    }
    if offer.name == crate::LOCAL_NODE {
        let why = format!(
            "`{}` names the server's own machine: pass another --name",
            crate::LOCAL_NODE
        );
        return refused(format!("name taken: {why}"), &why);
    }
    let key = match hex::decode(public_key) {
        Ok(k) => k,
        Err(_) => {
            return refused(
                "the public key is not hex".into(),
                "the public key is not hex",
            )
        }
    };
    match app.store.live_node_named(&offer.name) {
        Ok(Some(_)) => {
            let why = format!(
                "a node named {} has already joined: pass another --name, or remove the old one first (`hearth node remove {}`)",
                offer.name, offer.name
            );
            return refused(format!("name taken: {why}"), &why);
        }
        Ok(None) => {}
        Err(e) => tracing::error!("looking up node {}: {e}", offer.name),
    }
    let (pem, fingerprint) = match cluster.tls.sign_node(&key, &offer.name) {
        Ok(c) => c,
        Err(e) => return refused(format!("cannot sign its key: {e}"), &e.to_string()),
    };
    let node = NodeRow {
        id: 0,
        name: offer.name.clone(),
        cert_sha256: fingerprint.clone(),
        cores: offer.cores,
        memory_mib: offer.memory_mib,
        labels: offer.labels.clone(),
        joined_at: now_ms(),
        last_seen_at: None,
        draining: false,
        removed_at: None,
        // The token's caps, else what it offers now: more, later, is held until approved.
        approved_cores: Some(row.max_cores.unwrap_or(offer.cores)),
        approved_memory_mib: Some(row.max_memory_mib.unwrap_or(offer.memory_mib)),
        approved_by: None,
    };
    match app.store.insert_node(&node, Some(id)) {
        Ok(Some(_)) => {}
        // Another machine took the token's last use meanwhile.
        Ok(None) => return refused(format!("join token {id} has no use left"), &used_up),
        Err(e) => {
            return refused(
                format!("recording node {}: {e}", offer.name),
                &format!(
                    "could not record node {} (is the name taken? pass another --name)",
                    offer.name
                ),
            )
        }
    }
    let uses = row.uses + 1;
    eprintln!(
        "Node {} joined from {peer} with join token {id} (use {uses}{}; certificate sha256 {fingerprint})",
        offer.name,
        row.max_uses.map(|m| format!(" of {m}")).unwrap_or_default()
    );
    ServerMessage::Joined {
        certificate: pem,
        name: offer.name,
    }
}

/// A node's connection: welcome, then heartbeats until it goes away or is removed. The
/// same for joined nodes (after mutual TLS) and the server's own in-process node (whose
/// `fingerprint` is [`crate::cluster::local::IN_PROCESS`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn session<R: AsyncBufRead + Unpin, W: AsyncWrite + Unpin>(
    app: &Arc<crate::App>,
    cluster: &Cluster,
    peer: SocketAddr,
    fingerprint: &str,
    offer: NodeOffer,
    r: &mut R,
    w: &mut W,
    buf: &mut Vec<u8>,
) {
    let node = match app.store.node_by_cert(fingerprint) {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::warn!(
                "refused a node connection from {peer}: its certificate (sha256 {fingerprint}) belongs to no node of this Hearth"
            );
            refuse(w, "this certificate belongs to no node of this server: join again with a new token and an empty --data-dir").await;
            return;
        }
        Err(e) => {
            tracing::error!("looking up a node certificate: {e}");
            return;
        }
    };
    if node.removed_at.is_some() {
        tracing::warn!(
            "refused node {} connecting from {peer}: it was removed (`hearth node remove`), its certificate is revoked",
            node.name
        );
        refuse(w, &format!("node {} was removed from this server: its certificate is revoked; to rejoin, use a new token and an empty --data-dir", node.name)).await;
        return;
    }
    if let Err(why) = check_offer(&offer) {
        tracing::warn!("refused node {} connecting from {peer}: {why}", node.name);
        refuse(w, &why).await;
        return;
    }
    let now = now_ms();
    if let Err(e) =
        app.store
            .update_node_offer(node.id, offer.cores, offer.memory_mib, &offer.labels, now)
    {
        tracing::error!("recording node {}: {e}", node.name);
    }
    let conn = cluster.next_conn.fetch_add(1, Ordering::Relaxed);
    let kick = Arc::new(tokio::sync::Notify::new());
    let (tx, mut outbox) = tokio::sync::mpsc::unbounded_channel();
    let frames = tx.clone();
    let tunnels = hearth_agent::tunnel::Tunnels::new(Box::new(move |f| {
        frames.send(ServerMessage::Tunnel(f)).is_ok()
    }));
    let paths = match (&offer.runtime, &offer.data_dir) {
        (Some(rt), Some(dir)) if std::path::Path::new(dir).is_absolute() => Some(NodePaths {
            runtime: rt.clone(),
            data_dir: dir.into(),
        }),
        _ => None,
    };
    let older = cluster.live().insert(
        node.id,
        Live {
            conn,
            name: node.name.clone(),
            last_heartbeat_ms: now,
            kick: kick.clone(),
            tx,
            paths,
            ip: peer.ip(),
            offer: offer.clone(),
            machine: None,
            in_process: fingerprint == crate::cluster::local::IN_PROCESS,
            tunnels: tunnels.clone(),
        },
    );
    // One connection per node: a reconnect replaces a connection that has not noticed yet.
    if let Some(old) = older {
        old.kick.notify_one();
    }
    tracing::info!("node {} connected from {peer}", node.name);
    if offer.workspace_mark.as_deref() != Some(app.instance.as_str()) {
        // Said at every connection: jobs spread over several nodes (and jobs that run
        // here after one elsewhere) see the files their node has, and only those.
        tracing::warn!(
            "node {}: its workspaces ({}/workspaces) are not this server's: jobs on it see              only that node's files, and a job spread over several nodes cannot share files              through the workspace; to share, mount this server's workspaces directory there              (it holds {}) and restart the agent",
            node.name,
            offer.data_dir.as_deref().unwrap_or("the agent's data dir"),
            hearth_model::cluster::WORKSPACE_MARK
        );
    }
    if let Some(problems) = offer.isolation_problems.as_ref().filter(|p| !p.is_empty()) {
        tracing::warn!(
            "node {}: isolation is OFF there, jobs of different users are not separated: {}",
            node.name,
            problems.join("; ")
        );
    }
    let hb = cluster.heartbeat_ms();
    let welcome = ServerMessage::Welcome {
        name: node.name.clone(),
        heartbeat_ms: hb,
    };
    let idle = cluster.node_timeout * 2 + Duration::from_millis(hb);
    let mut ok = write_frame(w, &welcome).await.is_ok();
    while ok {
        tokio::select! {
            _ = kick.notified() => {
                let removed = app.store.node_by_cert(fingerprint).ok().flatten().is_some_and(|n| n.removed_at.is_some());
                if removed {
                    tracing::warn!("dropped node {} ({peer}): it was removed", node.name);
                    refuse(w, &format!("node {} was removed from this server: its certificate is revoked", node.name)).await;
                }
                break;
            }
            Some(msg) = outbox.recv() => {
                ok = write_frame(w, &msg).await.is_ok();
            }
            got = tokio::time::timeout(idle, read_frame(r, buf)) => {
                match got {
                    Ok(Ok(true)) => match decode::<AgentMessage>(buf) {
                        Ok(AgentMessage::Heartbeat { seq, machine }) => {
                            if let Some(l) = cluster.live().get_mut(&node.id) {
                                if l.conn == conn {
                                    l.last_heartbeat_ms = now_ms();
                                    l.machine = machine;
                                }
                            }
                            ok = write_frame(w, &ServerMessage::Ack { seq }).await.is_ok();
                        }
                        Ok(AgentMessage::Fetch { sha256, offset }) => {
                            let chunk = chunk(app, cluster, node.id, sha256, offset).await;
                            ok = write_frame(w, &chunk).await.is_ok();
                        }
                        Ok(AgentMessage::Opened { stream, error }) => cluster.opened(node.id, stream, error),
                        Ok(AgentMessage::Tunnel(frame)) => tunnels.deliver(frame),
                        Ok(AgentMessage::Started { job, attempt, ui_port }) => {
                            if let Some(ev) = cluster.events() {
                                ev.started(node.id, job, attempt, ui_port);
                            }
                        }
                        Ok(AgentMessage::Tasks { tasks }) => {
                            if let Some(ev) = cluster.events() {
                                ev.report(node.id, &node.name, conn, &tasks);
                            }
                        }
                        Ok(AgentMessage::Output { job, attempt, offset, next, lines }) => {
                            if let Some(ev) = cluster.events() {
                                ev.output(node.id, &node.name, TaskRef { job, attempt }, offset..next, &lines);
                            }
                        }
                        Ok(AgentMessage::Ended { job, attempt, code, signal, oom_killed, error }) => {
                            let exit = hearth_agent::sandbox::TaskExit { code, signal, oom_killed, finished_ms: now_ms() };
                            if let Some(ev) = cluster.events() {
                                ev.ended(node.id, &node.name, job, attempt, exit, error);
                            }
                        }
                        Ok(other) => {
                            tracing::warn!("node {} ({peer}) sent {other:?} mid-session; closing", node.name);
                            refuse(w, "unexpected message mid-session").await;
                            break;
                        }
                        Err(why) => {
                            tracing::warn!("node {} ({peer}) sent {why}; closing", node.name);
                            refuse(w, &why).await;
                            break;
                        }
                    },
                    Ok(Ok(false)) => break,
                    // An agent killed or cut off: the node goes down by its heartbeats.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Ok(Err(e)) => {
                        tracing::warn!("node {} ({peer}): {e}; closing", node.name);
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("node {} ({peer}) went silent; closing", node.name);
                        break;
                    }
                }
            }
        }
    }
    tunnels.close_all();
    let last = {
        let mut live = cluster.live();
        match live.get(&node.id) {
            Some(l) if l.conn == conn => live.remove(&node.id).map(|l| l.last_heartbeat_ms),
            _ => None,
        }
    };
    if let Some(at) = last {
        if let Err(e) = app.store.touch_nodes(&[(node.id, at)]) {
            tracing::warn!("recording node {}'s last heartbeat: {e}", node.name);
        }
    }
    tracing::info!("node {} ({peer}) disconnected", node.name);
}

/// A part of a job file for a node, which may only have the files of the jobs it runs.
async fn chunk(
    app: &Arc<crate::App>,
    cluster: &Cluster,
    node_id: i64,
    sha256: String,
    offset: u64,
) -> ServerMessage {
    let allowed = cluster
        .tasks()
        .values()
        .any(|t| t.node_id == node_id && t.files.contains(&sha256));
    let reply = |data: String, eof: bool, error: Option<String>| ServerMessage::Chunk {
        sha256: sha256.clone(),
        offset,
        data,
        eof,
        error,
    };
    if !allowed || cluster::check_sha256(&sha256).is_err() {
        tracing::warn!(node = node_id, "refused a node a file of no job it runs");
        return reply(
            String::new(),
            true,
            Some("no job of this node has that file".into()),
        );
    }
    let path = app.blobs.path(&sha256);
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, bool)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::with_capacity(CHUNK_BYTES);
        f.take(CHUNK_BYTES as u64).read_to_end(&mut data)?;
        let eof = offset + data.len() as u64 >= len;
        Ok((data, eof))
    })
    .await;
    match read {
        Ok(Ok((data, eof))) => reply(hex::encode(data), eof, None),
        Ok(Err(e)) => reply(String::new(), true, Some(format!("reading it failed: {e}"))),
        Err(e) => reply(String::new(), true, Some(format!("reading it failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_compare_whole() {
        assert!(same_digest(b"abc", b"abc"));
        assert!(!same_digest(b"abc", b"abd"));
        assert!(!same_digest(b"abc", b"ab"));
    }
}
