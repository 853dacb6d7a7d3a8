//! The heartbeat actor: publishes this node's heartbeats and keeps the membership view
//! current with what peers send.
//!
//! It owns a [`heartbeat::Emitter`] and a [`membership::View`] and only moves time and
//! messages between them and the outside: heartbeats go to the network driver through a
//! bounded [`outbox::Sender`]; peers' heartbeats and connection events arrive as
//! [`Inbound`] messages.

use crate::actor::push::{Pushed, push};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actor::unix_ms;

use actix::prelude::*;

use crate::census::{self, Census};
use crate::heartbeat::{self, Health};
use crate::membership::{self, Counts, Member, Output, Status};
use crate::{node, outbox, wire};

/// Anything that changes the membership view.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Inbound(pub membership::Input);

/// This node's acknowledgement and replay state, for the next heartbeats.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetSync(pub crate::sync::Report);

impl Handler<SetSync> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: SetSync, _: &mut Self::Context) {
        self.emitter.set_sync(msg.0);
    }
}

impl Handler<crate::actor::Reincarnate> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::Reincarnate, _: &mut Self::Context) {
        self.emitter.set_incarnation(msg.0);
        self.view.forget_listed();
    }
}

/// The region consensus facts heartbeats announce: founders, eligibility, the founding
/// set proposed and `bootstrap_expect`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetRegion(pub crate::governor::Facts);

impl Handler<SetRegion> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: SetRegion, ctx: &mut Self::Context) {
        if self.emitter.set_region(msg.0) {
            // New facts (founding, a new voter set) are heard soon, whatever the rhythm.
            self.emitter.beat_soon(Instant::now());
            self.schedule(ctx);
        }
    }
}

/// A region's summary heard on the fleet topic, from `author`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CensusIn {
    pub author: node::Id,
    pub summary: Box<census::Summary>,
}

impl Handler<CensusIn> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: CensusIn, _: &mut Self::Context) {
        let region = msg.summary.region.clone();
        match self.census.offer(&msg.author, *msg.summary, unix_ms()) {
            Ok(true) => {
                if let Some(kept) = self.census.get(&region) {
                    push(&self.push, || Pushed::Census {
                        summary: Arc::new(kept.summary.clone()),
                        received_unix_ms: Some(kept.received_unix_ms),
                    });
                }
            }
            Ok(false) => {}
            Err(why) => tracing::debug!(%why, "census summary refused"),
        }
    }
}

/// The master of record, for this node's own census summary (and whether it publishes).
impl Handler<crate::actor::fleet::SetView> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::fleet::SetView, ctx: &mut Self::Context) {
        self.census
            .set_home_master(msg.view.master.as_ref().map(|(m, _)| m.clone()));
        self.master = msg.view.master;
        let mut phases = BTreeMap::new();
        for p in msg.phases.values() {
            *phases.entry(*p).or_insert(0u32) += 1;
        }
        if phases != self.phases {
            self.phases = phases;
            self.census.changed(unix_ms());
        }
        self.decommissioned = msg
            .phases
            .iter()
            .filter(|(_, p)| **p == crate::region::Phase::Decommissioning)
            .map(|(peer, _)| peer.clone())
            .collect();
        self.census.set_leading(msg.leading, unix_ms());
        if msg.leading.is_none() {
            self.drift = None;
            self.drift_bytes = 0;
        }
        self.schedule(ctx);
    }
}

/// The region's drift as this node, its master, judges it: published with the next
/// summary, early.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetDrift(pub Option<census::Drift>);

impl Handler<SetDrift> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: SetDrift, ctx: &mut Self::Context) {
        if self.drift != msg.0 {
            self.drift_bytes = msg
                .0
                .as_ref()
                .map_or(0, |d| rmp_serde::to_vec(d).map_or(0, |b| b.len()));
            self.drift = msg.0;
            self.census.changed(unix_ms());
            self.schedule(ctx);
        }
    }
}

impl Handler<crate::actor::alert::SetAlertCounts> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::alert::SetAlertCounts, ctx: &mut Self::Context) {
        if self.alerts != msg.0 {
            self.alerts = msg.0;
            self.census.changed(unix_ms());
            self.schedule(ctx);
        }
    }
}

