use std::collections::{BTreeMap, BTreeSet};

use super::constraint::Constraint;
use super::*;
use crate::spike::Digest;
use crate::twin::{FileFact, Twin};

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn d(c: u8) -> Digest {
    Digest([c; 32])
}

const WEB: &str = r#"
[fleetmesh]
versions = ["0.1.*"]
digests = ["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]

[policy]
version = "region"

[[files]]
path = "/etc/ssh/sshd_config"
sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

[[files]]
path = "/etc/telnetd.conf"
state = "absent"
severity = "high"

[[packages]]
name = "openssl"
version = ">= 3.0.11"

[[packages]]
name = "telnetd"
version = "absent"
severity = "low"

[ports]
expected = [22, 443]
forbidden = [23]

[[services]]
name = "nginx-http"
state = "up"
"#;

fn web() -> Layer {
    parse("web.toml", WEB).expect("web.toml parses")
}

/// A twin exactly as `web.toml` wants it.
fn good_twin() -> Twin {
    let mut t = Twin::default();
    t.software.value.version = "0.1.4".into();
    t.software.value.exe_sha256 = Some(d(0xaa));
    t.policy.value.version = "7".into();
    t.observed.value.files = BTreeMap::from([
        (
            "/etc/ssh/sshd_config".to_string(),
            FileFact::Present(d(0xaa)),
        ),
        ("/etc/telnetd.conf".to_string(), FileFact::Absent),
    ]);
    t.observed.value.ports = Some(BTreeSet::from([22, 443, 8080]));
    t.packages.value.source = "dpkg".into();
    t.packages.value.versions =
        BTreeMap::from([("openssl".to_string(), "3.0.13-1~deb12u1".to_string())]);
    t
}

fn ctx() -> Context {
    Context {
        region_policy: Some("7".into()),
        services: BTreeMap::from([("nginx-http".to_string(), "up".to_string())]),
    }
}

fn err(file: &str, text: &str) -> Error {
    parse(file, text).expect_err("refused")
}

fn subjects(f: &[Finding]) -> Vec<(&str, &str, Severity)> {
    f.iter()
        .map(|f| (f.subject.as_str(), f.actual.as_str(), f.severity))
        .collect()
}

#[test]
fn a_twin_as_desired_has_no_finding() {
    let spec = merge(&web(), None);
    assert_eq!(compare(&spec, &good_twin(), &ctx()), vec![]);
    assert_eq!(score(&[]), 0);
}

#[test]
fn interest_names_the_files_and_packages() {
    let i = merge(&web(), None).interest();
    assert_eq!(
        i.files,
        BTreeSet::from([
            "/etc/ssh/sshd_config".to_string(),
            "/etc/telnetd.conf".to_string()
        ])
    );
    assert_eq!(
        i.packages,
        BTreeSet::from(["openssl".to_string(), "telnetd".to_string()])
    );
}

#[test]
fn files_differ_by_content_presence_and_kind() {
    let spec = merge(&web(), None);
    let mut t = good_twin();
    t.observed
        .value
        .files
        .insert("/etc/ssh/sshd_config".into(), FileFact::Present(d(0xbb)));
    t.observed
        .value
        .files
        .insert("/etc/telnetd.conf".into(), FileFact::Other);
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            (
                "file:/etc/ssh/sshd_config",
                format!("sha256:{B}").as_str(),
                Severity::Medium
            ),
            (
                "file:/etc/telnetd.conf",
                "not a regular file",
                Severity::High
            ),
        ]
    );
    assert_eq!(f[0].rule, "web.toml:files[/etc/ssh/sshd_config]");
    assert_eq!(f[0].desired, format!("sha256:{A}"));
    assert_eq!(f[1].desired, "absent");
    assert_eq!(score(&f), 13);

    t.observed
        .value
        .files
        .insert("/etc/ssh/sshd_config".into(), FileFact::Absent);
    t.observed
        .value
        .files
        .insert("/etc/telnetd.conf".into(), FileFact::Present(d(1)));
    let f = compare(&spec, &t, &ctx());
    assert_eq!(f[0].actual, "absent");
    assert!(f[1].actual.starts_with("sha256:0101"));
}

