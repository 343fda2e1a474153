//! Cores and memory: the two resources every placement, quota and share is measured in.

use std::fmt;

/// Cores and memory, the two resources every placement accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Whole cores.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

impl Resources {
    /// No cores, no memory.
    pub const ZERO: Resources = Resources::new(0, 0);

    /// `cores` cores and `memory_mib` MiB.
    pub const fn new(cores: u32, memory_mib: u64) -> Self {
        Resources { cores, memory_mib }
    }

    /// True when `self` fits inside `other` in both cores and memory.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.cores <= other.cores && self.memory_mib <= other.memory_mib
    }

    /// The difference, never below zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cores: self.cores.saturating_sub(other.cores),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
        }
    }

    /// The sum of both (saturating, so absurd inputs cannot panic a pass).
    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            cores: self.cores.saturating_add(other.cores),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
        }
    }

    /// `n` times these resources, e.g. the total of `n` executors.
    pub fn times(&self, n: u32) -> Resources {
        Resources {
            cores: self.cores.saturating_mul(n),
            memory_mib: self.memory_mib.saturating_mul(u64::from(n)),
        }
    }

    /// Neither cores nor memory.
    pub fn is_zero(&self) -> bool {
        self.cores == 0 && self.memory_mib == 0
    }

    /// The larger of this usage's fractions of `total`'s cores and memory: the "dominant
    /// share" of Dominant Resource Fairness. A resource the cluster does not have counts
    /// as fully used by anyone who holds some of it.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        fn frac(used: u64, total: u64) -> f64 {
            match (used, total) {
                (0, _) => 0.0,
                (_, 0) => 1.0,
                (u, t) => u as f64 / t as f64,
            }
        }
        frac(u64::from(self.cores), u64::from(total.cores))
            .max(frac(self.memory_mib, total.memory_mib))
    }

    /// [`Resources::dominant_share`] in parts per 2^32, as an integer so that orderings
    /// built on it are exact and deterministic.
    pub(crate) fn dominant_share_fixed(&self, total: &Resources) -> u64 {
        fn frac(used: u64, total: u64) -> u64 {
            match (used, total) {
                (0, _) => 0,
                (_, 0) => 1 << 32,
                (u, t) => ((u128::from(u) << 32) / u128::from(t)).min(u128::from(u64::MAX)) as u64,
            }
        }
        frac(u64::from(self.cores), u64::from(total.cores))
            .max(frac(self.memory_mib, total.memory_mib))
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cores = if self.cores == 1 { "core" } else { "cores" };
        write!(f, "{} {cores}, {}", self.cores, fmt_mib(self.memory_mib))
    }
}

/// Memory for people: "512 MiB", "4 GiB", "1.5 GiB".
pub(crate) fn fmt_mib(mib: u64) -> String {
    let whole_gib = mib / 1024 * 1024 == mib;
    if mib >= 1024 && whole_gib {
        format!("{} GiB", mib / 1024)
    } else if mib >= 1024 {
        format!("{:.1} GiB", mib as f64 / 1024.0)
    } else {
        format!("{mib} MiB")
    }
}
