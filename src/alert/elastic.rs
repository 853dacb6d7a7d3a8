//! The Elasticsearch sink: a batch is one `_bulk` request (NDJSON: an `index` action line
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
//! `count`, `first_seen`, `last_seen`, `severity` (its name), `subject`, `details`.

use std::time::Duration;

use fleetmesh_actors::actor::alert::Deliver;
use fleetmesh_actors::alert::{Entry, Outcome};
use fleetmesh_actors::spike::Severity;
use serde_json::{Map, Value, json};

/// The sink POSTing to `url` (the `_bulk` endpoint) into `index`.
pub fn sink(
    client: reqwest::Client,
    url: reqwest::Url,
    index: String,
    timeout: Duration,
) -> Deliver {
    Box::new(move |batch: Vec<Entry>| {
        let n = batch.len();
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
                Ok(text) => outcome(status, &text, n),
                Err(e) => Outcome::Failed(format!(
                    "POST {url}: reading the answer: {}",
                    super::chain(&e)
                )),
            }
        })
    })
}

/// The `_bulk` request body for `batch`: two lines per alert, each ending in a newline.
pub fn body(index: &str, batch: &[Entry]) -> String {
    let action = json!({ "index": { "_index": index } }).to_string();
    let mut out = String::new();
    for e in batch {
        out.push_str(&action);
        out.push('\n');
        out.push_str(&document(e).to_string());
        out.push('\n');
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

/// The ECS document of one alert (see the module documentation).
pub fn document(e: &Entry) -> Value {
    let a = &e.alert;
    let seen = if a.at_unix_ms > 0 {
        a.at_unix_ms
    } else {
        e.last_unix_ms
    };
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), rfc3339(seen).into());
    doc.insert(
        "event".into(),
        json!({
            "kind": "alert",
            "category": [a.category],
            "action": a.action,
            "severity": severity_number(a.severity),
            "created": rfc3339(e.last_unix_ms),
        }),
    );
    doc.insert("host".into(), json!({ "name": a.host }));
    if let Some(rule) = &a.rule {
        // `file:line#name`: the name after `#`, the file before `:` (or `#`).
        let name = rule.rsplit_once('#').map_or(rule.as_str(), |(_, n)| n);
        let ruleset = rule
            .split_once(['#', ':'])
            .map_or(rule.as_str(), |(f, _)| f);
        doc.insert(
            "rule".into(),
            json!({ "id": rule, "name": name, "ruleset": ruleset, "description": a.reason }),
        );
    }
    let what = a
        .subject
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    doc.insert(
        "message".into(),
        format!("{} on {}{what}: {}", a.action, a.host, a.reason).into(),
    );
    doc.insert(
        "fleetmesh".into(),
        json!({
            "region": a.region,
            "role": a.role,
            "decision": a.decision,
            "term": a.term,
            "key": a.key,
            "count": e.count,
            "first_seen": rfc3339(e.first_unix_ms),
            "last_seen": rfc3339(e.last_unix_ms),
            "severity": fleetmesh_actors::alerting::labels::severity_name(a.severity),
            "subject": a.subject,
            "details": a.details,
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

/// `unix_ms` as RFC 3339 in UTC with milliseconds (`2023-11-14T22:13:20.123Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (the era arithmetic of the
/// well-known days-to-civil conversion, for non-negative days only).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_actors::alert::Alert;

    fn entry() -> Entry {
        Entry {
            alert: Alert {
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
            },
            count: 2,
            first_unix_ms: 951_782_400_000,
            last_unix_ms: 1_700_000_000_500,
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn documents_carry_the_ecs_fields() {
        let d = document(&entry());
        assert_eq!(d["@timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(d["event"]["category"], json!(["iam"]));
        assert_eq!(d["event"]["action"], "unauthorized_access");
        assert_eq!(d["event"]["severity"], 4);
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
        assert_eq!(f["count"], 2);
        assert_eq!(f["first_seen"], "2000-02-29T00:00:00.000Z");
        assert_eq!(f["details"]["seq"], "4");

        let text = body("fm-alerts", &[entry(), entry()]);
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 4);
        assert!(text.ends_with('\n'));
        assert_eq!(lines[0], r#"{"index":{"_index":"fm-alerts"}}"#);
        let doc: Value = serde_json::from_str(lines[1]).expect("a document");
        assert_eq!(doc["fleetmesh"]["key"], entry().alert.key);
    }

    #[test]
    fn bulk_answers_are_read_item_by_item() {
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
        assert_eq!(
            outcome(200, answer, 5),
            Outcome::Partly {
                retry: vec![1, 3, 4],
                rejected: vec![2],
                error: "_bulk item 1: 429 es_rejected_execution_exception: queue full".into(),
            },
            "item 4 is missing from the answer: retried"
        );
    }
}
