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
//! A member's Raft id is derived from `<region>/<name>`; the peer id behind each name is
//! learned from the membership view ([`PeerNames`]). The founding voters are either named
//! in settings (`region.voters`: every node computes the same set on its own) or, when
//! none are named, the first to join founds the region alone: a node without consensus
//! state waits `region.bootstrap_ms` for a peer to announce its group's founders (in
//! heartbeats) and joins that group; if nobody does, the oldest live master-eligible
//! member (lowest incarnation, then name) founds it and everyone else joins it.
//!
//! The master grows and heals the voter set, one membership change at a time: every live
//! member becomes a learner (it replicates the log, so it knows the master, the term and
//! the assignments), eligible learners are promoted, oldest first, up to
//! `region.max_voters`, and a voter dead for `region.replace_dead_voter_s` is removed so
//! that a live learner takes its place.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actor::Stop;
use crate::actor::fleet::{Intake, LearnedIn, ProposeApproval};
use crate::fleet::Via;
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
/// Origins per acknowledgement message.
const ACKS_PER_MESSAGE: usize = 400;

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
    pub role: String,
    pub peer: node::Id,
    pub status: Liveness,
    pub incarnation: u64,
    /// The founding voters of the group it belongs to (empty: none yet).
    pub founders: Vec<u64>,
    /// Whether it may become a voter.
    pub eligible: bool,
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
    /// Raft id → (name, peer id if known), for every member known.
    pub names: BTreeMap<u64, (String, Option<node::Id>)>,
    /// The founding voters of this node's group (empty while it has none).
    pub founders: Vec<u64>,
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
    own_name: String,
    founders: Vec<u64>,
    /// Waiting to found or join a group since then (no voters named, nothing stored).
    waiting_since: Option<Instant>,
    bootstrap: Duration,
    max_voters: usize,
    replace_after: Duration,
    eligible: bool,
    consensus: region::Config,
    /// Voters seen dead, since when.
    dead_since: BTreeMap<u64, Instant>,
    /// The fleet actor's intake (spikes applied while this node leads).
    fleet_intake: Option<Recipient<Intake>>,
    /// Who learns committed approvals (policy and fleet actors).
    learners: Vec<Recipient<LearnedIn>>,
    /// Every approval committed (learners connected later are told them all).
    approvals: Vec<crate::fleet::Approval>,
}

