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

    use fleetmesh_actors::region::{
        EntryKind, Image, LogEntry, Membership, Persist, Snapshot, Vote,
    };

    fn entry(index: u64, term: u64) -> LogEntry {
        LogEntry {
            index,
            term,
            kind: EntryKind::Command,
            data: vec![1, 2, 3],
            context: vec![],
        }
    }

    fn delta(first: u64, last: u64, term: u64) -> Persist {
        Persist {
            vote: Some(Vote {
                term,
                voted_for: 1,
                commit: last,
            }),
            entries: (first..=last).map(|i| entry(i, term)).collect(),
            ..Persist::default()
        }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut image = Image::default();
        image.state.applied = index;
        image
            .state
            .names
            .insert("web-1".into(), "peer-a".to_string().into());
        Snapshot {
            index,
            term,
            membership: Membership {
                voters: vec![1, 2, 3],
                ..Membership::default()
            },
            image,
        }
    }

    #[test]
    fn region_file_appends_deltas_and_rewrites_whole_after_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("region.rmp");
        let (mut file, none) = RegionFile::open(&p).expect("no file yet");
        assert!(none.is_none());
        let mut want = Durable {
            founders: vec![1, 2, 3],
            membership: Membership {
                voters: vec![1, 2, 3],
                ..Membership::default()
            },
            ..Durable::default()
        };
        assert!(
            file.append(&[delta(1, 1, 1)]).is_err(),
            "nothing to append to"
        );
        file.write_whole(&want).expect("whole");
        let whole_len = std::fs::metadata(&p).expect("file").len();
        let deltas = [delta(1, 3, 1), delta(4, 6, 1)];
        file.append(&deltas).expect("append");
        file.append(&[delta(7, 7, 2)]).expect("append");
        for d in deltas.iter().chain([&delta(7, 7, 2)]) {
            want.apply(d).expect("folds");
        }
        let grown = std::fs::metadata(&p).expect("file").len();
        assert!(grown > whole_len, "appended, not rewritten");
        let (mut file, read) = RegionFile::open(&p).expect("reads");
        assert_eq!(read.as_ref(), Some(&want));

        // A snapshot compacts: the governor asks for the image whole, which is smaller.
        let compact = Persist {
            snapshot: Some(snapshot(6, 1)),
            ..Persist::default()
        };
        want.apply(&compact).expect("folds");
        assert_eq!(want.entries, vec![entry(7, 2)]);
        file.write_whole(&want).expect("whole");
        file.append(&[delta(8, 9, 2)]).expect("append");
        want.apply(&delta(8, 9, 2)).expect("folds");
        let (_, read) = RegionFile::open(&p).expect("reads");
        assert_eq!(read, Some(want.clone()));
        assert_eq!(
            read.and_then(|d| d.snapshot)
                .map(|s| s.image.state.names.len()),
            Some(1)
        );
        assert!(!p.with_extension("tmp").exists());
    }

    #[test]
    fn region_file_of_an_earlier_version_is_read_and_appended_to() {
        // Earlier versions wrote one image, whole, without the snapshot field.
        #[derive(serde::Serialize)]
        struct Old {
            vote: Vote,
            membership: Membership,
            entries: Vec<LogEntry>,
            founders: Vec<u64>,
        }
        let old = Old {
            vote: Vote {
                term: 3,
                voted_for: 2,
                commit: 2,
            },
            membership: Membership {
                voters: vec![1, 2],
                ..Membership::default()
            },
            entries: vec![entry(1, 1), entry(2, 3)],
            founders: vec![1, 2],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("region.rmp");
        std::fs::write(&p, rmp_serde::to_vec(&old).expect("encodes")).expect("write");
        let (mut file, read) = RegionFile::open(&p).expect("reads");
        let read = read.expect("an image");
        assert_eq!(read.entries, old.entries);
        assert_eq!((read.vote, read.founders.clone()), (old.vote, old.founders));
        assert!(read.snapshot.is_none());
        file.append(&[delta(3, 3, 3)]).expect("append");
        let (_, again) = RegionFile::open(&p).expect("reads");
        assert_eq!(again.expect("an image").last_index(), 3);
    }

    #[test]
    fn region_file_cuts_a_torn_last_delta_and_refuses_a_damaged_one_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("region.rmp");
        let (mut file, _) = RegionFile::open(&p).expect("no file yet");
        let base = Durable {
            membership: Membership {
                voters: vec![1],
                ..Membership::default()
            },
            ..Durable::default()
        };
        file.write_whole(&base).expect("whole");
        file.append(&[delta(1, 2, 1)]).expect("append");
        let good = std::fs::metadata(&p).expect("file").len();
        file.append(&[delta(3, 4, 1)]).expect("append");
        let full = std::fs::read(&p).expect("read");
        // A crash in the middle of the second append.
        for cut in [1, 5, 9, 20] {
            let torn = &full[..full.len() - cut];
            std::fs::write(&p, torn).expect("write");
            let (mut file, read) = RegionFile::open(&p).expect("a torn tail is cut off");
            assert_eq!(read.expect("an image").last_index(), 2, "cut {cut}");
            assert_eq!(std::fs::metadata(&p).expect("file").len(), good);
            // Appending after the cut reads back whole.
            file.append(&[delta(3, 3, 1)]).expect("append");
            let (_, read) = RegionFile::open(&p).expect("reads");
            assert_eq!(read.expect("an image").last_index(), 3);
        }
        // A flipped byte in a delta that is not the last: the file is not trusted.
        let mut damaged = full.clone();
        let at = usize::try_from(good).expect("small") - 2;
        damaged[at] ^= 0xff;
        std::fs::write(&p, &damaged).expect("write");
        let err = RegionFile::open(&p).expect_err("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
        // So is a delta that leaves a gap.
        let mut gap = full[..usize::try_from(good).expect("small")].to_vec();
        frame(&delta(9, 9, 1), &mut gap).expect("frames");
        std::fs::write(&p, &gap).expect("write");
        assert!(RegionFile::open(&p).is_err());
    }
}
