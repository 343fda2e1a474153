//! A model of the server's apply loop, for tests, benchmarks and what-if questions. It
//! feeds snapshots to [`crate::schedule`] and applies each plan the way the server must:
//! start placements, stop preempted jobs once their grace period is over and requeue them
//! with their original submission time, and finish jobs after the run time they were
//! given. Pure like the scheduler: time moves only when [`Sim::step`] is called.

use std::collections::{HashMap, HashSet};

use crate::config::Config;
use crate::plan::Plan;
use crate::resources::Resources;
use crate::snapshot::{Allocation, JobId, JobOptions, Node, PendingJob, Snapshot};

/// Something that happened to a job in the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The job was placed and started.
    Started {
        /// When.
        at_ms: i64,
        /// Which job.
        job: JobId,
        /// Its driver's node.
        node: String,
    },
    /// The job ran to its end.
    Finished {
        /// When.
        at_ms: i64,
        /// Which job.
        job: JobId,
    },
    /// The job was told to stop (SIGTERM); it stops at `at_ms` plus the grace period.
    Preempted {
        /// When.
        at_ms: i64,
        /// Which job.
        job: JobId,
        /// The job it made room for.
        by: JobId,
        /// What `hearth job show` would say.
        why: String,
    },
    /// The preempted job stopped and is queued again.
    Requeued {
        /// When.
        at_ms: i64,
        /// Which job.
        job: JobId,
        /// The attempt it is queued for (2 after the first preemption).
        attempt: u32,
    },
}

struct SimJob {
    pending: PendingJob,
    runtime_ms: i64,
    started_ms: Option<i64>,
    stop_at_ms: Option<i64>,
    attempts: u32,
    finished: bool,
}

/// A cluster, its jobs and a clock, driven one pass at a time.
pub struct Sim {
    /// The state the next pass sees; tests may change it between steps.
    pub snapshot: Snapshot,
    /// What happened so far, in order.
    pub events: Vec<Event>,
    jobs: HashMap<JobId, SimJob>,
}

impl Sim {
    /// An idle cluster at time 0.
    pub fn new(nodes: Vec<Node>, config: Config) -> Sim {
        Sim {
            snapshot: Snapshot {
                nodes,
                config,
                ..Snapshot::default()
            },
            events: Vec::new(),
            jobs: HashMap::new(),
        }
    }

    /// Queue a job that will run `runtime_ms` once started (from scratch on every attempt).
    pub fn submit(&mut self, job: PendingJob, options: JobOptions, runtime_ms: i64) {
        self.snapshot.job_options.insert(job.id, options);
        self.snapshot.queued.push(job.clone());
        self.jobs.insert(
            job.id,
            SimJob {
                pending: job,
                runtime_ms,
                started_ms: None,
                stop_at_ms: None,
                attempts: 0,
                finished: false,
            },
        );
    }

    /// The simulated time.
    pub fn now_ms(&self) -> i64 {
        self.snapshot.now_ms
    }

    /// Advance the clock by `dt_ms`, end the jobs whose time is up, then run one pass and
    /// apply its plan. Returns the plan.
    pub fn step(&mut self, dt_ms: i64) -> Plan {
        self.advance(dt_ms);
        let plan = crate::schedule(&self.snapshot);
        self.apply(&plan);
        plan
    }

    /// Advance the clock: jobs whose run time is up finish, preempted jobs whose grace
    /// period is over stop and go back in the queue with their original submission time.
    pub fn advance(&mut self, dt_ms: i64) {
        self.snapshot.now_ms += dt_ms;
        let now = self.snapshot.now_ms;
        let mut ended: HashSet<JobId> = HashSet::new();
        let mut requeue: Vec<PendingJob> = Vec::new();
        let mut running_ids: Vec<JobId> = self.snapshot.running.iter().map(|a| a.job).collect();
        running_ids.sort_unstable();
        running_ids.dedup();
        for id in running_ids {
            let job = self.jobs.get_mut(&id).expect("running job was submitted");
            let started = job.started_ms.unwrap_or(now);
            if started + job.runtime_ms <= now {
                job.finished = true;
                ended.insert(id);
                self.events.push(Event::Finished {
                    at_ms: now,
                    job: id,
                });
            } else if job.stop_at_ms.is_some_and(|t| t <= now) {
                job.attempts += 1;
                job.started_ms = None;
                job.stop_at_ms = None;
                ended.insert(id);
                requeue.push(job.pending.clone());
                self.events.push(Event::Requeued {
                    at_ms: now,
                    job: id,
                    attempt: job.attempts + 1,
                });
            }
        }
        if !ended.is_empty() {
            self.snapshot.running.retain(|a| !ended.contains(&a.job));
            self.snapshot.preempting.retain(|j| !ended.contains(j));
            for id in &ended {
                if self.jobs[id].finished {
                    self.snapshot.job_options.remove(id);
                }
            }
        }
        self.snapshot.queued.extend(requeue);
    }

