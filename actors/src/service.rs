//! Service probes: which of the region's probes this node runs, when each attempt is due,
//! and what successive results mean.
//!
//! A probe (`[[services]]` in settings) is a region work item, `probe:<name>`, owned by one
//! member at a time ([`crate::assign`]). [`Probes`] holds the probes this node owns: it
//! says when to start an attempt ([`Output::Start`]), takes its [`Outcome`] back, and turns
//! outcomes into observations for the spike encoder only when the service's state changes
//! ([`Tracker`]). The attempts themselves (a TCP connect, an HTTP GET) are the node's I/O;
//! nothing here opens a socket or reads a clock.
//!
//! Spikes: kind `service`, subject the probe's name; `added` when the service is (found)
//! up, `removed` when it is (found) down, with `fields.state` before/after (`up`, `down`;
//! no `before` on the first result of a new owner), `fields.reason` when down (`refused`,
//! `timeout`, `wrong status 503`, ...), `fields.check` and `fields.target`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use crate::node;
use crate::spike::{Change, FieldChange, Kind, Layer, Observation, Severity, Value};

/// How much longer than its own timeout an attempt may take before the core counts it as
/// a timeout itself: the runner enforces the timeout, this only keeps a lost answer from
/// wedging the probe.
pub const GRACE: Duration = Duration::from_secs(1);

/// The prefix of a probe's work item (`probe:<name>`).
pub const ITEM_PREFIX: &str = "probe:";

/// The probe names among `assignments` (work item → owner) that `me` owns.
pub fn owned(assignments: &BTreeMap<String, node::Id>, me: &node::Id) -> BTreeSet<String> {
    probes(
        assignments
            .iter()
            .filter(|(_, owner)| *owner == me)
            .map(|(item, _)| item),
    )
}

/// The probe names among work items (all owned by one node).
pub fn probes<'a>(items: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    items
        .into_iter()
        .filter_map(|item| item.strip_prefix(ITEM_PREFIX).map(str::to_string))
        .collect()
}

/// Which HTTP statuses mean up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any 2xx.
    Success,
    /// Exactly this status.
    Status(u16),
}

impl Expect {
    /// The outcome of an HTTP answer with `status`.
    pub fn judge(self, status: u16) -> Outcome {
        let up = match self {
            Expect::Success => (200..300).contains(&status),
            Expect::Status(s) => s == status,
        };
        if up {
            Outcome::Up
        } else {
            Outcome::Down(Reason::Status(status))
        }
    }
}

/// How a service is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection to `target` (`host:port`) is accepted.
    Tcp { target: String },
    /// An HTTP GET of `url` answers with an expected status (redirects are not followed).
    Http { url: String, expect: Expect },
}

impl Check {
    /// `tcp` or `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Tcp { .. } => "tcp",
            Check::Http { .. } => "http",
        }
    }

    /// The address or URL checked.
    pub fn target(&self) -> &str {
        match self {
            Check::Tcp { target } => target,
            Check::Http { url, .. } => url,
        }
    }
}

/// One configured probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Unique in the region: the work item is `probe:<name>`, the spikes' subject `<name>`.
    pub name: String,
    pub check: Check,
    /// From the start of one attempt to the start of the next.
    pub interval: Duration,
    /// An attempt that has not succeeded by then is down (`timeout`).
    pub timeout: Duration,
}

/// Why an attempt found the service down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Nothing listens there (connection refused).
    Refused,
    /// No answer within the probe's timeout.
    Timeout,
    /// The connection was reset or closed before an answer.
    Reset,
    /// No route to the host or network.
    Unreachable,
    /// The HTTP answer had a status that does not count as up.
    Status(u16),
    /// Anything else (a name that does not resolve, a malformed answer), as the runner
    /// describes it.
    Error(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Refused => f.write_str("refused"),
            Reason::Timeout => f.write_str("timeout"),
            Reason::Reset => f.write_str("reset"),
            Reason::Unreachable => f.write_str("unreachable"),
            Reason::Status(s) => write!(f, "wrong status {s}"),
            Reason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Up,
    Down(Reason),
}

impl Outcome {
    pub fn state(&self) -> State {
        match self {
            Outcome::Up => State::Up,
            Outcome::Down(_) => State::Down,
        }
    }
}

