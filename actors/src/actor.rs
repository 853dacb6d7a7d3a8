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
pub mod region;
pub mod service;
pub mod spikes;

use actix::prelude::*;

/// Milliseconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
/// Actors read the clock; the sans-IO cores are handed it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(crate::heartbeat::millis)
        .unwrap_or(0)
}

/// Makes an actor's state durable (the node writes it to its data dir).
pub type Persist<T> = Box<dyn FnMut(&T) -> std::io::Result<()>>;

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
