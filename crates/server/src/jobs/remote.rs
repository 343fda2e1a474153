//! Jobs on joined nodes: the server builds the task (Spark command line from `spark`, with
//! the node's paths), sends it over the node's connection, keeps the job's one log from the
//! lines the node streams back, and records the end once. A node that goes down loses its
//! jobs: they are requeued while retries remain, else failed; a late report from such a
//! node finds nothing to record. After a restart the server waits, a node timeout long,
//! for nodes to report the jobs they still run, and adopts them (no retry); output is
//! appended at the offset the server expects only, and that offset is kept beside the
//! log, so a line comes into the log once whatever broke in between.

use crate::cluster::{Cluster, RemoteTask};
use crate::jobs::dispatch;
use crate::store::{JobRow, UserRow};
use crate::{spark, App};
use hearth_agent::sandbox::TaskExit;
use hearth_agent::LinuxUser;
use hearth_model::api::FileRef;
use hearth_model::api::SubmitJob;
use hearth_model::cluster::{
    node_workspace, NodeState, ServerMessage, StartTask, TaskFile, TaskLayout, TaskRef, TaskUser,
};
use hearth_model::lifecycle::Event;
use hearth_model::JobState;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the server's log stands with a remote attempt's output, kept beside the log: when
/// the log was `log_len` bytes long it held the node's output up to `offset`. Written after
/// each append, so after a crash between the two the log is cut back to `log_len` and the
/// node sends the rest again: each line lands once.
///
/// A spread job's workers on joined nodes stream into the same log: `workers` holds how far
/// each one's output is logged (by node id), saved with every append of either kind, so a
/// cut after a crash takes every stream back to the same point.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LogMark {
    attempt: u32,
    log_len: u64,
    offset: u64,
    #[serde(default)]
    workers: std::collections::BTreeMap<i64, u64>,
}

fn mark_path(app: &App, id: i64) -> PathBuf {
    app.cfg.job_dir(id).join("remote.json")
}

fn save_mark(app: &App, id: i64, attempt: u32, offset: u64) {
    let workers = worker_offsets(app, id, attempt);
    let saved = save_mark_at(
        &mark_path(app, id),
        &dispatch::log_path(app, id),
        attempt,
        offset,
        workers,
    );
    if let Err(e) = saved {
        tracing::warn!(job = id, "recording how far the job's log goes: {e}");
    }
}

/// How far each of a spread job's workers' output is logged: what the server follows now,
/// over what the mark held (a worker not yet reported again after a restart).
fn worker_offsets(app: &App, id: i64, attempt: u32) -> std::collections::BTreeMap<i64, u64> {
    let cluster = &app.cluster;
    let followed: Vec<(i64, Option<u64>)> = cluster
        .worker_keys()
        .into_iter()
        .filter(|&(job, _, a)| job == id && a == attempt)
        .map(|(job, node_id, a)| (node_id, cluster.worker(job, node_id, a, None).flatten()))
        .collect();
    // A job with no workers (every job not spread) writes its mark without reading it.
    if followed.is_empty() {
        return Default::default();
    }
    let mut workers = read_mark(&mark_path(app, id))
        .filter(|m| m.attempt == attempt)
        .map(|m| m.workers)
        .unwrap_or_default();
    for (node_id, offset) in followed {
        if let Some(offset) = offset {
            workers.insert(node_id, offset);
        }
    }
    workers
}

fn read_mark(mark_file: &Path) -> Option<LogMark> {
    std::fs::read(mark_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<LogMark>(&b).ok())
}

/// How far a spread job's worker on `node_id` is logged, as the mark says (0: nothing yet).
pub fn load_worker_mark(app: &App, id: i64, node_id: i64) -> u64 {
    let attempt = match app.store.job(id) {
        Ok(Some(j)) => j.attempts.len() as u32 + 1,
        _ => return 0,
    };
    read_mark(&mark_path(app, id))
        .filter(|m| m.attempt == attempt)
        .and_then(|m| m.workers.get(&node_id).copied())
        .unwrap_or(0)
}

