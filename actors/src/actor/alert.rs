//! The alert actor: a thin shell around two cores. The alert-lifecycle engine
//! ([`crate::alerting::Engine`]) decides: grouping, routing, inhibition, silences,
//! acknowledgement, escalation, budgets. The book ([`crate::alert::Book`]) keeps the
//! latest raises for the API and carries each notification the engine hands out to the
//! sink of its receiver, with retries. The actor starts every batch the book says is due
//! through the sink's [`Deliver`] function (the node's I/O: a log line, a file append, an
//! HTTP request) as a future on its own context, bounded by the sink's timeout, and feeds
//! the outcome back. It never waits for a sink: a slow or dead one only grows its own
//! queue. Its one timer is armed from both cores' `poll_timeout`.

use crate::actor::push::{Pushed, push};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actor::{Stop, unix_ms};
use crate::alert::{Alert, Book, Config, Entry, Outcome, SinkConfig, Status};
use crate::alerting::silence::am;
use crate::alerting::{self, Ack, Counters, Engine, GroupView, Listed, Notification, Record};

/// The longest the actor sleeps before asking the cores again.
const MAX_SLEEP_MS: u64 = 60_000;

/// An alert to keep, judge and notify.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Raise(pub Alert);

/// The condition of alert `key` cleared (a node alive again, a probe up, ...): it
/// resolves.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Clear {
    pub key: String,
}

/// Kept alerts last raised after `since` (Unix ms), newest first, at most `limit`, only
/// those whose lifecycle state is `state` (`firing`, `acknowledged`, `silenced`,
/// `inhibited`, `resolved`) if given, with the counters.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Alerts")]
pub struct GetAlerts {
    pub since: u64,
    pub limit: usize,
    pub state: Option<String>,
}

/// The answer to [`GetAlerts`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alerts {
    pub alerts: Vec<Listed>,
    #[serde(flatten)]
    pub status: Status,
    /// The lifecycle engine's counters.
    pub lifecycle: Counters,
    pub groups: Vec<GroupView>,
    /// Notifications for a receiver with no sink (none when the settings are checked).
    pub unrouted: u64,
    /// Notifications this node left to the region's master (which notifies for the
    /// region while this node knows it).
    pub left_to_master: u64,
    /// Whether this node notifies now (the master, or a node with no master).
    pub notifier: bool,
}

/// One alert episode with its history.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Option<Record>")]
pub struct GetAlert {
    pub id: String,
}

/// The engine's records of these ids, each `None` if it knows none (for the API, which
/// merges them with the history on disk: the newer copy of an alert wins).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<Option<Record>>")]
pub struct GetRecords {
    pub ids: Vec<String>,
}

/// The records this node's lifecycle holds (tracked, or resolved and remembered) whose
/// last change is after `since` and whose state is `state` (if given), newest first, at
/// most `limit`: what another node of the region merges into the region's list.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<Record>")]
pub struct HeldRecords {
    pub since: u64,
    pub state: Option<String>,
    pub limit: usize,
}

/// An operator acknowledges alert `id`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Ack, alerting::Error>")]
pub struct Acknowledge {
    pub id: String,
    pub by: String,
    pub comment: String,
}

/// An operator marks alert `id` resolved.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), alerting::Error>")]
pub struct ResolveAlert {
    pub id: String,
}

/// A silence to create (no id) or change; answers its id.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<String, alerting::Error>")]
pub struct AddSilence(pub am::Postable);

/// Ends silence `id` now.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), alerting::Error>")]
pub struct ExpireSilence {
    pub id: String,
}

/// The silences, in Alertmanager's shape.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<am::Gettable>")]
pub struct GetSilences;

/// What the region's log committed of the alert lifecycle: silences (as last set) and
/// acknowledgements (by alert id). Every member applies them, so that a silence or an
/// acknowledgement made on any member holds on all, and survives a change of master.
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "()")]
pub struct Replicated {
    pub silences: Vec<alerting::Silence>,
    pub acks: Vec<(String, Ack)>,
    /// Alerts an operator resolved: id and when.
    pub resolved: Vec<(String, u64)>,
    /// Members' lifecycle phases, by name: a member in maintenance raises at info.
    pub phases: Vec<(String, crate::region::Phase)>,
    /// What the region's masters notified.
    pub notified: Vec<alerting::nlog::Record>,
    /// Alerts a master raised about the region, and the keys of those it resolved.
    pub region_alerts: Vec<Alert>,
    pub region_cleared: Vec<String>,
}

/// How to reach the region's master: the network's direct requests, and the region's
/// name. Without it the node notifies on its own.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetDirect {
    pub direct: crate::outbox::DirectSender,
    pub region: String,
}

/// A member's alerts, for this node as the region's master
/// ([`crate::wire::Request::Alerts`]).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct MemberAlerts {
    pub from: crate::node::Id,
    pub raised: Vec<Alert>,
    pub cleared: Vec<String>,
}

/// Writes the receivers' undelivered notifications (rmp-serde of `Vec<(receiver,
/// Notification)>`, see [`AlertActor::with_saved`]) so that a restart delivers them; the
/// node's I/O (a durable file).
pub type SaveQueue = Box<dyn Fn(&[u8]) -> std::io::Result<()>>;

/// A write of records to the history under way.
pub type Writing = Pin<Box<dyn Future<Output = ()>>>;

