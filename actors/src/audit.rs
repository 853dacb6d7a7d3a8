//! Peer audits: catching an agent whose file baseline changes without it saying so.
//!
//! Every member's baseline is audited by one other member, the owner of the region work
//! item `audit:<peer id>` ([`crate::assign`]). Every `interval` the auditor asks the
//! audited peer for a digest of its file baseline ([`Answer`]): a sha256 over its entries
//! ([`baseline_digest`]) and `seq`, the highest spike sequence number it had assigned when
//! the digest was taken. The audited node takes both so that every file change in the
//! digest was numbered at or below `seq` and every later one above it.
//!
//! The auditor also hears the region's spikes over gossip, as every member does. Between
//! two answers `(d0, s0)` and `(d1, s1)`:
//! - `d1 == d0`: nothing to say, whatever was published (a change and its undoing);
//! - `d1 != d0` and a file spike of that peer with a number in `(s0, s1]` was heard:
//!   the change was reported;
//! - `d1 != d0`, every number in `(s0, s1]` was heard (or declared unused by the peer,
//!   [`Answer::unused`]) and none was a file spike: the baseline changed and nothing was
//!   reported. That is a `critical` audit spike;
//! - otherwise some of the peer's spikes did not reach this node (they may have been
//!   replayed to the master only, after a partition): the comparison is skipped, counted
//!   as inconclusive, and waits at most `settle` for late gossip first.
//!
//! A peer that the local membership view holds alive and that does not answer
//! `unanswered_after` requests in a row is reported too (once per streak; an `info` spike
//! when it answers again). A peer held suspect or dead is not: failure detection reports
//! that. Misses while it is not alive are counted apart.
//!
//! What this can catch: a detector that misses changes, a baseline or journal tampered
//! with on disk, a node that lost its baseline. What it cannot: a modified binary that
//! answers whatever keeps it consistent; audits compare a node with itself, not with the
//! disk. Everything heard about a peer is kept as ranges of sequence numbers above the
//! last answer, at most [`Config::max_ranges`] of them: beyond that a number is not
//! recorded, which shows up as a gap (inconclusive), never as a false alarm.
//!
//! No I/O, no clock: the actor sends the requests and hands answers and time in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::files::{EntryKind, State};
use crate::membership::Status;
use crate::node;
use crate::spike::{Change, Digest, FieldChange, Kind, Layer, Observation, Severity, Value};

/// The prefix of an audit's work item (`audit:<peer id>`).
pub const ITEM_PREFIX: &str = "audit:";

/// The peers among `assignments` (work item → owner) whose audit `me` owns.
pub fn audited_by(assignments: &BTreeMap<String, node::Id>, me: &node::Id) -> Vec<node::Id> {
    audited(
        assignments
            .iter()
            .filter(|(_, owner)| *owner == me)
            .map(|(item, _)| item),
        me,
    )
}

/// The peers `me` audits among work items it owns (never itself).
pub fn audited<'a>(items: impl IntoIterator<Item = &'a String>, me: &node::Id) -> Vec<node::Id> {
    items
        .into_iter()
        .filter_map(|item| item.strip_prefix(ITEM_PREFIX))
        .filter(|peer| *peer != me.as_str())
        .map(node::Id::from)
        .collect()
}

/// What an audited node answers about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// [`baseline_digest`] of the file baseline.
    pub digest: Digest,
    /// Entries in the baseline.
    pub entries: u64,
    /// The highest spike sequence number assigned when the digest was taken (0: none yet).
    pub seq: u64,
    /// Numbers the node's current run skipped at its start and never used (the rest of the
    /// previous run's reservation block), inclusive.
    pub unused: Option<(u64, u64)>,
}

