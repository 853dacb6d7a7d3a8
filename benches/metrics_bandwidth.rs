//! `metrics-bandwidth`: bytes needed for 10 minutes of one host's metrics, sent on delta,
//! against sending every metric every second.
//!
//! The trace is synthetic but shaped like a busy web server (seeded, so every run is the
//! same): CPU with noise and three load bursts, load average following CPU, memory and
//! disks drifting, a log rotation, network rates with 20% noise and bursts. Every sample
//! goes through the real send-on-delta encoder and the spike encoder; each second's spikes
//! are one real `Spikes` frame, as a node publishes them. The deadbands are the shipped
//! defaults (`config/default.toml`, `[metrics]`), so the figure is what a node sends out of
//! the box. The reconstruction a receiver holds is checked against the truth at every
//! second (`max_error_ratio` <= 1 means never outside the deadband). `batched_baseline` is
//! the leanest every-second encoding: one (origin, second, time, [(name, value)]) frame.
//!
//! Usage: cargo bench --bench metrics_bandwidth -- [--seconds S]
//! Last line: RESULT {json}

mod common;

use common::arg;
use std::time::{Duration, Instant};

use fleetmesh_actors::delta;
use fleetmesh_actors::encoder::{self, Encoder};
use fleetmesh_actors::label::Vocabulary;
use fleetmesh_actors::node;
use fleetmesh_actors::spike::{Change, FieldChange, Kind, Layer, Observation, Value};
use fleetmesh_actors::wire;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The metrics, their deadbands, and a generator for second `t`.
struct Trace {
    rng: StdRng,
    load: f64,
    mem: f64,
    var: f64,
}

/// The metrics of the trace, named as the metrics detector names them.
const METRICS: [&str; 10] = [
    "cpu.user_pct",
    "cpu.system_pct",
    "cpu.iowait_pct",
    "mem.used_bytes",
    "mem.cached_bytes",
    "load.1m",
    "disk./.used_bytes",
    "disk./var.used_bytes",
    "net.eth0.rx_bytes_per_s",
    "net.eth0.tx_bytes_per_s",
];

impl Trace {
    fn sample(&mut self, t: u64) -> [f64; 10] {
        let burst = (90..110).contains(&t) || (300..330).contains(&t) || (480..490).contains(&t);
        let n = |r: &mut StdRng| normal(r);
        let user = if burst {
            65.0 + 5.0 * n(&mut self.rng)
        } else {
            12.0 + 1.5 * n(&mut self.rng)
        }
        .clamp(0.0, 100.0);
        let system = if burst { 10.0 } else { 3.0 } + 0.5 * n(&mut self.rng);
        let iowait = 0.5 + 0.3 * n(&mut self.rng).abs();
        // Load average: a one-minute exponential average of busy cores (4 cores).
        let target = 4.0 * (user + system.max(0.0)) / 100.0;
        self.load += (target - self.load) * (1.0 - (-1.0f64 / 60.0).exp());
        self.mem += 100_000.0 + 2_000_000.0 * n(&mut self.rng);
        let cached = 8.0 * GIB + 50_000_000.0 * (t as f64 / 120.0).sin();
        let root = 20.0 * GIB + 50_000.0 * t as f64;
        self.var += 200_000.0;
        if t == 400 {
            self.var -= 500_000_000.0; // log rotation
        }
        let rate = |base: f64, r: &mut StdRng| {
            (base * if burst { 5.0 } else { 1.0 } * (1.0 + 0.2 * normal(r))).max(0.0)
        };
        let rx = rate(200_000.0, &mut self.rng);
        let tx = rate(150_000.0, &mut self.rng);
        [
            user,
            system.max(0.0),
            iowait,
            self.mem,
            cached,
            self.load,
            root,
            self.var,
            rx,
            tx,
        ]
    }
}

