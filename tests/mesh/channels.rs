//! Alert channels on a real node: email over SMTP with STARTTLS (an SMTP server inside
//! the test, its certificate signed by a private CA that the receiver's `ca_file`
//! trusts), and HTTP receivers over HTTPS (a webhook and a Slack-style receiver trusting
//! the same CA; a webhook without `ca_file`, whose deliveries fail on the certificate).
//! Two users added at once on a baseline server are one group: one email, one message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::harness::{Node, get, wait_for};
use crate::policy::{add_users, baseline, policies};

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(45);

/// A private CA and a server certificate it signed for 127.0.0.1: the CA's PEM, and the
/// server's TLS configuration.
fn private_ca() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fleetmesh test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![server.der().clone(), ca.der().clone()],
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
    .expect("server TLS config");
    (ca.pem(), Arc::new(config))
}

/// A baseline node whose `/etc/passwd` is watched, with `receivers` (TOML) as its
/// `[[alerts.receivers]]`; grouped notifications wait 1 s for the rest of their group.
fn baseline_node(tmp: &std::path::Path, name: &str, receivers: &str) -> (Node, std::path::PathBuf) {
    let config = tmp.join("node.toml");
    std::fs::write(
        &config,
        format!("[alerts.route]\ngroup_wait_ms = 1000\ngroup_interval_ms = 500\n{receivers}"),
    )
    .expect("node config");
    let policy = policies(tmp);
    let (spec, etc) = baseline(name, "channels", &tmp.join(name), &config, &policy);
    (Node::start(spec), etc)
}

/// Base64 (RFC 4648, padded) decoded; `None` if it is not that.
fn base64(text: &str) -> Option<Vec<u8>> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ABC.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Quoted-printable (RFC 2045) decoded.
fn quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "");
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && let Some(v) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One email as the SMTP server took it.
#[derive(Debug, Clone, Default)]
struct Mail {
    from: String,
    to: Vec<String>,
    /// Headers and body, as sent (dot-stuffing undone).
    data: String,
    /// Sent after STARTTLS.
    tls: bool,
    /// The `AUTH` command's argument, if the client logged in.
    auth: Option<String>,
}

impl Mail {
    fn header(&self, name: &str) -> String {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        // Folded header lines go on with whitespace.
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }

    /// The body, its transfer encoding undone.
    fn text(&self) -> String {
        let body = self
            .data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        match self
            .header("Content-Transfer-Encoding")
            .to_ascii_lowercase()
            .as_str()
        {
            "quoted-printable" => quoted_printable(body),
            "base64" => String::from_utf8_lossy(&base64(body).unwrap_or_default()).into_owned(),
            _ => body.to_string(),
        }
    }
}

/// An SMTP server on 127.0.0.1 that speaks enough for one client: EHLO, STARTTLS (with
/// `tls`), AUTH PLAIN (after STARTTLS), MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT.
struct Smtp {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl Smtp {
    async fn start(tls: Arc<rustls::ServerConfig>) -> Smtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m = mails.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (m, acceptor) = (m.clone(), TlsAcceptor::from(tls.clone()));
                tokio::spawn(async move {
                    let mut conn = BufReader::new(conn);
                    if conn
                        .get_mut()
                        .write_all(b"220 fleetmesh-test ESMTP\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut mail = Mail::default();
                    if let Ok(true) = dialogue(&mut conn, &mut mail, &m).await
                        && let Ok(stream) = acceptor.accept(conn.into_inner()).await
                    {
                        let mut conn = BufReader::new(stream);
                        let mut mail = Mail {
                            tls: true,
                            ..Mail::default()
                        };
                        let _ = dialogue(&mut conn, &mut mail, &m).await;
                    }
                });
            }
        });
        Smtp { port, mails }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("lock").clone()
    }
}

