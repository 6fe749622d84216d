//! HTTP plumbing: authenticated requests, LND error bodies, newline-delimited JSON streams.

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use satchel_lightning::LnError;
use serde::de::DeserializeOwned;

use crate::wire::{RpcStatus, StreamLine, parse_error_body};
use crate::{LndConfig, LndError};

/// Header carrying the hex macaroon through LND's REST proxy.
pub(crate) const MACAROON_HEADER: &str = "Grpc-Metadata-macaroon";

/// Connecting to LND.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole unary request (and the first line of a lookup stream).
pub(crate) const UNARY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest stream line we accept (a `Payment` with many HTLC attempts can be large).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// What went wrong with a call.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// No answer from LND itself (connection, TLS, timeout, broken stream, garbage).
    Transport(String),
    /// LND answered with its error body.
    Lnd(LndStatus),
}

/// An error answer from LND: HTTP status (200 for an error line inside a stream) and the gRPC
/// status it carries.
#[derive(Debug, Clone)]
pub(crate) struct LndStatus {
    pub http: u16,
    pub code: i32,
    pub message: String,
}

/// gRPC codes.
pub(crate) mod code {
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAUTHENTICATED: i32 = 16;
}

impl LndStatus {
    fn from_rpc(http: u16, s: RpcStatus) -> LndStatus {
        LndStatus {
            http,
            code: s.code,
            message: s.message,
        }
    }

    pub fn message_has(&self, needle: &str) -> bool {
        self.message.to_ascii_lowercase().contains(needle)
    }

    /// The macaroon was refused. LND reports macaroon failures as plain errors (gRPC `Unknown`,
    /// HTTP 500), e.g. "verification failed: signature mismatch after caveat verification",
    /// "expected 1 macaroon, got 0", "permission denied"; a proxy in front may say 401/403.
    pub fn is_auth(&self) -> bool {
        self.http == 401
            || self.http == 403
            || self.code == code::UNAUTHENTICATED
            || self.code == code::PERMISSION_DENIED
            || self.message_has("macaroon")
            || self.message_has("verification failed")
            || self.message_has("permission denied")
    }

    /// LND is up but cannot serve yet (wallet locked, still starting, shutting down) or failed
    /// internally.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.code, 1 | 4 | 8 | 10 | 13 | 14 | 15)
            || self.message_has("wallet locked")
            || self.message_has("not yet ready")
            || self.message_has("starting up")
            || self.message_has("rpc services not available")
            || self.message_has("server is still in the process")
            || self.message_has("shutting down")
    }

    /// An explicit refusal of the request itself (bad argument, unknown object, conflict).
    pub fn is_refusal(&self) -> bool {
        !self.is_auth()
            && !self.is_unavailable()
            && (matches!(
                self.code,
                code::INVALID_ARGUMENT
                    | code::NOT_FOUND
                    | code::ALREADY_EXISTS
                    | code::FAILED_PRECONDITION
                    | code::OUT_OF_RANGE
                    | code::UNIMPLEMENTED
            ) || (400..500).contains(&self.http))
    }

    fn describe(&self) -> String {
        format!(
            "LND error (HTTP {}, code {}): {}",
            self.http, self.code, self.message
        )
    }
}

impl CallError {
    /// Default mapping: explicit refusals are `Rejected`; everything else (including LND's
    /// catch-all `Unknown` code, which is how most of its errors arrive) is `Transport`, i.e.
    /// "effect unknown". Callers handle the errors they know first.
    pub fn into_ln(self) -> LnError {
        match self {
            CallError::Transport(m) => LnError::Transport(m),
            CallError::Lnd(s) if s.is_auth() => {
                LnError::Transport(format!("LND refused the macaroon: {}", s.describe()))
            }
            CallError::Lnd(s) if s.is_refusal() => LnError::Rejected(s.message),
            CallError::Lnd(s) => LnError::Transport(s.describe()),
        }
    }
}

