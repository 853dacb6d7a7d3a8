//! `fleetmesh-sim`: runs a scenario file, or a series of seeded chaos runs, and prints
//! the figures; the last stdout line is `RESULT {json}`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fleetmesh_sim::{Report, Scenario, Sim, chaos};

#[derive(Debug, Parser)]
#[command(
    name = "fleetmesh-sim",
    about = "Deterministic simulator of fleetmesh's cores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario file.
    Run {
        scenario: PathBuf,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Overrides the number of regions.
        #[arg(long)]
        regions: Option<usize>,
        /// Overrides the members per region.
        #[arg(long)]
        nodes_per_region: Option<usize>,
        /// Overrides the simulated duration (seconds).
        #[arg(long)]
        seconds: Option<f64>,
    },
    /// Seeded random fault schedules, one derived seed per run; prints failing seeds.
    Chaos {
        /// Runs 0..N of the series.
        #[arg(long, default_value_t = 10, conflicts_with = "seeds")]
        runs: u64,
        /// Runs A..B of the series (B excluded): a long series in parts, e.g.
        /// `--seeds 0..100` then `--seeds 100..200`, with the same `--seed`.
        #[arg(long, value_parser = parse_range)]
        seeds: Option<std::ops::Range<u64>>,
        #[arg(long, default_value_t = 200)]
        nodes: usize,
        /// Regions (default: one per 100 members).
        #[arg(long)]
        regions: Option<usize>,
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Writes each failing run's scenario here (replays with `run FILE`).
        #[arg(long)]
        dump: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fleetmesh-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            seed,
            regions,
            nodes_per_region,
            seconds,
        } => {
            let mut sc = Scenario::load(&scenario)?;
            if let Some(s) = seed {
                sc.seed = s;
            }
            if let Some(r) = regions {
                sc.topology.regions = r;
            }
            if let Some(n) = nodes_per_region {
                sc.topology.nodes_per_region = n;
            }
            if let Some(s) = seconds {
                sc.duration_s = s;
            }
            sc.check()
                .map_err(|p| anyhow::anyhow!("{}: {p}", scenario.display()))?;
            eprintln!(
                "{}: {} members in {} regions, {} s simulated, seed {}",
                scenario.display(),
                sc.nodes(),
                sc.topology.regions,
                sc.duration_s,
                sc.seed
            );
            let r = Sim::new(sc).run();
            print_figures(&r);
            println!("RESULT {}", serde_json::to_string(&r)?);
            Ok(r.violations == 0)
        }
        Command::Chaos {
            runs,
            seeds,
            nodes,
            regions,
            seconds,
            seed,
            dump,
        } => {
            let regions = regions.unwrap_or(nodes.div_ceil(100));
            let wall = std::time::Instant::now();
            let mut failing = Vec::new();
            let mut checked = 0;
            let mut sim_s = 0.0;
            let series = seeds.unwrap_or(0..runs);
            let (from, to) = (series.start, series.end);
            for k in series {
                let s = chaos::run_seed(seed, k);
                let sc = chaos::scenario(s, nodes, regions, seconds);
                let r = Sim::new(sc.clone()).quiet().run();
                checked += r.invariants_checked;
                sim_s += r.simulated_s;
                if let Some(v) = &r.violation {
                    eprintln!(
                        "run {k}: seed {s} FAILED {v}\n  replay: fleetmesh-sim chaos --runs 1 \
                         --nodes {nodes} --regions {regions} --seconds {seconds} --seed {s}"
                    );
                    if let Some(dir) = &dump {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        let path = dir.join(format!("chaos-{s}.toml"));
                        std::fs::write(&path, toml::to_string(&sc)?)
                            .with_context(|| format!("writing {}", path.display()))?;
                        eprintln!("  scenario: {}", path.display());
                    }
                    failing.push(s);
                } else {
                    eprintln!(
                        "run {k}: seed {s} ok ({} checks, detect p99 {} us, wall {:.1} s)",
                        r.invariants_checked, r.detect_p99_us, r.wall_s
                    );
                }
            }
            let wall_s = wall.elapsed().as_secs_f64();
            let result = serde_json::json!({
                "runs": to - from,
                "from": from,
                "to": to,
                "nodes": nodes,
                "regions": regions,
                "seed": seed,
                "sim_s": sim_s,
                "wall_s": wall_s,
                "speed": sim_s / wall_s.max(1e-9),
                "invariants_checked": checked,
                "violations": failing.len(),
                "failing_seeds": failing,
            });
            println!("RESULT {result}");
            Ok(failing.is_empty())
        }
    }
}

/// `A..B` (B excluded, A < B).
fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a range like 0..100"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|e| format!("`{x}` in `{s}`: {e}"))
    };
    let (a, b) = (num(a)?, num(b)?);
    if a >= b {
        return Err(format!("`{s}` is empty: the start must be below the end"));
    }
    Ok(a..b)
}

fn print_figures(r: &Report) {
    let s = |us: u64| us as f64 / 1e6;
    println!(
        "members {} in {} regions, {:.0} s simulated in {:.1} s wall ({:.2}x), {} events",
        r.nodes, r.regions, r.simulated_s, r.wall_s, r.speed, r.events
    );
    println!(
        "crash detection: {} samples, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        r.detect_samples,
        s(r.detect_p50_us),
        s(r.detect_p99_us),
        s(r.detect_max_us)
    );
    println!(
        "hang detection: {} samples, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        r.hang_samples,
        s(r.hang_p50_us),
        s(r.hang_p99_us),
        s(r.hang_max_us)
    );
    println!(
        "failover: {} samples, p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        r.failover_samples,
        s(r.failover_p50_us),
        s(r.failover_p99_us),
        s(r.failover_max_us)
    );
    println!(
        "received per member per s: {:.1} msgs (max {:.1}), {:.0} bytes (max {:.0})",
        r.msgs_per_node_s, r.msgs_per_node_s_max, r.bytes_per_node_s, r.bytes_per_node_s_max
    );
    println!(
        "spikes: {} published, {} applied by masters ({} again by a later master), {} replay \
         batches, {} acknowledgements refused by fencing",
        r.spikes_published, r.spikes_applied, r.spikes_reapplied, r.replays_sent, r.acks_refused
    );
    println!(
        "cpu {:.1} ms per simulated s; regions with a master at the end: {}",
        r.cpu_ms_per_sim_s, r.masters_elected
    );
    match &r.violation {
        None => println!("invariants: {} checks, no violation", r.invariants_checked),
        Some(v) => println!("VIOLATION (seed {}): {v}", r.seed),
    }
}
