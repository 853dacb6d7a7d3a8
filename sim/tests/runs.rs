//! Whole runs of the simulator over the real cores.

use std::path::PathBuf;

use fleetmesh_sim::{Report, Scenario, Sim, chaos};

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path).expect("the example scenario loads")
}

fn run(sc: Scenario) -> Report {
    Sim::new(sc).quiet().run()
}

#[test]
fn every_example_scenario_loads() {
    for name in [
        "smoke.toml",
        "crash.toml",
        "partition.toml",
        "spikes.toml",
        "load.toml",
        "fleet-10k.toml",
    ] {
        scenario(name);
    }
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let a = run(scenario("crash.toml"));
    let b = run(scenario("crash.toml"));
    assert_eq!(a.deterministic(), b.deterministic());
    let mut other = scenario("crash.toml");
    other.seed += 1;
    let c = run(other);
    assert_ne!(a.events, c.events, "another seed draws other delays");
}

#[test]
fn masters_are_elected_crashes_detected_and_masters_replaced() {
    let r = run(scenario("crash.toml"));
    assert_eq!(r.violation, None);
    assert_eq!(r.masters_elected, 3, "every region has a master at the end");
    // Two crashes of 5-member regions (4 observers each) and two in a region whose
    // observers include the other crashed one: at least 4 + 4 detections.
    assert!(r.detect_samples >= 8, "{r:?}");
    assert!(r.detect_p99_us <= 5_000_000, "{r:?}");
    assert!(
        r.failover_samples >= 2,
        "a master of a higher term follows a killed master"
    );
    assert!(r.invariants_checked > 1000);
}

#[test]
fn partitions_and_loss_break_no_invariant() {
    let r = run(scenario("partition.toml"));
    assert_eq!(r.violation, None);
    assert_eq!(r.masters_elected, 2);
}

#[test]
fn every_spike_reaches_a_master_across_a_failover_a_cut_and_forged_acknowledgements() {
    let r = run(scenario("spikes.toml"));
    assert_eq!(r.violation, None);
    // 5 members a second for 70 s (less the crashed one's downtime) and 1,000 more.
    assert!(r.spikes_published > 1200, "{r:?}");
    assert!(r.spikes_applied >= r.spikes_published, "{r:?}");
    assert!(r.failover_samples >= 1, "{r:?}");
    assert!(r.replays_sent > 0, "the cut-off member replays: {r:?}");
    assert!(r.acks_refused > 0, "the forgery is refused: {r:?}");
}

#[test]
fn the_spike_checker_catches_a_core_whose_acknowledgements_skip_fencing() {
    // The same run with every intake taking acknowledgements from anyone: the forged
    // ones make origins drop spikes no master applied.
    let r = Sim::new(scenario("spikes.toml"))
        .quiet()
        .break_fencing()
        .run();
    let v = r.violation.expect("a violation");
    assert!(v.contains("no master applied it: lost"), "{v}");
    assert!(v.contains("at 40."), "caught when the forgery lands: {v}");
}

#[test]
fn the_spike_checker_fails_a_run_whose_spikes_never_reach_a_master() {
    // Two of a region's three members crash for good: no majority, no master, and the
    // survivor's spikes are applied by no one. The run ends quiet long enough for that
    // to be a violation rather than a delay.
    let sc: Scenario = toml::from_str(
        "duration_s = 45
progress_s = 0
[topology]
regions = 1
nodes_per_region = 3
         [workload]
changes_per_s = 1.0
         [[faults]]
at_s = 10
action = \"crash\"
node = \"0/0\"
         [[faults]]
at_s = 10
action = \"crash\"
node = \"0/1\"
",
    )
    .expect("scenario");
    let v = run(sc.clone()).violation.expect("a violation");
    assert!(v.contains("never applied by a master"), "{v}");
    // Before the quiet time has passed, the same history is only a delay.
    let mut short = sc;
    short.duration_s = 25.0;
    assert_eq!(run(short).violation, None);
}

#[test]
fn the_detection_checker_fails_a_run_whose_bound_the_cores_cannot_meet() {
    let mut sc = scenario("crash.toml");
    // Heartbeats come once a second: no crash is detected within 100 ms.
    sc.invariants.detect_bound_ms = 100;
    let r = run(sc);
    assert_eq!(r.violations, 1);
    let v = r.violation.expect("a violation");
    assert!(v.contains("crashed") && v.contains("still holds it"), "{v}");
}

#[test]
fn the_work_checker_fails_a_run_whose_bound_the_cores_cannot_meet() {
    let mut sc = scenario("crash.toml");
    // A crashed member is detected in about a second, then its work moves: not within
    // 100 ms of the crash.
    sc.invariants.reassign_within_ms = 100;
    let v = run(sc).violation.expect("a violation");
    assert!(v.contains("not running") || v.contains("no owner"), "{v}");
}

#[test]
fn the_false_death_checker_fails_a_run_when_a_long_pause_is_not_excused() {
    let mut sc = scenario("smoke.toml");
    sc.faults = toml::from_str::<Scenario>(
        "duration_s = 1\n[topology]\nregions = 1\nnodes_per_region = 1\n\
         [[faults]]\nat_s = 30\naction = \"pause\"\nnode = \"1/2\"\nfor_s = 8\n",
    )
    .expect("faults")
    .faults;
    // An 8 s pause is a death; counting it as a pause that must never be one, the
    // checker must call it a false death.
    sc.invariants.pause_exempt_over_ms = 60_000;
    let r = run(sc.clone());
    let v = r.violation.expect("a violation");
    assert!(v.contains("declared dead"), "{v}");
    // Excused as it should be, the same run holds.
    sc.invariants.pause_exempt_over_ms = 2000;
    assert_eq!(run(sc).violation, None);
}

/// The CI chaos series (the large ones are benchmarks): 50 seeded fault schedules at 200
/// members in 2 regions, 30 simulated s each, every invariant held; in two halves that
/// run side by side.
fn chaos_series(ks: std::ops::Range<u64>) {
    let mut checked = 0;
    let runs = ks.end - ks.start;
    for k in ks {
        let seed = chaos::run_seed(42, k);
        let r = run(chaos::scenario(seed, 200, 2, 30.0));
        assert_eq!(r.violation, None, "seed {seed}");
        checked += r.invariants_checked;
    }
    assert!(checked > runs * 10_000, "{checked}");
}

#[test]
fn chaos_runs_hold_every_invariant() {
    chaos_series(0..25);
}

#[test]
fn chaos_runs_hold_every_invariant_second_half() {
    chaos_series(25..50);
}
