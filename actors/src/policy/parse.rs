//! The policy file format (TOML) and its validation: text in, a compiled [`Policy`] or an
//! [`Error`] naming the file, the line and the rule out. Nothing is read from disk here.
//!
//! ```toml
//! [defaults]                  # optional: what no rule decides, by spike kind
//! process = "consult"
//!
//! [[rules]]                   # tried in order; the first that matches decides
//! name = "deploy-users"       # unique in the file: letters, digits, - _ .
//! decision = "approved"       # approved | violation | consult
//! reason = "deployment users are expected on web servers"
//! kinds = ["user"]            # spike kinds; left out: any
//! changes = ["added"]         # added | removed | modified | sample; left out: any
//! subjects = ["deploy*"]      # globs over the subject (user, path, ...); left out: any
//! ports = [80, "8000-8099"]   # network: the port of a new listener
//! exes = ["/usr/sbin/*"]      # process and network: the executable
//! ```
//!
//! A rule must not follow one that matches everything (it could never decide), a list must
//! not be empty (leave the key out to match anything), and `ports`/`exes` are refused on
//! kinds that have no port or executable.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use toml::Spanned;

use super::{
    ALL_CHANGE_BITS, ALL_KIND_BITS, ALL_KINDS, Decision, KINDS, Policy, Rule, RuleId, change_bit,
    kind_index,
};
use crate::spike::{Change, Kind};

