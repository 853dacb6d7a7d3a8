//! The region actor's part in trust across regions ([`crate::trust`]): as a voter it
//! endorses the master its consensus follows; as the master it gathers endorsements,
//! commits the voters of record when they change, and hands its proof to the network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::RegionActor;
use crate::outbox::Direct;
use crate::region::Command;
use crate::trust::{self, Certifier, Due, Endorsement, Link, Proof, Verify};
use crate::{node, wire};

/// A voter endorses the master it follows again this often (a lost endorsement, a new
/// voter, a master restarted in the same term).
const ENDORSE_AGAIN: Duration = Duration::from_secs(5);
/// The master checks its chain and proof this often.
const TICK: Duration = Duration::from_secs(1);
/// The master publishes its region's silences to the fleet again this often.
const SILENCES_AGAIN: Duration = Duration::from_secs(30);
/// A link proposed and not committed is proposed again after this long.
const PROPOSE_AGAIN: Duration = Duration::from_secs(3);

/// What the region actor needs to take part in trust (set once, [`Trusting`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Trusting {
    pub verify: Arc<dyn Verify + Send + Sync>,
    pub sign: trust::Sign,
    /// This node's proof as master, for the network to attach (`None` while it has none).
    pub proof: tokio::sync::watch::Sender<Option<Arc<Proof>>>,
}

impl std::fmt::Debug for Trusting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trusting").finish_non_exhaustive()
    }
}

/// A voter's endorsement of this node as master in `term`, heard from `from`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndorseIn {
    pub from: node::Id,
    pub term: u64,
    pub endorsement: Endorsement,
}

pub(super) struct TrustState {
    kit: Trusting,
    certifier: Certifier,
    /// The master last endorsed, in which term, and when.
    endorsed: Option<(u64, node::Id, Instant)>,
    /// The link last proposed (its seq) and when.
    proposed: Option<(u64, Instant)>,
}

impl RegionActor {
    /// Endorses the master if due, and as master moves the chain and the proof along.
    /// Called on a change of master, a committed link and every [`TICK`]; not on every
    /// consensus message (checking a proof costs a few signature checks).
    pub(super) fn trust_step(&mut self) {
        let Some(t) = self.trust.as_mut() else {
            return;
        };
        let now = Instant::now();
        let master = self.gov.master();
        let status = self.gov.status();
        let leading = self.gov.leading();
        t.certifier
            .lead(leading.map(|term| (term, self.own_peer.clone())));
        let voter = status.as_ref().is_some_and(|s| s.voters.contains(&s.id));
        let mut own_endorsement = None;
        if let (true, Some((m, term))) = (voter, &master) {
            let due = match &t.endorsed {
                Some((et, em, at)) => et != term || em != m || now - *at >= ENDORSE_AGAIN,
                None => true,
            };
            if due {
                t.endorsed = Some((*term, m.clone(), now));
                let e = Endorsement {
                    voter: self.own_peer.clone(),
                    sig: (t.kit.sign)(&trust::endorse_bytes(&self.region, *term, m)),
                };
                if *m == self.own_peer {
                    own_endorsement = Some((*term, e));
                } else {
                    let request = wire::Request::Endorse {
                        region: self.region.clone(),
                        term: *term,
                        endorsement: e,
                    };
                    // Lost: sent again after ENDORSE_AGAIN.
                    let _ = self.direct.try_send(Direct {
                        to: m.clone(),
                        request,
                    });
                }
            }
        }
        if let Some((term, e)) = own_endorsement {
            let verify = t.kit.verify.clone();
            t.certifier.endorsed(term, e, &*verify);
        }
        self.advance(now);
    }

    /// As master: commits the next link if the voters changed, and publishes the proof.
    pub(super) fn advance(&mut self, now: Instant) {
        let Some(t) = self.trust.as_mut() else {
            return;
        };
        let chain: Vec<Link> = self
            .gov
            .state()
            .map(|s| s.chain.clone())
            .unwrap_or_default();
        if self.gov.leading().is_some() {
            let names = self.gov.names();
            let voters: Option<Vec<node::Id>> = self.gov.status().map_or(Some(Vec::new()), |s| {
                s.voters
                    .iter()
                    .map(|v| names.get(v).map(|(_, p)| p.clone()))
                    .collect()
            });
            let link = match voters.map(|v| t.certifier.due(&chain, &v)) {
                Some(Due::Found(link)) => Some(link),
                Some(Due::Change {
                    seq,
                    voters,
                    prev,
                    cert,
                }) => {
                    let sig = (t.kit.sign)(&Link::change_bytes(&self.region, seq, &voters, &prev));
                    Some(Link {
                        region: self.region.clone(),
                        seq,
                        voters,
                        anchor: trust::Anchor::Change { prev, cert, sig },
                    })
                }
                _ => None,
            };
            if let Some(link) = link {
                let again = t
                    .proposed
                    .is_none_or(|(seq, at)| seq != link.seq || now - at >= PROPOSE_AGAIN);
                if again {
                    t.proposed = Some((link.seq, now));
                    tracing::info!(seq = link.seq, voters = ?link.voters, "committing the region's voters of record");
                    if let Err(e) = self.gov.propose(now, &Command::Link(Box::new(link))) {
                        tracing::debug!(error = %e, "voters of record not proposed");
                    }
                }
            }
        }
        let proof = t.certifier.proof(&chain).map(Arc::new);
        let changed = *t.kit.proof.borrow() != proof;
        if changed {
            if proof.is_some() {
                tracing::info!(
                    links = chain.len(),
                    "this master's authority is proven to other regions"
                );
            }
            t.kit.proof.send_replace(proof);
        }
    }
}

impl Handler<Trusting> for RegionActor {
    type Result = ();

    fn handle(&mut self, kit: Trusting, ctx: &mut Self::Context) {
        self.trust = Some(TrustState {
            certifier: Certifier::new(&self.region),
            kit,
            endorsed: None,
            proposed: None,
        });
        ctx.run_interval(TICK, |act, ctx| {
            act.trust_step();
            act.drain(ctx);
        });
        ctx.run_interval(SILENCES_AGAIN, |act, _| act.publish_silences());
        self.trust_step();
        self.drain(ctx);
    }
}

impl Handler<EndorseIn> for RegionActor {
    type Result = ();

    fn handle(&mut self, msg: EndorseIn, ctx: &mut Self::Context) {
        let Some(t) = self.trust.as_mut() else {
            return;
        };
        if msg.endorsement.voter != msg.from {
            return;
        }
        let verify = t.kit.verify.clone();
        if t.certifier.endorsed(msg.term, msg.endorsement, &*verify) {
            self.advance(Instant::now());
            self.drain(ctx);
        }
    }
}
