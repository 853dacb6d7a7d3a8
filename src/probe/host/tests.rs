use super::*;

use std::os::unix::fs::PermissionsExt;

/// A fake `/proc`, `/sys` and root in one temporary directory.
fn sources(dir: &Path) -> Sources {
    Sources {
        proc_dir: dir.join("proc"),
        sys_dir: dir.join("sys"),
        root: dir.join("root"),
    }
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create dirs");
    }
    std::fs::write(path, text).expect("write");
}

#[test]
fn host_reads_every_fact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sources(dir.path());
    write(&s.proc_dir.join("sys/kernel/hostname"), "web-1\n");
    write(&s.proc_dir.join("sys/kernel/osrelease"), "6.12.0-1-amd64\n");
    write(
        &s.proc_dir.join("meminfo"),
        "MemTotal: 2048 kB\nMemFree: 1 kB\n",
    );
    write(&s.sys_dir.join("devices/system/cpu/online"), "0-3,8\n");
    write(&s.sys_dir.join("class/dmi/id/sys_vendor"), "QEMU\n");
    write(
        &s.sys_dir.join("class/dmi/id/product_name"),
        "Standard PC\n",
    );
    write(&s.sys_dir.join("class/dmi/id/product_serial"), "SN-42\n");
    write(
        &s.root.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
    );
    assert_eq!(
        host_from(&s),
        Host {
            hostname: Some("web-1".into()),
            kernel: Some("6.12.0-1-amd64".into()),
            os: Some("Debian GNU/Linux 13 (trixie)".into()),
            cpus: Some(5),
            memory_bytes: Some(2048 * 1024),
            vendor: Some("QEMU".into()),
            product: Some("Standard PC".into()),
            serial: Some("SN-42".into()),
        }
    );
}

#[test]
fn host_unreadable_or_blank_is_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sources(dir.path());
    write(&s.proc_dir.join("sys/kernel/hostname"), "  \n");
    write(&s.sys_dir.join("class/dmi/id/sys_vendor"), "\n");
    // A directory where the serial should be: unreadable, as it is for a non-root user.
    std::fs::create_dir_all(s.sys_dir.join("class/dmi/id/product_serial")).expect("mkdir");
    write(&s.root.join("usr/lib/os-release"), "PRETTY_NAME=\n");
    assert_eq!(host_from(&s), Host::default());
}

#[test]
fn os_release_falls_back_to_usr_lib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sources(dir.path());
    write(
        &s.root.join("usr/lib/os-release"),
        "PRETTY_NAME='Fedora Linux 41'\n",
    );
    assert_eq!(host_from(&s).os.as_deref(), Some("Fedora Linux 41"));
    write(&s.root.join("etc/os-release"), "PRETTY_NAME=Override\n");
    assert_eq!(host_from(&s).os.as_deref(), Some("Override"));
}

#[test]
fn host_of_this_machine_does_not_fail() {
    // The real /proc: whatever it holds, the kernel release is there on Linux.
    let h = host(Path::new("/nonexistent-root"));
    assert!(h.kernel.is_some());
    assert_eq!(h.os, None);
}

#[test]
fn packages_from_dpkg() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        &dir.path().join("var/lib/dpkg/status"),
        "Package: b\nStatus: install ok installed\nVersion: 2\n\nPackage: a\nStatus: hold ok installed\nVersion: 1\n",
    );
    // dpkg wins over an rpm database.
    std::fs::create_dir_all(dir.path().join("var/lib/rpm")).expect("mkdir");
    let (source, list) =
        packages_with(dir.path(), Some(Path::new("/bin/false")), RPM_TIMEOUT).expect("read");
    assert_eq!(source, "dpkg");
    assert_eq!(
        list,
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
}

#[test]
fn packages_none_without_a_database_or_rpm() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        packages_with(dir.path(), None, RPM_TIMEOUT).expect("none"),
        ("none".to_string(), Vec::new())
    );
    // An rpm database but no rpm program.
    std::fs::create_dir_all(dir.path().join("var/lib/rpm")).expect("mkdir");
    assert_eq!(
        packages(dir.path()).map(|p| p.0).ok().as_deref(),
        // The test machine may have rpm installed; without it the answer is "none".
        Some(if find_on_path("rpm").is_some() {
            "rpm"
        } else {
            "none"
        })
    )
}

#[test]
fn unreadable_status_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = dir.path().join("var/lib/dpkg/status");
    std::fs::create_dir_all(&status).expect("mkdir");
    match packages_with(dir.path(), None, RPM_TIMEOUT) {
        Err(Error::Read { path, .. }) => assert_eq!(path, status),
        other => panic!("{other:?}"),
    }
}

/// A stand-in for `rpm`: a shell script that checks its arguments and runs `body`.
fn fake_rpm(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("rpm");
    write(
        &path,
        &format!(
            "#!/bin/sh\n[ \"$1\" = --root ] && [ \"$3\" = -qa ] && [ \"$4\" = --queryformat ] || exit 9\n{body}\n"
        ),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn packages_from_rpm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/rpm")).expect("mkdir");
    let rpm = fake_rpm(dir.path(), "printf 'zsh\\t0:5.9-8\\nbash\\t0:5.2-3\\n'");
    let (source, list) = packages_with(&root, Some(&rpm), RPM_TIMEOUT).expect("rpm");
    assert_eq!(source, "rpm");
    assert_eq!(
        list,
        vec![
            ("bash".into(), "0:5.2-3".into()),
            ("zsh".into(), "0:5.9-8".into())
        ]
    );
}

#[test]
fn rpm_failure_and_hang_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/rpm")).expect("mkdir");
    let failing = fake_rpm(dir.path(), "echo 'db locked' >&2; exit 1");
    match packages_with(&root, Some(&failing), RPM_TIMEOUT) {
        Err(Error::RpmFailed { stderr, .. }) => assert_eq!(stderr, "db locked"),
        other => panic!("{other:?}"),
    }
    let hanging = dir.path().join("hang");
    std::fs::create_dir_all(&hanging).expect("mkdir");
    // `exec` so that the kill reaches the sleeping process itself.
    let hanging = fake_rpm(&hanging, "exec sleep 30");
    let start = Instant::now();
    match packages_with(&root, Some(&hanging), Duration::from_millis(200)) {
        Err(Error::RpmTimeout { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn software_names_this_binary_and_its_sbom() {
    let s = software();
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    let exe = std::env::current_exe().expect("current exe");
    let bytes = std::fs::read(exe).expect("read exe");
    let expected: [u8; 32] = Sha256::digest(&bytes).into();
    assert_eq!(s.exe_sha256, Some(Digest(expected)));
    assert_eq!(s.sbom_sha256, Some(crate::sbom::digest()));
    assert!(s.sbom_components > 0);
}
