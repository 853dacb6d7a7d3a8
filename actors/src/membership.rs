//! The node's view of its peers: who exists, what they said about themselves, and how
//! alive each one looks from here.
//!
//! Peers of the node's own region are judged through an accrual detector
//! ([`crate::phi`]): `suspect` once the suspicion level passes `suspect_phi`.
//!
//! **Who judges whom.** With probes on (`Config::probe`), each member is watched by the
//! `monitors` members that follow it on the region's ring ([`ring`]): they probe it every
//! `probe` interval and judge it by its answers ([`Input::Alive`]). Everyone else judges
//! it by what its watchers say (their heartbeats list their suspicions and the deaths they
//! declared) and, as a slow fallback, by its own heartbeats, which come every
//! `interval × ⌈n / region_rate⌉` ([`crate::heartbeat`]). So what a member receives each
//! second does not grow with its region. Without probes every peer is judged by its
//! heartbeats, all of them each interval.
//!
//! A suspect becomes `dead` only when
//! - it has been silent past `dead_phi`, counting an extra `connected_grace` while its
//!   connection is still up (a stopped or starved process keeps its TCP connection; a
//!   crashed one loses it at once), and
//! - the suspicion is confirmed: another live observer of the region lists it among its
//!   own suspects, or no other observer (another watcher of it) is alive to ask.
//!
//! So one slow or paused observer cannot declare a healthy peer dead on its own. A member
//! lists only what it judged itself, never what it heard, so confirmations are never
//! echoes. Peers of other regions do not send heartbeats here (heartbeat topics are per
//! region); they are `remote`, known through a direct exchange of `Hello`s.

mod ring;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::heartbeat::{Beat, Health, Seen};
use crate::{node, phi};

/// How a peer looks from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connected or announced, but no heartbeat seen yet.
    Joining,
    Alive,
    Suspect,
    Dead,
    /// A peer of another region: known, its liveness is its own region's business.
    Remote,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Joining,
        Status::Alive,
        Status::Suspect,
        Status::Dead,
        Status::Remote,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
            Status::Remote => "remote",
        }
    }
}

/// How peers are judged.
#[derive(Debug, Clone)]
pub struct Config {
    pub interval: Duration,
    /// Lateness accepted on top of a peer's learned rhythm.
    pub acceptable_pause: Duration,
    /// Extra silence accepted while the peer's connection is still up.
    pub connected_grace: Duration,
    pub suspect_phi: f64,
    pub dead_phi: f64,
    /// A peer never heard from, and gone, is dead after this many intervals.
    pub dead_after: u32,
    /// How often a watcher probes the members it watches (zero: no probes; every peer is
    /// judged by its heartbeats).
    pub probe: Duration,
    /// How many members watch each member.
    pub monitors: usize,
    /// The view's owner runs it at least this often when well (its timer's longest
    /// sleep, plus slack): a longer gap between two runs means this node itself was
    /// stopped or starved (zero: never assumed).
    pub stall: Duration,
}

impl Config {
    /// The stall bound of an owner that wakes at least every `tick`.
    pub fn stall_after(tick: Duration, acceptable_pause: Duration) -> Duration {
        tick + acceptable_pause
    }
    fn dead(&self) -> Duration {
        self.interval * self.dead_after
    }
    fn detector(&self, every: Duration) -> phi::Detector {
        phi::Detector::new(phi::Config::new(every, self.acceptable_pause))
    }
    fn probes(&self) -> bool {
        !self.probe.is_zero() && self.monitors > 0
    }
}

