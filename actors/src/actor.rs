//! The actix actors: thin shells that feed the sans-IO cores with time and inputs and
//! carry their outputs away. No decision is made here.

pub mod files;
pub mod heartbeat;
pub mod spikes;
