//! Scenario files: the topology, the network, the protocol settings, the invariants' bounds
//! and the fault schedule of one run, read from TOML.
//!
//! Every field but the topology has a default (the protocol's are the node's own defaults,
//! `config/default.toml`). A file that cannot be read or does not describe a valid run is
//! an [`Error`] naming the file and the problem, never a panic.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message carries the line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// One run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    pub topology: Topology,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub invariants: Invariants,
    #[serde(default)]
    pub workload: Workload,
    /// A progress line on stderr every this many simulated seconds (0: none).
    #[serde(default = "default_progress")]
    pub progress_s: f64,
    /// Messages and bytes received are counted from this simulated second on (0: the
    /// whole run), so that a steady state can be told from a region forming.
    #[serde(default)]
    pub measure_from_s: f64,
    #[serde(default)]
    pub faults: Vec<Fault>,
}

fn default_progress() -> f64 {
    60.0
}

/// Regions and their members.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub regions: usize,
    pub nodes_per_region: usize,
    /// Master-eligible members per region (the first ones); default: all.
    #[serde(default)]
    pub eligible_per_region: Option<usize>,
    /// Roles handed out in turn to each region's members.
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
}

fn default_roles() -> Vec<String> {
    vec!["web".into()]
}

/// A one-way link delay: `base_ms` plus a uniform draw in `[0, jitter_ms]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub base_ms: f64,
    pub jitter_ms: f64,
}

/// The network model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Links between members of one region.
    pub same_region: Latency,
    /// Links between regions (no traffic crosses regions yet: see the crate doc).
    pub cross_region: Latency,
    /// Probability that one message is lost.
    pub loss: f64,
    /// Gossip mesh degree: copies of each region heartbeat a member receives.
    pub mesh_degree: usize,
    /// A silently cut link is noticed as a closed connection after this long (the
    /// transport's ping timeout); a crash closes connections at once.
    pub cut_detect_ms: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            same_region: Latency {
                base_ms: 0.5,
                jitter_ms: 2.0,
            },
            cross_region: Latency {
                base_ms: 20.0,
                jitter_ms: 10.0,
            },
            loss: 0.0,
            // The node's gossipsub mesh_n.
            mesh_degree: 4,
            cut_detect_ms: 20_000.0,
        }
    }
}

/// The cores' settings (defaults: the node's, `config/default.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protocol {
    pub heartbeat_ms: u64,
    pub acceptable_pause_ms: u64,
    pub connected_grace_ms: u64,
    pub suspect_phi: f64,
    pub dead_phi: f64,
    pub dead_after: u32,
    pub bootstrap_expect: u32,
    pub bootstrap_ms: u64,
    pub max_voters: usize,
    pub tick_ms: u64,
    pub election_ticks: usize,
    /// Liveness probes of the ring neighbours (0: none; heartbeats only).
    pub probe_ms: u64,
    pub monitors: usize,
    /// Heartbeats a second a region shares (0: every member every interval).
    pub region_rate: u32,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            heartbeat_ms: 1000,
            acceptable_pause_ms: 500,
            connected_grace_ms: 2000,
            suspect_phi: 5.0,
            dead_phi: 8.0,
            dead_after: 10,
            bootstrap_expect: 3,
            bootstrap_ms: 3000,
            max_voters: 5,
            tick_ms: 100,
            election_ticks: 10,
            probe_ms: 500,
            monitors: 3,
            region_rate: 5,
        }
    }
}

/// Changes every member records all along (scheduled bursts are the `record` fault).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Changes a second each member observes (0: none).
    pub changes_per_s: f64,
    /// Changes per observation batch (one journal append and one gossip message).
    pub batch: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            changes_per_s: 0.0,
            batch: 1,
        }
    }
}

/// Bounds of the invariants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Invariants {
    /// A crashed member must be dead in the view of every live, connected, undisturbed
    /// peer of its region this long after the crash.
    pub detect_bound_ms: u64,
    /// After a member (or its observer) is disturbed (started, crashed, restarted, cut,
    /// healed, or paused longer than `pause_exempt_over_ms`), a death declared within this
    /// long is not a false death.
    pub settle_ms: u64,
    /// Pauses up to this long never excuse a death.
    pub pause_exempt_over_ms: u64,
    /// At the end of a run whose last fault is at least this old, every spike a running
    /// member published more than this long before the end must have been applied by a
    /// master of its region.
    pub applied_within_ms: u64,
    /// Once no member of a region was disturbed for this long, every work item must have
    /// one running owner (checked every second).
    pub reassign_within_ms: u64,
}

