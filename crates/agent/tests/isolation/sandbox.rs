use crate::common::{
    eventually, is_gone, log, needs_isolation, path_str, process_identity, shim, task_pids, Env,
};
use hearth_agent::cgroup::TaskCgroup;
use hearth_agent::sandbox::{stop, Task};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_task_runs_as_the_users_uid_without_any_capability() {
    needs_isolation!();
    let mut env = Env::new("uid");
    let alice = env.user("alice");
    let spec = env.spec(
        &alice,
        &[
            "/bin/sh",
            "-c",
            "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); \
             grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status",
        ],
    );
    let (exit, log) = env.run(&spec).await;
    assert_eq!(exit.code, Some(0), "{log}");
    let who = format!("uid={0} gid={0} groups={0}", alice.uid);
    assert!(log.contains(&who), "expected {who:?} in:\n{log}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = log
            .lines()
            .find(|l| l.starts_with(cap))
            .unwrap_or_else(|| panic!("no {cap} in:\n{log}"));
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(log.lines().any(|l| l == "NoNewPrivs:\t1"), "{log}");
}

#[tokio::test]
async fn a_tasks_output_and_errors_land_in_its_private_log() {
    needs_isolation!();
    let mut env = Env::new("log");
    let alice = env.user("alice");
    let spec = env.spec(
        &alice,
        &[
            "/bin/sh",
            "-c",
            "echo to stdout; echo to stderr >&2; exit 3",
        ],
    );
    let (exit, log) = env.run(&spec).await;
    assert_eq!(
        (exit.code, exit.signal, exit.oom_killed),
        (Some(3), None, false)
    );
    assert!(
        log.contains("to stdout\n") && log.contains("to stderr\n"),
        "{log}"
    );
    let meta = std::fs::metadata(&spec.log_path).expect("log");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    let dir = std::fs::metadata(&spec.dir).expect("task dir");
    assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o700));
}

