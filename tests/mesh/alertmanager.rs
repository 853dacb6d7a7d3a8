//! The `alertmanager` sink against a real Prometheus Alertmanager (Debian's
//! `prometheus-alertmanager`, started here on a loopback port, with no cluster port): a
//! violation on a node shows in Alertmanager with fleetmesh's labels and annotations,
//! stays there past Alertmanager's `resolve_timeout` because the node pushes it again while
//! it is open, and leaves it (resolved, with its `endsAt`) once an operator resolves it in
//! fleetmesh.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, wait_for};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// Alertmanager's `resolve_timeout` here (5m by default).
const RESOLVE_TIMEOUT: &str = "3s";

/// An Alertmanager on 127.0.0.1, stopped when dropped.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        assert!(
            std::path::Path::new(ALERTMANAGER).exists(),
            "this test needs {ALERTMANAGER}: run scripts/test.sh (it installs Debian's prometheus-alertmanager)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("alertmanager.yml");
        // Every alert to a receiver that sends nothing: the test reads the API. An alert
        // nobody repeats resolves after RESOLVE_TIMEOUT.
        std::fs::write(
            &config,
            format!(
                "global:\n  resolve_timeout: {RESOLVE_TIMEOUT}\n\
                 route:\n  receiver: keep\nreceivers:\n  - name: keep\n"
            ),
        )
        .expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No cluster port: nothing but the API listens.
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("alertmanager.log")).expect("log"),
            ))
            .spawn()
            .expect("alertmanager starts");
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        wait_for("alertmanager ready", Duration::from_secs(30), || {
            let ready = ready.clone();
            async move {
                match reqwest::get(&ready).await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        Alertmanager {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_reaches_alertmanager_with_its_labels_and_resolves_there() {
    let am = Alertmanager::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts.route]\ngroup_wait_ms = 0\ngroup_interval_ms = 500\n\
             [[alerts.receivers]]\nkind = \"alertmanager\"\nurl = \"{}\"\nrepush_ms = 1000\n",
            am.url
        ),
    )
    .expect("config");
    let mut spec = Spec::new("am-web", "am");
    spec.extra_args = vec!["--config".into(), config.display().to_string()];
    let node = Node::start(spec);
    wait_for("the node ready", CONVERGE, || async {
        match reqwest::get(node.url("/readyz")).await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // sudoers must not change on a web server: a violation.
    std::fs::write(node.dir.join("root/etc/sudoers"), "root ALL=(ALL) ALL\n").expect("write");
    let url = format!("{}/api/v2/alerts", am.url);
    let alert = wait_for("the alert in Alertmanager", CONVERGE, || {
        let url = url.clone();
        async move {
            let list: Vec<Value> = reqwest::get(&url)
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            list.into_iter()
                .find(|a| a["labels"]["subject"] == "/etc/sudoers")
                .ok_or_else(|| "not yet".to_string())
        }
    })
    .await;
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "policy_violation", "{alert}");
    assert_eq!(labels["node"], "am-web", "{alert}");
    assert_eq!(labels["region"], "am", "{alert}");
    assert_eq!(labels["role"], "web", "{alert}");
    assert_eq!(labels["kind"], "file", "{alert}");
    assert_eq!(labels["severity"], "medium", "{alert}");
    assert!(
        labels["rule"]
            .as_str()
            .is_some_and(|r| r.contains("login-and-privilege-files")),
        "{alert}"
    );
    assert!(
        alert["annotations"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sudo")),
        "{alert}"
    );
    let id = alert["annotations"]["fleetmesh_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 32, "the fleetmesh alert's id: {alert}");
    assert_eq!(alert["annotations"]["category"], "file", "{alert}");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert!(
        alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:") && u.ends_with("#alerts")),
        "{alert}"
    );

    // Open in fleetmesh, pushed again every second: still active in Alertmanager well
    // past its resolve_timeout, and updated meanwhile.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let list: Vec<Value> = reqwest::get(&url)
        .await
        .expect("alerts listed")
        .json()
        .await
        .expect("json");
    let later = list
        .iter()
        .find(|a| a["labels"]["subject"] == "/etc/sudoers")
        .unwrap_or_else(|| panic!("resolved by Alertmanager's timeout: {list:?}"));
    assert_eq!(later["status"]["state"], "active", "{later}");
    assert!(
        later["updatedAt"].as_str() > alert["updatedAt"].as_str(),
        "pushed again: {} then {}",
        alert["updatedAt"],
        later["updatedAt"]
    );

    // An operator resolves it in fleetmesh: Alertmanager is told (endsAt) and drops it
    // from its active alerts.
    let client = reqwest::Client::new();
    let answer = client
        .post(node.url(&format!("/api/v1/alerts/{id}/resolve")))
        .json(&serde_json::json!({"by": "test"}))
        .send()
        .await
        .expect("resolve answered");
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    wait_for("the alert resolved in Alertmanager", CONVERGE, || {
        let url = url.clone();
        async move {
            let list: Vec<Value> = reqwest::get(&url)
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match list
                .iter()
                .find(|a| a["labels"]["subject"] == "/etc/sudoers")
            {
                Some(a) => Err(format!("still active: {a}")),
                None => Ok(()),
            }
        }
    })
    .await;
    let listed: Value = crate::harness::get(&node.url("/api/v1/alerts?state=resolved")).await;
    assert_eq!(listed["alerts"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["alerts"][0]["state"], "resolved", "{listed}");
}
