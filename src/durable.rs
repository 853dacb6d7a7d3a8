//! Durable small files: state that must survive a crash whole (sequence reservations,
//! baselines, snapshots), and the region's consensus state ([`RegionFile`]).

use std::fs::{File, OpenOptions};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use fleetmesh_actors::region::{Durable, Persist};
use serde::Deserialize;

/// Writes `bytes` to `path` so that a crash leaves either the old or the new contents:
/// a temporary file, fsync, rename, fsync of the directory.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The region's consensus state on disk (`region.rmp`): an image written whole (one
/// rmp-serde [`Durable`], which is all a file of earlier versions holds), followed by the
/// deltas saved since, each framed as `u32 length | u32 crc32 | rmp-serde Persist` (big
/// endian). Saves append deltas; the image is rewritten whole (temporary file, fsync,
/// rename, fsync of the directory) when the governor asks, after a snapshot compacted
/// the log.
#[derive(Debug)]
pub struct RegionFile {
    path: PathBuf,
    /// Open for appending once the file is known whole (after `open` or a rewrite).
    file: Option<File>,
}

/// Bytes of one delta's frame header.
const FRAME_HEAD: usize = 8;

impl RegionFile {
    /// Reads `path`: the image with every delta folded in, or `None` if there is no
    /// file. A torn last delta (a crash while appending: its save never completed, so
    /// nothing that depended on it left) is cut off the file. A damaged delta before
    /// the last one, or one that does not fold, is an error: the file is not trusted.
    pub fn open(path: &Path) -> std::io::Result<(RegionFile, Option<Durable>)> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((
                    RegionFile {
                        path: path.to_path_buf(),
                        file: None,
                    },
                    None,
                ));
            }
            Err(e) => return Err(e),
        };
        let (durable, valid) = read_region(&bytes).map_err(std::io::Error::other)?;
        let file = OpenOptions::new().append(true).open(path)?;
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                cut = bytes.len() - valid,
                "the region state ends with a torn delta (a crash while saving); cutting it off"
            );
            file.set_len(u64::try_from(valid).unwrap_or(u64::MAX))?;
            file.sync_all()?;
        }
        Ok((
            RegionFile {
                path: path.to_path_buf(),
                file: Some(file),
            },
            Some(durable),
        ))
    }

    /// Replaces the file with `durable`, atomically.
    pub fn write_whole(&mut self, durable: &Durable) -> std::io::Result<()> {
        self.file = None;
        let bytes = rmp_serde::to_vec(durable).map_err(std::io::Error::other)?;
        write_durable(&self.path, &bytes)?;
        self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        Ok(())
    }

    /// Appends `deltas` and syncs them. Without a whole image on disk yet there is
    /// nothing to append to: an error (the governor writes the image whole first).
    pub fn append(&mut self, deltas: &[Persist]) -> std::io::Result<()> {
        let Some(file) = &mut self.file else {
            return Err(std::io::Error::other(
                "no region state written whole yet to append deltas to",
            ));
        };
        let mut buf = Vec::new();
        for d in deltas {
            frame(d, &mut buf)?;
        }
        file.write_all(&buf)?;
        file.sync_data()
    }
}

/// Appends one delta's frame to `buf`.
fn frame(delta: &Persist, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let body = rmp_serde::to_vec(delta).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    buf.extend_from_slice(&body);
    Ok(())
}

/// Reads a region file's bytes: the folded image, and how many bytes of it are whole
/// (less than all when the last delta is torn).
pub fn read_region(bytes: &[u8]) -> Result<(Durable, usize), String> {
    let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
    let mut durable =
        Durable::deserialize(&mut de).map_err(|e| format!("the image is unreadable: {e}"))?;
    let mut at = usize::try_from(de.position()).map_err(|e| e.to_string())?;
    let mut n = 0;
    while at < bytes.len() {
        n += 1;
        let rest = &bytes[at..];
        let torn = |what: &str| -> Result<(Durable, usize), String> {
            Err(format!("delta {n} at byte {at} is damaged: {what}"))
        };
        let Some(head) = rest.get(..FRAME_HEAD) else {
            return Ok((durable, at));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(FRAME_HEAD));
        let Some(body) = end.and_then(|end| rest.get(FRAME_HEAD..end)) else {
            // Runs past the end of the file: the last append was cut short.
            return Ok((durable, at));
        };
        let last = at + FRAME_HEAD + body.len() == bytes.len();
        if crc32fast::hash(body) != crc {
            if last {
                return Ok((durable, at));
            }
            return torn("checksum mismatch");
        }
        let delta: Persist = match rmp_serde::from_slice(body) {
            Ok(d) => d,
            Err(e) => return torn(&e.to_string()),
        };
        if let Err(e) = durable.apply(&delta) {
            return torn(&e.to_string());
        }
        at += FRAME_HEAD + body.len();
    }
    Ok((durable, at))
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
