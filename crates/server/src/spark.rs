//! The one place that builds Spark command lines and configuration. Pure: paths in, argv
//! and file contents out.

use hearth_model::cluster::ui_properties;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `--conf` keys Hearth owns: resources must match what the scheduler granted and the OS
/// enforces, and security settings are not the user's to turn off.
const RESERVED: &[(&str, &str)] = &[
    ("spark.master", "Hearth chooses where a job runs"),
    ("spark.submit.deployMode", "Hearth chooses where a job runs"),
    ("spark.driver.memory", "use --driver-memory"),
    ("spark.driver.cores", "use --driver-cores"),
    ("spark.executor.memory", "use --executor-memory"),
    ("spark.executor.cores", "use --executor-cores"),
    ("spark.executor.instances", "use --num-executors"),
    (
        "spark.driver.memoryOverhead",
        "Hearth sets the overhead it enforces",
    ),
    ("spark.authenticate", "every job gets its own secret"),
    ("spark.authenticate.secret", "every job gets its own secret"),
    ("spark.ui.port", "Hearth assigns the UI port"),
    ("spark.local.dir", "the job's private /tmp is its local dir"),
];

/// Refuses `--conf` settings that Hearth owns, saying what to use instead.
pub fn check_user_conf(conf: &BTreeMap<String, String>) -> Result<(), String> {
    for key in conf.keys() {
        if key.trim().is_empty() {
            return Err("--conf needs a key: write --conf key=value".into());
        }
        // spark-submit splits `--conf` at the first `=`: a key holding one (or odd
        // characters) would set a different key than the one checked here.
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "--conf key `{key}` is not a Spark setting name: use letters, digits, '.', '_' and '-'"
            ));
        }
        if let Some((_, why)) = RESERVED.iter().find(|(k, _)| k == key) {
            return Err(format!("--conf {key} cannot be set: {why}"));
        }
    }
    Ok(())
}

/// Everything needed to run one application in local mode.
#[derive(Debug, Clone)]
pub struct LocalApp<'a> {
    pub spark_home: &'a Path,
    pub name: &'a str,
    pub cores: u32,
    /// The driver JVM's heap: in local mode the executors live in it too.
    pub heap_mib: u64,
    pub properties_file: &'a Path,
    pub main: PathBuf,
    pub class: Option<&'a str>,
    pub args: &'a [String],
    pub conf: &'a BTreeMap<String, String>,
    pub py_files: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
    pub archives: Vec<PathBuf>,
    pub jars: Vec<PathBuf>,
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `spark-submit --master local[N] ...` for the app.
pub fn local_submit_argv(app: &LocalApp) -> Vec<String> {
    submit_argv(app, format!("local[{}]", app.cores), &[])
}

/// The driver of a job spread over several nodes: the app in client mode on its own
/// standalone cluster, `--driver-memory` the driver's alone (`app.heap_mib`).
pub fn standalone_submit_argv(app: &LocalApp, cluster: &Standalone) -> Vec<String> {
    let conf = [
        ("spark.submit.deployMode", "client".to_string()),
        // Executors on other nodes connect back to the driver: its node's address.
        ("spark.driver.host", cluster.host.clone()),
        ("spark.driver.bindAddress", cluster.host.clone()),
        ("spark.executor.cores", cluster.executor_cores.to_string()),
        (
            "spark.executor.memory",
            format!("{}m", cluster.executor_memory_mib),
        ),
        // Exactly the executors granted: each worker offers room for its own count only.
        (
            "spark.cores.max",
            (cluster.executor_cores * cluster.executors).to_string(),
        ),
    ];
    submit_argv(app, cluster.master_url(), &conf)
}

