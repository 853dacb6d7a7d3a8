//! What the fleet knows and how the region's master uses it.
//!
//! - [`Knowledge`] (every node): approved patterns, each an [`Approval`] signed by the
//!   master of a region in a term. A node takes an approval from its region's log (the
//!   master committed it) or from the fleet topic; a gossiped one is accepted only when
//!   its signer is the master of that region *in that term* as this node knows it, so an
//!   ordinary node cannot poison what the fleet has learned. A change matching an
//!   approval for the node's role is approved (`learned:<id>`); other roles keep judging
//!   it with their own policy.
//! - [`Brain`] (the master): judges the region's spikes with each origin's role policy,
//!   learns what policy approves (users, groups, listeners), feeds the correlation window
//!   ([`crate::correlate`]), marks servers running their package manager as upgrading,
//!   and answers consultations. A change nothing explains yet is answered `held`: the
//!   server asks again when the window is over, so that a coordinated change becomes one
//!   fleet event instead of one alert per server.
//!
//! Signing and signature checks need the node's key: the runtime does them (the bytes to
//! sign are [`Approval::signed_bytes`]); nothing here reads clocks or does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::correlate::{self, Fingerprint, FleetEvent, Outcome, Verdict as EventVerdict};
use crate::node;
use crate::policy::{Decision, Policy};
use crate::spike::{Change, Digest, Kind, Spike};

/// An approved change: the same kind, change and subject (and, when given, the same
/// content after the change) on a server of one of `roles`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pattern {
    pub roles: BTreeSet<String>,
    pub kind: Kind,
    pub change: Change,
    pub subject: String,
    /// The digest after the change; `None` approves any content.
    #[serde(default)]
    pub after: Option<Digest>,
}

impl Pattern {
    /// The pattern of `spike` on a server of `role`.
    pub fn of(spike: &Spike, role: &str) -> Self {
        Pattern {
            roles: BTreeSet::from([role.to_string()]),
            kind: spike.kind,
            change: spike.change,
            subject: spike.subject.clone(),
            after: spike.after,
        }
    }

    pub fn matches(&self, role: &str, spike: &Spike) -> bool {
        self.kind == spike.kind
            && self.change == spike.change
            && self.subject == spike.subject
            && self.after.is_none_or(|d| spike.after == Some(d))
            && self.roles.contains(role)
    }

    /// A short stable id: the first 16 hex digits of the pattern's sha256.
    pub fn id(&self) -> String {
        let bytes = rmp_serde::to_vec(self).unwrap_or_default();
        let d = Sha256::digest(&bytes);
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A pattern approved by the master of `region` in `term`, signed with its node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub pattern: Pattern,
    pub region: String,
    pub term: u64,
    /// The master's peer id (the key that signed).
    pub master: node::Id,
    /// Who approved: `policy <rule>` or `operator <name>`.
    pub by: String,
    pub approved_at_unix_ms: u64,
    /// The signer's public key (libp2p protobuf encoding).
    #[serde(with = "bytes")]
    pub public_key: Vec<u8>,
    #[serde(with = "bytes")]
    pub signature: Vec<u8>,
    /// That `master` led `region` in `term` ([`crate::trust`]): attached when published
    /// on the fleet topic, not signed (it is its own proof), not kept in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Box<crate::trust::Proof>>,
}

/// Byte strings as msgpack binaries (not arrays of integers); JSON reads them back too.
mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        crate::spike::serde_bytes_compat::deserialize(d)
    }
}

impl Approval {
    /// An unsigned approval; the runtime signs [`Approval::signed_bytes`].
    pub fn new(
        pattern: Pattern,
        region: &str,
        term: u64,
        master: node::Id,
        by: String,
        now: u64,
    ) -> Self {
        Approval {
            pattern,
            region: region.to_string(),
            term,
            master,
            by,
            approved_at_unix_ms: now,
            public_key: Vec::new(),
            signature: Vec::new(),
            proof: None,
        }
    }

    pub fn id(&self) -> String {
        self.pattern.id()
    }

    /// What the master signs: everything but the key and the signature, with a domain tag.
    pub fn signed_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec(&(
            "fleetmesh-approval-v1",
            &self.pattern,
            &self.region,
            self.term,
            &self.master,
            &self.by,
            self.approved_at_unix_ms,
        ))
        .unwrap_or_default()
    }
}

