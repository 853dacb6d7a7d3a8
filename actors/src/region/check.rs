//! Screens consensus messages from the network before the Raft core sees them.
//!
//! The Raft core trusts its peers: a well-formed message with impossible positions
//! (a commit index past the local log, entries that skip indexes) trips its internal
//! assertions. Peers are authenticated, but a bug or a corrupted frame must cost one
//! rejected message, never the node. These checks are cheap, local and never reject a
//! message an honest member sends.
//!
//! A snapshot (`MsgSnapshot`, a master's answer to a member whose log it compacted) is
//! checked whole: bounded in size, its position and configuration consistent, its data
//! an [`super::Image`] of the state at its index. Raft aborts on a configuration it
//! cannot restore, so a hostile one must never reach it.

use raft::eraftpb::{Message, MessageType};

/// Why a message was refused, or `None` if it may be stepped.
pub(super) fn refuse(m: &Message, me: u64, term: u64, last_index: u64) -> Option<&'static str> {
    use MessageType::*;
    match m.get_msg_type() {
        MsgAppend
        | MsgAppendResponse
        | MsgRequestVote
        | MsgRequestVoteResponse
        | MsgHeartbeat
        | MsgHeartbeatResponse
        | MsgRequestPreVote
        | MsgRequestPreVoteResponse
        | MsgSnapshot => {}
        // Local triggers, snapshot requests, leadership transfer and forwarded proposals
        // are never sent by a member, so they are not accepted either.
        _ => return Some("message type is not used between region members"),
    }
    if m.to != me {
        return Some("addressed to another member");
    }
    if m.from == 0 || m.from == me {
        return Some("invalid sender");
    }
    if m.term == 0 {
        return Some("missing term");
    }
    if m.request_snapshot != 0 {
        return Some("snapshot requests are not used");
    }
    if m.get_msg_type() == MsgSnapshot {
        return refuse_snapshot(m);
    }
    if m.has_snapshot() {
        return Some("snapshot outside a snapshot message");
    }
    if m.get_msg_type() != MsgAppend && !m.entries.is_empty() {
        return Some("entries outside an append");
    }
    match m.get_msg_type() {
        MsgAppend => refuse_append(m),
        // A stale master's heartbeat is left to the core, which answers it so that the
        // stale master steps down.
        MsgHeartbeat if m.term >= term && m.commit > last_index => {
            Some("heartbeat commit beyond the local log")
        }
        MsgAppendResponse
            if m.term == term && (m.index > last_index || m.reject_hint > last_index) =>
        {
            Some("append response beyond the local log")
        }
        _ => None,
    }
}

/// A snapshot must be the state at a real position of the sender's log, in a
/// configuration Raft can restore, within the size bound.
fn refuse_snapshot(m: &Message) -> Option<&'static str> {
    if !m.entries.is_empty() {
        return Some("entries outside an append");
    }
    let snap = m.get_snapshot();
    let meta = snap.get_metadata();
    if meta.index == 0 || meta.term == 0 {
        return Some("snapshot without a position");
    }
    if meta.term > m.term {
        return Some("snapshot from a term after the sender's");
    }
    if let Some(why) = super::snapshot::refuse_conf(meta.get_conf_state()) {
        return Some(why);
    }
    super::snapshot::Image::decode(&snap.data, meta.index).err()
}

/// Entries must follow `index` without gaps, with terms that never go down and never
/// exceed the sender's term; position 0 is the only one with term 0.
fn refuse_append(m: &Message) -> Option<&'static str> {
    if (m.index == 0) != (m.log_term == 0) || m.log_term > m.term {
        return Some("append anchored at an impossible position");
    }
    let mut next = m.index;
    let mut term = m.log_term;
    for e in m.entries.iter() {
        next = match next.checked_add(1) {
            Some(n) => n,
            None => return Some("append index overflows"),
        };
        if e.index != next {
            return Some("append entries are not contiguous");
        }
        if e.term < term || e.term > m.term {
            return Some("append entry term out of order");
        }
        term = e.term;
    }
    None
}
