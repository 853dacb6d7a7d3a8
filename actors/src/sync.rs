//! The origin's side of "never lost": what the region master has acknowledged of this
//! node's spikes, when to replay the rest from the journal, and where the node stands on
//! the connectivity spectrum.
//!
//! Every spike is journaled, then gossiped. The master applies each (origin, seq) once
//! ([`crate::ledger`]) and gossips, once a second, the highest contiguous sequence number
//! it holds of every origin. [`Origin`] follows those acknowledgements: the journal is
//! compacted up to the highest one, and when the oldest spike above the master's mark has
//! waited longer than `replay_after` (gossip lost it, or the node was cut off) the spikes
//! above the mark are replayed to the master directly, one batch in flight at a time.
//!
//! After a restart the numbers left of the previous run's reservation block are never
//! used ([`Origin::unused`]): the master holds this run's spikes above that gap until a
//! replay's `first` tells it the gap is empty. That replay goes as soon as the master's
//! first acknowledgement is heard, without waiting `replay_after`.
//!
//! The journal is compacted up to the master's marks, but never past a hold
//! ([`Origin::hold`]), one per [`Source`]: a detector's saved state (the file baseline,
//! the accounts snapshot) is saved after the changes are journaled and rebuilt from the
//! journal after a crash, so what it does not reflect yet must stay in the journal.
//!
//! [`Connectivity`] names how the node is doing, as it sees itself and as the master sees
//! it, with the sync debt (backlog, age of the oldest unacknowledged spike).
//!
//! Times are unix milliseconds passed in by the caller; no clock, no I/O.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::node;

/// Replay timing.
#[derive(Debug, Clone)]
pub struct Config {
    /// A spike not acknowledged this long after it was published is replayed.
    pub replay_after_ms: u64,
    /// A replay batch not answered this long is sent again.
    pub retry_ms: u64,
    /// A master not heard from this long is no longer replayed to.
    pub master_stale_ms: u64,
    /// Oldest unacknowledged spike older than this: `delayed`.
    pub delayed_ms: u64,
    /// Oldest unacknowledged spike older than this while connected: `edge_cached`.
    pub edge_ms: u64,
    /// After reconnecting, how long the node counts as `returning` at most.
    pub returning_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            replay_after_ms: 3_000,
            retry_ms: 5_000,
            master_stale_ms: 5_000,
            delayed_ms: 2_500,
            edge_ms: 10_000,
            returning_ms: 10_000,
        }
    }
}

/// Where a node stands, from best to worst reachability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    /// Connected, a master known, acknowledgements current.
    Live,
    /// Connected, but acknowledgements arrive late.
    Delayed,
    /// Connected with a master, but spikes wait unacknowledged in the journal.
    EdgeCached,
    /// No master reachable (no quorum on this side): acting alone, journaling.
    Autonomous,
    /// No peer connected at all.
    Disconnected,
    /// Back in touch after being cut off; the backlog is not being replayed yet.
    Returning,
    /// Sending its backlog to the master.
    Replaying,
}

impl Connectivity {
    pub fn as_str(self) -> &'static str {
        match self {
            Connectivity::Live => "live",
            Connectivity::Delayed => "delayed",
            Connectivity::EdgeCached => "edge_cached",
            Connectivity::Autonomous => "autonomous",
            Connectivity::Disconnected => "disconnected",
            Connectivity::Returning => "returning",
            Connectivity::Replaying => "replaying",
        }
    }

    fn cut_off(self) -> bool {
        matches!(self, Connectivity::Autonomous | Connectivity::Disconnected)
    }
}

