//! The libp2p side of a node: transport, behaviour, topics, and the driver task that owns
//! the swarm.
//!
//! Transport: TCP + noise + yamux, inside a pre-shared-key private network when a fleet key
//! is configured. Behaviour: gossipsub (strict validation, signed messages, peer scoring so
//! that senders of invalid frames are penalized), identify, kademlia for discovery from a
//! single bootstrap address, a `hello` request-response exchange that tells peers who we
//! are, and mDNS only when enabled. Nothing here decides anything about membership: the
//! driver hands what arrives to the actors.

pub mod budget;
pub mod codec;
pub mod driver;
pub mod trust;

use std::collections::HashMap;
use std::time::Duration;

use fleetmesh_actors::wire;
use futures::future::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, identify, kad, mdns, noise, ping,
    request_response, tcp, yamux,
};

/// Every connection is pinged this often; one unanswered for `PING_TIMEOUT` is closed.
const PING_INTERVAL: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(4);

/// Protocol names; the version in each is the wire protocol's.
pub const IDENTIFY_PROTOCOL: &str = "/fleetmesh/id/1";
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/fleetmesh/kad/1");
pub const HELLO_PROTOCOL: StreamProtocol = StreamProtocol::new("/fleetmesh/hello/1");
/// Consensus messages travel on a protocol of their own, with their own stream budget:
/// a storm of consultations or replays never delays a vote or a master's heartbeat.
pub const CONSENSUS_PROTOCOL: StreamProtocol = StreamProtocol::new("/fleetmesh/consensus/1");

/// Streams at once on one connection, per protocol. The bulk protocol's bound is above
/// what one peer may have in flight here ([`budget::IN_FLIGHT`]) and what this node's
/// consultation client sends at once, so that a request over budget reaches the driver
/// and is answered busy (counted) instead of being reset by the connection handler
/// (which the asker would take for a dead master).
pub const BULK_STREAMS: usize = 512;
pub const CONSENSUS_STREAMS: usize = 256;

/// The gossip topic of one region.
pub fn region_topic(region: &str) -> IdentTopic {
    IdentTopic::new(format!("fleetmesh/v{}/region/{region}", wire::VERSION))
}

/// The fleet-wide gossip topic.
pub fn fleet_topic() -> IdentTopic {
    IdentTopic::new(format!("fleetmesh/v{}/fleet", wire::VERSION))
}

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("transport: {0}")]
    Transport(String),
    #[error("gossipsub: {0}")]
    Gossipsub(String),
    #[error("mdns: {0}")]
    Mdns(String),
    #[error("cannot listen on net.listen address {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
}

