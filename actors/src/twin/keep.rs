//! The region master's side of the twins: the twins of its members, judged against their
//! desired state into drift records.
//!
//! [`Keeper`] takes members' reports while this node leads ([`Keeper::lead`]), refuses a
//! report that does not come from the node it describes, forgets the twins of nodes that
//! left the region, and judges a twin each time it arrives and every twin when the desired
//! state changes. The comparison itself is handed in ([`Judge`]), so that this core owns
//! the bookkeeping and the desired-state module owns the rules.
//!
//! When this node stops leading it keeps nothing: the next master rebuilds the twins from
//! the reports every member sends it when the master changes, and raises the drift alerts
//! again (the alert path folds them by key).
//!
//! Sans-IO: times are Unix milliseconds passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Report, Twin};
use crate::drift::{self, Drift, Event, Finding};
use crate::node;

/// What a comparison needs beside the twin: facts of the region.
pub use crate::desired::Context;

/// Compares a twin with its node's desired state: `None` when the node has none (it
/// reports no drift), else the findings.
pub type Judge<'a> = &'a dyn Fn(&Twin, &Context) -> Option<Vec<Finding>>;

/// A member's twin as the master holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub twin: Twin,
    pub received_ms: u64,
    /// Whether a desired state applies to it.
    pub desired: bool,
    pub drift_score: u32,
    /// Seconds the twin's policy version has differed from the master's (`None`: the
    /// same, or not known).
    #[serde(default)]
    pub stale_by_s: Option<u64>,
}

/// Why a report was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this node is not the master of region {0}")]
    NotLeading(String),
    #[error("a twin of region {got} sent to region {want}")]
    Region { got: String, want: String },
    #[error("a twin of {claimed} sent by {from}: a node reports only its own twin")]
    NotAuthor { claimed: String, from: node::Id },
    #[error("twin version {got} is older than version {held} already held")]
    Stale { got: u64, held: u64 },
}

/// The master's twins and drift.
///
/// Feed it with [`Keeper::lead`], [`Keeper::members`], [`Keeper::report`] and
/// [`Keeper::rejudge`]; each returns the drift [`Event`]s to raise or resolve.
#[derive(Debug)]
pub struct Keeper {
    region: String,
    leading: bool,
    twins: BTreeMap<node::Id, Held>,
    /// Per member, its drift records' first-seen times as an earlier master told it.
    since: BTreeMap<node::Id, BTreeMap<String, u64>>,
    drift: Drift,
    /// Resolved drift records kept (see [`Drift::new`]).
    keep_resolved: usize,
}

impl Keeper {
    pub fn new(region: String, keep_resolved: usize) -> Keeper {
        Keeper {
            region,
            leading: false,
            twins: BTreeMap::new(),
            since: BTreeMap::new(),
            drift: Drift::new(keep_resolved),
            keep_resolved,
        }
    }

    pub fn leading(&self) -> bool {
        self.leading
    }

    /// This node leads the region (or no longer does: everything held is dropped, with no
    /// event, since the next master judges again).
    pub fn lead(&mut self, leading: bool) {
        if leading == self.leading {
            return;
        }
        self.leading = leading;
        if !leading {
            self.twins.clear();
            self.since.clear();
            self.drift = Drift::new(self.keep_resolved);
        }
    }

    /// The region's members now: twins of nodes that left are dropped and their drift
    /// resolves.
    pub fn members(&mut self, now_ms: u64, members: &[node::Id]) -> Vec<Event> {
        let gone: Vec<node::Id> = self
            .twins
            .keys()
            .filter(|p| !members.contains(p))
            .cloned()
            .collect();
        let mut events = Vec::new();
        for p in gone {
            self.twins.remove(&p);
            self.since.remove(&p);
            events.extend(self.drift.forget(now_ms, &p));
        }
        events
    }

    /// A member's twin, sent by `from`.
    pub fn report(
        &mut self,
        now_ms: u64,
        from: &node::Id,
        report: Report,
        ctx: &Context,
        judge: Judge<'_>,
    ) -> Result<Vec<Event>, Refusal> {
        if !self.leading {
            return Err(Refusal::NotLeading(self.region.clone()));
        }
        if report.region != self.region || report.twin.identity.value.region != self.region {
            return Err(Refusal::Region {
                got: report.region,
                want: self.region.clone(),
            });
        }
        if super::peer(&report.twin) != *from {
            return Err(Refusal::NotAuthor {
                claimed: report.twin.identity.value.peer.clone(),
                from: from.clone(),
            });
        }
        if let Some(h) = self.twins.get(from)
            && h.twin.identity.value.incarnation == report.twin.identity.value.incarnation
            && h.twin.version > report.twin.version
        {
            return Err(Refusal::Stale {
                got: report.twin.version,
                held: h.twin.version,
            });
        }
        self.since.insert(from.clone(), report.drift_since);
        let mut held = Held {
            twin: report.twin,
            received_ms: now_ms,
            desired: false,
            drift_score: 0,
            stale_by_s: None,
        };
        let events = self.judge_one(now_ms, from, &mut held, ctx, judge);
        self.twins.insert(from.clone(), held);
        Ok(events)
    }

