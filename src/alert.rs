//! Alert sinks: the I/O half of alerting. Each configured sink becomes a [`Deliver`]
//! function for the alert actor: it writes one batch and says how that went. What is
//! sent when, retries and bounds are decided in `fleetmesh_actors::alert`; here a sink only
//! writes, and names what went wrong (the path, the URL, the status).
//!
//! What a sink is handed is the alert-lifecycle engine's notifications: one per group
//! (with every alert of the group), escalation step or budget summary.
//!
//! - `log`: one tracing event per alert (`warn`, `error` for open high and critical ones);
//! - `jsonl`: appends one JSON object per notification and line to a file ([`payload`]);
//! - `webhook`: POSTs each notification as JSON ([`payload`]); any status but 2xx is a
//!   failure;
//! - `elasticsearch`: POSTs the batch to `_bulk` as ECS documents ([`elastic`]);
//! - `alertmanager`: pushes the batch to a Prometheus Alertmanager's v2 API
//!   ([`alertmanager`]);
//! - `slack`: POSTs each notification as a Slack incoming-webhook message ([`slack`]);
//! - `email`: sends each notification as one email over SMTP ([`email`]).
//!
//! HTTP receivers take `http://` and `https://` URLs; one with a `ca_file` gets its own
//! client that also trusts the certificates of that file (a private CA).

pub mod alertmanager;
pub mod elastic;
pub mod email;
pub mod history;
pub mod slack;
pub mod text;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use fleetmesh_actors::actor::alert::{Deliver, Sink};
use fleetmesh_actors::alert::{Outcome, SinkConfig};
use fleetmesh_actors::alerting::Notification;

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Log,
    Jsonl {
        path: PathBuf,
    },
    Webhook {
        url: reqwest::Url,
    },
    /// `url` is the `_bulk` endpoint itself.
    Elasticsearch {
        url: reqwest::Url,
        index: String,
    },
    /// `url` is the Alertmanager's base URL.
    Alertmanager {
        url: reqwest::Url,
    },
    /// `url` is the incoming webhook.
    Slack {
        url: reqwest::Url,
    },
    Email(email::Config),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Log => "log",
            Target::Jsonl { .. } => "jsonl",
            Target::Webhook { .. } => "webhook",
            Target::Elasticsearch { .. } => "elasticsearch",
            Target::Alertmanager { .. } => "alertmanager",
            Target::Slack { .. } => "slack",
            Target::Email(_) => "email",
        }
    }
}

/// One `[[alerts.receivers]]` (or `[[alerts.sinks]]`) entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Where it is written (`alerts.receivers[1]`), for messages.
    pub at: String,
    pub name: String,
    pub target: Target,
    /// Bound on one delivery (an HTTP request, a file append).
    pub timeout: Duration,
    pub queue: usize,
    pub batch: usize,
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// PEM certificates to trust besides the system's (HTTP receivers and email).
    pub ca_file: Option<PathBuf>,
}

/// The alert actor's sinks for `specs`; `console` is this node's console URL, where an
/// alert pushed to Alertmanager says it came from. Fails, naming the entry and the path,
/// when a `jsonl` file cannot be opened for appending (its directory is created if
/// missing), or a `ca_file` or `password_file` cannot be read or used.
pub fn sinks(specs: &[Spec], console: &str) -> anyhow::Result<Vec<Sink>> {
    let shared = http_client(None).context("cannot build the HTTP client of the alert sinks")?;
    specs
        .iter()
        .map(|s| {
            let ca = match &s.ca_file {
                Some(path) => Some((
                    path.clone(),
                    std::fs::read(path).with_context(|| {
                        format!(
                            "alert receiver {at} `{name}`: {at}.ca_file: cannot read {}",
                            path.display(),
                            at = s.at,
                            name = s.name
                        )
                    })?,
                )),
                None => None,
            };
            let client = match &ca {
                Some((path, pem)) if !matches!(s.target, Target::Email(_)) => {
                    http_client(Some(pem)).with_context(|| {
                        format!(
                            "alert receiver {at} `{name}`: {at}.ca_file: {}",
                            path.display(),
                            at = s.at,
                            name = s.name
                        )
                    })?
                }
                _ => shared.clone(),
            };
            let deliver = match &s.target {
                Target::Log => log(),
                Target::Jsonl { path } => {
                    append(path, b"")
                        .with_context(|| format!("alert receiver {} `{}`", s.at, s.name))?;
                    jsonl(path.clone())
                }
                Target::Webhook { url } => post_each(client, url.clone(), s.timeout, payload),
                Target::Slack { url } => post_each(client, url.clone(), s.timeout, slack::body),
                Target::Email(c) => email::sink(&s.at, c.clone(), ca, s.timeout)
                    .with_context(|| format!("alert receiver {} `{}`", s.at, s.name))?,
                Target::Elasticsearch { url, index } => {
                    elastic::sink(client, url.clone(), index.clone(), s.timeout)
                }
                Target::Alertmanager { url } => {
                    alertmanager::sink(client, url.clone(), format!("{console}#alerts"), s.timeout)
                }
            };
            Ok(Sink {
                config: SinkConfig {
                    name: s.name.clone(),
                    queue: s.queue,
                    batch: s.batch,
                    retry_min_ms: s.retry_min_ms,
                    retry_max_ms: s.retry_max_ms,
                },
                deliver,
                // The request's own timeout fires first and names what it waited for.
                timeout: s.timeout + Duration::from_secs(1),
            })
        })
        .collect()
}

