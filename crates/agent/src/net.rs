//! A network of its own for every task: a network namespace with its own loopback, joined
//! to this machine by a veth pair, and one nftables table of the task's rules. What a task
//! listens on (its Spark driver, block manager, py4j gateway, Connect server, notebook and
//! kernels) is on *its* loopback, which no other process on the machine shares; Hearth
//! reaches it by entering the namespace ([`connect`]), never through a port on the host.
//!
//! Addresses come from one private range per machine (default `10.213.0.0/16`): the range's
//! first address is the gateway, put on the host side of *every* task's veth (so it is the
//! same for every task: the place where a task finds Hearth's API and Spark Connect gateway,
//! [`TaskNetwork::endpoints`]), and slot N's task has the address `first + 1 + N`. Routed
//! point to point (a /32 each way, no bridge), every packet between a task and anything
//! else passes the host's IP stack, where the task's table decides:
//! - nothing opens a connection *into* a task, from another task, the host or the world;
//! - a task reaches the host only at Hearth's endpoints (DNAT'd to where Hearth listens);
//! - a task never reaches another task, loopback, link-local (the clouds' metadata
//!   services), multicast, or the CIDRs the admin denies; the rest of the world as its
//!   [`Egress`] says; IPv6 not at all (the namespace has no IPv6 route).
//!
//! The shim sets a task's network up before its sandbox starts and tears it down after
//! its last process is gone ([`setup`], [`teardown`]); each task holds its slot by a file
//! in [`SLOTS_DIR`] naming its task id, so that [`sweep`] at start removes the networks of
//! tasks whose shims are gone (a crash, `kill -9`), whichever Hearth instance made them.

pub use hearth_model::net::{Cidr, Egress};
use std::collections::HashSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where each task's slot is held: a file per slot, holding the task id.
pub const SLOTS_DIR: &str = "/run/hearth/net";
/// The default range of tasks' addresses.
pub const DEFAULT_RANGE: &str = "10.213.0.0/16";
/// Never reachable from a task, whatever its egress: loopback, "this network",
/// link-local (169.254.169.254 is the metadata service of most clouds), multicast and
/// broadcast.
const NEVER: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// One of Hearth's own services that a task may reach: at the gateway address on `port`,
/// forwarded to `to` (where Hearth listens; an unspecified address means loopback).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub port: u16,
    pub to: SocketAddr,
}

/// A task's network, as its launcher asks for it (the slot is the shim's to choose).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskNetwork {
    /// The machine's range of task addresses.
    pub range: Cidr,
    pub egress: Egress,
    /// Networks the admin denies to every task.
    pub deny: Vec<Cidr>,
    pub endpoints: Vec<Endpoint>,
    /// The machine's resolver when it listens on loopback (systemd-resolved's 127.0.0.53):
    /// tasks ask it at their gateway address (forwarded, UDP and TCP port 53), through a
    /// resolv.conf of their own. None: tasks use the machine's resolv.conf as it is.
    #[serde(default)]
    pub dns: Option<Ipv4Addr>,
}

impl TaskNetwork {
    /// Where tasks find Hearth: the range's first address.
    pub fn gateway(range: &Cidr) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(range.addr()) + 1)
    }

    /// How many tasks the range has addresses for.
    pub fn capacity(range: &Cidr) -> u32 {
        // Network address, gateway, broadcast.
        u32::try_from(range.size().saturating_sub(3)).unwrap_or(u32::MAX)
    }

    /// The address of the task in `slot` (from 1).
    pub fn address(range: &Cidr, slot: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(range.addr()) + 1 + slot)
    }
}

/// The first resolver of a resolv.conf when it is on loopback (a task cannot reach the
/// machine's loopback, so it is forwarded to it).
pub fn loopback_resolver(resolv_conf: &str) -> Option<Ipv4Addr> {
    let first = resolv_conf.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next())
            .flatten()
    })?;
    first.parse::<Ipv4Addr>().ok().filter(|ip| ip.is_loopback())
}

