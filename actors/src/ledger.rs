//! Exactly-once intake of spikes: per origin, which sequence numbers have been applied.
//!
//! Spikes arrive over gossip and, after a partition, again by replay from the origin's
//! journal, in any order and any number of times. The ledger applies each (origin, seq)
//! once and keeps, per origin, the highest sequence number below which nothing is
//! missing: the figure the region master acknowledges, and from which an origin replays.
//! Numbers above a gap are remembered until the gap fills (bounded: see [`Ledger::new`]).
//!
//! Sequence numbers start at 1. No I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::node;

/// What happened to one spike offered to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// New: apply it.
    New,
    /// Seen before (a gossip duplicate or a replay of something already applied).
    Duplicate,
    /// Too far ahead of the contiguous mark to remember; the origin will replay it.
    Deferred,
}

#[derive(Debug, Clone, Default)]
struct Origin {
    contiguous: u64,
    ahead: BTreeSet<u64>,
}

/// Per-origin bookkeeping of applied sequence numbers.
#[derive(Debug, Clone)]
pub struct Ledger {
    origins: BTreeMap<node::Id, Origin>,
    window: u64,
}

impl Ledger {
    /// `window`: how far past the contiguous mark numbers are remembered; beyond it a
    /// spike is deferred (not applied) so that one lost message cannot grow memory
    /// without bound.
    pub fn new(window: u64) -> Self {
        Ledger {
            origins: BTreeMap::new(),
            window: window.max(1),
        }
    }

    /// Offers spike `seq` of `origin`.
    pub fn offer(&mut self, origin: &node::Id, seq: u64) -> Intake {
        let o = self.origins.entry(origin.clone()).or_default();
        if seq == 0 || seq <= o.contiguous || o.ahead.contains(&seq) {
            return Intake::Duplicate;
        }
        if seq > o.contiguous + self.window {
            return Intake::Deferred;
        }
        o.ahead.insert(seq);
        while o.ahead.remove(&(o.contiguous + 1)) {
            o.contiguous += 1;
        }
        Intake::New
    }

    /// The highest number of `origin` below which every spike has been applied.
    pub fn contiguous(&self, origin: &node::Id) -> u64 {
        self.origins.get(origin).map_or(0, |o| o.contiguous)
    }

    /// Every origin's contiguous mark (what a master acknowledges).
    pub fn marks(&self) -> BTreeMap<node::Id, u64> {
        self.origins
            .iter()
            .map(|(k, o)| (k.clone(), o.contiguous))
            .collect()
    }

    /// Numbers of `origin` missing below the highest one seen: what to ask it to replay.
    pub fn gaps(&self, origin: &node::Id) -> Vec<u64> {
        let Some(o) = self.origins.get(origin) else {
            return Vec::new();
        };
        let top = o.ahead.last().copied().unwrap_or(o.contiguous);
        (o.contiguous + 1..top)
            .filter(|s| !o.ahead.contains(s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> node::Id {
        node::Id(s.into())
    }

    #[test]
    fn gaps_hold_the_mark_until_filled() {
        let mut l = Ledger::new(100);
        let a = id("a");
        assert_eq!(l.offer(&a, 1), Intake::New);
        assert_eq!(l.offer(&a, 3), Intake::New);
        assert_eq!(l.contiguous(&a), 1);
        assert_eq!(l.gaps(&a), [2]);
        assert_eq!(l.offer(&a, 3), Intake::Duplicate);
        assert_eq!(l.offer(&a, 2), Intake::New);
        assert_eq!(l.contiguous(&a), 3);
        assert!(l.gaps(&a).is_empty());
        assert_eq!(l.offer(&a, 0), Intake::Duplicate);
        assert_eq!(l.offer(&a, 500), Intake::Deferred);
        assert_eq!(l.marks(), [(a, 3)].into_iter().collect());
    }

    proptest! {
        /// Whatever the order and however often each spike arrives (gossip duplicates,
        /// replays), each is applied exactly once, and once all have arrived the mark is
        /// the highest number.
        #[test]
        fn each_spike_is_applied_exactly_once(
            n in 1u64..300,
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..900),
        ) {
            let mut l = Ledger::new(1_000);
            let origin = id("o");
            let mut applied = BTreeMap::new();
            let mut deliveries: Vec<u64> = order.iter().map(|i| 1 + i.index(n as usize) as u64).collect();
            // A replay after the storm: everything, in order, once more.
            deliveries.extend(1..=n);
            for seq in deliveries {
                if l.offer(&origin, seq) == Intake::New {
                    *applied.entry(seq).or_insert(0) += 1;
                }
            }
            prop_assert_eq!(applied.len() as u64, n);
            prop_assert!(applied.values().all(|c| *c == 1));
            prop_assert_eq!(l.contiguous(&origin), n);
        }
    }
}
