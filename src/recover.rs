//! `fleetmesh region recover`: an operator's way back when a majority of a region's voters
//! is gone for good (crashed disks, decommissioned hosts), so that no master can ever be
//! elected again by the surviving minority.
//!
//! It runs offline, on a stopped survivor's data dir, after asking the other survivors'
//! APIs (`--peer`). It refuses while this node runs, while any peer reports a master for
//! the region, or when a peer holds a longer committed log than this node (recover on
//! that one instead: committed decisions must not be lost). Otherwise it writes a new
//! founding into `<data_dir>/region.rmp`: this node and the peers are the voters, in a
//! term above every term seen, recorded in the region's log as a `Recover` command that
//! every survivor applies once the recovered node is elected. Start the node again
//! afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmesh_actors::node;
use fleetmesh_actors::region;
use serde_json::Value;

use crate::durable::write_durable;
use crate::node::runtime_file;

/// Why the recovery was refused or failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// What the recovery wrote.
#[derive(Debug)]
pub struct Recovered {
    pub region: String,
    pub voters: Vec<(String, String)>,
    pub term: u64,
}

/// Runs the recovery on `data_dir` with the surviving peers' APIs `peers` (host:port).
pub fn run(
    data_dir: &Path,
    peers: &[String],
    token: Option<&crate::access::Token>,
    ca: Option<&Path>,
) -> Result<Recovered, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("cannot start: {e}")))?;
    rt.block_on(recover(data_dir, peers, token, ca))
}

