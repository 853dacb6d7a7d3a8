//! Tests of the alert conversion and of the book, with a fake clock.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::policy::judge::Record;

fn alert(key: &str, action: &str) -> Alert {
    Alert {
        key: key.into(),
        at_unix_ms: 0,
        severity: Severity::High,
        category: "iam".into(),
        action: action.into(),
        host: "b1".into(),
        region: "eu".into(),
        role: "baseline".into(),
        rule: Some("baseline.toml:9#no-new-users".into()),
        reason: "no user may be added".into(),
        decision: Some("violation".into()),
        term: None,
        subject: Some("deploy".into()),
        details: BTreeMap::new(),
    }
}

fn sink(name: &str, queue: usize, batch: usize) -> SinkConfig {
    SinkConfig {
        name: name.into(),
        queue,
        batch,
        retry_min_ms: 100,
        retry_max_ms: 1000,
    }
}

fn book(sinks: Vec<SinkConfig>) -> Book<Entry> {
    Book::new(Config { ring: 3, seed: 7 }, sinks)
}

/// Keeps `a` and queues its entry for every sink (as the alert actor queues a
/// notification for its receiver's sink).
fn send(b: &mut Book<Entry>, now: u64, a: Alert) -> Entry {
    let entry = b.raise(now, a);
    for s in 0..2 {
        b.queue(s, entry.clone());
    }
    entry
}

fn keys(batch: &Batch<Entry>) -> Vec<&str> {
    batch.items.iter().map(|e| e.alert.key.as_str()).collect()
}

#[test]
fn a_violation_becomes_an_alert_keyed_by_host_rule_kind_and_subject() {
    let node = node::Info {
        name: "b1".into(),
        region: "eu".into(),
        role: "baseline".into(),
        incarnation: 1,
    };
    let record = |kind: Kind, change: Change, subject: &str| Record {
        seq: 4,
        at_unix_ms: 2000,
        kind,
        change,
        subject: subject.into(),
        label: "policy_violation".into(),
        decision: Decision::Violation,
        rule: "baseline.toml:9#no-new-users".into(),
        reason: "no user may be added to a baseline server".into(),
        policy: "abcd".into(),
        settled: None,
    };
    let spike = |kind: Kind, change: Change, subject: &str, severity: Severity| Spike {
        origin: node::Id::from("p"),
        seq: 4,
        at_unix_ms: 1500,
        kind,
        change,
        subject: subject.into(),
        before: None,
        after: None,
        severity,
        layers: Vec::new(),
        label: "policy_violation".into(),
        fields: BTreeMap::new(),
    };
    let r = record(Kind::User, Change::Added, "deploy");
    let a = of_violation(
        &node,
        &r,
        &spike(Kind::User, Change::Added, "deploy", Severity::Info),
    );
    assert_eq!(a.key, "b1|baseline.toml:9#no-new-users|user|deploy");
    assert_eq!(
        (a.category.as_str(), a.action.as_str()),
        ("iam", "unauthorized_access")
    );
    assert_eq!(a.severity, Severity::High, "raised to at least high");
    assert_eq!(a.at_unix_ms, 1500, "when the change was seen");
    assert_eq!(
        (a.host.as_str(), a.region.as_str(), a.role.as_str()),
        ("b1", "eu", "baseline")
    );
    assert_eq!(a.decision.as_deref(), Some("violation"));
    assert_eq!(a.subject.as_deref(), Some("deploy"));
    assert_eq!(a.reason, "no user may be added to a baseline server");
    assert_eq!(a.details["policy"], "abcd");

    let r = record(Kind::Group, Change::Removed, "wheel");
    let a = of_violation(
        &node,
        &r,
        &spike(Kind::Group, Change::Removed, "wheel", Severity::Critical),
    );
    assert_eq!(a.action, "policy_violation", "only additions are access");
    assert_eq!(a.severity, Severity::Critical, "never lowered");

    for (kind, category) in [
        (Kind::File, "file"),
        (Kind::Process, "process"),
        (Kind::Network, "network"),
        (Kind::Metric, "host"),
    ] {
        let r = record(kind, Change::Added, "x");
        let a = of_violation(&node, &r, &spike(kind, Change::Added, "x", Severity::Info));
        assert_eq!(a.category, category);
        assert_eq!(a.action, "policy_violation");
        assert_eq!(a.severity, Severity::Medium);
    }
}

