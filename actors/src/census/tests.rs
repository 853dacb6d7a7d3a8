use super::*;

fn id(s: &str) -> node::Id {
    node::Id::from(s)
}

fn line(name: &str, status: Status, connectivity: Option<Connectivity>) -> Line {
    Line {
        peer: id(&format!("peer-{name}")),
        name: name.into(),
        role: "web".into(),
        status,
        connectivity,
        backlog: 0,
        replay: None,
        last_seen_ms: 100,
        connectivity_since_unix_ms: None,
    }
}

fn summary(region: &str, term: u64, master: &str, sent: u64) -> Summary {
    Summary::new(
        region,
        term,
        Some(id(master)),
        sent,
        vec![line("a", Status::Alive, Some(Connectivity::Live))],
        60_000,
    )
}

#[test]
fn a_master_publishes_at_once_then_on_schedule_and_stops_when_it_steps_down() {
    let mut c = Census::new(Config::default(), "eu".into());
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.handle_timeout(1_000), None);
    c.set_leading(Some(3), 1_000);
    assert_eq!(c.poll_timeout(), Some(1_000));
    assert_eq!(c.handle_timeout(1_000), Some(3));
    assert_eq!(c.poll_timeout(), Some(3_000));
    assert_eq!(c.handle_timeout(2_999), None);
    assert_eq!(c.handle_timeout(3_000), Some(3));
    c.set_leading(None, 3_500);
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.handle_timeout(10_000), None);
}

#[test]
fn summaries_are_kept_per_region_newest_first_and_only_from_their_master() {
    let mut c = Census::new(Config::default(), "eu".into());
    assert_eq!(c.offer(&id("m1"), summary("us", 2, "m1", 10), 11), Ok(true));
    // Newer from the same master replaces; older does not.
    assert_eq!(c.offer(&id("m1"), summary("us", 2, "m1", 20), 21), Ok(true));
    assert_eq!(
        c.offer(&id("m1"), summary("us", 2, "m1", 15), 22),
        Ok(false)
    );
    // Relayed by someone else than the master it names.
    assert!(matches!(
        c.offer(&id("x"), summary("us", 2, "m1", 30), 31),
        Err(Rejection::NotAuthor { .. })
    ));
    // Another master in the same term, or an older term.
    assert!(matches!(
        c.offer(&id("m2"), summary("us", 2, "m2", 30), 31),
        Err(Rejection::Superseded { .. })
    ));
    assert!(matches!(
        c.offer(&id("m2"), summary("us", 1, "m2", 30), 31),
        Err(Rejection::Superseded { .. })
    ));
    // A higher term takes over.
    assert_eq!(c.offer(&id("m2"), summary("us", 3, "m2", 5), 32), Ok(true));
    // This node's own region is first-hand.
    assert!(matches!(
        c.offer(&id("m9"), summary("eu", 9, "m9", 5), 33),
        Err(Rejection::OwnRegion(_))
    ));
    let kept: Vec<_> = c.foreign().collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].summary.master, Some(id("m2")));
    assert_eq!(kept[0].summary.term, 3);
    assert_eq!(kept[0].received_unix_ms, 32);
    assert_eq!(c.refused(), 4);
}

#[test]
fn the_region_heard_from_least_recently_is_forgotten_at_the_bound() {
    let mut c = Census::new(
        Config {
            every_ms: 1000,
            regions: 2,
        },
        "eu".into(),
    );
    c.offer(&id("a"), summary("r1", 1, "a", 1), 1)
        .expect("kept");
    c.offer(&id("b"), summary("r2", 1, "b", 2), 2)
        .expect("kept");
    c.offer(&id("a"), summary("r1", 1, "a", 3), 3)
        .expect("kept");
    c.offer(&id("c"), summary("r3", 1, "c", 4), 4)
        .expect("kept");
    let regions: Vec<_> = c.foreign().map(|k| k.summary.region.clone()).collect();
    assert_eq!(regions, ["r1", "r3"]);
}

