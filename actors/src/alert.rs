//! Alerts: what operators are told. Policy violations, cross-fleet anomalies and fleet
//! events become [`Alert`]s with a stable dedup key; the alert actor keeps the latest,
//! folds repeats of one key, and hands them to the configured sinks.
//!
//! This module owns the record, the conversion of decisions into alerts and, in [`book`],
//! the bookkeeping of delivery (folding, bounded queues, retries). It does no I/O: the
//! sinks live in the node runtime, and the actor (`crate::actor::alert`) carries batches
//! to them.

pub mod book;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use book::{Batch, Book, Config, Entry, Outcome, SinkConfig, SinkStatus, Status};

use crate::correlate::{FleetEvent, Verdict};
use crate::node;
use crate::policy::Decision;
use crate::policy::judge::Record;
use crate::spike::{Change, Kind, Severity, Spike};

/// One alert, as raised by the node's policy actor or the region's fleet view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Actions the region's master raises about the region itself (fleet events, a member's
/// death, a name claimed twice): kept in the region's log, so that the next master holds
/// them, tells no one again what was told, and can resolve them.
pub const REGION_ACTIONS: [&str; 5] = [
    "node_dead",
    "duplicate_name",
    "rollout",
    "upgrade",
    "suspected_coordinated_change",
];

/// Whether `action` is one the region's master raises about the region
/// ([`REGION_ACTIONS`]).
pub fn is_region_action(action: &str) -> bool {
    REGION_ACTIONS.contains(&action)
}

/// Downgrades `alert`, about a member in maintenance, to info, and says why in its
/// details: the operator announced the work that causes it.
pub fn in_maintenance(alert: &mut Alert) {
    if alert.severity > Severity::Info {
        alert.details.insert(
            "severity_before_maintenance".into(),
            alert.severity.name().to_string(),
        );
    }
    alert.severity = Severity::Info;
    alert.details.insert("phase".into(), "maintenance".into());
}

/// Restores an alert [`in_maintenance`] downgraded (its member is active again): its
/// severity as it was, without the maintenance details. False when it was not.
pub fn out_of_maintenance(alert: &mut Alert) -> bool {
    if alert.details.get("phase").map(String::as_str) != Some("maintenance") {
        return false;
    }
    alert.details.remove("phase");
    if let Some(before) = alert.details.remove("severity_before_maintenance") {
        alert.severity = Severity::from_name(&before);
    }
    true
}

/// The ECS `event.category` of a change of `kind`.
pub fn category(kind: Kind) -> &'static str {
    match kind {
        Kind::User | Kind::Group => "iam",
        Kind::File => "file",
        Kind::Process => "process",
        Kind::Network => "network",
        Kind::Metric
        | Kind::Coverage
        | Kind::Reconcile
        | Kind::Service
        | Kind::Audit
        | Kind::Anomaly => "host",
    }
}

/// The key of a violation's alert: `host|rule|kind|subject`.
pub fn violation_key(host: &str, rule: &str, kind: Kind, subject: &str) -> String {
    format!("{host}|{rule}|{}|{subject}", kind.as_str())
}

/// Whether `key` is the alert of a violation on `host` about `kind` `subject`, by any rule
/// (see [`violation_key`]).
pub fn is_violation_about(key: &str, host: &str, kind: Kind, subject: &str) -> bool {
    key.strip_prefix(host)
        .and_then(|k| k.strip_prefix('|'))
        .and_then(|k| k.strip_suffix(subject))
        .and_then(|k| k.strip_suffix('|'))
        .and_then(|k| k.strip_suffix(kind.as_str()))
        .is_some_and(|rule| rule.ends_with('|') && rule.len() > 1)
}

/// The alert for a local policy violation: `record` is the decision about `spike`, made on
/// the node `node`.
///
/// The key is `host|rule|kind|subject`: the same rule breaking on the same thing of the
/// same host is one alert, however often it repeats. A user or group added against policy
/// is `unauthorized_access` (at least `high`); an anomaly is `anomaly`; any other violation is `policy_violation`
/// (at least `medium`: a violation is never merely informative).
pub fn of_violation(node: &node::Info, record: &Record, spike: &Spike) -> Alert {
    let account = matches!(record.kind, Kind::User | Kind::Group);
    let (action, floor) = if account && record.change == Change::Added {
        ("unauthorized_access", Severity::High)
    } else if record.kind == Kind::Anomaly {
        ("anomaly", Severity::High)
    } else {
        ("policy_violation", Severity::Medium)
    };
    let mut details = BTreeMap::new();
    details.insert("change".to_string(), record.change.as_str().to_string());
    details.insert("label".to_string(), record.label.clone());
    details.insert("policy".to_string(), record.policy.clone());
    details.insert("seq".to_string(), record.seq.to_string());
    Alert {
        key: violation_key(&node.name, &record.rule, record.kind, &record.subject),
        at_unix_ms: if spike.at_unix_ms > 0 {
            spike.at_unix_ms
        } else {
            record.at_unix_ms
        },
        severity: spike.severity.max(floor),
        category: category(record.kind).to_string(),
        action: action.to_string(),
        host: node.name.clone(),
        region: node.region.clone(),
        role: node.role.clone(),
        rule: Some(record.rule.clone()),
        reason: record.reason.clone(),
        decision: Some(Decision::Violation.as_str().to_string()),
        term: None,
        subject: Some(record.subject.clone()),
        details,
    }
}

