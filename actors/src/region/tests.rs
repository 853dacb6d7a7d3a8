use protobuf::Message as _;
use rand::Rng;
use rand::seq::SliceRandom;

use super::sim::Sim;
use super::*;

const FIVE: [u64; 5] = [1, 2, 3, 4, 5];

/// Ticks within which an election among connected members must finish (several
/// election timeouts, to allow for split votes).
const ELECTION_BOUND: u64 = 200;

fn elected(seed: u64) -> (Sim, u64, u64) {
    let mut sim = Sim::new(seed, &FIVE, &FIVE);
    assert!(
        sim.run_until(ELECTION_BOUND, |s| s.agreed(&FIVE).is_some()),
        "seed {seed}: no leader"
    );
    let (leader, term) = sim.agreed(&FIVE).expect("agreed");
    (sim, leader, term)
}

#[test]
fn raft_ids_are_stable_and_nonzero() {
    let a = raft_id(&node::Id::from("12D3KooWA"));
    assert_eq!(a, raft_id(&node::Id::from("12D3KooWA")));
    assert_ne!(a, raft_id(&node::Id::from("12D3KooWB")));
    assert_ne!(a, 0);
}

#[test]
fn region_five_members_elect_one_leader() {
    for seed in 0..20 {
        let (sim, leader, term) = elected(seed);
        let leaders: Vec<u64> = FIVE
            .iter()
            .copied()
            .filter(|&id| sim.status(id).is_some_and(|s| s.role == Role::Leader))
            .collect();
        assert_eq!(leaders, vec![leader], "seed {seed}");
        for id in FIVE {
            let s = sim.status(id).expect("running");
            assert_eq!((s.leader, s.term), (Some(leader), term), "seed {seed}");
            assert!(!s.autonomous());
            assert_eq!(s.voters, FIVE.to_vec());
        }
    }
}

#[test]
fn region_commands_commit_everywhere_in_order() {
    let (mut sim, leader, _) = elected(7);
    let follower = FIVE.into_iter().find(|&id| id != leader).expect("others");
    assert!(matches!(
        sim.node(follower).propose(&Command::Assign {
            item: "x".into(),
            owner: node::Id::from("a")
        }),
        Err(Error::NotLeader {
            leader: Some(l)
        }) if l == leader
    ));
    let cmds = [
        Command::Alive {
            peer: node::Id::from("a"),
            incarnation: 1,
        },
        Command::Assign {
            item: "disk-watch".into(),
            owner: node::Id::from("a"),
        },
        Command::DeclareDead {
            peer: node::Id::from("a"),
            incarnation: 1,
        },
        Command::Alive {
            peer: node::Id::from("a"),
            incarnation: 1,
        },
        Command::Alive {
            peer: node::Id::from("a"),
            incarnation: 2,
        },
    ];
    for c in &cmds {
        sim.node(leader).propose(c).expect("leader accepts");
    }
    sim.run(20);
    for id in FIVE {
        let got: Vec<Command> = sim.applied[&id].iter().map(|c| c.command.clone()).collect();
        assert_eq!(got, cmds.to_vec());
        let st = sim.node(id).state().clone();
        // The stale revival of incarnation 1 was ignored; incarnation 2 came back.
        assert_eq!(st.alive.get(&node::Id::from("a")), Some(&2));
        assert!(st.dead.is_empty());
        assert_eq!(st.assignments.get("disk-watch"), Some(&node::Id::from("a")));
    }
}

#[test]
fn region_leader_crash_elects_a_new_leader_and_the_old_one_follows() {
    for seed in 0..10 {
        let (mut sim, old, term) = elected(seed);
        sim.propose_at(old).expect("leader accepts");
        sim.run(10);
        sim.crash(old);
        let rest: Vec<u64> = FIVE.into_iter().filter(|&id| id != old).collect();
        assert!(
            sim.run_until(ELECTION_BOUND, |s| s
                .agreed(&rest)
                .is_some_and(|(l, t)| l != old && t > term)),
            "seed {seed}: no new leader among the survivors"
        );
        let (new, new_term) = sim.agreed(&rest).expect("agreed");
        sim.restart(old);
        assert!(
            sim.run_until(ELECTION_BOUND, |s| s.agreed(&FIVE) == Some((new, new_term))),
            "seed {seed}: restarted member does not follow {new}"
        );
        assert!(sim.run_until(ELECTION_BOUND, Sim::converged), "seed {seed}");
        assert_eq!(sim.applied[&old].len(), 1, "seed {seed}: replayed its log");
    }
}