fn save_mark_at(
    mark: &Path,
    log: &Path,
    attempt: u32,
    offset: u64,
    workers: std::collections::BTreeMap<i64, u64>,
) -> std::io::Result<()> {
    let log_len = std::fs::metadata(log).map_or(0, |m| m.len());
    let json = serde_json::to_vec(&LogMark {
        attempt,
        log_len,
        offset,
        workers,
    })
    .map_err(std::io::Error::other)?;
    // Renamed into place: a crash leaves the old mark or the new one, never half of one.
    let tmp = mark.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, mark)
}

/// How far into the node's log of `attempt` the server's log goes, after a restart.
fn load_mark(app: &App, id: i64, attempt: u32) -> u64 {
    load_mark_at(&mark_path(app, id), &dispatch::log_path(app, id), attempt)
}

/// The mark's offset, with the log cut back to the mark if an append outran it (the node
/// sends those lines again). No mark for this attempt: nothing of it was logged yet.
fn load_mark_at(mark_file: &Path, log: &Path, attempt: u32) -> u64 {
    let mark = read_mark(mark_file).filter(|m| m.attempt == attempt);
    let Some(mark) = mark else {
        if let Err(e) = save_mark_at(mark_file, log, attempt, 0, Default::default()) {
            tracing::warn!("recording how far {} goes: {e}", log.display());
        }
        return 0;
    };
    if std::fs::metadata(log).is_ok_and(|m| m.len() > mark.log_len) {
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(log)
            .and_then(|f| f.set_len(mark.log_len));
        if let Err(e) = cut {
            tracing::warn!("cutting {} back to its last mark: {e}", log.display());
        }
    }
    mark.offset
}

/// The files a job's task needs, by name and digest.
fn task_files(spec: &SubmitJob) -> Vec<TaskFile> {
    std::iter::once(&spec.main)
        .chain(&spec.py_files)
        .chain(&spec.files)
        .chain(&spec.archives)
        .chain(&spec.jars)
        .map(|f| TaskFile {
            name: f.name.clone(),
            sha256: f.sha256.clone(),
        })
        .collect()
}

/// Appends lines to the job's one log (the server's copy).
pub(crate) fn log_lines(app: &App, id: i64, lines: &[String]) {
    let dir = app.cfg.job_dir(id);
    let _ = crate::layout::mkdir(&dir, 0o700, None);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dispatch::log_path(app, id));
    match file {
        Ok(mut f) => {
            let mut text = String::new();
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::warn!(job = id, "writing the job's log: {e}");
            }
        }
        Err(e) => tracing::warn!(job = id, "opening the job's log: {e}"),
    }
}

/// Starts an admitted job on the joined node the scheduler placed it on.
pub async fn start(app: Arc<App>, job: JobRow, user: UserRow, node: String) {
    start_part(app, job, user, node, None).await
}

/// Sends a spread job's worker to a joined node other than the driver's, and follows it.
pub fn start_worker(
    app: &App,
    job: &JobRow,
    user: &UserRow,
    node: &str,
    part: crate::jobs::standalone::Part,
) -> Result<(), String> {
    let cluster = &app.cluster;
    let (node_id, paths) = cluster
        .paths(node)
        .ok_or_else(|| format!("node {node} is not connected"))?;
    let attempt = job.attempts.len() as u32 + 1;
    let task = task_for(app, job, user, node, &paths, attempt, Some(&part));
    let remote = RemoteTask {
        node_id,
        node: node.to_string(),
        attempt,
        files: Default::default(),
        conn: 0,
        logged: Some(0),
    };
    if cluster.start_worker(job.id, remote, ServerMessage::StartTask(Box::new(task))) {
        tracing::info!(
            job = job.id,
            node,
            attempt,
            "started a worker on a joined node"
        );
        Ok(())
    } else {
        Err(format!("node {node} disconnected"))
    }
}

