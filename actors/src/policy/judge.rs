//! The node's judge: the policy in force (the last good one), reloads offered as text,
//! the latest decisions in a bounded ring, and counts per decision.
//!
//! A reload parses and validates the whole file before anything is swapped: a refused
//! text leaves the policy in force untouched, and is remembered (by digest) so that the
//! same bad text is refused and reported once, not at every poll. Nothing is persisted:
//! after a restart the ring starts empty (the spikes themselves are journaled).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Decision, Error, Policy, parse};
use crate::spike::{Change, Kind, Spike};

/// One decision as kept and served (`GET /api/v1/decisions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The spike's sequence number (this node's numbering).
    pub seq: u64,
    pub at_unix_ms: u64,
    pub kind: Kind,
    pub change: Change,
    pub subject: String,
    pub label: String,
    pub decision: Decision,
    /// The deciding rule, as `file:line#name` (`builtin#defaults.<kind>` for built-ins).
    pub rule: String,
    pub reason: String,
    /// The version of the policy that decided.
    pub policy: String,
    /// For `consult`: how the consultation ended (absent while it is under way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<Settled>,
}

/// The outcome of a consultation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    pub decision: Decision,
    pub rule: String,
    pub reason: String,
    /// `master` (answered by the region's master) or `autonomous` (no master reachable:
    /// the node's conservative default).
    pub by: String,
    /// The master's region, term and policy version, when it answered.
    pub region: Option<String>,
    pub term: Option<u64>,
    pub policy: Option<String>,
    /// The master holds the change for fleet correlation.
    pub held: bool,
    /// From asking to the answer, in microseconds.
    pub latency_us: u64,
}

/// Decisions made since start, by decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub approved: u64,
    pub violation: u64,
    pub consult: u64,
    /// Consultations settled by the master, and by the autonomous default.
    #[serde(default)]
    pub settled_by_master: u64,
    #[serde(default)]
    pub autonomous: u64,
}

impl Counts {
    fn bump(&mut self, d: Decision) {
        let c = match d {
            Decision::Approved => &mut self.approved,
            Decision::Violation => &mut self.violation,
            Decision::Consult => &mut self.consult,
        };
        *c += 1;
    }
}

/// A refused policy text or an unreadable file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
    pub at_unix_ms: u64,
}

/// The policy's status (`GET /api/v1/policy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The file in force.
    pub file: String,
    pub version: String,
    pub rules: usize,
    pub loaded_at_unix_ms: u64,
    /// The latest refusal since the policy in force was loaded, if any: the policy in
    /// force is older than the file on disk.
    pub last_error: Option<Refusal>,
    pub counts: Counts,
}

/// What a reload offer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The text is the one in force, or the one last refused.
    Unchanged,
    /// The new text is in force.
    Loaded { version: String },
    /// The text was refused; the last good policy stays in force.
    Refused(Error),
}

