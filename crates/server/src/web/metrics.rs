//! `/metrics` in Prometheus' text format, for admins (or a token of an admin kept for the
//! scraper): jobs by state, queue waits, recent scheduling latency, node use, and every
//! route's request count and latency. Written by hand: the format is a few lines of text.

use crate::error::ApiResult;
use crate::jobs::dispatch::gang;
use crate::store::now_ms;
use crate::web::api::{AppState, Caller, ROUTES};
use crate::LOCAL_NODE;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_model::JobState;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const BUCKETS: [f64; 8] = [0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0];

#[derive(Default)]
struct RouteStats {
    /// By status code.
    count: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    total: u64,
    sum_seconds: f64,
}

/// Request counters, by (method, route pattern): patterns, not paths, so that the number
/// of series stays bounded whatever clients ask for.
#[derive(Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<(String, &'static str), RouteStats>>,
}

/// The console's own routes, besides the API's [`ROUTES`].
const OTHER_ROUTES: &[&str] = &["/", "/assets/{name}", "/metrics", "/healthz"];

/// The route pattern a path was served by, or "unmatched".
fn route_of(path: &str) -> &'static str {
    let segs: Vec<&str> = path.split('/').collect();
    let fits = |pattern: &str| {
        let pat: Vec<&str> = pattern.split('/').collect();
        // `{path}` (workspace files) takes the rest of the path, slashes included.
        let rest = pat.last() == Some(&"{path}");
        let n = pat.len();
        (segs.len() == n || (rest && segs.len() > n))
            && pat
                .iter()
                .zip(&segs)
                .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
    };
    ROUTES
        .iter()
        .map(|(_, p)| *p)
        .chain(OTHER_ROUTES.iter().copied())
        .find(|p| fits(p))
        .unwrap_or("unmatched")
}

/// Middleware: counts and times every request (until its response headers; a streamed
/// body such as a followed log is not counted in its latency).
pub async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = route_of(req.uri().path());
    let began = Instant::now();
    let resp = next.run(req).await;
    let secs = began.elapsed().as_secs_f64();
    let mut routes = app
        .http_metrics
        .routes
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let s = routes.entry((method, route)).or_default();
    *s.count.entry(resp.status().as_u16()).or_default() += 1;
    for (i, b) in BUCKETS.iter().enumerate() {
        if secs <= *b {
            s.buckets[i] += 1;
        }
    }
    s.total += 1;
    s.sum_seconds += secs;
    resp
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How many recent jobs the scheduling latency is computed over.
const RECENT_JOBS: i64 = 1000;

