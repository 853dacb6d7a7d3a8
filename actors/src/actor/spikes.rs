//! The spike-encoder actor: stamps observations into spikes, makes each sequence
//! reservation durable before the spikes that use it leave the node, appends every spike
//! to the journal before it is published, keeps the latest spikes in a bounded ring for
//! the API (refilled from the journal at start), and publishes them on the region topic.
//!
//! It also keeps this node's side of the acknowledgements ([`crate::sync::Origin`]): the
//! master's marks compact the journal, and what the master lacks is read back from the
//! journal and replayed to it directly, one batch in flight at a time.

use crate::actor::push::{Pushed, push};
use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;

use std::time::Duration;

use crate::actor::anomaly::Samples;
use crate::actor::policy::Decide;
use crate::actor::region::{Acked, SpikesIn};
use crate::actor::unix_ms;
use crate::encoder::Encoder;
use crate::spike::{Kind, Observation, Spike};
use crate::sync::{self, Action, Links, Origin};
use crate::{outbox, wire};

/// How many journaled spikes one journal read takes for replay; they are sent over
/// several batches (one frame each), so that a long replay reads each segment rarely.
const REPLAY_READ: usize = 8192;

/// Observations from a detector.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Observe(pub Vec<Observation>);

/// Spikes (optionally of one kind) as [`Recent::query`] pages them.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Spike>")]
pub struct GetSpikes {
    pub since: Option<u64>,
    pub kind: Option<Kind>,
    pub limit: usize,
}

/// The latest spikes, shared with the API: written by the encoder, read without asking it
/// (a storm keeps its mailbox full).
#[derive(Debug)]
pub struct Recent {
    ring: std::sync::RwLock<VecDeque<Spike>>,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Recent {
            ring: std::sync::RwLock::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    fn extend(&self, spikes: impl IntoIterator<Item = Spike>) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        for spike in spikes {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(spike);
        }
    }

    /// Spikes (optionally of one kind) in ascending order, at most `limit`: the ones
    /// following `since` (paging), or without `since` the latest.
    pub fn query(&self, since: Option<u64>, kind: Option<Kind>, limit: usize) -> Vec<Spike> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        crate::spike::page(
            &ring,
            since,
            limit,
            |s| s.seq,
            |s| kind.is_none_or(|k| s.kind == k),
        )
    }

    /// This node's metrics after `since` up to `now`, for a chart: at most `points` a
    /// metric ([`crate::series::of_spikes`]).
    pub fn metric_series(&self, since: u64, now: u64, points: usize) -> Vec<crate::series::Series> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        crate::series::of_spikes(ring.iter(), since, now, points)
    }

    fn len(&self) -> usize {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Makes a sequence reservation durable (write + fsync).
pub type PersistSeq = Box<dyn FnMut(u64) -> std::io::Result<()> + Send>;

/// Appends spikes to the durable journal.
pub type AppendJournal = Box<dyn FnMut(&[Spike]) -> std::io::Result<()> + Send>;

/// Compacts the journal up to a sequence number (everything up to it is acknowledged).
pub type AckJournal = Box<dyn FnMut(u64) -> std::io::Result<()> + Send>;

/// Reads journaled spikes above a sequence number, oldest first, at most as many as asked.
pub type ReadJournal = Box<dyn FnMut(u64, usize) -> std::io::Result<Vec<Spike>> + Send>;

/// Where the region's intake is (set once the region actor runs).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetIntake(pub Recipient<SpikesIn>);

/// Where the node's policy actor is: every spike is handed to it to be decided.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetPolicy(pub Recipient<Decide>);

/// Where the node's anomaly detector is: this node's own metric spikes are handed to it
/// (the region's come from the network driver).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetAnomaly(pub Recipient<Samples>);

/// Where the node's twin is: this node's own spikes other than metric samples are handed
/// to it (a full mailbox is a counted drop; the twin re-reads the baseline as a repair).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetTwin(pub Recipient<crate::actor::twin::Observe>);

/// Asks for the highest sequence number assigned so far and the numbers this run skipped
/// at its start (see [`crate::audit::Answer`]). Sent with `do_send` and answered on the
/// channel inside, so that it always queues behind the observations its sender handed
/// over before it (a `send` to a full mailbox would wait, and could be overtaken).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Numbering(pub tokio::sync::oneshot::Sender<(u64, Option<(u64, u64)>)>);

/// A detector's claim on the journal (the file baseline, the accounts snapshot: see
/// [`sync::Source`]): `Loaded` at start, when the saved state reflects the journal up to
/// `seq` only; `Unsaved` before the first change the saved state does not reflect;
/// `Saved` once a state reflecting everything up to `seq` is saved (`pending`: later
/// changes are not in it yet). The journal keeps what the saved state does not reflect,
/// since a crash rebuilds the state from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum Baseline {
    Loaded {
        source: sync::Source,
        seq: u64,
    },
    Unsaved(sync::Source),
    Saved {
        source: sync::Source,
        seq: u64,
        pending: bool,
    },
}

