//! The desired state of a node, and how far its twin is from it.
//!
//! This module owns the desired-state model: what a role's file (`<role>.toml`) and a
//! node's own override (`nodes/<name>.toml`) say the node's fleetmesh binary, policy,
//! files, packages, listening ports and service probes must be ([`parse`] gives one file's
//! [`Layer`], [`merge`] lays a node's layer over its role's into a [`Spec`]), and the
//! comparison of a [`twin::Twin`] with a [`Spec`] ([`compare`]), which names every
//! difference as a [`Finding`] with the rule that asked for it.
//!
//! It must not read files or clocks, nor keep drift records over time: the node runtime
//! (`fleetmesh::desired`) reads and re-reads the files, and the region's master keeps
//! what was found when. [`parse`] lives in [`parse`](mod@parse), the package version
//! constraints in [`constraint`], the comparison in [`compare`](mod@compare).

pub mod compare;
pub mod constraint;
pub mod parse;

use std::collections::{BTreeMap, BTreeSet};

use crate::spike::Digest;
use crate::twin;

pub use crate::spike::Severity;
pub use compare::{Context, Finding, compare, score};
pub use constraint::Constraint;
pub use parse::parse;

/// Why a desired-state file was refused: the file, the line (from 1) when one is to blame,
/// the key path (`files[1].sha256`, lists counted from 0; empty for the whole file) and
/// what is wrong. Shown as `web.toml:7: files[1].sha256: not 64 hex characters`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {}{message}", at_line(.line), key_prefix(.key))]
pub struct Error {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl Error {
    /// A problem with the whole file (e.g. it cannot be read).
    pub fn file(file: &str, message: impl Into<String>) -> Error {
        Error {
            file: file.to_string(),
            line: None,
            key: String::new(),
            message: message.into(),
        }
    }
}

/// The policy version a node must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyWant {
    /// This exact version.
    Version(String),
    /// The version the region's master runs (`version = "region"`).
    Region,
}

/// What a file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileWant {
    /// A regular file with this content.
    Sha256(Digest),
    /// Anything at the path (a file, a directory, a link).
    Present,
    /// Nothing at the path.
    Absent,
}

/// One `[[files]]` entry. `origin` is the file that asked for it (rule references).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    pub origin: String,
    pub path: String,
    pub want: FileWant,
    pub severity: Severity,
}

/// One `[[packages]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRule {
    pub origin: String,
    pub name: String,
    pub want: Constraint,
    pub severity: Severity,
}

/// One `[[services]]` entry: the state the region's probe of the service must report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    pub origin: String,
    pub name: String,
    pub state: String,
    pub severity: Severity,
}

/// `[fleetmesh] versions`: any requirement may match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub origin: String,
    pub allowed: Vec<semver::VersionReq>,
    pub severity: Severity,
}

/// `[fleetmesh] digests`: the executable's sha256 must be one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub origin: String,
    pub allowed: Vec<Digest>,
    pub severity: Severity,
}

/// `[policy] version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pub origin: String,
    pub want: PolicyWant,
    pub severity: Severity,
}

/// `[ports] expected` or `[ports] forbidden`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub origin: String,
    pub ports: BTreeSet<u16>,
    pub severity: Severity,
}

/// One file as written, validated, before it is merged: keys left out are `None` (or
/// absent from the lists), so that an override replaces only what it names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layer {
    /// The file's name, as rule references and errors show it.
    pub file: String,
    pub versions: Option<Vec<semver::VersionReq>>,
    pub digests: Option<Vec<Digest>>,
    pub fleetmesh_severity: Option<Severity>,
    pub policy: Option<PolicyWant>,
    pub policy_severity: Option<Severity>,
    pub files: Vec<FileRule>,
    pub packages: Vec<PackageRule>,
    pub expected_ports: Option<BTreeSet<u16>>,
    pub forbidden_ports: Option<BTreeSet<u16>>,
    pub ports_severity: Option<Severity>,
    pub services: Vec<ServiceRule>,
}

/// A node's desired state: its role's layer with its own override laid over it.
/// `None` and empty maps ask for nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    pub versions: Option<Versions>,
    pub digests: Option<Digests>,
    pub policy: Option<PolicyRule>,
    pub files: BTreeMap<String, FileRule>,
    pub packages: BTreeMap<String, PackageRule>,
    pub expected_ports: Option<Ports>,
    pub forbidden_ports: Option<Ports>,
    pub services: BTreeMap<String, ServiceRule>,
}

impl Spec {
    /// The files and packages the twin must carry for [`compare`] to judge them.
    pub fn interest(&self) -> twin::Interest {
        twin::Interest {
            files: self.files.keys().cloned().collect(),
            packages: self.packages.keys().cloned().collect(),
        }
    }
}

