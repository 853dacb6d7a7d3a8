//! The software bill of materials of this binary: a CycloneDX 1.5 JSON document listing
//! the crates linked into `fleetmesh` (name, version, purl, Cargo.lock checksum,
//! licence), embedded at build time, with its sha256 and its number of components for
//! the node's twin.
//!
//! Why a build script: the node must be able to hand out the SBOM of the binary it runs,
//! and a plain `cargo build` must produce a binary that carries it. cargo-cyclonedx
//! writes files beside the sources when someone runs it, so a binary built without it
//! has no SBOM, and nothing ties the file to the binary. cargo-auditable embeds its own
//! compact format, but only when builds go through its cargo wrapper. `build.rs` runs
//! in every build, reads the crate graph from `cargo metadata` (Cargo.lock as a
//! fallback) and writes the document that this module embeds with `include_str!`.
//!
//! This module owns the embedded document and its digest; it reads nothing at run time.

use std::sync::LazyLock;

use fleetmesh_actors::spike::Digest;
use sha2::{Digest as _, Sha256};

static DOCUMENT: &str = include_str!(concat!(env!("OUT_DIR"), "/sbom.cdx.json"));

static DIGEST: LazyLock<Digest> = LazyLock::new(|| Digest(Sha256::digest(DOCUMENT).into()));

static COMPONENTS: LazyLock<u32> = LazyLock::new(|| {
    // The document is written by our own build script, but a count is no reason to
    // stop a node: a document that does not parse counts zero.
    serde_json::from_str::<serde_json::Value>(DOCUMENT)
        .ok()
        .and_then(|v| v["components"].as_array().map(Vec::len))
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
});

/// The SBOM, CycloneDX 1.5 JSON.
pub fn document() -> &'static str {
    DOCUMENT
}

/// sha256 of [`document`].
pub fn digest() -> Digest {
    *DIGEST
}

/// The components the SBOM lists (the root package, in `metadata.component`, aside).
pub fn components() -> u32 {
    *COMPONENTS
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value;

    fn parsed() -> Value {
        serde_json::from_str(document()).expect("the embedded SBOM is JSON")
    }

    fn component<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
        doc["components"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
    }

    #[test]
    fn document_is_cyclonedx_with_the_root_component() {
        let doc = parsed();
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["metadata"]["component"]["name"], "fleetmesh");
        assert_eq!(
            doc["metadata"]["component"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        let serial = doc["serialNumber"].as_str().expect("a serial number");
        // The schema's pattern: a UUID of version 1 to 5, RFC 4122 variant.
        let uuid = serial.strip_prefix("urn:uuid:").expect("a UUID URN");
        let groups: Vec<&str> = uuid.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12], "{serial}");
        assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert!(groups[2].starts_with(['1', '2', '3', '4', '5']), "{serial}");
        assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "{serial}");
        assert!(
            doc.get("metadata")
                .and_then(|m| m.get("timestamp"))
                .is_none()
        );
    }

    #[test]
    fn lists_linked_crates_with_purls_and_checksums() {
        let doc = parsed();
        for name in ["tokio", "libp2p", "fleetmesh-actors"] {
            let c = component(&doc, name).unwrap_or_else(|| panic!("{name} listed"));
            let version = c["version"].as_str().expect("a version");
            assert_eq!(c["purl"], format!("pkg:cargo/{name}@{version}"));
            assert_eq!(c["scope"], "required", "{name}");
        }
        let tokio = component(&doc, "tokio").expect("tokio listed");
        assert_eq!(tokio["hashes"][0]["alg"], "SHA-256");
        assert_eq!(
            tokio["hashes"][0]["content"].as_str().map(str::len),
            Some(64)
        );
    }

    #[test]
    fn leaves_out_dev_dependencies() {
        let doc = parsed();
        for dev_only in ["proptest", "fantoccini", "rcgen", "tempfile"] {
            assert!(component(&doc, dev_only).is_none(), "{dev_only} listed");
        }
    }

    #[test]
    fn digest_and_count_match_the_document() {
        let expected: [u8; 32] = Sha256::digest(document().as_bytes()).into();
        assert_eq!(digest(), Digest(expected));
        let listed = parsed()["components"].as_array().map_or(0, Vec::len);
        assert!(listed > 50, "{listed}");
        assert_eq!(components() as usize, listed);
    }
}
