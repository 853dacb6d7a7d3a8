//! The durable spike journal: `<data_dir>/journal/<first seq>.log` segments of checksummed
//! records (format in `fleetmesh_actors::journal`). Every spike is appended, and with
//! `journal.fsync = "always"` made durable, before it is published.
//!
//! Opening recovers: each segment is read up to its first incomplete or damaged record and
//! cut there (a crash mid-append leaves such a torn last record); everything before it is
//! kept. Segments roll at `journal.segment_bytes`; whole segments are removed once every
//! spike in them is acknowledged ([`Journal::ack`]) or, failing that, once the journal
//! exceeds `journal.retain_bytes` (counted as dropped without acknowledgement).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fleetmesh_actors::journal::{self, Scanned};
use fleetmesh_actors::spike::Spike;
use serde::Deserialize;

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// After every append, before the spikes are published: a power cut loses nothing
    /// that was published.
    Always,
    /// Left to the operating system: a crash of the process loses nothing, a power cut
    /// may lose the last seconds.
    Never,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub fsync: Fsync,
    pub segment_bytes: u64,
    pub retain_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    last_seq: Option<u64>,
    bytes: u64,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest spikes kept (at most the `keep` asked for), oldest first.
    pub recent: Vec<Spike>,
    /// The highest sequence number in the journal.
    pub last_seq: Option<u64>,
    /// Torn or damaged records cut off: (segment, offset, reason).
    pub cut: Vec<(PathBuf, u64, String)>,
}

