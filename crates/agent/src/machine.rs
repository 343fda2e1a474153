//! What a machine has in use, measured: cores busy and memory in use, from `/proc/stat` and
//! `/proc/meminfo`. Agents send it with their heartbeats and the server measures its own
//! machine the same way, so the console can show use beside what jobs hold.
//!
//! Machine-wide on purpose, and labelled so wherever it is shown. Hearth's own cgroup tree
//! would be narrower but is not this node's: the `hearth` cgroup folder is shared by every
//! Hearth instance on a machine (a server and an agent, or several agents, on one host all
//! count there), there is none at all with isolation off, and on cgroup v1 memory's usage
//! counts page cache. The machine's figure is always there, and it also shows load from
//! outside Hearth, which the scheduler cannot see but jobs feel.

use hearth_model::cluster::MachineUse;
use std::time::{Duration, Instant};

const STAT: &str = "/proc/stat";
const MEMINFO: &str = "/proc/meminfo";

/// CPU time counters of the whole machine (the aggregate `cpu` line), in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Running code: user, nice, system, irq, softirq (guest time is already in user/nice).
    pub busy: u64,
    /// Everything counted, idle, iowait and steal included.
    pub total: u64,
    /// Online CPUs (the `cpuN` lines).
    pub cpus: u32,
}

/// Reads the aggregate `cpu` line and counts the `cpuN` lines of `/proc/stat`'s text.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let mut times = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal [guest guest_nice]
                let v: Vec<u64> = fields.take(8).map(|f| f.parse().unwrap_or(0)).collect();
                if v.len() < 4 {
                    return None;
                }
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                // Steal is time the hypervisor gave to other guests: counted in the total,
                // not as busy, so a starved VM does not look loaded by its own work.
                let busy = at(0) + at(1) + at(2) + at(5) + at(6);
                times = Some((busy, v.iter().sum::<u64>()));
            }
            Some(name) if name.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    let (busy, total) = times?;
    Some(CpuTimes {
        busy,
        total,
        cpus: cpus.max(1),
    })
}

/// Memory (total, in use) in MiB from `/proc/meminfo`'s text. In use is what `free` calls
/// used less what the kernel would hand back: `MemTotal - MemAvailable`, so page cache that
/// can be dropped does not count.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.split_ascii_whitespace().next()?.parse::<u64>().ok())
    };
    let total = kib("MemTotal")?;
    let available = kib("MemAvailable")?;
    Some((total / 1024, total.saturating_sub(available) / 1024))
}

/// Thousandths of a core busy between two readings: the busy share of the ticks that passed,
/// times the CPUs. None when no time passed or the counters went backwards (they are
/// per-boot; a reading from before a CPU went offline can be larger).
pub fn busy_millicores(before: CpuTimes, after: CpuTimes) -> Option<u32> {
    let total = after.total.checked_sub(before.total)?;
    let busy = after.busy.checked_sub(before.busy)?;
    if total == 0 {
        return None;
    }
    let milli = u128::from(busy.min(total)) * u128::from(after.cpus) * 1000 / u128::from(total);
    u32::try_from(milli).ok()
}

