//! The node's live event stream: `GET /api/v1/events` (server-sent events).
//!
//! Actors push facts as they change ([`Pushed`], a bounded `broadcast` channel they never
//! wait on). One task here numbers them, renders their JSON once, keeps the last
//! [`KEPT`] for clients that reconnect with `Last-Event-ID`, and hands them to every
//! connected client. Event types (the SSE `event:` field):
//!
//! - `spike`: one spike this node encoded (as `GET /api/v1/spikes` lists it);
//! - `peer_spike`: one spike of a region peer, as gossip brought it here (same shape);
//! - `decision`: a decision made or settled (as `GET /api/v1/decisions`);
//! - `alert`: an alert raised or whose state changed (as `GET /api/v1/alerts` lists it);
//! - `node`: a peer's status changed as this node sees it (`peer`, `from`, `to`);
//! - `region`: the region's master as this node knows it (`master`, `term`, `leading`;
//!   `master` null when none is known);
//! - `fleet`: a fleet event raised or grown here, or an emergency heard (as
//!   `GET /api/v1/fleet`);
//! - `census`: a region's members and master: this node's own region as it sees it
//!   (with every heartbeat, `source` `local`), or another region as its master published
//!   it (`source` `master`, `received_unix_ms`), as `GET /api/v1/census` lists them;
//! - `learned`: a pattern this node learned, once, by whichever way came first: its
//!   region's log (`via` `log`) or a master's signed publication on the fleet topic
//!   (`gossip`; another region's, or its own master's before the log): `id`, `pattern`
//!   (`roles`, `kind`, `change`, `subject`, `after`), `region`, `term`, `master`, `by`,
//!   `via`, `approved_at_unix_ms`, `received_at_unix_ms` (as `GET /api/v1/patterns`
//!   lists it, without the signature and proof);
//! - `assignment`: a work item of the region's committed assignments that another node
//!   owns now: `item` (`probe:<name>`, `audit:<peer>`), its `work` and `of` (the two
//!   halves of `item`), `from` and `to` (peer ids); one event per item moved;
//! - `resync`: the stream lost events (`missed`: how many, when known): the client
//!   reloads what it shows from the REST endpoints.
//!
//! Every event carries `id:` (growing by one per event of this node's run) and its data
//! as one JSON object with `at_unix_ms`, the time the stream took it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::Bytes;
use fleetmesh_actors::actor::push::{Moved, Pushed};
use fleetmesh_actors::fleet::Learned;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Events kept for clients that reconnect.
pub const KEPT: usize = 4096;
/// What actors may push ahead of the numbering task before it reports a loss.
pub const PUSH_CAPACITY: usize = 8192;
/// Events a slow client may fall behind before it gets a `resync`.
const CLIENT_CAPACITY: usize = 4096;
/// A comment line this often keeps idle connections (and proxies) open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One numbered event, rendered once.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub kind: &'static str,
    pub data: Value,
}

impl Event {
    /// The event as SSE lines.
    pub fn frame(&self) -> Bytes {
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id, self.kind, self.data
        ))
    }
}

/// The numbered stream: the last [`KEPT`] events and the live feed.
///
/// Ids start above the start time of the run (in microseconds since the Unix epoch), so
/// that the ids of a later run are above those of an earlier one: a client that
/// reconnects to a restarted node with an id of the run before gets a `resync`.
#[derive(Debug)]
pub struct Hub {
    /// The id before the first of this run.
    base: u64,
    kept: Mutex<VecDeque<Arc<Event>>>,
    live: broadcast::Sender<Arc<Event>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::starting_at(fleetmesh_actors::actor::unix_ms().saturating_mul(1000))
    }
}

impl Hub {
    /// A hub whose first event has id `base + 1`.
    pub fn starting_at(base: u64) -> Self {
        Hub {
            base,
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(CLIENT_CAPACITY).0,
        }
    }

    /// The id the next event gets, given what is kept (the newest is last).
    fn next_after(&self, kept: &VecDeque<Arc<Event>>) -> u64 {
        kept.back().map_or(self.base + 1, |e| e.id + 1)
    }

