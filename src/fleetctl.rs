//! `fleetmesh fleet`, `fleetmesh twin NODE` and `fleetmesh drift`: the fleet as state from
//! the command line, through any node's API (`/api/v1/census`, `/api/v1/twins`,
//! `/api/v1/drift`). Each prints a table, or the API's JSON with `--json`.

use clap::Args;
use serde_json::Value;

use crate::alertctl::{Api, Error, call};

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub api: Api,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TwinArgs {
    /// A peer id, a name, or region/name.
    pub node: String,
    #[command(flatten)]
    pub api: Api,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub api: Api,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    /// Only records of this severity: low, medium, high.
    #[arg(long)]
    pub severity: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Regions with their masters, terms, members by state and drift counts.
pub fn fleet(args: FleetArgs) -> Result<String, Error> {
    let census = call(&args.api, reqwest::Method::GET, "/api/v1/census", None)?;
    let drift = call(&args.api, reqwest::Method::GET, "/api/v1/drift", None)?;
    if args.json {
        return Ok(pretty(
            &serde_json::json!({"census": census, "drift": drift}),
        ));
    }
    Ok(fleet_table(&census, &drift))
}

pub fn fleet_table(census: &Value, drift: &Value) -> String {
    let mut out = format!(
        "{:<16}  {:<24}  {:>5}  {:>7}  {:<32}  {:>9}  {:<20}  {:>8}\n",
        "REGION", "MASTER", "TERM", "MEMBERS", "BY STATE", "DRIFT", "OPEN ALERTS", "AGE"
    );
    let empty = Vec::new();
    for r in census["regions"].as_array().unwrap_or(&empty) {
        let region = text(&r["region"]);
        let master = r["master"].as_str().unwrap_or("none");
        let master_name = r["members"]
            .as_array()
            .and_then(|m| m.iter().find(|l| l["peer"] == r["master"]))
            .and_then(|l| l["name"].as_str())
            .unwrap_or(master);
        let counts = r["counts"].as_object();
        let members: u64 = counts.map_or(0, |c| c.values().filter_map(Value::as_u64).sum());
        let by_state = counts.map_or_else(String::new, |c| {
            c.iter()
                .map(|(k, v)| format!("{k} {}", text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let d = drift["regions"]
            .as_array()
            .and_then(|rs| rs.iter().find(|d| d["region"] == r["region"]));
        let drift_text = d.and_then(|d| d["counts"].as_object()).map_or_else(
            || "-".to_string(),
            |c| {
                format!(
                    "{}/{}/{}",
                    text(&c["high"]),
                    text(&c["medium"]),
                    text(&c["low"])
                )
            },
        );
        let alerts = r["alerts"].as_object().map_or_else(String::new, |c| {
            c.iter()
                .map(|(k, v)| format!("{k} {}", text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        });
        out += &format!(
            "{:<16}  {:<24}  {:>5}  {:>7}  {:<32}  {:>9}  {:<20}  {:>7}s\n",
            region,
            master_name,
            text(&r["term"]),
            members,
            by_state,
            drift_text,
            if alerts.is_empty() {
                "-".into()
            } else {
                alerts
            },
            r["age_ms"].as_u64().unwrap_or(0) / 1000
        );
    }
    out += "DRIFT is high/medium/low open records.\n";
    out
}

/// One node's twin, section by section.
pub fn twin(args: TwinArgs) -> Result<String, Error> {
    let path = format!("/api/v1/twins/{}", args.node);
    let t = call(&args.api, reqwest::Method::GET, &path, None)?;
    if args.json {
        return Ok(pretty(&t));
    }
    Ok(twin_text(&t))
}

pub fn twin_text(t: &Value) -> String {
    let id = &t["identity"]["value"];
    let host = &t["host"]["value"];
    let sw = &t["software"]["value"];
    let pk = &t["packages"]["value"];
    let ob = &t["observed"]["value"];
    let mut out = String::new();
    out += &format!(
        "{} ({}) region {} role {} incarnation {}  version {}\n",
        text(&id["name"]),
        text(&id["peer"]),
        text(&id["region"]),
        text(&id["role"]),
        text(&id["incarnation"]),
        text(&t["version"])
    );
    out += &format!(
        "status {}  connectivity {}  backlog {}  drift score {}\n",
        text(&t["status"]),
        text(&t["connectivity"]),
        text(&t["backlog"]),
        if t["desired"] == Value::Bool(true) {
            text(&t["drift_score"])
        } else {
            "- (no desired state)".into()
        }
    );
    let health = &t["health"]["value"];
    let reasons: Vec<String> = health["reasons"]
        .as_array()
        .map(|r| r.iter().map(text).collect())
        .unwrap_or_default();
    out += &format!(
        "health    {}{}\n",
        text(&health["state"]),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", reasons.join("; "))
        }
    );
    out += &format!(
        "host      {}  kernel {}  os {}  cpus {}  memory {}  {} {} serial {}\n",
        text(&host["hostname"]),
        text(&host["kernel"]),
        text(&host["os"]),
        text(&host["cpus"]),
        text(&host["memory_bytes"]),
        text(&host["vendor"]),
        text(&host["product"]),
        text(&host["serial"])
    );
    out += &format!(
        "software  fleetmesh {}  exe sha256 {}  sbom sha256 {} ({} components)\n",
        text(&sw["version"]),
        text(&sw["exe_sha256"]),
        text(&sw["sbom_sha256"]),
        text(&sw["sbom_components"])
    );
    out += &format!(
        "packages  {} from {}  digest {}\n",
        text(&pk["count"]),
        text(&pk["source"]),
        text(&pk["digest"])
    );
    out += &format!(
        "policy    {}\nports     {}\n",
        text(&t["policy"]["value"]["version"]),
        text(&ob["ports"])
    );
    if let Some(files) = ob["files"].as_object() {
        for (path, fact) in files {
            out += &format!("file      {path}  {}\n", fact_text(fact));
        }
    }
    if let Some(services) = ob["services"].as_object() {
        for (name, state) in services {
            out += &format!("service   {name}  {}\n", text(state));
        }
    }
    let empty = Vec::new();
    let changes = t["changes"]["value"].as_array().unwrap_or(&empty);
    out += &format!("last {} changes:\n", changes.len());
    for c in changes.iter().rev().take(10) {
        out += &format!(
            "  #{:<6} {:<8} {:<8} {:<8} {}\n",
            text(&c["seq"]),
            text(&c["kind"]),
            text(&c["change"]),
            text(&c["severity"]),
            text(&c["subject"])
        );
    }
    out
}

fn fact_text(fact: &Value) -> String {
    match fact {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {}", text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => text(other),
    }
}

/// Drift records, fleet-wide.
pub fn drift(args: DriftArgs) -> Result<String, Error> {
    let mut query = Vec::new();
    for (k, v) in [
        ("region", &args.region),
        ("role", &args.role),
        ("severity", &args.severity),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={v}"));
        }
    }
    let path = if query.is_empty() {
        "/api/v1/drift".to_string()
    } else {
        format!("/api/v1/drift?{}", query.join("&"))
    };
    let d = call(&args.api, reqwest::Method::GET, &path, None)?;
    if args.json {
        return Ok(pretty(&d));
    }
    Ok(drift_table(&d))
}

pub fn drift_table(d: &Value) -> String {
    let mut out = format!(
        "{:<12}  {:<16}  {:<10}  {:<8}  {:<36}  {:<24}  DESIRED\n",
        "REGION", "NODE", "ROLE", "SEVERITY", "SUBJECT", "ACTUAL"
    );
    let empty = Vec::new();
    let records = d["records"].as_array().unwrap_or(&empty);
    for r in records {
        out += &format!(
            "{:<12}  {:<16}  {:<10}  {:<8}  {:<36}  {:<24}  {}\n",
            text(&r["region"]),
            text(&r["name"]),
            text(&r["role"]),
            text(&r["severity"]),
            text(&r["subject"]),
            text(&r["actual"]),
            text(&r["desired"])
        );
    }
    let omitted: u64 = d["regions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|r| r["omitted"].as_u64())
        .sum();
    out += &format!("{} open records", records.len());
    if omitted > 0 {
        out += &format!(" shown, {omitted} more (other regions send their most severe)");
    }
    out += "\n";
    out
}

#[derive(Debug, Args)]
pub struct PhaseArgs {
    /// A peer id, a name, or region/name, of the node's own region.
    pub node: String,
    /// provisioning, active, maintenance or decommissioning.
    pub phase: String,
    #[command(flatten)]
    pub api: Api,
    /// Who sets it.
    #[arg(long, default_value = "cli")]
    pub by: String,
}

/// Moves a node to a lifecycle phase through its region's log.
pub fn phase(args: PhaseArgs) -> Result<String, Error> {
    let path = format!("/api/v1/twins/{}/phase", args.node);
    let body = serde_json::json!({"phase": args.phase, "by": args.by});
    let v = call(&args.api, reqwest::Method::POST, &path, Some(body))?;
    Ok(format!(
        "{}: {} -> {} (handed to the region's log; `fleetmesh twin {}` shows it once committed)\n",
        text(&v["node"]),
        text(&v["from"]),
        text(&v["phase"]),
        args.node
    ))
}
