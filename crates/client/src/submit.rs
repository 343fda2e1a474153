//! `hearth submit`: spark-submit's flags, local files uploaded (once: content-addressed),
//! then one API call; `--wait` and `--follow` make the exit code the job's.

use crate::http::Client;
use anyhow::{bail, Context, Result};
use clap::Args;
use hearth_model::api::{self, FileRef, ResourceRequest, SubmitJob};
use hearth_model::{parse_mib, JobState};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// A name for the job (default: the application's file name)
    #[arg(long)]
    pub name: Option<String>,
    /// Main class of a JVM application
    #[arg(long)]
    pub class: Option<String>,
    /// Spark configuration, key=value (repeatable)
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
    /// Comma-separated .py, .zip or .egg files for the Python path
    #[arg(long, value_name = "FILES")]
    pub py_files: Option<String>,
    /// Comma-separated files placed in the job's working directory
    #[arg(long, value_name = "FILES")]
    pub files: Option<String>,
    /// Comma-separated archives extracted into the job's working directory
    #[arg(long, value_name = "FILES")]
    pub archives: Option<String>,
    /// Comma-separated jars for the driver and executor classpaths
    #[arg(long, value_name = "FILES")]
    pub jars: Option<String>,
    /// Driver memory, e.g. 1g
    #[arg(long, value_name = "MEM")]
    pub driver_memory: Option<String>,
    #[arg(long, value_name = "N")]
    pub driver_cores: Option<u32>,
    /// Memory per executor, e.g. 2g
    #[arg(long, value_name = "MEM")]
    pub executor_memory: Option<String>,
    #[arg(long, value_name = "N")]
    pub executor_cores: Option<u32>,
    #[arg(long, value_name = "N")]
    pub num_executors: Option<u32>,
    /// The queue (default: your group's queue)
    #[arg(long)]
    pub queue: Option<String>,
    /// low, normal or high: the order among your own jobs
    #[arg(long, value_parser = ["low", "normal", "high"])]
    pub priority: Option<String>,
    /// Run on idle capacity beyond your share; give way (and be requeued) when others need it
    #[arg(long)]
    pub preemptible: bool,
    /// Run only on a node with this label, key=value (see `hearth nodes`); repeat for several
    #[arg(long = "constraint", value_name = "LABEL=VALUE")]
    pub constraints: Vec<String>,
    /// Wait until the job ends; exit with its exit code
    #[arg(long)]
    pub wait: bool,
    /// Stream the job's output while waiting (implies --wait)
    #[arg(long)]
    pub follow: bool,
    /// The application: a .py file or a .jar
    pub app: PathBuf,
    /// Arguments for the application
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Wraps a reader to show upload progress for large files on a terminal.
pub struct Progress<R> {
    inner: R,
    total: u64,
    done: u64,
    label: String,
    last: Instant,
    show: bool,
}

