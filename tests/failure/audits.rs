//! Peer audits on real nodes: a region of three voters; one node X and its auditor (the
//! owner of `audit:<X>`).
//!
//! (a) A file changed in X's watch root is reported by X, and the auditor finds the
//!     change in X's baseline explained by that spike: no alarm.
//! (b) X is stopped (SIGTERM); a file is changed and X's stored baseline is rewritten to
//!     match it, as an intruder who knows the agent would do, so that X does not report
//!     the change when it starts again. The auditor finds X's baseline digest changed
//!     with no file spike from X in between: a `critical` audit spike.
//! (c) X is killed (SIGKILL): the auditor does not hold its silence against it (no
//!     `unanswered` alarm, only the failure detector's verdict): it sees X suspect or
//!     dead, or the region declares X dead first and the master releases `audit:<X>`;
//!     either way the item is released in the end.
//!
//! Process and network polling and metrics are slowed down to one reading an hour, so
//! that the only spikes X publishes are its start-up metrics and its file changes: a
//! spike published in the instant before SIGTERM may never be gossiped (it is replayed to
//! the master only), and the auditor would rightly call that window inconclusive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetmesh_actors::files::Saved;
use fleetmesh_actors::spike::Digest;
use serde_json::Value;
use sha2::Digest as _;

use crate::harness::{CONVERGE, Node, Spec, get, string_map};

const NAMES: [&str; 3] = ["u0", "u1", "u2"];
const UNANSWERED_AFTER: u32 = 10;

fn spec(i: usize, dir: PathBuf, bootstrap: Option<String>) -> Spec {
    let mut s = Spec::new(NAMES[i], "audits");
    s.dir = Some(dir);
    for (k, v) in [
        ("FLEETMESH__REGION__VOTERS", NAMES.join(",")),
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS", "1000".into()),
        ("FLEETMESH__AUDIT__INTERVAL_S", "1".into()),
        (
            "FLEETMESH__AUDIT__UNANSWERED_AFTER",
            UNANSWERED_AFTER.to_string(),
        ),
        ("FLEETMESH__METRICS__INTERVAL_MS", "3600000".into()),
        ("FLEETMESH__PROBES__PROCESS_POLL_MS", "3600000".into()),
        ("FLEETMESH__PROBES__NETWORK_POLL_MS", "3600000".into()),
    ] {
        s.env.push((k.into(), v));
    }
    s.bootstrap = bootstrap.into_iter().collect();
    s
}

/// The committed assignments as `node` reports them.
async fn items(node: &Node) -> BTreeMap<String, String> {
    let a: Value = get(&node.url("/api/v1/assignments")).await;
    string_map(&a["items"])
}

/// `auditor`'s audit of `peer`, if it has one.
async fn audit(auditor: &Node, peer: &str) -> Option<Value> {
    let a: Value = get(&auditor.url("/api/v1/audits")).await;
    a["audits"]
        .as_array()?
        .iter()
        .find(|x| x["peer"] == peer)
        .cloned()
}

