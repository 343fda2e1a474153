//! Several machines, first step: agents join over mutual TLS with a join token, heartbeat,
//! go down when killed, come back without a token, and everything that is not a valid
//! Hearth-issued identity is refused with a clear log line. Agents are real `hearth agent`
//! processes; one test puts an agent in its own network namespace.

mod common;

use common::{text, Hearth, BIN};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Generous: the machine running the tests may be busy with other builds.
const DEADLINE: Duration = Duration::from_secs(90);

/// A `hearth agent` process, killed when dropped.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
    data_dir: PathBuf,
}

impl Agent {
    /// Starts `hearth agent ARGS --data-dir DIR` (DIR under the test's scratch dir); `wrap`
    /// runs it through another command (`ip netns exec NS`).
    fn start(h: &Hearth, data_dir: &str, args: &[&str], wrap: &[&str]) -> Agent {
        Self::start_at(h.work_dir().join(data_dir), args, wrap)
    }

    /// Starts an agent on `data_dir`; each start has its own log, beside the data dir.
    fn start_at(data_dir: PathBuf, args: &[&str], wrap: &[&str]) -> Agent {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::SeqCst);
        let log = data_dir.with_extension(format!("{n}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let mut cmd = match wrap.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .arg("agent")
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start hearth agent");
        Agent {
            child: Some(child),
            log,
            data_dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the agent to exit by itself.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        let c = self.child.as_mut().expect("running");
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        // Its port guard's table outlives it by design (its tasks would): once no agent
        // runs on this data dir any more (a restarted one may), the test takes it along.
        let dir = self.data_dir.display().to_string();
        let another = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains(" agent ") && c.contains(&dir)
                })
            });
        if !another {
            hearth_agent::portguard::remove_table(&hearth_agent::portguard::agent_instance(
                &self.data_dir,
            ));
        }
    }
}

/// The parts of the join command `hearth node token create` prints.
struct Join {
    server: String,
    token: String,
    ca_sha256: String,
}

/// A join token for up to ten machines (the tests join several with one).
fn create_token(h: &Hearth, ttl: &str) -> Join {
    create_token_with(h, &["--ttl", ttl, "--uses", "10"])
}

fn create_token_with(h: &Hearth, args: &[&str]) -> Join {
    let mut all = vec!["node", "token", "create"];
    all.extend_from_slice(args);
    let out = h.cli(&h.admin, &all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cmd = text(&out.stdout);
    let words: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(words.get(..2), Some(&["hearth", "agent"][..]), "{cmd}");
    let after = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).expect(flag);
        words[i + 1].to_string()
    };
    Join {
        server: after("--server"),
        token: after("--token"),
        ca_sha256: after("--ca-sha256"),
    }
}

fn token_id(token: &str) -> String {
    token.split('_').nth(1).expect("id").to_string()
}

/// The joined node named `name`, from the API.
fn node(h: &Hearth, name: &str) -> Option<serde_json::Value> {
    let (status, nodes) = h.api(&h.admin, "GET", "/api/v1/nodes", None);
    assert_eq!(status, 200, "{nodes}");
    nodes
        .as_array()
        .expect("list")
        .iter()
        .find(|n| n["name"] == name && n["joined"] == true)
        .cloned()
}

