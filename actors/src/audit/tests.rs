use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

const SEC: Duration = Duration::from_secs(1);

fn id(s: &str) -> node::Id {
    node::Id::from(s)
}

fn subject(peer: &str, status: Status) -> Subject {
    Subject {
        peer: id(peer),
        name: Some(format!("{peer}-name")),
        status,
    }
}

fn config() -> Config {
    Config {
        interval: Duration::from_secs(30),
        unanswered_after: 3,
        answer_within: Duration::from_secs(10),
        settle: Duration::from_secs(10),
        max_ranges: 1024,
        keep_released: 2,
    }
}

fn answer(version: u8, seq: u64) -> Answer {
    Answer {
        digest: Digest([version; 32]),
        entries: u64::from(version),
        seq,
        unused: None,
    }
}

fn asks(out: &[Output]) -> Vec<node::Id> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ask(p) => Some(p.clone()),
            Output::Observe(_) => None,
        })
        .collect()
}

fn observed(out: &[Output]) -> Vec<Observation> {
    out.iter()
        .filter_map(|o| match o {
            Output::Observe(o) => Some(o.clone()),
            Output::Ask(_) => None,
        })
        .collect()
}

fn heard(from: &str, spikes: &[(u64, Kind)]) -> Input {
    Input::Heard {
        from: id(from),
        spikes: spikes.iter().map(|(s, k)| (id(from), *s, *k)).collect(),
    }
}

fn answered(from: &str, a: Answer) -> Input {
    Input::Answered {
        from: id(from),
        answer: Ok(a),
    }
}

fn verdict(a: &Auditor, peer: &str) -> Option<Verdict> {
    a.reports(Instant::now())
        .into_iter()
        .find(|r| r.peer == id(peer))
        .and_then(|r| r.verdict)
}

/// An auditor of `x`, which has answered once with `first` at `t0`.
fn audited(first: Answer) -> (Auditor, Instant) {
    let t0 = Instant::now();
    let mut a = Auditor::new(config());
    let out = a.handle(t0, Input::Audited(vec![subject("x", Status::Alive)]));
    assert_eq!(asks(&out), [id("x")]);
    assert!(a.handle(t0, answered("x", first)).is_empty());
    assert_eq!(verdict(&a, "x"), Some(Verdict::Baseline));
    (a, t0)
}

/// Asks `x` at its next turn after `now` and hands it `ans`; returns what came out and
/// the time.
fn round(a: &mut Auditor, now: Instant, ans: Answer) -> (Vec<Output>, Instant) {
    let at = a.poll_timeout().expect("a next request").max(now);
    let out = a.handle(at, Input::Timeout);
    assert_eq!(asks(&out), [id("x")], "asked at its turn");
    (a.handle(at, answered("x", ans)), at)
}

#[test]
fn digest_changes_with_any_field_and_frames_its_strings() {
    let file = |size: u64| State {
        kind: EntryKind::File,
        size,
        mode: 0o644,
        uid: 0,
        gid: 0,
        digest: Some(Digest([7; 32])),
    };
    let one: BTreeMap<String, State> = [("/etc/a".to_string(), file(1))].into();
    assert_eq!(baseline_digest(&one), baseline_digest(&one.clone()));
    let mut bigger = one.clone();
    bigger.insert("/etc/a".into(), file(2));
    assert_ne!(baseline_digest(&one), baseline_digest(&bigger));
    let mut moved = one.clone();
    if let Some(s) = moved.get_mut("/etc/a") {
        s.mode = 0o600;
    }
    assert_ne!(baseline_digest(&one), baseline_digest(&moved));
    // A symlink target cannot be mistaken for the next path.
    let link = |target: &str| State {
        kind: EntryKind::Symlink {
            target: target.into(),
        },
        size: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        digest: None,
    };
    let a: BTreeMap<String, State> = [("/x".to_string(), link("ab"))].into();
    let b: BTreeMap<String, State> = [("/x".to_string(), link("a"))].into();
    assert_ne!(baseline_digest(&a), baseline_digest(&b));
    assert_ne!(baseline_digest(&BTreeMap::new()), baseline_digest(&a));
}

