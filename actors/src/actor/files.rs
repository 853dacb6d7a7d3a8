//! The file-detector actor: feeds the [`files::Detector`] with what the file probe reads,
//! passes its observations to the spike encoder, and keeps the baseline durable.
//!
//! The baseline is saved with the number of the last change it reflects (asked of the
//! encoder behind the observations handed over: [`Numbering`]), so that a start after a
//! crash folds the journal's later file spikes into it ([`files::fold`]). Until a change
//! is in a saved baseline the encoder keeps the journal from compacting it away
//! ([`Baseline`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actor::audit::BaselineDigest;
use crate::actor::spikes::{Baseline, Numbering, Observe};
use crate::actor::unix_ms;
use crate::audit::{self, Answer};
use crate::files::{self, Counters, Scan, State};
use crate::spike::Observation;
use crate::sync::Source;

/// One input from the file probe.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FileInput(pub files::Input);

/// A coverage change the probe noticed itself (watch limit, queue overflow, missing path).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Coverage(pub Observation);

/// Per-layer counters and verification times, for the API ([`FileActor::status`]).
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub counters: Counters,
    pub entries: usize,
    pub last_full_verification_unix_ms: Option<u64>,
    pub last_startup_verification_unix_ms: Option<u64>,
}

/// Saves the baseline now (on shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Writes the encoded baseline (a [`files::Saved`]) durably; called on a blocking thread.
pub type PersistBaseline = crate::actor::PersistBytes;

/// A baseline is saved at most this often (but at start-up and shutdown): at the next
/// check after a scan, and within this delay of a realtime change.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// How often a dirty baseline is checked for being due.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why the baseline is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Save {
    /// After the start-up verification: at once.
    Startup,
    /// After a scan or realtime changes: at most every [`SAVE_EVERY`].
    Due,
    /// Before the node stops: at once, and nothing else is handled meanwhile.
    Shutdown,
}

pub struct FileActor {
    detector: files::Detector,
    spikes: Recipient<Observe>,
    /// The same spike encoder, asked for its numbering when a peer audits this node.
    numbering: Recipient<Numbering>,
    /// The same spike encoder, told when the saved baseline lags the journal.
    journal: Recipient<Baseline>,
    persist: PersistBaseline,
    dirty: bool,
    /// Changes were handed over since the last save (the encoder holds the journal).
    unsaved: bool,
    /// A save is in flight (waiting for the encoder's numbering, or being written).
    saving: bool,
    /// Changes were handed over since the last numbering request of a save.
    changed: bool,
    /// The number the last saved baseline reflects.
    persisted: u64,
    last_save: Instant,
    last_full: Option<u64>,
    last_startup: Option<u64>,
    /// The encoder is gone: nothing more is recorded or saved.
    orphaned: bool,
    /// What the API shows, published after each input.
    status: tokio::sync::watch::Sender<Status>,
}

impl std::fmt::Debug for FileActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileActor")
            .field("entries", &self.detector.baseline().len())
            .finish_non_exhaustive()
    }
}

impl FileActor {
    /// `spikes`, `numbering` and `journal` must reach the same spike encoder.
    pub fn new(
        baseline: BTreeMap<String, State>,
        spikes: Recipient<Observe>,
        numbering: Recipient<Numbering>,
        journal: Recipient<Baseline>,
        persist: PersistBaseline,
    ) -> Self {
        FileActor {
            detector: files::Detector::new(baseline),
            spikes,
            numbering,
            journal,
            persist,
            dirty: false,
            // The encoder holds the journal above the saved baseline's number from the
            // start (`Baseline::Loaded`): the first save releases it.
            unsaved: true,
            saving: false,
            changed: false,
            persisted: 0,
            last_save: Instant::now(),
            last_full: None,
            last_startup: None,
            orphaned: false,
            status: tokio::sync::watch::channel(Status::default()).0,
        }
    }

