//! Batch jobs: the `jobs` table. A job's life is decided by `hearth_model::lifecycle`;
//! `apply_plan` and `apply_event` read the row, ask it and write the answer.

use super::{bad_json, now_ms, Result, Store, UserRow};
use hearth_model::api::{Attempt, SubmitJob};
use hearth_model::lifecycle::{self, Event, JobLife, Transition};
use hearth_model::{JobResources, JobState};
use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub user_id: i64,
    pub owner: String,
    pub name: String,
    pub state: JobState,
    pub spec: SubmitJob,
    pub resources: JobResources,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub running_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub oom_killed: bool,
    pub node: Option<String>,
    pub cancel_requested: bool,
    pub queue: String,
    pub priority: String,
    pub preemptible: bool,
    /// Earlier runs that did not end it (preempted, lost).
    pub attempts: Vec<Attempt>,
    /// Set while a preemption stops the job: why, for its attempt history.
    pub preempt_reason: Option<String>,
    /// A job spread over several nodes (a standalone cluster of its own): executors by
    /// node, the driver's `node` among them if it runs some. Empty in local mode.
    pub workers: Vec<Workers>,
}

pub use hearth_model::lifecycle::Workers;

impl JobRow {
    /// The node its driver runs (or ran) on; a job from before nodes were recorded ran on
    /// the server's own machine.
    pub fn driver_node(&self) -> &str {
        self.node.as_deref().unwrap_or(crate::LOCAL_NODE)
    }

    /// What its life's transitions read and change.
    pub fn life(&self) -> JobLife {
        JobLife {
            state: self.state,
            cancel_requested: self.cancel_requested,
            preempt_reason: self.preempt_reason.clone(),
            attempts: self.attempts.clone(),
            node: self.node.clone(),
            workers: self.workers.clone(),
            started_at: self.started_at,
            running_at: self.running_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            oom_killed: self.oom_killed,
            memory_limit_mib: self.resources.memory_limit_mib(),
        }
    }
}

/// Which jobs a listing shows; every field narrows it, None does not.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter {
    pub user_id: Option<i64>,
    pub state: Option<JobState>,
    /// Only jobs older (smaller id) than this one.
    pub before: Option<i64>,
}

/// A job as submitted, before it has an id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub spec: SubmitJob,
    pub resources: JobResources,
    pub queue: String,
    pub priority: String,
    pub preemptible: bool,
}

const JOB_COLS: &str = "id, user_id, owner, name, state, spec, resources, submitted_at, \
     started_at, running_at, finished_at, exit_code, reason, oom_killed, node, cancel_requested, \
     queue, priority, preemptible, attempts, preempt_reason, workers";

fn job_row(r: &Row) -> Result<JobRow> {
    let state: String = r.get(4)?;
    let spec: String = r.get(5)?;
    let resources: String = r.get(6)?;
    Ok(JobRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        state: JobState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown job state {state}").into(),
            )
        })?,
        spec: serde_json::from_str(&spec).map_err(bad_json)?,
        resources: serde_json::from_str(&resources).map_err(bad_json)?,
        submitted_at: r.get(7)?,
        started_at: r.get(8)?,
        running_at: r.get(9)?,
        finished_at: r.get(10)?,
        exit_code: r.get(11)?,
        reason: r.get(12)?,
        oom_killed: r.get(13)?,
        node: r.get(14)?,
        cancel_requested: r.get(15)?,
        queue: r.get(16)?,
        priority: r.get(17)?,
        preemptible: r.get(18)?,
        attempts: serde_json::from_str(&r.get::<_, String>(19)?).map_err(bad_json)?,
        preempt_reason: r.get(20)?,
        workers: match r.get::<_, Option<String>>(21)? {
            Some(text) => serde_json::from_str(&text).map_err(bad_json)?,
            None => Vec::new(),
        },
    })
}

