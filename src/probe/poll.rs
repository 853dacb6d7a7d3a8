//! A thread that takes a reading at once (the detector's baseline) and then every period,
//! and hands each to a detector actor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::Recipient;
use fleetmesh_actors::actor::deliver_blocking;
use fleetmesh_actors::actor::polled::Reading;

/// The running poller; dropping it stops the thread at its next wake-up.
#[derive(Debug)]
pub struct Poller {
    stop: Arc<AtomicBool>,
    /// Set once the first reading (the baseline) has been handed to the actor.
    pub started: Arc<AtomicBool>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn start<R, F>(
    name: &str,
    every: Duration,
    mut read: F,
    actor: Recipient<Reading<R>>,
) -> std::io::Result<Poller>
where
    R: Send + 'static,
    F: FnMut() -> R + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (flag, first) = (stop.clone(), started.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if !deliver_blocking(&actor, Reading(read())) {
                    return;
                }
                first.store(true, Ordering::Release);
                std::thread::sleep(every);
            }
        })?;
    Ok(Poller { stop, started })
}
