//! Trust across regions: who may speak for a region that is not this node's own.
//!
//! A node believes its own region's master from its own consensus. For another region it
//! has only what arrives on the fleet topic, so every summary, approval and emergency of
//! a region carries a [`Proof`] that its author is that region's master in that term:
//!
//! - **Term certificate** ([`TermCert`]): the voters of the region endorse the master
//!   their consensus elected ([`Endorsement`], one signature per voter and term). A
//!   certificate holds endorsements of a majority of the voters of record. Raft elects at
//!   most one master per term and an honest voter endorses only the master its own Raft
//!   follows, so one term has at most one certificate unless a majority of voters is
//!   compromised.
//! - **Voters of record** ([`Link`]s, a chain): the root is either an operator's
//!   [`Charter`] signed by the fleet admin key (`fleet.admin_key`), or, with no admin key
//!   configured, the region's founding voters endorsing their first master (trusted on
//!   first use and pinned: a different root later is a fork and refused). Each change of
//!   voters is a link naming the digest of the one before, signed by the master that
//!   committed it and carrying that master's certificate by a majority of the *previous*
//!   voters. So the voters of record only change with the consent of the voters before.
//!
//! What the fleet key (the pre-shared transport key) buys an attacker: it joins the mesh
//! and publishes anything, signed with its own peer key; without the admin key or the
//! private keys of a majority of a region's voters it cannot make a proof for that
//! region. A holder of the admin key can charter any region with voters of its choice:
//! keep it offline. A majority of a region's voters can speak for their region (as they
//! can in its consensus).
//!
//! Sans-IO: signatures are checked by a [`Verify`] the runtime hands in (ed25519 keys
//! recovered from peer ids, the admin key from settings); times are passed in.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::node;

/// Links a chain holds at most; a longer chain is refused (re-charter the region).
pub const MAX_CHAIN: usize = 64;
/// Refusals kept for the API.
const REFUSALS_KEPT: usize = 64;
/// Regions whose authority a node keeps at most; the one verified least recently goes
/// first (a peer inventing regions cannot grow it without bound).
pub const MAX_REGIONS: usize = 4096;

/// Checks signatures (the runtime's crypto).
pub trait Verify {
    /// Whether `sig` is `peer`'s signature of `msg` (the key recovered from the peer id).
    fn peer(&self, peer: &node::Id, msg: &[u8], sig: &[u8]) -> bool;
    /// Whether `sig` is the fleet admin key's signature of `msg`; `None` when no admin
    /// key is configured.
    fn admin(&self, msg: &[u8], sig: &[u8]) -> Option<bool>;
    /// Whether an admin key is configured (roots must then be charters).
    fn has_admin(&self) -> bool;
}

/// Signs with this node's key (the runtime's crypto).
pub type Sign = std::sync::Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// A voter's endorsement of `master` as its region's master in `term`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    pub voter: node::Id,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// What a voter signs to endorse `master` in `term`.
pub fn endorse_bytes(region: &str, term: u64, master: &node::Id) -> Vec<u8> {
    rmp_serde::to_vec(&("fleetmesh-endorse-v1", region, term, master)).unwrap_or_default()
}

/// Endorsements of one master in one term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermCert {
    pub region: String,
    pub term: u64,
    pub master: node::Id,
    pub endorsements: Vec<Endorsement>,
}

impl TermCert {
    /// Whether a majority of `voters` endorsed this certificate's master, each signature
    /// checked (unknown voters and repeated voters do not count).
    pub fn quorum_of(&self, voters: &[node::Id], v: &dyn Verify) -> bool {
        let msg = endorse_bytes(&self.region, self.term, &self.master);
        let mut counted = BTreeSet::new();
        for e in &self.endorsements {
            if voters.contains(&e.voter)
                && !counted.contains(&e.voter)
                && v.peer(&e.voter, &msg, &e.sig)
            {
                counted.insert(e.voter.clone());
            }
        }
        counted.len() > voters.len() / 2
    }
}

