//! The network's side of trust across regions (`fleetmesh_actors::trust`): ed25519
//! signatures checked with keys recovered from peer ids and with the fleet admin key,
//! proofs attached to this node's region messages on the fleet topic, and other regions'
//! messages admitted only with a proof that verifies.

use std::sync::{Arc, Mutex};

use fleetmesh_actors::node;
use fleetmesh_actors::trust::{Proof, Refusal, Refused, Registry, Verify};
use fleetmesh_actors::wire;
use libp2p::PeerId;
use libp2p::identity::{PublicKey, ed25519};
use tokio::sync::watch;

/// Signature checks with real keys.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    admin: Option<ed25519::PublicKey>,
}

impl Keys {
    /// `admin_hex`: the fleet admin key's public half, 64 hex digits, or empty for none.
    pub fn new(admin_hex: &str) -> anyhow::Result<Keys> {
        let admin = match admin_hex.trim() {
            "" => None,
            h => Some(admin_key(h)?),
        };
        Ok(Keys { admin })
    }
}

/// Parses the fleet admin key's public half (64 hex digits).
pub fn admin_key(h: &str) -> anyhow::Result<ed25519::PublicKey> {
    let bytes = hex::decode(h.trim())
        .map_err(|e| anyhow::anyhow!("not hex ({e}); expected 64 hex digits"))?;
    ed25519::PublicKey::try_from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("not an ed25519 public key ({e}); expected 64 hex digits"))
}

/// The public key a peer id names (ed25519 peer ids embed their key).
pub fn peer_key(peer: &node::Id) -> Option<PublicKey> {
    let id: PeerId = peer.as_str().parse().ok()?;
    let mh = id.as_ref();
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok()
}

impl Verify for Keys {
    fn peer(&self, peer: &node::Id, msg: &[u8], sig: &[u8]) -> bool {
        peer_key(peer).is_some_and(|k| k.verify(msg, sig))
    }

    fn admin(&self, msg: &[u8], sig: &[u8]) -> Option<bool> {
        self.admin.as_ref().map(|k| k.verify(msg, sig))
    }

    fn has_admin(&self) -> bool {
        self.admin.is_some()
    }
}

/// What the driver checks and attaches.
#[derive(Debug)]
pub struct Gate {
    region: String,
    keys: Keys,
    registry: Arc<Mutex<Registry>>,
    proof: watch::Receiver<Option<Arc<Proof>>>,
    /// The proof last sent whole with a summary, and summaries sent brief since.
    full_sent: Option<(Arc<Proof>, u32)>,
}

/// A summary carries the whole proof at least once in this many (the others a brief one,
/// enough for the nodes that verified the whole one): a node that starts believes a
/// region within this many summaries.
pub const FULL_PROOF_EVERY: u32 = 5;

/// What a foreign message claims: its region, term and master.
fn claim(body: &wire::Body) -> Option<(&'static str, &str, u64, &node::Id)> {
    match body {
        wire::Body::Census(s) => Some(("summary", &s.region, s.term, s.master.as_ref()?)),
        wire::Body::Approval(a) => Some(("approval", &a.region, a.term, &a.master)),
        wire::Body::Emergency(e) => Some(("emergency", &e.region, e.term, &e.master)),
        wire::Body::Silences(s) => Some(("silences", &s.region, s.term, &s.master)),
        _ => None,
    }
}

fn proof_of(body: &mut wire::Body) -> Option<&mut Option<Box<Proof>>> {
    match body {
        wire::Body::Census(s) => Some(&mut s.proof),
        wire::Body::Approval(a) => Some(&mut a.proof),
        wire::Body::Emergency(e) => Some(&mut e.proof),
        wire::Body::Silences(s) => Some(&mut s.proof),
        _ => None,
    }
}

impl Gate {
    pub fn new(
        region: &str,
        keys: Keys,
        registry: Arc<Mutex<Registry>>,
        proof: watch::Receiver<Option<Arc<Proof>>>,
    ) -> Gate {
        Gate {
            region: region.to_string(),
            keys,
            registry,
            proof,
            full_sent: None,
        }
    }