#[test]
fn region_minority_partition_goes_autonomous_without_disrupting_the_majority() {
    for seed in 0..10 {
        let (mut sim, old, old_term) = elected(seed);
        let other = FIVE.into_iter().find(|&id| id != old).expect("others");
        let minority = [old, other];
        let majority: Vec<u64> = FIVE
            .into_iter()
            .filter(|id| !minority.contains(id))
            .collect();
        sim.partition(&[&minority, &majority]);

        // Over a long partition: the majority elects, the minority's old leader steps
        // down (check-quorum), and nobody on the minority side ever leads again or
        // moves its term (pre-vote).
        let mut majority_view = None;
        for tick in 0..300 {
            sim.tick();
            for id in minority {
                let s = sim.status(id).expect("running");
                assert_eq!(s.term, old_term, "seed {seed}: minority bumped its term");
                if tick >= 2 * sim.config.election_ticks {
                    assert_ne!(s.role, Role::Leader, "seed {seed}: minority leader");
                }
            }
            majority_view = sim.agreed(&majority);
        }
        let (new, new_term) = majority_view.expect("majority elected a leader");
        assert!(
            majority.contains(&new) && new_term > old_term,
            "seed {seed}"
        );
        for id in minority {
            let s = sim.status(id).expect("running");
            assert!(
                s.autonomous(),
                "seed {seed}: {id} still follows {:?}",
                s.leader
            );
        }
        // Commands still commit on the majority side.
        assert!(sim.propose_at(new).is_some());
        sim.run(20);
        assert!(majority.iter().all(|id| sim.applied[id].len() == 1));
        assert!(minority.iter().all(|id| sim.applied[id].is_empty()));

        sim.heal();
        assert!(
            sim.run_until(ELECTION_BOUND, Sim::converged),
            "seed {seed}: no convergence after healing"
        );
        // The returning minority did not depose the majority's leader.
        assert_eq!(sim.agreed(&FIVE), Some((new, new_term)), "seed {seed}");
    }
}

/// One random schedule: partitions, crashes, restarts, loss and delays for a while,
/// then everything heals and every member restarts; safety is checked throughout by
/// the simulator, liveness and agreement at the end.
fn chaos(seed: u64) {
    let (_, sent) = chaos_with(Config {
        seed,
        ..Config::default()
    });
    assert_eq!(sent, 0, "seed {seed}: a snapshot without compaction");
}

/// Chaos with a log compacted every few entries: members cut off or down catch up by
/// snapshots, restarts start from snapshots, and every invariant still holds.
fn chaos_compacting(seed: u64) -> (u64, u64) {
    chaos_with(Config {
        seed,
        snapshot_entries: 6,
        snapshot_tail: 2,
        ..Config::default()
    })
}

/// Runs one chaos schedule; answers the snapshots installed (restarts included) and sent.
fn chaos_with(config: Config) -> (u64, u64) {
    const CHAOS_TICKS: u64 = 400;
    const SETTLE_BOUND: u64 = 400;
    let seed = config.seed;
    let mut sim = Sim::with_config(&FIVE, &FIVE, config);
    let mut ids = FIVE.to_vec();
    for _ in 0..CHAOS_TICKS {
        match sim.rng.random_range(0..1000) {
            0..20 => {
                ids.shuffle(&mut sim.rng);
                let cut = sim.rng.random_range(1..=2);
                if sim.rng.random_bool(0.3) {
                    sim.partition(&[&ids[..cut], &ids[cut..cut + 2], &ids[cut + 2..]]);
                } else {
                    sim.partition(&[&ids[..cut], &ids[cut..]]);
                }
            }
            20..35 => sim.heal(),
            35..55 => {
                let id = FIVE[sim.rng.random_range(0..5)];
                if sim.alive(id) {
                    sim.crash(id);
                }
            }
            55..85 => {
                let id = FIVE[sim.rng.random_range(0..5)];
                if !sim.alive(id) {
                    sim.restart(id);
                }
            }
            85..95 => sim.loss = [0.0, 0.05, 0.2, 0.5][sim.rng.random_range(0..4)],
            95..105 => sim.max_delay = sim.rng.random_range(1..=6),
            _ => {}
        }
        if sim.rng.random_bool(0.1)
            && let Some(leader) = sim.any_leader()
        {
            sim.propose_at(leader);
        }
        sim.tick();
        sim.assert_prefixes();
    }

    sim.heal();
    sim.loss = 0.0;
    sim.max_delay = 2;
    for id in FIVE {
        sim.crash(id);
    }
    for id in FIVE {
        sim.restart(id);
    }
    sim.assert_prefixes();
    assert!(
        sim.run_until(SETTLE_BOUND, Sim::converged),
        "seed {seed}: no convergence after the final heal"
    );
    let (leader, _) = sim.agreed(&FIVE).expect("converged");
    let last = sim.propose_at(leader).expect("leader accepts");
    assert!(
        sim.run_until(SETTLE_BOUND, |s| s.converged()
            && s.applied[&leader].last().is_some_and(|c| c.command == last)),
        "seed {seed}: last command not applied everywhere"
    );
    let state = sim.node(leader).state().clone();
    for id in FIVE {
        assert_eq!(*sim.node(id).state(), state, "seed {seed}");
    }
    assert_eq!(sim.refused, 0, "seed {seed}: honest messages refused");
    (sim.installs.values().sum(), sim.snapshots_sent)
}

// 1,000 schedules, split so the test harness can run them on several threads.
#[test]
fn region_chaos_schedules_0() {
    (0..250).for_each(chaos);
}

#[test]
fn region_chaos_schedules_1() {
    (250..500).for_each(chaos);
}

#[test]
fn region_chaos_schedules_2() {
    (500..750).for_each(chaos);
}

#[test]
fn region_chaos_schedules_3() {
    (750..1000).for_each(chaos);
}

