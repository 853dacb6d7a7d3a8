//! The users-and-groups actor: feeds the [`accounts::Detector`] with the account files the
//! probe reads, passes its observations to the spike encoder, and keeps the snapshot
//! durable so that changes made while the node was down are reported at start.

use actix::prelude::*;

use crate::accounts::{self, Files, Snapshot};
use crate::actor::spikes::Observe;
use crate::spike::{FieldChange, Layer};

/// The account files, read again by `layer` (realtime after a change, hash at start-up
/// and at each verification).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AccountsRead {
    pub files: Files,
    pub layer: Layer,
    /// The first reading after start: differences happened while the node was down.
    pub startup: bool,
}

/// Writes the snapshot durably.
pub type PersistSnapshot = crate::actor::Persist<Snapshot>;

pub struct AccountsActor {
    detector: accounts::Detector,
    spikes: Recipient<Observe>,
    persist: PersistSnapshot,
}

impl std::fmt::Debug for AccountsActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountsActor").finish_non_exhaustive()
    }
}

impl AccountsActor {
    pub fn new(
        last: Option<Snapshot>,
        spikes: Recipient<Observe>,
        persist: PersistSnapshot,
    ) -> Self {
        AccountsActor {
            detector: accounts::Detector::new(last),
            spikes,
            persist,
        }
    }
}

impl Actor for AccountsActor {
    type Context = Context<Self>;
}

impl Handler<AccountsRead> for AccountsActor {
    type Result = ();

    fn handle(&mut self, msg: AccountsRead, ctx: &mut Self::Context) {
        if !self.spikes.connected() {
            // Recording a change nobody can publish would lose it: stop, and let the next
            // start find it against the snapshot saved so far.
            tracing::error!("the spike encoder is gone; the accounts detector stops");
            ctx.stop();
            return;
        }
        let mut obs = self.detector.handle(&msg.files, msg.layer);
        if msg.startup {
            for o in &mut obs {
                o.fields
                    .insert("when".into(), FieldChange::fact("while_down"));
            }
        }
        if !obs.is_empty() {
            crate::actor::hand_on(ctx, &self.spikes, crate::actor::observe_batches(obs));
        }
        if let Some(snap) = self.detector.snapshot()
            && let Err(e) = (self.persist)(snap)
        {
            tracing::warn!(error = %e, "cannot save the accounts snapshot");
        }
    }
}
