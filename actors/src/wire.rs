//! The wire format: a versioned envelope serialized with rmp-serde.
//!
//! Every gossip message and every request or response is a frame `[version, body]`. The
//! version is read first, so that a frame from a newer or older protocol is refused with
//! a clear reason instead of being misread. Decoding never panics: garbage is an
//! [`Error`] the caller counts and reports (gossipsub then penalizes the sender).

use std::collections::VecDeque;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::{census, fleet, heartbeat, node, spike};

pub use crate::audit::Answer as AuditAnswer;
pub use crate::sync::Report as SyncReport;

/// The protocol version this build speaks (4: consultation, approvals, emergencies).
pub const VERSION: u16 = 4;

/// The largest frame accepted; matches the gossipsub `max_transmit_size`.
pub const MAX_FRAME: usize = 64 * 1024;

/// A gossip message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    Heartbeat(Box<heartbeat::Beat>),
    /// Spikes of one origin in sequence order: what one detector reading produced (a
    /// metrics sample, a rescan), or what a storm produced within one spacing
    /// ([`crate::outbox::Coalesce`]), so that a reading or a storm costs one signed message
    /// per spacing, not one per spike.
    Spikes(Vec<spike::Spike>),
    /// The region master's acknowledgements: per origin, the highest sequence number up
    /// to which it applied every spike. Only the master of `term` sends these; nodes
    /// check the author against the master their consensus view knows.
    Acks(Acks),
    /// A pattern the master of a region approved (fleet topic); signed by that master.
    Approval(Box<fleet::Approval>),
    /// A critical fleet event, broadcast by the master that raised it (fleet topic).
    Emergency(Box<fleet::Emergency>),
    /// A region's members and master, published by that master (fleet topic).
    Census(Box<census::Summary>),
    /// A region's silences, published by its master when one changes and every
    /// half minute (fleet topic).
    Silences(Box<crate::alerting::silence::Published>),
}

/// A master's acknowledgements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acks {
    pub region: String,
    pub term: u64,
    pub marks: Vec<(node::Id, u64)>,
}

impl Body {
    /// A short name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Heartbeat(_) => "heartbeat",
            Body::Spikes(_) => "spikes",
            Body::Acks(_) => "acks",
            Body::Approval(_) => "approval",
            Body::Emergency(_) => "emergency",
            Body::Census(_) => "census",
            Body::Silences(_) => "silences",
        }
    }
}

/// The next replay batch, taken from the front of `ahead`: the journal's spikes above the
/// master's mark, in order. A batch ends at a gap in the numbering (numbers a crash left
/// unused, or dropped by the journal's size bound), so that the next batch's `first` tells
/// the master at once that the gap is empty instead of it holding what follows, and before
/// it would outgrow one wire frame. Returns `first` (the lowest number still held; `last +
/// 1` when nothing is) and the batch, possibly empty: an empty batch still tells the
/// master, by its `first`, that everything up to `last` is gone.
pub fn replay_batch(ahead: &mut VecDeque<spike::Spike>, last: u64) -> (u64, Vec<spike::Spike>) {
    let first = ahead.front().map_or(last + 1, |s| s.seq);
    let mut batch: Vec<spike::Spike> = Vec::new();
    let mut size = 0;
    while let Some(s) = ahead.front() {
        if batch.last().is_some_and(|l| s.seq != l.seq + 1) {
            break;
        }
        let len = rmp_serde::to_vec(s).map_or(MAX_FRAME, |b| b.len());
        if !batch.is_empty() && size + len > MAX_FRAME - 1024 {
            break;
        }
        size += len;
        batch.extend(ahead.pop_front());
    }
    (first, batch)
}

/// Splits `spikes` into batches whose frames stay under [`MAX_FRAME`], keeping their order.
/// A spike too large for any frame travels alone (and is refused when encoded).
pub fn batches(spikes: Vec<spike::Spike>) -> Vec<Vec<spike::Spike>> {
    // Room for the envelope, the enum tag and array headers.
    const BUDGET: usize = MAX_FRAME - 256;
    let mut out: Vec<Vec<spike::Spike>> = Vec::new();
    let mut size = 0;
    for s in spikes {
        let len = rmp_serde::to_vec(&s).map_or(BUDGET, |b| b.len());
        match out.last_mut() {
            Some(batch) if size + len <= BUDGET => batch.push(s),
            _ => {
                out.push(vec![s]);
                size = 0;
            }
        }
        size += len;
    }
    out
}

