//! The fleet as state over HTTP:
//!
//! - `GET /api/v1/twins?region=&limit=&after=`: every node this node knows of, fleet-wide,
//!   as compact rows (its own region from its own view, the others from their masters'
//!   summaries), ordered by region then name, paged (`after` is the last row's
//!   `region/name`);
//! - `GET /api/v1/twins/{node}`: one node's twin (`{node}` is a peer id, a name or
//!   `region/name`; an ambiguous name answers 409 with the candidates). This node answers
//!   for itself, and for its members while it leads its region; for any other node it
//!   asks the master of that node's region over the network (`source: master`);
//! - `GET /api/v1/twins/{node}/sbom`: the CycloneDX SBOM of this node's binary;
//! - `POST /api/v1/twins/{node}/phase` (`{"phase": "maintenance", "by": ...}`): moves a
//!   member of this node's region to a lifecycle phase, through the region's log (sent to
//!   the master when this node is not it); answered 202 once handed on;
//! - `GET /api/v1/drift?region=&role=&severity=`: drift records, fleet-wide: all of them
//!   for the region this node leads, and each other region's most severe ones as its
//!   master published them.

use actix_web::{HttpResponse, web};
use fleetmesh_actors::actor::heartbeat::{CensusView, GetCensus};
use fleetmesh_actors::actor::region::GetRegion;
use fleetmesh_actors::actor::twin::{GetDrift, GetTwin, GetTwins};
use fleetmesh_actors::drift::Record;
use fleetmesh_actors::node;
use fleetmesh_actors::region::{Operator, Phase, PhaseRecord};
use fleetmesh_actors::twin::keep::Held;
use serde::{Deserialize, Serialize};

use super::{Problem, ask, bad_request, unavailable};
use crate::node::Shared;

/// Query of `GET /api/v1/twins`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub region: Option<String>,
    /// At most this many rows (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Rows after this `region/name`.
    pub after: Option<String>,
}

/// One node, as the fleet-wide list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub peer: String,
    pub name: String,
    pub region: String,
    pub role: String,
    pub status: String,
    pub connectivity: Option<String>,
    /// Since when (Unix ms, as the node reports it) its connectivity has been what it is.
    pub connectivity_since_unix_ms: Option<u64>,
    pub backlog: u64,
    pub last_seen_ms: u64,
    /// `local` (this node's own view) or `master` (its region's published summary).
    pub source: &'static str,
    /// The twin's version and drift score, where this node holds the twin.
    pub version: Option<u64>,
    pub drift_score: Option<u32>,
}

fn rows(view: &CensusView, held: &fleetmesh_actors::actor::twin::Twins) -> Vec<Row> {
    let mut out = Vec::new();
    let by_peer: std::collections::BTreeMap<&str, &Held> = held
        .twins
        .iter()
        .map(|h| (h.twin.identity.value.peer.as_str(), h))
        .collect();
    let regions = std::iter::once((&view.region, "local"))
        .chain(view.foreign.iter().map(|k| (&k.summary, "master")));
    for (summary, source) in regions {
        for l in &summary.members {
            let twin = by_peer.get(l.peer.as_str());
            out.push(Row {
                peer: l.peer.to_string(),
                name: l.name.clone(),
                region: summary.region.clone(),
                role: l.role.clone(),
                status: l.status.as_str().to_string(),
                connectivity: l.connectivity.map(|c| c.as_str().to_string()),
                connectivity_since_unix_ms: l.connectivity_since_unix_ms,
                backlog: l.backlog,
                last_seen_ms: l.last_seen_ms,
                source,
                version: twin.map(|h| h.twin.version),
                drift_score: twin.filter(|h| h.desired).map(|h| h.drift_score),
            });
        }
    }
    out.sort_by(|a, b| (&a.region, &a.name, &a.peer).cmp(&(&b.region, &b.name, &b.peer)));
    out
}

async fn gather(
    shared: &Shared,
) -> Result<(CensusView, fleetmesh_actors::actor::twin::Twins), HttpResponse> {
    let Some(view) = ask(&shared.heartbeat, GetCensus).await else {
        return Err(unavailable("the heartbeat actor"));
    };
    let Some(held) = ask(&shared.twin, GetTwins).await else {
        return Err(unavailable("the twin actor"));
    };
    Ok((view, held))
}

