//! The digital twin of a node: what it is, what runs on it and what it holds, by section,
//! versioned.
//!
//! A node builds its own twin ([`Local`]) from what its probes read (host, software,
//! packages) and from its own spikes (files, listening ports, service probes, the last
//! changes). It sends it to its region's master as a [`Report`] when a section changes
//! (coalesced) and again every [`Config::resend_ms`] as a repair. The master keeps the
//! twins of its members and compares them with their desired state ([`crate::drift`]).
//!
//! The twin carries only the files and packages the desired state names (its
//! [`Interest`]): a baseline of thousands of files, or every installed package, would
//! not fit one frame. Packages are summarized (source, count, digest of the whole list)
//! so that any change shows, and the full list stays on the node.
//!
//! Sans-IO: [`Local::handle`] takes inputs with the current time, [`Local::poll_timeout`]
//! says when to call [`Local::handle_timeout`], which returns the report to send, if any.
//! Versions only grow: every accepted change bumps [`Twin::version`] and stamps its
//! section's `updated_ms`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::node;
use crate::spike::{self, Digest, Kind, Spike};

/// The last changes a twin keeps.
pub const CHANGES: usize = 50;

/// After the master changed, the twin is sent at once and again this much later.
pub const MASTER_RESEND_MS: u64 = 2_000;

/// A section with the wall-clock time (Unix ms) it last changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Section<T> {
    pub updated_ms: u64,
    pub value: T,
}

/// Who the node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identity {
    pub peer: String,
    pub name: String,
    pub region: String,
    pub role: String,
    pub incarnation: u64,
}

/// The machine, as far as it is readable. `None`: not readable here (shown as unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Host {
    pub hostname: Option<String>,
    /// The kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// `PRETTY_NAME` of os-release.
    pub os: Option<String>,
    pub cpus: Option<u32>,
    pub memory_bytes: Option<u64>,
    /// From `/sys/class/dmi/id`.
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
}

/// The fleetmesh binary the node runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Software {
    pub version: String,
    /// sha256 of the running executable (`None`: unreadable).
    pub exe_sha256: Option<Digest>,
    /// sha256 of the SBOM embedded in the binary.
    pub sbom_sha256: Option<Digest>,
    /// Components the SBOM lists.
    pub sbom_components: u32,
}

/// Installed packages, summarized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Packages {
    /// Where they were read from: `dpkg`, `rpm`, or `none` when no database is readable.
    pub source: String,
    pub count: u32,
    /// sha256 of the sorted `name=version` lines: changes when anything is installed,
    /// removed or upgraded.
    pub digest: Option<Digest>,
    /// The versions of the packages the desired state names (absent: not installed).
    pub versions: BTreeMap<String, String>,
}

/// What is known of one file the desired state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFact {
    Present(Digest),
    /// A directory, link or other entry that is not a regular file.
    Other,
    Absent,
    /// Outside the watched paths: the node cannot tell.
    Unknown,
}

/// What drift is judged on, beside the software and packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Observed {
    pub files: BTreeMap<String, FileFact>,
    /// Listening TCP and UDP ports (`None`: not read yet).
    pub ports: Option<BTreeSet<u16>>,
    /// Service probes this node runs: name to state (`up`, `down`, `degraded`...).
    pub services: BTreeMap<String, String>,
}

/// The policy in force on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policy {
    pub version: String,
}

/// One recent change, as the twin lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: Kind,
    pub change: spike::Change,
    pub subject: String,
    pub severity: spike::Severity,
}

/// A node's twin, as it reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Twin {
    /// Grows with every change of any section.
    pub version: u64,
    pub identity: Section<Identity>,
    pub host: Section<Host>,
    pub software: Section<Software>,
    pub packages: Section<Packages>,
    pub observed: Section<Observed>,
    pub policy: Section<Policy>,
    pub changes: Section<VecDeque<Change>>,
    /// How the node is doing ([`health`]).
    #[serde(default)]
    pub health: Section<health::Health>,
}

/// A twin on its way to the region's master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub region: String,
    pub twin: Twin,
    /// The drift records open about this node, by subject, with their first-seen time,
    /// as the master last answered ([`Input::DriftSince`]): a new master keeps them.
    #[serde(default)]
    pub drift_since: BTreeMap<String, u64>,
}

/// What the desired state names, so that the twin carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interest {
    pub files: BTreeSet<String>,
    pub packages: BTreeSet<String>,
}

/// Settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Changes within this window travel in one report.
    pub coalesce_ms: u64,
    /// The whole twin is sent again this often, changed or not (0: never).
    pub resend_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            coalesce_ms: 100,
            resend_ms: 30_000,
        }
    }
}