#[test]
fn region_chaos_compacting_250_schedules() {
    let (mut installed, mut sent) = (0, 0);
    for seed in 0..250 {
        let (i, s) = chaos_compacting(seed);
        installed += i;
        sent += s;
    }
    // The schedules did exercise snapshots: restarts from them, and members caught up
    // by them.
    assert!(
        installed > 250 && sent > 50,
        "installed {installed}, sent {sent}"
    );
}

#[test]
fn region_refuses_malformed_snapshots_with_a_reason() {
    use raft::eraftpb::MessageType::MsgSnapshot;
    let (mut sim, leader) = compacting(50, 10, 3);
    propose_many(&mut sim, leader, 5);
    sim.run(10);
    let id = FIVE.into_iter().find(|&id| id != leader).expect("others");
    let before = sim.status(id);
    let image = sim.region(id).expect("running").image();
    let term = before.as_ref().expect("running").term;
    let encoded = |index: u64| {
        let mut i = image.clone();
        i.state.applied = index;
        rmp_serde::to_vec(&i).expect("encodes")
    };
    let snap = |index: u64, sterm: u64, voters: &[u64], data: Vec<u8>| {
        let mut m = Message::default();
        m.set_msg_type(MsgSnapshot);
        m.to = id;
        m.from = leader;
        m.term = term;
        let mut s = RaftSnapshot {
            data: data.into(),
            ..RaftSnapshot::default()
        };
        let meta = s.mut_metadata();
        meta.index = index;
        meta.term = sterm;
        meta.mut_conf_state().voters = voters.to_vec();
        m.set_snapshot(s);
        m
    };
    let far = 1_000;
    let mut cases = vec![
        (snap(0, 0, &FIVE, vec![]), "without a position"),
        (snap(far, 0, &FIVE, encoded(far)), "without a position"),
        (snap(far, term + 1, &FIVE, encoded(far)), "term after"),
        (snap(far, term, &[], encoded(far)), "no voters"),
        (snap(far, term, &[1, 1, 2], encoded(far)), "repeats"),
        (snap(far, term, &[0, 1], encoded(far)), "repeats"),
        (snap(far, term, &FIVE, b"junk".to_vec()), "does not decode"),
        (
            snap(far, term, &FIVE, vec![0; MAX_SNAPSHOT_BYTES + 1]),
            "size bound",
        ),
        (snap(far, term, &FIVE, encoded(far - 1)), "not the state"),
    ];
    let mut m = snap(far, term, &FIVE, encoded(far));
    m.mut_snapshot().mut_metadata().mut_conf_state().learners = vec![2];
    cases.push((m, "both voter and learner"));
    let mut m = snap(far, term, &FIVE, encoded(far));
    m.mut_snapshot()
        .mut_metadata()
        .mut_conf_state()
        .learners_next = vec![9];
    cases.push((m, "demotes"));
    let mut m = snap(far, term, &FIVE, encoded(far));
    m.mut_snapshot().mut_metadata().mut_conf_state().auto_leave = true;
    cases.push((m, "joint"));
    let mut m = snap(far, term, &FIVE, encoded(far));
    m.entries.push(Entry::default());
    cases.push((m, "entries outside"));
    let mut m = snap(far, term, &FIVE, encoded(far));
    m.request_snapshot = 3;
    cases.push((m, "requests"));
    let mut m = base_append(id, leader, term);
    m.set_snapshot(snap(far, term, &FIVE, encoded(far)).take_snapshot());
    cases.push((m, "outside a snapshot message"));
    for (m, why) in cases {
        let bytes = m.write_to_bytes().expect("encodes");
        match sim.node(id).step(&bytes) {
            Err(Error::Refused { reason, .. }) => {
                assert!(reason.contains(why), "{reason:?} instead of {why:?}");
            }
            other => panic!("{why}: {other:?}"),
        }
        sim.poll_member(id);
        assert_eq!(
            sim.status(id),
            before,
            "{why}: a refused snapshot changes nothing"
        );
    }
    // Random data under a valid header never panics either.
    for n in 0..64u8 {
        let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
        let bytes = snap(far, term, &FIVE, data)
            .write_to_bytes()
            .expect("encodes");
        assert!(sim.node(id).step(&bytes).is_err());
    }
    // A well-formed snapshot behind this member's log is accepted and ignored.
    let applied = sim.region(id).expect("running").state().applied;
    let stale = snap(1, 1, &FIVE, encoded(1))
        .write_to_bytes()
        .expect("encodes");
    sim.node(id).step(&stale).expect("well-formed");
    sim.poll_member(id);
    assert_eq!(sim.region(id).expect("running").state().applied, applied);
    assert_eq!(sim.installs.get(&id), None);
}

fn base_append(to: u64, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.to = to;
    m.from = from;
    m.term = term;
    m
}

/// A region whose log is compacted every `entries` applied entries, keeping `tail`.
fn compacting(seed: u64, entries: u64, tail: u64) -> (Sim, u64) {
    let config = Config {
        seed,
        snapshot_entries: entries,
        snapshot_tail: tail,
        ..Config::default()
    };
    let mut sim = Sim::with_config(&FIVE, &FIVE, config);
    assert!(
        sim.run_until(ELECTION_BOUND, |s| s.agreed(&FIVE).is_some()),
        "seed {seed}: no leader"
    );
    let (leader, _) = sim.agreed(&FIVE).expect("agreed");
    (sim, leader)
}

