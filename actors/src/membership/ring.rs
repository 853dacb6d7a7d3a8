//! The region's monitoring ring: who probes whom.
//!
//! The region's members (this node included, the dead left out) sit on a ring ordered by
//! a hash of their peer id. Each member is watched by the `k` members that follow it on
//! the ring: they probe it directly and judge it by the answers. So every member probes
//! `k` peers and is probed by `k`, whatever the region's size. Views of the ring may
//! differ for a moment (a member not yet heard of); since a watcher asks and the
//! watched only answers, a difference costs a probe more or less, never a false
//! suspicion.

use std::collections::BTreeSet;
use std::ops::Bound::{Excluded, Unbounded};

use sha2::{Digest, Sha256};

use crate::node;

/// A member's place on the ring.
pub fn key(id: &node::Id) -> u64 {
    let d = Sha256::digest(id.as_str().as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The ring of one view: members sorted by key, kept up to date one member at a time.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    members: BTreeSet<(u64, node::Id)>,
}

impl Ring {
    pub fn new(members: impl IntoIterator<Item = (u64, node::Id)>) -> Ring {
        Ring {
            members: members.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Places `id` on the ring, or takes it off. Returns whether that changed anything.
    pub fn set(&mut self, key: u64, id: &node::Id, on: bool) -> bool {
        if on {
            self.members.insert((key, id.clone()))
        } else {
            self.members.remove(&(key, id.clone()))
        }
    }

    /// The `k` members before `id` (nearest first): those `id` watches. `id` need not
    /// be on the ring.
    pub fn before(&self, key: u64, id: &node::Id, k: usize) -> Vec<node::Id> {
        let at = (key, id.clone());
        self.members
            .range(..at.clone())
            .rev()
            .chain(self.members.range((Excluded(at), Unbounded)).rev())
            .take(k)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The `k` members after `id` (nearest first): those that watch `id`. `id` need not
    /// be on the ring.
    pub fn after(&self, key: u64, id: &node::Id, k: usize) -> Vec<node::Id> {
        let at = (key, id.clone());
        self.members
            .range((Excluded(at.clone()), Unbounded))
            .chain(self.members.range(..at))
            .take(k)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> (Ring, Vec<node::Id>) {
        let ids: Vec<node::Id> = (0..n).map(|i| node::Id::from(format!("p{i}"))).collect();
        let r = Ring::new(ids.iter().map(|i| (key(i), i.clone())));
        (r, ids)
    }

    #[test]
    fn every_member_is_watched_by_k_and_watches_k() {
        let (r, ids) = ring(50);
        let mut watched_by: std::collections::BTreeMap<node::Id, usize> = Default::default();
        for id in &ids {
            let before = r.before(key(id), id, 3);
            assert_eq!(before.len(), 3);
            assert!(!before.contains(id));
            for w in before {
                *watched_by.entry(w).or_default() += 1;
            }
        }
        assert!(watched_by.values().all(|&n| n == 3), "{watched_by:?}");
        // Watching and being watched are the two sides of one relation.
        for id in &ids {
            for w in r.after(key(id), id, 3) {
                assert!(r.before(key(&w), &w, 3).contains(id));
            }
        }
    }

    #[test]
    fn one_off_the_ring_sees_the_places_it_would_have() {
        let (mut r, ids) = ring(10);
        let x = &ids[4];
        let watchers = r.after(key(x), x, 3);
        assert!(r.set(key(x), x, false));
        assert!(!r.set(key(x), x, false));
        assert_eq!(r.after(key(x), x, 3), watchers);
        assert_eq!(r.len(), 9);
    }

    #[test]
    fn a_small_ring_watches_everyone_else_once() {
        let (r, ids) = ring(3);
        let before = r.before(key(&ids[0]), &ids[0], 5);
        assert_eq!(before.len(), 2);
        let (r, ids) = ring(1);
        assert!(r.after(key(&ids[0]), &ids[0], 5).is_empty());
        // One not on the ring sees the others.
        let x = node::Id::from("x");
        assert_eq!(r.before(key(&x), &x, 3), ids);
    }
}
