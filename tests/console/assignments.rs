//! Reassignments on the event stream, on real nodes: a region of three voters (eu: e0,
//! e1, e2); a member other than the master that owns a work item is killed -9. When the
//! region takes its items away, the master's stream says which moved, from it to whom.
//! (No browser here: the page's line for an `assignment` event is a plain rendering of
//! these fields.)

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, get, master_name, settled, string_map, wait_for};
use crate::patterns::stream_until;

/// Who owns each work item, as `node` reads the committed assignments.
async fn owners(node: &Node) -> BTreeMap<String, String> {
    let a: Value = get(&node.url("/api/v1/assignments")).await;
    string_map(&a["items"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_tells_which_work_moved_when_its_owner_dies() {
    let mut nodes: Vec<Node> = Vec::new();
    for name in ["e0", "e1", "e2"] {
        let mut spec = Spec::new(name, "eu");
        if let Some(first) = nodes.first() {
            spec.bootstrap = vec![first.addr(true)];
        }
        nodes.push(Node::start(spec));
    }
    settled(&nodes[0], 1, 3).await;
    let items = wait_for("an audit of every member assigned", CONVERGE, || async {
        let o = owners(&nodes[0]).await;
        if o.keys().filter(|i| i.starts_with("audit:")).count() == 3 {
            Ok(o)
        } else {
            Err(format!("{o:?}"))
        }
    })
    .await;
    let master = wait_for("the master known", CONVERGE, || async {
        master_name(&nodes[0])
            .await
            .ok_or_else(|| "no master yet".to_string())
    })
    .await;
    // The master's audit is never its own: another member owns it.
    let victim = (0..3)
        .find(|&i| nodes[i].name != master && items.values().any(|o| o == nodes[i].peer_id()))
        .expect("a member other than the master owns an item");
    let watcher = (0..3)
        .find(|&i| nodes[i].name == master)
        .expect("the master is one of the nodes");
    let gone = nodes[victim].peer_id().to_string();
    let stream = reqwest::get(nodes[watcher].url("/api/v1/events"))
        .await
        .expect("the stream opens");
    nodes[victim].kill9();
    let moved = stream_until(stream, "assignment", |d| d["from"] == gone.as_str()).await;
    let item = moved["item"].as_str().unwrap_or_default();
    assert_eq!(items.get(item), Some(&gone), "{moved}");
    assert_ne!(moved["to"], gone.as_str(), "{moved}");
    assert_eq!(
        format!(
            "{}:{}",
            moved["work"].as_str().unwrap_or_default(),
            moved["of"].as_str().unwrap_or_default()
        ),
        item,
        "{moved}"
    );
    let after = owners(&nodes[watcher]).await;
    assert_eq!(
        after.get(item).map(String::as_str),
        moved["to"].as_str(),
        "{moved}"
    );
}
