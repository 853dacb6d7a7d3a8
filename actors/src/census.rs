//! The fleet census: every region's members and master, visible from any node.
//!
//! A region's master publishes a [`Summary`] of its region on the fleet topic every
//! [`Config::every_ms`]: its term, itself as master, and each member's status, connectivity
//! and sync debt as the master's membership view knows them. Every node keeps the latest
//! summary of each other region ([`Census::offer`]), so that any node can show the whole
//! fleet with how stale each part is. A node also builds the summary of its own region
//! from its own view ([`Census::local`]), published or not.
//!
//! Trust: a summary is accepted only from the master it names (the gossip author), in a
//! term not below the highest seen for that region, and within one term only from the
//! first master seen in it. Summaries about this node's own region are refused: its own
//! view is first-hand.
//!
//! Sans-IO: times are Unix milliseconds passed in; the caller publishes what
//! [`Census::handle_timeout`] returns and sleeps until [`Census::poll_timeout`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::membership::Status;
use crate::node;
use crate::sync::Connectivity;

/// Settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A master publishes its region's summary this often (0: never; the census then only
    /// shows what other masters publish).
    pub every_ms: u64,
    /// Foreign regions kept; the one heard from least recently is forgotten first.
    pub regions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            every_ms: 2000,
            regions: 1024,
        }
    }
}

/// One member of a region, as its master sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub peer: node::Id,
    pub name: String,
    pub role: String,
    pub status: Status,
    pub connectivity: Option<Connectivity>,
    /// Spikes journaled and not acknowledged.
    pub backlog: u64,
    /// While replaying: spikes the master has taken of those to replay (`done`, `total`).
    pub replay: Option<(u64, u64)>,
    /// Milliseconds since the master heard from it (0 for the master itself).
    pub last_seen_ms: u64,
    /// Since when its connectivity has been what it is (Unix ms, as the member reports).
    #[serde(default)]
    pub connectivity_since_unix_ms: Option<u64>,
}

impl Line {
    /// A member as `sync`, its latest report (from its heartbeats, or this node's own),
    /// shows it.
    pub fn new(
        peer: node::Id,
        info: Option<&node::Info>,
        status: Status,
        sync: Option<&crate::sync::Report>,
        last_seen_ms: u64,
    ) -> Line {
        Line {
            peer,
            name: info.map_or_else(String::new, |i| i.name.clone()),
            role: info.map_or_else(String::new, |i| i.role.clone()),
            status,
            connectivity: sync.and_then(|s| s.connectivity),
            backlog: sync.map_or(0, |s| s.backlog),
            replay: sync
                .and_then(|s| s.replay)
                .map(|r| (r.done.saturating_sub(r.from), r.to.saturating_sub(r.from))),
            last_seen_ms,
            connectivity_since_unix_ms: sync.and_then(|s| s.since_unix_ms),
        }
    }
}

/// A region as its master publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub region: String,
    pub term: u64,
    /// The master (the publisher), `None` in a summary a node builds of its own region
    /// while no master is known.
    pub master: Option<node::Id>,
    pub sent_unix_ms: u64,
    /// Members, the master included; those in trouble first.
    pub members: Vec<Line>,
    /// Members left out to keep the message under the frame cap (counted in `counts`).
    pub omitted: u32,
    /// Members per status, all of them.
    pub counts: BTreeMap<Status, u32>,
    /// The region's drift as its master judges it (absent from a node that does not
    /// lead, or from an older build).
    #[serde(default)]
    pub drift: Option<Drift>,
    /// Open alerts by severity, as the master that notifies for the region holds them.
    #[serde(default)]
    pub alerts: BTreeMap<String, u32>,
    /// Members per lifecycle phase other than active (as the region's log has them).
    #[serde(default)]
    pub phases: BTreeMap<crate::region::Phase, u32>,
    /// The version of the region's roster (every member's peer, name and role) this
    /// summary goes with; 0 in a summary that lists every member itself. A published
    /// summary lists only the members in trouble: a member of the roster it does not list
    /// is alive and live ([`Census::compact`]).
    #[serde(default)]
    pub roster_version: u64,
    /// One page of the roster, when one is due ([`Census::compact`]).
    #[serde(default)]
    pub roster: Option<RosterPage>,
    /// That `master` leads `region` in `term` ([`crate::trust`]), attached when published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Box<crate::trust::Proof>>,
}

/// A member as the roster names it: peer, name, role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry(pub node::Id, pub String, pub String);

/// One page of a region's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterPage {
    pub version: u64,
    pub page: u32,
    pub pages: u32,
    pub entries: Vec<Entry>,
}

