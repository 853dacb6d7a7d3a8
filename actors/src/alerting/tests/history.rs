//! What the history on disk is handed: each changed record once per take, as it is then,
//! bounded under a storm; and which kept records a bounds pass removes.

use super::*;
use crate::alerting::history::{Bounds, Kept, over_bounds};

fn ids(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

#[test]
fn nothing_is_noted_until_the_history_is_kept() {
    let mut e = engine("[route]\ngroup_wait_ms = 0");
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    assert!(!e.has_changed());
    assert!(e.take_changed().is_empty());
}

#[test]
fn each_change_is_taken_once_as_it_is_at_the_take() {
    let mut e = engine("[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000");
    e.keep_history();
    let a = e
        .raise(alert("w1", "anomaly", "cpu", Severity::High), 1000)
        .expect("raised");
    // Repeats and a second alert before the take: one record each.
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 1100)
        .expect("repeat");
    let b = e
        .raise(alert("w2", "anomaly", "cpu", Severity::High), 1200)
        .expect("raised");
    e.poll(1200);
    let took = e.take_changed();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ids(&took), want);
    let first = took.iter().find(|r| r.id == a).expect("a");
    assert_eq!((first.raised, first.updated_at_unix_ms), (2, 1100));
    assert!(!e.has_changed());
    assert!(e.take_changed().is_empty(), "nothing changed since");

    // A poll that changes nothing notes nothing; an acknowledgement and a resolution do.
    e.poll(1300);
    assert!(!e.has_changed());
    e.ack(&a, "ops", "looking", 1400).expect("acked");
    let took = e.take_changed();
    assert_eq!(ids(&took), std::slice::from_ref(&a));
    assert_eq!(took[0].status.name(), "acknowledged");
    e.resolve_id(&a, 1500).expect("resolved");
    let took = e.take_changed();
    assert_eq!(ids(&took), std::slice::from_ref(&a));
    let states: Vec<&str> = took[0].history.iter().map(|t| t.status.name()).collect();
    assert_eq!(states, ["firing", "acknowledged", "resolved"]);
    assert_eq!(crate::alerting::history::last_change(&took[0]), 1500);
}

#[test]
fn a_record_forgotten_before_the_take_is_taken_as_it_left() {
    // One resolved alert remembered: the first is forgotten when the second retires.
    let mut e = engine("resolved_kept = 1\n[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 10");
    e.keep_history();
    let a = e
        .raise(alert("w1", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    let b = e
        .raise(alert("w2", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    e.poll(0);
    e.resolve_id(&a, 5).expect("resolved");
    e.resolve_id(&b, 5).expect("resolved");
    // Told resolved, both leave their group and retire; `a` is forgotten by the engine.
    run(&mut e, 10, 100, 10);
    assert!(
        e.alert(&a).is_none() || e.alert(&b).is_none(),
        "one is forgotten by the engine"
    );
    let took = e.take_changed();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ids(&took), want);
    assert!(took.iter().all(|r| r.is_resolved()), "{took:?}");
}

#[test]
fn a_storm_waits_in_bounded_room_and_what_is_dropped_is_counted() {
    // At most max_alerts + resolved_kept = 3 records wait.
    let mut e = engine("max_alerts = 2\nresolved_kept = 1\n[route]\ngroup_wait_ms = 0");
    e.keep_history();
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    e.raise(alert("w2", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    for t in 1..1000 {
        e.raise(alert("w1", "anomaly", "cpu", Severity::High), t)
            .expect("repeat");
        let _ = e.raise(alert(&format!("x{t}"), "anomaly", "cpu", Severity::High), t);
    }
    let took = e.take_changed();
    assert_eq!(took.len(), 2, "the refused raises changed no record");
    // Resolve and raise again: new episodes, the old ones retired.
    let mut e = engine("max_alerts = 1\nresolved_kept = 1\n[route]\ngroup_wait_ms = 0");
    e.keep_history();
    for t in 0..10 {
        e.raise(alert("w1", "anomaly", "cpu", Severity::High), t * 10)
            .expect("raised");
        e.resolve("w1|anomaly|cpu", t * 10 + 5);
    }
    let took = e.take_changed();
    assert_eq!(took.len(), 2, "{took:?}");
    // Eight episodes found no room: their raise and their resolution each counted.
    assert_eq!(e.counters().history_dropped, 16);
}

fn kept(at: u64, id: &str, bytes: u64) -> Kept {
    Kept {
        last_change_unix_ms: at,
        id: id.into(),
        bytes,
    }
}

#[test]
fn a_bounds_pass_removes_the_old_then_the_oldest_over_the_bytes() {
    const DAY: u64 = 86_400_000;
    let now = 10 * DAY;
    let bounds = Bounds::new(7, 250);
    assert_eq!(bounds.max_age_ms, 7 * DAY);
    let list = [
        kept(2 * DAY, "ancient", 10),
        kept(3 * DAY, "seven-days", 10),
        kept(3 * DAY + 1, "young", 100),
        kept(5 * DAY, "b", 100),
        kept(9 * DAY, "c", 100),
    ];
    // Exactly seven days old is gone; then 300 bytes are over 250: the oldest goes.
    assert_eq!(
        over_bounds(&list, bounds, now),
        ["ancient", "seven-days", "young"]
    );
    assert_eq!(
        over_bounds(&list[2..], Bounds::new(7, 1 << 20), now),
        Vec::<String>::new()
    );
    // Over the bytes alone.
    assert_eq!(
        over_bounds(&list[2..], Bounds::new(30, 150), now),
        ["young", "b"]
    );
    assert!(over_bounds(&[], bounds, now).is_empty());
}
