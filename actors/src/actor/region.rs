//! The region actor: drives the region's consensus core ([`crate::region::Region`]) on a
//! fixed tick, makes what it must persist durable before any of its messages leave, hands
//! those messages to the network driver as direct requests, and answers the API.
//!
//! While this node is master it also governs, once a second: members its membership view
//! holds dead are declared dead, members back (or new) are declared alive, and work items
//! (an audit of every live member, the configured probes) are assigned by rendezvous
//! hashing over the live members ([`crate::assign`]); only the owners that change are
//! committed.
//!
//! Every member also takes in the region's spikes (gossip, and replays sent to it while
//! master) through an exactly-once, in-order [`Ledger`]. The master gossips its marks
//! once a second ([`wire::Acks`], stamped with its term); a member accepts marks only
//! from the peer its own consensus view knows as master of that term, adopts them as the
//! floor of its own ledger (so that a later master starts where this one left off) and
//! hands its own mark to the spike encoder ([`Acked`]), which compacts the journal and
//! replays what is missing.
//!
//! Members are named in settings (`region.voters`); a member's Raft id is derived from
//! `<region>/<name>`, so every node computes the same founding voter set on its own. The
//! peer id behind each name is learned from the membership view ([`PeerNames`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actor::Stop;
use crate::ledger::{self, Ledger};
use crate::membership::Status as Liveness;
use crate::outbox::{self, Direct, DirectSender};
use crate::region::{self, Command, Committed, Durable, Region, RegionState, Role, Status};
use crate::spike::Spike;
use crate::sync::Master;
use crate::{assign, node, wire};

/// The Raft id of member `name` of `region`.
pub fn member_id(region: &str, name: &str) -> u64 {
    region::raft_id(&node::Id(format!("{region}/{name}")))
}

/// How far ahead of an origin's mark spikes are held waiting for a gap to fill.
const LEDGER_WINDOW: u64 = 4096;

/// Spikes of the region (gossip, or this node's own), for the intake.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SpikesIn(pub Vec<Spike>);

/// A master's acknowledgements, as gossiped or as the answer to a replay batch.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AcksIn {
    /// The peer that signed (gossip author) or answered (replay).
    pub from: node::Id,
    pub acks: wire::Acks,
}

/// A replay batch an origin sent to this node as master. Answers the origin's new mark
/// and the term, or why it was refused.
#[derive(Debug, Message)]
#[rtype(result = "Result<(u64, u64), String>")]
pub struct ReplayIn {
    pub from: node::Id,
    pub first: u64,
    pub spikes: Vec<Spike>,
}

/// The master acknowledges this node's spikes up to `mark` (for the spike encoder).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Acked {
    pub mark: u64,
    pub master: Master,
}

/// The region's intake counters, per origin (peer id), for the API.
#[derive(Debug, Message)]
#[rtype(result = "BTreeMap<node::Id, ledger::Stats>")]
pub struct GetIntake;

/// A consensus message from a peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RaftIn(pub Vec<u8>);

/// One region member as the membership view knows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub name: String,
    pub peer: node::Id,
    pub status: Liveness,
    pub incarnation: u64,
}

/// The region's members (other than this node), as the membership view knows them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerNames(pub Vec<MemberView>);

/// What the API shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub region: String,
    /// `None` with `why` when this node takes no part in consensus.
    pub status: Option<Status>,
    pub why: Option<String>,
    /// Raft id → (name, peer id if known), for every configured voter.
    pub names: BTreeMap<u64, (String, Option<node::Id>)>,
    pub state: RegionState,
    /// The last commands committed, newest last.
    pub recent: Vec<Committed>,
    pub unroutable: u64,
    pub refused: u64,
    pub sent: u64,
    pub received: u64,
}

#[derive(Debug, Message)]
#[rtype(result = "Snapshot")]
pub struct GetRegion;

/// Makes the member's consensus state durable (write + fsync).
pub type PersistRegion = Box<dyn FnMut(&Durable) -> std::io::Result<()> + Send>;