/// A task's resolv.conf when the machine's resolver is on loopback: the same, but asking
/// the task's gateway.
pub fn task_resolv_conf(machine: &str, gateway: Ipv4Addr) -> String {
    let mut out = format!("nameserver {gateway}\n");
    for line in machine.lines() {
        if !line.trim_start().starts_with("nameserver") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The namespace of the task in `slot`, as `ip netns` names it.
pub fn netns_name(slot: u32) -> String {
    format!("hearth-{slot}")
}

/// The file that holds the namespace of the task in `slot`: what [`connect`] enters.
pub fn netns_path(slot: u32) -> PathBuf {
    Path::new("/run/netns").join(netns_name(slot))
}

/// The host side of the task's veth (at most 15 bytes, as interface names are).
fn host_link(slot: u32) -> String {
    format!("hh{slot}")
}

fn table(slot: u32) -> String {
    format!("hearth_task_{slot}")
}

/// The nftables table of the task in `slot`. Pure: tested below.
pub fn ruleset(slot: u32, net: &TaskNetwork) -> String {
    let link = host_link(slot);
    let gateway = TaskNetwork::gateway(&net.range);
    let mut never: Vec<String> = NEVER.iter().map(|s| s.to_string()).collect();
    never.push(net.range.to_string());
    never.extend(net.deny.iter().map(Cidr::to_string));
    let mut dnat = String::new();
    let mut admit = String::new();
    for e in &net.endpoints {
        let SocketAddr::V4(to) = e.to else {
            continue; // IPv6 listeners: tasks have no IPv6
        };
        let ip = if to.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST
        } else {
            *to.ip()
        };
        let to = SocketAddrV4::new(ip, to.port());
        dnat.push_str(&format!(
            "    iifname \"{link}\" ip daddr {gateway} tcp dport {} dnat ip to {to}\n",
            e.port
        ));
        admit.push_str(&format!(
            "    iifname \"{link}\" ip daddr {ip} tcp dport {} ct status dnat accept\n",
            to.port()
        ));
    }
    if let Some(dns) = net.dns {
        for proto in ["udp", "tcp"] {
            dnat.push_str(&format!(
                "    iifname \"{link}\" ip daddr {gateway} {proto} dport 53 dnat ip to {dns}:53\n"
            ));
            admit.push_str(&format!(
                "    iifname \"{link}\" ip daddr {dns} {proto} dport 53 ct status dnat accept\n"
            ));
        }
    }
    let egress = match &net.egress {
        Egress::Open => format!("    iifname \"{link}\" accept\n"),
        Egress::None => format!("    iifname \"{link}\" drop\n"),
        Egress::Only(allow) if allow.is_empty() => format!("    iifname \"{link}\" drop\n"),
        Egress::Only(allow) => format!(
            "    iifname \"{link}\" ip daddr {{ {} }} accept\n    iifname \"{link}\" drop\n",
            allow
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let table = table(slot);
    format!(
        "table inet {table} {{
  chain endpoints {{
    type nat hook prerouting priority dstnat; policy accept;
{dnat}  }}
  chain to_host {{
    type filter hook input priority filter; policy accept;
    iifname \"{link}\" ct state established,related accept
{admit}    iifname \"{link}\" drop
  }}
  chain through {{
    type filter hook forward priority filter; policy accept;
    oifname \"{link}\" ct state established,related accept
    oifname \"{link}\" drop
    iifname \"{link}\" meta nfproto ipv6 drop
    iifname \"{link}\" ip daddr {{ {never} }} drop
{egress}  }}
  chain from_host {{
    type filter hook output priority filter; policy accept;
    oifname \"{link}\" ct state established,related accept
    oifname \"{link}\" drop
  }}
  chain outbound {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname \"{link}\" oifname != \"{link}\" masquerade
  }}
}}
",
        never = never.join(", "),
    )
}

/// What a node started with `--insecure-shared-network` reports (`hearth nodes` shows it).
pub const SHARED_NETWORK_PROBLEM: &str = "tasks share this machine's network \
    (--insecure-shared-network): a user's job reaches whatever another's listens on";

/// How a node gives its tasks networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Each task a network of its own, with an address from `range`; `deny`: networks no
    /// task may reach.
    Own { range: Cidr, deny: Vec<Cidr> },
    /// Tasks share the machine's network (`--insecure-shared-network`): any task reaches
    /// what any other listens on.
    SharedInsecure,
}

impl Default for NetworkMode {
    fn default() -> Self {
        NetworkMode::Own {
            range: DEFAULT_RANGE
                .parse()
                .unwrap_or_else(|_| unreachable!("a valid range")),
            deny: Vec::new(),
        }
    }
}

