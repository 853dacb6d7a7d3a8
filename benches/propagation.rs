//! `propagation`: N nodes on loopback (default 20) in one region; one publishes K
//! messages; for each message, the time from publishing until the *last* node has it.
//!
//! Each node is the node runtime's own network stack: `net::build_swarm` (TCP + pnet +
//! noise + yamux, gossipsub with strict validation and signing, kademlia discovery from
//! one bootstrap address) driven by the real `net::driver::Driver`, which decodes and
//! validates every frame and hands it to an actor's mailbox, where the arrival time is
//! taken. Publishing goes through the same bounded outbox the heartbeat actor uses. All
//! nodes share one process and its two cores, as 20 processes on this machine would.
//!
//! Usage: cargo bench --bench propagation -- [--nodes N] [--messages K] [--gap-ms G]
//! Last line: RESULT {json}

mod common;

use common::{arg, percentile};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use fleetmesh::metrics::Metrics;
use fleetmesh::net::{self, driver::Driver};
use fleetmesh_actors::actor::heartbeat::Inbound;
use fleetmesh_actors::membership::Input;
use fleetmesh_actors::outbox::{Delivery, Publish, Topic};
use fleetmesh_actors::{heartbeat, node, wire};
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use tokio::sync::{mpsc, watch};

type Seen = Arc<Mutex<Vec<(u64, Instant)>>>;

struct Recorder {
    origin: node::Id,
    seen: Seen,
}

impl Actor for Recorder {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(100_000);
    }
}

impl Handler<Inbound> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: Inbound, _: &mut Self::Context) {
        if let Input::Heartbeat { from, beat } = msg.0
            && from == self.origin
        {
            let now = Instant::now();
            if let Ok(mut seen) = self.seen.lock() {
                seen.push((beat.seq, now));
            }
        }
    }
}

fn info(i: usize) -> node::Info {
    node::Info {
        name: format!("bench{i}"),
        region: "bench".into(),
        role: "web".into(),
        incarnation: 1,
    }
}

fn body(seq: u64) -> wire::Body {
    wire::Body::Heartbeat(Box::new(heartbeat::Beat::new(info(0), seq)))
}

