//! The process detector's logic: successive process tables, and which starts and exits
//! are worth a spike.
//!
//! The probe polls `/proc` (a process living shorter than one poll can be missed; the
//! latency of this method is the poll interval). By default only *suspicious* processes
//! are reported, so that a busy host does not flood the fleet: an executable outside the
//! trusted path prefixes, or one deleted while it runs. With `report = all`, every start
//! and exit is a spike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spike::{Change, FieldChange, Kind, Layer, Observation, Severity, Value};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub name: String,
    pub uid: u32,
    pub cmdline: String,
    /// The executable's path; empty for kernel threads or when unreadable.
    pub exe: String,
    /// Start time in clock ticks since boot: tells a reused pid from the same process.
    pub start: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    All,
    Suspicious,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub report: Report,
    /// Executables under these prefixes are ordinary.
    pub trusted: Vec<String>,
    /// Executable names whose starts are always reported, trusted or not: package
    /// managers, whose runs mark a server as upgrading for the region's master.
    pub always: Vec<String>,
}

/// The file name of an executable path.
fn base_name(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

/// Why a process is suspicious, if it is.
pub fn suspicion(config: &Config, p: &Process) -> Option<&'static str> {
    if p.exe.is_empty() {
        return None;
    }
    if p.exe.ends_with(" (deleted)") {
        return Some("executable_deleted");
    }
    if !config.trusted.iter().any(|t| p.exe.starts_with(t.as_str())) {
        return Some("unusual_path");
    }
    None
}

#[derive(Debug, Clone)]
pub struct Detector {
    config: Config,
    /// Processes by (pid, start).
    last: Option<BTreeMap<(u32, u64), Process>>,
}

impl Detector {
    pub fn new(config: Config) -> Self {
        Detector { config, last: None }
    }

    /// A new process table; the first only records.
    pub fn handle(&mut self, table: Vec<Process>) -> Vec<Observation> {
        let table: BTreeMap<(u32, u64), Process> =
            table.into_iter().map(|p| ((p.pid, p.start), p)).collect();
        let mut out = Vec::new();
        if let Some(last) = &self.last {
            for (k, p) in &table {
                if !last.contains_key(k) {
                    self.observe(p, Change::Added, &mut out);
                }
            }
            for (k, p) in last {
                if !table.contains_key(k) {
                    self.observe(p, Change::Removed, &mut out);
                }
            }
        }
        self.last = Some(table);
        out
    }

    fn observe(&self, p: &Process, change: Change, out: &mut Vec<Observation>) {
        let why = suspicion(&self.config, p);
        let always = change == Change::Added
            && self
                .config
                .always
                .iter()
                .any(|a| a == base_name(&p.exe) || a == &p.name);
        if why.is_none() && !always && self.config.report == Report::Suspicious {
            return;
        }
        let exe = if p.exe.is_empty() {
            p.name.as_str()
        } else {
            p.exe.as_str()
        };
        let mut o = Observation::new(
            Kind::Process,
            change,
            format!("{}:{exe}", p.pid),
            Layer::Poll,
        );
        o.severity = match (why, change) {
            (Some(_), Change::Added) => Severity::High,
            (Some(_), _) => Severity::Medium,
            _ => Severity::Info,
        };
        let facts = [
            ("name", Value::Text(p.name.clone())),
            ("pid", Value::Int(i64::from(p.pid))),
            ("ppid", Value::Int(i64::from(p.ppid))),
            ("uid", Value::Int(i64::from(p.uid))),
            ("cmdline", Value::Text(p.cmdline.clone())),
            ("exe", Value::Text(p.exe.clone())),
        ];
        for (k, v) in facts {
            o.fields.insert(
                k.into(),
                FieldChange {
                    before: None,
                    after: Some(v),
                },
            );
        }
        if let Some(why) = why {
            o.fields.insert("suspicion".into(), FieldChange::fact(why));
        }
        out.push(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, exe: &str) -> Process {
        Process {
            pid,
            ppid: 1,
            name: exe.rsplit('/').next().unwrap_or_default().into(),
            uid: 0,
            cmdline: exe.into(),
            exe: exe.into(),
            start: u64::from(pid) * 10,
        }
    }

    fn config(report: Report) -> Config {
        Config {
            report,
            trusted: vec!["/usr/".into(), "/bin/".into()],
            always: vec!["dpkg".into()],
        }
    }

    #[test]
    fn package_manager_starts_are_reported_even_when_trusted() {
        let mut d = Detector::new(config(Report::Suspicious));
        d.handle(vec![]);
        let out = d.handle(vec![proc(7, "/usr/bin/dpkg"), proc(8, "/usr/bin/ls")]);
        let subjects: Vec<&str> = out.iter().map(|o| o.subject.as_str()).collect();
        assert_eq!(subjects, ["7:/usr/bin/dpkg"]);
        // Its exit is ordinary.
        assert!(d.handle(vec![proc(8, "/usr/bin/ls")]).is_empty());
    }

    #[test]
    fn only_suspicious_starts_and_exits_by_default() {
        let mut d = Detector::new(config(Report::Suspicious));
        assert!(
            d.handle(vec![proc(1, "/usr/lib/systemd/systemd")])
                .is_empty()
        );
        let out = d.handle(vec![
            proc(1, "/usr/lib/systemd/systemd"),
            proc(50, "/usr/bin/ls"),
            proc(66, "/tmp/.x/miner"),
            proc(67, "/usr/bin/python3 (deleted)"),
        ]);
        let got: Vec<(String, Change, Option<Value>)> = out
            .iter()
            .map(|o| {
                (
                    o.subject.clone(),
                    o.change,
                    o.fields["suspicion"].after.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "66:/tmp/.x/miner".into(),
                    Change::Added,
                    Some(Value::Text("unusual_path".into()))
                ),
                (
                    "67:/usr/bin/python3 (deleted)".into(),
                    Change::Added,
                    Some(Value::Text("executable_deleted".into()))
                ),
            ]
        );
        assert_eq!(out[0].severity, Severity::High);
        let out = d.handle(vec![proc(1, "/usr/lib/systemd/systemd")]);
        assert_eq!(
            out.iter().map(|o| o.change).collect::<Vec<_>>(),
            [Change::Removed, Change::Removed]
        );
    }

    #[test]
    fn all_reports_every_start_and_a_reused_pid_is_a_new_process() {
        let mut d = Detector::new(config(Report::All));
        d.handle(vec![proc(5, "/usr/bin/a")]);
        let mut again = proc(5, "/usr/bin/b");
        again.start = 999;
        let out = d.handle(vec![again]);
        let got: Vec<(String, Change)> =
            out.iter().map(|o| (o.subject.clone(), o.change)).collect();
        assert_eq!(
            got,
            [
                ("5:/usr/bin/b".into(), Change::Added),
                ("5:/usr/bin/a".into(), Change::Removed)
            ]
        );
    }
}
