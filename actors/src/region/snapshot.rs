//! Snapshots of the region's applied log: what one carries ([`Image`]), how it is
//! bounded and checked, and the Raft storage that serves it to lagging members.
//!
//! raft-rs's `MemStorage` keeps the log, its compaction point and the metadata of the
//! last installed snapshot, but no snapshot data (its `snapshot()` answers an empty one
//! at the commit index). [`Store`] wraps it and answers the last snapshot this member
//! took or installed instead, data and all. When to take one, and what to do with one
//! that arrives, is decided by [`super::Region`]; this module decides nothing.

use raft::eraftpb::{ConfState, Entry, Snapshot as RaftSnapshot};
use raft::storage::{MemStorage, MemStorageCore};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use serde::{Deserialize, Serialize};

use super::{Error, Membership, RegionState};
use crate::fleet::Approval;

/// Upper bound on a snapshot's data, in bytes: one snapshot travels in one consensus
/// message, which must fit in one frame ([`crate::wire::MAX_FRAME`]) with its envelope
/// and membership. A larger image is not taken (the log is kept instead), and a larger
/// snapshot from the network is refused.
pub const MAX_SNAPSHOT_BYTES: usize = crate::wire::MAX_FRAME * 3 / 4;

/// The region's applied state at one log index, in full: what a snapshot carries, and
/// everything the commands up to that index produced. Whoever rebuilds from it must
/// not expect those commands one by one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The state; `state.applied` is the snapshot's index.
    pub state: RegionState,
    /// Every approval committed, in full (the state keeps their ids only), in commit
    /// order, the latest one per id.
    pub approvals: Vec<Approval>,
}

impl Image {
    /// The image's bytes, or `None` if they would exceed [`MAX_SNAPSHOT_BYTES`].
    pub(super) fn encode(&self) -> Option<Vec<u8>> {
        rmp_serde::to_vec(self)
            .ok()
            .filter(|b| b.len() <= MAX_SNAPSHOT_BYTES)
    }

    /// Reads an image from a snapshot's data, bounded and checked against its index.
    pub(super) fn decode(bytes: &[u8], index: u64) -> Result<Image, &'static str> {
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err("snapshot data exceeds the size bound");
        }
        let image: Image =
            rmp_serde::from_slice(bytes).map_err(|_| "snapshot data does not decode")?;
        if image.state.applied != index {
            return Err("snapshot data is not the state at the snapshot's index");
        }
        Ok(image)
    }
}

/// A snapshot as stored: its position, the membership as of its index, and the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Index of the last log entry it reflects.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The configuration as of `index`.
    pub membership: Membership,
    /// The applied state at `index`.
    pub image: Image,
}

impl Snapshot {
    /// The Raft form, or `None` if the image exceeds [`MAX_SNAPSHOT_BYTES`].
    pub(super) fn to_raft(&self) -> Option<RaftSnapshot> {
        let mut s = RaftSnapshot {
            data: self.image.encode()?.into(),
            ..RaftSnapshot::default()
        };
        let meta = s.mut_metadata();
        meta.index = self.index;
        meta.term = self.term;
        meta.set_conf_state(self.membership.to_conf());
        Some(s)
    }
}

/// Why a configuration carried by a snapshot cannot be restored, or `None` if it can.
/// Raft aborts on a configuration it cannot restore, so every rule it relies on is
/// checked here first.
pub(super) fn refuse_conf(cs: &ConfState) -> Option<&'static str> {
    let distinct = |ids: &[u64]| {
        let mut v = ids.to_vec();
        v.sort_unstable();
        v.dedup();
        v.len() == ids.len() && !ids.contains(&0)
    };
    if cs.voters.is_empty() {
        return Some("snapshot configuration has no voters");
    }
    if !distinct(&cs.voters)
        || !distinct(&cs.learners)
        || !distinct(&cs.voters_outgoing)
        || !distinct(&cs.learners_next)
    {
        return Some("snapshot configuration repeats a member or names member 0");
    }
    let voter = |id: &u64| cs.voters.contains(id) || cs.voters_outgoing.contains(id);
    if cs.learners.iter().any(voter) {
        return Some("snapshot configuration has a member both voter and learner");
    }
    if cs
        .learners_next
        .iter()
        .any(|id| !cs.voters_outgoing.contains(id) || cs.voters.contains(id))
    {
        return Some("snapshot configuration demotes a member that is not leaving");
    }
    if cs.auto_leave && cs.voters_outgoing.is_empty() {
        return Some("snapshot configuration leaves a joint change that is not there");
    }
    let size = cs.voters.len() + cs.learners.len() + cs.voters_outgoing.len();
    if size > 4096 {
        return Some("snapshot configuration is implausibly large");
    }
    None
}

/// The Raft log storage: raft-rs's `MemStorage`, plus the last snapshot this member
/// took or installed, which it hands to the core when a member needs entries that were
/// compacted away.
pub(super) struct Store {
    mem: MemStorage,
    snapshot: Option<RaftSnapshot>,
    /// The log's first and last index, kept by [`Store::write`]: the consensus library
    /// asks for them several times per step, and each answer from the in-memory log
    /// takes its lock.
    first: u64,
    last: u64,
}

impl Store {
    pub(super) fn new(mem: MemStorage) -> Self {
        let mut store = Store {
            mem,
            snapshot: None,
            first: 0,
            last: 0,
        };
        store.write(|_| ());
        store
    }

    /// Changes the in-memory log; the only way to (so that its bounds stay known).
    pub(super) fn write<R>(&mut self, change: impl FnOnce(&mut MemStorageCore) -> R) -> R {
        let r = change(&mut self.mem.wl());
        // The in-memory log always answers these.
        self.first = self.mem.first_index().unwrap_or(1);
        self.last = self.mem.last_index().unwrap_or(0);
        r
    }

    /// Keeps `snapshot` to serve (it must be the newest).
    pub(super) fn keep(&mut self, snapshot: RaftSnapshot) {
        self.snapshot = Some(snapshot);
    }

    /// Index of the snapshot kept (0: none).
    pub(super) fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.get_metadata().index)
    }

    /// Adopts a snapshot from the master: the log restarts after it.
    pub(super) fn install(&mut self, snapshot: &RaftSnapshot) -> Result<(), Error> {
        self.write(|core| core.apply_snapshot(snapshot.clone()))?;
        self.snapshot = Some(snapshot.clone());
        Ok(())
    }
}

impl Storage for Store {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<RaftSnapshot> {
        match &self.snapshot {
            Some(s) if s.get_metadata().index >= request_index => Ok(s.clone()),
            // Nothing to send yet; the core tries again later.
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}
