//! Stage 1, reconcile: turn the snapshot into the pass's working state. Free resources per
//! node, usage per user, group, queue and (queue, user), the jobs being preempted, and each
//! queued job resolved to its queue, gang and effective priority. Jobs that can never run
//! as they are (stage 2, feasibility) get their reason here and take no further part.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::config::{Quota, DEFAULT_QUEUE};
use crate::fit::NodeIndex;
use crate::plan::{LimitKind, Plan, Scope, WaitReason, Waiting};
use crate::preempt::VictimIndex;
use crate::resources::Resources;
use crate::snapshot::{Gang, JobId, JobOptions, PendingJob, Priority, Snapshot};

/// The working state of one pass. Built by [`Pass::prepare`], consumed by the round loop
/// in `pass.rs`, with placement, limits and preemption in their own modules.
pub(crate) struct Pass<'a> {
    pub snap: &'a Snapshot,
    /// What all schedulable nodes offer together: the denominator of every share.
    pub total: Resources,
    pub nodes: Vec<NodeState<'a>>,
    /// Open nodes (schedulable, not reserved) by free resources.
    pub index: NodeIndex,
    pub queues: Vec<QueueState<'a>>,
    pub groups: Vec<GroupState<'a>>,
    pub users: Vec<UserState<'a>>,
    pub members: Vec<Member<'a>>,
    pub running: Vec<RunningJob>,
    /// Every allocation of the snapshot, resolved: which running job, which node.
    pub allocs: Vec<Alloc>,
    /// (node, job) for every placement of this pass, driver's and executors' nodes.
    pub placed_on: Vec<(usize, JobId)>,
    /// Nodes that hold resources of stopping jobs not yet promised to anyone.
    pub freeing_nodes: Vec<usize>,
    /// Preemptible running work, least entitled first; built on the first claim.
    pub victims: Option<VictimIndex>,
    /// `snap.job_options` re-indexed for this pass when it is large: one sequential scan
    /// of the caller's map, then lookups in a compact table that stays in cache.
    options: Option<FastMap<JobId, &'a JobOptions>>,
    /// Pareto-minimal demands that found no open node in this pass: anything at least as
    /// large cannot fit either, since open capacity only shrinks during a pass.
    pub fit_failures: Vec<Resources>,
    /// Likewise for demands that found no preemptible work to displace.
    pub claim_failures: Vec<Resources>,
    /// Likewise for demands that found no node where stopping jobs would make room
    /// (cleared when a preemption frees resources on further nodes).
    pub stopping_failures: Vec<Resources>,
    pub plan: Plan,
}

pub(crate) struct NodeState<'a> {
    pub name: &'a str,
    pub capacity: Resources,
    pub schedulable: bool,
    /// Resources of stopping jobs here that no waiting job has been promised yet.
    pub freeing: Resources,
    /// Stopping jobs with resources here.
    pub stopping: Vec<JobId>,
}

pub(crate) struct QueueState<'a> {
    pub name: &'a str,
    pub weight: u64,
    pub guaranteed: Resources,
    pub max: Option<Resources>,
    pub best_effort: bool,
    /// The `default` queue nobody configured: positions in it read as before queues existed.
    pub implicit_default: bool,
    /// Held by running jobs and placements of this pass: what limits are checked against.
    pub used: Resources,
    /// `used` plus the demands of jobs passed over for lack of resources: what ordering uses,
    /// so waiting jobs line up in the order they will be served.
    pub virt: Resources,
    /// Resources of this queue's jobs chosen for preemption in this pass.
    pub preempted: Resources,
    /// The first job in this queue that waits for resources; later ones are behind it.
    pub head: Option<JobId>,
    /// Whether this queue already holds a reservation or a claim in this pass.
    pub reserved: bool,
    pub line: usize,
    /// The first job stopped by the queue's maximum, and why; later jobs wait behind it.
    pub blocked: Option<(JobId, WaitReason)>,
}

pub(crate) struct GroupState<'a> {
    pub name: &'a str,
    pub quota: Quota,
    pub used: Resources,
    pub running: u32,
    pub jobs: Vec<JobId>,
    pub blocked: Option<(JobId, WaitReason)>,
}

