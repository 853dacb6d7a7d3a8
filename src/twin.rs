//! Feeding the node's twin at run time: what the host probes read (machine, binary,
//! packages), the files of interest as the baseline holds them, the policy in force, and
//! the desired state as its files change. The twin actor owns the twin; this task only
//! reads and hands over.
//!
//! Cadence: every `desired.reload_ms` the desired-state files and the package database's
//! modification time are looked at (a change is read at once); the machine's facts, the
//! files of interest and the policy version are read again every [`REFRESH`] as a repair
//! of anything a full mailbox dropped. The executable is hashed once, at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::Addr;
use fleetmesh_actors::actor::files::{FileActor, FileFacts};
use fleetmesh_actors::actor::policy::{GetPolicy, PolicyActor};
use fleetmesh_actors::actor::twin::{Observe, SetDesired, TwinActor};
use fleetmesh_actors::twin::{Input, Policy};

use crate::probe;

/// The machine's facts, the files of interest and the policy version are read again this
/// often.
pub const REFRESH: Duration = Duration::from_secs(30);

/// What the feed needs.
#[derive(Debug)]
pub struct Feed {
    /// The node's `watch.root` and `watch.paths`.
    pub root: PathBuf,
    pub watched: Vec<String>,
    pub role: String,
    pub name: String,
    pub desired: crate::desired::Loader,
    pub reload: Duration,
    pub twin: Addr<TwinActor>,
    pub files: Addr<FileActor>,
    pub policy: Addr<PolicyActor>,
    /// Where the files refused as they stand are shown (`GET /api/v1/drift`).
    pub refused: tokio::sync::watch::Sender<Vec<String>>,
    /// The node's connectivity and backlog as the encoder reports them (pushed), for
    /// the twin's health.
    pub sync: tokio::sync::watch::Receiver<Option<fleetmesh_actors::sync::Report>>,
}

/// Hands the twin actor the node's connectivity and backlog each time they change.
async fn vitals(
    twin: Addr<TwinActor>,
    mut sync: tokio::sync::watch::Receiver<Option<fleetmesh_actors::sync::Report>>,
) {
    loop {
        let v = sync
            .borrow_and_update()
            .as_ref()
            .map(|r| fleetmesh_actors::twin::health::Vitals {
                connectivity: r.connectivity,
                backlog: r.backlog,
            });
        // A full mailbox loses one reading; the next change brings a newer one.
        if let Some(v) = v {
            let _ = twin.try_send(Observe(Input::Vitals(v)));
        }
        if sync.changed().await.is_err() || !twin.connected() {
            return;
        }
    }
}

/// The package database's identity on disk: a change of it means a new reading.
fn packages_stamp(root: &Path) -> Option<(SystemTime, u64)> {
    ["var/lib/dpkg/status", "var/lib/rpm"]
        .iter()
        .find_map(|p| std::fs::metadata(root.join(p)).ok())
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// Runs until the twin actor is gone.
pub async fn run(mut feed: Feed) {
    tokio::spawn(vitals(feed.twin.clone(), feed.sync.clone()));
    let send = |twin: &Addr<TwinActor>, input: Input| twin.try_send(Observe(input)).is_ok();
    let software = {
        let s = tokio::task::spawn_blocking(probe::host::software).await;
        s.unwrap_or_default()
    };
    send(&feed.twin, Input::Software(software));
    let mut stamp = None;
    let mut first = true;
    let mut last_refresh: Option<Instant> = None;
    let mut ticker = tokio::time::interval(feed.reload);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !feed.twin.connected() {
            return;
        }
        let mut interest_changed = false;
        if let Some(set) = desired_step(&mut feed, &mut first) {
            interest_changed = true;
            if feed.twin.send(set).await.is_err() {
                return;
            }
        }
        let now_stamp = packages_stamp(&feed.root);
        let refresh = last_refresh.is_none_or(|t| t.elapsed() >= REFRESH);
        if refresh || now_stamp != stamp {
            stamp = now_stamp;
            let root = feed.root.clone();
            match tokio::task::spawn_blocking(move || probe::host::packages(&root)).await {
                Ok(Ok((source, list))) => {
                    send(&feed.twin, Input::Packages { source, list });
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "installed packages unreadable; the twin keeps the last reading")
                }
                Err(_) => {}
            }
        }
        if refresh || interest_changed {
            last_refresh = Some(Instant::now());
            let root = feed.root.clone();
            if let Ok(host) = tokio::task::spawn_blocking(move || probe::host::host(&root)).await {
                send(&feed.twin, Input::Host(host));
            }
            if let Ok(status) = feed.policy.send(GetPolicy).await {
                send(
                    &feed.twin,
                    Input::Policy(Policy {
                        version: status.version,
                    }),
                );
            }
            let paths = feed
                .desired
                .spec(&feed.role, &feed.name)
                .map(|s| s.interest().files)
                .unwrap_or_default();
            if !paths.is_empty() {
                let ask = FileFacts {
                    paths,
                    watched: feed.watched.clone(),
                };
                if let Ok(facts) = feed.files.send(ask).await {
                    send(&feed.twin, Input::Files(facts));
                }
            }
        }
    }
}

/// Re-reads the desired-state files; when anything changed (or at the first call), the
/// judge and this node's interest to hand to the twin actor.
fn desired_step(feed: &mut Feed, first: &mut bool) -> Option<SetDesired> {
    let before = feed.desired.generation();
    for e in feed.desired.refresh() {
        tracing::error!(error = %e, "desired state refused; its last good version stays");
    }
    let refused: Vec<String> = feed
        .desired
        .refused()
        .iter()
        .map(ToString::to_string)
        .collect();
    feed.refused.send_if_modified(|now| {
        let changed = *now != refused;
        *now = refused;
        changed
    });
    if feed.desired.generation() == before && !*first {
        return None;
    }
    *first = false;
    let catalog = Arc::new(feed.desired.catalog());
    let judge = {
        let catalog = catalog.clone();
        Arc::new(
            move |twin: &fleetmesh_actors::twin::Twin,
                  ctx: &fleetmesh_actors::twin::keep::Context| {
                let id = &twin.identity.value;
                catalog
                    .spec(&id.role, &id.name)
                    .map(|spec| fleetmesh_actors::desired::compare(&spec, twin, ctx))
            },
        ) as fleetmesh_actors::actor::twin::JudgeFn
    };
    let interest = catalog
        .spec(&feed.role, &feed.name)
        .map(|s| s.interest())
        .unwrap_or_default();
    Some(SetDesired { judge, interest })
}
