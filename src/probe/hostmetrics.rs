//! The metrics probe: reads `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`,
//! `/proc/net/dev`, and `statvfs` of every real mount in `/proc/self/mounts`, for the
//! metrics detector. A part that cannot be read is left out of that reading (the detector
//! skips its metrics), never fatal.
//!
//! statvfs of a hung network filesystem blocks; it blocks this probe's own thread only.

use std::time::Instant;

use fleetmesh_actors::hostmetrics::{
    Disk, Raw, parse_loadavg, parse_meminfo, parse_mounts, parse_net_dev, parse_stat,
};

/// Reads the host's counters now. `tmpfs`: measure tmpfs mounts too.
pub fn read(tmpfs: bool) -> Raw {
    let at = Instant::now();
    let text = |p: &str| std::fs::read_to_string(p).ok();
    let mut raw = Raw::empty(at);
    raw.cpu = text("/proc/stat").as_deref().and_then(parse_stat);
    raw.memory = text("/proc/meminfo").as_deref().and_then(parse_meminfo);
    raw.load = text("/proc/loadavg").as_deref().and_then(parse_loadavg);
    raw.net = text("/proc/net/dev")
        .as_deref()
        .map(parse_net_dev)
        .unwrap_or_default();
    for mount in text("/proc/self/mounts")
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
    #[test]
    fn reads_this_host() {
        let raw = super::read(false);
        assert!(raw.cpu.is_some() && raw.memory.is_some() && raw.load.is_some());
        assert!(raw.net.contains_key("lo"), "{:?}", raw.net);
        assert!(!raw.disks.is_empty(), "at least one real mount");
        assert!(raw.disks.values().all(|d| d.used <= d.total));
    }
}
