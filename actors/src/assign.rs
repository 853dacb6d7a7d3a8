//! Work assignment by rendezvous (highest random weight) hashing: each work item is owned
//! by the member with the highest `sha256(item, member)` score. When a member leaves, only
//! the items it owned move (each to its runner-up); when one joins, it takes only the
//! items it now scores highest on. No coordination is needed to agree, only the same
//! member list: the master computes moves over the region's committed membership and
//! commits them.
//!
//! Items are named `audit:<peer id>` (that peer's baseline is checked by its owner, never
//! by the peer itself) or `probe:<name>` (a service probe from settings).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::node;

/// The score of `member` for `item`.
fn score(item: &str, member: &node::Id) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(item.as_bytes());
    h.update([0u8]);
    h.update(member.as_str().as_bytes());
    h.finalize().into()
}

/// The peer an `audit:` item is about, if it is one.
pub fn audited(item: &str) -> Option<&str> {
    item.strip_prefix("audit:")
}

/// The owner of `item` among `members` (never the peer an audit is about).
pub fn owner<'a>(item: &str, members: &'a BTreeSet<node::Id>) -> Option<&'a node::Id> {
    members
        .iter()
        .filter(|m| audited(item) != Some(m.as_str()))
        .max_by_key(|m| score(item, m))
}

/// The owner of every item.
pub fn assign(
    items: &BTreeSet<String>,
    members: &BTreeSet<node::Id>,
) -> BTreeMap<String, node::Id> {
    items
        .iter()
        .filter_map(|i| owner(i, members).map(|o| (i.clone(), o.clone())))
        .collect()
}

/// An assignment kept from one round to the next, so that a change of membership costs
/// what it moves rather than a score of every item against every member: a member that
/// joins is scored only against each item's current owner, an item whose owner left (or
/// a new item) is scored against everyone. Gives exactly what [`assign`] gives.
#[derive(Debug, Default)]
pub struct Assignment {
    workers: BTreeSet<node::Id>,
    /// Each item's owner and the owner's score.
    owners: BTreeMap<String, (node::Id, [u8; 32])>,
    /// Each item's owner (what [`Assignment::update`] returns).
    target: BTreeMap<String, node::Id>,
}

impl Assignment {
    /// The owner of every item of `items` among `members`.
    pub fn update(
        &mut self,
        items: &BTreeSet<String>,
        members: &BTreeSet<node::Id>,
    ) -> &BTreeMap<String, node::Id> {
        if self.workers == *members && self.target.keys().eq(items.iter()) {
            return &self.target;
        }
        let joined: Vec<&node::Id> = members.difference(&self.workers).collect();
        let mut owners = BTreeMap::new();
        for item in items {
            let kept = self
                .owners
                .remove(item)
                .filter(|(owner, _)| members.contains(owner));
            let best = match kept {
                Some(best) => joined
                    .iter()
                    .filter(|m| audited(item) != Some(m.as_str()))
                    .map(|m| (score(item, m), *m))
                    .fold(best, |best, (s, m)| {
                        if (s, m) > (best.1, &best.0) {
                            (m.clone(), s)
                        } else {
                            best
                        }
                    }),
                None => match members
                    .iter()
                    .filter(|m| audited(item) != Some(m.as_str()))
                    .map(|m| (score(item, m), m))
                    .max()
                {
                    Some((s, m)) => (m.clone(), s),
                    None => continue,
                },
            };
            owners.insert(item.clone(), best);
        }
        self.target = owners
            .iter()
            .map(|(i, (o, _))| (i.clone(), o.clone()))
            .collect();
        self.owners = owners;
        self.workers = members.clone();
        &self.target
    }
}

/// The items whose owner must change to go from `current` to `target`, with new owners.
pub fn moves(
    current: &BTreeMap<String, node::Id>,
    target: &BTreeMap<String, node::Id>,
) -> Vec<(String, node::Id)> {
    target
        .iter()
        .filter(|(item, owner)| current.get(*item) != Some(owner))
        .map(|(i, o)| (i.clone(), o.clone()))
        .collect()
}

/// The work items of a region: an audit of every member, and the configured probes.
pub fn items<'a>(
    members: impl IntoIterator<Item = &'a node::Id>,
    probes: &[String],
) -> BTreeSet<String> {
    members
        .into_iter()
        .map(|m| format!("audit:{}", m))
        .chain(probes.iter().map(|p| format!("probe:{p}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> BTreeSet<node::Id> {
        (0..n).map(|i| node::Id::from(format!("peer{i}"))).collect()
    }

    #[test]
    fn audits_are_never_owned_by_their_subject_and_spread_out() {
        let members = ids(5);
        let probes: Vec<String> = (0..200).map(|i| format!("svc{i}")).collect();
        let items = items(&members, &probes);
        let a = assign(&items, &members);
        assert_eq!(a.len(), items.len());
        for (item, owner) in &a {
            assert_ne!(audited(item), Some(owner.as_str()));
        }
        let mut load: BTreeMap<&node::Id, usize> = BTreeMap::new();
        for o in a.values() {
            *load.entry(o).or_default() += 1;
        }
        // 205 items over 5 members: none idle, none with more than twice its share.
        assert_eq!(load.len(), 5);
        assert!(load.values().all(|n| *n > 10 && *n < 82), "{load:?}");
        assert!(
            owner("audit:peer0", &ids(1)).is_none(),
            "nobody else to audit it"
        );
    }

    proptest! {
        /// An assignment kept across rounds gives what a fresh one gives, whatever joins,
        /// leaves or comes and goes between rounds.
        #[test]
        fn a_kept_assignment_equals_a_fresh_one(
            rounds in proptest::collection::vec(
                (proptest::collection::btree_set(0usize..16, 0..12), 0usize..20),
                1..8,
            ),
        ) {
            let mut kept = Assignment::default();
            for (present, probes) in rounds {
                let members: BTreeSet<node::Id> = present
                    .iter()
                    .map(|i| node::Id::from(format!("peer{i}")))
                    .collect();
                let probes: Vec<String> = (0..probes).map(|i| format!("svc{i}")).collect();
                let items = items(&members, &probes);
                let fresh = assign(&items, &members);
                prop_assert_eq!(kept.update(&items, &members), &fresh);
            }
        }

        /// When a member leaves, exactly the items it owned move (its own audit goes with
        /// it), and each moved item goes to a live member.
        #[test]
        fn only_the_leavers_items_move(n in 2usize..12, leaver in 0usize..12, probes in 0usize..60) {
            let members = ids(n);
            let leaver = node::Id::from(format!("peer{}", leaver % n));
            let probes: Vec<String> = (0..probes).map(|i| format!("svc{i}")).collect();
            let before = assign(&items(&members, &probes), &members);
            let mut rest = members.clone();
            rest.remove(&leaver);
            let after = assign(&items(&rest, &probes), &rest);
            let moved = moves(&before, &after);
            for (item, owner) in &moved {
                prop_assert_eq!(before.get(item), Some(&leaver), "{} moved but was not the leaver's", item);
                prop_assert!(rest.contains(owner));
            }
            // (Items that can have no owner now, such as the last member's own audit, go.)
            let owned = before
                .iter()
                .filter(|(i, o)| **o == leaver && after.contains_key(*i))
                .count();
            prop_assert_eq!(moved.len(), owned, "every item the leaver owned moved");
        }
    }
}
