//! Every task in a network of its own, attacked as another user would: bob submits an
//! ordinary job that is handed every port alice's running job, Spark Connect engine, Sail
//! engine, notebook and kernels listen on (listed from outside, as root), at every address
//! they could be reached by, and tries each over TCP and UDP. It may reach Hearth's API and
//! nothing else of this machine.

mod common;

use common::{apps, runtime, text, Hearth, User};
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where every task finds Hearth (the default task network's gateway).
const GATEWAY: &str = "10.213.0.1";

/// Alice's processes as root sees them from outside: each network namespace (by one of
/// its processes) with the TCP ports listening and UDP ports bound there as her uid.
fn sockets_of(uid: u32) -> BTreeMap<u64, (u32, BTreeSet<u16>)> {
    let mut by_netns: BTreeMap<u64, (u32, BTreeSet<u16>)> = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return by_netns;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if owner != Some(uid) {
            continue;
        }
        let Some(netns) = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .and_then(|l| {
                let l = l.to_string_lossy().to_string();
                l.trim_start_matches("net:[")
                    .trim_end_matches(']')
                    .parse::<u64>()
                    .ok()
            })
        else {
            continue;
        };
        let entry = by_netns.entry(netns).or_insert((pid, BTreeSet::new()));
        for table in ["tcp", "tcp6", "udp", "udp6"] {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let listening = table.starts_with("udp") || cols.get(3) == Some(&"0A");
                if cols.len() > 7 && listening && cols[7] == uid.to_string() {
                    let port = cols[1]
                        .rsplit(':')
                        .next()
                        .and_then(|h| u16::from_str_radix(h, 16).ok());
                    entry.1.extend(port);
                }
            }
        }
    }
    by_netns
}

