//! The consultation client: how one node asks its region's master to judge the changes
//! its policy leaves to `consult`, and when it stops waiting and decides on its own.
//!
//! This module owns the consultations of one node: the queue, the bound on requests in
//! flight, their timeouts, the rechecks of held changes, waiting for the region's view to
//! settle, re-sending to a new master, and the autonomous default. It does not send
//! anything, read clocks or judge by policy: the policy actor feeds it spikes, views and
//! answers, and carries its [`Output`]s away (requests to the master, settled outcomes
//! for the judge and the alerts).
//!
//! # When the node decides on its own
//!
//! Only when the region's view has *settled* without a master. The view settles when a
//! master is known (it is asked), or when no usable master has been known for the whole
//! settle bound (the consultation timeout) since start, since the master was lost from
//! the view, or since a request to it failed in transport. Until then consultations wait,
//! so that a node restarted alone (which is its region's master a moment later) does not
//! raise an alert per change with "no master known". A request that failed because the
//! master died waits for the next master and is sent again to it; the master it failed
//! on is probed again with one request at a time (never the whole queue) until it answers,
//! the view names another master, or the bound runs out. A request sent and not answered
//! within the timeout is decided autonomously.
//!
//! # A busy master
//!
//! A master over its budget for this node (too many requests in flight or a second from
//! it) answers [`Failure::Busy`]: the request is not a judgement and the master is not
//! lost. It goes back to the head of the queue and nothing more is sent to that master
//! until the pause it asked for has passed; it is never decided autonomously for that.
//! The window of requests in flight halves at each such pause (once per pause, however
//! many busy answers arrive for it) and grows back by one per answer, so that a node
//! whose master takes fewer requests a second than it has to ask settles near that rate
//! instead of re-sending its whole window after every pause. A request this node's own
//! network queue refused ([`Failure::NotSent`]) is backpressure too, not a sign that the
//! master is gone: it is treated the same way, with the shortest pause.
//!
//! # Order of calls
//!
//! Feed it with [`Client::handle_view`] (every view pushed, repeated or not),
//! [`Client::handle_consult`] (a spike the policy says to consult about),
//! [`Client::handle_answer`] (the master's answer or why none came) and
//! [`Client::handle_timeout`] (when [`Client::poll_timeout`] is due). After each, drain
//! [`Client::poll_output`] until `None`, then arm a timer at [`Client::poll_timeout`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::fleet::{Answer, FleetRule, Rule, View};
use crate::node;
use crate::policy::Decision;
use crate::policy::judge::Settled;
use crate::spike::Spike;

/// Consultations under way at once, by default.
pub const IN_FLIGHT: usize = 256;
/// Consultations waiting at most, by default; beyond, the autonomous default decides.
pub const WAITING: usize = 10_000;
/// The shortest pause after a busy answer (a master may ask for none).
pub const BUSY_FLOOR: Duration = Duration::from_millis(20);

/// How a node consults.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node (asked through its own fleet actor while it is the master).
    pub own: node::Id,
    /// A request unanswered this long, or no usable master for this long, and the
    /// autonomous default decides.
    pub timeout: Duration,
    /// The autonomous default.
    pub fallback: Decision,
    pub in_flight: usize,
    pub waiting: usize,
}

impl Config {
    pub fn new(own: node::Id, timeout: Duration, fallback: Decision) -> Self {
        Config {
            own,
            timeout,
            fallback,
            in_flight: IN_FLIGHT,
            waiting: WAITING,
        }
    }

    /// The pause before a master that failed a request is probed again.
    fn backoff(&self) -> Duration {
        (self.timeout / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This node is the master: its own fleet actor answers.
    Local,
    /// The master, over the network.
    Peer(node::Id),
}

/// Why a request brought no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The request could not reach the master or its connection broke (the master may
    /// have died): it is sent again to the next master.
    #[error("the master is unreachable: {0}")]
    Unreachable(String),
    /// The master refused it (it may have stopped leading): it is sent again to the next
    /// master, like an unreachable one.
    #[error("refused: {0}")]
    Refused(String),
    /// The request never left this node (its network queue is full): asked again after
    /// a short pause, like [`Failure::Busy`].
    #[error("not sent: {0}")]
    NotSent(String),
    /// The master did not take it: this node is over its budget there. Asked again
    /// after `retry_after` (at least [`BUSY_FLOOR`], at most the timeout).
    #[error("the master is busy ({why}); retry after {retry_after:?}")]
    Busy { retry_after: Duration, why: String },
}

/// How a settled consultation should be alerted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// A violation of this server's own.
    Violation,
    /// Nothing explained the change within the correlation window.
    Unresolved,
}

