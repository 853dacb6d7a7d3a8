//! The policy actor: decides every spike the encoder hands it with the node's
//! [`Judge`], logs violations, answers the API, and polls the policy file for edits.
//!
//! Reading the file is the node's business (a [`ReadPolicy`] closure); this actor only
//! offers what was read to the judge every `reload` interval. A refused edit is logged
//! once and shown in the status; the last good policy keeps deciding.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::actor::alert::Raise;
use crate::actor::fleet::{ConsultIn, LearnedIn, SetView};
use crate::actor::unix_ms;
use crate::fleet::{Answer, Knowledge, Learned, Rejection, Via, View};
use crate::outbox::{Direct, DirectSender};
use crate::policy::judge::{Judge, Record, Reload, Settled, Status};
use crate::policy::{Decision, Error};
use crate::spike::{Kind, Spike};
use crate::{node, wire};

/// Reads the policy file: its name (as rule references show it) and its text.
pub type ReadPolicy = Box<dyn FnMut() -> Result<(String, String), Error> + Send>;

/// Spikes to decide, in sequence order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Decide(pub Vec<Spike>);

/// Kept decisions of spikes with `seq > since`, oldest first, at most `limit`.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Record>")]
pub struct GetDecisions {
    pub since: u64,
    pub limit: usize,
}

/// Every local violation from now on raises an alert there, as the node `node`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetAlerts {
    pub to: Recipient<Raise>,
    pub node: node::Info,
}

/// The policy in force, the last refusal and the counts.
#[derive(Debug, Message)]
#[rtype(result = "Status")]
pub struct GetPolicy;

/// How this node consults its region's master about `consult` decisions.
#[derive(Debug, Clone)]
pub struct Consulting {
    pub role: String,
    pub own: node::Id,
    /// Requests to the master.
    pub direct: DirectSender,
    /// This node's own fleet actor (asked directly while this node is the master).
    pub local: Recipient<ConsultIn>,
    /// No answer by then: the autonomous default decides.
    pub timeout: Duration,
    /// The conservative default when no master answers.
    pub fallback: Decision,
}

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetConsulting(pub Consulting);

/// The master's answer to a consultation about this node's spike `seq` (or why none came).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConsultAnswered {
    pub seq: u64,
    pub answer: Result<Answer, String>,
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

/// Consultations under way at once, per node.
const IN_FLIGHT: usize = 256;
/// Consultations waiting at most; beyond, the autonomous default decides.
const WAITING: usize = 100_000;

