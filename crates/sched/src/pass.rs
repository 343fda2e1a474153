//! The loop that runs the stages for one job at a time, in fair order. Two rounds: first
//! every job that is not preemptible, then preemptible work on what is left. In each
//! round the next job comes from the queue furthest below its share (queues within their
//! guarantee first; shares weighted), and within it from the user with the smallest
//! dominant share in that queue; each user's own jobs go by priority, then age.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::limits::JOBS_SHOWN;
use crate::nodes::Fit;
use crate::plan::{NodeExecutors, Placement, Plan, WaitReason, Waiting};
use crate::preempt::within_guarantee;
use crate::resources::Resources;
use crate::snapshot::JobId;
use crate::state::{Candidate, Pass};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    Firm,
    Spare,
}

/// (dominant share, head's submission time, head's id, member): smallest first.
type MemberKey = Reverse<(u64, i64, JobId, usize)>;
/// (0 if the head keeps the queue within its guarantee, weighted dominant share, head's
/// time, head's id, queue).
type QueueKey = Reverse<(u8, u64, i64, JobId, usize)>;

impl<'a> Pass<'a> {
    pub fn run(mut self) -> Plan {
        self.round(Round::Firm);
        self.round(Round::Spare);
        self.plan
    }

    fn jobs(&self, m: usize, round: Round) -> &[Candidate<'a>] {
        match round {
            Round::Firm => &self.members[m].firm,
            Round::Spare => &self.members[m].spare,
        }
    }

    fn member_key(&self, m: usize, round: Round) -> MemberKey {
        let member = &self.members[m];
        let head = &self.jobs(m, round)[member.next];
        Reverse((
            member.virt.dominant_share_fixed(&self.total),
            head.job.submitted_ms,
            head.job.id,
            m,
        ))
    }

    /// Queues whose next job keeps them within their guarantee come first: the same test
    /// that gives such a job a claim on preemptible work, so that the order never undoes
    /// what a preemption made room for.
    fn queue_key(&self, q: usize, top: &MemberKey, round: Round) -> QueueKey {
        let queue = &self.queues[q];
        let Reverse((_, submitted, id, m)) = *top;
        let head = &self.jobs(m, round)[self.members[m].next];
        let tier = u8::from(!within_guarantee(
            &queue.virt.add(&head.total),
            &queue.guaranteed,
        ));
        let share = queue.virt.dominant_share_fixed(&self.total) / queue.weight;
        Reverse((tier, share, submitted, id, q))
    }

    fn round(&mut self, round: Round) {
        let mut users: Vec<BinaryHeap<MemberKey>> =
            (0..self.queues.len()).map(|_| BinaryHeap::new()).collect();
        for m in 0..self.members.len() {
            self.members[m].next = 0;
            if !self.jobs(m, round).is_empty() {
                let key = self.member_key(m, round);
                users[self.members[m].queue].push(key);
            }
        }
        let mut queues: BinaryHeap<QueueKey> = BinaryHeap::new();
        for (q, heap) in users.iter().enumerate() {
            if let Some(top) = heap.peek() {
                queues.push(self.queue_key(q, top, round));
            }
        }
        while let Some(Reverse((_, _, _, _, q))) = queues.pop() {
            let Some(Reverse((_, _, _, m))) = users[q].pop() else {
                continue;
            };
            let next = self.members[m].next;
            let cand = self.jobs(m, round)[next];
            self.members[m].next += 1;
            self.consider(q, m, &cand);
            if next + 1 < self.jobs(m, round).len() {
                let key = self.member_key(m, round);
                users[q].push(key);
            }
            if let Some(top) = users[q].peek() {
                queues.push(self.queue_key(q, top, round));
            }
        }
    }

