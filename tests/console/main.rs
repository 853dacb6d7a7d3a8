//! The operator console in a real headless Chromium, against real nodes.

mod assignments;
mod browser;
mod charts;
mod drift;
#[allow(dead_code)]
#[path = "../mesh/harness.rs"]
mod harness;
mod login;
mod patterns;
mod views;