    /// The receiver of this node's proof, to wake on a change.
    pub fn proof_changed(&mut self) -> &mut watch::Receiver<Option<Arc<Proof>>> {
        &mut self.proof
    }

    /// Attaches this node's proof to a fleet message of its own region that needs one.
    /// False when it needs one and this node has none (yet): the caller holds it.
    /// A summary carries the whole proof when it changed and every
    /// [`FULL_PROOF_EVERY`] summaries, a brief one otherwise; anything else the whole one.
    pub fn attach(&mut self, body: &mut wire::Body) -> bool {
        let own = claim(body).is_some_and(|(_, region, ..)| region == self.region);
        let Some(slot) = proof_of(body) else {
            return true;
        };
        if !own || slot.is_some() {
            return true;
        }
        let current = self.proof.borrow().clone();
        let p = match current {
            Some(p) if claim_matches(&p, body) => p,
            _ => return false,
        };
        let proof = if matches!(body, wire::Body::Census(_)) {
            match &mut self.full_sent {
                Some((sent, n)) if Arc::ptr_eq(sent, &p) && *n + 1 < FULL_PROOF_EVERY => {
                    *n += 1;
                    p.brief()
                }
                _ => {
                    self.full_sent = Some((p.clone(), 0));
                    (*p).clone()
                }
            }
        } else {
            (*p).clone()
        };
        *proof_of(body).expect("checked") = Some(Box::new(proof));
        true
    }

    /// Admits a message heard on the fleet topic: one of another region only with a
    /// proof that verifies (then dropped from the message). `Err` names the refusal.
    pub fn admit(
        &self,
        author: &node::Id,
        body: &mut wire::Body,
        now: u64,
    ) -> Result<(), (&'static str, String)> {
        let Some((kind, region, term, master)) = claim(body) else {
            return Ok(());
        };
        if region == self.region {
            return Ok(());
        }
        let (region, master) = (region.to_string(), master.clone());
        let slot = proof_of(body).expect("claimed");
        let proof = slot.take();
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        match registry.check(&region, term, &master, proof.as_deref(), &self.keys, now) {
            Ok(()) => Ok(()),
            // A brief proof before the whole one: expected of a node that just started.
            Err(why @ Refusal::Unverified) => {
                tracing::debug!(kind, %region, term, %master, "a brief proof not verifiable yet");
                Err(("unverified", why.to_string()))
            }
            Err(why) => {
                let text = why.to_string();
                tracing::warn!(kind, %region, term, %master, %author, why = %text, "refused a message of another region: its authority does not verify");
                registry.refuse(Refused {
                    at_unix_ms: now,
                    kind: kind.to_string(),
                    region,
                    term,
                    master,
                    author: author.clone(),
                    why,
                });
                Err((kind, text))
            }
        }
    }
}

fn claim_matches(p: &Proof, body: &wire::Body) -> bool {
    claim(body).is_some_and(|(_, _, term, master)| p.cert.term == term && &p.cert.master == master)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    #[test]
    fn peer_ids_carry_their_key_and_the_admin_key_reads_from_hex() {
        let k = Keypair::generate_ed25519();
        let peer = node::Id::from(k.public().to_peer_id().to_base58());
        let sig = k.sign(b"hello").expect("sign");
        let keys = Keys::new("").expect("no admin");
        assert!(keys.peer(&peer, b"hello", &sig));
        assert!(!keys.peer(&peer, b"other", &sig));
        assert!(!keys.peer(&node::Id::from("garbage"), b"hello", &sig));
        assert_eq!(keys.admin(b"x", &sig), None);

        let admin = ed25519::Keypair::generate();
        let keys = Keys::new(&hex::encode(admin.public().to_bytes())).expect("admin");
        assert_eq!(keys.admin(b"x", &admin.sign(b"x")), Some(true));
        assert_eq!(keys.admin(b"y", &admin.sign(b"x")), Some(false));
        let err = Keys::new("abc").expect_err("odd hex").to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