/// The HTTP client of the alert receivers; with `pem`, one that also trusts the
/// certificates it holds (refused if it holds none).
fn http_client(pem: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("fleetmesh/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| anyhow::anyhow!("not PEM certificates ({})", chain(&e)))?;
        if certs.is_empty() {
            anyhow::bail!("holds no PEM certificate");
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {}", chain(&e)))
}

/// What a webhook receives and a jsonl line holds for notification `n`: the
/// notification as the engine made it (`receiver`, `group_key`, `group_labels`,
/// `reason`, `alerts`, `omitted`, `at_unix_ms`), with `status`: `firing` while one of
/// its alerts is open, else `resolved`.
pub fn payload(n: &Notification) -> serde_json::Value {
    let status = if n.alerts.iter().any(|a| a.status.is_open()) {
        "firing"
    } else {
        "resolved"
    };
    let mut v = serde_json::to_value(n).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        // What the region log keeps of it: not for the receiver.
        o.remove("records");
        o.insert("status".into(), status.into());
    }
    v
}

fn log() -> Deliver {
    Box::new(|batch: Vec<Notification>| {
        for n in &batch {
            if n.alerts.is_empty() {
                tracing::warn!(receiver = %n.receiver, group = %n.group_key, reason = ?n.reason, "alert notification held back by the receiver's budget");
            }
            for a in &n.alerts {
                let label = |k: &str| a.labels.get(k).map(String::as_str).unwrap_or("");
                let reason = a
                    .annotations
                    .get("reason")
                    .map(String::as_str)
                    .unwrap_or("");
                let (action, node, rule, subject) = (
                    label("alertname"),
                    label("node"),
                    label("rule"),
                    label("subject"),
                );
                let state = a.status.name();
                if matches!(label("severity"), "high" | "critical") && a.status.is_open() {
                    tracing::error!(key = %a.key, id = %a.id, state, action, node, rule, subject, group = %n.group_key, "alert: {reason}");
                } else {
                    tracing::warn!(key = %a.key, id = %a.id, state, action, node, rule, subject, group = %n.group_key, "alert: {reason}");
                }
            }
        }
        Box::pin(async { Outcome::Delivered })
    })
}

fn jsonl(path: PathBuf) -> Deliver {
    Box::new(move |batch: Vec<Notification>| {
        let path = path.clone();
        Box::pin(async move {
            let mut text = Vec::new();
            for n in &batch {
                if let Err(e) = serde_json::to_writer(&mut text, &payload(n)) {
                    return Outcome::Failed(format!("cannot encode a notification: {e}"));
                }
                text.push(b'\n');
            }
            // A file append may block on a slow disk: not on the actor's thread.
            match tokio::task::spawn_blocking(move || append(&path, &text)).await {
                Ok(Ok(())) => Outcome::Delivered,
                Ok(Err(e)) => Outcome::Failed(format!("{e:#}")),
                Err(e) => Outcome::Failed(format!("the file append did not finish: {e}")),
            }
        })
    })
}

/// Appends `bytes` to `path`, creating the file and its directory if missing.
fn append(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// POSTs each notification of the batch in turn as the JSON `body` makes of it (one
/// request per notification); the first that fails is retried with those after it.
fn post_each(
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    body: fn(&Notification) -> serde_json::Value,
) -> Deliver {
    Box::new(move |batch: Vec<Notification>| {
        let requests: Vec<_> = batch
            .iter()
            .map(|n| client.post(url.clone()).timeout(timeout).json(&body(n)))
            .collect();
        let url = url.clone();
        Box::pin(async move {
            let n = requests.len();
            for (i, request) in requests.into_iter().enumerate() {
                let error = match request.send().await {
                    Ok(answer) if answer.status().is_success() => continue,
                    Ok(answer) => format!("POST {url}: answered {}", answer.status()),
                    Err(e) => format!("POST {url}: {}", chain(&e)),
                };
                return if i == 0 {
                    Outcome::Failed(error)
                } else {
                    Outcome::Partly {
                        retry: (i..n).collect(),
                        rejected: Vec::new(),
                        error,
                    }
                };
            }
            Outcome::Delivered
        })
    })
}

/// An error with its causes, which is where a failed request says what failed.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fleetmesh_actors::alert::Alert;
    use fleetmesh_actors::spike::Severity;

    fn spec(path: PathBuf) -> Spec {
        Spec {
            at: "alerts.sinks[2]".into(),
            name: "audit-file".into(),
            target: Target::Jsonl { path },
            timeout: Duration::from_secs(1),
            queue: 10,
            batch: 10,
            retry_min_ms: 10,
            retry_max_ms: 10,
            ca_file: None,
        }
    }

    /// An alert of key `key` and severity `severity` about `subject`, on host `h` of
    /// region `r`.
    pub(crate) fn raised(key: &str, severity: Severity, subject: &str) -> Alert {
        Alert {
            key: key.into(),
            at_unix_ms: 5,
            severity,
            category: "file".into(),
            action: "policy_violation".into(),
            host: "h".into(),
            region: "r".into(),
            role: "baseline".into(),
            rule: None,
            reason: "why".into(),
            decision: None,
            term: None,
            subject: Some(subject.into()),
            details: Default::default(),
        }
    }

    /// The notification for `receiver` of `alerts` raised at once (one group).
    pub(crate) fn notification_of(receiver: &str, alerts: Vec<Alert>) -> Notification {
        use fleetmesh_actors::alerting::{Config, Engine};
        let mut c = Config::default();
        c.route.group_wait_ms = Some(0);
        c.route.receiver = Some(receiver.into());
        let mut e = Engine::new(c).expect("valid");
        for a in alerts {
            e.raise(a, 5).expect("raised");
        }
        e.poll(5).pop().expect("due")
    }

    /// A notification (for receiver `audit-file`) of one alert of key `key`.
    fn notification(key: &str) -> Notification {
        notification_of("audit-file", vec![raised(key, Severity::Medium, "s")])
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_names_the_receiver_and_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hook = |ca_file: PathBuf| Spec {
            at: "alerts.receivers[4]".into(),
            name: "pager".into(),
            target: Target::Webhook {
                url: reqwest::Url::parse("https://127.0.0.1:9/hook").expect("url"),
            },
            ca_file: Some(ca_file),
            ..spec(PathBuf::new())
        };
        let missing = tmp.path().join("missing.pem");
        let garbage = tmp.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        for path in [missing, garbage.clone()] {
            let e = sinks(&[hook(path.clone())], "http://127.0.0.1:7480/")
                .map(|_| ())
                .expect_err("refused at start");
            let text = format!("{e:#}");
            assert!(
                text.contains("alerts.receivers[4] `pager`")
                    && text.contains("alerts.receivers[4].ca_file")
                    && text.contains(&path.display().to_string()),
                "{text}"
            );
        }
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
        let good = tmp.path().join("ca.pem");
        std::fs::write(&good, certified.cert.pem()).expect("write");
        let built =
            sinks(&[hook(good.clone())], "http://127.0.0.1:7480/").expect("a usable CA file");
        assert_eq!(built.len(), 1);
        // The same for an email receiver.
        let mail = |ca_file: PathBuf| Spec {
            target: Target::Email(email::Config {
                host: "127.0.0.1".into(),
                port: 25,
                from: "a@example.org".parse().expect("mailbox"),
                to: vec!["b@example.org".parse().expect("mailbox")],
                starttls: email::Starttls::Required,
                username: None,
                password_file: None,
            }),
            ..hook(ca_file)
        };
        let e = sinks(&[mail(garbage.clone())], "http://127.0.0.1:7480/")
            .map(|_| ())
            .expect_err("refused at start");
        let text = format!("{e:#}");
        assert!(
            text.contains("alerts.receivers[4] `pager`")
                && text.contains("alerts.receivers[4].ca_file")
                && text.contains(&garbage.display().to_string()),
            "{text}"
        );
        assert!(sinks(&[mail(good)], "http://127.0.0.1:7480/").is_ok());
    }

    #[tokio::test]
    async fn jsonl_appends_a_line_per_notification_and_names_a_bad_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("new/dir/alerts.jsonl");
        let built = sinks(&[spec(path.clone())], "http://127.0.0.1:7480/")
            .expect("opens, creating the directory");
        assert!(path.is_file());
        for keys in [&["a", "b"][..], &["c"]] {
            let batch = keys.iter().map(|k| notification(k)).collect();
            assert_eq!((built[0].deliver)(batch).await, Outcome::Delivered);
        }
        let text = std::fs::read_to_string(&path).expect("written");
        let keys: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON object a line");
                assert_eq!(
                    (&v["status"], &v["receiver"]),
                    (&"firing".into(), &"audit-file".into())
                );
                v["alerts"][0]["key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let first: Notification =
            serde_json::from_str(text.lines().next().unwrap_or_default()).expect("a notification");
        assert_eq!(first.alerts, notification("a").alerts);

        // A regular file where a directory should be: refused at start, naming both.
        let blocker = tmp.path().join("file");
        std::fs::write(&blocker, "x").expect("write");
        let bad = blocker.join("alerts.jsonl");
        let e = sinks(&[spec(bad.clone())], "http://127.0.0.1:7480/")
            .map(|_| ())
            .expect_err("cannot be opened");
        let text = format!("{e:#}");
        assert!(
            text.contains("alerts.sinks[2] `audit-file`")
                && text.contains(&blocker.display().to_string()),
            "{text}"
        );
        // Made unwritable after the start: the delivery fails naming the path (and is
        // retried by the book).
        std::fs::remove_file(&path).expect("rm");
        std::fs::create_dir(&path).expect("a directory in its place");
        match (built[0].deliver)(vec![notification("d")]).await {
            Outcome::Failed(e) => assert!(e.contains(&path.display().to_string()), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