/// A fleet event as this node saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub key: String,
    pub region: String,
    pub term: u64,
    pub master: node::Id,
    pub event: FleetEvent,
    pub raised_at_unix_ms: u64,
    pub received_at_unix_ms: u64,
    /// Raised by this node as master, or heard as an emergency.
    pub source: &'static str,
}

/// A critical fleet event, broadcast by the master that raised it on the fleet topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emergency {
    pub region: String,
    pub term: u64,
    pub master: node::Id,
    pub raised_at_unix_ms: u64,
    pub event: FleetEvent,
    /// That `master` led `region` in `term` ([`crate::trust`]), attached when published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Box<crate::trust::Proof>>,
}

impl Emergency {
    /// Stable per event: fingerprint and window start.
    pub fn key(&self) -> String {
        fleet_key(&self.region, &self.event)
    }
}

/// The dedup key of a fleet event.
pub fn fleet_key(region: &str, e: &FleetEvent) -> String {
    let after = e
        .fingerprint
        .after
        .map(|d| d.to_string())
        .unwrap_or_default();
    format!(
        "fleet|{region}|{}|{}|{}|{}",
        e.fingerprint.kind.as_str(),
        e.fingerprint.subject,
        &after[..after.len().min(16)],
        e.first_unix_ms
    )
}

/// Who this node believes is the master of its region, and in which term.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub region: String,
    pub master: Option<(node::Id, u64)>,
}

/// How an approval reached this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The region's log (committed by the master).
    Log,
    /// The fleet topic (checked against the known master).
    Gossip,
    /// This node is the master that approved it.
    Own,
}

/// An approval as this node holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    pub id: String,
    pub approval: Approval,
    pub received_at_unix_ms: u64,
    pub via: Via,
}

/// Why a gossiped approval or emergency was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Rejection {
    #[error("signature does not verify or the key is not the claimed master's")]
    BadSignature,
    #[error("the gossip author {author} is not the claimed master {claimed}")]
    NotAuthor { author: node::Id, claimed: node::Id },
    #[error("region {region} has no master known here; cannot check the signer")]
    NoMasterKnown { region: String },
    #[error("{claimed} is not the master of region {region} in term {term} (known: {known})")]
    NotMaster {
        region: String,
        term: u64,
        claimed: node::Id,
        known: String,
    },
}

/// Refused approvals kept for the API.
const REJECTIONS_KEPT: usize = 100;

/// Every approval this node holds, indexed for matching.
#[derive(Debug, Default)]
pub struct Knowledge {
    by_id: BTreeMap<String, Learned>,
    /// (kind, subject) → ids, for matching without scanning.
    index: HashMap<(Kind, String), Vec<String>>,
    /// The master accepted per foreign region and term (first seen in that term wins).
    foreign: BTreeMap<String, (u64, node::Id)>,
    rejected: VecDeque<(u64, String, Rejection)>,
    rejected_total: u64,
}

impl Knowledge {
    /// Checks that `master` may speak for `region` in `term`. This node's own region is
    /// checked against its consensus view; a foreign region's master is the first signer
    /// seen in the highest term (a lower term, or another signer in the same term, is
    /// refused).
    pub fn check_master(
        &mut self,
        view: &View,
        region: &str,
        term: u64,
        master: &node::Id,
    ) -> Result<(), Rejection> {
        if region == view.region {
            return match &view.master {
                Some((m, t)) if m == master && *t == term => Ok(()),
                Some((m, t)) => Err(Rejection::NotMaster {
                    region: region.to_string(),
                    term,
                    claimed: master.clone(),
                    known: format!("{m} in term {t}"),
                }),
                None => Err(Rejection::NoMasterKnown {
                    region: region.to_string(),
                }),
            };
        }
        match self.foreign.get(region) {
            Some((t, m)) if (*t == term && m == master) || *t < term => {}
            Some((t, m)) => {
                return Err(Rejection::NotMaster {
                    region: region.to_string(),
                    term,
                    claimed: master.clone(),
                    known: format!("{m} in term {t}"),
                });
            }
            None => {}
        }
        self.foreign
            .insert(region.to_string(), (term, master.clone()));
        Ok(())
    }

