//! Tests of the alert lifecycle, with a fake clock (Unix milliseconds passed in).

mod engine;
mod escalate;
mod history;
mod lifecycle;
mod parts;
mod props;

use std::collections::BTreeMap;

use super::*;
use crate::alert::Alert;
use crate::spike::Severity;

/// An alert of `action` about `subject` on `host`.
fn alert(host: &str, action: &str, subject: &str, severity: Severity) -> Alert {
    Alert {
        key: format!("{host}|{action}|{subject}"),
        at_unix_ms: 0,
        severity,
        category: "file".into(),
        action: action.into(),
        host: host.into(),
        region: "eu".into(),
        role: "web".into(),
        rule: Some("web.toml:3#etc".into()),
        reason: "changed against policy".into(),
        decision: Some("violation".into()),
        term: None,
        subject: Some(subject.into()),
        details: BTreeMap::new(),
    }
}

fn with_role(mut a: Alert, role: &str) -> Alert {
    a.role = role.into();
    a
}

fn config(toml_text: &str) -> Config {
    toml::from_str(toml_text).expect("config parses")
}

fn engine(toml_text: &str) -> Engine {
    Engine::new(config(toml_text)).expect("config is valid")
}

/// Polls every `step` ms from `from` to `to` (inclusive), collecting what is sent.
fn run(e: &mut Engine, from: u64, to: u64, step: u64) -> Vec<Notification> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= to {
        out.extend(e.poll(t));
        t += step;
    }
    out
}

/// Polls at each time `poll_timeout` names, up to `to`, collecting what is sent.
fn run_timeouts(e: &mut Engine, to: u64) -> Vec<(u64, Notification)> {
    let mut out = Vec::new();
    let mut last = 0;
    while let Some(t) = e.poll_timeout() {
        if t > to {
            break;
        }
        assert!(
            t > last || last == 0,
            "poll_timeout must move on: {t} after {last}"
        );
        last = t;
        out.extend(e.poll(t).into_iter().map(|n| (t, n)));
    }
    out
}

fn ids(n: &Notification) -> Vec<&str> {
    n.alerts.iter().map(|a| a.id.as_str()).collect()
}
