//! Escalation: on time while nobody reacts, stopped by an ack until it times out, ended by
//! a resolve; and the summary a spent budget sends.

use super::*;

const POLICY: &str = "[route]\ngroup_wait_ms = 0\nreceiver = \"team\"\n\
    [[escalations]]\nname = \"critical\"\n\
    steps = [{ receiver = \"oncall\", after_ms = 0 }, { receiver = \"lead\", after_ms = 600000 }]\n\
    repeat = 1\nrepeat_interval_ms = 1800000\nack_timeout_ms = 3600000";

fn escalations(sent: &[(u64, Notification)]) -> Vec<(u64, &str, u32, usize)> {
    sent.iter()
        .filter_map(|(t, n)| match &n.reason {
            Reason::Escalation { pass, step, .. } => Some((*t, n.receiver.as_str(), *pass, *step)),
            _ => None,
        })
        .collect()
}

fn critical(at: u64) -> Alert {
    let mut a = alert("db1", "service_down", "postgres", Severity::Critical);
    a.at_unix_ms = at;
    a
}

#[test]
fn an_unacknowledged_critical_alert_escalates_to_step_two_on_time_and_repeats() {
    let mut e = engine(POLICY);
    e.raise(critical(1000), 1000).expect("raised");
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 1000)
        .expect("not critical");
    let sent = run_timeouts(&mut e, 10_000_000);
    assert_eq!(
        escalations(&sent),
        [
            (1000, "oncall", 0, 0),
            (601_000, "lead", 0, 1),
            (1_801_000, "oncall", 1, 0),
            (2_401_000, "lead", 1, 1),
        ]
    );
    let esc = sent.iter().find(|(_, n)| n.is_escalation()).expect("one");
    assert_eq!(esc.1.group_key, "escalation:critical");
    assert_eq!(esc.1.alerts.len(), 1, "only the critical alert");
    assert_eq!(
        esc.1.records[0].key,
        format!("escalation:{}", esc.1.alerts[0].id)
    );
}

#[test]
fn an_ack_stops_escalation_until_it_times_out_and_a_resolve_ends_it() {
    let mut e = engine(POLICY);
    let id = e.raise(critical(1000), 1000).expect("raised");
    let first = run_timeouts(&mut e, 100_000);
    assert_eq!(escalations(&first), [(1000, "oncall", 0, 0)]);
    e.ack(&id, "ana", "on it", 100_000).expect("acked");
    let quiet = run_timeouts(&mut e, 3_699_999);
    assert_eq!(escalations(&quiet), [], "no step while acknowledged");
    assert_eq!(e.poll_timeout(), Some(3_700_000), "the ack's timeout");
    let again = run_timeouts(&mut e, 4_300_000);
    assert_eq!(
        escalations(&again),
        [(3_700_000, "oncall", 0, 0), (4_300_000, "lead", 0, 1)],
        "the ack timed out: the escalation starts over"
    );
    e.resolve(&critical(0).key, 4_300_001);
    let after = run_timeouts(&mut e, 100_000_000);
    assert_eq!(escalations(&after), [], "resolved: over");
    assert!(
        after
            .iter()
            .any(|(_, n)| n.alerts.iter().any(|a| a.id == id)),
        "told resolved"
    );
}

#[test]
fn a_step_due_while_silenced_is_skipped_not_sent_late() {
    let mut e = engine(POLICY);
    e.raise(critical(1000), 1000).expect("raised");
    run_timeouts(&mut e, 1000);
    let s = Silence {
        id: String::new(),
        matchers: vec![Matcher::parse("node = db1").expect("ok")],
        starts_at_unix_ms: 500_000,
        ends_at_unix_ms: 700_000,
        created_by: "ana".into(),
        comment: String::new(),
        updated_at_unix_ms: 0,
    };
    e.add_silence(s, 2000).expect("added");
    let sent = run_timeouts(&mut e, 1_801_000);
    assert_eq!(escalations(&sent), [(1_801_000, "oncall", 1, 0)]);
}

#[test]
fn overdue_steps_send_only_the_latest() {
    let mut e = engine(POLICY);
    e.raise(critical(1000), 1000).expect("raised");
    let sent = e.poll(700_000);
    let esc: Vec<_> = sent.iter().filter(|n| n.is_escalation()).collect();
    assert_eq!(esc.len(), 1);
    assert_eq!(esc[0].receiver, "lead");
}

#[test]
fn a_spent_budget_sends_one_summary_and_holds_the_rest_until_it_frees() {
    let mut e = engine(
        "[[receivers]]\nname = \"default\"\nrate_per_minute = 3\n\
         [route]\ngroup_wait_ms = 0\ngroup_by = [\"node\"]",
    );
    for i in 0..6 {
        e.raise(alert(&format!("w{i}"), "anomaly", "cpu", Severity::High), 0)
            .expect("raised");
    }
    let now = e.poll(0);
    assert_eq!(now.len(), 3);
    assert_eq!(now.iter().filter(|n| n.is_summary()).count(), 1);
    let summary = now.iter().find(|n| n.is_summary()).expect("one");
    assert!(matches!(&summary.reason, Reason::Summary { held: 4, groups } if groups.len() == 4));
    assert_eq!(e.counters().held, 4);
    assert_eq!(e.poll_timeout(), Some(60_000), "when the budget frees");
    let later = run_timeouts(&mut e, 300_000);
    let groups: Vec<&str> = later
        .iter()
        .filter(|(_, n)| !n.is_summary())
        .map(|(_, n)| n.group_key.as_str())
        .collect();
    assert_eq!(groups.len(), 4, "each held group once: {groups:?}");
}