/// Proposes `n` commands at `leader`, a few per tick.
fn propose_many(sim: &mut Sim, leader: u64, n: usize) {
    for i in 0..n {
        sim.propose_at(leader).expect("leader accepts");
        if i % 4 == 3 {
            sim.tick();
        }
    }
}

#[test]
fn region_compacts_its_log_and_keeps_it_bounded() {
    let (mut sim, leader) = compacting(21, 20, 5);
    let mut longest = 0;
    for _ in 0..10 {
        propose_many(&mut sim, leader, 25);
        sim.run(5);
        for id in FIVE {
            longest = longest.max(sim.region(id).expect("running").log_len());
        }
    }
    assert!(sim.run_until(ELECTION_BOUND, Sim::converged));
    let commit = sim.status(leader).expect("running").commit;
    assert!(commit > 250, "250 commands committed (commit {commit})");
    for id in FIVE {
        let r = sim.region(id).expect("running");
        // Compacted at least every 20 applied entries, keeping 5: never more than the
        // threshold plus what one poll appends (a few commands per tick here).
        assert!(
            r.log_len() <= 20 + 8,
            "member {id} keeps {} entries",
            r.log_len()
        );
        assert!(
            r.snapshot_index() + 20 >= commit,
            "member {id}: last snapshot at {} of {commit}",
            r.snapshot_index()
        );
        let disk = sim.disk(id);
        let snap = disk.snapshot.as_ref().expect("a snapshot on disk");
        assert_eq!(snap.index, r.snapshot_index());
        assert!(disk.entries.iter().all(|e| e.index > snap.index));
        assert!(
            disk.entries.len() <= 20,
            "member {id}: {} entries on disk",
            disk.entries.len()
        );
        assert_eq!(Some(&snap.image.state), sim.state_at(snap.index));
    }
    assert!(longest <= 20 + 8, "log grew to {longest} entries");
    assert_eq!(sim.refused, 0);
    // Nobody fell behind the tail: no snapshot had to be sent.
    assert_eq!(sim.snapshots_sent, 0);
}

#[test]
fn region_member_restarted_from_snapshot_and_tail_has_the_same_state() {
    let (mut sim, leader) = compacting(22, 10, 3);
    propose_many(&mut sim, leader, 47);
    assert!(sim.run_until(ELECTION_BOUND, Sim::converged));
    let follower = FIVE.into_iter().find(|&id| id != leader).expect("others");
    let before = sim.region(follower).expect("running").image();
    let disk = sim.disk(follower);
    let snap = disk.snapshot.clone().expect("a snapshot on disk");
    assert!(
        snap.index > 0 && !disk.entries.is_empty(),
        "snapshot and a tail"
    );
    sim.crash(follower);
    sim.restart(follower);
    // Restarted: the snapshot arrived whole, the tail was applied after it.
    assert_eq!(sim.installs.get(&follower), Some(&1));
    assert_eq!(sim.base[&follower], snap.index);
    assert!(sim.applied[&follower].iter().all(|c| c.index > snap.index));
    assert!(
        !sim.applied[&follower].is_empty(),
        "the tail's commands are applied again"
    );
    assert_eq!(sim.region(follower).expect("running").image(), before);
    // The whole region restarts from its disks, and goes on.
    for id in FIVE {
        sim.crash(id);
    }
    for id in FIVE {
        sim.restart(id);
    }
    assert!(sim.run_until(ELECTION_BOUND, Sim::converged));
    let (leader, _) = sim.agreed(&FIVE).expect("agreed");
    assert_eq!(
        sim.region(leader).expect("running").state().applied,
        sim.status(leader).expect("running").commit
    );
    propose_many(&mut sim, leader, 12);
    assert!(sim.run_until(ELECTION_BOUND, Sim::converged));
    sim.assert_prefixes();
    assert_eq!(sim.refused, 0);
}

#[test]
fn region_member_cut_off_past_the_compaction_catches_up_by_snapshot() {
    for seed in 0..10 {
        let (mut sim, leader) = compacting(30 + seed, 10, 3);
        propose_many(&mut sim, leader, 5);
        assert!(sim.run_until(ELECTION_BOUND, Sim::converged));
        let lagging = FIVE.into_iter().find(|&id| id != leader).expect("others");
        let rest: Vec<u64> = FIVE.into_iter().filter(|&id| id != lagging).collect();
        sim.partition(&[&rest, &[lagging]]);
        propose_many(&mut sim, leader, 40);
        sim.run(10);
        let compacted = sim.region(leader).expect("running").snapshot_index();
        let behind = sim.status(lagging).expect("running").commit;
        assert!(
            compacted > behind + 3,
            "seed {seed}: the log was compacted past the cut-off member ({compacted} vs {behind})"
        );
        sim.heal();
        assert!(
            sim.run_until(ELECTION_BOUND, Sim::converged),
            "seed {seed}: the cut-off member did not catch up"
        );
        assert!(
            sim.installs.get(&lagging).copied().unwrap_or(0) >= 1,
            "seed {seed}: caught up without a snapshot"
        );
        assert!(sim.snapshots_sent >= 1);
        assert_eq!(
            sim.region(lagging).expect("running").image(),
            sim.region(leader).expect("running").image(),
            "seed {seed}"
        );
        // Its disk holds the snapshot it installed and restores to the same state.
        let disk = sim.disk(lagging);
        assert!(disk.snapshot.is_some(), "seed {seed}");
        let before = sim.region(lagging).expect("running").image();
        sim.crash(lagging);
        sim.restart(lagging);
        assert_eq!(
            sim.region(lagging).expect("running").image(),
            before,
            "seed {seed}"
        );
        assert_eq!(sim.refused, 0, "seed {seed}");
    }
}

