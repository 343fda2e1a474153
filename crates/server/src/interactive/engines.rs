//! Engines: a user's long-lived interactive servers, each a sandboxed task under the user's
//! uid. Of each [`EngineKind`] a user has at most one: a Spark Connect server (started when
//! the gateway first needs it) and a JupyterLab notebook server (started by `hearth notebook
//! start`, its kernels connected to the user's Spark Connect engine through the gateway).
//! Kept while used, stopped after their kind's idle timeout. A live engine holds its cores
//! and memory like a running job, so batch admission leaves room for it (see
//! [`allocations`]).
//!
//! Hearth stops every engine when it shuts down. After a crash, the next start takes back
//! the engines still running (each has a root-only record of its ports and secret), so a
//! user's notebook and Spark session outlive it ([`reattach_or_reap`]).

use crate::layout::{free_local_port, listener_uid, mkdir, private_dirs};
use crate::store::{now_ms, UserRow};
use crate::{spark, App, LOCAL_NODE};
use hearth_agent::sandbox::{self, Task, TaskSpec};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

/// Engines appear to the scheduler as running allocations with ids from here up, far
/// above any job id.
pub const ENGINE_ALLOCATION_BASE: u64 = 1 << 40;

/// What an engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Spark's own Connect server (the JVM): what the gateway routes to by default.
    Spark,
    /// LakeSail's Sail, a Spark Connect server in Rust: starts in a fraction of a second,
    /// covers less of Spark. It checks no token, so it runs only on a guarded port.
    Sail,
    /// JupyterLab, served through the door at `/user/NAME/`.
    Notebook,
}

impl EngineKind {
    pub fn name(&self) -> &'static str {
        match self {
            EngineKind::Spark => "spark-connect",
            EngineKind::Sail => "sail",
            EngineKind::Notebook => "notebook",
        }
    }

    /// The engine a Spark Connect client asked for (`;x-hearth-engine=NAME` in its URL).
    pub fn for_connect(name: &str) -> Option<EngineKind> {
        match name {
            "spark" => Some(EngineKind::Spark),
            "sail" => Some(EngineKind::Sail),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    Starting,
    Running,
    /// Ended; why, in words.
    Stopped(String),
}

impl EngineState {
    pub fn name(&self) -> &'static str {
        match self {
            EngineState::Starting => "starting",
            EngineState::Running => "running",
            EngineState::Stopped(_) => "stopped",
        }
    }
}

/// One user's engine. No `Debug`: it holds the engine's secret, which is never logged.
pub struct Engine {
    pub id: i64,
    pub kind: EngineKind,
    pub user_id: i64,
    pub user: String,
    /// Where it serves: the Connect server's gRPC port (protected by `secret`), or the
    /// notebook's HTTP port (guarded: only Hearth's door reaches it).
    pub port: u16,
    /// Its Spark UI's guarded port, reached through the door at `/ui/sessions/ID/`.
    pub ui_port: Option<u16>,
    /// The bearer token Hearth presents to the engine: the Connect server's
    /// `spark.connect.authenticate.token`, or JupyterLab's token.
    pub secret: String,
    pub cores: u32,
    pub memory_limit_mib: u64,
    pub started_ms: i64,
    state: watch::Sender<EngineState>,
    last_used_ms: AtomicI64,
    /// Requests (including open streams) passing through right now.
    active: AtomicUsize,
    task_dir: PathBuf,
    /// The Hearth token a notebook's kernels reach the gateway with; revoked at its end.
    kernel_token: Mutex<Option<i64>>,
    /// Its own network namespace and a process in it, once launched: its ports are on
    /// its own loopback there. None while it starts, or when it shares the machine's.
    netns: Mutex<Option<(PathBuf, u32)>>,
}

impl Engine {
    pub fn state(&self) -> EngineState {
        self.state.borrow().clone()
    }
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
    pub fn last_used_ms(&self) -> i64 {
        self.last_used_ms.load(Ordering::SeqCst)
    }
    fn set_state(&self, s: EngineState) {
        self.state.send_replace(s);
    }
    /// Counts as use now (a notebook's busy kernel, bytes through the door).
    pub fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::SeqCst);
    }
    /// Where the door serves a notebook.
    pub fn url(&self) -> Option<String> {
        (self.kind == EngineKind::Notebook).then(|| notebook_path(&self.user))
    }

    /// Its own network namespace, when it has one.
    pub fn netns(&self) -> Option<PathBuf> {
        self.place().map(|(ns, _)| ns)
    }

    /// A connection to its `port` (its Connect server's or notebook's): on its own network's
    /// loopback, or, when tasks share the machine's network (`shared`), the machine's.
    /// Never the machine's loopback for an engine that should have a network of its own:
    /// whatever listens there on that number is someone else's.
    pub async fn connect(&self, shared: bool, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let netns = self.netns();
        if netns.is_none() && !shared {
            return Err(std::io::Error::other(
                "the engine's network is not known yet",
            ));
        }
        crate::interactive::upstream::connect_tcp(netns.as_deref(), port).await
    }

    /// Its own network namespace and a process in it (whose /proc shows its sockets).
    pub fn place(&self) -> Option<(PathBuf, u32)> {
        self.netns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The uid listening on `port` where the engine serves: its own loopback, or the
    /// machine's.
    fn listener_uid(&self, port: u16) -> Option<u32> {
        match self.place() {
            Some((_, pid)) => hearth_agent::net::listener_uid(pid, port),
            None => listener_uid(port),
        }
    }
}

