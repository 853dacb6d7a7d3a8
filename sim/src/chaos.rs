//! Seeded random fault schedules: crashes (masters and others) with restarts, pauses,
//! isolations healed later (the member recording changes while cut off), bursts of
//! changes, forged acknowledgements and clock skew, spread over the run, on top of a
//! steady trickle of changes on every member; then a quiet tail in which every spike
//! must reach a master.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Action, Fault, Invariants, Network, Protocol, Scenario, Topology, Workload};

/// Quiet seconds after the faults: every spike published before them must be applied by
/// the end ([`Invariants::applied_within_ms`]).
pub const TAIL_S: f64 = 20.0;

/// The seed of run `k` of a chaos series started with `seed`: run 0 uses `seed` itself,
/// so a failing run replays with `chaos --runs 1 --seed <its seed>`.
pub fn run_seed(seed: u64, k: u64) -> u64 {
    if k == 0 {
        return seed;
    }
    // splitmix64 of (seed, k)
    let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A scenario of `nodes` members in `regions` regions with faults drawn from `seed`
/// (which is also the run's seed) for `seconds`, then [`TAIL_S`] quiet seconds.
pub fn scenario(seed: u64, nodes: usize, regions: usize, seconds: f64) -> Scenario {
    let regions = regions.clamp(1, nodes.max(1));
    let per = (nodes / regions).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC4A0_5EED);
    let mut faults = Vec::new();
    // Faults start once regions have founded and elected, and leave time to detect.
    let (first, last) = (10.0, (seconds - 10.0).max(10.0));
    let count = (regions * 2).max(3);
    let mut heal_at: Option<f64> = None;
    for _ in 0..count {
        let at = rng.random_range(first..=last);
        let region = rng.random_range(0..regions);
        let node = format!("{region}/{}", rng.random_range(0..per));
        let action = match rng.random_range(0..12) {
            0..=2 => Action::Crash { node: node.clone() },
            3..=4 => Action::Crash {
                node: format!("master:{region}"),
            },
            5..=6 => Action::Pause {
                node,
                for_s: *[0.5, 1.0, 2.0, 3.0, 5.0].choose(&mut rng).unwrap_or(&1.0),
            },
            7 => Action::Skew {
                node,
                ms: rng.random_range(-5000..=5000),
            },
            8 => Action::Record {
                node,
                changes: rng.random_range(50..=500),
                for_s: rng.random_range(1.0..10.0),
            },
            9 => Action::ForgeAcks { node },
            _ if heal_at.is_none() => {
                let heal = (at + rng.random_range(3.0..15.0)).min(seconds);
                heal_at = Some(heal);
                // Cut off while it keeps recording: replayed after the heal.
                faults.push(Fault {
                    at_s: at,
                    action: Action::Record {
                        node: node.clone(),
                        changes: rng.random_range(100..=1000),
                        for_s: (heal - at).max(0.5),
                    },
                });
                Action::Isolate { node }
            }
            _ => Action::Pause { node, for_s: 1.0 },
        };
        if matches!(action, Action::Crash { .. }) {
            // Restart every crashed member of the region later (no-op when running).
            for k in 0..per {
                faults.push(Fault {
                    at_s: (at + rng.random_range(2.0..20.0)).min(seconds),
                    action: Action::Restart {
                        node: format!("{region}/{k}"),
                    },
                });
            }
        }
        faults.push(Fault { at_s: at, action });
    }
    if let Some(at) = heal_at {
        faults.push(Fault {
            at_s: at,
            action: Action::Heal,
        });
    }
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Scenario {
        seed,
        duration_s: seconds + TAIL_S,
        topology: Topology {
            regions,
            nodes_per_region: per,
            eligible_per_region: None,
            roles: vec!["web".into(), "db".into()],
        },
        network: Network::default(),
        protocol: Protocol::default(),
        invariants: Invariants {
            applied_within_ms: (TAIL_S * 1000.0) as u64,
            ..Invariants::default()
        },
        workload: Workload {
            changes_per_s: 0.2,
            batch: 1,
        },
        progress_s: 0.0,
        measure_from_s: 0.0,
        faults,
    }
}