/// The network each of a node's tasks gets, or None when they share the machine's; an
/// error when tasks must have networks of their own and cannot (the node then runs none).
/// `isolated`: tasks run sandboxed under their users' uids (without, they are this
/// process's, and so is everything they listen on).
pub fn node_network(
    mode: &NetworkMode,
    isolated: bool,
    endpoints: Vec<Endpoint>,
) -> Result<Option<TaskNetwork>, String> {
    let NetworkMode::Own { range, deny } = mode else {
        return Ok(None);
    };
    if !isolated {
        return Ok(None);
    }
    if TaskNetwork::capacity(range) < 1 || range.size() > 1 << 24 {
        return Err(format!(
            "the task network {range} must hold from 4 addresses to a /8"
        ));
    }
    if let Some(why) = probe() {
        return Err(format!(
            "tasks cannot have networks of their own here: {why}. Fix that, or start with \
             --insecure-shared-network to run every task in this machine's network, where \
             any user's job reaches what another's listens on"
        ));
    }
    Ok(Some(TaskNetwork {
        range: *range,
        egress: Egress::Open,
        deny: deny.clone(),
        endpoints,
        dns: loopback_resolver(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    }))
}

/// Why tasks cannot have networks of their own here, or None when they can.
pub fn probe() -> Option<String> {
    if !crate::sandbox::is_root() {
        return Some("not running as root (network namespaces need CAP_NET_ADMIN)".into());
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if crate::sandbox::find_program(program).is_none() {
            return Some(format!(
                "`{program}` is not installed: apt-get install {package}"
            ));
        }
    }
    // A namespace made and removed: the kernel may lack them, or a container forbid them.
    let name = format!("hearth-probe-{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &name], None) {
        return Some(format!("cannot make a network namespace: {e}"));
    }
    let _ = ip(&["netns", "delete", &name], None);
    None
}

fn program(name: &str) -> Result<PathBuf, String> {
    crate::sandbox::find_program(name).ok_or_else(|| format!("`{name}` is not installed"))
}

/// Runs `ip ARGS`, feeding `batch` to it when given (`-batch -`).
fn ip(args: &[&str], batch: Option<&str>) -> Result<(), String> {
    run(&program("ip")?, args, batch)
}

fn run(program: &Path, args: &[&str], input: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing to {}: {e}", program.display()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {}: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Takes the first free slot for `task_id` (a file made exclusively in [`SLOTS_DIR`]).
pub fn claim(task_id: &str, range: &Cidr) -> Result<u32, String> {
    std::fs::create_dir_all(SLOTS_DIR).map_err(|e| format!("creating {SLOTS_DIR}: {e}"))?;
    for slot in 1..=TaskNetwork::capacity(range) {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(slot_file(slot))
        {
            Ok(mut f) => {
                f.write_all(task_id.as_bytes())
                    .map_err(|e| format!("writing {}: {e}", slot_file(slot).display()))?;
                return Ok(slot);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("claiming {}: {e}", slot_file(slot).display())),
        }
    }
    Err(format!(
        "every address of the task network {range} is taken ({} tasks run)",
        TaskNetwork::capacity(range)
    ))
}

fn slot_file(slot: u32) -> PathBuf {
    Path::new(SLOTS_DIR).join(slot.to_string())
}

/// Makes the task's namespace, veth and rules. On error, whatever was made is removed
/// (the slot stays claimed: the caller releases it with [`teardown`]).
pub fn setup(slot: u32, net: &TaskNetwork) -> Result<(), String> {
    let made = setup_steps(slot, net);
    if made.is_err() {
        teardown_network(slot);
    }
    made
}

fn setup_steps(slot: u32, net: &TaskNetwork) -> Result<(), String> {
    let ns = netns_name(slot);
    let link = host_link(slot);
    let gateway = TaskNetwork::gateway(&net.range);
    let address = TaskNetwork::address(&net.range, slot);
    // Left by a task whose teardown did not finish: this slot is ours now.
    teardown_network(slot);
    ip(&["netns", "add", &ns], None)?;
    ip(
        &["-batch", "-"],
        Some(&format!(
            "link add {link} type veth peer name eth0 netns {ns}\n\
             addr add {gateway}/32 dev {link}\n\
             link set {link} up\n\
             route add {address}/32 dev {link} src {gateway}\n"
        )),
    )?;
    ip(
        &["-n", &ns, "-batch", "-"],
        Some(&format!(
            "link set lo up\n\
             addr add {address}/32 dev eth0\n\
             link set eth0 up\n\
             route add {gateway}/32 dev eth0 scope link\n\
             route add default via {gateway} dev eth0\n"
        )),
    )?;
    // The host side speaks no IPv6 (no link-local address to reach the host by), lets
    // DNAT to loopback through (Hearth listening on 127.0.0.1), and the machine forwards
    // the tasks' egress.
    sysctl(&format!("net/ipv6/conf/{link}/disable_ipv6"), "1")?;
    if !net.endpoints.is_empty() || net.dns.is_some() {
        sysctl(&format!("net/ipv4/conf/{link}/route_localnet"), "1")?;
    }
    if net.egress != Egress::None {
        sysctl("net/ipv4/ip_forward", "1")?;
    }
    run(&program("nft")?, &["-f", "-"], Some(&ruleset(slot, net)))
}

fn sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = Path::new("/proc/sys").join(key);
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| format!("setting {}: {e}", path.display()))
}