/// The task a node runs for `job`: the whole job in local mode, or its part of a spread
/// job (`part`), with the node's paths.
fn task_for(
    app: &App,
    job: &JobRow,
    user: &UserRow,
    node: &str,
    paths: &crate::cluster::NodePaths,
    attempt: u32,
    part: Option<&crate::jobs::standalone::Part>,
) -> StartTask {
    let id = job.id;
    let layout = TaskLayout::new(&paths.data_dir, id, attempt);
    let linux = user.linux(app);
    let linux = LinuxUser {
        home: node_workspace(&paths.data_dir, &user.name),
        ..linux
    };
    let rt = crate::runtime::Runtime {
        root: paths.runtime.root.clone().into(),
        spark_home: paths.runtime.spark_home.clone().into(),
        python: paths.runtime.python.clone().into(),
        java: String::new(),
    };
    let spec = &job.spec;
    let on_node = |f: &FileRef| layout.files.join(&f.name);
    let all = |refs: &[FileRef]| refs.iter().map(on_node).collect::<Vec<_>>();
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
        properties_file: &layout.properties,
        main: on_node(&spec.main),
        class: spec.class.as_deref(),
        args: &spec.args,
        conf: &spec.conf,
        py_files: all(&spec.py_files),
        files: all(&spec.files),
        archives: all(&spec.archives),
        jars: all(&spec.jars),
    };
    let mut env = spark::job_env(&rt, &linux, &user.name, id);
    // A joined node's tasks reach the server by whatever address their admin gave it.
    if app.cluster.is_in_process(node) {
        env.push(("HEARTH_SERVER".into(), app.server_url_for_tasks()));
    }
    // The driver's UI, placed by its node (a worker runs no driver, so has none).
    let ui_base = part
        .is_none_or(|p| p.driver)
        .then(|| format!("/ui/jobs/{id}"));
    let ui = spark::UiPlace::Node;
    let (argv, properties, files, memory_limit_mib, cpu_cores, kind) = match part {
        None => (
            spark::local_submit_argv(&app_spec),
            spark::properties_file(&crate::auth::random_hex(32), &ui),
            task_files(spec),
            job.resources.memory_limit_mib(),
            job.resources.total_cores(),
            "job",
        ),
        Some(p) => {
            spark::standalone_env(&mut env);
            let driver = p
                .driver
                .then(|| spark::standalone_submit_argv(&app_spec, &p.cluster));
            (
                p.argv(&rt, &layout.properties, driver, String::new()),
                p.properties(&ui),
                // A worker needs none of the job's files: the driver serves them.
                if p.driver {
                    task_files(spec)
                } else {
                    Vec::new()
                },
                p.held.memory_mib,
                p.held.cores,
                if p.driver { "job" } else { "worker" },
            )
        }
    };
    StartTask {
        job: id,
        attempt,
        // Unique on the machine: several agents may share one (a job's workers, in tests).
        task_id: match part {
            Some(p) if !p.driver => format!("{}-{kind}-{id}-{attempt}-{node}", app.instance),
            _ => format!("{}-{kind}-{id}-{attempt}", app.instance),
        },
        user: TaskUser {
            name: user.name.clone(),
            linux_name: linux.name.clone(),
            uid: linux.uid,
            gid: linux.gid,
        },
        argv,
        env,
        files,
        properties,
        memory_limit_mib,
        cpu_cores,
        pids_max: 4096,
        ui_base,
        egress: Some(app.policy().egress(&user.name, Some(&job.queue))),
        deny: app.policy().deny_networks().to_vec(),
        // A spread job's parts reach one another at their nodes' addresses, on ports
        // Spark picks: they run in their nodes' networks (see ARCHITECTURE.md).
        shared_network: part.is_some(),
    }
}