/// A sha256 over a file baseline: every entry in path order, each field framed, so that
/// two baselines have the same digest exactly when they hold the same entries.
pub fn baseline_digest(baseline: &BTreeMap<String, State>) -> Digest {
    fn text(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    h.update(b"fleetmesh baseline v1\0");
    h.update((baseline.len() as u64).to_le_bytes());
    for (path, s) in baseline {
        text(&mut h, path);
        match &s.kind {
            EntryKind::File => h.update([0]),
            EntryKind::Dir => h.update([1]),
            EntryKind::Symlink { target } => {
                h.update([2]);
                text(&mut h, target);
            }
            EntryKind::Other => h.update([3]),
            EntryKind::Unreadable { reason } => {
                h.update([4]);
                text(&mut h, reason);
            }
        }
        h.update(s.size.to_le_bytes());
        h.update(s.mode.to_le_bytes());
        h.update(s.uid.to_le_bytes());
        h.update(s.gid.to_le_bytes());
        match &s.digest {
            Some(d) => {
                h.update([1]);
                h.update(d.0);
            }
            None => h.update([0]),
        }
    }
    Digest(h.finalize().into())
}

/// Inclusive ranges of sequence numbers, merged when they touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    /// Number of disjoint ranges held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `n`, unless that would need a new range beyond `max` ranges; says whether `n`
    /// is held now.
    pub fn insert(&mut self, n: u64, max: usize) -> bool {
        let below = self.0.range(..=n).next_back().map(|(s, e)| (*s, *e));
        if below.is_some_and(|(_, e)| e >= n) {
            return true;
        }
        let joins_below = below.filter(|(_, e)| e.checked_add(1) == Some(n));
        let joins_above = n
            .checked_add(1)
            .and_then(|a| self.0.get(&a).map(|e| (a, *e)));
        match (joins_below, joins_above) {
            (Some((s, _)), Some((a, e))) => {
                self.0.remove(&a);
                self.0.insert(s, e);
            }
            (Some((s, _)), None) => {
                self.0.insert(s, n);
            }
            (None, Some((a, e))) => {
                self.0.remove(&a);
                self.0.insert(n, e);
            }
            (None, None) => {
                if self.0.len() >= max {
                    return false;
                }
                self.0.insert(n, n);
            }
        }
        true
    }

    /// Forgets every number up to `n`.
    pub fn forget_through(&mut self, n: u64) {
        let Some(k) = n.checked_add(1) else {
            self.0.clear();
            return;
        };
        let mut keep = self.0.split_off(&k);
        // A range that starts at or below `n` may reach beyond it.
        if let Some((_, &e)) = self.0.iter().next_back()
            && e >= k
        {
            keep.insert(k, e);
        }
        self.0 = keep;
    }

    /// Whether some number in `lo..=hi` is held.
    pub fn any_in(&self, lo: u64, hi: u64) -> bool {
        if lo > hi {
            return false;
        }
        self.0
            .range(..=hi)
            .next_back()
            .is_some_and(|(_, e)| *e >= lo)
    }

    /// Whether every number in `lo..=hi` is held or inside `except`.
    pub fn covers(&self, lo: u64, hi: u64, except: Option<(u64, u64)>) -> bool {
        let mut at = lo;
        while at <= hi {
            if let Some((a, b)) = except
                && a <= at
                && at <= b
            {
                match b.checked_add(1) {
                    Some(n) => at = n,
                    None => return true,
                }
                continue;
            }
            match self.0.range(..=at).next_back() {
                Some((_, e)) if *e >= at => match e.checked_add(1) {
                    Some(n) => at = n,
                    None => return true,
                },
                _ => return false,
            }
        }
        true
    }
}

/// Audit timing and bounds.
#[derive(Debug, Clone)]
pub struct Config {
    /// From one request to the next, per audited peer.
    pub interval: Duration,
    /// Requests in a row left unanswered by a live peer before it is reported.
    pub unanswered_after: u32,
    /// A request not answered this long counts as unanswered.
    pub answer_within: Duration,
    /// How long an answer waits for the peer's spikes to arrive by gossip.
    pub settle: Duration,
    /// Ranges of heard sequence numbers kept per peer.
    pub max_ranges: usize,
    /// Peers no longer audited here whose state is kept (they may come back).
    pub keep_released: usize,
}

