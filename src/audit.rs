//! Peer audits' wiring: the audit actor learns which peers this node audits from the
//! region actor (the committed `audit:<peer id>` items it owns, pushed on change) and how
//! the membership view sees each of them from the heartbeat actor (pushed on change).
//! What an audit means is decided in `fleetmesh_actors::audit`.

use actix::Addr;
use fleetmesh_actors::actor::audit::AuditActor;
use fleetmesh_actors::actor::heartbeat::{HeartbeatActor, Subscribe};
use fleetmesh_actors::actor::region::{RegionActor, SubscribeAssigned};

/// Subscribes the audit actor to the assignments and the region's members.
pub async fn subscribe(
    region: &Addr<RegionActor>,
    heartbeat: &Addr<HeartbeatActor>,
    audits: &Addr<AuditActor>,
) {
    let _ = heartbeat.send(Subscribe(audits.clone().recipient())).await;
    let _ = region
        .send(SubscribeAssigned(audits.clone().recipient()))
        .await;
}
