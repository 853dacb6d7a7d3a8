//! The file detector's logic: a baseline of file states, and what differs from it.
//!
//! Two layers feed it. The realtime layer re-reads one path after a watch event
//! ([`Input::Checked`]); the hash layer re-reads everything (a full scan at start-up and
//! periodically, [`Input::Scanned`]). Each returns observations for what changed. The two
//! are reconciled here too: a change that only the hash layer finds was *missed by
//! realtime*; a watch event after which nothing differs is a *realtime event without state
//! change*. Every such discrepancy is reported, and counted per layer.
//!
//! The baseline is saved with the journal position it reflects, and brought up to date
//! from the journal at start ([`fold`]), so that a crash never makes a change reported
//! twice.
//!
//! No I/O: the caller stats and hashes files and hands over [`State`]s.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::spike::{Change, Digest, FieldChange, Kind, Layer, Observation, Severity, Value};

mod fold;
pub use fold::{Folded, Saved, fold};

/// What is known about one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// sha256 of the contents (files under the size cap only).
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink {
        target: String,
    },
    /// Sockets, fifos, devices.
    Other,
    /// Exists but could not be read (permissions, vanished mid-read); the text says why.
    Unreadable {
        reason: String,
    },
}

/// Per-layer counters, shown by the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub realtime_events: u64,
    pub realtime_changes: u64,
    pub realtime_without_change: u64,
    pub scans: u64,
    pub scan_changes: u64,
    /// Differences the most recent full scan found (0: baseline and disk agreed).
    pub last_scan_changes: u64,
    pub missed_by_realtime: u64,
    /// Full scans forced because events were lost (queue overflow).
    pub overflow_rescans: u64,
    /// Scans of subtrees that could not be watched (the watch limit), in place of events.
    pub fallback_scans: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The realtime layer re-read `path` after an event; `None`: it does not exist.
    Checked {
        path: String,
        state: Option<State>,
        cause: Cause,
    },
    /// A full scan of everything watched (the hash layer).
    Scanned {
        states: BTreeMap<String, State>,
        scan: Scan,
    },
    /// A scan of one subtree that has no watch (`root` and everything under it): there,
    /// scanning is the only layer, so what it finds is a change, not a miss.
    Subtree {
        root: String,
        states: BTreeMap<String, State>,
    },
    /// One part of the start-up verification (`root` and everything under it), handed
    /// over as soon as it is read so that changes made while the node was down are
    /// reported as they are found; the `Scanned { scan: Startup }` that follows the parts
    /// holds everything and reports only what no part covered.
    StartupPart {
        root: String,
        states: BTreeMap<String, State>,
    },
}

/// What kind of watch event made the realtime layer look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Contents or existence: written and closed, created, removed, renamed.
    Content,
    /// Attributes only. Timestamps are not part of a file's state, so an attribute event
    /// that changes nothing tracked is expected and not a discrepancy.
    Metadata,
}

/// Why a full scan ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// At start-up, against the persisted baseline: differences happened while the node
    /// was down, and are reported as such.
    Startup,
    /// The periodic verification: differences are changes the realtime layer missed.
    Periodic,
    /// Events were lost (a queue overflowed): like a periodic verification, counted apart.
    Overflow,
}

/// The baseline and its bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    baseline: BTreeMap<String, State>,
    counters: Counters,
    /// During a start-up verification handed over in parts: whether it is the first run
    /// (an empty baseline before the first part), when nothing found is a change.
    startup_first: Option<bool>,
}

impl Detector {
    /// Starts from a persisted baseline (empty on a first start).
    pub fn new(baseline: BTreeMap<String, State>) -> Self {
        Detector {
            baseline,
            counters: Counters::default(),
            startup_first: None,
        }
    }

