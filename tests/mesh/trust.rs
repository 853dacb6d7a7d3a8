//! Trust across regions, on real nodes of two regions with a fleet admin key.
//!
//! - Before a charter, a region's founding is not enough: the other region refuses its
//!   summaries (`needs_charter`) and does not show it.
//! - `fleetmesh region charter` (the real command) signs each region's voters with the
//!   admin key; the other region then shows it with its master, and learns an approval
//!   of its master (carrying the master's proof), and a silence made in the other region
//!   mutes a matching alert.
//! - A rogue of region `us` (a real libp2p peer in the mesh, with its own key) listens to
//!   the fleet topic until it holds `us`'s real proof, then forges a summary, an approval
//!   and an emergency for `us` in a higher term with itself as master, carrying the real
//!   chain and a certificate it endorsed itself (and one endorsement that claims a real
//!   voter's identity). Every node of `eu` refuses all three, and none of them shows.

use std::time::Duration;

use fleetmesh::net;
use fleetmesh_actors::correlate::{Fingerprint, FleetEvent, Verdict};
use fleetmesh_actors::fleet::{Approval, Emergency, Pattern};
use fleetmesh_actors::spike::{Change, Kind};
use fleetmesh_actors::trust::{Anchor, Endorsement, Proof, TermCert, endorse_bytes};
use fleetmesh_actors::{node, wire};
use futures::StreamExt;
use libp2p::gossipsub;
use libp2p::swarm::SwarmEvent;
use serde_json::Value;

use crate::harness::{
    BIN, CONVERGE, Node, eventually, get, rogue_publish, rogue_swarm, two_regions_with, wait_for,
};

/// Charters `via`'s region with the real command, once the region has its voters (the
/// command refuses, naming why, before).
async fn charter(admin_key: &std::path::Path, via: &Node) {
    wait_for(
        &format!("{}'s region chartered", via.name),
        CONVERGE,
        || async {
            let out = std::process::Command::new(BIN)
                .args(["region", "charter", "--admin-key-file"])
                .arg(admin_key)
                .args(["--by", "test", "--api", &via.url("").replace("http://", "")])
                .output()
                .expect("run fleetmesh region charter");
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        },
    )
    .await;
}

async fn trust(n: &Node) -> Value {
    get(&n.url("/api/v1/fleet/trust")).await
}

