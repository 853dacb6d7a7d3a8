use super::*;

fn file_spike(seq: u64, path: &str, change: spike::Change, after: Option<Digest>) -> Spike {
    Spike {
        at_unix_ms: 1_000 + seq,
        after,
        ..Spike::bare("me", seq, Kind::File, change, path)
    }
}

fn local() -> (Local, Instant) {
    let mut l = Local::new(Config {
        coalesce_ms: 100,
        resend_ms: 30_000,
    });
    let now = Instant::now();
    l.handle(
        now,
        1,
        Input::Identity(Identity {
            peer: "me".into(),
            name: "web-1".into(),
            region: "eu".into(),
            role: "web".into(),
            incarnation: 1,
        }),
    );
    (l, now)
}

#[test]
fn a_change_is_reported_once_after_the_coalescing_window() {
    let (mut l, now) = local();
    assert_eq!(l.handle_timeout(now), None, "nothing due before the window");
    let due = l.poll_timeout().expect("armed");
    let report = l.handle_timeout(due).expect("a report");
    assert_eq!(report.region, "eu");
    assert_eq!(report.twin.identity.value.name, "web-1");
    assert_eq!(report.twin.version, 1);
    assert_eq!(l.handle_timeout(due), None, "sent once");
    // Nothing changed: the next deadline is the repair resend.
    assert_eq!(l.poll_timeout(), Some(due + Duration::from_millis(30_000)));
    assert!(
        l.handle_timeout(due + Duration::from_millis(30_000))
            .is_some()
    );
}

#[test]
fn an_unchanged_input_bumps_no_version() {
    let (mut l, now) = local();
    l.handle(now, 2, Input::Ports([22].into()));
    let v = l.twin().version;
    l.handle(now, 3, Input::Ports([22].into()));
    assert_eq!(l.twin().version, v);
    assert_eq!(l.twin().observed.updated_ms, 2);
    l.handle(now, 4, Input::Ports([22, 80].into()));
    assert_eq!(l.twin().version, v + 1);
    assert_eq!(l.twin().observed.updated_ms, 4);
}

#[test]
fn spikes_update_files_of_interest_and_the_last_changes() {
    let (mut l, now) = local();
    l.handle(
        now,
        2,
        Input::Interest(Interest {
            files: ["/etc/a".to_string()].into(),
            packages: BTreeSet::new(),
        }),
    );
    let d = Digest([7; 32]);
    l.handle(
        now,
        3,
        Input::Spikes(vec![
            file_spike(1, "/etc/a", spike::Change::Modified, Some(d)),
            file_spike(2, "/etc/b", spike::Change::Modified, Some(d)),
        ]),
    );
    let files = &l.twin().observed.value.files;
    assert_eq!(files.get("/etc/a"), Some(&FileFact::Present(d)));
    assert_eq!(files.get("/etc/b"), None, "not of interest");
    assert_eq!(l.twin().changes.value.len(), 2);
    l.handle(
        now,
        4,
        Input::Spikes(vec![file_spike(3, "/etc/a", spike::Change::Removed, None)]),
    );
    assert_eq!(
        l.twin().observed.value.files.get("/etc/a"),
        Some(&FileFact::Absent)
    );
    let many: Vec<Spike> = (10..100)
        .map(|i| file_spike(i, "/etc/c", spike::Change::Modified, Some(d)))
        .collect();
    l.handle(now, 5, Input::Spikes(many));
    let changes = &l.twin().changes.value;
    assert_eq!(changes.len(), CHANGES);
    assert_eq!(changes.back().map(|c| c.seq), Some(99));
}

#[test]
fn packages_are_summarized_and_named_ones_carried() {
    let (mut l, now) = local();
    let list = vec![
        ("openssl".to_string(), "3.0.11-1".to_string()),
        ("nginx".to_string(), "1.22".to_string()),
    ];
    l.handle(
        now,
        2,
        Input::Packages {
            source: "dpkg".into(),
            list: list.clone(),
        },
    );
    let p = &l.twin().packages.value;
    assert_eq!((p.source.as_str(), p.count), ("dpkg", 2));
    assert!(p.versions.is_empty(), "nothing named yet");
    let digest = p.digest;
    l.handle(
        now,
        3,
        Input::Interest(Interest {
            files: BTreeSet::new(),
            packages: ["openssl".to_string(), "absent".to_string()].into(),
        }),
    );
    let p = &l.twin().packages.value;
    assert_eq!(p.versions.len(), 1);
    assert_eq!(p.versions["openssl"], "3.0.11-1");
    let mut upgraded = list;
    upgraded[0].1 = "3.0.13-1".into();
    l.handle(
        now,
        4,
        Input::Packages {
            source: "dpkg".into(),
            list: upgraded,
        },
    );
    assert_ne!(l.twin().packages.value.digest, digest);
}

