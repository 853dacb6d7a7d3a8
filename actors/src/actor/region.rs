//! The region actor: drives this member's [`Governor`] (founding, consensus, governance,
//! all decided there) and moves its inputs and outputs; it also runs the region's intake.
//!
//! - Inputs: the region's members pushed by the heartbeat actor ([`RegionMembers`]),
//!   consensus messages from peers ([`RaftIn`]), approvals to propose, and the timer,
//!   armed from [`Governor::poll_timeout`] (never a fixed interval).
//! - Outputs, in the governor's order: its durable state written (write + fsync) before
//!   any later consensus message leaves (the deltas appended, or the whole image after a
//!   snapshot, as [`Governor::take_save`] says), messages handed to the network driver as
//!   direct requests, committed commands recorded (approvals handed to the learners; a
//!   snapshot's approvals too, when the region's state arrives whole), and events
//!   pushed to whoever subscribed: the master of record and this node's part
//!   ([`SetView`] to the policy and fleet actors, [`MasterKnown`] to the spike encoder),
//!   what heartbeats must announce ([`SetRegion`]), duplicate names (logged; alerted by
//!   the master), a new incarnation when the region holds this one dead, and the work
//!   this node owns in the committed assignments ([`Assigned`], to whoever subscribed
//!   with [`SubscribeAssigned`]: the service probes and the audits).
//!
//! It also drives the region's intake ([`crate::intake::Intake`], sans-IO: exactly-once
//! application, acknowledgements fenced by term, replay acceptance), told of every change
//! of master by the governor's events: applied spikes go to the fleet actor while this
//! node leads, the master's marks are gossiped, and this node's own mark goes to the
//! spike encoder ([`Acked`]), which compacts the journal and replays what is missing.

use crate::actor::push::{Pushed, push};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actor::alert::Raise;
use crate::actor::fleet::{Intake, LearnedIn, ProposeApproval, SetView};
use crate::actor::heartbeat::{RegionMembers, SetRegion};
use crate::actor::{CountDrops, Reincarnate, SetDrops, Stop, count_drops, unix_ms};
use crate::fleet::Via;
use crate::governor::{self, Governor, NoMaster, Output, Save};
use crate::intake::Output as IntakeOutput;
use crate::ledger;
use crate::outbox::{self, Direct, DirectSender};
use crate::region::{Command, Committed, Durable, Image, Persist, RegionState, Status};
use crate::spike::Spike;
use crate::sync::Master;
use crate::{node, wire};

mod trust;
pub use trust::{EndorseIn, Trusting};

/// How often the master gossips its acknowledgements.
const ACK_EVERY: Duration = Duration::from_secs(1);

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

/// Whether this node knows its region's master (for the spike encoder's connectivity),
/// and which peer it is when it is not this node (where the encoder replays when no
/// master's acknowledgement names one).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct MasterKnown {
    pub known: bool,
    pub elsewhere: Option<node::Id>,
}

impl MasterKnown {
    fn of(master: Option<&(node::Id, u64)>, leading: bool) -> MasterKnown {
        MasterKnown {
            known: master.is_some(),
            elsewhere: master.filter(|_| !leading).map(|(p, _)| p.clone()),
        }
    }
}

/// The region's intake counters, per origin (peer id), for the API.
#[derive(Debug, Message)]
#[rtype(result = "BTreeMap<node::Id, ledger::Stats>")]
pub struct GetIntake;

/// A consensus message from a peer (`from`: the peer the network says sent it).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RaftIn {
    pub from: node::Id,
    pub bytes: Vec<u8>,
}