/// Starts a job's task (the driver's part of a spread job with `part`) on its node.
pub async fn start_part(
    app: Arc<App>,
    job: JobRow,
    user: UserRow,
    node: String,
    part: Option<crate::jobs::standalone::Part>,
) {
    let id = job.id;
    let cluster = app.cluster.clone();
    let Some((node_id, paths)) = cluster.paths(&node) else {
        let why = format!("node {node} went away before the job started");
        dispatch::record_or_log(&app, id, Event::Unplaced { why });
        return;
    };
    let attempt = job.attempts.len() as u32 + 1;
    let task = task_for(&app, &job, &user, &node, &paths, attempt, part.as_ref());
    let files = task.files.clone();
    let note = if job.attempts.is_empty() {
        format!("=== hearth: running on node {node} ===")
    } else {
        format!(
            "=== hearth: attempt {attempt} on node {node} (the previous one was {}) ===",
            job.attempts
                .last()
                .map_or("cut short", |a| a.outcome.as_str())
        )
    };
    log_lines(&app, id, &[note]);
    save_mark(&app, id, attempt, 0);
    // A cancel, or Hearth's shutdown, that came while the job was being admitted.
    if !dispatch::may_launch(&app, id) {
        return;
    }
    let remote = RemoteTask {
        node_id,
        node: node.clone(),
        attempt,
        files: files.into_iter().map(|f| f.sha256).collect(),
        conn: 0,
        logged: Some(0),
    };
    if !cluster.start_task(id, remote, ServerMessage::StartTask(Box::new(task))) {
        let why = format!("node {node} disconnected as the job was starting");
        dispatch::record_or_log(&app, id, Event::Unplaced { why });
        return;
    }
    tracing::info!(job = id, node = %node, attempt, "sent to its node");
}

/// The jobs' side of the cluster protocol: what nodes say of their tasks, recorded here.
pub struct NodeTasks(pub std::sync::Weak<App>);

impl crate::cluster::TaskEvents for NodeTasks {
    fn started(&self, node_id: i64, job: i64, attempt: u32, ui_port: Option<u16>) {
        if let Some(app) = self.0.upgrade() {
            started(&app, node_id, job, attempt, ui_port);
        }
    }

    fn report(&self, node_id: i64, node: &str, conn: u64, tasks: &[TaskRef]) {
        if let Some(app) = self.0.upgrade() {
            report(&app, node_id, node, conn, tasks);
        }
    }

    fn output(
        &self,
        node_id: i64,
        node: &str,
        task: TaskRef,
        bytes: std::ops::Range<u64>,
        lines: &[String],
    ) {
        if let Some(app) = self.0.upgrade() {
            output(&app, node_id, node, task, bytes, lines);
        }
    }

    fn ended(
        &self,
        node_id: i64,
        node: &str,
        job: i64,
        attempt: u32,
        exit: TaskExit,
        error: Option<String>,
    ) {
        if let Some(app) = self.0.upgrade() {
            ended(&app, node_id, node, job, attempt, exit, error);
        }
    }
}

/// The node says the task's process runs, with its Spark UI on `ui_port` of the node.
pub fn started(app: &App, node_id: i64, job: i64, attempt: u32, ui_port: Option<u16>) {
    if is_worker(app, job, node_id, attempt) {
        return;
    }
    if !still_wanted(app, node_id, job, attempt) {
        return;
    }
    if let Some(port) = ui_port {
        dispatch::record_ui(app, job, port);
    }
    dispatch::record_or_log(app, job, Event::Running);
}

/// Whether this is a spread job's worker the server follows.
fn is_worker(app: &App, job: i64, node_id: i64, attempt: u32) -> bool {
    app.cluster.worker(job, node_id, attempt, None).is_some()
}

/// Whether the server waits for this attempt. The node is told to forget one the server
/// gave up on (its node was down, or it never confirmed its start), stopping it if it
/// still runs: the job runs elsewhere now.
fn still_wanted(app: &App, node_id: i64, job: i64, attempt: u32) -> bool {
    let cluster = &app.cluster;
    if cluster.is_current(job, node_id, attempt) {
        return true;
    }
    forget(app, cluster, node_id, job, attempt);
    false
}

fn forget(app: &App, cluster: &Cluster, node_id: i64, job: i64, attempt: u32) {
    cluster.send(
        node_id,
        ServerMessage::Forget {
            job,
            attempt,
            grace_ms: app.cfg.stop_grace.as_millis() as u64,
        },
    );
}

