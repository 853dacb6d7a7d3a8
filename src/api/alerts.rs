//! The alert lifecycle over HTTP:
//!
//! - `GET /api/v1/alerts?since=&limit=&state=`: the latest alerts, newest first, each with
//!   its count, first and last raise, its episode's `id` and `state` (`firing`,
//!   `acknowledged`, `silenced`, `inhibited`, `resolved`); the raises by action, each
//!   receiver's queue and counters, the lifecycle's counters and the open groups;
//!   alerts this node's history on disk keeps (resolved ones of up to
//!   `alerts.history_days` ago, after a restart too) are merged in, each once (the newer
//!   copy wins) and marked `"history_source": "disk"`;
//! - `GET /api/v1/alerts?scope=region`: every live region member's records (held and on
//!   disk) merged, each alert once as its newest copy;
//! - `GET /api/v1/alerts/{id}`: one episode with its labels, annotations and history,
//!   from the history on disk when the lifecycle no longer holds it;
//! - `POST /api/v1/alerts/{id}/ack` (`{"by": ..., "comment": ...}`): acknowledges it,
//!   which stops its escalation until the acknowledgement times out;
//! - `POST /api/v1/alerts/{id}/resolve` (`{"by": ...}`): an operator marks it resolved;
//! - `GET`/`POST /api/v1/silences` and `DELETE /api/v1/silences/{id}`, in Prometheus
//!   Alertmanager's v2 shapes (`matchers` of `{name, value, isRegex, isEqual}`,
//!   `startsAt`, `endsAt`, `createdBy`, `comment`; answered `{"silenceID": ...}`).
//!
//! Changes need the operator's token when the API is not on loopback (see
//! `crate::access`). Errors name the problem: 404 for an unknown alert or silence, 409
//! for a resolved alert (one only the history on disk keeps too) or an expired silence,
//! 400 for a malformed request.

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use fleetmesh_actors::actor::alert::{
    Acknowledge, AddSilence, Alerts, ExpireSilence, GetAlert, GetAlerts, GetRecords, GetSilences,
    HeldRecords, ResolveAlert,
};
use fleetmesh_actors::actor::heartbeat::GetSnapshot;
use fleetmesh_actors::alert::Entry;
use fleetmesh_actors::alerting::history::last_change;
use fleetmesh_actors::alerting::silence::{self, am};
use fleetmesh_actors::alerting::{Error, Listed, Record, labels};
use fleetmesh_actors::node;
use serde::Deserialize;

use super::{Problem, ask, bad_request, unavailable};
use crate::node::Shared;

const STATES: [&str; 5] = [
    "firing",
    "acknowledged",
    "silenced",
    "inhibited",
    "resolved",
];

/// Query of `GET /api/v1/alerts`.
#[derive(Debug, Deserialize)]
pub struct Query {
    /// Only alerts last raised after this time (Unix milliseconds).
    #[serde(default)]
    pub since: u64,
    /// At most this many (default 100, at most 10000).
    pub limit: Option<usize>,
    /// Only alerts in this state.
    pub state: Option<String>,
    /// `node` (default): this node's alerts; `region`: every live member's, merged.
    pub scope: Option<String>,
}

pub async fn list(shared: web::Data<Shared>, q: web::Query<Query>) -> HttpResponse {
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return bad_request(format!("unknown state `{s}`: one of {}", STATES.join(", ")));
    }
    match q.scope.as_deref() {
        None | Some("node") => {}
        Some("region") => return region(&shared, &q).await,
        Some(other) => {
            return bad_request(format!("unknown scope `{other}`: `node` or `region`"));
        }
    }
    let query = GetAlerts {
        since: q.since,
        limit: q.limit.unwrap_or(100).min(10_000),
        state: q.state.clone(),
    };
    let (since, limit, state) = (query.since, query.limit, query.state.clone());
    let Some(view) = ask(&shared.alerts, query).await else {
        return unavailable("the alert actor");
    };
    // `limit` 0 (the metrics' scrape) asks for counters only.
    let Some(store) = shared.alert_history.clone().filter(|_| limit > 0) else {
        return HttpResponse::Ok().json(view);
    };
    let kept = web::block(move || store.since(since, state.as_deref(), limit)).await;
    let kept = match kept {
        Ok(Ok(kept)) => kept,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the alert history is not listed");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "the alert history is not listed");
            Vec::new()
        }
    };
    if kept.is_empty() {
        return HttpResponse::Ok().json(view);
    }
    let ids = kept.iter().map(|r| r.id.clone()).collect();
    let Some(held) = ask(&shared.alerts, GetRecords { ids }).await else {
        return unavailable("the alert actor");
    };
    HttpResponse::Ok().json(merged(view, kept, held, since, q.state.as_deref(), limit))
}

