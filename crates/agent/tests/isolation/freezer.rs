//! Stopping never leaves a task's cgroup frozen or behind: not when it was left frozen by a
//! process that died in the middle of a stop, not when the stop races the task's own end,
//! not when the shim was killed; and the start-up sweep cleans what a crash left.

use crate::common::{eventually, is_gone, needs_isolation, process_identity, shim, task_pids, Env};
use hearth_agent::cgroup::{Limits, TaskCgroup};
use hearth_agent::sandbox::{stop, sweep_stale_tasks, Task, TaskSpec};
use std::path::PathBuf;
use std::time::Duration;

/// Every directory named `id` in Hearth's folder of any cgroup hierarchy on this machine.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return vec![];
    };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    // On a v2-only machine the mount itself is the hierarchy.
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
        .into_iter()
        .map(|root| root.join("hearth").join(id))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Whether any of the cgroups of `id` is frozen or freezing.
fn is_frozen(id: &str) -> bool {
    cgroup_dirs(id).iter().any(|dir| {
        let v1 = std::fs::read_to_string(dir.join("freezer.state"))
            .map(|s| s.trim() != "THAWED")
            .unwrap_or(false);
        let v2 = std::fs::read_to_string(dir.join("cgroup.freeze"))
            .map(|s| s.trim() == "1")
            .unwrap_or(false);
        v1 || v2
    })
}

/// Freezes the task's cgroup and "dies" before thawing it, as a Hearth killed in the middle
/// of a stop would.
fn leave_frozen(id: &str) {
    let cgroup = TaskCgroup::open(id).expect("the task's cgroup");
    let frozen = cgroup.freeze().expect("a freezer");
    std::mem::forget(frozen);
    assert!(cgroup.freeze_requested());
}

async fn launch(spec: &TaskSpec) -> Task {
    let task = Task::launch(spec, &shim()).await.expect("launch");
    // The command runs (not just bwrap) once its process shows in the cgroup.
    let comm = spec.argv[0]
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        eventually(Duration::from_secs(10), || !task_pids(spec, &comm)
            .is_empty())
        .await,
        "{comm} did not start"
    );
    task
}

