//! The regional master on real nodes: five voters elect one master; killing it with
//! SIGKILL elects another with a higher term, and the old master, restarted from its data
//! dir, follows the new one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, get};

const NAMES: [&str; 5] = ["m0", "m1", "m2", "m3", "m4"];

fn spec(i: usize, dir: PathBuf, bootstrap: Option<String>) -> Spec {
    let mut s = Spec::new(NAMES[i], "masters");
    s.dir = Some(dir);
    s.env
        .push(("FLEETMESH__REGION__VOTERS".into(), NAMES.join(",")));
    // The default heartbeats: consensus has its own clock, and five nodes on two cores
    // need not gossip five times a second.
    s.env
        .push(("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "1000".into()));
    s.bootstrap = bootstrap.into_iter().collect();
    s
}

/// (master peer id, term, role) as `node` reports them.
pub async fn view(node: &Node) -> (Option<String>, u64, String) {
    let r: Value = get(&node.url("/api/v1/region")).await;
    (
        r["master"]["peer_id"].as_str().map(str::to_string),
        r["term"].as_u64().unwrap_or(0),
        r["role"].as_str().unwrap_or_default().to_string(),
    )
}

/// Waits until every node in `nodes` names the same master; returns it and the term.
pub async fn agreed(nodes: &[&Node], what: &str, newer_than: u64) -> (String, u64) {
    let t = Instant::now();
    loop {
        let mut views = Vec::new();
        for n in nodes {
            views.push(view(n).await);
        }
        let first = &views[0];
        if let Some(master) = &first.0
            && first.1 > newer_than
            && views
                .iter()
                .all(|v| v.0.as_ref() == Some(master) && v.1 == first.1)
        {
            let masters = views.iter().filter(|v| v.2 == "master").count();
            let is_member = nodes.iter().any(|n| n.peer_id() == master);
            if masters == 1 && is_member {
                return (master.clone(), first.1);
            }
        }
        if t.elapsed() > CONVERGE {
            let full: Value = get(&nodes[0].url("/api/v1/region")).await;
            panic!(
                "{what}: no agreement: {views:?}\n{full:#}\n{}",
                nodes[0].log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the committed assignments give every live node's audit to another live
/// node and nothing to `gone`; returns them.
async fn settled_assignments(
    node: &Node,
    live: &[&Node],
    gone: Option<&String>,
) -> std::collections::BTreeMap<String, String> {
    let t = Instant::now();
    loop {
        let a: Value = get(&node.url("/api/v1/assignments")).await;
        let items = crate::harness::string_map(&a["items"]);
        let is_live = |p: &str| live.iter().any(|n| n.peer_id() == p);
        let audited = live.iter().all(|n| {
            items
                .get(&format!("audit:{}", n.peer_id()))
                .is_some_and(|o| is_live(o) && o != n.peer_id())
        });
        let none_to_gone = gone.is_none_or(|g| items.values().all(|o| o != g));
        if audited && none_to_gone {
            return items;
        }
        assert!(
            t.elapsed() < CONVERGE,
            "assignments never settled: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_elects_another_and_the_old_one_follows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = NAMES.iter().map(|n| tmp.path().join(n)).collect();
    let mut nodes = vec![Node::start(spec(0, dirs[0].clone(), None))];
    let seed = nodes[0].addr(true);
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        nodes.push(Node::start(spec(i, dir.clone(), Some(seed.clone()))));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let (master, term) = agreed(&all, "first election", 0).await;
    let before = settled_assignments(&nodes[0], &all, None).await;

    let m = nodes
        .iter()
        .position(|n| n.peer_id() == master)
        .expect("the master is one of the five");
    let killed = Instant::now();
    nodes[m].kill9();
    let survivors = crate::harness::others(&nodes, m);
    let (new_master, new_term) = agreed(&survivors, "after the kill", term).await;
    eprintln!(
        "master: {} -> {} (term {term} -> {new_term}) {:?} after the kill",
        NAMES[m],
        nodes
            .iter()
            .position(|n| n.peer_id() == new_master)
            .map_or("?", |i| NAMES[i]),
        killed.elapsed()
    );
    assert_ne!(new_master, master);

    // Work: the dead master's items, and only those, moved to live nodes.
    let after = settled_assignments(survivors[0], &survivors, Some(&master)).await;
    for (item, owner) in &before {
        if owner == &master {
            let now = after.get(item).expect("still assigned");
            assert!(
                survivors.iter().any(|n| n.peer_id() == now),
                "{item} -> {now}"
            );
        } else if item != &format!("audit:{master}") {
            assert_eq!(
                after.get(item),
                Some(owner),
                "{item} moved but was not the dead node's"
            );
        }
    }

    // The old master comes back from its data dir and follows.
    let old = Node::start(spec(m, dirs[m].clone(), Some(survivors[0].addr(true))));
    let t = Instant::now();
    loop {
        let (seen, seen_term, role) = view(&old).await;
        if seen.as_deref() == Some(new_master.as_str())
            && seen_term >= new_term
            && role == "follower"
        {
            break;
        }
        assert!(
            t.elapsed() < CONVERGE,
            "the restarted master does not follow: {:?}",
            (seen, seen_term, role)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
