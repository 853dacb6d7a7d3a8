//! The users-and-groups detector's logic: parse the account files into a snapshot, and
//! turn the difference between two snapshots into precise observations.
//!
//! Sources: passwd, group, shadow, sudoers and sudoers.d. From shadow only the presence
//! and state of a password is kept (`none`, `locked`, `set`) plus a sha256 of the hash
//! field to notice a change; the hash itself is never stored, compared in the clear, or
//! reported. A malformed line is reported once, as a coverage observation naming the file
//! and line, and skipped; the rest of the file still counts.
//!
//! The snapshot is saved after its changes are journaled, with the number of the last one
//! it reflects; at start the journal's later account spikes are folded into it ([`fold`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::spike::{Change, FieldChange, Kind, Layer, Observation, Severity, Value};

mod fold;
pub use fold::{Folded, Saved, fold};

/// The account files as read (text, lossily decoded); `None`: the file is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Files {
    pub passwd: Option<String>,
    pub group: Option<String>,
    pub shadow: Option<String>,
    /// sudoers and every file of sudoers.d, as (host path, text).
    pub sudoers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub gid: u32,
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Password {
    /// `none`, `locked` or `set`.
    pub state: String,
    /// sha256 of the hash field: tells a change, reveals nothing. `None`: not known, in a
    /// snapshot rebuilt from a spike (which never carries it, [`fold`]); it then matches
    /// any fingerprint, and the next reading knows it again. (Earlier snapshots saved the
    /// bare array, which reads as `Some`.)
    pub fingerprint: Option<[u8; 32]>,
}

impl Password {
    /// Whether `self` and `other` may be the same password: the same state, and the same
    /// fingerprint where both are known.
    fn same(&self, other: &Password) -> bool {
        self.state == other.state
            && match (self.fingerprint, other.fingerprint) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// Everything the detector knows about accounts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    pub passwords: BTreeMap<String, Password>,
    /// sudo rules by subject (`alice`, `%admin`), sorted.
    pub sudo: BTreeMap<String, BTreeSet<String>>,
}

/// A line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
}

/// Parses the account files; problems are returned, never fatal.
pub fn parse(files: &Files) -> (Snapshot, Vec<Problem>) {
    let mut snap = Snapshot::default();
    let mut problems = Vec::new();
    let mut bad = |file: &str, line: usize, reason: &str| {
        problems.push(Problem {
            file: file.into(),
            line,
            reason: reason.into(),
        })
    };
    for (n, l) in lines(files.passwd.as_deref().unwrap_or("")) {
        // NIS compat entries (+/-) are not local accounts.
        if l.starts_with('+') || l.starts_with('-') {
            continue;
        }
        let f: Vec<&str> = l.split(':').collect();
        let (Ok(uid), Ok(gid)) = (
            f.get(2).unwrap_or(&"").parse::<u32>(),
            f.get(3).unwrap_or(&"").parse::<u32>(),
        ) else {
            bad("/etc/passwd", n, "uid and gid must be numbers");
            continue;
        };
        if f.len() != 7 || f[0].is_empty() {
            bad(
                "/etc/passwd",
                n,
                "expected 7 fields name:x:uid:gid:gecos:home:shell",
            );
            continue;
        }
        snap.users.insert(
            f[0].into(),
            User {
                uid,
                gid,
                gecos: f[4].into(),
                home: f[5].into(),
                shell: f[6].into(),
            },
        );
    }
    for (n, l) in lines(files.group.as_deref().unwrap_or("")) {
        if l.starts_with('+') || l.starts_with('-') {
            continue;
        }
        let f: Vec<&str> = l.split(':').collect();
        let gid = f.get(2).and_then(|g| g.parse::<u32>().ok());
        match (f.len(), gid) {
            (4, Some(gid)) if !f[0].is_empty() => {
                let members = f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect();
                snap.groups.insert(f[0].into(), Group { gid, members });
            }
            _ => bad("/etc/group", n, "expected 4 fields name:x:gid:members"),
        }
    }
    for (n, l) in lines(files.shadow.as_deref().unwrap_or("")) {
        let mut f = l.splitn(3, ':');
        let (Some(name), Some(hash)) = (f.next(), f.next()) else {
            bad("/etc/shadow", n, "expected name:hash:...");
            continue;
        };
        if name.is_empty() {
            bad("/etc/shadow", n, "empty user name");
            continue;
        }
        let state = if hash.is_empty() {
            "none"
        } else if hash.starts_with('!') || hash.starts_with('*') {
            "locked"
        } else {
            "set"
        };
        snap.passwords.insert(
            name.into(),
            Password {
                state: state.into(),
                fingerprint: Some(Sha256::digest(hash.as_bytes()).into()),
            },
        );
    }
    for (path, text) in &files.sudoers {
        parse_sudoers(path, text, &mut snap.sudo, &mut bad);
    }
    (snap, problems)
}