/// A node's sync state as it reports it (API, heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub connectivity: Option<Connectivity>,
    /// Highest sequence number journaled.
    pub last_seq: u64,
    /// Highest sequence number the current master acknowledged.
    pub acked: u64,
    /// Spikes journaled and not acknowledged.
    pub backlog: u64,
    /// Age of the oldest unacknowledged spike, if any.
    pub oldest_unacked_ms: Option<u64>,
    /// While replaying: where the replay started and how far the master has taken it.
    pub replay: Option<Replay>,
    /// Since when (Unix ms, the node's clock) `connectivity` has been what it is, so that
    /// a viewer says "autonomous for 17 min" from the node's own account.
    #[serde(default)]
    pub since_unix_ms: Option<u64>,
}

/// Progress of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The master's mark when the replay began.
    pub from: u64,
    /// The last sequence number to replay (grows if spikes are recorded meanwhile).
    pub to: u64,
    /// The master's mark now.
    pub done: u64,
    /// Spikes sent so far (batches may be resent).
    pub sent: u64,
    pub started_unix_ms: u64,
}

/// The master an acknowledgement came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub peer: node::Id,
    pub term: u64,
}

/// What the runtime should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read spikes above `after` from the journal and send them to `to`, then call
    /// [`Origin::sent`] with the highest one sent.
    Replay { after: u64, to: node::Id },
}

/// What the runtime knows of the links, for the connectivity state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Links {
    pub connected_peers: usize,
    /// The region has a master this node knows of (its consensus view).
    pub master_known: bool,
}

/// A detector whose saved state lags the journal and is rebuilt from it at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The file baseline (`baseline.rmp`).
    Files,
    /// The users-and-groups snapshot (`accounts.rmp`).
    Accounts,
}

/// The origin's acknowledgement and replay state.
#[derive(Debug)]
pub struct Origin {
    config: Config,
    /// Highest number journaled.
    last: u64,
    /// The current master's mark for this node (may go down when a master changes).
    mark: u64,
    /// Highest mark any master gave.
    best: u64,
    /// What the journal was compacted up to: the best mark, but not past `hold`.
    compacted: u64,
    /// Per source, nothing above this may be compacted away yet (see [`Origin::hold`]).
    holds: BTreeMap<Source, u64>,
    /// The top of the numbers this run skipped at its start, until the master moves past.
    gap: Option<u64>,
    master: Option<(Master, u64)>,
    /// The region's master as this node's consensus knows it, when it is another node.
    record: Option<node::Id>,
    /// (highest seq of a published batch, when it was published), oldest first.
    published: VecDeque<(u64, u64)>,
    in_flight: Option<(u64, u64)>,
    replay: Option<Replay>,
    links: Links,
    state: Connectivity,
    /// When `state` last changed (the first classification counts as a change).
    since: Option<u64>,
    returned_at: Option<u64>,
}

/// Bound on remembered publication times; older entries are merged.
const MAX_PUBLISHED: usize = 4096;

impl Origin {
    /// `last`: the highest number already in the journal (spikes of an earlier run count
    /// as published `now`).
    pub fn new(config: Config, last: u64, now: u64) -> Self {
        let mut published = VecDeque::new();
        if last > 0 {
            published.push_back((last, now));
        }
        Origin {
            config,
            last,
            mark: 0,
            best: 0,
            compacted: 0,
            holds: BTreeMap::new(),
            gap: None,
            master: None,
            record: None,
            published,
            in_flight: None,
            replay: None,
            links: Links::default(),
            state: Connectivity::Disconnected,
            since: None,
            returned_at: None,
        }
    }

    /// This run started above numbers it will never use, `from..=to` (inclusive): the
    /// rest of the previous run's reservation. Once the master's mark is known, spikes
    /// above it are replayed at once, so that the master learns of the gap now.
    pub fn unused(&mut self, from: u64, to: u64) {
        self.gap = (from <= to).then_some(to);
    }

    /// The journal must keep everything numbered from now on until [`Origin::saved`] of
    /// `source`: a state saved later than the journal is rebuilt from it.
    pub fn hold(&mut self, source: Source) {
        self.holds.entry(source).or_insert(self.last);
    }