#[test]
fn a_new_master_gets_the_twin_at_once() {
    let (mut l, _) = local();
    let first = l.poll_timeout().expect("armed");
    l.handle_timeout(first);
    let later = first + Duration::from_millis(500);
    l.handle(later, 9, Input::MasterChanged);
    assert_eq!(l.poll_timeout(), Some(later));
    assert!(l.handle_timeout(later).is_some());
    let again = later + Duration::from_millis(MASTER_RESEND_MS);
    assert_eq!(l.poll_timeout(), Some(again));
    assert!(l.handle_timeout(again).is_some(), "sent again");
    assert!(l.poll_timeout() > Some(again));
}

#[test]
fn service_spikes_give_the_probe_state() {
    let (mut l, now) = local();
    let up = Spike::bare("me", 1, Kind::Service, spike::Change::Added, "nginx-http");
    l.handle(now, 2, Input::Spikes(vec![up]));
    assert_eq!(l.twin().observed.value.services["nginx-http"], "up");
    let down = Spike::bare("me", 2, Kind::Service, spike::Change::Removed, "nginx-http");
    l.handle(now, 3, Input::Spikes(vec![down]));
    assert_eq!(l.twin().observed.value.services["nginx-http"], "down");
}

#[test]
fn a_file_outside_the_watched_paths_is_unknown() {
    let watched = vec!["/etc".to_string(), "/srv/app/".to_string()];
    let st = crate::files::State {
        kind: crate::files::EntryKind::File,
        size: 1,
        mode: 0o644,
        uid: 0,
        gid: 0,
        digest: Some(Digest([3; 32])),
    };
    assert_eq!(
        file_fact(Some(&st), "/etc/a", &watched),
        FileFact::Present(Digest([3; 32]))
    );
    let dir = crate::files::State {
        kind: crate::files::EntryKind::Dir,
        digest: None,
        ..st.clone()
    };
    assert_eq!(file_fact(Some(&dir), "/etc", &watched), FileFact::Other);
    assert_eq!(file_fact(None, "/etc/gone", &watched), FileFact::Absent);
    assert_eq!(file_fact(None, "/srv/app/x", &watched), FileFact::Absent);
    assert_eq!(file_fact(None, "/etcetera", &watched), FileFact::Unknown);
    assert_eq!(file_fact(None, "/opt/x", &watched), FileFact::Unknown);
}

#[test]
fn the_last_changes_alone_make_no_report_due() {
    let (mut l, _) = local();
    let first = l.poll_timeout().expect("armed");
    l.handle_timeout(first);
    let v = l.twin().version;
    let p = Spike::bare("me", 1, Kind::Process, spike::Change::Added, "42:/bin/sh");
    l.handle(first, 2, Input::Spikes(vec![p]));
    assert_eq!(l.twin().version, v + 1);
    assert_eq!(l.twin().changes.value.len(), 1);
    assert_eq!(
        l.poll_timeout(),
        Some(first + Duration::from_millis(30_000)),
        "only the repair resend is due"
    );
}

#[test]
fn health_follows_the_vitals_and_the_probes_and_only_news_make_a_report() {
    use crate::sync::Connectivity;
    let (mut l, now) = local();
    let due = l.poll_timeout().expect("armed");
    l.handle_timeout(due).expect("the first report");
    assert_eq!(l.twin().health.value.state, health::State::Unknown);
    let vitals = |c, backlog| {
        Input::Vitals(health::Vitals {
            connectivity: Some(c),
            backlog,
        })
    };
    let t = due + Duration::from_millis(10);
    l.handle(t, 5, vitals(Connectivity::Live, 0));
    assert_eq!(l.twin().health.value.state, health::State::Ok);
    assert_eq!(l.twin().health.updated_ms, 5);
    let report = l
        .handle_timeout(t + Duration::from_millis(100))
        .expect("news");
    assert_eq!(report.twin.health.value.state, health::State::Ok);
    // A new backlog count is kept but is no news.
    let v = l.twin().version;
    let t = t + Duration::from_millis(200);
    l.handle(t, 6, vitals(Connectivity::Live, 12));
    assert_eq!(l.twin().version, v + 1);
    assert_eq!(l.twin().health.value.backlog, 12);
    assert_eq!(l.handle_timeout(t + Duration::from_millis(100)), None);
    // A probe down: failing, reported.
    l.handle(
        t,
        7,
        Input::Services([("http".to_string(), "down".to_string())].into()),
    );
    let report = l
        .handle_timeout(t + Duration::from_millis(100))
        .expect("news");
    assert_eq!(report.twin.health.value.state, health::State::Failing);
    assert_eq!(report.twin.health.value.reasons, ["service http is down"]);
    let _ = now;
}
