//! Draining the engine: what is due at `now`, in this order: acknowledgements that timed
//! out fire again; every open alert's status is re-derived (silences, inhibition, ack);
//! due escalation steps are sent; due groups are flushed; receivers whose budget held
//! something back get their summary.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::engine::Engine;
use super::escalation::Progress;
use super::inhibit::Sources;
use super::lifecycle::{Record, Status};
use super::nlog::{self, Entry};
use super::ratelimit;
use super::{Notification, Notified, Reason};

/// Held back this poll, by receiver: what the summary lists.
type Held = BTreeMap<String, Vec<String>>;

impl Engine {
    /// The notifications due at `now` (see the module documentation of `flush.rs`).
    pub fn poll(&mut self, now: u64) -> Vec<Notification> {
        self.last_poll = self.last_poll.max(now);
        self.expire_acks(now);
        self.refresh(now);
        let mut out = Vec::new();
        let mut held = Held::new();
        self.escalate(now, &mut out, &mut held);
        self.flush_groups(now, &mut out, &mut held);
        for (receiver, mut groups) in held {
            if self.limiter.take_summary(&receiver, now) {
                let n = groups.len();
                groups.dedup();
                self.counters.summaries += 1;
                out.push(Notification {
                    receiver,
                    group_key: "summary".into(),
                    group_labels: Default::default(),
                    reason: Reason::Summary { held: n, groups },
                    alerts: Vec::new(),
                    omitted: 0,
                    at_unix_ms: now,
                    records: Vec::new(),
                });
            }
        }
        self.gc(now);
        out
    }

    /// The next time [`Engine::poll`] has something to do (`None`: nothing is scheduled).
    pub fn poll_timeout(&self) -> Option<u64> {
        let groups = self.groups.values().map(|g| g.next_flush);
        let alerts = self.alerts.values().filter_map(|t| {
            if t.record.is_resolved() {
                return None;
            }
            if let Some(a) = &t.record.ack {
                return Some(a.until_unix_ms);
            }
            let p = t.escalation.as_ref()?;
            Some(self.policies[p.policy].due(p)?.max(t.not_before))
        });
        // A silence starting or ending changes statuses (and the history).
        let last = self.last_poll;
        let silences = self.silences.values().flat_map(move |s| {
            [s.starts_at_unix_ms, s.ends_at_unix_ms]
                .into_iter()
                .filter(move |&t| t > last)
        });
        groups.chain(alerts).chain(silences).min()
    }

    fn expire_acks(&mut self, now: u64) {
        let cap = self.config.history_len;
        for t in self.alerts.values_mut() {
            let Some(until) = t.record.ack.as_ref().map(|a| a.until_unix_ms) else {
                continue;
            };
            if until > now || t.record.is_resolved() {
                continue;
            }
            t.record.ack = None;
            if !t.record.status.is_muted() {
                t.record.set_status(Status::Firing, until, cap);
            }
            self.changes.mark(&t.record.id);
            // The escalation starts over from its first step.
            if let Some(p) = &mut t.escalation {
                *p = Progress {
                    policy: p.policy,
                    start_unix_ms: until,
                    pass: 0,
                    step: 0,
                };
                t.not_before = 0;
            }
        }
    }

    /// Re-derives every unresolved alert's status at `now`.
    fn refresh(&mut self, now: u64) {
        let sources = Sources::new(
            &self.rules,
            self.alerts
                .values()
                .filter(|t| !t.record.is_resolved())
                .map(|t| (t.record.id.as_str(), &t.record.labels)),
        );
        let cap = self.config.history_len;
        for t in self.alerts.values_mut() {
            if t.record.is_resolved() {
                continue;
            }
            let silenced: Vec<String> = self
                .silences
                .values()
                .filter(|s| s.mutes(&t.record.labels, now))
                .map(|s| s.id.clone())
                .collect();
            let inhibitor = sources.inhibitor(&self.rules, &t.record.id, &t.record.labels);
            let status = t.record.derive(silenced, inhibitor);
            if t.record.set_status(status, now, cap) {
                self.changes.mark(&t.record.id);
            }
        }
    }

