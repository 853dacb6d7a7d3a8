//! Role-aware policy: every spike gets exactly one [`Decision`] (approved, violation or
//! consult), naming the rule that decided it and why.
//!
//! This module owns the compiled policy and its evaluation; [`parse`] owns the file format
//! and its validation, [`judge`] the last good policy across reloads, the latest decisions
//! and their counts. Nothing here reads files or clocks: the node hands in the file's text
//! and the time.
//!
//! # Why a schema of our own, not a policy engine
//!
//! A general engine (cedar-policy was the candidate) was weighed and not taken:
//! - *Decisions.* cedar answers permit or deny; we need a third answer, `consult` (ask the
//!   region's master), and a rule name and reason on every answer. Encoding consult as a
//!   second policy set or an annotation convention would hide the one thing operators read.
//! - *Expressiveness needed.* Per role: globs over a subject (users, paths), port ranges
//!   of new listeners, executables of processes, first match wins. That is a short ordered
//!   list of conditions, not an entity model with principals, actions and resources.
//! - *Errors.* The policy sits beside the node's TOML settings and is edited by the same
//!   operators; TOML spans give `file:line` for syntax errors and each rule's line for
//!   validation errors, with the rule's name.
//! - *Latency and weight.* The p99 goal is 50 µs per decision; a compiled rule list indexed
//!   by spike kind answers in well under a microsecond without allocating. cedar would add
//!   a parser generator, a validator and dozens of crates to a 2-core build.
//! - *Consultation and learning later.* The master will answer consult decisions from
//!   learned patterns; those are `(kind, subject, digest)` facts that slot in as rules of the
//!   same shape ahead of a file's rules, with the same rule references and the same
//!   version digest, rather than being translated into another language.
//!
//! # Evaluation
//!
//! The rules of a file are tried in order and the first that matches decides. A spike no
//! rule matches gets the file's `[defaults]` decision for its kind, else the built-in one:
//! `metric` samples are approved (metrics are judged by anomaly detection, not by policy),
//! `anomaly` spikes (a metric far from its role peers, [`crate::anomaly`]) are violations,
//! so that they become alerts, and every other kind is `consult` (the policy says nothing:
//! ask the fleet). A file's `[defaults]` or rules may decide anomalies otherwise.

pub mod judge;
pub mod parse;

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spike::{Change, Kind, Spike, Value};

pub use parse::{Error, parse};

/// What the policy says about one spike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The change is expected on a server of this role.
    Approved,
    /// The change breaks the role's policy.
    Violation,
    /// The policy cannot tell: the region's master is asked (learned patterns, correlation).
    Consult,
}

impl Decision {
    /// All decisions, in a fixed order (for counters).
    pub const ALL: [Decision; 3] = [Decision::Approved, Decision::Violation, Decision::Consult];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Violation => "violation",
            Decision::Consult => "consult",
        }
    }
}

/// Which rule decided: the file, the rule's name and the line it starts on. Defaults are
/// named `defaults.<kind>`; built-in defaults have the file `builtin` and line 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleId {
    pub file: Arc<str>,
    pub name: String,
    pub line: usize,
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}#{}", self.file, self.name)
        } else {
            write!(f, "{}:{}#{}", self.file, self.line, self.name)
        }
    }
}

/// The decision for one spike, borrowed from the policy (evaluation allocates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'p> {
    pub decision: Decision,
    pub rule: &'p RuleId,
    pub reason: &'p str,
}

/// How many spike kinds there are (the length of per-kind tables).
const KINDS: usize = 11;

/// A kind's position in per-kind tables. Exhaustive on purpose: a new kind must be placed.
fn kind_index(k: Kind) -> usize {
    match k {
        Kind::File => 0,
        Kind::User => 1,
        Kind::Group => 2,
        Kind::Process => 3,
        Kind::Network => 4,
        Kind::Metric => 5,
        Kind::Coverage => 6,
        Kind::Reconcile => 7,
        Kind::Service => 8,
        Kind::Audit => 9,
        Kind::Anomaly => 10,
    }
}