pub struct PolicyActor {
    judge: Judge,
    read: ReadPolicy,
    reload: Duration,
    knowledge: Knowledge,
    /// The region's master as this node knows it (whether it is this node included).
    view: View,
    consulting: Option<Consulting>,
    /// Consultations under way: spike seq → (asked at, the spike, a recheck).
    pending: HashMap<u64, (Instant, Spike, bool)>,
    /// Consultations waiting for room (at most [`IN_FLIGHT`] are under way), and whether
    /// each is a recheck.
    waiting: VecDeque<(Spike, bool)>,
    /// Held changes to ask about again when their window is over.
    rechecks: Vec<(Instant, Spike)>,
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
            judge,
            read,
            reload,
            knowledge: Knowledge::default(),
            view: View::default(),
            consulting: None,
            pending: HashMap::new(),
            waiting: VecDeque::new(),
            rechecks: Vec::new(),
            alerts: None,
        }
    }

    fn role(&self) -> &str {
        self.consulting.as_ref().map_or("", |c| c.role.as_str())
    }

    /// Queues a consultation about `spike`; a storm of changes waits its turn (a bounded
    /// number in flight) instead of flooding the master. Beyond [`WAITING`] waiting, the
    /// autonomous default decides at once.
    fn consult(&mut self, spike: &Spike, ctx: &mut Context<Self>) {
        if self.waiting.len() >= WAITING {
            self.autonomous(spike, "too many consultations waiting", 0);
            return;
        }
        self.waiting.push_back((spike.clone(), false));
        self.pump(ctx);
    }

    /// Sends waiting consultations while there is room.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.pending.len() < IN_FLIGHT {
            let Some((spike, recheck)) = self.waiting.pop_front() else {
                return;
            };
            self.ask(&spike, recheck, ctx);
        }
    }

    /// Asks the region's master about `spike` (or decides autonomously when none is known).
    fn ask(&mut self, spike: &Spike, recheck: bool, ctx: &mut Context<Self>) {
        let Some(c) = self.consulting.clone() else {
            self.autonomous(spike, "consultation is not set up", 0);
            return;
        };
        let seq = spike.seq;
        let Some((master, _)) = self.view.master.clone() else {
            self.autonomous(spike, "no master known for the region", 0);
            return;
        };
        self.pending
            .insert(seq, (Instant::now(), spike.clone(), recheck));
        if master == c.own {
            let ask = c.local.send(ConsultIn {
                from: c.own.clone(),
                role: c.role.clone(),
                spike: spike.clone(),
                recheck,
            });
            ctx.spawn(ask.into_actor(self).map(move |res, act, ctx| {
                let answer = res.unwrap_or_else(|e| Err(format!("fleet actor unavailable: {e}")));
                act.answered(seq, answer);
                act.pump(ctx);
            }));
            return;
        }
        let request = wire::Request::Consult {
            region: self.view.region.clone(),
            role: c.role.clone(),
            spike: Box::new(spike.clone()),
            recheck,
        };
        if c.direct
            .try_send(Direct {
                to: master,
                request,
            })
            .is_err()
        {
            self.pending.remove(&seq);
            self.autonomous(spike, "the network queue is full", 0);
        }
    }

    fn answered(&mut self, seq: u64, answer: Result<Answer, String>) {
        let Some((asked, spike, recheck)) = self.pending.remove(&seq) else {
            return;
        };
        let latency_us = asked.elapsed().as_micros() as u64;
        match answer {
            Ok(a) => {
                let (decision, rule, reason, term) =
                    (a.decision, a.rule.clone(), a.reason.clone(), a.term);
                if let (true, Some(after), false) = (a.held, a.recheck_after_ms, recheck) {
                    self.rechecks
                        .push((Instant::now() + Duration::from_millis(after), spike.clone()));
                }
                self.judge.settle(
                    seq,
                    Settled {
                        decision: a.decision,
                        rule: a.rule,
                        reason: a.reason,
                        by: "master".into(),
                        region: Some(a.region),
                        term: Some(a.term),
                        policy: Some(a.policy),
                        held: a.held,
                        latency_us,
                    },
                );
                // A fleet event's own alert stands for every server in it.
                if decision == Decision::Violation
                    && (!rule.starts_with("fleet:") || rule == crate::fleet::UNRESOLVED)
                {
                    tracing::warn!(seq, %rule, %reason, term, "violation (by the region's master)");
                    self.settled_alert(&spike, rule, reason, Some(term));
                }
            }
            Err(why) => self.autonomous(&spike, &why, latency_us),
        }
    }

    /// Raises the alert of a violation.
    fn alert(&self, record: &Record, spike: &Spike, term: Option<u64>) {
        let Some(a) = &self.alerts else {
            return;
        };
        let mut alert = crate::alert::of_violation(&a.node, record, spike);
        alert.term = term;
        if record.rule == crate::fleet::UNRESOLVED {
            alert.action = "unresolved_change".into();
        }
        if let Err(e) = a.to.try_send(Raise(alert)) {
            tracing::error!(seq = record.seq, error = %e, "alert not raised: the alert actor is full or gone");
        }
    }

    /// Raises the alert of a consultation that ended in a violation.
    fn settled_alert(&self, spike: &Spike, rule: String, reason: String, term: Option<u64>) {
        let found = self
            .judge
            .since(spike.seq.saturating_sub(1), 1)
            .into_iter()
            .find(|r| r.seq == spike.seq);
        let Some(mut record) = found else {
            return;
        };
        record.decision = Decision::Violation;
        record.rule = rule;
        record.reason = reason;
        self.alert(&record, spike, term);
    }

    /// No master answered: the conservative default decides, marked autonomous.
    fn autonomous(&mut self, spike: &Spike, why: &str, latency_us: u64) {
        let seq = spike.seq;
        let fallback = self
            .consulting
            .as_ref()
            .map_or(Decision::Violation, |c| c.fallback);
        tracing::warn!(
            seq,
            why,
            decision = fallback.as_str(),
            "consultation failed: deciding autonomously"
        );
        self.judge.settle(
            seq,
            Settled {
                decision: fallback,
                rule: "autonomous".into(),
                reason: format!("no answer from the region's master ({why}): conservative default"),
                by: "autonomous".into(),
                region: None,
                term: None,
                policy: None,
                held: false,
                latency_us,
            },
        );
        if fallback == Decision::Violation {
            self.settled_alert(
                spike,
                "autonomous".into(),
                format!("no answer from the region's master ({why}): conservative default"),
                None,
            );
        }
    }

    fn expire_consultations(&mut self, ctx: &mut Context<Self>) {
        let Some(timeout) = self.consulting.as_ref().map(|c| c.timeout) else {
            return;
        };
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (t, ..))| t.elapsed() >= timeout)
            .map(|(s, _)| *s)
            .collect();
        for seq in late {
            if let Some((_, spike, _)) = self.pending.remove(&seq) {
                self.autonomous(&spike, "timed out", timeout.as_micros() as u64);
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rechecks)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.rechecks = later;
        // Rechecks go first: they have waited a whole window already.
        for (_, spike) in due.into_iter().rev() {
            self.waiting.push_front((spike, true));
        }
        self.pump(ctx);
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

impl Actor for PolicyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        ctx.run_interval(self.reload, |act, _| act.poll());
        ctx.run_interval(Duration::from_millis(200), |act, ctx| {
            act.expire_consultations(ctx)
        });
    }
}

