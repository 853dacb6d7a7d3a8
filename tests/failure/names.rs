//! Duplicate node names on real nodes: a name belongs to the first peer id the region's
//! log bound it to. A later node with the same `node.name` (another data dir, so another
//! peer id) is refused: no consensus slot, no work, a `duplicate_name` alert at the
//! master, an ERROR naming the other peer id on both twins, and the reason on its own
//! `GET /api/v1/region`. Renamed, it is admitted. Twins that found a region together:
//! the older claimant is kept.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::founding::{master_when, region};
use crate::harness::{CONVERGE, Node, Spec, get, string_map, wait_for};

fn spec(name: &str, region: &str, dir: Option<PathBuf>, bootstrap: Option<String>) -> Spec {
    let mut s = Spec::new(name, region);
    s.env.extend([
        ("FLEETMESH__REGION__BOOTSTRAP_EXPECT".into(), "3".into()),
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "500".into()),
    ]);
    s.dir = dir;
    s.bootstrap = bootstrap.into_iter().collect();
    s
}

/// `peer`'s consensus membership (`voter`, `learner`, `none`) in `view`, if listed.
fn membership(view: &Value, peer: &str) -> Option<String> {
    view["consensus_members"]
        .as_array()?
        .iter()
        .find(|c| c["peer_id"] == peer)
        .and_then(|c| c["membership"].as_str())
        .map(str::to_string)
}

