//! The anomaly actor: a thin shell around [`crate::anomaly::Detector`]. It hands the core
//! metric spikes (the region's, from the network driver; this node's own, from the spike
//! encoder), the roles of the region's members (from the node's membership glue) and the
//! time, once a second; it passes raised anomalies to the spike encoder. It decides
//! nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actor::spikes::Observe;
use crate::actor::{Stop, unix_ms};
use crate::anomaly::{Detector, Report};
use crate::node;
use crate::spike::Spike;

/// How often the detector scores this node's metrics.
pub const TICK: Duration = Duration::from_secs(1);

/// Metric spikes sent by `from`: the signed author of a gossip message, or this node for
/// its own. Only `metric` samples are looked at.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Samples {
    pub from: node::Id,
    pub spikes: Vec<Spike>,
}

/// The role of each member of the region this node knows of (replaces the last map).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetRoles(pub BTreeMap<node::Id, String>);

/// The detector's state, for the API.
#[derive(Debug, Message)]
#[rtype(result = "Report")]
pub struct GetAnomalies;

pub struct AnomalyActor {
    core: Detector,
    spikes: Recipient<Observe>,
}

impl std::fmt::Debug for AnomalyActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnomalyActor")
            .field("raised", &self.core.raised())
            .finish_non_exhaustive()
    }
}

impl AnomalyActor {
    pub fn new(core: Detector, spikes: Recipient<Observe>) -> Self {
        AnomalyActor { core, spikes }
    }
}

impl Actor for AnomalyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(TICK, |act, ctx| {
            let raised = act.core.tick(Instant::now());
            if !raised.is_empty() {
                for o in &raised {
                    tracing::warn!(metric = %o.subject, "metric deviates from its role peers: anomaly raised");
                }
                crate::actor::hand_on(ctx, &act.spikes, crate::actor::observe_batches(raised));
            }
        });
    }
}

impl Handler<Samples> for AnomalyActor {
    type Result = ();

    fn handle(&mut self, msg: Samples, _: &mut Self::Context) {
        self.core.spikes(Instant::now(), &msg.from, &msg.spikes);
    }
}

impl Handler<SetRoles> for AnomalyActor {
    type Result = ();

    fn handle(&mut self, msg: SetRoles, _: &mut Self::Context) {
        self.core.set_roles(msg.0);
    }
}

impl Handler<crate::actor::heartbeat::RegionMembers> for AnomalyActor {
    type Result = ();

    /// A dead member's values are nobody's peer values: only live members' roles count.
    fn handle(&mut self, msg: crate::actor::heartbeat::RegionMembers, _: &mut Self::Context) {
        let live = msg
            .members
            .iter()
            .filter(|m| m.status != crate::membership::Status::Dead)
            .map(|m| (m.peer.clone(), m.role.clone()))
            .collect();
        self.core.set_roles(live);
    }
}

impl Handler<GetAnomalies> for AnomalyActor {
    type Result = MessageResult<GetAnomalies>;

    fn handle(&mut self, _: GetAnomalies, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.report(Instant::now(), unix_ms()))
    }
}

impl Handler<Stop> for AnomalyActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
