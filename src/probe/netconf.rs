//! The network probe: polls the host's listening sockets (`/proc/net/{tcp,tcp6,udp,udp6}`),
//! routes (`/proc/net/route`) and interfaces (`/sys/class/net`, addresses from
//! getifaddrs) and hands each reading to the network-configuration actor.
//!
//! Polling, not events: a new listener is seen within one `probes.network_poll_ms`.
//! Unreadable tables are skipped (an empty reading for that part), never fatal.
//!
//! A listener's owner is found by looking for its socket inode among `/proc/<pid>/fd`
//! links. That walk is done only when a listener with an inode not seen before appears,
//! and results are kept while the socket lives, so a quiet host pays nothing for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use fleetmesh_actors::netconf::{Interface, Owner, Snapshot, parse_routes, parse_sockets};

/// Reads the network configuration, remembering which process holds which socket.
#[derive(Debug, Default)]
pub struct Reader {
    /// Socket inode → its owner (`None`: looked for and not found, e.g. another pid
    /// namespace's socket).
    owners: HashMap<u64, Option<Owner>>,
}

impl Reader {
    /// Reads the host's network configuration now.
    pub fn read(&mut self) -> Snapshot {
        let mut snap = read_tables();
        let mut inodes = Vec::new();
        for proto in ["tcp", "tcp6", "udp", "udp6"] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{proto}")) {
                for (l, inode) in parse_sockets(proto, &text).0 {
                    if let Some(i) = inode {
                        inodes.push((l.clone(), i));
                    }
                    snap.listeners.insert(l);
                }
            }
        }
        let unknown: HashSet<u64> = inodes
            .iter()
            .map(|(_, i)| *i)
            .filter(|i| !self.owners.contains_key(i))
            .collect();
        if !unknown.is_empty() {
            let mut found = socket_owners(&unknown);
            for i in unknown {
                self.owners.insert(i, found.remove(&i));
            }
        }
        let live: HashSet<u64> = inodes.iter().map(|(_, i)| *i).collect();
        self.owners.retain(|i, _| live.contains(i));
        for (l, i) in inodes {
            if let Some(Some(owner)) = self.owners.get(&i) {
                snap.owners.insert(l, owner.clone());
            }
        }
        snap
    }
}

/// The processes holding the sockets `wanted`, from `/proc/<pid>/fd`.
fn socket_owners(wanted: &HashSet<u64>) -> HashMap<u64, Owner> {
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(i) = inode.filter(|i| wanted.contains(i)) {
                let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).ok();
                out.entry(i).or_insert_with(|| Owner {
                    pid,
                    name: read("comm")
                        .map(|c| c.trim().to_string())
                        .unwrap_or_default(),
                    exe: std::fs::read_link(entry.path().join("exe"))
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
        }
        if out.len() == wanted.len() {
            break;
        }
    }
    out
}

/// Interfaces and routes.
fn read_tables() -> Snapshot {
    let mut snap = Snapshot::default();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        snap.routes.extend(parse_routes(&text).0);
    }
    let mut interfaces: BTreeMap<String, Interface> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let attr = |a: &str| {
                std::fs::read_to_string(Path::new("/sys/class/net").join(&name).join(a))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            interfaces.insert(
                name.clone(),
                Interface {
                    up: attr("operstate").is_some_and(|s| s == "up" || s == "unknown"),
                    mtu: attr("mtu").and_then(|m| m.parse().ok()),
                    mac: attr("address").filter(|m| !m.is_empty()),
                    addrs: Default::default(),
                },
            );
        }
    }
    if let Ok(addrs) = if_addrs::get_if_addrs() {
        for a in addrs {
            let text = match &a.addr {
                if_addrs::IfAddr::V4(v) => format!("{}/{}", v.ip, v.prefixlen),
                if_addrs::IfAddr::V6(v) => format!("{}/{}", v.ip, v.prefixlen),
            };
            if let Some(i) = interfaces.get_mut(&a.name) {
                i.addrs.insert(text);
            }
        }
    }
    snap.interfaces = interfaces;
    snap
}