    /// At start: `source`'s saved state reflects the journal up to `seq` only (what is
    /// above was folded into it in memory, not saved), so the journal keeps what is above
    /// `seq` until [`Origin::saved`] of `source`.
    pub fn loaded(&mut self, source: Source, seq: u64) {
        let h = self.holds.entry(source).or_insert(seq);
        *h = (*h).min(seq);
    }

    /// `source`'s state is saved as of `seq`; `pending`: changes after it are not (its
    /// hold moves up to `seq`), otherwise its hold is over. Returns the number up to which
    /// the journal may now be compacted, if that moved.
    pub fn saved(&mut self, source: Source, seq: u64, pending: bool) -> Option<u64> {
        match self.holds.get_mut(&source) {
            Some(h) if pending => *h = (*h).max(seq),
            _ => {
                self.holds.remove(&source);
            }
        }
        self.compaction()
    }

    fn compaction(&mut self) -> Option<u64> {
        let held = self.holds.values().copied().min().unwrap_or(u64::MAX);
        let upto = self.best.min(held);
        (upto > self.compacted).then(|| {
            self.compacted = upto;
            upto
        })
    }

    /// Spikes up to `seq` were journaled and published at `now`.
    pub fn published(&mut self, seq: u64, now: u64) {
        if seq <= self.last {
            return;
        }
        self.last = seq;
        if self.published.len() == MAX_PUBLISHED {
            // Merge the two oldest: the age of the oldest spike is kept.
            if let Some((_, t)) = self.published.pop_front()
                && let Some(front) = self.published.front_mut()
            {
                front.1 = t;
            }
        }
        self.published.push_back((seq, now));
    }

    /// The master `from` acknowledges everything up to `mark` of this node. Returns the
    /// number up to which the journal may now be compacted, if that moved.
    pub fn acked(&mut self, mark: u64, from: Master, now: u64) -> Option<u64> {
        if let Some((m, _)) = &self.master
            && from.term < m.term
        {
            return None;
        }
        let mark = mark.min(self.last);
        self.mark = mark;
        self.master = Some((from, now));
        if self.in_flight.is_some_and(|(upto, _)| mark >= upto) {
            self.in_flight = None;
        }
        while self.published.front().is_some_and(|(s, _)| *s <= mark) {
            self.published.pop_front();
        }
        if let Some(r) = &mut self.replay {
            r.done = mark;
            if mark >= r.to {
                self.replay = None;
            }
        }
        if self.gap.is_some_and(|to| mark >= to) {
            self.gap = None;
        }
        self.classify(now);
        self.best = self.best.max(mark);
        self.compaction()
    }

    /// The replay batch sent at `now` ended with `upto` (`sent` spikes in it).
    pub fn sent(&mut self, upto: u64, sent: u64, now: u64) {
        self.in_flight = Some((upto, now));
        let r = self.replay.get_or_insert(Replay {
            from: self.mark,
            to: self.last,
            done: self.mark,
            sent: 0,
            started_unix_ms: now,
        });
        r.to = r.to.max(self.last);
        r.sent += sent;
        self.classify(now);
    }

    /// A replay request failed (the master did not answer): try again on the next poll.
    pub fn failed(&mut self) {
        self.in_flight = None;
    }

    /// The region's master as this node's consensus knows it (`None`: unknown, or this
    /// node). Replays go there while no master's acknowledgements are heard: a master
    /// that never heard of this node's spikes (all of them lost, or published while cut
    /// off before any was acknowledged) names it in none of its acknowledgements.
    pub fn master_of_record(&mut self, peer: Option<node::Id>) {
        self.record = peer;
    }

    /// The links as the runtime sees them now.
    pub fn links(&mut self, links: Links, now: u64) {
        self.links = links;
        self.classify(now);
    }