/// What the network layer needs to start.
#[derive(Clone)]
pub struct Config {
    pub keypair: Keypair,
    pub psk: Option<PreSharedKey>,
    pub region: String,
    pub mdns: bool,
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field(
                "psk",
                &self.psk.as_ref().map(|p| p.fingerprint().to_string()),
            )
            .field("region", &self.region)
            .field("mdns", &self.mdns)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// The request-response behaviour that exchanges `Hello`s.
pub type Hello = request_response::Behaviour<codec::Rmp<wire::Request, wire::Response>>;

#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations)]
pub struct Behaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub hello: Hello,
    /// Region consensus (Raft) messages only.
    pub consensus: Hello,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Liveness of each connection: a link that went silent (a cut cable, a peer whose
    /// network vanished) leaves a half-open TCP connection that would swallow gossip for
    /// minutes; a failed ping closes it, so that the peers reconnect afresh.
    pub ping: ping::Behaviour,
}

/// TCP (+ pnet when keyed) + noise + yamux.
fn transport(
    key: &Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Error> {
    let noise = noise::Config::new(key).map_err(|e| Error::Transport(e.to_string()))?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let base = tcp.and_then(move |socket, _| async move {
        match psk {
            Some(psk) => PnetConfig::new(psk)
                .handshake(socket)
                .await
                .map(Either::Left)
                .map_err(std::io::Error::other),
            None => Ok(Either::Right(socket)),
        }
    });
    Ok(base
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex({
            let mut c = yamux::Config::default();
            // Room for both protocols' streams (bulk and consensus) with the others.
            c.set_max_num_streams(BULK_STREAMS + CONSENSUS_STREAMS + 128);
            c
        })
        .timeout(Duration::from_secs(20))
        .boxed())
}

/// Peer scoring: a sender of invalid frames loses score fast and is graylisted after a
/// few; quiet topics (heartbeats once a second) are not punished for being quiet.
fn score_params(topics: &[&IdentTopic]) -> PeerScoreParams {
    let mut topic_params = HashMap::new();
    for t in topics {
        topic_params.insert(
            t.hash(),
            TopicScoreParams {
                topic_weight: 1.0,
                time_in_mesh_weight: 0.01,
                time_in_mesh_quantum: Duration::from_secs(1),
                time_in_mesh_cap: 100.0,
                first_message_deliveries_weight: 0.1,
                first_message_deliveries_cap: 50.0,
                mesh_message_deliveries_weight: 0.0,
                mesh_failure_penalty_weight: 0.0,
                invalid_message_deliveries_weight: -20.0,
                invalid_message_deliveries_decay: 0.5,
                ..TopicScoreParams::default()
            },
        );
    }
    PeerScoreParams {
        topics: topic_params,
        // Many nodes may share one address (NAT, one test host): no co-location penalty.
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    }
}

/// Gossipsub with strict validation. The mesh is narrower than gossipsub's default (4
/// instead of 6) and publishing goes to mesh peers only (no flood publish): every copy of
/// a message costs its receiver a signature check and a wake-up, and in a region of 20
/// nodes this cut an idle node's CPU by a third while lowering propagation p99 (see
/// BENCHMARKS.md). Four is still enough for a message to reach a region in two or three
/// hops, with gossip (IHAVE/IWANT) repairing what a lost link misses.
fn gossipsub(
    key: &Keypair,
    region: &IdentTopic,
    fleet: &IdentTopic,
) -> Result<gossipsub::Behaviour, Error> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(wire::MAX_FRAME)
        .flood_publish(false)
        .mesh_n(4)
        .mesh_n_low(3)
        .mesh_n_high(8)
        .mesh_outbound_min(2)
        .gossip_lazy(3)
        .build()
        .map_err(|e| Error::Gossipsub(e.to_string()))?;
    let mut gs = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
        .map_err(|e| Error::Gossipsub(e.to_string()))?;
    gs.with_peer_score(
        score_params(&[region, fleet]),
        PeerScoreThresholds::default(),
    )
    .map_err(Error::Gossipsub)?;
    gs.subscribe(region)
        .map_err(|e| Error::Gossipsub(e.to_string()))?;
    gs.subscribe(fleet)
        .map_err(|e| Error::Gossipsub(e.to_string()))?;
    Ok(gs)
}

/// Builds the swarm (not yet listening or dialing). Must run inside a tokio runtime.
pub fn build_swarm(config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let key = config.keypair.clone();
    let peer_id = key.public().to_peer_id();
    let region = region_topic(&config.region);
    let fleet = fleet_topic();
    let transport = transport(&key, config.psk)?;
    let gossipsub = gossipsub(&key, &region, &fleet)?;
    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(|e| Error::Mdns(e.to_string()))?,
        )
    } else {
        None
    };
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
            .with_agent_version(format!("fleetmesh/{}", env!("CARGO_PKG_VERSION"))),
    );
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    // The driver refreshes discovery itself (once connected, then every 30 s); kademlia's
    // own timer would also fire on a lone node and warn that it knows no peers.
    kad_config.set_periodic_bootstrap_interval(None);
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // Serve the DHT even on addresses identify cannot confirm (loopback, private nets).
    kad.set_mode(Some(kad::Mode::Server));
    let hello = Hello::with_codec(
        codec::Rmp::default(),
        [(HELLO_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(BULK_STREAMS),
    );
    // Raft messages are small and time-critical: a short timeout (a late one is stale
    // anyway) and a budget of their own.
    let consensus = Hello::with_codec(
        codec::Rmp::default(),
        [(CONSENSUS_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(2))
            .with_max_concurrent_streams(CONSENSUS_STREAMS),
    );
    let behaviour = Behaviour {
        gossipsub,
        identify,
        kad,
        hello,
        consensus,
        mdns: Toggle::from(mdns),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_INTERVAL)
                .with_timeout(PING_TIMEOUT),
        ),
    };
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}

/// Refuses a listen address whose fixed TCP port is taken.
///
/// libp2p's TCP transport listens with SO_REUSEPORT (to dial from its listen port), so a
/// second node on a taken port would bind it too and the kernel would split incoming
/// connections between the two. A plain bind first (which SO_REUSEPORT does not share
/// with) turns that into a clear error.
pub fn check_port_free(addr: &Multiaddr) -> Result<(), Error> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => std::net::TcpListener::bind((ip, port))
            .map(drop)
            .map_err(|e| Error::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            }),
        _ => Ok(()),
    }
}

/// Splits a trailing `/p2p/<id>` off an address.
pub fn split_peer_id(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut a = addr.clone();
    match a.pop() {
        Some(libp2p::multiaddr::Protocol::P2p(id)) => (a, Some(id)),
        _ => (addr.clone(), None),
    }
}