#[test]
fn region_snapshot_lost_on_the_way_is_sent_again() {
    let (mut sim, leader) = compacting(40, 10, 3);
    let lagging = FIVE.into_iter().find(|&id| id != leader).expect("others");
    let rest: Vec<u64> = FIVE.into_iter().filter(|&id| id != lagging).collect();
    sim.partition(&[&rest, &[lagging]]);
    propose_many(&mut sim, leader, 40);
    sim.run(10);
    // Healed, but every snapshot is lost: the master sends one and waits for an answer
    // that cannot come.
    sim.drop_snapshots = true;
    sim.heal();
    sim.run(30);
    let first = sim.snapshots_sent;
    assert!(first >= 1, "a snapshot was sent");
    assert!(!sim.converged());
    sim.drop_snapshots = false;
    // Without a report of the failure, Raft would never send to that member again.
    assert!(
        sim.run_until(ELECTION_BOUND, Sim::converged),
        "the member never got a snapshot after the first was lost"
    );
    assert!(sim.snapshots_sent > first);
    assert_eq!(sim.installs.get(&lagging), Some(&1));
}

#[test]
fn region_state_of_a_snapshot_round_trips_through_its_image() {
    let (mut sim, leader) = compacting(41, 10, 3);
    let approval = crate::fleet::Approval::new(
        crate::fleet::Pattern {
            roles: ["web".to_string()].into(),
            kind: crate::spike::Kind::User,
            change: crate::spike::Change::Added,
            subject: "deploy".into(),
            after: None,
        },
        "r",
        1,
        node::Id::from("peer-a"),
        "operator test".into(),
        5,
    );
    sim.node(leader)
        .propose(&Command::Approve(Box::new(approval.clone())))
        .expect("leader accepts");
    sim.node(leader)
        .propose(&Command::Name {
            name: "web-1".into(),
            peer: node::Id::from("peer-a"),
        })
        .expect("leader accepts");
    propose_many(&mut sim, leader, 30);
    assert!(sim.run_until(ELECTION_BOUND, Sim::converged));
    for id in FIVE {
        let disk = sim.disk(id);
        let image = &disk.snapshot.as_ref().expect("a snapshot").image;
        assert_eq!(image.approvals, vec![approval.clone()], "member {id}");
        assert!(image.state.approvals.contains(&approval.id()));
        assert_eq!(
            image.state.names.get("web-1"),
            Some(&node::Id::from("peer-a"))
        );
    }
}

#[test]
fn region_replaces_a_dead_voter_with_a_non_voting_member() {
    let all = [1, 2, 3, 4];
    let mut sim = Sim::new(11, &all, &[1, 2, 3]);
    assert!(sim.run_until(ELECTION_BOUND, |s| s.agreed(&[1, 2, 3]).is_some()));
    assert_eq!(sim.status(4).expect("running").role, Role::Follower);

    sim.crash(3);
    assert!(sim.run_until(ELECTION_BOUND, |s| s.agreed(&[1, 2]).is_some()));
    let (leader, _) = sim.agreed(&[1, 2]).expect("agreed");
    // A leader accepts membership changes once the entry that opened its term is applied.
    sim.run(10);
    assert!(matches!(
        sim.change_at(leader, |r| r.add_voter(2)),
        Err(Error::AlreadyVoter(2))
    ));
    assert!(matches!(
        sim.change_at(leader, |r| r.remove_voter(leader)),
        Err(Error::RemoveSelf)
    ));
    sim.change_at(leader, |r| r.remove_voter(3))
        .expect("remove 3");
    assert!(matches!(
        sim.change_at(leader, |r| r.add_voter(4)),
        Err(Error::ChangePending)
    ));
    assert!(sim.run_until(50, |s| {
        s.status(leader).is_some_and(|st| st.voters == [1, 2])
    }));
    sim.change_at(leader, |r| r.add_voter(4)).expect("add 4");
    assert!(sim.run_until(50, |s| {
        [1, 2, 4]
            .iter()
            .all(|&id| s.status(id).is_some_and(|st| st.voters == [1, 2, 4]))
    }));
    assert!(sim.propose_at(leader).is_some());
    sim.run(20);
    assert_eq!(sim.applied[&4].len(), 1, "the new voter has the log");

    // Crash the current leader: the other original voter and 4 still form a quorum.
    sim.crash(leader);
    let rest: Vec<u64> = [1, 2, 4].into_iter().filter(|&id| id != leader).collect();
    assert!(
        sim.run_until(ELECTION_BOUND, |s| s.agreed(&rest).is_some()),
        "no leader among {rest:?}"
    );
    let (new, _) = sim.agreed(&rest).expect("agreed");
    assert!(sim.propose_at(new).is_some());
    sim.run(20);
    assert!(rest.iter().all(|id| sim.applied[id].len() == 2));

    // The removed member's membership survives a restart of the survivors.
    for id in rest.clone() {
        sim.crash(id);
        sim.restart(id);
    }
    assert!(sim.run_until(ELECTION_BOUND, |s| s.agreed(&rest).is_some()));
    for id in rest {
        assert_eq!(sim.status(id).expect("running").voters, [1, 2, 4]);
    }
}