impl Default for Invariants {
    fn default() -> Self {
        Invariants {
            detect_bound_ms: 5000,
            settle_ms: 10_000,
            pause_exempt_over_ms: 2000,
            applied_within_ms: 20_000,
            reassign_within_ms: 10_000,
        }
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// Simulated second at which it happens.
    pub at_s: f64,
    #[serde(flatten)]
    pub action: Action,
}

/// What happens. Members are named `"R/I"` (member `I` of region `R`, both from 0) or
/// `"master:R"` (whoever is region `R`'s master at that moment).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// The process dies: connections close, everything not saved is lost.
    Crash { node: String },
    /// A crashed member starts again from what it saved, as a new incarnation.
    Restart { node: String },
    /// The process stops for `for_s` (SIGSTOP): connections stay up, messages to it
    /// queue, its timers fire late.
    Pause { node: String, for_s: f64 },
    /// The link between two members is cut (both ways).
    Cut { a: String, b: String },
    /// Every link of a member is cut.
    Isolate { node: String },
    /// A region is split into groups of member indices (members not listed are alone).
    Split {
        region: usize,
        groups: Vec<Vec<usize>>,
    },
    /// Every cut is healed.
    Heal,
    /// The member's wall clock runs `ms` ahead (negative: behind).
    Skew { node: String, ms: i64 },
    /// The member observes `changes` changes, evenly over `for_s` seconds, in batches of
    /// what ten readings a second find.
    Record {
        node: String,
        changes: u64,
        #[serde(default = "default_record_s")]
        for_s: f64,
    },
    /// A hostile member gossips acknowledgements it has no right to give: every member
    /// of its region acknowledged to the end, in a term above the one it knows. The
    /// intake's fencing must refuse them.
    ForgeAcks { node: String },
}

fn default_record_s() -> f64 {
    10.0
}

impl Action {
    /// Whether it disturbs the fleet (a crash, a pause, a cut...), as opposed to work
    /// (changes recorded) or a hostile message the cores must shrug off.
    pub fn disturbs(&self) -> bool {
        !matches!(self, Action::Record { .. } | Action::ForgeAcks { .. })
    }
}

/// A member named in a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node { region: usize, index: usize },
    Master { region: usize },
}

