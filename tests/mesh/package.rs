//! Install and operate: the systemd unit passes `systemd-analyze verify` and is hardened
//! (`systemd-analyze security` exposure at most 5.0); the Debian package (cargo-deb) holds
//! the binary, the unit, the settings and the policies, and what it installs works: the
//! binary runs and the settings it ships load.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::BIN;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn need(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs {program} ({package}): run scripts/test.sh, which installs it"
    );
}

/// `systemd-analyze verify` and the exposure `systemd-analyze security` gives `unit`, with
/// its ExecStart pointed at this build's binary (verify checks that it exists).
fn analyze(unit: &Path) -> f64 {
    need("systemd-analyze", "the systemd package");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(unit).expect("unit");
    assert!(text.contains("ExecStart=/usr/bin/fleetmesh node"), "{text}");
    let copy = dir.path().join("fleetmesh.service");
    std::fs::write(&copy, text.replace("/usr/bin/fleetmesh", BIN)).expect("copy");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    assert!(!said.contains("fleetmesh.service:"), "warnings: {said}");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&security.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in: {line}"))
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let exposure = analyze(&repo().join("packaging/fleetmesh.service"));
    assert!(exposure <= 5.0, "exposure {exposure}");
}

#[test]
fn the_package_installs_what_a_node_needs() {
    need("cargo-deb", "cargo install cargo-deb");
    need("dpkg-deb", "dpkg");
    let tmp = tempfile::tempdir().expect("tempdir");
    let deb = tmp.path().join("fleetmesh.deb");
    // The binary this test run built (a release build would take far longer here).
    let built = Command::new(env!("CARGO"))
        .args(["deb", "--no-build", "--profile", "dev", "--output"])
        .arg(&deb)
        .current_dir(repo())
        .output()
        .expect("cargo deb runs");
    assert!(
        built.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let root = tmp.path().join("root");
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .expect("dpkg-deb runs");
    assert!(unpacked.success());
    for file in [
        "usr/bin/fleetmesh",
        "usr/lib/systemd/system/fleetmesh.service",
        "etc/fleetmesh/fleetmesh.toml",
        "etc/fleetmesh/policy/baseline.toml",
        "etc/fleetmesh/policy/database.toml",
        "etc/fleetmesh/policy/web.toml",
        "etc/fleetmesh/desired/README",
        "usr/share/doc/fleetmesh/examples/desired/web.toml",
    ] {
        assert!(root.join(file).is_file(), "{file} missing from the package");
    }
    for role in ["baseline", "database", "web"] {
        let shipped =
            std::fs::read(root.join(format!("etc/fleetmesh/policy/{role}.toml"))).expect("read");
        let repo_policy =
            std::fs::read(repo().join(format!("config/policy/{role}.toml"))).expect("read");
        assert_eq!(shipped, repo_policy, "{role}.toml");
    }
    // The installed binary runs, and the settings it ships load.
    let version = Command::new(root.join("usr/bin/fleetmesh"))
        .arg("--version")
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("fleetmesh "),
        "{version:?}"
    );
    let settings =
        std::fs::read_to_string(root.join("etc/fleetmesh/fleetmesh.toml")).expect("settings");
    let loaded = fleetmesh::settings::load_text(&settings).expect("the shipped settings load");
    assert_eq!(loaded.raw.node.data_dir, Path::new("/var/lib/fleetmesh"));
    assert_eq!(loaded.raw.desired.dir, Path::new("/etc/fleetmesh/desired"));
    // Control files: the maintainer scripts create the service's user.
    let control = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("postinst")
        .output()
        .expect("dpkg-deb runs");
    assert!(String::from_utf8_lossy(&control.stdout).contains("adduser --system"));
    let exposure = analyze(&root.join("usr/lib/systemd/system/fleetmesh.service"));
    assert!(exposure <= 5.0, "exposure {exposure}");
}
