use super::*;
use crate::spike::Severity;

fn spike(origin: &str, kind: Kind, change: Change, subject: &str, after: u8) -> Spike {
    Spike {
        after: Some(Digest([after; 32])),
        severity: Severity::Medium,
        ..Spike::bare(origin, 1, kind, change, subject)
    }
}

fn file(origin: &str, subject: &str, after: u8) -> Spike {
    spike(origin, Kind::File, Change::Modified, subject, after)
}

fn approval(region: &str, term: u64, master: &str, subject: &str) -> Approval {
    let pattern = Pattern {
        roles: BTreeSet::from(["web".to_string()]),
        kind: Kind::User,
        change: Change::Added,
        subject: subject.into(),
        after: None,
    };
    Approval::new(
        pattern,
        region,
        term,
        node::Id::from(master),
        "operator test".into(),
        5,
    )
}

fn view(master: &str, term: u64) -> View {
    View {
        region: "eu".into(),
        master: Some((node::Id::from(master), term)),
    }
}

#[test]
fn gossiped_approvals_need_the_known_master_of_their_term() {
    let mut k = Knowledge::default();
    let v = view("m", 3);
    assert_eq!(
        k.offer(approval("eu", 3, "m", "deploy"), Via::Gossip, &v, 1),
        Ok(true)
    );
    assert_eq!(
        k.offer(approval("eu", 3, "m", "deploy"), Via::Gossip, &v, 2),
        Ok(false)
    );
    let forged = k.offer(approval("eu", 3, "x", "mallory"), Via::Gossip, &v, 3);
    assert!(
        matches!(forged, Err(Rejection::NotMaster { .. })),
        "{forged:?}"
    );
    let stale = k.offer(approval("eu", 2, "m", "old"), Via::Gossip, &v, 3);
    assert!(
        matches!(stale, Err(Rejection::NotMaster { .. })),
        "{stale:?}"
    );
    let blind = k.offer(
        approval("eu", 3, "m", "x"),
        Via::Gossip,
        &View {
            region: "eu".into(),
            master: None,
        },
        3,
    );
    assert!(matches!(blind, Err(Rejection::NoMasterKnown { .. })));
    // The log is authoritative whatever the view.
    assert_eq!(
        k.offer(approval("eu", 1, "old", "logged"), Via::Log, &v, 4),
        Ok(true)
    );
    assert_eq!(k.len(), 2);
    assert_eq!(k.rejected().1, 3);
    // Another region: the first signer of the highest term; others in that term refused.
    assert_eq!(
        k.offer(approval("us", 7, "a", "u1"), Via::Gossip, &v, 5),
        Ok(true)
    );
    assert!(
        k.offer(approval("us", 7, "b", "u2"), Via::Gossip, &v, 5)
            .is_err()
    );
    assert!(
        k.offer(approval("us", 6, "a", "u3"), Via::Gossip, &v, 5)
            .is_err()
    );
    assert_eq!(
        k.offer(approval("us", 8, "b", "u4"), Via::Gossip, &v, 5),
        Ok(true)
    );
}

#[test]
fn a_learned_pattern_covers_only_its_roles() {
    let mut k = Knowledge::default();
    k.offer(
        approval("eu", 1, "m", "deploy"),
        Via::Log,
        &View::default(),
        0,
    )
    .expect("taken");
    let s = spike("n", Kind::User, Change::Added, "deploy", 9);
    assert!(k.matching("web", &s).is_some());
    assert!(k.matching("baseline", &s).is_none());
    let other = spike("n", Kind::User, Change::Removed, "deploy", 9);
    assert!(k.matching("web", &other).is_none());
}

#[test]
fn approvals_survive_msgpack_and_sign_over_their_content() {
    let a = approval("eu", 3, "m", "deploy");
    let bytes = rmp_serde::to_vec(&a).expect("encodes");
    let back: Approval = rmp_serde::from_slice(&bytes).expect("decodes");
    assert_eq!(back, a);
    let mut changed = a.clone();
    changed.term = 4;
    assert_ne!(changed.signed_bytes(), a.signed_bytes());
}

