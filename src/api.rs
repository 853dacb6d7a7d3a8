//! The HTTP API (actix-web, JSON): `/api/v1/node`, `/api/v1/peers`, `/api/v1/anomalies`,
//! `/healthz`, `/metrics`, and the others routed in [`start`].
//!
//! Handlers read: the node's facts, a snapshot from the heartbeat actor, the driver's
//! network state. Operators change things with `POST /api/v1/patterns/approve` (an
//! approval, taken by the region's master) and the alert lifecycle's actions (ack,
//! resolve, silences: see [`alerts`]). The server runs one worker: the API is for
//! operators and scrapers, not a data path.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use fleetmesh_actors::actor::anomaly::GetAnomalies;
use fleetmesh_actors::actor::heartbeat::{GetSnapshot, PeerView, Snapshot};
use fleetmesh_actors::heartbeat::millis;
use fleetmesh_actors::membership::Status;
use fleetmesh_actors::spike::Kind;
use fleetmesh_actors::sync::Report as SyncReport;
use serde::{Deserialize, Serialize};

use crate::node::Shared;

mod alerts;
mod trust;
mod twins;

/// `GET /api/v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub peer_id: String,
    pub name: String,
    pub region: String,
    pub role: String,
    pub incarnation: u64,
    pub version: String,
    pub listen_addresses: Vec<String>,
    pub uptime_ms: u64,
    pub connected_peers: usize,
    /// Peers by status, as this node sees them.
    pub peers: std::collections::BTreeMap<String, u32>,
    pub heartbeats_sent: u64,
    /// Where this node stands (`connectivity`) and its sync debt: spikes journaled and
    /// not yet acknowledged by the master, the oldest one's age, replay progress.
    pub sync: Option<SyncReport>,
}

/// One element of `GET /api/v1/peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerEntry {
    pub peer_id: String,
    pub name: Option<String>,
    pub region: Option<String>,
    pub role: Option<String>,
    pub status: String,
    pub last_seen_ms: u64,
    pub addresses: Vec<String>,
    pub connected: bool,
    pub incarnation: Option<u64>,
    pub heartbeat_seq: u64,
    pub heartbeats: u64,
    pub uptime_ms: u64,
    /// The peer's connectivity and sync debt, as its latest heartbeat reported them.
    pub sync: Option<SyncReport>,
}

impl From<&PeerView> for PeerEntry {
    fn from(p: &PeerView) -> Self {
        let m = &p.member;
        PeerEntry {
            peer_id: m.id.to_string(),
            name: m.info.as_ref().map(|i| i.name.clone()),
            region: m.info.as_ref().map(|i| i.region.clone()),
            role: m.info.as_ref().map(|i| i.role.clone()),
            status: m.status.as_str().to_string(),
            last_seen_ms: p.last_seen_ms,
            addresses: m.addresses.clone(),
            connected: m.connected,
            incarnation: m.info.as_ref().map(|i| i.incarnation),
            heartbeat_seq: m.last_seq,
            heartbeats: m.heartbeats,
            uptime_ms: m.uptime_ms,
            sync: m.sync.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Problem {
    pub(crate) error: String,
}

pub(crate) fn unavailable(what: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(Problem {
        error: format!("{what} is not answering"),
    })
}

/// Asks an actor, waiting at most 2 s: a wedged actor must not hang the API.
pub(crate) async fn ask<A, M>(addr: &actix::Addr<A>, msg: M) -> Option<M::Result>
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Handler<M>,
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    tokio::time::timeout(Duration::from_secs(2), addr.send(msg))
        .await
        .ok()?
        .ok()
}

async fn snapshot(shared: &Shared) -> Option<Snapshot> {
    ask(&shared.heartbeat, GetSnapshot).await
}

async fn node(shared: web::Data<Shared>) -> HttpResponse {
    let Some(snap) = snapshot(&shared).await else {
        return unavailable("the heartbeat actor");
    };
    let net = shared.net.borrow().clone();
    let sync = shared.sync.borrow().clone();
    let peers = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), snap.counts.get(*s)))
        .collect();
    HttpResponse::Ok().json(NodeView {
        peer_id: shared.peer_id.clone(),
        name: shared.info.name.clone(),
        region: shared.info.region.clone(),
        role: shared.info.role.clone(),
        incarnation: shared.info.incarnation,
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen_addresses: net.listen_addrs.iter().map(|a| a.to_string()).collect(),
        uptime_ms: millis(shared.started.elapsed()),
        connected_peers: net.connected,
        peers,
        heartbeats_sent: snap.heartbeats_sent,
        sync,
    })
}