#[test]
fn ranges_merge_cover_and_forget() {
    let mut r = Ranges::default();
    for n in [5, 7, 6, 1, 2] {
        assert!(r.insert(n, 8));
    }
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r.covers(5, 7, None));
    assert!(!r.covers(2, 5, None));
    assert!(r.covers(2, 5, Some((3, 4))), "the gap is declared unused");
    assert!(r.covers(9, 8, None), "an empty window");
    assert!(r.any_in(3, 5));
    assert!(!r.any_in(3, 4));
    r.forget_through(6);
    assert!(!r.any_in(0, 6));
    assert!(r.covers(7, 7, None));
    // Full: a number that needs a new range is not kept, one that extends a range is.
    let mut r = Ranges::default();
    assert!(r.insert(1, 1));
    assert!(!r.insert(10, 1));
    assert!(r.insert(2, 1));
    assert!(r.covers(1, 2, None));
    r.forget_one(1);
    assert!(!r.any_in(1, 1));
    assert!(r.any_in(2, 2));
}

#[test]
fn asks_at_once_then_every_interval_and_one_request_at_a_time() {
    let t0 = Instant::now();
    let mut a = Auditor::new(config());
    assert_eq!(a.poll_timeout(), None);
    let out = a.handle(t0, Input::Audited(vec![subject("x", Status::Alive)]));
    assert_eq!(asks(&out), [id("x")]);
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert!(asks(&a.handle(t0 + SEC, Input::Timeout)).is_empty());
    a.handle(t0 + SEC, answered("x", answer(1, 0)));
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    // The same list again changes nothing.
    let out = a.handle(
        t0 + 2 * SEC,
        Input::Audited(vec![subject("x", Status::Alive)]),
    );
    assert!(out.is_empty());
    assert_eq!(a.assigned().count(), 1);
}

#[test]
fn an_unchanged_digest_is_fine_whatever_was_published() {
    let (mut a, t0) = audited(answer(1, 10));
    a.handle(t0, heard("x", &[(11, Kind::File), (12, Kind::Metric)]));
    let (out, _) = round(&mut a, t0, answer(1, 12));
    assert!(out.is_empty());
    assert_eq!(verdict(&a, "x"), Some(Verdict::Unchanged));
}

#[test]
fn a_change_with_a_file_spike_in_the_window_is_reported() {
    let (mut a, t0) = audited(answer(1, 10));
    // Out of order, as gossip may deliver.
    a.handle(t0, heard("x", &[(13, Kind::File)]));
    a.handle(t0, heard("x", &[(11, Kind::Metric)]));
    let (out, _) = round(&mut a, t0, answer(2, 13));
    assert!(observed(&out).is_empty(), "{out:?}");
    assert_eq!(verdict(&a, "x"), Some(Verdict::Reported));
}

#[test]
fn a_change_without_a_file_spike_is_a_critical_alarm() {
    let (mut a, t0) = audited(answer(1, 10));
    a.handle(t0, heard("x", &[(11, Kind::Metric), (12, Kind::Process)]));
    // A file spike after the window belongs to the next one.
    a.handle(t0, heard("x", &[(13, Kind::File)]));
    let (out, _) = round(&mut a, t0, answer(2, 12));
    let o = observed(&out);
    assert_eq!(o.len(), 1, "{out:?}");
    assert_eq!((o[0].kind, o[0].change), (Kind::Audit, Change::Modified));
    assert_eq!(o[0].severity, Severity::Critical);
    assert_eq!(o[0].subject, "x");
    assert_eq!(
        o[0].fields["problem"].after,
        Some(Value::Text("files_changed_without_being_reported".into()))
    );
    assert_eq!(o[0].fields["seq"].before, Some(Value::Int(10)));
    assert_eq!(verdict(&a, "x"), Some(Verdict::Unreported));
    // Nothing published at all, and a changed digest: no need to wait for gossip.
    let (out, _) = round(&mut a, t0, answer(3, 12));
    assert_eq!(observed(&out).len(), 1);
}

#[test]
fn a_file_spike_signed_by_someone_else_does_not_count() {
    let (mut a, t0) = audited(answer(1, 10));
    a.handle(
        t0,
        Input::Heard {
            from: id("mallory"),
            spikes: vec![(id("x"), 11, Kind::File)],
        },
    );
    a.handle(
        t0,
        Input::Heard {
            from: id("x"),
            spikes: vec![(id("x"), 11, Kind::Metric), (id("y"), 12, Kind::File)],
        },
    );
    let (out, _) = round(&mut a, t0, answer(2, 11));
    assert_eq!(observed(&out).len(), 1, "{out:?}");
}

