//! `hearth`: the one binary. `hearth up` runs the platform; everything else is the CLI.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hearth_agent::sandbox::ShimCommand;
use hearth_agent::users::UidRange;
use hearth_server::config::{machine_resources, Config};
use hearth_server::runtime::RuntimeLocation;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "A secure multi-user Apache Spark platform"
)]
struct Cli {
    #[command(flatten)]
    global: hearth_client::Global,
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// Run the whole platform (control plane + local agent) in one process
    Up(Box<UpArgs>),
    /// Run the control plane alone: joined agents (`hearth agent`) run the jobs
    Server(Box<UpArgs>),
    /// Join this machine to a Hearth server (`hearth node token create` prints the command)
    Agent(Box<AgentArgs>),
    /// Manage the Spark runtime on this machine
    Runtime {
        #[command(subcommand)]
        cmd: RuntimeCommand,
    },
    #[command(hide = true)]
    Internal {
        #[command(subcommand)]
        cmd: InternalCommand,
    },
    #[command(flatten)]
    Client(hearth_client::Command),
}

#[derive(Debug, Args)]
struct RuntimeArgs {
    /// The runtime venv (default: DATA_DIR/runtime)
    #[arg(long, env = "HEARTH_RUNTIME")]
    runtime: Option<PathBuf>,
    /// Use an existing Spark installation instead (a pyspark or Spark directory)
    #[arg(long, env = "SPARK_HOME_FOR_HEARTH")]
    spark_home: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Where Hearth keeps its data
    #[arg(long, env = "HEARTH_DATA_DIR", default_value = "./.hearth")]
    data_dir: PathBuf,
    /// Address for the API and web port
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Cores offered to jobs (default: all)
    #[arg(long)]
    cores: Option<u32>,
    /// Memory offered to jobs, e.g. 16g (default: all)
    #[arg(long)]
    memory: Option<String>,
    /// File holding the first admin password (else HEARTH_ADMIN_PASSWORD, else generated)
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
    /// Linux uids to allocate for users, e.g. 200000-299999
    #[arg(long, default_value = "200000-299999")]
    uid_range: String,
    /// Largest upload, e.g. 2g
    #[arg(long, default_value = "2g")]
    max_upload: String,
    /// Seconds between SIGTERM and SIGKILL when stopping a job
    #[arg(long, default_value_t = 10)]
    stop_grace: u64,
    /// Address for the Spark Connect gateway (gRPC over TLS); `off` to disable it
    #[arg(long, default_value = "127.0.0.1:15002")]
    connect_listen: String,
    /// More names (hosts or IPs) for the gateway's certificate; repeat for several
    #[arg(long)]
    connect_host: Vec<String>,
    /// The gateway's certificate (PEM) instead of one from Hearth's CA; needs --connect-key
    #[arg(long, requires = "connect_key")]
    connect_cert: Option<PathBuf>,
    /// The private key (PEM) of --connect-cert
    #[arg(long, requires = "connect_cert")]
    connect_key: Option<PathBuf>,
    /// Cores of each user's Spark Connect engine
    #[arg(long, default_value_t = 2)]
    engine_cores: u32,
    /// Heap of each user's Spark Connect engine (its limit adds Spark's overhead)
    #[arg(long, default_value = "2g")]
    engine_memory: String,
    /// Stop an engine unused for this long, e.g. 15m, 30s
    #[arg(long, default_value = "15m")]
    engine_idle_timeout: String,
    /// Memory limit of each user's notebook server (JupyterLab and its kernels)
    #[arg(long, default_value = "2g")]
    notebook_memory: String,
    /// Stop a notebook unused for this long (no traffic, no busy kernel), e.g. 1h, 30s
    #[arg(long, default_value = "1h")]
    notebook_idle_timeout: String,
    /// Address where agents join and connect (mutual TLS); `off` to disable it
    #[arg(long, default_value = "127.0.0.1:7070")]
    cluster_listen: String,
    /// Mark a joined node down after this long without a heartbeat, e.g. 30s
    #[arg(long, default_value = "30s")]
    node_timeout: String,
    /// How many times a job whose node was lost runs again before it fails
    #[arg(long, default_value_t = 1)]
    max_retries: u32,
    /// How often to sample the machine's use for the console's charts, e.g. 60s, 1m
    #[arg(long, default_value = "60s")]
    usage_interval: String,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// How this machine's tasks are networked.
#[derive(Debug, Args)]
struct NetworkArgs {
    /// The private range each task's own network takes its address from (one per machine)
    #[arg(long, default_value = hearth_agent::net::DEFAULT_RANGE)]
    task_network: String,
    /// A network no task may reach, e.g. 10.0.0.0/8 for the office LAN; repeat for several
    #[arg(long)]
    deny_network: Vec<String>,
    /// Run every task in this machine's network instead of one of its own: any user's job
    /// then reaches whatever another's listens on. Only where namespaces cannot be made
    #[arg(long)]
    insecure_shared_network: bool,
}

impl NetworkArgs {
    fn mode(&self) -> Result<hearth_agent::net::NetworkMode> {
        if self.insecure_shared_network {
            return Ok(hearth_agent::net::NetworkMode::SharedInsecure);
        }
        let range = self
            .task_network
            .parse()
            .map_err(|e| anyhow::anyhow!("--task-network: {e}"))?;
        let deny = self
            .deny_network
            .iter()
            .map(|d| d.parse())
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| anyhow::anyhow!("--deny-network: {e}"))?;
        Ok(hearth_agent::net::NetworkMode::Own { range, deny })
    }
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// The server's cluster port, HOST:PORT (remembered after joining)
    #[arg(long)]
    server: Option<String>,
    /// A join token from `hearth node token create` (only needed to join)
    #[arg(long, env = "HEARTH_JOIN_TOKEN")]
    token: Option<String>,
    /// SHA-256 of the server's CA certificate, as the join command prints it
    #[arg(long)]
    ca_sha256: Option<String>,
    /// Where the agent keeps its key and certificate
    #[arg(long, env = "HEARTH_AGENT_DATA_DIR", default_value = "./.hearth-agent")]
    data_dir: PathBuf,
    /// The node's name (default: the host name)
    #[arg(long)]
    name: Option<String>,
    /// Cores offered to jobs (default: all)
    #[arg(long)]
    cores: Option<u32>,
    /// Memory offered to jobs, e.g. 16g (default: all)
    #[arg(long)]
    memory: Option<String>,
    /// A label jobs can ask for, key=value (e.g. disk=ssd); repeat for several
    #[arg(long)]
    label: Vec<String>,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Install the pinned pyspark into a venv Hearth manages
    Install {
        #[arg(long, env = "HEARTH_DATA_DIR", default_value = "./.hearth")]
        data_dir: PathBuf,
        /// Where to install (default: DATA_DIR/runtime)
        #[arg(long, env = "HEARTH_RUNTIME")]
        runtime: Option<PathBuf>,
        /// The Python to build the venv from; must be readable by every job's uid
        #[arg(long, default_value = "/usr/bin/python3")]
        python: PathBuf,
    },
    /// Check that jobs can run: Spark runtime and Java
    Check {
        #[arg(long, env = "HEARTH_DATA_DIR", default_value = "./.hearth")]
        data_dir: PathBuf,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

#[derive(Debug, Subcommand)]
enum InternalCommand {
    /// Supervise one task (started by the agent, not by people)
    Shim { dir: PathBuf },
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

fn runtime_location(data_dir: &std::path::Path, args: RuntimeArgs) -> Result<RuntimeLocation> {
    Ok(RuntimeLocation {
        venv: absolute(args.runtime.unwrap_or_else(|| data_dir.join("runtime")))?,
        spark_home: args.spark_home.map(absolute).transpose()?,
    })
}

fn parse_uid_range(s: &str) -> Result<UidRange> {
    let parsed = s
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((first, last)) if first >= 1000 && first <= last => Ok(UidRange { first, last }),
        _ => bail!(
            "--uid-range {s}: write FIRST-LAST with 1000 <= FIRST <= LAST, e.g. 200000-299999"
        ),
    }
}

/// What this machine offers to jobs (`--cores`, `--memory`; default: all of it), checked
/// against what it has.
fn offer(cores: Option<u32>, memory: Option<&str>) -> Result<(u32, u64)> {
    let (machine_cores, machine_mib) = machine_resources();
    let cores = cores.unwrap_or(machine_cores);
    if cores == 0 || cores > machine_cores {
        bail!("--cores {cores}: this machine has {machine_cores} cores; offer between 1 and {machine_cores}");
    }
    let memory_mib = match memory {
        Some(m) => hearth_model::parse_mib(m).map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
        None => machine_mib,
    };
    if memory_mib == 0 || memory_mib > machine_mib {
        bail!(
            "--memory {}: this machine has {}; offer some, at most that",
            memory.unwrap_or_default(),
            hearth_model::format_mib(machine_mib)
        );
    }
    Ok((cores, memory_mib))
}

/// What `hearth agent` offers and where it keeps its identity, checked.
fn agent_config(args: AgentArgs) -> Result<hearth_agent::node::AgentConfig> {
    let (cores, memory_mib) = offer(args.cores, args.memory.as_deref())?;
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.label {
        let (k, v) = hearth_model::cluster::parse_label(l).map_err(anyhow::Error::msg)?;
        labels.insert(k, v);
    }
    let name = match args.name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    };
    hearth_model::cluster::check_node_name(&name).map_err(anyhow::Error::msg)?;
    let data_dir = absolute(args.data_dir)?;
    // A node without a Spark runtime still joins (and is listed), but is offered no jobs.
    let runtime = match runtime_location(&data_dir, args.runtime)?.locate() {
        Ok(rt) => Some(hearth_model::cluster::NodeRuntime {
            root: rt.root.display().to_string(),
            spark_home: rt.spark_home.display().to_string(),
            python: rt.python.display().to_string(),
        }),
        Err(problems) => {
            eprintln!(
                "hearth agent: this node runs no jobs until it has a Spark runtime: {} \
                 (pass --runtime DIR, or run `hearth runtime install --data-dir {}`)",
                problems.join("; "),
                data_dir.display()
            );
            None
        }
    };
    Ok(hearth_agent::node::AgentConfig {
        server: args.server,
        token: args.token,
        ca_sha256: args.ca_sha256,
        data_dir,
        offer: hearth_model::cluster::NodeOffer {
            name,
            cores,
            memory_mib,
            labels,
            version: env!("CARGO_PKG_VERSION").to_string(),
            runtime,
            data_dir: None,
            isolation_problems: None,
            workspace_mark: None,
        },
        shim: ShimCommand {
            program: std::env::current_exe().context("finding the hearth binary")?,
            args: vec!["internal".into(), "shim".into()],
        },
        network: args.network.mode()?,
    })
}

/// `30s`, `15m`, `2h` or plain seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let (num, mult) = match s.chars().last()? {
        'h' => (&s[..s.len() - 1], 3600),
        'm' => (&s[..s.len() - 1], 60),
        's' => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    let secs = num.trim().parse::<u64>().ok()?.checked_mul(mult)?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn up_config(args: UpArgs) -> Result<Config> {
    let data_dir = absolute(args.data_dir)?;
    let (cores, memory_mib) = offer(args.cores, args.memory.as_deref())?;
    let max_upload_mib = hearth_model::parse_mib(&args.max_upload)
        .map_err(|e| anyhow::anyhow!("--max-upload: {e}"))?;
    let admin_password = match &args.admin_password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading --admin-password-file {}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => std::env::var("HEARTH_ADMIN_PASSWORD").ok(),
    };
    // Out of the environment, or every shim and job launched from here would inherit it.
    std::env::remove_var("HEARTH_ADMIN_PASSWORD");
    let runtime = runtime_location(&data_dir, args.runtime)?;
    let connect_listen = match args.connect_listen.as_str() {
        "off" => None,
        a => Some(a.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!("--connect-listen {a}: write ADDR:PORT, e.g. 0.0.0.0:15002, or `off`")
        })?),
    };
    if args.engine_cores == 0 || args.engine_cores > cores {
        bail!(
            "--engine-cores {}: between 1 and the {cores} cores offered",
            args.engine_cores
        );
    }
    let engine_memory_mib = hearth_model::parse_mib(&args.engine_memory)
        .map_err(|e| anyhow::anyhow!("--engine-memory: {e}"))?;
    let engine_idle_timeout = parse_duration(&args.engine_idle_timeout).ok_or_else(|| {
        anyhow::anyhow!(
            "--engine-idle-timeout {}: write a duration such as 15m, 1h or 30s",
            args.engine_idle_timeout
        )
    })?;
    let notebook_memory_mib = hearth_model::parse_mib(&args.notebook_memory)
        .map_err(|e| anyhow::anyhow!("--notebook-memory: {e}"))?;
    if notebook_memory_mib < 512 {
        bail!(
            "--notebook-memory {}: JupyterLab needs at least 512m",
            args.notebook_memory
        );
    }
    let notebook_idle_timeout = parse_duration(&args.notebook_idle_timeout).ok_or_else(|| {
        anyhow::anyhow!(
            "--notebook-idle-timeout {}: write a duration such as 1h, 15m or 30s",
            args.notebook_idle_timeout
        )
    })?;
    let cluster_listen = match args.cluster_listen.as_str() {
        "off" => None,
        a => Some(a.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!("--cluster-listen {a}: write ADDR:PORT, e.g. 0.0.0.0:7070, or `off`")
        })?),
    };
    let node_timeout = parse_duration(&args.node_timeout).ok_or_else(|| {
        anyhow::anyhow!(
            "--node-timeout {}: write a duration such as 30s or 2m",
            args.node_timeout
        )
    })?;
    let usage_interval = parse_duration(&args.usage_interval).ok_or_else(|| {
        anyhow::anyhow!(
            "--usage-interval {}: write a duration such as 60s, 5m or 1s",
            args.usage_interval
        )
    })?;
    Ok(Config {
        notebook_memory_mib,
        notebook_idle_timeout,
        cluster_listen,
        node_timeout,
        max_retries: args.max_retries,
        usage_interval,
        connect_listen,
        connect_hosts: args.connect_host,
        connect_cert: args.connect_cert.zip(args.connect_key),
        engine_cores: args.engine_cores,
        engine_memory_mib,
        engine_idle_timeout,
        listen: args.listen,
        cores,
        memory_mib,
        uid_range: parse_uid_range(&args.uid_range)?,
        runtime,
        max_upload_bytes: max_upload_mib * 1024 * 1024,
        admin_password,
        shim: ShimCommand {
            program: std::env::current_exe().context("finding the hearth binary")?,
            args: vec!["internal".into(), "shim".into()],
        },
        stop_grace: Duration::from_secs(args.stop_grace),
        network: args.network.mode()?,
        data_dir,
        local_jobs: true,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

/// `hearth up` (`local_jobs`: this machine runs jobs too) or `hearth server` (the control
/// plane alone).
fn serve(args: UpArgs, local_jobs: bool) -> Result<i32> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = Config {
        local_jobs,
        ..up_config(args)?
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(hearth_server::run(cfg, shutdown_signal()))?;
    Ok(0)
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Top::Internal {
            cmd: InternalCommand::Shim { dir },
        } => Ok(hearth_agent::shim::run(&dir)),
        Top::Up(args) => serve(*args, true),
        Top::Server(args) => serve(*args, false),
        Top::Agent(args) => {
            let cfg = agent_config(*args)?;
            // Out of the environment once read, like the admin password.
            std::env::remove_var("HEARTH_JOIN_TOKEN");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(hearth_agent::node::run(cfg)) {
                Ok(()) => Ok(0),
                Err(e) => {
                    eprintln!("hearth agent: {e}");
                    Ok(1)
                }
            }
        }
        Top::Runtime {
            cmd:
                RuntimeCommand::Install {
                    data_dir,
                    runtime,
                    python,
                },
        } => {
            let dir = absolute(runtime.unwrap_or_else(|| data_dir.join("runtime")))?;
            hearth_server::runtime::install(&dir, &python).map_err(anyhow::Error::msg)?;
            Ok(0)
        }
        Top::Runtime {
            cmd: RuntimeCommand::Check { data_dir, runtime },
        } => match runtime_location(&absolute(data_dir)?, runtime)?.locate() {
            Ok(rt) => {
                println!("Spark: {}", rt.spark_home.display());
                println!("Python: {}", rt.python.display());
                println!("Java: {}", rt.java);
                Ok(0)
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("- {p}");
                }
                Ok(1)
            }
        },
        Top::Client(cmd) => hearth_client::run(&cli.global, cmd),
    }
}
