use super::*;
use proptest::prelude::*;

const SEC: Duration = Duration::from_secs(1);

fn id(s: &str) -> node::Id {
    node::Id::from(s)
}

fn config() -> Config {
    Config {
        persist: 30 * SEC,
        cooldown: 600 * SEC,
        stale: 180 * SEC,
        ..Config::default()
    }
}

/// A detector for node `me` (role web) with peers p0..p{n} of role web and one `db` node.
fn detector(config: Config, peers: usize) -> Detector {
    let mut d = Detector::new(config, id("me"), "web".into());
    let mut roles: BTreeMap<node::Id, String> = (0..peers)
        .map(|i| (id(&format!("p{i}")), "web".to_string()))
        .collect();
    roles.insert(id("db"), "database".into());
    d.set_roles(roles);
    d
}

fn feed(d: &mut Detector, now: Instant, metric: &str, own: f64, peers: &[f64]) {
    d.observe(now, &id("me"), metric, own);
    for (i, v) in peers.iter().enumerate() {
        d.observe(now, &id(&format!("p{i}")), metric, *v);
    }
}

fn field(o: &Observation, name: &str) -> Option<Value> {
    o.fields.get(name).and_then(|f| f.after.clone())
}

#[test]
fn the_robust_z_score_uses_the_peers_median_and_mad() {
    let s = score(10.0, &[1.0, 2.0, 3.0, 4.0, 100.0], 0.0).expect("peers");
    assert_eq!((s.median, s.mad, s.peers), (3.0, 1.0, 5));
    assert!((s.z - 7.0 / MAD_SCALE).abs() < 1e-9, "{s:?}");
    // An even count takes the middle pair's mean.
    let s = score(0.0, &[1.0, 2.0, 3.0, 4.0], 0.0).expect("peers");
    assert_eq!(s.median, 2.5);
    assert_eq!(score(1.0, &[], 0.05), None);
}

#[test]
fn identical_peers_give_a_floor_not_a_division_by_zero() {
    // MAD = 0: the scale falls back to 5 % of the median.
    let s = score(0.5, &[0.5, 0.5, 0.5], 0.05).expect("peers");
    assert_eq!((s.mad, s.z), (0.0, 0.0));
    let s = score(0.6, &[0.5, 0.5, 0.5], 0.05).expect("peers");
    assert!((s.z - 4.0).abs() < 1e-9, "{s:?}");
    let s = score(0.55, &[0.5, 0.5, 0.5], 0.05).expect("peers");
    assert!(s.z.abs() <= 3.0, "10 % away is within 3 floors: {s:?}");
    // Every peer at exactly 0: finite, and any other value deviates.
    let s = score(0.0, &[0.0, 0.0, 0.0], 0.05).expect("peers");
    assert_eq!(s.z, 0.0);
    let s = score(1.0, &[0.0, 0.0, 0.0], 0.05).expect("peers");
    assert!(s.z.is_finite() && s.z > 3.0, "{s:?}");
    let s = score(f64::MAX, &[-f64::MAX, 0.0, 0.0], 0.0).expect("peers");
    assert!(s.z.is_finite(), "{s:?}");
}

#[test]
fn a_deviation_is_raised_once_it_persisted_and_not_again_within_the_cooldown() {
    let t0 = Instant::now();
    let mut d = detector(config(), 4);
    feed(&mut d, t0, "load.1m", 8.0, &[0.5, 0.6, 0.55, 0.45]);
    assert!(d.tick(t0).is_empty(), "just started deviating");
    assert_eq!(d.poll_timeout(), Some(t0 + 30 * SEC));
    assert!(d.tick(t0 + 29 * SEC).is_empty());
    let raised = d.tick(t0 + 30 * SEC);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let o = &raised[0];
    assert_eq!(
        (o.kind, o.change, o.subject.as_str(), o.severity),
        (Kind::Anomaly, Change::Added, "load.1m", Severity::High)
    );
    assert_eq!(field(o, "value"), Some(Value::Float(8.0)));
    assert_eq!(field(o, "median"), Some(Value::Float(0.525)));
    assert_eq!(field(o, "peers"), Some(Value::Int(4)));
    assert!(matches!(field(o, "z"), Some(Value::Float(z)) if z > 3.0));
    assert!(matches!(field(o, "mad"), Some(Value::Float(m)) if m > 0.0));
    assert_eq!(d.raised(), 1);
    // Still deviating: quiet for the cooldown (the values stay fresh), then raised again.
    for s in (31..630).step_by(30) {
        let now = t0 + s * SEC;
        feed(&mut d, now, "load.1m", 8.0, &[0.5, 0.6, 0.55, 0.45]);
        assert!(d.tick(now).is_empty(), "at {s} s");
    }
    let now = t0 + 630 * SEC;
    feed(&mut d, now, "load.1m", 8.0, &[0.5, 0.6, 0.55, 0.45]);
    assert_eq!(
        d.tick(now).len(),
        1,
        "a lasting deviation after the cooldown"
    );
    let r = d.report(now, 1_000_000);
    assert_eq!(r.raised, 2);
    let e = &r.metrics[0];
    assert_eq!((e.metric.as_str(), e.raised, e.peers), ("load.1m", 2, 4));
    assert_eq!(e.last_raised_unix_ms, Some(1_000_000));
    assert_eq!(e.deviating_since_unix_ms, Some(1_000_000 - 630_000));
}

