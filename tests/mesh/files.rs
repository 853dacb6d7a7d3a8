//! File detection on a real node with a real temporary watch root: every change becomes
//! exactly one spike, and changes made while the node was stopped are reported at start.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{self, CONVERGE, Node, Spec, eventually, get};

/// The node's file spikes (other kinds, such as network spikes caused by other tests'
/// sockets on this host, are not this test's business).
async fn spikes(node: &Node) -> Vec<Value> {
    get(&node.url("/api/v1/spikes?kind=file&limit=10000")).await
}

/// (kind, change, subject) of every spike.
fn summary(spikes: &[Value]) -> Vec<(String, String, String)> {
    spikes
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            (f("kind"), f("change"), f("subject"))
        })
        .collect()
}

fn row(kind: &str, change: &str, subject: &str) -> (String, String, String) {
    (kind.into(), change.into(), subject.into())
}

/// Runs `op`, then waits until the node has exactly `expected` spikes.
async fn step(node: &Node, expected: &[(String, String, String)], op: impl FnOnce()) {
    op();
    eventually("the change is reported", CONVERGE, || async {
        let got = summary(&spikes(node).await);
        if got.as_slice() == expected {
            Ok(())
        } else {
            Err(format!("spikes {got:?}, expected {expected:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_file_change_is_one_spike_and_downtime_changes_are_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let etc = data.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").expect("hosts");
    let mut spec = Spec::new("files", "eu");
    spec.dir = Some(data.clone());
    let mut node = Node::start(spec.clone());

    let mut want = Vec::new();
    let a = etc.join("a.conf");
    want.push(row("file", "added", "/etc/a.conf"));
    step(&node, &want, || {
        std::fs::write(&a, "x = 1\n").expect("create")
    })
    .await;
    want.push(row("file", "modified", "/etc/a.conf"));
    step(&node, &want, || {
        std::fs::write(&a, "x = 2\n").expect("modify")
    })
    .await;
    want.push(row("file", "modified", "/etc/a.conf"));
    step(&node, &want, || {
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).expect("chmod")
    })
    .await;
    want.push(row("file", "removed", "/etc/a.conf"));
    want.push(row("file", "added", "/etc/b.conf"));
    step(&node, &want, || {
        std::fs::rename(&a, etc.join("b.conf")).expect("rename")
    })
    .await;
    want.push(row("file", "removed", "/etc/b.conf"));
    step(&node, &want, || {
        std::fs::remove_file(etc.join("b.conf")).expect("delete")
    })
    .await;
    want.push(row("file", "modified", "/etc/hosts"));
    step(&node, &want, || {
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n10.0.0.5 db\n").expect("edit")
    })
    .await;

    // What the spikes say, beyond their kind: digests, the mode change, the web role's
    // default label, and sequence numbers that only grow.
    let all = spikes(&node).await;
    let seqs: Vec<u64> = all.iter().filter_map(|s| s["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        all[1]["before"].as_str().map(str::len),
        Some(64),
        "hex sha256"
    );
    assert_ne!(all[1]["before"], all[1]["after"]);
    assert_eq!(all[2]["fields"]["mode"]["after"], "600");
    assert_eq!(all[0]["label"], "file_added");
    assert_eq!(all[0]["origin"], node.peer_id());
    let reconcile: Vec<Value> = get(&node.url("/api/v1/spikes?kind=reconcile")).await;
    assert!(reconcile.is_empty(), "{reconcile:?}");
    let detectors: Value = get(&node.url("/api/v1/detectors")).await;
    assert_eq!(detectors["files"]["layers"]["realtime_without_change"], 0);
    assert_eq!(detectors["files"]["layers"]["missed_by_realtime"], 0);
    let last_seq = *seqs.last().expect("spikes");
    // `limit` without `since` is the latest; with `since`, a page after it.
    let seq_of = |v: Vec<Value>| {
        v.iter()
            .filter_map(|s| s["seq"].as_u64())
            .collect::<Vec<_>>()
    };
    let latest = seq_of(get(&node.url("/api/v1/spikes?kind=file&limit=2")).await);
    assert_eq!(latest, seqs[seqs.len() - 2..], "the latest two, ascending");
    let page = seq_of(
        get(&node.url(&format!(
            "/api/v1/spikes?kind=file&since={}&limit=2",
            seqs[0]
        )))
        .await,
    );
    assert_eq!(page, seqs[1..3], "the two after the first");
    let all_decided = seq_of(get(&node.url("/api/v1/decisions?limit=10000")).await);
    let decided = seq_of(get(&node.url("/api/v1/decisions?limit=1")).await);
    assert_eq!(decided.len(), 1);
    assert!(
        decided[0] >= all_decided.iter().copied().max().unwrap_or(0),
        "the latest decision: {decided:?}, then {all_decided:?}"
    );

    // Stopped: change a file and add one. Started again: both are reported as changes made
    // while it was down, and numbering continues upwards.
    assert!(node.stop().success(), "{}", node.log());
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").expect("edit while down");
    std::fs::write(etc.join("c.conf"), "new\n").expect("add while down");
    let node = Node::start(spec);
    let after: Vec<Value> =
        get(&node.url(&format!("/api/v1/spikes?kind=file&since={last_seq}"))).await;
    assert_eq!(
        summary(&after),
        [
            row("file", "added", "/etc/c.conf"),
            row("file", "modified", "/etc/hosts")
        ]
    );
    for s in &after {
        assert_eq!(s["fields"]["when"]["after"], "while_down", "{s}");
        assert_eq!(s["layers"][0], "hash");
        assert!(s["seq"].as_u64() > Some(last_seq));
    }
}

/// 100,000 operations (50,000 creations, then 50,000 modifications) as fast as the disk
/// takes them, with a small event queue so that the overflow path must run. Afterwards a
/// full verification that started after the storm finds the baseline equal to the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_100000_changes_ends_fully_reconciled() {
    const DIRS: usize = 10;
    const FILES: usize = 50_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let etc = data.join("root/etc");
    for d in 0..DIRS {
        std::fs::create_dir_all(etc.join(format!("storm{d}"))).expect("dirs");
    }
    let mut spec = Spec::new("storm", "eu");
    spec.dir = Some(data.clone());
    spec.env = vec![
        ("FLEETMESH__WATCH__VERIFY_INTERVAL_S".into(), "10".into()),
        ("FLEETMESH__WATCH__EVENT_QUEUE".into(), "1024".into()),
    ];
    let node = Node::start(spec);
    eventually("the start-up verification is done", CONVERGE, || async {
        let st = get::<Value>(&node.url("/api/v1/detectors")).await;
        match st["files"]["last_startup_verification_unix_ms"].as_u64() {
            Some(_) => Ok(()),
            None => Err(format!("{st}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = node.rss_kib().expect("the node's RSS");
    // The peak is sampled every 50 ms while the storm is written and reconciled.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        let pid = node.pid();
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kib) = harness::rss_of(pid) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let dir = etc.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..FILES {
            let p = dir.join(format!("storm{}/f{i}", i % DIRS));
            std::fs::write(p, format!("created {i}\n")).expect("create");
        }
        for i in 0..FILES {
            let p = dir.join(format!("storm{}/f{i}", i % DIRS));
            std::fs::write(p, format!("modified {i}\n")).expect("modify");
        }
    })
    .await
    .expect("storm written");

    let status = || async { get::<Value>(&node.url("/api/v1/detectors")).await["files"].clone() };
    let scans_at_end = status().await["layers"]["scans"].as_u64().unwrap_or(0);
    // 1 (/etc) + the directories + the files.
    let expected = (1 + DIRS + FILES) as u64;
    eventually("a verification after the storm agrees with the disk", CONVERGE * 2, || async {
        let st = status().await;
        let layers = &st["layers"];
        let scans = layers["scans"].as_u64().unwrap_or(0);
        let entries = st["entries"].as_u64().unwrap_or(0);
        let last = layers["last_scan_changes"].as_u64();
        // A scan that *started* after the storm: two completions past the count at its end.
        if scans >= scans_at_end + 2 && entries == expected && last == Some(0) {
            Ok(())
        } else {
            Err(format!("entries {entries}/{expected}, scans {scans} (storm ended at {scans_at_end}), last scan changes {last:?}"))
        }
    })
    .await;
    let st = status().await;
    assert!(
        st["layers"]["overflow_rescans"].as_u64() >= Some(1),
        "the overflow path did not run: {st}"
    );
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("sampler");
    let (peak, after) = (
        peak.load(std::sync::atomic::Ordering::Relaxed),
        node.rss_kib().unwrap_or(0),
    );
    eprintln!("storm RSS: idle {idle} KiB, peak {peak} KiB, after {after} KiB");
    // A guard against unbounded queues, not yet the goal (twice the idle size plus the
    // queues' bounds): before the queues were bounded, a debug node took about 980 MiB
    // here and was still growing; bounded, 350-600 MiB (BENCHMARKS.md, "storm").
    assert!(
        peak <= 2 * idle + 768 * 1024,
        "RSS grew from {idle} KiB idle to {peak} KiB during the storm"
    );
}

/// A new listening socket on the host is a `network` spike naming the process that holds
/// it; closing it is another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_listener_is_a_network_spike() {
    let mut spec = Spec::new("net", "eu");
    spec.env = vec![("FLEETMESH__PROBES__NETWORK_POLL_MS".into(), "100".into())];
    let node = Node::start(spec);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let subject = format!(
        "listen tcp 127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let changes = |want: &'static str| {
        let subject = subject.clone();
        let node = &node;
        async move {
            let list: Vec<Value> = get(&node.url("/api/v1/spikes?kind=network")).await;
            let n = list
                .iter()
                .filter(|s| s["subject"] == subject.as_str() && s["change"] == want)
                .count();
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} `{want}` spikes for {subject}: {list:?}"))
            }
        }
    };
    eventually("the listener is reported", CONVERGE, || changes("added")).await;
    // This test process holds the socket: the spike names it.
    let list: Vec<Value> = get(&node.url("/api/v1/spikes?kind=network")).await;
    let added = list
        .iter()
        .find(|s| s["subject"] == subject.as_str() && s["change"] == "added")
        .expect("the added spike");
    assert_eq!(
        added["fields"]["pid"]["after"].as_u64(),
        Some(u64::from(std::process::id())),
        "{added}"
    );
    let exe = std::env::current_exe().expect("exe");
    assert_eq!(
        added["fields"]["exe"]["after"].as_str(),
        exe.to_str(),
        "{added}"
    );
    drop(listener);
    eventually("its closing is reported", CONVERGE, || changes("removed")).await;
}

/// A process started from an unusual path is a `process` spike, and so is its exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_from_an_unusual_path_is_a_process_spike() {
    let mut spec = Spec::new("procs", "eu");
    spec.env = vec![("FLEETMESH__PROBES__PROCESS_POLL_MS".into(), "100".into())];
    let node = Node::start(spec);
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = tmp.path().join("sleep");
    std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
    let mut child = std::process::Command::new(&exe)
        .arg("60")
        .spawn()
        .expect("runs");
    let subject = format!("{}:{}", child.id(), exe.display());
    let seen = |change: &'static str| {
        let (node, subject) = (&node, subject.clone());
        async move {
            let list: Vec<Value> = get(&node.url("/api/v1/spikes?kind=process")).await;
            match list
                .iter()
                .find(|s| s["subject"] == subject.as_str() && s["change"] == change)
            {
                Some(s) => Ok(s.clone()),
                None => Err(format!("no `{change}` spike for {subject}")),
            }
        }
    };
    eventually("the start is reported", CONVERGE, || async {
        seen("added").await.map(drop)
    })
    .await;
    let started = seen("added").await.expect("seen");
    assert_eq!(started["fields"]["suspicion"]["after"], "unusual_path");
    assert_eq!(started["severity"], "high");
    assert_eq!(
        started["fields"]["cmdline"]["after"],
        format!("{} 60", exe.display())
    );
    child.kill().expect("kill");
    child.wait().expect("reaped");
    eventually("the exit is reported", CONVERGE, || async {
        seen("removed").await.map(drop)
    })
    .await;
}

