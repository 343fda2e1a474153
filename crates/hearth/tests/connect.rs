//! Spark Connect through Hearth's gateway with stock PySpark: results, per-user engines that
//! no forged `user_id`/`session_id` can cross, token checks, engines unreachable without
//! their secret, and the idle timeout.

mod common;

use common::{apps, text, Hearth, User};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `connect_sql.py URL SQL...` with the runtime's PySpark, trusting Hearth's CA.
fn pyspark(h: &Hearth, url: &str, sql: &[&str]) -> Vec<String> {
    pyspark_in(h, Command::new("timeout"), url, sql)
}

/// The same, from inside the network of process `pid` (root entering it).
fn pyspark_in_network_of(h: &Hearth, pid: u32, url: &str, sql: &[&str]) -> Vec<String> {
    let timeout = std::path::Path::new("/usr/bin/timeout");
    pyspark_in(h, common::in_network_of(pid, timeout), url, sql)
}

fn pyspark_in(h: &Hearth, command: Command, url: &str, sql: &[&str]) -> Vec<String> {
    let out = common::connect_sql_with(h, command, url, sql);
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert!(
        out.status.success() && !lines.is_empty(),
        "pyspark failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    lines
}

/// The gateway URL for a token, over TLS (a token and a host other than `localhost`).
fn url(h: &Hearth, token: &str, extra: &str) -> String {
    format!("sc://127.0.0.1:{}/;token={token}{extra}", h.connect_port)
}

/// The same with the token as plain metadata, as `hearth connect` prints it: such a
/// connection is relayed to the engine after its first call, the engine's secret added to
/// each call.
fn plain_url(h: &Hearth, token: &str, extra: &str) -> String {
    format!(
        "sc://127.0.0.1:{}/;use_ssl=true;x-hearth-token={token}{extra}",
        h.connect_port
    )
}

fn sessions(h: &Hearth, user: &User) -> Vec<serde_json::Value> {
    let out = h.cli(user, &["sessions", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("sessions json")
}

/// The loopback port of the user's engine, read as root from its task spec.
fn engine_port(h: &Hearth, session_id: u64) -> u16 {
    let spec = h
        .data_dir
        .join("engines")
        .join(session_id.to_string())
        .join("task")
        .join("spec.json");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec).expect("spec")).expect("json");
    spec["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("spark.connect.grpc.binding.port="))
        .next()
        .expect("port flag")
        .parse()
        .expect("port")
}

const ENGINE: &[&str] = &["--engine-cores", "1", "--engine-memory", "1g"];

#[test]
fn users_get_right_answers_from_their_own_engines_and_never_each_others_sessions() {
    let mut h = Hearth::start_with(ENGINE);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let alice_session = "0b6f4bc4-9a55-4a3e-9e6a-2f3c1e0d5a11";

    // Both at once, each with a temp view of the same name holding their own data. Alice's
    // connection is relayed (plain token), bob's served call by call (`;token=`).
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            pyspark(
                &h,
                &plain_url(
                    &h,
                    &alice.token,
                    &format!(";user_id=alice;session_id={alice_session}"),
                ),
                &[
                    "select 1 + 1",
                    "select current_user()",
                    "@groupby",
                    "create or replace temp view secret as select 'alice data' as v",
                    "select v from secret",
                ],
            )
        });
        let b = s.spawn(|| {
            pyspark(
                &h,
                &url(&h, &bob.token, ""),
                &[
                    "create or replace temp view secret as select 'bob data' as v",
                    "select v from secret",
                ],
            )
        });
        (a.join().expect("alice"), b.join().expect("bob"))
    });
    assert_eq!(a[0], "OK [[2]]", "{a:?}");
    // The engine runs for alice (SPARK_USER), under her own uid.
    assert_eq!(a[1], "OK [[\"alice\"]]", "{a:?}");
    assert_eq!(a[2], "OK [[\"a\", 4], [\"b\", 2]]", "{a:?}");
    assert_eq!(a[4], "OK [[\"alice data\"]]", "{a:?}");
    assert_eq!(b[1], "OK [[\"bob data\"]]", "{b:?}");

    // Bob forges alice's user_id and session_id, with either form of his token: he reaches
    // only his own engine, where no such view exists.
    for form in [url, plain_url] {
        let forged = pyspark(
            &h,
            &form(
                &h,
                &bob.token,
                &format!(";user_id=alice;session_id={alice_session}"),
            ),
            &["select v from secret", "select current_user()"],
        );
        assert!(
            forged[0].starts_with("ERROR") && forged[0].contains("secret"),
            "{forged:?}"
        );
        assert_eq!(forged[1], "OK [[\"bob\"]]", "{forged:?}");
    }
    // Alice's session still holds her view.
    let again = pyspark(
        &h,
        &url(
            &h,
            &alice.token,
            &format!(";user_id=alice;session_id={alice_session}"),
        ),
        &["select v from secret"],
    );
    assert_eq!(again[0], "OK [[\"alice data\"]]", "{again:?}");

    // Each engine runs as its user's uid.
    let mine = sessions(&h, &alice);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["user"], "alice");
    assert_eq!(mine[0]["kind"], "spark-connect");
    assert_eq!(mine[0]["state"], "running");
    let alice_engine = mine[0]["id"].as_u64().expect("id");
    let port = engine_port(&h, alice_engine);
    // Her engine listens as her, in its own network, and nothing on this machine's.
    let engine = common::task_pid(&h.data_dir.join(format!("engines/{alice_engine}/task")));
    assert_eq!(common::listener_in(engine, port), Some(alice.uid));
    assert_eq!(common::listener_in(std::process::id(), port), None);

    // Her engine's Spark UI, behind the door: the SQL tab lists her queries; bob gets 404.
    let ui = mine[0]["ui_url"].as_str().expect("ui_url").to_string();
    assert_eq!(ui, format!("/ui/sessions/{alice_engine}/"));
    let sql = common::wait_page(
        &h,
        &alice.token,
        &format!("{ui}SQL/"),
        Duration::from_secs(60),
    );
    assert!(sql.body.contains("hearth-engine-alice"), "{}", sql.body);
    assert_eq!(
        common::get_page(&h, Some(&bob.token), &format!("{ui}SQL/"), false).status,
        404
    );

    // Bob cannot see or stop alice's engine.
    let bobs = sessions(&h, &bob);
    assert!(bobs.iter().all(|s| s["user"] == "bob"), "{bobs:?}");
    let (status, _) = h.api(
        &bob,
        "DELETE",
        &format!("/api/v1/sessions/{alice_engine}"),
        None,
    );
    assert_eq!(status, 404);

    // Straight to alice's engine without its secret, even from inside its network as root:
    // refused (plaintext, as the client speaks to `localhost`).
    for direct in [
        format!("sc://localhost:{port}"),
        format!("sc://localhost:{port}/;token={}", alice.token),
    ] {
        let out = pyspark_in_network_of(&h, engine, &direct, &["select 1"]);
        assert!(
            out[0].starts_with("ERROR") && out[0].contains("UNAUTHENTICATED"),
            "{direct}: {out:?}"
        );
    }

    // No token, a wrong one, a revoked one: UNAUTHENTICATED, saying what to do.
    let no_token = pyspark(
        &h,
        &format!("sc://127.0.0.1:{}/;use_ssl=true", h.connect_port),
        &["select 1"],
    );
    assert!(
        no_token[0].contains("UNAUTHENTICATED") && no_token[0].contains("no Hearth token"),
        "{no_token:?}"
    );
    for form in [url, plain_url] {
        let wrong = pyspark(&h, &form(&h, "hth_999_0123456789abcdef", ""), &["select 1"]);
        assert!(
            wrong[0].contains("UNAUTHENTICATED") && wrong[0].contains("Hearth token refused"),
            "{wrong:?}"
        );
    }
    let (status, created) = h.api(
        &alice,
        "POST",
        "/api/v1/tokens",
        Some(serde_json::json!({"name": "to revoke"})),
    );
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().expect("secret").to_string();
    // A relayed connection open when its token is revoked: closed within seconds, and the
    // client's next call, on a new connection, is refused.
    let dir = std::env::temp_dir().join(common::unique("hearth-revoke"));
    std::fs::create_dir_all(&dir).expect("signal dir");
    let (open, revoked_now) = (dir.join("open"), dir.join("revoked"));
    let live = std::thread::scope(|s| {
        let client = s.spawn(|| {
            pyspark(
                &h,
                &plain_url(&h, &secret, ""),
                &[
                    "select 3",
                    &format!("@signal {}", open.display()),
                    &format!("@wait {}", revoked_now.display()),
                    "select 4",
                ],
            )
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        while !open.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let id = created["token"]["id"].as_u64().expect("token id");
        let (status, _) = h.api(&alice, "DELETE", &format!("/api/v1/tokens/{id}"), None);
        assert_eq!(status, 204);
        // The relay looks at its token every 3 s.
        std::thread::sleep(Duration::from_secs(4));
        std::fs::write(&revoked_now, "").expect("signal");
        client.join().expect("client")
    });
    assert_eq!(live[0], "OK [[3]]", "{live:?}");
    assert!(
        live[1].contains("UNAUTHENTICATED") && live[1].contains("Hearth token refused"),
        "{live:?}"
    );
    let revoked = pyspark(&h, &url(&h, &secret, ""), &["select 3"]);
    assert!(
        revoked[0].contains("UNAUTHENTICATED") && revoked[0].contains("Hearth token refused"),
        "{revoked:?}"
    );

    // `hearth session stop` ends it; engines do not outlive Hearth.
    let out = h.cli(&alice, &["session", "stop", &alice_engine.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sessions(&h, &alice).is_empty());
    let status = h.stop();
    assert!(status.success());
    let left = Command::new("pgrep")
        .args(["-u", &bob.uid.to_string(), "-f", "SparkConnectServer"])
        .output()
        .expect("pgrep");
    assert!(left.stdout.is_empty(), "bob's engine outlived Hearth");
}

#[test]
fn an_idle_engine_stops_and_the_next_query_starts_a_new_one() {
    let mut args = ENGINE.to_vec();
    args.extend(["--engine-idle-timeout", "5s"]);
    let mut h = Hearth::start_with(&args);
    let alice = h.add_user("alice");
    let first = pyspark(&h, &url(&h, &alice.token, ""), &["select 41 + 1"]);
    assert_eq!(first[0], "OK [[42]]");
    let before = sessions(&h, &alice);
    assert_eq!(before.len(), 1, "{before:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sessions(&h, &alice).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the idle engine was not stopped:\n{}",
            h.server_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let again = pyspark(&h, &url(&h, &alice.token, ""), &["select 43"]);
    assert_eq!(again[0], "OK [[43]]");
    let after = sessions(&h, &alice);
    assert_eq!(after.len(), 1);
    assert_ne!(after[0]["id"], before[0]["id"], "a new engine");
    h.stop();
}

#[test]
fn an_engine_that_does_not_fit_is_refused_with_the_numbers_not_retried_forever() {
    let mut args = vec!["--cores", "1"];
    args.extend_from_slice(ENGINE);
    let mut h = Hearth::start_with(&args);
    let alice = h.add_user("alice");
    // A job holds the machine's only offered core.
    let app = apps().join("sleepy.py").display().to_string();
    let job = h.submit(
        &alice,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &app,
            "600",
            "1",
        ],
    );
    h.wait_state(&alice, job, "running", Duration::from_secs(60));
    // Either form of the token (the plain one is looked at by the relay first).
    for form in [url, plain_url] {
        let started = Instant::now();
        let out = pyspark(&h, &form(&h, &alice.token, ""), &["select 1"]);
        assert!(
            out[0].starts_with("ERROR") && out[0].contains("no room for your Spark Connect engine"),
            "{out:?}"
        );
        // RESOURCE_EXHAUSTED, which clients do not retry: the answer comes at once.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(sessions(&h, &alice).is_empty());
    // Once the job is gone, the same query starts an engine and runs.
    let _ = h.cli(&alice, &["cancel", &job.to_string()]);
    h.wait_job(&alice, job, Duration::from_secs(60));
    let out = pyspark(&h, &url(&h, &alice.token, ""), &["select 1"]);
    assert_eq!(out[0], "OK [[1]]", "{out:?}");
}

#[test]
fn sail_answers_through_the_same_gateway_on_a_port_only_hearth_reaches() {
    let mut h = Hearth::start_with(ENGINE);
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    // Either form of the token: both relayed to Sail.
    for form in [url, plain_url] {
        let sail = form(&h, &alice.token, ";x-hearth-engine=sail");
        let out = pyspark(
            &h,
            &sail,
            &["select 1 + 1", "select sum(id) from range(100)"],
        );
        assert_eq!(out[0], "OK [[2]]", "{out:?}");
        assert_eq!(out[1], "OK [[4950]]", "{out:?}");
    }

    // A Sail engine of alice's, and no JVM engine started for it.
    let mine = sessions(&h, &alice);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["kind"], "sail");
    assert_eq!(mine[0]["state"], "running");
    // Sail checks no token: its port is one only Hearth reaches, not bob, not alice's uid.
    let spec = h
        .data_dir
        .join(format!("engines/{}/task/spec.json", mine[0]["id"]));
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec).expect("spec")).expect("json");
    let argv: Vec<&str> = spec["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let port: u16 = argv
        .iter()
        .position(|a| *a == "--port")
        .and_then(|i| argv.get(i + 1))
        .and_then(|p| p.parse().ok())
        .expect("--port");
    assert!(
        !common::connects_as(bob.uid, port),
        "bob reached alice's Sail"
    );
    assert!(!common::connects_as(alice.uid, port));

    // An engine nobody offers: refused with what to write instead.
    let unknown = pyspark(
        &h,
        &url(&h, &alice.token, ";x-hearth-engine=flink"),
        &["select 1"],
    );
    assert!(
        unknown[0].contains("INVALID_ARGUMENT") && unknown[0].contains("x-hearth-engine=sail"),
        "{unknown:?}"
    );
    // `hearth connect --engine sail` prints a URL that asks for it.
    let out = h.cli(&alice, &["connect", "--engine", "sail"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(";x-hearth-engine=sail'"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_client_that_never_shakes_hands_is_let_go() {
    use std::io::Read;
    let h = Hearth::start();
    // Connects, says nothing: the gateway closes it after its handshake timeout (10 s),
    // rather than keep a descriptor and a task for it forever.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", h.connect_port)).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let began = Instant::now();
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(25),
        "{waited:?}"
    );
    // A TLS client that stops halfway likewise.
    let mut half = std::net::TcpStream::connect(("127.0.0.1", h.connect_port)).expect("connect");
    std::io::Write::write_all(&mut half, &[0x16, 0x03, 0x01]).expect("a record's start");
    half.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let began = Instant::now();
    let _ = half.read(&mut buf);
    assert!(
        began.elapsed() < Duration::from_secs(25),
        "{:?}",
        began.elapsed()
    );
}