async fn get(client: &reqwest::Client, api: &str, path: &str) -> Result<Value, String> {
    let resp = client
        .get(crate::status::url(api, path))
        .send()
        .await
        .map_err(|e| format!("cannot reach {api}: {}", crate::alert::chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{api}{path} answered {}", resp.status()));
    }
    resp.json()
        .await
        .map_err(|e| format!("{api}{path}: unreadable JSON: {e}"))
}

async fn recover(
    data_dir: &Path,
    peers: &[String],
    token: Option<&crate::access::Token>,
    ca: Option<&Path>,
) -> Result<Recovered, Error> {
    let client =
        crate::status::client(token, ca, Duration::from_secs(3)).map_err(Error::Refused)?;
    // This node must be stopped: neither its process nor its API may be there (over TLS,
    // a plain request would not tell).
    if let Ok(text) = std::fs::read_to_string(runtime_file(data_dir))
        && let Ok(rt) = serde_json::from_str::<crate::node::RuntimeFile>(&text)
    {
        let process = std::fs::read(format!("/proc/{}/cmdline", rt.pid))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("fleetmesh"));
        if process || get(&client, &rt.api, "/api/v1/node").await.is_ok() {
            return Err(Error::Refused(format!(
                "the node of {} is running (pid {}, API at {}); stop it first",
                data_dir.display(),
                rt.pid,
                rt.api
            )));
        }
    }
    let identity = data_dir.join("identity.key");
    let own = crate::identity::load(&identity)
        .map_err(|e| Error::Failed(format!("cannot read {}: {e}", identity.display())))?
        .public()
        .to_peer_id()
        .to_base58();
    let path = data_dir.join("region.rmp");
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::Failed(format!(
            "cannot read {} (this node never joined its region's consensus?): {e}",
            path.display()
        ))
    })?;
    // The image and the deltas appended to it; a torn last delta was never acted on.
    let (durable, _) = crate::durable::read_region(&bytes)
        .map_err(|e| Error::Failed(format!("{} is unreadable: {e}", path.display())))?;
    if peers.is_empty() {
        return Err(Error::Refused(
            "name the surviving members' APIs with --peer HOST:PORT (at least one)".into(),
        ));
    }
    let mut region_name: Option<String> = None;
    // This node's name, as the region's log bound it (in the snapshot, or after it).
    let own_name = durable
        .snapshot
        .iter()
        .flat_map(|s| s.image.state.names.iter())
        .find_map(|(name, peer)| (peer.as_str() == own).then(|| name.clone()))
        .or_else(|| {
            durable
                .entries
                .iter()
                .filter_map(|e| rmp_serde::from_slice::<region::Command>(&e.data).ok())
                .find_map(|c| match c {
                    region::Command::Name { name, peer } if peer.as_str() == own => Some(name),
                    _ => None,
                })
        })
        .unwrap_or_else(|| "(this node)".into());
    let mut voters = vec![(own_name, own.clone())];
    // Every term this node has seen: its vote's, its snapshot's and its log's.
    let mut term = durable.highest_term();
    for api in peers {
        let r = get(&client, api, "/api/v1/region")
            .await
            .map_err(|e| Error::Refused(format!("every survivor must answer: {e}")))?;
        let n = get(&client, api, "/api/v1/node")
            .await
            .map_err(|e| Error::Refused(format!("every survivor must answer: {e}")))?;
        let name = r["region"].as_str().unwrap_or_default().to_string();
        match &region_name {
            Some(first) if *first != name => {
                return Err(Error::Refused(format!(
                    "{api} is in region {name}, not {first}"
                )));
            }
            _ => region_name = Some(name.clone()),
        }
        if let Some(m) = r.get("master").filter(|m| !m.is_null()) {
            return Err(Error::Refused(format!(
                "{api} reports a master for region {name}: {} ({}) in term {}; the region has its authority",
                m["name"].as_str().unwrap_or("?"),
                m["peer_id"].as_str().unwrap_or("?"),
                r["term"].as_u64().unwrap_or(0)
            )));
        }
        // Between masters is not lost: an election may still succeed. Only a peer that
        // itself sees the voters' majority gone agrees to a recovery.
        let reason = r["no_master_reason"]["reason"]
            .as_str()
            .unwrap_or("unknown");
        if reason != "quorum_lost" {
            return Err(Error::Refused(format!(
                "{api} has no master for region {name} but does not see its quorum lost ({}); wait until `fleetmesh status` there says \"quorum lost\"",
                crate::status::master_line(&r)
            )));
        }
        let commit = r["commit"].as_u64().unwrap_or(0);
        if commit > durable.last_index() {
            return Err(Error::Refused(format!(
                "{api} has committed up to log index {commit}, beyond this node's log ({}): run the recovery on that node instead",
                durable.last_index()
            )));
        }
        term = term.max(r["term"].as_u64().unwrap_or(0));
        let peer = n["peer_id"].as_str().unwrap_or_default().to_string();
        let pname = n["name"].as_str().unwrap_or("?").to_string();
        if peer.is_empty() || voters.iter().any(|(_, p)| *p == peer) {
            return Err(Error::Refused(format!(
                "{api} is not a distinct survivor (peer id {peer:?})"
            )));
        }
        voters.push((pname, peer));
    }
    let ids: Vec<u64> = voters
        .iter()
        .map(|(_, p)| region::raft_id(&node::Id::from(p)))
        .collect();
    let new_term = term + 1;
    let by = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let recovered = durable
        .recover(&ids, new_term, &by, fleetmesh_actors::actor::unix_ms())
        .map_err(|e| Error::Failed(e.to_string()))?;
    eprintln!(
        "recovering region {}: voters {} in term {new_term} (above every term seen, {term})",
        region_name.as_deref().unwrap_or("?"),
        voters
            .iter()
            .map(|(n, p)| format!("{n} {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let backup: PathBuf = data_dir.join(format!(
        "region.rmp.before-recovery-{}",
        durable.highest_term()
    ));
    std::fs::copy(&path, &backup)
        .map_err(|e| Error::Failed(format!("cannot keep a copy at {}: {e}", backup.display())))?;
    let bytes = rmp_serde::to_vec(&recovered).map_err(|e| Error::Failed(e.to_string()))?;
    write_durable(&path, &bytes)
        .map_err(|e| Error::Failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(Recovered {
        region: region_name.unwrap_or_default(),
        voters,
        term: new_term,
    })
}
