//! Operator resolution, label changes, a wall clock set back, and the records that the
//! region log will carry.

use super::*;
use crate::alerting::escalation::Progress;

#[test]
fn an_operator_resolves_an_alert_by_id() {
    let mut e = engine("[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000");
    let id = e
        .raise(alert("w1", "policy_violation", "/etc/x", Severity::High), 0)
        .expect("raised");
    assert_eq!(e.poll(0).len(), 1);
    e.resolve_id(&id, 10).expect("resolved");
    assert_eq!(e.resolve_id(&id, 11), Err(Error::Resolved(id.clone())));
    assert_eq!(
        e.resolve_id("nope", 11),
        Err(Error::UnknownAlert("nope".into()))
    );
    let n = e.poll(1000);
    assert_eq!(n[0].alerts[0].status, Status::Resolved { at_unix_ms: 10 });
    let history: Vec<&str> = e
        .alert(&id)
        .expect("kept")
        .history
        .iter()
        .map(|t| t.status.name())
        .collect();
    assert_eq!(history, ["firing", "resolved"]);
    // Told and retired: still known as resolved, not as unknown.
    assert_eq!(e.resolve_id(&id, 1001), Err(Error::Resolved(id.clone())));
    assert!(matches!(
        e.ack(&id, "ops", "", 1001),
        Err(Error::Resolved(_))
    ));
    assert_eq!(
        e.by_key("w1|policy_violation|/etc/x").map(|r| r.id.clone()),
        Some(id)
    );
}

#[test]
fn a_severity_raised_to_critical_starts_escalating_then() {
    let mut e = engine(
        "[route]\ngroup_wait_ms = 0\n[[escalations]]\nname = \"crit\"\n\
         steps = [{ receiver = \"oncall\", after_ms = 1000 }]",
    );
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    assert!(run(&mut e, 0, 5000, 500).iter().all(|n| !n.is_escalation()));
    e.raise(alert("w1", "anomaly", "cpu", Severity::Critical), 6000)
        .expect("raised");
    let sent = run(&mut e, 6000, 8000, 500);
    let esc: Vec<u64> = sent
        .iter()
        .filter(|n| n.is_escalation())
        .map(|n| n.at_unix_ms)
        .collect();
    assert_eq!(esc, [7000]);
    let moved: Vec<&str> = sent
        .iter()
        .filter(|n| !n.is_escalation())
        .map(|n| n.group_key.as_str())
        .collect();
    assert!(
        moved.is_empty(),
        "the group is keyed by region and action: unchanged"
    );
}

#[test]
fn a_wall_clock_set_back_does_not_stall_groups_or_budgets() {
    let mut e = engine("rate_per_minute = 2\n[route]\ngroup_wait_ms = 0\ngroup_by = [\"node\"]");
    let late = 10_000_000;
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), late)
        .expect("raised");
    assert_eq!(e.poll(late).len(), 1);
    // The clock goes back an hour: a new alert is told within a group wait and a minute,
    // not after the hour.
    let back = late - 3_600_000;
    e.raise(alert("w2", "anomaly", "cpu", Severity::High), back)
        .expect("raised");
    let sent = run(&mut e, back, back + 60_000, 1000);
    assert!(
        sent.iter()
            .any(|n| n.group_labels.get("node").is_some_and(|v| v == "w2"))
    );
}

#[test]
fn silences_acks_progress_and_settings_travel_with_rmp() {
    let s = Silence {
        id: "abc".into(),
        matchers: vec![Matcher::parse("severity=~\"high|critical\"").expect("ok")],
        starts_at_unix_ms: 1,
        ends_at_unix_ms: 2,
        created_by: "ana".into(),
        comment: "upgrade".into(),
        updated_at_unix_ms: 1,
    };
    let back: Silence = rmp_serde::from_slice(&rmp_serde::to_vec(&s).expect("rmp")).expect("rmp");
    assert_eq!(back, s);
    let created = silence::am::Created {
        silence_id: s.id.clone(),
    };
    assert_eq!(
        serde_json::to_string(&created).expect("json"),
        r#"{"silenceID":"abc"}"#
    );
    let ack = Ack {
        by: "ana".into(),
        at_unix_ms: 1,
        comment: String::new(),
        until_unix_ms: 9,
    };
    let back: Ack = rmp_serde::from_slice(&rmp_serde::to_vec(&ack).expect("rmp")).expect("rmp");
    assert_eq!(back, ack);
    let p = Progress {
        policy: 1,
        start_unix_ms: 5,
        pass: 0,
        step: 1,
    };
    let back: Progress = rmp_serde::from_slice(&rmp_serde::to_vec(&p).expect("rmp")).expect("rmp");
    assert_eq!(back, p);
    let c = config("[[route.routes]]\nmatchers = [\"role = db\"]\nreceiver = \"dba\"");
    let back: Config =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&c).expect("rmp")).expect("rmp");
    assert_eq!(back, c);
}

