//! Another node's metrics charted in the console, in a real headless Chromium: the page
//! served by one node asks a node of its region, and a node of another region, for their
//! last hour (`GET /api/v1/twins/{node}/metrics`, over the network) and charts them; a
//! region peer's chart then follows gossip.

use std::time::Duration;

use crate::browser::Browser;
use crate::harness::{CONVERGE, Node, Spec, settled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_charts_another_nodes_metrics_asked_of_it() {
    let mut nodes: Vec<Node> = Vec::new();
    for (name, region) in [("c0", "charts"), ("c1", "charts"), ("x0", "elsewhere")] {
        let mut spec = Spec::new(name, region);
        if let Some(first) = nodes.first() {
            spec.bootstrap = vec![first.addr(true)];
        }
        nodes.push(Node::start(spec));
    }
    settled(&nodes[0], 2, 3).await;
    let browser = Browser::start().await;
    let peer = nodes[1].peer_id().to_string();
    browser
        .client
        .goto(&nodes[0].url(&format!("/#node/{peer}")))
        .await
        .expect("the page loads");
    let now = browser
        .until(
            "c1's metrics charted on c0's page",
            CONVERGE,
            "const c = document.querySelector('#node-chart'); \
             const n = document.querySelector('#metric-now').textContent; \
             return !c.hidden && document.querySelector('#metric').options.length > 0 \
               && document.querySelector('#chart polyline') && n.startsWith('now ') && n",
        )
        .await;
    let title = browser
        .js("return document.querySelector('#node-title').textContent")
        .await;
    assert!(
        title.as_str().is_some_and(|t| t.starts_with("c1")),
        "{title} {now}"
    );
    // Another region's node: its metrics asked of it, over the network.
    let asked: serde_json::Value =
        crate::harness::get(&nodes[0].url("/api/v1/twins/x0/metrics")).await;
    assert_eq!(asked["source"], "peer", "{asked}");
    assert!(
        asked["series"].as_array().is_some_and(|l| l
            .iter()
            .any(|s| s["points"].as_array().is_some_and(|p| !p.is_empty()))),
        "{asked}"
    );
    let other = nodes[2].peer_id().to_string();
    browser
        .js(&format!("location.hash = '#node/{other}'; return true"))
        .await;
    browser
        .until(
            "x0's metrics charted on c0's page",
            Duration::from_secs(20),
            "return document.querySelector('#node-title').textContent.startsWith('x0') \
               && !document.querySelector('#node-chart').hidden \
               && document.querySelector('#chart polyline') \
               && document.querySelector('#metric-now').textContent.startsWith('now ')",
        )
        .await;
    browser.close().await;
}
