//! Node settings: `config/default.toml` (compiled in), then the node's file, then the
//! environment (`FLEETMESH__SECTION__KEY`), then CLI flags.
//!
//! This module owns loading and validation only. Every problem is reported as an
//! [`Error`] that names the key, so an operator can fix it without reading code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use libp2p::Multiaddr;
use serde::Deserialize;

/// The compiled-in defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("setting `{key}`: {problem}")]
    Invalid { key: String, problem: String },
    #[error("settings file {path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("settings: {0}")]
    Other(String),
}

fn invalid(key: &str, problem: impl Into<String>) -> Error {
    Error::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub node: Node,
    pub net: Net,
    pub api: Api,
    pub heartbeat: Heartbeat,
    pub watch: Watch,
    pub probes: Probes,
    pub metrics: Metrics,
    pub spikes: Spikes,
    pub journal: Journal,
    pub region: Region,
    pub audit: Audit,
    pub anomaly: Anomaly,
    pub policy: Policy,
    pub desired: Desired,
    pub fleet: Fleet,
    pub alerts: Alerts,
    pub labels: Vec<fleetmesh_actors::label::Rule>,
    pub log: Log,
    /// Service probes (`[[services]]`), run by the region's members as work items.
    #[serde(default)]
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub region: String,
    pub role: String,
    pub data_dir: PathBuf,
    pub identity_file: String,
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Net {
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub psk_file: String,
    pub mdns: bool,
    pub idle_timeout_ms: u64,
    pub outbox_capacity: usize,
    /// Bulk requests (consultations, replays, audits) one peer may have in flight here.
    pub peer_in_flight: usize,
    /// Bulk requests one peer may start a second here, and the burst above that.
    pub peer_requests_per_s: u32,
    pub peer_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub listen: String,
    /// A file whose first line is the API token ("": none).
    pub token_file: String,
    /// On a non-loopback address, serve reads without a token.
    pub open_reads: bool,
    /// PEM certificate chain and private key: serve HTTPS ("": plain HTTP).
    pub tls_cert: String,
    pub tls_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub interval_ms: u64,
    pub acceptable_pause_ms: u64,
    pub connected_grace_ms: u64,
    pub suspect_phi: f64,
    pub dead_phi: f64,
    pub dead_after: u32,
    pub census_ms: u64,
    pub probe_ms: u64,
    pub monitors: u32,
    pub region_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    pub root: PathBuf,
    pub paths: Vec<String>,
    pub verify_interval_s: u64,
    pub max_hash_bytes: u64,
    pub hash_rate_mib_s: u32,
    pub fallback_scan_s: u64,
    pub event_queue: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probes {
    pub network_poll_ms: u64,
    pub process_poll_ms: u64,
    pub process_report: fleetmesh_actors::procs::Report,
    pub process_trusted: Vec<String>,
    /// Executable names whose starts are always reported (package managers).
    pub process_always: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub interval_ms: u64,
    pub max_silence_s: u64,
    pub default_deadband: String,
    pub tmpfs: bool,
    /// Where the host's `/proc` is (`stat`, `meminfo`, `loadavg`, `net/dev` are read
    /// under it).
    pub proc_root: PathBuf,
    pub deadbands: Vec<DeadbandRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadbandRule {
    /// A glob over metric names.
    pub metric: String,
    pub deadband: String,
    /// Overrides `metrics.max_silence_s` for these metrics.
    #[serde(default)]
    pub max_silence_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub voters: Vec<String>,
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub bootstrap_ms: u64,
    pub bootstrap_expect: u32,
    pub max_voters: usize,
    /// Applied log entries past the last snapshot that make the next one.
    pub snapshot_entries: u64,
    pub replace_dead_voter_s: u64,
    pub master_eligible: bool,
}

/// Peer audits (`[audit]`): how often this node checks the peers it audits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    pub interval_s: u64,
    pub unanswered_after: u32,
}

/// `[anomaly]`: this node's metrics against its same-role peers (see
/// `fleetmesh_actors::anomaly`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anomaly {
    pub enabled: bool,
    pub min_peers: usize,
    pub threshold: f64,
    pub persist_s: u64,
    pub cooldown_s: u64,
    pub stale_s: u64,
    pub min_scale_pct: f64,
    /// Globs over metric names; empty: every metric.
    pub metrics: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub fsync: crate::journal::Fsync,
    pub segment_bytes: u64,
    pub retain_bytes: u64,
    pub replay_after_ms: u64,
    pub replay_retry_ms: u64,
}

/// `[policy]`: where the role policies are and how they are reloaded (see `crate::policy`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Holds `<role>.toml` (or `baseline.toml`); relative to the working directory.
    pub dir: PathBuf,
    pub reload_ms: u64,
    pub ring: usize,
}

/// `[desired]`: where the desired-state files are and how they are reloaded (see
/// `crate::desired`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// Holds `<role>.toml` and `nodes/<name>.toml`; relative to the working directory.
    pub dir: PathBuf,
    pub reload_ms: u64,
}

fn default_min_share() -> f64 {
    0.5
}

/// `[fleet]`: consultation of the region's master, coordinated-change detection and
/// learning (see `fleetmesh_actors::fleet`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Identical changes are grouped within this window (seconds).
    pub window_s: u64,
    /// More servers of one role than this showing the same change make a fleet event
    /// (at least 2); unset: the share rule (`min_share`).
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Without a threshold, the share of a role's live members (at least 2 servers) that
    /// must show the same change for it to be a fleet event.
    #[serde(default = "default_min_share")]
    pub min_share: f64,
    /// Per-role thresholds (role = servers).
    #[serde(default)]
    pub thresholds: std::collections::BTreeMap<String, usize>,
    /// A consultation unanswered this long is decided by `autonomous_default`.
    pub consult_timeout_ms: u64,
    /// Consultations waiting for a free request slot at most; beyond, the autonomous
    /// default decides (a bound on the memory a storm of unexplained changes takes).
    pub consult_queue: usize,
    /// The decision when no master answers (`violation` or `approved`).
    pub autonomous_default: fleetmesh_actors::policy::Decision,
    /// A server counts as upgrading this long after its package manager was seen.
    pub upgrade_s: u64,
    /// At most this many patterns learned from policy approvals per minute.
    pub learn_per_minute: usize,
    /// The fleet admin key's public half (64 hex digits; `fleetmesh fleet keygen`), or
    /// empty. When set, another region is believed only under a charter it signed.
    #[serde(default)]
    pub admin_key: String,
}

/// `[alerts]`: what the alert book keeps, how alerts are routed, grouped, muted and
/// escalated (`fleetmesh_actors::alerting`), and the receivers they go to (see
/// `crate::alert`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    pub ring: usize,
    /// Replaced by grouping (`alerts.route`): refused with a message saying so.
    #[serde(default)]
    pub fold_ms: Option<u64>,
    /// The receivers: `[[alerts.sinks]]` (the older name) then `[[alerts.receivers]]`;
    /// with neither, one `log` receiver.
    #[serde(default)]
    pub sinks: Vec<AlertSink>,
    #[serde(default)]
    pub receivers: Vec<AlertSink>,
    #[serde(default)]
    pub route: fleetmesh_actors::alerting::route::Config,
    #[serde(default)]
    pub inhibit: Vec<fleetmesh_actors::alerting::inhibit::Config>,
    #[serde(default)]
    pub escalations: Vec<fleetmesh_actors::alerting::escalation::Config>,
    /// Notifications per receiver in any minute, summary included.
    #[serde(default = "alerts_rate_per_minute")]
    pub rate_per_minute: u32,
    /// How long an acknowledgement holds when no escalation policy sets it.
    #[serde(default = "alerts_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// The alert history on disk (`<data_dir>/alerts/history.redb`) keeps records that
    /// changed within this many days ...
    #[serde(default = "alerts_history_days")]
    pub history_days: u32,
    /// ... and of those at most this many bytes (the records' encoded size), the newest.
    #[serde(default = "alerts_history_bytes")]
    pub history_bytes: u64,
}

impl Alerts {
    /// The receivers as written, each with where it is written (`alerts.sinks[0]`);
    /// with none written, one `log` receiver.
    pub fn entries(&self) -> Vec<(String, AlertSink)> {
        let mut out: Vec<(String, AlertSink)> = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("alerts.sinks[{i}]"), s.clone()))
            .chain(
                self.receivers
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("alerts.receivers[{i}]"), s.clone())),
            )
            .collect();
        if out.is_empty() {
            let log = AlertSink {
                kind: "log".into(),
                name: None,
                path: None,
                url: None,
                index: None,
                timeout_ms: sink_timeout_ms(),
                queue: sink_queue(),
                batch: sink_batch(),
                retry_min_ms: sink_retry_min_ms(),
                retry_max_ms: sink_retry_max_ms(),
                rate_per_minute: None,
                repush_ms: None,
                ca_file: None,
                smtp: None,
                from: None,
                to: None,
                starttls: None,
                username: None,
                password_file: None,
            };
            out.push(("alerts.receivers (default)".into(), log));
        }
        out
    }
}

fn alerts_rate_per_minute() -> u32 {
    fleetmesh_actors::alerting::ratelimit::DEFAULT_PER_MINUTE
}

fn alerts_history_days() -> u32 {
    7
}

fn alerts_history_bytes() -> u64 {
    64 << 20
}

fn alerts_ack_timeout_ms() -> u64 {
    fleetmesh_actors::alerting::escalation::DEFAULT_ACK_TIMEOUT_MS
}