/// The region's members as the membership view knows them, pushed to subscribers
/// whenever one appears, changes status, restarts or announces new facts.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RegionMembers {
    /// Members of this node's region, other than this node.
    pub members: Arc<Vec<crate::governor::Member>>,
    /// Live peers whose last heartbeats keep listing this node as suspect or dead.
    pub held_dead_by: usize,
}

/// From now on, `0` receives every [`RegionMembers`] change (and the current one now).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<RegionMembers>);

impl Handler<crate::actor::SetDrops> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::SetDrops, _: &mut Self::Context) {
        self.drops = Some(msg.0);
    }
}

impl Handler<Subscribe> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        let _ = msg
            .0
            .try_send(self.region_members(self.view.held_dead_by(HELD_DEAD_BEATS)));
        self.subscribers.push(msg.0);
    }
}

pub use crate::membership::HELD_DEAD_BEATS;

/// A decommissioned member leaves the membership view once dead and silent this long
/// (its death is committed to the region's log well before).
pub const RETIRE_AFTER: Duration = Duration::from_secs(10);

/// Asks for a copy of the view.
#[derive(Debug, Message)]
#[rtype(result = "Snapshot")]
pub struct GetSnapshot;

/// Asks for the census: this node's region and the others it heard of.
#[derive(Debug, Message)]
#[rtype(result = "CensusView")]
pub struct GetCensus;

/// The census as the API shows it.
#[derive(Debug, Clone)]
pub struct CensusView {
    /// This node's region as it sees it.
    pub region: census::Summary,
    /// Other regions, as their masters last published them.
    pub foreign: Vec<census::Kept>,
    /// This node's own region as its master last published it (for what only the master
    /// knows, such as drift), if this node does not lead.
    pub home: Option<census::Kept>,
    /// Summaries refused (not from the master they name, or superseded).
    pub refused: u64,
}

impl Handler<GetCensus> for HeartbeatActor {
    type Result = MessageResult<GetCensus>;

    fn handle(&mut self, _: GetCensus, _: &mut Self::Context) -> Self::Result {
        MessageResult(CensusView {
            region: self.summary(Instant::now(), unix_ms()),
            foreign: self.census.foreign().cloned().collect(),
            home: self.census.home().cloned(),
            refused: self.census.refused(),
        })
    }
}

/// A peer as the API shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub member: Member,
    /// Milliseconds since anything was heard from this peer.
    pub last_seen_ms: u64,
}

/// A consistent copy of what the actor knows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub peers: Vec<PeerView>,
    pub counts: Counts,
    pub heartbeats_sent: u64,
    pub heartbeats_late: u64,
    /// Heartbeats that could not be handed to the driver (its queue was full).
    pub outbox_full: u64,
    pub stale_heartbeats: u64,
    /// Live peers whose last heartbeats keep listing this node as suspect or dead.
    pub held_dead_by: usize,
    /// Region-member pushes a subscriber's full mailbox refused (the next change repairs
    /// them).
    pub members_dropped: u64,
}

/// Reads a host figure for the health summary (the one-minute load, for example).
pub type LoadProbe = Arc<dyn Fn() -> Option<f32> + Send + Sync>;

/// Settings of the actor.
#[derive(Debug, Clone)]
pub struct Config {
    pub emitter: heartbeat::Config,
    pub membership: membership::Config,
    pub census: census::Config,
}

