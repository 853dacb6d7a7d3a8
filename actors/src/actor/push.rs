//! What actors push to the node's live event stream (`GET /api/v1/events`).
//!
//! Each actor that owns a fact sends it here as it changes, with a non-blocking
//! `broadcast` send: no actor waits for a reader, and a reader that falls behind learns
//! how much it missed (the runtime turns that into a `resync` event). The runtime gives
//! each event an id and its JSON form; nothing here knows about HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Message;

use crate::fleet::Seen;
use crate::membership::Status;
use crate::node;
use crate::policy::judge::Record;
use crate::spike::Spike;

/// One fact for the event stream.
#[derive(Debug, Clone)]
pub enum Pushed {
    /// Spikes this node encoded, in sequence order.
    Spikes(Arc<Vec<Spike>>),
    /// Spikes of a region peer, as gossip brought them (one origin, in sequence order).
    PeerSpikes(Arc<Vec<Spike>>),
    /// A decision made or settled (the record as `GET /api/v1/decisions` shows it).
    Decision(Box<Record>),
    /// An alert raised or changed state (as `GET /api/v1/alerts` lists it).
    Alert(Box<crate::alerting::Listed>),
    /// A peer's status changed, as this node sees it.
    Peer {
        peer: node::Id,
        from: Status,
        to: Status,
    },
    /// The region's master as this node knows it (`None`: no master known).
    Master {
        master: Option<(node::Id, u64)>,
        leading: bool,
    },
    /// A fleet event raised or grown here, or an emergency heard from another region (as
    /// `GET /api/v1/fleet` shows it).
    Fleet(Box<Seen>),
    /// A region's members and master: this node's own region as it sees it (each
    /// heartbeat; `received_unix_ms` none), or another region's summary as its master
    /// published it.
    Census {
        summary: Arc<crate::census::Summary>,
        received_unix_ms: Option<u64>,
    },
    /// A pattern this node learned, once, by whichever way came first: an approval
    /// committed to its region's log, or one a master published on the fleet topic (as
    /// `GET /api/v1/patterns` lists it).
    Learned(Box<crate::fleet::Learned>),
    /// Work items of the region's committed assignments that another node owns now (one
    /// push per change of the committed state that moved any).
    Reassigned(Arc<Vec<Moved>>),
}

/// A work item of the region's committed assignments (`probe:<name>`,
/// `audit:<peer>`) that changed owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub item: String,
    pub from: node::Id,
    pub to: node::Id,
}

/// The items that `after` gives another owner than `before` did, in item order. An item
/// assigned for the first time, or released, moved nowhere: it is not listed.
pub fn moved(
    before: &BTreeMap<String, node::Id>,
    after: &BTreeMap<String, node::Id>,
) -> Vec<Moved> {
    after
        .iter()
        .filter_map(|(item, to)| {
            let from = before.get(item)?;
            (from != to).then(|| Moved {
                item: item.clone(),
                from: from.clone(),
                to: to.clone(),
            })
        })
        .collect()
}

/// Where actors push; cloned into each actor that pushes.
pub type Push = tokio::sync::broadcast::Sender<Pushed>;

/// Gives an actor the stream to push to.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetPush(pub Push);

/// Pushes `p` if a stream is set; a stream nobody reads drops it (a send without
/// receivers fails, which is not an error here).
pub fn push(to: &Option<Push>, p: impl FnOnce() -> Pushed) {
    if let Some(tx) = to
        && tx.receiver_count() > 0
    {
        let _ = tx.send(p());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(pairs: &[(&str, &str)]) -> BTreeMap<String, node::Id> {
        pairs
            .iter()
            .map(|(item, owner)| (item.to_string(), node::Id::from(*owner)))
            .collect()
    }

    #[test]
    fn only_items_that_change_owner_moved() {
        let before = owners(&[
            ("audit:w3", "w1"),
            ("audit:w1", "w2"),
            ("probe:ssh", "w1"),
            ("audit:w9", "w2"),
        ]);
        let after = owners(&[
            ("audit:w3", "w2"),
            ("audit:w1", "w2"),
            ("probe:ssh", "w3"),
            ("audit:w4", "w1"),
        ]);
        let m = moved(&before, &after);
        assert_eq!(
            m,
            vec![
                Moved {
                    item: "audit:w3".into(),
                    from: node::Id::from("w1"),
                    to: node::Id::from("w2"),
                },
                Moved {
                    item: "probe:ssh".into(),
                    from: node::Id::from("w1"),
                    to: node::Id::from("w3"),
                },
            ]
        );
        // The first assignments, and the same ones again, move nothing.
        assert!(moved(&BTreeMap::new(), &after).is_empty());
        assert!(moved(&after, &after).is_empty());
    }
}
