//! Package-manager runs, read from the logs package managers write (dpkg, apt, dnf, yum,
//! zypper), and the judgement of changes found at start-up that one of them explains.
//!
//! A node that was down while `apt-get install` ran finds, at start, every file the
//! packages changed and every system user they added. Those are an upgrade, like changes
//! made while a package manager runs under the node's eyes: a change found at start-up
//! whose time of change falls inside a run recorded in a log is approved with the typed
//! rule [`Rule::Upgrade`] and is neither consulted nor alerted.
//!
//! This module owns the log formats and that judgement. It reads no file and no clock:
//! the node hands in each log's text, the local time zone's offset (dpkg and apt write
//! local times) and the current year (yum writes none), and the time each change was made
//! (a file's modification time).

use crate::fleet::Rule;
use crate::spike::{Kind, Spike, Value};

/// Lines of one log further apart than this belong to different runs.
pub const GAP_MS: u64 = 60_000;
/// A change this close to a run counts as inside it (log times have whole seconds).
pub const SLACK_MS: u64 = 2_000;

/// How a log writes its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `YYYY-MM-DD HH:MM:SS ...`, local time: dpkg.log, zypper's history (`...|`).
    Dated,
    /// apt's history.log and term.log: `Start-Date:`/`End-Date:` (or `Log started:` /
    /// `Log ended:`) and a local `YYYY-MM-DD  HH:MM:SS`.
    Apt,
    /// dnf.log, dnf.rpm.log: `YYYY-MM-DDTHH:MM:SS+ZZZZ ...` (or `Z`).
    Iso,
    /// yum.log: `Mon DD HH:MM:SS ...`, local time, no year.
    Yum,
}

impl Format {
    /// The format of a known log, by its file name.
    pub fn of(path: &str) -> Option<Format> {
        match path.rsplit('/').next()? {
            "dpkg.log" | "history" => Some(Format::Dated),
            "history.log" | "term.log" => Some(Format::Apt),
            "dnf.log" | "dnf.rpm.log" => Some(Format::Iso),
            "yum.log" => Some(Format::Yum),
            _ => None,
        }
    }
}

/// What is needed to read local times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Local time minus UTC, in seconds.
    pub offset_s: i64,
    /// The year of times written without one.
    pub year: i64,
}

/// One run of a package manager: from its first to its last line (apt: start to end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The log that recorded it, as a host path.
    pub log: String,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a time in Unix ms (UTC).