    fn escalate(&mut self, now: u64, out: &mut Vec<Notification>, held: &mut Held) {
        // (receiver, policy, pass, step) -> alert keys, in key order.
        let mut batches: BTreeMap<(String, usize, u32, usize), Vec<String>> = BTreeMap::new();
        for (key, t) in &mut self.alerts {
            if t.record.is_resolved() || t.record.ack.is_some() || t.not_before > now {
                continue;
            }
            let Some(p) = &mut t.escalation else { continue };
            let policy = &self.policies[p.policy];
            while policy.due(p).is_some_and(|d| d <= now) {
                let mut next = p.clone();
                policy.advance(&mut next);
                // Only the latest of several overdue steps is sent; one that comes due
                // while the alert is muted is skipped.
                if policy.due(&next).is_some_and(|d| d <= now) || t.record.status.is_muted() {
                    *p = next;
                    continue;
                }
                let receiver = policy.steps[p.step].receiver.clone();
                batches
                    .entry((receiver, p.policy, p.pass, p.step))
                    .or_default()
                    .push(key.clone());
                break;
            }
        }
        for ((receiver, policy, pass, step), keys) in batches {
            let name = self.policies[policy].name.clone();
            let group_key = format!("escalation:{name}");
            if !self.limiter.take(&receiver, now) {
                let free = self.limiter.free_at(&receiver, now).max(now + 1);
                for k in &keys {
                    if let Some(t) = self.alerts.get_mut(k) {
                        t.not_before = free;
                    }
                }
                self.counters.held += 1;
                held.entry(receiver).or_default().push(group_key);
                continue;
            }
            let mut records = Vec::new();
            let mut alerts = Vec::new();
            for k in &keys {
                let Some(t) = self.alerts.get_mut(k) else {
                    continue;
                };
                let Some(p) = &mut t.escalation else { continue };
                self.policies[policy].advance(p);
                records.push(nlog::Record {
                    key: nlog::escalation_key(&t.record.id),
                    entry: Entry {
                        hash: format!("{pass}.{step}"),
                        sent_unix_ms: now,
                        open: 1,
                        escalation: Some(p.clone()),
                    },
                });
                alerts.push(Notified::of(&t.record));
            }
            for r in &records {
                self.log.apply(r.clone());
            }
            self.counters.escalations += 1;
            out.push(self.notification(
                receiver,
                group_key,
                Default::default(),
                Reason::Escalation {
                    policy: name,
                    pass,
                    step,
                },
                alerts,
                now,
                records,
            ));
        }
    }

