//! Cross-fleet anomaly detection: is one of this node's metrics far from what its peers of
//! the same role, in the same region, report for that metric?
//!
//! The detector holds the latest value of every metric of every origin (this node's own
//! metric spikes and the region's, heard over gossip; metrics are sent on delta, so the
//! last value received is the value now) and when it arrived. At each [`Detector::tick`]
//! it scores each of this node's metrics against the fresh values of its same-role peers
//! (never including itself) with a robust z-score, see [`score`]. A metric whose |z| stays
//! above the threshold for `persist` raises one anomaly [`Observation`] for the spike
//! encoder; the metric then stays quiet for `cooldown` (a deviation that lasts is raised
//! again once per cooldown). A tick where the metric is back within the threshold, or has
//! too few peers to be judged, clears the deviation: persistence starts over.
//!
//! It owns no clock and no I/O: arrival times and ticks are the caller's `now`. It does not
//! decide what an anomaly means; the policy does (anomaly spikes are violations by default).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node;
use crate::spike::{Change, FieldChange, Kind, Layer, Observation, Severity, Spike, Value};

/// Makes the median absolute deviation an estimate of the standard deviation for normally
/// distributed values.
pub const MAD_SCALE: f64 = 1.4826;

/// The smallest scale a z-score is divided by, so that it stays finite when every peer
/// reports exactly 0.
pub const MIN_SCALE: f64 = 1e-9;

/// At most this many metrics are kept per origin: a peer sending made-up metric names
/// cannot grow the table without bound.
pub const MAX_METRICS_PER_ORIGIN: usize = 1024;

/// At most this many origins are kept (fresh values of more are dropped, counted).
pub const MAX_ORIGINS: usize = 4096;

#[derive(Debug, Clone)]
pub struct Config {
    /// Peers with a fresh value needed before a metric is judged at all.
    pub min_peers: usize,
    /// |z| above this deviates.
    pub threshold: f64,
    /// How long a deviation must last before it is raised.
    pub persist: Duration,
    /// After a raise, how long the metric stays quiet.
    pub cooldown: Duration,
    /// A value older than this is ignored (it must exceed the senders' longest silence).
    pub stale: Duration,
    /// The scale is never below this fraction of |median| (see [`score`]).
    pub min_scale_ratio: f64,
    /// Which metrics are judged (globs over names); empty: all of them.
    pub metrics: Vec<glob::Pattern>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_peers: 3,
            threshold: 3.0,
            persist: Duration::from_secs(30),
            cooldown: Duration::from_secs(600),
            stale: Duration::from_secs(180),
            min_scale_ratio: 0.05,
            metrics: Vec::new(),
        }
    }
}

/// One metric of this node against its peers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub value: f64,
    pub median: f64,
    /// The median absolute deviation of the peers' values from their median.
    pub mad: f64,
    /// What `value - median` is divided by.
    pub scale: f64,
    pub z: f64,
    pub peers: usize,
}

/// The median of `v` (sorted in place); `None` when empty.
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Scores `value` against `peers` (finite values; the caller leaves non-finite ones out):
/// `z = (value - median) / scale` with `scale = max(1.4826 · MAD, min_scale_ratio · |median|,
/// MIN_SCALE)`.
///
/// Why the floor: when at least half the peers agree exactly (identical fake or idle
/// hosts, a metric stuck at a round number), the MAD is 0 and any difference at all would be
/// an infinite deviation. The floor relative to the median says instead that a difference
/// of less than `threshold × min_scale_ratio` of the median (15 % with the defaults) is
/// never anomalous, however closely the peers agree; it also keeps send-on-delta rounding
/// (peers hold values up to a deadband old) from looking like a deviation. When every peer
/// reports exactly 0, the scale is [`MIN_SCALE`]: any other value deviates, which is what
/// such a fleet says. No division by zero, no NaN: `None` only without peers.
pub fn score(value: f64, peers: &[f64], min_scale_ratio: f64) -> Option<Score> {
    let mut v: Vec<f64> = peers.to_vec();
    let med = median(&mut v)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    let mad = median(&mut dev)?;
    let scale = (MAD_SCALE * mad)
        .max(min_scale_ratio.abs() * med.abs())
        .max(MIN_SCALE);
    let z = (value - med) / scale;
    Some(Score {
        value,
        median: med,
        mad,
        scale,
        // Finite inputs can still overflow (1e308 apart): clamp rather than carry infinity.
        z: z.clamp(-f64::MAX, f64::MAX),
        peers: peers.len(),
    })
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    value: f64,
    seen: Instant,
}

/// What the detector knows of one of this node's metrics.
#[derive(Debug, Clone, Default)]
struct Track {
    /// The latest score; `None` when there were too few peers.
    score: Option<Score>,
    /// Peers with a fresh value at the latest tick.
    peers: usize,
    deviating_since: Option<Instant>,
    last_raised: Option<Instant>,
    raised: u64,
    /// An anomaly was raised and the metric has not been back within bounds since.
    open: bool,
}

