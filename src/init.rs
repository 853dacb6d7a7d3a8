//! `fleetmesh init`: writes a node's settings file from a few flags, checked as the node
//! will read it, so that a fleet is installed with one command per host.

use std::path::{Path, PathBuf};

use clap::Args;

/// What `fleetmesh init` asks.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// node.region: the region this node belongs to.
    #[arg(long)]
    pub region: String,
    /// node.role: web, database, baseline (or any role that has a policy).
    #[arg(long, default_value = "baseline")]
    pub role: String,
    /// node.name (default: the host name, read at each start).
    #[arg(long)]
    pub name: Option<String>,
    /// net.bootstrap: the address of a node already running (repeat for several). None
    /// for the first nodes of a fleet.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// region.bootstrap_expect: how many master-eligible members found the region together
    /// (default 3; 1 for a region of one node).
    #[arg(long)]
    pub bootstrap_expect: Option<u32>,
    /// net.psk_file: the fleet's pre-shared key. Created if the file does not exist (then
    /// copy it to every other node).
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// node.data_dir.
    #[arg(long, default_value = "/var/lib/fleetmesh")]
    pub data_dir: String,
    /// net.listen (repeat for several).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/7400")]
    pub listen: Vec<String>,
    /// api.listen (loopback by default: the console is opened through a tunnel, or set a
    /// token file to listen beyond it).
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub api_listen: String,
    /// Where to write the settings.
    #[arg(long, default_value = "/etc/fleetmesh/fleetmesh.toml")]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags are wrong (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Writing failed (exit code 1).
    #[error("{0}")]
    Failed(String),
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    /// The fleet key's fingerprint, when this run created the key.
    pub new_psk: Option<String>,
    pub text: String,
}

/// The settings file for `args`, as TOML text, checked as the node will read it (but for
/// the fleet key's file, which [`run`] checks or creates).
pub fn render(args: &InitArgs) -> Result<String, Error> {
    // A bad value is named now, not at first start.
    crate::settings::load_text(&text(args, false)?).map_err(|e| Error::Usage(e.to_string()))?;
    text(args, true)
}

fn text(args: &InitArgs, with_psk: bool) -> Result<String, Error> {
    use toml::{Table, Value};
    for b in &args.bootstrap {
        b.parse::<libp2p::Multiaddr>().map_err(|e| {
            Error::Usage(format!(
                "--bootstrap {b}: not a multiaddr ({e}); e.g. /ip4/10.0.0.5/tcp/7400 or /dns4/web-1.example/tcp/7400"
            ))
        })?;
    }
    for l in &args.listen {
        l.parse::<libp2p::Multiaddr>()
            .map_err(|e| Error::Usage(format!("--listen {l}: not a multiaddr ({e})")))?;
    }
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let mut node = Table::new();
    if let Some(n) = &args.name {
        node.insert("name".into(), Value::String(n.clone()));
    }
    node.insert("region".into(), Value::String(args.region.clone()));
    node.insert("role".into(), Value::String(args.role.clone()));
    node.insert("data_dir".into(), Value::String(args.data_dir.clone()));
    let mut net = Table::new();
    net.insert("listen".into(), strings(&args.listen));
    net.insert("bootstrap".into(), strings(&args.bootstrap));
    if let Some(p) = args.psk_file.as_ref().filter(|_| with_psk) {
        net.insert("psk_file".into(), Value::String(p.display().to_string()));
    }
    let mut api = Table::new();
    api.insert("listen".into(), Value::String(args.api_listen.clone()));
    let mut root = Table::new();
    root.insert("node".into(), Value::Table(node));
    root.insert("net".into(), Value::Table(net));
    root.insert("api".into(), Value::Table(api));
    if let Some(n) = args.bootstrap_expect {
        let mut region = Table::new();
        region.insert("bootstrap_expect".into(), Value::Integer(i64::from(n)));
        root.insert("region".into(), Value::Table(region));
    }
    let body = toml::to_string(&root).map_err(|e| Error::Failed(e.to_string()))?;
    Ok(format!(
        "# fleetmesh node settings, written by `fleetmesh init`. Every other key keeps its\n\
         # default (see the README's Configuration table); run with\n\
         # `fleetmesh node --config <this file>`.\n\n{body}"
    ))
}

/// Writes the settings file (and the fleet key, if asked for and missing).
pub fn run(args: &InitArgs) -> Result<Written, Error> {
    if args.out.exists() && !args.force {
        return Err(Error::Usage(format!(
            "{} exists: pass --force to replace it",
            args.out.display()
        )));
    }
    let text = render(args)?;
    let mut new_psk = None;
    if let Some(path) = &args.psk_file {
        if path.exists() {
            crate::identity::read_psk(path)
                .map_err(|e| Error::Usage(format!("--psk-file {}: {e}", path.display())))?;
        } else {
            let psk = crate::identity::write_psk(path)
                .map_err(|e| Error::Failed(format!("--psk-file {}: {e}", path.display())))?;
            new_psk = Some(psk.fingerprint().to_string());
        }
    }
    write(&args.out, &text)
        .map_err(|e| Error::Failed(format!("cannot write {}: {e}", args.out.display())))?;
    Ok(Written {
        path: args.out.clone(),
        new_psk,
        text,
    })
}

/// Writes `text` to `path` whole (a temporary file renamed over it), readable by its
/// owner and group only: it names the fleet key's file.
fn write(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
