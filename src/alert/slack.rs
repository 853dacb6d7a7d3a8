//! The `slack` receiver: each notification becomes one message POSTed to a Slack
//! incoming webhook (or anything that takes the same JSON: Mattermost, Rocket.Chat).
//! [`body`] builds the message; the POST is the webhook sink's ([`super::post_each`]).

use fleetmesh_actors::alerting::{Notification, Reason};
use serde_json::{Value, json};

use super::text;

/// The colour of a message's attachment: by the highest severity of the open alerts,
/// green once all are resolved, grey for a budget summary.
pub fn colour(n: &Notification) -> &'static str {
    if n.is_summary() {
        return "#808080";
    }
    match text::top_severity(n) {
        Some("critical") => "#8b0000",
        Some("high") => "#d00000",
        Some("medium") => "#f2a100",
        Some(_) => "#439fe0",
        None => "#2eb886",
    }
}

/// The message for `n`: `text` is the title ([`text::title`]); one attachment, coloured
/// by [`colour`], lists the alerts ([`text::lines`]), the number left out and, for a
/// budget summary, how many notifications are held.
pub fn body(n: &Notification) -> Value {
    let title = escape(&text::title(n));
    let lines = escape(&text::lines(n).join("\n"));
    let mut fields =
        vec![json!({"title": "Receiver", "value": escape(&n.receiver), "short": true})];
    match &n.reason {
        Reason::Summary { held, .. } => {
            fields.push(json!({"title": "Held", "value": held.to_string(), "short": true}));
        }
        _ => {
            fields.push(
                json!({"title": "Alerts", "value": n.alerts.len().to_string(), "short": true}),
            );
            if n.omitted > 0 {
                fields.push(
                    json!({"title": "Not listed", "value": n.omitted.to_string(), "short": true}),
                );
            }
        }
    }
    json!({
        "text": title,
        "attachments": [{
            "color": colour(n),
            "fallback": format!("{title}\n{lines}"),
            "text": lines,
            "fields": fields,
            "ts": n.at_unix_ms / 1000,
        }],
    })
}

/// Slack reads `&`, `<` and `>` in message text as markup: written as entities, an
/// alert's text (a file name, a user name) is shown as it is.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::{notification_of, raised};
    use fleetmesh_actors::spike::Severity;

    #[test]
    fn a_group_is_one_message_listing_its_alerts_coloured_by_severity() {
        let n = notification_of(
            "chat",
            vec![
                raised("a", Severity::High, "deploy"),
                raised("b", Severity::Medium, "<script>&"),
            ],
        );
        let v = body(&n);
        assert_eq!(v["text"], "[FIRING:2] policy_violation region=r", "{v}");
        let a = &v["attachments"][0];
        assert_eq!(a["color"], "#d00000", "high is the top severity: {v}");
        let text = a["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("[firing] policy_violation on h: deploy"),
            "{text}"
        );
        assert!(
            text.contains("policy_violation on h: &lt;script&gt;&amp;"),
            "escaped: {text}"
        );
        assert!(text.contains("node h, severity high"), "{text}");
        assert!(text.contains("why: why"), "{text}");
        assert_eq!(a["fields"][1]["value"], "2");
        assert_eq!(
            a["fields"].as_array().map(Vec::len),
            Some(2),
            "nothing left out: {v}"
        );

        let mut more = n.clone();
        more.omitted = 7;
        let v = body(&more);
        assert!(
            v["attachments"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("7 more alert(s)")),
            "{v}"
        );
        assert_eq!(v["attachments"][0]["fields"][2]["value"], "7");

        let mut resolved = n.clone();
        for a in &mut resolved.alerts {
            a.status = fleetmesh_actors::alerting::lifecycle::Status::Resolved { at_unix_ms: 9 };
        }
        let v = body(&resolved);
        assert_eq!(
            (&v["text"], &v["attachments"][0]["color"]),
            (
                &"[RESOLVED:2] policy_violation region=r".into(),
                &"#2eb886".into()
            )
        );
        let critical = notification_of("chat", vec![raised("c", Severity::Critical, "x")]);
        assert_eq!(body(&critical)["attachments"][0]["color"], "#8b0000");
    }

    #[test]
    fn a_budget_summary_says_how_many_are_held() {
        let mut n = notification_of("chat", vec![raised("a", Severity::High, "x")]);
        n.reason = Reason::Summary {
            held: 12,
            groups: vec!["g1".into(), "escalation:night".into()],
        };
        n.alerts.clear();
        let v = body(&n);
        assert_eq!(v["text"], "[HELD:12] receiver chat: budget spent", "{v}");
        let a = &v["attachments"][0];
        assert_eq!(a["color"], "#808080");
        assert_eq!(
            a["fields"][1],
            json!({"title": "Held", "value": "12", "short": true})
        );
        let text = a["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("12 notification(s)") && text.contains("g1, escalation:night"),
            "{text}"
        );
    }
}