/// One of this node's metrics, as `GET /api/v1/anomalies` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub metric: String,
    /// This node's value, the peers' median and MAD, and the z-score; absent while the
    /// metric has fewer than `min_peers` peers with a fresh value.
    pub score: Option<Score>,
    pub peers: usize,
    pub deviating_since_unix_ms: Option<u64>,
    pub last_raised_unix_ms: Option<u64>,
    /// Anomalies raised for this metric since start.
    pub raised: u64,
}

/// The detector's state, for the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub role: String,
    pub min_peers: usize,
    pub threshold: f64,
    pub persist_ms: u64,
    pub cooldown_ms: u64,
    pub stale_ms: u64,
    /// Origins (this node included) with at least one value held.
    pub origins: usize,
    /// Anomalies raised since start.
    pub raised: u64,
    /// Metric values refused: not finite, or beyond the per-origin or origin limits, or
    /// from a spike whose origin is not its sender.
    pub refused: u64,
    pub metrics: Vec<Entry>,
}

/// The detector of one node.
#[derive(Debug)]
pub struct Detector {
    config: Config,
    own: node::Id,
    role: String,
    /// Each origin's role, as the membership view knows it.
    roles: BTreeMap<node::Id, String>,
    values: BTreeMap<node::Id, BTreeMap<String, Sample>>,
    tracks: BTreeMap<String, Track>,
    raised: u64,
    refused: u64,
}

impl Detector {
    pub fn new(config: Config, own: node::Id, role: String) -> Self {
        Detector {
            config,
            own,
            role,
            roles: BTreeMap::new(),
            values: BTreeMap::new(),
            tracks: BTreeMap::new(),
            raised: 0,
            refused: 0,
        }
    }

    /// The roles of the region's members (replaces the last map). Origins not in it are
    /// nobody's peers; their values are kept until stale, in case the map lags behind.
    pub fn set_roles(&mut self, roles: BTreeMap<node::Id, String>) {
        self.roles = roles;
    }

    /// One metric value of `origin`, received now.
    pub fn observe(&mut self, now: Instant, origin: &node::Id, metric: &str, value: f64) {
        if !value.is_finite() {
            self.refused += 1;
            return;
        }
        if !self.values.contains_key(origin) && self.values.len() >= MAX_ORIGINS {
            self.refused += 1;
            return;
        }
        let held = self.values.entry(origin.clone()).or_default();
        if !held.contains_key(metric) && held.len() >= MAX_METRICS_PER_ORIGIN {
            self.refused += 1;
            return;
        }
        held.insert(metric.to_string(), Sample { value, seen: now });
    }

    /// The metric samples among `spikes`, received now from `from` (this node's own id for
    /// its own spikes, else the gossip message's signed author). A spike whose origin is
    /// not its sender is refused: a node speaks only for its own metrics. Other kinds of
    /// spikes are ignored.
    pub fn spikes(&mut self, now: Instant, from: &node::Id, spikes: &[Spike]) {
        for s in spikes {
            if s.kind != Kind::Metric || s.change != Change::Sample {
                continue;
            }
            let Some(value) = crate::series::value(s) else {
                self.refused += 1;
                continue;
            };
            if s.origin != *from {
                self.refused += 1;
                continue;
            }
            self.observe(now, from, &s.subject, value);
        }
    }

    fn judged(&self, metric: &str) -> bool {
        self.config.metrics.is_empty() || self.config.metrics.iter().any(|p| p.matches(metric))
    }

    fn fresh(&self, now: Instant, s: &Sample) -> bool {
        now.saturating_duration_since(s.seen) <= self.config.stale
    }

    /// The fresh values of `metric` of this node's same-role peers.
    fn peer_values(&self, now: Instant, metric: &str) -> Vec<f64> {
        self.values
            .iter()
            .filter(|(origin, _)| {
                **origin != self.own && self.roles.get(*origin).is_some_and(|r| *r == self.role)
            })
            .filter_map(|(_, held)| held.get(metric))
            .filter(|s| self.fresh(now, s))
            .map(|s| s.value)
            .collect()
    }

