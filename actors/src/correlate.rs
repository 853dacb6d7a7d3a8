//! Coordinated-change detection: many servers' identical changes become one fleet event.
//!
//! Spikes are grouped by fingerprint (kind, subject, digest after the change) within a
//! window (30 s by default) that starts with the first spike of the group. A group becomes
//! a fleet event when enough distinct servers of one role show it: at least 2 and at least
//! `min_share` of the role's live members (or, for a role given an explicit threshold,
//! more than that many servers, and still at least 2). The event is a `rollout` when every
//! spike of it was approved (it matches an approved pattern or the desired state), an
//! `upgrade` when every server involved was running its package manager, otherwise a
//! `suspected_coordinated_change` (critical). Further servers showing the same change in
//! the same window are folded into that event instead of raising new ones.
//!
//! A storm is one event too: a change of many subjects on the same servers (a package
//! upgrade rewriting 200 files, a deployment tool touching a tree) makes one fingerprint
//! group per subject, and each group that becomes an event while an event of the same
//! role is open on mostly the same servers joins that event as one more subject. The
//! event lists its subjects (the first [`SUBJECTS_LISTED`], and how many in all), and its
//! verdict only ever gets worse as subjects and servers join (a rollout or an upgrade
//! that turns out to include an unexplained change becomes suspected, once).
//!
//! Sans-IO: the caller passes each spike with its origin's role, whether policy approved
//! it and whether the origin was upgrading, and the current time; the role's live members
//! are set by the caller when they change. No clock, no I/O. Memory is bounded by the
//! window: groups and events older than it are dropped on each call.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::node;
use crate::spike::{Digest, Kind, Spike};

/// Subjects an event lists at most (the rest are counted in `subjects_total`).
pub const SUBJECTS_LISTED: usize = 256;

/// What identifies "the same change" across servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint {
    pub kind: Kind,
    pub subject: String,
    pub after: Option<Digest>,
}

impl Fingerprint {
    pub fn of(spike: &Spike) -> Self {
        Fingerprint {
            kind: spike.kind,
            subject: spike.subject.clone(),
            after: spike.after,
        }
    }
}

/// Window and thresholds.
#[derive(Debug, Clone)]
pub struct Config {
    pub window_ms: u64,
    /// Roles with an explicit threshold: more than this many servers of the role showing
    /// the same change make it a fleet event (and at least 2), whatever the role's size.
    pub thresholds: BTreeMap<String, usize>,
    /// The same for every role without one of its own; `None`: the share rule.
    pub default_threshold: Option<usize>,
    /// Without a threshold, the share of a role's live members that must show the same
    /// change (and at least 2 servers).
    pub min_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window_ms: 30_000,
            thresholds: BTreeMap::new(),
            default_threshold: None,
            min_share: 0.5,
        }
    }
}

impl Config {
    /// Servers of `role` (with `live` live members) that must show a change for it to be
    /// a fleet event.
    pub fn needed(&self, role: &str, live: usize) -> usize {
        let n = match self
            .thresholds
            .get(role)
            .copied()
            .or(self.default_threshold)
        {
            Some(t) => t.saturating_add(1),
            None => (self.min_share.clamp(0.0, 1.0) * live as f64).ceil() as usize,
        };
        n.max(2)
    }
}

/// What a fleet event is judged to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every spike of the group was approved: a planned rollout.
    Rollout,
    /// Every server involved was running its package manager: a routine upgrade.
    Upgrade,
    /// Neither: the same unapproved change on many servers at once (critical).
    SuspectedCoordinatedChange,
}

/// One fleet-level event standing for many servers' identical changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEvent {
    /// The change that opened the event (its first subject); names the event.
    pub fingerprint: Fingerprint,
    /// The role whose threshold was exceeded.
    pub role: String,
    /// Every server (and its role) that showed the change in the window so far.
    pub origins: BTreeMap<node::Id, String>,
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    pub verdict: Verdict,
    /// The subjects of the event, the first one first, at most [`SUBJECTS_LISTED`].
    #[serde(default)]
    pub subjects: Vec<String>,
    /// How many subjects the event has in all (1 for a single change).
    #[serde(default)]
    pub subjects_total: u64,
}

