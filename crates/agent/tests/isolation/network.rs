//! Every task in a network of its own, attacked the way another user's job would: from
//! bob's sandboxed task, with Python's sockets, at every address where alice's task could
//! be reached, at the host's own loopback services and at the cloud metadata address.

use crate::common::{eventually, needs_isolation, path_str, shim, Env};
use hearth_agent::net::{self, Egress, Endpoint, TaskNetwork};
use hearth_agent::sandbox::{self, Task, TaskSpec};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Alice's task: TCP on its loopback and on all its addresses, UDP on all; it prints what
/// reaches it.
const SERVER: &str = r#"
import socket, threading, time, sys
lo = socket.socket(); lo.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lo.bind(("127.0.0.1", 7001)); lo.listen()
anyw = socket.socket(); anyw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
anyw.bind(("0.0.0.0", 7002)); anyw.listen()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 7003))
def tcp(s):
    while True:
        c, peer = s.accept(); print("ACCEPTED", peer, flush=True); c.close()
def dgram():
    while True:
        data, peer = udp.recvfrom(100); print("GOT", data, peer, flush=True)
for s in (lo, anyw):
    threading.Thread(target=tcp, args=(s,), daemon=True).start()
threading.Thread(target=dgram, daemon=True).start()
time.sleep(120)
"#;

/// Bob's task: tries each `host:port` given and says OPEN or CLOSED; sends UDP to each
/// too; counts the listening sockets it sees in /proc/net.
const PROBE: &str = r#"
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket(); s.settimeout(1.5)
    try:
        s.connect((host, int(port))); print("OPEN", target)
    except Exception as e:
        print("CLOSED", target, type(e).__name__)
    s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try: u.sendto(b"from-bob", (host, 7003))
    except Exception: pass
    u.close()
listening = 0
for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp"):
    for line in open(table).read().splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" or table.endswith("udp"):
            listening += 1
print("LISTENING", listening)
"#;

fn task_network(egress: Egress, endpoints: Vec<Endpoint>) -> TaskNetwork {
    TaskNetwork {
        range: net::DEFAULT_RANGE.parse().expect("range"),
        egress,
        deny: vec![],
        endpoints,
        dns: None,
    }
}

/// A namespace standing for the world beyond this machine: 198.51.100.2 routed through
/// it, and 169.254.169.254 routed there too as a cloud's metadata service is, with a web
/// server on port 8000 at both. Removed on drop.
struct Outside {
    name: String,
    link: String,
    server: Option<std::process::Child>,
}

impl Outside {
    fn new() -> Outside {
        let name = format!("hout{}", std::process::id());
        let link = format!("ho{}", std::process::id() % 100_000);
        // Made first, so that whatever part of it was set up is removed on a failure too.
        let mut outside = Outside {
            name: name.clone(),
            link: link.clone(),
            server: None,
        };
        run_sh(&format!(
            "ip netns add {name} && ip link add {link} type veth peer name eth0 netns {name} \
             && ip addr add 198.51.100.1/24 dev {link} && ip link set {link} up \
             && ip -n {name} addr add 198.51.100.2/24 dev eth0 && ip -n {name} link set eth0 up \
             && ip -n {name} link set lo up && ip -n {name} route add default via 198.51.100.1 \
             && ip -n {name} addr add 169.254.169.254/32 dev eth0 \
             && ip route add 169.254.169.254/32 via 198.51.100.2"
        ));
        outside.server = Some(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "/usr/bin/python3",
                    "-m",
                    "http.server",
                ])
                .args(["-b", "0.0.0.0", "8000"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("the outside web server"),
        );
        outside
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.link])
            .status();
    }
}

