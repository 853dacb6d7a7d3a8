//! Alert sinks: the I/O half of alerting. Each configured sink becomes a [`Deliver`]
//! function for the alert actor: it writes one batch and says how that went. What is
//! sent when, retries and bounds are decided in `fleetmesh_actors::alert`; here a sink only
//! writes, and names what went wrong (the path, the URL, the status).
//!
//! - `log`: one tracing event per alert (`warn`, `error` for high and critical ones);
//! - `jsonl`: appends one JSON object per alert and line to a file;
//! - `webhook`: POSTs `{"alerts": [...]}` as JSON; any status but 2xx is a failure;
//! - `elasticsearch`: POSTs the batch to `_bulk` as ECS documents ([`elastic`]);
//! - `alertmanager`: pushes the batch to a Prometheus Alertmanager's v2 API
//!   ([`alertmanager`]).

pub mod alertmanager;
pub mod elastic;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use fleetmesh_actors::actor::alert::{Deliver, Sink};
use fleetmesh_actors::alert::{Entry, Outcome, SinkConfig};
use fleetmesh_actors::spike::Severity;

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
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Log => "log",
            Target::Jsonl { .. } => "jsonl",
            Target::Webhook { .. } => "webhook",
            Target::Elasticsearch { .. } => "elasticsearch",
            Target::Alertmanager { .. } => "alertmanager",
        }
    }
}

/// One `[[alerts.sinks]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Its position in `alerts.sinks`, for messages.
    pub entry: usize,
    pub name: String,
    pub target: Target,
    /// Bound on one delivery (an HTTP request, a file append).
    pub timeout: Duration,
    pub queue: usize,
    pub batch: usize,
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
}

/// The alert actor's sinks for `specs`; `console` is this node's console URL, where an
/// alert pushed to Alertmanager says it came from. Fails, naming the entry and the path,
/// when a `jsonl` file cannot be opened for appending (its directory is created if
/// missing).
pub fn sinks(specs: &[Spec], console: &str) -> anyhow::Result<Vec<Sink>> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("fleetmesh/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client of the alert sinks")?;
    specs
        .iter()
        .map(|s| {
            let deliver = match &s.target {
                Target::Log => log(),
                Target::Jsonl { path } => {
                    append(path, b"").with_context(|| {
                        format!("alert sink alerts.sinks[{}] `{}`", s.entry, s.name)
                    })?;
                    jsonl(path.clone())
                }
                Target::Webhook { url } => webhook(client.clone(), url.clone(), s.timeout),
                Target::Elasticsearch { url, index } => {
                    elastic::sink(client.clone(), url.clone(), index.clone(), s.timeout)
                }
                Target::Alertmanager { url } => alertmanager::sink(
                    client.clone(),
                    url.clone(),
                    format!("{console}#alerts"),
                    s.timeout,
                ),
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

fn log() -> Deliver {
    Box::new(|batch: Vec<Entry>| {
        for e in &batch {
            let a = &e.alert;
            let (rule, subject) = (a.rule.as_deref().unwrap_or(""), a.subject.as_deref());
            let subject = subject.unwrap_or("");
            if a.severity >= Severity::High {
                tracing::error!(key = %a.key, action = %a.action, category = %a.category, host = %a.host, rule, subject, count = e.count, "alert: {}", a.reason);
            } else {
                tracing::warn!(key = %a.key, action = %a.action, category = %a.category, host = %a.host, rule, subject, count = e.count, "alert: {}", a.reason);
            }
        }
        Box::pin(async { Outcome::Delivered })
    })
}

fn jsonl(path: PathBuf) -> Deliver {
    Box::new(move |batch: Vec<Entry>| {
        let path = path.clone();
        Box::pin(async move {
            let mut text = Vec::new();
            for e in &batch {
                if let Err(e) = serde_json::to_writer(&mut text, e) {
                    return Outcome::Failed(format!("cannot encode an alert: {e}"));
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

fn webhook(client: reqwest::Client, url: reqwest::Url, timeout: Duration) -> Deliver {
    Box::new(move |batch: Vec<Entry>| {
        let request = client
            .post(url.clone())
            .timeout(timeout)
            .json(&serde_json::json!({ "alerts": batch }));
        let url = url.clone();
        Box::pin(async move {
            match request.send().await {
                Ok(answer) if answer.status().is_success() => Outcome::Delivered,
                Ok(answer) => Outcome::Failed(format!("POST {url}: answered {}", answer.status())),
                Err(e) => Outcome::Failed(format!("POST {url}: {}", chain(&e))),
            }
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
mod tests {
    use super::*;
    use fleetmesh_actors::alert::Alert;

    fn spec(path: PathBuf) -> Spec {
        Spec {
            entry: 2,
            name: "audit-file".into(),
            target: Target::Jsonl { path },
            timeout: Duration::from_secs(1),
            queue: 10,
            batch: 10,
            retry_min_ms: 10,
            retry_max_ms: 10,
        }
    }

    fn entry(key: &str) -> Entry {
        Entry {
            alert: Alert {
                key: key.into(),
                at_unix_ms: 5,
                severity: Severity::Medium,
                category: "file".into(),
                action: "policy_violation".into(),
                host: "h".into(),
                region: "r".into(),
                role: "baseline".into(),
                rule: None,
                reason: "why".into(),
                decision: None,
                term: None,
                subject: None,
                details: Default::default(),
            },
            count: 1,
            first_unix_ms: 5,
            last_unix_ms: 5,
        }
    }

    #[tokio::test]
    async fn jsonl_appends_a_line_per_alert_and_names_a_bad_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("new/dir/alerts.jsonl");
        let built = sinks(&[spec(path.clone())], "http://127.0.0.1:7480/")
            .expect("opens, creating the directory");
        assert!(path.is_file());
        for keys in [&["a", "b"][..], &["c"]] {
            let batch = keys.iter().map(|k| entry(k)).collect();
            assert_eq!((built[0].deliver)(batch).await, Outcome::Delivered);
        }
        let text = std::fs::read_to_string(&path).expect("written");
        let keys: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON object a line");
                v["key"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let first: Entry =
            serde_json::from_str(text.lines().next().unwrap_or_default()).expect("an entry");
        assert_eq!(first, entry("a"));

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
        match (built[0].deliver)(vec![entry("d")]).await {
            Outcome::Failed(e) => assert!(e.contains(&path.display().to_string()), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
