//! Spark Connect engines: one Connect server per user, run as a sandboxed task under the
//! user's uid, started when the gateway first needs it, kept while used, and stopped after
//! the idle timeout. A live engine holds its cores and memory like a running job, so batch
//! admission leaves room for it (see [`allocations`]).
//!
//! Engines are kept in memory only. Hearth stops them all when it shuts down; after a crash,
//! the next start stops whatever engine processes were left ([`reap_orphans`]), so a
//! restarted Hearth begins with none.

use crate::layout::{free_local_port, listener_uid, mkdir, private_dirs};
use crate::store::{now_ms, UserRow};
use crate::{spark, App, LOCAL_NODE};
use hearth_agent::sandbox::{self, Task, TaskSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Engines appear to the scheduler as running allocations with ids from here up, far
/// above any job id.
pub const ENGINE_ALLOCATION_BASE: u64 = 1 << 40;

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
    pub user_id: i64,
    pub user: String,
    pub port: u16,
    /// Its Spark UI's guarded port, reached through the door at `/ui/sessions/ID/`.
    pub ui_port: Option<u16>,
    /// The bearer token the gateway presents to the engine.
    pub secret: String,
    pub cores: u32,
    pub memory_limit_mib: u64,
    pub started_ms: i64,
    state: watch::Sender<EngineState>,
    last_used_ms: AtomicI64,
    /// Requests (including open streams) passing through right now.
    active: AtomicUsize,
    task_dir: PathBuf,
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
}

/// The live engines, by user id.
#[derive(Default)]
pub struct Engines {
    by_user: Mutex<HashMap<i64, Arc<Engine>>>,
    next_id: AtomicI64,
}

impl Engines {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Engine>>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every live engine, oldest first.
    pub fn list(&self) -> Vec<Arc<Engine>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|e| e.id);
        v
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
        self.engine.last_used_ms.store(now_ms(), Ordering::SeqCst);
        self.engine.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The user's engine, started if there is none, once it accepts connections. Waits as long