    /// Saves the baseline with the encoder's numbering. The numbering request queues
    /// behind every observation handed over so far, so its answer is a lower bound of what
    /// the baseline reflects when the answer comes; the baseline as it stands then is
    /// encoded with it, without a copy (folding spikes the baseline already reflects
    /// changes nothing, [`files::fold`]), and written on a blocking thread: the actor goes
    /// on meanwhile (a storm keeps the encoder and the disk busy), except on shutdown, where
    /// nothing else is handled until it is written.
    ///
    /// At most one save is in flight, and, but at start-up and shutdown, one starts at
    /// most every [`SAVE_EVERY`]: a storm's frequent rescans do not each save 100k
    /// entries; a save asked for sooner is left to the interval (`dirty`).
    fn save(&mut self, ctx: &mut Context<Self>, why: Save) {
        if self.orphaned {
            return;
        }
        match why {
            Save::Shutdown => {}
            // The one in flight saves the baseline as it stands when its number comes;
            // changes made meanwhile leave it dirty.
            _ if self.saving => {
                self.dirty = true;
                return;
            }
            Save::Due if self.last_save.elapsed() < SAVE_EVERY => {
                self.dirty = true;
                return;
            }
            Save::Due | Save::Startup => {}
        }
        self.saving = true;
        self.changed = false;
        let asked = Instant::now();
        let write = self.persist.clone();
        let saved = crate::actor::numbering(self.numbering.clone())
            .into_actor(self)
            .then(move |answer, act, _| {
                let job = match answer {
                    None => {
                        tracing::warn!("the spike encoder is gone: the file baseline is not saved");
                        None
                    }
                    // A later save (at shutdown) already wrote the baseline with a number
                    // at least as high.
                    Some((seq, _)) if seq < act.persisted => None,
                    Some((seq, _)) => Some((seq, act.encode(seq))),
                };
                let numbering_ms = asked.elapsed().as_millis() as u64;
                async move {
                    let (seq, bytes) = job?;
                    let start = Instant::now();
                    let result = crate::actor::write_off_thread(write, bytes).await;
                    let write_ms = start.elapsed().as_millis() as u64;
                    tracing::debug!(seq, numbering_ms, write_ms, "file baseline written");
                    Some((seq, result))
                }
                .into_actor(act)
            })
            .map(|written, act, _| {
                act.saving = false;
                if let Some((seq, result)) = written {
                    act.saved(seq, result);
                }
            });
        if why == Save::Shutdown {
            ctx.wait(saved);
        } else {
            ctx.spawn(saved);
        }
    }

    /// The baseline as it stands, with `seq`, a lower bound of what it reflects.
    fn encode(&self, seq: u64) -> std::io::Result<Vec<u8>> {
        rmp_serde::to_vec(&files::Saved {
            seq,
            baseline: self.detector.baseline(),
        })
        .map_err(std::io::Error::other)
    }

    /// A save of the baseline with `seq` ended with `result`.
    fn saved(&mut self, seq: u64, result: std::io::Result<()>) {
        // Also after a failure: a retry waits its turn rather than spinning.
        self.last_save = Instant::now();
        match result {
            Ok(()) => {
                self.persisted = self.persisted.max(seq);
                // Changes handed over since the request may be numbered above `seq`, or be
                // missing from what was written: the journal keeps them until a save's
                // number covers them, which the next save (`dirty`) does.
                self.dirty = self.changed;
                if self.unsaved {
                    self.unsaved = self.changed;
                    self.journal.do_send(Baseline::Saved {
                        source: Source::Files,
                        seq,
                        pending: self.changed,
                    });
                }
            }
            Err(e) => {
                self.dirty = true;
                tracing::warn!(error = %e, "cannot save the file baseline; will retry");
            }
        }
    }

    /// Publishes the status the API reads (it never waits behind this actor's mailbox).
    fn publish(&self) {
        self.status.send_replace(Status {
            counters: self.detector.counters().clone(),
            entries: self.detector.baseline().len(),
            last_full_verification_unix_ms: self.last_full,
            last_startup_verification_unix_ms: self.last_startup,
        });
    }

    /// The status as this actor publishes it after each input.
    pub fn status(&self) -> tokio::sync::watch::Receiver<Status> {
        self.status.subscribe()
    }

    fn emit(&self, obs: Vec<Observation>, ctx: &mut Context<Self>) {
        if !obs.is_empty() {
            // Observations must not be lost: wait for mailbox room rather than drop.
            crate::actor::hand_on(ctx, &self.spikes, crate::actor::observe_batches(obs));
        }
    }
}

