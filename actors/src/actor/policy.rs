//! The policy actor: decides every spike the encoder hands it with the node's
//! [`Judge`], logs violations, answers the API, and polls the policy file for edits.
//!
//! Reading the file is the node's business (a [`ReadPolicy`] closure); this actor only
//! offers what was read to the judge every `reload` interval. A refused edit is logged
//! once and shown in the status; the last good policy keeps deciding.
//!
//! Consultations of the region's master are decided by the [`consult::Client`] core: this
//! actor feeds it the spikes to consult about, the region's views and the answers, sends
//! its requests (to this node's fleet actor while this node is the master, else over the
//! network), records what it settles and raises the alerts it asks for. Its timer is armed
//! from the core's `poll_timeout`. Changes found at start-up that a package-manager run
//! explains ([`Runs::upgrade`]) are approved here, ahead of the policy rules.

use crate::actor::push::{Pushed, push};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::actor::alert::Raise;
use crate::actor::fleet::{ConsultIn, LearnedIn, SetView};
use crate::actor::unix_ms;
use crate::consult::{self, Client, Failure, Output, Target};
use crate::fleet::{Answer, Knowledge, Learned, Rejection, Rule, Via, View};
use crate::outbox::{Direct, DirectSender};
use crate::pkglog::Runs;
use crate::policy::judge::{Judge, Record, Reload, Settled, Status};
use crate::policy::{Decision, Error};
use crate::spike::{Kind, Spike};
use crate::{node, wire};

/// Reads the policy file: its name (as rule references show it) and its text.
pub type ReadPolicy = Box<dyn FnMut() -> Result<(String, String), Error> + Send>;

/// When a change found at start-up was made (a file's modification time), in Unix ms.
pub type ChangedAt = Box<dyn FnMut(&Spike) -> Option<u64> + Send>;

/// Spikes to decide, in sequence order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Decide(pub Vec<Spike>);

/// Kept decisions in ascending order, at most `limit`: the ones following `since`, or
/// without it the latest.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Record>")]
pub struct GetDecisions {
    pub since: Option<u64>,
    pub limit: usize,
}

/// Every local violation from now on raises an alert there, as the node `node`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetAlerts {
    pub to: Recipient<Raise>,
    /// Where conditions that cleared go (a service probe up, an anomaly ended).
    pub cleared: Recipient<crate::actor::alert::ClearCondition>,
    pub node: node::Info,
}

/// The policy in force, the last refusal and the counts.
#[derive(Debug, Message)]
#[rtype(result = "Status")]
pub struct GetPolicy;

/// How this node consults its region's master about `consult` decisions.
pub struct Consulting {
    pub role: String,
    pub own: node::Id,
    /// Requests to the master.
    pub direct: DirectSender,
    /// This node's own fleet actor (asked directly while this node is the master).
    pub local: Recipient<ConsultIn>,
    /// No answer by then, or no master known for that long: the autonomous default
    /// decides.
    pub timeout: Duration,
    /// Consultations waiting at most; beyond, the autonomous default decides.
    pub queue: usize,
    /// The conservative default when no master answers.
    pub fallback: Decision,
    /// Package-manager runs read from the logs at start.
    pub runs: Runs,
    pub changed_at: ChangedAt,
}

impl std::fmt::Debug for Consulting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consulting")
            .field("role", &self.role)
            .field("own", &self.own)
            .field("timeout", &self.timeout)
            .field("fallback", &self.fallback)
            .field("runs", &self.runs.0.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetConsulting(pub Consulting);

/// The answer of `from` to a consultation about this node's spike `seq` (or why none
/// came).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConsultAnswered {
    pub seq: u64,
    pub from: node::Id,
    pub answer: Result<Answer, Failure>,
}

/// What this node has learned, and what it refused.
#[derive(Debug, Clone, Serialize)]
pub struct Patterns {
    pub role: String,
    pub learned: Vec<Learned>,
    pub rejected: Vec<Refused>,
    pub rejected_total: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub at_unix_ms: u64,
    pub id: String,
    pub why: Rejection,
    pub reason: String,
}

