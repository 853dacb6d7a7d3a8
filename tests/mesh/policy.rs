//! Role policies on real nodes: user additions under temporary watch roots are decided by
//! the policy of each node's role, and a bad policy edit is refused with its line while
//! the node goes on deciding with its last good policy.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, eventually, get, wait_for};

pub const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n";
pub const GROUP: &str = "root:x:0:\nalice:x:1000:\n";

/// A `baseline` node named `name` in `region`, its data in `data` (its watched `/etc`
/// created, with a `passwd` of no extra user), its settings file `config` and its
/// policies `policy`. Only the watch root's changes count: the host's listeners and
/// processes (other tests', this machine's) would be violations of a baseline server too,
/// so the process, network and metrics probes wait an hour. Returns the spec and `/etc`.
pub fn baseline(
    name: &str,
    region: &str,
    data: &Path,
    config: &Path,
    policy: &Path,
) -> (Spec, PathBuf) {
    let etc = data.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    add_users(&etc, &[]);
    let mut spec = Spec::new(name, region);
    spec.role = "baseline".into();
    spec.dir = Some(data.to_path_buf());
    spec.extra_args = vec!["--config".into(), config.display().to_string()];
    spec.env = vec![(
        "FLEETMESH__POLICY__DIR".into(),
        policy.display().to_string(),
    )];
    for k in [
        "FLEETMESH__PROBES__PROCESS_POLL_MS",
        "FLEETMESH__PROBES__NETWORK_POLL_MS",
        "FLEETMESH__METRICS__INTERVAL_MS",
    ] {
        spec.env.push((k.into(), "3600000".into()));
    }
    (spec, etc)
}