/// Where the encoder's output is made durable.
pub struct Storage {
    pub reserve: PersistSeq,
    pub journal: AppendJournal,
    pub ack: AckJournal,
    pub read: ReadJournal,
    /// The highest sequence number in the journal at start.
    pub last_seq: u64,
    /// The latest spikes of earlier runs (from the journal), oldest first.
    pub recent: Vec<Spike>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("recent", &self.recent.len())
            .finish_non_exhaustive()
    }
}

pub struct SpikeActor {
    /// The node's live event stream, once set ([`SetPush`]).
    push: Option<crate::actor::push::Push>,
    encoder: Encoder,
    region: String,
    persist: PersistSeq,
    journal: AppendJournal,
    ring: Arc<Recent>,
    outbox: outbox::Sender,
    /// Spikes not published because the driver's queue was full.
    pub outbox_full: u64,
    ack: AckJournal,
    read: ReadJournal,
    sync: Origin,
    intake: Option<Recipient<SpikesIn>>,
    twin: Option<Recipient<crate::actor::twin::Observe>>,
    policy: Option<Recipient<Decide>>,
    /// Spikes not decided because the policy actor was gone.
    pub policy_full: u64,
    anomaly: Option<Recipient<Samples>>,
    direct: outbox::DirectSender,
    /// Spikes read from the journal for replay and not sent yet, in order.
    read_ahead: VecDeque<Spike>,
    /// Numbers skipped at this run's start: above the journal's last, up to the durable
    /// reservation it resumed from.
    unused: Option<(u64, u64)>,
    /// What the links look like (pushed: a master known, peers connected).
    links: Links,
    /// Where each sync report goes (heartbeats, gauges).
    report_to: Option<ReportSync>,
    /// Where dropped publications are counted.
    drops: Option<crate::actor::CountDrops>,
}

/// One fact about this node's links changed (pushed by the region actor and the
/// network driver's state).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub enum LinkChanged {
    MasterKnown(bool),
    Connected(usize),
}

/// Where the sync report goes each time it is computed (every replay check).
pub struct ReportSync {
    pub heartbeat: Recipient<crate::actor::heartbeat::SetSync>,
    /// Updates the node's gauges (each replay check and link change).
    pub gauges: Box<dyn Fn(&sync::Report) + Send>,
    /// Takes the report as it stands after every change of it (published spikes,
    /// acknowledgements, replays, links): what the API shows without asking this actor.
    pub latest: Box<dyn Fn(&sync::Report) + Send>,
}

impl std::fmt::Debug for ReportSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSync").finish_non_exhaustive()
    }
}

impl Message for ReportSync {
    type Result = ();
}

impl Handler<crate::actor::SetDrops> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::SetDrops, _: &mut Self::Context) {
        self.drops = Some(msg.0);
    }
}

impl Handler<ReportSync> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: ReportSync, _: &mut Self::Context) {
        self.report_to = Some(msg);
    }
}

impl Handler<LinkChanged> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: LinkChanged, _: &mut Self::Context) {
        match msg {
            LinkChanged::MasterKnown(k) => self.links.master_known = k,
            LinkChanged::Connected(n) => self.links.connected_peers = n,
        }
        self.sync.links(self.links, unix_ms());
        self.report();
    }
}

