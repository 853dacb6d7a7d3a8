//! Cross-fleet anomaly on real nodes: four web servers of one region, each reading its own
//! fake proc tree; one has a one-minute load far above the others'. That node, and only
//! that node, raises one anomaly spike for `load.1m`, decided a violation, and does not
//! raise it again while the deviation lasts (the cooldown is the default ten minutes).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, get, metric, wait_for};

const STAT: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 100 0 50 800 50 0 0 0 0 0\nintr 1\nctxt 1\nbtime 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
const MEMINFO: &str = "MemTotal:        8000000 kB\nMemFree:         2000000 kB\nMemAvailable:    4000000 kB\nBuffers:          100000 kB\nCached:          1000000 kB\n";
const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0: 500000 400 0 0 0 0 0 0 300000 300 0 0 0 0 0 0\n";

/// A proc tree with the given one-minute load (the 5 and 15 minute loads are the same on
/// every node).
fn proc_root(dir: &Path, load1: f64) -> PathBuf {
    let root = dir.join("proc");
    std::fs::create_dir_all(root.join("net")).expect("proc dir");
    std::fs::write(root.join("stat"), STAT).expect("stat");
    std::fs::write(root.join("meminfo"), MEMINFO).expect("meminfo");
    std::fs::write(
        root.join("loadavg"),
        format!("{load1:.2} 0.40 0.30 1/120 4242\n"),
    )
    .expect("loadavg");
    std::fs::write(root.join("net/dev"), NET_DEV).expect("net/dev");
    root
}

fn start(name: &str, dir: &Path, load1: f64, bootstrap: Option<String>) -> Node {
    let data = dir.join(name);
    let root = proc_root(&data, load1);
    let mut spec = Spec::new(name, "anomaly");
    spec.role = "web".into();
    spec.dir = Some(data);
    spec.bootstrap = bootstrap.into_iter().collect();
    spec.env = vec![
        (
            "FLEETMESH__METRICS__PROC_ROOT".into(),
            root.display().to_string(),
        ),
        // Steady values are re-sent every 2 s, so that a peer that joins late has them
        // soon; they go stale after 10 s.
        ("FLEETMESH__METRICS__MAX_SILENCE_S".into(), "2".into()),
        ("FLEETMESH__ANOMALY__STALE_S".into(), "10".into()),
        ("FLEETMESH__ANOMALY__PERSIST_S".into(), "2".into()),
        // Disk use comes from the real mounts, which every test node shares (and other
        // processes write to): only the metrics of the fake proc trees are judged.
        (
            "FLEETMESH__ANOMALY__METRICS".into(),
            "load.*,mem.*,cpu.*,net.*".into(),
        ),
    ];
    Node::start(spec)
}

/// The node's anomaly spikes.
async fn anomaly_spikes(node: &Node) -> Vec<Value> {
    get(&node.url("/api/v1/spikes?kind=anomaly")).await
}

/// The node's `/api/v1/anomalies` entry for `metric`, if it has one.
async fn entry(node: &Node, metric: &str) -> Option<Value> {
    let report: Value = get(&node.url("/api/v1/anomalies")).await;
    report["metrics"]
        .as_array()?
        .iter()
        .find(|e| e["metric"] == metric)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_load_deviates_from_its_role_peers_raises_one_anomaly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let loads = [0.50, 0.60, 0.55, 8.00];
    let first = start("web-0", tmp.path(), loads[0], None);
    let seed = first.addr(true);
    let mut nodes = vec![first];
    for (i, load) in loads.iter().enumerate().skip(1) {
        nodes.push(start(
            &format!("web-{i}"),
            tmp.path(),
            *load,
            Some(seed.clone()),
        ));
    }
    let odd = &nodes[3];

    // The deviating node raises an anomaly for load.1m, decided a violation by default.
    let decision = wait_for("an anomaly decision on web-3", CONVERGE, || async {
        let list: Vec<Value> = get(&odd.url("/api/v1/decisions?limit=10000")).await;
        if let Some(d) = list.into_iter().find(|d| d["kind"] == "anomaly") {
            return Ok(d);
        }
        Err(format!(
            "no anomaly yet; load.1m: {:?}",
            entry(odd, "load.1m").await
        ))
    })
    .await;
    assert_eq!(decision["subject"], "load.1m", "{decision}");
    assert_eq!(decision["decision"], "violation", "{decision}");
    assert_eq!(decision["rule"], "builtin#defaults.anomaly", "{decision}");

    let spikes = anomaly_spikes(odd).await;
    assert_eq!(spikes.len(), 1, "{spikes:?}");
    let s = &spikes[0];
    assert_eq!(
        (&s["subject"], &s["severity"]),
        (&"load.1m".into(), &"high".into())
    );
    let field = |name: &str| s["fields"][name]["after"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(field("value"), 8.0, "{s}");
    assert_eq!(field("peers"), 3.0, "{s}");
    assert!((field("median") - 0.55).abs() < 1e-9, "{s}");
    assert!(field("z") > 3.0, "{s}");

    // The deviation goes on for three more persistence windows: no second raise (the
    // cooldown is ten minutes), and no other node raises anything.
    let (e, report) = wait_for("web-3 deviating 6 s past its raise", CONVERGE, || async {
        let e = entry(odd, "load.1m").await.ok_or("no entry")?;
        let last = e["last_raised_unix_ms"].as_u64().ok_or(format!("{e}"))?;
        let report: Value = get(&odd.url("/api/v1/anomalies")).await;
        let now = fleetmesh_actors::actor::unix_ms();
        if e["deviating_since_unix_ms"].is_u64() && now >= last + 6_000 {
            Ok((e, report))
        } else {
            Err(format!("{e}"))
        }
    })
    .await;
    assert_eq!(e["raised"], 1, "{e}");
    assert_eq!(report["raised"], 1, "{report}");
    assert_eq!(anomaly_spikes(odd).await.len(), 1, "not repeated");
    let text = odd.metrics().await;
    assert_eq!(metric(&text, "fleetmesh_anomalies_raised_total", ""), 1.0);

    for n in &nodes[..3] {
        let e = entry(n, "load.1m").await.expect("load.1m judged");
        assert_eq!(e["score"]["peers"], 3, "{}: {e}", n.name);
        assert!(
            e["score"]["z"].as_f64().is_some_and(|z| z.abs() <= 3.0),
            "{}: {e}",
            n.name
        );
        assert_eq!(e["raised"], 0, "{}: {e}", n.name);
        assert!(
            anomaly_spikes(n).await.is_empty(),
            "{} raised an anomaly",
            n.name
        );
    }

    for mut n in nodes {
        let st = n.stop();
        assert!(st.success(), "{} exited with {st}:\n{}", n.name, n.log());
    }
}
