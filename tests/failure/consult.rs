//! Consultations across a real master failover: a server that may never be master
//! consults the region's master about every file it sees change; the master is killed
//! with SIGKILL while consultations are in flight and changes keep coming. Nothing is
//! decided by the autonomous default: what the dead master did not answer is sent again
//! to the next one, and every change is settled once, by a master.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::founding::region;
use crate::harness::{CONVERGE, Node, Spec, get, others, wait_for};
use crate::master::agreed;

const REGION: &str = "consult-failover";
/// Changes before the kill: one to warm up, then a burst right before it.
const WARM: usize = 1;
const BURST: usize = 40;
/// Changes after the kill, one every [`PACE`], across the failover.
const AFTER: usize = 30;
const PACE: Duration = Duration::from_millis(200);

/// The shipped policies; with `approve`, the web role's also approves `/etc/app/**` (the
/// masters' judgement). Without, no rule matches those files: the built-in default for
/// files is `consult`.
pub fn policy_dir(dir: &Path, approve: bool) -> PathBuf {
    std::fs::create_dir_all(dir).expect("policy dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy");
    for role in ["web", "baseline", "database"] {
        let name = format!("{role}.toml");
        std::fs::copy(shipped.join(&name), dir.join(&name)).expect("copy policy");
    }
    if approve {
        let web = dir.join("web.toml");
        let mut text = std::fs::read_to_string(&web).expect("web policy");
        text.push_str(
            "\n[[rules]]\nname = \"app-files\"\ndecision = \"approved\"\n\
             reason = \"the application's configuration\"\nkinds = [\"file\"]\n\
             subjects = [\"/etc/app/**\"]\n",
        );
        std::fs::write(web, text).expect("web policy");
    }
    dir.to_path_buf()
}

/// A node of a consultation test's region: `policy` is its policy dir, `eligible` whether
/// it may become master; only its watch root's changes are consulted (not this machine's
/// processes, listeners or metrics).
pub fn consulting(
    region: &str,
    name: &str,
    dir: PathBuf,
    policy: &Path,
    eligible: bool,
    boot: Option<String>,
) -> Spec {
    let mut s = Spec::new(name, region);
    s.dir = Some(dir);
    s.bootstrap = boot.into_iter().collect();
    s.env.extend([
        ("FLEETMESH__REGION__BOOTSTRAP_EXPECT".into(), "3".into()),
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "500".into()),
        (
            "FLEETMESH__POLICY__DIR".into(),
            policy.display().to_string(),
        ),
        (
            "FLEETMESH__REGION__MASTER_ELIGIBLE".into(),
            eligible.to_string(),
        ),
    ]);
    for k in [
        "FLEETMESH__PROBES__PROCESS_POLL_MS",
        "FLEETMESH__PROBES__NETWORK_POLL_MS",
        "FLEETMESH__METRICS__INTERVAL_MS",
    ] {
        s.env.push((k.into(), "3600000".into()));
    }
    s
}

/// Starts `n` nodes that may be master, `c0`..`c{n-1}`, under `dir`, each with `policy`
/// and the spec `spec` makes; the first is the others' bootstrap.
pub fn start_masters(
    n: usize,
    dir: &Path,
    policy: &Path,
    spec: impl Fn(&str, PathBuf, &Path, bool, Option<String>) -> Spec,
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let boot = nodes.first().map(|n| n.addr(true));
        let name = format!("c{i}");
        nodes.push(Node::start(spec(
            &name,
            dir.join(&name),
            policy,
            true,
            boot,
        )));
    }
    nodes
}

fn spec(name: &str, dir: PathBuf, policy: &Path, eligible: bool, boot: Option<String>) -> Spec {
    let mut s = consulting(REGION, name, dir, policy, eligible, boot);
    // A bound, not a goal: on two loaded cores an election after a kill may take a few
    // seconds, and a consultation gives up (decides autonomously) only after this long
    // without a usable master. The design's point is that a failover costs no
    // autonomous decision; how fast it goes is a benchmark's business.
    s.env.push((
        "FLEETMESH__FLEET__CONSULT_TIMEOUT_MS".into(),
        "15000".into(),
    ));
    // The consultation client's re-sends are logged at debug.
    s.env.push((
        "FLEETMESH__LOG__FILTER".into(),
        "info,libp2p=warn,fleetmesh_actors::consult=debug".into(),
    ));
    s
}