#[test]
fn repeats_are_counted_in_their_entry() {
    let mut b = book(vec![sink("hook", 10, 10)]);
    assert_eq!(b.raise(0, alert("k", "a")).count, 1);
    assert_eq!(b.raise(500, alert("k", "a")).count, 2);
    let e = b.raise(999, alert("k", "a"));
    assert_eq!((e.count, e.first_unix_ms, e.last_unix_ms), (3, 0, 999));
    assert_eq!(
        b.poll(999),
        vec![],
        "raising queues nothing: the engine decides"
    );
    let st = b.status();
    assert_eq!((st.raised["a"], st.repeats, st.kept), (3, 2, 1));
    assert_eq!(b.sink("hook"), Some(0));
    assert_eq!(b.sink("nope"), None);
}

#[test]
fn the_ring_keeps_the_latest_keys_newest_first() {
    let mut b = book(vec![]);
    for (t, k) in [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "d")] {
        b.raise(t, alert(k, "x"));
    }
    let latest: Vec<(String, u64)> = b
        .latest(0, 10)
        .into_iter()
        .map(|e| (e.alert.key, e.count))
        .collect();
    assert_eq!(
        latest,
        [("d".into(), 1), ("a".into(), 2), ("c".into(), 1)],
        "b was the least recently raised: forgotten"
    );
    let since: Vec<String> = b.latest(3, 10).into_iter().map(|e| e.alert.key).collect();
    assert_eq!(since, ["d", "a"]);
    assert_eq!(b.latest(0, 1).len(), 1);
    assert_eq!(b.status().kept, 3);
}

#[test]
fn a_sink_that_is_down_retries_with_backoff_and_blocks_no_other() {
    let mut b = book(vec![sink("down", 10, 2), sink("up", 10, 2)]);
    for k in ["a", "b", "c"] {
        send(&mut b, 0, alert(k, "x"));
    }
    let batches = b.poll(0);
    assert_eq!(batches.len(), 2, "one batch per sink");
    assert_eq!(
        keys(&batches[0]),
        ["a", "b"],
        "batches of at most 2, oldest first"
    );
    assert_eq!(b.poll(0), vec![], "one batch in flight per sink");
    assert_eq!(b.poll_timeout(), None, "both sinks busy");
    b.done(0, batches[0].ticket, Outcome::Failed("refused".into()));
    b.done(0, batches[1].ticket, Outcome::Delivered);
    // The healthy sink goes on at once; the failed one waits 80..=100 ms.
    let next = b.poll(0);
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].sink, keys(&next[0])), (1, vec!["c"]));
    let retry_at = b.poll_timeout().expect("a retry is due later");
    assert!((80..=100).contains(&retry_at), "{retry_at}");
    assert_eq!(b.poll(retry_at - 1), vec![]);
    let again = b.poll(retry_at);
    assert_eq!(
        keys(&again[0]),
        ["a", "b"],
        "the same alerts again, in order"
    );
    b.done(retry_at, again[0].ticket, Outcome::Failed("refused".into()));
    let wait = b.poll_timeout().expect("due") - retry_at;
    assert!((160..=200).contains(&wait), "doubled: {wait}");
    let st = &b.status().sinks[0];
    assert_eq!((st.failed, st.failures_in_a_row, st.queued), (4, 2, 3));
    assert_eq!(st.last_error.as_deref(), Some("refused"));
    assert!(st.retry_at_unix_ms.is_some());

    // Capped at the maximum.
    let mut now = retry_at;
    for _ in 0..10 {
        now = b.poll_timeout().expect("due");
        let batch = b.poll(now);
        b.done(now, batch[0].ticket, Outcome::Failed("refused".into()));
    }
    let wait = b.poll_timeout().expect("due") - now;
    assert!((800..=1000).contains(&wait), "capped: {wait}");

    // Back up: everything goes, and the backoff is forgotten.
    now = b.poll_timeout().expect("due");
    let batch = b.poll(now);
    b.done(now, batch[0].ticket, Outcome::Delivered);
    let batch = b.poll(now);
    assert_eq!(keys(&batch[0]), ["c"]);
    b.done(now, batch[0].ticket, Outcome::Delivered);
    let st = &b.status().sinks[0];
    assert_eq!((st.delivered, st.queued, st.failures_in_a_row), (3, 0, 0));
    assert_eq!(st.retry_at_unix_ms, None);
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn pending_lists_what_is_in_flight_then_what_waits_per_sink() {
    let mut b = book(vec![sink("a", 10, 1), sink("b", 10, 5)]);
    for k in ["x", "y"] {
        send(&mut b, 0, alert(k, "z"));
    }
    let flying = b.poll(0);
    assert_eq!(flying.len(), 2);
    let names: Vec<(String, String)> = b
        .pending()
        .into_iter()
        .map(|(s, e)| (s, e.alert.key))
        .collect();
    let row = |s: &str, k: &str| (s.to_string(), k.to_string());
    assert_eq!(
        names,
        [row("a", "x"), row("a", "y"), row("b", "x"), row("b", "y")]
    );
    b.done(0, flying[1].ticket, Outcome::Delivered);
    assert_eq!(b.pending().len(), 2, "b's are delivered");
}