#[derive(Debug)]
pub struct Journal {
    config: Config,
    segments: Vec<Segment>,
    file: Option<File>,
    acked: u64,
    /// Spikes removed by the size bound before they were acknowledged.
    pub dropped_unacked: u64,
    buf: Vec<u8>,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

impl Journal {
    /// Opens (creating) the journal and recovers it, returning the newest `keep` spikes.
    pub fn open(config: Config, keep: usize) -> anyhow::Result<(Journal, Recovered)> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("cannot create journal dir {}", config.dir.display()))?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&config.dir)
            .with_context(|| format!("cannot read journal dir {}", config.dir.display()))?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let seq = name.strip_suffix(".log")?.parse::<u64>().ok()?;
                Some((seq, e.path()))
            })
            .collect();
        names.sort();
        let mut rec = Recovered::default();
        let mut segments = Vec::new();
        for (first_seq, path) in names {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("cannot read journal segment {}", path.display()))?;
            let Scanned {
                spikes,
                valid,
                torn,
            } = journal::scan(&bytes);
            if let Some(t) = torn {
                tracing::warn!(segment = %path.display(), offset = t.offset, reason = %t.reason, "journal: cutting off a torn or damaged record");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| {
                        f.set_len(valid as u64)?;
                        f.sync_all()
                    })
                    .with_context(|| format!("cannot cut {} to {valid} bytes", path.display()))?;
                rec.cut.push((path.clone(), t.offset as u64, t.reason));
            }
            let last_seq = spikes.last().map(|s| s.seq);
            rec.last_seq = rec.last_seq.max(last_seq);
            rec.recent.extend(spikes);
            if rec.recent.len() > keep {
                rec.recent.drain(..rec.recent.len() - keep);
            }
            segments.push(Segment {
                path,
                first_seq,
                last_seq,
                bytes: valid as u64,
            });
        }
        let journal = Journal {
            config,
            segments,
            file: None,
            acked: 0,
            dropped_unacked: 0,
            buf: Vec::new(),
        };
        Ok((journal, rec))
    }

    /// Appends `spikes` (in sequence order) and, with `fsync = "always"`, syncs them.
    pub fn append(&mut self, spikes: &[Spike]) -> anyhow::Result<()> {
        let Some(first) = spikes.first() else {
            return Ok(());
        };
        self.buf.clear();
        for s in spikes {
            journal::frame(s, &mut self.buf)?;
        }
        let roll = match self.segments.last() {
            None => true,
            Some(seg) => {
                seg.bytes > 0 && seg.bytes + self.buf.len() as u64 > self.config.segment_bytes
            }
        };
        if roll || self.file.is_none() {
            self.open_segment(first.seq, roll)?;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no journal segment open"))?;
        file.write_all(&self.buf)?;
        if self.config.fsync == Fsync::Always {
            file.sync_data()?;
        }
        if let Some(seg) = self.segments.last_mut() {
            seg.bytes += self.buf.len() as u64;
            seg.last_seq = spikes.last().map(|s| s.seq);
        }
        self.compact()?;
        Ok(())
    }

    fn open_segment(&mut self, first_seq: u64, new: bool) -> anyhow::Result<()> {
        if new {
            let path = self.config.dir.join(segment_name(first_seq));
            self.segments.push(Segment {
                path,
                first_seq,
                last_seq: None,
                bytes: 0,
            });
        }
        let seg = self
            .segments
            .last()
            .ok_or_else(|| anyhow::anyhow!("no segment"))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&seg.path)?;
        if new {
            // The new name must survive a crash too.
            File::open(&self.config.dir)?.sync_all()?;
        }
        self.file = Some(file);
        Ok(())
    }

    /// Every spike up to `seq` is acknowledged: segments holding only those can go.
    pub fn ack(&mut self, seq: u64) -> anyhow::Result<()> {
        self.acked = self.acked.max(seq);
        self.compact()
    }

    /// Spikes with a sequence number above `seq`, oldest first (for replay).
    pub fn since(&self, seq: u64) -> anyhow::Result<Vec<Spike>> {
        self.read_after(seq, usize::MAX)
    }

    /// At most `max` spikes with a sequence number above `seq`, oldest first; reads only
    /// the segments it needs.
    pub fn read_after(&self, seq: u64, max: usize) -> anyhow::Result<Vec<Spike>> {
        let mut out = Vec::new();
        for seg in &self.segments {
            if seg.last_seq.is_some_and(|l| l <= seq) {
                continue;
            }
            if out.len() >= max {
                break;
            }
            let bytes = std::fs::read(&seg.path)?;
            out.extend(
                journal::scan(&bytes)
                    .spikes
                    .into_iter()
                    .filter(|s| s.seq > seq),
            );
        }
        out.truncate(max);
        Ok(out)
    }

    /// Calls `f` with every spike numbered above `seq`, oldest first, reading one segment
    /// at a time (a long journal is never held in memory whole).
    pub fn each_after(&self, seq: u64, mut f: impl FnMut(&Spike)) -> anyhow::Result<()> {
        for seg in &self.segments {
            if seg.last_seq.is_none_or(|l| l <= seq) {
                continue;
            }
            let bytes = std::fs::read(&seg.path)?;
            for s in journal::scan(&bytes).spikes.iter().filter(|s| s.seq > seq) {
                f(s);
            }
        }
        Ok(())
    }

    /// Bytes held on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn compact(&mut self) -> anyhow::Result<()> {
        // Never the segment being written.
        while self.segments.len() > 1 {
            let seg = &self.segments[0];
            let acked = seg.last_seq.is_none_or(|l| l <= self.acked);
            let over = self.bytes() > self.config.retain_bytes;
            if !acked && !over {
                break;
            }
            if !acked {
                let n = seg.last_seq.map_or(0, |l| {
                    l.saturating_sub(self.acked.max(seg.first_seq.saturating_sub(1)))
                });
                self.dropped_unacked += n;
                tracing::warn!(segment = %seg.path.display(), spikes = n, "journal over journal.retain_bytes: dropping unacknowledged spikes");
            }
            remove(&seg.path)?;
            self.segments.remove(0);
        }
        Ok(())
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmesh_actors::node;
    use fleetmesh_actors::spike::{Change, Kind, Severity};

    fn spike(seq: u64) -> Spike {
        Spike {
            origin: node::Id::from("origin"),
            seq,
            at_unix_ms: seq,
            kind: Kind::File,
            change: Change::Added,
            subject: format!("/etc/f{seq}"),
            before: None,
            after: None,
            severity: Severity::Info,
            layers: vec![],
            label: "file_added".into(),
            fields: Default::default(),
        }
    }

    fn config(dir: &Path, segment_bytes: u64, retain_bytes: u64) -> Config {
        Config {
            dir: dir.join("journal"),
            fsync: Fsync::Always,
            segment_bytes,
            retain_bytes,
        }
    }

    #[test]
    fn appends_survive_reopening_and_a_torn_tail_is_cut() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path(), 1 << 20, 1 << 30);
        let (mut j, rec) = Journal::open(cfg.clone(), 10).expect("opens");
        assert!(rec.recent.is_empty() && rec.last_seq.is_none());
        for seq in 1..=30 {
            j.append(&[spike(seq)]).expect("appends");
        }
        drop(j);
        // A crash in the middle of the next append.
        let seg = cfg.dir.join(segment_name(1));
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).expect("write");
        drop(f);
        let before = std::fs::metadata(&seg).expect("meta").len();
        let (mut j, rec) = Journal::open(cfg.clone(), 10).expect("reopens");
        assert_eq!(rec.last_seq, Some(30));
        assert_eq!(
            rec.recent.iter().map(|s| s.seq).collect::<Vec<_>>(),
            (21..=30).collect::<Vec<_>>()
        );
        assert_eq!(rec.cut.len(), 1);
        assert_eq!(std::fs::metadata(&seg).expect("meta").len(), before - 7);
        j.append(&[spike(31)]).expect("appends after recovery");
        assert_eq!(j.since(28).expect("reads").len(), 3);
    }

    #[test]
    fn segments_roll_and_go_when_acknowledged_or_over_the_bound() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(tmp.path(), 1000, 1 << 30);
        let (mut j, _) = Journal::open(cfg.clone(), 0).expect("opens");
        for seq in 1..=100 {
            j.append(&[spike(seq)]).expect("appends");
        }
        let count = || std::fs::read_dir(&cfg.dir).expect("dir").count();
        let many = count();
        assert!(many > 5, "{many} segments");
        assert_eq!(j.since(0).expect("all").len(), 100);
        j.ack(50).expect("acks");
        let fewer = count();
        assert!(fewer < many);
        let left = j.since(0).expect("rest");
        assert!(
            left.first().is_some_and(|s| s.seq <= 51),
            "nothing unacknowledged went"
        );
        assert_eq!(left.last().map(|s| s.seq), Some(100));
        assert_eq!(j.dropped_unacked, 0);

        // A bound smaller than the journal drops the oldest, counted.
        let tight = config(tmp.path(), 1000, 3000);
        let (mut j, rec) = Journal::open(tight, 5).expect("reopens");
        assert_eq!(rec.last_seq, Some(100));
        j.append(&[spike(101)]).expect("appends");
        assert!(j.bytes() <= 3000 + 1000);
        assert!(j.dropped_unacked > 0);
    }
}
