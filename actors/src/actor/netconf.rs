//! The network-configuration actor: feeds the [`netconf::Detector`] with the snapshots
//! the network probe reads and passes its observations to the spike encoder.

use actix::prelude::*;

use crate::actor::spikes::Observe;
use crate::netconf::{self, Snapshot};

/// A fresh reading of the host's network configuration.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct NetRead(pub Snapshot);

#[derive(Debug)]
pub struct NetconfActor {
    detector: netconf::Detector,
    spikes: Recipient<Observe>,
}

impl NetconfActor {
    pub fn new(spikes: Recipient<Observe>) -> Self {
        NetconfActor {
            detector: netconf::Detector::default(),
            spikes,
        }
    }
}

impl Actor for NetconfActor {
    type Context = Context<Self>;
}

impl Handler<NetRead> for NetconfActor {
    type Result = ();

    fn handle(&mut self, msg: NetRead, _: &mut Self::Context) {
        let obs = self.detector.handle(msg.0);
        if !obs.is_empty() {
            self.spikes.do_send(Observe(obs));
        }
    }
}
