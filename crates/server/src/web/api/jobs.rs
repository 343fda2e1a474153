//! Jobs: submit, list, show, cancel, and their logs (tail, follow, resume from an offset).

use super::{parse_id, ApiJson, AppState, Caller};
use crate::error::{ApiError, ApiResult};
use crate::jobs::dispatch::{self, log_path, node_capacity};
use crate::store::JobRow;
use crate::{spark, LOCAL_NODE};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_model::api::{self, FileRef, SubmitJob};
use hearth_model::{parse_mib, JobResources, JobState};
use serde::Deserialize;
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

pub fn job_view(j: &JobRow) -> api::Job {
    api::Job {
        id: j.id as u64,
        name: j.name.clone(),
        owner: j.owner.clone(),
        state: j.state,
        main: j.spec.main.name.clone(),
        class: j.spec.class.clone(),
        args: j.spec.args.clone(),
        resources: j.resources,
        cores: j.resources.total_cores(),
        memory_limit_mib: j.resources.memory_limit_mib(),
        submitted_at_ms: j.submitted_at,
        started_at_ms: j.started_at,
        running_at_ms: j.running_at,
        finished_at_ms: j.finished_at,
        exit_code: j.exit_code,
        reason: j.reason.clone(),
        oom_killed: j.oom_killed,
        node: j.node.clone(),
        executors_by_node: j
            .workers
            .iter()
            .map(|w| api::NodeCount {
                node: w.node.clone(),
                count: w.count,
            })
            .collect(),
        queue: j.queue.clone(),
        priority: j.priority.clone(),
        preemptible: j.preemptible,
        attempts: j.attempts.clone(),
        ui_url: (j.state == hearth_model::JobState::Running).then(|| format!("/ui/jobs/{}/", j.id)),
    }
}

/// The caller's job, or 404 for anyone else's (admins see all): another user's job is
/// indistinguishable from no job.
fn owned_job(app: &AppState, caller: &Caller, id: &str) -> ApiResult<JobRow> {
    let id = parse_id("job", id)?;
    match app.store.job(id)? {
        Some(j) if j.user_id == caller.0.id || caller.0.admin => Ok(j),
        _ => Err(ApiError::not_found(format!("you have no job {id}"))),
    }
}

fn check_file_name(what: &str, f: &FileRef) -> ApiResult<()> {
    let ok = !f.name.is_empty()
        && f.name.len() <= 255
        && !f.name.contains('/')
        // Spark separates file lists with commas and reads `#` as an alias in --archives.
        && !f.name.contains(',')
        && !f.name.contains('#')
        && !f.name.chars().any(char::is_control)
        && f.name != "."
        && f.name != "..";
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_file_name",
            format!(
                "{what} `{}` is not a valid file name: no slashes, commas, # or control characters; not . or ..",
                f.name
            ),
        ));
    }
    Ok(())
}

fn parse_resources(r: &api::ResourceRequest) -> ApiResult<JobResources> {
    let d = JobResources::default();
    let mem = |flag: &str, v: &Option<String>, default: u64| -> ApiResult<u64> {
        match v {
            None => Ok(default),
            Some(s) => parse_mib(s)
                .map_err(|e| ApiError::bad_request("invalid_resources", format!("{flag}: {e}"))),
        }
    };
    let cores = |flag: &str, v: Option<u32>, default: u32| -> ApiResult<u32> {
        match v {
            Some(0) => Err(ApiError::bad_request(
                "invalid_resources",
                format!("{flag} must be at least 1"),
            )),
            Some(n) if n > 1024 => Err(ApiError::bad_request(
                "invalid_resources",
                format!("{flag} {n} is more cores than any machine has"),
            )),
            v => Ok(v.unwrap_or(default)),
        }
    };
    let num_executors = r.num_executors.unwrap_or(d.num_executors);
    if num_executors > 1000 {
        return Err(ApiError::bad_request(
            "invalid_resources",
            format!("--num-executors {num_executors} is too many: at most 1000"),
        ));
    }
    Ok(JobResources {
        driver_cores: cores("--driver-cores", r.driver_cores, d.driver_cores)?,
        driver_memory_mib: mem("--driver-memory", &r.driver_memory, d.driver_memory_mib)?,
        executor_cores: cores("--executor-cores", r.executor_cores, d.executor_cores)?,
        executor_memory_mib: mem(
            "--executor-memory",
            &r.executor_memory,
            d.executor_memory_mib,
        )?,
        num_executors,
    })
}

