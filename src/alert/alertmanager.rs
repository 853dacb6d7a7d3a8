//! The `alertmanager` sink: pushes alerts to a Prometheus Alertmanager's v2 API
//! (`POST <url>/api/v2/alerts`), so that a site that already runs Alertmanager routes,
//! groups, silences and notifies fleetmesh's alerts like any other.
//!
//! Each alert is sent with its labels (`alertname` (the action), `severity`, `region`,
//! `role`, `node`, `rule`, `kind`, `subject`: see `fleetmesh_actors::alerting::labels`),
//! its annotations (`summary`, `reason`, `decision`, `term`, and `count`, the raises
//! folded into it), `startsAt` (its first raise) and `generatorURL` (the raising node's
//! console). No `endsAt` is sent: Alertmanager holds an alert firing for its
//! `resolve_timeout` after the last push.

use std::time::Duration;

use fleetmesh_actors::actor::alert::Deliver;
use fleetmesh_actors::alert::{Entry, Outcome};
use fleetmesh_actors::alerting::{labels, rfc3339};

/// The body Alertmanager's `POST /api/v2/alerts` takes for `batch`.
pub fn body(batch: &[Entry], generator: &str) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = batch
        .iter()
        .map(|e| {
            let mut annotations = labels::annotations_of(&e.alert);
            annotations.insert("count".into(), e.count.to_string());
            serde_json::json!({
                "labels": labels::of_alert(&e.alert),
                "annotations": annotations,
                "startsAt": rfc3339::format(e.first_unix_ms),
                "generatorURL": generator,
            })
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
    Box::new(move |batch: Vec<Entry>| {
        let request = client
            .post(endpoint.clone())
            .timeout(timeout)
            .json(&body(&batch, &generator));
        let url = endpoint.clone();
        let n = batch.len();
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
