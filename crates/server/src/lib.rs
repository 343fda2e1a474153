#![recursion_limit = "512"]
//! Hearth's control plane: users, tokens, jobs, files and logs behind the REST API, and the
//! dispatcher that feeds the scheduler and runs its plans on the machine's agent.

pub mod accounts;
pub mod auth;
pub mod background;
pub mod blobs;
pub mod cluster;
pub mod config;
pub mod error;
pub mod interactive;
pub mod jobs;
pub mod layout;
pub mod policy;
pub mod runtime;
pub mod spark;
pub mod store;
pub mod tls;
pub mod web;

use anyhow::Context;
use cluster::local as node;
use config::Config;
use hearth_agent::sandbox::Isolation;
use interactive::{engines, gateway};
use jobs::dispatch;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use web::usage;

/// The name of the one node `hearth up` runs.
pub const LOCAL_NODE: &str = hearth_model::lifecycle::LOCAL_NODE;

/// The shared state of a running server.
pub struct App {
    pub cfg: Config,
    pub store: store::Store,
    pub tokens: auth::TokenCache,
    pub blobs: blobs::BlobStore,
    pub isolation: Isolation,
    /// The Spark runtime, or why there is none; re-checked while missing.
    pub runtime: RwLock<(Result<runtime::Runtime, Vec<String>>, std::time::Instant)>,
    /// Wakes the dispatcher: a job was submitted, ended or cancelled.
    pub wake: tokio::sync::Notify,
    pub shutting_down: AtomicBool,
    /// The scheduling policy, replaced whole when an admin changes it.
    pub policy: RwLock<Arc<policy::Policy>>,
    /// Bounds concurrent Argon2 work (each hash takes ~19 MiB and tens of ms of a core).
    /// Waiting for a slot is bounded too: past it, a 429 at once.
    pub hashing: auth::Hashing,
    /// Failed logins per account and address, and the waits they impose.
    pub logins: auth::limit::LoginLimiter,
    /// Distinguishes this data dir's tasks from other Hearth instances' on the machine.
    pub instance: String,
    /// Request counts and latencies by route, for `/metrics`.
    pub http_metrics: web::metrics::HttpMetrics,
    /// Users' Spark Connect engines.
    pub engines: engines::Engines,
    /// The Spark Connect gateway, when on.
    pub connect: Option<gateway::ConnectInfo>,
    /// Loopback ports of users' web servers (Spark UIs), kept for Hearth's proxy alone; or
    /// why they cannot be guarded on this machine.
    pub ports: Result<Arc<hearth_agent::portguard::PortGuard>, String>,
    /// The nodes and the tasks on them: joined machines over the cluster port (when on),
    /// and `hearth up`'s own machine through its in-process agent.
    pub cluster: Arc<cluster::Cluster>,
    /// The machine's recent use, sampled every `cfg.usage_interval`.
    pub usage: usage::UsageRing,
    /// This machine's measured use (the local node's), refreshed every few seconds.
    pub machine: usage::LocalMachine,
    /// The network each task on this machine gets of its own (jobs, engines, notebooks);
    /// None when they share the machine's (`--insecure-shared-network`, or no isolation).
    pub task_network: Option<hearth_agent::net::TaskNetwork>,
}

impl App {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A loopback port for a task's web server, guarded so that only Hearth's proxy reaches
    /// it. Fails closed: with isolation on and no guard, no port (and the task gets no UI).
    pub fn reserve_port(&self) -> Result<u16, String> {
        if !self.isolation.enabled {
            // Every task runs as Hearth's own uid: there is no other user to keep out.
            return Ok(layout::free_local_port());
        }
        match &self.ports {
            Ok(guard) => guard.reserve(),
            Err(why) => Err(why.clone()),
        }
    }

    /// Guards a port again: a task reattached after Hearth restarted keeps its UI.
    pub fn retake_port(&self, port: u16) {
        if let (true, Ok(guard)) = (self.isolation.enabled, &self.ports) {
            if let Err(e) = guard.guard(port) {
                tracing::warn!(port, "could not guard a reattached task's port: {e}");
            }
        }
    }

    /// The task that had `port` ended.
    pub fn release_port(&self, port: u16) {
        if let Ok(guard) = &self.ports {
            guard.release(port);
        }
    }