impl Target {
    pub fn parse(s: &str, topology: &Topology) -> Result<Target, String> {
        let region_ok = |r: usize| {
            if r < topology.regions {
                Ok(r)
            } else {
                Err(format!(
                    "region {r} in {s:?} does not exist (regions: {})",
                    topology.regions
                ))
            }
        };
        if let Some(r) = s.strip_prefix("master:") {
            let region = r
                .parse()
                .map_err(|_| format!("{s:?}: expected master:REGION"))?;
            return Ok(Target::Master {
                region: region_ok(region)?,
            });
        }
        let (r, i) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected REGION/INDEX or master:REGION"))?;
        let region = r
            .parse()
            .map_err(|_| format!("{s:?}: region is not a number"))?;
        let index: usize = i
            .parse()
            .map_err(|_| format!("{s:?}: index is not a number"))?;
        if index >= topology.nodes_per_region {
            return Err(format!(
                "member {index} in {s:?} does not exist (nodes_per_region: {})",
                topology.nodes_per_region
            ));
        }
        Ok(Target::Node {
            region: region_ok(region)?,
            index,
        })
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parses and checks scenario text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, Error> {
        let s: Scenario = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        s.check().map_err(|problem| Error::Invalid {
            path: path.into(),
            problem,
        })?;
        Ok(s)
    }

    /// The problems a parsed scenario may still have.
    pub fn check(&self) -> Result<(), String> {
        let t = &self.topology;
        if t.regions == 0 || t.nodes_per_region == 0 {
            return Err("topology: regions and nodes_per_region must be at least 1".into());
        }
        if t.roles.is_empty() {
            return Err("topology.roles: at least one role".into());
        }
        if t.eligible_per_region
            .is_some_and(|e| e > t.nodes_per_region)
        {
            return Err("topology.eligible_per_region exceeds nodes_per_region".into());
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return Err("duration_s must be a positive number".into());
        }
        if !(0.0..1.0).contains(&self.network.loss) {
            return Err("network.loss must be in [0, 1)".into());
        }
        for l in [self.network.same_region, self.network.cross_region] {
            if !(l.base_ms >= 0.0 && l.jitter_ms >= 0.0 && (l.base_ms + l.jitter_ms).is_finite()) {
                return Err("network latencies must be finite and not negative".into());
            }
        }
        let w = &self.workload;
        if !(w.changes_per_s.is_finite() && w.changes_per_s >= 0.0) || w.batch == 0 {
            return Err(
                "workload: changes_per_s must be a number, 0 or more, and batch at least 1".into(),
            );
        }
        if self.protocol.heartbeat_ms == 0 || self.protocol.tick_ms == 0 {
            return Err("protocol.heartbeat_ms and protocol.tick_ms must be positive".into());
        }
        for (n, f) in self.faults.iter().enumerate() {
            let at = |p: String| format!("faults[{n}] (at_s = {}): {p}", f.at_s);
            if !(f.at_s.is_finite() && f.at_s >= 0.0) {
                return Err(at("at_s must be a number, 0 or more".into()));
            }
            let target = |s: &str| Target::parse(s, t).map(|_| ()).map_err(at);
            match &f.action {
                Action::Crash { node }
                | Action::Restart { node }
                | Action::Isolate { node }
                | Action::ForgeAcks { node }
                | Action::Skew { node, .. } => target(node)?,
                Action::Record {
                    node,
                    changes,
                    for_s,
                } => {
                    target(node)?;
                    if *changes == 0 || !(for_s.is_finite() && *for_s >= 0.0) {
                        return Err(at(
                            "record: changes must be at least 1 and for_s not negative".into(),
                        ));
                    }
                }
                Action::Pause { node, for_s } => {
                    target(node)?;
                    if !(for_s.is_finite() && *for_s > 0.0) {
                        return Err(at("for_s must be positive".into()));
                    }
                }
                Action::Cut { a, b } => {
                    target(a)?;
                    target(b)?;
                }
                Action::Split { region, groups } => {
                    if *region >= t.regions {
                        return Err(at(format!("region {region} does not exist")));
                    }
                    if groups.iter().flatten().any(|&i| i >= t.nodes_per_region) {
                        return Err(at("a split names a member that does not exist".into()));
                    }
                }
                Action::Heal => {}
            }
        }
        Ok(())
    }

    /// Members in all.
    pub fn nodes(&self) -> usize {
        self.topology.regions * self.topology.nodes_per_region
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, Error> {
        Scenario::parse(text, Path::new("bad.toml"))
    }

    #[test]
    fn a_minimal_scenario_takes_the_defaults() {
        let s = parse("duration_s = 5\n[topology]\nregions = 2\nnodes_per_region = 3\n")
            .expect("valid");
        assert_eq!(s.nodes(), 6);
        assert_eq!(s.protocol.heartbeat_ms, 1000);
        assert_eq!(s.network.mesh_degree, 4);
    }

    #[test]
    fn syntax_errors_name_the_file_and_the_line() {
        let e = parse("duration_s = 5\n[topology\n").expect_err("broken");
        let msg = e.to_string();
        assert!(msg.starts_with("bad.toml: "), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn unknown_fields_and_bad_targets_are_errors() {
        let e = parse("duration_s = 5\nspeed = 3\n[topology]\nregions = 1\nnodes_per_region = 3\n")
            .expect_err("unknown field");
        assert!(e.to_string().contains("speed"), "{e}");
        let e = parse(
            "duration_s = 5\n[topology]\nregions = 1\nnodes_per_region = 3\n\
             [[faults]]\nat_s = 1\naction = \"crash\"\nnode = \"0/7\"\n",
        )
        .expect_err("no member 7");
        assert!(e.to_string().contains("faults[0]"), "{e}");
        let e = parse(
            "duration_s = 5\n[topology]\nregions = 1\nnodes_per_region = 3\n\
             [[faults]]\nat_s = 1\naction = \"explode\"\n",
        )
        .expect_err("no such action");
        assert!(e.to_string().contains("explode"), "{e}");
    }
}