impl<R: Read> Progress<R> {
    pub fn new(inner: R, total: u64, label: &str) -> Self {
        Progress {
            inner,
            total,
            done: 0,
            label: label.to_string(),
            last: Instant::now(),
            show: total >= 8 * 1024 * 1024 && std::io::stderr().is_terminal(),
        }
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.show && (n == 0 || self.last.elapsed() > Duration::from_millis(200)) {
            self.last = Instant::now();
            let pct = self.done * 100 / self.total.max(1);
            eprint!(
                "\r  uploading {}: {pct:>3}% ({} / {} MiB)",
                self.label,
                self.done >> 20,
                self.total >> 20
            );
            if n == 0 {
                eprintln!();
            }
        }
        Ok(n)
    }
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("no such file: {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Uploads a local file unless the server already has it from us; returns its reference.
fn upload(client: &Client, path: &Path) -> Result<FileRef> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("no such file: {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    if meta.len() == 0 {
        bail!(
            "{} is empty: there is nothing to run or ship",
            path.display()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .with_context(|| format!("{} has no file name", path.display()))?;
    let (sha256, size) = sha256_file(path)?;
    let known = client
        .get::<api::BlobInfo>(&format!("/blobs/{sha256}"))
        .is_ok();
    if !known {
        let f = std::fs::File::open(path)?;
        client.put_reader(
            &format!("/blobs/{sha256}"),
            size,
            Progress::new(f, size, &name),
        )?;
    }
    Ok(FileRef { name, sha256 })
}

fn split_list(list: &Option<String>) -> Vec<PathBuf> {
    list.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks everything that can be checked before any upload.
fn check(args: &SubmitArgs) -> Result<BTreeMap<String, String>> {
    let mut conf = BTreeMap::new();
    for kv in &args.conf {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--conf {kv}: write --conf key=value");
        };
        if k.trim().is_empty() {
            bail!("--conf {kv}: the key is empty; write --conf key=value");
        }
        conf.insert(k.trim().to_string(), v.to_string());
    }
    for (flag, v) in [
        ("--driver-memory", &args.driver_memory),
        ("--executor-memory", &args.executor_memory),
    ] {
        if let Some(v) = v {
            parse_mib(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        }
    }
    for p in std::iter::once(args.app.clone())
        .chain(split_list(&args.py_files))
        .chain(split_list(&args.files))
        .chain(split_list(&args.archives))
        .chain(split_list(&args.jars))
    {
        if !p.is_file() {
            bail!("no such file: {}", p.display());
        }
    }
    Ok(conf)
}

pub fn run(client: &Client, args: SubmitArgs) -> Result<i32> {
    let conf = check(&args)?;
    let up = |list: &Option<String>| -> Result<Vec<FileRef>> {
        split_list(list).iter().map(|p| upload(client, p)).collect()
    };
    let req = SubmitJob {
        name: args.name.clone(),
        main: upload(client, &args.app)?,
        class: args.class.clone(),
        args: args.args.clone(),
        conf,
        py_files: up(&args.py_files)?,
        files: up(&args.files)?,
        archives: up(&args.archives)?,
        jars: up(&args.jars)?,
        resources: ResourceRequest {
            driver_cores: args.driver_cores,
            driver_memory: args.driver_memory.clone(),
            executor_cores: args.executor_cores,
            executor_memory: args.executor_memory.clone(),
            num_executors: args.num_executors,
        },
        queue: args.queue.clone(),
        priority: args.priority.clone(),
        preemptible: args.preemptible,
        constraints: args.constraints.clone(),
    };
    let job: api::Job = client.send("POST", "/jobs", &req)?;
    eprintln!(
        "Submitted job {} ({}): {} cores, memory limit {} MiB.",
        job.id, job.name, job.cores, job.memory_limit_mib
    );
    if !(args.wait || args.follow) {
        println!("{}", job.id);
        return Ok(0);
    }
    if args.follow {
        crate::stream_logs(client, job.id, true, None)?;
    }
    let job = wait_for(client, job.id)?;
    let _ = std::io::stdout().flush();
    eprintln!(
        "Job {} {}{}",
        job.id,
        job.state,
        job.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    Ok(exit_code(&job))
}

fn wait_for(client: &Client, id: u64) -> Result<api::Job> {
    let mut delay = Duration::from_millis(100);
    let mut said: Option<String> = None;
    loop {
        let job: api::Job = client.get(&format!("/jobs/{id}"))?;
        if job.state.is_terminal() {
            return Ok(job);
        }
        // Say why the job waits, once per change of reason.
        if job.state == JobState::Queued && job.reason.is_some() && job.reason != said {
            eprintln!(
                "Job {id} is queued: {}",
                job.reason.as_deref().unwrap_or("")
            );
            said = job.reason.clone();
        }
        std::thread::sleep(delay);
        // At most a quarter second late: a script waiting on a job should not wait a whole
        // second more than the job (a GET a few times a second is nothing to the server).
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// The job's exit code for the shell: 0 on success, the app's own code on failure, 130 if
/// cancelled (as for Ctrl-C), 1 otherwise.
pub fn exit_code(job: &api::Job) -> i32 {
    match job.state {
        JobState::Succeeded => 0,
        JobState::Failed => job.exit_code.filter(|c| *c != 0).unwrap_or(1),
        JobState::Cancelled => 130,
        _ => 1,
    }
}