#[test]
fn an_unknown_or_missing_file_is_a_low_unknown_finding() {
    let spec = merge(&web(), None);
    let mut t = good_twin();
    t.observed
        .value
        .files
        .insert("/etc/ssh/sshd_config".into(), FileFact::Unknown);
    t.observed.value.files.remove("/etc/telnetd.conf");
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            ("file:/etc/ssh/sshd_config", "unknown", Severity::Low),
            ("file:/etc/telnetd.conf", "unknown", Severity::Low),
        ]
    );
}

#[test]
fn state_present_accepts_any_entry_at_the_path() {
    let layer = parse(
        "r.toml",
        "[[files]]\npath = \"/srv\"\nstate = \"present\"\n",
    )
    .expect("parses");
    let spec = merge(&layer, None);
    let mut t = Twin::default();
    for (fact, found) in [
        (FileFact::Other, false),
        (FileFact::Present(d(3)), false),
        (FileFact::Absent, true),
    ] {
        t.observed.value.files.insert("/srv".into(), fact);
        assert_eq!(
            !compare(&spec, &t, &Context::default()).is_empty(),
            found,
            "{fact:?}"
        );
    }
}

#[test]
fn packages_by_dpkg_constraint_and_absence() {
    let spec = merge(&web(), None);
    let mut t = good_twin();
    t.packages
        .value
        .versions
        .insert("openssl".into(), "3.0.11~rc1-1".into());
    t.packages
        .value
        .versions
        .insert("telnetd".into(), "0.17-44".into());
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            ("package:openssl", "3.0.11~rc1-1", Severity::Medium),
            ("package:telnetd", "0.17-44", Severity::Low),
        ]
    );
    assert_eq!(f[0].desired, ">= 3.0.11");
    assert_eq!(f[0].rule, "web.toml:packages[openssl]");
    assert_eq!(f[1].desired, "absent");

    // Missing from the twin's versions: not installed.
    t.packages.value.versions.clear();
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![("package:openssl", "absent", Severity::Medium)]
    );

    // No package database: nothing can be told.
    t.packages.value.source = "none".into();
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            ("package:openssl", "unknown", Severity::Low),
            ("package:telnetd", "unknown", Severity::Low),
        ]
    );
}

#[test]
fn ports_expected_forbidden_and_unread() {
    let spec = merge(&web(), None);
    let mut t = good_twin();
    t.observed.value.ports = Some(BTreeSet::from([23, 443]));
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            ("port:22", "not listening", Severity::Medium),
            ("port:23", "listening", Severity::High),
        ]
    );
    assert_eq!(f[0].rule, "web.toml:ports.expected");
    assert_eq!(f[1].rule, "web.toml:ports.forbidden");

    t.observed.value.ports = None;
    let f = compare(&spec, &t, &ctx());
    assert_eq!(subjects(&f), vec![("ports", "unknown", Severity::Low)]);
}

#[test]
fn services_by_the_regions_probes() {
    let spec = merge(&web(), None);
    let mut c = ctx();
    c.services.insert("nginx-http".into(), "down".into());
    let f = compare(&spec, &good_twin(), &c);
    assert_eq!(
        subjects(&f),
        vec![("service:nginx-http", "down", Severity::Medium)]
    );
    assert_eq!(f[0].rule, "web.toml:services[nginx-http]");
    c.services.clear();
    let f = compare(&spec, &good_twin(), &c);
    assert_eq!(
        subjects(&f),
        vec![("service:nginx-http", "unknown", Severity::Low)]
    );
}

