//! The spike encoder: stamps observations into spikes.
//!
//! It owns the origin's sequence numbers and the role vocabulary; it does no I/O. Sequence
//! numbers must only grow, across restarts and crashes, without an fsync per spike: the
//! encoder *reserves* blocks of numbers. Before it uses the first number of a new block it
//! returns a [`Reserve`] that the caller must make durable (the highest number it may use);
//! after a restart it resumes from the last durable reservation, skipping whatever was left
//! of the block. A crash therefore costs at most one block of unused numbers, never a
//! repeated one.

use crate::label::{Verdict, Vocabulary};
use crate::node;
use crate::spike::{Observation, Spike};

/// Default reservation block.
pub const BLOCK: u64 = 1024;

/// Make `until` durable before publishing the spike it comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserve {
    pub until: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub origin: node::Id,
    pub role: String,
    /// How many sequence numbers one reservation covers.
    pub block: u64,
}

#[derive(Debug)]
pub struct Encoder {
    config: Config,
    vocabulary: Vocabulary,
    next: u64,
    reserved_until: u64,
}

impl Encoder {
    /// `durable` is the last reservation made durable (0 on a first start). Numbering
    /// resumes after it.
    pub fn new(config: Config, vocabulary: Vocabulary, durable: u64) -> Self {
        Encoder {
            next: durable + 1,
            reserved_until: durable,
            config,
            vocabulary,
        }
    }

    /// The sequence number the next spike will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Encodes one observation. When a reservation comes back, persist it before the spike
    /// leaves the node.
    pub fn encode(&mut self, at_unix_ms: u64, obs: Observation) -> (Option<Reserve>, Spike) {
        let reserve = if self.next > self.reserved_until {
            self.reserved_until = self.next + self.config.block.max(1) - 1;
            Some(Reserve {
                until: self.reserved_until,
            })
        } else {
            None
        };
        let seq = self.next;
        self.next += 1;
        let Verdict { label, severity } = self.vocabulary.judge(&self.config.role, &obs);
        let spike = Spike {
            origin: self.config.origin.clone(),
            seq,
            at_unix_ms,
            kind: obs.kind,
            change: obs.change,
            subject: obs.subject,
            before: obs.before,
            after: obs.after,
            severity,
            layers: vec![obs.layer],
            label,
            fields: obs.fields,
        };
        (reserve, spike)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::Rule;
    use crate::spike::{Change, Kind, Layer, Severity};

    fn encoder(durable: u64, block: u64) -> Encoder {
        let rules = vec![Rule {
            label: "deployment_user".into(),
            roles: vec!["web".into()],
            kinds: vec![Kind::User],
            changes: vec![Change::Added],
            subject: Some("deploy*".into()),
            subject_not_in: vec![],
            severity: Some(Severity::Low),
        }];
        Encoder::new(
            Config {
                origin: node::Id::from("me"),
                role: "web".into(),
                block,
            },
            Vocabulary::new(rules).expect("rules"),
            durable,
        )
    }

    fn obs(subject: &str) -> Observation {
        Observation::new(Kind::User, Change::Added, subject, Layer::Realtime)
    }

    #[test]
    fn stamps_origin_sequence_time_and_label() {
        let mut e = encoder(0, 4);
        let (r, s) = e.encode(42, obs("deploy"));
        assert_eq!(r, Some(Reserve { until: 4 }));
        assert_eq!((s.seq, s.at_unix_ms, s.origin.as_str()), (1, 42, "me"));
        assert_eq!(
            (s.label.as_str(), s.severity),
            ("deployment_user", Severity::Low)
        );
        assert_eq!(s.layers, [Layer::Realtime]);
        let (r, s) = e.encode(43, obs("eve"));
        assert_eq!((r, s.seq, s.label.as_str()), (None, 2, "user_added"));
    }

    #[test]
    fn reserves_once_per_block() {
        let mut e = encoder(0, 4);
        let reserves: Vec<_> = (0..10).filter_map(|_| e.encode(0, obs("x")).0).collect();
        assert_eq!(
            reserves,
            [
                Reserve { until: 4 },
                Reserve { until: 8 },
                Reserve { until: 12 }
            ]
        );
    }

    #[test]
    fn a_restart_never_repeats_a_number() {
        // Run, "crash" mid-block, restart from the last durable reservation.
        let mut e = encoder(0, 8);
        let mut durable = 0;
        let mut used = Vec::new();
        for _ in 0..13 {
            let (r, s) = e.encode(0, obs("x"));
            if let Some(r) = r {
                durable = r.until;
            }
            used.push(s.seq);
        }
        let mut e = encoder(durable, 8);
        let (r, s) = e.encode(0, obs("x"));
        assert!(
            s.seq > *used.iter().max().expect("some"),
            "{} reused",
            s.seq
        );
        assert_eq!(s.seq, durable + 1);
        assert_eq!(r, Some(Reserve { until: durable + 8 }));
    }
}
