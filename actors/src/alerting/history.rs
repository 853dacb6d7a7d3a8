//! The alert history's decisions (issue 15): which records changed since the runtime last
//! took them to keep on disk ([`Changes`], held by the engine: see
//! [`super::Engine::keep_history`] and [`super::Engine::take_changed`]), when a record
//! last changed ([`last_change`]), and which kept records a bounds pass removes
//! ([`over_bounds`]).
//!
//! No I/O here: the store (a file in the node's data dir) is the runtime's. Time is the
//! wall clock in Unix milliseconds, passed in.

use std::collections::BTreeMap;

use super::lifecycle::Record;

/// Records changed since the last take, coalesced by id: a storm of changes to one alert
/// is one entry, and the entries are bounded (see [`Changes::new`]).
#[derive(Debug, Default)]
pub struct Changes {
    /// Off until the runtime keeps a history: then nothing is noted.
    enabled: bool,
    /// By id: `None` while the engine still tracks the record (it is read at the take),
    /// the record as it left the engine's keeping otherwise.
    ids: BTreeMap<String, Option<Record>>,
    cap: usize,
    /// Changes not noted because `cap` ids were waiting.
    dropped: u64,
}

impl Changes {
    /// At most `cap` ids wait for a take (at least 1); a change to another id beyond that
    /// is dropped and counted.
    pub fn new(cap: usize) -> Self {
        Changes {
            enabled: false,
            ids: BTreeMap::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    pub fn enable(&mut self) {
        self.enabled = true;
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Record `id` changed.
    pub fn mark(&mut self, id: &str) {
        if !self.enabled || self.ids.contains_key(id) {
            return;
        }
        if self.ids.len() >= self.cap {
            self.dropped += 1;
            return;
        }
        self.ids.insert(id.to_string(), None);
    }

    /// `record` leaves the engine's keeping: if a change of it waits, the take gets this
    /// copy (the engine may forget the record before then).
    pub fn leaving(&mut self, record: &Record) {
        if let Some(slot) = self.ids.get_mut(&record.id) {
            *slot = Some(record.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every waiting change, emptied: each record as `lookup` finds it by id (the engine's
    /// current copy), or as it left; ids found nowhere are skipped.
    pub fn take<'a>(&mut self, lookup: impl Fn(&str) -> Option<&'a Record>) -> Vec<Record> {
        std::mem::take(&mut self.ids)
            .into_iter()
            .filter_map(|(id, kept)| kept.or_else(|| lookup(&id).cloned()))
            .collect()
    }
}

/// When `r` last changed: its last raise or status change, whichever is later.
pub fn last_change(r: &Record) -> u64 {
    let transition = r.history.back().map_or(0, |t| t.at_unix_ms);
    r.updated_at_unix_ms
        .max(transition)
        .max(r.ends_at_unix_ms.unwrap_or(0))
}

/// How much history is kept: records that changed within `max_age_ms`, and of those at
/// most `max_bytes` (their encoded size), the newest kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_age_ms: u64,
    pub max_bytes: u64,
}

impl Bounds {
    /// `days` and `bytes` as the settings say them (`alerts.history_days`,
    /// `alerts.history_bytes`).
    pub fn new(days: u32, bytes: u64) -> Self {
        Bounds {
            max_age_ms: u64::from(days).saturating_mul(86_400_000),
            max_bytes: bytes,
        }
    }
}

/// One kept record as a bounds pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub last_change_unix_ms: u64,
    pub id: String,
    pub bytes: u64,
}

/// The ids to remove from `kept` (oldest first, by last change) so that it is within
/// `bounds` at `now`: every record that last changed `max_age_ms` or longer ago, then the
/// oldest until the rest add up to at most `max_bytes`.
pub fn over_bounds(kept: &[Kept], bounds: Bounds, now: u64) -> Vec<String> {
    let oldest_kept = now.saturating_sub(bounds.max_age_ms);
    let mut total: u64 = kept.iter().map(|k| k.bytes).sum();
    let mut out = Vec::new();
    for k in kept {
        if k.last_change_unix_ms > oldest_kept && total <= bounds.max_bytes {
            break;
        }
        total = total.saturating_sub(k.bytes);
        out.push(k.id.clone());
    }
    out
}

/// `records` (copies of alerts from several places, maybe the same alert twice) as one
/// list: each alert once, as its newest copy, newest first, at most `limit` and at most
/// `max_bytes` encoded.
pub fn newest_fitting(records: Vec<Record>, limit: usize, max_bytes: usize) -> Vec<Record> {
    let mut by_id: std::collections::HashMap<String, Record> = std::collections::HashMap::new();
    for r in records {
        match by_id.get(&r.id) {
            Some(held) if last_change(held) >= last_change(&r) => {}
            _ => {
                by_id.insert(r.id.clone(), r);
            }
        }
    }
    let mut list: Vec<Record> = by_id.into_values().collect();
    list.sort_by(|a, b| last_change(b).cmp(&last_change(a)).then(a.id.cmp(&b.id)));
    let mut out = Vec::new();
    let mut size = 0;
    for r in list.into_iter().take(limit) {
        let len = rmp_serde::to_vec(&r).map_or(max_bytes, |b| b.len());
        if size + len > max_bytes {
            break;
        }
        size += len;
        out.push(r);
    }
    out
}
