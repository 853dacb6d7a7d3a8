use super::*;
use crate::spike::{Change, Kind};

const TIMEOUT: Duration = Duration::from_millis(2000);

fn id(s: &str) -> node::Id {
    node::Id::from(s)
}

fn user(seq: u64) -> Spike {
    Spike::bare("me", seq, Kind::User, Change::Added, &format!("u{seq}"))
}

fn view(master: Option<(&str, u64)>) -> View {
    View {
        region: "eu".into(),
        master: master.map(|(m, t)| (id(m), t)),
    }
}

fn client(t0: Instant) -> Client {
    Client::new(Config::new(id("me"), TIMEOUT, Decision::Violation), t0)
}

fn drain(c: &mut Client) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

/// (target, seq, recheck) of the requests among `out`.
fn asks(out: &[Output]) -> Vec<(Target, u64, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ask {
                to, spike, recheck, ..
            } => Some((to.clone(), spike.seq, *recheck)),
            Output::Settled { .. } => None,
        })
        .collect()
}

/// (seq, by, rule, alert) of the outcomes among `out`.
fn settled(out: &[Output]) -> Vec<(u64, String, Rule, Option<Alert>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Settled {
                spike,
                settled,
                rule,
                alert,
            } => Some((spike.seq, settled.by.clone(), rule.clone(), *alert)),
            Output::Ask { .. } => None,
        })
        .collect()
}

fn answer(term: u64, decision: Decision, rule: Rule) -> Answer {
    Answer {
        region: "eu".into(),
        term,
        policy: "v1".into(),
        decision,
        rule: rule.to_string(),
        reason: "because".into(),
        held: false,
        recheck_after_ms: None,
    }
}

fn ok(term: u64) -> Result<Answer, Failure> {
    Ok(answer(term, Decision::Approved, Rule::Learned("ab".into())))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn at_start_consultations_wait_for_the_first_master_instead_of_deciding_alone() {
    let t0 = Instant::now();
    let mut c = client(t0);
    for seq in 1..=176 {
        c.handle_consult(t0 + ms(10), user(seq));
    }
    // No master known yet, the view not settled: nothing decided, nothing asked.
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t0 + TIMEOUT));
    c.handle_timeout(t0 + ms(900));
    assert!(drain(&mut c).is_empty());

    // This node becomes its region's master a moment later: it asks its own fleet actor.
    c.handle_view(t0 + ms(1200), view(Some(("me", 2))));
    let out = drain(&mut c);
    assert_eq!(asks(&out).len(), 176);
    assert!(asks(&out).iter().all(|(to, _, _)| *to == Target::Local));
    for seq in 1..=176 {
        c.handle_answer(t0 + ms(1210), &id("me"), seq, ok(2));
    }
    let out = drain(&mut c);
    let s = settled(&out);
    assert_eq!(s.len(), 176);
    assert!(
        s.iter()
            .all(|(_, by, _, alert)| by == "master" && alert.is_none())
    );
    assert_eq!(c.pending(), (0, 0));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_view_settled_without_master_for_the_timeout_decides_autonomously() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0 + ms(100), view(None));
    c.handle_consult(t0 + ms(500), user(1));
    assert!(drain(&mut c).is_empty());
    // The bound counts from start, not from the consultation.
    assert_eq!(c.poll_timeout(), Some(t0 + TIMEOUT));
    c.handle_timeout(t0 + TIMEOUT);
    let out = drain(&mut c);
    assert_eq!(
        settled(&out),
        [(
            1,
            "autonomous".into(),
            Rule::Autonomous,
            Some(Alert::Violation)
        )]
    );
    let Output::Settled { settled: s, .. } = &out[0] else {
        panic!("settled");
    };
    assert!(s.reason.contains("no master known"), "{}", s.reason);
    assert_eq!(s.latency_us, 1_500_000);

    // Settled: what comes next while no master is known is decided at once.
    c.handle_consult(t0 + ms(3000), user(2));
    assert_eq!(settled(&drain(&mut c)).len(), 1);

    // A master appears: asked again; lost again, the bound counts from the loss.
    c.handle_view(t0 + ms(4000), view(Some(("m", 3))));
    c.handle_consult(t0 + ms(4000), user(3));
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("m")), 3, false)]);
    c.handle_answer(t0 + ms(4100), &id("m"), 3, ok(3));
    drain(&mut c);
    c.handle_view(t0 + ms(5000), view(None));
    c.handle_consult(t0 + ms(5000), user(4));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t0 + ms(5000) + TIMEOUT));
}

