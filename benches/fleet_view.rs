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
//! Summary cost: what a master publishes (the census core's compact summary with a real
//! proof of authority attached as the network attaches it: whole every fifth summary,
//! brief between; as a wire frame) for regions of 3, 100 and 1,000 members
//! with 0, 10 or 256 of them dead: the first summary (a roster page in it), and the mean
//! per summary over ten minutes at one every 2 s once the roster is out (repair pages
//! included), with the bytes per second a node receives for 2, 10 and 100 regions (one
//! copy each; gossip duplicates not counted).
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

use fleetmesh_actors::census::{Census, Config, Line, PROOF_ROOM, Summary};
use fleetmesh_actors::membership::Status;
use fleetmesh_actors::node;
use fleetmesh_actors::sync::{Connectivity, Report};
use fleetmesh_actors::trust::{Charter, Endorsement, Link, Proof, TermCert, endorse_bytes};
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

/// A summary of `n` members (the first `trouble` of them dead), lines as a member
/// writes them.
fn full(n: usize, trouble: usize, sent: u64) -> Summary {
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
            let status = if i < trouble {
                Status::Dead
            } else {
                Status::Alive
            };
            Line::new(
                node::Id::from(format!("12D3KooW{:0>44}", i)),
                Some(&info),
                status,
                Some(&report),
                200,
            )
        })
        .collect();
    Summary::new(
        "eu-west",
        7,
        Some(node::Id::from(format!("12D3KooW{:0>44}", 0))),
        sent,
        lines,
        usize::MAX,
    )
}

/// A proof as a chartered region of three voters attaches it (real ed25519 signatures).
fn proof() -> Proof {
    let admin = libp2p::identity::ed25519::Keypair::generate();
    let voters: Vec<libp2p::identity::Keypair> = (0..3)
        .map(|_| libp2p::identity::Keypair::generate_ed25519())
        .collect();
    let ids: Vec<node::Id> = voters
        .iter()
        .map(|k| node::Id::from(k.public().to_peer_id().to_base58()))
        .collect();
    let mut charter = Charter::new("eu-west", ids.clone(), "operator", 1_796_000_000_000);
    charter.sig = admin.sign(&charter.signed_bytes());
    let msg = endorse_bytes("eu-west", 7, &ids[0]);
    Proof {
        chain: vec![Link::chartered(charter)],
        cert: TermCert {
            region: "eu-west".into(),
            term: 7,
            master: ids[0].clone(),
            endorsements: voters
                .iter()
                .zip(&ids)
                .map(|(k, id)| Endorsement {
                    voter: id.clone(),
                    sig: k.sign(&msg).expect("sign"),
                })
                .collect(),
        },
        head: None,
    }
}

/// What a master publishes of a region of `n` members (`trouble` dead), proof attached:
/// the bytes of its first summary (with a roster page), and the mean bytes per summary
/// over ten minutes of summaries every 2 s once the roster is out (the repair pages
/// included).
fn published(n: usize, trouble: usize, proof: &Proof) -> (usize, f64) {
    let mut census = Census::new(Config::default(), "eu-west".into());
    let budget = fleetmesh_actors::wire::MAX_FRAME - 1024 - PROOF_ROOM;
    // The whole proof with every FULL_PROOF_EVERY-th summary, a brief one between.
    let mut sent = 0u32;
    let mut size = |census: &mut Census, t: u64| {
        let mut s = census.compact(full(n, trouble, t), t, budget);
        let whole = sent.is_multiple_of(fleetmesh::net::trust::FULL_PROOF_EVERY);
        sent += 1;
        s.proof = Some(Box::new(if whole { proof.clone() } else { proof.brief() }));
        fleetmesh_actors::wire::encode(&fleetmesh_actors::wire::Body::Census(Box::new(s)))
            .map_or(0, |b| b.len())
    };
    let first = size(&mut census, 0);
    // Past the fresh window, then ten minutes at one summary every 2 s.
    let (from, to) = (20_000u64, 620_000u64);
    let mut t = 2_000;
    while t < from {
        size(&mut census, t);
        t += 2_000;
    }
    let (mut total, mut count) = (0usize, 0usize);
    while t < to {
        total += size(&mut census, t);
        count += 1;
        t += 2_000;
    }
    (first, total as f64 / count as f64)
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
    drop(nodes);
    let proof = proof();
    let proof_bytes = rmp_serde::to_vec(&proof).map_or(0, |b| b.len());
    let sizes: Vec<(usize, usize, usize, f64)> =
        [(3, 0), (100, 0), (1000, 0), (1000, 10), (1000, 256)]
            .into_iter()
            .map(|(n, trouble)| {
                let (first, mean) = published(n, trouble, &proof);
                (n, trouble, first, mean)
            })
            .collect();
    let per_node = |mean: f64, regions: usize| mean * (regions - 1) as f64 / 2.0;
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
            "proof_bytes": proof_bytes,
            "summaries": sizes.iter().map(|(n, trouble, first, mean)| serde_json::json!({
                "members": n,
                "dead": trouble,
                "first_bytes": first,
                "mean_bytes": mean.round(),
                "per_node_bytes_per_s": {
                    "2_regions": per_node(*mean, 2).round(),
                    "10_regions": per_node(*mean, 10).round(),
                    "100_regions": per_node(*mean, 100).round(),
                },
            })).collect::<Vec<_>>(),
        })
    );
}
