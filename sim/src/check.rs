//! The invariants checked during every run. Each checker is fed what happened (who leads
//! which term, who declared whom dead, who crashed and when) and answers with a
//! [`Violation`] when the history breaks its rule; the engine stops the run at the first.
//!
//! The checkers hold no core: they judge facts the engine reads off the real cores, so
//! the tests below can feed them deliberately broken histories and watch them fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleetmesh_actors::membership::Status;
use fleetmesh_actors::node;

/// A broken invariant, at a simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub at_us: u64,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {:.6} s: {}", self.at_us as f64 / 1e6, self.what)
    }
}

/// Never two masters of one region in one term.
#[derive(Debug, Default)]
pub struct Masters {
    /// The first member seen leading each (region, term).
    seen: BTreeMap<(usize, u64), usize>,
    pub checked: u64,
}

impl Masters {
    /// Member `node` of `region` leads `term` at `at_us`.
    pub fn observe(
        &mut self,
        at_us: u64,
        region: usize,
        term: u64,
        node: usize,
    ) -> Result<(), Violation> {
        self.checked += 1;
        let first = *self.seen.entry((region, term)).or_insert(node);
        if first == node {
            Ok(())
        } else {
            Err(Violation {
                at_us,
                what: format!(
                    "two masters of region {region} in term {term}: members {first} and {node}"
                ),
            })
        }
    }
}

/// Deaths: no live, undisturbed member declared dead; every crashed member declared dead
/// by every live, undisturbed peer of its region within a bound.
///
/// A member is *disturbed* when it starts, crashes, restarts, or is paused for longer than
/// `pause_exempt_us` (shorter pauses never excuse a death); a *pair* is disturbed when the
/// link between the two is cut or healed. For `settle_us` after a disturbance of either
/// side or of their link, a death declared between the two is not judged: a cut elsewhere
/// in the region excuses nothing between members that kept hearing each other. An
/// observer that was disturbed, or any of whose links changed, is not expected to have
/// detected a crash in that time.
#[derive(Debug)]
pub struct Deaths {
    settle_us: u64,
    bound_us: u64,
    pause_exempt_us: u64,
    disturbed: Vec<Option<u64>>,
    /// Per member: when one of its links last changed.
    relinked: Vec<Option<u64>>,
    /// Per pair (lower index first): when its link last changed.
    pairs: HashMap<(usize, usize), u64>,
    pub checked: u64,
}

impl Deaths {
    pub fn new(nodes: usize, settle_us: u64, bound_us: u64, pause_exempt_us: u64) -> Deaths {
        Deaths {
            settle_us,
            bound_us,
            pause_exempt_us,
            disturbed: vec![None; nodes],
            relinked: vec![None; nodes],
            pairs: HashMap::new(),
            checked: 0,
        }
    }

    /// How long after a crash every peer must hold it dead.
    pub fn bound_us(&self) -> u64 {
        self.bound_us
    }

    pub fn disturb(&mut self, node: usize, at_us: u64) {
        self.disturbed[node] = Some(at_us);
    }

    /// The link between `a` and `b` was cut or healed at `at_us`.
    pub fn relinked(&mut self, a: usize, b: usize, at_us: u64) {
        self.pairs.insert((a.min(b), a.max(b)), at_us);
        self.relinked[a] = Some(at_us);
        self.relinked[b] = Some(at_us);
    }

    /// When `node`, or one of its links, was last disturbed.
    pub fn disturbed_at(&self, node: usize) -> Option<u64> {
        self.disturbed[node].max(self.relinked[node])
    }

    /// A pause of `len_us` starting or ending at `at_us`: a disturbance only if long.
    pub fn paused(&mut self, node: usize, at_us: u64, len_us: u64) {
        if len_us > self.pause_exempt_us {
            self.disturb(node, at_us);
        }
    }

    fn settled(&self, node: usize, at_us: u64) -> bool {
        self.disturbed[node].is_none_or(|d| at_us >= d + self.settle_us)
    }

