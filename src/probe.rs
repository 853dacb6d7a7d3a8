//! Host probes: the I/O half of the detectors. They read the host (files, /proc, /etc)
//! and hand plain data to the detector actors; they decide nothing.

pub mod files;
pub mod host;
pub mod hostmetrics;
pub mod netconf;
pub mod poll;
pub mod procs;
pub mod service;