#[derive(Debug, Message)]
#[rtype(result = "Patterns")]
pub struct GetPatterns;

/// The consultation client and where its requests go.
struct Consult {
    client: Client,
    role: String,
    own: node::Id,
    direct: DirectSender,
    local: Recipient<ConsultIn>,
    runs: Runs,
    changed_at: ChangedAt,
}

pub struct PolicyActor {
    /// The node's live event stream, once set ([`SetPush`]).
    push: Option<crate::actor::push::Push>,
    judge: Judge,
    read: ReadPolicy,
    reload: Duration,
    knowledge: Knowledge,
    /// The region's master as this node knows it (whether it is this node included).
    view: View,
    consult: Option<Consult>,
    timer: Option<SpawnHandle>,
    alerts: Option<SetAlerts>,
}

impl std::fmt::Debug for PolicyActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyActor")
            .field("judge", &self.judge)
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}

impl PolicyActor {
    /// `judge` holds the policy loaded at start; `read` is polled every `reload`.
    pub fn new(judge: Judge, read: ReadPolicy, reload: Duration) -> Self {
        PolicyActor {
            push: None,
            judge,
            read,
            reload,
            knowledge: Knowledge::default(),
            view: View::default(),
            consult: None,
            timer: None,
            alerts: None,
        }
    }

    fn role(&self) -> &str {
        self.consult.as_ref().map_or("", |c| c.role.as_str())
    }

