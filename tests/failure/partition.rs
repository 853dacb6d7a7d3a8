//! A 5-voter region split 2|3 on real nodes: two of them run in a network namespace whose
//! link is taken down. The 3-side keeps (or elects) the master; the 2-side elects none and
//! reports itself autonomous; after the heal all five follow one master again.
//!
//! Needs root and iproute2 (`ip netns`); set `FLEETMESH_SKIP_NETNS=1` to skip.

use serde_json::Value;

use crate::harness::{CONVERGE, Netns, Node, Spec, get, wait_for};

const NAMES: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];

fn spec(name: &str, listen: &[String], api: Option<&str>, bootstrap: Vec<String>) -> Spec {
    let mut s = Spec::new(name, "split");
    s.env.extend([
        ("FLEETMESH__REGION__VOTERS".into(), NAMES.join(",")),
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "1000".into()),
    ]);
    for l in listen {
        s.extra_args.extend(["--listen".into(), l.clone()]);
    }
    if let Some(a) = api {
        s.extra_args.extend(["--api-listen".into(), a.into()]);
    }
    s.bootstrap = bootstrap;
    s
}

/// (master peer id, autonomous, own connectivity) as `node` reports them.
async fn view(node: &Node) -> (Option<String>, bool, Option<String>) {
    let r: Value = get(&node.url("/api/v1/region")).await;
    let own = node
        .node()
        .await
        .sync
        .and_then(|s| s.connectivity)
        .map(|c| c.as_str().to_string());
    (
        r["master"]["peer_id"].as_str().map(str::to_string),
        r["autonomous"].as_bool().unwrap_or(false),
        own,
    )
}

/// Waits until every node of `nodes` follows the same master, one of `nodes`.
async fn one_master(nodes: &[&Node], what: &str) -> String {
    wait_for(what, CONVERGE, || async move {
        let mut views = Vec::new();
        for n in nodes {
            views.push(view(n).await);
        }
        match &views[0].0 {
            Some(m)
                if views.iter().all(|v| v.0.as_ref() == Some(m))
                    && nodes.iter().any(|n| n.peer_id() == m) =>
            {
                Ok(m.clone())
            }
            _ => Err(format!("{views:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_3_split_leaves_the_master_with_the_3_and_the_2_autonomous() {
    if std::env::var_os("FLEETMESH_SKIP_NETNS").is_some() {
        eprintln!("skipped: FLEETMESH_SKIP_NETNS is set");
        return;
    }
    let ns = Netns::create(8).unwrap_or_else(|e| {
        panic!("this test needs root and iproute2 (set FLEETMESH_SKIP_NETNS=1 to skip): {e}")
    });
    let outer = format!("/ip4/{}/tcp/0", ns.outer);
    let loopback = "/ip4/127.0.0.1/tcp/0".to_string();
    let p0 = Node::start(spec(
        NAMES[0],
        &[loopback.clone(), outer.clone()],
        None,
        vec![],
    ));
    let via_veth = p0
        .runtime
        .listen
        .iter()
        .find(|a| a.contains(&ns.outer))
        .map(|a| format!("{a}/p2p/{}", p0.peer_id()))
        .expect("p0 listens on the veth address");
    let mut three = vec![p0];
    for name in &NAMES[1..3] {
        three.push(Node::start(spec(
            name,
            &[loopback.clone(), outer.clone()],
            None,
            vec![three[0].addr(true)],
        )));
    }
    let mut two = Vec::new();
    for name in &NAMES[3..] {
        let mut s = spec(
            name,
            &[format!("/ip4/{}/tcp/0", ns.inner)],
            Some(&format!("{}:0", ns.control)),
            vec![via_veth.clone()],
        );
        s.netns = Some(ns.name.clone());
        two.push(Node::start(s));
    }
    let all: Vec<&Node> = three.iter().chain(two.iter()).collect();
    one_master(&all, "one master for all five").await;

    ns.cut();
    let majority: Vec<&Node> = three.iter().collect();
    let master = one_master(&majority, "a master on the 3-side").await;
    // The 2-side elects no master and says so (its APIs answer over the control link).
    let minority: Vec<&Node> = two.iter().collect();
    wait_for("the 2-side autonomous", CONVERGE, || {
        let minority = minority.clone();
        async move {
            let mut views = Vec::new();
            for n in &minority {
                views.push(view(n).await);
            }
            if views
                .iter()
                .all(|v| v.0.is_none() && v.1 && v.2.as_deref() == Some("autonomous"))
            {
                Ok(())
            } else {
                Err(format!("{views:?}"))
            }
        }
    })
    .await;
    // The 3-side keeps the same master meanwhile.
    assert_eq!(one_master(&majority, "the 3-side still led").await, master);
    ns.heal();
    let after = one_master(&all, "one master for all five after the heal").await;
    eprintln!("master during the split {master}, after the heal {after}");
}
