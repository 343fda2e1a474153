//! Stage 5, claim: a job that found no room may have a rightful claim on preemptible work.
//! Work that is not preemptible has a claim on any preemptible job; a preemptible job whose
//! queue is still within its guarantee has a claim on preemptible jobs of queues beyond
//! theirs. Resources of jobs already stopping go to the first job in line before anything
//! more is preempted, and no job ever loses its place to one with a weaker claim, so
//! preemptions do not cascade.

use crate::nodes::remember_failure;
use crate::plan::{PreemptReason, Preemption};
use crate::resources::Resources;
use crate::snapshot::JobId;
use crate::state::{Candidate, Pass, Victim, VictimIndex};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The waiting job is not preemptible.
    Firm,
    /// The waiting job's queue is within its guarantee even with the job.
    Guarantee,
}

/// True when `usage` stays within every part of `g` that is set (zero parts are not
/// guaranteed); a zero guarantee holds nothing.
pub(crate) fn within_guarantee(usage: &Resources, g: &Resources) -> bool {
    !g.is_zero()
        && (g.cores == 0 || usage.cores <= g.cores)
        && (g.memory_mib == 0 || usage.memory_mib <= g.memory_mib)
}

impl Pass<'_> {
    pub fn claim(&self, queue: usize, cand: &Candidate) -> Option<Claim> {
        if !cand.preemptible {
            return Some(Claim::Firm);
        }
        let q = &self.queues[queue];
        within_guarantee(&q.used.add(&cand.total), &q.guaranteed).then_some(Claim::Guarantee)
    }

    /// Promise the resources of jobs already stopping on one open node to `need`, if with
    /// them it fits there. Returns the node and the jobs it waits for.
    pub fn claim_stopping(&mut self, need: Resources) -> Option<(usize, Vec<JobId>)> {
        if self.freeing_nodes.is_empty() || self.stopping_failures.iter().any(|f| f.fits_in(&need))
        {
            return None;
        }
        let (nodes, index) = (&self.nodes, &self.index);
        self.freeing_nodes
            .retain(|&n| index.is_open(n) && !nodes[n].freeing.is_zero());
        let best = self
            .freeing_nodes
            .iter()
            .copied()
            .filter(|&n| need.fits_in(&self.index.free(n).add(&self.nodes[n].freeing)))
            .min_by_key(|&n| {
                let f = self.index.free(n).add(&self.nodes[n].freeing);
                (f.cores, f.memory_mib, n)
            });
        let Some(best) = best else {
            remember_failure(&mut self.stopping_failures, need);
            return None;
        };
        self.nodes[best].freeing = Resources::ZERO;
        self.reserve(best);
        Some((best, self.nodes[best].stopping.clone()))
    }

    /// Choose preemptible jobs to stop so that `cand` fits one open node. Going through
    /// preemptible work from the least entitled up, the first node where the job would fit
    /// is the one whose most entitled victim is the least entitled; there, victims not
    /// needed after all are dropped, most entitled first.
    pub fn preempt_for(
        &mut self,
        queue: usize,
        cand: &Candidate,
        claim: Claim,
    ) -> Option<(usize, Vec<JobId>)> {
        let need = cand.total;
        if claim == Claim::Firm && self.claim_failures.iter().any(|f| f.fits_in(&need)) {
            return None;
        }
        let mut vi = match self.victims.take() {
            Some(vi) => vi,
            None => self.build_victims(),
        };
        vi.generation += 1;
        while vi.start < vi.by_rank.len() && self.running[vi.by_rank[vi.start].1.running].stopping {
            vi.start += 1;
        }
        let mut found = None;
        for &(n, v) in &vi.by_rank[vi.start..] {
            if !self.index.is_open(n) || !self.eligible(claim, queue, &v) {
                continue;
            }
            if vi.stamp[n] != vi.generation {
                vi.stamp[n] = vi.generation;
                vi.acc[n] = self.index.free(n).add(&self.nodes[n].freeing);
            }
            vi.acc[n] = vi.acc[n].add(&v.on_node);
            if need.fits_in(&vi.acc[n]) {
                found = Some((n, v.rank));
                break;
            }
        }
        let Some((n, worst)) = found else {
            self.victims = Some(vi);
            if claim == Claim::Firm {
                remember_failure(&mut self.claim_failures, need);
            }
            return None;
        };
        let mut avail = self.index.free(n).add(&self.nodes[n].freeing);
        let mut chosen: Vec<Victim> = vi.by_node[n]
            .iter()
            .take_while(|v| v.rank <= worst)
            .filter(|v| self.eligible(claim, queue, v))
            .copied()
            .collect();
        for v in &chosen {
            avail = avail.add(&v.on_node);
        }
        for k in (0..chosen.len()).rev() {
            let without = avail.saturating_sub(&chosen[k].on_node);
            if need.fits_in(&without) {
                avail = without;
                chosen.remove(k);
            }
        }
        self.victims = Some(vi);
        let mut waits_for: Vec<JobId> = self.nodes[n].stopping.clone();
        for v in chosen {
            if !self.running[v.running].stopping {
                waits_for.push(self.running[v.running].id);
                self.stop(v.running, n, queue, cand, claim);
            }
        }
        self.nodes[n].freeing = Resources::ZERO;
        self.reserve(n);
        Some((n, waits_for))
    }

    fn eligible(&self, claim: Claim, queue: usize, v: &Victim) -> bool {
        let job = &self.running[v.running];
        if job.stopping {
            return false;
        }
        match claim {
            Claim::Firm => true,
            Claim::Guarantee => {
                let q = &self.queues[job.queue];
                job.queue != queue
                    && !within_guarantee(&q.used.saturating_sub(&q.preempted), &q.guaranteed)
            }
        }
    }

    /// Record the preemption of running job `r` for `cand`, whose claim is on node `n`.
    /// The job's resources on other nodes come free for whoever is first in line there.
    fn stop(&mut self, r: usize, n: usize, queue: usize, cand: &Candidate, claim: Claim) {
        self.running[r].stopping = true;
        let job = &self.running[r];
        let (id, vq, total, user) = (job.id, job.queue, job.total, job.user);
        self.queues[vq].preempted = self.queues[vq].preempted.add(&total);
        let elsewhere: Vec<(usize, Resources)> = self
            .allocs_of(r)
            .filter_map(|a| a.node.map(|m| (m, a.resources)))
            .filter(|&(m, _)| m != n && self.nodes[m].schedulable)
            .collect();
        for (m, res) in elsewhere {
            let other = &mut self.nodes[m];
            other.freeing = other.freeing.add(&res);
            other.stopping.push(id);
            if !self.freeing_nodes.contains(&m) {
                self.freeing_nodes.push(m);
            }
            self.stopping_failures.clear();
        }
        let by_queue = self.queues[queue].name.to_string();
        let reason = match claim {
            Claim::Firm => PreemptReason::FirmWork { by_queue },
            Claim::Guarantee => PreemptReason::Guarantee {
                by_queue,
                victim_queue: self.queues[vq].name.to_string(),
            },
        };
        self.plan.preemptions.push(Preemption {
            job: id,
            user: self.users[user].name.to_string(),
            by: cand.job.id,
            by_user: cand.job.user.clone(),
            reason,
            grace_ms: self.snap.config.preemption_grace_ms,
        });
    }

    /// Preemptible running jobs, least entitled first: lowest priority, then from queues
    /// beyond their guarantee, then from the queue and user furthest above their share,
    /// then the newest.
    fn build_victims(&self) -> VictimIndex {
        let total = self.total;
        let mut order: Vec<usize> = (0..self.running.len())
            .filter(|&r| self.running[r].preemptible && !self.running[r].stopping)
            .collect();
        order.sort_by_key(|&r| {
            let job = &self.running[r];
            let q = &self.queues[job.queue];
            (
                job.level,
                within_guarantee(&q.used, &q.guaranteed),
                std::cmp::Reverse(q.used.dominant_share_fixed(&total) / q.weight),
                std::cmp::Reverse(self.users[job.user].used.dominant_share_fixed(&total)),
                std::cmp::Reverse(job.id),
            )
        });
        let nodes = self.nodes.len();
        let mut vi = VictimIndex {
            by_rank: Vec::with_capacity(order.len()),
            by_node: vec![Vec::new(); nodes],
            start: 0,
            acc: vec![Resources::ZERO; nodes],
            stamp: vec![0; nodes],
            generation: 0,
        };
        for (rank, &r) in order.iter().enumerate() {
            for a in self.allocs_of(r) {
                if let Some(n) = a.node.filter(|&n| self.nodes[n].schedulable) {
                    let v = Victim {
                        running: r,
                        on_node: a.resources,
                        rank,
                    };
                    vi.by_rank.push((n, v));
                    vi.by_node[n].push(v);
                }
            }
        }
        vi
    }
}