/// Bytes a summary leaves for the proof of authority the network attaches
/// ([`crate::trust::Proof`]: the chain of voters of record and the master's certificate,
/// about 0.7 KiB per link of three voters).
pub const PROOF_ROOM: usize = 8 * 1024;
/// Members a published summary lists at most (those in trouble; the rest are counted).
pub const LISTED: usize = 256;
/// Members per roster page (about 18 KiB).
pub const PAGE: usize = 256;
/// After the roster changes, a page goes with every summary for this long.
pub const ROSTER_FRESH_MS: u64 = 10_000;
/// Otherwise each page goes again at least this often (for nodes that missed it or
/// started since).
pub const ROSTER_REPAIR_MS: u64 = 30_000;

/// A region's drift, as its summary carries it: the counts, and the most severe records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub counts: crate::drift::Counts,
    /// The most severe open records, at most [`DRIFT_RECORDS`].
    pub worst: Vec<crate::drift::Record>,
    /// Open records left out of `worst`.
    pub omitted: u32,
}

/// Drift records a summary carries at most.
pub const DRIFT_RECORDS: usize = 32;

/// The time a master waits at least between two summaries published on change.
pub const CHANGE_SPACING_MS: u64 = 250;

impl Drift {
    /// The brief of `drift` a summary carries.
    pub fn of(drift: &crate::drift::Drift) -> Drift {
        let worst = drift.worst(DRIFT_RECORDS);
        let total = drift.records().count();
        Drift {
            counts: drift.counts(),
            omitted: (total - worst.len()) as u32,
            worst,
        }
    }
}

impl Summary {
    /// A summary of `members`, those in trouble first, with at most as many lines as fit
    /// in `budget` bytes of encoded lines.
    pub fn new(
        region: &str,
        term: u64,
        master: Option<node::Id>,
        sent_unix_ms: u64,
        mut members: Vec<Line>,
        budget: usize,
    ) -> Summary {
        let mut counts = BTreeMap::new();
        for m in &members {
            *counts.entry(m.status).or_insert(0) += 1;
        }
        members.sort_by(|a, b| {
            trouble(a)
                .cmp(&trouble(b))
                .reverse()
                .then_with(|| a.name.cmp(&b.name))
        });
        let omitted = fit(&mut members, budget, usize::MAX);
        Summary {
            region: region.to_string(),
            term,
            master,
            sent_unix_ms,
            members,
            omitted,
            counts,
            drift: None,
            alerts: BTreeMap::new(),
            phases: BTreeMap::new(),
            roster_version: 0,
            roster: None,
            proof: None,
        }
    }
}

/// Keeps the first of `lines` whose encodings fit in `budget` bytes together, at most
/// `most` of them; returns how many went.
fn fit(lines: &mut Vec<Line>, budget: usize, most: usize) -> u32 {
    let mut size = 0usize;
    let mut kept = 0;
    for l in lines.iter().take(most) {
        size = size.saturating_add(rmp_serde::to_vec(l).map_or(budget, |b| b.len()));
        if size > budget {
            break;
        }
        kept += 1;
    }
    let gone = lines.len() - kept;
    lines.truncate(kept);
    gone as u32
}

/// Whether a member is in trouble: not alive, or not live.
fn in_trouble(l: &Line) -> bool {
    trouble(l) > 0
}

/// How much attention a member needs: dead and suspect first, then unhealthy sync.
fn trouble(l: &Line) -> u8 {
    match l.status {
        Status::Dead => 4,
        Status::Suspect => 3,
        Status::Joining | Status::Remote => 1,
        _ => match l.connectivity {
            Some(Connectivity::Live) | None => 0,
            Some(_) => 2,
        },
    }
}

/// A foreign region's summary as this node holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    #[serde(flatten)]
    pub summary: Summary,
    pub received_unix_ms: u64,
}

/// Why a summary was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("a summary of this node's own region {0} (its own view is first-hand)")]
    OwnRegion(String),
    #[error("summary of region {region} names master {claimed} but was sent by {author}")]
    NotAuthor {
        region: String,
        claimed: String,
        author: node::Id,
    },
    #[error("summary of region {region} in term {term}: {known} speaks for it")]
    Superseded {
        region: String,
        term: u64,
        known: String,
    },
}