    /// Carries the client's outputs away, then arms the timer at its next deadline.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        loop {
            let Some(c) = self.consult.as_mut() else {
                return;
            };
            let Some(out) = c.client.poll_output() else {
                break;
            };
            match out {
                Output::Ask {
                    to: Target::Local,
                    spike,
                    recheck,
                    ..
                } => {
                    let (seq, own) = (spike.seq, c.own.clone());
                    let ask = c.local.send(ConsultIn {
                        from: own.clone(),
                        role: c.role.clone(),
                        spike,
                        recheck,
                    });
                    ctx.spawn(ask.into_actor(self).map(move |res, act, ctx| {
                        let answer = match res {
                            Ok(Ok(a)) => Ok(a),
                            Ok(Err(why)) => Err(Failure::Refused(why)),
                            Err(e) => Err(Failure::Unreachable(format!(
                                "fleet actor unavailable: {e}"
                            ))),
                        };
                        if let Some(c) = act.consult.as_mut() {
                            c.client.handle_answer(Instant::now(), &own, seq, answer);
                        }
                        act.drive(ctx);
                    }));
                }
                Output::Ask {
                    to: Target::Peer(master),
                    region,
                    spike,
                    recheck,
                } => {
                    let seq = spike.seq;
                    let request = wire::Request::Consult {
                        region,
                        role: c.role.clone(),
                        spike: Box::new(spike),
                        recheck,
                    };
                    let sent = c.direct.try_send(Direct {
                        to: master.clone(),
                        request,
                    });
                    if sent.is_err() {
                        let why = Failure::NotSent("the network queue is full".into());
                        c.client
                            .handle_answer(Instant::now(), &master, seq, Err(why));
                    }
                }
                Output::Settled {
                    spike,
                    settled,
                    rule,
                    alert,
                } => self.settled(&spike, settled, &rule, alert),
            }
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let next = self.consult.as_ref().and_then(|c| c.client.poll_timeout());
        if let Some(at) = next {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                if let Some(c) = act.consult.as_mut() {
                    c.client.handle_timeout(Instant::now());
                }
                act.drive(ctx);
            }));
        }
    }

    /// Records how a consultation ended and raises the alert the client asked for.
    fn settled(
        &mut self,
        spike: &Spike,
        settled: Settled,
        rule: &Rule,
        alert: Option<consult::Alert>,
    ) {
        let (reason, term) = (settled.reason.clone(), settled.term);
        if settled.by == "master" && settled.decision == Decision::Violation {
            tracing::warn!(seq = spike.seq, %rule, %reason, ?term, "violation (by the region's master)");
        }
        self.judge.settle(spike.seq, settled);
        if let Some(r) = self.judge.record(spike.seq) {
            push(&self.push, || Pushed::Decision(Box::new(r.clone())));
        }
        if let Some(kind) = alert {
            self.settled_alert(spike, rule.to_string(), reason, term, kind);
        }
    }

    /// A spike that says a condition cleared (a service probe up again, an anomaly back
    /// within bounds) resolves the alerts its start raised, whichever rule raised them.
    fn cleared(&self, spike: &Spike) {
        let clears = matches!(
            (spike.kind, spike.change),
            (Kind::Service, crate::spike::Change::Added)
                | (Kind::Anomaly, crate::spike::Change::Removed)
        );
        if let (true, Some(a)) = (clears, &self.alerts) {
            let msg = crate::actor::alert::ClearCondition {
                host: a.node.name.clone(),
                kind: spike.kind,
                subject: spike.subject.clone(),
            };
            if a.cleared.try_send(msg).is_err() {
                tracing::warn!(subject = %spike.subject, "a cleared condition not told: the alert actor is full or gone");
            }
        }
    }

    /// Raises the alert of a violation.
    fn alert(&self, record: &Record, spike: &Spike, term: Option<u64>, kind: consult::Alert) {
        let Some(a) = &self.alerts else {
            return;
        };
        let mut alert = crate::alert::of_violation(&a.node, record, spike);
        alert.term = term;
        if kind == consult::Alert::Unresolved {
            alert.action = "unresolved_change".into();
        }
        if let Err(e) = a.to.try_send(Raise(alert)) {
            tracing::error!(seq = record.seq, error = %e, "alert not raised: the alert actor is full or gone");
        }
    }

    /// Raises the alert of a consultation that ended in a violation.
    fn settled_alert(
        &self,
        spike: &Spike,
        rule: String,
        reason: String,
        term: Option<u64>,
        kind: consult::Alert,
    ) {
        let Some(mut record) = self.judge.record(spike.seq).cloned() else {
            return;
        };
        record.decision = Decision::Violation;
        record.rule = rule;
        record.reason = reason;
        self.alert(&record, spike, term, kind);
    }

    fn poll(&mut self) {
        let now = unix_ms();
        match (self.read)() {
            Ok((file, text)) => match self.judge.offer(&file, &text, now) {
                Reload::Unchanged => {}
                Reload::Loaded { version } => {
                    tracing::info!(%file, %version, rules = self.judge.policy().rules().len(), "policy loaded");
                }
                Reload::Refused(e) => {
                    tracing::error!(error = %e, version = %self.judge.policy().version(), "policy refused; the last good policy stays in force");
                }
            },
            Err(e) => {
                if self.judge.unreadable(&e, now) {
                    tracing::error!(error = %e, version = %self.judge.policy().version(), "policy unreadable; the last good policy stays in force");
                }
            }
        }
    }
}

impl Handler<crate::actor::push::SetPush> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: crate::actor::push::SetPush, _: &mut Self::Context) {
        self.push = Some(msg.0);
    }
}

impl Actor for PolicyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The encoder waits for room (`hand_on`); its batches are at most `OBSERVE_BATCH`.
        ctx.set_mailbox_capacity(crate::actor::OBSERVE_MAILBOX);
        ctx.run_interval(self.reload, |act, _| act.poll());
    }
}

