//! A deterministic in-memory network of region members for tests.
//!
//! Messages travel with a per-message delay in ticks and may be lost; partitions cut
//! links (checked when a message is sent and again when it would arrive). A crash drops
//! the member but keeps its disk (the fold of every `Persist` it produced, written
//! before its messages left, as the runtime must); a restart restores from that disk.
//! The simulator checks safety as it goes: one leader per term, every member applies
//! the same command at the same log index, and every member's state is the same at the
//! same applied index (whether it got there by commands or by a snapshot).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Command, Committed, Config, Durable, Output, Region, RegionState, Role, Status};

/// A message on the wire; ordered by arrival tick, then by send order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: u64,
    seq: u64,
    from: u64,
    to: u64,
    bytes: Vec<u8>,
}

pub(super) struct Sim {
    pub seed: u64,
    pub config: Config,
    pub ids: Vec<u64>,
    /// `None`: crashed.
    nodes: BTreeMap<u64, Option<Region>>,
    disks: BTreeMap<u64, Durable>,
    /// What each member applied since it last (re)started or installed a snapshot.
    pub applied: BTreeMap<u64, Vec<Committed>>,
    /// The index of the snapshot each member's `applied` continues from (0: none).
    pub base: BTreeMap<u64, u64>,
    /// Snapshots installed (at restart or from a leader), per member.
    pub installs: BTreeMap<u64, u64>,
    /// The first state seen at each applied index, by any member.
    states: BTreeMap<u64, RegionState>,
    /// The first command seen applied at each index, by any member.
    log: BTreeMap<u64, Committed>,
    /// The leader seen for each term, by any member.
    pub leaders: BTreeMap<u64, u64>,
    /// Partition group of each member; members in different groups cannot talk.
    group: BTreeMap<u64, u32>,
    queue: BinaryHeap<Reverse<InFlight>>,
    sent: u64,
    pub now: u64,
    pub rng: StdRng,
    pub loss: f64,
    pub max_delay: u64,
    /// Honest messages a member refused (must stay 0).
    pub refused: u64,
    /// Snapshot messages are lost while this is set.
    pub drop_snapshots: bool,
    /// Snapshot messages sent (lost or not).
    pub snapshots_sent: u64,
    next_command: u64,
}

impl Sim {
    /// Members `ids`, founded by `voters`.
    pub fn new(seed: u64, ids: &[u64], voters: &[u64]) -> Sim {
        Sim::with_config(
            ids,
            voters,
            Config {
                seed,
                ..Config::default()
            },
        )
    }

    /// [`Sim::new`] with `config` (its `seed` seeds the simulation too).
    pub fn with_config(ids: &[u64], voters: &[u64], config: Config) -> Sim {
        let seed = config.seed;
        let mut sim = Sim {
            seed,
            config,
            ids: ids.to_vec(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            applied: BTreeMap::new(),
            base: BTreeMap::new(),
            installs: BTreeMap::new(),
            states: BTreeMap::new(),
            log: BTreeMap::new(),
            leaders: BTreeMap::new(),
            group: BTreeMap::new(),
            queue: BinaryHeap::new(),
            sent: 0,
            now: 0,
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            max_delay: 1,
            refused: 0,
            drop_snapshots: false,
            snapshots_sent: 0,
            next_command: 0,
        };
        for &id in ids {
            let region = Region::new(id, voters, &sim.config).expect("valid founding members");
            sim.nodes.insert(id, Some(region));
            sim.disks.insert(id, Durable::default());
            sim.applied.insert(id, Vec::new());
            sim.poll(id);
        }
        sim
    }

    pub fn alive(&self, id: u64) -> bool {
        matches!(self.nodes.get(&id), Some(Some(_)))
    }

    pub fn node(&mut self, id: u64) -> &mut Region {
        self.nodes
            .get_mut(&id)
            .and_then(Option::as_mut)
            .expect("member is running")
    }

    pub fn status(&self, id: u64) -> Option<Status> {
        self.nodes
            .get(&id)
            .and_then(Option::as_ref)
            .map(Region::status)
    }

    /// What `id` has on disk.
    pub fn disk(&self, id: u64) -> Durable {
        self.disks.get(&id).cloned().unwrap_or_default()
    }

    pub fn crash(&mut self, id: u64) {
        self.nodes.insert(id, None);
    }

    pub fn restart(&mut self, id: u64) {
        let disk = self.disk(id);
        let region = Region::restore(id, disk, &self.config).expect("disk image restores");
        self.nodes.insert(id, Some(region));
        // The restored member applies its committed log again after its snapshot.
        self.applied.insert(id, Vec::new());
        self.base.insert(id, 0);
        self.poll(id);
    }

    /// Splits the members into the given groups (members not listed are alone).
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.group.clear();
        for (n, &id) in self.ids.iter().enumerate() {
            let alone = u32::MAX - u32::try_from(n).expect("few members");
            self.group.insert(id, alone);
        }
        for (g, members) in groups.iter().enumerate() {
            for id in members.iter() {
                self.group
                    .insert(*id, u32::try_from(g).expect("few groups"));
            }
        }
    }