#[test]
fn a_summary_puts_trouble_first_counts_everyone_and_fits_its_budget() {
    let mut members: Vec<Line> = (0..1000)
        .map(|i| line(&format!("n{i:04}"), Status::Alive, Some(Connectivity::Live)))
        .collect();
    members.push(line("zz-dead", Status::Dead, None));
    members.push(line(
        "zz-auto",
        Status::Alive,
        Some(Connectivity::Autonomous),
    ));
    let budget = 20_000;
    let s = Summary::new("eu", 4, Some(id("m")), 1, members, budget);
    assert_eq!(s.members[0].name, "zz-dead");
    assert_eq!(s.members[1].name, "zz-auto");
    assert_eq!(s.counts[&Status::Alive], 1001);
    assert_eq!(s.counts[&Status::Dead], 1);
    assert_eq!(s.members.len() as u32 + s.omitted, 1002);
    assert!(s.omitted > 0);
    let encoded: usize = s
        .members
        .iter()
        .map(|m| rmp_serde::to_vec(m).expect("encodes").len())
        .sum();
    assert!(encoded <= budget, "{encoded} > {budget}");
    // And it travels: the whole summary under the frame cap.
    let frame = crate::wire::encode(&crate::wire::Body::Census(Box::new(s))).expect("kept");
    assert!(frame.len() < crate::wire::MAX_FRAME);
}

#[test]
fn the_own_region_is_kept_only_from_its_master_of_record() {
    let mut c = Census::new(Config::default(), "eu".into());
    // Unknown master: refused as before.
    assert!(matches!(
        c.offer(&id("m"), summary("eu", 2, "m", 5), 6),
        Err(Rejection::OwnRegion(_))
    ));
    c.set_home_master(Some(id("m")));
    // Another node claiming the region: refused.
    assert!(matches!(
        c.offer(&id("x"), summary("eu", 2, "x", 5), 6),
        Err(Rejection::OwnRegion(_))
    ));
    assert_eq!(c.offer(&id("m"), summary("eu", 2, "m", 5), 6), Ok(true));
    assert_eq!(c.offer(&id("m"), summary("eu", 2, "m", 4), 7), Ok(false));
    assert_eq!(c.home().map(|k| k.received_unix_ms), Some(6));
    assert_eq!(c.foreign().count(), 0, "not a foreign region");
    // A new master of record: what the old one said is dropped.
    c.set_home_master(Some(id("n")));
    assert_eq!(c.home(), None);
}

#[test]
fn a_change_publishes_early_but_spaced() {
    let mut c = Census::new(Config::default(), "eu".into());
    c.changed(10);
    assert_eq!(c.poll_timeout(), None, "not leading: nothing to publish");
    c.set_leading(Some(1), 1_000);
    assert_eq!(c.handle_timeout(1_000), Some(1));
    assert_eq!(c.poll_timeout(), Some(3_000));
    c.changed(1_100);
    assert_eq!(c.poll_timeout(), Some(1_000 + CHANGE_SPACING_MS));
    assert_eq!(c.handle_timeout(1_250), Some(1));
    c.changed(2_000);
    assert_eq!(c.poll_timeout(), Some(2_000));
}

#[test]
fn a_summary_with_drift_still_fits_a_frame() {
    let mut d = crate::drift::Drift::new(0);
    for i in 0..100 {
        d.judge(
            1,
            &id(&format!("p{i}")),
            &format!("node-{i}"),
            "web",
            vec![crate::drift::Finding {
                rule: "web.toml:files[/etc/ssh/sshd_config]".into(),
                subject: "file:/etc/ssh/sshd_config".into(),
                desired: format!("sha256:{}", "a".repeat(64)),
                actual: format!("sha256:{}", "b".repeat(64)),
                severity: crate::spike::Severity::High,
            }],
            &BTreeMap::new(),
        );
    }
    let brief = Drift::of(&d);
    assert_eq!(brief.worst.len(), DRIFT_RECORDS);
    assert_eq!(brief.omitted, 100 - DRIFT_RECORDS as u32);
    assert_eq!(brief.counts.high, 100);
    let bytes = rmp_serde::to_vec(&brief).expect("encodes").len();
    assert!(bytes < 16 * 1024, "{bytes} bytes");
}