/// `view` with the records of the history on disk (`kept`, newest first) merged in:
/// `held` is the lifecycle's own copy of each kept record, if it has one. Each alert is
/// listed once, as its newer copy (the lifecycle's on a tie); a copy taken from the disk
/// is marked `"history_source": "disk"`. A kept record that the view does not list is
/// listed when its newer copy last changed after `since` and is in `state`.
fn merged(
    mut view: Alerts,
    kept: Vec<Record>,
    held: Vec<Option<Record>>,
    since: u64,
    state: Option<&str>,
    limit: usize,
) -> serde_json::Value {
    let mut list: Vec<(Listed, bool)> = Vec::with_capacity(view.alerts.len() + kept.len());
    let mut listed: HashMap<String, usize> = HashMap::new();
    let mut added = false;
    for (i, l) in std::mem::take(&mut view.alerts).into_iter().enumerate() {
        if let Some(id) = &l.id {
            listed.insert(id.clone(), i);
        }
        list.push((l, false));
    }
    for (disk, mine) in kept.into_iter().zip(held) {
        let disk_newer = mine
            .as_ref()
            .is_none_or(|m| last_change(&disk) > last_change(m));
        match listed.get(&disk.id) {
            Some(&i) if disk_newer => list[i] = (listed_of(&disk), true),
            Some(_) => {}
            None => {
                let (record, from_disk) = match mine {
                    Some(m) if !disk_newer => (m, false),
                    _ => (disk, true),
                };
                if last_change(&record) > since && state.is_none_or(|s| record.status.name() == s) {
                    list.push((listed_of(&record), from_disk));
                    added = true;
                }
            }
        }
    }
    if added {
        // Newest first, as the view is (a stable sort keeps its order among equals).
        list.sort_by_key(|(l, _)| std::cmp::Reverse(l.entry.last_unix_ms));
    }
    list.truncate(limit);
    let alerts: Vec<serde_json::Value> = list
        .into_iter()
        .map(|(l, from_disk)| {
            let mut v = serde_json::to_value(l).unwrap_or_default();
            if from_disk && let Some(o) = v.as_object_mut() {
                o.insert("history_source".into(), "disk".into());
            }
            v
        })
        .collect();
    let mut out = serde_json::to_value(view).unwrap_or_default();
    if let Some(o) = out.as_object_mut() {
        o.insert("alerts".into(), alerts.into());
    }
    out
}

/// How long each member has to answer `?scope=region`.
const MEMBER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `GET /api/v1/alerts?scope=region`: the alert records of every live member of this
/// node's region (what each holds and keeps on disk: the master has its members' alerts,
/// each member its own, a member that was master its region's of then), merged: each
/// alert once, as its newest copy, newest first. Members that do not answer within
/// [`MEMBER_WAIT`] are named in `unanswered`.
async fn region(shared: &Shared, q: &Query) -> HttpResponse {
    use fleetmesh_actors::alerting::history::newest_fitting;
    use fleetmesh_actors::membership::Status;
    use fleetmesh_actors::wire::{Request, Response};
    let limit = q.limit.unwrap_or(100).min(10_000);
    let (since, state) = (q.since, q.state.clone());
    let held = ask(
        &shared.alerts,
        HeldRecords {
            since,
            state: state.clone(),
            limit,
        },
    );
    let store = shared.alert_history.clone();
    let Some(mut records) =
        crate::alert::history::held_and_kept(held, store, since, state.clone(), limit).await
    else {
        return unavailable("the alert actor");
    };
    let Some(snap) = ask(&shared.heartbeat, GetSnapshot).await else {
        return unavailable("the heartbeat actor");
    };
    let members: Vec<(node::Id, String)> = snap
        .peers
        .iter()
        .filter_map(|p| {
            let info = p.member.info.as_ref()?;
            (info.region == shared.info.region
                && matches!(p.member.status, Status::Alive | Status::Suspect))
            .then(|| (p.member.id.clone(), info.name.clone()))
        })
        .collect();
    let asked = members.iter().map(|(peer, name)| {
        let request = Request::AlertRecords {
            region: shared.info.region.clone(),
            since,
            state: state.clone(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        async move {
            let answer = super::twins::ask_peer(shared, peer.clone(), request, MEMBER_WAIT).await;
            (name.clone(), answer)
        }
    });
    let mut answered = vec![shared.info.name.clone()];
    let mut unanswered = Vec::new();
    for (name, answer) in futures::future::join_all(asked).await {
        match answer {
            Ok(Response::AlertRecords(list)) => {
                answered.push(name);
                records.extend(list);
            }
            Ok(other) => unanswered.push(serde_json::json!({
                "node": name,
                "why": format!("answered {}", short(&other)),
            })),
            Err(e) => unanswered.push(serde_json::json!({ "node": name, "why": e.to_string() })),
        }
    }
    let alerts: Vec<Listed> = newest_fitting(records, limit, usize::MAX)
        .iter()
        .map(listed_of)
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "scope": "region",
        "region": shared.info.region,
        "alerts": alerts,
        "answered": answered,
        "unanswered": unanswered,
    }))
}

