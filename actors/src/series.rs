//! A node's metric spikes as compact series for a chart: per metric, (time, value) points
//! after a time, thinned to at most `points` per metric (the last value of each equal slice
//! of the span), so that an hour of any node's metrics fits one answer to another node.
//! Send-on-delta: a value holds until the next point, so keeping the last of each slice
//! keeps the line's steps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spike::{Change, Kind, Spike, Value};

/// One metric's points, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub metric: String,
    /// (Unix ms, value).
    pub points: Vec<(u64, f64)>,
}

/// The number a spike's `value` field takes now, if it has one.
pub fn value(s: &Spike) -> Option<f64> {
    match s.fields.get("value").and_then(|f| f.after.as_ref())? {
        Value::Float(v) => Some(*v),
        Value::Int(v) => Some(*v as f64),
        _ => None,
    }
}

/// The value a metric sample carries, if it is one and a finite number.
pub fn sample(s: &Spike) -> Option<f64> {
    if s.kind != Kind::Metric || s.change != Change::Sample {
        return None;
    }
    value(s).filter(|v| v.is_finite())
}

/// The metric samples among `spikes` taken after `since` and up to `now`, per metric,
/// each series at most `points` long: the span `since..now` in `points` equal slices,
/// the last sample of each kept.
pub fn of_spikes<'a>(
    spikes: impl IntoIterator<Item = &'a Spike>,
    since: u64,
    now: u64,
    points: usize,
) -> Vec<Series> {
    let points = points.max(1) as u64;
    let span = now.saturating_sub(since).max(1);
    // Metric -> slice -> the last sample in it.
    let mut by: BTreeMap<&str, BTreeMap<u64, (u64, f64)>> = BTreeMap::new();
    for s in spikes {
        let Some(v) = sample(s) else { continue };
        let at = s.at_unix_ms;
        if at <= since || at > now {
            continue;
        }
        let slice = (at - since - 1) * points / span;
        let kept = by.entry(s.subject.as_str()).or_default();
        match kept.get(&slice) {
            Some((t, _)) if *t > at => {}
            _ => {
                kept.insert(slice, (at, v));
            }
        }
    }
    by.into_iter()
        .map(|(metric, slices)| Series {
            metric: metric.to_string(),
            points: slices.into_values().collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spike::FieldChange;

    fn metric(name: &str, at: u64, v: f64) -> Spike {
        let mut s = Spike::bare("n1", at, Kind::Metric, Change::Sample, name);
        s.at_unix_ms = at;
        s.fields.insert(
            "value".into(),
            FieldChange {
                before: None,
                after: Some(Value::Float(v)),
            },
        );
        s
    }

    #[test]
    fn an_hour_of_samples_is_thinned_to_the_last_of_each_slice() {
        let hour = 3_600_000;
        // A sample a second for an hour, two metrics, and a file change among them.
        let mut spikes: Vec<Spike> = (1..=3600u64)
            .flat_map(|i| {
                [
                    metric("cpu.busy_pct", i * 1000, i as f64),
                    metric("mem.used_pct", i * 1000, 50.0),
                ]
            })
            .collect();
        spikes.push(Spike::bare("n1", 1, Kind::File, Change::Modified, "/etc/x"));
        let series = of_spikes(&spikes, 0, hour, 360);
        assert_eq!(series.len(), 2);
        let cpu = &series[0];
        assert_eq!(cpu.metric, "cpu.busy_pct");
        assert_eq!(cpu.points.len(), 360);
        // The last of each 10 s slice, so the last sample is kept.
        assert_eq!(cpu.points[0], (10_000, 10.0));
        assert_eq!(cpu.points.last(), Some(&(hour, 3600.0)));
        assert!(cpu.points.windows(2).all(|w| w[0].0 < w[1].0));
        // Only what is after `since`.
        let late = of_spikes(&spikes, hour - 5_000, hour, 360);
        assert_eq!(late[0].points.len(), 5);
    }

    #[test]
    fn only_finite_metric_samples_count() {
        let mut bad = metric("x", 10, f64::NAN);
        assert_eq!(sample(&bad), None);
        bad.fields.insert(
            "value".into(),
            FieldChange {
                before: None,
                after: Some(Value::Int(3)),
            },
        );
        assert_eq!(sample(&bad), Some(3.0));
        bad.kind = Kind::File;
        assert_eq!(sample(&bad), None);
    }
}