#[test]
fn in_flight_when_the_master_dies_is_sent_again_to_the_next_master() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0, view(Some(("a", 4))));
    c.handle_consult(t0, user(1));
    c.handle_consult(t0, user(2));
    assert_eq!(asks(&drain(&mut c)).len(), 2);

    // The dead master cannot be dialled: the view still names it, nothing is decided.
    c.handle_answer(
        t0 + ms(50),
        &id("a"),
        1,
        Err(Failure::Unreachable(
            "Failed to dial the requested peer".into(),
        )),
    );
    c.handle_consult(t0 + ms(60), user(3));
    assert!(drain(&mut c).is_empty());
    // One probe of the failed master after a pause, never the whole queue.
    let probe = t0 + ms(50) + TIMEOUT / 10;
    assert_eq!(c.poll_timeout(), Some(probe));
    c.handle_timeout(probe);
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("a")), 1, false)]);
    c.handle_answer(
        probe + ms(5),
        &id("a"),
        1,
        Err(Failure::Unreachable(
            "Failed to dial the requested peer".into(),
        )),
    );
    assert!(drain(&mut c).is_empty());

    // The region fails over: the view loses the master, then names the next.
    c.handle_view(t0 + ms(800), view(None));
    assert!(drain(&mut c).is_empty(), "spike 2, in flight, waits too");
    c.handle_view(t0 + ms(1500), view(Some(("b", 5))));
    let out = drain(&mut c);
    assert_eq!(
        asks(&out),
        [
            (Target::Peer(id("b")), 1, false),
            (Target::Peer(id("b")), 2, false),
            (Target::Peer(id("b")), 3, false)
        ]
    );
    // The old master's late answer about spike 2 is not taken for the new one's.
    c.handle_answer(t0 + ms(1510), &id("a"), 2, ok(4));
    assert!(drain(&mut c).is_empty());
    for seq in 1..=3 {
        c.handle_answer(t0 + ms(1520), &id("b"), seq, ok(5));
    }
    let s = settled(&drain(&mut c));
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|(_, by, ..)| by == "master"), "{s:?}");
}

#[test]
fn a_master_lost_in_transport_and_never_replaced_ends_autonomous_after_the_bound() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0, view(Some(("a", 4))));
    c.handle_consult(t0, user(1));
    drain(&mut c);
    let failed = t0 + ms(100);
    c.handle_answer(
        failed,
        &id("a"),
        1,
        Err(Failure::Refused("not the master of region eu".into())),
    );
    let mut now = failed;
    let mut probes = 0;
    // Probed (and refused) until the bound, measured from the failure.
    while let Some(at) = c.poll_timeout() {
        assert!(
            at <= failed + TIMEOUT,
            "bounded by the timeout from the loss"
        );
        now = at;
        c.handle_timeout(now);
        let out = drain(&mut c);
        if let [(_, seq, _)] = asks(&out)[..] {
            probes += 1;
            c.handle_answer(now, &id("a"), seq, Err(Failure::Refused("no".into())));
            continue;
        }
        if !settled(&out).is_empty() {
            let Output::Settled { settled: s, .. } = &out[0] else {
                panic!("settled");
            };
            assert!(
                s.reason.contains("the master a did not answer"),
                "{}",
                s.reason
            );
            break;
        }
    }
    assert_eq!(now, failed + TIMEOUT);
    assert!((1..=10).contains(&probes), "{probes}");
    // Afterwards the master the view names is asked again.
    c.handle_consult(now, user(2));
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("a")), 2, false)]);
}