#[test]
fn a_raised_anomaly_ends_once_back_within_bounds() {
    let t0 = Instant::now();
    let mut d = detector(config(), 4);
    let peers = [0.5, 0.6, 0.55, 0.45];
    feed(&mut d, t0, "load.1m", 8.0, &peers);
    d.tick(t0);
    assert_eq!(d.tick(t0 + 30 * SEC).len(), 1, "raised");
    // Back at the median: its end, once.
    feed(&mut d, t0 + 31 * SEC, "load.1m", 0.52, &peers);
    let out = d.tick(t0 + 31 * SEC);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].kind, out[0].change, out[0].severity),
        (Kind::Anomaly, Change::Removed, Severity::Info)
    );
    feed(&mut d, t0 + 32 * SEC, "load.1m", 0.52, &peers);
    assert!(d.tick(t0 + 32 * SEC).is_empty(), "ended once");
}

#[test]
fn a_deviation_that_clears_starts_over() {
    let t0 = Instant::now();
    let mut d = detector(config(), 3);
    feed(&mut d, t0, "mem.used_pct", 95.0, &[40.0, 42.0, 41.0]);
    d.tick(t0);
    d.tick(t0 + 20 * SEC);
    // Back in line for one tick.
    d.observe(t0 + 21 * SEC, &id("me"), "mem.used_pct", 41.5);
    d.tick(t0 + 21 * SEC);
    assert_eq!(d.poll_timeout(), None);
    d.observe(t0 + 22 * SEC, &id("me"), "mem.used_pct", 95.0);
    assert!(d.tick(t0 + 22 * SEC).is_empty());
    assert!(
        d.tick(t0 + 51 * SEC).is_empty(),
        "29 s since it deviated again"
    );
    assert_eq!(d.tick(t0 + 52 * SEC).len(), 1);
}

#[test]
fn only_fresh_values_of_same_role_peers_count() {
    let t0 = Instant::now();
    let mut d = detector(config(), 3);
    // Two web peers, one database node and a stranger: too few peers of the role.
    feed(&mut d, t0, "load.1m", 8.0, &[0.5, 0.5]);
    d.observe(t0, &id("db"), "load.1m", 0.5);
    d.observe(t0, &id("stranger"), "load.1m", 0.5);
    for s in [0, 40, 80] {
        assert!(d.tick(t0 + s * SEC).is_empty());
    }
    let r = d.report(t0 + 80 * SEC, 0);
    assert_eq!((r.metrics[0].score, r.metrics[0].peers), (None, 2));
    // A third web peer joins; an old value of it goes stale and is no longer counted.
    d.observe(t0 + 80 * SEC, &id("p2"), "load.1m", 0.5);
    d.tick(t0 + 80 * SEC);
    assert_eq!(d.report(t0 + 80 * SEC, 0).metrics[0].peers, 3);
    d.observe(t0 + 150 * SEC, &id("me"), "load.1m", 8.0);
    d.observe(t0 + 150 * SEC, &id("p2"), "load.1m", 0.5);
    // p0 and p1 were last heard at t0: stale after 180 s.
    assert!(d.tick(t0 + 181 * SEC).is_empty());
    let r = d.report(t0 + 181 * SEC, 0);
    assert_eq!(r.metrics[0].peers, 1, "{r:?}");
    assert_eq!(r.origins, 2, "stale values are dropped");
}