impl FleetEvent {
    /// Its subjects in a few words: "/etc/x" or "/etc/x and 199 more".
    pub fn subjects_brief(&self) -> String {
        let more = self.subjects_total.saturating_sub(1);
        if more == 0 {
            self.fingerprint.subject.clone()
        } else {
            format!("{} and {more} more", self.fingerprint.subject)
        }
    }
}

/// What offering a spike did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Below every threshold so far (or already counted from this server).
    Counted,
    /// The group just crossed a threshold: a new fleet event.
    Raised(FleetEvent),
    /// Part of an event already raised in this window, which grew: by a server, or by
    /// `subject` (a change of another subject on the same servers), or its verdict got
    /// worse (`worse`).
    Folded {
        event: FleetEvent,
        subject: Option<Fingerprint>,
        worse: bool,
    },
}

/// One fingerprint's servers in the window.
#[derive(Debug)]
struct Group {
    first: u64,
    /// Server → (role, approved, upgrading).
    origins: BTreeMap<node::Id, (String, bool, bool)>,
    /// The event it is part of.
    event: Option<u64>,
}

/// A raised event: one or more groups of the same role on mostly the same servers.
#[derive(Debug)]
struct Event {
    head: Fingerprint,
    role: String,
    first: u64,
    last: u64,
    /// Server → (role, every spike approved, every spike while upgrading).
    origins: BTreeMap<node::Id, (String, bool, bool)>,
    subjects: Vec<String>,
    subjects_total: u64,
    verdict: Verdict,
}

impl Event {
    fn verdict_now(&self) -> Verdict {
        if self.origins.values().all(|(_, approved, _)| *approved) {
            Verdict::Rollout
        } else if self.origins.values().all(|(_, _, upgrading)| *upgrading) {
            Verdict::Upgrade
        } else {
            Verdict::SuspectedCoordinatedChange
        }
    }

    /// Takes in a server's flags; whether the server is new to the event.
    fn take(&mut self, origin: &node::Id, flags: &(String, bool, bool)) -> bool {
        match self.origins.get_mut(origin) {
            Some(e) => {
                e.1 &= flags.1;
                e.2 &= flags.2;
                false
            }
            None => {
                self.origins.insert(origin.clone(), flags.clone());
                true
            }
        }
    }

    /// Re-judges the verdict (it only gets worse); whether it did.
    fn rejudge(&mut self) -> bool {
        let v = self.verdict_now().max(self.verdict);
        let worse = v != self.verdict;
        self.verdict = v;
        worse
    }

    fn public(&self) -> FleetEvent {
        FleetEvent {
            fingerprint: self.head.clone(),
            role: self.role.clone(),
            origins: self
                .origins
                .iter()
                .map(|(o, (r, ..))| (o.clone(), r.clone()))
                .collect(),
            first_unix_ms: self.first,
            last_unix_ms: self.last,
            verdict: self.verdict,
            subjects: self.subjects.clone(),
            subjects_total: self.subjects_total,
        }
    }
}

/// The correlation window.
#[derive(Debug)]
pub struct Window {
    config: Config,
    groups: HashMap<Fingerprint, Group>,
    /// Each group's opening time, in the order groups opened: expiry pops from the front
    /// instead of visiting every open group at each offer (a storm opens one per change).
    opened: VecDeque<(u64, Fingerprint)>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    /// Live members per role.
    live: BTreeMap<String, usize>,
}

impl Window {
    pub fn new(config: Config) -> Self {
        Window {
            config,
            groups: HashMap::new(),
            opened: VecDeque::new(),
            events: BTreeMap::new(),
            next_event: 0,
            live: BTreeMap::new(),
        }
    }

    /// The live members of each role of the region (for the share rule).
    pub fn set_live(&mut self, live: BTreeMap<String, usize>) {
        self.live = live;
    }

