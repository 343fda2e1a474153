//! Property tests over simulated runs: random clusters, configs and job streams are played
//! through `sim::Sim` (which applies plans as the server does), and every plan is checked.
//! Sizes and case counts are kept small so the whole file runs in seconds in debug.

mod common;

use std::collections::{HashMap, HashSet};

use common::GIB;
use hearth_sched::sim::{drf_ideal, Event, Sim};
use hearth_sched::*;
use proptest::prelude::*;

const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];
const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const GROUPS: [&str; 2] = ["g0", "g1"];

#[derive(Debug, Clone)]
struct JobSpec {
    user: usize,
    at_s: i64,
    resources: Resources,
    options: JobOptions,
    runtime_s: i64,
}

#[derive(Debug, Clone)]
struct World {
    nodes: Vec<Node>,
    config: Config,
    jobs: Vec<JobSpec>,
}

fn node() -> impl Strategy<Value = (u32, u64, bool)> {
    (2u32..=16, 2u64..=64, prop::bool::weighted(0.9))
}

fn quota() -> impl Strategy<Value = Quota> {
    (
        prop::option::weighted(0.3, 1u32..=24),
        prop::option::weighted(0.3, 1u64..=96),
        prop::option::weighted(0.3, 1u32..=6),
    )
        .prop_map(|(c, m, r)| Quota {
            max_cores: c,
            max_memory_mib: m.map(|g| g * GIB),
            max_running_jobs: r,
            max_queued_jobs: None,
        })
}

fn queue(name: &'static str) -> impl Strategy<Value = Option<Queue>> {
    prop::option::weighted(
        0.6,
        (
            1u32..=3,
            prop::option::weighted(0.4, (1u32..=8, 1u64..=32)),
            prop::option::weighted(0.3, (2u32..=24, 2u64..=96)),
            prop::bool::weighted(0.2),
        )
            .prop_map(move |(weight, g, max, best_effort)| Queue {
                weight,
                guaranteed: g.map_or(Resources::ZERO, |(c, m)| Resources::new(c, m * GIB)),
                max: max.map(|(c, m)| Resources::new(c, m * GIB)),
                best_effort,
                ..Queue::new(name)
            }),
    )
}

fn config() -> impl Strategy<Value = Config> {
    (
        (queue(QUEUES[0]), queue(QUEUES[1]), queue(QUEUES[2])),
        prop::collection::vec(
            (prop::option::of(0usize..3), quota(), quota()),
            GROUPS.len(),
        ),
        prop::collection::vec(
            (
                prop::option::of(0usize..2),
                prop::option::weighted(0.3, quota()),
                prop::option::weighted(0.2, 0usize..3),
            ),
            USERS.len(),
        ),
        0u64..5_000,
    )
        .prop_map(|((q0, q1, q2), groups, users, grace)| Config {
            queues: [q0, q1, q2].into_iter().flatten().collect(),
            groups: groups
                .into_iter()
                .enumerate()
                .map(|(i, (q, quota, member_quota))| Group {
                    name: GROUPS[i].into(),
                    queue: q.map(|q| QUEUES[q].into()),
                    quota,
                    member_quota,
                })
                .collect(),
            users: users
                .into_iter()
                .enumerate()
                .map(|(i, (g, quota, cap))| User {
                    name: USERS[i].into(),
                    group: g.map(|g| GROUPS[g].into()),
                    quota,
                    max_priority: cap.map(|p| Priority::ALL[p]),
                })
                .collect(),
            preemption_grace_ms: grace,
            aging_ms: 20_000,
        })
}

