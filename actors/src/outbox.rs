//! What actors hand to the network driver for publishing.
//!
//! Actors never touch the swarm: they `try_send` a [`Publish`] into a bounded channel that
//! the driver task drains. A full channel is an overload to count, not a reason to block.

use crate::wire;

/// Which gossip topic a message goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The topic of one region (heartbeats, spikes).
    Region(String),
    /// The fleet-wide topic (region summaries, learned patterns, emergencies).
    Fleet,
}

/// How hard the driver tries when no peer is subscribed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Drop if it cannot be published now (heartbeats: a late one is worthless).
    BestEffort,
    /// Queue (bounded) and retry when peers subscribe.
    Retry,
}

/// One message for the driver to publish.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: Topic,
    pub body: wire::Body,
    pub delivery: Delivery,
}

/// The sending half actors hold.
#[cfg(feature = "runtime")]
pub type Sender = tokio::sync::mpsc::Sender<Publish>;

/// One request for the driver to send to one peer (request-response, not gossip).
#[derive(Debug, Clone)]
pub struct Direct {
    pub to: crate::node::Id,
    pub request: wire::Request,
}

/// The sending half for direct requests.
#[cfg(feature = "runtime")]
pub type DirectSender = tokio::sync::mpsc::Sender<Direct>;

/// Spacing of spike publications: under a storm, the spikes handed over within one
/// spacing travel as one gossip message instead of one each.
pub const SPIKE_SPACING: std::time::Duration = std::time::Duration::from_millis(25);
/// Spikes held at most before they go out whatever the spacing.
const HOLD_MAX: usize = 4096;

/// Coalesces spike publications of one origin (sans-IO; the driver feeds it).
///
/// Every gossip copy costs each receiver a signature check and a wake-up: a node that
/// publishes a message per changed file makes its whole region pay per file. The first
/// spike publication after a quiet [`SPIKE_SPACING`] goes out at once (no added latency
/// when the node is calm); the ones that follow within the spacing are held and leave
/// together when it ends, split under the frame cap by [`wire::batches`].
///
/// Feed it with [`Coalesce::offer`] (returns what to publish now) and, when
/// [`Coalesce::poll_timeout`] is due, [`Coalesce::handle_timeout`].
/// Other bodies pass straight through.
#[derive(Debug)]
pub struct Coalesce {
    spacing: std::time::Duration,
    /// When spikes were last published.
    last: Option<std::time::Instant>,
    /// Spikes waiting for the spacing to end: their topic and delivery, and the spikes.
    held: Option<(Topic, Delivery, Vec<crate::spike::Spike>)>,
}

impl Coalesce {
    pub fn new(spacing: std::time::Duration) -> Self {
        Self {
            spacing,
            last: None,
            held: None,
        }
    }

