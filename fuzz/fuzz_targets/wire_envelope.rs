//! Fuzz target `wire_envelope`: see `fleetmesh::fuzzcheck::wire_envelope` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fleetmesh::fuzzcheck::wire_envelope(data);
});
