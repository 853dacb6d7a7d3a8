//! Service probes on real nodes: a region of three voters with a TCP and an HTTP probe of
//! services the test runs on 127.0.0.1. Each probe is owned by exactly one node, which
//! reports the service up; when the TCP service closes its owner reports it down (an
//! alert under the test's policy, resolved when the service is back up); when
//! the owner is killed with SIGKILL another node takes the probe over and reports the
//! state it finds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, alert_where, get};

const NAMES: [&str; 3] = ["s0", "s1", "s2"];

/// A service the test runs: accepts connections (and answers HTTP requests with
/// `200 OK` when `http`) until it is closed; closing drops the listener.
struct Service {
    addr: SocketAddr,
    http: bool,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    fn start(http: bool) -> Service {
        Service::at("127.0.0.1:0".parse().expect("addr"), http)
    }

    /// The service again at the address it had.
    fn reopen(&mut self) {
        *self = Service::at(self.addr, self.http);
    }

    fn at(addr: SocketAddr, http: bool) -> Service {
        let listener = TcpListener::bind(addr).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if !http {
                    continue;
                }
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Service {
            addr,
            http,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting and closes the listener.
    fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("service thread");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.close();
    }
}

fn spec(i: usize, dir: PathBuf, config: &Path, bootstrap: Option<String>) -> Spec {
    let mut s = Spec::new(NAMES[i], "probes");
    // The shipped web policy, with a service down made a violation.
    let policy = config.with_file_name("policy");
    std::fs::create_dir_all(&policy).expect("policy dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy/web.toml");
    let web = std::fs::read_to_string(shipped).expect("shipped policy");
    std::fs::write(
        policy.join("web.toml"),
        format!(
            "[[rules]]\nname = \"services-down\"\ndecision = \"violation\"\n\
             reason = \"a probed service is down\"\nkinds = [\"service\"]\nchanges = [\"removed\"]\n\n{web}"
        ),
    )
    .expect("policy");
    s.env.push((
        "FLEETMESH__POLICY__DIR".into(),
        policy.display().to_string(),
    ));
    s.dir = Some(dir);
    s.env
        .push(("FLEETMESH__REGION__VOTERS".into(), NAMES.join(",")));
    s.env
        .push(("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "1000".into()));
    s.extra_args = vec!["--config".into(), config.display().to_string()];
    s.bootstrap = bootstrap.into_iter().collect();
    s
}

/// (committed items → owner, this node's own items) as `node` reports them.
async fn assignments(node: &Node) -> (BTreeMap<String, String>, Vec<String>) {
    let a: Value = get(&node.url("/api/v1/assignments")).await;
    let items = a["items"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mine = a["mine"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (items, mine)
}

/// Waits until every node in `nodes` holds the same committed assignments, with an audit
/// of each of them and both probes assigned to one of them (other than `not`), and exactly
/// one node calling each probe its own; returns the probes' owners.
async fn settled(nodes: &[&Node], not: Option<&str>) -> BTreeMap<String, String> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match owners(nodes, not).await {
            Ok(o) => return o,
            Err(complaint) => assert!(
                Instant::now() < deadline,
                "probe owners never settled: {complaint}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn owners(nodes: &[&Node], not: Option<&str>) -> Result<BTreeMap<String, String>, String> {
    let mut seen = Vec::new();
    for n in nodes {
        seen.push(assignments(n).await);
    }
    let items = &seen[0].0;
    if seen.iter().any(|(i, _)| i != items) {
        return Err(format!("views differ: {seen:?}"));
    }
    for n in nodes {
        if !items.contains_key(&format!("audit:{}", n.peer_id())) {
            return Err(format!("{} not audited yet: {items:?}", n.name));
        }
    }
    let live = |p: &str| nodes.iter().any(|n| n.peer_id() == p) && Some(p) != not;
    let mut owners = BTreeMap::new();
    for probe in ["probe:db", "probe:web"] {
        let Some(owner) = items.get(probe).filter(|o| live(o)) else {
            return Err(format!("{probe} not owned by a live node: {items:?}"));
        };
        let claims = seen
            .iter()
            .filter(|(_, mine)| mine.iter().any(|i| i == probe))
            .count();
        if claims != 1 {
            return Err(format!("{probe} claimed by {claims} nodes: {seen:?}"));
        }
        owners.insert(probe.to_string(), owner.clone());
    }
    Ok(owners)
}

/// The service spikes `node` has published about probe `name`, oldest first.
async fn reports(node: &Node, name: &str) -> Vec<Value> {
    let all: Vec<Value> = get(&node.url("/api/v1/spikes?kind=service&limit=10000")).await;
    all.into_iter()
        .filter(|s| s["subject"].as_str() == Some(name))
        .collect()
}

/// The highest spike sequence number `node` has published (0 if none).
async fn last_seq(node: &Node) -> u64 {
    let all: Vec<Value> = get(&node.url("/api/v1/spikes?limit=10000")).await;
    all.iter()
        .filter_map(|s| s["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Waits until `node`'s latest report about `name` after `since` says `state` (and
/// `reason`, if given); returns that spike.
/// Each node's last spike sequence number, in order.
async fn last_seqs(nodes: &[Node]) -> Vec<u64> {
    let mut marks = Vec::with_capacity(nodes.len());
    for n in nodes {
        marks.push(last_seq(n).await);
    }
    marks
}

async fn reported(node: &Node, name: &str, since: u64, state: &str, reason: Option<&str>) -> Value {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let list = reports(node, name).await;
        let last = list
            .iter()
            .rev()
            .find(|s| s["seq"].as_u64().is_some_and(|q| q > since));
        if let Some(s) = last
            && s["fields"]["state"]["after"] == state
            && reason.is_none_or(|r| s["fields"]["reason"]["after"] == r)
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{} never reported {name} {state} ({reason:?}); latest: {last:?}\n{}",
            node.name,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_probe_has_one_owner_that_reports_it_and_a_survivor_takes_it_over() {
    let mut db = Service::start(false);
    let web = Service::start(true);
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("services.toml");
    std::fs::write(
        &config,
        format!(
            "[[services]]\nname = \"db\"\nkind = \"tcp\"\ntarget = \"{}\"\ninterval_s = 1\ntimeout_ms = 500\n\n\
             [[services]]\nname = \"web\"\nkind = \"http\"\ntarget = \"http://{}/health\"\ninterval_s = 1\ntimeout_ms = 500\n",
            db.addr, web.addr
        ),
    )
    .expect("config file");
    let dirs: Vec<PathBuf> = NAMES.iter().map(|n| tmp.path().join(n)).collect();
    let mut nodes = vec![Node::start(spec(0, dirs[0].clone(), &config, None))];
    let seed = nodes[0].addr(true);
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        nodes.push(Node::start(spec(
            i,
            dir.clone(),
            &config,
            Some(seed.clone()),
        )));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let peers: Vec<String> = nodes.iter().map(|n| n.peer_id().to_string()).collect();
    let by_peer = |p: &str| {
        peers
            .iter()
            .position(|q| q == p)
            .expect("owner is one of the nodes")
    };

    // One owner each, and it finds both services up.
    let owners = settled(&all, None).await;
    let (db_owner, web_owner) = (by_peer(&owners["probe:db"]), by_peer(&owners["probe:web"]));
    eprintln!("owners: db {}, web {}", NAMES[db_owner], NAMES[web_owner]);
    let up = reported(&nodes[db_owner], "db", 0, "up", None).await;
    assert_eq!(up["kind"], "service");
    assert_eq!(up["label"], "service_up");
    assert_eq!(up["fields"]["check"]["after"], "tcp");
    let up = reported(&nodes[web_owner], "web", 0, "up", None).await;
    assert_eq!(up["fields"]["check"]["after"], "http");
    let marks = last_seqs(&nodes).await;

    // The TCP service closes: its owner, and only its owner, reports it down.
    db.close();
    let down = reported(
        &nodes[db_owner],
        "db",
        marks[db_owner],
        "down",
        Some("refused"),
    )
    .await;
    assert_eq!(down["label"], "service_down");
    assert_eq!(down["severity"], "high");
    assert_eq!(down["fields"]["state"]["before"], "up");
    // The policy makes a service down a violation: its alert fires, and resolves when the
    // service is back up (whichever rule judges the return).
    let name = NAMES[db_owner];
    let firing = alert_where(&nodes[db_owner], "db down alerted", |a| {
        a["subject"] == "db" && a["host"] == name && a["state"] == "firing"
    })
    .await;
    db.reopen();
    let back = reported(&nodes[db_owner], "db", marks[db_owner], "up", None).await;
    assert_eq!(back["fields"]["state"]["before"], "down");
    alert_where(&nodes[db_owner], "db's alert resolved", |a| {
        a["key"] == firing["key"] && a["state"] == "resolved"
    })
    .await;
    db.close();
    let marks = last_seqs(&nodes).await;
    reported(
        &nodes[db_owner],
        "db",
        marks[db_owner],
        "down",
        Some("refused"),
    )
    .await;
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != db_owner) {
        let extra: Vec<Value> = reports(n, "db")
            .await
            .into_iter()
            .filter(|s| s["seq"].as_u64().is_some_and(|q| q > marks[i]))
            .collect();
        assert!(
            extra.is_empty(),
            "{} is not the owner but reported {extra:?}",
            n.name
        );
    }

    // The owner dies: a survivor takes the probe over and reports what it finds.
    let marks = last_seqs(&nodes).await;
    let killed = Instant::now();
    nodes[db_owner].kill9();
    let survivors = crate::harness::others(&nodes, db_owner);
    let dead = peers[db_owner].clone();
    let owners = settled(&survivors, Some(&dead)).await;
    let heir = by_peer(&owners["probe:db"]);
    assert_ne!(heir, db_owner);
    let taken = reported(&nodes[heir], "db", marks[heir], "down", Some("refused")).await;
    assert_eq!(
        taken["fields"]["state"]["before"],
        Value::Null,
        "a new owner's first result"
    );
    eprintln!(
        "db: {} -> {}, reported down {:?} after the kill",
        NAMES[db_owner],
        NAMES[heir],
        killed.elapsed()
    );
    // The web probe is still reported up by its owner, new or not.
    let web_now = by_peer(&owners["probe:web"]);
    let since = if web_now == web_owner {
        0
    } else {
        marks[web_now]
    };
    reported(&nodes[web_now], "web", since, "up", None).await;
}
