//! The scheduler's output: what to start, what to stop, and why everything else waits.
//! The server applies one plan in one transaction and stores each reason with its job.

use std::fmt;

use crate::resources::{fmt_mib, Resources};
use crate::snapshot::JobId;

/// What one pass decided. Apply it whole, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Jobs to start now, each with its whole gang.
    pub placements: Vec<Placement>,
    /// Every queued job not placed, with the reason to show its user.
    pub waiting: Vec<Waiting>,
    /// Running jobs to stop (SIGTERM, `grace_ms`, SIGKILL) and requeue.
    pub preemptions: Vec<Preemption>,
}

impl Plan {
    /// The placement of `job`, if it starts now.
    pub fn placement(&self, job: JobId) -> Option<&Placement> {
        self.placements.iter().find(|p| p.job == job)
    }

    /// Why `job` waits, if it does.
    pub fn reason(&self, job: JobId) -> Option<&WaitReason> {
        self.waiting
            .iter()
            .find(|w| w.job == job)
            .map(|w| &w.reason)
    }

    /// The preemption of running job `job`, if it is to be stopped.
    pub fn preemption(&self, job: JobId) -> Option<&Preemption> {
        self.preemptions.iter().find(|p| p.job == job)
    }
}

/// Where a job's gang goes. In local mode (`executors` empty) the whole gang runs on
/// `node`. Spread over nodes, the driver runs on `node` and `executors` says how many
/// executors of `executor` each run on which node (the driver's node may be among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The job to start.
    pub job: JobId,
    /// The driver's node, and the whole gang's in local mode.
    pub node: String,
    /// What the job holds on `node` in all.
    pub resources: Resources,
    /// One executor's resources (zero in local mode).
    pub executor: Resources,
    /// Executors by node, when the gang is spread (empty in local mode).
    pub executors: Vec<NodeExecutors>,
}

/// `count` executors of one job on `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExecutors {
    /// The node.
    pub node: String,
    /// How many executors run there.
    pub count: u32,
}

impl Placement {
    /// What the job holds on each node, one entry per node, the driver's node first: the
    /// allocations the server records when it starts the job.
    pub fn holdings(&self) -> Vec<(String, Resources)> {
        let mut out = vec![(self.node.clone(), self.resources)];
        for e in &self.executors {
            if e.node != self.node {
                out.push((e.node.clone(), self.executor.times(e.count)));
            }
        }
        out
    }

    /// Everything the job holds, over all nodes.
    pub fn total(&self) -> Resources {
        self.holdings()
            .iter()
            .fold(Resources::ZERO, |acc, (_, r)| acc.add(r))
    }
}

/// A queued job that does not start in this pass, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The job.
    pub job: JobId,
    /// Why it waits; store `reason.to_string()` with the job.
    pub reason: WaitReason,
}

/// Whose limit holds a job back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The job's user's own quota.
    User,
    /// The quota of the user's group, over all its members.
    Group(String),
    /// The maximum of the job's queue.
    Queue(String),
}

/// Which limit holds a job back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Cores held together (`max_cores`).
    Cores,
    /// Memory held together (`max_memory_mib`), amounts in MiB.
    Memory,
    /// Jobs running at once (`max_running_jobs`).
    RunningJobs,
}

