use super::*;

/// Fake keys: a peer's signature of `msg` is sha256(peer, msg); the admin's is
/// sha256("admin", msg).
struct Keys {
    admin: bool,
}

fn sig(who: &str, msg: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(who.as_bytes());
    h.update([0]);
    h.update(msg);
    h.finalize().to_vec()
}

impl Verify for Keys {
    fn peer(&self, peer: &node::Id, msg: &[u8], s: &[u8]) -> bool {
        sig(peer.as_str(), msg) == s
    }
    fn admin(&self, msg: &[u8], s: &[u8]) -> Option<bool> {
        self.admin.then(|| sig("admin", msg) == s)
    }
    fn has_admin(&self) -> bool {
        self.admin
    }
}

const TOFU: Keys = Keys { admin: false };
const ADMIN: Keys = Keys { admin: true };

fn id(s: &str) -> node::Id {
    node::Id::from(s)
}

fn ids(s: &[&str]) -> Vec<node::Id> {
    s.iter().map(|x| id(x)).collect()
}

fn endorse(region: &str, term: u64, master: &str, voter: &str) -> Endorsement {
    Endorsement {
        voter: id(voter),
        sig: sig(voter, &endorse_bytes(region, term, &id(master))),
    }
}

fn cert(region: &str, term: u64, master: &str, voters: &[&str]) -> TermCert {
    TermCert {
        region: region.into(),
        term,
        master: id(master),
        endorsements: voters
            .iter()
            .map(|v| endorse(region, term, master, v))
            .collect(),
    }
}

/// A master leading `term`, endorsed by `voters`.
fn master(region: &str, term: u64, own: &str, voters: &[&str]) -> Certifier {
    let mut c = Certifier::new(region);
    c.lead(Some((term, id(own))));
    for v in voters {
        assert!(c.endorsed(term, endorse(region, term, own, v), &TOFU));
    }
    c
}

fn founded(region: &str, voters: &[&str]) -> Vec<Link> {
    let c = master(region, 1, voters[0], voters);
    let Due::Found(root) = c.due(&[], &ids(voters)) else {
        panic!("a region with a majority of endorsements founds its chain");
    };
    let mut chain = Vec::new();
    assert!(append(&mut chain, root));
    chain
}

fn changed(chain: &mut Vec<Link>, term: u64, own: &str, endorsers: &[&str], to: &[&str]) {
    let c = master(&chain[0].region, term, own, endorsers);
    let Due::Change {
        seq,
        voters,
        prev,
        cert,
    } = c.due(chain, &ids(to))
    else {
        panic!("a change is due");
    };
    let s = sig(own, &Link::change_bytes(&cert.region, seq, &voters, &prev));
    let link = Link {
        region: cert.region.clone(),
        seq,
        voters,
        anchor: Anchor::Change { prev, cert, sig: s },
    };
    assert!(append(chain, link));
}

fn proof(chain: &[Link], term: u64, own: &str, endorsers: &[&str]) -> Proof {
    master(&chain[0].region, term, own, endorsers)
        .proof(chain)
        .expect("a majority endorsed")
}

#[test]
fn a_majority_of_voters_makes_a_certificate_and_a_minority_does_not() {
    let voters = ids(&["a", "b", "c"]);
    assert!(cert("r", 3, "a", &["a", "b"]).quorum_of(&voters, &TOFU));
    assert!(!cert("r", 3, "a", &["a"]).quorum_of(&voters, &TOFU));
    // A repeated endorsement, or one by a non-voter, does not count.
    assert!(!cert("r", 3, "a", &["a", "a", "x"]).quorum_of(&voters, &TOFU));
    // An endorsement of another master or term does not count.
    let mut c = cert("r", 3, "a", &["a"]);
    c.endorsements.push(endorse("r", 3, "b", "b"));
    c.endorsements.push(endorse("r", 2, "a", "c"));
    assert!(!c.quorum_of(&voters, &TOFU));
}

#[test]
fn the_master_gathers_endorsements_and_founds_then_proves() {
    let mut c = Certifier::new("r");
    c.lead(Some((1, id("a"))));
    assert!(c.endorsed(1, endorse("r", 1, "a", "a"), &TOFU));
    // Wrong term, wrong master, bad signature: refused.
    assert!(!c.endorsed(2, endorse("r", 2, "a", "b"), &TOFU));
    assert!(!c.endorsed(1, endorse("r", 1, "b", "b"), &TOFU));
    assert_eq!(c.due(&[], &ids(&["a", "b", "c"])), Due::Endorsements);
    assert!(c.endorsed(1, endorse("r", 1, "a", "b"), &TOFU));
    let Due::Found(root) = c.due(&[], &ids(&["c", "b", "a"])) else {
        panic!("founding due");
    };
    assert_eq!(root.voters, ids(&["a", "b", "c"]));
    let chain = vec![root];
    assert_eq!(c.due(&chain, &ids(&["a", "b", "c"])), Due::Nothing);
    let p = c.proof(&chain).expect("proof");
    let mut reg = Registry::default();
    assert_eq!(reg.check("r", 1, &id("a"), Some(&p), &TOFU, 5), Ok(()));
    assert_eq!(reg.regions()["r"].root_kind, "founding");
    // Losing the lead forgets the endorsements.
    c.lead(None);
    assert!(c.proof(&chain).is_none());
}