    /// Whether Hearth's proxy may serve `port`: only ports nobody else can reach.
    pub fn port_is_guarded(&self, port: u16) -> bool {
        !self.isolation.enabled || self.ports.as_ref().is_ok_and(|g| g.holds(port))
    }

    /// The Spark runtime, or why there is none; looked for again now and then while it is
    /// missing (`hearth runtime install` while Hearth runs).
    pub fn runtime(&self) -> Result<runtime::Runtime, Vec<String>> {
        const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);
        {
            let guard = self.runtime.read().unwrap_or_else(|p| p.into_inner());
            if guard.0.is_ok() || guard.1.elapsed() < RECHECK {
                return guard.0.clone();
            }
        }
        let fresh = self.cfg.runtime.locate();
        let mut guard = self.runtime.write().unwrap_or_else(|p| p.into_inner());
        *guard = (fresh.clone(), std::time::Instant::now());
        fresh
    }

    /// Where a task on this machine reaches Hearth's API (`HEARTH_SERVER` in its
    /// environment, which the `hearth` CLI reads): its network's gateway, forwarded to where
    /// the API listens; or, sharing the machine's network, the API's own address.
    pub fn server_url_for_tasks(&self) -> String {
        let port = self.cfg.listen.port();
        match &self.task_network {
            Some(n) => format!(
                "http://{}:{port}",
                hearth_agent::net::TaskNetwork::gateway(&n.range)
            ),
            None if self.cfg.listen.ip().is_unspecified() => format!("http://127.0.0.1:{port}"),
            None => format!("http://{}", self.cfg.listen),
        }
    }

    pub fn policy(&self) -> Arc<policy::Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Starts the server on `cfg`, serves until `shutdown` resolves, then stops running jobs
