//! Spikes: the compact, self-describing record of one change on one host.
//!
//! A detector reports an [`Observation`] (what changed, seen by which layer); the encoder
//! turns it into a [`Spike`] by adding who saw it, a per-origin sequence number, the time
//! and the role-specific pattern label. Spikes are what nodes gossip, journal and judge.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::node;

/// A sha256 digest of file contents or of a normalized record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

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
