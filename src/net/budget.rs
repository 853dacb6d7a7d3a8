//! Per-peer budgets on the bulk request-response protocol (consultations, replays,
//! audits): what one peer may have in flight on this node, and how many requests a second
//! it may start, so that a storm on one node costs the region neither its master nor its
//! answers to the others.
//!
//! Sans-IO: [`Budget::admit`] is told the time and the peer, and says whether the request
//! is taken or refused (with why and when to ask again); [`Budget::release`] is told when
//! a taken request has been answered. The driver sends the refusal
//! ([`wire::Response::Busy`](fleetmesh_actors::wire::Response::Busy)) and counts it; the
//! asking node's client treats it as "ask again later", never as a reason to decide on
//! its own. Consensus messages travel on their own protocol and are not budgeted here.
//!
//! The rate is a token bucket per peer (governor's GCRA), driven by the time given to
//! `admit` (a fake clock advanced to it), never by a clock of its own.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// Requests in flight per peer, by default: as many as a consultation client sends at
/// once ([`fleetmesh_actors::consult::IN_FLIGHT`]) plus room for a replay and an audit.
pub const IN_FLIGHT: usize = fleetmesh_actors::consult::IN_FLIGHT + 16;
/// Requests a second per peer, by default, and the burst above it.
pub const PER_SECOND: u32 = 2000;
pub const BURST: u32 = 500;
/// The pause suggested to a peer refused for having too many requests in flight (their
/// answers free room at the pace of this node's actors).
pub const IN_FLIGHT_PAUSE: Duration = Duration::from_millis(50);

/// The budget of each peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub in_flight: usize,
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            in_flight: IN_FLIGHT,
            per_second: NonZeroU32::new(PER_SECOND).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Which budget a refused request was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Over {
    /// Too many of the peer's requests are being worked on here.
    InFlight,
    /// The peer started too many requests in the last moments.
    Rate,
}

impl Over {
    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Over::InFlight => "in_flight",
            Over::Rate => "rate",
        }
    }
}

/// A refused request: over which budget, and when the peer may ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub over: Over,
    pub retry_after: Duration,
    /// What the peer is told.
    pub why: String,
}

type Limiter<K> =
    RateLimiter<K, HashMapStateStore<K>, FakeRelativeClock, NoOpMiddleware<governor::nanos::Nanos>>;

