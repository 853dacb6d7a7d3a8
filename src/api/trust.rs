//! Trust across regions over HTTP: what this node verified of other regions, its own
//! region's voters of record, and an operator's charter.
//!
//! - `GET /api/v1/fleet/trust`: whether an admin key is configured; this region's chain
//!   (each link's kind, voters and digest) and whether this node holds a proof as master;
//!   every other region's verified authority (root, head, voters, term, master); the
//!   latest refusals with their reasons.
//! - `POST /api/v1/region/charter`: a charter signed with the fleet admin key (made by
//!   `fleetmesh region charter`), checked here, committed to the region's log by its
//!   master. From then on it is the root of the region's voters of record.

use actix_web::{HttpResponse, web};
use fleetmesh_actors::actor::region::GetRegion;
use fleetmesh_actors::region::Operator;
use fleetmesh_actors::trust::{Anchor, Charter, Verify};
use serde_json::json;

use super::{Problem, ask, bad_request, unavailable};
use crate::node::Shared;

/// `GET /api/v1/fleet/trust`.
pub async fn trust(shared: web::Data<Shared>) -> HttpResponse {
    let Some(r) = ask(&shared.region, GetRegion).await else {
        return unavailable("the region actor");
    };
    let chain: Vec<serde_json::Value> = r
        .state
        .chain
        .iter()
        .map(|l| {
            let (kind, term, by) = match &l.anchor {
                Anchor::Charter(c) => ("charter", None, Some(c.by.clone())),
                Anchor::Founding(c) => ("founding", Some(c.term), None),
                Anchor::Change { cert, .. } => ("change", Some(cert.term), None),
            };
            json!({"seq": l.seq, "kind": kind, "term": term, "by": by,
                   "voters": l.voters, "digest": l.digest()})
        })
        .collect();
    let proof = shared.trust.proof.1.borrow().clone();
    let registry = shared
        .trust
        .registry
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let refused: Vec<_> = registry.refused().rev().take(32).collect();
    HttpResponse::Ok().json(json!({
        "admin_key": shared.trust.keys.has_admin(),
        "region": {
            "name": shared.info.region,
            "chain": chain,
            "proof": proof.map(|p| json!({
                "term": p.cert.term,
                "master": p.cert.master,
                "endorsements": p.cert.endorsements.iter().map(|e| &e.voter).collect::<Vec<_>>(),
            })),
        },
        "regions": registry.regions(),
        "refused": refused,
        "refused_total": registry.refused_total(),
    }))
}

/// `POST /api/v1/region/charter`: body a [`Charter`] as JSON.
pub async fn charter(shared: web::Data<Shared>, body: web::Json<Charter>) -> HttpResponse {
    let c = body.into_inner();
    if !shared.trust.keys.has_admin() {
        return HttpResponse::Conflict().json(Problem {
            error: "fleet.admin_key is not set on this node: it cannot check a charter".into(),
        });
    }
    if c.region != shared.info.region {
        return HttpResponse::Conflict().json(Problem {
            error: format!(
                "the charter is for region {}; this node is in {}: post it to a node of that region",
                c.region, shared.info.region
            ),
        });
    }
    if c.voters.is_empty() {
        return bad_request("a charter names at least one voter".into());
    }
    if shared.trust.keys.admin(&c.signed_bytes(), &c.sig) != Some(true) {
        return HttpResponse::Forbidden().json(Problem {
            error: "the charter's signature is not the fleet admin key's (fleet.admin_key)".into(),
        });
    }
    let answer = json!({"region": c.region, "voters": c.voters, "issued_unix_ms": c.issued_unix_ms, "committed": false});
    let msg = fleetmesh_actors::actor::alert::Replicate(Operator::Charter(Box::new(c)));
    match ask(&shared.region, msg).await {
        Some(Ok(())) => HttpResponse::Accepted().json(answer),
        Some(Err(why)) => HttpResponse::Conflict().json(Problem { error: why }),
        None => unavailable("the region actor"),
    }
}