/// What a node holds, reported first on each of its connections: the attempts the server
/// waits on are adopted (the node sends their output from where the server's log stands),
/// the others forgotten; and an attempt sent to the node earlier that it does not hold
/// never reached it: lost, so it runs again.
pub fn report(app: &App, node_id: i64, node: &str, conn: u64, tasks: &[TaskRef]) {
    let cluster = &app.cluster;
    let (workers, tasks) = crate::jobs::standalone::adopt_reported(app, node_id, conn, tasks);
    for (t, offset) in &workers {
        cluster.send(
            node_id,
            ServerMessage::Resume {
                job: t.job,
                attempt: t.attempt,
                offset: *offset,
            },
        );
    }
    let reported: Vec<TaskRef> = workers.iter().map(|(t, _)| *t).collect();
    for job in cluster.unreported_workers(node_id, conn, &reported) {
        crate::jobs::standalone::stop_workers(app, job, Some(node_id));
        crate::jobs::standalone::worker_ended(
            app,
            node,
            job,
            "the node reconnected without it: the start never reached it",
        );
    }
    let tasks = &tasks[..];
    for t in tasks {
        let Some(logged) = cluster.adopt(t.job, node_id, t.attempt, conn) else {
            tracing::info!(
                job = t.job,
                node,
                attempt = t.attempt,
                "told the node to forget an attempt given up on"
            );
            forget(app, cluster, node_id, t.job, t.attempt);
            continue;
        };
        let offset = logged.unwrap_or_else(|| load_mark(app, t.job, t.attempt));
        cluster.set_logged(t.job, node_id, t.attempt, offset);
        if logged.is_none() {
            tracing::info!(
                job = t.job,
                node,
                attempt = t.attempt,
                "adopted a job still running on its node after a restart"
            );
        }
        // It runs (or ran) there, whether or not its start was heard.
        dispatch::record_or_log(app, t.job, Event::Running);
        cluster.send(
            node_id,
            ServerMessage::Resume {
                job: t.job,
                attempt: t.attempt,
                offset,
            },
        );
        // A cancel or a preemption asked for while the node was away reaches it now.
        if matches!(app.store.job(t.job), Ok(Some(j)) if j.cancel_requested || j.preempt_reason.is_some())
        {
            stop(app, t.job, app.cfg.stop_grace);
        }
    }
    for (job, restored) in cluster.unreported(node_id, conn, tasks) {
        let why = if restored {
            format!("lost: its processes were gone when Hearth restarted, and node {node} recorded no exit status")
        } else {
            format!("lost: node {node} reconnected without it (the start never reached it)")
        };
        if let Err(e) = lose(app, cluster, job, &why) {
            tracing::error!(job, "recording a lost job: {e}");
        }
    }
}

/// Lines the task wrote, into the job's one log, each marked with the node: appended only
/// at the offset the server expects, so a batch sent twice (after a reconnect) lands once.
pub fn output(
    app: &App,
    node_id: i64,
    node: &str,
    task: TaskRef,
    bytes: std::ops::Range<u64>,
    lines: &[String],
) {
    let TaskRef { job, attempt } = task;
    if is_worker(app, job, node_id, attempt) {
        return worker_output(app, node_id, node, task, bytes, lines);
    }
    if !still_wanted(app, node_id, job, attempt) {
        return;
    }
    let cluster = &app.cluster;
    let Some(expected) = cluster.logged(job, node_id, attempt) else {
        // Not adopted yet: the node's report comes first, and a resume with it.
        return;
    };
    if !append_batch(app, cluster, node_id, node, task, &bytes, lines, expected) {
        return;
    }
    save_mark(app, job, attempt, bytes.end);
    cluster.set_logged(job, node_id, attempt, bytes.end);
    acknowledge(cluster, node_id, task, bytes.end);
}

/// Appends a node's batch of lines to the job's one log, each marked with the node, if it
/// begins where the log stands (`expected`); else (sent before a reconnect, or after one
/// that was lost) asks the node for its output from there. True if appended.
#[allow(clippy::too_many_arguments)]
fn append_batch(
    app: &App,
    cluster: &Cluster,
    node_id: i64,
    node: &str,
    task: TaskRef,
    bytes: &std::ops::Range<u64>,
    lines: &[String],
    expected: u64,
) -> bool {
    if bytes.start != expected || bytes.end < bytes.start {
        cluster.send(
            node_id,
            ServerMessage::Resume {
                job: task.job,
                attempt: task.attempt,
                offset: expected,
            },
        );
        return false;
    }
    let marked: Vec<String> = lines.iter().map(|l| format!("[{node}] {l}")).collect();
    log_lines(app, task.job, &marked);
    true
}

