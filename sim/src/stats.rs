//! Figures of a run and the `RESULT` line.

use serde::Serialize;

/// The value at quantile `q` (0..=1) of `samples` (sorted here), by the nearest rank.
pub fn quantile(samples: &mut [u64], q: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// CPU time this process used so far, in nanoseconds (`/proc/self/schedstat`; 0 where it
/// cannot be read). The simulator is single-threaded.
pub fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The figures printed as `RESULT {json}`. Field names follow BENCHMARKS.md's convention
/// (latencies in microseconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub regions: usize,
    pub simulated_s: f64,
    pub sim_s: f64,
    pub wall_s: f64,
    pub speed: f64,
    pub events: u64,
    pub crashes: usize,
    /// Crash to death in one observer's view, one sample per (crash, observer).
    pub detect_samples: usize,
    pub detect_p50_us: u64,
    pub detect_p99_us: u64,
    pub detect_max_us: u64,
    /// Start of a pause (a hung process: connections up) to death in one observer's view,
    /// one sample per (pause, observer) that declared it while it was paused.
    pub hang_samples: usize,
    pub hang_p50_us: u64,
    pub hang_p99_us: u64,
    pub hang_max_us: u64,
    /// Crash of a master to a master of a higher term in its region.
    pub failover_samples: usize,
    pub failover_p50_us: u64,
    pub failover_p99_us: u64,
    pub failover_max_us: u64,
    /// Messages (every gossip copy counted) and bytes received per member per simulated
    /// second (from `measure_from_s`): mean over members and the busiest member.
    pub msgs_per_node_s: f64,
    pub msgs_per_node_s_max: f64,
    pub bytes_per_node_s: f64,
    pub bytes_per_node_s_max: f64,
    pub raft_msgs: u64,
    pub heartbeats_sent: u64,
    /// Liveness probes and their answers.
    pub probes_sent: u64,
    /// Times a membership view pushed the region's members to its governor.
    pub member_pushes: u64,
    /// Spikes journaled and published by all members.
    pub spikes_published: u64,
    /// Spikes applied by masters (a spike applied by two masters in turn counts twice).
    pub spikes_applied: u64,
    /// Spikes a master applied that an earlier master had applied already (it failed or
    /// lost its place before acknowledging them).
    pub spikes_reapplied: u64,
    pub replays_sent: u64,
    /// Acknowledgements the intakes' fencing refused (stale masters, forgeries).
    pub acks_refused: u64,
    pub cpu_ms_per_sim_s: f64,
    pub masters_elected: usize,
    pub invariants_checked: u64,
    pub violations: u64,
    pub violation: Option<String>,
}

impl Report {
    /// The figures that must be the same for the same seed (wall-clock figures vary).
    pub fn deterministic(&self) -> Report {
        Report {
            wall_s: 0.0,
            speed: 0.0,
            cpu_ms_per_sim_s: 0.0,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut s: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut s, 0.5), 50);
        assert_eq!(quantile(&mut s, 0.99), 99);
        assert_eq!(quantile(&mut s, 1.0), 100);
        assert_eq!(quantile(&mut [], 0.5), 0);
    }
}
