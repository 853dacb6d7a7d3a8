//! The twin actor: the node's own twin ([`twin::Local`]) and, while the node leads its
//! region, its members' twins and their drift ([`twin::Keeper`]).
//!
//! It moves inputs in and outputs out: probe readings and the node's own spikes into the
//! local twin; reports out to the master (or into this node's keeper when it leads);
//! members' reports from the network into the keeper; drift events out as alerts and as
//! the census's drift brief. The comparison with the desired state is handed in by the
//! runtime ([`SetDesired`]), which reads the desired-state files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::actor::Stop;
use crate::actor::alert::{Clear, Raise};
use crate::actor::fleet::SetView;
use crate::actor::heartbeat::SetDrift;
use crate::actor::unix_ms;
use crate::drift::{Finding, Record};
use crate::node;
use crate::twin::keep::{self, Context as Facts, Held, Keeper};
use crate::twin::{self, Interest, Local, Twin};
use crate::wire;

/// Compares a twin with its node's desired state (see [`keep::Judge`]).
pub type JudgeFn = Arc<dyn Fn(&Twin, &Facts) -> Option<Vec<Finding>> + Send + Sync>;

/// A reading for the node's own twin.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Observe(pub twin::Input);

/// A member's twin, from the network.
#[derive(Debug, Message)]
#[rtype(result = "Result<BTreeMap<String, u64>, keep::Refusal>")]
pub struct TwinIn {
    pub from: node::Id,
    pub report: twin::Report,
}

/// The desired state, as last read: how to judge a twin, and what this node's own twin
/// must carry for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDesired {
    pub judge: JudgeFn,
    pub interest: Interest,
}

/// Where the actor's outputs go.
#[derive(Debug, Message, Default)]
#[rtype(result = "()")]
pub struct Connect {
    pub direct: Option<crate::outbox::DirectSender>,
    pub alerts: Option<Recipient<Raise>>,
    pub cleared: Option<Recipient<Clear>>,
    pub census: Option<Recipient<SetDrift>>,
}

/// Asks for a twin: this node's own, or (while leading) a member's.
#[derive(Debug, Message)]
#[rtype(result = "Option<Held>")]
pub struct GetTwin(pub node::Id);

/// Asks for the twins this node knows: its own, and its members' while it leads.
#[derive(Debug, Message)]
#[rtype(result = "Twins")]
pub struct GetTwins;

/// The twins this node knows.
#[derive(Debug, Clone)]
pub struct Twins {
    pub leading: bool,
    pub twins: Vec<Held>,
}

/// Asks for the region's drift, as this node (its master) judges it.
#[derive(Debug, Message)]
#[rtype(result = "Option<DriftView>")]
pub struct GetDrift;

/// The drift records of the region's master.
#[derive(Debug, Clone)]
pub struct DriftView {
    pub open: Vec<Record>,
    pub resolved: Vec<Record>,
    pub counts: crate::drift::Counts,
}

pub struct TwinActor {
    local: Local,
    keeper: Keeper,
    me: node::Id,
    region: String,
    master: Option<node::Id>,
    judge: Option<JudgeFn>,
    links: Connect,
    timer: Option<SpawnHandle>,
    /// Where dropped reports are counted (`/metrics`).
    drops: Option<crate::actor::CountDrops>,
}

impl std::fmt::Debug for TwinActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinActor")
            .field("me", &self.me)
            .field("leading", &self.keeper.leading())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SetDesired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetDesired")
            .field("interest", &self.interest)
            .finish_non_exhaustive()
    }
}

impl TwinActor {
    pub fn new(config: twin::Config, identity: twin::Identity) -> TwinActor {
        let me = node::Id::from(&identity.peer);
        let region = identity.region.clone();
        let mut local = Local::new(config);
        local.handle(Instant::now(), unix_ms(), twin::Input::Identity(identity));
        TwinActor {
            local,
            keeper: Keeper::new(region.clone(), 256),
            me,
            region,
            master: None,
            judge: None,
            links: Connect::default(),
            timer: None,
            drops: None,
        }
    }

    fn facts(&self) -> Facts {
        Facts {
            region_policy: Some(self.local.twin().policy.value.version.clone())
                .filter(|v| !v.is_empty()),
            services: self.keeper.services(),
        }
    }

    /// Runs `f` on the keeper with the region's facts and the judge in force (a node
    /// with no desired state read yet judges nothing).
    fn judged<R>(&mut self, f: impl FnOnce(&mut Keeper, &Facts, keep::Judge<'_>) -> R) -> R {
        let (facts, judge) = (self.facts(), self.judge.clone());
        let none = |_: &Twin, _: &Facts| None;
        let j: keep::Judge<'_> = match &judge {
            Some(j) => j.as_ref(),
            None => &none,
        };
        f(&mut self.keeper, &facts, j)
    }

    /// Raises and clears what drift `events` say, and gives the census the new brief.
    fn publish(&mut self, events: Vec<crate::drift::Event>) {
        if events.is_empty() {
            return;
        }
        let now = unix_ms();
        let (raise, clear) = keep::alerts(events, &self.region, now);
        if let Some(a) = &self.links.alerts {
            for alert in raise {
                if a.try_send(Raise(alert)).is_err() {
                    tracing::warn!("drift alert dropped: the alert queue is full");
                }
            }
        }
        if let Some(c) = &self.links.cleared {
            for key in clear {
                let _ = c.try_send(Clear { key });
            }
        }
        self.brief();
    }

    fn brief(&self) {
        if let Some(c) = &self.links.census {
            let brief = self
                .keeper
                .leading()
                .then(|| crate::census::Drift::of(self.keeper.drift()));
            let _ = c.try_send(SetDrift(brief));
        }
    }

