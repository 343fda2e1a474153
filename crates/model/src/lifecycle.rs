//! A job's life as pure transitions: the job's lifecycle fields and one event in, the new
//! fields and what the caller must do afterwards out. Only [`apply`] decides a job's next
//! state; the server's store reads the job, calls it and writes the result in one
//! transaction. No I/O and no clock here: callers pass `now_ms`.
//!
//! ```text
//!  queued ──Admitted──▶ starting ──Running──▶ running
//!    │                    │                      │
//!    │ Cancel             ├─ Unplaced, Launching at shutdown ─────────▶ queued
//!    ▼                    └──────────┬───────────┘
//!  cancelled                         ├─ Exited of a preempted run ─────▶ queued (+ attempt)
//!                                    ├─ Lost, retries left ────────────▶ queued (+ attempt)
//!                                    └─ Exited, CouldNotStart, Lost, Launching after a
//!                                       Cancel ──▶ succeeded, failed or cancelled
//! ```

use crate::api::Attempt;
use crate::JobState;
use serde::{Deserialize, Serialize};

/// The name of the server's own node (`hearth up`'s machine).
pub const LOCAL_NODE: &str = "local";

/// `count` executors of a spread job on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workers {
    pub node: String,
    pub count: u32,
}

/// Everything about a job that its life changes, and the one fixed fact a decision names
/// (`memory_limit_mib`, in an OOM failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLife {
    pub state: JobState,
    pub cancel_requested: bool,
    /// Set while a preemption stops the job: why, for its attempt history.
    pub preempt_reason: Option<String>,
    /// Earlier runs that did not end the job (preempted, lost); only ever grows.
    pub attempts: Vec<Attempt>,
    /// The driver's node while the job holds one.
    pub node: Option<String>,
    /// A spread job's executors by node, while it holds them.
    pub workers: Vec<Workers>,
    pub started_at: Option<i64>,
    pub running_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub oom_killed: bool,
    /// The OS memory limit of the job's processes (`JobResources::memory_limit_mib`).
    pub memory_limit_mib: u64,
}

impl JobLife {
    /// A job just submitted.
    pub fn queued(memory_limit_mib: u64) -> JobLife {
        JobLife {
            state: JobState::Queued,
            cancel_requested: false,
            preempt_reason: None,
            attempts: Vec::new(),
            node: None,
            workers: Vec::new(),
            started_at: None,
            running_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            oom_killed: false,
            memory_limit_mib,
        }
    }

    /// Whether its driver runs on the server's own node.
    fn on_local_node(&self) -> bool {
        self.node.as_deref().is_none_or(|n| n == LOCAL_NODE)
    }
}

/// What happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The scheduler placed a queued job: its driver on `node`, a spread job's executors
    /// on `workers`.
    Admitted { node: String, workers: Vec<Workers> },
    /// Its task is about to be sent to its node: go on ([`Effect::Launch`]) unless a
    /// cancel or Hearth's shutdown came meanwhile.
    Launching,
    /// Its placement fell through before it started (a node went away, a worker could not
    /// start): back in the queue, no attempt spent.
    Unplaced { why: String },
    /// Its node says its process runs.
    Running,
    /// Its task could not be started, or the server could not prepare it.
    CouldNotStart { why: String },
    /// Its process ended.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        oom_killed: bool,
    },
    /// Its run is given up on (node down or removed, processes gone after a restart).
    Lost { why: String },
    /// The scheduler preempts it, giving it `grace_ms` to stop.
    Preempt { why: String, grace_ms: u64 },
    /// Its owner or an admin cancels it.
    Cancel,
}

/// The server's settings that decisions depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How many lost runs a job may have before it fails (`--max-retries`).
    pub max_retries: u32,
    /// Hearth is shutting down: the server's own jobs are being stopped.
    pub shutting_down: bool,
    /// How long a cancelled job gets to stop (`--stop-grace`).
    pub stop_grace_ms: u64,
}