/// Everything known about one peer.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: node::Id,
    pub info: Option<node::Info>,
    pub status: Status,
    pub connected: bool,
    pub addresses: Vec<String>,
    /// Highest heartbeat sequence seen in the current incarnation.
    pub last_seq: u64,
    pub heartbeats: u64,
    pub last_heartbeat: Option<Instant>,
    /// Last time anything was heard from or about this peer.
    pub last_seen: Instant,
    pub uptime_ms: u64,
    pub health: Option<Health>,
    /// Heartbeat arrivals of the current incarnation.
    pub detector: phi::Detector,
    /// The heartbeat interval it announces.
    pub every: Duration,
    /// Answers to this node's probes, while it watches the member.
    pub probe: phi::Detector,
    /// Whether this node watches it (probes it and judges it by the answers).
    pub watched: bool,
    /// Whether it ever answered a probe of this node: until it does (a node of an older
    /// version does not know probes), it is judged by its heartbeats.
    pub answered: bool,
    /// Whether its status is this node's own judgement (not what its watchers said).
    pub own: bool,
    /// The last time it was heard from itself (a heartbeat or an answer to a probe).
    pub heard: Option<Instant>,
    /// When a watcher of it last declared it dead (and said so here).
    pub reported_dead: Option<Instant>,
    /// When this node last held it dead.
    pub dead_since: Option<Instant>,
    /// The peers this member declared dead, from its latest heartbeat.
    pub dead: BTreeSet<node::Id>,
    /// Whether its latest heartbeat lists this node among those it declared dead.
    pub holds_us_dead: bool,
    /// Whether `info` names this node's region (`None`: no info yet), kept with `info`.
    in_region: Option<bool>,
    key: u64,
    /// The peers this member suspects, from its latest heartbeat.
    pub suspects: BTreeSet<node::Id>,
    /// Its acknowledgement and replay state, from its latest heartbeat.
    pub sync: Option<crate::sync::Report>,
    /// The founding voters of its region consensus, from its latest heartbeat.
    pub founders: Vec<u64>,
    /// Whether it may become a voter.
    pub eligible: bool,
    /// The founding set it proposes, from its latest heartbeat.
    pub proposal: Vec<u64>,
    /// Its `region.bootstrap_expect`, from its latest heartbeat (0: not said).
    pub expect: u32,
    /// Its heartbeats in a row that list this node among its suspects or dead.
    pub lists_us: u32,
    /// When this member was last judged.
    judged_at: Instant,
    deadline: Option<Instant>,
}

impl Member {
    /// The current suspicion level.
    pub fn phi(&self, now: Instant) -> f64 {
        self.detector.phi(now)
    }
}

/// Something that happened to the membership.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Heartbeat {
        from: node::Id,
        /// Shared: one heartbeat reaches every actor and view that takes it.
        beat: Arc<Beat>,
    },
    /// A watched member answered this node's probe.
    Alive {
        from: node::Id,
    },
    Hello {
        from: node::Id,
        info: node::Info,
    },
    Connected {
        peer: node::Id,
    },
    Disconnected {
        peer: node::Id,
    },
    Addresses {
        peer: node::Id,
        addresses: Vec<String>,
    },
}

/// What the view tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    StatusChanged {
        peer: node::Id,
        from: Status,
        to: Status,
    },
    /// A peer restarted: a heartbeat of a newer incarnation arrived.
    Restarted { peer: node::Id, incarnation: u64 },
    /// A heartbeat older than one already seen (reordered or replayed): ignored.
    Stale { peer: node::Id, seq: u64 },
    /// A peer announced new facts about itself (name, region consensus facts).
    Announced { peer: node::Id },
    /// The members this node watches changed: probe these from now on.
    Watching { peers: Vec<node::Id> },
    /// A live peer of the region now lists this node dead: tell the region at once that
    /// it lives (a heartbeat), so that nobody takes the word of one observer for it.
    Accused { by: node::Id },
}

/// Peer counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub joining: u32,
    pub alive: u32,
    pub suspect: u32,
    pub dead: u32,
    pub remote: u32,
}

impl Counts {
    pub fn get(&self, status: Status) -> u32 {
        match status {
            Status::Joining => self.joining,
            Status::Alive => self.alive,
            Status::Suspect => self.suspect,
            Status::Dead => self.dead,
            Status::Remote => self.remote,
        }
    }

    fn slot(&mut self, status: Status) -> &mut u32 {
        match status {
            Status::Joining => &mut self.joining,
            Status::Alive => &mut self.alive,
            Status::Suspect => &mut self.suspect,
            Status::Dead => &mut self.dead,
            Status::Remote => &mut self.remote,
        }
    }

