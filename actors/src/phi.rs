//! An accrual failure detector over one peer's heartbeat arrivals.
//!
//! Instead of a fixed timeout it outputs a suspicion level, phi: `-log10` of the
//! probability that a heartbeat still arrives this late, judged from the peer's recent
//! inter-arrival times (mean and standard deviation over a sliding window), plus an
//! acceptable pause. A peer with a regular rhythm is suspected soon after it goes quiet;
//! one whose heartbeats jitter (a loaded link, a busy host) gets more slack on its own.
//! The normal tail is computed with a logistic approximation of the normal distribution
//! (Bowling et al., 2009: error under 1.4e-4 over the whole range).
//!
//! No clock is read: callers pass `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The heartbeat interval peers announce; seeds the history before any is measured.
    pub interval: Duration,
    /// Inter-arrival times remembered.
    pub window: usize,
    /// Floor of the standard deviation, so that a perfectly regular peer is not
    /// suspected the instant it is a little late.
    pub min_std: Duration,
    /// Lateness accepted on top of the learned rhythm (GC pauses, a stopped process,
    /// scheduler starvation) before suspicion rises.
    pub acceptable_pause: Duration,
}

impl Config {
    pub fn new(interval: Duration, acceptable_pause: Duration) -> Self {
        Config {
            interval,
            window: 100,
            min_std: interval / 10,
            acceptable_pause,
        }
    }
}

/// One peer's arrival history.
#[derive(Debug, Clone)]
pub struct Detector {
    config: Config,
    intervals: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    last: Option<Instant>,
}

impl Detector {
    pub fn new(config: Config) -> Self {
        Detector {
            config,
            // Grown as intervals arrive: most detectors never fill their window (a
            // member heard every 20 s, a peer this node does not probe), and a view
            // holds two per member.
            intervals: VecDeque::new(),
            sum: 0.0,
            sum_sq: 0.0,
            last: None,
        }
    }

    /// When the last heartbeat arrived.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// A heartbeat arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        match self.last {
            // Seed with the announced rhythm (give or take a quarter), so the first
            // judgements are sane.
            None => {
                let i = self.config.interval.as_secs_f64();
                self.push(i - i / 4.0);
                self.push(i + i / 4.0);
            }
            Some(last) => {
                // A gap longer than the interval plus the acceptable pause is an outage
                // (of the peer, the link, or this node itself, stopped or starved), not
                // the peer's rhythm: learning it would blunt detection for a long while.
                let gap = now.saturating_duration_since(last);
                if gap <= self.config.interval + self.config.acceptable_pause {
                    self.push(gap.as_secs_f64());
                }
            }
        }
        self.last = Some(now);
    }

    /// The observer itself was stopped or starved until `now`: the silence it could not
    /// hear says nothing about the peer, so the wait starts again from `now` (and is not
    /// learned as rhythm).
    pub fn resume(&mut self, now: Instant) {
        if let Some(last) = self.last
            && last < now
        {
            self.last = Some(now);
        }
    }

    fn push(&mut self, x: f64) {
        if self.intervals.len() >= self.config.window.max(2)
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        self.intervals.push_back(x);
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// Mean and standard deviation of the arrivals (with the floor applied), seconds.
    fn stats(&self) -> (f64, f64) {
        let n = self.intervals.len().max(1) as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        (mean, var.sqrt().max(self.config.min_std.as_secs_f64()))
    }

    /// The suspicion level at `now` (0 before any heartbeat).
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let (mean, std) = self.stats();
        let y = (elapsed - mean - self.config.acceptable_pause.as_secs_f64()) / std;
        phi_of(y)
    }

    /// When phi reaches `level` if no heartbeat comes.
    pub fn reaches(&self, level: Level) -> Option<Instant> {
        let last = self.last?;
        let (mean, std) = self.stats();
        let y = level.y;
        let secs = (mean + self.config.acceptable_pause.as_secs_f64() + y * std).max(0.0);
        // A millisecond past the crossing, so that phi there is surely at the threshold.
        Some(last + Duration::from_secs_f64(secs.min(1e9)) + Duration::from_millis(1))
    }
}

/// A suspicion threshold, with the standardized lateness at which phi reaches it, found
/// once (by bisection) rather than at every deadline computed against it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    y: f64,
}

impl Level {
    pub fn new(phi: f64) -> Self {
        Level { y: y_of(phi) }
    }
}