fn run_sh(script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn can_network() -> bool {
    match net::probe() {
        None => true,
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

fn with_network(mut spec: TaskSpec, network: TaskNetwork) -> TaskSpec {
    spec.network = Some(network);
    spec
}

fn leftovers(slot: u32) -> Vec<String> {
    let mut left = Vec::new();
    if Path::new(net::SLOTS_DIR).join(slot.to_string()).exists() {
        left.push(format!("slot {slot}"));
    }
    if net::netns_path(slot).exists() {
        left.push(path_str(&net::netns_path(slot)));
    }
    if Path::new(&format!("/sys/class/net/hh{slot}")).exists() {
        left.push(format!("link hh{slot}"));
    }
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if tables.contains(&format!("hearth_task_{slot}\n")) {
        left.push(format!("table hearth_task_{slot}"));
    }
    left
}

#[tokio::test]
async fn another_users_task_reaches_nothing_of_alices_nor_the_hosts_but_hearth_and_the_world() {
    needs_isolation!();
    if !can_network() {
        return;
    }
    let mut env = Env::new("network");
    let alice = env.user("netalice");
    let bob = env.user("netbob");
    let outside = Outside::new();
    // Root's services on the host's loopback: one Hearth forwards to its tasks, one not.
    let hearth_api = TcpListener::bind("127.0.0.1:0").expect("api");
    let private = TcpListener::bind("127.0.0.1:0").expect("private");
    let api_port = hearth_api.local_addr().expect("addr").port();
    let private_port = private.local_addr().expect("addr").port();
    let endpoints = vec![Endpoint {
        port: api_port,
        to: hearth_api.local_addr().expect("addr"),
    }];

    let spec = with_network(
        env.spec(&alice, &["/usr/bin/python3", "-c", SERVER]),
        task_network(Egress::Open, endpoints.clone()),
    );
    let mut server = Task::launch(&spec, &shim()).await.expect("alice's task");
    let (netns, pid, slot) = (
        server.netns().expect("its own network"),
        server.pid().expect("pid"),
        server.net_slot().expect("slot"),
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            net::listener_uid(pid, 7001) == Some(alice.uid)
                && net::listener_uid(pid, 7002) == Some(alice.uid)
        })
        .await,
        "alice's server did not listen in its namespace: {}",
        crate::common::log(&spec)
    );
    // Nothing of hers on the machine's own loopback.
    assert_eq!(hearth_agent::portguard::listener_uid(7001), None);
    let alice_addr = TaskNetwork::address(&task_network(Egress::Open, vec![]).range, slot);
    let gateway = Ipv4Addr::new(10, 213, 0, 1);

    // Hearth reaches her loopback by entering her namespace.
    net::connect(&netns, 7001, Duration::from_secs(5))
        .await
        .expect("Hearth enters alice's namespace");

    let targets = [
        format!("{alice_addr}:7001"),
        format!("{alice_addr}:7002"),
        "127.0.0.1:7001".to_string(),
        "127.0.0.1:7002".to_string(),
        format!("127.0.0.1:{private_port}"),
        format!("{gateway}:{private_port}"),
        "169.254.169.254:8000".to_string(),
        format!("{gateway}:{api_port}"),
        "198.51.100.2:8000".to_string(),
    ];
    let mut argv = vec!["/usr/bin/python3", "-c", PROBE];
    argv.extend(targets.iter().map(String::as_str));
    let probe = with_network(
        env.spec(&bob, &argv),
        task_network(Egress::Open, endpoints.clone()),
    );
    let (exit, out) = env.run(&probe).await;
    assert_eq!(exit.code, Some(0), "{out}");
    for closed in &targets[..7] {
        assert!(
            out.contains(&format!("CLOSED {closed} ")),
            "bob reached {closed}:\n{out}"
        );
    }
    assert!(
        out.contains(&format!("OPEN {gateway}:{api_port}")),
        "bob's task cannot reach Hearth's API at its gateway:\n{out}"
    );
    assert!(
        out.contains("OPEN 198.51.100.2:8000"),
        "bob's task cannot reach the outside world:\n{out}"
    );
    // Bob's /proc/net shows his own namespace: none of alice's sockets, nor the host's.
    assert!(out.contains("LISTENING 0"), "{out}");

    // With no egress: Hearth still, the world not.
    let closed = with_network(
        env.spec(&bob, &argv),
        task_network(Egress::None, endpoints.clone()),
    );
    let (_, out) = env.run(&closed).await;
    assert!(out.contains(&format!("OPEN {gateway}:{api_port}")), "{out}");
    assert!(out.contains("CLOSED 198.51.100.2:8000 "), "{out}");
    // An allow-list: only what it lists.
    let listed = with_network(
        env.spec(&bob, &argv),
        task_network(
            Egress::Only(vec!["198.51.100.2/32".parse().expect("cidr")]),
            endpoints,
        ),
    );
    let (_, out) = env.run(&listed).await;
    assert!(out.contains("OPEN 198.51.100.2:8000"), "{out}");
    assert!(out.contains("CLOSED 169.254.169.254:8000 "), "{out}");

    // Nothing of bob's ever reached alice's task, by TCP or UDP.
    sandbox::stop(&spec.dir, Duration::from_secs(5)).await;
    let exit = server.wait().await;
    assert!(exit.signal.is_some(), "{exit:?}");
    let said = crate::common::log(&spec);
    // (The one connection she accepted is Hearth's own, entering her namespace.)
    assert!(
        said.matches("ACCEPTED").count() == 1 && !said.contains("GOT"),
        "bob's packets reached alice: {said}"
    );
    // Her network is gone with her task.
    assert!(
        eventually(Duration::from_secs(5), || leftovers(slot).is_empty()).await,
        "left behind: {:?}",
        leftovers(slot)
    );
    // The "metadata service" was there all along: root on the host reaches it.
    assert!(
        std::net::TcpStream::connect_timeout(
            &"169.254.169.254:8000".parse().expect("addr"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "the metadata stand-in does not answer, so the test proves nothing"
    );
    drop((outside, hearth_api, private));
}

#[tokio::test]
async fn a_network_whose_shim_was_killed_is_removed_by_the_next_start() {
    needs_isolation!();
    if !can_network() {
        return;
    }
    let mut env = Env::new("network-sweep");
    let carol = env.user("netcarol");
    let spec = with_network(
        env.spec(&carol, &["sleep", "60"]),
        task_network(Egress::Open, vec![]),
    );
    let task = Task::launch(&spec, &shim()).await.expect("launch");
    let slot = task.net_slot().expect("slot");
    assert!(net::netns_path(slot).exists());
    // The shim dies with no chance to clean up; its task dies with it (bwrap's
    // --die-with-parent), the network stays.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(task.shim_pid().expect("shim") as i32, libc::SIGKILL) };
    let shim_pid = task.shim_pid().expect("shim");
    assert!(
        eventually(Duration::from_secs(10), || {
            // Gone, or a zombie until this process (its parent) reaps it.
            std::fs::read_to_string(format!("/proc/{shim_pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true)
        })
        .await
    );
    assert!(!leftovers(slot).is_empty(), "nothing was left to sweep");
    let sweep = tokio::task::spawn_blocking(sandbox::sweep_stale_tasks)
        .await
        .expect("sweep");
    assert!(sweep.networks.contains(&slot), "{sweep:?}");
    assert!(leftovers(slot).is_empty(), "left: {:?}", leftovers(slot));
}

#[tokio::test]
async fn a_resolver_on_the_machines_loopback_is_reached_at_the_gateway_and_nothing_else_there() {
    needs_isolation!();
    if !can_network() {
        return;
    }
    let mut env = Env::new("network-dns");
    let dave = env.user("netdave");
    // A stand-in for systemd-resolved's stub on 127.0.0.53: it answers each datagram with
    // its own bytes reversed. Another loopback UDP service beside it stays out of reach.
    let resolver = std::net::UdpSocket::bind("127.0.0.53:53").expect("bind 127.0.0.53:53");
    let other = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let other_port = other.local_addr().expect("addr").port();
    resolver
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let answer = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        if let Ok((n, peer)) = resolver.recv_from(&mut buf) {
            let reply: Vec<u8> = buf[..n].iter().rev().copied().collect();
            let _ = resolver.send_to(&reply, peer);
        }
    });
    let script = format!(
        r#"
import socket
conf = open("/etc/resolv.conf").read()
ns = [l.split()[1] for l in conf.splitlines() if l.startswith("nameserver")]
print("NAMESERVERS", ns)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(b"query", (ns[0], 53))
try: print("ANSWER", u.recvfrom(100)[0].decode())
except Exception as e: print("NO ANSWER", type(e).__name__)
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); v.settimeout(1)
v.sendto(b"x", (ns[0], {other_port}))
try: print("OTHER ANSWERED", v.recvfrom(100)[0])
except Exception as e: print("OTHER SILENT")
"#
    );
    let mut network = task_network(Egress::None, vec![]);
    network.dns = Some(Ipv4Addr::new(127, 0, 0, 53));
    let spec = with_network(
        env.spec(&dave, &["/usr/bin/python3", "-c", &script]),
        network,
    );
    let (exit, out) = env.run(&spec).await;
    let _ = answer.join();
    assert_eq!(exit.code, Some(0), "{out}");
    assert!(out.contains("NAMESERVERS ['10.213.0.1']"), "{out}");
    assert!(
        out.contains("ANSWER yreuq"),
        "the resolver did not answer through the gateway:\n{out}"
    );
    assert!(out.contains("OTHER SILENT"), "{out}");
    drop(other);
}
