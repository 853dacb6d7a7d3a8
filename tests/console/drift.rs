//! The Drift view and the twin panel on a real 5-node, 2-region cluster (eu: e0, e1, e2;
//! us: u0, u1) with a desired state for role `web`, in a real headless Chromium: the page
//! served by e0 shows a file changed on e1 (its own region) and on u1 (another region,
//! known from its master's summary) as drift, with node, subject and the actual digest,
//! without a reload; restored, the records go. e0's twin shows its host and software
//! (version, executable digest); u0's says which master holds it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::browser::Browser;
use crate::harness::{BIN, CONVERGE, Node, get, settled, two_regions_with};

const GOOD: &str = "listen 80\n";
const BAD: &str = "listen 8080\n";

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn put(node: &Node, text: &str) {
    std::fs::write(node.dir.join("root/etc/app.conf"), text).expect("written");
}

/// The row of the Drift view for `name`'s `/etc/app.conf`, as a JS expression.
fn row(name: &str) -> String {
    format!(
        "document.querySelector('#drift-records tr[data-node=\"{name}\"][data-subject=\"file:/etc/app.conf\"]')"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_view_follows_a_file_changed_and_restored_and_a_twin_shows_its_sections() {
    let desired = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        desired.path().join("web.toml"),
        format!(
            "[[files]]\npath = \"/etc/app.conf\"\nsha256 = \"{}\"\n",
            hex(GOOD.as_bytes())
        ),
    )
    .expect("web.toml");
    let env = [(
        "FLEETMESH__DESIRED__DIR".to_string(),
        desired.path().display().to_string(),
    )];
    let nodes = two_regions_with(&env);
    for n in &nodes {
        put(n, GOOD);
    }
    settled(&nodes[0], 2, 5).await;
    let (e1, u1) = (&nodes[1], &nodes[4]);

    let browser = Browser::start().await;
    browser
        .client
        .goto(&nodes[0].url("/#drift"))
        .await
        .expect("the page loads");
    browser
        .until(
            "both regions in the Drift view, as desired",
            CONVERGE,
            "const r = [...document.querySelectorAll('#drift-regions tbody tr')]; \
             return r.length === 2 && r.every(t => t.dataset.source !== 'none' && t.dataset.medium === '0') \
               && !document.querySelector('#drift-records tbody tr')",
        )
        .await;
    browser.js("window.fleetmeshMark = 17; return true").await;

    // Changed on a member of e0's region and on one of the other region.
    put(e1, BAD);
    put(u1, BAD);
    let actual = hex(BAD.as_bytes());
    for name in ["e1", "u1"] {
        let shown = browser
            .until(
                &format!("{name}'s drift in the view"),
                CONVERGE,
                &format!(
                    "const r = {}; return r && r.querySelector('td.actual').textContent.includes('{}') && r.textContent",
                    row(name),
                    &actual[..12]
                ),
            )
            .await;
        let text = shown.as_str().unwrap_or_default();
        assert!(
            text.contains(name) && text.contains("/etc/app.conf") && text.contains("medium"),
            "{text}"
        );
        assert!(text.contains("for "), "says for how long: {text}");
    }
    let from = browser
        .js("return document.querySelector('#drift-regions tr[data-region=\"us\"]').dataset.source")
        .await;
    assert_eq!(from, "master", "us is known from its master's summary");
    let said = browser
        .js("return document.querySelector('#drift-from').textContent")
        .await;
    assert!(
        said.as_str().is_some_and(|s| s.contains("Read from e0")),
        "{said}"
    );
    browser.screenshot("drift").await;

    // Restored: both records go, still without a reload.
    put(e1, GOOD);
    put(u1, GOOD);
    browser
        .until(
            "the records gone",
            CONVERGE,
            &format!("return !{} && !{}", row("e1"), row("u1")),
        )
        .await;
    assert_eq!(
        browser.js("return window.fleetmeshMark").await,
        Value::from(17),
        "the page was reloaded"
    );

    // e0's own twin: host and software, with the version and the executable's digest.
    let version: Value = get(&nodes[0].url("/api/v1/node")).await;
    let version = version["version"].as_str().unwrap_or_default().to_string();
    let exe = hex(&std::fs::read(BIN).expect("the binary"));
    browser
        .js(&format!(
            "location.hash = '#node/{}'; return true",
            nodes[0].peer_id()
        ))
        .await;
    let software = browser
        .until(
            "e0's software section",
            CONVERGE,
            "const s = document.querySelector('#twin-sections [data-section=software]'); return s && s.textContent",
        )
        .await;
    let software = software.as_str().unwrap_or_default();
    assert!(
        software.contains(&version) && software.contains(&exe[..12]),
        "version {version} and digest {} in: {software}",
        &exe[..12]
    );
    assert!(software.contains("updated"), "{software}");
    let host = browser
        .js("const s = document.querySelector('#twin-sections [data-section=host]'); return s && s.textContent")
        .await;
    assert!(
        host.as_str()
            .is_some_and(|h| h.contains("hostname") && h.contains("kernel")),
        "{host}"
    );
    let health = browser
        .js("const s = document.querySelector('#twin-sections [data-section=health]'); return s && s.textContent")
        .await;
    assert!(
        health
            .as_str()
            .is_some_and(|h| h.contains("state") && h.contains("connectivity")),
        "{health}"
    );
    let sbom = browser
        .js("const a = document.querySelector('[data-testid=sbom]'); return a && a.getAttribute('href')")
        .await;
    assert_eq!(
        sbom,
        Value::from(format!("/api/v1/twins/{}/sbom", nodes[0].peer_id()))
    );
    browser
        .js("document.querySelector('#twin').scrollIntoView(); return true")
        .await;
    browser.screenshot("twin").await;

    // A node of the other region: its twin comes from its region's master.
    browser
        .js(&format!(
            "location.hash = '#node/{}'; return true",
            nodes[3].peer_id()
        ))
        .await;
    browser
        .until(
            "u0's twin read from us's master",
            CONVERGE,
            "const s = document.querySelector('#twin-status'); return s.dataset.state === 'ok' && s.textContent.includes('master of region us') && document.querySelector('#twin-sections').textContent.includes('u0')",
        )
        .await;

    let errors = browser.errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
}
