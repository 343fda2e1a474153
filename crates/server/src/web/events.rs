//! `GET /api/v1/events`: server-sent events that keep the console's pages live without
//! reloading. Once a second the stream looks at the active jobs and sends, as one `jobs`
//! event, those whose view changed (including the ones that just ended), and, as a
//! `sessions` event, the caller's sessions (an admin's: everyone's) whenever one started,
//! changed state, stopped or was used; nothing is sent while nothing changes. Polling the
//! store and the engines is cheap (active jobs only, engines in memory) and needs no hook in
//! the dispatcher; `app.wake` cannot be shared, since a listener would steal its wake-ups.

use crate::error::{ApiError, ApiResult};
use crate::web::api::jobs::job_view;
use crate::web::api::{AppState, Caller};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hearth_model::JobState;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_secs(1);
/// Streams end after a while and the browser reconnects (EventSource does so by itself):
/// a revoked session then stops getting events, and proxies never see an endless response.
const MAX_STREAM: Duration = Duration::from_secs(10 * 60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Everyone's jobs (admins only).
    #[serde(default)]
    all: bool,
}

pub async fn stream(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if q.all {
        caller.require_admin()?;
    }
    // An endless response must be asked for: a plain HTTP client would otherwise hang.
    let wants_events = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_events {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this endpoint streams server-sent events: send `Accept: text/event-stream` (EventSource does)",
        ));
    }
    let owner = (!q.all).then_some(caller.0.id);
    // Admins may list anyone's sessions, so their stream tells of everyone's.
    let sessions_of = (!caller.0.admin).then_some(caller.0.id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        let begun = Instant::now();
        // The last JSON sent for each job still worth watching.
        let mut sent: HashMap<i64, String> = HashMap::new();
        // What the last `sessions` event said; none is sent while there are none.
        let mut sessions_sent = String::from("[]");
        loop {
            if app.is_shutting_down() || begun.elapsed() > MAX_STREAM {
                return;
            }
            let now = sessions(&app, sessions_of);
            if now != sessions_sent {
                let data = format!("{{\"sessions\":{now}}}");
                if tx
                    .send(Ok(Event::default().event("sessions").data(data)))
                    .await
                    .is_err()
                {
                    return;
                }
                sessions_sent = now;
            }
            match changes(&app, owner, &mut sent) {
                Ok(changed) if changed.is_empty() => {}
                Ok(changed) => {
                    let data = format!("{{\"jobs\":[{}]}}", changed.join(","));
                    if tx
                        .send(Ok(Event::default().event("jobs").data(data)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                // A store hiccup is not the end of the stream: try again next tick.
                Err(e) => tracing::warn!("job events: {e}"),
            }
            tokio::select! {
                _ = tx.closed() => return, // the browser went away
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The sessions `user` (None: everyone) may see, as a JSON array of what a sessions page
/// must redraw for: id, owner, kind, state, whether in use, and when last used (to the
/// second: a client then asks `GET /sessions` for uptimes and idle times, which it advances
/// by itself between events).
fn sessions(app: &AppState, user: Option<i64>) -> String {
    let list: Vec<serde_json::Value> = app
        .engines
        .list()
        .iter()
        .filter(|e| user.is_none() || user == Some(e.user_id))
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "user": e.user,
                "kind": e.kind.name(),
                "state": e.state().name(),
                "in_use": e.active() > 0,
                "last_used_s": e.last_used_ms() / 1000,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// The JSON of every watched job whose view differs from what was last sent: active jobs,
/// and jobs that were active last time (to send how they ended). Forgets ended jobs.
fn changes(
    app: &AppState,
    owner: Option<i64>,
    sent: &mut HashMap<i64, String>,
) -> Result<Vec<String>, rusqlite::Error> {
    let active = app
        .store
        .jobs_in(&[JobState::Queued, JobState::Starting, JobState::Running])?;
    let mut out = Vec::new();
    let mut seen = HashMap::with_capacity(sent.len());
    for j in active
        .iter()
        .filter(|j| owner.is_none() || owner == Some(j.user_id))
    {
        let json = serde_json::to_string(&job_view(j)).unwrap_or_default();
        if sent.get(&j.id) != Some(&json) {
            out.push(json.clone());
        }
        seen.insert(j.id, json);
    }
    for id in sent.keys().filter(|id| !seen.contains_key(id)) {
        // Was active, is not any more: it ended (or was removed with its user).
        if let Some(j) = app.store.job(*id)? {
            out.push(serde_json::to_string(&job_view(&j)).unwrap_or_default());
        }
    }
    *sent = seen;
    Ok(out)
}
