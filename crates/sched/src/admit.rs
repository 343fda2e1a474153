//! Work asked for now rather than queued: a user's interactive engine (a Spark Connect or
//! Sail server, a notebook). It starts at once on the node it must run on, or not at all,
//! and it is held to exactly what a job is held to: its user's, group's and queue's limits
//! as the pass accounts running work (engines included), and the room left on its node.
//! It never preempts anyone and never waits in a line.

use crate::plan::WaitReason;
use crate::resources::Resources;
use crate::snapshot::Snapshot;
use crate::state::Pass;

/// Work asked for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Whose it is: their quota, their group's and their queue's limits apply.
    pub user: &'a str,
    /// The node it must run on (by name). Its room counts whether or not it takes jobs:
    /// engines run on the server's own machine even when jobs do not.
    pub node: &'a str,
    /// What it holds while it runs.
    pub resources: Resources,
    /// Its queue; None: the user's default queue.
    pub queue: Option<&'a str>,
}

/// Whether `request` may start now, over the same snapshot a scheduling pass reads; if
/// not, why, as a job would be told: beyond a limit alone (`ExceedsLimit`), a limit
/// reached (`AtLimit`, naming the jobs and engines that hold it), not enough room on its
/// node (`Resources`, naming what holds the node), an unknown queue or node.
pub fn admit(snapshot: &Snapshot, request: &Request) -> Result<(), WaitReason> {
    if let Some(q) = request.queue {
        if !snapshot.config.queue_exists(q) {
            return Err(WaitReason::UnknownQueue {
                queue: q.to_string(),
            });
        }
    }
    let (pass, queue, user) = Pass::prepare_running(snapshot, request.user, request.queue);
    let need = request.resources;
    if let Some(r) = pass.exceeds_alone(queue, user, &need) {
        return Err(r);
    }
    if let Some((_, r)) = pass.check_limits(queue, user, &need) {
        return Err(r);
    }
    let node = pass
        .nodes
        .iter()
        .position(|n| n.name == request.node)
        .ok_or(WaitReason::NoNodes)?;
    let free = pass.index.free(node);
    if !need.fits_in(&free) {
        let mut holders = pass.jobs_on(&[node]);
        holders.truncate(20);
        return Err(WaitReason::Resources {
            needs: need,
            free,
            blocking_jobs: holders,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Quota, User};
    use crate::plan::{LimitKind, Scope};
    use crate::snapshot::{Allocation, Node};

    fn snapshot(local_open: bool) -> Snapshot {
        Snapshot {
            nodes: vec![
                Node {
                    name: "local".into(),
                    capacity: Resources::new(4, 8192),
                    schedulable: local_open,
                    labels: Vec::new(),
                },
                Node {
                    name: "wa".into(),
                    capacity: Resources::new(8, 16384),
                    schedulable: true,
                    labels: Vec::new(),
                },
            ],
            running: vec![
                Allocation {
                    job: 1,
                    user: "bob".into(),
                    node: "local".into(),
                    resources: Resources::new(2, 4096),
                },
                Allocation {
                    job: 2,
                    user: "alice".into(),
                    node: "wa".into(),
                    resources: Resources::new(3, 1024),
                },
            ],
            ..Snapshot::default()
        }
    }

    fn ask(user: &str, cores: u32, mib: u64) -> Request<'_> {
        Request {
            user,
            node: "local",
            resources: Resources::new(cores, mib),
            queue: None,
        }
    }

    #[test]
    fn an_engine_starts_in_the_room_left_on_its_node_even_one_closed_to_jobs() {
        for open in [true, false] {
            let s = snapshot(open);
            assert_eq!(admit(&s, &ask("alice", 2, 4096)), Ok(()));
            // Bob's job holds half of the node: room for 2 cores, not 3.
            match admit(&s, &ask("alice", 3, 1024)) {
                Err(WaitReason::Resources {
                    needs,
                    free,
                    blocking_jobs,
                }) => {
                    assert_eq!(needs, Resources::new(3, 1024));
                    assert_eq!(free, Resources::new(2, 4096));
                    assert_eq!(blocking_jobs, vec![1]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_engine_counts_against_its_users_quota_wherever_their_work_runs() {
        let mut s = snapshot(true);
        s.config = Config {
            users: vec![User {
                name: "alice".into(),
                quota: Some(Quota {
                    max_cores: Some(4),
                    ..Quota::default()
                }),
                group: None,
                max_priority: None,
            }],
            ..Config::default()
        };
        // Alice's job on another node holds 3 of her 4 cores.
        assert_eq!(admit(&s, &ask("alice", 1, 512)), Ok(()));
        match admit(&s, &ask("alice", 2, 512)) {
            Err(WaitReason::AtLimit {
                scope: Scope::User,
                kind: LimitKind::Cores,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        match admit(&s, &ask("alice", 5, 512)) {
            Err(WaitReason::ExceedsLimit {
                scope: Scope::User,
                kind: LimitKind::Cores,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // Bob has no quota.
        assert_eq!(admit(&s, &ask("bob", 2, 512)), Ok(()));
    }

    #[test]
    fn unknown_nodes_and_queues_are_refused() {
        let s = snapshot(true);
        let mut r = ask("alice", 1, 512);
        r.node = "nowhere";
        assert_eq!(admit(&s, &r), Err(WaitReason::NoNodes));
        let mut r = ask("alice", 1, 512);
        r.queue = Some("nope");
        assert!(matches!(
            admit(&s, &r),
            Err(WaitReason::UnknownQueue { .. })
        ));
    }
}
