//! One storm, one event, on a real region of three web servers: the same change to 200
//! files on all three, once without a package manager running and once while one runs
//! (its log written first), is each time one fleet event listing the 200 subjects, one
//! notification at a webhook and at most one emergency (none for the upgrade). A role of
//! three servers forms fleet events at all (two of them are at least half of it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::alerts::{Receiver, notifications};
use crate::harness::{CONVERGE, Node, Spec, get, wait_for};
use crate::policy::{GROUP, PASSWD, policies};

const NAMES: [&str; 3] = ["st0", "st1", "st2"];
const SUBJECTS: usize = 200;
/// The correlation window: long enough that a loaded machine keeps a storm in one.
const WINDOW_S: u64 = 10;

fn start(
    name: &str,
    tmp: &Path,
    config: &Path,
    policy: &Path,
    first: Option<&Node>,
) -> (Node, PathBuf) {
    let data = tmp.join(name);
    let root = data.join("root");
    std::fs::create_dir_all(root.join("etc")).expect("etc");
    std::fs::create_dir_all(root.join("var/log")).expect("var/log");
    std::fs::write(root.join("etc/passwd"), PASSWD).expect("passwd");
    std::fs::write(root.join("etc/group"), GROUP).expect("group");
    let mut spec = Spec::new(name, "storm");
    spec.dir = Some(data);
    spec.bootstrap = first.map(|n| n.addr(true)).into_iter().collect();
    spec.extra_args = vec!["--config".into(), config.display().to_string()];
    for (k, v) in [
        ("FLEETMESH__POLICY__DIR", policy.display().to_string()),
        ("FLEETMESH__REGION__VOTERS", NAMES.join(",")),
        // A master slowed down by a loaded machine still answers.
        ("FLEETMESH__FLEET__CONSULT_TIMEOUT_MS", "15000".into()),
        ("FLEETMESH__METRICS__INTERVAL_MS", "3600000".into()),
        ("FLEETMESH__PROBES__PROCESS_POLL_MS", "3600000".into()),
        ("FLEETMESH__PROBES__NETWORK_POLL_MS", "3600000".into()),
    ] {
        spec.env.push((k.into(), v));
    }
    (Node::start(spec), root)
}

/// The same `SUBJECTS` files under `dir` (e.g. `etc/storm-a`) on every root, one server
/// after the other. Each file is written whole, then moved in (as package managers do):
/// a file seen half-written would be another change.
fn storm(roots: &[PathBuf], dir: &str, content: &str) {
    for root in roots {
        let d = root.join(dir);
        let staging = root.join("staging");
        std::fs::create_dir_all(&d).expect("storm dir");
        std::fs::create_dir_all(&staging).expect("staging dir");
        for i in 0..SUBJECTS {
            let name = format!("f{i:03}.conf");
            std::fs::write(staging.join(&name), format!("{content} {i}\n")).expect("storm file");
            std::fs::rename(staging.join(&name), d.join(&name)).expect("moved in");
        }
    }
}

async fn fleet(node: &Node) -> Value {
    get(&node.url("/api/v1/fleet")).await
}

/// The fleet events `node` holds that `keep` selects.
async fn fleet_events(node: &Node, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    fleet(node).await["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| keep(e))
        .collect()
}

/// The fleet events `node` holds about files under `prefix`, by source.
async fn events(node: &Node, prefix: &str, source: &str) -> Vec<Value> {
    fleet_events(node, |e| {
        e["source"] == source
            && e["event"]["fingerprint"]["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with(prefix))
    })
    .await
}

/// The raised events `node` holds that list the storm's files under `dir` (e.g.
/// `/etc/storm-a`): every one of them.
async fn holding(node: &Node, dir: &str) -> Vec<Value> {
    let inside = format!("{dir}/");
    fleet_events(node, |e| {
        e["source"] == "raised"
            && e["event"]["subjects"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|s| s.as_str().is_some_and(|s| s.starts_with(&inside)))
            })
    })
    .await
}

