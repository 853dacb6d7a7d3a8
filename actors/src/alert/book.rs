//! The alert book: the latest alerts by key with their repeats counted (what
//! `GET /api/v1/alerts` lists), and one bounded delivery queue per sink with retry and
//! exponential backoff.
//!
//! What is delivered is decided by the alert-lifecycle engine (`crate::alerting`): the
//! caller queues each of its notifications for the sink of its receiver
//! ([`Book::queue`]). The book only carries them: sans-IO, it takes the wall-clock time
//! (Unix milliseconds) and the outcome of each delivery, says which batches are due and
//! when to look again ([`Book::poll_timeout`]). It never waits on a sink: a sink that is
//! down only grows its own queue, up to its bound, beyond which its oldest items are
//! dropped and counted.
//!
//! Accounting, per sink: every item handed to it is, at any time, delivered, rejected
//! (the sink refused it for good), dropped (queue full), queued or in flight. Nothing is
//! lost without being counted.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::Alert;

/// The book's settings (sinks apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Distinct keys kept for the API; the least recently raised is forgotten first.
    pub ring: usize,
    /// Seeds the retry jitter (so that nodes of a fleet do not all retry a shared sink in
    /// step after it comes back).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ring: 1000,
            seed: 1,
        }
    }
}

/// One sink's queue and retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    pub name: String,
    /// Items waiting for this sink, in flight included (at least 1).
    pub queue: usize,
    /// At most this many items per delivery (at least 1).
    pub batch: usize,
    /// The first retry waits this long; each failure in a row doubles the wait ...
    pub retry_min_ms: u64,
    /// ... up to this.
    pub retry_max_ms: u64,
}

/// An alert as kept: the latest raise of its key, with its repeats counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub alert: Alert,
    /// Raises of this key since it was first kept.
    pub count: u64,
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
}

/// Items due for one sink. The caller delivers them and reports with [`Book::done`].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// The sink's position in the list the book was made with.
    pub sink: usize,
    pub ticket: u64,
    pub items: Vec<T>,
}

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink took every item of the batch.
    Delivered,
    /// It took none (down, refused the request, timed out): all are retried.
    Failed(String),
    /// It took some. Items at the `retry` positions of the batch failed and are retried;
    /// those at the `rejected` positions were refused for good and are counted, not
    /// retried.
    Partly {
        retry: Vec<usize>,
        rejected: Vec<usize>,
        error: String,
    },
}

/// One sink's counters, as the API and the metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    /// Waiting, in flight included.
    pub queued: usize,
    pub in_flight: usize,
    /// Notifications the sink took.
    pub delivered: u64,
    /// Notifications whose delivery failed (each attempt counts; they are retried).
    pub failed: u64,
    /// Notifications the sink refused for good.
    pub rejected: u64,
    /// Notifications dropped unsent because the queue was full (the oldest go first).
    pub dropped: u64,
    /// Failed deliveries in a row (0: the sink is healthy).
    pub failures_in_a_row: u32,
    pub last_error: Option<String>,
    pub last_error_unix_ms: Option<u64>,
    pub last_delivered_unix_ms: Option<u64>,
    /// When the next attempt may start, while retrying.
    pub retry_at_unix_ms: Option<u64>,
}

/// The book's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Raises by action (`policy_violation`, `unauthorized_access`, ...), repeats included.
    pub raised: BTreeMap<String, u64>,
    /// Raises of a key already kept (counted in its entry).
    pub repeats: u64,
    /// Distinct keys kept.
    pub kept: usize,
    pub sinks: Vec<SinkStatus>,
}

struct Kept {
    entry: Entry,
    /// Position in raise order (the ring's order).
    touched: u64,
}

#[derive(Debug)]
struct Sink<T> {
    config: SinkConfig,
    queue: VecDeque<T>,
    in_flight: Option<(u64, Vec<T>)>,
    not_before: u64,
    status: SinkStatus,
}

impl<T> Sink<T> {
    fn pending(&self) -> usize {
        self.queue.len() + self.in_flight.as_ref().map_or(0, |(_, b)| b.len())
    }

    /// Queues `entry`, dropping the oldest waiting item if the queue is full (or `entry`
    /// itself if everything queued is in flight and cannot be recalled).
    fn push(&mut self, entry: T) {
        if self.pending() >= self.config.queue {
            self.status.dropped += 1;
            if self.queue.pop_front().is_none() {
                return;
            }
        }
        self.queue.push_back(entry);
    }
}

