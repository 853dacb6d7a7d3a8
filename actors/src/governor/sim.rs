//! A deterministic region of governors for tests: the real [`Governor`] (and the Raft
//! core inside it) of every member, on a simulated clock and network.
//!
//! - Time moves in steps of [`STEP_MS`]; each member's timer runs when its
//!   `poll_timeout` is due.
//! - Consensus messages take 1..=`max_delay_ms` and may be lost; partitions cut links.
//! - Every [`HEARTBEAT_MS`] each member learns the others' announced facts (as of the
//!   previous heartbeat) and their liveness: a member down (crashed, or cut off from the
//!   observer) for [`DETECT_MS`] is dead; before that it still looks alive. The view is
//!   pushed only when it changed, as the heartbeat actor does.
//! - A crash keeps exactly what the member saved ([`Output::Save`] before its sends): the
//!   disk is written as the runtime writes its file, whole or by appending the deltas
//!   [`Governor::take_save`] hands out; a restart is a new incarnation restored from that.
//!
//! Safety is checked as it goes: never two masters of one term, every member applies
//! the same command at the same log index, every member's region state is the same at
//! the same applied index (whether it got there by commands or by a snapshot), and the
//! disk written by deltas equals the governor's image after every save.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Config, Facts, Governor, Member, Output, Save};
use crate::membership::Status as Liveness;
use crate::node;
use crate::region::{self, Committed, Durable, RegionState, Role};

pub const STEP_MS: u64 = 10;
pub const HEARTBEAT_MS: u64 = 200;
pub const DETECT_MS: u64 = 1500;

pub struct SimNode {
    pub peer: node::Id,
    pub name: String,
    pub eligible: bool,
    pub gov: Option<Governor>,
    pub disk: Option<Durable>,
    pub incarnation: u64,
    /// Since when it is down (crashed), if it is.
    pub down_since: Option<u64>,
    /// What each observer last pushed to this member's governor.
    pushed: Vec<Member>,
    /// Its facts as the others saw them at the last heartbeat.
    announced: Facts,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: u64,
    seq: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

pub struct Sim {
    pub seed: u64,
    pub base: Instant,
    pub now_ms: u64,
    pub nodes: Vec<SimNode>,
    pub rng: StdRng,
    pub loss: f64,
    pub max_delay_ms: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    sent: u64,
    /// Partition group of each member (all 0: connected).
    group: Vec<u32>,
    /// Since when (ms) each pair could not talk, for liveness: (observer, observed).
    cut_since: BTreeMap<(usize, usize), u64>,
    /// The master seen for each term, by any member.
    pub leaders: BTreeMap<u64, node::Id>,
    /// The first command seen applied at each index.
    log: BTreeMap<u64, Committed>,
    /// The first region state seen at each applied index.
    states: BTreeMap<u64, RegionState>,
    /// Snapshots installed from the state arriving whole (at restart or from a master).
    pub installed: u64,
    /// Saves that wrote the image whole, and that appended deltas.
    pub saves_whole: u64,
    pub saves_appended: u64,
    pub template: Config,
    /// Outputs seen, for assertions.
    pub duplicates: Vec<(usize, Output)>,
    pub reincarnations: u64,
}

impl Sim {
    /// `n` members named `m0..`, all eligible, started at time 0 with `template`'s
    /// settings (identity fields are filled in per member).
    pub fn new(seed: u64, n: usize, template: Config) -> Sim {
        let mut sim = Sim {
            seed,
            base: Instant::now(),
            now_ms: 0,
            nodes: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            max_delay_ms: 20,
            queue: BinaryHeap::new(),
            sent: 0,
            group: Vec::new(),
            cut_since: BTreeMap::new(),
            leaders: BTreeMap::new(),
            log: BTreeMap::new(),
            states: BTreeMap::new(),
            installed: 0,
            saves_whole: 0,
            saves_appended: 0,
            template,
            duplicates: Vec::new(),
            reincarnations: 0,
        };
        for i in 0..n {
            sim.add(&format!("m{i}"), true);
        }
        sim
    }