/// `region` as `n`'s census shows it.
async fn census_region(n: &Node, region: &str) -> Option<Value> {
    let c: Value = get(&n.url("/api/v1/census")).await;
    c["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == region)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_of_another_region_cannot_speak_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("admin.key");
    let out = std::process::Command::new(BIN)
        .args(["region", "admin-keygen", "--out"])
        .arg(&key_file)
        .output()
        .expect("run fleetmesh region admin-keygen");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let public = printed
        .lines()
        .find_map(|l| l.strip_prefix("admin_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("admin-keygen prints the public key: {printed}"))
        .to_string();
    // Web servers judged by the baseline policy: a new user is a violation.
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy).expect("policy dir");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy");
    std::fs::copy(shipped.join("baseline.toml"), policy.join("web.toml")).expect("policy");
    let nodes = two_regions_with(&[
        ("FLEETMESH__FLEET__ADMIN_KEY".into(), public),
        (
            "FLEETMESH__POLICY__DIR".into(),
            policy.display().to_string(),
        ),
    ]);
    let (eu, us) = nodes.split_at(3);

    // Founded but not chartered: the other region is not believed.
    for n in eu {
        eventually(
            &format!("{} refuses us's uncharted summaries", n.name),
            CONVERGE,
            || async {
                let t = trust(n).await;
                let refused = t["refused"].as_array().cloned().unwrap_or_default();
                if refused
                    .iter()
                    .any(|r| r["region"] == "us" && r["why"]["why"] == "needs_charter")
                {
                    Ok(())
                } else {
                    Err(format!("{t}"))
                }
            },
        )
        .await;
        assert!(
            census_region(n, "us").await.is_none(),
            "{} shows a region it cannot verify",
            n.name
        );
    }

    charter(&key_file, &eu[0]).await;
    charter(&key_file, &us[0]).await;
    let master_us = wait_for("eu believes us's master", CONVERGE, || async {
        for n in eu {
            let t = trust(n).await;
            let us = &t["regions"]["us"];
            if us["root_kind"] != "charter" || us["master"].is_null() {
                return Err(format!("{}: {t}", n.name));
            }
            if census_region(n, "us").await.is_none() {
                return Err(format!("{}: no census of us", n.name));
            }
        }
        let t = trust(&eu[0]).await;
        Ok((
            t["regions"]["us"]["master"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            t["regions"]["us"]["term"].as_u64().unwrap_or_default(),
            t["regions"]["us"]["voters"].clone(),
        ))
    })
    .await;
    for n in us {
        eventually(
            &format!("{} believes eu's master", n.name),
            CONVERGE,
            || async {
                let t = trust(n).await;
                if t["regions"]["eu"]["root_kind"] == "charter" {
                    Ok(())
                } else {
                    Err(format!("{t}"))
                }
            },
        )
        .await;
    }

    let (master, term, voters) = master_us;
    // A real approval of us's master, with its proof, is learned in eu.
    let us_master = us
        .iter()
        .find(|n| n.peer_id() == master)
        .expect("us's master among the nodes");
    let resp = reqwest::Client::new()
        .post(us_master.url("/api/v1/patterns/approve"))
        .json(&serde_json::json!({"roles": ["web"], "kind": "user", "change": "added", "subject": "release-bot", "by": "alice"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200);
    for n in eu {
        eventually(
            &format!("{} learns us's approval", n.name),
            CONVERGE,
            || async {
                let p: Value = get(&n.url("/api/v1/patterns")).await;
                if p.to_string().contains("release-bot") {
                    Ok(())
                } else {
                    Err(format!("{p}"))
                }
            },
        )
        .await;
    }
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for n in eu {
            v.push(trust(n).await["refused_total"].as_u64().unwrap_or(0));
        }
        v
    };
    // A silence made in eu holds in us: listed there, and an alert it matches on a node
    // of us is silenced.
    let now = crate::harness::now_ms();
    let rfc3339 = fleetmesh_actors::alerting::rfc3339::format;
    let (status, created) = crate::harness::post(
        &eu[1].url("/api/v1/silences"),
        serde_json::json!({
            "matchers": [{"name": "subject", "value": "zed", "isRegex": false, "isEqual": true}],
            "startsAt": rfc3339(now - 1000),
            "endsAt": rfc3339(now + 3_600_000),
            "createdBy": "ops",
            "comment": "zed is expected everywhere",
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let silence = created["silenceID"].as_str().expect("an id").to_string();
    for n in us {
        eventually(
            &format!("{} holds eu's silence", n.name),
            CONVERGE,
            || async {
                let list: Value = get(&n.url("/api/v1/silences")).await;
                let held = list.as_array().is_some_and(|l| {
                    l.iter()
                        .any(|s| s["id"] == silence.as_str() && s["status"]["state"] == "active")
                });
                if held { Ok(()) } else { Err(format!("{list}")) }
            },
        )
        .await;
    }
    let etc = us[0].dir.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("passwd"), "zed:x:2000:2000::/home/zed:/bin/sh\n").expect("passwd");
    crate::harness::alert_where(&us[0], "zed's alert, silenced", |a| {
        a["subject"] == "zed" && a["state"] == "silenced"
    })
    .await;

    let everyone: Vec<&Node> = nodes.iter().collect();
    forge(&everyone, &master, term, &voters).await;

    for (n, before) in eu.iter().zip(before) {
        eventually(
            &format!(
                "{} refuses the rogue's summary, approval and emergency",
                n.name
            ),
            CONVERGE,
            || async {
                let t = trust(n).await;
                let refused = t["refused"].as_array().cloned().unwrap_or_default();
                let kinds: Vec<&str> = refused
                    .iter()
                    .filter(|r| r["region"] == "us" && r["term"].as_u64() > Some(term))
                    .filter(|r| r["why"]["why"] == "no_quorum")
                    .filter_map(|r| r["kind"].as_str())
                    .collect();
                let all = ["summary", "approval", "emergency"]
                    .iter()
                    .all(|k| kinds.contains(k));
                if all && t["refused_total"].as_u64().unwrap_or(0) >= before + 3 {
                    Ok(())
                } else {
                    Err(format!("{kinds:?}: {t}"))
                }
            },
        )
        .await;
        // Nothing of the forgeries shows.
        let t = trust(n).await;
        assert_eq!(t["regions"]["us"]["master"], master.as_str(), "{t}");
        assert_eq!(t["regions"]["us"]["term"], term, "{t}");
        let c = census_region(n, "us").await.expect("census of us");
        assert_eq!(c["master"], master.as_str(), "{}: {c}", n.name);
        let p: Value = get(&n.url("/api/v1/patterns")).await;
        assert!(
            !p.to_string().contains("mallory"),
            "{}: a forged approval was learned: {p}",
            n.name
        );
        let f: Value = get(&n.url("/api/v1/fleet")).await;
        assert!(
            !f.to_string().contains("/tmp/forged"),
            "{}: a forged emergency was taken: {f}",
            n.name
        );
        let metrics = reqwest::get(n.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        assert!(
            metrics.contains("trust_refused_total{reason=\"emergency\"}"),
            "{}: no refusal counted",
            n.name
        );
    }
}

/// A rogue peer claiming region `us`, connected to every node: it waits for a real
/// summary of `us` (to copy its chain), then publishes its three forgeries.
async fn forge(dial: &[&Node], master: &str, term: u64, voters: &Value) {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let rogue = node::Id::from(keypair.public().to_peer_id().to_base58());
    let mut swarm = rogue_swarm(&keypair, "us", dial);
    let fleet = net::fleet_topic();
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&fleet)
        .expect("subscribe");
    // The real proof, as any peer of the mesh hears it.
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let real: Proof = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rogue heard no summary of us with a proof"
        );
        let ev = tokio::time::timeout(Duration::from_secs(1), swarm.select_next_some()).await;
        if let Ok(SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
            gossipsub::Event::Message { message, .. },
        ))) = ev
            && let Ok(wire::Body::Census(s)) = wire::decode::<wire::Body>(&message.data)
            && s.region == "us"
            && let Some(p) = s.proof
            // The current proof: gossip may hand a newcomer recent messages from before
            // the charter first.
            && matches!(p.chain.first().map(|l| &l.anchor), Some(Anchor::Charter(_)))
        {
            break *p;
        }
    };
    assert_eq!(real.cert.master.as_str(), master);
    let forged_term = term + 100;
    let sign = |bytes: &[u8]| keypair.sign(bytes).expect("sign");
    let endorse = sign(&endorse_bytes("us", forged_term, &rogue));
    // Its own endorsement, and one claiming a real voter's identity (its own signature).
    let real_voter = voters
        .as_array()
        .and_then(|v| v.iter().filter_map(Value::as_str).find(|v| *v != master))
        .expect("another voter")
        .to_string();
    let proof = Proof {
        chain: real.chain.clone(),
        cert: TermCert {
            region: "us".into(),
            term: forged_term,
            master: rogue.clone(),
            endorsements: vec![
                Endorsement {
                    voter: rogue.clone(),
                    sig: endorse.clone(),
                },
                Endorsement {
                    voter: node::Id::from(real_voter),
                    sig: endorse,
                },
            ],
        },
        head: None,
    };
    let mut summary = fleetmesh_actors::census::Summary::new(
        "us",
        forged_term,
        Some(rogue.clone()),
        fleetmesh_actors::actor::unix_ms(),
        Vec::new(),
        60_000,
    );
    summary.proof = Some(Box::new(proof.clone()));
    let mut approval = Approval::new(
        Pattern {
            roles: ["web".to_string()].into(),
            kind: Kind::User,
            change: Change::Added,
            subject: "mallory".into(),
            after: None,
        },
        "us",
        forged_term,
        rogue.clone(),
        "operator rogue".into(),
        1,
    );
    approval.public_key = keypair.public().encode_protobuf();
    approval.signature = sign(&approval.signed_bytes());
    approval.proof = Some(Box::new(proof.clone()));
    let now = fleetmesh_actors::actor::unix_ms();
    let emergency = Emergency {
        region: "us".into(),
        term: forged_term,
        master: rogue.clone(),
        raised_at_unix_ms: now,
        event: FleetEvent {
            fingerprint: Fingerprint {
                kind: Kind::File,
                subject: "/tmp/forged".into(),
                after: None,
            },
            role: "web".into(),
            origins: [(rogue.clone(), "web".to_string())].into(),
            first_unix_ms: now,
            last_unix_ms: now,
            verdict: Verdict::SuspectedCoordinatedChange,
            subjects: vec!["/tmp/forged".into()],
            subjects_total: 1,
        },
        proof: Some(Box::new(proof)),
    };
    let frames: Vec<Vec<u8>> = [
        wire::Body::Census(Box::new(summary)),
        wire::Body::Approval(Box::new(approval)),
        wire::Body::Emergency(Box::new(emergency)),
    ]
    .iter()
    .map(|b| wire::encode(b).expect("encode"))
    .collect();
    rogue_publish(swarm, frames).await;
}
