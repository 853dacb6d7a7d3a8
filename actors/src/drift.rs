//! Drift records: where a node differs from its desired state, since when, and what was
//! fixed.
//!
//! The region master holds one [`Drift`]. Each time a member's twin is judged against its
//! desired state, [`Drift::judge`] takes the findings for that node and replaces the node's
//! set of records: a new subject opens a record (first seen now), a known one is seen
//! again (last seen now; desired or actual may have changed), and a record whose finding
//! is gone is resolved and kept in a bounded list of resolved records. Each of these is
//! an [`Event`] the caller turns into alerts (`drift`, resolved when the drift clears).
//!
//! Sans-IO: times are Unix milliseconds passed in; nothing here reads a clock.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::node;
use crate::spike::Severity;

/// One difference between a node's twin and its desired state, as the comparison found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The desired-state entry that owns it (`web.toml:files[/etc/ssh/sshd_config]`).
    pub rule: String,
    /// What differs (`file:/etc/ssh/sshd_config`, `package:openssl`, `port:23`).
    pub subject: String,
    pub desired: String,
    pub actual: String,
    pub severity: Severity,
}

/// A drift record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub node: node::Id,
    pub name: String,
    pub role: String,
    pub subject: String,
    pub rule: String,
    pub desired: String,
    pub actual: String,
    pub severity: Severity,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// When it was fixed (resolved records only).
    pub resolved_ms: Option<u64>,
}

/// What changed in the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new drift, or a known one whose desired, actual or severity changed.
    Raised(Record),
    /// A drift fixed (or its node gone).
    Resolved(Record),
}

/// Drift counts by severity, as summaries and meters show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub low: u32,
    pub medium: u32,
    pub high: u32,
    /// Nodes with at least one drift record.
    pub nodes: u32,
}

/// The weight of a severity in a node's drift score.
pub fn weight(s: Severity) -> u32 {
    match s {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 3,
        Severity::High | Severity::Critical => 10,
    }
}

/// The region's drift records.
///
/// Feed it with [`Drift::judge`] after each comparison and [`Drift::forget`] when a node
/// leaves the region; read it with [`Drift::records`], [`Drift::resolved`],
/// [`Drift::score`] and [`Drift::counts`].
#[derive(Debug, Default)]
pub struct Drift {
    open: BTreeMap<node::Id, BTreeMap<String, Record>>,
    resolved: VecDeque<Record>,
    keep_resolved: usize,
}

impl Drift {
    /// `keep_resolved`: resolved records kept for the API, oldest dropped first.
    pub fn new(keep_resolved: usize) -> Drift {
        Drift {
            keep_resolved,
            ..Drift::default()
        }
    }

    /// Replaces `node`'s records with what `findings` say, at `now_ms`. A record new here
    /// takes its first-seen time from `since` (what an earlier master told the node, by
    /// subject), so that a failover does not make old drift look new.
    pub fn judge(
        &mut self,
        now_ms: u64,
        node: &node::Id,
        name: &str,
        role: &str,
        findings: Vec<Finding>,
        since: &BTreeMap<String, u64>,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut before = self.open.remove(node).unwrap_or_default();
        let mut now_open = BTreeMap::new();
        for f in findings {
            let record = match before.remove(&f.subject) {
                Some(mut r) => {
                    let changed = (&r.desired, &r.actual, r.severity, &r.rule)
                        != (&f.desired, &f.actual, f.severity, &f.rule);
                    r.last_seen_ms = now_ms;
                    r.name = name.to_string();
                    r.role = role.to_string();
                    r.desired = f.desired;
                    r.actual = f.actual;
                    r.severity = f.severity;
                    r.rule = f.rule;
                    if changed {
                        events.push(Event::Raised(r.clone()));
                    }
                    r
                }
                None => {
                    let first = since
                        .get(&f.subject)
                        .copied()
                        .filter(|t| *t <= now_ms)
                        .unwrap_or(now_ms);
                    let r = Record {
                        node: node.clone(),
                        name: name.to_string(),
                        role: role.to_string(),
                        subject: f.subject,
                        rule: f.rule,
                        desired: f.desired,
                        actual: f.actual,
                        severity: f.severity,
                        first_seen_ms: first,
                        last_seen_ms: now_ms,
                        resolved_ms: None,
                    };
                    events.push(Event::Raised(r.clone()));
                    r
                }
            };
            now_open.insert(record.subject.clone(), record);
        }
        for (_, r) in before {
            events.push(Event::Resolved(self.resolve(r, now_ms)));
        }
        if !now_open.is_empty() {
            self.open.insert(node.clone(), now_open);
        }
        events
    }

    /// `node` left the region (or is no longer judged): its records resolve.
    pub fn forget(&mut self, now_ms: u64, node: &node::Id) -> Vec<Event> {
        let gone = self.open.remove(node).unwrap_or_default();
        gone.into_values()
            .map(|r| Event::Resolved(self.resolve(r, now_ms)))
            .collect()
    }

    fn resolve(&mut self, mut r: Record, now_ms: u64) -> Record {
        r.resolved_ms = Some(now_ms);
        if self.keep_resolved > 0 {
            if self.resolved.len() >= self.keep_resolved {
                self.resolved.pop_front();
            }
            self.resolved.push_back(r.clone());
        }
        r
    }