/// The judge of one node.
#[derive(Debug)]
pub struct Judge {
    policy: Policy,
    loaded_at_unix_ms: u64,
    /// The digest of the last text offered (in force or refused).
    seen: [u8; 32],
    last_error: Option<Refusal>,
    ring: VecDeque<Record>,
    /// Neighbours of `ring` out of increasing seq order (0, but for a numbering that went
    /// backwards).
    disorder: usize,
    capacity: usize,
    counts: Counts,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Judge {
    /// Starts with the policy parsed from `text`; a bad first text is an error (a node does
    /// not start without a policy). The ring keeps `capacity` decisions (at least 1).
    pub fn new(file: &str, text: &str, capacity: usize, now_unix_ms: u64) -> Result<Judge, Error> {
        let policy = parse(file, text)?;
        Ok(Judge {
            policy,
            loaded_at_unix_ms: now_unix_ms,
            seen: digest(text),
            last_error: None,
            ring: VecDeque::new(),
            disorder: 0,
            capacity: capacity.max(1),
            counts: Counts::default(),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Offers the file's current text: loaded if it is new and valid, refused if invalid.
    pub fn offer(&mut self, file: &str, text: &str, now_unix_ms: u64) -> Reload {
        let d = digest(text);
        if d == self.seen && file == self.policy.file() {
            return Reload::Unchanged;
        }
        self.seen = d;
        match parse(file, text) {
            Ok(p) => {
                self.policy = p;
                self.loaded_at_unix_ms = now_unix_ms;
                self.last_error = None;
                Reload::Loaded {
                    version: self.policy.version().to_string(),
                }
            }
            Err(e) => {
                self.last_error = Some(Refusal {
                    error: e.to_string(),
                    at_unix_ms: now_unix_ms,
                });
                Reload::Refused(e)
            }
        }
    }

    /// The file could not be read; the policy in force stays. True when this is news (a
    /// different problem from the last one), so that the caller logs it once.
    pub fn unreadable(&mut self, error: &Error, now_unix_ms: u64) -> bool {
        let text = error.to_string();
        if self.last_error.as_ref().is_some_and(|r| r.error == text) {
            return false;
        }
        // Whatever is read next is judged afresh, even the text in force.
        self.seen = [0; 32];
        self.last_error = Some(Refusal {
            error: text,
            at_unix_ms: now_unix_ms,
        });
        true
    }

    /// Decides `spike`, keeps the record and counts it.
    pub fn decide(&mut self, spike: &Spike, now_unix_ms: u64) -> &Record {
        let v = self.policy.evaluate(spike);
        let (decision, rule, reason) = (v.decision, v.rule.to_string(), v.reason.to_string());
        self.keep(spike, decision, rule, reason, now_unix_ms)
    }

    /// Keeps and counts an approval made ahead of the rules: a learned pattern, or a
    /// package-manager run that explains a change found at start-up.
    pub fn ahead(
        &mut self,
        spike: &Spike,
        rule: String,
        reason: String,
        now_unix_ms: u64,
    ) -> &Record {
        self.keep(spike, Decision::Approved, rule, reason, now_unix_ms)
    }

    /// Records how the consultation about spike `seq` ended. False if the record has
    /// left the ring (the outcome is still counted).
    pub fn settle(&mut self, seq: u64, settled: Settled) -> bool {
        if settled.by == "master" {
            self.counts.settled_by_master += 1;
        } else {
            self.counts.autonomous += 1;
        }
        match self.position(seq) {
            Some(i) => {
                self.ring[i].settled = Some(settled);
                true
            }
            None => false,
        }
    }

    /// The kept decision of spike `seq`, if it is still in the ring.
    pub fn record(&self, seq: u64) -> Option<&Record> {
        self.position(seq).map(|i| &self.ring[i])
    }

    /// Where the decision of spike `seq` is in the ring. Spikes are judged in the order
    /// they are numbered, so the ring is sorted by seq: a storm's thousands of answers
    /// each find their record in log time.
    fn position(&self, seq: u64) -> Option<usize> {
        let at = if self.ring.back().is_some_and(|r| r.seq == seq) {
            Some(self.ring.len() - 1)
        } else {
            self.ring.binary_search_by_key(&seq, |r| r.seq).ok()
        };
        at.filter(|&i| self.ring[i].seq == seq).or_else(|| {
            (self.disorder > 0).then(|| self.ring.iter().rposition(|r| r.seq == seq))?
        })
    }

    fn keep(
        &mut self,
        spike: &Spike,
        decision: Decision,
        rule: String,
        reason: String,
        now_unix_ms: u64,
    ) -> &Record {
        self.counts.bump(decision);
        let record = Record {
            seq: spike.seq,
            at_unix_ms: now_unix_ms,
            kind: spike.kind,
            change: spike.change,
            subject: spike.subject.clone(),
            label: spike.label.clone(),
            decision,
            rule,
            reason,
            policy: self.policy.version().to_string(),
            settled: None,
        };
        if self.ring.len() == self.capacity
            && let Some(gone) = self.ring.pop_front()
            && self.ring.front().is_some_and(|next| gone.seq >= next.seq)
        {
            self.disorder -= 1;
        }
        if self.ring.back().is_some_and(|last| last.seq >= record.seq) {
            // Out of order (not expected): `settle` searches the whole ring until this
            // record has left it.
            self.disorder += 1;
        }
        self.ring.push_back(record);
        // Just pushed: the ring is not empty.
        &self.ring[self.ring.len() - 1]
    }

    /// Kept decisions of spikes with `seq > since`, oldest first, at most `limit`.
    /// Kept decisions in ascending order, at most `limit`: the `limit` following `since`
    /// (paging), or without `since` the latest `limit`.
    pub fn since(&self, since: Option<u64>, limit: usize) -> Vec<Record> {
        crate::spike::page(&self.ring, since, limit, |r| r.seq, |_| true)
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn status(&self) -> Status {
        Status {
            file: self.policy.file().to_string(),
            version: self.policy.version().to_string(),
            rules: self.policy.rules().len(),
            loaded_at_unix_ms: self.loaded_at_unix_ms,
            last_error: self.last_error.clone(),
            counts: self.counts,
        }
    }
}
