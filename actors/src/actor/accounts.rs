//! The users-and-groups actor: feeds the [`accounts::Detector`] with the account files the
//! probe reads, passes its observations to the spike encoder, and keeps the snapshot
//! durable so that changes made while the node was down are reported at start.
//!
//! As with the file baseline ([`crate::actor::files`]), the snapshot is saved after the
//! observations are handed over, with the number of the last change it reflects (asked of
//! the encoder behind them: [`Numbering`]), so that a start after a crash folds the
//! journal's later account spikes into it ([`accounts::fold`]): a change is never lost
//! (saved before it was journaled) nor reported twice (journaled, not yet saved). Until a
//! change is in a saved snapshot the encoder keeps the journal from compacting it away
//! ([`Baseline`] for [`Source::Accounts`]).

use std::time::Duration;

use actix::prelude::*;

use crate::accounts::{self, Files, Snapshot};
use crate::actor::spikes::{Baseline, Numbering, Observe};
use crate::spike::{FieldChange, Layer};
use crate::sync::Source;

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

/// Writes the encoded snapshot (an [`accounts::Saved`]) durably; called on a blocking
/// thread.
pub type PersistSnapshot = crate::actor::PersistBytes;

/// A failed save is tried again after this long.
const RETRY: Duration = Duration::from_secs(5);

pub struct AccountsActor {
    detector: accounts::Detector,
    spikes: Recipient<Observe>,
    /// The same spike encoder, asked for its numbering when the snapshot is saved.
    numbering: Recipient<Numbering>,
    /// The same spike encoder, told when the saved snapshot lags the journal.
    journal: Recipient<Baseline>,
    persist: PersistSnapshot,
    /// The encoder holds the journal for changes not in a saved snapshot (from the
    /// start: the node tells it what the loaded snapshot reflects).
    unsaved: bool,
    /// A save is in flight (waiting for the encoder's numbering, or being written).
    saving: bool,
    /// The snapshot changed while a save was in flight, or a save failed: save again.
    dirty: bool,
    /// Changes were handed over since the last numbering request of a save.
    changed: bool,
    /// The encoder is gone: nothing more is recorded or saved.
    orphaned: bool,
}

impl std::fmt::Debug for AccountsActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountsActor").finish_non_exhaustive()
    }
}

impl AccountsActor {
    /// `last`: the saved snapshot, with the journal's later account spikes folded in.
    /// `spikes`, `numbering` and `journal` must reach the same spike encoder.
    pub fn new(
        last: Option<Snapshot>,
        spikes: Recipient<Observe>,
        numbering: Recipient<Numbering>,
        journal: Recipient<Baseline>,
        persist: PersistSnapshot,
    ) -> Self {
        AccountsActor {
            detector: accounts::Detector::new(last),
            spikes,
            numbering,
            journal,
            persist,
            unsaved: true,
            saving: false,
            dirty: false,
            changed: false,
            orphaned: false,
        }
    }

    /// Saves the snapshot with the encoder's numbering: the request queues behind every
    /// observation handed over so far, so its answer is a lower bound of what the snapshot
    /// reflects when it comes (folding spikes it already reflects changes nothing). The
    /// snapshot as it stands then is encoded with it and written on a blocking thread. At
    /// most one save is in flight; a change meanwhile saves again after it.
    fn save(&mut self, ctx: &mut Context<Self>) {
        if self.orphaned {
            return;
        }
        if self.saving {
            self.dirty = true;
            return;
        }
        self.saving = true;
        self.dirty = false;
        self.changed = false;
        let write = self.persist.clone();
        let saved = crate::actor::numbering(self.numbering.clone())
            .into_actor(self)
            .then(move |answer, act, _| {
                let job = match (answer, act.detector.snapshot()) {
                    (None, _) => {
                        tracing::warn!(
                            "the spike encoder is gone: the accounts snapshot is not saved"
                        );
                        None
                    }
                    (Some(_), None) => None,
                    (Some((seq, _)), Some(snapshot)) => Some((
                        seq,
                        rmp_serde::to_vec(&accounts::Saved { seq, snapshot })
                            .map_err(std::io::Error::other),
                    )),
                };
                async move {
                    let (seq, bytes) = job?;
                    Some((seq, crate::actor::write_off_thread(write, bytes).await))
                }
                .into_actor(act)
            })
            .map(|written, act, ctx| {
                act.saving = false;
                match written {
                    Some((seq, Ok(()))) => act.saved(seq),
                    Some((_, Err(e))) => {
                        tracing::warn!(error = %e, "cannot save the accounts snapshot; will retry");
                        act.dirty = false;
                        ctx.run_later(RETRY, |act, ctx| act.save(ctx));
                        return;
                    }
                    None => return,
                }
                if act.dirty {
                    act.save(ctx);
                }
            });
        ctx.spawn(saved);
    }

    /// A save of the snapshot with `seq` succeeded.
    fn saved(&mut self, seq: u64) {
        // Changes handed over since the request may be numbered above `seq`: the journal
        // keeps them until a save's number covers them, which the next save does.
        if self.unsaved {
            self.unsaved = self.changed;
            self.journal.do_send(Baseline::Saved {
                source: Source::Accounts,
                seq,
                pending: self.changed,
            });
        }
        tracing::debug!(seq, "accounts snapshot written");
    }
}

impl Actor for AccountsActor {
    type Context = Context<Self>;
}

impl Handler<AccountsRead> for AccountsActor {
    type Result = ();

    fn handle(&mut self, msg: AccountsRead, ctx: &mut Self::Context) {
        if !self.spikes.connected() {
            // Recording a change nobody can publish would lose it: stop without saving
            // it, and let the next start find it against the snapshot saved so far.
            tracing::error!("the spike encoder is gone; the accounts detector stops");
            self.orphaned = true;
            ctx.stop();
            return;
        }
        let before = self.detector.snapshot().cloned();
        let mut obs = self.detector.handle(&msg.files, msg.layer);
        if msg.startup {
            for o in &mut obs {
                o.fields
                    .insert("when".into(), FieldChange::fact("while_down"));
            }
        }
        if !obs.is_empty() {
            self.changed = true;
            if !self.unsaved {
                // Ahead of the observations, in the same mailbox: the journal keeps them
                // until a saved snapshot reflects them.
                self.unsaved = true;
                self.journal.do_send(Baseline::Unsaved(Source::Accounts));
            }
            // Observations must not be lost: wait for mailbox room rather than drop.
            crate::actor::hand_on(ctx, &self.spikes, crate::actor::observe_batches(obs));
        }
        if msg.startup || self.changed || self.detector.snapshot() != before.as_ref() {
            self.save(ctx);
        }
    }
}