/// Where applied spikes and committed approvals go.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnectFleet {
    pub intake: Option<Recipient<Intake>>,
    pub learners: Vec<Recipient<LearnedIn>>,
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
    /// Names of the founding voters (up to 5); empty: the first to join founds.
    pub voters: Vec<String>,
    pub tick: Duration,
    pub consensus: region::Config,
    /// How long a node without consensus state waits to hear of a group before the
    /// oldest founds one.
    pub bootstrap: Duration,
    /// Voters the master keeps, promoting learners (at most 5).
    pub max_voters: usize,
    /// A voter dead this long is removed from the voters.
    pub replace_after: Duration,
    /// Whether this node may become a voter.
    pub eligible: bool,
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
        let mut names: BTreeMap<u64, (String, Option<node::Id>)> = config
            .voters
            .iter()
            .map(|n| (member_id(&config.region, n), (n.clone(), None)))
            .collect();
        let own = member_id(&config.region, &config.own_name);
        names.insert(
            own,
            (config.own_name.clone(), Some(config.own_peer.clone())),
        );
        let named: Vec<u64> = config
            .voters
            .iter()
            .map(|n| member_id(&config.region, n))
            .collect();
        let mut waiting_since = None;
        let (core, durable, founders) = match stored {
            Some(d) => {
                // Stores written before founders were recorded: the named voters.
                let founders = if d.founders.is_empty() {
                    named.clone()
                } else {
                    d.founders.clone()
                };
                (
                    Region::restore(own, d.clone(), &config.consensus).map_err(|e| e.to_string()),
                    d,
                    founders,
                )
            }
            None if !named.is_empty() => (
                Region::new(own, &named, &config.consensus).map_err(|e| e.to_string()),
                Durable {
                    founders: named.clone(),
                    ..Durable::default()
                },
                named.clone(),
            ),
            None => {
                waiting_since = Some(Instant::now());
                (
                    Err("waiting to join the region's consensus (or to found it)".into()),
                    Durable::default(),
                    Vec::new(),
                )
            }
        };
        if let (Err(why), None) = (&core, waiting_since) {
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
            own_name: config.own_name,
            founders,
            waiting_since,
            bootstrap: config.bootstrap,
            max_voters: config.max_voters.clamp(1, 5),
            replace_after: config.replace_after,
            eligible: config.eligible,
            consensus: config.consensus,
            dead_since: BTreeMap::new(),
            fleet_intake: None,
            learners: Vec::new(),
            approvals: Vec::new(),
        }
    }

    /// Without consensus state: join the group a peer announces, or, after the
    /// bootstrap wait with none announced, let the oldest eligible live member found one.
    fn found_or_join(&mut self, ctx: &mut Context<Self>) {
        let Some(since) = self.waiting_since else {
            return;
        };
        let announced = self
            .members
            .iter()
            .find(|m| !m.founders.is_empty())
            .map(|m| m.founders.clone());
        let founders = match announced {
            Some(f) => f,
            None if since.elapsed() < self.bootstrap => return,
            None => {
                let me = self
                    .eligible
                    .then(|| (self.own_incarnation, self.own_name.clone()));
                let others = self
                    .members
                    .iter()
                    .filter(|m| m.eligible && m.status == Liveness::Alive)
                    .map(|m| (m.incarnation, m.name.clone()));
                let Some((_, oldest)) = me.into_iter().chain(others).min() else {
                    return;
                };
                vec![member_id(&self.region, &oldest)]
            }
        };
        let own = member_id(&self.region, &self.own_name);
        match Region::new(own, &founders, &self.consensus) {
            Ok(core) => {
                tracing::info!(
                    ?founders,
                    founder = founders.contains(&own),
                    "joined the region's consensus"
                );
                self.core = Ok(core);
                self.durable = Durable {
                    founders: founders.clone(),
                    ..Durable::default()
                };
                self.founders = founders;
                self.waiting_since = None;
                self.drain(ctx);
            }
            Err(e) => tracing::warn!(error = %e, "cannot join the region's consensus"),
        }
    }

    /// As master: one membership change toward every live member replicating the log,
    /// `max_voters` live voters, and no voter dead for longer than `replace_after`.
    fn reconfigure(&mut self) {
        let Ok(core) = &mut self.core else {
            return;
        };
        let status = core.status();
        if status.role != Role::Leader {
            self.dead_since.clear();
            return;
        }
        let by_id: BTreeMap<u64, &MemberView> = self
            .members
            .iter()
            .map(|m| (member_id(&self.region, &m.name), m))
            .collect();
        let now = Instant::now();
        let alive = |id: &u64| {
            id == &status.id
                || by_id
                    .get(id)
                    .is_some_and(|m| matches!(m.status, Liveness::Alive | Liveness::Suspect))
        };
        for v in &status.voters {
            if alive(v) {
                self.dead_since.remove(v);
            } else {
                self.dead_since.entry(*v).or_insert(now);
            }
        }
        let change = if let Some((&gone, _)) = self
            .dead_since
            .iter()
            .find(|(_, t)| now.duration_since(**t) >= self.replace_after)
        {
            self.dead_since.remove(&gone);
            tracing::warn!(voter = gone, "replacing a dead voter");
            core.remove_voter(gone)
        } else if let Some((&id, _)) = by_id.iter().find(|(id, m)| {
            m.status == Liveness::Alive
                && !status.voters.contains(id)
                && !status.learners.contains(id)
        }) {
            core.add_learner(id)
        } else if status.voters.len() < self.max_voters
            && let Some(id) = status
                .learners
                .iter()
                .filter_map(|id| by_id.get(id).map(|m| (m.incarnation, &m.name, *id, m)))
                .filter(|(_, _, _, m)| m.eligible && m.status == Liveness::Alive)
                .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
                .map(|(_, _, id, _)| id)
        {
            core.add_voter(id)
        } else {
            return;
        };
        if let Err(e) = change {
            tracing::debug!(error = %e, "membership change not taken now");
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

    fn take_in(&mut self, spike: Spike) -> Vec<Spike> {
        let origin = spike.origin.clone();
        let seq = spike.seq;
        self.ledger.offer(&origin, seq, spike)
    }

    /// Counts applied spikes and, while leading, hands them to the fleet actor.
    fn release(&mut self, spikes: Vec<Spike>) {
        self.applied += spikes.len() as u64;
        if spikes.is_empty() || self.leading().is_none() {
            return;
        }
        if let Some(r) = &self.fleet_intake {
            let _ = r.try_send(Intake(spikes));
        }
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
        // A mark is ~70 bytes: chunks keep each message well inside one frame.
        for chunk in marks.chunks(ACKS_PER_MESSAGE) {
            let publish = outbox::Publish {
                topic: outbox::Topic::Region(self.region.clone()),
                body: wire::Body::Acks(wire::Acks {
                    region: self.region.clone(),
                    term,
                    marks: chunk.to_vec(),
                }),
                delivery: outbox::Delivery::BestEffort,
            };
            let _ = self.gossip.try_send(publish);
        }
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
        for item in state.assignments.keys() {
            if !target.contains_key(item) {
                commands.push(Command::Unassign { item: item.clone() });
            }
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
        let leading = core.status().role == Role::Leader;
        for c in out.committed {
            if let Command::Approve(a) = &c.command {
                tracing::info!(index = c.index, term = c.term, id = %a.id(), subject = %a.pattern.subject, "approval committed");
                self.approvals.push((**a).clone());
                tell_learned(&self.learners, std::slice::from_ref(&**a));
                if leading && c.term == a.term {
                    let _ = self.gossip.try_send(outbox::Publish {
                        topic: outbox::Topic::Fleet,
                        body: wire::Body::Approval(a.clone()),
                        delivery: outbox::Delivery::Retry,
                    });
                }
                self.keep_recent(c);
                continue;
            }
            tracing::info!(index = c.index, term = c.term, command = ?c.command, "region command committed");
            self.keep_recent(c);
        }
    }

    fn keep_recent(&mut self, c: Committed) {
        if self.recent.len() == 32 {
            self.recent.remove(0);
        }
        self.recent.push(c);
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
            act.reconfigure();
            act.drain(ctx);
            act.acknowledge();
        });
    }
}