#[test]
fn a_rogue_cannot_prove_itself_master() {
    let chain = founded("b", &["a", "b", "c"]);
    let mut reg = Registry::default();
    reg.check(
        "b",
        1,
        &id("a"),
        Some(&proof(&chain, 1, "a", &["a", "b"])),
        &TOFU,
        1,
    )
    .expect("the real master");
    // The rogue endorses itself in a higher term: one signature, not a majority.
    let forged = Proof {
        chain: chain.clone(),
        cert: cert("b", 9, "rogue", &["rogue", "c"]),
        head: None,
    };
    assert_eq!(
        reg.check("b", 9, &id("rogue"), Some(&forged), &TOFU, 2),
        Err(Refusal::NoQuorum)
    );
    // Its own founding chain is a fork of the pinned root.
    let own = founded("b", &["rogue"]);
    let p = proof(&own, 9, "rogue", &["rogue"]);
    assert!(matches!(
        reg.check("b", 9, &id("rogue"), Some(&p), &TOFU, 3),
        Err(Refusal::Fork(_))
    ));
    // Its own change link, signed by itself, certified by a minority.
    let mut grown = chain.clone();
    let s = sig(
        "rogue",
        &Link::change_bytes("b", 1, &ids(&["rogue"]), &chain[0].digest()),
    );
    grown.push(Link {
        region: "b".into(),
        seq: 1,
        voters: ids(&["rogue"]),
        anchor: Anchor::Change {
            prev: chain[0].digest(),
            cert: cert("b", 9, "rogue", &["rogue", "c"]),
            sig: s,
        },
    });
    let p = Proof {
        chain: grown,
        cert: cert("b", 9, "rogue", &["rogue"]),
        head: None,
    };
    assert_eq!(
        reg.check("b", 9, &id("rogue"), Some(&p), &TOFU, 4),
        Err(Refusal::BadLink(1))
    );
    // No proof at all, or a proof of another term.
    assert_eq!(
        reg.check("b", 9, &id("rogue"), None, &TOFU, 5),
        Err(Refusal::Missing)
    );
    let real = proof(&chain, 1, "a", &["a", "b"]);
    assert!(matches!(
        reg.check("b", 9, &id("a"), Some(&real), &TOFU, 6),
        Err(Refusal::Mismatch(_))
    ));
    // The real master is still believed, and its term did not move.
    assert_eq!(reg.regions()["b"].term, 1);
    assert_eq!(reg.check("b", 1, &id("a"), Some(&real), &TOFU, 7), Ok(()));
}

#[test]
fn voters_change_only_with_a_majority_of_the_voters_before() {
    let mut chain = founded("b", &["a", "b", "c"]);
    let mut reg = Registry::default();
    reg.check(
        "b",
        1,
        &id("a"),
        Some(&proof(&chain, 1, "a", &["a", "b"])),
        &TOFU,
        1,
    )
    .expect("founding");
    // c died; d replaces it, committed by b in term 2 with a and b endorsing.
    changed(&mut chain, 2, "b", &["a", "b"], &["a", "b", "d"]);
    assert_eq!(chain.len(), 2);
    // The new master in term 3 is certified by the new voters.
    let p = proof(&chain, 3, "d", &["b", "d"]);
    assert_eq!(reg.check("b", 3, &id("d"), Some(&p), &TOFU, 2), Ok(()));
    assert_eq!(reg.regions()["b"].head_seq, 1);
    assert_eq!(reg.regions()["b"].voters, ids(&["a", "b", "d"]));
    // A summary of the old chain in an old term is stale.
    let old = proof(&chain[..1], 1, "a", &["a", "b"]);
    assert!(matches!(
        reg.check("b", 1, &id("a"), Some(&old), &TOFU, 3),
        Err(Refusal::StaleTerm { .. })
    ));
    // The old chain with a new term: older than the known chain.
    let old = proof(&chain[..1], 4, "a", &["a", "b"]);
    assert!(matches!(
        reg.check("b", 4, &id("a"), Some(&old), &TOFU, 4),
        Err(Refusal::StaleChain(_))
    ));
    // A node that learns the region late verifies the whole chain at once.
    let mut late = Registry::default();
    assert_eq!(late.check("b", 3, &id("d"), Some(&p), &TOFU, 5), Ok(()));
    // A change whose master signature is missing breaks the chain.
    let mut broken = chain.clone();
    if let Anchor::Change { sig, .. } = &mut broken[1].anchor {
        sig.clear();
    }
    let p = Proof {
        chain: broken,
        cert: cert("b", 3, "d", &["b", "d"]),
        head: None,
    };
    assert_eq!(
        Registry::default().check("b", 3, &id("d"), Some(&p), &TOFU, 6),
        Err(Refusal::BadLink(1))
    );
}

