//! The node's ed25519 identity and the fleet's pre-shared key, on disk.
//!
//! The identity file holds the libp2p protobuf encoding of the keypair, written with mode
//! 0600 so that the peer id survives restarts and stays private. The key file uses the
//! standard `/key/swarm/psk/1.0.0/` text form.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} exists already; refusing to overwrite a key")]
    Exists { path: String },
    #[error("{path} is not a fleetmesh identity: {reason}")]
    BadIdentity { path: String, reason: String },
    #[error("{path} is not a fleet key: {reason}")]
    BadPsk { path: String, reason: String },
}

/// Loads the identity at `path`, or creates and saves a new one if there is none.
pub fn load_or_create(path: &Path) -> Result<Keypair, Error> {
    if path.exists() {
        return load(path);
    }
    let key = Keypair::generate_ed25519();
    write_identity(path, &key)?;
    tracing::info!(path = %path.display(), peer_id = %key.public().to_peer_id(), "created node identity");
    Ok(key)
}

/// Loads the identity at `path`.
pub fn load(path: &Path) -> Result<Keypair, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| Error::BadIdentity {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Writes a new identity to `path` (never over an existing file).
pub fn write_identity(path: &Path, key: &Keypair) -> Result<(), Error> {
    let bytes = key.to_protobuf_encoding().map_err(|e| Error::BadIdentity {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_private(path, &bytes)
}

/// Writes a new random fleet key to `path` (never over an existing file).
pub fn write_psk(path: &Path) -> Result<PreSharedKey, Error> {
    let psk = PreSharedKey::new(rand::random::<[u8; 32]>());
    write_private(path, format!("{psk}\n").as_bytes())?;
    Ok(psk)
}

/// Reads the fleet key at `path`.
pub fn read_psk(path: &Path) -> Result<PreSharedKey, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    text.trim().parse().map_err(|e| Error::BadPsk {
        path: path.display().to_string(),
        reason: format!("{e}"),
    })
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let werr = |source| Error::Write {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        return Err(Error::Exists {
            path: path.display().to_string(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(werr)?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_across_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/identity.key");
        let a = load_or_create(&path).expect("created");
        let b = load_or_create(&path).expect("loaded");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = fs::metadata(&path).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn psk_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet.psk");
        let psk = write_psk(&path).expect("written");
        assert_eq!(
            read_psk(&path).expect("read").fingerprint().to_string(),
            psk.fingerprint().to_string()
        );
        assert!(matches!(write_psk(&path), Err(Error::Exists { .. })));
    }

    #[test]
    fn junk_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk");
        fs::write(&path, b"\x00\x01 not a key").expect("write");
        let e = load(&path).expect_err("junk identity");
        assert!(e.to_string().contains("junk"), "{e}");
        assert!(matches!(read_psk(&path), Err(Error::BadPsk { .. })));
    }
}
