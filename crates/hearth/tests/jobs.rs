//! Real PySpark jobs on a real `hearth up`, under real uids and cgroups.

mod common;

use common::{apps, examples, text, Hearth};
use std::process::Command;
use std::time::Duration;

const MIN: Duration = Duration::from_secs(60);

fn app(name: &str) -> String {
    apps().join(name).display().to_string()
}

/// Host pids of every process running as `uid`.
fn pids_of(uid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-U", &uid.to_string()])
        .output()
        .expect("pgrep");
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn owner_uid(path: &std::path::Path) -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path).expect("stat"))
}

#[test]
fn two_users_run_the_example_and_each_gets_their_own_output() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let wc = examples().join("wordcount");
    let args = |out: &str| -> Vec<String> {
        vec![
            "--num-executors".into(),
            "0".into(),
            "--driver-memory".into(),
            "512m".into(),
            "--files".into(),
            wc.join("hearth.txt").display().to_string(),
            wc.join("wordcount.py").display().to_string(),
            "hearth.txt".into(),
            out.into(),
        ]
    };
    let a_args = args("alice-counts");
    let b_args = args("bob-counts");
    let a = h.submit(
        &alice,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let b = h.submit(&bob, &b_args.iter().map(String::as_str).collect::<Vec<_>>());
    for (user, id) in [(&alice, a), (&bob, b)] {
        let job = h.wait_job(user, id, 4 * MIN);
        assert_eq!(job["state"], "succeeded", "{job}\n{}", h.logs(user, id));
        let log = h.logs(user, id);
        assert!(log.contains("top 10:"), "{log}");
        assert!(log.contains("hearth"), "{log}");
    }
    // Output lands in each user's own workspace, owned by their own uid.
    for (user, dir) in [(&alice, "alice-counts"), (&bob, "bob-counts")] {
        let out = h.workspace(user).join(dir);
        let csv = std::fs::read_dir(&out)
            .expect("output dir")
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".csv"))
            .expect("a csv part");
        let content = std::fs::read_to_string(csv.path()).expect("csv");
        assert!(content.starts_with("word,count"), "{content}");
        assert!(content.contains("the,"), "{content}");
        assert_eq!(owner_uid(&csv.path()), user.uid);
        let ls = h.cli(user, &["fs", "ls", dir]);
        assert!(text(&ls.stdout).contains(".csv"), "{}", text(&ls.stderr));
    }
    assert_ne!(alice.uid, bob.uid);
    // Each sees only their own jobs; only an admin sees everyone's.
    let mine = h.cli(&alice, &["jobs", "-o", "json"]);
    let mine: serde_json::Value = serde_json::from_slice(&mine.stdout).expect("json");
    assert_eq!(mine.as_array().map(|a| a.len()), Some(1));
    assert_eq!(mine[0]["id"], a);
    let all = h.cli(&alice, &["jobs", "--all"]);
    assert!(!all.status.success());
    assert!(
        text(&all.stderr).contains("only admins"),
        "{}",
        text(&all.stderr)
    );
    let all = h.cli(&h.admin, &["jobs", "--all", "-o", "json"]);
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).expect("json");
    assert_eq!(all.as_array().map(|a| a.len()), Some(2));
    let show = h.cli(&alice, &["job", "show", &a.to_string()]);
    let show = text(&show.stdout);
    assert!(show.contains("state:      succeeded"), "{show}");
    assert!(show.contains("local[1]"), "{show}");
    assert!(show.contains("running"), "{show}");
}

