//! The network-configuration detector's logic: listening sockets, interfaces with their
//! addresses, and routes, as snapshots; their differences become `network` observations.
//!
//! Parsers take the text of `/proc/net/{tcp,tcp6,udp,udp6}` and `/proc/net/route`; the
//! probe supplies interfaces already read. A line that cannot be parsed is skipped and
//! counted, never fatal. (resolv.conf and hosts are files: the file detector covers them.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::spike::{Change, FieldChange, Kind, Layer, Observation, Severity, Value};

/// A socket accepting connections (TCP LISTEN) or datagrams (bound UDP).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Listener {
    pub proto: String,
    pub addr: String,
    pub port: u16,
}

impl Listener {
    pub fn subject(&self) -> String {
        if self.addr.contains(':') {
            format!("listen {} [{}]:{}", self.proto, self.addr, self.port)
        } else {
            format!("listen {} {}:{}", self.proto, self.addr, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub up: bool,
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    pub addrs: BTreeSet<String>,
}

/// The process that holds a listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub name: String,
    pub exe: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub listeners: BTreeSet<Listener>,
    /// Who holds each listener, where the probe could tell.
    pub owners: BTreeMap<Listener, Owner>,
    pub interfaces: BTreeMap<String, Interface>,
    /// `dest/prefix via gateway dev iface`.
    pub routes: BTreeSet<String>,
}

/// Decodes `0100007F:1F90` (IPv4) or the 32-hex-digit IPv6 form, as /proc writes them.
fn socket_addr(field: &str) -> Option<(String, u16)> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes()).to_string(),
        32 => {
            let mut bytes = [0u8; 16];
            for w in 0..4 {
                let word = u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).ok()?;
                bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
            Ipv6Addr::from(bytes).to_string()
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Listening sockets of one `/proc/net/<proto>` table; returns them and the number of
/// lines that could not be read.
/// Listening sockets in a `/proc/net/{tcp,tcp6,udp,udp6}` table, each with its inode
/// (which `/proc/<pid>/fd` links name as `socket:[inode]`), and the count of bad lines.
pub fn parse_sockets(proto: &str, text: &str) -> (Vec<(Listener, Option<u64>)>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    // TCP: state 0A is LISTEN. UDP: 07 (unconnected, bound) is the listening state.
    let listening = if proto.starts_with("tcp") { "0A" } else { "07" };
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (f.get(1), f.get(3)) else {
            bad += 1;
            continue;
        };
        if *state != listening {
            continue;
        }
        match socket_addr(local) {
            Some((addr, port)) => out.push((
                Listener {
                    proto: proto.into(),
                    addr,
                    port,
                },
                f.get(9).and_then(|i| i.parse().ok()).filter(|i| *i != 0),
            )),
            None => bad += 1,
        }
    }
    (out, bad)
}

/// IPv4 routes of `/proc/net/route`; returns them and the number of unreadable lines.
pub fn parse_routes(text: &str) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| f.get(i).and_then(|h| u32::from_str_radix(h, 16).ok());
        let (Some(iface), Some(dest), Some(gw), Some(mask)) = (f.first(), hex(1), hex(2), hex(7))
        else {
            bad += 1;
            continue;
        };
        let ip = |v: u32| Ipv4Addr::from(v.swap_bytes());
        let prefix = mask.count_ones();
        let route = if gw == 0 {
            format!("{}/{prefix} dev {iface}", ip(dest))
        } else {
            format!("{}/{prefix} via {} dev {iface}", ip(dest), ip(gw))
        };
        out.push(route);
    }
    (out, bad)
}

fn observation(kind_subject: String, change: Change, severity: Severity) -> Observation {
    let mut o = Observation::new(Kind::Network, change, kind_subject, Layer::Poll);
    o.severity = severity;
    o
}

/// Reads one reported field of an interface.
type Getter = fn(&Interface) -> Value;