async fn peers(shared: web::Data<Shared>) -> HttpResponse {
    let Some(snap) = snapshot(&shared).await else {
        return unavailable("the heartbeat actor");
    };
    let list: Vec<PeerEntry> = snap.peers.iter().map(PeerEntry::from).collect();
    HttpResponse::Ok().json(list)
}

async fn healthz(shared: web::Data<Shared>) -> HttpResponse {
    match snapshot(&shared).await {
        Some(_) => HttpResponse::Ok().json(serde_json::json!({"status": "ok"})),
        None => unavailable("the heartbeat actor"),
    }
}

/// Readiness: 200 once the start-up verification and first readings are handed over,
/// else 503 `starting` with the verification's progress.
async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    use std::sync::atomic::Ordering;
    let read = shared.verification.read.load(Ordering::Relaxed);
    if shared.ready.load(Ordering::Acquire) {
        return HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }));
    }
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "status": "starting",
        "since_ms": shared.started.elapsed().as_millis() as u64,
        "verification": {
            "entries_read": read,
            "done": shared.verification.done.load(Ordering::Acquire),
        },
    }))
}

async fn metrics(shared: web::Data<Shared>) -> HttpResponse {
    let m = &shared.metrics;
    if let Some(snap) = snapshot(&shared).await {
        for s in Status::ALL {
            m.peers
                .get_or_create(&crate::metrics::StatusLabels {
                    status: s.as_str().to_string(),
                })
                .set(i64::from(snap.counts.get(s)));
        }
        m.heartbeats_late.set(snap.heartbeats_late);
    }
    if let Some(alerts) = ask(
        &shared.alerts,
        fleetmesh_actors::actor::alert::GetAlerts {
            since: 0,
            limit: 0,
            state: None,
        },
    )
    .await
    {
        m.set_alerts(&alerts.status);
    }
    if let Some(a) = &shared.anomaly
        && let Some(r) = ask(a, GetAnomalies).await
    {
        // The detector counts; the counter follows it (never backwards, however many
        // scrapes run at once).
        m.anomalies_raised
            .inner()
            .fetch_max(r.raised, std::sync::atomic::Ordering::Relaxed);
    }
    m.uptime.set(shared.started.elapsed().as_secs());
    match m.encode() {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// Query of `GET /api/v1/spikes`.
#[derive(Debug, Deserialize)]
pub struct SpikeQuery {
    /// The spikes following this sequence number (paging); without it, the latest.
    pub since: Option<u64>,
    /// `file`, `user`, `group`, `process`, `network`, `metric`, `coverage`, `reconcile`,
    /// `service`, `audit`, `anomaly`.
    pub kind: Option<String>,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
}

pub(crate) fn bad_request(error: String) -> HttpResponse {
    HttpResponse::BadRequest().json(Problem { error })
}

async fn spikes(shared: web::Data<Shared>, q: web::Query<SpikeQuery>) -> HttpResponse {
    let kind = match &q.kind {
        None => None,
        Some(k) => match serde_json::from_value::<Kind>(serde_json::Value::String(k.clone())) {
            Ok(k) => Some(k),
            Err(_) => return bad_request(format!("unknown spike kind `{k}`")),
        },
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    HttpResponse::Ok().json(shared.recent.query(q.since, kind, limit))
}

/// Query of `GET /api/v1/decisions`.
#[derive(Debug, Deserialize)]
pub struct DecisionQuery {
    /// The decisions following this sequence number (paging); without it, the latest.
    pub since: Option<u64>,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// `GET /api/v1/decisions`: the latest policy decisions, oldest first.
async fn decisions(shared: web::Data<Shared>, q: web::Query<DecisionQuery>) -> HttpResponse {
    use fleetmesh_actors::actor::policy::GetDecisions;
    let query = GetDecisions {
        since: q.since,
        limit: q.limit.unwrap_or(1000).min(10_000),
    };
    match ask(&shared.policy, query).await {
        Some(list) => HttpResponse::Ok().json(list),
        None => unavailable("the policy actor"),
    }
}

/// `GET /api/v1/policy`: the policy in force (file, version, loaded at), the last refused
/// edit if any, and the decisions counted since start.
async fn policy(shared: web::Data<Shared>) -> HttpResponse {
    match ask(&shared.policy, fleetmesh_actors::actor::policy::GetPolicy).await {
        Some(status) => HttpResponse::Ok().json(status),
        None => unavailable("the policy actor"),
    }
}

/// `GET /api/v1/patterns`: the approved patterns this node holds (how and when each
/// arrived) and the approvals it refused (forged or stale), with why.
async fn patterns(shared: web::Data<Shared>) -> HttpResponse {
    match ask(&shared.policy, fleetmesh_actors::actor::policy::GetPatterns).await {
        Some(p) => HttpResponse::Ok().json(p),
        None => unavailable("the policy actor"),
    }
}

/// Body of `POST /api/v1/patterns/approve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Roles for which the change is normal from now on.
    pub roles: std::collections::BTreeSet<String>,
    pub kind: Kind,
    pub change: fleetmesh_actors::spike::Change,
    pub subject: String,
    /// The content digest after the change (hex); absent: any content.
    #[serde(default)]
    pub after: Option<fleetmesh_actors::spike::Digest>,
    /// Who approves (kept in the approval).
    #[serde(default)]
    pub by: Option<String>,
}

/// `POST /api/v1/patterns/approve`: an operator approves a pattern. Only the region's
/// master takes it (409 names the master otherwise); it is committed to the region's log
/// and gossiped to the fleet, signed by the master.
async fn approve(shared: web::Data<Shared>, body: web::Json<ApproveBody>) -> HttpResponse {
    let b = body.into_inner();
    let msg = fleetmesh_actors::actor::fleet::Approve {
        pattern: fleetmesh_actors::fleet::Pattern {
            roles: b.roles,
            kind: b.kind,
            change: b.change,
            subject: b.subject,
            after: b.after,
        },
        by: format!("operator {}", b.by.as_deref().unwrap_or("api")),
    };
    match ask(&shared.fleet, msg).await {
        Some(Ok(a)) => HttpResponse::Ok().json(serde_json::json!({
            "id": a.id(),
            "approval": a,
        })),
        Some(Err(why)) => HttpResponse::Conflict().json(Problem { error: why }),
        None => unavailable("the fleet actor"),
    }
}

/// `GET /api/v1/fleet`: fleet events this node raised (as master) or heard (emergencies),
/// the correlation groups open and changes held.
async fn fleet(shared: web::Data<Shared>) -> HttpResponse {
    match ask(&shared.fleet, fleetmesh_actors::actor::fleet::GetFleet).await {
        Some(f) => HttpResponse::Ok().json(f),
        None => unavailable("the fleet actor"),
    }
}

/// `GET /api/v1/census`: every region this node knows, its own first (as this node sees
/// it, `source` `local`), then each other region as its master last published it
/// (`source` `master`, with `received_unix_ms` and `age_ms`).
async fn census(shared: web::Data<Shared>) -> HttpResponse {
    use fleetmesh_actors::actor::heartbeat::GetCensus;
    let Some(view) = ask(&shared.heartbeat, GetCensus).await else {
        return unavailable("the heartbeat actor");
    };
    let now = fleetmesh_actors::actor::unix_ms();
    let mut regions = Vec::with_capacity(1 + view.foreign.len());
    let mut own = serde_json::to_value(&view.region).unwrap_or_default();
    own["source"] = "local".into();
    own["age_ms"] = 0.into();
    regions.push(own);
    for k in &view.foreign {
        let mut r = serde_json::to_value(k).unwrap_or_default();
        r["source"] = "master".into();
        r["age_ms"] = now.saturating_sub(k.received_unix_ms).into();
        regions.push(r);
    }
    HttpResponse::Ok().json(serde_json::json!({
        "node": {"peer_id": shared.peer_id, "name": shared.info.name, "region": shared.info.region},
        "at_unix_ms": now,
        "regions": regions,
        "refused": view.refused,
    }))
}

/// `GET /api/v1/fleet/regions`: one row per region from the census, its own first: its
/// master and term, members by status and by connectivity, the members not alive (at most
/// 256), drift and alert counts, lifecycle phases, how old it is, and (another region)
/// how its authority was verified.
async fn fleet_regions(shared: web::Data<Shared>) -> HttpResponse {
    use fleetmesh_actors::actor::heartbeat::GetCensus;
    use fleetmesh_actors::membership::Status;
    let Some(view) = ask(&shared.heartbeat, GetCensus).await else {
        return unavailable("the heartbeat actor");
    };
    let now = fleetmesh_actors::actor::unix_ms();
    let trusted = shared
        .trust
        .registry
        .lock()
        .map(|r| r.regions().clone())
        .unwrap_or_default();
    let row = |s: &fleetmesh_actors::census::Summary, source: &str, age_ms: u64| {
        let mut connectivity = std::collections::BTreeMap::new();
        for m in &s.members {
            let c = m.connectivity.map_or("unknown", |c| c.as_str());
            *connectivity.entry(c).or_insert(0u32) += 1;
        }
        let not_alive: Vec<serde_json::Value> = s
            .members
            .iter()
            .filter(|m| m.status != Status::Alive)
            .take(256)
            .map(|m| serde_json::json!({"peer": m.peer, "name": m.name, "role": m.role, "status": m.status}))
            .collect();
        let master_name = s.master.as_ref().and_then(|p| {
            s.members
                .iter()
                .find(|m| &m.peer == p)
                .map(|m| m.name.clone())
        });
        let authority = trusted.get(&s.region).map(|k| {
            serde_json::json!({"root": k.root_kind, "voters": k.voters.len(), "verified_term": k.term})
        });
        serde_json::json!({
            "region": s.region,
            "term": s.term,
            "master": s.master,
            "master_name": master_name,
            "members": s.counts.values().sum::<u32>(),
            "counts": s.counts,
            "connectivity": connectivity,
            "not_alive": not_alive,
            "drift": s.drift.as_ref().map(|d| &d.counts),
            "alerts": s.alerts,
            "phases": s.phases,
            "source": source,
            "age_ms": age_ms,
            "authority": authority,
        })
    };
    // This node's own region: its own view, with what only its master knows (drift,
    // alerts) from the master's summary when this node does not lead.
    let mut own = view.region.clone();
    if let Some(home) = &view.home
        && own.drift.is_none()
    {
        own.drift = home.summary.drift.clone();
        own.alerts = home.summary.alerts.clone();
    }
    let mut regions = vec![row(&own, "local", 0)];
    for k in &view.foreign {
        regions.push(row(
            &k.summary,
            "master",
            now.saturating_sub(k.received_unix_ms),
        ));
    }
    HttpResponse::Ok().json(serde_json::json!({
        "node": {"peer_id": shared.peer_id, "name": shared.info.name, "region": shared.info.region},
        "at_unix_ms": now,
        "regions": regions,
    }))
}

/// A committed command in one line (an approval without its key and signature bytes).
fn describe(c: &fleetmesh_actors::region::Command) -> String {
    match c {
        fleetmesh_actors::region::Command::Approve(a) => format!(
            "Approve {{ id: {}, kind: {}, subject: {:?}, roles: {:?}, by: {:?} }}",
            a.id(),
            a.pattern.kind.as_str(),
            a.pattern.subject,
            a.pattern.roles,
            a.by
        ),
        fleetmesh_actors::region::Command::Link(l) => format!(
            "Link {{ seq: {}, voters: {:?}, digest: {} }}",
            l.seq,
            l.voters.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
            l.digest()
        ),
        other => format!("{other:?}"),
    }
}

/// `GET /api/v1/detectors`: per-layer counters and verification times.
/// `GET /api/v1/region`: the region's master, term, voters and authoritative state, as
/// this node sees them.
async fn region(shared: web::Data<Shared>) -> HttpResponse {
    use fleetmesh_actors::actor::region::{GetIntake, GetRegion};
    use fleetmesh_actors::region::Role;
    let Some(r) = ask(&shared.region, GetRegion).await else {
        return unavailable("the region actor");
    };
    let snap = snapshot(&shared).await.unwrap_or_default();
    let intake = ask(&shared.region, GetIntake).await.unwrap_or_default();
    let own_sync = shared.sync.borrow().clone();
    let name_of = |raft: u64| r.names.get(&raft).map(|(n, p)| (n.clone(), p.clone()));
    let master = r.status.as_ref().and_then(|s| s.leader).map(|l| {
        let (name, peer) = name_of(l).unwrap_or_default();
        serde_json::json!({"name": name, "peer_id": peer.map(|p| p.to_string())})
    });
    let role = r.status.as_ref().map(|s| match s.role {
        Role::Leader => "master",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
    });
    let voters: Vec<serde_json::Value> = r
        .names
        .iter()
        .map(|(raft, (name, peer))| {
            let voting = r.status.as_ref().is_some_and(|s| s.voters.contains(raft));
            let learning = r.status.as_ref().is_some_and(|s| s.learners.contains(raft));
            let membership = if voting { "voter" } else if learning { "learner" } else { "none" };
            serde_json::json!({"name": name, "peer_id": peer.as_ref().map(|p| p.as_str()), "voting": voting, "membership": membership})
        })
        .collect();
    let members: Vec<serde_json::Value> = snap
        .peers
        .iter()
        .filter(|p| {
            p.member
                .info
                .as_ref()
                .is_some_and(|i| i.region == shared.info.region)
        })
        .map(|p| {
            let mark = intake.get(&p.member.id).map_or(0, |s| s.mark);
            let seen = fleetmesh_actors::sync::as_master_sees(
                p.member.status,
                p.member.sync.as_ref(),
                mark,
            );
            serde_json::json!({
                "peer_id": p.member.id.as_str(),
                "name": p.member.info.as_ref().map(|i| &i.name),
                "status": p.member.status.as_str(),
                "connected": p.member.connected,
                "connectivity": seen.as_str(),
                "sync": p.member.sync,
                "owns": r.state.assignments.values().filter(|o| **o == p.member.id).count(),
            })
        })
        .chain(std::iter::once(serde_json::json!({
            "peer_id": shared.peer_id,
            "name": shared.info.name,
            "status": "self",
            "connected": true,
            "connectivity": own_sync.as_ref().and_then(|s| s.connectivity).map(|c| c.as_str()),
            "sync": own_sync,
            "owns": r.state.assignments.values().filter(|o| o.as_str() == shared.peer_id).count(),
        })))
        .collect();
    let intake: std::collections::BTreeMap<&str, _> =
        intake.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let recent: Vec<serde_json::Value> = r
        .recent
        .iter()
        .map(|c| serde_json::json!({"index": c.index, "term": c.term, "command": describe(&c.command)}))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "region": r.region,
        "master": master,
        "term": r.status.as_ref().map(|s| s.term),
        "role": role,
        "autonomous": r.status.as_ref().is_none_or(|s| s.autonomous()),
        "no_master_reason": r.no_master,
        "refused": r.refused.iter().map(|(name, holder, claimant)| serde_json::json!({"name": name, "holder": holder.as_str(), "claimant": claimant.as_str()})).collect::<Vec<_>>(),
        "commit": r.status.as_ref().map(|s| s.commit),
        "applied": r.state.applied,
        "snapshot_index": r.status.as_ref().map(|s| s.snapshot),
        "snapshots_oversized": r.snapshots_oversized,
        "log_entries": r.status.as_ref().map(|s| s.log_entries),
        "voters": voters.iter().filter(|v| v["voting"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>(),
        "consensus_members": voters,
        "founders": r.founders.iter().map(|f| r.names.get(f).map_or_else(|| f.to_string(), |(n, _)| n.clone())).collect::<Vec<_>>(),
        "members": members,
        "dead": r.state.dead.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        "phases": r.state.phases.values().collect::<Vec<_>>(),
        "names_bound": r.state.names.iter().map(|(n, p)| (n.clone(), p.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
        "assignments": r.state.assignments.iter().map(|(k, v)| (k.clone(), v.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
        "recent_commands": recent,
        "intake": intake,
        "unroutable_messages": r.unroutable,
        "refused_messages": r.refused_messages,
        "sent_messages": r.sent,
        "received_messages": r.received,
    }))
}

/// `GET /api/v1/assignments`: who owns each work item, as committed by the master.
async fn assignments(shared: web::Data<Shared>) -> HttpResponse {
    use fleetmesh_actors::actor::region::GetRegion;
    let Some(r) = ask(&shared.region, GetRegion).await else {
        return unavailable("the region actor");
    };
    let mine: Vec<&String> = r
        .state
        .assignments
        .iter()
        .filter(|(_, o)| o.as_str() == shared.peer_id)
        .map(|(i, _)| i)
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "term": r.status.as_ref().map(|s| s.term),
        "applied": r.state.applied,
        "items": r.state.assignments.iter().map(|(k, v)| (k.clone(), v.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
        "mine": mine,
    }))
}

/// `GET /api/v1/audits`: the peers this node audits (and those it audited before and
/// remembers), each with its latest answer, verdict and counters.
async fn audits(shared: web::Data<Shared>) -> HttpResponse {
    use fleetmesh_actors::actor::audit::GetAudits;
    match ask(&shared.audits, GetAudits).await {
        Some(list) => HttpResponse::Ok().json(serde_json::json!({ "audits": list })),
        None => unavailable("the audit actor"),
    }
}

/// `GET /api/v1/anomalies`: this node's metrics against its same-role peers (value,
/// median, MAD, z-score, peers, deviating since, last raised) and the detector's settings.
async fn anomalies(shared: web::Data<Shared>) -> HttpResponse {
    let Some(a) = &shared.anomaly else {
        return HttpResponse::Ok().json(serde_json::json!({ "enabled": false }));
    };
    match ask(a, GetAnomalies).await {
        Some(report) => {
            let mut body = serde_json::to_value(report).unwrap_or_default();
            if let Some(o) = body.as_object_mut() {
                o.insert("enabled".into(), true.into());
            }
            HttpResponse::Ok().json(body)
        }
        None => unavailable("the anomaly detector"),
    }
}

async fn detectors(shared: web::Data<Shared>) -> HttpResponse {
    let st = shared.files_status.borrow().clone();
    HttpResponse::Ok().json(serde_json::json!({
        "files": {
            "layers": st.counters,
            "entries": st.entries,
            "last_full_verification_unix_ms": st.last_full_verification_unix_ms,
            "last_startup_verification_unix_ms": st.last_startup_verification_unix_ms,
        }
    }))
}

/// The live event stream (server-sent events; see [`crate::events`]). A client that
/// reconnects sends `Last-Event-ID` (browsers do) or `?last_event_id=`.
async fn events(shared: web::Data<Shared>, req: actix_web::HttpRequest) -> HttpResponse {
    let header = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("last_event_id").cloned());
    let last = match header.or(query) {
        None => None,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(id) => Some(id),
            Err(_) => {
                return HttpResponse::BadRequest().json(Problem {
                    error: format!("Last-Event-ID must be an event id (a number), not {v:?}"),
                });
            }
        },
    };
    use futures::StreamExt;
    let stream = shared
        .events
        .subscribe(last)
        .map(Ok::<_, std::convert::Infallible>);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream)
}

/// Refuses, with 401, what [`crate::access::Access`] does not allow.
async fn guard(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<actix_web::body::BoxBody>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let checked = req.app_data::<web::Data<crate::access::Access>>().map(|a| {
        let read = matches!(
            *req.method(),
            actix_web::http::Method::GET | actix_web::http::Method::HEAD
        );
        let token = crate::access::presented(req.request());
        a.check(req.path(), read, token.as_deref())
    });
    match checked {
        Some(Ok(())) => next.call(req).await,
        // Without its rule the API serves nothing (never open by accident).
        None => {
            let response = HttpResponse::InternalServerError().json(Problem {
                error: "the API's access rule is not set".into(),
            });
            Ok(req.into_response(response))
        }
        Some(Err(refusal)) => {
            let response = HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer realm=\"fleetmesh\""))
                .json(Problem {
                    error: refusal.message().into(),
                });
            Ok(req.into_response(response))
        }
    }
}