fn voters(view: &Value) -> Vec<String> {
    let mut v: Vec<String> = view["consensus_members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["membership"] == "voter")
                .filter_map(|c| c["peer_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The (name, holder, claimant) triples `view` lists under `refused`.
fn refused(view: &Value) -> Vec<(String, String, String)> {
    view["refused"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (s("name"), s("holder"), s("claimant"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `node` says it knows no master because its name is `name`, held by
/// `holder`; returns its region view.
async fn says_duplicate(node: &Node, name: &str, holder: &str) -> Value {
    wait_for(
        &format!("{} says duplicate_name", node.peer_id()),
        CONVERGE,
        || async {
            let r = region(node).await;
            let why = &r["no_master_reason"];
            if why["reason"] == "duplicate_name" && why["name"] == name && why["holder"] == holder {
                Ok(r)
            } else {
                Err(format!("{r:#}"))
            }
        },
    )
    .await
}

/// A log line at ERROR level that names `other`.
fn error_naming(log: &str, other: &str) -> bool {
    log.lines()
        .any(|l| l.contains("ERROR") && l.contains(other))
}

/// The `duplicate_name` alerts `node` holds.
async fn duplicate_alerts(node: &Node) -> Vec<Value> {
    let v: Value = get(&node.url("/api/v1/alerts?since=0&limit=1000")).await;
    v["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["action"] == "duplicate_name")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_node_with_a_taken_name_is_refused_until_renamed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let region_name = "names-later";
    let names = ["d0", "d1", "d2"];
    let mut nodes: Vec<Node> = Vec::new();
    for n in names {
        let boot = nodes.first().map(|f| f.addr(true));
        nodes.push(Node::start(spec(n, region_name, None, boot)));
    }
    let (m, formed) = master_when(&nodes, "a region of three", |r| {
        voters(r).len() == 3 && string_map(&r["names_bound"]).len() == 3
    })
    .await;
    let master = nodes[m].peer_id().to_string();
    let term = formed["term"].as_u64().expect("term");
    let before_voters = voters(&formed);
    // The twin takes the name of a member that is not the master.
    let original = (m + 1) % nodes.len();
    let taken = nodes[original].name.clone();
    let holder = nodes[original].peer_id().to_string();

    let twin_dir = tmp.path().join("twin");
    let mut twin = Node::start(spec(
        &taken,
        region_name,
        Some(twin_dir.clone()),
        Some(nodes[m].addr(true)),
    ));
    let claimant = twin.peer_id().to_string();
    assert_ne!(claimant, holder, "another data dir, another peer id");

    // The master refuses it.
    let seen = wait_for("the master lists the twin as refused", CONVERGE, || async {
        let r = region(&nodes[m]).await;
        if refused(&r).contains(&(taken.clone(), holder.clone(), claimant.clone())) {
            Ok(r)
        } else {
            Err(format!("{r:#}"))
        }
    })
    .await;
    // The twin itself knows why it has no master.
    let own = says_duplicate(&twin, &taken, &holder).await;
    // It may hold an inert consensus core (it can join the announced group before it
    // hears the holder of its name), but it follows no master and leads nothing.
    assert!(own["master"].is_null(), "{own:#}");
    assert_ne!(own["role"], "master", "{own:#}");

    // One alert at the master, about this claimant.
    let alert = wait_for("the duplicate_name alert", CONVERGE, || async {
        duplicate_alerts(&nodes[m])
            .await
            .into_iter()
            .find(|a| a["details"]["claimant"] == claimant.as_str())
            .ok_or_else(|| "no duplicate_name alert yet".to_string())
    })
    .await;
    assert_eq!(alert["details"]["holder"], holder.as_str(), "{alert:#}");
    assert_eq!(alert["subject"], taken.as_str(), "{alert:#}");

    // Both twins log an ERROR naming the other.
    wait_for("both twins log the other", CONVERGE, || async {
        let (a, b) = (nodes[original].log(), twin.log());
        if error_naming(&a, &claimant) && error_naming(&b, &holder) {
            Ok(())
        } else {
            Err(format!(
                "original names the claimant: {}, twin names the holder: {}\n{b}",
                error_naming(&a, &claimant),
                error_naming(&b, &holder)
            ))
        }
    })
    .await;

    // Some time passes (several governance rounds): nothing of the region moves to it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = region(&nodes[m]).await;
    assert_eq!(after["role"], "master", "the master stays: {after:#}");
    assert_eq!(after["term"].as_u64(), Some(term), "no election: {after:#}");
    assert_eq!(voters(&after), before_voters, "the voters stay: {after:#}");
    assert!(
        voters(&after).contains(&holder),
        "the original keeps its vote"
    );
    assert!(
        matches!(
            membership(&after, &claimant).as_deref(),
            None | Some("none")
        ),
        "no learner or voter slot for the twin: {after:#}"
    );
    assert_eq!(
        string_map(&after["names_bound"]).get(&taken),
        Some(&holder),
        "the name stays bound to the original"
    );
    // Not alive for the region: no work for it, and nobody audits it.
    let touching: Vec<(String, String)> = string_map(&after["assignments"])
        .into_iter()
        .filter(|(item, owner)| *owner == claimant || item.contains(&claimant))
        .collect();
    assert!(touching.is_empty(), "no work for the twin: {touching:?}");
    assert!(
        refused(&seen).len() == 1 && refused(&after).len() == 1,
        "{after:#}"
    );
    assert_eq!(
        duplicate_alerts(&nodes[m])
            .await
            .iter()
            .filter(|a| a["details"]["claimant"] == claimant.as_str())
            .count(),
        1,
        "one alert for the claimant"
    );

    // Renamed (same data dir, so the same peer id), it is admitted.
    assert!(twin.stop().success());
    let renamed = "d3";
    let twin = Node::start(spec(
        renamed,
        region_name,
        Some(twin_dir),
        Some(nodes[m].addr(true)),
    ));
    assert_eq!(twin.peer_id(), claimant, "the same identity, renamed");
    let t = Instant::now();
    let admitted = wait_for("the renamed node admitted", CONVERGE, || async {
        let r = region(&nodes[m]).await;
        let own = region(&twin).await;
        let bound = string_map(&r["names_bound"]);
        let ok = bound.get(renamed) == Some(&claimant)
            && bound.get(&taken) == Some(&holder)
            && refused(&r).is_empty()
            && membership(&r, &claimant).is_some_and(|m| m != "none")
            && own["no_master_reason"].is_null()
            && own["master"]["peer_id"] == master.as_str();
        if ok {
            Ok(r)
        } else {
            Err(format!("master: {r:#}\nrenamed: {own:#}"))
        }
    })
    .await;
    eprintln!("renamed node admitted in {:?}", t.elapsed());
    assert_eq!(admitted["role"], "master");
    // Alive for the region now: it is audited like any member.
    wait_for("the renamed node audited", CONVERGE, || async {
        let r = region(&nodes[m]).await;
        let a = string_map(&r["assignments"]);
        if a.contains_key(&format!("audit:{claimant}")) {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_founding_together_leave_the_older_one_in() {
    let region_name = "names-twins";
    // Four nodes, three names: founding needs three eligible names, so it must count
    // the twins once.
    let names = ["t0", "twin", "twin", "t3"];
    let mut nodes: Vec<Node> = Vec::new();
    for n in names {
        let boot = nodes.first().map(|f| f.addr(true));
        nodes.push(Node::start(spec(n, region_name, None, boot)));
    }
    // The first twin started first: it is the older claimant (its incarnation, the
    // start's wall clock in ms, is lower).
    let (older, younger) = (
        nodes[1].peer_id().to_string(),
        nodes[2].peer_id().to_string(),
    );
    // The master's view lists members by peer id: when the younger twin's is the lower
    // (half the runs), a binding to whichever is listed first would refuse the founder.
    eprintln!("twins: younger listed first: {}", younger < older);
    let (m, view) = master_when(&nodes, "a master with the twin refused", |r| {
        !refused(r).is_empty() && voters(r).len() == 3
    })
    .await;
    assert!(m != 2, "the younger twin is no master: {view:#}");
    assert_eq!(
        refused(&view),
        vec![("twin".to_string(), older.clone(), younger.clone())],
        "{view:#}"
    );
    assert_eq!(
        membership(&view, &older).as_deref(),
        Some("voter"),
        "{view:#}"
    );
    assert!(
        matches!(membership(&view, &younger).as_deref(), None | Some("none")),
        "{view:#}"
    );
    assert_eq!(
        string_map(&view["names_bound"]).get("twin"),
        Some(&older),
        "{view:#}"
    );
    let own = says_duplicate(&nodes[2], "twin", &older).await;
    assert!(own["master"].is_null(), "{own:#}");
    assert_ne!(own["role"], "master", "{own:#}");
    // Every node but the younger twin knows the same master.
    let master = nodes[m].peer_id().to_string();
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != 2) {
        wait_for(
            &format!("node {i} follows the master"),
            CONVERGE,
            || async {
                let r = region(n).await;
                if r["master"]["peer_id"] == master.as_str() {
                    Ok(())
                } else {
                    Err(format!("{r:#}"))
                }
            },
        )
        .await;
    }
    assert!(error_naming(&nodes[2].log(), &older), "{}", nodes[2].log());
}
