//! Stage 1, reconcile: turn the snapshot into the pass's working state. Free resources per
//! node, usage per user, group, queue and (queue, user), the jobs being preempted, and each
//! queued job resolved to its queue, gang and effective priority. Jobs that can never run
//! as they are (stage 2, feasibility) get their reason here and take no further part.

use std::collections::HashSet;

use crate::config::{Quota, DEFAULT_QUEUE};
use crate::nodes::NodeIndex;
use crate::plan::{LimitKind, Plan, Scope, WaitReason, Waiting};
use crate::priority::Priority;
use crate::resources::Resources;
use crate::snapshot::{Gang, JobId, JobOptions, Snapshot};
use crate::state::{
    Alloc, Candidate, FastMap, GroupState, Member, NodeState, Pass, QueueState, RunningJob,
    UserState,
};

impl<'a> Pass<'a> {
    pub fn prepare(snap: &'a Snapshot) -> Pass<'a> {
        let mut pass = Pass::prepare_empty(snap);
        let mut names = Names::default();
        pass.account_nodes(&mut names);
        let free = pass.account_running(&mut names);
        let open = pass.nodes.iter().map(|n| n.schedulable).collect();
        pass.index = NodeIndex::new(free, open);
        pass.admit_queued(&mut names);
        pass
    }

    fn prepare_empty(snap: &'a Snapshot) -> Pass<'a> {
        Pass {
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
            options_index: (snap.job_options.len() > 1024)
                .then(|| snap.job_options.iter().map(|(&id, o)| (id, o)).collect()),
            fit_failures: Vec::new(),
            claim_failures: Vec::new(),
            stopping_failures: Vec::new(),
            plan: Plan::default(),
        }
    }

    /// The pass's accounting of running work alone (no queued job resolved), with `user`
    /// resolved to its (queue, user) indices: what work asked for now is checked against
    /// (see `admit`). `queue` None: the user's default queue.
    pub fn prepare_running(
        snap: &'a Snapshot,
        user: &'a str,
        queue: Option<&'a str>,
    ) -> (Pass<'a>, usize, usize) {
        let mut pass = Pass::prepare_empty(snap);
        let mut names = Names::default();
        pass.account_nodes(&mut names);
        let free = pass.account_running(&mut names);
        let open = pass.nodes.iter().map(|n| n.schedulable).collect();
        pass.index = NodeIndex::new(free, open);
        let u = pass.user_index(&mut names, user);
        let q = match queue {
            Some(q) => pass.queue_index(&mut names, q),
            None => pass.default_queue_of(&mut names, u),
        };
        (pass, q, u)
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
                if !opts.constraints.is_empty() {
                    // A constrained job runs whole on one node with its labels.
                    let labelled = self
                        .snap
                        .nodes
                        .iter()
                        .filter(|n| n.schedulable && n.satisfies(&opts.constraints))
                        .map(|n| n.capacity)
                        .max_by_key(|c| (c.cores, c.memory_mib));
                    match labelled {
                        None => {
                            break 'check Some(WaitReason::NoNodeWithLabels {
                                labels: opts.constraints.clone(),
                            })
                        }
                        Some(largest) if !total.fits_in(&largest) => {
                            // Not the largest of all nodes: the largest it may use.
                            let shapes: Vec<Resources> = self
                                .snap
                                .nodes
                                .iter()
                                .filter(|n| n.schedulable && n.satisfies(&opts.constraints))
                                .map(|n| n.capacity)
                                .collect();
                            if !shapes.iter().any(|s| total.fits_in(s)) {
                                break 'check Some(WaitReason::NeverFits {
                                    needs: total,
                                    largest,
                                });
                            }
                        }
                        Some(_) => {}
                    }
                    break 'check None;
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
                constraints: &opts.constraints,
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
    pub(crate) fn exceeds_alone(
        &self,
        queue: usize,
        user: usize,
        total: &Resources,
    ) -> Option<WaitReason> {
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
        let found = match &self.options_index {
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
#[derive(Default)]
struct Names<'a> {
    node: FastMap<&'a str, usize>,
    user: FastMap<&'a str, usize>,
    group: FastMap<&'a str, usize>,
    queue: FastMap<&'a str, usize>,
    member: FastMap<(usize, usize), usize>,
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