/// An input of [`Local`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Identity(Identity),
    Host(Host),
    Software(Software),
    /// The whole package list as read (`name`, `version`), with its source.
    Packages {
        source: String,
        list: Vec<(String, String)>,
    },
    /// What the desired state names changed (desired files re-read).
    Interest(Interest),
    /// The state of the files of interest, as the node's baseline holds them.
    Files(BTreeMap<String, FileFact>),
    Ports(BTreeSet<u16>),
    Services(BTreeMap<String, String>),
    Policy(Policy),
    /// The node's own spikes, as its encoder made them.
    Spikes(Vec<Spike>),
    /// The region's master changed: send the whole twin to the new one.
    MasterChanged,
    /// The node's connectivity and backlog, for its health.
    Vitals(health::Vitals),
    /// The master's answer to a report: the drift records open about this node, by
    /// subject, with their first-seen time.
    DriftSince(BTreeMap<String, u64>),
}

/// The node's own twin.
///
/// Feed it with [`Local::handle`] (any order); call [`Local::handle_timeout`] at
/// [`Local::poll_timeout`] and send the [`Report`] it returns.
#[derive(Debug)]
pub struct Local {
    config: Config,
    twin: Twin,
    interest: Interest,
    /// The whole package list, kept so that a new interest needs no re-read.
    packages: BTreeMap<String, String>,
    /// When the pending report is due.
    due: Option<Instant>,
    next_resend: Option<Instant>,
    /// A second send after the master changed.
    again: Option<Instant>,
    vitals: Option<health::Vitals>,
    drift_since: BTreeMap<String, u64>,
}

impl Local {
    pub fn new(config: Config) -> Local {
        Local {
            config,
            twin: Twin::default(),
            interest: Interest::default(),
            packages: BTreeMap::new(),
            due: None,
            next_resend: None,
            again: None,
            vitals: None,
            drift_since: BTreeMap::new(),
        }
    }

    pub fn twin(&self) -> &Twin {
        &self.twin
    }

    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Every installed package, as last read.
    pub fn packages(&self) -> &BTreeMap<String, String> {
        &self.packages
    }

    /// Takes one input in; `now_ms` stamps the sections it changes.
    pub fn handle(&mut self, now: Instant, now_ms: u64, input: Input) {
        self.apply(now, now_ms, input);
        // Health follows the vitals and the service probes. A new state or reason makes
        // a report due; a new backlog count alone travels with the next one.
        let h = health::assess(self.vitals, &self.twin.observed.value.services);
        let news = h.differs(&self.twin.health.value);
        if set(&mut self.twin.health, h, now_ms) {
            self.twin.version += 1;
            if news {
                self.report_soon(now);
            }
        }
    }

    fn report_soon(&mut self, now: Instant) {
        let due = now + Duration::from_millis(self.config.coalesce_ms);
        self.due = Some(self.due.map_or(due, |d| d.min(due)));
    }

    fn apply(&mut self, now: Instant, now_ms: u64, input: Input) {
        let changed = match input {
            Input::Vitals(v) => {
                self.vitals = Some(v);
                return;
            }
            Input::DriftSince(since) => {
                self.drift_since = since;
                return;
            }
            Input::Identity(v) => set(&mut self.twin.identity, v, now_ms),
            Input::Host(v) => set(&mut self.twin.host, v, now_ms),
            Input::Software(v) => set(&mut self.twin.software, v, now_ms),
            Input::Policy(v) => set(&mut self.twin.policy, v, now_ms),
            Input::Packages { source, list } => {
                self.packages = list.into_iter().collect();
                let summary = summarize(&source, &self.packages, &self.interest.packages);
                set(&mut self.twin.packages, summary, now_ms)
            }
            Input::Interest(interest) => {
                self.interest = interest;
                let summary = summarize(
                    &self.twin.packages.value.source,
                    &self.packages,
                    &self.interest.packages,
                );
                let p = set(&mut self.twin.packages, summary, now_ms);
                // Files no longer of interest leave; new ones wait for `Files`.
                let mut observed = self.twin.observed.value.clone();
                observed
                    .files
                    .retain(|path, _| self.interest.files.contains(path));
                set(&mut self.twin.observed, observed, now_ms) || p
            }
            Input::Files(files) => {
                let mut observed = self.twin.observed.value.clone();
                for (path, fact) in files {
                    if self.interest.files.contains(&path) {
                        observed.files.insert(path, fact);
                    }
                }
                set(&mut self.twin.observed, observed, now_ms)
            }
            Input::Ports(ports) => {
                let mut observed = self.twin.observed.value.clone();
                observed.ports = Some(ports);
                set(&mut self.twin.observed, observed, now_ms)
            }
            Input::Services(services) => {
                let mut observed = self.twin.observed.value.clone();
                observed.services = services;
                set(&mut self.twin.observed, observed, now_ms)
            }
            Input::Spikes(spikes) => {
                let (observed, changes) = self.spikes(spikes, now_ms);
                if changes && !observed {
                    // The last changes alone do not make a report due: they change with
                    // every short-lived process, and the master judges no drift on
                    // them. They travel with the next report.
                    self.twin.version += 1;
                    return;
                }
                observed
            }
            Input::MasterChanged => {
                // Sent at once, and again soon: a master that has just been elected may
                // not know yet that it leads, and refuse the first report.
                self.due = Some(now);
                self.again = Some(now + Duration::from_millis(MASTER_RESEND_MS));
                return;
            }
        };
        if changed {
            self.twin.version += 1;
            self.report_soon(now);
        }
    }

