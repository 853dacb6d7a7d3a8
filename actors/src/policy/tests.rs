use proptest::prelude::*;

use super::judge::{Judge, Reload};
use super::*;
use crate::spike::FieldChange;

const WEB: &str = include_str!("../../../config/policy/web.toml");
const BASELINE: &str = include_str!("../../../config/policy/baseline.toml");
const DATABASE: &str = include_str!("../../../config/policy/database.toml");

fn spike(kind: Kind, change: Change, subject: &str) -> Spike {
    Spike::bare("me", 1, kind, change, subject)
}

fn decide(p: &Policy, kind: Kind, change: Change, subject: &str) -> (Decision, String) {
    let s = spike(kind, change, subject);
    let v = p.evaluate(&s);
    (v.decision, v.rule.name.clone())
}

fn policy(file: &str, text: &str) -> Policy {
    parse(file, text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn shipped_policies_judge_new_users_by_role() {
    let web = policy("web.toml", WEB);
    let baseline = policy("baseline.toml", BASELINE);
    let db = policy("database.toml", DATABASE);
    use Decision::*;
    let user = |p: &Policy, name: &str| decide(p, Kind::User, Change::Added, name);
    assert_eq!(user(&web, "deploy"), (Approved, "deploy-users".into()));
    assert_eq!(user(&web, "deploy-ci"), (Approved, "deploy-users".into()));
    assert_eq!(user(&web, "mallory"), (Consult, "other-new-users".into()));
    assert_eq!(
        user(&baseline, "deploy"),
        (Violation, "no-new-users".into())
    );
    assert_eq!(user(&db, "dbadmin"), (Approved, "db-admins".into()));
    assert_eq!(user(&db, "postgres"), (Approved, "db-admins".into()));
    assert_eq!(user(&db, "mallory"), (Violation, "other-users".into()));
    // A removal is not what the rules speak of: the fleet is asked.
    let (d, rule) = decide(&db, Kind::User, Change::Removed, "mallory");
    assert_eq!((d, rule.as_str()), (Consult, "defaults.user"));
}

#[test]
fn shipped_policies_judge_files_ports_and_processes() {
    use Decision::*;
    let web = policy("web.toml", WEB);
    let db = policy("database.toml", DATABASE);
    let file = |p: &Policy, path: &str| decide(p, Kind::File, Change::Modified, path).0;
    assert_eq!(file(&web, "/etc/nginx/sites-enabled/app"), Approved);
    assert_eq!(file(&web, "/etc/passwd"), Approved);
    assert_eq!(file(&web, "/etc/sudoers.d/extra"), Violation);
    assert_eq!(file(&db, "/etc/nginx/nginx.conf"), Consult);
    assert_eq!(file(&db, "/etc/postgresql/16/main/pg_hba.conf"), Approved);

    let listen = |p: &Policy, subject: &str| decide(p, Kind::Network, Change::Added, subject);
    assert_eq!(listen(&web, "listen tcp 0.0.0.0:443").0, Approved);
    assert_eq!(listen(&web, "listen tcp6 [::]:8080").0, Approved);
    assert_eq!(
        listen(&web, "listen tcp 0.0.0.0:5432"),
        (Violation, "other-ports".into())
    );
    assert_eq!(listen(&db, "listen tcp 0.0.0.0:5432").0, Approved);
    assert_eq!(listen(&db, "listen tcp 0.0.0.0:80").0, Violation);
    // Interfaces and routes are not listeners.
    assert_eq!(listen(&web, "iface eth1").0, Consult);

    let mut nc = spike(Kind::Process, Change::Added, "4242:/usr/bin/nc");
    nc.fields
        .insert("exe".into(), FieldChange::fact("/usr/bin/nc"));
    assert_eq!(web.evaluate(&nc).decision, Violation);
    assert_eq!(web.evaluate(&nc).rule.name, "denied-processes");
    // The exe comes from the subject when the field is missing.
    let tmp = spike(Kind::Process, Change::Added, "77:/tmp/x/miner");
    assert_eq!(db.evaluate(&tmp).decision, Violation);
    let nginx = spike(Kind::Process, Change::Added, "10:/usr/sbin/nginx");
    assert_eq!(web.evaluate(&nginx).decision, Approved);
    assert_eq!(db.evaluate(&nginx).decision, Consult);
}

#[test]
fn defaults_come_from_the_file_then_the_built_ins() {
    let p = policy("p.toml", "[defaults]\nfile = \"violation\"\n");
    let (d, _) = decide(&p, Kind::File, Change::Added, "/x");
    assert_eq!(d, Decision::Violation);
    let v = p.evaluate(&spike(Kind::File, Change::Added, "/x"));
    assert_eq!(v.rule.to_string(), "p.toml:2#defaults.file");
    let metric = p.evaluate(&spike(Kind::Metric, Change::Sample, "cpu.busy_pct"));
    assert_eq!(metric.decision, Decision::Approved);
    assert_eq!(metric.rule.to_string(), "builtin#defaults.metric");
    let audit = p.evaluate(&spike(Kind::Audit, Change::Modified, "peer"));
    assert_eq!(audit.decision, Decision::Consult);
    let anomaly = p.evaluate(&spike(Kind::Anomaly, Change::Added, "load.1m"));
    assert_eq!(anomaly.decision, Decision::Violation);
    assert_eq!(anomaly.rule.to_string(), "builtin#defaults.anomaly");
    assert_eq!(anomaly.reason, "metric deviates from its role peers");
}

#[test]
fn a_role_policy_may_decide_anomalies_otherwise() {
    let p = policy(
        "batch.toml",
        "[defaults]\nanomaly = \"consult\"\n\n[[rules]]\nname = \"busy-cpus-are-normal\"\ndecision = \"approved\"\nkinds = [\"anomaly\"]\nsubjects = [\"cpu.*\"]\n",
    );
    let v = p.evaluate(&spike(Kind::Anomaly, Change::Added, "cpu.busy_pct"));
    assert_eq!(v.decision, Decision::Approved);
    assert_eq!(v.rule.to_string(), "batch.toml:4#busy-cpus-are-normal");
    let v = p.evaluate(&spike(Kind::Anomaly, Change::Added, "load.1m"));
    assert_eq!(v.decision, Decision::Consult);
    assert_eq!(v.rule.to_string(), "batch.toml:2#defaults.anomaly");
    // The shipped role policies leave anomalies to the built-in default.
    for (file, text) in [
        ("web.toml", WEB),
        ("baseline.toml", BASELINE),
        ("database.toml", DATABASE),
    ] {
        let p = policy(file, text);
        let v = p.evaluate(&spike(Kind::Anomaly, Change::Added, "load.1m"));
        assert_eq!(v.decision, Decision::Violation, "{file}");
    }
}

#[test]
fn the_first_matching_rule_decides() {
    let text = r#"
[[rules]]
name = "a"
decision = "violation"
kinds = ["user"]
subjects = ["x*"]

[[rules]]
name = "b"
decision = "approved"
reason = "b says so"
kinds = ["user"]
"#;
    let p = policy("t.toml", text);
    let v = p.evaluate(&spike(Kind::User, Change::Added, "xavier"));
    assert_eq!(
        (v.decision, v.rule.name.as_str(), v.rule.line),
        (Decision::Violation, "a", 2)
    );
    assert_eq!(v.reason, "rule `a` matches");
    let v = p.evaluate(&spike(Kind::User, Change::Added, "yves"));
    assert_eq!((v.decision, v.reason), (Decision::Approved, "b says so"));
    assert_eq!(v.rule.to_string(), "t.toml:8#b");
}

fn refused(text: &str) -> Error {
    match parse("bad.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn errors_name_the_file_the_line_and_the_rule() {
    let e = refused("[[rules]]\nname = \"a\"\ndecision = \"approved\"\nkinds = [\"user\"\n");
    assert_eq!(
        (e.file.as_str(), e.line, e.rule.as_deref()),
        ("bad.toml", 4, None)
    );

    let e = refused("\n[[rules]]\nname = \"a\"\ndecision = \"approved\"\nsubjets = [\"x\"]\n");
    assert_eq!((e.line, e.rule.as_deref()), (2, Some("`a`")));
    assert!(e.problem.contains("subjets"), "{e}");
    assert!(
        e.to_string().starts_with("policy bad.toml:2: rule `a`: "),
        "{e}"
    );

    let e = refused("[[rules]]\nname = \"a\"\ndecision = \"maybe\"\n");
    assert!(e.problem.contains("maybe"), "{e}");

    let e = refused("[[rules]]\ndecision = \"approved\"\n");
    assert_eq!(e.rule.as_deref(), Some("#1"));
    assert!(e.problem.contains("name"), "{e}");

    let e = refused("[[rules]]\nname = \"g\"\ndecision = \"approved\"\nsubjects = [\"[oops\"]\n");
    assert!(
        e.problem.contains("subjects[0] `[oops` is not a glob"),
        "{e}"
    );

    let two = "[[rules]]\nname = \"a\"\ndecision = \"approved\"\nkinds = [\"user\"]\n";
    let e = refused(&format!("{two}\n{two}"));
    assert_eq!((e.line, e.rule.as_deref()), (6, Some("`a`")));
    assert!(e.problem.contains("line 1"), "{e}");

    let e = refused(
        "[[rules]]\nname = \"all\"\ndecision = \"approved\"\n[[rules]]\nname = \"b\"\ndecision = \"consult\"\n",
    );
    assert_eq!((e.line, e.rule.as_deref()), (4, Some("`b`")));
    assert!(e.problem.contains("can never decide"), "{e}");

    let e = refused("[[rules]]\nname = \"p\"\ndecision = \"approved\"\nports = [80]\n");
    assert!(e.problem.contains("network"), "{e}");
    let e = refused(
        "[[rules]]\nname = \"p\"\ndecision = \"approved\"\nkinds = [\"network\"]\nports = [\"90-80\"]\n",
    );
    assert!(e.problem.contains("ports[0]"), "{e}");
    let e = refused(
        "[[rules]]\nname = \"p\"\ndecision = \"approved\"\nkinds = [\"network\"]\nports = [70000]\n",
    );
    assert!(e.problem.contains("70000"), "{e}");
    let e = refused(
        "[[rules]]\nname = \"e\"\ndecision = \"approved\"\nkinds = [\"user\"]\nexes = [\"/x\"]\n",
    );
    assert!(e.problem.contains("exes"), "{e}");
    let e = refused("[[rules]]\nname = \"k\"\ndecision = \"approved\"\nkinds = []\n");
    assert!(e.problem.contains("empty list"), "{e}");

    let e = refused("\n\n[defaults]\nfiles = \"approved\"\n");
    assert_eq!(e.line, 4);
    assert!(e.problem.contains("unknown spike kind `files`"), "{e}");
    let e = refused("[defaults]\nfile = \"ok\"\n");
    assert!(e.problem.contains("not a decision"), "{e}");
    let e = refused("[rulez]\n");
    assert_eq!(e.line, 1);
}

#[test]
fn the_judge_keeps_its_last_good_policy() {
    let good = "[[rules]]\nname = \"u\"\ndecision = \"violation\"\nkinds = [\"user\"]\n";
    let mut judge = Judge::new("p.toml", good, 2, 10).expect("good policy");
    let v1 = judge.policy().version().to_string();
    assert_eq!(judge.offer("p.toml", good, 20), Reload::Unchanged);

    let bad = "[[rules]]\nname = \"u\"\ndecision = \"violation\"\nkinds = [\"usr\"]\n";
    let Reload::Refused(e) = judge.offer("p.toml", bad, 30) else {
        panic!("a bad policy was not refused")
    };
    assert_eq!(e.line, 1);
    // The same bad text is refused once, not at every poll.
    assert_eq!(judge.offer("p.toml", bad, 40), Reload::Unchanged);
    let st = judge.status();
    assert_eq!(
        (st.version.as_str(), st.loaded_at_unix_ms),
        (v1.as_str(), 10)
    );
    assert_eq!(st.last_error.as_ref().map(|r| r.at_unix_ms), Some(30));
    let r = judge.decide(&spike(Kind::User, Change::Added, "eve"), 50);
    assert_eq!(r.decision, Decision::Violation);
    assert_eq!(r.rule, "p.toml:1#u");

    let next = good.replace("violation", "approved");
    assert!(matches!(
        judge.offer("p.toml", &next, 60),
        Reload::Loaded { .. }
    ));
    let st = judge.status();
    assert_ne!(st.version, v1);
    assert_eq!((st.loaded_at_unix_ms, st.last_error), (60, None));

    // An unreadable file is reported once and changes nothing.
    let gone = Error::file("p.toml", "no such file");
    assert!(judge.unreadable(&gone, 70));
    assert!(!judge.unreadable(&gone, 80));
    // The same text back is judged afresh (and is good).
    assert!(matches!(
        judge.offer("p.toml", &next, 90),
        Reload::Loaded { .. }
    ));

    for (seq, name) in [(2, "a"), (3, "b")] {
        let mut s = spike(Kind::User, Change::Added, name);
        s.seq = seq;
        judge.decide(&s, 100);
    }
    let kept: Vec<u64> = judge.since(Some(0), 10).iter().map(|r| r.seq).collect();
    assert_eq!(kept, [2, 3], "the ring keeps 2");
    assert_eq!(judge.since(Some(2), 10).len(), 1);
    // Paging from the start gives the oldest; without `since`, the latest.
    let seqs = |v: Vec<judge::Record>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(judge.since(Some(0), 1)), [2]);
    assert_eq!(seqs(judge.since(None, 1)), [3]);
    assert_eq!(seqs(judge.since(None, 10)), [2, 3]);
    let c = judge.counts();
    assert_eq!((c.approved, c.violation, c.consult), (2, 1, 0));
}

#[test]
fn a_bad_first_policy_is_an_error() {
    assert!(Judge::new("p.toml", "rules = 3", 10, 0).is_err());
}

// --- properties ----------------------------------------------------------------------------

/// A rule as the model sees it: conditions that are `None` match anything.
#[derive(Debug, Clone)]
struct Model {
    kinds: Option<Vec<Kind>>,
    changes: Option<Vec<Change>>,
    subjects: Option<Vec<&'static str>>,
    decision: Decision,
}

const SUBJECTS: [&str; 6] = [
    "deploy",
    "deploy2",
    "mallory",
    "/etc/a",
    "/etc/b/c",
    "listen tcp 0.0.0.0:80",
];
const GLOBS: [&str; 6] = ["deploy*", "mallory", "/etc/*", "/etc/**", "listen *", "*"];
const CHANGES: [Change; 4] = [
    Change::Added,
    Change::Removed,
    Change::Modified,
    Change::Sample,
];

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(ALL_KINDS.to_vec())
}

fn change() -> impl Strategy<Value = Change> {
    proptest::sample::select(CHANGES.to_vec())
}

fn model() -> impl Strategy<Value = Model> {
    (
        proptest::option::of(proptest::collection::vec(kind(), 1..3)),
        proptest::option::of(proptest::collection::vec(change(), 1..3)),
        proptest::option::of(proptest::collection::vec(
            proptest::sample::select(GLOBS.to_vec()),
            1..3,
        )),
        proptest::sample::select(Decision::ALL.to_vec()),
    )
        .prop_map(|(kinds, changes, subjects, decision)| {
            // A rule that matches everything may only come last: give it a kind.
            let kinds = if kinds.is_none() && changes.is_none() && subjects.is_none() {
                Some(vec![Kind::User])
            } else {
                kinds
            };
            Model {
                kinds,
                changes,
                subjects,
                decision,
            }
        })
}

fn quoted<T: fmt::Debug>(list: &[T], word: impl Fn(&T) -> String) -> String {
    let items: Vec<String> = list.iter().map(|x| format!("\"{}\"", word(x))).collect();
    format!("[{}]", items.join(", "))
}

fn render(rules: &[Model]) -> String {
    let mut text = String::new();
    for (i, m) in rules.iter().enumerate() {
        text.push_str(&format!(
            "[[rules]]\nname = \"r{i}\"\ndecision = \"{}\"\n",
            m.decision.as_str()
        ));
        if let Some(k) = &m.kinds {
            text.push_str(&format!(
                "kinds = {}\n",
                quoted(k, |k| k.as_str().to_string())
            ));
        }
        if let Some(c) = &m.changes {
            text.push_str(&format!(
                "changes = {}\n",
                quoted(c, |c| c.as_str().to_string())
            ));
        }
        if let Some(s) = &m.subjects {
            text.push_str(&format!("subjects = {}\n", quoted(s, |s| s.to_string())));
        }
    }
    text
}

fn model_matches(m: &Model, s: &Spike) -> bool {
    m.kinds.as_ref().is_none_or(|k| k.contains(&s.kind))
        && m.changes.as_ref().is_none_or(|c| c.contains(&s.change))
        && m.subjects.as_ref().is_none_or(|g| {
            g.iter().any(|g| {
                glob::Pattern::new(g)
                    .expect("glob")
                    .matches_with(&s.subject, GLOB)
            })
        })
}

proptest! {
    /// Every spike gets exactly one decision: the first rule (in file order) whose every
    /// condition holds, else the default of its kind; the end of an anomaly is approved
    /// whatever the rules say.
    #[test]
    fn the_first_matching_rule_in_file_order_decides(
        rules in proptest::collection::vec(model(), 0..12),
        spikes in proptest::collection::vec(
            (kind(), change(), proptest::sample::select(SUBJECTS.to_vec())), 1..40),
    ) {
        let p = parse("m.toml", &render(&rules)).expect("generated policies are valid");
        for (k, c, subject) in spikes {
            let s = spike(k, c, subject);
            let v = p.evaluate(&s);
            if k == Kind::Anomaly && c == Change::Removed {
                prop_assert_eq!(v.decision, Decision::Approved);
                prop_assert_eq!(v.rule.name.as_str(), "anomaly.ended");
                continue;
            }
            match rules.iter().position(|m| model_matches(m, &s)) {
                Some(i) => {
                    prop_assert_eq!(&v.rule.name, &format!("r{i}"));
                    prop_assert_eq!(v.decision, rules[i].decision);
                }
                None => {
                    prop_assert_eq!(v.rule.file.as_ref(), "builtin");
                    let want = match k {
                        Kind::Metric => Decision::Approved,
                        Kind::Anomaly => Decision::Violation,
                        _ => Decision::Consult,
                    };
                    prop_assert_eq!(v.decision, want);
                }
            }
        }
    }

    /// Any text either loads or is refused with a line inside the file; never a panic.
    #[test]
    fn any_text_loads_or_is_refused_with_a_line(text in "[\\[\\]a-z =\"\n0-9*]{0,120}") {
        if let Err(e) = parse("f.toml", &text) {
            prop_assert!(e.line <= text.lines().count() + 1, "{}", e);
        }
    }
}

#[test]
fn answers_find_their_record_whether_or_not_the_ring_is_in_order() {
    let text = "[[rules]]\nname = \"u\"\ndecision = \"consult\"\nkinds = [\"user\"]\n";
    let mut judge = Judge::new("p.toml", text, 4, 0).expect("policy");
    let settled = || judge::Settled {
        decision: Decision::Approved,
        rule: "m".into(),
        reason: "r".into(),
        by: "master".into(),
        region: None,
        term: Some(1),
        policy: None,
        held: false,
        latency_us: 1,
    };
    let numbered = |seq: u64| {
        let mut s = spike(Kind::User, Change::Added, "eve");
        s.seq = seq;
        s
    };
    // Six in order through a ring of four: 3..=6 are kept.
    for seq in 1..=6 {
        judge.decide(&numbered(seq), seq);
    }
    assert!(!judge.settle(2, settled()), "2 has left the ring");
    assert!(judge.settle(4, settled()));
    assert!(!judge.settle(7, settled()), "7 was never judged");
    // A numbering that went backwards: still found, by the slow path.
    judge.decide(&numbered(5), 7);
    judge.decide(&numbered(1), 8);
    assert!(judge.settle(6, settled()));
    assert!(judge.settle(1, settled()));
    assert!(!judge.settle(4, settled()), "4 has left the ring");
    let kept = |judge: &Judge| -> Vec<(u64, bool)> {
        judge
            .since(Some(0), 10)
            .iter()
            .map(|r| (r.seq, r.settled.is_some()))
            .collect()
    };
    assert_eq!(
        kept(&judge),
        vec![(5, false), (6, true), (5, false), (1, true)]
    );
    // Back in order once the disorder has left the ring.
    for seq in 7..=10 {
        judge.decide(&numbered(seq), seq);
    }
    assert!(judge.settle(8, settled()));
    assert!(!judge.settle(6, settled()));
    assert_eq!(
        kept(&judge),
        vec![(7, false), (8, true), (9, false), (10, false)]
    );
}