    pub fn baseline(&self) -> &BTreeMap<String, State> {
        &self.baseline
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn handle(&mut self, input: Input) -> Vec<Observation> {
        match input {
            Input::Checked { path, state, cause } => self.checked(path, state, cause),
            Input::Scanned { states, scan } => self.scanned(states, scan),
            Input::Subtree { root, states } => {
                self.counters.fallback_scans += 1;
                self.subtree(&root, states)
            }
            Input::StartupPart { root, states } => {
                let first = *self.startup_first.get_or_insert(self.baseline.is_empty());
                let mut out = self.subtree(&root, states);
                if first {
                    out.clear();
                }
                for obs in &mut out {
                    obs.fields
                        .insert("when".into(), FieldChange::fact("while_down"));
                }
                out
            }
        }
    }

    /// Brings the baseline under `root` to `states`, returning what differed.
    fn subtree(&mut self, root: &str, states: BTreeMap<String, State>) -> Vec<Observation> {
        let prefix = format!("{}/", root.trim_end_matches('/'));
        let under = |p: &str| p == root || p.starts_with(&prefix);
        // `/etc/a-b` sorts between `/etc/a` and `/etc/a/x`: look the root up on its own.
        let known: Vec<String> = self
            .baseline
            .get_key_value(root)
            .into_iter()
            .chain(
                self.baseline
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix)),
            )
            .map(|(k, _)| k.clone())
            .collect();
        let paths: BTreeSet<String> = known
            .into_iter()
            .chain(states.keys().filter(|k| under(k)).cloned())
            .collect();
        let mut out = Vec::new();
        for path in paths {
            let after = states.get(&path).cloned();
            if let Some(obs) = diff(&path, self.baseline.get(&path), after.as_ref(), Layer::Hash) {
                self.counters.scan_changes += 1;
                out.push(obs);
            }
            self.apply(path, after);
        }
        out
    }

    fn checked(&mut self, path: String, state: Option<State>, cause: Cause) -> Vec<Observation> {
        self.counters.realtime_events += 1;
        let before = self.baseline.get(&path);
        match diff(&path, before, state.as_ref(), Layer::Realtime) {
            Some(obs) => {
                self.counters.realtime_changes += 1;
                let mut out = vec![obs];
                // A directory that went away took its contents with it (moved out of the
                // watched tree, the watch reports the directory only).
                if state.is_none() && before.is_some_and(|b| b.kind == EntryKind::Dir) {
                    let prefix = format!("{}/", path.trim_end_matches('/'));
                    let inside: Vec<String> = self
                        .baseline
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for child in inside {
                        if let Some(o) =
                            diff(&child, self.baseline.get(&child), None, Layer::Realtime)
                        {
                            out.push(o);
                        }
                        self.baseline.remove(&child);
                    }
                }
                self.apply(path, state);
                out
            }
            None if cause == Cause::Metadata => Vec::new(),
            None => {
                // The watch said the contents changed and nothing did (same bytes
                // rewritten, a change undone before it was read): worth knowing, rarely
                // alarming.
                self.counters.realtime_without_change += 1;
                vec![discrepancy(
                    path,
                    "realtime_event_without_state_change",
                    Severity::Info,
                )]
            }
        }
    }

    /// A start-up scan with no baseline only records. A start-up scan against a baseline
    /// reports what changed while the node was down. A periodic scan reports every
    /// difference plus one reconcile observation each: the realtime layer missed it.
    fn scanned(&mut self, states: BTreeMap<String, State>, scan: Scan) -> Vec<Observation> {
        self.counters.scans += 1;
        if scan == Scan::Overflow {
            self.counters.overflow_rescans += 1;
        }
        // Parts handed over first have filled the baseline: whether this is a first run was
        // decided at the first part.
        let first = scan == Scan::Startup
            && self
                .startup_first
                .take()
                .unwrap_or(self.baseline.is_empty());
        let changes_before = self.counters.scan_changes;
        let mut out = Vec::new();
        let paths: BTreeSet<String> = self.baseline.keys().chain(states.keys()).cloned().collect();
        for path in paths {
            let before = self.baseline.get(&path);
            let after = states.get(&path);
            let Some(mut obs) = diff(&path, before, after, Layer::Hash) else {
                continue;
            };
            if first {
                continue;
            }
            self.counters.scan_changes += 1;
            if scan == Scan::Startup {
                obs.fields
                    .insert("when".into(), FieldChange::fact("while_down"));
                out.push(obs);
                continue;
            }
            self.counters.missed_by_realtime += 1;
            out.push(obs);
            out.push(discrepancy(path, "missed_by_realtime", Severity::Medium));
        }
        self.baseline = states;
        self.counters.last_scan_changes = self.counters.scan_changes - changes_before;
        out
    }

    fn apply(&mut self, path: String, state: Option<State>) {
        match state {
            Some(s) => {
                self.baseline.insert(path, s);
            }
            None => {
                self.baseline.remove(&path);
            }
        }
    }
}

