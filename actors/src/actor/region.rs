//! The region actor: drives the region's consensus core ([`crate::region::Region`]) on a
//! fixed tick, makes what it must persist durable before any of its messages leave, hands
//! those messages to the network driver as direct requests, and answers the API.
//!
//! Members are named in settings (`region.voters`); a member's Raft id is derived from
//! `<region>/<name>`, so every node computes the same founding voter set on its own. The
//! peer id behind each name is learned from the membership view ([`PeerNames`]).

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use crate::actor::Stop;
use crate::outbox::{Direct, DirectSender};
use crate::region::{self, Committed, Durable, Region, RegionState, Status};
use crate::{node, wire};

/// The Raft id of member `name` of `region`.
pub fn member_id(region: &str, name: &str) -> u64 {
    region::raft_id(&node::Id(format!("{region}/{name}")))
}

/// A consensus message from a peer.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RaftIn(pub Vec<u8>);

/// Names and peer ids of the region's members, as the membership view knows them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerNames(pub Vec<(String, node::Id)>);

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
    /// Names of the founding voters (up to 5); empty: no master in this region.
    pub voters: Vec<String>,
    pub tick: Duration,
    pub consensus: region::Config,
}

impl RegionActor {
    /// `stored`: the durable state of an earlier run, if any.
    pub fn new(
        config: Config,
        stored: Option<Durable>,
        persist: PersistRegion,
        direct: DirectSender,
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
        }
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
        for (name, peer) in msg.0 {
            if let Some(entry) = self.names.get_mut(&member_id(&self.region, &name)) {
                entry.1 = Some(peer);
            }
        }
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