#[test]
fn isolation_between_users_is_enforced_by_the_os() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let secret = std::env::temp_dir().join(common::unique("secret"));
    std::fs::write(&secret, "bob's secret").expect("secret");
    let put = h.cli(
        &bob,
        &["fs", "put", &secret.display().to_string(), "secret.txt"],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let _ = std::fs::remove_file(&secret);

    let bobs = h.submit(
        &bob,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app("sleepy.py"),
            "120",
            "1",
        ],
    );
    h.wait_state(&bob, bobs, "running", MIN);
    // Bob's python process, as the host sees it.
    let deadline = std::time::Instant::now() + MIN;
    let bob_pid = loop {
        let out = Command::new("pgrep")
            .args(["-U", &bob.uid.to_string(), "-f", "sleepy.py 120"])
            .output()
            .expect("pgrep");
        if let Some(p) = text(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        {
            if h.logs(&bob, bobs).contains("line 00000") {
                break p;
            }
        }
        assert!(std::time::Instant::now() < deadline, "bob's job never ran");
        std::thread::sleep(Duration::from_millis(200));
    };

    let bob_ws = h.workspace(&bob).display().to_string();
    let data = h.data_dir.display().to_string();
    let snoop = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app("snoop.py"),
            &bob_ws,
            &bob_pid.to_string(),
            &data,
        ],
    );
    let job = h.wait_job(&alice, snoop, 2 * MIN);
    let log = h.logs(&alice, snoop);
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    assert!(log.contains("snoop done"), "{log}");
    assert!(!log.contains("LEAKED"), "{log}");
    for attempt in [
        "read bob's secret",
        "list bob's workspace",
        "signal bob's process",
        "see bob's process",
        "read hearth's database",
        "list hearth's data dir",
        "list other workspaces",
        "list other jobs",
        "read another job's /tmp",
        "read /etc/shadow",
        "write outside the workspace",
    ] {
        assert!(
            log.contains(&format!("REFUSED {attempt}")),
            "{attempt}:\n{log}"
        );
    }
    assert!(log.contains(&format!("uid={} ", alice.uid)), "{log}");
    assert!(
        log.contains("CapEff:\t0000000000000000") || log.contains("CapEff: 0000000000000000"),
        "{log}"
    );
    assert!(
        log.contains("NoNewPrivs:\t1") || log.contains("NoNewPrivs: 1"),
        "{log}"
    );
    // Bob's process is alive and well; Alice's /tmp was her own.
    assert!(std::path::Path::new(&format!("/proc/{bob_pid}")).exists());
    assert!(!std::path::Path::new("/tmp/alice-was-here").exists());

    // Through the API, Bob's things do not exist for Alice.
    for (method, path) in [
        ("GET", format!("/api/v1/jobs/{bobs}")),
        ("GET", format!("/api/v1/jobs/{bobs}/logs")),
        ("POST", format!("/api/v1/jobs/{bobs}/cancel")),
    ] {
        let (status, body) = h.api(&alice, method, &path, None);
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _) = h.api(&alice, "GET", "/api/v1/files/../bob/secret.txt", None);
    assert!(status == 400 || status == 404, "{status}");
    let out = h.cli(&alice, &["fs", "get", "../bob/secret.txt", "-"]);
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("bob's secret"));
    // Workspaces are private on disk too.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(h.workspace(&bob))
            .expect("stat")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(owner_uid(&h.workspace(&bob)), bob.uid);

    let out = h.cli(&bob, &["cancel", &bobs.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = h.wait_job(&bob, bobs, MIN);
    assert_eq!(job["state"], "cancelled");
}

#[test]
fn a_job_over_its_memory_limit_is_reported_as_oom_killed() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app("hog.py"),
            "3",
        ],
    );
    let job = h.wait_job(&alice, id, 2 * MIN);
    let log = h.logs(&alice, id);
    assert_eq!(job["state"], "failed", "{job}\n{log}");
    assert_eq!(job["oom_killed"], true, "{job}\n{log}");
    assert!(
        job["reason"].as_str().unwrap_or("").contains("OOM killer"),
        "{job}"
    );
    assert!(!log.contains("allocated without being stopped"), "{log}");
    let show = text(&h.cli(&alice, &["job", "show", &id.to_string()]).stdout);
    assert!(show.contains("OOM killed: yes"), "{show}");
}