fn web_policy() -> Policy {
    crate::policy::parse(
        "web.toml",
        "[[rules]]\nname = \"deploy\"\ndecision = \"approved\"\nkinds = [\"user\"]\nchanges = [\"added\"]\nsubjects = [\"deploy*\"]\n[[rules]]\nname = \"site\"\ndecision = \"approved\"\nkinds = [\"file\"]\nsubjects = [\"/var/www/**\"]\n",
    )
    .expect("valid")
}

fn brain() -> Brain {
    let mut b = Brain::new(Config::default());
    b.set_policies(BTreeMap::from([("web".to_string(), web_policy())]));
    // Eight web servers: half of them (4) make a fleet event.
    b.set_live(BTreeMap::from([("web".to_string(), 8)]));
    b
}

#[test]
fn policy_approved_users_are_learned_once() {
    let mut b = brain();
    let s = spike("w1", Kind::User, Change::Added, "deploy", 1);
    let out = b.intake(&s, "web", 1_000);
    assert!(
        matches!(&out[..], [Effect::Learn { pattern, by }] if pattern.subject == "deploy" && by.contains("web.toml:1#deploy")),
        "{out:?}"
    );
    // Asked once, even before the approval is committed.
    let again = spike("w2", Kind::User, Change::Added, "deploy", 1);
    assert!(b.intake(&again, "web", 1_100).is_empty());
    // Not learned: what policy does not approve, and files.
    assert!(
        b.intake(
            &spike("w1", Kind::User, Change::Added, "eve", 1),
            "web",
            1_200
        )
        .is_empty()
    );
}

#[test]
fn a_change_on_many_servers_is_one_event_and_held_changes_are_covered() {
    let mut b = brain();
    let mut events = Vec::new();
    for (i, w) in ["w1", "w2", "w3", "w4"].iter().enumerate() {
        let s = file(w, "/srv/app.conf", 7);
        let now = 1_000 + i as u64 * 100;
        let a = b.consult(&s, "web", "eu", 2, now, false);
        if i < 3 {
            assert!(a.held && a.decision == Decision::Consult, "{a:?}");
            assert_eq!(a.recheck_after_ms, Some(30_000));
        }
        events.extend(b.intake(&s, "web", now));
    }
    let raised: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Effect::Event {
                event, new: true, ..
            } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(raised.len(), 1, "{events:?}");
    assert_eq!(raised[0].verdict, EventVerdict::SuspectedCoordinatedChange);
    assert_eq!(raised[0].origins.len(), 4);
    // A fifth server asking now gets the event's verdict.
    let a = b.consult(
        &file("w5", "/srv/app.conf", 7),
        "web",
        "eu",
        2,
        2_000,
        false,
    );
    assert_eq!(
        (a.decision, a.rule.as_str()),
        (Decision::Violation, "fleet:suspected_coordinated_change")
    );
    // The held servers asking again when their window is over: covered by the event.
    let a = b.consult(
        &file("w1", "/srv/app.conf", 7),
        "web",
        "eu",
        2,
        31_100,
        true,
    );
    assert_eq!(
        (a.decision, a.rule.as_str(), a.held),
        (
            Decision::Violation,
            "fleet:suspected_coordinated_change",
            false
        )
    );
}

#[test]
fn an_unexplained_change_on_one_server_is_unresolved_after_the_window() {
    let mut b = brain();
    let s = file("w1", "/srv/other.conf", 3);
    assert!(b.consult(&s, "web", "eu", 2, 1_000, false).held);
    assert!(b.intake(&s, "web", 1_000).is_empty());
    b.expire(31_000);
    let a = b.consult(&s, "web", "eu", 2, 31_000, true);
    assert_eq!(
        (a.decision, a.rule.as_str(), a.held),
        (Decision::Violation, UNRESOLVED, false)
    );
    // A master that knows nothing (a successor after failover) says the same.
    let mut fresh = brain();
    let a = fresh.consult(&s, "web", "eu", 3, 31_000, true);
    assert_eq!(
        (a.decision, a.rule.as_str()),
        (Decision::Violation, UNRESOLVED)
    );
    // Approved meanwhile: the recheck is approved.
    let mut learned = brain();
    learned.learned(
        Approval::new(
            Pattern::of(&s, "web"),
            "eu",
            2,
            node::Id::from("m"),
            "operator x".into(),
            5,
        ),
        5,
    );
    let a = learned.consult(&s, "web", "eu", 2, 31_000, true);
    assert_eq!(a.decision, Decision::Approved, "{a:?}");
}