impl Handler<crate::actor::region::MasterKnown> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::region::MasterKnown, ctx: &mut Self::Context) {
        self.sync.master_of_record(msg.elsewhere);
        <Self as Handler<LinkChanged>>::handle(self, LinkChanged::MasterKnown(msg.known), ctx);
    }
}

impl std::fmt::Debug for SpikeActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpikeActor")
            .field("next_seq", &self.encoder.next_seq())
            .field("ring", &self.ring.len())
            .finish_non_exhaustive()
    }
}

impl SpikeActor {
    /// The latest spikes as this actor keeps them, for readers that must not wait for it.
    pub fn recent(&self) -> Arc<Recent> {
        self.ring.clone()
    }

    pub fn new(
        encoder: Encoder,
        region: String,
        storage: Storage,
        capacity: usize,
        outbox: outbox::Sender,
        direct: outbox::DirectSender,
        sync: sync::Config,
    ) -> Self {
        let capacity = capacity.max(1);
        let resumed = encoder.next_seq().saturating_sub(1);
        let unused = (resumed > storage.last_seq).then_some((storage.last_seq + 1, resumed));
        let mut origin = Origin::new(sync, storage.last_seq, unix_ms());
        if let Some((from, to)) = unused {
            origin.unused(from, to);
        }
        let ring = Arc::new(Recent::new(capacity));
        ring.extend(storage.recent);
        SpikeActor {
            push: None,
            encoder,
            region,
            persist: storage.reserve,
            journal: storage.journal,
            ring,
            outbox,
            outbox_full: 0,
            ack: storage.ack,
            read: storage.read,
            sync: origin,
            intake: None,
            twin: None,
            policy: None,
            policy_full: 0,
            anomaly: None,
            direct,
            read_ahead: VecDeque::new(),
            unused,
            links: Links::default(),
            report_to: None,
            drops: None,
        }
    }

    /// Hands the current sync report to the heartbeats and the gauges.
    fn report(&self) {
        if let Some(to) = &self.report_to {
            let report = self.sync.report(unix_ms());
            (to.gauges)(&report);
            (to.latest)(&report);
            let _ = to
                .heartbeat
                .try_send(crate::actor::heartbeat::SetSync(report));
        }
    }

    /// Publishes the report as it stands for the API (nothing else: the heartbeats and
    /// gauges take it at each replay check).
    fn latest(&self) {
        if let Some(to) = &self.report_to {
            (to.latest)(&self.sync.report(unix_ms()));
        }
    }

    /// Sends the master the next batch of what it has not acknowledged.
    fn replay(&mut self, after: u64, to: crate::node::Id) {
        while self.read_ahead.front().is_some_and(|s| s.seq <= after) {
            self.read_ahead.pop_front();
        }
        if self.read_ahead.front().is_none_or(|s| s.seq != after + 1) {
            self.read_ahead = match (self.read)(after, REPLAY_READ) {
                Ok(s) => s.into(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the journal for replay");
                    return;
                }
            };
        }
        let (first, batch) = wire::replay_batch(&mut self.read_ahead, self.sync.last());
        let upto = batch.last().map_or(first.saturating_sub(1), |s| s.seq);
        let n = batch.len() as u64;
        let request = wire::Request::Replay {
            region: self.region.clone(),
            first,
            spikes: batch,
        };
        if self.direct.try_send(outbox::Direct { to, request }).is_ok() {
            tracing::debug!(after, upto, spikes = n, "replaying to the master");
            self.sync.sent(upto, n, unix_ms());
            self.latest();
        }
    }
}

impl Handler<crate::actor::push::SetPush> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::push::SetPush, _: &mut Self::Context) {
        self.push = Some(msg.0);
    }
}

