//! One alert's life: its status (firing, acknowledged, silenced, inhibited, resolved), its
//! acknowledgement, and a bounded history of its status changes.
//!
//! An alert's id names one firing episode: it is derived from the alert's key and the
//! episode's first firing time, so every node that knows both names it the same way, and a
//! key that fires again after resolving is a new alert with a new id.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::labels::{Annotations, Labels};

/// The id of the episode of `key` that started firing at `first_firing_unix_ms`: 32
/// lowercase hex digits (URL-safe, opaque).
pub fn alert_id(key: &str, first_firing_unix_ms: u64) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(first_firing_unix_ms.to_be_bytes());
    super::hex(&h.finalize()[..16])
}

/// An acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at_unix_ms: u64,
    pub comment: String,
    /// When it times out and the alert fires again.
    pub until_unix_ms: u64,
}

/// Where an alert stands. Muted states win over an acknowledgement; an acknowledged alert
/// that is silenced stays acknowledged underneath (see [`Record::ack`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    Firing,
    Acknowledged {
        by: String,
        at_unix_ms: u64,
        comment: String,
        until_unix_ms: u64,
    },
    /// By these silences' ids.
    Silenced {
        by: Vec<String>,
    },
    /// By this alert's id.
    Inhibited {
        by: String,
    },
    Resolved {
        at_unix_ms: u64,
    },
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Acknowledged { .. } => "acknowledged",
            Status::Silenced { .. } => "silenced",
            Status::Inhibited { .. } => "inhibited",
            Status::Resolved { .. } => "resolved",
        }
    }

    /// Firing or acknowledged: what a group notification shows as open.
    pub fn is_open(&self) -> bool {
        matches!(self, Status::Firing | Status::Acknowledged { .. })
    }

    pub fn is_muted(&self) -> bool {
        matches!(self, Status::Silenced { .. } | Status::Inhibited { .. })
    }
}

/// One status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_unix_ms: u64,
    pub status: Status,
}

/// An alert as the engine tracks it and the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub key: String,
    pub labels: Labels,
    pub annotations: Annotations,
    /// The episode's first firing.
    pub starts_at_unix_ms: u64,
    /// The last raise.
    pub updated_at_unix_ms: u64,
    pub ends_at_unix_ms: Option<u64>,
    /// Raises in this episode.
    pub raised: u64,
    pub ack: Option<Ack>,
    pub status: Status,
    /// Oldest first, at most the engine's `history_len`.
    pub history: VecDeque<Transition>,
}

impl Record {
    pub fn new(
        key: String,
        labels: Labels,
        annotations: Annotations,
        start: u64,
        now: u64,
    ) -> Self {
        Record {
            id: alert_id(&key, start),
            key,
            labels,
            annotations,
            starts_at_unix_ms: start,
            updated_at_unix_ms: now,
            ends_at_unix_ms: None,
            raised: 1,
            ack: None,
            status: Status::Firing,
            history: VecDeque::from([Transition {
                at_unix_ms: now,
                status: Status::Firing,
            }]),
        }
    }

    pub fn is_resolved(&self) -> bool {
        matches!(self.status, Status::Resolved { .. })
    }

    /// Sets the status, noting a change in the history (bounded to `cap` entries).
    /// Returns whether it changed.
    pub fn set_status(&mut self, status: Status, now: u64, cap: usize) -> bool {
        if self.status == status {
            return false;
        }
        self.status = status.clone();
        self.history.push_back(Transition {
            at_unix_ms: now,
            status,
        });
        while self.history.len() > cap.max(1) {
            self.history.pop_front();
        }
        true
    }

    /// The status from the ack and what mutes the alert now (`silences`: ids of the active
    /// silences that match it; `inhibitor`: the id of an alert that inhibits it).
    pub fn derive(&self, silences: Vec<String>, inhibitor: Option<String>) -> Status {
        if let Status::Resolved { at_unix_ms } = self.status {
            return Status::Resolved { at_unix_ms };
        }
        if !silences.is_empty() {
            return Status::Silenced { by: silences };
        }
        if let Some(by) = inhibitor {
            return Status::Inhibited { by };
        }
        match &self.ack {
            Some(a) => Status::Acknowledged {
                by: a.by.clone(),
                at_unix_ms: a.at_unix_ms,
                comment: a.comment.clone(),
                until_unix_ms: a.until_unix_ms,
            },
            None => Status::Firing,
        }
    }
}