/// Why a job was not placed in this pass, in words a user can act on. The `Display` text is
/// what `hearth job show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// No node is schedulable at all.
    NoNodes,
    /// No schedulable node has every label the job is constrained to.
    NoNodeWithLabels {
        /// The job's `--constraint`s.
        labels: Vec<(String, String)>,
    },
    /// No node could ever hold the job (or the driver or an executor of a spread gang).
    NeverFits {
        /// What has to fit on one node.
        needs: Resources,
        /// The largest schedulable node.
        largest: Resources,
    },
    /// The job is first in its queue's line and waits for running jobs to free enough
    /// resources on the node it has reserved; nothing else is started there meanwhile.
    Resources {
        /// The whole gang.
        needs: Resources,
        /// Free now on the reserved node(s).
        free: Resources,
        /// Jobs holding the reserved node(s), the first twenty.
        blocking_jobs: Vec<JobId>,
    },
    /// Behind the first waiting job of the implicit `default` queue.
    BehindEarlierJob {
        /// How many jobs wait in line before this one, counting `ahead`.
        position: usize,
        /// The first job in line.
        ahead: JobId,
    },
    /// Behind the first waiting job of a named queue.
    InQueue {
        /// The job's queue.
        queue: String,
        /// How many jobs wait in line before this one, counting `ahead`.
        position: usize,
        /// The first job in line.
        ahead: JobId,
    },
    /// A gang spread over nodes cannot be packed even on the idle cluster.
    ClusterTooSmall {
        /// The whole gang.
        needs: Resources,
        /// What all schedulable nodes offer together.
        total: Resources,
    },
    /// The job names a queue that is not configured.
    UnknownQueue {
        /// The name it gave.
        queue: String,
    },
    /// The job alone asks for more than a limit allows: it can never run as it is.
    ExceedsLimit {
        /// Whose limit.
        scope: Scope,
        /// Which limit.
        kind: LimitKind,
        /// What the job asks for.
        needs: u64,
        /// What the limit allows.
        max: u64,
    },
    /// A limit is reached: running jobs already hold too much of it to add this job.
    AtLimit {
        /// Whose limit.
        scope: Scope,
        /// Which limit.
        kind: LimitKind,
        /// Held now, including jobs placed earlier in this pass.
        used: u64,
        /// What the limit allows.
        max: u64,
        /// What this job asks for.
        needs: u64,
        /// The jobs holding it (the first ten; none for a queue's maximum).
        jobs: Vec<JobId>,
        /// How many more jobs hold it.
        more_jobs: usize,
        /// The job that waits at this limit first, when it is not this one: later jobs do
        /// not overtake it, even when they would fit.
        first_in_line: Option<JobId>,
    },
    /// Preempted jobs are stopping on `node` to make room for this one.
    AwaitingPreemption {
        /// The node the job will start on.
        node: String,
        /// The jobs it waits for.
        jobs: Vec<JobId>,
    },
}

fn fmt_amount(kind: LimitKind, n: u64) -> String {
    match kind {
        LimitKind::Cores => format!("{n} {}", if n == 1 { "core" } else { "cores" }),
        LimitKind::Memory => fmt_mib(n),
        LimitKind::RunningJobs => format!("{n} running {}", if n == 1 { "job" } else { "jobs" }),
    }
}

