//! The spike side of one member, wired as the node's spike and region actors wire it: the
//! real encoder numbers observations (its reservations kept on the member's disk), the
//! journal keeps them until the master's mark passes, the real sync core
//! ([`fleetmesh_actors::sync::Origin`]) says when to replay and to whom, and the real
//! intake ([`fleetmesh_actors::intake::Intake`]) applies the region's spikes exactly once
//! while the member is master and fences the acknowledgements it takes.
//!
//! Nothing here sends: the engine moves what these methods return (spikes and
//! acknowledgements gossiped to the region, replay batches and their answers point to
//! point).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fleetmesh_actors::encoder::{self, Encoder};
use fleetmesh_actors::intake::Intake;
use fleetmesh_actors::label::Vocabulary;
use fleetmesh_actors::spike::{Change, Kind, Layer, Observation, Spike};
use fleetmesh_actors::sync::{self, Action, Links, Master, Origin};
use fleetmesh_actors::{node, wire};

/// The spike actor's replay check interval.
pub const POLL_MS: u64 = 500;
/// How often a master gossips its acknowledgements (the region actor's period).
pub const ACK_EVERY: Duration = Duration::from_secs(1);
/// Journaled spikes one read takes for replay (the spike actor's).
const REPLAY_READ: usize = 8192;

/// What a member's disk keeps of its spikes; a crash keeps all of it.
#[derive(Debug, Default)]
pub struct Journal {
    /// The encoder's last durable reservation.
    pub reserved: u64,
    /// The highest number ever journaled (the journal's last segment keeps it).
    pub last: u64,
    /// Journaled and not compacted away, in order.
    spikes: VecDeque<Spike>,
}

impl Journal {
    fn compact(&mut self, upto: u64) {
        while self.spikes.front().is_some_and(|s| s.seq <= upto) {
            self.spikes.pop_front();
        }
    }

    fn read_after(&self, after: u64, max: usize) -> VecDeque<Spike> {
        let start = self.spikes.partition_point(|s| s.seq <= after);
        self.spikes.range(start..).take(max).cloned().collect()
    }
}

/// A replay batch for the master.
#[derive(Debug, Clone)]
pub struct Replay {
    pub to: node::Id,
    pub first: u64,
    pub spikes: Vec<Spike>,
}

/// One running member's spike cores.
#[derive(Debug)]
pub struct Flow {
    encoder: Encoder,
    pub origin: Origin,
    pub intake: Intake,
    read_ahead: VecDeque<Spike>,
    changes: u64,
}

impl Flow {
    /// A process starting from what `journal` kept, as the node starts its spike actor.
    pub fn new(region: &str, peer: &node::Id, role: &str, journal: &Journal, unix_ms: u64) -> Flow {
        let encoder = Encoder::new(
            encoder::Config {
                origin: peer.clone(),
                role: role.into(),
                block: encoder::BLOCK,
            },
            Vocabulary::default(),
            journal.reserved.max(journal.last),
        );
        let mut origin = Origin::new(sync::Config::default(), journal.last, unix_ms);
        let resumed = encoder.next_seq().saturating_sub(1);
        if resumed > journal.last {
            origin.unused(journal.last + 1, resumed);
        }
        Flow {
            encoder,
            origin,
            intake: Intake::new(region, peer.clone(), ACK_EVERY),
            read_ahead: VecDeque::new(),
            changes: 0,
        }
    }

    /// The governor's master changed: the intake learns who is master, the encoder
    /// whether one is known and which peer (as the region actor tells them).
    pub fn set_master(
        &mut self,
        now: Instant,
        master: Option<(node::Id, u64)>,
        leading: bool,
        unix_ms: u64,
    ) {
        let links = Links {
            // Not modelled: it only names the state the node reports.
            connected_peers: 1,
            master_known: master.is_some(),
        };
        let elsewhere = master.as_ref().filter(|_| !leading).map(|(p, _)| p.clone());
        self.origin.master_of_record(elsewhere);
        self.origin.links(links, unix_ms);
        self.intake.set_master(now, master, leading);
    }

    /// `n` changes observed as one batch: numbered (a new reservation made durable
    /// first), journaled, and returned for publication.
    pub fn record(&mut self, journal: &mut Journal, n: usize, unix_ms: u64) -> Vec<Spike> {
        let mut spikes = Vec::with_capacity(n);
        for _ in 0..n {
            self.changes += 1;
            let obs = Observation::new(
                Kind::File,
                Change::Modified,
                format!("/etc/sim/{}", self.changes % 64),
                Layer::Realtime,
            );
            let (reserve, spike) = self.encoder.encode(unix_ms, obs);
            if let Some(r) = reserve {
                journal.reserved = r.until;
            }
            spikes.push(spike);
        }
        if let Some(last) = spikes.last() {
            journal.last = last.seq;
            journal.spikes.extend(spikes.iter().cloned());
            self.origin.published(last.seq, unix_ms);
        }
        spikes
    }

    /// The replay check (every [`POLL_MS`]): the batch to send now, if any.
    pub fn poll(&mut self, journal: &Journal, unix_ms: u64) -> Option<Replay> {
        let Action::Replay { after, to } = self.origin.poll(unix_ms)?;
        while self.read_ahead.front().is_some_and(|s| s.seq <= after) {
            self.read_ahead.pop_front();
        }
        if self.read_ahead.front().is_none_or(|s| s.seq != after + 1) {
            self.read_ahead = journal.read_after(after, REPLAY_READ);
        }
        let (first, spikes) = wire::replay_batch(&mut self.read_ahead, self.origin.last());
        let upto = spikes.last().map_or(first.saturating_sub(1), |s| s.seq);
        self.origin.sent(upto, spikes.len() as u64, unix_ms);
        Some(Replay { to, first, spikes })
    }

    /// The master's mark for this member's spikes. Returns how far the journal was
    /// compacted, if it was, and the next replay batch when this answered one (the spike
    /// actor sends it at once rather than at the next check).
    pub fn acked(
        &mut self,
        journal: &mut Journal,
        mark: u64,
        master: Master,
        unix_ms: u64,
    ) -> (Option<u64>, Option<Replay>) {
        let replaying = self.origin.replaying();
        let upto = self.origin.acked(mark, master, unix_ms);
        if let Some(u) = upto {
            journal.compact(u);
        }
        let next = if replaying {
            self.poll(journal, unix_ms)
        } else {
            None
        };
        (upto, next)
    }

    /// Spikes journaled that the master has not acknowledged.
    pub fn backlog(&self) -> bool {
        self.origin.backlog() > 0
    }
}
