//! The region's intake: every spike of the region applied exactly once and in order per
//! origin, the master's acknowledgements (gossiped, fenced by term), and the acceptance
//! of replays, as a sans-IO state machine.
//!
//! Every member runs it: it takes in the region's spikes (gossip, and its own). Who is
//! master is not its decision: the runtime tells it with [`Intake::set_master`] (the
//! governor's events), and it acts on that alone:
//! - as master it applies the region's spikes through a [`Ledger`] (each once, in order
//!   per origin), applies replays ([`Intake::handle_replay`]), hands what it applies to
//!   the fleet's judgement ([`Output::Applied`]) and, every `ack_every`, gossips every
//!   origin's mark ([`Output::Gossip`], stamped with its term) and gives this node its own
//!   mark ([`Output::OwnMark`]);
//! - as a follower it applies nothing: it keeps the spikes no master has acknowledged yet
//!   (at most [`PENDING`] per origin), and accepts marks ([`Intake::handle_acks`]) only
//!   from the peer it knows as master *of that term* (a forged or stale acknowledgement
//!   would let an origin drop spikes no master applied). A mark is its ledger's floor (so
//!   that a later master starts where this one left off), drops what it covers, and hands
//!   this node its own mark;
//! - when it becomes master it applies what it kept: spikes published while the region
//!   had no master, or after the last acknowledgement of the one before. Some of these the
//!   previous master may have applied after its last acknowledgement went out: those are
//!   applied again (at least once across a change of master, exactly once under one).
//!
//! Feed it with `set_master`, `handle_spikes`, `handle_acks`, `handle_replay` and
//! `handle_timeout` (when [`Intake::poll_timeout`] is due); drain [`Intake::poll_output`]
//! after each call.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ledger::{self, Ledger};
use crate::spike::Spike;
use crate::sync::Master;
use crate::{node, wire};

/// How far ahead of an origin's mark spikes are held waiting for a gap to fill.
pub const WINDOW: u64 = 4096;
/// Origins per acknowledgement message (a mark is ~70 bytes: well inside one frame).
pub const ACKS_PER_MESSAGE: usize = 400;
/// Spikes a follower keeps per origin above the master's mark. Beyond them a spike is not
/// kept: the origin still journals it and replays it to whoever is master.
pub const PENDING: usize = 1024;

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Spikes applied while this node is master, in order per origin.
    Applied(Vec<Spike>),
    /// The master acknowledges this node's own spikes up to `mark`.
    OwnMark { mark: u64, master: Master },
    /// Marks to gossip on the region topic.
    Gossip(wire::Acks),
}

/// One member's intake.
#[derive(Debug)]
pub struct Intake {
    region: String,
    own: node::Id,
    ledger: Ledger<Spike>,
    /// As a follower: per origin, spikes above the master's mark, by number.
    pending: BTreeMap<node::Id, BTreeMap<u64, Spike>>,
    /// Spikes a follower did not keep ([`PENDING`] reached).
    not_kept: u64,
    /// The master this node knows, with its term, and whether it is this node.
    master: Option<(node::Id, u64)>,
    leading: bool,
    ack_every: Duration,
    next_ack: Option<Instant>,
    applied: u64,
    refused_acks: u64,
    out: VecDeque<Output>,
    /// Test-only fault: acknowledgements are taken from anyone.
    #[cfg(feature = "faults")]
    unfenced: bool,
}

impl Intake {
    pub fn new(region: &str, own: node::Id, ack_every: Duration) -> Intake {
        Intake {
            region: region.into(),
            own,
            ledger: Ledger::new(WINDOW),
            pending: BTreeMap::new(),
            not_kept: 0,
            master: None,
            leading: false,
            ack_every,
            next_ack: None,
            applied: 0,
            refused_acks: 0,
            out: VecDeque::new(),
            #[cfg(feature = "faults")]
            unfenced: false,
        }
    }

    /// The master of record changed (`leading`: it is this node).
    pub fn set_master(&mut self, now: Instant, master: Option<(node::Id, u64)>, leading: bool) {
        let was = self.leading;
        self.master = master;
        self.leading = leading && self.master.is_some();
        // A new master acknowledges at once: origins waiting on a failover learn fast.
        self.next_ack = self.leading.then_some(now);
        if self.leading && !was {
            // What no master acknowledged, applied now.
            for (_, spikes) in std::mem::take(&mut self.pending) {
                self.handle_spikes(spikes.into_values().collect());
            }
        }
    }

