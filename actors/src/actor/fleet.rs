//! The fleet actor: the region master's [`Brain`] (consultations, learning, coordinated
//! changes) and, on every node, the fleet events it has seen.
//!
//! While this node leads its region, the region actor hands it every spike the intake
//! applied (once, in order); the brain judges them with each origin's role policy,
//! learns what policy approves, and groups identical changes. Patterns to learn are
//! signed with the node key and proposed to the region's log; fleet events become
//! alerts, and a suspected coordinated change is broadcast on the fleet topic as an
//! [`Emergency`]. Emergencies heard from other masters are checked (author and term) and
//! kept for the API.

use crate::actor::push::{Pushed, push};
pub use crate::fleet::Seen;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::actor::alert::Raise;
use crate::actor::unix_ms;
use crate::alert::{self, Alert};
use crate::correlate::{FleetEvent, Verdict};
use crate::fleet::{
    self, Answer, Approval, Brain, Effect, Emergency, Pattern, Rejection, Via, View,
};
use crate::outbox;
use crate::policy::Policy;
use crate::spike::Spike;
use crate::{node, wire};

/// Signs bytes with the node key.
pub type Sign = Box<dyn Fn(&[u8]) -> Vec<u8> + Send>;

/// The node key's signer; the public key (libp2p protobuf encoding) goes along.
pub struct Signer {
    pub public_key: Vec<u8>,
    pub sign: Sign,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

/// Reads every role's policy: role → policy (files that fail to parse are left out and
/// logged by the reader).
pub type ReadPolicies = Box<dyn FnMut() -> BTreeMap<String, Policy> + Send>;

/// What this node knows of its region's mastership and members (from the glue task).
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "()")]
pub struct SetView {
    pub view: View,
    /// The term this node leads, if it is the master.
    pub leading: Option<u64>,
    /// Peer → (name, role) of every member known, this node included.
    pub members: BTreeMap<node::Id, (String, String)>,
    /// Members whose lifecycle phase is not active, as the region's log has them.
    pub phases: BTreeMap<node::Id, crate::region::Phase>,
    /// Members this node holds dead.
    pub dead: BTreeSet<node::Id>,
}

impl SetView {
    /// Live members per role (not dead, not being decommissioned), this node included.
    pub fn live_by_role(&self) -> BTreeMap<String, usize> {
        let mut live = BTreeMap::new();
        for (peer, (_, role)) in &self.members {
            let leaving = self
                .phases
                .get(peer)
                .is_some_and(|p| *p == crate::region::Phase::Decommissioning);
            if !self.dead.contains(peer) && !leaving {
                *live.entry(role.clone()).or_insert(0) += 1;
            }
        }
        live
    }
}

/// Spikes the region's intake applied, while this node leads.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Intake(pub Vec<Spike>);

/// An approval: committed in the region's log, or heard on the fleet topic.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct LearnedIn {
    pub approval: Approval,
    pub via: Via,
    /// For gossip: the message's author and whether the signature verified.
    pub author: Option<node::Id>,
    pub signature_ok: bool,
}

/// A consultation from a region member.
#[derive(Debug, Message)]
#[rtype(result = "Result<Answer, String>")]
pub struct ConsultIn {
    pub from: node::Id,
    pub role: String,
    pub spike: Spike,
    /// Asked again at the end of the window the master said to wait.
    pub recheck: bool,
}

/// An operator approves a pattern (API); only the master takes it.
#[derive(Debug, Message)]
#[rtype(result = "Result<Approval, String>")]
pub struct Approve {
    pub pattern: Pattern,
    pub by: String,
}

/// An approval for the region actor to commit.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct ProposeApproval(pub Approval);

/// An emergency heard on the fleet topic, with its author.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EmergencyIn {
    pub author: node::Id,
    pub emergency: Emergency,
}

