//! The discrete-event engine: simulated time, the event queue, the members made of the
//! real cores, the faults, and the checks.
//!
//! Time is a count of microseconds from the start; a core is handed `base + offset` as
//! its monotonic `Instant`, and its member's skewed wall clock in milliseconds where a
//! record carries a date. Events run in (time, sequence) order, the sequence being the
//! order in which they were scheduled, so a run depends on its seed only.
//!
//! A member is three cores, driven as the node's actors drive them:
//! - the heartbeat emitter and the membership view (the heartbeat actor): one timer at
//!   the earlier of their deadlines; a new suspicion is told at once in an extra
//!   heartbeat; the region's members are pushed to the governor when the view changes;
//! - the region governor with its Raft core (the region actor): its own timer; its
//!   outputs acted on in order (saves written to the member's disk before later sends).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetmesh_actors::governor::{self, Governor, Output as GovOutput};
use fleetmesh_actors::heartbeat::{self, Beat, Health};
use fleetmesh_actors::intake::Output as IntakeOutput;
use fleetmesh_actors::membership::{self, Input, Output as ViewOutput, Status, View};
use fleetmesh_actors::region::Durable;
use fleetmesh_actors::spike::Spike;
use fleetmesh_actors::{node, wire};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{Deaths, Masters, Owners, Spikes, Violation};
use crate::flow::{self, Flow, Journal, Replay};
use crate::net::{Links, Model};
use crate::queue::Queue;
use crate::scenario::{Action, Scenario, Target};
use crate::stats::{self, Report};

/// The wall clock (Unix ms) at simulated time 0.
const EPOCH_UNIX_MS: u64 = 1_767_225_600_000;

/// Events at one simulated instant beyond which the run is stopped as a livelock.
const STALL_EVENTS: u64 = 10_000_000;

/// Bytes a Raft message carries on top of its body (request-response framing, peer ids).
const RAFT_OVERHEAD: u64 = 64;
/// A probe or its answer on the wire: a few bytes of body plus the same framing.
const PROBE_BYTES: u64 = RAFT_OVERHEAD + 8;

/// A member's timers, one per actor the node runs them in.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// The heartbeat side's (emitter and view).
    Heartbeat,
    /// The governor's and the intake's (the region actor's).
    Region,
    /// The replay check (the spike actor's).
    Sync,
}

impl Timer {
    const ALL: usize = 3;
}

#[derive(Debug)]
enum Ev {
    /// Member `usize`'s timer, armed for now.
    Wake(usize, Timer),
    /// Member `node` observes a batch of `size` changes; `left` more batches every
    /// `every_us`.
    Change {
        node: usize,
        size: usize,
        left: u64,
        every_us: u64,
    },
    Deliver {
        to: usize,
        msg: Msg,
    },
    Fault(usize),
    Resume {
        node: usize,
        epoch: u64,
    },
    /// A link cut `cut_detect_ms` ago: if still cut, the connection is noticed closed.
    CutNoticed {
        a: usize,
        b: usize,
    },
    /// The detection bound after a crash of `node` (incarnation `epoch`).
    CheckDetected {
        node: usize,
        epoch: u64,
        crashed_at: u64,
    },
    Progress,
    /// The work-ownership check (every second).
    CheckOwners,
    /// Traffic counted from now on (`measure_from_s`).
    MeasureFrom,
}

#[derive(Debug, Clone)]
enum Msg {
    Beat {
        from: usize,
        beat: Arc<Beat>,
    },
    /// A watcher's liveness probe, and its answer (request-response, point to point).
    Probe {
        from: usize,
    },
    Alive {
        from: usize,
    },
    Raft {
        from: usize,
        bytes: Vec<u8>,
    },
    Connected {
        peer: usize,
    },
    Disconnected {
        peer: usize,
    },
    /// Spikes gossiped on the region topic.
    Spikes {
        spikes: Rc<Vec<Spike>>,
    },
    /// A master's acknowledgements gossiped on the region topic.
    Acks {
        from: usize,
        acks: Rc<wire::Acks>,
    },
    /// A replay batch to the master, and its answer (request-response).
    Replay {
        from: usize,
        first: u64,
        spikes: Vec<Spike>,
    },
    Replayed {
        from: usize,
        answer: Result<(u64, u64), String>,
    },
}

/// A running member's cores.
#[derive(Debug)]
struct Cores {
    view: View,
    emitter: heartbeat::Emitter,
    gov: Governor,
    flow: Flow,
    held_dead_by: usize,
    /// Changes its governor has not been handed yet.
    members_dirty: bool,
    /// What it last told its region it saw.
    told: heartbeat::Seen,
    incarnation: u64,
    /// When each [`Timer`] is armed (simulated µs).
    wakes: [Option<u64>; Timer::ALL],
}

#[derive(Debug)]
struct Member {
    region: usize,
    peer: node::Id,
    name: String,
    role: String,
    eligible: bool,
    cores: Option<Cores>,
    /// What its governor saved and its journal: all a crash keeps.
    disk: Option<Durable>,
    journal: Journal,
    /// Bumped at every crash, restart and pause, so that stale events are recognised.
    epoch: u64,
    crashed_at: Option<u64>,
    paused_until: Option<u64>,
    /// When its current pause began, and who declared it dead during it.
    paused_at: Option<u64>,
    hang_detected_by: BTreeSet<usize>,
    /// Messages that arrived while it was paused, in arrival order.
    backlog: Vec<Msg>,
    skew_ms: i64,
    /// The last incarnation it took (kept on disk by the node, across restarts).
    last_incarnation: u64,
    recv_msgs: u64,
    recv_bytes: u64,
    /// Observers that declared its current crash dead.
    detected_by: BTreeSet<usize>,
}

/// One simulation run.
#[derive(Debug)]
pub struct Sim {
    sc: Scenario,
    rng: ChaCha8Rng,
    base: Instant,
    now: u64,
    end: u64,
    seq: u64,
    events: u64,
    queue: Queue<Ev>,
    members: Vec<Member>,
    ids: HashMap<node::Id, usize>,
    regions: Vec<Vec<usize>>,
    links: Links,
    net: Model,
    masters: Masters,
    deaths: Deaths,
    spikes: Spikes,
    owners: Owners,
    violation: Option<Violation>,
    /// Per region: a crashed master's crash time and term, until a later term leads.
    failover_from: Vec<Option<(u64, u64)>>,
    detect_us: Vec<u64>,
    hang_us: Vec<u64>,
    /// When traffic started to be counted.
    measured_from: u64,
    failover_us: Vec<u64>,
    crashes: usize,
    raft_msgs: u64,
    heartbeats: u64,
    probes: u64,
    splits: u64,
    /// Membership pushes to governors (each a walk over the region).
    pushes: u64,
    replays: u64,
    acks_refused: u64,
    /// Test-only: every member's intake takes acknowledgements from anyone.
    unfenced: bool,
    quiet: bool,
}