/// Tells the node the job's log holds its output up to `offset`.
fn acknowledge(cluster: &Cluster, node_id: i64, task: TaskRef, offset: u64) {
    cluster.send(
        node_id,
        ServerMessage::Logged {
            job: task.job,
            attempt: task.attempt,
            offset,
        },
    );
}

/// A worker's lines, like a job's: appended at the offset expected only, acknowledged.
fn worker_output(
    app: &App,
    node_id: i64,
    node: &str,
    task: TaskRef,
    bytes: std::ops::Range<u64>,
    lines: &[String],
) {
    let TaskRef { job, attempt } = task;
    let cluster = &app.cluster;
    let Some(Some(expected)) = cluster.worker(job, node_id, attempt, None) else {
        return;
    };
    if !append_batch(app, cluster, node_id, node, task, &bytes, lines, expected) {
        return;
    }
    cluster.set_worker_logged(job, node_id, bytes.end);
    let driver = cluster.task(job).and_then(|t| t.logged);
    let offset = driver.unwrap_or_else(|| {
        read_mark(&mark_path(app, job))
            .filter(|m| m.attempt == attempt)
            .map_or(0, |m| m.offset)
    });
    save_mark(app, job, attempt, offset);
    acknowledge(cluster, node_id, task, bytes.end);
}

/// The task ended (or could not start): recorded once, and only if the server still waits
/// for this node's attempt (a node declared down has lost it already).
pub fn ended(
    app: &Arc<App>,
    node_id: i64,
    node: &str,
    job: i64,
    attempt: u32,
    exit: TaskExit,
    error: Option<String>,
) {
    let cluster = &app.cluster;
    if is_worker(app, job, node_id, attempt) {
        crate::jobs::standalone::stop_workers(app, job, Some(node_id));
        let how = match (error, exit.code, exit.signal) {
            (Some(why), _, _) => format!("it could not start: {why}"),
            (None, Some(c), _) => format!("exit code {c}"),
            (None, None, Some(s)) => format!("signal {s}"),
            _ => "no exit status".into(),
        };
        crate::jobs::standalone::worker_ended(app, node, job, &how);
        return;
    }
    let current = cluster.untrack(job, Some((node_id, attempt)));
    // Recorded now or before: the node need not hold it any longer.
    forget(app, cluster, node_id, job, attempt);
    if !current {
        tracing::info!(
            job,
            node,
            attempt,
            "ignored the end of an attempt already given up on"
        );
        return;
    }
    match error {
        Some(why) => dispatch::fail(
            app,
            job,
            format!("could not start the job on node {node}: {why}"),
        ),
        None => dispatch::record_end(app, job, &exit),
    }
}

/// Asks the node running `job` to stop it; false if it does not run on a joined node.
pub fn stop(app: &App, job: i64, grace: Duration) -> bool {
    let cluster = &app.cluster;
    let Some(task) = cluster.task(job) else {
        return false;
    };
    cluster.send(
        task.node_id,
        ServerMessage::StopTask {
            job,
            attempt: task.attempt,
            grace_ms: grace.as_millis() as u64,
        },
    );
    true
}