/// One `[[alerts.sinks]]` entry as written; checked into a [`crate::alert::Spec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSink {
    /// `log`, `jsonl`, `webhook`, `elasticsearch`, `alertmanager`, `slack` or `email`.
    pub kind: String,
    /// Shown in the API and the metrics; default: the kind.
    #[serde(default)]
    pub name: Option<String>,
    /// jsonl: the file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// webhook: where to POST; elasticsearch: the base URL (or its `_bulk` URL);
    /// alertmanager: the Alertmanager's base URL (`/api/v2/alerts` is added); slack: the
    /// incoming webhook. `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    /// elasticsearch: the index (default `fleetmesh-alerts`).
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default = "sink_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "sink_queue")]
    pub queue: usize,
    #[serde(default = "sink_batch")]
    pub batch: usize,
    #[serde(default = "sink_retry_min_ms")]
    pub retry_min_ms: u64,
    #[serde(default = "sink_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Notifications to this receiver in any minute (default: `alerts.rate_per_minute`).
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Tell the open alerts of each group again at least this often while any is open
    /// (default: 60000 for `alertmanager`, which resolves an alert it is not told about
    /// within its `resolve_timeout`, 5 min by default; none for the others).
    #[serde(default)]
    pub repush_ms: Option<u64>,
    /// HTTP receivers and email: PEM certificates (a private CA) trusted besides the
    /// system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// email: the SMTP server, `host:port`.
    #[serde(default)]
    pub smtp: Option<String>,
    /// email: the sender (`fleetmesh <alerts@example.org>` or a bare address).
    #[serde(default)]
    pub from: Option<String>,
    /// email: the recipients (at least one).
    #[serde(default)]
    pub to: Option<Vec<String>>,
    /// email: `required` (default), `opportunistic` or `off`.
    #[serde(default)]
    pub starttls: Option<String>,
    /// email: log in to the SMTP server as this user, with the password read from
    /// `password_file` (both or neither).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn sink_timeout_ms() -> u64 {
    5000
}

fn sink_queue() -> usize {
    10_000
}

fn sink_batch() -> usize {
    100
}

fn sink_retry_min_ms() -> u64 {
    1000
}

fn sink_retry_max_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spikes {
    pub ring: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub filter: String,
}

/// One `[[services]]` entry as written; checked into a [`fleetmesh_actors::service::Spec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// `tcp` or `http`.
    pub kind: String,
    /// `host:port` (tcp) or an `http://` URL (http).
    pub target: String,
    #[serde(default = "service_interval_s")]
    pub interval_s: u64,
    #[serde(default = "service_timeout_ms")]
    pub timeout_ms: u64,
    /// http only: the status that means up (default: any 2xx).
    #[serde(default)]
    pub expect_status: Option<u16>,
}

fn service_interval_s() -> u64 {
    10
}

fn service_timeout_ms() -> u64 {
    2000
}

/// Settings after validation, with addresses parsed and defaults resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub raw: Settings,
    pub vocabulary: fleetmesh_actors::label::Vocabulary,
    /// Send-on-delta settings of metrics without a rule, and the rules.
    pub metric_default: fleetmesh_actors::delta::Config,
    pub metric_rules: Vec<fleetmesh_actors::delta::Rule>,
    pub name: String,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub psk_file: Option<PathBuf>,
    pub identity_file: PathBuf,
    pub api_listen: SocketAddr,
    /// Who may use the API (`api.token_file`, `api.open_reads`).
    pub api_access: crate::access::Access,
    /// HTTPS for the API (`api.tls_cert`, `api.tls_key`), checked.
    pub api_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The service probes, checked.
    pub services: Vec<fleetmesh_actors::service::Spec>,
    /// The alert sinks (the receivers), checked.
    pub alert_sinks: Vec<crate::alert::Spec>,
    /// The alert lifecycle's settings, checked: every receiver it names is a sink.
    pub alerting: fleetmesh_actors::alerting::Config,
    /// The anomaly detector's settings, checked (`raw.anomaly.enabled` says if it runs).
    pub anomaly: fleetmesh_actors::anomaly::Config,
}

impl Resolved {
    /// The heartbeat emitter's settings (`[heartbeat]`).
    pub fn emitter(&self) -> fleetmesh_actors::heartbeat::Config {
        let h = &self.raw.heartbeat;
        fleetmesh_actors::heartbeat::Config {
            interval: Duration::from_millis(h.interval_ms),
            probe: Duration::from_millis(h.probe_ms),
            region_rate: h.region_rate,
        }
    }

    /// The membership view's settings (`[heartbeat]`): how peers are judged.
    pub fn membership(&self) -> fleetmesh_actors::membership::Config {
        let h = &self.raw.heartbeat;
        fleetmesh_actors::membership::Config {
            interval: Duration::from_millis(h.interval_ms),
            acceptable_pause: Duration::from_millis(h.acceptable_pause_ms),
            connected_grace: Duration::from_millis(h.connected_grace_ms),
            suspect_phi: h.suspect_phi,
            dead_phi: h.dead_phi,
            dead_after: h.dead_after,
            probe: Duration::from_millis(h.probe_ms),
            monitors: h.monitors as usize,
            stall: fleetmesh_actors::membership::Config::stall_after(
                self.emitter().tick(),
                Duration::from_millis(h.acceptable_pause_ms),
            ),
        }
    }

    /// The region governor's settings (`[region]`, with the heartbeat's rhythm for how
    /// long a founding set must be agreed).
    pub fn governor(
        &self,
        own: fleetmesh_actors::node::Id,
        info: &fleetmesh_actors::node::Info,
        probes: Vec<String>,
    ) -> fleetmesh_actors::governor::Config {
        let r = &self.raw.region;
        let mut c = fleetmesh_actors::governor::Config::new(
            &info.region,
            own,
            &info.name,
            info.incarnation,
        );
        c.eligible = r.master_eligible;
        c.voters = r.voters.clone();
        c.bootstrap_expect = r.bootstrap_expect;
        c.bootstrap = Duration::from_millis(r.bootstrap_ms);
        // Two heartbeats: every founder has seen every other's proposal.
        c.stable = Duration::from_millis(2 * self.raw.heartbeat.interval_ms);
        c.max_voters = r.max_voters.clamp(1, 5);
        c.replace_after = Duration::from_secs(r.replace_dead_voter_s);
        c.probes = probes;
        c.tick = Duration::from_millis(r.tick_ms);
        c.consensus = fleetmesh_actors::region::Config {
            election_ticks: r.election_ticks,
            heartbeat_ticks: (r.election_ticks / 5).max(1),
            seed: u64::from(std::process::id()) ^ info.incarnation,
            snapshot_entries: r.snapshot_entries,
            snapshot_tail: (r.snapshot_entries / 10).max(2),
        };
        c
    }
}

/// Where settings come from besides the defaults.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// Environment variables to read, as (name, value); normally `std::env::vars()`.
    pub env: Vec<(String, String)>,
    /// CLI flags as (dotted key, value); lists as several entries of the same key.
    pub overrides: Vec<(String, OverrideValue)>,
}

/// A value set by a CLI flag.
#[derive(Debug, Clone)]
pub enum OverrideValue {
    Str(String),
    List(Vec<String>),
    Bool(bool),
    Int(u64),
}

const LIST_KEYS: [&str; 7] = [
    "net.listen",
    "net.bootstrap",
    "watch.paths",
    "probes.process_trusted",
    "probes.process_always",
    "region.voters",
    "anomaly.metrics",
];

/// Loads and validates settings from `sources`.
pub fn load(sources: &Sources) -> Result<Resolved, Error> {
    let mut b = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
    if let Some(path) = &sources.file {
        if !path.is_file() {
            return Err(Error::File {
                path: path.clone(),
                problem: "no such file".into(),
            });
        }
        b = b.add_source(File::from(path.as_path()).format(FileFormat::Toml));
    }
    layer(b, sources)
}

/// Loads and validates settings whose node file holds `text` (TOML), with no environment
/// and no flags: what `fleetmesh node --config FILE` makes of that file's contents. The
/// fuzz targets and their corpus replay use it.
pub fn load_text(text: &str) -> Result<Resolved, Error> {
    let b = Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .add_source(File::from_str(text, FileFormat::Toml));
    layer(b, &Sources::default())
}

/// Adds the environment and the flags of `sources` on top of the files in `b`, then
/// deserializes and validates.
fn layer(
    mut b: config::ConfigBuilder<config::builder::DefaultState>,
    sources: &Sources,
) -> Result<Resolved, Error> {
    // A list set to the empty string is the empty list (the list parser would read one
    // empty item).
    let list_key = |k: &str| {
        let key = k
            .trim_start_matches("FLEETMESH__")
            .to_lowercase()
            .replace("__", ".");
        LIST_KEYS.contains(&key.as_str()).then_some(key)
    };
    let mut empty_lists = Vec::new();
    let env: config::Map<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("FLEETMESH__"))
        .filter(|(k, v)| match list_key(k) {
            Some(key) if v.trim().is_empty() => {
                empty_lists.push(key);
                false
            }
            _ => true,
        })
        .cloned()
        .collect();
    let mut environment = Environment::with_prefix("FLEETMESH")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .source(Some(env));
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    b = b.add_source(environment);
    for key in empty_lists {
        b = b
            .set_override(key.as_str(), Vec::<String>::new())
            .map_err(config_error)?;
    }
    for (key, value) in &sources.overrides {
        b = match value {
            OverrideValue::Str(s) => b.set_override(key.as_str(), s.as_str()),
            OverrideValue::List(l) => b.set_override(key.as_str(), l.clone()),
            OverrideValue::Bool(v) => b.set_override(key.as_str(), *v),
            OverrideValue::Int(v) => b.set_override(key.as_str(), *v),
        }
        .map_err(config_error)?;
    }
    let settings: Settings = b
        .build()
        .map_err(config_error)?
        .try_deserialize()
        .map_err(config_error)?;
    resolve(settings)
}