/// A service's state as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Up,
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// Consecutive results needed before a reported state changes.
///
/// One attempt is weak evidence either way: a SYN lost on a busy network or a pause of
/// the service (or of this node) longer than the timeout makes one attempt fail although
/// the service is fine, and a crashing service can accept one connection on its way down.
/// Reporting every such blip would send two spikes (down, then up) to the whole region,
/// and a flapping service would send a pair every interval. Requiring two agreeing results
/// in a row (by default, both ways) costs one interval of detection latency and absorbs
/// isolated failures; a service that keeps failing is still reported at the second
/// attempt. The first result of a new owner is reported at once: there is nothing to
/// confirm it against, and the region should learn the state it takes over without delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Failed attempts in a row before an up service is reported down (at least 1).
    pub fall: u32,
    /// Successful attempts in a row before a down service is reported up (at least 1).
    pub rise: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis { fall: 2, rise: 2 }
    }
}

/// A change of a service's reported state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// `None` for the first result.
    pub from: Option<State>,
    pub to: State,
    /// The last attempt's reason, when the service is now down.
    pub reason: Option<Reason>,
    /// Results in a row that agreed with `to` (1 for a first result).
    pub streak: u32,
}

/// One probe's reported state: turns successive outcomes into transitions, with
/// [`Hysteresis`].
#[derive(Debug, Clone)]
pub struct Tracker {
    hysteresis: Hysteresis,
    reported: Option<State>,
    /// Results in a row that disagree with `reported`.
    against: u32,
}

impl Tracker {
    pub fn new(hysteresis: Hysteresis) -> Self {
        Tracker {
            hysteresis,
            reported: None,
            against: 0,
        }
    }

    /// The state last reported (`None` before the first result).
    pub fn reported(&self) -> Option<State> {
        self.reported
    }

    /// Records one result; returns the transition to report, if the state changed.
    pub fn record(&mut self, outcome: &Outcome) -> Option<Transition> {
        let to = outcome.state();
        let reason = match outcome {
            Outcome::Up => None,
            Outcome::Down(r) => Some(r.clone()),
        };
        let Some(from) = self.reported else {
            self.reported = Some(to);
            return Some(Transition {
                from: None,
                to,
                reason,
                streak: 1,
            });
        };
        if from == to {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = match to {
            State::Down => self.hysteresis.fall,
            State::Up => self.hysteresis.rise,
        };
        if self.against < needed.max(1) {
            return None;
        }
        let streak = self.against;
        self.reported = Some(to);
        self.against = 0;
        Some(Transition {
            from: Some(from),
            to,
            reason,
            streak,
        })
    }
}

/// The observation reporting `t` for the probe `spec`.
pub fn observation(spec: &Spec, t: &Transition) -> Observation {
    let (change, severity) = match t.to {
        State::Up => (Change::Added, Severity::Info),
        State::Down => (Change::Removed, Severity::High),
    };
    let mut o = Observation::new(Kind::Service, change, spec.name.clone(), Layer::Poll);
    o.severity = severity;
    o.fields.insert(
        "state".into(),
        FieldChange {
            before: t.from.map(|s| Value::Text(s.as_str().into())),
            after: Some(Value::Text(t.to.as_str().into())),
        },
    );
    o.fields
        .insert("check".into(), FieldChange::fact(spec.check.kind()));
    o.fields
        .insert("target".into(), FieldChange::fact(spec.check.target()));
    if let Some(r) = &t.reason {
        o.fields
            .insert("reason".into(), FieldChange::fact(r.to_string()));
    }
    if t.from.is_some() {
        o.fields.insert(
            "results_in_a_row".into(),
            FieldChange {
                before: None,
                after: Some(Value::Int(i64::from(t.streak))),
            },
        );
    }
    o
}

/// Identifies one attempt, so that a late answer (from before the probe was released, or
/// after the core gave up on it) is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// An attempt to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub ticket: Ticket,
    pub spec: Spec,
}

/// What the core is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The probe names this node now owns (all of them, replacing the last set).
    Owned(BTreeSet<String>),
    /// The result of an attempt.
    Done { ticket: Ticket, outcome: Outcome },
    /// The time [`Probes::poll_timeout`] named has come.
    Timeout,
}

/// What the core asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Run this attempt and hand its outcome back as [`Input::Done`].
    Start(Attempt),
    /// Send this to the spike encoder.
    Observe(Observation),
}

#[derive(Debug, Clone)]
struct Running {
    tracker: Tracker,
    next: Instant,
    /// The attempt under way and when the core stops waiting for it.
    in_flight: Option<(Ticket, Instant)>,
}

