//! The network probe: polls the host's listening sockets (sock_diag netlink, falling back to
//! `/proc/net/{tcp,tcp6,udp,udp6}`),
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

use fleetmesh_actors::netconf::{
    Interface, Listener, Owner, Snapshot, parse_routes, parse_sockets,
};

/// Reads the network configuration, remembering which process holds which socket.
#[derive(Debug, Default)]
pub struct Reader {
    /// Socket inode → its owner (`None`: looked for and not found, e.g. another pid
    /// namespace's socket).
    owners: HashMap<u64, Option<Owner>>,
    netlink_failed: bool,
}

/// Listening sockets from `/proc/net`. The kernel walks every socket of the host to print
/// these tables, connections included: on a busy server that is most of the probe's cost.
fn proc_net_sockets() -> Vec<(Listener, Option<u64>)> {
    let mut out = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{proto}")) {
            out.extend(parse_sockets(proto, &text).0);
        }
    }
    out
}

/// Listening sockets from the kernel's sock_diag interface, asking only for TCP sockets in
/// LISTEN and unconnected UDP sockets: the kernel then skips established connections.
fn listening_sockets() -> std::io::Result<Vec<(Listener, Option<u64>)>> {
    use netlink_packet_core::{
        NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    let queries = [
        ("tcp", AF_INET, IPPROTO_TCP, StateFlags::LISTEN),
        ("tcp6", AF_INET6, IPPROTO_TCP, StateFlags::LISTEN),
        ("udp", AF_INET, IPPROTO_UDP, StateFlags::CLOSE),
        ("udp6", AF_INET6, IPPROTO_UDP, StateFlags::CLOSE),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    for (proto, family, protocol, states) in queries {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        socket.send(&bytes, 0)?;
        'dump: loop {
            buf.clear();
            let size = socket.recv(&mut buf, 0)?;
            let mut offset = 0;
            while offset < size {
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..size])
                    .map_err(|e| bad(format!("sock_diag reply: {e}")))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let id = &r.header.socket_id;
                        out.push((
                            Listener {
                                proto: proto.into(),
                                addr: id.source_address.to_string(),
                                port: id.source_port,
                            },
                            Some(u64::from(r.header.inode)).filter(|i| *i != 0),
                        ));
                    }
                    NetlinkPayload::Done(_) => break 'dump,
                    NetlinkPayload::Error(e) => {
                        return Err(bad(format!("sock_diag refused the dump: {e:?}")));
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
    Ok(out)
}

impl Reader {
    /// Reads the host's network configuration now.
    pub fn read(&mut self) -> Snapshot {
        let mut snap = read_tables();
        let mut inodes = Vec::new();
        let sockets = match listening_sockets() {
            Ok(s) => s,
            Err(e) => {
                if !self.netlink_failed {
                    tracing::warn!(error = %e, "sock_diag unavailable; reading /proc/net instead");
                    self.netlink_failed = true;
                }
                proc_net_sockets()
            }
        };
        for (l, inode) in sockets {
            if let Some(i) = inode {
                inodes.push((l.clone(), i));
            }
            snap.listeners.insert(l);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sock_diag_and_proc_net_agree_on_listeners() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let netlink = listening_sockets().expect("sock_diag works here");
        let mine = |list: &[(Listener, Option<u64>)], proto: &str, port: u16| {
            list.iter()
                .find(|(l, _)| l.proto == proto && l.port == port && l.addr == "127.0.0.1")
                .and_then(|(_, i)| *i)
        };
        let tcp_port = tcp.local_addr().expect("addr").port();
        let udp_port = udp.local_addr().expect("addr").port();
        let from_proc = proc_net_sockets();
        let inode = mine(&netlink, "tcp", tcp_port).expect("the tcp listener, with its inode");
        assert_eq!(Some(inode), mine(&from_proc, "tcp", tcp_port));
        assert!(mine(&netlink, "udp", udp_port).is_some());
        // Connections are not listeners.
        let _conn = std::net::TcpStream::connect(tcp.local_addr().expect("addr")).expect("connect");
        let again = listening_sockets().expect("sock_diag");
        assert_eq!(
            again
                .iter()
                .filter(|(l, _)| l.port == tcp_port && l.proto == "tcp")
                .count(),
            1
        );
    }
}
