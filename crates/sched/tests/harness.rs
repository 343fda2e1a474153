//! Scenario tests: feed a cluster state, assert on the plan. Each test is one behaviour of
//! issue 3 in the words a user or admin would use.

mod common;

use common::*;
use hearth_sched::sim::Sim;
use hearth_sched::*;

// ---- fair share -------------------------------------------------------------------

#[test]
fn a_user_with_100_jobs_does_not_starve_a_user_with_one() {
    let mut queued_jobs: Vec<PendingJob> = (1..=100).map(|i| queued(i, "alice", 1, 1)).collect();
    queued_jobs.push(queued(500, "bob", 1, 1));
    // Alice fills 7 of 8 cores; one core comes free.
    let snap = Snapshot {
        nodes: vec![node("n1", 8, 32)],
        running: (201..=207)
            .map(|i| running(i, "alice", "n1", 1, 1))
            .collect(),
        queued: queued_jobs,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(
        placed(&plan),
        vec![500],
        "bob's one job takes the free core"
    );
    assert_eq!(plan.waiting.len(), 100);
}

#[test]
fn users_share_by_dominant_resource() {
    // The example of the DRF paper: 9 cores, 18 GiB; alice's tasks need <1 core, 4 GiB>,
    // bob's <3 cores, 1 GiB>. DRF gives alice 3 tasks and bob 2: both hold 2/3 of their
    // dominant resource.
    let mut jobs = Vec::new();
    for i in 0..10 {
        jobs.push(queued(1 + 2 * i, "alice", 1, 4));
        jobs.push(queued(2 + 2 * i, "bob", 3, 1));
    }
    let snap = Snapshot {
        nodes: vec![node("n1", 9, 18)],
        queued: jobs,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(placed_for(&snap, &plan, "alice"), 3);
    assert_eq!(placed_for(&snap, &plan, "bob"), 2);
}

#[test]
fn queues_share_the_cluster_by_weight() {
    let config = Config {
        queues: vec![
            Queue {
                weight: 2,
                ..Queue::new("research")
            },
            Queue::new("adhoc"),
        ],
        groups: vec![
            Group {
                name: "lab".into(),
                queue: Some("research".into()),
                ..Group::default()
            },
            Group {
                name: "ops".into(),
                queue: Some("adhoc".into()),
                ..Group::default()
            },
        ],
        users: vec![user_in("alice", "lab"), user_in("bob", "ops")],
        ..Config::default()
    };
    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(queued(1 + 2 * i, "alice", 1, 1));
        jobs.push(queued(2 + 2 * i, "bob", 1, 1));
    }
    let snap = Snapshot {
        nodes: vec![node("n1", 12, 64)],
        queued: jobs,
        config,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(placed_for(&snap, &plan, "alice"), 8);
    assert_eq!(placed_for(&snap, &plan, "bob"), 4);
}

#[test]
fn a_queue_below_its_guarantee_is_served_first() {
    let config = Config {
        queues: vec![
            Queue {
                guaranteed: Resources::new(6, 6 * GIB),
                ..Queue::new("prod")
            },
            Queue {
                weight: 10,
                ..Queue::new("dev")
            },
        ],
        ..Config::default()
    };
    let mut jobs = Vec::new();
    let mut options = std::collections::HashMap::new();
    for i in 0..10 {
        jobs.push(queued(1 + 2 * i, "dana", 1, 1));
        options.insert(1 + 2 * i, in_queue("dev"));
        jobs.push(queued(2 + 2 * i, "pat", 1, 1));
        options.insert(2 + 2 * i, in_queue("prod"));
    }
    let snap = Snapshot {
        nodes: vec![node("n1", 8, 64)],
        queued: jobs,
        config,
        job_options: options,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(
        placed_for(&snap, &plan, "pat"),
        6,
        "prod gets its guarantee"
    );
    assert_eq!(placed_for(&snap, &plan, "dana"), 2);
}

// ---- priorities and aging ----------------------------------------------------------

#[test]
fn a_users_own_jobs_go_by_priority_then_age() {
    let snap = Snapshot {
        nodes: vec![node("n1", 2, 8)],
        queued: vec![
            queued(1, "alice", 1, 1),
            queued(2, "alice", 1, 1),
            queued(3, "alice", 1, 1),
        ],
        job_options: [(1, priority(Priority::Low)), (3, priority(Priority::High))]
            .into_iter()
            .collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(placed(&plan), vec![3, 2]);
}

#[test]
fn priority_does_not_jump_other_users() {
    // Bob's high priority orders bob's own jobs; it does not take alice's fair share.
    let snap = Snapshot {
        nodes: vec![node("n1", 2, 8)],
        running: vec![running(10, "bob", "n1", 1, 1)],
        queued: vec![queued(1, "alice", 1, 1), queued(2, "bob", 1, 1)],
        job_options: [(2, priority(Priority::High))].into_iter().collect(),
        ..Snapshot::default()
    };
    assert_eq!(placed(&schedule(&snap)), vec![1]);
}

#[test]
fn an_admin_can_cap_a_users_highest_priority() {
    let config = Config {
        users: vec![User {
            name: "alice".into(),
            max_priority: Some(Priority::Normal),
            ..User::default()
        }],
        ..Config::default()
    };
    let snap = Snapshot {
        nodes: vec![node("n1", 1, 8)],
        queued: vec![queued(1, "alice", 1, 1), queued(2, "alice", 1, 1)],
        job_options: [(2, priority(Priority::High))].into_iter().collect(),
        config,
        ..Snapshot::default()
    };
    assert_eq!(
        placed(&schedule(&snap)),
        vec![1],
        "capped to normal: oldest first"
    );
    let refused = check_submission(&snap, "alice", &priority(Priority::High)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "priority high is above the highest you may use, normal: submit with --priority normal or lower"
    );
}

#[test]
fn an_old_low_priority_job_ages_past_new_high_priority_ones() {
    let mut snap = Snapshot {
        nodes: vec![node("n1", 1, 8)],
        queued: vec![queued(1, "alice", 1, 1), queued(2, "alice", 1, 1)],
        job_options: [(1, priority(Priority::Low)), (2, priority(Priority::High))]
            .into_iter()
            .collect(),
        ..Snapshot::default()
    };
    snap.now_ms = 10_000;
    assert_eq!(placed(&schedule(&snap)), vec![2]);
    // Two aging steps later the low job counts as high, and it is older.
    snap.now_ms = 1_000 + 2 * snap.config.aging_ms;
    assert_eq!(placed(&schedule(&snap)), vec![1]);
}

// ---- quotas ----------------------------------------------------------------------------

#[test]
fn quota_reason_names_the_jobs_using_it() {
    let snap = Snapshot {
        nodes: vec![node("n1", 32, 128)],
        running: vec![
            running(12, "alice", "n1", 4, 4),
            running(14, "alice", "n1", 4, 4),
        ],
        queued: vec![queued(20, "alice", 2, 2)],
        config: Config {
            users: vec![User {
                name: "alice".into(),
                quota: Some(cores_quota(8)),
                ..User::default()
            }],
            ..Config::default()
        },
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert!(plan.placements.is_empty());
    assert_eq!(
        reason(&plan, 20),
        "your quota: 8 of 8 cores in use by jobs 12 and 14; this job needs 2 cores"
    );
}

#[test]
fn later_jobs_wait_behind_the_first_job_stopped_by_a_quota() {
    // Alice has 6 of 8 cores; her 4-core job is first in line, so her 1-core job, though
    // it would fit, does not overtake it.
    let snap = Snapshot {
        nodes: vec![node("n1", 32, 128)],
        running: vec![running(12, "alice", "n1", 6, 4)],
        queued: vec![queued(20, "alice", 4, 2), queued(21, "alice", 1, 1)],
        config: Config {
            users: vec![User {
                name: "alice".into(),
                quota: Some(cores_quota(8)),
                ..User::default()
            }],
            ..Config::default()
        },
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert!(plan.placements.is_empty());
    assert_eq!(
        reason(&plan, 21),
        "your quota: 6 of 8 cores in use by job 12; job 20 is first in line for it"
    );
}

#[test]
fn a_group_quota_holds_all_members_together() {
    let config = Config {
        groups: vec![Group {
            name: "lab".into(),
            quota: Quota {
                max_memory_mib: Some(16 * GIB),
                ..Quota::default()
            },
            ..Group::default()
        }],
        users: vec![user_in("alice", "lab"), user_in("bob", "lab")],
        ..Config::default()
    };
    let snap = Snapshot {
        nodes: vec![node("n1", 32, 128)],
        running: vec![running(1, "alice", "n1", 1, 12)],
        queued: vec![queued(2, "bob", 1, 8), queued(3, "carol", 1, 8)],
        config,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(placed(&plan), vec![3], "carol is not in the group");
    assert_eq!(
        reason(&plan, 2),
        "group lab's quota: 12 GiB of 16 GiB in use by job 1; this job needs 8 GiB"
    );
}

#[test]
fn a_member_quota_applies_to_each_member() {
    let config = Config {
        groups: vec![Group {
            name: "students".into(),
            member_quota: Quota {
                max_running_jobs: Some(1),
                ..Quota::default()
            },
            ..Group::default()
        }],
        users: vec![user_in("sam", "students"), user_in("kim", "students")],
        ..Config::default()
    };
    let snap = Snapshot {
        nodes: vec![node("n1", 32, 128)],
        running: vec![running(1, "sam", "n1", 1, 1)],
        queued: vec![queued(2, "sam", 1, 1), queued(3, "kim", 1, 1)],
        config,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(placed(&plan), vec![3]);
    assert_eq!(reason(&plan, 2), "your quota: 1 of 1 running job (job 1)");
}

#[test]
fn queue_at_its_maximum_memory_says_so() {
    let config = Config {
        queues: vec![Queue {
            max: Some(Resources::new(100, 16 * GIB)),
            ..Queue::new("research")
        }],
        ..Config::default()
    };
    let snap = Snapshot {
        nodes: vec![node("n1", 32, 128)],
        running: vec![running(1, "alice", "n1", 1, 16)],
        queued: vec![queued(2, "bob", 1, 4)],
        job_options: [(1, in_queue("research")), (2, in_queue("research"))]
            .into_iter()
            .collect(),
        config,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(
        reason(&plan, 2),
        "queue research at its maximum memory: 16 GiB of 16 GiB in use; this job needs 4 GiB"
    );
}

#[test]
fn a_job_beyond_its_quota_alone_is_told_to_ask_for_less() {
    let snap = Snapshot {
        nodes: vec![node("n1", 32, 128)],
        queued: vec![queued(1, "alice", 16, 4)],
        config: Config {
            users: vec![User {
                name: "alice".into(),
                quota: Some(cores_quota(8)),
                ..User::default()
            }],
            ..Config::default()
        },
        ..Snapshot::default()
    };
    assert_eq!(
        reason(&schedule(&snap), 1),
        "needs 16 cores but your quota allows at most 8 cores: ask for less, or ask an admin to raise it"
    );
}

#[test]
fn a_submission_beyond_the_queued_jobs_quota_is_refused() {
    let snap = Snapshot {
        queued: vec![queued(1, "alice", 1, 1), queued(2, "alice", 1, 1)],
        config: Config {
            users: vec![User {
                name: "alice".into(),
                quota: Some(Quota {
                    max_queued_jobs: Some(2),
                    ..Quota::default()
                }),
                ..User::default()
            }],
            ..Config::default()
        },
        ..Snapshot::default()
    };
    let refused = check_submission(&snap, "alice", &JobOptions::default()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "you already have 2 jobs queued and your quota allows 2: wait for some to start, or cancel some"
    );
    assert!(check_submission(&snap, "bob", &JobOptions::default()).is_ok());
    assert!(matches!(
        check_submission(&snap, "bob", &in_queue("nope")),
        Err(Refusal::UnknownQueue { .. })
    ));
}

#[test]
fn queue_is_open_to_its_groups_and_no_one_else() {
    let snap = Snapshot {
        config: Config {
            queues: vec![
                Queue::new("lab"),
                Queue {
                    open_to: vec!["lab".into(), "ml".into()],
                    ..Queue::new("research")
                },
            ],
            groups: vec![
                Group {
                    name: "lab".into(),
                    queue: Some("lab".into()),
                    ..Group::default()
                },
                Group {
                    name: "ml".into(),
                    queue: Some("gpu".into()),
                    ..Group::default()
                },
            ],
            users: vec![user_in("alice", "lab"), user_in("carol", "ml")],
            ..Config::default()
        },
        ..Snapshot::default()
    };
    // Alice's group's own queue, a queue opened to it, and `default`.
    for q in ["lab", "research", "default"] {
        assert_eq!(
            check_submission(&snap, "alice", &in_queue(q)),
            Ok(()),
            "{q}"
        );
    }
    assert_eq!(
        check_submission(&snap, "alice", &JobOptions::default()),
        Ok(())
    );
    // Bob is in no group: only `default` is his.
    let refused = check_submission(&snap, "bob", &in_queue("lab")).unwrap_err();
    assert_eq!(
        refused,
        Refusal::NotAllowed {
            queue: "lab".into(),
            group: "default".into(),
            open_to: vec!["lab".into()],
            allowed: vec!["default".into()],
        }
    );
    assert_eq!(
        refused.to_string(),
        "you may not submit to queue lab: it is open to group lab (yours: default); you may use: default"
    );
    assert!(check_submission(&snap, "bob", &in_queue("default")).is_ok());
    // Carol's group has its own queue (named by the group only) and research is opened to it.
    let refused = check_submission(&snap, "carol", &in_queue("lab")).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "you may not submit to queue lab: it is open to group lab (yours: ml); you may use: gpu, research, default"
    );
    let refused = check_submission(&snap, "bob", &in_queue("research")).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("open to groups lab, ml (yours: default)"),
        "{refused}"
    );
    // A queue named only by a group is that group's alone.
    assert!(check_submission(&snap, "alice", &in_queue("gpu")).is_err());
    assert!(check_submission(&snap, "carol", &in_queue("gpu")).is_ok());
    // Admins may use any queue that exists, but not one that does not.
    let admin = Submitter {
        name: "root",
        admin: true,
    };
    assert!(check_submission(&snap, admin, &in_queue("lab")).is_ok());
    assert!(matches!(
        check_submission(&snap, admin, &in_queue("nope")),
        Err(Refusal::UnknownQueue { .. })
    ));
}

#[test]
fn without_queues_everyone_may_use_default() {
    let snap = Snapshot::default();
    for user in ["alice", "bob"] {
        assert!(check_submission(&snap, user, &in_queue("default")).is_ok());
        assert!(check_submission(&snap, user, &JobOptions::default()).is_ok());
    }
}

// ---- gangs ---------------------------------------------------------------------------

fn gang(driver: (u32, u64), executor: (u32, u64), executors: u32, spread: bool) -> JobOptions {
    JobOptions {
        gang: Some(Gang {
            driver: Resources::new(driver.0, driver.1 * GIB),
            executor: Resources::new(executor.0, executor.1 * GIB),
            executors,
            spread,
        }),
        ..JobOptions::default()
    }
}

#[test]
fn a_gang_is_admitted_whole_or_not_at_all() {
    // Driver 1 core + 4 executors of 2 cores = 9 cores; 8 are free.
    let snap = Snapshot {
        nodes: vec![node("n1", 16, 64)],
        running: vec![running(1, "bob", "n1", 8, 8)],
        queued: vec![queued(2, "alice", 9, 9)],
        job_options: [(2, gang((1, 1), (2, 2), 4, false))].into_iter().collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert!(
        plan.placements.is_empty(),
        "no driver without its executors"
    );
    assert_eq!(
        reason(&plan, 2),
        "waiting for resources: needs 9 cores, 9 GiB, 8 cores, 56 GiB free (in use by job 1)"
    );
}

#[test]
fn a_local_gang_never_spans_nodes() {
    let snap = Snapshot {
        nodes: vec![node("n1", 6, 64), node("n2", 6, 64)],
        queued: vec![queued(1, "alice", 9, 9)],
        job_options: [(1, gang((1, 1), (2, 2), 4, false))].into_iter().collect(),
        ..Snapshot::default()
    };
    assert!(matches!(
        schedule(&snap).reason(1),
        Some(WaitReason::NeverFits { .. })
    ));
}

#[test]
fn a_spread_gang_puts_driver_and_executors_over_nodes() {
    let snap = Snapshot {
        nodes: vec![node("n1", 6, 64), node("n2", 6, 64)],
        queued: vec![queued(1, "alice", 9, 9)],
        job_options: [(1, gang((1, 1), (2, 2), 4, true))].into_iter().collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    let p = plan.placement(1).expect("placed over two nodes");
    assert_eq!(p.total(), Resources::new(9, 9 * GIB));
    assert_eq!(p.executor, Resources::new(2, 2 * GIB));
    assert_eq!(p.executors.iter().map(|e| e.count).sum::<u32>(), 4);
    let holdings = p.holdings();
    assert_eq!(holdings.len(), 2);
    assert!(holdings.iter().all(|(_, r)| r.cores <= 6));
}

#[test]
fn a_spread_gang_is_packed_even_when_its_driver_would_block_the_last_executor() {
    // Driver first would take the small node and leave no room for the third executor;
    // executors first fit: two with the driver on n1, one on n2.
    let snap = Snapshot {
        nodes: vec![node("n1", 5, 4), node("n2", 2, 3)],
        queued: vec![queued(1, "alice", 7, 4)],
        job_options: [(1, gang((1, 1), (2, 1), 3, true))].into_iter().collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    let p = plan.placement(1).expect("the gang fits the two nodes");
    assert_eq!(p.node, "n1");
    assert_eq!(p.total(), Resources::new(7, 4 * GIB));
}

#[test]
fn a_spread_gang_the_nodes_cannot_hold_says_so() {
    // 3 executors of 3 cores on two 5-core nodes: 9 of 10 cores, but one executor per node.
    let snap = Snapshot {
        nodes: vec![node("n1", 5, 16), node("n2", 5, 16)],
        queued: vec![queued(1, "alice", 9, 3)],
        job_options: [(1, gang((0, 0), (3, 1), 3, true))].into_iter().collect(),
        ..Snapshot::default()
    };
    assert!(matches!(
        schedule(&snap).reason(1),
        Some(WaitReason::ClusterTooSmall { .. })
    ));
}

#[test]
fn a_spread_gang_that_fits_one_node_stays_local() {
    let snap = Snapshot {
        nodes: vec![node("n1", 16, 64), node("n2", 16, 64)],
        queued: vec![queued(1, "alice", 9, 9)],
        job_options: [(1, gang((1, 1), (2, 2), 4, true))].into_iter().collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    let p = plan.placement(1).unwrap();
    assert!(p.executors.is_empty());
    assert_eq!(p.resources, Resources::new(9, 9 * GIB));
}

// ---- backfill and reservations ---------------------------------------------------------

#[test]
fn small_jobs_backfill_other_nodes_but_never_the_reserved_one() {
    // n1 has 2 cores free, n2 has 3. The 6-core head reserves n2 (closest to fitting);
    // the small jobs behind it fill n1 only.
    let snap = Snapshot {
        nodes: vec![node("n1", 8, 64), node("n2", 8, 64)],
        running: vec![running(1, "bob", "n1", 6, 1), running(2, "bob", "n2", 5, 1)],
        queued: vec![
            queued(10, "alice", 6, 1),
            queued(11, "alice", 1, 1),
            queued(12, "alice", 1, 1),
            queued(13, "alice", 1, 1),
        ],
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(placed(&plan), vec![11, 12]);
    assert!(plan.placements.iter().all(|p| p.node == "n1"));
    assert_eq!(
        reason(&plan, 10),
        "waiting for resources: needs 6 cores, 1 GiB, 3 cores, 63 GiB free (in use by job 2)"
    );
    assert_eq!(reason(&plan, 13), "position 1 in the queue, behind job 10");
}

#[test]
fn waiting_jobs_are_told_their_position_in_a_named_queue() {
    let config = Config {
        queues: vec![Queue::new("research")],
        ..Config::default()
    };
    let snap = Snapshot {
        nodes: vec![node("n1", 4, 16)],
        running: vec![running(1, "bob", "n1", 4, 4)],
        queued: vec![
            queued(2, "alice", 1, 1),
            queued(3, "alice", 1, 1),
            queued(4, "alice", 1, 1),
        ],
        job_options: (1..=4).map(|j| (j, in_queue("research"))).collect(),
        config,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(
        reason(&plan, 4),
        "position 2 in queue research, behind job 2"
    );
}

#[test]
fn a_job_naming_an_unknown_queue_is_told_so() {
    let snap = Snapshot {
        nodes: vec![node("n1", 4, 16)],
        queued: vec![queued(1, "alice", 1, 1)],
        job_options: [(1, in_queue("nope"))].into_iter().collect(),
        ..Snapshot::default()
    };
    assert_eq!(
        reason(&schedule(&snap), 1),
        "queue nope does not exist: ask an admin to create it, or submit without --queue"
    );
}

#[test]
fn nothing_is_placed_on_a_draining_node() {
    let mut n2 = node("n2", 64, 256);
    n2.schedulable = false;
    let snap = Snapshot {
        nodes: vec![node("n1", 2, 8), n2],
        queued: vec![queued(1, "alice", 2, 2), queued(2, "alice", 2, 2)],
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(placed(&plan), vec![1]);
    assert_eq!(plan.placements[0].node, "n1");
    let none = Snapshot {
        nodes: vec![],
        queued: vec![queued(1, "alice", 2, 2)],
        ..Snapshot::default()
    };
    assert_eq!(
        reason(&schedule(&none), 1),
        "no node is available to run jobs"
    );
}

// ---- preemption --------------------------------------------------------------------------

#[test]
fn preemptible_job_gives_way_to_rightful_claim() {
    let mut snap = Snapshot {
        nodes: vec![node("n1", 8, 32)],
        running: vec![running(1, "bob", "n1", 8, 8)],
        queued: vec![queued(2, "alice", 4, 4)],
        job_options: [(1, preemptible())].into_iter().collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert!(
        plan.placements.is_empty(),
        "alice starts once bob's job stopped"
    );
    assert_eq!(plan.preemptions.len(), 1);
    let p = &plan.preemptions[0];
    assert_eq!((p.job, p.by, p.grace_ms), (1, 2, 30_000));
    assert_eq!(
        p.to_string(),
        "preempted for job 2 of alice: this job is preemptible and job 2 (queue default) is not; requeued"
    );
    assert_eq!(
        reason(&plan, 2),
        "starting on node n1 once preempted job 1 has stopped"
    );

    // While job 1 is in its grace period, the next pass waits for it instead of
    // preempting again.
    snap.preempting = vec![1];
    let plan = schedule(&snap);
    assert!(plan.preemptions.is_empty());
    assert_eq!(
        reason(&plan, 2),
        "starting on node n1 once preempted job 1 has stopped"
    );
}

#[test]
fn work_that_is_not_preemptible_is_never_preempted() {
    let snap = Snapshot {
        nodes: vec![node("n1", 8, 32)],
        running: vec![running(1, "bob", "n1", 8, 8)],
        queued: vec![queued(2, "alice", 4, 4)],
        job_options: [(2, priority(Priority::High))].into_iter().collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert!(plan.preemptions.is_empty());
    assert!(matches!(plan.reason(2), Some(WaitReason::Resources { .. })));
}

#[test]
fn preemptible_work_does_not_preempt_preemptible_work_without_a_guarantee() {
    let snap = Snapshot {
        nodes: vec![node("n1", 8, 32)],
        running: vec![running(1, "bob", "n1", 8, 8)],
        queued: vec![queued(2, "alice", 4, 4)],
        job_options: [(1, preemptible()), (2, preemptible())]
            .into_iter()
            .collect(),
        ..Snapshot::default()
    };
    assert!(schedule(&snap).preemptions.is_empty());
}

#[test]
fn preemption_takes_the_least_entitled_work_and_no_more_than_needed() {
    let snap = Snapshot {
        nodes: vec![node("n1", 8, 32)],
        running: vec![running(1, "bob", "n1", 4, 4), running(2, "bob", "n1", 4, 4)],
        queued: vec![queued(3, "alice", 4, 4)],
        job_options: [
            (1, preemptible()),
            (
                2,
                JobOptions {
                    priority: Priority::Low,
                    ..preemptible()
                },
            ),
        ]
        .into_iter()
        .collect(),
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    let victims: Vec<JobId> = plan.preemptions.iter().map(|p| p.job).collect();
    assert_eq!(victims, vec![2], "the low-priority job goes, and only it");
}

#[test]
fn a_queue_within_its_guarantee_reclaims_from_a_best_effort_queue() {
    let config = Config {
        queues: vec![
            Queue {
                guaranteed: Resources::new(4, 16 * GIB),
                ..Queue::new("prod")
            },
            Queue {
                best_effort: true,
                ..Queue::new("scavenger")
            },
        ],
        ..Config::default()
    };
    let snap = Snapshot {
        nodes: vec![node("n1", 8, 32)],
        running: vec![running(1, "bob", "n1", 4, 4), running(2, "bob", "n1", 4, 4)],
        // Alice's job is itself preemptible: its claim rests on prod's guarantee.
        queued: vec![queued(3, "alice", 4, 4)],
        job_options: [
            (1, in_queue("scavenger")),
            (2, in_queue("scavenger")),
            (
                3,
                JobOptions {
                    queue: Some("prod".into()),
                    ..preemptible()
                },
            ),
        ]
        .into_iter()
        .collect(),
        config,
        ..Snapshot::default()
    };
    let plan = schedule(&snap);
    assert_eq!(plan.preemptions.len(), 1);
    assert_eq!(
        plan.preemptions[0].to_string(),
        format!(
            "preempted for job 3 of alice: queue prod is below its guaranteed share and queue scavenger is above its own; requeued"
        )
    );
}

#[test]
fn a_guarantee_claim_is_not_undone_by_the_next_pass() {
    // Cat's job takes all the memory and puts queue q2 beyond its guarantee; ann's job in
    // q1 is within q1's guarantee and claims it. Once cat's job stops, the order must put
    // ann's job first (it keeps q1 within its guarantee; cat's would take q2 beyond), or
    // the two would preempt each other forever.
    let config = Config {
        queues: vec![
            Queue {
                guaranteed: Resources::new(4, GIB),
                best_effort: true,
                ..Queue::new("q1")
            },
            Queue {
                guaranteed: Resources::new(1, GIB),
                ..Queue::new("q2")
            },
        ],
        preemption_grace_ms: 0,
        ..Config::default()
    };
    let mut sim = Sim::new(vec![node("n1", 6, 15)], config);
    sim.submit(
        queued(1, "cat", 1, 15),
        JobOptions {
            queue: Some("q2".into()),
            ..preemptible()
        },
        60_000,
    );
    sim.submit(queued(2, "ann", 1, 1), in_queue("q1"), 1_000);
    for _ in 0..120 {
        sim.step(1_000);
    }
    let preemptions = sim
        .events
        .iter()
        .filter(|e| matches!(e, hearth_sched::sim::Event::Preempted { .. }))
        .count();
    assert!(
        preemptions <= 1,
        "{preemptions} preemptions: {:#?}",
        sim.events
    );
    assert!(sim.is_finished(1) && sim.is_finished(2));
}

#[test]
fn preempted_job_is_requeued_keeps_its_place_and_runs_again() {
    let mut sim = Sim::new(vec![node("n1", 8, 32)], Config::default());
    sim.snapshot.config.preemption_grace_ms = 5_000;
    sim.submit(queued(1, "bob", 8, 8), preemptible(), 60_000);
    sim.step(1_000);
    assert!(sim.snapshot.running.iter().any(|a| a.job == 1));

    sim.submit(queued(2, "alice", 4, 4), JobOptions::default(), 10_000);
    let plan = sim.step(1_000);
    assert_eq!(plan.preemptions.len(), 1);
    // SIGTERM now, SIGKILL after the grace period, then back in the queue.
    sim.step(5_000);
    assert_eq!(sim.requeues(1), 1);
    assert!(sim
        .snapshot
        .queued
        .iter()
        .any(|j| j.id == 1 && j.submitted_ms == 1000));
    assert!(sim.snapshot.running.iter().any(|a| a.job == 2));
    while !sim.is_idle() {
        sim.step(1_000);
    }
    assert!(sim.is_finished(1) && sim.is_finished(2));
}

// ---- determinism ---------------------------------------------------------------------------

#[test]
fn the_same_snapshot_gives_the_same_plan() {
    let snap = Snapshot {
        nodes: (0..5).map(|i| node(&format!("n{i}"), 8, 32)).collect(),
        queued: (0..200)
            .map(|i| {
                queued(
                    i,
                    ["a", "b", "c"][i as usize % 3],
                    1 + (i % 5) as u32,
                    1 + i % 7,
                )
            })
            .collect(),
        ..Snapshot::default()
    };
    assert_eq!(schedule(&snap), schedule(&snap));
}