/// Every kind, in [`kind_index`] order.
pub const ALL_KINDS: [Kind; KINDS] = [
    Kind::File,
    Kind::User,
    Kind::Group,
    Kind::Process,
    Kind::Network,
    Kind::Metric,
    Kind::Coverage,
    Kind::Reconcile,
    Kind::Service,
    Kind::Audit,
    Kind::Anomaly,
];

fn change_bit(c: Change) -> u8 {
    match c {
        Change::Added => 1,
        Change::Removed => 2,
        Change::Modified => 4,
        Change::Sample => 8,
    }
}

/// Globs match path separators literally (`/etc/*` is one level, `/etc/**` any depth).
const GLOB: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// One compiled rule. Every condition present must hold; within a list, any item may.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: RuleId,
    pub decision: Decision,
    pub reason: String,
    /// Bit per [`kind_index`]; all bits when the rule names no kind.
    kinds: u16,
    /// Bit per [`change_bit`]; all bits when the rule names no change.
    changes: u8,
    subjects: Vec<glob::Pattern>,
    ports: Vec<RangeInclusive<u16>>,
    exes: Vec<glob::Pattern>,
}

/// What of a spike the rules look at, found once per evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'s> {
    pub kind: Kind,
    pub change: Change,
    pub subject: &'s str,
    /// The listening port of a `network` spike about a listener (`listen tcp 0.0.0.0:80`).
    pub port: Option<u16>,
    /// The executable of a `process` spike, or of the process holding a new listener.
    pub exe: Option<&'s str>,
}

impl<'s> Facts<'s> {
    /// The facts of `spike`.
    pub fn of(spike: &'s Spike) -> Self {
        let exe = match spike.fields.get("exe").and_then(|f| f.after.as_ref()) {
            Some(Value::Text(e)) if !e.is_empty() => Some(e.as_str()),
            // A process's subject is `pid:exe` (exe, or its name when unreadable).
            _ if spike.kind == Kind::Process => spike.subject.split_once(':').map(|(_, e)| e),
            _ => None,
        };
        let port = if spike.kind == Kind::Network {
            listen_port(&spike.subject)
        } else {
            None
        };
        Facts {
            kind: spike.kind,
            change: spike.change,
            subject: &spike.subject,
            port,
            exe,
        }
    }
}

/// The port of a listener subject (`listen tcp 127.0.0.1:80`, `listen tcp6 [::1]:80`).
pub fn listen_port(subject: &str) -> Option<u16> {
    let rest = subject.strip_prefix("listen ")?;
    rest.rsplit_once(':')?.1.parse().ok()
}

impl Rule {
    /// Whether the rule matches.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        self.kinds & (1 << kind_index(f.kind)) != 0
            && self.changes & change_bit(f.change) != 0
            && (self.subjects.is_empty()
                || self
                    .subjects
                    .iter()
                    .any(|p| p.matches_with(f.subject, GLOB)))
            && (self.ports.is_empty()
                || f.port
                    .is_some_and(|p| self.ports.iter().any(|r| r.contains(&p))))
            && (self.exes.is_empty()
                || f.exe
                    .is_some_and(|e| self.exes.iter().any(|p| p.matches_with(e, GLOB))))
    }

    /// Whether the rule has no condition at all (matches every spike).
    fn matches_all(&self) -> bool {
        self.kinds == ALL_KIND_BITS
            && self.changes == ALL_CHANGE_BITS
            && self.subjects.is_empty()
            && self.ports.is_empty()
            && self.exes.is_empty()
    }
}

const ALL_KIND_BITS: u16 = (1 << KINDS) - 1;
const ALL_CHANGE_BITS: u8 = 0b1111;

