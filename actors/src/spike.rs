//! Spikes: the compact, self-describing record of one change on one host.
//!
//! A detector reports an [`Observation`] (what changed, seen by which layer); the encoder
//! turns it into a [`Spike`] by adding who saw it, a per-origin sequence number, the time
//! and the role-specific pattern label. Spikes are what nodes gossip, journal and judge.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::node;

/// A sha256 digest of file contents or of a normalized record: 32 raw bytes on the wire,
/// a hex string in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let mut out = [0u8; 32];
            if text.len() != 64 {
                return Err(D::Error::custom("a digest is 64 hex characters"));
            }
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                    .map_err(|_| D::Error::custom("a digest is 64 hex characters"))?;
            }
            Ok(Digest(out))
        } else {
            let bytes = serde_bytes_compat::deserialize(d)?;
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| D::Error::custom("a digest is 32 bytes"))?;
            Ok(Digest(arr))
        }
    }
}

/// Reads bytes whether the format sends them as a byte string or as a sequence.
pub(crate) mod serde_bytes_compat {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use std::fmt;

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(Bytes)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What kind of thing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    User,
    Group,
    Process,
    Network,
    Metric,
    /// Monitoring coverage itself changed (watch limit hit, queue overflow, rescan).
    Coverage,
    /// The reconciler found the detection layers disagreeing.
    Reconcile,
    /// A service probe (TCP or HTTP) owned by this node found the service up or down.
    Service,
    /// A peer audit owned by this node found the peer's file baseline changed without a
    /// report, or the peer not answering ([`crate::audit`]).
    Audit,
    /// One of this node's metrics deviates from its same-role peers ([`crate::anomaly`]).
    /// Added after the others: a node of an older build refuses frames that carry it.
    Anomaly,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Process => "process",
            Kind::Network => "network",
            Kind::Metric => "metric",
            Kind::Coverage => "coverage",
            Kind::Reconcile => "reconcile",
            Kind::Service => "service",
            Kind::Audit => "audit",
            Kind::Anomaly => "anomaly",
        }
    }
}

/// How it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Modified,
    /// A periodic value (metrics), sent on delta.
    Sample,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "modified",
            Change::Sample => "sample",
        }
    }
}

/// Which detection layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Event-driven (inotify, netlink): the fast path.
    Realtime,
    /// A full hash verification (start-up or periodic): the safety net.
    Hash,
    /// A poll of /proc or another table.
    Poll,
    /// The reconciler comparing layers.
    Reconciler,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Its name, as labels and settings write it.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity a name names (unknown names are info).
    pub fn from_name(name: &str) -> Severity {
        match name {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" => Severity::Medium,
            "low" => Severity::Low,
            _ => Severity::Info,
        }
    }
}

/// A value in a change's details (before/after fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<String>),
}

/// A before/after pair for one field (absent before: added; absent after: removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl FieldChange {
    /// A fact attached to a change: a value now, none before (`when: while_down`).
    pub fn fact(value: impl Into<String>) -> Self {
        FieldChange {
            before: None,
            after: Some(Value::Text(value.into())),
        }
    }
}

/// What a detector saw, before the encoder stamps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub kind: Kind,
    pub change: Change,
    /// What changed: a path, a user name, `pid:exe`, an interface, a metric name.
    pub subject: String,
    pub before: Option<Digest>,
    pub after: Option<Digest>,
    pub layer: Layer,
    pub severity: Severity,
    /// Field-level detail, e.g. `shell: /bin/sh -> /bin/bash`.
    pub fields: BTreeMap<String, FieldChange>,
}

impl Observation {
    pub fn new(kind: Kind, change: Change, subject: impl Into<String>, layer: Layer) -> Self {
        Observation {
            kind,
            change,
            subject: subject.into(),
            before: None,
            after: None,
            layer,
            severity: Severity::Info,
            fields: BTreeMap::new(),
        }
    }
}

/// A page of `items` (in ascending order of `seq_of`) that pass `keep`, in ascending
/// order, at most `limit`: the ones following `since` (paging), or without `since` the
/// latest.
pub fn page<T: Clone>(
    items: &std::collections::VecDeque<T>,
    since: Option<u64>,
    limit: usize,
    seq_of: impl Fn(&T) -> u64,
    keep: impl Fn(&T) -> bool,
) -> Vec<T> {
    match since {
        Some(since) => items
            .iter()
            .filter(|t| seq_of(t) > since && keep(t))
            .take(limit)
            .cloned()
            .collect(),
        None => {
            let mut latest: Vec<T> = items
                .iter()
                .rev()
                .filter(|t| keep(t))
                .take(limit)
                .cloned()
                .collect();
            latest.reverse();
            latest
        }
    }
}

/// One encoded change, as gossiped and journaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spike {
    pub origin: node::Id,
    /// Grows by one per spike of this origin, across restarts.
    pub seq: u64,
    pub at_unix_ms: u64,
    pub kind: Kind,
    pub change: Change,
    pub subject: String,
    pub before: Option<Digest>,
    pub after: Option<Digest>,
    pub severity: Severity,
    pub layers: Vec<Layer>,
    /// The role-specific pattern label (`deployment_user`, `policy_violation`, ...).
    pub label: String,
    pub fields: BTreeMap<String, FieldChange>,
}

#[cfg(test)]
impl Spike {
    /// A spike for tests: no digests, fields, layers or label, severity info, time 0;
    /// tests set what they need with struct update syntax.
    pub(crate) fn bare(origin: &str, seq: u64, kind: Kind, change: Change, subject: &str) -> Spike {
        Spike {
            origin: node::Id::from(origin),
            seq,
            at_unix_ms: 0,
            kind,
            change,
            subject: subject.into(),
            before: None,
            after: None,
            severity: Severity::Info,
            layers: Vec::new(),
            label: String::new(),
            fields: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_bytes_on_the_wire_and_hex_in_json() {
        let d = Digest([0xab; 32]);
        let packed = rmp_serde::to_vec(&d).expect("packs");
        assert_eq!(packed.len(), 34, "bin8 header + 32 bytes");
        assert_eq!(
            rmp_serde::from_slice::<Digest>(&packed).expect("unpacks"),
            d
        );
        let json = serde_json::to_string(&d).expect("json");
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Digest>(&json).expect("parses"), d);
        assert!(serde_json::from_str::<Digest>("\"abc\"").is_err());
    }
}
