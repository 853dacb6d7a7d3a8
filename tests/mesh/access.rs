//! Who may use the API, on real nodes whose API listens on a non-loopback address (the
//! host side of a veth pair this test creates): the token for reads and actions, open
//! reads without one, loopback open to the host, and a node that nobody could use refused
//! at start.

use std::process::Stdio;

use crate::harness::{Netns, Node, Spec, command};

const TOKEN: &str = "a-test-token-of-32-characters-ok";

fn skip() -> bool {
    if std::env::var_os("FLEETMESH_SKIP_NETNS").is_some() {
        eprintln!("SKIPPED: FLEETMESH_SKIP_NETNS is set; the API access test did not run");
        return true;
    }
    false
}

fn spec(name: &str, api: &str, env: &[(&str, &str)]) -> Spec {
    let mut s = Spec::new(name, "eu");
    s.extra_args = vec!["--api-listen".into(), api.into()];
    s.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s
}

/// Status code and `WWW-Authenticate` of a request.
async fn ask(
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    cookie: Option<&str>,
) -> (u16, Option<String>) {
    let client = reqwest::Client::new();
    let mut r = client.request(method, url).json(&serde_json::json!({}));
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    if let Some(t) = cookie {
        r = r.header("Cookie", format!("fleetmesh_token={t}"));
    }
    let response = r.send().await.expect("the API answers");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (response.status().as_u16(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_api_needs_its_token_and_reads_open_only_when_set() {
    if skip() {
        return;
    }
    let ns = Netns::create(9).unwrap_or_else(|e| {
        panic!("this test needs root and iproute2 (set FLEETMESH_SKIP_NETNS=1 to skip): {e}")
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let token_file = tmp.path().join("api.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let api = format!("{}:0", ns.outer);
    let file = token_file.to_string_lossy().to_string();
    let guarded = Node::start(spec(
        "guarded",
        &api,
        &[("FLEETMESH__API__TOKEN_FILE", &file)],
    ));
    assert!(
        guarded.runtime.api.starts_with(&format!("{}:", ns.outer)),
        "{}",
        guarded.runtime.api
    );
    let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
    let node = guarded.url("/api/v1/node");
    let approve = guarded.url("/api/v1/patterns/approve");

    // Reads and actions need the token, by header or cookie; a wrong one is refused.
    let (code, challenge) = ask(get.clone(), &node, None, None).await;
    assert_eq!(code, 401);
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
    assert_eq!(
        ask(
            get.clone(),
            &node,
            Some("a-test-token-of-32-characters-OK"),
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(ask(get.clone(), &node, Some(TOKEN), None).await.0, 200);
    assert_eq!(ask(get.clone(), &node, None, Some(TOKEN)).await.0, 200);
    assert_eq!(
        ask(get.clone(), &guarded.url("/api/v1/events"), None, None)
            .await
            .0,
        401
    );
    assert_eq!(ask(post.clone(), &approve, None, None).await.0, 401);
    // With the token the action reaches its handler (which refuses the empty body).
    let (code, _) = ask(post.clone(), &approve, Some(TOKEN), None).await;
    assert!(code != 401 && (400..500).contains(&code), "{code}");
    // Liveness and readiness stay open.
    assert_eq!(
        ask(get.clone(), &guarded.url("/healthz"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        ask(get.clone(), &guarded.url("/readyz"), None, None)
            .await
            .0,
        200
    );

    // Open reads: reads without a token, actions still refused (this node has none).
    let open = Node::start(spec(
        "open",
        &api,
        &[("FLEETMESH__API__OPEN_READS", "true")],
    ));
    assert_eq!(
        ask(get.clone(), &open.url("/api/v1/region"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        ask(
            post.clone(),
            &open.url("/api/v1/patterns/approve"),
            Some(TOKEN),
            None
        )
        .await
        .0,
        401
    );

    // Loopback (the default): the host's users need no token.
    let local = Node::start(spec("local", "127.0.0.1:0", &[]));
    assert_eq!(
        ask(get.clone(), &local.url("/api/v1/node"), None, None)
            .await
            .0,
        200
    );
    let (code, _) = ask(post, &local.url("/api/v1/patterns/approve"), None, None).await;
    assert!(code != 401 && (400..500).contains(&code), "{code}");

    // Beyond loopback with neither a token nor open reads: refused at start, saying why.
    let dir = tmp.path().join("refused");
    let out = command(&spec("refused", &api, &[]), &dir)
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.token_file"), "{err}");
    drop((guarded, open, local, ns));
}
