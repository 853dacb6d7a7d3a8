//! Failure detection on real nodes with the default heartbeat settings (1 s heartbeats,
//! adaptive suspicion, confirmation by a second observer): a node stopped for 2 s is never
//! declared dead, and a node killed with SIGKILL is declared dead by every region peer.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{CONVERGE, Node, Spec, eventually};

/// The defaults, not the harness's fast test heartbeats.
fn default_heartbeats(spec: &mut Spec) {
    for (k, v) in [
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS", "1000"),
        ("FLEETMESH__HEARTBEAT__ACCEPTABLE_PAUSE_MS", "500"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
}

fn log_declares_dead(node: &Node, peer: &str) -> bool {
    node.log().lines().any(|l| {
        l.contains("peer status")
            && l.contains(peer)
            && (l.contains("to=\"dead\"") || l.contains("to=dead"))
    })
}

async fn status_of(node: &Node, peer: &str) -> String {
    node.peer(peer)
        .await
        .map(|p| p.status)
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_not_declared_dead_and_a_killed_one_is() {
    let mut seed = Spec::new("f0", "fd");
    default_heartbeats(&mut seed);
    let mut nodes = vec![Node::start(seed)];
    for i in 1..5 {
        let mut spec = Spec::new(&format!("f{i}"), "fd");
        default_heartbeats(&mut spec);
        spec.bootstrap = vec![nodes[0].addr(true)];
        nodes.push(Node::start(spec));
    }
    for node in &nodes {
        eventually(&format!("{} sees 4 alive", node.name), CONVERGE, || async {
            let alive = node.node().await.peers.get("alive").copied().unwrap_or(0);
            if alive == 4 {
                Ok(())
            } else {
                Err(format!("{alive} alive"))
            }
        })
        .await;
    }

    // SIGSTOP for 2 s: heartbeats stop, connections stay up.
    let paused = nodes[4].peer_id().to_string();
    let pid = nodes[4].child.id().to_string();
    let status = Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    // Watch for a while after it resumes: nobody declares it dead.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for node in &nodes[..4] {
            let st = status_of(node, &paused).await;
            assert_ne!(st, "dead", "{} declared the paused node dead", node.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in &nodes[..4] {
        assert!(
            !log_declares_dead(node, &paused),
            "{}:\n{}",
            node.name,
            node.log()
        );
        let entry = node.peer(&paused).await;
        assert_eq!(
            status_of(node, &paused).await,
            "alive",
            "{}: {entry:?}",
            node.name
        );
    }

    // SIGKILL: every survivor declares it dead.
    let victim = nodes[3].peer_id().to_string();
    let killed = Instant::now();
    nodes[3].kill9();
    let survivors: Vec<&Node> = [0, 1, 2, 4].iter().map(|i| &nodes[*i]).collect();
    let mut seen: Vec<Option<Duration>> = vec![None; survivors.len()];
    while seen.iter().any(Option::is_none) {
        assert!(
            killed.elapsed() < CONVERGE,
            "not every survivor declared the killed node dead: {seen:?}"
        );
        for (i, node) in survivors.iter().enumerate() {
            if seen[i].is_none() && status_of(node, &victim).await == "dead" {
                seen[i] = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A figure for the reader; the detection benchmark measures it properly.
    eprintln!("failure: each survivor saw the killed node dead after {seen:?}");
}
