//! Who a node is: its stable id and the facts it announces about itself.
//!
//! The id is the text form of the node's libp2p peer id; this crate treats it as an opaque
//! string so that it needs no networking dependency.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node's stable identity (the base58 text of its libp2p peer id).
///
/// Shared text: ids are copied into every map and message that names a peer, so a copy
/// is a reference count, not an allocation, and two copies of one id compare equal
/// without reading the text. Ordered by the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(pub Arc<str>);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id(s.into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id(s.into())
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
