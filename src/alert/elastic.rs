//! The Elasticsearch sink: a batch of notifications is one `_bulk` request (NDJSON: an `index` action line
//! naming the index, then the document), each alert an ECS document. The answer is read
//! item by item: items refused for a passing reason (429, 5xx, or missing from the answer)
//! are retried, items refused for good (other 4xx: a mapping conflict, a malformed field)
//! are counted as rejected, since sending them again would fail again.
//!
//! The document, in ECS fields: `@timestamp` (RFC 3339, when the change was seen),
//! `event.kind` = `alert`, `event.category` (a list of one), `event.action`,
//! `event.severity` (1 info .. 5 critical), `event.created`, `host.name`, `rule.id` (the
//! rule reference), `rule.name`, `rule.ruleset` (the policy file), `rule.description`
//! (the reason), `message`, and `fleetmesh.*`: `region`, `role`, `decision`, `term`, `key`,
//! `id`, `state`, `first_seen`, `ended`, `severity` (its name), `subject`, `receiver`,
//! `group_key`, `details` (the other annotations).

use std::time::Duration;

use fleetmesh_actors::actor::alert::Deliver;
use fleetmesh_actors::alert::Outcome;
use fleetmesh_actors::alerting::{Notification, Notified, rfc3339};
use fleetmesh_actors::spike::Severity;
use serde_json::{Map, Value, json};

/// The sink POSTing to `url` (the `_bulk` endpoint) into `index`.
pub fn sink(
    client: reqwest::Client,
    url: reqwest::Url,
    index: String,
    timeout: Duration,
) -> Deliver {
    Box::new(move |batch: Vec<Notification>| {
        // Each notification's alerts are documents; a notification is retried when one
        // of its documents is, rejected when all of them are.
        let spans: Vec<usize> = batch.iter().map(|n| n.alerts.len()).collect();
        let n = spans.iter().sum::<usize>();
        if n == 0 {
            return Box::pin(async { Outcome::Delivered });
        }
        let request = client
            .post(url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body(&index, &batch));
        let url = url.clone();
        Box::pin(async move {
            let answer = match request.send().await {
                Ok(a) => a,
                Err(e) => return Outcome::Failed(format!("POST {url}: {}", super::chain(&e))),
            };
            let status = answer.status().as_u16();
            match answer.text().await {
                Ok(text) => per_notification(outcome(status, &text, n), &spans),
                Err(e) => Outcome::Failed(format!(
                    "POST {url}: reading the answer: {}",
                    super::chain(&e)
                )),
            }
        })
    })
}

/// The outcome by document, as one by notification (`spans`: documents per notification).
pub fn per_notification(by_doc: Outcome, spans: &[usize]) -> Outcome {
    let Outcome::Partly {
        retry,
        rejected,
        error,
    } = by_doc
    else {
        return by_doc;
    };
    let (mut again, mut refused, mut first) = (Vec::new(), Vec::new(), 0);
    for (i, &len) in spans.iter().enumerate() {
        let docs = first..first + len;
        first += len;
        if docs.clone().any(|d| retry.contains(&d)) {
            again.push(i);
        } else if len > 0 && docs.clone().all(|d| rejected.contains(&d)) {
            refused.push(i);
        }
    }
    Outcome::Partly {
        retry: again,
        rejected: refused,
        error,
    }
}

/// The `_bulk` request body for `batch`: two lines per alert, each ending in a newline.
pub fn body(index: &str, batch: &[Notification]) -> String {
    let action = json!({ "index": { "_index": index } }).to_string();
    let mut out = String::new();
    for n in batch {
        for a in &n.alerts {
            out.push_str(&action);
            out.push('\n');
            out.push_str(&document(n, a).to_string());
            out.push('\n');
        }
    }
    out
}