/// A response named in a few words, for `unanswered`.
fn short(r: &fleetmesh_actors::wire::Response) -> String {
    match r {
        fleetmesh_actors::wire::Response::Refused(why) => format!("refused: {why}"),
        fleetmesh_actors::wire::Response::Busy { why, .. } => format!("busy: {why}"),
        _ => "something else".into(),
    }
}

/// A record as `GET /api/v1/alerts` lists an alert.
fn listed_of(r: &Record) -> Listed {
    Listed {
        entry: Entry {
            alert: labels::alert_of(r),
            count: r.raised,
            first_unix_ms: r.starts_at_unix_ms,
            last_unix_ms: r.updated_at_unix_ms,
        },
        id: Some(r.id.clone()),
        state: Some(r.status.name().to_string()),
        status: Some(r.status.clone()),
    }
}

pub async fn one(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    let Some(mine) = ask(&shared.alerts, GetAlert { id: id.clone() }).await else {
        return unavailable("the alert actor");
    };
    let disk = match shared.alert_history.clone() {
        Some(store) => {
            let wanted = id.clone();
            match web::block(move || store.get(&wanted)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the alert history is not read");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the alert history is not read");
                    None
                }
            }
        }
        None => None,
    };
    match (mine, disk) {
        (Some(m), Some(d)) if last_change(&d) > last_change(&m) => from_disk(&d),
        (Some(m), _) => HttpResponse::Ok().json(m),
        (None, Some(d)) => from_disk(&d),
        (None, None) => refused(Error::UnknownAlert(id)),
    }
}

/// A record from the history on disk, marked so.
fn from_disk(r: &Record) -> HttpResponse {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("history_source".into(), "disk".into());
    }
    HttpResponse::Ok().json(v)
}

/// Body of `POST /api/v1/alerts/{id}/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    pub by: String,
    #[serde(default)]
    pub comment: String,
}

pub async fn ack(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: web::Json<AckBody>,
) -> HttpResponse {
    let body = body.into_inner();
    if body.by.trim().is_empty() {
        return bad_request("`by` must name who acknowledges".into());
    }
    if body.by.len() > 128 || body.comment.len() > 1024 {
        return bad_request(
            "`by` may have at most 128 bytes and `comment` 1024: every member keeps the \
             acknowledgement in the region's log"
                .into(),
        );
    }
    let msg = Acknowledge {
        id: id.into_inner(),
        by: body.by,
        comment: body.comment,
    };
    match ask(&shared.alerts, msg).await {
        Some(Ok(ack)) => HttpResponse::Ok().json(ack),
        Some(Err(e)) => refused(on_disk(&shared, e).await),
        None => unavailable("the alert actor"),
    }
}

/// Body of `POST /api/v1/alerts/{id}/resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    #[serde(default)]
    pub by: Option<String>,
}

pub async fn resolve(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: Option<web::Json<ResolveBody>>,
) -> HttpResponse {
    let id = id.into_inner();
    let by = body.and_then(|b| b.into_inner().by);
    match ask(&shared.alerts, ResolveAlert { id: id.clone() }).await {
        Some(Ok(())) => {
            tracing::info!(alert = %id, by = by.as_deref().unwrap_or("api"), "alert resolved");
            HttpResponse::Ok().json(serde_json::json!({ "id": id, "state": "resolved" }))
        }
        Some(Err(e)) => refused(on_disk(&shared, e).await),
        None => unavailable("the alert actor"),
    }
}

/// `e`, unless it says the lifecycle does not know an alert that the history on disk
/// keeps resolved: then that it is resolved (409, not 404).
async fn on_disk(shared: &Shared, e: Error) -> Error {
    let (Error::UnknownAlert(id), Some(store)) = (&e, shared.alert_history.clone()) else {
        return e;
    };
    let wanted = id.clone();
    match web::block(move || store.get(&wanted)).await {
        Ok(Ok(Some(r))) if r.is_resolved() => Error::Resolved(r.id),
        _ => e,
    }
}

