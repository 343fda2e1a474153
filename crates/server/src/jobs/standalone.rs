//! Jobs spread over several nodes: each runs on a Spark standalone cluster of its own.
//! The driver's node runs the driver with the master beside it (and a worker, if the
//! scheduler put executors there too); every other node of the placement runs a worker.
//! All parts run sandboxed under the job's user with the job's one `spark.authenticate`
//! secret and RPC encryption; Spark's own traffic goes between the nodes' addresses.
//!
//! The driver is the job's task, tracked like any job's (`remote`, on every node): its end
//! is the job's end. The other nodes' workers are
//! followed beside it: their output (theirs and their executors') goes into the job's one
//! log marked with the node, and they are stopped once the job is over (`sweep`, every
//! scheduling pass, whatever ended the job). A worker that ends while its job runs takes
//! the job down with it: its executors are gone.

use crate::cluster::RemoteTask;
use crate::spark::{self, Standalone};
use crate::store::{JobRow, UserRow};
use crate::{App, LOCAL_NODE};
use hearth_model::cluster::{ServerMessage, TaskRef};
use hearth_model::lifecycle::Event;
use hearth_sched::Resources;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// What one node runs of a spread job.
#[derive(Debug, Clone)]
pub struct Part {
    /// The cluster, with `host` this node's address.
    pub cluster: Standalone,
    /// The job's secret, the same on every node.
    pub secret: String,
    /// Executors on this node (a worker runs here if any).
    pub worker_executors: u32,
    /// The driver's node: the driver and the master run here.
    pub driver: bool,
    /// What the job holds here: the part's cgroup limits.
    pub held: Resources,
}

impl Part {
    /// The launcher's command line for this part; `driver` is the driver's spark-submit
    /// argv built for this node's paths (see `spark::standalone_submit_argv`).
    pub fn argv(
        &self,
        rt: &crate::runtime::Runtime,
        properties: &std::path::Path,
        driver: Option<Vec<String>>,
        prefix: String,
    ) -> Vec<String> {
        spark::standalone_argv(&spark::StandalonePart {
            python: &rt.python,
            spark_home: &rt.spark_home,
            properties_file: properties,
            cluster: &self.cluster,
            runs_master: self.driver,
            worker_executors: self.worker_executors,
            driver,
            prefix,
        })
    }

    /// The part's Spark properties: the job's secret, encryption on, no way in but RPC.
    pub fn properties(&self, ui: &spark::UiPlace) -> String {
        spark::standalone_properties_file(&self.secret, ui)
    }
}

/// The address Spark's traffic reaches `node` at (see `Cluster::node_ip`).
fn address(app: &App, node: &str) -> Option<IpAddr> {
    app.cluster.node_ip(node)
}

/// Every node's part of `job`, the driver's node's first; Err says why it cannot run now.
pub fn plan(app: &App, job: &JobRow) -> Result<Vec<(String, Part)>, String> {
    let holdings = crate::jobs::dispatch::holdings(job);
    let driver_node = holdings
        .first()
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| LOCAL_NODE.into());
    let master_host = address(app, &driver_node)
        .ok_or_else(|| format!("node {driver_node} is not connected"))?
        .to_string();
    let r = &job.resources;
    let base = Standalone {
        master_host: master_host.clone(),
        master_port: master_port(),
        host: String::new(),
        executor_cores: r.executor_cores,
        executor_memory_mib: r.executor_memory_mib,
        executors: r.num_executors,
    };
    let secret = crate::auth::random_hex(32);
    holdings
        .into_iter()
        .map(|(node, held)| {
            let host = address(app, &node)
                .ok_or_else(|| format!("node {node} is not connected"))?
                .to_string();
            let part = Part {
                cluster: Standalone {
                    host,
                    ..base.clone()
                },
                secret: secret.clone(),
                worker_executors: job
                    .workers
                    .iter()
                    .filter(|w| w.node == node)
                    .map(|w| w.count)
                    .sum(),
                driver: node == driver_node,
                held,
            };
            Ok((node, part))
        })
        .collect()
}

/// A port for the master, from the range Linux does not hand out to outgoing
/// connections (`ip_local_port_range` starts at 32768): taken on the driver's node by
/// something else, the job fails to start and says so in its log.
fn master_port() -> u16 {
    let mut b = [0u8; 2];
    // Without entropy any port will do: a clash only fails the start.
    let _ = getrandom::getrandom(&mut b);
    20000 + u16::from_le_bytes(b) % 12000
}