/// A node that cannot make its spike sequence durable stops with an error naming the file,
/// rather than publish numbers it could reuse; the changes it could not publish are found
/// again, as made while it was down, at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_persist_its_sequence_stops_and_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("seq");
    let mut spec = Spec::new("seq", "eu");
    spec.dir = Some(dir.clone());
    let mut node = Node::start(spec.clone());
    let etc = dir.join("root/etc");
    // The next block of sequence numbers cannot be written: its temporary file is taken.
    std::fs::create_dir(dir.join("spike-seq.tmp")).expect("block the sequence file");
    // More changes than one block of 1,024 numbers.
    for i in 0..1100 {
        std::fs::write(etc.join(format!("f{i}")), b"x\n").expect("write");
    }
    let deadline = std::time::Instant::now() + CONVERGE;
    let status = loop {
        if let Some(s) = node.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node kept running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status}");
    let log = node.log();
    assert!(
        log.contains("spike encoder stopped") && log.contains("spike-seq"),
        "{log}"
    );

    std::fs::remove_dir(dir.join("spike-seq.tmp")).expect("unblock");
    let node = Node::start(spec);
    eventually(
        "the last change, found again at start",
        CONVERGE,
        || async {
            let list = spikes(&node).await;
            let found = list.iter().any(|s| {
                s["subject"] == "/etc/f1099"
                    && s["change"] == "added"
                    && s["fields"]["when"]["after"] == "while_down"
            });
            if found {
                Ok(())
            } else {
                Err(format!(
                    "{} spikes, no /etc/f1099 added while down",
                    list.len()
                ))
            }
        },
    )
    .await;
}

