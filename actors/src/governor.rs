//! The region governor: every decision about a region's authority, as a sans-IO state
//! machine around the region's consensus core ([`Region`]).
//!
//! It owns, for one member of one region:
//! - **founding and joining**: a member without consensus state joins the group its
//!   peers announce, or founds one together with its peers (see below);
//! - **the consensus clock**: the Raft core is ticked every [`Config::tick`];
//! - **governance, while this member is master**: deaths and returns, name bindings,
//!   work assignment (rendezvous hashing, [`crate::assign`]), and the voter set (every
//!   live member a learner, eligible learners promoted up to `max_voters`, a voter dead
//!   for `replace_after` removed), one membership change at a time;
//! - **duplicate names**: a name belongs to the first peer id the region's log bound it
//!   to; a second peer claiming it is refused (kept out of consensus until renamed);
//! - **why there is no master** ([`NoMaster`]), and **whether this node must come back
//!   as a new incarnation** (the region's log holds it dead, or live peers keep listing
//!   it dead).
//!
//! It reads no clock and does no I/O. The runtime feeds it:
//! - [`Governor::handle_members`] whenever the membership view of the region changes,
//! - [`Governor::handle_raft`] for each consensus message a peer sends,
//! - [`Governor::propose`] for commands of its own (approvals),
//! - [`Governor::handle_timeout`] when [`Governor::poll_timeout`] is due,
//!
//! and after each call drains [`Governor::poll_output`] until it returns `None`, acting on
//! the outputs **in order**: an [`Output::Save`] must be durable before any later
//! [`Output::Send`] leaves. What to write is [`Governor::take_save`]: the deltas folded
//! into [`Governor::durable`] since the last save, to append, or (after a snapshot
//! compacted the log, a founding or a recovery) the whole image, to write anew.
//!
//! The region's state is the consensus core's ([`Region::state`]); after a restart, or
//! when the master's snapshot replaces this member's log, it arrives whole
//! ([`Output::Installed`]) and the commands after it follow as [`Output::Committed`],
//! each log index at most once.
//!
//! Consensus identity is the peer id: a member's Raft id is [`region::raft_id`] of its
//! libp2p peer id, so no name, duplicated or not, can take over another member's vote.
//!
//! ## Founding
//!
//! With `voters` named in settings, the region is founded by exactly those names once
//! every one of them is seen (their peer ids make the Raft ids). Without, a member waits
//! `bootstrap` for an existing group to be announced; then, once at least
//! `bootstrap_expect` eligible members see each other (the highest `expect` any of them
//! announces wins), each one proposes the same founding set (the oldest eligible members,
//! up to `max_voters`) in its heartbeats, and the set is founded when every member of it
//! has announced exactly that set for `stable`. All founders are voters from the start,
//! so that the death of any one of them never leaves the others without a master. A
//! member that sees an announced group joins it instead of founding.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::membership::Status as Liveness;
use crate::region::{
    self, Command, Committed, Durable, Image, Persist, Region, RegionState, Status,
};
use crate::{assign, node};

/// Deltas appended to the stored image before the governor asks for a rewrite anyway
/// (without snapshots, votes and commit positions would grow the file without bound).
const MAX_APPENDED: usize = 4096;

/// One member of the region (other than this node), as the membership view knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub role: String,
    pub peer: node::Id,
    pub status: Liveness,
    pub incarnation: u64,
    /// The founding voters of the group it belongs to (empty: none yet).
    pub founders: Vec<u64>,
    /// Whether it may become a voter.
    pub eligible: bool,
    /// The founding set it proposes (empty: none).
    pub proposal: Vec<u64>,
    /// The `bootstrap_expect` it was started with (0: unknown).
    pub expect: u32,
}

pub use crate::heartbeat::Facts;

