//! Fair sharing on a real `hearth up`: quotas, priorities, DRF between users, preemption.

mod common;

use common::{apps, text, Hearth};
use serde_json::json;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);
const SMALL: [&str; 4] = ["--num-executors", "0", "--driver-memory", "512m"];

fn sleepy() -> String {
    apps().join("sleepy.py").display().to_string()
}

fn submit(h: &Hearth, user: &common::User, extra: &[&str], args: &[&str]) -> u64 {
    let mut all: Vec<&str> = SMALL.to_vec();
    all.extend_from_slice(extra);
    let app = sleepy();
    all.push(&app);
    all.extend_from_slice(args);
    h.submit(user, &all)
}

#[test]
fn quotas_and_priority_caps_refuse_or_explain() {
    let mut h = Hearth::start_with(&["--cores", "2"]);
    let alice = h.add_user("alice");
    let out = h.cli(
        &h.admin,
        &[
            "quota",
            "set",
            "--user",
            "alice",
            "--max-cores",
            "1",
            "--max-queued",
            "1",
            "--max-priority",
            "normal",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let first = submit(&h, &alice, &[], &["600", "1"]);
    h.wait_state(&alice, first, "running", MIN);
    let second = submit(&h, &alice, &[], &["1", "0"]);
    let deadline = std::time::Instant::now() + MIN;
    let job = loop {
        let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{second}"), None);
        if job["reason"].is_string() {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(job["state"], "queued");
    let reason = job["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("quota") && reason.contains(&first.to_string()),
        "{reason}"
    );

    // A third queued job is over the queued-jobs quota: refused, with the numbers.
    let app = sleepy();
    let out = h.cli(
        &alice,
        &[
            "submit",
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("quota allows 1"),
        "{}",
        text(&out.stderr)
    );
    // Above the priority cap, or into a queue that does not exist: refused.
    let out = h.cli(&alice, &["submit", "--priority", "high", &app]);
    assert!(
        text(&out.stderr).contains("--priority normal or lower"),
        "{}",
        text(&out.stderr)
    );
    let out = h.cli(&alice, &["submit", "--queue", "nope", &app]);
    assert!(
        text(&out.stderr).contains("queue nope does not exist"),
        "{}",
        text(&out.stderr)
    );

    // Everyone can see the queue's use; the policy is the admins'.
    let out = h.cli(&alice, &["queue", "show", "default"]);
    let shown = text(&out.stdout);
    assert!(shown.contains("alice"), "{}", text(&out.stderr));
    assert!(shown.contains("1 cores, 1 queued"), "{shown}");
    let out = h.cli(&alice, &["queue", "create", "mine"]);
    assert!(
        text(&out.stderr).contains("only admins"),
        "{}",
        text(&out.stderr)
    );
    for id in [first, second] {
        let _ = h.cli(&alice, &["cancel", &id.to_string()]);
    }
}

#[test]
fn bobs_submission_to_labs_queue_is_refused_alices_is_accepted() {
    let mut h = Hearth::start_with(&["--cores", "2"]);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    for args in [
        &["queue", "create", "lab"][..],
        &["group", "create", "lab", "--queue", "lab"],
        &["group", "add", "lab", "alice"],
    ] {
        let out = h.cli(&h.admin, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    // An unknown group is refused by name.
    let out = h.cli(&h.admin, &["queue", "create", "ml", "--open-to", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("opened to group nope, which does not exist"),
        "{}",
        text(&out.stderr)
    );

    // Bob is in no group: lab is not his; he is told which queues are.
    let app = sleepy();
    let mut bobs: Vec<&str> = SMALL.to_vec();
    bobs.extend_from_slice(&["--queue", "lab", &app, "1", "0"]);
    let mut args = vec!["submit"];
    args.extend_from_slice(&bobs);
    let out = h.cli(&bob, &args);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(
            "you may not submit to queue lab: it is open to group lab (yours: default); you may use: default"
        ),
        "{}",
        text(&out.stderr)
    );
    let (status, body) = h.api(&bob, "GET", "/api/v1/jobs", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(0), "{body}");

    // Alice's group owns lab; bob may still use default.
    let accepted = submit(&h, &alice, &["--queue", "lab"], &["600", "0"]);
    let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{accepted}"), None);
    assert_eq!(job["queue"], "lab", "{job}");
    assert!(
        ["queued", "starting", "running"].contains(&job["state"].as_str().unwrap_or("")),
        "{job}"
    );
    let his = submit(&h, &bob, &["--queue", "default"], &["600", "0"]);

    // Opening lab to the default group lets bob in.
    let out = h.cli(&h.admin, &["queue", "set", "lab", "--open-to", "default"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let opened = h.submit(&bob, &bobs);
    for (user, id) in [(&alice, accepted), (&bob, his), (&bob, opened)] {
        let _ = h.cli(user, &["cancel", &id.to_string()]);
    }
}

#[test]
fn a_user_with_many_jobs_does_not_starve_a_user_with_one() {
    let mut h = Hearth::start_with(&["--cores", "2"]);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let alices: Vec<u64> = (0..4)
        .map(|_| submit(&h, &alice, &[], &["4", "1"]))
        .collect();
    h.wait_state(&alice, alices[0], "running", MIN);
    h.wait_state(&alice, alices[1], "running", MIN);
    let bobs = submit(&h, &bob, &[], &["1", "0"]);
    let bob_job = h.wait_job(&bob, bobs, 2 * MIN);
    assert_eq!(bob_job["state"], "succeeded", "{bob_job}");
    let third = h.wait_job(&alice, alices[2], 2 * MIN);
    let fourth = h.wait_job(&alice, alices[3], 2 * MIN);
    // When the first core came free, it went to Bob (dominant share 0), not to Alice's
    // older third job (Alice already held half the machine): the scheduler admitted his
    // first. (Their processes' starts, launched together, may finish in either order.)
    let bob_admitted = bob_job["started_at_ms"].as_i64().expect("bob admitted");
    assert!(
        bob_admitted <= third["started_at_ms"].as_i64().expect("third admitted"),
        "bob {bob_job}\nthird {third}"
    );
    assert!(bob_admitted <= fourth["started_at_ms"].as_i64().expect("fourth admitted"));
}

#[test]
fn preemptible_work_gives_way_and_is_requeued_not_failed() {
    let mut h = Hearth::start_with(&["--cores", "2"]);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let (status, body) = h.api(
        &h.admin,
        "PUT",
        "/api/v1/policy",
        Some(json!({"version": 0, "preemption_grace_seconds": 3})),
    );
    assert_eq!(status, 200, "{body}");
    // Alice's preemptible job takes the whole machine.
    let app = sleepy();
    let batch = h.submit(
        &alice,
        &[
            "--preemptible",
            "--num-executors",
            "1",
            "--driver-memory",
            "512m",
            "--executor-memory",
            "512m",
            &app,
            "600",
            "1",
        ],
    );
    h.wait_state(&alice, batch, "running", MIN);
    // Bob's ordinary job arrives: Alice's gives way.
    let urgent = submit(&h, &bob, &[], &["2", "0.5"]);
    let job = h.wait_state(&alice, batch, "queued", MIN);
    // Its history says by what and why; its reason says why it waits now.
    assert_eq!(
        job["attempts"].as_array().map(|a| a.len()),
        Some(1),
        "{job}"
    );
    let why = job["attempts"][0]["reason"].as_str().unwrap_or("");
    assert!(
        why.contains(&format!("preempted for job {urgent}")),
        "{job}"
    );
    assert!(job["reason"].is_string(), "{job}");
    assert_eq!(job["attempts"][0]["outcome"], "preempted");
    assert_eq!(h.wait_job(&bob, urgent, 2 * MIN)["state"], "succeeded");
    // Then Alice's job runs again, as a second attempt of the same job.
    h.wait_state(&alice, batch, "running", 2 * MIN);
    let show = text(&h.cli(&alice, &["job", "show", &batch.to_string()]).stdout);
    assert!(
        show.contains("earlier attempts") && show.contains("preempted for job"),
        "{show}"
    );
    let deadline = std::time::Instant::now() + MIN;
    while !h.logs(&alice, batch).contains("=== hearth: attempt 2") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            h.logs(&alice, batch)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = h.cli(&alice, &["cancel", &batch.to_string()]);
    assert_eq!(h.wait_job(&alice, batch, MIN)["state"], "cancelled");
}
