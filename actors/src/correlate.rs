//! Coordinated-change detection: many servers' identical changes become one fleet event.
//!
//! Spikes are grouped by fingerprint (kind, subject, digest after the change) within a
//! window (30 s by default) that starts with the first spike of the group. When the number
//! of distinct servers of one role showing the same change exceeds that role's threshold,
//! the group becomes one [`FleetEvent`], once per window: a `rollout` when every spike of
//! the group was approved (it matches an approved pattern or the desired state), an
//! `upgrade` when every server involved was running its package manager, otherwise a
//! `suspected_coordinated_change` (critical). Further servers joining the same group in the
//! same window are folded into that event instead of raising new ones.
//!
//! Sans-IO: the caller passes each spike with its origin's role, whether policy approved
//! it and whether the origin was upgrading, and the current time; no clock, no I/O.
//! Memory is bounded by the window: groups older than it are dropped on each call.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::node;
use crate::spike::{Digest, Kind, Spike};

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
    /// Servers of a role that may show the same change before it is a fleet event.
    pub thresholds: BTreeMap<String, usize>,
    /// For roles without a threshold of their own.
    pub default_threshold: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window_ms: 30_000,
            thresholds: BTreeMap::new(),
            default_threshold: 3,
        }
    }
}

impl Config {
    fn threshold(&self, role: &str) -> usize {
        self.thresholds
            .get(role)
            .copied()
            .unwrap_or(self.default_threshold)
    }
}

/// What a fleet event is judged to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    pub fingerprint: Fingerprint,
    /// The role whose threshold was exceeded.
    pub role: String,
    /// Every server (and its role) that showed the change in the window so far.
    pub origins: BTreeMap<node::Id, String>,
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    pub verdict: Verdict,
}

/// What offering a spike did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Below every threshold so far (or already counted from this server).
    Counted,
    /// The group just crossed a threshold: a new fleet event.
    Raised(FleetEvent),
    /// Part of an event already raised in this window (updated with this server).
    Folded(FleetEvent),
}

#[derive(Debug)]
struct Group {
    first: u64,
    last: u64,
    /// Server → (role, approved, upgrading).
    origins: BTreeMap<node::Id, (String, bool, bool)>,
    raised: Option<String>,
}

/// The correlation window.
#[derive(Debug)]
pub struct Window {
    config: Config,
    groups: HashMap<Fingerprint, Group>,
    /// Each group's opening time, in the order groups opened: expiry pops from the front
    /// instead of visiting every open group at each offer (a storm opens one per change).
    opened: VecDeque<(u64, Fingerprint)>,
}

impl Window {
    pub fn new(config: Config) -> Self {
        Window {
            config,
            groups: HashMap::new(),
            opened: VecDeque::new(),
        }
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
        let fp = Fingerprint::of(spike);
        let opened = &mut self.opened;
        let g = self.groups.entry(fp.clone()).or_insert_with(|| {
            opened.push_back((now, fp.clone()));
            Group {
                first: now,
                last: now,
                origins: BTreeMap::new(),
                raised: None,
            }
        });
        let known = g.origins.contains_key(&spike.origin);
        let entry = g
            .origins
            .entry(spike.origin.clone())
            .or_insert_with(|| (role.to_string(), true, true));
        // A server's later spike of the same change can only make the group less benign.
        entry.1 &= approved;
        entry.2 &= upgrading;
        g.last = now;
        if let Some(role) = g.raised.clone() {
            return if known {
                Outcome::Counted
            } else {
                Outcome::Folded(event(fp, role, g))
            };
        }
        let per_role = g.origins.values().filter(|(r, ..)| r == role).count();
        if per_role > self.config.threshold(role) {
            g.raised = Some(role.to_string());
            return Outcome::Raised(event(fp, role.to_string(), g));
        }
        Outcome::Counted
    }

    /// Drops groups whose window has passed.
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
    }

    /// Groups currently open.
    pub fn open(&self) -> usize {
        self.groups.len()
    }
}

fn event(fingerprint: Fingerprint, role: String, g: &Group) -> FleetEvent {
    let verdict = if g.origins.values().all(|(_, approved, _)| *approved) {
        Verdict::Rollout
    } else if g.origins.values().all(|(_, _, upgrading)| *upgrading) {
        Verdict::Upgrade
    } else {
        Verdict::SuspectedCoordinatedChange
    };
    let origins: BTreeSet<(node::Id, String)> = g
        .origins
        .iter()
        .map(|(o, (r, ..))| (o.clone(), r.clone()))
        .collect();
    FleetEvent {
        fingerprint,
        role,
        origins: origins.into_iter().collect(),
        first_unix_ms: g.first,
        last_unix_ms: g.last,
        verdict,
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
            default_threshold: threshold,
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
                Outcome::Folded(e) => panic!("nothing raised yet: {e:?}"),
            }
        }
        assert_eq!(events.len(), 1, "one fleet event, not four alerts");
        assert_eq!(events[0].verdict, Verdict::SuspectedCoordinatedChange);
        assert_eq!(events[0].origins.len(), 4);
        // The fifth server joins the raised event.
        assert!(matches!(
            w.offer(&spike("w5", "/etc/nginx/nginx.conf", 7), "web", false, false, 5_000),
            Outcome::Folded(e) if e.origins.len() == 5
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
        w.offer(&spike("a", "/usr/lib/x.so", 2), "web", false, true, 0);
        let Outcome::Raised(e) = w.offer(&spike("b", "/usr/lib/x.so", 2), "web", false, true, 1)
        else {
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

    proptest! {
        /// However spikes interleave, a group raises at most one event per window, and it
        /// raises exactly when more than `threshold` distinct servers of a role showed it.
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
                if let Outcome::Raised(e) = w.offer(&s, role, false, false, 0) {
                    *raised.entry(file).or_default() += 1;
                    prop_assert!(e.origins.values().filter(|r| *r == role).count() > threshold);
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