fn submit_argv(app: &LocalApp, master: String, hearth_conf: &[(&str, String)]) -> Vec<String> {
    let mut argv = vec![
        app.spark_home
            .join("bin")
            .join("spark-submit")
            .display()
            .to_string(),
        "--master".into(),
        master,
        "--name".into(),
        app.name.to_string(),
        "--properties-file".into(),
        app.properties_file.display().to_string(),
        "--driver-memory".into(),
        format!("{}m", app.heap_mib),
    ];
    for (k, v) in hearth_conf {
        argv.push("--conf".into());
        argv.push(format!("{k}={v}"));
    }
    for (flag, list) in [
        ("--py-files", &app.py_files),
        ("--files", &app.files),
        ("--archives", &app.archives),
        ("--jars", &app.jars),
    ] {
        if !list.is_empty() {
            argv.push(flag.into());
            argv.push(join(list));
        }
    }
    for (k, v) in app.conf {
        argv.push("--conf".into());
        argv.push(format!("{k}={v}"));
    }
    if let Some(class) = app.class {
        argv.push("--class".into());
        argv.push(class.to_string());
    }
    argv.push(app.main.display().to_string());
    argv.extend(app.args.iter().cloned());
    argv
}

/// A Spark properties file: one `key=value` line each.
fn properties(pairs: &[(&str, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// A job's own Spark standalone cluster, for a job whose executors need several nodes:
/// the master on the driver's node, a worker on each node with executors, all sharing the
/// job's `spark.authenticate` secret with RPC encryption on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standalone {
    /// The master's node's address for Spark's traffic, and its port there.
    pub master_host: String,
    pub master_port: u16,
    /// This node's address for Spark's traffic (what its daemons and the driver bind to).
    pub host: String,
    pub executor_cores: u32,
    pub executor_memory_mib: u64,
    /// Executors of the whole job.
    pub executors: u32,
}

impl Standalone {
    pub fn master_url(&self) -> String {
        format!("spark://{}:{}", self.master_host, self.master_port)
    }
}

/// What Hearth counts, beside the JVMs it serves, for each standalone daemon (a master or
/// a worker): its heap is `DAEMON_HEAP`, and a JVM needs about as much again besides.
pub const DAEMON_MIB: u64 = 256;
const DAEMON_HEAP: &str = "128m";

/// One node's part of a job's standalone cluster: which daemons run there and, on the
/// driver's node, the driver's command line.
#[derive(Debug, Clone)]
pub struct StandalonePart<'a> {
    pub python: &'a Path,
    pub spark_home: &'a Path,
    pub properties_file: &'a Path,
    pub cluster: &'a Standalone,
    pub runs_master: bool,
    /// A worker offering this many executors (of the cluster's size) here.
    pub worker_executors: u32,
    pub driver: Option<Vec<String>>,
    /// Put before each line of the daemons' and executors' output, e.g. `[n2] `.
    pub prefix: String,
}

/// The embedded launcher (`standalone.py`) with this part's daemons and driver.
pub fn standalone_argv(p: &StandalonePart) -> Vec<String> {
    let class = p
        .spark_home
        .join("bin")
        .join("spark-class")
        .display()
        .to_string();
    let props = p.properties_file.display().to_string();
    let c = p.cluster;
    let master = p.runs_master.then(|| {
        vec![
            class.clone(),
            "org.apache.spark.deploy.master.Master".into(),
            "--host".into(),
            c.host.clone(),
            "--port".into(),
            c.master_port.to_string(),
            // Any free port: its UI binds to loopback only (SPARK_LOCAL_IP).
            "--webui-port".into(),
            "0".into(),
            "--properties-file".into(),
            props.clone(),
        ]
    });
    let worker = (p.worker_executors > 0).then(|| {
        vec![
            class.clone(),
            "org.apache.spark.deploy.worker.Worker".into(),
            "--host".into(),
            c.host.clone(),
            "--webui-port".into(),
            "0".into(),
            "--cores".into(),
            (c.executor_cores * p.worker_executors).to_string(),
            "--memory".into(),
            format!("{}m", c.executor_memory_mib * u64::from(p.worker_executors)),
            "--work-dir".into(),
            STANDALONE_WORK_DIR.into(),
            "--properties-file".into(),
            props.clone(),
            c.master_url(),
        ]
    });
    let spec = serde_json::json!({
        "prefix": p.prefix,
        "master": master,
        "worker": worker,
        "work_dir": STANDALONE_WORK_DIR,
        "master_addr": [c.master_host, c.master_port],
        "driver": p.driver,
    });
    vec![
        p.python.display().to_string(),
        "-c".into(),
        include_str!("standalone.py").into(),
        spec.to_string(),
    ]
}

/// Where a worker keeps its executors' directories and logs: in the task's private /tmp.
const STANDALONE_WORK_DIR: &str = "/tmp/spark-work";

/// The extra environment of a standalone part: small daemon heaps (what `DAEMON_MIB` counts).
pub fn standalone_env(env: &mut Vec<(String, String)>) {
    env.push(("SPARK_DAEMON_MEMORY".into(), DAEMON_HEAP.into()));
}

/// The properties file of every part of a job's standalone cluster: the job's one secret,
/// with the RPC encryption that it keys, and none of the master's ways in but Spark's RPC.
pub fn standalone_properties_file(secret: &str, ui: &UiPlace) -> String {
    let mut text = properties_file(secret, ui);
    text.push_str(&properties(&[
        ("spark.network.crypto.enabled", "true".into()),
        ("spark.master.rest.enabled", "false".into()),
        ("spark.ui.killEnabled", "false".into()),
        // Executors of one job on one machine (several agents, in tests) must not read each
        // other's shuffle files from disk: each part's /tmp is its own.
        ("spark.shuffle.readHostLocalDisk", "false".into()),
        // The master's port was chosen for it: never wander to the next one.
        ("spark.port.maxRetries", "0".into()),
    ]));
    text
}

/// Where a task's Spark UI listens, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiPlace {
    /// On a guarded loopback port, reached through Hearth's door at `proxy_base`
    /// (e.g. `/ui/jobs/7`): Spark prefixes its links with it.
    Port { port: u16, proxy_base: String },
    /// Placed by the node the task runs on, which guards a port of its own and adds
    /// `hearth_model::cluster::ui_properties` (a job's driver: see `StartTask::ui_base`).
    Node,
    /// No UI: its port could not be kept from other users.
    Off,
}