    /// Takes `report` in as the master, or sends it to the master.
    fn deliver(&mut self, report: twin::Report) {
        if self.keeper.leading() {
            let me = self.me.clone();
            match self.judged(|k, facts, j| k.report(unix_ms(), &me, report, facts, j)) {
                Ok(events) => self.publish(events),
                Err(why) => tracing::debug!(%why, "own twin refused"),
            }
            return;
        }
        let (Some(direct), Some(master)) = (&self.links.direct, &self.master) else {
            return;
        };
        let msg = crate::outbox::Direct {
            to: master.clone(),
            request: wire::Request::Twin(Box::new(report)),
        };
        if direct.try_send(msg).is_err() {
            // The repair resend carries it later.
            crate::actor::count_drops(&self.drops, "twin_report", 1);
        }
    }

    fn rejudge(&mut self) {
        if !self.keeper.leading() {
            return;
        }
        let events = self.judged(|k, facts, j| k.rejudge(unix_ms(), facts, j));
        self.publish(events);
    }

    /// Wakes the local twin at its next deadline (and only then).
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = self.local.poll_timeout() {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                if let Some(report) = act.local.handle_timeout(Instant::now()) {
                    act.deliver(report);
                }
                act.arm(ctx);
            }));
        }
    }

    fn input(&mut self, input: twin::Input, ctx: &mut Context<Self>) {
        self.local.handle(Instant::now(), unix_ms(), input);
        self.arm(ctx);
    }
}

impl Actor for TwinActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::actor::OBSERVE_MAILBOX);
        self.arm(ctx);
    }
}

impl Handler<Observe> for TwinActor {
    type Result = ();

    fn handle(&mut self, msg: Observe, ctx: &mut Self::Context) {
        self.input(msg.0, ctx);
    }
}

impl Handler<SetView> for TwinActor {
    type Result = ();

    fn handle(&mut self, msg: SetView, ctx: &mut Self::Context) {
        let master = msg.view.master.map(|(m, _)| m);
        let was_leading = self.keeper.leading();
        self.keeper.lead(msg.leading.is_some());
        let members: Vec<node::Id> = msg.members.keys().cloned().collect();
        let events = self.keeper.members(unix_ms(), &members);
        self.publish(events);
        if was_leading != self.keeper.leading() {
            self.brief();
        }
        if master != self.master {
            self.master = master;
            if self.master.is_some() {
                self.input(twin::Input::MasterChanged, ctx);
            }
        }
    }
}

impl Handler<TwinIn> for TwinActor {
    type Result = Result<BTreeMap<String, u64>, keep::Refusal>;

    fn handle(&mut self, msg: TwinIn, _: &mut Self::Context) -> Self::Result {
        let TwinIn { from, report } = msg;
        let events = self.judged(|k, facts, j| k.report(unix_ms(), &from, report, facts, j))?;
        self.publish(events);
        Ok(self.keeper.since_of(&from))
    }
}

impl Handler<SetDesired> for TwinActor {
    type Result = ();

    fn handle(&mut self, msg: SetDesired, ctx: &mut Self::Context) {
        self.judge = Some(msg.judge);
        self.input(twin::Input::Interest(msg.interest), ctx);
        self.rejudge();
    }
}

impl Handler<crate::actor::SetDrops> for TwinActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::SetDrops, _: &mut Self::Context) {
        self.drops = Some(msg.0);
    }
}

impl Handler<Connect> for TwinActor {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.links = msg;
    }
}

impl TwinActor {
    /// This node's own twin, as held (while it leads) or as it stands.
    fn own(&self) -> Held {
        self.keeper.twin(&self.me).cloned().unwrap_or_else(|| Held {
            twin: self.local.twin().clone(),
            received_ms: unix_ms(),
            desired: false,
            drift_score: 0,
            stale_by_s: None,
        })
    }

    /// `held` with how long its policy has differed from this node's (the master's).
    fn with_staleness(&self, mut held: Held) -> Held {
        let mine = &self.local.twin().policy;
        let theirs = &held.twin.policy.value.version;
        held.stale_by_s = (!mine.value.version.is_empty() && *theirs != mine.value.version)
            .then(|| unix_ms().saturating_sub(mine.updated_ms) / 1000);
        held
    }
}

impl Handler<GetTwin> for TwinActor {
    type Result = Option<Held>;

    fn handle(&mut self, msg: GetTwin, _: &mut Self::Context) -> Self::Result {
        let held = if msg.0 == self.me {
            Some(self.own())
        } else {
            self.keeper.twin(&msg.0).cloned()
        };
        held.map(|h| self.with_staleness(h))
    }
}

impl Handler<GetTwins> for TwinActor {
    type Result = MessageResult<GetTwins>;

    fn handle(&mut self, _: GetTwins, _: &mut Self::Context) -> Self::Result {
        let mut twins: Vec<Held> = self.keeper.twins().cloned().collect();
        if !twins.iter().any(|h| twin::peer(&h.twin) == self.me) {
            twins.push(self.own());
        }
        let twins = twins.into_iter().map(|h| self.with_staleness(h)).collect();
        MessageResult(Twins {
            leading: self.keeper.leading(),
            twins,
        })
    }
}

impl Handler<GetDrift> for TwinActor {
    type Result = Option<DriftView>;

    fn handle(&mut self, _: GetDrift, _: &mut Self::Context) -> Self::Result {
        if !self.keeper.leading() {
            return None;
        }
        let d = self.keeper.drift();
        Some(DriftView {
            open: d.records().cloned().collect(),
            resolved: d.resolved().cloned().collect(),
            counts: d.counts(),
        })
    }
}

impl Handler<Stop> for TwinActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
