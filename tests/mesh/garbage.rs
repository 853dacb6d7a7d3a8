//! Garbage and wrong-version frames from a real libp2p peer: refused, counted, and the
//! nodes keep serving.
//!
//! The rogue is built from the node's own network code (same transport, same fleet key,
//! same gossipsub settings), so its frames travel exactly as a broken or hostile node's
//! would; only what it publishes is wrong.

use std::time::Duration;

use fleetmesh::net::{self, region_topic};
use fleetmesh_actors::{heartbeat, node, wire};
use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::swarm::SwarmEvent;
use tokio::sync::{mpsc, watch};

use crate::harness::{CONVERGE, Node, Spec, eventually, metric, psk};

/// Runs a rogue swarm: publishes whatever bytes it is sent on the region topic.
fn rogue(
    key: std::path::PathBuf,
    region: &str,
    dial: libp2p::Multiaddr,
) -> (mpsc::Sender<Vec<u8>>, watch::Receiver<usize>, String) {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let id = keypair.public().to_peer_id().to_base58();
    let config = net::Config {
        keypair,
        psk: Some(fleetmesh::identity::read_psk(&key).expect("psk")),
        region: region.into(),
        mdns: false,
        idle_timeout: Duration::from_secs(60),
    };
    let mut swarm = net::build_swarm(&config).expect("rogue swarm");
    swarm.dial(dial).expect("dial");
    let topic = region_topic(region);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let (subs_tx, subs_rx) = watch::channel(0usize);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(bytes) = rx.recv() => {
                    swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes).expect("published");
                }
                ev = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                        gossipsub::Event::Subscribed { topic: t, .. },
                    )) = ev
                        && t == topic.hash()
                    {
                        subs_tx.send_modify(|n| *n += 1);
                    }
                }
                else => break,
            }
        }
    });
    (tx, subs_rx, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_wrong_version_frames_are_refused_and_counted() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = psk(keys.path(), "fleet.psk");
    let mut s0 = Spec::new("g0", "eu");
    s0.psk = Some(key.clone());
    let g0 = Node::start(s0);
    let mut s1 = Spec::new("g1", "eu");
    s1.psk = Some(key.clone());
    s1.bootstrap = vec![g0.addr(true)];
    let g1 = Node::start(s1);

    let (rogue_tx, mut subscribed, rogue_id) =
        rogue(key, "eu", g0.addr(true).parse().expect("addr"));
    tokio::time::timeout(CONVERGE, subscribed.wait_for(|n| *n >= 1))
        .await
        .expect("g0 subscribes to the rogue's topic in time")
        .expect("rogue running");

    let wrong_version = wire::encode_versioned(
        wire::VERSION + 1,
        &wire::Body::Heartbeat(Box::new(heartbeat::Beat::new(
            node::Info {
                name: "rogue".into(),
                region: "eu".into(),
                role: "web".into(),
                incarnation: 1,
            },
            1,
        ))),
    )
    .expect("encodes");
    rogue_tx
        .send(b"\xde\xad\xbe\xef not msgpack".to_vec())
        .await
        .expect("send");
    rogue_tx.send(wrong_version).await.expect("send");

    eventually("g0 counts both refusals", CONVERGE, || async {
        let m = g0.metrics().await;
        let malformed = metric(&m, "fleetmesh_decode_errors_total", "reason=\"malformed\"");
        let version = metric(&m, "fleetmesh_decode_errors_total", "reason=\"version\"");
        if malformed >= 1.0 && version >= 1.0 {
            Ok(())
        } else {
            Err(format!("malformed {malformed}, version {version}"))
        }
    })
    .await;

    // Refused frames are not forwarded: g1, which only g0 could have relayed them to,
    // never sees them (unless discovery connected it to the rogue directly meanwhile).
    let m1 = g1.metrics().await;
    if g1.peers().await.iter().all(|p| p.peer_id != rogue_id) {
        assert_eq!(
            metric(&m1, "fleetmesh_decode_errors_total", "version"),
            0.0,
            "{m1}"
        );
    }
    // Neither node takes the rogue's "heartbeat" as a member's.
    for n in [&g0, &g1] {
        assert!(
            n.peers()
                .await
                .iter()
                .all(|p| p.name.as_deref() != Some("rogue")),
            "{} took the rogue for a member",
            n.name
        );
    }

    // Both nodes keep serving and keep hearing each other.
    let seq_before = g1.peer(g0.peer_id()).await.map_or(0, |p| p.heartbeat_seq);
    eventually("g1 still hears g0", CONVERGE, || async {
        let seq = g1
            .peer(g0.peer_id())
            .await
            .map(|p| (p.heartbeat_seq, p.status));
        match seq {
            Some((s, st)) if s > seq_before && st == "alive" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for n in [&g0, &g1] {
        let ok = reqwest::get(n.url("/healthz")).await.expect("healthz");
        assert!(ok.status().is_success());
    }
}
