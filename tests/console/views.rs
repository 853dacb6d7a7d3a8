//! The console's views on a real 5-node, 2-region cluster (eu: e0, e1, e2; us: u0, u1),
//! in a real headless Chromium: the page served by e0 shows every node and both masters,
//! a file change on e0 in e0's timeline and as an alert, one on e1 in e1's timeline, and
//! a node killed -9 turning dead without a reload; no console errors. A screenshot of each view is written under
//! `target/console/`.

use std::time::Duration;

use serde_json::Value;

use crate::browser::Browser;
use crate::harness::{CONVERGE, get, settled, two_regions};

const NODES: &str = "#graph g.node";

/// `name:status` of every node the graph draws, sorted.
const GRAPH: &str = "return [...document.querySelectorAll('#graph g.node')]
    .map(n => n.dataset.node + ':' + n.dataset.status).sort().join(',')";

/// `region=master` of every region the graph draws, for regions with a master.
const MASTERS: &str = "return [...document.querySelectorAll('#graph .region')]
    .filter(r => r.dataset.hasMaster === 'true')
    .map(r => r.dataset.region + '=' + r.dataset.master).sort().join(',')";

async fn master_name(node: &crate::harness::Node) -> String {
    let r: Value = get(&node.url("/api/v1/region")).await;
    r["master"]["name"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_fleet_and_follows_it_live() {
    let mut nodes = two_regions();
    settled(&nodes[0], 2, 5).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&nodes[0].url("/"))
        .await
        .expect("the page loads");

    // All five nodes, alive, and both masters as their regions report them.
    browser
        .until(
            "every node drawn alive",
            CONVERGE,
            &format!(
                "{GRAPH}.split(',').filter(s => s.endsWith(':alive')).length === 5 && {}",
                &GRAPH[7..]
            ),
        )
        .await;
    let want = format!(
        "eu={},us={}",
        master_name(&nodes[0]).await,
        master_name(&nodes[3]).await
    );
    browser
        .until(
            "both masters marked",
            CONVERGE,
            &format!("const m = (() => {{ {MASTERS} }})(); return m === '{want}' && m"),
        )
        .await;
    let served = browser
        .js("return document.querySelector('#served').textContent")
        .await;
    assert!(
        served.as_str().is_some_and(|s| s.contains("served by e0")),
        "{served}"
    );
    browser.screenshot("fleet").await;

    // A file change on e0 (a violation for a web server): in e0's timeline and alerts.
    std::fs::write(
        nodes[0].dir.join("root/etc/sudoers"),
        "root ALL=(ALL) ALL\n",
    )
    .expect("write");
    browser.js("location.hash = '#node'; return true").await;
    browser
        .until(
            "the change in e0's timeline",
            CONVERGE,
            "return [...document.querySelectorAll('#timeline li')].some(l => l.textContent.includes('/etc/sudoers'))",
        )
        .await;
    browser.screenshot("node").await;
    browser.js("location.hash = '#alerts'; return true").await;
    browser
        .until(
            "the violation in the alerts",
            CONVERGE,
            "return [...document.querySelectorAll('#alerts tr[data-host=\"e0\"]')].some(r => r.textContent.includes('/etc/sudoers'))",
        )
        .await;
    browser.screenshot("alerts").await;

    // Acknowledge, silence and expire from the page.
    const ROW: &str = "[...document.querySelectorAll('#alerts tr[data-host=\"e0\"]')].find(r => r.textContent.includes('/etc/sudoers'))";
    browser
        .js(&format!(
            "document.querySelector('#operator').value = 'ana'; {ROW}.querySelector('button[data-act=ack]').click(); return true"
        ))
        .await;
    browser
        .until(
            "the alert acknowledged by ana",
            CONVERGE,
            &format!("const r = {ROW}; return r && r.dataset.state === 'acknowledged' && r.textContent.includes('acknowledged by ana')"),
        )
        .await;
    browser
        .js(&format!(
            "{ROW}.querySelector('button[data-act=silence]').click(); return true"
        ))
        .await;
    let silence = browser
        .until(
            "the silence listed and the alert silenced",
            CONVERGE,
            &format!(
                "const s = [...document.querySelectorAll('#silences tr[data-state=active]')].find(r => r.textContent.includes('subject=\"/etc/sudoers\"') && r.textContent.includes('ana')); \
                 const r = {ROW}; return s && r && r.dataset.state === 'silenced' && s.dataset.silence"
            ),
        )
        .await;
    browser.screenshot("alerts-silenced").await;
    browser
        .js(&format!(
            "document.querySelector('#silences tr[data-silence=\"{}\"] button[data-expire]').click(); return true",
            silence.as_str().unwrap_or_default()
        ))
        .await;
    browser
        .until(
            "the silence expired, the alert acknowledged again",
            CONVERGE,
            &format!(
                "const s = document.querySelector('#silences tr[data-silence=\"{}\"]'); const r = {ROW}; \
                 return s && s.dataset.state === 'expired' && r && r.dataset.state === 'acknowledged'",
                silence.as_str().unwrap_or_default()
            ),
        )
        .await;
    let api: Value = get(&nodes[0].url("/api/v1/silences")).await;
    assert_eq!(api[0]["createdBy"], "ana", "{api}");

    // A change on e1, seen from e0's page: in e1's timeline, as gossip brought it.
    std::fs::write(nodes[1].dir.join("root/etc/motd"), "welcome\n").expect("write");
    browser
        .js(&format!(
            "location.hash = '#node/{}'; return true",
            nodes[1].peer_id()
        ))
        .await;
    browser
        .until(
            "e1's change in its timeline on e0's page",
            CONVERGE,
            "return [...document.querySelectorAll('#timeline li')].some(l => l.textContent.includes('/etc/motd'))",
        )
        .await;
    browser.screenshot("peer-node").await;

    // kill -9 a member of eu other than e0 and its master: dead in the page, no reload.
    browser
        .js("window.fleetmeshMark = 42; location.hash = '#fleet'; return true")
        .await;
    let eu_master = master_name(&nodes[0]).await;
    let victim = (1..3)
        .find(|&i| nodes[i].name != eu_master)
        .expect("a victim");
    let name = nodes[victim].name.clone();
    nodes[victim].kill9();
    browser
        .until(
            "the killed node drawn dead",
            CONVERGE,
            &format!("const n = document.querySelector('{NODES}[data-node=\"{name}\"]'); return n && n.dataset.status === 'dead'"),
        )
        .await;
    assert_eq!(
        browser.js("return window.fleetmeshMark").await,
        Value::from(42),
        "the page was reloaded"
    );
    browser.screenshot("fleet-dead").await;
    browser.js("location.hash = '#spectrum'; return true").await;
    browser
        .until(
            "the spectrum lists every node",
            Duration::from_secs(10),
            "return document.querySelectorAll('#spectrum tbody tr').length === 5",
        )
        .await;
    browser.screenshot("spectrum").await;
    browser.js("location.hash = '#events'; return true").await;
    browser
        .until(
            "the death in the events",
            Duration::from_secs(10),
            &format!("return [...document.querySelectorAll('#events li')].some(l => l.textContent.includes('{name}') && l.textContent.includes('dead'))"),
        )
        .await;
    browser.screenshot("events").await;

    let errors = browser.errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
}

/// A region of three whose two other members die (a node of another region stays): the
/// page served by the survivor says that its node is autonomous and that what it shows may be stale. The node restarts:
/// the page reconnects by itself (no reload) and shows the new incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_says_when_its_node_is_autonomous_and_reconnects_after_a_restart() {
    use crate::harness::{Node, Spec};
    let api = format!("127.0.0.1:{}", crate::browser::free_port());
    let mut first = Spec::new("a0", "solo");
    first.extra_args = vec!["--api-listen".into(), api.clone()];
    let tmp = tempfile::tempdir().expect("tempdir");
    first.dir = Some(tmp.path().join("a0"));
    let mut nodes = vec![Node::start(first.clone())];
    // b0, of another region, stays connected: with peers but no master, a0 is autonomous
    // (alone it would be disconnected).
    for (name, region) in [("a1", "solo"), ("a2", "solo"), ("b0", "other")] {
        let mut s = Spec::new(name, region);
        s.bootstrap = vec![nodes[0].addr(true)];
        nodes.push(Node::start(s));
    }
    settled(&nodes[0], 2, 4).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("http://{api}/"))
        .await
        .expect("the page loads");
    browser
        .until(
            "the node live",
            CONVERGE,
            "const s = document.querySelector('[data-testid=own-state]'); return s && s.textContent === 'live'",
        )
        .await;
    browser.js("window.fleetmeshMark = 7; return true").await;

    // Its two peers die: no quorum, the node acts alone.
    nodes[1].kill9();
    nodes[2].kill9();
    let served = browser
        .until(
            "the node autonomous, its data said to be stale",
            CONVERGE,
            "const s = document.querySelector('#served').textContent; return s.includes('autonomous') && s.includes('may be stale') && s",
        )
        .await;
    assert!(
        served.as_str().is_some_and(|s| s.contains(" for ")),
        "says for how long: {served}"
    );
    browser.screenshot("autonomous").await;

    // Restart it on the same address: the page reconnects and reloads what it shows.
    browser.js("location.hash = '#node'; return true").await;
    let before = browser
        .until(
            "the incarnation shown",
            Duration::from_secs(10),
            "const dd = [...document.querySelectorAll('#node-facts dt')].find(d => d.textContent === 'incarnation'); return dd && dd.nextSibling.textContent",
        )
        .await;
    nodes[0].stop();
    browser
        .until(
            "the stream reconnecting",
            Duration::from_secs(20),
            "return document.querySelector('#stream').dataset.state === 'reconnecting'",
        )
        .await;
    let restarted = Node::start(first);
    let after = browser
        .until(
            "the new incarnation shown, the stream live",
            CONVERGE,
            &format!("const dd = [...document.querySelectorAll('#node-facts dt')].find(d => d.textContent === 'incarnation'); const v = dd && dd.nextSibling.textContent; return document.querySelector('#stream').dataset.state === 'live' && v && v !== {before} && v"),
        )
        .await;
    assert_ne!(before, after);
    assert_eq!(
        browser.js("return window.fleetmeshMark").await,
        Value::from(7),
        "the page was reloaded"
    );
    drop(restarted);
    browser.close().await;
}

/// A browser whose test failed before closing it (it is dropped, its session never
/// ended) leaves no process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_dropped_without_closing_leaves_no_process() {
    let browser = Browser::start().await;
    browser.client.goto("about:blank").await.expect("a page");
    let flag = browser.profile_flag();
    assert!(
        !crate::browser::browser_pids(&flag).is_empty(),
        "the browser runs with its profile flag"
    );
    drop(browser);
    crate::harness::eventually(
        "no process of the dropped browser",
        Duration::from_secs(10),
        || {
            let flag = flag.clone();
            async move {
                let left = crate::browser::browser_pids(&flag);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("left: {left:?}"))
                }
            }
        },
    )
    .await;
}
