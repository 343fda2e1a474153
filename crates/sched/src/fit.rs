//! Stage 4, fit: find room for a gang on open nodes. Local gangs go to the best-fitting
//! node (the fewest free cores, then the least free memory, that still hold the gang), so
//! large holes stay open for large jobs. A spread gang that fits no single node puts its
//! driver and then each executor by the same rule.

use std::collections::BTreeSet;

use crate::prepare::{Candidate, Pass};
use crate::resources::Resources;

/// Open nodes ordered by free (cores, memory, index). A best-fit query is a range scan
/// from the demand's cores upward, stopping at the first node with enough memory.
#[derive(Default)]
pub(crate) struct NodeIndex {
    set: BTreeSet<(u32, u64, usize)>,
}

impl NodeIndex {
    pub fn build(nodes: impl Iterator<Item = (usize, Resources)>) -> NodeIndex {
        NodeIndex {
            set: nodes.map(|(i, f)| (f.cores, f.memory_mib, i)).collect(),
        }
    }

    pub fn insert(&mut self, node: usize, free: Resources) {
        self.set.insert((free.cores, free.memory_mib, node));
    }

    pub fn remove(&mut self, node: usize, free: Resources) {
        self.set.remove(&(free.cores, free.memory_mib, node));
    }

    pub fn best_fit(&self, need: Resources) -> Option<usize> {
        self.set
            .range((need.cores, need.memory_mib, 0)..)
            .find(|(_, mem, _)| *mem >= need.memory_mib)
            .map(|&(_, _, i)| i)
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Where a gang was fitted: driver node with what it holds there, and executors by node.
pub(crate) struct Fit {
    pub node: usize,
    pub on_node: Resources,
    pub executors: Vec<(usize, u32)>,
}

impl Pass<'_> {
    /// Take `r` from an open node's free resources, keeping the index current.
    pub fn take(&mut self, node: usize, r: Resources) {
        let n = &mut self.nodes[node];
        self.index.remove(node, n.free);
        n.free = n.free.saturating_sub(&r);
        self.index.insert(node, n.free);
    }

    fn give_back(&mut self, node: usize, r: Resources) {
        let n = &mut self.nodes[node];
        self.index.remove(node, n.free);
        n.free = n.free.add(&r);
        self.index.insert(node, n.free);
    }

    /// Close a node to everything else in this pass.
    pub fn reserve(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.open {
            self.index.remove(node, n.free);
            n.open = false;
        }
    }

    /// Find and take room for the whole gang, or take nothing.
    pub fn fit(&mut self, cand: &Candidate) -> Option<Fit> {
        if let Some(node) = self.fit_local(cand.total) {
            return Some(Fit {
                node,
                on_node: cand.total,
                executors: Vec::new(),
            });
        }
        if cand.local() {
            return None;
        }
        self.fit_spread(cand)
    }

    fn fit_local(&mut self, need: Resources) -> Option<usize> {
        if self.index.is_empty() || self.fit_failures.iter().any(|f| f.fits_in(&need)) {
            return None;
        }
        match self.index.best_fit(need) {
            Some(node) => {
                self.take(node, need);
                Some(node)
            }
            None => {
                remember_failure(&mut self.fit_failures, need);
                None
            }
        }
    }

    fn fit_spread(&mut self, cand: &Candidate) -> Option<Fit> {
        let gang = cand.gang;
        let driver = self.index.best_fit(gang.driver)?;
        self.take(driver, gang.driver);
        let mut taken: Vec<(usize, u32)> = Vec::new();
        for _ in 0..gang.executors {
            let Some(node) = self.index.best_fit(gang.executor) else {
                self.give_back(driver, gang.driver);
                for (n, count) in taken {
                    self.give_back(n, gang.executor.times(count));
                }
                return None;
            };
            self.take(node, gang.executor);
            match taken.iter_mut().find(|(n, _)| *n == node) {
                Some((_, count)) => *count += 1,
                None => taken.push((node, 1)),
            }
        }
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