#[test]
fn a_replayed_ack_applies_when_its_alert_is_raised() {
    let mut e = engine("[route]\ngroup_wait_ms = 0");
    let a = alert("w1", "anomaly", "cpu", Severity::High);
    let id = crate::alerting::lifecycle::alert_id(&a.key, 50);
    let ack = Ack {
        by: "ana".into(),
        at_unix_ms: 60,
        comment: "known".into(),
        until_unix_ms: 100_000,
    };
    e.apply_ack(&id, ack.clone());
    let mut a = a;
    a.at_unix_ms = 50;
    assert_eq!(e.raise(a, 70).expect("raised"), id);
    e.poll(70);
    assert_eq!(e.alert(&id).expect("tracked").ack, Some(ack));
    assert!(matches!(
        e.alert(&id).expect("tracked").status,
        Status::Acknowledged { .. }
    ));
}

#[test]
fn an_alert_never_inhibits_itself_but_a_twin_source_does() {
    let mut e = engine(
        "[route]\ngroup_wait_ms = 0\n[[inhibit]]\nsource_matchers = [\"severity = critical\"]\n\
         target_matchers = [\"alertname = anomaly\"]\nequal = [\"region\"]",
    );
    let one = e
        .raise(alert("w1", "anomaly", "cpu", Severity::Critical), 0)
        .expect("raised");
    e.poll(0);
    assert_eq!(
        e.alert(&one).expect("tracked").status,
        Status::Firing,
        "not by itself"
    );
    let two = e
        .raise(alert("w2", "anomaly", "cpu", Severity::Critical), 1)
        .expect("raised");
    e.poll(1);
    assert_eq!(
        e.alert(&one).expect("tracked").status,
        Status::Inhibited { by: two.clone() }
    );
    assert_eq!(
        e.alert(&two).expect("tracked").status,
        Status::Inhibited { by: one }
    );
    let mut other = alert("w3", "anomaly", "cpu", Severity::High);
    other.region = "us".into();
    let three = e.raise(other, 2).expect("raised");
    e.poll(2);
    assert_eq!(
        e.alert(&three).expect("tracked").status,
        Status::Firing,
        "another region"
    );
}

#[test]
fn a_new_notifier_tells_only_what_the_log_does_not_show_told_and_a_late_copy_does_not_reopen() {
    let cfg = "[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000";
    let (mut master, mut member) = (engine(cfg), engine(cfg));
    member.set_notifying(false);
    let mut a = alert("w1", "policy_violation", "/etc/x", Severity::High);
    a.at_unix_ms = 5;
    let id = master.raise(a.clone(), 5).expect("raised");
    member.raise(a.clone(), 5).expect("raised");
    let told = master.poll(5);
    assert_eq!(told.len(), 1);
    // A member's look hands out what it would tell (dropped by its node); its log notes
    // nothing, since nothing was told.
    assert_eq!(member.poll(5).len(), 1);
    assert!(member.log().entries.is_empty());
    // The master's records reach the member through the region's log.
    let mut log = nlog::Log::default();
    for r in &told[0].records {
        log.apply(r.clone());
    }
    member.merge_log(&log);
    // Another group, told by a master that died before its record reached the log.
    let mut b = alert("w2", "anomaly", "cpu", Severity::High);
    b.at_unix_ms = 6;
    let idb = master.raise(b.clone(), 6).expect("raised");
    member.raise(b, 6).expect("raised");
    assert_eq!(master.poll(1005).len(), 1);
    member.poll(1005);
    // The member takes over: it waits for the members' alerts, then tells only that one.
    member.set_notifying(true);
    member.renotify(2000, 1000);
    assert_eq!(member.poll(2000), vec![], "settling");
    let again = member.poll(3000);
    assert_eq!(again.len(), 1, "only the group the log does not show told");
    assert_eq!(ids(&again[0]), [idb.as_str()]);
    assert_eq!(member.poll(5000), vec![], "and only once");
    // Resolved, then a member sends its copy of the same episode again: still resolved.
    let e = &mut member;
    e.resolve_id(&id, 5000).expect("resolved");
    e.poll(6000);
    assert_eq!(e.raise(a.clone(), 6000), Ok(id.clone()));
    assert!(e.by_key(&a.key).is_some_and(|r| r.is_resolved()));
    assert_eq!(e.poll(7000), vec![]);
    // A later change of the same key is a new episode.
    a.at_unix_ms = 8000;
    let new = e.raise(a, 8000).expect("raised");
    assert_ne!(new, id);
    assert_eq!(e.poll(9000).len(), 1);
}