    /// Takes an approval. `Via::Gossip` approvals are checked against `view` first;
    /// `Via::Log` and `Via::Own` are authoritative. True when it is new.
    pub fn offer(
        &mut self,
        approval: Approval,
        via: Via,
        view: &View,
        now: u64,
    ) -> Result<bool, Rejection> {
        if via == Via::Gossip
            && let Err(r) =
                self.check_master(view, &approval.region, approval.term, &approval.master)
        {
            self.reject(now, approval.id(), r.clone());
            return Err(r);
        }
        let id = approval.id();
        if self.by_id.contains_key(&id) {
            return Ok(false);
        }
        let key = (approval.pattern.kind, approval.pattern.subject.clone());
        self.index.entry(key).or_default().push(id.clone());
        self.by_id.insert(
            id.clone(),
            Learned {
                id,
                approval,
                received_at_unix_ms: now,
                via,
            },
        );
        Ok(true)
    }

    /// Records a refusal made elsewhere (a bad signature found by the runtime).
    pub fn reject(&mut self, now: u64, id: String, why: Rejection) {
        if self.rejected.len() == REJECTIONS_KEPT {
            self.rejected.pop_front();
        }
        self.rejected.push_back((now, id, why));
        self.rejected_total += 1;
    }

    /// The approval that covers `spike` on a server of `role`, if any.
    pub fn matching(&self, role: &str, spike: &Spike) -> Option<&Learned> {
        self.index
            .get(&(spike.kind, spike.subject.clone()))?
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .find(|l| l.approval.pattern.matches(role, spike))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn all(&self) -> impl Iterator<Item = &Learned> {
        self.by_id.values()
    }

    /// Refusals, oldest first: (when, approval id, why), and the total since start.
    pub fn rejected(&self) -> (Vec<(u64, String, Rejection)>, u64) {
        (self.rejected.iter().cloned().collect(), self.rejected_total)
    }
}

/// The master's answer to a consultation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub region: String,
    pub term: u64,
    /// The version of the origin role's policy at the master.
    pub policy: String,
    pub decision: Decision,
    pub rule: String,
    pub reason: String,
    /// Not known yet: the change may be part of a coordinated change still gathering.
    /// The node asks again (`recheck`) after `recheck_after_ms`, when the window is over;
    /// what nothing explains then is `fleet:unresolved`, a violation.
    pub held: bool,
    #[serde(default)]
    pub recheck_after_ms: Option<u64>,
}

/// The rule of a change that nothing the fleet knows explained within the window.
pub const UNRESOLVED: &str = "fleet:unresolved";

/// A verdict of the region's master that no policy file names (`fleet:<what>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetRule {
    /// Part of an approved rollout across the fleet.
    Rollout,
    /// Part of a package upgrade (across the fleet, or of the asking server).
    Upgrade,
    /// The same unapproved change on many servers at once: the fleet event's own alert
    /// stands for every server in it.
    SuspectedCoordinatedChange,
    /// Nothing explains it yet: asked again when the window is over.
    Held,
    /// Nothing explained it within the window: a violation of its own.
    Unresolved,
}

impl FleetRule {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetRule::Rollout => "rollout",
            FleetRule::Upgrade => "upgrade",
            FleetRule::SuspectedCoordinatedChange => "suspected_coordinated_change",
            FleetRule::Held => "held",
            FleetRule::Unresolved => "unresolved",
        }
    }
}

/// The rule that decided a change, typed where the fleet gave it a meaning. Rules travel
/// and show as text (`learned:<id>`, `fleet:<what>`, `upgrade:<log>`, `autonomous`,
/// `file:line#name`); [`Rule::parse`] and `Display` convert both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A learned pattern, by its id.
    Learned(String),
    Fleet(FleetRule),
    /// A package-manager run of this server, recorded in this log, covered a change
    /// found at start-up.
    Upgrade(String),
    /// No master answered: the node's conservative default.
    Autonomous,
    /// A rule of a policy file, or a built-in default.
    Policy(String),
}

impl Rule {
    pub fn parse(text: &str) -> Rule {
        if let Some(id) = text.strip_prefix("learned:") {
            return Rule::Learned(id.to_string());
        }
        if let Some(log) = text.strip_prefix("upgrade:") {
            return Rule::Upgrade(log.to_string());
        }
        if text == "autonomous" {
            return Rule::Autonomous;
        }
        let fleet = [
            FleetRule::Rollout,
            FleetRule::Upgrade,
            FleetRule::SuspectedCoordinatedChange,
            FleetRule::Held,
            FleetRule::Unresolved,
        ];
        if let Some(what) = text.strip_prefix("fleet:")
            && let Some(f) = fleet.into_iter().find(|f| f.as_str() == what)
        {
            return Rule::Fleet(f);
        }
        Rule::Policy(text.to_string())
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Learned(id) => write!(f, "learned:{id}"),
            Rule::Fleet(r) => write!(f, "fleet:{}", r.as_str()),
            Rule::Upgrade(log) => write!(f, "upgrade:{log}"),
            Rule::Autonomous => f.write_str("autonomous"),
            Rule::Policy(p) => f.write_str(p),
        }
    }
}