/// Keeps changed alert records in the node's history on disk (see
/// [`AlertActor::with_history`]); the node's I/O.
pub struct SaveHistory {
    /// Writes a batch off the actor's thread; the future ends when it is written (or
    /// failed, which the node says). At most one runs at a time.
    pub write: Box<dyn Fn(Vec<Record>) -> Writing>,
    /// Writes a batch at once, blocking: only when the actor stops.
    pub write_now: Box<dyn Fn(Vec<Record>)>,
}

impl std::fmt::Debug for SaveHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaveHistory").finish_non_exhaustive()
    }
}

/// Raises within this long are judged together: one poll of the engine (which looks at
/// every tracked alert) for a burst, not one per raise.
const COALESCE: Duration = Duration::from_millis(20);
/// ... and this much longer for each alert tracked (a poll costs about 1 µs per alert).
const COALESCE_PER_ALERT: Duration = Duration::from_micros(10);

/// How long after a change of the queues they are saved (at most one save per period).
const SAVE_AFTER: Duration = Duration::from_millis(500);

/// How long a node knows no master before it notifies on its own.
pub const AUTONOMOUS_AFTER: Duration = Duration::from_secs(10);

/// How long a node that starts to notify waits before it tells any group: the members
/// send it their open alerts when the master changes, so that it compares whole groups
/// with what the region's log says was told (and tells none again that stands as told).
pub const TAKEOVER_SETTLE: Duration = Duration::from_secs(3);

/// How often a member sends its open alerts to the master again (besides when the
/// master changes).
const RESEND_OPEN: Duration = Duration::from_secs(30);

/// Bytes of alerts in one request to the master, at most (a frame is 64 KiB).
const FORWARD_BYTES: usize = 48 * 1024;

/// An operator's alert-lifecycle action (a silence, an acknowledgement, a resolution)
/// made on this node, for the region's log (the region actor): the master proposes it, a
/// member sends it to the master ([`crate::wire::Request::Operator`]). Answers whether it
/// was handed on, not whether it committed (see [`Replicated`]).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), String>")]
pub struct Replicate(pub crate::region::Operator);

/// Where operator actions go to be committed (the region actor).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetReplicate(pub Recipient<Replicate>);

/// What this node's alert lifecycle, as the region's master, puts in the region's log:
/// what it notified, and the alerts it raised (or resolved) about the region itself
/// ([`crate::alert::REGION_ACTIONS`]). The region actor proposes it while this node
/// leads, and drops it otherwise.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum ToLog {
    Notified(Vec<alerting::nlog::Record>),
    RegionAlert(Box<Alert>),
    RegionAlertCleared(String),
}

/// Where [`ToLog`] goes (the region actor).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetToLog(pub Recipient<ToLog>);

/// Open alerts by severity, as this node's alert lifecycle holds them (what a master's
/// census summary carries).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetAlertCounts(pub BTreeMap<String, u32>);

/// Where the open alerts' counts go, for the region's census summary (the heartbeat
/// actor); sent at most every [`COUNTS_EVERY`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SetCensus(pub Recipient<SetAlertCounts>);

/// The open alerts' counts are told at most this often.
const COUNTS_EVERY: Duration = Duration::from_secs(1);

/// How often actions not yet seen committed are handed to the region's log again.
const REPLICATE_RETRY: Duration = Duration::from_secs(3);

/// Actions waiting to be seen committed, at most; beyond, the oldest stay local only.
const MAX_UNCOMMITTED: usize = 1000;

/// One delivery under way.
pub type Delivery = Pin<Box<dyn Future<Output = Outcome>>>;

/// Delivers one batch of notifications (oldest first) to a sink.
pub type Deliver = Box<dyn Fn(Vec<Notification>) -> Delivery>;

/// A sink as the actor drives it: the receiver of its name.
pub struct Sink {
    pub config: SinkConfig,
    pub deliver: Deliver,
    /// A delivery still running after this long counts as failed (and is dropped).
    pub timeout: Duration,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("config", &self.config)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

pub struct AlertActor {
    /// The node's live event stream, once set ([`SetPush`]).
    push: Option<crate::actor::push::Push>,
    engine: Engine,
    book: Book<Notification>,
    sinks: Vec<(Deliver, Duration)>,
    unrouted: u64,
    timer: Option<SpawnHandle>,
    /// A poll due within [`COALESCE`] (raises since are judged then), and the last poll.
    soon: Option<SpawnHandle>,
    polled_at: std::time::Instant,
    /// The region's log, once linked.
    replicate: Option<Recipient<Replicate>>,
    /// Where what this node notifies and raises about the region goes, as master.
    to_log: Option<Recipient<ToLog>>,
    /// Operator actions applied here and not yet seen committed, by what they set
    /// (`silence:<id>`, `ack:<id>`), with the time they carry: handed to the log again
    /// until the log gives them (or something newer) back.
    uncommitted: BTreeMap<String, (u64, crate::region::Operator)>,
    /// Whether this node tells the region's alerts (the region's master, whether it is
    /// this node, and since when none is known), and when that may change by itself.
    role: alerting::role::Role,
    role_timer: Option<SpawnHandle>,
    direct: Option<SetDirect>,
    /// Notifications this node did not send because the master notifies.
    left_to_master: u64,
    /// Where undelivered notifications are saved, and whether a save is due.
    save: Option<SaveQueue>,
    save_due: Option<SpawnHandle>,
    /// Where changed records go, whether a write is due, and whether one runs.
    history: Option<SaveHistory>,
    history_due: Option<SpawnHandle>,
    history_writing: bool,
    /// Members in maintenance, by name (the region's log says so).
    maintenance: std::collections::BTreeSet<String>,
    /// Where the open alerts' counts go, and whether a count is due.
    census: Option<Recipient<SetAlertCounts>>,
    counts_due: bool,
}

impl std::fmt::Debug for AlertActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertActor")
            .field("book", &self.book)
            .finish_non_exhaustive()
    }
}

