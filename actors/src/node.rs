//! Who a node is: its stable id and the facts it announces about itself.
//!
//! The id is the text form of the node's libp2p peer id; this crate treats it as an opaque
//! string so that it needs no networking dependency.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's stable identity (the base58 text of its libp2p peer id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(pub String);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id(s)
    }
}

/// What a node says about itself: set by its operator, announced to its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub name: String,
    pub region: String,
    pub role: String,
    /// Chosen at each start; a restarted node is a new incarnation of the same id.
    pub incarnation: u64,
}