/// What the API shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub region: String,
    /// `None` when this node takes no part in consensus (see `no_master`).
    pub status: Option<Status>,
    /// Why this node knows no master (`None`: it knows one).
    pub no_master: Option<NoMaster>,
    /// Raft id → (name, peer id if known), for every member known.
    pub names: BTreeMap<u64, (String, Option<node::Id>)>,
    /// The founding voters of this node's group (empty while it has none).
    pub founders: Vec<u64>,
    pub state: RegionState,
    /// Live peers refused for a duplicate name: (name, holder, claimant).
    pub refused: Vec<(String, node::Id, node::Id)>,
    /// The last commands committed, newest last.
    pub recent: Vec<Committed>,
    pub unroutable: u64,
    pub refused_messages: u64,
    pub sent: u64,
    pub received: u64,
    /// Pushes of [`Assigned`] a subscriber's full mailbox refused (sent again later).
    pub assigned_dropped: u64,
    /// Snapshots not taken: the state was over the snapshot bound.
    pub snapshots_oversized: u64,
}

#[derive(Debug, Message)]
#[rtype(result = "Snapshot")]
pub struct GetRegion;

/// The work items of the region's committed assignments that this node (`own`) owns
/// (`probe:<name>`, `audit:<peer>`), all of them: pushed to subscribers whenever the
/// set changes, and at once on subscribing.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Assigned {
    pub own: node::Id,
    pub items: Arc<BTreeSet<String>>,
}

/// From now on, `0` receives every change of [`Assigned`] (and the current one now).
/// Pushes go through its bounded mailbox: one that does not fit is counted
/// (`assigned_dropped`, `fleetmesh_queue_dropped_total{queue="region_assigned"}`) and
/// sent again at the region actor's next step until it fits.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SubscribeAssigned(pub Recipient<Assigned>);

/// What to make durable for the member's consensus state.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// Replace what is stored with this image, atomically.
    Whole(&'a Durable),
    /// Append these deltas to what is stored (folded in order with [`Durable::apply`]).
    Append(&'a [Persist]),
}

/// Makes the member's consensus state durable (write + fsync).
pub type PersistRegion = Box<dyn FnMut(Write<'_>) -> std::io::Result<()> + Send>;

/// Starts a new incarnation (durably) and returns its number.
pub type NextIncarnation = Box<dyn FnMut() -> std::io::Result<u64> + Send>;

/// Where the region actor's events go (set once the other actors exist).
#[derive(Default)]
pub struct Connect {
    /// The master of record and the members, for the policy and fleet actors.
    pub view: Vec<Recipient<SetView>>,
    /// What heartbeats announce.
    pub facts: Option<Recipient<SetRegion>>,
    /// Whether a master is known, for the spike encoder.
    pub master_known: Option<Recipient<MasterKnown>>,
    /// Duplicate names and deaths, raised by the master.
    pub alerts: Option<Recipient<Raise>>,
    /// A dead member back alive: its `node_dead` alert clears.
    pub cleared: Option<Recipient<crate::actor::alert::Clear>>,
    /// The alert lifecycle's silences and acknowledgements as the log commits them.
    pub replicated: Option<Recipient<crate::actor::alert::Replicated>>,
    /// How to start a new incarnation, and who must learn it.
    pub reincarnate: Option<(NextIncarnation, Vec<Recipient<Reincarnate>>)>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect").finish_non_exhaustive()
    }
}

impl Message for Connect {
    type Result = ();
}

/// Where applied spikes and committed approvals go.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnectFleet {
    pub intake: Option<Recipient<Intake>>,
    pub learners: Vec<Recipient<LearnedIn>>,
}

