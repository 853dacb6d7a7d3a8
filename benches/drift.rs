//! drift: from a change on a node to the drift record at its region's master.
//!
//! Three release nodes of role `web` in one region on loopback; every node reads the same
//! desired state: `/etc/app.conf` with a given sha256. For each change the bench notes the
//! wall clock and writes `/etc/app.conf` under the watched root of a node that is not the
//! master, alternately with the desired content and with another one, then polls the
//! master's `GET /api/v1/drift` every 5 ms until the record appears (or disappears). The
//! figure includes detection, the spike, the twin's report to the master (coalesced
//! 100 ms), the comparison and the API, plus up to 5 ms of polling.
//!
//!     cargo bench --bench drift -- [--changes N] [--gap-ms G]
//!
//! Last line: RESULT {json} (latencies in microseconds).

mod common;

use common::{arg, percentile};
#[allow(dead_code)]
#[path = "../tests/mesh/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Node, Spec, get, settled};
use sha2::{Digest, Sha256};

fn sha(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes = arg("--changes", 100) as usize;
    let gap = Duration::from_millis(arg("--gap-ms", 200));
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = "desired\n";
    let desired = tmp.path().join("desired");
    std::fs::create_dir_all(&desired).expect("desired dir");
    std::fs::write(
        desired.join("web.toml"),
        format!(
            "[[files]]\npath = \"/etc/app.conf\"\nsha256 = \"{}\"\n",
            sha(good)
        ),
    )
    .expect("web.toml");
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..3 {
        let mut spec = Spec::new(&format!("d{i}"), "bench");
        spec.env = vec![
            (
                "FLEETMESH__DESIRED__DIR".into(),
                desired.display().to_string(),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ];
        for k in [
            "FLEETMESH__PROBES__PROCESS_POLL_MS",
            "FLEETMESH__METRICS__INTERVAL_MS",
        ] {
            spec.env.push((k.into(), "3600000".into()));
        }
        if let Some(first) = nodes.first() {
            spec.bootstrap = vec![first.addr(true)];
        }
        nodes.push(Node::start(spec));
    }
    for n in &nodes {
        std::fs::write(n.dir.join("root/etc/app.conf"), good).expect("app.conf");
    }
    settled(&nodes[0], 1, 3).await;
    let master_name = harness::master_name(&nodes[0]).await.expect("a master");
    let master = nodes
        .iter()
        .find(|n| n.name == master_name)
        .expect("the master");
    let member = nodes
        .iter()
        .find(|n| n.name != master_name)
        .expect("a member");
    // Past the first reports.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drifted = |d: &serde_json::Value| {
        d["records"].as_array().is_some_and(|l| {
            l.iter()
                .any(|r| r["name"] == member.name.as_str() && r["subject"] == "file:/etc/app.conf")
        })
    };
    let mut lat_us = Vec::with_capacity(changes);
    let mut lost = 0usize;
    for i in 0..changes {
        // Odd changes restore the desired content: the record must go.
        let want = i % 2 == 0;
        let text = if want {
            format!("changed {i}\n")
        } else {
            good.to_string()
        };
        let t0 = Instant::now();
        std::fs::write(member.dir.join("root/etc/app.conf"), text).expect("write");
        let deadline = t0 + Duration::from_secs(10);
        loop {
            let d: serde_json::Value = get(&master.url("/api/v1/drift")).await;
            if drifted(&d) == want {
                lat_us.push(t0.elapsed().as_micros() as u64);
                break;
            }
            if Instant::now() > deadline {
                lost += 1;
                eprintln!("change {i}: no drift change at the master within 10 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if (i + 1) % 20 == 0 {
            eprintln!("{} of {changes} changes", i + 1);
        }
        tokio::time::sleep(gap).await;
    }
    drop(nodes);
    lat_us.sort_unstable();
    println!(
        "RESULT {}",
        serde_json::json!({
            "scenario": "drift",
            "changes": changes,
            "samples": lat_us.len(),
            "lost": lost,
            "p50_us": percentile(&lat_us, 50.0),
            "p99_us": percentile(&lat_us, 99.0),
            "max_us": lat_us.last().copied().unwrap_or(0),
        })
    );
}