/// The probes this node owns, each with its schedule and reported state.
///
/// At most one attempt per probe is under way. The first attempt starts as soon as a
/// probe is owned; the next ones every `interval` from the start of the one before (at a
/// fixed rate; a late wake-up does not cause a burst). A probe no longer owned is dropped
/// with its state, silently: its new owner reports what it finds. A name owned here but
/// not configured here (the region's nodes disagree on `[[services]]`) is reported once as
/// a `coverage` observation and not probed.
#[derive(Debug, Clone)]
pub struct Probes {
    specs: BTreeMap<String, Spec>,
    hysteresis: Hysteresis,
    running: BTreeMap<String, Running>,
    unknown: BTreeSet<String>,
    next_ticket: u64,
}

impl Probes {
    pub fn new(specs: impl IntoIterator<Item = Spec>, hysteresis: Hysteresis) -> Self {
        Probes {
            specs: specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
            hysteresis,
            running: BTreeMap::new(),
            unknown: BTreeSet::new(),
            next_ticket: 0,
        }
    }

    /// The probes owned and run here, with the state last reported for each.
    pub fn states(&self) -> BTreeMap<String, Option<State>> {
        self.running
            .iter()
            .map(|(n, r)| (n.clone(), r.tracker.reported()))
            .collect()
    }

