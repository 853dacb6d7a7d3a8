//! The `fleetmesh` command line: `node`, `init`, `keygen`, `psk`, `status`, `region`,
//! `alerts`, `silence`.
//!
//! Exit codes: 0 success, 1 a runtime failure, 2 a usage or settings error (the message
//! names the key or flag at fault).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::settings::{self, OverrideValue, Sources};
use crate::{identity, node, status};

#[derive(Debug, Parser)]
#[command(
    name = "fleetmesh",
    version,
    about = "Decentralized fleet-monitoring mesh"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Node(Box<NodeArgs>),
    /// Write a node's settings file (checked as the node will read it), and the fleet key
    /// if --psk-file names a file that does not exist yet.
    Init(Box<crate::init::InitArgs>),
    /// Write a new node identity (ed25519) to a file and print its peer id.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a new fleet pre-shared key to a file (share it with every node of the fleet).
    Psk {
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a running node's view: itself and its peers.
    Status {
        /// The node's API: host:port (HTTP), or https://host:port.
        #[arg(long, default_value = "127.0.0.1:7480")]
        api: String,
        /// Trust only these certificates (PEM) for an https:// API (default: the
        /// system's).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "summary")]
        json: bool,
        /// Print one line (for scripts): name, region, role and peer counts.
        #[arg(long)]
        summary: bool,
        /// The API token's file (`api.token_file`), for a node whose API listens beyond
        /// loopback.
        #[arg(long, env = "FLEETMESH_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Operate on the region's consensus.
    #[command(subcommand)]
    Region(RegionCommand),
    /// List, acknowledge and resolve alerts on a running node.
    #[command(subcommand)]
    Alerts(crate::alertctl::AlertsCommand),
    /// Add, list and expire alert silences on a running node.
    #[command(subcommand)]
    Silence(crate::alertctl::SilenceCommand),
    /// The whole fleet: regions, masters, terms, members by state, drift counts.
    Fleet(crate::fleetctl::FleetArgs),
    /// One node's digital twin.
    Twin(crate::fleetctl::TwinArgs),
    /// Drift from the desired state, fleet-wide.
    Drift(crate::fleetctl::DriftArgs),
    /// Move a node of this region to a lifecycle phase (maintenance downgrades its
    /// alerts to info; decommissioning takes it out of assignments and consensus).
    Phase(crate::fleetctl::PhaseArgs),
}

#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// After a majority of the region's voters is gone for good: found the region anew
    /// with the survivors, from a stopped survivor's data dir. Refuses while this node
    /// runs or any --peer reports a master. Start the node again afterwards.
    Recover {
        /// The stopped survivor's node.data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// The API (host:port, or https://host:port) of every other surviving member
        /// (repeat).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// The API token's file, for members whose API listens beyond loopback.
        #[arg(long, env = "FLEETMESH_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Trust only these certificates (PEM) for https:// APIs.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Write a new fleet admin key (ed25519) to a file and print the public half to put
    /// in every node's settings (`fleet.admin_key`). Keep the file offline.
    AdminKeygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign the voters of a region with the fleet admin key and commit the charter to
    /// the region's log: other regions then believe its masters only under it.
    Charter(crate::trustctl::CharterArgs),
}

/// Flags for the common settings; each overrides the file and the environment.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Settings file (TOML), layered over config/default.toml.
    #[arg(long, env = "FLEETMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// node.name
    #[arg(long)]
    pub name: Option<String>,
    /// node.region
    #[arg(long)]
    pub region: Option<String>,
    /// node.role
    #[arg(long)]
    pub role: Option<String>,
    /// node.data_dir
    #[arg(long)]
    pub data_dir: Option<String>,
    /// net.listen (repeat for several)
    #[arg(long)]
    pub listen: Vec<String>,
    /// net.bootstrap (repeat for several)
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// net.psk_file
    #[arg(long)]
    pub psk_file: Option<String>,
    /// net.mdns
    #[arg(long)]
    pub mdns: bool,
    /// api.listen (host:port)
    #[arg(long)]
    pub api_listen: Option<String>,
    /// heartbeat.interval_ms
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
    /// watch.root
    #[arg(long)]
    pub watch_root: Option<String>,
    /// Development mode: a lone node founds its region by itself
    /// (region.bootstrap_expect = 1).
    #[arg(long)]
    pub dev: bool,
}