/// `n` baseline nodes (see [`baseline`]) named `<region>0`, `<region>1`... of region
/// `region`, founding with `bootstrap_expect` 3, once their census shows every one alive:
/// the nodes, their watched `/etc`s and the index of their master.
pub async fn baseline_region(
    tmp: &Path,
    region: &str,
    n: usize,
    config: &Path,
    policy: &Path,
) -> (Vec<Node>, Vec<PathBuf>, usize) {
    let mut nodes: Vec<Node> = Vec::new();
    let mut etcs = Vec::new();
    for i in 0..n {
        let name = format!("{region}{i}");
        let (mut spec, etc) = baseline(&name, region, &tmp.join(&name), config, policy);
        spec.env
            .push(("FLEETMESH__REGION__BOOTSTRAP_EXPECT".into(), "3".into()));
        if let Some(first) = nodes.first() {
            spec.bootstrap = vec![first.addr(true)];
        }
        nodes.push(Node::start(spec));
        etcs.push(etc);
    }
    crate::harness::settled(&nodes[0], 1, n).await;
    let lead = wait_for("a master", CONVERGE, || async {
        crate::harness::master_name(&nodes[0])
            .await
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    let m = nodes.iter().position(|n| n.name == lead).expect("a member");
    (nodes, etcs, m)
}

/// A copy of the shipped policies, so that a test may break one.
pub fn policies(tmp: &Path) -> PathBuf {
    let dir = tmp.join("policy");
    std::fs::create_dir_all(&dir).expect("policy dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy");
    for role in ["web", "baseline", "database"] {
        let name = format!("{role}.toml");
        std::fs::copy(shipped.join(&name), dir.join(&name)).expect("copy policy");
    }
    dir
}

fn node(role: &str, tmp: &Path, policy: &Path) -> (Node, PathBuf) {
    let data = tmp.join(role);
    let etc = data.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("passwd"), PASSWD).expect("passwd");
    std::fs::write(etc.join("group"), GROUP).expect("group");
    let mut spec = Spec::new(role, &format!("policy-{role}"));
    spec.role = role.into();
    spec.dir = Some(data);
    spec.env = vec![
        (
            "FLEETMESH__POLICY__DIR".into(),
            policy.display().to_string(),
        ),
        ("FLEETMESH__POLICY__RELOAD_MS".into(), "200".into()),
    ];
    (Node::start(spec), etc)
}

pub fn add_users(etc: &Path, names: &[&str]) {
    let mut text = PASSWD.to_string();
    for (i, n) in names.iter().enumerate() {
        text.push_str(&format!(
            "{n}:x:{}:{}::/home/{n}:/bin/sh\n",
            2000 + i,
            2000 + i
        ));
    }
    std::fs::write(etc.join("passwd"), text).expect("passwd");
}

/// `node`'s first decision that `pick` selects (`what` names it), once made.
pub async fn decision_where(node: &Node, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    wait_for(
        &format!("{}: a decision on {what}", node.name),
        CONVERGE,
        || async {
            let list: Vec<Value> = get(&node.url("/api/v1/decisions?limit=10000")).await;
            list.into_iter()
                .find(|d| pick(d))
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await
}

/// The node's decision about the addition of user `name`, once made.
async fn decision_on(node: &Node, name: &str) -> Value {
    decision_where(node, &format!("user {name}"), |d| {
        d["kind"] == "user" && d["change"] == "added" && d["subject"] == name
    })
    .await
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .expect("needle in policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_decides_user_additions_by_its_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = policies(tmp.path());
    let (web, web_etc) = node("web", tmp.path(), &policy);
    let (baseline, baseline_etc) = node("baseline", tmp.path(), &policy);
    let (db, db_etc) = node("database", tmp.path(), &policy);

    add_users(&web_etc, &["deploy"]);
    add_users(&baseline_etc, &["deploy"]);
    add_users(&db_etc, &["dbadmin"]);

    let d = decision_on(&web, "deploy").await;
    assert_eq!(d["decision"], "approved", "{d}");
    let web_text = std::fs::read_to_string(policy.join("web.toml")).expect("web policy");
    let line = line_of(&web_text, "name = \"deploy-users\"") - 1;
    assert_eq!(d["rule"], format!("web.toml:{line}#deploy-users"), "{d}");

    let d = decision_on(&baseline, "deploy").await;
    assert_eq!(d["decision"], "violation", "{d}");
    assert!(
        d["rule"]
            .as_str()
            .unwrap_or_default()
            .ends_with("#no-new-users"),
        "{d}"
    );
    assert!(
        baseline.log().contains("policy violation"),
        "violations are logged"
    );

    let d = decision_on(&db, "dbadmin").await;
    assert_eq!(d["decision"], "approved", "{d}");
    assert!(
        d["rule"]
            .as_str()
            .unwrap_or_default()
            .ends_with("#db-admins"),
        "{d}"
    );

    // A bad edit of the database policy: refused with its line; the last good one stays.
    let before: Value = get(&db.url("/api/v1/policy")).await;
    let good = std::fs::read_to_string(policy.join("database.toml")).expect("db policy");
    let rule_line = line_of(&good, "name = \"other-users\"") - 1;
    let bad = good.replacen(
        "reason = \"only the listed database administrators",
        "decision_typo = 1\nreason = \"only the listed database administrators",
        1,
    );
    assert_ne!(bad, good);
    std::fs::write(policy.join("database.toml"), &bad).expect("bad edit");
    let status: Value = wait_for("the bad edit refused", CONVERGE, || async {
        let s: Value = get(&db.url("/api/v1/policy")).await;
        if s["last_error"].is_object() {
            Ok(s)
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
    let error = status["last_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "policy database.toml:{rule_line}: rule `other-users`: "
        )),
        "{error}"
    );
    assert!(error.contains("decision_typo"), "{error}");
    assert_eq!(
        status["version"], before["version"],
        "the last good policy stays"
    );
    assert!(db.log().contains("policy refused"), "the refusal is logged");

    add_users(&db_etc, &["dbadmin", "mallory"]);
    let d = decision_on(&db, "mallory").await;
    assert_eq!(d["decision"], "violation", "{d}");
    assert!(
        d["rule"]
            .as_str()
            .unwrap_or_default()
            .ends_with("#other-users"),
        "{d}"
    );
    assert_eq!(
        d["policy"], before["version"],
        "decided by the last good policy"
    );

    // Fixed again: the good text loads and the error is gone.
    std::fs::write(policy.join("database.toml"), &good).expect("fix");
    eventually("the fixed policy loaded", CONVERGE, || async {
        let s: Value = get(&db.url("/api/v1/policy")).await;
        if s["last_error"].is_null() && s["counts"]["violation"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
}