    /// Takes `p`; returns what to publish now, in order.
    pub fn offer(&mut self, now: std::time::Instant, p: Publish) -> Vec<Publish> {
        let wire::Body::Spikes(spikes) = p.body else {
            return vec![p];
        };
        let mut out = Vec::new();
        if let Some((topic, delivery, held)) = &mut self.held {
            let same = *topic == p.topic
                && *delivery == p.delivery
                && held.first().map(|s| &s.origin) == spikes.first().map(|s| &s.origin);
            if same {
                held.extend(spikes);
                return self.release_if_full(now);
            }
            out.extend(self.release(now));
        }
        let calm = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.spacing);
        if calm {
            self.last = Some(now);
            out.push(Publish {
                body: wire::Body::Spikes(spikes),
                ..p
            });
        } else {
            self.held = Some((p.topic, p.delivery, spikes));
            out.extend(self.release_if_full(now));
        }
        out
    }

    fn release_if_full(&mut self, now: std::time::Instant) -> Vec<Publish> {
        match &self.held {
            Some((.., held)) if held.len() >= HOLD_MAX => self.release(now),
            _ => Vec::new(),
        }
    }

    /// When the held spikes are due.
    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        let last = self.last?;
        self.held.as_ref().map(|_| last + self.spacing)
    }

    /// Releases the held spikes if their time has come.
    pub fn handle_timeout(&mut self, now: std::time::Instant) -> Vec<Publish> {
        match self.poll_timeout() {
            Some(due) if due <= now => self.release(now),
            _ => Vec::new(),
        }
    }

    fn release(&mut self, now: std::time::Instant) -> Vec<Publish> {
        let Some((topic, delivery, spikes)) = self.held.take() else {
            return Vec::new();
        };
        self.last = Some(now);
        wire::batches(spikes)
            .into_iter()
            .map(|batch| Publish {
                topic: topic.clone(),
                body: wire::Body::Spikes(batch),
                delivery,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::spike::{Change, Kind, Spike};

    fn spikes(origin: &str, seqs: std::ops::Range<u64>) -> Publish {
        Publish {
            topic: Topic::Region("r".into()),
            body: wire::Body::Spikes(
                seqs.map(|seq| {
                    Spike::bare(
                        origin,
                        seq,
                        Kind::File,
                        Change::Added,
                        &format!("/etc/{seq}"),
                    )
                })
                .collect(),
            ),
            delivery: Delivery::Retry,
        }
    }

    fn seqs(out: &[Publish]) -> Vec<Vec<u64>> {
        out.iter()
            .map(|p| match &p.body {
                wire::Body::Spikes(s) => s.iter().map(|s| s.seq).collect(),
                other => panic!("not spikes: {}", other.kind()),
            })
            .collect()
    }

    #[test]
    fn a_calm_node_publishes_at_once_and_a_storm_in_one_message_per_spacing() {
        let t0 = Instant::now();
        let mut c = Coalesce::new(Duration::from_millis(25));
        assert_eq!(seqs(&c.offer(t0, spikes("a", 1..2))), vec![vec![1]]);
        assert_eq!(c.poll_timeout(), None);
        // Within the spacing: held, and due when it ends.
        for i in 2..6 {
            let at = t0 + Duration::from_millis(i);
            assert!(c.offer(at, spikes("a", i..i + 1)).is_empty());
        }
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(25)));
        assert!(c.handle_timeout(t0 + Duration::from_millis(24)).is_empty());
        let out = c.handle_timeout(t0 + Duration::from_millis(25));
        assert_eq!(seqs(&out), vec![vec![2, 3, 4, 5]]);
        assert_eq!(c.poll_timeout(), None);
        // Calm again after a full spacing: at once.
        let later = t0 + Duration::from_millis(60);
        assert_eq!(seqs(&c.offer(later, spikes("a", 6..7))), vec![vec![6]]);
    }

    #[test]
    fn other_bodies_pass_and_another_origin_releases_what_is_held_first() {
        let t0 = Instant::now();
        let mut c = Coalesce::new(Duration::from_millis(25));
        c.offer(t0, spikes("a", 1..2));
        assert!(c.offer(t0, spikes("a", 2..4)).is_empty());
        let acks = Publish {
            topic: Topic::Region("r".into()),
            body: wire::Body::Acks(wire::Acks {
                region: "r".into(),
                term: 1,
                marks: Vec::new(),
            }),
            delivery: Delivery::BestEffort,
        };
        assert_eq!(c.offer(t0, acks).len(), 1);
        // Another origin (a forwarded batch): what was held goes first, in order.
        let out = c.offer(t0 + Duration::from_millis(1), spikes("b", 9..10));
        assert_eq!(seqs(&out), vec![vec![2, 3]]);
        assert_eq!(
            seqs(&c.handle_timeout(t0 + Duration::from_secs(1))),
            vec![vec![9]]
        );
    }

    #[test]
    fn a_long_hold_is_split_under_the_frame_cap_and_released_when_full() {
        let t0 = Instant::now();
        let mut c = Coalesce::new(Duration::from_millis(25));
        c.offer(t0, spikes("a", 0..1));
        let out = c.offer(t0, spikes("a", 1..HOLD_MAX as u64 + 1));
        let all: Vec<u64> = seqs(&out).into_iter().flatten().collect();
        assert_eq!(all, (1..HOLD_MAX as u64 + 1).collect::<Vec<_>>());
        for p in &out {
            assert!(wire::encode(&p.body).is_ok(), "each batch fits in a frame");
        }
    }
}
