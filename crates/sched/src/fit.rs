//! Stage 4, fit: find room for a gang on open nodes. Local gangs go to the best-fitting
//! node (the fewest free cores, then the least free memory, that still hold the gang), so
//! large holes stay open for large jobs. A spread gang that fits no single node is packed
//! executors first, then its driver, each by the same rule (driver first if that fails).
//! Feasibility uses the same packer on the empty cluster, so "fits the cluster" means
//! exactly "would be placed on the cluster once it is idle".

use crate::nodes::{remember_failure, Fit};
use crate::resources::Resources;
use crate::state::{Candidate, Pass};

impl Pass<'_> {
    /// Close a node to everything else in this pass.
    pub fn reserve(&mut self, node: usize) {
        self.index.close(node);
    }

    /// Find and take room for the whole gang, or take nothing.
    pub fn fit(&mut self, cand: &Candidate) -> Option<Fit> {
        if !cand.constraints.is_empty() {
            let node = self.fit_labelled(cand.total, cand.constraints)?;
            return Some(Fit {
                node,
                on_node: cand.total,
                executors: Vec::new(),
            });
        }
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
        self.index.pack_spread(&cand.gang)
    }

    /// Best fit among open nodes with the labels: a scan, as constrained jobs are few and
    /// the index (and its failure cache) is for demands any node may hold.
    fn fit_labelled(&mut self, need: Resources, labels: &[(String, String)]) -> Option<usize> {
        let node = (0..self.snap.nodes.len())
            .filter(|&n| self.index.is_open(n) && self.snap.nodes[n].satisfies(labels))
            .filter(|&n| need.fits_in(&self.index.free(n)))
            .min_by_key(|&n| {
                let f = self.index.free(n);
                (f.cores, f.memory_mib, n)
            })?;
        self.index.take(node, need);
        Some(node)
    }

    fn fit_local(&mut self, need: Resources) -> Option<usize> {
        if self.index.is_empty() || self.fit_failures.iter().any(|f| f.fits_in(&need)) {
            return None;
        }
        match self.index.best_fit(need) {
            Some(node) => {
                self.index.take(node, need);
                Some(node)
            }
            None => {
                remember_failure(&mut self.fit_failures, need);
                None
            }
        }
    }
}