impl Config {
    /// `interval` and `unanswered_after` from settings, and fixed bounds: an answer within
    /// 10 s (request-response's own timeout), gossip 10 s to catch up with an answer.
    pub fn new(interval: Duration, unanswered_after: u32) -> Self {
        Config {
            interval,
            unanswered_after: unanswered_after.max(1),
            answer_within: Duration::from_secs(10),
            settle: Duration::from_secs(10),
            max_ranges: 1024,
            keep_released: 64,
        }
    }
}

/// One peer audited here, as the runtime sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub peer: node::Id,
    pub name: Option<String>,
    /// How the local membership view sees it.
    pub status: Status,
}

/// What the core is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The peers this node audits now (all of them, replacing the last list).
    Audited(Vec<Subject>),
    /// Spikes heard over gossip in one message signed by `from`: (origin, seq, kind).
    /// Only spikes whose origin signed the message count.
    Heard {
        from: node::Id,
        spikes: Vec<(node::Id, u64, Kind)>,
    },
    /// `from` answered a digest request, or the request failed (the text says why).
    Answered {
        from: node::Id,
        answer: Result<Answer, String>,
    },
    /// The time [`Auditor::poll_timeout`] named has come.
    Timeout,
}

/// What the core asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a digest request to this peer; hand its answer back as [`Input::Answered`].
    Ask(node::Id),
    /// Send this to the spike encoder.
    Observe(Observation),
}

/// The outcome of the latest answer of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The first answer: nothing to compare it with yet.
    Baseline,
    /// The digest did not change.
    Unchanged,
    /// The digest changed and the peer published file spikes for it.
    Reported,
    /// The digest changed and the peer published no file spike: alarm.
    Unreported,
    /// Some of the peer's spikes never reached this node, or its numbering went back:
    /// not compared.
    Inconclusive,
    /// Waiting for the peer's spikes to arrive before comparing.
    Settling,
}

/// Per-peer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub asked: u64,
    pub answers: u64,
    pub unchanged: u64,
    pub reported: u64,
    pub unreported: u64,
    /// Comparisons skipped because the view of the peer's spikes had a gap.
    pub inconclusive: u64,
    /// Answers whose sequence number was below the previous one.
    pub seq_regressions: u64,
    /// Requests unanswered (or refused) while the peer was held alive.
    pub unanswered: u64,
    /// Requests unanswered while the peer was not held alive (not counted against it).
    pub unanswered_while_down: u64,
    /// Spikes of the peer heard over gossip.
    pub heard: u64,
}

/// One audited peer, for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub peer: node::Id,
    pub name: Option<String>,
    /// Audited here now (false: kept from an earlier assignment).
    pub assigned: bool,
    pub status: &'static str,
    pub verdict: Option<Verdict>,
    /// The latest answer and how long ago it came.
    pub last_answer: Option<Answer>,
    pub last_answer_ago_ms: Option<u64>,
    /// Why the latest request failed, if it did.
    pub last_failure: Option<String>,
    /// Requests in a row not answered.
    pub unanswered_in_a_row: u32,
    pub counters: Counters,
}

#[derive(Debug, Clone)]
struct Peer {
    name: Option<String>,
    status: Status,
    assigned: bool,
    /// The answer the next one is compared with.
    base: Option<Answer>,
    heard: Ranges,
    files: Ranges,
    /// An answer waiting for gossip, and until when.
    pending: Option<(Answer, Instant)>,
    /// A request out, and when it counts as unanswered.
    asked: Option<Instant>,
    next: Instant,
    misses: u32,
    alarmed: bool,
    verdict: Option<Verdict>,
    last: Option<(Answer, Instant)>,
    last_failure: Option<String>,
    released: Option<Instant>,
    counters: Counters,
}