/// An operator's statement, signed with the fleet admin key: `voters` speak for `region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charter {
    pub region: String,
    /// Peer ids, sorted.
    pub voters: Vec<node::Id>,
    pub issued_unix_ms: u64,
    pub by: String,
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

impl Charter {
    /// An unsigned charter; the admin key signs [`Charter::signed_bytes`].
    pub fn new(region: &str, mut voters: Vec<node::Id>, by: &str, now: u64) -> Charter {
        voters.sort();
        voters.dedup();
        Charter {
            region: region.to_string(),
            voters,
            issued_unix_ms: now,
            by: by.to_string(),
            sig: Vec::new(),
        }
    }

    pub fn signed_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec(&(
            "fleetmesh-charter-v1",
            &self.region,
            &self.voters,
            self.issued_unix_ms,
            &self.by,
        ))
        .unwrap_or_default()
    }
}

/// Why a link's voters are the voters of record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Anchor {
    /// A root chartered by the operator.
    Charter(Charter),
    /// A root the founding voters endorsed (their first master's certificate).
    Founding(TermCert),
    /// A change: the link before (its digest), the certificate of the master that
    /// committed the change by a majority of the voters before, and that master's
    /// signature of the link.
    Change {
        prev: String,
        cert: TermCert,
        #[serde(with = "serde_bytes")]
        sig: Vec<u8>,
    },
}

/// The voters of record of a region from one change on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub region: String,
    pub seq: u64,
    /// Peer ids, sorted.
    pub voters: Vec<node::Id>,
    pub anchor: Anchor,
}

impl Link {
    /// What the master signs for a change: everything but the anchor's signature.
    pub fn change_bytes(region: &str, seq: u64, voters: &[node::Id], prev: &str) -> Vec<u8> {
        rmp_serde::to_vec(&("fleetmesh-link-v1", region, seq, voters, prev)).unwrap_or_default()
    }

    /// The link's digest (hex sha256 of its encoding), named by the next link.
    pub fn digest(&self) -> String {
        let bytes = rmp_serde::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(bytes))
    }

    /// The root a charter makes.
    pub fn chartered(charter: Charter) -> Link {
        Link {
            region: charter.region.clone(),
            seq: 0,
            voters: charter.voters.clone(),
            anchor: Anchor::Charter(charter),
        }
    }

    fn kind(&self) -> &'static str {
        match self.anchor {
            Anchor::Charter(_) => "charter",
            Anchor::Founding(_) => "founding",
            Anchor::Change { .. } => "change",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a region's message carries to prove its master: the voters of record and the
/// master's certificate by them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// Empty in a brief proof ([`Proof::brief`]).
    pub chain: Vec<Link>,
    pub cert: TermCert,
    /// In a brief proof: the digest of the chain's head.
    #[serde(default)]
    pub head: Option<String>,
}

impl Proof {
    /// The same claim without the chain and the endorsements: enough for a node that
    /// already verified this term's master under this chain, and about a tenth of the
    /// bytes. Summaries carry it between full proofs.
    pub fn brief(&self) -> Proof {
        Proof {
            chain: Vec::new(),
            cert: TermCert {
                endorsements: Vec::new(),
                ..self.cert.clone()
            },
            head: self.chain.last().map(Link::digest),
        }
    }
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "why", content = "detail")]
pub enum Refusal {
    #[error("no proof of authority")]
    Missing,
    #[error("the proof is for another region, term or master ({0})")]
    Mismatch(String),
    #[error("the chain of voters is empty, too long or does not start with a root")]
    BadChain,
    #[error("a founding root needs a charter: fleet.admin_key is set")]
    NeedsCharter,
    #[error("the charter's admin signature does not verify")]
    BadCharter,
    #[error("link {0} does not follow the one before or is not signed by a majority of its voters")]
    BadLink(u64),
    #[error("the chain's root differs from the root first trusted ({0})")]
    Fork(String),
    #[error("the chain is older than the one known (known head {0})")]
    StaleChain(String),
    #[error("the master's certificate lacks a majority of the voters of record")]
    NoQuorum,
    #[error("term {term} is below the term known ({known})")]
    StaleTerm { term: u64, known: u64 },
    #[error("a brief proof of a master not verified here yet (a full proof follows)")]
    Unverified,
}

