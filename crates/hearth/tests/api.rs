//! The API and CLI without running Spark: authentication, ownership, bad input, files.

mod common;

use common::{api_call, apps, run_with_stdin, text, Hearth, BIN};
use serde_json::json;
use std::process::Command;

#[test]
fn every_call_needs_a_valid_token() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let (status, body) = api_call(&h.url, None, "GET", "/api/v1/jobs", None);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Bearer"),
        "{body}"
    );
    for bad in ["nonsense", "hth_1_00", "hth_999_abcdef"] {
        let (status, body) = api_call(&h.url, Some(bad), "GET", "/api/v1/whoami", None);
        assert_eq!(status, 401, "{bad}: {body}");
    }
    // The OpenAPI document is behind the same door.
    let (status, _) = api_call(&h.url, None, "GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 401);

    // A created token works until revoked.
    let out = h.cli(&alice, &["token", "create", "ci"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let (status, me) = api_call(&h.url, Some(&token), "GET", "/api/v1/whoami", None);
    assert_eq!((status, me["name"].as_str()), (200, Some("alice")));
    let id = token.split('_').nth(1).expect("id");
    let out = h.cli(&alice, &["token", "revoke", id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, _) = api_call(&h.url, Some(&token), "GET", "/api/v1/whoami", None);
    assert_eq!(status, 401);

    // An expired token is refused and says so.
    let out = h.cli(&alice, &["token", "create", "short", "--ttl", "1s"]);
    let token = text(&out.stdout).trim().to_string();
    assert_eq!(
        api_call(&h.url, Some(&token), "GET", "/api/v1/whoami", None).0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, body) = api_call(&h.url, Some(&token), "GET", "/api/v1/whoami", None);
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired"),
        "{body}"
    );

    // Wrong passwords do not log in.
    let out = run_with_stdin(
        Command::new(BIN)
            .args([
                "login",
                "--server",
                &h.url,
                "--user",
                "alice",
                "--password-stdin",
                "--config",
            ])
            .arg(std::env::temp_dir().join(common::unique("cfg"))),
        "wrong-password",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("wrong user name or password"),
        "{}",
        text(&out.stderr)
    );

    // Tokens are stored only as slow salted hashes.
    let db = std::fs::read(h.data_dir.join("hearth.db")).expect("db");
    let secret = alice.token.rsplit('_').next().expect("secret");
    assert!(!String::from_utf8_lossy(&db).contains(secret));
}

#[test]
fn only_admins_manage_users() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let out = h.cli(&alice, &["user", "add", "mallory"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only admins"),
        "{}",
        text(&out.stderr)
    );
    let out = h.cli(&alice, &["user", "list"]);
    assert!(!out.status.success());

    let out = h.cli(&h.admin, &["user", "add", "carol"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("Password (shown only this once)"),
        "{printed}"
    );
    let out = h.cli(&h.admin, &["user", "list", "-o", "json"]);
    let users: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = users
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, vec!["admin", "alice", "carol"]);
    let carol_uid = users[2]["uid"].as_u64().expect("uid");
    // The Linux account exists while the user does.
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    assert!(passwd.contains(&format!("hearth{carol_uid}:")));
    let out = h.cli(&h.admin, &["user", "add", "carol"]);
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    let out = h.cli(&h.admin, &["user", "add", "Bad Name"]);
    assert!(
        text(&out.stderr).contains("not a valid user name"),
        "{}",
        text(&out.stderr)
    );
    let out = h.cli(&h.admin, &["user", "remove", "carol"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let passwd = std::fs::read_to_string("/etc/passwd").expect("passwd");
    assert!(!passwd.contains(&format!("hearth{carol_uid}:")));
}

#[test]
fn bad_input_is_refused_clearly_and_nothing_is_persisted() {
    let mut h = Hearth::start_with(&["--cores", "2", "--memory", "4g"]);
    let alice = h.add_user("alice");
    let sleepy = apps().join("sleepy.py").display().to_string();

    // CLI errors, before anything reaches the server.
    let cases: &[(&[&str], &str)] = &[
        (
            &["submit", "--executor-memory", "4x", &sleepy],
            "`4x` is not a memory size",
        ),
        (
            &["submit", "--conf", "spark.foo", &sleepy],
            "write --conf key=value",
        ),
        (
            &["submit", "/no/such/app.py"],
            "no such file: /no/such/app.py",
        ),
        (
            &["submit", "--py-files", "/no/lib.zip", &sleepy],
            "no such file: /no/lib.zip",
        ),
        (
            &["submit", "--bogus-flag", &sleepy],
            "unexpected argument '--bogus-flag'",
        ),
        // Refused by the server, with the numbers.
        (
            &["submit", "--num-executors", "8", &sleepy],
            "this machine offers jobs 2 cores",
        ),
        (
            &["submit", "--driver-memory", "8g", &sleepy],
            "ask for fewer or smaller executors",
        ),
        (
            &["submit", "--conf", "spark.executor.memory=2g", &sleepy],
            "use --executor-memory",
        ),
        (
            &["submit", "--executor-cores", "0", &sleepy],
            "--executor-cores must be at least 1",
        ),
        (
            &["submit", "--constraint", "gpu", &sleepy],
            "--constraint gpu: write key=value",
        ),
    ];
    for (args, want) in cases {
        let out = h.cli(&alice, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: expected `{want}` in:\n{err}");
    }
    let empty = std::env::temp_dir().join(common::unique("empty.py"));
    std::fs::write(&empty, "").expect("empty");
    let out = h.cli(&alice, &["submit", &empty.display().to_string()]);
    assert!(
        text(&out.stderr).contains("is empty"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_file(empty);

    // API errors: JSON, types, unknown fields, ids, uploads.
    let zero = "0".repeat(64);
    let cases: Vec<(&str, String, Option<serde_json::Value>, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({"main": {"name": "a.py", "sha256": zero}, "driver_memory": "1g"})),
            422,
            "unknown field `driver_memory`",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({"main": "a.py"})),
            422,
            "invalid type",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({})),
            422,
            "missing field `main`",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({"main": {"name": "a.py", "sha256": zero}})),
            400,
            "was not uploaded",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({"main": {"name": "../a.py", "sha256": zero}})),
            400,
            "not a valid file name",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({"main": {"name": "a.txt", "sha256": zero}})),
            400,
            "neither a .py nor a .jar",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({"main": {"name": "a.py", "sha256": "xyz"}})),
            400,
            "64 lowercase hex",
        ),
        ("GET", "/api/v1/jobs/abc".into(), None, 400, "not a job id"),
        (
            "GET",
            "/api/v1/jobs/999".into(),
            None,
            404,
            "you have no job 999",
        ),
        (
            "GET",
            "/api/v1/jobs?state=sleeping".into(),
            None,
            400,
            "not a job state",
        ),
        (
            "GET",
            "/api/v1/jobs?colour=red".into(),
            None,
            400,
            "unknown field",
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": "x", "ttl_seconds": -5})),
            422,
            "invalid value",
        ),
        (
            "GET",
            "/api/v1/nope".into(),
            None,
            404,
            "no such API endpoint",
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"name": "x", "ttl_seconds": u64::MAX})),
            400,
            "between one second and ten years",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(
                json!({"main": {"name": "a.py", "sha256": zero}, "conf": {"spark.local.dir=/x": "y"}}),
            ),
            400,
            "not a Spark setting name",
        ),
        (
            "POST",
            "/api/v1/jobs".into(),
            Some(json!({"main": {"name": "a,b.py", "sha256": zero}})),
            400,
            "no slashes, commas",
        ),
    ];
    for (method, path, body, want_status, want) in cases {
        let (status, resp) = h.api(&alice, method, &path, body);
        assert_eq!(status, want_status, "{method} {path}: {resp}");
        let msg = resp["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(want),
            "{method} {path}: expected `{want}` in {resp}"
        );
        assert!(resp["error"]["code"].is_string(), "{resp}");
    }
    // Malformed JSON.
    let resp = ureq::post(&format!("{}/api/v1/jobs", h.url))
        .set("Authorization", &format!("Bearer {}", alice.token))
        .set("Content-Type", "application/json")
        .send_string("{\"main\": ");
    match resp {
        Err(ureq::Error::Status(400, r)) => {
            let body = r.into_string().unwrap_or_default();
            assert!(body.contains("invalid_body"), "{body}");
        }
        other => panic!("malformed JSON: {other:?}"),
    }
    // Uploads: empty, wrong digest.
    let put = |sha: &str, body: &[u8]| match ureq::put(&format!("{}/api/v1/blobs/{sha}", h.url))
        .set("Authorization", &format!("Bearer {}", alice.token))
        .send_bytes(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    };
    let (s, b) = put(&zero, b"");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("empty"), "{b}");
    let (s, b) = put(&zero, b"print(1)\n");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("digest_mismatch"), "{b}");
    let blobs_tmp = h.data_dir.join("blobs").join("tmp");
    assert_eq!(
        std::fs::read_dir(blobs_tmp).map(|d| d.count()).unwrap_or(0),
        0,
        "half-written upload left"
    );

    // None of it left a job behind.
    let (_, list) = h.api(&alice, "GET", "/api/v1/jobs", None);
    assert_eq!(list["jobs"].as_array().map(|a| a.len()), Some(0), "{list}");
    let (_, list) = h.api(&h.admin, "GET", "/api/v1/jobs?all=true", None);
    assert_eq!(list["jobs"].as_array().map(|a| a.len()), Some(0), "{list}");
}

