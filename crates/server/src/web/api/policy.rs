//! The scheduling policy (admins read and write it whole) and every queue's use against its
//! fair share (everyone may look: knowing why one waits is a feature).

use super::{ApiJson, AppState, Caller};
use crate::error::{ApiError, ApiResult};
use crate::jobs::dispatch::{gang, node_capacity};
use crate::policy::{self, SaveError};
use axum::extract::State;
use axum::Json;
use hearth_model::api::{QueueSpec, QueueStatus, SchedPolicy, UserUsage};
use hearth_model::JobState;
use std::collections::BTreeMap;
use std::sync::Arc;

pub async fn get(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<SchedPolicy>> {
    caller.require_admin()?;
    Ok(Json(app.policy().doc.clone()))
}

pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(doc): ApiJson<SchedPolicy>,
) -> ApiResult<Json<SchedPolicy>> {
    caller.require_admin()?;
    let mut guard = app.policy.write().unwrap_or_else(|p| p.into_inner());
    let saved = match policy::save(&app.store, &guard, doc) {
        Ok(p) => p,
        Err(SaveError::Invalid(m)) => return Err(ApiError::bad_request("invalid_policy", m)),
        Err(SaveError::Stale { current }) => {
            return Err(ApiError::conflict(
                "stale_policy",
                format!("the policy changed meanwhile (now version {current}): read it again and reapply your change"),
            ))
        }
        Err(SaveError::Store(e)) => return Err(e.into()),
    };
    let doc = saved.doc.clone();
    *guard = Arc::new(saved);
    drop(guard);
    app.wake.notify_one();
    Ok(Json(doc))
}

pub async fn queues(
    State(app): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<QueueStatus>>> {
    let policy = app.policy();
    let total = node_capacity(&app);
    let jobs = app
        .store
        .jobs_in(&[JobState::Queued, JobState::Starting, JobState::Running])?;
    let mut statuses: BTreeMap<String, QueueStatus> = BTreeMap::new();
    let blank = |spec: QueueSpec| QueueStatus {
        spec,
        running_jobs: 0,
        queued_jobs: 0,
        cores: 0,
        memory_mib: 0,
        dominant_share: 0.0,
        fair_share: 0.0,
        users: Vec::new(),
    };
    for spec in &policy.doc.queues {
        statuses.insert(spec.name.clone(), blank(spec.clone()));
    }
    let mut users: BTreeMap<(String, String), UserUsage> = BTreeMap::new();
    for j in &jobs {
        let q = statuses.entry(j.queue.clone()).or_insert_with(|| {
            blank(QueueSpec {
                name: j.queue.clone(),
                weight: 1,
                guaranteed: Default::default(),
                max: Default::default(),
                best_effort: false,
                open_to: Vec::new(),
                egress: None,
            })
        });
        let u = users
            .entry((j.queue.clone(), j.owner.clone()))
            .or_insert_with(|| UserUsage {
                user: j.owner.clone(),
                running_jobs: 0,
                queued_jobs: 0,
                cores: 0,
                memory_mib: 0,
                dominant_share: 0.0,
                quota: {
                    let q = policy.config.user_quota(&j.owner);
                    hearth_model::api::Quota {
                        max_cores: q.max_cores,
                        max_memory: q.max_memory_mib.map(hearth_model::format_mib),
                        max_running_jobs: q.max_running_jobs,
                        max_queued_jobs: q.max_queued_jobs,
                    }
                },
            });
        if j.state == JobState::Queued {
            q.queued_jobs += 1;
            u.queued_jobs += 1;
        } else {
            let r = gang(j);
            q.running_jobs += 1;
            q.cores += r.cores;
            q.memory_mib += r.memory_mib;
            u.running_jobs += 1;
            u.cores += r.cores;
            u.memory_mib += r.memory_mib;
        }
    }
    let share =
        |cores: u32, mem: u64| hearth_sched::Resources::new(cores, mem).dominant_share(&total);
    let active_weight: u32 = statuses
        .values()
        .filter(|q| q.running_jobs + q.queued_jobs > 0)
        .map(|q| q.spec.weight.max(1))
        .sum();
    for ((queue, _), mut u) in users {
        u.dominant_share = share(u.cores, u.memory_mib);
        if let Some(q) = statuses.get_mut(&queue) {
            q.users.push(u);
        }
    }
    for q in statuses.values_mut() {
        q.dominant_share = share(q.cores, q.memory_mib);
        if q.running_jobs + q.queued_jobs > 0 && active_weight > 0 {
            q.fair_share = f64::from(q.spec.weight.max(1)) / f64::from(active_weight);
        }
    }
    Ok(Json(statuses.into_values().collect()))
}