#[test]
fn fleetmesh_version_and_digest() {
    let spec = merge(&web(), None);
    let mut t = good_twin();
    t.software.value.version = "0.2.0".into();
    t.software.value.exe_sha256 = Some(d(0xbb));
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            (
                "fleetmesh:digest",
                format!("sha256:{B}").as_str(),
                Severity::High
            ),
            ("fleetmesh:version", "0.2.0", Severity::Medium),
        ]
    );
    assert_eq!(f[1].desired, "0.1.*");
    assert_eq!(f[0].rule, "web.toml:fleetmesh.digests");

    // An unreadable executable where digests are required is treated as a replaced one.
    t.software.value.exe_sha256 = None;
    t.software.value.version = String::new();
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            ("fleetmesh:digest", "unknown", Severity::High),
            ("fleetmesh:version", "unknown", Severity::Low),
        ]
    );

    // Empty digests: any executable.
    let layer = parse(
        "r.toml",
        "[fleetmesh]\ndigests = []\nversions = [\"0.1.*\", \">= 0.3\"]\n",
    )
    .expect("parses");
    let spec = merge(&layer, None);
    assert!(spec.digests.is_none());
    t.software.value.version = "0.4.1".into();
    assert_eq!(compare(&spec, &t, &ctx()), vec![]);
}

#[test]
fn policy_version_exact_or_the_regions() {
    let spec = merge(&web(), None);
    let mut c = ctx();
    c.region_policy = Some("8".into());
    let f = compare(&spec, &good_twin(), &c);
    assert_eq!(
        subjects(&f),
        vec![("policy:version", "7", Severity::Medium)]
    );
    assert_eq!(f[0].desired, "8");
    c.region_policy = None;
    let f = compare(&spec, &good_twin(), &c);
    assert_eq!(subjects(&f), vec![("policy:version", "7", Severity::Low)]);

    let layer =
        parse("r.toml", "[policy]\nversion = \"7\"\nseverity = \"high\"\n").expect("parses");
    let spec = merge(&layer, None);
    assert_eq!(compare(&spec, &good_twin(), &Context::default()), vec![]);
    let mut t = good_twin();
    t.policy.value.version = "6".into();
    assert_eq!(
        subjects(&compare(&spec, &t, &Context::default())),
        vec![("policy:version", "6", Severity::High)]
    );
}

#[test]
fn findings_are_sorted_by_subject() {
    let spec = merge(&web(), None);
    let t = Twin::default();
    let f = compare(&spec, &t, &Context::default());
    let got: Vec<&str> = f.iter().map(|f| f.subject.as_str()).collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted);
    assert_eq!(f, compare(&spec, &t, &Context::default()));
    assert!(got.contains(&"ports"));
}

