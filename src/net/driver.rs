//! The driver task: the only owner of the swarm.
//!
//! A plain tokio task with a `select!` over the actors' bounded outbox, swarm events, a
//! maintenance tick and shutdown. It publishes what actors hand it, decodes what arrives
//! (refusing bad frames through gossipsub validation, which penalizes the sender), and
//! hands the rest to actors with `try_send`. It keeps no membership state of its own.
//!
//! Requests on the bulk protocol that an actor works out (consultations, replays,
//! audits) are admitted by each peer's [`Budget`] first; the excess is answered
//! [`wire::Response::Busy`] at once and counted in `fleetmesh_bulk_refused_total`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use fleetmesh_actors::actor::anomaly::Samples;
use fleetmesh_actors::actor::audit::{Answered, BaselineDigest, Heard};
use fleetmesh_actors::actor::fleet::{ConsultIn, EmergencyIn, LearnedIn};
use fleetmesh_actors::actor::heartbeat::{CensusIn, Inbound, lag};
use fleetmesh_actors::actor::policy::ConsultAnswered;
use fleetmesh_actors::actor::region::{AcksIn, RaftIn, ReplayIn, SpikesIn};
use fleetmesh_actors::consult::Failure;
use fleetmesh_actors::fleet::{Approval, Via};
use fleetmesh_actors::membership::Input;
use fleetmesh_actors::outbox::{Coalesce, Delivery, Direct, Publish, SPIKE_SPACING, Topic};
use fleetmesh_actors::{node, wire};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError, TopicHash};
use libp2p::request_response::{self, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, mdns};
use tokio::sync::{mpsc, oneshot, watch};

use super::budget::{self, Budget};
use super::{
    Behaviour, BehaviourEvent, Error, KAD_PROTOCOL, fleet_topic, region_topic, split_peer_id,
};
use crate::metrics::Metrics;

/// How many messages wait for subscribers at most, and for how long.
const PENDING_MAX: usize = 1024;
/// Encoded bytes of publications held for retry at most (spikes are journaled: the master
/// gets what was dropped here by replay).
const PENDING_BYTES: usize = 8 << 20;
const PENDING_TTL: Duration = Duration::from_secs(30);
/// How often the driver redials bootstrap peers when alone and refreshes discovery.
const MAINTENANCE: Duration = Duration::from_secs(2);
const KAD_REFRESH: Duration = Duration::from_secs(30);
/// Bytes of the SBOM per answer (a frame holds 64 KiB).
pub const SBOM_CHUNK: usize = 48 * 1024;

/// What the rest of the node can see of the network.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub listen_addrs: Vec<Multiaddr>,
    pub connected: usize,
}

/// The channels between the driver and the actors.
#[derive(Debug)]
pub struct Links {
    /// Gossip to publish.
    pub outbox: mpsc::Receiver<Publish>,
    /// Requests to send to one peer.
    pub direct: mpsc::Receiver<Direct>,
    /// Requests whose answer goes back to the asker (the API asking another node).
    pub asks: mpsc::Receiver<Ask>,
    /// Membership news for the heartbeat actor.
    pub inbound: Recipient<Inbound>,
    /// Regions' summaries heard on the fleet topic (heartbeat actor), if it runs.
    pub census: Option<Recipient<CensusIn>>,
    /// The region actor (consensus, intake, acknowledgements), if it runs.
    pub region: Option<RegionLinks>,
    /// Peer audits, both sides, if they run.
    pub audit: Option<AuditLinks>,
    /// The anomaly detector, if it runs: the region's metric spikes go to it.
    pub anomaly: Option<Recipient<Samples>>,
    /// Consultation, learning and emergencies, if they run.
    pub fleet: Option<FleetLinks>,
    /// What each peer may have in flight here on the bulk protocol.
    pub budget: budget::Config,
    /// Proofs of authority: attached to this region's fleet messages, checked on other
    /// regions' ones.
    pub trust: super::trust::Gate,
    /// This node's latest spikes (its metrics for another node's chart of it).
    pub recent: Option<Arc<fleetmesh_actors::actor::spikes::Recent>>,
}

/// What the driver hands the fleet and policy actors.
#[derive(Debug, Clone)]
pub struct FleetLinks {
    /// Consultations from region members (this node's fleet actor answers as master).
    pub consult: Recipient<ConsultIn>,
    /// Answers to this node's consultations (policy actor).
    pub answered: Recipient<ConsultAnswered>,
    /// Approvals heard on the fleet topic (policy actor), signature checked here.
    pub approvals: Recipient<LearnedIn>,
    /// Emergencies heard on the fleet topic (fleet actor).
    pub emergency: Recipient<EmergencyIn>,
    /// Other regions' silences heard on the fleet topic (alert actor).
    pub silences: Recipient<fleetmesh_actors::actor::alert::ForeignSilences>,
}

/// Whether `a` carries a valid signature by the key of the peer it names as master.
pub fn signature_ok(a: &Approval) -> bool {
    let Ok(key) = libp2p::identity::PublicKey::try_decode_protobuf(&a.public_key) else {
        return false;
    };
    key.to_peer_id().to_base58() == a.master.as_str() && key.verify(&a.signed_bytes(), &a.signature)
}

/// What the driver hands the audit actor and asks the file actor (peer audits).
#[derive(Debug, Clone)]
pub struct AuditLinks {
    /// Answers this node's digest when a peer audits it.
    pub digest: Recipient<BaselineDigest>,
    /// The region's spikes as heard over gossip.
    pub heard: Recipient<Heard>,
    /// Answers to this node's digest requests.
    pub answered: Recipient<Answered>,
}

