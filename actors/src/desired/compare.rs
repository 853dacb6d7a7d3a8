//! The comparison of a node's twin with its desired state: every difference as a
//! [`Finding`], in a fixed order, and a drift [`score`].
//!
//! This module owns what counts as a difference and how severe it is; it keeps nothing
//! between calls (the master's drift records say since when a finding holds).
//!
//! A fact the twin cannot tell (a file outside the watched paths, ports not read yet, a
//! service no probe reports, no package database) is a finding of its own, `unknown` at
//! low severity: silence would read as "as desired" when the desired state could not be
//! checked at all, and a high severity would page someone for a gap in coverage. The one
//! exception is an unreadable executable digest where digests are required: the check
//! exists to catch a replaced binary, and a binary that cannot be hashed is treated as
//! one (high).

use std::collections::BTreeMap;

use super::{FileWant, PolicyWant, Ports, Severity, Spec};
use crate::twin::{FileFact, Twin};

/// One difference between a node's twin and its desired state (the drift records'
/// input).
pub use crate::drift::Finding;

/// What the master knows beside the member's twin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// The policy version the region's master runs (for `version = "region"`).
    pub region_policy: Option<String>,
    /// The region-wide probe states, by service name (`up`, `down`).
    pub services: BTreeMap<String, String>,
}

/// Shown where a fact cannot be read.
const UNKNOWN: &str = "unknown";

/// How far a node is from its desired state: low 1, medium 3, high 10 per finding (a high
/// finding outweighs three mediums: one open door matters more than a few stale files).
pub fn score(findings: &[Finding]) -> u32 {
    findings
        .iter()
        .map(|f| match f.severity {
            Severity::Info => 0,
            Severity::Low => 1,
            Severity::Medium => 3,
            // Never produced by `compare`; weighed as high should a caller raise one.
            Severity::High | Severity::Critical => 10,
        })
        .sum()
}

