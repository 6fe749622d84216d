//! CLNRest: `POST <url>/v1/<method>` with the JSON-RPC params object as the body and the rune
//! in a `Rune` header, over TLS with CLN's self-signed certificate.
//!
//! CLNRest answers `201` with the bare `result` object on success, `401`/`403` when the rune is
//! missing or refused, and `500` with the JSON-RPC error object (`{code, message, data}`) when
//! the command failed. Any other answer (a proxy's error page, a truncated body) is a
//! transport error: we do not know what the node did.
//!
//! TLS: CLN generates its own CA (`ca.pem`) and a server certificate (`server.pem`, names `cln`
//! and `localhost`). Public-CA validation cannot work for that, so the client pins the
//! certificate: the handshake succeeds only when the server's end-entity certificate is
//! byte-for-byte one of the configured certificates (give `server.pem`, not `ca.pem`), and the
//! server proves possession of its key (the handshake signature is still verified). Host name,
//! validity period and issuer are deliberately not checked: the pin is the trust decision.

use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;

use super::{ClnTransport, RpcError, error_object};
use crate::ClnError;

/// The CLNRest client.
pub struct RestTransport {
    client: reqwest::Client,
    base: reqwest::Url,
    rune: String,
}

impl std::fmt::Debug for RestTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestTransport")
            .field("base", &self.base.as_str())
            .field("rune", &"<redacted>")
            .finish()
    }
}

impl RestTransport {
    /// A client for CLNRest at `url` (`https://host:port`), authenticating with `rune` and
    /// trusting only the certificate(s) in `tls_cert_pem` (PEM, CLN's `server.pem`).
    pub fn new(url: &str, rune: &str, tls_cert_pem: &str) -> Result<RestTransport, ClnError> {
        let mut base = reqwest::Url::parse(url)
            .map_err(|e| ClnError::Config(format!("CLNRest url {url:?}: {e}")))?;
        if base.scheme() != "https" {
            return Err(ClnError::Config(format!(
                "CLNRest url must be https:// (the rune is a bearer credential), got {url:?}"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        if rune.trim().is_empty() {
            return Err(ClnError::Config("CLNRest rune is empty".to_owned()));
        }
        let tls = pinned_tls_config(tls_cert_pem)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| ClnError::Config(format!("building the HTTP client: {e}")))?;
        Ok(RestTransport {
            client,
            base,
            rune: rune.trim().to_owned(),
        })
    }
}

#[async_trait]
impl ClnTransport for RestTransport {
    async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let url = self
            .base
            .join(&format!("v1/{method}"))
            .map_err(|e| RpcError::Transport(format!("bad method name {method:?}: {e}")))?;
        let response = self
            .client
            .post(url)
            .header("Rune", &self.rune)
            .json(&params)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| RpcError::Transport(format!("{method}: {}", error_chain(&e))))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            RpcError::Transport(format!("{method}: reading body: {}", error_chain(&e)))
        })?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                RpcError::Transport(format!("{method}: HTTP {status} with a non-JSON body"))
            });
        }
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let message = json
                .as_ref()
                .and_then(|j| j.get("message"))
                .and_then(Value::as_str)
                .map_or_else(snippet, str::to_owned);
            return Err(RpcError::Unauthorized(format!("HTTP {status}: {message}")));
        }
        match json {
            Some(err) if err.get("code").and_then(Value::as_i64).is_some() => {
                // CLNRest passes the JSON-RPC error object through (some versions wrap it).
                let err = match err.get("error") {
                    Some(inner) if inner.is_object() => inner.clone(),
                    _ => err,
                };
                Err(error_object(err))
            }
            Some(err) if err.get("error").is_some_and(Value::is_object) => {
                Err(error_object(err.get("error").cloned().unwrap_or_default()))
            }
            _ => Err(RpcError::Transport(format!(
                "{method}: HTTP {status}: {}",
                snippet()
            ))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A rustls client configuration that trusts exactly the certificates in `pem`.
pub fn pinned_tls_config(pem: &str) -> Result<rustls::ClientConfig, ClnError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClnError::Config(format!("CLNRest certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ClnError::Config(
            "CLNRest certificate PEM holds no certificate".to_owned(),
        ));
    }
    satchel_lightning::pinned_tls::client_config(certs, "CLNRest certificate")
        .map_err(|e| ClnError::Config(format!("TLS configuration: {e}")))
}