pub struct RegionActor {
    /// The node's live event stream, once set ([`SetPush`]).
    push: Option<crate::actor::push::Push>,
    region: String,
    gov: Governor,
    persist: PersistRegion,
    direct: DirectSender,
    timer: Option<SpawnHandle>,
    recent: Vec<Committed>,
    refused: u64,
    /// Consensus messages the driver's queue could not take.
    dropped: u64,
    sent: u64,
    received: u64,
    own_peer: node::Id,
    own_name: String,
    own_role: String,
    intake: crate::intake::Intake,
    gossip: outbox::Sender,
    acked: Option<Recipient<Acked>>,
    /// The fleet actor's intake (spikes applied while this node leads).
    fleet_intake: Option<Recipient<Intake>>,
    /// Who learns committed approvals (policy and fleet actors).
    learners: Vec<Recipient<LearnedIn>>,
    /// Every approval committed (learners connected later are told them all).
    approvals: Vec<crate::fleet::Approval>,
    links: Connect,
    /// What this node owns in the committed assignments, and the applied index it was
    /// read at (read again only when the state moved).
    assigned: Assigned,
    assigned_at: Option<u64>,
    /// Subscribers to [`Assigned`], each with whether it still lacks the current set.
    assigned_to: Vec<(Recipient<Assigned>, bool)>,
    assigned_dropped: u64,
    /// Every item's owner in the committed assignments, to tell the event stream which
    /// ones moved.
    owners: BTreeMap<String, node::Id>,
    drops: Option<CountDrops>,
    /// Trust across regions, once set ([`Trusting`]).
    trust: Option<trust::TrustState>,
}

