//! `fleetmesh status`: asks a running node's API for its view and prints it.

use std::time::Duration;

use crate::api::{NodeView, PeerEntry};

/// Why the node's view could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the node API at {api}: {reason} (is the node running? see --api)")]
    Unreachable { api: String, reason: String },
    #[error("the node API at {api} answered {what}")]
    BadAnswer { api: String, what: String },
    #[error("cannot start: {0}")]
    Runtime(String),
}

/// A client of a node's API: `token` sent as `Authorization: Bearer` (an API beyond
/// loopback asks for it); `ca` (PEM) the only certificates trusted for `https://` APIs
/// (else the system's).
pub fn client(
    token: Option<&crate::access::Token>,
    ca: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.secret()))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers);
    if let Some(path) = ca {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca-file {}: no certificate in it",
                path.display()
            ));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The URL of `path` on the API at `api`: `host:port` (plain HTTP) or a base URL
/// (`https://host:port`).
pub fn url(api: &str, path: &str) -> String {
    if api.contains("://") {
        format!("{}{path}", api.trim_end_matches('/'))
    } else {
        format!("http://{api}{path}")
    }
}

/// Fetches `/api/v1/node`, `/api/v1/peers` and `/api/v1/region` from `api` (see [`url`]).
pub async fn fetch(
    api: &str,
    token: Option<&crate::access::Token>,
    ca: Option<&std::path::Path>,
) -> Result<(NodeView, Vec<PeerEntry>, serde_json::Value), Error> {
    let client = client(token, ca, Duration::from_secs(5)).map_err(Error::Runtime)?;
    let node = get(&client, api, "/api/v1/node").await?;
    let peers = get(&client, api, "/api/v1/peers").await?;
    let region = get(&client, api, "/api/v1/region").await?;
    Ok((node, peers, region))
}

/// The region's master as this node sees it, or why there is none, in one line.
pub fn master_line(region: &serde_json::Value) -> String {
    let name = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    if let Some(m) = region.get("master").filter(|m| !m.is_null()) {
        return format!(
            "{} (term {})",
            name(&m["name"]),
            region["term"].as_u64().unwrap_or(0)
        );
    }
    let why = &region["no_master_reason"];
    let text = match why["reason"].as_str() {
        Some("waiting_for_founders") => format!(
            "waiting for founders: {} of {} eligible members see each other (region.bootstrap_expect)",
            why["have"].as_u64().unwrap_or(0),
            why["expect"].as_u64().unwrap_or(0)
        ),
        Some("electing") => "electing".to_string(),
        Some("quorum_lost") => format!(
            "quorum lost: voters gone: {}",
            why["missing_voters"]
                .as_array()
                .map(|v| v.iter().map(name).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
        Some("duplicate_name") => format!(
            "refused: the name {} belongs to peer {} (rename this node)",
            name(&why["name"]),
            name(&why["holder"])
        ),
        Some("recovering") => "recovering: the survivors of a recovery elect a master".to_string(),
        Some("stopped") => format!("consensus stopped: {}", name(&why["why"])),
        _ => "unknown".to_string(),
    };
    format!("none: {text}")
}

async fn get<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    api: &str,
    path: &str,
) -> Result<T, Error> {
    let url = url(api, path);
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| Error::Unreachable {
            api: api.to_string(),
            reason: crate::alert::chain(&e),
        })?;
    if !resp.status().is_success() {
        return Err(Error::BadAnswer {
            api: api.to_string(),
            what: if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                format!(
                    "{} for {path}: give its API token with --token-file",
                    resp.status()
                )
            } else {
                format!("{} for {path}", resp.status())
            },
        });
    }
    resp.json().await.map_err(|e| Error::BadAnswer {
        api: api.to_string(),
        what: format!("unreadable JSON for {path}: {e}"),
    })
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Summary,
}

pub fn run(
    api: &str,
    token: Option<&crate::access::Token>,
    ca: Option<&std::path::Path>,
    format: Format,
) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let (node, peers, region) = rt.block_on(fetch(api, token, ca))?;
    match format {
        Format::Json => {
            let v = serde_json::json!({ "node": node, "peers": peers, "region": region });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Table => print!("master  {}\n{}", master_line(&region), table(&node, &peers)),
        Format::Summary => println!("{}", summary(&node, &region)),
    }
    Ok(())
}

/// One line: `name region role connected=N alive=N ...` (every status, zeros included),
/// then `master=<name>` (`-` while none is known) and `term=N`.
pub fn summary(node: &NodeView, region: &serde_json::Value) -> String {
    let mut line = format!(
        "{} region={} role={} connected={}",
        node.name, node.region, node.role, node.connected_peers
    );
    for (status, n) in &node.peers {
        line.push_str(&format!(" {status}={n}"));
    }
    let master = region["master"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("-");
    line.push_str(&format!(
        " master={master} term={}",
        region["term"].as_u64().unwrap_or(0)
    ));
    line
}

/// The human-readable view.
pub fn table(node: &NodeView, peers: &[PeerEntry]) -> String {
    let mut out = format!(
        "node    {} ({})\nregion  {}   role {}   uptime {}   connected peers {}\n",
        node.name,
        node.peer_id,
        node.region,
        node.role,
        human(node.uptime_ms),
        node.connected_peers,
    );
    let counts: Vec<String> = node
        .peers
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    out.push_str(&format!(
        "peers   {}\n\n",
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        }
    ));
    let rows: Vec<[String; 6]> = peers
        .iter()
        .map(|p| {
            [
                p.name.clone().unwrap_or_else(|| "?".into()),
                p.region.clone().unwrap_or_else(|| "?".into()),
                p.role.clone().unwrap_or_else(|| "?".into()),
                p.status.clone(),
                format!("{} ago", human(p.last_seen_ms)),
                p.peer_id.clone(),
            ]
        })
        .collect();
    let head = ["NAME", "REGION", "ROLE", "STATUS", "LAST SEEN", "PEER ID"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(&format!("{:<w$}  ", c, w = widths[i]));
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&head.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}
