//! Lifecycle phases on real nodes, set from the command line through the region's log: a
//! member in maintenance raises its violations at info, and at their own severity again
//! once active; a decommissioned member owns no work, leaves the voters, and its death
//! raises no `node_dead` alert.

use std::process::Command;

use serde_json::Value;

use crate::harness::{BIN, CONVERGE, Node, alert_where, get, string_map, wait_for};
use crate::policy::{add_users, baseline_region, policies};

/// `fleetmesh phase NODE PHASE` against `via`'s API.
fn phase(via: &Node, node: &str, phase: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["phase", node, phase, "--by", "ops", "--api"])
        .arg(
            via.url("")
                .trim_start_matches("http://")
                .trim_end_matches('/'),
        )
        .output()
        .expect("fleetmesh phase runs")
}

/// Waits until `node`'s twin says `phase`.
async fn phase_is(node: &Node, name: &str, want: &str) {
    wait_for(
        &format!("{}: {name} in phase {want}", node.name),
        CONVERGE,
        || async {
            let t: Value = get(&node.url(&format!("/api/v1/twins/{name}"))).await;
            if t["phase"] == want {
                Ok(())
            } else {
                Err(t["phase"].to_string())
            }
        },
    )
    .await;
}

/// The `unauthorized_access` alert `node` lists about user `user` on `host`.
async fn access_alert(node: &Node, host: &str, user: &str) -> Value {
    alert_where(node, &format!("an alert about {user} on {host}"), |a| {
        a["action"] == "unauthorized_access" && a["host"] == host && a["subject"] == user
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_downgrades_and_decommissioning_leaves_quietly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, "").expect("node config");
    let policy = policies(tmp.path());
    let (mut nodes, etcs, m) = baseline_region(tmp.path(), "lc", 4, &config, &policy).await;
    let v = (0..4).find(|&i| i != m).expect("a member");
    let other = (0..4).find(|&i| i != m && i != v).expect("another member");
    let name = nodes[v].name.clone();

    // An alert open before the maintenance.
    add_users(&etcs[v], &["early"]);
    let a = access_alert(&nodes[v], &name, "early").await;
    assert_eq!(a["severity"], "high", "{a}");

    // Set through a member that is neither the master nor the node itself.
    let out = phase(&nodes[other], &name, "maintenance");
    assert!(out.status.success(), "{out:?}");
    phase_is(&nodes[v], &name, "maintenance").await;
    wait_for("the phase counted in the census", CONVERGE, || async {
        let c: Value = get(&nodes[m].url("/api/v1/census")).await;
        if c["regions"][0]["phases"]["maintenance"] == 1 {
            Ok(())
        } else {
            Err(c["regions"][0]["phases"].to_string())
        }
    })
    .await;
    // The alert already open goes to info too, at the member and at the master.
    for n in [v, m] {
        alert_where(&nodes[n], "the early alert downgraded", |a| {
            a["subject"] == "early"
                && a["severity"] == "info"
                && a["details"]["phase"] == "maintenance"
        })
        .await;
    }
    add_users(&etcs[v], &["early", "maint"]);
    let a = access_alert(&nodes[v], &name, "maint").await;
    assert_eq!(a["severity"], "info", "{a}");
    assert_eq!(a["details"]["phase"], "maintenance", "{a}");

    // A transition the phases refuse is named.
    let out = phase(&nodes[other], &name, "provisioning");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot go to provisioning"),
        "{out:?}"
    );

    let out = phase(&nodes[m], &name, "active");
    assert!(out.status.success(), "{out:?}");
    phase_is(&nodes[v], &name, "active").await;
    alert_where(&nodes[m], "the early alert high again", |a| {
        a["subject"] == "early" && a["severity"] == "high" && a["details"]["phase"].is_null()
    })
    .await;
    add_users(&etcs[v], &["early", "maint", "later"]);
    let a = access_alert(&nodes[v], &name, "later").await;
    assert_eq!(a["severity"], "high", "{a}");

    // Decommissioned: its work moves, it leaves the voters, its death is quiet.
    let peer = nodes[v].peer_id().to_string();
    for p in ["maintenance", "decommissioning"] {
        let out = phase(&nodes[m], &name, p);
        assert!(out.status.success(), "{out:?}");
        phase_is(&nodes[m], &name, p).await;
    }
    wait_for(
        "its work moved and it left the voters",
        CONVERGE,
        || async {
            let a: Value = get(&nodes[m].url("/api/v1/assignments")).await;
            let owned = string_map(&a["items"])
                .values()
                .filter(|o| **o == peer)
                .count();
            let r: Value = get(&nodes[m].url("/api/v1/region")).await;
            let voter = r["voters"]
                .as_array()
                .is_some_and(|l| l.iter().any(|n| n == name.as_str()));
            if owned == 0 && !voter {
                Ok(())
            } else {
                Err(format!("owns {owned}, voter {voter}: {r}"))
            }
        },
    )
    .await;
    nodes[v].kill9();
    // Its death committed: the alert would have been raised then.
    wait_for(
        "the decommissioned member dead in the log",
        CONVERGE,
        || async {
            let r: Value = get(&nodes[m].url("/api/v1/region")).await;
            let dead = r["dead"]
                .as_array()
                .is_some_and(|l| l.iter().any(|p| p == peer.as_str()));
            if dead {
                Ok(())
            } else {
                Err(r["dead"].to_string())
            }
        },
    )
    .await;
    // Then it leaves the membership: no longer listed, not counted dead.
    wait_for(
        "the decommissioned member out of the membership",
        CONVERGE,
        || async {
            let c: Value = get(&nodes[m].url("/api/v1/census")).await;
            let eu = &c["regions"][0];
            let listed = eu["members"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["peer"] == peer.as_str()));
            if !listed && eu["counts"]["dead"].is_null() {
                Ok(())
            } else {
                Err(eu.to_string())
            }
        },
    )
    .await;
    let v: Value = get(&nodes[m].url("/api/v1/alerts?limit=1000")).await;
    let dead_alerts: Vec<&Value> = v["alerts"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|a| a["action"] == "node_dead" && a["host"] == name.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(dead_alerts.is_empty(), "{dead_alerts:?}");
}