pub async fn silences(shared: web::Data<Shared>) -> HttpResponse {
    match ask(&shared.alerts, GetSilences).await {
        Some(list) => HttpResponse::Ok().json(list),
        None => unavailable("the alert actor"),
    }
}

/// `POST /api/v1/silences`: the body is read here (not by an extractor) so that a
/// malformed one is answered with what is wrong in it.
pub async fn silence(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let postable: am::Postable = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("not a silence: {e}")),
    };
    match ask(&shared.alerts, AddSilence(postable)).await {
        Some(Ok(id)) => HttpResponse::Ok().json(am::Created { silence_id: id }),
        Some(Err(e)) => refused(e),
        None => unavailable("the alert actor"),
    }
}

pub async fn expire(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    match ask(
        &shared.alerts,
        ExpireSilence {
            id: id.into_inner(),
        },
    )
    .await
    {
        Some(Ok(())) => HttpResponse::Ok().json(serde_json::json!({})),
        Some(Err(e)) => refused(e),
        None => unavailable("the alert actor"),
    }
}

/// The answer to a refused action: its status says which kind of problem it is.
fn refused(e: Error) -> HttpResponse {
    let error = e.to_string();
    match e {
        Error::UnknownAlert(_) | Error::Silence(silence::Error::NotFound(_)) => {
            HttpResponse::NotFound().json(Problem { error })
        }
        Error::Resolved(_) | Error::Silence(silence::Error::AlreadyExpired(_)) => {
            HttpResponse::Conflict().json(Problem { error })
        }
        Error::Full { .. } => HttpResponse::ServiceUnavailable().json(Problem { error }),
        Error::Silence(_) => bad_request(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_actors::alerting::Status;

    fn record(key: &str, start: u64, resolved_at: Option<u64>) -> Record {
        let labels = [("alertname".to_string(), "anomaly".to_string())]
            .into_iter()
            .collect();
        let mut r = Record::new(key.into(), labels, Default::default(), start, start);
        if let Some(at) = resolved_at {
            r.ends_at_unix_ms = Some(at);
            r.set_status(Status::Resolved { at_unix_ms: at }, at, 20);
        }
        r
    }

    fn listed(v: &serde_json::Value) -> Vec<(String, String, bool)> {
        v["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                (
                    a["key"].as_str().unwrap_or_default().to_string(),
                    a["state"].as_str().unwrap_or_default().to_string(),
                    a["history_source"] == "disk",
                )
            })
            .collect()
    }

    #[test]
    fn each_alert_is_listed_once_as_its_newer_copy() {
        // In memory: `a` firing (listed), `b` resolved later than the disk says.
        let a = record("a", 100, None);
        let b_mem = record("b", 50, Some(300));
        let b_disk = record("b", 50, None);
        // On disk only: `c` resolved; `d` resolved on disk, but firing again in memory
        // (newer), so not resolved.
        let c = record("c", 10, Some(20));
        let d_disk = record("d", 5, Some(6));
        let mut d_mem = record("d", 5, None);
        d_mem.updated_at_unix_ms = 400;
        let view = Alerts {
            alerts: vec![listed_of(&a), listed_of(&b_mem)],
            ..Alerts::default()
        };
        let kept = vec![b_disk, c.clone(), d_disk];
        let held = vec![Some(b_mem), None, Some(d_mem)];
        let v = merged(view.clone(), kept.clone(), held.clone(), 0, None, 100);
        assert_eq!(
            listed(&v),
            [
                ("d".into(), "firing".into(), false),
                ("a".into(), "firing".into(), false),
                ("b".into(), "resolved".into(), false),
                ("c".into(), "resolved".into(), true),
            ]
        );
        // Only resolved ones: `d` is firing now, so not listed from its older disk copy.
        let resolved_view = Alerts {
            alerts: vec![listed_of(&record("b", 50, Some(300)))],
            ..Alerts::default()
        };
        let v = merged(
            resolved_view,
            kept.clone(),
            held.clone(),
            0,
            Some("resolved"),
            100,
        );
        assert_eq!(
            listed(&v),
            [
                ("b".into(), "resolved".into(), false),
                ("c".into(), "resolved".into(), true),
            ]
        );
        // A disk copy newer than memory's wins; the limit holds.
        let old_a = record("a", 100, None);
        let new_a = record("a", 100, Some(500));
        let view = Alerts {
            alerts: vec![listed_of(&old_a)],
            ..Alerts::default()
        };
        let v = merged(view, vec![new_a, c], vec![Some(old_a), None], 0, None, 1);
        assert_eq!(listed(&v), [("a".into(), "resolved".into(), true)]);
    }
}