#[test]
fn every_documented_route_is_served() {
    let h = Hearth::start();
    let (status, doc) = h.api(&h.admin, "GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15);
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{name}", "nobody")
                .replace("{id}", "424242")
                .replace("{sha256}", &"0".repeat(64))
                .replace("{path}", "no-such-file");
            let resp = match method {
                "put" => ureq::put(&format!("{}{concrete}", h.url))
                    .set("Authorization", &format!("Bearer {}", h.admin.token))
                    .send_bytes(b"x"),
                _ => ureq::request(&method.to_uppercase(), &format!("{}{concrete}", h.url))
                    .set("Authorization", &format!("Bearer {}", h.admin.token))
                    .call(),
            };
            let (status, body) = match resp {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
                Err(e) => panic!("{method} {concrete}: {e}"),
            };
            assert_ne!(status, 405, "{method} {path} not routed");
            assert!(
                !body.contains("no such API endpoint"),
                "{method} {path} not routed: {body}"
            );
        }
    }
}

#[test]
fn workspace_files_round_trip_and_stay_private() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let local = std::env::temp_dir().join(common::unique("data.csv"));
    std::fs::write(&local, "a,b\n1,2\n").expect("write");
    let out = h.cli(
        &alice,
        &["fs", "put", &local.display().to_string(), "input/data.csv"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let on_disk = h.workspace(&alice).join("input").join("data.csv");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&on_disk).expect("stat")),
        alice.uid
    );
    let ls = text(&h.cli(&alice, &["fs", "ls", "input"]).stdout);
    assert!(ls.contains("data.csv") && ls.contains('8'), "{ls}");
    let get = h.cli(&alice, &["fs", "get", "input/data.csv", "-"]);
    assert_eq!(text(&get.stdout), "a,b\n1,2\n");
    // Bob sees nothing of it; `..` is refused.
    let get = h.cli(&bob, &["fs", "get", "input/data.csv", "-"]);
    assert!(!get.status.success());
    assert!(
        text(&get.stderr).contains("no such file"),
        "{}",
        text(&get.stderr)
    );
    let (status, body) = h.api(
        &bob,
        "GET",
        "/api/v1/files/..%2Falice%2Finput%2Fdata.csv",
        None,
    );
    assert!(status == 400 || status == 404, "{status} {body}");
    // A symlink Alice planted to something she may not read leads nowhere.
    std::os::unix::fs::symlink("/etc/shadow", h.workspace(&alice).join("shadow")).expect("symlink");
    let get = h.cli(&alice, &["fs", "get", "shadow", "-"]);
    assert!(!get.status.success());
    assert!(!text(&get.stdout).contains("root:"));
    // The host's /proc is world-readable and shows everyone's command lines: a link to it
    // must lead nowhere either.
    std::os::unix::fs::symlink("/proc", h.workspace(&alice).join("p")).expect("symlink");
    let (status, body) = h.api(&alice, "GET", "/api/v1/files/p/1/cmdline", None);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("outside the workspace"),
        "{body}"
    );
    let ls = h.cli(&alice, &["fs", "ls", "p"]);
    assert!(!ls.status.success(), "{}", text(&ls.stdout));
    let rm = h.cli(&alice, &["fs", "rm", "input/data.csv"]);
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    assert!(!on_disk.exists());
    let _ = std::fs::remove_file(local);
}

