//! `encode`: spikes per second through the spike encoder on one core.
//!
//! Each iteration stamps one observation (sequence number, time, role label from the
//! default four-rule vocabulary, with a glob and an approved list) and serializes the spike into a
//! versioned wire frame, as it would be before publishing. Single thread.
//!
//! Usage: cargo bench --bench encode -- [--spikes N]
//! Last line: RESULT {json}

mod common;

use common::arg;
use std::hint::black_box;
use std::time::Instant;

use fleetmesh_actors::encoder::{self, Encoder};
use fleetmesh_actors::node;
use fleetmesh_actors::spike::{Change, Digest, FieldChange, Kind, Layer, Observation, Value};
use fleetmesh_actors::wire;

/// A mix of what detectors report: file modifications with digests, users with fields.
fn observations() -> Vec<Observation> {
    let mut out = Vec::new();
    for i in 0..64u8 {
        let mut f = Observation::new(
            Kind::File,
            Change::Modified,
            format!("/etc/app/conf.d/{i}.conf"),
            Layer::Realtime,
        );
        f.before = Some(Digest([i; 32]));
        f.after = Some(Digest([i.wrapping_add(1); 32]));
        out.push(f);
        let mut u = Observation::new(
            Kind::User,
            Change::Added,
            if i % 2 == 0 {
                format!("deploy{i}")
            } else {
                format!("user{i}")
            },
            Layer::Realtime,
        );
        u.fields.insert(
            "shell".into(),
            FieldChange {
                before: None,
                after: Some(Value::Text("/bin/bash".into())),
            },
        );
        u.fields.insert(
            "uid".into(),
            FieldChange {
                before: None,
                after: Some(Value::Int(1000 + i64::from(i))),
            },
        );
        out.push(u);
    }
    out
}

fn main() {
    let n = arg("--spikes", 2_000_000);
    // The vocabulary a node runs with: config/default.toml's.
    let vocabulary = fleetmesh::settings::load(&fleetmesh::settings::Sources::default())
        .expect("default settings load")
        .vocabulary;
    let mut enc = Encoder::new(
        encoder::Config {
            origin: node::Id::from("12D3KooWBenchOriginPeerIdPlaceholderValue0000"),
            role: "web".into(),
            block: encoder::BLOCK,
        },
        vocabulary,
        0,
    );
    let obs = observations();
    let mut bytes = 0usize;
    let mut reserves = 0u64;
    // Warm-up, then the measured run.
    for i in 0..10_000usize {
        let (_, s) = enc.encode(1, obs[i % obs.len()].clone());
        black_box(wire::encode(&s).expect("encodes"));
    }
    let start = Instant::now();
    for i in 0..n as usize {
        let (r, s) = enc.encode(1_700_000_000_000 + i as u64, obs[i % obs.len()].clone());
        reserves += u64::from(r.is_some());
        let frame = wire::encode(&s).expect("encodes");
        bytes += frame.len();
        black_box(frame);
    }
    let secs = start.elapsed().as_secs_f64();
    let per_s = n as f64 / secs;
    println!(
        "RESULT {{\"scenario\":\"encode\",\"samples\":{n},\"per_s\":{per_s:.0},\"ns_per_spike\":{:.0},\"bytes\":{bytes},\"mean_frame_bytes\":{:.1},\"reservations\":{reserves}}}",
        secs * 1e9 / n as f64,
        bytes as f64 / n as f64
    );
}
