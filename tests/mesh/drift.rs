//! Desired state and drift on real nodes in two regions: a file under desired state
//! changed on a node of `eu` shows as drift at eu's master and in `GET /api/v1/drift` of
//! a node in `us`, then clears when restored; a package outside its constraint (a fake
//! dpkg status file under the node's root) and a binary whose digest is not allowed are
//! drift too, the latter high. The node's twin carries what was judged.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{
    CONVERGE, Node, alert_where, get, master_name, settled, two_regions_with, wait_for,
};

fn sha(text: &str) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn sha_bytes(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

const GOOD: &str = "listen 80\n";
const BAD: &str = "listen 8080\n";

/// The desired state of every node (role `web`), and an override for `e2` that allows
/// only an executable digest no binary has.
fn desired_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("nodes")).expect("desired dir");
    std::fs::write(
        dir.join("web.toml"),
        format!(
            "[[files]]\npath = \"/etc/app.conf\"\nsha256 = \"{}\"\n\n\
             [[packages]]\nname = \"openssl\"\nversion = \">= 3.0.11\"\n",
            sha(GOOD)
        ),
    )
    .expect("web.toml");
    std::fs::write(
        dir.join("nodes/e2.toml"),
        format!("[fleetmesh]\ndigests = [\"sha256:{}\"]\n", "0".repeat(64)),
    )
    .expect("e2.toml");
}

fn put(node: &Node, rel: &str, text: &str) {
    let path = node.dir.join("root").join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dirs");
    std::fs::write(path, text).expect("written");
}

/// The drift records `node` lists about `name`'s `subject`.
async fn record(node: &Node, name: &str, subject: &str) -> Option<Value> {
    let d: Value = get(&node.url("/api/v1/drift")).await;
    d["records"].as_array().and_then(|l| {
        l.iter()
            .find(|r| r["name"] == name && r["subject"] == subject)
            .cloned()
    })
}