fn parse_sudoers(
    path: &str,
    text: &str,
    out: &mut BTreeMap<String, BTreeSet<String>>,
    bad: &mut impl FnMut(&str, usize, &str),
) {
    // Join continuation lines, keeping the number of the first.
    let mut joined: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(stripped) = line.strip_suffix('\\') {
            acc.push_str(stripped);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(line);
            joined.push((start, acc));
        }
    }
    if let Some(p) = pending {
        joined.push(p);
    }
    for (n, line) in joined {
        let l = line.trim();
        if l.is_empty()
            || (l.starts_with('#') && !l.starts_with("#include"))
            || l.starts_with("Defaults")
            || l.starts_with("#include")
            || l.starts_with("@include")
            || l.split_whitespace()
                .next()
                .is_some_and(|w| w.ends_with("_Alias"))
        {
            continue;
        }
        let mut parts = l.splitn(2, char::is_whitespace);
        match (parts.next(), parts.next()) {
            (Some(who), Some(rule)) if rule.contains('=') => {
                let rule = rule.split_whitespace().collect::<Vec<_>>().join(" ");
                out.entry(who.to_string()).or_default().insert(rule);
            }
            _ => bad(path, n, "expected `who host=(runas) commands`"),
        }
    }
}

/// The detector: the last snapshot and the problems already reported.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    last: Option<Snapshot>,
    reported: BTreeSet<Problem>,
}

impl Detector {
    /// Starts from a persisted snapshot (`None` on a first start).
    pub fn new(last: Option<Snapshot>) -> Self {
        Detector {
            last,
            reported: BTreeSet::new(),
        }
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.last.as_ref()
    }

    /// The account files were (re)read by `layer`. The first reading with no persisted
    /// snapshot only records.
    pub fn handle(&mut self, files: &Files, layer: Layer) -> Vec<Observation> {
        let (snap, problems) = parse(files);
        let mut out = Vec::new();
        let problems: BTreeSet<Problem> = problems.into_iter().collect();
        for p in problems.difference(&self.reported) {
            let mut o = Observation::new(
                Kind::Coverage,
                Change::Modified,
                format!("{}:{}", p.file, p.line),
                layer,
            );
            o.severity = Severity::Low;
            o.fields
                .insert("malformed_line".into(), FieldChange::fact(p.reason.clone()));
            out.push(o);
        }
        self.reported = problems;
        if let Some(last) = &self.last {
            out.extend(diff(last, &snap, layer));
        }
        self.last = Some(snap);
        out
    }
}

fn text(s: &str) -> Option<Value> {
    Some(Value::Text(s.into()))
}

fn list<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::List(items.into_iter().cloned().collect())
}

