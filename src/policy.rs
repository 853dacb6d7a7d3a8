//! Reading the node's role policy from disk: which file applies, and a reader the policy
//! actor polls. Parsing, validation and decisions are `fleetmesh_actors::policy`'s.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fleetmesh_actors::actor::policy::ReadPolicy;
use fleetmesh_actors::policy::Error;
use fleetmesh_actors::policy::judge::Judge;

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

/// Reads the file that applies now: its name (as rule references show it) and text.
fn read(dir: &Path, role: &str) -> Result<(String, String), Error> {
    let path = file_for(dir, role);
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
/// refuses to start with a broken one); with no file at all the node starts on the
/// built-in defaults (every change is `consult`, metric samples approved) and says so.
pub fn judge(dir: &Path, role: &str, ring: usize, now_unix_ms: u64) -> anyhow::Result<Judge> {
    let path = file_for(dir, role);
    if !path.exists() {
        tracing::warn!(
            file = %path.display(),
            "no policy file for this role: deciding with the built-in defaults (every change is consult) until one appears"
        );
        return Judge::new("builtin", "", ring, now_unix_ms).map_err(anyhow::Error::new);
    }
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
    tracing::info!(
        file = %file_for(dir, role).display(),
        version = judge.policy().version(),
        rules = judge.policy().rules().len(),
        "policy loaded"
    );
    Ok(judge)
}

/// A reader of every role's policy in `dir` (`<role>.toml`), for the region master's
/// judgement of other members' spikes. A file that does not parse keeps its last good
/// version; its error is logged once per edit.
pub fn all_reader(dir: PathBuf) -> fleetmesh_actors::actor::fleet::ReadPolicies {
    use std::collections::{BTreeMap, HashMap};
    let mut last: BTreeMap<String, fleetmesh_actors::policy::Policy> = BTreeMap::new();
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
