//! The fleet key: a node with another key is never admitted.

use crate::harness::{CONVERGE, Node, Spec, eventually, metric, psk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_fleet_key_is_never_admitted() {
    let keys = tempfile::tempdir().expect("tempdir");
    let fleet = psk(keys.path(), "fleet.psk");
    let other = psk(keys.path(), "other.psk");

    let mut seed = Spec::new("a0", "eu");
    seed.psk = Some(fleet.clone());
    let a0 = Node::start(seed);
    let mut s1 = Spec::new("a1", "eu");
    s1.psk = Some(fleet.clone());
    s1.bootstrap = vec![a0.addr(true)];
    let a1 = Node::start(s1);

    let mut si = Spec::new("intruder", "eu");
    si.psk = Some(other);
    si.bootstrap = vec![a0.addr(false), a1.addr(true)];
    let intruder = Node::start(si);

    // Wait for positive evidence that the intruder tried: it has produced heartbeats, and
    // the fleet's nodes have refused its connection attempts at the handshake.
    eventually("intruder is refused", CONVERGE, || async {
        let sent = intruder.node().await.heartbeats_sent;
        let refused = metric(
            &a0.metrics().await,
            "fleetmesh_connection_errors_total",
            "incoming",
        );
        let members = a0.peers().await.len() + a1.peers().await.len();
        if sent >= 10 && refused >= 2.0 && members >= 2 {
            Ok(())
        } else {
            Err(format!(
                "intruder sent {sent}, a0 refused {refused}, fleet members {members}"
            ))
        }
    })
    .await;

    for n in [&a0, &a1] {
        let peers = n.peers().await;
        assert!(
            peers.iter().all(|p| p.peer_id != intruder.peer_id()),
            "{} lists the intruder: {peers:?}",
            n.name
        );
        assert_eq!(peers.len(), 1, "{} should see only its fleet peer", n.name);
    }
    let seen_by_intruder = intruder.peers().await;
    assert!(
        seen_by_intruder.is_empty(),
        "intruder sees {seen_by_intruder:?}"
    );
    let m = intruder.metrics().await;
    assert_eq!(
        metric(&m, "fleetmesh_messages_in_total", ""),
        0.0,
        "intruder received gossip"
    );
}