/// The severity of a `[fleetmesh] versions` finding when the file sets none: running
/// another release is usually a rollout in progress.
pub const VERSIONS_SEVERITY: Severity = Severity::Medium;
/// Of a `[fleetmesh] digests` finding: an executable nobody built is a possible intrusion.
pub const DIGESTS_SEVERITY: Severity = Severity::High;
/// Of an `expected` port not listening.
pub const EXPECTED_PORT_SEVERITY: Severity = Severity::Medium;
/// Of a `forbidden` port listening: an open door.
pub const FORBIDDEN_PORT_SEVERITY: Severity = Severity::High;
/// Of every other rule that sets none.
pub const DEFAULT_SEVERITY: Severity = Severity::Medium;

/// Lays a node's override over its role's layer, key by key:
/// - `[fleetmesh]` `versions`, `digests`, `severity`, `[policy]` `version`, `severity`,
///   and `[ports]` `expected`, `forbidden`, `severity`: each key the override sets
///   replaces the role's, each key it leaves out keeps the role's;
/// - a `[[files]]` entry of the same `path`, a `[[packages]]` or `[[services]]` entry of
///   the same `name` replaces the role's entry whole; other entries are added;
/// - an override cannot remove a role's entry, only replace it;
/// - a port the merge leaves both expected and forbidden (one list from each file) is
///   kept only in the override's list: the node's file is the more specific.
pub fn merge(role: &Layer, node: Option<&Layer>) -> Spec {
    let empty = Layer::default();
    let node = node.unwrap_or(&empty);
    // The value of a key, and the file it came from: the override's when it sets it.
    fn pick<'a, T>(
        role: &'a Layer,
        node: &'a Layer,
        get: impl Fn(&Layer) -> &Option<T>,
    ) -> Option<(&'a T, &'a str)> {
        get(node)
            .as_ref()
            .map(|v| (v, node.file.as_str()))
            .or_else(|| get(role).as_ref().map(|v| (v, role.file.as_str())))
    }
    let fleetmesh_severity = node.fleetmesh_severity.or(role.fleetmesh_severity);
    let versions = pick(role, node, |l| &l.versions)
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, origin)| Versions {
            origin: origin.to_string(),
            allowed: v.clone(),
            severity: fleetmesh_severity.unwrap_or(VERSIONS_SEVERITY),
        });
    let digests = pick(role, node, |l| &l.digests)
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, origin)| Digests {
            origin: origin.to_string(),
            allowed: v.clone(),
            severity: fleetmesh_severity.unwrap_or(DIGESTS_SEVERITY),
        });
    let policy = pick(role, node, |l| &l.policy).map(|(want, origin)| PolicyRule {
        origin: origin.to_string(),
        want: want.clone(),
        severity: node
            .policy_severity
            .or(role.policy_severity)
            .unwrap_or(DEFAULT_SEVERITY),
    });
    let ports_severity = node.ports_severity.or(role.ports_severity);
    let mut expected = pick(role, node, |l| &l.expected_ports).map(|(p, origin)| Ports {
        origin: origin.to_string(),
        ports: p.clone(),
        severity: ports_severity.unwrap_or(EXPECTED_PORT_SEVERITY),
    });
    let mut forbidden = pick(role, node, |l| &l.forbidden_ports).map(|(p, origin)| Ports {
        origin: origin.to_string(),
        ports: p.clone(),
        severity: ports_severity.unwrap_or(FORBIDDEN_PORT_SEVERITY),
    });
    if let (Some(e), Some(f)) = (&mut expected, &mut forbidden) {
        // Each list comes from one file, and one file cannot name a port in both (parse
        // refuses it), so a port in both came from two files: the role's copy goes.
        let both: Vec<u16> = e.ports.intersection(&f.ports).copied().collect();
        let from_role = if e.origin == role.file { e } else { f };
        for port in both {
            from_role.ports.remove(&port);
        }
    }
    let expected = expected.filter(|p| !p.ports.is_empty());
    let forbidden = forbidden.filter(|p| !p.ports.is_empty());
    let by_key = |a: &[FileRule], b: &[FileRule]| {
        a.iter()
            .chain(b)
            .map(|r| (r.path.clone(), r.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    Spec {
        versions,
        digests,
        policy,
        files: by_key(&role.files, &node.files),
        packages: role
            .packages
            .iter()
            .chain(&node.packages)
            .map(|r| (r.name.clone(), r.clone()))
            .collect(),
        expected_ports: expected,
        forbidden_ports: forbidden,
        services: role
            .services
            .iter()
            .chain(&node.services)
            .map(|r| (r.name.clone(), r.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