    /// `observer` declared `peer` dead at `at_us`; `reachable` says whether the peer runs
    /// and the link between the two is up (a partitioned pair may not hear each other,
    /// however long the partition lasts).
    pub fn declared_dead(
        &mut self,
        at_us: u64,
        observer: usize,
        peer: usize,
        reachable: bool,
    ) -> Result<(), Violation> {
        self.checked += 1;
        let pair = (observer.min(peer), observer.max(peer));
        let pair_settled = self
            .pairs
            .get(&pair)
            .is_none_or(|d| at_us >= d + self.settle_us);
        if reachable && pair_settled && self.settled(peer, at_us) && self.settled(observer, at_us) {
            return Err(Violation {
                at_us,
                what: format!(
                    "member {peer} declared dead by member {observer}, although it runs, is \
                     connected and was not paused"
                ),
            });
        }
        Ok(())
    }

    /// `bound_us` after `peer` crashed at `crashed_at_us` (and stayed down), `observer`
    /// (running) sees it as `status` (`None`: does not know it).
    pub fn detected(
        &mut self,
        at_us: u64,
        crashed_at_us: u64,
        observer: usize,
        peer: usize,
        status: Option<Status>,
    ) -> Result<(), Violation> {
        self.checked += 1;
        let disturbed = self
            .disturbed_at(observer)
            .is_some_and(|d| d + self.settle_us > crashed_at_us);
        match status {
            Some(Status::Dead) | None => Ok(()),
            Some(_) if disturbed => Ok(()),
            Some(s) => Err(Violation {
                at_us,
                what: format!(
                    "member {peer} crashed at {:.3} s but member {observer} still holds it {} \
                     {:.3} s later",
                    crashed_at_us as f64 / 1e6,
                    s.as_str(),
                    (at_us - crashed_at_us) as f64 / 1e6
                ),
            }),
        }
    }
}

/// Work: in a region left undisturbed long enough, every work item has one owner, and it
/// runs. The items are the audits of the members the master can reach (a member cut off
/// from it may be held dead, its audit gone with it); the owners are whatever the master's
/// committed state says ([`fleetmesh_actors::region::RegionState::assignments`], one owner
/// per item by construction).
#[derive(Debug, Default)]
pub struct Owners {
    pub checked: u64,
}

impl Owners {
    /// `assignments`: the master's committed owners; `reachable`: running members linked
    /// to the master, whose audits must be assigned; `running`: every running member.
    pub fn check(
        &mut self,
        at_us: u64,
        region: usize,
        assignments: &BTreeMap<String, node::Id>,
        reachable: &BTreeSet<node::Id>,
        running: &BTreeSet<node::Id>,
    ) -> Result<(), Violation> {
        let fail = |what: String| {
            Err(Violation {
                at_us,
                what: format!("region {region}: {what}"),
            })
        };
        for member in reachable {
            self.checked += 1;
            let item = format!("audit:{}", member);
            match assignments.get(&item) {
                None => return fail(format!("{item} has no owner")),
                Some(o) if o == member => return fail(format!("{item} is owned by its subject")),
                Some(_) => {}
            }
        }
        for (item, owner) in assignments {
            self.checked += 1;
            if !running.contains(owner) {
                return fail(format!(
                    "{item} is owned by {}, which is not running",
                    owner
                ));
            }
        }
        Ok(())
    }
}

/// Spikes: applied in order and at most once by each master, and never lost.
///
/// - **In order, once per master**: a member applies each origin's spikes in increasing
///   order and never one twice, for as long as its process lives (one ledger). The same
///   spike applied by two masters one after the other (the first applied it but failed
///   before its acknowledgement went out) is not a violation: it is counted
///   ([`Spikes::reapplied`]), since no acknowledgement can tell a new master what an old
///   one applied after its last one.
/// - **Never lost**: an origin removes a spike from its journal only once it was applied
///   by a master of its region ([`Spikes::compacted`]): what the acknowledgements promise.
/// - **Applied after healing**: at the end of a run whose last fault lies far enough back,
///   every spike a running origin published before that was applied ([`Spikes::settled`]).
#[derive(Debug, Default)]
pub struct Spikes {
    /// Per origin: numbers published and not yet compacted, with when.
    published: HashMap<usize, BTreeMap<u64, u64>>,
    /// Per origin: numbers applied by some master.
    applied: HashMap<usize, BTreeSet<u64>>,
    /// Per (master, origin): the last number that master's process applied.
    last: HashMap<(usize, usize), u64>,
    pub published_total: u64,
    pub applied_total: u64,
    pub reapplied: u64,
    pub checked: u64,
}

