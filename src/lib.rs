//! The fleetmesh node runtime: CLI, settings, identity, the libp2p driver, the HTTP API,
//! and the wiring of the actors from `fleetmesh-actors`.
//!
//! Decisions live in `fleetmesh-actors` as sans-IO state machines; this crate does the I/O.

pub mod access;
pub mod alert;
pub mod alertctl;
pub mod api;
pub mod audit;
pub mod cli;
pub mod console;
pub mod desired;
pub mod durable;
pub mod events;
pub mod fleetctl;
#[doc(hidden)]
pub mod fuzzcheck;
pub mod identity;
pub mod init;
pub mod journal;
pub mod metrics;
pub mod net;
pub mod node;
pub mod policy;
pub mod probe;
pub mod recover;
pub mod sbom;
pub mod settings;
pub mod status;
pub mod trustctl;
pub mod twin;