impl Store {
    pub fn insert_job(&self, user: &UserRow, new: &NewJob) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO jobs (user_id, owner, name, state, spec, resources, submitted_at,
                               queue, priority, preemptible)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                user.id,
                user.name,
                new.name,
                serde_json::to_string(&new.spec).map_err(bad_json)?,
                serde_json::to_string(&new.resources).map_err(bad_json)?,
                now_ms(),
                new.queue,
                new.priority,
                new.preemptible,
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn job(&self, id: i64) -> Result<Option<JobRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
    }

    /// Jobs newest first, as `filter` narrows them; pages go backwards from `before`.
    pub fn jobs(&self, filter: &JobFilter, limit: i64) -> Result<Vec<JobRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR user_id = ?1)
             AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let rows = st.query_map(
            params![
                filter.user_id,
                filter.state.map(|s| s.as_str()),
                filter.before,
                limit
            ],
            job_row,
        )?;
        rows.collect()
    }

    /// How many jobs are in each state, over the whole history.
    pub fn job_counts(&self) -> Result<Vec<(JobState, u64)>> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT state, count(*) FROM jobs GROUP BY state")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (state, n) = row?;
            if let Some(s) = JobState::parse(&state) {
                counts.push((s, n.max(0) as u64));
            }
        }
        Ok(counts)
    }

    pub fn jobs_in(&self, states: &[JobState]) -> Result<Vec<JobRow>> {
        let conn = self.conn();
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let mut st = conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE state IN ({}) ORDER BY id",
            list.join(",")
        ))?;
        let rows = st.query_map([], job_row)?;
        rows.collect()
    }

    /// Applies one scheduling plan in one transaction: admitted jobs become `starting` on
    /// their node (as `lifecycle` says); waiting jobs get their current reason. Returns the
    /// jobs actually admitted (a job cancelled meanwhile is not), with their transitions.
    pub fn apply_plan(
        &self,
        placements: &[(i64, String, Vec<Workers>)],
        waiting: &[(i64, String)],
        policy: &lifecycle::Policy,
    ) -> Result<Vec<(i64, Transition)>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = now_ms();
        let mut admitted = Vec::new();
        for (id, node, workers) in placements {
            let event = Event::Admitted {
                node: node.clone(),
                workers: workers.clone(),
            };
            if let Some(t) = apply_in(&tx, *id, &event, policy, now)? {
                admitted.push((*id, t));
            }
        }
        for (id, reason) in waiting {
            tx.execute(
                "UPDATE jobs SET reason = ?2
                 WHERE id = ?1 AND state = 'queued' AND reason IS NOT ?2",
                params![id, reason],
            )?;
        }
        tx.commit()?;
        Ok(admitted)
    }

    /// Applies `event` to a job in one transaction: reads its row, asks
    /// `lifecycle::apply`, writes the result. None if there is no such job or the event
    /// changes nothing; the caller carries out the transition's effects.
    pub fn apply_event(
        &self,
        id: i64,
        event: &Event,
        policy: &lifecycle::Policy,
    ) -> Result<Option<Transition>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let t = apply_in(&tx, id, event, policy, now_ms())?;
        tx.commit()?;
        Ok(t)
    }
}

/// One event on one job, inside the caller's transaction.
fn apply_in(
    conn: &Connection,
    id: i64,
    event: &Event,
    policy: &lifecycle::Policy,
    now: i64,
) -> Result<Option<Transition>> {
    let job = conn
        .query_row(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
            [id],
            job_row,
        )
        .optional()?;
    let Some(job) = job else {
        return Ok(None);
    };
    let before = job.life();
    let Ok(t) = lifecycle::apply(&before, event, policy, now) else {
        return Ok(None);
    };
    if t.life != before {
        write_life(conn, id, &t.life)?;
    }
    Ok(Some(t))
}

