//! The host probe: reads what fills a twin's `Host`, `Software` and `Packages` sections.
//!
//! The machine's own facts (hostname, kernel, CPUs, memory, DMI) come from the real
//! `/proc` and `/sys`; the installed system (os-release, the package database) from under
//! the node's `watch.root`, like every other path the node watches. A fact that cannot be
//! read, or reads empty, is `None`: the twin shows it as unknown. The text formats belong
//! to [`fleetmesh_actors::hostfacts`]; this module only reads and runs.
//!
//! Everything here blocks (file reads, `rpm` for up to [`RPM_TIMEOUT`]): call it from a
//! blocking thread, not from an async task.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetmesh_actors::hostfacts;
use fleetmesh_actors::spike::Digest;
use fleetmesh_actors::twin::{Host, Software};
use sha2::{Digest as _, Sha256};

/// How long `rpm -qa` may run before it is killed.
pub const RPM_TIMEOUT: Duration = Duration::from_secs(10);

/// What the `rpm` query prints: one `name<TAB>epoch:version-release` line per package.
const RPM_QUERY_FORMAT: &str = "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n";

/// Where the probe reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The kernel's process filesystem (`/proc`).
    pub proc_dir: PathBuf,
    /// The kernel's device filesystem (`/sys`).
    pub sys_dir: PathBuf,
    /// The node's `watch.root`: os-release and the package database are under it.
    pub root: PathBuf,
}

impl Sources {
    /// The real `/proc` and `/sys`, and the installed system under `root`.
    pub fn system(root: &Path) -> Sources {
        Sources {
            proc_dir: PathBuf::from("/proc"),
            sys_dir: PathBuf::from("/sys"),
            root: root.to_path_buf(),
        }
    }
}

/// A package database that is there but could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot run {program} for the rpm database under {root}: {source}")]
    RpmSpawn {
        program: PathBuf,
        root: PathBuf,
        source: io::Error,
    },
    #[error("rpm did not list the database under {root} within {timeout:?}: killed")]
    RpmTimeout { root: PathBuf, timeout: Duration },
    #[error("rpm failed on the database under {root} ({status}): {stderr}")]
    RpmFailed {
        root: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The machine: kernel facts from the real `/proc` and `/sys`, os-release under `root`.
pub fn host(root: &Path) -> Host {
    host_from(&Sources::system(root))
}

/// [`host`], reading from `sources`.
pub fn host_from(sources: &Sources) -> Host {
    let proc_ = |p: &str| text(&sources.proc_dir.join(p));
    let dmi = |p: &str| text(&sources.sys_dir.join("class/dmi/id").join(p)).and_then(value);
    let os = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| text(&sources.root.join(p)))
        .and_then(|t| hostfacts::os_pretty_name(&t));
    Host {
        hostname: proc_("sys/kernel/hostname").and_then(value),
        kernel: proc_("sys/kernel/osrelease").and_then(value),
        os,
        cpus: text(&sources.sys_dir.join("devices/system/cpu/online"))
            .and_then(|t| hostfacts::cpu_count(&t)),
        memory_bytes: proc_("meminfo").and_then(|t| hostfacts::mem_total_bytes(&t)),
        vendor: dmi("sys_vendor"),
        product: dmi("product_name"),
        // Often readable by root only: then unknown.
        serial: dmi("product_serial"),
    }
}

/// The file's text; `None` when it cannot be read (absent, no permission, not UTF-8).
fn text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A one-line value, trimmed; `None` when empty.
fn value(text: String) -> Option<String> {
    let v = text.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// The installed packages under `root` with their source: `dpkg` when dpkg's status file
/// is there, else `rpm` when an rpm database is there and `rpm` is on the `PATH`, else
/// `none` with an empty list. Sorted by name.
pub fn packages(root: &Path) -> Result<(String, Vec<(String, String)>), Error> {
    packages_with(root, find_on_path("rpm").as_deref(), RPM_TIMEOUT)
}

/// [`packages`] with the `rpm` program (`None`: none installed) and its time limit given.
pub fn packages_with(
    root: &Path,
    rpm: Option<&Path>,
    timeout: Duration,
) -> Result<(String, Vec<(String, String)>), Error> {
    let status = root.join("var/lib/dpkg/status");
    match std::fs::read(&status) {
        // The file is the database: bytes that are not UTF-8 (a damaged stanza) must not
        // hide the rest of it.
        Ok(bytes) => {
            let list = hostfacts::dpkg_installed(&String::from_utf8_lossy(&bytes));
            return Ok(("dpkg".to_string(), list));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Read {
                path: status,
                source,
            });
        }
    }
    if let Some(rpm) = rpm
        && root.join("var/lib/rpm").is_dir()
    {
        let out = run_rpm(rpm, root, timeout)?;
        return Ok(("rpm".to_string(), hostfacts::rpm_installed(&out)));
    }
    Ok(("none".to_string(), Vec::new()))
}

/// `rpm --root <root> -qa`, killed after `timeout`.
fn run_rpm(program: &Path, root: &Path, timeout: Duration) -> Result<String, Error> {
    let mut child = Command::new(program)
        .arg("--root")
        .arg(root)
        .args(["-qa", "--queryformat", RPM_QUERY_FORMAT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::RpmSpawn {
            program: program.to_path_buf(),
            root: root.to_path_buf(),
            source,
        })?;
    // Drained on their own threads: a full pipe would stop rpm before it exits.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() >= timeout => {
                // Killing closes the pipes, so the readers end too.
                let _ = child.kill();
                let _ = child.wait();
                break Err(Error::RpmTimeout {
                    root: root.to_path_buf(),
                    timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(Error::RpmSpawn {
                    program: program.to_path_buf(),
                    root: root.to_path_buf(),
                    source,
                });
            }
        }
    };
    let joined = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let (out, err) = (joined(stdout), joined(stderr));
    let status = status?;
    if !status.success() {
        return Err(Error::RpmFailed {
            root: root.to_path_buf(),
            status,
            stderr: err.trim().to_string(),
        });
    }
    Ok(out)
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// The first executable file named `name` in the `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The binary this node runs: its version, the sha256 of its executable and of its SBOM.
pub fn software() -> Software {
    Software {
        version: env!("CARGO_PKG_VERSION").to_string(),
        exe_sha256: std::env::current_exe()
            .ok()
            .and_then(|p| file_sha256(&p).ok()),
        sbom_sha256: Some(crate::sbom::digest()),
        sbom_components: crate::sbom::components(),
    }
}

/// sha256 of a file, read in pieces: the executable is tens of MiB.
fn file_sha256(path: &Path) -> io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    io::copy(&mut file, &mut hash)?;
    Ok(Digest(hash.finalize().into()))
}

#[cfg(test)]
mod tests;