impl Peer {
    fn new(now: Instant, s: &Subject) -> Self {
        Peer {
            name: s.name.clone(),
            status: s.status,
            assigned: true,
            base: None,
            heard: Ranges::default(),
            files: Ranges::default(),
            pending: None,
            asked: None,
            next: now,
            misses: 0,
            alarmed: false,
            verdict: None,
            last: None,
            last_failure: None,
            released: None,
            counters: Counters::default(),
        }
    }

    /// The next answer is compared with `a`.
    fn rebase(&mut self, a: Answer) {
        self.heard.forget_through(a.seq);
        self.files.forget_through(a.seq);
        self.base = Some(a);
    }
}

/// The audits this node runs.
#[derive(Debug, Clone)]
pub struct Auditor {
    config: Config,
    peers: BTreeMap<node::Id, Peer>,
}

impl Auditor {
    pub fn new(config: Config) -> Self {
        Auditor {
            config,
            peers: BTreeMap::new(),
        }
    }

    /// Every peer audited here, and those kept from earlier assignments.
    pub fn reports(&self, now: Instant) -> Vec<Report> {
        self.peers
            .iter()
            .map(|(id, p)| Report {
                peer: id.clone(),
                name: p.name.clone(),
                assigned: p.assigned,
                status: p.status.as_str(),
                verdict: p.verdict,
                last_answer: p.last.as_ref().map(|(a, _)| a.clone()),
                last_answer_ago_ms: p
                    .last
                    .as_ref()
                    .map(|(_, at)| crate::heartbeat::millis(now.saturating_duration_since(*at))),
                last_failure: p.last_failure.clone(),
                unanswered_in_a_row: p.misses,
                counters: p.counters,
            })
            .collect()
    }

