//! Peer audits' wiring: the task that tells the audit actor which peers this node audits
//! (the region's committed `audit:<peer id>` items it owns) and how the membership view
//! sees each of them. What an audit means is decided in `fleetmesh_actors::audit`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::Addr;
use fleetmesh_actors::actor::audit::{AuditActor, Audited};
use fleetmesh_actors::actor::heartbeat::{GetSnapshot, HeartbeatActor};
use fleetmesh_actors::actor::region::{GetRegion, RegionActor};
use fleetmesh_actors::audit::{Subject, audited_by};
use fleetmesh_actors::membership::Status;
use fleetmesh_actors::node;

/// Every second, reads the committed assignments and the membership view and hands the
/// audit actor the peers this node (`own`) audits, with their liveness. Ends when an
/// actor is gone.
pub fn follow(
    region: Addr<RegionActor>,
    heartbeat: Addr<HeartbeatActor>,
    audits: Addr<AuditActor>,
    own: node::Id,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Vec<node::Id>> = None;
        loop {
            every.tick().await;
            let Ok(snapshot) = region.send(GetRegion).await else {
                break;
            };
            let peers = audited_by(&snapshot.state.assignments, &own);
            let view: BTreeMap<node::Id, (Option<String>, Status)> = if peers.is_empty() {
                BTreeMap::new()
            } else {
                let Ok(snap) = heartbeat.send(GetSnapshot).await else {
                    break;
                };
                snap.peers
                    .into_iter()
                    .map(|p| {
                        let name = p.member.info.map(|i| i.name);
                        (p.member.id, (name, p.member.status))
                    })
                    .collect()
            };
            if last.as_ref() != Some(&peers) && (last.is_some() || !peers.is_empty()) {
                tracing::info!(peers = ?peers, "peers audited by this node");
            }
            let subjects = peers
                .iter()
                .map(|p| {
                    let (name, status) = view.get(p).cloned().unwrap_or((None, Status::Joining));
                    Subject {
                        peer: p.clone(),
                        name,
                        status,
                    }
                })
                .collect();
            if audits.send(Audited(subjects)).await.is_err() {
                break;
            }
            last = Some(peers);
        }
    })
}