#[test]
fn a_clock_set_back_does_not_stall_retries() {
    let mut b = book(vec![sink("s", 10, 10)]);
    send(&mut b, 10_000_000, alert("a", "x"));
    let batch = b.poll(10_000_000);
    b.done(10_000_000, batch[0].ticket, Outcome::Failed("down".into()));
    assert_eq!(b.poll(10_000_001), vec![], "waiting out the backoff");
    // An hour back: the retry is not an hour away.
    let again = b.poll(10_000_000 - 3_600_000);
    assert_eq!(keys(&again[0]), ["a"]);
}

#[test]
fn a_full_queue_drops_its_oldest_and_counts_them() {
    let mut b = book(vec![sink("s", 3, 2)]);
    send(&mut b, 0, alert("a", "x"));
    send(&mut b, 0, alert("b", "x"));
    let batch = b.poll(0);
    assert_eq!(keys(&batch[0]), ["a", "b"]);
    // a and b are in flight; c fits; d pushes out c, the oldest that is only waiting.
    send(&mut b, 0, alert("c", "x"));
    send(&mut b, 0, alert("d", "x"));
    let st = &b.status().sinks[0];
    assert_eq!((st.queued, st.in_flight, st.dropped), (3, 2, 1));
    // Nothing waits besides d, so e takes d's place.
    send(&mut b, 0, alert("e", "x"));
    b.done(0, batch[0].ticket, Outcome::Failed("down".into()));
    let st = &b.status().sinks[0];
    assert_eq!(
        (st.queued, st.dropped),
        (3, 2),
        "failed ones fit back: bound kept"
    );
    let due = b.poll_timeout().expect("due");
    let batch = b.poll(due);
    assert_eq!(keys(&batch[0]), ["a", "b"]);
    b.done(due, batch[0].ticket, Outcome::Delivered);
    let batch = b.poll(due);
    assert_eq!(keys(&batch[0]), ["e"]);

    // Everything in flight and the queue full: the new alert itself is dropped.
    let mut b = book(vec![sink("s", 1, 1)]);
    send(&mut b, 0, alert("a", "x"));
    let batch = b.poll(0);
    send(&mut b, 0, alert("b", "x"));
    assert_eq!(b.status().sinks[0].dropped, 1);
    b.done(0, batch[0].ticket, Outcome::Delivered);
    assert_eq!(b.poll_timeout(), None, "b was not queued");
}