/// One SMTP conversation until QUIT or the end (`Ok(false)`) or STARTTLS (`Ok(true)`:
/// the caller goes on over TLS). `mail.tls` says whether this one is over TLS already.
async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    mail: &mut Mail,
    mails: &Mutex<Vec<Mail>>,
) -> std::io::Result<bool> {
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(false);
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if mail.tls {
                "250-fleetmesh-test\r\n250-8BITMIME\r\n250 AUTH PLAIN\r\n".into()
            } else {
                "250-fleetmesh-test\r\n250-8BITMIME\r\n250 STARTTLS\r\n".into()
            }
        } else if upper == "STARTTLS" && !mail.tls {
            conn.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
            conn.get_mut().flush().await?;
            return Ok(true);
        } else if upper.starts_with("AUTH PLAIN ") && mail.tls {
            mail.auth = Some(command["AUTH PLAIN ".len()..].to_string());
            "235 2.7.0 accepted\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = command["MAIL FROM:".len()..].trim().to_string();
            "250 2.1.0 ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(command["RCPT TO:".len()..].trim().to_string());
            "250 2.1.5 ok\r\n".into()
        } else if upper == "DATA" {
            conn.get_mut()
                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if conn.read_line(&mut line).await? == 0 {
                    return Ok(false);
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let done = Mail {
                data,
                from: std::mem::take(&mut mail.from),
                to: std::mem::take(&mut mail.to),
                tls: mail.tls,
                auth: mail.auth.clone(),
            };
            mails.lock().expect("lock").push(done);
            "250 2.0.0 queued\r\n".into()
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok\r\n".into()
        } else if upper == "QUIT" {
            conn.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(false);
        } else {
            "502 5.5.2 not implemented\r\n".into()
        };
        conn.get_mut().write_all(reply.as_bytes()).await?;
        conn.get_mut().flush().await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_lists_every_alert_of_the_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ca, tls) = private_ca();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("ca file");
    let password = tmp.path().join("smtp-password");
    std::fs::write(&password, "s3cret\n").expect("password file");
    let smtp = Smtp::start(tls).await;
    let (node, etc) = baseline_node(
        tmp.path(),
        "mail-b1",
        &format!(
            "[[alerts.receivers]]\nkind = \"email\"\nname = \"ops-mail\"\n\
             smtp = \"127.0.0.1:{}\"\nfrom = \"fleetmesh <fleetmesh@example.org>\"\n\
             to = [\"ops@example.org\", \"Night Shift <night@example.org>\"]\n\
             ca_file = \"{}\"\nusername = \"fleetmesh\"\npassword_file = \"{}\"\n\
             retry_min_ms = 200\nretry_max_ms = 1000\ntimeout_ms = 5000\n",
            smtp.port,
            ca_file.display(),
            password.display()
        ),
    );

    add_users(&etc, &["deploy", "backdoor"]);

    let mail = wait_for("the email", WAIT, || async {
        smtp.mails()
            .into_iter()
            .next()
            .ok_or_else(|| "no email yet".to_string())
    })
    .await;
    assert!(mail.tls, "sent after STARTTLS: {mail:?}");
    assert_eq!(
        base64(mail.auth.as_deref().unwrap_or_default()),
        Some(b"\0fleetmesh\0s3cret".to_vec()),
        "logged in with the password file's password (its newline dropped)"
    );
    assert_eq!(mail.from, "<fleetmesh@example.org>");
    assert_eq!(
        mail.to,
        ["<ops@example.org>", "<night@example.org>"],
        "one email to every recipient"
    );
    let subject = mail.header("Subject");
    assert_eq!(
        subject, "[FIRING:2] unauthorized_access region=channels",
        "{mail:?}"
    );
    let text = mail.text();
    for user in ["deploy", "backdoor"] {
        assert!(
            text.contains(&format!("[firing] unauthorized_access on mail-b1: {user}")),
            "{user} in:\n{text}"
        );
    }
    assert!(text.contains("node mail-b1, severity high"), "{text}");
    assert!(text.contains("Receiver: ops-mail"), "{text}");

    let view: Value = wait_for("the receiver's account", WAIT, || async {
        let v: Value = get(&node.url("/api/v1/alerts?since=0&limit=50")).await;
        let s = v["sinks"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == "ops-mail"))
            .cloned()
            .unwrap_or_default();
        if s["delivered"] == 1 {
            Ok(s)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(view["queued"], 0, "{view}");
    assert_eq!(smtp.mails().len(), 1, "one email for the group");
    drop(node);
}

/// An HTTPS server on 127.0.0.1 that takes every POST with 200 and keeps its path and
/// body.
struct Https {
    port: u16,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Https {
    async fn start(tls: Arc<rustls::ServerConfig>) -> Https {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (s, acceptor) = (s.clone(), TlsAcceptor::from(tls.clone()));
                tokio::spawn(async move {
                    // A client that does not trust the certificate gives up here.
                    if let Ok(stream) = acceptor.accept(conn).await {
                        let _ = serve(stream, &s).await;
                    }
                });
            }
        });
        Https { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| serde_json::from_str(b).expect("a JSON body"))
            .collect()
    }
}

