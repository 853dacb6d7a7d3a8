//! The region's monitoring ring: who probes whom.
//!
//! The region's members (this node included, the dead left out) sit on a ring ordered by
//! a hash of their peer id. Each member is watched by the `k` members that follow it on
//! the ring: they probe it directly and judge it by the answers. So every member probes
//! `k` peers and is probed by `k`, whatever the region's size. Views of the ring may
//! differ for a moment (a member not yet heard of); since a watcher asks and the
//! watched only answers, a difference costs a probe more or less, never a false
//! suspicion.

use sha2::{Digest, Sha256};

use crate::node;

/// A member's place on the ring.
pub fn key(id: &node::Id) -> u64 {
    let d = Sha256::digest(id.0.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The ring of one view: members sorted by key.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    members: Vec<(u64, node::Id)>,
}

impl Ring {
    pub fn new(mut members: Vec<(u64, node::Id)>) -> Ring {
        members.sort();
        members.dedup();
        Ring { members }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    fn position(&self, at: &(u64, node::Id)) -> Option<usize> {
        self.members.binary_search(at).ok()
    }

    /// The `k` members before `id` (nearest first): those `id` watches.
    pub fn before(&self, key: u64, id: &node::Id, k: usize) -> Vec<node::Id> {
        self.walk(key, id, k, false)
    }

    /// The `k` members after `id` (nearest first): those that watch `id`.
    pub fn after(&self, key: u64, id: &node::Id, k: usize) -> Vec<node::Id> {
        self.walk(key, id, k, true)
    }

    fn walk(&self, key: u64, id: &node::Id, k: usize, forward: bool) -> Vec<node::Id> {
        let n = self.members.len();
        let Some(at) = self.position(&(key, id.clone())) else {
            return Vec::new();
        };
        (1..n.min(k + 1))
            .map(|step| {
                let i = if forward {
                    (at + step) % n
                } else {
                    (at + n - step) % n
                };
                self.members[i].1.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> (Ring, Vec<node::Id>) {
        let ids: Vec<node::Id> = (0..n).map(|i| node::Id(format!("p{i}"))).collect();
        let r = Ring::new(ids.iter().map(|i| (key(i), i.clone())).collect());
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
    fn a_small_ring_watches_everyone_else_once() {
        let (r, ids) = ring(3);
        let before = r.before(key(&ids[0]), &ids[0], 5);
        assert_eq!(before.len(), 2);
        let (r, ids) = ring(1);
        assert!(r.after(key(&ids[0]), &ids[0], 5).is_empty());
        assert!(
            r.before(key(&node::Id("x".into())), &node::Id("x".into()), 3)
                .is_empty()
        );
    }
}
