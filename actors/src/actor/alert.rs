//! The alert actor: a thin shell around [`crate::alert::Book`]. It hands the book each
//! raised alert and the time, starts every batch the book says is due through the sink's
//! [`Deliver`] function (the node's I/O: a log line, a file append, an HTTP request) as a
//! future on its own context, bounded by the sink's timeout, and feeds the outcome back.
//! It never waits for a sink: a slow or dead one only grows its own queue.

use crate::actor::push::{Pushed, push};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::actor::{Stop, unix_ms};
use crate::alert::{Alert, Book, Config, Entry, Outcome, SinkConfig, Status};

/// The longest the actor sleeps before asking the book again.
const MAX_SLEEP_MS: u64 = 60_000;

/// An alert to keep and deliver.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Raise(pub Alert);

/// Kept alerts last raised after `since` (Unix ms), newest first, at most `limit`, with
/// the book's and the sinks' counters.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Alerts")]
pub struct GetAlerts {
    pub since: u64,
    pub limit: usize,
}

/// The answer to [`GetAlerts`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alerts {
    pub alerts: Vec<Entry>,
    #[serde(flatten)]
    pub status: Status,
}

/// One delivery under way.
pub type Delivery = Pin<Box<dyn Future<Output = Outcome>>>;

/// Delivers one batch (oldest first) to a sink.
pub type Deliver = Box<dyn Fn(Vec<Entry>) -> Delivery>;

/// A sink as the actor drives it.
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
    book: Book,
    sinks: Vec<(Deliver, Duration)>,
    timer: Option<SpawnHandle>,
}

impl std::fmt::Debug for AlertActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertActor")
            .field("book", &self.book)
            .finish_non_exhaustive()
    }
}

impl AlertActor {
    pub fn new(config: Config, sinks: Vec<Sink>) -> Self {
        let (configs, sinks) = sinks
            .into_iter()
            .map(|s| (s.config, (s.deliver, s.timeout)))
            .unzip();
        AlertActor {
            push: None,
            book: Book::new(config, configs),
            sinks,
            timer: None,
        }
    }

    /// Starts every batch that is due, then sleeps until the next one is.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        for batch in self.book.poll(unix_ms()) {
            let Some((deliver, timeout)) = self.sinks.get(batch.sink) else {
                continue;
            };
            let (ticket, timeout) = (batch.ticket, *timeout);
            let running = deliver(batch.entries);
            let bounded = async move {
                tokio::time::timeout(timeout, running)
                    .await
                    .unwrap_or_else(|_| {
                        Outcome::Failed(format!("no answer within {} ms", timeout.as_millis()))
                    })
            };
            ctx.spawn(bounded.into_actor(self).map(move |outcome, act, ctx| {
                act.book.done(unix_ms(), ticket, outcome);
                act.pump(ctx);
            }));
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = self.book.poll_timeout() {
            // Capped: the book gives up a retry time the wall clock was set back past
            // (see `Book::poll`), which it can only do when asked.
            let wait = Duration::from_millis(at.saturating_sub(unix_ms()).min(MAX_SLEEP_MS));
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.pump(ctx);
            }));
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
    }
}

impl Handler<Raise> for AlertActor {
    type Result = ();

    fn handle(&mut self, msg: Raise, ctx: &mut Self::Context) {
        self.book.raise(unix_ms(), msg.0);
        if let Some(entry) = self.book.latest(0, 1).pop() {
            push(&self.push, || Pushed::Alert(Box::new(entry)));
        }
        self.pump(ctx);
    }
}

impl Handler<GetAlerts> for AlertActor {
    type Result = MessageResult<GetAlerts>;

    fn handle(&mut self, q: GetAlerts, _: &mut Self::Context) -> Self::Result {
        MessageResult(Alerts {
            alerts: self.book.latest(q.since, q.limit),
            status: self.book.status(),
        })
    }
}

impl Handler<Stop> for AlertActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
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
            subject: None,
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
    async fn a_hanging_sink_times_out_and_blocks_neither_the_actor_nor_other_sinks() {
        let got = Rc::new(RefCell::new(Vec::<String>::new()));
        let g = got.clone();
        let fast = Sink {
            config: config("fast"),
            deliver: Box::new(move |batch: Vec<Entry>| {
                g.borrow_mut()
                    .extend(batch.into_iter().map(|e| e.alert.key));
                Box::pin(async { Outcome::Delivered })
            }),
            timeout: Duration::from_secs(5),
        };
        // Hangs on its first two attempts, then answers.
        let calls = Rc::new(Cell::new(0u32));
        let c = calls.clone();
        let hanging = Sink {
            config: config("hanging"),
            deliver: Box::new(move |_batch: Vec<Entry>| {
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
        let addr = AlertActor::new(
            Config {
                ring: 10,
                fold_ms: 60_000,
                seed: 1,
            },
            vec![fast, hanging],
        )
        .start();
        addr.send(Raise(alert("a"))).await.expect("delivered");
        addr.send(Raise(alert("a"))).await.expect("delivered");
        addr.send(Raise(alert("b"))).await.expect("delivered");
        // The actor answers while the hanging sink hangs.
        let view = addr
            .send(GetAlerts {
                since: 0,
                limit: 10,
            })
            .await
            .expect("answered");
        let keys: Vec<(&str, u64)> = view
            .alerts
            .iter()
            .map(|e| (e.alert.key.as_str(), e.count))
            .collect();
        assert_eq!(keys, [("b", 1), ("a", 2)]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let view = loop {
            let v = addr
                .send(GetAlerts {
                    since: 0,
                    limit: 10,
                })
                .await
                .expect("answered");
            if v.status.sinks[1].delivered == 2 {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "{v:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(*got.borrow(), ["a", "b"], "the repeat was folded");
        let hanging = &view.status.sinks[1];
        // The first attempt carried `a` alone (sent as soon as raised), the second `a` and
        // `b`: three alerts failed in all.
        assert_eq!(hanging.failed, 3);
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