/// What the client asks its actor to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Ask the master about `spike`; its answer comes back through
    /// [`Client::handle_answer`] with the spike's seq and the peer asked.
    Ask {
        to: Target,
        region: String,
        spike: Spike,
        recheck: bool,
    },
    /// The consultation about `spike` ended (or, held, will be asked again).
    Settled {
        spike: Spike,
        settled: Settled,
        /// The rule, typed.
        rule: Rule,
        alert: Option<Alert>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    spike: Spike,
    recheck: bool,
    /// When this round of asking began (latency is measured from it).
    queued: Instant,
}

#[derive(Debug)]
struct InFlight {
    entry: Entry,
    to: node::Id,
    asked: Instant,
    /// Sent to probe a master that failed a request before.
    probe: bool,
}

/// No usable master since `since`.
#[derive(Debug, Clone)]
struct Lost {
    since: Instant,
    /// The master a request failed on (the view may still name it), and when it may be
    /// probed again (`None` while a probe is under way).
    failed: Option<(node::Id, u64)>,
    probe_at: Option<Instant>,
}

/// The consultation client of one node; see the module doc for the order of calls.
#[derive(Debug)]
pub struct Client {
    config: Config,
    view: View,
    /// `Some` while no usable master is known.
    lost: Option<Lost>,
    waiting: VecDeque<Entry>,
    in_flight: HashMap<u64, InFlight>,
    /// Held changes to ask about again: (due, seq) → entry.
    rechecks: BTreeMap<(Instant, u64), Entry>,
    /// The master answered busy: nothing more is sent to it before this.
    paused_until: Option<Instant>,
    /// Requests in flight at most right now (halved by a busy master, up to
    /// `config.in_flight`).
    window: usize,
    out: VecDeque<Output>,
}

impl Client {
    /// A client started at `now`, with no master known yet (it waits for one at most the
    /// timeout).
    pub fn new(config: Config, now: Instant) -> Self {
        Client {
            window: config.in_flight,
            config,
            view: View::default(),
            lost: Some(Lost {
                since: now,
                failed: None,
                probe_at: None,
            }),
            waiting: VecDeque::new(),
            in_flight: HashMap::new(),
            rechecks: BTreeMap::new(),
            paused_until: None,
            out: VecDeque::new(),
        }
    }

    /// The region's view as last pushed (pushed again only when it changes).
    pub fn handle_view(&mut self, now: Instant, view: View) {
        let before = self.view.master.clone();
        self.view = view;
        let master = self.view.master.clone();
        if master != before {
            // Requests to a master that is no longer the one are sent again to the next.
            let gone: Vec<u64> = self
                .in_flight
                .iter()
                .filter(|(_, f)| master.as_ref().is_none_or(|(m, _)| *m != f.to))
                .map(|(seq, _)| *seq)
                .collect();
            self.requeue(gone);
            // The pause and the window were the previous master's.
            self.paused_until = None;
            self.window = self.config.in_flight;
        }
        match (&master, &self.lost) {
            (None, None) => {
                self.lost = Some(Lost {
                    since: now,
                    failed: None,
                    probe_at: None,
                })
            }
            (None, Some(_)) => {}
            // The view still names the master a request failed on: it may be dead and the
            // view not caught up yet.
            (Some(m), Some(l)) if l.failed.as_ref() == Some(m) => {}
            (Some(_), _) => self.lost = None,
        }
        self.pump(now);
    }

    /// A spike whose policy decision is `consult`.
    pub fn handle_consult(&mut self, now: Instant, spike: Spike) {
        if self.waiting.len() >= self.config.waiting {
            self.autonomous(now, spike, now, "too many consultations waiting");
            return;
        }
        self.waiting.push_back(Entry {
            spike,
            recheck: false,
            queued: now,
        });
        self.pump(now);
    }

