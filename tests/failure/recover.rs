//! Outage recovery: three of a region's five voters are gone for good, so the two
//! survivors can never elect a master again. `fleetmesh region recover`, run on a stopped
//! survivor's data dir, refuses while a master is reachable or while that node runs, and
//! otherwise founds the region anew with the survivors, in a higher term: once restarted,
//! they agree on a master again.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::founding::{master_when, region, spec};
use crate::harness::{BIN, CONVERGE, Node, Spec};
use crate::master::agreed;

fn recover(dir: &std::path::Path, peers: &[&Node]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["region", "recover", "--data-dir"]).arg(dir);
    for p in peers {
        cmd.args(["--peer", &p.runtime.api]);
    }
    let out = cmd.output().expect("fleetmesh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn again(node: &Node, seed: &Node) -> Spec {
    let mut s = spec(&node.name, Some(seed.addr(true)));
    s.dir = Some(node.dir.clone());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_of_a_lost_majority_recover_their_region() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let names = ["v0", "v1", "v2", "v3", "v4"];
    // Data dirs that outlive a stop, so that a stopped node can be recovered.
    let mut nodes: Vec<Node> = Vec::new();
    for name in names {
        let mut s = spec(name, nodes.first().map(|n| n.addr(true)));
        s.dir = Some(tmp.path().join(name));
        nodes.push(Node::start(s));
    }
    let (_, r) = master_when(&nodes, "five voters", |r| {
        r["voters"].as_array().is_some_and(|v| v.len() == 5)
    })
    .await;
    let old_term = r["term"].as_u64().expect("term");
    let master = r["master"]["peer_id"].as_str().expect("master").to_string();
    // Survivors: two that are not the master.
    let survivors: Vec<usize> = (0..5)
        .filter(|&i| nodes[i].peer_id() != master)
        .take(2)
        .collect();
    let victims: Vec<usize> = (0..5).filter(|i| !survivors.contains(i)).collect();

    // Refused while a master is reachable: a stopped victim that is not the master (stopping
    // the master would leave the peers electing, which is refused for another reason), with a
    // live peer.
    let first = *victims
        .iter()
        .find(|&&i| nodes[i].peer_id() != master)
        .expect("a victim that is not the master");
    nodes[first].stop();
    let (code, text) = recover(&nodes[first].dir, &[&nodes[survivors[0]]]);
    assert_eq!(code, 2, "refused while a master answers: {text}");
    assert!(text.contains("reports a master"), "{text}");
    // Refused while the node itself runs.
    let (code, text) = recover(&nodes[survivors[0]].dir, &[&nodes[survivors[1]]]);
    assert_eq!(code, 2, "refused while the node runs: {text}");
    assert!(text.contains("is running"), "{text}");

    // Three voters gone for good.
    for &v in victims.iter().filter(|&&v| v != first) {
        nodes[v].kill9();
    }
    let t = Instant::now();
    loop {
        let reasons: Vec<String> =
            futures::future::join_all(survivors.iter().map(|&i| region(&nodes[i])))
                .await
                .iter()
                .map(|r| {
                    r["no_master_reason"]["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
        if reasons.iter().all(|r| r == "quorum_lost") {
            break;
        }
        assert!(
            t.elapsed() < CONVERGE,
            "survivors never saw the quorum lost: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Recover on the survivor with the longer committed log.
    let commits: Vec<u64> = futures::future::join_all(survivors.iter().map(|&i| region(&nodes[i])))
        .await
        .iter()
        .map(|r| r["commit"].as_u64().unwrap_or(0))
        .collect();
    let (on, other) = if commits[0] >= commits[1] {
        (survivors[0], survivors[1])
    } else {
        (survivors[1], survivors[0])
    };
    nodes[on].stop();
    let (code, text) = recover(&nodes[on].dir, &[&nodes[other]]);
    assert_eq!(code, 0, "recovery: {text}");
    assert!(text.contains("recovered region"), "{text}");
    let restarted = Node::start(again(&nodes[on], &nodes[other]));
    let both = [&restarted, &nodes[other]];
    let (_, term) = agreed(&both, "after the recovery", old_term).await;
    eprintln!("recovered: term {old_term} -> {term}\n{text}");
    // Every survivor applies the recovery once it learns that it is committed.
    let mut want = vec![nodes[on].name.clone(), nodes[other].name.clone()];
    want.sort();
    for n in both {
        let want = want.clone();
        crate::harness::wait_for("the survivors are the voters", CONVERGE, || {
            let want = want.clone();
            async move {
                let r = region(n).await;
                let mut voters: Vec<String> = r["voters"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                voters.sort();
                if voters == want {
                    Ok(())
                } else {
                    Err(format!("{} sees voters {voters:?}", n.name))
                }
            }
        })
        .await;
    }
}