/// The storm's one event at the master, once it holds the directory and its 200 files
/// from all three servers.
async fn storm_event(master: &Node, dir: &str) -> Value {
    wait_for(
        &format!("the master's one event holding {dir}"),
        CONVERGE,
        || async {
            let ev = holding(master, dir).await;
            let whole = |e: &Value| {
                let listed: Vec<&str> = e["event"]["subjects"]
                    .as_array()
                    .map(|l| l.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                e["event"]["origins"].as_object().map(|o| o.len()) == Some(3)
                    && listed.contains(&dir)
                    && (0..SUBJECTS)
                        .all(|i| listed.contains(&format!("{dir}/f{i:03}.conf").as_str()))
            };
            match &ev[..] {
                [e] if whole(e) => Ok(e.clone()),
                _ => Err(format!(
                    "{} events: {ev:?}; the master's fleet: {}",
                    ev.len(),
                    fleet(master).await
                )),
            }
        },
    )
    .await
}

/// Each notification's alert names and subjects, for a failure's message.
fn brief(told: &[Value]) -> Vec<String> {
    told.iter()
        .map(|n| {
            let alerts: Vec<String> = n["alerts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| format!("{} {}", a["labels"]["alertname"], a["labels"]["subject"]))
                        .collect()
                })
                .unwrap_or_default();
            format!("{}: {}", n["group_key"], alerts.join("; "))
        })
        .collect()
}

/// Every server's decisions about files under `prefix` final (a held consultation is
/// asked again a window later); returns their rules.
async fn settled(nodes: &[Node], prefix: &str, count: usize) -> Vec<String> {
    let mut rules = Vec::new();
    for n in nodes {
        let got = wait_for(
            &format!("{}: {count} decisions under {prefix} final", n.name),
            CONVERGE,
            || async {
                let list: Vec<Value> = get(&n.url("/api/v1/decisions?limit=10000")).await;
                let mine: Vec<Value> = list
                    .into_iter()
                    .filter(|d| {
                        d["kind"] == "file"
                            && d["subject"].as_str().is_some_and(|s| s.starts_with(prefix))
                    })
                    .collect();
                let done = mine
                    .iter()
                    .filter(|d| {
                        d["decision"] != "consult"
                            || (d["settled"].is_object() && d["settled"]["held"] != true)
                    })
                    .count();
                if mine.len() >= count && done == mine.len() {
                    Ok(mine)
                } else {
                    Err(format!("{} of {} settled", done, mine.len()))
                }
            },
        )
        .await;
        rules.extend(got.iter().map(|d| {
            d["settled"]["rule"]
                .as_str()
                .or(d["rule"].as_str())
                .unwrap_or_default()
                .to_string()
        }));
    }
    rules
}

/// Every server's decisions about files under `prefix` (at least `count` each) final,
/// each by a rule `ok` accepts.
async fn final_by(nodes: &[Node], prefix: &str, count: usize, ok: impl Fn(&str) -> bool) {
    let rules = settled(nodes, prefix, count).await;
    let odd: Vec<&String> = rules.iter().filter(|r| !ok(r)).take(5).collect();
    assert!(odd.is_empty(), "{prefix}: decided otherwise by {odd:?}");
}

/// An upgrade's rule: the master's (`fleet:upgrade`) or the node's own reading of the
/// package manager's log (`upgrade:<log>`).
fn upgrade(rule: &str) -> bool {
    rule == "fleet:upgrade" || rule.starts_with("upgrade:")
}

/// The master's events are closed (their window passed) and its groups expired.
async fn quiet(master: &Node) {
    wait_for(
        "the master's correlation window empty",
        CONVERGE,
        || async {
            let f = fleet(master).await;
            if f["open_groups"] == 0 && f["open_events"] == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{} groups, {} events",
                    f["open_groups"], f["open_events"]
                ))
            }
        },
    )
    .await
}

