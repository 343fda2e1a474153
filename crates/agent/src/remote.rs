//! Tasks the server sends a joined node: fetch the job's files into a content-addressed
//! cache (digests verified), lay out the task's directory, make the user with the server's
//! uid, launch through the sandbox like any local task, stream its output back and report
//! its end. The messages go out through one queue that the connection loop drains.

use crate::sandbox::{self, ShimCommand, Task, TaskSpec};
use crate::{users, LinuxUser};
use hearth_model::cluster::{
    check_file_name, check_sha256, node_workspace, AgentMessage, StartTask, TaskLayout,
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

/// How long one part of a file may take to arrive.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a running task's log is read for new lines.
const TAIL_EVERY: Duration = Duration::from_millis(300);
/// A longer output line is cut (the whole line stays in the node's own copy of the log).
const MAX_LINE: usize = 4096;
/// Output lines sent in one message, in bytes: well under the frame cap.
const MAX_BATCH: usize = 32 * 1024;

/// A part of a file as the server sent it.
pub struct Chunk {
    pub data: Result<Vec<u8>, String>,
    pub eof: bool,
}

/// Runs the server's tasks on this node.
pub struct Runner {
    data_dir: PathBuf,
    shim: ShimCommand,
    /// The Spark runtime, bound read-only into every task.
    runtime_root: Option<PathBuf>,
    out: mpsc::UnboundedSender<AgentMessage>,
    fetches: Mutex<HashMap<(String, u64), oneshot::Sender<Chunk>>>,
    /// Task directories of running tasks, by job: (attempt, task dir, being stopped).
    tasks: Mutex<HashMap<i64, (u32, PathBuf, bool)>>,
    /// Ends not yet written to a connection (the server was away): sent on the next one.
    unreported: Mutex<Vec<AgentMessage>>,
    next_tmp: AtomicU64,
}

impl Runner {
    pub fn new(
        data_dir: PathBuf,
        shim: ShimCommand,
        runtime_root: Option<PathBuf>,
    ) -> (Arc<Runner>, mpsc::UnboundedReceiver<AgentMessage>) {
        let (out, rx) = mpsc::unbounded_channel();
        let runner = Runner {
            data_dir,
            shim,
            runtime_root,
            out,
            fetches: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            unreported: Mutex::new(Vec::new()),
            next_tmp: AtomicU64::new(1),
        };
        (Arc::new(runner), rx)
    }

    fn send(&self, msg: AgentMessage) {
        let _ = self.out.send(msg);
    }

    /// Keeps a task's end for the next connection (writing it failed).
    pub fn keep_unreported(&self, msg: AgentMessage) {
        if matches!(msg, AgentMessage::Ended { .. }) {
            lock(&self.unreported).push(msg);
        }
    }

    /// Queues again the ends that could not be written before.
    pub fn resend_unreported(&self) {
        for msg in std::mem::take(&mut *lock(&self.unreported)) {
            self.send(msg);
        }
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
        let dir = match lock(&self.tasks).get_mut(&job) {
            Some((a, dir, stopping)) if *a == attempt && !*stopping => {
                *stopping = true;
                dir.clone()
            }
            _ => return,
        };
        tokio::spawn(async move { sandbox::stop(&dir, grace).await });
    }

    /// Runs a task to its end in the background.
    pub fn start(self: &Arc<Self>, task: StartTask) {
        if lock(&self.tasks).contains_key(&task.job) {
            tracing::warn!(job = task.job, "asked to start a job already running here");
            return;
        }
        let runner = self.clone();
        tokio::spawn(async move {
            let (job, attempt) = (task.job, task.attempt);
            if let Err(why) = runner.run(task).await {
                eprintln!("hearth agent: job {job} (attempt {attempt}) could not start: {why}");
                lock(&runner.tasks).remove(&job);
                runner.send(AgentMessage::Ended {
                    job,
                    attempt,
                    code: None,
                    signal: None,
                    oom_killed: false,
                    error: Some(why),
                });
            }
        });
    }

    async fn run(self: &Arc<Self>, task: StartTask) -> Result<(), String> {
        for f in &task.files {
            check_file_name(&f.name)?;
            check_sha256(&f.sha256)?;
        }
        let layout = TaskLayout::new(&self.data_dir, task.job, task.attempt);
        lock(&self.tasks).insert(task.job, (task.attempt, layout.task.clone(), false));
        let home = node_workspace(&self.data_dir, &task.user.name);
        let (name, uid) = (task.user.linux_name.clone(), task.user.uid);
        let user = tokio::task::spawn_blocking(move || {
            users::ensure_user(&name, uid, &home).map_err(|e| e.to_string())
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
        let owner = Some((user.uid, user.gid));
        mkdir(&layout.tmp, 0o700, owner)?;
        mkdir(&layout.conf, 0o700, owner)?;
        write_secret(&layout.properties, &task.properties, owner)?;
        let spec = self.spec(&task, &layout, user);
        let mut launched = Task::launch(&spec, &self.shim)
            .await
            .map_err(|e| format!("could not start the job's process: {e}"))?;
        self.send(AgentMessage::Started {
            job: task.job,
            attempt: task.attempt,
        });
        let waiter = tokio::spawn(async move { launched.wait().await });
        let mut tail = Tail::new(layout.log.clone());
        while !waiter.is_finished() {
            tokio::time::sleep(TAIL_EVERY).await;
            self.send_lines(task.job, task.attempt, tail.read(false));
        }
        let exit = waiter.await.map_err(|e| e.to_string())?;
        self.send_lines(task.job, task.attempt, tail.read(true));
        let _ = std::fs::remove_dir_all(&layout.tmp);
        let _ = std::fs::remove_dir_all(&layout.conf);
        lock(&self.tasks).remove(&task.job);
        self.send(AgentMessage::Ended {
            job: task.job,
            attempt: task.attempt,
            code: exit.code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            error: None,
        });
        Ok(())
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
        }
    }

    fn send_lines(&self, job: i64, attempt: u32, lines: Vec<String>) {
        let mut batch = Vec::new();
        let mut size = 0;
        for line in lines {
            size += line.len() + 8;
            batch.push(line);
            if size >= MAX_BATCH {
                self.send(AgentMessage::Output {
                    job,
                    attempt,
                    lines: std::mem::take(&mut batch),
                });
                size = 0;
            }
        }
        if !batch.is_empty() {
            self.send(AgentMessage::Output {
                job,
                attempt,
                lines: batch,
            });
        }
    }

    /// The cached copy of a file, fetched from the server first if the cache lacks it. The
    /// cache is content-addressed: a file is kept only once its digest checks.
    async fn fetch(&self, sha256: &str) -> Result<PathBuf, String> {
        let path = self.data_dir.join("cache").join(&sha256[..2]).join(sha256);
        if path.is_file() {
            return Ok(path);
        }
        let parent = path.parent().unwrap_or(&self.data_dir).to_path_buf();
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
        let mut offset = 0u64;
        loop {
            let (tx, rx) = oneshot::channel();
            lock(&self.fetches).insert((sha256.to_string(), offset), tx);
            self.send(AgentMessage::Fetch {
                sha256: sha256.to_string(),
                offset,
            });
            let chunk = match tokio::time::timeout(FETCH_TIMEOUT, rx).await {
                Ok(Ok(c)) => c,
                _ => {
                    lock(&self.fetches).remove(&(sha256.to_string(), offset));
                    return Err(format!(
                        "file {sha256} did not arrive from the server within {}s",
                        FETCH_TIMEOUT.as_secs()
                    ));
                }
            };
            let data = chunk
                .data
                .map_err(|why| format!("the server did not send file {sha256}: {why}"))?;
            hasher.update(&data);
            file.write_all(&data)
                .map_err(|e| format!("writing file {sha256} to the cache: {e}"))?;
            offset += data.len() as u64;
            if chunk.eof {
                return Ok(hex::encode(hasher.finalize()));
            }
            if data.is_empty() {
                return Err(format!("the server sent an empty part of file {sha256}"));
            }
        }
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

/// Reads the lines a task appends to its log.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last read (and the unfinished one at the end).
    fn read(&mut self, end: bool) -> Vec<String> {
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = f.read_to_end(&mut bytes);
            }
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let rest = self.partial.split_off(i + 1);
            let line = std::mem::replace(&mut self.partial, rest);
            lines.push(cut(&line[..i]));
        }
        if end && !self.partial.is_empty() {
            lines.push(cut(&std::mem::take(&mut self.partial)));
        }
        lines
    }
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
    fn the_tail_gives_whole_lines_and_the_last_one_at_the_end() {
        let dir = std::env::temp_dir().join(format!("hearth-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("log");
        std::fs::write(&log, "one\ntw").expect("write");
        let mut t = Tail::new(log.clone());
        assert_eq!(t.read(false), vec!["one"]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        f.write_all(b"o\nthree").expect("append");
        assert_eq!(t.read(false), vec!["two"]);
        assert_eq!(t.read(true), vec!["three"]);
        assert_eq!(cut(&[b'x'; 5000]).len(), MAX_LINE + '…'.len_utf8());
        let _ = std::fs::remove_dir_all(dir);
    }
}