    /// Adds and starts a member (same name as another: a duplicate).
    pub fn add(&mut self, name: &str, eligible: bool) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            peer: node::Id::from(format!("peer-{}-{i}", self.seed)),
            name: name.into(),
            eligible,
            gov: None,
            disk: None,
            incarnation: 0,
            down_since: None,
            pushed: Vec::new(),
            announced: Facts::default(),
        });
        self.group.push(0);
        self.start(i);
        i
    }

    pub fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn start(&mut self, i: usize) {
        let now = self.now();
        let n = &mut self.nodes[i];
        n.incarnation = 1000 + self.now_ms;
        let mut c = self.template.clone();
        c.own = n.peer.clone();
        c.name = n.name.clone();
        c.incarnation = n.incarnation;
        c.eligible = n.eligible;
        c.consensus.seed = self.seed ^ (i as u64);
        n.gov = Some(Governor::new(c, n.disk.clone(), now));
        n.down_since = None;
        n.pushed = Vec::new();
        self.drain(i);
    }

    pub fn up(&self, i: usize) -> bool {
        self.nodes[i].gov.is_some()
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].gov = None;
        self.nodes[i].down_since = Some(self.now_ms);
    }

    pub fn restart(&mut self, i: usize) {
        self.start(i);
    }

    /// Splits members into groups; members not listed are alone.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        for (i, g) in self.group.iter_mut().enumerate() {
            *g = 1000 + u32::try_from(i).unwrap_or(0);
        }
        for (gi, members) in groups.iter().enumerate() {
            for &m in members.iter() {
                self.group[m] = u32::try_from(gi).unwrap_or(0);
            }
        }
    }

    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b]
    }

    pub fn gov(&self, i: usize) -> Option<&Governor> {
        self.nodes[i].gov.as_ref()
    }

    /// One step of [`STEP_MS`].
    pub fn step(&mut self) {
        self.now_ms += STEP_MS;
        while self.queue.peek().is_some_and(|m| m.0.at <= self.now_ms) {
            let Some(Reverse(m)) = self.queue.pop() else {
                break;
            };
            if !self.linked(m.from, m.to) {
                continue;
            }
            let now = self.now();
            let from = self.nodes[m.from].peer.clone();
            if let Some(g) = &mut self.nodes[m.to].gov {
                let refused = g.handle_raft(now, &from, &m.bytes).is_err();
                // Honest members never send what a member refuses (a late answer from a
                // member that left is no error).
                assert!(
                    !refused,
                    "seed {}: an honest message was refused",
                    self.seed
                );
                self.drain(m.to);
            }
        }
        if self.now_ms.is_multiple_of(HEARTBEAT_MS) {
            self.heartbeats();
        }
        for i in 0..self.nodes.len() {
            let now = self.now();
            let due = self.nodes[i]
                .gov
                .as_ref()
                .and_then(Governor::poll_timeout)
                .is_some_and(|t| t <= now);
            if due {
                if let Some(g) = &mut self.nodes[i].gov {
                    g.handle_timeout(now);
                }
                self.drain(i);
            }
        }
    }

    pub fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / STEP_MS {
            self.step();
        }
    }

    /// Steps until `done` holds, at most `max_ms`.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_ms / STEP_MS {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    fn heartbeats(&mut self) {
        // Liveness as each observer sees it: down or cut off for DETECT_MS is dead.
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b && !self.linked(a, b) {
                    self.cut_since.entry((a, b)).or_insert(self.now_ms);
                } else {
                    self.cut_since.remove(&(a, b));
                }
            }
        }
        let previous: Vec<Facts> = self.nodes.iter().map(|n| n.announced.clone()).collect();
        for i in 0..self.nodes.len() {
            if self.nodes[i].gov.is_none() {
                continue;
            }
            let mut view = Vec::new();
            for (j, n) in self.nodes.iter().enumerate() {
                if j == i {
                    continue;
                }
                let gone = [n.down_since, self.cut_since.get(&(i, j)).copied()]
                    .into_iter()
                    .flatten()
                    .min();
                let status = match gone {
                    Some(t) if self.now_ms - t >= DETECT_MS => Liveness::Dead,
                    _ => Liveness::Alive,
                };
                if n.incarnation == 0 {
                    continue;
                }
                // Across a cut nothing new is heard: the last facts stay.
                let heard = if self.linked(i, j) && n.down_since.is_none() {
                    Some(&previous[j])
                } else {
                    None
                };
                let last = self.nodes[i].pushed.iter().find(|m| m.peer == n.peer);
                let Some(mut m) = last.cloned().or_else(|| {
                    heard.map(|_| Member {
                        name: n.name.clone(),
                        role: "web".into(),
                        peer: n.peer.clone(),
                        status,
                        incarnation: n.incarnation,
                        founders: Vec::new(),
                        eligible: false,
                        proposal: Vec::new(),
                        expect: 0,
                    })
                }) else {
                    continue;
                };
                m.status = status;
                if let Some(f) = heard {
                    m.incarnation = n.incarnation;
                    m.founders = f.founders.clone();
                    m.eligible = f.eligible;
                    m.proposal = f.proposal.clone();
                    m.expect = f.expect;
                }
                view.push(m);
            }
            if view != self.nodes[i].pushed {
                self.nodes[i].pushed = view.clone();
                let now = self.now();
                if let Some(g) = &mut self.nodes[i].gov {
                    g.handle_members(now, view, 0);
                }
                self.drain(i);
            }
        }
        for n in &mut self.nodes {
            if let Some(g) = &n.gov {
                n.announced = g.facts().clone();
            }
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(g) = &mut self.nodes[i].gov else {
                return;
            };
            let Some(o) = g.poll_output() else {
                break;
            };
            match o {
                Output::Save => {
                    let save = g.take_save();
                    match &save {
                        Save::Whole => self.saves_whole += 1,
                        Save::Append(_) => self.saves_appended += 1,
                    }
                    let n = &mut self.nodes[i];
                    if let Some(g) = &n.gov {
                        save.write_to(&mut n.disk, g.durable())
                            .expect("saved deltas fold onto an image written whole");
                    }
                    let Some(g) = &self.nodes[i].gov else {
                        return;
                    };
                    assert_eq!(
                        self.nodes[i].disk.as_ref(),
                        Some(g.durable()),
                        "seed {}: the disk written by deltas differs from the image",
                        self.seed
                    );
                }
                Output::Installed(image) => {
                    self.installed += 1;
                    region::one_state_per_index(
                        &mut self.states,
                        &image.state,
                        self.seed,
                        "a snapshot",
                    );
                }
                Output::Send { to, bytes } => {
                    if let Some(j) = self.nodes.iter().position(|n| n.peer == to) {
                        self.send(i, j, bytes);
                    }
                }
                Output::Committed(c) => {
                    let seen = self.log.entry(c.index).or_insert_with(|| c.clone());
                    assert_eq!(
                        *seen, c,
                        "seed {}: two commands applied at index {}",
                        self.seed, c.index
                    );
                }
                o @ Output::DuplicateName { .. } => self.duplicates.push((i, o)),
                Output::Reincarnate => self.reincarnations += 1,
                Output::Master { .. }
                | Output::Facts(_)
                | Output::Joined { .. }
                | Output::ExpectDiffers { .. } => {}
            }
        }
        if let Some(state) = self.nodes[i].gov.as_ref().and_then(Governor::state) {
            region::one_state_per_index(&mut self.states, state, self.seed, "a member");
        }
        if let Some(s) = self.nodes[i].gov.as_ref().and_then(Governor::status)
            && s.role == Role::Leader
        {
            let peer = self.nodes[i].peer.clone();
            let first = self.leaders.entry(s.term).or_insert_with(|| peer.clone());
            assert_eq!(
                *first, peer,
                "seed {}: two masters in term {}",
                self.seed, s.term
            );
        }
    }

    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if !self.linked(from, to) || (self.loss > 0.0 && self.rng.random_bool(self.loss)) {
            return;
        }
        let delay = self.rng.random_range(1..=self.max_delay_ms.max(1));
        self.sent += 1;
        self.queue.push(Reverse(InFlight {
            at: self.now_ms + delay,
            seq: self.sent,
            from,
            to,
            bytes,
        }));
    }

    /// The master a majority of the running members follow, with its term.
    pub fn master(&self) -> Option<(node::Id, u64)> {
        let up: Vec<&Governor> = self.nodes.iter().filter_map(|n| n.gov.as_ref()).collect();
        let mut votes: BTreeMap<(node::Id, u64), usize> = BTreeMap::new();
        for g in &up {
            if let Some(m) = g.master() {
                *votes.entry(m).or_default() += 1;
            }
        }
        let (m, n) = votes.into_iter().max_by_key(|(_, n)| *n)?;
        let leader = self.nodes.iter().find(|x| x.peer == m.0)?.gov.as_ref()?;
        (n * 2 > up.len() && leader.leading() == Some(m.1)).then_some(m)
    }

    /// Running members that every other running member can reach.
    pub fn connected_up(&self) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.up(i) && self.group[i] == 0)
            .count()
    }

    /// Proposes `cmd` at member `i` (the master, for it to be taken).
    pub fn propose(&mut self, i: usize, cmd: &region::Command) -> Result<(), region::Error> {
        let now = self.now();
        let r = match &mut self.nodes[i].gov {
            Some(g) => g.propose(now, cmd),
            None => Err(region::Error::NotLeader { leader: None }),
        };
        self.drain(i);
        r
    }

    /// Index of the member that `peer` is.
    pub fn index_of(&self, peer: &node::Id) -> Option<usize> {
        self.nodes.iter().position(|n| n.peer == *peer)
    }

    /// Raft id of member `i`.
    pub fn raft_id(&self, i: usize) -> u64 {
        region::raft_id(&self.nodes[i].peer)
    }
}