impl AlertActor {
    /// `engine` routes to receivers named as `sinks` are.
    pub fn new(config: Config, engine: Engine, sinks: Vec<Sink>) -> Self {
        let (configs, sinks) = sinks
            .into_iter()
            .map(|s| (s.config, (s.deliver, s.timeout)))
            .unzip();
        AlertActor {
            push: None,
            engine,
            book: Book::new(config, configs),
            sinks,
            unrouted: 0,
            timer: None,
            soon: None,
            polled_at: std::time::Instant::now(),
            replicate: None,
            to_log: None,
            uncommitted: BTreeMap::new(),
            role: alerting::role::Role::new(AUTONOMOUS_AFTER.as_millis() as u64, unix_ms()),
            role_timer: None,
            direct: None,
            left_to_master: 0,
            maintenance: std::collections::BTreeSet::new(),
            census: None,
            counts_due: false,
            save: None,
            save_due: None,
            history: None,
            history_due: None,
            history_writing: false,
        }
    }

    /// Saves undelivered notifications with `save` after each change, and queues the
    /// ones a previous run saved (`restored`: receiver name and notification; those of a
    /// receiver that no longer exists are dropped, and said).
    pub fn with_saved(mut self, restored: Vec<(String, Notification)>, save: SaveQueue) -> Self {
        let mut unknown = 0usize;
        for (receiver, n) in restored {
            match self.book.sink(&receiver) {
                Some(i) => self.book.queue(i, n),
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            tracing::warn!(
                unknown,
                "saved notifications for receivers no longer configured are dropped"
            );
        }
        self.save = Some(save);
        self
    }

    /// Hands every changed alert record (a new episode, a raise, a status change, a
    /// resolution) to `save`, in batches: at most one per [`SAVE_AFTER`] and one at a
    /// time; changes meanwhile wait in the engine, one per alert.
    pub fn with_history(mut self, save: SaveHistory) -> Self {
        self.engine.keep_history();
        self.history = Some(save);
        self
    }

    /// Writes the changed records soon (once per [`SAVE_AFTER`], one write at a time).
    fn history_soon(&mut self, ctx: &mut Context<Self>) {
        if self.history.is_none()
            || self.history_due.is_some()
            || self.history_writing
            || !self.engine.has_changed()
        {
            return;
        }
        self.history_due = Some(ctx.run_later(SAVE_AFTER, |act, ctx| {
            act.history_due = None;
            let Some(save) = &act.history else { return };
            let batch = act.engine.take_changed();
            if batch.is_empty() {
                return;
            }
            act.history_writing = true;
            let writing = (save.write)(batch);
            ctx.spawn(writing.into_actor(act).map(|(), act, ctx| {
                act.history_writing = false;
                act.history_soon(ctx);
            }));
        }));
    }

    /// Polls the engine now if it was not polled within the coalescing window (a lone
    /// raise is told at once), else when that window ends (once for every raise until
    /// then). A poll looks through every tracked alert, so the window grows with them
    /// ([`COALESCE`], plus [`COALESCE_PER_ALERT`] for each): under a storm of alerts the
    /// engine costs a bounded share of the node's time, whatever it tracks.
    fn soon(&mut self, ctx: &mut Context<Self>) {
        if self.soon.is_some() {
            return;
        }
        let tracked = u32::try_from(self.engine.tracked()).unwrap_or(u32::MAX);
        let window = COALESCE + COALESCE_PER_ALERT * tracked;
        let since = self.polled_at.elapsed();
        if since >= window {
            self.pump(ctx);
        } else {
            self.soon = Some(ctx.run_later(window - since, |act, ctx| {
                act.soon = None;
                act.pump(ctx);
            }));
        }
    }

    /// Saves the undelivered notifications soon (once per [`SAVE_AFTER`]).
    fn changed(&mut self, ctx: &mut Context<Self>) {
        if self.save.is_none() || self.save_due.is_some() {
            return;
        }
        self.save_due = Some(ctx.run_later(SAVE_AFTER, |act, _| {
            act.save_due = None;
            act.save_now();
        }));
    }

    fn save_now(&mut self) {
        let Some(save) = &self.save else { return };
        let pending = self.book.pending();
        match rmp_serde::to_vec(&pending) {
            Ok(bytes) => {
                if let Err(e) = save(&bytes) {
                    tracing::error!(error = %e, queued = pending.len(), "cannot save the undelivered notifications: a restart now would lose them");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the undelivered notifications"),
        }
    }

    /// Whether this node tells the region's alerts now (see [`alerting::role`]).
    fn notifier(&self) -> bool {
        self.role.notifies(unix_ms())
    }

    /// Whether this node is its region's master.
    fn leading(&self) -> bool {
        self.role.leading()
    }

    /// Takes note of a change of role: a node that starts to notify looks at every group
    /// after [`TAKEOVER_SETTLE`] and tells those the region's log does not show told as
    /// they stand (see [`Engine::renotify`]). Armed again from the role's own deadline
    /// (no master known for [`AUTONOMOUS_AFTER`]).
    fn refresh_role(&mut self, ctx: &mut Context<Self>) {
        let now = unix_ms();
        if self.role.refresh(now) == alerting::role::Change::Started {
            tracing::info!(
                leading = self.leading(),
                "this node notifies the alerts it holds"
            );
            self.engine
                .renotify(now, TAKEOVER_SETTLE.as_millis() as u64);
        }
        self.engine.set_notifying(self.role.notifies(now));
        if let Some(t) = self.role_timer.take() {
            ctx.cancel_future(t);
        }
        if let Some(at) = self.role.poll_timeout() {
            let wait = Duration::from_millis(at.saturating_sub(now));
            self.role_timer = Some(ctx.run_later(wait, |act, ctx| {
                act.role_timer = None;
                act.refresh_role(ctx);
            }));
        }
        self.pump(ctx);
    }

    /// Sends `raised` and `cleared` to the master, in requests that fit a frame.
    fn forward(&self, raised: Vec<Alert>, cleared: Vec<String>) {
        let (Some(d), Some(master)) = (&self.direct, self.role.master()) else {
            return;
        };
        if self.leading() || (raised.is_empty() && cleared.is_empty()) {
            return;
        }
        let send = |raised: Vec<Alert>, cleared: Vec<String>| {
            let request = crate::wire::Request::Alerts {
                region: d.region.clone(),
                raised,
                cleared,
            };
            let direct = crate::outbox::Direct {
                to: master.clone(),
                request,
            };
            if d.direct.try_send(direct).is_err() {
                // Sent again with the next resend of the open alerts.
                tracing::debug!("the network's queue is full: alerts for the master wait");
            }
        };
        let mut batch = Vec::new();
        let mut size = 0;
        for a in raised {
            let len = rmp_serde::to_vec(&a).map_or(FORWARD_BYTES, |b| b.len());
            if !batch.is_empty() && size + len > FORWARD_BYTES {
                send(std::mem::take(&mut batch), Vec::new());
                size = 0;
            }
            size += len;
            batch.push(a);
        }
        send(batch, cleared);
    }

    /// Sends every open alert of this node to the master again.
    fn forward_open(&self) {
        if !self.notifier() {
            self.forward(self.engine.open_alerts(), Vec::new());
        }
    }

    /// Hands `cmd` (setting `what` as of `at`) to the region's log, and keeps it until the
    /// log gives it back.
    fn replicate(&mut self, what: String, at: u64, cmd: crate::region::Operator) {
        if self.uncommitted.len() >= MAX_UNCOMMITTED && !self.uncommitted.contains_key(&what) {
            tracing::warn!(%what, "too many operator actions wait for the region's log: this one stays on this node");
            return;
        }
        if let Some(r) = &self.replicate {
            let _ = r.try_send(Replicate(cmd.clone()));
        }
        self.uncommitted.insert(what, (at, cmd));
    }

    /// Hands every action not yet seen committed to the log again.
    fn replicate_again(&mut self) {
        let Some(r) = &self.replicate else { return };
        for (_, cmd) in self.uncommitted.values() {
            let _ = r.try_send(Replicate(cmd.clone()));
        }
    }

    fn listed(&self, entry: Entry) -> Listed {
        let record = self.engine.by_key(&entry.alert.key);
        Listed {
            id: record.map(|r| r.id.clone()),
            state: record.map(|r| r.status.name().to_string()),
            status: record.map(|r| r.status.clone()),
            entry,
        }
    }

    /// Queues what the engine says is due, starts every batch that is due, then sleeps
    /// until either core has something to do.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.census.is_some() && !self.counts_due {
            self.counts_due = true;
            ctx.run_later(COUNTS_EVERY, |act, _| {
                act.counts_due = false;
                if let Some(c) = &act.census {
                    let _ = c.try_send(SetAlertCounts(act.engine.open_by_severity()));
                }
            });
        }
        let now = unix_ms();
        self.polled_at = std::time::Instant::now();
        let notifier = self.notifier();
        let mut queued = false;
        let mut records = Vec::new();
        for n in self.engine.poll(now) {
            if notifier && self.leading() {
                records.extend(n.records.iter().cloned());
            }
            if !notifier {
                // The master tells the receivers, with this node's alerts among the
                // region's; this node's engine only keeps their states.
                self.left_to_master += 1;
                continue;
            }
            match self.book.sink(&n.receiver) {
                Some(i) => {
                    self.book.queue(i, n);
                    queued = true;
                }
                None => {
                    self.unrouted += 1;
                    tracing::warn!(receiver = %n.receiver, group = %n.group_key, "a notification for a receiver with no sink is dropped");
                }
            }
        }
        if !records.is_empty() {
            self.to_log(ToLog::Notified(records));
        }
        for batch in self.book.poll(now) {
            let Some((deliver, timeout)) = self.sinks.get(batch.sink) else {
                continue;
            };
            let (ticket, timeout) = (batch.ticket, *timeout);
            let running = deliver(batch.items);
            let bounded = async move {
                tokio::time::timeout(timeout, running)
                    .await
                    .unwrap_or_else(|_| {
                        Outcome::Failed(format!("no answer within {} ms", timeout.as_millis()))
                    })
            };
            ctx.spawn(bounded.into_actor(self).map(move |outcome, act, ctx| {
                act.book.done(unix_ms(), ticket, outcome);
                act.changed(ctx);
                act.pump(ctx);
            }));
        }
        if queued {
            self.changed(ctx);
        }
        self.history_soon(ctx);
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let next = [self.book.poll_timeout(), self.engine.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = next {
            // Capped: the book gives up a retry time the wall clock was set back past
            // (see `Book::poll`), which it can only do when asked.
            let wait = Duration::from_millis(at.saturating_sub(unix_ms()).min(MAX_SLEEP_MS));
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.pump(ctx);
            }));
        }
    }

    /// An action of `what` as of `at` came back committed: it need not be sent again
    /// (unless this node made a later one since).
    fn committed(&mut self, what: &str, at: u64) {
        if self
            .uncommitted
            .get(what)
            .is_some_and(|(mine, _)| *mine <= at)
        {
            self.uncommitted.remove(what);
        }
    }

    /// Pushes the listing of alert `id` to the live event stream (its state changed).
    fn announce_id(&self, id: &str) {
        if let Some(key) = self.engine.alert(id).map(|r| r.key.clone()) {
            self.announce(&key);
        }
    }

    /// Pushes the listing of `key` to the live event stream (its state changed).
    fn announce(&self, key: &str) {
        let kept = self.book.entry(key);
        if let Some(entry) = kept {
            let listed = self.listed(entry);
            push(&self.push, || Pushed::Alert(Box::new(listed)));
        }
    }
}