impl Handler<Decide> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: Decide, ctx: &mut Self::Context) {
        let now = unix_ms();
        for spike in &msg.0 {
            let learned = self.knowledge.matching(self.role(), spike).map(|l| {
                (
                    format!("learned:{}", l.id),
                    format!("approved for {} by {}", self.role(), l.approval.by),
                )
            });
            let r = match learned {
                Some((rule, reason)) => self.judge.learned(spike, rule, reason, now),
                None => self.judge.decide(spike, now),
            }
            .clone();
            match r.decision {
                Decision::Violation => {
                    tracing::warn!(seq = r.seq, kind = r.kind.as_str(), subject = %r.subject, rule = %r.rule, reason = %r.reason, "policy violation");
                    self.alert(&r, spike, None);
                }
                Decision::Consult if spike.kind != Kind::Metric => self.consult(spike, ctx),
                _ => {
                    tracing::debug!(seq = r.seq, decision = r.decision.as_str(), rule = %r.rule, "decided");
                }
            }
        }
    }
}

impl Handler<SetConsulting> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: SetConsulting, _: &mut Self::Context) {
        self.consulting = Some(msg.0);
    }
}

impl Handler<SetView> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: SetView, _: &mut Self::Context) {
        self.view = msg.view;
    }
}

impl Handler<ConsultAnswered> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: ConsultAnswered, ctx: &mut Self::Context) {
        self.answered(msg.seq, msg.answer);
        self.pump(ctx);
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
            Ok(true) => tracing::info!(%id, %subject, via = ?msg.via, "pattern learned"),
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
                    since: seq - 1,
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
        let me = node::Id("me".into());
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
            fallback: Decision::Violation,
        }))
        .await
        .expect("delivered");

        // No master known: the conservative default, marked autonomous, at once.
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
                master: Some((node::Id("m".into()), 5)),
            },
            leading: None,
            members: Default::default(),
        };
        addr.send(other).await.expect("delivered");
        addr.send(Decide(vec![user(3, "eve")]))
            .await
            .expect("delivered");
        let asked = direct_rx.recv().await.expect("a request to the master");
        assert_eq!(asked.to, node::Id("m".into()));
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
                since: 0,
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
                since: 2,
                limit: 10,
            })
            .await
            .expect("answered");
        assert_eq!(got[0].decision, Decision::Violation);
        assert_eq!(status.counts.violation, 1);
    }
}
