//! What actors hand to the network driver for publishing.
//!
//! Actors never touch the swarm: they `try_send` a [`Publish`] into a bounded channel that
//! the driver task drains. A full channel is an overload to count, not a reason to block.

use crate::wire;

/// Which gossip topic a message goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The topic of one region (heartbeats, spikes).
    Region(String),
    /// The fleet-wide topic (region summaries, learned patterns, emergencies).
    Fleet,
}

/// How hard the driver tries when no peer is subscribed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Drop if it cannot be published now (heartbeats: a late one is worthless).
    BestEffort,
    /// Queue (bounded) and retry when peers subscribe.
    Retry,
}

/// One message for the driver to publish.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: Topic,
    pub body: wire::Body,
    pub delivery: Delivery,
}

/// The sending half actors hold.
#[cfg(feature = "runtime")]
pub type Sender = tokio::sync::mpsc::Sender<Publish>;

/// One request for the driver to send to one peer (request-response, not gossip).
#[derive(Debug, Clone)]
pub struct Direct {
    pub to: crate::node::Id,
    pub request: wire::Request,
}

/// The sending half for direct requests.
#[cfg(feature = "runtime")]
pub type DirectSender = tokio::sync::mpsc::Sender<Direct>;