    /// Called about once a second: whether to replay, and to whom.
    pub fn poll(&mut self, now: u64) -> Option<Action> {
        self.classify(now);
        if !self.links.master_known || self.mark >= self.last {
            return None;
        }
        // The master whose acknowledgements come, while they come; else the master of
        // record.
        let heard = self
            .master
            .as_ref()
            .filter(|(_, heard)| now.saturating_sub(*heard) <= self.config.master_stale_ms)
            .map(|(m, _)| &m.peer);
        let to = heard.or(self.record.as_ref())?.clone();
        if let Some((_, at)) = self.in_flight {
            if now.saturating_sub(at) < self.config.retry_ms {
                return None;
            }
            self.in_flight = None;
        }
        let waiting = self.oldest_unacked_age(now)?;
        let gap = self.gap.is_some_and(|to| self.mark < to);
        if waiting < self.config.replay_after_ms && self.replay.is_none() && !gap {
            return None;
        }
        Some(Action::Replay {
            after: self.mark,
            to,
        })
    }

    fn oldest_unacked_age(&self, now: u64) -> Option<u64> {
        (self.mark < self.last).then(|| {
            self.published
                .front()
                .map_or(0, |(_, t)| now.saturating_sub(*t))
        })
    }

    fn classify(&mut self, now: u64) {
        let age = self.oldest_unacked_age(now).unwrap_or(0);
        let was = self.state;
        let state = if self.links.connected_peers == 0 {
            Connectivity::Disconnected
        } else if !self.links.master_known {
            Connectivity::Autonomous
        } else if self.replay.is_some() {
            Connectivity::Replaying
        } else {
            if was.cut_off() {
                self.returned_at = Some(now);
            }
            let returning = self
                .returned_at
                .is_some_and(|t| now.saturating_sub(t) < self.config.returning_ms && age > 0);
            if !returning {
                self.returned_at = None;
            }
            if returning {
                Connectivity::Returning
            } else if age > self.config.edge_ms {
                Connectivity::EdgeCached
            } else if age > self.config.delayed_ms {
                Connectivity::Delayed
            } else {
                Connectivity::Live
            }
        };
        if state != was || self.since.is_none() {
            self.since = Some(now);
        }
        self.state = state;
    }

    /// The current state, for the API and heartbeats.
    pub fn report(&self, now: u64) -> Report {
        Report {
            connectivity: Some(self.state),
            last_seq: self.last,
            acked: self.mark,
            backlog: self.backlog(),
            oldest_unacked_ms: self.oldest_unacked_age(now),
            replay: self.replay,
            since_unix_ms: self.since,
        }
    }

    /// Spikes journaled that the current master has not acknowledged.
    pub fn backlog(&self) -> u64 {
        self.last - self.mark.min(self.last)
    }

    /// Whether a replay is under way (batches sent, the backlog not yet acknowledged).
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// The highest sequence number journaled.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The master acknowledgements come from, if any was heard.
    pub fn master(&self) -> Option<&Master> {
        self.master.as_ref().map(|(m, _)| m)
    }
}