pub fn year_of(unix_ms: u64) -> i64 {
    // Inverse of `days_from_civil`, keeping only the year.
    let z = (unix_ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Seconds since the epoch of a date and a `HH:MM:SS` time, read as UTC.
fn seconds(y: i64, m: i64, d: i64, time: &str) -> Option<i64> {
    let mut t = time.split(':');
    let (h, mi, s) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    let valid = (1..=12).contains(&m) && (1..=31).contains(&d) && h < 24 && mi < 60 && s < 61;
    valid.then(|| days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// `YYYY-MM-DD` and a time, read as UTC.
fn ymd(date: &str, time: &str) -> Option<i64> {
    let mut p = date.split('-');
    let (y, m, d) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
    if p.next().is_some() {
        return None;
    }
    seconds(y, m, d, time)
}

fn to_ms(utc_s: i64) -> Option<u64> {
    u64::try_from(utc_s).ok().map(|s| s * 1000)
}

/// A local `YYYY-MM-DD HH:MM:SS` at the start of `line` (dpkg, zypper).
fn dated(line: &str, clock: Clock) -> Option<u64> {
    let date = line.get(..10)?;
    let time = line.get(11..19)?;
    to_ms(ymd(date, time)? - clock.offset_s)
}

/// An ISO time with its offset at the start of `line` (dnf).
fn iso(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?;
    let (date, rest) = stamp.split_once('T')?;
    let time = rest.get(..8)?;
    let zone = &rest[8..];
    let offset = match zone {
        "Z" | "" => 0,
        _ => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 {
                return None;
            }
            sign * (num(&digits[..2])? * 3600 + num(&digits[2..])? * 60)
        }
    };
    to_ms(ymd(date, time)? - offset)
}

/// A local `Mon DD HH:MM:SS` at the start of `line`, in `clock.year` (yum).
fn yum(line: &str, clock: Clock) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut w = line.split_whitespace();
    let month = MONTHS.iter().position(|m| Some(*m) == w.next())? as i64 + 1;
    let day = num(w.next()?)?;
    to_ms(seconds(clock.year, month, day, w.next()?)? - clock.offset_s)
}

/// apt: a start or end line, and its time.
fn apt(line: &str, clock: Clock) -> Option<(bool, u64)> {
    let (key, value) = line.split_once(':')?;
    let start = match key.trim() {
        "Start-Date" | "Log started" => true,
        "End-Date" | "Log ended" => false,
        _ => return None,
    };
    let mut w = value.split_whitespace();
    let at = to_ms(ymd(w.next()?, w.next()?)? - clock.offset_s)?;
    Some((start, at))
}

/// The runs recorded in the text of the log `log` (lines that do not parse are skipped).
pub fn runs(format: Format, log: &str, text: &str, clock: Clock) -> Vec<Run> {
    let run = |start_unix_ms, end_unix_ms| Run {
        log: log.to_string(),
        start_unix_ms,
        end_unix_ms,
    };
    let mut out: Vec<Run> = Vec::new();
    if format == Format::Apt {
        let mut open = None;
        for (start, at) in text.lines().filter_map(|l| apt(l, clock)) {
            match (start, open) {
                (true, Some(s)) => {
                    // A run that never logged its end (interrupted): up to the next.
                    out.push(run(s, at.max(s)));
                    open = Some(at);
                }
                (true, None) => open = Some(at),
                (false, Some(s)) => {
                    out.push(run(s, at.max(s)));
                    open = None;
                }
                (false, None) => {}
            }
        }
        if let Some(s) = open {
            out.push(run(s, s));
        }
        return out;
    }
    let times = text.lines().filter_map(|l| match format {
        Format::Dated => dated(l, clock),
        Format::Iso => iso(l),
        Format::Yum => yum(l, clock),
        Format::Apt => None,
    });
    for at in times {
        match out.last_mut() {
            Some(r) if at >= r.start_unix_ms && at <= r.end_unix_ms + GAP_MS => {
                r.end_unix_ms = r.end_unix_ms.max(at);
            }
            _ => out.push(run(at, at)),
        }
    }
    out
}

/// Every run read at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs(pub Vec<Run>);

impl Runs {
    /// The run that covers a change made at `at_unix_ms`, if any.
    pub fn covering(&self, at_unix_ms: u64) -> Option<&Run> {
        self.0.iter().find(|r| {
            at_unix_ms + SLACK_MS >= r.start_unix_ms && at_unix_ms <= r.end_unix_ms + SLACK_MS
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Judges a change found at start-up: the rule and reason that approve it when it was
    /// made (`changed_at_unix_ms`) inside a package-manager run. Other spikes (changes
    /// seen live, kinds a package does not change, no known time) get `None`.
    pub fn upgrade(
        &self,
        spike: &Spike,
        changed_at_unix_ms: Option<u64>,
    ) -> Option<(Rule, String)> {
        if !while_down(spike) || !matches!(spike.kind, Kind::File | Kind::User | Kind::Group) {
            return None;
        }
        let run = self.covering(changed_at_unix_ms?)?;
        Some((
            Rule::Upgrade(run.log.clone()),
            format!(
                "changed while the node was down, during a package-manager run recorded in {}",
                run.log
            ),
        ))
    }
}

/// Whether `spike` reports a change found at start-up (made while the node was down).
pub fn while_down(spike: &Spike) -> bool {
    spike
        .fields
        .get("when")
        .and_then(|f| f.after.as_ref())
        .is_some_and(|v| *v == Value::Text("while_down".into()))
}

#[cfg(test)]
mod tests;
