//! What a region member must keep on disk, in a serde form the runtime can write.
//!
//! [`Persist`] is the delta one [`super::Output`] asks to make durable; [`Durable`] is
//! the folded image that [`super::Region::restore`] takes back after a restart. The
//! runtime may write each `Persist` to an append-only file and fold them on start-up
//! with [`Durable::apply`]: folding deltas in order gives the same image as holding it
//! in memory. A delta with a [`Snapshot`] compacts: the entries it covers are dropped,
//! so the image stays about as small as the snapshot plus the log after it.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use serde::{Deserialize, Serialize};

use super::Error;
use super::snapshot::Snapshot;

/// The vote and commit position that must survive a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The latest term this member has seen.
    pub term: u64,
    /// Whom this member voted for in `term` (0: nobody).
    pub voted_for: u64,
    /// The highest log index known to be committed.
    pub commit: u64,
}

/// How a log entry is interpreted when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A [`super::Command`] (or an empty entry a new master appends to claim its term).
    Command,
    /// A single membership change.
    Membership,
    /// A membership change in the joint form (also used to leave a joint configuration).
    MembershipJoint,
}

/// One entry of the region's replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log, from 1.
    pub index: u64,
    /// Term of the master that appended it.
    pub term: u64,
    /// How `data` is read.
    pub kind: EntryKind,
    /// The encoded command or membership change (empty for a term's opening entry).
    pub data: Vec<u8>,
    /// Opaque proposer context (unused by fleetmesh, kept for fidelity).
    pub context: Vec<u8>,
}

/// Who votes in the region, as of the membership change at `index`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members whose votes count.
    pub voters: Vec<u64>,
    /// Members that replicate the log without voting.
    pub learners: Vec<u64>,
    /// Voters of the outgoing half while a joint change is in progress.
    pub voters_outgoing: Vec<u64>,
    /// Learners that become so once a joint change is left.
    pub learners_next: Vec<u64>,
    /// Whether a joint change is left automatically once committed.
    pub auto_leave: bool,
    /// Log index of the last membership entry this reflects (0: the founding voters).
    pub index: u64,
}

/// What one [`super::Output`] asks to make durable before its messages are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persist {
    /// The new vote and commit position, if they changed.
    pub vote: Option<Vote>,
    /// New log entries. They replace every stored entry from `entries[0].index` on.
    pub entries: Vec<LogEntry>,
    /// The new membership, if a membership change was applied.
    pub membership: Option<Membership>,
    /// A snapshot this member took or installed. Folded before `entries`: stored entries
    /// up to its index are dropped, and so is every later one unless the stored entry at
    /// its index has its term (an installed snapshot replaces a log that disagrees).
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
}

impl Persist {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.vote.is_none()
            && self.entries.is_empty()
            && self.membership.is_none()
            && self.snapshot.is_none()
    }

    /// Merges a later batch of entries into this delta, with the same overwrite rule
    /// [`Durable::apply`] uses, so that applying the merged delta equals applying both.
    pub(super) fn append(&mut self, batch: Vec<LogEntry>) {
        let Some(first) = batch.first().map(|e| e.index) else {
            return;
        };
        if let Some(start) = self.entries.first().map(|e| e.index) {
            let keep = first.saturating_sub(start);
            self.entries
                .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        }
        self.entries.extend(batch);
    }
}

/// Everything a member needs to come back after a restart: the fold of every
/// [`Persist`] it produced, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durable {
    /// The latest vote and commit position.
    pub vote: Vote,
    /// The latest applied membership.
    pub membership: Membership,
    /// The log after the snapshot (from index 1 without one), contiguous.
    pub entries: Vec<LogEntry>,
    /// The founding voters of the group (the membership the log starts from).
    #[serde(default)]
    pub founders: Vec<u64>,
    /// The latest snapshot: the log up to its index, applied (none: never compacted).
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
}

impl Durable {
    /// The image after the recovery entry at `index` switched the voters to `voters`:
    /// learners and earlier voters leave the configuration (the master adds the live
    /// ones back as learners).
    pub fn recovered(&self, index: u64, voters: &[u64]) -> Durable {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        Durable {
            membership: Membership {
                voters,
                index,
                ..Membership::default()
            },
            ..self.clone()
        }
    }