    /// Spikes of the region (gossip, or this node's own).
    pub fn handle_spikes(&mut self, spikes: Vec<Spike>) {
        if !self.leading {
            for s in spikes {
                if s.seq <= self.ledger.contiguous(&s.origin) {
                    continue;
                }
                let kept = self.pending.entry(s.origin.clone()).or_default();
                if kept.len() >= PENDING && !kept.contains_key(&s.seq) {
                    self.not_kept += 1;
                    continue;
                }
                kept.insert(s.seq, s);
            }
            return;
        }
        let mut applied = Vec::new();
        for s in spikes {
            let (origin, seq) = (s.origin.clone(), s.seq);
            applied.extend(self.ledger.offer(&origin, seq, s));
        }
        self.release(applied);
    }

    /// A master's marks, from `from` (the gossip's signed author). Returns whether they
    /// were taken.
    pub fn handle_acks(&mut self, from: &node::Id, acks: wire::Acks) -> bool {
        let fenced = acks.region == self.region
            && !self.leading
            && self.master.as_ref() == Some(&(from.clone(), acks.term));
        #[cfg(feature = "faults")]
        let fenced = fenced || self.unfenced;
        if !fenced {
            self.refused_acks += 1;
            return false;
        }
        for (origin, mark) in acks.marks {
            if origin == self.own {
                self.out.push_back(Output::OwnMark {
                    mark,
                    master: Master {
                        peer: from.clone(),
                        term: acks.term,
                    },
                });
            }
            let released = self.ledger.advance(&origin, mark);
            self.release(released);
            if let Some(kept) = self.pending.get_mut(&origin) {
                *kept = kept.split_off(&(mark.saturating_add(1)));
                if kept.is_empty() {
                    self.pending.remove(&origin);
                }
            }
        }
        true
    }

    /// A replay batch `from` an origin, whose journal starts at `first`. Answers the
    /// master's term and the origin's new mark, or why it was refused.
    pub fn handle_replay(
        &mut self,
        from: &node::Id,
        first: u64,
        spikes: Vec<Spike>,
    ) -> Result<(u64, u64), String> {
        let term = match &self.master {
            Some((_, term)) if self.leading => *term,
            _ => return Err("not the region master".into()),
        };
        if let Some(s) = spikes.iter().find(|s| s.origin != *from) {
            return Err(format!(
                "replayed spike {} belongs to {}, not to the sender",
                s.seq, s.origin
            ));
        }
        // What the origin no longer holds will never come: do not wait for it.
        let released = self.ledger.advance(from, first.saturating_sub(1));
        self.release(released);
        self.handle_spikes(spikes);
        Ok((term, self.ledger.contiguous(from)))
    }

    /// As master, when due: every origin's mark for gossip, and this node's own.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.next_ack else {
            return;
        };
        if now < at {
            return;
        }
        self.next_ack = Some(now + self.ack_every);
        let Some((peer, term)) = self.master.clone().filter(|_| self.leading) else {
            return;
        };
        self.out.push_back(Output::OwnMark {
            mark: self.ledger.contiguous(&self.own),
            master: Master { peer, term },
        });
        let marks: Vec<(node::Id, u64)> = self.ledger.marks().into_iter().collect();
        for chunk in marks.chunks(ACKS_PER_MESSAGE) {
            self.out.push_back(Output::Gossip(wire::Acks {
                region: self.region.clone(),
                term,
                marks: chunk.to_vec(),
            }));
        }
    }

    /// When the next acknowledgement is due (only while master).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_ack
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Counters per origin, for the API.
    pub fn stats(&self) -> BTreeMap<node::Id, ledger::Stats> {
        self.ledger.stats()
    }

    /// Spikes applied (each once, in order per origin) since start.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Acknowledgements refused by the fencing (not from the master of their term).
    pub fn refused_acks(&self) -> u64 {
        self.refused_acks
    }

    /// Spikes kept as a follower (no master acknowledged them yet), and those it could
    /// not keep.
    pub fn pending(&self) -> (u64, u64) {
        let kept = self.pending.values().map(|p| p.len() as u64).sum();
        (kept, self.not_kept)
    }

    /// Test-only fault (feature `faults`): from now on acknowledgements are taken from
    /// any sender, for any term, as if they came from the master. The simulator's tests
    /// switch it on to show that its checker catches the loss this causes.
    #[cfg(feature = "faults")]
    pub fn break_fencing(&mut self) {
        self.unfenced = true;
    }

    fn release(&mut self, spikes: Vec<Spike>) {
        self.applied += spikes.len() as u64;
        if self.leading && !spikes.is_empty() {
            self.out.push_back(Output::Applied(spikes));
        }
    }
}

#[cfg(test)]
mod tests;