    /// Applies the node's own spikes; says whether the observed facts and the last
    /// changes changed.
    fn spikes(&mut self, spikes: Vec<Spike>, now_ms: u64) -> (bool, bool) {
        let mut observed = self.twin.observed.value.clone();
        let mut changes = self.twin.changes.value.clone();
        for s in &spikes {
            if s.kind == Kind::File && self.interest.files.contains(&s.subject) {
                let fact = match (s.change, s.after) {
                    (spike::Change::Removed, _) => FileFact::Absent,
                    (_, Some(d)) => FileFact::Present(d),
                    (_, None) => FileFact::Other,
                };
                observed.files.insert(s.subject.clone(), fact);
            }
            if s.kind == Kind::Service {
                // A probe's transition: up when added, down when removed.
                let state = match s.change {
                    spike::Change::Removed => "down",
                    _ => "up",
                };
                observed
                    .services
                    .insert(s.subject.clone(), state.to_string());
            }
            if s.kind != Kind::Metric {
                changes.push_back(Change {
                    seq: s.seq,
                    at_ms: s.at_unix_ms,
                    kind: s.kind,
                    change: s.change,
                    subject: s.subject.clone(),
                    severity: s.severity,
                });
                while changes.len() > CHANGES {
                    changes.pop_front();
                }
            }
        }
        let o = set(&mut self.twin.observed, observed, now_ms);
        (o, set(&mut self.twin.changes, changes, now_ms))
    }

    /// When [`Local::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.due, self.next_resend, self.again]
            .into_iter()
            .flatten()
            .min()
    }

    /// The report to send now, if one is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Report> {
        let resend = self.config.resend_ms > 0 && self.next_resend.is_some_and(|t| t <= now);
        let mut due = self.due.is_some_and(|t| t <= now);
        if self.again.is_some_and(|t| t <= now) {
            self.again = None;
            due = true;
        }
        if self.config.resend_ms > 0 && (self.next_resend.is_none() || resend || due) {
            self.next_resend = Some(now + Duration::from_millis(self.config.resend_ms));
        }
        if !(due || resend) {
            return None;
        }
        self.due = None;
        Some(Report {
            region: self.twin.identity.value.region.clone(),
            twin: self.twin.clone(),
            drift_since: self.drift_since.clone(),
        })
    }
}

/// Replaces a section's value when it differs; says whether it did.
fn set<T: PartialEq>(section: &mut Section<T>, value: T, now_ms: u64) -> bool {
    if section.value == value {
        return false;
    }
    section.value = value;
    section.updated_ms = now_ms;
    true
}

/// The package summary a twin carries.
pub fn summarize(
    source: &str,
    all: &BTreeMap<String, String>,
    named: &BTreeSet<String>,
) -> Packages {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    for (name, version) in all {
        hash.update(name.as_bytes());
        hash.update(b"=");
        hash.update(version.as_bytes());
        hash.update(b"\n");
    }
    Packages {
        source: if source.is_empty() { "none" } else { source }.to_string(),
        count: u32::try_from(all.len()).unwrap_or(u32::MAX),
        digest: (!all.is_empty()).then(|| Digest(hash.finalize().into())),
        versions: named
            .iter()
            .filter_map(|n| all.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
    }
}

/// What the baseline says of the file of interest `path`: its entry if it has one; else
/// absent when `path` lies under a watched path (the node would know it), else unknown.
pub fn file_fact(entry: Option<&crate::files::State>, path: &str, watched: &[String]) -> FileFact {
    match entry {
        Some(st) => match (&st.kind, st.digest) {
            (crate::files::EntryKind::File, Some(d)) => FileFact::Present(d),
            _ => FileFact::Other,
        },
        None => {
            let under = watched.iter().any(|w| {
                let w = w.trim_end_matches('/');
                path == w
                    || path.strip_prefix(w).is_some_and(|r| r.starts_with('/'))
                    || w.is_empty()
            });
            if under {
                FileFact::Absent
            } else {
                FileFact::Unknown
            }
        }
    }
}

/// A twin's node, as the API and the drift records name it.
pub fn peer(twin: &Twin) -> node::Id {
    node::Id::from(&twin.identity.value.peer)
}

pub mod health;
pub mod keep;

pub use keep::Keeper;

#[cfg(test)]
mod tests;