impl Handler<SpikesIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: SpikesIn, _: &mut Self::Context) {
        let mut applied = Vec::new();
        for spike in msg.0 {
            applied.extend(self.take_in(spike));
        }
        self.release(applied);
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
            let released = self.ledger.advance(&origin, mark);
            self.release(released);
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
        let mut applied = self.ledger.advance(&msg.from, msg.first.saturating_sub(1));
        for spike in msg.spikes {
            applied.extend(self.take_in(spike));
        }
        self.release(applied);
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

    fn handle(&mut self, msg: PeerNames, ctx: &mut Self::Context) {
        for m in &msg.0 {
            self.names.insert(
                member_id(&self.region, &m.name),
                (m.name.clone(), Some(m.peer.clone())),
            );
        }
        self.members = msg.0;
        self.found_or_join(ctx);
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
            founders: self.founders.clone(),
            state,
            recent: self.recent.clone(),
            unroutable: self.unroutable,
            refused: self.refused,
            sent: self.sent,
            received: self.received,
        })
    }
}

fn tell_learned(learners: &[Recipient<LearnedIn>], approvals: &[crate::fleet::Approval]) {
    for a in approvals {
        for r in learners {
            let _ = r.try_send(LearnedIn {
                approval: a.clone(),
                via: Via::Log,
                author: None,
                signature_ok: true,
            });
        }
    }
}

impl Handler<ConnectFleet> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectFleet, _: &mut Self::Context) {
        self.fleet_intake = msg.intake;
        self.learners = msg.learners;
        tell_learned(&self.learners, &self.approvals);
    }
}

impl Handler<ProposeApproval> for RegionActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: ProposeApproval, ctx: &mut Self::Context) -> Self::Result {
        let Some(term) = self.leading() else {
            return Err(format!("not the master of region {}", self.region));
        };
        if msg.0.term != term || msg.0.region != self.region {
            return Err(format!(
                "approval for region {} term {}; this node leads {} in term {term}",
                msg.0.region, msg.0.term, self.region
            ));
        }
        let Ok(core) = &mut self.core else {
            return Err("consensus not running".into());
        };
        core.propose(&Command::Approve(Box::new(msg.0)))
            .map_err(|e| format!("proposal not taken: {e}"))?;
        self.drain(ctx);
        Ok(())
    }
}

impl Handler<Stop> for RegionActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
