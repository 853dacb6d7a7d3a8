//! The engine's state and inputs; draining (`poll`) is in `flush.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::escalation::{self, Policy, Progress};
use super::history::Changes;
use super::inhibit::Rule;
use super::labels::{self, Labels};
use super::lifecycle::{self, Ack, Record, Status};
use super::nlog::{self, Log};
use super::ratelimit::Limiter;
use super::route::{Error as ConfigError, Route};
use super::silence::{Silence, am};
use super::{Config, Error};
use crate::alert::Alert;

/// What the engine counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub raised: u64,
    /// Raises refused because `max_alerts` were tracked.
    pub refused: u64,
    pub resolved: u64,
    pub acknowledged: u64,
    /// Group notifications handed out.
    pub notifications: u64,
    pub escalations: u64,
    pub summaries: u64,
    /// Notifications held back by a receiver's budget (each retry counts).
    pub held: u64,
    /// Record changes not kept for the history on disk: too many waited for the runtime.
    #[serde(default)]
    pub history_dropped: u64,
}

/// A group as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub key: String,
    pub receiver: String,
    pub labels: Labels,
    pub alerts: Vec<String>,
    pub next_flush_unix_ms: u64,
}

/// Everything the API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Tracked alerts (open, muted, or resolved and not yet notified), by key.
    pub alerts: Vec<Record>,
    /// Alerts resolved and done with, newest first (bounded by `resolved_kept`).
    pub resolved: Vec<Record>,
    pub groups: Vec<GroupView>,
    pub silences: Vec<am::Gettable>,
    pub counters: Counters,
}

#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) record: Record,
    pub(super) escalation: Option<Progress>,
    /// Held back by a receiver's budget until then.
    pub(super) not_before: u64,
    pub(super) groups: BTreeSet<String>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) receiver: String,
    pub(super) labels: Labels,
    /// Alert keys.
    pub(super) members: BTreeSet<String>,
    pub(super) next_flush: u64,
    pub(super) wait: u64,
    pub(super) interval: u64,
    pub(super) repeat: u64,
    /// Its receiver's re-push period, if it has one.
    pub(super) repush: Option<u64>,
}

/// The alert-lifecycle core.
///
/// Fed by [`Engine::raise`] and [`Engine::resolve`] (the raising nodes' alerts),
/// [`Engine::ack`], [`Engine::add_silence`] and [`Engine::expire_silence`] (operators),
/// and, when it takes over, [`Engine::merge_log`], [`Engine::restore_silence`] and
/// [`Engine::apply_ack`] (what the region log committed). Drained by [`Engine::poll`],
/// which must be called after inputs and at [`Engine::poll_timeout`]: it re-derives
/// every alert's status and returns the notifications due. Read by
/// [`Engine::snapshot`], [`Engine::alert`], [`Engine::silences`] and [`Engine::log`].
/// Time is the wall clock in Unix milliseconds, passed in; it is never read here.
#[derive(Debug)]
pub struct Engine {
    pub(super) config: Config,
    pub(super) root: Route,
    pub(super) rules: Vec<Rule>,
    pub(super) policies: Vec<Policy>,
    pub(super) limiter: Limiter,
    /// By alert key.
    pub(super) alerts: BTreeMap<String, Tracked>,
    /// Alert id -> key.
    pub(super) ids: HashMap<String, String>,
    pub(super) groups: BTreeMap<String, Group>,
    pub(super) silences: BTreeMap<String, Silence>,
    /// Acknowledgements replayed for alerts not raised here yet, by alert id.
    pub(super) pending_acks: BTreeMap<String, Ack>,
    pub(super) log: Log,
    pub(super) retired: VecDeque<Record>,
    pub(super) counters: Counters,
    /// The latest `now` given to `poll`.
    pub(super) last_poll: u64,
    /// Records changed since the runtime last took them for the history on disk.
    pub(super) changes: Changes,
    /// Whether what a poll hands out is sent ([`Engine::set_notifying`]).
    pub(super) notifying: bool,
}