#[test]
fn a_probe_answered_resumes_asking_the_master() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0, view(Some(("a", 4))));
    for seq in 1..=3 {
        c.handle_consult(t0, user(seq));
    }
    drain(&mut c);
    c.handle_answer(t0, &id("a"), 1, Err(Failure::Unreachable("reset".into())));
    c.handle_answer(t0, &id("a"), 2, ok(4));
    assert_eq!(settled(&drain(&mut c)).len(), 1);
    c.handle_consult(t0, user(4));
    assert!(drain(&mut c).is_empty());
    let probe = c.poll_timeout().expect("a probe");
    c.handle_timeout(probe);
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("a")), 1, false)]);
    c.handle_answer(probe, &id("a"), 1, ok(4));
    let out = drain(&mut c);
    assert_eq!(settled(&out).len(), 1);
    assert_eq!(asks(&out), [(Target::Peer(id("a")), 4, false)]);
}

#[test]
fn unanswered_requests_time_out_and_unsent_ones_are_sent_again() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0, view(Some(("a", 4))));
    c.handle_consult(t0, user(1));
    c.handle_consult(t0 + ms(10), user(2));
    drain(&mut c);
    // The network queue was full: backpressure, not a missing master. Sent again after
    // the shortest pause, never decided for that.
    c.handle_answer(
        t0 + ms(10),
        &id("a"),
        2,
        Err(Failure::NotSent("the network queue is full".into())),
    );
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(t0 + ms(10) + BUSY_FLOOR));
    c.handle_timeout(t0 + ms(10) + BUSY_FLOOR);
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("a")), 2, false)]);
    c.handle_answer(t0 + ms(40), &id("a"), 2, ok(4));
    assert_eq!(settled(&drain(&mut c))[0].1, "master");
    assert_eq!(c.poll_timeout(), Some(t0 + TIMEOUT));
    c.handle_timeout(t0 + TIMEOUT - ms(1));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(t0 + TIMEOUT);
    let out = drain(&mut c);
    let Output::Settled { settled: s, .. } = &out[0] else {
        panic!("settled");
    };
    assert_eq!(
        (s.by.as_str(), s.reason.contains("timed out")),
        ("autonomous", true)
    );
    // A late answer changes nothing.
    c.handle_answer(t0 + TIMEOUT + ms(1), &id("a"), 1, ok(4));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn held_changes_are_rechecked_and_only_own_violations_alert() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0, view(Some(("a", 4))));
    c.handle_consult(t0, user(1));
    c.handle_consult(t0, user(2));
    drain(&mut c);
    let held = Answer {
        held: true,
        recheck_after_ms: Some(300),
        ..answer(4, Decision::Consult, Rule::Fleet(FleetRule::Held))
    };
    c.handle_answer(t0 + ms(10), &id("a"), 1, Ok(held));
    c.handle_answer(
        t0 + ms(10),
        &id("a"),
        2,
        Ok(answer(
            4,
            Decision::Violation,
            Rule::Fleet(FleetRule::SuspectedCoordinatedChange),
        )),
    );
    let s = settled(&drain(&mut c));
    assert_eq!(s[0].2, Rule::Fleet(FleetRule::Held));
    assert_eq!(s[1].3, None, "the fleet event alerts for every server");
    assert_eq!(c.poll_timeout(), Some(t0 + ms(310)));
    c.handle_timeout(t0 + ms(310));
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("a")), 1, true)]);
    c.handle_answer(
        t0 + ms(320),
        &id("a"),
        1,
        Ok(answer(
            4,
            Decision::Violation,
            Rule::Fleet(FleetRule::Unresolved),
        )),
    );
    let s = settled(&drain(&mut c));
    assert_eq!(s[0].3, Some(Alert::Unresolved));
    let policy = Rule::Policy("web.toml:3#no-users".into());
    c.handle_consult(t0 + ms(400), user(3));
    drain(&mut c);
    c.handle_answer(
        t0 + ms(400),
        &id("a"),
        3,
        Ok(answer(4, Decision::Violation, policy)),
    );
    assert_eq!(settled(&drain(&mut c))[0].3, Some(Alert::Violation));
}

