//! The file-detector actor: feeds the [`files::Detector`] with what the file probe reads,
//! passes its observations to the spike encoder, and keeps the baseline durable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::actor::audit::BaselineDigest;
use crate::actor::spikes::{Numbering, Observe};
use crate::actor::unix_ms;
use crate::audit::{self, Answer};
use crate::files::{self, Counters, Scan, State};
use crate::spike::Observation;

/// One input from the file probe.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FileInput(pub files::Input);

/// A coverage change the probe noticed itself (watch limit, queue overflow, missing path).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Coverage(pub Observation);

/// Per-layer counters and verification times, for the API.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub counters: Counters,
    pub entries: usize,
    pub last_full_verification_unix_ms: Option<u64>,
    pub last_startup_verification_unix_ms: Option<u64>,
}

#[derive(Debug, Message)]
#[rtype(result = "Status")]
pub struct GetStatus;

/// Saves the baseline now (on shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Writes the baseline durably.
pub type PersistBaseline = crate::actor::Persist<BTreeMap<String, State>>;

/// A dirty baseline is saved at most this often (realtime changes); scans save at once.
const SAVE_EVERY: Duration = Duration::from_secs(5);

pub struct FileActor {
    detector: files::Detector,
    spikes: Recipient<Observe>,
    /// The same spike encoder, asked for its numbering when a peer audits this node.
    numbering: Recipient<Numbering>,
    persist: PersistBaseline,
    dirty: bool,
    last_save: Instant,
    last_full: Option<u64>,
    last_startup: Option<u64>,
    /// The encoder is gone: nothing more is recorded or saved.
    orphaned: bool,
}

impl std::fmt::Debug for FileActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileActor")
            .field("entries", &self.detector.baseline().len())
            .finish_non_exhaustive()
    }
}

impl FileActor {
    /// `spikes` and `numbering` must reach the same spike encoder.
    pub fn new(
        baseline: BTreeMap<String, State>,
        spikes: Recipient<Observe>,
        numbering: Recipient<Numbering>,
        persist: PersistBaseline,
    ) -> Self {
        FileActor {
            detector: files::Detector::new(baseline),
            spikes,
            numbering,
            persist,
            dirty: false,
            last_save: Instant::now(),
            last_full: None,
            last_startup: None,
            orphaned: false,
        }
    }

    fn save(&mut self) {
        if self.orphaned {
            return;
        }
        match (self.persist)(self.detector.baseline()) {
            Ok(()) => {
                self.dirty = false;
                self.last_save = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "cannot save the file baseline; will retry"),
        }
    }

    fn emit(&self, obs: Vec<Observation>) {
        if !obs.is_empty() {
            // Observations must not be lost: wait for mailbox room rather than drop.
            self.spikes.do_send(Observe(obs));
        }
    }
}

impl Actor for FileActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        ctx.run_interval(SAVE_EVERY, |act, _| {
            if act.dirty && act.last_save.elapsed() >= SAVE_EVERY {
                act.save();
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
            files::Input::Checked { .. } | files::Input::Subtree { .. } => None,
        };
        let obs = self.detector.handle(msg.0);
        self.emit(obs);
        match scan {
            Some(Scan::Startup) => {
                self.last_startup = Some(unix_ms());
                self.save();
            }
            Some(Scan::Periodic | Scan::Overflow) => {
                self.last_full = Some(unix_ms());
                self.save();
            }
            None => self.dirty = true,
        }
    }
}

impl Handler<Coverage> for FileActor {
    type Result = ();

    fn handle(&mut self, msg: Coverage, _: &mut Self::Context) {
        self.emit(vec![msg.0]);
    }
}

impl Handler<GetStatus> for FileActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(Status {
            counters: self.detector.counters().clone(),
            entries: self.detector.baseline().len(),
            last_full_verification_unix_ms: self.last_full,
            last_startup_verification_unix_ms: self.last_startup,
        })
    }
}

impl Handler<Flush> for FileActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.save();
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