/// Turns the config crate's error into ours, keeping the key it names.
fn config_error(e: config::ConfigError) -> Error {
    match &e {
        config::ConfigError::Type { key: Some(key), .. }
        | config::ConfigError::At { key: Some(key), .. } => Error::Invalid {
            key: key.clone(),
            problem: e.to_string(),
        },
        config::ConfigError::FileParse { uri, cause } => Error::File {
            path: uri.clone().unwrap_or_default().into(),
            problem: cause.to_string(),
        },
        _ => {
            let text = e.to_string();
            // serde's "unknown field `x`, expected one of ..." names the key already.
            Error::Other(text)
        }
    }
}

fn resolve(raw: Settings) -> Result<Resolved, Error> {
    let name = if raw.node.name.trim().is_empty() {
        host_name()
    } else {
        raw.node.name.trim().to_string()
    };
    check_label("node.region", &raw.node.region)?;
    check_label("node.role", &raw.node.role)?;
    if name.len() > 128 {
        return Err(invalid("node.name", "must be at most 128 characters"));
    }
    within("node.worker_threads", raw.node.worker_threads as u64, 1, 64)?;
    if raw.node.data_dir.as_os_str().is_empty() {
        return Err(invalid("node.data_dir", "must not be empty"));
    }
    if raw.net.listen.is_empty() {
        return Err(invalid("net.listen", "needs at least one address"));
    }
    let listen = parse_addrs("net.listen", &raw.net.listen)?;
    let bootstrap = parse_addrs("net.bootstrap", &raw.net.bootstrap)?;
    let api_listen: SocketAddr = raw.api.listen.parse().map_err(|e| {
        invalid(
            "api.listen",
            format!("`{}` is not host:port ({e})", raw.api.listen),
        )
    })?;
    let api_token = match raw.api.token_file.trim() {
        "" => None,
        p => Some(
            crate::access::Token::read(std::path::Path::new(p))
                .map_err(|e| invalid("api.token_file", e))?,
        ),
    };
    let api_access = crate::access::Access::new(api_listen, api_token, raw.api.open_reads)
        .map_err(|e| invalid("api.listen", e))?;
    let api_tls = match (raw.api.tls_cert.trim(), raw.api.tls_key.trim()) {
        ("", "") => None,
        ("", _) => {
            return Err(invalid(
                "api.tls_cert",
                "api.tls_key is set: set both or neither",
            ));
        }
        (_, "") => {
            return Err(invalid(
                "api.tls_key",
                "api.tls_cert is set: set both or neither",
            ));
        }
        (cert, key) => Some(
            crate::access::tls(std::path::Path::new(cert), std::path::Path::new(key))
                .map_err(|(k, e)| invalid(k, e))?,
        ),
    };
    let h = &raw.heartbeat;
    within("heartbeat.interval_ms", h.interval_ms, 50, 60_000)?;
    within(
        "heartbeat.acceptable_pause_ms",
        h.acceptable_pause_ms,
        0,
        600_000,
    )?;
    within(
        "heartbeat.connected_grace_ms",
        h.connected_grace_ms,
        0,
        600_000,
    )?;
    if !(h.suspect_phi.is_finite() && h.suspect_phi > 0.0) {
        return Err(invalid("heartbeat.suspect_phi", "must be a number above 0"));
    }
    if !(h.dead_phi.is_finite() && h.dead_phi >= h.suspect_phi) {
        return Err(invalid(
            "heartbeat.dead_phi",
            format!(
                "{} must be at least heartbeat.suspect_phi ({})",
                h.dead_phi, h.suspect_phi
            ),
        ));
    }
    within("heartbeat.dead_after", u64::from(h.dead_after), 2, 100_000)?;
    if h.probe_ms != 0 {
        within("heartbeat.probe_ms", h.probe_ms, 50, 60_000)?;
    }
    within("heartbeat.monitors", u64::from(h.monitors), 1, 16)?;
    within("heartbeat.region_rate", u64::from(h.region_rate), 0, 10_000)?;
    if h.census_ms != 0 {
        within("heartbeat.census_ms", h.census_ms, 200, 3_600_000)?;
    }
    if raw.net.idle_timeout_ms < 1000 {
        return Err(invalid("net.idle_timeout_ms", "must be at least 1000"));
    }
    if raw.net.outbox_capacity == 0 {
        return Err(invalid("net.outbox_capacity", "must be at least 1"));
    }
    // Below the bulk protocol's streams per connection, so that the driver answers the
    // excess busy before the connection handler drops it.
    within(
        "net.peer_in_flight",
        raw.net.peer_in_flight as u64,
        1,
        crate::net::BULK_STREAMS as u64 - 64,
    )?;
    within(
        "net.peer_requests_per_s",
        u64::from(raw.net.peer_requests_per_s),
        1,
        1_000_000,
    )?;
    within(
        "net.peer_burst",
        u64::from(raw.net.peer_burst),
        1,
        1_000_000,
    )?;
    let psk_file = match raw.net.psk_file.trim() {
        "" => None,
        p => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(invalid(
                    "net.psk_file",
                    format!("{} does not exist or is not a file", p.display()),
                ));
            }
            Some(p)
        }
    };
    let identity_file = match raw.node.identity_file.trim() {
        "" => raw.node.data_dir.join("identity.key"),
        p => PathBuf::from(p),
    };
    if !raw.watch.root.is_dir() {
        return Err(invalid(
            "watch.root",
            format!("{} is not a directory", raw.watch.root.display()),
        ));
    }
    for p in &raw.watch.paths {
        if !p.starts_with('/') {
            return Err(invalid(
                "watch.paths",
                format!(
                    "`{p}` must be a host path starting with / (it is resolved under watch.root)"
                ),
            ));
        }
    }
    if raw.watch.verify_interval_s < 10 {
        return Err(invalid("watch.verify_interval_s", "must be at least 10"));
    }
    within(
        "watch.fallback_scan_s",
        raw.watch.fallback_scan_s,
        5,
        86_400,
    )?;
    within(
        "watch.hash_rate_mib_s",
        u64::from(raw.watch.hash_rate_mib_s),
        0,
        1_048_576,
    )?;
    if raw.watch.event_queue < 16 {
        return Err(invalid("watch.event_queue", "must be at least 16"));
    }
    within(
        "probes.network_poll_ms",
        raw.probes.network_poll_ms,
        100,
        3_600_000,
    )?;
    within(
        "probes.process_poll_ms",
        raw.probes.process_poll_ms,
        100,
        3_600_000,
    )?;
    let (metric_default, metric_rules) = metric_bands(&raw.metrics)?;
    within(
        "journal.segment_bytes",
        raw.journal.segment_bytes,
        4096,
        1 << 30,
    )?;
    if raw.journal.retain_bytes < raw.journal.segment_bytes {
        return Err(invalid(
            "journal.retain_bytes",
            "must be at least journal.segment_bytes",
        ));
    }
    if raw.region.voters.len() > 5 {
        return Err(invalid(
            "region.voters",
            format!(
                "{} names; a region has at most 5 voters",
                raw.region.voters.len()
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for v in &raw.region.voters {
        if v.is_empty() || !seen.insert(v) {
            return Err(invalid(
                "region.voters",
                format!("`{v}` is empty or named twice"),
            ));
        }
    }
    within("region.tick_ms", raw.region.tick_ms, 10, 10_000)?;
    within("region.bootstrap_ms", raw.region.bootstrap_ms, 0, 600_000)?;
    within("region.max_voters", raw.region.max_voters as u64, 1, 5)?;
    within(
        "region.snapshot_entries",
        raw.region.snapshot_entries,
        8,
        1_000_000,
    )?;
    within(
        "region.bootstrap_expect",
        u64::from(raw.region.bootstrap_expect),
        1,
        5,
    )?;
    within(
        "region.replace_dead_voter_s",
        raw.region.replace_dead_voter_s,
        1,
        86_400,
    )?;
    within(
        "journal.replay_after_ms",
        raw.journal.replay_after_ms,
        100,
        3_600_000,
    )?;
    within(
        "journal.replay_retry_ms",
        raw.journal.replay_retry_ms,
        100,
        3_600_000,
    )?;
    within(
        "region.election_ticks",
        raw.region.election_ticks as u64,
        5,
        1000,
    )?;
    within("audit.interval_s", raw.audit.interval_s, 1, 86_400)?;
    within(
        "audit.unanswered_after",
        u64::from(raw.audit.unanswered_after),
        1,
        1000,
    )?;
    within("policy.reload_ms", raw.policy.reload_ms, 100, 3_600_000)?;
    within("desired.reload_ms", raw.desired.reload_ms, 100, 3_600_000)?;
    within("fleet.window_s", raw.fleet.window_s, 1, 3600)?;
    if let Some(t) = raw.fleet.threshold {
        within("fleet.threshold", t as u64, 1, 100_000)?;
    }
    let share = raw.fleet.min_share;
    if !(share.is_finite() && share > 0.0 && share <= 1.0) {
        return Err(invalid(
            "fleet.min_share",
            "must be a share of a role's live members, above 0 and at most 1 (e.g. 0.5)",
        ));
    }
    for (role, n) in &raw.fleet.thresholds {
        within(&format!("fleet.thresholds.{role}"), *n as u64, 1, 100_000)?;
    }
    within(
        "fleet.consult_timeout_ms",
        raw.fleet.consult_timeout_ms,
        10,
        600_000,
    )?;
    within(
        "fleet.consult_queue",
        raw.fleet.consult_queue as u64,
        1,
        1_000_000,
    )?;
    within("fleet.upgrade_s", raw.fleet.upgrade_s, 1, 86_400)?;
    within(
        "fleet.learn_per_minute",
        raw.fleet.learn_per_minute as u64,
        0,
        100_000,
    )?;
    if raw.fleet.autonomous_default == fleetmesh_actors::policy::Decision::Consult {
        return Err(invalid(
            "fleet.autonomous_default",
            "must be `violation` or `approved`: it decides when no master can be consulted",
        ));
    }
    within("policy.ring", raw.policy.ring as u64, 1, 1_000_000)?;
    if raw.policy.dir.as_os_str().is_empty() {
        return Err(invalid("policy.dir", "must name a directory"));
    }
    if raw.desired.dir.as_os_str().is_empty() {
        return Err(invalid("desired.dir", "must name a directory"));
    }
    if raw.spikes.ring == 0 {
        return Err(invalid("spikes.ring", "must be at least 1"));
    }
    let vocabulary = fleetmesh_actors::label::Vocabulary::new(raw.labels.clone())
        .map_err(|e| invalid(&format!("labels[{}]", e.index), e.to_string()))?;
    let services = services(&raw.services)?;
    within("alerts.ring", raw.alerts.ring as u64, 1, 1_000_000)?;
    within(
        "alerts.history_days",
        u64::from(raw.alerts.history_days),
        1,
        3650,
    )?;
    within("alerts.history_bytes", raw.alerts.history_bytes, 1, 1 << 40)?;
    let alert_sinks = alert_sinks(&raw.alerts.entries())?;
    let alerting = alerting(&raw.alerts, &alert_sinks)?;
    let anomaly = anomaly(&raw.anomaly, &raw.metrics)?;
    Ok(Resolved {
        services,
        alert_sinks,
        alerting,
        anomaly,
        vocabulary,
        metric_default,
        metric_rules,
        name,
        listen,
        bootstrap,
        psk_file,
        identity_file,
        api_listen,
        api_access,
        api_tls,
        raw,
    })
}

/// The metrics section's deadbands, parsed and checked.
fn metric_bands(
    m: &Metrics,
) -> Result<
    (
        fleetmesh_actors::delta::Config,
        Vec<fleetmesh_actors::delta::Rule>,
    ),
    Error,
> {
    use fleetmesh_actors::delta::{Config, Rule};
    use std::time::Duration;
    within("metrics.interval_ms", m.interval_ms, 100, 3_600_000)?;
    within("metrics.max_silence_s", m.max_silence_s, 1, 86_400)?;
    if !m.proc_root.is_dir() {
        return Err(invalid(
            "metrics.proc_root",
            format!("{} is not a directory", m.proc_root.display()),
        ));
    }
    let default = Config {
        deadband: m
            .default_deadband
            .parse()
            .map_err(|e: String| invalid("metrics.default_deadband", e))?,
        max_silence: Duration::from_secs(m.max_silence_s),
    };
    let mut rules = Vec::with_capacity(m.deadbands.len());
    for (i, r) in m.deadbands.iter().enumerate() {
        let key = |field: &str| format!("metrics.deadbands[{i}].{field}");
        let metric = glob::Pattern::new(&r.metric)
            .map_err(|e| invalid(&key("metric"), format!("`{}`: {e}", r.metric)))?;
        let deadband = r
            .deadband
            .parse()
            .map_err(|e: String| invalid(&key("deadband"), e))?;
        let silence = r.max_silence_s.unwrap_or(m.max_silence_s);
        within(&key("max_silence_s"), silence, 1, 86_400)?;
        rules.push(Rule {
            metric,
            config: Config {
                deadband,
                max_silence: Duration::from_secs(silence),
            },
        });
    }
    Ok((default, rules))
}

/// The `[anomaly]` section, checked against the metrics' longest silence: a peer's value is
/// re-sent at least that often, so a shorter staleness limit would drop steady peers.
fn anomaly(a: &Anomaly, m: &Metrics) -> Result<fleetmesh_actors::anomaly::Config, Error> {
    use std::time::Duration;
    within("anomaly.min_peers", a.min_peers as u64, 1, 10_000)?;
    if !(a.threshold.is_finite() && a.threshold > 0.0) {
        return Err(invalid("anomaly.threshold", "must be a number above 0"));
    }
    within("anomaly.persist_s", a.persist_s, 0, 86_400)?;
    within("anomaly.cooldown_s", a.cooldown_s, 0, 30 * 86_400)?;
    within("anomaly.stale_s", a.stale_s, 1, 7 * 86_400)?;
    if !(a.min_scale_pct.is_finite() && (0.0..=100.0).contains(&a.min_scale_pct)) {
        return Err(invalid(
            "anomaly.min_scale_pct",
            "must be between 0 and 100",
        ));
    }
    let silence = m
        .deadbands
        .iter()
        .filter_map(|r| r.max_silence_s)
        .fold(m.max_silence_s, u64::max);
    if a.enabled && a.stale_s <= silence {
        return Err(invalid(
            "anomaly.stale_s",
            format!(
                "{} s must be longer than the longest metric silence ({silence} s, \
                 metrics.max_silence_s or a deadband's): steady values are re-sent only that often",
                a.stale_s
            ),
        ));
    }
    let metrics = a
        .metrics
        .iter()
        .map(|g| {
            glob::Pattern::new(g).map_err(|e| invalid("anomaly.metrics", format!("`{g}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(fleetmesh_actors::anomaly::Config {
        min_peers: a.min_peers,
        threshold: a.threshold,
        persist: Duration::from_secs(a.persist_s),
        cooldown: Duration::from_secs(a.cooldown_s),
        stale: Duration::from_secs(a.stale_s),
        min_scale_ratio: a.min_scale_pct / 100.0,
        metrics,
    })
}

/// The `[[services]]` entries, checked; every error names the entry's position and name.
fn services(list: &[Service]) -> Result<Vec<fleetmesh_actors::service::Spec>, Error> {
    use fleetmesh_actors::service::{Check, Expect, Spec};
    use std::time::Duration;
    let mut seen: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let key = |field: &str| format!("services[{i}].{field}");
        let bad =
            |field: &str, problem: String| invalid(&key(field), format!("`{}`: {problem}", s.name));
        check_label(&key("name"), &s.name)?;
        if let Some(first) = seen.insert(&s.name, i) {
            return Err(bad(
                "name",
                format!(
                    "named twice (services[{first}] and services[{i}]); probe names must be unique"
                ),
            ));
        }
        within(&key("interval_s"), s.interval_s, 1, 86_400)?;
        within(&key("timeout_ms"), s.timeout_ms, 1, 600_000)?;
        if s.timeout_ms >= s.interval_s.saturating_mul(1000) {
            return Err(bad(
                "timeout_ms",
                format!(
                    "{} ms must be shorter than interval_s ({} s): one attempt at a time",
                    s.timeout_ms, s.interval_s
                ),
            ));
        }
        let check = match s.kind.as_str() {
            "tcp" => {
                if s.expect_status.is_some() {
                    return Err(bad(
                        "expect_status",
                        "only http probes have a status".into(),
                    ));
                }
                tcp_target(&s.target).map_err(|p| bad("target", p))?;
                Check::Tcp {
                    target: s.target.clone(),
                }
            }
            "http" => {
                http_target(&s.target).map_err(|p| bad("target", p))?;
                let expect = match s.expect_status {
                    None => Expect::Success,
                    Some(code) if (100..=599).contains(&code) => Expect::Status(code),
                    Some(code) => {
                        return Err(bad(
                            "expect_status",
                            format!("{code} is not an HTTP status (100..=599)"),
                        ));
                    }
                };
                Check::Http {
                    url: s.target.clone(),
                    expect,
                }
            }
            other => return Err(bad("kind", format!("`{other}` must be tcp or http"))),
        };
        out.push(Spec {
            name: s.name.clone(),
            check,
            interval: Duration::from_secs(s.interval_s),
            timeout: Duration::from_millis(s.timeout_ms),
        });
    }
    Ok(out)
}

/// How often an `alertmanager` receiver is told a group's open alerts again by default:
/// well within Alertmanager's default `resolve_timeout` (5 min).
const ALERTMANAGER_REPUSH_MS: u64 = 60_000;

/// The alert lifecycle's settings (`[alerts]`): a route left unwritten sends every alert
/// to every receiver; a receiver named anywhere must be a sink's name.
fn alerting(
    raw: &Alerts,
    sinks: &[crate::alert::Spec],
) -> Result<fleetmesh_actors::alerting::Config, Error> {
    use fleetmesh_actors::alerting::{self, Engine};
    if raw.fold_ms.is_some() {
        return Err(invalid(
            "alerts.fold_ms",
            "was replaced by grouping: repeats of an alert are told at most once per \
             alerts.route.group_interval_ms (and again after repeat_interval_ms); remove it",
        ));
    }
    let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
    let route = if raw.route.routes_nothing() {
        raw.route.clone().fan_out(&names)
    } else {
        raw.route.clone()
    };
    let config = alerting::Config {
        route,
        inhibit: raw.inhibit.clone(),
        escalations: raw.escalations.clone(),
        receivers: raw
            .entries()
            .iter()
            .map(|(_, raw)| raw)
            .zip(sinks)
            .map(|(raw, s)| alerting::Receiver {
                name: s.name.clone(),
                rate_per_minute: raw.rate_per_minute,
                repush_ms: raw
                    .repush_ms
                    .or((raw.kind == "alertmanager").then_some(ALERTMANAGER_REPUSH_MS)),
            })
            .collect(),
        rate_per_minute: raw.rate_per_minute,
        ack_timeout_ms: raw.ack_timeout_ms,
        ..alerting::Config::default()
    };
    within(
        "alerts.rate_per_minute",
        u64::from(raw.rate_per_minute),
        2,
        1_000_000,
    )?;
    for (at, r) in raw.entries() {
        if let Some(ms) = r.repush_ms {
            within(&format!("{at}.repush_ms"), ms, 1000, 86_400_000)?;
        }
    }
    within(
        "alerts.ack_timeout_ms",
        raw.ack_timeout_ms,
        1000,
        30 * 86_400_000,
    )?;
    Engine::new(config.clone()).map_err(|e| invalid(&format!("alerts.{}", e.at), e.reason))?;
    let unknown = |at: String, r: &str| {
        invalid(
            &at,
            format!(
                "names the receiver `{r}`, but no [[alerts.receivers]] (or [[alerts.sinks]]) \
                 entry has that name; receivers: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    };
    fn walk(c: &alerting::route::Config, at: String, out: &mut Vec<(String, String)>) {
        if let Some(r) = &c.receiver {
            out.push((format!("{at}.receiver"), r.clone()));
        }
        for (i, child) in c.routes.iter().enumerate() {
            walk(child, format!("{at}.routes[{i}]"), out);
        }
    }
    let mut named = Vec::new();
    if !raw.route.routes_nothing() || !names.is_empty() {
        let root = alerting::route::DEFAULT_RECEIVER.to_string();
        if config.route.receiver.is_none() {
            named.push(("alerts.route.receiver".to_string(), root));
        }
        walk(&config.route, "alerts.route".into(), &mut named);
    }
    for (i, e) in config.escalations.iter().enumerate() {
        for (j, step) in e.steps.iter().enumerate() {
            named.push((
                format!("alerts.escalations[{i}].steps[{j}].receiver"),
                step.receiver.clone(),
            ));
        }
    }
    for (at, r) in named {
        if !names.contains(&r) {
            return Err(unknown(at, &r));
        }
    }
    Ok(config)
}

/// The `[[alerts.sinks]]` entries, checked; every error names the entry's position and
/// name.
fn alert_sinks(list: &[(String, AlertSink)]) -> Result<Vec<crate::alert::Spec>, Error> {
    use crate::alert::{Spec, Target};
    use std::time::Duration;
    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, (at, s)) in list.iter().enumerate() {
        let key = |field: &str| format!("{at}.{field}");
        let name = s.name.clone().unwrap_or_else(|| s.kind.clone());
        let bad = |field: &str, problem: String| {
            invalid(&key(field), format!("{} sink `{name}`: {problem}", s.kind))
        };
        let only = |field: &str, set: bool, kinds: &str| {
            if set {
                Err(bad(
                    field,
                    format!("`{field}` applies to {kinds} sinks only"),
                ))
            } else {
                Ok(())
            }
        };
        let url = |kind: &str| -> Result<reqwest::Url, Error> {
            let text = s
                .url
                .as_deref()
                .ok_or_else(|| bad("url", format!("a {kind} sink needs a url")))?;
            http_url(text).map_err(|p| bad("url", p))
        };
        let target = match s.kind.as_str() {
            "log" => Target::Log,
            "jsonl" => {
                let path = s
                    .path
                    .clone()
                    .filter(|p| !p.as_os_str().is_empty())
                    .ok_or_else(|| bad("path", "a jsonl sink needs a path".into()))?;
                Target::Jsonl { path }
            }
            "webhook" => Target::Webhook {
                url: url("webhook")?,
            },
            "elasticsearch" => {
                let mut base = url("elasticsearch")?;
                if !base.path().ends_with("/_bulk") {
                    let path = format!("{}/_bulk", base.path().trim_end_matches('/'));
                    base.set_path(&path);
                }
                let index = s.index.clone().unwrap_or_else(|| "fleetmesh-alerts".into());
                es_index(&index).map_err(|p| bad("index", p))?;
                Target::Elasticsearch { url: base, index }
            }
            "alertmanager" => Target::Alertmanager {
                url: url("alertmanager")?,
            },
            "slack" => Target::Slack { url: url("slack")? },
            "email" => Target::Email(email_config(s).map_err(|(field, p)| bad(field, p))?),
            other => {
                return Err(bad(
                    "kind",
                    format!(
                        "`{other}` must be log, jsonl, webhook, elasticsearch, alertmanager, slack or email"
                    ),
                ));
            }
        };
        only("path", s.path.is_some() && s.kind != "jsonl", "jsonl")?;
        only(
            "url",
            s.url.is_some()
                && !matches!(
                    s.kind.as_str(),
                    "webhook" | "elasticsearch" | "alertmanager" | "slack"
                ),
            "webhook, elasticsearch, alertmanager and slack",
        )?;
        only(
            "ca_file",
            s.ca_file.is_some()
                && !matches!(
                    s.kind.as_str(),
                    "webhook" | "elasticsearch" | "alertmanager" | "slack" | "email"
                ),
            "webhook, elasticsearch, alertmanager, slack and email",
        )?;
        if let Some(f) = &s.ca_file
            && f.as_os_str().is_empty()
        {
            return Err(bad("ca_file", "an empty path".into()));
        }
        for (field, set) in [
            ("smtp", s.smtp.is_some()),
            ("from", s.from.is_some()),
            ("to", s.to.is_some()),
            ("starttls", s.starttls.is_some()),
            ("username", s.username.is_some()),
            ("password_file", s.password_file.is_some()),
        ] {
            only(field, set && s.kind != "email", "email")?;
        }
        only(
            "index",
            s.index.is_some() && s.kind != "elasticsearch",
            "elasticsearch",
        )?;
        check_label(&key("name"), &name)?;
        if let Some(first) = seen.insert(name.clone(), i) {
            return Err(bad(
                "name",
                format!(
                    "named twice ({} and {at}); give each receiver of a kind its own name",
                    list[first].0
                ),
            ));
        }
        within(&key("timeout_ms"), s.timeout_ms, 1, 600_000)?;
        within(&key("queue"), s.queue as u64, 1, 1_000_000)?;
        within(&key("batch"), s.batch as u64, 1, 10_000)?;
        within(&key("retry_min_ms"), s.retry_min_ms, 1, 3_600_000)?;
        within(
            &key("retry_max_ms"),
            s.retry_max_ms,
            s.retry_min_ms,
            86_400_000,
        )?;
        out.push(Spec {
            at: at.clone(),
            name,
            target,
            timeout: Duration::from_millis(s.timeout_ms),
            queue: s.queue,
            batch: s.batch,
            retry_min_ms: s.retry_min_ms,
            retry_max_ms: s.retry_max_ms,
            ca_file: s.ca_file.clone(),
        });
    }
    Ok(out)
}

/// An `email` receiver's keys, checked; an error is the key and what is wrong with it.
fn email_config(s: &AlertSink) -> Result<crate::alert::email::Config, (&'static str, String)> {
    use crate::alert::email::{Config, Starttls};
    let smtp = s.smtp.as_deref().ok_or((
        "smtp",
        "an email receiver needs an smtp server (host:port)".to_string(),
    ))?;
    let (host, port) = smtp
        .rsplit_once(':')
        .ok_or(("smtp", format!("`{smtp}` is not host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ("smtp", format!("`{smtp}`: `{port}` is not a port")))?;
    if port == 0 {
        return Err(("smtp", format!("`{smtp}`: port 0 cannot be used")));
    }
    tcp_target(smtp).map_err(|p| ("smtp", p))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let mailbox = |field: &'static str, text: &str| {
        text.parse::<lettre::message::Mailbox>()
            .map_err(|e| (field, format!("`{text}` is not an email address ({e})")))
    };
    let from = mailbox(
        "from",
        s.from
            .as_deref()
            .ok_or(("from", "an email receiver needs a from address".to_string()))?,
    )?;
    let to =
        s.to.as_deref()
            .filter(|l| !l.is_empty())
            .ok_or((
                "to",
                "an email receiver needs at least one address to send to".to_string(),
            ))?
            .iter()
            .map(|t| mailbox("to", t))
            .collect::<Result<Vec<_>, _>>()?;
    let starttls = match s.starttls.as_deref() {
        None => Starttls::Required,
        Some(t) => Starttls::parse(t).ok_or((
            "starttls",
            format!("`{t}` must be required, opportunistic or off"),
        ))?,
    };
    if starttls == Starttls::Off && s.ca_file.is_some() {
        return Err((
            "ca_file",
            "no TLS is used with starttls = \"off\": drop ca_file or use STARTTLS".into(),
        ));
    }
    match (&s.username, &s.password_file) {
        (Some(u), _) if u.is_empty() => return Err(("username", "an empty user name".into())),
        (Some(_), None) => {
            return Err((
                "password_file",
                "a username needs a password_file (the file holding its password)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(("username", "a password_file needs a username".into()));
        }
        (_, Some(f)) if f.as_os_str().is_empty() => {
            return Err(("password_file", "an empty path".into()));
        }
        _ => {}
    }
    Ok(Config {
        host: host.to_string(),
        port,
        from,
        to,
        starttls,
        username: s.username.clone(),
        password_file: s.password_file.clone(),
    })
}

/// An `http://` or `https://` URL with a host.
fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{text}`: only http:// and https:// URLs can be used (not {}://)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    Ok(url)
}

/// Elasticsearch's rules for index names: lowercase, none of `\ / * ? " < > | , # :` or
/// spaces, not starting with `-`, `_` or `+`, not `.` or `..`, at most 255 bytes.
fn es_index(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['-', '_', '+'])
        && !name
            .chars()
            .any(|c| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid index name (lowercase, no spaces or \\ / * ? \" < > | , # :, not starting with - _ +)"
        ))
    }
}

/// Checks a tcp probe's `host:port` (`[v6]:port` for IPv6 addresses).
fn tcp_target(target: &str) -> Result<(), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("`{target}` is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{target}`: `{port}` is not a port"))?;
    if port == 0 {
        return Err(format!("`{target}`: port 0 cannot be probed"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.contains(char::is_whitespace)
        || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
    {
        return Err(format!("`{target}` is not host:port"));
    }
    Ok(())
}

/// Checks an http probe's URL: `http://` with a host (this build has no TLS).
fn http_target(target: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(target).map_err(|e| format!("`{target}` is not a URL ({e})"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "`{target}`: only http:// URLs can be probed (not {}://)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{target}` has no host"));
    }
    Ok(())
}

/// Refuses `v` outside `lo..=hi`.
fn within(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), Error> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(invalid(key, format!("{v} is outside {lo}..={hi}")))
    }
}

fn check_label(key: &str, v: &str) -> Result<(), Error> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{v}` must be 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.'"),
        ))
    }
}

fn parse_addrs(key: &str, items: &[String]) -> Result<Vec<Multiaddr>, Error> {
    items
        .iter()
        .map(|s| {
            s.trim()
                .parse::<Multiaddr>()
                .map_err(|e| invalid(key, format!("`{s}` is not a multiaddr ({e})")))
        })
        .collect()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "fleetmesh-node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err_key(r: Result<Resolved, Error>) -> String {
        match r {
            Err(Error::Invalid { key, .. }) => key,
            other => panic!("expected an invalid-key error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_alone_are_valid() {
        let s = load(&Sources::default()).expect("defaults load");
        assert_eq!(s.raw.node.region, "default");
        assert_eq!(s.raw.heartbeat.interval_ms, 1000);
        assert_eq!(s.api_listen.to_string(), "127.0.0.1:7480");
        assert_eq!(
            s.identity_file,
            PathBuf::from("fleetmesh-data/identity.key")
        );
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "[node]\nname = \"from-file\"\nregion = \"eu\"\nrole = \"web\"\n[heartbeat]\ninterval_ms = 500\n",
        )
        .expect("write");
        let mut src = Sources {
            file: Some(file),
            env: env(&[
                ("FLEETMESH__NODE__REGION", "us"),
                (
                    "FLEETMESH__NET__BOOTSTRAP",
                    "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/tcp/2",
                ),
                ("UNRELATED", "x"),
            ]),
            overrides: vec![],
        };
        let s = load(&src).expect("loads");
        assert_eq!(s.name, "from-file");
        assert_eq!(s.raw.node.region, "us", "environment beats the file");
        assert_eq!(s.raw.node.role, "web", "file beats defaults");
        assert_eq!(s.raw.heartbeat.interval_ms, 500);
        assert_eq!(s.bootstrap.len(), 2);

        src.overrides = vec![
            ("node.region".into(), OverrideValue::Str("ap".into())),
            ("heartbeat.interval_ms".into(), OverrideValue::Int(200)),
        ];
        let s = load(&src).expect("loads");
        assert_eq!(s.raw.node.region, "ap", "flags beat the environment");
        assert_eq!(s.raw.heartbeat.interval_ms, 200);
    }

    #[test]
    fn an_empty_list_in_the_environment_is_the_empty_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "[region]\nvoters = [\"a\", \"b\"]\n").expect("write");
        let src = Sources {
            file: Some(file),
            env: env(&[
                ("FLEETMESH__REGION__VOTERS", ""),
                ("FLEETMESH__NET__BOOTSTRAP", " "),
            ]),
            overrides: vec![],
        };
        let s = load(&src).expect("loads");
        assert!(s.raw.region.voters.is_empty(), "{:?}", s.raw.region.voters);
        assert!(s.bootstrap.is_empty());
    }

    #[test]
    fn desired_state_settings_default_and_bad_ones_name_their_key() {
        let s = load(&Sources::default()).expect("defaults load");
        assert_eq!(s.raw.desired.dir, PathBuf::from("config/desired"));
        assert_eq!(s.raw.desired.reload_ms, 2000);
        let bad = |key: &str, v: OverrideValue| {
            err_key(load(&Sources {
                overrides: vec![(key.to_string(), v)],
                ..Sources::default()
            }))
        };
        assert_eq!(
            bad("desired.reload_ms", OverrideValue::Int(50)),
            "desired.reload_ms"
        );
        assert_eq!(
            bad("desired.dir", OverrideValue::Str(String::new())),
            "desired.dir"
        );
        let s = load(&Sources {
            env: env(&[("FLEETMESH__DESIRED__DIR", "/etc/fleetmesh/desired")]),
            ..Sources::default()
        })
        .expect("loads");
        assert_eq!(s.raw.desired.dir, PathBuf::from("/etc/fleetmesh/desired"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |k: &str, v: &str| {
            err_key(load(&Sources {
                env: env(&[(k, v)]),
                ..Sources::default()
            }))
        };
        assert_eq!(bad("FLEETMESH__NET__LISTEN", "not-an-addr"), "net.listen");
        assert_eq!(bad("FLEETMESH__API__LISTEN", "localhost"), "api.listen");
        assert_eq!(
            bad("FLEETMESH__HEARTBEAT__INTERVAL_MS", "5"),
            "heartbeat.interval_ms"
        );
        assert_eq!(
            bad("FLEETMESH__HEARTBEAT__INTERVAL_MS", "soon"),
            "heartbeat.interval_ms"
        );
        assert_eq!(bad("FLEETMESH__NODE__REGION", "eu west"), "node.region");
        assert_eq!(
            bad("FLEETMESH__NET__PSK_FILE", "/nonexistent/psk"),
            "net.psk_file"
        );
        assert_eq!(
            bad("FLEETMESH__HEARTBEAT__DEAD_AFTER", "1"),
            "heartbeat.dead_after"
        );
        assert_eq!(
            bad("FLEETMESH__HEARTBEAT__DEAD_PHI", "2"),
            "heartbeat.dead_phi"
        );
    }

    #[test]
    fn a_bad_label_rule_names_its_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "[[labels]]\nlabel = \"x\"\nsubject = \"[oops\"\n").expect("write");
        let r = load(&Sources {
            file: Some(file),
            ..Sources::default()
        });
        assert_eq!(err_key(r), "labels[0]");
    }

    #[test]
    fn metric_deadbands_replace_the_defaults_and_bad_ones_name_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        let with = |rules: &str| {
            std::fs::write(&file, rules).expect("write");
            load(&Sources {
                file: Some(file.clone()),
                ..Sources::default()
            })
        };
        let s = with(
            "[[metrics.deadbands]]\nmetric = \"disk.*\"\ndeadband = \"3%\"\nmax_silence_s = 5\n",
        )
        .expect("loads");
        assert_eq!(
            s.metric_rules.len(),
            1,
            "a file's rules replace the defaults"
        );
        let e = fleetmesh_actors::delta::Encoder::new(s.metric_default, s.metric_rules);
        assert_eq!(
            e.config_for("disk./.used_pct").deadband,
            fleetmesh_actors::delta::Deadband::Percent(3.0)
        );
        assert_eq!(
            e.config_for("disk./.used_pct").max_silence,
            Duration::from_secs(5)
        );
        assert_eq!(
            e.config_for("load.1m").deadband,
            fleetmesh_actors::delta::Deadband::Percent(1.0),
            "no rule: the default band"
        );
        let bad = |rule: &str| err_key(with(&format!("[[metrics.deadbands]]\n{rule}\n")));
        assert_eq!(
            bad("metric = \"cpu.*\"\ndeadband = \"5 percent\""),
            "metrics.deadbands[0].deadband"
        );
        assert_eq!(
            bad("metric = \"[cpu\"\ndeadband = \"5\""),
            "metrics.deadbands[0].metric"
        );
        assert_eq!(
            bad("metric = \"cpu\"\ndeadband = \"5\"\nmax_silence_s = 0"),
            "metrics.deadbands[0].max_silence_s"
        );
        assert_eq!(
            err_key(load(&Sources {
                env: env(&[("FLEETMESH__METRICS__DEFAULT_DEADBAND", "lots")]),
                ..Sources::default()
            })),
            "metrics.default_deadband"
        );
    }

    #[test]
    fn anomaly_settings_are_checked_and_name_their_key() {
        let s = load(&Sources::default()).expect("defaults load");
        assert!(s.raw.anomaly.enabled);
        assert_eq!(s.raw.metrics.proc_root, PathBuf::from("/proc"));
        let a = &s.anomaly;
        assert_eq!((a.min_peers, a.threshold), (3, 3.0));
        assert_eq!(a.persist, Duration::from_secs(30));
        assert!(a.stale > Duration::from_secs(s.raw.metrics.max_silence_s));
        let s = load(&Sources {
            env: env(&[
                ("FLEETMESH__ANOMALY__METRICS", "load.*,mem.*"),
                ("FLEETMESH__ANOMALY__PERSIST_S", "2"),
            ]),
            ..Sources::default()
        })
        .expect("loads");
        assert_eq!(s.anomaly.metrics.len(), 2);
        assert_eq!(s.anomaly.persist, Duration::from_secs(2));
        let bad = |pairs: &[(&str, &str)]| {
            err_key(load(&Sources {
                env: env(pairs),
                ..Sources::default()
            }))
        };
        assert_eq!(
            bad(&[("FLEETMESH__ANOMALY__THRESHOLD", "-1")]),
            "anomaly.threshold"
        );
        assert_eq!(
            bad(&[("FLEETMESH__ANOMALY__MIN_PEERS", "0")]),
            "anomaly.min_peers"
        );
        assert_eq!(
            bad(&[("FLEETMESH__ANOMALY__STALE_S", "60")]),
            "anomaly.stale_s",
            "not longer than metrics.max_silence_s"
        );
        assert_eq!(
            bad(&[("FLEETMESH__ANOMALY__METRICS", "[load")]),
            "anomaly.metrics"
        );
        assert_eq!(
            bad(&[("FLEETMESH__METRICS__PROC_ROOT", "/nonexistent/proc")]),
            "metrics.proc_root"
        );
        // Disabled, its staleness is not checked against the metrics.
        load(&Sources {
            env: env(&[
                ("FLEETMESH__ANOMALY__ENABLED", "false"),
                ("FLEETMESH__ANOMALY__STALE_S", "60"),
            ]),
            ..Sources::default()
        })
        .expect("loads");
    }

    #[test]
    fn the_default_vocabulary_labels_by_role() {
        use fleetmesh_actors::spike::{Change, Kind, Layer, Observation};
        let s = load(&Sources::default()).expect("defaults load");
        let user = |n: &str| Observation::new(Kind::User, Change::Added, n, Layer::Realtime);
        assert_eq!(
            s.vocabulary.judge("web", &user("deploy")).label,
            "deployment_user"
        );
        assert_eq!(
            s.vocabulary.judge("baseline", &user("deploy")).label,
            "policy_violation"
        );
        assert_eq!(
            s.vocabulary.judge("database", &user("mallory")).label,
            "unauthorized_db_access"
        );
        assert_eq!(
            s.vocabulary.judge("database", &user("postgres")).label,
            "user_added"
        );
    }

    #[test]
    fn services_are_checked_and_bad_ones_name_their_entry() {
        use fleetmesh_actors::service::{Check, Expect};
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        let with = |text: &str| {
            std::fs::write(&file, text).expect("write");
            load(&Sources {
                file: Some(file.clone()),
                ..Sources::default()
            })
        };
        assert!(
            load(&Sources::default())
                .expect("defaults")
                .services
                .is_empty()
        );
        let s = with(
            "[[services]]\nname = \"db\"\nkind = \"tcp\"\ntarget = \"db.internal:5432\"\n\
             [[services]]\nname = \"web\"\nkind = \"http\"\ntarget = \"http://127.0.0.1:8080/health\"\n\
             interval_s = 3\ntimeout_ms = 500\nexpect_status = 204\n",
        )
        .expect("loads");
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.services[0].name, "db");
        assert_eq!(s.services[0].interval, Duration::from_secs(10), "default");
        assert_eq!(
            s.services[0].timeout,
            Duration::from_millis(2000),
            "default"
        );
        assert_eq!(
            s.services[1].check,
            Check::Http {
                url: "http://127.0.0.1:8080/health".into(),
                expect: Expect::Status(204)
            }
        );
        let refused = |entry: &str| {
            let text = format!(
                "[[services]]\nname = \"db\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:5432\"\n[[services]]\n{entry}\n"
            );
            match with(&text) {
                Err(Error::Invalid { key, problem }) => (key, problem),
                other => panic!("expected an invalid-key error, got {other:?}"),
            }
        };
        let (key, problem) = refused("name = \"db\"\nkind = \"tcp\"\ntarget = \"127.0.0.1:1\"");
        assert_eq!(key, "services[1].name");
        assert!(
            problem.contains("`db`") && problem.contains("twice"),
            "{problem}"
        );
        let cases = [
            (
                "name = \"\"\nkind = \"tcp\"\ntarget = \"a:1\"",
                "services[1].name",
            ),
            (
                "name = \"x\"\nkind = \"udp\"\ntarget = \"a:1\"",
                "services[1].kind",
            ),
            (
                "name = \"x\"\nkind = \"tcp\"\ntarget = \"localhost\"",
                "services[1].target",
            ),
            (
                "name = \"x\"\nkind = \"tcp\"\ntarget = \"a:http\"",
                "services[1].target",
            ),
            (
                "name = \"x\"\nkind = \"http\"\ntarget = \"https://a/\"",
                "services[1].target",
            ),
            (
                "name = \"x\"\nkind = \"http\"\ntarget = \"a:80\"",
                "services[1].target",
            ),
            (
                "name = \"x\"\nkind = \"tcp\"\ntarget = \"a:1\"\nexpect_status = 200",
                "services[1].expect_status",
            ),
            (
                "name = \"x\"\nkind = \"http\"\ntarget = \"http://a/\"\nexpect_status = 42",
                "services[1].expect_status",
            ),
            (
                "name = \"x\"\nkind = \"tcp\"\ntarget = \"a:1\"\ninterval_s = 2\ntimeout_ms = 2000",
                "services[1].timeout_ms",
            ),
            (
                "name = \"x\"\nkind = \"tcp\"\ntarget = \"a:1\"\ninterval_s = 0",
                "services[1].interval_s",
            ),
        ];
        for (entry, want) in cases {
            let (key, problem) = refused(entry);
            assert_eq!(key, want, "{entry}: {problem}");
        }
        assert!(
            refused("name = \"x\"\nkind = \"udp\"\ntarget = \"a:1\"")
                .1
                .contains("`x`")
        );
        let e = with("[[services]]\nname = \"x\"\nkind = \"tcp\"\ntarget = \"a:1\"\nport = 1\n")
            .expect_err("unknown field");
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn alert_channels_take_https_email_and_slack_and_name_a_bad_key() {
        use crate::alert::Target;
        use crate::alert::email::Starttls;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        let with = |text: &str| {
            std::fs::write(&file, text).expect("write");
            load(&Sources {
                file: Some(file.clone()),
                ..Sources::default()
            })
        };
        let s = with(
            "[[alerts.receivers]]\nkind = \"webhook\"\nurl = \"https://hooks.example.org/a\"\nca_file = \"/etc/ca.pem\"\n\
             [[alerts.receivers]]\nkind = \"slack\"\nurl = \"https://chat.example.org/hook/1\"\n\
             [[alerts.receivers]]\nkind = \"email\"\nname = \"ops-mail\"\nsmtp = \"mail.example.org:587\"\n\
             from = \"fleetmesh <fm@example.org>\"\nto = [\"ops@example.org\", \"b@example.org\"]\n\
             username = \"fm\"\npassword_file = \"/etc/fleetmesh/smtp\"\nca_file = \"/etc/ca.pem\"\n\
             [[alerts.receivers]]\nkind = \"email\"\nname = \"relay\"\nsmtp = \"127.0.0.1:25\"\n\
             from = \"fm@localhost\"\nto = [\"root@localhost\"]\nstarttls = \"off\"\n\
             [[alerts.receivers]]\nkind = \"elasticsearch\"\nurl = \"https://es:9200\"\n\
             [[alerts.receivers]]\nkind = \"alertmanager\"\nurl = \"https://am:9093\"\n",
        )
        .expect("loads");
        let r = &s.alert_sinks;
        assert_eq!(
            (&r[0].target, r[0].ca_file.as_deref()),
            (
                &Target::Webhook {
                    url: reqwest::Url::parse("https://hooks.example.org/a").expect("url")
                },
                Some(std::path::Path::new("/etc/ca.pem"))
            )
        );
        assert_eq!((r[1].name.as_str(), r[1].target.kind()), ("slack", "slack"));
        match &r[2].target {
            Target::Email(c) => {
                assert_eq!(
                    (c.host.as_str(), c.port, c.starttls),
                    ("mail.example.org", 587, Starttls::Required),
                    "STARTTLS is required by default"
                );
                assert_eq!(c.from.email.to_string(), "fm@example.org");
                assert_eq!(c.to.len(), 2);
                assert_eq!(c.username.as_deref(), Some("fm"));
            }
            other => panic!("an email target, not {other:?}"),
        }
        match &r[3].target {
            Target::Email(c) => assert_eq!(c.starttls, Starttls::Off),
            other => panic!("an email target, not {other:?}"),
        }
        assert_eq!(r[4].target.kind(), "elasticsearch");
        assert_eq!(r[5].target.kind(), "alertmanager");

        let refused = |entry: &str| {
            let text =
                format!("[[alerts.receivers]]\nkind = \"log\"\n[[alerts.receivers]]\n{entry}\n");
            match with(&text) {
                Err(Error::Invalid { key, problem }) => (key, problem),
                other => panic!("expected an invalid-key error, got {other:?}"),
            }
        };
        let mail = "kind = \"email\"\nsmtp = \"m:25\"\nfrom = \"a@b\"\nto = [\"c@d\"]";
        let cases: Vec<(String, &str, &str)> = vec![
            ("kind = \"slack\"".to_string(), "url", "needs a url"),
            (
                "kind = \"slack\"\nurl = \"ftp://h/\"".to_string(),
                "url",
                "https://",
            ),
            (
                "kind = \"email\"\nfrom = \"a@b\"\nto = [\"c@d\"]".to_string(),
                "smtp",
                "smtp server",
            ),
            (
                "kind = \"email\"\nsmtp = \"m\"\nfrom = \"a@b\"\nto = [\"c@d\"]".to_string(),
                "smtp",
                "host:port",
            ),
            (
                "kind = \"email\"\nsmtp = \"m:0\"\nfrom = \"a@b\"\nto = [\"c@d\"]".to_string(),
                "smtp",
                "port 0",
            ),
            (
                "kind = \"email\"\nsmtp = \"m:25\"\nto = [\"c@d\"]".to_string(),
                "from",
                "from address",
            ),
            (
                "kind = \"email\"\nsmtp = \"m:25\"\nfrom = \"not an address\"\nto = [\"c@d\"]"
                    .to_string(),
                "from",
                "not an email address",
            ),
            (
                "kind = \"email\"\nsmtp = \"m:25\"\nfrom = \"a@b\"".to_string(),
                "to",
                "at least one",
            ),
            (
                "kind = \"email\"\nsmtp = \"m:25\"\nfrom = \"a@b\"\nto = []".to_string(),
                "to",
                "at least one",
            ),
            (
                "kind = \"email\"\nsmtp = \"m:25\"\nfrom = \"a@b\"\nto = [\"c@d\", \"nope\"]"
                    .to_string(),
                "to",
                "`nope`",
            ),
            (
                format!("{mail}\nstarttls = \"always\""),
                "starttls",
                "required, opportunistic or off",
            ),
            (
                format!("{mail}\nstarttls = \"off\"\nca_file = \"/ca.pem\""),
                "ca_file",
                "starttls",
            ),
            (
                format!("{mail}\nusername = \"u\""),
                "password_file",
                "needs a password_file",
            ),
            (
                format!("{mail}\npassword_file = \"/p\""),
                "username",
                "needs a username",
            ),
            (format!("{mail}\nurl = \"http://h/\""), "url", "applies to"),
            (
                "kind = \"webhook\"\nurl = \"http://h/\"\nsmtp = \"m:25\"".to_string(),
                "smtp",
                "email sinks only",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://h/\"\nto = [\"a@b\"]".to_string(),
                "to",
                "email sinks only",
            ),
            (
                "kind = \"jsonl\"\npath = \"/tmp/x\"\nca_file = \"/ca.pem\"".to_string(),
                "ca_file",
                "applies to",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://h/\"\nca_file = \"\"".to_string(),
                "ca_file",
                "empty",
            ),
        ];
        for (entry, field, says) in cases {
            let (key, problem) = refused(&entry);
            assert_eq!(
                key,
                format!("alerts.receivers[1].{field}"),
                "{entry}: {problem}"
            );
            assert!(problem.contains(says), "{entry}: {problem}");
        }
    }

    #[test]
    fn alert_sinks_are_checked_and_bad_ones_name_their_entry() {
        use crate::alert::Target;
        let d = load(&Sources::default()).expect("defaults");
        assert_eq!(d.alert_sinks.len(), 1);
        assert_eq!(
            (d.alert_sinks[0].name.as_str(), &d.alert_sinks[0].target),
            ("log", &Target::Log),
            "one log sink by default"
        );
        assert_eq!(
            (d.raw.alerts.ring, d.raw.alerts.rate_per_minute),
            (1000, 10)
        );
        assert_eq!(
            d.alerting.route.routes.len(),
            1,
            "every alert to the one receiver"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        let with = |text: &str| {
            std::fs::write(&file, text).expect("write");
            load(&Sources {
                file: Some(file.clone()),
                env: env(&[("FLEETMESH__ALERTS__RATE_PER_MINUTE", "30")]),
                ..Sources::default()
            })
        };
        let s = with(
            "[[alerts.sinks]]\nkind = \"jsonl\"\npath = \"/tmp/a.jsonl\"\n\
             [[alerts.sinks]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\ntimeout_ms = 300\n\
             [[alerts.sinks]]\nkind = \"elasticsearch\"\nurl = \"http://127.0.0.1:9200/\"\n\
             [[alerts.sinks]]\nkind = \"webhook\"\nname = \"pager\"\nurl = \"http://h/p\"\nqueue = 5\nbatch = 2\n",
        )
        .expect("loads");
        assert_eq!(
            s.alerting.rate_per_minute, 30,
            "the environment sets scalars"
        );
        let names: Vec<&str> = s.alert_sinks.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            ["jsonl", "webhook", "elasticsearch", "pager"],
            "a file's sinks replace the default log sink"
        );
        assert_eq!(
            s.alert_sinks[2].target,
            Target::Elasticsearch {
                url: reqwest::Url::parse("http://127.0.0.1:9200/_bulk").expect("url"),
                index: "fleetmesh-alerts".into()
            }
        );
        assert_eq!(s.alert_sinks[1].timeout, Duration::from_millis(300));
        assert_eq!((s.alert_sinks[3].queue, s.alert_sinks[3].batch), (5, 2));
        assert_eq!(s.alert_sinks[0].retry_max_ms, 60_000, "default");

        let refused = |entry: &str| {
            let text = format!("[[alerts.sinks]]\nkind = \"log\"\n[[alerts.sinks]]\n{entry}\n");
            match with(&text) {
                Err(Error::Invalid { key, problem }) => (key, problem),
                other => panic!("expected an invalid-key error, got {other:?}"),
            }
        };
        let cases = [
            ("kind = \"pager\"", "alerts.sinks[1].kind"),
            ("kind = \"webhook\"", "alerts.sinks[1].url"),
            (
                "kind = \"webhook\"\nurl = \"not a url\"",
                "alerts.sinks[1].url",
            ),
            (
                "kind = \"webhook\"\nurl = \"ftp://h/\"",
                "alerts.sinks[1].url",
            ),
            ("kind = \"elasticsearch\"", "alerts.sinks[1].url"),
            (
                "kind = \"elasticsearch\"\nurl = \"http://h:9200\"\nindex = \"Alerts\"",
                "alerts.sinks[1].index",
            ),
            ("kind = \"jsonl\"", "alerts.sinks[1].path"),
            ("kind = \"log\"\npath = \"/tmp/x\"", "alerts.sinks[1].path"),
            (
                "kind = \"jsonl\"\npath = \"/tmp/x\"\nurl = \"http://h/\"",
                "alerts.sinks[1].url",
            ),
            ("kind = \"log\"", "alerts.sinks[1].name"),
            ("kind = \"log\"\nname = \"a b\"", "alerts.sinks[1].name"),
            (
                "kind = \"log\"\nname = \"x\"\nqueue = 0",
                "alerts.sinks[1].queue",
            ),
            (
                "kind = \"log\"\nname = \"x\"\nretry_min_ms = 500\nretry_max_ms = 100",
                "alerts.sinks[1].retry_max_ms",
            ),
            (
                "kind = \"log\"\nname = \"x\"\nrepush_ms = 10",
                "alerts.sinks[1].repush_ms",
            ),
        ];
        for (entry, want) in cases {
            let (key, problem) = refused(entry);
            assert_eq!(key, want, "{entry}: {problem}");
        }
        let (_, problem) = refused("kind = \"webhook\"\nname = \"pager\"");
        assert!(
            problem.contains("webhook sink `pager`") && problem.contains("needs a url"),
            "{problem}"
        );
        // Routes name receivers, which must exist; [[alerts.receivers]] is the same list.
        let s = with(
            "[alerts.route]\nreceiver = \"all\"\ngroup_wait_ms = 0\n\
             [[alerts.route.routes]]\nmatchers = [\"role = database\"]\nreceiver = \"dba\"\n\
             [[alerts.receivers]]\nkind = \"log\"\nname = \"all\"\n\
             [[alerts.receivers]]\nkind = \"log\"\nname = \"dba\"\nrate_per_minute = 3\n",
        )
        .expect("loads");
        assert_eq!(s.alerting.route.routes.len(), 1, "as written");
        assert_eq!(s.alerting.receivers[1].rate_per_minute, Some(3));
        let refused_whole = |text: &str| match with(text) {
            Err(Error::Invalid { key, problem }) => (key, problem),
            other => panic!("expected an invalid-key error, got {other:?}"),
        };
        let (key, problem) = refused_whole(
            "[[alerts.route.routes]]\nmatchers = [\"role = database\"]\nreceiver = \"dba\"\n\
             [[alerts.receivers]]\nkind = \"log\"\nname = \"dba\"\n",
        );
        assert_eq!(
            key, "alerts.route.receiver",
            "the root's default: {problem}"
        );
        assert!(
            problem.contains("`default`") && problem.contains("dba"),
            "{problem}"
        );
        let (key, _) = refused_whole(
            "[alerts.route]\nreceiver = \"log\"\n[[alerts.route.routes]]\nmatchers = [\"role = db\"]\nreceiver = \"dba\"\n\
             [[alerts.receivers]]\nkind = \"log\"\n",
        );
        assert_eq!(key, "alerts.route.routes[0].receiver");
        let (key, _) = refused_whole(
            "[alerts.route]\nreceiver = \"log\"\n[[alerts.route.routes]]\nmatchers = [\"role ~ db\"]\n\
             [[alerts.receivers]]\nkind = \"log\"\n",
        );
        assert_eq!(key, "alerts.route.routes[0].matchers[0]");
        let (key, problem) = refused_whole("[alerts]\nfold_ms = 1000\n");
        assert_eq!(key, "alerts.fold_ms");
        assert!(problem.contains("group_interval_ms"), "{problem}");
        let e = with("[[alerts.sinks]]\nkind = \"log\"\ncolour = 1\n").expect_err("unknown");
        assert!(e.to_string().contains("colour"), "{e}");
        assert_eq!(
            err_key(load(&Sources {
                env: env(&[("FLEETMESH__ALERTS__RING", "0")]),
                ..Sources::default()
            })),
            "alerts.ring"
        );
        // The history's bounds: 0 keeps nothing, refused by name.
        let (key, problem) = refused_whole("[alerts]\nhistory_days = 0\n");
        assert_eq!(key, "alerts.history_days");
        assert!(problem.contains("outside 1..="), "{problem}");
        let (key, _) = refused_whole("[alerts]\nhistory_bytes = 0\n");
        assert_eq!(key, "alerts.history_bytes");
        let d = with("[alerts]\nhistory_days = 30\n").expect("valid");
        assert_eq!(
            (d.raw.alerts.history_days, d.raw.alerts.history_bytes),
            (30, 64 << 20)
        );
    }

    #[test]
    fn unknown_keys_and_broken_files_are_refused() {
        let e = load(&Sources {
            env: env(&[("FLEETMESH__NODE__COLOUR", "blue")]),
            ..Sources::default()
        })
        .expect_err("unknown key");
        assert!(e.to_string().contains("colour"), "{e}");

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("broken.toml");
        std::fs::write(&file, "[node\nname=").expect("write");
        let e = load(&Sources {
            file: Some(file),
            ..Sources::default()
        })
        .expect_err("broken file");
        assert!(matches!(e, Error::File { .. }), "{e:?}");
    }
}
