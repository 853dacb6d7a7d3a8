//! The fleet census on real nodes: any node shows every region with its master and its
//! members' status (`GET /api/v1/census`), another region's as that region's master
//! published it; a member killed -9 in one region turns dead in the other region's view.
//! Its region's master raises a `node_dead` alert about it, which resolves when the member
//! is back.

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, alert_where, get, settled, two_regions, wait_for};

/// The `node_dead` alert about `name` that `node` lists, in `state`.
async fn node_dead(node: &Node, name: &str, state: &str) -> Value {
    alert_where(node, &format!("node_dead about {name}, {state}"), |a| {
        a["action"] == "node_dead" && a["host"] == name && a["state"] == state
    })
    .await
}

fn region<'a>(census: &'a Value, name: &str) -> &'a Value {
    census["regions"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["region"] == name))
        .unwrap_or_else(|| panic!("no region {name} in {census}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_shows_every_region_and_a_death_in_another_region() {
    let mut nodes = two_regions();
    // Seen from u0 (region us).
    let c = settled(&nodes[3], 2, 5).await;
    // Its own region first, first-hand; the other as its master published it.
    assert_eq!(c["regions"][0]["region"], "us");
    assert_eq!(c["regions"][0]["source"], "local");
    let eu = region(&c, "eu");
    assert_eq!(eu["source"], "master");
    assert!(eu["age_ms"].as_u64().is_some(), "{eu}");
    assert!(eu["term"].as_u64().unwrap_or(0) >= 1, "{eu}");
    // The master it names is the one the region itself reports.
    let eu_region: Value = get(&nodes[0].url("/api/v1/region")).await;
    assert_eq!(eu["master"], eu_region["master"]["peer_id"], "{eu_region}");
    let names: Vec<&str> = eu["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // Each member says since when its connectivity has been what it is: all of them in
    // the node's own region; in another, those its summary lists (the others, alive and
    // live, are named by the roster only).
    let now = crate::harness::now_ms();
    for m in c["regions"][0]["members"].as_array().expect("members") {
        let since = m["connectivity_since_unix_ms"].as_u64();
        assert!(since.is_some_and(|t| t > 0 && t <= now + 1_000), "{m}");
    }
    for m in eu["members"].as_array().expect("members") {
        let since = m["connectivity_since_unix_ms"].as_u64();
        assert!(since.is_none_or(|t| t > 0 && t <= now + 1_000), "{m}");
    }
    // The same from the fleet's regions, compact, with how eu's authority was verified.
    let f: Value = get(&nodes[3].url("/api/v1/fleet/regions")).await;
    let row = f["regions"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["region"] == "eu"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["master"], eu["master"], "{f}");
    assert_eq!(row["members"], 3, "{f}");
    assert_eq!(row["counts"]["alive"], 3, "{f}");
    assert_eq!(row["authority"]["root"], "founding", "{f}");
    assert_eq!(f["regions"][0]["region"], "us", "{f}");

    // Kill a member of eu that is not its master (eu keeps its quorum, so its master
    // goes on publishing): u0 sees it dead.
    let master = eu["master"].as_str().expect("a master").to_string();
    let victim = (0..3)
        .find(|&i| nodes[i].peer_id() != master)
        .expect("a member that is not the master");
    let victim_id = nodes[victim].peer_id().to_string();
    nodes[victim].kill9();
    wait_for(
        "the victim dead in the other region's view",
        CONVERGE,
        || {
            let victim_id = victim_id.clone();
            let url = nodes[3].url("/api/v1/census");
            async move {
                let c: Value = get(&url).await;
                let eu = region(&c, "eu");
                let status = eu["members"]
                    .as_array()
                    .and_then(|l| l.iter().find(|m| m["peer"] == victim_id.as_str()))
                    .map(|m| m["status"].clone());
                match status {
                    Some(s) if s == "dead" && eu["counts"]["dead"] == 1 => Ok(()),
                    other => Err(format!("victim {other:?} in {eu}")),
                }
            }
        },
    )
    .await;

    let f: Value = get(&nodes[3].url("/api/v1/fleet/regions")).await;
    let eu_row = f["regions"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["region"] == "eu"))
        .cloned()
        .unwrap_or_default();
    assert!(
        eu_row["not_alive"].as_array().is_some_and(|l| l
            .iter()
            .any(|m| m["peer"] == victim_id.as_str() && m["status"] == "dead")),
        "{eu_row}"
    );

    // The eu master raised node_dead about it; the member back, it resolves.
    let m = (0..3)
        .find(|&i| nodes[i].peer_id() == master)
        .expect("the master");
    let name = nodes[victim].name.clone();
    let a = node_dead(&nodes[m], &name, "firing").await;
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(a["details"]["peer"], victim_id.as_str(), "{a}");
    let mut spec = Spec::new(&name, "eu");
    spec.dir = Some(nodes[victim].dir.clone());
    spec.bootstrap = vec![nodes[m].addr(true)];
    let _back = Node::start(spec);
    node_dead(&nodes[m], &name, "resolved").await;
}