/// and records their state.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Everything Hearth creates is private unless it says otherwise (the store, blobs, job
    // directories); what a user must reach gets its mode set explicitly.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    // Every joined node holds a connection open: allow more than the usual soft limit of
    // 1024, within the hard limit, and bounded so that jobs (which inherit it) see a
    // familiar value.
    // SAFETY: getrlimit/setrlimit on this process with a struct getrlimit fills.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = lim.rlim_max.min(65_536);
            if lim.rlim_cur < want {
                lim.rlim_cur = want;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
    let isolation = hearth_agent::sandbox::probe();
    if !isolation.enabled {
        eprintln!("WARNING: isolation is OFF. Jobs of different users are not separated:");
        for p in &isolation.problems {
            eprintln!("  - {p}");
        }
    }
    // Before anything is written there: a data directory the jobs cannot reach, or on a
    // full disk, would fail every job later without saying why.
    hearth_agent::preflight::check(&cfg.data_dir, isolation.enabled).map_err(anyhow::Error::msg)?;
    hearth_agent::preflight::create_data_dir(&cfg.data_dir).map_err(anyhow::Error::msg)?;
    // Traversable but not listable: a user's own identity must reach their workspace (the
    // server opens workspace files as that user), and nothing else in here is readable.
    for dir in [&cfg.data_dir, &cfg.workspaces_dir()] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("securing {}", dir.display()))?;
    }
    std::fs::create_dir_all(cfg.jobs_dir())
        .with_context(|| format!("creating {}", cfg.jobs_dir().display()))?;
    let store = store::Store::open(&cfg.db_path())
        .with_context(|| format!("opening the metadata store {}", cfg.db_path().display()))?;
    let instance = match store.meta("instance")? {
        Some(i) => i,
        None => {
            let i = auth::random_hex(4);
            store.set_meta("instance", &i)?;
            i
        }
    };
    // A node whose workspaces directory holds this file (a mount of this one) shares them.
    let mark = cfg
        .workspaces_dir()
        .join(hearth_model::cluster::WORKSPACE_MARK);
    std::fs::write(&mark, &instance)
        .and_then(|()| std::fs::set_permissions(&mark, std::fs::Permissions::from_mode(0o644)))
        .with_context(|| format!("writing {}", mark.display()))?;
    let policy = policy::load(&store).context("reading the scheduling policy")?;
    let ports = if isolation.enabled {
        hearth_agent::portguard::PortGuard::new(&instance).map(Arc::new)
    } else {
        Err("isolation is off".to_string())
    };
    if let (true, Err(why)) = (isolation.enabled, &ports) {
        eprintln!(
            "WARNING: Spark UIs are off: their ports cannot be kept from other users ({why})"
        );
    }
    let runtime = cfg.runtime.locate();
    if let Err(problems) = &runtime {
        eprintln!("Jobs cannot start until the Spark runtime is ready:");
        for p in problems {
            eprintln!("  - {p}");
        }
    }
    let blobs = blobs::BlobStore::open(cfg.blobs_dir())
        .with_context(|| format!("opening the blob store {}", cfg.blobs_dir().display()))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another Hearth running? Pass --listen ADDR:PORT for another address",
                cfg.listen
            )
        })?;
    let connect = match cfg.connect_listen {
        Some(addr) => Some(gateway_listener(&cfg, addr).await?),
        None => None,
    };
    let (cluster, cluster_port) = cluster_listener(&cfg).await?;
    // A task reaches Hearth's API and gateway at its network's gateway address, on the
    // ports they listen on here; nothing else of this machine.
    let endpoints = [
        listener.local_addr().ok(),
        connect.as_ref().and_then(|c| c.1.local_addr().ok()),
    ]
    .into_iter()
    .flatten()
    .map(|to| hearth_agent::net::Endpoint {
        port: to.port(),
        to,
    })
    .collect();
    let task_network = hearth_agent::net::node_network(&cfg.network, isolation.enabled, endpoints)
        .map_err(anyhow::Error::msg)?;
    if task_network.is_none() && isolation.enabled {
        eprintln!("WARNING: --insecure-shared-network: every task shares this machine's network; a user's job reaches what any other task listens on");
    }
    let usage = usage::UsageRing::new(cfg.usage_interval);
    let app = Arc::new(App {
        cfg,
        store,
        tokens: auth::TokenCache::default(),
        blobs,
        isolation,
        runtime: RwLock::new((runtime, std::time::Instant::now())),
        wake: tokio::sync::Notify::new(),
        shutting_down: AtomicBool::new(false),
        hashing: auth::Hashing::new(2, 32),
        logins: auth::limit::LoginLimiter::new(auth::limit::Limits::default()),
        policy: RwLock::new(Arc::new(policy)),
        instance,
        http_metrics: Default::default(),
        engines: Default::default(),
        connect: connect.as_ref().map(|c| c.0.clone()),
        ports,
        cluster: cluster.clone(),
        usage,
        machine: Default::default(),
        task_network,
    });
    cluster.set_events(Arc::new(jobs::remote::NodeTasks(Arc::downgrade(&app))));
    accounts::bootstrap_admin(&app)?;
    // Task cgroups of Hearth instances that no longer run them (a Hearth or a test killed
    // mid-stop): thawed, emptied and removed, before any task of ours starts. A live
    // task's (its shim runs) is never touched.
    if app.isolation.enabled {
        let _ = tokio::task::spawn_blocking(hearth_agent::sandbox::sweep_stale_tasks).await;
    }
    if app.cfg.local_jobs {
        // Before reconciling: jobs that ran here wait for this node to report them.
        if let Err(why) = node::ensure_row(&app) {
            eprintln!("WARNING: this machine runs no jobs: {why}");
        }
    }
    dispatch::reconcile(&app).await?;
    let mut background = background::Background::default();
    if app.cfg.local_jobs {
        let app = app.clone();
        background.spawn("the in-process node", move |stop| node::run(app, stop));
    }
    engines::reattach_or_reap(&app).await;
    {
        let app = app.clone();
        background.spawn("the dispatcher", move |stop| {
            dispatch::run(app, engines::allocations, stop)
        });
    }
    if let Ok(guard) = &app.ports {
        let guard = Arc::downgrade(guard);
        background.spawn("the port guard's check", move |mut stop| async move {
            hearth_agent::portguard::keep_guarded(guard, async move {
                background::stopped(&mut stop).await
            })
            .await
        });
    }
    {
        let app = app.clone();
        background.spawn("the usage sampler", move |stop| usage::run(app, stop));
    }
    // Memory in use is known from the first reading: the local node shows it at once.
    app.machine.measure();
    {
        let app = app.clone();
        background.spawn("the machine meter", move |stop| usage::measure(app, stop));
    }
    let url = format!("http://{}", listener.local_addr()?);
    eprintln!(
        "Hearth is up at {url} (data in {})",
        app.cfg.data_dir.display()
    );
    tracing::info!(%url, "serving");

    let router = web::api::router(app.clone());
    background.spawn("the API and console", move |mut stop| async move {
        let serving = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { background::stopped(&mut stop).await });
        if let Err(e) = serving.await {
            tracing::error!("serving the API: {e}");
        }
    });
    if let Some((info, listener, tls)) = connect {
        eprintln!(
            "Spark Connect gateway on {} (sc://HOST:{}/;use_ssl=true;x-hearth-token=TOKEN; `hearth connect` prints the URL)",
            info.addr,
            info.addr.port()
        );
        let app = app.clone();
        background.spawn("the Spark Connect gateway", move |stop| {
            gateway::serve(app, listener, tls, stop)
        });
    }
    {
        let app = app.clone();
        background.spawn("the engine reaper", move |stop| {
            engines::reap_idle(app, stop)
        });
    }
    {
        let (app, cluster) = (app.clone(), cluster.clone());
        background.spawn("the heartbeat flush", move |stop| {
            cluster::flush(app, cluster, stop)
        });
    }
    if let (Some(listener), Some(addr)) = (cluster_port, cluster.addr) {
        eprintln!(
            "Cluster port on {addr} (CA sha256 {}; `hearth node token create` prints the join command)",
            cluster.tls.ca_sha256
        );
        let app = app.clone();
        background.spawn("the cluster port", move |stop| {
            cluster::serve(app, cluster, listener, stop)
        });
    }
    shutdown.await;
    eprintln!("Hearth is shutting down: stopping running jobs...");
    // Nothing new starts from here; what runs on this machine is stopped and its end
    // recorded (through the in-process node, still running), then every loop stops.
    app.shutting_down.store(true, Ordering::SeqCst);
    app.wake.notify_one();
    dispatch::stop_all(&app).await;
    engines::stop_all(&app).await;
    // Open log streams end when their jobs do; idle clients are not waited for long.
    background.stop(std::time::Duration::from_secs(3)).await;
    // The guard goes only once nothing of this machine's needs it: a driver that outlived
    // the stop's deadline, or a worker of a job driven from elsewhere (which runs on, to be
    // taken back), keeps its UI's port closed to other users.
    let local = app
        .store
        .nodes()
        .ok()
        .and_then(|ns| ns.into_iter().find(|n| n.name == LOCAL_NODE))
        .map(|n| n.id);
    let still_here = local.is_some_and(|id| app.cluster.holds_tasks(id));
    if let (Ok(guard), false) = (&app.ports, still_here) {
        guard.teardown();
    } else if still_here {
        eprintln!(
            "Tasks still run on this machine: their ports stay guarded until the next start."
        );
    }
    eprintln!("Hearth stopped.");
    Ok(())
}

