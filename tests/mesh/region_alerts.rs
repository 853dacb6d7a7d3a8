//! The region's master notifies for the region: 50 violations on 5 nodes within about two
//! seconds become at most 2 notifications of their group at a webhook every node names,
//! carrying the alerts of all five. The master's own alert about the region (a fleet
//! event) is held by every member through the region's log. After a kill -9 of the
//! master, the new master holds that alert with the same id, tells no group again that
//! the log shows told, and loses nothing: a violation raised afterwards arrives, in the
//! one notification after the failover.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::alerts::{Receiver, notifications};
use crate::harness::{CONVERGE, get, master_name as master, wait_for};
use crate::policy::{add_users, baseline_region, policies};

/// The `unauthorized_access` notifications the webhook took.
fn access(r: &Receiver) -> Vec<Value> {
    notifications(r, "/hook")
        .into_iter()
        .filter(|n| n["group_labels"]["alertname"] == "unauthorized_access")
        .collect()
}

/// The distinct alert keys in `list`.
fn keys(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["key"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_notifies_for_the_region_once_per_group_and_a_new_master_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts.route]\ngroup_wait_ms = 3000\ngroup_interval_ms = 4000\n\
             [[alerts.receivers]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n\
             retry_min_ms = 200\nretry_max_ms = 1000\n",
            receiver.url("/hook")
        ),
    )
    .expect("node config");
    let policy = policies(tmp.path());
    let (mut nodes, etcs, m) = baseline_region(tmp.path(), "ra", 5, &config, &policy).await;
    let lead = nodes[m].name.clone();
    // Every member knows the master before the storm.
    for n in &nodes {
        wait_for(
            &format!("{} knows the master", n.name),
            CONVERGE,
            || async {
                match master(n).await {
                    Some(name) if name == lead => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }

    // Ten users added on each of the five nodes (names differ: no fleet event), and one
    // more, the same, on three of them: one fleet event, raised by the master.
    for (i, etc) in etcs.iter().enumerate() {
        let mut names: Vec<String> = (0..10).map(|j| format!("n{i}u{j}")).collect();
        if i < 3 {
            names.push("shared".into());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        add_users(etc, &names);
    }
    let told = wait_for("all 50 alerts at the webhook", CONVERGE, || async {
        let got = access(&receiver);
        let k = keys(&got);
        if k.len() >= 50 {
            Ok(got)
        } else {
            Err(format!("{} alerts in {} notifications", k.len(), got.len()))
        }
    })
    .await;
    assert!(
        told.len() <= 2,
        "50 violations in about 2 s: {} notifications",
        told.len()
    );
    let hosts: BTreeSet<String> = told
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["node"].as_str().map(str::to_string))
        .collect();
    assert_eq!(hosts.len(), 5, "alerts of every node: {hosts:?}");
    // Members left the telling to the master.
    for (i, n) in nodes.iter().enumerate() {
        let v: Value = get(&n.url("/api/v1/alerts?limit=1")).await;
        assert_eq!(v["notifier"], i == m, "{}: {v}", n.name);
        if i != m {
            assert!(v["left_to_master"].as_u64() > Some(0), "{}: {v}", n.name);
        }
    }

    // The master's own alert about the region is in the region's log: every member
    // holds it, with the same id.
    let fleet_alert = |v: &Value| {
        v["alerts"].as_array().and_then(|l| {
            l.iter()
                .find(|a| a["action"] == "suspected_coordinated_change" && a["subject"] == "shared")
                .cloned()
        })
    };
    let event = wait_for(
        "the fleet event's alert at the master",
        CONVERGE,
        || async {
            let v: Value = get(&nodes[m].url("/api/v1/alerts?limit=1000")).await;
            fleet_alert(&v).ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    let event_id = event["id"].as_str().expect("an id").to_string();
    for n in &nodes {
        wait_for(
            &format!("{} holds the master's alert", n.name),
            CONVERGE,
            || async {
                let v: Value = get(&n.url("/api/v1/alerts?limit=1000")).await;
                match fleet_alert(&v) {
                    Some(a) if a["id"] == event_id.as_str() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    let fleet_told = |r: &Receiver| {
        notifications(r, "/hook")
            .into_iter()
            .filter(|n| n["group_labels"]["alertname"] == "suspected_coordinated_change")
            .count()
    };
    wait_for("the fleet event told", CONVERGE, || async {
        (fleet_told(&receiver) == 1)
            .then_some(())
            .ok_or_else(|| format!("{} notifications", fleet_told(&receiver)))
    })
    .await;

    // kill -9 the master: another takes over; the region's log says what was told, so
    // it tells no group again that stands as told.
    let before = access(&receiver).len();
    nodes[m].kill9();
    let survivor = (m + 1) % 5;
    let new = wait_for("a new master", CONVERGE, || async {
        match master(&nodes[survivor]).await {
            Some(name) if name != lead => Ok(name),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let n = nodes.iter().position(|x| x.name == new).expect("a member");
    // A violation after the failover, on a node that is not the new master: it arrives.
    let other = (0..5).find(|&i| i != m && i != n).expect("a third node");
    let names: Vec<String> = (0..10)
        .map(|j| format!("n{other}u{j}"))
        .chain(["late".to_string()])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    add_users(&etcs[other], &names);
    let late_key = "|user|late".to_string();
    let after = wait_for("the late violation at the webhook", CONVERGE, || async {
        let got = access(&receiver);
        if keys(&got[before..]).iter().any(|k| k.ends_with(&late_key)) {
            Ok(got[before..].to_vec())
        } else {
            Err(format!(
                "{} notifications since the kill",
                got.len() - before
            ))
        }
    })
    .await;
    assert_eq!(
        after.len(),
        1,
        "after the failover only the update with the late violation: {after:#?}"
    );
    let v: Value = get(&nodes[n].url("/api/v1/alerts?limit=1000")).await;
    assert_eq!(v["notifier"], true, "the new master notifies: {v}");
    // The new master holds the old master's alert about the region, open, and told it
    // no second time.
    let held = fleet_alert(&v).expect("the fleet event's alert at the new master");
    assert_eq!(held["id"], event_id.as_str(), "{held}");
    assert_eq!(held["state"], "firing", "{held}");
    assert_eq!(fleet_told(&receiver), 1);
}