/// Waits until `check` holds for `auditor`'s audit of `peer`; returns it.
async fn audit_until(
    auditor: &Node,
    peer: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let a = audit(auditor, peer).await;
        if let Some(a) = a.as_ref().filter(|a| check(a)) {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{}'s audit of {peer} never {what}; it is {a:?}\n{}",
            auditor.name,
            auditor.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn counter(a: &Value, name: &str) -> u64 {
    a["counters"][name].as_u64().unwrap_or(0)
}

/// The audit spikes `node` published about `peer`.
async fn audit_spikes(node: &Node, peer: &str) -> Vec<Value> {
    let all: Vec<Value> = get(&node.url("/api/v1/spikes?kind=audit&limit=10000")).await;
    all.into_iter().filter(|s| s["subject"] == peer).collect()
}

/// The file spikes `node` published about `path` with a sequence number above `since`.
async fn file_spikes(node: &Node, path: &str, since: u64) -> Vec<Value> {
    let all: Vec<Value> = get(&node.url("/api/v1/spikes?kind=file&limit=10000")).await;
    all.into_iter()
        .filter(|s| s["subject"] == path && s["seq"].as_u64().is_some_and(|q| q > since))
        .collect()
}

async fn last_seq(node: &Node) -> u64 {
    let all: Vec<Value> = get(&node.url("/api/v1/spikes?limit=10000")).await;
    all.iter()
        .filter_map(|s| s["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Rewrites the entry of `path` in the baseline stored in `data_dir` to match `contents`:
/// what an intruder who knows the agent's format would do to hide a change.
fn forge_baseline(data_dir: &Path, path: &str, contents: &[u8]) {
    let file = data_dir.join("baseline.rmp");
    let bytes = std::fs::read(&file).expect("stored baseline");
    let mut saved: Saved = rmp_serde::from_slice(&bytes).expect("baseline decodes");
    let entry = saved
        .baseline
        .get_mut(path)
        .unwrap_or_else(|| panic!("{path} not in the stored baseline"));
    entry.size = contents.len() as u64;
    entry.digest = Some(Digest(sha2::Sha256::digest(contents).into()));
    std::fs::write(&file, rmp_serde::to_vec(&saved).expect("baseline encodes"))
        .expect("baseline written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_accepts_reported_changes_catches_a_hidden_one_and_spares_the_dead() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = NAMES.iter().map(|n| tmp.path().join(n)).collect();
    let mut nodes = vec![Node::start(spec(0, dirs[0].clone(), None))];
    let seed = nodes[0].addr(true);
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        nodes.push(Node::start(spec(i, dir.clone(), Some(seed.clone()))));
    }
    // X is a node that is not the seed, so that it can come back through the seed.
    let x = 2;
    let x_peer = nodes[x].peer_id().to_string();
    let item = format!("audit:{x_peer}");
    let deadline = Instant::now() + CONVERGE;
    let owner = loop {
        let all = items(&nodes[0]).await;
        if let Some(o) = all.get(&item)
            && NAMES.len() == all.keys().filter(|k| k.starts_with("audit:")).count()
        {
            break o.clone();
        }
        assert!(Instant::now() < deadline, "{item} never assigned: {all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let auditor = nodes
        .iter()
        .position(|n| n.peer_id() == owner)
        .expect("the auditor is one of the nodes");
    assert_ne!(auditor, x, "a node never audits itself");
    eprintln!("{} audits {}", NAMES[auditor], NAMES[x]);
    let first = audit_until(&nodes[auditor], &x_peer, "answered twice", |a| {
        counter(a, "answers") >= 2
    })
    .await;
    assert_eq!(first["name"], NAMES[x]);
    assert_eq!(first["status"], "alive");
    assert!(first["last_answer"]["entries"].as_u64().is_some());

    // (a) A change X reports: the auditor finds it explained.
    let subject = "/etc/audit-demo.conf";
    let on_disk = dirs[x].join("root/etc/audit-demo.conf");
    std::fs::write(&on_disk, b"listen 80\n").expect("write");
    let deadline = Instant::now() + CONVERGE;
    while file_spikes(&nodes[x], subject, 0).await.is_empty() {
        assert!(Instant::now() < deadline, "X never reported {subject}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reported = audit_until(&nodes[auditor], &x_peer, "saw the reported change", |a| {
        counter(a, "reported") >= 1
    })
    .await;
    assert_eq!(counter(&reported, "unreported"), 0, "{reported}");
    // One more answer after it: the auditor's base now includes the change.
    let answers = counter(&reported, "answers");
    audit_until(&nodes[auditor], &x_peer, "answered again", |a| {
        counter(a, "answers") > answers && a["verdict"] != "settling"
    })
    .await;
    assert!(
        audit_spikes(&nodes[auditor], &x_peer).await.is_empty(),
        "no alarm for a reported change"
    );

    // (b) X is stopped; the file and X's stored baseline are changed to match.
    let x_seq = last_seq(&nodes[x]).await;
    let before = audit(&nodes[auditor], &x_peer).await.expect("audit");
    nodes[x].stop();
    let forged = b"listen 80\nproxy_pass http://evil.example\n";
    std::fs::write(&on_disk, forged).expect("write");
    forge_baseline(&dirs[x], subject, forged);
    nodes[x] = Node::start(spec(x, dirs[x].clone(), Some(seed.clone())));
    assert_eq!(nodes[x].peer_id(), x_peer, "same identity");
    let caught = audit_until(&nodes[auditor], &x_peer, "caught the hidden change", |a| {
        counter(a, "unreported") >= 1
    })
    .await;
    assert_eq!(caught["verdict"], "unreported", "{caught}");
    assert_ne!(
        caught["last_answer"]["digest"], before["last_answer"]["digest"],
        "the digest changed"
    );
    let alarms = audit_spikes(&nodes[auditor], &x_peer).await;
    let alarm = alarms
        .iter()
        .find(|s| s["label"] == "files_changed_unreported")
        .unwrap_or_else(|| panic!("no audit spike: {alarms:?}"));
    assert_eq!(alarm["severity"], "critical");
    assert_eq!(alarm["kind"], "audit");
    assert_eq!(alarm["fields"]["peer_name"]["after"], NAMES[x]);
    assert_eq!(
        alarm["fields"]["problem"]["after"],
        "files_changed_without_being_reported"
    );
    // The premise: X itself said nothing about the file since it came back.
    assert!(
        file_spikes(&nodes[x], subject, x_seq).await.is_empty(),
        "X reported the change after all"
    );

    // (c) X is killed: the auditor sees X down, raises no alarm for its silence, and the
    // region, having declared X dead, releases the item.
    let seen = counter(&caught, "unanswered_while_down");
    nodes[x].kill9();
    // Either the auditor sees X down first, or the region declares X dead and releases
    // the item before the auditor's next round: both leave X's silence unblamed.
    let down = audit_until(
        &nodes[auditor],
        &x_peer,
        "saw X down or lost the item",
        |a| {
            a["assigned"] == false
                || (a["status"] != "alive"
                    && a["status"] != "joining"
                    && counter(a, "unanswered_while_down") > seen)
        },
    )
    .await;
    eprintln!("after the kill: {down}");
    // Twice the time an alive peer would need to be reported.
    tokio::time::sleep(Duration::from_secs(2 * u64::from(UNANSWERED_AFTER))).await;
    let later = audit(&nodes[auditor], &x_peer).await.expect("audit kept");
    assert_eq!(later["assigned"], false, "{later}");
    assert_eq!(items(&nodes[auditor]).await.get(&item), None, "released");
    assert!(
        audit_spikes(&nodes[auditor], &x_peer)
            .await
            .iter()
            .all(|s| s["label"] != "audit_unanswered"),
        "a dead peer's silence is the failure detector's business: {later}"
    );
    assert!(
        counter(&later, "unanswered") < u64::from(UNANSWERED_AFTER),
        "{later}"
    );
}
