//! The heartbeat a node publishes on its region topic, and the sans-IO emitter that
//! decides when the next one (and the next round of liveness probes) is due.
//!
//! Liveness is judged from direct probes of a few ring neighbours
//! ([`crate::membership`]); the gossiped heartbeat carries what a member says about
//! itself (name, region facts, sync report, suspicions) and travels to the whole region.
//! So that what a member receives does not grow with its region, the region shares a
//! budget of `region_rate` heartbeats a second: a member of a region of `n` beats every
//! `interval × ⌈n / region_rate⌉`. What must be heard at once (a new suspicion, new
//! region facts, a returning peer) goes out of schedule.
//!
//! The emitter owns the sequence number and the schedules only; the actor supplies the
//! time, the wall clock and the health summary, and publishes what comes out.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node;

/// A small health summary carried in each heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub peers_alive: u32,
    pub peers_suspect: u32,
    pub peers_dead: u32,
    /// One-minute load average, when the host exposes it.
    pub load1: Option<f32>,
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    pub info: node::Info,
    /// Grows by one per heartbeat within an incarnation.
    pub seq: u64,
    pub uptime_ms: u64,
    /// The sender's wall clock when it was sent, for lag measurement.
    pub sent_unix_ms: u64,
    pub health: Health,
    /// Region peers the sender suspects or holds dead: confirmation for other observers.
    #[serde(default)]
    pub suspects: Vec<node::Id>,
    /// The sender's acknowledgement and replay state (its connectivity as it sees it).
    #[serde(default)]
    pub sync: Option<crate::sync::Report>,
    /// The founding voters (Raft ids) of the region's consensus the sender belongs to;
    /// empty while it has none. A new node joins the group its peers announce.
    #[serde(default)]
    pub founders: Vec<u64>,
    /// Whether the sender may become a voter (`region.master_eligible`).
    #[serde(default = "eligible_by_default")]
    pub eligible: bool,
    /// The founding set the sender proposes while no group exists (Raft ids, sorted).
    #[serde(default)]
    pub proposal: Vec<u64>,
    /// The sender's `region.bootstrap_expect` (0: not said).
    #[serde(default)]
    pub expect: u32,
    /// How often the sender beats now, ms (0: not said; the receiver's own interval).
    #[serde(default)]
    pub every_ms: u64,
    /// Region peers the sender itself declared dead (also in `suspects`).
    #[serde(default)]
    pub dead: Vec<node::Id>,
}

impl Beat {
    /// A heartbeat of `info` with sequence number `seq` and nothing else to say (no
    /// suspicions, no sync report, no region facts, eligible).
    pub fn new(info: node::Info, seq: u64) -> Beat {
        Beat {
            info,
            seq,
            uptime_ms: 0,
            sent_unix_ms: 0,
            health: Health::default(),
            suspects: Vec::new(),
            sync: None,
            founders: Vec::new(),
            eligible: true,
            proposal: Vec::new(),
            expect: 0,
            every_ms: 0,
            dead: Vec::new(),
        }
    }
}

/// What a member says it saw of its peers: its own judgements, never hearsay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Peers it suspects or declared dead.
    pub suspects: Vec<node::Id>,
    /// Peers it declared dead.
    pub dead: Vec<node::Id>,
}

/// What a member announces about its region's consensus in its heartbeats (decided by
/// the region governor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub founders: Vec<u64>,
    pub eligible: bool,
    pub proposal: Vec<u64>,
    pub expect: u32,
}

fn eligible_by_default() -> bool {
    true
}

/// Emitter settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shortest heartbeat interval (a region of up to `region_rate` members).
    pub interval: Duration,
    /// How often the ring neighbours are probed (zero: no probes).
    pub probe: Duration,
    /// Heartbeats a second the whole region shares (0: every member beats every interval).
    pub region_rate: u32,
}

impl Config {
    /// How often the owner runs at least: every probe round, or every interval without
    /// probes.
    pub fn tick(&self) -> Duration {
        if self.probe.is_zero() {
            self.interval
        } else {
            self.probe
        }
    }

    /// The heartbeat interval of a member of a region of `members` (itself included).
    pub fn every(&self, members: usize) -> Duration {
        if self.region_rate == 0 {
            return self.interval;
        }
        let n = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
        self.interval * n.div_ceil(self.region_rate).max(1)
    }
}

/// Decides when heartbeats are due and builds them.
#[derive(Debug)]
pub struct Emitter {
    config: Config,
    info: node::Info,
    started: Instant,
    seq: u64,
    next: Instant,
    late: u64,
    sync: Option<crate::sync::Report>,
    region: Facts,
    /// The current heartbeat interval (see [`Config::every`]).
    every: Duration,
    last_beat: Option<Instant>,
    /// The next round of probes; without probes, the next tick (every interval), so
    /// that the owner runs its view at least that often.
    next_probe: Instant,
}