pub(crate) struct UserState<'a> {
    pub name: &'a str,
    pub group: usize,
    pub default_queue: Option<usize>,
    pub quota: Quota,
    pub max_priority: Priority,
    pub used: Resources,
    pub running: u32,
    pub jobs: Vec<JobId>,
    pub blocked: Option<(JobId, WaitReason)>,
}

/// One user's work in one queue: the unit DRF orders within a queue.
pub(crate) struct Member<'a> {
    pub queue: usize,
    pub user: usize,
    pub virt: Resources,
    /// Jobs that are not preemptible, in the user's own order.
    pub firm: Vec<Candidate<'a>>,
    /// Preemptible jobs, served after all firm work.
    pub spare: Vec<Candidate<'a>>,
    pub next: usize,
}

#[derive(Clone, Copy)]
pub(crate) struct Candidate<'a> {
    pub job: &'a PendingJob,
    pub gang: Gang,
    pub total: Resources,
    pub preemptible: bool,
    /// Priority after the cap and aging, 0 (low) to 2 (high).
    pub level: u8,
}

impl Candidate<'_> {
    /// Order within one user: priority (after aging), then oldest first.
    pub fn rank(&self) -> (std::cmp::Reverse<u8>, i64, JobId) {
        (
            std::cmp::Reverse(self.level),
            self.job.submitted_ms,
            self.job.id,
        )
    }

    /// Whether the gang must (or may) go on one node.
    pub fn local(&self) -> bool {
        !self.gang.spread || self.gang.executors == 0
    }
}

pub(crate) struct RunningJob {
    pub id: JobId,
    pub user: usize,
    pub queue: usize,
    pub member: usize,
    pub total: Resources,
    pub preemptible: bool,
    /// Told to stop: by an earlier plan (in its grace period) or by this pass.
    pub stopping: bool,
    pub level: u8,
    /// Its first allocation in `Pass::allocs`, and how many it has (more than one when
    /// spread over nodes; they need not be adjacent).
    pub first_alloc: usize,
    pub alloc_count: u32,
}

/// One allocation of the snapshot.
#[derive(Clone, Copy)]
pub(crate) struct Alloc {
    pub running: usize,
    /// `None` when the snapshot names a node it does not list.
    pub node: Option<usize>,
    pub resources: Resources,
}

#[derive(Clone, Copy)]
pub(crate) struct Victim {
    pub running: usize,
    pub on_node: Resources,
    /// Position in the global least-entitled-first order.
    pub rank: usize,
}