    /// One member moved from `from` (`None`: new) to `to` (`None`: gone).
    fn moved(&mut self, from: Option<Status>, to: Option<Status>) {
        if let Some(f) = from {
            *self.slot(f) -= 1;
        }
        if let Some(t) = to {
            *self.slot(t) += 1;
        }
    }
}

/// Heartbeats in a row in which a live peer lists this node before it counts as holding
/// it dead: a peer that merely suspected it clears it with the next heartbeat it gets.
pub const HELD_DEAD_BEATS: u32 = 5;

/// Whether these outputs must reach the region governor at once: a death or a return
/// (failover and reassignment wait on them). Other changes (a member joining, new facts,
/// a suspicion) can wait for the owner's next tick, so that a region forming does not
/// hand the governor its whole member list once per member heard.
pub fn urgent(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::StatusChanged {
                to: Status::Dead,
                ..
            } | Output::StatusChanged {
                from: Status::Dead,
                ..
            } | Output::Restarted { .. }
        )
    })
}

/// The membership view of one node.
#[derive(Debug)]
pub struct View {
    config: Config,
    suspect: phi::Level,
    dead: phi::Level,
    own: node::Id,
    region: String,
    members: BTreeMap<node::Id, Member>,
    /// Members retired ([`View::retire`]): not listed again unless a heartbeat of theirs
    /// arrives.
    retired: BTreeSet<node::Id>,
    /// The region's ring and the members this node watches, rebuilt when the region's
    /// live membership changes.
    ring: ring::Ring,
    ring_dirty: bool,
    watching: Vec<node::Id>,
    key: u64,
    /// Each member's next deadline (see [`View::poll_timeout`]).
    deadlines: BTreeSet<(Instant, node::Id)>,
    /// The earliest of `deadlines`, kept as they change: the runtime asks for it after
    /// every input.
    earliest: Option<Instant>,
    /// When the view last ran (an input or a timeout), to notice its own stalls.
    last_run: Option<Instant>,
    /// How many members not held dead list each peer among their suspects.
    listed: BTreeMap<node::Id, u32>,
    /// Peers to judge again before returning (a lister of theirs died).
    pending: Vec<node::Id>,
    /// Members whose heartbeats list this node (see [`View::held_dead_by`]).
    listing_us: BTreeSet<node::Id>,
    /// Members suspect or dead here (see [`View::seen`]).
    doubted: BTreeSet<node::Id>,
    /// Members by status, kept as they change (asked at every heartbeat sent).
    counts: Counts,
}

impl View {
    pub fn new(config: Config, own: node::Id, region: String) -> Self {
        View {
            suspect: phi::Level::new(config.suspect_phi),
            dead: phi::Level::new(config.dead_phi),
            config,
            region,
            members: BTreeMap::new(),
            retired: BTreeSet::new(),
            ring: ring::Ring::new([(ring::key(&own), own.clone())]),
            ring_dirty: true,
            watching: Vec::new(),
            key: ring::key(&own),
            own,
            deadlines: BTreeSet::new(),
            earliest: None,
            last_run: None,
            listed: BTreeMap::new(),
            pending: Vec::new(),
            listing_us: BTreeSet::new(),
            doubted: BTreeSet::new(),
            counts: Counts::default(),
        }
    }

    /// Notices that this node was itself stopped or starved (it did not run for longer
    /// than [`Config::stall`]): every peer's silence is counted from `now` again, so
    /// that a node waking from a pause does not judge its peers on what it could not
    /// hear (the answers to probes it did not send).
    fn wake(&mut self, now: Instant) {
        let stalled = !self.config.stall.is_zero()
            && self
                .last_run
                .is_some_and(|t| now.saturating_duration_since(t) > self.config.stall);
        self.last_run = Some(now);
        if !stalled {
            return;
        }
        let mut moved = Vec::new();
        for m in self.members.values_mut() {
            m.detector.resume(now);
            m.probe.resume(now);
            moved.push(m.id.clone());
        }
        for id in moved {
            self.reschedule(&id);
        }
    }

