//! Send-on-delta for metrics: a value is sent only when it has moved beyond its deadband
//! since the last value sent, or when the metric has been silent for `max_silence`.
//!
//! The receiver holds the last value it got (zero-order hold). Because a value is sent as
//! soon as it leaves the band around the last one sent, the receiver's picture is never
//! further from the truth than the deadband (see the property test below).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How far a value may drift before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadband {
    /// In the metric's unit.
    Absolute(f64),
    /// In percent of the last value sent (a value of 0 sends every change).
    Percent(f64),
}

impl Deadband {
    /// The band's half-width around `sent`.
    pub fn width(&self, sent: f64) -> f64 {
        match *self {
            Deadband::Absolute(w) => w.abs(),
            Deadband::Percent(p) => (p.abs() / 100.0) * sent.abs(),
        }
    }
}

/// Settings of one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub deadband: Deadband,
    pub max_silence: Duration,
}

/// One metric's sender.
#[derive(Debug, Clone)]
pub struct Channel {
    config: Config,
    last: Option<(f64, Instant)>,
}

impl Channel {
    pub fn new(config: Config) -> Self {
        Channel { config, last: None }
    }

    /// Returns the value to send, if this sample must be sent.
    pub fn observe(&mut self, now: Instant, value: f64) -> Option<f64> {
        let send = match self.last {
            None => true,
            Some((sent, at)) => {
                now.saturating_duration_since(at) >= self.config.max_silence
                    || sent.is_nan() != value.is_nan()
                    || (value - sent).abs() > self.config.deadband.width(sent)
            }
        };
        if send {
            self.last = Some((value, now));
            Some(value)
        } else {
            None
        }
    }

    /// When the metric must be sent again even if it does not move.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.last.map(|(_, at)| at + self.config.max_silence)
    }

    /// The value the receiver currently holds.
    pub fn last_sent(&self) -> Option<f64> {
        self.last.map(|(v, _)| v)
    }
}

/// Send-on-delta over many metrics, each with its own settings or a default.
#[derive(Debug, Clone)]
pub struct Encoder {
    default: Config,
    overrides: BTreeMap<String, Config>,
    channels: BTreeMap<String, Channel>,
}

impl Encoder {
    pub fn new(default: Config, overrides: BTreeMap<String, Config>) -> Self {
        Encoder {
            default,
            overrides,
            channels: BTreeMap::new(),
        }
    }

    /// One sample of metric `name`: the value to send, if any.
    pub fn observe(&mut self, now: Instant, name: &str, value: f64) -> Option<f64> {
        if let Some(c) = self.channels.get_mut(name) {
            return c.observe(now, value);
        }
        let config = self.overrides.get(name).copied().unwrap_or(self.default);
        let mut c = Channel::new(config);
        let out = c.observe(now, value);
        self.channels.insert(name.to_string(), c);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn sends_first_value_moves_beyond_band_and_after_silence() {
        let t0 = Instant::now();
        let mut c = Channel::new(Config {
            deadband: Deadband::Absolute(2.0),
            max_silence: 60 * SEC,
        });
        assert_eq!(c.observe(t0, 10.0), Some(10.0));
        assert_eq!(c.observe(t0 + SEC, 11.9), None);
        assert_eq!(
            c.observe(t0 + 2 * SEC, 8.0),
            None,
            "exactly on the band edge"
        );
        assert_eq!(c.observe(t0 + 3 * SEC, 12.5), Some(12.5));
        assert_eq!(c.poll_timeout(), Some(t0 + 63 * SEC));
        assert_eq!(
            c.observe(t0 + 63 * SEC, 12.5),
            Some(12.5),
            "heartbeat after silence"
        );
    }

    #[test]
    fn percent_band_follows_the_value_and_nan_is_a_change() {
        let t0 = Instant::now();
        let mut c = Channel::new(Config {
            deadband: Deadband::Percent(10.0),
            max_silence: 600 * SEC,
        });
        c.observe(t0, 100.0);
        assert_eq!(c.observe(t0, 109.0), None);
        assert_eq!(c.observe(t0, 111.0), Some(111.0));
        assert_eq!(c.observe(t0, f64::NAN).map(f64::is_nan), Some(true));
        assert_eq!(c.observe(t0, f64::NAN), None);
        assert_eq!(c.observe(t0, 5.0), Some(5.0));
    }

    #[test]
    fn each_metric_has_its_own_band() {
        let t0 = Instant::now();
        let default = Config {
            deadband: Deadband::Absolute(1.0),
            max_silence: 60 * SEC,
        };
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "disk".to_string(),
            Config {
                deadband: Deadband::Absolute(10.0),
                ..default
            },
        );
        let mut e = Encoder::new(default, overrides);
        e.observe(t0, "cpu", 0.0);
        e.observe(t0, "disk", 0.0);
        assert_eq!(e.observe(t0, "cpu", 5.0), Some(5.0));
        assert_eq!(e.observe(t0, "disk", 5.0), None);
    }

    fn deadband() -> impl Strategy<Value = Deadband> {
        prop_oneof![
            (0.0f64..50.0).prop_map(Deadband::Absolute),
            (0.0f64..30.0).prop_map(Deadband::Percent),
        ]
    }

    proptest! {
        /// The receiver's zero-order hold never differs from the truth by more than the
        /// deadband (around the value it holds), and never goes silent past max_silence.
        #[test]
        fn reconstruction_error_stays_within_the_deadband(
            band in deadband(),
            silence_ms in 1u64..10_000,
            series in proptest::collection::vec((-1e6f64..1e6, 0u64..5_000), 1..400),
        ) {
            let t0 = Instant::now();
            let max_silence = Duration::from_millis(silence_ms);
            let mut c = Channel::new(Config { deadband: band, max_silence });
            let mut now = t0;
            let mut held: Option<(f64, Instant)> = None;
            for (truth, gap_ms) in series {
                now += Duration::from_millis(gap_ms);
                if let Some(v) = c.observe(now, truth) {
                    held = Some((v, now));
                }
                let (r, at) = held.expect("the first sample is always sent");
                prop_assert!((truth - r).abs() <= band.width(r) + f64::EPSILON * truth.abs().max(1.0),
                    "truth {truth}, held {r}, band {band:?}");
                prop_assert!(now.duration_since(at) < max_silence || at == now);
            }
        }
    }
}
