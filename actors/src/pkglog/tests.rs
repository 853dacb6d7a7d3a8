use super::*;
use crate::spike::{Change, FieldChange};

const UTC: Clock = Clock {
    offset_s: 0,
    year: 2024,
};

/// 2024-01-15 10:23:45 UTC, in ms.
const T: u64 = 1_705_314_225_000;

#[test]
fn civil_dates_count_days_from_the_epoch() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(ymd("2024-01-15", "10:23:45"), Some((T / 1000) as i64));
    assert_eq!(ymd("2024-02-29", "00:00:00"), Some(1_709_164_800));
    assert_eq!(ymd("2024-13-01", "00:00:00"), None);
    assert_eq!(ymd("2024-01-15", "25:00:00"), None);
    assert_eq!(ymd("2024-1x-15", "10:00:00"), None);
    assert_eq!(year_of(0), 1970);
    assert_eq!(year_of(T), 2024);
    assert_eq!(year_of(1_704_067_199_000), 2023, "2023-12-31 23:59:59");
    assert_eq!(year_of(1_704_067_200_000), 2024, "2024-01-01 00:00:00");
    assert_eq!(year_of(1_709_164_800_000), 2024, "2024-02-29");
}

#[test]
fn dpkg_lines_close_together_are_one_run() {
    let log = "\
2024-01-15 10:23:45 startup archives unpack
2024-01-15 10:23:45 install nginx:amd64 <none> 1.24.0-1
2024-01-15 10:23:46 status half-installed nginx:amd64 1.24.0-1
2024-01-15 10:23:50 startup packages configure
2024-01-15 10:23:52 configure nginx:amd64 1.24.0-1 <none>
2024-01-15 10:23:55 status installed nginx:amd64 1.24.0-1
garbage line
2024-01-15 12:00:00 startup archives unpack
2024-01-15 12:00:03 status installed curl:amd64 8.5.0-2
";
    let r = runs(Format::Dated, "/var/log/dpkg.log", log, UTC);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[0].start_unix_ms, r[0].end_unix_ms), (T, T + 10_000));
    assert_eq!(r[0].log, "/var/log/dpkg.log");
    assert_eq!(r[1].end_unix_ms - r[1].start_unix_ms, 3_000);
    // Local times: a node two hours east of UTC wrote 12:23:45 for 10:23:45 UTC.
    let east = Clock {
        offset_s: 7200,
        year: 2024,
    };
    let r = runs(
        Format::Dated,
        "d",
        "2024-01-15 12:23:45 startup archives unpack\n",
        east,
    );
    assert_eq!(r[0].start_unix_ms, T);
    // zypper's history has the same date prefix.
    let r = runs(
        Format::Dated,
        "h",
        "2024-01-15 10:23:45|install|vim|9.0|x86_64||repo|abc|\n",
        UTC,
    );
    assert_eq!(r[0].start_unix_ms, T);
}

#[test]
fn apt_history_runs_go_from_start_to_end() {
    let log = "
Start-Date: 2024-01-15  10:23:45
Commandline: apt-get install -y nginx
Install: nginx:amd64 (1.24.0-1), nginx-common:amd64 (1.24.0-1, automatic)
End-Date: 2024-01-15  10:33:45

Start-Date: 2024-01-15  11:00:00
Commandline: apt-get upgrade
Start-Date: 2024-01-15  11:05:00
Commandline: apt-get install vim
End-Date: 2024-01-15  11:05:30
";
    let r = runs(Format::Apt, "/var/log/apt/history.log", log, UTC);
    let spans: Vec<(u64, u64)> = r
        .iter()
        .map(|r| (r.start_unix_ms - T, r.end_unix_ms - T))
        .collect();
    // The long run is one (no gap rule for apt); an interrupted one ends at the next start.
    assert_eq!(
        spans,
        [(0, 600_000), (2_175_000, 2_475_000), (2_475_000, 2_505_000)]
    );
    let term =
        "Log started: 2024-01-15  10:23:45\nSetting up nginx\nLog ended: 2024-01-15  10:23:59\n";
    let r = runs(Format::Apt, "/var/log/apt/term.log", term, UTC);
    assert_eq!((r[0].start_unix_ms, r[0].end_unix_ms), (T, T + 14_000));
}