    /// The members this node watches: probe them every [`Config::probe`].
    pub fn watching(&self) -> &[node::Id] {
        &self.watching
    }

    /// How many members the region has in this view (this node included, the dead not).
    pub fn region_size(&self) -> usize {
        self.ring.len().max(1)
    }

    /// This node's own judgements, for its heartbeats.
    pub fn seen(&self) -> Seen {
        let mut seen = Seen::default();
        for m in self.doubted.iter().filter_map(|id| self.members.get(id)) {
            if m.own && matches!(m.status, Status::Suspect | Status::Dead) {
                seen.suspects.push(m.id.clone());
                if m.status == Status::Dead {
                    seen.dead.push(m.id.clone());
                }
            }
        }
        seen
    }

    /// Forgets the members of `peers` (decommissioned ones) that have been dead and
    /// silent for `after`: they leave the view for good, unless they send a heartbeat
    /// again. Returns those forgotten.
    pub fn retire(
        &mut self,
        now: Instant,
        peers: &BTreeSet<node::Id>,
        after: Duration,
    ) -> Vec<node::Id> {
        let gone: Vec<node::Id> = self
            .members
            .values()
            .filter(|m| {
                m.status == Status::Dead
                    && peers.contains(&m.id)
                    && now.saturating_duration_since(m.last_seen) >= after
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            if let Some(m) = self.members.remove(id) {
                self.counts.moved(Some(m.status), None);
                self.set_deadline(id, m.deadline, None);
            }
            self.doubted.remove(id);
            self.listing_us.remove(id);
            self.retired.insert(id.clone());
        }
        gone
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn get(&self, id: &node::Id) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn counts(&self) -> Counts {
        #[cfg(debug_assertions)]
        {
            let mut c = Counts::default();
            for m in self.members.values() {
                c.moved(None, Some(m.status));
            }
            assert_eq!(c, self.counts, "members counted as they change");
        }
        self.counts
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        let peer = match &input {
            Input::Heartbeat { from, .. }
            | Input::Alive { from, .. }
            | Input::Hello { from, .. }
            | Input::Connected { peer: from }
            | Input::Disconnected { peer: from }
            | Input::Addresses { peer: from, .. } => from.clone(),
        };
        if peer == self.own {
            return out;
        }
        self.wake(now);
        if self.retired.contains(&peer) {
            // Only a heartbeat brings a retired member back (it runs again).
            if !matches!(input, Input::Heartbeat { .. }) {
                return out;
            }
            self.retired.remove(&peer);
        }
        let (config, counts) = (&self.config, &mut self.counts);
        let m = (self.members.entry(peer.clone())).or_insert_with(|| {
            counts.moved(None, Some(Status::Joining));
            Member::new(config, now, &peer)
        });
        // Peers whose judgement may have moved besides the sender: all of them when its
        // suspicions changed (they may confirm others'), those it newly declared dead.
        // Members whose judgement the sender's new suspicions may move.
        let mut affected: Vec<node::Id> = Vec::new();
        let mut reported: Vec<node::Id> = Vec::new();
        let region_before = m.in_region;
        // Only a peer this node holds alive is believed when it declares deaths: one
        // that was cut off (held dead or suspect here) judged from its side of the cut,
        // and what it declared there must not evict members everyone else hears.
        let believed = m.status == Status::Alive;
        let held_us_dead = m.holds_us_dead;
        match input {
            Input::Heartbeat { beat, .. } => {
                let known = m.info.as_ref().map(|i| i.incarnation);
                match known {
                    Some(inc) if beat.info.incarnation < inc => {
                        out.push(Output::Stale {
                            peer,
                            seq: beat.seq,
                        });
                        return out;
                    }
                    Some(inc) if beat.info.incarnation > inc => {
                        m.last_seq = 0;
                        m.detector = self.config.detector(m.every);
                        out.push(Output::Restarted {
                            peer: peer.clone(),
                            incarnation: beat.info.incarnation,
                        });
                    }
                    _ => {}
                }
                if m.last_heartbeat.is_some() && beat.seq <= m.last_seq {
                    out.push(Output::Stale {
                        peer,
                        seq: beat.seq,
                    });
                    return out;
                }
                let every = match beat.every_ms {
                    0 => self.config.interval,
                    ms => Duration::from_millis(ms),
                };
                if every != m.every {
                    // A new rhythm (the region grew or shrank): learnt afresh.
                    m.every = every;
                    m.detector = self.config.detector(every);
                }
                m.last_seq = beat.seq;
                m.heartbeats += 1;
                m.last_heartbeat = Some(now);
                m.heard = Some(now);
                m.detector.heartbeat(now);
                let suspects: BTreeSet<node::Id> = beat.suspects.iter().cloned().collect();
                m.lists_us = if suspects.contains(&self.own) {
                    m.lists_us.saturating_add(1)
                } else {
                    0
                };
                // Its suspicions may confirm (or no longer confirm) others': those it
                // starts or stops suspecting.
                if suspects != m.suspects {
                    affected = suspects
                        .symmetric_difference(&m.suspects)
                        .cloned()
                        .collect();
                    let old = std::mem::replace(&mut m.suspects, suspects);
                    // A dead member's list is counted once it is heard again.
                    if m.status != Status::Dead {
                        count(&mut self.listed, &old, &m.suspects);
                    }
                }
                let dead: BTreeSet<node::Id> = beat.dead.iter().cloned().collect();
                if dead != m.dead {
                    reported = dead.difference(&m.dead).cloned().collect();
                    m.holds_us_dead = dead.contains(&self.own);
                    m.dead = dead;
                }
                m.last_seen = now;
                m.uptime_ms = beat.uptime_ms;
                m.health = Some(beat.health.clone());
                if m.sync != beat.sync {
                    m.sync = beat.sync.clone();
                }
                let (founders, proposal) =
                    (m.founders != beat.founders, m.proposal != beat.proposal);
                let changed = founders
                    || proposal
                    || m.eligible != beat.eligible
                    || m.expect != beat.expect
                    || m.info.as_ref().is_none_or(|i| i.name != beat.info.name);
                // The beat is shared with the other receivers: copied only where it
                // differs from what is known (seldom).
                if founders {
                    m.founders = beat.founders.clone();
                }
                if proposal {
                    m.proposal = beat.proposal.clone();
                }
                m.eligible = beat.eligible;
                m.expect = beat.expect;
                if m.info.as_ref() != Some(&beat.info) {
                    m.set_info(beat.info.clone(), &self.region);
                }
                if changed {
                    out.push(Output::Announced { peer: peer.clone() });
                }
            }
            Input::Alive { .. } => {
                if m.watched {
                    if !m.answered {
                        m.answered = true;
                        m.probe = self.config.detector(self.config.probe);
                    }
                    m.probe.heartbeat(now);
                }
                m.heard = Some(now);
                m.last_seen = now;
            }
            Input::Hello { info, .. } => {
                let known = m.info.as_ref().map(|i| (i.incarnation, i.name.clone()));
                if known
                    .as_ref()
                    .is_none_or(|(inc, _)| *inc <= info.incarnation)
                {
                    // A restart told before its first heartbeat: that heartbeat starts
                    // the sequence over and must not be taken for a stale one.
                    if known
                        .as_ref()
                        .is_some_and(|(inc, _)| *inc < info.incarnation)
                    {
                        m.last_seq = 0;
                        m.detector = self.config.detector(m.every);
                        out.push(Output::Restarted {
                            peer: peer.clone(),
                            incarnation: info.incarnation,
                        });
                    }
                    if known.as_ref().is_some_and(|(_, name)| *name != info.name) {
                        out.push(Output::Announced { peer: peer.clone() });
                    }
                    m.set_info(info, &self.region);
                }
                m.last_seen = now;
            }
            Input::Connected { .. } => {
                m.connected = true;
                m.last_seen = now;
            }
            Input::Disconnected { .. } => {
                m.connected = false;
                m.last_seen = now;
            }
            Input::Addresses { addresses, .. } => {
                m.addresses = addresses;
            }
        }
        if m.lists_us > 0 || m.holds_us_dead {
            self.listing_us.insert(peer.clone());
        } else {
            self.listing_us.remove(&peer);
        }
        let reporter_in_region = m.in_region == Some(true);
        if region_before != m.in_region {
            let (key, on) = (m.key, m.in_ring());
            self.ring_dirty |= self.ring.set(key, &peer, on);
        }
        if reporter_in_region && !held_us_dead && m.holds_us_dead {
            out.push(Output::Accused { by: peer.clone() });
        }
        if !(reporter_in_region && believed) {
            reported.clear();
        }
        for id in &reported {
            if let Some(r) = self.members.get_mut(id) {
                r.reported_dead = Some(now);
            }
        }
        self.refresh(now, &peer, &mut out);
        for id in affected.iter().chain(&reported) {
            self.refresh(now, id, &mut out);
        }
        self.rering(now, &mut out);
        out
    }
}

impl Member {
    fn new(config: &Config, now: Instant, peer: &node::Id) -> Member {
        Member {
            id: peer.clone(),
            info: None,
            status: Status::Joining,
            connected: false,
            addresses: Vec::new(),
            last_seq: 0,
            heartbeats: 0,
            last_heartbeat: None,
            last_seen: now,
            uptime_ms: 0,
            health: None,
            detector: config.detector(config.interval),
            every: config.interval,
            probe: config.detector(config.probe),
            watched: false,
            answered: false,
            own: true,
            heard: None,
            reported_dead: None,
            dead_since: None,
            dead: BTreeSet::new(),
            holds_us_dead: false,
            in_region: None,
            key: ring::key(peer),
            suspects: BTreeSet::new(),
            sync: None,
            founders: Vec::new(),
            eligible: false,
            proposal: Vec::new(),
            expect: 0,
            lists_us: 0,
            judged_at: now,
            deadline: None,
        }
    }
}

impl View {
    /// Rebuilds the ring if the region's live membership changed, and with it the
    /// members this node watches. A member newly watched is judged by probes from now:
    /// its answer history starts at this instant.
    fn rering(&mut self, now: Instant, out: &mut Vec<Output>) {
        // Peers whose listers changed: judged again (a bounded cascade: each death
        // clears one member's list once).
        let mut rounds = 0;
        while !self.pending.is_empty() && rounds < 4 {
            rounds += 1;
            for id in std::mem::take(&mut self.pending) {
                self.refresh(now, &id, out);
            }
        }
        self.pending.clear();
        if !self.ring_dirty {
            return;
        }
        self.ring_dirty = false;
        if !self.config.probes() {
            return;
        }
        let watching = self.ring.before(self.key, &self.own, self.config.monitors);
        if watching == self.watching {
            return;
        }
        let now_watched: BTreeSet<&node::Id> = watching.iter().collect();
        let mut moved = Vec::new();
        for m in self.members.values_mut() {
            let w = now_watched.contains(&m.id);
            if w != m.watched {
                m.watched = w;
                if w {
                    m.probe = self.config.detector(self.config.probe);
                    m.probe.heartbeat(now);
                }
                moved.push(m.id.clone());
            }
        }
        self.watching = watching;
        for id in moved {
            self.refresh(now, &id, out);
        }
        out.push(Output::Watching {
            peers: self.watching.clone(),
        });
    }

    /// How many live peers hold this node dead: they declared it dead, or listed it as
    /// suspect or dead in at least `beats` heartbeats in a row although those heartbeats
    /// reach it (it was cut off and declared dead; a dead incarnation stays dead).
    pub fn held_dead_by(&self, beats: u32) -> usize {
        self.listing_us
            .iter()
            .filter_map(|id| self.members.get(id))
            .filter(|m| m.status == Status::Alive && (m.holds_us_dead || m.lists_us >= beats))
            .count()
    }

    /// The members of this node's region (other than itself) as the region governor takes
    /// them ([`crate::governor::Governor::handle_members`]).
    pub fn region_members(&self) -> Vec<crate::governor::Member> {
        self.members
            .values()
            .filter_map(|m| {
                let i = m.info.as_ref()?;
                (m.in_region == Some(true)).then(|| crate::governor::Member {
                    name: i.name.clone(),
                    role: i.role.clone(),
                    peer: m.id.clone(),
                    status: m.status,
                    incarnation: i.incarnation,
                    founders: m.founders.clone(),
                    eligible: m.eligible,
                    proposal: m.proposal.clone(),
                    expect: m.expect,
                })
            })
            .collect()
    }

    /// Forgets who listed this node (it starts a new incarnation).
    pub fn forget_listed(&mut self) {
        for id in std::mem::take(&mut self.listing_us) {
            if let Some(m) = self.members.get_mut(&id) {
                m.lists_us = 0;
                m.holds_us_dead = false;
            }
        }
    }

    /// Re-judges the peers whose deadline has come; call at [`View::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.wake(now);
        let due: Vec<node::Id> = self
            .deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect();
        for id in due {
            self.refresh(now, &id, &mut out);
        }
        self.rering(now, &mut out);
        out
    }

    /// The next instant at which some peer's status would change without new input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.earliest
    }