/// The `n`-th notification at the webhook (from 1), once the master's window is empty
/// and anything raised late had its group wait: none after it; its one alert.
async fn only_notification(receiver: &Receiver, master: &Node, n: usize) -> Value {
    wait_for(&format!("notification {n}"), CONVERGE, || async {
        let got = notifications(receiver, "/hook").len();
        (got >= n)
            .then_some(())
            .ok_or_else(|| format!("{got} so far"))
    })
    .await;
    quiet(master).await;
    // Past the group wait of anything raised late.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = notifications(receiver, "/hook");
    assert_eq!(sent.len(), n, "one notification more: {:#?}", brief(&sent));
    let alerts = sent[n - 1]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(alerts.len(), 1, "{:#?}", brief(&sent));
    alerts[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_one_change_to_200_files_on_three_servers_is_one_event_and_one_notification() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[watch]\npaths = [\"/etc\", \"/var/log\"]\n\
             [fleet]\nwindow_s = {WINDOW_S}\n\
             [alerts.route]\ngroup_wait_ms = 2000\ngroup_interval_ms = 120000\n\
             [[alerts.receivers]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n\
             retry_min_ms = 200\nretry_max_ms = 1000\n",
            receiver.url("/hook")
        ),
    )
    .expect("node config");
    let policy = policies(tmp.path());
    let mut nodes: Vec<Node> = Vec::new();
    let mut roots = Vec::new();
    for name in NAMES {
        let (n, root) = start(name, tmp.path(), &config, &policy, nodes.first());
        nodes.push(n);
        roots.push(root);
    }
    crate::harness::settled(&nodes[0], 1, NAMES.len()).await;
    let lead = wait_for("one master known to every node", CONVERGE, || async {
        let mut seen = Vec::new();
        for n in &nodes {
            seen.push(crate::harness::master_name(n).await);
        }
        match &seen[0] {
            Some(m) if seen.iter().all(|s| s.as_ref() == Some(m)) => Ok(m.clone()),
            _ => Err(format!("{seen:?}")),
        }
    })
    .await;
    let m = nodes.iter().position(|n| n.name == lead).expect("a member");

    // 1. No package manager: a suspected coordinated change of 201 subjects (the new
    // directory and its 200 files).
    storm(&roots, "etc/storm-a", "a");
    let event = storm_event(&nodes[m], "/etc/storm-a").await;
    assert_eq!(
        event["event"]["verdict"], "suspected_coordinated_change",
        "{event}"
    );
    assert_eq!(event["event"]["subjects_total"], SUBJECTS + 1, "{event}");
    // Every server's consultations end covered by the event (the rechecks come a window
    // later): no server raises an alert of its own.
    final_by(&nodes, "/etc/storm-a", SUBJECTS, |r| {
        r == "fleet:suspected_coordinated_change"
    })
    .await;
    let alert = only_notification(&receiver, &nodes[m], 1).await;
    assert_eq!(alert["labels"]["alertname"], "suspected_coordinated_change");
    assert_eq!(holding(&nodes[m], "/etc/storm-a").await.len(), 1);
    for (i, n) in nodes.iter().enumerate() {
        let heard = events(n, "/etc/storm-a", "emergency").await;
        assert!(heard.len() <= 1, "{}: {heard:#?}", n.name);
        if i != m {
            assert_eq!(heard.len(), 1, "{} heard the emergency", n.name);
        }
    }

    // 2. A package manager runs on every server (its log is written first): an upgrade
    // of 200 subjects, told at info, with no emergency.
    for root in &roots {
        std::fs::write(
            root.join("var/log/dpkg.log"),
            "2026-12-01 10:00:00 startup archives unpack\n",
        )
        .expect("dpkg log");
    }
    final_by(&nodes, "/var/log/dpkg.log", 1, upgrade).await;
    storm(&roots, "etc/storm-b", "b");
    // The package manager's log, changed alike on the three servers in the same window,
    // is part of the same event.
    let event = storm_event(&nodes[m], "/etc/storm-b").await;
    assert_eq!(event["event"]["verdict"], "upgrade", "{event}");
    final_by(&nodes, "/etc/storm-b", SUBJECTS, upgrade).await;
    let alert = only_notification(&receiver, &nodes[m], 2).await;
    assert_eq!(alert["labels"]["alertname"], "upgrade");
    assert_eq!(alert["labels"]["severity"], "info");
    assert_eq!(holding(&nodes[m], "/etc/storm-b").await.len(), 1);
    for n in &nodes {
        let heard = fleet_events(n, |e| e["source"] == "emergency").await;
        assert!(heard.len() <= 1, "{}: only the first storm's", n.name);
    }
}
