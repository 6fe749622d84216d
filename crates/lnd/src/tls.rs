//! Certificate pinning for LND's self-signed `tls.cert`.
//!
//! LND's certificate is self-signed with `CA:TRUE` and used directly as the server (leaf)
//! certificate; webpki refuses that (`CaUsedAsEndEntity`) even when it is added as a trust
//! root. So instead of path validation we compare the end-entity certificate the server presents
//! byte for byte with the configured one, and still verify the handshake signature (proof that
//! the server holds the certificate's private key) with the crypto provider's algorithms.

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::LndError;

/// The server presented another certificate than the configured one.
struct NotPinned;

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server's certificate is not the configured LND tls.cert")
    }
}

// rustls prints the Debug form in its error message.
impl std::fmt::Debug for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NotPinned {}

/// Accepts exactly one certificate.
#[derive(Debug)]
pub(crate) struct PinnedCert {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotPinned)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedCert {
        cert,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LndError::Config(format!("tls: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}