    fn set_deadline(&mut self, id: &node::Id, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        if let Some(t) = old {
            self.deadlines.remove(&(t, id.clone()));
        }
        if let Some(t) = new {
            self.deadlines.insert((t, id.clone()));
        }
        self.earliest = self.deadlines.first().map(|(t, _)| *t);
    }

    /// Whether `m` is judged by probes here.
    fn by_probe(&self, m: &Member) -> bool {
        self.config.probes() && m.watched && m.answered
    }

    fn next_change(&self, m: &Member) -> Option<Instant> {
        let detector = if self.by_probe(m) {
            &m.probe
        } else {
            &m.detector
        };
        let at = match m.status {
            Status::Alive => detector.reaches(self.suspect),
            Status::Suspect => {
                let grace = if m.connected {
                    self.config.connected_grace
                } else {
                    Duration::ZERO
                };
                detector.reaches(self.dead).map(|t| t + grace)
            }
            Status::Joining if !m.connected => Some(m.last_seen + self.config.dead()),
            _ => None,
        };
        // A deadline already passed without a change (an unconfirmed suspicion) waits
        // for new input instead.
        at.filter(|t| *t > m.judged_at)
    }

    /// Another live observer of the region suspects `id`, or there is no other to ask:
    /// with probes, no other live watcher of it; without, no other live member.
    fn confirmed(&self, id: &node::Id) -> bool {
        let live =
            |o: &Member| &o.id != id && o.status == Status::Alive && o.in_region == Some(true);
        if self
            .members
            .values()
            .any(|o| live(o) && o.suspects.contains(id))
        {
            return true;
        }
        if self.config.probes()
            && let Some(m) = self.members.get(id)
        {
            // Its watchers by this node's ring (where it would be if it left it).
            let watchers = self.ring.after(m.key, id, self.config.monitors);
            return !watchers
                .iter()
                .any(|w| self.members.get(w).is_some_and(&live));
        }
        !self.members.values().any(live)
    }