/// A point-to-point request (libp2p request-response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// "This is who I am; who are you?" Sent once per new connection.
    Hello(node::Info),
    /// A consensus message for the region's master election and log (protobuf bytes).
    Raft { region: String, message: Vec<u8> },
    /// Spikes the master has not acknowledged, from the origin's journal, in sequence
    /// order. `first`: the lowest sequence number the origin still holds (anything
    /// below it that was never acknowledged is gone: journal retention).
    Replay {
        region: String,
        first: u64,
        spikes: Vec<spike::Spike>,
    },
    /// A peer audit ([`crate::audit`]): "what is your file baseline's digest, and up to
    /// which spike does it go?"
    Digest { region: String },
    /// "My policy cannot tell: what does the region know about this change?" Sent to the
    /// region's master, with the sender's role.
    Consult {
        region: String,
        role: String,
        spike: Box<spike::Spike>,
        /// Asked again at the end of the window the master said to wait
        /// ([`fleet::Answer::recheck_after_ms`]).
        #[serde(default)]
        recheck: bool,
    },
    /// An operator's silence or acknowledgement, made on the sender, for the region's
    /// master to commit to the region's log. Answered `Accepted` when taken in; the
    /// sender sends it again until it sees it committed.
    Operator {
        region: String,
        action: crate::region::Operator,
    },
    /// A member's alerts for the region's master, which notifies for the region: those
    /// raised (or still open, sent again when the master changes and every half minute),
    /// and the keys of those whose condition cleared. Answered `Accepted` when taken in.
    Alerts {
        region: String,
        raised: Vec<crate::alert::Alert>,
        cleared: Vec<String>,
    },
    /// The sender's digital twin, for the region's master, which judges its drift: sent
    /// when it changes and again as a repair. Answered `Accepted` when taken in.
    Twin(Box<crate::twin::Report>),
    /// "Which twin do you hold of `node`?" Asked of a region's master (from any region),
    /// answered [`Response::Twin`].
    GetTwin { region: String, node: node::Id },
    /// "Your SBOM from byte `offset`": answered [`Response::Sbom`], one chunk.
    GetSbom { offset: u64 },
    /// A voter's endorsement of the master its consensus follows in `term`
    /// ([`crate::trust`]), sent to that master when it is elected and again now and then.
    /// Answered `Accepted`.
    Endorse {
        region: String,
        term: u64,
        endorsement: crate::trust::Endorsement,
    },
    /// "Your metrics after `since` (Unix ms)": asked by any node for an operator's chart
    /// of this node, answered [`Response::Metrics`].
    GetMetrics { since: u64 },
    /// "Your alert records (held and kept on disk) last changed after `since`, newest
    /// first, at most `limit`, in `state` if given": asked by a node of the region that
    /// lists the region's alert history; answered [`Response::AlertRecords`].
    AlertRecords {
        region: String,
        since: u64,
        state: Option<String>,
        limit: u32,
    },
    /// The sender's heartbeat, sent to one peer when a connection to it opens (a member
    /// joining or back): it learns the sender's facts at once instead of at the sender's
    /// next gossiped heartbeat, which in a big region is minutes away. Answered
    /// `Accepted`.
    Heartbeat(Box<heartbeat::Beat>),
    /// "Are you there?": a watcher's liveness probe ([`crate::membership`]), sent on the
    /// consensus protocol every probe interval; answered [`Response::Alive`] at once.
    Probe,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Hello(node::Info),
    /// Taken in (consensus messages are answered by later messages, not here).
    Accepted,
    /// The master's mark for the requester after taking in a replay batch.
    Acked {
        region: String,
        term: u64,
        mark: u64,
    },
    /// The answer to [`Request::Digest`].
    Digest(crate::audit::Answer),
    /// The master's answer to [`Request::Consult`].
    Verdict(fleet::Answer),
    /// The answer to [`Request::GetTwin`] (`None`: not held here).
    Twin(Option<Box<crate::twin::keep::Held>>),
    /// The answer to [`Request::Twin`]: taken, and the drift records open about the
    /// sender by subject with their first-seen time (sent back to the next master).
    TwinTaken(std::collections::BTreeMap<String, u64>),
    /// A chunk of the answering node's SBOM (CycloneDX JSON, `total` bytes in all).
    Sbom {
        total: u64,
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    /// The answer to [`Request::GetMetrics`]: each metric's points, thinned to fit a frame
    /// ([`crate::series`]).
    Metrics(Vec<crate::series::Series>),
    /// The answer to [`Request::AlertRecords`]: as many as fit a frame, newest first.
    AlertRecords(Vec<crate::alerting::Record>),
    /// The request was understood but refused; the text says why.
    Refused(String),
    /// The request was not taken: its sender is over its budget on this node (too many
    /// requests in flight, or too many a second). Not a judgement and not a failure of
    /// the node: the sender asks again after `retry_after_ms`.
    Busy {
        retry_after_ms: u64,
        why: String,
    },
    /// The answer to [`Request::Probe`]: alive (whatever the incarnation: an answer is
    /// proof enough that the peer's process runs).
    Alive,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("frame is {len} bytes, more than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame speaks protocol version {got}; this node speaks {supported}")]
    UnsupportedVersion { got: u16, supported: u16 },
    #[error("frame is not a valid fleetmesh message: {0}")]
    Malformed(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

impl Error {
    /// A stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "too_large",
            Error::UnsupportedVersion { .. } => "version",
            Error::Malformed(_) => "malformed",
            Error::Encode(_) => "encode",
        }
    }
}

