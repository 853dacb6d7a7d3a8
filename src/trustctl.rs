//! `fleetmesh region admin-keygen` and `fleetmesh region charter`: the operator's fleet
//! admin key, and the charters it signs (see `fleetmesh_actors::trust`).

use std::path::{Path, PathBuf};

use clap::Args;
use fleetmesh_actors::{node, trust::Charter};
use libp2p::identity::ed25519;
use serde_json::Value;

use crate::alertctl::{Api, Error, call};

#[derive(Debug, Args)]
pub struct CharterArgs {
    /// The fleet admin key's secret file (`fleetmesh region admin-keygen`). Keep it
    /// offline; whoever holds it can charter any region.
    #[arg(long)]
    pub admin_key_file: PathBuf,
    /// The voters to charter (peer ids, comma-separated). Default: the voters of the
    /// region of the node --api names, as it reports them.
    #[arg(long, value_delimiter = ',')]
    pub voters: Vec<String>,
    /// Who charters (recorded in the charter).
    #[arg(long, default_value = "operator")]
    pub by: String,
    #[command(flatten)]
    pub api: Api,
}

/// Writes a new admin key's secret to `out` (hex, owner-only) and returns the line to
/// put in every node's settings.
pub fn admin_keygen(out: &Path) -> Result<String, Error> {
    let key = ed25519::Keypair::generate();
    let secret = hex::encode(key.secret().as_ref());
    crate::identity::write_private(out, format!("{secret}\n").as_bytes())
        .map_err(|e| Error::Runtime(e.to_string()))?;
    Ok(format!(
        "wrote the fleet admin key to {} (keep it offline)\nput this in every node's settings:\n[fleet]\nadmin_key = \"{}\"\n",
        out.display(),
        hex::encode(key.public().to_bytes())
    ))
}

fn read_admin(path: &Path) -> Result<ed25519::Keypair, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut bytes = hex::decode(text.trim())
        .map_err(|e| Error::Usage(format!("{}: not a hex admin key ({e})", path.display())))?;
    let secret = ed25519::SecretKey::try_from_bytes(&mut bytes).map_err(|e| {
        Error::Usage(format!(
            "{}: not an ed25519 secret key ({e})",
            path.display()
        ))
    })?;
    Ok(ed25519::Keypair::from(secret))
}

/// Signs a charter of the region of the node `--api` names, and posts it there.
pub fn charter(args: CharterArgs) -> Result<String, Error> {
    let key = read_admin(&args.admin_key_file)?;
    let region = call(&args.api, reqwest::Method::GET, "/api/v1/region", None)?;
    let name = region["region"]
        .as_str()
        .ok_or_else(|| Error::Runtime(format!("the node did not name its region: {region}")))?;
    let voters: Vec<node::Id> = if args.voters.is_empty() {
        voters_of(&region)
    } else {
        args.voters
            .iter()
            .map(|v| node::Id::from(v.trim()))
            .collect()
    };
    if voters.is_empty() {
        return Err(Error::Runtime(format!(
            "region {name} reports no voters yet: charter it once it has a master, or name --voters"
        )));
    }
    let now = fleetmesh_actors::actor::unix_ms();
    let mut c = Charter::new(name, voters, &args.by, now);
    c.sig = key.sign(&c.signed_bytes());
    let body = serde_json::to_value(&c).map_err(|e| Error::Runtime(e.to_string()))?;
    let v = call(
        &args.api,
        reqwest::Method::POST,
        "/api/v1/region/charter",
        Some(body),
    )?;
    Ok(format!(
        "chartered region {} with voters {} (handed to the region's log; `GET /api/v1/fleet/trust` shows it once committed)\n",
        name,
        v["voters"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    ))
}

/// The peer ids of the voters `GET /api/v1/region` lists.
fn voters_of(region: &Value) -> Vec<node::Id> {
    region["consensus_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["voting"].as_bool() == Some(true))
        .filter_map(|v| v["peer_id"].as_str())
        .map(node::Id::from)
        .collect()
}