pub struct RegionActor {
    region: String,
    core: Result<Region, String>,
    durable: Durable,
    persist: PersistRegion,
    names: BTreeMap<u64, (String, Option<node::Id>)>,
    direct: DirectSender,
    tick: Duration,
    recent: Vec<Committed>,
    unroutable: u64,
    refused: u64,
    sent: u64,
    received: u64,
    own_peer: node::Id,
    own_incarnation: u64,
    probes: Vec<String>,
    members: Vec<MemberView>,
    /// Proposals made and not yet seen committed: no new ones before this instant.
    quiet_until: Option<Instant>,
    ledger: Ledger<Spike>,
    gossip: outbox::Sender,
    acked: Option<Recipient<Acked>>,
    /// Spikes taken in and applied (each once, in order per origin).
    applied: u64,
}

impl std::fmt::Debug for RegionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionActor")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Settings of the region actor.
#[derive(Debug, Clone)]
pub struct Config {
    pub region: String,
    pub own_name: String,
    pub own_peer: node::Id,
    pub own_incarnation: u64,
    /// Names of the service probes to assign (`probe:<name>` work items).
    pub probes: Vec<String>,
    /// Names of the founding voters (up to 5); empty: no master in this region.
    pub voters: Vec<String>,
    pub tick: Duration,
    pub consensus: region::Config,
}

impl RegionActor {
    /// `stored`: the durable state of an earlier run, if any.
    /// `gossip` carries the master's acknowledgements; `acked` receives this node's own
    /// mark (the spike encoder).
    pub fn new(
        config: Config,
        stored: Option<Durable>,
        persist: PersistRegion,
        direct: DirectSender,
        gossip: outbox::Sender,
        acked: Option<Recipient<Acked>>,
    ) -> Self {
        let names: BTreeMap<u64, (String, Option<node::Id>)> = config
            .voters
            .iter()
            .map(|n| {
                let me = (n == &config.own_name).then(|| config.own_peer.clone());
                (member_id(&config.region, n), (n.clone(), me))
            })
            .collect();
        let own = member_id(&config.region, &config.own_name);
        let (core, durable) = if config.voters.is_empty() {
            (
                Err("no voters configured (region.voters): this region has no master".into()),
                Durable::default(),
            )
        } else {
            match stored {
                Some(d) => (
                    Region::restore(own, d.clone(), &config.consensus).map_err(|e| e.to_string()),
                    d,
                ),
                None => {
                    let ids: Vec<u64> = names.keys().copied().collect();
                    (
                        Region::new(own, &ids, &config.consensus).map_err(|e| e.to_string()),
                        Durable::default(),
                    )
                }
            }
        };
        if let Err(why) = &core {
            tracing::warn!(%why, "region consensus not running");
        }
        RegionActor {
            region: config.region,
            core,
            durable,
            persist,
            names,
            direct,
            tick: config.tick,
            recent: Vec::new(),
            unroutable: 0,
            refused: 0,
            sent: 0,
            received: 0,
            own_peer: config.own_peer,
            own_incarnation: config.own_incarnation,
            probes: config.probes,
            members: Vec::new(),
            quiet_until: None,
            ledger: Ledger::new(LEDGER_WINDOW),
            gossip,
            acked,
            applied: 0,
        }
    }

    /// The master this node's consensus view knows, as (peer, term).
    fn master(&self) -> Option<(node::Id, u64)> {
        let status = self.core.as_ref().ok()?.status();
        let peer = self.names.get(&status.leader?)?.1.clone()?;
        Some((peer, status.term))
    }

    fn leading(&self) -> Option<u64> {
        let status = self.core.as_ref().ok()?.status();
        (status.role == Role::Leader).then_some(status.term)
    }

    fn take_in(&mut self, spike: Spike) {
        let origin = spike.origin.clone();
        let seq = spike.seq;
        // Applied spikes go nowhere yet: correlation and policy consume them later.
        self.applied += self.ledger.offer(&origin, seq, spike).len() as u64;
    }

