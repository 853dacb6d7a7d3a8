//! Five real nodes in two regions, all started from one bootstrap address.

use std::collections::HashMap;

use crate::harness::{CONVERGE, Node, Spec, eventually, psk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_two_regions_from_one_bootstrap_address() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = psk(keys.path(), "fleet.psk");
    let regions = ["eu", "eu", "us", "eu", "us"];

    let mut seed = Spec::new("n0", regions[0]);
    seed.psk = Some(key.clone());
    let mut nodes = vec![Node::start(seed)];
    for (i, region) in regions.iter().enumerate().skip(1) {
        let mut spec = Spec::new(&format!("n{i}"), region);
        spec.psk = Some(key.clone());
        // Half with the peer id in the bootstrap address, half without: both must work.
        spec.bootstrap = vec![nodes[0].addr(i % 2 == 0)];
        nodes.push(Node::start(spec));
    }
    let region_of: HashMap<String, &str> = nodes
        .iter()
        .zip(regions)
        .map(|(n, r)| (n.peer_id().to_string(), r))
        .collect();

    // Every node sees every other node, with its name and region; peers of its own region
    // are alive with several heartbeats received; peers of the other region are `remote`
    // and have sent it no heartbeat (heartbeat topics are per region).
    for (i, node) in nodes.iter().enumerate() {
        let region_of = &region_of;
        let my_region = regions[i];
        eventually(
            &format!("{} sees the fleet", node.name),
            CONVERGE,
            || async move {
                let peers = node.peers().await;
                for (id, region) in region_of {
                    if id == node.peer_id() {
                        continue;
                    }
                    let Some(p) = peers.iter().find(|p| &p.peer_id == id) else {
                        return Err(format!(
                            "{id} missing from {:?}",
                            peers.iter().map(|p| &p.name).collect::<Vec<_>>()
                        ));
                    };
                    if p.region.as_deref() != Some(*region) {
                        return Err(format!("{id} has region {:?}", p.region));
                    }
                    if *region == my_region {
                        if p.status != "alive" || p.heartbeats < 3 {
                            return Err(format!(
                                "{:?}: {} with {} heartbeats",
                                p.name, p.status, p.heartbeats
                            ));
                        }
                    } else if p.status != "remote" || p.heartbeats != 0 {
                        return Err(format!(
                            "{:?} of another region: {} with {} heartbeats",
                            p.name, p.status, p.heartbeats
                        ));
                    }
                }
                Ok(())
            },
        )
        .await;
    }

    // The node endpoint reports the right counts and identity.
    let view = nodes[0].node().await;
    assert_eq!(view.peer_id, nodes[0].peer_id());
    assert_eq!(view.region, "eu");
    assert!(!view.listen_addresses.is_empty());
    eventually("counts by status", CONVERGE, || async {
        let v = nodes[0].node().await;
        let (alive, remote) = (v.peers.get("alive"), v.peers.get("remote"));
        if (alive, remote) == (Some(&2), Some(&2)) {
            Ok(())
        } else {
            Err(format!("alive {alive:?}, remote {remote:?}"))
        }
    })
    .await;

    // Heartbeats keep arriving: a second look shows higher sequence numbers.
    let (n1, n3) = (&nodes[1], nodes[3].peer_id());
    let first = n1.peer(n3).await.map_or(0, |p| p.heartbeat_seq);
    eventually("heartbeats keep flowing", CONVERGE, || async move {
        let now = n1.peer(n3).await.map_or(0, |p| p.heartbeat_seq);
        if now > first {
            Ok(())
        } else {
            Err(format!("seq still {now}"))
        }
    })
    .await;

    // A clean stop: SIGTERM ends every node with status 0.
    for mut n in nodes {
        let st = n.stop();
        assert!(st.success(), "{} exited with {st}:\n{}", n.name, n.log());
    }
}
