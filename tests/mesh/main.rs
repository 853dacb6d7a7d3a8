//! Integration tests: real `fleetmesh` nodes on 127.0.0.1.

mod access;
mod accounts;
mod admission;
mod alert_history;
mod alertmanager;
mod alerts;
mod anomaly;
mod census;
mod channels;
mod cli;
mod cluster;
mod consult;
mod drift;
mod events;
mod files;
mod fleet;
mod garbage;
#[allow(dead_code)]
mod harness;
mod journal;
mod lifecycle;
mod metrics;
mod package;
mod policy;
mod region_alerts;
mod silences;
mod storm;
mod trust;