/// The census of this node: foreign regions' summaries, and the schedule of its own.
#[derive(Debug)]
pub struct Census {
    config: Config,
    region: String,
    /// The term this node leads, if it is its region's master.
    leading: Option<u64>,
    next_due: Option<u64>,
    foreign: BTreeMap<String, Kept>,
    /// Per foreign region, the highest term seen and its master.
    masters: BTreeMap<String, (u64, node::Id)>,
    refused: u64,
    /// The master of this node's own region, as its consensus view knows it.
    home_master: Option<node::Id>,
    /// The latest summary of this node's own region from that master (for what only the
    /// master knows, such as drift).
    home: Option<Kept>,
    last_published: Option<u64>,
    /// As master: the roster published, its version, when it changed, when each page
    /// last went, and the page that goes next while it is fresh.
    roster: Vec<Entry>,
    roster_version: u64,
    roster_changed: u64,
    pages_sent: Vec<u64>,
    next_page: usize,
    /// Per region heard from (this node's own included), its roster as assembled.
    rosters: BTreeMap<String, Assembly>,
}

/// A region's roster as heard, page by page.
#[derive(Debug, Default)]
struct Assembly {
    version: u64,
    pages: Vec<Option<Vec<Entry>>>,
    complete: Vec<Entry>,
}

/// Roster pages a region may have at most (16,384 members).
const MAX_PAGES: u32 = 64;

impl Census {
    pub fn new(config: Config, region: String) -> Self {
        Census {
            config,
            region,
            leading: None,
            next_due: None,
            foreign: BTreeMap::new(),
            masters: BTreeMap::new(),
            refused: 0,
            home_master: None,
            home: None,
            last_published: None,
            roster: Vec::new(),
            roster_version: 0,
            roster_changed: 0,
            pages_sent: Vec::new(),
            next_page: 0,
            rosters: BTreeMap::new(),
        }
    }

    /// The summary to publish of `full` (every member listed): only the members in
    /// trouble (at most [`LISTED`], the rest counted in `omitted`), the roster's version,
    /// and a page of the roster when one is due: every summary for [`ROSTER_FRESH_MS`]
    /// after the roster changed, then each page every [`ROSTER_REPAIR_MS`]. So what a
    /// region costs every node grows with its members in trouble, not with its size.
    pub fn compact(&mut self, mut full: Summary, now: u64, budget: usize) -> Summary {
        let mut roster: Vec<Entry> = full
            .members
            .iter()
            .map(|l| Entry(l.peer.clone(), l.name.clone(), l.role.clone()))
            .collect();
        roster.sort();
        if roster != self.roster || self.roster_version == 0 {
            self.roster = roster;
            self.roster_version = now.max(self.roster_version + 1);
            self.roster_changed = now;
            self.pages_sent = vec![0; self.roster.len().div_ceil(PAGE).max(1)];
            self.next_page = 0;
        }
        full.roster_version = self.roster_version;
        let pages = self.pages_sent.len();
        let page = if now < self.roster_changed + ROSTER_FRESH_MS {
            let p = self.next_page % pages;
            self.next_page += 1;
            Some(p)
        } else {
            (0..pages)
                .min_by_key(|p| self.pages_sent[*p])
                .filter(|p| self.pages_sent[*p] + ROSTER_REPAIR_MS <= now)
        };
        full.roster = page.map(|p| {
            self.pages_sent[p] = now;
            RosterPage {
                version: self.roster_version,
                page: p as u32,
                pages: pages as u32,
                entries: self
                    .roster
                    .iter()
                    .skip(p * PAGE)
                    .take(PAGE)
                    .cloned()
                    .collect(),
            }
        });
        let room = budget.saturating_sub(
            full.roster
                .as_ref()
                .map_or(0, |r| rmp_serde::to_vec(r).map_or(budget, |b| b.len())),
        );
        // Those in trouble first (as `Summary::new` sorted them), as many as fit.
        full.members.retain(in_trouble);
        full.omitted = fit(&mut full.members, room, LISTED);
        full
    }

    /// A compact summary made whole again: its roster page taken in, and every member
    /// of the region's roster it does not list added as alive and live.
    fn expand(&mut self, mut s: Summary) -> Summary {
        if s.roster_version == 0 {
            return s;
        }
        let a = self.rosters.entry(s.region.clone()).or_default();
        if let Some(page) = s.roster.take()
            && page.pages > 0
            && page.pages <= MAX_PAGES
            && page.page < page.pages
        {
            if page.version != a.version || a.pages.len() != page.pages as usize {
                a.version = page.version;
                a.pages = vec![None; page.pages as usize];
            }
            a.pages[page.page as usize] = Some(page.entries);
            if a.pages.iter().all(Option::is_some) {
                a.complete = a.pages.iter().flatten().flatten().cloned().collect();
            }
        }
        let listed: std::collections::HashSet<node::Id> =
            s.members.iter().map(|l| l.peer.clone()).collect();
        for Entry(peer, name, role) in &a.complete {
            if !listed.contains(peer) {
                s.members.push(Line {
                    peer: peer.clone(),
                    name: name.clone(),
                    role: role.clone(),
                    status: Status::Alive,
                    connectivity: Some(Connectivity::Live),
                    backlog: 0,
                    replay: None,
                    last_seen_ms: 0,
                    connectivity_since_unix_ms: None,
                });
            }
        }
        s
    }

