//! Trust across regions over HTTP: what this node verified of other regions, its own
//! region's voters of record, and an operator's charter.
//!
//! - `GET /api/v1/fleet/trust`: whether an admin key is configured; this region's chain
//!   (each link's kind, voters and digest) and whether this node holds a proof as master;
//!   every other region's verified authority (root, head, voters, term, master); the
//!   latest refusals with their reasons; and, per region, the authority in one word for
//!   the console ([`authority`]).
//! - `POST /api/v1/region/charter`: a charter signed with the fleet admin key (made by
//!   `fleetmesh region charter`), checked here, committed to the region's log by its
//!   master. From then on it is the root of the region's voters of record.

use actix_web::{HttpResponse, web};
use fleetmesh_actors::actor::region::GetRegion;
use fleetmesh_actors::region::Operator;
use fleetmesh_actors::trust::{Anchor, Charter, Refusal, Verify};
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
    // Each region's standing: the own region's from its committed root, another's from
    // what was verified here, and from its latest refusal (the newest are first).
    let own_root = chain.first().and_then(|l| l["kind"].as_str());
    let mut standing = serde_json::Map::new();
    standing.insert(shared.info.region.clone(), authority(own_root, None, true));
    for (name, k) in registry.regions() {
        let later = registry.refused().rev().find(|f| {
            &f.region == name && f.at_unix_ms > k.verified_unix_ms && f.why != Refusal::Unverified
        });
        standing.insert(
            name.clone(),
            authority(Some(k.root_kind), later.map(|f| &f.why), false),
        );
    }
    for f in registry.refused().rev() {
        if f.region != shared.info.region && !standing.contains_key(&f.region) {
            standing.insert(f.region.clone(), authority(None, Some(&f.why), false));
        }
    }
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
        "authority": standing,
    }))
}

/// A region's authority in one word, for the console's fleet graph: `chartered` or
/// `founding` (trusted on first use) by the root of its voters of record (for another
/// region, as verified here), else `refused` when a proof was refused, else `unverified`
/// (nothing verified yet, or only brief proofs). `reason`: the latest refusal (of a
/// region believed: one since it was verified, brief proofs aside), by its name
/// (`no_quorum`, `fork`, ...).
/// `own`: this node's region, believed from its own consensus.
pub fn authority(
    root_kind: Option<&str>,
    refused: Option<&Refusal>,
    own: bool,
) -> serde_json::Value {
    // A brief proof checked before the full one of a new term arrives is no reason to doubt
    // a region believed.
    let refused = refused.filter(|r| root_kind.is_none() || **r != Refusal::Unverified);
    let reason = refused.and_then(|r| {
        serde_json::to_value(r)
            .ok()
            .and_then(|v| v["why"].as_str().map(str::to_string))
    });
    let state = match (root_kind, refused) {
        (Some("charter"), _) => "chartered",
        (Some(_), _) => "founding",
        (None, Some(Refusal::Unverified) | None) => "unverified",
        (None, Some(_)) => "refused",
    };
    json!({ "state": state, "reason": reason, "own": own })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_chartered_founding_refused_or_unverified() {
        assert_eq!(
            authority(Some("charter"), None, true),
            json!({"state": "chartered", "reason": null, "own": true})
        );
        assert_eq!(
            authority(Some("founding"), None, false)["state"],
            "founding"
        );
        // Believed, then a forged proof refused: still believed, the refusal said.
        let forged = authority(Some("founding"), Some(&Refusal::NoQuorum), false);
        assert_eq!(forged["state"], "founding");
        assert_eq!(forged["reason"], "no_quorum");
        assert_eq!(
            authority(Some("charter"), Some(&Refusal::Unverified), false)["reason"],
            json!(null)
        );
        let refused = authority(None, Some(&Refusal::NeedsCharter), false);
        assert_eq!(
            refused,
            json!({"state": "refused", "reason": "needs_charter", "own": false})
        );
        assert_eq!(
            authority(None, Some(&Refusal::Fork("r".into())), false)["reason"],
            "fork"
        );
        // A brief proof not checkable yet is no refusal of the region.
        assert_eq!(
            authority(None, Some(&Refusal::Unverified), false)["state"],
            "unverified"
        );
        assert_eq!(authority(None, None, false)["state"], "unverified");
    }
}