    /// The answer to the request about spike `seq` sent to `from` (or why none came).
    /// Answers to requests no longer in flight (settled, or sent again elsewhere) are
    /// ignored.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        from: &node::Id,
        seq: u64,
        answer: Result<Answer, Failure>,
    ) {
        let Some(f) = self.in_flight.remove(&seq) else {
            return;
        };
        if f.to != *from {
            self.in_flight.insert(seq, f);
            return;
        }
        match answer {
            Ok(a) => {
                self.window = (self.window + 1).min(self.config.in_flight);
                if f.probe
                    && self
                        .lost
                        .as_ref()
                        .is_some_and(|l| l.failed.as_ref().is_some_and(|(m, _)| *m == f.to))
                {
                    // The master answers again.
                    self.lost = None;
                }
                self.answered(now, f.entry, a);
            }
            Err(Failure::NotSent(why)) => {
                tracing::debug!(seq, why, "consultation not sent; asking again later");
                self.back_off(now, f.entry, BUSY_FLOOR);
            }
            Err(Failure::Busy { retry_after, why }) => {
                tracing::debug!(seq, to = %f.to, why, ?retry_after, "the master is busy; asking again later");
                self.back_off(now, f.entry, retry_after);
            }
            Err(failure) => {
                tracing::debug!(seq, to = %f.to, error = %failure, "consultation failed; asking the next master");
                let current = self.view.master.clone();
                if current.as_ref().is_some_and(|(m, _)| *m == f.to) {
                    match &mut self.lost {
                        Some(l) => {
                            l.failed = current;
                            l.probe_at = Some(now + self.config.backoff());
                        }
                        None => {
                            self.lost = Some(Lost {
                                since: now,
                                failed: current,
                                probe_at: Some(now + self.config.backoff()),
                            })
                        }
                    }
                }
                self.waiting.push_front(f.entry);
            }
        }
        self.pump(now);
    }

    /// Time passed: requests time out, the settle bound runs out, rechecks fall due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.timeout;
        let mut late: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.asked + timeout <= now)
            .map(|(s, _)| *s)
            .collect();
        late.sort_unstable();
        for seq in late {
            if let Some(f) = self.in_flight.remove(&seq) {
                if f.probe
                    && let Some(l) = &mut self.lost
                {
                    l.probe_at = Some(now);
                }
                self.autonomous(now, f.entry.spike, f.entry.queued, "timed out");
            }
        }
        let due: Vec<(Instant, u64)> = self
            .rechecks
            .range(..=(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        // Rechecks go first: they have waited a whole window already.
        for key in due.into_iter().rev() {
            if let Some(mut e) = self.rechecks.remove(&key) {
                e.queued = now;
                self.waiting.push_front(e);
            }
        }
        self.pump(now);
    }

    /// The next outcome or request, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Client::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.config.timeout;
        let requests = self.in_flight.values().map(|f| f.asked + timeout).min();
        let recheck = self.rechecks.keys().next().map(|(at, _)| *at);
        let paused = self.paused_until.filter(|_| !self.waiting.is_empty());
        let lost = self
            .lost
            .as_ref()
            .filter(|_| !self.waiting.is_empty())
            .map(|l| {
                let bound = l.since + timeout;
                match l.probe_at {
                    Some(p) if l.failed.is_some() => p.min(bound),
                    _ => bound,
                }
            });
        [requests, recheck, paused, lost]
            .into_iter()
            .flatten()
            .min()
    }

    /// Consultations waiting, and under way.
    pub fn pending(&self) -> (usize, usize) {
        (self.waiting.len(), self.in_flight.len())
    }

    /// Puts a request the master was too busy for (or the network queue refused) back in
    /// the queue, pauses sending for `retry_after` (clamped to [`BUSY_FLOOR`] and the
    /// timeout), and halves the window once per pause.
    fn back_off(&mut self, now: Instant, entry: Entry, retry_after: Duration) {
        let until = now + retry_after.clamp(BUSY_FLOOR, self.config.timeout);
        if self.paused_until.is_none_or(|p| p <= now) {
            self.window = (self.window / 2).max(1);
        }
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        if entry.recheck {
            self.waiting.push_front(entry);
            return;
        }
        // Back in seq order among what waits (other busy answers come back too).
        let at = self
            .waiting
            .iter()
            .position(|e| !e.recheck && e.spike.seq > entry.spike.seq)
            .unwrap_or(self.waiting.len());
        self.waiting.insert(at, entry);
    }

    /// Puts requests back in the queue: rechecks first, then by seq (the order they came
    /// in), with what waits.
    fn requeue(&mut self, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        let back = seqs.into_iter().filter_map(|s| self.in_flight.remove(&s));
        let mut all: Vec<Entry> = back
            .map(|f| f.entry)
            .chain(self.waiting.drain(..))
            .collect();
        all.sort_by_key(|e| (!e.recheck, e.spike.seq));
        self.waiting = all.into();
    }

    /// Sends what waits while a master is usable and there is room; decides what waits
    /// autonomously once the view has settled without one.
    fn pump(&mut self, now: Instant) {
        if let Some(l) = self.lost.clone() {
            if l.since + self.config.timeout <= now {
                let why = match &l.failed {
                    Some((m, _)) => format!("the master {m} did not answer and no other came up"),
                    None => "no master known for the region".to_string(),
                };
                for e in std::mem::take(&mut self.waiting) {
                    self.autonomous(now, e.spike, e.queued, &why);
                }
                // Settled without a master. A master the view still names is tried again
                // for what comes next.
                if l.failed.is_some() {
                    self.lost = None;
                }
                return;
            }
            // A master that failed a request, still named by the view: one probe at a time.
            if let (Some(m), Some(at)) = (&l.failed, l.probe_at)
                && at <= now
                && self.view.master.as_ref() == Some(m)
                && let Some(e) = self.waiting.pop_front()
            {
                if let Some(l) = &mut self.lost {
                    l.probe_at = None;
                }
                self.send(now, e, m.0.clone(), true);
            }
            return;
        }
        let Some((master, _)) = self.view.master.clone() else {
            return;
        };
        match self.paused_until {
            Some(p) if p > now => return,
            Some(_) => self.paused_until = None,
            None => {}
        }
        while self.in_flight.len() < self.window {
            let Some(e) = self.waiting.pop_front() else {
                return;
            };
            self.send(now, e, master.clone(), false);
        }
    }

    fn send(&mut self, now: Instant, e: Entry, to: node::Id, probe: bool) {
        let target = if to == self.config.own {
            Target::Local
        } else {
            Target::Peer(to.clone())
        };
        self.out.push_back(Output::Ask {
            to: target,
            region: self.view.region.clone(),
            spike: e.spike.clone(),
            recheck: e.recheck,
        });
        self.in_flight.insert(
            e.spike.seq,
            InFlight {
                entry: e,
                to,
                asked: now,
                probe,
            },
        );
    }

    fn answered(&mut self, now: Instant, e: Entry, a: Answer) {
        let latency_us = now.saturating_duration_since(e.queued).as_micros() as u64;
        let rule = Rule::parse(&a.rule);
        if a.held
            && !e.recheck
            && let Some(after) = a.recheck_after_ms
        {
            let due = now + Duration::from_millis(after);
            self.rechecks.insert(
                (due, e.spike.seq),
                Entry {
                    spike: e.spike.clone(),
                    recheck: true,
                    queued: due,
                },
            );
        }
        let alert = match (&a.decision, &rule) {
            (Decision::Violation, Rule::Fleet(FleetRule::Unresolved)) => Some(Alert::Unresolved),
            // A fleet event's own alert stands for every server in it.
            (Decision::Violation, Rule::Fleet(_)) => None,
            (Decision::Violation, _) => Some(Alert::Violation),
            _ => None,
        };
        self.out.push_back(Output::Settled {
            spike: e.spike,
            settled: Settled {
                decision: a.decision,
                rule: a.rule,
                reason: a.reason,
                by: "master".into(),
                region: Some(a.region),
                term: Some(a.term),
                policy: Some(a.policy),
                held: a.held,
                latency_us,
            },
            rule,
            alert,
        });
    }

    /// No master answered: the conservative default decides, marked autonomous.
    fn autonomous(&mut self, now: Instant, spike: Spike, queued: Instant, why: &str) {
        let decision = self.config.fallback;
        tracing::warn!(
            seq = spike.seq,
            why,
            decision = decision.as_str(),
            "consultation failed: deciding autonomously"
        );
        let alert = (decision == Decision::Violation).then_some(Alert::Violation);
        self.out.push_back(Output::Settled {
            spike,
            settled: Settled {
                decision,
                rule: Rule::Autonomous.to_string(),
                reason: format!("no answer from the region's master ({why}): conservative default"),
                by: "autonomous".into(),
                region: None,
                term: None,
                policy: None,
                held: false,
                latency_us: now.saturating_duration_since(queued).as_micros() as u64,
            },
            rule: Rule::Autonomous,
            alert,
        });
    }
}

#[cfg(test)]
mod tests;