/// Removes the task's rules, namespace and veth, then gives its slot back. Call it once
/// no process of the task is left (a namespace lives on while a process is in it; the
/// veth is removed all the same, so the task is cut off either way).
pub fn teardown(slot: u32) {
    teardown_network(slot);
    let _ = std::fs::remove_file(slot_file(slot));
}

fn teardown_network(slot: u32) {
    if let Ok(nft) = program("nft") {
        let _ = run(&nft, &["delete", "table", "inet", &table(slot)], None);
    }
    if netns_path(slot).exists() {
        let _ = ip(&["netns", "delete", &netns_name(slot)], None);
    }
    if Path::new("/sys/class/net").join(host_link(slot)).exists() {
        let _ = ip(&["link", "delete", &host_link(slot)], None);
    }
}

/// Removes the network of task `task_id`, if one is left (its shim is gone).
pub fn release(task_id: &str) {
    let Ok(entries) = std::fs::read_dir(SLOTS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let Some(slot) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if std::fs::read_to_string(e.path()).is_ok_and(|t| t.trim() == task_id) {
            teardown(slot);
        }
    }
}

/// What [`sweep`] removed: the slots of tasks whose shims are gone.
pub fn sweep(live_task_ids: impl Fn() -> HashSet<String>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(SLOTS_DIR) else {
        return Vec::new();
    };
    // Listed before the live tasks are: a slot is claimed by a running shim, so a claim
    // seen here whose shim is not found below has ended.
    let claims: Vec<(u32, String)> = entries
        .flatten()
        .filter_map(|e| {
            let slot = e.file_name().to_str()?.parse().ok()?;
            Some((slot, std::fs::read_to_string(e.path()).unwrap_or_default()))
        })
        .collect();
    if claims.is_empty() {
        return Vec::new();
    }
    let live = live_task_ids();
    let mut removed = Vec::new();
    for (slot, task) in claims {
        if !live.contains(task.trim()) {
            teardown(slot);
            tracing::info!(slot, task = %task.trim(), "removed a task network left behind");
            removed.push(slot);
        }
    }
    removed
}