impl Spikes {
    /// `origin` journaled and published `seq` at `at_us`.
    pub fn published(&mut self, at_us: u64, origin: usize, seq: u64) {
        self.published_total += 1;
        self.published.entry(origin).or_default().insert(seq, at_us);
    }

    /// Member `master` started a new process: a new ledger, applying from scratch.
    pub fn restarted(&mut self, master: usize) {
        self.last.retain(|(m, _), _| *m != master);
    }

    /// `master` applied `origin`'s spike `seq` at `at_us`.
    pub fn applied(
        &mut self,
        at_us: u64,
        master: usize,
        origin: usize,
        seq: u64,
    ) -> Result<(), Violation> {
        self.checked += 1;
        self.applied_total += 1;
        let last = self.last.entry((master, origin)).or_insert(0);
        if seq <= *last {
            return Err(Violation {
                at_us,
                what: format!(
                    "master {master} applied spike {seq} of member {origin} after spike {}                      (twice, or out of order)",
                    *last
                ),
            });
        }
        *last = seq;
        if !self.applied.entry(origin).or_default().insert(seq) {
            self.reapplied += 1;
        }
        Ok(())
    }

    /// `origin` removed every spike up to `upto` from its journal at `at_us`.
    pub fn compacted(&mut self, at_us: u64, origin: usize, upto: u64) -> Result<(), Violation> {
        let Some(published) = self.published.get_mut(&origin) else {
            return Ok(());
        };
        let applied = self.applied.get(&origin);
        while let Some((&seq, _)) = published.first_key_value().filter(|(s, _)| **s <= upto) {
            self.checked += 1;
            if !applied.is_some_and(|a| a.contains(&seq)) {
                return Err(Violation {
                    at_us,
                    what: format!(
                        "member {origin} removed spike {seq} from its journal (acknowledged up to {upto}), but no master applied it: lost"
                    ),
                });
            }
            published.pop_first();
        }
        Ok(())
    }