impl NodeArgs {
    /// The flags as settings overrides.
    pub fn sources(&self) -> Sources {
        let mut o: Vec<(String, OverrideValue)> = Vec::new();
        let mut s = |key: &str, v: &Option<String>| {
            if let Some(v) = v {
                o.push((key.into(), OverrideValue::Str(v.clone())));
            }
        };
        s("node.name", &self.name);
        s("node.region", &self.region);
        s("node.role", &self.role);
        s("node.data_dir", &self.data_dir);
        s("net.psk_file", &self.psk_file);
        s("api.listen", &self.api_listen);
        s("watch.root", &self.watch_root);
        if !self.listen.is_empty() {
            o.push((
                "net.listen".into(),
                OverrideValue::List(self.listen.clone()),
            ));
        }
        if !self.bootstrap.is_empty() {
            o.push((
                "net.bootstrap".into(),
                OverrideValue::List(self.bootstrap.clone()),
            ));
        }
        if self.mdns {
            o.push(("net.mdns".into(), OverrideValue::Bool(true)));
        }
        if self.dev {
            o.push(("region.bootstrap_expect".into(), OverrideValue::Int(1)));
        }
        if let Some(ms) = self.heartbeat_interval_ms {
            o.push(("heartbeat.interval_ms".into(), OverrideValue::Int(ms)));
        }
        Sources {
            file: self.config.clone(),
            env: std::env::vars().collect(),
            overrides: o,
        }
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for every client and server of the process (ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Node(args) => run_node(&args),
        Command::Init(args) => match crate::init::run(&args) {
            Ok(w) => {
                print!("{}", w.text);
                eprintln!("wrote {}", w.path.display());
                if let (Some(fp), Some(p)) = (&w.new_psk, &args.psk_file) {
                    eprintln!(
                        "created the fleet key {fp} at {}: copy it to every other node of the fleet",
                        p.display()
                    );
                }
                eprintln!(
                    "start the node with: fleetmesh node --config {}",
                    w.path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e @ crate::init::Error::Usage(_)) => {
                eprintln!("fleetmesh init: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("fleetmesh init: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen { out } => {
            let key = libp2p::identity::Keypair::generate_ed25519();
            report(identity::write_identity(&out, &key).map(|()| {
                println!("{}", key.public().to_peer_id());
            }))
        }
        Command::Psk { out } => report(identity::write_psk(&out).map(|psk| {
            eprintln!("wrote fleet key {} to {}", psk.fingerprint(), out.display());
        })),
        Command::Status {
            api,
            ca_file,
            json,
            summary,
            token_file,
        } => {
            let token = match read_token(token_file.as_deref()) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let format = if json {
                status::Format::Json
            } else if summary {
                status::Format::Summary
            } else {
                status::Format::Table
            };
            report(status::run(
                &api,
                token.as_ref(),
                ca_file.as_deref(),
                format,
            ))
        }
        Command::Alerts(cmd) => operate("alerts", crate::alertctl::alerts(cmd)),
        Command::Silence(cmd) => operate("silence", crate::alertctl::silence(cmd)),
        Command::Fleet(args) => operate("fleet", crate::fleetctl::fleet(args)),
        Command::Twin(args) => operate("twin", crate::fleetctl::twin(args)),
        Command::Drift(args) => operate("drift", crate::fleetctl::drift(args)),
        Command::Phase(args) => operate("phase", crate::fleetctl::phase(args)),
        Command::Region(RegionCommand::AdminKeygen { out }) => {
            operate("region admin-keygen", crate::trustctl::admin_keygen(&out))
        }
        Command::Region(RegionCommand::Charter(args)) => {
            operate("region charter", crate::trustctl::charter(args))
        }
        Command::Region(RegionCommand::Recover {
            data_dir,
            peers,
            token_file,
            ca_file,
        }) => {
            let token = match read_token(token_file.as_deref()) {
                Ok(t) => t,
                Err(code) => return code,
            };
            match crate::recover::run(&data_dir, &peers, token.as_ref(), ca_file.as_deref()) {
                Ok(r) => {
                    println!(
                        "recovered region {}: voters {} in term {}; start the node again",
                        r.region,
                        r.voters
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        r.term
                    );
                    ExitCode::SUCCESS
                }
                Err(e @ crate::recover::Error::Refused(_)) => {
                    eprintln!("fleetmesh region recover: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("fleetmesh region recover: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints what an operator command did, or says why it failed (exit 2 for a bad flag).
fn operate(what: &str, r: Result<String, crate::alertctl::Error>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e @ crate::alertctl::Error::Usage(_)) => {
            eprintln!("fleetmesh {what}: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("fleetmesh {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The token of `--token-file`, if given; a file that cannot be used exits with 2.
fn read_token(path: Option<&std::path::Path>) -> Result<Option<crate::access::Token>, ExitCode> {
    match path.map(crate::access::Token::read) {
        None => Ok(None),
        Some(Ok(t)) => Ok(Some(t)),
        Some(Err(e)) => {
            eprintln!("fleetmesh: --token-file: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn report<E: std::fmt::Display>(r: Result<(), E>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetmesh: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_node(args: &NodeArgs) -> ExitCode {
    let settings = match settings::load(&args.sources()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleetmesh: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&settings.raw.log.filter);
    let workers = settings.raw.node.worker_threads;
    let system = actix::System::with_tokio_rt(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("the tokio runtime must start")
    });
    match system.block_on(node::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
