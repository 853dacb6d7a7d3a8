//! Silences and acknowledgements go through the region's log: a silence set on a member
//! that is not the master holds on every member of the region, its expiry too, and both
//! survive a kill -9 of the master and a restart of a member (which gets them back from
//! the log, not from its own memory).

use serde_json::Value;

use crate::harness::{
    CONVERGE, Node, Spec, get, master_name as master, now_ms, post, settled, wait_for,
};

/// The silences `node` lists, by id: their state.
async fn silences(node: &Node) -> Vec<(String, String)> {
    let list: Value = get(&node.url("/api/v1/silences")).await;
    list.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["status"]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Waits until `node` lists silence `id` in `state`.
async fn holds(node: &Node, id: &str, state: &str) {
    wait_for(
        &format!("{}: silence {id} {state}", node.name),
        CONVERGE,
        || async {
            let list = silences(node).await;
            if list.iter().any(|(i, s)| i == id && s == state) {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        },
    )
    .await;
}

/// The name of the region's master as `node` knows it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_set_anywhere_holds_on_every_member_and_outlives_the_master() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut specs = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for name in ["s0", "s1", "s2"] {
        let mut spec = Spec::new(name, "sil");
        spec.dir = Some(tmp.path().join(name));
        // Three voters, so that the region survives its master.
        spec.env
            .push(("FLEETMESH__REGION__BOOTSTRAP_EXPECT".into(), "3".into()));
        if let Some(first) = nodes.first() {
            spec.bootstrap = vec![first.addr(true)];
        }
        nodes.push(Node::start(spec.clone()));
        specs.push(spec);
    }
    settled(&nodes[0], 1, 3).await;
    let lead = wait_for("a master", CONVERGE, || async {
        master(&nodes[0])
            .await
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    let m = nodes.iter().position(|n| n.name == lead).expect("a member");
    let f = (m + 1) % 3;

    // Set on a follower (Alertmanager's JSON): every member holds it.
    let rfc3339 = fleetmesh_actors::alerting::rfc3339::format;
    let now = now_ms();
    let (status, created) = post(
        &nodes[f].url("/api/v1/silences"),
        serde_json::json!({
            "matchers": [{"name": "role", "value": "web", "isRegex": false, "isEqual": true}],
            "startsAt": rfc3339(now - 1000),
            "endsAt": rfc3339(now + 3_600_000),
            "createdBy": "ops",
            "comment": "planned maintenance",
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let kept = created["silenceID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for n in &nodes {
        holds(n, &kept, "active").await;
    }
    // A second one, expired on another member: the expiry holds everywhere.
    let (status, created) = post(
        &nodes[m].url("/api/v1/silences"),
        serde_json::json!({
            "matchers": [{"name": "subject", "value": "/etc/motd", "isRegex": false, "isEqual": true}],
            "startsAt": rfc3339(now - 1000),
            "endsAt": rfc3339(now + 3_600_000),
            "createdBy": "ops",
            "comment": "to be expired",
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let ended = created["silenceID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for n in &nodes {
        holds(n, &ended, "active").await;
    }
    let answer = reqwest::Client::new()
        .delete(nodes[f].url(&format!("/api/v1/silences/{ended}")))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200);
    for n in &nodes {
        holds(n, &ended, "expired").await;
    }

    // kill -9 the master: the survivors elect another and still hold both.
    nodes[m].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != m).collect();
    let new = wait_for("a new master", CONVERGE, || async {
        match master(&nodes[survivors[0]]).await {
            Some(name) if name != lead => Ok(name),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_ne!(new, lead);
    // A survivor restarts: its memory is gone, the log gives the silences back.
    let r = survivors[1];
    nodes[r].kill9();
    let restarted = Node::start(specs[r].clone());
    holds(&restarted, &kept, "active").await;
    holds(&restarted, &ended, "expired").await;
    // And the old master, back: the same.
    let back = Node::start(specs[m].clone());
    holds(&back, &kept, "active").await;
    holds(&back, &ended, "expired").await;
}
