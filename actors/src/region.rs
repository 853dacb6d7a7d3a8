//! The regional master: consensus among a region's voters, as a sans-IO state machine.
//!
//! The members of one region run Raft (the `raft` crate's `RawNode`) to agree on one
//! master per term and on an ordered log of [`Command`]s. The master is the Raft leader;
//! the log, applied in order, is the region's authoritative [`RegionState`]. Pre-vote and
//! check-quorum are always on: a member cut off with a minority cannot disturb the
//! majority when it returns, and a master that loses its quorum steps down within one
//! election timeout, after which its side of the partition is [`Status::autonomous`].
//!
//! This module owns no clock, thread, socket or disk. The runtime calls [`Region::tick`]
//! at a fixed interval (the election timeout is `election_ticks` of those intervals,
//! jittered up to twice that), feeds it the bytes peers send with [`Region::step`], and
//! after each input drains [`Region::poll`]: first it makes [`Output::persist`] durable,
//! then it sends [`Output::messages`], then it acts on [`Output::committed`].
//! Election jitter comes from a generator seeded by [`Config::seed`] and the member's id,
//! so a run is reproducible from its inputs.
//!
//! The log is compacted. Once the applied log holds more than
//! [`Config::snapshot_entries`] entries, the member takes a snapshot of its applied state
//! ([`Image`]: everything the commands up to that index produced) and drops the log up
//! to it, keeping the last [`Config::snapshot_tail`] entries so that a member slightly
//! behind still catches up from the log. A member further behind (cut off, or down while
//! the log moved on) receives the master's snapshot instead, checked before it is
//! installed ([`MAX_SNAPSHOT_BYTES`] bounds it). A snapshot taken or installed is part
//! of [`Output::persist`]; after a restart the member starts from it and applies the log
//! after it. Every member compacts on its own, from its own applied state. An image
//! larger than [`MAX_SNAPSHOT_BYTES`] is not taken (the log is kept and the attempt is
//! counted in [`Region::oversized`]).

mod check;
mod durable;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, Snapshot as RaftSnapshot,
};
use raft::storage::MemStorage;
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole, Storage as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::node;

pub use durable::{Durable, EntryKind, LogEntry, Membership, Persist, Vote};
pub use snapshot::{Image, MAX_SNAPSHOT_BYTES, Snapshot};

use snapshot::Store;

/// Upper bound on one append message's entries, in bytes (one larger entry still goes alone).
const MAX_MSG_BYTES: u64 = 64 * 1024;
/// A master refuses new commands while this many bytes are proposed but not committed,
/// so a master that lost its quorum does not grow its log without bound.
const MAX_UNCOMMITTED_BYTES: u64 = 1024 * 1024;
/// Append messages in flight to one member before the master waits for acknowledgements.
const MAX_INFLIGHT: usize = 64;

/// The Raft id of a member: the first 8 bytes (big-endian) of sha256 of its peer id.
/// Raft reserves 0 for "nobody", so a digest starting with eight zero bytes maps to 1.
pub fn raft_id(peer: &node::Id) -> u64 {
    let digest = Sha256::digest(peer.as_str().as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    match u64::from_be_bytes(head) {
        0 => 1,
        id => id,
    }
}

/// Consensus timing, in ticks of the runtime's fixed interval.
#[derive(Debug, Clone)]
pub struct Config {
    /// Ticks without hearing from a master before a follower campaigns; the actual
    /// timeout is drawn from `[election_ticks, 2 * election_ticks)`. Also the window in
    /// which a master must hear from a quorum to stay master.
    pub election_ticks: usize,
    /// Ticks between a master's heartbeats; must be less than `election_ticks`.
    pub heartbeat_ticks: usize,
    /// Seeds the election jitter (mixed with the member's id).
    pub seed: u64,
    /// A snapshot is taken once the applied log holds more than this many entries.
    pub snapshot_entries: u64,
    /// Applied entries kept in the log after a snapshot (fewer than `snapshot_entries`),
    /// so that a member slightly behind catches up from the log rather than a snapshot.
    pub snapshot_tail: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_ticks: 10,
            heartbeat_ticks: 2,
            seed: 0,
            snapshot_entries: 1_000,
            snapshot_tail: 100,
        }
    }
}

/// A decision replicated through the region's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The master declared `peer` dead in its incarnation `incarnation`.
    DeclareDead { peer: node::Id, incarnation: u64 },
    /// `peer` joined, or came back as incarnation `incarnation`.
    Alive { peer: node::Id, incarnation: u64 },
    /// Work item `item` is now owned by `owner`.
    Assign { item: String, owner: node::Id },
    /// Work item `item` is no longer needed (an audit of a member gone for good).
    Unassign { item: String },
    /// The master approved a pattern ([`crate::fleet`]): the region's learned knowledge.
    Approve(Box<crate::fleet::Approval>),
    /// `name` belongs to `peer` (the first binding of a name holds; a later claimant
    /// is refused).
    Name { name: String, peer: node::Id },
    /// An operator recovered the region after a majority of its voters was lost for
    /// good: from this entry on, `voters` (Raft ids) are the voters, in `term` and
    /// later. Written offline by `fleetmesh region recover` on the surviving member with
    /// the longest log; every member that applies it switches to the new voters.
    Recover {
        voters: Vec<u64>,
        term: u64,
        by: String,
        at_unix_ms: u64,
    },
    /// An alert silence set or changed (an expiry is a change of its end), by an
    /// operator on any member: replayed into every member's alert lifecycle.
    Silence(Box<crate::alerting::Silence>),
    /// An operator acknowledged alert `id` (an episode id, the same on every member).
    Ack {
        id: String,
        ack: crate::alerting::Ack,
    },
    /// An operator marked alert `id` resolved (applied by the members' alert lifecycles,
    /// not kept in the state).
    Resolve { id: String, at_unix_ms: u64 },
    /// An operator moved member `peer` (named `name`) to lifecycle `phase`.
    Phase(Box<PhaseRecord>),
    /// The next link of the region's voters of record ([`crate::trust`]): a founding or
    /// a change, proposed by the master, or an operator's charter (checked against the
    /// admin key by the node that took it). Applied only if it follows the chain.
    Link(Box<crate::trust::Link>),
    /// What the master's alert lifecycle notified (its notification log's changes): a
    /// new master tells no group again that was told as it stands.
    Notified(Vec<crate::alerting::nlog::Record>),
    /// An alert the master raised about the region itself ([`crate::alert::REGION_ACTIONS`]),
    /// as raised (again): every member keeps it, so the next master holds it.
    RegionAlert(Box<crate::alert::Alert>),
    /// The master resolved the region alert of `key` (its condition cleared).
    RegionAlertCleared { key: String },
}