fn user_fields(u: &User) -> [(&'static str, Value); 5] {
    [
        ("uid", Value::Int(i64::from(u.uid))),
        ("gid", Value::Int(i64::from(u.gid))),
        ("gecos", Value::Text(u.gecos.clone())),
        ("home", Value::Text(u.home.clone())),
        ("shell", Value::Text(u.shell.clone())),
    ]
}

/// Field-by-field changes between two optional records.
fn field_changes<const N: usize>(
    before: Option<[(&'static str, Value); N]>,
    after: Option<[(&'static str, Value); N]>,
) -> BTreeMap<String, FieldChange> {
    let mut out = BTreeMap::new();
    for i in 0..N {
        let b = before.as_ref().map(|f| f[i].clone());
        let a = after.as_ref().map(|f| f[i].clone());
        let name = b.as_ref().or(a.as_ref()).map(|f| f.0).unwrap_or_default();
        let (bv, av) = (b.map(|f| f.1), a.map(|f| f.1));
        if bv != av {
            out.insert(
                name.to_string(),
                FieldChange {
                    before: bv,
                    after: av,
                },
            );
        }
    }
    out
}

fn change_of<T>(before: Option<&T>, after: Option<&T>) -> Change {
    match (before, after) {
        (None, _) => Change::Added,
        (_, None) => Change::Removed,
        _ => Change::Modified,
    }
}

/// The observations that take `a` to `b`.
pub fn diff(a: &Snapshot, b: &Snapshot, layer: Layer) -> Vec<Observation> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = a
        .users
        .keys()
        .chain(b.users.keys())
        .chain(a.passwords.keys())
        .chain(b.passwords.keys())
        .chain(a.sudo.keys().filter(|k| !k.starts_with('%')))
        .chain(b.sudo.keys().filter(|k| !k.starts_with('%')))
        .collect();
    for name in names {
        let (ub, ua) = (a.users.get(name), b.users.get(name));
        let mut fields = field_changes(ub.map(user_fields), ua.map(user_fields));
        let (pb, pa) = (a.passwords.get(name), b.passwords.get(name));
        let same = match (pb, pa) {
            (Some(b), Some(a)) => b.same(a),
            (b, a) => b.is_none() && a.is_none(),
        };
        if !same {
            let after = pa.map(|p| {
                // Not the same password with the same state: the fingerprint changed.
                let changed = pb.is_some_and(|q| q.state == p.state);
                if changed {
                    format!("{} (changed)", p.state)
                } else {
                    p.state.clone()
                }
            });
            fields.insert(
                "password".into(),
                FieldChange {
                    before: pb.and_then(|p| text(&p.state)),
                    after: after.and_then(|s| text(&s)),
                },
            );
        }
        sudo_field(a, b, name, &mut fields);
        if fields.is_empty() {
            continue;
        }
        let change = if ub.is_none() && ua.is_none() {
            Change::Modified
        } else {
            change_of(ub, ua)
        };
        let mut o = Observation::new(Kind::User, change, name.clone(), layer);
        o.severity = if fields.contains_key("sudo") || fields.contains_key("uid") {
            Severity::High
        } else {
            Severity::Medium
        };
        o.fields = fields;
        out.push(o);
    }
    let groups: BTreeSet<&String> = a.groups.keys().chain(b.groups.keys()).collect();
    for name in groups {
        let (gb, ga) = (a.groups.get(name), b.groups.get(name));
        let mut fields = BTreeMap::new();
        if gb.map(|g| g.gid) != ga.map(|g| g.gid) {
            fields.insert(
                "gid".into(),
                FieldChange {
                    before: gb.map(|g| Value::Int(i64::from(g.gid))),
                    after: ga.map(|g| Value::Int(i64::from(g.gid))),
                },
            );
        }
        if gb.map(|g| &g.members) != ga.map(|g| &g.members) {
            fields.insert(
                "members".into(),
                FieldChange {
                    before: gb.map(|g| list(&g.members)),
                    after: ga.map(|g| list(&g.members)),
                },
            );
        }
        sudo_field(a, b, &format!("%{name}"), &mut fields);
        if fields.is_empty() {
            continue;
        }
        let mut o = Observation::new(Kind::Group, change_of(gb, ga), name.clone(), layer);
        o.severity = if fields.contains_key("sudo") {
            Severity::High
        } else {
            Severity::Medium
        };
        o.fields = fields;
        out.push(o);
    }
    out
}

fn sudo_field(a: &Snapshot, b: &Snapshot, key: &str, fields: &mut BTreeMap<String, FieldChange>) {
    let (sb, sa) = (a.sudo.get(key), b.sudo.get(key));
    if sb != sa {
        fields.insert(
            "sudo".into(),
            FieldChange {
                before: Some(list(sb.into_iter().flatten())),
                after: Some(list(sa.into_iter().flatten())),
            },
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n";
    pub(crate) const GROUP: &str = "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n";
    pub(crate) const SHADOW: &str =
        "root:*:19000:0:99999:7:::\nalice:$6$abc$def:19000:0:99999:7:::\n";

    pub(crate) fn files(passwd: &str, group: &str, shadow: &str, sudoers: &str) -> Files {
        Files {
            passwd: Some(passwd.into()),
            group: Some(group.into()),
            shadow: Some(shadow.into()),
            sudoers: vec![("/etc/sudoers".into(), sudoers.into())],
        }
    }

    fn summary(obs: &[Observation]) -> Vec<(Kind, Change, String, Vec<String>)> {
        obs.iter()
            .map(|o| {
                (
                    o.kind,
                    o.change,
                    o.subject.clone(),
                    o.fields.keys().cloned().collect(),
                )
            })
            .collect()
    }

    #[test]
    fn first_reading_records_then_changes_are_precise() {
        let mut d = Detector::default();
        let base = files(PASSWD, GROUP, SHADOW, "root ALL=(ALL:ALL) ALL\n");
        assert!(d.handle(&base, Layer::Realtime).is_empty());

        let added = files(
            &format!("{PASSWD}deploy:x:1001:1001::/home/deploy:/bin/sh\n"),
            GROUP,
            &format!("{SHADOW}deploy:!:19000::::::\n"),
            "root ALL=(ALL:ALL) ALL\n",
        );
        let out = d.handle(&added, Layer::Realtime);
        assert_eq!(
            summary(&out),
            [(
                Kind::User,
                Change::Added,
                "deploy".into(),
                ["gecos", "gid", "home", "password", "shell", "uid"]
                    .map(String::from)
                    .to_vec()
            )]
        );
        assert_eq!(
            out[0].fields["shell"].after,
            Some(Value::Text("/bin/sh".into()))
        );
        assert_eq!(
            out[0].fields["password"].after,
            Some(Value::Text("locked".into()))
        );

        let changed = files(
            &format!("{}deploy:x:1001:1001::/home/deploy:/bin/bash\n", PASSWD),
            "root:x:0:\nsudo:x:27:alice,deploy\nalice:x:1000:\n",
            &format!("{SHADOW}deploy:!:19000::::::\n"),
            "root ALL=(ALL:ALL) ALL\ndeploy ALL=(ALL) NOPASSWD: /usr/bin/systemctl\n",
        );
        let out = d.handle(&changed, Layer::Realtime);
        assert_eq!(
            summary(&out),
            [
                (
                    Kind::User,
                    Change::Modified,
                    "deploy".into(),
                    vec!["shell".into(), "sudo".into()]
                ),
                (
                    Kind::Group,
                    Change::Modified,
                    "sudo".into(),
                    vec!["members".into()]
                ),
            ]
        );
        assert_eq!(out[0].severity, Severity::High, "sudo rights are serious");
        assert_eq!(
            out[1].fields["members"].after,
            Some(Value::List(vec!["alice".into(), "deploy".into()]))
        );
    }

    #[test]
    fn password_changes_are_reported_without_the_hash() {
        let mut d = Detector::default();
        d.handle(&files(PASSWD, GROUP, SHADOW, ""), Layer::Realtime);
        let out = d.handle(
            &files(
                PASSWD,
                GROUP,
                &SHADOW.replace("$6$abc$def", "$6$xyz$uvw"),
                "",
            ),
            Layer::Realtime,
        );
        assert_eq!(out.len(), 1);
        let f = &out[0].fields["password"];
        assert_eq!(f.before, Some(Value::Text("set".into())));
        assert_eq!(f.after, Some(Value::Text("set (changed)".into())));
        let shown = format!("{out:?}");
        assert!(!shown.contains("xyz") && !shown.contains("abc"), "{shown}");
    }

    #[test]
    fn malformed_lines_are_reported_once_and_skipped() {
        let mut d = Detector::default();
        let junk = format!("{PASSWD}broken-line\n\u{fffd}\u{fffd}:x:y:z\n");
        let out = d.handle(&files(&junk, GROUP, SHADOW, "nonsense\n"), Layer::Realtime);
        let subjects: Vec<&str> = out.iter().map(|o| o.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["/etc/passwd:3", "/etc/passwd:4", "/etc/sudoers:1"]
        );
        assert!(out.iter().all(|o| o.kind == Kind::Coverage));
        // The good lines still count, and the same problems are not reported again.
        assert_eq!(d.snapshot().map(|s| s.users.len()), Some(2));
        assert!(
            d.handle(&files(&junk, GROUP, SHADOW, "nonsense\n"), Layer::Realtime)
                .is_empty()
        );
    }

    #[test]
    fn sudoers_continuations_aliases_and_groups() {
        let text = "Defaults env_reset\nUser_Alias OPS = a, b\n%admin ALL=(ALL) \\\n  ALL\n# comment\n@includedir /etc/sudoers.d\n";
        let (snap, problems) = parse(&Files {
            sudoers: vec![("/etc/sudoers".into(), text.into())],
            ..Files::default()
        });
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            snap.sudo
                .get("%admin")
                .map(|r| r.iter().cloned().collect::<Vec<_>>()),
            Some(vec!["ALL=(ALL) ALL".to_string()])
        );
    }
}