impl Handler<crate::actor::push::SetPush> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::push::SetPush, _: &mut Self::Context) {
        self.push = Some(msg.0);
    }
}

impl Actor for AlertActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(REPLICATE_RETRY, |act, _| act.replicate_again());
        ctx.run_interval(RESEND_OPEN, |act, _| act.forward_open());
        // Notifications a previous run saved go out now.
        self.pump(ctx);
    }
}

impl Handler<SetCensus> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: SetCensus, _: &mut Self::Context) {
        self.census = Some(msg.0);
    }
}

impl Handler<SetDirect> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: SetDirect, ctx: &mut Self::Context) {
        self.direct = Some(msg);
        self.role.link(unix_ms());
        self.refresh_role(ctx);
    }
}

impl Handler<crate::actor::fleet::SetView> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::fleet::SetView, ctx: &mut Self::Context) {
        let master = msg.view.master.map(|(peer, _)| peer);
        let changed = self
            .role
            .set_master(master, msg.leading.is_some(), unix_ms());
        if changed {
            self.forward_open();
        }
        self.refresh_role(ctx);
    }
}

impl Handler<MemberAlerts> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: MemberAlerts, ctx: &mut Self::Context) {
        if !self.leading() {
            // The member sends them again to the master it learns of.
            tracing::debug!(from = %msg.from, "alerts for the master, which this node is not");
            return;
        }
        let now = unix_ms();
        let mut keys = Vec::with_capacity(msg.raised.len());
        for alert in msg.raised {
            keys.push(alert.key.clone());
            let before = self.engine.by_key(&alert.key).map(|r| r.id.clone());
            match self.engine.raise(alert.clone(), now) {
                // A new episode is listed; a member's copy sent again is not a raise.
                Ok(id) if before.as_ref() != Some(&id) => {
                    self.book.raise(now, alert);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(from = %msg.from, "a member's alert not tracked: {e}"),
            }
        }
        for key in &msg.cleared {
            self.engine.resolve(key, now);
        }
        self.soon(ctx);
        for key in keys.iter().chain(&msg.cleared) {
            self.announce(key);
        }
    }
}