/// What the caller must do once the transition is stored, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Append this line to the job's log.
    LogLine(String),
    /// The attempt is over: forget its Spark UI.
    ForgetUi,
    /// Stop the job's task, giving it `grace_ms`.
    Stop { grace_ms: u64 },
    /// Send the job's task to its node.
    Launch,
    /// Resources were freed or the queue changed: run the scheduler.
    WakeScheduler,
}

/// The job after an event, and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub life: JobLife,
    pub effects: Vec<Effect>,
}

/// The event changes nothing (e.g. a second end: an end is recorded once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoChange;

/// The one place that decides a job's next state.
pub fn apply(
    life: &JobLife,
    event: &Event,
    policy: &Policy,
    now_ms: i64,
) -> Result<Transition, NoChange> {
    use JobState::*;
    let active = matches!(life.state, Starting | Running);
    let mut next = life.clone();
    let mut effects = Vec::new();
    match event {
        Event::Admitted { node, workers } => {
            if life.state != Queued {
                return Err(NoChange);
            }
            next.state = Starting;
            next.started_at = Some(now_ms);
            next.node = Some(node.clone());
            next.workers = workers.clone();
            next.reason = None;
        }
        Event::Launching => {
            if !active {
                return Err(NoChange);
            }
            if life.cancel_requested {
                end(
                    &mut next,
                    Cancelled,
                    None,
                    "cancelled before it started",
                    now_ms,
                );
            } else if policy.shutting_down {
                requeue(
                    &mut next,
                    "requeued: Hearth was shutting down as the job was starting".into(),
                );
            } else {
                effects.push(Effect::Launch);
            }
        }
        Event::Unplaced { why } => {
            if life.state != Starting {
                return Err(NoChange);
            }
            if life.cancel_requested {
                end(
                    &mut next,
                    Cancelled,
                    None,
                    "cancelled before it started",
                    now_ms,
                );
            } else {
                requeue(&mut next, format!("requeued: {why}"));
            }
        }
        Event::Running => {
            if life.state != Starting {
                return Err(NoChange);
            }
            next.state = Running;
            next.running_at = Some(now_ms);
        }
        Event::CouldNotStart { why } => {
            if life.state.is_terminal() {
                return Err(NoChange);
            }
            end(&mut next, Failed, None, why.as_str(), now_ms);
            effects.push(Effect::ForgetUi);
        }
        Event::Exited {
            code,
            signal,
            oom_killed,
        } => {
            if !active {
                return Err(NoChange);
            }
            exited(&mut next, *code, *signal, *oom_killed, policy, now_ms);
            effects.push(Effect::ForgetUi);
        }
        Event::Lost { why } => {
            if !active {
                return Err(NoChange);
            }
            lost(&mut next, why, policy, now_ms);
            effects.push(Effect::ForgetUi);
            effects.push(Effect::LogLine(format!("=== hearth: {why} ===")));
        }
        Event::Preempt { why, grace_ms } => {
            if !active || life.preempt_reason.is_some() {
                return Err(NoChange);
            }
            next.preempt_reason = Some(why.clone());
            effects.push(Effect::Stop {
                grace_ms: *grace_ms,
            });
        }
        Event::Cancel => match life.state {
            Queued => end(
                &mut next,
                Cancelled,
                None,
                "cancelled before it started",
                now_ms,
            ),
            // Asked again, the stop is sent again (its node may have been away).
            Starting | Running => {
                next.cancel_requested = true;
                effects.push(Effect::Stop {
                    grace_ms: policy.stop_grace_ms,
                });
            }
            _ => return Err(NoChange),
        },
    }
    // A job that left the resources it held, or the queue, lets others run.
    if next.state != life.state && !next.state.holds_resources() {
        effects.push(Effect::WakeScheduler);
    }
    Ok(Transition {
        life: next,
        effects,
    })
}