/// The decision for spikes no rule matches, for one kind.
#[derive(Debug, Clone)]
struct Fallback {
    id: RuleId,
    decision: Decision,
    reason: String,
}

/// A validated, compiled policy: one file's rules and defaults.
#[derive(Debug, Clone)]
pub struct Policy {
    file: Arc<str>,
    version: String,
    rules: Vec<Rule>,
    /// Per kind, the indices of the rules that can match it, in file order.
    by_kind: [Vec<u16>; KINDS],
    defaults: [Fallback; KINDS],
    /// The end of an anomaly (the metric back within its peers' bounds): the end of a
    /// condition, not a change of the host, so no rule judges it.
    ended: Fallback,
}

impl Policy {
    /// The file's name as given to [`parse`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The first 16 hex digits of the sha256 of the file's text: what changed, not when.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The decision for `spike`.
    pub fn evaluate(&self, spike: &Spike) -> Verdict<'_> {
        self.evaluate_facts(&Facts::of(spike))
    }

    /// The decision for a spike's facts: the first matching rule, else the kind's default.
    pub fn evaluate_facts(&self, facts: &Facts<'_>) -> Verdict<'_> {
        if facts.kind == Kind::Anomaly && facts.change == Change::Removed {
            return Verdict {
                decision: self.ended.decision,
                rule: &self.ended.id,
                reason: &self.ended.reason,
            };
        }
        let k = kind_index(facts.kind);
        for &i in &self.by_kind[k] {
            let rule = &self.rules[usize::from(i)];
            if rule.matches(facts) {
                return Verdict {
                    decision: rule.decision,
                    rule: &rule.id,
                    reason: &rule.reason,
                };
            }
        }
        let d = &self.defaults[k];
        Verdict {
            decision: d.decision,
            rule: &d.id,
            reason: &d.reason,
        }
    }

    /// Builds the kind index; `defaults` are the file's own, by kind.
    fn new(
        file: Arc<str>,
        version: String,
        rules: Vec<Rule>,
        defaults: [Option<(Decision, usize)>; KINDS],
    ) -> Policy {
        let mut by_kind: [Vec<u16>; KINDS] = Default::default();
        for (i, r) in rules.iter().enumerate() {
            for (k, list) in by_kind.iter_mut().enumerate() {
                if r.kinds & (1 << k) != 0 {
                    // parse caps a file at u16::MAX rules.
                    list.push(u16::try_from(i).unwrap_or(u16::MAX));
                }
            }
        }
        let defaults = std::array::from_fn(|k| {
            let kind = ALL_KINDS[k].as_str();
            match defaults[k] {
                Some((decision, line)) => Fallback {
                    id: RuleId {
                        file: file.clone(),
                        name: format!("defaults.{kind}"),
                        line,
                    },
                    decision,
                    reason: format!("no rule matches this {kind} change; the file's default"),
                },
                None => builtin(ALL_KINDS[k]),
            }
        });
        Policy {
            file,
            version,
            rules,
            by_kind,
            defaults,
            ended: Fallback {
                id: RuleId {
                    file: Arc::from("builtin"),
                    name: "anomaly.ended".into(),
                    line: 0,
                },
                decision: Decision::Approved,
                reason: "the metric is back within its role peers' bounds".into(),
            },
        }
    }
}

/// The built-in decision for a kind that neither a rule nor the file's defaults decide.
fn builtin(kind: Kind) -> Fallback {
    let (decision, reason) = match kind {
        Kind::Metric => (
            Decision::Approved,
            "metric samples are judged by anomaly detection, not by policy",
        ),
        Kind::Anomaly => (Decision::Violation, "metric deviates from its role peers"),
        _ => (
            Decision::Consult,
            "the policy says nothing about this change: the fleet is asked",
        ),
    };
    Fallback {
        id: RuleId {
            file: Arc::from("builtin"),
            name: format!("defaults.{}", kind.as_str()),
            line: 0,
        },
        decision,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests;