impl Handler<SetReplicate> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: SetReplicate, _: &mut Self::Context) {
        self.replicate = Some(msg.0);
        self.replicate_again();
    }
}

impl Handler<SetToLog> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: SetToLog, _: &mut Self::Context) {
        self.to_log = Some(msg.0);
    }
}

impl Handler<Replicated> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: Replicated, ctx: &mut Self::Context) {
        let (mut entered, mut left) = (Vec::new(), Vec::new());
        for (name, phase) in msg.phases {
            if phase == crate::region::Phase::Maintenance {
                if self.maintenance.insert(name.clone()) {
                    entered.push(name);
                }
            } else if self.maintenance.remove(&name) {
                left.push(name);
            }
        }
        self.rephase(&entered, &left);
        for s in msg.silences {
            self.committed(&format!("silence:{}", s.id), s.updated_at_unix_ms);
            let newer = self
                .engine
                .silence(&s.id)
                .is_none_or(|mine| mine.updated_at_unix_ms <= s.updated_at_unix_ms);
            if newer {
                self.engine.restore_silence(s);
            }
        }
        let now = unix_ms();
        if !msg.notified.is_empty() {
            let mut log = alerting::nlog::Log::default();
            for r in msg.notified {
                log.apply(r);
            }
            self.engine.merge_log(&log);
        }
        // The master raised these itself; a member holds them too, so that it has them
        // (with the same ids) should it become master.
        if !self.leading() {
            for a in msg.region_alerts {
                let key = a.key.clone();
                if self.engine.raise(a, now).is_ok() {
                    self.announce(&key);
                }
            }
            for key in msg.region_cleared {
                if self.engine.resolve(&key, now).is_some() {
                    self.announce(&key);
                }
            }
        }
        for (id, at) in msg.resolved {
            self.committed(&format!("resolve:{id}"), at);
            // Known and open here: resolved as on the member that took the action.
            if self.engine.resolve_id(&id, now).is_ok() {
                self.announce_id(&id);
            }
        }
        for (id, ack) in msg.acks {
            self.committed(&format!("ack:{id}"), ack.at_unix_ms);
            let newer = self
                .engine
                .alert(&id)
                .and_then(|r| r.ack.as_ref())
                .is_none_or(|mine| mine.at_unix_ms <= ack.at_unix_ms);
            if newer {
                self.engine.apply_ack(&id, ack);
                self.announce_id(&id);
            }
        }
        self.pump(ctx);
    }
}