/// The observations that take `a` to `b`.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Vec<Observation> {
    let mut out = Vec::new();
    let with_owner = |mut o: Observation, owner: Option<&Owner>| {
        if let Some(w) = owner {
            o.fields.insert(
                "pid".into(),
                FieldChange {
                    before: None,
                    after: Some(Value::Int(i64::from(w.pid))),
                },
            );
            o.fields
                .insert("process".into(), FieldChange::fact(&w.name));
            o.fields.insert("exe".into(), FieldChange::fact(&w.exe));
        }
        o
    };
    for l in b.listeners.difference(&a.listeners) {
        // A new listener is a new way in.
        let o = observation(l.subject(), Change::Added, Severity::Medium);
        out.push(with_owner(o, b.owners.get(l)));
    }
    for l in a.listeners.difference(&b.listeners) {
        let o = observation(l.subject(), Change::Removed, Severity::Low);
        out.push(with_owner(o, a.owners.get(l)));
    }
    let names: BTreeSet<&String> = a.interfaces.keys().chain(b.interfaces.keys()).collect();
    for name in names {
        let (ib, ia) = (a.interfaces.get(name), b.interfaces.get(name));
        if ib == ia {
            continue;
        }
        let change = match (ib, ia) {
            (None, _) => Change::Added,
            (_, None) => Change::Removed,
            _ => Change::Modified,
        };
        let mut o = observation(format!("iface {name}"), change, Severity::Medium);
        let fields: [(&str, Getter); 4] = [
            ("up", |i| Value::Text(i.up.to_string())),
            ("mtu", |i| Value::Int(i.mtu.map_or(0, i64::from))),
            ("mac", |i| Value::Text(i.mac.clone().unwrap_or_default())),
            ("addresses", |i| {
                Value::List(i.addrs.iter().cloned().collect())
            }),
        ];
        for (field, get) in fields {
            let (bv, av) = (ib.map(get), ia.map(get));
            if bv != av {
                o.fields.insert(
                    field.into(),
                    FieldChange {
                        before: bv,
                        after: av,
                    },
                );
            }
        }
        out.push(o);
    }
    for r in b.routes.difference(&a.routes) {
        out.push(observation(
            format!("route {r}"),
            Change::Added,
            Severity::Medium,
        ));
    }
    for r in a.routes.difference(&b.routes) {
        out.push(observation(
            format!("route {r}"),
            Change::Removed,
            Severity::Medium,
        ));
    }
    out
}

/// The detector: the last snapshot; the first one only records.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    last: Option<Snapshot>,
}

impl Detector {
    pub fn handle(&mut self, snap: Snapshot) -> Vec<Observation> {
        let out = self
            .last
            .as_ref()
            .map(|l| diff(l, &snap))
            .unwrap_or_default();
        self.last = Some(snap);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: garbage
";
    const TCP6: &str =
        "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0
";

    #[test]
    fn listening_sockets_are_decoded() {
        let (l, bad) = parse_sockets("tcp", TCP);
        let subjects: Vec<String> = l.iter().map(|(l, _)| l.subject()).collect();
        assert_eq!(
            subjects,
            ["listen tcp 127.0.0.1:8080", "listen tcp 0.0.0.0:22"]
        );
        assert_eq!(l[0].1, Some(1), "the inode column");
        assert_eq!(bad, 1, "the garbage line is counted, not fatal");
        let (l6, _) = parse_sockets("tcp6", TCP6);
        assert_eq!(l6[0].0.subject(), "listen tcp6 [::1]:80");
        assert_eq!(l6[0].1, None, "a short line has no inode");
    }

    #[test]
    fn routes_are_decoded() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
        let (r, bad) = parse_routes(text);
        assert_eq!(
            r,
            ["0.0.0.0/0 via 192.0.2.1 dev eth0", "192.0.2.0/24 dev eth0"]
        );
        assert_eq!(bad, 0);
    }

    #[test]
    fn differences_become_network_observations() {
        let mut d = Detector::default();
        let iface = |addrs: &[&str]| Interface {
            up: true,
            mtu: Some(1500),
            mac: Some("02:00:00:00:00:01".into()),
            addrs: addrs.iter().map(|s| s.to_string()).collect(),
        };
        let mut a = Snapshot::default();
        a.interfaces
            .insert("eth0".into(), iface(&["192.0.2.10/24"]));
        a.routes.insert("0.0.0.0/0 via 192.0.2.1 dev eth0".into());
        assert!(
            d.handle(a.clone()).is_empty(),
            "the first snapshot only records"
        );

        let mut b = a.clone();
        let backdoor = Listener {
            proto: "tcp".into(),
            addr: "0.0.0.0".into(),
            port: 4444,
        };
        b.listeners.insert(backdoor.clone());
        b.owners.insert(
            backdoor,
            Owner {
                pid: 4242,
                name: "nc".into(),
                exe: "/tmp/nc".into(),
            },
        );
        b.interfaces
            .insert("eth0".into(), iface(&["192.0.2.10/24", "198.51.100.7/24"]));
        b.routes.clear();
        let out = d.handle(b);
        let got: Vec<(String, Change)> =
            out.iter().map(|o| (o.subject.clone(), o.change)).collect();
        assert_eq!(
            got,
            [
                ("listen tcp 0.0.0.0:4444".to_string(), Change::Added),
                ("iface eth0".to_string(), Change::Modified),
                (
                    "route 0.0.0.0/0 via 192.0.2.1 dev eth0".to_string(),
                    Change::Removed
                ),
            ]
        );
        assert_eq!(out[1].fields.keys().collect::<Vec<_>>(), ["addresses"]);
        assert_eq!(out[0].fields["pid"].after, Some(Value::Int(4242)));
        assert_eq!(
            out[0].fields["exe"].after,
            Some(Value::Text("/tmp/nc".into()))
        );
    }
}