impl Engine {
    /// An engine for `config`; the error names the bad setting.
    pub fn new(config: Config) -> Result<Engine, ConfigError> {
        let root = Route::root(&config.route)?;
        let rules = config
            .inhibit
            .iter()
            .enumerate()
            .map(|(i, c)| Rule::new(c, i))
            .collect::<Result<Vec<_>, _>>()?;
        let policies = config
            .escalations
            .iter()
            .enumerate()
            .map(|(i, c)| Policy::new(c, i))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, p) in policies.iter().enumerate() {
            if policies[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError {
                    at: format!("escalations[{i}].name"),
                    reason: format!("{:?} is named twice", p.name),
                });
            }
        }
        let mut budgets = BTreeMap::new();
        for (i, r) in config.receivers.iter().enumerate() {
            if r.name.trim().is_empty() {
                return Err(ConfigError {
                    at: format!("receivers[{i}].name"),
                    reason: "must not be empty".into(),
                });
            }
            budgets.insert(
                r.name.clone(),
                r.rate_per_minute.unwrap_or(config.rate_per_minute),
            );
        }
        // Every tracked alert and every resolved one still remembered may wait at once.
        let config_cap = config.max_alerts.saturating_add(config.resolved_kept);
        Ok(Engine {
            limiter: Limiter::new(config.rate_per_minute, budgets),
            config,
            root,
            rules,
            policies,
            alerts: BTreeMap::new(),
            ids: HashMap::new(),
            groups: BTreeMap::new(),
            silences: BTreeMap::new(),
            pending_acks: BTreeMap::new(),
            log: Log::default(),
            retired: VecDeque::new(),
            counters: Counters::default(),
            last_poll: 0,
            changes: Changes::new(config_cap),
            notifying: true,
        })
    }

    /// An alert raised (again). A key that is not firing starts a new episode, whose id is
    /// derived from the key and `alert.at_unix_ms` (`now` if that is 0); a repeat updates
    /// the alert in place. Returns the alert's id.
    pub fn raise(&mut self, alert: Alert, now: u64) -> Result<String, Error> {
        self.counters.raised += 1;
        let labels = labels::of_alert(&alert);
        let annotations = labels::annotations_of(&alert);
        if let Some(t) = self.alerts.get_mut(&alert.key)
            && !t.record.is_resolved()
        {
            t.record.raised += 1;
            t.record.updated_at_unix_ms = t.record.updated_at_unix_ms.max(now);
            t.record.annotations = annotations;
            let id = t.record.id.clone();
            self.changes.mark(&id);
            if t.record.labels != labels {
                // A change of labels (a severity raised) may change the policy: a new
                // one starts now, the same one goes on.
                let policy = escalation::select(&self.policies, &labels);
                if t.escalation.as_ref().map(|p| p.policy) != policy {
                    t.escalation = policy.map(|policy| Progress {
                        policy,
                        start_unix_ms: now,
                        pass: 0,
                        step: 0,
                    });
                }
                t.record.labels = labels;
                self.regroup(&alert.key, now);
            }
            return Ok(id);
        }
        let start = if alert.at_unix_ms > 0 {
            alert.at_unix_ms
        } else {
            now
        };
        if self
            .by_key(&alert.key)
            .is_some_and(|r| r.is_resolved() && r.id == lifecycle::alert_id(&alert.key, start))
        {
            // A late copy of an episode that resolved (a member sending its open alerts
            // again): not a new episode.
            return Ok(lifecycle::alert_id(&alert.key, start));
        }
        if !self.alerts.contains_key(&alert.key) && self.alerts.len() >= self.config.max_alerts {
            self.counters.refused += 1;
            return Err(Error::Full {
                max: self.config.max_alerts,
            });
        }
        if let Some(old) = self.alerts.remove(&alert.key) {
            // A new episode supersedes the resolved one, reported or not.
            self.ids.remove(&old.record.id);
            for gk in &old.groups {
                if let Some(g) = self.groups.get_mut(gk) {
                    g.members.remove(&alert.key);
                }
            }
            self.retire(old.record);
        }
        let mut record = Record::new(alert.key.clone(), labels, annotations, start, now);
        let id = record.id.clone();
        let escalation = escalation::select(&self.policies, &record.labels).map(|policy| {
            let logged = self
                .log
                .get(&nlog::escalation_key(&id))
                .and_then(|e| e.escalation.clone());
            logged.filter(|p| p.policy == policy).unwrap_or(Progress {
                policy,
                start_unix_ms: start,
                pass: 0,
                step: 0,
            })
        });
        if let Some(ack) = self.pending_acks.remove(&id) {
            record.ack = Some(ack);
        }
        self.ids.insert(id.clone(), alert.key.clone());
        self.changes.mark(&id);
        self.alerts.insert(
            alert.key.clone(),
            Tracked {
                record,
                escalation,
                not_before: 0,
                groups: BTreeSet::new(),
            },
        );
        self.regroup(&alert.key, now);
        Ok(id)
    }

    /// The condition of `key` cleared: the alert resolves, its escalation ends, and it is
    /// reported resolved in its groups' next notifications. Returns its id (`None`: no
    /// open alert has this key).
    pub fn resolve(&mut self, key: &str, now: u64) -> Option<String> {
        let cap = self.config.history_len;
        let t = self.alerts.get_mut(key)?;
        if t.record.is_resolved() {
            return None;
        }
        t.record.ack = None;
        t.record.ends_at_unix_ms = Some(now);
        t.record
            .set_status(Status::Resolved { at_unix_ms: now }, now, cap);
        t.escalation = None;
        self.changes.mark(&t.record.id);
        self.counters.resolved += 1;
        Some(t.record.id.clone())
    }

    /// From now on, every change of a record (a new episode, a raise, a status change, an
    /// acknowledgement, a resolution) is noted for [`Engine::take_changed`]. Off by
    /// default: an engine whose records nobody takes notes nothing.
    pub fn keep_history(&mut self) {
        self.changes.enable();
    }

    /// The records changed since the last take (each once, as it is now, or as it was
    /// when the engine stopped keeping it), for the history on disk. At most
    /// `max_alerts + resolved_kept` wait between takes; changes to others are dropped and
    /// counted ([`Counters::history_dropped`]).
    pub fn take_changed(&mut self) -> Vec<Record> {
        let (ids, alerts) = (&self.ids, &self.alerts);
        let out = self
            .changes
            .take(|id| ids.get(id).and_then(|k| alerts.get(k)).map(|t| &t.record));
        self.counters.history_dropped = self.changes.dropped();
        out
    }

    /// Whether a change waits for [`Engine::take_changed`].
    pub fn has_changed(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The notification log, to persist or hand to a new owner.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Takes over a (previous owner's) notification log: entries later than ours win.
    pub fn merge_log(&mut self, log: &Log) {
        self.log.merge(log);
        for t in self.alerts.values_mut() {
            let Some(p) = &mut t.escalation else { continue };
            let logged = log.get(&nlog::escalation_key(&t.record.id));
            if let Some(q) = logged.and_then(|e| e.escalation.as_ref())
                && q.policy == p.policy
                && (q.start_unix_ms, q.pass, q.step) > (p.start_unix_ms, p.pass, p.step)
            {
                *p = q.clone();
            }
        }
    }

    /// Every record held: tracked alerts and those resolved and still remembered.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.alerts
            .values()
            .map(|t| &t.record)
            .chain(self.retired.iter())
    }

    /// The alert with this id, tracked or recently resolved.
    pub fn alert(&self, id: &str) -> Option<&Record> {
        match self.ids.get(id) {
            Some(k) => self.alerts.get(k).map(|t| &t.record),
            None => self.retired.iter().find(|r| r.id == id),
        }
    }

    /// This engine starts to notify (its node became the region's master, or lost its
    /// master and notifies on its own): every group is looked at `settle` ms from now,
    /// once the members' open alerts came, and told unless the notification log (the
    /// region's, merged with [`Engine::merge_log`]) says it was told as it stands. A
    /// group another notifier told without the log saying so is told again: at least
    /// once, at most one repeat per group per change.
    pub fn renotify(&mut self, now: u64, settle: u64) {
        for g in self.groups.values_mut() {
            g.next_flush = now.saturating_add(settle);
        }
    }

    /// Whether this engine's notifications are sent (its node notifies). While not,
    /// what a poll hands out is not noted in its notification log (nothing was told),
    /// and takes nothing from the receivers' budgets.
    pub fn set_notifying(&mut self, notifying: bool) {
        self.notifying = notifying;
    }

    /// The alert of `key`: its current episode, or its latest one still remembered after
    /// it resolved.
    pub fn by_key(&self, key: &str) -> Option<&Record> {
        match self.alerts.get(key) {
            Some(t) => Some(&t.record),
            None => self.retired.iter().rev().find(|r| r.key == key),
        }
    }

    /// Every unresolved alert, rebuilt from its record (see [`labels::alert_of`]).
    pub fn open_alerts(&self) -> Vec<Alert> {
        self.alerts
            .values()
            .filter(|t| !t.record.is_resolved())
            .map(|t| labels::alert_of(&t.record))
            .collect()
    }

    /// Alerts tracked now (open, muted, or resolved and not yet notified): what a poll
    /// looks through.
    /// Open (not resolved) alerts by their `severity` label.
    pub fn open_by_severity(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for t in self.alerts.values().filter(|t| !t.record.is_resolved()) {
            let s = t.record.labels.get("severity").cloned().unwrap_or_default();
            *out.entry(s).or_insert(0) += 1;
        }
        out
    }

    pub fn tracked(&self) -> usize {
        self.alerts.len()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn snapshot(&self, now: u64) -> Snapshot {
        Snapshot {
            alerts: self.alerts.values().map(|t| t.record.clone()).collect(),
            resolved: self.retired.iter().rev().cloned().collect(),
            groups: self
                .groups
                .iter()
                .map(|(k, g)| GroupView {
                    key: k.clone(),
                    receiver: g.receiver.clone(),
                    labels: g.labels.clone(),
                    alerts: g
                        .members
                        .iter()
                        .filter_map(|m| self.alerts.get(m).map(|t| t.record.id.clone()))
                        .collect(),
                    next_flush_unix_ms: g.next_flush,
                })
                .collect(),
            silences: self.silences(now),
            counters: self.counters.clone(),
        }
    }

    /// Puts alert `key` in the groups its labels route it to, and out of the others.
    pub(super) fn regroup(&mut self, key: &str, now: u64) {
        let Some(t) = self.alerts.get(key) else {
            return;
        };
        let mut wanted = BTreeSet::new();
        let receivers = &self.config.receivers;
        for route in self.root.matching(&t.record.labels) {
            let (gk, glabels) = route.group_key(&t.record.labels);
            let repush = receivers
                .iter()
                .find(|r| r.name == route.receiver)
                .and_then(|r| r.repush_ms)
                .filter(|ms| *ms > 0);
            let g = self.groups.entry(gk.clone()).or_insert_with(|| Group {
                receiver: route.receiver.clone(),
                labels: glabels,
                members: BTreeSet::new(),
                next_flush: now.saturating_add(route.group_wait_ms),
                wait: route.group_wait_ms,
                interval: route.group_interval_ms,
                repeat: route.repeat_interval_ms,
                repush,
            });
            g.members.insert(key.to_string());
            wanted.insert(gk);
        }
        let Some(t) = self.alerts.get_mut(key) else {
            return;
        };
        for old in t.groups.difference(&wanted) {
            if let Some(g) = self.groups.get_mut(old) {
                g.members.remove(key);
                if g.members.is_empty() {
                    self.groups.remove(old);
                }
            }
        }
        t.groups = wanted;
    }

    pub(super) fn retire(&mut self, record: Record) {
        self.changes.leaving(&record);
        self.retired.push_back(record);
        while self.retired.len() > self.config.resolved_kept {
            self.retired.pop_front();
        }
    }
}