/// Checks a submission completely before anything is stored.
fn validate(app: &AppState, caller: &Caller, req: &SubmitJob) -> ApiResult<JobResources> {
    let main = &req.main;
    check_file_name("the application", main)?;
    let is_py = main.name.ends_with(".py");
    let is_jar = main.name.ends_with(".jar");
    if !is_py && !is_jar {
        return Err(ApiError::bad_request(
            "invalid_application",
            format!(
                "`{}` is neither a .py nor a .jar file: submit a PySpark script or a JVM application jar",
                main.name
            ),
        ));
    }
    if req.class.is_some() && !is_jar {
        return Err(ApiError::bad_request(
            "invalid_application",
            "--class applies to .jar applications only",
        ));
    }
    spark::check_user_conf(&req.conf).map_err(|m| ApiError::bad_request("reserved_conf", m))?;
    let mut names = HashSet::new();
    let lists: [(&str, &[FileRef]); 5] = [
        ("the application", std::slice::from_ref(main)),
        ("--py-files", &req.py_files),
        ("--files", &req.files),
        ("--archives", &req.archives),
        ("--jars", &req.jars),
    ];
    for (what, list) in lists {
        for f in list {
            check_file_name(what, f)?;
            if !crate::blobs::is_sha256_hex(&f.sha256) {
                return Err(ApiError::bad_request(
                    "invalid_file",
                    format!(
                        "{what} `{}`: sha256 must be 64 lowercase hex digits",
                        f.name
                    ),
                ));
            }
            if app.store.blob_of(&f.sha256, caller.0.id)?.is_none() {
                return Err(ApiError::bad_request(
                    "file_not_uploaded",
                    format!(
                        "{what} `{}` ({}) was not uploaded: PUT it to /api/v1/blobs/{} first",
                        f.name, f.sha256, f.sha256
                    ),
                ));
            }
            if !names.insert(f.name.clone()) {
                return Err(ApiError::bad_request(
                    "duplicate_file_name",
                    format!(
                        "two files are named `{}`: every job file needs its own name",
                        f.name
                    ),
                ));
            }
        }
    }
    if let Some(name) = &req.name {
        if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_name",
                "a job name must have 1-200 characters and no control characters",
            ));
        }
    }
    for c in &req.constraints {
        hearth_model::cluster::parse_label(c).map_err(|why| {
            ApiError::bad_request("invalid_constraint", why.replace("--label", "--constraint"))
        })?;
    }
    let resources = parse_resources(&req.resources)?;
    // The control plane alone (`hearth server`) offers jobs nothing itself.
    let offer = if app.cfg.local_jobs {
        node_capacity(app)
    } else {
        hearth_sched::Resources::ZERO
    };
    let need = hearth_sched::Resources::new(resources.total_cores(), resources.memory_limit_mib());
    // Joined nodes count (even while down: a job may wait for its node to come back).
    let joined: Vec<_> = app
        .store
        .nodes()
        .map_err(|e| ApiError::internal("reading nodes", e))?
        .into_iter()
        .filter(|n| n.name != LOCAL_NODE)
        .collect();
    let fits_joined = joined.iter().any(|n| {
        n.removed_at.is_none() && need.fits_in(&hearth_sched::Resources::new(n.cores, n.memory_mib))
    });
    // Too big for any one node, a job with executors may still run spread over several
    // (a standalone cluster of its own): each part must fit a node and the whole the
    // nodes together. The scheduler says more precisely why one waits.
    let spreads = || {
        if resources.num_executors == 0 || !req.constraints.is_empty() {
            return false;
        }
        let caps: Vec<hearth_sched::Resources> = std::iter::once(offer)
            .chain(
                joined
                    .iter()
                    .filter(|n| n.removed_at.is_none())
                    .map(|n| hearth_sched::Resources::new(n.cores, n.memory_mib)),
            )
            .collect();
        let g = crate::jobs::dispatch::spread_gang(&resources);
        let sum = caps
            .iter()
            .fold(hearth_sched::Resources::ZERO, |s, c| s.add(c));
        [g.driver, g.executor]
            .iter()
            .all(|part| caps.iter().any(|c| part.fits_in(c)))
            && g.total().fits_in(&sum)
    };
    let any_joined = joined.iter().any(|n| n.removed_at.is_none());
    // The control plane alone with no node yet: the job waits for nodes to join (the
    // scheduler says so), as nothing tells how large they will be.
    let nothing_to_compare = !app.cfg.local_jobs && !any_joined;
    if !need.fits_in(&offer) && !fits_joined && !spreads() && !nothing_to_compare {
        let nodes = if any_joined {
            ", and no joined node offers that much either"
        } else {
            ""
        };
        return Err(ApiError::bad_request(
            "too_large",
            format!(
                "the job needs {need} (driver plus executors, memory including Spark's overhead) \
                 but {}{nodes}: ask for fewer or smaller executors",
                if app.cfg.local_jobs {
                    format!("this machine offers jobs {offer}")
                } else {
                    "this server runs no jobs itself (`hearth server`)".to_string()
                }
            ),
        ));
    }
    Ok(resources)
}