/// Settings of the master's brain.
#[derive(Debug, Clone)]
pub struct Config {
    pub correlation: correlate::Config,
    /// Kinds grouped into fleet events.
    pub correlate_kinds: BTreeSet<Kind>,
    /// Kinds whose policy-approved changes become learned patterns.
    pub learn_kinds: BTreeSet<Kind>,
    /// Executable names of package managers (a process spike of one marks an upgrade).
    pub package_managers: Vec<String>,
    /// Log files package managers write (a change of one marks an upgrade).
    pub package_logs: Vec<String>,
    /// How long a server counts as upgrading after its package manager was seen.
    pub upgrade_ms: u64,
    /// At most this many new patterns learned by policy per minute.
    pub learn_per_minute: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            correlation: correlate::Config::default(),
            correlate_kinds: BTreeSet::from([Kind::File, Kind::User, Kind::Group, Kind::Network]),
            learn_kinds: BTreeSet::from([Kind::User, Kind::Group, Kind::Network]),
            package_managers: [
                "dpkg",
                "apt",
                "apt-get",
                "aptitude",
                "unattended-upgr",
                "rpm",
                "yum",
                "dnf",
                "zypper",
                "apk",
            ]
            .map(String::from)
            .to_vec(),
            package_logs: [
                "/var/log/dpkg.log",
                "/var/log/apt/history.log",
                "/var/log/apt/term.log",
                "/var/log/yum.log",
                "/var/log/dnf.log",
                "/var/log/dnf.rpm.log",
                "/var/log/zypp/history",
            ]
            .map(String::from)
            .to_vec(),
            upgrade_ms: 10 * 60 * 1000,
            learn_per_minute: 60,
        }
    }
}

/// What the brain asks its actor to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Commit an approval of this pattern (policy approved it on a server of its role).
    Learn { pattern: Pattern, by: String },
    /// A fleet event was raised (`new`) or grew by a server or a subject; `worse`: its
    /// verdict got worse (at most once a suspected coordinated change).
    Event {
        event: FleetEvent,
        new: bool,
        worse: bool,
    },
}

/// The master's view of its region.
#[derive(Debug)]
pub struct Brain {
    config: Config,
    policies: BTreeMap<String, Policy>,
    knowledge: Knowledge,
    window: correlate::Window,
    /// Origin → upgrading until.
    upgrading: HashMap<node::Id, u64>,
    /// Fingerprint → the raised event it is part of (named by its first fingerprint),
    /// kept two windows (a server asking again at the end of its window still learns the
    /// event covered it).
    raised: HashMap<Fingerprint, (Fingerprint, u64)>,
    /// A raised event's first fingerprint → its verdict, kept as long.
    verdicts: HashMap<Fingerprint, (EventVerdict, u64)>,
    /// File path → the raised event its change is part of: a reconciler's discrepancy
    /// about the file (the watch missed it in the storm) is covered by the same event.
    raised_files: HashMap<String, (Fingerprint, u64)>,
    /// Patterns asked to be learned (not asked twice).
    asked: BTreeSet<String>,
    learned_this_minute: (u64, usize),
}

impl Brain {
    pub fn new(config: Config) -> Self {
        Brain {
            window: correlate::Window::new(config.correlation.clone()),
            config,
            policies: BTreeMap::new(),
            knowledge: Knowledge::default(),
            upgrading: HashMap::new(),
            raised: HashMap::new(),
            verdicts: HashMap::new(),
            raised_files: HashMap::new(),
            asked: BTreeSet::new(),
            learned_this_minute: (0, 0),
        }
    }

    /// The policy of each role, as the master has them.
    pub fn set_policies(&mut self, policies: BTreeMap<String, Policy>) {
        self.policies = policies;
    }

    pub fn policy_version(&self, role: &str) -> String {
        self.policy_of(role)
            .map_or_else(|| "none".to_string(), |p| p.version().to_string())
    }

