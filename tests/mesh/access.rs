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
    // `fleetmesh status` needs the token too, and works with it.
    let status = |token: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(crate::harness::BIN);
        c.args(["status", "--summary", "--api", &guarded.runtime.api])
            .env_remove("FLEETMESH_TOKEN_FILE");
        if let Some(t) = token {
            c.arg("--token-file").arg(t);
        }
        c.output().expect("status runs")
    };
    let refused = status(None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("401"), "{said}");
    let shown = status(Some(&token_file));
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).contains("guarded"));
    // The console's page holds no fleet data: served without a token. Its session takes
    // the token once (a wrong one refused) and keeps it in an HttpOnly cookie.
    assert_eq!(ask(get.clone(), &guarded.url("/"), None, None).await.0, 200);
    assert_eq!(
        ask(get.clone(), &guarded.url("/console/app.js"), None, None)
            .await
            .0,
        200
    );
    let client = reqwest::Client::new();
    let login = |token: &str| {
        client
            .post(guarded.url("/api/v1/session"))
            .json(&serde_json::json!({ "token": token }))
            .send()
    };
    let wrong = login("a-test-token-of-32-characters-OK")
        .await
        .expect("answers");
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let right = login(TOKEN).await.expect("answers");
    assert_eq!(right.status().as_u16(), 204);
    let cookie = right
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.starts_with(&format!("fleetmesh_token={TOKEN}")),
        "{cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
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

/// One HTTPS request to `api` (host:port) trusting only `ca` (PEM); the status line and
/// the body as read.
fn https_get(api: &str, ca: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = api.rsplit_once(':').map_or(api, |(h, _)| h).to_string();
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(api).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // The server may close without a TLS close_notify: what was read is the answer.
    let read = tls.read_to_end(&mut out);
    if out.is_empty() {
        return Err(format!("nothing read: {read:?}"));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_the_configured_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let (cert, key) = (tmp.path().join("api.crt"), tmp.path().join("api.key"));
    let ca = certified.cert.pem();
    std::fs::write(&cert, &ca).expect("cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key");
    let (cert_s, key_s) = (
        cert.to_string_lossy().to_string(),
        key.to_string_lossy().to_string(),
    );
    let node = Node::start(spec(
        "tls",
        "127.0.0.1:0",
        &[
            ("FLEETMESH__API__TLS_CERT", &cert_s),
            ("FLEETMESH__API__TLS_KEY", &key_s),
        ],
    ));
    let api = node.runtime.api.clone();
    let answer = tokio::task::spawn_blocking({
        let (api, ca) = (api.clone(), ca.clone());
        move || https_get(&api, &ca, "/api/v1/node")
    })
    .await
    .expect("joined")
    .expect("an HTTPS answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(node.peer_id()), "{answer}");
    // Plain HTTP on that port gets no answer of the API.
    let plain = reqwest::Client::new()
        .get(format!("http://{api}/api/v1/node"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );
    // `fleetmesh status` over HTTPS: with the certificate trusted it shows the node; with
    // only the system's roots it is refused, saying why.
    let status = |ca: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(crate::harness::BIN);
        c.args(["status", "--summary", "--api", &format!("https://{api}")]);
        if let Some(ca) = ca {
            c.arg("--ca-file").arg(ca);
        }
        c.output().expect("status runs")
    };
    let shown = status(Some(&cert));
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(String::from_utf8_lossy(&shown.stdout).starts_with("tls region="));
    let refused = status(None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(said.contains("certificate"), "{said}");
    // A certificate another key signed is refused at start, naming the setting.
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(&key, other.serialize_pem()).expect("other key");
    let out = command(
        &spec(
            "bad-tls",
            "127.0.0.1:0",
            &[
                ("FLEETMESH__API__TLS_CERT", &cert_s),
                ("FLEETMESH__API__TLS_KEY", &key_s),
            ],
        ),
        &tmp.path().join("bad"),
    )
    .stderr(Stdio::piped())
    .output()
    .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.tls_key"), "{err}");
}