#[test]
fn cancel_stops_the_whole_process_tree() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app("forker.py"),
        ],
    );
    let deadline = std::time::Instant::now() + MIN;
    while !h.logs(&alice, id).contains("children started") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            h.logs(&alice, id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The JVM, python and the two escaped sleepers at least.
    assert!(pids_of(alice.uid).len() >= 4, "{:?}", pids_of(alice.uid));
    let out = h.cli(&alice, &["cancel", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = h.wait_job(&alice, id, MIN);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(
        pids_of(alice.uid),
        Vec::<u32>::new(),
        "processes left behind"
    );
    // A failed job keeps its own exit code, and --wait passes it on.
    let out = h.cli(
        &alice,
        &[
            "submit",
            "--wait",
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app("exit3.py"),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn logs_follow_live_and_resume_without_losing_a_line() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app("sleepy.py"),
            "30",
            "0.2",
        ],
    );
    h.wait_state(&alice, id, "running", MIN);
    // Read part of the live stream, then drop the connection.
    let url = format!("{}/api/v1/jobs/{id}/logs?follow=true", h.url);
    let resp = ureq::get(&url)
        .set("Authorization", &format!("Bearer {}", alice.token))
        .call()
        .expect("follow");
    let mut first = vec![0u8; 0];
    let mut reader = resp.into_reader();
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&first).contains("line 00003") {
        let n = std::io::Read::read(&mut reader, &mut buf).expect("read");
        assert!(n > 0, "stream ended early");
        first.extend_from_slice(&buf[..n]);
    }
    drop(reader);
    // Reconnect from where we were: the rest arrives, and the stream ends with the job.
    let url = format!(
        "{}/api/v1/jobs/{id}/logs?follow=true&offset={}",
        h.url,
        first.len()
    );
    let rest = ureq::get(&url)
        .set("Authorization", &format!("Bearer {}", alice.token))
        .call()
        .expect("resume")
        .into_string()
        .expect("body");
    let whole = format!("{}{rest}", String::from_utf8_lossy(&first));
    for i in 0..30 {
        assert_eq!(
            whole.matches(&format!("line {i:05}\n")).count(),
            1,
            "line {i}:\n{whole}"
        );
    }
    assert!(whole.contains("sleepy done"));
    assert_eq!(h.wait_job(&alice, id, MIN)["state"], "succeeded");
    let tail = text(
        &h.cli(&alice, &["logs", &id.to_string(), "--tail", "2"])
            .stdout,
    );
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.ends_with("sleepy done\n"), "{tail}");
    // `logs -f` of a finished job prints everything and returns.
    let all = h.cli(&alice, &["logs", "-f", &id.to_string()]);
    assert!(text(&all.stdout).contains("line 00029"));
}

