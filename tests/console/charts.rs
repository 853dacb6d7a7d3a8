//! A region peer's metrics charted in the console, in a real headless Chromium: the page
//! served by one node of a region draws another node's metrics as gossip brings them,
//! and says that a node of another region is charted on its own console.

use std::time::Duration;

use crate::browser::Browser;
use crate::harness::{CONVERGE, Node, Spec, settled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_charts_a_region_peers_metrics_as_they_come() {
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
    // Another region's node: no chart here, and the page says where its charts are.
    let other = nodes[2].peer_id().to_string();
    browser
        .js(&format!("location.hash = '#node/{other}'; return true"))
        .await;
    browser
        .until(
            "x0's detail says its charts are on its own console",
            Duration::from_secs(10),
            "return document.querySelector('#node-chart').hidden \
               && !document.querySelector('#node-remote').hidden",
        )
        .await;
    browser.close().await;
}
