//! `fleetmesh alerts list|ack|resolve` and `fleetmesh silence add|list|expire`: the alert
//! lifecycle's operator actions from the command line, through a node's API (see
//! `crate::api`'s alert endpoints). Every failure names what failed: the flag, the node's
//! answer, or the request.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use fleetmesh_actors::alerting::labels::{Matcher, Op};
use fleetmesh_actors::alerting::rfc3339;
use fleetmesh_actors::alerting::silence::am;
use serde_json::Value;

/// Where the node's API is and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct Api {
    /// The node's API: host:port (HTTP), or https://host:port.
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub api: String,
    /// Trust only these certificates (PEM) for an https:// API.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The API token's file (`api.token_file`), for a node whose API listens beyond
    /// loopback.
    #[arg(long, env = "FLEETMESH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List the latest alerts with their id and state.
    List {
        #[command(flatten)]
        api: Api,
        /// Only alerts in this state: firing, acknowledged, silenced, inhibited, resolved.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert: its escalation stops until the acknowledgement times out.
    Ack {
        /// The alert's id (`fleetmesh alerts list`).
        id: String,
        #[command(flatten)]
        api: Api,
        /// Who acknowledges.
        #[arg(long)]
        by: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Mark an alert resolved (a violation dealt with).
    Resolve {
        id: String,
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence the alerts that match every --matcher, from --starts (default now) for
    /// --duration or until --ends.
    Add {
        #[command(flatten)]
        api: Api,
        /// `name op value`, op one of = != =~ !~ (repeat; every one must match).
        #[arg(long = "matcher", required = true)]
        matchers: Vec<String>,
        /// How long it holds: 90m, 2h, 1d ...
        #[arg(long, conflicts_with = "ends")]
        duration: Option<String>,
        /// When it starts (RFC 3339); default now.
        #[arg(long)]
        starts: Option<String>,
        /// When it ends (RFC 3339).
        #[arg(long)]
        ends: Option<String>,
        /// Who sets it.
        #[arg(long)]
        by: String,
        /// Why (a change ticket, a planned maintenance).
        #[arg(long)]
        comment: String,
    },
    /// List the silences.
    List {
        #[command(flatten)]
        api: Api,
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire {
        id: String,
        #[command(flatten)]
        api: Api,
    },
}

/// A failure: `Usage` for a bad flag (exit 2), `Runtime` for the rest (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

/// The body of `POST /api/v1/silences` for these flags, at `now_ms`.
pub fn silence_body(
    matchers: &[String],
    duration: Option<&str>,
    starts: Option<&str>,
    ends: Option<&str>,
    by: &str,
    comment: &str,
    now_ms: u64,
) -> Result<am::Postable, Error> {
    let matchers = matchers
        .iter()
        .map(|text| {
            let m = Matcher::parse(text)
                .map_err(|e| Error::Usage(format!("--matcher {text:?}: {e}")))?;
            Ok(am::Matcher {
                name: m.name.clone(),
                value: m.value.clone(),
                is_regex: matches!(m.op, Op::Re | Op::NotRe),
                is_equal: matches!(m.op, Op::Eq | Op::Re),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let time = |flag: &str, text: &str| {
        rfc3339::parse(text).ok_or_else(|| {
            Error::Usage(format!(
                "{flag} {text:?}: expected an RFC 3339 date-time (2026-12-01T08:00:00Z)"
            ))
        })
    };
    let start = match starts {
        Some(s) => time("--starts", s)?,
        None => now_ms,
    };
    let end = match (duration, ends) {
        (_, Some(e)) => time("--ends", e)?,
        (Some(d), None) => {
            let d = humantime::parse_duration(d)
                .map_err(|e| Error::Usage(format!("--duration {d:?}: {e} (e.g. 90m, 2h, 1d)")))?;
            start.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
        (None, None) => {
            return Err(Error::Usage(
                "say how long the silence holds: --duration (e.g. 2h) or --ends".into(),
            ));
        }
    };
    if by.trim().is_empty() {
        return Err(Error::Usage("--by must name who sets the silence".into()));
    }
    Ok(am::Postable {
        id: None,
        matchers,
        starts_at: rfc3339::format(start),
        ends_at: rfc3339::format(end),
        created_by: by.to_string(),
        comment: comment.to_string(),
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Sends one request to the node and reads its JSON answer; a refusal is an error with
/// the node's own words.
pub(crate) fn call(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Error> {
    let token = match &api.token_file {
        Some(p) => Some(
            crate::access::Token::read(p)
                .map_err(|e| Error::Usage(format!("--token-file: {e}")))?,
        ),
        None => None,
    };
    let client = crate::status::client(
        token.as_ref(),
        api.ca_file.as_deref(),
        Duration::from_secs(10),
    )
    .map_err(Error::Usage)?;
    let url = crate::status::url(&api.api, path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    rt.block_on(async {
        let mut request = client.request(method.clone(), &url);
        if let Some(b) = &body {
            request = request.json(b);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| Error::Runtime(format!("{method} {url}: {}", crate::alert::chain(&e))))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| Error::Runtime(format!("{method} {url}: {e}")))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            let why = value["error"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            Err(Error::Runtime(format!("{method} {url}: {status}: {why}")))
        }
    })
}

/// A table of alerts: id, state, severity, action, node, subject, count, last raised.
pub fn alerts_table(view: &Value) -> String {
    let mut out = format!(
        "{:<32}  {:<12}  {:<8}  {:<28}  {:<16}  {:>5}  SUBJECT\n",
        "ID", "STATE", "SEVERITY", "ACTION", "NODE", "COUNT"
    );
    for a in view["alerts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
        out.push_str(&format!(
            "{:<32}  {:<12}  {:<8}  {:<28}  {:<16}  {:>5}  {}\n",
            s("id"),
            s("state"),
            s("severity"),
            s("action"),
            s("host"),
            a["count"].as_u64().unwrap_or(0),
            s("subject"),
        ));
    }
    out
}

/// A table of silences: id, state, ends, created by, matchers, comment.
pub fn silences_table(list: &Value) -> String {
    let mut out = format!(
        "{:<32}  {:<8}  {:<24}  {:<12}  MATCHERS / COMMENT\n",
        "ID", "STATE", "ENDS", "BY"
    );
    for s in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        let matchers: Vec<String> = s["matchers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let op = match (m["isRegex"].as_bool(), m["isEqual"].as_bool()) {
                    (Some(true), Some(false)) => "!~",
                    (Some(true), _) => "=~",
                    (_, Some(false)) => "!=",
                    _ => "=",
                };
                format!(
                    "{}{op}{:?}",
                    m["name"].as_str().unwrap_or(""),
                    m["value"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.push_str(&format!(
            "{:<32}  {:<8}  {:<24}  {:<12}  {} / {}\n",
            s["id"].as_str().unwrap_or("-"),
            s["status"]["state"].as_str().unwrap_or("-"),
            s["endsAt"].as_str().unwrap_or("-"),
            s["createdBy"].as_str().unwrap_or("-"),
            matchers.join(", "),
            s["comment"].as_str().unwrap_or(""),
        ));
    }
    out
}

pub fn alerts(cmd: AlertsCommand) -> Result<String, Error> {
    match cmd {
        AlertsCommand::List {
            api,
            state,
            limit,
            json,
        } => {
            let mut path = format!("/api/v1/alerts?limit={limit}");
            if let Some(s) = state {
                path.push_str(&format!("&state={s}"));
            }
            let view = call(&api, reqwest::Method::GET, &path, None)?;
            Ok(if json {
                serde_json::to_string_pretty(&view).unwrap_or_default() + "\n"
            } else {
                alerts_table(&view)
            })
        }
        AlertsCommand::Ack {
            id,
            api,
            by,
            comment,
        } => {
            if by.trim().is_empty() {
                return Err(Error::Usage("--by must name who acknowledges".into()));
            }
            let ack = call(
                &api,
                reqwest::Method::POST,
                &format!("/api/v1/alerts/{id}/ack"),
                Some(serde_json::json!({ "by": by, "comment": comment })),
            )?;
            let until = ack["until_unix_ms"].as_u64().map(rfc3339::format);
            Ok(format!(
                "acknowledged {id} as {by}, until {}\n",
                until.as_deref().unwrap_or("?")
            ))
        }
        AlertsCommand::Resolve { id, api, by } => {
            call(
                &api,
                reqwest::Method::POST,
                &format!("/api/v1/alerts/{id}/resolve"),
                Some(serde_json::json!({ "by": by })),
            )?;
            Ok(format!("resolved {id}\n"))
        }
    }
}

pub fn silence(cmd: SilenceCommand) -> Result<String, Error> {
    match cmd {
        SilenceCommand::Add {
            api,
            matchers,
            duration,
            starts,
            ends,
            by,
            comment,
        } => {
            let body = silence_body(
                &matchers,
                duration.as_deref(),
                starts.as_deref(),
                ends.as_deref(),
                &by,
                &comment,
                now_ms(),
            )?;
            let until = body.ends_at.clone();
            let created = call(
                &api,
                reqwest::Method::POST,
                "/api/v1/silences",
                Some(serde_json::to_value(&body).unwrap_or_default()),
            )?;
            Ok(format!(
                "{}\nsilenced until {until}\n",
                created["silenceID"].as_str().unwrap_or("?")
            ))
        }
        SilenceCommand::List { api, json } => {
            let list = call(&api, reqwest::Method::GET, "/api/v1/silences", None)?;
            Ok(if json {
                serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
            } else {
                silences_table(&list)
            })
        }
        SilenceCommand::Expire { id, api } => {
            call(
                &api,
                reqwest::Method::DELETE,
                &format!("/api/v1/silences/{id}"),
                None,
            )?;
            Ok(format!("expired {id}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_flags_become_alertmanagers_json_and_bad_ones_are_named() {
        let b = silence_body(
            &["subject=ops2".into(), "severity=~\"high|critical\"".into()],
            Some("2h"),
            None,
            None,
            "ops",
            "planned",
            1_000_000,
        )
        .expect("valid");
        let v = serde_json::to_value(&b).expect("json");
        assert_eq!(v["matchers"][0]["name"], "subject");
        assert_eq!(v["matchers"][0]["value"], "ops2");
        assert_eq!(v["matchers"][0]["isRegex"], false);
        assert_eq!(v["matchers"][1]["isRegex"], true);
        assert_eq!(v["matchers"][1]["value"], "high|critical");
        assert_eq!(v["startsAt"], rfc3339::format(1_000_000));
        assert_eq!(v["endsAt"], rfc3339::format(1_000_000 + 7_200_000));
        assert_eq!(v["createdBy"], "ops");

        let e = |r: Result<am::Postable, Error>| match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        };
        let m = e(silence_body(
            &["subject".into()],
            Some("1h"),
            None,
            None,
            "o",
            "",
            0,
        ));
        assert!(m.contains("--matcher \"subject\""), "{m}");
        let m = e(silence_body(
            &["a=b".into()],
            Some("soon"),
            None,
            None,
            "o",
            "",
            0,
        ));
        assert!(m.contains("--duration \"soon\""), "{m}");
        let m = e(silence_body(&["a=b".into()], None, None, None, "o", "", 0));
        assert!(m.contains("--duration"), "{m}");
        let m = e(silence_body(
            &["a=b".into()],
            None,
            None,
            Some("tomorrow"),
            "o",
            "",
            0,
        ));
        assert!(m.contains("--ends"), "{m}");
        let b = silence_body(
            &["a!~x.*".into()],
            None,
            Some("2026-12-01T08:00:00Z"),
            Some("2026-12-01T10:00:00Z"),
            "o",
            "",
            0,
        )
        .expect("valid");
        assert_eq!(
            (b.starts_at.as_str(), b.ends_at.as_str()),
            ("2026-12-01T08:00:00.000Z", "2026-12-01T10:00:00.000Z")
        );
        assert!(b.matchers[0].is_regex && !b.matchers[0].is_equal);
    }
}
