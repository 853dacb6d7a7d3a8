//! Labels, matchers, routes, silences, dates, budgets and the settings' shape.

use super::*;
use crate::alerting::labels::{Op, of_alert};
use crate::alerting::ratelimit::Limiter;
use crate::alerting::route::{GroupBy, Route};
use crate::alerting::silence::am;

#[test]
fn an_alert_has_the_labels_of_its_action_severity_place_rule_kind_and_subject() {
    let mut a = alert("b1", "policy_violation", "/etc/passwd", Severity::High);
    let l = of_alert(&a);
    let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("alertname", "policy_violation"),
            ("kind", "file"),
            ("node", "b1"),
            ("region", "eu"),
            ("role", "web"),
            ("rule", "web.toml:3#etc"),
            ("severity", "high"),
            ("subject", "/etc/passwd"),
        ]
    );
    a.role.clear();
    a.rule = None;
    a.details.insert("kind".into(), "user".into());
    let l = of_alert(&a);
    assert!(
        !l.contains_key("role") && !l.contains_key("rule"),
        "empty is absent"
    );
    assert_eq!(l["kind"], "user");
    let notes = labels::annotations_of(&a);
    assert_eq!(notes["summary"], "policy_violation on b1: /etc/passwd");
    assert_eq!(notes["decision"], "violation");
    assert_eq!(notes["kind"], "user", "details are annotations too");
    a.details.insert("summary".into(), "not this".into());
    a.details.insert("9 lives".into(), "x".into());
    let notes = labels::annotations_of(&a);
    assert_eq!(notes["summary"], "policy_violation on b1: /etc/passwd");
    assert_eq!(notes["_9_lives"], "x", "a valid label name");
    // Rebuilt from a record: the same key, first firing (so the same id), labels and
    // annotations.
    let r = Record::new(
        a.key.clone(),
        of_alert(&a),
        labels::annotations_of(&a),
        77,
        80,
    );
    let back = labels::alert_of(&r);
    assert_eq!((back.key.as_str(), back.at_unix_ms), (a.key.as_str(), 77));
    assert_eq!(of_alert(&back), of_alert(&a));
    assert_eq!(labels::annotations_of(&back), labels::annotations_of(&a));
}