    /// As master: gossip every origin's mark and hand this node its own.
    fn acknowledge(&mut self) {
        let Some(term) = self.leading() else {
            return;
        };
        let marks: Vec<(node::Id, u64)> = self.ledger.marks().into_iter().collect();
        self.tell_own_mark(
            self.ledger.contiguous(&self.own_peer),
            self.own_peer.clone(),
            term,
        );
        if marks.is_empty() {
            return;
        }
        let publish = outbox::Publish {
            topic: outbox::Topic::Region(self.region.clone()),
            body: wire::Body::Acks(wire::Acks {
                region: self.region.clone(),
                term,
                marks,
            }),
            delivery: outbox::Delivery::BestEffort,
        };
        let _ = self.gossip.try_send(publish);
    }

    fn tell_own_mark(&self, mark: u64, peer: node::Id, term: u64) {
        if let Some(r) = &self.acked {
            let _ = r.try_send(Acked {
                mark,
                master: Master { peer, term },
            });
        }
    }

    /// As master: commit deaths, returns and the work moves the current view calls for.
    fn govern(&mut self, ctx: &mut Context<Self>) {
        let Ok(core) = &mut self.core else {
            return;
        };
        if core.status().role != Role::Leader
            || self.quiet_until.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let state = core.state().clone();
        let mut commands = Vec::new();
        let mut live: BTreeSet<node::Id> = BTreeSet::new();
        live.insert(self.own_peer.clone());
        let me = (self.own_peer.clone(), self.own_incarnation, Liveness::Alive);
        let others = self
            .members
            .iter()
            .map(|m| (m.peer.clone(), m.incarnation, m.status));
        for (peer, incarnation, status) in std::iter::once(me).chain(others) {
            match status {
                Liveness::Dead => {
                    if state.dead.get(&peer).is_none_or(|d| *d < incarnation) {
                        commands.push(Command::DeclareDead { peer, incarnation });
                    }
                }
                Liveness::Alive | Liveness::Suspect => {
                    live.insert(peer.clone());
                    if state.alive.get(&peer).is_none_or(|a| *a < incarnation) {
                        commands.push(Command::Alive { peer, incarnation });
                    }
                }
                Liveness::Joining | Liveness::Remote => {}
            }
        }
        let target = assign::assign(&assign::items(&live, &self.probes), &live);
        for (item, owner) in assign::moves(&state.assignments, &target) {
            commands.push(Command::Assign { item, owner });
        }
        if commands.is_empty() {
            return;
        }
        for c in &commands {
            if let Err(e) = core.propose(c) {
                tracing::debug!(error = %e, "proposal not taken");
                break;
            }
        }
        self.quiet_until = Some(Instant::now() + Duration::from_secs(2));
        self.drain(ctx);
    }

    /// Persist, then send, then record what committed.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        let Ok(core) = &mut self.core else {
            return;
        };
        let out = core.poll();
        if let Some(p) = &out.persist {
            let saved = self
                .durable
                .apply(p)
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|()| (self.persist)(&self.durable));
            if let Err(e) = saved {
                // Sending votes or entries that are not durable could elect two masters
                // after a crash: stop taking part instead.
                tracing::error!(error = %e, "cannot persist the region's consensus state; leaving consensus");
                self.core = Err(format!("consensus state could not be persisted: {e}"));
                ctx.stop();
                return;
            }
        }
        for (to, message) in out.messages {
            let Some(peer) = self.names.get(&to).and_then(|(_, p)| p.clone()) else {
                self.unroutable += 1;
                continue;
            };
            let request = wire::Request::Raft {
                region: self.region.clone(),
                message,
            };
            if self.direct.try_send(Direct { to: peer, request }).is_err() {
                self.unroutable += 1;
            } else {
                self.sent += 1;
            }
        }
        if !out.committed.is_empty() {
            self.quiet_until = None;
        }
        for c in out.committed {
            tracing::info!(index = c.index, term = c.term, command = ?c.command, "region command committed");
            if self.recent.len() == 32 {
                self.recent.remove(0);
            }
            self.recent.push(c);
        }
    }
}

