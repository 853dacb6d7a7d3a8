//! alert-storm: 10,000 alerts in 60 s through the alert actor (the lifecycle engine and
//! the delivery book, in this process), with the default route (grouped by region and
//! action, 10 s group wait, 5 min group interval, 10 notifications per receiver per
//! minute) and one receiver that takes every notification at once.
//!
//! The alerts come from 100 hosts of one region, with 4 actions and distinct subjects (so
//! every one is a new alert). The bench counts the notifications the receiver got and
//! the alerts they carried, samples the receiver's queue every 100 ms for its maximum,
//! and reads the process's resident memory (peak and at the end) and CPU time.
//!
//!     cargo bench --bench alert_storm -- [--alerts N] [--seconds S] [--after S]
//!
//! `--after`: how long to keep running once the storm is over (default 15 s: past the
//! group wait). Last line: RESULT {json}.

mod common;

use common::arg;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use fleetmesh_actors::actor::alert::{AlertActor, GetAlerts, Raise, Sink};
use fleetmesh_actors::alert::{Alert, Config, Outcome, SinkConfig};
use fleetmesh_actors::alerting::{self, Engine, Notification};
use fleetmesh_actors::spike::Severity;

fn alert(i: usize) -> Alert {
    let action = [
        "policy_violation",
        "unauthorized_access",
        "anomaly",
        "unresolved_change",
    ][i % 4];
    let host = format!("web-{:03}", i % 100);
    Alert {
        key: format!("{host}|storm|{i}"),
        at_unix_ms: 0,
        severity: Severity::High,
        category: "file".into(),
        action: action.into(),
        host,
        region: "eu".into(),
        role: "web".into(),
        rule: Some("web.toml:3#etc".into()),
        reason: "changed against policy".into(),
        decision: Some("violation".into()),
        term: None,
        subject: Some(format!("/etc/storm/{i}.conf")),
        details: Default::default(),
    }
}

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User and system CPU time of this process, in seconds.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) come 12th and 13th after the name: state first.
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (field(11) + field(12)) as f64 / 100.0
}

/// Notifications waiting for the receivers now.
async fn queued(actor: &Addr<AlertActor>) -> usize {
    let q = GetAlerts {
        since: 0,
        limit: 0,
        state: None,
    };
    actor
        .send(q)
        .await
        .map_or(0, |v| v.status.sinks.iter().map(|s| s.queued).sum())
}

fn main() {
    let n = arg("--alerts", 10_000) as usize;
    let seconds = arg("--seconds", 60);
    let after = arg("--after", 15);
    let system = System::new();
    system.block_on(async move {
        let got: Rc<RefCell<(usize, usize, usize)>> = Rc::default();
        let g = got.clone();
        let sink = Sink {
            config: SinkConfig {
                name: "hook".into(),
                queue: 10_000,
                batch: 100,
                retry_min_ms: 1000,
                retry_max_ms: 60_000,
            },
            deliver: Box::new(move |batch: Vec<Notification>| {
                let mut c = g.borrow_mut();
                for n in &batch {
                    c.0 += 1;
                    c.1 += n.alerts.len();
                    c.2 += n.omitted;
                }
                Box::pin(async { Outcome::Delivered })
            }),
            timeout: Duration::from_secs(5),
        };
        let mut lifecycle = alerting::Config::default();
        lifecycle.route = lifecycle.route.fan_out(&["hook".to_string()]);
        let engine = Engine::new(lifecycle).expect("the default route");
        let actor = AlertActor::new(
            Config {
                ring: 1000,
                seed: 1,
            },
            engine,
            vec![sink],
        )
        .start();
        let rss_before = status_kib("VmRSS:");
        let cpu_before = cpu_s();
        let start = Instant::now();
        let spacing = Duration::from_secs(seconds).as_secs_f64() / n.max(1) as f64;
        let mut max_queued = 0usize;
        let mut next_sample = Instant::now();
        for i in 0..n {
            let due = start + Duration::from_secs_f64(spacing * i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                actix::clock::sleep(wait).await;
            }
            actor.do_send(Raise(alert(i)));
            if Instant::now() >= next_sample {
                max_queued = max_queued.max(queued(&actor).await);
                next_sample += Duration::from_millis(100);
            }
            if (i + 1) % 2000 == 0 {
                eprintln!("{} of {n} alerts raised", i + 1);
            }
        }
        let storm_s = start.elapsed().as_secs_f64();
        let end = Instant::now() + Duration::from_secs(after);
        while Instant::now() < end {
            max_queued = max_queued.max(queued(&actor).await);
            actix::clock::sleep(Duration::from_millis(100)).await;
        }
        let view = actor
            .send(GetAlerts {
                since: 0,
                limit: 0,
                state: None,
            })
            .await
            .expect("answered");
        let (notifications, carried, omitted) = *got.borrow();
        println!(
            "RESULT {}",
            serde_json::json!({
                "scenario": "alert-storm",
                "alerts": n,
                "storm_s": storm_s,
                "observed_s": start.elapsed().as_secs_f64(),
                "notifications": notifications,
                "alerts_carried": carried,
                "alerts_omitted": omitted,
                "summaries": view.lifecycle.summaries,
                "held": view.lifecycle.held,
                "max_queued": max_queued,
                "rss_before_kib": rss_before,
                "rss_peak_kib": status_kib("VmHWM:"),
                "rss_end_kib": status_kib("VmRSS:"),
                "cpu_s": cpu_s() - cpu_before,
            })
        );
    });
}