#[test]
fn a_gap_waits_for_gossip_then_is_inconclusive() {
    let (mut a, t0) = audited(answer(1, 10));
    a.handle(t0, heard("x", &[(11, Kind::Metric)]));
    let (out, at) = round(&mut a, t0, answer(2, 13));
    assert!(out.is_empty());
    assert_eq!(verdict(&a, "x"), Some(Verdict::Settling));
    // Late gossip fills the gap: all of it seen, none a file spike.
    a.handle(at + SEC, heard("x", &[(13, Kind::User)]));
    assert_eq!(verdict(&a, "x"), Some(Verdict::Settling));
    let out = a.handle(at + 2 * SEC, heard("x", &[(12, Kind::Metric)]));
    assert_eq!(observed(&out).len(), 1);
    assert_eq!(verdict(&a, "x"), Some(Verdict::Unreported));

    // Another window with a gap that never fills (replayed to the master only).
    let (out, at) = round(&mut a, at, answer(3, 20));
    assert!(out.is_empty());
    let out = a.handle(at + Duration::from_secs(10), Input::Timeout);
    assert!(observed(&out).is_empty(), "no alarm over a gap: {out:?}");
    assert_eq!(verdict(&a, "x"), Some(Verdict::Inconclusive));
    let r = &a.reports(at)[0];
    assert_eq!(r.counters.inconclusive, 1);
    assert_eq!(r.counters.unreported, 1);
}

#[test]
fn numbers_skipped_at_a_restart_are_not_a_gap() {
    let (mut a, t0) = audited(answer(1, 10));
    a.handle(t0, heard("x", &[(11, Kind::Metric)]));
    // Restarted: numbers 12..=1024 were reserved by the last run and never used.
    a.handle(
        t0,
        heard("x", &[(1025, Kind::Metric), (1026, Kind::Network)]),
    );
    let mut ans = answer(2, 1026);
    ans.unused = Some((12, 1024));
    let (out, _) = round(&mut a, t0, ans);
    assert_eq!(observed(&out).len(), 1, "a lie across a restart: {out:?}");
}

#[test]
fn unanswered_while_alive_is_reported_once_per_streak() {
    let (mut a, t0) = audited(answer(1, 10));
    let mut now = t0;
    let mut alarms = Vec::new();
    for _ in 0..5 {
        now = a.poll_timeout().expect("next");
        let out = a.handle(now, Input::Timeout);
        alarms.extend(observed(&out));
        if !asks(&out).is_empty() {
            let out = a.handle(
                now,
                Input::Answered {
                    from: id("x"),
                    answer: Err("connection refused".into()),
                },
            );
            alarms.extend(observed(&out));
        }
    }
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(
        (alarms[0].change, alarms[0].severity),
        (Change::Removed, Severity::High)
    );
    assert_eq!(
        alarms[0].fields["reason"].after,
        Some(Value::Text("connection refused".into()))
    );
    let r = &a.reports(now)[0];
    assert!(r.unanswered_in_a_row >= 3);
    // It answers again: said once, the comparison goes on from the old answer.
    let (out, _) = round(&mut a, now, answer(1, 10));
    let o = observed(&out);
    assert_eq!(o.len(), 1);
    assert_eq!(
        (o[0].change, o[0].severity),
        (Change::Added, Severity::Info)
    );
    assert_eq!(verdict(&a, "x"), Some(Verdict::Unchanged));
}

#[test]
fn silence_of_a_peer_held_suspect_or_dead_is_not_held_against_it() {
    let (mut a, t0) = audited(answer(1, 10));
    a.handle(t0, Input::Audited(vec![subject("x", Status::Dead)]));
    let mut now = t0;
    for _ in 0..6 {
        now = a.poll_timeout().expect("next");
        let out = a.handle(now, Input::Timeout);
        assert!(observed(&out).is_empty(), "{out:?}");
    }
    let r = &a.reports(now)[0];
    assert_eq!(r.counters.unanswered, 0);
    assert!(r.counters.unanswered_while_down >= 2);
    assert_eq!(r.status, "dead");
}

