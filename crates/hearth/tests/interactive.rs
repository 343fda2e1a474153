//! Users' web servers behind Hearth's one door: a running job's Spark UI for its owner and
//! admins only, on a loopback port no other uid (not even the owner's) can reach directly.

mod common;

use common::{apps, connects_as, get_page, wait_page, Hearth};
use std::time::{Duration, Instant};

#[test]
fn a_running_jobs_spark_ui_is_behind_the_door_for_its_owner_and_admins_only() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let app = apps().join("ui_job.py");
    let id = h.submit(
        &alice,
        &["--driver-memory", "1g", app.to_str().expect("path"), "600"],
    );
    h.wait_state(&alice, id, "running", Duration::from_secs(180));
    let deadline = Instant::now() + Duration::from_secs(180);
    while !h.logs(&alice, id).contains("ready") {
        assert!(Instant::now() < deadline, "{}", h.logs(&alice, id));
        std::thread::sleep(Duration::from_millis(500));
    }
    let base = format!("/ui/jobs/{id}");

    // The owner: the UI's own redirect stays under the door, and the page is the job's.
    let root = get_page(&h, Some(&alice.token), &format!("{base}/"), false);
    assert!(
        [302, 303, 307].contains(&root.status),
        "{} {}",
        root.status,
        root.body
    );
    let to = root.location.expect("a redirect");
    assert!(to.starts_with(&format!("{base}/")), "{to}");
    let page = wait_page(
        &h,
        &alice.token,
        &format!("{base}/jobs/"),
        Duration::from_secs(60),
    );
    assert!(page.body.contains("ui-job"), "{}", page.body);
    // Spark's links carry the door's prefix.
    assert!(
        page.body.contains(&format!("{base}/stages/")),
        "{}",
        page.body
    );
    assert!(
        !page.csp.contains("sandbox"),
        "the owner's own UI is not sandboxed"
    );
    // The bare prefix is sent to the directory.
    let bare = get_page(&h, Some(&alice.token), &base, false);
    assert_eq!(bare.location.as_deref(), Some(&*format!("{base}/")));

    // An admin sees it, sandboxed: the page is alice's code.
    let admin = get_page(&h, Some(&h.admin.token), &format!("{base}/jobs/"), false);
    assert_eq!(admin.status, 200);
    assert!(
        admin.csp.split(" | ").any(|p| p == "sandbox"),
        "{}",
        admin.csp
    );

    // Bob: as if it did not exist. No credentials: 401, or the login for a browser.
    assert_eq!(
        get_page(&h, Some(&bob.token), &format!("{base}/jobs/"), false).status,
        404
    );
    assert_eq!(
        get_page(&h, None, &format!("{base}/jobs/"), false).status,
        401
    );
    let browser = get_page(&h, None, &format!("{base}/jobs/"), true);
    assert_eq!(browser.status, 303);
    assert_eq!(
        browser.location.as_deref(),
        Some(&*format!("/?next={base}/jobs/"))
    );

    // Straight to the port: only root (Hearth) gets in; neither bob's uid nor alice's own.
    let port: u16 = std::fs::read_to_string(h.data_dir.join(format!("jobs/{id}/ui.port")))
        .expect("ui.port")
        .trim()
        .parse()
        .expect("port");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(!connects_as(bob.uid, port), "bob reached alice's UI port");
    assert!(
        !connects_as(alice.uid, port),
        "the port is for the door only"
    );

    // The UI goes with the job, and its port is no longer held.
    let out = h.cli(&alice, &["cancel", &id.to_string()]);
    assert!(out.status.success());
    h.wait_job(&alice, id, Duration::from_secs(60));
    assert_eq!(
        get_page(&h, Some(&alice.token), &format!("{base}/jobs/"), false).status,
        404
    );
    assert!(!h.data_dir.join(format!("jobs/{id}/ui.port")).exists());
}
