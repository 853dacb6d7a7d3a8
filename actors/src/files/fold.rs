//! Keeping the saved file baseline and the journal in agreement across a crash.
//!
//! Every file change is journaled (and published) at once, but the baseline is saved only
//! every few seconds. After a crash the saved baseline can therefore lag the journal: the
//! start-up verification would find the last changes again and report them a second time,
//! as made while the node was down. So the saved baseline records the highest spike
//! number it reflects ([`Saved::seq`]), and at start the file spikes numbered above it are
//! folded into it ([`fold`]): the verification then compares the disk with the state
//! already reported.
//!
//! Folding is idempotent in this sense: applying, in sequence order, spikes the baseline
//! already reflects leaves it as it was once the later spikes are applied too, so a `seq`
//! that is too low costs nothing; one that is too high would miss changes.
//!
//! A spike carries only what its report shows (kind, size, permission bits, owner, group,
//! digest), not the file-type bits of the mode; those come from the state before the
//! change, or from the kind. Differences a report cannot show are no change ([`diff`]).
//!
//! No I/O: the caller reads the journal and hands the spikes over.
//!
//! [`diff`]: super::diff

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EntryKind, FIELDS, State};
use crate::spike::{Change, Kind, Spike, Value};

/// The file baseline as saved, with the journal position it reflects. `B` is the map
/// itself when loading and a reference to it when saving.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved<B = BTreeMap<String, State>> {
    /// Every file change numbered at or below this is in `baseline`, and no later one.
    pub seq: u64,
    pub baseline: B,
}

/// What a fold did, for the start-up log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// File spikes applied.
    pub applied: u64,
    /// The highest number applied (0: none).
    pub last: u64,
}

impl Folded {
    /// Applies `spike` if it is a file spike numbered above `after`; spikes must come in
    /// sequence order.
    pub fn apply(&mut self, baseline: &mut BTreeMap<String, State>, after: u64, spike: &Spike) {
        if spike.kind != Kind::File || spike.seq <= after {
            return;
        }
        match reported(baseline.get(&spike.subject), spike) {
            Some(s) => baseline.insert(spike.subject.clone(), s),
            None => baseline.remove(&spike.subject),
        };
        self.applied += 1;
        self.last = self.last.max(spike.seq);
    }
}

/// Folds the file spikes of `spikes` (in sequence order) numbered above `after` into
/// `baseline`.
pub fn fold<'a>(
    baseline: &mut BTreeMap<String, State>,
    after: u64,
    spikes: impl IntoIterator<Item = &'a Spike>,
) -> Folded {
    let mut folded = Folded::default();
    for s in spikes {
        folded.apply(baseline, after, s);
    }
    folded
}

/// The state a file spike reported, given the state before it.
fn reported(before: Option<&State>, spike: &Spike) -> Option<State> {
    if spike.change == Change::Removed {
        return None;
    }
    let mut s = before.cloned().unwrap_or(State {
        kind: EntryKind::File,
        size: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        digest: None,
    });
    let kind_before = s.kind.clone();
    let field = |name: &str| spike.fields.get(name).and_then(|f| f.after.as_ref());
    let int = |name: &str| match field(name) {
        Some(Value::Int(i)) => u64::try_from(*i).ok(),
        _ => None,
    };
    if let Some(Value::Text(k)) = field(FIELDS[0]) {
        s.kind = kind_from_name(k);
    }
    if let Some(size) = int(FIELDS[1]) {
        s.size = size;
    }
    let perm = match field(FIELDS[2]) {
        Some(Value::Text(m)) => u32::from_str_radix(m, 8).ok(),
        _ => None,
    };
    let type_bits = match (&s.kind, before) {
        (k, Some(b)) if *k == kind_before => b.mode & !0o7777,
        (EntryKind::File, _) => 0o100_000,
        (EntryKind::Dir, _) => 0o040_000,
        (EntryKind::Symlink { .. }, _) => 0o120_000,
        _ => s.mode & !0o7777,
    };
    s.mode = type_bits | perm.unwrap_or(s.mode & 0o7777);
    if let Some(uid) = int(FIELDS[3]).and_then(|v| u32::try_from(v).ok()) {
        s.uid = uid;
    }
    if let Some(gid) = int(FIELDS[4]).and_then(|v| u32::try_from(v).ok()) {
        s.gid = gid;
    }
    // A file spike carries the digest after the change whether or not it changed.
    s.digest = spike.after;
    Some(s)
}