#[test]
fn an_override_replaces_key_by_key_and_entry_by_entry() {
    let node = parse(
        "nodes/web-1.toml",
        r#"
[fleetmesh]
severity = "low"
[[files]]
path = "/etc/ssh/sshd_config"
sha256 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
[[files]]
path = "/etc/motd"
state = "present"
[[packages]]
name = "openssl"
version = "present"
[ports]
forbidden = [22]
"#,
    )
    .expect("override parses");
    let spec = merge(&web(), Some(&node));
    // Keys the override leaves out stay the role's.
    assert_eq!(
        spec.versions.as_ref().map(|v| v.origin.as_str()),
        Some("web.toml")
    );
    assert_eq!(
        spec.versions.as_ref().map(|v| v.severity),
        Some(Severity::Low)
    );
    assert_eq!(
        spec.digests.as_ref().map(|v| v.severity),
        Some(Severity::Low)
    );
    assert!(spec.policy.is_some());
    assert_eq!(spec.services.len(), 1);
    // Entries of the same path or name are replaced, others added.
    assert_eq!(spec.files.len(), 3);
    let sshd = &spec.files["/etc/ssh/sshd_config"];
    assert_eq!(
        (sshd.origin.as_str(), sshd.want),
        ("nodes/web-1.toml", FileWant::Sha256(d(0xbb)))
    );
    assert_eq!(spec.files["/etc/telnetd.conf"].origin, "web.toml");
    assert_eq!(spec.packages["openssl"].want, Constraint::Present);
    assert_eq!(spec.packages["telnetd"].origin, "web.toml");
    // `forbidden` replaced; 22 is no longer expected (the override is more specific).
    let forbidden = spec.forbidden_ports.as_ref().expect("forbidden");
    assert_eq!(forbidden.ports, BTreeSet::from([22]));
    assert_eq!(forbidden.origin, "nodes/web-1.toml");
    let expected = spec.expected_ports.as_ref().expect("expected");
    assert_eq!(expected.ports, BTreeSet::from([443]));

    let mut t = good_twin();
    t.observed
        .value
        .files
        .insert("/etc/motd".into(), FileFact::Present(d(1)));
    let f = compare(&spec, &t, &ctx());
    assert_eq!(
        subjects(&f),
        vec![
            (
                "file:/etc/ssh/sshd_config",
                format!("sha256:{A}").as_str(),
                Severity::Medium
            ),
            ("port:22", "listening", Severity::High),
        ]
    );
    assert_eq!(f[0].rule, "nodes/web-1.toml:files[/etc/ssh/sshd_config]");
}

#[test]
fn an_empty_file_asks_for_nothing() {
    let spec = merge(&parse("r.toml", "").expect("parses"), None);
    assert_eq!(spec, Spec::default());
    assert_eq!(
        compare(&spec, &Twin::default(), &Context::default()),
        vec![]
    );
}

