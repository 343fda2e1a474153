//! The dispatcher: feeds the scheduler a snapshot, applies its plan in one transaction, and
//! runs admitted jobs on the machine (prepare the job directory, launch the sandboxed task,
//! watch it, record how it ended exactly once). Also reconciles after a restart.

use crate::layout::{mkdir, private_dirs};
use crate::spark;
use crate::standalone::Part;
use crate::store::{now_ms, JobEnd, JobRow, UserRow, Workers};
use crate::{App, LOCAL_NODE};
use hearth_agent::sandbox::{self, Task, TaskExit, TaskSpec};
use hearth_model::api::FileRef;
use hearth_model::JobState;
use hearth_sched::{Allocation, Node, PendingJob, Resources, Snapshot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the dispatcher looks again even when nothing woke it.
const TICK: Duration = Duration::from_secs(2);
/// How often a missing runtime is looked for again (e.g. after `hearth runtime install`).
const RUNTIME_RECHECK: Duration = Duration::from_secs(10);

/// Everything a job holds (or, queued, would hold in local mode), over all its nodes.
pub fn gang(job: &JobRow) -> Resources {
    holdings(job)
        .iter()
        .fold(Resources::ZERO, |sum, (_, r)| sum.add(r))
}

/// What a job holds on each node, the driver's node first: all of it there in local mode;
/// spread, the driver's part on its node and each node's executors' parts.
pub fn holdings(job: &JobRow) -> Vec<(String, Resources)> {
    let node = job.node.clone().unwrap_or_else(|| LOCAL_NODE.into());
    if job.workers.is_empty() {
        let local = Resources::new(
            job.resources.total_cores(),
            job.resources.memory_limit_mib(),
        );
        return vec![(node, local)];
    }
    let g = spread_gang(&job.resources);
    let mut out = vec![(node, g.driver)];
    for w in &job.workers {
        let part = g.executor.times(w.count);
        match out.iter_mut().find(|(n, _)| *n == w.node) {
            Some((_, held)) => *held = held.add(&part),
            None => out.push((w.node.clone(), part)),
        }
    }
    out
}

/// A job's gang as a standalone cluster of its own: the driver with the master beside it,
/// and executors each with its share of a worker. Each JVM gets Spark's usual overhead
/// (`memory_limit_mib`), each daemon `spark::DAEMON_MIB` (a node's worker is counted with
/// each of its executors: a little more than it needs when a node runs several).
pub fn spread_gang(r: &hearth_model::JobResources) -> hearth_sched::Gang {
    let daemon = crate::spark::DAEMON_MIB;
    hearth_sched::Gang {
        driver: Resources::new(
            r.driver_cores,
            hearth_model::memory_limit_mib(r.driver_memory_mib) + daemon,
        ),
        executor: Resources::new(
            r.executor_cores,
            hearth_model::memory_limit_mib(r.executor_memory_mib) + daemon,
        ),
        executors: r.num_executors,
        spread: true,
    }
}

pub fn node_capacity(app: &App) -> Resources {
    Resources::new(app.cfg.cores, app.cfg.memory_mib)
}

pub async fn run(app: Arc<App>) {
    loop {
        if app.is_shutting_down() {
            return;
        }
        if let Err(e) = pass(&app) {
            tracing::error!("scheduling pass failed: {e}");
        }
        tokio::select! {
            _ = app.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// The runtime, re-checking now and then while it is missing.
pub fn runtime(app: &App) -> Result<crate::runtime::Runtime, Vec<String>> {
    {
        let guard = app.runtime.read().unwrap_or_else(|p| p.into_inner());
        if guard.0.is_ok() || guard.1.elapsed() < RUNTIME_RECHECK {
            return guard.0.clone();
        }
    }
    let fresh = app.cfg.runtime.locate();
    let mut guard = app.runtime.write().unwrap_or_else(|p| p.into_inner());
    *guard = (fresh.clone(), Instant::now());
    fresh
}

/// How the scheduler sees a job. A job that fits one node (by its capacity) runs in local
/// mode; one with executors that fits none may be spread over several nodes, on a
/// standalone cluster of its own (`spread_gang`). Constrained jobs run whole on one node.
fn options(j: &JobRow, largest: &[Resources]) -> hearth_sched::JobOptions {
    let constraints: Vec<(String, String)> = j
        .spec
        .constraints
        .iter()
        .filter_map(|c| hearth_model::cluster::parse_label(c).ok())
        .collect();
    let local = gang(j);
    let spread = j.resources.num_executors > 0
        && constraints.is_empty()
        && (!j.workers.is_empty() || !largest.iter().any(|c| local.fits_in(c)));
    hearth_sched::JobOptions {
        queue: Some(j.queue.clone()),
        priority: j.priority.parse().unwrap_or_default(),
        preemptible: j.preemptible,
        gang: spread.then(|| spread_gang(&j.resources)),
        constraints,
    }
}

/// The scheduler's view of now: the node, what runs, what waits, and the policy.
pub fn snapshot(app: &App, policy: &crate::policy::Policy) -> Result<Snapshot, rusqlite::Error> {
    let queued = app.store.jobs_in(&[JobState::Queued])?;
    let active = app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?;
    let mut nodes = vec![Node {
        name: LOCAL_NODE.into(),
        capacity: node_capacity(app),
        // Without a runtime here, jobs can still run on joined nodes that have one; the
        // control plane alone (`hearth server`) runs none.
        schedulable: app.cfg.local_jobs && runtime(app).is_ok(),
        labels: Vec::new(),
    }];
    // Joined nodes that are connected, ready (not draining, not down) and have a runtime.
    // Down or draining nodes with running jobs stay in the snapshot, closed, so that their
    // allocations are counted where they are.
    if let Some(cluster) = &app.cluster {
        let ready = cluster.job_ready();
        let now = now_ms();
        for n in app.store.nodes()? {
            if n.removed_at.is_some() || n.name == LOCAL_NODE {
                continue;
            }
            let open = ready.contains_key(&n.id)
                && cluster.state(&n, now) == hearth_model::cluster::NodeState::Ready;
            let busy = active
                .iter()
                .any(|j| holdings(j).iter().any(|(node, _)| *node == n.name));
            if open || busy {
                nodes.push(Node {
                    name: n.name.clone(),
                    capacity: Resources::new(n.cores, n.memory_mib),
                    schedulable: open,
                    labels: n.labels.clone().into_iter().collect(),
                });
            }
        }
    }
    let capacities: Vec<Resources> = nodes
        .iter()
        .filter(|n| n.schedulable)
        .map(|n| n.capacity)
        .collect();
    let job_options = queued
        .iter()
        .chain(active.iter())
        .map(|j| (j.id as u64, options(j, &capacities)))
        .collect();
    Ok(Snapshot {
        now_ms: now_ms(),
        nodes,
        running: active
            .iter()
            .flat_map(|j| {
                holdings(j).into_iter().map(|(node, resources)| Allocation {
                    job: j.id as u64,
                    user: j.owner.clone(),
                    node,
                    resources,
                })
            })
            // Spark Connect engines (issue 5): a live engine holds its user's resources
            // like a running, non-preemptible job (ids >= engines::ENGINE_ALLOCATION_BASE).
            .chain(crate::engines::allocations(app))
            .collect(),
        queued: queued
            .iter()
            .map(|j| PendingJob {
                id: j.id as u64,
                user: j.owner.clone(),
                submitted_ms: j.submitted_at,
                resources: gang(j),
            })
            .collect(),
        config: policy.config.clone(),
        job_options,
        preempting: active
            .iter()
            .filter(|j| j.preempt_reason.is_some())
            .map(|j| j.id as u64)
            .collect(),
    })
}

/// One scheduling pass: start what the plan places, stop what it preempts, and record why
/// everything else waits.
fn pass(app: &Arc<App>) -> Result<(), rusqlite::Error> {
    if let Some(cluster) = &app.cluster {
        crate::remote::lose_jobs_of_down_nodes(app, cluster)?;
        let active = app
            .store
            .jobs_in(&[JobState::Starting, JobState::Running])?;
        crate::standalone::sweep(app, &active);
    }
    let policy = app.policy();
    let snapshot = snapshot(app, &policy)?;
    if snapshot.queued.is_empty() {
        return Ok(());
    }
    let joined_open = snapshot
        .nodes
        .iter()
        .any(|n| n.schedulable && n.name != LOCAL_NODE);
    if let (Err(problems), false) = (runtime(app), joined_open) {
        let reason = format!("no node can run jobs: {}", problems.join("; "));
        let waiting: Vec<(i64, String)> = snapshot
            .queued
            .iter()
            .map(|j| (j.id as i64, reason.clone()))
            .collect();
        app.store.apply_plan(&[], &waiting)?;
        return Ok(());
    }
    let plan = hearth_sched::schedule(&snapshot);
    for p in &plan.preemptions {
        let id = p.job as i64;
        if app.store.mark_preempting(id, &p.to_string())? {
            tracing::info!(job = id, by = p.by, "preempting");
            if crate::remote::stop(app, id, Duration::from_millis(p.grace_ms)) {
                continue;
            }
            let dir = lock(app).get(&id).cloned();
            if let Some(dir) = dir {
                let grace = Duration::from_millis(p.grace_ms);
                tokio::spawn(async move { sandbox::stop(&dir, grace).await });
            }
        }
    }
    let placements: Vec<(i64, String, Vec<Workers>)> = plan
        .placements
        .iter()
        .map(|p| {
            let workers = p
                .executors
                .iter()
                .map(|e| Workers {
                    node: e.node.clone(),
                    count: e.count,
                })
                .collect();
            (p.job as i64, p.node.clone(), workers)
        })
        .collect();
    let waiting: Vec<(i64, String)> = plan
        .waiting
        .iter()
        .map(|w| (w.job as i64, w.reason.to_string()))
        .collect();
    for id in app.store.apply_plan(&placements, &waiting)? {
        let app = app.clone();
        tokio::spawn(async move { start(app, id).await });
    }
    Ok(())
}

struct Prepared {
    spec: TaskSpec,
}

fn task_dir(app: &App, id: i64) -> PathBuf {
    app.cfg.job_dir(id).join("task")
}

pub fn log_path(app: &App, id: i64) -> PathBuf {
    app.cfg.job_dir(id).join("output.log")
}

/// Lays out the job's directory and describes its task. Root-owned except `tmp` and `conf`,
/// which belong to the job's uid (`conf` holds the job's Spark secret, for its eyes only).
fn prepare(
    app: &App,
    job: &JobRow,
    user: &UserRow,
    part: Option<&Part>,
) -> Result<Prepared, String> {
    let rt = runtime(app).map_err(|p| p.join("; "))?;
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let dir = app.cfg.job_dir(job.id);
    let linux = user.linux(app);
    let owner = app.isolation.enabled.then_some((linux.uid, linux.gid));
    mkdir(&dir, 0o700, None).map_err(|e| io("creating the job directory", e))?;
    let files = dir.join("files");
    mkdir(&files, 0o755, None).map_err(|e| io("creating the job's files", e))?;
    let place = |f: &FileRef| -> Result<PathBuf, String> {
        let dest = files.join(&f.name);
        // Never trust what a directory left from an earlier run holds: link afresh.
        let _ = std::fs::remove_file(&dest);
        let src = app.blobs.path(&f.sha256);
        std::fs::hard_link(&src, &dest)
            .or_else(|_| std::fs::copy(&src, &dest).map(|_| ()))
            .map_err(|e| io(&format!("placing {}", f.name), e))?;
        Ok(dest)
    };
    let spec = &job.spec;
    let main = place(&spec.main)?;
    let list = |refs: &[FileRef]| refs.iter().map(&place).collect::<Result<Vec<_>, _>>();
    let (py_files, extra_files, archives, jars) = (
        list(&spec.py_files)?,
        list(&spec.files)?,
        list(&spec.archives)?,
        list(&spec.jars)?,
    );
    // The job's UI gets a guarded port, recorded so that the door finds it (also after a
    // restart); without one the job runs without a UI. A worker has no driver, so no UI.
    let ui = match app.reserve_port().and_then(|port| match part {
        Some(p) if !p.driver => {
            app.release_port(port);
            Err("a worker runs no driver".into())
        }
        _ => Ok(port),
    }) {
        Ok(port) => {
            std::fs::write(ui_port_file(app, job.id), port.to_string())
                .map_err(|e| io("recording the UI port", e))?;
            spark::UiPlace::Port {
                port,
                proxy_base: format!("/ui/jobs/{}", job.id),
            }
        }
        Err(why) => {
            tracing::warn!(job = job.id, "the job runs without its Spark UI: {why}");
            spark::UiPlace::Off
        }
    };
    let properties = match part {
        Some(p) => p.properties(&ui),
        None => spark::properties_file(&crate::auth::random_hex(32), &ui),
    };
    let private = private_dirs(&dir, owner, &properties)?;
    hearth_agent::users::ensure_workspace(&linux).map_err(|e| e.to_string())?;

    let (cores, heap_mib) = match part {
        Some(_) => (job.resources.driver_cores, job.resources.driver_memory_mib),
        None => (
            job.resources.total_cores(),
            job.resources.total_memory_mib(),
        ),
    };
    let app_spec = spark::LocalApp {
        spark_home: &rt.spark_home,
        name: &job.name,
        cores,
        heap_mib,
        properties_file: &private.properties,
        main,
        class: spec.class.as_deref(),
        args: &spec.args,
        conf: &spec.conf,
        py_files,
        files: extra_files,
        archives,
        jars,
    };
    if !job.attempts.is_empty() {
        // The log is the job's one log across attempts: say where a new one begins.
        use std::io::Write;
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(app, job.id))
            .and_then(|mut f| {
                writeln!(
                    f,
                    "=== hearth: attempt {} (the previous one was {}) ===",
                    job.attempts.len() + 1,
                    job.attempts
                        .last()
                        .map_or("cut short", |a| a.outcome.as_str())
                )
            });
    }
    let mut env = spark::job_env(&rt, &linux, &user.name, job.id);
    let (argv, memory_limit_mib, cpu_cores) = match part {
        None => (
            spark::local_submit_argv(&app_spec),
            job.resources.memory_limit_mib(),
            job.resources.total_cores(),
        ),
        Some(p) => {
            spark::standalone_env(&mut env);
            let driver = p
                .driver
                .then(|| spark::standalone_submit_argv(&app_spec, &p.cluster));
            let prefix = if p.driver { "" } else { "[local] " };
            (
                p.argv(&rt, &private.properties, driver, prefix.into()),
                p.held.memory_mib,
                p.held.cores,
            )
        }
    };
    Ok(Prepared {
        spec: TaskSpec {
            id: format!("{}-job-{}", app.instance, job.id),
            dir: task_dir(app, job.id),
            user: linux.clone(),
            argv,
            env,
            cwd: linux.home.clone(),
            rw_paths: vec![linux.home.clone()],
            ro_paths: vec![files, private.conf, rt.root.clone()],
            hidden_paths: vec![app.cfg.data_dir.clone()],
            tmp_dir: private.tmp,
            log_path: log_path(app, job.id),
            memory_limit_mib,
            cpu_cores,
            pids_max: 4096,
        },
    })
}

fn ui_port_file(app: &App, id: i64) -> PathBuf {
    app.cfg.job_dir(id).join("ui.port")
}

/// The guarded port of a job's Spark UI, while the job has one.
pub fn ui_port(app: &App, id: i64) -> Option<u16> {
    std::fs::read_to_string(ui_port_file(app, id))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes what a job no longer needs once it ended: its scratch space, its Spark secret
/// and its UI's port.
fn clean_up(app: &App, id: i64) {
    if let Some(port) = ui_port(app, id) {
        let _ = std::fs::remove_file(ui_port_file(app, id));
        app.release_port(port);
    }
    let dir = app.cfg.job_dir(id);
    let _ = std::fs::remove_dir_all(dir.join("tmp"));
    let _ = std::fs::remove_dir_all(dir.join("conf"));
}

pub(crate) fn fail(app: &App, id: i64, reason: String) {
    tracing::warn!(job = id, "{reason}");
    clean_up(app, id);
    let end = JobEnd {
        state: JobState::Failed,
        exit_code: None,
        reason: Some(reason),
        oom_killed: false,
    };
    if let Err(e) = app.store.finish_job(id, &end) {
        tracing::error!(job = id, "recording the failure: {e}");
    }
    app.wake.notify_one();
}

/// Starts an admitted job and watches it to the end.
async fn start(app: Arc<App>, id: i64) {
    let loaded = app.store.job(id).and_then(|j| match j {
        Some(j) => app.store.user_by_id(j.user_id).map(|u| u.map(|u| (j, u))),
        None => Ok(None),
    });
    let (job, user) = match loaded {
        Ok(Some(x)) => x,
        Ok(None) => return fail(&app, id, "the job's owner no longer exists".into()),
        Err(e) => return fail(&app, id, format!("reading the job: {e}")),
    };
    if !job.workers.is_empty() {
        return crate::standalone::start(app, job, user).await;
    }
    if let Some(node) = job.node.clone().filter(|n| n != LOCAL_NODE) {
        return crate::remote::start(app, job, user, node).await;
    }
    start_local(app, job, user, None).await
}

/// Starts a job's task on this machine (the driver's part of a spread job with `part`)
/// and watches it to the end.
pub(crate) async fn start_local(app: Arc<App>, job: JobRow, user: UserRow, part: Option<Part>) {
    let (id, attempts) = (job.id, job.attempts.len());
    let prepared = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || prepare(&app, &job, &user, part.as_ref())).await
    };
    let spec = match prepared {
        Ok(Ok(p)) => p.spec,
        Ok(Err(e)) => return fail(&app, id, format!("could not prepare the job: {e}")),
        Err(e) => return fail(&app, id, format!("could not prepare the job: {e}")),
    };
    // A cancel, or Hearth's shutdown, that came while the job was being prepared.
    if stopped_before_start(&app, id, || clean_up(&app, id)) {
        return;
    }
    lock(&app).insert(id, spec.dir.clone());
    let task = match Task::launch(&spec, &app.cfg.shim).await {
        Ok(t) => t,
        Err(e) => {
            lock(&app).remove(&id);
            return fail(&app, id, format!("could not start the job's process: {e}"));
        }
    };
    if let Err(e) = app.store.mark_running(id) {
        tracing::error!(job = id, "recording the start: {e}");
    }
    // A cancel that came while the task was launching.
    if matches!(app.store.job(id), Ok(Some(j)) if j.cancel_requested) {
        let (dir, grace) = (spec.dir.clone(), app.cfg.stop_grace);
        tokio::spawn(async move { sandbox::stop(&dir, grace).await });
    }
    watch(app, id, attempts, task).await;
}

/// Whether a cancel, or Hearth's shutdown, came while a job was being admitted or
/// prepared; if so, `clean_up` runs and the job is recorded cancelled (or put back in the
/// queue) instead of started. For local and remote starts alike.
pub(crate) fn stopped_before_start(app: &App, id: i64, clean_up: impl FnOnce()) -> bool {
    match app.store.job(id) {
        Ok(Some(j)) if j.cancel_requested || j.state.is_terminal() => {
            clean_up();
            let _ = app.store.finish_job(
                id,
                &JobEnd {
                    state: JobState::Cancelled,
                    exit_code: None,
                    reason: Some("cancelled before it started".into()),
                    oom_killed: false,
                },
            );
            app.wake.notify_one();
            true
        }
        _ if app.is_shutting_down() => {
            clean_up();
            let _ = app.store.requeue(
                id,
                "requeued: Hearth was shutting down as the job was starting",
            );
            true
        }
        _ => false,
    }
}

/// Starts a spread job's worker on this machine (its driver runs on another node), and
/// watches it: a worker that ends while its job runs stops the job.
pub(crate) async fn start_local_worker(
    app: &Arc<App>,
    job: &JobRow,
    user: &UserRow,
    part: Part,
) -> Result<(), String> {
    let id = job.id;
    let attempt = job.attempts.len() as u32 + 1;
    let prepared = {
        let (app, job, user) = (app.clone(), job.clone(), user.clone());
        tokio::task::spawn_blocking(move || prepare(&app, &job, &user, Some(&part)))
            .await
            .map_err(|e| e.to_string())?
    }?;
    let dir = prepared.spec.dir.clone();
    workers(app).insert(id, (attempt, dir.clone()));
    let mut task = match Task::launch(&prepared.spec, &app.cfg.shim).await {
        Ok(t) => t,
        Err(e) => {
            workers(app).remove(&id);
            clean_up(app, id);
            return Err(e.to_string());
        }
    };
    let app = app.clone();
    tokio::spawn(async move {
        let exit = task.wait().await;
        let ours = matches!(workers(&app).get(&id), Some((a, d)) if *a == attempt && *d == dir);
        if ours {
            workers(&app).remove(&id);
            let how = match (exit.code, exit.signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "no exit status".into(),
            };
            crate::standalone::worker_ended(&app, LOCAL_NODE, id, &how);
        }
        clean_up(&app, id);
    });
    Ok(())
}

fn workers(app: &App) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, (u32, PathBuf)>> {
    app.local_workers.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops `job`'s worker on this machine, if it runs one.
pub(crate) fn stop_local_worker(app: &App, job: i64) {
    if let Some((_, dir)) = workers(app).remove(&job) {
        let grace = app.cfg.stop_grace;
        tokio::spawn(async move { sandbox::stop(&dir, grace).await });
    }
}

/// Stops this machine's workers of jobs that are over or on another attempt.
pub(crate) fn sweep_local_workers(app: &App, active: &[JobRow]) {
    let stale: Vec<i64> = workers(app)
        .iter()
        .filter(|(id, (attempt, _))| {
            !active
                .iter()
                .any(|j| j.id == **id && j.attempts.len() as u32 + 1 == *attempt)
        })
        .map(|(id, _)| *id)
        .collect();
    for id in stale {
        stop_local_worker(app, id);
    }
}

/// Stops a running job's driver (not a cancel: its end is recorded as it comes).
pub(crate) fn stop_job(app: &App, id: i64, grace: Duration) {
    if crate::remote::stop(app, id, grace) {
        return;
    }
    let dir = lock(app).get(&id).cloned();
    if let Some(dir) = dir {
        tokio::spawn(async move { sandbox::stop(&dir, grace).await });
    }
}

fn lock(app: &App) -> std::sync::MutexGuard<'_, std::collections::HashMap<i64, PathBuf>> {
    app.running.lock().unwrap_or_else(|p| p.into_inner())
}

async fn watch(app: Arc<App>, id: i64, attempt: usize, mut task: Task) {
    let exit = task.wait().await;
    // Unless the job was given up on meanwhile (a spread job lost with a worker's node):
    // that attempt's end is not the job's, and while the job is retried its directory and
    // its place here are the next attempt's.
    let job = app.store.job(id).ok().flatten();
    if job.as_ref().is_some_and(|j| j.attempts.len() == attempt) {
        record_end(&app, id, &exit);
    } else if job.is_some_and(|j| !j.state.is_terminal()) {
        app.wake.notify_one();
        return;
    }
    lock(&app).remove(&id);
    let app2 = app.clone();
    let _ = tokio::task::spawn_blocking(move || clean_up(&app2, id)).await;
    app.wake.notify_one();
}

pub(crate) fn record_end(app: &App, id: i64, exit: &TaskExit) {
    let job = match app.store.job(id) {
        Ok(Some(j)) => j,
        _ => return,
    };
    // Preempted, not failed: back in the queue with the run in its history.
    if job.preempt_reason.is_some() && !job.cancel_requested && !app.is_shutting_down() {
        match app.store.requeue_preempted(id) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::error!(job = id, "requeueing a preempted job: {e}"),
        }
    }
    let end = if job.cancel_requested {
        JobEnd {
            state: JobState::Cancelled,
            exit_code: exit.code,
            reason: Some("cancelled by its owner or an admin".into()),
            oom_killed: false,
        }
    } else if app.is_shutting_down()
        && exit.code != Some(0)
        && job.node.as_deref().is_none_or(|n| n == LOCAL_NODE)
    {
        // Only local jobs are stopped at shutdown; one on a joined node ended by itself.
        JobEnd {
            state: JobState::Cancelled,
            exit_code: exit.code,
            reason: Some("stopped because Hearth shut down".into()),
            oom_killed: false,
        }
    } else if exit.oom_killed {
        JobEnd {
            state: JobState::Failed,
            exit_code: exit.code,
            reason: Some(format!(
                "killed by the OOM killer: the job used more than its memory limit of {} MiB \
                 (heap plus Spark's overhead); ask for more with --driver-memory or --executor-memory",
                job.resources.memory_limit_mib()
            )),
            oom_killed: true,
        }
    } else if exit.code == Some(0) {
        JobEnd {
            state: JobState::Succeeded,
            exit_code: Some(0),
            reason: None,
            oom_killed: false,
        }
    } else {
        let reason = match (exit.code, exit.signal) {
            (Some(c), _) => format!("the job's process exited with code {c}; its log says why"),
            (None, Some(s)) => format!("the job's process was killed by signal {s}"),
            (None, None) => "the job's process ended without an exit status".into(),
        };
        JobEnd {
            state: JobState::Failed,
            exit_code: exit.code,
            reason: Some(reason),
            oom_killed: false,
        }
    };
    if let Err(e) = app.store.finish_job(id, &end) {
        tracing::error!(job = id, "recording the end: {e}");
    }
}

/// Cancels a job: a queued one at once, a running one by stopping its process tree.
pub async fn cancel(app: &Arc<App>, job: &JobRow) -> Result<(), rusqlite::Error> {
    // Only while it is still queued; if the scheduler admitted it meanwhile, it is stopped
    // like a running job (start() checks the request before launching).
    if job.state == JobState::Queued && app.store.cancel_queued(job.id)? {
        app.wake.notify_one();
        return Ok(());
    }
    app.store.request_cancel(job.id)?;
    if crate::remote::stop(app, job.id, app.cfg.stop_grace) {
        return Ok(());
    }
    let dir = lock(app).get(&job.id).cloned();
    if let Some(dir) = dir {
        let grace = app.cfg.stop_grace;
        tokio::spawn(async move { sandbox::stop(&dir, grace).await });
    }
    Ok(())
}

/// Stops every running job (Hearth is shutting down) and waits until each end is recorded.
pub async fn stop_all(app: &Arc<App>) {
    let dirs: Vec<PathBuf> = lock(app).values().cloned().collect();
    let grace = app.cfg.stop_grace;
    let stops: Vec<_> = dirs
        .into_iter()
        .map(|d| tokio::spawn(async move { sandbox::stop(&d, grace).await }))
        .collect();
    for s in stops {
        let _ = s.await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lock(app).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After a restart: reattach to jobs whose processes still run, record the ones that ended
/// meanwhile, requeue the ones that never started, and mark the rest lost with the reason.
pub async fn reconcile(app: &Arc<App>) -> Result<(), rusqlite::Error> {
    for job in app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?
    {
        if let Some(node) = job.node.as_deref().filter(|n| *n != LOCAL_NODE) {
            // Jobs on joined nodes kept running (a graceful stop leaves them be too): their
            // nodes report them when they reconnect, and the server adopts them.
            if let Err(why) = crate::remote::restore(app, &job, node) {
                app.store.lose_job(job.id, &why, app.cfg.max_retries)?;
                continue;
            }
            crate::standalone::restore(app, &job);
            // This machine's worker of a job whose driver runs elsewhere: stopped with it.
            if job.workers.iter().any(|w| w.node == LOCAL_NODE) {
                let dir = task_dir(app, job.id);
                if let Ok(Some(_)) = Task::reattach(&dir) {
                    workers(app).insert(job.id, (job.attempts.len() as u32 + 1, dir));
                }
            }
            continue;
        }
        crate::standalone::restore(app, &job);
        let dir = task_dir(app, job.id);
        match Task::reattach(&dir) {
            Ok(Some(task)) => {
                tracing::info!(job = job.id, "reattached to a running job");
                if let Some(port) = ui_port(app, job.id) {
                    app.retake_port(port);
                }
                if job.state == JobState::Starting {
                    app.store.mark_running(job.id)?;
                }
                lock(app).insert(job.id, dir.clone());
                if job.cancel_requested {
                    let grace = app.cfg.stop_grace;
                    tokio::spawn(async move { sandbox::stop(&dir, grace).await });
                }
                tokio::spawn(watch(app.clone(), job.id, job.attempts.len(), task));
            }
            Ok(None) if job.state == JobState::Starting => {
                clean_up(app, job.id);
                app.store.requeue(
                    job.id,
                    "requeued: Hearth restarted before the job's process started",
                )?;
            }
            Ok(None) => {
                clean_up(app, job.id);
                app.store.finish_job(
                    job.id,
                    &JobEnd {
                        state: JobState::Lost,
                        exit_code: None,
                        reason: Some(
                            "lost: the job's processes were gone when Hearth restarted and no exit status was recorded"
                                .into(),
                        ),
                        oom_killed: false,
                    },
                )?;
            }
            Err(e) => {
                clean_up(app, job.id);
                app.store.finish_job(
                    job.id,
                    &JobEnd {
                        state: JobState::Lost,
                        exit_code: None,
                        reason: Some(format!("lost: could not reattach after a restart: {e}")),
                        oom_killed: false,
                    },
                )?;
            }
        }
    }
    Ok(())
}