/// A member's lifecycle phase. Transitions: provisioning → active ↔ maintenance →
/// decommissioning, the last final ([`Phase::check`]). A member with no phase recorded
/// is active.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Provisioning,
    #[default]
    Active,
    /// Its alerts are downgraded to info.
    Maintenance,
    /// Out of assignments and voter candidacy; its death raises no alert.
    Decommissioning,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Provisioning,
        Phase::Active,
        Phase::Maintenance,
        Phase::Decommissioning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provisioning => "provisioning",
            Phase::Active => "active",
            Phase::Maintenance => "maintenance",
            Phase::Decommissioning => "decommissioning",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Whether a member whose recorded phase is `from` (`None`: never set, so active and
    /// still free to be marked provisioning) may move to `to`; the error says why not.
    pub fn check(from: Option<Phase>, to: Phase) -> Result<(), String> {
        use Phase::*;
        let ok = matches!(
            (from, to),
            (None, Provisioning | Maintenance)
                | (Some(Provisioning), Active)
                | (Some(Active), Maintenance)
                | (Some(Maintenance), Active | Decommissioning)
        );
        if ok {
            return Ok(());
        }
        let current = from.unwrap_or_default();
        Err(if current == Decommissioning {
            "decommissioning is final".to_string()
        } else if current == to {
            format!("already {}", to.as_str())
        } else {
            format!(
                "{} cannot go to {}: phases go provisioning -> active <-> maintenance -> decommissioning",
                current.as_str(),
                to.as_str()
            )
        })
    }
}

/// A lifecycle phase as the log recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub peer: node::Id,
    pub name: String,
    pub phase: Phase,
    /// The operator who set it.
    pub by: String,
    pub at_unix_ms: u64,
}

/// An operator's alert-lifecycle action, which any member hands to the master to
/// commit ([`crate::wire::Request::Operator`]): only these commands may come from a member
/// that is not the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    Silence(Box<crate::alerting::Silence>),
    Ack {
        id: String,
        ack: crate::alerting::Ack,
    },
    Resolve {
        id: String,
        at_unix_ms: u64,
    },
    Phase(Box<PhaseRecord>),
    /// A charter signed with the fleet admin key: the region's voters of record.
    Charter(Box<crate::trust::Charter>),
}

impl Operator {
    /// The command that commits it.
    pub fn command(self) -> Command {
        match self {
            Operator::Silence(s) => Command::Silence(s),
            Operator::Ack { id, ack } => Command::Ack { id, ack },
            Operator::Resolve { id, at_unix_ms } => Command::Resolve { id, at_unix_ms },
            Operator::Phase(p) => Command::Phase(p),
            Operator::Charter(c) => Command::Link(Box::new(crate::trust::Link::chartered(*c))),
        }
    }
}

/// Silences and acknowledgements the region state keeps at most (the state travels in
/// one snapshot); beyond, or beyond [`MAX_ALERTING_BYTES`], those that end first are
/// forgotten: expired silences and timed-out acknowledgements go before any in force.
pub const MAX_SILENCES: usize = 64;
pub const MAX_ACKS: usize = 64;
/// Bytes the silences and acknowledgements take in a snapshot, together, at most.
pub const MAX_ALERTING_BYTES: usize = 16 * 1024;
/// Notification log entries and region alerts the state keeps at most, and the bytes
/// they take together: beyond, the oldest are forgotten (a group whose entry is
/// forgotten may be told once more by a new master; a region alert forgotten is not
/// held by the next one).
pub const MAX_NOTIFIED: usize = 64;
pub const MAX_REGION_ALERTS: usize = 32;
pub const MAX_NOTIFIED_BYTES: usize = 16 * 1024;

/// A command the region committed, with its log position and the master's term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Log index; strictly increasing. After [`Region::restore`] the log after the
    /// snapshot is applied again, so the runtime sees commands it saw before the restart;
    /// commands a snapshot covers never come one by one (see [`Output::installed`]).
    pub index: u64,
    /// Term of the master that proposed it (the fencing token for acting on it).
    pub term: u64,
    /// The decision itself.
    pub command: Command,
}