/// A condition of `host` cleared (a service probe up again, an anomaly ended): every open
/// alert its start raised about `subject`, by any rule, resolves.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ClearCondition {
    pub host: String,
    pub kind: crate::spike::Kind,
    pub subject: String,
}

impl Handler<ClearCondition> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: ClearCondition, ctx: &mut Self::Context) {
        let keys: Vec<String> = self
            .engine
            .open_alerts()
            .into_iter()
            .map(|a| a.key)
            .filter(|k| crate::alert::is_violation_about(k, &msg.host, msg.kind, &msg.subject))
            .collect();
        let cleared: Vec<String> = keys.into_iter().filter(|k| self.clear(k)).collect();
        self.pump(ctx);
        for key in &cleared {
            tracing::info!(%key, "its condition cleared: resolved");
            self.announce(key);
        }
    }
}

/// Another region's silences, as its master published them (its authority checked by the
/// network): they hold here too.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ForeignSilences {
    pub region: String,
    pub silences: Vec<alerting::Silence>,
}

impl Handler<ForeignSilences> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: ForeignSilences, ctx: &mut Self::Context) {
        let mut taken = 0;
        let now = unix_ms();
        for s in msg.silences.into_iter().take(crate::region::MAX_SILENCES) {
            let newer = self
                .engine
                .silence(&s.id)
                .is_none_or(|mine| mine.updated_at_unix_ms < s.updated_at_unix_ms);
            // An expired one is taken too: its expiry is news.
            let sound = matches!(
                s.check(now),
                Ok(()) | Err(alerting::silence::Error::AlreadyEnded)
            );
            if newer && sound {
                self.engine.restore_silence(s);
                taken += 1;
            }
        }
        if taken > 0 {
            tracing::info!(region = %msg.region, taken, "silences of another region hold here");
            self.pump(ctx);
        }
    }
}

impl AlertActor {
    /// Resolves the open alert `key` (its condition cleared) and tells the master; false
    /// when none was open. The caller pumps, then announces it.
    fn clear(&mut self, key: &str) -> bool {
        let region = self
            .engine
            .by_key(key)
            .and_then(|r| r.labels.get("alertname"))
            .is_some_and(|a| crate::alert::is_region_action(a));
        if self.engine.resolve(key, unix_ms()).is_none() {
            return false;
        }
        if region && self.leading() {
            self.to_log(ToLog::RegionAlertCleared(key.to_string()));
        }
        self.forward(Vec::new(), vec![key.to_string()]);
        true
    }

    /// Hands `entry` to the region's log, as its master (dropped while not leading).
    fn to_log(&self, entry: ToLog) {
        if let (true, Some(r)) = (self.leading(), &self.to_log)
            && r.try_send(entry).is_err()
        {
            // The next notification's records or the next raise carry it again.
            tracing::debug!("the region actor's mailbox is full: a log entry waits");
        }
    }

    /// The open alerts of members that entered maintenance go to info; those of members
    /// back from it get their severity back.
    fn rephase(&mut self, entered: &[String], left: &[String]) {
        if entered.is_empty() && left.is_empty() {
            return;
        }
        let now = unix_ms();
        for mut a in self.engine.open_alerts() {
            let changed = if entered.contains(&a.host) {
                let already = a.details.get("phase").map(String::as_str) == Some("maintenance");
                !already && {
                    crate::alert::in_maintenance(&mut a);
                    true
                }
            } else if left.contains(&a.host) {
                crate::alert::out_of_maintenance(&mut a)
            } else {
                false
            };
            if changed {
                let key = a.key.clone();
                self.book.raise(now, a.clone());
                if let Err(e) = self.engine.raise(a, now) {
                    tracing::debug!(%key, "alert not moved with its member's phase: {e}");
                }
                self.announce(&key);
            }
        }
    }
}

impl Handler<Raise> for AlertActor {
    type Result = ();

    fn handle(&mut self, mut msg: Raise, ctx: &mut Self::Context) {
        let now = unix_ms();
        if self.maintenance.contains(&msg.0.host) {
            crate::alert::in_maintenance(&mut msg.0);
        }
        let key = msg.0.key.clone();
        if crate::alert::is_region_action(&msg.0.action) {
            self.to_log(ToLog::RegionAlert(Box::new(msg.0.clone())));
        }
        self.book.raise(now, msg.0.clone());
        if let Err(e) = self.engine.raise(msg.0.clone(), now) {
            // Said once per thousand: a storm must not become a storm of log lines.
            if self.engine.counters().refused % 1000 == 1 {
                tracing::warn!(%key, refused = self.engine.counters().refused, "alert not tracked: {e}");
            }
        }
        self.forward(vec![msg.0], Vec::new());
        self.soon(ctx);
        self.announce(&key);
    }
}

impl Handler<Clear> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: Clear, ctx: &mut Self::Context) {
        if self.clear(&msg.key) {
            self.pump(ctx);
            self.announce(&msg.key);
        }
    }
}

impl Handler<GetAlerts> for AlertActor {
    type Result = MessageResult<GetAlerts>;