fn job() -> impl Strategy<Value = JobSpec> {
    (
        (0usize..USERS.len(), 0i64..60, 1u32..=8, 1u64..=16),
        (
            0usize..3,
            prop::bool::weighted(0.3),
            prop::option::weighted(0.2, 0usize..4),
            prop::option::weighted(0.2, (1u64..=4, 1u32..=3, 1u64..=4, 1u32..=4, any::<bool>())),
        ),
        1i64..=60,
    )
        .prop_map(
            |((user, at_s, cores, gib), (prio, preemptible, queue, gang), runtime_s)| {
                let gang = gang.map(|(dm, ec, em, n, spread)| Gang {
                    driver: Resources::new(1, dm * GIB),
                    executor: Resources::new(ec, em * GIB),
                    executors: n,
                    spread,
                });
                let resources = gang.map_or(Resources::new(cores, gib * GIB), |g| g.total());
                let queue = queue.map(|q| QUEUES.get(q).copied().unwrap_or("nope").to_string());
                JobSpec {
                    user,
                    at_s,
                    resources,
                    options: JobOptions {
                        queue,
                        priority: Priority::ALL[prio],
                        preemptible,
                        gang,
                        constraints: Vec::new(),
                    },
                    runtime_s,
                }
            },
        )
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(node(), 1..=5),
        config(),
        prop::collection::vec(job(), 1..=30),
    )
        .prop_map(|(nodes, config, jobs)| World {
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, (c, m, ok))| Node {
                    name: format!("n{i}"),
                    capacity: Resources::new(c, m * GIB),
                    schedulable: ok || i == 0,
                    labels: Vec::new(),
                })
                .collect(),
            config,
            jobs,
        })
}

fn queue_of(snap: &Snapshot, job: JobId, user: &str) -> String {
    snap.job_options
        .get(&job)
        .and_then(|o| o.queue.clone())
        .unwrap_or_else(|| snap.config.default_queue_of(user).to_string())
}

/// Everything a single plan must satisfy, checked against the snapshot it was made from.
fn check_plan(snap: &Snapshot, plan: &Plan) {
    // Every queued job is placed or has a reason, once.
    let queued: HashMap<JobId, &PendingJob> = snap.queued.iter().map(|j| (j.id, j)).collect();
    let mut seen = HashSet::new();
    for id in plan
        .placements
        .iter()
        .map(|p| p.job)
        .chain(plan.waiting.iter().map(|w| w.job))
    {
        assert!(
            queued.contains_key(&id),
            "job {id} in the plan is not queued"
        );
        assert!(seen.insert(id), "job {id} appears twice in the plan");
    }
    assert_eq!(
        seen.len(),
        queued.len(),
        "every queued job is placed or waits"
    );

    // Gangs are placed whole, on schedulable nodes.
    let nodes: HashMap<&str, &Node> = snap.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for p in &plan.placements {
        let job = queued[&p.job];
        let gang = snap.job_options.get(&p.job).and_then(|o| o.gang);
        let total = gang.map_or(job.resources, |g| g.total());
        assert_eq!(p.total(), total, "job {} placed whole", p.job);
        if !gang.is_some_and(|g| g.spread) {
            assert!(p.executors.is_empty(), "a local gang stays on one node");
        }
        for (n, _) in p.holdings() {
            assert!(
                nodes[n.as_str()].schedulable,
                "placed on a schedulable node"
            );
        }
    }

    // No node is over-committed, counting what keeps running and what starts.
    let mut used: HashMap<&str, Resources> = HashMap::new();
    for a in &snap.running {
        let u = used.entry(a.node.as_str()).or_default();
        *u = u.add(&a.resources);
    }
    let holdings: Vec<(JobId, String, Resources)> = plan
        .placements
        .iter()
        .flat_map(|p| p.holdings().into_iter().map(move |(n, r)| (p.job, n, r)))
        .collect();
    for (_, n, r) in &holdings {
        let u = used.entry(n.as_str()).or_default();
        *u = u.add(r);
    }
    for (n, u) in &used {
        assert!(
            u.fits_in(&nodes[n].capacity),
            "node {n} over-committed: {u} of {}",
            nodes[n].capacity
        );
    }

    // No quota or queue maximum is exceeded after the plan.
    let config = &snap.config;
    let mut by_user: HashMap<String, (Resources, HashSet<JobId>)> = HashMap::new();
    let mut by_group: HashMap<String, (Resources, HashSet<JobId>)> = HashMap::new();
    let mut by_queue: HashMap<String, Resources> = HashMap::new();
    let all = snap
        .running
        .iter()
        .map(|a| (a.job, a.user.clone(), a.resources))
        .chain(
            holdings
                .iter()
                .map(|(j, _, r)| (*j, queued[j].user.clone(), *r)),
        );
    for (job, user, r) in all {
        let e = by_user.entry(user.clone()).or_default();
        e.0 = e.0.add(&r);
        e.1.insert(job);
        let e = by_group
            .entry(config.group_of(&user).to_string())
            .or_default();
        e.0 = e.0.add(&r);
        e.1.insert(job);
        let q = by_queue.entry(queue_of(snap, job, &user)).or_default();
        *q = q.add(&r);
    }
    let within = |q: &Quota, (r, jobs): &(Resources, HashSet<JobId>)| {
        q.max_cores.iter().all(|&m| r.cores <= m)
            && q.max_memory_mib.iter().all(|&m| r.memory_mib <= m)
            && q.max_running_jobs.iter().all(|&m| jobs.len() as u32 <= m)
    };
    for (user, usage) in &by_user {
        assert!(
            within(&config.user_quota(user), usage),
            "{user}'s quota exceeded"
        );
    }
    for (group, usage) in &by_group {
        if let Some(g) = config.group(group) {
            assert!(within(&g.quota, usage), "group {group}'s quota exceeded");
        }
    }
    for (queue, r) in &by_queue {
        if let Some(max) = config.queue(queue).and_then(|q| q.max) {
            assert!(r.fits_in(&max), "queue {queue} beyond its maximum");
        }
    }

    // Only running preemptible jobs are preempted, once, for a job that is waiting.
    let running_jobs: HashMap<JobId, &str> = snap
        .running
        .iter()
        .map(|a| (a.job, a.user.as_str()))
        .collect();
    let mut preempted = HashSet::new();
    for p in &plan.preemptions {
        assert!(preempted.insert(p.job), "job {} preempted twice", p.job);
        let user = running_jobs
            .get(&p.job)
            .expect("only running jobs are preempted");
        assert!(!snap.preempting.contains(&p.job), "already stopping");
        let opts = snap.job_options.get(&p.job).cloned().unwrap_or_default();
        let best_effort = config
            .queue(&queue_of(snap, p.job, user))
            .is_some_and(|q| q.best_effort);
        assert!(
            opts.preemptible || best_effort,
            "job {} is not preemptible",
            p.job
        );
        assert!(queued.contains_key(&p.by), "preempted for a queued job");
        assert!(
            plan.placement(p.by).is_none(),
            "the claimant waits for the victim"
        );
    }

    assert_eq!(
        &hearth_sched::schedule(snap),
        plan,
        "same snapshot, same plan"
    );
}