pub struct HeartbeatActor {
    /// The node's live event stream, once set ([`SetPush`]).
    push: Option<crate::actor::push::Push>,
    own: node::Id,
    region: String,
    emitter: heartbeat::Emitter,
    view: membership::View,
    outbox: outbox::Sender,
    /// Probes to the members this node watches, heartbeats to peers that just connected.
    direct: outbox::DirectSender,
    /// What this node last told the region it saw (suspicions, deaths).
    told: heartbeat::Seen,
    load: LoadProbe,
    timer: Option<SpawnHandle>,
    sent: u64,
    outbox_full: u64,
    stale: u64,
    subscribers: Vec<Recipient<RegionMembers>>,
    /// Where dropped heartbeats and member pushes are counted.
    drops: Option<crate::actor::CountDrops>,
    /// Pushes that did not fit a subscriber's mailbox (the next change repairs them).
    members_dropped: u64,
    held_dead_by: usize,
    /// Changes the region's subscribers have not been pushed yet (see
    /// [`membership::urgent`]).
    members_dirty: bool,
    /// Foreign regions' summaries, and when this node (as master) publishes its own.
    census: Census,
    /// The master of record and its term.
    master: Option<(node::Id, u64)>,
    /// The region's drift, while this node leads (set by the twin keeper), with its
    /// encoded size (the members' budget in a summary leaves room for it).
    drift: Option<census::Drift>,
    drift_bytes: usize,
    /// Open alerts by severity, as this node's alert lifecycle holds them.
    alerts: BTreeMap<String, u32>,
    /// Members per lifecycle phase other than active.
    phases: BTreeMap<crate::region::Phase, u32>,
    /// Members being decommissioned (the region's log): once dead for
    /// [`RETIRE_AFTER`], they leave the membership view.
    decommissioned: std::collections::BTreeSet<node::Id>,
}

