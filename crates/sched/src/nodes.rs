//! Free resources per node, indexed for best-fit queries, and where a gang was fitted:
//! the structures stage 4 (`fit`) searches and the pass's state keeps. Nothing here knows
//! of the pass.

use std::collections::BTreeSet;

use crate::resources::Resources;
use crate::snapshot::Gang;

/// Free resources of every node, and the open ones by free cores, then free memory. A
/// best-fit query looks for the fewest free cores that still hold the demand and, among
/// those nodes, the least free memory that does: it scans a short array (the largest free
/// memory of each free-cores value) and does one range lookup.
#[derive(Default, Clone)]
pub(crate) struct NodeIndex {
    /// Open nodes by free cores: (free memory, node).
    by_cores: Vec<BTreeSet<(u64, usize)>>,
    /// The largest free memory among open nodes with each number of free cores.
    top: Vec<Option<u64>>,
    free: Vec<Resources>,
    open: Vec<bool>,
    open_count: usize,
}

impl NodeIndex {
    /// `free[n]` for every node; those with `open[n]` may receive work.
    pub fn new(free: Vec<Resources>, open: Vec<bool>) -> NodeIndex {
        let mut index = NodeIndex {
            free,
            open: vec![false; open.len()],
            ..NodeIndex::default()
        };
        for (n, &o) in open.iter().enumerate() {
            if o {
                index.open[n] = true;
                index.open_count += 1;
                index.enter(n);
            }
        }
        index
    }

    fn enter(&mut self, node: usize) {
        let f = self.free[node];
        let c = f.cores as usize;
        if c >= self.by_cores.len() {
            self.by_cores.resize_with(c + 1, BTreeSet::new);
            self.top.resize(c + 1, None);
        }
        self.by_cores[c].insert((f.memory_mib, node));
        self.top[c] = self.top[c].max(Some(f.memory_mib));
    }

    fn leave(&mut self, node: usize) {
        let f = self.free[node];
        let c = f.cores as usize;
        self.by_cores[c].remove(&(f.memory_mib, node));
        self.top[c] = self.by_cores[c].last().map(|&(m, _)| m);
    }

    pub fn free(&self, node: usize) -> Resources {
        self.free[node]
    }

    pub fn is_open(&self, node: usize) -> bool {
        self.open[node]
    }

    pub fn is_empty(&self) -> bool {
        self.open_count == 0
    }

    fn set_free(&mut self, node: usize, free: Resources) {
        if self.open[node] {
            self.leave(node);
            self.free[node] = free;
            self.enter(node);
        } else {
            self.free[node] = free;
        }
    }

    pub fn take(&mut self, node: usize, r: Resources) {
        self.set_free(node, self.free[node].saturating_sub(&r));
    }

    pub fn give_back(&mut self, node: usize, r: Resources) {
        self.set_free(node, self.free[node].add(&r));
    }

    /// Close a node to everything else in this pass.
    pub fn close(&mut self, node: usize) {
        if self.open[node] {
            self.leave(node);
            self.open[node] = false;
            self.open_count -= 1;
        }
    }

    /// The open node with the fewest free cores, then the least free memory (then the
    /// lowest index), that holds `need`.
    pub fn best_fit(&self, need: Resources) -> Option<usize> {
        let first = need.cores as usize;
        let c = (first..self.top.len())
            .find(|&c| matches!(self.top[c], Some(m) if m >= need.memory_mib))?;
        self.by_cores[c]
            .range((need.memory_mib, 0)..)
            .next()
            .map(|&(_, n)| n)
    }

    /// Take room for a spread gang over open nodes, or take nothing.
    pub fn pack_spread(&mut self, gang: &Gang) -> Option<Fit> {
        self.pack(gang, true).or_else(|| self.pack(gang, false))
    }

    fn pack(&mut self, gang: &Gang, executors_first: bool) -> Option<Fit> {
        let mut taken: Vec<(usize, u32)> = Vec::new();
        let mut driver = None;
        if !executors_first {
            driver = Some(self.take_one(gang.driver)?);
        }
        for _ in 0..gang.executors {
            let Some(node) = self.take_one(gang.executor) else {
                if let Some(d) = driver {
                    self.give_back(d, gang.driver);
                }
                for (n, count) in taken {
                    self.give_back(n, gang.executor.times(count));
                }
                return None;
            };
            match taken.iter_mut().find(|(n, _)| *n == node) {
                Some((_, count)) => *count += 1,
                None => taken.push((node, 1)),
            }
        }
        let driver = match driver {
            Some(d) => d,
            None => match self.take_one(gang.driver) {
                Some(d) => d,
                None => {
                    for (n, count) in taken {
                        self.give_back(n, gang.executor.times(count));
                    }
                    return None;
                }
            },
        };
        taken.sort_unstable();
        let on_driver_node = taken
            .iter()
            .find(|(n, _)| *n == driver)
            .map_or(0, |&(_, c)| c);
        Some(Fit {
            node: driver,
            on_node: gang.driver.add(&gang.executor.times(on_driver_node)),
            executors: taken,
        })
    }

    fn take_one(&mut self, r: Resources) -> Option<usize> {
        let node = self.best_fit(r)?;
        self.take(node, r);
        Some(node)
    }

    /// Return what a fit took.
    pub fn undo(&mut self, fit: &Fit, executor: Resources) {
        let on_driver_node = fit
            .executors
            .iter()
            .find(|(n, _)| *n == fit.node)
            .map_or(0, |&(_, c)| c);
        self.give_back(
            fit.node,
            fit.on_node.saturating_sub(&executor.times(on_driver_node)),
        );
        for &(n, count) in &fit.executors {
            self.give_back(n, executor.times(count));
        }
    }
}

/// Where a gang was fitted: driver node with what it holds there, and executors by node.
pub(crate) struct Fit {
    pub node: usize,
    pub on_node: Resources,
    pub executors: Vec<(usize, u32)>,
}

/// Keep `failures` the Pareto-minimal set of demands that did not fit, and short.
pub(crate) fn remember_failure(failures: &mut Vec<Resources>, need: Resources) {
    if failures.iter().any(|f| f.fits_in(&need)) {
        return;
    }
    failures.retain(|f| !need.fits_in(f));
    if failures.len() < 16 {
        failures.push(need);
    }
}
