//! Tasks the server sends a joined node: fetch the job's files into a content-addressed
//! cache (digests verified), lay out the task's directory, make the user with the server's
//! uid, launch through the sandbox like any local task, stream its output back and report
//! its end. The messages go out through one queue that the connection loop drains.
//! A task is held until the server forgets it: its output is resent from the server's own
//! offset and its end reported again after any reconnect, so a server that restarted or a
//! connection that broke loses neither a line nor an end.

use crate::portguard::PortGuard;
use crate::sandbox::{self, ShimCommand, Task, TaskExit, TaskSpec};
use crate::tunnel::Tunnels;
use crate::{users, LinuxUser};
use hearth_model::cluster::{
    check_file_name, check_sha256, node_workspace, AgentMessage, StartTask, TaskLayout, TaskRef,
    CHUNK_BYTES,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Parts of a file asked for ahead of the one being written.
const FETCH_WINDOW: usize = 8;
/// How long one part of a file may take to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often running tasks' logs are read for new lines.
const TAIL_EVERY: Duration = Duration::from_millis(300);
/// A longer output line is cut (the whole line stays in the node's own copy of the log).
const MAX_LINE: usize = 4096;
/// Log bytes sent in one message: JSON may escape a byte as six, and the message must stay
/// under the frame cap.
const MAX_BATCH: usize = 8 * 1024;
/// Log bytes of one task sent but not yet acknowledged: what bounds the node's memory (and
/// its queue to the server) whatever the task prints and however slow the server is.
const WINDOW: u64 = 256 * 1024;

/// A part of a file as the server sent it.
pub struct Chunk {
    pub data: Result<Vec<u8>, String>,
    pub eof: bool,
}

/// An attempt this node holds: from its start until the server forgets it (its end
/// recorded, or given up on). Its output is the log file on disk; only offsets live here.
struct Held {
    /// The shim's control files.
    task_dir: PathBuf,
    log: PathBuf,
    stopping: bool,
    /// The grace its stop was asked with.
    stop_grace: Duration,
    /// Its shim was launched: a stop goes to its processes. Before that, a stop is only
    /// marked, and the launch honours it (a stop racing the launch is never lost).
    launched: bool,
    /// The server asked for this attempt's output on the current connection.
    resumed: bool,
    /// Where the next batch of the log begins.
    sent: u64,
    /// What the server's log holds.
    acked: u64,
    /// How the process ended, once it did.
    ended: Option<AgentMessage>,
    /// The end went out on the current connection.
    end_sent: bool,
    /// The server wants nothing more of it: dropped once its process is gone.
    forgotten: bool,
    /// The port of its Spark UI, and the uid that must listen on it: on its own loopback
    /// when it has a network of its own, else a guarded port of the machine's.
    ui: Option<(u16, u32)>,
    /// Its own network namespace, and a process in it (what shows its sockets).
    netns: Option<(PathBuf, u32)>,
}

/// Runs the server's tasks on this node.
pub struct Runner {
    data_dir: PathBuf,
    /// Job files by SHA-256 (`ab/abcd...`): the agent's own cache, or for the server's own
    /// machine the server's blob store itself, where every file already is.
    cache_dir: PathBuf,
    /// Whether tasks run under their users' own uids (root, with namespaces and cgroups);
    /// without, as this process's uid, like every other task here.
    isolated: bool,
    shim: ShimCommand,
    /// The Spark runtime, bound read-only into every task.
    runtime_root: Option<PathBuf>,
    /// Loopback ports of tasks' Spark UIs, kept for root (this process) alone; or why they
    /// cannot be kept here (then, isolated, tasks run without a UI).
    ports: Result<Arc<PortGuard>, String>,
    /// The network every task gets of its own; None: tasks share the machine's (only
    /// with `--insecure-shared-network`, or without isolation).
    network: Option<crate::net::TaskNetwork>,
    /// Streams the server opened to tasks' UIs.
    tunnels: Arc<Tunnels>,
    /// Counts connections to the server (one more at each disconnect).
    connection: AtomicU64,
    out: mpsc::UnboundedSender<AgentMessage>,
    fetches: Mutex<HashMap<(String, u64), oneshot::Sender<Chunk>>>,
    held: Mutex<HashMap<TaskRef, Held>>,
    next_tmp: AtomicU64,
}

impl Runner {
    pub fn new(
        data_dir: PathBuf,
        cache_dir: PathBuf,
        isolated: bool,
        shim: ShimCommand,
        runtime_root: Option<PathBuf>,
        ports: Result<Arc<PortGuard>, String>,
        network: Option<crate::net::TaskNetwork>,
    ) -> (Arc<Runner>, mpsc::UnboundedReceiver<AgentMessage>) {
        let (out, rx) = mpsc::unbounded_channel();
        let frames = out.clone();
        let tunnels = Tunnels::new(Box::new(move |f| {
            frames.send(AgentMessage::Tunnel(f)).is_ok()
        }));
        let runner = Arc::new(Runner {
            data_dir,
            cache_dir,
            isolated,
            shim,
            runtime_root,
            ports,
            network,
            tunnels,
            connection: AtomicU64::new(0),
            out,
            fetches: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            next_tmp: AtomicU64::new(1),
        });
        let pump = Arc::downgrade(&runner);
        tokio::spawn(async move {
            while let Some(runner) = pump.upgrade() {
                runner.pump();
                drop(runner);
                tokio::time::sleep(TAIL_EVERY).await;
            }
        });
        (runner, rx)
    }

    fn send(&self, msg: AgentMessage) {
        let _ = self.out.send(msg);
    }

    /// A new connection: what to report first. Nothing goes out for a task until the server
    /// says from where (`Resume`).
    pub fn connected(&self) -> AgentMessage {
        let mut held = lock(&self.held);
        for h in held.values_mut() {
            h.resumed = false;
            h.end_sent = false;
        }
        AgentMessage::Tasks {
            tasks: held.keys().copied().collect(),
        }
    }

    /// The connection broke: send nothing more until the next one asks. Its streams are
    /// gone with it.
    pub fn disconnected(&self) {
        for h in lock(&self.held).values_mut() {
            h.resumed = false;
        }
        // A stream still being opened belongs to the connection that asked: not attached.
        self.connection.fetch_add(1, Ordering::SeqCst);
        self.tunnels.close_all();
    }

    /// The server opens a stream to an attempt's Spark UI (the door reaching it). Only a
    /// port this node guards, with the task's own uid listening on it: never whatever else
    /// took the number.
    pub fn open(self: &Arc<Self>, stream: u64, task: TaskRef) {
        let (ui, netns) = lock(&self.held)
            .get(&task)
            .filter(|h| h.ended.is_none())
            .map(|h| (h.ui, h.netns.clone()))
            .unwrap_or_default();
        let runner = self.clone();
        let asked_on = self.connection.load(Ordering::SeqCst);
        tokio::spawn(async move {
            let connected = match ui {
                None => Err("it runs without a Spark UI here".to_string()),
                Some((port, uid)) => runner.connect_ui(port, uid, netns).await,
            };
            if runner.connection.load(Ordering::SeqCst) != asked_on {
                return; // that connection is gone, and its stream with it
            }
            let error = match connected {
                Ok(socket) => (!runner.tunnels.attach(stream, socket))
                    .then(|| "a stream with that id is open already".to_string()),
                Err(why) => Some(why),
            };
            runner.send(AgentMessage::Opened { stream, error });
        });
    }

    async fn connect_ui(
        &self,
        port: u16,
        uid: u32,
        netns: Option<(PathBuf, u32)>,
    ) -> Result<tokio::net::TcpStream, String> {
        let not_up = || "it is not up yet: try again in a few seconds".to_string();
        let timeout = Duration::from_secs(5);
        let socket = match netns {
            // On the task's own loopback, which only it and Hearth (entering) reach.
            Some((netns, pid)) => {
                if crate::net::listener_uid(pid, port) != Some(uid) {
                    return Err(not_up());
                }
                crate::net::connect(&netns, port, timeout).await
            }
            None => {
                let guarded = !self.isolated || self.ports.as_ref().is_ok_and(|g| g.holds(port));
                if !guarded || crate::portguard::listener_uid(port) != Some(uid) {
                    return Err(not_up());
                }
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(("127.0.0.1", port)))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            }
        }
        .map_err(|e| format!("its web server did not answer: {e}"))?;
        let _ = socket.set_nodelay(true);
        Ok(socket)
    }

    /// Part of a stream the server opened.
    pub fn tunnel(&self, frame: hearth_model::cluster::TunnelFrame) {
        self.tunnels.deliver(frame);
    }

    /// A loopback port for a task's Spark UI: in a task's own network, Spark's usual one;
    /// else one guarded so that only this process reaches it (without isolation every task
    /// is this process's uid: any free port).
    fn reserve_ui_port(&self, own_network: bool) -> Result<u16, String> {
        if own_network {
            return Ok(SPARK_UI_PORT);
        }
        if !self.isolated {
            return Ok(crate::portguard::free_local_port());
        }
        self.ports.as_ref().map_err(Clone::clone)?.reserve()
    }

    fn release_ui_port(&self, port: u16, own_network: bool) {
        if own_network {
            return;
        }
        if let Ok(guard) = &self.ports {
            guard.release(port);
        }
    }

    /// Whether `task` gets a network of its own here (else it shares the machine's).
    fn own_network(&self, task: &StartTask) -> bool {
        self.network.is_some() && !task.shared_network
    }

    /// The server waits for this attempt's output from `offset`.
    pub fn resume(&self, task: TaskRef, offset: u64) {
        if let Some(h) = lock(&self.held).get_mut(&task) {
            h.resumed = true;
            h.sent = offset;
            h.acked = offset;
        }
        self.pump();
    }

    /// The server's log holds the output up to `offset`.
    pub fn logged(&self, task: TaskRef, offset: u64) {
        if let Some(h) = lock(&self.held).get_mut(&task) {
            h.acked = h.acked.max(offset);
            h.sent = h.sent.max(h.acked);
        }
        self.pump();
    }

    /// The server wants nothing more of this attempt: stopped if it runs, then dropped.
    pub fn forget(&self, task: TaskRef, grace: Duration) {
        let mut held = lock(&self.held);
        let Some(h) = held.get_mut(&task) else {
            return;
        };
        h.forgotten = true;
        // So that a restarted agent does not take it back (see `reattach`).
        let layout = TaskLayout::new(&self.data_dir, task.job, task.attempt);
        let _ = std::fs::write(layout.dir.join(FORGOTTEN), b"");
        if h.ended.is_some() {
            held.remove(&task);
        } else if !h.stopping {
            h.stopping = true;
            h.stop_grace = grace;
            if h.launched {
                let dir = h.task_dir.clone();
                tokio::spawn(async move { sandbox::stop(&dir, grace).await });
            }
        }
    }

    /// Sends what each resumed task's log holds beyond what was sent, within the window,
    /// and the end of a task whose whole log the server has.
    fn pump(&self) {
        let work: Vec<(TaskRef, PathBuf, u64, u64, bool)> = lock(&self.held)
            .iter()
            .filter(|(_, h)| h.resumed && !h.forgotten)
            .map(|(k, h)| (*k, h.log.clone(), h.sent, h.acked, h.ended.is_some()))
            .collect();
        for (task, log, mut sent, acked, ended) in work {
            let mut batches = Vec::new();
            while sent.saturating_sub(acked) < WINDOW {
                let Some((lines, next)) = read_batch(&log, sent, ended) else {
                    break;
                };
                batches.push((sent, next, lines));
                sent = next;
            }
            let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let mut held = lock(&self.held);
            let Some(h) = held.get_mut(&task) else {
                continue;
            };
            // A resume or an acknowledgement moved the offsets meanwhile: read again next time.
            if !h.resumed || h.acked != acked || batches.first().is_some_and(|b| b.0 != h.sent) {
                continue;
            }
            for (offset, next, lines) in batches {
                h.sent = next;
                self.send(AgentMessage::Output {
                    job: task.job,
                    attempt: task.attempt,
                    offset,
                    next,
                    lines,
                });
            }
            if h.acked >= len && !h.end_sent {
                if let Some(end) = h.ended.clone() {
                    h.end_sent = true;
                    self.send(end);
                }
            }
        }
    }

    /// After a restart of the agent: takes back every attempt an earlier run of it held
    /// whose shim still runs or whose end is recorded, so that it is reported to the
    /// server (which resumes its output from where its log stands) instead of lost while it
    /// runs on. Attempts the server forgot are left alone.
    pub fn reattach(self: &Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("jobs")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((job, attempt)) = name
                .split_once('-')
                .and_then(|(j, a)| Some((j.parse::<i64>().ok()?, a.parse::<u32>().ok()?)))
            else {
                continue;
            };
            let layout = TaskLayout::new(&self.data_dir, job, attempt);
            if layout.dir.join(FORGOTTEN).exists() {
                continue;
            }
            let mut task = match Task::reattach(&layout.task) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("hearth agent: taking back job {job} (attempt {attempt}): {e}");
                    continue;
                }
            };
            let key = TaskRef { job, attempt };
            // Its UI keeps its port, guarded again (a restart of the guard's owner starts
            // from an empty table) unless it is on the task's own loopback.
            let netns = task.netns().zip(task.pid());
            let ui = read_ui(&layout).filter(|(port, _)| {
                netns.is_some()
                    || !self.isolated
                    || self.ports.as_ref().is_ok_and(|g| g.guard(*port).is_ok())
            });
            lock(&self.held).insert(
                key,
                Held {
                    task_dir: layout.task.clone(),
                    log: layout.log.clone(),
                    stopping: false,
                    stop_grace: Duration::ZERO,
                    resumed: false,
                    sent: 0,
                    acked: 0,
                    ended: None,
                    end_sent: false,
                    forgotten: false,
                    ui,
                    netns,
                    launched: true,
                },
            );
            eprintln!("hearth agent: took back job {job} (attempt {attempt}) from an earlier run");
            let runner = self.clone();
            tokio::spawn(async move {
                let exit = task.wait().await;
                runner.finished(key, &layout, ended(key, Ok(exit)));
            });
        }
    }

    /// Records a held attempt's end (dropping it if the server already forgot it).
    fn finished(&self, key: TaskRef, layout: &TaskLayout, end: AgentMessage) {
        let _ = std::fs::remove_dir_all(&layout.tmp);
        let _ = std::fs::remove_dir_all(&layout.conf);
        let _ = std::fs::remove_file(layout.dir.join(UI_PORT));
        {
            let mut held = lock(&self.held);
            if let Some(h) = held.get_mut(&key) {
                if let Some((port, _)) = h.ui.take() {
                    self.release_ui_port(port, h.netns.is_some());
                }
            }
            match held.get_mut(&key) {
                Some(h) if h.forgotten => {
                    held.remove(&key);
                }
                Some(h) => h.ended = Some(end),
                None => {}
            }
        }
        self.pump();
    }

    /// Hands a part of a file to the fetch waiting for it.
    pub fn deliver(&self, sha256: &str, offset: u64, chunk: Chunk) {
        if let Some(tx) = lock(&self.fetches).remove(&(sha256.to_string(), offset)) {
            let _ = tx.send(chunk);
        }
    }

    /// Stops a task the server no longer wants (cancelled, preempted).
    pub fn stop(&self, job: i64, attempt: u32, grace: Duration) {
        // The server repeats a stop while the task still talks; one is enough.
        let dir = match lock(&self.held).get_mut(&TaskRef { job, attempt }) {
            Some(h) if !h.stopping && h.ended.is_none() => {
                h.stopping = true;
                h.stop_grace = grace;
                // Not launched yet: the launch sees the mark and stops it (see `run`).
                h.launched.then(|| h.task_dir.clone())
            }
            _ => return,
        };
        if let Some(dir) = dir {
            tokio::spawn(async move { sandbox::stop(&dir, grace).await });
        }
    }

    /// Runs a task to its end in the background; held from now until the server forgets it.
    pub fn start(self: &Arc<Self>, task: StartTask) {
        let key = TaskRef {
            job: task.job,
            attempt: task.attempt,
        };
        let layout = TaskLayout::new(&self.data_dir, task.job, task.attempt);
        {
            let mut held = lock(&self.held);
            if held.contains_key(&key) {
                tracing::warn!(job = task.job, "asked to start a job already running here");
                return;
            }
            held.insert(
                key,
                Held {
                    task_dir: layout.task.clone(),
                    log: layout.log.clone(),
                    stopping: false,
                    stop_grace: Duration::ZERO,
                    // The server that sent the task waits for it on this connection.
                    resumed: true,
                    sent: 0,
                    acked: 0,
                    ended: None,
                    end_sent: false,
                    forgotten: false,
                    ui: None,
                    netns: None,
                    launched: false,
                },
            );
        }
        let runner = self.clone();
        tokio::spawn(async move {
            let result = runner.run(task, &layout).await;
            if let Err(why) = &result {
                eprintln!(
                    "hearth agent: job {} (attempt {}) could not start: {why}",
                    key.job, key.attempt
                );
            }
            runner.finished(key, &layout, ended(key, result));
        });
    }

    async fn run(
        self: &Arc<Self>,
        task: StartTask,
        layout: &TaskLayout,
    ) -> Result<TaskExit, String> {
        for f in &task.files {
            check_file_name(&f.name)?;
            check_sha256(&f.sha256)?;
        }
        let home = node_workspace(&self.data_dir, &task.user.name);
        let (name, uid) = (task.user.linux_name.clone(), task.user.uid);
        let isolated = self.isolated;
        let user = tokio::task::spawn_blocking(move || {
            if isolated {
                users::ensure_user(&name, uid, &home).map_err(|e| e.to_string())
            } else {
                // No other uid to run as: the task is this process's, in a workspace of its own.
                std::fs::create_dir_all(&home)
                    .map_err(|e| format!("creating {}: {e}", home.display()))?;
                // SAFETY: geteuid and getegid cannot fail.
                let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
                Ok(LinuxUser {
                    uid,
                    gid,
                    name,
                    home,
                })
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        // Traversable, not listable, like the server's: users reach only their own.
        let _ = std::fs::set_permissions(
            self.data_dir.join("workspaces"),
            std::fs::Permissions::from_mode(0o711),
        );
        mkdir(&layout.files, 0o755, None)?;
        for f in &task.files {
            let cached = self.fetch(&f.sha256).await?;
            let dest = layout.files.join(&f.name);
            // Never trust what an earlier run left: link afresh.
            let _ = std::fs::remove_file(&dest);
            std::fs::hard_link(&cached, &dest)
                .or_else(|_| std::fs::copy(&cached, &dest).map(|_| ()))
                .map_err(|e| format!("placing {}: {e}", f.name))?;
        }
        let owner = self.isolated.then_some((user.uid, user.gid));
        mkdir(&layout.tmp, 0o700, owner)?;
        mkdir(&layout.conf, 0o700, owner)?;
        let key = TaskRef {
            job: task.job,
            attempt: task.attempt,
        };
        let mut properties = task.properties.clone();
        let ui = match &task.ui_base {
            None => None,
            Some(base) => match self.reserve_ui_port(self.own_network(&task)) {
                Ok(port) => {
                    // Held first, so that the task's end gives the port back on every path.
                    if let Some(h) = lock(&self.held).get_mut(&key) {
                        h.ui = Some((port, user.uid));
                    }
                    // Kept beside the task, so that a restarted agent guards it again.
                    std::fs::write(layout.dir.join(UI_PORT), format!("{port} {}", user.uid))
                        .map_err(|e| format!("recording the UI port: {e}"))?;
                    Some((port, base.as_str()))
                }
                Err(why) => {
                    eprintln!(
                        "hearth agent: job {} runs without its Spark UI: {why}",
                        task.job
                    );
                    None
                }
            },
        };
        for (k, v) in hearth_model::cluster::ui_properties(ui) {
            properties.push_str(&format!("{k}={v}\n"));
        }
        write_secret(&layout.properties, &properties, owner)?;
        let spec = self.spec(&task, layout, user);
        // Stopped or forgotten while its files came: there was no process to stop yet, so
        // the stop is honoured here, as if it had run and been stopped.
        if lock(&self.held)
            .get(&key)
            .is_none_or(|h| h.stopping || h.forgotten)
        {
            return Ok(TaskExit {
                code: None,
                signal: Some(libc::SIGTERM),
                oom_killed: false,
                finished_ms: crate::taskdir::now_ms(),
            });
        }
        let mut launched = Task::launch(&spec, &self.shim)
            .await
            .map_err(|e| format!("could not start the job's process: {e}"))?;
        // A stop that came while it launched was only marked: carried out now.
        let stop = lock(&self.held).get_mut(&key).and_then(|h| {
            h.launched = true;
            h.netns = launched.netns().zip(launched.pid());
            (h.stopping || h.forgotten).then_some(h.stop_grace)
        });
        if let Some(grace) = stop {
            let dir = layout.task.clone();
            tokio::spawn(async move { sandbox::stop(&dir, grace).await });
        }
        self.send(AgentMessage::Started {
            job: task.job,
            attempt: task.attempt,
            ui_port: ui.map(|(port, _)| port),
        });
        Ok(launched.wait().await)
    }

    fn spec(&self, task: &StartTask, layout: &TaskLayout, user: LinuxUser) -> TaskSpec {
        let home = user.home.clone();
        let mut ro_paths = vec![layout.files.clone(), layout.conf.clone()];
        ro_paths.extend(self.runtime_root.clone());
        TaskSpec {
            id: task.task_id.clone(),
            dir: layout.task.clone(),
            user,
            argv: task.argv.clone(),
            env: task.env.clone(),
            cwd: home.clone(),
            rw_paths: vec![home],
            ro_paths,
            hidden_paths: vec![self.data_dir.clone()],
            tmp_dir: layout.tmp.clone(),
            log_path: layout.log.clone(),
            memory_limit_mib: task.memory_limit_mib,
            cpu_cores: task.cpu_cores,
            pids_max: task.pids_max,
            network: self
                .network
                .clone()
                .filter(|_| !task.shared_network)
                .map(|mut n| {
                    if let Some(egress) = &task.egress {
                        n.egress = egress.clone();
                    }
                    n
                }),
        }
    }

    /// The cached copy of a file, fetched from the server first if the cache lacks it. The
    /// cache is content-addressed: a file is kept only once its digest checks.
    async fn fetch(&self, sha256: &str) -> Result<PathBuf, String> {
        let path = self.cache_dir.join(&sha256[..2]).join(sha256);
        if path.is_file() {
            return Ok(path);
        }
        let parent = path.parent().unwrap_or(&self.cache_dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| format!("creating the file cache: {e}"))?;
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = parent.join(format!(".{sha256}.{}.{n}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        let result = self.fetch_into(sha256, &mut file).await;
        let done = result.and_then(|digest| {
            if digest != sha256 {
                return Err(format!(
                    "file {sha256} arrived with digest {digest}: refused"
                ));
            }
            file.sync_all().map_err(|e| e.to_string())?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
        });
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done.map(|_| path)
    }

    /// Asks for the file part by part; returns the digest of what arrived.
    async fn fetch_into(&self, sha256: &str, file: &mut std::fs::File) -> Result<String, String> {
        let mut hasher = Sha256::new();
        // Parts are asked for FETCH_WINDOW ahead, so a file costs about one round trip
        // per window rather than per part. Every part but the last is CHUNK_BYTES long, so
        // the offsets of the parts to come are known before they arrive.
        let mut asked: std::collections::VecDeque<(u64, oneshot::Receiver<Chunk>)> =
            Default::default();
        let mut next_ask = 0u64;
        let mut offset = 0u64;
        let result = loop {
            while asked.len() < FETCH_WINDOW {
                let (tx, rx) = oneshot::channel();
                lock(&self.fetches).insert((sha256.to_string(), next_ask), tx);
                self.send(AgentMessage::Fetch {
                    sha256: sha256.to_string(),
                    offset: next_ask,
                });
                asked.push_back((next_ask, rx));
                next_ask += CHUNK_BYTES as u64;
            }
            let Some((at, rx)) = asked.pop_front() else {
                break Err("no part asked for".to_string());
            };
            let chunk = match tokio::time::timeout(FETCH_TIMEOUT, rx).await {
                Ok(Ok(c)) => c,
                _ => {
                    break Err(format!(
                        "file {sha256} did not arrive from the server within {}s",
                        FETCH_TIMEOUT.as_secs()
                    ))
                }
            };
            let data = match chunk.data {
                Ok(d) => d,
                Err(why) => break Err(format!("the server did not send file {sha256}: {why}")),
            };
            if at != offset || (!chunk.eof && data.len() != CHUNK_BYTES) {
                break Err(format!(
                    "the server sent a part of file {sha256} of {} bytes at {at}, expected {CHUNK_BYTES} at {offset}",
                    data.len()
                ));
            }
            hasher.update(&data);
            if let Err(e) = file.write_all(&data) {
                break Err(format!("writing file {sha256} to the cache: {e}"));
            }
            offset += data.len() as u64;
            if chunk.eof {
                break Ok(hex::encode(hasher.finalize()));
            }
        };
        // Parts asked for beyond the end (or after a failure) are no longer awaited.
        let mut fetches = lock(&self.fetches);
        for (at, _) in asked {
            fetches.remove(&(sha256.to_string(), at));
        }
        result
    }
}

/// A Spark UI's port in a task's own network: nothing else there can hold it.
const SPARK_UI_PORT: u16 = 4040;

/// In an attempt's directory: the server forgot it (a restarted agent leaves it alone).
const FORGOTTEN: &str = "forgotten";
/// In an attempt's directory while it runs: its UI's port and the uid listening on it.
const UI_PORT: &str = "ui.port";

fn read_ui(layout: &TaskLayout) -> Option<(u16, u32)> {
    let text = std::fs::read_to_string(layout.dir.join(UI_PORT)).ok()?;
    let (port, uid) = text.trim().split_once(' ')?;
    Some((port.parse().ok()?, uid.parse().ok()?))
}

/// The end of an attempt, as the server hears it.
fn ended(key: TaskRef, result: Result<TaskExit, String>) -> AgentMessage {
    match result {
        Ok(exit) => AgentMessage::Ended {
            job: key.job,
            attempt: key.attempt,
            code: exit.code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            error: None,
        },
        Err(why) => AgentMessage::Ended {
            job: key.job,
            attempt: key.attempt,
            code: None,
            signal: None,
            oom_killed: false,
            error: Some(why),
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), String> {
    let err = |e: std::io::Error| format!("creating {}: {e}", path.display());
    std::fs::create_dir_all(path).map_err(err)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(err)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

/// Writes a file only `owner` reads (0400), replacing what was there.
fn write_secret(path: &Path, content: &str, owner: Option<(u32, u32)>) -> Result<(), String> {
    let err = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(err)?;
    f.write_all(content.as_bytes()).map_err(err)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(err)?;
    }
    Ok(())
}

/// The whole lines of the log from `offset`, at most [`MAX_BATCH`] bytes, and the offset
/// after them; None when no whole line is there yet. Once the task has `ended`, an
/// unfinished last line counts too; so does a line longer than a batch (cut in parts).
fn read_batch(log: &Path, offset: u64, ended: bool) -> Option<(Vec<String>, u64)> {
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut bytes = Vec::with_capacity(MAX_BATCH);
    f.take(MAX_BATCH as u64).read_to_end(&mut bytes).ok()?;
    let take = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if !bytes.is_empty() && (ended || bytes.len() == MAX_BATCH) => bytes.len(),
        None => return None,
    };
    let lines = bytes[..take]
        .strip_suffix(b"\n")
        .unwrap_or(&bytes[..take])
        .split(|b| *b == b'\n')
        .map(cut)
        .collect();
    Some((lines, offset + take as u64))
}

fn cut(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    if text.len() <= MAX_LINE {
        return text.into_owned();
    }
    let mut end = MAX_LINE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_whole_lines_and_the_last_one_once_the_task_ended() {
        let dir = std::env::temp_dir().join(format!("hearth-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("log");
        std::fs::write(&log, "one\ntw").expect("write");
        assert_eq!(read_batch(&log, 0, false), Some((vec!["one".into()], 4)));
        assert_eq!(read_batch(&log, 4, false), None);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        f.write_all(b"o\nthree").expect("append");
        assert_eq!(read_batch(&log, 4, false), Some((vec!["two".into()], 8)));
        assert_eq!(read_batch(&log, 8, true), Some((vec!["three".into()], 13)));
        assert_eq!(read_batch(&log, 13, true), None);
        // A line longer than a batch goes in parts rather than stalling the log.
        std::fs::write(&log, vec![b'x'; MAX_BATCH + 10]).expect("write");
        let (lines, next) = read_batch(&log, 0, false).expect("a part");
        assert_eq!(next, MAX_BATCH as u64);
        assert_eq!(lines[0].len(), MAX_LINE + '…'.len_utf8());
        let _ = std::fs::remove_dir_all(dir);
    }
}
