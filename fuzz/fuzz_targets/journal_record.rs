//! Fuzz target `journal_record`: see `fleetmesh::fuzzcheck::journal_record` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fleetmesh::fuzzcheck::journal_record(data);
});