#[test]
fn uploads_over_the_limit_are_refused() {
    let mut h = Hearth::start_with(&["--max-upload", "1m"]);
    let alice = h.add_user("alice");
    let big = std::env::temp_dir().join(common::unique("big.py"));
    std::fs::write(&big, vec![b'#'; 2 << 20]).expect("write");
    let out = h.cli(&alice, &["submit", &big.display().to_string()]);
    let _ = std::fs::remove_file(&big);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("upload limit of 1 MiB"),
        "{}",
        text(&out.stderr)
    );
    let (_, list) = h.api(&alice, "GET", "/api/v1/jobs", None);
    assert_eq!(list["jobs"].as_array().map(|a| a.len()), Some(0));
}

#[test]
fn without_root_hearth_says_isolation_is_off() {
    // `nobody` runs a Hearth of its own in a directory it owns.
    let work = std::env::temp_dir().join(common::unique("nonroot"));
    std::fs::create_dir_all(&work).expect("dir");
    let _ = Command::new("chown").arg("65534:65534").arg(&work).output();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let child = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(BIN)
        .args(["up", "--data-dir"])
        .arg(work.join("data"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--runtime",
            "/nonexistent",
            // Not the default ports: another Hearth on this machine may hold them.
            "--cluster-listen",
            "off",
            "--connect-listen",
            "off",
        ])
        .env("HEARTH_ADMIN_PASSWORD", "nonroot-password")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "hearth up as nobody did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    let _ = std::fs::remove_dir_all(&work);
    let err = text(&out.stderr);
    assert!(err.contains("isolation is OFF"), "{err}");
    assert!(err.contains("not running as root"), "{err}");
    assert!(err.contains("hearth runtime install"), "{err}");
}