    /// Writes an operator's recovery into a stopped member's image: the surviving
    /// `voters` found the region anew from this member's log, in `term` (above every
    /// term seen), and the log records it as [`super::Command::Recover`].
    pub fn recover(
        &self,
        voters: &[u64],
        term: u64,
        by: &str,
        at_unix_ms: u64,
    ) -> Result<Durable, Error> {
        if voters.is_empty() || voters.contains(&0) {
            return Err(Error::NoVoters);
        }
        if term <= self.highest_term() {
            return Err(Error::Durable(format!(
                "recovery term {term} is not above the stored term {}",
                self.highest_term()
            )));
        }
        let command = super::Command::Recover {
            voters: voters.to_vec(),
            term,
            by: by.to_string(),
            at_unix_ms,
        };
        let data = rmp_serde::to_vec(&command).map_err(|e| Error::Encode(e.to_string()))?;
        let last = self.last_index();
        let mut d = self.recovered(last, voters);
        d.vote = Vote {
            term,
            voted_for: 0,
            commit: self.vote.commit,
        };
        d.entries.push(LogEntry {
            index: last + 1,
            term,
            kind: EntryKind::Command,
            data,
            context: Vec::new(),
        });
        Ok(d)
    }

    /// Folds one delta into the image: its snapshot first, then its entries. Fails,
    /// leaving the image unchanged, if the entries would leave a gap in the log (deltas
    /// were lost or reordered).
    pub fn apply(&mut self, delta: &Persist) -> Result<(), Error> {
        let snapshot = delta
            .snapshot
            .as_ref()
            .filter(|s| s.index > self.snapshot_index());
        // Where the log ends once the snapshot is folded.
        let keeps_tail =
            snapshot.is_some_and(|s| self.entry(s.index).is_some_and(|e| e.term == s.term));
        let end = match snapshot {
            Some(s) if keeps_tail => self.last_index().max(s.index),
            Some(s) => s.index,
            None => self.last_index(),
        };
        if let Some(first) = delta.entries.first().map(|e| e.index)
            && (first == 0 || first > end + 1)
        {
            return Err(Error::Durable(format!(
                "entries start at {first} but the stored log ends at {end}"
            )));
        }
        if let Some(s) = snapshot {
            if keeps_tail {
                self.entries.retain(|e| e.index > s.index);
            } else {
                self.entries.clear();
            }
            self.snapshot = Some(s.clone());
        }
        let after = self.snapshot_index();
        let mut fresh = delta.entries.iter().filter(|e| e.index > after).peekable();
        if let Some(first) = fresh.peek().map(|e| e.index) {
            // The stored log runs contiguously from `after + 1`.
            let keep = first - after - 1;
            self.entries
                .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
            self.entries.extend(fresh.cloned());
        }
        if let Some(vote) = delta.vote {
            self.vote = vote;
        }
        if let Some(membership) = &delta.membership {
            self.membership = membership.clone();
        }
        Ok(())
    }

    /// Index of the last entry, stored or covered by the snapshot (0 if none).
    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or_else(|| self.snapshot_index(), |e| e.index)
    }

    /// Index of the snapshot's last entry (0 without a snapshot).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    /// The highest term this member has seen: its vote's, its snapshot's, its log's.
    pub fn highest_term(&self) -> u64 {
        let snapshot = self.snapshot.as_ref().map_or(0, |s| s.term);
        let log = self.entries.last().map_or(0, |e| e.term);
        self.vote.term.max(snapshot).max(log)
    }

    /// The stored entry at `index`, if the log holds it.
    fn entry(&self, index: u64) -> Option<&LogEntry> {
        let first = self.entries.first()?.index;
        let pos = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(pos)
    }

    /// Checks what `restore` relies on: a snapshot consistent with itself, a
    /// contiguous log right after it (from 1 without one) whose terms never go down nor
    /// pass the stored term, a commit position inside it, and a voter.
    pub(super) fn validate(&self) -> Result<(), Error> {
        let mut term = 0;
        let base = self.snapshot_index();
        if let Some(s) = &self.snapshot {
            if s.index == 0 || s.term == 0 || s.term > self.vote.term {
                return Err(Error::Durable(format!(
                    "snapshot at index {} has term {} (stored term {})",
                    s.index, s.term, self.vote.term
                )));
            }
            if s.image.state.applied != s.index {
                return Err(Error::Durable(format!(
                    "snapshot at index {} holds the state at {}",
                    s.index, s.image.state.applied
                )));
            }
            if let Some(why) = super::snapshot::refuse_conf(&s.membership.to_conf()) {
                return Err(Error::Durable(format!("snapshot membership: {why}")));
            }
            if self.vote.commit < s.index {
                return Err(Error::Durable(format!(
                    "commit {} is behind the snapshot ({})",
                    self.vote.commit, s.index
                )));
            }
            term = s.term;
        }
        for (pos, e) in self.entries.iter().enumerate() {
            if u64::try_from(pos)
                .ok()
                .and_then(|p| p.checked_add(base.saturating_add(1)))
                != Some(e.index)
            {
                return Err(Error::Durable(format!(
                    "log is not contiguous from {}: entry {pos} has index {}",
                    base + 1,
                    e.index
                )));
            }
            if e.term < term || e.term > self.vote.term {
                return Err(Error::Durable(format!(
                    "entry {} has term {} out of order",
                    e.index, e.term
                )));
            }
            term = e.term;
        }
        if self.vote.commit > self.last_index() {
            return Err(Error::Durable(format!(
                "commit {} is beyond the stored log ({})",
                self.vote.commit,
                self.last_index()
            )));
        }
        if self.membership.voters.is_empty() && self.membership.voters_outgoing.is_empty() {
            return Err(Error::NoVoters);
        }
        Ok(())
    }
}