pub async fn list(shared: web::Data<Shared>, q: web::Query<ListQuery>) -> HttpResponse {
    let (view, held) = match gather(&shared).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let all: Vec<Row> = rows(&view, &held)
        .into_iter()
        .filter(|r| q.region.as_ref().is_none_or(|want| &r.region == want))
        .collect();
    let total = all.len();
    let page: Vec<Row> = all
        .into_iter()
        .filter(|r| {
            q.after
                .as_ref()
                .is_none_or(|after| format!("{}/{}", r.region, r.name).as_str() > after.as_str())
        })
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let page: Vec<Row> = page.into_iter().take(limit).collect();
    let next = more
        .then(|| page.last().map(|r| format!("{}/{}", r.region, r.name)))
        .flatten();
    HttpResponse::Ok().json(serde_json::json!({
        "node": {"peer_id": shared.peer_id, "name": shared.info.name, "region": shared.info.region},
        "total": total,
        "rows": page,
        "next": next,
    }))
}

/// The rows `wanted` names: a peer id, `region/name`, or a name.
fn resolve<'a>(all: &'a [Row], wanted: &str) -> Vec<&'a Row> {
    if let Some(r) = all.iter().find(|r| r.peer == wanted) {
        return vec![r];
    }
    if let Some((region, name)) = wanted.split_once('/') {
        return all
            .iter()
            .filter(|r| r.region == region && r.name == name)
            .collect();
    }
    all.iter().filter(|r| r.name == wanted).collect()
}

/// Finds the one node `wanted` names (with the census it was found in), or the answer
/// saying why not.
async fn one_node(shared: &Shared, wanted: &str) -> Result<(Row, CensusView), HttpResponse> {
    let (view, held) = gather(shared).await?;
    let all = rows(&view, &held);
    let found = resolve(&all, wanted);
    match found.as_slice() {
        [] => Err(HttpResponse::NotFound().json(Problem {
            error: format!("no node `{wanted}` is known here (a peer id, a name, or region/name)"),
        })),
        [one] => Ok(((*one).clone(), view)),
        many => Err(HttpResponse::Conflict().json(serde_json::json!({
            "error": format!("`{wanted}` names {} nodes: use a peer id or region/name", many.len()),
            "candidates": many.iter().map(|r| serde_json::json!({
                "peer": r.peer, "name": r.name, "region": r.region,
            })).collect::<Vec<_>>(),
        }))),
    }
}

pub async fn one(shared: web::Data<Shared>, wanted: web::Path<String>) -> HttpResponse {
    let (row, view) = match one_node(&shared, &wanted).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let (held, source) = match ask(&shared.twin, GetTwin(node::Id::from(&row.peer))).await {
        Some(Some(held)) => (held, "local"),
        Some(None) => match from_master(&shared, &view, &row).await {
            Ok(held) => (held, "master"),
            Err(answer) => return answer,
        },
        None => return unavailable("the twin actor"),
    };
    let mut v = serde_json::to_value(&held.twin).unwrap_or_default();
    v["received_ms"] = held.received_ms.into();
    v["desired"] = held.desired.into();
    v["drift_score"] = held.drift_score.into();
    v["stale_by_s"] = held.stale_by_s.into();
    v["source"] = source.into();
    if row.region == shared.info.region
        && let Some(region) = ask(&shared.region, GetRegion).await
    {
        let record = region.state.phases.get(&node::Id::from(&row.peer));
        v["phase"] =
            serde_json::to_value(record.map_or(Phase::Active, |r| r.phase)).unwrap_or_default();
        v["phase_set"] = serde_json::to_value(record).unwrap_or_default();
    }
    v["status"] = row.status.into();
    v["connectivity"] = row.connectivity.into();
    v["connectivity_since_unix_ms"] = row.connectivity_since_unix_ms.into();
    v["backlog"] = row.backlog.into();
    v["last_seen_ms"] = row.last_seen_ms.into();
    HttpResponse::Ok().json(v)
}