/// A reconcile observation: the layers disagree about `path`.
fn discrepancy(path: String, what: &str, severity: Severity) -> Observation {
    let mut o = Observation::new(Kind::Reconcile, Change::Modified, path, Layer::Reconciler);
    o.severity = severity;
    o.fields
        .insert("discrepancy".into(), FieldChange::fact(what));
    o
}

/// The observation that takes `before` to `after`, if they differ.
pub fn diff(
    path: &str,
    before: Option<&State>,
    after: Option<&State>,
    layer: Layer,
) -> Option<Observation> {
    let change = match (before, after) {
        (None, None) => return None,
        // What no report can show (the file-type bits of the mode) is no change.
        (Some(b), Some(a)) if b == a || (b.digest == a.digest && fields_of(b) == fields_of(a)) => {
            return None;
        }
        (None, Some(_)) => Change::Added,
        (Some(_), None) => Change::Removed,
        (Some(_), Some(_)) => Change::Modified,
    };
    let mut obs = Observation::new(Kind::File, change, path, layer);
    obs.before = before.and_then(|s| s.digest);
    obs.after = after.and_then(|s| s.digest);
    obs.severity = Severity::Low;
    let b = before.map(fields_of);
    let a = after.map(fields_of);
    for i in 0..FIELDS.len() {
        let (bv, av) = (b.as_ref().map(|f| &f[i]), a.as_ref().map(|f| &f[i]));
        if bv != av {
            obs.fields.insert(
                FIELDS[i].into(),
                FieldChange {
                    before: bv.cloned(),
                    after: av.cloned(),
                },
            );
        }
    }
    if let (Some(b), Some(a)) = (before, after)
        && b.digest != a.digest
    {
        obs.fields.insert(
            "content".into(),
            FieldChange {
                before: b.digest.map(|d| Value::Text(d.to_string())),
                after: a.digest.map(|d| Value::Text(d.to_string())),
            },
        );
    }
    Some(obs)
}

const FIELDS: [&str; 5] = ["kind", "size", "mode", "uid", "gid"];

/// The values of [`FIELDS`] for `s`, in that order.
fn fields_of(s: &State) -> [Value; 5] {
    [
        Value::Text(kind_name(&s.kind)),
        Value::Int(i64::try_from(s.size).unwrap_or(i64::MAX)),
        Value::Text(format!("{:o}", s.mode & 0o7777)),
        Value::Int(i64::from(s.uid)),
        Value::Int(i64::from(s.gid)),
    ]
}