impl From<&HardState> for Vote {
    fn from(hs: &HardState) -> Self {
        Vote {
            term: hs.term,
            voted_for: hs.vote,
            commit: hs.commit,
        }
    }
}

impl From<Vote> for HardState {
    fn from(v: Vote) -> Self {
        HardState {
            term: v.term,
            vote: v.voted_for,
            commit: v.commit,
            ..HardState::default()
        }
    }
}

impl From<&Entry> for LogEntry {
    fn from(e: &Entry) -> Self {
        LogEntry {
            index: e.index,
            term: e.term,
            kind: match e.get_entry_type() {
                EntryType::EntryNormal => EntryKind::Command,
                EntryType::EntryConfChange => EntryKind::Membership,
                EntryType::EntryConfChangeV2 => EntryKind::MembershipJoint,
            },
            data: e.data.to_vec(),
            context: e.context.to_vec(),
        }
    }
}

impl From<&LogEntry> for Entry {
    fn from(e: &LogEntry) -> Self {
        Entry {
            entry_type: match e.kind {
                EntryKind::Command => EntryType::EntryNormal,
                EntryKind::Membership => EntryType::EntryConfChange,
                EntryKind::MembershipJoint => EntryType::EntryConfChangeV2,
            },
            index: e.index,
            term: e.term,
            data: e.data.clone().into(),
            context: e.context.clone().into(),
            ..Entry::default()
        }
    }
}

impl Membership {
    /// The membership described by `cs`, as of the membership entry at `index`.
    pub(super) fn from_conf(cs: &ConfState, index: u64) -> Self {
        Membership {
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            voters_outgoing: cs.voters_outgoing.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
            index,
        }
    }

    pub(super) fn to_conf(&self) -> ConfState {
        ConfState {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters_outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
            ..ConfState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> LogEntry {
        LogEntry {
            index,
            term,
            kind: EntryKind::Command,
            data: vec![],
            context: vec![],
        }
    }

    #[test]
    fn folding_deltas_overwrites_conflicting_suffix_and_refuses_gaps() {
        let mut d = Durable::default();
        let p1 = Persist {
            entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)],
            ..Persist::default()
        };
        d.apply(&p1).expect("contiguous");
        let p2 = Persist {
            entries: vec![entry(2, 2)],
            ..Persist::default()
        };
        d.apply(&p2).expect("overwrite");
        assert_eq!(d.entries, vec![entry(1, 1), entry(2, 2)]);
        let gap = Persist {
            entries: vec![entry(4, 2)],
            ..Persist::default()
        };
        assert!(d.apply(&gap).is_err());
        assert_eq!(d.last_index(), 2);
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut image = super::super::Image::default();
        image.state.applied = index;
        Snapshot {
            index,
            term,
            membership: Membership {
                voters: vec![1],
                ..Membership::default()
            },
            image,
        }
    }