impl Actor for RegionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.drain(ctx);
        ctx.run_interval(self.tick, |act, ctx| {
            if let Ok(core) = &mut act.core {
                core.tick();
            }
            act.drain(ctx);
        });
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            act.govern(ctx);
            act.acknowledge();
        });
    }
}

impl Handler<SpikesIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: SpikesIn, _: &mut Self::Context) {
        for spike in msg.0 {
            self.take_in(spike);
        }
    }
}

impl Handler<AcksIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: AcksIn, _: &mut Self::Context) {
        let acks = msg.acks;
        // Only the master this node's consensus view knows, in the term it knows: a
        // forged or stale acknowledgement would let an origin drop unapplied spikes.
        if acks.region != self.region
            || self.leading().is_some()
            || self.master() != Some((msg.from.clone(), acks.term))
        {
            return;
        }
        for (origin, mark) in acks.marks {
            if origin == self.own_peer {
                self.tell_own_mark(mark, msg.from.clone(), acks.term);
            }
            self.applied += self.ledger.advance(&origin, mark).len() as u64;
        }
    }
}

impl Handler<ReplayIn> for RegionActor {
    type Result = Result<(u64, u64), String>;

    fn handle(&mut self, msg: ReplayIn, _: &mut Self::Context) -> Self::Result {
        let Some(term) = self.leading() else {
            return Err("not the region master".into());
        };
        if let Some(s) = msg.spikes.iter().find(|s| s.origin != msg.from) {
            return Err(format!(
                "replayed spike {} belongs to {}, not to the sender",
                s.seq, s.origin
            ));
        }
        // What the origin no longer holds will never come: do not wait for it.
        self.applied += self
            .ledger
            .advance(&msg.from, msg.first.saturating_sub(1))
            .len() as u64;
        for spike in msg.spikes {
            self.take_in(spike);
        }
        Ok((term, self.ledger.contiguous(&msg.from)))
    }
}

impl Handler<crate::actor::Reincarnate> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::Reincarnate, _: &mut Self::Context) {
        self.own_incarnation = msg.0;
    }
}

impl Handler<GetIntake> for RegionActor {
    type Result = MessageResult<GetIntake>;

    fn handle(&mut self, _: GetIntake, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.ledger.stats())
    }
}

impl Handler<RaftIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: RaftIn, ctx: &mut Self::Context) {
        self.received += 1;
        let Ok(core) = &mut self.core else {
            return;
        };
        if let Err(e) = core.step(&msg.0) {
            self.refused += 1;
            tracing::debug!(error = %e, "consensus message refused");
        }
        self.drain(ctx);
    }
}

impl Handler<PeerNames> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: PeerNames, _: &mut Self::Context) {
        for m in &msg.0 {
            if let Some(entry) = self.names.get_mut(&member_id(&self.region, &m.name)) {
                entry.1 = Some(m.peer.clone());
            }
        }
        self.members = msg.0;
    }
}

impl Handler<GetRegion> for RegionActor {
    type Result = MessageResult<GetRegion>;

    fn handle(&mut self, _: GetRegion, _: &mut Self::Context) -> Self::Result {
        let (status, why, state) = match &self.core {
            Ok(core) => (Some(core.status()), None, core.state().clone()),
            Err(why) => (None, Some(why.clone()), RegionState::default()),
        };
        MessageResult(Snapshot {
            region: self.region.clone(),
            status,
            why,
            names: self.names.clone(),
            state,
            recent: self.recent.clone(),
            unroutable: self.unroutable,
            refused: self.refused,
            sent: self.sent,
            received: self.received,
        })
    }
}

impl Handler<Stop> for RegionActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
