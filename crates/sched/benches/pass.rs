//! One scheduling pass over 10,000 queued jobs, 1,000 nodes, 100 users in 10 queues, timed
//! with `Instant` (median of several runs), against the old FIFO pass on the same input;
//! then the sustained placement rate over many passes of a churning cluster.
//!
//! Run: `cargo bench -p hearth-sched --bench pass` (add `-- --quick` for fewer runs).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use hearth_sched::*;

const GIB: u64 = 1024;

/// splitmix64: a tiny deterministic generator, so every run sees the same cluster.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn config() -> Config {
    let queues = (0..10)
        .map(|q| Queue {
            weight: 1 + (q % 3),
            guaranteed: if q < 3 {
                Resources::new(2_000, 8_000 * GIB)
            } else {
                Resources::ZERO
            },
            max: (q == 5).then_some(Resources::new(8_000, 32_000 * GIB)),
            best_effort: q == 9,
            ..Queue::new(format!("q{q}"))
        })
        .collect();
    let groups = (0..10)
        .map(|g| Group {
            name: format!("g{g}"),
            queue: Some(format!("q{g}")),
            quota: Quota {
                max_cores: (g % 4 == 1).then_some(3_000),
                ..Quota::default()
            },
            member_quota: Quota {
                max_running_jobs: (g % 5 == 2).then_some(60),
                ..Quota::default()
            },
        })
        .collect();
    let users = (0..100)
        .map(|u| User {
            name: format!("u{u:02}"),
            group: Some(format!("g{}", u % 10)),
            quota: (u % 7 == 0).then_some(Quota {
                max_cores: Some(400),
                max_memory_mib: Some(1_600 * GIB),
                ..Quota::default()
            }),
            max_priority: (u % 11 == 0).then_some(Priority::Normal),
        })
        .collect();
    Config {
        queues,
        groups,
        users,
        ..Config::default()
    }
}

fn job_shape(rng: &mut Rng) -> Resources {
    let cores = match rng.below(10) {
        0..=4 => 1 + rng.below(2),
        5..=7 => 2 + rng.below(4),
        8 => 4 + rng.below(8),
        _ => 8 + rng.below(17),
    } as u32;
    let gib_per_core = 1 + rng.below(8);
    Resources::new(cores, u64::from(cores) * gib_per_core * GIB)
}

fn options(rng: &mut Rng, total: Resources) -> JobOptions {
    let priority = Priority::ALL[rng.below(3) as usize];
    let gang = (total.cores >= 5 && rng.chance(30)).then(|| {
        let executors = (total.cores - 1).min(8);
        let each = Resources::new(
            (total.cores - 1) / executors,
            total.memory_mib / u64::from(total.cores),
        );
        Gang {
            driver: Resources::new(1, 2 * GIB),
            executor: each,
            executors,
            spread: rng.chance(20),
        }
    });
    JobOptions {
        queue: rng.chance(5).then(|| format!("q{}", rng.below(10))),
        priority,
        preemptible: rng.chance(15),
        gang,
        constraints: Vec::new(),
    }
}

