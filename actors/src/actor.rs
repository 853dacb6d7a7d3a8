//! The actix actors: thin shells that feed the sans-IO cores with time and inputs and
//! carry their outputs away. No decision is made here.

pub mod accounts;
pub mod alert;
pub mod anomaly;
pub mod audit;
pub mod files;
pub mod fleet;
pub mod heartbeat;
pub mod policy;
pub mod polled;
pub mod push;
pub mod region;
pub mod service;
pub mod spikes;
pub mod twin;

use actix::prelude::*;

/// Milliseconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
/// Actors read the clock; the sans-IO cores are handed it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(crate::heartbeat::millis)
        .unwrap_or(0)
}

/// Observations travel between actors in batches of at most this many, so that a
/// mailbox's bound in messages is a bound in memory (a scan's diff can hold 100,000).
pub const OBSERVE_BATCH: usize = 256;

/// The mailbox bound, in messages, of the actors observations and judgements flow through
/// (the encoder, the policy): with [`OBSERVE_BATCH`], at most 256 x 256 queue in each.
pub const OBSERVE_MAILBOX: usize = 256;

/// `obs` as [`spikes::Observe`] messages of at most [`OBSERVE_BATCH`] observations.
pub fn observe_batches(
    mut obs: Vec<crate::spike::Observation>,
) -> impl Iterator<Item = spikes::Observe> {
    // Each batch its own allocation of its own size (a split vector keeps the capacity
    // of the whole).
    let mut batches = Vec::with_capacity(obs.len().div_ceil(OBSERVE_BATCH));
    let mut rest = obs.drain(..);
    loop {
        let batch: Vec<_> = rest.by_ref().take(OBSERVE_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        batches.push(spikes::Observe(batch));
    }
    batches.into_iter()
}

/// Hands `msgs` to `to`, in order, without losing one and without an unbounded queue: at
/// once while `to`'s mailbox has room; from the first that finds it full, the calling
/// actor handles nothing else until `to` has taken them all, so a full mailbox slows the
/// producer down (and, through its own bounded mailbox, whatever feeds it). Call it at
/// most once per handler, so that order is kept. Returns false if `to` is gone.
pub fn hand_on<A, M>(
    ctx: &mut Context<A>,
    to: &Recipient<M>,
    msgs: impl IntoIterator<Item = M>,
) -> bool
where
    A: Actor<Context = Context<A>>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    let mut msgs = msgs.into_iter();
    while let Some(msg) = msgs.next() {
        match to.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(msg)) => {
                let (to, rest): (Recipient<M>, Vec<M>) = (to.clone(), msgs.collect());
                ctx.wait(fut::wrap_future::<_, A>(async move {
                    for msg in std::iter::once(msg).chain(rest) {
                        if to.send(msg).await.is_err() {
                            return;
                        }
                    }
                }));
                return true;
            }
            Err(SendError::Closed(_)) => return false,
        }
    }
    true
}

/// Hands `msg` to `to` from a probe thread, waiting while `to`'s mailbox is full: a
/// reading is never dropped; the probe slows down instead. Returns false if `to` is gone.
pub fn deliver_blocking<M>(to: &Recipient<M>, mut msg: M) -> bool
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match to.try_send(msg) {
            Ok(()) => return true,
            Err(SendError::Full(back)) => {
                msg = back;
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(SendError::Closed(_)) => return false,
        }
    }
}

/// Writes an encoded state durably (the node writes it to its data dir); called on a
/// blocking thread ([`write_off_thread`]).
pub type PersistBytes = std::sync::Arc<dyn Fn(&[u8]) -> std::io::Result<()> + Send + Sync>;

/// The encoder's numbering ([`spikes::Numbering`]), asked when the returned future first
/// runs: spawned from an actor, that is after any observation still waiting for room in
/// the encoder's mailbox ([`hand_on`]), so the request queues behind them and its answer
/// is a lower bound of what a state saved then reflects. `None`: the encoder is gone.
pub async fn numbering(encoder: Recipient<spikes::Numbering>) -> Option<(u64, Option<(u64, u64)>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    encoder.do_send(spikes::Numbering(tx));
    rx.await.ok()
}

/// Writes `bytes` (or reports why they could not be encoded) with `write`, on a blocking
/// thread, so that an actor goes on while a large state is made durable.
pub async fn write_off_thread(
    write: PersistBytes,
    bytes: std::io::Result<Vec<u8>>,
) -> std::io::Result<()> {
    let bytes = bytes?;
    tokio::task::spawn_blocking(move || write(&bytes))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Counts `n` messages dropped on a queue where loss is allowed, named by the first
/// argument (`spike_outbox`, `region_intake`, `heartbeat_outbox`, `region_members`,
/// `region_assigned`, `own_mark`, `acks_outbox`, `approval_outbox`, `fleet_intake`; the
/// README lists what each loss means); the node exports the counts as
/// `fleetmesh_queue_dropped_total{queue}`.
pub type CountDrops = std::sync::Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// Counts `n` messages `queue` dropped, if the actor has been given a counter.
pub fn count_drops(to: &Option<CountDrops>, queue: &'static str, n: u64) {
    if let Some(count) = to {
        count(queue, n);
    }
}

/// Where an actor counts what its lossy queues dropped.
#[derive(Clone, Message)]
#[rtype(result = "()")]
pub struct SetDrops(pub CountDrops);

impl std::fmt::Debug for SetDrops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetDrops").finish_non_exhaustive()
    }
}

/// This node starts a new incarnation while running: the region declared its current one
/// dead (it was cut off, not crashed), and a dead incarnation cannot come back.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Reincarnate(pub u64);

/// Stops any of the node's actors.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

macro_rules! stoppable {
    ($($actor:ty),*) => {$(
        impl Handler<Stop> for $actor {
            type Result = ();
            fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
                ctx.stop();
            }
        }
    )*};
}

stoppable!(
    heartbeat::HeartbeatActor,
    spikes::SpikeActor,
    files::FileActor,
    accounts::AccountsActor,
    policy::PolicyActor,
    fleet::FleetActor
);