#[test]
fn matchers_parse_all_four_operators_and_regexes_match_the_whole_value() {
    let l: Labels = [
        ("role", "database"),
        ("severity", "critical"),
        ("node", "db-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let m = |t: &str| Matcher::parse(t).expect(t);
    assert_eq!(m("role = database").op, Op::Eq);
    assert!(m("role = database").matches(&l));
    assert!(m("severity=~\"high|critical\"").matches(&l));
    assert!(
        !m("severity=~\"crit\"").matches(&l),
        "anchored: a full match"
    );
    assert!(m("node != db-2").matches(&l));
    assert!(!m("node!~\"db-.*\"").matches(&l));
    assert!(m("region = \"\"").matches(&l), "absent is empty");
    assert!(m("region !~ \".+\"").matches(&l));
    let q = m(r#"subject="a \"quoted\" \\ path""#);
    assert_eq!(q.value, r#"a "quoted" \ path"#);
    assert_eq!(Matcher::parse(&q.to_string()).expect("round trip"), q);
}

#[test]
fn a_bad_matcher_is_refused_with_its_text_and_why() {
    for (text, why) in [
        ("= database", "no label name"),
        ("role ~ database", "expected one of"),
        ("role=~\"(\"", "invalid regular expression"),
        ("role=\"database", "no closing quote"),
        ("role=data\"base", "quoted whole"),
        ("role=\"a\"b\"", "must be escaped"),
        ("1role=x", "label name"),
    ] {
        let e = Matcher::parse(text).expect_err(text);
        assert_eq!(e.matcher, text);
        assert!(e.to_string().contains(why), "{text}: {e}");
        assert!(e.to_string().contains(&format!("`{text}`")), "{e}");
    }
}

#[test]
fn matchers_travel_as_their_text() {
    let m = Matcher::parse("severity=~high|critical").expect("parses");
    let json = serde_json::to_string(&m).expect("json");
    assert_eq!(json, r#""severity=~\"high|critical\"""#);
    let back: Matcher = rmp_serde::from_slice(&rmp_serde::to_vec(&m).expect("rmp")).expect("rmp");
    assert_eq!(back, m);
    assert!(serde_json::from_str::<Matcher>(r#""severity=~(""#).is_err());
}

#[test]
fn the_default_route_sends_everything_to_default_grouped_by_region_and_action() {
    let root = Route::root(&route::Config::default()).expect("valid");
    assert_eq!(root.receiver, "default");
    assert_eq!(
        root.group_by,
        GroupBy::Labels(vec!["alertname".into(), "region".into()])
    );
    assert_eq!(
        (
            root.group_wait_ms,
            root.group_interval_ms,
            root.repeat_interval_ms
        ),
        (10_000, 300_000, 14_400_000)
    );
    let l = of_alert(&alert("b1", "anomaly", "cpu", Severity::High));
    let (key, labels) = root.group_key(&l);
    assert_eq!(key, r#"0|alertname="anomaly",region="eu""#);
    assert_eq!(labels.len(), 2);
}

#[test]
fn routes_descend_to_the_first_match_inherit_and_continue() {
    let c = config(
        r#"
        [route]
        group_by = ["region"]
        group_wait_ms = 1000
        [[route.routes]]
        matchers = ["role = database"]
        receiver = "dba"
        continue = true
        group_by = ["action", "node"]
        [[route.routes.routes]]
        matchers = ['severity =~ "critical"']
        receiver = "dba-pager"
        repeat_interval_ms = 60000
        [[route.routes]]
        matchers = ["severity=~\"high|critical\""]
        receiver = "oncall"
        [[route.routes]]
        matchers = ["role = database"]
        receiver = "never"
        "#,
    );
    let root = Route::root(&c.route).expect("valid");
    let go = |a: Alert| -> Vec<(String, String)> {
        root.matching(&of_alert(&a))
            .iter()
            .map(|r| (r.id.clone(), r.receiver.clone()))
            .collect()
    };
    let db = |s| with_role(alert("db1", "policy_violation", "/etc/x", s), "database");
    let pair = |id: &str, r: &str| (id.to_string(), r.to_string());
    assert_eq!(
        go(db(Severity::Low)),
        [pair("0.0", "dba"), pair("0.2", "never")],
        "continue: the later siblings are tried too"
    );
    assert_eq!(
        go(db(Severity::High)),
        [pair("0.0", "dba"), pair("0.1", "oncall")],
        "continue tries the next sibling, which stops"
    );
    assert_eq!(
        go(db(Severity::Critical)),
        [pair("0.0.0", "dba-pager"), pair("0.1", "oncall")]
    );
    assert_eq!(
        go(alert("w1", "anomaly", "cpu", Severity::Low)),
        [pair("0", "default")]
    );
    let pager = &root.routes[0].routes[0];
    assert_eq!(pager.group_wait_ms, 1000, "inherited from the root");
    assert_eq!(pager.repeat_interval_ms, 60_000);
    assert_eq!(
        pager.group_by,
        GroupBy::Labels(vec!["alertname".into(), "node".into()]),
        "inherited from its parent; `action` is alertname"
    );
    assert_eq!(
        root.receivers(),
        ["default", "dba", "dba-pager", "oncall", "never"]
    );
}

#[test]
fn bad_routes_name_the_setting() {
    for (text, at) in [
        ("[route]\nmatchers = [\"a=b\"]", "route.matchers"),
        (
            "[[route.routes]]\n[[route.routes]]\nmatchers = [\"a=b\", \"b ? c\"]",
            "route.routes[1].matchers[1]",
        ),
        (
            "[[route.routes]]\ngroup_interval_ms = 0",
            "route.routes[0].group_interval_ms",
        ),
        ("[route]\ngroup_by = [\"...\", \"a\"]", "route.group_by"),
        (
            "[[route.routes]]\nreceiver = \" \"",
            "route.routes[0].receiver",
        ),
        (
            "[[escalations]]\nname = \"x\"\nsteps = []",
            "escalations[0].steps",
        ),
        (
            "[[escalations]]\nname = \"x\"\nsteps = [{ receiver = \"a\", after_ms = 5 }, { receiver = \"b\", after_ms = 1 }]",
            "escalations[0].steps",
        ),
        (
            "[[inhibit]]\ntarget_matchers = [\"x=~(\"]",
            "inhibit[0].target_matchers[0]",
        ),
        (
            "[[escalations]]\nname = \"x\"\nsteps = [{ receiver = \"a\", after_ms = 0 }]\n[[escalations]]\nname = \"x\"\nsteps = [{ receiver = \"a\", after_ms = 0 }]",
            "escalations[1].name",
        ),
    ] {
        let e = Engine::new(config(text)).expect_err(text);
        assert_eq!(e.at, at, "{text}: {e}");
    }
    let unknown = toml::from_str::<Config>("[route]\nmatcher = []");
    assert!(unknown.is_err(), "a misspelt route key is refused");
}

#[test]
fn the_issue_outline_is_read_with_sink_keys_left_to_the_runtime() {
    let c = config(
        r#"
        ring = 1000
        [[receivers]]
        name = "oncall"
        kind = "webhook"
        url = "http://127.0.0.1:9/hook"
        rate_per_minute = 30
        [route]
        receiver = "default"
        group_by = ["region", "action"]
        group_wait_ms = 10000
        group_interval_ms = 300000
        repeat_interval_ms = 14400000
        [[route.routes]]
        matchers = ["role = database"]
        receiver = "dba"
        continue = false
        [[inhibit]]
        source_matchers = ["alertname = node_dead"]
        target_matchers = ["alertname = service_down"]
        equal = ["node"]
        [[escalations]]
        name = "critical"
        steps = [{ receiver = "oncall", after_ms = 0 }, { receiver = "lead", after_ms = 600000 }]
        repeat = 2
        ack_timeout_ms = 3600000
        "#,
    );
    assert_eq!(c.receivers[0].rate_per_minute, Some(30));
    assert_eq!(
        c.escalations[0].matchers,
        ["severity = critical"],
        "default"
    );
    assert_eq!(c.rate_per_minute, 10);
    Engine::new(c).expect("valid");
}

#[test]
fn dates_are_rfc3339_both_ways() {
    let t = 1_764_522_000_123; // 2025-11-30T17:00:00.123Z
    assert_eq!(rfc3339::format(t), "2025-11-30T17:00:00.123Z");
    assert_eq!(rfc3339::parse("2025-11-30T17:00:00.123Z"), Some(t));
    assert_eq!(rfc3339::parse("2025-11-30T18:00:00.123456+01:00"), Some(t));
    assert_eq!(rfc3339::parse("2025-11-30T17:00:00Z"), Some(t - 123));
    assert_eq!(rfc3339::parse("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(rfc3339::format(951_782_400_000), "2000-02-29T00:00:00.000Z");
    for bad in [
        "2025-11-30",
        "2025-13-01T00:00:00Z",
        "2025-11-30T17:00:00",
        "x",
    ] {
        assert_eq!(rfc3339::parse(bad), None, "{bad}");
    }
}

#[test]
fn alertmanager_silence_json_is_accepted_and_answered_in_its_shape() {
    let body = r#"{"matchers":[{"name":"role","value":"database","isRegex":false},
        {"name":"severity","value":"low|info","isRegex":true,"isEqual":false}],
        "startsAt":"2025-11-30T17:00:00Z","endsAt":"2025-11-30T18:00:00Z",
        "createdBy":"ana","comment":"planned upgrade"}"#;
    let p: am::Postable = serde_json::from_str(body).expect("alertmanager's JSON");
    let s = p.into_silence().expect("valid");
    let start = 1_764_522_000_000;
    assert_eq!(
        (s.starts_at_unix_ms, s.ends_at_unix_ms),
        (start, start + 3_600_000)
    );
    assert_eq!(s.matchers[1].to_string(), r#"severity!~"low|info""#);
    let mut e = engine("");
    let id = e.add_silence(s, start - 60_000).expect("added");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    let got = serde_json::to_value(e.silences(start - 1)).expect("json");
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["status"]["state"], "pending");
    assert_eq!(got[0]["matchers"][1]["isEqual"], false);
    assert_eq!(got[0]["matchers"][1]["isRegex"], true);
    assert_eq!(got[0]["startsAt"], "2025-11-30T17:00:00.000Z");
    assert_eq!(got[0]["createdBy"], "ana");
    assert_eq!(e.silences(start)[0].status.state, silence::State::Active);
    assert_eq!(
        e.silences(start + 3_600_000)[0].status.state,
        silence::State::Expired
    );
    let expired = e.expire_silence(&id, start + 10).expect("expires");
    assert_eq!(expired.ends_at_unix_ms, start + 10);
    assert!(matches!(
        e.expire_silence(&id, start + 20),
        Err(Error::Silence(silence::Error::AlreadyExpired(_)))
    ));
}

#[test]
fn a_silence_must_select_something_and_end_after_it_starts() {
    let s = |matchers: &[&str], start, end| Silence {
        id: String::new(),
        matchers: matchers
            .iter()
            .map(|m| Matcher::parse(m).expect("ok"))
            .collect(),
        starts_at_unix_ms: start,
        ends_at_unix_ms: end,
        created_by: "ana".into(),
        comment: String::new(),
        updated_at_unix_ms: 0,
    };
    let mut e = engine("");
    let err = |r: Result<String, Error>| match r {
        Err(Error::Silence(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        err(e.add_silence(s(&[], 0, 10), 0)),
        silence::Error::NoMatchers
    );
    assert_eq!(
        err(e.add_silence(s(&["role=~\".*\""], 0, 10), 0)),
        silence::Error::MatchesEverything
    );
    assert_eq!(
        err(e.add_silence(s(&["role=db"], 10, 10), 0)),
        silence::Error::EndsBeforeStart
    );
    assert_eq!(
        err(e.add_silence(s(&["role=db"], 0, 10), 10)),
        silence::Error::AlreadyEnded
    );
    let mut long = s(&["role=db"], 0, 10);
    long.comment = "x".repeat(silence::MAX_TEXT);
    assert_eq!(err(e.add_silence(long, 0)), silence::Error::TooLarge);
    let many: Vec<String> = (0..=silence::MAX_MATCHERS)
        .map(|i| format!("l{i}=v"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        err(e.add_silence(s(&many, 0, 10), 0)),
        silence::Error::TooLarge
    );
    let mut unknown = s(&["role=db"], 0, 10);
    unknown.id = "nope".into();
    assert!(matches!(
        err(e.add_silence(unknown, 0)),
        silence::Error::NotFound(_)
    ));
    let bad_time = am::Postable {
        id: None,
        matchers: Vec::new(),
        starts_at: "yesterday".into(),
        ends_at: "2025-11-30T18:00:00Z".into(),
        created_by: "ana".into(),
        comment: String::new(),
    };
    assert!(matches!(
        bad_time.into_silence(),
        Err(silence::Error::BadTime(_))
    ));
}

#[test]
fn a_budget_keeps_its_last_unit_for_one_summary_a_minute() {
    let mut l = Limiter::new(3, BTreeMap::from([("big".to_string(), 100)]));
    assert!(l.take("r", 0) && l.take("r", 1));
    assert!(!l.take("r", 2), "the third unit is the summary's");
    assert_eq!(l.free_at("r", 2), 60_000);
    assert!(l.take_summary("r", 2));
    assert!(!l.take_summary("r", 3), "one summary a minute");
    assert!(!l.take("r", 59_999));
    assert!(l.take("r", 60_001), "the first two units expired");
    assert_eq!(l.budget("big"), 100);
    assert_eq!(
        Limiter::new(0, BTreeMap::new()).budget("x"),
        2,
        "at least 2"
    );
}
