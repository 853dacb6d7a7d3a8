//! Reading the desired-state files from `desired.dir`: every role's `<role>.toml` and
//! every node's override `nodes/<name>.toml`, re-read when they change. Parsing, merging
//! and the comparison with a twin are `fleetmesh_actors::desired`'s.
//!
//! Like the role policies (`crate::policy::all_reader`), a file that stops parsing keeps
//! its last good version, and its error is returned once per edit, for the caller to log;
//! a file removed from the directory is forgotten (its role or node then has no desired
//! state). Only `*.toml` directly in the directory and in `nodes/` are read, so that
//! examples kept in a subdirectory (the repository's `examples/`) apply to nobody.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetmesh_actors::desired::{self, Error, Layer};

/// One file as last read.
#[derive(Debug)]
struct Entry {
    /// What was last read: its text, or why it could not be read. An unchanged file is
    /// neither parsed again nor reported again.
    seen: Option<Result<String, String>>,
    /// The last version that parsed.
    good: Option<Layer>,
    /// Why the file as last read is refused, if it is.
    refused: Option<Error>,
}

/// The desired-state files of one directory, as last read. Call [`Loader::refresh`] to
/// re-read them (at start and every `desired.reload_ms`), [`Loader::spec`] for a node's
/// desired state.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    /// By role (the file's stem).
    roles: BTreeMap<String, Entry>,
    /// By node name (the file's stem under `nodes/`).
    nodes: BTreeMap<String, Entry>,
    /// Grows whenever what [`Loader::spec`] answers may have changed.
    generation: u64,
}

/// The good versions of every file, as of one refresh: what the region's master judges
/// twins with until the next change.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    roles: BTreeMap<String, Layer>,
    nodes: BTreeMap<String, Layer>,
}

impl Catalog {
    /// As [`Loader::spec`].
    pub fn spec(&self, role: &str, name: &str) -> Option<desired::Spec> {
        let role = self.roles.get(role)?;
        Some(desired::merge(role, self.nodes.get(name)))
    }
}

impl Loader {
    /// A loader of `dir` that has read nothing yet.
    pub fn new(dir: impl Into<PathBuf>) -> Loader {
        Loader {
            dir: dir.into(),
            roles: BTreeMap::new(),
            nodes: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Grows whenever a refresh changed what [`Loader::spec`] answers.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The files refused as they stand now (each keeps its last good version, if any).
    pub fn refused(&self) -> Vec<Error> {
        self.roles
            .values()
            .chain(self.nodes.values())
            .filter_map(|e| e.refused.clone())
            .collect()
    }

    /// The good versions of every file now.
    pub fn catalog(&self) -> Catalog {
        let good = |m: &BTreeMap<String, Entry>| {
            m.iter()
                .filter_map(|(k, e)| e.good.clone().map(|g| (k.clone(), g)))
                .collect()
        };
        Catalog {
            roles: good(&self.roles),
            nodes: good(&self.nodes),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The roles that have a file that parsed at least once.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles
            .iter()
            .filter(|(_, e)| e.good.is_some())
            .map(|(r, _)| r.as_str())
    }

    /// The desired state of node `name` of `role`: its role's file with its own override
    /// laid over it. `None` when the role has no file (such a node reports no drift).
    pub fn spec(&self, role: &str, name: &str) -> Option<desired::Spec> {
        let role = self.roles.get(role)?.good.as_ref()?;
        let node = self.nodes.get(name).and_then(|e| e.good.as_ref());
        Some(desired::merge(role, node))
    }

    /// Re-reads the files that changed since the last call; returns the problems found in
    /// them (each reported once, until the file changes again). A missing directory is
    /// no file at all, not an error: desired state is optional.
    pub fn refresh(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        let roles = toml_files(&self.dir);
        let mut changed = refresh(&mut self.roles, roles, "", &mut errors);
        let nodes = toml_files(&self.dir.join("nodes"));
        changed |= refresh(&mut self.nodes, nodes, "nodes/", &mut errors);
        if changed {
            self.generation += 1;
        }
        errors
    }
}

/// The `*.toml` files directly in `dir`, by stem.
fn toml_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && !p.is_dir())
        .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
        .collect()
}

/// Brings `entries` up to date with `files`; `prefix` is how errors and rule references
/// name the files' directory. Says whether a good version changed or went.
fn refresh(
    entries: &mut BTreeMap<String, Entry>,
    files: BTreeMap<String, PathBuf>,
    prefix: &str,
    errors: &mut Vec<Error>,
) -> bool {
    let before = entries.len();
    entries.retain(|stem, _| files.contains_key(stem));
    let mut changed = entries.len() != before;
    for (stem, path) in files {
        let name = format!("{prefix}{stem}.toml");
        let seen = std::fs::read_to_string(&path).map_err(|e| e.to_string());
        let entry = entries.entry(stem).or_insert(Entry {
            seen: None,
            good: None,
            refused: None,
        });
        if entry.seen.as_ref() == Some(&seen) {
            continue;
        }
        entry.refused = match &seen {
            Ok(text) => match desired::parse(&name, text) {
                Ok(layer) => {
                    entry.good = Some(layer);
                    changed = true;
                    None
                }
                Err(e) => Some(e),
            },
            Err(e) => Some(Error::file(
                &name,
                format!("cannot read {}: {e}", path.display()),
            )),
        };
        errors.extend(entry.refused.clone());
        entry.seen = Some(seen);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[[files]]\npath = \"/etc/motd\"\nstate = \"present\"\n";

    #[test]
    fn a_bad_edit_keeps_the_last_good_spec_until_fixed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let web = dir.path().join("web.toml");
        std::fs::write(&web, GOOD).expect("write");
        let mut loader = Loader::new(dir.path());
        assert_eq!(loader.refresh(), vec![]);
        let spec = loader.spec("web", "web-1").expect("a spec for web");
        assert!(spec.files.contains_key("/etc/motd"));
        assert_eq!(loader.roles().collect::<Vec<_>>(), vec!["web"]);

        std::fs::write(&web, "[[files]]\npath = \"/etc/motd\"\nsha256 = \"abc\"\n").expect("write");
        let errors = loader.refresh();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].to_string(),
            "web.toml:3: files[0].sha256: not 64 hex characters"
        );
        assert_eq!(
            loader.spec("web", "web-1"),
            Some(spec.clone()),
            "the last good stays"
        );
        assert_eq!(loader.refresh(), vec![], "reported once per edit");