impl std::fmt::Debug for HeartbeatActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatActor")
            .field("own", &self.own)
            .field("region", &self.region)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl HeartbeatActor {
    pub fn new(
        config: Config,
        own: node::Id,
        info: node::Info,
        outbox: outbox::Sender,
        direct: outbox::DirectSender,
        load: LoadProbe,
    ) -> Self {
        let now = Instant::now();
        let region = info.region.clone();
        HeartbeatActor {
            push: None,
            view: membership::View::new(config.membership, own.clone(), region.clone()),
            census: Census::new(config.census, region.clone()),
            master: None,
            drift: None,
            drift_bytes: 0,
            alerts: BTreeMap::new(),
            phases: BTreeMap::new(),
            decommissioned: std::collections::BTreeSet::new(),
            emitter: heartbeat::Emitter::new(config.emitter, info, now),
            own,
            region,
            outbox,
            direct,
            told: heartbeat::Seen::default(),
            load,
            timer: None,
            sent: 0,
            outbox_full: 0,
            stale: 0,
            subscribers: Vec::new(),
            drops: None,
            members_dropped: 0,
            held_dead_by: 0,
            members_dirty: false,
        }
    }

    /// This node's region as it sees it: the master of record, and every member (this
    /// node included) with its status and sync debt.
    pub fn summary(&self, now: Instant, unix: u64) -> census::Summary {
        self.summary_within(now, unix, self.budget())
    }

    /// Bytes a summary's member lines may take in one frame.
    fn budget(&self) -> usize {
        (wire::MAX_FRAME - 1024 - census::PROOF_ROOM).saturating_sub(self.drift_bytes)
    }

    /// The summary with at most `budget` bytes of member lines.
    fn summary_within(&self, now: Instant, unix: u64, budget: usize) -> census::Summary {
        let mut lines: Vec<census::Line> = self
            .view
            .members()
            .filter(|m| m.info.as_ref().is_some_and(|i| i.region == self.region))
            .map(|m| {
                let seen = heartbeat::millis(now.saturating_duration_since(m.last_seen));
                census::Line::new(
                    m.id.clone(),
                    m.info.as_ref(),
                    m.status,
                    m.sync.as_ref(),
                    seen,
                )
            })
            .collect();
        lines.push(census::Line::new(
            self.own.clone(),
            Some(self.emitter.info()),
            Status::Alive,
            self.emitter.sync(),
            0,
        ));
        let (master, term) = match &self.master {
            Some((m, t)) => (Some(m.clone()), *t),
            None => (None, 0),
        };
        let mut summary = census::Summary::new(&self.region, term, master, unix, lines, budget);
        summary.drift = self.drift.clone();
        summary.alerts = self.alerts.clone();
        summary.phases = self.phases.clone();
        summary
    }

    /// Publishes this region's summary on the fleet topic when this node leads and one is
    /// due; pushes it to the event stream with every heartbeat.
    fn census_step(&mut self, now: Instant, unix: u64, beat: bool) {
        let publish = self.census.handle_timeout(unix).is_some();
        let live = self.push.as_ref().is_some_and(|p| p.receiver_count() > 0);
        if !(publish || beat && live) {
            return;
        }
        if beat {
            // Built only for listeners: what is published is the compact one below.
            push(&self.push, || Pushed::Census {
                summary: Arc::new(self.summary(now, unix)),
                received_unix_ms: None,
            });
        }
        if publish {
            // Every member in the roster; only those in trouble listed.
            let whole = self.summary_within(now, unix, usize::MAX);
            let compact = self.census.compact(whole, unix, self.budget());
            let msg = outbox::Publish {
                topic: outbox::Topic::Fleet,
                body: wire::Body::Census(Box::new(compact)),
                delivery: outbox::Delivery::BestEffort,
            };
            if self.outbox.try_send(msg).is_err() {
                crate::actor::count_drops(&self.drops, "census_outbox", 1);
            }
        }
    }

    fn region_members(&self, held_dead_by: usize) -> RegionMembers {
        RegionMembers {
            members: Arc::new(self.view.region_members()),
            held_dead_by,
        }
    }

    /// Pushes the region's members to every subscriber.
    fn push_members(&mut self, held_dead_by: usize) {
        self.held_dead_by = held_dead_by;
        self.members_dirty = false;
        if self.subscribers.is_empty() {
            return;
        }
        let msg = self.region_members(held_dead_by);
        for s in &self.subscribers {
            if s.try_send(msg.clone()).is_err() {
                self.members_dropped += 1;
                crate::actor::count_drops(&self.drops, "region_members", 1);
            }
        }
    }

    /// Runs every due step, then sleeps until the earlier of the two cores' deadlines.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let unix = unix_ms();
        // Counting the peers and listing this node's judgements are walks over the
        // region: only when a heartbeat is due, not at every probe round.
        let beating = now >= self.emitter.next_beat();
        if beating {
            let (health, seen) = (self.health(), self.view.seen());
            if let Some(beat) = self.emitter.handle_timeout(now, unix, health, seen.clone()) {
                self.told = seen;
                self.publish(beat);
            }
        }
        if self.emitter.probe_due(now) {
            self.probe();
        }
        let out = self.view.handle_timeout(now);
        self.report(out);
        if self.members_dirty {
            let held_dead_by = self.held_dead_by;
            self.push_members(held_dead_by);
        }
        if !self.decommissioned.is_empty() {
            let gone = self.view.retire(now, &self.decommissioned, RETIRE_AFTER);
            for peer in gone {
                // Its death is committed by now; the region's view lets it go.
                tracing::info!(%peer, "a decommissioned member is gone: it leaves the membership");
                self.census.changed(unix);
                let held_dead_by = self.held_dead_by;
                self.push_members(held_dead_by);
            }
        }
        self.census_step(now, unix, beating);
        self.schedule(ctx);
    }

    fn health(&self) -> Health {
        let counts = self.view.counts();
        Health {
            peers_alive: counts.alive,
            peers_suspect: counts.suspect,
            peers_dead: counts.dead,
            load1: (self.load)(),
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let mut next = self.emitter.poll_timeout();
        if let Some(t) = self.view.poll_timeout() {
            next = next.min(t);
        }
        if let Some(due) = self.census.poll_timeout() {
            let now = Instant::now();
            next = next.min(now + Duration::from_millis(due.saturating_sub(unix_ms())));
        }
        let wait = next.saturating_duration_since(Instant::now());
        self.timer = Some(ctx.run_later(wait, |act, ctx| act.drive(ctx)));
    }

    /// Probes every member this node watches (answered [`wire::Response::Alive`]).
    fn probe(&mut self) {
        for peer in self.view.watching().to_vec() {
            self.send_direct(peer, wire::Request::Probe, "probe_outbox");
        }
    }

    /// Hands one request for one peer to the driver (probes, a heartbeat for a peer that
    /// just connected); a full queue is counted as a drop of `queue`.
    fn send_direct(&mut self, to: node::Id, request: wire::Request, queue: &'static str) {
        if self
            .direct
            .try_send(outbox::Direct { to, request })
            .is_err()
        {
            crate::actor::count_drops(&self.drops, queue, 1);
        }
    }

    fn publish(&mut self, beat: heartbeat::Beat) {
        let msg = outbox::Publish {
            topic: outbox::Topic::Region(self.region.clone()),
            body: wire::Body::Heartbeat(Box::new(beat)),
            delivery: outbox::Delivery::BestEffort,
        };
        match self.outbox.try_send(msg) {
            Ok(()) => self.sent += 1,
            Err(_) => {
                self.outbox_full += 1;
                crate::actor::count_drops(&self.drops, "heartbeat_outbox", 1);
            }
        }
    }

    fn report(&mut self, out: Vec<Output>) {
        let urgent = membership::urgent(&out);
        let mut changed = false;
        let mut accused = false;
        for o in out {
            if !matches!(o, Output::Stale { .. } | Output::Watching { .. }) {
                changed = true;
            }
            match o {
                Output::StatusChanged { peer, from, to } => {
                    // The region's summary says it early (while this node leads): other
                    // regions see a death within one spacing, not one period.
                    self.census.changed(unix_ms());
                    push(&self.push, || Pushed::Peer {
                        peer: peer.clone(),
                        from,
                        to,
                    });
                    if to == Status::Dead || to == Status::Suspect {
                        tracing::warn!(%peer, from = from.as_str(), to = to.as_str(), "peer status");
                    } else {
                        tracing::info!(%peer, from = from.as_str(), to = to.as_str(), "peer status");
                    }
                }
                Output::Restarted { peer, incarnation } => {
                    tracing::info!(%peer, incarnation, "peer restarted");
                }
                Output::Stale { .. } => self.stale += 1,
                Output::Announced { .. } => {}
                Output::Watching { peers } => {
                    tracing::debug!(?peers, "watching");
                }
                Output::Accused { by } => {
                    tracing::warn!(%by, "a peer holds this node dead: telling the region it lives");
                    accused = true;
                }
            }
        }
        self.emitter.set_members(self.view.region_size());
        // Whether peers hold this node dead changes with their heartbeats, not with a
        // status change here.
        let held_dead_by = self.view.held_dead_by(HELD_DEAD_BEATS);
        if urgent || held_dead_by != self.held_dead_by {
            self.push_members(held_dead_by);
        } else if changed {
            // At the next tick (a probe round at most).
            self.members_dirty = true;
        }
        // A new suspicion (or one dropped) is told to the region at once, so that other
        // observers can confirm it without waiting for the next regular heartbeat.
        let seen = self.view.seen();
        if seen != self.told || accused {
            let beat =
                self.emitter
                    .beat_now(Instant::now(), unix_ms(), self.health(), seen.clone());
            self.told = seen;
            self.publish(beat);
        }
    }
}