/// Recorded once, with why.
fn end<'a>(
    life: &mut JobLife,
    state: JobState,
    exit_code: Option<i32>,
    why: impl Into<Option<&'a str>>,
    now_ms: i64,
) {
    life.state = state;
    life.exit_code = exit_code;
    life.reason = why.into().map(str::to_string);
    life.oom_killed = false;
    life.finished_at = Some(now_ms);
}

/// Back in the queue with its original submission time: it holds nothing any more.
fn requeue(life: &mut JobLife, reason: String) {
    life.state = JobState::Queued;
    life.started_at = None;
    life.running_at = None;
    life.node = None;
    life.workers = Vec::new();
    life.preempt_reason = None;
    life.reason = Some(reason);
}

/// The run so far goes into the job's history.
fn push_attempt(life: &mut JobLife, outcome: &str, reason: &str, now_ms: i64) {
    life.attempts.push(Attempt {
        started_at_ms: life.started_at,
        running_at_ms: life.running_at,
        ended_at_ms: now_ms,
        outcome: outcome.into(),
        reason: reason.into(),
    });
}

fn exited(
    life: &mut JobLife,
    code: Option<i32>,
    signal: Option<i32>,
    oom_killed: bool,
    policy: &Policy,
    now_ms: i64,
) {
    use JobState::*;
    // Preempted, not failed: back in the queue with the run in its history.
    if let (Some(why), false, false) = (
        life.preempt_reason.clone(),
        life.cancel_requested,
        policy.shutting_down,
    ) {
        push_attempt(life, "preempted", &why, now_ms);
        requeue(life, why);
        return;
    }
    if life.cancel_requested {
        end(
            life,
            Cancelled,
            code,
            "cancelled by its owner or an admin",
            now_ms,
        );
    } else if policy.shutting_down && code != Some(0) && life.on_local_node() {
        // Only local jobs are stopped at shutdown; one on a joined node ended by itself.
        end(
            life,
            Cancelled,
            code,
            "stopped because Hearth shut down",
            now_ms,
        );
    } else if oom_killed {
        let why = format!(
            "killed by the OOM killer: the job used more than its memory limit of {} MiB \
             (heap plus Spark's overhead); ask for more with --driver-memory or --executor-memory",
            life.memory_limit_mib
        );
        end(life, Failed, code, why.as_str(), now_ms);
        life.oom_killed = true;
    } else if code == Some(0) {
        end(life, Succeeded, Some(0), None, now_ms);
    } else {
        let why = match (code, signal) {
            (Some(c), _) => format!("the job's process exited with code {c}; its log says why"),
            (None, Some(s)) => format!("the job's process was killed by signal {s}"),
            (None, None) => "the job's process ended without an exit status".into(),
        };
        end(life, Failed, code, why.as_str(), now_ms);
    }
}