/// Settings of the governor.
#[derive(Debug, Clone)]
pub struct Config {
    pub region: String,
    /// This node's peer id, name and incarnation at start.
    pub own: node::Id,
    pub name: String,
    pub incarnation: u64,
    /// Whether this node may become a voter.
    pub eligible: bool,
    /// Names of the founding voters; empty: found by `bootstrap_expect`.
    pub voters: Vec<String>,
    /// Eligible members that must see each other before a region is founded.
    pub bootstrap_expect: u32,
    /// How long to listen for an existing group before founding one.
    pub bootstrap: Duration,
    /// How long a founding set must be proposed by all its members before it is founded.
    pub stable: Duration,
    pub max_voters: usize,
    /// A voter dead this long is removed from the voters.
    pub replace_after: Duration,
    /// Names of the service probes to assign (`probe:<name>` work items).
    pub probes: Vec<String>,
    /// The consensus clock.
    pub tick: Duration,
    /// How often a master reviews deaths, returns, names, assignments and voters.
    pub govern_every: Duration,
    /// After proposing, a master waits this long for the commands to commit before it
    /// proposes again (unless they commit sooner).
    pub quiet: Duration,
    /// Minimum time between two reincarnations asked for by peers' listings.
    pub reincarnate_every: Duration,
    pub consensus: region::Config,
}

impl Config {
    /// Defaults for everything but the identity and the region.
    pub fn new(region: &str, own: node::Id, name: &str, incarnation: u64) -> Config {
        Config {
            region: region.into(),
            own,
            name: name.into(),
            incarnation,
            eligible: true,
            voters: Vec::new(),
            bootstrap_expect: 3,
            bootstrap: Duration::from_secs(3),
            stable: Duration::from_secs(2),
            max_voters: 5,
            replace_after: Duration::from_secs(30),
            probes: Vec::new(),
            tick: Duration::from_millis(100),
            govern_every: Duration::from_secs(1),
            quiet: Duration::from_secs(2),
            reincarnate_every: Duration::from_secs(10),
            consensus: region::Config::default(),
        }
    }
}

/// Why this member knows no master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoMaster {
    /// No group exists yet: `have` of `expect` founders see each other.
    WaitingForFounders { have: usize, expect: usize },
    /// A quorum of voters is alive: an election is under way.
    Electing,
    /// Fewer than a quorum of voters are alive; these are gone.
    QuorumLost { missing_voters: Vec<String> },
    /// An operator recovered the region (`fleetmesh region recover`); the survivors have
    /// not elected a master yet.
    Recovering,
    /// This node's name belongs to another peer: it takes no part until renamed.
    DuplicateName { name: String, holder: node::Id },
    /// Consensus stopped (its state could not be made durable).
    Stopped { why: String },
}

/// Work for the runtime, in the order it must be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write [`Governor::durable`] durably now, before any later `Send`.
    Save,
    /// A consensus message for a peer.
    Send { to: node::Id, bytes: Vec<u8> },
    /// A command the region committed, in log order.
    Committed(Committed),
    /// The region's state as of `state.applied`, whole: restored from a snapshot at
    /// start, or the master's snapshot installed. Commands up to that index do not come
    /// as `Committed`; later ones do.
    Installed(Box<Image>),
    /// The master this member knows changed: `(peer, term)`, and whether it is this node.
    Master {
        master: Option<(node::Id, u64)>,
        leading: bool,
    },
    /// What heartbeats must announce from now on.
    Facts(Facts),
    /// Founded (or joined) the region's consensus with these founders.
    Joined { founders: Vec<u64>, founder: bool },
    /// Two live peers claim one name. `holder` owns it (bound first); `claimant` is
    /// refused. Raised once per claimant; `by_master` is set on the master's report.
    DuplicateName {
        name: String,
        holder: node::Id,
        claimant: node::Id,
        by_master: bool,
    },
    /// The region holds this incarnation dead (it was cut off): start a new one and
    /// give it to [`Governor::set_incarnation`].
    Reincarnate,
    /// Peers announce a different `bootstrap_expect`; the highest wins.
    ExpectDiffers { ours: u32, highest: u32 },
}