impl Actor for SpikeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Detectors wait for room (`hand_on`), with batches of at most `OBSERVE_BATCH`:
        // at most 256 x 256 observations queue here.
        ctx.set_mailbox_capacity(crate::actor::OBSERVE_MAILBOX);
        ctx.run_interval(Duration::from_millis(500), |act, _| {
            if let Some(Action::Replay { after, to }) = act.sync.poll(unix_ms()) {
                act.replay(after, to);
            }
            act.report();
        });
    }
}

impl Handler<Observe> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: Observe, ctx: &mut Self::Context) {
        let mut encoded = Vec::with_capacity(msg.0.len());
        let mut failed = false;
        for obs in msg.0 {
            let (reserve, spike) = self.encoder.encode(unix_ms(), obs);
            if let Some(r) = reserve
                && let Err(e) = (self.persist)(r.until)
            {
                // Publishing a number that might be reused after a restart would break
                // (origin, seq) de-duplication fleet-wide: stop rather than do that.
                tracing::error!(error = %e, "cannot persist the spike sequence; stopping the encoder");
                failed = true;
                break;
            }
            tracing::debug!(seq = spike.seq, kind = spike.kind.as_str(), subject = %spike.subject, label = %spike.label, "spike");
            encoded.push(spike);
        }
        // Journaled before published: what left the node can always be replayed.
        if !encoded.is_empty()
            && let Err(e) = (self.journal)(&encoded)
        {
            tracing::error!(error = %e, "cannot append to the journal; stopping the encoder");
            ctx.stop();
            return;
        }
        if let Some(last) = encoded.last() {
            self.sync.published(last.seq, unix_ms());
            self.latest();
            if let Some(intake) = &self.intake
                && intake.try_send(SpikesIn(encoded.clone())).is_err()
            {
                // The journal keeps them: the intake gets them again by replay.
                crate::actor::count_drops(&self.drops, "region_intake", encoded.len() as u64);
            }
            if let Some(twin) = &self.twin {
                let changes: Vec<Spike> = encoded
                    .iter()
                    .filter(|s| s.kind != Kind::Metric)
                    .cloned()
                    .collect();
                if !changes.is_empty() {
                    let n = changes.len() as u64;
                    let msg = crate::actor::twin::Observe(crate::twin::Input::Spikes(changes));
                    if twin.try_send(msg).is_err() {
                        crate::actor::count_drops(&self.drops, "twin", n);
                    }
                }
            }
            // Every spike is judged: a full policy mailbox makes the encoder wait (and so
            // the detectors behind it), it never drops a judgement.
            if let Some(policy) = &self.policy
                && !crate::actor::hand_on(ctx, policy, [Decide(encoded.clone())])
            {
                // Logged on the first loss and then once per 1024 lost, not per batch.
                let before = self.policy_full;
                self.policy_full += encoded.len() as u64;
                if before == 0 || before / 1024 != self.policy_full / 1024 {
                    tracing::warn!(
                        lost = self.policy_full,
                        "the policy actor is gone: spikes not decided"
                    );
                }
            }
            if let Some(anomaly) = &self.anomaly {
                let metrics: Vec<Spike> = encoded
                    .iter()
                    .filter(|s| s.kind == Kind::Metric)
                    .cloned()
                    .collect();
                if let Some(first) = metrics.first() {
                    // Lost only when the detector is swamped: the metric's next sample (at the
                    // latest after its longest silence) catches up.
                    let _ = anomaly.try_send(Samples {
                        from: first.origin.clone(),
                        spikes: metrics,
                    });
                }
            }
        }
        self.ring.extend(encoded.iter().cloned());
        push(&self.push, || Pushed::Spikes(Arc::new(encoded.clone())));
        // What one reading produced travels as one message (or a few, under the frame cap).
        for batch in wire::batches(encoded) {
            let n = batch.len() as u64;
            let publish = outbox::Publish {
                topic: outbox::Topic::Region(self.region.clone()),
                body: wire::Body::Spikes(batch),
                delivery: outbox::Delivery::Retry,
            };
            if self.outbox.try_send(publish).is_err() {
                // The journal keeps them: the master gets them by replay.
                self.outbox_full += n;
                crate::actor::count_drops(&self.drops, "spike_outbox", n);
            }
        }
        if failed {
            ctx.stop();
        }
    }
}