impl Emitter {
    /// The first heartbeat is due at once, so a new node announces itself immediately.
    pub fn new(config: Config, info: node::Info, now: Instant) -> Self {
        Emitter {
            info,
            started: now,
            seq: 0,
            next: now,
            late: 0,
            sync: None,
            region: Facts {
                eligible: true,
                ..Facts::default()
            },
            every: config.every(1),
            last_beat: None,
            next_probe: now,
            config,
        }
    }

    /// When the next heartbeat or round of probes is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_probe.min(self.next)
    }

    /// When the next heartbeat is due.
    pub fn next_beat(&self) -> Instant {
        self.next
    }

    /// The current heartbeat interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The region now has `members` members (this node included): the interval follows.
    /// A shorter one takes effect at once.
    pub fn set_members(&mut self, members: usize) {
        let every = self.config.every(members);
        if every == self.every {
            return;
        }
        self.every = every;
        if let Some(last) = self.last_beat {
            self.next = self.next.min(last + every);
        }
    }

    /// A heartbeat is wanted soon (new region facts, a peer reconnected): the next one
    /// goes out now, or one interval after the last if that was under an interval ago.
    pub fn beat_soon(&mut self, now: Instant) {
        let soon = match self.last_beat {
            Some(last) => (last + self.config.interval).max(now),
            None => now,
        };
        self.next = self.next.min(soon);
    }

    /// Whether a round of probes (or, without probes, a tick) is due at `now`; if so,
    /// the next is scheduled.
    pub fn probe_due(&mut self, now: Instant) -> bool {
        if self.next_probe > now {
            return false;
        }
        let period = self.config.tick();
        let mut next = self.next_probe + period;
        if next <= now {
            // Starved: one round now, not a burst of missed ones.
            next = now + period;
        }
        self.next_probe = next;
        true
    }

    /// Heartbeats that went out more than a whole interval late (the node was starved).
    pub fn late(&self) -> u64 {
        self.late
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Heartbeats from now on announce incarnation `n` (peers see a restart).
    pub fn set_incarnation(&mut self, n: u64) {
        self.info.incarnation = n;
    }

    /// The region consensus facts the next heartbeats carry. Returns whether they changed
    /// (the region should hear them soon: [`Emitter::beat_soon`]).
    pub fn set_region(&mut self, facts: Facts) -> bool {
        let changed = self.region != facts;
        self.region = facts;
        changed
    }

    /// The sync state the heartbeats carry, once set.
    pub fn sync(&self) -> Option<&crate::sync::Report> {
        self.sync.as_ref()
    }

    /// This node's identity as its heartbeats announce it.
    pub fn info(&self) -> &node::Info {
        &self.info
    }

    /// The sync state the next heartbeats carry.
    pub fn set_sync(&mut self, sync: crate::sync::Report) {
        self.sync = Some(sync);
    }

    /// Returns the heartbeat due at `now`, if any. A node that was starved for several
    /// intervals sends one heartbeat, not a burst of stale ones.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        unix_ms: u64,
        health: Health,
        seen: Seen,
    ) -> Option<Beat> {
        if now < self.next {
            return None;
        }
        if now.duration_since(self.next) >= self.every {
            self.late += 1;
        }
        Some(self.beat_now(now, unix_ms, health, seen))
    }

    /// A heartbeat now (due, or out of schedule: a new suspicion to share at once); the
    /// next regular one follows an interval later.
    pub fn beat_now(&mut self, now: Instant, unix_ms: u64, health: Health, seen: Seen) -> Beat {
        self.seq += 1;
        self.last_beat = Some(now);
        self.next = now + self.every;
        self.current(now, unix_ms, health, seen)
    }

    /// The last heartbeat's sequence number with what is known now, for one peer that
    /// just connected (the schedule is unchanged; a peer that had it takes it as stale).
    pub fn current(&self, now: Instant, unix_ms: u64, health: Health, seen: Seen) -> Beat {
        Beat {
            info: self.info.clone(),
            seq: self.seq.max(1),
            uptime_ms: millis(now.duration_since(self.started)),
            sent_unix_ms: unix_ms,
            health,
            suspects: seen.suspects,
            sync: self.sync.clone(),
            founders: self.region.founders.clone(),
            eligible: self.region.eligible,
            proposal: self.region.proposal.clone(),
            expect: self.region.expect,
            every_ms: millis(self.every),
            dead: seen.dead,
        }
    }
}

