//! Host facts: the parsers that turn the text of a host's system files into the values of
//! a twin's `Host` and `Packages` sections (`os-release`, dpkg's status database, the
//! output of `rpm -qa`, `/proc/meminfo`, the kernel's list of online CPUs).
//!
//! This module owns those text formats. It reads no file and runs no program: the node's
//! host probe (`fleetmesh::probe::host`) hands in the text. Input comes from the disk and
//! may be truncated or corrupt, so every parser returns `None` or skips what it cannot
//! read, and never panics.

use std::collections::BTreeMap;

/// `PRETTY_NAME` of an os-release file, unquoted; `None` when absent or empty.
///
/// os-release is a list of shell-style assignments. Values may be bare, or quoted with
/// `"` or `'`; inside double quotes (and bare values) a backslash escapes the next
/// character, as a shell would read it. Like a shell, the last assignment wins.
pub fn os_pretty_name(os_release: &str) -> Option<String> {
    let mut found = None;
    for line in os_release.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some(value) = line.strip_prefix("PRETTY_NAME=") {
            found = Some(unquote(value));
        }
    }
    found
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// One shell word, its quotes removed. An unterminated quote takes the rest of the line:
/// a damaged file still names its system.
fn unquote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        // In double quotes a backslash escapes only these; elsewhere it
                        // stays a backslash.
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                            Some(e) => {
                                out.push('\\');
                                out.push(e);
                            }
                            None => out.push('\\'),
                        },
                        c => out.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
            }
            // An unquoted space ends the word (a comment may follow).
            c if c.is_whitespace() => break,
            c => out.push(c),
        }
    }
    out
}

/// One stanza of dpkg's status file, as far as this module needs it.
#[derive(Debug, Default)]
struct Stanza {
    package: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    status: Option<String>,
}

impl Stanza {
    fn installed(&self) -> bool {
        let words: Vec<&str> = self
            .status
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        matches!(words.as_slice(), ["install" | "hold", "ok", "installed"])
    }
}

/// The installed packages of a dpkg status file (`/var/lib/dpkg/status`), as
/// `(name, version)` sorted by name, one entry per name.
///
/// A package counts when its `Status` is `install ok installed` or `hold ok installed`;
/// half-installed, config-files-only and removed packages do not.
///
/// Multi-arch: the same package may be installed for several architectures (`libc6` for
/// amd64 and i386). A name installed once keeps its plain name, whatever its
/// architecture, so that the desired state can name packages without knowing the
/// architecture. When several architectures share a name, the native one (or `all`)
/// keeps the plain name and the others are named `name:arch`, as dpkg itself writes
/// them; when none is native, all are named `name:arch`. The native architecture is
/// that of the `dpkg` package, which is always native; without it, the architecture
/// most packages have.
pub fn dpkg_installed(status: &str) -> Vec<(String, String)> {
    let installed: Vec<Stanza> = stanzas(status)
        .into_iter()
        .filter(|s| s.installed() && s.package.is_some() && s.version.is_some())
        .collect();
    let native = native_arch(&installed);

    let mut by_name: BTreeMap<&str, Vec<&Stanza>> = BTreeMap::new();
    for s in &installed {
        if let Some(name) = s.package.as_deref() {
            by_name.entry(name).or_default().push(s);
        }
    }
    let mut out = Vec::with_capacity(installed.len());
    for (name, mut all) in by_name {
        // A damaged file may list one package and architecture twice: keep one, the
        // lowest version, so that the choice does not depend on the order of the file.
        all.sort_by(|a, b| (&a.arch, &a.version).cmp(&(&b.arch, &b.version)));
        all.dedup_by(|b, a| a.arch == b.arch);
        let version = |s: &Stanza| s.version.clone().unwrap_or_default();
        if let [only] = all.as_slice() {
            out.push((name.to_string(), version(only)));
            continue;
        }
        let mut plain_taken = false;
        for s in all {
            // A stanza without an architecture (a damaged file) may take the plain name.
            let arch = s.arch.as_deref().unwrap_or("");
            let plain = !plain_taken
                && (arch.is_empty() || arch == "all" || Some(arch) == native.as_deref());
            if plain {
                plain_taken = true;
                out.push((name.to_string(), version(s)));
            } else {
                out.push((format!("{name}:{arch}"), version(s)));
            }
        }
    }
    out.sort();
    // `name:arch` could clash with a package really named so: one entry per name.
    out.dedup_by(|b, a| a.0 == b.0);
    out
}

/// The host's native architecture as the installed packages tell it.
fn native_arch(installed: &[Stanza]) -> Option<String> {
    if let Some(dpkg) = installed
        .iter()
        .find(|s| s.package.as_deref() == Some("dpkg"))
        && let Some(arch) = &dpkg.arch
    {
        return Some(arch.clone());
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in installed {
        match s.arch.as_deref() {
            Some("all") | None => {}
            Some(a) => *counts.entry(a).or_default() += 1,
        }
    }
    // Ties go to the first name in order, so that the choice is stable.
    counts
        .into_iter()
        .fold(None, |best: Option<(&str, usize)>, (a, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((a, n)),
        })
        .map(|(a, _)| a.to_string())
}

/// Splits a deb822 file into stanzas. Continuation lines (starting with a space or a tab)
/// belong to the field before them and are skipped: none of the fields read here spans
/// lines. Field names are matched without regard to case, as deb822 asks.
fn stanzas(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut current = Stanza::default();
    let mut open = false;
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if open {
                out.push(std::mem::take(&mut current));
                open = false;
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        open = true;
        let value = value.trim();
        let slot = if field.eq_ignore_ascii_case("Package") {
            &mut current.package
        } else if field.eq_ignore_ascii_case("Version") {
            &mut current.version
        } else if field.eq_ignore_ascii_case("Architecture") {
            &mut current.arch
        } else if field.eq_ignore_ascii_case("Status") {
            &mut current.status
        } else {
            continue;
        };
        *slot = (!value.is_empty()).then(|| value.to_string());
    }
    if open {
        out.push(current);
    }
    out
}

/// The packages of `rpm -qa --queryformat '%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n'`,
/// as `(name, version)` sorted by name, one entry per name.
///
/// rpm installs one name several times (several `gpg-pubkey` keys; a library for two
/// architectures, which this query format does not tell apart): their versions are
/// joined, sorted, with a space, so that the summary's digest still changes when any of
/// them does.
pub fn rpm_installed(output: &str) -> Vec<(String, String)> {
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in output.lines() {
        let Some((name, version)) = line.split_once('\t') else {
            continue;
        };
        let (name, version) = (name.trim(), version.trim());
        if name.is_empty() || version.is_empty() {
            continue;
        }
        by_name.entry(name).or_default().push(version);
    }
    by_name
        .into_iter()
        .map(|(name, mut versions)| {
            versions.sort_unstable();
            versions.dedup();
            (name.to_string(), versions.join(" "))
        })
        .collect()
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        // The kernel writes kB and means KiB.
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The number of CPUs in a kernel CPU list (`/sys/devices/system/cpu/online`), such as
/// `0-3,8,10-11`. `None` when the list is empty or malformed.
pub fn cpu_count(cpu_online: &str) -> Option<u32> {
    let list = cpu_online.trim();
    if list.is_empty() {
        return None;
    }
    let mut total: u32 = 0;
    for part in list.split(',') {
        let n = match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.trim().parse().ok()?;
                let b: u32 = b.trim().parse().ok()?;
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                1
            }
        };
        total = total.checked_add(n)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests;
