//! Small builders shared by the harness and the property tests, so that a scenario reads
//! as the cluster it describes.
#![allow(dead_code)]

use hearth_sched::*;

pub const GIB: u64 = 1024;

pub fn node(name: &str, cores: u32, gib: u64) -> Node {
    Node {
        name: name.into(),
        capacity: Resources::new(cores, gib * GIB),
        schedulable: true,
        labels: Vec::new(),
    }
}

/// A queued job submitted at `id` seconds, so lower ids are older.
pub fn queued(id: JobId, user: &str, cores: u32, gib: u64) -> PendingJob {
    PendingJob {
        id,
        user: user.into(),
        submitted_ms: id as i64 * 1000,
        resources: Resources::new(cores, gib * GIB),
    }
}

pub fn running(id: JobId, user: &str, node: &str, cores: u32, gib: u64) -> Allocation {
    Allocation {
        job: id,
        user: user.into(),
        node: node.into(),
        resources: Resources::new(cores, gib * GIB),
    }
}

pub fn preemptible() -> JobOptions {
    JobOptions {
        preemptible: true,
        ..JobOptions::default()
    }
}

pub fn priority(p: Priority) -> JobOptions {
    JobOptions {
        priority: p,
        ..JobOptions::default()
    }
}

pub fn in_queue(q: &str) -> JobOptions {
    JobOptions {
        queue: Some(q.into()),
        ..JobOptions::default()
    }
}

pub fn user_in(name: &str, group: &str) -> User {
    User {
        name: name.into(),
        group: Some(group.into()),
        ..User::default()
    }
}

pub fn cores_quota(cores: u32) -> Quota {
    Quota {
        max_cores: Some(cores),
        ..Quota::default()
    }
}

pub fn placed(plan: &Plan) -> Vec<JobId> {
    plan.placements.iter().map(|p| p.job).collect()
}

pub fn reason(plan: &Plan, job: JobId) -> String {
    match plan.reason(job) {
        Some(r) => r.to_string(),
        None => panic!("job {job} has no reason; plan: {plan:#?}"),
    }
}

/// How many of `user`'s jobs the plan places.
pub fn placed_for(snap: &Snapshot, plan: &Plan, user: &str) -> usize {
    plan.placements
        .iter()
        .filter(|p| snap.queued.iter().any(|j| j.id == p.job && j.user == user))
        .count()
}
