//! The desired-state file format (TOML) and its validation: one file's text in, a
//! [`Layer`] or an [`Error`] naming the file, the line and the key path out. Nothing is
//! read from disk here.
//!
//! ```toml
//! [fleetmesh]
//! versions = ["0.1.*"]          # semver requirements; any may match; empty or left out: any
//! digests = ["sha256:<64 hex>"] # the executable's allowed digests; empty or left out: any
//! severity = "high"             # left out: medium for versions, high for digests
//! [policy]
//! version = "2"                 # or "region": the region master's own version
//! [[files]]
//! path = "/etc/ssh/sshd_config"
//! sha256 = "<64 hex>"           # or state = "present" | "absent": exactly one of the two
//! [[packages]]
//! name = "openssl"
//! version = ">= 3.0.11"         # Debian clauses, or "present" | "absent"
//! [ports]
//! expected = [22]               # must listen (medium)
//! forbidden = [23]              # must not listen (high)
//! [[services]]
//! name = "nginx-http"
//! state = "up"                  # up | down
//! ```
//!
//! Every table and entry takes `severity` (low, medium, high). Unknown keys are refused.
//! The document is walked as spanned TOML rather than deserialized into structs so that
//! every error can name its key path (`files[1].sha256`, lists from 0), not only a line.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    Constraint, DEFAULT_SEVERITY, Error, FileRule, FileWant, Layer, PackageRule, PolicyWant,
    ServiceRule, Severity,
};
use crate::spike::Digest;

type Value<'i> = Spanned<DeValue<'i>>;

/// The states a service probe reports (`crate::service::State`).
const SERVICE_STATES: [&str; 2] = ["up", "down"];

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The file being read, to build errors.
struct Doc<'a> {
    file: &'a str,
    text: &'a str,
}

impl Doc<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Error {
        Error {
            file: self.file.to_string(),
            line: Some(line_of(self.text, span.start)),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The table at `v`, with its keys checked against `allowed`.
    fn table<'v, 'i>(
        &self,
        v: &'v Value<'i>,
        key: &str,
        allowed: &[&str],
    ) -> Result<&'v DeTable<'i>, Error> {
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.err(v.span(), key, "must be a table"));
        };
        for k in t.keys() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                return Err(self.err(
                    k.span(),
                    &join(key, k.get_ref()),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(t)
    }

    fn array<'v, 'i>(&self, v: &'v Value<'i>, key: &str) -> Result<&'v [Value<'i>], Error> {
        match v.get_ref() {
            DeValue::Array(a) => Ok(a),
            _ => Err(self.err(v.span(), key, "must be a list")),
        }
    }

    fn string<'v>(&self, v: &'v Value<'_>, key: &str) -> Result<&'v str, Error> {
        v.get_ref()
            .as_str()
            .ok_or_else(|| self.err(v.span(), key, "must be a string"))
    }