    /// At the end of a settled run: every spike `origin` published before `before_us`
    /// was applied by a master.
    pub fn settled(&mut self, at_us: u64, origin: usize, before_us: u64) -> Result<(), Violation> {
        let Some(published) = self.published.get(&origin) else {
            return Ok(());
        };
        let applied = self.applied.get(&origin);
        for (&seq, &when) in published {
            if when >= before_us {
                continue;
            }
            self.checked += 1;
            if !applied.is_some_and(|a| a.contains(&seq)) {
                return Err(Violation {
                    at_us,
                    what: format!(
                        "spike {seq} of member {origin}, published at {:.3} s, was never applied by a master",
                        when as f64 / 1e6
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_owned_by_no_one_or_by_a_stopped_member_is_caught() {
        let id = |s: &str| node::Id::from(s);
        let set = |v: &[&str]| v.iter().map(|s| id(s)).collect::<BTreeSet<_>>();
        let mut a = BTreeMap::new();
        a.insert("audit:a".to_string(), id("b"));
        a.insert("audit:b".to_string(), id("a"));
        let mut o = Owners::default();
        o.check(1, 0, &a, &set(&["a", "b"]), &set(&["a", "b"]))
            .expect("every audit owned by a running member");
        let v = o
            .check(2, 0, &a, &set(&["a", "b", "c"]), &set(&["a", "b", "c"]))
            .expect_err("c's audit has no owner");
        assert!(v.what.contains("audit:c has no owner"), "{}", v.what);
        let v = o
            .check(3, 0, &a, &set(&["a"]), &set(&["a"]))
            .expect_err("b stopped but still owns a's audit");
        assert!(v.what.contains("not running"), "{}", v.what);
    }

    #[test]
    fn spikes_applied_twice_by_one_master_or_lost_are_caught() {
        let mut s = Spikes::default();
        for seq in 1..=4 {
            s.published(seq * 10, 7, seq);
        }
        s.applied(50, 1, 7, 1).expect("in order");
        s.applied(51, 1, 7, 2).expect("in order");
        let v = s.applied(52, 1, 7, 2).expect_err("twice at one master");
        assert!(v.what.contains("twice"), "{}", v.what);
        s.compacted(60, 7, 2).expect("1 and 2 were applied");
        let v = s.compacted(61, 7, 3).expect_err("3 was not applied");
        assert!(v.what.contains("lost"), "{}", v.what);
        // A new master applies from its own ledger: 2 again is a re-application, counted.
        s.applied(70, 2, 7, 2).expect("another master");
        s.applied(71, 2, 7, 3).expect("another master");
        assert_eq!(s.reapplied, 1);
        // The same master after a restart starts a new ledger.
        s.restarted(1);
        s.applied(72, 1, 7, 1).expect("a new process of master 1");
        s.settled(100, 7, 35)
            .expect("1 to 3 published before 35 were applied");
        let v = s.settled(100, 7, 45).expect_err("4 was never applied");
        assert!(v.what.contains("spike 4"), "{}", v.what);
    }

    #[test]
    fn two_masters_in_one_term_are_caught() {
        let mut m = Masters::default();
        m.observe(1, 0, 3, 1).expect("first master of term 3");
        m.observe(2, 0, 3, 1).expect("the same master again");
        m.observe(3, 1, 3, 2).expect("another region's term 3");
        m.observe(4, 0, 4, 2).expect("a new term");
        let v = m
            .observe(5, 0, 3, 2)
            .expect_err("a second master of term 3");
        assert_eq!(v.at_us, 5);
        assert!(v.what.contains("term 3"), "{}", v.what);
    }

    #[test]
    fn a_live_settled_member_declared_dead_is_caught() {
        let mut d = Deaths::new(3, 10, 5, 2);
        d.disturb(0, 0);
        d.disturb(1, 0);
        d.declared_dead(5, 0, 1, true)
            .expect("within the settling time after start");
        d.declared_dead(20, 0, 2, false)
            .expect("a crashed member is truly dead");
        d.paused(1, 30, 2);
        d.declared_dead(31, 0, 1, true)
            .expect_err("a short pause never excuses a death");
        d.paused(1, 40, 3);
        d.declared_dead(45, 0, 1, true)
            .expect("after a long pause, within the settling time");
    }

    #[test]
    fn a_cut_excuses_deaths_across_it_only() {
        let mut d = Deaths::new(4, 10, 5, 2);
        d.relinked(0, 3, 100);
        d.declared_dead(105, 3, 0, true)
            .expect("across the link that changed");
        d.declared_dead(105, 0, 3, true).expect("either way round");
        let v = d
            .declared_dead(105, 1, 2, true)
            .expect_err("between members that kept hearing each other");
        assert!(
            v.what.contains("member 2 declared dead by member 1"),
            "{}",
            v.what
        );
        d.declared_dead(111, 3, 0, true)
            .expect_err("once the link has settled");
    }

    #[test]
    fn a_crash_not_detected_within_the_bound_is_caught() {
        let mut d = Deaths::new(3, 10, 5, 2);
        d.detected(105, 100, 0, 1, Some(Status::Dead))
            .expect("detected");
        d.detected(105, 100, 0, 1, None)
            .expect("an observer that never knew it");
        let v = d
            .detected(105, 100, 0, 1, Some(Status::Suspect))
            .expect_err("still only suspect");
        assert!(v.what.contains("suspect"), "{}", v.what);
        d.disturb(2, 98);
        d.detected(105, 100, 2, 1, Some(Status::Alive))
            .expect("a disturbed observer is excused");
    }
}