#[test]
fn region_runs_are_reproducible() {
    let run = || {
        let mut sim = Sim::new(99, &FIVE, &FIVE);
        sim.loss = 0.1;
        sim.max_delay = 4;
        sim.run(60);
        sim.partition(&[&[1, 2], &[3, 4, 5]]);
        for _ in 0..40 {
            if let Some(l) = sim.any_leader() {
                sim.propose_at(l);
            }
            sim.tick();
        }
        sim.crash(4);
        sim.heal();
        sim.run(80);
        let statuses: Vec<Option<Status>> = FIVE.iter().map(|&id| sim.status(id)).collect();
        (sim.leaders.clone(), sim.applied.clone(), statuses)
    };
    assert_eq!(run(), run());
}

#[test]
fn region_restore_refuses_inconsistent_disks() {
    let config = Config::default();
    assert!(matches!(
        Region::restore(1, Durable::default(), &config),
        Err(Error::NoVoters)
    ));
    let (mut sim, leader, _) = elected(2);
    sim.propose_at(leader).expect("leader accepts");
    sim.run(10);
    let good = sim.disk(leader);
    let mut gap = good.clone();
    gap.entries.remove(0);
    assert!(matches!(
        Region::restore(leader, gap, &config),
        Err(Error::Durable(_))
    ));
    let mut ahead = good.clone();
    ahead.vote.commit = ahead.last_index() + 1;
    assert!(matches!(
        Region::restore(leader, ahead, &config),
        Err(Error::Durable(_))
    ));
    let restored = Region::restore(leader, good, &config).expect("restores");
    assert_eq!(restored.status().role, Role::Follower);
    assert!(matches!(Region::new(1, &[], &config), Err(Error::NoVoters)));
    assert!(matches!(
        Region::new(
            1,
            &[1],
            &Config {
                election_ticks: 2,
                heartbeat_ticks: 2,
                ..Config::default()
            }
        ),
        Err(Error::Config(_))
    ));
}

#[test]
fn region_learner_then_promotion() {
    let mut sim = Sim::new(3, &[1, 2, 3, 4], &[1, 2, 3]);
    assert!(sim.run_until(ELECTION_BOUND, |s| s.agreed(&[1, 2, 3]).is_some()));
    let (leader, _) = sim.agreed(&[1, 2, 3]).expect("agreed");
    sim.change_at(leader, |r| r.add_learner(4))
        .expect("learner");
    assert!(sim.run_until(50, |s| s.status(4).is_some_and(|st| st.learners == [4])));
    sim.change_at(leader, |r| r.add_voter(4)).expect("promote");
    assert!(
        sim.run_until(50, |s| s
            .status(4)
            .is_some_and(|st| st.voters == [1, 2, 3, 4] && st.learners.is_empty()))
    );
}

fn follower_with_log() -> (Sim, u64) {
    let (mut sim, leader, _) = elected(5);
    sim.propose_at(leader).expect("leader accepts");
    sim.run(10);
    let follower = FIVE.into_iter().find(|&id| id != leader).expect("others");
    (sim, follower)
}

