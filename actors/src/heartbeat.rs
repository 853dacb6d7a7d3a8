//! The heartbeat a node publishes on its region topic, and the sans-IO emitter that
//! decides when the next one is due.
//!
//! The emitter owns the sequence number and the schedule only; the actor supplies the
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
    pub interval: Duration,
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
}

impl Emitter {
    /// The first heartbeat is due at once, so a new node announces itself immediately.
    pub fn new(config: Config, info: node::Info, now: Instant) -> Self {
        Emitter {
            config,
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
        }
    }

    /// When the next heartbeat is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
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

    /// The region consensus facts the next heartbeats carry.
    pub fn set_region(&mut self, facts: Facts) {
        self.region = facts;
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
        suspects: Vec<node::Id>,
    ) -> Option<Beat> {
        if now < self.next {
            return None;
        }
        if now.duration_since(self.next) >= self.config.interval {
            self.late += 1;
        }
        self.next = now + self.config.interval;
        Some(self.beat_now(now, unix_ms, health, suspects))
    }

    /// A heartbeat out of schedule (a new suspicion to share at once); the schedule of
    /// regular ones is unchanged.
    pub fn beat_now(
        &mut self,
        now: Instant,
        unix_ms: u64,
        health: Health,
        suspects: Vec<node::Id>,
    ) -> Beat {
        self.seq += 1;
        Beat {
            info: self.info.clone(),
            seq: self.seq,
            uptime_ms: millis(now.duration_since(self.started)),
            sent_unix_ms: unix_ms,
            health,
            suspects,
            sync: self.sync.clone(),
            founders: self.region.founders.clone(),
            eligible: self.region.eligible,
            proposal: self.region.proposal.clone(),
            expect: self.region.expect,
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
        };
        let mut e = Emitter::new(cfg, info(), t0);
        let b = e
            .handle_timeout(t0, 0, Health::default(), vec![])
            .expect("due at start");
        assert_eq!(b.seq, 1);
        assert!(
            e.handle_timeout(
                t0 + Duration::from_millis(999),
                0,
                Health::default(),
                vec![]
            )
            .is_none()
        );
        let b = e
            .handle_timeout(
                t0 + Duration::from_millis(1000),
                0,
                Health::default(),
                vec![],
            )
            .expect("due after one interval");
        assert_eq!((b.seq, b.uptime_ms), (2, 1000));
        assert_eq!(e.poll_timeout(), t0 + Duration::from_millis(2000));
        assert_eq!(e.late(), 0);
    }

    #[test]
    fn starved_node_sends_one_beat_and_counts_it_late() {
        let t0 = Instant::now();
        let cfg = Config {
            interval: Duration::from_millis(100),
        };
        let mut e = Emitter::new(cfg, info(), t0);
        e.handle_timeout(t0, 0, Health::default(), vec![]);
        let t = t0 + Duration::from_millis(750);
        assert_eq!(
            e.handle_timeout(t, 0, Health::default(), vec![])
                .map(|b| b.seq),
            Some(2)
        );
        assert!(e.handle_timeout(t, 0, Health::default(), vec![]).is_none());
        assert_eq!(e.late(), 1);
        assert_eq!(e.poll_timeout(), t + Duration::from_millis(100));
    }
}