/// 1,000 nodes about 70% busy, 10,000 queued jobs from 100 users in 10 queues.
fn snapshot(seed: u64) -> Snapshot {
    let mut rng = Rng(seed);
    let nodes: Vec<Node> = (0..1000)
        .map(|i| {
            let big = i % 10 < 3;
            Node {
                name: format!("node{i:04}"),
                capacity: if big {
                    Resources::new(64, 256 * GIB)
                } else {
                    Resources::new(32, 128 * GIB)
                },
                schedulable: i % 97 != 0,
                labels: Vec::new(),
            }
        })
        .collect();
    let mut snap = Snapshot {
        now_ms: 10_000_000,
        nodes,
        config: config(),
        ..Snapshot::default()
    };
    let mut id = 0u64;
    for n in &snap.nodes {
        let mut used = Resources::ZERO;
        loop {
            let r = job_shape(&mut rng);
            let next = used.add(&r);
            if next.cores * 10 > n.capacity.cores * 7 || !next.fits_in(&n.capacity) {
                break;
            }
            used = next;
            id += 1;
            let user = format!("u{:02}", rng.below(100));
            snap.running.push(Allocation {
                job: id,
                user,
                node: n.name.clone(),
                resources: r,
            });
            if rng.chance(15) {
                snap.job_options.insert(id, options(&mut rng, r));
                snap.job_options.get_mut(&id).unwrap().gang = None;
            }
        }
    }
    for _ in 0..10_000 {
        id += 1;
        let r = job_shape(&mut rng);
        let opts = options(&mut rng, r);
        let total = opts.gang.map_or(r, |g| g.total());
        snap.queued.push(PendingJob {
            id,
            user: format!("u{:02}", rng.below(100)),
            submitted_ms: rng.below(10_000_000) as i64,
            resources: total,
        });
        snap.job_options.insert(id, opts);
    }
    snap
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut() -> Plan>(runs: usize, mut f: F) -> (Duration, Plan) {
    let mut plan = f();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        plan = black_box(f());
        times.push(t.elapsed());
    }
    (median(times), plan)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Many passes over a churning cluster: each pass some running jobs end and new jobs
/// arrive, and the plan is applied. Counts placements per second of scheduler time only.
fn sustained(passes: usize) -> (usize, Duration) {
    let mut snap = snapshot(7);
    let mut rng = Rng(99);
    let mut next_id = 10_000_000u64;
    let (mut placed, mut spent) = (0usize, Duration::ZERO);
    for _ in 0..passes {
        snap.now_ms += 1_000;
        // About 5% of running allocations end.
        let mut ending: Vec<JobId> = snap.running.iter().map(|a| a.job).collect();
        ending.retain(|_| rng.chance(5));
        let ending: std::collections::HashSet<JobId> = ending.into_iter().collect();
        snap.running.retain(|a| !ending.contains(&a.job));
        snap.preempting.retain(|j| !ending.contains(j));
        // Keep about 10,000 queued.
        while snap.queued.len() < 10_000 {
            next_id += 1;
            let r = job_shape(&mut rng);
            let opts = options(&mut rng, r);
            let total = opts.gang.map_or(r, |g| g.total());
            snap.queued.push(PendingJob {
                id: next_id,
                user: format!("u{:02}", rng.below(100)),
                submitted_ms: snap.now_ms,
                resources: total,
            });
            snap.job_options.insert(next_id, opts);
        }
        let t = Instant::now();
        let plan = schedule(&snap);
        spent += t.elapsed();
        placed += plan.placements.len();
        // Preempted jobs stop at once here (grace is the server's business).
        let stopped: std::collections::HashSet<JobId> =
            plan.preemptions.iter().map(|p| p.job).collect();
        snap.running.retain(|a| !stopped.contains(&a.job));
        let users: HashMap<JobId, String> =
            snap.queued.iter().map(|j| (j.id, j.user.clone())).collect();
        let placed_ids: std::collections::HashSet<JobId> =
            plan.placements.iter().map(|p| p.job).collect();
        for p in &plan.placements {
            for (node, resources) in p.holdings() {
                snap.running.push(Allocation {
                    job: p.job,
                    user: users[&p.job].clone(),
                    node,
                    resources,
                });
            }
        }
        snap.queued.retain(|j| !placed_ids.contains(&j.id));
    }
    (placed, spent)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--profile") {
        // Only the pass, for `perf record`.
        let snap = snapshot(1);
        for _ in 0..200 {
            black_box(schedule(&snap));
        }
        return;
    }
    let runs = if quick { 5 } else { 21 };
    let snap = snapshot(1);
    let users: std::collections::HashSet<&str> =
        snap.queued.iter().map(|j| j.user.as_str()).collect();
    println!(
        "input: {} nodes, {} running allocations, {} queued jobs, {} users, {} queues",
        snap.nodes.len(),
        snap.running.len(),
        snap.queued.len(),
        users.len(),
        snap.config.queues.len()
    );
    // Interleave so that both see the same machine noise.
    let (t_fifo, fifo) = time(runs, || fifo_baseline(&snap));
    let (t_pass, plan) = time(runs, || schedule(&snap));
    let (t_fifo2, _) = time(runs, || fifo_baseline(&snap));
    let t_fifo = t_fifo.min(t_fifo2);
    println!(
        "schedule:      median {:8.3} ms over {runs} runs: {} placed, {} waiting, {} preemptions",
        ms(t_pass),
        plan.placements.len(),
        plan.waiting.len(),
        plan.preemptions.len()
    );
    println!(
        "fifo_baseline: median {:8.3} ms over {runs} runs: {} placed, {} waiting",
        ms(t_fifo),
        fifo.placements.len(),
        fifo.waiting.len()
    );
    println!(
        "ratio schedule / fifo_baseline: {:.2}",
        t_pass.as_secs_f64() / t_fifo.as_secs_f64()
    );
    println!(
        "placement rate within the pass: {:.0} placements/s",
        plan.placements.len() as f64 / t_pass.as_secs_f64()
    );

    // An empty cluster: how fast the pass places when most jobs fit.
    let mut empty = snap.clone();
    empty.running.clear();
    let (t_empty, plan_empty) = time(runs, || schedule(&empty));
    println!(
        "empty cluster: median {:8.3} ms: {} placed -> {:.0} placements/s",
        ms(t_empty),
        plan_empty.placements.len(),
        plan_empty.placements.len() as f64 / t_empty.as_secs_f64()
    );

    // The pass after a wave of preemptions: their jobs are still stopping (grace period)
    // and their resources are promised to the jobs that claimed them.
    let mut after = snap.clone();
    after.preempting = plan.preemptions.iter().map(|p| p.job).collect();
    let (t_after, plan_after) = time(runs, || schedule(&after));
    println!(
        "next pass, {} jobs stopping: median {:8.3} ms: {} placed, {} more preemptions",
        after.preempting.len(),
        ms(t_after),
        plan_after.placements.len(),
        plan_after.preemptions.len()
    );

    let passes = if quick { 20 } else { 100 };
    let (placed, spent) = sustained(passes);
    println!(
        "sustained: {passes} passes over a churning cluster, {placed} placements in {:.1} ms of scheduling -> {:.0} placements/s, {:.3} ms per pass",
        ms(spent),
        placed as f64 / spent.as_secs_f64(),
        ms(spent) / passes as f64
    );
}
