//! The metrics detector's logic: turns raw readings of the host's counters (CPU times,
//! memory, load, disk use per mount, network bytes per interface) into named metrics, and
//! sends each on delta ([`crate::delta`]).
//!
//! Metric names: `cpu.{busy,user,system,iowait,steal}_pct`, `mem.{used,available,cached}_bytes`,
//! `mem.used_pct`, `load.{1m,5m,15m}`, `disk.<mount>.{used_bytes,used_pct}`,
//! `net.<interface>.{rx,tx}_bytes_per_s`. Rates and CPU shares need two readings, so the
//! first reading yields only the gauges.
//!
//! No I/O: the probe reads `/proc` and `statvfs` and hands over a [`Raw`]; the parsers for
//! those files live here so that they are tested on fixed text.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::delta;
use crate::spike::{Change, FieldChange, Kind, Layer, Observation, Value};

/// Cumulative CPU time of all cores, in clock ticks (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// Memory, in bytes (`/proc/meminfo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub cached: u64,
}

/// One mounted filesystem's size and use, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disk {
    pub total: u64,
    pub used: u64,
}

/// Cumulative bytes of one interface (`/proc/net/dev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetBytes {
    pub rx: u64,
    pub tx: u64,
}

/// One reading of the host, taken at `at`. A part that could not be read is `None` or
/// empty; its metrics are skipped for this reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    pub at: Instant,
    pub cpu: Option<CpuTimes>,
    pub memory: Option<Memory>,
    pub load: Option<[f64; 3]>,
    pub disks: BTreeMap<String, Disk>,
    pub net: BTreeMap<String, NetBytes>,
}

impl Raw {
    pub fn empty(at: Instant) -> Self {
        Raw {
            at,
            cpu: None,
            memory: None,
            load: None,
            disks: BTreeMap::new(),
            net: BTreeMap::new(),
        }
    }
}

/// The first `cpu ` line of `/proc/stat`.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 4 {
        return None;
    }
    Some(CpuTimes {
        user: at(0),
        nice: at(1),
        system: at(2),
        idle: at(3),
        iowait: at(4),
        irq: at(5),
        softirq: at(6),
        steal: at(7),
    })
}

/// `/proc/meminfo`; needs at least MemTotal and MemAvailable.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(n)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let scale = if parts.next() == Some("kB") { 1024 } else { 1 };
        fields.insert(key.trim(), n.saturating_mul(scale));
    }
    Some(Memory {
        total: *fields.get("MemTotal")?,
        available: *fields.get("MemAvailable")?,
        cached: fields.get("Cached").copied().unwrap_or(0),
    })
}

/// `/proc/loadavg`: the 1, 5 and 15 minute averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    let mut out = [0.0; 3];
    for slot in &mut out {
        *slot = it.next()?.ok().filter(|v| v.is_finite())?;
    }
    Some(out)
}

/// `/proc/net/dev`: receive and transmit bytes per interface. Malformed lines are skipped.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, NetBytes> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(Ok(rx)), Some(Ok(tx))) = (
            v.first().map(|s| s.parse::<u64>()),
            v.get(8).map(|s| s.parse::<u64>()),
        ) {
            out.insert(name.trim().to_string(), NetBytes { rx, tx });
        }
    }
    out
}

/// Filesystem types that hold no user data: not measured.
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Mount points worth measuring from `/proc/self/mounts` (each once, in order), skipping
/// pseudo filesystems and, unless `tmpfs` is true, tmpfs.
pub fn parse_mounts(text: &str, tmpfs: bool) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(point), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if PSEUDO_FS.contains(&fstype) || (fstype == "tmpfs" && !tmpfs) {
            continue;
        }
        // The kernel escapes spaces and tabs in mount points as octal.
        let point = point
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\134", "\\");
        if seen.insert(point.clone()) {
            out.push(point);
        }
    }
    out
}

/// Turns readings into metric observations, sent on delta.
#[derive(Debug)]
pub struct Sampler {
    encoder: delta::Encoder,
    prev: Option<Raw>,
}

impl Sampler {
    pub fn new(encoder: delta::Encoder) -> Self {
        Sampler {
            encoder,
            prev: None,
        }
    }

