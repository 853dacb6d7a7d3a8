//! The alert lifecycle (issue 15): routing, grouping, inhibition, silences,
//! acknowledgement, escalation and per-receiver rate limits, as one sans-IO core.
//!
//! [`Engine`] owns the decisions; it does no I/O and reads no clock: every input carries
//! the wall-clock time in Unix milliseconds. Feed it with [`Engine::raise`],
//! [`Engine::resolve`], [`Engine::ack`], [`Engine::add_silence`] and
//! [`Engine::expire_silence`]; then drain it with [`Engine::poll`], which re-evaluates
//! what is silenced or inhibited and returns the notifications due, and arm a timer for
//! [`Engine::poll_timeout`]. Statuses shown by [`Engine::snapshot`] are those of the last
//! poll. Delivering a notification (and retrying it) is the caller's business (the alert
//! book and sinks); the engine counts a notification as sent when it hands it out, and
//! each notification carries the notification-log records the caller commits so that a
//! new owner carries on where this one stopped ([`Engine::merge_log`]).
//!
//! Silences, acknowledgements and the notification log are plain serde data, so that the
//! region log can carry them.
//!
//! The settings ([`Config`], the routing part of `[alerts]`; every key is optional):
//!
//! ```toml
//! [alerts]
//! rate_per_minute = 10            # per receiver, summary included
//! ack_timeout_ms = 3600000        # when no escalation policy applies
//! [[alerts.receivers]]            # the sink's own keys are the runtime's
//! name = "oncall"
//! rate_per_minute = 30
//! [alerts.route]                  # the root: no matchers; these are the defaults
//! receiver = "default"
//! group_by = ["region", "action"] # `action` is the `alertname` label; "..." is all
//! group_wait_ms = 10000
//! group_interval_ms = 300000
//! repeat_interval_ms = 14400000
//! [[alerts.route.routes]]         # unset keys are inherited
//! matchers = ["role = database", 'severity =~ "high|critical"']
//! receiver = "dba"
//! continue = false
//! [[alerts.inhibit]]
//! source_matchers = ["alertname = node_dead"]
//! target_matchers = ["alertname = service_down"]
//! equal = ["node"]
//! [[alerts.escalations]]
//! name = "critical"
//! matchers = ["severity = critical"]  # the default
//! steps = [{ receiver = "oncall", after_ms = 0 }, { receiver = "lead", after_ms = 600000 }]
//! repeat = 2                      # passes after the first
//! repeat_interval_ms = 1200000    # default: twice the last after_ms, at least 1 min
//! ack_timeout_ms = 3600000
//! ```
//!
//! Modules: [`labels`] (labels, matchers), [`route`] (the routing tree), [`silence`],
//! [`inhibit`], [`escalation`], [`ratelimit`], [`nlog`] (notification log),
//! [`lifecycle`] (an alert's status, ack and history), [`rfc3339`] (Alertmanager's dates),
//! [`history`] (what the history on disk keeps).

pub mod escalation;
pub mod history;
pub mod inhibit;
pub mod labels;
pub mod lifecycle;
pub mod nlog;
pub mod ratelimit;
pub mod rfc3339;
pub mod role;
pub mod route;
pub mod silence;

mod engine;
mod flush;
mod operator;

use serde::{Deserialize, Serialize};

pub use engine::{Counters, Engine, GroupView, Snapshot};
pub use labels::{Labels, Matcher};
pub use lifecycle::{Ack, Record, Status};
pub use route::Error as ConfigError;
pub use silence::Silence;

