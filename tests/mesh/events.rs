//! The live event stream (`GET /api/v1/events`) on real nodes: a client sees the region's
//! master, its peers, a file change as a spike and its decision as they happen, and a
//! client that reconnects with `Last-Event-ID` gets what it missed (a peer killed -9
//! meanwhile), in order.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{CONVERGE, Node, Spec, eventually};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    kind: String,
    data: Value,
}

/// A client of the stream.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(node: &Node, last: Option<u64>) -> Stream {
        let client = reqwest::Client::new();
        let mut request = client.get(node.url("/api/v1/events"));
        if let Some(id) = last {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), if one comes within `bound`.
    async fn next(&mut self, bound: Duration) -> Option<Sse> {
        let deadline = Instant::now() + bound;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, String::from("message"), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                if let Some(data) = data {
                    return Some(Sse { id, kind, data });
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .ok()?
                .expect("the stream stays readable")
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until `want` matches an event; returns every event read, the match last.
    async fn until(&mut self, what: &str, want: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let deadline = Instant::now() + CONVERGE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = self.next(left).await else {
                panic!("no {what} in the stream; saw {seen:#?}");
            };
            let done = want(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

fn seen_last(events: &[Sse]) -> Sse {
    events.last().expect("the matching event").clone()
}

fn ids(events: &[Sse]) -> Vec<u64> {
    events.iter().filter_map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_changes_live_and_resumes_after_a_reconnect() {
    let a = Node::start(Spec::new("a", "eu"));
    let mut spec = Spec::new("b", "eu");
    spec.bootstrap = vec![a.addr(true)];
    let mut b = Node::start(spec);
    let b_id = b.peer_id().to_string();

    // An id of no run of this node (0): told to resync, then given all that is kept,
    // where the region has a master (a or b: both may found) and b is alive.
    let mut stream = Stream::open(&a, Some(0)).await;
    let first = stream.next(CONVERGE).await.expect("a first event");
    assert_eq!(first.kind, "resync", "{first:?}");
    let is_master = |e: &Sse| e.kind == "region" && e.data["master"].is_string();
    let is_b_alive =
        |e: &Sse| e.kind == "node" && e.data["peer"] == b_id.as_str() && e.data["to"] == "alive";
    let mut replayed = Vec::new();
    while !(replayed.iter().any(is_master) && replayed.iter().any(is_b_alive)) {
        replayed.extend(
            stream
                .until("a master, b alive", |e| is_master(e) || is_b_alive(e))
                .await,
        );
    }
    let region = replayed
        .iter()
        .rev()
        .find(|e| is_master(e))
        .expect("found")
        .clone();
    let master = region.data["master"].as_str().unwrap_or_default();
    assert!(master == a.peer_id() || master == b_id, "{region:?}");
    assert_eq!(region.data["leading"], master == a.peer_id(), "{region:?}");
    assert!(region.data["term"].as_u64() >= Some(1), "{region:?}");

    // A file change: its spike, then its decision, pushed as they happen.
    std::fs::write(a.dir.join("root/etc/pushed.conf"), "x = 1\n").expect("write");
    let seen = stream
        .until("the spike", |e| {
            e.kind == "spike" && e.data["subject"] == "/etc/pushed.conf"
        })
        .await;
    let spike = seen_last(&seen);
    assert_eq!(spike.data["change"], "added", "{spike:?}");
    let seen = stream
        .until("the decision", |e| {
            e.kind == "decision" && e.data["subject"] == "/etc/pushed.conf"
        })
        .await;
    let decision = seen_last(&seen);
    assert_eq!(decision.data["seq"], spike.data["seq"], "{decision:?}");
    assert!(decision.data["rule"].is_string(), "{decision:?}");
    let last = decision.id.expect("numbered");
    drop(stream);

    // Away from the stream, b dies.
    b.kill9();
    eventually("a holds b dead", CONVERGE, || async {
        match a.peer(&b_id).await {
            Some(p) if p.status == "dead" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Back with the last id seen: what happened meanwhile, in order, no resync.
    let mut stream = Stream::open(&a, Some(last)).await;
    let missed = stream
        .until("b's death", |e| {
            e.kind == "node" && e.data["peer"] == b_id.as_str() && e.data["to"] == "dead"
        })
        .await;
    assert!(
        missed.iter().all(|e| e.kind != "resync"),
        "nothing was lost: {missed:#?}"
    );
    let got = ids(&missed);
    assert_eq!(got.len(), missed.len(), "every event is numbered");
    assert_eq!(got.first().copied(), Some(last + 1), "{got:?}");
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {got:?}"
    );
}