#[test]
fn late_or_unasked_answers_are_ignored() {
    let (mut a, t0) = audited(answer(1, 10));
    assert!(a.handle(t0, answered("x", answer(9, 10))).is_empty());
    assert_eq!(verdict(&a, "x"), Some(Verdict::Baseline));
    let at = a.poll_timeout().expect("next");
    a.handle(at, Input::Timeout);
    a.handle(at + Duration::from_secs(10), Input::Timeout);
    assert!(
        a.handle(at + Duration::from_secs(11), answered("x", answer(9, 10)))
            .is_empty()
    );
    assert_eq!(a.reports(at)[0].counters.answers, 1);
    assert!(a.handle(t0, answered("nobody", answer(9, 10))).is_empty());
}

#[test]
fn a_released_peer_is_remembered_and_compared_when_it_comes_back() {
    let (mut a, t0) = audited(answer(1, 10));
    assert!(a.handle(t0, Input::Audited(Vec::new())).is_empty());
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.assigned().count(), 0);
    // Still heard while released.
    a.handle(t0, heard("x", &[(11, Kind::Metric)]));
    let out = a.handle(t0 + SEC, Input::Audited(vec![subject("x", Status::Alive)]));
    assert_eq!(asks(&out), [id("x")]);
    let out = a.handle(t0 + SEC, answered("x", answer(2, 11)));
    assert_eq!(observed(&out).len(), 1, "compared with the answer before");
    // Only `keep_released` released peers are kept.
    let list =
        |names: &[&str]| Input::Audited(names.iter().map(|n| subject(n, Status::Alive)).collect());
    a.handle(t0 + 2 * SEC, list(&["p", "q", "r"]));
    a.handle(t0 + 3 * SEC, list(&[]));
    assert_eq!(a.reports(t0).len(), 2);
}

#[test]
fn a_sequence_that_goes_back_is_inconclusive() {
    let (mut a, t0) = audited(answer(1, 10));
    let (out, _) = round(&mut a, t0, answer(2, 5));
    assert!(out.is_empty());
    assert_eq!(verdict(&a, "x"), Some(Verdict::Inconclusive));
    assert_eq!(a.reports(t0)[0].counters.seq_regressions, 1);
}

#[test]
fn audited_by_picks_this_nodes_audits_only() {
    let me = id("me");
    let assignments: BTreeMap<String, node::Id> = [
        ("audit:x".to_string(), me.clone()),
        ("audit:y".to_string(), id("other")),
        ("probe:db".to_string(), me.clone()),
    ]
    .into();
    assert_eq!(audited_by(&assignments, &me), [id("x")]);
}

/// A peer and the gossip between it and the auditor, for the properties below.
#[derive(Debug, Clone)]
enum Op {
    /// The peer publishes a spike (a file spike changes its baseline); `deliver`: 0 now,
    /// 1 later, 2 never (replayed to the master only).
    Publish { file: bool, deliver: u8 },
    /// The baseline changes and nothing is published.
    Lie,
    /// The peer restarts, skipping `skip` numbers.
    Restart { skip: u64 },
    /// Delayed gossip arrives.
    Flush,
    /// Time passes; what the auditor asks is answered (`answer`) or not.
    Wait { ms: u64, answer: bool },
}

fn op(lies: bool) -> impl Strategy<Value = Op> {
    let base = prop_oneof![
        6 => (any::<bool>(), 0u8..3).prop_map(|(file, deliver)| Op::Publish { file, deliver }),
        1 => (0u64..50).prop_map(|skip| Op::Restart { skip }),
        2 => Just(Op::Flush),
        4 => (0u64..40_000, any::<bool>()).prop_map(|(ms, answer)| Op::Wait { ms, answer }),
    ];
    if lies {
        prop_oneof![5 => base, 1 => Just(Op::Lie)].boxed()
    } else {
        base.boxed()
    }
}

