//! The engine: grouping, routing, states, silences, inhibition, storms and handover.

use super::*;
use crate::alerting::lifecycle::alert_id;

#[test]
fn fifty_violations_on_five_nodes_in_two_seconds_are_one_notification_after_group_wait() {
    let mut e = engine("");
    let t0 = 1_000_000;
    for i in 0..50u64 {
        let a = alert(
            &format!("w{}", i % 5),
            "policy_violation",
            &format!("/etc/f{i}"),
            Severity::High,
        );
        e.raise(a, t0 + i * 40).expect("raised");
        assert!(e.poll(t0 + i * 40).is_empty(), "nothing before group_wait");
    }
    assert_eq!(e.poll_timeout(), Some(t0 + 10_000));
    assert!(e.poll(t0 + 9_999).is_empty());
    let sent = e.poll(t0 + 10_000);
    assert_eq!(sent.len(), 1);
    let n = &sent[0];
    assert_eq!(
        (n.receiver.as_str(), n.reason.clone()),
        ("default", Reason::Group)
    );
    assert_eq!(n.alerts.len(), 50, "every alert of the group");
    assert_eq!(n.group_labels["alertname"], "policy_violation");
    assert_eq!(n.records.len(), 1);
    assert_eq!(n.records[0].key, format!("group:{}", n.group_key));
    assert!(
        run(&mut e, t0 + 10_001, t0 + 300_000, 1000).is_empty(),
        "unchanged"
    );
}

#[test]
fn updates_wait_for_group_interval_and_unchanged_firing_groups_repeat() {
    let mut e = engine("[route]\ngroup_interval_ms = 60000\nrepeat_interval_ms = 600000");
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    assert_eq!(e.poll(10_000).len(), 1);
    e.raise(alert("w2", "anomaly", "cpu", Severity::High), 20_000)
        .expect("raised");
    assert!(
        run(&mut e, 20_000, 69_999, 1000).is_empty(),
        "not before group_interval"
    );
    let update = e.poll(70_000);
    assert_eq!(update.len(), 1);
    assert_eq!(update[0].alerts.len(), 2);
    let quiet = run_timeouts(&mut e, 669_999);
    assert!(
        quiet.is_empty(),
        "no repeat before repeat_interval: {quiet:?}"
    );
    let again = run_timeouts(&mut e, 730_000);
    assert_eq!(again.len(), 1, "one repeat");
    assert_eq!(
        again[0].0, 670_000,
        "at the first group tick after repeat_interval"
    );
}