/// The node registry, with its TLS (Hearth's CA, made on the first start) and the
/// cluster port bound, unless it is off.
async fn cluster_listener(
    cfg: &Config,
) -> anyhow::Result<(Arc<cluster::Cluster>, Option<tokio::net::TcpListener>)> {
    let tls = tls::ClusterTls::load(&tls::TlsFiles::new(&cfg.data_dir))
        .context("making the cluster port's TLS certificate")?;
    let listener = match cfg.cluster_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for agents on {addr}: pass --cluster-listen ADDR:PORT for another address, or `off`")
        })?),
        None => None,
    };
    let addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
    Ok((
        Arc::new(cluster::Cluster::new(tls, addr, cfg.node_timeout)),
        listener,
    ))
}

/// Binds the Spark Connect gateway and prepares its TLS: the admin's certificate, or one
/// from Hearth's CA (made on the first start).
async fn gateway_listener(
    cfg: &Config,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(
    gateway::ConnectInfo,
    tokio::net::TcpListener,
    Arc<rustls::ServerConfig>,
)> {
    let hosts = tls::machine_names(&cfg.connect_hosts);
    let (tls_config, ca_pem) = match &cfg.connect_cert {
        Some((cert, key)) => (tls::server_config(cert, key)?, None),
        None => {
            let files = tls::TlsFiles::new(&cfg.data_dir);
            let ca = tls::ensure_ca_and_server_cert(&files, &hosts)
                .context("making the gateway's TLS certificate")?;
            (
                tls::server_config(&files.server_cert(), &files.server_key())?,
                Some(ca),
            )
        }
    };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for Spark Connect on {addr}: pass --connect-listen ADDR:PORT for another address")
    })?;
    let info = gateway::ConnectInfo {
        addr: listener.local_addr()?,
        hosts,
        ca_pem,
    };
    Ok((info, listener, tls_config))
}