    fn handle(&mut self, q: GetAlerts, _: &mut Self::Context) -> Self::Result {
        // A state filter looks through every kept key, then takes `limit`.
        let scan = if q.state.is_some() {
            usize::MAX
        } else {
            q.limit
        };
        let alerts = self
            .book
            .latest(q.since, scan)
            .into_iter()
            .map(|e| self.listed(e))
            .filter(|l| q.state.is_none() || l.state == q.state)
            .take(q.limit)
            .collect();
        // `limit` 0 (the metrics' scrape): counters only, no copy of every alert.
        let groups = if q.limit == 0 {
            Vec::new()
        } else {
            self.engine.snapshot(unix_ms()).groups
        };
        MessageResult(Alerts {
            alerts,
            status: self.book.status(),
            lifecycle: self.engine.counters().clone(),
            groups,
            unrouted: self.unrouted,
            left_to_master: self.left_to_master,
            notifier: self.notifier(),
        })
    }
}

impl Handler<GetAlert> for AlertActor {
    type Result = Option<Record>;

    fn handle(&mut self, q: GetAlert, _: &mut Self::Context) -> Self::Result {
        self.engine.alert(&q.id).cloned()
    }
}

impl Handler<GetRecords> for AlertActor {
    type Result = MessageResult<GetRecords>;

    fn handle(&mut self, q: GetRecords, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            q.ids
                .iter()
                .map(|id| self.engine.alert(id).cloned())
                .collect(),
        )
    }
}

impl Handler<HeldRecords> for AlertActor {
    type Result = MessageResult<HeldRecords>;

    fn handle(&mut self, q: HeldRecords, _: &mut Self::Context) -> Self::Result {
        let mut out: Vec<Record> = self
            .engine
            .records()
            .filter(|r| alerting::history::last_change(r) > q.since)
            .filter(|r| q.state.as_deref().is_none_or(|s| r.status.name() == s))
            .cloned()
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(alerting::history::last_change(r)));
        out.truncate(q.limit);
        MessageResult(out)
    }
}

impl Handler<Acknowledge> for AlertActor {
    type Result = Result<Ack, alerting::Error>;

    fn handle(&mut self, q: Acknowledge, ctx: &mut Self::Context) -> Self::Result {
        let ack = self.engine.ack(&q.id, &q.by, &q.comment, unix_ms())?;
        tracing::info!(alert = %q.id, by = %q.by, "alert acknowledged");
        self.replicate(
            format!("ack:{}", q.id),
            ack.at_unix_ms,
            crate::region::Operator::Ack {
                id: q.id.clone(),
                ack: ack.clone(),
            },
        );
        self.pump(ctx);
        self.announce_id(&q.id);
        Ok(ack)
    }
}

impl Handler<ResolveAlert> for AlertActor {
    type Result = Result<(), alerting::Error>;

    fn handle(&mut self, q: ResolveAlert, ctx: &mut Self::Context) -> Self::Result {
        let now = unix_ms();
        self.engine.resolve_id(&q.id, now)?;
        tracing::info!(alert = %q.id, "alert resolved by an operator");
        self.replicate(
            format!("resolve:{}", q.id),
            now,
            crate::region::Operator::Resolve {
                id: q.id.clone(),
                at_unix_ms: now,
            },
        );
        self.pump(ctx);
        self.announce_id(&q.id);
        Ok(())
    }
}

impl Handler<AddSilence> for AlertActor {
    type Result = Result<String, alerting::Error>;

    fn handle(&mut self, q: AddSilence, ctx: &mut Self::Context) -> Self::Result {
        let silence = q.0.into_silence()?;
        let id = self.engine.add_silence(silence, unix_ms())?;
        tracing::info!(silence = %id, "silence set");
        if let Some(s) = self.engine.silence(&id).cloned() {
            self.replicate(
                format!("silence:{id}"),
                s.updated_at_unix_ms,
                crate::region::Operator::Silence(Box::new(s)),
            );
        }
        self.pump(ctx);
        Ok(id)
    }
}

impl Handler<ExpireSilence> for AlertActor {
    type Result = Result<(), alerting::Error>;

    fn handle(&mut self, q: ExpireSilence, ctx: &mut Self::Context) -> Self::Result {
        let s = self.engine.expire_silence(&q.id, unix_ms())?;
        tracing::info!(silence = %q.id, "silence expired");
        self.replicate(
            format!("silence:{}", q.id),
            s.updated_at_unix_ms,
            crate::region::Operator::Silence(Box::new(s)),
        );
        self.pump(ctx);
        Ok(())
    }
}

impl Handler<GetSilences> for AlertActor {
    type Result = MessageResult<GetSilences>;

    fn handle(&mut self, _: GetSilences, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.engine.silences(unix_ms()))
    }
}

