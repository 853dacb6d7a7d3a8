//! One change, one spike, across a crash: a node killed with SIGKILL right after a burst
//! of file changes (journaled, published and taken in by the master, but not yet in the
//! saved file baseline) reports none of them again at restart, and the master's intake
//! moves past the sequence numbers the crash left unused within seconds of the restart,
//! without waiting for a replay to tell it. Then a crash loop (three more kills, each as
//! soon as the node is ready): the intake passes every gap within seconds of the last start.
//! The same for users and groups on a lone node: each change one spike across kills.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, get, wait_for};

const NAMES: [&str; 3] = ["k0", "k1", "k2"];
const BURST: usize = 40;
/// A bound against hangs; the goal (about 5 s) is reported, not asserted.
const CATCH_UP: Duration = Duration::from_secs(15);

fn spec(i: usize, dir: PathBuf, bootstrap: Option<String>) -> Spec {
    let mut s = Spec::new(NAMES[i], "crash");
    s.dir = Some(dir);
    s.env
        .push(("FLEETMESH__REGION__VOTERS".into(), NAMES.join(",")));
    s.env
        .push(("FLEETMESH__HEARTBEAT__INTERVAL_MS".into(), "1000".into()));
    s.bootstrap = bootstrap.into_iter().collect();
    s
}

/// The master `node` names, if any.
async fn master_seen_by(node: &Node) -> Option<String> {
    let r: Value = get(&node.url("/api/v1/region")).await;
    r["master"]["peer_id"].as_str().map(str::to_string)
}

/// `master`'s intake counters for `origin`: (mark, skipped).
async fn intake(master: &Node, origin: &str) -> (u64, u64) {
    let r: Value = get(&master.url("/api/v1/region")).await;
    let o = &r["intake"][origin];
    (
        o["mark"].as_u64().unwrap_or(0),
        o["skipped"].as_u64().unwrap_or(0),
    )
}

