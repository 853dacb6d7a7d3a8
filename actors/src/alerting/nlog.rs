//! The notification log: what was last sent for each group (and each escalation), as plain
//! data. The engine records into it as it hands notifications out; the caller commits the
//! records each notification carries (to the region log) and hands a new owner the log
//! with [`crate::alerting::Engine::merge_log`], so that it neither sends a group again
//! nor forgets one that changed.
//!
//! Keys: `group:<group key>` and `escalation:<alert id>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::escalation::Progress;

/// What was last sent under one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Digest of the group's open alerts (ids and states) as last notified.
    pub hash: String,
    pub sent_unix_ms: u64,
    /// Open (firing or acknowledged) alerts in that notification.
    pub open: u32,
    /// For an escalation: where it stands after that notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Progress>,
}

/// One change to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub entry: Entry,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    pub entries: BTreeMap<String, Entry>,
}

pub fn group_key(group: &str) -> String {
    format!("group:{group}")
}

pub fn escalation_key(alert_id: &str) -> String {
    format!("escalation:{alert_id}")
}

impl Log {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Applies `r` unless the log holds a later send under its key.
    pub fn apply(&mut self, r: Record) {
        match self.entries.get(&r.key) {
            Some(e) if e.sent_unix_ms > r.entry.sent_unix_ms => {}
            _ => {
                self.entries.insert(r.key, r.entry);
            }
        }
    }

    /// Takes every entry of `other` that is later than ours.
    pub fn merge(&mut self, other: &Log) {
        for (k, e) in &other.entries {
            self.apply(Record {
                key: k.clone(),
                entry: e.clone(),
            });
        }
    }

    /// Forgets entries last sent `retention_ms` or longer before `now`; returns how many.
    pub fn gc(&mut self, now_unix_ms: u64, retention_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_unix_ms.saturating_sub(e.sent_unix_ms) < retention_ms);
        before - self.entries.len()
    }
}
