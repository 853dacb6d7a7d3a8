//! One actor for the polled detectors (network configuration, processes, host metrics): it
//! feeds each reading the probe takes to the detector and passes the observations to the
//! spike encoder.

use actix::prelude::*;

use crate::actor::Stop;
use crate::actor::spikes::Observe;
use crate::spike::Observation;
use crate::{hostmetrics, netconf, procs};

/// A detector that compares successive readings.
pub trait Detect: Unpin + 'static {
    type Reading: Send + 'static;
    fn detect(&mut self, reading: Self::Reading) -> Vec<Observation>;
}

impl Detect for netconf::Detector {
    type Reading = netconf::Snapshot;
    fn detect(&mut self, r: netconf::Snapshot) -> Vec<Observation> {
        self.handle(r)
    }
}

impl Detect for procs::Detector {
    type Reading = Vec<procs::Process>;
    fn detect(&mut self, r: Vec<procs::Process>) -> Vec<Observation> {
        self.handle(r)
    }
}

impl Detect for hostmetrics::Sampler {
    type Reading = hostmetrics::Raw;
    fn detect(&mut self, r: hostmetrics::Raw) -> Vec<Observation> {
        self.sample(r)
    }
}

/// A fresh reading for a detector.
#[derive(Debug)]
pub struct Reading<R>(pub R);

impl<R: Send + 'static> Message for Reading<R> {
    type Result = ();
}

#[derive(Debug)]
pub struct DetectorActor<D> {
    detector: D,
    spikes: Recipient<Observe>,
}

impl<D: Detect> DetectorActor<D> {
    pub fn new(detector: D, spikes: Recipient<Observe>) -> Self {
        DetectorActor { detector, spikes }
    }
}

impl<D: Detect> Actor for DetectorActor<D> {
    type Context = Context<Self>;
}

impl<D: Detect> Handler<Reading<D::Reading>> for DetectorActor<D> {
    type Result = ();

    fn handle(&mut self, msg: Reading<D::Reading>, ctx: &mut Self::Context) {
        let obs = self.detector.detect(msg.0);
        if !obs.is_empty() {
            crate::actor::hand_on(ctx, &self.spikes, crate::actor::observe_batches(obs));
        }
    }
}

impl<D: Detect> Handler<Stop> for DetectorActor<D> {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
