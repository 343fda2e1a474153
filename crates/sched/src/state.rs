//! The working state of one pass: what the stages read and update as they go. Nothing
//! here outlives the pass; everything refers back into the snapshot it was built from.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::config::Quota;
use crate::nodes::NodeIndex;
use crate::plan::{Plan, WaitReason};
use crate::priority::Priority;
use crate::resources::Resources;
use crate::snapshot::{Gang, JobId, JobOptions, PendingJob, Snapshot};

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
    pub options_index: Option<FastMap<JobId, &'a JobOptions>>,
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
    /// Labels a node must have to run it (`JobOptions::constraints`).
    pub constraints: &'a [(String, String)],
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
        !self.gang.spread || self.gang.executors == 0 || !self.constraints.is_empty()
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
}

impl<'a> QueueState<'a> {
    pub fn new(name: &'a str) -> QueueState<'a> {
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

/// Preemptible running work, built on the first claim of a pass.
pub(crate) struct VictimIndex {
    /// (node, victim), least entitled first.
    pub by_rank: Vec<(usize, Victim)>,
    /// Per node, least entitled first.
    pub by_node: Vec<Vec<Victim>>,
    /// Entries before this are all stopping already.
    pub start: usize,
    /// Scratch per node: free resources plus victims counted so far in this search;
    /// valid where `stamp` equals `generation`.
    pub acc: Vec<Resources>,
    pub stamp: Vec<u32>,
    pub generation: u32,
}