fn metric_obs(name: &str, value: f64) -> Observation {
    let mut o = Observation::new(Kind::Metric, Change::Sample, name, Layer::Poll);
    o.fields.insert(
        "value".into(),
        FieldChange {
            before: None,
            after: Some(Value::Float(value)),
        },
    );
    o
}

fn main() {
    let seconds = arg("--seconds", 600);
    let defaults =
        fleetmesh::settings::load(&Default::default()).expect("the shipped settings load");
    let mut sod = delta::Encoder::new(defaults.metric_default, defaults.metric_rules);
    let bands: Vec<_> = METRICS.iter().map(|n| sod.config_for(n).deadband).collect();
    let origin = node::Id::from("12D3KooWBenchOriginPeerIdPlaceholderValue0000");
    let mk = || {
        Encoder::new(
            encoder::Config {
                origin: origin.clone(),
                role: "web".into(),
                block: encoder::BLOCK,
            },
            Vocabulary::default(),
            0,
        )
    };
    let (mut delta_enc, mut every_enc) = (mk(), mk());
    let mut trace = Trace {
        rng: StdRng::seed_from_u64(7),
        load: 0.5,
        mem: 4.0 * GIB,
        var: 5.0 * GIB,
    };
    let t0 = Instant::now();
    let (mut delta_bytes, mut every_bytes, mut batched_bytes) = (0usize, 0usize, 0usize);
    let mut held: Vec<Option<f64>> = vec![None; METRICS.len()];
    let mut sent_count = vec![0u64; METRICS.len()];
    let mut max_ratio = 0.0f64;
    for t in 0..seconds {
        let now = t0 + Duration::from_secs(t);
        let at = 1_700_000_000_000 + t * 1000;
        let values = trace.sample(t);
        let mut batch = Vec::with_capacity(values.len());
        // What a node publishes for this second: one frame of the spikes it produced.
        let (mut every_tick, mut delta_tick) = (Vec::new(), Vec::new());
        for (i, ((name, band), v)) in METRICS.iter().zip(&bands).zip(values).enumerate() {
            every_tick.push(every_enc.encode(at, metric_obs(name, v)).1);
            batch.push((name.to_string(), v));
            if let Some(sent) = sod.observe(now, name, v) {
                delta_tick.push(delta_enc.encode(at, metric_obs(name, sent)).1);
                held[i] = Some(sent);
                sent_count[i] += 1;
            }
            let h = held[i].expect("first sample is always sent");
            let width = band.width(h);
            let err = (v - h).abs();
            let ratio = if width > 0.0 {
                err / width
            } else if err == 0.0 {
                0.0
            } else {
                f64::INFINITY
            };
            max_ratio = max_ratio.max(ratio);
        }
        every_bytes += wire::encode(&wire::Body::Spikes(every_tick))
            .expect("encodes")
            .len();
        if !delta_tick.is_empty() {
            delta_bytes += wire::encode(&wire::Body::Spikes(delta_tick))
                .expect("encodes")
                .len();
        }
        batched_bytes += wire::encode(&(origin.clone(), t, at, batch))
            .expect("encodes")
            .len();
    }
    for ((name, band), n) in METRICS.iter().zip(&bands).zip(&sent_count) {
        eprintln!("metrics-bandwidth: {name:<26} deadband {band:?}: sent {n} of {seconds}");
    }
    println!(
        "RESULT {{\"scenario\":\"metrics-bandwidth\",\"seconds\":{seconds},\"metrics\":{},\"bytes\":{delta_bytes},\"baseline_bytes\":{every_bytes},\"batched_baseline_bytes\":{batched_bytes},\"ratio\":{:.1},\"ratio_vs_batched\":{:.1},\"samples_sent\":{},\"max_error_ratio\":{max_ratio:.3}}}",
        METRICS.len(),
        every_bytes as f64 / delta_bytes.max(1) as f64,
        batched_bytes as f64 / delta_bytes.max(1) as f64,
        sent_count.iter().sum::<u64>(),
    );
}
