//! The fleet reference scenario on one real region: five web servers (three of them the
//! voters), a baseline server and a database server, each with its own temporary watch
//! root, judged by copies of the shipped role policies.
//!
//! - `deploy` added on a web server is approved there, and the region's master learns the
//!   pattern: every web server holds it (from the region's log or the fleet topic).
//! - The same user on the baseline server is a violation (the web pattern does not cover
//!   baseline servers).
//! - On the database server an approved DB admin is approved; `mallory` is a violation.
//! - The same file change on 4 of the 5 web servers within the window is one fleet event
//!   (a suspected coordinated change: no rule approves it), seen by every node; the
//!   servers whose consultations were held learn on their recheck that the event covers
//!   them, and raise no alert of their own.
//! - Approvals forged by an ordinary node (a real libp2p peer in the mesh that is not the
//!   master) are refused by every node.

use std::path::{Path, PathBuf};

use fleetmesh_actors::fleet::{Approval, Pattern};
use fleetmesh_actors::spike::{Change, Kind};
use fleetmesh_actors::{node, wire};
use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, eventually, get, rogue_publish, rogue_swarm, wait_for};
use crate::policy::{GROUP, PASSWD, add_users, decision_where, policies};

const VOTERS: [&str; 3] = ["w0", "w1", "w2"];
const WINDOW_S: u64 = 8;

fn start(
    name: &str,
    role: &str,
    tmp: &Path,
    policy: &Path,
    bootstrap: Option<String>,
) -> (Node, PathBuf) {
    let data = tmp.join(name);
    let etc = data.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("passwd"), PASSWD).expect("passwd");
    std::fs::write(etc.join("group"), GROUP).expect("group");
    let mut spec = Spec::new(name, "ref");
    spec.role = role.into();
    spec.dir = Some(data);
    spec.bootstrap = bootstrap.into_iter().collect();
    for (k, v) in [
        ("FLEETMESH__POLICY__DIR", policy.display().to_string()),
        ("FLEETMESH__POLICY__RELOAD_MS", "500".into()),
        ("FLEETMESH__REGION__VOTERS", VOTERS.join(",")),
        ("FLEETMESH__FLEET__WINDOW_S", WINDOW_S.to_string()),
        // A master slowed down by a loaded machine still answers (not the autonomous default).
        ("FLEETMESH__FLEET__CONSULT_TIMEOUT_MS", "10000".into()),
        ("FLEETMESH__HEARTBEAT__INTERVAL_MS", "500".into()),
        ("FLEETMESH__METRICS__INTERVAL_MS", "3600000".into()),
        ("FLEETMESH__PROBES__PROCESS_POLL_MS", "3600000".into()),
        ("FLEETMESH__PROBES__NETWORK_POLL_MS", "3600000".into()),
    ] {
        spec.env.push((k.into(), v));
    }
    (Node::start(spec), etc)
}

/// The master's peer id once every node names the same one.
async fn master_of(nodes: &[&Node]) -> String {
    wait_for("one master known to every node", CONVERGE, || async {
        let mut seen = Vec::new();
        for n in nodes {
            let r: Value = get(&n.url("/api/v1/region")).await;
            seen.push(r["master"]["peer_id"].as_str().map(str::to_string));
        }
        match &seen[0] {
            Some(m) if seen.iter().all(|s| s.as_ref() == Some(m)) => Ok(m.clone()),
            _ => Err(format!("{seen:?}")),
        }
    })
    .await
}

/// `node`'s decision on the addition of user `name` (settled if it was a consultation).
async fn decision_on(node: &Node, kind: &str, subject: &str) -> Value {
    decision_where(node, &format!("{kind} {subject}"), |d| {
        d["kind"] == kind && d["subject"] == subject
    })
    .await
}

/// `node`'s alerts (newest first).
async fn alerts(node: &Node) -> Vec<Value> {
    let v: Value = get(&node.url("/api/v1/alerts?limit=1000")).await;
    v["alerts"].as_array().cloned().unwrap_or_default()
}