/// A TCP connection to `127.0.0.1:port` inside the network namespace at `netns`: how
/// Hearth reaches what a task serves on its own loopback. Made on a thread of its own
/// that enters the namespace and ends (a thread in another namespace is never reused).
pub async fn connect(
    netns: &Path,
    port: u16,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let ns = std::fs::File::open(netns)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hearth-netns-connect".into())
        .spawn(move || {
            let result = (|| {
                // SAFETY: setns with a valid descriptor; it moves this thread only.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })();
            let _ = tx.send(result);
        })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended without a word"))??;
    let stream = tokio::net::TcpStream::from_std(stream)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The uid listening on TCP `port` in the network namespace of process `pid` (IPv4 or
/// IPv6), or None: how Hearth sees that a task's server is up, and is the task's.
pub fn listener_uid(pid: u32, port: u16) -> Option<u32> {
    let dir = PathBuf::from(format!("/proc/{pid}/net"));
    crate::portguard::listener_uid_in(&[dir.join("tcp"), dir.join("tcp6")], port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(egress: Egress) -> TaskNetwork {
        TaskNetwork {
            range: "10.213.0.0/16".parse().expect("range"),
            egress,
            deny: vec!["192.168.0.0/16".parse().expect("cidr")],
            endpoints: vec![
                Endpoint {
                    port: 7070,
                    to: "127.0.0.1:7070".parse().expect("addr"),
                },
                Endpoint {
                    port: 15002,
                    to: "0.0.0.0:15002".parse().expect("addr"),
                },
            ],
            dns: None,
        }
    }

    #[test]
    fn addresses_come_from_the_range_with_one_gateway() {
        let range: Cidr = "10.213.0.0/16".parse().expect("range");
        assert_eq!(TaskNetwork::gateway(&range).to_string(), "10.213.0.1");
        assert_eq!(TaskNetwork::address(&range, 1).to_string(), "10.213.0.2");
        assert_eq!(TaskNetwork::address(&range, 300).to_string(), "10.213.1.45");
        assert_eq!(TaskNetwork::capacity(&range), 65533);
        let last = TaskNetwork::address(&range, TaskNetwork::capacity(&range));
        assert!(range.contains(last) && last.to_string() == "10.213.255.254");
    }

    #[test]
    fn a_task_reaches_hearth_and_the_world_but_never_another_task_or_the_metadata_service() {
        let rules = ruleset(7, &net(Egress::Open));
        assert!(rules.starts_with("table inet hearth_task_7 {"), "{rules}");
        // Hearth's endpoints: at the gateway, to where Hearth listens (loopback for 0.0.0.0).
        assert!(rules.contains(
            "iifname \"hh7\" ip daddr 10.213.0.1 tcp dport 7070 dnat ip to 127.0.0.1:7070"
        ));
        assert!(rules.contains("tcp dport 15002 dnat ip to 127.0.0.1:15002"));
        assert!(rules.contains("ip daddr 127.0.0.1 tcp dport 7070 ct status dnat accept"));
        // Nothing else of the host, nothing into the task.
        let input_drop = rules
            .find("    iifname \"hh7\" drop\n  }\n  chain through")
            .expect("input drop");
        assert!(rules.find("ct status dnat accept").expect("admit") < input_drop);
        assert!(rules.contains("oifname \"hh7\" drop"));
        assert!(rules.contains(
            "ip daddr { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 240.0.0.0/4, 10.213.0.0/16, 192.168.0.0/16 } drop"
        ));
        let never = rules.find("169.254.0.0/16").expect("never");
        let open = rules
            .find("    iifname \"hh7\" accept")
            .expect("open egress");
        assert!(
            never < open,
            "the never-reachable networks are dropped before egress is let out"
        );
        assert!(rules.contains("iifname \"hh7\" oifname != \"hh7\" masquerade"));
    }

    #[test]
    fn egress_none_and_allow_lists() {
        let none = ruleset(3, &net(Egress::None));
        assert!(!none.contains("iifname \"hh3\" accept"));
        let only = ruleset(
            3,
            &net(Egress::Only(vec!["203.0.113.0/24".parse().expect("cidr")])),
        );
        assert!(only.contains(
            "iifname \"hh3\" ip daddr { 203.0.113.0/24 } accept\n    iifname \"hh3\" drop"
        ));
        assert_eq!(ruleset(3, &net(Egress::Only(vec![]))), none);
    }

    #[test]
    fn a_task_network_reads_back_as_written() {
        let n = net(Egress::Only(vec!["8.8.8.8/32".parse().expect("cidr")]));
        let json = serde_json::to_string(&n).expect("json");
        assert!(json.contains("\"range\":\"10.213.0.0/16\""), "{json}");
        assert_eq!(serde_json::from_str::<TaskNetwork>(&json).expect("back"), n);
        assert!(serde_json::from_str::<Cidr>("\"10.0.0.1/8\"").is_err());
    }

    #[test]
    fn a_resolver_on_loopback_is_asked_at_the_gateway() {
        let conf = "# made by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let dns = loopback_resolver(conf);
        assert_eq!(dns, Some(Ipv4Addr::new(127, 0, 0, 53)));
        assert_eq!(loopback_resolver("nameserver 10.255.255.53\n"), None);
        let gw = Ipv4Addr::new(10, 213, 0, 1);
        assert_eq!(
            task_resolv_conf(conf, gw),
            "nameserver 10.213.0.1\n# made by systemd-resolved\noptions edns0 trust-ad\nsearch lan\n"
        );
        let mut n = net(Egress::None);
        n.dns = dns;
        let rules = ruleset(4, &n);
        assert!(
            rules.contains(
                "iifname \"hh4\" ip daddr 10.213.0.1 udp dport 53 dnat ip to 127.0.0.53:53"
            ),
            "{rules}"
        );
        assert!(
            rules.contains("ip daddr 127.0.0.53 tcp dport 53 ct status dnat accept"),
            "{rules}"
        );
    }
}