async fn run(nodes: usize, messages: u64, gap: Duration) -> Result<serde_json::Value, String> {
    let psk = PreSharedKey::new(rand::random::<[u8; 32]>());
    let keys: Vec<Keypair> = (0..nodes).map(|_| Keypair::generate_ed25519()).collect();
    let origin = node::Id::from(keys[0].public().to_peer_id().to_base58());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut outbox0 = None;
    let mut seen: Vec<Seen> = Vec::new();
    let mut bootstrap: Vec<libp2p::Multiaddr> = Vec::new();
    let mut metrics: Vec<Arc<Metrics>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let swarm = net::build_swarm(&net::Config {
            keypair: key.clone(),
            psk: Some(psk),
            region: "bench".into(),
            mdns: false,
            idle_timeout: Duration::from_secs(120),
        })
        .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(4096);
        let s: Seen = Arc::default();
        let rec = Recorder {
            origin: origin.clone(),
            seen: s.clone(),
        }
        .start();
        let listen: [libp2p::Multiaddr; 1] =
            ["/ip4/127.0.0.1/tcp/0".parse().map_err(|e| format!("{e}"))?];
        let m = Arc::new(Metrics::new());
        metrics.push(m.clone());
        let (driver, mut state) = Driver::new(
            swarm,
            info(i),
            &listen,
            bootstrap.clone(),
            net::driver::Links {
                outbox: rx,
                direct: mpsc::channel(1).1,
                asks: mpsc::channel(1).1,
                inbound: rec.recipient(),
                census: None,
                region: None,
                audit: None,
                fleet: None,
                anomaly: None,
                budget: net::budget::Config::default(),
                trust: net::trust::Gate::new(
                    "bench",
                    net::trust::Keys::default(),
                    Arc::default(),
                    watch::channel(None).1,
                ),
                recent: None,
            },
            m,
        )
        .map_err(|e| e.to_string())?;
        tokio::spawn(driver.run(stop_rx.clone()));
        if i == 0 {
            let st = state
                .wait_for(|s| !s.listen_addrs.is_empty())
                .await
                .map_err(|e| e.to_string())?;
            let addr = st.listen_addrs[0]
                .clone()
                .with(libp2p::multiaddr::Protocol::P2p(key.public().to_peer_id()));
            bootstrap = vec![addr];
            outbox0 = Some(tx);
        } else {
            seen.push(s);
        }
    }
    let outbox = outbox0.ok_or("no publisher")?;
    // True when the driver's queue took the message.
    let publish = |seq: u64| {
        outbox
            .try_send(Publish {
                topic: Topic::Region("bench".into()),
                body: body(seq),
                delivery: Delivery::BestEffort,
            })
            .is_ok()
    };

    // Warm-up: until every node has received something, then let meshes settle.
    eprintln!("propagation: {nodes} nodes starting; waiting for the mesh to form...");
    let warm_start = Instant::now();
    let mut seq = 0u64;
    loop {
        seq += 1;
        publish(seq);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reached = seen
            .iter()
            .filter(|s| s.lock().map(|v| !v.is_empty()).unwrap_or(false))
            .count();
        if reached == nodes - 1 {
            break;
        }
        if warm_start.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "only {reached}/{} nodes reached after 60 s",
                nodes - 1
            ));
        }
    }
    eprintln!(
        "propagation: all {} receivers reached after {:.1} s; settling 3 s",
        nodes - 1,
        warm_start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in &seen {
        if let Ok(mut v) = s.lock() {
            v.clear();
        }
    }

    let base = 1_000_000u64;
    let mut sent_at = Vec::with_capacity(messages as usize);
    let mut dropped = 0u64;
    for k in 0..messages {
        let t = Instant::now();
        if !publish(base + k) {
            dropped += 1;
        }
        sent_at.push(t);
        if k % 200 == 199 {
            eprintln!("propagation: published {}/{messages}", k + 1);
        }
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);

    // For each message: latency to each receiver; the message's figure is the slowest.
    let mut last_node = Vec::new();
    let mut any_node = Vec::new();
    let mut missing = 0u64;
    let per_node: Vec<Vec<(u64, Instant)>> = seen
        .iter()
        .map(|s| s.lock().map(|v| v.clone()).unwrap_or_default())
        .collect();
    for k in 0..messages {
        let mut slowest: Option<u64> = None;
        let mut complete = true;
        for recv in &per_node {
            match recv.iter().find(|(s, _)| *s == base + k) {
                Some((_, at)) => {
                    let us = at.duration_since(sent_at[k as usize]).as_micros() as u64;
                    any_node.push(us);
                    slowest = Some(slowest.map_or(us, |m| m.max(us)));
                }
                None => {
                    complete = false;
                    missing += 1;
                    if missing <= 20 {
                        eprintln!("propagation: message {k} never reached one node");
                    }
                }
            }
        }
        if let (true, Some(us)) = (complete, slowest) {
            last_node.push(us);
        }
    }
    last_node.sort_unstable();
    any_node.sort_unstable();
    // Where a loss happened, if anywhere: the publisher's driver refusing to publish, or a
    // receiver's mailbox overflowing.
    let driver_dropped: u64 = ["no_peers", "queues_full", "error", "encode"]
        .iter()
        .map(|r| {
            metrics[0]
                .publish_dropped
                .get_or_create(&Metrics::reason(r))
                .get()
        })
        .sum();
    let mailbox_dropped: u64 = metrics.iter().map(|m| m.inbound_dropped.get()).sum();
    Ok(serde_json::json!({
        "scenario": "propagation",
        "nodes": nodes,
        "samples": last_node.len(),
        "p50_us": percentile(&last_node, 50.0),
        "p99_us": percentile(&last_node, 99.0),
        "max_us": last_node.last().copied().unwrap_or(0),
        "per_node_p50_us": percentile(&any_node, 50.0),
        "per_node_p99_us": percentile(&any_node, 99.0),
        "missing_deliveries": missing,
        "publish_dropped": dropped,
        "driver_dropped": driver_dropped,
        "mailbox_dropped": mailbox_dropped,
        "gap_ms": gap.as_millis() as u64,
    }))
}

fn main() {
    let nodes = arg("--nodes", 20).max(2) as usize;
    let messages = arg("--messages", 1000).max(1);
    let gap = Duration::from_millis(arg("--gap-ms", 10));
    let system = System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the tokio runtime must start")
    });
    match system.block_on(run(nodes, messages, gap)) {
        Ok(result) => println!("RESULT {result}"),
        Err(e) => {
            eprintln!("propagation: {e}");
            std::process::exit(1);
        }
    }
}