    /// When the core next needs [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running
            .values()
            .map(|r| r.in_flight.map_or(r.next, |(_, deadline)| deadline))
            .min()
    }

    /// Takes one input at `now`; then gives up on attempts past their deadline and starts
    /// the attempts that are due, whatever the input was.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Owned(names) => self.own(now, names, &mut out),
            Input::Done { ticket, outcome } => {
                let found = self
                    .running
                    .iter_mut()
                    .find(|(_, r)| r.in_flight.is_some_and(|(t, _)| t == ticket));
                if let Some((name, r)) = found {
                    r.in_flight = None;
                    Self::record(&self.specs, name, r, &outcome, &mut out);
                }
            }
            Input::Timeout => {}
        }
        for (name, r) in &mut self.running {
            if r.in_flight.is_some_and(|(_, deadline)| deadline <= now) {
                r.in_flight = None;
                let timeout = Outcome::Down(Reason::Timeout);
                Self::record(&self.specs, name, r, &timeout, &mut out);
            }
        }
        self.start_due(now, &mut out);
        out
    }

    fn own(&mut self, now: Instant, names: BTreeSet<String>, out: &mut Vec<Output>) {
        self.running.retain(|n, _| names.contains(n));
        self.unknown.retain(|n| names.contains(n));
        for name in names {
            if self.running.contains_key(&name) || self.unknown.contains(&name) {
                continue;
            }
            if self.specs.contains_key(&name) {
                self.running.insert(
                    name,
                    Running {
                        tracker: Tracker::new(self.hysteresis),
                        next: now,
                        in_flight: None,
                    },
                );
            } else {
                let mut o = Observation::new(
                    Kind::Coverage,
                    Change::Modified,
                    format!("{ITEM_PREFIX}{name}"),
                    Layer::Poll,
                );
                o.severity = Severity::Medium;
                o.fields.insert(
                    "problem".into(),
                    FieldChange::fact("assigned_but_not_configured"),
                );
                out.push(Output::Observe(o));
                self.unknown.insert(name);
            }
        }
    }

    fn record(
        specs: &BTreeMap<String, Spec>,
        name: &str,
        r: &mut Running,
        outcome: &Outcome,
        out: &mut Vec<Output>,
    ) {
        if let (Some(t), Some(spec)) = (r.tracker.record(outcome), specs.get(name)) {
            out.push(Output::Observe(observation(spec, &t)));
        }
    }

    fn start_due(&mut self, now: Instant, out: &mut Vec<Output>) {
        for (name, r) in &mut self.running {
            let Some(spec) = self.specs.get(name) else {
                continue;
            };
            if r.in_flight.is_some() || r.next > now {
                continue;
            }
            let ticket = Ticket(self.next_ticket);
            self.next_ticket += 1;
            r.in_flight = Some((ticket, now + spec.timeout + GRACE));
            r.next += spec.interval;
            if r.next <= now {
                r.next = now + spec.interval;
            }
            out.push(Output::Start(Attempt {
                ticket,
                spec: spec.clone(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tcp(name: &str) -> Spec {
        Spec {
            name: name.into(),
            check: Check::Tcp {
                target: "127.0.0.1:5432".into(),
            },
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn starts(out: &[Output]) -> Vec<Attempt> {
        out.iter()
            .filter_map(|o| match o {
                Output::Start(a) => Some(a.clone()),
                Output::Observe(_) => None,
            })
            .collect()
    }

    fn observed(out: &[Output]) -> Vec<Observation> {
        out.iter()
            .filter_map(|o| match o {
                Output::Observe(o) => Some(o.clone()),
                Output::Start(_) => None,
            })
            .collect()
    }

    fn state_of(o: &Observation) -> (Option<Value>, Option<Value>) {
        let f = &o.fields["state"];
        (f.before.clone(), f.after.clone())
    }

    fn text(s: &str) -> Option<Value> {
        Some(Value::Text(s.into()))
    }

    #[test]
    fn http_statuses_are_judged_by_the_expectation() {
        assert_eq!(Expect::Success.judge(204), Outcome::Up);
        assert_eq!(
            Expect::Success.judge(301),
            Outcome::Down(Reason::Status(301))
        );
        assert_eq!(Expect::Status(401).judge(401), Outcome::Up);
        assert_eq!(
            Expect::Status(401).judge(200),
            Outcome::Down(Reason::Status(200))
        );
        assert_eq!(Reason::Status(503).to_string(), "wrong status 503");
    }

    #[test]
    fn the_first_result_at_once_then_only_confirmed_changes() {
        let mut t = Tracker::new(Hysteresis::default());
        let first = t.record(&Outcome::Up).expect("first result reported");
        assert_eq!((first.from, first.to), (None, State::Up));
        assert_eq!(t.record(&Outcome::Up), None);
        // One failure is a blip; two in a row are a fact.
        assert_eq!(t.record(&Outcome::Down(Reason::Timeout)), None);
        assert_eq!(t.record(&Outcome::Up), None);
        assert_eq!(t.record(&Outcome::Down(Reason::Timeout)), None);
        let down = t
            .record(&Outcome::Down(Reason::Refused))
            .expect("second failure in a row");
        assert_eq!(down.from, Some(State::Up));
        assert_eq!(down.to, State::Down);
        assert_eq!(down.reason, Some(Reason::Refused), "the latest reason");
        assert_eq!(down.streak, 2);
        assert_eq!(t.record(&Outcome::Down(Reason::Timeout)), None);
        assert_eq!(t.record(&Outcome::Up), None);
        let up = t.record(&Outcome::Up).expect("back up");
        assert_eq!(
            (up.from, up.to, up.reason),
            (Some(State::Down), State::Up, None)
        );
    }

    #[test]
    fn a_down_first_result_is_reported_with_its_reason() {
        let spec = tcp("db");
        let mut t = Tracker::new(Hysteresis { fall: 1, rise: 1 });
        let tr = t.record(&Outcome::Down(Reason::Refused)).expect("first");
        let o = observation(&spec, &tr);
        assert_eq!(o.kind, Kind::Service);
        assert_eq!(o.change, Change::Removed);
        assert_eq!(o.subject, "db");
        assert_eq!(o.severity, Severity::High);
        assert_eq!(state_of(&o), (None, text("down")));
        assert_eq!(o.fields["reason"].after, text("refused"));
        assert_eq!(o.fields["check"].after, text("tcp"));
        assert_eq!(o.fields["target"].after, text("127.0.0.1:5432"));
        assert!(!o.fields.contains_key("results_in_a_row"));
        // With no hysteresis, one result is enough.
        let up = t.record(&Outcome::Up).expect("up at once");
        let o = observation(&spec, &up);
        assert_eq!(o.change, Change::Added);
        assert_eq!(state_of(&o), (text("down"), text("up")));
        assert!(!o.fields.contains_key("reason"));
    }

    #[test]
    fn owned_probes_run_at_once_then_every_interval() {
        let t0 = Instant::now();
        let mut p = Probes::new([tcp("db"), tcp("web")], Hysteresis::default());
        assert_eq!(p.poll_timeout(), None, "nothing owned, nothing to do");
        let out = p.handle(t0, Input::Owned(names(&["db"])));
        let a = starts(&out);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].spec.name, "db");
        // While it runs, the core waits for it (timeout + grace), and starts nothing else.
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        assert!(p.handle(t0, Input::Timeout).is_empty());
        let out = p.handle(
            t0 + Duration::from_millis(5),
            Input::Done {
                ticket: a[0].ticket,
                outcome: Outcome::Up,
            },
        );
        let o = observed(&out);
        assert_eq!(o.len(), 1);
        assert_eq!(state_of(&o[0]), (None, text("up")));
        assert_eq!(p.states()["db"], Some(State::Up));
        // The next attempt is an interval after the start of the last one.
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        let out = p.handle(t0 + Duration::from_secs(10), Input::Timeout);
        let b = starts(&out);
        assert_eq!(b.len(), 1);
        // The same result again: nothing to say.
        let out = p.handle(
            t0 + Duration::from_secs(10),
            Input::Done {
                ticket: b[0].ticket,
                outcome: Outcome::Up,
            },
        );
        assert!(out.is_empty());
        // A late wake-up starts one attempt, not a burst, and the rate starts over from it.
        let late = t0 + Duration::from_secs(45);
        assert_eq!(starts(&p.handle(late, Input::Timeout)).len(), 1);
        assert_eq!(p.poll_timeout(), Some(late + Duration::from_secs(3)));
    }

    #[test]
    fn an_attempt_that_never_answers_counts_as_a_timeout() {
        let t0 = Instant::now();
        let mut p = Probes::new([tcp("db")], Hysteresis { fall: 1, rise: 1 });
        let a = starts(&p.handle(t0, Input::Owned(names(&["db"]))));
        let out = p.handle(t0 + Duration::from_secs(3), Input::Timeout);
        let o = observed(&out);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].fields["reason"].after, text("timeout"));
        // Its answer, when it comes after all, is ignored.
        let out = p.handle(
            t0 + Duration::from_secs(4),
            Input::Done {
                ticket: a[0].ticket,
                outcome: Outcome::Up,
            },
        );
        assert!(observed(&out).is_empty());
        assert_eq!(p.states()["db"], Some(State::Down));
    }

    #[test]
    fn released_probes_stop_and_their_late_answers_are_ignored() {
        let t0 = Instant::now();
        let mut p = Probes::new([tcp("db")], Hysteresis::default());
        let a = starts(&p.handle(t0, Input::Owned(names(&["db"]))));
        assert!(p.handle(t0, Input::Owned(BTreeSet::new())).is_empty());
        assert_eq!(p.poll_timeout(), None);
        let out = p.handle(
            t0,
            Input::Done {
                ticket: a[0].ticket,
                outcome: Outcome::Up,
            },
        );
        assert!(out.is_empty(), "{out:?}");
        // Taken back: a fresh start, reported afresh.
        let b = starts(&p.handle(t0, Input::Owned(names(&["db"]))));
        assert_ne!(a[0].ticket, b[0].ticket);
        let out = p.handle(
            t0,
            Input::Done {
                ticket: b[0].ticket,
                outcome: Outcome::Down(Reason::Refused),
            },
        );
        assert_eq!(state_of(&observed(&out)[0]), (None, text("down")));
    }

    #[test]
    fn a_probe_owned_but_not_configured_here_is_reported_once() {
        let t0 = Instant::now();
        let mut p = Probes::new([tcp("db")], Hysteresis::default());
        let out = p.handle(t0, Input::Owned(names(&["db", "ghost"])));
        assert_eq!(starts(&out).len(), 1, "only db runs");
        let o = observed(&out);
        assert_eq!(o.len(), 1);
        assert_eq!(
            (o[0].kind, o[0].subject.as_str()),
            (Kind::Coverage, "probe:ghost")
        );
        assert!(
            observed(&p.handle(t0, Input::Owned(names(&["db", "ghost"])))).is_empty(),
            "not again while it stays owned"
        );
        assert_eq!(p.states().len(), 1);
    }

    #[test]
    fn owned_picks_this_nodes_probes_only() {
        let me = node::Id::from("me");
        let other = node::Id::from("other");
        let a: BTreeMap<String, node::Id> = [
            ("probe:db".to_string(), me.clone()),
            ("probe:web".to_string(), other.clone()),
            ("audit:other".to_string(), me.clone()),
        ]
        .into_iter()
        .collect();
        assert_eq!(owned(&a, &me), names(&["db"]));
        assert_eq!(owned(&a, &other), names(&["web"]));
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Up),
            Just(Outcome::Down(Reason::Refused)),
            Just(Outcome::Down(Reason::Timeout)),
            (100u16..600).prop_map(|s| Outcome::Down(Reason::Status(s))),
        ]
    }

    proptest! {
        /// Reports alternate, the first result is reported at once, and a change is
        /// reported exactly when enough results in a row agree on it.
        #[test]
        fn reports_follow_the_hysteresis(
            fall in 1u32..4,
            rise in 1u32..4,
            outcomes in proptest::collection::vec(outcome(), 1..60),
        ) {
            let mut t = Tracker::new(Hysteresis { fall, rise });
            let mut reported: Option<State> = None;
            for (i, o) in outcomes.iter().enumerate() {
                let got = t.record(o);
                if i == 0 {
                    prop_assert_eq!(got.as_ref().map(|t| t.to), Some(o.state()));
                    reported = Some(o.state());
                    continue;
                }
                let needed = if o.state() == State::Down { fall } else { rise } as usize;
                let run = outcomes[..=i].iter().rev().take_while(|x| x.state() == o.state()).count();
                let last = reported.expect("reported since the first");
                // Expected: a change when the run that disagrees reaches its threshold.
                let expect_change = last != o.state() && run >= needed;
                if let Some(tr) = &got {
                    prop_assert!(expect_change, "reported {tr:?} after a run of {run}");
                    prop_assert_eq!(tr.from, Some(last));
                    prop_assert_ne!(tr.to, last, "reports alternate");
                    prop_assert_eq!(tr.streak as usize, needed);
                    reported = Some(tr.to);
                } else {
                    prop_assert!(!expect_change, "a run of {run} {:?} not reported", o.state());
                }
                prop_assert_eq!(t.reported(), reported);
            }
        }

        /// Whatever the order of ownership changes, answers (current, stale or duplicated)
        /// and wake-ups: only owned, configured probes start, at most one attempt each is
        /// under way, every observation is about an owned probe, and no deadline is left
        /// in the past.
        #[test]
        fn only_owned_probes_run_one_attempt_at_a_time(
            ops in proptest::collection::vec((0u8..4, 0usize..16, outcome(), 0u64..4000), 1..120),
        ) {
            let specs: Vec<Spec> = ["a", "b", "c"].iter().map(|n| Spec {
                interval: Duration::from_millis(1000),
                timeout: Duration::from_millis(500),
                ..tcp(n)
            }).collect();
            let all = ["a", "b", "c", "ghost"];
            let mut p = Probes::new(specs, Hysteresis::default());
            let mut now = Instant::now();
            let mut owned: BTreeSet<String> = BTreeSet::new();
            let mut issued: Vec<Ticket> = Vec::new();
            for (op, pick, result, step) in ops {
                now += Duration::from_millis(step);
                let before: BTreeMap<String, (Ticket, Instant)> = p
                    .running
                    .iter()
                    .filter_map(|(n, r)| Some((n.clone(), r.in_flight?)))
                    .collect();
                let mut answered = None;
                let out = match op {
                    0 => {
                        owned = all
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| pick & (1 << i) != 0)
                            .map(|(_, n)| n.to_string())
                            .collect();
                        p.handle(now, Input::Owned(owned.clone()))
                    }
                    1 | 2 if !issued.is_empty() => {
                        let ticket = issued[pick % issued.len()];
                        answered = Some(ticket);
                        p.handle(now, Input::Done { ticket, outcome: result })
                    }
                    _ => p.handle(now, Input::Timeout),
                };
                let mut started = BTreeSet::new();
                for o in &out {
                    match o {
                        Output::Start(a) => {
                            let name = &a.spec.name;
                            prop_assert!(owned.contains(name), "{} not owned", name);
                            prop_assert!(name != "ghost");
                            prop_assert!(started.insert(name.clone()), "{} started twice", name);
                            if let Some((ticket, deadline)) = before.get(name) {
                                prop_assert!(
                                    answered == Some(*ticket) || *deadline <= now,
                                    "{} started while its last attempt was under way", name
                                );
                            }
                            issued.push(a.ticket);
                        }
                        Output::Observe(o) => {
                            let name = o.subject.strip_prefix(ITEM_PREFIX).unwrap_or(&o.subject);
                            prop_assert!(owned.contains(name), "observation about {name}, not owned");
                        }
                    }
                }
                prop_assert!(p.poll_timeout().is_none_or(|t| t > now), "a deadline left in the past");
            }
        }
    }
}
