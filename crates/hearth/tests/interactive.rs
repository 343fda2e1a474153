//! Users' web servers behind Hearth's one door: a running job's Spark UI for its owner and
//! admins only; a user's notebook (JupyterLab, driven here by a Jupyter client over HTTP and
//! WebSocket) for its owner alone, its kernels running Spark on the owner's own engine. All
//! on loopback ports no other uid (not even the owner's) can reach directly.

mod common;

use common::{apps, connects_as, get_page, runtime, text, wait_page, Hearth, User};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs cells in a new kernel of `user`'s notebook through the door; a line per cell.
fn run_cells(h: &Hearth, user: &User, cells: &[&str]) -> Vec<String> {
    let out = Command::new("timeout")
        .arg("600")
        .arg(runtime().join("bin").join("python"))
        .arg(apps().join("notebook_client.py"))
        .arg(format!("{}/user/{}", h.url, user.name))
        .arg(&user.token)
        .args(cells)
        .output()
        .expect("run the notebook client");
    assert!(
        out.status.success(),
        "notebook client failed ({}):\n{}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        h.server_log()
    );
    text(&out.stdout).lines().map(str::to_string).collect()
}

fn start_notebook(h: &Hearth, user: &User) {
    let out = h.cli(user, &["notebook", "start"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        h.server_log()
    );
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{}/user/{}/", h.url, user.name)
    );
}