/// What a restarted Hearth needs to take an engine back (`engines/ID/engine.json`, root's
/// alone: it holds the engine's secret). Written once the engine is launched.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    id: i64,
    kind: EngineKind,
    user_id: i64,
    port: u16,
    ui_port: Option<u16>,
    secret: String,
    cores: u32,
    memory_limit_mib: u64,
    started_ms: i64,
    kernel_token: Option<i64>,
}

fn record_path(app: &App, id: i64) -> PathBuf {
    engine_dir(app, id).join("engine.json")
}

impl Engine {
    fn record(&self) -> Record {
        Record {
            id: self.id,
            kind: self.kind,
            user_id: self.user_id,
            port: self.port,
            ui_port: self.ui_port,
            secret: self.secret.clone(),
            cores: self.cores,
            memory_limit_mib: self.memory_limit_mib,
            started_ms: self.started_ms,
            kernel_token: *self.kernel_token.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

/// The door's path of a user's notebook.
pub fn notebook_path(user: &str) -> String {
    format!("/user/{user}/")
}

type Key = (i64, EngineKind);

/// The live engines, by user id and kind.
#[derive(Default)]
pub struct Engines {
    by_user: Mutex<HashMap<Key, Arc<Engine>>>,
    next_id: AtomicI64,
}

impl Engines {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Engine>>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the user has an engine of `kind`, starting or running.
    pub fn has(&self, user_id: i64, kind: EngineKind) -> bool {
        self.lock().contains_key(&(user_id, kind))
    }

    /// The user's running engine of `kind`, leased (so it is not idle while used).
    pub fn lease_running(&self, user_id: i64, kind: EngineKind) -> Option<Lease> {
        let map = self.lock();
        let e = map.get(&(user_id, kind))?;
        if e.state() != EngineState::Running {
            return None;
        }
        e.active.fetch_add(1, Ordering::SeqCst);
        Some(Lease { engine: e.clone() })
    }

    /// Every live engine, oldest first.
    pub fn list(&self) -> Vec<Arc<Engine>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|e| e.id);
        v
    }

    /// The engine serving on `port`, while it runs.
    pub fn by_port(&self, port: u16) -> Option<Arc<Engine>> {
        self.lock().values().find(|e| e.port == port).cloned()
    }

    pub fn get(&self, id: i64) -> Option<Arc<Engine>> {
        self.lock().values().find(|e| e.id == id).cloned()
    }
}

/// A request's hold on an engine: while any lease lives, the engine is not idle.
pub struct Lease {
    pub engine: Arc<Engine>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.engine.touch();
        self.engine.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Ports reserved for a new engine before it exists (reserving runs nft, so not under the
/// map's lock); handed back if the engine never takes them.
#[derive(Default)]
struct Ports {
    main: Option<u16>,
    ui: Option<u16>,
}

impl Ports {
    fn reserve(app: &App, user: &UserRow, kind: EngineKind) -> Result<Ports, AcquireError> {
        match kind {
            // The Connect port is protected by its secret; its UI gets a guarded port.
            EngineKind::Spark => Ok(Ports {
                main: None,
                ui: app
                    .reserve_port()
                    .map_err(|why| {
                        tracing::warn!(user = %user.name, "the engine runs without its Spark UI: {why}")
                    })
                    .ok(),
            }),
            // A notebook, and Sail, take anyone who reaches their port: without a guarded
            // port, none.
            EngineKind::Notebook | EngineKind::Sail => Ok(Ports {
                main: Some(app.reserve_port().map_err(|why| {
                    AcquireError::Failed(format!(
                        "{}s are off on this machine: their ports cannot be kept from other users ({why})",
                        what(kind)
                    ))
                })?),
                ui: None,
            }),
        }
    }

    fn give_back(self, app: &App) {
        for p in [self.main, self.ui].into_iter().flatten() {
            app.release_port(p);
        }
    }
}

/// The user's engine of `kind`, started if there is none, once it accepts connections.
/// Waits as long as the engine takes to start (no timeout: a cold start is seconds, and
/// failing the first query would only make the client retry); fails only if the engine
/// cannot start or dies.
pub async fn acquire(
    app: &Arc<App>,
    user: &UserRow,
    kind: EngineKind,
) -> Result<Lease, AcquireError> {
    let lease = start(app, user, kind)?;
    wait_running(lease).await
}

/// The user's engine of `kind`, leased, started if there is none (without waiting for it).
pub fn start(app: &Arc<App>, user: &UserRow, kind: EngineKind) -> Result<Lease, AcquireError> {
    if app.is_shutting_down() {
        return Err(AcquireError::Failed("Hearth is shutting down".into()));
    }
    // A new engine must fit now, like a job would: checked before taking the map's lock,
    // since the snapshot lists engines too.
    let has_engine = app.engines.lock().contains_key(&(user.id, kind));
    let mut ports = Ports::default();
    if !has_engine {
        let t0 = std::time::Instant::now();
        admit(app, user, kind).map_err(AcquireError::NoRoom)?;
        ports = Ports::reserve(app, user, kind)?;
        tracing::debug!(user = %user.name, kind = kind.name(), ms = t0.elapsed().as_millis(), "a new engine admitted, its ports reserved");
    }
    let (lease, started) = {
        let mut map = app.engines.lock();
        let (engine, started) = match map.get(&(user.id, kind)) {
            Some(e) => (e.clone(), false),
            None => match new_engine(app, user, kind, std::mem::take(&mut ports)) {
                Some(e) => {
                    map.insert((user.id, kind), e.clone());
                    let (app, user, e2) = (app.clone(), user.clone(), e.clone());
                    tokio::spawn(async move { run(app, user, e2).await });
                    (e, true)
                }
                // Raced with another start that has already taken the ports' place.
                None => return Err(AcquireError::Failed("could not start the engine".into())),
            },
        };
        // Counted under the map's lock, so the reaper never stops an engine being leased.
        engine.active.fetch_add(1, Ordering::SeqCst);
        (Lease { engine }, started)
    };
    ports.give_back(app);
    // The scheduler counts engines: a new one changes what jobs fit (an existing one,
    // leased for each gRPC call, does not, so no wake-up for those).
    if started {
        app.wake.notify_one();
    }
    Ok(lease)
}

/// Waits until the leased engine runs.
pub async fn wait_running(lease: Lease) -> Result<Lease, AcquireError> {
    let mut rx = lease.engine.state.subscribe();
    loop {
        match rx.borrow_and_update().clone() {
            EngineState::Running => return Ok(lease),
            EngineState::Stopped(why) => return Err(AcquireError::Failed(why)),
            EngineState::Starting => {}
        }
        if rx.changed().await.is_err() {
            return Err(AcquireError::Failed("the engine went away".into()));
        }
    }
}

/// Why no engine could be had: no room (the client should not retry at once), or it failed.
#[derive(Debug)]
pub enum AcquireError {
    NoRoom(String),
    Failed(String),
}

/// Whether a new engine for `user` may start now, decided by the scheduler as a job's
/// start is (`hearth_sched::admit`: the user's, group's and queue's limits as running jobs
/// and engines hold them, and the room left on this machine). Says what holds it back.
fn admit(app: &App, user: &UserRow, kind: EngineKind) -> Result<(), String> {
    let (cores, limit) = size(app, kind);
    let need = hearth_sched::Resources::new(cores, limit);
    let policy = app.policy();
    let snapshot = crate::jobs::dispatch::snapshot(app, &policy, allocations(app))
        .map_err(|e| format!("reading the store: {e}"))?;
    let request = hearth_sched::Request {
        user: &user.name,
        node: LOCAL_NODE,
        resources: need,
        queue: None,
    };
    hearth_sched::admit(&snapshot, &request).map_err(|why| refusal(kind, need, &why))
}

/// A refusal in words about engines: what holds the machine or the quota, engines named
/// as engines (their allocations' ids are not jobs' ids).
fn refusal(
    kind: EngineKind,
    need: hearth_sched::Resources,
    why: &hearth_sched::WaitReason,
) -> String {
    use hearth_sched::{LimitKind, Scope, WaitReason};
    let whose = |scope: &Scope| match scope {
        Scope::User => "your quota".to_string(),
        Scope::Group(g) => format!("group {g}'s quota"),
        Scope::Queue(q) => format!("queue {q}'s maximum"),
    };
    let amount = |kind: &LimitKind, n: u64| match kind {
        LimitKind::Cores => format!("{n} cores"),
        LimitKind::Memory => format!("{} MiB", n),
        LimitKind::RunningJobs => format!("{n} running jobs and engines"),
    };
    match why {
        WaitReason::Resources { free, .. } => format!(
            "no room for your {} now: it needs {need} and {free} is free; \
             try again when jobs finish",
            what(kind)
        ),
        WaitReason::AtLimit {
            scope,
            kind: k,
            used,
            max,
            ..
        } => format!(
            "{} has no room for a {} ({need}): jobs and engines hold {} of {}; \
             wait for some to finish or cancel one",
            whose(scope),
            what(kind),
            amount(k, *used),
            amount(k, *max)
        ),
        WaitReason::ExceedsLimit {
            scope,
            kind: k,
            max,
            ..
        } => format!(
            "a {} ({need}) is more than {} allows ({}): ask an admin for a larger quota",
            what(kind),
            whose(scope),
            amount(k, *max)
        ),
        other => format!("your {} cannot start now: {other}", what(kind)),
    }
}

fn what(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::Spark => "Spark Connect engine",
        EngineKind::Sail => "Sail engine",
        EngineKind::Notebook => "notebook",
    }
}

/// An engine's cores and memory limit (heap plus overhead for the JVM).
fn size(app: &App, kind: EngineKind) -> (u32, u64) {
    match kind {
        // Sail needs far less memory, but holds the same share: a user's engine is an
        // engine, whichever they chose.
        EngineKind::Spark | EngineKind::Sail => (
            app.cfg.engine_cores,
            hearth_model::memory_limit_mib(app.cfg.engine_memory_mib),
        ),
        // JupyterLab and thin kernels: the Spark work happens in the Spark engine.
        EngineKind::Notebook => (1, app.cfg.notebook_memory_mib),
    }
}

fn new_engine(app: &App, user: &UserRow, kind: EngineKind, ports: Ports) -> Option<Arc<Engine>> {
    let id = app.engines.next_id.fetch_add(1, Ordering::SeqCst) + 1;
    let (cores, memory_limit_mib) = size(app, kind);
    let port = match kind {
        EngineKind::Spark => free_local_port(),
        EngineKind::Notebook | EngineKind::Sail => ports.main?,
    };
    Some(Arc::new(Engine {
        id,
        kind,
        user_id: user.id,
        user: user.name.clone(),
        port,
        ui_port: ports.ui,
        secret: crate::auth::random_hex(32),
        cores,
        memory_limit_mib,
        started_ms: now_ms(),
        state: watch::channel(EngineState::Starting).0,
        last_used_ms: AtomicI64::new(now_ms()),
        active: AtomicUsize::new(0),
        task_dir: engine_dir(app, id).join("task"),
        kernel_token: Mutex::new(None),
        netns: Mutex::new(None),
    }))
}

pub fn engines_dir(app: &App) -> PathBuf {
    app.cfg.data_dir.join("engines")
}

pub fn engine_dir(app: &App, id: i64) -> PathBuf {
    engines_dir(app).join(id.to_string())
}

pub fn log_path(app: &App, id: i64) -> PathBuf {
    engine_dir(app, id).join("output.log")
}

/// Lays out the engine's directory (root-owned, except `tmp` and `conf`, which belong to
/// the user: `conf` holds the engine's secrets, for its eyes only) and describes its task.
fn prepare(app: &App, user: &UserRow, e: &Engine) -> Result<TaskSpec, String> {
    let rt = app.runtime().map_err(|p| p.join("; "))?;
    let io = |what: &str, err: std::io::Error| format!("{what}: {err}");
    let dir = engine_dir(app, e.id);
    let linux = user.linux(app);
    let owner = app.isolation.enabled.then_some((linux.uid, linux.gid));
    mkdir(&engines_dir(app), 0o700, None).map_err(|err| io("creating engines/", err))?;
    // A directory left by an earlier Hearth with the same id holds nothing of value.
    let _ = std::fs::remove_dir_all(&dir);
    mkdir(&dir, 0o700, None).map_err(|err| io("creating the engine's directory", err))?;
    let properties = match e.kind {
        EngineKind::Spark => spark::engine_properties_file(
            &e.secret,
            &crate::auth::random_hex(32),
            &match e.ui_port {
                Some(port) => spark::UiPlace::Port {
                    port,
                    proxy_base: format!("/ui/sessions/{}", e.id),
                },
                None => spark::UiPlace::Off,
            },
        ),
        EngineKind::Notebook | EngineKind::Sail => String::new(),
    };
    let private = private_dirs(&dir, owner, &properties)?;
    hearth_agent::users::ensure_workspace(&linux).map_err(|err| err.to_string())?;
    let (argv, mut env) = match e.kind {
        EngineKind::Spark => (
            spark::connect_server_argv(&spark::ConnectEngine {
                spark_home: &rt.spark_home,
                user: &user.name,
                cores: e.cores,
                heap_mib: app.cfg.engine_memory_mib,
                port: e.port,
                properties_file: &private.properties,
            }),
            spark::engine_env(&rt, &linux, &user.name),
        ),
        EngineKind::Sail => (
            spark::sail_server_argv(&rt.sail(), e.port),
            spark::engine_env(&rt, &linux, &user.name),
        ),
        EngineKind::Notebook => {
            // The kernels' `spark`: set up by an IPython startup file in the notebook's
            // private /tmp (IPYTHONDIR), connected with a token of the user's own.
            let startup = private.tmp.join("ipython/profile_default/startup");
            for d in [
                "ipython",
                "ipython/profile_default",
                "ipython/profile_default/startup",
            ] {
                mkdir(&private.tmp.join(d), 0o700, owner)
                    .map_err(|err| io("creating the notebook's IPython profile", err))?;
            }
            let file = startup.join("00-hearth-spark.py");
            std::fs::write(&file, spark::NOTEBOOK_STARTUP_PY)
                .map_err(|err| io("writing the notebook's startup file", err))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&file, Some(uid), Some(gid))
                    .map_err(|err| io("handing the startup file to its user", err))?;
            }
            let remote = kernel_remote(app, user, e)?;
            (
                spark::notebook_argv(&spark::NotebookServer {
                    python: &rt.python,
                    port: e.port,
                    base_url: &notebook_path(&user.name),
                    root_dir: &linux.home,
                }),
                spark::notebook_env(&rt, &linux, &user.name, &e.secret, remote.as_deref()),
            )
        }
    };
    env.push(("HEARTH_SERVER".into(), app.server_url_for_tasks()));
    Ok(TaskSpec {
        id: format!("{}-engine-{}", app.instance, e.id),
        dir: e.task_dir.clone(),
        user: linux.clone(),
        argv,
        env,
        cwd: linux.home.clone(),
        rw_paths: vec![linux.home.clone()],
        ro_paths: vec![private.conf, rt.root.clone()],
        hidden_paths: vec![app.cfg.data_dir.clone()],
        tmp_dir: private.tmp,
        log_path: log_path(app, e.id),
        memory_limit_mib: e.memory_limit_mib,
        cpu_cores: e.cores,
        pids_max: 4096,
        network: app.task_network.clone().map(|mut n| {
            let policy = app.policy();
            n.egress = policy.egress(&user.name, None);
            n.deny.extend(policy.deny_networks().iter().copied());
            n
        }),
    })
}