/// Waits for `node`'s alert with `action` about `subject`.
async fn alert_on(node: &Node, action: &str, subject: &str) -> Value {
    wait_for(
        &format!("{}: a {action} alert on {subject}", node.name),
        CONVERGE,
        || async {
            alerts(node)
                .await
                .into_iter()
                .find(|a| a["action"] == action && a["subject"] == subject)
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await
}

async fn learned(node: &Node) -> Value {
    get(&node.url("/api/v1/patterns")).await
}

fn learned_subjects(p: &Value) -> Vec<String> {
    p["learned"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| {
                    x["approval"]["pattern"]["subject"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = policies(tmp.path());
    let (w0, w0_etc) = start("w0", "web", tmp.path(), &policy, None);
    let boot = Some(w0.addr(true));
    let mut web = vec![(w0, w0_etc)];
    for i in 1..5 {
        web.push(start(
            &format!("w{i}"),
            "web",
            tmp.path(),
            &policy,
            boot.clone(),
        ));
    }
    let (baseline, baseline_etc) = start("b0", "baseline", tmp.path(), &policy, boot.clone());
    let (db, db_etc) = start("d0", "database", tmp.path(), &policy, boot.clone());
    let all: Vec<&Node> = web.iter().map(|(n, _)| n).chain([&baseline, &db]).collect();
    let master = master_of(&all).await;
    let master_node = *all
        .iter()
        .find(|n| n.peer_id() == master)
        .expect("master is a member");

    // deploy on a web server: approved there, learned by the master for web servers.
    add_users(&web[1].1, &["deploy"]);
    let d = decision_on(&web[1].0, "user", "deploy").await;
    assert_eq!(d["decision"], "approved", "{d}");
    for (n, _) in &web {
        eventually(
            &format!("{} holds the deploy pattern", n.name),
            CONVERGE,
            || async {
                let p = learned(n).await;
                if learned_subjects(&p).contains(&"deploy".to_string()) {
                    Ok(())
                } else {
                    Err(format!("{p}"))
                }
            },
        )
        .await;
    }
    let p = learned(&web[3].0).await;
    let deploy = p["learned"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|x| x["approval"]["pattern"]["subject"] == "deploy")
        })
        .cloned()
        .expect("deploy pattern");
    assert_eq!(
        deploy["approval"]["pattern"]["roles"],
        serde_json::json!(["web"]),
        "{deploy}"
    );
    assert_eq!(deploy["approval"]["master"], master.as_str(), "{deploy}");
    assert!(
        deploy["approval"]["by"]
            .as_str()
            .unwrap_or_default()
            .contains("#deploy-users"),
        "{deploy}"
    );

    // The same user on the baseline server is a violation.
    add_users(&baseline_etc, &["deploy"]);
    let d = decision_on(&baseline, "user", "deploy").await;
    assert_eq!(d["decision"], "violation", "{d}");
    assert!(
        d["rule"]
            .as_str()
            .unwrap_or_default()
            .ends_with("#no-new-users"),
        "{d}"
    );
    let a = alert_on(&baseline, "unauthorized_access", "deploy").await;
    assert_eq!(
        (&a["host"], &a["role"], &a["category"]),
        (
            &Value::from("b0"),
            &Value::from("baseline"),
            &Value::from("iam")
        ),
        "{a}"
    );

    // Database: the listed DB admin approved, mallory a violation.
    add_users(&db_etc, &["dbadmin", "mallory"]);
    let d = decision_on(&db, "user", "dbadmin").await;
    assert_eq!(d["decision"], "approved", "{d}");
    let d = decision_on(&db, "user", "mallory").await;
    assert_eq!(d["decision"], "violation", "{d}");
    alert_on(&db, "unauthorized_access", "mallory").await;
    assert!(
        !alerts(&db).await.iter().any(|a| a["subject"] == "dbadmin"),
        "an approved DB admin raises no alert"
    );
    // (A master also lists its members' alerts, which it notifies for the region.)
    assert!(
        !alerts(&web[1].0)
            .await
            .iter()
            .any(|a| a["subject"] == "deploy" && a["host"] == web[1].0.name.as_str()),
        "deploy on a web server raises no alert"
    );

    // The same file change on 4 of 5 web servers: one fleet event, seen everywhere.
    for (_, etc) in web.iter().skip(1) {
        std::fs::write(etc.join("fleet-test.conf"), "listen 8080\n").expect("change");
    }
    // Meanwhile a change on one server only, that nothing explains.
    std::fs::write(web[4].1.join("only-here.conf"), "x\n").expect("change");
    let subject = "/etc/fleet-test.conf";
    for (n, _) in web.iter().skip(1) {
        let d = decision_on(n, "file", subject).await;
        assert_eq!(d["decision"], "consult", "{d}");
    }
    let event = wait_for("one fleet event at the master", CONVERGE, || async {
        let f: Value = get(&master_node.url("/api/v1/fleet")).await;
        let events: Vec<Value> = f["events"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|x| x["event"]["fingerprint"]["subject"] == subject)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        match &events[..] {
            [e] if e["event"]["origins"]
                .as_object()
                .is_some_and(|o| o.len() == 4) =>
            {
                Ok(e.clone())
            }
            _ => Err(format!("{f}")),
        }
    })
    .await;
    assert_eq!(
        event["event"]["verdict"], "suspected_coordinated_change",
        "{event}"
    );
    for n in all.iter().filter(|n| n.peer_id() != master) {
        eventually(
            &format!("{} sees the emergency", n.name),
            CONVERGE,
            || async {
                let f: Value = get(&n.url("/api/v1/fleet")).await;
                let seen = f["events"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|x| x["key"] == event["key"] && x["source"] == "emergency")
                });
                if seen { Ok(()) } else { Err(format!("{f}")) }
            },
        )
        .await;
    }
    // Every consultation settled by the master, with its region and term.
    for (n, _) in web.iter().skip(1) {
        let d = wait_for(
            &format!("{}: the consultation settled", n.name),
            CONVERGE,
            || async {
                // Held ones are asked again when the window is over.
                let d = decision_on(n, "file", subject).await;
                if d["settled"].is_object() && d["settled"]["held"] == false {
                    Ok(d)
                } else {
                    Err(format!("{d}"))
                }
            },
        )
        .await;
        assert_eq!(d["settled"]["by"], "master", "{d}");
        // Covered by the fleet event, directly or on the recheck: no alert of its own.
        assert_eq!(
            d["settled"]["rule"], "fleet:suspected_coordinated_change",
            "{d}"
        );
        assert_eq!(d["settled"]["region"], "ref", "{d}");
        assert!(d["settled"]["term"].as_u64().is_some_and(|t| t > 0), "{d}");
    }
    // The lone change: held, asked again after the window, unresolved: its own alert.
    let a = alert_on(&web[4].0, "unresolved_change", "/etc/only-here.conf").await;
    assert_eq!(a["rule"], "fleet:unresolved", "{a}");
    // One alert for the fleet event at the master; none per server, anywhere.
    let a = alert_on(master_node, "suspected_coordinated_change", subject).await;
    assert_eq!(a["severity"], "critical", "{a}");
    for n in &all {
        let per_server: Vec<Value> = alerts(n)
            .await
            .into_iter()
            .filter(|a| a["subject"] == subject && a["action"] != "suspected_coordinated_change")
            .collect();
        assert!(
            per_server.is_empty(),
            "{}: per-server alerts: {per_server:?}",
            n.name
        );
    }

    // Forged approvals from an ordinary node of the mesh are refused everywhere.
    forge(&web[2].0, &master, &all).await;

    // An operator's approval at the master: in force on every web server.
    let resp = reqwest::Client::new()
        .post(master_node.url("/api/v1/patterns/approve"))
        .json(&serde_json::json!({"roles": ["web"], "kind": "user", "change": "added", "subject": "release-bot", "by": "alice"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["approval"]["by"], "operator alice", "{body}");
    for (n, _) in &web {
        eventually(
            &format!("{} holds the operator's approval", n.name),
            CONVERGE,
            || async {
                let p = learned(n).await;
                if learned_subjects(&p).contains(&"release-bot".to_string()) {
                    Ok(())
                } else {
                    Err(format!("{p}"))
                }
            },
        )
        .await;
    }

    // An operator's approval at a non-master is refused, naming the master.
    let other = all
        .iter()
        .find(|n| n.peer_id() != master)
        .expect("a non-master");
    let resp = reqwest::Client::new()
        .post(other.url("/api/v1/patterns/approve"))
        .json(&serde_json::json!({"roles": ["web"], "kind": "user", "change": "added", "subject": "eve"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not the master"),
        "{body}"
    );
}

/// A real libp2p peer joins the mesh (it is not the master) and publishes two forged
/// approvals on the fleet topic: one signed with its own key claiming to be the master
/// (the signature verifies, the signer is not the master), one claiming the master's
/// identity with a signature that cannot verify. Every node must refuse both.
async fn forge(via: &Node, master: &str, all: &[&Node]) {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let rogue = node::Id::from(keypair.public().to_peer_id().to_base58());
    let swarm = rogue_swarm(&keypair, "ref", &[via]);
    let region: Value = get(&via.url("/api/v1/region")).await;
    let term = region["term"].as_u64().unwrap_or(1);
    let pattern = |subject: &str| Pattern {
        roles: ["web".to_string()].into(),
        kind: Kind::User,
        change: Change::Added,
        subject: subject.into(),
        after: None,
    };
    let mut own = Approval::new(
        pattern("mallory"),
        "ref",
        term,
        rogue.clone(),
        "operator rogue".into(),
        1,
    );
    own.public_key = keypair.public().encode_protobuf();
    own.signature = keypair.sign(&own.signed_bytes()).expect("sign");
    let mut impersonated = Approval::new(
        pattern("intruder"),
        "ref",
        term,
        node::Id::from(master),
        "operator rogue".into(),
        1,
    );
    impersonated.public_key = keypair.public().encode_protobuf();
    impersonated.signature = keypair.sign(&impersonated.signed_bytes()).expect("sign");
    let frames: Vec<Vec<u8>> = [own, impersonated]
        .into_iter()
        .map(|a| wire::encode(&wire::Body::Approval(Box::new(a))).expect("encode"))
        .collect();

    let pump = rogue_publish(swarm, frames).await;
    for n in all {
        eventually(
            &format!("{} refuses both forged approvals", n.name),
            CONVERGE,
            || async {
                let p = learned(n).await;
                let subjects = learned_subjects(&p);
                assert!(
                    !subjects.iter().any(|s| s == "mallory" || s == "intruder"),
                    "{}: a forged approval was accepted: {p}",
                    n.name
                );
                if p["rejected_total"].as_u64().unwrap_or(0) >= 2 {
                    Ok(())
                } else {
                    Err(format!("{p}"))
                }
            },
        )
        .await;
    }
    pump.abort();
}