/// Measures the machine, keeping the previous CPU reading: CPU use is the average since then.
#[derive(Debug)]
pub struct Meter {
    /// The reading CPU use is measured from, and when it was taken.
    last: Option<(CpuTimes, Instant)>,
    /// The latest CPU figure.
    cpu_millicores: Option<u32>,
    /// The shortest span a CPU figure averages over: a reading taken sooner (the first
    /// heartbeat of a new connection comes right after the one before) would count a handful
    /// of 10 ms ticks and swing between 0 and every core.
    window: Duration,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter {
            last: None,
            cpu_millicores: None,
            window: Duration::from_secs(1),
        }
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter::default()
    }

    /// The machine's use now; CPU averaged since the previous reading at least a second
    /// old (None until there is one). None when /proc cannot be read (not Linux, or /proc
    /// not mounted).
    pub fn measure(&mut self) -> Option<MachineUse> {
        let (memory_total_mib, memory_mib) =
            parse_meminfo(&std::fs::read_to_string(MEMINFO).ok()?)?;
        let now = std::fs::read_to_string(STAT)
            .ok()
            .and_then(|t| parse_stat(&t));
        match (self.last, now) {
            (Some((before, at)), Some(after)) if at.elapsed() >= self.window => {
                self.cpu_millicores = busy_millicores(before, after);
                self.last = Some((after, Instant::now()));
            }
            (None, Some(after)) => self.last = Some((after, Instant::now())),
            // Too soon: the figure stays, measured from the same reading next time.
            _ => {}
        }
        Some(MachineUse {
            cpus: now.map_or(0, |t| t.cpus),
            cpu_millicores: self.cpu_millicores,
            memory_total_mib,
            memory_mib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_TEXT: &str = "cpu  100 20 30 800 40 0 10 5 7 0\n\
        cpu0 50 10 15 400 20 0 5 3 4 0\n\
        cpu1 50 10 15 400 20 0 5 2 3 0\n\
        intr 602587 0 0\nctxt 772579\nbtime 1796205008\n";

    #[test]
    fn the_cpu_line_splits_into_busy_and_total_ticks() {
        let t = parse_stat(STAT_TEXT).expect("parses");
        // busy: user 100 + nice 20 + system 30 + irq 0 + softirq 10; guest (7) not again.
        assert_eq!(t.busy, 160);
        // total: the first eight fields, idle, iowait and steal included.
        assert_eq!(t.total, 100 + 20 + 30 + 800 + 40 + 10 + 5);
        assert_eq!(t.cpus, 2);
        assert_eq!(parse_stat("intr 1 2 3\n"), None);
        assert_eq!(parse_stat("cpu 1 2\n"), None);
    }

    #[test]
    fn busy_cores_are_the_busy_share_of_the_ticks_times_the_cpus() {
        let at = |busy, total| CpuTimes {
            busy,
            total,
            cpus: 4,
        };
        // A quarter of all ticks busy on four CPUs: one core.
        assert_eq!(busy_millicores(at(100, 1000), at(200, 1400)), Some(1000));
        // Fully busy.
        assert_eq!(busy_millicores(at(0, 0), at(400, 400)), Some(4000));
        assert_eq!(busy_millicores(at(0, 0), at(0, 400)), Some(0));
        // No time passed, or counters that went backwards: no figure rather than a wrong one.
        assert_eq!(busy_millicores(at(10, 100), at(10, 100)), None);
        assert_eq!(busy_millicores(at(10, 100), at(5, 200)), None);
        assert_eq!(busy_millicores(at(10, 100), at(20, 90)), None);
    }

    #[test]
    fn memory_in_use_is_total_less_available() {
        let text = "MemTotal:       24683584 kB\nMemFree:        16448468 kB\n\
                    MemAvailable:   23311112 kB\nBuffers:           36032 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some((24105, (24683584 - 23311112) / 1024))
        );
        // A kernel without MemAvailable (before 3.14) gives no figure rather than a guess.
        assert_eq!(parse_meminfo("MemTotal: 1024 kB\nMemFree: 10 kB\n"), None);
    }

    #[test]
    fn this_machine_measures_memory_at_once_and_cpu_from_the_second_reading() {
        let mut m = Meter {
            window: Duration::from_millis(100),
            ..Meter::new()
        };
        let first = m.measure().expect("a Linux /proc");
        assert!(first.memory_mib > 0 && first.memory_mib <= first.memory_total_mib);
        assert!(first.cpus >= 1);
        assert_eq!(first.cpu_millicores, None);
        // Too soon for a figure that means anything.
        assert_eq!(m.measure().map(|u| u.cpu_millicores), Some(None));
        std::thread::sleep(Duration::from_millis(150));
        let second = m.measure().expect("a Linux /proc");
        // Ticks are 10 ms at most: 150 ms has passed some on every CPU.
        let busy = second.cpu_millicores.expect("a CPU figure");
        assert!(busy <= second.cpus * 1000, "{busy}");
        // A reading right after keeps the figure rather than measuring a few ticks.
        assert_eq!(m.measure().map(|u| u.cpu_millicores), Some(Some(busy)));
    }
}