#[test]
fn hearth_up_refuses_a_data_dir_its_jobs_cannot_reach() {
    use std::os::unix::fs::PermissionsExt;
    // As `mktemp -d` makes it: private, so the jobs' uids cannot pass through it.
    let work = std::env::temp_dir().join(common::unique("closed"));
    std::fs::create_dir_all(&work).expect("dir");
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let data = work.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let up = || {
        Command::new(BIN)
            .args(["up", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--cluster-listen", "off", "--connect-listen", "off"])
            .arg("--runtime")
            .arg(common::runtime())
            .env("HEARTH_ADMIN_PASSWORD", "closed-password")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let mut child = up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = std::fs::remove_dir_all(&work);
            panic!("hearth up started on a data dir under a 0700 directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("wait");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("is under {} (mode 0700)", work.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod o+x {}", work.display())),
        "{err}"
    );
    assert!(err.contains("--data-dir"), "{err}");
    // Refused before writing anything.
    assert!(!data.exists(), "{err}");

    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let child = up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut up_ok = true;
    while ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        if std::time::Instant::now() > deadline {
            up_ok = false;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    // The admin's Linux account, made at the first start.
    common::remove_users_under(&work);
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        up_ok,
        "hearth up did not start once the parent was traversable: {}",
        text(&out.stderr)
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A login over a connection from `source` (another loopback address than the flood's):
/// (status, body). ureq cannot choose the local address, so this is plain HTTP/1.1.
fn login_from(source: std::net::Ipv4Addr, port: u16, user: &str, password: &str) -> (u16, String) {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, owned by the TcpStream at once (closed when it drops); the
    // addresses passed live through the calls.
    let mut stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        let rc = libc::bind(fd, &local as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind {source}: {}", std::io::Error::last_os_error());
        let server = sockaddr(std::net::Ipv4Addr::LOCALHOST, port);
        let rc = libc::connect(fd, &server as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    };
    let body = json!({"user": user, "password": password}).to_string();
    write!(
        stream,
        "POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[test]
fn a_flood_of_bad_logins_is_refused_and_a_real_login_is_not_delayed() {
    let mut h = Hearth::start();
    h.add_user("alice");
    h.add_user("bob");
    let url = h.url.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // 300 bad logins for alice from 127.0.0.1, from 20 threads at once.
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let (url, done) = (url.clone(), done.clone());
            std::thread::spawn(move || {
                (0..15)
                    .map(|_| {
                        let res = ureq::post(&format!("{url}/api/v1/login"))
                            .send_json(json!({"user": "alice", "password": "guess"}));
                        let r = match res {
                            Ok(r) => r,
                            Err(ureq::Error::Status(_, r)) => r,
                            Err(e) => panic!("login: {e}"),
                        };
                        let status = r.status();
                        let retry = r.header("Retry-After").map(str::to_string);
                        let body = r.into_string().unwrap_or_default();
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (status, retry, body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Bob logs in from another address while the flood goes on.
    let mut slowest = std::time::Duration::ZERO;
    let mut during = 0;
    while done.load(std::sync::atomic::Ordering::SeqCst) < 300 || during == 0 {
        let start = std::time::Instant::now();
        let (status, response) = login_from(
            std::net::Ipv4Addr::new(127, 0, 0, 2),
            h.port,
            "bob",
            "bob-password-123",
        );
        let took = start.elapsed();
        assert_eq!(status, 200, "{response}");
        assert!(response.contains("hth_"), "{response}");
        slowest = slowest.max(took);
        during += 1;
    }
    let answers: Vec<(u16, Option<String>, String)> = flood
        .into_iter()
        .flat_map(|t| t.join().expect("flood thread"))
        .collect();
    eprintln!(
        "bob's slowest of {during} logins during the flood: {} ms",
        slowest.as_millis()
    );
    assert!(slowest < std::time::Duration::from_secs(1), "{slowest:?}");
    assert_eq!(answers.len(), 300);
    assert!(answers.iter().all(|(s, _, _)| *s < 500), "a 5xx");
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    eprintln!("{} of 300 bad logins refused with 429", refused.len());
    assert!(refused.len() >= 250, "only {} refused", refused.len());
    assert!(answers.iter().all(|(s, _, _)| *s == 429 || *s == 401));
    for (_, retry, body) in &refused {
        let secs: u64 = retry
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {body}"));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message
                == format!(
                    "too many failed logins for alice from this address: try again in {secs} s"
                )
                || message
                    == format!("too many failed logins from this address: try again in {secs} s"),
            "{message}"
        );
    }
    // The flood did not lock alice out from elsewhere.
    let (status, response) = login_from(
        std::net::Ipv4Addr::new(127, 0, 0, 2),
        h.port,
        "alice",
        "alice-password-123",
    );
    assert_eq!(status, 200, "{response}");
}

#[test]
fn a_spark_connect_token_cannot_drive_the_api() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let out = h.cli(&alice, &["token", "create", "nb", "--connect-only"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    for (method, path) in [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/files"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/whoami"),
    ] {
        let body = (method == "POST").then(|| json!({"name": "escalated"}));
        let (status, answer) = api_call(&h.url, Some(&token), method, path, body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("Spark Connect only"),
            "{answer}"
        );
    }
    // Listed for what it opens; alice's own token still opens everything.
    let (status, tokens) = h.api(&alice, "GET", "/api/v1/tokens", None);
    assert_eq!(status, 200);
    let listed = tokens
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "nb"))
        .cloned()
        .expect("listed");
    assert_eq!(listed["scope"], "connect", "{listed}");
    let (status, _) = h.api(
        &alice,
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "x", "scope": "root"})),
    );
    assert_eq!(status, 400);
}