/// The region's authoritative state: the committed commands applied in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    /// Members declared dead, with the incarnation that died.
    pub dead: BTreeMap<node::Id, u64>,
    /// Members known alive, with their current incarnation.
    pub alive: BTreeMap<node::Id, u64>,
    /// Owner of each work item.
    pub assignments: BTreeMap<String, node::Id>,
    /// Index of the last applied log entry.
    pub applied: u64,
    /// Ids of the patterns approved in the region's log.
    #[serde(default)]
    pub approvals: BTreeSet<String>,
    /// The peer each name is bound to (first binding wins).
    #[serde(default)]
    pub names: BTreeMap<String, node::Id>,
    /// The last operator recovery the log applied.
    #[serde(default)]
    pub recovered: Option<Recovered>,
    /// Alert silences by id, as last set (at most [`MAX_SILENCES`]).
    #[serde(default)]
    pub silences: BTreeMap<String, crate::alerting::Silence>,
    /// Alert acknowledgements by alert id, the latest of each (at most [`MAX_ACKS`]).
    #[serde(default)]
    pub acks: BTreeMap<String, crate::alerting::Ack>,
    /// Members' lifecycle phases as operators set them (absent: active).
    #[serde(default)]
    pub phases: BTreeMap<node::Id, PhaseRecord>,
    /// The region's voters of record, as other regions verify them ([`crate::trust`]).
    #[serde(default)]
    pub chain: Vec<crate::trust::Link>,
    /// What the masters notified (at most [`MAX_NOTIFIED`] entries).
    #[serde(default)]
    pub notified: crate::alerting::nlog::Log,
    /// Open alerts the masters raised about the region, by key (at most
    /// [`MAX_REGION_ALERTS`]).
    #[serde(default)]
    pub region_alerts: BTreeMap<String, crate::alert::Alert>,
}

/// An operator's recovery ([`Command::Recover`]) as the log applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// Log index of the recovery.
    pub index: u64,
    /// The voters from then on (Raft ids).
    pub voters: Vec<u64>,
    pub term: u64,
    pub by: String,
    pub at_unix_ms: u64,
}

impl RegionState {
    /// Member `peer`'s lifecycle phase.
    pub fn phase(&self, peer: &node::Id) -> Phase {
        self.phases.get(peer).map_or(Phase::Active, |r| r.phase)
    }

    /// Applies the command at `index`. Incarnations only move forward: a death of an
    /// incarnation older than the live one is stale, and a dead incarnation cannot come
    /// back alive.
    fn apply(&mut self, index: u64, cmd: &Command) {
        match cmd {
            Command::DeclareDead { peer, incarnation } => {
                if self.alive.get(peer).is_some_and(|live| live > incarnation) {
                    return;
                }
                self.alive.remove(peer);
                let dead = self.dead.entry(peer.clone()).or_insert(*incarnation);
                *dead = (*dead).max(*incarnation);
            }
            Command::Alive { peer, incarnation } => {
                if self.dead.get(peer).is_some_and(|dead| dead >= incarnation) {
                    return;
                }
                self.dead.remove(peer);
                let live = self.alive.entry(peer.clone()).or_insert(*incarnation);
                *live = (*live).max(*incarnation);
            }
            Command::Assign { item, owner } => {
                self.assignments.insert(item.clone(), owner.clone());
            }
            Command::Unassign { item } => {
                self.assignments.remove(item);
            }
            Command::Approve(a) => {
                self.approvals.insert(a.id());
            }
            Command::Name { name, peer } => {
                self.names
                    .entry(name.clone())
                    .or_insert_with(|| peer.clone());
            }
            Command::Recover {
                voters,
                term,
                by,
                at_unix_ms,
            } => {
                self.recovered = Some(Recovered {
                    index,
                    voters: voters.clone(),
                    term: *term,
                    by: by.clone(),
                    at_unix_ms: *at_unix_ms,
                });
            }
            Command::Silence(silence) => {
                let newer = self
                    .silences
                    .get(&silence.id)
                    .is_none_or(|s| s.updated_at_unix_ms <= silence.updated_at_unix_ms);
                if newer {
                    self.silences
                        .insert(silence.id.clone(), (**silence).clone());
                }
                while self.silences.len() > MAX_SILENCES {
                    let first = self
                        .silences
                        .values()
                        .min_by_key(|s| (s.ends_at_unix_ms, s.id.clone()))
                        .map(|s| s.id.clone());
                    match first {
                        Some(id) => self.silences.remove(&id),
                        None => break,
                    };
                }
            }
            Command::Resolve { .. } => {}
            Command::Link(link) => {
                crate::trust::append(&mut self.chain, (**link).clone());
            }
            Command::Phase(p) => {
                // A transition the phases do not allow (two operators racing) is void.
                let from = self.phases.get(&p.peer).map(|r| r.phase);
                if Phase::check(from, p.phase).is_ok() {
                    self.phases.insert(p.peer.clone(), (**p).clone());
                }
            }
            Command::Notified(records) => {
                for r in records {
                    self.notified.apply(r.clone());
                }
                self.fit_notified();
            }
            Command::RegionAlert(alert) => {
                self.region_alerts
                    .insert(alert.key.clone(), (**alert).clone());
                self.fit_notified();
            }
            Command::RegionAlertCleared { key } => {
                self.region_alerts.remove(key);
            }
            Command::Ack { id, ack } => {
                let newer = self
                    .acks
                    .get(id)
                    .is_none_or(|a| a.at_unix_ms <= ack.at_unix_ms);
                if newer {
                    self.acks.insert(id.clone(), ack.clone());
                }
                while self.acks.len() > MAX_ACKS {
                    let first = self
                        .acks
                        .iter()
                        .min_by_key(|(id, a)| (a.until_unix_ms, (*id).clone()))
                        .map(|(id, _)| id.clone());
                    match first {
                        Some(id) => self.acks.remove(&id),
                        None => break,
                    };
                }
            }
        }
        if matches!(cmd, Command::Silence(_) | Command::Ack { .. }) {
            self.fit_alerting();
        }
    }

