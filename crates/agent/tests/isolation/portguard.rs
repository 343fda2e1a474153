use hearth_agent::portguard::{table_name, PortGuard};
use std::net::TcpListener;
use std::process::Command;

/// Whether uid 65534 (nobody) can connect to 127.0.0.1:`port`.
fn nobody_connects(port: u16) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 10)"),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn a_guarded_port_lets_in_only_root_even_after_its_rules_are_flushed() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: guarding ports needs root");
        return;
    }
    let instance = format!("t{}", std::process::id());
    let guard = PortGuard::new(&instance).expect("nftables (scripts/test.sh installs it)");
    let port = guard.reserve().expect("a port");
    assert!(guard.holds(port));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("listen");
    let accept = std::thread::spawn(move || {
        for c in listener.incoming().take(3) {
            drop(c);
        }
    });
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(!nobody_connects(port), "another uid reached a guarded port");

    // Someone deletes the table: the check puts it back, port included.
    let out = Command::new("nft")
        .args(["delete", "table", "inet", &table_name(&instance)])
        .output()
        .expect("nft");
    assert!(out.status.success());
    assert!(guard.ensure().expect("ensure"), "the loss went unnoticed");
    assert!(
        !guard.ensure().expect("ensure"),
        "intact rules were rebuilt"
    );
    assert!(
        !nobody_connects(port),
        "the restored rules let another uid in"
    );

    // Released: open again; torn down: the table is gone.
    guard.release(port);
    assert!(nobody_connects(port), "a released port stayed closed");
    guard.teardown();
    let listed = Command::new("nft")
        .args(["list", "table", "inet", &table_name(&instance)])
        .output()
        .expect("nft");
    assert!(!listed.status.success(), "the table outlived its guard");
    let _ = std::net::TcpStream::connect(("127.0.0.1", port));
    let _ = accept.join();
}