    /// The desired state (or the region's facts) changed: every twin is judged again.
    pub fn rejudge(&mut self, now_ms: u64, ctx: &Context, judge: Judge<'_>) -> Vec<Event> {
        let mut twins = std::mem::take(&mut self.twins);
        let mut events = Vec::new();
        for (peer, held) in twins.iter_mut() {
            events.extend(self.judge_one(now_ms, peer, held, ctx, judge));
        }
        self.twins = twins;
        events
    }

    fn judge_one(
        &mut self,
        now_ms: u64,
        peer: &node::Id,
        held: &mut Held,
        ctx: &Context,
        judge: Judge<'_>,
    ) -> Vec<Event> {
        let findings = judge(&held.twin, ctx);
        held.desired = findings.is_some();
        let id = &held.twin.identity.value;
        let empty = BTreeMap::new();
        let events = self.drift.judge(
            now_ms,
            peer,
            &id.name,
            &id.role,
            findings.unwrap_or_default(),
            self.since.get(peer).unwrap_or(&empty),
        );
        held.drift_score = self.drift.score(peer);
        events
    }

    /// Service probe states across the twins held, for [`Context::services`].
    pub fn services(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for h in self.twins.values() {
            for (name, state) in &h.twin.observed.value.services {
                out.insert(name.clone(), state.clone());
            }
        }
        out
    }

    pub fn twins(&self) -> impl Iterator<Item = &Held> {
        self.twins.values()
    }

    pub fn twin(&self, peer: &node::Id) -> Option<&Held> {
        self.twins.get(peer)
    }

    pub fn drift(&self) -> &Drift {
        &self.drift
    }

    /// The drift records open about `peer`, by subject, with their first-seen time: the
    /// answer to its report, which it sends back to the next master.
    pub fn since_of(&self, peer: &node::Id) -> BTreeMap<String, u64> {
        self.drift
            .records()
            .filter(|r| &r.node == peer)
            .map(|r| (r.subject.clone(), r.first_seen_ms))
            .collect()
    }
}