/// The twin of `row` as the master of its region (as `view` knows it) holds it, asked
/// over the network.
async fn from_master(shared: &Shared, view: &CensusView, row: &Row) -> Result<Held, HttpResponse> {
    let master = if row.region == view.region.region {
        view.region.master.clone()
    } else {
        view.foreign
            .iter()
            .find(|k| k.summary.region == row.region)
            .and_then(|k| k.summary.master.clone())
    };
    let gone = |status: actix_web::http::StatusCode, why: String| {
        HttpResponse::build(status).json(serde_json::json!({
            "error": why,
            "region": row.region,
            "master": view.region.master.as_ref().filter(|_| row.region == view.region.region).map(|m| m.as_str()),
        }))
    };
    let Some(master) = master.filter(|m| m.as_str() != shared.peer_id) else {
        return Err(gone(
            actix_web::http::StatusCode::CONFLICT,
            format!(
                "no master of region {} holds the twin of {} now",
                row.region, row.name
            ),
        ));
    };
    let request = fleetmesh_actors::wire::Request::GetTwin {
        region: row.region.clone(),
        node: node::Id::from(&row.peer),
    };
    let bad_gateway = actix_web::http::StatusCode::BAD_GATEWAY;
    let wait = std::time::Duration::from_secs(3);
    match ask_peer(shared, master.clone(), request, wait).await {
        Err(Asked::QueueFull) => Err(unavailable("the network's request queue")),
        Ok(fleetmesh_actors::wire::Response::Twin(Some(held))) => Ok(*held),
        Ok(fleetmesh_actors::wire::Response::Twin(None)) => Err(gone(
            actix_web::http::StatusCode::NOT_FOUND,
            format!(
                "the master of region {} ({master}) holds no twin of {} yet",
                row.region, row.name
            ),
        )),
        Ok(other) => Err(gone(
            bad_gateway,
            format!(
                "the master of region {} ({master}) answered {other:?}",
                row.region
            ),
        )),
        Err(Asked::Failed(why)) => Err(gone(
            bad_gateway,
            format!("the master of region {} ({master}): {why}", row.region),
        )),
        Err(Asked::Stopped | Asked::TimedOut) => Err(gone(
            actix_web::http::StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the master of region {} ({master}) did not answer within 3 s",
                row.region
            ),
        )),
    }
}

pub async fn sbom(shared: web::Data<Shared>, wanted: web::Path<String>) -> HttpResponse {
    let row = match one_node(&shared, &wanted).await {
        Ok((r, _)) => r,
        Err(answer) => return answer,
    };
    if row.peer == shared.peer_id {
        return HttpResponse::Ok()
            .content_type("application/vnd.cyclonedx+json")
            .insert_header(("x-fleetmesh-source", "local"))
            .body(crate::sbom::document());
    }
    match sbom_of(&shared, &row).await {
        Ok(doc) => HttpResponse::Ok()
            .content_type("application/vnd.cyclonedx+json")
            .insert_header(("x-fleetmesh-source", "peer"))
            .body(doc),
        Err(why) => HttpResponse::BadGateway().json(Problem {
            error: format!(
                "the SBOM of {} could not be fetched from it: {why}",
                row.name
            ),
        }),
    }
}

/// Query of `GET /api/v1/twins/{node}/metrics`.
#[derive(Debug, Deserialize)]
pub struct MetricsQuery {
    /// Points after this time (Unix ms; default: the last hour).
    pub since: Option<u64>,
}