/// The user's sessions of `kind`.
fn sessions_of(h: &Hearth, user: &User, kind: &str) -> Vec<serde_json::Value> {
    let out = h.cli(user, &["sessions", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    all.into_iter().filter(|s| s["kind"] == kind).collect()
}

#[test]
fn a_notebook_runs_spark_as_its_owner_and_nobody_else_gets_in() {
    let mut h = Hearth::start_with(&["--engine-cores", "1", "--engine-memory", "1g"]);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    start_notebook(&h, &alice);

    // A cell runs as alice, in her workspace, and `spark` is her own engine.
    let cells = run_cells(
        &h,
        &alice,
        &[
            "import os; print(os.getuid(), os.getcwd())",
            "print(spark.sql('select current_user() as u').collect()[0].u)",
            "print(spark.range(100).selectExpr('sum(id)').collect()[0][0])",
        ],
    );
    assert_eq!(
        cells[0],
        format!("OK {} {}", alice.uid, h.workspace(&alice).display())
    );
    assert_eq!(cells[1], "OK alice", "{cells:?}");
    assert_eq!(cells[2], "OK 4950", "{cells:?}");

    // The kernels' token opens Spark Connect only: code in the notebook cannot drive the
    // REST API as alice with it (her jobs, files, tokens), only her engine.
    let steal = "import os, re, urllib.request, urllib.error\n\
         tok = re.search(r'x-hearth-token=([^;]+)', os.environ['SPARK_REMOTE']).group(1)\n\
         req = urllib.request.Request(os.environ['HEARTH_SERVER'] + '/api/v1/jobs', headers={'Authorization': 'Bearer ' + tok})\n\
         try:\n    print(urllib.request.urlopen(req).status)\n\
         except urllib.error.HTTPError as e:\n    print(e.code)";
    let cells = run_cells(&h, &alice, &[steal]);
    assert_eq!(cells[0], "OK 403", "{cells:?}");
    let (_, tokens) = h.api(&alice, "GET", "/api/v1/tokens", None);
    let kernel = tokens
        .as_array()
        .and_then(|a| {
            a.iter().find(|t| {
                t["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("notebook-kernel-"))
            })
        })
        .cloned()
        .expect("the kernels' token");
    assert_eq!(kernel["scope"], "connect", "{kernel}");

    // Nobody else gets in, admins included: as if there were no notebook.
    let api = "/user/alice/api/kernels";
    assert_eq!(get_page(&h, Some(&bob.token), api, false).status, 404);
    assert_eq!(get_page(&h, Some(&h.admin.token), api, false).status, 404);
    assert_eq!(get_page(&h, None, api, false).status, 401);
    let browser = get_page(&h, None, "/user/alice/lab", true);
    assert_eq!(browser.status, 303);
    assert_eq!(browser.location.as_deref(), Some("/?next=/user/alice/lab"));
    assert_eq!(
        wait_page(&h, &alice.token, "/user/alice/lab", Duration::from_secs(30)).status,
        200
    );

    // Straight to the port: no uid but root connects, and root without Jupyter's token
    // (which only Hearth holds) is refused by Jupyter itself.
    let notebook = &sessions_of(&h, &alice, "notebook")[0];
    assert_eq!(notebook["url"], "/user/alice/");
    let spec = h
        .data_dir
        .join(format!("engines/{}/task/spec.json", notebook["id"]));
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec).expect("spec")).expect("json");
    let port: u16 = spec["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--port="))
        .expect("--port")
        .parse()
        .expect("port");
    assert!(
        !connects_as(bob.uid, port),
        "bob reached alice's notebook port"
    );
    assert!(
        !connects_as(alice.uid, port),
        "the port is for the door only"
    );
    // Nothing of it on this machine's loopback: it listens on its own network's, where
    // root entering it still meets Jupyter's refusal.
    assert_eq!(common::listener_in(std::process::id(), port), None);
    let task = h.data_dir.join(format!("engines/{}/task", notebook["id"]));
    let direct = common::in_network_of(common::task_pid(&task), Path::new("/usr/bin/python3"))
        .arg("-c")
        .arg(format!(
            "import urllib.request, urllib.error\n\
             try:\n    urllib.request.urlopen('http://127.0.0.1:{port}{api}', timeout=10)\n\
             except urllib.error.HTTPError as e:\n    print(e.code)"
        ))
        .output()
        .expect("nsenter");
    assert_eq!(
        text(&direct.stdout).trim(),
        "403",
        "{}",
        text(&direct.stderr)
    );

    // The kernels' token is alice's while the notebook runs, and goes with it.
    let kernel_token = |h: &Hearth| {
        let out = h.cli(&alice, &["token", "list", "-o", "json"]);
        text(&out.stdout).contains("notebook-kernel-")
    };
    assert!(kernel_token(&h));
    let out = h.cli(&alice, &["notebook", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sessions_of(&h, &alice, "notebook").is_empty() || kernel_token(&h) {
        assert!(Instant::now() < deadline, "the notebook did not stop");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(get_page(&h, Some(&alice.token), api, false).status, 404);
}

#[test]
fn an_idle_notebook_is_stopped_but_not_while_a_cell_runs() {
    let mut h = Hearth::start_with(&["--notebook-idle-timeout", "5s"]);
    let alice = h.add_user("alice");
    start_notebook(&h, &alice);
    // A silent cell for 40 s, the client gone: the busy kernel is use.
    run_cells(&h, &alice, &["--detach", "import time; time.sleep(40)"]);
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        sessions_of(&h, &alice, "notebook").len(),
        1,
        "culled while a cell ran:\n{}",
        h.server_log()
    );
    // Once it is done and nobody comes, it goes.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !sessions_of(&h, &alice, "notebook").is_empty() {
        assert!(Instant::now() < deadline, "an idle notebook was kept");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(h.server_log().contains("stopping an idle engine"));
    // Kernels that never used `spark` release their session as they exit: that must not
    // start a Spark engine just to hear there was none.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        sessions_of(&h, &alice, "spark-connect").is_empty(),
        "a kernel's exit started an engine:\n{}",
        h.server_log()
    );
}

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
    // On the job's own network's loopback, as alice; nothing of it on this machine's.
    let task = common::task_pid(&h.data_dir.join(format!("jobs/{id}-1/task")));
    assert_eq!(common::listener_in(task, port), Some(alice.uid));
    assert_eq!(common::listener_in(std::process::id(), port), None);
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

#[test]
fn a_notebook_and_its_spark_engine_outlive_a_crash_of_hearth() {
    let mut h = Hearth::start_with(&["--engine-cores", "1", "--engine-memory", "1g"]);
    let alice = h.add_user("alice");
    start_notebook(&h, &alice);
    let cells = run_cells(&h, &alice, &["print(spark.range(3).count())"]);
    assert_eq!(cells[0], "OK 3", "{cells:?}");
    let ids = |h: &Hearth| {
        let mut v: Vec<(String, u64)> = ["notebook", "spark-connect"]
            .iter()
            .flat_map(|k| sessions_of(h, &alice, k))
            .map(|s| {
                (
                    s["kind"].as_str().unwrap_or("").to_string(),
                    s["id"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = ids(&h);
    assert_eq!(before.len(), 2, "{before:?}");

    // Hearth dies; its tasks' shims do not. The next Hearth takes both back.
    h.kill9();
    h.boot();
    assert_eq!(ids(&h), before, "{}", h.server_log());
    let deadline = Instant::now() + Duration::from_secs(60);
    while sessions_of(&h, &alice, "notebook")[0]["state"] != "running" {
        assert!(Instant::now() < deadline, "{}", h.server_log());
        std::thread::sleep(Duration::from_millis(500));
    }
    // A new kernel reaches the same engine (no new one started) with the kept token.
    let cells = run_cells(&h, &alice, &["print(spark.range(4).count())"]);
    assert_eq!(cells[0], "OK 4", "{cells:?}");
    assert_eq!(ids(&h), before);

    // And they still end as usual.
    let out = h.cli(&alice, &["notebook", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sessions_of(&h, &alice, "notebook").is_empty() {
        assert!(Instant::now() < deadline, "the notebook did not stop");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_proxied_app_cannot_set_hearths_cookies_nor_clear_the_site() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let app = apps().join("cookie_ui.py");
    let id = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            app.to_str().expect("path"),
            "120",
        ],
    );
    h.wait_state(&alice, id, "running", Duration::from_secs(180));
    let deadline = Instant::now() + Duration::from_secs(180);
    while !h.logs(&alice, id).contains("ready") {
        assert!(Instant::now() < deadline, "{}", h.logs(&alice, id));
        std::thread::sleep(Duration::from_millis(300));
    }
    // The door answers as the owner's page would reach a browser; an admin viewing it too.
    let fetch = |token: &str, path: &str| {
        let url = format!("{}/ui/jobs/{id}{path}", h.url);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resp = match ureq::get(&url)
                .set("Authorization", &format!("Bearer {token}"))
                .call()
            {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("GET {url}: {e}"),
            };
            if resp.status() != 503 {
                return resp;
            }
            assert!(Instant::now() < deadline, "the UI never came up");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    for token in [alice.token.as_str(), h.admin.token.as_str()] {
        let resp = fetch(token, "/page");
        assert_eq!(resp.status(), 200);
        let cookies: Vec<String> = resp
            .all("set-cookie")
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert!(resp.header("clear-site-data").is_none());
        assert!(resp.header("refresh").is_none());
        // Only the app's own cookie, and only for its own place under the door.
        assert_eq!(
            cookies,
            vec![format!("app_pref=dark; Path=/ui/jobs/{id}/")],
            "{cookies:?}"
        );
        assert!(resp.into_string().expect("body").contains("hostile page"));
        let raw = fetch(token, "/raw");
        assert_eq!(raw.status(), 200);
        assert!(
            raw.all("set-cookie").is_empty(),
            "{:?}",
            raw.all("set-cookie")
        );
    }
    let out = h.cli(&alice, &["cancel", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    h.wait_job(&alice, id, Duration::from_secs(60));
}