/// `event.severity`: 1 (info) to 5 (critical).
pub fn severity_number(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// Annotations that have their own ECS or `fleetmesh.*` field; the others are details.
const NAMED: [&str; 5] = ["summary", "reason", "decision", "term", "category"];

/// The ECS document of alert `a` as notification `n` carries it (see the module
/// documentation).
pub fn document(n: &Notification, a: &Notified) -> Value {
    let label = |k: &str| a.labels.get(k).map(String::as_str).unwrap_or("");
    let note = |k: &str| a.annotations.get(k).map(String::as_str);
    let severity = match label("severity") {
        "info" => 1,
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        _ => 0,
    };
    let reason = note("reason").unwrap_or("");
    let mut doc = Map::new();
    doc.insert(
        "@timestamp".into(),
        rfc3339::format(a.starts_at_unix_ms).into(),
    );
    doc.insert(
        "event".into(),
        json!({
            "kind": "alert",
            "category": [note("category").unwrap_or("host")],
            "action": label("alertname"),
            "severity": severity,
            "created": rfc3339::format(n.at_unix_ms),
        }),
    );
    doc.insert("host".into(), json!({ "name": label("node") }));
    if let Some(rule) = a.labels.get("rule") {
        // `file:line#name`: the name after `#`, the file before `:` (or `#`).
        let name = rule.rsplit_once('#').map_or(rule.as_str(), |(_, n)| n);
        let ruleset = rule
            .split_once(['#', ':'])
            .map_or(rule.as_str(), |(f, _)| f);
        doc.insert(
            "rule".into(),
            json!({ "id": rule, "name": name, "ruleset": ruleset, "description": reason }),
        );
    }
    let what = a
        .labels
        .get("subject")
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    doc.insert(
        "message".into(),
        format!(
            "{} on {}{what}: {reason}",
            label("alertname"),
            label("node")
        )
        .into(),
    );
    let details: Map<String, Value> = a
        .annotations
        .iter()
        .filter(|(k, _)| !NAMED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    doc.insert(
        "fleetmesh".into(),
        json!({
            "region": label("region"),
            "role": label("role"),
            "decision": note("decision"),
            "term": note("term").and_then(|t| t.parse::<u64>().ok()),
            "key": a.key,
            "id": a.id,
            "state": a.status.name(),
            "first_seen": rfc3339::format(a.starts_at_unix_ms),
            "ended": a.ends_at_unix_ms.map(rfc3339::format),
            "severity": label("severity"),
            "subject": a.labels.get("subject"),
            "receiver": n.receiver,
            "group_key": n.group_key,
            "details": details,
        }),
    );
    Value::Object(doc)
}

/// Reads the `_bulk` answer (HTTP `status`, body `text`) to a batch of `n` alerts.
pub fn outcome(status: u16, text: &str, n: usize) -> Outcome {
    let excerpt = || text.chars().take(200).collect::<String>();
    if !(200..300).contains(&status) {
        return Outcome::Failed(format!("_bulk answered {status}: {}", excerpt()));
    }
    let answer: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(format!("_bulk answer is not JSON ({e}): {}", excerpt())),
    };
    if answer["errors"] == Value::Bool(false) {
        return Outcome::Delivered;
    }
    let items = answer["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (mut retry, mut rejected, mut error) = (Vec::new(), Vec::new(), None);
    for i in 0..n {
        // Each item is `{"<action>": {"status": ..., "error": {...}}}`.
        let item = items
            .get(i)
            .and_then(Value::as_object)
            .and_then(|o| o.values().next());
        let Some(code) = item.and_then(|it| it["status"].as_u64()) else {
            retry.push(i);
            error.get_or_insert_with(|| format!("_bulk answer has no status for item {i}"));
            continue;
        };
        if (200..300).contains(&code) {
            continue;
        }
        if code == 429 || code >= 500 {
            retry.push(i);
        } else {
            rejected.push(i);
        }
        error.get_or_insert_with(|| {
            let e = item.map(|it| &it["error"]);
            let kind = e.and_then(|e| e["type"].as_str()).unwrap_or("error");
            let reason = e.and_then(|e| e["reason"].as_str()).unwrap_or("");
            format!("_bulk item {i}: {code} {kind}: {reason}")
        });
    }
    match error {
        None => Outcome::Delivered,
        Some(error) => Outcome::Partly {
            retry,
            rejected,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_actors::alert::Alert;
    use fleetmesh_actors::alerting::Engine;

    fn alert() -> Alert {
        Alert {
            key: "b1|baseline.toml:9#no-new-users|user|deploy".into(),
            at_unix_ms: 1_700_000_000_123,
            severity: Severity::High,
            category: "iam".into(),
            action: "unauthorized_access".into(),
            host: "b1".into(),
            region: "eu".into(),
            role: "baseline".into(),
            rule: Some("baseline.toml:9#no-new-users".into()),
            reason: "no user may be added".into(),
            decision: Some("violation".into()),
            term: Some(3),
            subject: Some("deploy".into()),
            details: [("seq".to_string(), "4".to_string())].into(),
        }
    }

    /// The notification the engine hands out for `alert()` alone.
    fn notification() -> Notification {
        let mut c = fleetmesh_actors::alerting::Config::default();
        c.route.group_wait_ms = Some(0);
        c.route.receiver = Some("es".into());
        let mut e = Engine::new(c).expect("valid");
        e.raise(alert(), 1_700_000_000_500).expect("raised");
        e.poll(1_700_000_000_500).pop().expect("a notification")
    }

    #[test]
    fn documents_carry_the_ecs_fields() {
        let n = notification();
        let d = document(&n, &n.alerts[0]);
        assert_eq!(d["@timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(d["event"]["category"], json!(["iam"]));
        assert_eq!(d["event"]["action"], "unauthorized_access");
        assert_eq!(d["event"]["severity"], 4);
        assert_eq!(d["event"]["created"], "2023-11-14T22:13:20.500Z");
        assert_eq!(d["host"]["name"], "b1");
        assert_eq!(d["rule"]["id"], "baseline.toml:9#no-new-users");
        assert_eq!(d["rule"]["name"], "no-new-users");
        assert_eq!(d["rule"]["ruleset"], "baseline.toml");
        assert_eq!(d["rule"]["description"], "no user may be added");
        assert_eq!(
            d["message"],
            "unauthorized_access on b1 (deploy): no user may be added"
        );
        let f = &d["fleetmesh"];
        assert_eq!(
            (&f["region"], &f["role"], &f["decision"], &f["term"]),
            (
                &json!("eu"),
                &json!("baseline"),
                &json!("violation"),
                &json!(3)
            )
        );
        assert_eq!(f["state"], "firing");
        assert_eq!(f["receiver"], "es");
        assert_eq!(f["id"], n.alerts[0].id);
        assert_eq!(f["details"]["seq"], "4");
        assert_eq!(
            f["details"].get("reason"),
            None,
            "named annotations are fields"
        );
        assert_eq!(Severity::High.name(), f["severity"]);

        let text = body("fm-alerts", &[n.clone(), n.clone()]);
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 4);
        assert!(text.ends_with('\n'));
        assert_eq!(lines[0], r#"{"index":{"_index":"fm-alerts"}}"#);
        let doc: Value = serde_json::from_str(lines[1]).expect("a document");
        assert_eq!(doc["fleetmesh"]["key"], alert().key);
    }

    #[test]
    fn bulk_answers_are_read_item_by_item_and_then_by_notification() {
        assert_eq!(
            outcome(200, r#"{"errors":false,"items":[]}"#, 2),
            Outcome::Delivered
        );
        assert!(matches!(outcome(503, "busy", 1), Outcome::Failed(e) if e.contains("503")));
        assert!(matches!(outcome(200, "<html>", 1), Outcome::Failed(e) if e.contains("not JSON")));
        let answer = r#"{"errors":true,"items":[
            {"index":{"status":201}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}},
            {"index":{"status":503}}
        ]}"#;
        let by_doc = outcome(200, answer, 5);
        assert_eq!(
            by_doc,
            Outcome::Partly {
                retry: vec![1, 3, 4],
                rejected: vec![2],
                error: "_bulk item 1: 429 es_rejected_execution_exception: queue full".into(),
            },
            "item 4 is missing from the answer: retried"
        );
        // Notifications of 1, 2, 0, 1 and 1 documents: the second holds a retried one,
        // the fourth only a rejected one; a summary (no documents) went through.
        let spans = [1, 2, 0, 1, 1];
        let by_doc = Outcome::Partly {
            retry: vec![1],
            rejected: vec![3],
            error: "e".into(),
        };
        assert_eq!(
            per_notification(by_doc, &spans),
            Outcome::Partly {
                retry: vec![1],
                rejected: vec![3],
                error: "e".into(),
            }
        );
        assert_eq!(
            per_notification(Outcome::Delivered, &spans),
            Outcome::Delivered
        );
    }
}
