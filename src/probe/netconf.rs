//! The network probe: polls the host's listening sockets (`/proc/net/{tcp,tcp6,udp,udp6}`),
//! routes (`/proc/net/route`) and interfaces (`/sys/class/net`, addresses from
//! getifaddrs) and hands each reading to the network-configuration actor.
//!
//! Polling, not events: a new listener is seen within one `probes.network_poll_ms`.
//! Unreadable tables are skipped (an empty reading for that part), never fatal.

use std::collections::BTreeMap;
use std::path::Path;

use fleetmesh_actors::netconf::{Interface, Snapshot, parse_routes, parse_sockets};

/// Reads the host's network configuration now.
pub fn read() -> Snapshot {
    let mut snap = Snapshot::default();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{proto}")) {
            snap.listeners.extend(parse_sockets(proto, &text).0);
        }
    }
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