/// The inputs of the duplicate-name check: the members pushed (their generation), the
/// log's applied index (names bound), founding, this process's incarnation, founders.
#[derive(Debug)]
struct DupInputs {
    members: u64,
    applied: Option<u64>,
    founded: bool,
    incarnation: u64,
    founders: Vec<u64>,
}

/// What the master a governor announces depends on: the core's (leader, term), whether
/// this node leads, and the generation of the members (their names).
type MasterKey = (Option<(Option<u64>, u64)>, bool, u64);

/// One member's governor.
pub struct Governor {
    config: Config,
    core: Option<Region>,
    durable: Durable,
    stopped: Option<String>,
    out: VecDeque<Output>,
    started: Instant,
    next_tick: Instant,
    next_govern: Instant,
    quiet_until: Option<Instant>,
    members: Vec<Member>,
    held_dead_by: usize,
    /// Raft id -> (name, peer) of every member known (hashed: looked up for every
    /// consensus message sent).
    names: HashMap<u64, (String, node::Id)>,
    facts: Facts,
    agreed_since: Option<(Vec<u64>, Instant)>,
    dead_since: BTreeMap<u64, Instant>,
    last_master: Option<(Option<(node::Id, u64)>, bool)>,
    /// What [`Governor::announce_master`] last looked at.
    master_key: Option<MasterKey>,
    duplicates_told: BTreeSet<(String, node::Id)>,
    /// Peers claiming this node's name, with the holder this node last reported.
    twins_told: BTreeMap<node::Id, node::Id>,
    /// Bumped at every [`Governor::handle_members`].
    members_gen: u64,
    /// Which of `members` claim this node's name (checked at every tick before joining).
    namesakes: Vec<usize>,
    /// The founding candidates, oldest first: indices into `members`, `None` for this
    /// node (see [`Governor::candidates`]).
    candidates: Vec<Option<usize>>,
    /// What the duplicate-name check last looked at: it runs again only when one of its
    /// inputs moved, not at every consensus message (a walk over the region's names).
    dups_seen: Option<DupInputs>,
    /// The work assignment of the last round, updated by what changed since.
    assignment: assign::Assignment,
    expect_told: u32,
    last_reincarnation: Option<Instant>,
    unroutable: u64,
    /// Highest log index handed out as [`Output::Committed`].
    emitted: u64,
    /// The log ends with an operator's recovery not committed yet.
    recovering: bool,
    /// Deltas folded into `durable` since the last [`Governor::take_save`].
    unsaved: Vec<Persist>,
    /// The next save must write `durable` whole.
    rewrite: bool,
    /// Deltas appended since the image was last written whole.
    appended: usize,
}

/// What an [`Output::Save`] must write to bring the stored image up to
/// [`Governor::durable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// Write the image whole, replacing what is stored (atomically).
    Whole,
    /// Append these deltas, in order, to what is stored (empty: nothing to do).
    Append(Vec<Persist>),
}

