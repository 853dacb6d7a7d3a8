//! Writes the SBOM of the `fleetmesh` binary (CycloneDX 1.5, JSON) to
//! `$OUT_DIR/sbom.cdx.json`, for `src/sbom.rs` to embed.
//!
//! The crate graph comes from `cargo metadata` (run with the `CARGO` that builds us,
//! offline and locked, for the target being built), trimmed to the packages `cargo tree`
//! says the build compiles: components are what `fleetmesh` reaches through normal
//! dependencies, transitively; dev-dependencies are left out.
//! What runs only at build time (build-dependencies, proc-macros and what they use) is
//! listed with scope `excluded`: it is part of the supply chain, not of the binary.
//! Checksums come from Cargo.lock. When `cargo metadata` fails, every package of
//! Cargo.lock is listed instead, with a warning.
//!
//! The output depends only on Cargo.lock and the manifests (no time, no random serial
//! number): the same sources give the same document and the same digest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `cargo metadata` and `cargo tree` take well under a second; past this, something
/// holds them (a lock) and the build goes on with Cargo.lock alone.
const METADATA_TIMEOUT: Duration = Duration::from_secs(60);

/// One package as the SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Component {
    name: String,
    version: String,
    /// Linked into the binary (`false`: used only while building it).
    linked: bool,
    license: Option<String>,
    checksum: Option<String>,
    /// The purls of the components it depends on.
    depends_on: BTreeSet<String>,
}

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    for file in ["Cargo.lock", "Cargo.toml", "actors/Cargo.toml"] {
        let path = manifest_dir.join(file);
        // A path that does not exist would rerun the script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let name = env("CARGO_PKG_NAME");
    let version = env("CARGO_PKG_VERSION");
    let checksums = lock_checksums(&manifest_dir.join("Cargo.lock"));

    let (root, components) = match from_metadata(&manifest_dir, &name, &checksums) {
        Ok(found) => found,
        Err(why) => {
            println!(
                "cargo:warning=SBOM: cargo metadata failed ({why}); listing every package of Cargo.lock, dev-dependencies included"
            );
            (
                Component {
                    name: name.clone(),
                    version: version.clone(),
                    linked: true,
                    license: std::env::var("CARGO_PKG_LICENSE").ok(),
                    checksum: None,
                    depends_on: BTreeSet::new(),
                },
                from_lock(&checksums, &name),
            )
        }
    };

    let document = bom(&root, &components);
    let out = PathBuf::from(env("OUT_DIR")).join("sbom.cdx.json");
    if let Err(e) = std::fs::write(&out, document) {
        panic!("cannot write {}: {e}", out.display());
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("cargo sets {key} for build scripts"))
}

fn purl(name: &str, version: &str) -> String {
    format!("pkg:cargo/{name}@{version}")
}

/// `(name, version)` to the sha256 Cargo.lock records (registry packages only).
fn lock_checksums(lock: &Path) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(lock) else {
        return out;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        println!("cargo:warning=SBOM: {} does not parse", lock.display());
        return out;
    };
    let packages = table.get("package").and_then(|p| p.as_array());
    for p in packages.into_iter().flatten() {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let (Some(n), Some(v)) = (field("name"), field("version")) {
            // Packages without a checksum (path, git) are kept, with none.
            out.insert((n, v), field("checksum").unwrap_or_default());
        }
    }
    out
}

/// Every package of Cargo.lock except the root: the fallback.
fn from_lock(lock: &BTreeMap<(String, String), String>, root: &str) -> Vec<Component> {
    lock.iter()
        .filter(|((n, _), _)| n != root)
        .map(|((n, v), sum)| Component {
            name: n.clone(),
            version: v.clone(),
            linked: true,
            license: None,
            checksum: (!sum.is_empty()).then(|| sum.clone()),
            depends_on: BTreeSet::new(),
        })
        .collect()
}

