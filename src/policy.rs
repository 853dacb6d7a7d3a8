//! Reading the node's role policy from disk: which file applies, and a reader the policy
//! actor polls. Parsing, validation and decisions are `fleetmesh_actors::policy`'s.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fleetmesh_actors::actor::policy::ReadPolicy;
use fleetmesh_actors::policy::Error;
use fleetmesh_actors::policy::judge::Judge;

/// The role policies compiled into the binary (the repository's `config/policy/`), by
/// role: a node whose `policy.dir` lacks its role's file (and `baseline.toml`) is judged
/// by these, so that a node started anywhere decides as one started in the repository.
pub const SHIPPED: [(&str, &str); 3] = [
    ("baseline", include_str!("../config/policy/baseline.toml")),
    ("database", include_str!("../config/policy/database.toml")),
    ("web", include_str!("../config/policy/web.toml")),
];

/// The compiled-in policy for `role` (its own, else baseline's): file name and text.
pub fn shipped(role: &str) -> (String, &'static str) {
    let (name, text) = SHIPPED
        .iter()
        .find(|(r, _)| *r == role)
        .or_else(|| SHIPPED.iter().find(|(r, _)| *r == "baseline"))
        .copied()
        .unwrap_or(("baseline", ""));
    (format!("{name}.toml"), text)
}

/// The file that judges a node of `role`: `<dir>/<role>.toml`, or `<dir>/baseline.toml`
/// (the strictest) when the role has no file of its own.
pub fn file_for(dir: &Path, role: &str) -> PathBuf {
    let own = dir.join(format!("{role}.toml"));
    if own.is_file() {
        own
    } else {
        dir.join("baseline.toml")
    }
}

/// Reads the file that applies now: its name (as rule references show it) and text; the
/// compiled-in policy while `policy.dir` has none for the role.
fn read(dir: &Path, role: &str) -> Result<(String, String), Error> {
    let path = file_for(dir, role);
    if !path.exists() {
        let (name, text) = shipped(role);
        return Ok((name, text.to_string()));
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((name, text)),
        Err(e) => Err(Error::file(
            &name,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// A reader for the policy actor.
pub fn reader(dir: PathBuf, role: String) -> ReadPolicy {
    Box::new(move || read(&dir, &role))
}

/// The judge of a node starting now. A policy file that exists must be valid (the node
/// refuses to start with a broken one); with no file for its role in `policy.dir` the node
/// starts on the compiled-in policy of its role (or baseline's) and says so.
pub fn judge(dir: &Path, role: &str, ring: usize, now_unix_ms: u64) -> anyhow::Result<Judge> {
    let path = file_for(dir, role);
    let (name, text) = read(dir, role)
        .map_err(anyhow::Error::new)
        .with_context(|| {
            format!(
                "no policy for role `{role}` in policy.dir {}",
                dir.display()
            )
        })?;
    let judge = Judge::new(&name, &text, ring, now_unix_ms)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("invalid policy in policy.dir {}", dir.display()))?;
    if path.exists() {
        tracing::info!(
            file = %path.display(),
            version = judge.policy().version(),
            rules = judge.policy().rules().len(),
            "policy loaded"
        );
    } else {
        tracing::info!(
            dir = %dir.display(),
            file = %name,
            version = judge.policy().version(),
            "no policy file for this role in policy.dir: judging with the compiled-in policy (a file put there later is loaded)"
        );
    }
    Ok(judge)
}

/// A reader of every role's policy in `dir` (`<role>.toml`, over the compiled-in ones),
/// for the region master's judgement of other members' spikes. A file that does not parse keeps its last good
/// version; its error is logged once per edit.
pub fn all_reader(dir: PathBuf) -> fleetmesh_actors::actor::fleet::ReadPolicies {
    use std::collections::{BTreeMap, HashMap};
    // The compiled-in policies, until the dir has a role's own file.
    let mut last: BTreeMap<String, fleetmesh_actors::policy::Policy> = SHIPPED
        .iter()
        .filter_map(|(role, text)| {
            fleetmesh_actors::policy::parse(&format!("{role}.toml"), text)
                .ok()
                .map(|p| (role.to_string(), p))
        })
        .collect();
    let mut seen: HashMap<String, String> = HashMap::new();
    Box::new(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return last.clone();
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let Some(role) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if seen.get(&role) == Some(&text) {
                continue;
            }
            let name = format!("{role}.toml");
            match fleetmesh_actors::policy::parse(&name, &text) {
                Ok(p) => {
                    last.insert(role.clone(), p);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "role policy refused for the region's judgement; its last good version stays")
                }
            }
            seen.insert(role, text);
        }
        last.clone()
    })
}