    /// A list of strings, each with its span.
    fn strings<'v>(
        &self,
        v: &'v Value<'_>,
        key: &str,
    ) -> Result<Vec<(&'v str, Range<usize>)>, Error> {
        let items = self.array(v, key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push((self.string(item, &format!("{key}[{i}]"))?, item.span()));
        }
        Ok(out)
    }

    fn severity(&self, v: &Value<'_>, key: &str) -> Result<Severity, Error> {
        match self.string(v, key)? {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            other => Err(self.err(
                v.span(),
                key,
                format!("`{other}` is not a severity (low, medium or high)"),
            )),
        }
    }

    /// A list of ports (1-65535).
    fn ports(&self, v: &Value<'_>, key: &str) -> Result<BTreeSet<u16>, Error> {
        let mut out = BTreeSet::new();
        for (i, item) in self.array(v, key)?.iter().enumerate() {
            let k = format!("{key}[{i}]");
            let port = item
                .get_ref()
                .as_integer()
                .and_then(|n| i64::from_str_radix(n.as_str(), n.radix()).ok())
                .ok_or_else(|| self.err(item.span(), &k, "must be a port number"))?;
            match u16::try_from(port) {
                Ok(p) if p > 0 => {
                    out.insert(p);
                }
                _ => {
                    return Err(self.err(
                        item.span(),
                        &k,
                        format!("{port} is not a port (1-65535)"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The entries of a `[[files]]`-like list, each a checked table.
    fn entries<'v, 'i>(
        &self,
        v: &'v Value<'i>,
        key: &str,
        allowed: &[&str],
    ) -> Result<Vec<(String, &'v Value<'i>, &'v DeTable<'i>)>, Error> {
        let mut out = Vec::new();
        for (i, item) in self.array(v, key)?.iter().enumerate() {
            let k = format!("{key}[{i}]");
            let t = self.table(item, &k, allowed)?;
            out.push((k, item, t));
        }
        Ok(out)
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn get<'v, 'i>(t: &'v DeTable<'i>, key: &str) -> Option<&'v Value<'i>> {
    t.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

/// `sha256:<64 hex>` (the prefix optional), lower or upper case.
fn digest(text: &str) -> Option<Digest> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Digest(out))
}

/// Parses and validates one desired-state file. `file` names it in errors and in the
/// rule references of findings (`web.toml`, `nodes/web-1.toml`).
pub fn parse(file: &str, text: &str) -> Result<Layer, Error> {
    let doc = Doc { file, text };
    let root = DeTable::parse(text).map_err(|e| Error {
        file: file.to_string(),
        line: e.span().map(|s| line_of(text, s.start)),
        key: String::new(),
        message: e.message().trim().to_string(),
    })?;
    let root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
    let top = doc.table(
        &root,
        "",
        &[
            "fleetmesh",
            "policy",
            "files",
            "packages",
            "ports",
            "services",
        ],
    )?;
    let mut layer = Layer {
        file: file.to_string(),
        ..Layer::default()
    };
    if let Some(v) = get(top, "fleetmesh") {
        fleetmesh(&doc, v, &mut layer)?;
    }
    if let Some(v) = get(top, "policy") {
        let t = doc.table(v, "policy", &["version", "severity"])?;
        if let Some(v) = get(t, "version") {
            let s = doc.string(v, "policy.version")?.trim();
            layer.policy = Some(match s {
                "" => return Err(doc.err(v.span(), "policy.version", "must not be empty")),
                "region" => PolicyWant::Region,
                s => PolicyWant::Version(s.to_string()),
            });
        }
        if let Some(v) = get(t, "severity") {
            layer.policy_severity = Some(doc.severity(v, "policy.severity")?);
        }
    }
    if let Some(v) = get(top, "files") {
        files(&doc, v, &mut layer)?;
    }
    if let Some(v) = get(top, "packages") {
        packages(&doc, v, &mut layer)?;
    }
    if let Some(v) = get(top, "ports") {
        ports(&doc, v, &mut layer)?;
    }
    if let Some(v) = get(top, "services") {
        services(&doc, v, &mut layer)?;
    }
    Ok(layer)
}

fn fleetmesh(doc: &Doc<'_>, v: &Value<'_>, layer: &mut Layer) -> Result<(), Error> {
    let t = doc.table(v, "fleetmesh", &["versions", "digests", "severity"])?;
    if let Some(v) = get(t, "versions") {
        let mut reqs = Vec::new();
        for (i, (s, span)) in doc
            .strings(v, "fleetmesh.versions")?
            .into_iter()
            .enumerate()
        {
            let req = semver::VersionReq::parse(s).map_err(|e| {
                doc.err(
                    span.clone(),
                    &format!("fleetmesh.versions[{i}]"),
                    format!("`{s}` is not a semver requirement ({e})"),
                )
            })?;
            reqs.push(req);
        }
        layer.versions = Some(reqs);
    }
    if let Some(v) = get(t, "digests") {
        let mut digests = Vec::new();
        for (i, (s, span)) in doc.strings(v, "fleetmesh.digests")?.into_iter().enumerate() {
            let d = digest(s).ok_or_else(|| {
                doc.err(
                    span.clone(),
                    &format!("fleetmesh.digests[{i}]"),
                    "not 64 hex characters (sha256:<64 hex>)",
                )
            })?;
            digests.push(d);
        }
        layer.digests = Some(digests);
    }
    if let Some(v) = get(t, "severity") {
        layer.fleetmesh_severity = Some(doc.severity(v, "fleetmesh.severity")?);
    }
    Ok(())
}

/// The entry's `severity`, or the default.
fn entry_severity(doc: &Doc<'_>, t: &DeTable<'_>, key: &str) -> Result<Severity, Error> {
    get(t, "severity").map_or(Ok(DEFAULT_SEVERITY), |v| {
        doc.severity(v, &format!("{key}.severity"))
    })
}

/// The entry's required string `field`, trimmed and not empty.
fn required<'v>(
    doc: &Doc<'_>,
    item: &Value<'_>,
    t: &'v DeTable<'_>,
    key: &str,
    field: &str,
) -> Result<(&'v str, Range<usize>), Error> {
    let k = format!("{key}.{field}");
    let Some(v) = get(t, field) else {
        return Err(doc.err(item.span(), &k, "is required"));
    };
    let s = doc.string(v, &k)?.trim();
    if s.is_empty() {
        return Err(doc.err(v.span(), &k, "must not be empty"));
    }
    Ok((s, v.span()))
}

/// Refuses a second entry with the same path or name in one file.
fn unique(
    doc: &Doc<'_>,
    seen: &mut BTreeMap<String, String>,
    id: &str,
    span: Range<usize>,
    key: &str,
    field: &str,
) -> Result<(), Error> {
    if let Some(first) = seen.get(id) {
        return Err(doc.err(
            span,
            &format!("{key}.{field}"),
            format!("`{id}` is already named by {first}"),
        ));
    }
    seen.insert(id.to_string(), key.to_string());
    Ok(())
}

fn files(doc: &Doc<'_>, v: &Value<'_>, layer: &mut Layer) -> Result<(), Error> {
    let mut seen = BTreeMap::new();
    for (key, item, t) in doc.entries(v, "files", &["path", "sha256", "state", "severity"])? {
        let (path, span) = required(doc, item, t, &key, "path")?;
        if !path.starts_with('/') {
            return Err(doc.err(
                span,
                &format!("{key}.path"),
                "must be an absolute host path",
            ));
        }
        unique(doc, &mut seen, path, span, &key, "path")?;
        let want = match (get(t, "sha256"), get(t, "state")) {
            (Some(_), Some(s)) => {
                return Err(doc.err(
                    s.span(),
                    &key,
                    "sets both sha256 and state: give exactly one",
                ));
            }
            (None, None) => {
                return Err(doc.err(item.span(), &key, "needs sha256 or state"));
            }
            (Some(d), None) => {
                let k = format!("{key}.sha256");
                let text = doc.string(d, &k)?;
                FileWant::Sha256(
                    digest(text.trim())
                        .ok_or_else(|| doc.err(d.span(), &k, "not 64 hex characters"))?,
                )
            }
            (None, Some(s)) => {
                let k = format!("{key}.state");
                match doc.string(s, &k)? {
                    "present" => FileWant::Present,
                    "absent" => FileWant::Absent,
                    other => {
                        return Err(doc.err(
                            s.span(),
                            &k,
                            format!("`{other}` is not a file state (present or absent)"),
                        ));
                    }
                }
            }
        };
        layer.files.push(FileRule {
            origin: doc.file.to_string(),
            path: path.to_string(),
            want,
            severity: entry_severity(doc, t, &key)?,
        });
    }
    Ok(())
}

fn packages(doc: &Doc<'_>, v: &Value<'_>, layer: &mut Layer) -> Result<(), Error> {
    let mut seen = BTreeMap::new();
    for (key, item, t) in doc.entries(v, "packages", &["name", "version", "severity"])? {
        let (name, span) = required(doc, item, t, &key, "name")?;
        if name.chars().any(char::is_whitespace) {
            return Err(doc.err(span, &format!("{key}.name"), "must not contain spaces"));
        }
        unique(doc, &mut seen, name, span, &key, "name")?;
        let (text, span) = required(doc, item, t, &key, "version")?;
        let want =
            Constraint::parse(text).map_err(|m| doc.err(span, &format!("{key}.version"), m))?;
        layer.packages.push(PackageRule {
            origin: doc.file.to_string(),
            name: name.to_string(),
            want,
            severity: entry_severity(doc, t, &key)?,
        });
    }
    Ok(())
}

fn ports(doc: &Doc<'_>, v: &Value<'_>, layer: &mut Layer) -> Result<(), Error> {
    let t = doc.table(v, "ports", &["expected", "forbidden", "severity"])?;
    if let Some(v) = get(t, "expected") {
        layer.expected_ports = Some(doc.ports(v, "ports.expected")?);
    }
    if let Some(v) = get(t, "forbidden") {
        let forbidden = doc.ports(v, "ports.forbidden")?;
        if let Some(port) = layer
            .expected_ports
            .as_ref()
            .and_then(|e| e.intersection(&forbidden).next())
        {
            return Err(doc.err(
                v.span(),
                "ports.forbidden",
                format!("port {port} is also expected"),
            ));
        }
        layer.forbidden_ports = Some(forbidden);
    }
    if let Some(v) = get(t, "severity") {
        layer.ports_severity = Some(doc.severity(v, "ports.severity")?);
    }
    Ok(())
}

fn services(doc: &Doc<'_>, v: &Value<'_>, layer: &mut Layer) -> Result<(), Error> {
    let mut seen = BTreeMap::new();
    for (key, item, t) in doc.entries(v, "services", &["name", "state", "severity"])? {
        let (name, span) = required(doc, item, t, &key, "name")?;
        unique(doc, &mut seen, name, span, &key, "name")?;
        let (state, span) = required(doc, item, t, &key, "state")?;
        if !SERVICE_STATES.contains(&state) {
            return Err(doc.err(
                span,
                &format!("{key}.state"),
                format!("`{state}` is not a service state (up or down)"),
            ));
        }
        layer.services.push(ServiceRule {
            origin: doc.file.to_string(),
            name: name.to_string(),
            state: state.to_string(),
            severity: entry_severity(doc, t, &key)?,
        });
    }
    Ok(())
}
