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
    /// Whichever is wider: a percentage that does not shrink to nothing near zero (an idle
    /// network interface's rate).
    Larger { percent: f64, absolute: f64 },
}

impl Deadband {
    /// The band's half-width around `sent`.
    pub fn width(&self, sent: f64) -> f64 {
        match *self {
            Deadband::Absolute(w) => w.abs(),
            Deadband::Percent(p) => (p.abs() / 100.0) * sent.abs(),
            Deadband::Larger { percent, absolute } => {
                Deadband::Percent(percent).width(sent).max(absolute.abs())
            }
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

impl std::str::FromStr for Deadband {
    type Err = String;

    /// `"0.25"`: absolute, in the metric's unit; `"2%"`: percent of the last value sent;
    /// `"50% or 10240"`: whichever is wider.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some((a, b)) = text.split_once(" or ") {
            return match (a.parse()?, b.parse()?) {
                (Deadband::Percent(percent), Deadband::Absolute(absolute))
                | (Deadband::Absolute(absolute), Deadband::Percent(percent)) => {
                    Ok(Deadband::Larger { percent, absolute })
                }
                _ => Err(format!(
                    "deadband `{text}`: `or` joins one percentage and one absolute value"
                )),
            };
        }
        let t = text.trim();
        let (number, percent) = match t.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (t, false),
        };
        match number.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(if percent {
                Deadband::Percent(v)
            } else {
                Deadband::Absolute(v)
            }),
            _ => Err(format!(
                "deadband `{text}`: expected a number of at least 0 in the metric's unit \
                 (`0.25`) or a percentage of the last value sent (`2%`)"
            )),
        }
    }
}

/// The settings of the metrics whose names match a glob (`disk.*.used_pct`).
#[derive(Debug, Clone)]
pub struct Rule {
    pub metric: glob::Pattern,
    pub config: Config,
}

/// Send-on-delta over many metrics: each takes the settings of the first rule whose glob
/// matches its name, or the default.
#[derive(Debug, Clone)]
pub struct Encoder {
    default: Config,
    rules: Vec<Rule>,
    channels: BTreeMap<String, Channel>,
}

impl Encoder {
    pub fn new(default: Config, rules: Vec<Rule>) -> Self {
        Encoder {
            default,
            rules,
            channels: BTreeMap::new(),
        }
    }

    /// The settings metric `name` gets.
    pub fn config_for(&self, name: &str) -> Config {
        self.rules
            .iter()
            .find(|r| r.metric.matches(name))
            .map_or(self.default, |r| r.config)
    }

    /// One sample of metric `name`: the value to send, if any.
    pub fn observe(&mut self, now: Instant, name: &str, value: f64) -> Option<f64> {
        if let Some(c) = self.channels.get_mut(name) {
            return c.observe(now, value);
        }
        let mut c = Channel::new(self.config_for(name));
        let out = c.observe(now, value);
        self.channels.insert(name.to_string(), c);
        out
    }

    /// The value the receiver holds for `name`, if one was sent.
    pub fn last_sent(&self, name: &str) -> Option<f64> {
        self.channels.get(name).and_then(Channel::last_sent)
    }

    /// Forgets a metric that no longer exists (an unmounted disk, a removed interface).
    pub fn forget(&mut self, name: &str) {
        self.channels.remove(name);
    }

    /// Names of the metrics seen so far.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
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
    fn each_metric_takes_the_first_matching_rule() {
        let t0 = Instant::now();
        let default = Config {
            deadband: Deadband::Absolute(1.0),
            max_silence: 60 * SEC,
        };
        let rule = |glob: &str, w: f64| Rule {
            metric: glob::Pattern::new(glob).expect("glob"),
            config: Config {
                deadband: Deadband::Absolute(w),
                ..default
            },
        };
        let mut e = Encoder::new(
            default,
            vec![rule("disk./var.*", 100.0), rule("disk.*.used_pct", 10.0)],
        );
        for m in ["cpu", "disk./.used_pct", "disk./var.used_pct"] {
            e.observe(t0, m, 0.0);
        }
        assert_eq!(e.observe(t0, "cpu", 5.0), Some(5.0));
        assert_eq!(e.observe(t0, "disk./.used_pct", 5.0), None);
        assert_eq!(e.observe(t0, "disk./.used_pct", 11.0), Some(11.0));
        assert_eq!(
            e.observe(t0, "disk./var.used_pct", 50.0),
            None,
            "first rule wins"
        );
        assert_eq!(e.last_sent("disk./var.used_pct"), Some(0.0));
        e.forget("cpu");
        assert_eq!(e.names().collect::<Vec<_>>().len(), 2);
    }

    #[test]
    fn deadbands_parse_from_text() {
        assert_eq!("0.25".parse(), Ok(Deadband::Absolute(0.25)));
        assert_eq!(" 2 %".parse(), Ok(Deadband::Percent(2.0)));
        let larger = "50% or 100".parse::<Deadband>();
        assert_eq!(
            larger,
            Ok(Deadband::Larger {
                percent: 50.0,
                absolute: 100.0
            })
        );
        let larger = larger.expect("parsed");
        assert_eq!(larger.width(0.0), 100.0);
        assert_eq!(larger.width(1000.0), 500.0);
        for bad in ["", "%", "-1", "x", "NaN", "inf", "1 or 2", "5% or 6% or 7"] {
            let e = bad.parse::<Deadband>().expect_err(bad);
            assert!(e.contains("deadband"), "{e}");
        }
    }

    fn deadband() -> impl Strategy<Value = Deadband> {
        prop_oneof![
            (0.0f64..50.0).prop_map(Deadband::Absolute),
            (0.0f64..30.0).prop_map(Deadband::Percent),
            (0.0f64..30.0, 0.0f64..50.0)
                .prop_map(|(percent, absolute)| Deadband::Larger { percent, absolute }),
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
