//! The node's view of its peers: who exists, what they said about themselves, and how
//! alive each one looks from here.
//!
//! Peers of the node's own region are judged by their heartbeats: alive while they arrive,
//! `suspect` after `suspect_after` missed intervals, `dead` after `dead_after`. Peers of
//! other regions do not send heartbeats here (heartbeat topics are per region, so per-node
//! load follows the region's size, not the fleet's); they are listed as `remote`, known
//! through a direct exchange of `Hello`s. This view only observes: it does not evict
//! anyone. Confirmed failure (several observers, the region master) is decided elsewhere.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::heartbeat::{Beat, Health};
use crate::node;

/// How a peer looks from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

/// Thresholds, in heartbeat intervals.
#[derive(Debug, Clone)]
pub struct Config {
    pub interval: Duration,
    pub suspect_after: u32,
    pub dead_after: u32,
}

impl Config {
    fn suspect(&self) -> Duration {
        self.interval * self.suspect_after
    }
    fn dead(&self) -> Duration {
        self.interval * self.dead_after
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

/// The membership view of one node.
#[derive(Debug)]
pub struct View {
    config: Config,
    own: node::Id,
    region: String,
    members: BTreeMap<node::Id, Member>,
}

impl View {
    pub fn new(config: Config, own: node::Id, region: String) -> Self {
        View {
            config,
            own,
            region,
            members: BTreeMap::new(),
        }
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
        });
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
                m.last_seen = now;
                m.uptime_ms = beat.uptime_ms;
                m.health = Some(beat.health.clone());
                m.info = Some(beat.info);
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
        self.refresh(now, &peer, &mut out);
        out
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
        match m.status {
            Status::Alive => m.last_heartbeat.map(|t| t + self.config.suspect()),
            Status::Suspect => m.last_heartbeat.map(|t| t + self.config.dead()),
            Status::Joining if !m.connected => Some(m.last_seen + self.config.dead()),
            _ => None,
        }
    }

    fn judge(&self, now: Instant, m: &Member) -> Status {
        let same_region = match &m.info {
            Some(info) => info.region == self.region,
            None => return self.unheard(now, m),
        };
        if !same_region {
            return Status::Remote;
        }
        match m.last_heartbeat {
            Some(t) => {
                let age = now.saturating_duration_since(t);
                if age < self.config.suspect() {
                    Status::Alive
                } else if age < self.config.dead() {
                    Status::Suspect
                } else {
                    Status::Dead
                }
            }
            None => self.unheard(now, m),
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
                suspect_after: 3,
                dead_after: 10,
            },
            id("me"),
            "eu".into(),
        )
    }

    fn id(s: &str) -> node::Id {
        node::Id(s.into())
    }

    fn beat(region: &str, incarnation: u64, seq: u64) -> Input {
        Input::Heartbeat {
            from: id("p"),
            beat: Box::new(Beat {
                info: node::Info {
                    name: "p".into(),
                    region: region.into(),
                    role: "web".into(),
                    incarnation,
                },
                seq,
                uptime_ms: seq * 1000,
                sent_unix_ms: 0,
                health: Health::default(),
            }),
        }
    }

    fn changed(out: &[Output]) -> Vec<(Status, Status)> {
        out.iter()
            .filter_map(|o| match o {
                Output::StatusChanged { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn heartbeats_drive_alive_suspect_dead_and_back() {
        let t0 = Instant::now();
        let mut v = view();
        let out = v.handle(t0, beat("eu", 1, 1));
        assert_eq!(changed(&out), [(Status::Joining, Status::Alive)]);
        assert_eq!(v.poll_timeout(), Some(t0 + 3 * SEC));

        assert!(changed(&v.handle_timeout(t0 + 2 * SEC)).is_empty());
        let out = v.handle_timeout(t0 + 3 * SEC);
        assert_eq!(changed(&out), [(Status::Alive, Status::Suspect)]);
        assert_eq!(v.poll_timeout(), Some(t0 + 10 * SEC));
        let out = v.handle_timeout(t0 + 10 * SEC);
        assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
        assert_eq!(v.poll_timeout(), None);

        let out = v.handle(t0 + 11 * SEC, beat("eu", 1, 2));
        assert_eq!(changed(&out), [(Status::Dead, Status::Alive)]);
        assert_eq!(v.counts().alive, 1);
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
