//! Fuzz target `raft_message`: see `fleetmesh::fuzzcheck::raft_message` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fleetmesh::fuzzcheck::raft_message(data);
});