    /// Forgets the oldest notification log entries and region alerts until each is
    /// within its count and both within [`MAX_NOTIFIED_BYTES`].
    fn fit_notified(&mut self) {
        let size = |st: &RegionState| {
            rmp_serde::to_vec(&(&st.notified, &st.region_alerts)).map_or(usize::MAX, |b| b.len())
        };
        loop {
            let over_count = self.notified.entries.len() > MAX_NOTIFIED
                || self.region_alerts.len() > MAX_REGION_ALERTS;
            if !over_count && size(self) <= MAX_NOTIFIED_BYTES {
                break;
            }
            let entry = self
                .notified
                .entries
                .iter()
                .map(|(k, e)| (e.sent_unix_ms, k.clone()))
                .min();
            let alert = self
                .region_alerts
                .values()
                .map(|a| (a.at_unix_ms, a.key.clone()))
                .min();
            let alerts_first = self.region_alerts.len() > MAX_REGION_ALERTS
                || (self.notified.entries.len() <= MAX_NOTIFIED
                    && matches!((&entry, &alert), (Some(e), Some(a)) if a < e));
            match (entry, alert) {
                (_, Some(a)) if alerts_first => self.region_alerts.remove(&a.1).map(|_| ()),
                (Some(e), _) => self.notified.entries.remove(&e.1).map(|_| ()),
                (None, Some(a)) => self.region_alerts.remove(&a.1).map(|_| ()),
                (None, None) => break,
            };
        }
    }

    /// Forgets what ends first (a silence or an acknowledgement) until both fit
    /// [`MAX_ALERTING_BYTES`].
    fn fit_alerting(&mut self) {
        let size = |st: &RegionState| {
            rmp_serde::to_vec(&(&st.silences, &st.acks)).map_or(usize::MAX, |b| b.len())
        };
        while size(self) > MAX_ALERTING_BYTES {
            let silence = self
                .silences
                .values()
                .map(|s| (s.ends_at_unix_ms, s.id.clone()))
                .min();
            let ack = self
                .acks
                .iter()
                .map(|(id, a)| (a.until_unix_ms, id.clone()))
                .min();
            match (silence, ack) {
                (Some(s), Some(a)) if a < s => self.acks.remove(&a.1).map(|_| ()),
                (Some(s), _) => self.silences.remove(&s.1).map(|_| ()),
                (None, Some(a)) => self.acks.remove(&a.1).map(|_| ()),
                (None, None) => break,
            };
        }
    }
}

/// Work for the runtime after an input, in this order: make `persist` durable, send
/// `messages`, act on `committed`.
#[derive(Debug, Default)]
pub struct Output {
    /// Must be durable (folded into the member's [`Durable`]) before any of `messages`
    /// is sent: it holds the votes and log entries the messages vouch for.
    pub persist: Option<Persist>,
    /// Protobuf-encoded Raft messages, each with the Raft id of its recipient.
    pub messages: Vec<(u64, Vec<u8>)>,
    /// The state jumped to this image (restored from a snapshot, or the master's
    /// snapshot installed): the commands up to `state.applied` do not come one by one.
    /// Comes before `committed`, which continue after it.
    pub installed: Option<Box<Image>>,
    /// Commands newly committed and applied to [`Region::state`], in log order.
    pub committed: Vec<Committed>,
}

/// A member's part in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The region's master for the current term.
    Leader,
    /// Follows the master it knows of, or waits for one.
    Follower,
    /// Campaigning for a term it has already started.
    Candidate,
    /// Asking whether it could win before starting a term (pre-vote).
    PreCandidate,
}

/// A snapshot of a member's view of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This member's Raft id.
    pub id: u64,
    /// The latest term this member has seen.
    pub term: u64,
    /// Its part in the election of that term.
    pub role: Role,
    /// The master this member follows (itself when it is master), if it knows one.
    pub leader: Option<u64>,
    /// Voting members, sorted.
    pub voters: Vec<u64>,
    /// Members that replicate the log without voting, sorted.
    pub learners: Vec<u64>,
    /// Highest log index known committed.
    pub commit: u64,
    /// Index of the latest snapshot this member took or installed (0: none).
    pub snapshot: u64,
    /// Entries in its log after the compaction point.
    pub log_entries: u64,
}

impl Status {
    /// No master known: the member acts alone (detects, judges with local policy,
    /// journals) and reports itself autonomous.
    pub fn autonomous(&self) -> bool {
        self.leader.is_none()
    }
}

/// What went wrong; the member's state is unchanged unless a variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not the region master (known master: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("invalid region consensus settings: {0}")]
    Config(String),
    #[error("a region needs at least one voter and member ids must not be 0")]
    NoVoters,
    #[error("consensus message could not be decoded: {0}")]
    Decode(String),
    #[error("consensus message from {from} refused: {reason}")]
    Refused { from: u64, reason: &'static str },
    #[error("command could not be encoded: {0}")]
    Encode(String),
    #[error(
        "the master is not accepting commands right now (handing over or too many uncommitted)"
    )]
    Dropped,
    #[error("a membership change is still being committed; retry after it is applied")]
    ChangePending,
    #[error("member {0} is already a voter")]
    AlreadyVoter(u64),
    #[error("member {0} is already a learner")]
    AlreadyLearner(u64),
    #[error("member {0} is not in the region's configuration")]
    NotMember(u64),
    #[error("removing member {0} would leave the region without voters")]
    LastVoter(u64),
    #[error("the master cannot remove itself; remove it from another master")]
    RemoveSelf,
    #[error("durable state is inconsistent: {0}")]
    Durable(String),
    #[error("consensus core error: {0}")]
    Raft(#[from] raft::Error),
}