/// The name of the Hearth token a notebook's kernels use; revoked when the notebook ends,
/// and by the next start if Hearth stopped without revoking it.
const KERNEL_TOKEN_PREFIX: &str = "notebook-kernel-";

/// `SPARK_REMOTE` for a notebook's kernels: the gateway over loopback (plaintext, which
/// PySpark speaks to a host named `localhost`), with a new token of the user's. None when
/// the gateway is off or not reachable on loopback (said in the log).
fn kernel_remote(app: &App, user: &UserRow, e: &Engine) -> Result<Option<String>, String> {
    let Some(connect) = &app.connect else {
        tracing::warn!(
            engine = e.id,
            "the gateway is off: notebook kernels get no `spark`"
        );
        return Ok(None);
    };
    // In a network of its own, the kernels reach the gateway at the network's gateway
    // address (forwarded to where it listens); else on the machine's loopback.
    let host = match &app.task_network {
        Some(n) => hearth_agent::net::TaskNetwork::gateway(&n.range).to_string(),
        None => {
            let ip = connect.addr.ip();
            if !(ip.is_loopback() || ip.is_unspecified()) {
                tracing::warn!(
                    engine = e.id,
                    "the gateway listens on {ip} only: notebook kernels reach it at localhost, so they get no `spark`"
                );
                return Ok(None);
            }
            "localhost".to_string()
        }
    };
    // Spark Connect only: code in a notebook runs as its user, but need not drive the API.
    let t = crate::auth::new_token(
        user,
        &format!("{KERNEL_TOKEN_PREFIX}{}", e.id),
        None,
        crate::auth::Scope::Connect,
    );
    let id = app
        .store
        .insert_token(&t.row)
        .map_err(|err| format!("making the kernels' token: {err}"))?;
    *e.kernel_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
    // The token as plain metadata: relayed, and no per-call credentials in the kernel.
    Ok(Some(format!(
        "sc://{host}:{}/;x-hearth-token={}",
        connect.addr.port(),
        crate::auth::format_token(id, &t.secret)
    )))
}

