//! The alert history on disk, on a real node: a violation raised and resolved by an
//! operator is listed, with its state history, after the node stops cleanly and starts
//! again on the same data dir, and is removed at start when the bounds leave no room
//! for it; a history file that does not read is set aside, said at
//! ERROR, and the node runs on with a new one. `?scope=region` merges every live
//! member's records, so a member's resolved alert is listed on any node of its region
//! after the master that held it is gone.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Node, get, now_ms, post, wait_for};
use crate::policy::{add_users, baseline, policies};

/// Bound on every wait of this test.
const WAIT: Duration = Duration::from_secs(30);

/// The alert `id` as `GET /api/v1/alerts?state=resolved` lists it, once it does.
async fn listed_resolved(node: &Node, id: &str) -> Value {
    wait_for("the resolved alert listed", WAIT, || async {
        let v: Value = get(&node.url("/api/v1/alerts?state=resolved&limit=100")).await;
        v["alerts"]
            .as_array()
            .and_then(|l| l.iter().find(|a| a["id"] == id).cloned())
            .ok_or_else(|| v["alerts"].to_string())
    })
    .await
}

/// The id of `node`'s `unauthorized_access` alert, once raised, after an operator
/// resolved it there.
async fn resolved_violation(node: &Node) -> String {
    let id = wait_for("the violation's alert", WAIT, || async {
        let v: Value = get(&node.url("/api/v1/alerts?limit=100")).await;
        v["alerts"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|a| a["action"] == "unauthorized_access" && a["state"] == "firing")
            })
            .and_then(|a| a["id"].as_str().map(str::to_string))
            .ok_or_else(|| v["alerts"].to_string())
    })
    .await;
    let (code, answer) = post(
        &node.url(&format!("/api/v1/alerts/{id}/resolve")),
        serde_json::json!({ "by": "ops" }),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    id
}

fn states(record: &Value) -> Vec<String> {
    record["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|t| t["status"]["state"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_alert_and_its_history_are_listed_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "[alerts.route]\ngroup_wait_ms = 0\n").expect("node config");
    let policy = policies(tmp.path());
    let data = tmp.path().join("h1");
    let (spec, etc) = baseline("history-h1", "history", &data, &config, &policy);
    let mut node = Node::start(spec.clone());
    add_users(&etc, &["intruder"]);
    let id = resolved_violation(&node).await;
    let before = listed_resolved(&node, &id).await;
    assert!(
        before.get("history_source").is_none(),
        "from memory: {before}"
    );
    let status = node.stop();
    assert!(status.success(), "a clean stop: {status}\n{}", node.log());
    let file = data.join("alerts/history.redb");
    assert!(file.exists(), "the history file: {}", file.display());

    // Started again on the same data dir: its memory is empty, the disk lists it.
    let node = Node::start(spec.clone());
    let after = listed_resolved(&node, &id).await;
    assert_eq!(after["state"], "resolved", "{after}");
    assert_eq!(after["action"], "unauthorized_access", "{after}");
    assert_eq!(after["history_source"], "disk", "{after}");
    let one: Value = get(&node.url(&format!("/api/v1/alerts/{id}"))).await;
    assert_eq!(one["id"], id.as_str(), "{one}");
    assert_eq!(one["status"]["state"], "resolved", "{one}");
    assert_eq!(states(&one), ["firing", "resolved"], "{one}");
    // `since` after its last change leaves it out.
    let later: Value =
        get(&node.url(&format!("/api/v1/alerts?state=resolved&since={}", now_ms()))).await;
    assert!(
        later["alerts"]
            .as_array()
            .is_some_and(|l| l.iter().all(|a| a["id"] != id.as_str())),
        "{later}"
    );
    // Resolved, if only on disk: resolving it again is refused as such.
    let (code, answer) = post(
        &node.url(&format!("/api/v1/alerts/{id}/resolve")),
        serde_json::json!({ "by": "ops" }),
    )
    .await;
    assert_eq!(code, 409, "{answer}");
    // An unknown id is still unknown.
    let (code, _) = post(
        &node.url(&format!("/api/v1/alerts/{}/resolve", "0".repeat(32))),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 404);
    let mut node = node;
    let status = node.stop();
    assert!(status.success(), "a clean stop: {status}\n{}", node.log());

    // Started again with room for no record: the bounds pass at start removes it.
    let mut small = spec;
    small
        .env
        .push(("FLEETMESH__ALERTS__HISTORY_BYTES".into(), "1".into()));
    let node = Node::start(small);
    let v: Value = get(&node.url("/api/v1/alerts?state=resolved&limit=100")).await;
    assert!(
        v["alerts"]
            .as_array()
            .is_some_and(|l| l.iter().all(|a| a["id"] != id.as_str())),
        "{v}"
    );
    let (code, _) = post(
        &node.url(&format!("/api/v1/alerts/{id}/resolve")),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 404, "gone from the history too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_history_file_is_set_aside_and_the_node_runs_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "[alerts.route]\ngroup_wait_ms = 0\n").expect("node config");
    let policy = policies(tmp.path());
    let data = tmp.path().join("h2");
    let (spec, etc) = baseline("history-h2", "history-bad", &data, &config, &policy);
    std::fs::create_dir_all(data.join("alerts")).expect("alerts dir");
    let file = data.join("alerts/history.redb");
    std::fs::write(&file, vec![0x5au8; 16 * 1024]).expect("garbage");
    let node = Node::start(spec);
    let bad = data.join("alerts/history.redb.bad");
    assert_eq!(
        std::fs::read(&bad).map(|b| b.len()).ok(),
        Some(16 * 1024),
        "set aside"
    );
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(&file.display().to_string())),
        "an ERROR naming the file:\n{log}"
    );
    // The new history keeps what happens now.
    add_users(&etc, &["intruder"]);
    let id = resolved_violation(&node).await;
    listed_resolved(&node, &id).await;
}