/// as the engine takes to start (no timeout: a cold start is seconds, and failing the first
/// query would only make the client retry); fails only if the engine cannot start or dies.
pub async fn acquire(app: &Arc<App>, user: &UserRow) -> Result<Lease, AcquireError> {
    if app.is_shutting_down() {
        return Err(AcquireError::Failed("Hearth is shutting down".into()));
    }
    // A new engine must fit now, like a job would: checked before taking the map's lock,
    // since the snapshot lists engines too.
    let has_engine = app.engines.lock().contains_key(&user.id);
    let mut ui_port = None;
    if !has_engine {
        admit(app, user).map_err(AcquireError::NoRoom)?;
        // Reserved outside the map's lock (it runs nft); handed back below if unused.
        ui_port = match app.reserve_port() {
            Ok(p) => Some(p),
            Err(why) => {
                tracing::warn!(user = %user.name, "the engine runs without its Spark UI: {why}");
                None
            }
        };
    }
    let lease = {
        let mut map = app.engines.lock();
        let engine = match map.get(&user.id) {
            Some(e) => e.clone(),
            None => {
                let e = new_engine(app, user, ui_port.take());
                map.insert(user.id, e.clone());
                let (app, user, e2) = (app.clone(), user.clone(), e.clone());
                tokio::spawn(async move { run(app, user, e2).await });
                e
            }
        };
        // Counted under the map's lock, so the reaper never stops an engine being leased.
        engine.active.fetch_add(1, Ordering::SeqCst);
        Lease { engine }
    };
    if let Some(p) = ui_port {
        app.release_port(p);
    }
    app.wake.notify_one();
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

/// Whether a new engine for `user` fits now: in what running jobs and engines leave free on
/// the machine, and within the user's own quota. Says what holds it back if not.
fn admit(app: &App, user: &UserRow) -> Result<(), String> {
    let heap = app.cfg.engine_memory_mib;
    let need =
        hearth_sched::Resources::new(app.cfg.engine_cores, hearth_model::memory_limit_mib(heap));
    let policy = app.policy();
    let snapshot =
        crate::dispatch::snapshot(app, &policy).map_err(|e| format!("reading the store: {e}"))?;
    let (mut used, mut mine) = (
        hearth_sched::Resources::default(),
        hearth_sched::Resources::default(),
    );
    for a in &snapshot.running {
        used = used.add(&a.resources);
        if a.user == user.name {
            mine = mine.add(&a.resources);
        }
    }
    let free = crate::dispatch::node_capacity(app).saturating_sub(&used);
    if !need.fits_in(&free) {
        return Err(format!(
            "no room for your Spark Connect engine now: it needs {need} and {free} is free; \
             try again when jobs finish"
        ));
    }
    let quota = policy.config.user_quota(&user.name);
    let over_cores = quota.max_cores.is_some_and(|m| mine.cores + need.cores > m);
    let over_memory = quota
        .max_memory_mib
        .is_some_and(|m| mine.memory_mib + need.memory_mib > m);
    if over_cores || over_memory {
        return Err(format!(
            "your quota has no room for a Spark Connect engine ({need}): your jobs and engines \
             hold {mine}; wait for some to finish or cancel one"
        ));
    }
    Ok(())
}

fn new_engine(app: &App, user: &UserRow, ui_port: Option<u16>) -> Arc<Engine> {
    let id = app.engines.next_id.fetch_add(1, Ordering::SeqCst) + 1;
    let heap = app.cfg.engine_memory_mib;
    Arc::new(Engine {
        id,
        user_id: user.id,
        user: user.name.clone(),
        port: free_local_port(),
        ui_port,
        secret: crate::auth::random_hex(32),
        cores: app.cfg.engine_cores,
        memory_limit_mib: hearth_model::memory_limit_mib(heap),
        started_ms: now_ms(),
        state: watch::channel(EngineState::Starting).0,
        last_used_ms: AtomicI64::new(now_ms()),
        active: AtomicUsize::new(0),
        task_dir: engine_dir(app, id).join("task"),
    })
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
    let rt = crate::dispatch::runtime(app).map_err(|p| p.join("; "))?;
    let io = |what: &str, err: std::io::Error| format!("{what}: {err}");
    let dir = engine_dir(app, e.id);
    let linux = user.linux(app);
    let owner = app.isolation.enabled.then_some((linux.uid, linux.gid));
    mkdir(&engines_dir(app), 0o700, None).map_err(|err| io("creating engines/", err))?;
    // A directory left by an earlier Hearth with the same id holds nothing of value.
    let _ = std::fs::remove_dir_all(&dir);
    mkdir(&dir, 0o700, None).map_err(|err| io("creating the engine's directory", err))?;
    let private = private_dirs(
        &dir,
        owner,
        &spark::engine_properties_file(
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
    )?;
    hearth_agent::users::ensure_workspace(&linux).map_err(|err| err.to_string())?;
    let argv = spark::connect_server_argv(&spark::ConnectEngine {
        spark_home: &rt.spark_home,
        user: &user.name,
        cores: e.cores,
        heap_mib: app.cfg.engine_memory_mib,
        port: e.port,
        properties_file: &private.properties,
    });
    Ok(TaskSpec {
        id: format!("{}-engine-{}", app.instance, e.id),
        dir: e.task_dir.clone(),
        user: linux.clone(),
        argv,
        env: spark::engine_env(&rt, &linux, &user.name),
        cwd: linux.home.clone(),
        rw_paths: vec![linux.home.clone()],
        ro_paths: vec![private.conf, rt.root.clone()],
        hidden_paths: vec![app.cfg.data_dir.clone()],
        tmp_dir: private.tmp,
        log_path: log_path(app, e.id),
        memory_limit_mib: e.memory_limit_mib,
        cpu_cores: e.cores,
        pids_max: 4096,
    })
}

/// Starts the engine, marks it running once its port is open, and records its end.
async fn run(app: Arc<App>, user: UserRow, e: Arc<Engine>) {
    let prepared = {
        let (app, e) = (app.clone(), e.clone());
        tokio::task::spawn_blocking(move || prepare(&app, &user, &e)).await
    };
    let spec = match prepared {
        Ok(Ok(spec)) => spec,
        Ok(Err(why)) => return ended(&app, &e, format!("could not prepare the engine: {why}")),
        Err(why) => return ended(&app, &e, format!("could not prepare the engine: {why}")),
    };
    let mut task = match Task::launch(&spec, &app.cfg.shim).await {
        Ok(t) => t,
        Err(why) => return ended(&app, &e, format!("could not start the engine: {why}")),
    };
    tracing::info!(engine = e.id, user = %e.user, port = e.port, "engine starting");
    let owner_uid = if app.isolation.enabled {
        spec.user.uid
    } else {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    };
    let ready = async {
        // Ready when the port listens *as the engine's uid*: a port someone else grabbed
        // must never receive the engine's secret.
        loop {
            if listener_uid(e.port).is_some_and(|uid| uid == owner_uid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let exit = tokio::select! {
        _ = ready => {
            e.set_state(EngineState::Running);
            tracing::info!(engine = e.id, user = %e.user, "engine ready");
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
        if map.get(&e.user_id).is_some_and(|cur| cur.id == e.id) {
            map.remove(&e.user_id);
        }
    }
    if let Some(p) = e.ui_port {
        app.release_port(p);
    }
    // The secrets and scratch space go with the engine; its log stays for the admin.
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
        if map.get(&e.user_id).is_some_and(|cur| cur.id == e.id) {
            map.remove(&e.user_id);
        }
    }
    sandbox::stop(&e.task_dir, app.cfg.stop_grace).await;
}

/// Stops engines nobody used for the idle timeout. Runs until Hearth shuts down.
pub async fn reap_idle(app: Arc<App>) {
    let idle = app.cfg.engine_idle_timeout;
    let tick = (idle / 5).clamp(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        tokio::time::sleep(tick).await;
        if app.is_shutting_down() {
            return;
        }
        let cutoff = now_ms() - idle.as_millis() as i64;
        let idle_engines: Vec<Arc<Engine>> = {
            let mut map = app.engines.lock();
            let ids: Vec<i64> = map
                .iter()
                .filter(|(_, e)| {
                    e.state() == EngineState::Running
                        && e.active() == 0
                        && e.last_used_ms() < cutoff
                })
                .map(|(&uid, _)| uid)
                .collect();
            // Taken out under the lock: a request arriving now starts a new engine rather
            // than leasing one about to stop.
            ids.iter().filter_map(|uid| map.remove(uid)).collect()
        };
        for e in idle_engines {
            tracing::info!(engine = e.id, user = %e.user, "stopping an idle engine");
            let app = app.clone();
            tokio::spawn(async move { sandbox::stop(&e.task_dir, app.cfg.stop_grace).await });
        }
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

/// After a crash: stops engine processes an earlier Hearth left running (their shims
/// outlive it), then forgets them. Engines are not reattached: the gateway knows their
/// secrets only in memory, and a user's next query simply starts a fresh one.
pub async fn reap_orphans(app: &Arc<App>) {
    let Ok(entries) = std::fs::read_dir(engines_dir(app)) else {
        return;
    };
    for entry in entries.flatten() {
        let task_dir = entry.path().join("task");
        if let Ok(Some(mut task)) = Task::reattach(&task_dir) {
            tracing::info!("stopping an engine left by an earlier Hearth");
            sandbox::stop(&task_dir, app.cfg.stop_grace).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), task.wait()).await;
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
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