/// "job 3", "jobs 3 and 4", "jobs 3, 4 and 7", "jobs 3, 4 and 12 more".
pub(crate) fn fmt_jobs(jobs: &[JobId], more: usize) -> String {
    let mut items: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
    if more > 0 {
        items.push(format!("{more} more"));
    }
    let word = if items.len() == 1 && more == 0 {
        "job"
    } else {
        "jobs"
    };
    match items.len() {
        0 => String::new(),
        1 => format!("{word} {}", items[0]),
        n => format!("{word} {} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NoNodes => write!(f, "no node is available to run jobs"),
            WaitReason::NoNodeWithLabels { labels } => {
                let list: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(
                    f,
                    "no ready node has the label{} {} (`hearth nodes` lists nodes and their labels)",
                    if labels.len() == 1 { "" } else { "s" },
                    list.join(", ")
                )
            }
            WaitReason::NeverFits { needs, largest } => write!(
                f,
                "needs {needs} but the largest node offers {largest}: ask for less"
            ),
            WaitReason::Resources {
                needs,
                free,
                blocking_jobs,
            } => {
                write!(f, "waiting for resources: needs {needs}, {free} free")?;
                if !blocking_jobs.is_empty() {
                    write!(f, " (in use by {})", fmt_jobs(blocking_jobs, 0))?;
                }
                Ok(())
            }
            WaitReason::BehindEarlierJob { position, ahead } => {
                write!(f, "position {position} in the queue, behind job {ahead}")
            }
            WaitReason::InQueue {
                queue,
                position,
                ahead,
            } => write!(
                f,
                "position {position} in queue {queue}, behind job {ahead}"
            ),
            WaitReason::ClusterTooSmall { needs, total } => write!(
                f,
                "needs {needs} over several nodes, which the nodes ({total} in all) cannot hold even when idle: ask for fewer or smaller executors"
            ),
            WaitReason::UnknownQueue { queue } => write!(
                f,
                "queue {queue} does not exist: ask an admin to create it, or submit without --queue"
            ),
            WaitReason::ExceedsLimit {
                scope,
                kind,
                needs,
                max,
            } => {
                let whose = match scope {
                    Scope::User => "your quota".to_string(),
                    Scope::Group(g) => format!("group {g}'s quota"),
                    Scope::Queue(q) => format!("queue {q}"),
                };
                write!(
                    f,
                    "needs {} but {whose} allows at most {}: ask for less, or ask an admin to raise it",
                    fmt_amount(*kind, *needs),
                    fmt_amount(*kind, *max)
                )
            }
            WaitReason::AtLimit {
                scope,
                kind,
                used,
                max,
                needs,
                jobs,
                more_jobs,
                first_in_line,
            } => {
                let amounts = match kind {
                    LimitKind::Memory => format!("{} of {}", fmt_mib(*used), fmt_mib(*max)),
                    _ => format!("{used} of {}", fmt_amount(*kind, *max)),
                };
                match scope {
                    Scope::User => write!(f, "your quota: {amounts}")?,
                    Scope::Group(g) => write!(f, "group {g}'s quota: {amounts}")?,
                    Scope::Queue(q) => {
                        let what = match kind {
                            LimitKind::Cores => "cores",
                            LimitKind::Memory => "memory",
                            LimitKind::RunningJobs => "running jobs",
                        };
                        write!(f, "queue {q} at its maximum {what}: {amounts}")?
                    }
                }
                let list = fmt_jobs(jobs, *more_jobs);
                match kind {
                    LimitKind::RunningJobs if !list.is_empty() => write!(f, " ({list})")?,
                    LimitKind::RunningJobs => {}
                    _ if list.is_empty() => write!(f, " in use")?,
                    _ => write!(f, " in use by {list}")?,
                }
                match first_in_line {
                    Some(first) => write!(f, "; job {first} is first in line for it"),
                    None if *kind == LimitKind::RunningJobs => Ok(()),
                    None => write!(f, "; this job needs {}", fmt_amount(*kind, *needs)),
                }
            }
            WaitReason::AwaitingPreemption { node, jobs } => write!(
                f,
                "starting on node {node} once preempted {} stopped",
                if jobs.len() == 1 {
                    format!("{} has", fmt_jobs(jobs, 0))
                } else {
                    format!("{} have", fmt_jobs(jobs, 0))
                }
            ),
        }
    }
}

/// A running job to stop and requeue so that a waiting job with a rightful claim can run.
/// The server sends SIGTERM, waits `grace_ms`, sends SIGKILL, then puts the job back in
/// the queue with its original submission time and one more attempt, and records
/// `to_string()` on the attempt so `hearth job show` says by what and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    /// The running job to stop and requeue.
    pub job: JobId,
    /// Its owner.
    pub user: String,
    /// The waiting job that claims the resources.
    pub by: JobId,
    /// The claimant's owner.
    pub by_user: String,
    /// Why the claim wins.
    pub reason: PreemptReason,
    /// Time between SIGTERM and SIGKILL.
    pub grace_ms: u64,
}

/// Why the claim of the waiting job beats the preempted job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreemptReason {
    /// The waiting job is not preemptible; preemptible work gives way to it.
    FirmWork {
        /// The claimant's queue.
        by_queue: String,
    },
    /// The waiting job's queue is below its guaranteed share and the preempted job's queue
    /// is above its own.
    Guarantee {
        /// The claimant's queue.
        by_queue: String,
        /// The preempted job's queue.
        victim_queue: String,
    },
}

impl fmt::Display for Preemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "preempted for job {} of {}: ", self.by, self.by_user)?;
        match &self.reason {
            PreemptReason::FirmWork { by_queue } => write!(
                f,
                "this job is preemptible and job {} (queue {by_queue}) is not; requeued",
                self.by
            ),
            PreemptReason::Guarantee {
                by_queue,
                victim_queue,
            } => write!(
                f,
                "queue {by_queue} is below its guaranteed share and queue {victim_queue} is above its own; requeued"
            ),
        }
    }
}
