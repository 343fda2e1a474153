//! A simulated hour of three users with different demand on a 16-node cluster, one pass a
//! second: each user's time-averaged dominant share against the Dominant Resource
//! Fairness ideal (recomputed every second from what each user has asked for, so a user
//! with little demand is entitled to no more than that demand). Prints a table and writes
//! an SVG plot of the shares over time.
//!
//! Run: `cargo bench -p hearth-sched --bench fairness [-- OUT.svg]`
//! (default output: bench/sched/fairness.svg in the workspace).

use std::fmt::Write as _;
use std::time::Instant;

use hearth_sched::sim::{drf_ideal, Sim};
use hearth_sched::*;

const GIB: u64 = 1024;
const HOUR_MS: i64 = 3_600_000;
const STEP_MS: i64 = 1_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

struct Demand {
    user: &'static str,
    shape: Resources,
    what: &'static str,
}

fn main() {
    let out = std::env::args()
        .skip(1)
        .find(|a| a.ends_with(".svg"))
        .unwrap_or_else(|| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../bench/sched/fairness.svg"
            )
            .to_string()
        });
    let nodes: Vec<Node> = (0..16)
        .map(|i| Node {
            name: format!("n{i:02}"),
            capacity: Resources::new(32, 128 * GIB),
            schedulable: true,
            labels: Vec::new(),
        })
        .collect();
    let users = [
        Demand {
            user: "alice",
            shape: Resources::new(4, 2 * GIB),
            what: "CPU-heavy jobs (4 cores, 2 GiB), always 50 queued",
        },
        Demand {
            user: "bob",
            shape: Resources::new(1, 12 * GIB),
            what: "memory-heavy jobs (1 core, 12 GiB), always 50 queued",
        },
        Demand {
            user: "carol",
            shape: Resources::new(2, 8 * GIB),
            what: "light demand: one job (2 cores, 8 GiB) every 5 s, running 200 s",
        },
    ];
    let mut sim = Sim::new(nodes, Config::default());
    let total = sim.capacity();
    let mut rng = Rng(2024);
    let mut next_id = 0u64;
    let mut submit = |sim: &mut Sim, u: usize, runtime: i64| {
        next_id += 1;
        let job = PendingJob {
            id: next_id,
            user: users[u].user.into(),
            submitted_ms: sim.now_ms(),
            resources: users[u].shape,
        };
        sim.submit(job, JobOptions::default(), runtime);
    };

    let n = users.len();
    let mut actual_sum = vec![0.0; n];
    let mut ideal_sum = vec![0.0; n];
    let mut series: Vec<(f64, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut sched_time = std::time::Duration::ZERO;
    let mut passes = 0u32;
    let started = Instant::now();
    let mut t = 0;
    while t < HOUR_MS {
        // Steady demand for alice and bob; carol's arrivals.
        for (u, d) in users.iter().enumerate().take(2) {
            let queued = sim
                .snapshot
                .queued
                .iter()
                .filter(|j| j.user == d.user)
                .count();
            for _ in queued..50 {
                let runtime = rng.between(60_000, 300_000);
                submit(&mut sim, u, runtime);
            }
        }
        if t % 5_000 == 0 {
            submit(&mut sim, 2, 200_000);
        }
        let pass = Instant::now();
        sim.step(STEP_MS);
        sched_time += pass.elapsed();
        passes += 1;
        t += STEP_MS;

        // Each user's demand: everything running or queued, as a dominant share.
        let mut demand = vec![Resources::ZERO; n];
        for (u, d) in users.iter().enumerate() {
            for a in sim.snapshot.running.iter().filter(|a| a.user == d.user) {
                demand[u] = demand[u].add(&a.resources);
            }
            for j in sim.snapshot.queued.iter().filter(|j| j.user == d.user) {
                demand[u] = demand[u].add(&j.resources);
            }
        }
        let asks: Vec<(Resources, f64)> = (0..n)
            .map(|u| (users[u].shape, demand[u].dominant_share(&total)))
            .collect();
        let ideal = drf_ideal(total, &asks);
        let shares = sim.dominant_shares();
        let actual: Vec<f64> = users
            .iter()
            .map(|d| shares.get(d.user).copied().unwrap_or(0.0))
            .collect();
        for u in 0..n {
            actual_sum[u] += actual[u];
            ideal_sum[u] += ideal[u];
        }
        if t % 10_000 == 0 {
            series.push((t as f64 / 60_000.0, actual, ideal));
        }
    }
    let steps = f64::from(passes);
    println!(
        "simulated 1 hour: 16 nodes x (32 cores, 128 GiB), one pass per second ({passes} passes, {:.1} ms scheduling in all, {:.2} s wall)",
        sched_time.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    println!("| user | demand | time-averaged dominant share | DRF ideal | difference |");
    println!("|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    for u in 0..n {
        let a = actual_sum[u] / steps;
        let i = ideal_sum[u] / steps;
        let diff = (a - i) / i;
        worst = worst.max(diff.abs());
        println!(
            "| {} | {} | {:.3} | {:.3} | {:+.1}% |",
            users[u].user,
            users[u].what,
            a,
            i,
            diff * 100.0
        );
    }
    println!(
        "worst difference: {:.1}% (goal: within 5%) -> {}",
        worst * 100.0,
        if worst <= 0.05 { "met" } else { "NOT met" }
    );
    let svg = plot(&series, &users);
    match std::fs::write(&out, svg) {
        Ok(()) => println!("plot: {out}"),
        Err(e) => eprintln!("could not write {out}: {e}"),
    }
}

fn plot(series: &[(f64, Vec<f64>, Vec<f64>)], users: &[Demand]) -> String {
    let (w, h, m) = (720.0, 360.0, 50.0);
    let x = |min: f64| m + min / 60.0 * (w - 2.0 * m);
    let y = |share: f64| h - m - share * (h - 2.0 * m);
    let colors = ["#d62728", "#1f77b4", "#2ca02c"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{m}" y="20">Dominant share per user over a simulated hour (solid: actual, dashed: DRF ideal)</text>"#
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let yy = y(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{m}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="10" y="{}">{tick:.2}</text>"##,
            w - m,
            yy + 4.0,
        );
    }
    for min in [0, 15, 30, 45, 60] {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{min} min</text>"#,
            x(f64::from(min)) - 12.0,
            h - m + 18.0
        );
    }
    for (u, d) in users.iter().enumerate() {
        let actual: Vec<String> = series
            .iter()
            .map(|(t, a, _)| format!("{:.1},{:.1}", x(*t), y(a[u])))
            .collect();
        let ideal: Vec<String> = series
            .iter()
            .map(|(t, _, i)| format!("{:.1},{:.1}", x(*t), y(i[u])))
            .collect();
        let c = colors[u % colors.len()];
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#,
            actual.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-dasharray="5,4" points="{}"/>"#,
            ideal.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{c}">{}</text>"#,
            w - m - 60.0,
            40.0 + 16.0 * u as f64,
            d.user
        );
    }
    s.push_str("</svg>\n");
    s
}
