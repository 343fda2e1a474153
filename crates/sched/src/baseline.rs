//! The first scheduler Hearth had: one queue, oldest job first, and the first job that
//! does not fit stops the pass. Kept unchanged (but for the new `Placement` fields) as the
//! baseline the benchmark measures [`crate::schedule`] against on the same input.

use crate::plan::{Placement, Plan, WaitReason, Waiting};
use crate::resources::Resources;
use crate::snapshot::{JobId, Node, PendingJob, Snapshot};

/// Oldest first over all users; ignores queues, quotas, priorities and preemption.
pub fn fifo_baseline(snapshot: &Snapshot) -> Plan {
    let mut free: Vec<(usize, Resources)> = snapshot
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.schedulable)
        .map(|(i, n)| {
            let used = snapshot
                .running
                .iter()
                .filter(|a| a.node == n.name)
                .fold(Resources::default(), |acc, a| acc.add(&a.resources));
            (i, n.capacity.saturating_sub(&used))
        })
        .collect();

    let mut queued: Vec<&PendingJob> = snapshot.queued.iter().collect();
    queued.sort_by_key(|j| (j.submitted_ms, j.id));

    let mut plan = Plan::default();
    let mut head_blocked: Option<JobId> = None;
    let mut position = 0;
    for job in queued {
        if let Some(ahead) = head_blocked {
            position += 1;
            plan.waiting.push(Waiting {
                job: job.id,
                reason: WaitReason::BehindEarlierJob { position, ahead },
            });
            continue;
        }
        let chosen = free
            .iter_mut()
            .filter(|(_, f)| job.resources.fits_in(f))
            .min_by_key(|(i, f)| (f.cores, f.memory_mib, *i));
        if let Some((i, f)) = chosen {
            *f = f.saturating_sub(&job.resources);
            plan.placements.push(Placement {
                job: job.id,
                node: snapshot.nodes[*i].name.clone(),
                resources: job.resources,
                executor: Resources::ZERO,
                executors: Vec::new(),
            });
            continue;
        }
        let reason = why_not(snapshot, &free, job);
        plan.waiting.push(Waiting {
            job: job.id,
            reason,
        });
        head_blocked = Some(job.id);
        position = 1;
    }
    plan
}

fn why_not(snapshot: &Snapshot, free: &[(usize, Resources)], job: &PendingJob) -> WaitReason {
    let schedulable: Vec<&Node> = snapshot.nodes.iter().filter(|n| n.schedulable).collect();
    let Some(largest) = schedulable
        .iter()
        .map(|n| n.capacity)
        .max_by_key(|c| (c.cores, c.memory_mib))
    else {
        return WaitReason::NoNodes;
    };
    if !schedulable
        .iter()
        .any(|n| job.resources.fits_in(&n.capacity))
    {
        return WaitReason::NeverFits {
            needs: job.resources,
            largest,
        };
    }
    let (i, best) = free
        .iter()
        .filter(|(i, _)| job.resources.fits_in(&snapshot.nodes[*i].capacity))
        .max_by_key(|(_, f)| (f.cores, f.memory_mib))
        .copied()
        .unwrap_or((0, Resources::default()));
    let node = &snapshot.nodes[i].name;
    let blocking_jobs = snapshot
        .running
        .iter()
        .filter(|a| &a.node == node)
        .map(|a| a.job)
        .collect();
    WaitReason::Resources {
        needs: job.resources,
        free: best,
        blocking_jobs,
    }
}
