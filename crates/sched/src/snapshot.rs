//! The scheduler's input: what the cluster looks like at one instant. The server builds a
//! [`Snapshot`] from its database before every pass; nothing in it is changed by a pass.

use std::collections::HashMap;

use crate::config::Config;
use crate::priority::Priority;
use crate::resources::Resources;

/// A job's id, as the server numbers jobs.
pub type JobId = u64;

/// A machine that offers resources to jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique; allocations and placements name nodes by it.
    pub name: String,
    /// What the node offers to jobs in all.
    pub capacity: Resources,
    /// False while the node is down or draining: nothing new is placed there.
    pub schedulable: bool,
    /// What the node says about itself (`--label disk=ssd`), for jobs' constraints.
    pub labels: Vec<(String, String)>,
}

impl Node {
    /// Whether the node has every `key=value` of `constraints`.
    pub fn satisfies(&self, constraints: &[(String, String)]) -> bool {
        constraints
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(a, b)| a == k && b == v))
    }
}

/// Resources a job holds on one node. A job spread over several nodes has one allocation
/// per node; all of them together are the job's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The running job.
    pub job: JobId,
    /// Its owner.
    pub user: String,
    /// The node it holds resources on.
    pub node: String,
    /// What it holds there.
    pub resources: Resources,
}

/// A job waiting to be placed. Its driver and executors are one gang: all of it is granted
/// together or not at all. `resources` is the whole gang's total; how it splits into a
/// driver and executors, and the job's queue, priority and preemptibility, are in
/// [`Snapshot::job_options`] (absent: one local-mode process of `resources`, normal
/// priority, not preemptible, the user's group's queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    /// The job.
    pub id: JobId,
    /// Its owner, whose quota, group and share it counts against.
    pub user: String,
    /// When the job was first submitted. A preempted job keeps its original time when it is
    /// requeued, so it keeps its place in line.
    pub submitted_ms: i64,
    /// The whole gang's resources (driver plus all executors).
    pub resources: Resources,
}

/// Everything the scheduler may look at in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The time of the pass. The scheduler has no clock: aging is measured against this.
    pub now_ms: i64,
    /// Every node, schedulable or not.
    pub nodes: Vec<Node>,
    /// Jobs that hold resources, including jobs being preempted that have not stopped yet.
    pub running: Vec<Allocation>,
    /// Jobs waiting to start, including preempted jobs put back in the queue.
    pub queued: Vec<PendingJob>,
    /// Queues, groups, users and their quotas; empty means one implicit queue and group.
    pub config: Config,
    /// Options of queued and running jobs, by job. A job without an entry gets
    /// `JobOptions::default()`.
    pub job_options: HashMap<JobId, JobOptions>,
    /// Running jobs already told to stop by an earlier plan's preemption, still in their
    /// grace period. Their resources are about to come free: the scheduler hands them to
    /// the waiting job first in line instead of preempting more.
    pub preempting: Vec<JobId>,
}

/// How a job asks to be scheduled; the server stores it with the job at submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// The queue asked for with `--queue`; `None` is the user's group's queue.
    pub queue: Option<String>,
    /// Asked for with `--priority`; capped by the user's `max_priority`.
    pub priority: Priority,
    /// `--preemptible`: the job may run on idle capacity beyond its share and gives way
    /// (is stopped and requeued) when work with a rightful claim waits.
    pub preemptible: bool,
    /// The job's driver and executors; `None` is one process of `PendingJob::resources`.
    pub gang: Option<Gang>,
    /// `--constraint key=value`: only nodes with all these labels may run the job (all of
    /// it on one such node).
    pub constraints: Vec<(String, String)>,
}

/// A Spark job's demand: one driver and `executors` executors of `executor` each, admitted
/// together or not at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gang {
    /// The driver process.
    pub driver: Resources,
    /// One executor.
    pub executor: Resources,
    /// How many executors.
    pub executors: u32,
    /// False: the whole gang runs on one node (Spark local mode). True: when it does not
    /// fit one node, executors may go to other nodes than the driver's (a per-job Spark
    /// standalone cluster). A gang that fits one node is always placed on one node.
    pub spread: bool,
}

impl Gang {
    /// A gang that is one process of `total` resources.
    pub fn local(total: Resources) -> Gang {
        Gang {
            driver: total,
            ..Gang::default()
        }
    }

    /// Driver plus all executors.
    pub fn total(&self) -> Resources {
        self.driver.add(&self.executor.times(self.executors))
    }
}