    /// Servers of `role` that must show a change for it to be a fleet event now.
    pub fn needed(&self, role: &str) -> usize {
        self.config
            .needed(role, self.live.get(role).copied().unwrap_or(0))
    }

    /// Offers one spike of a server of `role`; `approved`: policy approved it;
    /// `upgrading`: its server was running the package manager.
    pub fn offer(
        &mut self,
        spike: &Spike,
        role: &str,
        approved: bool,
        upgrading: bool,
        now: u64,
    ) -> Outcome {
        self.expire(now);
        let needed = self.needed(role);
        let fp = Fingerprint::of(spike);
        let opened = &mut self.opened;
        let g = self.groups.entry(fp.clone()).or_insert_with(|| {
            opened.push_back((now, fp.clone()));
            Group {
                first: now,
                origins: BTreeMap::new(),
                event: None,
            }
        });
        let entry = g
            .origins
            .entry(spike.origin.clone())
            .or_insert_with(|| (role.to_string(), true, true));
        // A server's later spike of the same change can only make the group less benign.
        entry.1 &= approved;
        entry.2 &= upgrading;
        let flags = entry.clone();
        if let Some(id) = g.event {
            let Some(e) = self.events.get_mut(&id) else {
                return Outcome::Counted;
            };
            e.last = now;
            let new = e.take(&spike.origin, &flags);
            let worse = e.rejudge();
            return if new || worse {
                Outcome::Folded {
                    event: e.public(),
                    subject: None,
                    worse,
                }
            } else {
                Outcome::Counted
            };
        }
        let servers: BTreeSet<&node::Id> = g
            .origins
            .iter()
            .filter(|(_, (r, ..))| r == role)
            .map(|(o, _)| o)
            .collect();
        if servers.len() < needed {
            return Outcome::Counted;
        }
        // The same servers' event of this role, if one is open: this change joins it.
        let joins = self
            .events
            .iter()
            .rev()
            .find(|(_, e)| {
                e.role == role && {
                    let common = servers
                        .iter()
                        .filter(|s| e.origins.contains_key(**s))
                        .count();
                    common >= 2 && 2 * common >= servers.len()
                }
            })
            .map(|(id, _)| *id);
        let origins = g.origins.clone();
        match joins {
            Some(id) => {
                g.event = Some(id);
                let Some(e) = self.events.get_mut(&id) else {
                    return Outcome::Counted;
                };
                for (o, f) in &origins {
                    e.take(o, f);
                }
                e.last = now;
                e.subjects_total += 1;
                if e.subjects.len() < SUBJECTS_LISTED {
                    e.subjects.push(fp.subject.clone());
                }
                let worse = e.rejudge();
                Outcome::Folded {
                    event: e.public(),
                    subject: Some(fp),
                    worse,
                }
            }
            None => {
                let id = self.next_event;
                self.next_event += 1;
                g.event = Some(id);
                let mut e = Event {
                    head: fp.clone(),
                    role: role.to_string(),
                    first: g.first,
                    last: now,
                    origins,
                    subjects: vec![fp.subject.clone()],
                    subjects_total: 1,
                    verdict: Verdict::Rollout,
                };
                e.rejudge();
                let public = e.public();
                self.events.insert(id, e);
                Outcome::Raised(public)
            }
        }
    }

    /// Drops groups whose window has passed, and events that have not grown for a window.
    pub fn expire(&mut self, now: u64) {
        let window = self.config.window_ms;
        // Groups open at `now` of their first spike, which only grows but for a clock
        // stepped back: such a group waits behind the ones opened before it, never longer
        // than they do past their own window.
        while let Some((first, _)) = self.opened.front()
            && now.saturating_sub(*first) >= window
        {
            let Some((first, fp)) = self.opened.pop_front() else {
                break;
            };
            if self.groups.get(&fp).is_some_and(|g| g.first == first) {
                self.groups.remove(&fp);
            }
        }
        // Events are few (one per storm); an event stays open while it grows.
        self.events
            .retain(|_, e| now.saturating_sub(e.last) < window);
    }

