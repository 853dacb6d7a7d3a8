//! Alerts: what operators are told. Policy violations, cross-fleet anomalies and fleet
//! events become [`Alert`]s with a stable dedup key; the alert actor keeps the latest,
//! folds repeats of one key, and hands them to the configured sinks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spike::{Kind, Severity};

/// One alert, as raised by the node's policy actor or the region's fleet view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable across repeats of the same condition (same host, rule, subject; or the same
    /// fleet event): sinks and `GET /api/v1/alerts` fold repeats under it.
    pub key: String,
    pub at_unix_ms: u64,
    pub severity: Severity,
    /// What it is about, in ECS `event.category` words: `file`, `iam` (users, groups),
    /// `process`, `network`, `host` (metrics, anomalies), `configuration` (fleet events).
    pub category: String,
    /// What happened, in ECS `event.action` words: `policy_violation`,
    /// `unauthorized_access`, `anomaly`, `rollout`, `upgrade`,
    /// `suspected_coordinated_change`, `unresolved_change`.
    pub action: String,
    /// The host the alert is about (node name), its region and role. Fleet events name the
    /// master that raised them.
    pub host: String,
    pub region: String,
    pub role: String,
    /// The deciding rule (`file:line#name`, `learned:<id>`, `fleet:<...>`), if any.
    pub rule: Option<String>,
    /// Why, in one sentence.
    pub reason: String,
    /// The policy decision behind it (`violation`, `consult`, ...), if any.
    pub decision: Option<String>,
    /// The region master's term when the region decided it (consultation, fleet events).
    pub term: Option<u64>,
    /// The changed thing (path, user name, process, metric), if any.
    pub subject: Option<String>,
    /// More detail (origins of a fleet event, z-score of an anomaly, ...).
    pub details: BTreeMap<String, String>,
}

/// The ECS `event.category` of an alert about a change of `kind`.
pub fn category(kind: Kind) -> &'static str {
    match kind {
        Kind::User | Kind::Group => "iam",
        Kind::File => "file",
        Kind::Process => "process",
        Kind::Network => "network",
        Kind::Metric | Kind::Coverage | Kind::Reconcile | Kind::Audit => "host",
        Kind::Service => "network",
    }
}
