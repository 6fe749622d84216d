//! How to reach LND.

use std::path::Path;

use satchel_domain::Network;

use crate::LndError;

/// Connection settings for [`crate::LndRest`].
#[derive(Clone)]
pub struct LndConfig {
    /// LND's REST endpoint, e.g. `https://127.0.0.1:8080` (LND's `restlisten`).
    pub rest_url: String,
    /// LND's `tls.cert` *contents* (PEM; hex or base64 of the DER also accepted). When set, the
    /// server must present exactly this certificate (pinning; hostname, expiry and CA flags are
    /// not checked, as LND's self-signed certificate is a CA used as a leaf). When `None`, the
    /// system's trust roots are used (LND behind a proxy with a public certificate, or `http://`
    /// with LND's `--no-rest-tls`).
    pub tls_cert_pem: Option<String>,
    /// The macaroon, hex encoded (`xxd -p -c 1000 admin.macaroon`). Needs invoice read/write,
    /// offchain read/write, info read (the `admin` macaroon, or one baked with
    /// `lncli bakemacaroon info:read invoices:read invoices:write offchain:read offchain:write`).
    pub macaroon_hex: String,
    /// The chain Satchel expects; [`crate::LndRest::connect`] refuses a node on another one.
    pub network: Network,
}

impl std::fmt::Debug for LndConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LndConfig")
            .field("rest_url", &self.rest_url)
            .field("tls_cert_pem", &self.tls_cert_pem.as_ref().map(|_| "…"))
            .field("macaroon_hex", &"…")
            .field("network", &self.network)
            .finish()
    }
}

impl LndConfig {
    /// Settings with a pinned certificate given as its contents.
    pub fn new(
        rest_url: impl Into<String>,
        tls_cert_pem: Option<String>,
        macaroon_hex: impl Into<String>,
        network: Network,
    ) -> LndConfig {
        LndConfig {
            rest_url: rest_url.into(),
            tls_cert_pem,
            macaroon_hex: macaroon_hex.into(),
            network,
        }
    }

    /// Settings from LND's files: `tls.cert` (PEM) and a macaroon file (binary, or hex text).
    pub fn from_files(
        rest_url: impl Into<String>,
        tls_cert_path: Option<&Path>,
        macaroon_path: &Path,
        network: Network,
    ) -> Result<LndConfig, LndError> {
        let cert = tls_cert_path.map(load_tls_cert).transpose()?;
        let macaroon = load_macaroon(macaroon_path)?;
        Ok(LndConfig::new(rest_url, cert, macaroon, network))
    }
}

/// Reads LND's `tls.cert` (returns its contents for [`LndConfig::tls_cert_pem`]).
pub fn load_tls_cert(path: &Path) -> Result<String, LndError> {
    std::fs::read_to_string(path).map_err(|e| LndError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// Reads a macaroon file and returns it hex encoded. LND writes binary macaroons
/// (`admin.macaroon`); a file that already holds hex text is accepted too.
pub fn load_macaroon(path: &Path) -> Result<String, LndError> {
    let bytes = std::fs::read(path).map_err(|e| LndError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    if let Ok(text) = std::str::from_utf8(&bytes)
        && let Ok(hex) = macaroon_hex(text)
    {
        return Ok(hex);
    }
    if bytes.is_empty() {
        return Err(LndError::Config(format!(
            "macaroon file {} is empty",
            path.display()
        )));
    }
    Ok(hex::encode(bytes))
}

/// Checks a hex macaroon given as text (e.g. from an environment variable) and normalizes it.
pub fn macaroon_hex(text: &str) -> Result<String, LndError> {
    let t = text.trim();
    if t.is_empty() || !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LndError::Config(
            "macaroon must be hex encoded (xxd -p -c 1000 admin.macaroon)".to_owned(),
        ));
    }
    Ok(t.to_ascii_lowercase())
}
