//! Exactly-once, in-order intake of spikes: per origin, which sequence numbers have been
//! applied.
//!
//! Spikes arrive over gossip and, after a partition, again by replay from the origin's
//! journal, in any order and any number of times. The ledger applies each (origin, seq)
//! once and in sequence order: a spike that arrives ahead of a gap is held until the gap
//! fills, then released with the ones after it. Per origin it keeps the contiguous mark,
//! the highest sequence number up to which nothing is missing: the figure the region
//! master acknowledges, and from which an origin replays. Held spikes are bounded (see
//! [`Ledger::new`]). A mark can also be moved forward from outside ([`Ledger::advance`]):
//! a master's acknowledgement (a later master starts from its predecessor's marks) or an
//! origin saying that what lies below a number is gone from its journal.
//!
//! Sequence numbers start at 1. No I/O, no clock.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::node;

/// Counters of one origin's intake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Highest sequence number with nothing missing below it.
    pub mark: u64,
    /// Spikes released (applied), each once, in sequence order.
    pub applied: u64,
    /// Offers of a number already applied or held (gossip duplicates, replays).
    pub duplicates: u64,
    /// Offers too far ahead of the mark to hold; the origin replays them later.
    pub deferred: u64,
    /// Numbers jumped over by [`Ledger::advance`] without being applied here.
    pub skipped: u64,
    /// Spikes held above a gap right now.
    pub held: u64,
}

#[derive(Debug, Clone)]
struct Origin<T> {
    stats: Stats,
    held: BTreeMap<u64, T>,
}

impl<T> Default for Origin<T> {
    fn default() -> Self {
        Origin {
            stats: Stats::default(),
            held: BTreeMap::new(),
        }
    }
}

impl<T> Origin<T> {
    /// Releases held items that continue the mark.
    fn release(&mut self, out: &mut Vec<T>) {
        // A mark at the top of the numbers (a hostile master's claim) has no next.
        while let Some(item) = self
            .stats
            .mark
            .checked_add(1)
            .and_then(|next| self.held.remove(&next))
        {
            self.stats.mark += 1;
            self.stats.applied += 1;
            out.push(item);
        }
        self.stats.held = self.held.len() as u64;
    }
}

/// Per-origin bookkeeping of applied sequence numbers; `T` is what is applied (a spike).
#[derive(Debug, Clone)]
pub struct Ledger<T> {
    origins: BTreeMap<node::Id, Origin<T>>,
    window: u64,
}

impl<T> Ledger<T> {
    /// `window`: how far past the contiguous mark spikes are held; beyond it a spike is
    /// deferred (not applied, not kept) so that one lost message cannot grow memory
    /// without bound. The origin replays deferred spikes once the mark catches up.
    pub fn new(window: u64) -> Self {
        Ledger {
            origins: BTreeMap::new(),
            window: window.max(1),
        }
    }

    /// Offers spike `seq` of `origin`; returns what can be applied now, in sequence
    /// order (empty for a duplicate, a deferred spike, or one held above a gap).
    pub fn offer(&mut self, origin: &node::Id, seq: u64, item: T) -> Vec<T> {
        let o = self.origins.entry(origin.clone()).or_default();
        let mut out = Vec::new();
        if seq <= o.stats.mark || o.held.contains_key(&seq) {
            o.stats.duplicates += 1;
        } else if seq > o.stats.mark.saturating_add(self.window) {
            o.stats.deferred += 1;
        } else {
            o.held.insert(seq, item);
            o.release(&mut out);
        }
        out
    }

    /// Nothing at or below `floor` will be applied here any more (another master applied
    /// it, or the origin no longer has it): the mark moves up to `floor`, held spikes at
    /// or below it are dropped, and those that now continue the mark are returned.
    pub fn advance(&mut self, origin: &node::Id, floor: u64) -> Vec<T> {
        let o = self.origins.entry(origin.clone()).or_default();
        let mut out = Vec::new();
        if floor <= o.stats.mark {
            return out;
        }
        let kept = o.held.split_off(&floor.saturating_add(1));
        let dropped = o.held.len() as u64;
        o.held = kept;
        o.stats.skipped += floor - o.stats.mark - dropped;
        o.stats.mark = floor;
        o.release(&mut out);
        out
    }