/// See the module documentation. `T` is what sinks are handed (the engine's
/// notifications at run time).
pub struct Book<T> {
    config: Config,
    kept: HashMap<String, Kept>,
    order: BTreeMap<u64, String>,
    next_touch: u64,
    sinks: Vec<Sink<T>>,
    next_ticket: u64,
    raised: BTreeMap<String, u64>,
    repeats: u64,
    rng: u64,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Book<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("config", &self.config)
            .field("kept", &self.kept.len())
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> Book<T> {
    /// A book delivering to `sinks`, in this order. Zero bounds are taken as 1, a batch
    /// larger than its queue as the queue, a maximum retry wait below the minimum as the
    /// minimum.
    pub fn new(config: Config, sinks: Vec<SinkConfig>) -> Book<T> {
        let sinks = sinks
            .into_iter()
            .map(|mut c| {
                c.queue = c.queue.max(1);
                c.batch = c.batch.clamp(1, c.queue);
                c.retry_min_ms = c.retry_min_ms.max(1);
                c.retry_max_ms = c.retry_max_ms.max(c.retry_min_ms);
                Sink {
                    status: SinkStatus {
                        name: c.name.clone(),
                        ..SinkStatus::default()
                    },
                    config: c,
                    queue: VecDeque::new(),
                    in_flight: None,
                    not_before: 0,
                }
            })
            .collect();
        Book {
            rng: config.seed | 1,
            config: Config {
                ring: config.ring.max(1),
                ..config
            },
            kept: HashMap::new(),
            order: BTreeMap::new(),
            next_touch: 0,
            sinks,
            next_ticket: 0,
            raised: BTreeMap::new(),
            repeats: 0,
        }
    }

    /// Keeps `alert` as the latest raise of its key; returns its entry (repeats counted).
    pub fn raise(&mut self, now_unix_ms: u64, alert: Alert) -> Entry {
        *self.raised.entry(alert.action.clone()).or_default() += 1;
        let touch = self.next_touch;
        self.next_touch += 1;
        if let Some(k) = self.kept.get_mut(&alert.key) {
            self.repeats += 1;
            self.order.remove(&k.touched);
            self.order.insert(touch, alert.key.clone());
            k.touched = touch;
            let e = &mut k.entry;
            e.count += 1;
            e.last_unix_ms = e.last_unix_ms.max(now_unix_ms);
            e.alert = alert;
            return e.clone();
        }
        let entry = Entry {
            alert,
            count: 1,
            first_unix_ms: now_unix_ms,
            last_unix_ms: now_unix_ms,
        };
        let key = entry.alert.key.clone();
        self.order.insert(touch, key.clone());
        self.kept.insert(
            key,
            Kept {
                entry: entry.clone(),
                touched: touch,
            },
        );
        while self.kept.len() > self.config.ring {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.kept.remove(&oldest);
        }
        entry
    }

    /// Queues `item` for sink number `sink` (ignored if there is no such sink).
    pub fn queue(&mut self, sink: usize, item: T) {
        if let Some(s) = self.sinks.get_mut(sink) {
            s.push(item);
        }
    }

    /// The position of the sink named `name`.
    pub fn sink(&self, name: &str) -> Option<usize> {
        self.sinks.iter().position(|s| s.config.name == name)
    }

    /// The batches due now: at most one in flight per sink, none before its retry time.
    pub fn poll(&mut self, now_unix_ms: u64) -> Vec<Batch<T>> {
        let mut out = Vec::new();
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            // No wait is longer than the maximum: a retry time further ahead means the
            // wall clock was set back, and the sink must not sit idle until it catches up.
            if sink.not_before > now_unix_ms.saturating_add(sink.config.retry_max_ms) {
                sink.not_before = now_unix_ms;
            }
            if sink.in_flight.is_some() || sink.queue.is_empty() || now_unix_ms < sink.not_before {
                continue;
            }
            let n = sink.config.batch.min(sink.queue.len());
            let items: Vec<T> = sink.queue.drain(..n).collect();
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            sink.in_flight = Some((ticket, items.clone()));
            out.push(Batch {
                sink: i,
                ticket,
                items,
            });
        }
        out
    }