/// A region's authority as this node verified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Known {
    pub root: String,
    /// `charter` or `founding` (trusted on first use).
    pub root_kind: &'static str,
    pub head: String,
    pub head_seq: u64,
    pub voters: Vec<node::Id>,
    pub term: u64,
    pub master: node::Id,
    /// Every link digest of the verified chain, in order.
    #[serde(skip)]
    links: Vec<String>,
    /// The charter's issue time, for a later charter to supersede it.
    #[serde(skip)]
    chartered_at: Option<u64>,
    pub verified_unix_ms: u64,
}

/// One refusal, for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    pub at_unix_ms: u64,
    pub kind: String,
    pub region: String,
    pub term: u64,
    pub master: node::Id,
    pub author: node::Id,
    pub why: Refusal,
}

/// The authority of every other region as this node verified it.
#[derive(Debug, Default)]
pub struct Registry {
    regions: BTreeMap<String, Known>,
    refused: VecDeque<Refused>,
    refused_total: u64,
}

impl Registry {
    /// Checks that `proof` makes `master` the master of `region` in `term`; on success the
    /// region's verified chain and term move forward.
    pub fn check(
        &mut self,
        region: &str,
        term: u64,
        master: &node::Id,
        proof: Option<&Proof>,
        v: &dyn Verify,
        now: u64,
    ) -> Result<(), Refusal> {
        let proof = proof.ok_or(Refusal::Missing)?;
        let cert = &proof.cert;
        if cert.region != region || cert.term != term || &cert.master != master {
            return Err(Refusal::Mismatch(format!(
                "{} term {} master {}",
                cert.region, cert.term, cert.master
            )));
        }
        if proof.chain.is_empty() {
            // A brief proof: only what this node verified already.
            return match self.regions.get(region) {
                Some(k)
                    if k.term == term
                        && &k.master == master
                        && proof.head.as_ref() == Some(&k.head) =>
                {
                    Ok(())
                }
                _ => Err(Refusal::Unverified),
            };
        }
        let head = proof
            .chain
            .last()
            .filter(|_| proof.chain.len() <= MAX_CHAIN)
            .ok_or(Refusal::BadChain)?;
        let head_digest = head.digest();
        let known = self.regions.get(region);
        if let Some(k) = known {
            if term < k.term {
                return Err(Refusal::StaleTerm {
                    term,
                    known: k.term,
                });
            }
            if k.term == term && &k.master == master && k.head == head_digest {
                return Ok(());
            }
        }
        let digests = verify_chain(region, &proof.chain, v)?;
        let root = &proof.chain[0];
        let chartered_at = match &root.anchor {
            Anchor::Charter(c) => Some(c.issued_unix_ms),
            _ => None,
        };
        if let Some(k) = known {
            let same_root = k.root == digests[0];
            let newer_charter = chartered_at.is_some_and(|t| k.chartered_at.is_none_or(|o| t > o));
            if !same_root && !newer_charter {
                return Err(Refusal::Fork(k.root.clone()));
            }
            if same_root && !digests.contains(&k.head) {
                // Either an older chain (its head is in what we know) or a fork.
                return Err(if k.links.contains(&head_digest) {
                    Refusal::StaleChain(k.head.clone())
                } else {
                    Refusal::Fork(k.root.clone())
                });
            }
        }
        if !cert.quorum_of(&head.voters, v) {
            return Err(Refusal::NoQuorum);
        }
        if !self.regions.contains_key(region) && self.regions.len() >= MAX_REGIONS {
            let oldest = self
                .regions
                .iter()
                .min_by_key(|(_, k)| k.verified_unix_ms)
                .map(|(r, _)| r.clone());
            if let Some(r) = oldest {
                self.regions.remove(&r);
            }
        }
        self.regions.insert(
            region.to_string(),
            Known {
                root: digests[0].clone(),
                root_kind: root.kind(),
                head: head_digest,
                head_seq: head.seq,
                voters: head.voters.clone(),
                term,
                master: master.clone(),
                links: digests,
                chartered_at,
                verified_unix_ms: now,
            },
        );
        Ok(())
    }