#[test]
fn partly_delivered_batches_retry_only_the_failed_alerts() {
    let mut b = book(vec![sink("es", 10, 10)]);
    for k in ["a", "b", "c", "d"] {
        send(&mut b, 0, alert(k, "x"));
    }
    let batch = b.poll(0);
    b.done(
        0,
        batch[0].ticket,
        Outcome::Partly {
            retry: vec![1, 3],
            rejected: vec![2],
            error: "es_rejected_execution_exception".into(),
        },
    );
    let st = &b.status().sinks[0];
    assert_eq!(
        (st.delivered, st.failed, st.rejected, st.queued),
        (1, 2, 1, 2)
    );
    let due = b.poll_timeout().expect("retry due");
    assert!(due > 0);
    assert_eq!(keys(&b.poll(due)[0]), ["b", "d"]);
    assert!(!b.done(due, 999, Outcome::Delivered), "unknown ticket");
}

#[derive(Debug, Clone)]
enum Op {
    Raise {
        key: u8,
        dt: u16,
    },
    Poll {
        dt: u16,
    },
    /// Completes the in-flight batch of a sink: 0 delivered, 1 failed, 2 partly.
    Done {
        sink: u8,
        how: u8,
        mask: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0u16..300).prop_map(|(key, dt)| Op::Raise { key, dt }),
        (0u16..2000).prop_map(|dt| Op::Poll { dt }),
        (0u8..2, 0u8..3, any::<u8>()).prop_map(|(sink, how, mask)| Op::Done { sink, how, mask }),
    ]
}

proptest! {
    /// Whatever the sinks do: no queue ever exceeds its bound, and every alert handed to a
    /// sink is delivered, rejected, dropped, or still queued (in flight included).
    #[test]
    fn no_alert_is_lost_silently(
        ops in proptest::collection::vec(op(), 1..300),
        bounds in (1usize..6, 1usize..4, 1usize..6, 1usize..4),
    ) {
        let sinks = vec![sink("a", bounds.0, bounds.1), sink("b", bounds.2, bounds.3)];
        let caps = [bounds.0, bounds.2];
        let mut b = Book::new(Config { ring: 4, seed: 3 }, sinks);
        let mut now = 0u64;
        let mut handed = 0u64;
        let mut in_flight: [Option<Batch<Entry>>; 2] = [None, None];
        let mut delivered_seen = [0u64; 2];
        for op in ops {
            match op {
                Op::Raise { key, dt } => {
                    now += u64::from(dt);
                    send(&mut b, now, alert(&key.to_string(), "x"));
                    handed += 1;
                }
                Op::Poll { dt } => {
                    now += u64::from(dt);
                    for batch in b.poll(now) {
                        prop_assert!(in_flight[batch.sink].is_none());
                        prop_assert!(batch.items.len() <= [bounds.1, bounds.3][batch.sink]);
                        prop_assert!(!batch.items.is_empty());
                        let s = batch.sink;
                        in_flight[s] = Some(batch);
                    }
                }
                Op::Done { sink, how, mask } => {
                    let s = usize::from(sink);
                    if let Some(batch) = in_flight[s].take() {
                        let n = batch.items.len();
                        let outcome = match how {
                            0 => Outcome::Delivered,
                            1 => Outcome::Failed("down".into()),
                            _ => Outcome::Partly {
                                retry: (0..n).filter(|i| mask >> (i % 8) & 1 == 1).collect(),
                                rejected: (0..n).filter(|i| mask >> (i % 8) & 3 == 2).collect(),
                                error: "some".into(),
                            },
                        };
                        delivered_seen[s] += match &outcome {
                            Outcome::Delivered => n as u64,
                            Outcome::Failed(_) => 0,
                            Outcome::Partly { retry, rejected, .. } => {
                                (n - retry.len() - rejected.len()) as u64
                            }
                        };
                        prop_assert!(b.done(now, batch.ticket, outcome));
                    }
                }
            }
            let st = b.status();
            prop_assert!(st.kept <= 4);
            for (i, s) in st.sinks.iter().enumerate() {
                prop_assert!(s.queued <= caps[i], "sink {i}: {} > {}", s.queued, caps[i]);
                prop_assert_eq!(
                    s.delivered + s.rejected + s.dropped + s.queued as u64,
                    handed,
                    "sink {}: {:?}", i, s
                );
                prop_assert_eq!(s.delivered, delivered_seen[i]);
                prop_assert_eq!(s.in_flight, in_flight[i].as_ref().map_or(0, |b| b.items.len()));
            }
            // Something waits and nothing is in flight: the book names a time to look again.
            for (i, s) in st.sinks.iter().enumerate() {
                if s.queued > 0 && in_flight[i].is_none() {
                    prop_assert!(b.poll_timeout().is_some());
                }
            }
        }
    }
}