    /// The highest number of `origin` below which every spike has been applied.
    pub fn contiguous(&self, origin: &node::Id) -> u64 {
        self.origins.get(origin).map_or(0, |o| o.stats.mark)
    }

    /// Every origin's contiguous mark (what a master acknowledges).
    pub fn marks(&self) -> BTreeMap<node::Id, u64> {
        self.origins
            .iter()
            .map(|(k, o)| (k.clone(), o.stats.mark))
            .collect()
    }

    /// Every origin's counters.
    pub fn stats(&self) -> BTreeMap<node::Id, Stats> {
        self.origins
            .iter()
            .map(|(k, o)| (k.clone(), o.stats))
            .collect()
    }

    /// Numbers of `origin` missing below the highest one held.
    pub fn gaps(&self, origin: &node::Id) -> Vec<u64> {
        let Some(o) = self.origins.get(origin) else {
            return Vec::new();
        };
        let top = o.held.keys().last().copied().unwrap_or(o.stats.mark);
        (o.stats.mark + 1..top)
            .filter(|s| !o.held.contains_key(s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> node::Id {
        node::Id::from(s)
    }

    #[test]
    fn gaps_hold_later_spikes_until_filled() {
        let mut l = Ledger::new(100);
        let a = id("a");
        assert_eq!(l.offer(&a, 1, 1), [1]);
        assert!(l.offer(&a, 3, 3).is_empty());
        assert!(l.offer(&a, 4, 4).is_empty());
        assert_eq!(l.contiguous(&a), 1);
        assert_eq!(l.gaps(&a), [2]);
        assert!(l.offer(&a, 3, 3).is_empty());
        assert_eq!(l.offer(&a, 2, 2), [2, 3, 4]);
        assert_eq!(l.contiguous(&a), 4);
        assert!(l.gaps(&a).is_empty());
        assert!(l.offer(&a, 0, 0).is_empty());
        assert!(l.offer(&a, 500, 500).is_empty());
        let s = l.stats()[&a];
        assert_eq!(
            (s.mark, s.applied, s.duplicates, s.deferred, s.held),
            (4, 4, 2, 1, 0)
        );
    }

    #[test]
    fn advance_skips_what_is_gone_and_releases_what_follows() {
        let mut l = Ledger::new(100);
        let a = id("a");
        assert!(l.offer(&a, 5, 5).is_empty());
        assert!(l.offer(&a, 7, 7).is_empty());
        assert!(l.offer(&a, 8, 8).is_empty());
        // 1..=6 are gone: 5 was held and is dropped, 7 and 8 now follow the mark.
        assert_eq!(l.advance(&a, 6), [7, 8]);
        let s = l.stats()[&a];
        assert_eq!((s.mark, s.applied, s.skipped, s.held), (8, 2, 5, 0));
        assert!(l.advance(&a, 3).is_empty(), "a lower floor changes nothing");
        assert_eq!(l.contiguous(&a), 8);
        // A floor at the top of the numbers (a hostile claim) is taken without overflow.
        assert!(l.offer(&a, 10, 10).is_empty());
        assert!(l.advance(&a, u64::MAX).is_empty());
        assert!(
            l.offer(&a, 11, 11).is_empty(),
            "below the floor: a duplicate"
        );
        assert_eq!(l.contiguous(&a), u64::MAX);
    }

    proptest! {
        /// Whatever the order and however often each spike arrives (gossip duplicates,
        /// replays), each is applied exactly once and in sequence order, and once all
        /// have arrived the mark is the highest number.
        #[test]
        fn each_spike_is_applied_exactly_once_in_order(
            n in 1u64..300,
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..900),
            window in 1u64..400,
        ) {
            let mut l = Ledger::new(window);
            let origin = id("o");
            let mut applied = Vec::new();
            let mut deliveries: Vec<u64> = order.iter().map(|i| 1 + i.index(n as usize) as u64).collect();
            // A replay after the storm: everything, in order, once more.
            deliveries.extend(1..=n);
            for seq in deliveries {
                applied.extend(l.offer(&origin, seq, seq));
            }
            prop_assert_eq!(applied, (1..=n).collect::<Vec<_>>());
            prop_assert_eq!(l.contiguous(&origin), n);
            prop_assert_eq!(l.stats()[&origin].applied, n);
        }
    }
}
