//! The dispatcher: feeds the scheduler a snapshot, applies its plan in one transaction,
//! starts admitted jobs on their nodes (through `remote`, the same for the server's own
//! machine as for joined ones), stops preempted and cancelled ones, records what happens to
//! a job as `lifecycle` events (carrying out their effects), and reconciles after a restart.

use crate::store::{now_ms, JobRow, Workers};
use crate::{App, LOCAL_NODE};
use hearth_agent::sandbox::TaskExit;
use hearth_model::lifecycle::{self, Effect, Event, Transition};
use hearth_model::JobState;
use hearth_sched::{Allocation, Node, PendingJob, Resources, Snapshot};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the dispatcher looks again even when nothing woke it.
const TICK: Duration = Duration::from_secs(2);

/// Everything a job holds (or, queued, would hold in local mode), over all its nodes.
pub fn gang(job: &JobRow) -> Resources {
    holdings(job)
        .iter()
        .fold(Resources::ZERO, |sum, (_, r)| sum.add(r))
}

/// What a job holds on each node, the driver's node first: all of it there in local mode;
/// spread, the driver's part on its node and each node's executors' parts.
pub fn holdings(job: &JobRow) -> Vec<(String, Resources)> {
    let node = job.driver_node().to_string();
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

pub async fn run(app: Arc<App>, interactive: Interactive, mut stop: crate::background::Stop) {
    loop {
        // Nothing new starts once Hearth is stopping.
        if app.is_shutting_down() {
            return;
        }
        if let Err(e) = pass(&app, interactive) {
            tracing::error!("scheduling pass failed: {e}");
        }
        tokio::select! {
            _ = crate::background::stopped(&mut stop) => return,
            _ = app.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
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

/// What users' interactive engines hold now (`interactive::engines::allocations`): handed
/// to the dispatcher, which counts it like running jobs and knows nothing else of engines.
pub type Interactive = fn(&App) -> Vec<Allocation>;

/// The scheduler's view of now: the nodes, what runs (jobs, and `interactive`: what engines
/// hold), what waits, and the policy.
pub fn snapshot(
    app: &App,
    policy: &crate::policy::Policy,
    interactive: Vec<Allocation>,
) -> Result<Snapshot, rusqlite::Error> {
    let queued = app.store.jobs_in(&[JobState::Queued])?;
    let active = app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?;
    // Nodes that are connected, ready (not draining, not down) and have a runtime; the
    // server's own machine is one of them when it runs jobs (`hearth up`). Down or draining
    // nodes with running jobs stay in the snapshot, closed, so that their allocations are
    // counted where they are.
    let cluster = &app.cluster;
    let ready = cluster.job_ready();
    let now = now_ms();
    let mut nodes = Vec::new();
    for n in app.store.nodes()? {
        let open = ready.contains_key(&n.id)
            && cluster.state(&n, now) == hearth_model::cluster::NodeState::Ready
            && (n.name != LOCAL_NODE || app.cfg.local_jobs)
            && cluster.held(&n).is_none();
        let busy = active
            .iter()
            .any(|j| holdings(j).iter().any(|(node, _)| *node == n.name));
        // The server's machine is always there: users' engines run on it.
        if open || busy || n.name == LOCAL_NODE {
            nodes.push(Node {
                name: n.name.clone(),
                capacity: Resources::new(n.cores, n.memory_mib),
                schedulable: open,
                labels: n.labels.clone().into_iter().collect(),
            });
        }
    }
    if !nodes.iter().any(|n| n.name == LOCAL_NODE) {
        // The control plane alone (`hearth server`) runs no jobs, but engines.
        nodes.push(Node {
            name: LOCAL_NODE.into(),
            capacity: node_capacity(app),
            schedulable: false,
            labels: Vec::new(),
        });
    }
    // The server's machine first, as it always was: ties in placement go its way.
    nodes.sort_by_key(|n| n.name != LOCAL_NODE);
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
            // A live engine holds its user's resources like a running, non-preemptible job.
            .chain(interactive)
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
fn pass(app: &Arc<App>, interactive: Interactive) -> Result<(), rusqlite::Error> {
    crate::jobs::remote::lose_jobs_of_down_nodes(app, &app.cluster)?;
    let active = app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?;
    crate::jobs::standalone::sweep(app, &active);
    let policy = app.policy();
    let snapshot = snapshot(app, &policy, interactive(app))?;
    if snapshot.queued.is_empty() {
        return Ok(());
    }
    let joined_open = snapshot
        .nodes
        .iter()
        .any(|n| n.schedulable && n.name != LOCAL_NODE);
    if let (Err(problems), false) = (app.runtime(), joined_open) {
        let reason = format!("no node can run jobs: {}", problems.join("; "));
        let waiting: Vec<(i64, String)> = snapshot
            .queued
            .iter()
            .map(|j| (j.id as i64, reason.clone()))
            .collect();
        app.store
            .apply_plan(&[], &waiting, &lifecycle_policy(app))?;
        return Ok(());
    }
    let plan = hearth_sched::schedule(&snapshot);
    for p in &plan.preemptions {
        let id = p.job as i64;
        let event = Event::Preempt {
            why: p.to_string(),
            grace_ms: p.grace_ms,
        };
        if record(app, id, event)?.is_some() {
            tracing::info!(job = id, by = p.by, "preempting");
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
    for (id, t) in app
        .store
        .apply_plan(&placements, &waiting, &lifecycle_policy(app))?
    {
        carry_out(app, id, &t.effects);
        let app = app.clone();
        tokio::spawn(async move { start(app, id).await });
    }
    Ok(())
}

pub fn log_path(app: &App, id: i64) -> PathBuf {
    app.cfg.job_dir(id).join("output.log")
}

fn ui_port_file(app: &App, id: i64) -> PathBuf {
    app.cfg.job_dir(id).join("ui.port")
}

/// Records where a job's Spark UI listens on its node (the driver's), for the door; kept
/// beside the job across restarts, until the attempt is over.
pub(crate) fn record_ui(app: &App, id: i64, port: u16) {
    let dir = app.cfg.job_dir(id);
    let recorded = crate::layout::mkdir(&dir, 0o700, None)
        .and_then(|()| std::fs::write(ui_port_file(app, id), port.to_string()));
    if let Err(e) = recorded {
        tracing::warn!(job = id, "recording the UI port: {e}");
    }
}

/// The guarded port of a job's Spark UI on its node, while the job has one.
pub fn ui_port(app: &App, id: i64) -> Option<u16> {
    std::fs::read_to_string(ui_port_file(app, id))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Forgets a job's UI once its attempt is over (ended, lost, or never started); its node
/// gives the port back.
pub(crate) fn release_ui(app: &App, id: i64) {
    let _ = std::fs::remove_file(ui_port_file(app, id));
}

/// The settings `lifecycle` decides by, now.
pub(crate) fn lifecycle_policy(app: &App) -> lifecycle::Policy {
    lifecycle::Policy {
        max_retries: app.cfg.max_retries,
        shutting_down: app.is_shutting_down(),
        stop_grace_ms: app.cfg.stop_grace.as_millis() as u64,
    }
}

/// Records what happened to a job (the store applies `lifecycle`'s transition in one
/// transaction) and carries out what follows; None if it changed nothing.
pub(crate) fn record(
    app: &App,
    id: i64,
    event: Event,
) -> Result<Option<Transition>, rusqlite::Error> {
    let t = app.store.apply_event(id, &event, &lifecycle_policy(app))?;
    if let Some(t) = &t {
        carry_out(app, id, &t.effects);
    }
    Ok(t)
}

/// [`record`], an error only logged: for callers with no one to tell.
pub(crate) fn record_or_log(app: &App, id: i64, event: Event) -> Option<Transition> {
    match record(app, id, event) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(job = id, "recording what happened to the job: {e}");
            None
        }
    }
}

/// Does what a transition asks of the server, in order. `Launch` is the caller's own.
fn carry_out(app: &App, id: i64, effects: &[Effect]) {
    for effect in effects {
        match effect {
            Effect::LogLine(line) => {
                crate::jobs::remote::log_lines(app, id, std::slice::from_ref(line))
            }
            Effect::ForgetUi => release_ui(app, id),
            Effect::Stop { grace_ms } => {
                crate::jobs::remote::stop(app, id, Duration::from_millis(*grace_ms));
            }
            Effect::Launch => {}
            Effect::WakeScheduler => app.wake.notify_one(),
        }
    }
}

pub(crate) fn fail(app: &App, id: i64, reason: String) {
    tracing::warn!(job = id, "{reason}");
    record_or_log(app, id, Event::CouldNotStart { why: reason });
}

/// Starts an admitted job on the node (or, spread, the nodes) the scheduler placed it on.
/// Every node goes the same way: the server's own machine is a node like any other.
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
        return crate::jobs::standalone::start(app, job, user).await;
    }
    let node = job.driver_node().to_string();
    crate::jobs::remote::start(app, job, user, node).await
}

/// Whether the job's task may be sent to its node now: not if a cancel, or Hearth's
/// shutdown, came while it was being admitted or prepared (it is then recorded cancelled,
/// or put back in the queue), nor if it is no longer starting. A store that cannot answer
/// does not hold the start up.
pub(crate) fn may_launch(app: &App, id: i64) -> bool {
    match record(app, id, Event::Launching) {
        Ok(Some(t)) => t.effects.contains(&Effect::Launch),
        Ok(None) => false,
        Err(e) => {
            tracing::error!(job = id, "reading the job before its start: {e}");
            true
        }
    }
}

/// Stops a running job's driver (not a cancel: its end is recorded as it comes).
pub(crate) fn stop_job(app: &App, id: i64, grace: Duration) {
    crate::jobs::remote::stop(app, id, grace);
}

/// The job's process ended: `lifecycle` says what that makes of the job.
pub(crate) fn record_end(app: &App, id: i64, exit: &TaskExit) {
    let event = Event::Exited {
        code: exit.code,
        signal: exit.signal,
        oom_killed: exit.oom_killed,
    };
    record_or_log(app, id, event);
}

/// Cancels a job: a queued one at once, a running one by stopping its process tree.
/// If the scheduler admitted it meanwhile, it is stopped like a running job (a start
/// checks the request before launching).
pub async fn cancel(app: &Arc<App>, job: &JobRow) -> Result<(), rusqlite::Error> {
    record(app, job.id, Event::Cancel)?;
    Ok(())
}

/// Hearth is shutting down: stops the jobs whose driver runs on this machine and waits
/// (a grace and a little more) until each end is recorded. Jobs on joined nodes, and this
/// machine's workers of jobs driven from elsewhere, run on, to be taken back at the next
/// start.
pub async fn stop_all(app: &Arc<App>) {
    let Ok(active) = app.store.jobs_in(&[JobState::Starting, JobState::Running]) else {
        return;
    };
    let here: Vec<i64> = active
        .iter()
        .filter(|j| j.driver_node() == LOCAL_NODE)
        .map(|j| j.id)
        .collect();
    for id in &here {
        crate::jobs::remote::stop(app, *id, app.cfg.stop_grace);
    }
    let deadline = Instant::now() + app.cfg.stop_grace + Duration::from_secs(10);
    while Instant::now() < deadline {
        let running = here.iter().any(|id| {
            app.store
                .job(*id)
                .ok()
                .flatten()
                .is_some_and(|j| !j.state.is_terminal() && app.cluster.task(*id).is_some())
        });
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After a restart: every job that was starting or running waits for its node to report
/// it (the server's own machine's in-process node included: its tasks ran on under their
/// shims); what no node reports within a node timeout is lost (see `remote`).
pub async fn reconcile(app: &Arc<App>) -> Result<(), rusqlite::Error> {
    for job in app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?
    {
        let node = job.driver_node().to_string();
        if let Err(why) = crate::jobs::remote::restore(app, &job, &node) {
            record(app, job.id, Event::Lost { why })?;
            continue;
        }
        crate::jobs::standalone::restore(app, &job);
    }
    Ok(())
}