        std::fs::write(
            &web,
            "[[files]]\npath = \"/etc/issue\"\nstate = \"absent\"\n",
        )
        .expect("write");
        assert_eq!(loader.refresh(), vec![]);
        let fixed = loader.spec("web", "web-1").expect("a spec for web");
        assert!(fixed.files.contains_key("/etc/issue"));
        assert!(!fixed.files.contains_key("/etc/motd"));
    }

    #[test]
    fn overrides_apply_to_their_node_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("web.toml"), GOOD).expect("write");
        std::fs::create_dir(dir.path().join("nodes")).expect("mkdir");
        std::fs::write(
            dir.path().join("nodes/web-1.toml"),
            "[[files]]\npath = \"/etc/motd\"\nstate = \"absent\"\nseverity = \"high\"\n",
        )
        .expect("write");
        let mut loader = Loader::new(dir.path());
        assert_eq!(loader.refresh(), vec![]);
        let one = loader.spec("web", "web-1").expect("spec");
        assert_eq!(one.files["/etc/motd"].origin, "nodes/web-1.toml");
        let two = loader.spec("web", "web-2").expect("spec");
        assert_eq!(two.files["/etc/motd"].origin, "web.toml");

        // A bad override names its path under the directory.
        std::fs::write(dir.path().join("nodes/web-1.toml"), "[[files]]\nsize = 1\n")
            .expect("write");
        let errors = loader.refresh();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, "nodes/web-1.toml");
        assert_eq!(errors[0].key, "files[0].size");
        assert_eq!(errors[0].line, Some(2));
        assert_eq!(loader.spec("web", "web-1"), Some(one));
    }

    #[test]
    fn no_file_no_spec_and_removed_files_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut loader = Loader::new(dir.path().join("missing"));
        assert_eq!(loader.refresh(), vec![]);
        assert_eq!(loader.spec("web", "web-1"), None);

        let mut loader = Loader::new(dir.path());
        std::fs::write(dir.path().join("web.toml"), GOOD).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not read").expect("write");
        assert_eq!(loader.refresh(), vec![]);
        assert_eq!(loader.spec("database", "db-1"), None);
        assert!(loader.spec("web", "web-1").is_some());
        std::fs::remove_file(dir.path().join("web.toml")).expect("rm");
        assert_eq!(loader.refresh(), vec![]);
        assert_eq!(loader.spec("web", "web-1"), None);
    }

    #[test]
    fn an_unreadable_file_is_reported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("web.toml"), [0xff, 0xfe, 0x00]).expect("write");
        let mut loader = Loader::new(dir.path());
        let errors = loader.refresh();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].file.as_str(), errors[0].line),
            ("web.toml", None)
        );
        assert_eq!(loader.refresh(), vec![]);
        assert_eq!(loader.spec("web", "web-1"), None);
    }

    /// The repository's directory asks nothing of any node (its files are examples), and
    /// every example is valid.
    #[test]
    fn the_repository_has_valid_examples_and_no_desired_state() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/desired");
        let mut loader = Loader::new(&repo);
        assert_eq!(loader.refresh(), vec![]);
        assert_eq!(loader.roles().count(), 0);
        let examples = repo.join("examples");
        let mut seen = 0;
        for (prefix, dir) in [("", examples.clone()), ("nodes/", examples.join("nodes"))] {
            for (stem, path) in toml_files(&dir) {
                let text = std::fs::read_to_string(&path).expect("read");
                desired::parse(&format!("{prefix}{stem}.toml"), &text)
                    .unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 3, "web, database and a node override");
        let mut examples = Loader::new(&examples);
        assert_eq!(examples.refresh(), vec![]);
        assert!(examples.spec("web", "web-1").is_some());
    }
}
