//! The `alertmanager` sink: pushes alerts to a Prometheus Alertmanager's v2 API
//! (`POST <url>/api/v2/alerts`), so that a site that already runs Alertmanager routes,
//! groups, silences and notifies fleetmesh's alerts like any other.
//!
//! Each alert of a notification is sent with its labels (`alertname` (the action),
//! `severity`, `region`, `role`, `node`, `rule`, `kind`, `subject`: see
//! `fleetmesh_actors::alerting::labels`), its annotations (`summary`, `reason`,
//! `decision`, `term`, `category`, the alert's details, and `fleetmesh_id`, its id),
//! `startsAt` (its episode's first firing), `generatorURL` (the raising node's console)
//! and, once it resolved, `endsAt`: Alertmanager then shows it resolved. An open alert's
//! group is pushed again every `repush_ms` (60 s by default for this kind; the lifecycle
//! engine schedules it): without a push, Alertmanager holds it firing only for its
//! `resolve_timeout`.
use std::time::Duration;

use fleetmesh_actors::actor::alert::Deliver;
use fleetmesh_actors::alert::Outcome;
use fleetmesh_actors::alerting::{Notification, rfc3339};

/// The body Alertmanager's `POST /api/v2/alerts` takes for `batch`: each alert once (the
/// latest notification's view of it wins).
pub fn body(batch: &[Notification], generator: &str) -> serde_json::Value {
    let mut latest = std::collections::BTreeMap::new();
    for a in batch.iter().flat_map(|n| &n.alerts) {
        latest.insert(a.id.as_str(), a);
    }
    let alerts: Vec<serde_json::Value> = latest
        .into_values()
        .map(|a| {
            let mut annotations = a.annotations.clone();
            annotations.insert("fleetmesh_id".into(), a.id.clone());
            let mut v = serde_json::json!({
                "labels": a.labels,
                "annotations": annotations,
                "startsAt": rfc3339::format(a.starts_at_unix_ms),
                "generatorURL": generator,
            });
            if let Some(end) = a.ends_at_unix_ms {
                v["endsAt"] = rfc3339::format(end).into();
            }
            v
        })
        .collect();
    serde_json::Value::Array(alerts)
}

/// The sink: `url` is the Alertmanager's base URL; `generator` is where an operator sees
/// the alert (this node's console).
pub fn sink(
    client: reqwest::Client,
    url: reqwest::Url,
    generator: String,
    timeout: Duration,
) -> Deliver {
    let mut endpoint = url;
    let path = format!("{}/api/v2/alerts", endpoint.path().trim_end_matches('/'));
    endpoint.set_path(&path);
    Box::new(move |batch: Vec<Notification>| {
        let body = body(&batch, &generator);
        let n = batch.len();
        if body.as_array().is_none_or(Vec::is_empty) {
            // A budget summary: nothing for Alertmanager.
            return Box::pin(async { Outcome::Delivered });
        }
        let request = client.post(endpoint.clone()).timeout(timeout).json(&body);
        let url = endpoint.clone();
        Box::pin(async move {
            match request.send().await {
                Ok(answer) if answer.status().is_success() => Outcome::Delivered,
                // Alertmanager refuses a malformed alert with 400 and says why: the same
                // batch would be refused again.
                Ok(answer) if answer.status() == reqwest::StatusCode::BAD_REQUEST => {
                    let why = answer.text().await.unwrap_or_default();
                    Outcome::Partly {
                        retry: Vec::new(),
                        rejected: (0..n).collect(),
                        error: format!("POST {url}: answered 400: {}", why.trim()),
                    }
                }
                Ok(answer) => Outcome::Failed(format!("POST {url}: answered {}", answer.status())),
                Err(e) => Outcome::Failed(format!("POST {url}: {}", super::chain(&e))),
            }
        })
    })
}
