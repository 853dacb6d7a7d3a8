//! Keeping the saved accounts snapshot and the journal in agreement across a crash.
//!
//! Account changes are journaled (and published) as soon as they are read, and the
//! snapshot is saved after that. After a crash the saved snapshot can therefore lag the
//! journal: the start-up reading would find the last changes again and report them a
//! second time, as made while the node was down. So the saved snapshot records the
//! highest spike number it reflects ([`Saved::seq`]), and at start the user and group
//! spikes numbered above it are folded into it ([`fold`]): the start-up reading then
//! compares the files with the state already reported.
//!
//! Every field a spike shows carries its whole value after the change (a record, a member
//! list, the sudo rules of a subject), never a delta, so applying in sequence order spikes
//! the snapshot already reflects leaves it as it was once the later spikes are applied
//! too: a `seq` that is too low costs nothing; one that is too high would miss changes.
//!
//! One thing a spike does not carry: a password's fingerprint (only its state). A folded
//! password change leaves the fingerprint unknown (`None`), which matches any; so a
//! second change of that password while the node was down, within the seconds between
//! the first one's journaling and the save, is not seen at that start.
//!
//! No I/O: the caller reads the journal and hands the spikes over.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Group, Password, Snapshot, User};
use crate::spike::{FieldChange, Kind, Spike, Value};

/// The accounts snapshot as saved, with the journal position it reflects. `S` is the
/// snapshot itself when loading and a reference to it when saving. (Earlier versions saved
/// the bare [`Snapshot`]: the caller reads that as reflecting nothing numbered.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved<S = Snapshot> {
    /// Every account change numbered at or below this is in `snapshot`.
    pub seq: u64,
    pub snapshot: S,
}

/// What a fold did, for the start-up log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// User and group spikes applied.
    pub applied: u64,
    /// The highest number applied (0: none).
    pub last: u64,
}

impl Folded {
    /// Applies `spike` if it is a user or group spike numbered above `after`; spikes must
    /// come in sequence order.
    pub fn apply(&mut self, snapshot: &mut Snapshot, after: u64, spike: &Spike) {
        if spike.seq <= after {
            return;
        }
        match spike.kind {
            Kind::User => user(snapshot, &spike.subject, &spike.fields),
            Kind::Group => group(snapshot, &spike.subject, &spike.fields),
            _ => return,
        }
        self.applied += 1;
        self.last = self.last.max(spike.seq);
    }
}

/// Folds the user and group spikes of `spikes` (in sequence order) numbered above `after`
/// into `snapshot`.
pub fn fold<'a>(
    snapshot: &mut Snapshot,
    after: u64,
    spikes: impl IntoIterator<Item = &'a Spike>,
) -> Folded {
    let mut folded = Folded::default();
    for s in spikes {
        folded.apply(snapshot, after, s);
    }
    folded
}

const USER_FIELDS: [&str; 5] = ["uid", "gid", "gecos", "home", "shell"];