/// The alerting settings: the `[alerts]` table's routing part. Unknown keys are left to
/// the rest of the settings (sinks, ring, ...); each nested table refuses unknown keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub route: route::Config,
    pub inhibit: Vec<inhibit::Config>,
    pub escalations: Vec<escalation::Config>,
    /// Receivers' budgets; a receiver not listed has `rate_per_minute`.
    pub receivers: Vec<Receiver>,
    /// Notifications per receiver in any minute, summary included (at least 2).
    pub rate_per_minute: u32,
    /// How long an acknowledgement holds when no escalation policy applies.
    pub ack_timeout_ms: u64,
    /// Status changes kept per alert.
    pub history_len: usize,
    /// Alerts tracked at once (open and resolved-but-not-yet-notified); raises beyond it
    /// are refused and counted.
    pub max_alerts: usize,
    /// Alerts listed in one notification; the rest are counted in `omitted`.
    pub max_alerts_per_notification: usize,
    /// Resolved alerts kept for the snapshot after they left their groups.
    pub resolved_kept: usize,
    /// Expired silences and notification-log entries are forgotten after this.
    pub retention_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            route: route::Config::default(),
            inhibit: Vec::new(),
            escalations: Vec::new(),
            receivers: Vec::new(),
            rate_per_minute: ratelimit::DEFAULT_PER_MINUTE,
            ack_timeout_ms: escalation::DEFAULT_ACK_TIMEOUT_MS,
            history_len: 20,
            max_alerts: 5_000,
            max_alerts_per_notification: 1000,
            resolved_kept: 1000,
            retention_ms: 5 * 86_400_000,
        }
    }
}

/// One `[[alerts.receivers]]` entry: only its name, budget and re-push period are read
/// here (the sink's own keys are the runtime's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receiver {
    pub name: String,
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Tell a group's open alerts again at least this often while any is open, even
    /// acknowledged and unchanged: a receiver that forgets an alert it is not told about
    /// (Prometheus Alertmanager resolves it after its `resolve_timeout`) keeps it firing.
    #[serde(default)]
    pub repush_ms: Option<u64>,
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{max} alerts are tracked already: the raise is refused and counted")]
    Full { max: usize },
    #[error("no alert {0}")]
    UnknownAlert(String),
    #[error("alert {0} is resolved")]
    Resolved(String),
    #[error(transparent)]
    Silence(#[from] silence::Error),
}

/// Why a notification is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// A group's first notification, an update, a repeat or its resolution.
    Group,
    /// An escalation step of the named policy (pass 0 is the first run of the steps).
    Escalation {
        policy: String,
        pass: u32,
        step: usize,
    },
    /// The receiver's budget is spent: `held` notifications (of `groups`, escalation
    /// batches included as `escalation:<policy>`) wait until it frees.
    Summary { held: usize, groups: Vec<String> },
}

/// An alert as a notification carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notified {
    pub id: String,
    pub key: String,
    pub status: Status,
    pub labels: Labels,
    pub annotations: labels::Annotations,
    pub starts_at_unix_ms: u64,
    pub ends_at_unix_ms: Option<u64>,
}

impl Notified {
    fn of(r: &Record) -> Notified {
        Notified {
            id: r.id.clone(),
            key: r.key.clone(),
            status: r.status.clone(),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
            starts_at_unix_ms: r.starts_at_unix_ms,
            ends_at_unix_ms: r.ends_at_unix_ms,
        }
    }
}

/// One notification for one receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub receiver: String,
    /// The group's key (`escalation:<policy>` for escalations, `summary` for summaries).
    pub group_key: String,
    /// The grouping labels' values.
    pub group_labels: Labels,
    pub reason: Reason,
    /// Open alerts first, then resolved ones; at most `max_alerts_per_notification`.
    pub alerts: Vec<Notified>,
    /// Alerts left out of `alerts` by the bound.
    pub omitted: usize,
    pub at_unix_ms: u64,
    /// Notification-log records to commit once it is handed to the sink (not shown to
    /// receivers).
    #[serde(default)]
    pub records: Vec<nlog::Record>,
}

impl Notification {
    pub fn is_summary(&self) -> bool {
        matches!(self.reason, Reason::Summary { .. })
    }

    pub fn is_escalation(&self) -> bool {
        matches!(self.reason, Reason::Escalation { .. })
    }
}

/// An alert as listed: the latest raise of its key with its count, and where its
/// current (or last) episode stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    #[serde(flatten)]
    pub entry: crate::alert::Entry,
    /// The episode's id (for `/api/v1/alerts/{id}`); absent if the engine refused it.
    pub id: Option<String>,
    /// `firing`, `acknowledged`, `silenced`, `inhibited` or `resolved`.
    pub state: Option<String>,
    /// The state with its detail (who acknowledged, which silence, ...).
    pub status: Option<Status>,
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests;
