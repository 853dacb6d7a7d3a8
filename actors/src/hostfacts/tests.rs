use super::*;

use proptest::prelude::*;

#[test]
fn pretty_name_quoted_bare_and_escaped() {
    let text =
        "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\n";
    assert_eq!(
        os_pretty_name(text).as_deref(),
        Some("Debian GNU/Linux 13 (trixie)")
    );
    assert_eq!(
        os_pretty_name("PRETTY_NAME='Alpine Linux'").as_deref(),
        Some("Alpine Linux")
    );
    assert_eq!(os_pretty_name("PRETTY_NAME=Arch").as_deref(), Some("Arch"));
    assert_eq!(
        os_pretty_name(r#"PRETTY_NAME="Say \"hi\" \$HOME \\ \n""#).as_deref(),
        Some(r#"Say "hi" $HOME \ \n"#)
    );
    assert_eq!(
        os_pretty_name(r"PRETTY_NAME=Two\ words # comment").as_deref(),
        Some("Two words")
    );
}

#[test]
fn pretty_name_absent_empty_commented_last_wins() {
    assert_eq!(os_pretty_name("NAME=Debian\n"), None);
    assert_eq!(os_pretty_name("PRETTY_NAME=\"  \"\n"), None);
    assert_eq!(os_pretty_name("# PRETTY_NAME=Old\n"), None);
    assert_eq!(
        os_pretty_name("PRETTY_NAME=One\nPRETTY_NAME=\"Two\"\n").as_deref(),
        Some("Two")
    );
    // An unterminated quote still names the system.
    assert_eq!(os_pretty_name("PRETTY_NAME=\"Cut").as_deref(), Some("Cut"));
}

const STATUS: &str = "\
Package: zlib1g
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 1:1.3.dfsg-3.1
Description: compression library - runtime
 zlib is a library implementing the deflate compression method found
 in gzip and PKZIP.
 .
 Status: hold ok installed

Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.22.11

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 2.0

Package: half
Status: install reinstreq half-installed
Architecture: amd64
Version: 0.1

Package: pinned
Status: hold ok installed
Architecture: all
Version: 3.0-1
";

#[test]
fn dpkg_keeps_installed_and_held_sorted() {
    assert_eq!(
        dpkg_installed(STATUS),
        vec![
            ("dpkg".to_string(), "1.22.11".to_string()),
            ("pinned".to_string(), "3.0-1".to_string()),
            ("zlib1g".to_string(), "1:1.3.dfsg-3.1".to_string()),
        ]
    );
}

#[test]
fn dpkg_crlf_whitespace_separators_and_field_case() {
    let text = "package: a\r\nstatus: install ok installed\r\nversion: 1\r\n \t \r\nPackage: b\nStatus: install ok installed\nVersion: 2";
    assert_eq!(
        dpkg_installed(text),
        vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string())
        ]
    );
}

#[test]
fn dpkg_multiarch_native_keeps_plain_name() {
    let text = "\
Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.41-1

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.41-1

Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.22

Package: wine32
Status: install ok installed
Architecture: i386
Version: 10.0
";
    assert_eq!(
        dpkg_installed(text),
        vec![
            ("dpkg".to_string(), "1.22".to_string()),
            ("libc6".to_string(), "2.41-1".to_string()),
            ("libc6:i386".to_string(), "2.41-1".to_string()),
            // Installed once: plain, though foreign.
            ("wine32".to_string(), "10.0".to_string()),
        ]
    );
}

#[test]
fn dpkg_multiarch_without_dpkg_uses_the_most_common_arch() {
    let text = "\
Package: a
Status: install ok installed
Architecture: arm64
Version: 1

Package: a
Status: install ok installed
Architecture: armhf
Version: 1

Package: b
Status: install ok installed
Architecture: arm64
Version: 1
";
    let names: Vec<String> = dpkg_installed(text).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["a", "a:armhf", "b"]);
}

#[test]
fn dpkg_garbage_and_missing_fields() {
    assert!(dpkg_installed("").is_empty());
    assert!(dpkg_installed("\n\n\0\u{fffd}::\n Package: x\n").is_empty());
    // No version: not counted.
    assert!(dpkg_installed("Package: x\nStatus: install ok installed\n").is_empty());
    // The same package and architecture twice (a damaged file): one entry.
    let twice = "Package: x\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\nPackage: x\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n";
    assert_eq!(dpkg_installed(twice).len(), 1);
}

#[test]
fn rpm_sorted_and_duplicates_joined() {
    let out = "zsh\t0:5.9-8.fc40\ngpg-pubkey\t0:b2-1\nbash\t0:5.2-3\ngpg-pubkey\t0:a1-1\nbroken line\n\t0:1\n";
    assert_eq!(
        rpm_installed(out),
        vec![
            ("bash".to_string(), "0:5.2-3".to_string()),
            ("gpg-pubkey".to_string(), "0:a1-1 0:b2-1".to_string()),
            ("zsh".to_string(), "0:5.9-8.fc40".to_string()),
        ]
    );
}

#[test]
fn meminfo_total() {
    let text = "MemTotal:        16303428 kB\nMemFree:          123 kB\n";
    assert_eq!(mem_total_bytes(text), Some(16_303_428 * 1024));
    assert_eq!(mem_total_bytes("MemTotal: 42\n"), Some(42));
    assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
    assert_eq!(mem_total_bytes("MemTotal: x kB\n"), None);
    assert_eq!(mem_total_bytes("MemTotal: 1 MB\n"), None);
    assert_eq!(mem_total_bytes(&format!("MemTotal: {} kB", u64::MAX)), None);
}

#[test]
fn cpu_lists() {
    assert_eq!(cpu_count("0-3,8,10-11\n"), Some(7));
    assert_eq!(cpu_count("0\n"), Some(1));
    assert_eq!(cpu_count("0-63"), Some(64));
    assert_eq!(cpu_count(""), None);
    assert_eq!(cpu_count("\n"), None);
    assert_eq!(cpu_count("3-1"), None);
    assert_eq!(cpu_count("0-"), None);
    assert_eq!(cpu_count("a,b"), None);
    assert_eq!(cpu_count("0,,1"), None);
    assert_eq!(cpu_count(&format!("0-{}", u32::MAX)), None);
}

proptest! {
    #[test]
    fn dpkg_never_panics(text in any::<String>()) {
        let _ = dpkg_installed(&text);
    }

    #[test]
    fn dpkg_never_panics_on_status_like_text(
        lines in proptest::collection::vec(
            "(Package|Status|Version|Architecture|package| |\t|)(: ?)?[a-z0-9 :.+~-]{0,12}",
            0..40,
        )
    ) {
        let text = lines.join("\n");
        let out = dpkg_installed(&text);
        // One entry per name, sorted.
        prop_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn other_parsers_never_panic(text in any::<String>()) {
        let _ = os_pretty_name(&text);
        let _ = rpm_installed(&text);
        let _ = mem_total_bytes(&text);
        let _ = cpu_count(&text);
    }
}