impl std::fmt::Debug for RegionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionActor")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl RegionActor {
    /// `stored`: the durable state of an earlier run, if any. `gossip` carries the
    /// master's acknowledgements; `acked` receives this node's own mark (the spike
    /// encoder).
    pub fn new(
        config: governor::Config,
        role: String,
        stored: Option<Durable>,
        persist: PersistRegion,
        direct: DirectSender,
        gossip: outbox::Sender,
        acked: Option<Recipient<Acked>>,
    ) -> Self {
        let (region, own_peer, own_name) = (
            config.region.clone(),
            config.own.clone(),
            config.name.clone(),
        );
        let intake = crate::intake::Intake::new(&region, own_peer.clone(), ACK_EVERY);
        let assigned = Assigned {
            own: own_peer.clone(),
            items: Arc::default(),
        };
        RegionActor {
            push: None,
            gov: Governor::new(config, stored, Instant::now()),
            region,
            persist,
            direct,
            timer: None,
            recent: Vec::new(),
            refused: 0,
            dropped: 0,
            sent: 0,
            received: 0,
            own_peer,
            own_name,
            own_role: role,
            intake,
            gossip,
            acked,
            fleet_intake: None,
            learners: Vec::new(),
            approvals: Vec::new(),
            links: Connect::default(),
            assigned,
            assigned_at: None,
            assigned_to: Vec::new(),
            assigned_dropped: 0,
            owners: BTreeMap::new(),
            drops: None,
            trust: None,
        }
    }

    fn leading(&self) -> Option<u64> {
        self.gov.leading()
    }

    /// Acts on the governor's outputs in order, then re-arms the timer.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        while let Some(o) = self.gov.poll_output() {
            match o {
                Output::Save => {
                    let written = match self.gov.take_save() {
                        Save::Whole => (self.persist)(Write::Whole(self.gov.durable())),
                        Save::Append(deltas) if deltas.is_empty() => Ok(()),
                        Save::Append(deltas) => (self.persist)(Write::Append(&deltas)),
                    };
                    if let Err(e) = written {
                        tracing::error!(error = %e, "cannot persist the region's consensus state; leaving consensus");
                        self.gov
                            .stop(format!("consensus state could not be persisted: {e}"));
                    }
                }
                Output::Send { to, bytes } => {
                    let request = wire::Request::Raft {
                        region: self.region.clone(),
                        message: bytes,
                    };
                    if self.direct.try_send(Direct { to, request }).is_err() {
                        self.dropped += 1;
                    } else {
                        self.sent += 1;
                    }
                }
                Output::Committed(c) => self.committed(c),
                Output::Installed(image) => self.installed(*image),
                Output::Master { master, leading } => {
                    match &master {
                        Some((peer, term)) => {
                            tracing::info!(master = %peer, term, leading, "master of the region")
                        }
                        None => tracing::info!("no master known for the region"),
                    }
                    push(&self.push, || Pushed::Master {
                        master: master.clone(),
                        leading,
                    });
                    let known = MasterKnown::of(master.as_ref(), leading);
                    self.intake.set_master(Instant::now(), master, leading);
                    self.drain_intake();
                    if let Some(r) = &self.links.master_known {
                        let _ = r.try_send(known);
                    }
                    self.push_view();
                    self.trust_step();
                }
                Output::Facts(f) => {
                    if let Some(r) = &self.links.facts {
                        let _ = r.try_send(SetRegion(f));
                    }
                }
                Output::Joined { founders, founder } => {
                    tracing::info!(?founders, founder, "joined the region's consensus");
                }
                Output::DuplicateName {
                    name,
                    holder,
                    claimant,
                    by_master,
                } => self.duplicate(name, holder, claimant, by_master),
                Output::Reincarnate => self.reincarnate(),
                Output::ExpectDiffers { ours, highest } => tracing::warn!(
                    ours,
                    highest,
                    "peers were started with a higher region.bootstrap_expect; founding waits for the highest"
                ),
            }
        }
        self.push_assigned();
        self.arm(ctx);
    }

    /// Reads what this node owns again if the committed state moved, and pushes it to the
    /// subscribers that lack it: those it changed for, and those a full mailbox refused.
    fn push_assigned(&mut self) {
        let state = self.gov.state();
        let applied = state.map(|s| s.applied);
        if applied != self.assigned_at {
            self.assigned_at = applied;
            let items: BTreeSet<String> = state
                .into_iter()
                .flat_map(|s| &s.assignments)
                .filter(|(_, owner)| **owner == self.own_peer)
                .map(|(item, _)| item.clone())
                .collect();
            if let Some(s) = state
                && s.assignments != self.owners
            {
                let moves = crate::actor::push::moved(&self.owners, &s.assignments);
                self.owners = s.assignments.clone();
                if !moves.is_empty() {
                    push(&self.push, || Pushed::Reassigned(Arc::new(moves)));
                }
            }
            if *self.assigned.items != items {
                self.assigned.items = Arc::new(items);
                for (_, behind) in &mut self.assigned_to {
                    *behind = true;
                }
            }
        }
        let mut dropped = 0;
        self.assigned_to.retain_mut(|(to, behind)| {
            if !*behind {
                return true;
            }
            match to.try_send(self.assigned.clone()) {
                Ok(()) => {
                    *behind = false;
                    true
                }
                Err(SendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(SendError::Closed(_)) => false,
            }
        });
        if dropped > 0 {
            self.assigned_dropped += dropped;
            count_drops(&self.drops, "region_assigned", dropped);
        }
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let next = match (self.gov.poll_timeout(), self.intake.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = next {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                let now = Instant::now();
                act.gov.handle_timeout(now);
                act.intake.handle_timeout(now);
                act.drain_intake();
                act.drain(ctx);
            }));
        }
    }

    fn push_view(&self) {
        if self.links.view.is_empty() {
            return;
        }
        let mut members: BTreeMap<node::Id, (String, String)> = self
            .gov
            .members()
            .iter()
            .map(|m| (m.peer.clone(), (m.name.clone(), m.role.clone())))
            .collect();
        members.insert(
            self.own_peer.clone(),
            (self.own_name.clone(), self.own_role.clone()),
        );
        let view = SetView {
            view: crate::fleet::View {
                region: self.region.clone(),
                master: self.gov.master(),
            },
            leading: self.gov.leading(),
            members,
            phases: self
                .gov
                .state()
                .map(|st| {
                    st.phases
                        .iter()
                        .filter(|(_, r)| r.phase != crate::region::Phase::Active)
                        .map(|(p, r)| (p.clone(), r.phase))
                        .collect()
                })
                .unwrap_or_default(),
            dead: self
                .gov
                .members()
                .iter()
                .filter(|m| m.status == crate::membership::Status::Dead)
                .map(|m| m.peer.clone())
                .collect(),
        };
        for r in &self.links.view {
            let _ = r.try_send(view.clone());
        }
    }

    /// As the master that committed them: a death raises `node_dead` about the member, a
    /// return clears it.
    fn death_alerts(&self, cmd: &Command) {
        match cmd {
            Command::DeclareDead { peer, incarnation } => {
                let Some(a) = &self.links.alerts else { return };
                if self
                    .gov
                    .state()
                    .is_some_and(|st| st.phase(peer) == crate::region::Phase::Decommissioning)
                {
                    // Its departure is the plan, not an incident.
                    tracing::info!(%peer, "a decommissioned member is gone");
                    return;
                }
                let member = self.gov.members().iter().find(|m| &m.peer == peer);
                let (name, role) =
                    member.map_or((peer.as_str(), ""), |m| (m.name.as_str(), m.role.as_str()));
                let alert = crate::alert::of_node_dead(
                    &self.region,
                    &self.own_name,
                    peer,
                    name,
                    role,
                    *incarnation,
                    unix_ms(),
                );
                if a.try_send(Raise(alert)).is_err() {
                    count_drops(&self.drops, "node_dead_alert", 1);
                }
            }
            Command::Alive { peer, .. } => {
                if let Some(r) = &self.links.cleared {
                    let key = crate::alert::node_dead_key(&self.region, peer);
                    if r.try_send(crate::actor::alert::Clear { key }).is_err() {
                        count_drops(&self.drops, "node_dead_alert", 1);
                    }
                }
            }
            _ => {}
        }
    }

    fn duplicate(&self, name: String, holder: node::Id, claimant: node::Id, by_master: bool) {
        if by_master {
            if let Some(a) = &self.links.alerts {
                let _ = a.try_send(Raise(crate::alert::of_duplicate_name(
                    &self.region,
                    &self.own_name,
                    &name,
                    &holder,
                    &claimant,
                    unix_ms(),
                )));
            }
            tracing::error!(%name, %holder, %claimant, "duplicate node name in the region: the claimant is refused until renamed");
        } else if claimant == self.own_peer {
            tracing::error!(%name, other = %holder, "another live node of this region holds this node's name (node.name): this node stays out of the region's consensus until it is renamed");
        } else {
            tracing::error!(%name, other = %claimant, "another live node of this region claims this node's name (node.name); it is refused until renamed");
        }
    }

    fn reincarnate(&mut self) {
        let Some((next, tell)) = &mut self.links.reincarnate else {
            return;
        };
        match next() {
            Ok(n) => {
                tracing::warn!(
                    new = n,
                    "the region holds this node dead (it was cut off); rejoining as a new incarnation"
                );
                self.gov.set_incarnation(Instant::now(), n);
                for r in tell.iter() {
                    let _ = r.try_send(Reincarnate(n));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot start a new incarnation"),
        }
    }

    /// The region's state arrived whole: the approvals it holds that this node has not
    /// seen go to the learners as committed ones do.
    fn installed(&mut self, image: Image) {
        self.replicate_all(image.state.clone());
        tracing::info!(
            index = image.state.applied,
            approvals = image.approvals.len(),
            "region state installed from a snapshot"
        );
        let known: BTreeSet<String> = self.approvals.iter().map(|a| a.id()).collect();
        let fresh: Vec<crate::fleet::Approval> = image
            .approvals
            .into_iter()
            .filter(|a| !known.contains(&a.id()))
            .collect();
        tell_learned(&self.learners, &fresh);
        self.approvals.extend(fresh);
    }

    /// Tells the alert lifecycle every silence and acknowledgement of `state` (the state
    /// was installed whole, or the alert actor connected).
    fn replicate_all(&self, state: RegionState) {
        if let Some(r) = &self.links.replicated {
            let msg = crate::actor::alert::Replicated {
                silences: state.silences.into_values().collect(),
                acks: state.acks.into_iter().collect(),
                resolved: Vec::new(),
                phases: state
                    .phases
                    .into_values()
                    .map(|r| (r.name, r.phase))
                    .collect(),
                notified: state
                    .notified
                    .entries
                    .into_iter()
                    .map(|(key, entry)| crate::alerting::nlog::Record { key, entry })
                    .collect(),
                region_alerts: state.region_alerts.into_values().collect(),
                region_cleared: Vec::new(),
            };
            if r.try_send(msg).is_err() {
                count_drops(&self.drops, "alert_replicated", 1);
            }
        }
    }

    fn committed(&mut self, c: Committed) {
        if matches!(c.command, Command::Phase(_)) {
            self.push_view();
        }
        if matches!(c.command, Command::Link(_)) {
            self.advance(Instant::now());
        }
        if matches!(c.command, Command::Silence(_)) && self.leading() == Some(c.term) {
            self.publish_silences();
        }
        let leading = self.leading().is_some();
        let replicated = match &c.command {
            Command::Silence(s) => Some(crate::actor::alert::Replicated {
                silences: vec![(**s).clone()],
                ..Default::default()
            }),
            Command::Ack { id, ack } => Some(crate::actor::alert::Replicated {
                acks: vec![(id.clone(), ack.clone())],
                ..Default::default()
            }),
            Command::Resolve { id, at_unix_ms } => Some(crate::actor::alert::Replicated {
                resolved: vec![(id.clone(), *at_unix_ms)],
                ..Default::default()
            }),
            Command::Notified(records) => Some(crate::actor::alert::Replicated {
                notified: records.clone(),
                ..Default::default()
            }),
            Command::RegionAlert(a) => Some(crate::actor::alert::Replicated {
                region_alerts: vec![(**a).clone()],
                ..Default::default()
            }),
            Command::RegionAlertCleared { key } => Some(crate::actor::alert::Replicated {
                region_cleared: vec![key.clone()],
                ..Default::default()
            }),
            // As the state recorded it (a transition the phases refuse is void).
            Command::Phase(p) => self
                .gov
                .state()
                .and_then(|st| st.phases.get(&p.peer))
                .map(|r| crate::actor::alert::Replicated {
                    phases: vec![(r.name.clone(), r.phase)],
                    ..Default::default()
                }),
            _ => None,
        };
        if leading && self.leading() == Some(c.term) {
            self.death_alerts(&c.command);
        }
        if let (Some(msg), Some(r)) = (replicated, &self.links.replicated)
            && r.try_send(msg).is_err()
        {
            // The member's lifecycle misses it until the next install or restart; the
            // log holds it.
            count_drops(&self.drops, "alert_replicated", 1);
        }
        if let Command::Approve(a) = &c.command {
            tracing::info!(index = c.index, term = c.term, id = %a.id(), subject = %a.pattern.subject, "approval committed");
            self.approvals.push((**a).clone());
            tell_learned(&self.learners, std::slice::from_ref(&**a));
            if leading && c.term == a.term {
                let publish = outbox::Publish {
                    topic: outbox::Topic::Fleet,
                    body: wire::Body::Approval(a.clone()),
                    delivery: outbox::Delivery::Retry,
                };
                if self.gossip.try_send(publish).is_err() {
                    // Committed in the region log: other regions miss it until learned
                    // again, never this one.
                    count_drops(&self.drops, "approval_outbox", 1);
                }
            }
        } else {
            tracing::info!(index = c.index, term = c.term, command = ?c.command, "region command committed");
        }
        if self.recent.len() == 32 {
            self.recent.remove(0);
        }
        self.recent.push(c);
    }

    /// As master: the region's silences to every region (a silence made anywhere holds
    /// everywhere), when one is committed and every half minute.
    fn publish_silences(&mut self) {
        let (Some(term), Some(state)) = (self.leading(), self.gov.state()) else {
            return;
        };
        if state.silences.is_empty() {
            return;
        }
        let body = crate::alerting::silence::Published {
            region: self.region.clone(),
            term,
            master: self.own_peer.clone(),
            silences: state.silences.values().cloned().collect(),
            proof: None,
        };
        let publish = outbox::Publish {
            topic: outbox::Topic::Fleet,
            body: wire::Body::Silences(Box::new(body)),
            delivery: outbox::Delivery::Retry,
        };
        if self.gossip.try_send(publish).is_err() {
            // Sent again within half a minute.
            count_drops(&self.drops, "silences_outbox", 1);
        }
    }

    /// Acts on the intake's outputs.
    fn drain_intake(&mut self) {
        while let Some(o) = self.intake.poll_output() {
            match o {
                IntakeOutput::Applied(spikes) => {
                    // Consensus never waits for the fleet brain: correlation misses what
                    // a full mailbox refuses, and the loss is counted.
                    if let Some(r) = &self.fleet_intake {
                        let n = spikes.len() as u64;
                        if r.try_send(Intake(spikes)).is_err() {
                            count_drops(&self.drops, "fleet_intake", n);
                        }
                    }
                }
                IntakeOutput::OwnMark { mark, master } => {
                    if let Some(r) = &self.acked
                        && r.try_send(Acked { mark, master }).is_err()
                    {
                        // The next mark covers this one.
                        count_drops(&self.drops, "own_mark", 1);
                    }
                }
                IntakeOutput::Gossip(acks) => {
                    let publish = outbox::Publish {
                        topic: outbox::Topic::Region(self.region.clone()),
                        body: wire::Body::Acks(acks),
                        delivery: outbox::Delivery::BestEffort,
                    };
                    if self.gossip.try_send(publish).is_err() {
                        // The next acknowledgements cover these.
                        count_drops(&self.drops, "acks_outbox", 1);
                    }
                }
            }
        }
    }
}

impl Handler<crate::actor::push::SetPush> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::push::SetPush, _: &mut Self::Context) {
        self.push = Some(msg.0);
    }
}