pub async fn submit(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SubmitJob>,
) -> ApiResult<(StatusCode, Json<api::Job>)> {
    let resources = validate(&app, &caller, &req)?;
    let priority = match &req.priority {
        None => hearth_sched::Priority::Normal,
        Some(p) => p
            .parse::<hearth_sched::Priority>()
            .map_err(|e| ApiError::bad_request("invalid_priority", e.to_string()))?,
    };
    let policy = app.policy();
    let queue = req
        .queue
        .clone()
        .unwrap_or_else(|| policy.config.default_queue_of(&caller.0.name).to_string());
    let options = hearth_sched::JobOptions {
        queue: Some(queue.clone()),
        priority,
        preemptible: req.preemptible,
        gang: None,
        constraints: Vec::new(),
    };
    let snapshot = dispatch::snapshot(
        &app,
        &policy,
        crate::interactive::engines::allocations(&app),
    )?;
    let submitter = hearth_sched::Submitter {
        name: &caller.0.name,
        admin: caller.0.admin,
    };
    hearth_sched::check_submission(&snapshot, submitter, &options).map_err(|r| match r {
        hearth_sched::Refusal::NotAllowed { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "queue_not_allowed", r.to_string())
        }
        _ => ApiError::conflict("refused_by_policy", r.to_string()),
    })?;
    let new = crate::store::NewJob {
        name: req.name.clone().unwrap_or_else(|| req.main.name.clone()),
        resources,
        queue,
        priority: priority.as_str().to_string(),
        preemptible: req.preemptible,
        spec: req,
    };
    let id = app.store.insert_job(&caller.0, &new)?;
    app.wake.notify_one();
    let job = app
        .store
        .job(id)?
        .ok_or_else(|| ApiError::internal("reading the new job", "missing"))?;
    Ok((StatusCode::CREATED, Json(job_view(&job))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    /// The next page: jobs older than this id.
    #[serde(default)]
    before: Option<i64>,
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<api::JobList>> {
    let q = query(q)?;
    if q.all {
        caller.require_admin().map_err(|_| {
            ApiError::forbidden("only admins may list every user's jobs: drop --all")
        })?;
    }
    let state = match &q.state {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_state",
                format!(
                    "`{s}` is not a job state: one of queued, starting, running, succeeded, failed, cancelled, lost"
                ),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let filter = crate::store::JobFilter {
        user_id: (!q.all).then_some(caller.0.id),
        state,
        before: q.before,
    };
    let jobs = app
        .store
        .jobs(&filter, limit)?
        .iter()
        .map(job_view)
        .collect();
    Ok(Json(api::JobList { jobs }))
}

pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Job>> {
    Ok(Json(job_view(&owned_job(&app, &caller, &id)?)))
}

pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Job>> {
    let job = owned_job(&app, &caller, &id)?;
    if job.state.is_terminal() {
        return Err(ApiError::conflict(
            "already_finished",
            format!("job {} already ended ({})", job.id, job.state),
        ));
    }
    dispatch::cancel(&app, &job).await?;
    let job = owned_job(&app, &caller, &id)?;
    Ok(Json(job_view(&job)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset to start from: what a reconnecting client already has.
    #[serde(default)]
    offset: Option<u64>,
    /// Start at the last N lines instead.
    #[serde(default)]
    tail: Option<usize>,
    /// Keep the response open and stream new output until the job ends.
    #[serde(default)]
    follow: bool,
}

/// The byte offset where the last `n` lines of the file begin.
fn tail_offset(path: &std::path::Path, n: usize) -> std::io::Result<u64> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0;
    let mut buf = vec![0u8; 64 * 1024];
    // A trailing newline ends the last line; it does not start another.
    let mut skip_last = true;
    while pos > 0 {
        let step = (pos as usize).min(buf.len());
        pos -= step as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..step])?;
        for i in (0..step).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
            skip_last = false;
        }
    }
    Ok(0)
}

fn read_from(path: &std::path::Path, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A job's output. The response header `x-hearth-log-offset` gives the byte offset the body
/// starts at, so a client that loses the connection resumes with `?offset=` and loses no line.
pub async fn logs(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let job = owned_job(&app, &caller, &id)?;
    let path = log_path(&app, job.id);
    let start = match q.tail {
        // Read backwards from the end, off the async workers: a tail of a huge log must
        // not hold up the API, the gateway and the nodes' heartbeats.
        Some(n) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || tail_offset(&path, n))
                .await
                .map_err(|e| ApiError::internal("reading the log", e))?
                .map_err(|e| ApiError::internal("reading the log", e))?
        }
        None => q.offset.unwrap_or(0),
    };
    let headers = [
        (
            header::CONTENT_TYPE,
            "text/plain; charset=utf-8".to_string(),
        ),
        (
            header::HeaderName::from_static("x-hearth-log-offset"),
            start.to_string(),
        ),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let (id, follow) = (job.id, q.follow);
    tokio::spawn(async move {
        let mut pos = start;
        loop {
            // Read the state first: output written before the job ended is then surely
            // read. A store error is not an end: keep following.
            let ended = !follow
                || match app.store.job(id) {
                    Ok(Some(j)) => j.state.is_terminal(),
                    Ok(None) => true,
                    Err(_) => false,
                };
            let path2 = path.clone();
            let chunk = tokio::task::spawn_blocking(move || read_from(&path2, pos, 256 * 1024))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match chunk {
                Ok(bytes) if !bytes.is_empty() => {
                    pos += bytes.len() as u64;
                    if tx.send(Ok(bytes)).await.is_err() {
                        return; // the client went away
                    }
                    continue;
                }
                Ok(_) if ended => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((headers, body).into_response())
}

pub async fn nodes(
    State(app): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<api::NodeInfo>>> {
    let runtime = app.runtime();
    let mut problems = runtime.as_ref().err().cloned().unwrap_or_default();
    problems.extend(app.isolation.problems.iter().cloned());
    if !app.cfg.local_jobs {
        problems.push("runs no jobs: the control plane alone (`hearth server`)".into());
    }
    let mut nodes = vec![api::NodeInfo {
        name: LOCAL_NODE.into(),
        cores: app.cfg.cores,
        memory_mib: app.cfg.memory_mib,
        used_cores: 0,
        used_memory_mib: 0,
        running_jobs: 0,
        isolation: app.isolation.enabled,
        runtime: runtime.ok().map(|r| r.spark_home.display().to_string()),
        problems,
        held: None,
        // Drained like any node (`hearth node drain local`).
        state: local_state(&app),
        joined: false,
        labels: Default::default(),
        last_seen_ms: None,
        cert_sha256: None,
        shared_workspace: None,
        measured: app.machine.latest().map(Into::into),
    }];
    nodes.extend(super::nodes::joined(&app)?);
    let jobs = app
        .store
        .jobs_in(&[JobState::Starting, JobState::Running])?;
    let engines = crate::interactive::engines::allocations(&app);
    // A job with no node yet counts on the local one, as the scheduler's snapshot counts it;
    // a spread job on each node it holds something on.
    let held: Vec<(String, hearth_sched::Resources)> =
        jobs.iter().flat_map(dispatch::holdings).collect();
    let placed = held
        .iter()
        .map(|(node, r)| (node.as_str(), *r, 1))
        .chain(engines.iter().map(|a| (a.node.as_str(), a.resources, 0)));
    fill_use(&mut nodes, placed);
    Ok(Json(nodes))
}

/// The server's own machine's state: down only if its in-process node stopped answering.
fn local_state(app: &crate::App) -> hearth_model::cluster::NodeState {
    let row = app
        .store
        .nodes()
        .ok()
        .and_then(|ns| ns.into_iter().find(|n| n.name == LOCAL_NODE));
    match row {
        Some(n) if app.cfg.local_jobs => app.cluster.state(&n, crate::store::now_ms()),
        _ => hearth_model::cluster::NodeState::Ready,
    }
}

/// Adds to each node what is placed on it: (node, resources held, jobs it counts as) for each
/// starting or running job (1) and each live engine (0).
fn fill_use<'a>(
    nodes: &mut [api::NodeInfo],
    placed: impl IntoIterator<Item = (&'a str, hearth_sched::Resources, u32)>,
) {
    for (node, r, jobs) in placed {
        if let Some(n) = nodes.iter_mut().find(|n| n.name == node) {
            n.used_cores = n.used_cores.saturating_add(r.cores);
            n.used_memory_mib = n.used_memory_mib.saturating_add(r.memory_mib);
            n.running_jobs = n.running_jobs.saturating_add(jobs);
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only the samples of the last this many seconds (default: all, a day at most).
    #[serde(default)]
    seconds: Option<u64>,
}

/// The machine's recent use, oldest sample first, for the console's charts.
pub async fn usage(
    State(app): State<AppState>,
    _caller: Caller,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<api::UsageHistory>> {
    let q = query(q)?;
    let since = match q.seconds {
        Some(s) => crate::store::now_ms().saturating_sub(
            i64::try_from(s.min(crate::web::usage::HISTORY.as_secs()))
                .unwrap_or(0)
                .saturating_mul(1000),
        ),
        None => 0,
    };
    Ok(Json(api::UsageHistory {
        interval_seconds: app.cfg.usage_interval.as_secs().max(1),
        samples: app.usage.since(since),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_finds_the_last_lines() {
        let path = std::env::temp_dir().join(format!("hearth-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\n").expect("write");
        assert_eq!(tail_offset(&path, 1).expect("tail"), 4);
        assert_eq!(tail_offset(&path, 2).expect("tail"), 2);
        assert_eq!(tail_offset(&path, 10).expect("tail"), 0);
        std::fs::write(&path, "a\nb").expect("write");
        assert_eq!(tail_offset(&path, 1).expect("tail"), 2);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn each_node_counts_what_is_placed_on_it() {
        let node = |name: &str| api::NodeInfo {
            name: name.into(),
            cores: 8,
            memory_mib: 32768,
            used_cores: 0,
            used_memory_mib: 0,
            running_jobs: 0,
            isolation: true,
            runtime: None,
            problems: Vec::new(),
            held: None,
            state: hearth_model::cluster::NodeState::Ready,
            joined: name != LOCAL_NODE,
            labels: Default::default(),
            last_seen_ms: None,
            cert_sha256: None,
            shared_workspace: None,
            measured: None,
        };
        let mut nodes = vec![node(LOCAL_NODE), node("alpha"), node("beta")];
        let r = hearth_sched::Resources::new;
        fill_use(
            &mut nodes,
            [
                (LOCAL_NODE, r(2, 2048), 1),
                ("alpha", r(3, 4096), 1),
                ("alpha", r(1, 1024), 1),
                // An engine: held, but not a job.
                (LOCAL_NODE, r(1, 1536), 0),
                // A node no longer listed counts nowhere.
                ("gone", r(4, 4096), 1),
            ],
        );
        let used: Vec<_> = nodes
            .iter()
            .map(|n| (n.used_cores, n.used_memory_mib, n.running_jobs))
            .collect();
        assert_eq!(used, [(3, 3584, 1), (4, 5120, 2), (0, 0, 0)]);
    }
}