impl<'a> Pass<'a> {
    /// The allocations of running job `r`.
    pub fn allocs_of(&self, r: usize) -> impl Iterator<Item = Alloc> + '_ {
        let job = &self.running[r];
        let (first, count) = (job.first_alloc, job.alloc_count as usize);
        let rest = if count > 1 {
            &self.allocs[first + 1..]
        } else {
            &[]
        };
        std::iter::once(self.allocs[first])
            .chain(rest.iter().copied().filter(move |a| a.running == r))
    }

    /// Jobs holding resources on any of `nodes`, running or placed in this pass, sorted.
    pub fn jobs_on(&self, nodes: &[usize]) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = self
            .allocs
            .iter()
            .filter(|a| a.node.is_some_and(|n| nodes.contains(&n)))
            .map(|a| self.running[a.running].id)
            .chain(
                self.placed_on
                    .iter()
                    .filter(|(n, _)| nodes.contains(n))
                    .map(|&(_, j)| j),
            )
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        jobs
    }

    pub fn prepare(snap: &'a Snapshot) -> Pass<'a> {
        let mut pass = Pass {
            snap,
            total: Resources::ZERO,
            nodes: Vec::with_capacity(snap.nodes.len()),
            index: NodeIndex::default(),
            queues: Vec::new(),
            groups: Vec::new(),
            users: Vec::new(),
            members: Vec::new(),
            running: Vec::new(),
            allocs: Vec::with_capacity(snap.running.len()),
            placed_on: Vec::new(),
            freeing_nodes: Vec::new(),
            victims: None,
            options: (snap.job_options.len() > 1024)
                .then(|| snap.job_options.iter().map(|(&id, o)| (id, o)).collect()),
            fit_failures: Vec::new(),
            claim_failures: Vec::new(),
            stopping_failures: Vec::new(),
            plan: Plan::default(),
        };
        let mut names = Names::default();
        pass.account_nodes(&mut names);
        let free = pass.account_running(&mut names);
        let open = pass.nodes.iter().map(|n| n.schedulable).collect();
        pass.index = NodeIndex::new(free, open);
        pass.admit_queued(&mut names);
        pass
    }

    fn account_nodes(&mut self, names: &mut Names<'a>) {
        for (i, n) in self.snap.nodes.iter().enumerate() {
            names.node.entry(n.name.as_str()).or_insert(i);
            if n.schedulable {
                self.total = self.total.add(&n.capacity);
            }
            self.nodes.push(NodeState {
                name: &n.name,
                capacity: n.capacity,
                schedulable: n.schedulable,
                freeing: Resources::ZERO,
                stopping: Vec::new(),
            });
        }
    }

    /// Account running jobs to users, groups, queues and nodes; returns each node's free
    /// resources.
    fn account_running(&mut self, names: &mut Names<'a>) -> Vec<Resources> {
        let mut free: Vec<Resources> = self.nodes.iter().map(|n| n.capacity).collect();
        let in_flight: HashSet<JobId> = self.snap.preempting.iter().copied().collect();
        let mut by_job: FastMap<JobId, usize> = FastMap::default();
        for a in &self.snap.running {
            let r = match by_job.get(&a.job) {
                Some(&r) => r,
                None => {
                    let opts = self.options(a.job);
                    let user = self.user_index(names, &a.user);
                    let queue = match &opts.queue {
                        Some(q) => self.queue_index(names, q),
                        None => self.default_queue_of(names, user),
                    };
                    let member = self.member_index(names, queue, user);
                    let level = opts.priority.min(self.users[user].max_priority).level();
                    let preemptible = opts.preemptible || self.queues[queue].best_effort;
                    self.running.push(RunningJob {
                        id: a.job,
                        user,
                        queue,
                        member,
                        total: Resources::ZERO,
                        preemptible,
                        stopping: in_flight.contains(&a.job),
                        level,
                        first_alloc: self.allocs.len(),
                        alloc_count: 0,
                    });
                    by_job.insert(a.job, self.running.len() - 1);
                    self.running.len() - 1
                }
            };
            let node = names.node.get(a.node.as_str()).copied();
            let job = &mut self.running[r];
            job.total = job.total.add(&a.resources);
            job.alloc_count += 1;
            self.allocs.push(Alloc {
                running: r,
                node,
                resources: a.resources,
            });
            if let Some(n) = node {
                free[n] = free[n].saturating_sub(&a.resources);
                let n = &mut self.nodes[n];
                if in_flight.contains(&a.job) {
                    n.freeing = n.freeing.add(&a.resources);
                    n.stopping.push(a.job);
                }
            }
        }
        for job in &self.running {
            let (u, q, m) = (job.user, job.queue, job.member);
            let g = self.users[u].group;
            for acct in [&mut self.users[u].used, &mut self.groups[g].used] {
                *acct = acct.add(&job.total);
            }
            self.users[u].running += 1;
            self.users[u].jobs.push(job.id);
            self.groups[g].running += 1;
            self.groups[g].jobs.push(job.id);
            self.queues[q].used = self.queues[q].used.add(&job.total);
            self.queues[q].virt = self.queues[q].used;
            self.members[m].virt = self.members[m].virt.add(&job.total);
        }
        self.freeing_nodes = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].schedulable && !self.nodes[n].freeing.is_zero())
            .collect();
        free
    }

    /// Resolve every queued job; explain at once those that cannot run as they are, and
    /// line up the rest under their (queue, user).
    fn admit_queued(&mut self, names: &mut Names<'a>) {
        let shapes = node_shapes(&self.snap.nodes);
        let largest = self
            .snap
            .nodes
            .iter()
            .filter(|n| n.schedulable)
            .map(|n| n.capacity)
            .max_by_key(|c| (c.cores, c.memory_mib));
        let fits_a_node = |r: &Resources| shapes.iter().any(|s| r.fits_in(s));
        // The idle cluster, to check that spread gangs can be packed at all.
        let mut idle: Option<NodeIndex> = None;
        let aging = self.snap.config.aging_ms;
        for job in &self.snap.queued {
            let opts = self.options(job.id);
            let gang = opts.gang.unwrap_or_else(|| Gang::local(job.resources));
            let total = gang.total();
            let user = self.user_index(names, &job.user);
            let reason = 'check: {
                let Some(largest) = largest else {
                    break 'check Some(WaitReason::NoNodes);
                };
                if let Some(q) = &opts.queue {
                    if !self.snap.config.queue_exists(q) {
                        break 'check Some(WaitReason::UnknownQueue { queue: q.clone() });
                    }
                }
                let local = !gang.spread || gang.executors == 0;
                if local && !fits_a_node(&total) {
                    break 'check Some(WaitReason::NeverFits {
                        needs: total,
                        largest,
                    });
                }
                if !local {
                    for part in [gang.driver, gang.executor] {
                        if !fits_a_node(&part) {
                            break 'check Some(WaitReason::NeverFits {
                                needs: part,
                                largest,
                            });
                        }
                    }
                    if !fits_a_node(&total) {
                        let idle = idle.get_or_insert_with(|| {
                            let nodes = &self.snap.nodes;
                            NodeIndex::new(
                                nodes.iter().map(|n| n.capacity).collect(),
                                nodes.iter().map(|n| n.schedulable).collect(),
                            )
                        });
                        match idle.pack_spread(&gang) {
                            Some(fit) => idle.undo(&fit, gang.executor),
                            None => {
                                break 'check Some(WaitReason::ClusterTooSmall {
                                    needs: total,
                                    total: self.total,
                                })
                            }
                        }
                    }
                }
                None
            };
            if let Some(reason) = reason {
                self.plan.waiting.push(Waiting {
                    job: job.id,
                    reason,
                });
                continue;
            }
            let queue = match &opts.queue {
                Some(q) => self.queue_index(names, q),
                None => self.default_queue_of(names, user),
            };
            if let Some(reason) = self.exceeds_alone(queue, user, &total) {
                self.plan.waiting.push(Waiting {
                    job: job.id,
                    reason,
                });
                continue;
            }
            let mut level = opts.priority.min(self.users[user].max_priority).level();
            if aging > 0 {
                let steps = (self.snap.now_ms.saturating_sub(job.submitted_ms) / aging).max(0);
                level = (i64::from(level) + steps).min(i64::from(Priority::High.level())) as u8;
            }
            let preemptible = opts.preemptible || self.queues[queue].best_effort;
            let member = self.member_index(names, queue, user);
            let cand = Candidate {
                job,
                gang,
                total,
                preemptible,
                level,
            };
            let m = &mut self.members[member];
            if preemptible {
                m.spare.push(cand);
            } else {
                m.firm.push(cand);
            }
        }
        for m in &mut self.members {
            m.firm.sort_unstable_by_key(|c| c.rank());
            m.spare.sort_unstable_by_key(|c| c.rank());
        }
    }

    /// A job whose demand alone is beyond one of its limits.
    fn exceeds_alone(&self, queue: usize, user: usize, total: &Resources) -> Option<WaitReason> {
        let u = &self.users[user];
        let g = &self.groups[u.group];
        let q = &self.queues[queue];
        let queue_quota = Quota {
            max_cores: q.max.map(|m| m.cores),
            max_memory_mib: q.max.map(|m| m.memory_mib),
            ..Quota::default()
        };
        let holders = [(0, &u.quota), (1, &g.quota), (2, &queue_quota)];
        for (holder, quota) in holders {
            let checks = [
                (
                    LimitKind::Cores,
                    u64::from(total.cores),
                    quota.max_cores.map(u64::from),
                ),
                (LimitKind::Memory, total.memory_mib, quota.max_memory_mib),
                (
                    LimitKind::RunningJobs,
                    1,
                    quota.max_running_jobs.map(u64::from),
                ),
            ];
            for (kind, needs, max) in checks {
                let Some(max) = max else { continue };
                if needs > max {
                    let scope = match holder {
                        0 => Scope::User,
                        1 => Scope::Group(g.name.to_string()),
                        _ => Scope::Queue(q.name.to_string()),
                    };
                    return Some(WaitReason::ExceedsLimit {
                        scope,
                        kind,
                        needs,
                        max,
                    });
                }
            }
        }
        None
    }

    pub fn options(&self, job: JobId) -> &'a JobOptions {
        static DEFAULT: std::sync::OnceLock<JobOptions> = std::sync::OnceLock::new();
        let found = match &self.options {
            Some(map) => map.get(&job).copied(),
            None => self.snap.job_options.get(&job),
        };
        found.unwrap_or_else(|| DEFAULT.get_or_init(JobOptions::default))
    }

    fn user_index(&mut self, names: &mut Names<'a>, name: &'a str) -> usize {
        if let Some(&u) = names.user.get(name) {
            return u;
        }
        let config = &self.snap.config;
        let group_name = config.group_of(name);
        let group = match names.group.get(group_name) {
            Some(&g) => g,
            None => {
                let quota = config
                    .group(group_name)
                    .map(|g| g.quota)
                    .unwrap_or_default();
                self.groups.push(GroupState {
                    name: group_name,
                    quota,
                    used: Resources::ZERO,
                    running: 0,
                    jobs: Vec::new(),
                    blocked: None,
                });
                names.group.insert(group_name, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.users.push(UserState {
            name,
            group,
            default_queue: None,
            quota: config.user_quota(name),
            max_priority: config.max_priority(name),
            used: Resources::ZERO,
            running: 0,
            jobs: Vec::new(),
            blocked: None,
        });
        names.user.insert(name, self.users.len() - 1);
        self.users.len() - 1
    }

    fn default_queue_of(&mut self, names: &mut Names<'a>, user: usize) -> usize {
        if let Some(q) = self.users[user].default_queue {
            return q;
        }
        let name = self.snap.config.default_queue_of(self.users[user].name);
        let q = self.queue_index(names, name);
        self.users[user].default_queue = Some(q);
        q
    }

    fn queue_index(&mut self, names: &mut Names<'a>, name: &'a str) -> usize {
        if let Some(&q) = names.queue.get(name) {
            return q;
        }
        let configured = self.snap.config.queue(name);
        let state = match configured {
            Some(c) => QueueState {
                name: &c.name,
                weight: u64::from(c.weight.max(1)),
                guaranteed: c.guaranteed,
                max: c.max,
                best_effort: c.best_effort,
                implicit_default: false,
                ..QueueState::new(name)
            },
            None => QueueState {
                implicit_default: name == DEFAULT_QUEUE,
                ..QueueState::new(name)
            },
        };
        self.queues.push(state);
        names.queue.insert(name, self.queues.len() - 1);
        self.queues.len() - 1
    }

    fn member_index(&mut self, names: &mut Names<'a>, queue: usize, user: usize) -> usize {
        *names.member.entry((queue, user)).or_insert_with(|| {
            self.members.push(Member {
                queue,
                user,
                virt: Resources::ZERO,
                firm: Vec::new(),
                spare: Vec::new(),
                next: 0,
            });
            self.members.len() - 1
        })
    }
}

impl<'a> QueueState<'a> {
    fn new(name: &'a str) -> QueueState<'a> {
        QueueState {
            name,
            weight: 1,
            guaranteed: Resources::ZERO,
            max: None,
            best_effort: false,
            implicit_default: false,
            used: Resources::ZERO,
            virt: Resources::ZERO,
            preempted: Resources::ZERO,
            head: None,
            reserved: false,
            line: 0,
            blocked: None,
        }
    }
}

#[derive(Default)]
struct Names<'a> {
    node: FastMap<&'a str, usize>,
    user: FastMap<&'a str, usize>,
    group: FastMap<&'a str, usize>,
    queue: FastMap<&'a str, usize>,
    member: FastMap<(usize, usize), usize>,
}

/// A hash map for the pass's own indexes. Its keys come from one snapshot and live for one
/// pass, so a fast multiply-rotate hash (as rustc's FxHash) is enough; no HashDoS concern.
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The distinct, Pareto-maximal capacities of schedulable nodes: a demand fits some node
/// exactly when it fits one of these. Clusters have few node shapes, so this is short.
fn node_shapes(nodes: &[crate::snapshot::Node]) -> Vec<Resources> {
    let mut caps: Vec<Resources> = nodes
        .iter()
        .filter(|n| n.schedulable)
        .map(|n| n.capacity)
        .collect();
    caps.sort_unstable_by_key(|c| std::cmp::Reverse((c.cores, c.memory_mib)));
    caps.dedup();
    let mut shapes: Vec<Resources> = Vec::new();
    for c in caps {
        if !shapes.iter().any(|s| c.fits_in(s)) {
            shapes.push(c);
        }
    }
    shapes
}
