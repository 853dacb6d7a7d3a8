//! alert-latency: from a violating change on a node to the notification at a webhook.
//!
//! One release node of role `baseline` on loopback, its policy the shipped one, its
//! receiver a webhook served by this program. Each alert is its own group
//! (`group_by = ["..."]`) told at once (`group_wait_ms = 0`). For each change the bench
//! notes the wall clock and adds one user to the node's watched `/etc/passwd` (a
//! violation on a baseline server); the webhook notes the wall clock when the
//! notification naming that user arrives. The figure includes detection, the policy's
//! decision, the lifecycle engine and the HTTP delivery. Same machine, same clock.
//!
//!     cargo bench --bench alert_latency -- [--changes N] [--gap-ms G]
//!
//! Last line: RESULT {json} (latencies in milliseconds).

mod common;

use common::{arg, percentile};
#[allow(dead_code)]
#[path = "../tests/mesh/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use harness::{Node, Spec, settled};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Writes `/etc/passwd` under `etc` with the users `u0` .. `u{n-1}`.
fn users(etc: &Path, n: usize) {
    let mut text = PASSWD.to_string();
    for i in 0..n {
        text.push_str(&format!(
            "u{i}:x:{}:{}::/home/u{i}:/bin/sh\n",
            3000 + i,
            3000 + i
        ));
    }
    std::fs::write(etc.join("passwd"), text).expect("passwd");
}

/// A webhook on 127.0.0.1 noting when each alert subject first arrives (µs).
async fn webhook() -> (String, Arc<Mutex<HashMap<String, u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let at = now_us();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf[head_end..]) {
                    let mut seen = s.lock().expect("lock");
                    for a in v["alerts"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                    {
                        if let Some(subject) = a["labels"]["subject"].as_str() {
                            seen.entry(subject.to_string()).or_insert(at);
                        }
                    }
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes = arg("--changes", 100) as usize;
    let gap = Duration::from_millis(arg("--gap-ms", 200));
    let tmp = tempfile::tempdir().expect("tempdir");
    let (url, seen) = webhook().await;
    let policy = tmp.path().join("policy");
    std::fs::create_dir_all(&policy).expect("policy dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy");
    for role in ["web", "baseline", "database"] {
        std::fs::copy(
            shipped.join(format!("{role}.toml")),
            policy.join(format!("{role}.toml")),
        )
        .expect("copy policy");
    }
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\nrate_per_minute = 100000\n[alerts.route]\ngroup_by = [\"...\"]\ngroup_wait_ms = 0\n\
             [[alerts.receivers]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\n"
        ),
    )
    .expect("config");
    let data = tmp.path().join("n");
    let etc = data.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    users(&etc, 0);
    let mut spec = Spec::new("alert-bench", "bench");
    spec.role = "baseline".into();
    spec.dir = Some(data);
    spec.extra_args = vec!["--config".into(), config.display().to_string()];
    spec.env = vec![
        (
            "FLEETMESH__POLICY__DIR".into(),
            policy.display().to_string(),
        ),
        ("RUST_LOG".into(), "warn".into()),
    ];
    for k in [
        "FLEETMESH__PROBES__PROCESS_POLL_MS",
        "FLEETMESH__PROBES__NETWORK_POLL_MS",
        "FLEETMESH__METRICS__INTERVAL_MS",
    ] {
        spec.env.push((k.into(), "3600000".into()));
    }
    let node = Node::start(spec);
    settled(&node, 1, 1).await;
    // Past the election, so that the node notifies.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut lat_us = Vec::with_capacity(changes);
    let mut lost = 0usize;
    for i in 0..changes {
        let t0 = now_us();
        users(&etc, i + 1);
        let subject = format!("u{i}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = seen.lock().expect("lock").get(&subject) {
                lat_us.push(at.saturating_sub(t0));
                break;
            }
            if Instant::now() > deadline {
                lost += 1;
                eprintln!("{subject}: no notification within 10 s");
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if (i + 1) % 20 == 0 {
            eprintln!("{} of {changes} changes", i + 1);
        }
        tokio::time::sleep(gap).await;
    }
    drop(node);
    lat_us.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "RESULT {}",
        serde_json::json!({
            "scenario": "alert-latency",
            "changes": changes,
            "notified": lat_us.len(),
            "lost": lost,
            "p50_ms": ms(percentile(&lat_us, 50.0)),
            "p99_ms": ms(percentile(&lat_us, 99.0)),
            "max_ms": ms(lat_us.last().copied().unwrap_or(0)),
        })
    );
}