fn int(v: &Value) -> Option<u32> {
    match v {
        Value::Int(i) => u32::try_from(*i).ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

fn set(v: &Value) -> Option<BTreeSet<String>> {
    match v {
        Value::List(l) => Some(l.iter().cloned().collect()),
        _ => None,
    }
}

/// A user spike: its passwd record, password and sudo rules, each as shown.
fn user(snap: &mut Snapshot, name: &str, fields: &BTreeMap<String, FieldChange>) {
    let shown: Vec<(&str, Option<&Value>)> = USER_FIELDS
        .iter()
        .filter_map(|f| fields.get(*f).map(|c| (*f, c.after.as_ref())))
        .collect();
    if shown.iter().any(|(_, after)| after.is_none()) {
        // The record is gone (every field shows no value after).
        snap.users.remove(name);
    } else if !shown.is_empty() {
        let mut u = snap.users.get(name).cloned();
        if u.is_none() && shown.len() == USER_FIELDS.len() {
            u = Some(User {
                uid: 0,
                gid: 0,
                gecos: String::new(),
                home: String::new(),
                shell: String::new(),
            });
        }
        // A change to a record the snapshot does not hold is one it already reflects,
        // followed by the record's removal: nothing to do.
        if let Some(mut u) = u {
            for (f, after) in shown {
                let Some(v) = after else { continue };
                match f {
                    "uid" => u.uid = int(v).unwrap_or(u.uid),
                    "gid" => u.gid = int(v).unwrap_or(u.gid),
                    "gecos" => u.gecos = text(v).map_or(u.gecos, str::to_string),
                    "home" => u.home = text(v).map_or(u.home, str::to_string),
                    _ => u.shell = text(v).map_or(u.shell, str::to_string),
                }
            }
            snap.users.insert(name.to_string(), u);
        }
    }
    if let Some(p) = fields.get("password") {
        match p.after.as_ref().and_then(text) {
            Some(state) => {
                let state = state.strip_suffix(" (changed)").unwrap_or(state);
                snap.passwords.insert(
                    name.to_string(),
                    Password {
                        state: state.to_string(),
                        fingerprint: None,
                    },
                );
            }
            None => {
                snap.passwords.remove(name);
            }
        }
    }
    sudo(snap, name, fields);
}

/// A group spike: its gid and members, and the sudo rules of `%group`.
fn group(snap: &mut Snapshot, name: &str, fields: &BTreeMap<String, FieldChange>) {
    let (gid, members) = (fields.get("gid"), fields.get("members"));
    if [gid, members].iter().flatten().any(|c| c.after.is_none()) {
        snap.groups.remove(name);
    } else {
        let gid = gid.and_then(|c| c.after.as_ref()).and_then(int);
        let members = members.and_then(|c| c.after.as_ref()).and_then(set);
        match (snap.groups.get_mut(name), gid) {
            (Some(g), _) => {
                g.gid = gid.unwrap_or(g.gid);
                g.members = members.unwrap_or_else(|| g.members.clone());
            }
            // An addition shows the gid (and the members, maybe none).
            (None, Some(gid)) => {
                snap.groups.insert(
                    name.to_string(),
                    Group {
                        gid,
                        members: members.unwrap_or_default(),
                    },
                );
            }
            (None, None) => {}
        }
    }
    sudo(snap, &format!("%{name}"), fields);
}

/// The sudo rules of `key` as a spike shows them (all of them after the change).
fn sudo(snap: &mut Snapshot, key: &str, fields: &BTreeMap<String, FieldChange>) {
    let Some(rules) = fields
        .get("sudo")
        .and_then(|c| c.after.as_ref())
        .and_then(set)
    else {
        return;
    };
    if rules.is_empty() {
        snap.sudo.remove(key);
    } else {
        snap.sudo.insert(key.to_string(), rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::tests::{GROUP, PASSWD, SHADOW, files};
    use crate::accounts::{Detector, Files, diff};
    use crate::spike::{Change, Layer, Observation};

    /// The spikes of `obs`, numbered from `next`.
    fn numbered(obs: Vec<Observation>, next: &mut u64) -> Vec<Spike> {
        obs.into_iter()
            .map(|o| {
                let mut s = Spike::bare("me", *next, o.kind, o.change, &o.subject);
                s.fields = o.fields;
                s.layers = vec![o.layer];
                *next += 1;
                s
            })
            .collect()
    }

    /// The snapshot with every fingerprint forgotten.
    fn blind(s: &Snapshot) -> Snapshot {
        let mut s = s.clone();
        for p in s.passwords.values_mut() {
            p.fingerprint = None;
        }
        s
    }

    /// A history of the account files touching every kind of field: additions, edits,
    /// removals and re-additions of users, passwords (state and hash), groups (gid,
    /// members) and sudo rules of users and groups.
    fn history() -> Vec<Files> {
        let deploy = "deploy:x:1001:1001::/home/deploy:/bin/sh\n";
        let ops = "ops:x:1002:\n";
        vec![
            files(PASSWD, GROUP, SHADOW, "root ALL=(ALL:ALL) ALL\n"),
            files(
                &format!("{PASSWD}{deploy}"),
                GROUP,
                &format!("{SHADOW}deploy:!:19000::::::\n"),
                "root ALL=(ALL:ALL) ALL\n",
            ),
            files(
                &format!("{PASSWD}{}", deploy.replace("/bin/sh", "/bin/bash")),
                &format!(
                    "{}{ops}",
                    GROUP.replace("sudo:x:27:alice", "sudo:x:27:alice,deploy")
                ),
                &format!("{SHADOW}deploy:$6$s$h:19000::::::\n"),
                "root ALL=(ALL:ALL) ALL\ndeploy ALL=(ALL) NOPASSWD: /bin/ls\n%ops ALL=(ALL) ALL\n",
            ),
            files(
                &format!("{PASSWD}{}", deploy.replace("/bin/sh", "/bin/bash")),
                &format!("{GROUP}{}", ops.replace("1002:", "1003:deploy")),
                &format!(
                    "{}deploy:$6$s$other:19000::::::\n",
                    SHADOW.replace("$6$abc$def", "!$6$abc$def")
                ),
                "root ALL=(ALL:ALL) ALL\n%ops ALL=(ALL) ALL\n",
            ),
            files(
                PASSWD,
                GROUP,
                &SHADOW.replace("$6$abc$def", "!$6$abc$def"),
                "root ALL=(ALL:ALL) ALL\n",
            ),
            files(
                &format!("{PASSWD}{}", deploy.replace("1001:1001", "1005:1005")),
                &format!("{GROUP}{ops}"),
                &format!("{SHADOW}deploy:!:19000::::::\n"),
                "root ALL=(ALL:ALL) ALL\ndeploy ALL=(ALL) ALL\n",
            ),
        ]
    }

    /// Every reading of `history` after the first: (its spikes, the snapshot after it,
    /// the highest number it reflects); numbers start at 1.
    fn run(history: &[Files]) -> (Detector, Vec<Spike>, Vec<(Snapshot, u64)>) {
        let mut d = Detector::default();
        assert!(d.handle(&history[0], Layer::Realtime).is_empty());
        let mut next = 1;
        let mut journal = Vec::new();
        let mut points = vec![(d.snapshot().cloned().expect("read"), 0)];
        for f in &history[1..] {
            let spikes = numbered(d.handle(f, Layer::Realtime), &mut next);
            assert!(!spikes.is_empty(), "every step changes something");
            journal.extend(spikes);
            points.push((d.snapshot().cloned().expect("read"), next - 1));
        }
        (d, journal, points)
    }

    /// The crash: the snapshot saved before the last changes lags the journal; folding the
    /// journal into it gives the snapshot as it stood, and the start-up reading of the
    /// unchanged files reports nothing. Without the fold it reports them all again.
    #[test]
    fn a_lagging_snapshot_folded_with_the_journal_reports_nothing_again() {
        let history = history();
        let (d, mut journal, points) = run(&history);
        let last = history.last().expect("files");
        // Other spikes in the journal are left alone: files and coverage, even about
        // account files or names.
        let n = journal.len() as u64;
        journal.push(Spike::bare(
            "me",
            n + 1,
            Kind::File,
            Change::Removed,
            "alice",
        ));
        journal.push(Spike::bare(
            "me",
            n + 2,
            Kind::Coverage,
            Change::Modified,
            "/etc/passwd:3",
        ));

        let (saved, seq) = points[1].clone();
        let mut snapshot = saved.clone();
        let folded = fold(&mut snapshot, seq, &journal);
        assert_eq!(folded.applied, n - seq);
        assert_eq!(folded.last, n);
        assert_eq!(blind(&snapshot), blind(d.snapshot().expect("read")));
        let mut restarted = Detector::new(Some(snapshot));
        let again = restarted.handle(last, Layer::Hash);
        assert!(again.is_empty(), "reported twice: {again:?}");
        // The reading knows the fingerprints again.
        assert_eq!(restarted.snapshot(), d.snapshot());

        let mut unfolded = Detector::new(Some(saved));
        let twice = unfolded.handle(last, Layer::Hash);
        // deploy's new uid, gid and sudo rule; the group ops back.
        assert_eq!(twice.len(), 2, "{twice:?}");
    }

    /// The snapshot is saved as it stands with a number that may lag it (the encoder's
    /// numbering asked for before the last changes): for every point a snapshot may be
    /// saved at and every number at or below what it reflects, folding the journal gives
    /// the last snapshot (fingerprints apart: a folded password change does not know
    /// its fingerprint), and nothing to report against it. Folding twice changes nothing.
    #[test]
    fn folding_from_a_number_below_what_the_snapshot_reflects_is_idempotent() {
        let history = history();
        let (d, journal, points) = run(&history);
        let last = d.snapshot().expect("read");
        for (snapshot, reflects) in &points {
            for after in 0..=*reflects {
                let mut s = snapshot.clone();
                fold(&mut s, after, &journal);
                let at = format!("saved reflecting {reflects}, folded after {after}");
                assert_eq!(blind(&s), blind(last), "{at}");
                assert!(diff(&s, last, Layer::Hash).is_empty(), "{at}");
                let once = s.clone();
                fold(&mut s, after, &journal);
                assert_eq!(s, once, "{at}: folded twice");
            }
        }
        // A snapshot saved after every change stays exactly as it is.
        let (s, reflects) = points.last().cloned().expect("points");
        let mut exact = s.clone();
        assert_eq!(fold(&mut exact, reflects, &journal).applied, 0);
        assert_eq!(&exact, last);
    }

    /// A folded password change does not know the fingerprint, so it matches the file's;
    /// a known fingerprint that differs is a change.
    #[test]
    fn an_unknown_fingerprint_matches_and_a_known_one_is_compared() {
        let base = files(PASSWD, GROUP, SHADOW, "");
        let mut d = Detector::default();
        d.handle(&base, Layer::Hash);
        let mut snap = d.snapshot().cloned().expect("read");
        let changed = files(PASSWD, GROUP, &SHADOW.replace("$6$abc$def", "$6$x$y"), "");
        let obs = d.handle(&changed, Layer::Realtime);
        assert_eq!(
            obs[0].fields["password"].after,
            Some(Value::Text("set (changed)".into()))
        );
        fold(&mut snap, 0, &numbered(obs, &mut 1));
        assert_eq!(snap.passwords["alice"].fingerprint, None);
        assert_eq!(snap.passwords["alice"].state, "set");
        assert!(
            Detector::new(Some(snap.clone()))
                .handle(&changed, Layer::Hash)
                .is_empty()
        );
        assert!(
            Detector::new(Some(snap.clone()))
                .handle(&base, Layer::Hash)
                .is_empty()
        );
        // A state change is still seen.
        let locked = files(PASSWD, GROUP, &SHADOW.replace("$6$abc$def", "!"), "");
        let out = Detector::new(Some(snap)).handle(&locked, Layer::Hash);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            out[0].fields["password"].after,
            Some(Value::Text("locked".into()))
        );
    }

    #[test]
    fn the_saved_form_reads_back_and_older_snapshots_still_load() {
        let mut d = Detector::default();
        d.handle(
            &files(PASSWD, GROUP, SHADOW, "alice ALL=(ALL) ALL\n"),
            Layer::Hash,
        );
        let snapshot = d.snapshot().cloned().expect("read");
        let bytes = rmp_serde::to_vec(&Saved {
            seq: 42,
            snapshot: &snapshot,
        })
        .expect("encodes");
        let back: Saved = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!((back.seq, &back.snapshot), (42, &snapshot));
        assert!(rmp_serde::from_slice::<Snapshot>(&bytes).is_err());

        // The form earlier versions saved: the bare snapshot, fingerprints as arrays.
        #[derive(Serialize)]
        struct OldPassword {
            state: String,
            fingerprint: [u8; 32],
        }
        #[derive(Serialize)]
        struct OldSnapshot {
            users: BTreeMap<String, User>,
            groups: BTreeMap<String, Group>,
            passwords: BTreeMap<String, OldPassword>,
            sudo: BTreeMap<String, BTreeSet<String>>,
        }
        let old = OldSnapshot {
            users: snapshot.users.clone(),
            groups: snapshot.groups.clone(),
            passwords: snapshot
                .passwords
                .iter()
                .map(|(n, p)| {
                    let fingerprint = p.fingerprint.expect("read from a file");
                    (
                        n.clone(),
                        OldPassword {
                            state: p.state.clone(),
                            fingerprint,
                        },
                    )
                })
                .collect(),
            sudo: snapshot.sudo.clone(),
        };
        let bytes = rmp_serde::to_vec(&old).expect("encodes");
        assert!(rmp_serde::from_slice::<Saved>(&bytes).is_err());
        let back: Snapshot = rmp_serde::from_slice(&bytes).expect("an older snapshot loads");
        assert_eq!(back, snapshot);
    }
}