#[test]
fn a_restart_reattaches_running_jobs_keeps_queued_ones_and_runs_vanished_ones_again() {
    let mut h = Hearth::start_with(&["--cores", "2"]);
    let alice = h.add_user("alice");
    let small = ["--num-executors", "0", "--driver-memory", "512m"];
    let submit = |h: &Hearth, args: &[&str]| {
        let mut all = small.to_vec();
        all.extend_from_slice(args);
        h.submit(&alice, &all)
    };
    let survivor = submit(&h, &[&app("sleepy.py"), "12", "1"]);
    let victim = submit(&h, &[&app("sleepy.py"), "600", "1"]);
    let queued = submit(&h, &[&app("sleepy.py"), "2", "0.1"]);
    h.wait_state(&alice, survivor, "running", MIN);
    h.wait_state(&alice, victim, "running", MIN);
    assert_eq!(
        h.wait_state(&alice, queued, "queued", MIN)["state"],
        "queued"
    );

    h.kill9();
    // While Hearth is down, the victim's processes vanish, shim and all. (Its first
    // attempt's directory on the server's own node.)
    let victim_dir = h.data_dir.join("jobs").join(format!("{victim}-1"));
    let _ = Command::new("pkill")
        .args([
            "-9",
            "-f",
            &format!("internal shim {}", victim_dir.join("task").display()),
        ])
        .output();
    std::thread::sleep(Duration::from_millis(300));
    for pid in pids_of(alice.uid) {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.contains("600") {
            // SAFETY: killing a test process of ours.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    h.boot();
    // The vanished task's network, whose shim could not remove it, went with the restart.
    let victims = common::task_networks_of(&h);
    assert!(
        !victims.iter().any(|t| t.ends_with(&format!("-{victim}-1"))),
        "{victims:?}"
    );

    let job = h.wait_job(&alice, survivor, 2 * MIN);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", h.server_log());
    // Every line once, those printed while Hearth was down included (the shim writes the
    // node's copy of the log, from which the node sends what the job's log lacks), each
    // marked with the node like a joined node's.
    let log = h.logs(&alice, survivor);
    for line in (0..12)
        .map(|i| format!("line {i:05}"))
        .chain(["sleepy done".to_string()])
    {
        assert_eq!(
            log.lines()
                .filter(|l| l.strip_prefix("[local] ") == Some(line.as_str()))
                .count(),
            1,
            "`{line}`:
{log}"
        );
    }
    // The vanished one was lost, with the reason, and runs again (as any lost job does
    // while `--max-retries` allows).
    let deadline = std::time::Instant::now() + MIN;
    let job = loop {
        let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{victim}"), None);
        if job["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["attempts"][0]["outcome"], "lost", "{job}");
    assert!(
        job["attempts"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("restarted"),
        "{job}"
    );
    h.wait_state(&alice, victim, "running", MIN);
    let out = h.cli(&alice, &["cancel", &victim.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let job = h.wait_job(&alice, victim, MIN);
    assert_eq!(job["state"], "cancelled", "{job}");
    let job = h.wait_job(&alice, queued, 2 * MIN);
    assert_eq!(job["state"], "succeeded", "{job}");

    // A clean stop (SIGTERM) stops running jobs and records why.
    let running = submit(&h, &[&app("sleepy.py"), "600", "1"]);
    h.wait_state(&alice, running, "running", MIN);
    assert!(h.stop().success());
    h.boot();
    let job = h.wait_job(&alice, running, MIN);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        job["reason"].as_str().unwrap_or("").contains("shut down"),
        "{job}"
    );
    assert_eq!(pids_of(alice.uid), Vec::<u32>::new());
    // And nothing of their networks: each ended, its shim removed its own.
    assert_eq!(common::task_networks_of(&h), Vec::<String>::new());
    // Logs survive restarts.
    assert!(h.logs(&alice, survivor).contains("sleepy done"));
}

#[test]
fn a_jvm_application_runs_with_its_main_class() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    // Build the jar against the runtime's own Spark jars.
    let work = std::env::temp_dir().join(common::unique("jvm-app"));
    let classes = work.join("classes");
    std::fs::create_dir_all(&classes).expect("dirs");
    let spark_jars = std::fs::read_dir(common::runtime().join("lib"))
        .expect("runtime lib")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/pyspark/jars"))
        .find(|p| p.is_dir())
        .expect("pyspark jars");
    let javac = Command::new("javac")
        .arg("-cp")
        .arg(format!("{}/*", spark_jars.display()))
        .arg("-d")
        .arg(&classes)
        .arg(apps().join("jvm/WordLengths.java"))
        .output()
        .expect("javac");
    assert!(javac.status.success(), "{}", text(&javac.stderr));
    let jar = work.join("wordlengths.jar");
    let out = Command::new("jar")
        .arg("cf")
        .arg(&jar)
        .arg("-C")
        .arg(&classes)
        .arg(".")
        .output()
        .expect("jar");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = h.cli(
        &alice,
        &[
            "submit",
            "--wait",
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            "--class",
            "org.example.WordLengths",
            &jar.display().to_string(),
            "100",
        ],
    );
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let jobs: serde_json::Value =
        serde_json::from_slice(&h.cli(&alice, &["jobs", "-o", "json"]).stdout).expect("json");
    let id = jobs[0]["id"].as_u64().expect("id");
    assert!(
        h.logs(&alice, id).contains("jvm app: n=100 sum=4950"),
        "{}",
        h.logs(&alice, id)
    );
}