fn wait_node_state(h: &Hearth, name: &str, want: &str, agent: &Agent) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(n) = node(h, name) {
            if n["state"] == want {
                return n;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {name} never became {want}: {:?}\nagent:\n{}\nserver:\n{}",
            node(h, name),
            agent.log(),
            h.server_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A joined node's machine use, measured by its agent, once its heartbeats carry memory in
/// use and a CPU figure (the second reading on): within a few heartbeats.
fn wait_measured(h: &Hearth, name: &str, agent: &Agent, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let n = node(h, name).unwrap_or_default();
        let m = &n["measured"];
        if m["used_memory_mib"].as_u64() > Some(0) && m["busy_cores"].is_number() {
            return m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "node {name} reported no measured use: {n}\nagent:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_log(what: &str, needle: &str, read: impl Fn() -> String) {
    wait_log_within(DEADLINE, what, needle, read)
}

fn wait_log_within(within: Duration, what: &str, needle: &str, read: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    loop {
        let log = read();
        if log.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never said `{needle}`:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn join_args<'a>(j: &'a Join, name: &'a str, cores: &'a str, memory: &'a str) -> Vec<&'a str> {
    vec![
        "--server",
        &j.server,
        "--token",
        &j.token,
        "--ca-sha256",
        &j.ca_sha256,
        "--name",
        name,
        "--cores",
        cores,
        "--memory",
        memory,
    ]
}

#[test]
fn three_agents_join_a_killed_one_goes_down_and_rejoins_without_a_token() {
    let h = Hearth::start_with(&["--node-timeout", "3s"]);
    let j = create_token(&h, "1h");
    let mut agents = Vec::new();
    for (name, memory) in [("alpha", "512m"), ("beta", "768m"), ("gamma", "1g")] {
        let mut args = join_args(&j, name, "1", memory);
        args.extend(["--label", "disk=ssd"]);
        agents.push(Agent::start(&h, name, &args, &[]));
    }
    for (agent, (name, mib)) in agents
        .iter()
        .zip([("alpha", 512), ("beta", 768), ("gamma", 1024)])
    {
        let n = wait_node_state(&h, name, "ready", agent);
        assert_eq!(n["cores"], 1, "{n}");
        assert_eq!(n["memory_mib"], mib, "{n}");
        assert_eq!(n["labels"]["disk"], "ssd", "{n}");
        // The key was made here and is readable by its owner only.
        let key = std::fs::metadata(agent.data_dir.join("node.key")).expect("key");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
            0o600
        );
    }
    // Each agent measures its machine and sends it with its heartbeats (one a second here):
    // memory at once, cores busy from the second reading.
    for (agent, name) in agents.iter().zip(["alpha", "beta", "gamma"]) {
        let m = wait_measured(&h, name, agent, Duration::from_secs(10));
        assert!(m["cpus"].as_u64() >= Some(1), "{m}");
        assert!(
            m["used_memory_mib"].as_u64() <= m["memory_mib"].as_u64(),
            "{m}"
        );
        let busy = m["busy_cores"].as_f64().unwrap_or(-1.0);
        assert!(
            busy >= 0.0 && busy <= m["cpus"].as_f64().unwrap_or(0.0),
            "{m}"
        );
    }
    let out = h.cli(&h.admin, &["nodes"]);
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["local", "alpha", "beta", "gamma"] {
        assert!(listing.contains(name), "{listing}");
    }
    assert!(listing.contains("run no jobs yet"), "{listing}");
    assert!(
        listing.contains("MACHINE USE") && listing.contains("cores busy"),
        "{listing}"
    );
    let (_, tokens) = h.api(&h.admin, "GET", "/api/v1/node-tokens", None);
    assert_eq!(tokens[0]["uses"], 3, "{tokens}");

    agents[1].kill9();
    let down = wait_node_state(&h, "beta", "down", &agents[1]);
    // A down node's last figures are not its use now.
    assert!(down["measured"].is_null(), "{down}");
    wait_node_state(&h, "alpha", "ready", &agents[0]);

    // Back with only its data dir: the stored certificate, server and pin are enough.
    let beta = Agent::start(&h, "beta", &[], &[]);
    wait_node_state(&h, "beta", "ready", &beta);
    wait_measured(&h, "beta", &beta, Duration::from_secs(10));
    assert!(
        !beta.log().contains("joined"),
        "rejoined with a token?\n{}",
        beta.log()
    );

    // All four ready at once (polled: a busy machine may delay a heartbeat for a moment).
    wait_log("/metrics", "hearth_nodes{state=\"ready\"} 4", || {
        ureq::get(&format!("{}/metrics", h.url))
            .set("Authorization", &format!("Bearer {}", h.admin.token))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default()
    });
    // Their measured use is scraped too.
    wait_log(
        "/metrics",
        "hearth_node_machine_memory_in_use_bytes{node=\"alpha\"}",
        || {
            ureq::get(&format!("{}/metrics", h.url))
                .set("Authorization", &format!("Bearer {}", h.admin.token))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .unwrap_or_default()
        },
    );
    // Secrets never reach the logs.
    let secret = j.token.rsplit('_').next().expect("secret");
    assert!(!h.server_log().contains(secret));
}

#[test]
fn bad_tokens_pins_and_plain_text_are_refused_with_a_clear_log_line() {
    let h = Hearth::start();
    let j = create_token(&h, "1h");

    // A well-formed token whose secret is wrong.
    let wrong = Join {
        token: format!("hjt_{}_{}", token_id(&j.token), "0".repeat(64)),
        server: j.server.clone(),
        ca_sha256: j.ca_sha256.clone(),
    };
    let mut a = Agent::start(&h, "wrong", &join_args(&wrong, "wrong", "1", "256m"), &[]);
    assert_eq!(a.wait_exit().code(), Some(1), "{}", a.log());
    assert!(a.log().contains("the join token is wrong"), "{}", a.log());
    wait_log("the server", "wrong join token", || h.server_log());

    // Not a token at all: the agent says so before dialling.
    let bad = Join {
        token: "hjt_nope".into(),
        server: j.server.clone(),
        ca_sha256: j.ca_sha256.clone(),
    };
    let mut a = Agent::start(
        &h,
        "malformed",
        &join_args(&bad, "malformed", "1", "256m"),
        &[],
    );
    assert_eq!(a.wait_exit().code(), Some(1), "{}", a.log());
    assert!(
        a.log().contains("the join token is malformed"),
        "{}",
        a.log()
    );

    // Revoked.
    let revoked = create_token(&h, "1h");
    let out = h.cli(
        &h.admin,
        &["node", "token", "revoke", &token_id(&revoked.token)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut a = Agent::start(
        &h,
        "revoked",
        &join_args(&revoked, "revoked", "1", "256m"),
        &[],
    );
    assert_eq!(a.wait_exit().code(), Some(1), "{}", a.log());
    assert!(
        a.log().contains("the join token was revoked"),
        "{}",
        a.log()
    );
    wait_log("the server", "was revoked", || h.server_log());

    // Expired: wait (by polling the server's own record) until its expiry has passed.
    let expired = create_token(&h, "1s");
    let id: u64 = token_id(&expired.token).parse().expect("id");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, tokens) = h.api(&h.admin, "GET", "/api/v1/node-tokens", None);
        let t = tokens
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .expect("listed");
        let expires = t["expires_at_ms"].as_i64().expect("expiry");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        if now > expires + 200 {
            break;
        }
        assert!(Instant::now() < deadline, "token never expired: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut a = Agent::start(
        &h,
        "expired",
        &join_args(&expired, "expired", "1", "256m"),
        &[],
    );
    assert_eq!(a.wait_exit().code(), Some(1), "{}", a.log());
    assert!(
        a.log().contains("the join token has expired"),
        "{}",
        a.log()
    );
    wait_log("the server", "has expired", || h.server_log());

    // The wrong server (a pin that is not this CA's).
    let pin = Join {
        ca_sha256: "ab".repeat(32),
        server: j.server.clone(),
        token: j.token.clone(),
    };
    let mut a = Agent::start(&h, "pin", &join_args(&pin, "pin", "1", "256m"), &[]);
    assert_eq!(a.wait_exit().code(), Some(1), "{}", a.log());
    assert!(
        a.log().contains("does not match --ca-sha256"),
        "{}",
        a.log()
    );

    // Plain text to the cluster port.
    let mut tcp = std::net::TcpStream::connect(&h.cluster_addr).expect("connect");
    tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let _ = tcp.write_all(b"{\"type\":\"hello\"}\n");
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(rest.is_empty(), "plain text got an answer: {}", text(&rest));
    wait_log("the server", "not TLS (plain text?)", || h.server_log());

    let out = h.cli(&h.admin, &["node", "token", "list"]);
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for state in ["active", "revoked", "expired"] {
        assert!(listing.contains(state), "{listing}");
    }
    assert!(
        !listing.contains(&j.token),
        "a secret in the listing: {listing}"
    );

    // None of the refused tried to join: no node was recorded.
    let (_, tokens) = h.api(&h.admin, "GET", "/api/v1/node-tokens", None);
    assert!(
        tokens
            .as_array()
            .expect("list")
            .iter()
            .all(|t| t["uses"] == 0),
        "{tokens}"
    );
    assert!(node(&h, "wrong").is_none() && node(&h, "pin").is_none());
}

#[test]
fn a_certificate_from_another_hearth_is_refused() {
    let ours = Hearth::start();
    let theirs = Hearth::start();
    let j = create_token(&theirs, "1h");
    let mut a = Agent::start(
        &theirs,
        "stranger",
        &join_args(&j, "stranger", "1", "256m"),
        &[],
    );
    wait_node_state(&theirs, "stranger", "ready", &a);
    a.kill9();
    // The same identity, pointed at our server (whose CA it pins correctly).
    let mine = create_token(&ours, "1h");
    let b = Agent::start_at(
        a.data_dir.clone(),
        &["--server", &mine.server, "--ca-sha256", &mine.ca_sha256],
        &[],
    );
    // The agent may see the refusal as an alert or as a reset connection (then it retries):
    // the server's log line is what counts.
    wait_log(
        "our server",
        "its certificate was not issued by this Hearth's CA",
        || ours.server_log(),
    );
    assert!(node(&ours, "stranger").is_none());
    assert!(!b.log().contains("connected to"), "{}", b.log());
}

#[test]
fn a_removed_node_is_cut_off_and_stays_refused_across_restarts() {
    let mut h = Hearth::start();
    let j = create_token(&h, "1h");
    let mut a = Agent::start(&h, "delta", &join_args(&j, "delta", "1", "256m"), &[]);
    wait_node_state(&h, "delta", "ready", &a);

    let out = h.cli(&h.admin, &["node", "drain", "delta"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_node_state(&h, "delta", "draining", &a);
    let out = h.cli(&h.admin, &["node", "undrain", "delta"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_node_state(&h, "delta", "ready", &a);

    let out = h.cli(&h.admin, &["node", "remove", "delta"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(a.wait_exit().code(), Some(1), "{}", a.log());
    assert!(a.log().contains("was removed"), "{}", a.log());
    assert!(node(&h, "delta").is_none());

    // Its certificate stays refused, also after the server restarts.
    let mut again = Agent::start(&h, "delta", &[], &[]);
    assert_eq!(again.wait_exit().code(), Some(1), "{}", again.log());
    assert!(again.log().contains("was removed"), "{}", again.log());
    h.stop();
    h.boot();
    let mut after = Agent::start(&h, "delta", &[], &[]);
    assert_eq!(after.wait_exit().code(), Some(1), "{}", after.log());
    assert!(after.log().contains("was removed"), "{}", after.log());
    wait_log("the server", "refused node delta", || h.server_log());

    // A non-admin may do none of this.
    let bob = h.add_user(&common::unique("bob").replace('-', ""));
    let out = h.cli(&bob, &["node", "token", "create"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only admins"),
        "{}",
        text(&out.stderr)
    );
}

/// `mount --bind FROM TO` (TO made if missing), unmounted when dropped.
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &std::path::Path, to: &std::path::Path) -> BindMount {
        std::fs::create_dir_all(to).expect("mount point");
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(to)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount --bind {} {}", from.display(), to.display());
        BindMount(to.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A network namespace joined to the host by a veth pair; removed when dropped.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("ip {}: {}", args.join(" "), text(&out.stderr)))
        }
    }

    /// The namespace, with host address 10.203.N.1 and its own 10.203.N.2. On a failure,
    /// what was made is removed (by drop).
    fn create(n: u32) -> Result<Netns, String> {
        let id = std::process::id();
        let ns = Netns {
            name: format!("hth{id}"),
            host_if: format!("hv{id}h"),
        };
        let peer = format!("hv{id}n");
        Self::ip(&["netns", "add", &ns.name])?;
        Self::ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        Self::ip(&["link", "set", &peer, "netns", &ns.name])?;
        Self::ip(&[
            "addr",
            "add",
            &format!("10.203.{n}.1/24"),
            "dev",
            &ns.host_if,
        ])?;
        Self::ip(&["link", "set", &ns.host_if, "up"])?;
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            Self::ip(&all)
        };
        exec(&["addr", "add", &format!("10.203.{n}.2/24"), "dev", &peer])?;
        exec(&["link", "set", &peer, "up"])?;
        exec(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Self::ip(&["netns", "del", &self.name]);
        let _ = Self::ip(&["link", "del", &self.host_if]);
    }
}

#[test]
fn an_agent_in_another_network_namespace_joins_by_the_servers_address() {
    let Some((n, ns)) = free_netns() else {
        eprintln!("SKIPPED: no network namespace");
        return;
    };
    let addr = format!("10.203.{n}.1");
    let port = std::net::TcpListener::bind(format!("{addr}:0"))
        .and_then(|l| l.local_addr())
        .expect("a free port on the veth address")
        .port();
    let listen = format!("{addr}:{port}");
    let h = Hearth::start_with(&["--cluster-listen", &listen, "--node-timeout", "3s"]);
    let j = create_token(&h, "1h");
    assert_eq!(
        j.server, listen,
        "the join command names the address it listens on"
    );
    let wrap = ["ip", "netns", "exec", ns.name.as_str()];
    let a = Agent::start(&h, "far", &join_args(&j, "far", "1", "256m"), &wrap);
    wait_node_state(&h, "far", "ready", &a);
    wait_log(
        "the server",
        &format!("Node far joined from 10.203.{n}.2:"),
        || h.server_log(),
    );
    drop(a);
    drop(h);
    drop(ns);
}

/// `hearth agent` joined with a Spark runtime, offering `cores` and `memory`.
fn worker(h: &Hearth, j: &Join, name: &str, cores: &str, memory: &str, more: &[&str]) -> Agent {
    let runtime = common::runtime().display().to_string();
    let mut args = join_args(j, name, cores, memory);
    args.extend(["--runtime", &runtime]);
    args.extend(more);
    let agent = Agent::start(h, &common::unique(name), &args, &[]);
    wait_node_state(h, name, "ready", &agent);
    agent
}

/// Like [`worker`], run through `wrap` (`ip netns exec NS`).
fn worker_wrapped(
    h: &Hearth,
    j: &Join,
    name: &str,
    cores: &str,
    memory: &str,
    wrap: &[&str],
) -> Agent {
    let runtime = common::runtime().display().to_string();
    let mut args = join_args(j, name, cores, memory);
    args.extend(["--runtime", &runtime]);
    let agent = Agent::start(h, &common::unique(name), &args, wrap);
    wait_node_state(h, name, "ready", &agent);
    agent
}

/// A network namespace on a /24 no interface of this machine uses yet, with its number;
/// None where namespaces cannot be made (the test then runs on loopback alone).
fn free_netns() -> Option<(u32, Netns)> {
    let listed = Command::new("ip").args(["netns", "list"]).output();
    if !listed.is_ok_and(|o| o.status.success()) {
        eprintln!("`ip netns` is not available here: every node on loopback");
        return None;
    }
    let used = Command::new("ip")
        .args(["-4", "addr", "show"])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    let n = (0..200)
        .map(|i| 20 + (std::process::id() + i) % 200)
        .find(|n| !used.contains(&format!("10.203.{n}.")))?;
    match Netns::create(n) {
        Ok(ns) => Some((n, ns)),
        Err(e) => {
            eprintln!("cannot make a network namespace ({e}): every node on loopback");
            None
        }
    }
}

/// Kills what is left of a task on an agent killed with -9 (its shim outlives it, like
/// Hearth's own): first its shims are told to end (each stops its task and removes its
/// cgroups, as on any end), then whatever still names the agent's data dir is killed.
fn kill_tasks_of(agent: &Agent) {
    let needle = agent.data_dir.display().to_string();
    let shims = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (cmdline.contains("internal shim") && cmdline.contains(&needle)).then_some(pid)
            })
            .collect()
    };
    for pid in shims() {
        // SAFETY: kill has no memory effects; pid came from /proc.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !shims().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..3 {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                // SAFETY: kill has no memory effects; pid came from /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const LONG: Duration = Duration::from_secs(240);

#[test]
fn a_job_constrained_to_a_label_runs_on_the_joined_node_with_it_and_its_log_says_which() {
    let mut h = Hearth::start_with(&[
        "--node-timeout",
        "3s",
        "--cores",
        "1",
        "--engine-cores",
        "1",
    ]);
    let alice = h.add_user("alice");
    let j = create_token(&h, "1h");
    let agent = worker(&h, &j, "wide", "2", "2g", &["--label", "disk=ssd"]);
    let sleepy = common::apps().join("sleepy.py").display().to_string();
    // No node has this label: the job says so while it waits.
    let never = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            "--constraint",
            "gpu=true",
            &sleepy,
            "1",
            "1",
        ],
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{never}"), None);
        let reason = job["reason"].as_str().unwrap_or_default();
        if reason.contains("no ready node has the label gpu=true") {
            break;
        }
        assert_eq!(job["state"], "queued", "{job}");
        assert!(Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = h.cli(&alice, &["cancel", &never.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The server has room for this one, but only the node with disk=ssd may run it.
    let wc = common::examples().join("wordcount");
    let (txt, py) = (
        wc.join("hearth.txt").display().to_string(),
        wc.join("wordcount.py").display().to_string(),
    );
    // A file of many parts (fetched a window of parts at a time), with a tail shorter
    // than a part: the node checks its digest, so a job that runs got it whole.
    let big = h.work_dir().join("parts.bin");
    let bytes: Vec<u8> = (0..(10 * 24 * 1024 + 777))
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(&big, &bytes).expect("parts.bin");
    let files = format!("{txt},{}", big.display());
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--constraint",
            "disk=ssd",
            "--driver-memory",
            "512m",
            "--files",
            &files,
            &py,
            "hearth.txt",
            "counts",
        ],
    );
    let job = h.wait_job(&alice, id, LONG);
    let log = h.logs(&alice, id);
    assert_eq!(
        job["state"],
        "succeeded",
        "{job}\n{log}\nagent:\n{}",
        agent.log()
    );
    assert_eq!(job["node"], "wide", "{job}");
    assert!(log.contains("running on node wide"), "{log}");
    assert!(log.contains("[wide] top 10:"), "{log}");
    let sum = Command::new("sha256sum")
        .arg(&big)
        .output()
        .expect("sha256sum");
    let digest = text(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let cached = agent
        .data_dir
        .join("cache")
        .join(&digest[..2])
        .join(&digest);
    assert_eq!(
        std::fs::read(&cached).ok().as_deref(),
        Some(&bytes[..]),
        "the file is in the node's cache by its digest, whole"
    );
    // The output is in alice's workspace on that node, owned by her uid.
    let out = agent
        .data_dir
        .join("workspaces")
        .join("alice")
        .join("counts");
    let csv = std::fs::read_dir(&out)
        .expect("output dir on the node")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".csv"))
        .expect("a csv part");
    let content = std::fs::read_to_string(csv.path()).expect("csv");
    assert!(content.contains("the,"), "{content}");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(csv.path()).expect("stat"));
    assert_eq!(owner, alice.uid);
}

#[test]
fn a_job_on_a_joined_node_has_its_spark_ui_behind_the_door_like_a_local_one() {
    let mut h = Hearth::start_with(&[
        "--node-timeout",
        "5s",
        "--cores",
        "1",
        "--engine-cores",
        "1",
    ]);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let j = create_token(&h, "1h");
    let agent = worker(&h, &j, "uinode", "2", "2g", &["--label", "ui=yes"]);
    let app = common::apps().join("ui_job.py").display().to_string();
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "1g",
            "--constraint",
            "ui=yes",
            &app,
            "600",
        ],
    );
    h.wait_state(&alice, id, "running", LONG);
    wait_log_within(LONG, "the job's log", "[uinode] ready", || {
        h.logs(&alice, id)
    });
    let base = format!("/ui/jobs/{id}");
    // Through the node's connection: the job's own pages, Spark's links under the door.
    let page = common::wait_page(&h, &alice.token, &format!("{base}/jobs/"), DEADLINE);
    assert!(page.body.contains("ui-job"), "{}", page.body);
    assert!(
        page.body.contains(&format!("{base}/stages/")),
        "{}",
        page.body
    );
    // A page larger than a tunnel's window arrives whole (Spark's own JavaScript).
    let js = common::get_page(
        &h,
        Some(&alice.token),
        &format!("{base}/static/vis-timeline-graph2d.min.js"),
        false,
    );
    assert_eq!(js.status, 200);
    assert!(js.body.len() > 300 * 1024, "{}", js.body.len());
    // `hearth job show` prints where it is.
    let show = text(&h.cli(&alice, &["job", "show", &id.to_string()]).stdout);
    assert!(show.contains(&base), "{show}");
    // Others: as if it did not exist; admins sandboxed, as on the server's machine.
    assert_eq!(
        common::get_page(&h, Some(&bob.token), &format!("{base}/jobs/"), false).status,
        404
    );
    let admin = common::get_page(&h, Some(&h.admin.token), &format!("{base}/jobs/"), false);
    assert_eq!(admin.status, 200);
    assert!(admin.csp.contains("sandbox"), "{}", admin.csp);
    // On the node the port is its own guard's: only root reaches it, not even alice.
    let port: u16 = std::fs::read_to_string(h.data_dir.join(format!("jobs/{id}/ui.port")))
        .expect("ui.port")
        .trim()
        .parse()
        .expect("port");
    assert!(
        !common::connects_as(bob.uid, port),
        "bob reached the UI port"
    );
    assert!(
        !common::connects_as(alice.uid, port),
        "the port is for the door only"
    );
    // The UI goes with the job; no stream is left open on either side.
    let out = h.cli(&alice, &["cancel", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    h.wait_job(&alice, id, DEADLINE);
    assert_eq!(
        common::get_page(&h, Some(&alice.token), &format!("{base}/jobs/"), false).status,
        404
    );
    assert!(!h.data_dir.join(format!("jobs/{id}/ui.port")).exists());
    drop(agent);
}

#[test]
fn a_join_token_joins_one_machine_and_a_node_offering_more_than_approved_is_held() {
    let mut h = Hearth::start_with(&["--node-timeout", "5s"]);
    let alice = h.add_user("alice");
    // A token is good for one machine unless made for more: the second join is refused,
    // and the node's row is not made.
    let once = create_token_with(&h, &["--ttl", "1h"]);
    let first = Agent::start(&h, "first", &join_args(&once, "first", "1", "1g"), &[]);
    wait_node_state(&h, "first", "ready", &first);
    let mut second = Agent::start(&h, "second", &join_args(&once, "second", "1", "1g"), &[]);
    assert!(!second.wait_exit().success());
    assert!(second.log().contains("already used"), "{}", second.log());
    assert!(node(&h, "second").is_none());
    let (_, tokens) = h.api(&h.admin, "GET", "/api/v1/node-tokens", None);
    let t = tokens
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|t| t["id"].as_u64().map(|i| i.to_string()) == Some(token_id(&once.token)))
        })
        .cloned()
        .expect("the token");
    assert_eq!(
        (t["uses"].as_u64(), t["max_uses"].as_u64()),
        (Some(1), Some(1)),
        "{t}"
    );
    assert!(
        h.server_log().contains("use 1 of 1"),
        "each use is logged:\n{}",
        h.server_log()
    );

    // A token's caps: a node offering more than they allow joins, but is held (no work
    // goes there) until an admin approves what it offers. (A node offering more than its
    // own machine measures is held the same way: `hearth agent` itself refuses to offer
    // more than its machine has, so only a forged agent could, and the rule is unit
    // tested in `hearth_model::cluster`.)
    let capped = create_token_with(&h, &["--ttl", "1h", "--max-cores", "1"]);
    let runtime = common::runtime().display().to_string();
    let mut args = join_args(&capped, "over", "2", "1g");
    args.extend(["--label", "size=big", "--runtime", &runtime]);
    let over = Agent::start(&h, "over", &args, &[]);
    let deadline = Instant::now() + DEADLINE;
    let held = loop {
        if let Some(why) = node(&h, "over").and_then(|n| n["held"].as_str().map(String::from)) {
            break why;
        }
        assert!(Instant::now() < deadline, "not held:\n{}", over.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        held.contains("more than the 1 it was approved for"),
        "{held}"
    );
    let nodes = text(&h.cli(&h.admin, &["nodes"]).stdout);
    assert!(nodes.contains("HELD"), "{nodes}");
    let sleepy = common::apps().join("sleepy.py").display().to_string();
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            "--constraint",
            "size=big",
            &sleepy,
            "300",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(job["state"], "queued", "{job}");
    // Bob is no admin: he cannot approve it.
    let bob = h.add_user("bob");
    let offer = serde_json::json!({"cores": 2, "memory_mib": 1024});
    let (status, _) = h.api(&bob, "POST", "/api/v1/nodes/over/approve", Some(offer));
    assert_eq!(status, 403);
    // Not what it offers: refused, and it stays held.
    let wrong = serde_json::json!({"cores": 64, "memory_mib": 1024});
    let (status, answer) = h.api(&h.admin, "POST", "/api/v1/nodes/over/approve", Some(wrong));
    assert_eq!(status, 409, "{answer}");
    assert!(node(&h, "over").is_some_and(|n| n["held"].is_string()));
    // Approved as it is: it takes the job.
    let out = h.cli(&h.admin, &["node", "approve", "over"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
        if job["state"] != "queued" {
            assert_eq!(job["node"], "over", "{job}");
            break;
        }
        assert!(Instant::now() < deadline, "never placed: {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(node(&h, "over").is_some_and(|n| n["held"].is_null()));
    let out = h.cli(&alice, &["cancel", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    h.wait_job(&alice, id, LONG);
    drop((first, over));
}

#[test]
fn hearth_server_runs_no_job_itself_and_its_joined_node_does() {
    let mut h = Hearth::start_server(&["--node-timeout", "5s"]);
    let alice = h.add_user("alice");
    let sleepy = common::apps().join("sleepy.py").display().to_string();
    let args = [
        "--num-executors",
        "0",
        "--driver-memory",
        "512m",
        &sleepy,
        "2",
        "0.2",
    ];
    // No node yet: taken, and waiting for one.
    let id = h.submit(&alice, &args);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
        if job["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no node is available"))
        {
            break;
        }
        assert_eq!(job["state"], "queued", "{job}");
        assert!(Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let admin = h.admin.clone();
    let nodes = text(&h.cli(&admin, &["nodes"]).stdout);
    assert!(
        nodes.contains("runs no jobs: the control plane alone"),
        "{nodes}"
    );
    let j = create_token(&h, "1h");
    let agent = worker(&h, &j, "only", "2", "2g", &[]);
    let job = h.wait_job(&alice, id, LONG);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", agent.log());
    assert_eq!(job["node"], "only", "{job}");
    assert!(h.logs(&alice, id).contains("[only] sleepy done"));
}

#[test]
fn a_job_too_big_for_any_node_runs_on_its_own_standalone_cluster_across_nodes() {
    // One agent in a network namespace of its own, if this machine can make one: then no
    // part of the cluster reaches another over loopback.
    let ns = free_netns();
    let listen = ns.as_ref().map(|(n, _)| {
        let addr = format!("10.203.{n}.1");
        let port = std::net::TcpListener::bind(format!("{addr}:0"))
            .and_then(|l| l.local_addr())
            .expect("a free port on the veth address")
            .port();
        format!("{addr}:{port}")
    });
    // Every node has one core: a driver and two executors of one core each fit none.
    let mut args = vec![
        "--node-timeout",
        "5s",
        "--cores",
        "1",
        "--engine-cores",
        "1",
    ];
    if let Some(listen) = &listen {
        args.extend(["--cluster-listen", listen]);
    }
    let mut h = Hearth::start_with(&args);
    let alice = h.add_user("alice");
    let j = create_token(&h, "1h");
    // wa's workspaces are the server's (a bind mount, as an admin would mount a shared
    // filesystem); wb's are its own.
    let wa_dir = h.work_dir().join(common::unique("wa"));
    let _shared = BindMount::new(&h.data_dir.join("workspaces"), &wa_dir.join("workspaces"));
    let runtime = common::runtime().display().to_string();
    let mut wa_args = join_args(&j, "wa", "1", "3g");
    wa_args.extend(["--runtime", &runtime]);
    let a = Agent::start_at(wa_dir, &wa_args, &[]);
    wait_node_state(&h, "wa", "ready", &a);
    // nsenter, not `ip netns exec`: that mounts a fresh /sys, which hides the cgroups
    // and would leave the node without isolation.
    let netns_path = ns
        .as_ref()
        .map(|(_, ns)| format!("--net=/var/run/netns/{}", ns.name));
    let wrap: Vec<&str> = match &netns_path {
        Some(path) => vec!["nsenter", path.as_str()],
        None => Vec::new(),
    };
    let b = worker_wrapped(&h, &j, "wb", "1", "3g", &wrap);
    assert!(!b.log().contains("isolation is OFF"), "{}", b.log());
    // Each node says whether it isolates and whether it shares the server's workspaces.
    let admin = h.admin.clone();
    let out = h.cli(&admin, &["nodes", "-o", "json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nodes json");
    let node = |name: &str| {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(node("wa")["shared_workspace"], true, "{nodes}");
    assert_eq!(node("wb")["shared_workspace"], false, "{nodes}");
    assert_eq!(node("wa")["isolation"], true, "{nodes}");
    assert_eq!(node("wb")["isolation"], true, "{nodes}");
    wait_log("the server", "node wb: its workspaces", || h.server_log());
    assert!(!h.server_log().contains("node wa: its workspaces"));
    let table = text(&h.cli(&admin, &["nodes"]).stdout);
    assert!(
        table.contains("the workspaces of wb are their own"),
        "{table}"
    );
    let id = submit_spread(&h, &alice, &["8"]);
    let job = h.wait_job(&alice, id, LONG);
    let log = h.logs(&alice, id);
    let agents = format!("agent wa:\n{}\nagent wb:\n{}", a.log(), b.log());
    assert_eq!(job["state"], "succeeded", "{job}\n{log}\n{agents}");
    assert!(log.contains("a standalone cluster of its own"), "{log}");
    let spread: Vec<String> = job["executors_by_node"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}={}", e["node"].as_str().unwrap_or("?"), e["count"]))
        .collect();
    assert_eq!(spread, ["wa=1", "wb=1"], "{job}");
    let show = h.cli(&alice, &["job", "show", &id.to_string()]);
    assert!(
        text(&show.stdout).contains("executors 1 on wa, 1 on wb"),
        "{}",
        text(&show.stdout)
    );
    // The right answer, from two executors, and the log shows each node's executor.
    assert!(log.contains("sum: 5000050000"), "{log}");
    assert!(log.contains("executors: 2"), "{log}");
    assert!(log.contains("groups: 10 of [100]"), "{log}");
    for node in ["wa", "wb"] {
        assert!(
            log.contains(&format!("[{node}] [executor ")),
            "no executor output from {node}:\n{log}"
        );
        assert!(log.contains(&format!("[{node}] [worker] ")), "{log}");
    }
    assert!(log.contains("[master] "), "{log}");
    assert!(log.contains("partition 0 computed on"), "{log}");
    // Torn down with the job: no task of it is left on either node.
    let deadline = Instant::now() + DEADLINE;
    for agent in [&a, &b] {
        while spark_processes_of(agent) > 0 {
            assert!(Instant::now() < deadline, "processes left: {}", agent.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Submits `spread.py ARGS` with a driver and two executors of one core each (what no
/// one-core node holds).
fn submit_spread(h: &Hearth, user: &common::User, args: &[&str]) -> u64 {
    let app = common::apps().join("spread.py").display().to_string();
    let mut all = vec![
        "--num-executors",
        "2",
        "--executor-cores",
        "1",
        "--executor-memory",
        "512m",
        "--driver-memory",
        "512m",
        &app,
    ];
    all.extend_from_slice(args);
    h.submit(user, &all)
}

/// How many Spark processes run from the agent's data dir (its tasks' daemons and JVMs).
fn spark_processes_of(agent: &Agent) -> usize {
    let needle = agent.data_dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(&needle) && c.contains("spark")
            })
        })
        .count()
}

#[test]
fn a_spread_job_that_loses_a_workers_node_runs_again_and_succeeds_once() {
    let mut h = Hearth::start_with(&[
        "--node-timeout",
        "3s",
        "--cores",
        "1",
        "--engine-cores",
        "1",
    ]);
    let alice = h.add_user("alice");
    let j = create_token(&h, "1h");
    // Four nodes of one core; the job needs three: one can go.
    let mut agents: Vec<(String, Agent)> = ["wa", "wb", "wc"]
        .iter()
        .map(|n| (n.to_string(), worker(&h, &j, n, "1", "3g", &[])))
        .collect();
    let id = submit_spread(&h, &alice, &["16", "3"]);
    // Mid-job: an executor computed a partition, so the cluster is really working.
    wait_log_within(LONG, "the job's log", "partition ", || {
        text(&h.cli(&alice, &["logs", &id.to_string()]).stdout)
    });
    let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
    let driver = job["node"].as_str().unwrap_or_default().to_string();
    // A node that runs an executor and not the driver.
    let victim = job["executors_by_node"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["node"].as_str())
        .find(|n| *n != driver && *n != "local")
        .expect("an executor on a joined node other than the driver's")
        .to_string();
    let i = agents
        .iter()
        .position(|(n, _)| *n == victim)
        .expect("a known node");
    let (_, mut lost) = agents.remove(i);
    lost.kill9();
    kill_tasks_of(&lost);
    wait_node_state(&h, &victim, "down", &lost);
    let job = h.wait_job(&alice, id, LONG);
    let log = h.logs(&alice, id);
    let logs: Vec<String> = agents
        .iter()
        .map(|(n, a)| format!("{n}:\n{}", a.log()))
        .collect();
    assert_eq!(
        job["state"],
        "succeeded",
        "{job}\n{log}\n{}",
        logs.join("\n")
    );
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{job}");
    assert_eq!(attempts[0]["outcome"], "lost", "{job}");
    assert!(
        attempts[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("node {victim}"))),
        "{job}"
    );
    assert_eq!(log.matches("sum: 5000050000").count(), 1, "{log}");
    // The second run's placement leaves out the lost node.
    let placed: Vec<&str> = job["executors_by_node"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["node"].as_str())
        .collect();
    assert!(!placed.contains(&victim.as_str()), "{job}");
    // Recorded once, and nothing of the first run is left running on the nodes.
    std::thread::sleep(Duration::from_secs(5));
    let (_, again) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["finished_at_ms"], job["finished_at_ms"], "{again}");
    for (name, agent) in &agents {
        assert_eq!(
            spark_processes_of(agent),
            0,
            "processes of the job left on {name}"
        );
    }
}

#[test]
fn a_killed_node_loses_its_job_which_runs_again_on_another_and_succeeds_once() {
    let mut h = Hearth::start_with(&[
        "--node-timeout",
        "3s",
        "--cores",
        "1",
        "--engine-cores",
        "1",
    ]);
    let alice = h.add_user("alice");
    let j = create_token(&h, "1h");
    let mut agents = vec![
        ("left", worker(&h, &j, "left", "2", "2g", &[])),
        ("right", worker(&h, &j, "right", "2", "2g", &[])),
    ];
    let sleepy = common::apps().join("sleepy.py").display().to_string();
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-cores",
            "2",
            "--driver-memory",
            "512m",
            &sleepy,
            "40",
            "1",
        ],
    );
    // Running, and its output reached the server: the node is really running it.
    wait_log_within(LONG, "the job's log", "line 00001", || {
        let out = h.cli(&alice, &["logs", &id.to_string()]);
        text(&out.stdout)
    });
    let (_, job) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
    let first = job["node"].as_str().expect("a node").to_string();
    let i = agents
        .iter()
        .position(|(n, _)| *n == first)
        .expect("a known node");
    let (_, mut lost) = agents.remove(i);
    lost.kill9();
    kill_tasks_of(&lost);
    let other = agents[0].0;
    wait_node_state(&h, &first, "down", &lost);
    let job = h.wait_job(&alice, id, LONG);
    let log = h.logs(&alice, id);
    assert_eq!(
        job["state"],
        "succeeded",
        "{job}\n{log}\nagent:\n{}",
        agents[0].1.log()
    );
    assert_eq!(job["node"], other, "{job}");
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{job}");
    assert_eq!(attempts[0]["outcome"], "lost", "{job}");
    assert!(
        attempts[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("node {first}"))),
        "{job}"
    );
    assert!(log.contains(&format!("[{other}] sleepy done")), "{log}");
    assert!(log.contains("attempt 2 on node"), "{log}");
    // Recorded once: still succeeded, with one lost attempt, a while later.
    std::thread::sleep(Duration::from_secs(5));
    let (_, again) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["attempts"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(again["finished_at_ms"], job["finished_at_ms"], "{again}");
}

/// How many lines of `log` are exactly `line`.
fn count_lines(log: &str, line: &str) -> usize {
    log.lines().filter(|l| *l == line).count()
}

/// Waits until the node's own log of the task holds `more` lines beyond what it held when
/// called: the job runs on while the server is away.
fn wait_node_lines(log_on_node: &std::path::Path, more: usize) {
    let count = || {
        std::fs::read_to_string(log_on_node)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let want = count() + more;
    let deadline = Instant::now() + LONG;
    while count() < want {
        assert!(Instant::now() < deadline, "the job printed nothing more");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_server_killed_or_stopped_mid_job_adopts_it_from_its_node_and_loses_no_line() {
    // A node timeout longer than the server is away: the node is not lost meanwhile.
    let mut h = Hearth::start_with(&[
        "--node-timeout",
        "20s",
        "--cores",
        "1",
        "--engine-cores",
        "1",
    ]);
    let alice = h.add_user("alice");
    let j = create_token(&h, "1h");
    let mut agent = worker(&h, &j, "steady", "2", "2g", &[]);
    let sleepy = common::apps().join("sleepy.py").display().to_string();
    let lines = 60;
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-cores",
            "2",
            "--driver-memory",
            "512m",
            &sleepy,
            &lines.to_string(),
            "1",
        ],
    );
    let server_has = |h: &Hearth, line: &str| {
        wait_log_within(LONG, "the job's log", line, || {
            let out = h.cli(&alice, &["logs", &id.to_string()]);
            text(&out.stdout)
        })
    };
    let log_on_node = agent
        .data_dir
        .join("jobs")
        .join(format!("{id}-1"))
        .join("output.log");
    server_has(&h, "[steady] line 00002");
    // A crash: the job keeps printing while the server is away (its node keeps the lines).
    h.kill9();
    wait_node_lines(&log_on_node, 3);
    h.boot();
    server_has(&h, "[steady] line 00015");
    // The agent crashes and comes back: it takes back the job it ran (whose shim outlived
    // it), and the server adopts it again: no retry, no line lost or doubled.
    agent.kill9();
    wait_node_lines(&log_on_node, 2);
    let runtime = common::runtime().display().to_string();
    let mut args = join_args(&j, "steady", "2", "2g");
    args.extend(["--runtime", &runtime]);
    agent = Agent::start_at(agent.data_dir.clone(), &args, &[]);
    wait_node_state(&h, "steady", "ready", &agent);
    server_has(&h, "[steady] line 00020");
    assert!(
        agent
            .log()
            .contains(&format!("took back job {id} (attempt 1)")),
        "{}",
        agent.log()
    );
    // A graceful stop leaves jobs on joined nodes running, for the next start to adopt.
    assert!(h.stop().success());
    wait_node_lines(&log_on_node, 3);
    h.boot();
    let job = h.wait_job(&alice, id, LONG);
    let log = h.logs(&alice, id);
    assert_eq!(
        job["state"],
        "succeeded",
        "{job}\n{log}\nagent:\n{}\nserver:\n{}",
        agent.log(),
        h.server_log()
    );
    assert_eq!(job["node"], "steady", "{job}");
    // Adopted, not retried: no lost attempt, and it ran once.
    assert_eq!(
        job["attempts"].as_array().map(|a| a.len()),
        Some(0),
        "{job}"
    );
    assert!(!log.contains("attempt 2"), "{log}");
    for i in 0..lines {
        let line = format!("[steady] line {i:05}");
        assert_eq!(count_lines(&log, &line), 1, "`{line}`:\n{log}");
    }
    assert_eq!(count_lines(&log, "[steady] sleepy done"), 1, "{log}");
    // Recorded once: the same end a while later.
    std::thread::sleep(Duration::from_secs(5));
    let (_, again) = h.api(&alice, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(again["finished_at_ms"], job["finished_at_ms"], "{again}");
    assert_eq!(again["attempts"].as_array().map(|a| a.len()), Some(0));
}
