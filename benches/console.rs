//! console-latency: from a file write on one node to the change in the DOM of a console
//! page served by *another* node of the region, measured in a real headless Chromium.
//!
//! Three release nodes of one region on loopback; the page of node b shows node a's
//! timeline. For each change the bench notes the wall clock, writes a new file under a's
//! watched root, and a MutationObserver in the page notes the wall clock when the line
//! naming that file appears. Same machine, same clock.
//!
//!     cargo bench --bench console -- [--changes N] [--gap-ms G]
//!
//! Last line: RESULT {json} (latencies in milliseconds).

#[allow(dead_code)]
#[path = "../tests/console/browser.rs"]
mod browser;
mod common;

use common::arg;
#[allow(dead_code)]
#[path = "../tests/mesh/harness.rs"]
mod harness;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::{Node, Spec, settled};

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes = arg("--changes", 100);
    let gap = Duration::from_millis(arg("--gap-ms", 200));
    let mut nodes: Vec<Node> = Vec::new();
    for name in ["a", "b", "c"] {
        let mut s = Spec::new(name, "bench");
        if let Some(first) = nodes.first() {
            s.bootstrap = vec![first.addr(true)];
        }
        // The normal heartbeat, not the tests' fast one.
        s.extra_args = vec!["--heartbeat-interval-ms".into(), "1000".into()];
        nodes.push(Node::start(s));
    }
    settled(&nodes[1], 1, 3).await;
    let browser = browser::Browser::start().await;
    browser
        .client
        .goto(&nodes[1].url(&format!("/#node/{}", nodes[0].peer_id())))
        .await
        .expect("the page loads");
    browser
        .until(
            "the page live",
            Duration::from_secs(30),
            "return document.querySelector('#stream').dataset.state === 'live'",
        )
        .await;
    // When each bench file first shows in the timeline, by the page's wall clock.
    browser
        .js("window.seen = {};
             new MutationObserver(() => {
               const t = Date.now();
               for (const li of document.querySelectorAll('#timeline li')) {
                 const m = li.textContent.match(/bench-(\\d+)/);
                 if (m && !(m[1] in window.seen)) window.seen[m[1]] = t;
               }
             }).observe(document.querySelector('#timeline'), { childList: true, subtree: true });
             return true")
        .await;
    let etc = nodes[0].dir.join("root/etc");
    let mut written = Vec::new();
    for i in 0..changes {
        written.push(now_ms());
        std::fs::write(etc.join(format!("bench-{i}")), format!("{i}\n")).expect("write");
        tokio::time::sleep(gap).await;
    }
    let seen = browser
        .until(
            "every change in the page",
            Duration::from_secs(60),
            &format!("return Object.keys(window.seen).length >= {changes} && window.seen"),
        )
        .await;
    let mut lat: Vec<f64> = (0..changes as usize)
        .filter_map(|i| {
            seen[i.to_string()]
                .as_f64()
                .map(|t| (t - written[i]).max(0.0))
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    browser.close().await;
    println!(
        "RESULT {}",
        serde_json::json!({
            "scenario": "console-latency",
            "changes": changes,
            "shown": lat.len(),
            "p50_ms": pct(&lat, 0.50),
            "p95_ms": pct(&lat, 0.95),
            "p99_ms": pct(&lat, 0.99),
            "max_ms": lat.last().copied().unwrap_or(f64::NAN),
        })
    );
}
