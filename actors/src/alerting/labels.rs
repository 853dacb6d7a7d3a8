//! Labels and label matchers, as Alertmanager has them.
//!
//! An alert's [`Labels`] are built from an [`alert::Alert`] once, when it is raised; routes,
//! silences and inhibition rules select alerts with [`Matcher`]s. A matcher is written
//! `name op value` with `op` one of `=`, `!=`, `=~`, `!~`; the value may be double-quoted
//! (`severity=~"high|critical"`). Regular expressions are anchored: they must match the
//! whole value, as in Alertmanager. An absent label matches as the empty string.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::alert;
use crate::spike::Severity;

/// Label name to value. Empty values are never stored (empty is absent).
pub type Labels = BTreeMap<String, String>;

/// Annotation name to value: what a notification shows, never matched on.
pub type Annotations = BTreeMap<String, String>;

/// The lowercase name of a severity, as labels and notifications carry it.
/// The labels of `a`: `alertname` (its action), `severity`, `region`, `role`, `node` (its
/// host), `rule`, `kind` (`details.kind` if given, else the ECS category) and `subject`.
/// Empty values are left out.
pub fn of_alert(a: &alert::Alert) -> Labels {
    let kind = a.details.get("kind").unwrap_or(&a.category);
    let pairs = [
        ("alertname", a.action.as_str()),
        ("severity", a.severity.name()),
        ("region", a.region.as_str()),
        ("role", a.role.as_str()),
        ("node", a.host.as_str()),
        ("rule", a.rule.as_deref().unwrap_or("")),
        ("kind", kind.as_str()),
        ("subject", a.subject.as_deref().unwrap_or("")),
    ];
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The annotations of `a`: `summary`, `reason`, `decision`, `term` (those it has),
/// `category` (its ECS category) and each of its details (`servers`, `policy`, ...) under
/// its name made a valid label name (other characters become `_`); a detail never
/// replaces one of the former.
pub fn annotations_of(a: &alert::Alert) -> Annotations {
    let mut out = Annotations::new();
    for (k, v) in &a.details {
        let name: String = k
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let name = if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
            format!("_{name}")
        } else {
            name
        };
        if !v.is_empty() {
            out.insert(name, v.clone());
        }
    }
    if !a.category.is_empty() {
        out.insert("category".into(), a.category.clone());
    }
    let summary = match &a.subject {
        Some(s) => format!("{} on {}: {s}", a.action, a.host),
        None => format!("{} on {}", a.action, a.host),
    };
    out.insert("summary".into(), summary);
    if !a.reason.is_empty() {
        out.insert("reason".into(), a.reason.clone());
    }
    if let Some(d) = &a.decision {
        out.insert("decision".into(), d.clone());
    }
    if let Some(t) = a.term {
        out.insert("term".into(), t.to_string());
    }
    out
}

/// Annotations that have their own field in [`alert::Alert`]; the others are its details.
const NAMED: [&str; 5] = ["summary", "reason", "decision", "term", "category"];

/// The alert a record was made from, as far as its labels and annotations tell: what a
/// member sends its master again for an alert it tracks (the same key and first firing,
/// so the same id there).
pub fn alert_of(r: &super::Record) -> alert::Alert {
    let label = |k: &str| r.labels.get(k).cloned().unwrap_or_default();
    let note = |k: &str| r.annotations.get(k).cloned();
    let severity = Severity::from_name(r.labels.get("severity").map_or("", String::as_str));
    alert::Alert {
        key: r.key.clone(),
        at_unix_ms: r.starts_at_unix_ms,
        severity,
        category: note("category").unwrap_or_else(|| label("kind")),
        action: label("alertname"),
        host: label("node"),
        region: label("region"),
        role: label("role"),
        rule: r.labels.get("rule").cloned(),
        reason: note("reason").unwrap_or_default(),
        decision: note("decision"),
        term: note("term").and_then(|t| t.parse().ok()),
        subject: r.labels.get("subject").cloned(),
        details: r
            .annotations
            .iter()
            .filter(|(k, _)| !NAMED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    NotEq,
    /// `=~`
    Re,
    /// `!~`
    NotRe,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::NotEq => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        }
    }
}

/// Why a matcher was refused. The message quotes the matcher as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad matcher `{matcher}`: {reason}")]
pub struct MatcherError {
    pub matcher: String,
    pub reason: String,
}

/// One label matcher. Serialized as its text (`role="database"`), so that silences and
/// settings carry it as written.
#[derive(Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    /// The anchored regex for `=~` and `!~`.
    re: Option<Regex>,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Matcher({self})")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self
            .value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        write!(f, "{}{}\"{escaped}\"", self.name, self.op.as_str())
    }
}

impl Matcher {
    /// A matcher from its parts; `=~`/`!~` values are compiled (anchored).
    pub fn new(name: &str, op: Op, value: &str) -> Result<Matcher, MatcherError> {
        let err = |reason: String| MatcherError {
            matcher: format!("{name}{}{value}", op.as_str()),
            reason,
        };
        if !valid_name(name) {
            return Err(err(format!(
                "label name {name:?} must be letters, digits and _ (not starting with a digit)"
            )));
        }
        let re = match op {
            Op::Re | Op::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| err(format!("invalid regular expression: {e}")))?,
            ),
            Op::Eq | Op::NotEq => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    /// Parses `name op value`, spaces allowed around each part, the value bare or
    /// double-quoted (with `\"`, `\\` and `\n` escapes).
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        let err = |reason: &str| MatcherError {
            matcher: text.to_string(),
            reason: reason.to_string(),
        };
        let t = text.trim();
        let end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        let name = &t[..end];
        if name.is_empty() {
            return Err(err("no label name before the operator"));
        }
        let rest = t[end..].trim_start();
        let op = if rest.starts_with("=~") {
            Op::Re
        } else if rest.starts_with("!~") {
            Op::NotRe
        } else if rest.starts_with("!=") {
            Op::NotEq
        } else if rest.starts_with('=') {
            Op::Eq
        } else {
            return Err(err("expected one of =, !=, =~, !~ after the label name"));
        };
        let raw = rest[op.as_str().len()..].trim();
        let value = if let Some(inner) = raw.strip_prefix('"') {
            let Some(inner) = inner.strip_suffix('"') else {
                return Err(err("the quoted value has no closing quote"));
            };
            unescape(inner).ok_or_else(|| err("a quote inside the value must be escaped (\\\")"))?
        } else if raw.contains('"') {
            return Err(err("a quoted value must be quoted whole"));
        } else {
            raw.to_string()
        };
        Matcher::new(name, op, &value).map_err(|e| MatcherError {
            matcher: text.to_string(),
            reason: e.reason,
        })
    }

    /// Whether the label's value (absent: empty) satisfies this matcher.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.op, &self.re) {
            (Op::Eq, _) => value == self.value,
            (Op::NotEq, _) => value != self.value,
            (Op::Re, Some(re)) => re.is_match(value),
            (Op::NotRe, Some(re)) => !re.is_match(value),
            // Never built: new() compiles every regex matcher.
            (Op::Re | Op::NotRe, None) => false,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

/// Whether every matcher matches (true for none).
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Parses a list of matchers; the error names the first bad one.
pub fn parse_all(texts: &[String]) -> Result<Vec<Matcher>, (usize, MatcherError)> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| Matcher::parse(t).map_err(|e| (i, e)))
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Matcher::parse(&text).map_err(serde::de::Error::custom)
    }
}
