//! Who may use the HTTP API: one rule for every endpoint, keyed off the listen address.
//!
//! - On a loopback address (the default, `127.0.0.1:7480`) the host's users are trusted:
//!   no token.
//! - On any other address every operator action (any method but GET and HEAD) needs the
//!   token of `api.token_file`, and so do reads unless `api.open_reads = true`.
//!   `/healthz`, `/readyz` and the console's page (`/`, `/console/*`) stay open: they tell
//!   nothing about the fleet.
//! - The token comes as `Authorization: Bearer <token>` or in the `fleetmesh_token`
//!   cookie (what a browser's page keeps), and is compared in constant time.

use std::net::SocketAddr;

use subtle::ConstantTimeEq;

/// The cookie a browser keeps the token in.
pub const COOKIE: &str = "fleetmesh_token";
/// Tokens shorter than this are refused at start.
pub const MIN_TOKEN: usize = 16;

/// The API token (never printed).
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Reads a token file: its first line, trimmed.
    pub fn read(path: &std::path::Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.len() < MIN_TOKEN {
            return Err(format!(
                "{}: the token must be at least {MIN_TOKEN} characters on its first line",
                path.display()
            ));
        }
        Ok(Token(token))
    }
}

impl Token {
    /// The token itself, to send.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The API's access rule.
#[derive(Debug, Clone)]
pub struct Access {
    /// False on a loopback address: everything is allowed.
    guarded: bool,
    token: Option<Token>,
    open_reads: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token came with it.
    Missing,
    /// A token came and it is not the right one.
    Wrong,
    /// Actions need a token and this node has none (`api.token_file` unset).
    NoToken,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this API listens beyond loopback: send the token (Authorization: Bearer)"
            }
            Refusal::Wrong => "the token is not this node's",
            Refusal::NoToken => {
                "operator actions need a token and this node has none (set api.token_file)"
            }
        }
    }
}

impl Access {
    /// The rule for an API on `listen`. Refuses a non-loopback address with neither a
    /// token nor open reads: nobody could use it.
    pub fn new(listen: SocketAddr, token: Option<Token>, open_reads: bool) -> Result<Self, String> {
        let guarded = !listen.ip().is_loopback();
        if guarded && token.is_none() && !open_reads {
            return Err(format!(
                "api.listen {listen} is not a loopback address: set api.token_file (or \
                 api.open_reads = true to serve reads without a token)"
            ));
        }
        Ok(Access {
            guarded,
            token,
            open_reads,
        })
    }

    /// Whether a request may go on: `read` for GET and HEAD, `presented` the token it
    /// carries if any.
    pub fn check(&self, path: &str, read: bool, presented: Option<&str>) -> Result<(), Refusal> {
        if !self.guarded
            || path == "/healthz"
            || path == "/readyz"
            // The session checks the token it is given itself.
            || path == "/api/v1/session"
            || (read && console_file(path))
            || (read && self.open_reads)
        {
            return Ok(());
        }
        self.verify(presented)
    }

    /// Whether `presented` is this node's token (whatever the address: the console's
    /// session checks the token it is given with this).
    pub fn verify(&self, presented: Option<&str>) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Err(Refusal::NoToken);
        };
        let Some(presented) = presented else {
            return Err(Refusal::Missing);
        };
        if bool::from(presented.as_bytes().ct_eq(token.0.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

/// Whether `path` is one of the console's own files (`/`, `/console/*`: the page, which
/// holds no fleet data).
pub fn console_file(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// The token a request carries: `Authorization: Bearer`, else the cookie.
pub fn presented(req: &actix_web::HttpRequest) -> Option<String> {
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    bearer.or_else(|| req.cookie(COOKIE).map(|c| c.value().to_string()))
}

/// The API's TLS settings from a PEM certificate chain and private key; the error names
/// the setting (`api.tls_cert` or `api.tls_key`) and the problem.
pub fn tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<std::sync::Arc<rustls::ServerConfig>, (&'static str, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| ("api.tls_cert", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err((
            "api.tls_cert",
            format!("{}: no certificate in it", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("api.tls_key", format!("{}: {e}", key.display())))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("api.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            (
                "api.tls_key",
                format!("{} does not go with {}: {e}", key.display(), cert.display()),
            )
        })?;
    Ok(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Option<Token> {
        Some(Token("0123456789abcdef-secret".into()))
    }

    #[test]
    fn loopback_is_open_and_other_addresses_need_the_token() {
        let local = Access::new("127.0.0.1:7480".parse().expect("addr"), None, false)
            .expect("loopback needs nothing");
        assert_eq!(local.check("/api/v1/patterns/approve", false, None), Ok(()));
        let open = Access::new("10.0.0.1:7480".parse().expect("addr"), token(), false)
            .expect("with a token");
        assert_eq!(
            open.check("/api/v1/node", true, None),
            Err(Refusal::Missing)
        );
        assert_eq!(
            open.check("/api/v1/node", true, Some("0123456789abcdef-secreT")),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            open.check("/api/v1/node", true, Some("0123456789abcdef-secret")),
            Ok(())
        );
        assert_eq!(open.check("/healthz", true, None), Ok(()));
        assert_eq!(open.check("/readyz", true, None), Ok(()));
    }

    #[test]
    fn open_reads_open_reads_only() {
        let a = Access::new("[::]:7480".parse().expect("addr"), None, true).expect("open reads");
        assert_eq!(a.check("/api/v1/region", true, None), Ok(()));
        assert_eq!(
            a.check("/api/v1/patterns/approve", false, Some("anything")),
            Err(Refusal::NoToken)
        );
        let b = Access::new("[::]:7480".parse().expect("addr"), token(), true).expect("both");
        assert_eq!(
            b.check("/api/v1/patterns/approve", false, None),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn a_non_loopback_api_that_nobody_could_use_is_refused_and_short_tokens_too() {
        let e =
            Access::new("0.0.0.0:7480".parse().expect("addr"), None, false).expect_err("refused");
        assert!(e.contains("api.token_file"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").expect("write");
        assert!(Token::read(&short).expect_err("short").contains("16"));
        let good = dir.path().join("good");
        std::fs::write(&good, "  0123456789abcdef-secret  \nignored\n").expect("write");
        let t = Token::read(&good).expect("read");
        assert_eq!(format!("{t:?}"), "Token(…)");
        let a = Access::new("10.0.0.1:1".parse().expect("addr"), Some(t), false).expect("ok");
        assert_eq!(
            a.check("/x", false, Some("0123456789abcdef-secret")),
            Ok(())
        );
        let missing = Token::read(&dir.path().join("absent")).expect_err("absent");
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
