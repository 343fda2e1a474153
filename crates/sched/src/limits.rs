//! Stage 3, limits: a job runs only if its user's quota, its group's quota and its queue's
//! maximum all have room for it, counting what runs now and what this pass has placed.
//! The first job stopped at a limit is first in line for it: later jobs under the same
//! limit wait behind it, so a stream of small jobs cannot starve a large one.

use crate::config::Quota;
use crate::plan::{LimitKind, Scope, WaitReason};
use crate::resources::Resources;
use crate::snapshot::JobId;
use crate::state::Pass;

/// How many job ids a reason names before it says "and N more".
pub(crate) const JOBS_SHOWN: usize = 10;

/// Whose limit stopped a job.
#[derive(Clone, Copy)]
pub(crate) enum Holder {
    User,
    Group,
    Queue,
}

impl Pass<'_> {
    /// The reason a job would wait behind an earlier job stopped at one of its limits.
    pub fn blocked_behind(
        &self,
        queue: usize,
        user: usize,
        need: &Resources,
    ) -> Option<WaitReason> {
        let g = self.users[user].group;
        [
            &self.users[user].blocked,
            &self.groups[g].blocked,
            &self.queues[queue].blocked,
        ]
        .into_iter()
        .flatten()
        .next()
        .map(|(first, reason)| {
            let mut reason = reason.clone();
            if let WaitReason::AtLimit {
                kind,
                needs,
                first_in_line,
                ..
            } = &mut reason
            {
                *first_in_line = Some(*first);
                *needs = match kind {
                    LimitKind::Cores => u64::from(need.cores),
                    LimitKind::Memory => need.memory_mib,
                    LimitKind::RunningJobs => 1,
                };
            }
            reason
        })
    }

    /// The first limit that has no room for `need`, if any.
    pub fn check_limits(
        &self,
        queue: usize,
        user: usize,
        need: &Resources,
    ) -> Option<(Holder, WaitReason)> {
        let u = &self.users[user];
        if let Some(r) = at_limit(Scope::User, &u.quota, u.used, u.running, &u.jobs, need) {
            return Some((Holder::User, r));
        }
        let g = &self.groups[u.group];
        let scope = Scope::Group(g.name.to_string());
        if let Some(r) = at_limit(scope, &g.quota, g.used, g.running, &g.jobs, need) {
            return Some((Holder::Group, r));
        }
        let q = &self.queues[queue];
        if let Some(max) = q.max {
            let quota = Quota {
                max_cores: Some(max.cores),
                max_memory_mib: Some(max.memory_mib),
                ..Quota::default()
            };
            let scope = Scope::Queue(q.name.to_string());
            if let Some(r) = at_limit(scope, &quota, q.used, 0, &[], need) {
                return Some((Holder::Queue, r));
            }
        }
        None
    }

    /// Remember that `job` is first in line at `holder`'s limit.
    pub fn block(&mut self, holder: Holder, queue: usize, user: usize, job: JobId, r: WaitReason) {
        let slot = match holder {
            Holder::User => &mut self.users[user].blocked,
            Holder::Group => &mut self.groups[self.users[user].group].blocked,
            Holder::Queue => &mut self.queues[queue].blocked,
        };
        *slot = Some((job, r));
    }
}

fn at_limit(
    scope: Scope,
    quota: &Quota,
    used: Resources,
    running: u32,
    jobs: &[JobId],
    need: &Resources,
) -> Option<WaitReason> {
    let checks = [
        (
            LimitKind::RunningJobs,
            u64::from(running),
            1,
            quota.max_running_jobs.map(u64::from),
        ),
        (
            LimitKind::Cores,
            u64::from(used.cores),
            u64::from(need.cores),
            quota.max_cores.map(u64::from),
        ),
        (
            LimitKind::Memory,
            used.memory_mib,
            need.memory_mib,
            quota.max_memory_mib,
        ),
    ];
    for (kind, used, needs, max) in checks {
        let Some(max) = max else { continue };
        if used.saturating_add(needs) > max {
            let mut shown = jobs.to_vec();
            shown.sort_unstable();
            shown.dedup();
            let more_jobs = shown.len().saturating_sub(JOBS_SHOWN);
            shown.truncate(JOBS_SHOWN);
            return Some(WaitReason::AtLimit {
                scope,
                kind,
                used,
                max,
                needs,
                jobs: shown,
                more_jobs,
                first_in_line: None,
            });
        }
    }
    None
}