fn signal(node: &Node, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(node.child.id().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {}", node.child.id());
}

/// Writes `/etc/app/f<i>.conf` under `root` in one step (renamed into place from outside
/// the watched tree), so that each file is one change.
fn change(root: &Path, i: usize) {
    let staged = root.join(format!("staging/f{i:03}"));
    std::fs::write(&staged, format!("setting = {i}\n")).expect("staged file");
    std::fs::rename(&staged, root.join(format!("etc/app/f{i:03}.conf"))).expect("rename");
}

/// The node's decisions about `/etc/app/*` files, by subject.
async fn app_decisions(node: &Node) -> std::collections::BTreeMap<String, Value> {
    let list: Vec<Value> = get(&node.url("/api/v1/decisions?limit=10000")).await;
    list.into_iter()
        .filter(|d| {
            d["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("/etc/app/"))
        })
        .map(|d| (d["subject"].as_str().unwrap_or_default().to_string(), d))
        .collect()
}

/// Waits until the node has settled the changes `0..n`; returns their decisions.
async fn settled(node: &Node, n: usize, bound: Duration) -> Vec<Value> {
    wait_for(&format!("{n} changes settled"), bound, || async {
        let all = app_decisions(node).await;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for i in 0..n {
            let subject = format!("/etc/app/f{i:03}.conf");
            match all.get(&subject) {
                Some(d) if d["settled"].is_object() => out.push(d.clone()),
                _ => missing.push(subject),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(format!(
                "{} unsettled, first {:?}",
                missing.len(),
                missing[0]
            ))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consultations_in_flight_when_the_master_is_killed_go_to_the_next_master() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let masters_policy = policy_dir(&tmp.path().join("policy-masters"), true);
    let own_policy = policy_dir(&tmp.path().join("policy-w"), false);

    // Four nodes that may be master, and `w`, which consults and never leads.
    let mut nodes = start_masters(4, tmp.path(), &masters_policy, spec);
    let w_dir = tmp.path().join("w");
    let root = w_dir.join("root");
    std::fs::create_dir_all(root.join("etc/app")).expect("etc/app");
    std::fs::create_dir_all(root.join("staging")).expect("staging");
    let w = Node::start(spec(
        "w",
        w_dir,
        &own_policy,
        false,
        Some(nodes[0].addr(true)),
    ));

    // The region formed and `w` follows its master.
    let all: Vec<&Node> = nodes.iter().chain(std::iter::once(&w)).collect();
    let (master, term) = agreed(&all, "the region's first master", 0).await;
    let m = nodes
        .iter()
        .position(|n| n.peer_id() == master)
        .expect("the master is one of the eligible four");

    // One change to warm up: consulted, answered by the master.
    change(&root, 0);
    let warm = settled(&w, WARM, CONVERGE).await;
    assert_eq!(warm[0]["decision"], "consult", "{}", warm[0]);
    assert_eq!(warm[0]["settled"]["by"], "master", "{}", warm[0]);

    // A burst while the master is frozen (SIGSTOP; its connections stay open), so that
    // its consultations are surely in flight when it is killed; frozen briefly, well
    // within an election timeout and the consultation timeout.
    signal(&nodes[m], "STOP");
    for i in WARM..WARM + BURST {
        change(&root, i);
    }
    let asked = Instant::now();
    loop {
        let seen = app_decisions(&w).await.len();
        if seen >= WARM + BURST || asked.elapsed() > Duration::from_secs(3) {
            eprintln!("{seen} changes judged before the kill");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[m].kill9();
    let killed = Instant::now();
    // Changes keep coming across the failover.
    let producer = {
        let root = root.clone();
        std::thread::spawn(move || {
            for i in WARM + BURST..WARM + BURST + AFTER {
                change(&root, i);
                std::thread::sleep(PACE);
            }
        })
    };
    let survivors: Vec<&Node> = others(&nodes, m)
        .into_iter()
        .chain(std::iter::once(&w))
        .collect();
    let (new_master, new_term) = agreed(&survivors, "a new master", term).await;
    eprintln!("new master after {:?}", killed.elapsed());
    producer.join().expect("producer");

    let total = WARM + BURST + AFTER;
    let decisions = settled(&w, total, 2 * CONVERGE).await;
    let mut by_term: std::collections::BTreeMap<u64, usize> = Default::default();
    for (i, d) in decisions.iter().enumerate() {
        let s = &d["settled"];
        assert_eq!(d["decision"], "consult", "{d}");
        assert_eq!(s["by"], "master", "change {i} not decided by a master: {d}");
        assert_ne!(s["rule"], "autonomous", "{d}");
        assert_eq!(s["decision"], "approved", "{d}");
        assert_eq!(s["held"], false, "{d}");
        assert!(
            s["rule"]
                .as_str()
                .is_some_and(|r| r.ends_with("#app-files")),
            "the masters' policy decided: {d}"
        );
        assert_eq!(s["region"], REGION, "{d}");
        let t = s["term"].as_u64().expect("a master's term");
        assert!(t == term || t == new_term, "term {t}: {d}");
        *by_term.entry(t).or_default() += 1;
        if i >= WARM + BURST {
            // Made after the kill: only the new master can have answered.
            assert_eq!(t, new_term, "change {i} after the kill: {d}");
        }
    }
    eprintln!("settled by term: {by_term:?} (old {term}, new {new_term})");

    // Each change was settled once: as many consultations as changes, each settled by
    // a master and none by the default.
    let status: Value = get(&w.url("/api/v1/policy")).await;
    let counts = &status["counts"];
    assert_eq!(counts["consult"].as_u64(), Some(total as u64), "{status}");
    assert_eq!(
        counts["settled_by_master"].as_u64(),
        Some(total as u64),
        "{status}"
    );
    assert_eq!(counts["autonomous"].as_u64(), Some(0), "{status}");
    let alerts: Value = get(&w.url("/api/v1/alerts?since=0&limit=1000")).await;
    let autonomous: Vec<&Value> = alerts["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| {
                    a["rule"] == "autonomous"
                        || a["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("no master known"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(autonomous.is_empty(), "{autonomous:#?}");
    let log = w.log();
    assert!(!log.contains("deciding autonomously"), "{log}");
    // The path under test was taken: requests to the dead master failed in transport and
    // were sent again.
    let resent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("consultation failed; asking the next master"))
        .filter(|l| l.contains(&master))
        .collect();
    eprintln!(
        "{} requests to the dead master failed and were sent again; first: {:?}, last: {:?}",
        resent.len(),
        resent.first(),
        resent.last()
    );
    assert!(!resent.is_empty(), "{log}");
    let view = region(&w).await;
    assert_eq!(view["master"]["peer_id"], new_master.as_str(), "{view:#}");
}