    /// When the core next needs [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| p.assigned)
            .map(|p| match (p.asked, &p.pending) {
                (Some(deadline), _) => deadline,
                (None, Some((_, until))) => *until,
                (None, None) => p.next,
            })
            .min()
    }

    /// Takes one input at `now`; then settles what is due and asks the peers whose turn
    /// it is, whatever the input was.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Audited(list) => self.audited(now, list),
            Input::Heard { from, spikes } => self.heard(&from, spikes, &mut out),
            Input::Answered { from, answer } => self.answered(now, &from, answer, &mut out),
            Input::Timeout => {}
        }
        let unanswered_after = self.config.unanswered_after;
        for (id, p) in self.peers.iter_mut().filter(|(_, p)| p.assigned) {
            if p.asked.is_some_and(|d| d <= now) {
                p.asked = None;
                miss(
                    id,
                    p,
                    "no answer in time".into(),
                    unanswered_after,
                    &mut out,
                );
            }
            if p.pending.as_ref().is_some_and(|(_, d)| *d <= now) {
                settle(id, p, true, &mut out);
            }
            // One request at a time, and none while an answer waits for gossip.
            if p.asked.is_none() && p.pending.is_none() && p.next <= now {
                p.asked = Some(now + self.config.answer_within);
                p.next += self.config.interval;
                if p.next <= now {
                    p.next = now + self.config.interval;
                }
                p.counters.asked += 1;
                out.push(Output::Ask(id.clone()));
            }
        }
        out
    }

    fn audited(&mut self, now: Instant, list: Vec<Subject>) {
        let listed: BTreeMap<&node::Id, &Subject> = list.iter().map(|s| (&s.peer, s)).collect();
        for (id, p) in &mut self.peers {
            if p.assigned && !listed.contains_key(id) {
                // Released: its answer in flight and its comparison in waiting are void,
                // what was learnt stays in case it comes back.
                p.assigned = false;
                p.released = Some(now);
                p.asked = None;
                p.pending = None;
                p.misses = 0;
            }
        }
        for s in &list {
            let p = self
                .peers
                .entry(s.peer.clone())
                .or_insert_with(|| Peer::new(now, s));
            if !p.assigned {
                p.assigned = true;
                p.released = None;
                p.next = now;
            }
            if s.name.is_some() {
                p.name = s.name.clone();
            }
            p.status = s.status;
        }
        let mut released: Vec<(Instant, node::Id)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| p.released.map(|at| (at, id.clone())))
            .collect();
        if released.len() > self.config.keep_released {
            released.sort();
            let excess = released.len() - self.config.keep_released;
            for (_, id) in released.into_iter().take(excess) {
                self.peers.remove(&id);
            }
        }
    }

    fn heard(
        &mut self,
        from: &node::Id,
        spikes: Vec<(node::Id, u64, Kind)>,
        out: &mut Vec<Output>,
    ) {
        let max = self.config.max_ranges;
        let Some(p) = self.peers.get_mut(from) else {
            return;
        };
        let floor = p.base.as_ref().map_or(0, |b| b.seq);
        for (origin, seq, kind) in spikes {
            // Only what the origin signed itself: a spike relayed under another
            // signature could be made up to cover for the peer.
            if origin != *from || seq <= floor {
                continue;
            }
            p.counters.heard += 1;
            if kind == Kind::File {
                // Recorded as heard only if recorded as a file spike too: a file spike
                // that is not kept must show up as a gap, not as a non-file number.
                if p.files.insert(seq, max) && !p.heard.insert(seq, max) {
                    p.files.forget_one(seq);
                }
            } else {
                p.heard.insert(seq, max);
            }
        }
        if p.pending.is_some() {
            settle(from, p, false, out);
        }
    }

    fn answered(
        &mut self,
        now: Instant,
        from: &node::Id,
        answer: Result<Answer, String>,
        out: &mut Vec<Output>,
    ) {
        let unanswered_after = self.config.unanswered_after;
        let settle_for = self.config.settle;
        let Some(p) = self.peers.get_mut(from) else {
            return;
        };
        // Only the answer to the request out counts (not a late one, not one unasked).
        if !p.assigned || p.asked.is_none() {
            return;
        }
        p.asked = None;
        let a = match answer {
            Ok(a) => a,
            Err(why) => {
                miss(from, p, why, unanswered_after, out);
                return;
            }
        };
        p.counters.answers += 1;
        p.misses = 0;
        p.last_failure = None;
        p.last = Some((a.clone(), now));
        if p.alarmed {
            p.alarmed = false;
            out.push(Output::Observe(answering_again(from, p)));
        }
        if p.pending.is_some() {
            // A newer answer: the one still waiting is compared no more.
            p.pending = None;
            p.counters.inconclusive += 1;
        }
        let Some(base) = p.base.clone() else {
            p.verdict = Some(Verdict::Baseline);
            p.rebase(a);
            return;
        };
        if a.seq < base.seq {
            p.counters.seq_regressions += 1;
            p.counters.inconclusive += 1;
            p.verdict = Some(Verdict::Inconclusive);
            // Numbers above the new seq heard before are not this run's: start over.
            p.heard = Ranges::default();
            p.files = Ranges::default();
            p.base = Some(a);
            return;
        }
        p.pending = Some((a, now + settle_for));
        settle(from, p, false, out);
    }

    /// The ids of the peers audited here now.
    pub fn assigned(&self) -> impl Iterator<Item = &node::Id> {
        self.peers
            .iter()
            .filter(|(_, p)| p.assigned)
            .map(|(id, _)| id)
    }
}

impl Ranges {
    /// Forgets one number (splitting its range if needed).
    fn forget_one(&mut self, n: u64) {
        let Some((&s, &e)) = self.0.range(..=n).next_back() else {
            return;
        };
        if e < n {
            return;
        }
        self.0.remove(&s);
        if s < n {
            self.0.insert(s, n - 1);
        }
        if n < e {
            self.0.insert(n + 1, e);
        }
    }
}