impl Handler<crate::actor::push::SetPush> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::push::SetPush, _: &mut Self::Context) {
        self.push = Some(msg.0);
    }
}

impl Actor for HeartbeatActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bounded mailbox: the driver uses try_send and counts what does not fit.
        ctx.set_mailbox_capacity(4096);
        self.drive(ctx);
    }
}

impl Handler<Inbound> for HeartbeatActor {
    type Result = ();

    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) {
        let now = Instant::now();
        if let membership::Input::Connected { peer } = &msg.0 {
            let status = self.view.get(peer).map(|m| m.status);
            // A region peer held dead connects again (a healed cut): the region hears
            // from this node soon, not one long interval later.
            if status == Some(Status::Dead) {
                self.emitter.beat_soon(now);
            }
            // The peer itself hears this node's heartbeat at once (it may be joining),
            // unless it is known to be of another region.
            if status != Some(Status::Remote) {
                let beat = self
                    .emitter
                    .current(now, unix_ms(), self.health(), self.view.seen());
                let request = wire::Request::Heartbeat(Box::new(beat));
                self.send_direct(peer.clone(), request, "heartbeat_direct");
            }
        }
        let out = self.view.handle(now, msg.0);
        self.report(out);
        // A new peer may have brought an earlier deadline.
        self.schedule(ctx);
    }
}