/// Jobs on nodes that are down (or removed, or unknown) are lost: requeued while retries
/// remain, else failed. Their nodes' late reports are then ignored. For a node timeout after
/// a restart, a silent node is given time to reconnect and report what it runs.
pub fn lose_jobs_of_down_nodes(app: &App, cluster: &Cluster) -> Result<(), rusqlite::Error> {
    let active = app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?;
    // Every joined node a job holds something on: a spread job's workers' nodes too.
    let remote: Vec<(&JobRow, Vec<String>)> = active
        .iter()
        .map(|j| {
            let nodes = dispatch::holdings(j)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>();
            (j, nodes)
        })
        .filter(|(_, nodes)| !nodes.is_empty())
        .collect();
    if remote.is_empty() {
        return Ok(());
    }
    let nodes = app.store.nodes()?;
    let now = crate::store::now_ms();
    let timeout = cluster.node_timeout.as_millis() as i64;
    let waking = now.saturating_sub(cluster.started_ms) <= timeout;
    for (job, names) in remote {
        let gone = names.iter().find_map(|name| {
            match nodes
                .iter()
                .find(|n| n.name == *name && n.removed_at.is_none())
            {
                None => Some((name, None, format!("lost: node {name} was removed"))),
                Some(n) if cluster.state(n, now) == NodeState::Down && !waking => Some((
                    name,
                    Some(n.id),
                    format!(
                        "lost: node {name} sent no heartbeat for {}s",
                        cluster.node_timeout.as_secs()
                    ),
                )),
                Some(_) => None,
            }
        });
        let Some((name, node_id, why)) = gone else {
            continue;
        };
        let driver = job.driver_node();
        if name != driver {
            // A worker's node: its executors are gone. The job is lost like its node's own
            // jobs (requeued while retries remain), and its driver told to forget (stop).
            if let Some(id) = node_id {
                cluster.untrack_workers(job.id, Some(id));
            }
            if let Some(t) = cluster.task(job.id) {
                forget(app, cluster, t.node_id, job.id, t.attempt);
            }
            lose(app, cluster, job.id, &why)?;
            continue;
        }
        lose(app, cluster, job.id, &why)?;
    }
    Ok(())
}

/// Gives up on a job's attempt on a joined node: requeued while retries remain, else failed
/// (as `lifecycle` decides).
fn lose(app: &App, cluster: &Cluster, id: i64, why: &str) -> Result<(), rusqlite::Error> {
    cluster.untrack(id, None);
    let lost = Event::Lost {
        why: why.to_string(),
    };
    if let Some(t) = dispatch::record(app, id, lost)? {
        let state = match t.life.state {
            JobState::Queued => "requeued",
            other => other.as_str(),
        };
        tracing::warn!(job = id, "{why}; {state}");
    }
    Ok(())
}

/// After a restart: waits for the node running `job` to report it (see [`report`]); Err
/// with the reason it is lost instead.
pub fn restore(app: &App, job: &JobRow, node: &str) -> Result<(), String> {
    let cluster = &app.cluster;
    let found = app
        .store
        .nodes()
        .map_err(|e| format!("lost: reading the nodes after a restart: {e}"))?
        .into_iter()
        .find(|n| n.name == node && n.removed_at.is_none());
    let Some(n) = found else {
        return Err(format!("lost: node {node} was removed"));
    };
    // The log goes back to its last mark now, before any stream of the job (its driver's,
    // a spread job's workers') is adopted and appends again.
    let _ = load_mark(app, job.id, job.attempts.len() as u32 + 1);
    cluster.restore(
        job.id,
        RemoteTask {
            node_id: n.id,
            node: node.to_string(),
            attempt: job.attempts.len() as u32 + 1,
            files: task_files(&job.spec)
                .into_iter()
                .map(|f| f.sha256)
                .collect(),
            conn: 0,
            logged: None,
        },
    );
    tracing::info!(
        job = job.id,
        node,
        "waiting for the node to report the job it ran"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_the_mark_did_not_catch_up_with_is_cut_and_comes_again() {
        let dir = std::env::temp_dir().join(format!("hearth-mark-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (mark, log) = (dir.join("remote.json"), dir.join("output.log"));
        std::fs::write(&log, "=== hearth: running on node n ===\n[n] one\n").expect("log");
        save_mark_at(&mark, &log, 1, 4, Default::default()).expect("mark");
        // A crash after this append, before its mark.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(b"[n] two\n"))
            .expect("append");
        assert_eq!(load_mark_at(&mark, &log, 1), 4);
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "=== hearth: running on node n ===\n[n] one\n"
        );
        // Another attempt starts from nothing, and keeps what the log holds.
        assert_eq!(load_mark_at(&mark, &log, 2), 0);
        assert_eq!(load_mark_at(&mark, &log, 2), 0);
        assert!(std::fs::read_to_string(&log)
            .expect("log")
            .ends_with("[n] one\n"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
