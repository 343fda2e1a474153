//! A throwaway Hearth layout per test: a root folder under /tmp with a data dir (hidden from
//! tasks), workspaces, private /tmp folders, task dirs and logs, and Linux users that are
//! removed again when the test ends, however it ends.

use hearth_agent::cgroup::TaskCgroup;
use hearth_agent::sandbox::{self, ShimCommand, Task, TaskExit, TaskSpec};
use hearth_agent::users::{self, UidRange};
use hearth_agent::LinuxUser;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Away from the server's tests, which allocate from the default range's start.
pub const UIDS: UidRange = UidRange {
    first: 290_000,
    last: 299_999,
};

/// Whether this machine can run the isolation tests; says why not otherwise.
pub fn can_isolate() -> bool {
    let isolation = sandbox::probe();
    if !isolation.enabled {
        eprintln!("skipped: isolation unavailable: {:?}", isolation.problems);
    }
    isolation.enabled
}

macro_rules! needs_isolation {
    () => {
        if !crate::common::can_isolate() {
            return;
        }
    };
}
pub(crate) use needs_isolation;

pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{name}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn shim() -> ShimCommand {
    ShimCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_hearth-agent-shim")),
        args: vec![],
    }
}

pub struct Env {
    pub root: PathBuf,
    /// Hearth's data dir: hidden from tasks, except each task's own workspace.
    pub data: PathBuf,
    users: Vec<LinuxUser>,
    tasks: Mutex<Vec<String>>,
}

impl Env {
    pub fn new(test: &str) -> Env {
        Env::new_in(Path::new("/tmp"), test)
    }

    /// Under `base`: the sandbox's /tmp is the user's own, so whatever lives under the host's
    /// /tmp is out of a task's sight anyway, hidden or not.
    pub fn new_in(base: &Path, test: &str) -> Env {
        let root = base.join(unique(&format!("hearth-agent-{test}")));
        let data = root.join("data");
        for dir in [&root, &data] {
            std::fs::create_dir_all(dir).expect("create test dir");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .expect("chmod test dir");
        }
        for sub in ["ws", "tmp", "tasks", "logs"] {
            std::fs::create_dir_all(data.join(sub)).expect("create test dir");
        }
        Env {
            root,
            data,
            users: Vec::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// A Linux user with a workspace and a private /tmp folder.
    pub fn user(&mut self, name: &str) -> LinuxUser {
        let home = self.data.join("ws").join(name);
        let user = users::create_user(name, &home, UIDS).expect("create user");
        self.users.push(user.clone());
        let tmp = self.tmp_dir(&user);
        std::fs::create_dir_all(&tmp).expect("create tmp dir");
        std::os::unix::fs::chown(&tmp, Some(user.uid), Some(user.gid)).expect("chown tmp");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        user
    }

    pub fn tmp_dir(&self, user: &LinuxUser) -> PathBuf {
        self.data.join("tmp").join(&user.name)
    }

    pub fn spec(&self, user: &LinuxUser, argv: &[&str]) -> TaskSpec {
        let id = unique("task");
        self.tasks.lock().expect("tasks").push(id.clone());
        TaskSpec {
            dir: self.data.join("tasks").join(&id),
            log_path: self.data.join("logs").join(format!("{id}.log")),
            id,
            user: user.clone(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), user.home.display().to_string()),
                ("USER".into(), user.name.clone()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            cwd: user.home.clone(),
            rw_paths: vec![user.home.clone()],
            ro_paths: vec![],
            hidden_paths: vec![self.data.clone()],
            tmp_dir: self.tmp_dir(user),
            memory_limit_mib: 256,
            cpu_cores: 1,
            pids_max: 200,
            network: None,
        }
    }

    /// Runs a task to its end: how it ended and what it printed.
    pub async fn run(&self, spec: &TaskSpec) -> (TaskExit, String) {
        let mut task = Task::launch(spec, &shim()).await.expect("launch");
        let exit = tokio::time::timeout(Duration::from_secs(60), task.wait())
            .await
            .expect("task ended within 60 s");
        (exit, log(spec))
    }
}

pub fn log(spec: &TaskSpec) -> String {
    std::fs::read_to_string(&spec.log_path).unwrap_or_default()
}

/// Host pids of a running task's processes whose command name is `comm`.
pub fn task_pids(spec: &TaskSpec, comm: &str) -> Vec<u32> {
    let Some(cgroup) = TaskCgroup::open(&spec.id) else {
        return vec![];
    };
    cgroup
        .pids()
        .unwrap_or_default()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == comm)
                .unwrap_or(false)
        })
        .collect()
}

/// Waits until `check` holds, for at most `timeout`.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// A process identity that survives pid reuse: pid plus start time.
pub fn process_identity(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some((pid, rest.split_whitespace().nth(19)?.to_string()))
}

pub fn is_gone(identity: &(u32, String)) -> bool {
    process_identity(identity.0).as_ref() != Some(identity)
}

impl Drop for Env {
    fn drop(&mut self) {
        // A failed test may leave tasks running; their users could not be removed.
        let ids = self.tasks.lock().map(|t| t.clone()).unwrap_or_default();
        for id in ids {
            if let Some(cgroup) = TaskCgroup::open(&id) {
                let _ = cgroup.kill_all();
                std::thread::sleep(Duration::from_millis(100));
                let _ = cgroup.remove();
            }
        }
        for user in &self.users {
            if let Err(e) = users::remove_user(user) {
                eprintln!("cleanup: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn path_str(path: &Path) -> String {
    path.display().to_string()
}
