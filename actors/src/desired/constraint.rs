//! A package's desired version: `present`, `absent`, or Debian version clauses
//! (`>= 3.0.11, << 4`) that all must hold, compared in dpkg's order.
//!
//! This module owns the syntax of a constraint and its check against an installed
//! version string; the order itself (epochs, `~` before everything, revisions) is the
//! `debversion` crate's, which implements dpkg's algorithm.
//!
//! Operators are dpkg's: `>=`, `<=`, `>>` (strictly later), `<<` (strictly earlier), `=`.
//! The old single `>` and `<` are accepted with the meaning dpkg gives them, "or equal"
//! (`>` is `>=`, `<` is `<=`), so that a constraint copied from a Debian control file
//! means here what it means to dpkg.

use std::cmp::Ordering;
use std::fmt;

use debversion::Version;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>=` (and the old `>`).
    Ge,
    /// `<=` (and the old `<`).
    Le,
    /// `>>`
    Gt,
    /// `<<`
    Lt,
    /// `=`
    Eq,
}

impl Op {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Ge => o != Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Lt => o == Ordering::Less,
            Op::Eq => o == Ordering::Equal,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Gt => ">>",
            Op::Lt => "<<",
            Op::Eq => "=",
        }
    }
}

/// One clause: the installed version compared with `version` must satisfy `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub op: Op,
    pub version: Version,
}

/// What a package must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Installed, any version.
    Present,
    /// Not installed.
    Absent,
    /// Installed, at a version that satisfies every clause.
    Versions(Vec<Clause>),
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Present => f.write_str("present"),
            Constraint::Absent => f.write_str("absent"),
            Constraint::Versions(clauses) => {
                for (i, c) in clauses.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {}", c.op.as_str(), c.version)?;
                }
                Ok(())
            }
        }
    }
}

/// Operators, longest first so that `>=` is not read as `>` followed by `=`.
const OPS: [(&str, Op); 7] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    (">>", Op::Gt),
    ("<<", Op::Lt),
    ("=", Op::Eq),
    (">", Op::Ge),
    ("<", Op::Le),
];

impl Constraint {
    /// Reads `present`, `absent` or comma-separated clauses; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Constraint, String> {
        match text.trim() {
            "present" => return Ok(Constraint::Present),
            "absent" => return Ok(Constraint::Absent),
            "" => {
                return Err(
                    "empty: write `present`, `absent` or clauses such as `>= 3.0.11`".into(),
                );
            }
            _ => {}
        }
        let mut clauses = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let Some((op, rest)) = OPS
                .iter()
                .find_map(|(s, op)| part.strip_prefix(s).map(|rest| (*op, rest)))
            else {
                return Err(format!(
                    "`{part}` needs an operator: one of >=, <=, >>, <<, =, >, < (or the whole value `present` or `absent`)"
                ));
            };
            let version = rest.trim();
            if version.is_empty() {
                return Err(format!("`{part}` has no version after its operator"));
            }
            let version: Version = version
                .parse()
                .map_err(|_| format!("`{version}` is not a Debian version"))?;
            clauses.push(Clause { op, version });
        }
        Ok(Constraint::Versions(clauses))
    }

    /// Whether `installed` (`None`: not installed) satisfies the constraint; `None` when
    /// the installed version cannot be read as a Debian version, so cannot be judged.
    pub fn satisfied_by(&self, installed: Option<&str>) -> Option<bool> {
        match (self, installed) {
            (Constraint::Present, i) => Some(i.is_some()),
            (Constraint::Absent, i) => Some(i.is_none()),
            (Constraint::Versions(_), None) => Some(false),
            (Constraint::Versions(clauses), Some(v)) => {
                let v: Version = v.trim().parse().ok()?;
                Some(clauses.iter().all(|c| c.op.holds(v.cmp(&c.version))))
            }
        }
    }
}