    /// Scores every metric of this node and returns the anomalies to raise now.
    pub fn tick(&mut self, now: Instant) -> Vec<Observation> {
        let stale = self.config.stale;
        for held in self.values.values_mut() {
            held.retain(|_, s| now.saturating_duration_since(s.seen) <= stale);
        }
        self.values.retain(|_, held| !held.is_empty());
        let own: Vec<(String, f64)> = self
            .values
            .get(&self.own)
            .map(|held| {
                held.iter()
                    .filter(|(m, _)| self.judged(m))
                    .map(|(m, s)| (m.clone(), s.value))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut current = std::collections::BTreeSet::new();
        for (metric, value) in own {
            let peers = self.peer_values(now, &metric);
            let score = (peers.len() >= self.config.min_peers.max(1))
                .then(|| score(value, &peers, self.config.min_scale_ratio))
                .flatten();
            let (threshold, persist, cooldown) = (
                self.config.threshold,
                self.config.persist,
                self.config.cooldown,
            );
            let track = self.tracks.entry(metric.clone()).or_default();
            track.score = score;
            track.peers = peers.len();
            match score {
                Some(s) if s.z.abs() > threshold => {
                    let since = *track.deviating_since.get_or_insert(now);
                    let persisted = now.saturating_duration_since(since) >= persist;
                    let quiet = track
                        .last_raised
                        .is_none_or(|t| now.saturating_duration_since(t) >= cooldown);
                    if persisted && quiet {
                        track.last_raised = Some(now);
                        track.raised += 1;
                        track.open = true;
                        self.raised += 1;
                        out.push(observation(&metric, &s, threshold, &self.role));
                    }
                }
                // Back within bounds after an anomaly: its end, so that its alert resolves.
                Some(s) if track.open => {
                    track.open = false;
                    track.deviating_since = None;
                    out.push(ended(&metric, &s, threshold, &self.role));
                }
                // Back within the threshold, or too few peers to tell: start over.
                _ => track.deviating_since = None,
            }
            current.insert(metric);
        }
        // A metric this node no longer reports is forgotten once its cooldown is over.
        let cooldown = self.config.cooldown;
        self.tracks.retain(|m, t| {
            if current.contains(m) {
                return true;
            }
            t.score = None;
            t.peers = 0;
            t.deviating_since = None;
            t.last_raised
                .is_some_and(|r| now.saturating_duration_since(r) < cooldown)
        });
        out
    }

    /// When a tick could next raise without new input: a deviation reaching its
    /// persistence or the end of its cooldown. (Values going stale change scores too; the
    /// caller ticks regularly for those.)
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter_map(|t| {
                let since = t.deviating_since?;
                let ready = since + self.config.persist;
                Some(match t.last_raised {
                    Some(r) => ready.max(r + self.config.cooldown),
                    None => ready,
                })
            })
            .min()
    }

    /// Anomalies raised since start.
    pub fn raised(&self) -> u64 {
        self.raised
    }

    /// The state for the API; `now_unix_ms` is the wall clock at `now`.
    pub fn report(&self, now: Instant, now_unix_ms: u64) -> Report {
        let unix = |t: Instant| {
            now_unix_ms.saturating_sub(crate::heartbeat::millis(now.saturating_duration_since(t)))
        };
        let ms = crate::heartbeat::millis;
        Report {
            role: self.role.clone(),
            min_peers: self.config.min_peers,
            threshold: self.config.threshold,
            persist_ms: ms(self.config.persist),
            cooldown_ms: ms(self.config.cooldown),
            stale_ms: ms(self.config.stale),
            origins: self.values.len(),
            raised: self.raised,
            refused: self.refused,
            metrics: self
                .tracks
                .iter()
                .map(|(m, t)| Entry {
                    metric: m.clone(),
                    score: t.score,
                    peers: t.peers,
                    deviating_since_unix_ms: t.deviating_since.map(unix),
                    last_raised_unix_ms: t.last_raised.map(unix),
                    raised: t.raised,
                })
                .collect(),
        }
    }
}

/// The end of the anomaly of `metric`: back within bounds (its alert resolves).
fn ended(metric: &str, s: &Score, threshold: f64, role: &str) -> Observation {
    let mut o = observation(metric, s, threshold, role);
    o.change = Change::Removed;
    o.severity = Severity::Info;
    o
}

/// The anomaly observation for `metric`.
fn observation(metric: &str, s: &Score, threshold: f64, role: &str) -> Observation {
    let mut o = Observation::new(Kind::Anomaly, Change::Added, metric, Layer::Poll);
    o.severity = Severity::High;
    let now = |v: Value| FieldChange {
        before: None,
        after: Some(v),
    };
    o.fields.insert("value".into(), now(Value::Float(s.value)));
    o.fields
        .insert("median".into(), now(Value::Float(s.median)));
    o.fields.insert("mad".into(), now(Value::Float(s.mad)));
    o.fields.insert("z".into(), now(Value::Float(s.z)));
    o.fields.insert(
        "peers".into(),
        now(Value::Int(i64::try_from(s.peers).unwrap_or(i64::MAX))),
    );
    o.fields
        .insert("threshold".into(), now(Value::Float(threshold)));
    o.fields.insert("role".into(), FieldChange::fact(role));
    o
}

#[cfg(test)]
mod tests;