/// Waits until `node` lists a drift of `name`'s `subject` whose actual is `actual`
/// (`None`: until it lists none).
async fn drift_is(node: &Node, name: &str, subject: &str, actual: Option<&str>) -> Value {
    wait_for(
        &format!("{}: drift of {name} {subject} = {actual:?}", node.name),
        CONVERGE,
        || async {
            let r = record(node, name, subject).await;
            match (&r, actual) {
                (None, None) => Ok(Value::Null),
                (Some(r), Some(a)) if r["actual"] == a => Ok(r.clone()),
                _ => Err(format!("{r:?}")),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_shows_at_the_master_and_in_another_region_and_clears_when_fixed() {
    let desired = tempfile::tempdir().expect("tempdir");
    desired_dir(desired.path());
    let env = [(
        "FLEETMESH__DESIRED__DIR".to_string(),
        desired.path().display().to_string(),
    )];
    let nodes = two_regions_with(&env);
    // The files as desired on every node of eu, and an allowed openssl, before judging.
    for n in &nodes[..3] {
        put(n, "etc/app.conf", GOOD);
    }
    settled(&nodes[3], 2, 5).await;
    let master_of_eu = wait_for("a master in eu", CONVERGE, || async {
        master_name(&nodes[0])
            .await
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    let master = nodes
        .iter()
        .find(|n| n.name == master_of_eu)
        .expect("the master among the nodes");
    let (e1, u0) = (&nodes[1], &nodes[3]);

    // No package database: whether openssl is there cannot be told.
    drift_is(master, "e1", "package:openssl", Some("unknown")).await;
    // A fake dpkg status with an old openssl: drift with the version; an upgrade clears it.
    let status = |v: &str| {
        format!(
            "Package: openssl\nStatus: install ok installed\nVersion: {v}\nArchitecture: amd64\n\n\
             Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n"
        )
    };
    put(e1, "var/lib/dpkg/status", &status("1.1.1w-0"));
    drift_is(master, "e1", "package:openssl", Some("1.1.1w-0")).await;
    put(e1, "var/lib/dpkg/status", &status("3.0.13-1"));
    drift_is(master, "e1", "package:openssl", None).await;

    // The file as desired: no drift. Changed: drift at eu's master, and seen from us.
    drift_is(master, "e1", "file:/etc/app.conf", None).await;
    put(e1, "etc/app.conf", BAD);
    let actual = format!("sha256:{}", sha(BAD));
    let r = drift_is(master, "e1", "file:/etc/app.conf", Some(&actual)).await;
    assert_eq!(r["desired"], format!("sha256:{}", sha(GOOD)), "{r}");
    assert_eq!(r["severity"], "medium", "{r}");
    assert!(r["first_seen_ms"].as_u64().is_some(), "{r}");
    assert!(
        r["rule"].as_str().is_some_and(|s| s.contains("web.toml")),
        "{r}"
    );
    let seen = drift_is(u0, "e1", "file:/etc/app.conf", Some(&actual)).await;
    assert_eq!(seen["region"], "eu", "{seen}");
    // A drift alert at the master.
    alert_where(master, "a drift alert about e1's file", |a| {
        a["action"] == "drift"
            && a["host"] == "e1"
            && a["subject"] == "file:/etc/app.conf"
            && a["state"] == "firing"
    })
    .await;
    // The summary eu's master publishes counts its open alerts: seen from us.
    wait_for(
        "eu's open alerts counted in us's census",
        CONVERGE,
        || async {
            let c: Value = get(&u0.url("/api/v1/census")).await;
            let eu = c["regions"]
                .as_array()
                .and_then(|l| l.iter().find(|r| r["region"] == "eu").cloned())
                .unwrap_or_default();
            if eu["alerts"]["medium"].as_u64().unwrap_or(0) >= 1 {
                Ok(())
            } else {
                Err(eu["alerts"].to_string())
            }
        },
    )
    .await;
    // The twin the master holds carries the file's digest and a drift score.
    let t: Value = get(&master.url("/api/v1/twins/eu/e1")).await;
    assert_eq!(
        t["observed"]["value"]["files"]["/etc/app.conf"]["present"],
        sha(BAD),
        "{t}"
    );
    assert!(t["drift_score"].as_u64().unwrap_or(0) >= 3, "{t}");
    // Asked of a node of us, the twin comes from eu's master over the network.
    let far: Value = get(&u0.url("/api/v1/twins/eu/e1")).await;
    assert_eq!(far["source"], "master", "{far}");
    assert_eq!(
        far["observed"]["value"]["files"]["/etc/app.conf"]["present"],
        sha(BAD),
        "{far}"
    );
    assert_eq!(far["identity"]["value"]["region"], "eu", "{far}");
    // Its SBOM, asked of u0: fetched from e1 itself, chunk by chunk, whole.
    let sbom = |n: &Node| {
        let url = n.url("/api/v1/twins/eu/e1/sbom");
        async move {
            let r = reqwest::get(url).await.expect("sbom");
            let source = r
                .headers()
                .get("x-fleetmesh-source")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (r.status().as_u16(), source, r.bytes().await.expect("body"))
        }
    };
    let (status, source, far_sbom) = sbom(u0).await;
    assert_eq!((status, source.as_deref()), (200, Some("peer")));
    let (status, source, own_sbom) = sbom(e1).await;
    assert_eq!((status, source.as_deref()), (200, Some("local")));
    assert!(
        far_sbom.len() > 48 * 1024,
        "more than one chunk: {}",
        far_sbom.len()
    );
    assert_eq!(far_sbom, own_sbom);
    let doc: Value = serde_json::from_slice(&far_sbom).expect("CycloneDX JSON");
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(
        far["software"]["value"]["sbom_sha256"],
        sha_bytes(&far_sbom),
        "the SBOM's digest is the one its twin reports"
    );
    // Its health, judged on e1 from its connectivity, backlog and probes (it runs none).
    let health = &far["health"]["value"];
    assert!(
        ["ok", "degraded"].contains(&health["state"].as_str().unwrap_or_default()),
        "{far}"
    );
    assert!(health["connectivity"].is_string(), "{far}");
    // Restored: the drift clears at the master and in us, resolved.
    put(e1, "etc/app.conf", GOOD);
    drift_is(master, "e1", "file:/etc/app.conf", None).await;
    drift_is(u0, "e1", "file:/etc/app.conf", None).await;
    let d: Value = get(&master.url("/api/v1/drift")).await;
    assert!(
        d["resolved"]
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r["name"] == "e1"
                && r["subject"] == "file:/etc/app.conf"
                && r["resolved_ms"].as_u64().is_some())),
        "{d}"
    );

    // e2 runs a binary whose digest its desired state does not allow: high.
    let own = Sha256::digest(std::fs::read(crate::harness::BIN).expect("the binary"));
    let own: String = own.iter().map(|b| format!("{b:02x}")).collect();
    let r = drift_is(
        master,
        "e2",
        "fleetmesh:digest",
        Some(&format!("sha256:{own}")),
    )
    .await;
    assert_eq!(r["severity"], "high", "{r}");
    assert!(record(master, "e1", "fleetmesh:digest").await.is_none());

    // A bad edit of the role's file is refused with file, line and key; the last good
    // version stays in force (e1's file is still judged as desired, and e2 still drifts).
    std::fs::write(
        desired.path().join("web.toml"),
        "[[files]]\npath = \"/etc/app.conf\"\nsha256 = \"not-hex\"\n",
    )
    .expect("a bad edit");
    let why = wait_for("the bad edit refused", CONVERGE, || async {
        let d: Value = get(&master.url("/api/v1/drift")).await;
        d["desired_refused"]
            .as_array()
            .and_then(|l| l.first())
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| d.to_string())
    })
    .await;
    assert!(why.starts_with("web.toml:3: files[0].sha256"), "{why}");
    put(e1, "etc/app.conf", BAD);
    drift_is(master, "e1", "file:/etc/app.conf", Some(&actual)).await;
    assert!(record(master, "e2", "fleetmesh:digest").await.is_some());

    // The master fails over: the next one keeps each record's first-seen time (the node
    // reports it as the first master answered it).
    let (name, subject) = [("e1", "file:/etc/app.conf"), ("e2", "fleetmesh:digest")]
        .into_iter()
        .find(|(n, _)| *n != master_of_eu)
        .expect("a drifting node that is not the master");
    let before = record(master, name, subject).await.expect("the record");
    let first_seen = before["first_seen_ms"].as_u64().expect("first seen");
    let mut nodes = nodes;
    let m = nodes
        .iter()
        .position(|n| n.name == master_of_eu)
        .expect("the master");
    nodes[m].kill9();
    let survivor = &nodes[(m + 1) % 3];
    let next = wait_for("a new master in eu", CONVERGE, || async {
        match master_name(survivor).await {
            Some(n) if n != master_of_eu => Ok(n),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let next = nodes
        .iter()
        .find(|n| n.name == next)
        .expect("the new master");
    let after = wait_for("the record at the new master", CONVERGE, || async {
        record(next, name, subject)
            .await
            .ok_or_else(|| format!("no {subject} of {name} yet"))
    })
    .await;
    assert_eq!(
        after["first_seen_ms"].as_u64(),
        Some(first_seen),
        "{before} then {after}"
    );
    assert!(
        after["last_seen_ms"].as_u64() > before["last_seen_ms"].as_u64(),
        "{before} then {after}"
    );
}
