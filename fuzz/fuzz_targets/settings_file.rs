//! Fuzz target `settings_file`: see `fleetmesh::fuzzcheck::settings_file` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fleetmesh::fuzzcheck::settings_file(data);
});