#[tokio::test]
async fn a_task_sees_exactly_the_environment_it_was_given() {
    needs_isolation!();
    let mut env = Env::new("env");
    let alice = env.user("alice");
    let mut spec = env.spec(&alice, &["env"]);
    spec.env
        .push(("SPARK_HOME".into(), "/opt/spark with space".into()));
    let (exit, log) = env.run(&spec).await;
    assert_eq!(exit.code, Some(0), "{log}");
    let mut seen: Vec<&str> = log.lines().collect();
    seen.sort_unstable();
    let mut expected: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_task_sees_only_its_own_processes() {
    needs_isolation!();
    let mut env = Env::new("pidns");
    let alice = env.user("alice");
    let spec = env.spec(
        &alice,
        &[
            "/bin/sh",
            "-c",
            "for p in /proc/[0-9]*; do echo \"$p\"; done",
        ],
    );
    let (exit, log) = env.run(&spec).await;
    assert_eq!(exit.code, Some(0), "{log}");
    let pids: Vec<&str> = log.lines().collect();
    // bwrap's init and the shell itself.
    assert_eq!(pids, ["/proc/1", "/proc/2"], "{log}");
}

#[tokio::test]
async fn tmp_is_private_to_each_user() {
    needs_isolation!();
    let mut env = Env::new("tmp");
    let alice = env.user("alice");
    let bob = env.user("bob");
    let write = env.spec(&alice, &["/bin/sh", "-c", "echo secret > /tmp/alice-note"]);
    let (exit, log) = env.run(&write).await;
    assert_eq!(exit.code, Some(0), "{log}");
    let note = env.tmp_dir(&alice).join("alice-note");
    assert_eq!(std::fs::metadata(&note).expect("note").uid(), alice.uid);

    let read = env.spec(&bob, &["/bin/sh", "-c", "cat /tmp/alice-note"]);
    let (exit, log) = env.run(&read).await;
    assert_ne!(exit.code, Some(0));
    assert!(log.contains("No such file or directory"), "{log}");
    assert!(!log.contains("secret"), "{log}");
}

#[tokio::test]
async fn bob_cannot_read_alices_workspace() {
    needs_isolation!();
    // Out of /tmp: under it, alice's workspace would be out of bob's sight anyway.
    let mut env = Env::new_in(std::path::Path::new("/var/tmp"), "ws");
    let alice = env.user("alice");
    let bob = env.user("bob");
    std::fs::write(alice.home.join("secret.txt"), "alice's secret").expect("write");
    let mut spec = env.spec(
        &bob,
        &[
            "/bin/sh",
            "-c",
            &format!("cat {0}/secret.txt; ls {0}", path_str(&alice.home)),
        ],
    );
    // Not hidden here, so that only the uids and the workspace's mode protect it.
    spec.hidden_paths.clear();
    let (exit, log) = env.run(&spec).await;
    assert_ne!(exit.code, Some(0));
    assert!(!log.contains("alice's secret"), "{log}");
    assert_eq!(log.matches("Permission denied").count(), 2, "{log}");
}

#[tokio::test]
async fn bob_cannot_signal_alices_task() {
    needs_isolation!();
    let mut env = Env::new("signal");
    let alice = env.user("alice");
    let bob = env.user("bob");
    let sleeper = env.spec(&alice, &["sleep", "60"]);
    let mut alices = Task::launch(&sleeper, &shim()).await.expect("launch");
    let mut pids = vec![];
    assert!(
        eventually(Duration::from_secs(5), || {
            pids = task_pids(&sleeper, "sleep");
            !pids.is_empty()
        })
        .await
    );
    let target = pids[0];
    let spec = env.spec(
        &bob,
        &["/bin/sh", "-c", &format!("kill -0 {target}; echo rc=$?")],
    );
    let (exit, log) = env.run(&spec).await;
    assert_eq!(exit.code, Some(0), "{log}");
    assert!(log.contains("rc=1"), "{log}");
    assert!(process_identity(target).is_some(), "alice's task died");
    stop(&sleeper.dir, Duration::from_secs(5)).await;
    alices.wait().await;
}

#[tokio::test]
async fn hidden_paths_are_empty() {
    needs_isolation!();
    let mut env = Env::new_in(std::path::Path::new("/var/tmp"), "hidden");
    let alice = env.user("alice");
    let secret = env.root.join("secret");
    std::fs::create_dir_all(&secret).expect("mkdir");
    std::fs::write(secret.join("file.txt"), "hidden").expect("write");
    std::fs::set_permissions(
        secret.join("file.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let mut spec = env.spec(
        &alice,
        &[
            "/bin/sh",
            "-c",
            &format!(
                "echo secret:$(ls -A {} | wc -l); echo data:$(ls -A {}); echo ws:$(ls -A {})",
                path_str(&secret),
                path_str(&env.data),
                path_str(&alice.home),
            ),
        ],
    );
    spec.hidden_paths.push(secret.clone());
    std::fs::write(alice.home.join("mine.txt"), "").expect("write");
    let (exit, log) = env.run(&spec).await;
    assert_eq!(exit.code, Some(0), "{log}");
    assert!(log.contains("secret:0\n"), "{log}");
    // Only the way down to the workspace, which is bound again on top.
    assert!(log.contains("data:ws\n"), "{log}");
    assert!(log.contains("ws:mine.txt\n"), "{log}");
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_reported_as_an_oom_kill() {
    needs_isolation!();
    let mut env = Env::new("oom");
    let alice = env.user("alice");
    let mut spec = env.spec(
        &alice,
        &[
            "/usr/bin/python3",
            "-c",
            "b = b'x' * (300 << 20); print('survived', len(b))",
        ],
    );
    spec.memory_limit_mib = 100;
    let (exit, log) = env.run(&spec).await;
    assert!(exit.oom_killed, "{exit:?} {log}");
    assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
    assert!(!log.contains("survived"), "{log}");
}

#[tokio::test]
async fn stop_lets_a_task_end_on_sigterm_within_the_grace_time() {
    needs_isolation!();
    let mut env = Env::new("term");
    let alice = env.user("alice");
    let spec = env.spec(&alice, &["sleep", "600"]);
    let mut task = Task::launch(&spec, &shim()).await.expect("launch");
    let started = Instant::now();
    stop(&spec.dir, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the grace time"
    );
    let exit = task.wait().await;
    assert_eq!(
        (exit.code, exit.signal),
        (None, Some(libc::SIGTERM)),
        "{exit:?}"
    );
}

#[tokio::test]
async fn stop_kills_the_whole_tree_including_a_double_forked_child_that_ignores_sigterm() {
    needs_isolation!();
    let mut env = Env::new("stop");
    let alice = env.user("alice");
    let spec = env.spec(
        &alice,
        &[
            "/bin/sh",
            "-c",
            "( sh -c 'trap \"\" TERM; while :; do sleep 1; done' & ); trap '' TERM; \
             while :; do sleep 1; done",
        ],
    );
    let mut task = Task::launch(&spec, &shim()).await.expect("launch");
    let cgroup = TaskCgroup::open(&spec.id).expect("the task's cgroup");
    // bwrap, its init, the main shell, the orphaned shell, and a sleep under each shell.
    assert!(
        eventually(Duration::from_secs(5), || cgroup
            .pids()
            .map(|p| p.len() >= 6)
            .unwrap_or(false))
        .await,
        "{:?}",
        cgroup.pids()
    );
    let processes: Vec<_> = cgroup
        .pids()
        .expect("pids")
        .into_iter()
        .filter_map(process_identity)
        .collect();
    let started = Instant::now();
    stop(&spec.dir, Duration::from_millis(500)).await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    let exit = task.wait().await;
    assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
    assert!(!exit.oom_killed);
    let left: Vec<_> = processes
        .iter()
        .filter(|p| !is_gone(p))
        .map(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "still running: {left:#?}");
    assert!(TaskCgroup::open(&spec.id).is_none(), "cgroup left behind");
}

#[tokio::test]
async fn stopping_a_task_that_ended_leaves_its_exit_alone() {
    needs_isolation!();
    let mut env = Env::new("stopped");
    let alice = env.user("alice");
    let spec = env.spec(&alice, &["true"]);
    let (exit, _) = env.run(&spec).await;
    stop(&spec.dir, Duration::from_secs(1)).await;
    let again = Task::reattach(&spec.dir)
        .expect("reattach")
        .expect("a finished task")
        .wait()
        .await;
    assert_eq!(again, exit);
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn a_task_survives_dropping_its_handle_and_reattach_gets_its_exit() {
    needs_isolation!();
    let mut env = Env::new("reattach");
    let alice = env.user("alice");
    let spec = env.spec(&alice, &["/bin/sh", "-c", "sleep 1; echo done; exit 3"]);
    let task = Task::launch(&spec, &shim()).await.expect("launch");
    let pid = task.pid().expect("pid");
    drop(task);
    let mut task = Task::reattach(&spec.dir)
        .expect("reattach")
        .expect("a running task");
    assert_eq!(task.pid(), Some(pid));
    let exit = task.wait().await;
    assert_eq!((exit.code, exit.signal), (Some(3), None));
    assert!(log(&spec).contains("done"));
    // And once more after the end: the recorded exit, at once.
    let mut task = Task::reattach(&spec.dir).expect("reattach").expect("ended");
    let again = tokio::time::timeout(Duration::from_millis(50), task.wait())
        .await
        .expect("immediate");
    assert_eq!(again, exit);
}

#[tokio::test]
async fn reattach_reports_a_task_whose_shim_is_gone_as_lost() {
    needs_isolation!();
    let mut env = Env::new("lost");
    let alice = env.user("alice");
    let spec = env.spec(&alice, &["sleep", "600"]);
    let task = Task::launch(&spec, &shim()).await.expect("launch");
    let shim_pid = task.shim_pid().expect("shim pid");
    let sleeper = process_identity(task_pids(&spec, "sleep")[0]).expect("sleep");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(shim_pid as i32, libc::SIGKILL) };
    drop(task);
    assert!(
        eventually(Duration::from_secs(5), || is_gone(&sleeper)).await,
        "the task outlived its shim"
    );
    assert!(Task::reattach(&spec.dir).expect("reattach").is_none());
    assert!(TaskCgroup::open(&spec.id).is_none(), "cgroup left behind");
    assert!(Task::reattach(&env.root.join("no-such-task"))
        .expect("reattach")
        .is_none());
}

#[tokio::test]
async fn launch_says_precisely_why_a_task_could_not_start() {
    needs_isolation!();
    let mut env = Env::new("errors");
    let alice = env.user("alice");

    let spec = env.spec(&alice, &["no-such-command-hearth"]);
    let err = Task::launch(&spec, &shim()).await.expect_err("an error");
    assert_eq!(err.to_string(), "command not found: no-such-command-hearth");

    let script = alice.home.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    std::os::unix::fs::chown(&script, Some(alice.uid), Some(alice.gid)).expect("chown");
    let spec = env.spec(&alice, &[&path_str(&script)]);
    let err = Task::launch(&spec, &shim()).await.expect_err("an error");
    assert_eq!(
        err.to_string(),
        format!(
            "permission denied: uid {} cannot execute {}",
            alice.uid,
            script.display()
        )
    );

    let mut spec = env.spec(&alice, &["true"]);
    spec.cwd = alice.home.join("missing");
    let err = Task::launch(&spec, &shim()).await.expect_err("an error");
    assert!(
        err.to_string().starts_with("bwrap: Can't chdir to"),
        "{err}"
    );

    let mut spec = env.spec(&alice, &["true"]);
    spec.log_path = env.root.join("no-such-dir").join("task.log");
    let err = Task::launch(&spec, &shim()).await.expect_err("an error");
    assert!(err.to_string().starts_with("opening the task log"), "{err}");
}

#[tokio::test]
async fn java_and_python_run_in_the_sandbox() {
    needs_isolation!();
    if !std::path::Path::new("/usr/bin/java").exists() {
        eprintln!("skipped: no /usr/bin/java");
        return;
    }
    let mut env = Env::new("runtimes");
    let alice = env.user("alice");
    let mut spec = env.spec(
        &alice,
        &[
            "/bin/sh",
            "-c",
            "java -version 2>&1 | head -1; \
             /usr/bin/python3 -c 'import multiprocessing as m; m.Lock(); print(\"python ok\")'",
        ],
    );
    spec.memory_limit_mib = 512;
    let (exit, log) = env.run(&spec).await;
    assert_eq!(exit.code, Some(0), "{log}");
    assert!(
        log.contains("version \"") && log.contains("python ok"),
        "{log}"
    );
}