/// Binds the API on `addr` and returns the server (not yet awaited) and the bound address.
pub fn start(
    addr: SocketAddr,
    access: crate::access::Access,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shared: Shared,
) -> anyhow::Result<(Server, SocketAddr)> {
    let data = web::Data::new(shared);
    let access = web::Data::new(access);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(access.clone())
            .wrap(actix_web::middleware::from_fn(guard))
            .route("/api/v1/node", web::get().to(node))
            .route("/api/v1/peers", web::get().to(peers))
            .route("/api/v1/spikes", web::get().to(spikes))
            .route("/api/v1/detectors", web::get().to(detectors))
            .route("/api/v1/decisions", web::get().to(decisions))
            .route("/api/v1/policy", web::get().to(policy))
            .route("/api/v1/patterns", web::get().to(patterns))
            .route("/api/v1/patterns/approve", web::post().to(approve))
            .route("/api/v1/fleet", web::get().to(fleet))
            .route("/api/v1/census", web::get().to(census))
            .route("/api/v1/fleet/regions", web::get().to(fleet_regions))
            .route("/api/v1/alerts", web::get().to(alerts::list))
            .route("/api/v1/alerts/{id}", web::get().to(alerts::one))
            .route("/api/v1/alerts/{id}/ack", web::post().to(alerts::ack))
            .route(
                "/api/v1/alerts/{id}/resolve",
                web::post().to(alerts::resolve),
            )
            .route("/api/v1/silences", web::get().to(alerts::silences))
            .route("/api/v1/silences", web::post().to(alerts::silence))
            .route("/api/v1/silences/{id}", web::delete().to(alerts::expire))
            .route("/api/v1/twins", web::get().to(twins::list))
            // `{node}` may be `region/name`: the SBOM's route goes first.
            .route("/api/v1/twins/{node:.+}/sbom", web::get().to(twins::sbom))
            .route(
                "/api/v1/twins/{node:.+}/metrics",
                web::get().to(twins::metrics),
            )
            .route(
                "/api/v1/twins/{node:.+}/phase",
                web::post().to(twins::phase),
            )
            .route("/api/v1/twins/{node:.+}", web::get().to(twins::one))
            .route("/api/v1/drift", web::get().to(twins::drift))
            .route("/api/v1/region", web::get().to(region))
            .route("/api/v1/region/charter", web::post().to(trust::charter))
            .route("/api/v1/fleet/trust", web::get().to(trust::trust))
            .route("/api/v1/assignments", web::get().to(assignments))
            .route("/api/v1/audits", web::get().to(audits))
            .route("/api/v1/anomalies", web::get().to(anomalies))
            .route("/api/v1/events", web::get().to(events))
            .route("/api/v1/session", web::post().to(crate::console::login))
            .route("/api/v1/session", web::delete().to(crate::console::logout))
            .route("/", web::get().to(crate::console::asset))
            .route("/console/{file:.*}", web::get().to(crate::console::asset))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2);
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(addr, (*tls).clone()),
        None => server.bind(addr),
    }
    .map_err(|e| anyhow::anyhow!("cannot listen on api.listen {addr}: {e}"))?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("api.listen {addr}: no address bound"))?;
    Ok((server.run(), bound))
}