impl Actor for RegionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.drain(ctx);
    }
}

impl Handler<Connect> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) {
        self.links = msg;
        // Subscribers connected late learn the current state at once.
        if let Some(r) = &self.links.master_known {
            let master = self.gov.master();
            let _ = r.try_send(MasterKnown::of(master.as_ref(), self.leading().is_some()));
        }
        if let Some(r) = &self.links.facts {
            let _ = r.try_send(SetRegion(self.gov.facts().clone()));
        }
        if let Some(state) = self.gov.state() {
            self.replicate_all(state.clone());
        }
        self.push_view();
        self.drain(ctx);
    }
}

/// An operator's action a member sent to this node (as the region's master).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct OperatorIn {
    pub from: node::Id,
    pub action: crate::region::Operator,
}

impl Handler<crate::actor::alert::Replicate> for RegionActor {
    type Result = Result<(), String>;

    fn handle(
        &mut self,
        msg: crate::actor::alert::Replicate,
        ctx: &mut Self::Context,
    ) -> Self::Result {
        if self.leading().is_some() {
            let r = self
                .gov
                .propose(Instant::now(), &msg.0.command())
                .map_err(|e| format!("not taken by the region's log: {e}"));
            self.drain(ctx);
            return r;
        }
        let Some((master, _)) = self.gov.master() else {
            return Err("no master known: kept on this node until one is".into());
        };
        let request = wire::Request::Operator {
            region: self.region.clone(),
            action: msg.0,
        };
        self.direct
            .try_send(Direct {
                to: master,
                request,
            })
            .map_err(|_| "the network's queue is full".to_string())
    }
}

