//! A real `hearth up` for integration tests: its own data dir and port, the shared Spark
//! runtime from `HEARTH_TEST_RUNTIME`, and users made through the real CLI.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hearth");
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

pub fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("apps")
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

pub fn runtime() -> PathBuf {
    match std::env::var("HEARTH_TEST_RUNTIME") {
        Ok(p) => PathBuf::from(p),
        Err(_) => panic!(
            "HEARTH_TEST_RUNTIME is not set: run the tests with scripts/test.sh, which installs the Spark runtime"
        ),
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A logged-in CLI identity: its own client config file.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub config: PathBuf,
    pub token: String,
    pub uid: u32,
}

pub struct Hearth {
    pub url: String,
    pub data_dir: PathBuf,
    pub port: u16,
    /// The Spark Connect gateway's port (each test instance has its own).
    pub connect_port: u16,
    /// The cluster port, ADDR:PORT (each test instance has its own, unless the test passes
    /// its own `--cluster-listen`).
    pub cluster_addr: String,
    pub extra_args: Vec<String>,
    /// `up`, or `server` (the control plane alone).
    command: &'static str,
    child: Option<Child>,
    pub admin: User,
    uids: Vec<u32>,
    work: PathBuf,
}

impl Hearth {
    pub fn start() -> Hearth {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Hearth {
        Self::start_as("up", extra)
    }

    /// `hearth server` (the control plane alone) with `extra` arguments.
    pub fn start_server(extra: &[&str]) -> Hearth {
        Self::start_as("server", extra)
    }

    fn start_as(command: &'static str, extra: &[&str]) -> Hearth {
        let work = std::env::temp_dir().join(unique("hearth-it"));
        std::fs::create_dir_all(&work).expect("work dir");
        let port = free_port();
        let cluster_addr = match extra.iter().position(|a| *a == "--cluster-listen") {
            Some(i) => extra.get(i + 1).expect("--cluster-listen ADDR").to_string(),
            None => format!("127.0.0.1:{}", free_port()),
        };
        let mut h = Hearth {
            cluster_addr,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: work.join("data"),
            port,
            connect_port: free_port(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            command,
            child: None,
            admin: User {
                name: "admin".into(),
                config: work.join("admin.json"),
                token: String::new(),
                uid: 0,
            },
            uids: Vec::new(),
            work,
        };
        // A port picked free may be taken before the server binds it (by another test's
        // server, or as the local end of some connection): then pick new ones and retry.
        let own_cluster = !extra.contains(&"--cluster-listen");
        let mut attempts = 0;
        while let Err(log) = h.try_boot() {
            attempts += 1;
            assert!(
                attempts < 5 && log.contains("Address already in use"),
                "hearth up did not start:\n{log}"
            );
            h.port = free_port();
            h.url = format!("http://127.0.0.1:{}", h.port);
            h.connect_port = free_port();
            if own_cluster {
                h.cluster_addr = format!("127.0.0.1:{}", free_port());
            }
        }
        h.admin = h.login("admin", ADMIN_PASSWORD);
        // The admin has a Linux account too: removed with the others when the test ends.
        let me = h.api(&h.admin, "GET", "/api/v1/whoami", None);
        if let Some(uid) = me.1["uid"].as_u64() {
            h.admin.uid = uid as u32;
            h.uids.push(uid as u32);
        }
        h
    }

    /// Starts (or restarts) the server process on the same data dir and ports.
    pub fn boot(&mut self) {
        if let Err(log) = self.try_boot() {
            panic!("hearth up did not start:\n{log}");
        }
    }

    /// Starts the server; Err with its output of this start if it exits first.
    fn try_boot(&mut self) -> Result<(), String> {
        let log_path = self.work.join("server.log");
        let offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0) as usize;
        let this_start = || {
            let all = std::fs::read(&log_path).unwrap_or_default();
            text(all.get(offset..).unwrap_or_default())
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("server.log"))
            .expect("server log");
        let child = Command::new(BIN)
            .arg(self.command)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--runtime")
            .arg(runtime())
            .arg("--stop-grace")
            .arg("3")
            .arg("--connect-listen")
            .arg(format!("127.0.0.1:{}", self.connect_port))
            .args(if self.extra_args.iter().any(|a| a == "--cluster-listen") {
                vec![]
            } else {
                vec!["--cluster-listen".to_string(), self.cluster_addr.clone()]
            })
            .args(&self.extra_args)
            .env("HEARTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("HEARTH_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start hearth up");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Our own server's line, not just an answer on the port (another server may hold it).
        let up_line = format!("Hearth is up at {}", self.url);
        loop {
            if this_start().contains(&up_line)
                && ureq::get(&format!("{}/healthz", self.url)).call().is_ok()
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("hearth up exited with {status}:\n{}", this_start()));
                }
            }
            assert!(
                Instant::now() < deadline,
                "hearth up did not come up:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// This instance's scratch directory (removed when it is dropped).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.work.join("server.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as Ctrl-C would, and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait for hearth")
    }

    pub fn login(&self, name: &str, password: &str) -> User {
        let config = self.work.join(format!("{name}.json"));
        let out = run_with_stdin(
            Command::new(BIN)
                .args([
                    "login",
                    "--server",
                    &self.url,
                    "--user",
                    name,
                    "--password-stdin",
                ])
                .arg("--config")
                .arg(&config),
            password,
        );
        assert!(out.status.success(), "login {name}: {}", text(&out.stderr));
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).expect("config")).expect("json");
        User {
            name: name.into(),
            config,
            token: cfg["token"].as_str().expect("token").to_string(),
            uid: 0,
        }
    }

    /// Creates a user through the admin's CLI and logs them in.
    pub fn add_user(&mut self, name: &str) -> User {
        let password = format!("{name}-password-123");
        let out = run_with_stdin(
            Command::new(BIN)
                .args(["user", "add", name, "--password-stdin"])
                .arg("--config")
                .arg(&self.admin.config),
            &password,
        );
        assert!(
            out.status.success(),
            "user add {name}: {}",
            text(&out.stderr)
        );
        let mut user = self.login(name, &password);
        let me = self.api(&user, "GET", "/api/v1/whoami", None);
        user.uid = me.1["uid"].as_u64().expect("uid") as u32;
        self.uids.push(user.uid);
        user
    }

    /// Runs the CLI as `user`.
    pub fn cli(&self, user: &User, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&user.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hearth")
    }

    /// One raw API call: (status, JSON body or Null).
    pub fn api(
        &self,
        user: &User,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        api_call(&self.url, Some(&user.token), method, path, body)
    }

    pub fn workspace(&self, user: &User) -> PathBuf {
        self.data_dir.join("workspaces").join(&user.name)
    }

    /// Waits until the job is in a terminal state; returns its JSON.
    pub fn wait_job(&self, user: &User, id: u64, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, job) = self.api(user, "GET", &format!("/api/v1/jobs/{id}"), None);
            assert_eq!(status, 200, "{job}");
            let state = job["state"].as_str().unwrap_or("");
            if ["succeeded", "failed", "cancelled", "lost"].contains(&state) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still {state}: {job}\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_state(
        &self,
        user: &User,
        id: u64,
        want: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, job) = self.api(user, "GET", &format!("/api/v1/jobs/{id}"), None);
            if job["state"] == want {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {want}: {job}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self, user: &User, id: u64) -> String {
        let out = self.cli(user, &["logs", &id.to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Submits with the CLI; returns the job id.
    pub fn submit(&self, user: &User, args: &[&str]) -> u64 {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        let out = self.cli(user, &all);
        assert!(out.status.success(), "submit failed: {}", text(&out.stderr));
        text(&out.stdout).trim().parse().expect("job id on stdout")
    }
}

impl Drop for Hearth {
    fn drop(&mut self) {
        self.kill9();
        // A server killed with -9 leaves its port guard's nftables table behind; left to
        // pile up, stale guarded port numbers would refuse other tests' loopback connections.
        if let Ok(Some(instance)) =
            hearth_server::store::Store::open(&self.data_dir.join("hearth.db"))
                .and_then(|s| s.meta("instance"))
        {
            let table = hearth_agent::portguard::table_name(&instance);
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &table])
                .output();
        }
        // Processes a failed test may have left: everything of our users' uids, first
        // (userdel refuses a user whose processes still run).
        for uid in &self.uids {
            let _ = Command::new("pkill")
                .args(["-9", "-U", &uid.to_string()])
                .output();
        }
        for uid in &self.uids {
            let name = format!("hearth{uid}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !Command::new("userdel")
                .arg(&name)
                .output()
                .is_ok_and(|o| o.status.success() || o.status.code() == Some(6))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("groupdel").arg(&name).output();
        }
        if std::env::var("HEARTH_TEST_KEEP").is_err() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

pub fn api_call(
    url: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = ureq::request(method, &format!("{url}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let (status, resp) = match res {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(s, r)) => (s, r),
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{input}");
    }
    child.wait_with_output().expect("wait")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A page fetched through Hearth's door: status, headers of interest, body. Redirects are
/// not followed, so that where they lead can be checked.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    /// Every Content-Security-Policy header, joined with ` | `.
    pub csp: String,
    pub body: String,
}

/// GET `path` on Hearth's web port with a bearer token (or none), as a browser would ask
/// for a page when `html` is set.
pub fn get_page(h: &Hearth, token: Option<&str>, path: &str, html: bool) -> Page {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(60))
        .build();
    let mut req = agent.get(&format!("{}{path}", h.url));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    if html {
        req = req.set("Accept", "text/html,*/*");
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    Page {
        status: resp.status(),
        location: resp.header("location").map(str::to_string),
        csp: resp.all("content-security-policy").join(" | "),
        body: resp.into_string().unwrap_or_default(),
    }
}

/// Polls `path` until it answers 200 (a web server still starting answers 503).
pub fn wait_page(h: &Hearth, token: &str, path: &str, timeout: Duration) -> Page {
    let deadline = Instant::now() + timeout;
    loop {
        let p = get_page(h, Some(token), path, false);
        if p.status == 200 {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {}: {}\n{}",
            p.status,
            p.body,
            h.server_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether a process running as `uid` can open a TCP connection to 127.0.0.1:`port`.
pub fn connects_as(uid: u32, port: u16) -> bool {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 10)"),
        ])
        .output()
        .expect("setpriv");
    out.status.success()
}

/// A process of the task whose shim's files are in `task_dir` (its `started` file): in
/// the task's own network namespace, so /proc/PID/net shows that network's sockets.
pub fn task_pid(task_dir: &Path) -> u32 {
    let started = std::fs::read_to_string(task_dir.join("started")).expect("the task started");
    let started: serde_json::Value = serde_json::from_str(&started).expect("json");
    started["pid"].as_u64().expect("pid") as u32
}

/// The uid listening on TCP `port` in the network namespace of process `pid` (what Hearth
/// itself checks).
pub fn listener_in(pid: u32, port: u16) -> Option<u32> {
    hearth_agent::net::listener_uid(pid, port)
}

/// `program` run by root inside the network namespace of process `pid`, as Hearth's door
/// enters a task's network.
pub fn in_network_of(pid: u32, program: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net")).arg(program);
    cmd
}

/// The task networks of this Hearth instance still on the machine (their slots' task ids).
pub fn task_networks_of(h: &Hearth) -> Vec<String> {
    let instance = hearth_server::store::Store::open(&h.data_dir.join("hearth.db"))
        .and_then(|s| s.meta("instance"))
        .ok()
        .flatten()
        .expect("the instance id");
    std::fs::read_dir(hearth_agent::net::SLOTS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|task| task.starts_with(&format!("{instance}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `apps/connect_sql.py URL SQL...` with the runtime's PySpark, trusting Hearth's CA.
pub fn connect_sql(h: &Hearth, url: &str, sql: &[&str]) -> Output {
    connect_sql_with(h, Command::new("timeout"), url, sql)
}

/// The same through `timeout` (the program `command` runs, e.g. under `nsenter`).
pub fn connect_sql_with(h: &Hearth, mut command: Command, url: &str, sql: &[&str]) -> Output {
    command
        .arg("600")
        .arg(runtime().join("bin").join("python"))
        .arg(apps().join("connect_sql.py"))
        .arg(url)
        .args(sql)
        .env(
            "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
            h.data_dir.join("tls").join("ca.pem"),
        )
        .output()
        .expect("run python")
}

/// Removes the Linux accounts a server made for its users under `dir` (their homes are
/// workspaces there): for tests that run a server without a [`Hearth`] to clean up.
pub fn remove_users_under(dir: &Path) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() > 5 && Path::new(fields[5]).starts_with(dir) {
            let _ = Command::new("pkill").args(["-9", "-u", fields[0]]).output();
            let _ = Command::new("userdel").arg(fields[0]).output();
            let _ = Command::new("groupdel").arg(fields[0]).output();
        }
    }
}