impl UiPlace {
    fn properties(&self) -> Vec<(&'static str, String)> {
        match self {
            UiPlace::Port { port, proxy_base } => ui_properties(Some((*port, proxy_base))),
            UiPlace::Node => Vec::new(),
            UiPlace::Off => ui_properties(None),
        }
    }
}

/// The job's Spark properties file (read by spark-submit, readable only by the job's uid):
/// its own `spark.authenticate` secret, which stays off the command line, and its UI's place.
pub fn properties_file(secret: &str, ui: &UiPlace) -> String {
    let mut pairs = vec![
        ("spark.authenticate", "true".to_string()),
        ("spark.authenticate.secret", secret.to_string()),
        ("spark.local.dir", "/tmp".into()),
        // Hearth captures the job's output itself; no colour codes in stored logs.
        ("spark.ui.showConsoleProgress", "false".into()),
    ];
    pairs.extend(ui.properties());
    properties(&pairs)
}

/// A user's Spark Connect engine: a long-lived Connect server in local mode.
#[derive(Debug, Clone)]
pub struct ConnectEngine<'a> {
    pub spark_home: &'a Path,
    /// The Hearth user it serves (only names the application).
    pub user: &'a str,
    pub cores: u32,
    pub heap_mib: u64,
    /// On 127.0.0.1 only: the gateway is the one way in.
    pub port: u16,
    pub properties_file: &'a Path,
}

/// The main class of Spark's Connect server.
pub const CONNECT_SERVER_CLASS: &str = "org.apache.spark.sql.connect.service.SparkConnectServer";

/// `spark-submit --class SparkConnectServer ...` for an engine. The secrets stay in the
/// properties file; the command line holds nothing private.
pub fn connect_server_argv(e: &ConnectEngine) -> Vec<String> {
    vec![
        e.spark_home
            .join("bin")
            .join("spark-submit")
            .display()
            .to_string(),
        "--class".into(),
        CONNECT_SERVER_CLASS.into(),
        "--name".into(),
        format!("hearth-engine-{}", e.user),
        "--master".into(),
        format!("local[{}]", e.cores),
        "--properties-file".into(),
        e.properties_file.display().to_string(),
        "--driver-memory".into(),
        format!("{}m", e.heap_mib),
        "--conf".into(),
        "spark.connect.grpc.binding.address=127.0.0.1".into(),
        "--conf".into(),
        format!("spark.connect.grpc.binding.port={}", e.port),
    ]
}