/// The budgets of every peer. Feed it with [`Budget::admit`] (a request arrives) and
/// [`Budget::release`] (a request admitted has been answered or abandoned).
pub struct Budget<K: Hash + Eq + Clone> {
    config: Config,
    in_flight: HashMap<K, usize>,
    rate: Limiter<K>,
    clock: FakeRelativeClock,
    /// The time the fake clock shows.
    last: Option<Instant>,
    /// Admissions since the rate's idle peers were last forgotten.
    since_sweep: u32,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for Budget<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("config", &self.config)
            .field("peers_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// Admissions between sweeps of peers whose buckets are full again (bounds memory).
const SWEEP_EVERY: u32 = 4096;

impl<K: Hash + Eq + Clone> Budget<K> {
    pub fn new(config: Config) -> Self {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(config.per_second).allow_burst(config.burst);
        Budget {
            config,
            in_flight: HashMap::new(),
            rate: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
            last: None,
            since_sweep: 0,
        }
    }

    /// A request from `peer` at `now`: taken (and counted in flight until
    /// [`Budget::release`]), or refused.
    pub fn admit(&mut self, now: Instant, peer: &K) -> Result<(), Refusal> {
        self.advance(now);
        let n = self.in_flight(peer);
        if n >= self.config.in_flight {
            return Err(Refusal {
                over: Over::InFlight,
                retry_after: IN_FLIGHT_PAUSE,
                why: format!("{n} requests of yours in flight here"),
            });
        }
        if let Err(not_until) = self.rate.check_key(peer) {
            let retry_after = not_until.wait_time_from(self.clock.now());
            return Err(Refusal {
                over: Over::Rate,
                retry_after,
                why: format!(
                    "more than {} requests a second from you",
                    self.config.per_second
                ),
            });
        }
        *self.in_flight.entry(peer.clone()).or_default() += 1;
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.rate.retain_recent();
        }
        Ok(())
    }

    /// A request of `peer` admitted before has been answered (or its answer abandoned).
    pub fn release(&mut self, peer: &K) {
        if let Some(n) = self.in_flight.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(peer);
            }
        }
    }

    /// Requests of `peer` in flight here.
    pub fn in_flight(&self, peer: &K) -> usize {
        self.in_flight.get(peer).copied().unwrap_or(0)
    }

    fn advance(&mut self, now: Instant) {
        match self.last {
            Some(last) if now > last => {
                self.clock.advance(now - last);
                self.last = Some(now);
            }
            Some(_) => {}
            None => self.last = Some(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(in_flight: usize, per_second: u32, burst: u32) -> Budget<&'static str> {
        Budget::new(Config {
            in_flight,
            per_second: NonZeroU32::new(per_second).expect("non-zero"),
            burst: NonZeroU32::new(burst).expect("non-zero"),
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requests_in_flight_are_bounded_per_peer_and_freed_by_answers() {
        let t0 = Instant::now();
        let mut b = budget(3, 1000, 1000);
        for _ in 0..3 {
            assert_eq!(b.admit(t0, &"storm"), Ok(()));
        }
        let refused = b.admit(t0, &"storm").expect_err("over budget");
        assert_eq!(refused.over, Over::InFlight);
        assert_eq!(refused.retry_after, IN_FLIGHT_PAUSE);
        assert!(refused.why.contains("3 requests"), "{}", refused.why);
        // Another peer has a budget of its own.
        assert_eq!(b.admit(t0, &"quiet"), Ok(()));
        // An answer frees one place, and only one.
        b.release(&"storm");
        assert_eq!(b.in_flight(&"storm"), 2);
        assert_eq!(b.admit(t0, &"storm"), Ok(()));
        assert!(b.admit(t0, &"storm").is_err());
        // Releases beyond what was admitted do not make room for more.
        for _ in 0..10 {
            b.release(&"quiet");
        }
        assert_eq!(b.in_flight(&"quiet"), 0);
        for _ in 0..3 {
            assert_eq!(b.admit(t0, &"quiet"), Ok(()));
        }
        assert!(b.admit(t0, &"quiet").is_err());
    }

    #[test]
    fn the_rate_is_a_token_bucket_per_peer_on_the_time_given() {
        let t0 = Instant::now();
        // 10 a second (one per 100 ms), bursts of 5.
        let mut b = budget(1000, 10, 5);
        for _ in 0..5 {
            assert_eq!(b.admit(t0, &"storm"), Ok(()));
        }
        let refused = b.admit(t0, &"storm").expect_err("burst spent");
        assert_eq!(refused.over, Over::Rate);
        assert_eq!(refused.retry_after, ms(100));
        assert!(
            refused.why.contains("10 requests a second"),
            "{}",
            refused.why
        );
        // The quiet peer is not slowed by the storm.
        assert_eq!(b.admit(t0, &"quiet"), Ok(()));
        // Refusals spend no tokens: the next one comes after exactly the pause.
        assert!(b.admit(t0 + ms(50), &"storm").is_err());
        assert_eq!(b.admit(t0 + ms(100), &"storm"), Ok(()));
        assert!(b.admit(t0 + ms(100), &"storm").is_err());
        // A second of silence refills the bucket to its burst, not beyond.
        let later = t0 + ms(1100);
        for _ in 0..5 {
            assert_eq!(b.admit(later, &"storm"), Ok(()));
        }
        assert!(b.admit(later, &"storm").is_err());
        // Time that goes backwards (never from a monotonic clock) changes nothing.
        assert!(b.admit(t0, &"storm").is_err());
    }

    #[test]
    fn a_request_over_both_budgets_is_refused_for_its_in_flight_and_spends_no_token() {
        let t0 = Instant::now();
        let mut b = budget(2, 10, 3);
        assert_eq!(b.admit(t0, &"p"), Ok(()));
        assert_eq!(b.admit(t0, &"p"), Ok(()));
        assert_eq!(b.admit(t0, &"p").map_err(|r| r.over), Err(Over::InFlight));
        b.release(&"p");
        b.release(&"p");
        // The refused request took no token: one of the burst of 3 is left.
        assert_eq!(b.admit(t0, &"p"), Ok(()));
        assert_eq!(b.admit(t0, &"p").map_err(|r| r.over), Err(Over::Rate));
    }

    #[test]
    fn a_sustained_storm_gets_the_rate_and_no_more() {
        let t0 = Instant::now();
        let mut b = budget(10_000, 100, 10);
        // 1000 requests a second for 10 s, each answered at once.
        let mut taken = 0;
        for i in 0..10_000u64 {
            if b.admit(t0 + Duration::from_millis(i), &"storm").is_ok() {
                taken += 1;
                b.release(&"storm");
            }
        }
        // 100 a second plus the first burst.
        assert!((1000..=1010).contains(&taken), "{taken}");
        assert_eq!(b.in_flight(&"storm"), 0);
    }
}
