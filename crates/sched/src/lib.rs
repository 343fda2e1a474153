//! Hearth's scheduler: a pure function from a [`Snapshot`] of the cluster to a [`Plan`].
//! It does no I/O, reads no clock (time comes in the snapshot) and keeps no state between
//! passes: the server builds a snapshot, calls [`schedule`], applies the plan in one
//! transaction and stores every reason with its job. Same snapshot, same plan.
//!
//! # The pipeline
//!
//! Modelled on Nomad's scheduler: stages over an in-memory snapshot, each in its module.
//!
//! ```text
//!  Snapshot ─► 1 reconcile ─► 2 feasible? ──no──► waits: NeverFits, UnknownQueue, ExceedsLimit…
//!  (nodes,      prepare.rs     prepare.rs
//!   running,        │
//!   queued,         ▼
//!   config)    order (pass.rs): round 1 jobs not preemptible, round 2 preemptible;
//!              the queue furthest below its weighted DRF share (first, queues whose next
//!              job keeps them within their guarantee), then the user with the smallest
//!              dominant share in it, then that user's jobs by priority (aged), then age
//!                   │ one job at a time
//!                   ▼
//!              3 limits ──full──► waits: AtLimit ("your quota: 8 of 8 cores in use by …");
//!              limits.rs            later jobs under that limit wait behind it
//!                   │
//!                   ▼
//!              4 fit ──room──► Placement (whole gang: one node, or driver + executors)
//!              fit.rs
//!                   │ no room
//!                   ▼
//!              5 claim ──► resources of jobs already stopping, or Preemption of the least
//!              preempt.rs  entitled preemptible work ──► waits: AwaitingPreemption
//!                   │ no claim
//!                   ▼
//!              6 reserve: first of its queue? close its best node to others (backfill
//!              pass.rs    elsewhere cannot delay it) ──► waits: Resources
//!                   │ not first
//!                   ▼
//!              waits: position N in queue Q, behind job J            ─► Plan
//! ```
//!
//! # Code map
//!
//! | module | job |
//! |---|---|
//! | `snapshot`, `config`, `resources` | the input: nodes, running allocations, queued jobs and their options; queues, groups, users, quotas |
//! | `plan` | the output: placements, preemptions, and a [`WaitReason`] for every job left waiting |
//! | `state` | the working state of one pass (free resources, usage per user, group, queue) |
//! | `prepare` | stages 1 and 2: build the state; explain jobs that can never run as they are |
//! | `pass` | the order (two rounds of weighted, hierarchical DRF) and stages 3 to 6 per job |
//! | `limits`, `fit`, `preempt` | stages 3, 4 and 5 |
//! | `submit` | [`check_submission`]: refusals at submission time (queued-job quotas, priority cap, who may use a queue) |
//! | `admit` | [`admit`]: work asked for now (interactive engines): its limits and its node's room, as the pass accounts them |
//! | [`sim`] | the server's apply step, modelled, for tests, benchmarks and what-if questions |
//! | `baseline` | [`fifo_baseline`], the first scheduler, kept as the benchmark's yardstick |
//!
//! Dependencies point one way: `pass` uses the stages, the stages use `state`, `state` uses
//! the input and output types, and nothing here uses anything outside `std`.
//!
//! An empty [`Config`] means one implicit queue `default` and one group `default` with no
//! limits: users share by DRF, oldest first among equals, and a job that waits for room
//! holds a node so that nothing overtakes it there.
//!
//! Invariants the tests hold it to: no node is ever over-committed by a plan; no quota or
//! queue maximum is exceeded; a gang is placed whole or not at all; only preemptible jobs
//! are preempted, and only for a job with a rightful claim; every queued job is either
//! placed or has a reason.

#![warn(missing_docs)]

mod admit;
mod baseline;
mod config;
mod fit;
mod limits;
mod nodes;
mod pass;
mod plan;
mod preempt;
mod prepare;
mod priority;
mod resources;
pub mod sim;
mod snapshot;
mod state;
mod submit;

pub use admit::{admit, Request};
pub use baseline::fifo_baseline;
pub use config::{Config, Group, Queue, Quota, User, DEFAULT_GROUP, DEFAULT_QUEUE};
pub use plan::{
    LimitKind, NodeExecutors, Placement, Plan, PreemptReason, Preemption, Scope, WaitReason,
    Waiting,
};
pub use priority::{ParsePriorityError, Priority};
pub use resources::Resources;
pub use snapshot::{Allocation, Gang, JobId, JobOptions, Node, PendingJob, Snapshot};
pub use submit::{check_submission, Refusal, Submitter};