/// Starts a spread job: the workers on other nodes first (they wait for the master), then
/// the driver's part, through the same paths as a local-mode job's task.
pub async fn start(app: Arc<App>, job: JobRow, user: UserRow) {
    let id = job.id;
    let parts = match plan(&app, &job) {
        Ok(p) => p,
        Err(why) => {
            crate::jobs::dispatch::record_or_log(&app, id, Event::Unplaced { why });
            return;
        }
    };
    crate::jobs::remote::log_lines(
        &app,
        id,
        &[format!(
            "=== hearth: a standalone cluster of its own: driver and master on {}, executors on {} ===",
            parts[0].0,
            job.workers
                .iter()
                .map(|w| format!("{} ({})", w.node, w.count))
                .collect::<Vec<_>>()
                .join(", ")
        )],
    );
    let mut parts = parts.into_iter();
    let Some((driver_node, driver_part)) = parts.next() else {
        return;
    };
    for (node, part) in parts {
        if let Err(why) = crate::jobs::remote::start_worker(&app, &job, &user, &node, part) {
            stop_workers(&app, id, None);
            let why = format!("its worker on node {node} could not start: {why}");
            crate::jobs::dispatch::record_or_log(&app, id, Event::Unplaced { why });
            return;
        }
    }
    crate::jobs::remote::start_part(app, job, user, driver_node, Some(driver_part)).await
}

/// Stops `job`'s workers (only the one on `node_id`, if given).
pub fn stop_workers(app: &App, job: i64, node_id: Option<i64>) {
    let cluster = &app.cluster;
    let grace = app.cfg.stop_grace.as_millis() as u64;
    for w in cluster.untrack_workers(job, node_id) {
        cluster.send(
            w.node_id,
            ServerMessage::Forget {
                job,
                attempt: w.attempt,
                grace_ms: grace,
            },
        );
    }
}

/// Stops the workers of jobs that are over (or back in the queue, or on another attempt):
/// run at every scheduling pass, so that every way a job ends takes its workers down.
pub fn sweep(app: &App, active: &[JobRow]) {
    let cluster = &app.cluster;
    for (job, node_id, attempt) in cluster.worker_keys() {
        let current = active
            .iter()
            .any(|j| j.id == job && j.attempts.len() as u32 + 1 == attempt);
        if !current {
            tracing::info!(job, "stopping a worker of a job that is over");
            stop_workers(app, job, Some(node_id));
        }
    }
}

/// A worker on a joined node ended: if its job still runs, the job is stopped (its
/// executors there are gone, and Spark would wait for them forever).
pub fn worker_ended(app: &App, node: &str, job: i64, exit: &str) {
    let Ok(Some(j)) = app.store.job(job) else {
        return;
    };
    if j.state.is_terminal() {
        return;
    }
    crate::jobs::remote::log_lines(
        app,
        job,
        &[format!(
            "=== hearth: the Spark worker on node {node} ended ({exit}) while the job ran: stopping the job ==="
        )],
    );
    crate::jobs::dispatch::stop_job(app, job, Duration::ZERO);
}

/// After a restart: follows the workers of a spread job again, until their nodes report
/// them.
pub fn restore(app: &App, job: &JobRow) {
    let cluster = &app.cluster;
    let Ok(nodes) = app.store.nodes() else {
        return;
    };
    let driver = job.driver_node();
    for w in &job.workers {
        if w.node == driver {
            continue;
        }
        if let Some(n) = nodes
            .iter()
            .find(|n| n.name == w.node && n.removed_at.is_none())
        {
            cluster.restore_worker(
                job.id,
                RemoteTask {
                    node_id: n.id,
                    node: w.node.clone(),
                    attempt: job.attempts.len() as u32 + 1,
                    files: Default::default(),
                    conn: 0,
                    logged: None,
                },
            );
        }
    }
}

/// The tasks a node reports that are workers: adopted (their output resumed from where the
/// job's log holds it); the rest are returned for the job path.
pub fn adopt_reported(
    app: &App,
    node_id: i64,
    conn: u64,
    tasks: &[TaskRef],
) -> (Vec<(TaskRef, u64)>, Vec<TaskRef>) {
    let cluster = &app.cluster;
    let mut adopted = Vec::new();
    let mut rest = Vec::new();
    for t in tasks {
        match cluster.worker(t.job, node_id, t.attempt, Some(conn)) {
            Some(logged) => {
                let offset = logged
                    .unwrap_or_else(|| crate::jobs::remote::load_worker_mark(app, t.job, node_id));
                cluster.set_worker_logged(t.job, node_id, offset);
                adopted.push((*t, offset));
            }
            None => rest.push(*t),
        }
    }
    (adopted, rest)
}