/// What the API shows.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub leading: Option<u64>,
    pub open_groups: usize,
    /// Fleet events still growing (a window after their last change).
    pub open_events: usize,
    pub events: Vec<Seen>,
    pub emergencies_rejected: u64,
    pub consultations: u64,
}

#[derive(Debug, Message)]
#[rtype(result = "Snapshot")]
pub struct GetFleet;

/// Fleet events kept for the API.
const EVENTS_KEPT: usize = 256;

pub struct FleetActor {
    /// The node's live event stream, once set ([`SetPush`]).
    push: Option<crate::actor::push::Push>,
    brain: Brain,
    read: ReadPolicies,
    reload: Duration,
    own: node::Id,
    setview: SetView,
    signer: Signer,
    region: Option<Recipient<ProposeApproval>>,
    alerts: Option<Recipient<Raise>>,
    gossip: outbox::Sender,
    events: VecDeque<Seen>,
    /// Raised events that grew since their alert was last raised, by key, with when each
    /// was raised: raised again once a second ([`GROWN_EVERY`]) so that a storm of subjects
    /// is one alert, updated.
    grown: BTreeMap<String, (FleetEvent, u64)>,
    /// Keys of the events whose emergency went out (at most one per event).
    emergencies_sent: VecDeque<String>,
    emergencies_rejected: u64,
    consultations: u64,
}

/// How often the alerts of fleet events that grew are raised again (updated).
const GROWN_EVERY: Duration = Duration::from_secs(1);

impl std::fmt::Debug for FleetActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetActor")
            .field("own", &self.own)
            .finish_non_exhaustive()
    }
}

/// Where the fleet actor's outputs go (set once the other actors exist).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub region: Option<Recipient<ProposeApproval>>,
    pub alerts: Option<Recipient<Raise>>,
}

impl FleetActor {
    pub fn new(
        config: fleet::Config,
        read: ReadPolicies,
        reload: Duration,
        own: node::Id,
        signer: Signer,
        gossip: outbox::Sender,
    ) -> Self {
        FleetActor {
            push: None,
            brain: Brain::new(config),
            read,
            reload,
            own,
            setview: SetView::default(),
            signer,
            region: None,
            alerts: None,
            gossip,
            events: VecDeque::new(),
            grown: BTreeMap::new(),
            emergencies_sent: VecDeque::new(),
            emergencies_rejected: 0,
            consultations: 0,
        }
    }

    fn member(&self, peer: &node::Id) -> (String, String) {
        self.setview
            .members
            .get(peer)
            .cloned()
            .unwrap_or_else(|| (peer.to_string(), "unknown".to_string()))
    }

    fn sign(&self, mut a: Approval) -> Approval {
        a.public_key = self.signer.public_key.clone();
        a.signature = (self.signer.sign)(&a.signed_bytes());
        a
    }

    fn effects(&mut self, effects: Vec<Effect>, now: u64) {
        for e in effects {
            match e {
                Effect::Learn { pattern, by } => {
                    let Some(term) = self.setview.leading else {
                        continue;
                    };
                    let a = Approval::new(
                        pattern,
                        &self.setview.view.region,
                        term,
                        self.own.clone(),
                        by,
                        now,
                    );
                    let a = self.sign(a);
                    tracing::info!(id = %a.id(), subject = %a.pattern.subject, by = %a.by, "learning a pattern");
                    if let Some(r) = &self.region {
                        let _ = r.try_send(ProposeApproval(a));
                    }
                }
                Effect::Event { event, new, worse } => self.event(event, new, worse, now),
            }
        }
    }

    fn raise(&self, alert: Alert) {
        if let Some(a) = &self.alerts {
            let _ = a.try_send(Raise(alert));
        }
    }

