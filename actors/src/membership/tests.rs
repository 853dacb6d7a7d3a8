use super::*;

const SEC: Duration = Duration::from_secs(1);

/// A view without probes: every peer judged by its heartbeats.
fn view() -> View {
    ring_view(0, Duration::ZERO)
}

fn id(s: &str) -> node::Id {
    node::Id::from(s)
}

fn beat_from(from: &str, incarnation: u64, seq: u64, suspects: &[&str]) -> Input {
    Input::Heartbeat {
        from: id(from),
        beat: Arc::new(Beat {
            uptime_ms: seq * 1000,
            suspects: suspects.iter().map(|s| id(s)).collect(),
            every_ms: 1000,
            ..Beat::new(
                node::Info {
                    name: from.into(),
                    region: "eu".into(),
                    role: "web".into(),
                    incarnation,
                },
                seq,
            )
        }),
    }
}

fn beat(region: &str, incarnation: u64, seq: u64) -> Input {
    let mut b = beat_from("p", incarnation, seq, &[]);
    if let Input::Heartbeat { beat, .. } = &mut b {
        Arc::make_mut(beat).info.region = region.into();
    }
    b
}

fn changed(out: &[Output]) -> Vec<(Status, Status)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StatusChanged { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn status(v: &View, peer: &str) -> Option<Status> {
    v.get(&id(peer)).map(|m| m.status)
}

#[test]
fn a_retired_member_leaves_the_view_until_it_beats_again() {
    let t0 = Instant::now();
    let mut v = view();
    for seq in 1..=5 {
        v.handle(t0 + SEC * (seq as u32 - 1), beat("eu", 1, seq));
    }
    let mut t = t0 + 5 * SEC;
    while status(&v, "p") != Some(Status::Dead) {
        t = v.poll_timeout().expect("a deadline");
        v.handle_timeout(t);
    }
    let peers: BTreeSet<node::Id> = [id("p")].into();
    // Not before it has been silent for `after`, and only members named.
    assert!(v.retire(t, &peers, 30 * SEC).is_empty());
    assert!(
        v.retire(t + 60 * SEC, &BTreeSet::new(), 30 * SEC)
            .is_empty()
    );
    assert_eq!(v.retire(t + 60 * SEC, &peers, 30 * SEC), [id("p")]);
    assert_eq!(status(&v, "p"), None);
    assert_eq!(v.counts().dead, 0);
    // A disconnection or an address of it does not bring it back; a heartbeat does.
    v.handle(t + 61 * SEC, Input::Disconnected { peer: id("p") });
    assert_eq!(status(&v, "p"), None);
    v.handle(t + 62 * SEC, beat("eu", 2, 1));
    assert_eq!(status(&v, "p"), Some(Status::Alive));
}

#[test]
fn heartbeats_drive_alive_suspect_dead_and_back() {
    let t0 = Instant::now();
    let mut v = view();
    let out = v.handle(t0, beat("eu", 1, 1));
    assert_eq!(changed(&out), [(Status::Joining, Status::Alive)]);
    for seq in 2..=10 {
        v.handle(t0 + SEC * (seq as u32 - 1), beat("eu", 1, seq));
    }
    let last = t0 + 9 * SEC;
    let suspect_at = v.poll_timeout().expect("a deadline");
    assert!(suspect_at > last + SEC && suspect_at < last + 2 * SEC);
    assert!(changed(&v.handle_timeout(suspect_at - SEC / 10)).is_empty());
    let out = v.handle_timeout(suspect_at);
    assert_eq!(changed(&out), [(Status::Alive, Status::Suspect)]);
    assert_eq!(v.seen().suspects, [id("p")]);
    // Disconnected (never connected here) and alone: no other observer to ask.
    let dead_at = v.poll_timeout().expect("a deadline");
    assert!(
        dead_at < last + 3 * SEC,
        "dead {:?} after the last beat",
        dead_at - last
    );
    let out = v.handle_timeout(dead_at);
    assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
    assert_eq!(v.poll_timeout(), None);

    let out = v.handle(last + 5 * SEC, beat("eu", 1, 11));
    assert_eq!(changed(&out), [(Status::Dead, Status::Alive)]);
    assert_eq!(v.counts().alive, 1);
}

/// Observers a and b beat regularly; x goes quiet. Without a second observer's
/// suspicion x stays suspect however long; once a lists it, x is dead.
#[test]
fn death_needs_a_second_observer() {
    let t0 = Instant::now();
    let mut v = view();
    for s in 1..=5u64 {
        let at = t0 + SEC * (s as u32 - 1);
        for p in ["a", "b", "x"] {
            v.handle(at, beat_from(p, 1, s, &[]));
        }
    }
    for s in 6..=12u64 {
        let at = t0 + SEC * (s as u32 - 1);
        v.handle(at, beat_from("a", 1, s, &[]));
        v.handle(at, beat_from("b", 1, s, &[]));
        v.handle_timeout(at);
    }
    assert_eq!(status(&v, "x"), Some(Status::Suspect), "not confirmed yet");
    assert_eq!(status(&v, "a"), Some(Status::Alive));
    let out = v.handle(t0 + 12 * SEC, beat_from("a", 1, 13, &["x"]));
    assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
}

/// A peer whose connection is still up (paused, starved) gets the grace before it
/// can be dead; losing the connection ends the grace.
#[test]
fn a_live_connection_earns_grace() {
    let t0 = Instant::now();
    let mut v = view();
    v.handle(t0, Input::Connected { peer: id("p") });
    for seq in 1..=10 {
        v.handle(t0 + SEC * (seq as u32 - 1), beat("eu", 1, seq));
    }
    let last = t0 + 9 * SEC;
    v.handle_timeout(last + 2 * SEC);
    assert_eq!(status(&v, "p"), Some(Status::Suspect));
    // A 2 s pause, beat late: still at most suspect at any point.
    v.handle_timeout(last + 3 * SEC);
    assert_eq!(status(&v, "p"), Some(Status::Suspect), "within the grace");
    let out = v.handle(last + 3 * SEC, Input::Disconnected { peer: id("p") });
    assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
}

#[test]
fn old_and_duplicate_heartbeats_are_stale() {
    let t0 = Instant::now();
    let mut v = view();
    v.handle(t0, beat("eu", 1, 5));
    let out = v.handle(t0 + SEC, beat("eu", 1, 5));
    assert_eq!(
        out,
        [Output::Stale {
            peer: id("p"),
            seq: 5
        }]
    );
    let out = v.handle(t0 + SEC, beat("eu", 1, 4));
    assert_eq!(
        out,
        [Output::Stale {
            peer: id("p"),
            seq: 4
        }]
    );
    // A stale heartbeat does not refresh liveness.
    assert_eq!(v.get(&id("p")).and_then(|m| m.last_heartbeat), Some(t0));
}

#[test]
fn restart_is_a_new_incarnation_and_seq_starts_over() {
    let t0 = Instant::now();
    let mut v = view();
    v.handle(t0, beat("eu", 1, 40));
    let out = v.handle(t0 + SEC, beat("eu", 2, 1));
    assert!(out.contains(&Output::Restarted {
        peer: id("p"),
        incarnation: 2
    }));
    assert_eq!(v.get(&id("p")).map(|m| m.last_seq), Some(1));
    // The previous incarnation's heartbeats are now stale, whatever their seq.
    let out = v.handle(t0 + SEC, beat("eu", 1, 41));
    assert_eq!(
        out,
        [Output::Stale {
            peer: id("p"),
            seq: 41
        }]
    );
}

#[test]
fn other_regions_are_remote_and_never_judged_by_heartbeat() {
    let t0 = Instant::now();
    let mut v = view();
    v.handle(t0, Input::Connected { peer: id("p") });
    let out = v.handle(
        t0,
        Input::Hello {
            from: id("p"),
            info: node::Info {
                name: "p".into(),
                region: "us".into(),
                role: "db".into(),
                incarnation: 1,
            },
        },
    );
    assert_eq!(changed(&out), [(Status::Joining, Status::Remote)]);
    assert!(changed(&v.handle_timeout(t0 + 100 * SEC)).is_empty());
}

#[test]
fn a_peer_that_never_beats_and_leaves_is_dead_after_the_dead_interval() {
    let t0 = Instant::now();
    let mut v = view();
    v.handle(t0, Input::Connected { peer: id("p") });
    v.handle(t0 + SEC, Input::Disconnected { peer: id("p") });
    assert_eq!(v.poll_timeout(), Some(t0 + 11 * SEC));
    let out = v.handle_timeout(t0 + 11 * SEC);
    assert_eq!(changed(&out), [(Status::Joining, Status::Dead)]);
}

#[test]
fn own_id_is_never_a_member() {
    let mut v = view();
    v.handle(Instant::now(), Input::Connected { peer: id("me") });
    assert_eq!(v.members().count(), 0);
}

const MS: Duration = Duration::from_millis(1);

/// A view with probes every 500 ms and `monitors` watchers per member (0: no probes).
fn ring_view(monitors: usize, stall: Duration) -> View {
    View::new(
        Config {
            interval: SEC,
            acceptable_pause: SEC / 2,
            connected_grace: 2 * SEC,
            suspect_phi: 5.0,
            dead_phi: 8.0,
            dead_after: 10,
            probe: if monitors == 0 {
                Duration::ZERO
            } else {
                SEC / 2
            },
            monitors,
            stall,
        },
        id("me"),
        "eu".into(),
    )
}

fn report(from: &str, seq: u64, suspects: &[&str], dead: &[&str]) -> Input {
    let mut b = beat_from(from, 1, seq, suspects);
    if let Input::Heartbeat { beat, .. } = &mut b {
        Arc::make_mut(beat).dead = dead.iter().map(|d| id(d)).collect();
    }
    b
}

fn alive(from: &node::Id) -> Input {
    Input::Alive { from: from.clone() }
}

/// Watched members are judged by the answers to this node's probes (not by their
/// gossiped heartbeats); a silent one is suspected, listed, and dead once another of
/// its watchers confirms. The others are judged by what their watchers say.
#[test]
fn probes_judge_the_watched_and_watchers_reports_the_rest() {
    let t0 = Instant::now();
    let mut v = ring_view(2, Duration::ZERO);
    let peers = ["a", "b", "c", "d", "e"];
    for p in peers {
        v.handle(t0, beat_from(p, 1, 1, &[]));
    }
    let watched = v.watching().to_vec();
    assert_eq!(watched.len(), 2);
    let (quiet, talker) = (watched[0].clone(), watched[1].clone());
    // Its other watcher, by this node's ring.
    let q = v.get(&quiet).map(|m| m.key).expect("known");
    let other = v
        .ring
        .after(q, &quiet, 2)
        .into_iter()
        .find(|w| *w != id("me"))
        .expect("another watcher");
    let mut t = t0;
    let mut seq = 1;
    // Both answer at first; then the quiet one stops answering (a hung process whose
    // gossip still flows would be odd, but it shows what judges a watched member).
    v.handle(t0, alive(&quiet));
    while t < t0 + 4 * SEC {
        t += SEC / 2;
        v.handle(t, alive(&talker));
        if t.duration_since(t0).as_millis().is_multiple_of(1000) {
            seq += 1;
            // Everyone beats, the quiet one too: gossip does not answer probes.
            for p in peers {
                v.handle(t, beat_from(p, 1, seq, &[]));
            }
        }
        v.handle_timeout(t);
    }
    assert_eq!(status(&v, talker.as_str()), Some(Status::Alive));
    assert_eq!(status(&v, quiet.as_str()), Some(Status::Suspect));
    assert_eq!(v.seen().suspects, std::slice::from_ref(&quiet), "told");
    assert!(v.seen().dead.is_empty(), "not confirmed yet");
    let out = v.handle(t, report(other.as_str(), seq + 1, &[quiet.as_str()], &[]));
    assert_eq!(changed(&out), [(Status::Suspect, Status::Dead)]);
    assert_eq!(v.seen().dead, std::slice::from_ref(&quiet));
    assert!(!v.watching().contains(&quiet), "the dead leave the ring");

    // A member this node does not watch, declared dead by one of its watchers: dead
    // here at once, but not told as this node's own judgement.
    let x = peers
        .iter()
        .find(|p| !watched.contains(&id(p)) && id(p) != other)
        .expect("an unwatched member");
    let out = v.handle(
        t,
        report(other.as_str(), seq + 2, &[quiet.as_str(), x], &[x]),
    );
    assert!(
        changed(&out).contains(&(Status::Alive, Status::Dead)),
        "{out:?}"
    );
    assert_eq!(status(&v, x), Some(Status::Dead));
    assert!(!v.seen().suspects.contains(&id(x)));
    // Heard from again (its own heartbeat, after the report): no longer dead, suspect
    // while its watcher still lists it, alive once it does not.
    v.handle(t + SEC / 10, beat_from(x, 1, seq + 5, &[]));
    assert_eq!(status(&v, x), Some(Status::Suspect));
    v.handle(
        t + SEC / 5,
        report(other.as_str(), seq + 3, &[quiet.as_str()], &[]),
    );
    assert_eq!(status(&v, x), Some(Status::Alive));
}

/// With the default timing, a watched peer whose connection stays up (a stopped
/// process) is never dead for a 2 s pause, and is dead within 3.5 s of its last answer.
#[test]
fn a_hung_watched_peer_is_dead_in_time_a_paused_one_never() {
    let t0 = Instant::now();
    let mut v = ring_view(3, Duration::ZERO);
    v.handle(t0, Input::Connected { peer: id("p") });
    v.handle(t0, beat_from("p", 1, 1, &[]));
    assert_eq!(v.watching(), [id("p")]);
    let mut t = t0;
    for _ in 0..20 {
        t += SEC / 2;
        v.handle(t, alive(&id("p")));
    }
    // A 2 s pause right after an answer: 2.5 s until the next answer is handled.
    let resumed = t + 2500 * MS;
    while let Some(at) = v.poll_timeout().filter(|at| *at < resumed) {
        v.handle_timeout(at);
        assert_ne!(status(&v, "p"), Some(Status::Dead), "at {:?}", at - t);
    }
    // A hang: silence from then on.
    let dead_at = v.poll_timeout().expect("a deadline");
    v.handle_timeout(dead_at);
    assert_eq!(status(&v, "p"), Some(Status::Dead));
    assert!(
        dead_at - t > 2500 * MS && dead_at - t < 3500 * MS,
        "dead {:?} after the last answer",
        dead_at - t
    );
}

/// A node that did not run for a while (stopped, starved) counts its peers' silence
/// from when it runs again.
#[test]
fn a_node_that_stalled_does_not_judge_its_peers_on_its_own_silence() {
    let t0 = Instant::now();
    let mut v = ring_view(3, SEC);
    v.handle(t0, beat_from("p", 1, 1, &[]));
    let mut t = t0;
    for _ in 0..10 {
        t += SEC / 2;
        v.handle(t, alive(&id("p")));
        v.handle_timeout(t);
    }
    let out = v.handle_timeout(t + 5 * SEC);
    assert!(changed(&out).is_empty(), "{out:?}");
    assert_eq!(status(&v, "p"), Some(Status::Alive));
    // Silent from then on, it is suspected again in time.
    let at = v.poll_timeout().expect("a deadline");
    assert!(at > t + 5 * SEC && at < t + 7 * SEC);
}

/// One live peer that declared this node dead is enough to know it is held dead.
#[test]
fn a_declared_death_of_this_node_is_known_at_once() {
    let t0 = Instant::now();
    let mut v = ring_view(3, Duration::ZERO);
    v.handle(t0, beat_from("p", 1, 1, &[]));
    assert_eq!(v.held_dead_by(HELD_DEAD_BEATS), 0);
    let out = v.handle(t0 + SEC, report("p", 2, &["me"], &["me"]));
    assert_eq!(v.held_dead_by(HELD_DEAD_BEATS), 1);
    // Told to the runtime, which tells the region at once that this node lives.
    let accused = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::Accused { by } if *by == id("p")))
            .count()
    };
    assert_eq!(accused(&out), 1);
    let again = v.handle(t0 + SEC + SEC / 2, report("p", 3, &["me"], &["me"]));
    assert_eq!(accused(&again), 0, "once per accusation");
    v.handle(t0 + 2 * SEC, report("p", 4, &[], &[]));
    assert_eq!(v.held_dead_by(HELD_DEAD_BEATS), 0);
}