    /// A member's status here, and whether it is this node's own judgement.
    fn judge(&self, now: Instant, m: &Member) -> (Status, bool) {
        let Some(same_region) = m.in_region else {
            return (self.unheard(now, m), true);
        };
        if !same_region {
            return (Status::Remote, true);
        }
        let probed = self.by_probe(m);
        if m.last_heartbeat.is_none() && !(probed && m.heard.is_some()) {
            // Known (a hello, a connection) but never heard: a watcher's word counts.
            if m.reported_dead.is_some() {
                return (Status::Dead, false);
            }
            return (self.unheard(now, m), true);
        }
        // Dead stays dead until the peer is heard again.
        if m.status == Status::Dead && m.heard.is_none_or(|h| m.dead_since.is_some_and(|d| h <= d))
        {
            return (Status::Dead, m.own);
        }
        // A watcher declared it dead after it was last heard from.
        let reported = m
            .reported_dead
            .is_some_and(|r| m.heard.is_none_or(|h| r >= h));
        let detector = if probed { &m.probe } else { &m.detector };
        if detector.phi(now) < self.config.suspect_phi {
            if self.config.probes() && !probed {
                if reported {
                    return (Status::Dead, false);
                }
                // A watcher of it suspects it: shown, not repeated.
                if self.listed.get(&m.id).is_some_and(|&n| n > 0) {
                    return (Status::Suspect, false);
                }
            }
            return (Status::Alive, true);
        }
        if reported {
            return (Status::Dead, probed);
        }
        let silent = if m.connected {
            now.checked_sub(self.config.connected_grace)
                .map_or(0.0, |t| detector.phi(t))
        } else {
            detector.phi(now)
        };
        if silent >= self.config.dead_phi && self.confirmed(&m.id) {
            (Status::Dead, true)
        } else {
            (Status::Suspect, true)
        }
    }

