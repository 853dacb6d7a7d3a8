//! Failure-detection and failover tests on real nodes. A test binary of their own, so that
//! cargo runs them after the other tests instead of beside them: they judge timing, and
//! must not share two cores with a storm of 100,000 file changes.

#[path = "../mesh/harness.rs"]
#[allow(dead_code)]
mod harness;

mod audits;
mod compaction;
mod consult;
mod crash;
mod detection;
mod faithful;
mod founding;
mod load;
mod master;
mod names;
mod partition;
mod recover;
mod replay;
mod services;
mod voters;
