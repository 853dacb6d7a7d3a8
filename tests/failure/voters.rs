//! Voters without naming them (`region.bootstrap_expect` 1, the test default): the oldest
//! members that see each other found the region together (at most `region.max_voters`),
//! the master adds every other member as a learner and promotes them up to
//! `region.max_voters`; a dead voter is replaced by a live member; a node started later
//! joins the same group.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, get, wait_for};

fn spec(name: &str, bootstrap: Option<String>) -> Spec {
    let mut s = Spec::new(name, "auto");
    s.env.extend([
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "1000".into()),
        ("FLEETMESH__REGION__MAX_VOTERS".into(), "3".into()),
        ("FLEETMESH__REGION__REPLACE_DEAD_VOTER_S".into(), "3".into()),
    ]);
    s.bootstrap = bootstrap.into_iter().collect();
    s
}

/// (master name, sorted voter names, learner names, founders) as `node` sees them.
async fn view(node: &Node) -> (Option<String>, Vec<String>, Vec<String>, Vec<String>) {
    let r: Value = get(&node.url("/api/v1/region")).await;
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };
    let learners = r["consensus_members"]
        .as_array()
        .map(|a| {
            let mut l: Vec<String> = a
                .iter()
                .filter(|m| m["membership"] == "learner")
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect();
            l.sort();
            l
        })
        .unwrap_or_default();
    (
        r["master"]["name"].as_str().map(str::to_string),
        names(&r["voters"]),
        learners,
        names(&r["founders"]),
    )
}

/// Waits until every node reports the same view and `ok` accepts it.
async fn settled<F>(nodes: &[&Node], what: &str, ok: F) -> (String, Vec<String>, Vec<String>)
where
    F: Fn(&str, &[String], &[String]) -> bool,
{
    let ok = &ok;
    wait_for(what, CONVERGE, || async move {
        let mut views = Vec::new();
        for n in nodes {
            views.push(view(n).await);
        }
        let first = views[0].clone();
        let Some(master) = first.0.clone() else {
            return Err(format!("no master: {views:?}"));
        };
        if views.iter().all(|v| v.0 == first.0 && v.1 == first.1) && ok(&master, &first.1, &first.2)
        {
            Ok((master, first.1, first.2))
        } else {
            Err(format!("{views:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_node_founds_the_master_promotes_and_replaces_voters() {
    let a0 = Node::start(spec("a0", None));
    // The others start after a0 (so a0 is the oldest) but within its bootstrap wait.
    let boot = a0.addr(true);
    let mut nodes = vec![a0];
    for name in ["a1", "a2", "a3"] {
        nodes.push(Node::start(spec(name, Some(boot.clone()))));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let (master, voters, learners) = settled(&all, "three voters and one learner", |_, v, l| {
        v.len() == 3 && l.len() == 1
    })
    .await;
    let founders = view(&nodes[0]).await.3;
    assert!(
        founders.contains(&"a0".to_string())
            && founders.len() <= 3
            && founders
                .iter()
                .all(|f| ["a0", "a1", "a2"].contains(&f.as_str())),
        "the oldest found the region: {founders:?}"
    );
    eprintln!("master {master}, voters {voters:?}, learners {learners:?}");

    // kill -9 a voter that is not the master: the learner takes its place.
    let victim = voters
        .iter()
        .find(|v| **v != master)
        .cloned()
        .expect("a voter other than the master");
    let pos = nodes
        .iter()
        .position(|n| n.name == victim)
        .expect("victim runs");
    let mut dead = nodes.remove(pos);
    let killed = Instant::now();
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let live: Vec<&Node> = nodes.iter().collect();
    let (_, after, _) = settled(&live, "the dead voter replaced", |_, v, _| {
        v.len() == 3 && !v.contains(&victim)
    })
    .await;
    eprintln!(
        "voter {victim} replaced {:?} after kill -9: voters {after:?}",
        killed.elapsed()
    );
    let promoted: Vec<&String> = after.iter().filter(|v| !voters.contains(v)).collect();
    assert_eq!(promoted, learners.iter().collect::<Vec<_>>());

    // A node started now joins the same group (as a learner: three voters already).
    // Through a live node: the first one may be the voter that was killed.
    let late = Node::start(spec("a9", Some(nodes[0].addr(true))));
    let mut live: Vec<&Node> = nodes.iter().collect();
    live.push(&late);
    settled(&live, "the late node replicating the log", |_, v, l| {
        v.len() == 3 && l.contains(&"a9".to_string())
    })
    .await;
    assert_eq!(view(&late).await.3, founders, "same founders");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