/// Every difference between `twin` and `spec`, sorted by subject (then rule); none when
/// the twin is as desired.
pub fn compare(spec: &Spec, twin: &Twin, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |rule: String, subject: String, desired: String, actual: &str, severity| {
        out.push(Finding {
            rule,
            subject,
            desired,
            actual: actual.to_string(),
            severity,
        });
    };
    let software = &twin.software.value;

    if let Some(v) = &spec.versions {
        let desired = v
            .allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        let rule = format!("{}:fleetmesh.versions", v.origin);
        let subject = "fleetmesh:version".to_string();
        match software.version.trim() {
            "" => push(rule, subject, desired, UNKNOWN, Severity::Low),
            reported => match semver::Version::parse(reported) {
                Ok(version) if v.allowed.iter().any(|r| r.matches(&version)) => {}
                Ok(_) => push(rule, subject, desired, reported, v.severity),
                Err(_) => push(
                    rule,
                    subject,
                    desired,
                    &format!("{reported} (not a semver version)"),
                    v.severity,
                ),
            },
        }
    }

    if let Some(d) = &spec.digests {
        let desired = d
            .allowed
            .iter()
            .map(|d| format!("sha256:{d}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let rule = format!("{}:fleetmesh.digests", d.origin);
        let subject = "fleetmesh:digest".to_string();
        match software.exe_sha256 {
            None => push(rule, subject, desired, UNKNOWN, Severity::High),
            Some(actual) if d.allowed.contains(&actual) => {}
            Some(actual) => push(
                rule,
                subject,
                desired,
                &format!("sha256:{actual}"),
                d.severity,
            ),
        }
    }

    if let Some(p) = &spec.policy {
        let rule = format!("{}:policy.version", p.origin);
        let subject = "policy:version".to_string();
        let running = twin.policy.value.version.trim();
        let desired = match &p.want {
            PolicyWant::Version(v) => Some(v.clone()),
            PolicyWant::Region => ctx.region_policy.clone(),
        };
        match desired {
            // The master does not know its own version yet: nothing to compare with.
            None => push(
                rule,
                subject,
                "the region's (unknown)".to_string(),
                if running.is_empty() { UNKNOWN } else { running },
                Severity::Low,
            ),
            Some(desired) if running.is_empty() => {
                push(rule, subject, desired, UNKNOWN, Severity::Low)
            }
            Some(desired) if desired == running => {}
            Some(desired) => push(rule, subject, desired, running, p.severity),
        }
    }

    for (path, f) in &spec.files {
        let rule = format!("{}:files[{path}]", f.origin);
        let subject = format!("file:{path}");
        let desired = match f.want {
            FileWant::Sha256(d) => format!("sha256:{d}"),
            FileWant::Present => "present".to_string(),
            FileWant::Absent => "absent".to_string(),
        };
        let fact = twin.observed.value.files.get(path).copied();
        let actual = match (fact, f.want) {
            (None | Some(FileFact::Unknown), _) => {
                push(rule, subject, desired, UNKNOWN, Severity::Low);
                continue;
            }
            (Some(FileFact::Present(a)), FileWant::Sha256(d)) if a == d => continue,
            (Some(FileFact::Present(_) | FileFact::Other), FileWant::Present) => continue,
            (Some(FileFact::Absent), FileWant::Absent) => continue,
            (Some(FileFact::Present(a)), _) => format!("sha256:{a}"),
            (Some(FileFact::Other), _) => "not a regular file".to_string(),
            (Some(FileFact::Absent), _) => "absent".to_string(),
        };
        push(rule, subject, desired, &actual, f.severity);
    }

    let packages = &twin.packages.value;
    // No package database was readable: "not installed" would be a guess.
    let no_database = matches!(packages.source.as_str(), "" | "none");
    for (name, p) in &spec.packages {
        let rule = format!("{}:packages[{name}]", p.origin);
        let subject = format!("package:{name}");
        let desired = p.want.to_string();
        if no_database {
            push(rule, subject, desired, UNKNOWN, Severity::Low);
            continue;
        }
        let installed = packages.versions.get(name).map(String::as_str);
        match p.want.satisfied_by(installed) {
            Some(true) => {}
            Some(false) => push(
                rule,
                subject,
                desired,
                installed.unwrap_or("absent"),
                p.severity,
            ),
            None => push(
                rule,
                subject,
                desired,
                &format!("{} (not a Debian version)", installed.unwrap_or_default()),
                Severity::Low,
            ),
        }
    }

    let port_rules: Vec<(&Ports, bool)> =
        [(&spec.expected_ports, true), (&spec.forbidden_ports, false)]
            .into_iter()
            .filter_map(|(p, listen)| p.as_ref().map(|p| (p, listen)))
            .collect();
    match &twin.observed.value.ports {
        None => {
            // One finding for the whole table: the ports are unread, not each one wrong.
            if let Some((first, listen)) = port_rules.first() {
                let which = if *listen { "expected" } else { "forbidden" };
                push(
                    format!("{}:ports.{which}", first.origin),
                    "ports".to_string(),
                    "read".to_string(),
                    UNKNOWN,
                    Severity::Low,
                );
            }
        }
        Some(listening) => {
            for (p, listen) in port_rules {
                let which = if listen { "expected" } else { "forbidden" };
                for port in &p.ports {
                    if listening.contains(port) != listen {
                        let (desired, actual) = if listen {
                            ("listening", "not listening")
                        } else {
                            ("not listening", "listening")
                        };
                        push(
                            format!("{}:ports.{which}", p.origin),
                            format!("port:{port}"),
                            desired.to_string(),
                            actual,
                            p.severity,
                        );
                    }
                }
            }
        }
    }

    for (name, s) in &spec.services {
        let rule = format!("{}:services[{name}]", s.origin);
        let subject = format!("service:{name}");
        match ctx.services.get(name) {
            None => push(rule, subject, s.state.clone(), UNKNOWN, Severity::Low),
            Some(state) if *state == s.state => {}
            Some(state) => push(rule, subject, s.state.clone(), state, s.severity),
        }
    }

    out.sort_by(|a, b| (&a.subject, &a.rule).cmp(&(&b.subject, &b.rule)));
    out
}
