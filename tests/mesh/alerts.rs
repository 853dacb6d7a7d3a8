//! Alerts on a real node: a user added on a baseline server is a violation, and its alert
//! reaches every configured receiver (a webhook and an Elasticsearch `_bulk` endpoint
//! served by a small HTTP receiver inside the test, a JSON-lines file, the log) and
//! `GET /api/v1/alerts`. A receiver that is down at first gets the queued notification
//! once it is up; one that never comes up blocks nothing; a repeat is counted, not sent
//! again. Then the lifecycle over the API: an acknowledgement, a silence that keeps a new
//! alert from the receivers, an operator's resolution told to them, and refusals that
//! name what is wrong.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Node, get, metric, now_ms, post, wait_for};
use crate::policy::{add_users, baseline, policies};

/// Bound on every wait of this test.
const WAIT: Duration = Duration::from_secs(30);

/// One request as the receiver saw it, and the status it answered.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    path: String,
    content_type: String,
    body: String,
    status: u16,
}

/// A small HTTP/1.1 server on 127.0.0.1: `/hook` answers 200; `/late` answers 503 while
/// `late_down` is set; `/_bulk` answers like Elasticsearch, failing the first item of
/// its first request with 429 (to be retried) and taking everything after.
pub(crate) struct Receiver {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    late_down: Arc<AtomicBool>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let late_down = Arc::new(AtomicBool::new(true));
        let bulks = Arc::new(AtomicUsize::new(0));
        let (s, d) = (seen.clone(), late_down.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (s, d, b) = (s.clone(), d.clone(), bulks.clone());
                tokio::spawn(async move {
                    let _ = answer(conn, &s, &d, &b).await;
                });
            }
        });
        Receiver {
            addr,
            seen,
            late_down,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn requests(&self, path: &str) -> Vec<Request> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// Reads one request (headers, then `Content-Length` bytes of body), answers, closes.
async fn answer(
    mut conn: TcpStream,
    seen: &Mutex<Vec<Request>>,
    late_down: &AtomicBool,
    bulks: &AtomicUsize,
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
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    let (status, reply) = match path.as_str() {
        "/hook" => (200, "{}".to_string()),
        "/late" if late_down.load(Ordering::SeqCst) => (503, "down".to_string()),
        "/late" => (200, "{}".to_string()),
        "/_bulk" => {
            let docs = body.lines().count() / 2;
            let first = bulks.fetch_add(1, Ordering::SeqCst) == 0;
            let items: Vec<Value> = (0..docs)
                .map(|i| {
                    if first && i == 0 {
                        serde_json::json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue is full"}}})
                    } else {
                        serde_json::json!({"index": {"_index": "fleetmesh-test", "status": 201}})
                    }
                })
                .collect();
            let reply = serde_json::json!({"took": 1, "errors": first, "items": items});
            (200, reply.to_string())
        }
        _ => (404, "{}".to_string()),
    };
    seen.lock().expect("lock").push(Request {
        path,
        content_type: header("content-type"),
        body,
        status,
    });
    let text = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    conn.write_all(text.as_bytes()).await?;
    conn.shutdown().await
}

async fn alerts(node: &Node) -> Value {
    get(&node.url("/api/v1/alerts?since=0&limit=50")).await
}

fn sink<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["sinks"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no sink {name} in {view}"))
}

/// The webhook bodies (one notification each) taken with 200.
pub(crate) fn notifications(r: &Receiver, path: &str) -> Vec<Value> {
    r.requests(path)
        .iter()
        .filter(|q| q.status == 200)
        .map(|q| serde_json::from_str(&q.body).expect("webhook body is JSON"))
        .collect()
}

/// The webhook bodies' alerts, flattened.
fn hook_alerts(r: &Receiver, path: &str) -> Vec<Value> {
    notifications(r, path)
        .iter()
        .flat_map(|v| v["alerts"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// POSTs `body` to `url`: the status and the answer.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_reaches_every_receiver_and_lives_its_lifecycle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    // A port nothing listens on: the `dead` sink never comes up.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a port")
        .port();
    let jsonl = tmp.path().join("out/alerts/alerts.jsonl");
    let config = tmp.path().join("node.toml");
    let fast = "retry_min_ms = 200\nretry_max_ms = 1000\ntimeout_ms = 2000";
    std::fs::write(
        &config,
        format!(
            "[alerts.route]\ngroup_wait_ms = 0\ngroup_interval_ms = 500\n\
             [[alerts.sinks]]\nkind = \"log\"\n\
             [[alerts.sinks]]\nkind = \"jsonl\"\npath = \"{}\"\n\
             [[alerts.sinks]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n{fast}\n\
             [[alerts.sinks]]\nkind = \"elasticsearch\"\nurl = \"{}\"\nindex = \"fleetmesh-test\"\n{fast}\n\
             [[alerts.sinks]]\nkind = \"webhook\"\nname = \"late\"\nurl = \"{}\"\n{fast}\n\
             [[alerts.sinks]]\nkind = \"webhook\"\nname = \"dead\"\nurl = \"http://127.0.0.1:{dead_port}/x\"\nqueue = 4\n{fast}\n",
            jsonl.display(),
            receiver.url("/hook"),
            receiver.url(""),
            receiver.url("/late"),
        ),
    )
    .expect("node config");
    let policy = policies(tmp.path());
    // User removals are approved here: the test counts exactly the alerts of additions
    // (with no rule, a removal would be a consultation and end in an alert of its own).
    let mut rules = std::fs::read_to_string(policy.join("baseline.toml")).expect("policy");
    rules.push_str(
        "\n[[rules]]\nname = \"removals\"\ndecision = \"approved\"\nkinds = [\"user\"]\nchanges = [\"removed\"]\n",
    );
    std::fs::write(policy.join("baseline.toml"), rules).expect("policy");
    let (spec, etc) = baseline(
        "alerts-b1",
        "alerts",
        &tmp.path().join("b1"),
        &config,
        &policy,
    );
    let node = Node::start(spec);
    assert!(jsonl.is_file(), "the jsonl sink's file is created at start");

    add_users(&etc, &["deploy"]);

    // The webhook.
    let hooked = wait_for("the alert at the webhook", WAIT, || async {
        hook_alerts(&receiver, "/hook")
            .into_iter()
            .next()
            .ok_or_else(|| "nothing yet".to_string())
    })
    .await;
    let key = hooked["key"].as_str().unwrap_or_default().to_string();
    let id = hooked["id"].as_str().unwrap_or_default().to_string();
    let labels = &hooked["labels"];
    let rule = labels["rule"].as_str().unwrap_or_default().to_string();
    assert!(rule.ends_with("#no-new-users"), "{hooked}");
    assert_eq!(key, format!("alerts-b1|{rule}|user|deploy"));
    assert_eq!(labels["alertname"], "unauthorized_access", "{hooked}");
    assert_eq!(hooked["annotations"]["category"], "iam");
    assert_eq!(labels["severity"], "high");
    assert_eq!(
        (&labels["node"], &labels["region"], &labels["role"]),
        (
            &Value::from("alerts-b1"),
            &Value::from("alerts"),
            &Value::from("baseline")
        )
    );
    assert_eq!(hooked["annotations"]["decision"], "violation");
    assert_eq!(labels["subject"], "deploy");
    assert_eq!(hooked["status"]["state"], "firing");
    let hook = receiver.requests("/hook");
    assert!(
        hook[0].content_type.starts_with("application/json"),
        "{hook:?}"
    );
    let first = &notifications(&receiver, "/hook")[0];
    assert_eq!(
        (&first["receiver"], &first["status"]),
        (&Value::from("hook"), &Value::from("firing")),
        "one notification for the group: {first}"
    );
    assert_eq!(first["group_labels"]["alertname"], "unauthorized_access");

    // Elasticsearch: the first _bulk's item failed with 429 and was sent again.
    let bulks = wait_for("the alert retried into _bulk", WAIT, || async {
        let b = receiver.requests("/_bulk");
        if b.len() >= 2 {
            Ok(b)
        } else {
            Err(format!("{b:?}"))
        }
    })
    .await;
    for b in &bulks[..2] {
        assert_eq!(b.content_type, "application/x-ndjson");
        let lines: Vec<&str> = b.body.lines().collect();
        assert_eq!(lines.len(), 2, "{}", b.body);
        assert!(b.body.ends_with('\n'));
        let action: Value = serde_json::from_str(lines[0]).expect("action line");
        assert_eq!(
            action,
            serde_json::json!({"index": {"_index": "fleetmesh-test"}})
        );
        let doc: Value = serde_json::from_str(lines[1]).expect("document line");
        let ts = doc["@timestamp"].as_str().unwrap_or_default();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "RFC 3339: {ts}"
        );
        assert_eq!(doc["event"]["kind"], "alert");
        assert_eq!(doc["event"]["category"], serde_json::json!(["iam"]));
        assert_eq!(doc["event"]["action"], "unauthorized_access");
        assert_eq!(doc["event"]["severity"], 4);
        assert_eq!(doc["host"]["name"], "alerts-b1");
        assert_eq!(doc["rule"]["name"], "no-new-users");
        assert_eq!(doc["rule"]["id"], rule.as_str());
        assert_eq!(
            doc["rule"]["description"],
            "no user may be added to a baseline server"
        );
        assert!(
            doc["message"]
                .as_str()
                .is_some_and(|m| m.contains("deploy"))
        );
        let f = &doc["fleetmesh"];
        assert_eq!(
            (&f["region"], &f["role"]),
            (&Value::from("alerts"), &Value::from("baseline"))
        );
        assert_eq!(f["decision"], "violation");
        assert_eq!(f["key"], key.as_str());
        assert_eq!(f["id"], id.as_str());
        assert_eq!(f["receiver"], "elasticsearch");
        assert!(f.get("term").is_some(), "{f}");
    }

    // The JSON-lines file.
    let line = wait_for("the alert in the jsonl file", WAIT, || async {
        let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object a line"))
            .find(|v| v["alerts"][0]["key"] == key.as_str())
            .ok_or(text)
    })
    .await;
    assert_eq!(
        (&line["receiver"], &line["alerts"][0]["labels"]["alertname"]),
        (&Value::from("jsonl"), &Value::from("unauthorized_access"))
    );
    assert!(node.log().contains(&key), "the log sink names the alert");

    // The API: the alert, and each sink's account of it.
    let view = wait_for("the sinks' account", WAIT, || async {
        let v = alerts(&node).await;
        let es = sink(&v, "elasticsearch");
        let (late, dead) = (sink(&v, "late"), sink(&v, "dead"));
        if es["delivered"] == 1
            && late["failed"].as_u64() >= Some(2)
            && dead["failed"].as_u64() >= Some(2)
        {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let first = &view["alerts"][0];
    assert_eq!(first["key"], key.as_str(), "{view}");
    assert_eq!(first["count"], 1);
    assert_eq!(
        (&first["id"], &first["state"]),
        (&Value::from(id.as_str()), &Value::from("firing"))
    );
    assert!(first["first_unix_ms"].as_u64() > Some(0));
    assert_eq!(view["raised"]["unauthorized_access"], 1);
    for name in ["log", "jsonl", "hook"] {
        let s = sink(&view, name);
        assert_eq!(
            (&s["delivered"], &s["queued"]),
            (&Value::from(1), &Value::from(0)),
            "{s}"
        );
    }
    let es = sink(&view, "elasticsearch");
    assert_eq!(es["failed"], 1, "the 429 item: {es}");
    assert!(
        es["last_error"].as_str().is_some_and(|e| e.contains("429")),
        "{es}"
    );
    let late = sink(&view, "late");
    assert_eq!(
        (&late["delivered"], &late["queued"]),
        (&Value::from(0), &Value::from(1)),
        "{late}"
    );
    assert!(
        late["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{late}"
    );
    let dead = sink(&view, "dead");
    assert_eq!(
        (&dead["delivered"], &dead["queued"]),
        (&Value::from(0), &Value::from(1)),
        "{dead}"
    );
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&dead_port.to_string())),
        "{dead}"
    );
    assert!(receiver.requests("/late").len() >= 2, "retried while down");

    // The late sink comes up: the queued alert arrives.
    receiver.late_down.store(false, Ordering::SeqCst);
    let late = wait_for("the queued alert at the late sink", WAIT, || async {
        let got = hook_alerts(&receiver, "/late");
        if got.is_empty() {
            Err("nothing yet".to_string())
        } else {
            Ok(got)
        }
    })
    .await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["key"], key.as_str());
    let view = wait_for("the late sink's account", WAIT, || async {
        let v = alerts(&node).await;
        if sink(&v, "late")["delivered"] == 1 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(sink(&view, "late")["queued"], 0);
    assert_eq!(sink(&view, "late")["failures_in_a_row"], 0);

    // The same user removed and added again: the same key, counted, not sent again.
    add_users(&etc, &[]);
    wait_for("the removal decided", WAIT, || async {
        let list: Vec<Value> = get(&node.url("/api/v1/decisions?limit=10000")).await;
        list.iter()
            .find(|d| d["subject"] == "deploy" && d["change"] == "removed")
            .map(|_| ())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    add_users(&etc, &["deploy"]);
    let view = wait_for("the repeat counted", WAIT, || async {
        let v = alerts(&node).await;
        if v["alerts"][0]["count"] == 2 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(view["alerts"].as_array().map(Vec::len), Some(1), "{view}");
    assert_eq!(view["repeats"], 1);
    assert_eq!(view["alerts"][0]["id"], id.as_str(), "the same episode");
    assert_eq!(view["raised"]["unauthorized_access"], 2);
    let hook = sink(&view, "hook");
    assert_eq!(
        (&hook["delivered"], &hook["queued"]),
        (&Value::from(1), &Value::from(0)),
        "{hook}"
    );
    assert_eq!(
        hook_alerts(&receiver, "/hook").len(),
        1,
        "a repeat of a firing alert is not told again"
    );

    // The metrics.
    let m = node.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fleetmesh_alerts_raised_total",
            "action=\"unauthorized_access\""
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "fleetmesh_alert_deliveries_total",
            "sink=\"hook\",outcome=\"delivered\""
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "fleetmesh_alert_deliveries_total",
            "sink=\"elasticsearch\",outcome=\"failed\""
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "fleetmesh_alert_sink_queued", "sink=\"dead\""),
        1.0
    );
    assert_eq!(
        metric(&m, "fleetmesh_alert_sink_queued", "sink=\"late\""),
        0.0
    );

    // The lifecycle over the API. An acknowledgement names who, and is in the history.
    let (status, ack) = post(
        &node.url(&format!("/api/v1/alerts/{id}/ack")),
        serde_json::json!({"by": "ops@example", "comment": "looking"}),
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(
        (&ack["by"], &ack["comment"]),
        (&Value::from("ops@example"), &Value::from("looking"))
    );
    assert!(
        ack["until_unix_ms"].as_u64() > ack["at_unix_ms"].as_u64(),
        "{ack}"
    );
    let one: Value = get(&node.url(&format!("/api/v1/alerts/{id}"))).await;
    assert_eq!(one["status"]["state"], "acknowledged", "{one}");
    let history: Vec<&str> = one["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|t| t["status"]["state"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(history, ["firing", "acknowledged"], "{one}");
    let listed: Value = get(&node.url("/api/v1/alerts?state=acknowledged")).await;
    assert_eq!(listed["alerts"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["alerts"].as_array().map(Vec::len), Some(1));

    // Refusals name what is wrong.
    let (status, e) = post(
        &node.url("/api/v1/alerts/0123456789abcdef/ack"),
        serde_json::json!({"by": "ops"}),
    )
    .await;
    assert_eq!(status, 404, "{e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|t| t.contains("0123456789abcdef")),
        "{e}"
    );
    let (status, e) = post(
        &node.url(&format!("/api/v1/alerts/{id}/ack")),
        serde_json::json!({"by": " "}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    let bad = reqwest::get(node.url("/api/v1/alerts?state=sleeping"))
        .await
        .expect("answered");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap_or_default().contains("sleeping"));
    let (status, e) = post(
        &node.url("/api/v1/silences"),
        serde_json::json!({"matchers": [], "startsAt": "now", "endsAt": "later", "createdBy": "t"}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"].as_str().is_some_and(|t| t.contains("now")),
        "{e}"
    );

    // A silence (Alertmanager's JSON): the user added next is silenced, and no receiver
    // hears of it while the silence holds.
    let now = now_ms();
    let rfc3339 = fleetmesh_actors::alerting::rfc3339::format;
    let (status, created) = post(
        &node.url("/api/v1/silences"),
        serde_json::json!({
            "matchers": [{"name": "subject", "value": "ops2", "isRegex": false, "isEqual": true}],
            "startsAt": rfc3339(now - 1000),
            "endsAt": rfc3339(now + 3_600_000),
            "createdBy": "test",
            "comment": "planned change",
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let silence = created["silenceID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!silence.is_empty(), "{created}");
    add_users(&etc, &["deploy", "ops2"]);
    let silenced = wait_for("the new alert silenced", WAIT, || async {
        let v = alerts(&node).await;
        v["alerts"]
            .as_array()
            .and_then(|l| l.iter().find(|a| a["subject"] == "ops2").cloned())
            .filter(|a| a["state"] == "silenced")
            .ok_or_else(|| v.to_string())
    })
    .await;
    assert_eq!(silenced["status"]["by"][0], silence.as_str(), "{silenced}");

    // An operator resolves the first alert: the receivers are told, in one notification
    // of its group that leaves the silenced alert out.
    let (status, done) = post(
        &node.url(&format!("/api/v1/alerts/{id}/resolve")),
        serde_json::json!({"by": "ops@example"}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let resolved = wait_for("the resolution at the webhook", WAIT, || async {
        notifications(&receiver, "/hook")
            .into_iter()
            .find(|n| n["status"] == "resolved")
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(resolved["alerts"][0]["id"], id.as_str(), "{resolved}");
    assert_eq!(resolved["alerts"][0]["status"]["state"], "resolved");
    assert!(
        resolved["alerts"][0]["ends_at_unix_ms"].as_u64().is_some(),
        "{resolved}"
    );
    assert!(
        !hook_alerts(&receiver, "/hook")
            .iter()
            .any(|a| a["labels"]["subject"] == "ops2"),
        "the silenced alert was told"
    );
    let (status, e) = post(
        &node.url(&format!("/api/v1/alerts/{id}/resolve")),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 409, "already resolved: {e}");

    // The silences in Alertmanager's shape; expired by DELETE, after which the alert it
    // held is told.
    let list: Value = get(&node.url("/api/v1/silences")).await;
    assert_eq!(list[0]["id"], silence.as_str(), "{list}");
    assert_eq!(list[0]["status"]["state"], "active", "{list}");
    assert_eq!(list[0]["createdBy"], "test");
    assert_eq!(list[0]["matchers"][0]["name"], "subject");
    let expired = reqwest::Client::new()
        .delete(node.url(&format!("/api/v1/silences/{silence}")))
        .send()
        .await
        .expect("answered");
    assert_eq!(expired.status(), 200);
    let list: Value = get(&node.url("/api/v1/silences")).await;
    assert_eq!(list[0]["status"]["state"], "expired", "{list}");
    let again = reqwest::Client::new()
        .delete(node.url(&format!("/api/v1/silences/{silence}")))
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), 409, "already expired");
    wait_for("the unsilenced alert at the webhook", WAIT, || async {
        hook_alerts(&receiver, "/hook")
            .into_iter()
            .find(|a| a["labels"]["subject"] == "ops2" && a["status"]["state"] == "firing")
            .ok_or_else(|| "not yet".to_string())
    })
    .await;

    // The same from the command line.
    let api = node.url("");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(crate::harness::BIN)
            .args(args)
            .args(["--api", api.as_str()])
            .output()
            .expect("fleetmesh runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["alerts", "list", "--state", "resolved"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("ID") && out.contains(&id) && out.contains("resolved"),
        "{out}"
    );
    let (code, _, err) = cli(&["alerts", "ack", "0123456789abcdef", "--by", "ops"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("404") && err.contains("no alert 0123456789abcdef"),
        "{err}"
    );
    let (code, out, err) = cli(&[
        "silence",
        "add",
        "--matcher",
        "subject=~\"ops.*\"",
        "--duration",
        "2h",
        "--by",
        "ops",
        "--comment",
        "CHG-42",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let cli_silence = out.lines().next().unwrap_or_default().to_string();
    assert_eq!(cli_silence.len(), 32, "{out}");
    let (code, out, _) = cli(&["silence", "list"]);
    assert_eq!(code, Some(0));
    let row = out
        .lines()
        .find(|l| l.starts_with(&cli_silence))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("active") && row.contains("subject=~\"ops.*\"") && row.contains("CHG-42"),
        "{row}"
    );
    let (code, _, err) = cli(&[
        "silence",
        "add",
        "--matcher",
        "subject",
        "--duration",
        "2h",
        "--by",
        "o",
        "--comment",
        "x",
    ]);
    assert_eq!(code, Some(2), "a bad matcher is a usage error");
    assert!(err.contains("--matcher \"subject\""), "{err}");
    let (code, out, err) = cli(&["silence", "expire", &cli_silence]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("expired {cli_silence}").as_str()),
        "{err}"
    );
    let list: Value = get(&node.url("/api/v1/silences")).await;
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().all(|s| s["status"]["state"] == "expired")),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_queued_for_a_down_webhook_is_delivered_after_a_restart_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts.route]\ngroup_wait_ms = 0\n\
             [[alerts.receivers]]\nkind = \"webhook\"\nname = \"late\"\nurl = \"{}\"\n\
             retry_min_ms = 200\nretry_max_ms = 500\ntimeout_ms = 2000\n",
            receiver.url("/late")
        ),
    )
    .expect("node config");
    let policy = policies(tmp.path());
    let data = tmp.path().join("b1");
    let (spec, etc) = baseline("restart-b1", "restart", &data, &config, &policy);
    let mut node = Node::start(spec.clone());
    add_users(&etc, &["deploy"]);
    // The webhook answers 503: the notification waits in the queue.
    let id = wait_for("the notification queued and failing", WAIT, || async {
        let v = alerts(&node).await;
        let late = sink(&v, "late");
        let id = v["alerts"][0]["id"].as_str().map(str::to_string);
        match id {
            Some(id) if late["queued"] == 1 && late["failed"].as_u64() >= Some(1) => Ok(id),
            _ => Err(v.to_string()),
        }
    })
    .await;
    let status = node.stop();
    assert!(status.success(), "a clean stop: {status}");
    let saved = std::fs::metadata(data.join("alerts/queue.rmp")).map(|m| m.len());
    assert!(saved.as_ref().is_ok_and(|n| *n > 10), "saved: {saved:?}");
    assert!(
        notifications(&receiver, "/late").is_empty(),
        "nothing taken before the restart"
    );

    // Up again, and the node restarted: delivered once.
    receiver.late_down.store(false, Ordering::SeqCst);
    let node = Node::start(spec);
    let got = wait_for("the saved notification delivered", WAIT, || async {
        let got = notifications(&receiver, "/late");
        if got.is_empty() {
            Err("nothing yet".to_string())
        } else {
            Ok(got)
        }
    })
    .await;
    assert_eq!(
        got[0]["alerts"][0]["id"],
        id.as_str(),
        "the same alert: {got:?}"
    );
    // Its account: delivered, nothing left to send again.
    wait_for("the queue empty and saved so", WAIT, || async {
        let v = alerts(&node).await;
        let late = sink(&v, "late");
        let file = std::fs::read(data.join("alerts/queue.rmp")).unwrap_or_default();
        let left: Vec<(String, Value)> = rmp_serde::from_slice(&file).unwrap_or_default();
        if late["delivered"] == 1 && late["queued"] == 0 && left.is_empty() {
            Ok(())
        } else {
            Err(format!("{late}; {} saved", left.len()))
        }
    })
    .await;
    let with_id = notifications(&receiver, "/late")
        .iter()
        .filter(|n| {
            n["alerts"]
                .as_array()
                .is_some_and(|l| l.iter().any(|a| a["id"] == id.as_str()))
        })
        .count();
    assert_eq!(with_id, 1, "delivered once");
}
