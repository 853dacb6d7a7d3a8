//! Never lost: a node cut off from its region (its network namespace's link taken down)
//! for 60 s records 1,000 file changes; after the heal every one of them reaches the
//! region master exactly once and in order, and the master's acknowledgements drain the
//! node's backlog.
//!
//! Needs root and iproute2 (`ip netns`); set `FLEETMESH_SKIP_NETNS=1` to skip on a
//! machine without them.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Netns, Node, Spec, eventually, get, wait_for};

const NAMES: [&str; 5] = ["r0", "r1", "r2", "r3", "cut"];
const CHANGES: usize = 1_000;
const CUT_FOR: Duration = Duration::from_secs(60);

fn spec(name: &str, listen: &[String], api: Option<&str>, bootstrap: Vec<String>) -> Spec {
    let mut s = Spec::new(name, "replay");
    s.env
        .push(("FLEETMESH__REGION__VOTERS".into(), NAMES.join(",")));
    s.env
        .push(("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "1000".into()));
    for l in listen {
        s.extra_args.extend(["--listen".into(), l.clone()]);
    }
    if let Some(a) = api {
        s.extra_args.extend(["--api-listen".into(), a.into()]);
    }
    s.bootstrap = bootstrap;
    s
}

/// The master's intake counters for `origin`: (mark, applied, skipped).
pub(crate) async fn intake(master: &Node, origin: &str) -> (u64, u64, u64) {
    let r: Value = get(&master.url("/api/v1/region")).await;
    let o = &r["intake"][origin];
    (
        o["mark"].as_u64().unwrap_or(0),
        o["applied"].as_u64().unwrap_or(0),
        o["skipped"].as_u64().unwrap_or(0),
    )
}

/// Waits until `node` has journaled spikes and the master acknowledged all of them.
pub(crate) async fn all_acknowledged(node: &Node, what: &str) {
    eventually(what, CONVERGE, || async {
        let s = node.node().await.sync.ok_or("no sync report")?;
        if s.last_seq > 0 && s.acked == s.last_seq {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
}

async fn master_of(nodes: &[&Node]) -> Option<String> {
    let mut seen = None;
    for n in nodes {
        let r: Value = get(&n.url("/api/v1/region")).await;
        let m = r["master"]["peer_id"].as_str()?.to_string();
        if seen.as_ref().is_some_and(|s| *s != m) {
            return None;
        }
        seen = Some(m);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_for_60_s_delivers_all_1000_changes_exactly_once() {
    if std::env::var_os("FLEETMESH_SKIP_NETNS").is_some() {
        eprintln!("skipped: FLEETMESH_SKIP_NETNS is set");
        return;
    }
    let ns = Netns::create(7).unwrap_or_else(|e| {
        panic!("this test needs root and iproute2 (set FLEETMESH_SKIP_NETNS=1 to skip): {e}")
    });
    let outer = format!("/ip4/{}/tcp/0", ns.outer);
    let r0 = Node::start(spec(
        NAMES[0],
        &["/ip4/127.0.0.1/tcp/0".into(), outer.clone()],
        None,
        vec![],
    ));
    let boot = r0.addr(true);
    let mut rest = Vec::new();
    for name in &NAMES[1..4] {
        rest.push(Node::start(spec(
            name,
            &["/ip4/127.0.0.1/tcp/0".into(), outer.clone()],
            None,
            vec![boot.clone()],
        )));
    }
    let via_veth = r0
        .runtime
        .listen
        .iter()
        .find(|a| a.contains(&ns.outer))
        .map(|a| format!("{a}/p2p/{}", r0.peer_id()))
        .expect("r0 listens on the veth address");
    let mut cut_spec = spec(
        NAMES[4],
        &[format!("/ip4/{}/tcp/0", ns.inner)],
        Some(&format!("{}:0", ns.control)),
        vec![via_veth],
    );
    cut_spec.netns = Some(ns.name.clone());
    let cut = Node::start(cut_spec);
    let majority: Vec<&Node> = std::iter::once(&r0).chain(rest.iter()).collect();
    let everyone: Vec<&Node> = majority.iter().copied().chain([&cut]).collect();

    // A master all five agree on, and the cut-off-to-be node in sync with it.
    let cut = &cut;
    wait_for("one master for all five", CONVERGE, || {
        let everyone = everyone.clone();
        async move {
            master_of(&everyone)
                .await
                .ok_or("no agreed master".to_string())
        }
    })
    .await;
    all_acknowledged(cut, "the node's spikes acknowledged").await;
    // The master may be on either side; the test reads the majority side's master after
    // the cut (the cut node cannot stay master without a quorum).
    let before_last = cut.node().await.sync.expect("sync").last_seq;

    ns.cut();
    let cut_at = Instant::now();
    let etc = cut.dir.join("root/etc");
    for i in 0..CHANGES {
        std::fs::write(etc.join(format!("replay-{i:04}.conf")), format!("v {i}\n"))
            .expect("write a change");
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Away, the node knows it: journaling, nothing acknowledged (its API answers over the
    // namespace's control link).
    wait_for("the node aware it is cut off", CONVERGE, || async move {
        let s = cut.node().await.sync.ok_or("no sync report")?;
        let c = s.connectivity.map(|c| c.as_str());
        // (The detector may still be working through the burst: some backlog is enough.)
        if matches!(c, Some("disconnected" | "autonomous")) && s.backlog > 0 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    // The majority side keeps (or elects) a master while the node is away.
    let master_id = wait_for("a master on the majority side", CONVERGE, || {
        let majority = majority.clone();
        async move {
            match master_of(&majority).await {
                Some(m) if m != cut.peer_id() => Ok(m),
                other => Err(format!("master {other:?}")),
            }
        }
    })
    .await;
    let master = *majority
        .iter()
        .find(|n| n.peer_id() == master_id)
        .expect("the master is a majority node");
    let (mark_cut, applied_cut, skipped_cut) = intake(master, cut.peer_id()).await;
    assert!(
        mark_cut <= before_last + 1,
        "the master cannot have the changes made while the node was cut off (mark {mark_cut}, last before the cut {before_last})"
    );
    tokio::time::sleep(CUT_FOR.saturating_sub(cut_at.elapsed())).await;
    ns.heal();
    let healed_at = Instant::now();

    // Every change recorded while cut off is journaled with its number.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let seen = &seen;
    let last = wait_for(
        "the backlog acknowledged after the heal",
        CONVERGE,
        || async move {
            let s = cut.node().await.sync.ok_or("no sync report")?;
            if let Some(c) = s.connectivity {
                seen.lock().expect("lock").insert(c.as_str());
            }
            let (mark, _, _) = intake(master, cut.peer_id()).await;
            if s.acked == s.last_seq && mark == s.last_seq && s.backlog == 0 {
                Ok(s.last_seq)
            } else {
                Err(format!("node {s:?}, master mark {mark}"))
            }
        },
    )
    .await;
    let took = healed_at.elapsed();
    let files: Vec<Value> = get(&cut.url(&format!(
        "/api/v1/spikes?kind=file&since={before_last}&limit=10000"
    )))
    .await;
    let ours: Vec<u64> = files
        .iter()
        .filter(|s| s["subject"].as_str().is_some_and(|p| p.contains("replay-")))
        .filter_map(|s| s["seq"].as_u64())
        .collect();
    assert_eq!(
        ours.len(),
        CHANGES,
        "every change recorded once by the node"
    );
    assert!(ours.iter().all(|s| *s > mark_cut && *s <= last));
    let (mark, applied, skipped) = intake(master, cut.peer_id()).await;
    assert!(mark >= last, "mark {mark} below {last}");
    assert_eq!(skipped, skipped_cut, "nothing lost");
    // The ledger releases each number once, in order: what it applied since the cut is
    // exactly the numbers between the marks.
    assert_eq!(
        applied - applied_cut,
        mark - mark_cut,
        "each spike applied exactly once"
    );
    // Declared dead while away, it came back as a new incarnation: alive to the master
    // again, and live by its own account.
    eventually(
        "the node alive again for the master",
        CONVERGE,
        || async move {
            let r: Value = get(&master.url("/api/v1/region")).await;
            let me = r["members"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["peer_id"] == cut.peer_id()))
                .cloned()
                .unwrap_or_default();
            let own = cut.node().await.sync.and_then(|s| s.connectivity);
            if me["status"] == "alive"
                && me["connectivity"] == "live"
                && own.map(|c| c.as_str()) == Some("live")
            {
                Ok(())
            } else {
                Err(format!("master sees {me}, node says {own:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "cut off {:?}, {} spikes (1,000 file changes) acknowledged {:?} after the heal; states seen meanwhile: {:?}",
        CUT_FOR,
        last - mark_cut,
        took,
        seen.lock().expect("lock")
    );
}