/// One scheduling pass: what to start, what to preempt, and why everything else waits.
pub fn schedule(snapshot: &Snapshot) -> Plan {
    state::Pass::prepare(snapshot).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cores: u32, mem: u64) -> Node {
        Node {
            name: name.into(),
            capacity: Resources::new(cores, mem),
            schedulable: true,
            labels: Vec::new(),
        }
    }

    fn job(id: JobId, cores: u32, mem: u64) -> PendingJob {
        PendingJob {
            id,
            user: "alice".into(),
            submitted_ms: id as i64,
            resources: Resources::new(cores, mem),
        }
    }

    #[test]
    fn places_what_fits_and_explains_the_rest() {
        let snap = Snapshot {
            nodes: vec![node("n1", 2, 4096)],
            queued: vec![job(1, 1, 1024), job(2, 2, 1024), job(3, 1, 512)],
            ..Default::default()
        };
        let plan = schedule(&snap);
        assert_eq!(plan.placements.len(), 1);
        assert_eq!(plan.placements[0].job, 1);
        assert_eq!(plan.waiting[0].job, 2);
        assert_eq!(
            plan.waiting[0].reason.to_string(),
            "waiting for resources: needs 2 cores, 1 GiB, 1 core, 3 GiB free (in use by job 1)"
        );
        assert_eq!(
            plan.waiting[1].reason,
            WaitReason::BehindEarlierJob {
                position: 1,
                ahead: 2
            }
        );
    }

    #[test]
    fn a_job_larger_than_any_node_says_so() {
        let snap = Snapshot {
            nodes: vec![node("n1", 2, 4096)],
            queued: vec![job(1, 8, 1024)],
            ..Default::default()
        };
        let plan = schedule(&snap);
        assert!(matches!(
            plan.waiting[0].reason,
            WaitReason::NeverFits { .. }
        ));
    }

    fn labelled(name: &str, cores: u32, mem: u64, labels: &[(&str, &str)]) -> Node {
        Node {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..node(name, cores, mem)
        }
    }

    fn constrained(snap: &mut Snapshot, job: JobId, labels: &[(&str, &str)]) {
        snap.job_options.insert(
            job,
            JobOptions {
                constraints: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..JobOptions::default()
            },
        );
    }

    #[test]
    fn a_constrained_job_goes_only_to_a_node_with_its_labels() {
        let mut snap = Snapshot {
            // The best fit by size is n1, but only n2 has the label.
            nodes: vec![
                node("n1", 2, 4096),
                labelled("n2", 8, 16384, &[("disk", "ssd"), ("gpu", "true")]),
            ],
            queued: vec![job(1, 1, 1024), job(2, 1, 1024)],
            ..Default::default()
        };
        constrained(&mut snap, 1, &[("disk", "ssd"), ("gpu", "true")]);
        let plan = schedule(&snap);
        let on = |id| {
            plan.placements
                .iter()
                .find(|p| p.job == id)
                .map(|p| p.node.as_str())
        };
        assert_eq!(on(1), Some("n2"));
        assert_eq!(on(2), Some("n1"));
    }

    #[test]
    fn a_constrained_job_waits_for_room_on_its_own_nodes() {
        let mut snap = Snapshot {
            nodes: vec![
                node("big", 8, 16384),
                labelled("ssd", 2, 4096, &[("disk", "ssd")]),
            ],
            running: vec![Allocation {
                job: 9,
                user: "bob".into(),
                node: "ssd".into(),
                resources: Resources::new(2, 1024),
            }],
            queued: vec![job(1, 1, 1024)],
            ..Default::default()
        };
        constrained(&mut snap, 1, &[("disk", "ssd")]);
        let plan = schedule(&snap);
        assert!(plan.placements.is_empty(), "{:?}", plan.placements);
        assert!(
            matches!(plan.waiting[0].reason, WaitReason::Resources { .. }),
            "{}",
            plan.waiting[0].reason
        );
    }

    #[test]
    fn a_job_no_node_can_satisfy_says_why() {
        let mut snap = Snapshot {
            nodes: vec![
                node("n1", 8, 16384),
                Node {
                    schedulable: false,
                    ..labelled("n2", 8, 16384, &[("gpu", "true")])
                },
                labelled("n3", 1, 1024, &[("disk", "ssd")]),
            ],
            queued: vec![job(1, 1, 1024), job(2, 4, 1024)],
            ..Default::default()
        };
        // Only a node that is not schedulable has the label.
        constrained(&mut snap, 1, &[("gpu", "true")]);
        // The node with the label is too small.
        constrained(&mut snap, 2, &[("disk", "ssd")]);
        let plan = schedule(&snap);
        assert!(plan.placements.is_empty(), "{:?}", plan.placements);
        let reason = |id| {
            plan.waiting
                .iter()
                .find(|w| w.job == id)
                .map(|w| w.reason.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            reason(1),
            "no ready node has the label gpu=true (`hearth nodes` lists nodes and their labels)"
        );
        assert!(reason(2).starts_with("needs 4 cores"), "{}", reason(2));
        assert!(
            reason(2).contains("the largest node offers 1 core"),
            "{}",
            reason(2)
        );
    }

    #[test]
    fn the_baseline_agrees_with_the_old_behaviour() {
        let snap = Snapshot {
            nodes: vec![node("n1", 2, 4096)],
            queued: vec![job(1, 1, 1024), job(2, 2, 1024), job(3, 1, 512)],
            ..Default::default()
        };
        let plan = fifo_baseline(&snap);
        assert_eq!(plan.placements.len(), 1);
        assert_eq!(plan.waiting.len(), 2);
    }

    #[test]
    fn job_lists_read_as_english() {
        assert_eq!(plan::fmt_jobs(&[12], 0), "job 12");
        assert_eq!(plan::fmt_jobs(&[12, 14], 0), "jobs 12 and 14");
        assert_eq!(plan::fmt_jobs(&[1, 2, 3], 0), "jobs 1, 2 and 3");
        assert_eq!(plan::fmt_jobs(&[1, 2], 5), "jobs 1, 2 and 5 more");
    }

    #[test]
    fn priorities_parse_from_the_cli_words() {
        assert_eq!("HIGH".parse::<Priority>(), Ok(Priority::High));
        assert!("urgent".parse::<Priority>().is_err());
        assert!(Priority::Low < Priority::Normal && Priority::Normal < Priority::High);
    }
}