#[tokio::test]
async fn a_task_stopped_while_its_cgroup_is_frozen_ends_thawed_and_removed() {
    needs_isolation!();
    let mut env = Env::new("frozenstop");
    let alice = env.user("alice");
    let spec = env.spec(&alice, &["sleep", "600"]);
    let mut task = launch(&spec).await;
    let cgroup = TaskCgroup::open(&spec.id).expect("cgroup");
    let shim_pid = task.shim_pid().expect("shim pid");
    assert!(
        !cgroup.pids().expect("pids").contains(&shim_pid),
        "the shim is in its task's cgroup"
    );
    leave_frozen(&spec.id);
    stop(&spec.dir, Duration::from_secs(5)).await;
    let exit = tokio::time::timeout(Duration::from_secs(20), task.wait())
        .await
        .expect("the task ended");
    assert_eq!(exit.signal, Some(libc::SIGTERM), "{exit:?}");
    assert!(!is_frozen(&spec.id));
    assert_eq!(cgroup_dirs(&spec.id), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn the_shim_thaws_a_cgroup_left_frozen() {
    needs_isolation!();
    let mut env = Env::new("frozenwatch");
    let alice = env.user("alice");
    let spec = env.spec(&alice, &["sleep", "600"]);
    let mut task = launch(&spec).await;
    leave_frozen(&spec.id);
    assert!(
        eventually(Duration::from_secs(15), || !is_frozen(&spec.id)).await,
        "still frozen"
    );
    stop(&spec.dir, Duration::from_secs(5)).await;
    let exit = task.wait().await;
    assert_eq!(exit.signal, Some(libc::SIGTERM), "{exit:?}");
    assert_eq!(cgroup_dirs(&spec.id), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_shim_told_to_end_stops_its_frozen_task_records_the_end_and_cleans_up() {
    needs_isolation!();
    let mut env = Env::new("shimterm");
    let alice = env.user("alice");
    let spec = env.spec(&alice, &["sleep", "600"]);
    let mut task = launch(&spec).await;
    let sleeper = process_identity(task_pids(&spec, "sleep")[0]).expect("sleep");
    leave_frozen(&spec.id);
    let shim_pid = task.shim_pid().expect("shim pid");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(shim_pid as i32, libc::SIGTERM) };
    let exit = tokio::time::timeout(Duration::from_secs(20), task.wait())
        .await
        .expect("the task ended");
    assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
    assert!(is_gone(&sleeper));
    assert_eq!(cgroup_dirs(&spec.id), Vec::<PathBuf>::new());
}

/// How a task of the crowd below ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Ends on SIGTERM within the grace time.
    Term,
    /// Ignores SIGTERM: killed after the grace time.
    Kill,
    /// Ends by itself about when it is stopped.
    Race,
    /// Its shim is SIGKILLed first.
    ShimKilled,
    /// Its cgroup was left frozen by someone else first.
    LeftFrozen,
    /// Its cgroup was left frozen, then its shim SIGKILLed: frozen (v1) processes cannot
    /// act on the SIGKILL their parent's death sends them until thawed.
    ShimKilledFrozen,
}

#[tokio::test]
async fn stopping_a_crowd_of_tasks_every_way_leaves_no_cgroup_behind() {
    needs_isolation!();
    let mut env = Env::new("crowd");
    let alice = env.user("alice");
    let endings = [
        Ending::Term,
        Ending::Kill,
        Ending::Race,
        Ending::ShimKilled,
        Ending::LeftFrozen,
        Ending::ShimKilledFrozen,
    ];
    let tasks: Vec<(Ending, TaskSpec)> = (0..30)
        .map(|i| {
            let ending = endings[i % endings.len()];
            let argv: &[&str] = match ending {
                Ending::Kill => &["/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
                Ending::Race => &["/bin/sh", "-c", "sleep 0.5"],
                _ => &["sleep", "600"],
            };
            let mut spec = env.spec(&alice, argv);
            spec.memory_limit_mib = 64;
            (ending, spec)
        })
        .collect();
    let mut runs = tokio::task::JoinSet::new();
    for (i, (ending, spec)) in tasks.iter().cloned().enumerate() {
        runs.spawn(async move {
            let mut task = Task::launch(&spec, &shim()).await.expect("launch");
            match ending {
                Ending::Race => {
                    // Around the moment the task ends by itself (0.5 s after its start).
                    let ms = 350 + 40 * (i as u64 % 8);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                _ => {
                    // Also where the shell ignoring SIGTERM has set its trap already.
                    assert!(
                        eventually(Duration::from_secs(20), || !task_pids(&spec, "sleep")
                            .is_empty())
                        .await,
                        "task {i} did not start"
                    );
                }
            }
            if matches!(ending, Ending::ShimKilledFrozen) {
                leave_frozen(&spec.id);
            }
            match ending {
                Ending::ShimKilled | Ending::ShimKilledFrozen => {
                    let pid = task.shim_pid().expect("shim pid");
                    // SAFETY: kill has no memory effects.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                Ending::LeftFrozen => leave_frozen(&spec.id),
                _ => {}
            }
            let grace = match ending {
                Ending::Kill => Duration::from_millis(300),
                _ => Duration::from_secs(5),
            };
            stop(&spec.dir, grace).await;
            if matches!(ending, Ending::ShimKilled | Ending::ShimKilledFrozen) {
                // Nobody waited for this task: stop alone must have cleaned up.
                assert_eq!(
                    cgroup_dirs(&spec.id),
                    Vec::<PathBuf>::new(),
                    "task {i}: stop left the cgroup of a task whose shim was killed"
                );
            }
            let exit = tokio::time::timeout(Duration::from_secs(30), task.wait())
                .await
                .expect("the task ended");
            (i, ending, exit)
        });
    }
    while let Some(run) = runs.join_next().await {
        let (i, ending, exit) = run.expect("a task's run");
        match ending {
            Ending::Term | Ending::LeftFrozen => {
                assert_eq!(exit.signal, Some(libc::SIGTERM), "task {i}: {exit:?}")
            }
            Ending::Kill => assert_eq!(exit.signal, Some(libc::SIGKILL), "task {i}: {exit:?}"),
            Ending::Race => assert!(
                exit.code == Some(0) || exit.signal == Some(libc::SIGTERM),
                "task {i}: {exit:?}"
            ),
            Ending::ShimKilled | Ending::ShimKilledFrozen => {
                assert_eq!(exit.code, None, "task {i}: {exit:?}")
            }
        }
    }
    for (ending, spec) in &tasks {
        assert!(!is_frozen(&spec.id), "{ending:?} {} frozen", spec.id);
        assert_eq!(
            cgroup_dirs(&spec.id),
            Vec::<PathBuf>::new(),
            "{ending:?} {} left behind",
            spec.id
        );
    }
}

#[tokio::test]
async fn the_sweep_removes_frozen_and_empty_leftovers_and_leaves_live_tasks_alone() {
    needs_isolation!();
    let mut env = Env::new("sweep");
    let alice = env.user("alice");
    let live = env.spec(&alice, &["sleep", "600"]);
    let mut task = launch(&live).await;
    let sleeper = process_identity(task_pids(&live, "sleep")[0]).expect("sleep");
    // A live task's cgroup frozen at the moment of the sweep (in the middle of a stop) is
    // its own business too.
    let frozen_live = env.spec(&alice, &["sleep", "600"]);
    let mut frozen_task = launch(&frozen_live).await;

    // Left by a crash: a frozen cgroup holding a process, and an empty one.
    let stuck_id = crate::common::unique("leftover-job-1");
    let stuck_cgroup = TaskCgroup::create(&stuck_id, &Limits::default()).expect("create");
    let mut stuck = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    stuck_cgroup.add_pid(stuck.id()).expect("add");
    leave_frozen(&stuck_id);
    let empty_id = crate::common::unique("leftover-engine-2");
    TaskCgroup::create(&empty_id, &Limits::default()).expect("create");

    let frozen_live_cgroup = TaskCgroup::open(&frozen_live.id).expect("cgroup");
    let freeze = frozen_live_cgroup.freeze().expect("freezer");
    let sweep = tokio::task::spawn_blocking(sweep_stale_tasks)
        .await
        .expect("sweep");
    drop(freeze);

    for id in [&stuck_id, &empty_id] {
        assert!(
            !sweep.failed.iter().any(|(failed, _)| failed == id),
            "{sweep:?}"
        );
        assert_eq!(cgroup_dirs(id), Vec::<PathBuf>::new(), "{id} left behind");
    }
    let status = stuck.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(sweep.live >= 2, "{sweep:?}");
    for spec in [&live, &frozen_live] {
        assert!(!sweep.removed.contains(&spec.id), "{sweep:?}");
        assert!(TaskCgroup::open(&spec.id).is_some());
    }
    assert!(!is_gone(&sleeper), "the sweep killed a live task");
    assert!(!is_frozen(&live.id));

    for (spec, task) in [(&live, &mut task), (&frozen_live, &mut frozen_task)] {
        stop(&spec.dir, Duration::from_secs(5)).await;
        let exit = task.wait().await;
        assert_eq!(exit.signal, Some(libc::SIGTERM), "{exit:?}");
        assert_eq!(cgroup_dirs(&spec.id), Vec::<PathBuf>::new());
    }
}