    fn flush_groups(&mut self, now: u64, out: &mut Vec<Notification>, held: &mut Held) {
        // No group waits longer than its wait or interval: a flush time further ahead
        // means the wall clock was set back, and the group must not sit out the gap.
        for g in self.groups.values_mut() {
            let longest = now.saturating_add(g.wait.max(g.interval).max(ratelimit::WINDOW_MS));
            if g.next_flush > longest {
                g.next_flush = now;
            }
        }
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for gk in due {
            let Some(g) = self.groups.get(&gk) else {
                continue;
            };
            let (mut open, mut resolved, mut unacked) = (Vec::new(), Vec::new(), 0usize);
            let mut gone = Vec::new();
            for key in &g.members {
                let Some(t) = self.alerts.get(key) else {
                    gone.push(key.clone());
                    continue;
                };
                match &t.record.status {
                    Status::Firing => {
                        unacked += 1;
                        open.push(&t.record);
                    }
                    Status::Acknowledged { .. } => open.push(&t.record),
                    Status::Resolved { .. } => {
                        gone.push(key.clone());
                        // Never shown while a silence matches it, resolved or not.
                        if !self
                            .silences
                            .values()
                            .any(|s| s.mutes(&t.record.labels, now))
                        {
                            resolved.push(&t.record);
                        }
                    }
                    Status::Silenced { .. } | Status::Inhibited { .. } => {}
                }
            }
            let hash = digest(&open);
            let log_key = nlog::group_key(&gk);
            let send = match self.log.get(&log_key) {
                None => !open.is_empty(),
                Some(e) if e.hash != hash => {
                    !open.is_empty() || (e.open > 0 && !resolved.is_empty())
                }
                Some(e) => {
                    (unacked > 0 && now >= e.sent_unix_ms.saturating_add(g.repeat))
                        || g.repush.is_some_and(|every| {
                            !open.is_empty() && now >= e.sent_unix_ms.saturating_add(every)
                        })
                }
            };
            let (receiver, interval) = (g.receiver.clone(), g.interval);
            // A group with open alerts is looked at again by its re-push period at most.
            let interval = match g.repush {
                Some(every) if !open.is_empty() => interval.min(every),
                _ => interval,
            };
            if send {
                if self.notifying && !self.limiter.take(&receiver, now) {
                    let free = self.limiter.free_at(&receiver, now).max(now + 1);
                    if let Some(g) = self.groups.get_mut(&gk) {
                        g.next_flush = free;
                    }
                    self.counters.held += 1;
                    held.entry(receiver).or_default().push(gk);
                    continue;
                }
                let record = nlog::Record {
                    key: log_key,
                    entry: Entry {
                        hash,
                        sent_unix_ms: now,
                        open: u32::try_from(open.len()).unwrap_or(u32::MAX),
                        escalation: None,
                    },
                };
                let alerts: Vec<Notified> = open
                    .iter()
                    .chain(resolved.iter())
                    .map(|r| Notified::of(r))
                    .collect();
                let labels = g.labels.clone();
                if self.notifying {
                    self.log.apply(record.clone());
                }
                self.counters.notifications += 1;
                let n = self.notification(
                    receiver,
                    gk.clone(),
                    labels,
                    Reason::Group,
                    alerts,
                    now,
                    vec![record],
                );
                out.push(n);
            }
            // Resolved alerts were reported (or were not news): they leave the group.
            self.leave(&gk, &gone);
            if let Some(g) = self.groups.get_mut(&gk) {
                g.next_flush = now.saturating_add(interval);
                if g.members.is_empty() {
                    self.groups.remove(&gk);
                }
            }
        }
    }

    /// Takes `keys` out of group `gk`; an alert in no group any more is done with.
    fn leave(&mut self, gk: &str, keys: &[String]) {
        for key in keys {
            if let Some(g) = self.groups.get_mut(gk) {
                g.members.remove(key);
            }
            let Some(t) = self.alerts.get_mut(key) else {
                continue;
            };
            t.groups.remove(gk);
            if t.groups.is_empty()
                && let Some(t) = self.alerts.remove(key)
            {
                self.ids.remove(&t.record.id);
                self.retire(t.record);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn notification(
        &self,
        receiver: String,
        group_key: String,
        group_labels: super::Labels,
        reason: Reason,
        mut alerts: Vec<Notified>,
        now: u64,
        records: Vec<nlog::Record>,
    ) -> Notification {
        let max = self.config.max_alerts_per_notification.max(1);
        let omitted = alerts.len().saturating_sub(max);
        alerts.truncate(max);
        Notification {
            receiver,
            group_key,
            group_labels,
            reason,
            alerts,
            omitted,
            at_unix_ms: now,
            records,
        }
    }

    fn gc(&mut self, now: u64) {
        let keep = self.config.retention_ms;
        self.silences
            .retain(|_, s| now.saturating_sub(s.ends_at_unix_ms) < keep);
        self.log.gc(now, keep);
        self.pending_acks.retain(|_, a| a.until_unix_ms > now);
    }
}

/// The digest of a group's open alerts: their ids and whether each is acknowledged.
fn digest(open: &[&Record]) -> String {
    let mut h = Sha256::new();
    for r in open {
        h.update(r.id.as_bytes());
        h.update([u8::from(matches!(r.status, Status::Acknowledged { .. }))]);
    }
    super::hex(&h.finalize()[..16])
}