fn roster_of(n: usize) -> Vec<Line> {
    let mut lines: Vec<Line> = (0..n)
        .map(|i| {
            let mut l = line(&format!("n{i:04}"), Status::Alive, Some(Connectivity::Live));
            // Peer ids as long as real ones.
            l.peer = id(&format!("12D3KooW{i:044}"));
            l
        })
        .collect();
    lines[7].status = Status::Dead;
    lines[9].connectivity = Some(Connectivity::Autonomous);
    lines
}

#[test]
fn a_published_summary_lists_those_in_trouble_and_its_roster_names_the_rest() {
    let mut master = Census::new(Config::default(), "us".into());
    let full = |sent| Summary::new("us", 2, Some(id("m")), sent, roster_of(600), usize::MAX);
    let mut eu = Census::new(Config::default(), "eu".into());
    let kept = |eu: &Census| eu.get("us").map_or(0, |k| k.summary.members.len());
    for (i, t) in [1_000u64, 1_250, 1_500].into_iter().enumerate() {
        let c = master.compact(full(t), t, 60_000);
        assert_eq!(
            c.members.len(),
            2,
            "only the dead and the autonomous are listed"
        );
        assert_eq!(c.omitted, 0);
        let page = c.roster.as_ref().expect("a page while the roster is fresh");
        assert_eq!((page.page, page.pages), (i as u32, 3));
        let frame = crate::wire::encode(&crate::wire::Body::Census(Box::new(c.clone())));
        assert!(
            frame.is_ok_and(|f| f.len() < 30_000),
            "a page and the trouble fit a frame"
        );
        assert_eq!(eu.offer(&id("m"), c, t + 1), Ok(true));
        // Until every page is in, only the listed members show.
        if i < 2 {
            assert_eq!(kept(&eu), 2);
        }
    }
    assert_eq!(kept(&eu), 600);
    let k = eu.get("us").expect("kept");
    let dead = k.summary.members.iter().find(|l| l.name == "n0007");
    assert_eq!(dead.map(|l| l.status), Some(Status::Dead));
    let alive = k.summary.members.iter().find(|l| l.name == "n0100");
    assert_eq!(alive.map(|l| l.status), Some(Status::Alive));
    assert_eq!(k.summary.counts.get(&Status::Alive), Some(&599));

    // Once sent, the roster stays out of summaries until its repair is due.
    let c = master.compact(full(12_000), 12_000, 60_000);
    assert!(c.roster.is_none());
    assert_eq!(eu.offer(&id("m"), c, 12_001), Ok(true));
    assert_eq!(kept(&eu), 600, "members not listed are alive");
    let c = master.compact(full(31_000), 31_000, 60_000);
    assert_eq!(
        c.roster.map(|p| p.page),
        Some(0),
        "the oldest page is repaired"
    );

    // A member leaves: a new roster version, sent page by page again; the old one shows
    // until the new one is whole.
    let mut fewer = full(40_000);
    fewer.members.retain(|l| l.name != "n0100");
    let c = master.compact(fewer.clone(), 40_000, 60_000);
    let version = c.roster_version;
    assert!(c.roster.is_some());
    eu.offer(&id("m"), c, 40_001).expect("offer");
    assert_eq!(kept(&eu), 600);
    for t in [40_250, 40_500] {
        fewer.sent_unix_ms = t;
        let c = master.compact(fewer.clone(), t, 60_000);
        assert_eq!(c.roster_version, version);
        eu.offer(&id("m"), c, t + 1).expect("offer");
    }
    assert_eq!(kept(&eu), 599);
}

#[test]
fn a_region_of_a_thousand_members_in_trouble_still_fits_one_frame() {
    let mut master = Census::new(Config::default(), "us".into());
    let mut lines = roster_of(1000);
    for l in &mut lines {
        l.status = Status::Suspect;
    }
    let full = Summary::new("us", 2, Some(id("m")), 1, lines, usize::MAX);
    let c = master.compact(full, 1, crate::wire::MAX_FRAME - 1024 - PROOF_ROOM);
    assert!(c.members.len() <= LISTED);
    assert_eq!(c.members.len() + c.omitted as usize, 1000);
    assert!(crate::wire::encode(&crate::wire::Body::Census(Box::new(c))).is_ok());
}