#[test]
fn spikes_speak_only_for_their_sender_and_bad_values_are_refused() {
    let t0 = Instant::now();
    let mut d = detector(config(), 3);
    let spike = |origin: &str, metric: &str, v: Value| {
        let mut fields = BTreeMap::new();
        fields.insert(
            "value".to_string(),
            FieldChange {
                before: None,
                after: Some(v),
            },
        );
        Spike {
            origin: id(origin),
            seq: 1,
            at_unix_ms: 0,
            kind: Kind::Metric,
            change: Change::Sample,
            subject: metric.into(),
            before: None,
            after: None,
            severity: Severity::Info,
            layers: vec![Layer::Poll],
            label: "metric_sample".into(),
            fields,
        }
    };
    d.spikes(t0, &id("me"), &[spike("me", "load.1m", Value::Float(8.0))]);
    d.spikes(t0, &id("p0"), &[spike("p0", "load.1m", Value::Int(1))]);
    d.spikes(
        t0,
        &id("p1"),
        &[
            // Forged on behalf of p2, and junk.
            spike("p2", "load.1m", Value::Float(1.0)),
            spike("p1", "load.1m", Value::Float(f64::NAN)),
            spike("p1", "load.1m", Value::Text("high".into())),
        ],
    );
    d.tick(t0);
    let r = d.report(t0, 0);
    assert_eq!((r.metrics[0].peers, r.refused), (1, 3), "{r:?}");
    // Too many metric names from one origin: the excess is refused.
    for i in 0..MAX_METRICS_PER_ORIGIN + 10 {
        d.observe(t0, &id("p0"), &format!("junk.{i}"), 1.0);
    }
    assert_eq!(d.report(t0, 0).refused, 3 + 11);
}

#[test]
fn only_the_configured_metrics_are_judged() {
    let t0 = Instant::now();
    let mut d = detector(
        Config {
            metrics: vec![glob::Pattern::new("load.*").expect("glob")],
            ..config()
        },
        3,
    );
    feed(&mut d, t0, "load.1m", 8.0, &[0.5, 0.5, 0.5]);
    feed(&mut d, t0, "net.eth0.rx_bytes_per_s", 1e9, &[1.0, 1.0, 1.0]);
    d.tick(t0);
    let raised = d.tick(t0 + 30 * SEC);
    assert_eq!(
        raised
            .iter()
            .map(|o| o.subject.as_str())
            .collect::<Vec<_>>(),
        ["load.1m"]
    );
}

/// One step of a generated run: time passes, this node's value moves, peers re-send.
#[derive(Debug, Clone)]
struct Step {
    after_s: u64,
    own: f64,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        (1u64..20, prop_oneof![Just(0.5), 0.0f64..20.0])
            .prop_map(|(after_s, own)| Step { after_s, own }),
        1..120,
    )
}

proptest! {
    /// Over any run: with fewer than min_peers peers nothing is raised; a value equal to
    /// the peers' median never raises; every raise comes after a deviation that lasted
    /// `persist` at every tick; two raises of one metric are at least `cooldown` apart; an
    /// end comes only after a raise, once the value is back within bounds, and once.
    #[test]
    fn raises_need_peers_persistence_and_respect_the_cooldown(
        peers in proptest::collection::vec(0.0f64..2.0, 0..6),
        run in steps(),
        persist_s in 0u64..40,
        cooldown_s in 0u64..200,
    ) {
        let cfg = Config {
            persist: Duration::from_secs(persist_s),
            cooldown: Duration::from_secs(cooldown_s),
            ..config()
        };
        let (min_peers, threshold, ratio) = (cfg.min_peers, cfg.threshold, cfg.min_scale_ratio);
        let mut d = detector(cfg, peers.len());
        let mut now = Instant::now();
        let mut streak: Option<Instant> = None;
        let mut last_raise: Option<Instant> = None;
        let mut open = false;
        let median = score(0.0, &peers, 0.0).map(|s| s.median);
        for step in run {
            now += Duration::from_secs(step.after_s);
            // Half the steps probe the median itself.
            let own = if step.own == 0.5 { median.unwrap_or(0.5) } else { step.own };
            feed(&mut d, now, "load.1m", own, &peers);
            let deviating = peers.len() >= min_peers
                && score(own, &peers, ratio).is_some_and(|s| s.z.abs() > threshold);
            if deviating {
                streak.get_or_insert(now);
            } else {
                streak = None;
            }
            let mut out = d.tick(now);
            prop_assert!(out.len() <= 1);
            if out.first().is_some_and(|o| o.change == Change::Removed) {
                prop_assert!(open, "an end without a raise");
                prop_assert!(!deviating, "an end while deviating");
                open = false;
                out.clear();
            }
            if !out.is_empty() {
                open = true;
                prop_assert!(peers.len() >= min_peers, "raised with {} peers", peers.len());
                prop_assert!(Some(own) != median, "raised at the median");
                let since = streak.expect("raised while not deviating");
                prop_assert!(now.duration_since(since) >= Duration::from_secs(persist_s));
                if let Some(last) = last_raise {
                    prop_assert!(now.duration_since(last) >= Duration::from_secs(cooldown_s));
                }
                last_raise = Some(now);
            }
        }
    }
}