/// The drift events as alerts to raise and alert keys to clear.
pub fn alerts(
    events: Vec<Event>,
    region: &str,
    now_ms: u64,
) -> (Vec<crate::alert::Alert>, Vec<String>) {
    let (mut raise, mut clear) = (Vec::new(), Vec::new());
    for e in events {
        match e {
            Event::Raised(r) => raise.push(drift::alert(&r, region, now_ms)),
            Event::Resolved(r) => clear.push(drift::alert_key(&r)),
        }
    }
    (raise, clear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spike::Severity;
    use crate::twin::{FileFact, Identity, Section};

    fn twin(peer: &str, region: &str, version: u64, file: FileFact) -> Twin {
        let mut t = Twin {
            version,
            identity: Section {
                updated_ms: 1,
                value: Identity {
                    peer: peer.into(),
                    name: format!("n-{peer}"),
                    region: region.into(),
                    role: "web".into(),
                    incarnation: 1,
                },
            },
            ..Twin::default()
        };
        t.observed.value.files.insert("/etc/a".into(), file);
        t
    }

    fn report(peer: &str, version: u64, file: FileFact) -> Report {
        Report {
            region: "eu".into(),
            twin: twin(peer, "eu", version, file),
            drift_since: BTreeMap::new(),
        }
    }

    /// Desired: /etc/a present with digest 1.
    fn judge(t: &Twin, _: &Context) -> Option<Vec<Finding>> {
        let want = FileFact::Present(crate::spike::Digest([1; 32]));
        let got = t.observed.value.files.get("/etc/a").copied();
        Some(if got == Some(want) {
            Vec::new()
        } else {
            vec![Finding {
                rule: "web.toml:files[/etc/a]".into(),
                subject: "file:/etc/a".into(),
                desired: "sha256:0101...".into(),
                actual: format!("{got:?}"),
                severity: Severity::Medium,
            }]
        })
    }

    #[test]
    fn a_report_is_judged_and_its_fix_resolves_the_drift() {
        let mut k = Keeper::new("eu".into(), 8);
        let ctx = Context::default();
        let p = node::Id::from("p");
        assert!(matches!(
            k.report(1, &p, report("p", 1, FileFact::Absent), &ctx, &judge),
            Err(Refusal::NotLeading(_))
        ));
        k.lead(true);
        let e = k
            .report(1, &p, report("p", 1, FileFact::Absent), &ctx, &judge)
            .expect("taken");
        assert!(matches!(&e[..], [Event::Raised(_)]));
        assert_eq!(k.twin(&p).map(|h| h.drift_score), Some(3));
        let fixed = FileFact::Present(crate::spike::Digest([1; 32]));
        let e = k
            .report(2, &p, report("p", 2, fixed), &ctx, &judge)
            .expect("taken");
        assert!(matches!(&e[..], [Event::Resolved(_)]));
        let (raise, clear) = alerts(e, "eu", 2);
        assert!(raise.is_empty());
        assert_eq!(clear, ["n-p|drift|file:/etc/a"]);
    }

    #[test]
    fn a_new_master_keeps_the_first_seen_time_the_node_was_told() {
        let ctx = Context::default();
        let p = node::Id::from("p");
        let mut first = Keeper::new("eu".into(), 8);
        first.lead(true);
        first
            .report(100, &p, report("p", 1, FileFact::Absent), &ctx, &judge)
            .expect("taken");
        let since = first.since_of(&p);
        assert_eq!(since.get("file:/etc/a"), Some(&100));
        // The master fails over; the node reports to the next one with what it was told.
        let mut next = Keeper::new("eu".into(), 8);
        next.lead(true);
        let mut r = report("p", 2, FileFact::Absent);
        r.drift_since = since;
        next.report(5_000, &p, r, &ctx, &judge).expect("taken");
        let rec = next.drift().records().next().expect("a record");
        assert_eq!((rec.first_seen_ms, rec.last_seen_ms), (100, 5_000));
        // A time from the future is not believed.
        let mut other = Keeper::new("eu".into(), 8);
        other.lead(true);
        let mut r = report("p", 3, FileFact::Absent);
        r.drift_since = [("file:/etc/a".to_string(), 9_999)].into();
        other.report(6_000, &p, r, &ctx, &judge).expect("taken");
        assert_eq!(
            other.drift().records().next().map(|r| r.first_seen_ms),
            Some(6_000)
        );
    }

    #[test]
    fn only_the_node_itself_reports_its_twin_and_never_an_older_one() {
        let mut k = Keeper::new("eu".into(), 8);
        k.lead(true);
        let ctx = Context::default();
        let (p, q) = (node::Id::from("p"), node::Id::from("q"));
        assert!(matches!(
            k.report(1, &q, report("p", 1, FileFact::Absent), &ctx, &judge),
            Err(Refusal::NotAuthor { .. })
        ));
        let mut foreign = report("p", 1, FileFact::Absent);
        foreign.twin.identity.value.region = "us".into();
        assert!(matches!(
            k.report(1, &p, foreign, &ctx, &judge),
            Err(Refusal::Region { .. })
        ));
        k.report(1, &p, report("p", 5, FileFact::Absent), &ctx, &judge)
            .expect("taken");
        assert!(matches!(
            k.report(2, &p, report("p", 4, FileFact::Absent), &ctx, &judge),
            Err(Refusal::Stale { got: 4, held: 5 })
        ));
        // A restarted node (new incarnation) starts its versions again.
        let mut again = report("p", 1, FileFact::Absent);
        again.twin.identity.value.incarnation = 2;
        k.report(3, &p, again, &ctx, &judge).expect("taken");
    }

    #[test]
    fn a_node_that_leaves_resolves_and_a_lost_lead_forgets_everything() {
        let mut k = Keeper::new("eu".into(), 8);
        k.lead(true);
        let ctx = Context::default();
        let (p, q) = (node::Id::from("p"), node::Id::from("q"));
        k.report(1, &p, report("p", 1, FileFact::Absent), &ctx, &judge)
            .expect("taken");
        k.report(1, &q, report("q", 1, FileFact::Absent), &ctx, &judge)
            .expect("taken");
        let e = k.members(2, std::slice::from_ref(&q));
        assert!(matches!(&e[..], [Event::Resolved(r)] if r.node == p));
        assert_eq!(k.twins().count(), 1);
        // Desired state changed to "no desired state": every drift resolves.
        let none = |_: &Twin, _: &Context| None;
        let e = k.rejudge(3, &ctx, &none);
        assert_eq!(e.len(), 1);
        assert_eq!(k.drift().counts().nodes, 0);
        assert_eq!(k.twin(&q).map(|h| h.desired), Some(false));
        k.lead(false);
        assert_eq!(k.twins().count(), 0);
    }
}