/// The default number of cases, or `PROPTEST_CASES` for a longer hunt.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn is_permanent(r: &WaitReason) -> bool {
    matches!(
        r,
        WaitReason::NoNodes
            | WaitReason::NeverFits { .. }
            | WaitReason::ClusterTooSmall { .. }
            | WaitReason::UnknownQueue { .. }
            | WaitReason::ExceedsLimit { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), max_shrink_iters: 400, ..ProptestConfig::default() })]

    /// Plans never over-commit a node or exceed a quota; every job that can run at all
    /// eventually runs to the end; every preempted job is requeued and finishes.
    #[test]
    fn plans_are_safe_and_every_job_that_fits_eventually_runs(w in world()) {
        let mut sim = Sim::new(w.nodes.clone(), w.config.clone());
        let mut stuck: HashSet<JobId> = HashSet::new();
        let mut step = 0;
        let mut jobs: Vec<(JobId, JobSpec)> =
            w.jobs.iter().cloned().enumerate().map(|(i, j)| (i as JobId + 1, j)).collect();
        jobs.sort_by_key(|(id, j)| (j.at_s, *id));
        let mut next = 0;
        while step < 6_000 {
            while next < jobs.len() && jobs[next].1.at_s <= step {
                let (id, j) = &jobs[next];
                sim.submit(
                    PendingJob {
                        id: *id,
                        user: USERS[j.user].into(),
                        submitted_ms: j.at_s * 1000,
                        resources: j.resources,
                    },
                    j.options.clone(),
                    j.runtime_s * 1000,
                );
                next += 1;
            }
            sim.advance(1000);
            let plan = hearth_sched::schedule(&sim.snapshot);
            check_plan(&sim.snapshot, &plan);
            for w in &plan.waiting {
                if is_permanent(&w.reason) {
                    stuck.insert(w.job);
                }
            }
            sim.apply(&plan);
            step += 1;
            let all_in = next == jobs.len();
            let left = sim.snapshot.queued.iter().any(|j| !stuck.contains(&j.id));
            if all_in && !left && sim.snapshot.running.is_empty() {
                break;
            }
        }
        for (id, _) in &jobs {
            if stuck.contains(id) {
                prop_assert!(!sim.is_finished(*id), "job {} could never run", id);
            } else {
                prop_assert!(sim.is_finished(*id), "job {} never finished (step {})", id, step);
            }
        }
        for e in &sim.events {
            if let Event::Preempted { job, .. } = e {
                prop_assert!(sim.is_finished(*job), "preempted job {} was requeued and finished", job);
            }
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(8), max_shrink_iters: 20, ..ProptestConfig::default() })]

    /// With steady demand, each user's time-averaged dominant share over the second half
    /// hour is close to the DRF ideal for what they ask (4 nodes of 32 cores, 128 GiB).
    #[test]
    fn dominant_shares_converge_to_the_drf_ideal(
        shapes in prop::collection::vec((1u32..=4, 1u64..=16), 2..=3),
        seed in any::<u64>(),
    ) {
        let nodes: Vec<Node> = (0..4).map(|i| common::node(&format!("n{i}"), 32, 128)).collect();
        let mut sim = Sim::new(nodes, Config::default());
        let total = sim.capacity();
        let shapes: Vec<Resources> = shapes.iter().map(|&(c, g)| Resources::new(c, g * GIB)).collect();
        let mut rng = Rng(seed);
        let mut id = 0;
        let (mut actual, mut ideal) = (vec![0.0; shapes.len()], vec![0.0; shapes.len()]);
        let mut samples = 0.0;
        for t in 0..3600 {
            for (u, shape) in shapes.iter().enumerate() {
                let queued = sim.snapshot.queued.iter().filter(|j| j.user == USERS[u]).count();
                for _ in queued..20 {
                    id += 1;
                    let runtime = 20_000 + (rng.next() % 100_000) as i64;
                    sim.submit(
                        PendingJob { id, user: USERS[u].into(), submitted_ms: sim.now_ms(), resources: *shape },
                        JobOptions::default(),
                        runtime,
                    );
                }
            }
            sim.step(1000);
            if t >= 1800 {
                let shares = sim.dominant_shares();
                let asks: Vec<(Resources, f64)> = shapes.iter().enumerate().map(|(u, s)| {
                    let running = sim.snapshot.running.iter().filter(|a| a.user == USERS[u])
                        .fold(Resources::ZERO, |acc, a| acc.add(&a.resources));
                    let demand = sim.snapshot.queued.iter().filter(|j| j.user == USERS[u])
                        .fold(running, |acc, j| acc.add(&j.resources));
                    (*s, demand.dominant_share(&total))
                }).collect();
                let fair = drf_ideal(total, &asks);
                for u in 0..shapes.len() {
                    actual[u] += shares.get(USERS[u]).copied().unwrap_or(0.0);
                    ideal[u] += fair[u];
                }
                samples += 1.0;
            }
        }
        // Whole jobs cannot match the ideal of divisible ones exactly. One more job of the
        // coarsest user displaces up to that job's share of the others, and each node can
        // waste up to one such job's worth that no shape fits, shared by all users. Allow
        // both, plus 5% of the ideal. (A scheduler that ignored DRF, e.g. oldest first,
        // misses by far more: with jobs of <4 cores, 1 GiB> and <1 core, 2 GiB> it would give
        // shares of 0.78 and 0.20 where DRF gives 0.5 each, against a slack of 0.12.)
        let coarsest = shapes.iter().map(|s| s.dominant_share(&total)).fold(0.0, f64::max);
        let per_user_waste = coarsest * 4.0 / shapes.len() as f64;
        for u in 0..shapes.len() {
            let (a, i) = (actual[u] / samples, ideal[u] / samples);
            let slack = 0.05 * i + coarsest + per_user_waste;
            if std::env::var("DRF_PRINT").is_ok() {
                eprintln!("DRF {:+.3} {a:.3} {i:.3} {shapes:?}", (a - i).abs() - slack);
            }
            prop_assert!((a - i).abs() <= slack,
                "user {} (jobs of {}): {:.3} vs ideal {:.3}, shapes {:?}", USERS[u], shapes[u], a, i, shapes);
        }
    }
}
