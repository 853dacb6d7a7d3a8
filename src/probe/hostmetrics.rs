//! The metrics probe: reads `stat`, `meminfo`, `loadavg` and `net/dev` under the proc root
//! (`metrics.proc_root`, `/proc` unless a container mounts the host's elsewhere), and
//! `statvfs` of every real mount in this process's `/proc/self/mounts`, for the metrics
//! detector. A part that cannot be read is left out of that reading (the detector skips
//! its metrics), never fatal.
//!
//! statvfs of a hung network filesystem blocks; it blocks this probe's own thread only.

use std::path::Path;
use std::time::Instant;

use fleetmesh_actors::hostmetrics::{
    Disk, Raw, parse_loadavg, parse_meminfo, parse_mounts, parse_net_dev, parse_stat,
};

/// Reads the host's counters now from `proc_root`. `tmpfs`: measure tmpfs mounts too.
pub fn read(tmpfs: bool, proc_root: &Path) -> Raw {
    let at = Instant::now();
    let text = |p: &Path| std::fs::read_to_string(p).ok();
    let mut raw = Raw::empty(at);
    raw.cpu = text(&proc_root.join("stat"))
        .as_deref()
        .and_then(parse_stat);
    raw.memory = text(&proc_root.join("meminfo"))
        .as_deref()
        .and_then(parse_meminfo);
    raw.load = text(&proc_root.join("loadavg"))
        .as_deref()
        .and_then(parse_loadavg);
    raw.net = text(&proc_root.join("net/dev"))
        .as_deref()
        .map(parse_net_dev)
        .unwrap_or_default();
    // The mounts this process sees, whatever proc_root is: they are measured from here.
    for mount in text(Path::new("/proc/self/mounts"))
        .as_deref()
        .map(|t| parse_mounts(t, tmpfs))
        .unwrap_or_default()
    {
        if let Ok(st) = nix::sys::statvfs::statvfs(mount.as_str()) {
            let frag = st.fragment_size();
            let blocks = st.blocks();
            if blocks == 0 {
                continue;
            }
            let used = blocks.saturating_sub(st.blocks_free());
            // As df counts it: space reserved for root is neither used nor available.
            let usable = used + st.blocks_available();
            raw.disks.insert(
                mount,
                Disk {
                    total: usable.saturating_mul(frag),
                    used: used.saturating_mul(frag),
                },
            );
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn reads_this_host() {
        let raw = super::read(false, Path::new("/proc"));
        assert!(raw.cpu.is_some() && raw.memory.is_some() && raw.load.is_some());
        assert!(raw.net.contains_key("lo"), "{:?}", raw.net);
        assert!(!raw.disks.is_empty(), "at least one real mount");
        assert!(raw.disks.values().all(|d| d.used <= d.total));
    }

    #[test]
    fn reads_a_proc_tree_elsewhere_and_skips_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("loadavg"), "7.50 1.00 0.50 1/100 42\n").expect("loadavg");
        std::fs::write(
            root.join("meminfo"),
            "MemTotal: 1000 kB\nMemAvailable: 400 kB\n",
        )
        .expect("meminfo");
        let raw = super::read(false, root);
        assert_eq!(raw.load, Some([7.5, 1.0, 0.5]));
        assert_eq!(raw.memory.map(|m| m.available), Some(400 * 1024));
        assert_eq!(raw.cpu, None, "no stat file");
        assert!(raw.net.is_empty(), "no net/dev file");
    }
}
