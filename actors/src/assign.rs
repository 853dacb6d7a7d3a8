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
    h.update(member.0.as_bytes());
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
        .map(|m| format!("audit:{}", m.0))
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