/// An engine's properties file (readable only by its uid): the token the gateway presents
/// (`spark.connect.authenticate.token`, so nobody can bypass the gateway), its own
/// `spark.authenticate` secret, and its UI's place.
pub fn engine_properties_file(connect_token: &str, rpc_secret: &str, ui: &UiPlace) -> String {
    let mut pairs = vec![
        (
            "spark.connect.authenticate.token",
            connect_token.to_string(),
        ),
        ("spark.authenticate", "true".into()),
        ("spark.authenticate.secret", rpc_secret.to_string()),
        ("spark.local.dir", "/tmp".into()),
        ("spark.ui.showConsoleProgress", "false".into()),
    ];
    pairs.extend(ui.properties());
    properties(&pairs)
}

/// `sail spark server` for a Sail engine on its (guarded) loopback port.
pub fn sail_server_argv(sail: &Path, port: u16) -> Vec<String> {
    vec![
        sail.display().to_string(),
        "spark".into(),
        "server".into(),
        "--ip".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
    ]
}

/// A user's JupyterLab: on a guarded loopback port, under the door's path.
#[derive(Debug, Clone)]
pub struct NotebookServer<'a> {
    /// The runtime's Python (JupyterLab and ipykernel are installed beside pyspark).
    pub python: &'a Path,
    pub port: u16,
    /// `/user/NAME/`: Jupyter serves everything under it, so the door forwards paths as
    /// they are.
    pub base_url: &'a str,
    pub root_dir: &'a Path,
}

/// `python -m jupyterlab ...` for a notebook server. Its token comes in the environment.
pub fn notebook_argv(n: &NotebookServer) -> Vec<String> {
    vec![
        n.python.display().to_string(),
        "-m".into(),
        "jupyterlab".into(),
        "--no-browser".into(),
        "--ip=127.0.0.1".into(),
        format!("--port={}", n.port),
        // Only the guarded port is safe: never move to another.
        "--port-retries=0".into(),
        format!("--ServerApp.base_url={}", n.base_url),
        format!("--ServerApp.root_dir={}", n.root_dir.display()),
        // Requests arrive through the door with the site's own Host header, which Jupyter
        // would otherwise refuse as "remote"; the port itself is reachable by Hearth alone.
        "--ServerApp.allow_remote_access=True".into(),
        "--ServerApp.terminals_enabled=True".into(),
        // Nothing to fetch on a closed network (the runtime's overrides.json also turns off
        // JupyterLab's news prompt).
        "--LabApp.news_url=".into(),
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate".into(),
    ]
}

/// Runs in every notebook kernel at start: `spark` is a session on the user's own Spark
/// Connect engine, through Hearth's gateway.
pub const NOTEBOOK_STARTUP_PY: &str = r#"# Made by Hearth: `spark` is a SparkSession on your own Spark Connect engine, through Hearth.
import os as _os
if _os.environ.get("SPARK_REMOTE"):
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.remote(_os.environ["SPARK_REMOTE"]).getOrCreate()
del _os
"#;

/// A notebook server's environment: a job's, with JupyterLab's token, the kernels' way to
/// the gateway, and Jupyter's and IPython's scratch state in the private /tmp.
pub fn notebook_env(
    rt: &crate::runtime::Runtime,
    user: &hearth_agent::LinuxUser,
    hearth_user: &str,
    jupyter_token: &str,
    spark_remote: Option<&str>,
) -> Vec<(String, String)> {
    let mut env = base_env(rt, user, hearth_user);
    // `jupyter` and `pip` of the runtime first, for terminals and `!` commands.
    let bin = rt.python.parent().map(|p| p.display().to_string());
    if let Some(bin) = bin {
        for (k, v) in env.iter_mut() {
            if k == "PATH" {
                *v = format!("{bin}:{v}");
            }
        }
    }
    env.push(("JUPYTER_TOKEN".into(), jupyter_token.to_string()));
    env.push(("JUPYTER_RUNTIME_DIR".into(), "/tmp/jupyter-runtime".into()));
    env.push(("IPYTHONDIR".into(), "/tmp/ipython".into()));
    if let Some(remote) = spark_remote {
        env.push(("SPARK_REMOTE".into(), remote.to_string()));
    }
    env
}