#[test]
fn requests_in_flight_and_waiting_are_bounded() {
    let t0 = Instant::now();
    let mut c = Client::new(
        Config {
            in_flight: 2,
            waiting: 3,
            ..Config::new(id("me"), TIMEOUT, Decision::Approved)
        },
        t0,
    );
    c.handle_view(t0, view(Some(("a", 1))));
    for seq in 1..=6 {
        c.handle_consult(t0, user(seq));
    }
    let out = drain(&mut c);
    assert_eq!(asks(&out).len(), 2);
    // Three wait; the sixth finds the queue full and gets the default (no alert: approved).
    assert_eq!(
        settled(&out),
        [(6, "autonomous".into(), Rule::Autonomous, None)]
    );
    assert_eq!(c.pending(), (3, 2));
    c.handle_answer(t0, &id("a"), 1, ok(1));
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("a")), 3, false)]);
}

#[test]
fn rules_read_back_typed() {
    for text in [
        "learned:0123abcd",
        "fleet:rollout",
        "fleet:upgrade",
        "fleet:suspected_coordinated_change",
        "fleet:held",
        crate::fleet::UNRESOLVED,
        "upgrade:/var/log/dpkg.log",
        "autonomous",
        "web.toml:3#deploy",
        "builtin#defaults.user",
    ] {
        assert_eq!(Rule::parse(text).to_string(), text);
    }
    assert_eq!(
        Rule::parse(crate::fleet::UNRESOLVED),
        Rule::Fleet(FleetRule::Unresolved)
    );
    assert!(matches!(Rule::parse("fleet:other"), Rule::Policy(_)));
}

fn busy(ms_: u64) -> Result<Answer, Failure> {
    Err(Failure::Busy {
        retry_after: ms(ms_),
        why: "over budget".into(),
    })
}

#[test]
fn a_busy_master_is_asked_again_after_its_pause_and_never_decided_autonomously() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0, view(Some(("m", 2))));
    for seq in 1..=3 {
        c.handle_consult(t0, user(seq));
    }
    assert_eq!(asks(&drain(&mut c)).len(), 3);
    // Two are refused as busy, one answered.
    c.handle_answer(t0 + ms(10), &id("m"), 2, busy(300));
    c.handle_answer(t0 + ms(11), &id("m"), 1, busy(100));
    c.handle_answer(t0 + ms(12), &id("m"), 3, ok(2));
    assert_eq!(settled(&drain(&mut c)).len(), 1);
    // Nothing is sent during the pause, even what comes in meanwhile; the longer pause
    // asked for holds.
    c.handle_consult(t0 + ms(20), user(4));
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.pending(), (3, 0));
    assert_eq!(c.poll_timeout(), Some(t0 + ms(310)));
    c.handle_timeout(t0 + ms(200));
    assert!(drain(&mut c).is_empty());
    // Busy again and again, far past the timeout: never autonomous, never lost.
    let mut now = t0 + ms(310);
    for _ in 0..20 {
        c.handle_timeout(now);
        let out = drain(&mut c);
        assert!(settled(&out).is_empty(), "{out:?}");
        // In seq order, as they came in (fewer as the window shrinks).
        let seqs: Vec<u64> = asks(&out).iter().map(|(_, s, _)| *s).collect();
        assert!(!seqs.is_empty() && [1, 2, 4].starts_with(&seqs), "{seqs:?}");
        for seq in seqs {
            c.handle_answer(now + ms(5), &id("m"), seq, busy(400));
        }
        assert!(drain(&mut c).is_empty());
        now += ms(405);
    }
    assert!(now > t0 + 4 * TIMEOUT);
    // The master takes them at last: all settled by it, one at a time at first (the
    // window is down to one), more as answers come.
    let mut by_master = Vec::new();
    let mut rounds = Vec::new();
    c.handle_timeout(now);
    let mut next: Vec<u64> = asks(&drain(&mut c)).iter().map(|(_, s, _)| *s).collect();
    while !next.is_empty() {
        assert!(
            rounds.len() < 10,
            "{rounds:?} {by_master:?} {:?}",
            c.pending()
        );
        rounds.push(next.clone());
        let mut sent = Vec::new();
        for seq in next {
            c.handle_answer(now + ms(5), &id("m"), seq, ok(2));
            let out = drain(&mut c);
            by_master.extend(settled(&out));
            sent.extend(asks(&out).iter().map(|(_, s, _)| *s));
        }
        next = sent;
        now += ms(10);
    }
    assert_eq!(rounds, [vec![1], vec![2, 4]]);
    assert_eq!(by_master.len(), 3);
    assert!(
        by_master.iter().all(|(_, by, ..)| by == "master"),
        "{by_master:?}"
    );
    assert_eq!(c.pending(), (0, 0));
}