    pub fn heal(&mut self) {
        self.group.clear();
    }

    fn linked(&self, a: u64, b: u64) -> bool {
        self.group.get(&a) == self.group.get(&b)
    }

    /// One tick: deliver what is due, then tick every running member.
    pub fn tick(&mut self) {
        self.now += 1;
        while self.queue.peek().is_some_and(|m| m.0.at <= self.now) {
            let Some(Reverse(InFlight {
                from, to, bytes, ..
            })) = self.queue.pop()
            else {
                break;
            };
            if !self.linked(from, to) || !self.alive(to) {
                continue;
            }
            if self.node(to).step(&bytes).is_err() {
                self.refused += 1;
            }
            self.poll(to);
        }
        for id in self.ids.clone() {
            if self.alive(id) {
                self.node(id).tick();
                self.poll(id);
            }
        }
    }

    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Ticks until `done` holds (checked after each tick), at most `max` ticks.
    pub fn run_until(&mut self, max: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max {
            self.tick();
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Drains member `id` (after an input given it directly).
    pub fn poll_member(&mut self, id: u64) {
        self.poll(id);
    }

    /// Drains a member after an input and checks that it is not a second leader of
    /// its term.
    fn poll(&mut self, id: u64) {
        let out = self.node(id).poll();
        self.handle(id, out);
        let state = self.node(id).state().clone();
        super::one_state_per_index(&mut self.states, &state, self.seed, "a member");
        let s = self.node(id).status();
        if s.role == Role::Leader {
            let leader = *self.leaders.entry(s.term).or_insert(id);
            assert_eq!(
                leader, id,
                "seed {}: two leaders in term {} ({leader} and {id})",
                self.seed, s.term
            );
        }
    }

    fn handle(&mut self, id: u64, out: Output) {
        // Durable first, as the runtime must: a crash after this point keeps it.
        if let Some(p) = &out.persist {
            self.disks
                .get_mut(&id)
                .expect("every member has a disk")
                .apply(p)
                .expect("deltas fold without gaps");
        }
        for (to, bytes) in out.messages {
            self.send(id, to, bytes);
        }
        if let Some(image) = out.installed {
            super::one_state_per_index(&mut self.states, &image.state, self.seed, "a snapshot");
            *self.installs.entry(id).or_default() += 1;
            self.base.insert(id, image.state.applied);
            self.applied.insert(id, Vec::new());
        }
        for c in out.committed {
            let seen = self.log.entry(c.index).or_insert_with(|| c.clone());
            assert_eq!(
                *seen, c,
                "seed {}: two commands applied at index {}",
                self.seed, c.index
            );
            let mine = self.applied.get_mut(&id).expect("every member has a list");
            if let Some(last) = mine.last() {
                assert!(
                    last.index < c.index,
                    "seed {}: applied out of order",
                    self.seed
                );
            }
            mine.push(c);
        }
    }

    fn send(&mut self, from: u64, to: u64, bytes: Vec<u8>) {
        use protobuf::Message as _;
        let snapshot = raft::eraftpb::Message::parse_from_bytes(&bytes)
            .is_ok_and(|m| m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot);
        self.snapshots_sent += u64::from(snapshot);
        if !self.linked(from, to)
            || (snapshot && self.drop_snapshots)
            || (self.loss > 0.0 && self.rng.random_bool(self.loss))
        {
            return;
        }
        let delay = self.rng.random_range(1..=self.max_delay.max(1));
        self.sent += 1;
        self.queue.push(Reverse(InFlight {
            at: self.now + delay,
            seq: self.sent,
            from,
            to,
            bytes,
        }));
    }

    /// The leader and term every member in `ids` agrees on, if they all run and agree.
    pub fn agreed(&self, ids: &[u64]) -> Option<(u64, u64)> {
        let mut seen = None;
        for &id in ids {
            let s = self.status(id)?;
            let view = (s.leader?, s.term);
            if *seen.get_or_insert(view) != view {
                return None;
            }
        }
        let (leader, _) = seen?;
        (self.status(leader)?.role == Role::Leader).then_some(seen?)
    }

    /// The member that currently acts as leader, if any (possibly a deposed one that
    /// has not noticed yet).
    pub fn any_leader(&self) -> Option<u64> {
        self.ids
            .iter()
            .copied()
            .find(|&id| self.status(id).is_some_and(|s| s.role == Role::Leader))
    }

    /// A fresh, unique command.
    pub fn command(&mut self) -> Command {
        self.next_command += 1;
        let n = self.next_command;
        if n.is_multiple_of(3) {
            Command::DeclareDead {
                peer: format!("peer-{}", n % 7).into(),
                incarnation: n,
            }
        } else {
            Command::Assign {
                item: format!("item-{n}"),
                owner: format!("peer-{}", n % 5).into(),
            }
        }
    }

    /// Proposes a fresh command at `id`; returns it if it was accepted for replication.
    pub fn propose_at(&mut self, id: u64) -> Option<Command> {
        let cmd = self.command();
        let accepted = self.node(id).propose(&cmd).is_ok();
        self.poll(id);
        accepted.then_some(cmd)
    }

    /// Runs a membership change at `id` and polls it.
    pub fn change_at(
        &mut self,
        id: u64,
        change: impl FnOnce(&mut Region) -> Result<(), super::Error>,
    ) -> Result<(), super::Error> {
        let r = change(self.node(id));
        self.poll(id);
        r
    }

    /// Whether every member runs, agrees on one leader and term, and has applied the
    /// same commands up to the same index.
    pub fn converged(&self) -> bool {
        let ids = self.ids.clone();
        let Some((leader, _)) = self.agreed(&ids) else {
            return false;
        };
        let Some(want) = self.status(leader) else {
            return false;
        };
        let Some(Some(leading)) = self.nodes.get(&leader) else {
            return false;
        };
        let base = |id: &u64| self.base.get(id).copied().unwrap_or(0);
        let after = |id: &u64, from: u64| -> Vec<Committed> {
            self.applied[id]
                .iter()
                .filter(|c| c.index > from)
                .cloned()
                .collect()
        };
        ids.iter().all(|id| {
            let Some(Some(node)) = self.nodes.get(id) else {
                return false;
            };
            let from = base(id).max(base(&leader));
            node.status().commit == want.commit
                && node.state().applied == want.commit
                && node.state() == leading.state()
                && after(id, from) == after(&leader, from)
        })
    }

    /// Every member's applied commands (after the snapshot it continues from) are a
    /// prefix of the commands committed after that snapshot.
    pub fn assert_prefixes(&self) {
        for (id, mine) in &self.applied {
            let from = self.base.get(id).copied().unwrap_or(0);
            let expected: Vec<&Committed> = self.log.values().filter(|c| c.index > from).collect();
            let mine: Vec<&Committed> = mine.iter().collect();
            assert!(
                expected.starts_with(&mine),
                "seed {}: member {id} applied a different history",
                self.seed
            );
        }
    }

    /// The state first seen at applied index `index`, by any member.
    pub fn state_at(&self, index: u64) -> Option<&RegionState> {
        self.states.get(&index)
    }

    /// The running member `id`'s consensus core.
    pub fn region(&self, id: u64) -> Option<&Region> {
        self.nodes.get(&id).and_then(Option::as_ref)
    }
}