    /// This node leads its region in `term` (or no longer leads: `None`). A new master
    /// publishes at once.
    pub fn set_leading(&mut self, leading: Option<u64>, now: u64) {
        if leading == self.leading {
            return;
        }
        self.leading = leading;
        self.next_due = match leading {
            Some(_) if self.config.every_ms > 0 => Some(now),
            _ => None,
        };
    }

    /// When [`Census::handle_timeout`] next has something to publish.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_due
    }

    /// The term to publish a summary in, if one is due at `now`; the caller builds it
    /// ([`Summary::new`]) and publishes it.
    pub fn handle_timeout(&mut self, now: u64) -> Option<u64> {
        let due = self.next_due?;
        if now < due {
            return None;
        }
        self.next_due = Some(now + self.config.every_ms);
        self.last_published = Some(now);
        self.leading
    }

    /// Something a summary carries changed: while this node leads, the next summary goes
    /// out now, or [`CHANGE_SPACING_MS`] after the last one.
    pub fn changed(&mut self, now: u64) {
        if self.leading.is_none() || self.config.every_ms == 0 {
            return;
        }
        let soon = self
            .last_published
            .map_or(now, |t| now.max(t + CHANGE_SPACING_MS));
        self.next_due = Some(self.next_due.map_or(soon, |d| d.min(soon)));
    }

    /// The master of this node's own region, as its consensus view knows it: the only
    /// author whose summaries of this region are kept (see [`Census::home`]).
    pub fn set_home_master(&mut self, master: Option<node::Id>) {
        if self.home_master != master {
            self.home = None;
        }
        self.home_master = master;
    }

    /// The latest summary of this node's own region from its master of record.
    pub fn home(&self) -> Option<&Kept> {
        self.home.as_ref()
    }

    /// Takes a summary heard from `author`. True when it replaced what was kept.
    pub fn offer(
        &mut self,
        author: &node::Id,
        summary: Summary,
        now: u64,
    ) -> Result<bool, Rejection> {
        if summary.region == self.region
            && self.home_master.as_ref() == Some(author)
            && summary.master.as_ref() == Some(author)
        {
            let summary = self.expand(summary);
            let newer = self
                .home
                .as_ref()
                .is_none_or(|k| k.summary.sent_unix_ms < summary.sent_unix_ms);
            if newer {
                self.home = Some(Kept {
                    summary,
                    received_unix_ms: now,
                });
            }
            return Ok(newer);
        }
        let checked = self.check(author, &summary);
        if let Err(e) = checked {
            self.refused += 1;
            return Err(e);
        }
        self.masters
            .insert(summary.region.clone(), (summary.term, author.clone()));
        let summary = self.expand(summary);
        if let Some(k) = self.foreign.get(&summary.region)
            && (k.summary.term, k.summary.sent_unix_ms) >= (summary.term, summary.sent_unix_ms)
        {
            return Ok(false);
        }
        if !self.foreign.contains_key(&summary.region) && self.foreign.len() >= self.config.regions
        {
            let oldest = self
                .foreign
                .iter()
                .min_by_key(|(_, k)| k.received_unix_ms)
                .map(|(r, _)| r.clone());
            if let Some(r) = oldest {
                self.foreign.remove(&r);
                self.masters.remove(&r);
                self.rosters.remove(&r);
            }
        }
        self.foreign.insert(
            summary.region.clone(),
            Kept {
                summary,
                received_unix_ms: now,
            },
        );
        Ok(true)
    }

    fn check(&self, author: &node::Id, s: &Summary) -> Result<(), Rejection> {
        if s.region == self.region {
            return Err(Rejection::OwnRegion(s.region.clone()));
        }
        if s.master.as_ref() != Some(author) {
            return Err(Rejection::NotAuthor {
                region: s.region.clone(),
                claimed: s.master.as_ref().map_or("none".into(), |m| m.to_string()),
                author: author.clone(),
            });
        }
        match self.masters.get(&s.region) {
            Some((t, m)) if *t > s.term || (*t == s.term && m != author) => {
                Err(Rejection::Superseded {
                    region: s.region.clone(),
                    term: s.term,
                    known: format!("{m} in term {t}"),
                })
            }
            _ => Ok(()),
        }
    }

    /// Foreign regions' summaries, by region name.
    pub fn foreign(&self) -> impl Iterator<Item = &Kept> {
        self.foreign.values()
    }

    /// The summary kept of `region`.
    pub fn get(&self, region: &str) -> Option<&Kept> {
        self.foreign.get(region)
    }

    /// Summaries refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests;
