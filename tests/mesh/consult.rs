//! Consultations at start-up on a real node: a lone node restarted after changes waits
//! for its region's view to settle (it is master a moment later) instead of deciding
//! each change alone, and changes made during a package-manager run recorded in its log
//! are judged an upgrade.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, get, wait_for};
use crate::policy::{GROUP, PASSWD, add_users, decision_where, policies};

/// A local `YYYY-MM-DD HH:MM:SS` as dpkg writes it, for `at` seconds since the epoch
/// (`date` reads the same time zone as the node).
fn local(at: u64) -> String {
    let out = Command::new("date")
        .arg("-d")
        .arg(format!("@{at}"))
        .arg("+%Y-%m-%d %H:%M:%S")
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

async fn wait_master(node: &Node) {
    wait_for("the lone node leads its region", CONVERGE, || async {
        let r: Value = get(&node.url("/api/v1/region")).await;
        if r["role"] == "master" {
            Ok(())
        } else {
            Err(format!("{r}"))
        }
    })
    .await
}

fn spec(data: &Path, policy: &Path) -> Spec {
    let mut spec = Spec::new("lone", "consult-lone");
    spec.dir = Some(data.to_path_buf());
    spec.env = vec![(
        "FLEETMESH__POLICY__DIR".into(),
        policy.display().to_string(),
    )];
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_restarted_after_an_upgrade_raises_no_autonomous_alert() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = policies(tmp.path());
    let data = tmp.path().join("lone");
    let root = data.join("root");
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("app")).expect("etc");
    std::fs::write(etc.join("passwd"), PASSWD).expect("passwd");
    std::fs::write(etc.join("group"), GROUP).expect("group");
    std::fs::write(etc.join("app/app.conf"), "v1\n").expect("app.conf");

    let mut node = Node::start(spec(&data, &policy));
    wait_master(&node).await;
    wait_for("the file baseline saved", CONVERGE, || async {
        data.join("baseline.rmp")
            .exists()
            .then_some(())
            .ok_or_else(|| "no baseline yet".to_string())
    })
    .await;
    assert!(node.stop().success());

    // While it is down, a package manager runs: it rewrites a file, adds one and two
    // system users, and logs its run. One more file is changed by hand, outside the run.
    let started = now_s();
    std::fs::write(etc.join("app/app.conf"), "v2\n").expect("app.conf");
    std::fs::write(etc.join("app/extra.conf"), "new\n").expect("extra.conf");
    add_users(&etc, &["_app", "_appworker"]);
    std::thread::sleep(Duration::from_millis(1100));
    let ended = now_s();
    let log = root.join("var/log/dpkg.log");
    std::fs::create_dir_all(log.parent().expect("parent")).expect("log dir");
    std::fs::write(
        &log,
        format!(
            "{} startup archives unpack\n{} install app:amd64 <none> 2.0\n{} startup packages configure\n{} status installed app:amd64 2.0\n",
            local(started),
            local(started),
            local(ended),
            local(ended),
        ),
    )
    .expect("dpkg log");
    let by_hand = etc.join("app/by-hand.conf");
    std::fs::write(&by_hand, "edited\n").expect("by-hand.conf");
    std::fs::File::options()
        .write(true)
        .open(&by_hand)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
        .expect("an hour-old edit");

    let node = Node::start(spec(&data, &policy));
    for (kind, subject) in [
        ("file", "/etc/app/app.conf"),
        ("file", "/etc/app/extra.conf"),
        ("user", "_app"),
        ("user", "_appworker"),
    ] {
        let d = decision_where(&node, &format!("{kind} {subject}"), |d| {
            d["kind"] == kind && d["subject"] == subject
        })
        .await;
        assert_eq!(d["decision"], "approved", "{d}");
        assert_eq!(d["rule"], "upgrade:/var/log/dpkg.log", "{d}");
    }
    // The change outside the run is consulted: it waits for the node to lead its region
    // and is answered by it as master, not by the autonomous default.
    let d = wait_for("the hand edit settled", CONVERGE, || async {
        let list: Vec<Value> = get(&node.url("/api/v1/decisions?limit=10000")).await;
        list.into_iter()
            .find(|d| d["subject"] == "/etc/app/by-hand.conf" && d["settled"].is_object())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(d["decision"], "consult", "{d}");
    assert_eq!(d["settled"]["by"], "master", "{d}\n{}", node.log());
    eprintln!("waited for the master: {} us", d["settled"]["latency_us"]);

    let status: Value = get(&node.url("/api/v1/policy")).await;
    assert_eq!(status["counts"]["autonomous"], 0, "{status}");
    let alerts: Value = get(&node.url("/api/v1/alerts?limit=1000")).await;
    let autonomous: Vec<&Value> = alerts["alerts"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["rule"] == "autonomous").collect())
        .unwrap_or_default();
    assert!(autonomous.is_empty(), "{autonomous:?}");
    assert!(
        !node.log().contains("deciding autonomously"),
        "{}",
        node.log()
    );
}