    /// Groups currently open.
    pub fn open(&self) -> usize {
        self.groups.len()
    }

    /// Events currently open.
    pub fn open_events(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spike::{Change, Severity};
    use proptest::prelude::*;

    fn spike(origin: &str, subject: &str, digest: u8) -> Spike {
        Spike {
            after: Some(Digest([digest; 32])),
            severity: Severity::High,
            label: "file_modified".into(),
            ..Spike::bare(origin, 1, Kind::File, Change::Modified, subject)
        }
    }

    fn window(threshold: usize) -> Window {
        Window::new(Config {
            default_threshold: Some(threshold),
            ..Config::default()
        })
    }

    #[test]
    fn groups_close_when_their_window_passes_and_only_then() {
        let mut w = window(3);
        let win = Config::default().window_ms;
        // One group a millisecond, 5,000 of them: a storm of distinct changes.
        for i in 0..5_000u64 {
            w.offer(
                &spike("w1", &format!("/etc/f{i}"), 1),
                "web",
                false,
                false,
                i,
            );
        }
        assert_eq!(w.open(), 5_000);
        w.expire(win + 999);
        assert_eq!(
            w.open(),
            4_000,
            "the first 1,000 groups are past their window"
        );
        // A group offered again keeps its opening time: it closes with its window.
        w.offer(
            &spike("w2", "/etc/f1500", 1),
            "web",
            false,
            false,
            win + 1_000,
        );
        w.expire(win + 1_500);
        assert_eq!(w.open(), 3_499);
        assert!(
            w.offer(
                &spike("w3", "/etc/f1500", 1),
                "web",
                false,
                false,
                win + 1_501
            ) == Outcome::Counted
        );
        w.expire(win + 5_000);
        assert_eq!(
            w.open(),
            1,
            "only the group reopened at window + 1,501 is left"
        );
    }

    #[test]
    fn four_of_five_web_servers_make_one_event() {
        let mut w = window(3);
        let mut events = Vec::new();
        for (i, n) in ["w1", "w2", "w3", "w4"].iter().enumerate() {
            match w.offer(
                &spike(n, "/etc/nginx/nginx.conf", 7),
                "web",
                false,
                false,
                i as u64 * 1000,
            ) {
                Outcome::Raised(e) => events.push(e),
                Outcome::Counted => {}
                Outcome::Folded { event, .. } => panic!("nothing raised yet: {event:?}"),
            }
        }
        assert_eq!(events.len(), 1, "one fleet event, not four alerts");
        assert_eq!(events[0].verdict, Verdict::SuspectedCoordinatedChange);
        assert_eq!(events[0].origins.len(), 4);
        // The fifth server joins the raised event.
        assert!(matches!(
            w.offer(&spike("w5", "/etc/nginx/nginx.conf", 7), "web", false, false, 5_000),
            Outcome::Folded { event, subject: None, worse: false } if event.origins.len() == 5
        ));
    }

    #[test]
    fn approved_changes_are_a_rollout_and_upgrades_an_upgrade() {
        let mut w = window(1);
        w.offer(&spike("a", "/etc/app.conf", 1), "web", true, false, 0);
        let Outcome::Raised(e) = w.offer(&spike("b", "/etc/app.conf", 1), "web", true, false, 1)
        else {
            panic!("raised")
        };
        assert_eq!(e.verdict, Verdict::Rollout);
        // A window later (within it, the same servers' change would join the rollout).
        let later = Config::default().window_ms + 1;
        w.offer(&spike("a", "/usr/lib/x.so", 2), "web", false, true, later);
        let Outcome::Raised(e) = w.offer(
            &spike("b", "/usr/lib/x.so", 2),
            "web",
            false,
            true,
            later + 1,
        ) else {
            panic!("raised")
        };
        assert_eq!(e.verdict, Verdict::Upgrade);
    }

    #[test]
    fn different_contents_roles_and_windows_do_not_correlate() {
        let mut w = window(1);
        w.offer(&spike("a", "/etc/x", 1), "web", false, false, 0);
        assert_eq!(
            w.offer(&spike("b", "/etc/x", 2), "web", false, false, 1),
            Outcome::Counted,
            "another digest is another change"
        );
        assert_eq!(
            w.offer(&spike("c", "/etc/x", 1), "database", false, false, 2),
            Outcome::Counted,
            "one web and one database server: neither role over its threshold"
        );
        assert_eq!(
            w.offer(&spike("d", "/etc/x", 1), "web", false, false, 40_000),
            Outcome::Counted,
            "the first one's window has passed"
        );
        assert_eq!(w.open(), 1);
    }

    fn share_window() -> Window {
        let mut w = Window::new(Config::default());
        w.set_live(BTreeMap::from([
            ("web".to_string(), 3),
            ("db".to_string(), 10),
        ]));
        w
    }

    #[test]
    fn small_roles_need_two_servers_and_half_of_the_role() {
        let mut w = share_window();
        assert_eq!(
            (w.needed("web"), w.needed("db"), w.needed("unknown")),
            (2, 5, 2)
        );
        w.offer(&spike("w1", "/etc/x", 1), "web", false, false, 0);
        assert!(matches!(
            w.offer(&spike("w2", "/etc/x", 1), "web", false, false, 1),
            Outcome::Raised(e) if e.origins.len() == 2
        ));
        for (i, n) in ["d1", "d2", "d3", "d4"].iter().enumerate() {
            assert_eq!(
                w.offer(&spike(n, "/etc/y", 1), "db", false, false, i as u64),
                Outcome::Counted,
                "4 of 10 database servers are not half"
            );
        }
        assert!(matches!(
            w.offer(&spike("d5", "/etc/y", 1), "db", false, false, 5),
            Outcome::Raised(_)
        ));
        // An explicit threshold wins over the share, and never means a single server.
        let mut w = Window::new(Config {
            thresholds: BTreeMap::from([("db".to_string(), 0)]),
            ..Config::default()
        });
        w.set_live(BTreeMap::from([("db".to_string(), 10)]));
        assert_eq!(w.needed("db"), 2);
    }

    /// A package upgrade or a deployment: the same 200 files changed on three servers,
    /// each server's changes arriving one after the other.
    fn storm(w: &mut Window, upgrading: bool, subjects: usize) -> Vec<Outcome> {
        let mut out = Vec::new();
        let mut t = 0;
        for server in ["w1", "w2", "w3"] {
            for i in 0..subjects {
                t += 1;
                let s = spike(server, &format!("/usr/lib/pkg/f{i}"), (i % 250) as u8);
                out.push(w.offer(&s, "web", false, upgrading, t));
            }
        }
        out
    }

    #[test]
    fn a_storm_of_subjects_on_the_same_servers_is_one_event() {
        for (upgrading, verdict) in [
            (false, Verdict::SuspectedCoordinatedChange),
            (true, Verdict::Upgrade),
        ] {
            let mut w = share_window();
            let out = storm(&mut w, upgrading, 200);
            let raised: Vec<&FleetEvent> = out
                .iter()
                .filter_map(|o| match o {
                    Outcome::Raised(e) => Some(e),
                    _ => None,
                })
                .collect();
            assert_eq!(raised.len(), 1, "one event for the storm");
            assert_eq!(raised[0].verdict, verdict);
            let Some(Outcome::Folded { event, .. }) = out
                .iter()
                .rev()
                .find(|o| matches!(o, Outcome::Folded { .. }))
            else {
                panic!("the event grew");
            };
            assert_eq!(event.subjects_total, 200);
            assert_eq!(event.subjects.len(), 200);
            assert_eq!(event.origins.len(), 3);
            assert_eq!(event.subjects_brief(), "/usr/lib/pkg/f0 and 199 more");
            assert!(
                out.iter()
                    .all(|o| !matches!(o, Outcome::Folded { worse: true, .. })),
                "the verdict never changed"
            );
            assert_eq!(w.open_events(), 1);
        }
        // More subjects than are listed: counted.
        let mut w = share_window();
        let out = storm(&mut w, false, SUBJECTS_LISTED + 10);
        let Some(Outcome::Folded { event, .. }) = out
            .iter()
            .rev()
            .find(|o| matches!(o, Outcome::Folded { .. }))
        else {
            panic!("folded");
        };
        assert_eq!(event.subjects.len(), SUBJECTS_LISTED);
        assert_eq!(event.subjects_total, SUBJECTS_LISTED as u64 + 10);
    }

    #[test]
    fn an_upgrade_that_turns_out_unexplained_gets_worse_once() {
        let mut w = share_window();
        storm(&mut w, true, 20);
        let mut worse = 0;
        for i in 0..5 {
            let s = spike("w2", &format!("/usr/bin/odd{i}"), 9);
            w.offer(&s, "web", false, true, 100);
            let s = spike("w3", &format!("/usr/bin/odd{i}"), 9);
            // w3 is no longer upgrading.
            match w.offer(&s, "web", false, false, 101) {
                Outcome::Folded {
                    worse: true, event, ..
                } => {
                    worse += 1;
                    assert_eq!(event.verdict, Verdict::SuspectedCoordinatedChange);
                }
                Outcome::Folded { .. } => {}
                other => panic!("joins the storm: {other:?}"),
            }
        }
        assert_eq!(worse, 1);
    }

    #[test]
    fn other_servers_or_a_later_window_make_another_event() {
        let mut w = Window::new(Config::default());
        w.set_live(BTreeMap::from([("web".to_string(), 6)]));
        let mut raised = 0;
        for (subject, servers, t) in [
            ("/etc/a", ["w1", "w2", "w3"], 0),
            ("/etc/b", ["w4", "w5", "w6"], 10),
            ("/etc/c", ["w1", "w2", "w3"], 20),
            ("/etc/d", ["w1", "w2", "w3"], 60_000),
        ] {
            for s in servers {
                if matches!(
                    w.offer(&spike(s, subject, 1), "web", false, false, t),
                    Outcome::Raised(_)
                ) {
                    raised += 1;
                }
            }
        }
        assert_eq!(
            raised, 3,
            "a, b (other servers) and d (a window later); c joins a"
        );
    }

    proptest! {
        /// However spikes interleave, a group becomes part of an event (its own or one
        /// it joins) at most once per window, and exactly when more than `threshold`
        /// distinct servers of a role showed it.
        #[test]
        fn at_most_one_event_per_group_and_window(
            threshold in 1usize..5,
            offers in proptest::collection::vec((0u8..8, 0u8..3, 0u8..2), 1..80),
        ) {
            let mut w = window(threshold);
            let mut raised: BTreeMap<u8, usize> = BTreeMap::new();
            let mut servers: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
            for (server, file, role) in offers {
                let role = if role == 0 { "web" } else { "database" };
                let s = spike(&format!("s{server}-{role}"), &format!("/etc/f{file}"), file);
                match w.offer(&s, role, false, false, 0) {
                    Outcome::Raised(e) => {
                        *raised.entry(file).or_default() += 1;
                        prop_assert!(e.origins.values().filter(|r| *r == role).count() > threshold);
                    }
                    // Another file on the same servers joins their event, once.
                    Outcome::Folded { subject: Some(fp), .. } => {
                        prop_assert_eq!(&fp.subject, &format!("/etc/f{file}"));
                        *raised.entry(file).or_default() += 1;
                    }
                    _ => {}
                }
                if role == "web" {
                    servers.entry(file).or_default().insert(server);
                }
            }
            for (file, n) in &raised {
                prop_assert_eq!(*n, 1, "file {} raised {} times", file, n);
            }
            for (file, s) in servers {
                if s.len() > threshold {
                    prop_assert!(raised.contains_key(&file));
                }
            }
        }
    }
}