impl Save {
    /// Brings `disk` (what earlier saves wrote; `None`: nothing yet) up to `image` (the
    /// governor's [`Governor::durable`]) as a runtime writing its file does: replaced
    /// whole, or the deltas folded in order. What a crash keeps is exactly this.
    pub fn write_to(
        self,
        disk: &mut Option<Durable>,
        image: &Durable,
    ) -> Result<(), region::Error> {
        match self {
            Save::Whole => *disk = Some(image.clone()),
            Save::Append(deltas) => {
                if deltas.is_empty() {
                    return Ok(());
                }
                let Some(d) = disk.as_mut() else {
                    return Err(region::Error::Durable(
                        "deltas appended before any image was written whole".into(),
                    ));
                };
                for delta in &deltas {
                    d.apply(delta)?;
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor")
            .field("region", &self.config.region)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Governor {
    /// A member starting at `now`, from its durable state if it has one.
    pub fn new(config: Config, stored: Option<Durable>, now: Instant) -> Governor {
        let own_id = region::raft_id(&config.own);
        let mut names = HashMap::new();
        names.insert(own_id, (config.name.clone(), config.own.clone()));
        let mut gov = Governor {
            facts: Facts {
                eligible: config.eligible,
                expect: config.bootstrap_expect,
                ..Facts::default()
            },
            core: None,
            durable: Durable::default(),
            stopped: None,
            out: VecDeque::new(),
            started: now,
            next_tick: now + config.tick,
            next_govern: now,
            quiet_until: None,
            members: Vec::new(),
            held_dead_by: 0,
            names,
            agreed_since: None,
            dead_since: BTreeMap::new(),
            last_master: None,
            duplicates_told: BTreeSet::new(),
            twins_told: BTreeMap::new(),
            members_gen: 0,
            dups_seen: None,
            master_key: None,
            namesakes: Vec::new(),
            candidates: Vec::new(),
            assignment: assign::Assignment::default(),
            expect_told: 0,
            last_reincarnation: None,
            unroutable: 0,
            emitted: 0,
            recovering: false,
            unsaved: Vec::new(),
            rewrite: false,
            appended: 0,
            config,
        };
        if let Some(d) = stored {
            match Region::restore(own_id, d.clone(), &gov.config.consensus) {
                Ok(mut core) => {
                    if core.status().voters == [own_id] {
                        // The only voter: nobody else can be master, no need to wait.
                        let _ = core.campaign();
                    }
                    gov.recovering = d.entries.last().is_some_and(|e| {
                        e.index > d.vote.commit
                            && rmp_serde::from_slice::<Command>(&e.data)
                                .is_ok_and(|c| matches!(c, Command::Recover { .. }))
                    });
                    gov.facts.founders = d.founders.clone();
                    gov.durable = d;
                    gov.core = Some(core);
                }
                Err(e) => gov.stopped = Some(format!("stored consensus state refused: {e}")),
            }
        }
        gov.order_candidates();
        gov.drain(now);
        gov
    }

    /// The membership view of the region changed: its members (other than this node),
    /// and how many live peers keep listing this node dead.
    pub fn handle_members(&mut self, now: Instant, members: Vec<Member>, held_dead_by: usize) {
        for m in &members {
            let known = self.names.entry(region::raft_id(&m.peer));
            let known = known.or_insert_with(|| (m.name.clone(), m.peer.clone()));
            if known.0 != m.name || known.1 != m.peer {
                *known = (m.name.clone(), m.peer.clone());
            }
        }
        self.namesakes = (members.iter().enumerate())
            .filter(|(_, m)| m.name == self.config.name && m.peer != self.config.own)
            .map(|(i, _)| i)
            .collect();
        self.members = members;
        self.members_gen += 1;
        self.order_candidates();
        self.held_dead_by = held_dead_by;
        self.notice_expect();
        self.found_or_join(now);
        if self.leading().is_some() {
            // A death or a return is acted on now; this is the round.
            self.next_govern = now + self.config.govern_every;
            self.govern(now);
        }
        self.check_incarnation(now);
        self.drain(now);
    }

    /// A consensus message the network says `from` sent. Bytes that do not decode, that
    /// claim another author than the sender (a peer forging a voter's vote), or that no
    /// honest member sends, are refused (count it against the sender); nothing changes
    /// then.
    pub fn handle_raft(
        &mut self,
        now: Instant,
        from: &node::Id,
        bytes: &[u8],
    ) -> Result<(), region::Error> {
        let Some(core) = &mut self.core else {
            return Ok(());
        };
        let r = core.step_from(region::raft_id(from), bytes);
        self.drain(now);
        r
    }

    /// Proposes a command of the runtime's own (only the master may).
    pub fn propose(&mut self, now: Instant, cmd: &Command) -> Result<(), region::Error> {
        let Some(core) = &mut self.core else {
            return Err(region::Error::NotLeader { leader: None });
        };
        let r = core.propose(cmd);
        self.drain(now);
        r
    }

    /// Runs whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_tick {
            if let Some(core) = &mut self.core {
                core.tick();
            }
            // After a stall, tick once and carry on from now: a burst of ticks would
            // make every follower campaign at once.
            self.next_tick = if now.duration_since(self.next_tick) > self.config.tick {
                now + self.config.tick
            } else {
                self.next_tick + self.config.tick
            };
        }
        self.found_or_join(now);
        if now >= self.next_govern {
            self.next_govern = now + self.config.govern_every;
            self.govern(now);
        }
        self.check_incarnation(now);
        self.drain(now);
    }

    /// When [`Governor::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped.is_some() {
            return None;
        }
        let mut next = self.next_tick;
        if self.core.is_some() && self.leading().is_some() {
            next = next.min(self.next_govern);
        }
        Some(next)
    }

    /// The next piece of work, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The image [`Output::Save`] makes durable.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// How to make [`Governor::durable`] durable, given what earlier saves wrote: the
    /// deltas since then, or the whole image when a snapshot compacted the log (or the
    /// image was replaced, or many deltas piled up). Call once per [`Output::Save`].
    pub fn take_save(&mut self) -> Save {
        let deltas = std::mem::take(&mut self.unsaved);
        if self.rewrite || self.appended + deltas.len() > MAX_APPENDED {
            self.rewrite = false;
            self.appended = 0;
            return Save::Whole;
        }
        self.appended += deltas.len();
        Save::Append(deltas)
    }

    /// The whole image replaced (founding, recovery): the next save writes it whole.
    fn replaced(&mut self) {
        self.unsaved.clear();
        self.rewrite = true;
    }

    /// The state could not be made durable: stop taking part (sending votes or entries
    /// that are not durable could elect two masters after a crash).
    pub fn stop(&mut self, why: String) {
        self.core = None;
        self.stopped = Some(why);
        self.out.clear();
        self.announce_master();
    }

    /// This node came back as incarnation `n`.
    pub fn set_incarnation(&mut self, now: Instant, n: u64) {
        self.config.incarnation = n;
        self.last_reincarnation = Some(now);
        self.order_candidates();
    }

    /// The consensus view, if this node takes part.
    pub fn status(&self) -> Option<Status> {
        self.core.as_ref().map(Region::status)
    }

    /// Snapshots this member did not take because the region's state was over the
    /// snapshot bound (its log then grows until the state shrinks).
    pub fn oversized(&self) -> u64 {
        self.core.as_ref().map_or(0, Region::oversized)
    }

    /// The region's committed state (empty while this node takes no part).
    pub fn state(&self) -> Option<&RegionState> {
        self.core.as_ref().map(Region::state)
    }

    /// Raft id -> (name, peer) of every member known: seen in the membership view, or
    /// bound to its name in the region's log (a member gone before this node started).
    pub fn names(&self) -> BTreeMap<u64, (String, node::Id)> {
        let mut all: BTreeMap<u64, (String, node::Id)> = self
            .state()
            .map(|s| {
                s.names
                    .iter()
                    .map(|(n, p)| (region::raft_id(p), (n.clone(), p.clone())))
                    .collect()
            })
            .unwrap_or_default();
        all.extend(self.names.iter().map(|(k, v)| (*k, v.clone())));
        all
    }

    /// The region's members (other than this node) as last pushed.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// What heartbeats announce now.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Founders of this node's group (empty: none yet).
    pub fn founders(&self) -> &[u64] {
        &self.durable.founders
    }

    /// Messages to members whose peer id is not known.
    pub fn unroutable(&self) -> u64 {
        self.unroutable
    }

    /// The master this node knows, as (peer, term).
    pub fn master(&self) -> Option<(node::Id, u64)> {
        let (leader, term) = self.core.as_ref()?.leader();
        let peer = self.names.get(&leader?)?.1.clone();
        Some((peer, term))
    }

    /// The term this node leads, if it is the master.
    pub fn leading(&self) -> Option<u64> {
        self.core.as_ref()?.leading()
    }

    /// Live peers claiming a name bound to another peer (the master refuses them).
    pub fn refused(&self) -> Vec<(String, node::Id, node::Id)> {
        let Some(state) = self.state() else {
            return Vec::new();
        };
        self.members
            .iter()
            .filter(|m| is_live(m.status))
            .filter_map(|m| {
                let holder = state.names.get(&m.name)?;
                (*holder != m.peer).then(|| (m.name.clone(), holder.clone(), m.peer.clone()))
            })
            .collect()
    }

    /// Why this node knows no master (`None` when it knows one).
    pub fn no_master(&self) -> Option<NoMaster> {
        if let Some(why) = &self.stopped {
            return Some(NoMaster::Stopped { why: why.clone() });
        }
        if let Some((name, holder)) = self.own_name_taken() {
            return Some(NoMaster::DuplicateName { name, holder });
        }
        let Some(status) = self.status() else {
            let (have, expect) = self.founding_progress();
            return Some(NoMaster::WaitingForFounders { have, expect });
        };
        if status.leader.is_some() {
            return None;
        }
        let live: BTreeSet<u64> = self
            .members
            .iter()
            .filter(|m| is_live(m.status))
            .map(|m| region::raft_id(&m.peer))
            .chain(std::iter::once(status.id))
            .collect();
        let missing: Vec<u64> = status
            .voters
            .iter()
            .copied()
            .filter(|v| !live.contains(v))
            .collect();
        if status.voters.len() - missing.len() < status.voters.len() / 2 + 1 {
            let names = self.names();
            let missing_voters = missing
                .iter()
                .map(|v| names.get(v).map_or_else(|| v.to_string(), |n| n.0.clone()))
                .collect();
            return Some(NoMaster::QuorumLost { missing_voters });
        }
        if self.recovering {
            return Some(NoMaster::Recovering);
        }
        Some(NoMaster::Electing)
    }

    // --- observations -----------------------------------------------------------------

    /// The members other than this node that claim its name.
    fn namesakes(&self) -> impl Iterator<Item = &Member> {
        self.namesakes.iter().map(|i| &self.members[*i])
    }

    fn notice_duplicates(&mut self) {
        let (members, applied) = (self.members_gen, self.state().map(|s| s.applied));
        let (founded, incarnation) = (self.core.is_some(), self.config.incarnation);
        if self.dups_seen.as_ref().is_some_and(|d| {
            (d.members, d.applied, d.founded, d.incarnation)
                == (members, applied, founded, incarnation)
                && d.founders == self.durable.founders
        }) {
            return;
        }
        self.dups_seen = Some(DupInputs {
            members,
            applied,
            founded,
            incarnation,
            founders: self.durable.founders.clone(),
        });
        let own = &self.config.own;
        let twins: Vec<node::Id> = self
            .namesakes()
            .filter(|m| is_live(m.status))
            .map(|m| m.peer.clone())
            .collect();
        let taken = self.own_name_taken().map(|(_, holder)| holder);
        for twin in twins {
            let (holder, claimant) = match &taken {
                Some(holder) => (holder.clone(), own.clone()),
                None => (own.clone(), twin.clone()),
            };
            // Told once per twin, and again if the holder turns out to be another (the
            // log bound the name after the twin was first seen).
            if self.twins_told.get(&twin) == Some(&holder) {
                continue;
            }
            self.twins_told.insert(twin, holder.clone());
            self.out.push_back(Output::DuplicateName {
                name: self.config.name.clone(),
                holder,
                claimant,
                by_master: false,
            });
        }
    }

    fn notice_expect(&mut self) {
        let highest = u32::try_from(self.expect()).unwrap_or(u32::MAX);
        if highest != self.config.bootstrap_expect && highest != self.expect_told {
            self.expect_told = highest;
            self.out.push_back(Output::ExpectDiffers {
                ours: self.config.bootstrap_expect,
                highest,
            });
        }
    }

    fn check_incarnation(&mut self, now: Instant) {
        let recently = self
            .last_reincarnation
            .is_some_and(|t| now.duration_since(t) < self.config.reincarnate_every);
        if recently {
            return;
        }
        let in_log = self
            .state()
            .and_then(|s| s.dead.get(&self.config.own))
            .is_some_and(|d| *d >= self.config.incarnation);
        if in_log || self.held_dead_by > 0 {
            self.last_reincarnation = Some(now);
            self.out.push_back(Output::Reincarnate);
        }
    }

    // --- draining ---------------------------------------------------------------------

    /// Moves what the core produced into the output queue: persist first, then send,
    /// then what committed, then a changed master.
    fn drain(&mut self, now: Instant) {
        let Some(core) = &mut self.core else {
            self.notice_duplicates();
            self.announce_master();
            return;
        };
        let changes = core.membership_changes();
        let out = core.poll();
        let membership_moved = out.installed.is_some() || core.membership_changes() != changes;
        if let Some(p) = out.persist {
            if let Err(e) = self.durable.apply(&p) {
                let why = format!("consensus state could not be folded: {e}");
                self.stop(why);
                return;
            }
            // A snapshot compacts: the stored image is written anew, without the log
            // it covers.
            self.rewrite |= p.snapshot.is_some();
            if !self.rewrite {
                self.unsaved.push(p);
            }
            self.out.push_back(Output::Save);
        }
        for (to, bytes) in out.messages {
            match self.names.get(&to) {
                Some((_, peer)) => self.out.push_back(Output::Send {
                    to: peer.clone(),
                    bytes,
                }),
                None => self.unroutable += 1,
            }
        }
        if let Some(image) = out.installed
            && image.state.applied > self.emitted
        {
            self.emitted = image.state.applied;
            // The log that ended with an uncommitted recovery was replaced.
            self.recovering = false;
            self.out.push_back(Output::Installed(image));
        }
        let committed = !out.committed.is_empty();
        for c in out.committed {
            // A member rebuilt by a recovery applies its log again: once is enough.
            if c.index <= self.emitted {
                continue;
            }
            self.emitted = c.index;
            if let Command::Recover { .. } = &c.command {
                self.recovering = false;
            }
            self.out.push_back(Output::Committed(c));
        }
        self.recover(now);
        if committed {
            self.quiet_until = None;
        }
        // A membership change applied: the next one need not wait for the next round.
        if membership_moved && self.leading().is_some() {
            self.next_govern = self.next_govern.min(now);
        }
        // What committed, or a join, may change who holds this node's name.
        self.notice_duplicates();
        self.announce_master();
    }

    /// The log applied an operator's recovery: from its entry on, its voters vote.
    fn recover(&mut self, now: Instant) {
        let Some((index, voters)) = self.core.as_mut().and_then(Region::take_recovery) else {
            return;
        };
        let mut sorted = voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        self.durable = self.durable.recovered(index, &voters);
        self.replaced();
        self.out.push_back(Output::Save);
        if self
            .status()
            .is_some_and(|s| s.voters == sorted && s.learners.is_empty())
        {
            // Already this configuration (the member the recovery was written on).
            return;
        }
        match Region::restore(self.own_id(), self.durable.clone(), &self.config.consensus) {
            Ok(core) => {
                self.core = Some(core);
                self.drain(now);
            }
            Err(e) => self.stop(format!("cannot apply the region's recovery: {e}")),
        }
    }

    fn announce_master(&mut self) {
        // What the master depends on: the core's leader and term, whether this node
        // leads, and the names of the members (pushed with them). Asked at every step.
        let key = (
            self.core.as_ref().map(Region::leader),
            self.leading().is_some(),
            self.members_gen,
        );
        if self.master_key == Some(key) {
            return;
        }
        self.master_key = Some(key);
        let now = (self.master(), self.leading().is_some());
        if self.last_master.as_ref() != Some(&now) {
            self.last_master = Some(now.clone());
            self.out.push_back(Output::Master {
                master: now.0,
                leading: now.1,
            });
        }
    }
}

fn is_live(s: Liveness) -> bool {
    matches!(s, Liveness::Alive | Liveness::Suspect)
}

mod founding;
mod govern;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