    fn keep(&mut self, seen: Seen) {
        push(&self.push, || Pushed::Fleet(Box::new(seen.clone())));
        if let Some(old) = self.events.iter_mut().find(|s| s.key == seen.key) {
            *old = seen;
            return;
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(seen);
    }

    /// A fleet event raised or grown: kept for the API; a new one raises its alert, a
    /// grown one has it raised again (at once if its verdict got worse, else within
    /// [`GROWN_EVERY`]); a suspected coordinated change sends one emergency.
    fn event(&mut self, event: FleetEvent, new: bool, worse: bool, now: u64) {
        let region = self.setview.view.region.clone();
        let term = self.setview.leading.unwrap_or_default();
        let key = fleet::fleet_key(&region, &event);
        let raised_at = self
            .events
            .iter()
            .find(|s| s.key == key)
            .map_or(now, |s| s.raised_at_unix_ms);
        self.keep(Seen {
            key: key.clone(),
            region: region.clone(),
            term,
            master: self.own.clone(),
            event: event.clone(),
            raised_at_unix_ms: raised_at,
            received_at_unix_ms: now,
            source: "raised",
        });
        if !new && !worse {
            self.grown.insert(key, (event, raised_at));
            return;
        }
        self.grown.remove(&key);
        self.raise_event(&event, raised_at);
        if event.verdict == Verdict::SuspectedCoordinatedChange
            && !self.emergencies_sent.contains(&key)
        {
            if self.emergencies_sent.len() == EVENTS_KEPT {
                self.emergencies_sent.pop_front();
            }
            self.emergencies_sent.push_back(key);
            let e = Emergency {
                region,
                term,
                master: self.own.clone(),
                raised_at_unix_ms: now,
                event,
                proof: None,
            };
            let _ = self.gossip.try_send(outbox::Publish {
                topic: outbox::Topic::Fleet,
                body: wire::Body::Emergency(Box::new(e)),
                delivery: outbox::Delivery::Retry,
            });
        }
    }

    /// Raises (or raises again, updated) the alert of a fleet event.
    fn raise_event(&self, event: &FleetEvent, raised_at: u64) {
        let region = &self.setview.view.region;
        let term = self.setview.leading.unwrap_or_default();
        let names: Vec<String> = event.origins.keys().map(|p| self.member(p).0).collect();
        let a = alert::of_fleet_event(
            region,
            term,
            &self.member(&self.own).0,
            event,
            &names,
            raised_at,
        );
        tracing::warn!(verdict = %a.action, subject = %event.fingerprint.subject, subjects = event.subjects_total, servers = names.len(), "fleet event");
        self.raise(a);
    }

    /// Raises again the alerts of the events that grew.
    fn raise_grown(&mut self) {
        for (event, raised_at) in std::mem::take(&mut self.grown).into_values() {
            self.raise_event(&event, raised_at);
        }
    }

    fn reload(&mut self) {
        let policies = (self.read)();
        self.brain.set_policies(policies);
    }
}

impl Handler<crate::actor::push::SetPush> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::push::SetPush, _: &mut Self::Context) {
        self.push = Some(msg.0);
    }
}

impl Actor for FleetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        self.reload();
        ctx.run_interval(self.reload, |act, _| act.reload());
        ctx.run_interval(Duration::from_secs(1), |act, _| act.brain.expire(unix_ms()));
        ctx.run_interval(GROWN_EVERY, |act, _| act.raise_grown());
    }
}

impl Handler<Connect> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.region = msg.region;
        self.alerts = msg.alerts;
    }
}

impl Handler<SetView> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: SetView, _: &mut Self::Context) {
        self.brain.set_live(msg.live_by_role());
        self.setview = msg;
    }
}

impl Handler<Intake> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: Intake, _: &mut Self::Context) {
        if self.setview.leading.is_none() {
            return;
        }
        let now = unix_ms();
        for spike in &msg.0 {
            let role = self.member(&spike.origin).1;
            let out = self.brain.intake(spike, &role, now);
            self.effects(out, now);
        }
    }
}