fn transport(e: reqwest::Error) -> CallError {
    let mut msg = format!("LND unreachable: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    CallError::Transport(msg)
}

/// An authenticated REST client.
pub(crate) struct Rest {
    base: String,
    client: reqwest::Client,
}

impl Rest {
    pub fn new(cfg: &LndConfig) -> Result<Rest, LndError> {
        let base = cfg.rest_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(LndError::Config(format!(
                "rest_url must start with https:// or http://, got {base:?}"
            )));
        }
        let macaroon = crate::config::macaroon_hex(&cfg.macaroon_hex)?;
        let mut value = HeaderValue::from_str(&macaroon)
            .map_err(|e| LndError::Config(format!("macaroon: {e}")))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(MACAROON_HEADER, value);
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            // The invoice subscription may sit idle for hours: notice dead connections.
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(cert) = &cfg.tls_cert_pem {
            builder = builder.tls_backend_preconfigured(crate::tls::pinned_client_config(cert)?);
        }
        let client = builder
            .build()
            .map_err(|e| LndError::Config(format!("HTTP client: {e}")))?;
        Ok(Rest { base, client })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn error_of(resp: reqwest::Response) -> CallError {
        let status = resp.status();
        let body = match tokio::time::timeout(UNARY_TIMEOUT, resp.bytes()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return transport(e),
            Err(_) => {
                return CallError::Transport(format!("HTTP {status}: timed out reading body"));
            }
        };
        match parse_error_body(&body) {
            Some(s) => CallError::Lnd(LndStatus::from_rpc(status.as_u16(), s)),
            None => CallError::Transport(format!(
                "HTTP {status} from LND: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
        }
    }

    /// A unary call: JSON in (optional), JSON out.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, CallError> {
        let mut req = self
            .client
            .request(method, self.url(path))
            .timeout(UNARY_TIMEOUT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(Self::error_of(resp).await);
        }
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Transport(format!(
                "unexpected answer from LND (HTTP {status}): {e}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ))
        })
    }

    /// Opens a server stream. Note that LND's gateway may send the response headers only with
    /// the first message, so this can wait as long as the first message takes.
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<NdJson, CallError> {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(Self::error_of(resp).await);
        }
        Ok(NdJson {
            http: resp.status(),
            body: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
            done: false,
        })
    }
}

/// A newline-delimited JSON stream of `{"result": …}` / `{"error": …}` objects.
pub(crate) struct NdJson {
    http: StatusCode,
    body: BoxStream<'static, Result<Vec<u8>, reqwest::Error>>,
    buf: Vec<u8>,
    done: bool,
}

impl NdJson {
    /// The next message: `Ok(None)` at the end of the stream, `Err(Lnd)` for an error line,
    /// `Err(Transport)` if the stream broke or carried garbage.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CallError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if let Some(msg) = self.parse::<T>(&line)? {
                    return Ok(Some(msg));
                }
                continue;
            }
            if self.done {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                // A last message without a trailing newline.
                let line = std::mem::take(&mut self.buf);
                return self.parse::<T>(&line);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    if self.buf.len() > MAX_LINE {
                        return Err(CallError::Transport("LND stream line too long".to_owned()));
                    }
                }
                Some(Err(e)) => return Err(transport(e)),
                None => self.done = true,
            }
        }
    }

    fn parse<T: DeserializeOwned>(&self, line: &[u8]) -> Result<Option<T>, CallError> {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let msg: StreamLine<T> = serde_json::from_slice(trimmed).map_err(|e| {
            CallError::Transport(format!(
                "unexpected stream line from LND: {e}: {}",
                String::from_utf8_lossy(&trimmed[..trimmed.len().min(300)])
            ))
        })?;
        if let Some(err) = msg.error {
            return Err(CallError::Lnd(LndStatus::from_rpc(self.http.as_u16(), err)));
        }
        match msg.result {
            Some(r) => Ok(Some(r)),
            None => Err(CallError::Transport(format!(
                "stream line without result: {}",
                String::from_utf8_lossy(&trimmed[..trimmed.len().min(300)])
            ))),
        }
    }
}