#[test]
fn with_an_admin_key_only_a_charter_roots_a_region() {
    let founding = founded("b", &["a", "b", "c"]);
    let mut reg = Registry::default();
    assert_eq!(
        reg.check(
            "b",
            1,
            &id("a"),
            Some(&proof(&founding, 1, "a", &["a", "b"])),
            &ADMIN,
            1
        ),
        Err(Refusal::NeedsCharter)
    );
    let mut charter = Charter::new("b", ids(&["c", "a", "b"]), "ops", 10);
    charter.sig = sig("rogue", &charter.signed_bytes());
    let forged = vec![Link::chartered(charter.clone())];
    assert_eq!(
        reg.check(
            "b",
            1,
            &id("a"),
            Some(&proof(&forged, 1, "a", &["a", "b"])),
            &ADMIN,
            2
        ),
        Err(Refusal::BadCharter)
    );
    charter.sig = sig("admin", &charter.signed_bytes());
    let chain = vec![Link::chartered(charter)];
    assert_eq!(
        reg.check(
            "b",
            2,
            &id("a"),
            Some(&proof(&chain, 2, "a", &["a", "b"])),
            &ADMIN,
            3
        ),
        Ok(())
    );
    assert_eq!(reg.regions()["b"].root_kind, "charter");
    // A later charter supersedes the first (an operator re-chartered after a recovery).
    let mut again = Charter::new("b", ids(&["x", "y", "z"]), "ops", 20);
    again.sig = sig("admin", &again.signed_bytes());
    let chain = vec![Link::chartered(again)];
    assert_eq!(
        reg.check(
            "b",
            5,
            &id("x"),
            Some(&proof(&chain, 5, "x", &["x", "y"])),
            &ADMIN,
            4
        ),
        Ok(())
    );
    assert_eq!(reg.regions()["b"].voters, ids(&["x", "y", "z"]));
}

#[test]
fn a_committed_chain_only_grows_by_links_that_follow_it() {
    let mut chain = founded("b", &["a", "b", "c"]);
    // A second founding root does not replace the first.
    let other = founded("b", &["x"]).remove(0);
    assert!(!append(&mut chain, other));
    changed(&mut chain, 2, "a", &["a", "b"], &["a", "b"]);
    let stale = chain[1].clone();
    assert!(!append(&mut chain, stale), "the same link twice");
    let mut charter = Charter::new("b", ids(&["a"]), "ops", 1);
    charter.sig = sig("admin", &charter.signed_bytes());
    assert!(append(&mut chain, Link::chartered(charter)));
    assert_eq!(chain.len(), 1);
}

#[test]
fn a_brief_proof_holds_only_for_a_master_verified_already() {
    let chain = founded("b", &["a", "b", "c"]);
    let full = proof(&chain, 1, "a", &["a", "b"]);
    let brief = full.brief();
    assert!(brief.chain.is_empty() && brief.cert.endorsements.is_empty());
    let mut reg = Registry::default();
    assert_eq!(
        reg.check("b", 1, &id("a"), Some(&brief), &TOFU, 1),
        Err(Refusal::Unverified)
    );
    reg.check("b", 1, &id("a"), Some(&full), &TOFU, 2)
        .expect("full");
    assert_eq!(reg.check("b", 1, &id("a"), Some(&brief), &TOFU, 3), Ok(()));
    // Another master, term or head: not covered by what was verified.
    let mut other = brief.clone();
    other.cert.master = id("rogue");
    assert_eq!(
        reg.check("b", 1, &id("rogue"), Some(&other), &TOFU, 4),
        Err(Refusal::Unverified)
    );
    let mut other = brief.clone();
    other.cert.term = 2;
    assert_eq!(
        reg.check("b", 2, &id("a"), Some(&other), &TOFU, 5),
        Err(Refusal::Unverified)
    );
    let mut other = brief;
    other.head = Some("00".repeat(32));
    assert_eq!(
        reg.check("b", 1, &id("a"), Some(&other), &TOFU, 6),
        Err(Refusal::Unverified)
    );
}

#[test]
fn the_regions_kept_are_bounded() {
    let mut reg = Registry::default();
    for i in 0..MAX_REGIONS + 3 {
        let region = format!("r{i}");
        let chain = founded(&region, &["a"]);
        let p = proof(&chain, 1, "a", &["a"]);
        reg.check(&region, 1, &id("a"), Some(&p), &TOFU, i as u64)
            .expect("verified");
    }
    assert_eq!(reg.regions().len(), MAX_REGIONS);
    assert!(!reg.regions().contains_key("r0"), "the oldest went first");
    assert!(reg.regions().contains_key(&format!("r{}", MAX_REGIONS + 2)));
}