#[test]
fn resolved_alerts_are_told_once_then_dropped_and_a_new_episode_has_a_new_id() {
    let mut e = engine("[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000");
    let a = alert("w1", "anomaly", "cpu", Severity::High);
    let b = alert("w2", "anomaly", "cpu", Severity::High);
    let ida = e.raise(a.clone(), 100).expect("raised");
    let idb = e.raise(b.clone(), 100).expect("raised");
    assert_eq!(
        e.raise(a.clone(), 150).expect("repeat"),
        ida,
        "stable while firing"
    );
    assert_eq!(ida, alert_id(&a.key, 100));
    assert!(ida.len() == 32 && ida.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(e.poll(100).len(), 1);
    assert_eq!(e.resolve(&a.key, 500), Some(ida.clone()));
    assert_eq!(e.resolve(&a.key, 501), None, "once");
    let n = e.poll(1100);
    assert_eq!(n.len(), 1);
    assert_eq!(
        ids(&n[0]),
        [idb.as_str(), ida.as_str()],
        "open first, then resolved"
    );
    assert_eq!(n[0].alerts[1].status, Status::Resolved { at_unix_ms: 500 });
    assert_eq!(n[0].alerts[1].ends_at_unix_ms, Some(500));
    assert!(e.poll(2100).is_empty(), "the resolved alert was dropped");
    assert_eq!(e.snapshot(2100).resolved[0].id, ida, "kept in the history");
    e.resolve(&b.key, 2200);
    let last = e.poll(3100);
    assert_eq!(last.len(), 1, "the group's resolution is told");
    assert!(matches!(last[0].alerts[0].status, Status::Resolved { .. }));
    assert!(e.snapshot(3100).groups.is_empty(), "and the group is gone");
    let mut again = a.clone();
    again.at_unix_ms = 5000;
    let id2 = e.raise(again, 5000).expect("raised");
    assert_ne!(id2, ida, "a new episode");
    assert_eq!(e.poll(5000).len(), 1);
}

#[test]
fn database_alerts_reach_the_database_receiver_only_unless_continued() {
    let mut e = engine(
        "[route]\ngroup_wait_ms = 0\n[[route.routes]]\nmatchers = [\"role = database\"]\nreceiver = \"dba\"\n\
         [[route.routes]]\nmatchers = [\"alertname = anomaly\"]\nreceiver = \"sre\"\ncontinue = true\n\
         [[route.routes]]\nmatchers = [\"severity = critical\"]\nreceiver = \"oncall\"",
    );
    e.raise(
        with_role(
            alert("db1", "anomaly", "cpu", Severity::Critical),
            "database",
        ),
        0,
    )
    .expect("raised");
    e.raise(alert("w1", "anomaly", "cpu", Severity::Critical), 0)
        .expect("raised");
    e.raise(alert("w2", "policy_violation", "/etc/x", Severity::Low), 0)
        .expect("raised");
    let mut got: Vec<(String, Vec<String>)> = e
        .poll(0)
        .iter()
        .map(|n| {
            let nodes = n.alerts.iter().map(|a| a.labels["node"].clone()).collect();
            (n.receiver.clone(), nodes)
        })
        .collect();
    got.sort();
    let row =
        |r: &str, nodes: &[&str]| (r.to_string(), nodes.iter().map(|n| n.to_string()).collect());
    assert_eq!(
        got,
        [
            row("dba", &["db1"]),
            row("default", &["w2"]),
            row("oncall", &["w1"]),
            row("sre", &["w1"])
        ]
    );
}

#[test]
fn a_silenced_alert_is_not_notified_until_its_silence_ends() {
    let mut e = engine("[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000");
    let s = Silence {
        id: String::new(),
        matchers: vec![Matcher::parse("node = w1").expect("ok")],
        starts_at_unix_ms: 1000,
        ends_at_unix_ms: 60_000,
        created_by: "ana".into(),
        comment: "maintenance".into(),
        updated_at_unix_ms: 0,
    };
    let sid = e.add_silence(s, 0).expect("added");
    let id = e
        .raise(alert("w1", "anomaly", "cpu", Severity::High), 2000)
        .expect("raised");
    e.raise(alert("w2", "anomaly", "cpu", Severity::High), 2000)
        .expect("raised");
    let n = e.poll(2000);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].alerts.len(), 1, "only w2");
    assert_eq!(n[0].alerts[0].labels["node"], "w2");
    let st = &e.alert(&id).expect("tracked").status;
    assert_eq!(
        *st,
        Status::Silenced {
            by: vec![sid.clone()]
        }
    );
    assert!(run(&mut e, 3000, 59_000, 1000).is_empty());
    assert_eq!(e.poll_timeout(), Some(60_000), "the silence's end");
    let after = e.poll(60_000);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].alerts.len(), 2, "w1 is back");
    let history: Vec<&str> = e
        .alert(&id)
        .expect("tracked")
        .history
        .iter()
        .map(|t| t.status.name())
        .collect();
    assert_eq!(history, ["firing", "silenced", "firing"]);
}

#[test]
fn a_dead_node_inhibits_its_service_alerts_only() {
    let mut e = engine(
        "[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000\ngroup_by = [\"node\"]\n[[inhibit]]\n\
         source_matchers = [\"alertname = node_dead\"]\ntarget_matchers = [\"alertname = service_down\"]\nequal = [\"node\"]",
    );
    let dead = e
        .raise(alert("w1", "node_dead", "w1", Severity::Critical), 0)
        .expect("raised");
    let own = e
        .raise(alert("w1", "service_down", "nginx", Severity::High), 0)
        .expect("raised");
    e.raise(alert("w2", "service_down", "nginx", Severity::High), 0)
        .expect("raised");
    let sent = e.poll(0);
    let w1: Vec<&Notification> = sent
        .iter()
        .filter(|n| n.group_labels["node"] == "w1")
        .collect();
    assert_eq!(
        ids(w1[0]),
        [dead.as_str()],
        "its service alert is inhibited"
    );
    assert_eq!(sent.len(), 2, "w2's service alert is not");
    assert_eq!(
        e.alert(&own).expect("tracked").status,
        Status::Inhibited { by: dead.clone() }
    );
    e.resolve("w1|node_dead|w1", 500);
    let n = e.poll(1000);
    assert_eq!(n.len(), 1);
    assert_eq!(
        ids(&n[0]),
        [own.as_str(), dead.as_str()],
        "open again, and the source resolved"
    );
}