/// What the driver hands the region actor.
#[derive(Debug, Clone)]
pub struct RegionLinks {
    pub raft: Recipient<RaftIn>,
    pub spikes: Recipient<SpikesIn>,
    pub acks: Recipient<AcksIn>,
    pub replay: Recipient<ReplayIn>,
    /// Operators' silences and acknowledgements sent by members to the master.
    pub operator: Recipient<fleetmesh_actors::actor::region::OperatorIn>,
    /// Members' alerts, for the alert actor (which takes them while this node leads).
    pub alerts: Recipient<fleetmesh_actors::actor::alert::MemberAlerts>,
    /// Members' twins, for the twin actor (which takes them while this node leads).
    pub twins: Recipient<fleetmesh_actors::actor::twin::TwinIn>,
    /// The twins this node holds, asked by nodes of any region.
    pub twin: Recipient<fleetmesh_actors::actor::twin::GetTwin>,
    /// Voters' endorsements of this node as master.
    pub endorse: Recipient<fleetmesh_actors::actor::region::EndorseIn>,
    /// The master's answers to this node's twin reports (its drift's first-seen times).
    pub twin_taken: Recipient<fleetmesh_actors::actor::twin::Observe>,
    /// The alert records this node holds, and its alert history on disk (if kept), asked
    /// by nodes of the region that list the region's history.
    pub alert_records: Recipient<fleetmesh_actors::actor::alert::HeldRecords>,
    pub alert_history: Option<Arc<crate::alert::history::Store>>,
}

/// Points per metric in an answer to another node's chart: 15 s apart over an hour, so
/// that a node's dozen metrics fit a frame.
pub const METRIC_POINTS: usize = 240;

/// Alert records one answer carries at most, and the bytes they take (a frame is 64 KiB).
const ALERT_RECORDS_MAX: usize = 1000;
const ALERT_RECORDS_BYTES: usize = 48 * 1024;

/// A request whose answer goes back to the asker: the answer, or why none came.
#[derive(Debug)]
pub struct Ask {
    pub to: node::Id,
    pub request: wire::Request,
    pub reply: oneshot::Sender<Result<wire::Response, String>>,
}

/// A response an actor is still working out, with the channel it goes back on and the
/// peer whose budget it holds.
type Reply = BoxFuture<
    'static,
    (
        request_response::ResponseChannel<wire::Response>,
        wire::Response,
        PeerId,
    ),
>;

