//! Keeps the loopback ports of users' web servers (Spark UIs, notebooks) for Hearth alone.
//!
//! A task's web server listens on 127.0.0.1, and every local uid can connect to loopback:
//! without a guard, any user on the machine could read another user's Spark UI or drive
//! their notebook. So each port handed to such a server is *guarded*: an nftables table of
//! this Hearth instance (`inet hearth_<instance>`) rejects connections to it over loopback
//! from every uid but root (Hearth's proxy, which checks who is asking), and drops packets
//! for loopback addresses that arrive on any other interface. The same port number on other
//! addresses is left alone.
//!
//! Ports are reserved here (never handed to two tasks), guarded before the task starts and
//! released when it ends. The rules are checked again from time to time ([`PortGuard::ensure`])
//! and put back if someone flushed them.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The guarded ports of one Hearth instance.
pub struct PortGuard {
    nft: PathBuf,
    table: String,
    ports: Mutex<BTreeSet<u16>>,
}

/// A TCP port free on the loopback interface now (the OS may hand it out again; Spark moves
/// on to the next port by itself where that matters).
pub fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(4040)
}

/// The uid owning a socket listening on `port` (IPv4 or IPv6), from /proc/net.
pub fn listener_uid(port: u16) -> Option<u32> {
    listener_uid_in(
        &[
            PathBuf::from("/proc/net/tcp"),
            PathBuf::from("/proc/net/tcp6"),
        ],
        port,
    )
}

/// The uid owning a socket listening on `port`, from tables in the format of /proc/net/tcp.
pub fn listener_uid_in(tables: &[PathBuf], port: u16) -> Option<u32> {
    let want = format!(":{port:04X}");
    tables.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        text.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is column 1, state column 3 (0A = LISTEN), uid column 7.
            if cols.len() > 7 && cols[1].ends_with(&want) && cols[3] == "0A" {
                cols[7].parse().ok()
            } else {
                None
            }
        })
    })
}

/// Puts a guard's rules back whenever they go missing (someone flushed the machine's
/// nftables ruleset): a guarded port must never be open to everyone for long. Runs while
/// the guard lives, until `stop` resolves.
pub async fn keep_guarded(
    guard: std::sync::Weak<PortGuard>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
        }
        let Some(g) = guard.upgrade() else { return };
        match tokio::task::spawn_blocking(move || g.ensure()).await {
            Ok(Ok(true)) => tracing::warn!("the port guard's rules were gone: put back"),
            Ok(Err(e)) => tracing::error!("checking the port guard: {e}"),
            _ => {}
        }
    }
}

/// The port guard's instance name of `hearth agent` on `data_dir`: one per agent, even
/// with several on one machine. Its tasks outlive the agent, so the agent never removes its
/// table; whoever retires an agent's data dir removes it ([`remove_table`]).
pub fn agent_instance(data_dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(data_dir.display().to_string().as_bytes());
    format!("n{}", hex::encode(&digest[..6]))
}