/// A member cut off from the region judges the others from its side of the cut; when
/// it comes back, the deaths it declared there are not believed by a node that holds it
/// dead: one observer's word never evicts members everyone else hears.
#[test]
fn a_death_declared_from_beyond_a_cut_is_not_believed() {
    let t0 = Instant::now();
    let mut v = ring_view(3, Duration::ZERO);
    let peers = ["a", "b", "c", "d", "e", "f"];
    for p in peers {
        v.handle(t0, beat_from(p, 1, 1, &[]));
    }
    let watched = v.watching().to_vec();
    let unwatched: Vec<&str> = peers
        .iter()
        .copied()
        .filter(|p| !watched.contains(&id(p)))
        .collect();
    let [cut, x, w] = unwatched[..] else {
        panic!("three unwatched members: {unwatched:?}");
    };
    // Cut off, it is declared dead by another member.
    v.handle(t0 + SEC, report(w, 2, &[cut], &[cut]));
    assert_eq!(status(&v, cut), Some(Status::Dead));
    // Healed, its first heartbeat declares x dead: not believed (x is shown suspect while
    // a member heard again lists it, as any listed member is).
    let out = v.handle(t0 + 2 * SEC, report(cut, 2, &[x], &[x]));
    assert_ne!(status(&v, x), Some(Status::Dead), "{out:?}");
    // The same word from a member held alive is.
    v.handle(t0 + 3 * SEC, report(w, 3, &[x], &[x]));
    assert_eq!(status(&v, x), Some(Status::Dead));
}

