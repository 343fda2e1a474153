//! Jobs on joined nodes: the server builds the task (Spark command line from `spark`, with
//! the node's paths), sends it over the node's connection, keeps the job's one log from the
//! lines the node streams back, and records the end once. A node that goes down loses its
//! jobs: they are requeued while retries remain, else failed; a late report from such a
//! node finds nothing to record.

use crate::cluster::{Cluster, RemoteTask};
use crate::dispatch;
use crate::store::{JobRow, UserRow};
use crate::{spark, App, LOCAL_NODE};
use hearth_agent::sandbox::TaskExit;
use hearth_agent::LinuxUser;
use hearth_model::api::FileRef;
use hearth_model::cluster::{
    node_workspace, NodeState, ServerMessage, StartTask, TaskFile, TaskLayout, TaskUser,
};
use hearth_model::JobState;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Appends lines to the job's one log (the server's copy).
fn log_lines(app: &App, id: i64, lines: &[String]) {
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
    let id = job.id;
    let Some(cluster) = app.cluster.clone() else {
        return dispatch::fail(
            &app,
            id,
            "the cluster port is off: no joined node can run it".into(),
        );
    };
    let Some((node_id, paths)) = cluster.paths(&node) else {
        let _ = app.store.requeue(
            id,
            &format!("requeued: node {node} went away before the job started"),
        );
        app.wake.notify_one();
        return;
    };
    let attempt = job.attempts.len() as u32 + 1;
    let layout = TaskLayout::new(&paths.data_dir, id, attempt);
    let linux = user.linux(&app);
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
    let app_spec = spark::LocalApp {
        spark_home: &rt.spark_home,
        name: &job.name,
        cores: job.resources.total_cores(),
        heap_mib: job.resources.total_memory_mib(),
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
    let files: Vec<TaskFile> = std::iter::once(&spec.main)
        .chain(&spec.py_files)
        .chain(&spec.files)
        .chain(&spec.archives)
        .chain(&spec.jars)
        .map(|f| TaskFile {
            name: f.name.clone(),
            sha256: f.sha256.clone(),
        })
        .collect();
    let task = StartTask {
        job: id,
        attempt,
        task_id: format!("{}-job-{id}-{attempt}", app.instance),
        user: TaskUser {
            name: user.name.clone(),
            linux_name: linux.name.clone(),
            uid: linux.uid,
            gid: linux.gid,
        },
        argv: spark::local_submit_argv(&app_spec),
        env: spark::job_env(&rt, &linux, &user.name, id),
        files: files.clone(),
        // The door to Spark UIs is on the server's machine only: remote jobs have none yet.
        properties: spark::properties_file(&crate::auth::random_hex(32), &spark::UiPlace::Off),
        memory_limit_mib: job.resources.memory_limit_mib(),
        cpu_cores: job.resources.total_cores(),
        pids_max: 4096,
    };
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
    // A cancel, or Hearth's shutdown, that came while the job was being admitted.
    if crate::dispatch::stopped_before_start(&app, id, || {}) {
        return;
    }
    let remote = RemoteTask {
        node_id,
        node: node.clone(),
        attempt,
        files: files.into_iter().map(|f| f.sha256).collect(),
        conn: 0,
    };
    if !cluster.start_task(id, remote, ServerMessage::StartTask(Box::new(task))) {
        let _ = app.store.requeue(
            id,
            &format!("requeued: node {node} disconnected as the job was starting"),
        );
        app.wake.notify_one();
        return;
    }
    tracing::info!(job = id, node = %node, attempt, "started on a joined node");
}

/// The node says the task's process runs.
pub fn started(app: &App, node_id: i64, job: i64, attempt: u32) {
    if !still_wanted(app, node_id, job, attempt) {
        return;
    }
    if let Err(e) = app.store.mark_running(job) {
        tracing::error!(job, "recording the start: {e}");
    }
}

/// Whether the server waits for this attempt. One it gave up on (its node was down, or the
/// server restarted) but that still runs is stopped: the job runs elsewhere now.
fn still_wanted(app: &App, node_id: i64, job: i64, attempt: u32) -> bool {
    let Some(cluster) = app.cluster.as_ref() else {
        return false;
    };
    if cluster.is_current(job, node_id, attempt) {
        return true;
    }
    cluster.send(
        node_id,
        ServerMessage::StopTask {
            job,
            attempt,
            grace_ms: app.cfg.stop_grace.as_millis() as u64,
        },
    );
    false
}

/// Lines the task wrote, into the job's one log, each marked with the node.
pub fn output(app: &App, node_id: i64, node: &str, job: i64, attempt: u32, lines: &[String]) {
    if !still_wanted(app, node_id, job, attempt) {
        return;
    }
    let marked: Vec<String> = lines.iter().map(|l| format!("[{node}] {l}")).collect();
    log_lines(app, job, &marked);
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
    let current = app
        .cluster
        .as_ref()
        .is_some_and(|c| c.untrack(job, Some((node_id, attempt))));
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
        None => {
            dispatch::record_end(app, job, &exit);
            app.wake.notify_one();
        }
    }
}

/// Asks the node running `job` to stop it; false if it does not run on a joined node.
pub fn stop(app: &App, job: i64, grace: Duration) -> bool {
    let Some(cluster) = app.cluster.as_ref() else {
        return false;
    };
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
/// remain, else failed. Their nodes' late reports are then ignored.
pub fn lose_jobs_of_down_nodes(app: &App, cluster: &Cluster) -> Result<(), rusqlite::Error> {
    let active = app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?;
    let remote: Vec<&JobRow> = active
        .iter()
        .filter(|j| j.node.as_deref().is_some_and(|n| n != LOCAL_NODE))
        .collect();
    if remote.is_empty() {
        return Ok(());
    }
    let nodes = app.store.nodes()?;
    let now = crate::store::now_ms();
    for job in remote {
        let name = job.node.as_deref().unwrap_or_default();
        let why = match nodes
            .iter()
            .find(|n| n.name == name && n.removed_at.is_none())
        {
            None => format!("lost: node {name} was removed"),
            Some(n) if cluster.state(n, now) == NodeState::Down => format!(
                "lost: node {name} sent no heartbeat for {}s",
                cluster.node_timeout.as_secs()
            ),
            // The start may have gone down with the node's old connection: rather than wait
            // for ever, run it again (a start the node did get is stopped when it reports).
            Some(_)
                if job.state == JobState::Starting
                    && cluster
                        .task(job.id)
                        .is_some_and(|t| cluster.reconnected_since(&t)) =>
            {
                format!("lost: node {name} reconnected before it confirmed the start")
            }
            Some(_) => continue,
        };
        cluster.untrack(job.id, None);
        log_lines(app, job.id, &[format!("=== hearth: {why} ===")]);
        match app.store.lose_job(job.id, &why, app.cfg.max_retries)? {
            Some(JobState::Queued) => {
                tracing::warn!(job = job.id, "{why}; requeued");
                app.wake.notify_one();
            }
            Some(state) => tracing::warn!(job = job.id, "{why}; {}", state.as_str()),
            None => {}
        }
    }
    Ok(())
}