    /// A peer that has not sent a heartbeat: joining while connected or recently heard of.
    fn unheard(&self, now: Instant, m: &Member) -> Status {
        if m.connected || now.saturating_duration_since(m.last_seen) < self.config.dead() {
            Status::Joining
        } else {
            Status::Dead
        }
    }

    fn refresh(&mut self, now: Instant, id: &node::Id, out: &mut Vec<Output>) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        let (to, own) = self.judge(now, m);
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        m.judged_at = now;
        m.own = own;
        if m.status != to {
            let ring_before = m.in_ring();
            out.push(Output::StatusChanged {
                peer: id.clone(),
                from: m.status,
                to,
            });
            let from = m.status;
            m.status = to;
            self.counts.moved(Some(from), Some(to));
            if matches!(to, Status::Suspect | Status::Dead) {
                self.doubted.insert(id.clone());
            } else {
                self.doubted.remove(id);
            }
            if to == Status::Dead {
                m.dead_since = Some(now);
            }
            // A dead member's suspicions no longer count, until it is heard again.
            if (to == Status::Dead) != (from == Status::Dead) && !m.suspects.is_empty() {
                let none = BTreeSet::new();
                if to == Status::Dead {
                    count(&mut self.listed, &m.suspects, &none);
                } else {
                    count(&mut self.listed, &none, &m.suspects);
                }
                self.pending.extend(m.suspects.iter().cloned());
            }
            if m.in_ring() != ring_before {
                let (key, on) = (m.key, m.in_ring());
                self.ring_dirty |= self.ring.set(key, id, on);
            }
        }
        self.reschedule(id);
    }

    /// Moves `id`'s deadline to when its status would next change without new input.
    fn reschedule(&mut self, id: &node::Id) {
        let Some(m) = self.members.get(id) else {
            return;
        };
        let (old, new) = (m.deadline, self.next_change(m));
        if let Some(m) = self.members.get_mut(id) {
            m.deadline = new;
        }
        self.set_deadline(id, old, new);
    }
}

/// Moves the counts of `listed` from the peers of `old` to those of `new`.
fn count(listed: &mut BTreeMap<node::Id, u32>, old: &BTreeSet<node::Id>, new: &BTreeSet<node::Id>) {
    for gone in old.difference(new) {
        if let Some(n) = listed.get_mut(gone) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                listed.remove(gone);
            }
        }
    }
    for added in new.difference(old) {
        *listed.entry(added.clone()).or_default() += 1;
    }
}

impl Member {
    /// Whether it has a place on the region's ring: of the region, not dead.
    fn set_info(&mut self, info: node::Info, region: &str) {
        self.in_region = Some(info.region == region);
        self.info = Some(info);
    }

    fn in_ring(&self) -> bool {
        self.in_region == Some(true) && !matches!(self.status, Status::Dead | Status::Remote)
    }
}

#[cfg(test)]
mod tests;
