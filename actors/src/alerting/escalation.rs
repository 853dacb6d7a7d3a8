//! Escalation policies: who is paged, and when, about one alert nobody reacts to.
//!
//! A policy is a list of steps (`receiver`, `after_ms` since the escalation started) run
//! once and then `repeat` more times, each pass starting `repeat_interval_ms` after the
//! previous one. It applies to the alerts its matchers select (by default the critical
//! ones; the first matching policy wins). The escalation starts when the alert starts
//! firing. An acknowledgement suspends it; when the acknowledgement times out
//! (`ack_timeout_ms`) the alert fires again and the escalation starts over from the first
//! step. Resolving the alert ends it. A step that comes due while the alert is silenced
//! or inhibited is skipped, not sent late.

use serde::{Deserialize, Serialize};

use super::labels::{Labels, Matcher, all_match, parse_all};
use super::route::Error;

pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 3_600_000;

/// One `[[alerts.escalations]]` entry, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub name: String,
    /// Which alerts it applies to (default: `severity = critical`).
    #[serde(default = "critical")]
    pub matchers: Vec<String>,
    pub steps: Vec<Step>,
    /// Passes after the first (0: the steps run once).
    #[serde(default)]
    pub repeat: u32,
    /// From the start of one pass to the start of the next (default: twice the last
    /// step's `after_ms`, at least one minute).
    #[serde(default)]
    pub repeat_interval_ms: Option<u64>,
    #[serde(default = "ack_timeout")]
    pub ack_timeout_ms: u64,
}

fn critical() -> Vec<String> {
    vec!["severity = critical".into()]
}

fn ack_timeout() -> u64 {
    DEFAULT_ACK_TIMEOUT_MS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub receiver: String,
    pub after_ms: u64,
}

/// A checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub matchers: Vec<Matcher>,
    pub steps: Vec<Step>,
    pub repeat: u32,
    pub cycle_ms: u64,
    pub ack_timeout_ms: u64,
}

/// Where one alert's escalation stands: plain data, so that it can be committed and a new
/// owner can carry on from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The policy's position in the settings.
    pub policy: usize,
    pub start_unix_ms: u64,
    /// The next step to send: pass (0: the first) and step.
    pub pass: u32,
    pub step: usize,
}

impl Policy {
    /// `i` is its position, for errors (`escalations[1].steps`).
    pub fn new(c: &Config, i: usize) -> Result<Policy, Error> {
        let err = |field: &str, reason: &str| Error {
            at: format!("escalations[{i}].{field}"),
            reason: reason.to_string(),
        };
        if c.name.trim().is_empty() {
            return Err(err("name", "must not be empty"));
        }
        let matchers = parse_all(&c.matchers).map_err(|(j, e)| Error {
            at: format!("escalations[{i}].matchers[{j}]"),
            reason: e.to_string(),
        })?;
        let Some(last) = c.steps.last() else {
            return Err(err("steps", "needs at least one step"));
        };
        if c.steps.windows(2).any(|w| w[1].after_ms < w[0].after_ms) {
            return Err(err(
                "steps",
                "after_ms must not decrease from one step to the next",
            ));
        }
        if let Some(j) = c.steps.iter().position(|s| s.receiver.trim().is_empty()) {
            return Err(err(&format!("steps[{j}].receiver"), "must name a receiver"));
        }
        let cycle_ms = match c.repeat_interval_ms {
            Some(r) if r <= last.after_ms => {
                return Err(err(
                    "repeat_interval_ms",
                    "must be longer than the last step's after_ms",
                ));
            }
            Some(r) => r,
            None => last.after_ms.saturating_mul(2).max(60_000),
        };
        if c.ack_timeout_ms == 0 {
            return Err(err("ack_timeout_ms", "must be at least 1"));
        }
        Ok(Policy {
            name: c.name.clone(),
            matchers,
            steps: c.steps.clone(),
            repeat: c.repeat,
            cycle_ms,
            ack_timeout_ms: c.ack_timeout_ms,
        })
    }

    pub fn applies(&self, labels: &Labels) -> bool {
        all_match(&self.matchers, labels)
    }

    /// When the next step of `p` is due (`None`: the escalation is over).
    pub fn due(&self, p: &Progress) -> Option<u64> {
        if p.pass > self.repeat || p.step >= self.steps.len() {
            return None;
        }
        Some(
            p.start_unix_ms
                .saturating_add(self.cycle_ms.saturating_mul(u64::from(p.pass)))
                .saturating_add(self.steps[p.step].after_ms),
        )
    }

    /// Moves `p` past its next step.
    pub fn advance(&self, p: &mut Progress) {
        p.step += 1;
        if p.step >= self.steps.len() && p.pass < self.repeat {
            p.step = 0;
            p.pass += 1;
        }
    }
}

/// The first policy of `policies` that applies to `labels`.
pub fn select(policies: &[Policy], labels: &Labels) -> Option<usize> {
    policies.iter().position(|p| p.applies(labels))
}