/// Starts the engine, marks it running once its port is open, and records its end.
async fn run(app: Arc<App>, user: UserRow, e: Arc<Engine>) {
    // The cold path's steps, timed (at debug): a user's first query waits on all of them.
    let t0 = std::time::Instant::now();
    let prepared = {
        let (app, e) = (app.clone(), e.clone());
        tokio::task::spawn_blocking(move || prepare(&app, &user, &e)).await
    };
    let spec = match prepared {
        Ok(Ok(spec)) => spec,
        Ok(Err(why)) => return ended(&app, &e, format!("could not prepare the engine: {why}")),
        Err(why) => return ended(&app, &e, format!("could not prepare the engine: {why}")),
    };
    let prepared_ms = t0.elapsed().as_millis();
    let task = match Task::launch(&spec, &app.cfg.shim).await {
        Ok(t) => t,
        Err(why) => return ended(&app, &e, format!("could not start the engine: {why}")),
    };
    tracing::info!(engine = e.id, user = %e.user, port = e.port, "engine starting");
    tracing::debug!(
        engine = e.id,
        prepared_ms,
        launched_ms = t0.elapsed().as_millis(),
        "engine's directory prepared, then its task launched (the shim says it runs)"
    );
    // Written as root under umask 077: readable by Hearth alone.
    if let Ok(text) = serde_json::to_string(&e.record()) {
        if let Err(err) = std::fs::write(record_path(&app, e.id), text) {
            tracing::warn!(
                engine = e.id,
                "recording the engine (a restart will stop it): {err}"
            );
        }
    }
    let owner_uid = if app.isolation.enabled {
        spec.user.uid
    } else {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    };
    follow(app, e, task, owner_uid, Some(t0)).await;
}

