//! A notification as text for people: the subject line and the alert list that the email
//! and Slack receivers show. Pure functions of the notification; no I/O here.

use fleetmesh_actors::alerting::{Notification, Notified, Reason, rfc3339};

/// `firing` while one of `n`'s alerts is open, else `resolved` (as [`super::payload`]
/// says it).
pub fn status(n: &Notification) -> &'static str {
    if n.alerts.iter().any(|a| a.status.is_open()) {
        "firing"
    } else {
        "resolved"
    }
}

/// The highest severity label among `n`'s open alerts (`critical` > `high` > `medium` >
/// `low` > `info`); `None` when none is open.
pub fn top_severity(n: &Notification) -> Option<&str> {
    const ORDER: [&str; 5] = ["critical", "high", "medium", "low", "info"];
    let open: Vec<&str> = n
        .alerts
        .iter()
        .filter(|a| a.status.is_open())
        .map(|a| label(a, "severity"))
        .collect();
    ORDER
        .into_iter()
        .find(|s| open.contains(s))
        .or_else(|| (!open.is_empty()).then_some("info"))
}

/// The one-line title: `[FIRING:3] unauthorized_access region=eu` for a group (the count
/// is of open alerts, or of resolved ones once none is open), the same with
/// `(escalation <policy>, step <n>)` after it for an escalation step (alerts left out by
/// the bound are not counted: the body says how many), and
/// `[HELD:5] receiver <name>: budget spent` for a budget summary.
pub fn title(n: &Notification) -> String {
    if let Reason::Summary { held, .. } = &n.reason {
        return format!("[HELD:{held}] receiver {}: budget spent", n.receiver);
    }
    let state = status(n);
    let count = n
        .alerts
        .iter()
        .filter(|a| a.status.is_open() == (state == "firing"))
        .count();
    let mut out = format!("[{}:{count}]", state.to_uppercase());
    if let Some(name) = n.group_labels.get("alertname") {
        out.push(' ');
        out.push_str(name);
    }
    for (k, v) in n.group_labels.iter().filter(|(k, _)| *k != "alertname") {
        out.push_str(&format!(" {k}={v}"));
    }
    if n.group_labels.is_empty()
        && let Some(a) = n.alerts.first()
    {
        out.push(' ');
        out.push_str(label(a, "alertname"));
    }
    if let Reason::Escalation { policy, step, .. } = &n.reason {
        out.push_str(&format!(" (escalation {policy}, step {})", step + 1));
    }
    out
}

/// The body's lines: one block per alert (state and summary, then node, severity and
/// since when, then why), how many alerts were left out, and for a budget summary how many
/// notifications are held and of which groups.
pub fn lines(n: &Notification) -> Vec<String> {
    let mut out = Vec::new();
    if let Reason::Summary { held, groups } = &n.reason {
        out.push(format!(
            "{held} notification(s) for receiver {} are held back: its budget (rate_per_minute) is spent; they are sent once it frees.",
            n.receiver
        ));
        if !groups.is_empty() {
            out.push(format!("Groups: {}", groups.join(", ")));
        }
        return out;
    }
    for a in &n.alerts {
        out.extend(alert(a));
    }
    if n.omitted > 0 {
        out.push(format!(
            "{} more alert(s) of this group are not listed here.",
            n.omitted
        ));
    }
    out
}

/// One alert's lines (see [`lines`]).
pub fn alert(a: &Notified) -> Vec<String> {
    let summary = a
        .annotations
        .get("summary")
        .cloned()
        .unwrap_or_else(|| a.key.clone());
    let mut out = vec![format!("[{}] {summary}", a.status.name())];
    let mut facts = Vec::new();
    for k in ["node", "severity", "region", "role"] {
        let v = label(a, k);
        if !v.is_empty() {
            facts.push(format!("{k} {v}"));
        }
    }
    facts.push(format!("since {}", rfc3339::format(a.starts_at_unix_ms)));
    if let Some(end) = a.ends_at_unix_ms {
        facts.push(format!("ended {}", rfc3339::format(end)));
    }
    out.push(format!("  {}", facts.join(", ")));
    if let Some(reason) = a.annotations.get("reason") {
        out.push(format!("  why: {reason}"));
    }
    out.push(format!("  id {}", a.id));
    out
}

/// Label `k` of `a`, empty if absent.
pub fn label<'a>(a: &'a Notified, k: &str) -> &'a str {
    a.labels.get(k).map(String::as_str).unwrap_or("")
}
