//! The service-probe actor: a thin shell around [`crate::service::Probes`]. It hands the
//! core the probes this node owns (pushed by the region actor, [`Assigned`], or set
//! directly, [`Owned`]) and the time, starts each attempt the core
//! asks for through the runner it was given (the node's I/O: a TCP connect, an HTTP GET)
//! as a future on its own context, feeds the outcome back, and passes observations to the
//! spike encoder. It decides nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use actix::prelude::*;

use crate::actor::Stop;
use crate::actor::region::Assigned;
use crate::actor::spikes::Observe;
use crate::service::{self, Input, Outcome, Output, Probes, Spec, State};

/// One attempt under way; it must finish within the probe's timeout (the core gives up on
/// it a little after that anyway).
pub type Attempt = Pin<Box<dyn Future<Output = Outcome>>>;

/// Starts one attempt of a probe.
pub type Run = Box<dyn Fn(&Spec) -> Attempt>;

/// The probe names this node owns now (all of them; replaces the last set).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Owned(pub BTreeSet<String>);

/// The probes run here and the state last reported for each (`None`: no result yet).
#[derive(Debug, Message)]
#[rtype(result = "BTreeMap<String, Option<State>>")]
pub struct GetProbes;

pub struct ServiceActor {
    core: Probes,
    run: Run,
    spikes: Recipient<Observe>,
    timer: Option<SpawnHandle>,
    /// The probes the region's assignments gave this node last ([`Assigned`]).
    assigned: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for ServiceActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceActor")
            .field("probes", &self.core.states())
            .finish_non_exhaustive()
    }
}

impl ServiceActor {
    pub fn new(core: Probes, run: Run, spikes: Recipient<Observe>) -> Self {
        ServiceActor {
            core,
            run,
            spikes,
            timer: None,
            assigned: None,
        }
    }

    fn input(&mut self, input: Input, ctx: &mut Context<Self>) {
        let outputs = self.core.handle(Instant::now(), input);
        let mut observed = Vec::new();
        for output in outputs {
            match output {
                Output::Start(attempt) => {
                    let ticket = attempt.ticket;
                    let running = (self.run)(&attempt.spec);
                    ctx.spawn(running.into_actor(self).map(move |outcome, act, ctx| {
                        act.input(Input::Done { ticket, outcome }, ctx);
                    }));
                }
                Output::Observe(o) => observed.push(o),
            }
        }
        if !observed.is_empty() {
            crate::actor::hand_on(ctx, &self.spikes, crate::actor::observe_batches(observed));
        }
        self.arm(ctx);
    }

    /// Wakes the core at its next deadline (and only then).
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = self.core.poll_timeout() {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.input(Input::Timeout, ctx);
            }));
        }
    }
}

impl Actor for ServiceActor {
    type Context = Context<Self>;
}

impl Handler<Owned> for ServiceActor {
    type Result = ();

    fn handle(&mut self, msg: Owned, ctx: &mut Self::Context) {
        self.input(Input::Owned(msg.0), ctx);
    }
}

/// The region's committed assignments, pushed when what this node owns changes: the
/// probes among them are the ones it runs.
impl Handler<Assigned> for ServiceActor {
    type Result = ();

    fn handle(&mut self, msg: Assigned, ctx: &mut Self::Context) {
        let mine = service::probes(msg.items.iter());
        if self.assigned.as_ref() == Some(&mine) {
            return;
        }
        if self.assigned.is_some() || !mine.is_empty() {
            tracing::info!(probes = ?mine, "service probes owned by this node");
        }
        self.assigned = Some(mine.clone());
        self.input(Input::Owned(mine), ctx);
    }
}

impl Handler<GetProbes> for ServiceActor {
    type Result = MessageResult<GetProbes>;

    fn handle(&mut self, _: GetProbes, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.states())
    }
}

impl Handler<Stop> for ServiceActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Check, Hysteresis, Reason};
    use crate::spike::{Kind, Observation, Value};
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    /// Collects what reaches the spike encoder's address.
    struct Sink(tokio::sync::mpsc::UnboundedSender<Observation>);

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<Observe> for Sink {
        type Result = ();
        fn handle(&mut self, msg: Observe, _: &mut Self::Context) {
            for o in msg.0 {
                let _ = self.0.send(o);
            }
        }
    }

    #[actix::test]
    async fn owned_probes_run_and_report_changes_only() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = Sink(tx).start();
        // The service answers from a switch the test flips: up for the first attempts,
        // refused after.
        let up = Rc::new(Cell::new(true));
        let attempts = Rc::new(Cell::new(0u32));
        let (u, n) = (up.clone(), attempts.clone());
        let run: Run = Box::new(move |_spec: &Spec| {
            n.set(n.get() + 1);
            let outcome = if u.get() {
                Outcome::Up
            } else {
                Outcome::Down(Reason::Refused)
            };
            Box::pin(async move { outcome })
        });
        let spec = Spec {
            name: "db".into(),
            check: Check::Tcp {
                target: "127.0.0.1:1".into(),
            },
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(10),
        };
        let core = Probes::new([spec], Hysteresis::default());
        let addr = ServiceActor::new(core, run, sink.recipient()).start();
        addr.send(Owned(["db".to_string()].into()))
            .await
            .expect("delivered");
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a first result")
            .expect("open");
        assert_eq!((first.kind, first.subject.as_str()), (Kind::Service, "db"));
        assert_eq!(first.fields["state"].after, Some(Value::Text("up".into())));
        up.set(false);
        let down = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the service goes down")
            .expect("open");
        assert_eq!(
            down.fields["reason"].after,
            Some(Value::Text("refused".into()))
        );
        assert!(attempts.get() >= 3, "confirmed by a second failure");
        let probes = addr.send(GetProbes).await.expect("answered");
        assert_eq!(probes.get("db"), Some(&Some(State::Down)));
        // Released: no more attempts.
        addr.send(Owned(BTreeSet::new())).await.expect("delivered");
        let after = attempts.get();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(attempts.get(), after);
        assert!(rx.try_recv().is_err(), "nothing more reported");
    }
}
