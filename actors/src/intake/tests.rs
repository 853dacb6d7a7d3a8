use std::time::{Duration, Instant};

use super::*;
use crate::spike::{Change, Kind};

fn spike(origin: &str, seq: u64) -> Spike {
    Spike::bare(origin, seq, Kind::File, Change::Modified, "/etc/hosts")
}

fn id(s: &str) -> node::Id {
    node::Id::from(s)
}

fn drain(i: &mut Intake) -> Vec<Output> {
    std::iter::from_fn(|| i.poll_output()).collect()
}

fn acks(term: u64, marks: &[(&str, u64)]) -> wire::Acks {
    wire::Acks {
        region: "r".into(),
        term,
        marks: marks.iter().map(|(o, m)| (id(o), *m)).collect(),
    }
}

#[test]
fn a_follower_takes_marks_only_from_the_master_of_that_term() {
    let t0 = Instant::now();
    let mut i = Intake::new("r", id("me"), Duration::from_secs(1));
    i.set_master(t0, Some((id("boss"), 4)), false);
    // A forged author, a stale term, another region: refused, nothing moves.
    assert!(!i.handle_acks(&id("rogue"), acks(4, &[("me", 10)])));
    assert!(!i.handle_acks(&id("boss"), acks(3, &[("me", 10)])));
    let mut other = acks(4, &[("me", 10)]);
    other.region = "elsewhere".into();
    assert!(!i.handle_acks(&id("boss"), other));
    assert!(drain(&mut i).is_empty());
    assert_eq!(i.refused_acks(), 3);
    // The master of the term: this node's own mark goes to its encoder.
    assert!(i.handle_acks(&id("boss"), acks(4, &[("me", 10), ("x", 3)])));
    assert_eq!(
        drain(&mut i),
        [Output::OwnMark {
            mark: 10,
            master: Master {
                peer: id("boss"),
                term: 4
            }
        }]
    );
    assert_eq!(
        i.stats()[&id("x")].mark,
        3,
        "the master's marks are the ledger's floor"
    );
}

#[test]
fn only_the_master_applies_replays_and_hands_on_what_it_applies() {
    let t0 = Instant::now();
    let mut i = Intake::new("r", id("me"), Duration::from_secs(1));
    assert!(i.handle_replay(&id("o"), 1, vec![spike("o", 1)]).is_err());
    i.set_master(t0, Some((id("me"), 2)), true);
    assert!(
        i.handle_replay(&id("o"), 1, vec![spike("p", 1)]).is_err(),
        "spikes of another origin are refused"
    );
    // The origin's journal starts at 5: 1..=4 will never come.
    let r = i.handle_replay(&id("o"), 5, vec![spike("o", 5), spike("o", 6)]);
    assert_eq!(r, Ok((2, 6)));
    let applied: Vec<u64> = drain(&mut i)
        .into_iter()
        .flat_map(|o| match o {
            Output::Applied(s) => s.into_iter().map(|s| s.seq).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(applied, [5, 6]);
    // Gossip of the same spikes again: applied once.
    i.handle_spikes(vec![spike("o", 6), spike("o", 7)]);
    assert_eq!(i.applied(), 3);
}

#[test]
fn the_master_acknowledges_at_once_then_every_interval() {
    let t0 = Instant::now();
    let mut i = Intake::new("r", id("me"), Duration::from_secs(1));
    i.handle_spikes(vec![spike("me", 1), spike("a", 1), spike("a", 2)]);
    assert_eq!(i.poll_timeout(), None, "a follower never acknowledges");
    i.set_master(t0, Some((id("me"), 7)), true);
    assert_eq!(i.poll_timeout(), Some(t0));
    i.handle_timeout(t0);
    let out = drain(&mut i);
    assert!(out.contains(&Output::OwnMark {
        mark: 1,
        master: Master {
            peer: id("me"),
            term: 7
        }
    }));
    let Some(Output::Gossip(g)) = out.iter().find(|o| matches!(o, Output::Gossip(_))) else {
        panic!("marks gossiped: {out:?}");
    };
    assert_eq!(g.term, 7);
    assert!(g.marks.contains(&(id("a"), 2)));
    i.handle_timeout(t0 + Duration::from_millis(500));
    assert!(drain(&mut i).is_empty(), "not before the interval");
    i.handle_timeout(t0 + Duration::from_secs(1));
    assert!(!drain(&mut i).is_empty());
    // Deposed: silent.
    i.set_master(t0, Some((id("other"), 8)), false);
    assert_eq!(i.poll_timeout(), None);
}

#[test]
fn marks_of_many_origins_go_out_in_bounded_messages() {
    let t0 = Instant::now();
    let mut i = Intake::new("r", id("me"), Duration::from_secs(1));
    let spikes: Vec<Spike> = (0..(ACKS_PER_MESSAGE * 2 + 1))
        .map(|n| spike(&format!("o{n}"), 1))
        .collect();
    i.handle_spikes(spikes);
    i.set_master(t0, Some((id("me"), 1)), true);
    i.handle_timeout(t0);
    let sizes: Vec<usize> = drain(&mut i)
        .into_iter()
        .filter_map(|o| match o {
            Output::Gossip(g) => Some(g.marks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [ACKS_PER_MESSAGE, ACKS_PER_MESSAGE, 1]);
}

#[test]
fn a_new_master_applies_what_no_master_acknowledged() {
    let t0 = Instant::now();
    let mut i = Intake::new("r", id("me"), Duration::from_secs(1));
    // Published while the region had no master: kept, not applied.
    i.handle_spikes(vec![spike("a", 1), spike("a", 2), spike("b", 1)]);
    assert!(drain(&mut i).is_empty());
    assert_eq!(i.pending(), (3, 0));
    // A master acknowledges a's first spike: the rest is still kept.
    i.set_master(t0, Some((id("boss"), 1)), false);
    assert!(i.handle_acks(&id("boss"), acks(1, &[("a", 1)])));
    i.handle_spikes(vec![spike("a", 1), spike("a", 3)]);
    assert_eq!(
        i.pending(),
        (3, 0),
        "a1 acknowledged: neither kept nor taken again"
    );
    // The master dies before acknowledging the rest; this node takes over and applies
    // every spike it kept, in order per origin, and nothing twice.
    i.set_master(t0, Some((id("me"), 2)), true);
    let mut applied: Vec<(String, u64)> = drain(&mut i)
        .into_iter()
        .flat_map(|o| match o {
            Output::Applied(s) => s
                .into_iter()
                .map(|s| (s.origin.to_string(), s.seq))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    applied.sort();
    assert_eq!(applied, [("a".into(), 2), ("a".into(), 3), ("b".into(), 1)]);
    assert_eq!(i.pending(), (0, 0));
    i.handle_spikes(vec![spike("a", 2), spike("b", 1)]);
    assert!(
        drain(&mut i)
            .iter()
            .all(|o| !matches!(o, Output::Applied(_))),
        "applied once"
    );
}

#[test]
fn a_follower_keeps_a_bounded_number_per_origin() {
    let mut i = Intake::new("r", id("me"), Duration::from_secs(1));
    let n = PENDING as u64 + 10;
    i.handle_spikes((1..=n).map(|s| spike("a", s)).collect());
    assert_eq!(i.pending(), (PENDING as u64, 10));
}