/// The node's file spikes about the burst: subject -> every (seq, when) reported.
async fn burst_spikes(node: &Node) -> BTreeMap<String, Vec<(u64, String)>> {
    let list: Vec<Value> = get(&node.url("/api/v1/spikes?kind=file&limit=10000")).await;
    let mut out: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for s in &list {
        let subject = s["subject"].as_str().unwrap_or_default();
        if subject.contains("burst-") {
            out.entry(subject.to_string()).or_default().push((
                s["seq"].as_u64().unwrap_or(0),
                s["fields"]["when"]["after"]
                    .as_str()
                    .unwrap_or("live")
                    .to_string(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_a_burst_reports_each_change_once_and_the_intake_catches_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = NAMES.iter().map(|n| tmp.path().join(n)).collect();
    let first = Node::start(spec(0, dirs[0].clone(), None));
    let boot = first.addr(true);
    let mut nodes = vec![Some(first)];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        nodes.push(Some(Node::start(spec(i, dir.clone(), Some(boot.clone())))));
    }
    let master_id = wait_for("one master for all three", CONVERGE, || {
        let nodes = &nodes;
        async move {
            let mut seen = None;
            for n in nodes.iter().flatten() {
                let m = master_seen_by(n).await.ok_or("no master yet")?;
                if seen.as_ref().is_some_and(|s| *s != m) {
                    return Err(format!("{seen:?} and {m}"));
                }
                seen = Some(m);
            }
            seen.ok_or_else(|| "no nodes".to_string())
        }
    })
    .await;
    let m = nodes
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.peer_id() == master_id))
        .expect("the master is one of the three");
    // The victim is a follower: the master stays put while it crashes.
    let v = (m + 1) % NAMES.len();
    let master = nodes[m].take().expect("master");
    let mut victim = nodes[v].take().expect("victim");
    let victim_id = victim.peer_id().to_string();
    let victim_dir = dirs[v].clone();

    {
        let (victim, master) = (&victim, &master);
        wait_for(
            "the victim in step with the master",
            CONVERGE,
            || async move {
                let s = victim.node().await.sync.ok_or("no sync report")?;
                let (mark, _) = intake(master, victim.peer_id()).await;
                if s.last_seq > 0 && s.acked == s.last_seq && mark > 0 {
                    Ok(())
                } else {
                    Err(format!("{s:?}, master mark {mark}"))
                }
            },
        )
        .await;
    }

    // The burst: journaled, published and taken in by the master, then kill -9 at once
    // (the baseline is saved at most every 5 s; the kill comes well within that).
    let etc = victim_dir.join("root/etc");
    let burst_at = Instant::now();
    for i in 0..BURST {
        std::fs::write(etc.join(format!("burst-{i:02}.conf")), format!("v {i}\n"))
            .expect("write a change");
    }
    let top = {
        let (victim, master) = (&victim, &master);
        wait_for(
            "the burst journaled and taken in by the master",
            CONVERGE,
            || async move {
                let seen = burst_spikes(victim).await;
                if seen.len() < BURST {
                    return Err(format!("{} of {BURST} journaled", seen.len()));
                }
                let top = seen.values().flatten().map(|(s, _)| *s).max().unwrap_or(0);
                let (mark, _) = intake(master, victim.peer_id()).await;
                if mark >= top {
                    Ok(top)
                } else {
                    Err(format!("master mark {mark} below {top}"))
                }
            },
        )
        .await
    };
    victim.child.kill().expect("kill -9");
    victim.child.wait().expect("reaped");
    let killed_after = burst_at.elapsed();
    let reserved: u64 = std::fs::read_to_string(victim_dir.join("spike-seq"))
        .expect("the durable reservation")
        .trim()
        .parse()
        .expect("a number");
    let (_, skipped_before) = intake(&master, &victim_id).await;

    // Restart from the same data dir.
    let restarted_at = Instant::now();
    let victim = Node::start(spec(v, victim_dir.clone(), Some(master.addr(true))));
    let ready_after = restarted_at.elapsed();
    let caught_up = {
        let (victim, master) = (&victim, &master);
        wait_for(
            "the master's intake past the unused numbers",
            CATCH_UP,
            || async move {
                let (mark, _) = intake(master, victim.peer_id()).await;
                if mark > reserved {
                    Ok(restarted_at.elapsed())
                } else {
                    let s = victim.node().await.sync;
                    Err(format!(
                        "master mark {mark}, reservation before the crash {reserved}, node {s:?}"
                    ))
                }
            },
        )
        .await
    };

    // Each change of the burst is one spike: none reported again as made while down.
    let seen = burst_spikes(&victim).await;
    assert_eq!(seen.len(), BURST, "{seen:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "changes reported more than once across the crash: {twice:?}\n{}",
        victim.log()
    );
    assert!(seen.values().flatten().all(|(s, _)| *s <= top));
    // Only the numbers the crash left unused were skipped: the journal's last number
    // before the crash is the highest at or below the reservation.
    let all: Vec<Value> = get(&victim.url("/api/v1/spikes?limit=10000")).await;
    let journaled = all
        .iter()
        .filter_map(|s| s["seq"].as_u64())
        .filter(|s| *s <= reserved)
        .max()
        .expect("spikes from before the crash");
    let (mark, skipped) = intake(&master, &victim_id).await;
    assert!(mark > reserved);
    assert_eq!(
        skipped - skipped_before,
        reserved - journaled,
        "the master skipped exactly the unused numbers {}..={reserved}",
        journaled + 1
    );
    // Whether the kill came before the baseline's save (the case this test is about) or
    // after it (then there was nothing to fold).
    let folded = victim
        .log()
        .lines()
        .find(|l| l.contains("file baseline brought up to date from the journal"))
        .map(str::to_string);
    eprintln!(
        "burst of {BURST} changes, kill -9 {killed_after:?} after it; restart ready after \
         {ready_after:?}; the master's intake past the {} unused numbers {caught_up:?} after \
         the restart; fold at start: {folded:?}",
        reserved - journaled
    );

    // A crash loop: three more kills, each right after the node is ready, every run
    // leaving a gap of its own; the intake passes them all within seconds of the last start.
    let mut victim = victim;
    let mut reserved = reserved;
    for _ in 0..3 {
        victim.child.kill().expect("kill -9");
        victim.child.wait().expect("reaped");
        reserved = std::fs::read_to_string(victim_dir.join("spike-seq"))
            .expect("the durable reservation")
            .trim()
            .parse()
            .expect("a number");
        victim = Node::start(spec(v, victim_dir.clone(), Some(master.addr(true))));
    }
    let looped_at = Instant::now();
    let loop_caught_up = {
        let (victim, master) = (&victim, &master);
        wait_for(
            "the master's intake past the crash loop's gaps",
            CATCH_UP,
            || async move {
                let (mark, _) = intake(master, victim.peer_id()).await;
                if mark > reserved {
                    Ok(looped_at.elapsed())
                } else {
                    Err(format!("master mark {mark}, last reservation {reserved}"))
                }
            },
        )
        .await
    };
    let seen = burst_spikes(&victim).await;
    assert!(
        seen.values().all(|v| v.len() == 1),
        "reported twice after the crash loop: {seen:?}"
    );
    eprintln!(
        "after a crash loop of 3 more kills: intake caught up {loop_caught_up:?} after the last start"
    );
}

/// Account files of the users-and-groups test: (passwd, group) lines beyond root's.
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Accounts {
    /// Writes passwd and group as `useradd` does: whole new files renamed into place, so
    /// that the probe never reads one half written.
    fn write(&self, etc: &std::path::Path) {
        for (name, lines, first) in [
            ("passwd", &self.users, "root:x:0:0:root:/root:/bin/bash"),
            ("group", &self.groups, "root:x:0:"),
        ] {
            let text: String = std::iter::once(first)
                .chain(lines.iter().map(String::as_str))
                .map(|l| format!("{l}\n"))
                .collect();
            let tmp = etc.join(format!(".{name}.new"));
            std::fs::write(&tmp, text).expect("write account file");
            std::fs::rename(&tmp, etc.join(name)).expect("rename into place");
        }
    }

    fn user(&mut self, name: &str, uid: u32, shell: &str) {
        self.users.retain(|l| !l.starts_with(&format!("{name}:")));
        self.users
            .push(format!("{name}:x:{uid}:{uid}::/home/{name}:{shell}"));
    }

    fn remove_user(&mut self, name: &str) {
        self.users.retain(|l| !l.starts_with(&format!("{name}:")));
    }

    fn group(&mut self, name: &str, gid: u32, members: &str) {
        self.groups.retain(|l| !l.starts_with(&format!("{name}:")));
        self.groups.push(format!("{name}:x:{gid}:{members}"));
    }
}

/// The node's user and group spikes: (kind, change, subject) -> when each was reported
/// (`live` or `while_down`).
async fn account_spikes(node: &Node) -> BTreeMap<(String, String, String), Vec<String>> {
    let mut out: BTreeMap<_, Vec<String>> = BTreeMap::new();
    for kind in ["user", "group"] {
        let list: Vec<Value> =
            get(&node.url(&format!("/api/v1/spikes?kind={kind}&limit=10000"))).await;
        for s in &list {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            out.entry((f("kind"), f("change"), f("subject")))
                .or_default()
                .push(
                    s["fields"]["when"]["after"]
                        .as_str()
                        .unwrap_or("live")
                        .to_string(),
                );
        }
    }
    out
}

fn key(kind: &str, change: &str, subject: &str) -> (String, String, String) {
    (kind.into(), change.into(), subject.into())
}

/// Waits until `node` has saved its accounts snapshot after `since` (its start-up reading
/// always saves), so that what it reports at start is all there.
async fn accounts_saved_after(node: &Node, since: std::time::SystemTime) {
    let path = node.dir.join("accounts.rmp");
    wait_for(
        "the start-up reading of the accounts saved",
        CONVERGE,
        || {
            let path = path.clone();
            async move {
                let at = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map_err(|e| e.to_string())?;
                if at > since {
                    Ok(())
                } else {
                    Err(format!("{} not written since the start", path.display()))
                }
            }
        },
    )
    .await;
}

/// Waits until every change in `want` is reported (at least once), then checks that every
/// user and group change is reported exactly once, and when: `while_down` for those in
/// `down`, live for the others.
async fn each_once(
    node: &Node,
    want: &[(String, String, String)],
    down: &[(String, String, String)],
) {
    let seen = wait_for("the account changes reported", CONVERGE, || async {
        let seen = account_spikes(node).await;
        match want.iter().find(|k| !seen.contains_key(*k)) {
            None => Ok(seen),
            Some(k) => Err(format!("{k:?} not reported: {seen:?}")),
        }
    })
    .await;
    let twice: Vec<_> = seen.iter().filter(|(_, w)| w.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "account changes reported more than once: {twice:?}\n{}",
        node.log()
    );
    for (k, when) in &seen {
        let expected = if down.contains(k) {
            "while_down"
        } else {
            "live"
        };
        assert_eq!(when[0], expected, "{k:?}: {seen:?}");
    }
    let unexpected: Vec<_> = seen.keys().filter(|k| !want.contains(k)).collect();
    assert!(unexpected.is_empty(), "not made: {unexpected:?}");
}

/// One change, one spike, across a crash, for users and groups: a node killed with SIGKILL
/// right after adding users and groups reports each change once at restart, none again as
/// made while it was down, none lost. Then the crash the snapshot exists for, forced: the
/// kill comes after the changes are journaled and before the snapshot reflecting them is
/// saved (the snapshot from before them is put back, which is what such a kill leaves on
/// disk); the start folds the journal into it, and only the changes really made while the
/// node was down are reported as such. A last kill right after the next start (before its
/// start-up reading is saved, most likely) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_account_changes_reports_each_once_and_loses_none() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("acct");
    let etc = dir.join("root/etc");
    std::fs::create_dir_all(&etc).expect("etc");
    let mut files = Accounts {
        users: vec!["alice:x:1000:1000:Alice:/home/alice:/bin/bash".into()],
        groups: vec!["alice:x:1000:".into(), "sudo:x:27:alice".into()],
    };
    files.write(&etc);
    let spec = || {
        let mut s = Spec::new("acct", "crash-acct");
        s.dir = Some(dir.clone());
        s
    };
    let started = std::time::SystemTime::now();
    let mut node = Node::start(spec());
    accounts_saved_after(&node, started).await;
    let mut want = Vec::new();

    // Changes one after another, each its own reading, then kill -9 as soon as the last
    // is journaled.
    for i in 0..5 {
        let name = format!("one-{i}");
        files.user(&name, 2000 + i, "/bin/sh");
        files.write(&etc);
        want.push(key("user", "added", &name));
    }
    files.group("team", 3000, "one-0,one-1");
    files.write(&etc);
    want.push(key("group", "added", "team"));
    {
        let (node, want) = (&node, &want);
        wait_for("the first changes journaled", CONVERGE, || async move {
            let seen = account_spikes(node).await;
            match want.iter().find(|k| !seen.contains_key(*k)) {
                None => Ok(()),
                Some(k) => Err(format!("{k:?} not yet")),
            }
        })
        .await;
    }
    node.kill9();
    let restarted = std::time::SystemTime::now();
    let mut node = Node::start(spec());
    accounts_saved_after(&node, restarted).await;
    each_once(&node, &want, &[]).await;

    // The crash window, forced: the snapshot as saved before the next changes.
    let saved = std::fs::read(dir.join("accounts.rmp")).expect("the saved snapshot");
    for i in 0..3 {
        let name = format!("two-{i}");
        files.user(&name, 2100 + i, "/bin/sh");
        files.write(&etc);
        want.push(key("user", "added", &name));
    }
    files.user("alice", 1000, "/bin/zsh");
    files.group("team", 3000, "one-0,one-1,alice");
    files.remove_user("one-0");
    files.write(&etc);
    want.push(key("user", "modified", "alice"));
    want.push(key("group", "modified", "team"));
    want.push(key("user", "removed", "one-0"));
    {
        let (node, want) = (&node, &want);
        wait_for("the second changes journaled", CONVERGE, || async move {
            let seen = account_spikes(node).await;
            match want.iter().find(|k| !seen.contains_key(*k)) {
                None => Ok(()),
                Some(k) => Err(format!("{k:?} not yet")),
            }
        })
        .await;
    }
    node.kill9();
    std::fs::write(dir.join("accounts.rmp"), &saved).expect("the older snapshot back");
    // Made while the node is down: reported once, as such.
    files.user("late", 2200, "/bin/sh");
    files.remove_user("one-1");
    files.write(&etc);
    let down = [
        key("user", "added", "late"),
        key("user", "removed", "one-1"),
    ];
    want.extend(down.iter().cloned());
    let restarted = std::time::SystemTime::now();
    let mut node = Node::start(spec());
    accounts_saved_after(&node, restarted).await;
    each_once(&node, &want, &down).await;
    let log = node.log();
    let folded = log
        .lines()
        .find(|l| l.contains("accounts snapshot brought up to date from the journal"))
        .unwrap_or_else(|| panic!("no fold at start:\n{log}"))
        .to_string();
    eprintln!("fold at start: {folded}");

    // Killed again right after the next start, then started once more: nothing new.
    node.kill9();
    let mut node = Node::start(spec());
    node.kill9();
    let restarted = std::time::SystemTime::now();
    let node = Node::start(spec());
    accounts_saved_after(&node, restarted).await;
    each_once(&node, &want, &down).await;
}
