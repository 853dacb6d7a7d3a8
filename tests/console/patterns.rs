//! Learned patterns and the regions' authority in the console, on real nodes: two regions
//! without a fleet admin key (eu: e0, e1; us: u0). An operator's approval at eu's master
//! is an event line in the page served by e0 (and a `learned` event on its stream); the
//! fleet graph marks us as believed by founding trust and eu as e0's own region.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::harness::{CONVERGE, Node, Spec, get, master_name, post, settled, wait_for};

/// eu (e0, e1) and us (u0), e0 the first.
fn cluster() -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for (name, region) in [("e0", "eu"), ("e1", "eu"), ("u0", "us")] {
        let mut spec = Spec::new(name, region);
        if let Some(first) = nodes.first() {
            spec.bootstrap = vec![first.addr(true)];
        }
        nodes.push(Node::start(spec));
    }
    nodes
}

/// An operator's approval of `subject` (a user added on web servers) at eu's master.
async fn approve(nodes: &[Node], subject: &str) {
    let master = wait_for("eu's master known", CONVERGE, || async {
        master_name(&nodes[0])
            .await
            .ok_or_else(|| "no master yet".to_string())
    })
    .await;
    let at = nodes
        .iter()
        .find(|n| n.name == master)
        .expect("the master is one of the nodes");
    let (code, answer) = post(
        &at.url("/api/v1/patterns/approve"),
        json!({"roles": ["web"], "kind": "user", "change": "added", "subject": subject, "by": "alice"}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
}

/// Reads an open event stream until an event of `kind` whose data `want` accepts.
pub async fn stream_until(
    mut response: reqwest::Response,
    kind: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + CONVERGE;
    let mut buffer = String::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let is_kind = block.lines().any(|l| l == format!("event: {kind}"));
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str::<Value>(d).ok());
            if let Some(d) = data.filter(|d| is_kind && want(d)) {
                return d;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event within {CONVERGE:?}"))
            .expect("the stream stays readable")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Without a browser: the stream carries the learned pattern, and the trust endpoint
/// gives each region its authority in one word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_tells_a_learned_pattern_and_the_trust_endpoint_each_authority() {
    let nodes = cluster();
    settled(&nodes[0], 2, 3).await;
    // Open (its headers answered: subscribed) before the approval is made.
    let stream = reqwest::get(nodes[0].url("/api/v1/events"))
        .await
        .expect("the stream opens");
    approve(&nodes, "deploy").await;
    let learned = stream_until(stream, "learned", |d| d["pattern"]["subject"] == "deploy").await;
    assert_eq!(learned["by"], "operator alice", "{learned}");
    assert_eq!(learned["region"], "eu", "{learned}");
    // By its own region's log or the master's publication on the fleet topic, whichever
    // came first.
    assert!(
        learned["via"] == "log" || learned["via"] == "gossip",
        "{learned}"
    );
    assert!(learned.get("signature").is_none(), "{learned}");

    let trust = wait_for("us believed by founding trust", CONVERGE, || async {
        let t: Value = get(&nodes[0].url("/api/v1/fleet/trust")).await;
        if t["authority"]["us"]["state"] == "founding" {
            Ok(t)
        } else {
            Err(t.to_string())
        }
    })
    .await;
    assert_eq!(
        trust["authority"]["eu"],
        json!({"state": "founding", "reason": null, "own": true}),
        "{trust}"
    );
    assert_eq!(trust["authority"]["us"]["own"], false, "{trust}");
}

/// In the page: the learned pattern as an event line (live, and read at load by a page
/// opened later), each region's authority badge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_learned_patterns_and_each_regions_authority() {
    let nodes = cluster();
    settled(&nodes[0], 2, 3).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&nodes[0].url("/#events"))
        .await
        .expect("the page loads");
    browser
        .until(
            "the stream live",
            CONVERGE,
            "return document.querySelector('#stream').dataset.state === 'live'",
        )
        .await;

    approve(&nodes, "deploy").await;
    let line = browser
        .until(
            "the learned pattern in the events",
            CONVERGE,
            "const l = [...document.querySelectorAll('#events li[data-kind=learned]')].find(l => l.textContent.includes('deploy')); return l && l.textContent",
        )
        .await;
    let line = line.as_str().unwrap_or_default();
    for want in ["learned: user deploy", "on web", "approved by alice", "eu"] {
        assert!(line.contains(want), "{want} in {line}");
    }
    browser.screenshot("events-learned").await;
    // A page opened later shows it too (read at load), once.
    browser
        .client
        .goto(&nodes[0].url("/#events"))
        .await
        .expect("the page loads again");
    let count = browser
        .until(
            "the learned pattern read at load",
            CONVERGE,
            "return [...document.querySelectorAll('#events li[data-kind=learned]')].filter(l => l.textContent.includes('deploy')).length",
        )
        .await;
    assert_eq!(count, Value::from(1), "once");

    browser.js("location.hash = '#fleet'; return true").await;
    const BADGE: &str = "const b = (r) => document.querySelector(`#graph .region[data-region=\"${r}\"] .authority`);";
    let us = browser
        .until(
            "us marked as believed by founding trust",
            CONVERGE,
            &format!(
                "{BADGE} const u = b('us'); return u && u.dataset.authority === 'founding' && u.textContent"
            ),
        )
        .await;
    assert_eq!(us, Value::from("founding (trusted on first use)"));
    let eu = browser
        .until(
            "eu marked as the own region",
            Duration::from_secs(10),
            &format!(
                "{BADGE} const e = b('eu'); return e && e.dataset.authority === 'founding' && e.textContent"
            ),
        )
        .await;
    assert_eq!(eu, Value::from("own region · founding"));
    browser.screenshot("fleet-authority").await;

    let errors = browser.errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
}
