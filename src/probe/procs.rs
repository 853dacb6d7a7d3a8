//! The process probe: reads the process table from `/proc` (pid, ppid, name, uid, command
//! line, executable, start time). A process that exits while being read is skipped.
//!
//! Each poll reads only `/proc/<pid>/stat` of every process; status, cmdline and exe are
//! read once per process, when its (pid, start time) is new. That is a quarter of the
//! reads of a full table, and polling runs every second.

use std::collections::HashMap;

use fleetmesh_actors::procs::Process;

/// Reads the process table, remembering what it read before.
#[derive(Debug, Default)]
pub struct Reader {
    known: HashMap<(u32, u64), Process>,
}

impl Reader {
    /// Reads every process now.
    pub fn read(&mut self) -> Vec<Process> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut table = Vec::new();
        let mut seen = HashMap::with_capacity(self.known.len());
        for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            let Some((ppid, name, start)) = read_stat(pid) else {
                continue;
            };
            let p = match self.known.remove(&(pid, start)) {
                Some(p) => p,
                None => match read_details(pid, ppid, name, start) {
                    Some(p) => p,
                    None => continue,
                },
            };
            seen.insert((pid, start), p.clone());
            table.push(p);
        }
        self.known = seen;
        table
    }
}

/// (ppid, name, start time) from `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> Option<(u32, String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; it ends at the
    // last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((ppid, name, start))
}

fn read_details(pid: u32, ppid: u32, name: String, start: u64) -> Option<Process> {
    let base = format!("/proc/{pid}");
    let uid = std::fs::read_to_string(format!("{base}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX);
    let cmdline = std::fs::read(format!("{base}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("{base}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(Process {
        pid,
        ppid,
        name,
        uid,
        cmdline,
        exe,
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_remembers_it() {
        let me = std::process::id();
        let mut reader = Reader::default();
        let first = reader.read();
        let p = first
            .iter()
            .find(|p| p.pid == me)
            .expect("this process is listed");
        assert!(!p.exe.is_empty());
        assert!(p.start > 0);
        let again = reader.read();
        assert_eq!(
            again.iter().find(|q| q.pid == me),
            Some(p),
            "the same process, from memory"
        );
    }
}