impl Handler<crate::actor::alert::ToLog> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::alert::ToLog, ctx: &mut Self::Context) {
        use crate::actor::alert::ToLog;
        if self.leading().is_none() {
            return;
        }
        let command = match msg {
            ToLog::Notified(records) => Command::Notified(records),
            ToLog::RegionAlert(a) => Command::RegionAlert(a),
            ToLog::RegionAlertCleared(key) => Command::RegionAlertCleared { key },
        };
        if let Err(e) = self.gov.propose(Instant::now(), &command) {
            tracing::debug!(error = %e, "an alert log entry not taken by the region's log");
        }
        self.drain(ctx);
    }
}

impl Handler<OperatorIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: OperatorIn, ctx: &mut Self::Context) {
        if self.leading().is_none() {
            // The sender asks again, of the master it learns of.
            tracing::debug!(from = %msg.from, "an operator action for the master, which this node is not");
            return;
        }
        if let Err(e) = self.gov.propose(Instant::now(), &msg.action.command()) {
            tracing::warn!(from = %msg.from, error = %e, "an operator action not taken by the region's log");
        }
        self.drain(ctx);
    }
}

impl Handler<RegionMembers> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: RegionMembers, ctx: &mut Self::Context) {
        self.gov.handle_members(
            Instant::now(),
            msg.members.as_ref().clone(),
            msg.held_dead_by,
        );
        self.push_view();
        self.drain(ctx);
    }
}