/// One member of a region's consensus group.
pub struct Region {
    raw: RawNode<Store>,
    state: RegionState,
    /// Approvals committed, in full, for snapshots ([`Image::approvals`]).
    approvals: Vec<crate::fleet::Approval>,
    /// Index of the last membership entry reflected in the stored membership; entries at
    /// or below it are not applied again when the log is replayed after a restart.
    membership_index: u64,
    /// Durable changes made outside `poll` (the founding membership) awaiting the next poll.
    pending: Persist,
    jitter: Jitter,
    election_ticks: usize,
    /// Committed entries that could not be decoded or applied (identical on every member).
    skipped: u64,
    /// Membership entries applied (see [`Region::membership_changes`]).
    membership_changes: u64,
    /// A recovery applied and not yet taken by the runtime: (log index, new voters).
    recovery: Option<(u64, Vec<u64>)>,
    snapshot_entries: u64,
    snapshot_tail: u64,
    /// No snapshot is attempted before this applied index (after an oversized image).
    snapshot_not_before: u64,
    /// Snapshots not taken because the image exceeded [`MAX_SNAPSHOT_BYTES`].
    oversized: u64,
    /// The image the state jumped to, for the next [`Output::installed`].
    installed: Option<Box<Image>>,
    /// Ticks since the member started.
    ticks: u64,
    /// While master: since which tick each member has been sent a snapshot that it has
    /// not acknowledged.
    snapshot_since: BTreeMap<u64, u64>,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("status", &self.status())
            .field("state", &self.state)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// A fresh member of a region founded by `voters` (Raft ids; include `id` if this
    /// member votes). Every founding member must be given the same `voters`. Use only
    /// when nothing is on disk; otherwise [`Region::restore`].
    pub fn new(id: u64, voters: &[u64], config: &Config) -> Result<Self, Error> {
        if voters.is_empty() || voters.contains(&0) {
            return Err(Error::NoVoters);
        }
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        let membership = Membership {
            voters,
            ..Membership::default()
        };
        let storage = Store::new(MemStorage::new_with_conf_state(membership.to_conf()));
        let mut region = Region::build(id, storage, 0, config)?;
        region.pending.membership = Some(membership);
        Ok(region)
    }

    /// Rebuilds a member after a restart from the fold of every [`Persist`] it produced:
    /// its state starts as the snapshot's (reported as [`Output::installed`] on the next
    /// poll), and the committed log after it is applied again on the next polls.
    pub fn restore(id: u64, durable: Durable, config: &Config) -> Result<Self, Error> {
        durable.validate()?;
        let entries: Vec<Entry> = durable.entries.iter().map(Entry::from).collect();
        let mut storage = Store::new(MemStorage::new());
        if let Some(s) = &durable.snapshot {
            let raft = s.to_raft().ok_or_else(|| {
                Error::Durable(format!(
                    "the snapshot at {} exceeds {MAX_SNAPSHOT_BYTES} bytes",
                    s.index
                ))
            })?;
            storage.install(&raft)?;
        }
        storage.write(|core| {
            core.set_hardstate(durable.vote.into());
            core.set_conf_state(durable.membership.to_conf());
            core.append(&entries)
        })?;
        let mut region = Region::build(id, storage, durable.membership.index, config)?;
        if let Some(s) = durable.snapshot {
            region.state = s.image.state.clone();
            region.approvals = s.image.approvals.clone();
            region.installed = Some(Box::new(s.image));
        }
        Ok(region)
    }

    fn build(
        id: u64,
        storage: Store,
        membership_index: u64,
        config: &Config,
    ) -> Result<Self, Error> {
        if id == 0 {
            return Err(Error::NoVoters);
        }
        if config.snapshot_entries == 0 || config.snapshot_tail >= config.snapshot_entries {
            return Err(Error::Config(format!(
                "snapshot_entries ({}) must be above 0 and above snapshot_tail ({})",
                config.snapshot_entries, config.snapshot_tail
            )));
        }
        let raft_config = raft::Config {
            id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: MAX_MSG_BYTES,
            max_inflight_msgs: MAX_INFLIGHT,
            max_uncommitted_size: MAX_UNCOMMITTED_BYTES,
            ..raft::Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage, &logger)?;
        let mut region = Region {
            raw,
            state: RegionState::default(),
            approvals: Vec::new(),
            membership_index,
            pending: Persist::default(),
            jitter: Jitter::new(config.seed, id),
            election_ticks: config.election_ticks,
            skipped: 0,
            membership_changes: 0,
            recovery: None,
            snapshot_entries: config.snapshot_entries,
            snapshot_tail: config.snapshot_tail,
            snapshot_not_before: 0,
            oversized: 0,
            installed: None,
            ticks: 0,
            snapshot_since: BTreeMap::new(),
        };
        region.rejitter();
        Ok(region)
    }