/// Two live peers of a region claim one name (`node.name`): raised by the master, about
/// the claimant it refuses (kept out of the region until renamed).
pub fn of_duplicate_name(
    region: &str,
    master: &str,
    name: &str,
    holder: &node::Id,
    claimant: &node::Id,
    now: u64,
) -> Alert {
    let mut details = BTreeMap::new();
    details.insert("holder".into(), holder.to_string());
    details.insert("claimant".into(), claimant.to_string());
    Alert {
        key: format!("{region}|duplicate_name|{name}|{claimant}"),
        at_unix_ms: now,
        severity: Severity::High,
        category: "configuration".into(),
        action: "duplicate_name".into(),
        host: master.to_string(),
        region: region.to_string(),
        role: String::new(),
        rule: None,
        reason: format!(
            "peer {claimant} claims the name {name}, which belongs to peer {holder}: it is kept \
             out of the region's consensus and work until it is renamed (node.name)"
        ),
        decision: None,
        term: None,
        subject: Some(name.to_string()),
        details,
    }
}

/// The key of the `node_dead` alert about `peer` in `region`.
pub fn node_dead_key(region: &str, peer: &node::Id) -> String {
    format!("{region}|node_dead|{peer}")
}

/// A member of the region is dead: raised by the master that committed the death, about
/// the dead node (`name`, `role`: as the region knew it). It resolves when the node is
/// alive again.
pub fn of_node_dead(
    region: &str,
    master: &str,
    peer: &node::Id,
    name: &str,
    role: &str,
    incarnation: u64,
    now: u64,
) -> Alert {
    let mut details = BTreeMap::new();
    details.insert("peer".into(), peer.to_string());
    details.insert("incarnation".into(), incarnation.to_string());
    details.insert("declared_by".into(), master.to_string());
    Alert {
        key: node_dead_key(region, peer),
        at_unix_ms: now,
        severity: Severity::High,
        category: "host".into(),
        action: "node_dead".into(),
        host: name.to_string(),
        region: region.to_string(),
        role: role.to_string(),
        rule: None,
        reason: format!(
            "{name} stopped answering its region's heartbeats: declared dead in incarnation {incarnation}; its work goes to the other members"
        ),
        decision: None,
        term: None,
        subject: Some(name.to_string()),
        details,
    }
}

/// Subjects of a fleet event named in its alert's details at most (the event in
/// `GET /api/v1/fleet` lists more).
pub const SUBJECTS_IN_DETAILS: usize = 20;

/// The alert of a fleet event the region's master raised: one for all its servers.
/// `servers` are their names; `master` is the raising node's name.
pub fn of_fleet_event(
    region: &str,
    term: u64,
    master: &str,
    event: &FleetEvent,
    servers: &[String],
    now: u64,
) -> Alert {
    // An approved rollout or upgrade is told, not alarmed about.
    let (action, severity) = match event.verdict {
        Verdict::Rollout => ("rollout", Severity::Info),
        Verdict::Upgrade => ("upgrade", Severity::Info),
        Verdict::SuspectedCoordinatedChange => ("suspected_coordinated_change", Severity::Critical),
    };
    let mut details = BTreeMap::from([("servers".to_string(), servers.join(","))]);
    if event.subjects_total > 1 {
        let listed: Vec<&str> = event
            .subjects
            .iter()
            .take(SUBJECTS_IN_DETAILS)
            .map(String::as_str)
            .collect();
        details.insert("subjects".into(), listed.join(","));
        details.insert("subjects_total".into(), event.subjects_total.to_string());
    }
    Alert {
        key: crate::fleet::fleet_key(region, event),
        at_unix_ms: now,
        severity,
        category: "configuration".into(),
        action: action.into(),
        host: master.to_string(),
        region: region.to_string(),
        role: event.role.clone(),
        rule: Some(format!("fleet:{action}")),
        reason: format!(
            "the same {} change of {} on {} {} servers within the window",
            event.fingerprint.kind.as_str(),
            event.subjects_brief(),
            servers.len(),
            event.role
        ),
        decision: None,
        term: Some(term),
        subject: Some(event.fingerprint.subject.clone()),
        details,
    }
}

#[cfg(test)]
mod tests;