fn us(ms: f64) -> u64 {
    (ms * 1000.0).max(0.0) as u64
}

impl Sim {
    /// A run of `sc`, every member started at time 0.
    pub fn new(sc: Scenario) -> Sim {
        let n = sc.nodes();
        let t = &sc.topology;
        let mut members = Vec::with_capacity(n);
        let mut regions = Vec::with_capacity(t.regions);
        for r in 0..t.regions {
            let mut region = Vec::with_capacity(t.nodes_per_region);
            for i in 0..t.nodes_per_region {
                let idx = members.len();
                region.push(idx);
                members.push(Member {
                    region: r,
                    peer: node::Id::from(format!("peer-{idx}")),
                    name: format!("r{r}-{i}"),
                    role: t.roles[i % t.roles.len()].clone(),
                    eligible: t.eligible_per_region.is_none_or(|e| i < e),
                    cores: None,
                    disk: None,
                    journal: Journal::default(),
                    epoch: 0,
                    crashed_at: None,
                    paused_until: None,
                    paused_at: None,
                    hang_detected_by: BTreeSet::new(),
                    backlog: Vec::new(),
                    skew_ms: 0,
                    last_incarnation: 0,
                    recv_msgs: 0,
                    recv_bytes: 0,
                    detected_by: BTreeSet::new(),
                });
            }
            regions.push(region);
        }
        let ids = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.peer.clone(), i))
            .collect();
        let inv = &sc.invariants;
        let deaths = Deaths::new(
            n,
            inv.settle_ms * 1000,
            inv.detect_bound_ms * 1000,
            inv.pause_exempt_over_ms * 1000,
        );
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(sc.seed),
            base: Instant::now(),
            now: 0,
            end: us(sc.duration_s * 1000.0),
            seq: 0,
            events: 0,
            queue: Queue::default(),
            ids,
            links: Links::new(n),
            net: Model {
                config: sc.network.clone(),
            },
            masters: Masters::default(),
            deaths,
            spikes: Spikes::default(),
            owners: Owners::default(),
            violation: None,
            failover_from: vec![None; t.regions],
            detect_us: Vec::new(),
            hang_us: Vec::new(),
            measured_from: 0,
            failover_us: Vec::new(),
            crashes: 0,
            raft_msgs: 0,
            heartbeats: 0,
            probes: 0,
            splits: 0,
            pushes: 0,
            replays: 0,
            acks_refused: 0,
            unfenced: false,
            quiet: false,
            regions,
            members,
            sc,
        };
        for (k, f) in sim.sc.faults.clone().iter().enumerate() {
            sim.schedule(us(f.at_s * 1000.0), Ev::Fault(k));
        }
        if sim.sc.progress_s > 0.0 {
            sim.schedule(us(sim.sc.progress_s * 1000.0), Ev::Progress);
        }
        sim.schedule(us(1000.0), Ev::CheckOwners);
        if sim.sc.measure_from_s > 0.0 {
            sim.schedule(us(sim.sc.measure_from_s * 1000.0), Ev::MeasureFrom);
        }
        for i in 0..n {
            sim.start(i);
        }
        let w = sim.sc.workload.clone();
        if w.changes_per_s > 0.0 {
            // Each member at its own phase, then evenly.
            let every_us = us(1000.0 * w.batch as f64 / w.changes_per_s).max(1);
            for node in 0..n {
                let at = sim.rng.random_range(0..every_us);
                sim.schedule(
                    at,
                    Ev::Change {
                        node,
                        size: w.batch,
                        left: u64::MAX,
                        every_us,
                    },
                );
            }
        }
        sim
    }

    /// No progress lines.
    pub fn quiet(mut self) -> Sim {
        self.quiet = true;
        self
    }

    /// Test-only fault: every intake takes acknowledgements from any sender, for any
    /// term (the fencing skipped), so that a forged acknowledgement makes origins drop
    /// spikes no master applied. The checker must catch it.
    pub fn break_fencing(mut self) -> Sim {
        self.unfenced = true;
        for m in &mut self.members {
            if let Some(c) = &mut m.cores {
                c.flow.intake.break_fencing();
            }
        }
        self
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(at, self.seq, ev);
    }

    fn unix_ms(&self, i: usize) -> u64 {
        let ms = EPOCH_UNIX_MS + self.now / 1000;
        ms.saturating_add_signed(self.members[i].skew_ms)
    }

    fn up(&self, i: usize) -> bool {
        self.members[i].cores.is_some()
    }

    /// Starts (or restarts) member `i` from its disk, as a new incarnation.
    fn start(&mut self, i: usize) {
        let now = self.instant();
        let p = &self.sc.protocol;
        let incarnation = self.unix_ms(i).max(self.members[i].last_incarnation + 1);
        self.members[i].last_incarnation = incarnation;
        let m = &self.members[i];
        let region = format!("r{}", m.region);
        let info = node::Info {
            name: m.name.clone(),
            region: region.clone(),
            role: m.role.clone(),
            incarnation,
        };
        let emitter_config = heartbeat::Config {
            interval: Duration::from_millis(p.heartbeat_ms),
            probe: Duration::from_millis(p.probe_ms),
            region_rate: p.region_rate,
        };
        let view = View::new(
            membership::Config {
                interval: Duration::from_millis(p.heartbeat_ms),
                acceptable_pause: Duration::from_millis(p.acceptable_pause_ms),
                connected_grace: Duration::from_millis(p.connected_grace_ms),
                suspect_phi: p.suspect_phi,
                dead_phi: p.dead_phi,
                dead_after: p.dead_after,
                probe: Duration::from_millis(p.probe_ms),
                monitors: p.monitors,
                stall: membership::Config::stall_after(
                    emitter_config.tick(),
                    Duration::from_millis(p.acceptable_pause_ms),
                ),
            },
            m.peer.clone(),
            region.clone(),
        );
        let emitter = heartbeat::Emitter::new(emitter_config, info, now);
        let mut c = governor::Config::new(&region, m.peer.clone(), &m.name, incarnation);
        c.eligible = m.eligible;
        c.bootstrap_expect = p.bootstrap_expect;
        c.bootstrap = Duration::from_millis(p.bootstrap_ms);
        c.max_voters = p.max_voters;
        c.tick = Duration::from_millis(p.tick_ms);
        c.consensus.election_ticks = p.election_ticks;
        c.consensus.seed = self.sc.seed ^ (i as u64).wrapping_mul(0x9E37_79B9);
        let gov = Governor::new(c, m.disk.clone(), now);
        let mut flow = Flow::new(&region, &m.peer, &m.role, &m.journal, self.unix_ms(i));
        if self.unfenced {
            flow.intake.break_fencing();
        }
        self.spikes.restarted(i);
        let m = &mut self.members[i];
        m.cores = Some(Cores {
            view,
            emitter,
            gov,
            flow,
            held_dead_by: 0,
            members_dirty: false,
            told: heartbeat::Seen::default(),
            incarnation,
            wakes: [None; Timer::ALL],
        });
        m.epoch += 1;
        m.crashed_at = None;
        m.paused_until = None;
        m.backlog.clear();
        m.detected_by.clear();
        self.deaths.disturb(i, self.now);
        // Connections to every reachable running peer of the region, both ways.
        let peers: Vec<usize> = self.regions[self.members[i].region].clone();
        for j in peers {
            if j != i && self.up(j) && self.links.linked(i, j) {
                self.feed(i, Msg::Connected { peer: j });
                let d = self.net.delay_us(&mut self.rng, true);
                self.schedule(
                    self.now + d,
                    Ev::Deliver {
                        to: j,
                        msg: Msg::Connected { peer: i },
                    },
                );
            }
        }
        self.drain_gov(i);
        self.arm(i);
    }

    /// Runs to the end (or the first violation) and returns the figures.
    pub fn run(mut self) -> Report {
        let wall = Instant::now();
        let cpu0 = stats::cpu_ns();
        let mut stalled = 0u64;
        while let Some((at, ev)) = self.queue.pop() {
            if at > self.end || self.violation.is_some() {
                break;
            }
            if at == self.now {
                stalled += 1;
                if stalled > STALL_EVENTS {
                    self.violate(Violation {
                        at_us: self.now,
                        what: format!("{STALL_EVENTS} events without time moving (a livelock)"),
                    });
                    break;
                }
            } else {
                stalled = 0;
            }
            self.now = at;
            self.events += 1;
            self.handle(ev, wall);
        }
        if self.violation.is_none() {
            self.now = self.end;
            self.check_settled();
        }
        let wall_s = wall.elapsed().as_secs_f64();
        let cpu_ms = (stats::cpu_ns().saturating_sub(cpu0)) as f64 / 1e6;
        self.report(wall_s, cpu_ms)
    }

    fn handle(&mut self, ev: Ev, wall: Instant) {
        match ev {
            Ev::Change {
                node,
                size,
                left,
                every_us,
            } => {
                if self.up(node) && !self.paused(node) {
                    self.record(node, size);
                    self.arm(node);
                }
                if left > 1 {
                    let next = Ev::Change {
                        node,
                        size,
                        left: left - 1,
                        every_us,
                    };
                    self.schedule(self.now + every_us, next);
                }
            }
            Ev::Deliver { to, msg } => {
                if !self.up(to) {
                    return;
                }
                if self.paused(to) {
                    self.members[to].backlog.push(msg);
                    return;
                }
                self.feed(to, msg);
                self.arm(to);
            }
            Ev::Fault(k) => {
                let action = self.sc.faults[k].action.clone();
                self.fault(&action);
            }
            Ev::Wake(i, timer) => {
                let due = self.members[i]
                    .cores
                    .as_ref()
                    .is_some_and(|c| c.wakes[timer as usize] == Some(self.now));
                if due && !self.paused(i) {
                    if let Some(c) = &mut self.members[i].cores {
                        c.wakes[timer as usize] = None;
                    }
                    match timer {
                        Timer::Heartbeat => self.drive_hb(i),
                        Timer::Region => self.drive_region(i),
                        Timer::Sync => self.drive_sync(i),
                    }
                    self.arm(i);
                }
            }
            Ev::Resume { node, epoch } => {
                if self.members[node].epoch == epoch && self.up(node) {
                    self.members[node].paused_until = None;
                    let backlog = std::mem::take(&mut self.members[node].backlog);
                    for msg in backlog {
                        self.feed(node, msg);
                    }
                    // Its timers fire late: now.
                    if let Some(c) = &mut self.members[node].cores {
                        c.wakes = [None; Timer::ALL];
                    }
                    self.drive_hb(node);
                    self.drive_region(node);
                    self.drive_sync(node);
                    self.arm(node);
                }
            }
            Ev::CutNoticed { a, b } => {
                if !self.links.linked(a, b) {
                    for (x, y) in [(a, b), (b, a)] {
                        if self.up(x) {
                            self.deliver_now(x, Msg::Disconnected { peer: y });
                        }
                    }
                }
            }
            Ev::CheckDetected {
                node,
                epoch,
                crashed_at,
            } => {
                if self.members[node].epoch == epoch && !self.up(node) {
                    self.check_detected(node, crashed_at);
                }
            }
            Ev::CheckOwners => {
                self.check_owners();
                self.schedule(self.now + us(1000.0), Ev::CheckOwners);
            }
            Ev::MeasureFrom => {
                self.measured_from = self.now;
                for m in &mut self.members {
                    m.recv_msgs = 0;
                    m.recv_bytes = 0;
                }
            }
            Ev::Progress => {
                if !self.quiet {
                    let sim_s = self.now as f64 / 1e6;
                    let wall_s = wall.elapsed().as_secs_f64();
                    eprintln!(
                        "sim {sim_s:.0} s of {:.0} s, wall {wall_s:.1} s ({:.2}x), {} events",
                        self.end as f64 / 1e6,
                        sim_s / wall_s.max(1e-9),
                        self.events
                    );
                }
                self.schedule(self.now + us(self.sc.progress_s * 1000.0), Ev::Progress);
            }
        }
    }

    fn paused(&self, i: usize) -> bool {
        self.members[i].paused_until.is_some()
    }

    /// A message handled now, or queued while the member is paused.
    fn deliver_now(&mut self, to: usize, msg: Msg) {
        if self.paused(to) {
            self.members[to].backlog.push(msg);
        } else {
            self.feed(to, msg);
            self.arm(to);
        }
    }

    /// Hands one message to member `to`'s cores.
    fn feed(&mut self, to: usize, msg: Msg) {
        let now = self.instant();
        let mut lists_us = false;
        let input = match msg {
            Msg::Raft { from, bytes } => {
                let from = self.members[from].peer.clone();
                if let Some(c) = &mut self.members[to].cores {
                    // A refused message is the sender's problem (counted by the node).
                    let _ = c.gov.handle_raft(now, &from, &bytes);
                }
                self.drain_gov(to);
                return;
            }
            Msg::Beat { from, beat } => {
                lists_us = beat.suspects.contains(&self.members[to].peer);
                Input::Heartbeat {
                    from: self.members[from].peer.clone(),
                    beat,
                }
            }
            Msg::Probe { from } => {
                // Answered at once by the driver, whatever the cores are doing.
                self.send_direct(to, from, Msg::Alive { from: to });
                return;
            }
            Msg::Alive { from } => Input::Alive {
                from: self.members[from].peer.clone(),
            },
            Msg::Connected { peer } => {
                // A region peer held dead connects again: the region hears from this
                // member soon; the peer itself gets its heartbeat at once.
                let p = self.members[peer].peer.clone();
                let unix = self.unix_ms(to);
                if let Some(c) = &mut self.members[to].cores {
                    if c.view.get(&p).is_some_and(|m| m.status == Status::Dead) {
                        c.emitter.beat_soon(now);
                    }
                    let beat = c.emitter.current(now, unix, health(&c.view), c.view.seen());
                    self.send_beat(to, peer, beat);
                }
                Input::Connected { peer: p }
            }
            Msg::Disconnected { peer } => Input::Disconnected {
                peer: self.members[peer].peer.clone(),
            },
            Msg::Spikes { spikes } => {
                if let Some(c) = &mut self.members[to].cores {
                    c.flow.intake.handle_spikes((*spikes).clone());
                }
                self.drain_intake(to);
                return;
            }
            Msg::Acks { from, acks } => {
                let from = self.members[from].peer.clone();
                self.take_acks(to, &from, (*acks).clone());
                return;
            }
            Msg::Replay {
                from,
                first,
                spikes,
            } => {
                let peer = self.members[from].peer.clone();
                let Some(c) = &mut self.members[to].cores else {
                    return;
                };
                let answer = c.flow.intake.handle_replay(&peer, first, spikes);
                self.drain_intake(to);
                let reply = Msg::Replayed { from: to, answer };
                self.send_point(to, from, PROBE_BYTES, reply);
                return;
            }
            Msg::Replayed { from, answer } => {
                // As the node's driver does: an answer is the master's mark for this
                // member, taken (and fenced) like gossiped acknowledgements; a refusal is
                // only logged, and the batch goes again when its answer is overdue.
                if let Ok((term, mark)) = answer {
                    let acks = wire::Acks {
                        region: format!("r{}", self.members[to].region),
                        term,
                        marks: vec![(self.members[to].peer.clone(), mark)],
                    };
                    let from = self.members[from].peer.clone();
                    self.take_acks(to, &from, acks);
                }
                return;
            }
        };
        let Some(c) = &mut self.members[to].cores else {
            return;
        };
        let out = c.view.handle(now, input);
        self.report_view(to, out, lists_us);
    }

    /// The heartbeat actor's timer: a heartbeat if due, then the view re-judged.
    fn drive_hb(&mut self, i: usize) {
        let now = self.instant();
        let unix = self.unix_ms(i);
        let Some(c) = &mut self.members[i].cores else {
            return;
        };
        // As the heartbeat actor: the walks over the region only when a beat is due.
        if now >= c.emitter.next_beat() {
            let seen = c.view.seen();
            if let Some(beat) = c
                .emitter
                .handle_timeout(now, unix, health(&c.view), seen.clone())
            {
                c.told = seen;
                self.publish(i, beat);
            }
        }
        let Some(c) = &mut self.members[i].cores else {
            return;
        };
        if c.emitter.probe_due(now) {
            let watching: Vec<usize> = c
                .view
                .watching()
                .iter()
                .filter_map(|p| self.ids.get(p).copied())
                .collect();
            for j in watching {
                self.send_direct(i, j, Msg::Probe { from: i });
            }
        }
        let Some(c) = &mut self.members[i].cores else {
            return;
        };
        let out = c.view.handle_timeout(now);
        self.report_view(i, out, true);
        if self.members[i]
            .cores
            .as_ref()
            .is_some_and(|c| c.members_dirty)
        {
            self.push_members(i);
        }
    }

    /// The region actor's timer: the governor's and the intake's deadlines.
    fn drive_region(&mut self, i: usize) {
        let now = self.instant();
        if let Some(c) = &mut self.members[i].cores {
            c.gov.handle_timeout(now);
            c.flow.intake.handle_timeout(now);
        }
        self.drain_intake(i);
        self.drain_gov(i);
    }

    /// The spike actor's replay check.
    fn drive_sync(&mut self, i: usize) {
        let unix = self.unix_ms(i);
        let m = &mut self.members[i];
        let Some(c) = &mut m.cores else {
            return;
        };
        if let Some(r) = c.flow.poll(&m.journal, unix) {
            self.send_replay(i, r);
        }
    }

    /// Member `i` observes a batch of changes: journaled, handed to its own intake,
    /// gossiped to its region.
    fn record(&mut self, i: usize, batch: usize) {
        let unix = self.unix_ms(i);
        let m = &mut self.members[i];
        let Some(c) = &mut m.cores else {
            return;
        };
        let spikes = c.flow.record(&mut m.journal, batch, unix);
        c.flow.intake.handle_spikes(spikes.clone());
        for s in &spikes {
            self.spikes.published(self.now, i, s.seq);
        }
        self.drain_intake(i);
        for batch in wire::batches(spikes) {
            let body = wire::Body::Spikes(batch);
            let size = frame_size(&body);
            let wire::Body::Spikes(batch) = body else {
                continue;
            };
            let msg = Msg::Spikes {
                spikes: Rc::new(batch),
            };
            self.gossip(i, size, msg);
        }
    }

    /// Acknowledgements `from` a peer (gossiped, or a replay's answer) for member `to`.
    fn take_acks(&mut self, to: usize, from: &node::Id, acks: wire::Acks) {
        let Some(c) = &mut self.members[to].cores else {
            return;
        };
        if !c.flow.intake.handle_acks(from, acks) {
            self.acks_refused += 1;
        }
        self.drain_intake(to);
    }

    /// Acts on the intake's outputs as the region actor does, and checks them.
    fn drain_intake(&mut self, i: usize) {
        let unix = self.unix_ms(i);
        loop {
            let m = &mut self.members[i];
            let Some(c) = &mut m.cores else {
                return;
            };
            let Some(o) = c.flow.intake.poll_output() else {
                return;
            };
            match o {
                IntakeOutput::Applied(spikes) => {
                    for s in spikes {
                        let Some(&origin) = self.ids.get(&s.origin) else {
                            continue;
                        };
                        if let Err(v) = self.spikes.applied(self.now, i, origin, s.seq) {
                            self.violate(v);
                        }
                    }
                }
                IntakeOutput::OwnMark { mark, master } => {
                    let (upto, next) = c.flow.acked(&mut m.journal, mark, master, unix);
                    if let Some(upto) = upto
                        && let Err(v) = self.spikes.compacted(self.now, i, upto)
                    {
                        self.violate(v);
                    }
                    if let Some(r) = next {
                        self.send_replay(i, r);
                    }
                }
                IntakeOutput::Gossip(acks) => self.gossip_acks(i, acks),
            }
        }
    }

    /// Acknowledgements on member `i`'s region topic, charged their frame's size.
    fn gossip_acks(&mut self, i: usize, acks: wire::Acks) {
        let body = wire::Body::Acks(acks);
        let size = frame_size(&body);
        let wire::Body::Acks(acks) = body else {
            return;
        };
        let msg = Msg::Acks {
            from: i,
            acks: Rc::new(acks),
        };
        self.gossip(i, size, msg);
    }

    /// A replay batch to the master (request-response), charged once with its size.
    fn send_replay(&mut self, from: usize, r: Replay) {
        let Some(&to) = self.ids.get(&r.to) else {
            return;
        };
        let request = wire::Request::Replay {
            region: format!("r{}", self.members[from].region),
            first: r.first,
            spikes: r.spikes,
        };
        let size = frame_size(&request) + RAFT_OVERHEAD;
        let wire::Request::Replay { first, spikes, .. } = request else {
            return;
        };
        let msg = Msg::Replay {
            from,
            first,
            spikes,
        };
        if self.send_point(from, to, size, msg) {
            self.replays += 1;
        }
    }

    /// Hands member `i`'s governor the region's members (a walk over the region).
    fn push_members(&mut self, i: usize) {
        let now = self.instant();
        let Some(c) = &mut self.members[i].cores else {
            return;
        };
        c.members_dirty = false;
        self.pushes += 1;
        let members = c.view.region_members();
        c.gov.handle_members(now, members, c.held_dead_by);
        self.drain_gov(i);
    }

    /// Acts on the view's outputs as the heartbeat actor does, and checks the deaths.
    /// `listed`: how many peers hold this member dead may have changed although `out` is
    /// empty (a heartbeat listing it, or a timeout).
    fn report_view(&mut self, i: usize, out: Vec<ViewOutput>, listed: bool) {
        let urgent = membership::urgent(&out);
        let mut changed = false;
        let accused = out.iter().any(|o| matches!(o, ViewOutput::Accused { .. }));
        for o in &out {
            if !matches!(o, ViewOutput::Stale { .. } | ViewOutput::Watching { .. }) {
                changed = true;
            }
            if let ViewOutput::StatusChanged {
                peer,
                to: Status::Dead,
                ..
            } = o
            {
                self.dead(i, peer);
            }
        }
        let now = self.instant();
        let unix = self.unix_ms(i);
        let Some(c) = &mut self.members[i].cores else {
            return;
        };
        // The count can only move with a status change, a heartbeat listing this member,
        // or one that stops listing it while the count is above 0: counting it otherwise
        // (a walk over every peer at every heartbeat) would find the same number.
        let held = if changed || listed || c.held_dead_by > 0 {
            c.view.held_dead_by(membership::HELD_DEAD_BEATS)
        } else {
            c.held_dead_by
        };
        if urgent || held != c.held_dead_by {
            c.held_dead_by = held;
            self.push_members(i);
        } else if changed {
            // At the next tick, as the node does.
            c.members_dirty = true;
        }
        let Some(c) = &mut self.members[i].cores else {
            return;
        };
        c.emitter.set_members(c.view.region_size());
        // Only when something moved: a walk over the peers.
        if changed || listed {
            let seen = c.view.seen();
            if seen != c.told || accused {
                let beat = c.emitter.beat_now(now, unix, health(&c.view), seen.clone());
                c.told = seen;
                self.publish(i, beat);
            }
        }
    }

    /// Observer `i` holds `peer` dead.
    fn dead(&mut self, i: usize, peer: &node::Id) {
        let Some(&p) = self.ids.get(peer) else {
            return;
        };

        if let Some(crashed_at) = self.members[p].crashed_at
            && self.members[p].detected_by.insert(i)
        {
            self.detect_us.push(self.now - crashed_at);
        }
        if self.members[p].paused_until.is_some()
            && let Some(at) = self.members[p].paused_at
            && self.members[p].hang_detected_by.insert(i)
        {
            self.hang_us.push(self.now - at);
        }
        let reachable = self.up(p) && self.links.linked(i, p);
        if let Err(v) = self.deaths.declared_dead(self.now, i, p, reachable) {
            self.violate(v);
        }
    }

    fn violate(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    /// Gossips a heartbeat to the region (see the crate doc for the model).
    fn publish(&mut self, i: usize, beat: Beat) {
        self.heartbeats += 1;
        let Some((beat, size)) = encoded(beat) else {
            return;
        };
        self.gossip(i, size, Msg::Beat { from: i, beat });
    }

    /// A message of `size` bytes on member `i`'s region topic: once to each reachable
    /// running peer, each charged the copies a mesh of the configured degree delivers.
    fn gossip(&mut self, i: usize, size: u64, msg: Msg) {
        let region = self.members[i].region;
        let reach = self.regions[region]
            .iter()
            .filter(|&&j| j != i && self.up(j) && self.links.linked(i, j))
            .count() as u64;
        let copies = reach.min(self.sc.network.mesh_degree as u64).max(1);
        for k in 0..self.regions[region].len() {
            let j = self.regions[region][k];
            if j == i || !self.up(j) || !self.links.linked(i, j) || self.net.lost(&mut self.rng) {
                continue;
            }
            self.members[j].recv_msgs += copies;
            self.members[j].recv_bytes += copies * size;
            let d = self.net.delay_us(&mut self.rng, true);
            let msg = msg.clone();
            self.schedule(self.now + d, Ev::Deliver { to: j, msg });
        }
    }

    /// Acts on the governor's outputs in order; checks masters and times failovers.
    fn drain_gov(&mut self, i: usize) {
        let (now, unix) = (self.instant(), self.unix_ms(i));
        let mut reincarnated = None;
        loop {
            let Some(c) = &mut self.members[i].cores else {
                return;
            };
            let Some(o) = c.gov.poll_output() else {
                break;
            };
            match o {
                GovOutput::Save => {
                    let save = c.gov.take_save();
                    let m = &mut self.members[i];
                    if let Some(c) = &m.cores
                        && save.write_to(&mut m.disk, c.gov.durable()).is_err()
                    {
                        let what = format!("member {i}: its saved deltas do not fold");
                        self.violate(Violation {
                            at_us: self.now,
                            what,
                        });
                    }
                }
                GovOutput::Send { to, bytes } => {
                    if let Some(&j) = self.ids.get(&to) {
                        self.send_raft(i, j, bytes);
                    }
                }
                GovOutput::Facts(f) => {
                    if c.emitter.set_region(f) {
                        c.emitter.beat_soon(now);
                    }
                }
                GovOutput::Reincarnate => {
                    // As the node does: a new number, above the last, kept across restarts.
                    let n = unix.max(c.incarnation + 1);
                    c.incarnation = n;
                    reincarnated = Some(n);
                    c.gov.set_incarnation(now, n);
                    c.emitter.set_incarnation(n);
                    c.view.forget_listed();
                }
                GovOutput::Master { master, leading } => {
                    c.flow.set_master(now, master, leading, unix);
                    self.drain_intake(i);
                }
                GovOutput::Committed(_)
                | GovOutput::Installed(_)
                | GovOutput::Joined { .. }
                | GovOutput::DuplicateName { .. }
                | GovOutput::ExpectDiffers { .. } => {}
            }
        }
        if let Some(n) = reincarnated {
            self.members[i].last_incarnation = n;
        }
        let Some(term) = self.members[i].cores.as_ref().and_then(|c| c.gov.leading()) else {
            return;
        };
        let region = self.members[i].region;
        if let Err(v) = self.masters.observe(self.now, region, term, i) {
            self.violate(v);
        }
        if let Some((at, old)) = self.failover_from[region]
            && term > old
        {
            self.failover_us.push(self.now - at);
            self.failover_from[region] = None;
        }
    }

    /// A heartbeat to one peer (request-response, point to point), charged once.
    fn send_beat(&mut self, from: usize, to: usize, beat: Beat) {
        let Some((beat, size)) = encoded(beat) else {
            return;
        };
        self.send_point(from, to, size + RAFT_OVERHEAD, Msg::Beat { from, beat });
    }

    /// A probe or its answer: point to point, charged once.
    fn send_direct(&mut self, from: usize, to: usize, msg: Msg) {
        if self.up(from) && self.send_point(from, to, PROBE_BYTES, msg) {
            self.probes += 1;
        }
    }

    fn send_raft(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let size = bytes.len() as u64 + RAFT_OVERHEAD;
        if self.send_point(from, to, size, Msg::Raft { from, bytes }) {
            self.raft_msgs += 1;
        }
    }

    /// A request-response message (Raft, a probe or its answer, a heartbeat to one peer):
    /// one link delay, charged once with `size` bytes. Returns whether it left (not cut,
    /// not lost).
    fn send_point(&mut self, from: usize, to: usize, size: u64, msg: Msg) -> bool {
        if !self.links.linked(from, to) || self.net.lost(&mut self.rng) {
            return false;
        }
        self.members[to].recv_msgs += 1;
        self.members[to].recv_bytes += size;
        let same = self.members[from].region == self.members[to].region;
        let d = self.net.delay_us(&mut self.rng, same);
        self.schedule(self.now + d, Ev::Deliver { to, msg });
        true
    }

    /// Sets both timers of member `i` to its cores' deadlines (when earlier than set),
    /// as the heartbeat and region actors do after every input.
    fn arm(&mut self, i: usize) {
        if self.paused(i) {
            return;
        }
        let (base, now) = (self.base, self.now);
        // Rounded up: a deadline a few nanoseconds after `now` must not wake the member
        // at `now` again and again.
        let at = |t: Instant| {
            u64::try_from(t.saturating_duration_since(base).as_nanos().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(now)
        };
        let Some(c) = &mut self.members[i].cores else {
            return;
        };
        let mut hb = c.emitter.poll_timeout();
        if let Some(t) = c.view.poll_timeout() {
            hb = hb.min(t);
        }
        let hb = at(hb);
        let gov = match (c.gov.poll_timeout(), c.flow.intake.poll_timeout()) {
            (Some(a), Some(b)) => Some(at(a.min(b))),
            (a, b) => a.or(b).map(at),
        };
        // The replay check runs every interval while spikes wait (the spike actor's
        // interval), never earlier.
        let sync = (c.wakes[Timer::Sync as usize].is_none() && c.flow.backlog())
            .then(|| now + flow::POLL_MS * 1000);
        let mut new = Vec::new();
        for (timer, at) in [
            (Timer::Sync, sync),
            (Timer::Heartbeat, Some(hb)),
            (Timer::Region, gov),
        ] {
            let armed = &mut c.wakes[timer as usize];
            if let Some(t) = at
                && armed.is_none_or(|w| t < w)
            {
                *armed = Some(t);
                new.push((t, Ev::Wake(i, timer)));
            }
        }
        for (t, ev) in new {
            self.schedule(t, ev);
        }
    }

    /// The member a fault names, now.
    fn target(&self, s: &str) -> Option<usize> {
        match Target::parse(s, &self.sc.topology).ok()? {
            Target::Node { region, index } => Some(self.regions[region][index]),
            Target::Master { region } => self.master_of(region),
        }
    }

    /// The running member leading the highest term in `region`.
    pub fn master_of(&self, region: usize) -> Option<usize> {
        self.regions[region]
            .iter()
            .filter_map(|&i| Some((self.members[i].cores.as_ref()?.gov.leading()?, i)))
            .max()
            .map(|(_, i)| i)
    }

    fn fault(&mut self, action: &Action) {
        match action {
            Action::Crash { node } => {
                let Some(i) = self.target(node) else {
                    return;
                };
                self.crash(i);
            }
            Action::Restart { node } => {
                if let Some(i) = self.target(node)
                    && !self.up(i)
                {
                    self.start(i);
                }
            }
            Action::Pause { node, for_s } => {
                let Some(i) = self.target(node) else {
                    return;
                };
                if !self.up(i) || self.paused(i) {
                    return;
                }
                let len = us(for_s * 1000.0);
                self.members[i].epoch += 1;
                self.members[i].paused_until = Some(self.now + len);
                self.members[i].paused_at = Some(self.now);
                self.members[i].hang_detected_by.clear();
                if let Some(c) = &mut self.members[i].cores {
                    c.wakes = [None; Timer::ALL];
                }
                self.deaths.paused(i, self.now, len);
                self.deaths.paused(i, self.now + len, len);
                let epoch = self.members[i].epoch;
                self.schedule(self.now + len, Ev::Resume { node: i, epoch });
            }
            Action::Cut { a, b } => {
                if let (Some(a), Some(b)) = (self.target(a), self.target(b)) {
                    self.relink(|l| l.cut(a, b));
                }
            }
            Action::Isolate { node } => {
                if let Some(i) = self.target(node) {
                    self.relink(|l| l.isolate(i));
                }
            }
            Action::Split { region, groups } => {
                let members = &self.regions[*region];
                let groups: Vec<Vec<usize>> = groups
                    .iter()
                    .map(|g| g.iter().map(|&k| members[k]).collect())
                    .collect();
                let listed: BTreeSet<usize> = groups.iter().flatten().copied().collect();
                let others: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|m| !listed.contains(m))
                    .collect();
                self.splits += 1;
                let tag = self.splits;
                self.relink(|l| l.split(tag, &groups, &others));
            }
            Action::Heal => self.relink(Links::heal),
            Action::Skew { node, ms } => {
                if let Some(i) = self.target(node) {
                    self.members[i].skew_ms = *ms;
                }
            }
            Action::Record {
                node,
                changes,
                for_s,
            } => {
                if let Some(i) = self.target(node) {
                    // As detectors batch what one reading finds: ten readings a second.
                    let readings = ((for_s * 10.0).ceil() as u64).clamp(1, *changes);
                    let size = changes.div_ceil(readings);
                    let batches = changes.div_ceil(size);
                    let every_us = us(for_s * 1000.0) / batches;
                    let ev = Ev::Change {
                        node: i,
                        size: size as usize,
                        left: batches,
                        every_us,
                    };
                    self.schedule(self.now, ev);
                }
            }
            Action::ForgeAcks { node } => {
                if let Some(i) = self.target(node) {
                    self.forge_acks(i);
                }
            }
        }
    }

    /// Member `i` gossips acknowledgements of every region member's spikes to the end,
    /// in a term above the one it knows: what a hostile peer can send.
    fn forge_acks(&mut self, i: usize) {
        let Some(c) = &self.members[i].cores else {
            return;
        };
        let term = c.gov.master().map_or(0, |(_, t)| t) + 1;
        let region = self.members[i].region;
        let marks = self.regions[region]
            .iter()
            .map(|&j| (self.members[j].peer.clone(), u64::MAX))
            .collect();
        let acks = wire::Acks {
            region: format!("r{region}"),
            term,
            marks,
        };
        self.gossip_acks(i, acks);
    }

    /// Changes the links; every member whose links changed is disturbed, connections
    /// across new cuts are noticed closed after `cut_detect_ms`, healed ones reopen.
    fn relink(&mut self, change: impl FnOnce(&mut Links)) {
        let before: Vec<Vec<bool>> = self
            .regions
            .iter()
            .map(|r| {
                r.iter()
                    .flat_map(|&a| r.iter().map(move |&b| (a, b)))
                    .map(|(a, b)| self.links.linked(a, b))
                    .collect()
            })
            .collect();
        change(&mut self.links);
        let notice = us(self.sc.network.cut_detect_ms);
        for (r, was) in before.iter().enumerate() {
            let members = self.regions[r].clone();
            let n = members.len();
            for (x, &a) in members.iter().enumerate() {
                for (y, &b) in members.iter().enumerate().skip(x + 1) {
                    let now_linked = self.links.linked(a, b);
                    if was[x * n + y] == now_linked {
                        continue;
                    }
                    self.deaths.relinked(a, b, self.now);
                    if now_linked {
                        for (p, q) in [(a, b), (b, a)] {
                            if self.up(p) && self.up(q) {
                                let d = self.net.delay_us(&mut self.rng, true);
                                self.schedule(
                                    self.now + d,
                                    Ev::Deliver {
                                        to: p,
                                        msg: Msg::Connected { peer: q },
                                    },
                                );
                            }
                        }
                    } else {
                        self.schedule(self.now + notice, Ev::CutNoticed { a, b });
                    }
                }
            }
        }
    }

    fn crash(&mut self, i: usize) {
        if !self.up(i) {
            return;
        }
        let region = self.members[i].region;
        if let Some(term) = self.members[i].cores.as_ref().and_then(|c| c.gov.leading()) {
            self.failover_from[region] = Some((self.now, term));
        }
        self.crashes += 1;
        let m = &mut self.members[i];
        m.cores = None;
        m.epoch += 1;
        m.crashed_at = Some(self.now);
        m.paused_until = None;
        m.backlog.clear();
        m.detected_by.clear();
        let epoch = m.epoch;
        self.deaths.disturb(i, self.now);
        // Its connections close: peers that can reach it notice at once.
        for k in 0..self.regions[region].len() {
            let j = self.regions[region][k];
            if j != i && self.up(j) && self.links.linked(i, j) {
                let d = self.net.delay_us(&mut self.rng, true);
                self.schedule(
                    self.now + d,
                    Ev::Deliver {
                        to: j,
                        msg: Msg::Disconnected { peer: i },
                    },
                );
            }
        }
        let bound = self.deaths.bound_us();
        self.schedule(
            self.now + bound,
            Ev::CheckDetected {
                node: i,
                epoch,
                crashed_at: self.now,
            },
        );
    }

    /// At the end of a run whose last disturbance is at least `applied_within_ms` old:
    /// every spike a running member published before then was applied by a master.
    fn check_settled(&mut self) {
        let within = self.sc.invariants.applied_within_ms * 1000;
        let last_fault = self
            .sc
            .faults
            .iter()
            .filter(|f| f.action.disturbs())
            .map(|f| us(f.at_s * 1000.0))
            .max()
            .unwrap_or(0);
        if self.now < within || last_fault + within > self.now {
            return;
        }
        let before = self.now - within;
        for r in 0..self.regions.len() {
            let master = self.master_of(r);
            for k in 0..self.regions[r].len() {
                let o = self.regions[r][k];
                if !self.up(o) || self.paused(o) || master.is_some_and(|m| !self.links.linked(o, m))
                {
                    continue;
                }
                if let Err(v) = self.spikes.settled(self.now, o, before) {
                    self.violate(v);
                    return;
                }
            }
        }
    }

    /// In every region left undisturbed for `reassign_within_ms`, with a running master:
    /// every work item owned by one running member (see [`Owners`]).
    fn check_owners(&mut self) {
        let within = self.sc.invariants.reassign_within_ms * 1000;
        for r in 0..self.regions.len() {
            let members = &self.regions[r];
            let recent = |i: &usize| {
                self.deaths
                    .disturbed_at(*i)
                    .is_some_and(|d| d + within > self.now)
            };
            if members.iter().any(recent) {
                continue;
            }
            let Some(m) = self.master_of(r).filter(|&m| !self.paused(m)) else {
                continue;
            };
            let Some(state) = self.members[m].cores.as_ref().and_then(|c| c.gov.state()) else {
                continue;
            };
            let running: BTreeSet<node::Id> = members
                .iter()
                .filter(|&&i| self.up(i))
                .map(|&i| self.members[i].peer.clone())
                .collect();
            let reachable: BTreeSet<node::Id> = members
                .iter()
                .filter(|&&i| self.up(i) && (i == m || self.links.linked(i, m)))
                .map(|&i| self.members[i].peer.clone())
                .collect();
            let result = self
                .owners
                .check(self.now, r, &state.assignments, &reachable, &running);
            if let Err(v) = result {
                self.violate(v);
                return;
            }
        }
    }

    /// Every running peer of the crashed member's region must hold it dead by now.
    fn check_detected(&mut self, node: usize, crashed_at: u64) {
        let peer = self.members[node].peer.clone();
        let region = self.members[node].region;
        for k in 0..self.regions[region].len() {
            let j = self.regions[region][k];
            if j == node || !self.up(j) || self.paused(j) || !self.links.linked(j, node) {
                continue;
            }
            let status = self.members[j]
                .cores
                .as_ref()
                .and_then(|c| c.view.get(&peer))
                .map(|m| m.status);
            if let Err(v) = self.deaths.detected(self.now, crashed_at, j, node, status) {
                self.violate(v);
                return;
            }
        }
    }

    fn report(mut self, wall_s: f64, cpu_ms: f64) -> Report {
        let sim_s = self.now as f64 / 1e6;
        let n = self.members.len();
        let counted_s = self.now.saturating_sub(self.measured_from) as f64 / 1e6;
        let per_s = |x: u64| {
            if counted_s > 0.0 {
                x as f64 / counted_s
            } else {
                0.0
            }
        };
        let msgs: Vec<f64> = self.members.iter().map(|m| per_s(m.recv_msgs)).collect();
        let bytes: Vec<f64> = self.members.iter().map(|m| per_s(m.recv_bytes)).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let (d, f) = (self.detect_us.len(), self.failover_us.len());
        let h = self.hang_us.len();
        let mut masters: BTreeMap<usize, ()> = BTreeMap::new();
        for r in 0..self.regions.len() {
            if self.master_of(r).is_some() {
                masters.insert(r, ());
            }
        }
        Report {
            seed: self.sc.seed,
            nodes: n,
            regions: self.regions.len(),
            simulated_s: sim_s,
            sim_s,
            wall_s: round(wall_s),
            speed: round(sim_s / wall_s.max(1e-9)),
            events: self.events,
            crashes: self.crashes,
            detect_samples: d,
            detect_p50_us: stats::quantile(&mut self.detect_us, 0.5),
            detect_p99_us: stats::quantile(&mut self.detect_us, 0.99),
            detect_max_us: stats::quantile(&mut self.detect_us, 1.0),
            hang_samples: h,
            hang_p50_us: stats::quantile(&mut self.hang_us, 0.5),
            hang_p99_us: stats::quantile(&mut self.hang_us, 0.99),
            hang_max_us: stats::quantile(&mut self.hang_us, 1.0),
            failover_samples: f,
            failover_p50_us: stats::quantile(&mut self.failover_us, 0.5),
            failover_p99_us: stats::quantile(&mut self.failover_us, 0.99),
            failover_max_us: stats::quantile(&mut self.failover_us, 1.0),
            msgs_per_node_s: round(mean(&msgs)),
            msgs_per_node_s_max: round(max(&msgs)),
            bytes_per_node_s: round(mean(&bytes)),
            bytes_per_node_s_max: round(max(&bytes)),
            raft_msgs: self.raft_msgs,
            heartbeats_sent: self.heartbeats,
            probes_sent: self.probes,
            member_pushes: self.pushes,
            spikes_published: self.spikes.published_total,
            spikes_applied: self.spikes.applied_total,
            spikes_reapplied: self.spikes.reapplied,
            replays_sent: self.replays,
            acks_refused: self.acks_refused,
            cpu_ms_per_sim_s: round(cpu_ms / sim_s.max(1e-9)),
            masters_elected: masters.len(),
            invariants_checked: self.masters.checked
                + self.deaths.checked
                + self.spikes.checked
                + self.owners.checked,
            violations: u64::from(self.violation.is_some()),
            violation: self.violation.as_ref().map(|v| v.to_string()),
        }
    }
}

/// A heartbeat to share among its receivers, and the size of its wire frame.
fn encoded(beat: Beat) -> Option<(Arc<Beat>, u64)> {
    let body = wire::Body::Heartbeat(Box::new(beat));
    let size = frame_size(&body);
    let wire::Body::Heartbeat(beat) = body else {
        return None;
    };
    Some((Arc::from(beat), size))
}

/// The size of `body`'s wire frame (what a receiver is charged).
fn frame_size(body: &impl serde::Serialize) -> u64 {
    wire::encode(body).map_or(0, |b| b.len()) as u64
}

fn health(view: &View) -> Health {
    let c = view.counts();
    Health {
        peers_alive: c.alive,
        peers_suspect: c.suspect,
        peers_dead: c.dead,
        load1: None,
    }
}
