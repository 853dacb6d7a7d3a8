//! The health section of a twin: how the node is doing, in one word and its reasons.
//!
//! Judged on the node from what it knows first-hand: its service probes (a probe down
//! makes it `failing`), its connectivity (anything but live makes it `degraded`) and the
//! spikes its journal holds unacknowledged (more than [`BACKLOG_DEGRADED`] makes it
//! `degraded`). `unknown` until the first reading of its connectivity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sync::Connectivity;

/// More spikes than this waiting for the master's acknowledgement make a node degraded.
pub const BACKLOG_DEGRADED: u64 = 1_000;

/// A node's health in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Unknown,
    Ok,
    Degraded,
    Failing,
}

/// What the node reads of itself besides its twin's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vitals {
    pub connectivity: Option<Connectivity>,
    /// Spikes journaled and not acknowledged.
    pub backlog: u64,
}

/// The health section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Health {
    pub state: State,
    /// Why it is not `ok`, worst first.
    pub reasons: Vec<String>,
    pub connectivity: Option<Connectivity>,
    pub backlog: u64,
}

impl Health {
    /// Whether `other` says something different about the node (its state or reasons),
    /// not only a new backlog count.
    pub fn differs(&self, other: &Health) -> bool {
        self.state != other.state || self.reasons != other.reasons
    }
}

/// The health of a node whose probes report `services` (name to state) with `vitals`.
pub fn assess(vitals: Option<Vitals>, services: &BTreeMap<String, String>) -> Health {
    let Some(v) = vitals else {
        return Health::default();
    };
    let mut failing = Vec::new();
    let mut degraded = Vec::new();
    for (name, state) in services {
        if state != "up" {
            failing.push(format!("service {name} is {state}"));
        }
    }
    match v.connectivity {
        Some(Connectivity::Live) | None => {}
        Some(c) => degraded.push(format!("connectivity {}", c.as_str())),
    }
    if v.backlog > BACKLOG_DEGRADED {
        degraded.push(format!(
            "more than {BACKLOG_DEGRADED} spikes not acknowledged"
        ));
    }
    let state = if !failing.is_empty() {
        State::Failing
    } else if !degraded.is_empty() {
        State::Degraded
    } else {
        State::Ok
    };
    failing.extend(degraded);
    Health {
        state,
        reasons: failing,
        connectivity: v.connectivity,
        backlog: v.backlog,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_down_fails_and_a_backlog_or_a_cut_degrades() {
        let mut services = BTreeMap::new();
        services.insert("http".to_string(), "up".to_string());
        assert_eq!(assess(None, &services).state, State::Unknown);
        let live = Vitals {
            connectivity: Some(Connectivity::Live),
            backlog: 3,
        };
        let h = assess(Some(live), &services);
        assert_eq!((h.state, h.reasons.len()), (State::Ok, 0));
        let cut = Vitals {
            connectivity: Some(Connectivity::Autonomous),
            backlog: 5_000,
        };
        let h = assess(Some(cut), &services);
        assert_eq!(h.state, State::Degraded);
        assert_eq!(
            h.reasons,
            [
                "connectivity autonomous",
                "more than 1000 spikes not acknowledged"
            ]
        );
        services.insert("db".to_string(), "down".to_string());
        let h = assess(Some(cut), &services);
        assert_eq!(h.state, State::Failing);
        assert_eq!(h.reasons[0], "service db is down");
        // A new backlog count alone is not news.
        let more = Vitals {
            backlog: 6_000,
            ..cut
        };
        let h2 = assess(Some(more), &services);
        assert!(!h.differs(&h2));
        assert_eq!(h2.backlog, 6_000);
        let live_again = assess(Some(live), &BTreeMap::new());
        assert!(h.differs(&live_again));
    }
}
