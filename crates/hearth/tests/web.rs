//! The web console in a real headless browser (Debian's chromium through chromedriver, over
//! a small WebDriver client), its cookie sessions and CSRF check, and `/metrics`.
//! Screenshots of every page are kept in target/screenshots/ as the test's artifact.

mod common;

use common::{apps, Hearth, User};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);

fn screenshots_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

/// Standard base64 (what WebDriver screenshots are), decoded without a crate.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// One chromedriver and one headless chromium session, spoken to over W3C WebDriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
    /// Prefixes screenshot names, so that tests do not overwrite each other's.
    test: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(test: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (apt-get install chromium chromium-driver; scripts/test.sh does)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = std::env::temp_dir().join(common::unique("chromium-profile"));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            profile,
            test: test.to_string(),
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command; its `value`. Panics with the driver's message on an error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = ureq::request(method, &url).timeout(Duration::from_secs(60));
        let res = match body {
            Some(b) => req.send_json(b),
            None if method == "POST" => req.send_json(json!({})),
            None => req.call(),
        };
        let text = match res {
            Ok(r) => r.into_string().unwrap_or_default(),
            Err(ureq::Error::Status(s, r)) => {
                panic!(
                    "WebDriver {method} {path}: {s} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The element matching `css`, once it exists.
    fn find(&self, css: &str) -> String {
        let q = serde_json::to_string(css).unwrap_or_default();
        self.wait(
            &format!("!!document.querySelector({q})"),
            &format!("element {css}"),
        );
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), None);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Saves a screenshot; returns its path.
    fn shot(&self, name: &str) -> PathBuf {
        let png = base64_decode(self.call("GET", "/screenshot", None).as_str().unwrap_or(""));
        let path = screenshots_dir().join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Waits until the JavaScript expression is truthy; on a timeout, keeps a screenshot and
    /// fails with what the page showed.
    fn wait(&self, expr: &str, what: &str) {
        self.wait_for(expr, what, MIN * 2);
    }

    fn login(&self, url: &str, user: &str, password: &str) {
        self.goto(&format!("{url}/#/jobs"));
        self.type_into("#login-user", user);
        self.type_into("#login-password", password);
        self.click("#login-submit");
        self.find("#jobs-table");
    }

    fn logout(&self) {
        self.click("#logout");
        self.find("#login-form");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn password(u: &User) -> String {
    format!("{}-password-123", u.name)
}

#[test]
fn alice_submits_watches_and_reads_logs_in_the_browser() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let bobs = h.submit(
        &bob,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &apps().join("sleepy.py").display().to_string(),
            "1",
            "0.1",
        ],
    );
    let b = Browser::start("console");

    // The login page, then alice's (empty) jobs page.
    b.goto(&format!("{}/", h.url));
    b.find("#login-form");
    b.shot("login");
    b.login(&h.url, &alice.name, &password(&alice));
    assert_eq!(b.text("#me"), "alice");
    b.shot("jobs-empty");

    // Submit through the page: the browser hashes and uploads the file, then submits.
    b.click("a[data-nav=submit]");
    let app = apps().join("sleepy.py");
    let file = b.find("#s-file");
    b.call(
        "POST",
        &format!("/element/{file}/value"),
        Some(json!({ "text": app.display().to_string() })),
    );
    b.type_into("#s-args", "3\n0.2");
    b.type_into("#s-dmem", "512m");
    b.type_into("#s-nexec", "0");
    b.shot("submit");
    b.click("#submit-button");
    b.wait(
        "/^#\\/jobs\\/\\d+$/.test(location.hash)",
        "the new job's page",
    );
    let id: u64 = b
        .js("return location.hash.split('/')[2]")
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("job id in the URL");
    assert_ne!(id, bobs);

    // The jobs page follows it to the end without a reload (the marker would vanish).
    b.click("a[data-nav=jobs]");
    b.js("window.__no_reload = true; return null");
    b.find(&format!("tr[data-job-id='{id}']"));
    b.wait(
        &format!(
            "document.querySelector(\"tr[data-job-id='{id}']\").dataset.state === 'succeeded'"
        ),
        "the job to succeed on the jobs page",
    );
    assert_eq!(b.js("return window.__no_reload === true"), json!(true));
    // Bob's job is not on alice's page.
    assert_eq!(
        b.js(&format!(
            "return !!document.querySelector(\"tr[data-job-id='{bobs}']\")"
        )),
        json!(false)
    );
    b.shot("jobs");

    // The job's page: phases and the log.
    b.click(&format!("tr[data-job-id='{id}'] a"));
    b.wait(
        "document.querySelector('#log').textContent.includes('sleepy done')",
        "the job's log",
    );
    let log = b.text("#log");
    assert!(log.contains("line 00002"), "{log}");
    assert!(b.text("#job-state").contains("succeeded"));
    let timeline = b.text(".timeline");
    assert!(
        timeline.contains("queued") && timeline.contains("running"),
        "{timeline}"
    );
    // Searching the log narrows it to matching lines.
    b.type_into("#log-search", "line 00001");
    b.wait(
        "document.querySelectorAll('#log mark').length === 1",
        "one search match",
    );
    b.shot("job");

    // Every other page renders (and is kept as a screenshot).
    for (page, table) in [
        ("files", "#files-table"),
        ("sessions", "#sessions-table"),
        ("cluster", "#nodes-table"),
        ("tokens", "#tokens-table"),
    ] {
        b.click(&format!("a[data-nav={page}]"));
        b.find(table);
        b.wait(
            &format!("location.hash === '#/{page}' && document.querySelector('main h1') && !document.querySelector('main .alert')"),
            &format!("the {page} page"),
        );
        b.shot(page);
    }
    b.logout();

    // Bob cannot see alice's job: the page says not found, as the API does.
    b.login(&h.url, &bob.name, &password(&bob));
    b.goto(&format!("{}/#/jobs/{id}", h.url));
    b.find("#not-found");
    assert!(b.text("main").contains("not found"), "{}", b.text("main"));
    b.shot("not-found");
    b.logout();

    // The admin sees everyone's jobs.
    b.login(&h.url, "admin", common::ADMIN_PASSWORD);
    b.click("#f-all");
    b.find(&format!("tr[data-job-id='{id}']"));
    b.find(&format!("tr[data-job-id='{bobs}']"));
    let table = b.text("#jobs-table");
    assert!(table.contains("alice") && table.contains("bob"), "{table}");
    b.shot("all-jobs");
    b.goto(&format!("{}/#/jobs/{id}", h.url));
    b.wait(
        "document.querySelector('#log').textContent.includes('sleepy done')",
        "alice's log, for the admin",
    );
    b.click("a[data-nav=admin]");
    b.find("#users-table");
    assert!(b.text("#users-table").contains("bob"));
    b.shot("admin");
    println!("screenshots in {}", screenshots_dir().display());
}

/// A raw request with optional cookie and headers: (status, headers we care about, body).
fn raw(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Vec<String>, String) {
    let mut req = ureq::request(method, url);
    if let Some(c) = cookie {
        req = req.set("Cookie", c);
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = r.status();
    let cookies = r.all("set-cookie").iter().map(|s| s.to_string()).collect();
    (status, cookies, r.into_string().unwrap_or_default())
}

#[test]
fn cookie_sessions_need_a_csrf_header_to_change_anything() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let url = |p: &str| format!("{}{p}", h.url);

    let (status, _, _) = raw(
        "POST",
        &url("/api/v1/session"),
        None,
        &[],
        Some(json!({"user": "alice", "password": "wrong"})),
    );
    assert_eq!(status, 401);
    let (status, cookies, body) = raw(
        "POST",
        &url("/api/v1/session"),
        None,
        &[],
        Some(json!({"user": "alice", "password": password(&alice)})),
    );
    assert_eq!(status, 201, "{body}");
    let session = cookies
        .iter()
        .find(|c| c.starts_with("hearth_session="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    let body: Value = serde_json::from_str(&body).expect("json");
    let csrf = body["csrf"].as_str().expect("csrf").to_string();
    let pair = |c: &str| c.split(';').next().unwrap_or("").to_string();
    let cookie = cookies
        .iter()
        .map(|c| pair(c))
        .collect::<Vec<_>>()
        .join("; ");
    assert!(cookie.contains(&format!("hearth_csrf={csrf}")), "{cookie}");

    // Reads need only the cookie.
    let (status, _, body) = raw("GET", &url("/api/v1/whoami"), Some(&cookie), &[], None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"alice\""), "{body}");
    // A change with the cookie alone is refused, with a reason.
    let new_token = json!({"name": "from-the-browser"});
    let (status, _, body) = raw(
        "POST",
        &url("/api/v1/tokens"),
        Some(&cookie),
        &[],
        Some(new_token.clone()),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("x-hearth-csrf"), "{body}");
    let (status, _, _) = raw(
        "POST",
        &url("/api/v1/tokens"),
        Some(&cookie),
        &[("x-hearth-csrf", "0000")],
        Some(new_token.clone()),
    );
    assert_eq!(status, 403);
    let (status, _, body) = raw(
        "POST",
        &url("/api/v1/tokens"),
        Some(&cookie),
        &[("x-hearth-csrf", &csrf)],
        Some(new_token.clone()),
    );
    assert_eq!(status, 201, "{body}");
    // A bearer token needs no CSRF header.
    let (status, _, _) = raw(
        "POST",
        &url("/api/v1/tokens"),
        None,
        &[("Authorization", &format!("Bearer {}", alice.token))],
        Some(new_token),
    );
    assert_eq!(status, 201);

    // The event stream is authenticated like everything else, and must be asked for.
    let (status, _, _) = raw("GET", &url("/api/v1/events"), None, &[], None);
    assert_eq!(status, 401);
    let (status, _, _) = raw("GET", &url("/api/v1/events"), Some(&cookie), &[], None);
    assert_eq!(status, 406);
    let (status, _, _) = raw(
        "GET",
        &url("/api/v1/events?all=true"),
        Some(&cookie),
        &[("Accept", "text/event-stream")],
        None,
    );
    assert_eq!(status, 403, "alice may not stream everyone's jobs");

    // Logging out revokes the session's token (and needs the CSRF header too).
    let (status, _, _) = raw("DELETE", &url("/api/v1/session"), Some(&cookie), &[], None);
    assert_eq!(status, 403);
    let (status, cleared, _) = raw(
        "DELETE",
        &url("/api/v1/session"),
        Some(&cookie),
        &[("x-hearth-csrf", &csrf)],
        None,
    );
    assert_eq!(status, 204);
    assert!(
        cleared.iter().any(|c| c.starts_with("hearth_session=;")),
        "{cleared:?}"
    );
    let (status, _, _) = raw("GET", &url("/api/v1/whoami"), Some(&cookie), &[], None);
    assert_eq!(status, 401);
    // Alice's CLI token still works.
    assert_eq!(h.api(&alice, "GET", "/api/v1/whoami", None).0, 200);
}

#[test]
fn the_console_is_served_from_the_binary_with_safe_headers() {
    let h = Hearth::start();
    let r = ureq::get(&format!("{}/", h.url)).call().expect("index");
    assert!(r.content_type().starts_with("text/html"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(r
        .header("content-security-policy")
        .unwrap_or("")
        .contains("default-src 'self'"));
    let html = r.into_string().expect("html");
    // No CDN: every script and style comes from this server.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let js = html
        .split('"')
        .find(|s| s.starts_with("/assets/app.js?v="))
        .expect("versioned app.js")
        .to_string();
    let r = ureq::get(&format!("{}{js}", h.url)).call().expect("app.js");
    assert!(r.content_type().contains("javascript"));
    assert!(r
        .header("cache-control")
        .unwrap_or("")
        .contains("immutable"));
    let r = ureq::get(&format!("{}/assets/style.css", h.url))
        .call()
        .expect("css");
    assert_eq!(r.content_type(), "text/css");
    let status = match ureq::get(&format!("{}/assets/nope.js", h.url)).call() {
        Err(ureq::Error::Status(s, _)) => s,
        other => panic!("{:?}", other.map(|r| r.status())),
    };
    assert_eq!(status, 404);
}

#[test]
fn metrics_are_for_admins_and_name_what_matters() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let get = |token: Option<&str>| {
        let mut req = ureq::get(&format!("{}/metrics", h.url));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(get(None).0, 401);
    let (status, body) = get(Some(&alice.token));
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(Some(&h.admin.token));
    assert_eq!(status, 200, "{body}");
    for name in [
        "hearth_jobs{state=\"queued\"} 0",
        "hearth_jobs{state=\"succeeded\"}",
        "hearth_queued_jobs{queue=",
        "hearth_queue_oldest_wait_seconds",
        "hearth_scheduling_latency_seconds{quantile=\"0.5\"}",
        "hearth_node_cores{node=\"local\"}",
        "hearth_node_cores_used{node=\"local\"} 0",
        "hearth_node_memory_bytes",
        "hearth_node_memory_used_bytes",
        "hearth_node_machine_memory_in_use_bytes{node=\"local\"}",
        "hearth_http_requests_total{method=\"GET\",route=\"/api/v1/whoami\",code=\"200\"}",
        "hearth_http_request_duration_seconds_bucket{method=\"GET\",route=\"/metrics\",le=\"+Inf\"}",
        "hearth_http_request_duration_seconds_count",
    ] {
        assert!(body.contains(name), "missing {name} in:\n{body}");
    }
    // Every line is a comment or `name{labels} value`.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }
}

#[test]
fn a_notebook_opens_in_the_browser_after_the_login_and_only_for_its_owner() {
    let mut h = Hearth::start();
    let alice = h.add_user("alice");
    let bob = h.add_user("bob");
    let out = h.cli(&alice, &["notebook", "start"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let b = Browser::start("notebook");

    // Not logged in: the door sends the browser to the login, and back after it.
    b.goto(&format!("{}/user/alice/lab", h.url));
    b.find("#login-form");
    b.type_into("#login-user", &alice.name);
    b.type_into("#login-password", &password(&alice));
    b.click("#login-submit");
    b.wait(
        "location.pathname.startsWith('/user/alice/lab')",
        "back at the notebook after logging in",
    );
    // JupyterLab itself: its scripts, settings and API calls all pass the door.
    b.wait(
        "!!document.querySelector('.jp-LabShell') && !!document.querySelector('.jp-LauncherCard')",
        "JupyterLab's launcher",
    );
    b.shot("notebook");

    // Bob, logged in on the same browser: alice's notebook does not exist for him.
    b.goto(&format!("{}/#/jobs", h.url));
    b.logout();
    b.login(&h.url, &bob.name, &password(&bob));
    b.goto(&format!("{}/user/alice/lab", h.url));
    b.wait(
        "document.body.innerText.includes('no notebook of yours')",
        "a 404 for bob",
    );
}

impl Browser {
    /// Chooses `value` in a <select> as a person would (the page hears a change event).
    fn select(&self, css: &str, value: &str) {
        self.find(css);
        let (css, value) = (
            serde_json::to_string(css).unwrap_or_default(),
            serde_json::to_string(value).unwrap_or_default(),
        );
        self.js(&format!(
            "const s = document.querySelector({css}); s.value = {value}; \
             s.dispatchEvent(new Event('change', {{bubbles: true}})); return null"
        ));
    }

    /// Records Content-Security-Policy violations from now on (the page stays one document:
    /// the console routes by hash).
    fn watch_csp(&self) {
        self.js(
            "window.__csp = []; document.addEventListener('securitypolicyviolation', \
                 e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); return null",
        );
    }

    fn assert_no_csp_violations(&self) {
        assert_eq!(self.js("return window.__csp"), json!([]), "CSP violations");
    }

    /// Opens a console page by its hash route and waits for its heading.
    fn open(&self, url: &str, route: &str, ready_css: &str) {
        // Emptied first, so that the old page's elements never pass for the new one's; the
        // same route again is drawn again.
        self.js("document.querySelector('#main').innerHTML = ''; return null");
        self.goto(&format!("{url}/#/{route}"));
        let route = serde_json::to_string(&format!("#/{route}")).unwrap_or_default();
        self.js(&format!(
            "if (location.hash === {route} && !document.querySelector('#main').children.length) \
             window.dispatchEvent(new HashChangeEvent('hashchange')); return null"
        ));
        self.find(ready_css);
    }
}

/// Every form control on the page has a label (its own <label>, or aria-label).
fn assert_labelled(b: &Browser, page: &str) {
    let unlabelled = b.js(
        "return [...document.querySelectorAll('main input, main select, main textarea')] \
           .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')) \
           .map(e => e.id || e.outerHTML)",
    );
    assert_eq!(unlabelled, json!([]), "unlabelled controls on {page}");
}

fn policy(h: &Hearth) -> Value {
    let (status, doc) = h.api(&h.admin, "GET", "/api/v1/policy", None);
    assert_eq!(status, 200, "{doc}");
    doc
}

#[test]
fn an_admin_sets_a_quota_and_a_queue_in_the_browser() {
    let mut h = Hearth::start();
    let carol = h.add_user(&common::unique("carol"));
    let b = Browser::start("admin");
    b.login(&h.url, "admin", common::ADMIN_PASSWORD);
    b.watch_csp();

    // A queue through its form.
    b.click("a[data-nav=admin]");
    b.find("#users-table");
    assert!(b.text("#users-table").contains(&carol.name));
    assert_labelled(&b, "admin-users");
    b.shot("admin-users");
    b.click("a[data-admin-nav=queues]");
    b.find("#queue-form");
    b.type_into("#q-name", "research");
    b.type_into("#q-weight", "3");
    b.type_into("#q-g-cores", "1");
    b.type_into("#q-m-cores", "2");
    // Enter in a field submits the form, as the keyboard user expects.
    b.type_into("#q-m-memory", "4g\u{E007}");
    b.find("tr[data-queue='research']");
    assert!(b.text("#admin-message").contains("research"));
    assert_labelled(&b, "admin-queues");
    b.shot("admin-queues");
    let doc = policy(&h);
    let q = &doc["queues"][0];
    assert_eq!(q["name"], "research", "{doc}");
    assert_eq!(q["weight"], 3, "{doc}");
    assert_eq!(q["guaranteed"]["cores"], 1, "{doc}");
    assert_eq!(q["max"], json!({"cores": 2, "memory": "4g"}), "{doc}");

    // A group sending carol's jobs to it.
    b.click("a[data-admin-nav=groups]");
    b.find("#group-form");
    b.type_into("#g-name", "lab");
    b.select("#g-queue", "research");
    b.click(&format!("#g-members input[value='{}']", carol.name));
    b.click("#group-save");
    b.find("tr[data-group='lab']");
    assert!(b.text("tr[data-group='lab']").contains(&carol.name));
    assert_labelled(&b, "admin-groups");
    b.shot("admin-groups");
    let doc = policy(&h);
    assert_eq!(doc["groups"][0]["queue"], "research", "{doc}");
    assert_eq!(doc["users"][&carol.name]["group"], "lab", "{doc}");

    // Carol's own quota. A bad memory size is refused with the server's reason, and what the
    // admin typed stays in the form.
    b.click("a[data-admin-nav=quotas]");
    b.find("#quota-form");
    b.select("#qu-user", &carol.name);
    b.type_into("#qu-cores", "2");
    b.type_into("#qu-memory", "lots");
    b.type_into("#qu-queued", "5");
    b.click("#quota-save");
    b.wait(
        "!document.querySelector('#quota-error').hidden",
        "the quota form's error",
    );
    assert!(
        b.text("#quota-error").contains("memory"),
        "{}",
        b.text("#quota-error")
    );
    b.type_into("#qu-memory", "3g");
    b.click("#quota-save");
    b.wait(
        "document.querySelector('#admin-message') && document.querySelector('#admin-message').textContent.includes('saved')",
        "the quota to be saved",
    );
    assert_labelled(&b, "admin-quotas");
    b.shot("admin-quotas");
    let doc = policy(&h);
    let u = &doc["users"][&carol.name];
    assert_eq!(
        u["quota"],
        json!({"max_cores": 2, "max_memory": "3g", "max_queued_jobs": 5}),
        "{doc}"
    );
    assert_eq!(
        u["group"], "lab",
        "the group survives a quota change: {doc}"
    );
    let (_, queues) = h.api(&carol, "GET", "/api/v1/queues", None);
    assert!(queues.to_string().contains("research"), "{queues}");

    // Another admin saves meanwhile: this page's change is refused, not lost silently, and
    // the page shows the policy as it is now.
    b.find("#quota-form");
    b.select("#qu-user", &carol.name);
    let mut theirs = policy(&h);
    theirs["preemption_grace_seconds"] = json!(45);
    let (status, saved) = h.api(&h.admin, "PUT", "/api/v1/policy", Some(theirs));
    assert_eq!(status, 200, "{saved}");
    b.type_into("#qu-cores", "7");
    b.click("#quota-save");
    b.find("#policy-conflict");
    assert!(
        b.text("#policy-conflict").contains("another admin"),
        "{}",
        b.text("#policy-conflict")
    );
    let version = saved["version"].as_u64().expect("version");
    assert!(
        b.text("main")
            .contains(&format!("Policy version {version}")),
        "{}",
        b.text("main")
    );
    b.shot("admin-conflict");
    let doc = policy(&h);
    assert_eq!(doc["preemption_grace_seconds"], 45, "{doc}");
    assert_eq!(doc["users"][&carol.name]["quota"]["max_cores"], 2, "{doc}");

    // Carol's tokens: one made for her works as her, and once revoked, does not.
    b.open(
        &h.url,
        &format!("admin/tokens/{}", carol.name),
        "#admin-token-form",
    );
    b.type_into("#tk-name", "made-by-admin");
    b.click("#admin-token-form button[type=submit]");
    b.find("#token-secret .secret");
    let secret = b.text("#token-secret .secret");
    let (status, me) = common::api_call(&h.url, Some(&secret), "GET", "/api/v1/whoami", None);
    assert_eq!(
        (status, me["name"].as_str()),
        (200, Some(carol.name.as_str()))
    );
    assert_labelled(&b, "admin-tokens");
    b.shot("admin-tokens");
    // Tokens read `hth_ID_SECRET`.
    let id = secret.split('_').nth(1).unwrap_or("").to_string();
    let row = b
        .js("const r = [...document.querySelectorAll('#admin-tokens-table tr[data-token-id]')].find(r => r.textContent.includes('made-by-admin')); return r ? r.dataset.tokenId : null")
        .as_str()
        .map(str::to_string)
        .expect("the new token's row");
    assert_eq!(row, id);
    b.js("window.confirm = () => true; return null");
    b.click(&format!("button[data-revoke='{row}']"));
    b.wait(
        &format!("!document.querySelector(\"tr[data-token-id='{row}']\") && !!document.querySelector('#admin-tokens-table')"),
        "the revoked token to go",
    );
    let (status, _) = common::api_call(&h.url, Some(&secret), "GET", "/api/v1/whoami", None);
    assert_eq!(status, 401);

    b.open(&h.url, "admin/policy", "#policy-doc");
    assert_labelled(&b, "admin-policy");
    b.shot("admin-policy");
    b.assert_no_csp_violations();
}

#[test]
fn a_non_admin_sees_no_admin_pages_and_the_api_refuses_them() {
    let mut h = Hearth::start();
    let dave = h.add_user(&common::unique("dave"));
    let b = Browser::start("nonadmin");
    b.login(&h.url, &dave.name, &password(&dave));
    assert_eq!(
        b.js("const a = document.querySelector('a[data-nav=admin]'); return !a || a.offsetParent === null"),
        json!(true),
        "the Admin link is not shown"
    );
    for route in [
        "admin",
        "admin/queues",
        "admin/quotas",
        "admin/tokens/admin",
        "admin/nodes",
        "admin/join-tokens",
    ] {
        b.open(&h.url, route, "#admins-only");
        assert_eq!(
            b.js("return !!document.querySelector('#queue-form, #quota-form, #users-table, #admin-tokens-table, #policy-doc, #admin-nodes-table, #join-token-form')"),
            json!(false),
            "{route}"
        );
    }
    b.shot("admins-only");

    let (_, admin_tokens) = h.api(&h.admin, "GET", "/api/v1/tokens", None);
    let admin_token = admin_tokens[0]["id"].as_u64().expect("the admin's token");
    for (method, path, body) in [
        ("GET", "/api/v1/policy".to_string(), None),
        (
            "PUT",
            "/api/v1/policy".to_string(),
            Some(json!({"version": 0})),
        ),
        ("GET", "/api/v1/users".to_string(), None),
        (
            "POST",
            "/api/v1/users".to_string(),
            Some(json!({"name": "mallory"})),
        ),
        ("GET", "/api/v1/tokens?user=admin".to_string(), None),
        (
            "POST",
            "/api/v1/tokens?user=admin".to_string(),
            Some(json!({"name": "stolen"})),
        ),
        ("GET", "/api/v1/node-tokens".to_string(), None),
        ("POST", "/api/v1/node-tokens".to_string(), Some(json!({}))),
        ("POST", "/api/v1/nodes/local/drain".to_string(), None),
        ("DELETE", "/api/v1/nodes/local".to_string(), None),
    ] {
        let (status, err) = h.api(&dave, method, &path, body);
        assert_eq!(status, 403, "{method} {path}: {err}");
    }
    // Someone else's token is not theirs to revoke: as if it did not exist.
    let (status, _) = h.api(
        &dave,
        "DELETE",
        &format!("/api/v1/tokens/{admin_token}"),
        None,
    );
    assert_eq!(status, 404);
    assert_eq!(h.api(&h.admin, "GET", "/api/v1/whoami", None).0, 200);
    // The usage history is for everyone who is logged in, and no one else.
    let (status, usage) = h.api(&dave, "GET", "/api/v1/usage", None);
    assert_eq!(status, 200, "{usage}");
    assert!(usage["interval_seconds"].as_u64().is_some(), "{usage}");
    let (status, _) = common::api_call(&h.url, None, "GET", "/api/v1/usage", None);
    assert_eq!(status, 401);
    let (status, err) = h.api(&dave, "GET", "/api/v1/usage?seconds=soon", None);
    assert_eq!(status, 400, "{err}");
}

#[test]
fn the_cluster_page_charts_utilisation_after_a_job_ran() {
    let mut h = Hearth::start_with(&["--usage-interval", "1s"]);
    let erin = h.add_user(&common::unique("erin"));
    let id = h.submit(
        &erin,
        &[
            "--num-executors",
            "0",
            "--driver-memory",
            "512m",
            &apps().join("sleepy.py").display().to_string(),
            "90",
            "0.5",
        ],
    );
    // While it runs, the local node holds its core and memory and counts it: in the API,
    // in `hearth nodes` and on the Cluster page.
    h.wait_state(&erin, id, "running", MIN * 5);
    let (_, nodes) = h.api(&erin, "GET", "/api/v1/nodes", None);
    let local = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "local").cloned())
        .expect("the local node");
    assert_eq!(local["running_jobs"], 1, "{nodes}");
    assert!(local["used_cores"].as_u64() >= Some(1), "{nodes}");
    assert!(local["used_memory_mib"].as_u64() >= Some(512), "{nodes}");
    // Beside what is held, what the machine has in use, measured by the server itself.
    let measured = &local["measured"];
    assert!(measured["used_memory_mib"].as_u64() > Some(0), "{nodes}");
    assert!(
        measured["used_memory_mib"].as_u64() <= measured["memory_mib"].as_u64(),
        "{nodes}"
    );
    let out = h.cli(&erin, &["nodes"]);
    let listing = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let want = format!("{}/{} cores", local["used_cores"], local["cores"]);
    assert!(
        listing.contains("HELD") && listing.contains("JOBS") && listing.contains(&want),
        "{listing}"
    );
    assert!(
        listing.contains("MACHINE USE") && listing.contains("cores busy"),
        "{listing}"
    );

    let b = Browser::start("cluster");
    b.login(&h.url, &erin.name, &password(&erin));
    b.watch_csp();
    b.click("a[data-nav=cluster]");
    b.wait(
        "(() => { const r = document.querySelector(\"#nodes-table tr[data-node='local']\"); \
          return !!r && r.dataset.jobs === '1' && Number(r.querySelector('progress').value) >= 1; })()",
        "the running job on the local node",
    );
    // Its machine's measured use beside what is held: cores busy (from the server's second
    // reading, seconds after it started) and memory in use, each a labelled bar.
    b.wait(
        "(() => { const r = document.querySelector(\"#nodes-table tr[data-node='local']\"); \
          const cpu = r && r.querySelector('.measured-cpu'), mem = r && r.querySelector('.measured-memory'); \
          return !!cpu && !!mem && /cores busy/.test(cpu.textContent) && /^[1-9]/.test(mem.textContent) \
            && r.querySelectorAll('progress.measured-bar[aria-label]').length === 2; })()",
        "the local machine's measured use",
    );
    assert!(
        b.text("#capacity").contains("1 running job"),
        "{}",
        b.text("#capacity")
    );
    assert_labelled(&b, "cluster-running");
    b.shot("cluster-running");

    let job = h.wait_job(&erin, id, MIN * 5);
    assert_eq!(job["state"], "succeeded", "{job}");
    // The job held a core while it started and ran (seconds): some sample saw it.
    let (status, usage) = h.api(&erin, "GET", "/api/v1/usage", None);
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["interval_seconds"], 1, "{usage}");
    let samples = usage["samples"].as_array().cloned().unwrap_or_default();
    assert!(
        samples
            .iter()
            .any(|s| s["used_cores"].as_u64() > Some(0) && s["running_jobs"].as_u64() > Some(0)),
        "{usage}"
    );

    // The finished job no longer counts once the page polls again.
    b.wait(
        "document.querySelector(\"#nodes-table tr[data-node='local']\").dataset.jobs === '0'",
        "the local node to be free again",
    );
    // A chart with the job in it: a cores line with more than one point, one above zero.
    b.wait(
        "(() => { const svg = document.querySelector('#usage-chart'); if (!svg || Number(svg.dataset.samples) < 2) return false; \
          const line = svg.querySelector('polyline.s-cores'); const ys = line.getAttribute('points').trim().split(' ').map(p => Number(p.split(',')[1])); \
          return ys.length >= 2 && Math.min(...ys) < Math.max(...ys); })()",
        "a utilisation chart with the job in it",
    );
    b.find("#jobs-chart polyline.s-running");
    assert!(b.text("#nodes-table").contains("local"));
    assert_labelled(&b, "cluster-chart");
    b.shot("cluster-chart");

    // The job's page shows where its start-up time went.
    b.goto(&format!("{}/#/jobs/{id}", h.url));
    b.find("#job-startup");
    assert!(
        b.text("#job-startup").contains("Start-up took"),
        "{}",
        b.text("#job-startup")
    );
    assert_labelled(&b, "job-timeline");
    b.shot("job-timeline");
    b.assert_no_csp_violations();
}

#[test]
fn the_jobs_page_draws_the_newest_200_and_pages_back_without_redrawing() {
    let mut h = Hearth::start();
    let frank = h.add_user(&common::unique("frank"));
    // Frank may run nothing: his jobs stay queued, and cost no Spark.
    let mut doc = policy(&h);
    doc["users"][&frank.name] = json!({"quota": {"max_running_jobs": 0}});
    let (status, saved) = h.api(&h.admin, "PUT", "/api/v1/policy", Some(doc));
    assert_eq!(status, 200, "{saved}");
    let app = apps().join("sleepy.py");
    let out = Command::new("sha256sum")
        .arg(&app)
        .output()
        .expect("sha256sum");
    let sha = common::text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(sha.len(), 64, "{sha}");
    let put = ureq::put(&format!("{}/api/v1/blobs/{sha}", h.url))
        .set("Authorization", &format!("Bearer {}", frank.token))
        .send_bytes(&std::fs::read(&app).expect("read the app"));
    assert!(put.is_ok(), "{put:?}");
    let mut ids = Vec::new();
    for _ in 0..205 {
        let (status, job) = h.api(
            &frank,
            "POST",
            "/api/v1/jobs",
            Some(json!({"main": {"name": "sleepy.py", "sha256": sha},
                        "resources": {"num_executors": 0, "driver_memory": "512m"}})),
        );
        assert_eq!(status, 201, "{job}");
        ids.push(job["id"].as_u64().expect("id"));
    }
    let (oldest, newest) = (ids[0], ids[204]);

    let b = Browser::start("paging");
    b.login(&h.url, &frank.name, &password(&frank));
    b.wait(
        "document.querySelectorAll('#jobs-body tr[data-job-id]').length === 200",
        "the newest 200 jobs",
    );
    b.find(&format!("tr[data-job-id='{newest}']"));
    assert_eq!(
        b.js(&format!(
            "return !!document.querySelector(\"tr[data-job-id='{oldest}']\")"
        )),
        json!(false)
    );
    b.wait(
        "!document.querySelector('#jobs-older').hidden",
        "the Show older jobs button",
    );
    // Rows are kept, not rebuilt: a mark on the newest row's element survives redraws.
    b.js("document.querySelector('#jobs-body tr').dataset.mark = 'kept'; return null");
    assert_labelled(&b, "jobs-200");
    b.shot("jobs-200");
    b.click("#jobs-older");
    b.wait(
        "document.querySelectorAll('#jobs-body tr[data-job-id]').length === 205",
        "the older jobs",
    );
    b.find(&format!("tr[data-job-id='{oldest}']"));
    b.wait(
        "document.querySelector('#jobs-older').hidden",
        "no more older jobs",
    );
    assert_eq!(
        b.js(&format!(
            "return document.querySelector(\"tr[data-job-id='{newest}']\").dataset.mark || ''"
        )),
        json!("kept")
    );
    // Queued for the quota's reason, as the job page says.
    b.goto(&format!("{}/#/jobs/{newest}", h.url));
    b.find("#job-reason");
    b.shot("job-queued");
}

impl Browser {
    /// Waits until the JavaScript expression is truthy, with a deadline of one's own (a cold
    /// notebook may take minutes on a busy machine); on a timeout, keeps a screenshot and
    /// fails with what the page showed.
    fn wait_for(&self, expr: &str, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let script = format!("try {{ return !!({expr}); }} catch (e) {{ return false; }}");
        loop {
            if self.js(&script).as_bool() == Some(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self.js("return document.body.innerText");
                let shot = self.shot("timeout");
                panic!(
                    "timed out waiting for {what}; screenshot {}; page:\n{}",
                    shot.display(),
                    page.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn window(&self) -> String {
        self.call("GET", "/window", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn windows(&self) -> Vec<String> {
        self.call("GET", "/window/handles", None)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn switch_to(&self, handle: &str) {
        self.call("POST", "/window", Some(json!({ "handle": handle })));
    }

    /// The new window (tab) a click opened, once it exists.
    fn new_window(&self, before: &[String]) -> String {
        let deadline = Instant::now() + MIN;
        loop {
            if let Some(w) = self.windows().into_iter().find(|w| !before.contains(w)) {
                return w;
            }
            assert!(Instant::now() < deadline, "no new window opened");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Answers yes to the page's confirm() dialogs from now on.
    fn accept_confirms(&self) {
        self.js("window.confirm = () => true; return null");
    }
}

/// A `hearth agent` that joined a test server, killed when dropped (its port guard's
/// table, which an agent leaves for the tasks it would leave running, with it).
struct Agent {
    child: Child,
    log: PathBuf,
    dir: PathBuf,
}

impl Agent {
    fn start(h: &Hearth, args: &[String]) -> Agent {
        let dir = h.work_dir().join(common::unique("agent"));
        let log = dir.with_extension("log");
        let out = std::fs::File::create(&log).expect("agent log");
        let child = Command::new(common::BIN)
            .arg("agent")
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start hearth agent");
        Agent { child, log, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        hearth_agent::portguard::remove_table(&hearth_agent::portguard::agent_instance(&self.dir));
    }
}

/// The joined node `name` as the API lists it.
fn joined_node(h: &Hearth, name: &str) -> Option<Value> {
    let (status, nodes) = h.api(&h.admin, "GET", "/api/v1/nodes", None);
    assert_eq!(status, 200, "{nodes}");
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name && n["joined"] == true))
        .cloned()
}

#[test]
fn an_admin_makes_a_join_token_in_the_browser_and_drains_and_removes_the_node_that_joins() {
    let h = Hearth::start();
    let b = Browser::start("nodes");
    b.login(&h.url, "admin", common::ADMIN_PASSWORD);
    b.watch_csp();

    // The node list shows the server's own machine, which cannot be drained or removed.
    b.click("a[data-nav=admin]");
    b.find("#users-table");
    b.click("a[data-admin-nav=nodes]");
    b.find("#admin-nodes-table tr[data-node='local']");
    assert_eq!(
        b.js("return !!document.querySelector(\"tr[data-node='local'] button\")"),
        json!(false)
    );

    // A join token for two hours: the page shows the exact command once.
    b.click("a[data-admin-nav=join-tokens]");
    b.find("#join-token-form");
    b.type_into("#jt-ttl", "2");
    b.select("#jt-unit", "3600");
    b.click("#join-token-create");
    b.find("#join-command");
    b.click("#join-copy");
    b.find("#join-copy[data-copied='true']");
    let command = b.text("#join-command");
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words.get(..2), Some(&["hearth", "agent"][..]), "{command}");
    let after = |flag: &str| {
        let i = words
            .iter()
            .position(|w| *w == flag)
            .unwrap_or_else(|| panic!("{flag} in {command}"));
        words[i + 1].to_string()
    };
    let token = after("--token");
    let token_id: u64 = token
        .split('_')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("token id");
    assert_eq!(after("--server"), h.cluster_addr, "{command}");
    b.find(&format!(
        "tr[data-join-token='{token_id}'][data-state='active']"
    ));
    let (_, tokens) = h.api(&h.admin, "GET", "/api/v1/node-tokens", None);
    let listed = tokens
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == token_id).cloned())
        .expect("the token in the API");
    let ttl = listed["expires_at_ms"].as_i64().unwrap_or(0)
        - listed["created_at_ms"].as_i64().unwrap_or(0);
    assert_eq!(ttl, 2 * 3600 * 1000, "{listed}");
    assert_labelled(&b, "admin-join-tokens");
    b.shot("admin-join-tokens");

    // A real agent joins with that command.
    let name = "web-node";
    let mut args: Vec<String> = words[2..].iter().map(|w| w.to_string()).collect();
    args.extend(
        [
            "--name", name, "--cores", "1", "--memory", "768m", "--label", "disk=ssd",
        ]
        .map(String::from),
    );
    let mut agent = Agent::start(&h, &args);
    b.click("a[data-admin-nav=nodes]");
    b.find("#admin-nodes-table");
    let row = format!("#admin-nodes-table tr[data-node='{name}']");
    let deadline = Instant::now() + MIN * 2;
    while b.js(&format!(
        "return !!document.querySelector(\"{row}[data-state='ready']\")"
    )) != json!(true)
    {
        let exited = agent.child.try_wait().ok().flatten();
        assert!(
            Instant::now() < deadline && exited.is_none(),
            "the node never showed up ready (agent exit: {exited:?}): {:?}\nagent:\n{}\nserver:\n{}",
            joined_node(&h, name),
            agent.log(),
            h.server_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let text = b.text(&row);
    assert!(
        text.contains("disk=ssd")
            && text.contains("0 MiB / 768 MiB")
            && text.contains("no Spark runtime")
            && text.contains("ago"),
        "{text}"
    );
    assert_labelled(&b, "admin-nodes");
    b.shot("admin-nodes");

    // The cluster page: what jobs can use is the local machine alone (the joined node has no
    // Spark runtime); the joined node is listed as offering more, with no isolation claimed.
    let (_, nodes) = h.api(&h.admin, "GET", "/api/v1/nodes", None);
    let local = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["joined"] == false).cloned())
        .expect("the local node");
    let local_cores = local["cores"].as_u64().expect("cores");
    b.click("a[data-nav=cluster]");
    b.find(&format!("#nodes-table tr[data-node='{name}']"));
    let capacity = b.text("#capacity");
    let want = if local_cores == 1 {
        "Jobs can use 1 core and".to_string()
    } else {
        format!("Jobs can use {local_cores} cores and")
    };
    assert!(capacity.contains(&want), "{capacity}");
    assert!(
        b.text("#capacity-joined").contains("1 core and 768 MiB"),
        "{capacity}"
    );
    let joined_row = b.text(&format!("#nodes-table tr[data-node='{name}']"));
    assert!(
        joined_row.contains("takes no jobs now (no Spark runtime)"),
        "{joined_row}"
    );
    // The isolation column (the sixth) claims nothing for it.
    assert_eq!(
        b.js(&format!(
            "return document.querySelector(\"#nodes-table tr[data-node='{name}'] td:nth-child(6)\").textContent.trim()"
        )),
        json!("—"),
        "{joined_row}"
    );
    b.shot("cluster-joined");

    // Drain, undrain, remove (after a confirmation), each seen on the page and in the API.
    b.click("a[data-nav=admin]");
    b.find("#users-table");
    b.click("a[data-admin-nav=nodes]");
    b.find(&format!("{row}[data-state='ready']"));
    b.accept_confirms();
    b.click(&format!("{row} button[data-action=drain]"));
    b.find(&format!(
        "{row}[data-state='draining'] button[data-action=undrain]"
    ));
    assert_eq!(
        joined_node(&h, name).map(|n| n["state"].clone()),
        Some(json!("draining"))
    );
    b.shot("admin-nodes-draining");
    b.click(&format!("{row} button[data-action=undrain]"));
    b.find(&format!(
        "{row}[data-state='ready'] button[data-action=drain]"
    ));
    b.click(&format!("{row} button[data-action=remove]"));
    b.wait(
        &format!("!document.querySelector(\"{row}\") && !!document.querySelector(\"#admin-nodes-table tr[data-node='local']\")"),
        "the removed node to leave the list",
    );
    assert_eq!(joined_node(&h, name), None);

    // The token is revoked from its page.
    b.click("a[data-admin-nav=join-tokens]");
    b.click(&format!("button[data-revoke-join='{token_id}']"));
    b.find(&format!(
        "tr[data-join-token='{token_id}'][data-state='revoked']"
    ));
    assert!(b.text("#admin-message").contains("revoked"));
    let (_, tokens) = h.api(&h.admin, "GET", "/api/v1/node-tokens", None);
    assert!(
        tokens
            .as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == token_id))
            .map(|t| t["revoked_at_ms"].is_i64())
            == Some(true),
        "{tokens}"
    );
    b.shot("admin-join-token-revoked");
    b.assert_no_csp_violations();
    drop(agent);
}

#[test]
fn a_user_starts_opens_and_stops_a_notebook_from_the_sessions_page() {
    let mut h = Hearth::start();
    let alice = h.add_user(&common::unique("alice"));
    let bob = h.add_user(&common::unique("bob"));
    let b = Browser::start("sessions");
    b.login(&h.url, &alice.name, &password(&alice));
    b.watch_csp();

    // No sessions yet; how to connect with PySpark.
    b.click("a[data-nav=sessions]");
    b.find("#sessions-table");
    b.find("#connect-url");
    let url = b.text("#connect-url");
    assert!(
        url.contains(&format!(
            "sc://127.0.0.1:{}/;use_ssl=true;x-hearth-token=",
            h.connect_port
        )),
        "{url}"
    );
    assert!(b.text("#connect-cli").contains("hearth connect"));
    assert_eq!(
        b.js("return document.querySelectorAll('#sessions-body tr[data-session]').length"),
        json!(0)
    );
    assert_labelled(&b, "sessions-empty");
    b.shot("sessions-empty");

    // Start the notebook; the page follows it to running.
    b.click("#notebook-start");
    b.wait_for(
        "!!document.querySelector(\"#sessions-body tr[data-kind='notebook'][data-state='running'] a[data-open]\")",
        "the notebook to run",
        MIN * 5,
    );
    assert!(b.text("#session-status").contains("running"));
    let (_, listed) = h.api(&alice, "GET", "/api/v1/sessions", None);
    let notebook = listed["sessions"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["kind"] == "notebook").cloned())
        .expect("the notebook in the API");
    assert_eq!(notebook["state"], "running", "{notebook}");
    let id = notebook["id"].as_u64().expect("id");
    assert_labelled(&b, "sessions");
    b.shot("sessions");

    // "Open" opens JupyterLab in a new tab, through the door.
    let console = b.window();
    let before = b.windows();
    b.click("a[data-open]");
    let lab = b.new_window(&before);
    b.switch_to(&lab);
    b.wait(
        &format!(
            "location.pathname.startsWith('/user/{}/lab') && !!document.querySelector('.jp-LabShell') \
             && !!document.querySelector('.jp-LauncherCard')",
            alice.name
        ),
        "JupyterLab in the new tab",
    );
    b.shot("sessions-notebook-open");
    b.call("DELETE", "/window", None);
    b.switch_to(&console);

    // Bob's sessions page does not show it.
    b.logout();
    b.login(&h.url, &bob.name, &password(&bob));
    b.open(&h.url, "sessions", "#sessions-table");
    b.find("#sessions-body tr");
    assert_eq!(
        b.js("return document.querySelectorAll('#sessions-body tr[data-session]').length"),
        json!(0),
        "{}",
        b.text("#sessions-table")
    );
    let (_, bobs) = h.api(&bob, "GET", "/api/v1/sessions", None);
    assert_eq!(bobs["sessions"], json!([]), "{bobs}");
    b.logout();

    // Alice stops it from the page.
    b.login(&h.url, &alice.name, &password(&alice));
    b.watch_csp();
    b.open(
        &h.url,
        "sessions",
        &format!("tr[data-session='{id}'] button[data-stop]"),
    );
    b.accept_confirms();
    b.click(&format!("tr[data-session='{id}'] button[data-stop]"));
    b.wait_for(
        &format!("!document.querySelector(\"tr[data-session='{id}']\") && !document.querySelector('#notebook-start').disabled"),
        "the notebook to go",
        MIN * 2,
    );
    let (_, listed) = h.api(&alice, "GET", "/api/v1/sessions", None);
    assert!(
        !listed["sessions"]
            .as_array()
            .map(|a| a.iter().any(|s| s["id"] == id))
            .unwrap_or(true),
        "{listed}"
    );
    b.shot("sessions-stopped");

    // The page is live: a notebook started and stopped elsewhere (here through the API)
    // shows up, runs and goes without a click or reload, by the event stream (the page no
    // longer polls).
    let (status, started) = h.api(&alice, "POST", "/api/v1/notebooks", None);
    assert_eq!(status, 200, "{started}");
    let again = started["id"].as_u64().expect("id");
    b.wait_for(
        &format!("!!document.querySelector(\"tr[data-session='{again}']\")"),
        "the notebook started elsewhere to show",
        Duration::from_secs(10),
    );
    b.wait_for(
        &format!("!!document.querySelector(\"tr[data-session='{again}'][data-state='running']\")"),
        "the notebook started elsewhere to run",
        MIN * 5,
    );
    let (status, _) = h.api(&alice, "DELETE", &format!("/api/v1/sessions/{again}"), None);
    assert_eq!(status, 204);
    b.wait_for(
        &format!("!document.querySelector(\"tr[data-session='{again}']\")"),
        "the notebook stopped elsewhere to go",
        Duration::from_secs(10),
    );
    b.assert_no_csp_violations();
}

#[test]
fn a_users_spark_connect_engine_shows_on_the_sessions_page_with_its_spark_ui() {
    let mut h = Hearth::start_with(&["--engine-cores", "1", "--engine-memory", "1g"]);
    let gina = h.add_user(&common::unique("gina"));
    // Her first query through the gateway starts her engine (stock PySpark, trusting the CA).
    let url = format!("sc://127.0.0.1:{}/;token={}", h.connect_port, gina.token);
    let out = common::connect_sql(&h, &url, &["select 40 + 2 as answer"]);
    assert!(
        out.status.success() && common::text(&out.stdout).contains("42"),
        "pyspark failed ({}):\n{}\n{}",
        out.status,
        common::text(&out.stdout),
        common::text(&out.stderr)
    );

    let b = Browser::start("engine");
    b.login(&h.url, &gina.name, &password(&gina));
    b.watch_csp();
    b.click("a[data-nav=sessions]");
    let row = "#sessions-body tr[data-kind='spark-connect'][data-state='running']";
    b.find(&format!("{row} a[data-ui]"));
    let id = b
        .js(&format!(
            "return document.querySelector(\"{row}\").dataset.session"
        ))
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .expect("the engine's id");
    assert!(
        b.text(row).contains("Spark Connect engine"),
        "{}",
        b.text(row)
    );
    assert_eq!(
        b.js(&format!(
            "return document.querySelector(\"{row} a[data-ui]\").getAttribute('href')"
        )),
        json!(format!("/ui/sessions/{id}/"))
    );
    assert_labelled(&b, "sessions-engine");
    b.shot("sessions-engine");

    // Its Spark UI opens in a new tab, through the door.
    let console = b.window();
    let before = b.windows();
    b.click(&format!("{row} a[data-ui]"));
    let ui = b.new_window(&before);
    b.switch_to(&ui);
    b.wait(
        &format!(
            "location.pathname.startsWith('/ui/sessions/{id}/') && document.body.innerText.includes('Spark Jobs')"
        ),
        "the engine's Spark UI",
    );
    b.shot("engine-spark-ui");
    b.call("DELETE", "/window", None);
    b.switch_to(&console);

    // She sees no "All users" toggle, and the API refuses her the list of everyone's.
    assert_eq!(
        b.js("return !!document.querySelector('#sessions-all')"),
        json!(false)
    );
    let (status, refused) = h.api(&gina, "GET", "/api/v1/sessions?all=true", None);
    assert_eq!(status, 403, "{refused}");
    assert!(refused.to_string().contains("only admins"), "{refused}");

    // The engine's core and memory count on the local node (it runs there), with no job.
    let (_, nodes) = h.api(&gina, "GET", "/api/v1/nodes", None);
    let local = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == "local").cloned())
        .expect("the local node");
    let (_, mine) = h.api(&gina, "GET", "/api/v1/sessions", None);
    let engine = &mine["sessions"][0];
    assert_eq!(local["used_cores"], engine["cores"], "{nodes} {mine}");
    assert_eq!(
        local["used_memory_mib"], engine["memory_limit_mib"],
        "{nodes} {mine}"
    );
    assert_eq!(local["running_jobs"], 0, "{nodes}");
    b.click("a[data-nav=cluster]");
    b.wait(
        "(() => { const p = document.querySelector(\"#nodes-table tr[data-node='local'] progress\"); return !!p && Number(p.value) === 1; })()",
        "the engine's core on the local node",
    );
    b.logout();

    // An admin sees her engine among everyone's sessions and stops it.
    b.login(&h.url, "admin", common::ADMIN_PASSWORD);
    b.click("a[data-nav=sessions]");
    b.find("#sessions-table");
    assert_eq!(
        b.js("return document.querySelectorAll('#sessions-body tr[data-session]').length"),
        json!(0),
        "{}",
        b.text("#sessions-table")
    );
    b.click("#sessions-all");
    let theirs = format!(
        "#sessions-body tr[data-session='{id}'][data-user='{}']",
        gina.name
    );
    b.find(&theirs);
    assert!(b.text(&theirs).contains(&gina.name), "{}", b.text(&theirs));
    assert_eq!(
        b.js("return document.querySelector('#sessions-owner-h').hidden"),
        json!(false)
    );
    assert_labelled(&b, "sessions-all-users");
    b.shot("sessions-all-users");
    b.accept_confirms();
    b.click(&format!("{theirs} button[data-stop]"));
    b.wait_for(
        &format!("!document.querySelector(\"tr[data-session='{id}']\")"),
        "the engine to go",
        MIN * 2,
    );
    let (_, listed) = h.api(&gina, "GET", "/api/v1/sessions", None);
    assert_eq!(listed["sessions"], json!([]), "{listed}");
    b.assert_no_csp_violations();
}
