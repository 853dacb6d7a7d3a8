//! fleetmesh's protocol and domain logic.
//!
//! Everything in this crate that decides something is a plain state machine driven by
//! inputs and the current time (`handle(now, input)`, `poll_timeout()`): no sockets, no
//! clocks read inside, no libp2p, notify or config. The [`actor`] module holds the thin
//! actix actors that move inputs in and outputs out; the node runtime (the `fleetmesh`
//! crate) owns all I/O. The actors and the channel types of [`outbox`] need the default
//! `runtime` feature (actix, tokio); without it the crate is the cores alone, which is
//! what the simulator (`fleetmesh-sim`) builds on.

pub mod accounts;
#[cfg(feature = "runtime")]
pub mod actor;
pub mod alert;
pub mod alerting;
pub mod anomaly;
pub mod assign;
pub mod audit;
pub mod census;
pub mod consult;
pub mod correlate;
pub mod delta;
pub mod desired;
pub mod drift;
pub mod encoder;
pub mod files;
pub mod fleet;
pub mod governor;
pub mod heartbeat;
pub mod hostfacts;
pub mod hostmetrics;
pub mod intake;
pub mod journal;
pub mod label;
pub mod ledger;
pub mod membership;
pub mod netconf;
pub mod node;
pub mod outbox;
pub mod phi;
pub mod pkglog;
pub mod policy;
pub mod procs;
pub mod region;
pub mod series;
pub mod service;
pub mod spike;
pub mod sync;
pub mod trust;
pub mod twin;
pub mod wire;
