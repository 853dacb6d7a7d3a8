//! A region of five without named voters (`region.bootstrap_expect` = 3) never loses its
//! authority to one kill -9, whatever the timing: the first master right after it is
//! elected, the master while it promotes new voters, and the master of the formed region.
//! Each time every survivor agrees on a new master with a higher term, and what was
//! committed before the kill (the name bindings) is still there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, get, others, string_map};
use crate::master::agreed;

pub fn spec(name: &str, bootstrap: Option<String>) -> Spec {
    let mut s = Spec::new(name, "founding");
    s.env.extend([
        ("FLEETMESH__REGION__BOOTSTRAP_EXPECT".into(), "3".into()),
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "500".into()),
    ]);
    s.bootstrap = bootstrap.into_iter().collect();
    s
}

fn start(names: &[&str], seed: Option<String>) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for name in names {
        let boot = seed.clone().or_else(|| nodes.first().map(|n| n.addr(true)));
        nodes.push(Node::start(spec(name, boot)));
    }
    nodes
}

pub async fn region(n: &Node) -> Value {
    get(&n.url("/api/v1/region")).await
}

/// Polls until some node of `nodes` reports itself master and `ready` accepts its
/// region view; returns its index and the view.
pub async fn master_when<F: Fn(&Value) -> bool>(
    nodes: &[Node],
    what: &str,
    ready: F,
) -> (usize, Value) {
    let t = Instant::now();
    loop {
        for (i, n) in nodes.iter().enumerate() {
            let r = region(n).await;
            if r["role"] == "master" && ready(&r) {
                return (i, r);
            }
        }
        if t.elapsed() > CONVERGE {
            let views: Vec<Value> = futures::future::join_all(nodes.iter().map(region)).await;
            panic!("{what}: never seen: {views:#?}\n{}", nodes[0].log());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bound(r: &Value) -> BTreeMap<String, String> {
    string_map(&r["names_bound"])
}

/// Kills `nodes[victim]` with SIGKILL; the survivors must agree on a new master with a
/// higher term and still hold the bindings committed before. Returns the time taken.
async fn kill_and_recover(nodes: &mut [Node], victim: usize, term: u64, when: &str) -> Duration {
    let mut before: Vec<BTreeMap<String, String>> = Vec::new();
    for n in others(nodes, victim) {
        before.push(bound(&region(n).await));
    }
    let killed = Instant::now();
    nodes[victim].kill9();
    let survivors = others(nodes, victim);
    let (new_master, new_term) = agreed(&survivors, when, term).await;
    let took = killed.elapsed();
    assert_ne!(
        new_master,
        nodes[victim].peer_id(),
        "{when}: the dead node is no master"
    );
    assert!(new_term > term, "{when}: term {term} -> {new_term}");
    for (n, had) in survivors.iter().zip(&before) {
        let now = bound(&region(n).await);
        for (name, peer) in had {
            assert_eq!(
                now.get(name),
                Some(peer),
                "{when}: committed binding of {name} lost"
            );
        }
    }
    eprintln!("{when}: new master {new_master} term {term} -> {new_term} in {took:?}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_kill_never_leaves_a_region_without_a_master_whatever_the_timing() {
    // 1. The first master, right after it is elected.
    let mut nodes = start(&["e0", "e1", "e2", "e3", "e4"], None);
    let (m, r) = master_when(&nodes, "a first master", |_| true).await;
    let term = r["term"].as_u64().expect("term");
    kill_and_recover(&mut nodes, m, term, "early").await;
    drop(nodes);

    // 2. The master while it promotes: three found, two join later as learners.
    // The learner phase lasts milliseconds (each membership change follows the previous
    // one at once), so a loaded machine may miss it: a fresh region is tried again, at
    // most three times.
    let mut caught = None;
    for attempt in 0..3 {
        if let Some(c) = promoting(attempt).await {
            caught = Some(c);
            break;
        }
    }
    let (mut nodes, m, r) = caught.expect("the promotion was never caught in progress");
    let term = r["term"].as_u64().expect("term");
    kill_and_recover(&mut nodes, m, term, "promoting").await;
    drop(nodes);

    // 3. The master of the formed region: five voters.
    let mut nodes = start(&["f0", "f1", "f2", "f3", "f4"], None);
    let (m, r) = master_when(&nodes, "five voters", |r| {
        r["voters"].as_array().is_some_and(|v| v.len() == 5) && bound(r).len() == 5
    })
    .await;
    let term = r["term"].as_u64().expect("term");
    kill_and_recover(&mut nodes, m, term, "formed").await;
}

/// Three nodes found a region, two more join; returns the nodes, the master and its view
/// once the master knows a newcomer while not every member votes yet (watched alone,
/// without pause), or `None` if the promotion ended unseen.
async fn promoting(attempt: usize) -> Option<(Vec<Node>, usize, Value)> {
    let names: Vec<String> = (0..5).map(|i| format!("p{attempt}{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut nodes = start(&names[..3], None);
    let (m, _) = master_when(&nodes, "a master of three", |_| true).await;
    let seed = nodes[0].addr(true);
    nodes.extend(start(&names[3..], Some(seed)));
    let t = Instant::now();
    loop {
        let r = region(&nodes[m]).await;
        let newcomer = r["consensus_members"].as_array().is_some_and(|a| {
            a.iter().any(|c| {
                names[3..].contains(&c["name"].as_str().unwrap_or("")) && c["membership"] != "none"
            })
        });
        let voters = r["voters"].as_array().map_or(0, Vec::len);
        if r["role"] == "master" && newcomer && voters < 5 {
            return Some((nodes, m, r));
        }
        if voters == 5 {
            eprintln!("promoting: attempt {attempt} missed the promotion");
            return None;
        }
        assert!(t.elapsed() < CONVERGE, "no promotion: {r:#}");
    }
}
