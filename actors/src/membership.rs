//! The node's view of its peers: who exists, what they said about themselves, and how
//! alive each one looks from here.
//!
//! Peers of the node's own region are judged by their heartbeats through an accrual
//! detector ([`crate::phi`]): `suspect` once the suspicion level passes `suspect_phi`.
//! A suspect becomes `dead` only when
//! - it has been silent past `dead_phi`, counting an extra `connected_grace` while its
//!   connection is still up (a stopped or starved process keeps its TCP connection; a
//!   crashed one loses it at once), and
//! - the suspicion is confirmed: another live observer of the region lists it among its
//!   own suspects (heartbeats carry them), or no other observer is alive to ask.
//!
//! So one slow or paused observer cannot declare a healthy peer dead on its own. Peers of
//! other regions do not send heartbeats here (heartbeat topics are per region); they are
//! `remote`, known through a direct exchange of `Hello`s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::heartbeat::{Beat, Health};
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
}

impl Config {
    fn dead(&self) -> Duration {
        self.interval * self.dead_after
    }
    fn detector(&self) -> phi::Detector {
        phi::Detector::new(phi::Config::new(self.interval, self.acceptable_pause))
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
        beat: Box<Beat>,
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
}

/// Heartbeats in a row in which a live peer lists this node before it counts as holding
/// it dead: a peer that merely suspected it clears it with the next heartbeat it gets.
pub const HELD_DEAD_BEATS: u32 = 5;

/// Whether these outputs raise a new suspicion (or death) that the region should hear at
/// once, in a heartbeat out of schedule, so that other observers can confirm it without
/// waiting for the next regular one.
pub fn raises_suspicion(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::StatusChanged {
                to: Status::Dead | Status::Suspect,
                ..
            }
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
}

impl View {
    pub fn new(config: Config, own: node::Id, region: String) -> Self {
        View {
            suspect: phi::Level::new(config.suspect_phi),
            dead: phi::Level::new(config.dead_phi),
            config,
            own,
            region,
            members: BTreeMap::new(),
            retired: BTreeSet::new(),
        }
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
            self.members.remove(id);
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
        let mut c = Counts::default();
        for m in self.members.values() {
            match m.status {
                Status::Joining => c.joining += 1,
                Status::Alive => c.alive += 1,
                Status::Suspect => c.suspect += 1,
                Status::Dead => c.dead += 1,
                Status::Remote => c.remote += 1,
            }
        }
        c
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        let peer = match &input {
            Input::Heartbeat { from, .. }
            | Input::Hello { from, .. }
            | Input::Connected { peer: from }
            | Input::Disconnected { peer: from }
            | Input::Addresses { peer: from, .. } => from.clone(),
        };
        if peer == self.own {
            return out;
        }
        if self.retired.contains(&peer) {
            // Only a heartbeat brings a retired member back (it runs again).
            if !matches!(input, Input::Heartbeat { .. }) {
                return out;
            }
            self.retired.remove(&peer);
        }
        let m = self.members.entry(peer.clone()).or_insert_with(|| Member {
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
            detector: self.config.detector(),
            suspects: BTreeSet::new(),
            sync: None,
            founders: Vec::new(),
            eligible: false,
            proposal: Vec::new(),
            expect: 0,
            lists_us: 0,
            judged_at: now,
        });
        let mut everyone = false;
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
                        m.detector = self.config.detector();
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
                m.last_seq = beat.seq;
                m.heartbeats += 1;
                m.last_heartbeat = Some(now);
                m.detector.heartbeat(now);
                let suspects: BTreeSet<node::Id> = beat.suspects.iter().cloned().collect();
                m.lists_us = if suspects.contains(&self.own) {
                    m.lists_us.saturating_add(1)
                } else {
                    0
                };
                // Its suspicions may confirm (or no longer confirm) others'.
                everyone = suspects != m.suspects;
                m.suspects = suspects;
                m.last_seen = now;
                m.uptime_ms = beat.uptime_ms;
                m.health = Some(beat.health.clone());
                m.sync = beat.sync;
                let changed = m.founders != beat.founders
                    || m.eligible != beat.eligible
                    || m.proposal != beat.proposal
                    || m.expect != beat.expect
                    || m.info.as_ref().is_none_or(|i| i.name != beat.info.name);
                m.founders = beat.founders;
                m.eligible = beat.eligible;
                m.proposal = beat.proposal;
                m.expect = beat.expect;
                m.info = Some(beat.info);
                if changed {
                    out.push(Output::Announced { peer: peer.clone() });
                }
            }
            Input::Hello { info, .. } => {
                if m.info
                    .as_ref()
                    .is_none_or(|i| i.incarnation <= info.incarnation)
                {
                    m.info = Some(info);
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
        if everyone {
            let ids: Vec<node::Id> = self.members.keys().cloned().collect();
            for id in ids {
                self.refresh(now, &id, &mut out);
            }
        } else {
            self.refresh(now, &peer, &mut out);
        }
        out
    }

    /// How many live peers have listed this node as suspect or dead in at least `beats`
    /// heartbeats in a row, although those heartbeats reach it: they hold it dead (it was
    /// cut off and declared dead; a dead incarnation stays dead) or cannot hear it.
    pub fn held_dead_by(&self, beats: u32) -> usize {
        self.members
            .values()
            .filter(|m| m.status == Status::Alive && m.lists_us >= beats)
            .count()
    }

    /// The members of this node's region (other than itself) as the region governor takes
    /// them ([`crate::governor::Governor::handle_members`]).
    pub fn region_members(&self) -> Vec<crate::governor::Member> {
        self.members
            .values()
            .filter_map(|m| {
                let i = m.info.as_ref()?;
                (i.region == self.region).then(|| crate::governor::Member {
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
        for m in self.members.values_mut() {
            m.lists_us = 0;
        }
    }

    /// The region peers this node suspects or holds dead, for its heartbeats.
    pub fn suspects(&self) -> Vec<node::Id> {
        self.members
            .values()
            .filter(|m| matches!(m.status, Status::Suspect | Status::Dead))
            .map(|m| m.id.clone())
            .collect()
    }

    /// Re-judges every peer at `now`; call at [`View::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let ids: Vec<node::Id> = self.members.keys().cloned().collect();
        for id in ids {
            self.refresh(now, &id, &mut out);
        }
        out
    }

    /// The next instant at which some peer's status would change without new input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.members
            .values()
            .filter_map(|m| self.next_change(m))
            .min()
    }

    fn next_change(&self, m: &Member) -> Option<Instant> {
        let at = match m.status {
            Status::Alive => m.detector.reaches(self.suspect),
            Status::Suspect => {
                let grace = if m.connected {
                    self.config.connected_grace
                } else {
                    Duration::ZERO
                };
                m.detector.reaches(self.dead).map(|t| t + grace)
            }
            Status::Joining if !m.connected => Some(m.last_seen + self.config.dead()),
            _ => None,
        };
        // A deadline already passed without a change (an unconfirmed suspicion) waits
        // for new input instead.
        at.filter(|t| *t > m.judged_at)
    }

    /// Another live observer of the region suspects `id`, or there is no other.
    fn confirmed(&self, id: &node::Id) -> bool {
        let mut observers = self.members.values().filter(|o| {
            &o.id != id
                && o.status == Status::Alive
                && o.info.as_ref().is_some_and(|i| i.region == self.region)
        });
        let mut any = false;
        let confirmed = observers.any(|o| {
            any = true;
            o.suspects.contains(id)
        });
        confirmed || !any
    }

    fn judge(&self, now: Instant, m: &Member) -> Status {
        let same_region = match &m.info {
            Some(info) => info.region == self.region,
            None => return self.unheard(now, m),
        };
        if !same_region {
            return Status::Remote;
        }
        if m.last_heartbeat.is_none() {
            return self.unheard(now, m);
        }
        if m.detector.phi(now) < self.config.suspect_phi {
            return Status::Alive;
        }
        // Dead stays dead until the peer is heard again.
        if m.status == Status::Dead {
            return Status::Dead;
        }
        let silent = if m.connected {
            now.checked_sub(self.config.connected_grace)
                .map_or(0.0, |t| m.detector.phi(t))
        } else {
            m.detector.phi(now)
        };
        if silent >= self.config.dead_phi && self.confirmed(&m.id) {
            Status::Dead
        } else {
            Status::Suspect
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
        let to = self.judge(now, m);
        if let Some(m) = self.members.get_mut(id) {
            m.judged_at = now;
        }
        if let Some(m) = self.members.get_mut(id)
            && m.status != to
        {
            out.push(Output::StatusChanged {
                peer: id.clone(),
                from: m.status,
                to,
            });
            m.status = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn view() -> View {
        View::new(
            Config {
                interval: SEC,
                acceptable_pause: SEC / 2,
                connected_grace: 2 * SEC,
                suspect_phi: 5.0,
                dead_phi: 8.0,
                dead_after: 10,
            },
            id("me"),
            "eu".into(),
        )
    }

    fn id(s: &str) -> node::Id {
        node::Id(s.into())
    }

    fn beat_from(from: &str, incarnation: u64, seq: u64, suspects: &[&str]) -> Input {
        Input::Heartbeat {
            from: id(from),
            beat: Box::new(Beat {
                info: node::Info {
                    name: from.into(),
                    region: "eu".into(),
                    role: "web".into(),
                    incarnation,
                },
                seq,
                uptime_ms: seq * 1000,
                sent_unix_ms: 0,
                health: Health::default(),
                suspects: suspects.iter().map(|s| id(s)).collect(),
                sync: None,
                founders: vec![],
                eligible: true,
                proposal: vec![],
                expect: 0,
            }),
        }
    }

    fn beat(region: &str, incarnation: u64, seq: u64) -> Input {
        let mut b = beat_from("p", incarnation, seq, &[]);
        if let Input::Heartbeat { beat, .. } = &mut b {
            beat.info.region = region.into();
        }
        b
    }

    fn changed(out: &[Output]) -> Vec<(Status, Status)> {
        out.iter()
            .filter_map(|o| match o {
                Output::StatusChanged { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    fn status(v: &View, peer: &str) -> Option<Status> {
        v.get(&id(peer)).map(|m| m.status)
    }

    #[test]
    fn a_retired_member_leaves_the_view_until_it_beats_again() {
        let t0 = Instant::now();
        let mut v = view();
        for seq in 1..=5 {
            v.handle(t0 + SEC * (seq as u32 - 1), beat("eu", 1, seq));
        }
        let mut t = t0 + 5 * SEC;
        while status(&v, "p") != Some(Status::Dead) {
            t = v.poll_timeout().expect("a deadline");
            v.handle_timeout(t);
        }
        let peers: BTreeSet<node::Id> = [id("p")].into();
        // Not before it has been silent for `after`, and only members named.
        assert!(v.retire(t, &peers, 30 * SEC).is_empty());
        assert!(
            v.retire(t + 60 * SEC, &BTreeSet::new(), 30 * SEC)
                .is_empty()
        );
        assert_eq!(v.retire(t + 60 * SEC, &peers, 30 * SEC), [id("p")]);
        assert_eq!(status(&v, "p"), None);
        assert_eq!(v.counts().dead, 0);
        // A disconnection or an address of it does not bring it back; a heartbeat does.
        v.handle(t + 61 * SEC, Input::Disconnected { peer: id("p") });
        assert_eq!(status(&v, "p"), None);
        v.handle(t + 62 * SEC, beat("eu", 2, 1));
        assert_eq!(status(&v, "p"), Some(Status::Alive));
    }

    #[test]
    fn heartbeats_drive_alive_suspect_dead_and_back() {
        let t0 = Instant::now();
        let mut v = view();
        let out = v.handle(t0, beat("eu", 1, 1));
        assert_eq!(changed(&out), [(Status::Joining, Status::Alive)]);
        for seq in 2..=10 {
            v.handle(t0 + SEC * (seq as u32 - 1), beat("eu", 1, seq));
        }
        let last = t0 + 9 * SEC;
        let suspect_at = v.poll_timeout().expect("a deadline");
        assert!(suspect_at > last + SEC && suspect_at < last + 2 * SEC);
        assert!(changed(&v.handle_timeout(suspect_at - SEC / 10)).is_empty());
        let out = v.handle_timeout(suspect_at);
        assert_eq!(changed(&out), [(Status::Alive, Status::Suspect)]);
        assert_eq!(v.suspects(), [id("p")]);
        // Disconnected (never connected here) and alone: no other observer to ask.
        let dead_at = v.poll_timeout().expect("a deadline");
        assert!(
            dead_at < last + 3 * SEC,
            "dead {:?} after the last beat",
            dead_at - last
        );
        let out = v.handle_timeout(dead_at);
        assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
        assert_eq!(v.poll_timeout(), None);

        let out = v.handle(last + 5 * SEC, beat("eu", 1, 11));
        assert_eq!(changed(&out), [(Status::Dead, Status::Alive)]);
        assert_eq!(v.counts().alive, 1);
    }

    /// Observers a and b beat regularly; x goes quiet. Without a second observer's
    /// suspicion x stays suspect however long; once a lists it, x is dead.
    #[test]
    fn death_needs_a_second_observer() {
        let t0 = Instant::now();
        let mut v = view();
        for s in 1..=5u64 {
            let at = t0 + SEC * (s as u32 - 1);
            for p in ["a", "b", "x"] {
                v.handle(at, beat_from(p, 1, s, &[]));
            }
        }
        for s in 6..=12u64 {
            let at = t0 + SEC * (s as u32 - 1);
            v.handle(at, beat_from("a", 1, s, &[]));
            v.handle(at, beat_from("b", 1, s, &[]));
            v.handle_timeout(at);
        }
        assert_eq!(status(&v, "x"), Some(Status::Suspect), "not confirmed yet");
        assert_eq!(status(&v, "a"), Some(Status::Alive));
        let out = v.handle(t0 + 12 * SEC, beat_from("a", 1, 13, &["x"]));
        assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
    }

    /// A peer whose connection is still up (paused, starved) gets the grace before it
    /// can be dead; losing the connection ends the grace.
    #[test]
    fn a_live_connection_earns_grace() {
        let t0 = Instant::now();
        let mut v = view();
        v.handle(t0, Input::Connected { peer: id("p") });
        for seq in 1..=10 {
            v.handle(t0 + SEC * (seq as u32 - 1), beat("eu", 1, seq));
        }
        let last = t0 + 9 * SEC;
        v.handle_timeout(last + 2 * SEC);
        assert_eq!(status(&v, "p"), Some(Status::Suspect));
        // A 2 s pause, beat late: still at most suspect at any point.
        v.handle_timeout(last + 3 * SEC);
        assert_eq!(status(&v, "p"), Some(Status::Suspect), "within the grace");
        let out = v.handle(last + 3 * SEC, Input::Disconnected { peer: id("p") });
        assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
    }

    #[test]
    fn old_and_duplicate_heartbeats_are_stale() {
        let t0 = Instant::now();
        let mut v = view();
        v.handle(t0, beat("eu", 1, 5));
        let out = v.handle(t0 + SEC, beat("eu", 1, 5));
        assert_eq!(
            out,
            [Output::Stale {
                peer: id("p"),
                seq: 5
            }]
        );
        let out = v.handle(t0 + SEC, beat("eu", 1, 4));
        assert_eq!(
            out,
            [Output::Stale {
                peer: id("p"),
                seq: 4
            }]
        );
        // A stale heartbeat does not refresh liveness.
        assert_eq!(v.get(&id("p")).and_then(|m| m.last_heartbeat), Some(t0));
    }

    #[test]
    fn restart_is_a_new_incarnation_and_seq_starts_over() {
        let t0 = Instant::now();
        let mut v = view();
        v.handle(t0, beat("eu", 1, 40));
        let out = v.handle(t0 + SEC, beat("eu", 2, 1));
        assert!(out.contains(&Output::Restarted {
            peer: id("p"),
            incarnation: 2
        }));
        assert_eq!(v.get(&id("p")).map(|m| m.last_seq), Some(1));
        // The previous incarnation's heartbeats are now stale, whatever their seq.
        let out = v.handle(t0 + SEC, beat("eu", 1, 41));
        assert_eq!(
            out,
            [Output::Stale {
                peer: id("p"),
                seq: 41
            }]
        );
    }

    #[test]
    fn other_regions_are_remote_and_never_judged_by_heartbeat() {
        let t0 = Instant::now();
        let mut v = view();
        v.handle(t0, Input::Connected { peer: id("p") });
        let out = v.handle(
            t0,
            Input::Hello {
                from: id("p"),
                info: node::Info {
                    name: "p".into(),
                    region: "us".into(),
                    role: "db".into(),
                    incarnation: 1,
                },
            },
        );
        assert_eq!(changed(&out), [(Status::Joining, Status::Remote)]);
        assert!(changed(&v.handle_timeout(t0 + 100 * SEC)).is_empty());
    }

    #[test]
    fn a_peer_that_never_beats_and_leaves_is_dead_after_the_dead_interval() {
        let t0 = Instant::now();
        let mut v = view();
        v.handle(t0, Input::Connected { peer: id("p") });
        v.handle(t0 + SEC, Input::Disconnected { peer: id("p") });
        assert_eq!(v.poll_timeout(), Some(t0 + 11 * SEC));
        let out = v.handle_timeout(t0 + 11 * SEC);
        assert_eq!(changed(&out), [(Status::Joining, Status::Dead)]);
    }

    #[test]
    fn own_id_is_never_a_member() {
        let mut v = view();
        v.handle(Instant::now(), Input::Connected { peer: id("me") });
        assert_eq!(v.members().count(), 0);
    }
}