/// The region's history merged by the API: a member's alert, resolved by an operator,
/// then the master killed. Another member never held that alert, and the new master
/// holds only the open alerts members send it; `?scope=region` on either lists it, from
/// the member that raised it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_scope_merges_every_members_alerts_after_the_master_is_gone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "[alerts.route]\ngroup_wait_ms = 0\n").expect("node config");
    let policy = policies(tmp.path());
    let (mut nodes, etcs, m) =
        crate::policy::baseline_region(tmp.path(), "hr", 3, &config, &policy).await;
    let (b, c) = ((m + 1) % 3, (m + 2) % 3);
    add_users(&etcs[b], &["intruder"]);
    let id = resolved_violation(&nodes[b]).await;
    listed_resolved(&nodes[b], &id).await;
    nodes[m].kill9();
    let region_lists = |n: usize| {
        let url = nodes[n].url("/api/v1/alerts?scope=region&state=resolved&limit=100");
        let id = id.clone();
        async move {
            let v: Value = get(&url).await;
            v["alerts"]
                .as_array()
                .and_then(|l| l.iter().find(|a| a["id"] == id.as_str()).cloned())
                .map(|a| (a, v.clone()))
                .ok_or_else(|| v.to_string())
        }
    };
    let (alert, answer) = wait_for("the region's list on another member", WAIT, || {
        region_lists(c)
    })
    .await;
    assert_eq!(alert["state"], "resolved", "{alert}");
    assert_eq!(answer["scope"], "region", "{answer}");
    assert!(
        answer["answered"]
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n == nodes[b].name.as_str())),
        "{answer}"
    );
    // That member's own list does not hold it: the region's list came from the raiser.
    let own: Value = get(&nodes[c].url("/api/v1/alerts?state=resolved&limit=100")).await;
    assert!(
        own["alerts"]
            .as_array()
            .is_none_or(|l| l.iter().all(|a| a["id"] != id.as_str())),
        "{own}"
    );
    let refused = reqwest::get(nodes[c].url("/api/v1/alerts?scope=world"))
        .await
        .expect("answered");
    assert_eq!(refused.status(), 400);
}
