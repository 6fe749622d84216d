//! LND's self-signed `tls.cert`: parsing the forms it is configured in, and the pinned TLS
//! client (`satchel_lightning::pinned_tls`, shared with the CLN adapter).

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::LndError;

/// The DER of the configured certificate: PEM (the first certificate in it), or hex / base64
/// of the DER (as some LND connection strings carry it).
pub(crate) fn parse_cert(text: &str) -> Result<CertificateDer<'static>, LndError> {
    let t = text.trim();
    if t.contains("-----BEGIN") {
        return CertificateDer::from_pem_slice(t.as_bytes())
            .map_err(|e| LndError::Config(format!("tls certificate: invalid PEM: {e}")));
    }
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    let der =
        if compact.bytes().all(|b| b.is_ascii_hexdigit()) && compact.len().is_multiple_of(2) {
            hex::decode(&compact).ok()
        } else {
            None
        }
        .or_else(|| {
            base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&compact))
                .ok()
        })
        .filter(|d| d.first() == Some(&0x30))
        .ok_or_else(|| {
            LndError::Config("tls certificate: expected PEM, or hex/base64 DER".to_owned())
        })?;
    Ok(CertificateDer::from(der))
}

/// A rustls client configuration trusting only `cert`.
pub(crate) fn pinned_client_config(cert_text: &str) -> Result<rustls::ClientConfig, LndError> {
    let cert = parse_cert(cert_text)?;
    satchel_lightning::pinned_tls::client_config(vec![cert], "LND tls.cert")
        .map_err(|e| LndError::Config(format!("tls: {e}")))
}
