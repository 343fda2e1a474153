//! `hearth up`'s own machine as a node like any other. The agent's task runner
//! (`hearth_agent::remote::Runner`) runs in this process and speaks the cluster port's
//! messages to the server's side of a node connection (`cluster::session`) over an
//! in-process stream instead of mutual TLS. So a task here goes exactly the way it goes on
//! a joined node: built by `remote::task_for`, laid out and launched by the runner, its
//! output followed by offset, its end recorded once, and after a `kill -9` of Hearth taken
//! back from its still-running shim and reported like any node's.
//!
//! What differs is only what must: the runner's file cache is the server's blob store
//! (nothing to fetch), its data dir is the server's (the same workspaces), and the node
//! is known by [`IN_PROCESS`] instead of a certificate.

use crate::store::{now_ms, NodeRow};
use crate::{App, LOCAL_NODE};
use hearth_agent::node::{read_frame, AgentError, Session};
use hearth_agent::remote::Runner;
use hearth_model::cluster::{decode, AgentMessage, NodeOffer, NodeRuntime, WORKSPACE_MARK};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::BufReader;

/// What stands for the in-process node's certificate fingerprint in the store: no real
/// certificate's SHA-256 (64 hex digits) can be this.
pub const IN_PROCESS: &str = "in-process";

/// How often a node without a Spark runtime looks for one again (`hearth runtime install`
/// while Hearth runs), to offer itself for jobs once there is one.
const RUNTIME_RECHECK: Duration = Duration::from_secs(10);

/// Runs the server's own node until `stop` turns true: its runner, and its connection to
/// the server (made again if it ever ends, as an agent reconnects).
pub async fn run(app: Arc<App>, mut stop: crate::background::Stop) {
    if let Err(why) = ensure_row(&app) {
        tracing::error!("this machine cannot run jobs: {why}");
        eprintln!("WARNING: this machine runs no jobs: {why}");
        return;
    }
    let (runner, mut outgoing) = Runner::new(
        app.cfg.data_dir.clone(),
        app.cfg.blobs_dir(),
        app.isolation.enabled,
        app.cfg.shim.clone(),
        app.runtime().ok().map(|rt| rt.root),
        app.ports.clone(),
        app.task_network.clone(),
    );
    // Tasks an earlier run of Hearth started and that still run under their shims.
    runner.reattach();
    let mut meter = hearth_agent::machine::Meter::new();
    meter.measure();
    loop {
        let offer = offer(&app);
        let has_runtime = offer.runtime.is_some();
        let (agent_end, server_end) = tokio::io::duplex(256 * 1024);
        let server = tokio::spawn(server_side(app.clone(), server_end));
        match Session::over(agent_end, &offer).await {
            Ok(mut session) => {
                let ended = tokio::select! {
                    err = hearth_agent::node::serve(&mut session, &runner, &mut outgoing, &mut meter) => Some(err),
                    _ = crate::background::stopped(&mut stop) => None,
                    _ = runtime_appears(&app), if !has_runtime => {
                        tracing::info!("the Spark runtime is there now: this machine takes jobs");
                        Some(AgentError::Transient("the runtime appeared".into()))
                    }
                };
                runner.disconnected();
                drop(session);
                let _ = server.await;
                match ended {
                    None => return,
                    Some(AgentError::Transient(why)) => {
                        tracing::debug!("the in-process node reconnects: {why}")
                    }
                    Some(e) => tracing::error!("the in-process node: {e}"),
                }
            }
            Err(e) => {
                tracing::error!("the in-process node could not connect: {e}");
                server.abort();
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's side of the in-process connection: the node says hello, then it is a
/// node session like a joined node's.
async fn server_side(app: Arc<App>, stream: tokio::io::DuplexStream) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    let offer = match read_frame(&mut r, &mut buf).await {
        Ok(true) => match decode::<AgentMessage>(&buf) {
            Ok(AgentMessage::Hello { offer }) => offer,
            other => {
                tracing::error!("the in-process node said {other:?} first");
                return;
            }
        },
        _ => return,
    };
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    crate::cluster::session(
        &app,
        &app.cluster,
        peer,
        IN_PROCESS,
        offer,
        &mut r,
        &mut w,
        &mut buf,
    )
    .await;
}

/// Resolves once the Spark runtime can be found.
async fn runtime_appears(app: &App) {
    loop {
        tokio::time::sleep(RUNTIME_RECHECK).await;
        if app.runtime().is_ok() {
            return;
        }
    }
}

/// What this machine offers: `--cores`/`--memory`, its runtime if there is one, and
/// whether it isolates tasks.
fn offer(app: &App) -> NodeOffer {
    let runtime = app.runtime().ok().map(|rt| NodeRuntime {
        root: rt.root.display().to_string(),
        spark_home: rt.spark_home.display().to_string(),
        python: rt.python.display().to_string(),
    });
    NodeOffer {
        name: LOCAL_NODE.into(),
        cores: app.cfg.cores,
        memory_mib: app.cfg.memory_mib,
        labels: Default::default(),
        version: env!("CARGO_PKG_VERSION").into(),
        runtime,
        data_dir: Some(app.cfg.data_dir.display().to_string()),
        isolation_problems: Some({
            let mut problems = app.isolation.problems.clone();
            if app.isolation.enabled && app.task_network.is_none() {
                problems.push(hearth_agent::net::SHARED_NETWORK_PROBLEM.to_string());
            }
            problems
        }),
        workspace_mark: std::fs::read_to_string(app.cfg.workspaces_dir().join(WORKSPACE_MARK))
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

/// The store's row for this machine's node, made at the first start.
pub(crate) fn ensure_row(app: &App) -> Result<(), String> {
    let found = app
        .store
        .node_by_cert(IN_PROCESS)
        .map_err(|e| format!("reading the nodes: {e}"))?;
    match found {
        Some(n) if n.removed_at.is_none() => Ok(()),
        Some(_) => Err("the local node was removed".into()),
        None => {
            if let Ok(Some(other)) = app.store.live_node_named(LOCAL_NODE) {
                return Err(format!(
                    "a joined node is named `{LOCAL_NODE}` (certificate sha256 {}): remove it (`hearth node remove {LOCAL_NODE}`) and join it again under another name",
                    other.cert_sha256
                ));
            }
            let row = NodeRow {
                id: 0,
                name: LOCAL_NODE.into(),
                cert_sha256: IN_PROCESS.into(),
                cores: app.cfg.cores,
                memory_mib: app.cfg.memory_mib,
                labels: Default::default(),
                joined_at: now_ms(),
                last_seen_at: None,
                draining: false,
                removed_at: None,
                // Its own machine's offer is the admin's own flags.
                approved_cores: None,
                approved_memory_mib: None,
                approved_by: Some("hearth up".into()),
            };
            // No join token: the server's own machine needs none.
            app.store
                .insert_node(&row, None)
                .map(|_| ())
                .map_err(|e| format!("recording the local node: {e}"))
        }
    }
}