/// A node whose start-up verification takes seconds (6 MiB to hash at 1 MiB/s) answers
/// liveness at once and says how far it has come, then becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_liveness_while_its_start_up_verification_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let big = data.join("root/etc/big");
    std::fs::create_dir_all(&big).expect("etc/big");
    for i in 0..24 {
        std::fs::write(big.join(format!("f{i:02}")), vec![i as u8; 256 * 1024]).expect("file");
    }
    // A first run records the baseline; then /etc/aaa/conf (read before /etc/big) changes
    // while the node is down.
    let conf = data.join("root/etc/aaa/conf");
    std::fs::create_dir_all(conf.parent().expect("dir")).expect("etc/aaa");
    std::fs::write(&conf, "one\n").expect("conf");
    {
        let mut first = Spec::new("slow-start", "eu");
        first.dir = Some(data.clone());
        let mut node = Node::start(first);
        eventually("the first run ready", CONVERGE, || async {
            match reqwest::get(node.url("/readyz")).await {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        node.stop();
    }
    std::fs::write(&conf, "two\n").expect("conf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut spec = Spec::new("slow-start", "eu");
    spec.dir = Some(data);
    spec.extra_args = vec!["--api-listen".into(), format!("127.0.0.1:{port}")];
    spec.env
        .push(("FLEETMESH__WATCH__HASH_RATE_MIB_S".into(), "1".into()));
    let starting = tokio::task::spawn_blocking(move || Node::start(spec));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .ok()?;
            let code = r.status().as_u16();
            Some((code, r.json::<Value>().await.ok()?))
        }
    };
    // (liveness code, readiness code, entries read) while starting.
    let mut starting_seen = Vec::new();
    // Whether the change made while down was published before the verification ended.
    let mut published_while_starting = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {starting_seen:?}"
        );
        if let (Some((live, _)), Some((ready, body))) =
            (get("/healthz").await, get("/readyz").await)
        {
            if ready == 200 {
                assert_eq!(body["status"], "ready");
                break;
            }
            assert_eq!(ready, 503, "{body}");
            assert_eq!(body["status"], "starting", "{body}");
            starting_seen.push((live, body["verification"]["entries_read"].as_u64()));
            if let Some((200, spikes)) = get("/api/v1/spikes?kind=file").await
                && spikes
                    .as_array()
                    .is_some_and(|l| l.iter().any(|s| s["subject"] == "/etc/aaa/conf"))
            {
                published_while_starting = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        starting_seen.len() >= 5,
        "the verification was seen running: {starting_seen:?}"
    );
    assert!(
        starting_seen.iter().all(|(live, _)| *live == 200),
        "liveness answered throughout: {starting_seen:?}"
    );
    assert!(
        published_while_starting,
        "a change found early in the verification is published before it ends"
    );
    let read: Vec<u64> = starting_seen.iter().filter_map(|(_, r)| *r).collect();
    assert!(read.windows(2).all(|w| w[0] <= w[1]), "{read:?}");
    assert!(read.iter().any(|r| *r > 0), "progress shown: {read:?}");
    let node = starting.await.expect("started");
    let (code, _) = get("/readyz").await.expect("answers");
    assert_eq!(code, 200);
    drop(node);
}