#[test]
fn region_step_refuses_junk_without_panicking() {
    let (mut sim, id) = follower_with_log();
    let before = sim.status(id);
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff",
        b"\x08\x03\x10\x01",
        b"not a raft message at all",
        &[0x0a; 64],
    ] {
        assert!(sim.node(id).step(junk).is_err(), "{junk:?}");
    }

    // Well-formed messages no member sends.
    let me = id;
    let base = |t: raft::eraftpb::MessageType| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.to = me;
        m.from = 9;
        m.term = 100;
        m
    };
    use raft::eraftpb::MessageType::*;
    let mut bad = vec![
        base(MsgHup),
        base(MsgPropose),
        base(MsgSnapshot),
        base(MsgTimeoutNow),
    ];
    let mut m = base(MsgHeartbeat);
    m.commit = 1_000;
    bad.push(m);
    let mut m = base(MsgAppend);
    m.index = u64::MAX;
    m.log_term = 0;
    m.commit = 1_000;
    bad.push(m);
    let mut m = base(MsgAppend);
    m.index = 1;
    m.log_term = 1;
    m.entries.push(Entry {
        index: 5,
        term: 1,
        ..Entry::default()
    });
    bad.push(m);
    let mut m = base(MsgAppend);
    m.to = me + 1;
    bad.push(m);
    for m in bad {
        let bytes = m.write_to_bytes().expect("encodes");
        assert!(
            matches!(sim.node(id).step(&bytes), Err(Error::Refused { .. })),
            "{m:?}"
        );
    }
    assert_eq!(sim.status(id), before, "refused messages change nothing");
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    fn message() -> impl Strategy<Value = Message> {
        let head = (0i32..19, 1u64..8, 1u64..8, 0u64..6, 0u64..6, 0u64..8);
        let tail = (0u64..8, any::<bool>(), 0u64..8, 0usize..4, 0u64..3);
        (head, tail).prop_map(
            |((ty, to, from, term, log_term, index), (commit, reject, hint, n, eterm))| {
                let mut m = Message::default();
                m.set_msg_type(
                    protobuf::ProtobufEnum::from_i32(ty)
                        .unwrap_or(raft::eraftpb::MessageType::MsgHup),
                );
                m.to = to;
                m.from = from;
                m.term = term;
                m.log_term = log_term;
                m.index = index;
                m.commit = commit;
                m.reject = reject;
                m.reject_hint = hint;
                for i in 0..n as u64 {
                    m.entries.push(Entry {
                        index: index + 1 + i,
                        term: log_term + eterm,
                        ..Entry::default()
                    });
                }
                m
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Arbitrary bytes never panic a member.
        #[test]
        fn region_step_survives_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let (mut sim, id) = follower_with_log();
            let _ = sim.node(id).step(&bytes);
            let _ = sim.node(id).poll();
        }

        /// Forged but well-formed messages, alone or in a burst, never panic a member,
        /// whether it leads or follows.
        #[test]
        fn region_step_survives_forged_messages(msgs in proptest::collection::vec(message(), 1..12)) {
            let (mut sim, leader, _) = elected(5);
            sim.propose_at(leader).expect("leader accepts");
            sim.run(10);
            for id in [leader, if leader == 1 { 2 } else { 1 }] {
                for m in &msgs {
                    let mut m = m.clone();
                    if m.to % 4 != 0 {
                        m.to = id;
                    }
                    let bytes = m.write_to_bytes().expect("encodes");
                    let _ = sim.node(id).step(&bytes);
                    let _ = sim.node(id).poll();
                    sim.node(id).tick();
                    let _ = sim.node(id).poll();
                }
            }
        }
    }
}

#[test]
fn region_refuses_a_vote_forged_in_another_members_name() {
    let (mut sim, id) = follower_with_log();
    let voter = FIVE.into_iter().find(|&v| v != id).expect("another voter");
    let forger = FIVE
        .into_iter()
        .find(|&v| v != id && v != voter)
        .expect("a third");
    let term = sim.status(id).expect("runs").term;
    let mut m = Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgRequestVote);
    m.to = id;
    m.from = voter;
    m.term = term + 1;
    m.index = 1_000;
    m.log_term = term;
    let bytes = protobuf::Message::write_to_bytes(&m).expect("encodes");
    let before = sim.status(id);
    assert!(
        matches!(
            sim.node(id).step_from(forger, &bytes),
            Err(Error::Refused { .. })
        ),
        "a message naming another author than its sender is refused"
    );
    assert_eq!(sim.status(id), before, "nothing changed");
}

#[test]
fn silences_and_acks_keep_the_latest_and_stay_bounded_ended_first() {
    use crate::alerting::{Ack, Silence, labels::Matcher};
    let silence = |id: &str, ends: u64, updated: u64| Silence {
        id: id.into(),
        matchers: vec![Matcher::parse("role=web").expect("matcher")],
        starts_at_unix_ms: 0,
        ends_at_unix_ms: ends,
        created_by: "ops".into(),
        comment: String::new(),
        updated_at_unix_ms: updated,
    };
    let mut st = RegionState::default();
    st.apply(1, &Command::Silence(Box::new(silence("a", 100, 5))));
    // An older version (a late re-send) does not undo a newer one.
    st.apply(2, &Command::Silence(Box::new(silence("a", 50, 9))));
    st.apply(3, &Command::Silence(Box::new(silence("a", 100, 7))));
    assert_eq!(st.silences["a"].ends_at_unix_ms, 50);
    for i in 0..MAX_SILENCES as u64 {
        st.apply(
            10 + i,
            &Command::Silence(Box::new(silence(&format!("s{i}"), 1000 + i, 1))),
        );
    }
    assert_eq!(st.silences.len(), MAX_SILENCES);
    assert!(
        !st.silences.contains_key("a"),
        "the one that ended first went"
    );
    let ack = |at: u64, until: u64| Ack {
        by: "ops".into(),
        at_unix_ms: at,
        comment: String::new(),
        until_unix_ms: until,
    };
    st.apply(
        100,
        &Command::Ack {
            id: "x".into(),
            ack: ack(10, 20),
        },
    );
    st.apply(
        101,
        &Command::Ack {
            id: "x".into(),
            ack: ack(5, 99),
        },
    );
    assert_eq!(st.acks["x"].at_unix_ms, 10, "the latest holds");
    for i in 0..MAX_ACKS as u64 {
        st.apply(
            200 + i,
            &Command::Ack {
                id: format!("y{i}"),
                ack: ack(11, 1000 + i),
            },
        );
    }
    assert_eq!(st.acks.len(), MAX_ACKS);
    assert!(
        !st.acks.contains_key("x"),
        "the one that timed out first went"
    );
    // Long comments: the byte bound forgets what ends first, whatever the counts.
    let mut big = silence("big", 5000, 1);
    big.comment = "x".repeat(8 * 1024);
    st.apply(400, &Command::Silence(Box::new(big.clone())));
    big.id = "big2".into();
    big.ends_at_unix_ms = 6000;
    st.apply(401, &Command::Silence(Box::new(big)));
    let bytes = rmp_serde::to_vec(&(&st.silences, &st.acks)).expect("encodes");
    assert!(bytes.len() <= MAX_ALERTING_BYTES, "{}", bytes.len());
    assert!(st.silences.contains_key("big2"), "the latest to end stays");
    // The state travels in a snapshot: both bounds together fit one.
    let image = Image {
        state: st,
        approvals: Vec::new(),
    };
    assert!(
        image.encode().is_some(),
        "the bounded state fits a snapshot"
    );
}