impl Actor for FileActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        ctx.run_interval(CHECK_EVERY, |act, ctx| {
            if act.dirty && !act.saving && act.last_save.elapsed() >= SAVE_EVERY {
                act.save(ctx, Save::Due);
            }
        });
    }
}

impl Handler<FileInput> for FileActor {
    type Result = ();

    fn handle(&mut self, msg: FileInput, ctx: &mut Self::Context) {
        if !self.spikes.connected() {
            // Recording a change nobody can publish would lose it: stop without applying
            // or saving it, so that the next start finds it against the saved baseline.
            tracing::error!("the spike encoder is gone; the file detector stops");
            self.orphaned = true;
            ctx.stop();
            return;
        }
        let scan = match &msg.0 {
            files::Input::Scanned { scan, .. } => Some(*scan),
            files::Input::Checked { .. }
            | files::Input::Subtree { .. }
            | files::Input::StartupPart { .. } => None,
        };
        let obs = self.detector.handle(msg.0);
        if !obs.is_empty() {
            self.changed = true;
        }
        if !obs.is_empty() && !self.unsaved {
            // Ahead of the observations, in the same mailbox: the journal keeps them until
            // a saved baseline reflects them (every input here is saved within seconds).
            self.unsaved = true;
            self.journal.do_send(Baseline::Unsaved(Source::Files));
        }
        self.emit(obs, ctx);
        match scan {
            Some(Scan::Startup) => {
                self.last_startup = Some(unix_ms());
                self.save(ctx, Save::Startup);
            }
            Some(Scan::Periodic | Scan::Overflow) => {
                self.last_full = Some(unix_ms());
                self.save(ctx, Save::Due);
            }
            None => self.dirty = true,
        }
        self.publish();
    }
}

impl Handler<Coverage> for FileActor {
    type Result = ();

    fn handle(&mut self, msg: Coverage, ctx: &mut Self::Context) {
        self.emit(vec![msg.0], ctx);
    }
}

impl Handler<Flush> for FileActor {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.save(ctx, Save::Shutdown);
    }
}

/// The state of the files of interest to the node's twin, as the baseline holds them
/// (`watched`: the watched host paths, to tell an absent file from an unknown one).
#[derive(Debug, Message)]
#[rtype(result = "std::collections::BTreeMap<String, crate::twin::FileFact>")]
pub struct FileFacts {
    pub paths: std::collections::BTreeSet<String>,
    pub watched: Vec<String>,
}

impl Handler<FileFacts> for FileActor {
    type Result = MessageResult<FileFacts>;

    fn handle(&mut self, msg: FileFacts, _: &mut Self::Context) -> Self::Result {
        let baseline = self.detector.baseline();
        MessageResult(
            msg.paths
                .into_iter()
                .map(|p| {
                    let fact = crate::twin::file_fact(baseline.get(&p), &p, &msg.watched);
                    (p, fact)
                })
                .collect(),
        )
    }
}

/// A peer audits this node: the digest of the baseline as it stands, and the encoder's
/// numbering right after every observation made from it. Observations are handed over
/// in the same handler that applies their change, and the numbering request queues
/// behind them in the encoder's mailbox, so every change in the digest has a number at
/// or below `seq` and every later one a number above it.
impl Handler<BaselineDigest> for FileActor {
    type Result = ResponseFuture<Result<Answer, String>>;

    fn handle(&mut self, _: BaselineDigest, _: &mut Self::Context) -> Self::Result {
        if self.last_startup.is_none() {
            // Before it, a first start's baseline is still empty and fills up unreported.
            return Box::pin(async {
                Err("the start-up verification of the file baseline has not finished".into())
            });
        }
        let baseline = self.detector.baseline();
        let (digest, entries) = (audit::baseline_digest(baseline), baseline.len() as u64);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.numbering.do_send(Numbering(tx));
        Box::pin(async move {
            let (seq, unused) = rx
                .await
                .map_err(|_| "the spike encoder is gone".to_string())?;
            Ok(Answer {
                digest,
                entries,
                seq,
                unused,
            })
        })
    }
}