impl Handler<Decide> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: Decide, ctx: &mut Self::Context) {
        let now = unix_ms();
        for spike in &msg.0 {
            self.cleared(spike);
            let learned = self.knowledge.matching(self.role(), spike).map(|l| {
                (
                    Rule::Learned(l.id.clone()),
                    format!("approved for {} by {}", self.role(), l.approval.by),
                )
            });
            let upgrade = || {
                let c = self.consult.as_mut()?;
                let at = (c.changed_at)(spike);
                c.runs.upgrade(spike, at)
            };
            let ahead = learned.or_else(upgrade);
            let r = match ahead {
                Some((rule, reason)) => self.judge.ahead(spike, rule.to_string(), reason, now),
                None => self.judge.decide(spike, now),
            }
            .clone();
            push(&self.push, || Pushed::Decision(Box::new(r.clone())));
            match r.decision {
                Decision::Violation => {
                    tracing::warn!(seq = r.seq, kind = r.kind.as_str(), subject = %r.subject, rule = %r.rule, reason = %r.reason, "policy violation");
                    self.alert(&r, spike, None, consult::Alert::Violation);
                }
                Decision::Consult if spike.kind != Kind::Metric => match self.consult.as_mut() {
                    Some(c) => c.client.handle_consult(Instant::now(), spike.clone()),
                    None => tracing::error!(
                        seq = r.seq,
                        "consultation is not set up: the decision stays `consult`"
                    ),
                },
                _ => {
                    tracing::debug!(seq = r.seq, decision = r.decision.as_str(), rule = %r.rule, "decided");
                }
            }
        }
        self.drive(ctx);
    }
}

impl Handler<SetConsulting> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: SetConsulting, ctx: &mut Self::Context) {
        let c = msg.0;
        let now = Instant::now();
        let mut client = Client::new(
            consult::Config {
                waiting: c.queue,
                ..consult::Config::new(c.own.clone(), c.timeout, c.fallback)
            },
            now,
        );
        if self.view != View::default() {
            client.handle_view(now, self.view.clone());
        }
        if !c.runs.is_empty() {
            tracing::info!(
                runs = c.runs.0.len(),
                "package-manager runs read from the logs"
            );
        }
        self.consult = Some(Consult {
            client,
            role: c.role,
            own: c.own,
            direct: c.direct,
            local: c.local,
            runs: c.runs,
            changed_at: c.changed_at,
        });
        self.drive(ctx);
    }
}

impl Handler<SetView> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: SetView, ctx: &mut Self::Context) {
        self.view = msg.view;
        if let Some(c) = self.consult.as_mut() {
            c.client.handle_view(Instant::now(), self.view.clone());
        }
        self.drive(ctx);
    }
}

impl Handler<ConsultAnswered> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: ConsultAnswered, ctx: &mut Self::Context) {
        if let Some(c) = self.consult.as_mut() {
            c.client
                .handle_answer(Instant::now(), &msg.from, msg.seq, msg.answer);
        }
        self.drive(ctx);
    }
}

impl Handler<LearnedIn> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: LearnedIn, _: &mut Self::Context) {
        let now = unix_ms();
        let a = msg.approval;
        if msg.via == Via::Gossip {
            let id = a.id();
            let refused = if !msg.signature_ok {
                Some(Rejection::BadSignature)
            } else {
                msg.author
                    .filter(|author| *author != a.master)
                    .map(|author| Rejection::NotAuthor {
                        author,
                        claimed: a.master.clone(),
                    })
            };
            if let Some(why) = refused {
                tracing::warn!(%id, %why, "approval refused");
                self.knowledge.reject(now, id, why);
                return;
            }
        }
        let (id, subject) = (a.id(), a.pattern.subject.clone());
        match self.knowledge.offer(a, msg.via, &self.view, now) {
            Ok(true) => {
                tracing::info!(%id, %subject, via = ?msg.via, "pattern learned");
                // New patterns are few (the master learns at most fleet.learn_per_minute).
                if let Some(l) = self.knowledge.all().find(|l| l.id == id) {
                    push(&self.push, || Pushed::Learned(Box::new(l.clone())));
                }
            }
            Ok(false) => {}
            Err(why) => tracing::warn!(%id, %why, "approval refused"),
        }
    }
}

impl Handler<GetPatterns> for PolicyActor {
    type Result = MessageResult<GetPatterns>;

    fn handle(&mut self, _: GetPatterns, _: &mut Self::Context) -> Self::Result {
        let (rejected, rejected_total) = self.knowledge.rejected();
        MessageResult(Patterns {
            role: self.role().to_string(),
            learned: self.knowledge.all().cloned().collect(),
            rejected: rejected
                .into_iter()
                .map(|(at_unix_ms, id, why)| Refused {
                    at_unix_ms,
                    id,
                    reason: why.to_string(),
                    why,
                })
                .collect(),
            rejected_total,
        })
    }
}