#[test]
fn unknown_keys_are_refused_with_line_and_key() {
    let e = err("web.toml", "[fleetmesh]\nversions = []\n\n[extra]\n");
    assert_eq!((e.line, e.key.as_str()), (Some(4), "extra"));
    let e = err(
        "web.toml",
        "[[files]]\npath = \"/a\"\nstate = \"absent\"\n\n[[files]]\npath = \"/b\"\nstat = \"absent\"\n",
    );
    assert_eq!((e.line, e.key.as_str()), (Some(7), "files[1].stat"));
    assert!(e.message.contains("unknown key"), "{e}");
    assert!(
        e.to_string()
            .starts_with("web.toml:7: files[1].stat: unknown key"),
        "{e}"
    );
    let e = err("web.toml", "[ports]\nexpected = [22]\nlistening = [80]\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "ports.listening"));
    let e = err("web.toml", "[policy]\nversion = \"1\"\nfrom = \"x\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "policy.from"));
}

#[test]
fn bad_hex_names_its_key() {
    let e = err(
        "web.toml",
        "# web\n\n[[files]]\npath = \"/a\"\nstate = \"absent\"\n[[files]]\npath = \"/b\"\nsha256 = \"abc\"\n",
    );
    assert_eq!(
        e.to_string(),
        "web.toml:8: files[1].sha256: not 64 hex characters"
    );
    let e = err(
        "web.toml",
        &format!("[fleetmesh]\ndigests = [\"sha256:{}\"]\n", &A[1..]),
    );
    assert_eq!((e.line, e.key.as_str()), (Some(2), "fleetmesh.digests[0]"));
    let zs = "z".repeat(64);
    let e = err(
        "web.toml",
        &format!("[[files]]\npath = \"/a\"\nsha256 = \"{zs}\"\n"),
    );
    assert_eq!(e.key, "files[0].sha256");
}

#[test]
fn a_file_entry_needs_exactly_one_of_sha256_and_state() {
    let e = err(
        "web.toml",
        &format!("[[files]]\npath = \"/a\"\nsha256 = \"{A}\"\nstate = \"present\"\n"),
    );
    assert_eq!((e.line, e.key.as_str()), (Some(4), "files[0]"));
    assert!(e.message.contains("both"), "{e}");
    let e = err("web.toml", "[[files]]\npath = \"/a\"\n");
    assert_eq!(e.key, "files[0]");
    assert!(e.message.contains("needs"), "{e}");
    let e = err("web.toml", "[[files]]\npath = \"/a\"\nstate = \"gone\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "files[0].state"));
    let e = err("web.toml", "[[files]]\nstate = \"absent\"\n");
    assert_eq!(e.key, "files[0].path");
    let e = err(
        "web.toml",
        "[[files]]\npath = \"etc/x\"\nstate = \"absent\"\n",
    );
    assert_eq!(e.key, "files[0].path");
    let e = err(
        "web.toml",
        "[[files]]\npath = \"/a\"\nstate = \"absent\"\n[[files]]\npath = \"/a\"\nstate = \"present\"\n",
    );
    assert_eq!((e.line, e.key.as_str()), (Some(5), "files[1].path"));
    assert!(e.message.contains("files[0]"), "{e}");
}

#[test]
fn bad_severities_are_refused_everywhere() {
    for (text, key, line) in [
        (
            "[fleetmesh]\nseverity = \"urgent\"\n",
            "fleetmesh.severity",
            2,
        ),
        (
            "[[files]]\npath = \"/a\"\nstate = \"absent\"\nseverity = \"critical\"\n",
            "files[0].severity",
            4,
        ),
        (
            "[[packages]]\nname = \"x\"\nversion = \"present\"\nseverity = 3\n",
            "packages[0].severity",
            4,
        ),
        ("[ports]\nseverity = \"High\"\n", "ports.severity", 2),
        (
            "[[services]]\nname = \"s\"\nstate = \"up\"\nseverity = \"\"\n",
            "services[0].severity",
            4,
        ),
        ("[policy]\nseverity = \"info\"\n", "policy.severity", 2),
    ] {
        let e = err("r.toml", text);
        assert_eq!((e.key.as_str(), e.line), (key, Some(line)), "{text}");
    }
}

#[test]
fn bad_version_constraints_are_refused() {
    for (version, message) in [
        ("3.0", "needs an operator"),
        (">=", "no version"),
        (">= 3.0, ", "needs an operator"),
        (">= 3.0 beta", "not a Debian version"),
        ("", "must not be empty"),
        ("~> 1", "needs an operator"),
    ] {
        let e = err(
            "db.toml",
            &format!("[[packages]]\nname = \"postgresql\"\nversion = \"{version}\"\n"),
        );
        assert_eq!(
            (e.key.as_str(), e.line),
            ("packages[0].version", Some(3)),
            "{version}"
        );
        assert!(e.message.contains(message), "{version}: {e}");
    }
    let e = err(
        "web.toml",
        "[fleetmesh]\nversions = [\"0.1.*\", \"latest\"]\n",
    );
    assert_eq!((e.key.as_str(), e.line), ("fleetmesh.versions[1]", Some(2)));
}

#[test]
fn other_shapes_are_refused() {
    for (text, key) in [
        ("[ports]\nexpected = [0]\n", "ports.expected[0]"),
        ("[ports]\nexpected = [70000]\n", "ports.expected[0]"),
        ("[ports]\nexpected = [\"22\"]\n", "ports.expected[0]"),
        (
            "[ports]\nexpected = [22]\nforbidden = [22]\n",
            "ports.forbidden",
        ),
        (
            "[[services]]\nname = \"s\"\nstate = \"running\"\n",
            "services[0].state",
        ),
        ("[[services]]\nname = \"s\"\n", "services[0].state"),
        (
            "[[packages]]\nname = \"a b\"\nversion = \"present\"\n",
            "packages[0].name",
        ),
        ("[policy]\nversion = \"\"\n", "policy.version"),
        ("fleetmesh = 1\n", "fleetmesh"),
        ("files = 1\n", "files"),
        ("[fleetmesh]\nversions = \"0.1\"\n", "fleetmesh.versions"),
    ] {
        assert_eq!(err("r.toml", text).key, key, "{text}");
    }
    // TOML syntax: the line of the error, no key.
    let e = err("r.toml", "[policy]\nversion = \n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), ""));
    assert!(e.to_string().starts_with("r.toml:2: "), "{e}");
}

#[test]
fn error_display_without_line_or_key() {
    assert_eq!(
        Error::file("web.toml", "cannot read").to_string(),
        "web.toml: cannot read"
    );
}

/// dpkg's order, through the constraints (`dpkg --compare-versions` agrees on each).
#[test]
fn dpkg_ordering_edge_cases() {
    let holds = |c: &str, v: &str| {
        Constraint::parse(c)
            .expect("constraint")
            .satisfied_by(Some(v))
            .expect("a Debian version")
    };
    // `~` sorts before everything, even the end of the string.
    assert!(holds("<< 1.0", "1.0~rc1"));
    assert!(holds("<< 1.0~rc1", "1.0~~"));
    assert!(holds(">> 1.0~", "1.0~rc1"));
    assert!(holds("<< 1.0-1", "1.0~rc1-1"));
    // Epochs outweigh everything else.
    assert!(holds(">> 2.0", "1:0.1"));
    assert!(holds("= 1.0", "0:1.0"));
    assert!(holds("<< 1:0.1", "9.9"));
    // Revisions break ties of the upstream version.
    assert!(holds("<< 1.0-2", "1.0-1"));
    assert!(holds("<< 1.0-10", "1.0-9"));
    assert!(holds(">> 1.0", "1.0-1"));
    assert!(holds("<< 1.0-1", "1.0-0.1"));
    // Numbers compare as numbers, letters before non-letters.
    assert!(holds(">> 1.9", "1.10"));
    assert!(holds("= 1.01", "1.1"));
    assert!(holds("<< 1.0+", "1.0a"));
    assert!(holds("<< 1.0.1", "1.0a"));
    // Clauses all hold; the old `>` and `<` mean "or equal", as in dpkg.
    assert!(holds(">= 3.0.11, << 4", "3.0.13-1~deb12u1"));
    assert!(!holds(">= 3.0.11, << 4", "4.0.0"));
    assert!(holds("> 1.0", "1.0"));
    assert!(holds("< 1.0", "1.0"));
    assert!(!holds(">> 1.0", "1.0"));
    assert!(!holds("<< 1.0", "1.0"));
    // An installed version that is not a Debian version cannot be judged.
    assert_eq!(
        Constraint::parse(">= 1")
            .expect("constraint")
            .satisfied_by(Some("not a version!")),
        None
    );
    assert_eq!(
        Constraint::parse(">= 1")
            .expect("constraint")
            .satisfied_by(None),
        Some(false)
    );
    assert_eq!(Constraint::Absent.satisfied_by(None), Some(true));
    assert_eq!(Constraint::Present.satisfied_by(Some("1")), Some(true));
}

#[test]
fn an_unjudgeable_installed_version_is_a_low_finding() {
    let layer =
        parse("r.toml", "[[packages]]\nname = \"x\"\nversion = \">= 1\"\n").expect("parses");
    let mut t = Twin::default();
    t.packages.value.source = "rpm".into();
    t.packages.value.versions.insert("x".into(), "what?".into());
    let f = compare(&merge(&layer, None), &t, &Context::default());
    assert_eq!(
        subjects(&f),
        vec![("package:x", "what? (not a Debian version)", Severity::Low)]
    );
}

#[test]
fn scores_weigh_severities() {
    let f = |severity| Finding {
        rule: String::new(),
        subject: String::new(),
        desired: String::new(),
        actual: String::new(),
        severity,
    };
    assert_eq!(
        score(&[f(Severity::Low), f(Severity::Medium), f(Severity::High)]),
        14
    );
}