    /// Records a refusal (of `kind`: summary, approval, emergency) for the API.
    pub fn refuse(&mut self, r: Refused) {
        if self.refused.len() == REFUSALS_KEPT {
            self.refused.pop_front();
        }
        self.refused.push_back(r);
        self.refused_total += 1;
    }

    pub fn regions(&self) -> &BTreeMap<String, Known> {
        &self.regions
    }

    pub fn refused(&self) -> impl DoubleEndedIterator<Item = &Refused> {
        self.refused.iter()
    }

    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }
}

/// Verifies a chain from its root; returns each link's digest.
fn verify_chain(region: &str, chain: &[Link], v: &dyn Verify) -> Result<Vec<String>, Refusal> {
    let root = chain.first().ok_or(Refusal::BadChain)?;
    if root.region != region || root.seq != 0 || root.voters.is_empty() {
        return Err(Refusal::BadChain);
    }
    match &root.anchor {
        Anchor::Charter(c) => {
            if c.region != region || c.voters != root.voters {
                return Err(Refusal::BadChain);
            }
            if v.admin(&c.signed_bytes(), &c.sig) == Some(false) {
                return Err(Refusal::BadCharter);
            }
        }
        Anchor::Founding(cert) => {
            if v.has_admin() {
                return Err(Refusal::NeedsCharter);
            }
            if cert.region != region || !cert.quorum_of(&root.voters, v) {
                return Err(Refusal::BadLink(0));
            }
        }
        Anchor::Change { .. } => return Err(Refusal::BadChain),
    }
    let mut digests = vec![root.digest()];
    let mut last_term = 0;
    for pair in chain.windows(2) {
        let (before, link) = (&pair[0], &pair[1]);
        let Anchor::Change { prev, cert, sig } = &link.anchor else {
            return Err(Refusal::BadLink(link.seq));
        };
        let ok = link.region == region
            && link.seq == before.seq + 1
            && !link.voters.is_empty()
            && prev == digests.last().expect("root pushed")
            && cert.region == region
            && cert.term >= last_term
            && v.peer(
                &cert.master,
                &Link::change_bytes(region, link.seq, &link.voters, prev),
                sig,
            )
            && cert.quorum_of(&before.voters, v);
        if !ok {
            return Err(Refusal::BadLink(link.seq));
        }
        last_term = cert.term;
        digests.push(link.digest());
    }
    Ok(digests)
}

/// What the master must add to its region's chain next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing: the chain names the voters in force and the certificate has a majority.
    Nothing,
    /// Wait for more endorsements.
    Endorsements,
    /// The region has no chain: found it with these voters (the certificate has their
    /// majority).
    Found(Link),
    /// The voters changed: this change, once signed by the master
    /// ([`Link::change_bytes`]), is the next link.
    Change {
        seq: u64,
        voters: Vec<node::Id>,
        prev: String,
        cert: TermCert,
    },
}

/// The master's side: endorsements gathered for its term, and what the chain needs.
#[derive(Debug, Default)]
pub struct Certifier {
    region: String,
    /// The term this node leads and itself, while it leads.
    leading: Option<(u64, node::Id)>,
    endorsements: BTreeMap<node::Id, Vec<u8>>,
}

impl Certifier {
    pub fn new(region: &str) -> Certifier {
        Certifier {
            region: region.to_string(),
            ..Certifier::default()
        }
    }