    /// Numbers and publishes one event.
    pub fn publish(&self, kind: &'static str, mut data: Value) {
        if let Some(o) = data.as_object_mut() {
            o.entry("at_unix_ms")
                .or_insert_with(|| fleetmesh_actors::actor::unix_ms().into());
        }
        let event = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let id = self.next_after(&kept);
            let event = Arc::new(Event { id, kind, data });
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(event.clone());
            event
        };
        // No client connected is not an error.
        let _ = self.live.send(event);
    }

    /// Subscribes a client that has seen everything up to `last` (`None`: a new client,
    /// which starts with what happens from now on). The stream starts with the kept
    /// events after `last`, or a `resync` if some of them are no longer kept.
    pub fn subscribe(self: &Arc<Self>, last: Option<u64>) -> impl Stream<Item = Bytes> + use<> {
        // Subscribed before reading what is kept: nothing falls between the two.
        let live = self.live.subscribe();
        let mut first: VecDeque<Bytes> = VecDeque::new();
        // The newest event this client will have had from what is kept, read under the
        // same lock as the kept events: one published meanwhile comes live, once.
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let seen = self.next_after(&kept) - 1;
        if let Some(last) = last {
            let oldest = kept.front().map_or(seen + 1, |e| e.id);
            if last < self.base || last > seen {
                // An id of another run of this node (or none it gave): what happened
                // since is unknown.
                first.push_back(resync(seen, None));
                if last < self.base {
                    first.extend(kept.iter().map(|e| e.frame()));
                }
            } else {
                if last + 1 < oldest {
                    first.push_back(resync(seen, Some(oldest - last - 1)));
                }
                first.extend(kept.iter().filter(|e| e.id > last).map(|e| e.frame()));
            }
        } else {
            // A first line at once, so that the client knows the stream is up.
            first.push_back(Bytes::from_static(b": fleetmesh events\n\n"));
        }
        drop(kept);
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.reset();
        futures::stream::unfold(
            (first, live, seen, keepalive),
            |(mut first, mut live, mut seen, mut keepalive)| async move {
                if let Some(b) = first.pop_front() {
                    return Some((b, (first, live, seen, keepalive)));
                }
                loop {
                    tokio::select! {
                        got = live.recv() => match got {
                            Ok(e) if e.id <= seen => continue,
                            Ok(e) => {
                                seen = e.id;
                                return Some((e.frame(), (first, live, seen, keepalive)));
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                return Some((resync(seen, Some(n)), (first, live, seen, keepalive)));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        _ = keepalive.tick() => {
                            return Some((Bytes::from_static(b": keepalive\n\n"), (first, live, seen, keepalive)));
                        }
                    }
                }
            },
        )
    }
}

/// A `resync` event (not numbered: it stands between numbered events).
fn resync(after: u64, missed: Option<u64>) -> Bytes {
    let data = json!({ "after": after, "missed": missed });
    Bytes::from(format!("event: resync\ndata: {data}\n\n"))
}

/// Numbers what actors push, until every pushing actor is gone.
pub async fn run(hub: Arc<Hub>, mut pushed: broadcast::Receiver<Pushed>) {
    loop {
        match pushed.recv().await {
            Ok(p) => render(&hub, p),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(missed = n, "event stream fell behind the actors");
                hub.publish("resync", json!({ "missed": n }));
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

fn render(hub: &Hub, p: Pushed) {
    match p {
        Pushed::Spikes(spikes) => {
            for s in spikes.iter() {
                hub.publish("spike", json_of(s));
            }
        }
        Pushed::PeerSpikes(spikes) => {
            for s in spikes.iter() {
                hub.publish("peer_spike", json_of(s));
            }
        }
        Pushed::Decision(r) => hub.publish("decision", json_of(&r)),
        Pushed::Alert(a) => hub.publish("alert", json_of(&a)),
        Pushed::Peer { peer, from, to } => hub.publish(
            "node",
            json!({ "peer": peer.as_str(), "from": from.as_str(), "to": to.as_str() }),
        ),
        Pushed::Master { master, leading } => {
            let (peer, term) = match master {
                Some((p, t)) => (Some(p.to_string()), Some(t)),
                None => (None, None),
            };
            hub.publish(
                "region",
                json!({ "master": peer, "term": term, "leading": leading }),
            );
        }
        Pushed::Fleet(seen) => hub.publish("fleet", json_of(&seen)),
        Pushed::Census {
            summary,
            received_unix_ms,
        } => {
            let mut data = json_of(&*summary);
            data["received_unix_ms"] = json!(received_unix_ms);
            data["source"] = json!(if received_unix_ms.is_some() {
                "master"
            } else {
                "local"
            });
            hub.publish("census", data)
        }
        Pushed::Learned(l) => hub.publish("learned", learned(&l)),
        Pushed::Reassigned(moves) => {
            for m in moves.iter() {
                hub.publish("assignment", assignment(m));
            }
        }
    }
}

/// A learned pattern for the stream: what it approves, where from and by whom; not its
/// signature nor its proof (up to tens of KiB, checked already; the API has them).
fn learned(l: &Learned) -> Value {
    let a = &l.approval;
    json!({
        "id": l.id,
        "pattern": a.pattern,
        "region": a.region,
        "term": a.term,
        "master": a.master,
        "by": a.by,
        "via": l.via,
        "approved_at_unix_ms": a.approved_at_unix_ms,
        "received_at_unix_ms": l.received_at_unix_ms,
    })
}

/// A moved work item for the stream, its item split at the first `:` (`audit:<peer>`:
/// work `audit` of that peer); an item without one is all `work`.
fn assignment(m: &Moved) -> Value {
    let (work, of) = m.item.split_once(':').unwrap_or((&m.item, ""));
    json!({ "item": m.item, "work": work, "of": of, "from": m.from, "to": m.to })
}

fn json_of(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn text(b: &Bytes) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[tokio::test]
    async fn a_client_gets_live_events_in_order_and_a_reconnect_resumes_after_its_last_id() {
        let hub = Arc::new(Hub::starting_at(0));
        let mut fresh = Box::pin(hub.subscribe(None));
        assert!(text(&fresh.next().await.expect("opening")).starts_with(':'));
        hub.publish("node", json!({ "peer": "a" }));
        hub.publish("node", json!({ "peer": "b" }));
        let first = text(&fresh.next().await.expect("event"));
        assert!(first.starts_with("id: 1\nevent: node\ndata: {"), "{first}");
        assert!(first.contains("\"peer\":\"a\""), "{first}");
        assert!(text(&fresh.next().await.expect("event")).starts_with("id: 2\n"));
        // Reconnecting after id 1: id 2 again, then what comes next.
        let mut again = Box::pin(hub.subscribe(Some(1)));
        hub.publish("region", json!({ "master": null }));
        assert!(text(&again.next().await.expect("kept")).starts_with("id: 2\n"));
        let live = text(&again.next().await.expect("live"));
        assert!(live.starts_with("id: 3\nevent: region\n"), "{live}");
        assert!(live.contains("at_unix_ms"), "{live}");
    }

    #[tokio::test]
    async fn a_client_that_missed_more_than_is_kept_is_told_to_resync() {
        let hub = Arc::new(Hub::starting_at(0));
        for i in 0..(KEPT as u64 + 10) {
            hub.publish("spike", json!({ "seq": i }));
        }
        let mut s = Box::pin(hub.subscribe(Some(3)));
        let first = text(&s.next().await.expect("resync"));
        assert!(first.starts_with("event: resync\n"), "{first}");
        assert!(first.contains("\"missed\":7"), "{first}");
        // Then the oldest kept event.
        assert!(text(&s.next().await.expect("kept")).starts_with("id: 11\n"));
    }

    #[tokio::test]
    async fn a_client_of_an_earlier_run_is_told_to_resync_and_gets_all_that_is_kept() {
        // The id the run before gave its only event.
        let earlier = Hub::starting_at(1_000);
        earlier.publish("node", json!({}));
        let last = 1_001;
        assert!(
            earlier
                .kept
                .lock()
                .expect("kept")
                .back()
                .is_some_and(|e| e.id == last)
        );
        let hub = Arc::new(Hub::starting_at(2_000));
        hub.publish("node", json!({}));
        let mut s = Box::pin(hub.subscribe(Some(last)));
        let first = text(&s.next().await.expect("resync"));
        assert!(first.starts_with("event: resync\n"), "{first}");
        assert!(text(&s.next().await.expect("kept")).starts_with("id: 2001\n"));
        // An id this run never gave: resync, then only what comes next.
        let mut s = Box::pin(hub.subscribe(Some(9_999)));
        assert!(text(&s.next().await.expect("resync")).starts_with("event: resync\n"));
        hub.publish("node", json!({}));
        assert!(text(&s.next().await.expect("live")).starts_with("id: 2002\n"));
    }

    #[test]
    fn a_moved_item_names_its_work_whose_it_is_and_both_owners() {
        use fleetmesh_actors::node::Id;
        let m = Moved {
            item: "audit:12D3w3".into(),
            from: Id::from("12D3w1"),
            to: Id::from("12D3w2"),
        };
        assert_eq!(
            assignment(&m),
            json!({ "item": "audit:12D3w3", "work": "audit", "of": "12D3w3",
                    "from": "12D3w1", "to": "12D3w2" })
        );
        let odd = Moved {
            item: "plain".into(),
            ..m
        };
        assert_eq!(assignment(&odd)["work"], "plain");
        assert_eq!(assignment(&odd)["of"], "");
    }

    #[tokio::test]
    async fn a_learned_pattern_and_moved_items_become_events() {
        use fleetmesh_actors::fleet::{Approval, Pattern, Via};
        use fleetmesh_actors::node::Id;
        let hub = Arc::new(Hub::starting_at(0));
        let mut s = Box::pin(hub.subscribe(None));
        s.next().await.expect("opening");
        let pattern: Pattern = serde_json::from_value(json!({
            "roles": ["web"], "kind": "user", "change": "added", "subject": "deploy",
        }))
        .expect("a pattern");
        let approval = Approval {
            pattern,
            region: "eu".into(),
            term: 3,
            master: Id::from("m"),
            by: "operator alice".into(),
            approved_at_unix_ms: 10,
            public_key: vec![1; 36],
            signature: vec![2; 64],
            proof: None,
        };
        let l = Learned {
            id: approval.id(),
            approval,
            received_at_unix_ms: 11,
            via: Via::Log,
        };
        render(&hub, Pushed::Learned(Box::new(l)));
        let moves = vec![
            Moved {
                item: "audit:a".into(),
                from: Id::from("b"),
                to: Id::from("c"),
            },
            Moved {
                item: "probe:ssh".into(),
                from: Id::from("b"),
                to: Id::from("a"),
            },
        ];
        render(&hub, Pushed::Reassigned(Arc::new(moves)));
        let first = text(&s.next().await.expect("learned"));
        assert!(first.contains("event: learned\n"), "{first}");
        for want in [
            "\"subject\":\"deploy\"",
            "\"by\":\"operator alice\"",
            "\"via\":\"log\"",
            "\"term\":3",
        ] {
            assert!(first.contains(want), "{want} in {first}");
        }
        assert!(!first.contains("signature"), "{first}");
        let second = text(&s.next().await.expect("first move"));
        assert!(second.contains("event: assignment\n"), "{second}");
        assert!(second.contains("\"item\":\"audit:a\""), "{second}");
        let third = text(&s.next().await.expect("second move"));
        assert!(third.contains("\"item\":\"probe:ssh\""), "{third}");
    }

    #[tokio::test]
    async fn a_slow_client_is_told_how_much_it_missed() {
        let hub = Arc::new(Hub::starting_at(0));
        let mut s = Box::pin(hub.subscribe(None));
        s.next().await.expect("opening");
        for i in 0..(CLIENT_CAPACITY as u64 + 5) {
            hub.publish("spike", json!({ "seq": i }));
        }
        let first = text(&s.next().await.expect("lagged"));
        assert!(first.starts_with("event: resync\n"), "{first}");
        assert!(first.contains("\"missed\":5"), "{first}");
    }
}
