//! fleet-view: a kill -9 in one region, until a node of another region shows it dead; and
//! what region summaries cost each node.
//!
//! Five release nodes on loopback: `e0`..`e2` in region eu, `u0`, `u1` in region us. Per
//! trial the bench kills -9 a member of eu that is not its master, polls u0's
//! `GET /api/v1/census` every 10 ms until the member shows dead there, then starts it
//! again and waits until u0 shows it alive. The figure is failure detection in eu, the
//! death committed by eu's master, and the next summary it publishes (early on change,
//! else every `heartbeat.census_ms`), plus up to 10 ms of polling.
//!
//! Summary cost: the rmp-encoded size of the summary u0 last received from eu, and of
//! summaries built with 100 and 1,000 members (every one alive, the lines as a real
//! member writes them), with the bytes per second a node receives for 2, 10 and 100
//! regions at one summary per region every 2 s (one copy each; gossip duplicates not
//! counted).
//!
//!     cargo bench --bench fleet_view -- [--trials N]
//!
//! Last line: RESULT {json} (latencies in microseconds).

mod common;

use common::{arg, percentile};
#[allow(dead_code)]
#[path = "../tests/mesh/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use fleetmesh_actors::census::{Line, Summary};
use fleetmesh_actors::membership::Status;
use fleetmesh_actors::node;
use fleetmesh_actors::sync::{Connectivity, Report};
use harness::{Node, Spec, get, settled, two_regions};
use serde_json::Value;

async fn status_in_us(u0: &Node, peer: &str) -> Option<String> {
    let c: Value = get(&u0.url("/api/v1/census")).await;
    c["regions"].as_array().and_then(|l| {
        l.iter()
            .find(|r| r["region"] == "eu")
            .and_then(|eu| eu["members"].as_array())
            .and_then(|m| m.iter().find(|x| x["peer"] == peer))
            .and_then(|x| x["status"].as_str().map(str::to_string))
    })
}

/// The rmp size of a summary of `n` alive members, lines as a member writes them.
fn synthetic(n: usize) -> usize {
    let report = Report {
        connectivity: Some(Connectivity::Live),
        last_seq: 1_000_000,
        acked: 1_000_000,
        backlog: 0,
        oldest_unacked_ms: None,
        replay: None,
        since_unix_ms: Some(1_796_000_000_000),
    };
    let lines: Vec<Line> = (0..n)
        .map(|i| {
            let info = node::Info {
                name: format!("web-{i:04}"),
                region: "eu-west".into(),
                role: "web".into(),
                incarnation: 1_796_000_000_000,
            };
            Line::new(
                node::Id(format!("12D3KooW{:0>44}", i)),
                Some(&info),
                Status::Alive,
                Some(&report),
                200,
            )
        })
        .collect();
    let s = Summary::new(
        "eu-west",
        7,
        Some(node::Id(format!("12D3KooW{:0>44}", 0))),
        1_796_000_000_000,
        lines,
        fleetmesh_actors::wire::MAX_FRAME - 1024,
    );
    rmp_serde::to_vec(&s).map_or(0, |b| b.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials = arg("--trials", 10) as usize;
    let mut nodes = two_regions();
    settled(&nodes[3], 2, 5).await;
    let mut lat_us = Vec::with_capacity(trials);
    let mut lost = 0usize;
    for t in 0..trials {
        let master = harness::master_name(&nodes[0]).await.unwrap_or_default();
        let v = (0..3)
            .find(|&i| nodes[i].name != master)
            .expect("a member of eu that is not its master");
        let peer = nodes[v].peer_id().to_string();
        let t0 = Instant::now();
        nodes[v].kill9();
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if status_in_us(&nodes[3], &peer).await.as_deref() == Some("dead") {
                lat_us.push(t0.elapsed().as_micros() as u64);
                break;
            }
            if Instant::now() > deadline {
                lost += 1;
                eprintln!("trial {t}: not dead in us's view within 30 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Back, and alive in us's view, before the next trial.
        let mut spec = Spec::new(&nodes[v].name, "eu");
        spec.dir = Some(nodes[v].dir.clone());
        let other = (0..3).find(|&i| i != v).expect("another member");
        spec.bootstrap = vec![nodes[other].addr(true)];
        nodes[v] = Node::start(spec);
        let back = Instant::now() + Duration::from_secs(60);
        while status_in_us(&nodes[3], &peer).await.as_deref() != Some("alive")
            && Instant::now() < back
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{} of {trials} trials", t + 1);
    }
    // The summary of eu as u0 received it, re-encoded as it travels.
    let c: Value = get(&nodes[3].url("/api/v1/census")).await;
    let eu = c["regions"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["region"] == "eu").cloned())
        .unwrap_or_default();
    let real = serde_json::from_value::<Summary>(eu)
        .ok()
        .and_then(|s| rmp_serde::to_vec(&s).ok())
        .map_or(0, |b| b.len());
    drop(nodes);
    let (s100, s1000) = (synthetic(100), synthetic(1000));
    let per_s = |size: usize, regions: usize| (size * (regions - 1)) as f64 / 2.0;
    lat_us.sort_unstable();
    println!(
        "RESULT {}",
        serde_json::json!({
            "scenario": "fleet-view",
            "trials": trials,
            "samples": lat_us.len(),
            "lost": lost,
            "p50_us": percentile(&lat_us, 50.0),
            "p99_us": percentile(&lat_us, 99.0),
            "max_us": lat_us.last().copied().unwrap_or(0),
            "summary_bytes_3_members": real,
            "summary_bytes_100_members": s100,
            "summary_bytes_1000_members": s1000,
            "per_node_bytes_per_s": {
                "2_regions_of_100": per_s(s100, 2),
                "10_regions_of_100": per_s(s100, 10),
                "100_regions_of_100": per_s(s100, 100),
                "100_regions_of_1000": per_s(s1000, 100),
            },
        })
    );
}