/// Marks the engine running once its port listens as its owner, waits for its end, and
/// records it. `since`: when its start began (None for an engine taken back).
async fn follow(
    app: Arc<App>,
    e: Arc<Engine>,
    mut task: Task,
    owner_uid: u32,
    since: Option<std::time::Instant>,
) {
    *e.netns.lock().unwrap_or_else(|p| p.into_inner()) = task.netns().zip(task.pid());
    let ready = async {
        // Ready when the port listens *as the engine's uid*, in the engine's own network:
        // a port someone else grabbed must never receive the engine's secret.
        loop {
            if e.listener_uid(e.port).is_some_and(|uid| uid == owner_uid) {
                return;
            }
            // Every 25 ms: the first query waits on this, and /proc/net/tcp is cheap to read.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let exit = tokio::select! {
        _ = ready => {
            // Idle from now, not from its start: on a busy machine a start can outlast a
            // short idle timeout, and the reaper would stop the engine as soon as it is ready.
            e.touch();
            e.set_state(EngineState::Running);
            let start_ms = since.map(|t| t.elapsed().as_millis());
            tracing::info!(engine = e.id, user = %e.user, start_ms, "engine ready");
            task.wait().await
        }
        exit = task.wait() => exit,
    };
    let why = match (exit.code, exit.signal) {
        _ if exit.oom_killed => format!(
            "the engine was killed for using more than its {} MiB",
            e.memory_limit_mib
        ),
        (Some(c), _) => format!("the engine exited with code {c}"),
        (None, Some(s)) => format!("the engine was killed by signal {s}"),
        (None, None) => "the engine ended".into(),
    };
    ended(&app, &e, why);
}

fn ended(app: &App, e: &Arc<Engine>, why: String) {
    if e.state() == EngineState::Starting {
        tracing::warn!(engine = e.id, user = %e.user, "engine did not start: {why}");
    } else {
        tracing::info!(engine = e.id, user = %e.user, "engine stopped: {why}");
    }
    e.set_state(EngineState::Stopped(why));
    {
        let mut map = app.engines.lock();
        if map
            .get(&(e.user_id, e.kind))
            .is_some_and(|cur| cur.id == e.id)
        {
            map.remove(&(e.user_id, e.kind));
        }
    }
    if let Some(p) = e.ui_port {
        app.release_port(p);
    }
    if matches!(e.kind, EngineKind::Notebook | EngineKind::Sail) {
        app.release_port(e.port);
    }
    let token = e
        .kernel_token
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(id) = token {
        if let Err(err) = app.store.delete_token(id, e.user_id) {
            tracing::error!(engine = e.id, "revoking the kernels' token: {err}");
        }
        app.tokens.forget(id);
    }
    // The secrets and scratch space go with the engine; its log stays for the admin.
    let _ = std::fs::remove_file(record_path(app, e.id));
    let dir = engine_dir(app, e.id);
    let _ = std::fs::remove_dir_all(dir.join("conf"));
    let _ = std::fs::remove_dir_all(dir.join("tmp"));
    app.wake.notify_one();
}

/// Stops the engine (the owner's `session stop`, the idle timeout, or shutdown). New
/// requests of its user start a fresh engine at once.
pub async fn stop(app: &Arc<App>, e: &Arc<Engine>) {
    {
        let mut map = app.engines.lock();
        if map
            .get(&(e.user_id, e.kind))
            .is_some_and(|cur| cur.id == e.id)
        {
            map.remove(&(e.user_id, e.kind));
        }
    }
    sandbox::stop(&e.task_dir, app.cfg.stop_grace).await;
}

/// How long an engine of `kind` may sit unused.
fn idle_timeout(app: &App, kind: EngineKind) -> Duration {
    match kind {
        EngineKind::Spark | EngineKind::Sail => app.cfg.engine_idle_timeout,
        EngineKind::Notebook => app.cfg.notebook_idle_timeout,
    }
}

/// Stops engines nobody used for their kind's idle timeout. Runs until Hearth shuts down.
pub async fn reap_idle(app: Arc<App>, mut stop: crate::background::Stop) {
    let shortest = app
        .cfg
        .engine_idle_timeout
        .min(app.cfg.notebook_idle_timeout);
    let tick = (shortest / 5).clamp(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = crate::background::stopped(&mut stop) => return,
            _ = tokio::time::sleep(tick) => {}
        }
        // A notebook whose kernel is running a cell is in use, even if nobody watches it.
        let notebooks: Vec<Arc<Engine>> = app
            .engines
            .list()
            .into_iter()
            .filter(|e| e.kind == EngineKind::Notebook && e.state() == EngineState::Running)
            .collect();
        for e in notebooks {
            if kernels_busy(&app, &e).await {
                e.touch();
            }
        }
        let now = now_ms();
        let idle_engines: Vec<Arc<Engine>> = {
            let mut map = app.engines.lock();
            let keys: Vec<Key> = map
                .iter()
                .filter(|(_, e)| {
                    e.state() == EngineState::Running
                        && e.active() == 0
                        && e.last_used_ms() < now - idle_timeout(&app, e.kind).as_millis() as i64
                })
                .map(|(k, _)| *k)
                .collect();
            // Taken out under the lock: a request arriving now starts a new engine rather
            // than leasing one about to stop.
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for e in idle_engines {
            tracing::info!(engine = e.id, user = %e.user, kind = e.kind.name(), "stopping an idle engine");
            let app = app.clone();
            tokio::spawn(async move { sandbox::stop(&e.task_dir, app.cfg.stop_grace).await });
        }
    }
}

/// Whether JupyterLab reports a kernel busy (or starting) right now.
async fn kernels_busy(app: &App, e: &Engine) -> bool {
    let path = format!("{}api/kernels", notebook_path(&e.user));
    if e.netns().is_none() && app.task_network.is_some() {
        return false; // its network is not known yet: its secret goes nowhere else
    }
    let auth = format!("token {}", e.secret);
    match crate::interactive::upstream::get_local(e.netns().as_deref(), e.port, &path, &auth).await
    {
        Ok((200, body)) => serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .map(|kernels| {
                kernels
                    .iter()
                    .any(|k| matches!(k["execution_state"].as_str(), Some("busy" | "starting")))
            })
            .unwrap_or(false),
        _ => false,
    }
}

/// Stops every engine (Hearth is shutting down).
pub async fn stop_all(app: &Arc<App>) {
    let all: Vec<Arc<Engine>> = app.engines.lock().drain().map(|(_, e)| e).collect();
    let stops: Vec<_> = all
        .into_iter()
        .map(|e| {
            let grace = app.cfg.stop_grace;
            tokio::spawn(async move { sandbox::stop(&e.task_dir, grace).await })
        })
        .collect();
    for s in stops {
        let _ = s.await;
    }
}

/// After a crash: takes back the engines an earlier Hearth left running (their shims
/// outlive it), so that users' notebooks and sessions survive; stops those it cannot take
/// back (no record, or their user is gone). A graceful shutdown stops every engine, so this
/// finds some only after a crash.
pub async fn reattach_or_reap(app: &Arc<App>) {
    let mut kept_tokens = Vec::new();
    if let Ok(entries) = std::fs::read_dir(engines_dir(app)) {
        for entry in entries.flatten() {
            let task_dir = entry.path().join("task");
            let Ok(Some(mut task)) = Task::reattach(&task_dir) else {
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            };
            match take_back(app, &entry.path()) {
                Some(e) => {
                    tracing::info!(engine = e.id, user = %e.user, kind = e.kind.name(), "took back an engine left by an earlier Hearth");
                    kept_tokens.extend(*e.kernel_token.lock().unwrap_or_else(|p| p.into_inner()));
                    let owner = app
                        .store
                        .user_by_id(e.user_id)
                        .ok()
                        .flatten()
                        .map(|u| u.task_uid(app))
                        .unwrap_or(0);
                    tokio::spawn(follow(app.clone(), e, task, owner, None));
                }
                None => {
                    tracing::info!("stopping an engine left by an earlier Hearth");
                    sandbox::stop(&task_dir, app.cfg.stop_grace).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), task.wait()).await;
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    // Kernels' tokens of notebooks that ended with an earlier Hearth (not of those taken back).
    match app
        .store
        .delete_tokens_named_like(KERNEL_TOKEN_PREFIX, &kept_tokens)
    {
        Ok(ids) => ids.into_iter().for_each(|id| app.tokens.forget(id)),
        Err(err) => tracing::error!("revoking notebooks' leftover tokens: {err}"),
    }
}

/// The engine recorded in `dir`, back in the map with its ports guarded again, or None.
fn take_back(app: &Arc<App>, dir: &std::path::Path) -> Option<Arc<Engine>> {
    let text = std::fs::read_to_string(dir.join("engine.json")).ok()?;
    let r: Record = serde_json::from_str(&text).ok()?;
    let user = app.store.user_by_id(r.user_id).ok().flatten()?;
    let mut map = app.engines.lock();
    if map.contains_key(&(r.user_id, r.kind)) {
        return None;
    }
    if matches!(r.kind, EngineKind::Notebook | EngineKind::Sail) {
        app.retake_port(r.port);
    }
    if let Some(p) = r.ui_port {
        app.retake_port(p);
    }
    // New engines must not reuse a taken-back id.
    app.engines.next_id.fetch_max(r.id, Ordering::SeqCst);
    let e = Arc::new(Engine {
        id: r.id,
        kind: r.kind,
        user_id: r.user_id,
        user: user.name,
        port: r.port,
        ui_port: r.ui_port,
        secret: r.secret,
        cores: r.cores,
        memory_limit_mib: r.memory_limit_mib,
        started_ms: r.started_ms,
        state: watch::channel(EngineState::Starting).0,
        last_used_ms: AtomicI64::new(now_ms()),
        active: AtomicUsize::new(0),
        task_dir: dir.join("task"),
        kernel_token: Mutex::new(r.kernel_token),
        netns: Mutex::new(None),
    });
    map.insert((r.user_id, r.kind), e.clone());
    Some(e)
}

/// Live engines as allocations of their users, for the scheduler's snapshot: an engine
/// counts against its user's quota, and jobs are admitted only into what is left.
pub fn allocations(app: &App) -> Vec<hearth_sched::Allocation> {
    app.engines
        .list()
        .iter()
        .map(|e| hearth_sched::Allocation {
            job: ENGINE_ALLOCATION_BASE + e.id as u64,
            user: e.user.clone(),
            node: LOCAL_NODE.into(),
            resources: hearth_sched::Resources::new(e.cores, e.memory_limit_mib),
        })
        .collect()
}

/// An engine's response body, passed through frame by frame (trailers included), for the
/// gateway and the door alike. Holds the lease so an engine with an open stream is never idle.
pub struct LeasedBody {
    inner: Inner,
    _lease: Option<Lease>,
}

enum Inner {
    Upstream(Incoming),
    /// Frames Hearth answers with itself, in order.
    Own(std::collections::VecDeque<Frame<Bytes>>),
}

impl LeasedBody {
    pub fn new(inner: Incoming, lease: Option<Lease>) -> LeasedBody {
        LeasedBody {
            inner: Inner::Upstream(inner),
            _lease: lease,
        }
    }

    /// A body with nothing in it (an answer Hearth gives itself).
    pub fn empty() -> LeasedBody {
        Self::frames(Vec::new())
    }

    /// A body of Hearth's own frames (data and trailers).
    pub fn frames(frames: Vec<Frame<Bytes>>) -> LeasedBody {
        LeasedBody {
            inner: Inner::Own(frames.into()),
            _lease: None,
        }
    }
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Own(frames) => Poll::Ready(frames.pop_front().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Own(frames) => frames.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Own(frames) => SizeHint::with_exact(
                frames
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum(),
            ),
        }
    }
}