/// The inverse of the kind's name in a report.
fn kind_from_name(name: &str) -> EntryKind {
    match name {
        "file" => EntryKind::File,
        "dir" => EntryKind::Dir,
        "other" => EntryKind::Other,
        _ => {
            if let Some(target) = name.strip_prefix("symlink -> ") {
                EntryKind::Symlink {
                    target: target.to_string(),
                }
            } else {
                EntryKind::Unreadable {
                    reason: name
                        .strip_prefix("unreadable: ")
                        .unwrap_or(name)
                        .to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{Cause, Detector, Input, Scan};
    use crate::spike::{Digest, Layer};

    fn state(kind: EntryKind, content: Option<u8>, mode: u32) -> State {
        State {
            kind,
            size: 10 + u64::from(content.unwrap_or(0)),
            mode,
            uid: 1000,
            gid: 100,
            digest: content.map(|c| Digest([c; 32])),
        }
    }

    /// The spikes a detector reports, numbered from `first`.
    fn numbered(obs: Vec<crate::spike::Observation>, first: &mut u64) -> Vec<Spike> {
        obs.into_iter()
            .map(|o| {
                let mut s = Spike::bare("me", *first, o.kind, o.change, &o.subject);
                s.before = o.before;
                s.after = o.after;
                s.fields = o.fields;
                s.layers = vec![o.layer];
                *first += 1;
                s
            })
            .collect()
    }

    fn check(d: &mut Detector, path: &str, s: Option<State>, seq: &mut u64) -> Vec<Spike> {
        numbered(
            d.handle(Input::Checked {
                path: path.into(),
                state: s,
                cause: Cause::Content,
            }),
            seq,
        )
    }

    /// The crash: the baseline saved at `saved_at` lags the journal; folding the journal
    /// into it gives the baseline as it stood, and the start-up verification against the
    /// unchanged disk reports nothing.
    #[test]
    fn a_lagging_baseline_folded_with_the_journal_reports_nothing_again() {
        let mut d = Detector::default();
        let mut disk = BTreeMap::new();
        disk.insert("/etc".to_string(), state(EntryKind::Dir, None, 0o040_755));
        disk.insert(
            "/etc/a".to_string(),
            state(EntryKind::File, Some(1), 0o100_644),
        );
        disk.insert(
            "/etc/gone".to_string(),
            state(EntryKind::File, Some(1), 0o100_600),
        );
        disk.insert("/etc/d".to_string(), state(EntryKind::Dir, None, 0o040_700));
        disk.insert(
            "/etc/d/x".to_string(),
            state(EntryKind::File, Some(3), 0o100_644),
        );
        d.handle(Input::Scanned {
            states: disk.clone(),
            scan: Scan::Startup,
        });
        let mut seq = 1;
        let mut journal = Vec::new();
        // Saved here, reflecting nothing numbered yet.
        let saved = Saved {
            seq: seq - 1,
            baseline: d.baseline().clone(),
        };
        let changes: Vec<(&str, Option<State>)> = vec![
            ("/etc/a", Some(state(EntryKind::File, Some(2), 0o100_644))),
            ("/etc/a", Some(state(EntryKind::File, Some(2), 0o100_600))),
            ("/etc/new", Some(state(EntryKind::File, Some(5), 0o104_755))),
            ("/etc/gone", None),
            (
                "/etc/link",
                Some(state(
                    EntryKind::Symlink {
                        target: "/etc/a -> b".into(),
                    },
                    None,
                    0o120_777,
                )),
            ),
            ("/etc/d", None),
            ("/etc/d", Some(state(EntryKind::Dir, None, 0o040_755))),
            (
                "/etc/bad",
                Some(state(
                    EntryKind::Unreadable {
                        reason: "Permission denied (os error 13)".into(),
                    },
                    None,
                    0,
                )),
            ),
        ];
        for (path, s) in changes {
            match &s {
                Some(s) => disk.insert(path.to_string(), s.clone()),
                None => disk.remove(path),
            };
            journal.extend(check(&mut d, path, s, &mut seq));
        }
        disk.remove("/etc/d/x");
        // Other spikes in the journal (not file changes) are left alone.
        journal.push(Spike::bare(
            "me",
            seq,
            Kind::Metric,
            Change::Sample,
            "/etc/a",
        ));
        assert_eq!(d.baseline(), &disk, "the detector followed the disk");

        let mut baseline = saved.baseline.clone();
        let folded = fold(&mut baseline, saved.seq, &journal);
        assert_eq!(folded.applied, journal.len() as u64 - 1);
        assert_eq!(folded.last, seq - 1);
        assert_eq!(baseline, disk, "the fold rebuilt the baseline exactly");
        let mut restarted = Detector::new(baseline);
        let again = restarted.handle(Input::Scanned {
            states: disk.clone(),
            scan: Scan::Startup,
        });
        assert!(again.is_empty(), "reported twice: {again:?}");

        // Without the fold the same start reports every change again.
        let mut unfolded = Detector::new(saved.baseline);
        let twice = unfolded.handle(Input::Scanned {
            states: disk,
            scan: Scan::Startup,
        });
        assert_eq!(twice.len(), 7, "{twice:?}");
    }

    #[test]
    fn spikes_the_baseline_already_reflects_change_nothing() {
        let mut d = Detector::new(BTreeMap::from([(
            "/etc/a".to_string(),
            state(EntryKind::File, Some(1), 0o100_644),
        )]));
        let mut seq = 1;
        let mut journal = check(
            &mut d,
            "/etc/a",
            Some(state(EntryKind::File, Some(2), 0o100_644)),
            &mut seq,
        );
        let saved_at = seq - 1;
        let saved = d.baseline().clone();
        journal.extend(check(
            &mut d,
            "/etc/a",
            Some(state(EntryKind::File, Some(2), 0o100_600)),
            &mut seq,
        ));
        // A baseline saved after the first change, folded from its own position or from
        // before it (a position too low), ends the same.
        for after in [saved_at, 0] {
            let mut b = saved.clone();
            fold(&mut b, after, &journal);
            assert_eq!(&b, d.baseline(), "folded after {after}");
        }
        // A baseline saved after every change stays as it is.
        let mut b = d.baseline().clone();
        assert_eq!(fold(&mut b, seq - 1, &journal).applied, 0);
        assert_eq!(&b, d.baseline());
    }

    /// The baseline is saved as it stands with a number that may lag it (the encoder's
    /// numbering asked for before the last changes): for every point a baseline may be
    /// saved at, and every number at or below what it reflects, folding the journal gives
    /// the final baseline. Re-applying spikes already reflected is idempotent, including
    /// removals, re-additions, kind changes and owner changes.
    #[test]
    fn folding_from_a_number_below_what_the_baseline_reflects_is_idempotent() {
        let mut d = Detector::new(BTreeMap::from([
            ("/etc".to_string(), state(EntryKind::Dir, None, 0o040_755)),
            (
                "/etc/a".to_string(),
                state(EntryKind::File, Some(1), 0o100_644),
            ),
            (
                "/etc/b".to_string(),
                state(EntryKind::File, Some(7), 0o100_600),
            ),
        ]));
        let mut owner = state(EntryKind::File, Some(3), 0o100_644);
        owner.uid = 0;
        owner.gid = 0;
        let changes: Vec<(&str, Option<State>)> = vec![
            ("/etc/a", Some(state(EntryKind::File, Some(2), 0o100_644))),
            ("/etc/a", Some(state(EntryKind::File, Some(2), 0o100_600))),
            ("/etc/a", None),
            ("/etc/a", Some(state(EntryKind::File, Some(4), 0o100_640))),
            ("/etc/b", Some(state(EntryKind::Dir, None, 0o040_700))),
            (
                "/etc/b",
                Some(state(
                    EntryKind::Symlink {
                        target: "/etc/a".into(),
                    },
                    None,
                    0o120_777,
                )),
            ),
            ("/etc/b", Some(state(EntryKind::File, Some(5), 0o104_755))),
            ("/etc/c", Some(state(EntryKind::File, Some(3), 0o100_644))),
            ("/etc/c", Some(owner)),
            ("/etc/c", None),
            ("/etc/a", Some(state(EntryKind::File, Some(4), 0o100_644))),
        ];
        let mut seq = 1;
        let mut journal = Vec::new();
        // (the baseline after each change, the highest number it reflects)
        let mut points = vec![(d.baseline().clone(), 0)];
        for (path, s) in changes {
            journal.extend(check(&mut d, path, s, &mut seq));
            points.push((d.baseline().clone(), seq - 1));
        }
        assert_eq!(journal.len(), 11, "every change is a spike: {journal:?}");
        let last = d.baseline();
        for (baseline, reflects) in &points {
            for after in 0..=*reflects {
                let mut b = baseline.clone();
                fold(&mut b, after, &journal);
                assert_eq!(
                    &b, last,
                    "saved reflecting {reflects}, folded after {after}"
                );
                // Folding twice changes nothing more.
                fold(&mut b, after, &journal);
                assert_eq!(&b, last, "folded twice after {after}");
            }
        }
    }

    #[test]
    fn a_difference_no_report_can_show_is_no_change() {
        let a = state(EntryKind::Other, None, 0o010_644);
        let b = state(EntryKind::Other, None, 0o140_644);
        assert!(crate::files::diff("/etc/p", Some(&a), Some(&b), Layer::Hash).is_none());
        let c = state(EntryKind::Other, None, 0o140_640);
        assert!(crate::files::diff("/etc/p", Some(&a), Some(&c), Layer::Hash).is_some());
    }

    #[test]
    fn the_saved_form_reads_back() {
        let baseline = BTreeMap::from([(
            "/etc/a".to_string(),
            state(EntryKind::File, Some(1), 0o100_644),
        )]);
        let bytes = rmp_serde::to_vec(&Saved {
            seq: 42,
            baseline: &baseline,
        })
        .expect("encodes");
        let back: Saved = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!((back.seq, back.baseline), (42, baseline));
    }
}
