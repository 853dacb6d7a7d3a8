//! The command line: settings layering in a real process, bad settings, identity files.

use std::process::{Command, Stdio};

use crate::harness::{BIN, Node, Spec, command};

/// Runs `fleetmesh node` with settings that must be refused; returns (exit code, stderr).
/// A node that starts anyway is killed after 30 s and reported with no exit code.
fn refused(spec: &Spec) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let err_path = dir.path().join("stderr");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = command(spec, dir.path())
        .stderr(Stdio::from(err_file))
        .spawn()
        .expect("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&err_path).unwrap_or_default())
}

#[test]
fn bad_settings_exit_2_and_name_the_key() {
    // A value of the wrong type, from the environment.
    let mut s = Spec::new("x", "eu");
    s.env = vec![("FLEETMESH__HEARTBEAT__DEAD_AFTER".into(), "often".into())];
    let (code, err) = refused(&s);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("heartbeat.dead_after"), "{err}");

    // A value out of range, from a flag.
    let mut s = Spec::new("x", "eu");
    s.extra_args = vec!["--heartbeat-interval-ms".into(), "5".into()];
    let (code, err) = refused(&s);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("heartbeat.interval_ms"), "{err}");

    let s = Spec::new("x", "eu west");
    let (code, err) = refused(&s);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("node.region"), "{err}");

    let mut s = Spec::new("x", "eu");
    s.bootstrap = vec!["127.0.0.1:7400".into()];
    let (code, err) = refused(&s);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("net.bootstrap"), "{err}");

    let mut s = Spec::new("x", "eu");
    s.env = vec![("FLEETMESH__NET__MDNS".into(), "perhaps".into())];
    let (code, err) = refused(&s);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("net.mdns"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_environment_and_flags_layer_in_that_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "[node]\nname = \"from-file\"\nrole = \"database\"\nregion = \"file-region\"\n",
    )
    .expect("write");
    // The harness passes --name, --region and --role as flags.
    let mut s = Spec::new("from-flag", "flag-region");
    s.extra_args = vec!["--config".into(), file.display().to_string()];
    s.env = vec![
        ("FLEETMESH__NODE__NAME".into(), "from-env".into()),
        ("FLEETMESH__NODE__ROLE".into(), "from-env-role".into()),
    ];
    let node = Node::start(s);
    let view = node.node().await;
    // Flags beat the environment and the file.
    assert_eq!(view.name, "from-flag");
    assert_eq!(view.region, "flag-region");
    assert_eq!(view.role, "web");

    // Without flags for them, the environment beats the file, and the file the defaults.
    let mut cmd = Command::new(BIN);
    let data = tempfile::tempdir().expect("tempdir");
    cmd.arg("node")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env("FLEETMESH__NODE__NAME", "from-env")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("starts");
    let rt_path = data.path().join("node.json");
    let mut tries = 0;
    let rt: fleetmesh::node::RuntimeFile = loop {
        if let Ok(t) = std::fs::read_to_string(&rt_path)
            && let Ok(rt) = serde_json::from_str(&t)
        {
            break rt;
        }
        tries += 1;
        assert!(tries < 600, "node did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let view: fleetmesh::api::NodeView =
        crate::harness::get(&format!("http://{}/api/v1/node", rt.api)).await;
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    assert_eq!(view.name, "from-env");
    assert_eq!(view.role, "database");
    assert_eq!(view.region, "file-region");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_survives_restarts_and_keygen_files_are_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut spec = Spec::new("r", "eu");
    spec.dir = Some(data.clone());
    let mut first = Node::start(spec.clone());
    let id = first.peer_id().to_string();
    let inc1 = first.node().await.incarnation;
    assert!(first.stop().success());
    let second = Node::start(spec);
    assert_eq!(second.peer_id(), id, "same data dir, same peer id");
    assert!(
        second.node().await.incarnation > inc1,
        "a restart is a new incarnation"
    );
    drop(second);

    let key = dir.path().join("id.key");
    let out = Command::new(BIN)
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .expect("keygen runs");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let again = Command::new(BIN)
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .output()
        .expect("runs");
    assert!(!again.status.success(), "keygen must not overwrite a key");

    let mut spec = Spec::new("k", "eu");
    spec.env = vec![(
        "FLEETMESH__NODE__IDENTITY_FILE".into(),
        key.display().to_string(),
    )];
    let node = Node::start(spec);
    assert_eq!(node.peer_id(), printed);
}

#[test]
fn taken_ports_are_refused_with_the_key_named() {
    let first = Node::start(Spec::new("first", "eu"));
    // The p2p port of a running node: refused, not silently shared.
    let mut s = Spec::new("second", "eu");
    s.extra_args = vec!["--listen".into(), first.runtime.listen[0].clone()];
    let (code, err) = refused(&s);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("net.listen"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Its API port.
    let mut s = Spec::new("third", "eu");
    s.extra_args = vec!["--api-listen".into(), first.runtime.api.clone()];
    let (code, err) = refused(&s);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("api.listen"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A region that cannot have a master yet says why, in the API and in `fleetmesh status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_without_a_master_says_why() {
    let mut spec = Spec::new("alone", "waiting");
    spec.env
        .push(("FLEETMESH__REGION__BOOTSTRAP_EXPECT".into(), "3".into()));
    let node = Node::start(spec);
    let r: serde_json::Value =
        crate::harness::wait_for("the reason", crate::harness::CONVERGE, || async {
            let r: serde_json::Value = crate::harness::get(&node.url("/api/v1/region")).await;
            if r["no_master_reason"]["reason"] == "waiting_for_founders" {
                Ok(r)
            } else {
                Err(format!("{r:#}"))
            }
        })
        .await;
    assert!(r["master"].is_null());
    assert_eq!(r["no_master_reason"]["have"], 1);
    assert_eq!(r["no_master_reason"]["expect"], 3);
    let out = Command::new(BIN)
        .args(["status", "--api", &node.runtime.api])
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("master  none: waiting for founders: 1 of 3"),
        "{text}"
    );
}

/// `fleetmesh init` writes a settings file a node runs with as it is (region, role, name,
/// fleet key created); it refuses to overwrite one, and names a bad flag with exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_settings_a_node_runs_with() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("etc/fleetmesh.toml");
    let key = tmp.path().join("fleet.key");
    let data = tmp.path().join("data");
    let init = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.args([
            "init", "--region", "eu-west", "--role", "web", "--name", "web-7",
        ])
        .args([
            "--bootstrap-expect",
            "1",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .args(["--api-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--psk-file")
        .arg(&key)
        .arg("--out")
        .arg(&out)
        .args(extra);
        c.output().expect("runs")
    };
    let first = init(&[]);
    let err = String::from_utf8_lossy(&first.stderr).to_string();
    assert!(first.status.success(), "{err}");
    assert!(err.contains("created the fleet key"), "{err}");
    assert!(key.is_file() && out.is_file());
    // Not twice without --force.
    let again = init(&[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    // A bad flag is named.
    let bad = Command::new(BIN)
        .args([
            "init",
            "--region",
            "eu",
            "--bootstrap",
            "10.0.0.5:7400",
            "--out",
        ])
        .arg(tmp.path().join("bad.toml"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--bootstrap 10.0.0.5:7400"));
    assert!(!tmp.path().join("bad.toml").exists());

    // A node runs with the file as written (its watch root aside: never the real /etc).
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).expect("root");
    let mut child = Command::new(BIN)
        .args(["node", "--config"])
        .arg(&out)
        .env("FLEETMESH__WATCH__ROOT", &root)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let runtime = crate::harness::wait_for(
        "the node's runtime file",
        std::time::Duration::from_secs(30),
        || async {
            std::fs::read_to_string(data.join("node.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<fleetmesh::node::RuntimeFile>(&t).ok())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    let view: serde_json::Value =
        crate::harness::get(&format!("http://{}/api/v1/node", runtime.api)).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(view["name"], "web-7", "{view}");
    assert_eq!(view["region"], "eu-west", "{view}");
    assert_eq!(view["role"], "web", "{view}");
}
