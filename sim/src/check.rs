//! The invariants checked during every run. Each checker is fed what happened (who leads
//! which term, who declared whom dead, who crashed and when) and answers with a
//! [`Violation`] when the history breaks its rule; the engine stops the run at the first.
//!
//! The checkers hold no core: they judge facts the engine reads off the real cores, so
//! the tests below can feed them deliberately broken histories and watch them fail.

use std::collections::BTreeMap;

use fleetmesh_actors::membership::Status;

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
/// A member is *disturbed* when it starts, crashes, restarts, is cut off or healed, or is
/// paused for longer than `pause_exempt_us` (shorter pauses never excuse a death). For
/// `settle_us` after a disturbance of either side, a death declared between the two is
/// not judged, and a disturbed observer is not expected to have detected a crash.
#[derive(Debug)]
pub struct Deaths {
    settle_us: u64,
    bound_us: u64,
    pause_exempt_us: u64,
    disturbed: Vec<Option<u64>>,
    pub checked: u64,
}

impl Deaths {
    pub fn new(nodes: usize, settle_us: u64, bound_us: u64, pause_exempt_us: u64) -> Deaths {
        Deaths {
            settle_us,
            bound_us,
            pause_exempt_us,
            disturbed: vec![None; nodes],
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
        if reachable && self.settled(peer, at_us) && self.settled(observer, at_us) {
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
        let disturbed =
            self.disturbed[observer].is_some_and(|d| d + self.settle_us > crashed_at_us);
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

#[cfg(test)]
mod tests {
    use super::*;

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