/// Runs `ops` against an auditor of `x`; returns its alarms about changes.
fn run(ops: Vec<Op>) -> Vec<Observation> {
    let mut a = Auditor::new(config());
    let mut now = Instant::now();
    let (mut version, mut seq, mut unused) = (0u8, 0u64, None);
    let mut later: Vec<(u64, Kind)> = Vec::new();
    let mut alarms = Vec::new();
    let collect = |out: Vec<Output>, alarms: &mut Vec<Observation>| {
        alarms.extend(
            observed(&out)
                .into_iter()
                .filter(|o| o.change == Change::Modified),
        );
        !asks(&out).is_empty()
    };
    let first = a.handle(now, Input::Audited(vec![subject("x", Status::Alive)]));
    if collect(first, &mut alarms) {
        collect(a.handle(now, answered("x", answer(0, 0))), &mut alarms);
    }
    for op in ops {
        match op {
            Op::Publish { file, deliver } => {
                seq += 1;
                let kind = if file {
                    version = version.wrapping_add(1);
                    Kind::File
                } else {
                    Kind::Metric
                };
                match deliver {
                    0 => {
                        collect(a.handle(now, heard("x", &[(seq, kind)])), &mut alarms);
                    }
                    1 => later.push((seq, kind)),
                    _ => {}
                }
            }
            Op::Lie => version = version.wrapping_add(1),
            Op::Restart { skip } => {
                if skip > 0 {
                    unused = Some((seq + 1, seq + skip));
                    seq += skip;
                }
            }
            Op::Flush => {
                let spikes = std::mem::take(&mut later);
                collect(a.handle(now, heard("x", &spikes)), &mut alarms);
            }
            Op::Wait { ms, answer } => {
                now += Duration::from_millis(ms);
                if collect(a.handle(now, Input::Timeout), &mut alarms) && answer {
                    let ans = Answer {
                        digest: Digest([version; 32]),
                        entries: 0,
                        seq,
                        unused,
                    };
                    collect(a.handle(now, answered("x", ans)), &mut alarms);
                }
            }
        }
    }
    alarms
}

proptest! {
    /// Ranges hold exactly the numbers a set would, as long as they have room.
    #[test]
    fn ranges_agree_with_a_set(
        ops in proptest::collection::vec((0u8..3, 0u64..64, 0u64..64), 1..200),
    ) {
        let mut r = Ranges::default();
        let mut model: BTreeSet<u64> = BTreeSet::new();
        for (what, x, y) in ops {
            match what {
                0 => {
                    prop_assert!(r.insert(x, usize::MAX));
                    model.insert(x);
                }
                1 => {
                    r.forget_through(x);
                    model.retain(|n| *n > x);
                }
                _ => {
                    let (lo, hi) = (x.min(y), x.max(y));
                    prop_assert_eq!(r.any_in(lo, hi), model.range(lo..=hi).next().is_some());
                    prop_assert_eq!(r.covers(lo, hi, None), (lo..=hi).all(|n| model.contains(&n)));
                }
            }
            // Disjoint, non-touching ranges.
            let mut last: Option<u64> = None;
            for (s, e) in &r.0 {
                prop_assert!(s <= e);
                prop_assert!(last.is_none_or(|l| l + 1 < *s));
                last = Some(*e);
            }
        }
    }

    /// An honest peer (every baseline change comes with a file spike), whatever gossip
    /// loses, delays or reorders and however it restarts, is never reported.
    #[test]
    fn an_honest_peer_is_never_reported(ops in proptest::collection::vec(op(false), 1..150)) {
        let alarms = run(ops);
        prop_assert!(alarms.is_empty(), "{alarms:?}");
    }

    /// A peer that lies while every spike reaches the auditor is reported.
    #[test]
    fn a_lie_seen_through_complete_gossip_is_reported(
        before in proptest::collection::vec(any::<bool>(), 0..20),
        after in proptest::collection::vec(any::<bool>(), 0..20),
    ) {
        let publish = |v: &Vec<bool>| v.iter().map(|f| Op::Publish { file: *f, deliver: 0 }).collect::<Vec<_>>();
        let mut ops = vec![Op::Wait { ms: 0, answer: true }];
        ops.extend(publish(&before));
        ops.push(Op::Wait { ms: 30_000, answer: true });
        ops.push(Op::Lie);
        ops.extend(publish(&after).into_iter().filter(|o| matches!(o, Op::Publish { file: false, .. })));
        ops.push(Op::Wait { ms: 30_000, answer: true });
        prop_assert_eq!(run(ops).len(), 1);
    }
}