/// Everything the driver needs.
pub struct Driver {
    swarm: Swarm<Behaviour>,
    info: node::Info,
    outbox: mpsc::Receiver<Publish>,
    direct: mpsc::Receiver<Direct>,
    asks: mpsc::Receiver<Ask>,
    /// The askers of requests in flight, by request.
    asked: HashMap<
        request_response::OutboundRequestId,
        oneshot::Sender<Result<wire::Response, String>>,
    >,
    inbound: Recipient<Inbound>,
    census: Option<Recipient<CensusIn>>,
    region_links: Option<RegionLinks>,
    audit_links: Option<AuditLinks>,
    anomaly: Option<Recipient<Samples>>,
    /// Digest requests out, whose answer or failure goes to the audit actor.
    audits_out: HashMap<request_response::OutboundRequestId, PeerId>,
    fleet_links: Option<FleetLinks>,
    /// Consultations out: the spike's seq, whose answer goes to the policy actor.
    consults_out: HashMap<request_response::OutboundRequestId, u64>,
    replies: FuturesUnordered<Reply>,
    /// Each peer's budget of bulk requests worked out here.
    budget: Budget<PeerId>,
    metrics: Arc<Metrics>,
    region: IdentTopic,
    fleet: IdentTopic,
    bootstrap: Vec<Multiaddr>,
    pending: VecDeque<(Instant, Publish, usize)>,
    /// Spike publications of this node, gathered under a storm.
    coalesce: Coalesce,
    /// Encoded size of what `pending` holds.
    pending_bytes: usize,
    connected: HashSet<PeerId>,
    state: watch::Sender<State>,
    last_kad_refresh: Option<Instant>,
    trust: super::trust::Gate,
    /// This region's summary, held until this node has a proof to attach.
    held_census: Option<Publish>,
    /// This node's latest spikes (its metrics, for another node's chart of it).
    recent: Option<Arc<fleetmesh_actors::actor::spikes::Recent>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("peer_id", self.swarm.local_peer_id())
            .field("connected", &self.connected.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Starts listening on `listen`; errors name the address that failed.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mut swarm: Swarm<Behaviour>,
        info: node::Info,
        listen: &[Multiaddr],
        bootstrap: Vec<Multiaddr>,
        links: Links,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, watch::Receiver<State>), Error> {
        let Links {
            outbox,
            direct,
            asks,
            inbound,
            census,
            region: region_links,
            audit: audit_links,
            fleet: fleet_links,
            anomaly,
            budget,
            trust,
            recent,
        } = links;
        for addr in listen {
            super::check_port_free(addr)?;
            swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        }
        let (state, rx) = watch::channel(State::default());
        let region = region_topic(&info.region);
        Ok((
            Driver {
                swarm,
                info,
                outbox,
                direct,
                asks,
                asked: HashMap::new(),
                inbound,
                census,
                region_links,
                audit_links,
                anomaly,
                audits_out: HashMap::new(),
                fleet_links,
                consults_out: HashMap::new(),
                replies: FuturesUnordered::new(),
                budget: Budget::new(budget),
                metrics,
                region,
                fleet: fleet_topic(),
                bootstrap,
                pending: VecDeque::new(),
                coalesce: Coalesce::new(SPIKE_SPACING),
                pending_bytes: 0,
                connected: HashSet::new(),
                state,
                last_kad_refresh: None,
                trust,
                held_census: None,
                recent,
            },
            rx,
        ))
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.dial_bootstrap();
        let mut tick = tokio::time::interval(MAINTENANCE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(p) = self.outbox.recv() => {
                    for p in self.coalesce.offer(Instant::now(), p) {
                        self.publish(p);
                    }
                }
                _ = sleep_until(self.coalesce.poll_timeout()) => {
                    for p in self.coalesce.handle_timeout(Instant::now()) {
                        self.publish(p);
                    }
                }
                Some(d) = self.direct.recv() => self.send_direct(d),
                Some(a) = self.asks.recv() => self.send_ask(a),
                Ok(()) = self.trust.proof_changed().changed() => {
                    if let Some(p) = self.held_census.take() {
                        self.publish(p);
                    }
                }
                event = self.swarm.select_next_some() => self.on_event(event),
                Some((channel, reply, peer)) = self.replies.next() => {
                    self.budget.release(&peer);
                    self.respond(channel, reply);
                }
                _ = tick.tick() => self.maintain(),
            }
        }
        tracing::info!("network driver stopped");
    }

    fn dial_bootstrap(&mut self) {
        let me = *self.swarm.local_peer_id();
        for addr in self.bootstrap.clone() {
            let (plain, peer) = split_peer_id(&addr);
            if peer == Some(me) {
                continue;
            }
            if let Some(peer) = peer {
                self.swarm.behaviour_mut().kad.add_address(&peer, plain);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial not started");
            }
        }
    }

    fn maintain(&mut self) {
        if self.connected.is_empty() && !self.bootstrap.is_empty() {
            self.dial_bootstrap();
        }
        let due = self
            .last_kad_refresh
            .is_none_or(|t| t.elapsed() >= KAD_REFRESH);
        if due && !self.connected.is_empty() {
            self.refresh_discovery();
        }
        self.retry_pending();
    }

    /// A kademlia lookup of our own id: fills the routing table with the fleet's nodes.
    fn refresh_discovery(&mut self) {
        if self.swarm.behaviour_mut().kad.bootstrap().is_ok() {
            self.last_kad_refresh = Some(Instant::now());
        }
    }

    fn topic_of(&self, t: &Topic) -> IdentTopic {
        match t {
            Topic::Region(r) if *r == self.info.region => self.region.clone(),
            Topic::Region(r) => region_topic(r),
            Topic::Fleet => self.fleet.clone(),
        }
    }

    fn label_of(&self, hash: &TopicHash) -> &'static str {
        if *hash == self.region.hash() {
            "region"
        } else if *hash == self.fleet.hash() {
            "fleet"
        } else {
            "other"
        }
    }

    fn publish(&mut self, p: Publish) {
        self.publish_queued_at(p, Instant::now());
    }

    /// Publishes `p`; one that finds no subscriber yet is queued (Retry delivery) with
    /// `queued_at`, the time it first waited, so that its TTL counts from then.
    fn publish_queued_at(&mut self, mut p: Publish, queued_at: Instant) {
        if !self.trust.attach(&mut p.body) {
            // Other regions refuse it without a proof: a summary waits for the proof
            // (the next one replaces it), anything else for the next retry.
            if matches!(p.body, wire::Body::Census(_)) {
                self.held_census = Some(p);
            } else if p.delivery == Delivery::Retry && self.pending.len() < PENDING_MAX {
                self.pending.push_back((queued_at, p, 0));
            } else {
                self.drop_count("no_proof");
            }
            return;
        }
        let topic = self.topic_of(&p.topic);
        let kind = p.body.kind();
        let bytes = match wire::encode(&p.body) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, kind, "cannot encode message");
                self.drop_count("encode");
                return;
            }
        };
        let label = self.label_of(&topic.hash());
        let size = bytes.len();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {
                self.metrics
                    .messages_out
                    .get_or_create(&Metrics::topic(label, kind))
                    .inc();
            }
            Err(PublishError::Duplicate) => {}
            Err(e @ (PublishError::NoPeersSubscribedToTopic | PublishError::AllQueuesFull(_))) => {
                if p.delivery == Delivery::Retry {
                    while self.pending.len() >= PENDING_MAX
                        || (!self.pending.is_empty() && self.pending_bytes + size > PENDING_BYTES)
                    {
                        if let Some((.., gone)) = self.pending.pop_front() {
                            self.pending_bytes -= gone;
                        }
                        self.drop_count("pending_full");
                    }
                    self.pending_bytes += size;
                    self.pending.push_back((queued_at, p, size));
                } else {
                    let reason = match e {
                        PublishError::NoPeersSubscribedToTopic => "no_peers",
                        _ => "queues_full",
                    };
                    self.drop_count(reason);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, kind, "publish failed");
                self.drop_count("error");
            }
        }
    }

    fn drop_count(&self, reason: &str) {
        self.metrics
            .publish_dropped
            .get_or_create(&Metrics::reason(reason))
            .inc();
    }

    fn retry_pending(&mut self) {
        let now = Instant::now();
        let waiting: Vec<_> = self.pending.drain(..).collect();
        self.pending_bytes = 0;
        for (at, p, _) in waiting {
            if now.duration_since(at) > PENDING_TTL {
                self.drop_count("expired");
                continue;
            }
            self.publish_queued_at(p, at);
        }
    }

    fn to_actor(&self, input: Input) {
        if self.inbound.try_send(Inbound(input)).is_err() {
            self.metrics.inbound_dropped.inc();
        }
    }

    fn publish_state(&self) {
        let listen_addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        self.metrics
            .connected_peers
            .set(self.connected.len() as i64);
        self.state.send_replace(State {
            listen_addrs,
            connected: self.connected.len(),
        });
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.publish_state();
            }
            SwarmEvent::ExpiredListenAddr { .. } | SwarmEvent::ListenerClosed { .. } => {
                self.publish_state();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                self.connected.insert(peer_id);
                self.to_actor(Input::Connected { peer: id(&peer_id) });
                let hello = wire::Request::Hello(self.info.clone());
                self.swarm
                    .behaviour_mut()
                    .hello
                    .send_request(&peer_id, hello);
                self.publish_state();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                self.to_actor(Input::Disconnected { peer: id(&peer_id) });
                self.publish_state();
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                self.connection_error("outgoing");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // A peer with another fleet key ends here: its handshake cannot complete.
                tracing::debug!(%send_back_addr, %error, "incoming connection refused");
                self.connection_error("incoming");
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn connection_error(&self, direction: &str) {
        self.metrics
            .connection_errors
            .get_or_create(&crate::metrics::DirectionLabels {
                direction: direction.to_string(),
            })
            .inc();
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(ev) => self.on_gossip(ev),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in &info.listen_addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                    if self.last_kad_refresh.is_none() {
                        self.refresh_discovery();
                    }
                }
                self.to_actor(Input::Addresses {
                    peer: id(&peer_id),
                    addresses: info.listen_addrs.iter().map(|a| a.to_string()).collect(),
                });
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                ..
            }) if !self.connected.contains(&peer) => {
                // Discovery found a node we have not met: meet it (dialing by peer id uses
                // the addresses kademlia just learned).
                let _ = self.swarm.dial(peer);
            }
            BehaviourEvent::Hello(ev) => self.on_hello(ev),
            BehaviourEvent::Consensus(ev) => self.on_consensus(ev),
            BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(error),
            }) => {
                tracing::info!(%peer, %error, "ping failed: closing the connection");
                self.swarm.close_connection(connection);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    if !self.connected.contains(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            _ => {}
        }
    }

    /// The refusal of a request about another region than this node's (`None`: ours).
    fn foreign(&self, what: &str, region: &str) -> Option<wire::Response> {
        (region != self.info.region).then(|| {
            wire::Response::Refused(format!(
                "{what} for region {region}; this node is in {}",
                self.info.region
            ))
        })
    }

    /// The links that serve a request about `region` with its channel, or `None` once the
    /// refusal (another region; a `part` this node does not run) is sent on `channel`.
    ///
    /// A request served is admitted by `peer`'s budget, which it holds until its answer
    /// goes back (see [`Driver::respond_later`]); over budget, it is answered busy.
    fn serving<L>(
        &mut self,
        peer: PeerId,
        links: Option<L>,
        what: &str,
        part: &str,
        region: &str,
        channel: request_response::ResponseChannel<wire::Response>,
    ) -> Option<(L, request_response::ResponseChannel<wire::Response>)> {
        if let Some(refused) = self.foreign(what, region) {
            self.respond(channel, refused);
            return None;
        }
        let Some(l) = links else {
            self.respond(channel, absent(part));
            return None;
        };
        if let Err(r) = self.budget.admit(Instant::now(), &peer) {
            tracing::debug!(%peer, what, why = r.why, "request over the peer's budget");
            self.metrics
                .bulk_refused
                .get_or_create(&Metrics::reason(r.over.as_str()))
                .inc();
            let busy = wire::Response::Busy {
                retry_after_ms: u64::try_from(r.retry_after.as_millis()).unwrap_or(u64::MAX),
                why: r.why,
            };
            self.respond(channel, busy);
            return None;
        }
        Some((l, channel))
    }

    /// A consensus message: for this node's region actor, or refused.
    fn on_raft(&mut self, peer: PeerId, region: String, message: Vec<u8>) -> wire::Response {
        if let Some(refused) = self.foreign("consensus message", &region) {
            return refused;
        }
        match self.region_links.as_ref().map(|l| &l.raft) {
            Some(r)
                if r.try_send(RaftIn {
                    from: id(&peer),
                    bytes: message,
                })
                .is_ok() =>
            {
                wire::Response::Accepted
            }
            Some(_) => wire::Response::Refused("consensus queue full".into()),
            None => absent("region consensus"),
        }
    }

    /// An operator's action a member sent for the master to commit: taken in (the region
    /// actor proposes it if this node is the master), or refused when the queue is full.
    fn on_operator(
        &mut self,
        peer: PeerId,
        region: String,
        action: fleetmesh_actors::region::Operator,
    ) -> wire::Response {
        if let Some(refused) = self.foreign("operator action", &region) {
            return refused;
        }
        let msg = fleetmesh_actors::actor::region::OperatorIn {
            from: id(&peer),
            action,
        };
        match self.region_links.as_ref().map(|l| &l.operator) {
            Some(r) if r.try_send(msg).is_ok() => wire::Response::Accepted,
            Some(_) => wire::Response::Refused("operator queue full".into()),
            None => absent("region consensus"),
        }
    }

    /// A member's alerts for the master: handed to the alert actor.
    fn on_alerts(
        &mut self,
        peer: PeerId,
        region: String,
        raised: Vec<fleetmesh_actors::alert::Alert>,
        cleared: Vec<String>,
    ) -> wire::Response {
        if let Some(refused) = self.foreign("alerts", &region) {
            return refused;
        }
        let msg = fleetmesh_actors::actor::alert::MemberAlerts {
            from: id(&peer),
            raised,
            cleared,
        };
        match self.region_links.as_ref().map(|l| &l.alerts) {
            Some(r) if r.try_send(msg).is_ok() => wire::Response::Accepted,
            Some(_) => wire::Response::Refused("alert queue full".into()),
            None => absent("region consensus"),
        }
    }

    /// A member's twin: judged by the twin actor if this node leads, answered with the
    /// drift open about it (or the refusal; the member sends its twin again on its own
    /// schedule).
    fn on_twin(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        report: fleetmesh_actors::twin::Report,
    ) {
        let links = self.region_links.clone();
        let region = report.region.clone();
        let Some((links, channel)) =
            self.serving(peer, links, "twin", "region consensus", &region, channel)
        else {
            return;
        };
        let request = links.twins.send(fleetmesh_actors::actor::twin::TwinIn {
            from: id(&peer),
            report,
        });
        self.respond_later(peer, channel, async move {
            match request.await {
                Ok(Ok(since)) => wire::Response::TwinTaken(since),
                Ok(Err(why)) => wire::Response::Refused(why.to_string()),
                Err(e) => wire::Response::Refused(format!("twin actor unavailable: {e}")),
            }
        });
    }

    /// A chunk of this node's SBOM (the embedded document), within the peer's budget.
    fn on_sbom(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        offset: u64,
    ) {
        let region = self.info.region.clone();
        let Some(((), channel)) = self.serving(peer, Some(()), "sbom", "sbom", &region, channel)
        else {
            return;
        };
        let doc = crate::sbom::document().as_bytes();
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(doc.len());
        let to = (from + SBOM_CHUNK).min(doc.len());
        let reply = wire::Response::Sbom {
            total: doc.len() as u64,
            chunk: doc[from..to].to_vec(),
        };
        self.budget.release(&peer);
        self.respond(channel, reply);
    }

    /// Any node charts this node: its metrics after `since`, thinned to fit a frame.
    fn on_metrics(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        since: u64,
    ) {
        let region = self.info.region.clone();
        let recent = self.recent.clone();
        let Some((recent, channel)) =
            self.serving(peer, recent, "metrics", "metrics", &region, channel)
        else {
            return;
        };
        let now = fleetmesh_actors::actor::unix_ms();
        let series = recent.metric_series(since, now, METRIC_POINTS);
        self.budget.release(&peer);
        self.respond(channel, wire::Response::Metrics(series));
    }

    /// A node of the region lists the region's alert history: this node's records, held
    /// and on disk, newest first, as many as fit a frame.
    fn on_alert_records(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        region: String,
        since: u64,
        state: Option<String>,
        limit: u32,
    ) {
        let links = self.region_links.clone();
        let Some((links, channel)) =
            self.serving(peer, links, "alert records", "alerts", &region, channel)
        else {
            return;
        };
        let limit = (limit as usize).min(ALERT_RECORDS_MAX);
        let held = links
            .alert_records
            .send(fleetmesh_actors::actor::alert::HeldRecords {
                since,
                state: state.clone(),
                limit,
            });
        let store = links.alert_history.clone();
        self.respond_later(peer, channel, async move {
            let held = async move { held.await.ok() };
            let records = crate::alert::history::held_and_kept(held, store, since, state, limit)
                .await
                .unwrap_or_default();
            wire::Response::AlertRecords(fleetmesh_actors::alerting::history::newest_fitting(
                records,
                limit,
                ALERT_RECORDS_BYTES,
            ))
        });
    }

    /// A voter's endorsement: only of the voter that sends it, for the region actor.
    fn on_endorse(
        &mut self,
        peer: PeerId,
        region: String,
        term: u64,
        endorsement: fleetmesh_actors::trust::Endorsement,
    ) -> wire::Response {
        if let Some(refused) = self.foreign("endorsement", &region) {
            return refused;
        }
        if endorsement.voter != id(&peer) {
            return wire::Response::Refused("an endorsement is sent by its voter".into());
        }
        let msg = fleetmesh_actors::actor::region::EndorseIn {
            from: id(&peer),
            term,
            endorsement,
        };
        match self.region_links.as_ref().map(|l| &l.endorse) {
            Some(r) if r.try_send(msg).is_ok() => wire::Response::Accepted,
            Some(_) => wire::Response::Refused("endorsement queue full".into()),
            None => absent("region consensus"),
        }
    }

    fn to_region_acks(&self, acks: AcksIn) {
        if let Some(l) = &self.region_links
            && l.acks.try_send(acks).is_err()
        {
            self.metrics.inbound_dropped.inc();
        }
    }

    /// A replay batch: the region actor takes it in (if this node is master) and the
    /// answer, the origin's new mark, goes back when it has.
    fn on_replay(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        region: String,
        first: u64,
        spikes: Vec<fleetmesh_actors::spike::Spike>,
    ) {
        let links = self.region_links.clone();
        let Some((links, channel)) =
            self.serving(peer, links, "replay", "region consensus", &region, channel)
        else {
            return;
        };
        let request = links.replay.send(ReplayIn {
            from: id(&peer),
            first,
            spikes,
        });
        self.respond_later(peer, channel, async move {
            match request.await {
                Ok(Ok((term, mark))) => wire::Response::Acked { region, term, mark },
                Ok(Err(why)) => wire::Response::Refused(why),
                Err(e) => wire::Response::Refused(format!("region actor unavailable: {e}")),
            }
        });
    }

    fn respond(
        &mut self,
        channel: request_response::ResponseChannel<wire::Response>,
        reply: wire::Response,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .hello
            .send_response(channel, reply);
    }

    /// Answers on `channel` once `reply` (an actor working it out) resolves, and then
    /// gives back the place in `peer`'s budget the request held.
    fn respond_later(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        reply: impl Future<Output = wire::Response> + Send + 'static,
    ) {
        self.replies
            .push(Box::pin(async move { (channel, reply.await, peer) }));
    }

    /// A peer audits this node: the file actor answers (with the spike encoder's
    /// numbering) when it has.
    fn on_digest(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        region: String,
    ) {
        let links = self.audit_links.clone();
        let Some((links, channel)) = self.serving(peer, links, "audit", "audits", &region, channel)
        else {
            return;
        };
        let request = links.digest.send(BaselineDigest);
        self.respond_later(peer, channel, async move {
            match request.await {
                Ok(Ok(answer)) => wire::Response::Digest(answer),
                Ok(Err(why)) => wire::Response::Refused(why),
                Err(e) => wire::Response::Refused(format!("file detector unavailable: {e}")),
            }
        });
    }

    /// A region member consults this node as master: the fleet actor answers.
    fn on_consult(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        region: String,
        role: String,
        spike: fleetmesh_actors::spike::Spike,
        recheck: bool,
    ) {
        let links = self.fleet_links.clone();
        let Some((links, channel)) = self.serving(
            peer,
            links,
            "consultation",
            "consultations",
            &region,
            channel,
        ) else {
            return;
        };
        let request = links.consult.send(ConsultIn {
            from: id(&peer),
            role,
            spike,
            recheck,
        });
        self.respond_later(peer, channel, async move {
            match request.await {
                Ok(Ok(answer)) => wire::Response::Verdict(answer),
                Ok(Err(why)) => wire::Response::Refused(why),
                Err(e) => wire::Response::Refused(format!("fleet actor unavailable: {e}")),
            }
        });
    }

    fn to_policy(
        &self,
        seq: u64,
        from: node::Id,
        answer: Result<fleetmesh_actors::fleet::Answer, Failure>,
    ) {
        if let Some(l) = &self.fleet_links
            && l.answered
                .try_send(ConsultAnswered { seq, from, answer })
                .is_err()
        {
            self.metrics.inbound_dropped.inc();
        }
    }

    fn to_audit(&self, from: node::Id, answer: Result<wire::AuditAnswer, String>) {
        if let Some(l) = &self.audit_links
            && l.answered.try_send(Answered { from, answer }).is_err()
        {
            self.metrics.inbound_dropped.inc();
        }
    }

    fn send_ask(&mut self, a: Ask) {
        match a.to.as_str().parse::<PeerId>() {
            Ok(peer) => {
                let request_id = self
                    .swarm
                    .behaviour_mut()
                    .hello
                    .send_request(&peer, a.request);
                self.asked.insert(request_id, a.reply);
            }
            Err(e) => {
                let _ = a.reply.send(Err(format!("{} is not a peer id: {e}", a.to)));
            }
        }
    }

    /// A node of any region asks this node, as its region's master, for a twin it holds.
    fn on_get_twin(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<wire::Response>,
        region: String,
        node: node::Id,
    ) {
        let links = self.region_links.clone();
        let Some((links, channel)) = self.serving(peer, links, "twin", "twins", &region, channel)
        else {
            return;
        };
        let request = links
            .twin
            .send(fleetmesh_actors::actor::twin::GetTwin(node));
        self.respond_later(peer, channel, async move {
            match request.await {
                Ok(held) => wire::Response::Twin(held.map(Box::new)),
                Err(e) => wire::Response::Refused(format!("twin actor unavailable: {e}")),
            }
        });
    }

    fn send_direct(&mut self, d: Direct) {
        match d.to.as_str().parse::<PeerId>() {
            Ok(peer) => {
                let audit = matches!(d.request, wire::Request::Digest { .. });
                let consult = match &d.request {
                    wire::Request::Consult { spike, .. } => Some(spike.seq),
                    _ => None,
                };
                if matches!(d.request, wire::Request::Raft { .. } | wire::Request::Probe) {
                    self.swarm
                        .behaviour_mut()
                        .consensus
                        .send_request(&peer, d.request);
                    return;
                }
                let request_id = self
                    .swarm
                    .behaviour_mut()
                    .hello
                    .send_request(&peer, d.request);
                if audit {
                    self.audits_out.insert(request_id, peer);
                }
                if let Some(seq) = consult {
                    self.consults_out.insert(request_id, seq);
                }
            }
            Err(e) => tracing::warn!(to = %d.to, error = %e, "direct request to a bad peer id"),
        }
    }

    /// The consensus protocol carries Raft messages and liveness probes, small and
    /// answered at once, so that neither waits behind bigger requests: a Raft message's
    /// answer only says whether the region actor took it (a lost one is Raft's business:
    /// it resends); a probe's answer is the liveness the prober's watch is fed with.
    fn on_consensus(&mut self, event: request_response::Event<wire::Request, wire::Response>) {
        let (peer, request, channel) = match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => (peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        response: wire::Response::Alive,
                        ..
                    },
                ..
            } => {
                self.to_actor(Input::Alive { from: id(&peer) });
                return;
            }
            _ => return,
        };
        {
            let reply = match request {
                wire::Request::Raft { region, message } => self.on_raft(peer, region, message),
                wire::Request::Probe => wire::Response::Alive,
                _ => {
                    tracing::debug!(%peer, "not a consensus message on the consensus protocol");
                    wire::Response::Refused("only consensus messages on this protocol".into())
                }
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .consensus
                .send_response(channel, reply);
        }
    }

    fn on_hello(&mut self, event: request_response::Event<wire::Request, wire::Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request, channel, ..
                } => {
                    let reply = match request {
                        wire::Request::Replay {
                            region,
                            first,
                            spikes,
                        } => {
                            self.on_replay(peer, channel, region, first, spikes);
                            return;
                        }
                        wire::Request::Hello(info) => {
                            self.to_actor(Input::Hello {
                                from: id(&peer),
                                info,
                            });
                            wire::Response::Hello(self.info.clone())
                        }
                        wire::Request::Raft { region, message } => {
                            self.on_raft(peer, region, message)
                        }
                        wire::Request::Probe => wire::Response::Alive,
                        wire::Request::Heartbeat(beat) => {
                            // Only from a peer of this region (heartbeats are per region).
                            if beat.info.region == self.info.region {
                                self.to_actor(Input::Heartbeat {
                                    from: id(&peer),
                                    beat: beat.into(),
                                });
                            }
                            wire::Response::Accepted
                        }
                        wire::Request::Operator { region, action } => {
                            self.on_operator(peer, region, action)
                        }
                        wire::Request::Alerts {
                            region,
                            raised,
                            cleared,
                        } => self.on_alerts(peer, region, raised, cleared),
                        wire::Request::Twin(report) => {
                            self.on_twin(peer, channel, *report);
                            return;
                        }
                        wire::Request::GetSbom { offset } => {
                            self.on_sbom(peer, channel, offset);
                            return;
                        }
                        wire::Request::GetMetrics { since } => {
                            self.on_metrics(peer, channel, since);
                            return;
                        }
                        wire::Request::AlertRecords {
                            region,
                            since,
                            state,
                            limit,
                        } => {
                            self.on_alert_records(peer, channel, region, since, state, limit);
                            return;
                        }
                        wire::Request::Endorse {
                            region,
                            term,
                            endorsement,
                        } => self.on_endorse(peer, region, term, endorsement),
                        wire::Request::GetTwin { region, node } => {
                            self.on_get_twin(peer, channel, region, node);
                            return;
                        }
                        wire::Request::Digest { region } => {
                            self.on_digest(peer, channel, region);
                            return;
                        }
                        wire::Request::Consult {
                            region,
                            role,
                            spike,
                            recheck,
                        } => {
                            self.on_consult(peer, channel, region, role, *spike, recheck);
                            return;
                        }
                    };
                    self.respond(channel, reply);
                }
                Message::Response {
                    request_id,
                    response,
                } if self.asked.contains_key(&request_id) => {
                    if let Some(tx) = self.asked.remove(&request_id) {
                        let _ = tx.send(Ok(response));
                    }
                }
                Message::Response {
                    request_id,
                    response,
                } if self.audits_out.contains_key(&request_id) => {
                    self.audits_out.remove(&request_id);
                    let answer = match response {
                        wire::Response::Digest(a) => Ok(a),
                        wire::Response::Refused(why) => Err(format!("refused: {why}")),
                        wire::Response::Busy { why, .. } => Err(format!("busy: {why}")),
                        other => Err(format!("unexpected answer {other:?}")),
                    };
                    self.to_audit(id(&peer), answer);
                }
                Message::Response {
                    request_id,
                    response,
                } if self.consults_out.contains_key(&request_id) => {
                    let seq = self.consults_out.remove(&request_id).unwrap_or_default();
                    let answer = match response {
                        wire::Response::Verdict(a) => Ok(a),
                        wire::Response::Refused(why) => Err(Failure::Refused(why)),
                        wire::Response::Busy {
                            retry_after_ms,
                            why,
                        } => Err(Failure::Busy {
                            retry_after: Duration::from_millis(retry_after_ms),
                            why,
                        }),
                        other => Err(Failure::Refused(format!("unexpected answer {other:?}"))),
                    };
                    self.to_policy(seq, id(&peer), answer);
                }
                Message::Response { response, .. } => match response {
                    wire::Response::Hello(info) => self.to_actor(Input::Hello {
                        from: id(&peer),
                        info,
                    }),
                    wire::Response::Accepted => {}
                    wire::Response::Alive => self.to_actor(Input::Alive { from: id(&peer) }),
                    wire::Response::TwinTaken(since) => {
                        if let Some(l) = &self.region_links {
                            let input = fleetmesh_actors::twin::Input::DriftSince(since);
                            // Lost: the next answer (every report) brings it again.
                            let _ = l
                                .twin_taken
                                .try_send(fleetmesh_actors::actor::twin::Observe(input));
                        }
                    }
                    wire::Response::Acked { region, term, mark } => {
                        let own = id(self.swarm.local_peer_id());
                        self.to_region_acks(AcksIn {
                            from: id(&peer),
                            acks: wire::Acks {
                                region,
                                term,
                                marks: vec![(own, mark)],
                            },
                        });
                    }
                    wire::Response::Refused(why) => {
                        tracing::warn!(%peer, why, "request refused");
                    }
                    // A replay batch the master had no room for: the encoder sends it
                    // again when its answer does not come.
                    wire::Response::Busy { why, .. } => {
                        tracing::debug!(%peer, why, "request refused: busy");
                    }
                    wire::Response::Digest(_)
                    | wire::Response::Verdict(_)
                    | wire::Response::Twin(_)
                    | wire::Response::Sbom { .. }
                    | wire::Response::AlertRecords(_)
                    | wire::Response::Metrics(_) => {}
                },
            },
            request_response::Event::OutboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::debug!(%peer, %error, "hello failed");
                if let Some(tx) = self.asked.remove(&request_id) {
                    let _ = tx.send(Err(error.to_string()));
                }
                if self.audits_out.remove(&request_id).is_some() {
                    self.to_audit(id(&peer), Err(error.to_string()));
                }
                if let Some(seq) = self.consults_out.remove(&request_id) {
                    let why = Failure::Unreachable(error.to_string());
                    self.to_policy(seq, id(&peer), Err(why));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // Undecodable requests land here; count them with the gossip ones.
                tracing::debug!(%peer, %error, "hello request refused");
                if let request_response::InboundFailure::Io(_) = error {
                    self.metrics
                        .decode_errors
                        .get_or_create(&Metrics::reason("request"))
                        .inc();
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let label = self.label_of(&message.topic);
                let mut decoded = wire::decode::<wire::Body>(&message.data);
                let mut untrusted = false;
                if let (Ok(body), Some(author)) = (&mut decoded, message.source)
                    && let Err((kind, _)) =
                        self.trust
                            .admit(&id(&author), body, fleetmesh_actors::actor::unix_ms())
                {
                    self.metrics
                        .trust_refused
                        .get_or_create(&Metrics::reason(kind))
                        .inc();
                    untrusted = true;
                }
                let acceptance = match (&decoded, message.source) {
                    // Not forwarded, and not held against the relay (which may not have
                    // known better).
                    (Ok(_), Some(_)) if untrusted => MessageAcceptance::Ignore,
                    (Ok(_), Some(_)) => MessageAcceptance::Accept,
                    (Ok(_), None) => MessageAcceptance::Reject,
                    (Err(e), _) => {
                        tracing::debug!(source = %propagation_source, error = %e, "refused frame");
                        self.metrics
                            .decode_errors
                            .get_or_create(&Metrics::reason(e.reason()))
                            .inc();
                        MessageAcceptance::Reject
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                let (Ok(body), Some(author), false) = (decoded, message.source, untrusted) else {
                    return;
                };
                self.metrics
                    .messages_in
                    .get_or_create(&Metrics::topic(label, body.kind()))
                    .inc();
                match body {
                    wire::Body::Heartbeat(beat) => {
                        self.metrics
                            .heartbeat_lag
                            .observe(lag(beat.sent_unix_ms).as_secs_f64());
                        self.to_actor(Input::Heartbeat {
                            from: id(&author),
                            beat: beat.into(),
                        });
                    }
                    wire::Body::Spikes(spikes) => {
                        if let Some(l) = &self.audit_links {
                            let heard = Heard {
                                from: id(&author),
                                spikes: spikes
                                    .iter()
                                    .map(|s| (s.origin.clone(), s.seq, s.kind))
                                    .collect(),
                            };
                            if l.heard.try_send(heard).is_err() {
                                self.metrics.inbound_dropped.inc();
                            }
                        }
                        if let Some(a) = &self.anomaly {
                            let metrics: Vec<_> = spikes
                                .iter()
                                .filter(|s| s.kind == fleetmesh_actors::spike::Kind::Metric)
                                .cloned()
                                .collect();
                            if !metrics.is_empty()
                                && a.try_send(Samples {
                                    from: id(&author),
                                    spikes: metrics,
                                })
                                .is_err()
                            {
                                self.metrics.inbound_dropped.inc();
                            }
                        }
                        if let Some(l) = &self.region_links
                            && l.spikes.try_send(SpikesIn(spikes)).is_err()
                        {
                            self.metrics.inbound_dropped.inc();
                        }
                    }
                    wire::Body::Acks(acks) => self.to_region_acks(AcksIn {
                        from: id(&author),
                        acks,
                    }),
                    wire::Body::Approval(approval) => {
                        if let Some(l) = &self.fleet_links {
                            let learned = LearnedIn {
                                signature_ok: signature_ok(&approval),
                                approval: *approval,
                                via: Via::Gossip,
                                author: Some(id(&author)),
                            };
                            if l.approvals.try_send(learned).is_err() {
                                self.metrics.inbound_dropped.inc();
                            }
                        }
                    }
                    wire::Body::Census(summary) => {
                        if let Some(c) = &self.census
                            && c.try_send(CensusIn {
                                author: id(&author),
                                summary,
                            })
                            .is_err()
                        {
                            self.metrics.inbound_dropped.inc();
                        }
                    }
                    wire::Body::Silences(p) => {
                        // Another region's, from its master (its proof checked above);
                        // this region's own come through its log.
                        if p.region != self.info.region
                            && id(&author) == p.master
                            && let Some(l) = &self.fleet_links
                        {
                            let msg = fleetmesh_actors::actor::alert::ForeignSilences {
                                region: p.region,
                                silences: p.silences,
                            };
                            if l.silences.try_send(msg).is_err() {
                                self.metrics.inbound_dropped.inc();
                            }
                        }
                    }
                    wire::Body::Emergency(emergency) => {
                        if let Some(l) = &self.fleet_links {
                            let e = EmergencyIn {
                                author: id(&author),
                                emergency: *emergency,
                            };
                            if l.emergency.try_send(e).is_err() {
                                self.metrics.inbound_dropped.inc();
                            }
                        }
                    }
                }
            }
            gossipsub::Event::Subscribed { .. } => self.retry_pending(),
            _ => {}
        }
    }
}

fn id(peer: &PeerId) -> node::Id {
    node::Id::from(peer.to_base58())
}

/// The refusal of a request for a part this node does not run.
fn absent(what: &str) -> wire::Response {
    wire::Response::Refused(format!("this node runs no {what}"))
}

/// Sleeps until `at`, or for ever without one (a `select!` branch that is armed only
/// while a core has a timer).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