/// The tail of a package-manager log read at start-up: the latest runs are the ones that
/// can explain changes found then.
const LOG_TAIL_BYTES: u64 = 4 << 20;

/// The package-manager runs recorded in `logs` (host paths, resolved under `root`, read
/// whether or not they are watched). A log that is missing or unreadable records none.
pub fn package_runs(root: &Path, logs: &[String]) -> fleetmesh_actors::pkglog::Runs {
    use fleetmesh_actors::pkglog::{self, Clock, Format};
    use std::io::{Read as _, Seek as _};
    let clock = Clock {
        offset_s: local_offset_s(),
        year: pkglog::year_of(fleetmesh_actors::actor::unix_ms()),
    };
    let mut runs = Vec::new();
    for log in logs {
        let Some(format) = Format::of(log) else {
            continue;
        };
        let path = root.join(log.trim_start_matches('/'));
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let from = len.saturating_sub(LOG_TAIL_BYTES);
        let mut bytes = Vec::new();
        if let Err(e) = file
            .seek(std::io::SeekFrom::Start(from))
            .and_then(|_| file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes))
        {
            tracing::warn!(log = %path.display(), error = %e, "cannot read a package-manager log");
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        runs.extend(pkglog::runs(format, log, &text, clock));
    }
    pkglog::Runs(runs)
}

/// The local time zone's offset from UTC now, in seconds (dpkg and apt log local times),
/// as `date +%z` prints it; 0 (UTC) when it cannot be read.
fn local_offset_s() -> i64 {
    let out = std::process::Command::new("date")
        .arg("+%z")
        .stderr(std::process::Stdio::null())
        .output();
    let text = out
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let sign = match text.as_bytes().first() {
        Some(b'-') => -1,
        Some(b'+') => 1,
        _ => return 0,
    };
    let hours = text.get(1..3).and_then(|h| h.parse::<i64>().ok());
    let minutes = text.get(3..5).and_then(|m| m.parse::<i64>().ok());
    match (hours, minutes) {
        (Some(h), Some(m)) => sign * (h * 3600 + m * 60),
        _ => 0,
    }
}

/// When a change found at start-up was made: the modification time of the changed file
/// (its directory's for a removed one), or of the account file for users and groups.
pub fn changed_at(root: PathBuf) -> fleetmesh_actors::actor::policy::ChangedAt {
    use fleetmesh_actors::spike::Kind;
    let mtime = move |host: &str| -> Option<u64> {
        let m = std::fs::symlink_metadata(root.join(host.trim_start_matches('/'))).ok()?;
        let t = m
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        u64::try_from(t.as_millis()).ok()
    };
    Box::new(move |spike| match spike.kind {
        Kind::File => mtime(&spike.subject).or_else(|| {
            let parent = Path::new(&spike.subject).parent()?;
            mtime(&parent.to_string_lossy())
        }),
        Kind::User => mtime("/etc/passwd"),
        Kind::Group => mtime("/etc/group"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_policy_files_judges_as_one_in_the_repository() {
        let empty = tempfile::tempdir().expect("tempdir");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy");
        for role in ["web", "database", "baseline", "cache"] {
            let outside = judge(empty.path(), role, 10, 0).expect("compiled-in policy");
            let inside = judge(&repo, role, 10, 0).expect("repository policy");
            assert_eq!(
                outside.policy().version(),
                inside.policy().version(),
                "role {role}"
            );
            assert_eq!(
                read(empty.path(), role).expect("read").0,
                file_for(&repo, role)
                    .file_name()
                    .expect("a file")
                    .to_string_lossy(),
                "role {role}: the same file name in rule references"
            );
        }
        // A file put in the dir later wins.
        std::fs::write(empty.path().join("web.toml"), "").expect("write");
        let (name, text) = read(empty.path(), "web").expect("read");
        assert_eq!((name.as_str(), text.as_str()), ("web.toml", ""));
    }
}