/// Why a policy file was refused: where, which rule (when one is to blame), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: String,
    /// From 1; 0 when the problem is the whole file (e.g. it cannot be read).
    pub line: usize,
    /// The rule's name in backquotes, or its position (`#3`, from 1) when it has none.
    pub rule: Option<String>,
    pub problem: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy {}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(rule) = &self.rule {
            write!(f, ": rule {rule}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// A problem with the whole file (unreadable, missing).
    pub fn file(file: &str, problem: impl Into<String>) -> Self {
        Error {
            file: file.to_string(),
            line: 0,
            rule: None,
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    decision: Decision,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    kinds: Option<Vec<Kind>>,
    #[serde(default)]
    changes: Option<Vec<Change>>,
    #[serde(default)]
    subjects: Option<Vec<String>>,
    #[serde(default)]
    ports: Option<Vec<Port>>,
    #[serde(default)]
    exes: Option<Vec<String>>,
}

/// A port (`80`) or an inclusive range (`"8000-8099"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Port {
    One(i64),
    Range(String),
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The decision word as written in files (the same words as the API).
fn decision_of(word: &str) -> Option<Decision> {
    Decision::ALL.into_iter().find(|d| d.as_str() == word)
}

/// Parses and validates one policy file. `file` names it in rule references and errors.
pub fn parse(file: &str, text: &str) -> Result<Policy, Error> {
    let raw: RawFile = toml::from_str(text).map_err(|e| Error {
        file: file.to_string(),
        line: e.span().map_or(0, |s| line_of(text, s.start)),
        rule: None,
        problem: e.message().trim().to_string(),
    })?;
    let name: Arc<str> = Arc::from(file);
    let mut defaults: [Option<(Decision, usize)>; KINDS] = [None; KINDS];
    for (key, value) in &raw.defaults {
        let line = line_of(text, key.span().start);
        let fail = |problem: String| Error {
            file: file.to_string(),
            line,
            rule: None,
            problem,
        };
        let Some(kind) = ALL_KINDS.iter().find(|k| k.as_str() == key.get_ref()) else {
            let known: Vec<&str> = ALL_KINDS.iter().map(|k| k.as_str()).collect();
            return Err(fail(format!(
                "defaults: unknown spike kind `{}` (kinds: {})",
                key.get_ref(),
                known.join(", ")
            )));
        };
        let Some(decision) = decision_of(value.get_ref()) else {
            return Err(fail(format!(
                "defaults.{}: `{}` is not a decision (approved, violation, consult)",
                key.get_ref(),
                value.get_ref()
            )));
        };
        defaults[kind_index(*kind)] = Some((decision, line));
    }
    if raw.rules.len() > usize::from(u16::MAX) {
        return Err(Error::file(file, "more than 65535 rules"));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.rules.len());
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, spanned) in raw.rules.into_iter().enumerate() {
        let line = line_of(text, spanned.span().start);
        let label = spanned
            .get_ref()
            .get("name")
            .and_then(|v| v.as_str())
            .map_or_else(|| format!("#{}", i + 1), |n| format!("`{n}`"));
        let fail = |problem: String| Error {
            file: file.to_string(),
            line,
            rule: Some(label.clone()),
            problem,
        };
        let raw: RawRule = spanned
            .into_inner()
            .try_into()
            .map_err(|e: toml::de::Error| fail(e.message().trim().to_string()))?;
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(fail(
                "name must be 1 or more letters, digits, `-`, `_` or `.`".into(),
            ));
        }
        if let Some(first) = names.insert(raw.name.clone(), line) {
            return Err(fail(format!(
                "the name is already used by the rule on line {first}"
            )));
        }
        if let Some(before) = rules.iter().find(|r| r.matches_all()) {
            return Err(fail(format!(
                "can never decide: rule `{}` on line {} before it matches every spike",
                before.id.name, before.id.line
            )));
        }
        let rule = compile(
            raw,
            RuleId {
                file: name.clone(),
                name: String::new(),
                line,
            },
        )
        .map_err(fail)?;
        rules.push(rule);
    }
    let digest = Sha256::digest(text.as_bytes());
    let version: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(Policy::new(name, version, rules, defaults))
}

/// Checks one rule's conditions and compiles them; the error is the problem alone.
fn compile(raw: RawRule, mut id: RuleId) -> Result<Rule, String> {
    fn nonempty<T>(key: &str, list: &Option<Vec<T>>) -> Result<(), String> {
        match list {
            Some(l) if l.is_empty() => Err(format!(
                "`{key}` is an empty list, which matches nothing; leave it out to match anything"
            )),
            _ => Ok(()),
        }
    }
    nonempty("kinds", &raw.kinds)?;
    nonempty("changes", &raw.changes)?;
    nonempty("subjects", &raw.subjects)?;
    nonempty("ports", &raw.ports)?;
    nonempty("exes", &raw.exes)?;
    let kinds = raw.kinds.as_deref().map_or(ALL_KIND_BITS, |ks| {
        ks.iter().fold(0, |bits, k| bits | (1 << kind_index(*k)))
    });
    let changes = raw.changes.as_deref().map_or(ALL_CHANGE_BITS, |cs| {
        cs.iter().fold(0, |bits, c| bits | change_bit(*c))
    });
    let only = |allowed: &[Kind]| {
        let mask = allowed.iter().fold(0u16, |b, k| b | (1 << kind_index(*k)));
        raw.kinds.is_some() && kinds & !mask == 0
    };
    if raw.ports.is_some() && !only(&[Kind::Network]) {
        return Err("`ports` applies to network listeners only: set kinds = [\"network\"]".into());
    }
    if raw.exes.is_some() && !only(&[Kind::Process, Kind::Network]) {
        return Err(
            "`exes` applies to processes and network listeners only: set kinds to \"process\" and/or \"network\""
                .into(),
        );
    }
    let globs = |key: &str, list: Option<Vec<String>>| -> Result<Vec<glob::Pattern>, String> {
        list.unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                glob::Pattern::new(p)
                    .map_err(|e| format!("{key}[{i}] `{p}` is not a glob: {}", e.msg))
            })
            .collect()
    };
    let subjects = globs("subjects", raw.subjects)?;
    let exes = globs("exes", raw.exes)?;
    let ports = raw
        .ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| port_range(p).map_err(|e| format!("ports[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(r) = &raw.reason
        && r.trim().is_empty()
    {
        return Err("`reason` is empty; leave it out for the default".into());
    }
    let reason = raw
        .reason
        .unwrap_or_else(|| format!("rule `{}` matches", raw.name));
    id.name = raw.name;
    Ok(Rule {
        id,
        decision: raw.decision,
        reason,
        kinds,
        changes,
        subjects,
        ports,
        exes,
    })
}

fn port_range(p: &Port) -> Result<RangeInclusive<u16>, String> {
    let one = |n: i64| u16::try_from(n).map_err(|_| format!("{n} is not a port (0-65535)"));
    match p {
        Port::One(n) => one(*n).map(|n| n..=n),
        Port::Range(s) => {
            let (a, b) = s
                .split_once('-')
                .ok_or_else(|| format!("`{s}` is neither a port nor a range like \"8000-8099\""))?;
            let num = |t: &str| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("`{s}`: `{t}` is not a number"))
                    .and_then(one)
            };
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("`{s}`: the range is empty (start above end)"));
            }
            Ok(a..=b)
        }
    }
}