/// Removes an instance's table, if there is one (its tasks are gone).
pub fn remove_table(instance: &str) {
    if let Some(nft) = crate::sandbox::find_program("nft") {
        let _ = Command::new(nft)
            .args(["delete", "table", "inet", &table_name(instance)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The nftables table of a Hearth instance.
pub fn table_name(instance: &str) -> String {
    format!("hearth_{instance}")
}

impl PortGuard {
    /// Sets up the instance's table (replacing any left by an earlier run of the same
    /// instance), or says why ports cannot be guarded here.
    pub fn new(instance: &str) -> Result<PortGuard, String> {
        if !instance.chars().all(|c| c.is_ascii_alphanumeric()) || instance.is_empty() {
            return Err(format!("`{instance}` cannot name an nftables table"));
        }
        if !crate::sandbox::is_root() {
            return Err("guarding ports needs root".into());
        }
        let nft = crate::sandbox::find_program("nft")
            .ok_or("nftables is not installed: apt-get install nftables")?;
        let guard = PortGuard {
            nft,
            table: table_name(instance),
            ports: Mutex::new(BTreeSet::new()),
        };
        // A table left by a crashed run guards ports nobody uses any more.
        let _ = guard.run(&format!("delete table inet {}\n", guard.table));
        guard.create()?;
        Ok(guard)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u16>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The whole table, with `ports` in its set.
    fn script(&self, ports: &BTreeSet<u16>) -> String {
        let elements = if ports.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!("elements = {{ {} }}; ", list.join(", "))
        };
        let t = &self.table;
        format!(
            "table inet {t} {{\n\
             \x20 set guarded {{ type inet_service; {elements}}}\n\
             \x20 chain output {{\n\
             \x20   type filter hook output priority 0; policy accept;\n\
             \x20   oifname \"lo\" ip daddr 127.0.0.0/8 tcp dport @guarded meta skuid != 0 reject with tcp reset\n\
             \x20   oifname \"lo\" ip6 daddr ::1 tcp dport @guarded meta skuid != 0 reject with tcp reset\n\
             \x20 }}\n\
             \x20 chain input {{\n\
             \x20   type filter hook input priority 0; policy accept;\n\
             \x20   iifname != \"lo\" ip daddr 127.0.0.0/8 tcp dport @guarded drop\n\
             \x20   iifname != \"lo\" ip6 daddr ::1 tcp dport @guarded drop\n\
             \x20 }}\n\
             }}\n"
        )
    }

    fn create(&self) -> Result<(), String> {
        let ports = self.lock().clone();
        self.run(&self.script(&ports))
    }

    /// Runs an nft script (read from stdin, applied atomically).
    fn run(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new(&self.nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.nft.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft refused the rules: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A port free now on every address, reserved for one task and guarded from now on.
    pub fn reserve(&self) -> Result<u16, String> {
        for _ in 0..32 {
            // Free on 0.0.0.0, so nothing of anyone's listens on it at any address.
            let port = std::net::TcpListener::bind("0.0.0.0:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| format!("finding a free port: {e}"))?;
            if self.lock().contains(&port) {
                continue;
            }
            self.guard(port)?;
            return Ok(port);
        }
        Err("no free port found to guard".into())
    }

    /// Guards `port` again (a task reattached after Hearth restarted).
    pub fn guard(&self, port: u16) -> Result<(), String> {
        self.lock().insert(port);
        let added = self.run(&format!(
            "add element inet {} guarded {{ {port} }}\n",
            self.table
        ));
        if added.is_err() {
            // The table may have been flushed: put it all back, this port included.
            self.create()?;
        }
        Ok(())
    }

    /// Stops guarding `port` (its task ended); it may be handed out again.
    pub fn release(&self, port: u16) {
        if self.lock().remove(&port) {
            let _ = self.run(&format!(
                "delete element inet {} guarded {{ {port} }}\n",
                self.table
            ));
        }
    }

    /// Whether `port` is guarded (a proxy serves only guarded ports).
    pub fn holds(&self, port: u16) -> bool {
        self.lock().contains(&port)
    }

    /// Puts the rules back if they are gone or lost elements (someone ran `nft flush
    /// ruleset`, or deleted the table). Returns whether anything had to be restored.
    pub fn ensure(&self) -> Result<bool, String> {
        let want = self.lock().clone();
        let listed = Command::new(&self.nft)
            .args(["list", "set", "inet", &self.table, "guarded"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("running nft: {e}"))?;
        let text = String::from_utf8_lossy(&listed.stdout);
        let intact = listed.status.success()
            && want.iter().all(|p| {
                text.split(|c: char| !c.is_ascii_digit())
                    .any(|w| w == p.to_string())
            });
        // The chains could be flushed while the set survives: check they still reject.
        let chains_ok = Command::new(&self.nft)
            .args(["list", "chain", "inet", &self.table, "output"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("reject"))
            .unwrap_or(false);
        if intact && chains_ok {
            return Ok(false);
        }
        let _ = self.run(&format!("delete table inet {}\n", self.table));
        self.create()?;
        Ok(true)
    }

    /// Removes the instance's table (Hearth is stopping: its tasks are gone).
    pub fn teardown(&self) {
        let _ = self.run(&format!("delete table inet {}\n", self.table));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_rejects_other_uids_over_loopback_only() {
        let g = PortGuard {
            nft: PathBuf::from("nft"),
            table: table_name("ab12"),
            ports: Mutex::new(BTreeSet::new()),
        };
        let s = g.script(&BTreeSet::from([4040, 8888]));
        assert!(s.starts_with("table inet hearth_ab12 {"), "{s}");
        assert!(s.contains("elements = { 4040, 8888 }"), "{s}");
        assert!(s.contains(
            "oifname \"lo\" ip daddr 127.0.0.0/8 tcp dport @guarded meta skuid != 0 reject"
        ));
        assert!(s.contains("iifname != \"lo\" ip daddr 127.0.0.0/8 tcp dport @guarded drop"));
        // An empty set is still a valid set.
        assert!(g
            .script(&BTreeSet::new())
            .contains("set guarded { type inet_service; }"));
    }

    #[test]
    fn instance_names_are_checked() {
        assert!(PortGuard::new("x; flush ruleset").is_err());
        assert!(PortGuard::new("").is_err());
    }
}

#[cfg(test)]
mod listeners {
    use super::*;

    #[test]
    fn a_listener_is_found_with_its_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(listener_uid(port), Some(me));
        drop(l);
        assert_eq!(listener_uid(port), None);
    }
}
