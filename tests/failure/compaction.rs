//! The region log is compacted by snapshots on real nodes: with `region.snapshot_entries`
//! set low, a burst of approvals leaves every member with a snapshot and a short log; a
//! member killed and restarted comes back from snapshot and tail; a member stopped while
//! the log was compacted past its position catches up from the master's snapshot. Each
//! ends with every approval.

use std::time::Duration;

use serde_json::Value;

use crate::founding::{master_when, region, spec};
use crate::harness::{CONVERGE, Node, Spec, eventually, get};

fn compacting(name: &str, seed: Option<String>) -> Spec {
    let mut s = spec(name, seed);
    s.env
        .push(("FLEETMESH__REGION__SNAPSHOT_ENTRIES".into(), "8".into()));
    s
}

async fn approve(master: &Node, subject: &str) {
    let resp = reqwest::Client::new()
        .post(master.url("/api/v1/patterns/approve"))
        .json(&serde_json::json!({"roles": ["baseline"], "kind": "user", "change": "added", "subject": subject, "by": "ops"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200, "approval of {subject}");
}

async fn approvals(n: &Node) -> usize {
    let p: Value = get(&n.url("/api/v1/patterns")).await;
    p["learned"].as_array().map_or(0, Vec::len)
}

/// Every node of `nodes` holds `want` approvals, has taken a snapshot and keeps a log
/// shorter than the commands it applied.
async fn compacted_everywhere(nodes: &[&Node], want: usize) {
    for n in nodes {
        eventually(
            &format!("{} holds {want} approvals from a compacted log", n.name),
            CONVERGE,
            || async {
                let (have, r) = (approvals(n).await, region(n).await);
                let snapshot = r["snapshot_index"].as_u64().unwrap_or(0);
                let entries = r["log_entries"].as_u64().unwrap_or(u64::MAX);
                let applied = r["applied"].as_u64().unwrap_or(0);
                // No snapshot was skipped for size: the state stays within the bound.
                let oversized = r["snapshots_oversized"].as_u64();
                if have == want && snapshot > 0 && entries < applied && oversized == Some(0) {
                    Ok(())
                } else {
                    Err(format!(
                        "{have} approvals, snapshot at {snapshot}, {entries} entries, applied {applied}, oversized {oversized:?}"
                    ))
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_log_survives_restarts_and_catches_up_a_member_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Node> = Vec::new();
    for name in ["c0", "c1", "c2"] {
        let mut s = compacting(name, nodes.first().map(|n| n.addr(true)));
        s.dir = Some(tmp.path().join(name));
        nodes.push(Node::start(s));
    }
    let (m, _) = master_when(&nodes, "three voters", |r| {
        r["voters"].as_array().is_some_and(|v| v.len() == 3)
    })
    .await;
    for i in 0..30 {
        approve(&nodes[m], &format!("user{i}")).await;
    }
    compacted_everywhere(&nodes.iter().collect::<Vec<_>>(), 30).await;

    // A follower killed and restarted comes back from its snapshot and tail.
    let f = (0..3).find(|&i| i != m).expect("a follower");
    nodes[f].kill9();
    let mut again = compacting(&nodes[f].name, Some(nodes[m].addr(true)));
    again.dir = Some(nodes[f].dir.clone());
    nodes[f] = Node::start(again);
    compacted_everywhere(&[&nodes[f]], 30).await;

    // A follower stopped while the log moves far past it catches up by snapshot.
    let g = (0..3)
        .find(|&i| i != m && i != f)
        .expect("another follower");
    nodes[g].stop();
    for i in 30..60 {
        approve(&nodes[m], &format!("user{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut again = compacting(&nodes[g].name, Some(nodes[m].addr(true)));
    again.dir = Some(nodes[g].dir.clone());
    nodes[g] = Node::start(again);
    compacted_everywhere(&nodes.iter().collect::<Vec<_>>(), 60).await;
    // Once from its own disk at start, once from the master's snapshot.
    let installs = nodes[g]
        .log()
        .matches("region state installed from a snapshot")
        .count();
    assert!(
        installs >= 2,
        "{} caught up without the master's snapshot ({installs} installs)",
        nodes[g].name
    );
    eventually("every member applied the same log", CONVERGE, || async {
        let applied: Vec<u64> = futures::future::join_all(nodes.iter().map(region))
            .await
            .iter()
            .map(|r| r["applied"].as_u64().unwrap_or(0))
            .collect();
        if applied.iter().all(|a| *a == applied[0]) {
            Ok(())
        } else {
            Err(format!("{applied:?}"))
        }
    })
    .await;
}