    fn policy_of(&self, role: &str) -> Option<&Policy> {
        self.policies
            .get(role)
            .or_else(|| self.policies.get("baseline"))
    }

    /// An approval committed in the region's log.
    pub fn learned(&mut self, approval: Approval, now: u64) {
        let _ = self
            .knowledge
            .offer(approval, Via::Log, &View::default(), now);
    }

    /// See [`Knowledge::check_master`].
    pub fn check_master(
        &mut self,
        view: &View,
        region: &str,
        term: u64,
        master: &node::Id,
    ) -> Result<(), Rejection> {
        self.knowledge.check_master(view, region, term, master)
    }

    pub fn knows(&self, id: &str) -> bool {
        self.knowledge.contains(id)
    }

    fn is_upgrading(&self, origin: &node::Id, now: u64) -> bool {
        self.upgrading.get(origin).is_some_and(|until| *until > now)
    }

    fn marks_upgrade(&self, spike: &Spike) -> bool {
        match spike.kind {
            Kind::Process if spike.change == Change::Added => {
                let exe = crate::policy::Facts::of(spike)
                    .exe
                    .unwrap_or(&spike.subject);
                let name = exe.rsplit('/').next().unwrap_or(exe);
                self.config.package_managers.iter().any(|p| p == name)
            }
            Kind::File => self.config.package_logs.contains(&spike.subject),
            _ => false,
        }
    }

    /// Whether policy or a learned pattern approves `spike` on a server of `role`, and by
    /// which rule.
    fn approval_of(&self, spike: &Spike, role: &str) -> Option<String> {
        if let Some(l) = self.knowledge.matching(role, spike) {
            return Some(Rule::Learned(l.id.clone()).to_string());
        }
        let p = self.policy_of(role)?;
        let v = p.evaluate(spike);
        (v.decision == Decision::Approved).then(|| v.rule.to_string())
    }

    /// One spike of the region, taken in once and in order, from a server of `role`.
    pub fn intake(&mut self, spike: &Spike, role: &str, now: u64) -> Vec<Effect> {
        self.expire(now);
        let mut out = Vec::new();
        if self.marks_upgrade(spike) {
            self.upgrading
                .insert(spike.origin.clone(), now + self.config.upgrade_ms);
        }
        let approved = self.approval_of(spike, role);
        if let Some(rule) = &approved
            && !matches!(Rule::parse(rule), Rule::Learned(_))
            && self.config.learn_kinds.contains(&spike.kind)
        {
            let pattern = Pattern::of(spike, role);
            let id = pattern.id();
            let (minute, n) = self.learned_this_minute;
            let this_minute = now / 60_000;
            let n = if minute == this_minute { n } else { 0 };
            if !self.knowledge.contains(&id)
                && !self.asked.contains(&id)
                && n < self.config.learn_per_minute
            {
                self.asked.insert(id);
                self.learned_this_minute = (this_minute, n + 1);
                out.push(Effect::Learn {
                    pattern,
                    by: format!("policy {rule}"),
                });
            }
        }
        if self.config.correlate_kinds.contains(&spike.kind) {
            let upgrading = self.is_upgrading(&spike.origin, now);
            let outcome = self
                .window
                .offer(spike, role, approved.is_some(), upgrading, now);
            let until = now + 2 * self.config.correlation.window_ms;
            match outcome {
                Outcome::Counted => {}
                Outcome::Raised(event) => {
                    let head = event.fingerprint.clone();
                    self.cover(&head, &head, until);
                    self.verdicts.insert(head, (event.verdict, until));
                    out.push(Effect::Event {
                        event,
                        new: true,
                        worse: false,
                    });
                }
                Outcome::Folded {
                    event,
                    subject,
                    worse,
                } => {
                    let head = event.fingerprint.clone();
                    if let Some(fp) = subject {
                        self.cover(&fp, &head, until);
                    }
                    // Every subject of the event is kept as long as the event grows.
                    self.verdicts.insert(head, (event.verdict, until));
                    out.push(Effect::Event {
                        event,
                        new: false,
                        worse,
                    });
                }
            }
        }
        out
    }