    /// The outcome of the delivery of batch `ticket`. An unknown ticket is ignored
    /// (returns false).
    pub fn done(&mut self, now_unix_ms: u64, ticket: u64, outcome: Outcome) -> bool {
        let Some(sink) = self
            .sinks
            .iter_mut()
            .find(|s| s.in_flight.as_ref().is_some_and(|(t, _)| *t == ticket))
        else {
            return false;
        };
        let Some((_, batch)) = sink.in_flight.take() else {
            return false;
        };
        let n = batch.len() as u64;
        let (retry, rejected, error) = match outcome {
            Outcome::Delivered => (Vec::new(), 0, None),
            Outcome::Failed(e) => (batch, 0, Some(e)),
            Outcome::Partly {
                retry,
                rejected,
                error,
            } => {
                let mut again = Vec::new();
                let mut refused = 0u64;
                for (i, entry) in batch.into_iter().enumerate() {
                    if retry.contains(&i) {
                        again.push(entry);
                    } else if rejected.contains(&i) {
                        refused += 1;
                    }
                }
                (again, refused, Some(error))
            }
        };
        let st = &mut sink.status;
        let failed = retry.len() as u64;
        st.delivered += n - failed - rejected;
        st.failed += failed;
        st.rejected += rejected;
        if n > failed + rejected {
            st.last_delivered_unix_ms = Some(now_unix_ms);
        }
        if let Some(e) = error {
            st.last_error = Some(e);
            st.last_error_unix_ms = Some(now_unix_ms);
        }
        if retry.is_empty() {
            st.failures_in_a_row = 0;
            sink.not_before = now_unix_ms;
        } else {
            st.failures_in_a_row = st.failures_in_a_row.saturating_add(1);
            // Back at the front, in their order: they are the oldest. The bound holds:
            // they were counted while in flight.
            for entry in retry.into_iter().rev() {
                sink.queue.push_front(entry);
            }
            let wait = backoff(&sink.config, st.failures_in_a_row, &mut self.rng);
            sink.not_before = now_unix_ms.saturating_add(wait);
        }
        true
    }

    /// When [`Book::poll`] has something to hand out next (`None`: nothing waits, or every
    /// sink with items waiting has a delivery in flight).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.sinks
            .iter()
            .filter(|s| s.in_flight.is_none() && !s.queue.is_empty())
            .map(|s| s.not_before)
            .min()
    }

    /// Kept alerts last raised after `since_unix_ms`, newest first, at most `limit`.
    pub fn latest(&self, since_unix_ms: u64, limit: usize) -> Vec<Entry> {
        self.order
            .values()
            .rev()
            .filter_map(|key| self.kept.get(key))
            .filter(|k| k.entry.last_unix_ms > since_unix_ms)
            .take(limit)
            .map(|k| k.entry.clone())
            .collect()
    }

    /// Everything not yet delivered, per sink (by name), oldest first: what a restart must
    /// deliver (a batch in flight counts: its outcome is not known yet).
    pub fn pending(&self) -> Vec<(String, T)> {
        let mut out = Vec::new();
        for s in &self.sinks {
            let flying = s.in_flight.iter().flat_map(|(_, b)| b.iter());
            for item in flying.chain(s.queue.iter()) {
                out.push((s.config.name.clone(), item.clone()));
            }
        }
        out
    }

    /// The kept entry of `key`.
    pub fn entry(&self, key: &str) -> Option<Entry> {
        self.kept.get(key).map(|k| k.entry.clone())
    }

    pub fn status(&self) -> Status {
        Status {
            raised: self.raised.clone(),
            repeats: self.repeats,
            kept: self.kept.len(),
            sinks: self
                .sinks
                .iter()
                .map(|s| SinkStatus {
                    queued: s.pending(),
                    in_flight: s.in_flight.as_ref().map_or(0, |(_, b)| b.len()),
                    retry_at_unix_ms: (s.status.failures_in_a_row > 0).then_some(s.not_before),
                    ..s.status.clone()
                })
                .collect(),
        }
    }
}

/// The wait before retry number `failures` (1: the first): the minimum doubled per
/// failure, capped, less up to a fifth at random (at least 1 ms).
fn backoff(c: &SinkConfig, failures: u32, rng: &mut u64) -> u64 {
    let doubled = 1u64
        .checked_shl(failures.saturating_sub(1))
        .map_or(u64::MAX, |f| c.retry_min_ms.saturating_mul(f));
    let wait = doubled.min(c.retry_max_ms);
    // xorshift64: deterministic for a seed, which keeps tests reproducible.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let jitter = *rng % (wait / 5 + 1);
    (wait - jitter).max(1)
}
