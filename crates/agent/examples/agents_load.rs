//! Load generator for the cluster port: many simulated agents in one process, each with its
//! own key and certificate (a real join) and its own mutual-TLS connection, heartbeating at
//! the interval the server asks for. Measures heartbeat round trips here, and the server's
//! CPU and RSS from /proc (idle first, then under load). `bench/agents_load.sh` runs it.
//!
//! agents_load --server HOST:PORT --token T --ca-sha256 HEX --server-pid PID
//!             [--agents 1000] [--seconds 60] [--idle-seconds 30] [--prefix load]

use hearth_agent::node::{client_config, join, parse_pin, Session};
use hearth_model::cluster::NodeOffer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(args: &HashMap<String, String>, key: &str, default: Option<&str>) -> String {
    match args.get(key).map(String::as_str).or(default) {
        Some(v) => v.to_string(),
        None => {
            eprintln!("agents_load: --{key} is required");
            std::process::exit(2);
        }
    }
}

fn num<T: std::str::FromStr>(args: &HashMap<String, String>, key: &str, default: &str) -> T {
    arg(args, key, Some(default)).parse().unwrap_or_else(|_| {
        eprintln!("agents_load: --{key} must be a number");
        std::process::exit(2);
    })
}

/// A thousand connections need more file descriptors than the usual soft limit of 1024.
fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on this process with a struct they fill.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The server's CPU (% of one core) over `d`, and its largest RSS (MiB), sampled each second.
async fn watch(pid: u32, d: Duration) -> (f64, f64) {
    let (c0, t0) = (cpu_seconds(pid).unwrap_or(0.0), Instant::now());
    let mut rss: f64 = rss_mib(pid).unwrap_or(0.0);
    while t0.elapsed() < d {
        tokio::time::sleep(Duration::from_secs(1).min(d)).await;
        rss = rss.max(rss_mib(pid).unwrap_or(0.0));
    }
    let c1 = cpu_seconds(pid).unwrap_or(0.0);
    (100.0 * (c1 - c0) / t0.elapsed().as_secs_f64(), rss)
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut args = HashMap::new();
    for pair in raw.chunks(2) {
        match pair {
            [k, v] if k.starts_with("--") => {
                args.insert(k.trim_start_matches("--").to_string(), v.clone());
            }
            _ => {
                eprintln!("agents_load: arguments come as --key value pairs");
                std::process::exit(2);
            }
        }
    }
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(args));
}

async fn run(args: HashMap<String, String>) {
    let server = arg(&args, "server", None);
    let token = arg(&args, "token", None);
    let pin = parse_pin(&arg(&args, "ca-sha256", None)).unwrap_or_else(|e| {
        eprintln!("agents_load: {e}");
        std::process::exit(2);
    });
    let pid: u32 = num(&args, "server-pid", "0");
    let n: usize = num(&args, "agents", "1000");
    let seconds: u64 = num(&args, "seconds", "60");
    let idle_seconds: u64 = num(&args, "idle-seconds", "30");
    let prefix = arg(&args, "prefix", Some("load"));

    let idle = watch(pid, Duration::from_secs(idle_seconds)).await;
    println!(
        "idle server over {idle_seconds} s: CPU {:.2}% of a core, RSS {:.1} MiB",
        idle.0, idle.1
    );

    // Join and connect, a few dozen at a time (as machines of a real cluster would not all
    // start in the same millisecond).
    let began = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (server, token, prefix, gate) =
            (server.clone(), token.clone(), prefix.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire().await.map_err(|e| e.to_string())?;
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let offer = NodeOffer {
                name: format!("{prefix}-{i}"),
                cores: 4,
                memory_mib: 8192,
                labels: Default::default(),
                version: "load".into(),
                runtime: None,
                data_dir: None,
                isolation_problems: None,
                workspace_mark: None,
            };
            let pem = join(&server, pin, &token, &key, &offer)
                .await
                .map_err(|e| e.to_string())?;
            let cfg = client_config(pin, Some((&pem, &key.serialize_pem())))?;
            Session::open(&server, cfg, &offer)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => eprintln!("agents_load: an agent failed to join: {e}"),
            Err(e) => eprintln!("agents_load: {e}"),
        }
    }
    let connected = sessions.len();
    println!(
        "{connected} of {n} agents joined and connected in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    if connected == 0 {
        std::process::exit(1);
    }

    // Every agent beats at the server's interval, spread evenly over it; one interval of
    // warm-up, then the measured window.
    let hb = sessions[0].heartbeat;
    let start = Instant::now() + hb;
    let end = start + Duration::from_secs(seconds);
    let rtts = Arc::new(Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let mut beating = Vec::new();
    for (i, mut s) in sessions.into_iter().enumerate() {
        let (rtts, errors) = (rtts.clone(), errors.clone());
        let offset = hb.mul_f64(i as f64 / connected as f64);
        beating.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut seq = 0;
            while Instant::now() < end {
                seq += 1;
                let sent = Instant::now();
                match s.heartbeat(seq).await {
                    Ok(rtt) if sent >= start => rtts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(rtt.as_micros() as u64),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("agents_load: {e}");
                        *errors.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                        return;
                    }
                }
                if s.idle(hb).await.is_err() {
                    *errors.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    return;
                }
            }
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    let load = watch(pid, Duration::from_secs(seconds)).await;
    for b in beating {
        let _ = b.await;
    }
    let mut rtts = std::mem::take(&mut *rtts.lock().unwrap_or_else(|p| p.into_inner()));
    rtts.sort_unstable();
    let errors = *errors.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "{connected} agents, heartbeat every {} ms, over {seconds} s: {} heartbeats, {errors} agents failed",
        hb.as_millis(),
        rtts.len()
    );
    println!(
        "heartbeat round trip: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        quantile(&rtts, 0.5),
        quantile(&rtts, 0.99),
        quantile(&rtts, 1.0)
    );
    println!(
        "server under load: CPU {:.2}% of a core, RSS {:.1} MiB (idle: {:.2}%, {:.1} MiB; RSS ratio {:.2})",
        load.0,
        load.1,
        idle.0,
        idle.1,
        if idle.1 > 0.0 { load.1 / idle.1 } else { 0.0 }
    );
}