#[test]
fn an_ack_is_recorded_told_and_times_out_into_firing_again() {
    let mut e = engine(
        "ack_timeout_ms = 5000\nhistory_len = 3\n[route]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000",
    );
    let id = e
        .raise(alert("w1", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    e.poll(0);
    let ack = e.ack(&id, "ana", "looking", 100).expect("acked");
    assert_eq!(ack.until_unix_ms, 5100);
    assert!(matches!(
        e.alert(&id).expect("tracked").status,
        Status::Acknowledged { .. }
    ));
    let told = e.poll(1000);
    assert_eq!(told.len(), 1, "the ack is an update of the group");
    assert!(matches!(told[0].alerts[0].status, Status::Acknowledged { ref by, .. } if by == "ana"));
    assert_eq!(e.poll_timeout(), Some(2000));
    let back = run(&mut e, 2000, 7000, 1000);
    assert_eq!(back.len(), 1, "firing again after the ack timed out");
    assert_eq!(back[0].at_unix_ms, 6000);
    assert_eq!(back[0].alerts[0].status, Status::Firing);
    assert_eq!(e.alert(&id).expect("tracked").history.len(), 3, "bounded");
    assert_eq!(
        e.ack("nope", "ana", "", 0),
        Err(Error::UnknownAlert("nope".into()))
    );
    e.resolve("w1|anomaly|cpu", 8000);
    assert_eq!(
        e.ack(&id, "ana", "", 8001),
        Err(Error::Resolved(id.clone()))
    );
}

#[test]
fn ten_thousand_alerts_in_a_minute_give_at_most_twenty_notifications_per_receiver() {
    // Every one tracked (the default bound, 5,000, would refuse half).
    let mut e = engine("max_alerts = 20000");
    let actions = [
        "policy_violation",
        "unauthorized_access",
        "anomaly",
        "rollout",
        "upgrade",
    ];
    let mut sent = Vec::new();
    for i in 0..10_000u64 {
        let now = i * 6; // 10,000 in 60 s
        let mut a = alert(
            &format!("n{}", i % 300),
            actions[(i % 5) as usize],
            &format!("/f{i}"),
            Severity::High,
        );
        a.region = format!("r{}", i % 7);
        e.raise(a, now).expect("raised");
        if now % 1000 == 0 {
            sent.extend(e.poll(now).into_iter().map(|n| (now, n)));
        }
    }
    sent.extend(
        run(&mut e, 60_000, 119_999, 500)
            .into_iter()
            .map(|n| (n.at_unix_ms, n)),
    );
    let storm: Vec<_> = sent.iter().filter(|(t, _)| *t < 120_000).collect();
    assert!(storm.len() <= 20, "{} notifications", storm.len());
    assert!(
        storm.iter().any(|(_, n)| n.is_summary()),
        "the receiver is told it is not told all"
    );
    // Nothing is forgotten: every one of the 35 groups is told, in time.
    sent.extend(run_timeouts(&mut e, 900_000));
    let told: std::collections::BTreeSet<&str> = sent
        .iter()
        .filter(|(_, n)| !n.is_summary())
        .map(|(_, n)| n.group_key.as_str())
        .collect();
    assert_eq!(told.len(), 35);
    let alerts: usize = sent.iter().map(|(_, n)| n.alerts.len() + n.omitted).sum();
    assert!(alerts >= 10_000, "every alert was in a notification");
    for (t, _) in &sent {
        let in_minute = sent
            .iter()
            .filter(|(u, _)| *u >= *t && *u < t + 60_000)
            .count();
        assert!(in_minute <= 10, "the budget holds in every minute");
    }
}

#[test]
fn a_new_owner_with_the_log_neither_resends_nor_forgets() {
    let toml = "[route]\ngroup_wait_ms = 1000\ngroup_interval_ms = 5000\n\
                [[escalations]]\nname = \"crit\"\nsteps = [{ receiver = \"oncall\", after_ms = 0 }, { receiver = \"lead\", after_ms = 60000 }]";
    let (a, b) = (
        alert("w1", "anomaly", "cpu", Severity::Critical),
        alert("w2", "anomaly", "cpu", Severity::High),
    );
    let mut old = engine(toml);
    let mut a1 = a.clone();
    a1.at_unix_ms = 10;
    old.raise(a1.clone(), 10).expect("raised");
    let sent = old.poll(1010);
    assert_eq!(sent.len(), 2, "the group and the first escalation step");
    let log = old.log().clone();
    let bytes = rmp_serde::to_vec(&log).expect("the log travels");
    let log: nlog::Log = rmp_serde::from_slice(&bytes).expect("and back");

    let mut new = engine(toml);
    new.merge_log(&log);
    new.raise(a1, 2000).expect("the node raises it again");
    assert!(
        run(&mut new, 2000, 19_000, 1000).is_empty(),
        "already told, escalation carried"
    );
    new.raise(b, 20_000).expect("raised");
    let n = run(&mut new, 20_000, 40_000, 1000);
    assert_eq!(n.len(), 1, "a change is told");
    assert_eq!(n[0].alerts.len(), 2);
    let step2 = run(&mut new, 41_000, 70_000, 1000);
    assert_eq!(step2.len(), 1);
    assert_eq!(
        step2[0].receiver, "lead",
        "the escalation goes on at step 2 on time"
    );
    assert_eq!(step2[0].at_unix_ms, 61_000);
}

#[test]
fn raises_beyond_the_bound_are_refused_and_counted_and_the_snapshot_travels() {
    let mut e =
        engine("max_alerts = 2\nmax_alerts_per_notification = 1\n[route]\ngroup_wait_ms = 0");
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    e.raise(alert("w2", "anomaly", "cpu", Severity::High), 0)
        .expect("raised");
    assert_eq!(
        e.raise(alert("w3", "anomaly", "cpu", Severity::High), 0),
        Err(Error::Full { max: 2 })
    );
    e.raise(alert("w1", "anomaly", "cpu", Severity::High), 1)
        .expect("a repeat is no new alert");
    assert_eq!(e.counters().refused, 1);
    let n = e.poll(1);
    assert_eq!((n[0].alerts.len(), n[0].omitted), (1, 1));
    let snap = e.snapshot(1);
    assert_eq!(snap.alerts[0].raised, 2);
    let json = serde_json::to_string(&snap).expect("json");
    assert!(json.contains(r#""state":"firing""#), "{json}");
    let back: Snapshot =
        rmp_serde::from_slice(&rmp_serde::to_vec(&snap).expect("rmp")).expect("rmp");
    assert_eq!(back, snap);
}

#[test]
fn a_route_left_unwritten_fans_every_alert_out_to_every_receiver() {
    let mut c = config("[route]\ngroup_wait_ms = 0\n");
    assert!(c.route.routes_nothing());
    c.route = c.route.fan_out(&["hook".to_string(), "mail".to_string()]);
    assert!(!c.route.routes_nothing());
    let mut e = Engine::new(c).expect("valid");
    e.raise(alert("w1", "policy_violation", "/etc/x", Severity::Low), 0)
        .expect("raised");
    let mut got: Vec<(String, usize)> = e
        .poll(0)
        .iter()
        .map(|n| (n.receiver.clone(), n.alerts.len()))
        .collect();
    got.sort();
    assert_eq!(got, [("hook".to_string(), 1), ("mail".to_string(), 1)]);
    let none = config("").route.fan_out(&[]);
    assert_eq!(none.receiver.as_deref(), Some("default"));
    assert!(none.routes.is_empty());
}

/// A receiver that forgets what it is not told (Alertmanager and its `resolve_timeout`)
/// hears an open group again every `repush_ms`, acknowledged or not; once the group's
/// alert resolved and that was told, nothing more.
#[test]
fn an_open_group_is_pushed_again_every_repush_period_until_it_resolves() {
    let mut e = engine(
        "[route]\ngroup_interval_ms = 300000\nrepeat_interval_ms = 14400000\n\
         [[receivers]]\nname = \"default\"\nrepush_ms = 60000",
    );
    let a = alert("w1", "anomaly", "cpu", Severity::High);
    let id = e.raise(a.clone(), 0).expect("raised");
    let first = run_timeouts(&mut e, 10_000);
    assert_eq!(first.len(), 1);
    e.ack(&id, "ana", "looking", 20_000).expect("acked");
    let again = run_timeouts(&mut e, 200_000);
    let at: Vec<u64> = again.iter().map(|(t, _)| *t).collect();
    assert_eq!(at, [70_000, 130_000, 190_000], "every 60 s after the last");
    assert!(
        again
            .iter()
            .all(|(_, n)| n.alerts.len() == 1 && n.alerts[0].status.name() == "acknowledged")
    );
    e.resolve(&a.key, 200_000).expect("resolved");
    let end = run_timeouts(&mut e, 2_000_000);
    assert_eq!(end.len(), 1, "the resolution, then nothing: {end:?}");
    assert_eq!(end[0].0, 250_000, "told at the group's next look");
    assert_eq!(end[0].1.alerts[0].status.name(), "resolved");
    // Without a re-push period the same group is told only the acknowledgement, at its
    // next look.
    let mut quiet = engine("[route]\ngroup_interval_ms = 300000\nrepeat_interval_ms = 14400000");
    let id = quiet.raise(a, 0).expect("raised");
    run_timeouts(&mut quiet, 10_000);
    quiet.ack(&id, "ana", "looking", 20_000).expect("acked");
    let told: Vec<u64> = run_timeouts(&mut quiet, 1_000_000)
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(told, [310_000]);
}