    /// The open records, by node then subject.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.open.values().flat_map(|m| m.values())
    }

    /// Resolved records, oldest first.
    pub fn resolved(&self) -> impl Iterator<Item = &Record> {
        self.resolved.iter()
    }

    /// A node's drift score: the sum of its records' severity weights.
    pub fn score(&self, node: &node::Id) -> u32 {
        self.open
            .get(node)
            .map_or(0, |m| m.values().map(|r| weight(r.severity)).sum())
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            nodes: self.open.len() as u32,
            ..Counts::default()
        };
        for r in self.records() {
            match r.severity {
                Severity::Info | Severity::Low => c.low += 1,
                Severity::Medium => c.medium += 1,
                Severity::High | Severity::Critical => c.high += 1,
            }
        }
        c
    }

    /// The records to show beyond the region: the most severe first, at most `limit`.
    pub fn worst(&self, limit: usize) -> Vec<Record> {
        let mut all: Vec<&Record> = self.records().collect();
        all.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.first_seen_ms.cmp(&b.first_seen_ms))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        all.into_iter().take(limit).cloned().collect()
    }
}

/// The alert key of a drift record: one alert per node and subject.
pub fn alert_key(r: &Record) -> String {
    format!("{}|drift|{}", r.name, r.subject)
}

/// The alert for an open drift record (`region`: the master's), raised through the
/// region's alert path with action `drift`.
pub fn alert(r: &Record, region: &str, now_ms: u64) -> Alert {
    let mut details = BTreeMap::new();
    details.insert("desired".to_string(), r.desired.clone());
    details.insert("actual".to_string(), r.actual.clone());
    details.insert("first_seen_ms".to_string(), r.first_seen_ms.to_string());
    details.insert("peer".to_string(), r.node.to_string());
    Alert {
        key: alert_key(r),
        at_unix_ms: now_ms,
        severity: r.severity,
        category: "configuration".to_string(),
        action: "drift".to_string(),
        host: r.name.clone(),
        region: region.to_string(),
        role: r.role.clone(),
        rule: Some(r.rule.clone()),
        reason: format!(
            "{} drifted from its desired state: {} is {}, desired {}",
            r.name, r.subject, r.actual, r.desired
        ),
        decision: None,
        term: None,
        subject: Some(r.subject.clone()),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(subject: &str, actual: &str, severity: Severity) -> Finding {
        Finding {
            rule: format!("web.toml:{subject}"),
            subject: subject.to_string(),
            desired: "sha256:aa".to_string(),
            actual: actual.to_string(),
            severity,
        }
    }

    fn raised(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Raised(r) => Some(r.subject.as_str()),
                Event::Resolved(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_drift_opens_is_seen_again_and_resolves_when_fixed() {
        let mut d = Drift::new(8);
        let n = node::Id::from("p1");
        let e = d.judge(
            10,
            &n,
            "web-1",
            "web",
            vec![finding("file:/a", "sha256:bb", Severity::Medium)],
            &BTreeMap::new(),
        );
        assert_eq!(raised(&e), ["file:/a"]);
        // Seen again unchanged: no event, last seen moves, first seen stays.
        let e = d.judge(
            20,
            &n,
            "web-1",
            "web",
            vec![finding("file:/a", "sha256:bb", Severity::Medium)],
            &BTreeMap::new(),
        );
        assert!(e.is_empty());
        let r = d.records().next().expect("open");
        assert_eq!((r.first_seen_ms, r.last_seen_ms), (10, 20));
        assert_eq!(d.score(&n), 3);
        // The actual changed: raised again (the alert's text follows).
        let e = d.judge(
            30,
            &n,
            "web-1",
            "web",
            vec![finding("file:/a", "absent", Severity::Medium)],
            &BTreeMap::new(),
        );
        assert_eq!(raised(&e), ["file:/a"]);
        // Fixed.
        let e = d.judge(40, &n, "web-1", "web", Vec::new(), &BTreeMap::new());
        assert!(matches!(&e[..], [Event::Resolved(r)] if r.resolved_ms == Some(40)));
        assert_eq!(d.records().count(), 0);
        assert_eq!(d.score(&n), 0);
        assert_eq!(d.resolved().count(), 1);
        assert_eq!(d.counts(), Counts::default());
    }

    #[test]
    fn counts_scores_and_the_worst_first() {
        let mut d = Drift::new(1);
        let (a, b) = (node::Id::from("a"), node::Id::from("b"));
        d.judge(
            1,
            &a,
            "a",
            "web",
            vec![
                finding("file:/x", "absent", Severity::Low),
                finding("port:23", "listening", Severity::High),
            ],
            &BTreeMap::new(),
        );
        d.judge(
            2,
            &b,
            "b",
            "db",
            vec![finding("package:openssl", "1.0", Severity::Medium)],
            &BTreeMap::new(),
        );
        assert_eq!(
            d.counts(),
            Counts {
                low: 1,
                medium: 1,
                high: 1,
                nodes: 2
            }
        );
        assert_eq!(d.score(&a), 11);
        let worst: Vec<String> = d.worst(2).into_iter().map(|r| r.subject).collect();
        assert_eq!(worst, ["port:23", "package:openssl"]);
        // A node that leaves resolves its records; the resolved list stays bounded.
        let e = d.forget(3, &a);
        assert_eq!(e.len(), 2);
        assert_eq!(d.resolved().count(), 1);
        assert_eq!(d.counts().nodes, 1);
    }

    #[test]
    fn the_alert_names_node_subject_and_both_states() {
        let mut d = Drift::new(1);
        let n = node::Id::from("p");
        d.judge(
            5,
            &n,
            "db-1",
            "database",
            vec![finding("file:/etc/x", "absent", Severity::Medium)],
            &BTreeMap::new(),
        );
        let r = d.records().next().expect("open").clone();
        let a = alert(&r, "eu", 6);
        assert_eq!(a.action, "drift");
        assert_eq!(a.key, "db-1|drift|file:/etc/x");
        assert_eq!(a.key, alert_key(&r));
        assert!(a.reason.contains("absent") && a.reason.contains("sha256:aa"));
        assert_eq!(a.severity, Severity::Medium);
    }
}