impl Handler<SetAlerts> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: SetAlerts, _: &mut Self::Context) {
        self.alerts = Some(msg);
    }
}

impl Handler<GetDecisions> for PolicyActor {
    type Result = MessageResult<GetDecisions>;

    fn handle(&mut self, q: GetDecisions, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.judge.since(q.since, q.limit))
    }
}

impl Handler<GetPolicy> for PolicyActor {
    type Result = MessageResult<GetPolicy>;

    fn handle(&mut self, _: GetPolicy, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.judge.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node;
    use crate::spike::{Change, Kind};
    use std::sync::{Arc, Mutex};

    fn user(seq: u64, name: &str) -> Spike {
        Spike::bare("me", seq, Kind::User, Change::Added, name)
    }

    async fn settled(addr: &Addr<PolicyActor>, seq: u64) -> Settled {
        for _ in 0..200 {
            let got = addr
                .send(GetDecisions {
                    since: Some(seq - 1),
                    limit: 1,
                })
                .await
                .expect("answered");
            if let Some(s) = got.first().and_then(|r| r.settled.clone()) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("spike {seq} never settled");
    }

    #[actix::test]
    async fn consultations_go_to_the_master_and_fall_back_autonomously() {
        use crate::actor::fleet::{FleetActor, Signer};
        use crate::fleet::{Config, View};
        let me = node::Id::from("me");
        let (gossip, _gossip_rx) = tokio::sync::mpsc::channel(16);
        let fleet = FleetActor::new(
            Config {
                correlation: crate::correlate::Config {
                    window_ms: 300,
                    ..crate::correlate::Config::default()
                },
                ..Config::default()
            },
            Box::new(std::collections::BTreeMap::new),
            Duration::from_secs(60),
            me.clone(),
            Signer {
                public_key: Vec::new(),
                sign: Box::new(|_| Vec::new()),
            },
            gossip,
        )
        .start();
        let (direct, mut direct_rx) = tokio::sync::mpsc::channel(16);
        let judge = Judge::new("web.toml", "", 100, 0).expect("valid");
        let addr = PolicyActor::new(
            judge,
            Box::new(|| Err(Error::file("x", "none"))),
            Duration::from_secs(60),
        )
        .start();
        addr.send(SetConsulting(Consulting {
            role: "web".into(),
            own: me.clone(),
            direct,
            local: fleet.clone().recipient(),
            timeout: Duration::from_millis(100),
            queue: consult::WAITING,
            fallback: Decision::Violation,
            runs: Runs::default(),
            changed_at: Box::new(|_| None),
        }))
        .await
        .expect("delivered");

        // No master known for the whole timeout since start: the conservative default,
        // marked autonomous (the timer is armed from the client's deadline).
        addr.send(Decide(vec![user(1, "eve")]))
            .await
            .expect("delivered");
        let s = settled(&addr, 1).await;
        assert_eq!(
            (s.decision, s.by.as_str()),
            (Decision::Violation, "autonomous")
        );

        // This node is the master: its own fleet actor answers (nothing known: held).
        let view = SetView {
            view: View {
                region: "eu".into(),
                master: Some((me.clone(), 4)),
            },
            leading: Some(4),
            members: Default::default(),
            phases: Default::default(),
            dead: Default::default(),
        };
        fleet.send(view.clone()).await.expect("delivered");
        addr.send(view).await.expect("delivered");
        addr.send(Decide(vec![user(2, "eve")]))
            .await
            .expect("delivered");
        let s = settled(&addr, 2).await;
        assert_eq!(
            (s.by.as_str(), s.term, s.held),
            ("master", Some(4), true),
            "{s:?}"
        );
        assert_eq!(s.region.as_deref(), Some("eu"));
        // Asked again when the window is over: nothing explained it.
        let mut s = settled(&addr, 2).await;
        for _ in 0..200 {
            if !s.held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            s = settled(&addr, 2).await;
        }
        assert_eq!(
            (s.decision, s.rule.as_str(), s.by.as_str()),
            (Decision::Violation, crate::fleet::UNRESOLVED, "master")
        );

        // Another master that never answers: asked over the network, then timed out.
        let other = SetView {
            view: View {
                region: "eu".into(),
                master: Some((node::Id::from("m"), 5)),
            },
            leading: None,
            members: Default::default(),
            phases: Default::default(),
            dead: Default::default(),
        };
        addr.send(other).await.expect("delivered");
        addr.send(Decide(vec![user(3, "eve")]))
            .await
            .expect("delivered");
        let asked = direct_rx.recv().await.expect("a request to the master");
        assert_eq!(asked.to, node::Id::from("m"));
        assert!(matches!(asked.request, wire::Request::Consult { ref role, .. } if role == "web"));
        let s = settled(&addr, 3).await;
        assert_eq!(
            (s.decision, s.by.as_str()),
            (Decision::Violation, "autonomous")
        );
        assert!(s.reason.contains("timed out"), "{}", s.reason);

        // Its answer, had it come in time, settles by the master.
        addr.send(Decide(vec![user(4, "eve")]))
            .await
            .expect("delivered");
        let _ = direct_rx.recv().await.expect("asked");
        let answer = Answer {
            region: "eu".into(),
            term: 5,
            policy: "v".into(),
            decision: Decision::Approved,
            rule: "learned:ab".into(),
            reason: "approved for web".into(),
            held: false,
            recheck_after_ms: None,
        };
        addr.send(ConsultAnswered {
            seq: 4,
            from: node::Id::from("m"),
            answer: Ok(answer),
        })
        .await
        .expect("delivered");
        let s = settled(&addr, 4).await;
        assert_eq!(
            (s.decision, s.by.as_str(), s.rule.as_str()),
            (Decision::Approved, "master", "learned:ab")
        );
    }

    #[actix::test]
    async fn decides_spikes_and_reloads_only_good_policies() {
        let v1 = "[[rules]]\nname = \"deploy\"\ndecision = \"approved\"\nkinds = [\"user\"]\nsubjects = [\"deploy*\"]\n[[rules]]\nname = \"others\"\ndecision = \"violation\"\nkinds = [\"user\"]\n";
        let text = Arc::new(Mutex::new(v1.to_string()));
        let t = text.clone();
        let judge = Judge::new("web.toml", v1, 100, 0).expect("valid");
        let addr = PolicyActor::new(
            judge,
            Box::new(move || Ok(("web.toml".into(), t.lock().expect("lock").clone()))),
            Duration::from_millis(20),
        )
        .start();
        addr.send(Decide(vec![user(1, "deploy"), user(2, "mallory")]))
            .await
            .expect("delivered");
        let got = addr
            .send(GetDecisions {
                since: Some(0),
                limit: 10,
            })
            .await
            .expect("answered");
        let seen: Vec<(u64, Decision, &str)> = got
            .iter()
            .map(|r| (r.seq, r.decision, r.rule.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, Decision::Approved, "web.toml:1#deploy"),
                (2, Decision::Violation, "web.toml:6#others")
            ]
        );

        // A bad edit is refused with its line; decisions go on with the last good policy.
        *text.lock().expect("lock") = v1.replace("\"violation\"", "\"violate\"");
        let status = loop {
            let s = addr.send(GetPolicy).await.expect("answered");
            if s.last_error.is_some() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let error = status.last_error.map(|r| r.error).unwrap_or_default();
        assert!(
            error.starts_with("policy web.toml:6: rule `others`"),
            "{error}"
        );
        addr.send(Decide(vec![user(3, "eve")]))
            .await
            .expect("delivered");
        let got = addr
            .send(GetDecisions {
                since: Some(2),
                limit: 10,
            })
            .await
            .expect("answered");
        assert_eq!(got[0].decision, Decision::Violation);
        assert_eq!(status.counts.violation, 1);
    }
}