/// Runs `cargo metadata` and walks the resolve from the root package.
fn from_metadata(
    manifest_dir: &Path,
    root_name: &str,
    checksums: &BTreeMap<(String, String), String>,
) -> Result<(Component, Vec<Component>), String> {
    let meta = run_metadata(manifest_dir)?;
    let built = run_tree(manifest_dir, root_name)?;
    let packages = meta["packages"].as_array().ok_or("no packages")?;
    let by_id: BTreeMap<&str, &Value> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .ok_or("no resolve")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let manifest = manifest_dir.join("Cargo.toml");
    let root_id = packages
        .iter()
        .find(|p| {
            p["name"].as_str() == Some(root_name)
                && p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path())
        })
        .and_then(|p| p["id"].as_str())
        .ok_or("root package not in metadata")?;

    let is_proc_macro = |id: &str| {
        by_id.get(id).is_some_and(|p| {
            p["targets"].as_array().into_iter().flatten().any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
        })
    };
    // Breadth first; a package is linked when one path of normal edges that does not
    // pass through a proc-macro reaches it from the root.
    let mut linked: BTreeMap<&str, bool> = BTreeMap::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut queue = VecDeque::from([(root_id, true)]);
    while let Some((id, is_linked)) = queue.pop_front() {
        match linked.get(id) {
            Some(&was) if was || !is_linked => continue,
            _ => {}
        }
        linked.insert(id, is_linked);
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let Some(dep_id) = dep["pkg"].as_str() else {
                continue;
            };
            let kinds = dep["dep_kinds"].as_array().into_iter().flatten();
            let (mut normal, mut build) = (false, false);
            for k in kinds {
                match k["kind"].as_str() {
                    None => normal = true,
                    Some("build") => build = true,
                    // dev: tests and benches only.
                    Some(_) => {}
                }
            }
            let compiled = by_id.get(dep_id).is_some_and(|p| {
                let (n, v) = (p["name"].as_str(), p["version"].as_str());
                n.zip(v)
                    .is_some_and(|(n, v)| built.contains(&(n.to_string(), v.to_string())))
            });
            if !(normal || build) || !compiled {
                continue;
            }
            edges.entry(id).or_default().insert(dep_id);
            let child_linked = is_linked && normal && !is_proc_macro(dep_id);
            queue.push_back((dep_id, child_linked));
        }
    }

    let component = |id: &str| -> Option<Component> {
        let p = by_id.get(id)?;
        let name = p["name"].as_str()?.to_string();
        let version = p["version"].as_str()?.to_string();
        let checksum = checksums
            .get(&(name.clone(), version.clone()))
            .filter(|s| !s.is_empty())
            .cloned();
        let depends_on = edges
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let d = by_id.get(d)?;
                Some(purl(d["name"].as_str()?, d["version"].as_str()?))
            })
            .collect();
        Some(Component {
            name,
            version,
            linked: linked.get(id).copied().unwrap_or(false),
            // Old manifests write `MIT/Apache-2.0`, which SPDX spells with `OR`.
            license: p["license"].as_str().map(|l| l.replace('/', " OR ")),
            checksum,
            depends_on,
        })
    };
    let root = component(root_id).ok_or("root package incomplete")?;
    let components = linked
        .keys()
        .filter(|id| **id != root_id)
        .filter_map(|id| component(id))
        .collect();
    Ok((root, components))
}

/// `cargo metadata` as JSON.
fn run_metadata(manifest_dir: &Path) -> Result<Value, String> {
    let mut args = vec!["metadata", "--format-version", "1"];
    let target = std::env::var("TARGET").ok();
    if let Some(target) = &target {
        // Only the dependencies of the platform being built.
        args.extend(["--filter-platform", target]);
    }
    let out = run_cargo(manifest_dir, &args)?;
    serde_json::from_slice(&out).map_err(|e| format!("bad JSON: {e}"))
}

/// `(name, version)` of the packages `cargo tree` shows under the root, following
/// normal and build dependencies.
///
/// `cargo metadata` resolves features for the whole workspace, and counts an optional
/// dependency named only by a weak feature (`dep?/feature`) as enabled: its graph lists
/// crates the build never compiles. `cargo tree` applies the resolver the build uses.
fn run_tree(manifest_dir: &Path, root: &str) -> Result<BTreeSet<(String, String)>, String> {
    let mut args = vec!["tree", "-p", root, "-e", "normal,build"];
    args.extend(["--prefix", "none", "--format", "{p}"]);
    let target = std::env::var("TARGET").ok();
    if let Some(target) = &target {
        args.extend(["--target", target]);
    }
    let out = run_cargo(manifest_dir, &args)?;
    // Lines read `name vVERSION` and maybe `(path)`, `(proc-macro)` or `(*)`.
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('v')?;
            Some((name.to_string(), version.to_string()))
        })
        .collect())
}

/// Runs `cargo <args> --offline --locked` on our manifest, bounded by
/// [`METADATA_TIMEOUT`]; its standard output.
fn run_cargo(manifest_dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .args(["--offline", "--locked"])
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    // Read on threads so that a full pipe cannot stall the child while it is timed.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > METADATA_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {METADATA_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for cargo: {e}")),
        }
    };
    let out = out.join().map_err(|_| "reader failed")?;
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("cargo {}: {status}: {first}", args[0]));
    }
    Ok(out)
}

fn component_json(c: &Component, kind: &str) -> Value {
    let purl = purl(&c.name, &c.version);
    let mut v = json!({
        "type": kind,
        "bom-ref": purl,
        "name": c.name,
        "version": c.version,
        "purl": purl,
        "scope": if c.linked { "required" } else { "excluded" },
    });
    if let Some(l) = &c.license {
        v["licenses"] = json!([{ "expression": l }]);
    }
    if let Some(sum) = &c.checksum {
        v["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
    }
    v
}

/// The CycloneDX document, pretty-printed.
fn bom(root: &Component, components: &[Component]) -> String {
    let mut components = components.to_vec();
    components.sort();
    let mut root_json = component_json(root, "application");
    if let Some(map) = root_json.as_object_mut() {
        map.remove("scope");
    }
    let dependencies: Vec<Value> = std::iter::once(root)
        .chain(components.iter())
        .map(|c| {
            json!({
                "ref": purl(&c.name, &c.version),
                "dependsOn": c.depends_on,
            })
        })
        .collect();
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "fleetmesh build script",
                    "version": root.version,
                }],
            },
            "component": root_json,
        },
        "components": components
            .iter()
            .map(|c| component_json(c, "library"))
            .collect::<Vec<_>>(),
        "dependencies": dependencies,
    });
    // The serial number is a hash of the content: the same sources, the same number.
    // It is marked as a name-based UUID (version 5), though hashed with sha256 rather
    // than SHA-1, because the CycloneDX schema accepts only versions 1 to 5.
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let h = Sha256::digest(&body);
    let mut u = [0u8; 16];
    u.copy_from_slice(&h[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80; // the RFC 4122 variant
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    doc["serialNumber"] = json!(format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ));
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}
