//! The journal's record format: every spike a node emits is framed, checksummed and
//! appended before it is published, so that a crash loses nothing that reached the disk.
//!
//! A record is `[length: u32 LE][crc32: u32 LE][payload]`, the payload being the spike in
//! rmp-serde and the checksum covering the payload. [`scan`] reads records until the first
//! one that is incomplete or does not check out: a crash in the middle of an append leaves
//! exactly such a torn last record, which the caller cuts off; nothing before it is lost.
//!
//! No I/O here: the runtime owns the files.

use crate::spike::Spike;

/// Bytes before each payload.
pub const HEADER: usize = 8;

/// The largest payload accepted; a longer length field can only be damage.
pub const MAX_RECORD: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("spike could not be encoded for the journal: {0}")]
    Encode(String),
    #[error("a spike of {0} bytes is larger than a journal record may be")]
    TooLarge(usize),
}

/// Appends the record of `spike` to `out`.
pub fn frame(spike: &Spike, out: &mut Vec<u8>) -> Result<(), Error> {
    let payload = rmp_serde::to_vec(spike).map_err(|e| Error::Encode(e.to_string()))?;
    if payload.len() > MAX_RECORD {
        return Err(Error::TooLarge(payload.len()));
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Where and why reading stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Offset of the first byte not accepted: the length to cut the file to.
    pub offset: usize,
    pub reason: String,
}

/// The records of a journal segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Scanned {
    pub spikes: Vec<Spike>,
    /// Bytes of whole, valid records from the start.
    pub valid: usize,
    pub torn: Option<Torn>,
}

/// Reads `bytes` as records, stopping at the first that is incomplete or damaged.
pub fn scan(bytes: &[u8]) -> Scanned {
    let mut spikes = Vec::new();
    let mut at = 0;
    let torn = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        let stop = |reason: String| Some(Torn { offset: at, reason });
        if rest.len() < HEADER {
            break stop(format!("{} bytes of a record header", rest.len()));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            break stop(format!("record length {len} is beyond the limit"));
        }
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            break stop(format!(
                "record of {len} bytes, {} present",
                rest.len() - HEADER
            ));
        };
        if crc32fast::hash(payload) != crc {
            break stop("checksum mismatch".into());
        }
        match rmp_serde::from_slice::<Spike>(payload) {
            Ok(s) => spikes.push(s),
            Err(e) => break stop(format!("record does not decode: {e}")),
        }
        at += HEADER + len;
    };
    Scanned {
        spikes,
        valid: at,
        torn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spike::{Change, Kind};
    use proptest::prelude::*;

    fn spike(seq: u64) -> Spike {
        Spike {
            at_unix_ms: 1_700_000_000_000 + seq,
            label: "file_modified".into(),
            ..Spike::bare(
                "origin",
                seq,
                Kind::File,
                Change::Modified,
                &format!("/etc/f{seq}"),
            )
        }
    }

    fn journal(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 1..=n {
            frame(&spike(seq), &mut out).expect("frames");
        }
        out
    }

    #[test]
    fn whole_records_read_back_in_order() {
        let bytes = journal(50);
        let s = scan(&bytes);
        assert_eq!(s.spikes.len(), 50);
        assert_eq!(s.spikes[49], spike(50));
        assert_eq!((s.valid, s.torn), (bytes.len(), None));
        assert_eq!(scan(&[]).spikes.len(), 0);
    }

    #[test]
    fn a_flipped_bit_stops_reading_at_that_record() {
        let mut bytes = journal(3);
        let second = scan(&journal(1)).valid;
        bytes[second + HEADER + 3] ^= 0x40;
        let s = scan(&bytes);
        assert_eq!(s.spikes, vec![spike(1)]);
        let torn = s.torn.expect("torn");
        assert_eq!(torn.offset, second);
        assert_eq!(torn.reason, "checksum mismatch");
    }

    proptest! {
        /// A crash can stop an append at any byte: whatever the cut, every whole record
        /// before it is read back and reading stops exactly at the cut record.
        #[test]
        fn any_torn_tail_keeps_every_whole_record(n in 1u64..20, cut_back in 1usize..200) {
            let bytes = journal(n);
            let cut = bytes.len().saturating_sub(cut_back);
            let s = scan(&bytes[..cut]);
            let whole = (1..=n).filter(|k| scan(&journal(*k)).valid <= cut).count();
            prop_assert_eq!(s.spikes.len(), whole);
            prop_assert_eq!(s.valid, scan(&journal(whole as u64)).valid);
            prop_assert_eq!(s.torn.is_some(), s.valid < cut);
        }

        #[test]
        fn junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let s = scan(&bytes);
            prop_assert!(s.valid <= bytes.len());
        }
    }
}