    #[test]
    fn a_taken_snapshot_drops_the_entries_it_covers_and_keeps_the_rest() {
        let mut d = Durable {
            vote: Vote {
                term: 2,
                voted_for: 1,
                commit: 4,
            },
            entries: (1..=5).map(|i| entry(i, 1 + i / 4)).collect(),
            ..Durable::default()
        };
        // Taken at 4 while 5 is appended; 6 comes in the same delta.
        d.apply(&Persist {
            snapshot: Some(snapshot(4, 2)),
            entries: vec![entry(5, 2), entry(6, 2)],
            ..Persist::default()
        })
        .expect("folds");
        assert_eq!(d.entries, vec![entry(5, 2), entry(6, 2)]);
        assert_eq!((d.snapshot_index(), d.last_index()), (4, 6));
        // Entries appended in the same delta before the snapshot's index are covered.
        let mut e = Durable::default();
        e.apply(&Persist {
            snapshot: Some(snapshot(3, 1)),
            entries: (1..=5).map(|i| entry(i, 1)).collect(),
            ..Persist::default()
        })
        .expect("folds");
        assert_eq!(e.entries, vec![entry(4, 1), entry(5, 1)]);
        // An older snapshot than the stored one changes nothing.
        e.apply(&Persist {
            snapshot: Some(snapshot(2, 1)),
            ..Persist::default()
        })
        .expect("folds");
        assert_eq!((e.snapshot_index(), e.entries.len()), (3, 2));
    }

    #[test]
    fn an_installed_snapshot_replaces_a_log_that_disagrees() {
        let mut d = Durable {
            entries: (1..=6).map(|i| entry(i, 1)).collect(),
            ..Durable::default()
        };
        // The master's entry at 4 has term 3: everything stored is replaced.
        d.apply(&Persist {
            snapshot: Some(snapshot(4, 3)),
            entries: vec![entry(5, 3)],
            ..Persist::default()
        })
        .expect("folds");
        assert_eq!(d.entries, vec![entry(5, 3)]);
        // Past the end of a short log: the log restarts after it.
        let mut short = Durable {
            entries: vec![entry(1, 1)],
            ..Durable::default()
        };
        short
            .apply(&Persist {
                snapshot: Some(snapshot(9, 2)),
                ..Persist::default()
            })
            .expect("folds");
        assert!(short.entries.is_empty());
        assert_eq!(short.last_index(), 9);
        let gap = Persist {
            entries: vec![entry(11, 2)],
            ..Persist::default()
        };
        assert!(short.apply(&gap).is_err());
        short
            .apply(&Persist {
                entries: vec![entry(10, 2)],
                ..Persist::default()
            })
            .expect("contiguous after the snapshot");
    }

    #[test]
    fn validate_checks_the_snapshot_against_the_log_and_the_vote() {
        let good = Durable {
            vote: Vote {
                term: 2,
                voted_for: 0,
                commit: 5,
            },
            membership: Membership {
                voters: vec![1],
                ..Membership::default()
            },
            entries: vec![entry(5, 2), entry(6, 2)],
            snapshot: Some(snapshot(4, 2)),
            ..Durable::default()
        };
        good.validate().expect("consistent");
        let mut gap = good.clone();
        gap.entries.remove(0);
        assert!(gap.validate().is_err());
        let mut behind = good.clone();
        behind.vote.commit = 3;
        assert!(behind.validate().is_err());
        let mut future = good.clone();
        future.snapshot = Some(snapshot(4, 3));
        assert!(future.validate().is_err());
        let mut wrong_state = good.clone();
        wrong_state.snapshot = Some(Snapshot {
            index: 4,
            ..snapshot(3, 2)
        });
        assert!(wrong_state.validate().is_err());
        let mut low = good.clone();
        low.entries = vec![entry(5, 1)];
        assert!(
            low.validate().is_err(),
            "entries after the snapshot below its term"
        );
        assert_eq!(good.highest_term(), 2);
    }

    #[test]
    fn recovery_of_a_compacted_image_follows_the_snapshot() {
        let d = Durable {
            vote: Vote {
                term: 2,
                voted_for: 0,
                commit: 4,
            },
            membership: Membership {
                voters: vec![1, 2, 3],
                ..Membership::default()
            },
            snapshot: Some(snapshot(4, 5)),
            ..Durable::default()
        };
        // Every term seen counts, the snapshot's too (here above the vote's).
        assert!(d.recover(&[1], 5, "op", 0).is_err());
        let r = d.recover(&[1], 6, "op", 0).expect("recovers");
        assert_eq!(r.entries.len(), 1);
        assert_eq!((r.entries[0].index, r.entries[0].term), (5, 6));
        assert_eq!(r.membership.voters, vec![1]);
    }

    #[test]
    fn merged_delta_equals_sequential_deltas() {
        let mut merged = Persist::default();
        merged.append(vec![entry(3, 1), entry(4, 1), entry(5, 1)]);
        merged.append(vec![entry(4, 2)]);
        assert_eq!(merged.entries, vec![entry(3, 1), entry(4, 2)]);
        merged.append(vec![entry(2, 3)]);
        assert_eq!(merged.entries, vec![entry(2, 3)]);
    }
}