impl Handler<GetSnapshot> for HeartbeatActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let peers = self
            .view
            .members()
            .map(|m| PeerView {
                last_seen_ms: heartbeat::millis(now.saturating_duration_since(m.last_seen)),
                member: m.clone(),
            })
            .collect();
        MessageResult(Snapshot {
            peers,
            counts: self.view.counts(),
            heartbeats_sent: self.sent,
            heartbeats_late: self.emitter.late(),
            outbox_full: self.outbox_full,
            stale_heartbeats: self.stale,
            held_dead_by: self.view.held_dead_by(HELD_DEAD_BEATS),
            members_dropped: self.members_dropped,
        })
    }
}

/// How long a heartbeat sent at `sent_unix_ms` took to arrive, by the wall clock.
pub fn lag(sent_unix_ms: u64) -> Duration {
    Duration::from_millis(unix_ms().saturating_sub(sent_unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, region: &str) -> node::Info {
        node::Info {
            name: name.into(),
            region: region.into(),
            role: "web".into(),
            incarnation: 1,
        }
    }

    fn config(ms: u64) -> Config {
        Config {
            emitter: heartbeat::Config {
                interval: Duration::from_millis(ms),
                probe: Duration::from_millis(ms),
                region_rate: 0,
            },
            membership: membership::Config {
                interval: Duration::from_millis(ms),
                acceptable_pause: Duration::from_millis(ms),
                connected_grace: Duration::from_millis(2 * ms),
                suspect_phi: 5.0,
                dead_phi: 8.0,
                dead_after: 10,
                probe: Duration::from_millis(ms),
                monitors: 3,
                stall: Duration::ZERO,
            },
            census: census::Config::default(),
        }
    }

    #[actix::test]
    async fn publishes_heartbeats_on_its_region_topic_probes_and_tracks_peers() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let (direct_tx, mut direct_rx) = tokio::sync::mpsc::channel(16);
        let addr = HeartbeatActor::new(
            config(20),
            node::Id::from("me"),
            info("me", "eu"),
            tx,
            direct_tx,
            Arc::new(|| Some(0.5)),
        )
        .start();

        let mut seqs = Vec::new();
        for _ in 0..3 {
            let p = rx.recv().await.expect("a heartbeat");
            assert_eq!(p.topic, outbox::Topic::Region("eu".into()));
            let wire::Body::Heartbeat(b) = p.body else {
                panic!("the heartbeat actor published something else");
            };
            assert_eq!(b.health.load1, Some(0.5));
            seqs.push(b.seq);
        }
        assert_eq!(seqs, [1, 2, 3]);

        let peer = node::Id::from("p");
        addr.send(Inbound(membership::Input::Heartbeat {
            from: peer.clone(),
            beat: Arc::new(heartbeat::Beat {
                uptime_ms: 5,
                sent_unix_ms: unix_ms(),
                every_ms: 20,
                ..heartbeat::Beat::new(info("p", "eu"), 1)
            }),
        }))
        .await
        .expect("delivered");
        let snap = addr.send(GetSnapshot).await.expect("answered");
        assert_eq!(snap.counts.alive, 1);
        assert_eq!(snap.peers[0].member.id, peer);
        assert!(snap.heartbeats_sent >= 3);
        // The only other member is watched: probed every interval, judged by the answers.
        for _ in 0..3 {
            let probe = direct_rx.recv().await.expect("a probe");
            assert_eq!(probe.to, peer);
            assert_eq!(probe.request, wire::Request::Probe);
            addr.send(Inbound(membership::Input::Alive { from: peer.clone() }))
                .await
                .expect("delivered");
        }
        let snap = addr.send(GetSnapshot).await.expect("answered");
        assert_eq!(snap.counts.alive, 1);
        assert!(snap.peers[0].member.watched);
    }
}