    /// Apply a plan made from the current snapshot, as the server does in one transaction:
    /// preempted jobs get SIGTERM (and stop after the grace period, in `advance`), placed
    /// jobs start and hold what their placement says on each node.
    pub fn apply(&mut self, plan: &Plan) {
        let now = self.snapshot.now_ms;
        let grace = self.snapshot.config.preemption_grace_ms as i64;
        for p in &plan.preemptions {
            let job = self
                .jobs
                .get_mut(&p.job)
                .expect("preempted job was submitted");
            job.stop_at_ms = Some(now + grace);
            self.snapshot.preempting.push(p.job);
            self.events.push(Event::Preempted {
                at_ms: now,
                job: p.job,
                by: p.by,
                why: p.to_string(),
            });
        }
        if !plan.placements.is_empty() {
            let placed: HashSet<JobId> = plan.placements.iter().map(|p| p.job).collect();
            self.snapshot.queued.retain(|j| !placed.contains(&j.id));
            for p in &plan.placements {
                let job = self.jobs.get_mut(&p.job).expect("placed job was submitted");
                job.started_ms = Some(now);
                for (node, resources) in p.holdings() {
                    self.snapshot.running.push(Allocation {
                        job: p.job,
                        user: job.pending.user.clone(),
                        node,
                        resources,
                    });
                }
                self.events.push(Event::Started {
                    at_ms: now,
                    job: p.job,
                    node: p.node.clone(),
                });
            }
        }
    }

    /// How many times the job was preempted and requeued.
    pub fn requeues(&self, job: JobId) -> u32 {
        self.jobs.get(&job).map_or(0, |j| j.attempts)
    }

    /// Whether the job ran to its end.
    pub fn is_finished(&self, job: JobId) -> bool {
        self.jobs.get(&job).is_some_and(|j| j.finished)
    }

    /// Nothing queued and nothing running.
    pub fn is_idle(&self) -> bool {
        self.snapshot.queued.is_empty() && self.snapshot.running.is_empty()
    }

    /// What schedulable nodes offer together.
    pub fn capacity(&self) -> Resources {
        self.snapshot
            .nodes
            .iter()
            .filter(|n| n.schedulable)
            .fold(Resources::ZERO, |acc, n| acc.add(&n.capacity))
    }

    /// Each user's current dominant share of the cluster.
    pub fn dominant_shares(&self) -> HashMap<String, f64> {
        let total = self.capacity();
        let mut used: HashMap<String, Resources> = HashMap::new();
        for a in &self.snapshot.running {
            let u = used.entry(a.user.clone()).or_default();
            *u = u.add(&a.resources);
        }
        used.into_iter()
            .map(|(u, r)| (u, r.dominant_share(&total)))
            .collect()
    }
}

/// The Dominant Resource Fairness allocation of `total` between users who each run jobs of
/// one shape, as each user's dominant share: progressive filling, where every user still
/// growing gets the same dominant share, a user stops at `max_share` (their demand) and
/// everyone stops when a resource they need runs out. Divisible jobs are assumed, so this
/// is the ideal a scheduler of whole jobs approximates.
pub fn drf_ideal(total: Resources, users: &[(Resources, f64)]) -> Vec<f64> {
    let caps = [f64::from(total.cores), total.memory_mib as f64];
    // Per user and resource: fraction of that resource used per unit of dominant share.
    let rates: Vec<[f64; 2]> = users
        .iter()
        .map(|(shape, _)| {
            let d = shape.dominant_share(&total);
            let r = [f64::from(shape.cores), shape.memory_mib as f64];
            let mut out = [0.0; 2];
            for k in 0..2 {
                if d > 0.0 && caps[k] > 0.0 {
                    out[k] = r[k] / caps[k] / d;
                }
            }
            out
        })
        .collect();
    let mut share = vec![0.0; users.len()];
    let mut growing: Vec<bool> = users
        .iter()
        .map(|(s, m)| !s.is_zero() && *m > 0.0)
        .collect();
    let mut left = [1.0f64, 1.0];
    while growing.iter().any(|&g| g) {
        let mut step = f64::INFINITY;
        for k in 0..2 {
            let rate: f64 = (0..users.len())
                .filter(|&i| growing[i])
                .map(|i| rates[i][k])
                .sum();
            if rate > 0.0 {
                step = step.min(left[k] / rate);
            }
        }
        for i in (0..users.len()).filter(|&i| growing[i]) {
            step = step.min(users[i].1 - share[i]);
        }
        let step = step.max(0.0);
        for k in 0..2 {
            let rate: f64 = (0..users.len())
                .filter(|&i| growing[i])
                .map(|i| rates[i][k])
                .sum();
            left[k] -= rate * step;
        }
        for i in 0..users.len() {
            if growing[i] {
                share[i] += step;
            }
        }
        for i in 0..users.len() {
            let saturated = (0..2).any(|k| rates[i][k] > 0.0 && left[k] <= 1e-12);
            if growing[i] && (saturated || share[i] >= users[i].1 - 1e-12) {
                growing[i] = false;
            }
        }
    }
    share
}