/// How the master sees a member: its liveness, what it reports of itself, and the
/// master's own mark for it.
pub fn as_master_sees(
    liveness: crate::membership::Status,
    reported: Option<&Report>,
    mark: u64,
) -> Connectivity {
    use crate::membership::Status as L;
    match liveness {
        L::Dead => return Connectivity::Disconnected,
        L::Suspect => return Connectivity::Delayed,
        L::Joining | L::Remote | L::Alive => {}
    }
    let Some(r) = reported else {
        return Connectivity::Live;
    };
    match r.connectivity {
        Some(c @ (Connectivity::Replaying | Connectivity::Returning)) => c,
        // It reports itself autonomous while the master hears it: a one-sided view.
        Some(Connectivity::Autonomous | Connectivity::Disconnected) => Connectivity::Returning,
        _ if r.last_seq > mark && r.oldest_unacked_ms.unwrap_or(0) > 10_000 => {
            Connectivity::EdgeCached
        }
        Some(c) => c,
        None => Connectivity::Live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(term: u64) -> Master {
        Master {
            peer: node::Id::from("m"),
            term,
        }
    }

    fn up() -> Links {
        Links {
            connected_peers: 4,
            master_known: true,
        }
    }

    #[test]
    fn acknowledged_spikes_are_compacted_and_never_replayed() {
        let mut o = Origin::new(Config::default(), 0, 0);
        o.links(up(), 0);
        o.published(10, 0);
        assert_eq!(o.acked(10, master(1), 500), Some(10));
        assert_eq!(o.poll(60_000), None);
        assert_eq!(o.report(600).backlog, 0);
        assert_eq!(o.report(600).connectivity, Some(Connectivity::Live));
    }

    #[test]
    fn a_lost_batch_is_replayed_after_the_wait_then_the_state_clears() {
        let c = Config::default();
        let mut o = Origin::new(c.clone(), 0, 0);
        o.links(up(), 0);
        o.published(10, 0);
        o.published(20, 100);
        // The master got 1..=10 only (the second batch was lost).
        o.acked(10, master(1), 1_000);
        assert_eq!(o.poll(1_000), None, "not yet overdue");
        let r = o.poll(100 + c.replay_after_ms);
        assert_eq!(
            r,
            Some(Action::Replay {
                after: 10,
                to: node::Id::from("m")
            })
        );
        o.sent(20, 10, 3_200);
        assert_eq!(o.poll(3_300), None, "one batch in flight");
        assert_eq!(o.report(3_300).connectivity, Some(Connectivity::Replaying));
        let replaying_since = o.report(3_300).since_unix_ms;
        assert!(
            replaying_since.is_some_and(|t| t <= 3_300),
            "{replaying_since:?}"
        );
        assert_eq!(o.acked(20, master(1), 3_400), Some(20));
        assert_eq!(o.report(3_400).backlog, 0);
        assert_eq!(o.poll(3_500), None);
        assert_eq!(o.report(3_500).connectivity, Some(Connectivity::Live));
        // The change of state is dated; an unchanged state keeps its date.
        let live_since = o.report(3_500).since_unix_ms;
        assert!(
            live_since.is_some_and(|t| (3_300..=3_500).contains(&t)),
            "{live_since:?}"
        );
        assert_eq!(o.report(9_000).since_unix_ms, live_since);
    }

    #[test]
    fn with_no_acknowledgement_heard_the_master_of_record_gets_the_replay() {
        // Every spike of this node was lost (published while cut off): no master names it
        // in its acknowledgements, so only the consensus' master can be asked.
        let c = Config::default();
        let mut o = Origin::new(c.clone(), 0, 0);
        o.links(up(), 0);
        o.published(5, 0);
        assert_eq!(
            o.poll(c.replay_after_ms + 1),
            None,
            "no master known by name"
        );
        o.master_of_record(Some(node::Id::from("boss")));
        let to_boss = Some(Action::Replay {
            after: 0,
            to: node::Id::from("boss"),
        });
        assert_eq!(o.poll(c.replay_after_ms + 1), to_boss);
        // Acknowledgements from the master that sends them win while they are fresh...
        o.failed();
        o.acked(2, master(1), 10_000);
        let to_m = Some(Action::Replay {
            after: 2,
            to: node::Id::from("m"),
        });
        assert_eq!(o.poll(10_000 + c.replay_after_ms), to_m);
        // ...and the master of record takes over once they stop.
        o.failed();
        let stale = 10_001 + c.master_stale_ms;
        assert_eq!(
            o.poll(stale),
            Some(Action::Replay {
                after: 2,
                to: node::Id::from("boss")
            })
        );
    }

    #[test]
    fn an_unanswered_batch_is_sent_again_after_the_retry_time() {
        let c = Config::default();
        let mut o = Origin::new(c.clone(), 0, 0);
        o.links(up(), 0);
        o.published(5, 0);
        o.acked(0, master(1), 0);
        assert!(o.poll(c.replay_after_ms).is_some());
        o.sent(5, 5, c.replay_after_ms);
        assert!(o.poll(c.replay_after_ms + 1_000).is_none());
        o.acked(0, master(1), c.replay_after_ms + 1_000);
        assert!(o.poll(c.replay_after_ms + c.retry_ms).is_some());
    }

    #[test]
    fn cut_off_then_returning_then_replaying_then_live() {
        let c = Config::default();
        let mut o = Origin::new(c.clone(), 0, 0);
        o.links(up(), 0);
        o.acked(0, master(1), 0);
        assert_eq!(o.report(0).connectivity, Some(Connectivity::Live));
        // Cut off: no peers.
        o.links(Links::default(), 1_000);
        for s in 1..=100 {
            o.published(s, 1_000 + s * 100);
        }
        assert_eq!(o.poll(20_000), None, "nobody to replay to");
        assert_eq!(
            o.report(20_000).connectivity,
            Some(Connectivity::Disconnected)
        );
        // Connected again, master not yet known: autonomous.
        o.links(
            Links {
                connected_peers: 3,
                master_known: false,
            },
            30_000,
        );
        assert_eq!(
            o.report(30_000).connectivity,
            Some(Connectivity::Autonomous)
        );
        assert_eq!(o.poll(30_000), None);
        o.links(up(), 31_000);
        assert_eq!(o.report(31_000).connectivity, Some(Connectivity::Returning));
        // The master's first ack after the heal: a stale mark, so replay at once.
        o.acked(0, master(2), 31_500);
        assert!(matches!(
            o.poll(31_600),
            Some(Action::Replay { after: 0, .. })
        ));
        o.sent(50, 50, 31_600);
        assert_eq!(o.report(31_600).connectivity, Some(Connectivity::Replaying));
        o.acked(50, master(2), 31_700);
        let rep = o.report(31_700);
        assert_eq!(
            rep.replay.map(|r| (r.from, r.to, r.done)),
            Some((0, 100, 50))
        );
        assert!(matches!(
            o.poll(31_700),
            Some(Action::Replay { after: 50, .. })
        ));
        o.sent(100, 50, 31_700);
        o.acked(100, master(2), 31_800);
        assert_eq!(o.poll(31_900), None);
        assert_eq!(o.report(31_900).connectivity, Some(Connectivity::Live));
        assert_eq!(o.report(31_900).backlog, 0);
    }

    #[test]
    fn acknowledgements_of_an_older_term_are_ignored() {
        let mut o = Origin::new(Config::default(), 0, 0);
        o.published(10, 0);
        assert_eq!(o.acked(5, master(3), 0), Some(5));
        assert_eq!(o.acked(10, master(2), 0), None);
        assert_eq!(o.report(0).acked, 5);
        // A new master with a lower mark: replay from its mark, compaction stays.
        assert_eq!(o.acked(3, master(4), 0), None);
        assert_eq!(o.report(0).acked, 3);
    }

    #[test]
    fn after_a_restart_the_gap_is_replayed_over_at_once() {
        let c = Config::default();
        // Journaled up to 30 before the crash; the reservation went up to 1024.
        let mut o = Origin::new(c.clone(), 30, 0);
        o.unused(31, 1024);
        o.links(up(), 0);
        assert_eq!(o.poll(100), None, "no master heard yet");
        o.published(1025, 200);
        o.published(1030, 300);
        // The master has everything before the crash and holds 1025.. above the gap.
        o.acked(30, master(1), 400);
        assert_eq!(
            o.poll(500),
            Some(Action::Replay {
                after: 30,
                to: node::Id::from("m")
            }),
            "not {} ms later",
            c.replay_after_ms
        );
        o.sent(1030, 6, 500);
        o.acked(1030, master(1), 600);
        // Past the gap: later losses wait as usual.
        o.published(1040, 700);
        o.acked(1030, master(1), 800);
        assert_eq!(o.poll(900), None);
        assert!(o.poll(700 + c.replay_after_ms).is_some());
    }

    #[test]
    fn nothing_held_is_compacted_until_saved() {
        let mut o = Origin::new(Config::default(), 0, 0);
        o.published(10, 0);
        o.hold(Source::Files);
        o.published(20, 0);
        o.hold(Source::Files);
        assert_eq!(o.acked(20, master(1), 0), Some(10), "held above 10");
        assert_eq!(o.acked(20, master(1), 0), None);
        // Saved as of 15, with later changes pending: the hold moves up to 15.
        assert_eq!(o.saved(Source::Files, 15, true), Some(15));
        assert_eq!(o.saved(Source::Files, 20, false), Some(20));
        assert_eq!(o.saved(Source::Files, 20, false), None);
        o.hold(Source::Files);
        o.published(30, 0);
        assert_eq!(o.acked(30, master(1), 0), None, "held at 20");
        assert_eq!(o.saved(Source::Files, 30, false), Some(30));
    }

    /// Each detector holds the journal on its own: one saving does not release what the
    /// other's saved state does not reflect yet.
    #[test]
    fn each_source_holds_the_journal_until_its_own_save() {
        let mut o = Origin::new(Config::default(), 0, 0);
        o.published(10, 0);
        o.hold(Source::Files);
        o.published(15, 0);
        o.hold(Source::Accounts);
        o.published(20, 0);
        assert_eq!(o.acked(20, master(1), 0), Some(10), "the lower hold counts");
        assert_eq!(
            o.saved(Source::Files, 20, false),
            Some(15),
            "accounts still hold"
        );
        // A save of a source that holds nothing changes nothing.
        assert_eq!(o.saved(Source::Files, 20, false), None);
        assert_eq!(o.saved(Source::Accounts, 18, true), Some(18));
        assert_eq!(o.saved(Source::Accounts, 20, false), Some(20));
    }

    /// After a restart the saved states reflect the journal up to where they were saved:
    /// what is above stays until each source saves again, and a hold taken later (a
    /// change) does not raise it.
    #[test]
    fn a_loaded_state_holds_the_journal_above_its_saved_number() {
        let mut o = Origin::new(Config::default(), 40, 0);
        o.loaded(Source::Files, 35);
        o.loaded(Source::Accounts, 30);
        o.loaded(Source::Accounts, 32);
        o.hold(Source::Accounts);
        o.published(45, 0);
        assert_eq!(o.acked(45, master(1), 0), Some(30));
        assert_eq!(o.saved(Source::Accounts, 45, false), Some(35));
        assert_eq!(o.saved(Source::Files, 41, true), Some(41));
        assert_eq!(o.saved(Source::Files, 45, false), Some(45));
    }

    #[test]
    fn an_ack_above_what_was_journaled_is_capped() {
        let mut o = Origin::new(Config::default(), 0, 0);
        o.published(4, 0);
        assert_eq!(o.acked(99, master(1), 0), Some(4));
    }

    #[test]
    fn the_master_view_combines_liveness_report_and_mark() {
        use crate::membership::Status as L;
        let behind = Report {
            connectivity: Some(Connectivity::Live),
            last_seq: 100,
            acked: 10,
            backlog: 90,
            oldest_unacked_ms: Some(30_000),
            replay: None,
            since_unix_ms: None,
        };
        assert_eq!(as_master_sees(L::Dead, None, 0), Connectivity::Disconnected);
        assert_eq!(as_master_sees(L::Suspect, None, 0), Connectivity::Delayed);
        assert_eq!(
            as_master_sees(L::Alive, Some(&behind), 10),
            Connectivity::EdgeCached
        );
        assert_eq!(
            as_master_sees(L::Alive, Some(&behind), 100),
            Connectivity::Live
        );
    }
}