/// The logistic approximation's exponent for a standardized lateness `y`.
fn z_of(y: f64) -> f64 {
    y * (1.5976 + 0.070566 * y * y)
}

/// phi = -log10(P(later than y)), with P(later) = 1 / (1 + e^z).
fn phi_of(y: f64) -> f64 {
    let z = z_of(y);
    let softplus = if z > 30.0 { z } else { z.exp().ln_1p() };
    softplus / std::f64::consts::LN_10
}

/// The standardized lateness at which phi equals `phi` (z_of is increasing: bisect).
fn y_of(phi: f64) -> f64 {
    let target = phi.max(1e-9);
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if phi_of(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    fn regular(pause: Duration) -> (Detector, Instant) {
        let t0 = Instant::now();
        let mut d = Detector::new(Config::new(SEC, pause));
        for i in 0..30 {
            d.heartbeat(t0 + SEC * i);
        }
        (d, t0 + SEC * 29)
    }

    #[test]
    fn phi_rises_with_silence_and_the_defaults_meet_the_goals() {
        let (d, last) = regular(SEC);
        assert!(d.phi(last + SEC) < 0.5, "on time: {}", d.phi(last + SEC));
        let dead = d.reaches(Level::new(8.0)).expect("heard");
        let suspect = d.reaches(Level::new(3.0)).expect("heard");
        assert!(suspect < dead);
        // A crashed node is declared dead within 3 s of its last heartbeat...
        assert!(dead - last < 3 * SEC, "{:?}", dead - last);
        // ...and one paused for 2 s (heartbeat 2 s late: 3 s after the last) is not even
        // suspect when it comes back... with a 1 s interval the late beat lands at +2 s to
        // +3 s; the 2 s pause test needs dead later than the pause plus one interval.
        assert!(d.phi(last + 2 * SEC) < 3.0, "{}", d.phi(last + 2 * SEC));
        assert!(d.phi(dead) >= 8.0 && d.phi(dead) < 8.2, "{}", d.phi(dead));
    }

    #[test]
    fn jitter_earns_slack() {
        let t0 = Instant::now();
        let mut calm = Detector::new(Config::new(SEC, SEC / 2));
        let mut jittery = Detector::new(Config::new(SEC, SEC / 2));
        let (mut a, mut b) = (t0, t0);
        for i in 0..50 {
            a += SEC;
            b += if i % 2 == 0 { SEC / 2 } else { SEC * 3 / 2 };
            calm.heartbeat(a);
            jittery.heartbeat(b);
        }
        let late = |d: &Detector, last: Instant| d.phi(last + SEC * 2);
        assert!(late(&calm, a) > late(&jittery, b) + 1.0);
    }

    #[test]
    fn an_outage_is_not_learned_as_rhythm() {
        let (mut d, last) = regular(SEC / 2);
        let before = d.reaches(Level::new(8.0)).expect("heard") - last;
        // Silent for 3 s (this node was stopped, or the peer was), then regular again.
        let back = last + 4 * SEC;
        d.heartbeat(back);
        d.heartbeat(back + SEC);
        let after = d.reaches(Level::new(8.0)).expect("heard") - (back + SEC);
        assert!(
            after <= before + Duration::from_millis(50),
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn nothing_heard_means_no_suspicion() {
        let d = Detector::new(Config::new(SEC, SEC));
        assert_eq!(d.phi(Instant::now()), 0.0);
        assert!(d.reaches(Level::new(8.0)).is_none());
    }

    proptest! {
        #[test]
        fn phi_is_monotonic_and_reaches_inverts_it(threshold in 0.5f64..16.0, gaps in proptest::collection::vec(200u64..3000, 2..60)) {
            let t0 = Instant::now();
            let mut d = Detector::new(Config::new(SEC, SEC / 2));
            let mut t = t0;
            for g in gaps {
                t += Duration::from_millis(g);
                d.heartbeat(t);
            }
            let at = d.reaches(Level::new(threshold)).expect("heard");
            prop_assert!(d.phi(at) >= threshold && d.phi(at - Duration::from_millis(2)) < threshold + 0.5);
            let mut prev = 0.0;
            for ms in (0..20_000).step_by(250) {
                let p = d.phi(t + Duration::from_millis(ms));
                prop_assert!(p >= prev - 1e-12);
                prev = p;
            }
        }
    }
}
