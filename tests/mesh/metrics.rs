//! Host metrics on a real node: every family is sampled and sent on delta, and a burst of
//! real loopback traffic shows up as a network rate and goes back down afterwards.

use std::io::{Read, Write};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, eventually, get};

/// (subject, value) of the node's metric spikes, oldest first.
async fn samples(node: &Node) -> Vec<(String, f64)> {
    let list: Vec<Value> = get(&node.url("/api/v1/spikes?kind=metric")).await;
    list.iter()
        .map(|s| {
            (
                s["subject"].as_str().unwrap_or_default().to_string(),
                s["fields"]["value"]["after"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// Pushes `bytes` through a loopback TCP connection.
fn loopback_burst(bytes: usize) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let mut out = std::net::TcpStream::connect(addr).expect("connect");
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..bytes / chunk.len() {
        out.write_all(&chunk).expect("write");
    }
    drop(out);
    assert_eq!(reader.join().expect("reader"), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_is_sampled_and_a_traffic_burst_is_sent_on_delta() {
    let mut spec = Spec::new("metrics", "eu");
    spec.env
        .push(("FLEETMESH__METRICS__INTERVAL_MS".into(), "200".into()));
    let node = Node::start(spec);

    eventually("every metric family", CONVERGE, || async {
        let got = samples(&node).await;
        let has = |p: &str| got.iter().any(|(s, _)| s.starts_with(p));
        let missing: Vec<&str> = [
            "cpu.busy_pct",
            "cpu.user_pct",
            "mem.used_pct",
            "mem.used_bytes",
            "load.1m",
            "disk.",
            "net.lo.rx_bytes_per_s",
        ]
        .into_iter()
        .filter(|p| !has(p))
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?} in {got:?}"))
        }
    })
    .await;
    let got = samples(&node).await;
    for (subject, v) in &got {
        assert!(v.is_finite() && *v >= 0.0, "{subject} = {v}");
        if subject.ends_with("_pct") {
            assert!(*v <= 100.0, "{subject} = {v}");
        }
    }

    // 256 MiB over loopback: far above the 10 KiB/s floor of the default network band.
    const BURST: f64 = 20.0 * 1024.0 * 1024.0;
    let before = got.len();
    tokio::task::spawn_blocking(|| loopback_burst(256 << 20))
        .await
        .expect("burst");
    eventually("the burst, then the quiet after it", CONVERGE, || async {
        let got = samples(&node).await;
        let rx: Vec<f64> = got
            .iter()
            .skip(before.min(got.len()))
            .filter(|(s, _)| s == "net.lo.rx_bytes_per_s")
            .map(|(_, v)| *v)
            .collect();
        let peak = rx.iter().position(|v| *v >= BURST);
        match peak {
            Some(i) if rx[i + 1..].iter().any(|v| *v < BURST) => Ok(()),
            _ => Err(format!("lo rx rates since the burst: {rx:?}")),
        }
    })
    .await;
}