/// Requeued while it has lost fewer runs than `max_retries` and no cancel came; else over.
fn lost(life: &mut JobLife, why: &str, policy: &Policy, now_ms: i64) {
    let lost_before = life.attempts.iter().filter(|a| a.outcome == "lost").count();
    push_attempt(life, "lost", why, now_ms);
    if lost_before < policy.max_retries as usize && !life.cancel_requested {
        requeue(life, format!("requeued: {why}"));
    } else if life.cancel_requested {
        end(
            life,
            JobState::Cancelled,
            None,
            format!("cancelled: {why}").as_str(),
            now_ms,
        );
    } else {
        let why = format!(
            "{why}; no retries left (--max-retries {})",
            policy.max_retries
        );
        end(life, JobState::Failed, None, why.as_str(), now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    const POLICY: Policy = Policy {
        max_retries: 1,
        shutting_down: false,
        stop_grace_ms: 10_000,
    };

    fn step(life: &JobLife, event: Event) -> Transition {
        apply(life, &event, &POLICY, 100).expect("a transition")
    }

    /// A job admitted on `node` and running there.
    fn running_on(node: &str) -> JobLife {
        let admitted = step(
            &JobLife::queued(2432),
            Event::Admitted {
                node: node.into(),
                workers: Vec::new(),
            },
        );
        step(&admitted.life, Event::Running).life
    }

    fn exit(code: Option<i32>) -> Event {
        Event::Exited {
            code,
            signal: None,
            oom_killed: false,
        }
    }

    #[test]
    fn an_admitted_job_starts_on_its_node_and_runs() {
        let t = step(
            &JobLife::queued(2432),
            Event::Admitted {
                node: "n1".into(),
                workers: vec![Workers {
                    node: "n2".into(),
                    count: 2,
                }],
            },
        );
        assert_eq!(
            (t.life.state, t.life.node.as_deref(), t.life.started_at),
            (Starting, Some("n1"), Some(100))
        );
        assert_eq!(t.life.workers.len(), 1);
        assert!(t.effects.is_empty());
        let t = step(&t.life, Event::Running);
        assert_eq!((t.life.state, t.life.running_at), (Running, Some(100)));
        assert_eq!(
            apply(&t.life, &Event::Running, &POLICY, 200),
            Err(NoChange),
            "a second start changes nothing"
        );
    }

    #[test]
    fn a_job_that_exits_zero_succeeds_and_frees_its_node() {
        let t = step(&running_on("n1"), exit(Some(0)));
        assert_eq!(
            (t.life.state, t.life.exit_code, t.life.reason.clone()),
            (Succeeded, Some(0), None)
        );
        assert_eq!(t.life.finished_at, Some(100));
        assert_eq!(t.effects, vec![Effect::ForgetUi, Effect::WakeScheduler]);
    }

    #[test]
    fn a_failed_job_says_how_its_process_ended() {
        let by_code = step(&running_on("n1"), exit(Some(3)));
        assert_eq!(by_code.life.state, Failed);
        assert_eq!(
            by_code.life.reason.as_deref(),
            Some("the job's process exited with code 3; its log says why")
        );
        let by_signal = step(
            &running_on("n1"),
            Event::Exited {
                code: None,
                signal: Some(9),
                oom_killed: false,
            },
        );
        assert_eq!(
            by_signal.life.reason.as_deref(),
            Some("the job's process was killed by signal 9")
        );
        let silent = step(&running_on("n1"), exit(None));
        assert_eq!(
            silent.life.reason.as_deref(),
            Some("the job's process ended without an exit status")
        );
    }

    #[test]
    fn an_oom_kill_names_the_memory_limit_and_the_flags_to_raise_it() {
        let t = step(
            &running_on("n1"),
            Event::Exited {
                code: Some(137),
                signal: None,
                oom_killed: true,
            },
        );
        assert_eq!((t.life.state, t.life.oom_killed), (Failed, true));
        let why = t.life.reason.unwrap_or_default();
        assert!(why.starts_with("killed by the OOM killer"), "{why}");
        assert!(why.contains("memory limit of 2432 MiB"), "{why}");
        assert!(
            why.contains("--driver-memory or --executor-memory"),
            "{why}"
        );
    }

    #[test]
    fn an_end_is_recorded_once() {
        let done = step(&running_on("n1"), exit(Some(0))).life;
        for event in [
            exit(Some(1)),
            Event::Lost { why: "lost".into() },
            Event::CouldNotStart { why: "no".into() },
            Event::Cancel,
            Event::Running,
            Event::Launching,
            Event::Unplaced { why: "gone".into() },
            Event::Preempt {
                why: "p".into(),
                grace_ms: 0,
            },
            Event::Admitted {
                node: "n1".into(),
                workers: Vec::new(),
            },
        ] {
            assert_eq!(
                apply(&done, &event, &POLICY, 200),
                Err(NoChange),
                "{event:?}"
            );
        }
    }

    #[test]
    fn a_preempted_job_goes_back_to_the_queue_with_its_run_in_history() {
        let t = step(
            &running_on("n1"),
            Event::Preempt {
                why: "preempted for job 7".into(),
                grace_ms: 500,
            },
        );
        assert_eq!(t.effects, vec![Effect::Stop { grace_ms: 500 }]);
        assert_eq!(
            apply(
                &t.life,
                &Event::Preempt {
                    why: "again".into(),
                    grace_ms: 0
                },
                &POLICY,
                100
            ),
            Err(NoChange),
            "one preemption at a time"
        );
        let t = step(&t.life, exit(Some(143)));
        let life = &t.life;
        assert_eq!(life.state, Queued);
        assert_eq!(life.reason.as_deref(), Some("preempted for job 7"));
        assert_eq!(
            (
                &life.node,
                life.started_at,
                life.running_at,
                &life.preempt_reason
            ),
            (&None, None, None, &None)
        );
        assert_eq!(life.attempts.len(), 1);
        assert_eq!(life.attempts[0].outcome, "preempted");
        assert_eq!(life.attempts[0].reason, "preempted for job 7");
        assert_eq!(life.attempts[0].running_at_ms, Some(100));
        assert!(t.effects.contains(&Effect::WakeScheduler));
    }

    #[test]
    fn a_cancel_wins_over_a_preemption() {
        let preempting = step(
            &running_on("n1"),
            Event::Preempt {
                why: "preempted for job 7".into(),
                grace_ms: 500,
            },
        );
        let t = step(&preempting.life, Event::Cancel);
        assert_eq!(t.effects, vec![Effect::Stop { grace_ms: 10_000 }]);
        let t = step(&t.life, exit(Some(143)));
        assert_eq!(t.life.state, Cancelled);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("cancelled by its owner or an admin")
        );
        assert!(t.life.attempts.is_empty());
    }

    #[test]
    fn a_queued_job_is_cancelled_at_once() {
        let t = step(&JobLife::queued(2432), Event::Cancel);
        assert_eq!(t.life.state, Cancelled);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("cancelled before it started")
        );
        assert_eq!(t.effects, vec![Effect::WakeScheduler]);
    }

    #[test]
    fn a_lost_job_runs_again_until_its_retries_are_spent() {
        let t = step(
            &running_on("n1"),
            Event::Lost {
                why: "lost: node n1 sent no heartbeat for 3s".into(),
            },
        );
        assert_eq!(t.life.state, Queued);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("requeued: lost: node n1 sent no heartbeat for 3s")
        );
        assert_eq!(t.life.node, None);
        assert_eq!(t.life.attempts[0].outcome, "lost");
        assert!(t.life.attempts[0].running_at_ms.is_some());
        assert_eq!(
            t.effects,
            vec![
                Effect::ForgetUi,
                Effect::LogLine("=== hearth: lost: node n1 sent no heartbeat for 3s ===".into()),
                Effect::WakeScheduler
            ]
        );
        let again = step(
            &t.life,
            Event::Admitted {
                node: "n1".into(),
                workers: Vec::new(),
            },
        );
        let t = step(
            &again.life,
            Event::Lost {
                why: "lost: node n1 was removed".into(),
            },
        );
        assert_eq!(t.life.state, Failed);
        assert_eq!(t.life.attempts.len(), 2);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("lost: node n1 was removed; no retries left (--max-retries 1)")
        );
    }

    #[test]
    fn preempted_runs_do_not_spend_retries() {
        let mut life = running_on("n1");
        for _ in 0..3 {
            let p = step(
                &life,
                Event::Preempt {
                    why: "p".into(),
                    grace_ms: 0,
                },
            );
            let q = step(&p.life, exit(Some(143)));
            let s = step(
                &q.life,
                Event::Admitted {
                    node: "n1".into(),
                    workers: Vec::new(),
                },
            );
            life = s.life;
        }
        let t = step(&life, Event::Lost { why: "lost".into() });
        assert_eq!(t.life.state, Queued);
        assert_eq!(t.life.attempts.len(), 4);
    }

    #[test]
    fn a_lost_job_its_owner_cancelled_is_cancelled_not_retried() {
        let cancelling = step(&running_on("n1"), Event::Cancel).life;
        let t = step(
            &cancelling,
            Event::Lost {
                why: "lost: node n1 was removed".into(),
            },
        );
        assert_eq!(t.life.state, Cancelled);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("cancelled: lost: node n1 was removed")
        );
        assert_eq!(t.life.attempts.len(), 1);
    }

    #[test]
    fn at_shutdown_a_local_job_stopped_is_cancelled_but_a_remote_one_ended_by_itself() {
        let stopping = Policy {
            shutting_down: true,
            ..POLICY
        };
        let local =
            apply(&running_on(LOCAL_NODE), &exit(Some(143)), &stopping, 1).expect("a transition");
        assert_eq!(local.life.state, Cancelled);
        assert_eq!(
            local.life.reason.as_deref(),
            Some("stopped because Hearth shut down")
        );
        assert_eq!(local.life.exit_code, Some(143));
        let remote =
            apply(&running_on("n1"), &exit(Some(143)), &stopping, 1).expect("a transition");
        assert_eq!(remote.life.state, Failed);
        let done =
            apply(&running_on(LOCAL_NODE), &exit(Some(0)), &stopping, 1).expect("a transition");
        assert_eq!(done.life.state, Succeeded);
    }

    #[test]
    fn a_preempted_job_stopped_at_shutdown_is_not_requeued() {
        let stopping = Policy {
            shutting_down: true,
            ..POLICY
        };
        let preempting = step(
            &running_on(LOCAL_NODE),
            Event::Preempt {
                why: "p".into(),
                grace_ms: 0,
            },
        );
        let t = apply(&preempting.life, &exit(Some(143)), &stopping, 1).expect("a transition");
        assert_eq!(t.life.state, Cancelled);
        assert!(t.life.attempts.is_empty());
    }

    #[test]
    fn a_start_goes_on_unless_a_cancel_or_the_shutdown_came_first() {
        let starting = step(
            &JobLife::queued(2432),
            Event::Admitted {
                node: "n1".into(),
                workers: Vec::new(),
            },
        )
        .life;
        let go = step(&starting, Event::Launching);
        assert_eq!(go.life, starting);
        assert_eq!(go.effects, vec![Effect::Launch]);

        let cancelled = step(&step(&starting, Event::Cancel).life, Event::Launching);
        assert_eq!(cancelled.life.state, Cancelled);
        assert_eq!(
            cancelled.life.reason.as_deref(),
            Some("cancelled before it started")
        );
        assert!(!cancelled.effects.contains(&Effect::Launch));

        let stopping = Policy {
            shutting_down: true,
            ..POLICY
        };
        let t = apply(&starting, &Event::Launching, &stopping, 1).expect("a transition");
        assert_eq!(t.life.state, Queued);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("requeued: Hearth was shutting down as the job was starting")
        );
        assert!(!t.effects.contains(&Effect::Launch));
        assert_eq!(
            apply(&JobLife::queued(1), &Event::Launching, &POLICY, 1),
            Err(NoChange),
            "a job not admitted is not launched"
        );
    }

    #[test]
    fn a_placement_that_fell_through_puts_the_job_back_without_spending_an_attempt() {
        let starting = step(
            &JobLife::queued(2432),
            Event::Admitted {
                node: "n1".into(),
                workers: vec![Workers {
                    node: "n2".into(),
                    count: 1,
                }],
            },
        )
        .life;
        let t = step(
            &starting,
            Event::Unplaced {
                why: "node n1 went away before the job started".into(),
            },
        );
        assert_eq!(t.life.state, Queued);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("requeued: node n1 went away before the job started")
        );
        assert!(t.life.attempts.is_empty() && t.life.workers.is_empty());
        assert_eq!(t.life.started_at, None);
        let running = step(&starting, Event::Running).life;
        assert_eq!(
            apply(&running, &Event::Unplaced { why: "x".into() }, &POLICY, 1),
            Err(NoChange),
            "a job that runs was placed"
        );
    }

    #[test]
    fn a_job_that_could_not_start_fails_with_why() {
        let t = step(
            &running_on("n1"),
            Event::CouldNotStart {
                why: "could not start the job on node n1: no such user".into(),
            },
        );
        assert_eq!(t.life.state, Failed);
        assert_eq!(
            t.life.reason.as_deref(),
            Some("could not start the job on node n1: no such user")
        );
        assert_eq!(t.life.exit_code, None);
    }

    mod any_sequence {
        use super::*;
        use proptest::prelude::*;

        fn any_state() -> impl Strategy<Value = JobState> {
            prop::sample::select(JobState::ALL.to_vec())
        }

        fn any_attempt() -> impl Strategy<Value = Attempt> {
            (prop::bool::ANY, 0i64..50).prop_map(|(lost, at)| Attempt {
                started_at_ms: Some(at),
                running_at_ms: None,
                ended_at_ms: at + 1,
                outcome: if lost { "lost" } else { "preempted" }.into(),
                reason: "earlier".into(),
            })
        }

        fn any_life() -> impl Strategy<Value = JobLife> {
            (
                any_state(),
                prop::bool::ANY,
                prop::option::of(Just("preempted for job 1".to_string())),
                prop::collection::vec(any_attempt(), 0..4),
                prop::option::of(prop::sample::select(vec![LOCAL_NODE, "n1"])),
            )
                .prop_map(
                    |(state, cancel_requested, preempt_reason, attempts, node)| JobLife {
                        state,
                        cancel_requested,
                        preempt_reason,
                        attempts,
                        node: node.map(str::to_string),
                        ..JobLife::queued(2432)
                    },
                )
        }

        fn any_event() -> impl Strategy<Value = Event> {
            prop_oneof![
                prop::sample::select(vec![LOCAL_NODE, "n1"]).prop_map(|n| Event::Admitted {
                    node: n.into(),
                    workers: Vec::new()
                }),
                Just(Event::Launching),
                Just(Event::Unplaced { why: "gone".into() }),
                Just(Event::Running),
                Just(Event::CouldNotStart { why: "no".into() }),
                (
                    prop::option::of(0i32..3),
                    prop::option::of(9i32..10),
                    prop::bool::ANY
                )
                    .prop_map(|(code, signal, oom_killed)| Event::Exited {
                        code,
                        signal,
                        oom_killed
                    }),
                Just(Event::Lost { why: "lost".into() }),
                (0u64..10).prop_map(|grace_ms| Event::Preempt {
                    why: "p".into(),
                    grace_ms
                }),
                Just(Event::Cancel),
            ]
        }

        fn any_policy() -> impl Strategy<Value = Policy> {
            (0u32..3, prop::bool::ANY).prop_map(|(max_retries, shutting_down)| Policy {
                max_retries,
                shutting_down,
                stop_grace_ms: 1,
            })
        }

        proptest! {
            #[test]
            fn no_sequence_leaves_a_terminal_state_or_loses_an_attempt(
                start in any_life(),
                events in prop::collection::vec(any_event(), 0..24),
                policy in any_policy(),
            ) {
                let mut life = start;
                for (now, event) in events.iter().enumerate() {
                    match apply(&life, event, &policy, now as i64) {
                        Err(NoChange) => {}
                        Ok(t) => {
                            prop_assert!(!life.state.is_terminal(), "{life:?} moved on {event:?}");
                            prop_assert!(t.life.attempts.starts_with(&life.attempts));
                            prop_assert!(t.life.attempts.len() <= life.attempts.len() + 1);
                            prop_assert_eq!(t.life.memory_limit_mib, life.memory_limit_mib);
                            if t.life.state == JobState::Queued {
                                prop_assert!(t.life.node.is_none() && t.life.started_at.is_none());
                            }
                            if t.life.state.is_terminal() {
                                prop_assert!(t.life.finished_at.is_some());
                            }
                            prop_assert_eq!(
                                t.effects.contains(&Effect::Launch),
                                *event == Event::Launching && t.life == life
                            );
                            life = t.life;
                        }
                    }
                }
            }
        }
    }
}
