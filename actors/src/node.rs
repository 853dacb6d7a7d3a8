//! Who a node is: its stable id and the facts it announces about itself.
//!
//! The id is the text form of the node's libp2p peer id; this crate treats it as an opaque
//! string so that it needs no networking dependency.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node's stable identity (the base58 text of its libp2p peer id).
///
/// Shared text with its first 16 bytes kept inline: ids are copied into every map and
/// message that names a peer, so a copy is a reference count, not an allocation, and
/// ids are ordered and told apart by those bytes without reading the text (a lookup in a
/// map of peers touches no other memory). Ordered by the text; serialized as the text.
#[derive(Clone)]
pub struct Id {
    /// The text's first 16 bytes, big-endian, zero-padded: comparing two heads compares
    /// the texts as far as they go (see [`Id::cmp`]).
    head: u128,
    text: Arc<str>,
}

impl Id {
    pub fn new(text: Arc<str>) -> Self {
        let mut head = [0u8; 16];
        let n = text.len().min(16);
        head[..n].copy_from_slice(&text.as_bytes()[..n]);
        Id {
            head: u128::from_be_bytes(head),
            text,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for Id {}

impl Ord for Id {
    /// The order of the texts. Heads that differ differ at the texts' first differing
    /// byte (a text that ends there is padded with zero, below any byte of the longer
    /// text, which is what the text order says of a prefix), so only equal heads need
    /// the texts.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head.cmp(&other.head).then_with(|| {
            if Arc::ptr_eq(&self.text, &other.text) {
                std::cmp::Ordering::Equal
            } else {
                self.text.cmp(&other.text)
            }
        })
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Id").field(&&*self.text).finish()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Arc::<str>::deserialize(d).map(Id::new)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::new(s.into())
    }
}

impl From<&String> for Id {
    fn from(s: &String) -> Self {
        Id::new(s.as_str().into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::new(s.into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Ids order, equal and hash as their texts do, whatever the texts share (peer
        /// ids share their first 8 bytes), however long, with zero bytes or not.
        #[test]
        fn ids_order_as_their_texts(
            a in "(12D3KooW)?[a-c\u{0}]{0,20}",
            b in "(12D3KooW)?[a-c\u{0}]{0,20}",
        ) {
            let (x, y) = (Id::from(a.as_str()), Id::from(b.as_str()));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(x.clone().cmp(&x), std::cmp::Ordering::Equal);
            let hash = |v: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                v(&mut h);
                h.finish()
            };
            prop_assert_eq!(hash(&|h| x.hash(h)), hash(&|h| a.as_str().hash(h)));
        }
    }

    #[test]
    fn an_id_is_written_and_read_as_its_text() {
        let id = Id::from("12D3KooWexample");
        let bytes = rmp_serde::to_vec(&id).expect("an id encodes");
        assert_eq!(
            bytes,
            rmp_serde::to_vec("12D3KooWexample").expect("a text encodes")
        );
        assert_eq!(
            rmp_serde::from_slice::<Id>(&bytes).expect("an id decodes"),
            id
        );
        assert_eq!(format!("{id:?}"), "Id(\"12D3KooWexample\")");
    }
}