impl Handler<SetIntake> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: SetIntake, _: &mut Self::Context) {
        self.intake = Some(msg.0);
    }
}

impl Handler<SetTwin> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: SetTwin, _: &mut Self::Context) {
        self.twin = Some(msg.0);
    }
}

impl Handler<SetPolicy> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: SetPolicy, _: &mut Self::Context) {
        self.policy = Some(msg.0);
    }
}

impl Handler<SetAnomaly> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: SetAnomaly, _: &mut Self::Context) {
        self.anomaly = Some(msg.0);
    }
}

impl Handler<Acked> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: Acked, _: &mut Self::Context) {
        let now = unix_ms();
        let replaying = self.sync.replaying();
        if let Some(upto) = self.sync.acked(msg.mark, msg.master, now)
            && let Err(e) = (self.ack)(upto)
        {
            tracing::warn!(error = %e, upto, "journal compaction failed");
        }
        // A replay answer: the next batch goes at once rather than on the next poll.
        if replaying && let Some(Action::Replay { after, to }) = self.sync.poll(now) {
            self.replay(after, to);
        }
        self.latest();
    }
}

impl Handler<Baseline> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: Baseline, _: &mut Self::Context) {
        let upto = match msg {
            Baseline::Loaded { source, seq } => {
                self.sync.loaded(source, seq);
                None
            }
            Baseline::Unsaved(source) => {
                self.sync.hold(source);
                None
            }
            Baseline::Saved {
                source,
                seq,
                pending,
            } => self.sync.saved(source, seq, pending),
        };
        if let Some(upto) = upto
            && let Err(e) = (self.ack)(upto)
        {
            tracing::warn!(error = %e, upto, "journal compaction failed");
        }
    }
}

impl Handler<Numbering> for SpikeActor {
    type Result = ();

    fn handle(&mut self, msg: Numbering, _: &mut Self::Context) {
        let _ = msg
            .0
            .send((self.encoder.next_seq().saturating_sub(1), self.unused));
    }
}

impl Handler<GetSpikes> for SpikeActor {
    type Result = MessageResult<GetSpikes>;

