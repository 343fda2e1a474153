//! The machine's usage history: every `--usage-interval` a sample of the cores and memory that
//! jobs and Spark Connect engines hold against what is offered, and how many jobs run and
//! wait. Kept in memory only, in a ring covering a day, for the console's utilisation charts.
//! Also the local node's measured use (cores busy, memory in use), as agents measure theirs.

use crate::jobs::dispatch::gang;
use crate::store::now_ms;
use crate::App;
use hearth_agent::machine::Meter;
use hearth_model::api::UsageSample;
use hearth_model::cluster::{MachineUse, MAX_HEARTBEAT_MS};
use hearth_model::JobState;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How far back the history reaches.
pub const HISTORY: Duration = Duration::from_secs(24 * 3600);
/// Memory bound whatever the interval: a day of one-second samples.
const MAX_SAMPLES: usize = 86_400;

/// Samples, oldest first; the oldest go when the ring is full.
pub struct UsageRing {
    samples: Mutex<VecDeque<UsageSample>>,
    capacity: usize,
}

impl UsageRing {
    /// A ring holding a day of samples taken every `interval`.
    pub fn new(interval: Duration) -> UsageRing {
        let every = interval.as_secs().max(1);
        let capacity = (HISTORY.as_secs() / every).clamp(2, MAX_SAMPLES as u64) as usize;
        UsageRing {
            samples: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
        }
    }

    pub fn push(&self, s: UsageSample) {
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        while q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The samples taken at or after `since_ms`, oldest first.
    pub fn since(&self, since_ms: i64) -> Vec<UsageSample> {
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let start = q.partition_point(|s| s.at_ms < since_ms);
        q.range(start..).copied().collect()
    }
}

/// This machine's latest measured use, and the meter that takes the next reading.
#[derive(Default)]
pub struct LocalMachine {
    meter: Mutex<Meter>,
    latest: Mutex<Option<MachineUse>>,
}

impl LocalMachine {
    /// The latest reading; None before the first or when /proc cannot be read.
    pub fn latest(&self) -> Option<MachineUse> {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn measure(&self) {
        let got = self
            .meter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .measure();
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = got;
    }
}

/// Measures this machine at the pace agents send heartbeats at most (not `--usage-interval`,
/// a minute by default: too slow a figure beside joined nodes', and CPU use is averaged
/// over the gap between readings) until the server shuts down.
pub async fn measure(app: Arc<App>, mut stop: crate::background::Stop) {
    let every = Duration::from_millis(MAX_HEARTBEAT_MS);
    // The first reading was taken at start-up (`app.machine.measure()`).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::background::stopped(&mut stop) => return,
            _ = tick.tick() => app.machine.measure(),
        }
    }
}

/// What is in use right now.
pub fn sample(app: &App) -> Result<UsageSample, rusqlite::Error> {
    let jobs = app
        .store
        .jobs_in(&[JobState::Queued, JobState::Starting, JobState::Running])?;
    let mut s = UsageSample {
        at_ms: now_ms(),
        cores: app.cfg.cores,
        used_cores: 0,
        memory_mib: app.cfg.memory_mib,
        used_memory_mib: 0,
        running_jobs: 0,
        queued_jobs: 0,
    };
    for j in &jobs {
        if j.state == JobState::Queued {
            s.queued_jobs += 1;
        } else {
            let r = gang(j);
            s.running_jobs += 1;
            s.used_cores += r.cores;
            s.used_memory_mib += r.memory_mib;
        }
    }
    for a in crate::interactive::engines::allocations(app) {
        s.used_cores += a.resources.cores;
        s.used_memory_mib += a.resources.memory_mib;
    }
    Ok(s)
}

/// Samples every `cfg.usage_interval` until the server shuts down.
pub async fn run(app: Arc<App>, mut stop: crate::background::Stop) {
    let mut tick = tokio::time::interval(app.cfg.usage_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::background::stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        match sample(&app) {
            Ok(s) => app.usage.push(s),
            Err(e) => tracing::warn!("sampling the machine's usage: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> UsageSample {
        UsageSample {
            at_ms: ms,
            cores: 4,
            used_cores: 1,
            memory_mib: 1024,
            used_memory_mib: 512,
            running_jobs: 1,
            queued_jobs: 0,
        }
    }

    #[test]
    fn the_ring_keeps_a_day_and_drops_the_oldest() {
        let ring = UsageRing::new(Duration::from_secs(3600));
        assert_eq!(ring.capacity, 24);
        for i in 0..30 {
            ring.push(at(i));
        }
        let all = ring.since(0);
        assert_eq!(all.len(), 24);
        assert_eq!(all.first().map(|s| s.at_ms), Some(6));
        assert_eq!(ring.since(20).len(), 10);
        assert!(ring.since(100).is_empty());
    }

    #[test]
    fn one_second_samples_are_bounded() {
        assert_eq!(UsageRing::new(Duration::from_secs(1)).capacity, MAX_SAMPLES);
        assert_eq!(
            UsageRing::new(Duration::from_millis(10)).capacity,
            MAX_SAMPLES
        );
    }
}