/// `GET /api/v1/twins/{node}/metrics`: a node's metrics for a chart, each thinned to at
/// most [`crate::net::driver::METRIC_POINTS`] points: this node's from its own spikes,
/// another's asked of it over the network (any region). No node keeps another's hour.
pub async fn metrics(
    shared: web::Data<Shared>,
    wanted: web::Path<String>,
    q: web::Query<MetricsQuery>,
) -> HttpResponse {
    use fleetmesh_actors::wire::{Request, Response};
    let row = match one_node(&shared, &wanted).await {
        Ok((r, _)) => r,
        Err(answer) => return answer,
    };
    let now = fleetmesh_actors::actor::unix_ms();
    let since = q.since.unwrap_or(now.saturating_sub(3_600_000));
    let points = crate::net::driver::METRIC_POINTS;
    let (source, series) = if row.peer == shared.peer_id {
        ("local", shared.recent.metric_series(since, now, points))
    } else {
        let request = Request::GetMetrics { since };
        let wait = std::time::Duration::from_secs(5);
        match ask_peer(&shared, node::Id::from(&row.peer), request, wait).await {
            Ok(Response::Metrics(series)) => ("peer", series),
            Ok(other) => {
                return HttpResponse::BadGateway().json(Problem {
                    error: format!("{} answered something else: {other:?}", row.name),
                });
            }
            Err(why) => {
                return HttpResponse::BadGateway().json(Problem {
                    error: format!(
                        "the metrics of {} could not be fetched from it: {why}",
                        row.name
                    ),
                });
            }
        }
    };
    HttpResponse::Ok().json(serde_json::json!({
        "node": row.name,
        "peer": row.peer,
        "source": source,
        "since_unix_ms": since,
        "series": series,
    }))
}

/// Why asking a peer over the network brought no answer.
pub(super) enum Asked {
    /// The network's request queue is full.
    QueueFull,
    /// The request failed (unreachable, refused by the transport).
    Failed(String),
    /// The network stopped before the answer came.
    Stopped,
    TimedOut,
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::QueueFull => f.write_str("the network's request queue is full"),
            Asked::Failed(why) => f.write_str(why),
            Asked::Stopped => f.write_str("the network stopped"),
            Asked::TimedOut => f.write_str("no answer in time"),
        }
    }
}

/// Asks peer `to` and waits at most `wait` for its answer.
pub(super) async fn ask_peer(
    shared: &Shared,
    to: node::Id,
    request: fleetmesh_actors::wire::Request,
    wait: std::time::Duration,
) -> Result<fleetmesh_actors::wire::Response, Asked> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ask = crate::net::driver::Ask {
        to,
        request,
        reply: tx,
    };
    shared.asks.try_send(ask).map_err(|_| Asked::QueueFull)?;
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(answer)) => answer.map_err(Asked::Failed),
        Ok(Err(_)) => Err(Asked::Stopped),
        Err(_) => Err(Asked::TimedOut),
    }
}