    /// This node leads in `term` as `own` (or no longer leads). A new term starts with
    /// no endorsement.
    pub fn lead(&mut self, leading: Option<(u64, node::Id)>) {
        if self.leading != leading {
            self.endorsements.clear();
        }
        self.leading = leading;
    }

    /// Takes a voter's endorsement of this node in `term`; true when it is new and
    /// verifies.
    pub fn endorsed(&mut self, term: u64, e: Endorsement, v: &dyn Verify) -> bool {
        let Some((t, own)) = &self.leading else {
            return false;
        };
        if *t != term
            || self.endorsements.get(&e.voter) == Some(&e.sig)
            || !v.peer(&e.voter, &endorse_bytes(&self.region, term, own), &e.sig)
        {
            return false;
        }
        self.endorsements.insert(e.voter, e.sig);
        true
    }

    /// Whether a majority of `voters` endorsed this node (the endorsements were checked
    /// when they came: [`Certifier::endorsed`]).
    fn majority_of(&self, voters: &[node::Id]) -> bool {
        let n = voters
            .iter()
            .filter(|v| self.endorsements.contains_key(*v))
            .count();
        n > voters.len() / 2
    }

    /// The certificate as gathered so far.
    pub fn cert(&self) -> Option<TermCert> {
        let (term, master) = self.leading.clone()?;
        Some(TermCert {
            region: self.region.clone(),
            term,
            master,
            endorsements: self
                .endorsements
                .iter()
                .map(|(voter, sig)| Endorsement {
                    voter: voter.clone(),
                    sig: sig.clone(),
                })
                .collect(),
        })
    }

    /// The proof to attach to this node's messages: the committed `chain` and the
    /// certificate, when that has a majority of the chain's last voters.
    pub fn proof(&self, chain: &[Link]) -> Option<Proof> {
        let cert = self.cert()?;
        let head = chain.last()?;
        self.majority_of(&head.voters).then(|| Proof {
            chain: chain.to_vec(),
            cert,
            head: None,
        })
    }

    /// What `chain` needs for `voters` (the voters in force, peer ids) to be of record.
    pub fn due(&self, chain: &[Link], voters: &[node::Id]) -> Due {
        let Some(cert) = self.cert() else {
            return Due::Nothing;
        };
        let mut voters = voters.to_vec();
        voters.sort();
        voters.dedup();
        match chain.last() {
            None if voters.is_empty() => Due::Nothing,
            None if self.majority_of(&voters) => Due::Found(Link {
                region: self.region.clone(),
                seq: 0,
                voters,
                anchor: Anchor::Founding(cert),
            }),
            None => Due::Endorsements,
            Some(head) if head.voters == voters || voters.is_empty() => {
                if self.majority_of(&head.voters) {
                    Due::Nothing
                } else {
                    Due::Endorsements
                }
            }
            Some(_) if chain.len() >= MAX_CHAIN => Due::Nothing,
            Some(head) if self.majority_of(&head.voters) => Due::Change {
                seq: head.seq + 1,
                voters,
                prev: head.digest(),
                cert,
            },
            Some(_) => Due::Endorsements,
        }
    }
}

/// Adds a committed `link` to `chain` if it follows it (or starts it): a charter replaces
/// the chain; a founding root only starts an empty one; a change must name the head.
pub fn append(chain: &mut Vec<Link>, link: Link) -> bool {
    let follows = match (&link.anchor, chain.last()) {
        (Anchor::Charter(_), _) => {
            chain.clear();
            true
        }
        (Anchor::Founding(_), None) => true,
        (Anchor::Change { prev, .. }, Some(head)) => {
            link.seq == head.seq + 1 && *prev == head.digest() && chain.len() < MAX_CHAIN
        }
        _ => false,
    };
    if follows {
        chain.push(link);
    }
    follows
}

#[cfg(test)]
mod tests;