impl Handler<LearnedIn> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: LearnedIn, _: &mut Self::Context) {
        if msg.via == Via::Log && msg.approval.region == self.setview.view.region {
            self.brain.learned(msg.approval, unix_ms());
        }
    }
}

impl Handler<ConsultIn> for FleetActor {
    type Result = Result<Answer, String>;

    fn handle(&mut self, msg: ConsultIn, _: &mut Self::Context) -> Self::Result {
        let Some(term) = self.setview.leading else {
            return Err(format!(
                "not the master of region {}",
                self.setview.view.region
            ));
        };
        if msg.spike.origin != msg.from {
            return Err(format!(
                "spike {} belongs to {}, not to the sender",
                msg.spike.seq, msg.spike.origin
            ));
        }
        self.consultations += 1;
        let now = unix_ms();
        Ok(self.brain.consult(
            &msg.spike,
            &msg.role,
            &self.setview.view.region,
            term,
            now,
            msg.recheck,
        ))
    }
}

impl Handler<Approve> for FleetActor {
    type Result = ResponseFuture<Result<Approval, String>>;

    fn handle(&mut self, msg: Approve, _: &mut Self::Context) -> Self::Result {
        let checked = self.approval(msg);
        let region = self.region.clone();
        Box::pin(async move {
            let a = checked?;
            let Some(r) = region else {
                return Err("this node takes no part in its region's consensus".to_string());
            };
            // The region actor refuses when this node no longer leads: say so, not 200.
            r.send(ProposeApproval(a.clone()))
                .await
                .map_err(|e| format!("region actor unavailable: {e}"))??;
            Ok(a)
        })
    }
}

impl FleetActor {
    /// An operator's approval, signed, if this node leads its region.
    fn approval(&self, msg: Approve) -> Result<Approval, String> {
        let Some(term) = self.setview.leading else {
            let master = self.setview.view.master.as_ref().map_or_else(
                || "none known".to_string(),
                |(m, t)| format!("{} (term {t})", self.member(m).0),
            );
            return Err(format!(
                "this node is not the master of region {}; the master is {master}",
                self.setview.view.region
            ));
        };
        if msg.pattern.roles.is_empty() {
            return Err("an approval names at least one role".into());
        }
        let a = Approval::new(
            msg.pattern,
            &self.setview.view.region,
            term,
            self.own.clone(),
            msg.by,
            unix_ms(),
        );
        Ok(self.sign(a))
    }
}

impl Handler<EmergencyIn> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: EmergencyIn, _: &mut Self::Context) {
        let e = msg.emergency;
        let now = unix_ms();
        let checked = if msg.author != e.master {
            Err(Rejection::NotAuthor {
                author: msg.author,
                claimed: e.master.clone(),
            })
        } else {
            self.brain
                .check_master(&self.setview.view, &e.region, e.term, &e.master)
        };
        if let Err(why) = checked {
            self.emergencies_rejected += 1;
            tracing::warn!(%why, region = %e.region, "emergency refused");
            return;
        }
        tracing::error!(region = %e.region, subject = %e.event.fingerprint.subject, servers = e.event.origins.len(), "emergency: suspected coordinated change in the fleet");
        self.keep(Seen {
            key: e.key(),
            region: e.region,
            term: e.term,
            master: e.master,
            event: e.event,
            raised_at_unix_ms: e.raised_at_unix_ms,
            received_at_unix_ms: now,
            source: "emergency",
        });
    }
}

impl Handler<GetFleet> for FleetActor {
    type Result = MessageResult<GetFleet>;

    fn handle(&mut self, _: GetFleet, _: &mut Self::Context) -> Self::Result {
        MessageResult(Snapshot {
            leading: self.setview.leading,
            open_groups: self.brain.open_groups(),
            open_events: self.brain.open_events(),
            events: self.events.iter().cloned().collect(),
            emergencies_rejected: self.emergencies_rejected,
            consultations: self.consultations,
        })
    }
}
