//! The policy actor: decides every spike the encoder hands it with the node's
//! [`Judge`], logs violations, answers the API, and polls the policy file for edits.
//!
//! Reading the file is the node's business (a [`ReadPolicy`] closure); this actor only
//! offers what was read to the judge every `reload` interval. A refused edit is logged
//! once and shown in the status; the last good policy keeps deciding.

use std::time::Duration;

use actix::prelude::*;

use crate::actor::alert::Raise;
use crate::actor::unix_ms;
use crate::policy::judge::{Judge, Record, Reload, Status};
use crate::policy::{Decision, Error};
use crate::spike::Spike;

/// Reads the policy file: its name (as rule references show it) and its text.
pub type ReadPolicy = Box<dyn FnMut() -> Result<(String, String), Error>>;

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
    pub node: crate::node::Info,
}

/// The policy in force, the last refusal and the counts.
#[derive(Debug, Message)]
#[rtype(result = "Status")]
pub struct GetPolicy;

pub struct PolicyActor {
    judge: Judge,
    read: ReadPolicy,
    reload: Duration,
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
            alerts: None,
        }
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
    }
}

impl Handler<Decide> for PolicyActor {
    type Result = ();

    fn handle(&mut self, msg: Decide, _: &mut Self::Context) {
        let now = unix_ms();
        for spike in &msg.0 {
            let r = self.judge.decide(spike, now);
            if r.decision == Decision::Violation {
                tracing::warn!(seq = r.seq, kind = r.kind.as_str(), subject = %r.subject, rule = %r.rule, reason = %r.reason, "policy violation");
                if let Some(a) = &self.alerts {
                    let raised =
                        a.to.try_send(Raise(crate::alert::of_violation(&a.node, r, spike)));
                    if let Err(e) = raised {
                        tracing::error!(seq = r.seq, error = %e, "alert not raised: the alert actor is full or gone");
                    }
                }
            } else {
                tracing::debug!(seq = r.seq, decision = r.decision.as_str(), rule = %r.rule, "decided");
            }
        }
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
    use crate::spike::{Change, Kind, Severity};
    use std::sync::{Arc, Mutex};

    fn user(seq: u64, name: &str) -> Spike {
        Spike {
            origin: node::Id("me".into()),
            seq,
            at_unix_ms: 0,
            kind: Kind::User,
            change: Change::Added,
            subject: name.into(),
            before: None,
            after: None,
            severity: Severity::Info,
            layers: Vec::new(),
            label: String::new(),
            fields: Default::default(),
        }
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