/// Milliseconds in `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> node::Info {
        node::Info {
            name: "n1".into(),
            region: "r".into(),
            role: "web".into(),
            incarnation: 1,
        }
    }

    #[test]
    fn first_beat_is_immediate_then_every_interval() {
        let t0 = Instant::now();
        let cfg = Config {
            interval: Duration::from_millis(1000),
            probe: Duration::ZERO,
            region_rate: 0,
        };
        let mut e = Emitter::new(cfg, info(), t0);
        let b = e
            .handle_timeout(t0, 0, Health::default(), Seen::default())
            .expect("due at start");
        assert_eq!(b.seq, 1);
        assert!(
            e.handle_timeout(
                t0 + Duration::from_millis(999),
                0,
                Health::default(),
                Seen::default()
            )
            .is_none()
        );
        let b = e
            .handle_timeout(
                t0 + Duration::from_millis(1000),
                0,
                Health::default(),
                Seen::default(),
            )
            .expect("due after one interval");
        assert_eq!((b.seq, b.uptime_ms), (2, 1000));
        // Without probes the owner still ticks every interval.
        assert!(e.probe_due(t0));
        assert!(e.probe_due(t0 + Duration::from_millis(1000)));
        assert_eq!(e.poll_timeout(), t0 + Duration::from_millis(2000));
        assert_eq!(e.late(), 0);
    }

    #[test]
    fn starved_node_sends_one_beat_and_counts_it_late() {
        let t0 = Instant::now();
        let cfg = Config {
            interval: Duration::from_millis(100),
            probe: Duration::ZERO,
            region_rate: 0,
        };
        let mut e = Emitter::new(cfg, info(), t0);
        e.handle_timeout(t0, 0, Health::default(), Seen::default());
        let t = t0 + Duration::from_millis(750);
        assert_eq!(
            e.handle_timeout(t, 0, Health::default(), Seen::default())
                .map(|b| b.seq),
            Some(2)
        );
        assert!(
            e.handle_timeout(t, 0, Health::default(), Seen::default())
                .is_none()
        );
        assert_eq!(e.late(), 1);
        assert!(e.probe_due(t));
        assert_eq!(e.poll_timeout(), t + Duration::from_millis(100));
    }

    /// The region shares a budget of heartbeats: a member of a bigger region beats less
    /// often; a region that shrinks gets the shorter interval at once.
    #[test]
    fn the_interval_follows_the_region_size() {
        let t0 = Instant::now();
        let cfg = Config {
            interval: Duration::from_millis(1000),
            probe: Duration::from_millis(500),
            region_rate: 5,
        };
        assert_eq!(cfg.every(5), Duration::from_secs(1));
        assert_eq!(cfg.every(6), Duration::from_secs(2));
        assert_eq!(cfg.every(1000), Duration::from_secs(200));
        let mut e = Emitter::new(cfg, info(), t0);
        assert!(
            e.handle_timeout(t0, 0, Health::default(), Seen::default())
                .is_some()
        );
        e.set_members(100);
        assert_eq!(e.every(), Duration::from_secs(20));
        // The beat already scheduled keeps its time; the next follows the new interval.
        let t1 = t0 + Duration::from_secs(1);
        let b = e.handle_timeout(t1, 0, Health::default(), Seen::default());
        assert_eq!(b.map(|b| b.every_ms), Some(20_000));
        assert!(
            e.handle_timeout(
                t1 + Duration::from_secs(19),
                0,
                Health::default(),
                Seen::default()
            )
            .is_none()
        );
        e.set_members(10);
        assert_eq!(e.every(), Duration::from_secs(2));
        // The probe schedule: every half second, one round when starved.
        assert!(e.probe_due(t0));
        assert!(!e.probe_due(t0 + Duration::from_millis(499)));
        assert!(e.probe_due(t0 + Duration::from_millis(500)));
        assert!(e.probe_due(t0 + Duration::from_millis(5000)));
        assert!(!e.probe_due(t0 + Duration::from_millis(5001)));
        assert_eq!(e.poll_timeout(), t1 + Duration::from_secs(2));
    }

    #[test]
    fn a_beat_wanted_soon_waits_at_most_one_short_interval() {
        let t0 = Instant::now();
        let cfg = Config {
            interval: Duration::from_millis(1000),
            probe: Duration::ZERO,
            region_rate: 1,
        };
        let mut e = Emitter::new(cfg, info(), t0);
        e.set_members(30);
        e.handle_timeout(t0, 0, Health::default(), Seen::default());
        assert_eq!(e.next_beat(), t0 + Duration::from_secs(30));
        e.beat_soon(t0 + Duration::from_millis(200));
        assert_eq!(e.next_beat(), t0 + Duration::from_secs(1));
        e.beat_soon(t0 + Duration::from_secs(5));
        assert_eq!(e.next_beat(), t0 + Duration::from_secs(1));
    }
}
