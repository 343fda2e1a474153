//! Human tables by default, `-o json` for scripts.

use anyhow::Result;
use hearth_model::api;
use hearth_model::format_mib;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// "3m ago" style.
fn ago(ms: i64) -> String {
    let secs = ((now_ms() - ms) / 1000).max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Memory for people: `0`, `896 MiB`, `23.5 GiB`.
fn human_mib(mib: u64) -> String {
    match mib {
        0 => "0".into(),
        1..=1023 => format!("{mib} MiB"),
        _ => format!("{:.1} GiB", mib as f64 / 1024.0),
    }
}

pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub fn print_jobs(jobs: &[api::Job], format: Format, with_owner: bool) -> Result<()> {
    if format == Format::Json {
        return json(&jobs);
    }
    if jobs.is_empty() {
        eprintln!("No jobs yet. Submit one with `hearth submit app.py`.");
        return Ok(());
    }
    let mut header = vec!["ID"];
    if with_owner {
        header.push("OWNER");
    }
    header.extend([
        "NAME",
        "QUEUE",
        "STATE",
        "CORES",
        "MEMORY",
        "SUBMITTED",
        "DURATION",
        "REASON",
    ]);
    let rows = jobs
        .iter()
        .map(|j| {
            let mut r = vec![j.id.to_string()];
            if with_owner {
                r.push(j.owner.clone());
            }
            let dur = match (j.running_at_ms, j.finished_at_ms) {
                (Some(s), Some(e)) => duration(e - s),
                (Some(s), None) => duration(now_ms() - s),
                _ => "-".into(),
            };
            r.extend([
                j.name.clone(),
                j.queue.clone(),
                j.state.to_string(),
                j.cores.to_string(),
                format_mib(j.memory_limit_mib),
                ago(j.submitted_at_ms),
                dur,
                j.reason.clone().unwrap_or_default(),
            ]);
            r
        })
        .collect();
    table(&header, rows);
    Ok(())
}

pub fn print_job(j: &api::Job, format: Format) -> Result<()> {
    if format == Format::Json {
        return json(j);
    }
    let r = &j.resources;
    println!("Job {}: {}", j.id, j.name);
    println!("  owner:      {}", j.owner);
    println!("  state:      {}", j.state);
    if let Some(reason) = &j.reason {
        let label = if j.state.is_terminal() {
            "reason"
        } else {
            "waiting"
        };
        println!("  {label}:{:w$}{reason}", "", w = 11 - label.len());
    }
    if let Some(code) = j.exit_code {
        println!("  exit code:  {code}");
    }
    if j.oom_killed {
        println!("  OOM killed: yes");
    }
    println!(
        "  app:        {}{} {}",
        j.main,
        j.class
            .as_deref()
            .map(|c| format!(" (class {c})"))
            .unwrap_or_default(),
        j.args.join(" ")
    );
    println!(
        "  resources:  driver {} cores {}, {} x executor {} cores {} -> local[{}], memory limit {} (heap + overhead)",
        r.driver_cores,
        format_mib(r.driver_memory_mib),
        r.num_executors,
        r.executor_cores,
        format_mib(r.executor_memory_mib),
        j.cores,
        format_mib(j.memory_limit_mib)
    );
    println!(
        "  queue:      {} (priority {}{})",
        j.queue,
        j.priority,
        if j.preemptible { ", preemptible" } else { "" }
    );
    if let Some(node) = &j.node {
        if j.executors_by_node.is_empty() {
            println!("  node:       {node}");
        } else {
            let executors: Vec<String> = j
                .executors_by_node
                .iter()
                .map(|e| format!("{} on {}", e.count, e.node))
                .collect();
            println!(
                "  nodes:      driver and master on {node}; executors {} (a standalone cluster of its own)",
                executors.join(", ")
            );
        }
    }
    if let Some(ui) = &j.ui_url {
        println!("  spark ui:   {ui}");
    }
    println!("  phases:");
    println!("    submitted  {}", timestamp(j.submitted_at_ms));
    let phases = [
        ("queued", Some(j.submitted_at_ms), j.started_at_ms),
        ("starting", j.started_at_ms, j.running_at_ms),
        ("running", j.running_at_ms, j.finished_at_ms),
    ];
    for (name, from, to) in phases {
        if let Some(from) = from {
            match to {
                Some(to) => println!("    {name:<10} {}", duration(to - from)),
                None if !j.state.is_terminal() => {
                    println!("    {name:<10} {} so far", duration(now_ms() - from))
                }
                None => {}
            }
        }
    }
    if let Some(f) = j.finished_at_ms {
        println!("    finished   {}", timestamp(f));
    }
    if !j.attempts.is_empty() {
        println!("  earlier attempts:");
        for (i, a) in j.attempts.iter().enumerate() {
            let ran = match a.running_at_ms {
                Some(r) => format!("ran {}", duration(a.ended_at_ms - r)),
                None => "never ran".into(),
            };
            println!(
                "    {}. {} at {}, {ran}: {}",
                i + 1,
                a.outcome,
                timestamp(a.ended_at_ms),
                a.reason
            );
        }
    }
    Ok(())
}

/// `4 cores, 16g, 2 running, 10 queued`, or `-` for no limits.
fn quota_text(q: &api::Quota) -> String {
    let mut parts = Vec::new();
    if let Some(c) = q.max_cores {
        parts.push(format!("{c} cores"));
    }
    if let Some(m) = &q.max_memory {
        parts.push(m.clone());
    }
    if let Some(r) = q.max_running_jobs {
        parts.push(format!("{r} running"));
    }
    if let Some(n) = q.max_queued_jobs {
        parts.push(format!("{n} queued"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// All queues, or one queue's users.
pub fn print_queues(queues: &[api::QueueStatus], only: Option<&str>, format: Format) -> Result<()> {
    let picked: Vec<&api::QueueStatus> = queues
        .iter()
        .filter(|q| only.is_none_or(|n| q.spec.name == n))
        .collect();
    if format == Format::Json {
        return json(&picked);
    }
    let limit = |l: &api::ResourceLimit| match (&l.cores, &l.memory) {
        (None, None) => "-".to_string(),
        (c, m) => format!(
            "{} cores, {}",
            c.map(|c| c.to_string()).unwrap_or_else(|| "any".into()),
            m.clone().unwrap_or_else(|| "any".into())
        ),
    };
    if only.is_none() {
        table(
            &[
                "QUEUE",
                "WEIGHT",
                "RUNNING",
                "QUEUED",
                "CORES",
                "MEMORY",
                "SHARE",
                "FAIR SHARE",
                "GUARANTEED",
                "MAX",
            ],
            picked
                .iter()
                .map(|q| {
                    vec![
                        format!(
                            "{}{}",
                            q.spec.name,
                            if q.spec.best_effort {
                                " (best effort)"
                            } else {
                                ""
                            }
                        ),
                        q.spec.weight.to_string(),
                        q.running_jobs.to_string(),
                        q.queued_jobs.to_string(),
                        q.cores.to_string(),
                        human_mib(q.memory_mib),
                        pct(q.dominant_share),
                        pct(q.fair_share),
                        limit(&q.spec.guaranteed),
                        limit(&q.spec.max),
                    ]
                })
                .collect(),
        );
        return Ok(());
    }
    for q in picked {
        println!(
            "Queue {}: weight {}, {} running, {} queued, holds {} cores and {} ({} of the machines; fair share {}); guaranteed {}, max {}",
            q.spec.name,
            q.spec.weight,
            q.running_jobs,
            q.queued_jobs,
            q.cores,
            human_mib(q.memory_mib),
            pct(q.dominant_share),
            pct(q.fair_share),
            limit(&q.spec.guaranteed),
            limit(&q.spec.max)
        );
        if !q.spec.open_to.is_empty() {
            println!("Also open to groups: {}", q.spec.open_to.join(", "));
        }
        let users = q.users.len().max(1) as f64;
        table(
            &[
                "USER",
                "RUNNING",
                "QUEUED",
                "CORES",
                "MEMORY",
                "SHARE",
                "FAIR SHARE",
                "QUOTA",
            ],
            q.users
                .iter()
                .map(|u| {
                    vec![
                        u.user.clone(),
                        u.running_jobs.to_string(),
                        u.queued_jobs.to_string(),
                        u.cores.to_string(),
                        human_mib(u.memory_mib),
                        pct(u.dominant_share),
                        pct(q.fair_share / users),
                        quota_text(&u.quota),
                    ]
                })
                .collect(),
        );
    }
    Ok(())
}

pub fn print_users(users: &[api::User], format: Format) -> Result<()> {
    if format == Format::Json {
        return json(&users);
    }
    table(
        &["NAME", "ADMIN", "UID", "CREATED"],
        users
            .iter()
            .map(|u| {
                vec![
                    u.name.clone(),
                    if u.admin { "yes" } else { "" }.into(),
                    u.uid.to_string(),
                    ago(u.created_at_ms),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub fn print_tokens(tokens: &[api::Token], format: Format) -> Result<()> {
    if format == Format::Json {
        return json(&tokens);
    }
    table(
        &["ID", "NAME", "OPENS", "CREATED", "EXPIRES", "LAST USED"],
        tokens
            .iter()
            .map(|t| {
                vec![
                    t.id.to_string(),
                    t.name.clone(),
                    match t.scope.as_str() {
                        "connect" => "Spark Connect".to_string(),
                        _ => "everything".to_string(),
                    },
                    ago(t.created_at_ms),
                    t.expires_at_ms
                        .map(timestamp)
                        .unwrap_or_else(|| "never".into()),
                    t.last_used_at_ms.map(ago).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// What a node has in use of what it offers: "3/8 cores, 10 GiB/32 GiB".
fn used_text(n: &api::NodeInfo) -> String {
    format!(
        "{}/{} cores, {}/{}",
        n.used_cores,
        n.cores,
        human_mib(n.used_memory_mib),
        human_mib(n.memory_mib)
    )
}

/// What a node's machine has in use, measured there: "0.4/8 cores busy, 3.1 GiB/32.0 GiB";
/// "-" when unknown (a node down, or an agent too old to measure).
fn measured_text(n: &api::NodeInfo) -> String {
    let Some(m) = &n.measured else {
        return "-".into();
    };
    let cpu = match m.busy_cores {
        Some(c) => format!("{c:.1}/{} cores busy", m.cpus),
        None => format!("?/{} cores busy", m.cpus),
    };
    format!(
        "{cpu}, {}/{}",
        human_mib(m.used_memory_mib),
        human_mib(m.memory_mib)
    )
}

pub fn print_nodes(nodes: &[api::NodeInfo], format: Format) -> Result<()> {
    if format == Format::Json {
        return json(&nodes);
    }
    table(
        &[
            "NAME",
            "STATE",
            "HELD",
            "MACHINE USE",
            "JOBS",
            "LABELS",
            "LAST SEEN",
            "ISOLATION",
            "PROBLEMS",
        ],
        nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    if n.held.is_some() {
                        format!("{} (HELD)", n.state)
                    } else {
                        n.state.to_string()
                    },
                    used_text(n),
                    measured_text(n),
                    n.running_jobs.to_string(),
                    n.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    match (n.joined, n.last_seen_ms) {
                        (false, _) => "-".into(),
                        (true, Some(t)) => ago(t),
                        (true, None) => "never".into(),
                    },
                    if n.joined && n.problems.is_empty() && !n.isolation {
                        // Not connected now, or an agent that does not say.
                        "-"
                    } else if n.isolation {
                        "on"
                    } else {
                        "OFF"
                    }
                    .into(),
                    n.held
                        .iter()
                        .map(|h| format!("held: {h}"))
                        .chain(n.problems.iter().cloned())
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            })
            .collect(),
    );
    let unshared: Vec<&str> = nodes
        .iter()
        .filter(|n| n.shared_workspace == Some(false))
        .map(|n| n.name.as_str())
        .collect();
    if !unshared.is_empty() {
        println!("Note: the workspaces of {} are their own, not the server's: jobs there see only that node's files, and jobs spread over several nodes cannot share files through the workspace. Mount the server's workspaces directory at AGENT_DATA_DIR/workspaces and restart the agent.", unshared.join(", "));
    }
    if nodes.iter().any(|n| n.joined && n.runtime.is_none()) {
        println!("Note: joined nodes without a Spark runtime (or not connected now) run no jobs yet: `hearth agent --runtime DIR`, or `hearth runtime install` on that machine.");
    }
    Ok(())
}

pub fn print_node_tokens(tokens: &[api::NodeToken], format: Format) -> Result<()> {
    if format == Format::Json {
        return json(&tokens);
    }
    let now = now_ms();
    table(
        &["ID", "STATE", "CREATED", "EXPIRES", "USES", "BY"],
        tokens
            .iter()
            .map(|t| {
                let state = if t.revoked_at_ms.is_some() {
                    "revoked"
                } else if t.expires_at_ms <= now {
                    "expired"
                } else {
                    "active"
                };
                vec![
                    t.id.to_string(),
                    state.into(),
                    ago(t.created_at_ms),
                    timestamp(t.expires_at_ms),
                    t.uses.to_string(),
                    t.created_by.clone(),
                ]
            })
            .collect(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_use_reads_as_used_of_offered() {
        let n: api::NodeInfo = serde_json::from_value(serde_json::json!({
            "name": "alpha", "cores": 8, "memory_mib": 32768, "used_cores": 3,
            "used_memory_mib": 10240, "isolation": true, "runtime": null, "problems": []
        }))
        .expect("a node from an older server, without running_jobs");
        assert_eq!(n.running_jobs, 0);
        assert_eq!(used_text(&n), "3/8 cores, 10.0 GiB/32.0 GiB");
        // Nor its measured use.
        assert_eq!(measured_text(&n), "-");
    }

    #[test]
    fn a_nodes_measured_use_reads_as_busy_and_in_use_of_the_machine() {
        let mut n: api::NodeInfo = serde_json::from_value(serde_json::json!({
            "name": "alpha", "cores": 8, "memory_mib": 32768, "used_cores": 3,
            "used_memory_mib": 10240, "isolation": true, "runtime": null, "problems": [],
            "measured": {"cpus": 16, "busy_cores": 2.345, "memory_mib": 65536, "used_memory_mib": 3174}
        }))
        .expect("a node with its measured use");
        assert_eq!(measured_text(&n), "2.3/16 cores busy, 3.1 GiB/64.0 GiB");
        if let Some(m) = n.measured.as_mut() {
            m.busy_cores = None;
        }
        assert_eq!(measured_text(&n), "?/16 cores busy, 3.1 GiB/64.0 GiB");
    }
}
