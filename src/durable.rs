//! Durable small files: state that must survive a crash whole (sequence reservations,
//! baselines, snapshots).

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that a crash leaves either the old or the new contents:
/// a temporary file, fsync, rename, fsync of the directory.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("seq");
        write_durable(&p, b"1024").expect("first");
        write_durable(&p, b"2048").expect("second");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "2048");
        assert!(!p.with_extension("tmp").exists());
    }
}