/// The whole environment of a job's process: nothing of Hearth's own environment (which may
/// hold the admin password) leaks in.
pub fn job_env(
    rt: &crate::runtime::Runtime,
    user: &hearth_agent::LinuxUser,
    hearth_user: &str,
    job_id: i64,
) -> Vec<(String, String)> {
    let mut env = base_env(rt, user, hearth_user);
    env.push(("HEARTH_JOB_ID".into(), job_id.to_string()));
    env
}

/// An engine's environment: a job's, minus the job id.
pub fn engine_env(
    rt: &crate::runtime::Runtime,
    user: &hearth_agent::LinuxUser,
    hearth_user: &str,
) -> Vec<(String, String)> {
    base_env(rt, user, hearth_user)
}

fn base_env(
    rt: &crate::runtime::Runtime,
    user: &hearth_agent::LinuxUser,
    hearth_user: &str,
) -> Vec<(String, String)> {
    let python = rt.python.display().to_string();
    let mut env = vec![
        ("HOME".into(), user.home.display().to_string()),
        ("USER".into(), user.name.clone()),
        ("LOGNAME".into(), user.name.clone()),
        ("SPARK_USER".into(), hearth_user.to_string()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TMPDIR".into(), "/tmp".into()),
        ("SPARK_HOME".into(), rt.spark_home.display().to_string()),
        ("PYSPARK_PYTHON".into(), python.clone()),
        ("PYSPARK_DRIVER_PYTHON".into(), python),
        // Single-machine jobs: keep Spark off the external interface.
        ("SPARK_LOCAL_IP".into(), "127.0.0.1".into()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    if let Ok(java_home) = std::env::var("JAVA_HOME") {
        env.push(("JAVA_HOME".into(), java_home));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_argv_reads_like_spark_submit() {
        let conf = BTreeMap::from([("spark.sql.shuffle.partitions".to_string(), "4".to_string())]);
        let args = vec!["in.csv".to_string(), "out".to_string()];
        let app = LocalApp {
            spark_home: Path::new("/rt/pyspark"),
            name: "wordcount",
            cores: 2,
            heap_mib: 2048,
            properties_file: Path::new("/job/conf/spark.properties"),
            main: PathBuf::from("/job/files/app.py"),
            class: None,
            args: &args,
            conf: &conf,
            py_files: vec![PathBuf::from("/job/files/lib.zip")],
            files: vec![],
            archives: vec![],
            jars: vec![],
        };
        assert_eq!(
            local_submit_argv(&app).join(" "),
            "/rt/pyspark/bin/spark-submit --master local[2] --name wordcount \
             --properties-file /job/conf/spark.properties --driver-memory 2048m \
             --py-files /job/files/lib.zip --conf spark.sql.shuffle.partitions=4 \
             /job/files/app.py in.csv out"
        );
    }

    #[test]
    fn reserved_conf_is_refused_with_the_flag_to_use() {
        let conf = BTreeMap::from([("spark.executor.memory".to_string(), "8g".to_string())]);
        let e = check_user_conf(&conf).expect_err("reserved");
        assert!(e.contains("--executor-memory"), "{e}");
        let sneaky = BTreeMap::from([("spark.local.dir=/x".to_string(), "y".to_string())]);
        assert!(check_user_conf(&sneaky).is_err());
        let ok = BTreeMap::from([("spark.sql.adaptive.enabled".to_string(), "true".to_string())]);
        assert!(check_user_conf(&ok).is_ok());
    }

    #[test]
    fn an_engine_is_a_connect_server_on_loopback_with_its_token_off_the_command_line() {
        let e = ConnectEngine {
            spark_home: Path::new("/rt/pyspark"),
            user: "alice",
            cores: 2,
            heap_mib: 2048,
            port: 40123,
            properties_file: Path::new("/e/conf/spark.properties"),
        };
        assert_eq!(
            connect_server_argv(&e).join(" "),
            "/rt/pyspark/bin/spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer \
             --name hearth-engine-alice --master local[2] --properties-file /e/conf/spark.properties \
             --driver-memory 2048m --conf spark.connect.grpc.binding.address=127.0.0.1 \
             --conf spark.connect.grpc.binding.port=40123"
        );
        let props = engine_properties_file("tok", "rpc", &UiPlace::Off);
        assert!(props.contains("spark.connect.authenticate.token=tok\n"));
        assert!(props.contains("spark.authenticate.secret=rpc\n"));
        assert!(props.contains("spark.ui.enabled=false\n"));
    }

    #[test]
    fn a_notebook_is_jupyterlab_on_its_port_under_the_doors_path() {
        let argv = notebook_argv(&NotebookServer {
            python: Path::new("/rt/bin/python"),
            port: 41000,
            base_url: "/user/alice/",
            root_dir: Path::new("/w/alice"),
        });
        let line = argv.join(" ");
        assert!(line.starts_with("/rt/bin/python -m jupyterlab --no-browser --ip=127.0.0.1 --port=41000 --port-retries=0"), "{line}");
        assert!(line.contains("--ServerApp.base_url=/user/alice/"), "{line}");
        assert!(line.contains("--ServerApp.root_dir=/w/alice"), "{line}");
        assert!(
            !line.contains("token"),
            "the token stays off the command line: {line}"
        );
    }

    #[test]
    fn the_secret_stays_in_the_properties_file() {
        let ui = UiPlace::Port {
            port: 4050,
            proxy_base: "/ui/jobs/7".into(),
        };
        let props = properties_file("s3cr3t", &ui);
        assert!(props.contains("spark.authenticate=true\n"));
        assert!(props.contains("spark.authenticate.secret=s3cr3t\n"));
        assert!(props.contains("spark.ui.port=4050\nspark.ui.proxyBase=/ui/jobs/7\n"));
        assert!(props.contains("spark.port.maxRetries=0\n"));
    }

    #[test]
    fn a_spread_jobs_parts_share_one_secret_off_the_command_line_with_encryption_on() {
        let cluster = Standalone {
            master_host: "10.0.0.1".into(),
            master_port: 23456,
            host: "10.0.0.1".into(),
            executor_cores: 2,
            executor_memory_mib: 1024,
            executors: 3,
        };
        let props = standalone_properties_file("s3cr3t", &UiPlace::Off);
        for line in [
            "spark.authenticate.secret=s3cr3t\n",
            "spark.network.crypto.enabled=true\n",
            "spark.master.rest.enabled=false\n",
            "spark.ui.killEnabled=false\n",
        ] {
            assert!(props.contains(line), "{line} in {props}");
        }
        let conf = BTreeMap::new();
        let app = LocalApp {
            spark_home: Path::new("/rt/spark"),
            name: "wide",
            cores: 1,
            heap_mib: 512,
            properties_file: Path::new("/job/conf/spark.properties"),
            main: "/job/files/app.py".into(),
            class: None,
            args: &[],
            conf: &conf,
            py_files: vec![],
            files: vec![],
            archives: vec![],
            jars: vec![],
        };
        let driver = standalone_submit_argv(&app, &cluster);
        let line = driver.join(" ");
        assert!(line.contains("--master spark://10.0.0.1:23456"), "{line}");
        assert!(line.contains("--driver-memory 512m"), "{line}");
        assert!(line.contains("spark.cores.max=6"), "{line}");
        assert!(line.contains("spark.executor.memory=1024m"), "{line}");
        assert!(line.contains("spark.driver.bindAddress=10.0.0.1"), "{line}");
        let argv = standalone_argv(&StandalonePart {
            python: Path::new("/rt/bin/python"),
            spark_home: Path::new("/rt/spark"),
            properties_file: Path::new("/job/conf/spark.properties"),
            cluster: &cluster,
            runs_master: true,
            worker_executors: 2,
            driver: Some(driver),
            prefix: String::new(),
        });
        assert_eq!(argv[0], "/rt/bin/python");
        assert_eq!(argv[1], "-c");
        let spec: serde_json::Value = serde_json::from_str(&argv[3]).expect("the launcher's spec");
        let worker = spec["worker"].to_string();
        // The worker offers exactly its executors' cores and memory.
        assert!(worker.contains(r#""--cores","4""#), "{worker}");
        assert!(worker.contains(r#""--memory","2048m""#), "{worker}");
        assert!(spec["master"].to_string().contains(r#""--port","23456""#));
        assert!(!argv.join(" ").contains("s3cr3t"));
    }
}