/// The IPv4 address of the network namespace process `pid` is in, as root reads it.
fn address_of(pid: u32) -> String {
    let out = Command::new("nsenter")
        .args([
            &format!("--net=/proc/{pid}/ns/net"),
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .output()
        .expect("nsenter");
    let line = text(&out.stdout);
    line.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {pid}'s network: {line}"))
        .to_string()
}

/// Whether root, inside that namespace, connects to its loopback `port`: the victim's
/// servers are real and up (else "bob cannot reach them" would prove nothing).
fn root_connects_inside(pid: u32, port: u16) -> bool {
    Command::new("nsenter")
        .args([
            &format!("--net=/proc/{pid}/ns/net"),
            "/usr/bin/python3",
            "-c",
        ])
        .arg(format!(
            "import socket; socket.create_connection(('127.0.0.1', {port}), 3)"
        ))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Bob's job tries every port of alice's at her addresses, at loopback and at the gateway,
/// plus `more`; returns what it printed. Asserts that there was something to attack.
fn attack(h: &Hearth, bob: &User, alice: &User, more: &[String], want: &str) -> String {
    let sockets = sockets_of(alice.uid);
    let ports: BTreeSet<u16> = sockets
        .values()
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    assert!(!ports.is_empty(), "alice's {want} listens nowhere");
    let mut targets: Vec<String> = Vec::new();
    let mut proven = false;
    for (pid, mine) in sockets.values() {
        let addr = address_of(*pid);
        assert!(
            addr.starts_with("10.213."),
            "{want} is not in a task network: {addr}"
        );
        for port in mine {
            targets.push(format!("{addr}:{port}"));
            proven |= root_connects_inside(*pid, *port);
        }
    }
    assert!(
        proven,
        "none of alice's {want} ports answers even root inside her network"
    );
    for port in &ports {
        if ![h.port, h.connect_port].contains(port) {
            targets.push(format!("127.0.0.1:{port}"));
            targets.push(format!("{GATEWAY}:{port}"));
        }
    }
    targets.extend(more.iter().cloned());
    let mut args = vec![
        "--driver-memory".to_string(),
        "512m".to_string(),
        "--num-executors".to_string(),
        "0".to_string(),
        apps().join("netprobe.py").display().to_string(),
        alice.uid.to_string(),
    ];
    args.extend(targets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = h.submit(bob, &args);
    let job = h.wait_job(bob, id, Duration::from_secs(240));
    let log = h.logs(bob, id);
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    log
}

/// Every line of `log` that says a target opened, but those in `allowed`.
fn opened(log: &str, allowed: &[String]) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split("OPEN ").nth(1))
        .map(|t| t.trim().to_string())
        .filter(|t| !allowed.contains(t))
        .collect()
}

fn wait_log(h: &Hearth, user: &User, id: u64, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while !h.logs(user, id).contains(line) {
        assert!(
            Instant::now() < deadline,
            "job {id} never printed {line}:\n{}",
            h.logs(user, id)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pyspark(h: &Hearth, user: &User, extra: &str) {
    let url = format!(
        "sc://127.0.0.1:{}/;use_ssl=true;x-hearth-token={}{extra}",
        h.connect_port, user.token
    );
    let out = common::connect_sql(h, &url, &["select 1"]);
    assert!(
        text(&out.stdout).contains("OK [[1]]"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn bobs_job_reaches_no_port_of_alices_job_or_engine_nor_roots_services_only_hearths_api() {
    let mut h = Hearth::start_with(&["--engine-cores", "1", "--engine-memory", "1g"]);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    // A root service on this machine's loopback, as a database would be.
    let private = TcpListener::bind("127.0.0.1:0").expect("listen");
    let private = private.local_addr().expect("addr").port();
    let api = format!("{GATEWAY}:{}", h.port);
    let hearth = vec![api.clone(), format!("{GATEWAY}:{}", h.connect_port)];
    let more = [
        vec![
            format!("127.0.0.1:{private}"),
            format!("{GATEWAY}:{private}"),
        ],
        hearth.clone(),
    ]
    .concat();

    // Alice's running job: its driver, block manager, py4j gateway and UI.
    let job = h.submit(
        &alice,
        &[
            "--driver-memory",
            "512m",
            "--num-executors",
            "0",
            &apps().join("ui_job.py").display().to_string(),
            "600",
        ],
    );
    wait_log(&h, &alice, job, "ready");
    let log = attack(&h, &bob, &alice, &more, "running job");
    assert_eq!(
        opened(&log, &hearth),
        Vec::<String>::new(),
        "bob reached:\n{log}"
    );
    assert!(
        log.contains(&format!("OPEN {api}")),
        "bob's job cannot reach Hearth's API:\n{log}"
    );
    assert!(
        log.contains("SEES 0"),
        "bob's job sees alice's sockets:\n{log}"
    );
    let out = h.cli(&alice, &["cancel", &job.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    h.wait_job(&alice, job, Duration::from_secs(120));

    // Alice's Spark Connect engine (its gRPC port is guarded by a secret; that no longer
    // matters to bob, who cannot reach it at all).
    pyspark(&h, &alice, "");
    let log = attack(&h, &bob, &alice, &more, "Spark Connect engine");
    assert_eq!(
        opened(&log, &hearth),
        Vec::<String>::new(),
        "bob reached:\n{log}"
    );
    assert!(log.contains("SEES 0"), "{log}");
}

#[test]
fn bobs_job_reaches_no_port_of_alices_sail_engine_nor_her_notebook_and_kernels() {
    let mut h = Hearth::start_with(&["--engine-cores", "1", "--engine-memory", "1g"]);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let hearth = vec![
        format!("{GATEWAY}:{}", h.port),
        format!("{GATEWAY}:{}", h.connect_port),
    ];

    pyspark(&h, &alice, ";x-hearth-engine=sail");
    let log = attack(&h, &bob, &alice, &hearth, "Sail engine");
    assert_eq!(
        opened(&log, &hearth),
        Vec::<String>::new(),
        "bob reached:\n{log}"
    );
    let out = h.cli(&alice, &["sessions", "-o", "json"]);
    let sessions: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    for s in sessions {
        let out = h.cli(&alice, &["session", "stop", &s["id"].to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sockets_of(alice.uid).is_empty() {
        assert!(Instant::now() < deadline, "alice's Sail did not stop");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Her notebook with a kernel running (its ZMQ ports: shell, IOPub, stdin, control,
    // heartbeat), whose IOPub would show bob every cell she runs.
    let out = h.cli(&alice, &["notebook", "start"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        h.server_log()
    );
    let cells = Command::new("timeout")
        .arg("300")
        .arg(runtime().join("bin").join("python"))
        .arg(apps().join("notebook_client.py"))
        .arg(format!("{}/user/alice", h.url))
        .arg(&alice.token)
        .arg("--detach")
        .arg("import time; print('s3cret'); time.sleep(300)")
        .output()
        .expect("notebook client");
    assert!(
        cells.status.success(),
        "{}{}",
        text(&cells.stdout),
        text(&cells.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while sockets_of(alice.uid)
        .values()
        .map(|(_, p)| p.len())
        .sum::<usize>()
        < 6
    {
        assert!(Instant::now() < deadline, "no kernel of alice's listens");
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = attack(&h, &bob, &alice, &hearth, "notebook and kernel");
    assert_eq!(
        opened(&log, &hearth),
        Vec::<String>::new(),
        "bob reached:\n{log}"
    );
    assert!(log.contains("SEES 0"), "{log}");
}