    fn handle(&mut self, q: GetSpikes, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.ring.query(q.since, q.kind, q.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder;
    use crate::label::Vocabulary;
    use crate::node;
    use crate::spike::{Change, Layer};
    use std::sync::{Arc, Mutex};

    /// Restarted with 1..=3 journaled and numbers up to 8 reserved: the master, whose mark
    /// is 1, gets 2..=3 at once, then a batch whose `first` (9) skips 4..=8, without
    /// waiting `replay_after`.
    #[actix::test]
    async fn after_a_restart_the_master_hears_of_the_unused_numbers_at_once() {
        let journal: Arc<Mutex<Vec<Spike>>> = Arc::new(Mutex::new(
            (1..=3)
                .map(|s| Spike::bare("me", s, Kind::File, Change::Added, "/x"))
                .collect(),
        ));
        let (append, read) = (journal.clone(), journal.clone());
        let (direct_tx, mut direct_rx) = tokio::sync::mpsc::channel(8);
        let enc = Encoder::new(
            encoder::Config {
                origin: node::Id::from("me"),
                role: "web".into(),
                block: 8,
            },
            Vocabulary::default(),
            8,
        );
        let addr = SpikeActor::new(
            enc,
            "eu".into(),
            Storage {
                reserve: Box::new(|_| Ok(())),
                journal: Box::new(move |spikes| {
                    append.lock().expect("lock").extend_from_slice(spikes);
                    Ok(())
                }),
                ack: Box::new(|_| Ok(())),
                read: Box::new(move |after, max| {
                    Ok(read
                        .lock()
                        .expect("lock")
                        .iter()
                        .filter(|s| s.seq > after)
                        .take(max)
                        .cloned()
                        .collect())
                }),
                last_seq: 3,
                recent: Vec::new(),
            },
            16,
            tokio::sync::mpsc::channel(64).0,
            direct_tx,
            sync::Config {
                replay_after_ms: 600_000,
                ..sync::Config::default()
            },
        )
        .start();
        addr.send(LinkChanged::Connected(2)).await.expect("links");
        addr.send(LinkChanged::MasterKnown(true))
            .await
            .expect("links");
        let obs = Observation::new(Kind::File, Change::Added, "/y", Layer::Realtime);
        addr.send(Observe(vec![obs])).await.expect("observed");
        let master = sync::Master {
            peer: node::Id::from("m"),
            term: 1,
        };
        let replayed = |d: Option<outbox::Direct>| match d.map(|d| d.request) {
            Some(wire::Request::Replay { first, spikes, .. }) => {
                (first, spikes.iter().map(|s| s.seq).collect::<Vec<_>>())
            }
            other => panic!("not a replay: {other:?}"),
        };
        let bound = Duration::from_secs(5);
        addr.send(Acked {
            mark: 1,
            master: master.clone(),
        })
        .await
        .expect("acked");
        let first = tokio::time::timeout(bound, direct_rx.recv()).await;
        assert_eq!(replayed(first.expect("in time")), (2, vec![2, 3]));
        addr.send(Acked { mark: 3, master }).await.expect("acked");
        let second = tokio::time::timeout(bound, direct_rx.recv()).await;
        assert_eq!(replayed(second.expect("in time")), (9, vec![9]));
    }

    #[actix::test]
    async fn persists_before_publishing_and_serves_from_the_ring() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let durable = Arc::new(Mutex::new(Vec::new()));
        let d = durable.clone();
        let enc = Encoder::new(
            encoder::Config {
                origin: node::Id::from("me"),
                role: "web".into(),
                block: 2,
            },
            Vocabulary::default(),
            0,
        );
        let journaled = Arc::new(Mutex::new(Vec::new()));
        let j = journaled.clone();
        let addr = SpikeActor::new(
            enc,
            "eu".into(),
            Storage {
                reserve: Box::new(move |until| {
                    d.lock().expect("lock").push(until);
                    Ok(())
                }),
                journal: Box::new(move |spikes| {
                    j.lock().expect("lock").extend(spikes.iter().map(|s| s.seq));
                    Ok(())
                }),
                ack: Box::new(|_| Ok(())),
                read: Box::new(|_, _| Ok(Vec::new())),
                last_seq: 0,
                recent: Vec::new(),
            },
            3,
            tx,
            tokio::sync::mpsc::channel(1).0,
            sync::Config::default(),
        )
        .start();
        let obs = |s: &str, k: Kind| Observation::new(k, Change::Added, s, Layer::Realtime);
        addr.send(Observe(vec![
            obs("/a", Kind::File),
            obs("bob", Kind::User),
            obs("/b", Kind::File),
            obs("/c", Kind::File),
        ]))
        .await
        .expect("delivered");
        assert_eq!(*durable.lock().expect("lock"), [2, 4]);
        assert_eq!(*journaled.lock().expect("lock"), [1, 2, 3, 4]);
        // One observation batch, one message, in sequence order.
        let p = rx.recv().await.expect("published");
        let wire::Body::Spikes(batch) = p.body else {
            panic!("not spikes")
        };
        assert_eq!(
            batch.iter().map(|s| s.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(p.topic, outbox::Topic::Region("eu".into()));
        // The ring keeps the last 3.
        let files = addr
            .send(GetSpikes {
                since: Some(0),
                kind: Some(Kind::File),
                limit: 10,
            })
            .await
            .expect("answered");
        assert_eq!(files.iter().map(|s| s.seq).collect::<Vec<_>>(), [3, 4]);
        let after = addr
            .send(GetSpikes {
                since: Some(3),
                kind: None,
                limit: 10,
            })
            .await
            .expect("answered");
        assert_eq!(after.len(), 1);
        // Without `since`: the latest.
        let latest = addr
            .send(GetSpikes {
                since: None,
                kind: Some(Kind::File),
                limit: 1,
            })
            .await
            .expect("answered");
        assert_eq!(latest.iter().map(|s| s.seq).collect::<Vec<_>>(), [4]);
    }
}