impl Handler<RaftIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: RaftIn, ctx: &mut Self::Context) {
        self.received += 1;
        if let Err(e) = self.gov.handle_raft(Instant::now(), &msg.from, &msg.bytes) {
            self.refused += 1;
            tracing::debug!(error = %e, "consensus message refused");
        }
        self.drain(ctx);
    }
}

impl Handler<GetRegion> for RegionActor {
    type Result = MessageResult<GetRegion>;

    fn handle(&mut self, _: GetRegion, _: &mut Self::Context) -> Self::Result {
        MessageResult(Snapshot {
            region: self.region.clone(),
            status: self.gov.status(),
            no_master: self.gov.no_master(),
            names: self
                .gov
                .names()
                .iter()
                .map(|(id, (n, p))| (*id, (n.clone(), Some(p.clone()))))
                .collect(),
            founders: self.gov.founders().to_vec(),
            state: self.gov.state().cloned().unwrap_or_default(),
            refused: self.gov.refused(),
            recent: self.recent.clone(),
            unroutable: self.gov.unroutable() + self.dropped,
            refused_messages: self.refused,
            sent: self.sent,
            received: self.received,
            assigned_dropped: self.assigned_dropped,
            snapshots_oversized: self.gov.oversized(),
        })
    }
}

impl Handler<SpikesIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: SpikesIn, _: &mut Self::Context) {
        push(&self.push, || Pushed::PeerSpikes(Arc::new(msg.0.clone())));
        self.intake.handle_spikes(msg.0);
        self.drain_intake();
    }
}

impl Handler<AcksIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: AcksIn, _: &mut Self::Context) {
        self.intake.handle_acks(&msg.from, msg.acks);
        self.drain_intake();
    }
}

impl Handler<ReplayIn> for RegionActor {
    type Result = Result<(u64, u64), String>;

    fn handle(&mut self, msg: ReplayIn, _: &mut Self::Context) -> Self::Result {
        let r = self.intake.handle_replay(&msg.from, msg.first, msg.spikes);
        self.drain_intake();
        r
    }
}

impl Handler<GetIntake> for RegionActor {
    type Result = MessageResult<GetIntake>;

    fn handle(&mut self, _: GetIntake, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.intake.stats())
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
        let r = self
            .gov
            .propose(Instant::now(), &Command::Approve(Box::new(msg.0)))
            .map_err(|e| format!("proposal not taken: {e}"));
        self.drain(ctx);
        r
    }
}

impl Handler<SubscribeAssigned> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: SubscribeAssigned, _: &mut Self::Context) {
        self.assigned_to.push((msg.0, true));
        self.push_assigned();
    }
}

impl Handler<SetDrops> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: SetDrops, _: &mut Self::Context) {
        self.drops = Some(msg.0);
    }
}

impl Handler<Stop> for RegionActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