#[test]
fn approved_rollouts_and_package_upgrades_are_not_suspected() {
    let mut b = brain();
    let mut verdicts = Vec::new();
    for w in ["w1", "w2", "w3", "w4"] {
        for e in b.intake(&file(w, "/var/www/index.html", 1), "web", 1_000) {
            if let Effect::Event {
                event, new: true, ..
            } = e
            {
                verdicts.push(event.verdict);
            }
        }
    }
    // A window later (the same servers' changes in the same window would be one event).
    for w in ["w1", "w2", "w3", "w4"] {
        let dpkg = spike(w, Kind::Process, Change::Added, "42:/usr/bin/dpkg", 0);
        b.intake(&dpkg, "web", 100_000);
        for e in b.intake(&file(w, "/usr/lib/libssl.so", 2), "web", 100_100) {
            if let Effect::Event {
                event, new: true, ..
            } = e
            {
                verdicts.push(event.verdict);
            }
        }
    }
    assert_eq!(verdicts, [EventVerdict::Rollout, EventVerdict::Upgrade]);
    // Upgrading servers' own consultations are approved.
    let a = b.consult(
        &file("w1", "/usr/lib/other.so", 3),
        "web",
        "eu",
        2,
        101_000,
        false,
    );
    assert_eq!(
        (a.decision, a.rule.as_str()),
        (Decision::Approved, "fleet:upgrade")
    );
}

/// A package upgrade without its package manager seen: the same 200 files on three web
/// servers. One event lists every subject, and every server's consultation about any of
/// them, asked again at the end of its window, is covered by it.
#[test]
fn a_storm_is_one_event_that_covers_every_subject() {
    let mut b = brain();
    b.set_live(BTreeMap::from([("web".to_string(), 3)]));
    let mut raised = 0;
    let mut last = None;
    let mut t = 1_000;
    for w in ["w1", "w2", "w3"] {
        for i in 0..200 {
            t += 1;
            for e in b.intake(&file(w, &format!("/usr/share/pkg/f{i}"), 5), "web", t) {
                if let Effect::Event { event, new, .. } = e {
                    raised += usize::from(new);
                    last = Some(event);
                }
            }
        }
    }
    assert_eq!(raised, 1);
    let event = last.expect("the event grew");
    assert_eq!((event.subjects_total, event.origins.len()), (200, 3));
    for i in [0, 57, 199] {
        let a = b.consult(
            &file("w1", &format!("/usr/share/pkg/f{i}"), 5),
            "web",
            "eu",
            2,
            31_500,
            true,
        );
        assert_eq!(
            (a.decision, a.rule.as_str()),
            (Decision::Violation, "fleet:suspected_coordinated_change"),
            "subject {i}"
        );
    }
}

/// A storm can overflow a node's watch: the reconciler then reports each file it finds
/// changed as a discrepancy too. The fleet event that holds the file covers that as well.
#[test]
fn a_discrepancy_about_a_file_of_a_fleet_event_is_covered_by_it() {
    let mut b = brain();
    b.set_live(BTreeMap::from([("web".to_string(), 3)]));
    for w in ["w1", "w2"] {
        b.intake(&file(w, "/etc/pkg/a.conf", 4), "web", 1_000);
    }
    let mut discrepancy = spike(
        "w3",
        Kind::Reconcile,
        Change::Modified,
        "/etc/pkg/a.conf",
        0,
    );
    discrepancy.after = None;
    let a = b.consult(&discrepancy, "web", "eu", 2, 20_000, true);
    assert_eq!(
        (a.decision, a.rule.as_str()),
        (Decision::Violation, "fleet:suspected_coordinated_change")
    );
    let other = spike(
        "w3",
        Kind::Reconcile,
        Change::Modified,
        "/etc/pkg/b.conf",
        0,
    );
    let a = b.consult(&other, "web", "eu", 2, 20_000, true);
    assert_eq!(a.rule, UNRESOLVED, "no event holds b.conf");
}