/// Compares the waiting answer with the base if it can; `due`: the wait is over, so a
/// gap makes it inconclusive.
fn settle(id: &node::Id, p: &mut Peer, due: bool, out: &mut Vec<Output>) {
    let (Some((a, _)), Some(base)) = (p.pending.clone(), p.base.clone()) else {
        p.pending = None;
        return;
    };
    let verdict = if a.digest == base.digest {
        Verdict::Unchanged
    } else if p.files.any_in(base.seq + 1, a.seq) {
        Verdict::Reported
    } else if p.heard.covers(base.seq + 1, a.seq, a.unused) {
        Verdict::Unreported
    } else if due {
        Verdict::Inconclusive
    } else {
        p.verdict = Some(Verdict::Settling);
        return;
    };
    p.pending = None;
    p.verdict = Some(verdict);
    match verdict {
        Verdict::Unchanged => p.counters.unchanged += 1,
        Verdict::Reported => p.counters.reported += 1,
        Verdict::Inconclusive => p.counters.inconclusive += 1,
        Verdict::Unreported => {
            p.counters.unreported += 1;
            out.push(Output::Observe(unreported(id, p, &base, &a)));
        }
        Verdict::Baseline | Verdict::Settling => {}
    }
    p.rebase(a);
}

/// A request failed or went unanswered.
fn miss(id: &node::Id, p: &mut Peer, why: String, after: u32, out: &mut Vec<Output>) {
    p.last_failure = Some(why.clone());
    if p.status != Status::Alive {
        p.counters.unanswered_while_down += 1;
        return;
    }
    p.counters.unanswered += 1;
    p.misses += 1;
    if p.misses >= after && !p.alarmed {
        p.alarmed = true;
        out.push(Output::Observe(unanswered(id, p, &why)));
    }
}

fn observation(id: &node::Id, p: &Peer, change: Change, severity: Severity) -> Observation {
    let mut o = Observation::new(Kind::Audit, change, id.to_string(), Layer::Poll);
    o.severity = severity;
    if let Some(n) = &p.name {
        o.fields
            .insert("peer_name".into(), FieldChange::fact(n.clone()));
    }
    o
}

fn unreported(id: &node::Id, p: &Peer, base: &Answer, a: &Answer) -> Observation {
    let mut o = observation(id, p, Change::Modified, Severity::Critical);
    o.before = Some(base.digest);
    o.after = Some(a.digest);
    o.fields.insert(
        "problem".into(),
        FieldChange::fact("files_changed_without_being_reported"),
    );
    o.fields.insert(
        "baseline".into(),
        FieldChange {
            before: Some(Value::Text(base.digest.to_string())),
            after: Some(Value::Text(a.digest.to_string())),
        },
    );
    o.fields.insert(
        "entries".into(),
        FieldChange {
            before: Some(Value::Int(i64::try_from(base.entries).unwrap_or(i64::MAX))),
            after: Some(Value::Int(i64::try_from(a.entries).unwrap_or(i64::MAX))),
        },
    );
    o.fields.insert(
        "seq".into(),
        FieldChange {
            before: Some(Value::Int(i64::try_from(base.seq).unwrap_or(i64::MAX))),
            after: Some(Value::Int(i64::try_from(a.seq).unwrap_or(i64::MAX))),
        },
    );
    o
}

fn unanswered(id: &node::Id, p: &Peer, why: &str) -> Observation {
    let mut o = observation(id, p, Change::Removed, Severity::High);
    o.fields.insert(
        "problem".into(),
        FieldChange::fact("audit_requests_unanswered"),
    );
    o.fields
        .insert("reason".into(), FieldChange::fact(why.to_string()));
    o.fields.insert(
        "requests_in_a_row".into(),
        FieldChange {
            before: None,
            after: Some(Value::Int(i64::from(p.misses))),
        },
    );
    o
}

fn answering_again(id: &node::Id, p: &Peer) -> Observation {
    let mut o = observation(id, p, Change::Added, Severity::Info);
    o.fields
        .insert("problem".into(), FieldChange::fact("audit_answered_again"));
    o
}

#[cfg(test)]
mod tests;