/// The SBOM of another node, asked of that node chunk by chunk.
async fn sbom_of(shared: &Shared, row: &Row) -> Result<Vec<u8>, String> {
    use fleetmesh_actors::wire::{Request, Response};
    let mut doc: Vec<u8> = Vec::new();
    loop {
        let request = Request::GetSbom {
            offset: doc.len() as u64,
        };
        let wait = std::time::Duration::from_secs(5);
        let answer = ask_peer(shared, node::Id::from(&row.peer), request, wait)
            .await
            .map_err(|e| e.to_string())?;
        match answer {
            Response::Sbom { total, chunk } => {
                if total > 16 << 20 {
                    return Err(format!("an SBOM of {total} bytes is too large"));
                }
                let done = chunk.is_empty();
                doc.extend(chunk);
                if doc.len() as u64 >= total {
                    doc.truncate(total as usize);
                    return Ok(doc);
                }
                if done {
                    return Err(format!("it stopped at {} of {total} bytes", doc.len()));
                }
            }
            Response::Refused(why) => return Err(format!("refused: {why}")),
            Response::Busy { why, .. } => return Err(format!("busy: {why}")),
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
}

/// Body of `POST /api/v1/twins/{node}/phase`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseBody {
    pub phase: String,
    /// Who sets it (default `api`).
    pub by: Option<String>,
}

pub async fn phase(
    shared: web::Data<Shared>,
    wanted: web::Path<String>,
    body: web::Json<PhaseBody>,
) -> HttpResponse {
    let Some(to) = Phase::parse(&body.phase) else {
        let all: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        return bad_request(format!(
            "unknown phase `{}`: one of {}",
            body.phase,
            all.join(", ")
        ));
    };
    let row = match one_node(&shared, &wanted).await {
        Ok((r, _)) => r,
        Err(answer) => return answer,
    };
    if row.region != shared.info.region {
        return HttpResponse::Conflict().json(Problem {
            error: format!(
                "{} is in region {}: set its phase through a node of that region",
                row.name, row.region
            ),
        });
    }
    let Some(region) = ask(&shared.region, GetRegion).await else {
        return unavailable("the region actor");
    };
    let peer = node::Id::from(&row.peer);
    let from = region.state.phases.get(&peer).map(|r| r.phase);
    if let Err(why) = Phase::check(from, to) {
        return HttpResponse::Conflict().json(Problem {
            error: format!("{}: {why}", row.name),
        });
    }
    let record = PhaseRecord {
        peer,
        name: row.name.clone(),
        phase: to,
        by: body.by.clone().unwrap_or_else(|| "api".into()),
        at_unix_ms: fleetmesh_actors::actor::unix_ms(),
    };
    let msg = fleetmesh_actors::actor::alert::Replicate(Operator::Phase(Box::new(record)));
    match ask(&shared.region, msg).await {
        Some(Ok(())) => HttpResponse::Accepted().json(serde_json::json!({
            "node": row.name,
            "peer": row.peer,
            "from": from.unwrap_or_default(),
            "phase": to,
            "committed": false,
        })),
        Some(Err(why)) => HttpResponse::Conflict().json(Problem { error: why }),
        None => unavailable("the region actor"),
    }
}

/// Query of `GET /api/v1/drift`.
#[derive(Debug, Deserialize)]
pub struct DriftQuery {
    pub region: Option<String>,
    pub role: Option<String>,
    /// Only records of this severity (`low`, `medium`, `high`).
    pub severity: Option<String>,
}

pub async fn drift(shared: web::Data<Shared>, q: web::Query<DriftQuery>) -> HttpResponse {
    let severity = match q.severity.as_deref() {
        None => None,
        Some(s) => match serde_json::from_value::<fleetmesh_actors::spike::Severity>(s.into()) {
            Ok(s) => Some(s),
            Err(_) => return bad_request(format!("unknown severity `{s}`: low, medium or high")),
        },
    };
    let Some(view) = ask(&shared.heartbeat, GetCensus).await else {
        return unavailable("the heartbeat actor");
    };
    let Some(own) = ask(&shared.twin, GetDrift).await else {
        return unavailable("the twin actor");
    };
    let now = fleetmesh_actors::actor::unix_ms();
    let keep = |r: &Record| {
        q.role.as_ref().is_none_or(|role| &r.role == role)
            && severity.is_none_or(|s| r.severity == s)
    };
    let mut regions = Vec::new();
    let mut records = Vec::new();
    let mut resolved = Vec::new();
    let mut add = |region: &str,
                   source: &str,
                   age_ms: u64,
                   brief: Option<(&fleetmesh_actors::drift::Counts, u32)>,
                   open: Vec<Record>| {
        if q.region.as_ref().is_some_and(|want| want != region) {
            return;
        }
        regions.push(serde_json::json!({
            "region": region,
            "source": source,
            "age_ms": age_ms,
            "counts": brief.map(|(c, _)| c),
            "omitted": brief.map_or(0, |(_, o)| o),
        }));
        for r in open.into_iter().filter(|r| keep(r)) {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["region"] = region.into();
            records.push(v);
        }
    };
    // This node's region first: all of it while this node leads; else, like every other
    // region, what its master last published.
    let leading = own.is_some();
    match own {
        Some(d) => {
            add(
                &view.region.region,
                "local",
                0,
                Some((&d.counts, 0)),
                d.open,
            );
            resolved = d.resolved.into_iter().filter(|r| keep(r)).collect();
        }
        None if view.home.is_none() => add(&view.region.region, "none", 0, None, Vec::new()),
        None => {}
    }
    let heard = view.home.iter().filter(|_| !leading).chain(&view.foreign);
    for k in heard {
        let d = k.summary.drift.as_ref();
        add(
            &k.summary.region,
            "master",
            now.saturating_sub(k.received_unix_ms),
            d.map(|d| (&d.counts, d.omitted)),
            d.map_or_else(Vec::new, |d| d.worst.clone()),
        );
    }
    HttpResponse::Ok().json(serde_json::json!({
        "node": {"peer_id": shared.peer_id, "name": shared.info.name, "region": shared.info.region},
        "at_unix_ms": now,
        "regions": regions,
        "records": records,
        "resolved": resolved,
        "desired_refused": *shared.desired_refused.borrow(),
    }))
}