    /// Advances the member's logical clock by one interval.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        self.expire_snapshots();
        self.rejitter();
    }

    /// The network gives no receipt for a snapshot, and Raft sends nothing more to a
    /// member it is sending one until that member answers. A snapshot not acknowledged
    /// within two election timeouts is reported failed, so that Raft probes the member
    /// again (and sends a snapshot again if it still needs one).
    fn expire_snapshots(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            self.snapshot_since.clear();
            return;
        }
        let sending: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(_, pr)| pr.state == ProgressState::Snapshot)
            .map(|(id, _)| *id)
            .collect();
        self.snapshot_since.retain(|id, _| sending.contains(id));
        let limit = 2 * u64::try_from(self.election_ticks).unwrap_or(u64::MAX / 4);
        for id in sending {
            let since = *self.snapshot_since.entry(id).or_insert(self.ticks);
            if self.ticks - since >= limit {
                self.raw.report_snapshot(id, SnapshotStatus::Failure);
                self.snapshot_since.remove(&id);
            }
        }
    }

    /// Hands the member a message a peer sent. Bytes that do not decode, or describe
    /// something no honest member sends, are refused with an error (count it against
    /// the sender); the member's state is unchanged then.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.step_checked(None, bytes)
    }

    /// [`Region::step`] for a message the network says member `sender` sent: a message
    /// whose author field names another member is refused (a peer could otherwise vote
    /// or append in a voter's name).
    pub fn step_from(&mut self, sender: u64, bytes: &[u8]) -> Result<(), Error> {
        self.step_checked(Some(sender), bytes)
    }

    fn step_checked(&mut self, sender: Option<u64>, bytes: &[u8]) -> Result<(), Error> {
        let m = Message::parse_from_bytes(bytes).map_err(|e| Error::Decode(e.to_string()))?;
        if let Some(sender) = sender
            && m.from != sender
        {
            return Err(Error::Refused {
                from: m.from,
                reason: "the message names another author than the peer that sent it",
            });
        }
        let raft = &self.raw.raft;
        if let Some(reason) = check::refuse(&m, raft.id, raft.term, raft.raft_log.last_index()) {
            return Err(Error::Refused {
                from: m.from,
                reason,
            });
        }
        let stepped = self.raw.step(m);
        self.rejitter();
        match stepped {
            // A late answer from a member no longer in the configuration: not an error.
            Err(raft::Error::StepPeerNotFound) => Ok(()),
            other => other.map_err(Error::from),
        }
    }

    /// Starts an election now instead of waiting for the election timeout (a region
    /// founded by this member alone need not wait to elect it).
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.raw.campaign().map_err(Error::from)
    }

    /// Appends `cmd` to the region's log. Only the master may propose; the command is
    /// decided once it comes back in [`Output::committed`] (it may never, if this master
    /// is deposed first).
    pub fn propose(&mut self, cmd: &Command) -> Result<(), Error> {
        self.require_leader()?;
        let data = rmp_serde::to_vec(cmd).map_err(|e| Error::Encode(e.to_string()))?;
        self.raw.propose(vec![], data).map_err(|e| match e {
            raft::Error::ProposalDropped => Error::Dropped,
            e => Error::Raft(e),
        })
    }

    /// Makes `id` a voter: promotes a learner, or adds a new member directly. A new
    /// voter counts toward the quorum at once, so prefer [`Region::add_learner`] first
    /// for a member that has a long log to catch up. Master only; one change at a time.
    pub fn add_voter(&mut self, id: u64) -> Result<(), Error> {
        self.require_leader()?;
        if self.members().0.contains(&id) {
            return Err(Error::AlreadyVoter(id));
        }
        self.change(ConfChangeType::AddNode, id)
    }

    /// Adds `id` as a learner: it receives the log but does not vote. Master only.
    pub fn add_learner(&mut self, id: u64) -> Result<(), Error> {
        self.require_leader()?;
        let (voters, learners) = self.members();
        if voters.contains(&id) {
            return Err(Error::AlreadyVoter(id));
        }
        if learners.contains(&id) {
            return Err(Error::AlreadyLearner(id));
        }
        self.change(ConfChangeType::AddLearnerNode, id)
    }

    /// Removes voter or learner `id` from the region (for instance a member that is
    /// dead for good). Master only, and not the master itself; one change at a time.
    pub fn remove_voter(&mut self, id: u64) -> Result<(), Error> {
        self.require_leader()?;
        if id == self.raw.raft.id {
            return Err(Error::RemoveSelf);
        }
        let (voters, learners) = self.members();
        if !voters.contains(&id) && !learners.contains(&id) {
            return Err(Error::NotMember(id));
        }
        if voters == [id] {
            return Err(Error::LastVoter(id));
        }
        self.change(ConfChangeType::RemoveNode, id)
    }

    /// Drains the work the last inputs produced. Call after every `tick`, `step`,
    /// `propose` or membership change (and after `new`/`restore`).
    pub fn poll(&mut self) -> Output {
        let mut out = Output::default();
        let mut persist = std::mem::take(&mut self.pending);
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            // A master's appends may leave before its own copy is durable (Raft allows
            // it); the runtime still persists first, which is stricter and simpler.
            encode(ready.take_messages(), &mut out.messages);
            // The master's snapshot (checked by `step`) replaces the log, and the state.
            if ready.snapshot().get_metadata().index > 0 {
                let snap = ready.snapshot().clone();
                self.install(&snap, &mut persist);
            }
            let entries = ready.take_entries();
            if !entries.is_empty() {
                self.raw
                    .mut_store()
                    .write(|core| core.append(&entries))
                    .expect("the in-memory log reports no errors (it asserts instead)");
                persist.append(entries.iter().map(LogEntry::from).collect());
            }
            if let Some(hs) = ready.hs() {
                (self.raw.mut_store()).write(|core| core.set_hardstate(hs.clone()));
                persist.vote = Some(Vote::from(hs));
            }
            encode(ready.take_persisted_messages(), &mut out.messages);
            self.apply(ready.take_committed_entries(), &mut out, &mut persist);

            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                let vote = self.raw.mut_store().write(|core| {
                    core.mut_hard_state().commit = commit;
                    Vote::from(core.hard_state())
                });
                persist.vote = Some(vote);
            }
            encode(light.take_messages(), &mut out.messages);
            self.apply(light.take_committed_entries(), &mut out, &mut persist);
            self.raw.advance_apply();
        }
        self.compact(&mut persist);
        out.installed = self.installed.take();
        self.rejitter();
        if !persist.is_empty() {
            out.persist = Some(persist);
        }
        out
    }

    /// Installs the master's snapshot: the log restarts after it, the state and the
    /// membership are the snapshot's, and so is the next durable delta.
    fn install(&mut self, snap: &RaftSnapshot, persist: &mut Persist) {
        let meta = snap.get_metadata();
        let index = meta.index;
        // Raft restored its log from the snapshot already; the storage must follow it,
        // and it only refuses a snapshot behind its own compaction point, which Raft
        // never installs (a snapshot below the commit index is ignored).
        if self.raw.mut_store().install(snap).is_err() {
            self.skipped += 1;
            return;
        }
        // `step` decoded the same bytes before the core saw them.
        let image = Image::decode(&snap.data, index).unwrap_or_else(|_| {
            self.skipped += 1;
            Image {
                state: RegionState {
                    applied: index,
                    ..self.state.clone()
                },
                approvals: self.approvals.clone(),
            }
        });
        self.state = image.state.clone();
        self.approvals = image.approvals.clone();
        self.membership_index = index;
        let membership = Membership::from_conf(meta.get_conf_state(), index);
        // Entries appended earlier in this poll were discarded with the old log.
        persist.entries.clear();
        persist.membership = Some(membership.clone());
        persist.snapshot = Some(Snapshot {
            index,
            term: meta.term,
            membership,
            image: image.clone(),
        });
        self.installed = Some(Box::new(image));
    }

    /// Takes a snapshot of the applied state and compacts the log once it holds more
    /// than `snapshot_entries` applied entries, keeping the last `snapshot_tail`.
    fn compact(&mut self, persist: &mut Persist) {
        let applied = self.state.applied;
        // A snapshot installed in this poll is the newest one already.
        if persist.snapshot.is_some() || applied < self.snapshot_not_before {
            return;
        }
        let Ok(first) = self.raw.store().first_index() else {
            return;
        };
        if applied < first || applied - first < self.snapshot_entries {
            return;
        }
        let Ok(term) = self.raw.store().term(applied) else {
            return;
        };
        let cs = self.raw.raft.prs().conf().to_conf_state();
        let snapshot = Snapshot {
            index: applied,
            term,
            membership: Membership::from_conf(&cs, self.membership_index),
            image: self.image(),
        };
        let Some(raft) = snapshot.to_raft() else {
            self.oversized += 1;
            self.snapshot_not_before = applied + self.snapshot_entries;
            return;
        };
        let store = self.raw.mut_store();
        store.keep(raft);
        let keep_from = applied.saturating_sub(self.snapshot_tail) + 1;
        if keep_from > first {
            let _ = store.write(|core| core.compact(keep_from));
        }
        persist.snapshot = Some(snapshot);
    }

    /// The applied state in full, as a snapshot carries it.
    pub fn image(&self) -> Image {
        Image {
            state: self.state.clone(),
            approvals: self.approvals.clone(),
        }
    }

    /// Entries in the in-memory log (after the compaction point, applied or not).
    pub fn log_len(&self) -> u64 {
        let store = self.raw.store();
        match (store.first_index(), store.last_index()) {
            (Ok(first), Ok(last)) => (last + 1).saturating_sub(first),
            _ => 0,
        }
    }

    /// Index of the latest snapshot this member took or installed (0: none).
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    /// Snapshots not taken because the image exceeded [`MAX_SNAPSHOT_BYTES`].
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// A recovery the log applied (its index and the new voters), for the runtime to
    /// rebuild this member with ([`Durable::recovered`] then [`Region::restore`]).
    pub fn take_recovery(&mut self) -> Option<(u64, Vec<u64>)> {
        self.recovery.take()
    }

    /// This member's current view of the election.
    pub fn status(&self) -> Status {
        let raft = &self.raw.raft;
        let (voters, learners) = self.members();
        Status {
            id: raft.id,
            term: raft.term,
            role: match raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Follower => Role::Follower,
                StateRole::Candidate => Role::Candidate,
                StateRole::PreCandidate => Role::PreCandidate,
            },
            leader: (raft.leader_id != 0).then_some(raft.leader_id),
            voters,
            learners,
            commit: raft.raft_log.committed,
            snapshot: self.snapshot_index(),
            log_entries: self.log_len(),
        }
    }

    /// The term this member leads, if it is the master: what [`Region::status`] says,
    /// without listing the members (runtimes ask at every step).
    pub fn leading(&self) -> Option<u64> {
        let raft = &self.raw.raft;
        (raft.state == StateRole::Leader).then_some(raft.term)
    }

    /// Membership entries applied so far: a runtime that must notice a change of voters
    /// or learners compares this (with [`Output::installed`], which also replaces them)
    /// instead of listing the members before and after every step.
    pub fn membership_changes(&self) -> u64 {
        self.membership_changes
    }

    /// The master this member knows (its Raft id), and the current term.
    pub fn leader(&self) -> (Option<u64>, u64) {
        let raft = &self.raw.raft;
        ((raft.leader_id != 0).then_some(raft.leader_id), raft.term)
    }

    /// The region's state as of the last applied entry.
    pub fn state(&self) -> &RegionState {
        &self.state
    }

    /// Committed entries that were skipped because they could not be decoded or applied.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn require_leader(&self) -> Result<(), Error> {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader {
            Ok(())
        } else {
            Err(Error::NotLeader {
                leader: (raft.leader_id != 0).then_some(raft.leader_id),
            })
        }
    }

    /// Sorted voters and learners of the current configuration.
    fn members(&self) -> (Vec<u64>, Vec<u64>) {
        let cs = self.raw.raft.prs().conf().to_conf_state();
        let mut voters = cs.voters;
        voters.sort_unstable();
        let mut learners = cs.learners;
        learners.sort_unstable();
        (voters, learners)
    }

    fn change(&mut self, change_type: ConfChangeType, id: u64) -> Result<(), Error> {
        if id == 0 {
            return Err(Error::NotMember(id));
        }
        // The core would silently turn a second concurrent change into a no-op.
        if self.raw.raft.has_pending_conf() {
            return Err(Error::ChangePending);
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(change_type);
        cc.node_id = id;
        self.raw
            .propose_conf_change(vec![], cc)
            .map_err(|e| match e {
                raft::Error::ProposalDropped => Error::Dropped,
                e => Error::Raft(e),
            })
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut Output, persist: &mut Persist) {
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => match rmp_serde::from_slice::<Command>(&e.data) {
                    Ok(command) => {
                        if let Command::Recover { voters, .. } = &command
                            && self.membership_due(e.index)
                        {
                            self.recovery = Some((e.index, voters.clone()));
                        }
                        if let Command::Approve(a) = &command {
                            let id = a.id();
                            self.approvals.retain(|known| known.id() != id);
                            self.approvals.push((**a).clone());
                        }
                        self.state.apply(e.index, &command);
                        out.committed.push(Committed {
                            index: e.index,
                            term: e.term,
                            command,
                        });
                    }
                    Err(_) => self.skipped += 1,
                },
                EntryType::EntryConfChange => {
                    if self.membership_due(e.index) {
                        let applied = ConfChange::parse_from_bytes(&e.data)
                            .ok()
                            .map(|cc| self.raw.apply_conf_change(&cc));
                        self.record_membership(e.index, applied, persist);
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    if self.membership_due(e.index) {
                        let applied = ConfChangeV2::parse_from_bytes(&e.data)
                            .ok()
                            .map(|cc| self.raw.apply_conf_change(&cc));
                        self.record_membership(e.index, applied, persist);
                    }
                }
            }
            self.state.applied = e.index;
        }
    }

    /// Whether the membership entry at `index` still has to be applied. When the log is
    /// replayed after a restart, the stored membership already includes the changes up
    /// to the one it was saved with.
    fn membership_due(&mut self, index: u64) -> bool {
        if index <= self.membership_index {
            return false;
        }
        self.membership_index = index;
        true
    }

    /// Stores the configuration after the membership entry at `index` was applied
    /// (`None`: it did not decode).
    fn record_membership(
        &mut self,
        index: u64,
        applied: Option<Result<raft::eraftpb::ConfState, raft::Error>>,
        persist: &mut Persist,
    ) {
        // Every member holds the same configuration when it applies this entry, so a
        // change one member rejects, every member rejects: they stay in agreement.
        if !matches!(applied, Some(Ok(_))) {
            self.skipped += 1;
        }
        self.membership_changes += 1;
        let cs = self.raw.raft.prs().conf().to_conf_state();
        (self.raw.mut_store()).write(|core| core.set_conf_state(cs.clone()));
        persist.membership = Some(Membership::from_conf(&cs, index));
    }

    /// The core draws election timeouts from an unseeded generator; replace each draw
    /// with one from ours. Every time the core restarts its election countdown it sets
    /// the elapsed count to 0 (and the countdown is only compared during a tick), so
    /// redrawing whenever it is 0 after an input covers every draw.
    fn rejitter(&mut self) {
        if self.raw.raft.election_elapsed == 0 {
            let et = self.election_ticks;
            let extra = self.jitter.below(et);
            self.raw.raft.set_randomized_election_timeout(et + extra);
        }
    }
}

/// Encodes outgoing messages. Encoding a Raft message cannot fail (no required
/// fields); were it to, dropping the message is harmless (Raft treats it as lost).
fn encode(messages: Vec<Message>, out: &mut Vec<(u64, Vec<u8>)>) {
    out.extend(
        messages
            .into_iter()
            .filter_map(|m| m.write_to_bytes().ok().map(|b| (m.to, b))),
    );
}

/// A small deterministic generator (splitmix64) for election jitter.
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64, id: u64) -> Self {
        Jitter(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// A value in `[0, n)` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        match u64::try_from(n) {
            Ok(0) | Err(_) => 0,
            Ok(n) => usize::try_from(z % n).unwrap_or(0),
        }
    }
}

/// The simulators' check that every member holds the same state at the same applied index
/// (`what` says where `state` comes from: a member's applied state, a snapshot).
#[cfg(test)]
pub(crate) fn one_state_per_index(
    states: &mut BTreeMap<u64, RegionState>,
    state: &RegionState,
    seed: u64,
    what: &str,
) {
    let seen = states.entry(state.applied).or_insert_with(|| state.clone());
    assert_eq!(
        seen, state,
        "seed {seed}: {what} differs from the state at applied index {}",
        state.applied
    );
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
