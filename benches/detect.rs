//! `detect`: from a file write returning to its spike being emitted, over N changes.
//!
//! Real components: notify's inotify watcher and the file probe thread, the file-detector
//! actor and the spike-encoder actor, in an actix system on a tokio runtime as in a node.
//! A writer thread rewrites one of 100 files under a temporary watch root
//! (open, truncate, write, close), takes the time when the write call returns, and waits
//! for the spike of that file to reach the network driver's queue (the moment a node
//! would publish it). One change at a time, so each latency stands alone. Sequence
//! reservations are written and fsynced as in a node (once per 1,024 spikes).
//!
//! Usage: cargo bench --bench detect -- [--changes N]
//! Last line: RESULT {json}

mod common;

use common::{arg, percentile};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use fleetmesh::probe::files as probe;
use fleetmesh_actors::actor::accounts::AccountsActor;
use fleetmesh_actors::actor::files::FileActor;
use fleetmesh_actors::actor::spikes::{SpikeActor, Storage};
use fleetmesh_actors::encoder::{self, Encoder};
use fleetmesh_actors::label::Vocabulary;
use fleetmesh_actors::{node, wire};

fn main() {
    let changes = arg("--changes", 10_000).max(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    for i in 0..100 {
        std::fs::write(etc.join(format!("f{i}.conf")), "initial\n").expect("seed");
    }
    let (spike_tx, spike_rx) = std::sync::mpsc::channel::<(String, Instant)>();
    let root = tmp.path().to_path_buf();
    let seq_file = tmp.path().join("spike-seq");
    let (mut journal, _) = fleetmesh::journal::Journal::open(
        fleetmesh::journal::Config {
            dir: tmp.path().join("journal"),
            fsync: fleetmesh::journal::Fsync::Always,
            segment_bytes: 16 << 20,
            retain_bytes: 256 << 20,
        },
        0,
    )
    .expect("the journal opens");
    let system = System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the tokio runtime must start")
    });
    let started = system.block_on(async move {
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(65_536);
        let spikes = SpikeActor::new(
            Encoder::new(
                encoder::Config {
                    origin: node::Id::from("bench"),
                    role: "web".into(),
                    block: encoder::BLOCK,
                },
                Vocabulary::default(),
                0,
            ),
            "bench".into(),
            // As in a node: each reservation is written and fsynced before use, and every
            // spike is journaled (fsync = always) before it is published.
            Storage {
                reserve: Box::new(move |until| {
                    fleetmesh::durable::write_durable(&seq_file, until.to_string().as_bytes())
                }),
                journal: Box::new(move |batch| {
                    journal.append(batch).map_err(std::io::Error::other)
                }),
                // No master in this bench: nothing is acknowledged or replayed.
                ack: Box::new(|_| Ok(())),
                read: Box::new(|_, _| Ok(Vec::new())),
                last_seq: 0,
                recent: Vec::new(),
            },
            1024,
            out_tx,
            tokio::sync::mpsc::channel(1).0,
            fleetmesh_actors::sync::Config::default(),
        )
        .start();
        let files = FileActor::new(
            Default::default(),
            spikes.clone().recipient(),
            spikes.clone().recipient(),
            spikes.clone().recipient(),
            Arc::new(|_: &[u8]| Ok(())),
        )
        .start();
        let accounts = AccountsActor::new(
            None,
            spikes.clone().recipient(),
            spikes.clone().recipient(),
            spikes.clone().recipient(),
            Arc::new(|_: &[u8]| Ok(())),
        )
        .start();
        tokio::spawn(async move {
            while let Some(p) = out_rx.recv().await {
                let now = Instant::now();
                if let wire::Body::Spikes(batch) = p.body {
                    for s in batch {
                        let _ = spike_tx.send((s.subject, now));
                    }
                }
            }
        });
        let probe = probe::start(
            probe::Config {
                root,
                paths: vec!["/etc".into()],
                max_hash_bytes: 16 << 20,
                hash_rate: probe::hash_limiter(64),
                verify_every: Duration::from_secs(3600),
                fallback_every: Duration::from_secs(60),
                queue: 65_536,
            },
            probe::Sinks {
                files: files.clone().recipient(),
                coverage: files.recipient(),
                accounts: accounts.recipient(),
            },
            Arc::default(),
        )
        .expect("probe starts");
        while !probe
            .progress
            .done
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Arc::new(probe)
    });
    // The writer measures on its own thread and ends the process; this thread runs the
    // actix system (it owns the actors and must stay where it was built).
    std::thread::spawn(move || {
        let _probe = started;
        std::thread::sleep(Duration::from_millis(200));
        let mut lat = Vec::with_capacity(changes as usize);
        let mut lost = 0u64;
        for i in 0..changes {
            let name = format!("f{}.conf", i % 100);
            let subject = format!("/etc/{name}");
            std::fs::write(etc.join(&name), format!("value = {i}\n")).expect("write");
            let t0 = Instant::now();
            loop {
                match spike_rx.recv_timeout(Duration::from_secs(2)) {
                    Ok((s, at)) if s == subject => {
                        lat.push(at.saturating_duration_since(t0).as_micros() as u64);
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        lost += 1;
                        break;
                    }
                }
            }
            if i % 2000 == 1999 {
                eprintln!("detect: {}/{changes} changes", i + 1);
            }
        }
        lat.sort_unstable();
        println!(
            "RESULT {{\"scenario\":\"detect\",\"samples\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"lost\":{lost}}}",
            lat.len(),
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(0),
        );
        std::process::exit(0);
    });
    let _ = system.run();
}