fn kind_name(k: &EntryKind) -> String {
    match k {
        EntryKind::File => "file".into(),
        EntryKind::Dir => "dir".into(),
        EntryKind::Symlink { target } => format!("symlink -> {target}"),
        EntryKind::Other => "other".into(),
        EntryKind::Unreadable { reason } => format!("unreadable: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: u8, mode: u32) -> State {
        State {
            kind: EntryKind::File,
            size: 10,
            mode,
            uid: 0,
            gid: 0,
            digest: Some(Digest([content; 32])),
        }
    }

    fn kinds(obs: &[Observation]) -> Vec<(Kind, Change, String)> {
        obs.iter()
            .map(|o| (o.kind, o.change, o.subject.clone()))
            .collect()
    }

    #[test]
    fn realtime_checks_report_each_change_once() {
        let mut d = Detector::default();
        let add = d.handle(Input::Checked {
            path: "/etc/a".into(),
            state: Some(file(1, 0o644)),
            cause: Cause::Content,
        });
        assert_eq!(kinds(&add), [(Kind::File, Change::Added, "/etc/a".into())]);
        let same = d.handle(Input::Checked {
            path: "/etc/a".into(),
            state: Some(file(1, 0o644)),
            cause: Cause::Content,
        });
        assert_eq!(
            kinds(&same),
            [(Kind::Reconcile, Change::Modified, "/etc/a".into())]
        );
        assert_eq!(
            same[0]
                .fields
                .get("discrepancy")
                .and_then(|f| f.after.clone()),
            Some(Value::Text("realtime_event_without_state_change".into()))
        );
        let chmod = d.handle(Input::Checked {
            path: "/etc/a".into(),
            state: Some(file(1, 0o600)),
            cause: Cause::Metadata,
        });
        assert_eq!(chmod[0].change, Change::Modified);
        assert_eq!(
            chmod[0].fields.get("mode"),
            Some(&FieldChange {
                before: Some(Value::Text("644".into())),
                after: Some(Value::Text("600".into()))
            })
        );
        assert!(!chmod[0].fields.contains_key("content"));
        let edit = d.handle(Input::Checked {
            path: "/etc/a".into(),
            state: Some(file(2, 0o600)),
            cause: Cause::Content,
        });
        assert_eq!(edit[0].before, Some(Digest([1; 32])));
        assert_eq!(edit[0].after, Some(Digest([2; 32])));
        let rm = d.handle(Input::Checked {
            path: "/etc/a".into(),
            state: None,
            cause: Cause::Content,
        });
        // An attribute event that changes nothing tracked is not a discrepancy.
        let touch = d.handle(Input::Checked {
            path: "/etc/gone".into(),
            state: None,
            cause: Cause::Metadata,
        });
        assert!(touch.is_empty());
        assert_eq!(rm[0].change, Change::Removed);
        let c = d.counters();
        assert_eq!(
            (
                c.realtime_events,
                c.realtime_changes,
                c.realtime_without_change
            ),
            (6, 4, 1)
        );
    }

    #[test]
    fn a_subtree_scan_changes_only_that_subtree_and_is_no_miss() {
        let mut base = BTreeMap::new();
        for p in ["/etc/a", "/etc/a/x", "/etc/a/y", "/etc/a-b", "/etc/b"] {
            base.insert(p.to_string(), file(1, 0o644));
        }
        let mut d = Detector::new(base);
        let mut states = BTreeMap::new();
        states.insert("/etc/a".to_string(), file(1, 0o644));
        states.insert("/etc/a/x".to_string(), file(2, 0o644));
        states.insert("/etc/a/z".to_string(), file(1, 0o644));
        let out = d.handle(Input::Subtree {
            root: "/etc/a".into(),
            states,
        });
        assert_eq!(
            kinds(&out),
            [
                (Kind::File, Change::Modified, "/etc/a/x".into()),
                (Kind::File, Change::Removed, "/etc/a/y".into()),
                (Kind::File, Change::Added, "/etc/a/z".into()),
            ]
        );
        assert!(out.iter().all(|o| o.layer == Layer::Hash));
        let keys: Vec<&str> = d.baseline().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["/etc/a", "/etc/a-b", "/etc/a/x", "/etc/a/z", "/etc/b"]
        );
        let c = d.counters();
        assert_eq!(
            (c.fallback_scans, c.scan_changes, c.missed_by_realtime),
            (1, 3, 0)
        );
    }

    #[test]
    fn startup_parts_report_changes_while_down_as_found_and_once() {
        let part = |entries: &[(&str, u8)]| -> BTreeMap<String, State> {
            entries
                .iter()
                .map(|(p, c)| (p.to_string(), file(*c, 0o644)))
                .collect()
        };
        let all = |parts: &[&BTreeMap<String, State>]| -> BTreeMap<String, State> {
            parts.iter().flat_map(|p| (*p).clone()).collect()
        };
        // A first run: parts and the whole record, report nothing.
        let mut d = Detector::default();
        let a = part(&[("/etc/a", 1), ("/etc/a/x", 1)]);
        let b = part(&[("/etc/b", 1)]);
        for (root, p) in [("/etc/a", &a), ("/etc/b", &b)] {
            let out = d.handle(Input::StartupPart {
                root: root.into(),
                states: p.clone(),
            });
            assert!(out.is_empty(), "{out:?}");
        }
        let out = d.handle(Input::Scanned {
            states: all(&[&a, &b]),
            scan: Scan::Startup,
        });
        assert!(out.is_empty(), "{out:?}");

        // The next start: /etc/a/x changed and /etc/b went away while down, /etc/c is new
        // at the top (no part covers it).
        let a2 = part(&[("/etc/a", 1), ("/etc/a/x", 2)]);
        let out = d.handle(Input::StartupPart {
            root: "/etc/a".into(),
            states: a2.clone(),
        });
        assert_eq!(
            kinds(&out),
            [(Kind::File, Change::Modified, "/etc/a/x".into())]
        );
        assert!(out[0].fields.contains_key("when"), "{out:?}");
        let out = d.handle(Input::StartupPart {
            root: "/etc/b".into(),
            states: BTreeMap::new(),
        });
        assert_eq!(
            kinds(&out),
            [(Kind::File, Change::Removed, "/etc/b".into())]
        );
        // The whole reports only what no part covered, once.
        let c = part(&[("/etc/c", 1)]);
        let out = d.handle(Input::Scanned {
            states: all(&[&a2, &c]),
            scan: Scan::Startup,
        });
        assert_eq!(kinds(&out), [(Kind::File, Change::Added, "/etc/c".into())]);
        assert!(out[0].fields.contains_key("when"), "{out:?}");
    }

    #[test]
    fn a_directory_removed_takes_its_contents_along() {
        let dir = State {
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            digest: None,
        };
        let mut base = BTreeMap::new();
        base.insert("/etc/app".to_string(), dir);
        base.insert("/etc/app/a".to_string(), file(1, 0o644));
        base.insert("/etc/app/b".to_string(), file(1, 0o644));
        base.insert("/etc/apps".to_string(), file(1, 0o644));
        let mut d = Detector::new(base);
        let out = d.handle(Input::Checked {
            path: "/etc/app".into(),
            state: None,
            cause: Cause::Content,
        });
        assert_eq!(
            kinds(&out),
            [
                (Kind::File, Change::Removed, "/etc/app".into()),
                (Kind::File, Change::Removed, "/etc/app/a".into()),
                (Kind::File, Change::Removed, "/etc/app/b".into()),
            ]
        );
        assert_eq!(d.baseline().keys().collect::<Vec<_>>(), ["/etc/apps"]);
    }

    #[test]
    fn first_scan_records_and_later_scans_report_what_realtime_missed() {
        let mut d = Detector::default();
        let mut s = BTreeMap::new();
        s.insert("/etc/a".to_string(), file(1, 0o644));
        s.insert("/etc/b".to_string(), file(1, 0o644));
        assert!(
            d.handle(Input::Scanned {
                states: s.clone(),
                scan: Scan::Startup
            })
            .is_empty()
        );

        // Realtime saw /etc/a change; nobody told it about /etc/b going away.
        s.insert("/etc/a".to_string(), file(2, 0o644));
        d.handle(Input::Checked {
            path: "/etc/a".into(),
            state: Some(file(2, 0o644)),
            cause: Cause::Content,
        });
        s.remove("/etc/b");
        let out = d.handle(Input::Scanned {
            states: s,
            scan: Scan::Periodic,
        });
        assert_eq!(
            kinds(&out),
            [
                (Kind::File, Change::Removed, "/etc/b".into()),
                (Kind::Reconcile, Change::Modified, "/etc/b".into())
            ]
        );
        assert_eq!(out[0].layer, Layer::Hash);
        assert_eq!(d.counters().missed_by_realtime, 1);
        assert_eq!(d.counters().last_scan_changes, 1);
    }

    #[test]
    fn a_persisted_baseline_reports_changes_made_while_down() {
        let mut old = BTreeMap::new();
        old.insert("/etc/a".to_string(), file(1, 0o644));
        let mut d = Detector::new(old);
        let mut now = BTreeMap::new();
        now.insert("/etc/a".to_string(), file(9, 0o644));
        let out = d.handle(Input::Scanned {
            states: now,
            scan: Scan::Startup,
        });
        assert_eq!(out.len(), 1, "no reconcile spike: realtime was not running");
        assert_eq!(out[0].change, Change::Modified);
        assert_eq!(out[0].layer, Layer::Hash);
        assert_eq!(
            out[0].fields.get("when").and_then(|f| f.after.clone()),
            Some(Value::Text("while_down".into()))
        );
        assert_eq!(d.counters().missed_by_realtime, 0);
    }
}