#[test]
fn a_fleet_event_is_one_alert_keyed_by_the_event() {
    use crate::correlate::{Fingerprint, FleetEvent, Verdict};
    let event = FleetEvent {
        fingerprint: Fingerprint {
            kind: Kind::File,
            subject: "/etc/app.conf".into(),
            after: None,
        },
        role: "web".into(),
        origins: [("a", "web"), ("b", "web")]
            .iter()
            .map(|(o, r)| (node::Id::from(*o), (*r).to_string()))
            .collect(),
        first_unix_ms: 10,
        last_unix_ms: 20,
        verdict: Verdict::SuspectedCoordinatedChange,
        subjects: vec!["/etc/app.conf".into()],
        subjects_total: 1,
    };
    let servers = ["w1".to_string(), "w2".to_string()];
    let a = of_fleet_event("eu", 3, "m", &event, &servers, 30);
    assert_eq!(a.key, crate::fleet::fleet_key("eu", &event));
    assert_eq!(
        (a.action.as_str(), a.severity),
        ("suspected_coordinated_change", Severity::Critical)
    );
    assert_eq!(
        (a.host.as_str(), a.term, a.category.as_str()),
        ("m", Some(3), "configuration")
    );
    assert_eq!(a.details["servers"], "w1,w2");
    let rollout = FleetEvent {
        verdict: Verdict::Rollout,
        ..event
    };
    let r = of_fleet_event("eu", 3, "m", &rollout, &servers, 30);
    assert_eq!((r.action.as_str(), r.severity), ("rollout", Severity::Info));
    assert!(!r.details.contains_key("subjects"));
    // An upgrade of many subjects: told at info, naming them.
    let storm = FleetEvent {
        verdict: Verdict::Upgrade,
        subjects: (0..30).map(|i| format!("/usr/lib/f{i}")).collect(),
        subjects_total: 200,
        ..rollout
    };
    let u = of_fleet_event("eu", 3, "m", &storm, &servers, 30);
    assert_eq!((u.action.as_str(), u.severity), ("upgrade", Severity::Info));
    assert_eq!(u.details["subjects_total"], "200");
    assert_eq!(
        u.details["subjects"].split(',').count(),
        SUBJECTS_IN_DETAILS
    );
    assert!(
        u.reason.contains("/etc/app.conf and 199 more"),
        "{}",
        u.reason
    );
}

#[test]
fn maintenance_downgrades_an_alert_and_active_again_restores_it() {
    let mut a = alert("k", "unauthorized_access");
    a.severity = Severity::High;
    let original = a.clone();
    assert!(
        !out_of_maintenance(&mut a),
        "not downgraded: nothing to restore"
    );
    in_maintenance(&mut a);
    assert_eq!(a.severity, Severity::Info);
    assert_eq!(a.details["severity_before_maintenance"], "high");
    assert!(out_of_maintenance(&mut a));
    assert_eq!(a, original);
}

#[test]
fn a_violation_key_is_found_by_host_kind_and_subject_whatever_the_rule() {
    let key = violation_key("web-1", "web.toml:3#down", Kind::Service, "db");
    assert!(is_violation_about(&key, "web-1", Kind::Service, "db"));
    assert!(!is_violation_about(&key, "web-2", Kind::Service, "db"));
    assert!(!is_violation_about(&key, "web-1", Kind::Anomaly, "db"));
    assert!(!is_violation_about(&key, "web-1", Kind::Service, "b"));
    assert!(!is_violation_about(
        "web-1|service|db",
        "web-1",
        Kind::Service,
        "db"
    ));
}