pub async fn serve(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let now = now_ms();
    let mut out = String::with_capacity(8 * 1024);

    // Jobs by state: every state appears, zeros included, so that rates and alerts work.
    let mut by_state: BTreeMap<&'static str, u64> =
        JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (state, n) in app.store.job_counts()? {
        *by_state.entry(state.as_str()).or_default() += n;
    }
    head(
        &mut out,
        "hearth_jobs",
        "gauge",
        "Jobs by state, all users.",
    );
    for (state, n) in &by_state {
        let _ = writeln!(out, "hearth_jobs{{state=\"{state}\"}} {n}");
    }

    let active = app
        .store
        .jobs_in(&[JobState::Queued, JobState::Starting, JobState::Running])?;
    // Queue waits: how many wait in each queue and for how long the oldest has.
    // Every queue appears, the implicit `default` one included, even when empty.
    let mut waits: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    waits.insert(hearth_sched::DEFAULT_QUEUE, (0, 0.0));
    let policy = app.policy();
    for q in &policy.doc.queues {
        waits.insert(q.name.as_str(), (0, 0.0));
    }
    let mut used = hearth_sched::Resources::default();
    for j in &active {
        if j.state == JobState::Queued {
            let w = waits.entry(j.queue.as_str()).or_insert((0, 0.0));
            w.0 += 1;
            w.1 = w.1.max((now - j.submitted_at).max(0) as f64 / 1000.0);
        } else {
            used = used.add(&gang(j));
        }
    }
    head(
        &mut out,
        "hearth_queued_jobs",
        "gauge",
        "Jobs waiting, by queue.",
    );
    for (q, (n, _)) in &waits {
        let _ = writeln!(out, "hearth_queued_jobs{{queue=\"{}\"}} {n}", label(q));
    }
    head(
        &mut out,
        "hearth_queue_oldest_wait_seconds",
        "gauge",
        "How long the longest-waiting job of each queue has waited.",
    );
    for (q, (_, oldest)) in &waits {
        let _ = writeln!(
            out,
            "hearth_queue_oldest_wait_seconds{{queue=\"{}\"}} {oldest:.3}",
            label(q)
        );
    }

    head(
        &mut out,
        "hearth_nodes",
        "gauge",
        "Nodes by state: the local node (always ready) and nodes that joined with `hearth agent`.",
    );
    for (state, n) in crate::web::api::nodes::counts(&app)? {
        let _ = writeln!(out, "hearth_nodes{{state=\"{state}\"}} {n}");
    }

    // Scheduling latency: submission to admission, over the most recent admitted jobs.
    let mut lat: Vec<f64> = app
        .store
        .jobs(&crate::store::JobFilter::default(), RECENT_JOBS)?
        .iter()
        .filter_map(|j| {
            j.started_at
                .map(|s| (s - j.submitted_at).max(0) as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    head(
        &mut out,
        "hearth_scheduling_latency_seconds",
        "gauge",
        "Submission to admission of the most recent 1000 jobs that were admitted, by quantile.",
    );
    for q in [0.5, 0.9, 0.99, 1.0] {
        let _ = writeln!(
            out,
            "hearth_scheduling_latency_seconds{{quantile=\"{q}\"}} {:.3}",
            quantile(&lat, q)
        );
    }

    let node = label(LOCAL_NODE);
    let gauges: [(&str, &str, f64); 4] = [
        (
            "hearth_node_cores",
            "Cores the node offers to jobs.",
            f64::from(app.cfg.cores),
        ),
        (
            "hearth_node_cores_used",
            "Cores held by starting and running jobs.",
            f64::from(used.cores),
        ),
        (
            "hearth_node_memory_bytes",
            "Memory the node offers to jobs.",
            (app.cfg.memory_mib * 1024 * 1024) as f64,
        ),
        (
            "hearth_node_memory_used_bytes",
            "Memory (limits, overhead included) held by starting and running jobs.",
            (used.memory_mib * 1024 * 1024) as f64,
        ),
    ];
    for (name, help, v) in gauges {
        head(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {v}");
    }
    // Beside what is held, what each node's machine has in use, as measured there (nodes
    // down or not measuring have no sample).
    let measured: Vec<(String, hearth_model::api::MeasuredUse)> =
        std::iter::once((LOCAL_NODE.to_string(), app.machine.latest().map(Into::into)))
            .chain(
                crate::web::api::nodes::joined(&app)?
                    .into_iter()
                    .map(|n| (n.name, n.measured)),
            )
            .filter_map(|(name, m)| Some((name, m?)))
            .collect();
    head(
        &mut out,
        "hearth_node_machine_busy_cores",
        "gauge",
        "Cores busy on the node's machine, measured there over the last few seconds: every process, Hearth's or not.",
    );
    for (name, m) in &measured {
        if let Some(busy) = m.busy_cores {
            let _ = writeln!(
                out,
                "hearth_node_machine_busy_cores{{node=\"{}\"}} {busy:.3}",
                label(name)
            );
        }
    }
    head(
        &mut out,
        "hearth_node_machine_memory_in_use_bytes",
        "gauge",
        "Memory in use on the node's machine (total less available), measured there: every process, Hearth's or not.",
    );
    for (name, m) in &measured {
        let _ = writeln!(
            out,
            "hearth_node_machine_memory_in_use_bytes{{node=\"{}\"}} {}",
            label(name),
            m.used_memory_mib * 1024 * 1024
        );
    }

    let routes = app
        .http_metrics
        .routes
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    head(
        &mut out,
        "hearth_http_requests_total",
        "counter",
        "Requests by method, route and status.",
    );
    for ((method, route), s) in routes.iter() {
        for (code, n) in &s.count {
            let _ = writeln!(
                out,
                "hearth_http_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}} {n}"
            );
        }
    }
    head(
        &mut out,
        "hearth_http_request_duration_seconds",
        "histogram",
        "Time to the response headers, by method and route.",
    );
    for ((method, route), s) in routes.iter() {
        let l = format!("method=\"{method}\",route=\"{route}\"");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "hearth_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                s.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "hearth_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
            s.total
        );
        let _ = writeln!(
            out,
            "hearth_http_request_duration_seconds_sum{{{l}}} {:.6}",
            s.sum_seconds
        );
        let _ = writeln!(
            out,
            "hearth_http_request_duration_seconds_count{{{l}}} {}",
            s.total
        );
    }
    drop(routes);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_their_route_patterns() {
        assert_eq!(route_of("/api/v1/jobs"), "/api/v1/jobs");
        assert_eq!(route_of("/api/v1/jobs/12"), "/api/v1/jobs/{id}");
        assert_eq!(route_of("/api/v1/jobs/12/logs"), "/api/v1/jobs/{id}/logs");
        assert_eq!(route_of("/api/v1/files/a/b/c.txt"), "/api/v1/files/{path}");
        assert_eq!(route_of("/assets/app.js"), "/assets/{name}");
        assert_eq!(route_of("/"), "/");
        assert_eq!(route_of("/no/such/thing"), "unmatched");
        assert_eq!(route_of("/api/v1/jobs/"), "unmatched");
    }

    #[test]
    fn quantiles_of_a_sorted_list() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
