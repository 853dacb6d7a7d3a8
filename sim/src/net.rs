//! The network model: link delays, loss, and which links are cut.
//!
//! Delays are drawn per message: the class's base plus a uniform jitter (so messages on
//! one link may be reordered). Partitions are kept as a group per member (members of
//! different groups cannot talk) plus single cut links.

use std::collections::BTreeSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Latency, Network};

/// Which links work.
#[derive(Debug)]
pub struct Links {
    group: Vec<u64>,
    cuts: BTreeSet<(usize, usize)>,
}

impl Links {
    pub fn new(nodes: usize) -> Links {
        Links {
            group: vec![0; nodes],
            cuts: BTreeSet::new(),
        }
    }

    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b] && !self.cuts.contains(&(a.min(b), a.max(b)))
    }

    pub fn cut(&mut self, a: usize, b: usize) {
        self.cuts.insert((a.min(b), a.max(b)));
    }

    /// `node` alone in a group of its own.
    pub fn isolate(&mut self, node: usize) {
        self.group[node] = 1 << 40 | node as u64;
    }

    /// `members` (in groups) split from each other and from everyone else; `others` (the
    /// rest of the region) each alone. `tag` makes the groups unique to this split.
    pub fn split(&mut self, tag: u64, groups: &[Vec<usize>], others: &[usize]) {
        for &n in others {
            self.isolate(n);
        }
        for (k, g) in groups.iter().enumerate() {
            for &n in g {
                self.group[n] = 1 << 41 | tag << 20 | k as u64;
            }
        }
    }

    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.cuts.clear();
    }
}

/// Draws delays and losses.
#[derive(Debug)]
pub struct Model {
    pub config: Network,
}

impl Model {
    /// The delay of one message, in microseconds (at least 1).
    pub fn delay_us(&self, rng: &mut ChaCha8Rng, same_region: bool) -> u64 {
        let l: Latency = if same_region {
            self.config.same_region
        } else {
            self.config.cross_region
        };
        let ms = l.base_ms + rng.random::<f64>() * l.jitter_ms;
        ((ms * 1000.0) as u64).max(1)
    }

    /// Whether one message is lost.
    pub fn lost(&self, rng: &mut ChaCha8Rng) -> bool {
        self.config.loss > 0.0 && rng.random_bool(self.config.loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_isolation_splits_and_heal() {
        let mut l = Links::new(5);
        assert!(l.linked(0, 4));
        l.cut(3, 1);
        assert!(!l.linked(1, 3) && l.linked(1, 2));
        l.isolate(0);
        assert!(!l.linked(0, 2));
        l.heal();
        assert!(l.linked(0, 2) && l.linked(1, 3));
        l.split(0, &[vec![0, 1], vec![2, 3]], &[4]);
        assert!(l.linked(0, 1) && l.linked(2, 3));
        assert!(!l.linked(1, 2) && !l.linked(4, 0) && !l.linked(4, 3));
    }
}