    /// The metric values this reading gives (before send-on-delta).
    pub fn values(&self, raw: &Raw) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let prev = self.prev.as_ref();
        if let (Some(now), Some(before)) = (raw.cpu, prev.and_then(|p| p.cpu)) {
            let total = now.total().saturating_sub(before.total());
            if total > 0 && now.total() >= before.total() {
                let share = |a: u64, b: u64| 100.0 * a.saturating_sub(b) as f64 / total as f64;
                let idle = share(now.idle + now.iowait, before.idle + before.iowait);
                m.insert("cpu.busy_pct".into(), (100.0 - idle).clamp(0.0, 100.0));
                m.insert(
                    "cpu.user_pct".into(),
                    share(now.user + now.nice, before.user + before.nice),
                );
                m.insert(
                    "cpu.system_pct".into(),
                    share(
                        now.system + now.irq + now.softirq,
                        before.system + before.irq + before.softirq,
                    ),
                );
                m.insert("cpu.iowait_pct".into(), share(now.iowait, before.iowait));
                m.insert("cpu.steal_pct".into(), share(now.steal, before.steal));
            }
        }
        if let Some(mem) = raw.memory {
            let used = mem.total.saturating_sub(mem.available);
            m.insert("mem.used_bytes".into(), used as f64);
            m.insert("mem.available_bytes".into(), mem.available as f64);
            m.insert("mem.cached_bytes".into(), mem.cached as f64);
            if mem.total > 0 {
                m.insert(
                    "mem.used_pct".into(),
                    100.0 * used as f64 / mem.total as f64,
                );
            }
        }
        if let Some([l1, l5, l15]) = raw.load {
            m.insert("load.1m".into(), l1);
            m.insert("load.5m".into(), l5);
            m.insert("load.15m".into(), l15);
        }
        for (mount, d) in &raw.disks {
            m.insert(format!("disk.{mount}.used_bytes"), d.used as f64);
            if d.total > 0 {
                m.insert(
                    format!("disk.{mount}.used_pct"),
                    100.0 * d.used as f64 / d.total as f64,
                );
            }
        }
        if let Some(p) = prev {
            let secs = raw.at.saturating_duration_since(p.at).as_secs_f64();
            for (name, now) in &raw.net {
                // A counter that went backwards was reset (interface re-created): no rate.
                if let Some(before) = p
                    .net
                    .get(name)
                    .filter(|b| secs > 0.0 && now.rx >= b.rx && now.tx >= b.tx)
                {
                    m.insert(
                        format!("net.{name}.rx_bytes_per_s"),
                        (now.rx - before.rx) as f64 / secs,
                    );
                    m.insert(
                        format!("net.{name}.tx_bytes_per_s"),
                        (now.tx - before.tx) as f64 / secs,
                    );
                }
            }
        }
        m
    }

    /// One reading: an observation for every metric that must be sent now. A metric that
    /// disappears (unmounted disk, removed interface) is forgotten, so it is sent afresh
    /// if it comes back.
    pub fn sample(&mut self, raw: Raw) -> Vec<Observation> {
        let values = self.values(&raw);
        let mut out = Vec::new();
        for (name, v) in &values {
            let before = self.encoder.last_sent(name);
            if let Some(sent) = self.encoder.observe(raw.at, name, *v) {
                let mut o = Observation::new(Kind::Metric, Change::Sample, name, Layer::Poll);
                o.fields.insert(
                    "value".into(),
                    FieldChange {
                        before: before.map(Value::Float),
                        after: Some(Value::Float(sent)),
                    },
                );
                out.push(o);
            }
        }
        let gone: Vec<String> = self
            .encoder
            .names()
            .filter(|n| !values.contains_key(*n) && vanished(n, &raw))
            .map(str::to_string)
            .collect();
        for n in gone {
            self.encoder.forget(&n);
        }
        self.prev = Some(raw);
        out
    }
}

