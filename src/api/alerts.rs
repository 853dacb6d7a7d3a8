//! The alert lifecycle over HTTP:
//!
//! - `GET /api/v1/alerts?since=&limit=&state=`: the latest alerts, newest first, each with
//!   its count, first and last raise, its episode's `id` and `state` (`firing`,
//!   `acknowledged`, `silenced`, `inhibited`, `resolved`); the raises by action, each
//!   receiver's queue and counters, the lifecycle's counters and the open groups;
//! - `GET /api/v1/alerts/{id}`: one episode with its labels, annotations and history;
//! - `POST /api/v1/alerts/{id}/ack` (`{"by": ..., "comment": ...}`): acknowledges it,
//!   which stops its escalation until the acknowledgement times out;
//! - `POST /api/v1/alerts/{id}/resolve` (`{"by": ...}`): an operator marks it resolved;
//! - `GET`/`POST /api/v1/silences` and `DELETE /api/v1/silences/{id}`, in Prometheus
//!   Alertmanager's v2 shapes (`matchers` of `{name, value, isRegex, isEqual}`,
//!   `startsAt`, `endsAt`, `createdBy`, `comment`; answered `{"silenceID": ...}`).
//!
//! Changes need the operator's token when the API is not on loopback (see
//! `crate::access`). Errors name the problem: 404 for an unknown alert or silence, 409
//! for a resolved alert or an expired silence, 400 for a malformed request.

use actix_web::{HttpResponse, web};
use fleetmesh_actors::actor::alert::{
    Acknowledge, AddSilence, ExpireSilence, GetAlert, GetAlerts, GetSilences, ResolveAlert,
};
use fleetmesh_actors::alerting::Error;
use fleetmesh_actors::alerting::silence::{self, am};
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
}

pub async fn list(shared: web::Data<Shared>, q: web::Query<Query>) -> HttpResponse {
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return bad_request(format!("unknown state `{s}`: one of {}", STATES.join(", ")));
    }
    let query = GetAlerts {
        since: q.since,
        limit: q.limit.unwrap_or(100).min(10_000),
        state: q.state.clone(),
    };
    match ask(&shared.alerts, query).await {
        Some(view) => HttpResponse::Ok().json(view),
        None => unavailable("the alert actor"),
    }
}

pub async fn one(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    match ask(&shared.alerts, GetAlert { id: id.clone() }).await {
        Some(Some(record)) => HttpResponse::Ok().json(record),
        Some(None) => refused(Error::UnknownAlert(id)),
        None => unavailable("the alert actor"),
    }
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
        Some(Err(e)) => refused(e),
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
        Some(Err(e)) => refused(e),
        None => unavailable("the alert actor"),
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