/// Writes every column a job's life holds.
fn write_life(conn: &Connection, id: i64, life: &JobLife) -> Result<()> {
    let workers = if life.workers.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&life.workers).map_err(bad_json)?)
    };
    conn.execute(
        "UPDATE jobs SET state = ?2, cancel_requested = ?3, preempt_reason = ?4, attempts = ?5,
         node = ?6, workers = ?7, started_at = ?8, running_at = ?9, finished_at = ?10,
         exit_code = ?11, reason = ?12, oom_killed = ?13
         WHERE id = ?1",
        params![
            id,
            life.state.as_str(),
            life.cancel_requested,
            life.preempt_reason,
            serde_json::to_string(&life.attempts).map_err(bad_json)?,
            life.node,
            workers,
            life.started_at,
            life.running_at,
            life.finished_at,
            life.exit_code,
            life.reason,
            life.oom_killed,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    /// A queued job of a new user alice; its id.
    fn queued_job(store: &Store) -> i64 {
        let user = UserRow {
            id: 0,
            name: "alice".into(),
            admin: false,
            password_hash: "x".into(),
            uid: 1,
            gid: 1,
            linux_name: "a".into(),
            created_at: 0,
        };
        let uid = store.insert_user(&user).expect("user");
        let user = UserRow { id: uid, ..user };
        let spec: SubmitJob =
            serde_json::from_str(r#"{"main":{"name":"a.py","sha256":"ab"}}"#).expect("spec");
        let new = NewJob {
            name: "a".into(),
            spec,
            resources: JobResources::default(),
            queue: "default".into(),
            priority: "normal".into(),
            preemptible: false,
        };
        store.insert_job(&user, &new).expect("job")
    }

    const POLICY: lifecycle::Policy = lifecycle::Policy {
        max_retries: 1,
        shutting_down: false,
        stop_grace_ms: 1000,
    };

    fn state_after(store: &Store, id: i64, event: Event) -> Option<JobState> {
        store
            .apply_event(id, &event, &POLICY)
            .expect("apply")
            .map(|t| t.life.state)
    }

    #[test]
    fn a_lost_job_runs_again_while_retries_remain_then_fails_with_the_reason() {
        let (store, dir) = temp_store();
        let id = queued_job(&store);
        let place = || {
            store
                .apply_plan(&[(id, "n1".into(), Vec::new())], &[], &POLICY)
                .expect("plan")
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
        };
        assert_eq!(place(), vec![id]);
        assert_eq!(
            state_after(&store, id, Event::Running),
            Some(JobState::Running)
        );
        let lost = |why: &str| Event::Lost { why: why.into() };
        assert_eq!(
            state_after(&store, id, lost("lost: node n1 sent no heartbeat for 3s")),
            Some(JobState::Queued)
        );
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!(job.node, None);
        assert_eq!(job.attempts.len(), 1);
        assert_eq!(job.attempts[0].outcome, "lost");
        assert!(job.attempts[0].running_at_ms.is_some());
        assert_eq!(place(), vec![id]);
        assert_eq!(
            state_after(&store, id, lost("lost: node n1 was removed")),
            Some(JobState::Failed)
        );
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.attempts.len(), 2);
        assert!(
            job.reason.as_deref().is_some_and(|r| r.contains("node n1 was removed")
                && r.contains("no retries left")),
            "{:?}",
            job.reason
        );
        // Already terminal: nothing more is recorded.
        assert_eq!(state_after(&store, id, lost("again")), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_finished_job_is_recorded_once() {
        let (store, dir) = temp_store();
        let id = queued_job(&store);
        let admitted = store
            .apply_plan(&[(id, "local".into(), Vec::new())], &[], &POLICY)
            .expect("plan");
        assert_eq!(admitted.len(), 1);
        let exit = |code| Event::Exited {
            code: Some(code),
            signal: None,
            oom_killed: false,
        };
        assert_eq!(state_after(&store, id, exit(0)), Some(JobState::Succeeded));
        assert_eq!(state_after(&store, id, exit(1)), None);
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!((job.state, job.exit_code), (JobState::Succeeded, Some(0)));
        assert!(job.finished_at.is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_transition_is_written_whole_and_reads_back_as_it_was_decided() {
        let (store, dir) = temp_store();
        let id = queued_job(&store);
        let workers = vec![Workers {
            node: "n2".into(),
            count: 2,
        }];
        store
            .apply_plan(&[(id, "n1".into(), workers.clone())], &[], &POLICY)
            .expect("plan");
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!((job.node.as_deref(), &job.workers), (Some("n1"), &workers));
        for event in [
            Event::Running,
            Event::Preempt {
                why: "preempted for job 9".into(),
                grace_ms: 5,
            },
            Event::Exited {
                code: Some(143),
                signal: None,
                oom_killed: false,
            },
        ] {
            let before = store.job(id).expect("get").expect("exists").life();
            let t = store
                .apply_event(id, &event, &POLICY)
                .expect("apply")
                .expect("a transition");
            let after = store.job(id).expect("get").expect("exists").life();
            assert_eq!(after, t.life, "{event:?} from {before:?}");
        }
        let job = store.job(id).expect("get").expect("exists");
        assert_eq!(job.state, JobState::Queued);
        assert!(job.workers.is_empty() && job.node.is_none());
        assert_eq!(job.attempts[0].outcome, "preempted");
        // A cancel of a queued job ends it at once.
        assert_eq!(
            state_after(&store, id, Event::Cancel),
            Some(JobState::Cancelled)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