/// A restarted peer's hello can arrive before its first heartbeat: that heartbeat (its
/// sequence started over) is taken, and a new name is announced.
#[test]
fn a_restart_told_by_hello_first_keeps_the_new_heartbeats() {
    let t0 = Instant::now();
    let mut v = view();
    v.handle(t0, beat("eu", 1, 40));
    let out = v.handle(
        t0 + SEC,
        Input::Hello {
            from: id("p"),
            info: node::Info {
                name: "renamed".into(),
                region: "eu".into(),
                role: "web".into(),
                incarnation: 2,
            },
        },
    );
    assert!(out.contains(&Output::Restarted {
        peer: id("p"),
        incarnation: 2
    }));
    assert!(out.contains(&Output::Announced { peer: id("p") }));
    let out = v.handle(t0 + SEC, beat("eu", 2, 1));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Stale { .. })),
        "{out:?}"
    );
    assert_eq!(v.get(&id("p")).map(|m| m.last_seq), Some(1));
}

/// A watched member that never answers a probe (a node of a version without probes) is
/// judged by its heartbeats, not suspected for its silence.
#[test]
fn a_member_that_never_answers_is_judged_by_its_heartbeats() {
    let t0 = Instant::now();
    let mut v = ring_view(3, Duration::ZERO);
    for seq in 1..=10u32 {
        v.handle(
            t0 + SEC * (seq - 1),
            beat_from("old", 1, u64::from(seq), &[]),
        );
        v.handle_timeout(t0 + SEC * (seq - 1));
    }
    assert_eq!(v.watching(), [id("old")]);
    assert_eq!(status(&v, "old"), Some(Status::Alive));
    // Silent from then on, it is suspected by the heartbeats' rhythm.
    let at = v.poll_timeout().expect("a deadline");
    assert!(at > t0 + 10 * SEC && at < t0 + 11 * SEC, "{:?}", at - t0);
}

/// A member known only by its hello (this node restarted and has not heard its next
/// heartbeat yet) that its watchers declare dead is dead here too.
#[test]
fn a_member_never_heard_but_declared_dead_is_dead() {
    let t0 = Instant::now();
    let mut v = ring_view(3, Duration::ZERO);
    v.handle(t0, beat_from("w", 1, 1, &[]));
    v.handle(
        t0,
        Input::Hello {
            from: id("x"),
            info: node::Info {
                name: "x".into(),
                region: "eu".into(),
                role: "web".into(),
                incarnation: 1,
            },
        },
    );
    assert_eq!(status(&v, "x"), Some(Status::Joining));
    v.handle(t0 + SEC, report("w", 2, &["x"], &["x"]));
    assert_eq!(status(&v, "x"), Some(Status::Dead));
}