/// Encodes `body` in a frame of the current [`VERSION`].
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, Error> {
    encode_versioned(VERSION, body)
}

/// Encodes `body` in a frame that claims protocol `version` (tests use other versions to
/// exercise refusal).
pub fn encode_versioned<T: Serialize>(version: u16, body: &T) -> Result<Vec<u8>, Error> {
    let bytes = rmp_serde::to_vec(&(version, body)).map_err(|e| Error::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(Error::TooLarge {
            len: bytes.len(),
            max: MAX_FRAME,
        });
    }
    Ok(bytes)
}

/// Decodes a frame, checking size and version before the body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() > MAX_FRAME {
        return Err(Error::TooLarge {
            len: bytes.len(),
            max: MAX_FRAME,
        });
    }
    let (version, _): (u16, IgnoredAny) =
        rmp_serde::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            got: version,
            supported: VERSION,
        });
    }
    let (_, body): (u16, T) =
        rmp_serde::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn beat(name: String, seq: u64, uptime_ms: u64, load: Option<f32>) -> Body {
        Body::Heartbeat(Box::new(heartbeat::Beat {
            uptime_ms,
            sent_unix_ms: 1_700_000_000_000,
            health: heartbeat::Health {
                peers_alive: 3,
                peers_suspect: 0,
                peers_dead: 1,
                load1: load,
            },
            suspects: vec![node::Id::from("x")],
            every_ms: 1000,
            ..heartbeat::Beat::new(
                node::Info {
                    name,
                    region: "eu-1".into(),
                    role: "web".into(),
                    incarnation: 7,
                },
                seq,
            )
        }))
    }

    #[test]
    fn wrong_version_is_refused_by_number() {
        let bytes = encode_versioned(9, &beat("a".into(), 1, 2, None)).expect("encodes");
        assert_eq!(
            decode::<Body>(&bytes),
            Err(Error::UnsupportedVersion {
                got: 9,
                supported: VERSION
            })
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for junk in [&b""[..], b"\xff\xff\xff", b"hello world", b"\x92\x02\xc1"] {
            let err = decode::<Body>(junk).expect_err("junk must not decode");
            assert_eq!(err.reason(), "malformed", "{junk:?}: {err}");
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_parsing() {
        let big = vec![0u8; MAX_FRAME + 1];
        assert!(matches!(decode::<Body>(&big), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn spike_batches_fit_in_frames_and_keep_their_order() {
        use crate::spike::{Change, FieldChange, Kind, Severity, Spike};
        let spikes: Vec<Spike> = (1..=300)
            .map(|seq| Spike {
                origin: node::Id::from("origin"),
                seq,
                at_unix_ms: 1,
                kind: Kind::Process,
                change: Change::Added,
                subject: format!("{seq}:/tmp/x"),
                before: None,
                after: None,
                severity: Severity::High,
                layers: vec![],
                label: "process_added".into(),
                fields: [("cmdline".to_string(), FieldChange::fact("a".repeat(900)))]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let packed = batches(spikes);
        assert!(packed.len() >= 5, "{} batches", packed.len());
        let mut seq = 0;
        for b in &packed {
            let frame = encode(&Body::Spikes(b.clone())).expect("fits in a frame");
            assert!(frame.len() <= MAX_FRAME);
            for s in b {
                seq += 1;
                assert_eq!(s.seq, seq);
            }
        }
        assert_eq!(seq, 300);
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn a_full_acknowledgement_message_fits_in_a_frame() {
        // 400 origins (what the region actor puts in one message) with peer-id-long names
        // and the largest marks.
        let marks = (0..400)
            .map(|i| (node::Id::from(format!("12D3KooW{i:044}")), u64::MAX))
            .collect();
        let body = Body::Acks(Acks {
            region: "a-long-region-name".into(),
            term: u64::MAX,
            marks,
        });
        let frame = encode(&body).expect("fits in a frame");
        assert_eq!(decode::<Body>(&frame).expect("decodes"), body);
    }

    proptest! {
        #[test]
        fn body_round_trips(name in ".{0,40}", seq: u64, up: u64, load in proptest::option::of(0f32..64.0)) {
            let body = beat(name, seq, up, load);
            let bytes = encode(&body).expect("encodes");
            prop_assert_eq!(decode::<Body>(&bytes).expect("decodes"), body);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Body>(&bytes);
            let _ = decode::<Request>(&bytes);
        }
    }
}
