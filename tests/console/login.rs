//! Logging in to the console in a real headless Chromium: a node whose API listens beyond
//! loopback (the host side of a veth pair this test creates) with a token. The page asks
//! for the token instead of showing the fleet; a wrong one is refused in words; the right
//! one opens the views (the session cookie), and an operator action is then taken.

use std::time::Duration;

use crate::browser::Browser;
use crate::harness::{Netns, Node, Spec};

const TOKEN: &str = "a-console-token-of-32-characters";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_asks_for_the_token_beyond_loopback_and_opens_with_it() {
    if std::env::var_os("FLEETMESH_SKIP_NETNS").is_some() {
        eprintln!("SKIPPED: FLEETMESH_SKIP_NETNS is set; the console login test did not run");
        return;
    }
    let ns = Netns::create(12).unwrap_or_else(|e| {
        panic!("this test needs root and iproute2 (set FLEETMESH_SKIP_NETNS=1 to skip): {e}")
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let token_file = tmp.path().join("api.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let mut spec = Spec::new("guarded", "login");
    spec.extra_args = vec!["--api-listen".into(), format!("{}:0", ns.outer)];
    spec.env = vec![(
        "FLEETMESH__API__TOKEN_FILE".into(),
        token_file.display().to_string(),
    )];
    let node = Node::start(spec);
    let wait = Duration::from_secs(30);
    let browser = Browser::start().await;
    browser
        .client
        .goto(&node.url("/"))
        .await
        .expect("the page loads");
    browser
        .until(
            "the login form shown, the views hidden",
            wait,
            "return !document.querySelector('#login').hidden && [...document.querySelectorAll('.view')].every(v => v.hidden)",
        )
        .await;
    let submit = |token: &str| {
        format!(
            "document.querySelector('#token').value = {token:?}; \
             document.querySelector('#login-form').requestSubmit(); return true"
        )
    };
    browser.js(&submit("not-the-token")).await;
    let refused = browser
        .until(
            "the wrong token refused in words",
            wait,
            "return document.querySelector('#login-error').textContent",
        )
        .await;
    assert!(
        browser
            .js("return !document.querySelector('#login').hidden")
            .await
            == serde_json::Value::Bool(true),
        "still asked: {refused}"
    );
    browser.js(&submit(TOKEN)).await;
    browser
        .until(
            "the views open once logged in",
            wait,
            "return document.querySelector('#login').hidden && [...document.querySelectorAll('.view')].some(v => !v.hidden)",
        )
        .await;
    let served = browser
        .until(
            "the page says which node serves it",
            wait,
            "const s = document.querySelector('#served').textContent; return s.includes('guarded') && s",
        )
        .await;
    // The session holds: the API answers the page's own requests with its cookie.
    let status = browser
        .js("const r = new XMLHttpRequest(); r.open('GET', '/api/v1/node', false); r.send(); return r.status")
        .await;
    assert_eq!(status, serde_json::json!(200), "{served}");
    // The browser reports the page's first, unauthenticated requests; nothing else.
    let errors = browser.errors().await;
    assert!(errors.iter().all(|(_, m)| m.contains("401")), "{errors:?}");
    browser.close().await;
}