#[test]
fn phases_follow_their_transitions_and_decommissioning_is_final() {
    use crate::region::{Phase, PhaseRecord};
    let peer = node::Id::from("p");
    let set = |st: &mut RegionState, index: u64, phase: Phase| {
        st.apply(
            index,
            &Command::Phase(Box::new(PhaseRecord {
                peer: peer.clone(),
                name: "n".into(),
                phase,
                by: "ops".into(),
                at_unix_ms: index,
            })),
        );
    };
    let mut st = RegionState::default();
    assert_eq!(st.phase(&peer), Phase::Active);
    // Active cannot go straight to decommissioning: void.
    set(&mut st, 1, Phase::Decommissioning);
    assert_eq!(st.phase(&peer), Phase::Active);
    set(&mut st, 2, Phase::Maintenance);
    assert_eq!(st.phase(&peer), Phase::Maintenance);
    set(&mut st, 3, Phase::Active);
    assert_eq!(st.phase(&peer), Phase::Active);
    set(&mut st, 4, Phase::Maintenance);
    set(&mut st, 5, Phase::Decommissioning);
    assert_eq!(st.phase(&peer), Phase::Decommissioning);
    set(&mut st, 6, Phase::Active);
    assert_eq!(st.phase(&peer), Phase::Decommissioning, "final");
    assert_eq!(st.phases[&peer].at_unix_ms, 5);
    assert!(
        Phase::check(Some(Phase::Decommissioning), Phase::Active)
            .is_err_and(|e| e.contains("final"))
    );
    assert!(Phase::check(None, Phase::Provisioning).is_ok());
    assert!(Phase::check(Some(Phase::Provisioning), Phase::Active).is_ok());
    assert!(Phase::check(Some(Phase::Active), Phase::Provisioning).is_err());
}

#[test]
fn the_notification_log_and_region_alerts_stay_bounded_oldest_first() {
    use crate::alerting::nlog::{Entry, Record};
    let mut st = RegionState::default();
    let record = |key: &str, sent: u64| Record {
        key: key.into(),
        entry: Entry {
            hash: "h".repeat(32),
            sent_unix_ms: sent,
            open: 1,
            escalation: None,
        },
    };
    // A later send wins, an earlier one does not undo it.
    st.apply(1, &Command::Notified(vec![record("group:a", 10)]));
    st.apply(2, &Command::Notified(vec![record("group:a", 5)]));
    assert_eq!(st.notified.get("group:a").map(|e| e.sent_unix_ms), Some(10));
    for i in 0..200u64 {
        st.apply(
            3 + i,
            &Command::Notified(vec![record(&format!("group:g{i:03}"), 100 + i)]),
        );
    }
    assert_eq!(st.notified.entries.len(), MAX_NOTIFIED);
    assert!(st.notified.get("group:g199").is_some(), "the latest kept");
    assert!(st.notified.get("group:a").is_none(), "the oldest forgotten");

    let alert = |key: &str, at: u64| crate::alert::Alert {
        key: key.into(),
        at_unix_ms: at,
        severity: crate::spike::Severity::High,
        category: "host".into(),
        action: "node_dead".into(),
        host: "m".into(),
        region: "eu".into(),
        role: "web".into(),
        rule: None,
        reason: "x".repeat(200),
        decision: None,
        term: Some(1),
        subject: Some(key.into()),
        details: BTreeMap::new(),
    };
    for i in 0..100u64 {
        st.apply(
            300 + i,
            &Command::RegionAlert(Box::new(alert(&format!("k{i:03}"), 1_000 + i))),
        );
    }
    assert!(st.region_alerts.len() <= MAX_REGION_ALERTS);
    assert!(st.region_alerts.contains_key("k099"), "the latest kept");
    let size = rmp_serde::to_vec(&(&st.notified, &st.region_alerts))
        .expect("encodes")
        .len();
    assert!(size <= MAX_NOTIFIED_BYTES, "{size} bytes");
    st.apply(500, &Command::RegionAlertCleared { key: "k099".into() });
    assert!(!st.region_alerts.contains_key("k099"));
}
