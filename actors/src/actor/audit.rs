//! The audit actor: a thin shell around [`crate::audit::Auditor`]. It hands the core the
//! peers this node audits ([`Audited`]: made here from the assignments the region actor
//! pushes, [`Assigned`], and the liveness the heartbeat actor pushes, [`RegionMembers`]), the spikes heard over gossip ([`Heard`]), the
//! answers to its digest requests ([`Answered`]) and the time; it sends the requests the
//! core asks for through the network driver and passes observations to the spike encoder.
//! It decides nothing.
//!
//! The audited side is [`BaselineDigest`], answered by the file actor.

use std::collections::BTreeMap;
use std::time::Instant;

use actix::prelude::*;

use crate::actor::Stop;
use crate::actor::heartbeat::RegionMembers;
use crate::actor::region::Assigned;
use crate::actor::spikes::Observe;
use crate::audit::{self, Answer, Auditor, Input, Output, Report, Subject};
use crate::membership::Status;
use crate::outbox::{Direct, DirectSender};
use crate::spike::Kind;
use crate::{node, wire};

/// The peers this node audits now (all of them; replaces the last list).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Audited(pub Vec<Subject>);

/// Spikes of one gossip message signed by `from`: (origin, seq, kind).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Heard {
    pub from: node::Id,
    pub spikes: Vec<(node::Id, u64, Kind)>,
}

/// `from` answered a digest request, or it failed (the text says why).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Answered {
    pub from: node::Id,
    pub answer: Result<Answer, String>,
}

/// This node's audits, for the API.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Report>")]
pub struct GetAudits;

/// Asked of the file actor: this node's answer to a digest request, or why it has none.
#[derive(Debug, Message)]
#[rtype(result = "Result<Answer, String>")]
pub struct BaselineDigest;

pub struct AuditActor {
    core: Auditor,
    region: String,
    direct: DirectSender,
    spikes: Recipient<Observe>,
    timer: Option<SpawnHandle>,
    /// Requests the driver's queue had no room for.
    pub not_sent: u64,
    /// The peers the region's assignments give this node to audit ([`Assigned`]).
    assigned: Option<Vec<node::Id>>,
    /// The region's members as the membership view sees them ([`RegionMembers`]).
    view: BTreeMap<node::Id, (String, Status)>,
}

impl std::fmt::Debug for AuditActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditActor")
            .field("audited", &self.core.assigned().count())
            .finish_non_exhaustive()
    }
}

impl AuditActor {
    pub fn new(
        core: Auditor,
        region: String,
        direct: DirectSender,
        spikes: Recipient<Observe>,
    ) -> Self {
        AuditActor {
            core,
            region,
            direct,
            spikes,
            timer: None,
            not_sent: 0,
            assigned: None,
            view: BTreeMap::new(),
        }
    }

    /// Hands the core the audited peers with their liveness (a peer the view does not
    /// know yet is joining).
    fn audit(&mut self, ctx: &mut Context<Self>) {
        let Some(peers) = &self.assigned else {
            return;
        };
        let subjects = peers
            .iter()
            .map(|p| {
                let (name, status) = match self.view.get(p) {
                    Some((name, status)) => (Some(name.clone()), *status),
                    None => (None, Status::Joining),
                };
                Subject {
                    peer: p.clone(),
                    name,
                    status,
                }
            })
            .collect();
        self.input(Input::Audited(subjects), ctx);
    }

    fn input(&mut self, input: Input, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut observed = Vec::new();
        let mut failed = Vec::new();
        for output in self.core.handle(now, input) {
            match output {
                Output::Ask(to) => {
                    let request = wire::Request::Digest {
                        region: self.region.clone(),
                    };
                    let direct = Direct {
                        to: to.clone(),
                        request,
                    };
                    if self.direct.try_send(direct).is_err() {
                        self.not_sent += 1;
                        failed.push(to);
                    }
                }
                Output::Observe(o) => observed.push(o),
            }
        }
        for to in failed {
            let answer = Err("the network driver's queue is full".to_string());
            for output in self.core.handle(now, Input::Answered { from: to, answer }) {
                if let Output::Observe(o) = output {
                    observed.push(o);
                }
            }
        }
        if !observed.is_empty() {
            crate::actor::hand_on(ctx, &self.spikes, crate::actor::observe_batches(observed));
        }
        self.arm(ctx);
    }

    /// Wakes the core at its next deadline (and only then).
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = self.core.poll_timeout() {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.input(Input::Timeout, ctx);
            }));
        }
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Audited> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: Audited, ctx: &mut Self::Context) {
        self.input(Input::Audited(msg.0), ctx);
    }
}

/// The region's committed assignments, pushed when what this node owns changes.
impl Handler<Assigned> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: Assigned, ctx: &mut Self::Context) {
        let peers = audit::audited(msg.items.iter(), &msg.own);
        if self.assigned.as_ref() == Some(&peers) {
            return;
        }
        if self.assigned.is_some() || !peers.is_empty() {
            tracing::info!(peers = ?peers, "peers audited by this node");
        }
        self.assigned = Some(peers);
        self.audit(ctx);
    }
}

/// The region's members, pushed when one appears or changes: the audited peers' liveness.
impl Handler<RegionMembers> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: RegionMembers, ctx: &mut Self::Context) {
        self.view = msg
            .members
            .iter()
            .map(|m| (m.peer.clone(), (m.name.clone(), m.status)))
            .collect();
        if self.assigned.as_ref().is_some_and(|p| !p.is_empty()) {
            self.audit(ctx);
        }
    }
}

impl Handler<Heard> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: Heard, ctx: &mut Self::Context) {
        self.input(
            Input::Heard {
                from: msg.from,
                spikes: msg.spikes,
            },
            ctx,
        );
    }
}

impl Handler<Answered> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: Answered, ctx: &mut Self::Context) {
        self.input(
            Input::Answered {
                from: msg.from,
                answer: msg.answer,
            },
            ctx,
        );
    }
}

impl Handler<GetAudits> for AuditActor {
    type Result = MessageResult<GetAudits>;

    fn handle(&mut self, _: GetAudits, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.reports(Instant::now()))
    }
}

impl Handler<Stop> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