#[test]
fn dnf_times_carry_their_offset_and_yum_times_take_the_year_given() {
    let log = "\
2024-01-15T10:23:45+0000 INFO --- logging initialized ---
2024-01-15T12:23:50+0200 DDEBUG Command: dnf install -y nginx
2024-01-15T10:23:58Z DDEBUG Cleaning up.
";
    let r = runs(Format::Iso, "/var/log/dnf.log", log, UTC);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].start_unix_ms, r[0].end_unix_ms), (T, T + 13_000));
    assert_eq!(iso("2024-01-15T05:23:45-05:00 x"), Some(T));
    assert_eq!(iso("2024-01-15T10:23:45+02 x"), None);

    let yum_log =
        "Jan 15 10:23:45 Installed: nginx-1.24.0-1.el9.x86_64\nJan 15 10:23:47 Updated: curl\n";
    let r = runs(Format::Yum, "/var/log/yum.log", yum_log, UTC);
    assert_eq!((r[0].start_unix_ms, r[0].end_unix_ms), (T, T + 2_000));
    assert!(runs(Format::Yum, "y", "Foo 15 10:23:45 x\n", UTC).is_empty());
}

#[test]
fn formats_are_known_by_file_name() {
    assert_eq!(Format::of("/var/log/dpkg.log"), Some(Format::Dated));
    assert_eq!(Format::of("/var/log/apt/history.log"), Some(Format::Apt));
    assert_eq!(Format::of("/var/log/dnf.rpm.log"), Some(Format::Iso));
    assert_eq!(Format::of("/var/log/yum.log"), Some(Format::Yum));
    assert_eq!(Format::of("/var/log/zypp/history"), Some(Format::Dated));
    assert_eq!(Format::of("/var/log/syslog"), None);
}

fn found_at_start(kind: Kind, subject: &str) -> Spike {
    let mut s = Spike::bare("me", 1, kind, Change::Added, subject);
    s.fields
        .insert("when".into(), FieldChange::fact("while_down"));
    s
}

#[test]
fn only_start_up_changes_made_during_a_run_are_an_upgrade() {
    let runs = Runs(vec![Run {
        log: "/var/log/dpkg.log".into(),
        start_unix_ms: T,
        end_unix_ms: T + 10_000,
    }]);
    let user = found_at_start(Kind::User, "_nginx");
    let (rule, reason) = runs.upgrade(&user, Some(T + 5_000)).expect("an upgrade");
    assert_eq!(rule, Rule::Upgrade("/var/log/dpkg.log".into()));
    assert_eq!(rule.to_string(), "upgrade:/var/log/dpkg.log");
    assert!(reason.contains("/var/log/dpkg.log"), "{reason}");
    // Whole seconds in the log: a change a moment outside still counts.
    assert!(runs.upgrade(&user, Some(T - SLACK_MS)).is_some());
    assert!(runs.upgrade(&user, Some(T + 10_000 + SLACK_MS)).is_some());
    assert!(
        runs.upgrade(&user, Some(T + 10_000 + SLACK_MS + 1))
            .is_none()
    );
    assert!(runs.upgrade(&user, Some(T - SLACK_MS - 1)).is_none());
    assert!(runs.upgrade(&user, None).is_none(), "no time known");
    let file = found_at_start(Kind::File, "/etc/nginx/nginx.conf");
    assert!(runs.upgrade(&file, Some(T)).is_some());
    // Seen live, or a kind a package does not change: not judged here.
    let live = Spike::bare("me", 2, Kind::User, Change::Added, "_nginx");
    assert!(runs.upgrade(&live, Some(T)).is_none());
    let listener = found_at_start(Kind::Network, "listen tcp 0.0.0.0:80");
    assert!(runs.upgrade(&listener, Some(T)).is_none());
    assert!(Runs::default().upgrade(&user, Some(T)).is_none());
}