/// Whether metric `name` belongs to a disk or interface absent from `raw` (as opposed to a
/// part that merely could not be read this time).
fn vanished(name: &str, raw: &Raw) -> bool {
    if let Some(rest) = name.strip_prefix("disk.") {
        let mount = rest.rsplit_once('.').map_or(rest, |(m, _)| m);
        return !raw.disks.contains_key(mount);
    }
    if let Some(rest) = name.strip_prefix("net.") {
        let iface = rest.rsplit_once('.').map_or(rest, |(i, _)| i);
        return !raw.net.contains_key(iface);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{Config, Deadband, Encoder, Rule};
    use std::time::Duration;

    const STAT: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
    const MEMINFO: &str = "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     250 kB\nCached:           300 kB\n";
    const NETDEV: &str = "Inter-|   Receive                            |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  1000      10    0    0    0     0          0         0     2000      10    0    0    0     0       0          0\n  eth0: 5000 1 0 0 0 0 0 0 7000 1 0 0 0 0 0 0\nbroken: x y\n";

    #[test]
    fn parsers_read_proc_text_and_refuse_junk() {
        let cpu = parse_stat(STAT).expect("cpu line");
        assert_eq!(
            (cpu.user, cpu.system, cpu.idle, cpu.iowait),
            (100, 50, 800, 50)
        );
        assert_eq!(parse_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_stat("cpu  1 x 3 4\n"), None);
        let mem = parse_meminfo(MEMINFO).expect("meminfo");
        assert_eq!(mem.total, 1000 * 1024);
        assert_eq!(mem.available, 250 * 1024);
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n\0\u{1}junk"), None);
        assert_eq!(
            parse_loadavg("0.50 1.25 2.00 1/100 42\n"),
            Some([0.5, 1.25, 2.0])
        );
        assert_eq!(parse_loadavg("0.5 nan 1"), None);
        let net = parse_net_dev(NETDEV);
        assert_eq!(net.len(), 2, "{net:?}");
        assert_eq!(net["eth0"], NetBytes { rx: 5000, tx: 7000 });
        let mounts = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/sdb1 /mnt/my\\040disk xfs rw 0 0\n/dev/sda1 / ext4 rw 0 0\nshort\n",
            false,
        );
        assert_eq!(mounts, vec!["/".to_string(), "/mnt/my disk".to_string()]);
    }

    fn sampler(band: Deadband) -> Sampler {
        Sampler::new(Encoder::new(
            Config {
                deadband: band,
                max_silence: Duration::from_secs(60),
            },
            vec![Rule {
                metric: glob::Pattern::new("load.*").expect("glob"),
                config: Config {
                    deadband: Deadband::Absolute(0.5),
                    max_silence: Duration::from_secs(60),
                },
            }],
        ))
    }

    fn raw(at: Instant, busy: u64, idle: u64, rx: u64, load: f64) -> Raw {
        let mut r = Raw::empty(at);
        r.cpu = Some(CpuTimes {
            user: busy,
            idle,
            ..Default::default()
        });
        r.memory = parse_meminfo(MEMINFO);
        r.load = Some([load, 0.0, 0.0]);
        r.disks.insert(
            "/".into(),
            Disk {
                total: 100,
                used: 40,
            },
        );
        r.net.insert("eth0".into(), NetBytes { rx, tx: 0 });
        r
    }

    fn value(obs: &[Observation], name: &str) -> Option<f64> {
        obs.iter()
            .find(|o| o.subject == name)
            .map(|o| match o.fields["value"].after {
                Some(Value::Float(v)) => v,
                ref other => panic!("{other:?}"),
            })
    }

    #[test]
    fn rates_need_two_readings_and_only_moves_beyond_the_band_are_sent() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut s = sampler(Deadband::Absolute(1.0));
        let first = s.sample(raw(t0, 0, 0, 1000, 0.2));
        assert_eq!(value(&first, "disk./.used_pct"), Some(40.0));
        assert_eq!(value(&first, "mem.used_pct"), Some(75.0));
        assert_eq!(value(&first, "cpu.busy_pct"), None, "needs two readings");
        assert_eq!(value(&first, "net.eth0.rx_bytes_per_s"), None);

        let second = s.sample(raw(t0 + sec, 30, 70, 3000, 0.6));
        assert_eq!(value(&second, "cpu.busy_pct"), Some(30.0));
        assert_eq!(value(&second, "net.eth0.rx_bytes_per_s"), Some(2000.0));
        assert_eq!(value(&second, "load.1m"), None, "within its 0.5 band");
        assert_eq!(value(&second, "mem.used_pct"), None, "unchanged");
        let o = second
            .iter()
            .find(|o| o.subject == "cpu.busy_pct")
            .expect("sent");
        assert_eq!((o.kind, o.change), (Kind::Metric, Change::Sample));

        let third = s.sample(raw(t0 + 2 * sec, 60, 140, 5000, 0.9));
        assert_eq!(value(&third, "cpu.busy_pct"), None, "still 30%");
        assert_eq!(value(&third, "load.1m"), Some(0.9));
        let held = third.iter().find(|o| o.subject == "load.1m").expect("sent");
        assert_eq!(held.fields["value"].before, Some(Value::Float(0.2)));
    }

    #[test]
    fn reset_counters_give_no_rate_and_vanished_parts_are_forgotten() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut s = sampler(Deadband::Absolute(0.0));
        s.sample(raw(t0, 0, 0, 5000, 0.0));
        let reset = s.sample(raw(t0 + sec, 10, 10, 100, 0.0));
        assert_eq!(value(&reset, "net.eth0.rx_bytes_per_s"), None);
        // The disk is unmounted and the memory unreadable for one reading.
        let mut r = raw(t0 + 2 * sec, 20, 20, 200, 0.0);
        r.disks.clear();
        r.memory = None;
        s.sample(r);
        let back = s.sample(raw(t0 + 3 * sec, 30, 30, 300, 0.0));
        assert_eq!(
            value(&back, "disk./.used_pct"),
            Some(40.0),
            "a disk that comes back is sent afresh"
        );
        assert_eq!(
            value(&back, "mem.used_pct"),
            None,
            "memory was only unreadable: the receiver still holds its value"
        );
    }
}