#[test]
fn a_busy_master_halves_the_window_once_per_pause_and_answers_grow_it_back() {
    let t0 = Instant::now();
    let mut config = Config::new(id("me"), TIMEOUT, Decision::Violation);
    config.in_flight = 8;
    let mut c = Client::new(config, t0);
    c.handle_view(t0, view(Some(("m", 2))));
    for seq in 1..=100 {
        c.handle_consult(t0, user(seq));
    }
    assert_eq!(asks(&drain(&mut c)).len(), 8);
    // Eight busy answers for one pause: the window halves once, to 4.
    for seq in 1..=8 {
        c.handle_answer(t0 + ms(1), &id("m"), seq, busy(50));
    }
    c.handle_timeout(t0 + ms(51));
    let seqs: Vec<u64> = asks(&drain(&mut c)).iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    // Each answer widens it by one, up to the configured bound.
    let mut now = t0 + ms(60);
    let mut next = seqs;
    let mut sizes = Vec::new();
    for _ in 0..6 {
        sizes.push(next.len());
        let mut sent = Vec::new();
        for seq in next {
            c.handle_answer(now, &id("m"), seq, ok(2));
            sent.extend(asks(&drain(&mut c)).iter().map(|(_, s, _)| *s));
        }
        next = sent;
        now += ms(10);
    }
    // 4 in flight; each answer sends two more (its own place and the new one) until 8.
    assert_eq!(sizes, [4, 8, 8, 8, 8, 8]);
}

#[test]
fn a_busy_pause_is_clamped_and_dropped_when_another_master_is_named() {
    let t0 = Instant::now();
    let mut c = client(t0);
    c.handle_view(t0, view(Some(("m", 2))));
    c.handle_consult(t0, user(1));
    drain(&mut c);
    // No pause asked for: the floor; a huge one: the timeout.
    c.handle_answer(t0 + ms(1), &id("m"), 1, busy(0));
    assert_eq!(c.poll_timeout(), Some(t0 + ms(1) + BUSY_FLOOR));
    c.handle_timeout(t0 + ms(1) + BUSY_FLOOR);
    assert_eq!(asks(&drain(&mut c)).len(), 1);
    c.handle_answer(t0 + ms(30), &id("m"), 1, busy(3_600_000));
    assert_eq!(c.poll_timeout(), Some(t0 + ms(30) + TIMEOUT));
    // A new master is not bound by the old one's pause.
    c.handle_view(t0 + ms(40), view(Some(("n", 3))));
    assert_eq!(asks(&drain(&mut c)), [(Target::Peer(id("n")), 1, false)]);
}