    /// Stages 3 to 6 for one job: limits, fit, claim, reservation or place in line.
    fn consider(&mut self, q: usize, m: usize, cand: &Candidate<'a>) {
        let u = self.members[m].user;
        let id = cand.job.id;
        if let Some(reason) = self.blocked_behind(q, u, &cand.total) {
            return self.wait(id, reason);
        }
        if let Some((holder, reason)) = self.check_limits(q, u, &cand.total) {
            self.block(holder, q, u, id, reason.clone());
            return self.wait(id, reason);
        }
        if let Some(fit) = self.fit(cand) {
            return self.place(q, m, cand, fit);
        }
        // No room now. Count the job in its queue's and user's share for the rest of the
        // pass, so later jobs line up behind it in the order they will be served.
        let queue = &mut self.queues[q];
        queue.virt = queue.virt.add(&cand.total);
        self.members[m].virt = self.members[m].virt.add(&cand.total);
        let head = *self.queues[q].head.get_or_insert(id);
        // Claims look at any node: a constrained job waits for room on its own nodes instead.
        if cand.local() && cand.constraints.is_empty() {
            let mut claimed = self.claim_stopping(cand.total);
            if claimed.is_none() {
                if let Some(claim) = self.claim(q, cand) {
                    claimed = self.preempt_for(q, cand, claim);
                }
            }
            if let Some((n, jobs)) = claimed {
                self.queues[q].reserved = true;
                let node = self.nodes[n].name.to_string();
                return self.wait(id, WaitReason::AwaitingPreemption { node, jobs });
            }
        }
        if !self.queues[q].reserved {
            self.queues[q].reserved = true;
            let reason = self.reserve_for(cand);
            return self.wait(id, reason);
        }
        let queue = &mut self.queues[q];
        queue.line += 1;
        let position = queue.line;
        let reason = if queue.implicit_default {
            WaitReason::BehindEarlierJob {
                position,
                ahead: head,
            }
        } else {
            WaitReason::InQueue {
                queue: queue.name.to_string(),
                position,
                ahead: head,
            }
        };
        self.wait(id, reason)
    }

    fn wait(&mut self, job: JobId, reason: WaitReason) {
        self.plan.waiting.push(Waiting { job, reason });
    }

    fn place(&mut self, q: usize, m: usize, cand: &Candidate<'a>, fit: Fit) {
        let id = cand.job.id;
        let total = cand.total;
        self.placed_on.push((fit.node, id));
        for &(n, _) in &fit.executors {
            if n != fit.node {
                self.placed_on.push((n, id));
            }
        }
        let u = self.members[m].user;
        let g = self.users[u].group;
        let user = &mut self.users[u];
        user.used = user.used.add(&total);
        user.running += 1;
        user.jobs.push(id);
        let group = &mut self.groups[g];
        group.used = group.used.add(&total);
        group.running += 1;
        group.jobs.push(id);
        let queue = &mut self.queues[q];
        queue.used = queue.used.add(&total);
        queue.virt = queue.virt.add(&total);
        self.members[m].virt = self.members[m].virt.add(&total);
        let spread = !fit.executors.is_empty();
        self.plan.placements.push(Placement {
            job: id,
            node: self.nodes[fit.node].name.to_string(),
            resources: fit.on_node,
            executor: if spread {
                cand.gang.executor
            } else {
                Resources::ZERO
            },
            executors: fit
                .executors
                .iter()
                .map(|&(n, count)| NodeExecutors {
                    node: self.nodes[n].name.to_string(),
                    count,
                })
                .collect(),
        });
    }

    /// Stage 6, reserve: the first job of a queue that waits for resources closes the
    /// node(s) where it will fit soonest to everything else in this pass, so smaller jobs
    /// backfill other nodes but never delay it.
    fn reserve_for(&mut self, cand: &Candidate<'a>) -> WaitReason {
        let need = cand.total;
        let chosen: Vec<usize> = if cand.local() {
            // The node missing the least, preferring open ones.
            let best = (0..self.nodes.len())
                .filter(|&n| self.nodes[n].schedulable && need.fits_in(&self.nodes[n].capacity))
                .filter(|&n| self.snap.nodes[n].satisfies(cand.constraints))
                .min_by_key(|&n| {
                    let short = need.saturating_sub(&self.index.free(n));
                    (
                        !self.index.is_open(n),
                        short.dominant_share_fixed(&self.total),
                        n,
                    )
                });
            best.into_iter().collect()
        } else {
            self.spread_reservation(cand)
        };
        let mut free = Resources::ZERO;
        for &n in &chosen {
            free = free.add(&self.index.free(n));
            self.reserve(n);
        }
        let mut blocking = self.jobs_on(&chosen);
        blocking.truncate(2 * JOBS_SHOWN);
        WaitReason::Resources {
            needs: need,
            free,
            blocking_jobs: blocking,
        }
    }

    /// Open nodes with the most free first, until their capacity could hold the gang.
    fn spread_reservation(&self, cand: &Candidate<'a>) -> Vec<usize> {
        let mut open: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.index.is_open(n))
            .collect();
        open.sort_by_key(|&n| {
            (
                Reverse(self.index.free(n).dominant_share_fixed(&self.total)),
                n,
            )
        });
        let mut capacity = Resources::ZERO;
        let mut driver_fits = false;
        let mut chosen = Vec::new();
        for n in open {
            capacity = capacity.add(&self.nodes[n].capacity);
            driver_fits |= cand.gang.driver.fits_in(&self.nodes[n].capacity);
            chosen.push(n);
            if driver_fits && cand.total.fits_in(&capacity) {
                break;
            }
        }
        chosen
    }
}