    /// A consultation about `spike` from a server of `role`; `recheck`: the server asks
    /// again at the end of the window it was told to wait.
    ///
    /// Nothing is kept per consultation: a change that nothing explains is answered
    /// `held`, and the server itself asks again when the window is over. So a master
    /// that fails over loses nothing: its successor answers the recheck from what it knows
    /// (the log's learned patterns; fleet events it saw itself), else `fleet:unresolved`.
    pub fn consult(
        &mut self,
        spike: &Spike,
        role: &str,
        region: &str,
        term: u64,
        now: u64,
        recheck: bool,
    ) -> Answer {
        let policy = self.policy_version(role);
        let answer = |decision, rule: String, reason: String, held| Answer {
            region: region.to_string(),
            term,
            policy: policy.clone(),
            decision,
            rule,
            reason,
            held,
            recheck_after_ms: None,
        };
        if let Some(l) = self.knowledge.matching(role, spike) {
            return answer(
                Decision::Approved,
                Rule::Learned(l.id.clone()).to_string(),
                format!("approved for {} by {}", role, l.approval.by),
                false,
            );
        }
        let fp = Fingerprint::of(spike);
        let head = if spike.kind == Kind::Reconcile {
            self.raised_files.get(&spike.subject)
        } else {
            self.raised.get(&fp)
        };
        let verdict = head
            .and_then(|(head, _)| self.verdicts.get(head))
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v);
        if let Some(verdict) = verdict {
            return match verdict {
                EventVerdict::Rollout => answer(
                    Decision::Approved,
                    Rule::Fleet(FleetRule::Rollout).to_string(),
                    "part of an approved rollout across the fleet".into(),
                    false,
                ),
                EventVerdict::Upgrade => answer(
                    Decision::Approved,
                    Rule::Fleet(FleetRule::Upgrade).to_string(),
                    "part of a package upgrade across the fleet".into(),
                    false,
                ),
                EventVerdict::SuspectedCoordinatedChange => answer(
                    Decision::Violation,
                    Rule::Fleet(FleetRule::SuspectedCoordinatedChange).to_string(),
                    "the same unapproved change on many servers at once".into(),
                    false,
                ),
            };
        }
        if self.marks_upgrade(spike) {
            self.upgrading
                .insert(spike.origin.clone(), now + self.config.upgrade_ms);
        }
        if self.is_upgrading(&spike.origin, now) {
            return answer(
                Decision::Approved,
                Rule::Fleet(FleetRule::Upgrade).to_string(),
                "the server is running its package manager".into(),
                false,
            );
        }
        if let Some(p) = self.policy_of(role) {
            let v = p.evaluate(spike);
            if v.decision != Decision::Consult {
                return answer(v.decision, v.rule.to_string(), v.reason.to_string(), false);
            }
        }
        if recheck {
            return answer(
                Decision::Violation,
                Rule::Fleet(FleetRule::Unresolved).to_string(),
                "no policy rule, learned pattern, rollout or upgrade explained it within the window"
                    .into(),
                false,
            );
        }
        Answer {
            recheck_after_ms: Some(self.config.correlation.window_ms),
            ..answer(
                Decision::Consult,
                Rule::Fleet(FleetRule::Held).to_string(),
                "nothing the fleet knows explains it yet: asked again when the window is over"
                    .into(),
                true,
            )
        }
    }

    /// Forgets what has aged out: closed correlation groups, old events, upgrades.
    pub fn expire(&mut self, now: u64) {
        self.window.expire(now);
        self.upgrading.retain(|_, until| *until > now);
        self.verdicts.retain(|_, (_, until)| *until > now);
        let verdicts = &self.verdicts;
        self.raised
            .retain(|_, (head, until)| *until > now || verdicts.contains_key(head));
        self.raised_files
            .retain(|_, (head, until)| *until > now || verdicts.contains_key(head));
    }

    /// Notes that changes of `fp` are covered by the event named `head`.
    fn cover(&mut self, fp: &Fingerprint, head: &Fingerprint, until: u64) {
        self.raised.insert(fp.clone(), (head.clone(), until));
        if fp.kind == Kind::File {
            self.raised_files
                .insert(fp.subject.clone(), (head.clone(), until));
        }
    }

    /// The live members of each role of the region, for the share rule of fleet events.
    pub fn set_live(&mut self, live: BTreeMap<String, usize>) {
        self.window.set_live(live);
    }

    pub fn open_groups(&self) -> usize {
        self.window.open()
    }

    pub fn open_events(&self) -> usize {
        self.window.open_events()
    }
}

#[cfg(test)]
mod tests;