/// Reads one request (headers, then `Content-Length` bytes), answers 200, closes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: S,
    seen: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    seen.lock().expect("lock").push((path, body));
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        .await?;
    conn.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_trust_their_ca_file_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ca, tls) = private_ca();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("ca file");
    let server = Https::start(tls).await;
    let fast = "retry_min_ms = 200\nretry_max_ms = 1000\ntimeout_ms = 5000";
    let (node, etc) = baseline_node(
        tmp.path(),
        "https-b1",
        &format!(
            "[[alerts.receivers]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nca_file = \"{}\"\n{fast}\n\
             [[alerts.receivers]]\nkind = \"slack\"\nname = \"chat\"\nurl = \"{}\"\nca_file = \"{}\"\n{fast}\n\
             [[alerts.receivers]]\nkind = \"webhook\"\nname = \"untrusting\"\nurl = \"{}\"\n{fast}\n",
            server.url("/hook"),
            ca_file.display(),
            server.url("/slack"),
            ca_file.display(),
            server.url("/untrusting"),
        ),
    );

    add_users(&etc, &["deploy", "backdoor"]);

    let hooked = wait_for("the webhook's notification", WAIT, || async {
        server
            .bodies("/hook")
            .into_iter()
            .next()
            .ok_or_else(|| "nothing yet".to_string())
    })
    .await;
    assert_eq!(
        (&hooked["receiver"], &hooked["status"]),
        (&Value::from("hook"), &Value::from("firing")),
        "{hooked}"
    );
    let mut subjects: Vec<&str> = hooked["alerts"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|a| a["labels"]["subject"].as_str())
                .collect()
        })
        .unwrap_or_default();
    subjects.sort_unstable();
    assert_eq!(subjects, ["backdoor", "deploy"], "one group: {hooked}");

    let message = wait_for("the Slack message", WAIT, || async {
        server
            .bodies("/slack")
            .into_iter()
            .next()
            .ok_or_else(|| "nothing yet".to_string())
    })
    .await;
    assert_eq!(
        message["text"], "[FIRING:2] unauthorized_access region=channels",
        "{message}"
    );
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["color"], "#d00000", "high: {message}");
    let text = attachment["text"].as_str().unwrap_or_default();
    for user in ["deploy", "backdoor"] {
        assert!(
            text.contains(&format!("[firing] unauthorized_access on https-b1: {user}")),
            "{user} in {text}"
        );
    }

    // Without the CA, the same server is not trusted: the delivery fails, is retried, and
    // the API says why.
    let untrusting = wait_for("the untrusting receiver's failures", WAIT, || async {
        let v: Value = get(&node.url("/api/v1/alerts?since=0&limit=50")).await;
        let s = v["sinks"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == "untrusting"))
            .cloned()
            .unwrap_or_default();
        if s["failed"].as_u64() >= Some(2) {
            Ok(s)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(
        (&untrusting["delivered"], &untrusting["queued"]),
        (&Value::from(0), &Value::from(1)),
        "{untrusting}"
    );
    let error = untrusting["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        error.contains("certificate") && error.contains(&server.url("/untrusting")),
        "{untrusting}"
    );
    assert!(
        server.bodies("/untrusting").is_empty(),
        "nothing reached the server over an untrusted connection"
    );
    drop(node);
}