impl Handler<Stop> for AlertActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        self.save_now();
        if let Some(save) = &self.history {
            let batch = self.engine.take_changed();
            if !batch.is_empty() {
                (save.write_now)(batch);
            }
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spike::Severity;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    fn alert(key: &str) -> Alert {
        Alert {
            key: key.into(),
            at_unix_ms: 0,
            severity: Severity::High,
            category: "iam".into(),
            action: "unauthorized_access".into(),
            host: "b1".into(),
            region: "eu".into(),
            role: "baseline".into(),
            rule: None,
            reason: "test".into(),
            decision: None,
            term: None,
            subject: Some(key.into()),
            details: Default::default(),
        }
    }

    fn config(name: &str) -> SinkConfig {
        SinkConfig {
            name: name.into(),
            queue: 100,
            batch: 10,
            retry_min_ms: 20,
            retry_max_ms: 50,
        }
    }

    #[actix::test]
    async fn changed_records_go_to_the_history_in_batches_one_write_at_a_time() {
        let batches = Rc::new(RefCell::new(Vec::<Vec<Record>>::new()));
        let at_stop = Rc::new(RefCell::new(Vec::<Record>::new()));
        let writing = Rc::new(Cell::new(0u32));
        let overlapped = Rc::new(Cell::new(false));
        let (b, w, o) = (batches.clone(), writing.clone(), overlapped.clone());
        let s = at_stop.clone();
        let history = SaveHistory {
            write: Box::new(move |batch: Vec<Record>| {
                b.borrow_mut().push(batch);
                o.set(o.get() || w.get() > 0);
                w.set(w.get() + 1);
                let w = w.clone();
                // A slow disk: changes meanwhile wait for the next batch.
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    w.set(w.get() - 1);
                })
            }),
            write_now: Box::new(move |batch: Vec<Record>| s.borrow_mut().extend(batch)),
        };
        let mut lifecycle = alerting::Config::default();
        lifecycle.route.group_wait_ms = Some(0);
        let engine = Engine::new(lifecycle).expect("valid");
        let sink = Sink {
            config: config("default"),
            deliver: Box::new(|_| Box::pin(async { Outcome::Delivered })),
            timeout: Duration::from_secs(5),
        };
        let addr = AlertActor::new(Config { ring: 10, seed: 1 }, engine, vec![sink])
            .with_history(history)
            .start();
        addr.send(Raise(alert("a"))).await.expect("delivered");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while batches.borrow().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no batch");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // While the first write runs: a resolution and a new alert.
        addr.send(Clear { key: "a".into() })
            .await
            .expect("delivered");
        addr.send(Raise(alert("b"))).await.expect("delivered");
        while batches.borrow().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no second batch");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        addr.send(Raise(alert("c"))).await.expect("delivered");
        addr.send(Stop).await.expect("delivered");
        assert!(!overlapped.get(), "one write at a time");
        let batches = batches.borrow();
        let first: Vec<(&str, &str)> = batches[0]
            .iter()
            .map(|r| (r.key.as_str(), r.status.name()))
            .collect();
        assert_eq!(first, [("a", "firing")]);
        let mut second: Vec<(&str, &str)> = batches[1]
            .iter()
            .map(|r| (r.key.as_str(), r.status.name()))
            .collect();
        second.sort();
        assert_eq!(second, [("a", "resolved"), ("b", "firing")]);
        let rest: Vec<String> = at_stop.borrow().iter().map(|r| r.key.clone()).collect();
        assert_eq!(rest, ["c"], "what waited is written at the stop");
    }

    #[actix::test]
    async fn a_hanging_sink_times_out_and_blocks_neither_the_actor_nor_other_sinks() {
        let got = Rc::new(RefCell::new(Vec::<String>::new()));
        let g = got.clone();
        let fast = Sink {
            config: config("fast"),
            deliver: Box::new(move |batch: Vec<Notification>| {
                g.borrow_mut().extend(
                    batch
                        .into_iter()
                        .flat_map(|n| n.alerts.into_iter().map(|a| a.key)),
                );
                Box::pin(async { Outcome::Delivered })
            }),
            timeout: Duration::from_secs(5),
        };
        // Hangs on its first two attempts, then answers.
        let calls = Rc::new(Cell::new(0u32));
        let c = calls.clone();
        let hanging = Sink {
            config: config("hanging"),
            deliver: Box::new(move |_batch: Vec<Notification>| {
                c.set(c.get() + 1);
                let hang = c.get() <= 2;
                Box::pin(async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Outcome::Delivered
                })
            }),
            timeout: Duration::from_millis(50),
        };
        // Each alert its own group, told at once, to both receivers.
        let mut lifecycle = alerting::Config::default();
        lifecycle.route.group_by = Some(vec!["...".into()]);
        lifecycle.route.group_wait_ms = Some(0);
        lifecycle.route = lifecycle
            .route
            .fan_out(&["fast".to_string(), "hanging".to_string()]);
        let engine = Engine::new(lifecycle).expect("valid");
        let addr =
            AlertActor::new(Config { ring: 10, seed: 1 }, engine, vec![fast, hanging]).start();
        addr.send(Raise(alert("a"))).await.expect("delivered");
        addr.send(Raise(alert("a"))).await.expect("delivered");
        addr.send(Raise(alert("b"))).await.expect("delivered");
        // The actor answers while the hanging sink hangs.
        let view = addr
            .send(GetAlerts {
                since: 0,
                limit: 10,
                state: None,
            })
            .await
            .expect("answered");
        let keys: Vec<(&str, u64)> = view
            .alerts
            .iter()
            .map(|e| (e.entry.alert.key.as_str(), e.entry.count))
            .collect();
        assert_eq!(keys, [("b", 1), ("a", 2)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let view = loop {
            let v = addr
                .send(GetAlerts {
                    since: 0,
                    limit: 10,
                    state: None,
                })
                .await
                .expect("answered");
            if v.status.sinks[1].delivered == 2 {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "{v:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(*got.borrow(), ["a", "b"], "the repeat was not told again");
        assert!(
            view.alerts
                .iter()
                .all(|l| l.state.as_deref() == Some("firing") && l.id.is_some()),
            "{view:?}"
        );
        let hanging = &view.status.sinks[1];
        // Two attempts failed: the first carried `a`'s notification, and `b`'s too when
        // both were raised within one coalescing window (the usual case); the second
        // carried both.
        assert!(matches!(hanging.failed, 3 | 4), "{hanging:?}");
        assert!(
            hanging
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("within 50 ms")),
            "{hanging:?}"
        );
        assert_eq!(calls.get(), 3);
        assert_eq!(view.status.sinks[0].delivered, 2);
        assert_eq!(view.status.raised["unauthorized_access"], 3);
    }
}
