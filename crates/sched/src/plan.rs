//! The scheduler's output: what to start, what to stop, and why everything else waits.
//! The server applies one plan in one transaction and stores each reason with its job.

use std::fmt;

use crate::resources::{fmt_mib, Resources};
use crate::snapshot::JobId;

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
    pub fn placement(&self, job: JobId) -> Option<&Placement> {
        self.placements.iter().find(|p| p.job == job)
    }

    pub fn reason(&self, job: JobId) -> Option<&WaitReason> {
        self.waiting
            .iter()
            .find(|w| w.job == job)
            .map(|w| &w.reason)
    }

    pub fn preemption(&self, job: JobId) -> Option<&Preemption> {
        self.preemptions.iter().find(|p| p.job == job)
    }
}

/// Where a job's gang goes. In local mode (`executors` empty) the whole gang runs on
/// `node`. Spread over nodes, the driver runs on `node` and `executors` says how many
/// executors of `executor` each run on which node (the driver's node may be among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub job: JobId,
    /// The driver's node, and the whole gang's in local mode.
    pub node: String,
    /// What the job holds on `node` in all.
    pub resources: Resources,
    /// One executor's resources (zero in local mode).
    pub executor: Resources,
    pub executors: Vec<NodeExecutors>,
}

/// `count` executors of one job on `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeExecutors {
    pub node: String,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub job: JobId,
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
    Cores,
    Memory,
    RunningJobs,
}

/// Why a job was not placed in this pass, in words a user can act on. The `Display` text is
/// what `hearth job show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// No node is schedulable at all.
    NoNodes,
    /// No node could ever hold the job, even empty.
    NeverFits {
        needs: Resources,
        largest: Resources,
    },
    /// The job is first in its queue's line and waits for running jobs to free enough
    /// resources on the node it has reserved; nothing else is started there meanwhile.
    Resources {
        needs: Resources,
        free: Resources,
        blocking_jobs: Vec<JobId>,
    },
    /// Behind the first waiting job of the implicit `default` queue (`position` jobs wait
    /// in line before it, counting `ahead`).
    BehindEarlierJob { position: usize, ahead: JobId },
    /// Behind the first waiting job of the named queue.
    InQueue {
        queue: String,
        position: usize,
        ahead: JobId,
    },
    /// A gang spread over nodes needs more than all schedulable nodes offer together.
    ClusterTooSmall { needs: Resources, total: Resources },
    /// The job names a queue that is not configured.
    UnknownQueue { queue: String },
    /// The job alone asks for more than a limit allows: it can never run as it is.
    ExceedsLimit {
        scope: Scope,
        kind: LimitKind,
        needs: u64,
        max: u64,
    },
    /// A limit is reached: `used` of `max` are held by `jobs` (the first few of them, and
    /// `more_jobs` others); `first_in_line` is the job that waits for this limit first
    /// when it is not this one.
    AtLimit {
        scope: Scope,
        kind: LimitKind,
        used: u64,
        max: u64,
        needs: u64,
        jobs: Vec<JobId>,
        more_jobs: usize,
        first_in_line: Option<JobId>,
    },
    /// Preempted jobs are stopping on `node` to make room for this one.
    AwaitingPreemption { node: String, jobs: Vec<JobId> },
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
                "needs {needs} but all nodes together offer {total}: ask for less"
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
    pub job: JobId,
    pub user: String,
    /// The waiting job that claims the resources.
    pub by: JobId,
    pub by_user: String,
    pub reason: PreemptReason,
    pub grace_ms: u64,
}

/// Why the claim of the waiting job beats the preempted job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreemptReason {
    /// The waiting job is not preemptible; preemptible work gives way to it.
    FirmWork { by_queue: String },
    /// The waiting job's queue is below its guaranteed share and the preempted job's queue
    /// is above its own.
    Guarantee {
        by_queue: String,
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
