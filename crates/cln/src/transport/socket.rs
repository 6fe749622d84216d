//! JSON-RPC 2.0 over `lightningd`'s unix socket (`<lightning-dir>/<network>/lightning-rpc`).
//!
//! Framing: `lightningd` reads JSON objects off the stream as they complete (no delimiter is
//! required) and terminates each response with `"\n\n"`. This client writes one request object
//! followed by a newline and then parses the stream object by object, so it neither depends on
//! the blank-line terminator nor on a response arriving in a single read. Objects without our
//! `id` (notifications, which `lightningd` only sends when they were enabled) are skipped.
//!
//! Each call uses its own connection: long-running commands (`pay`, `waitanyinvoice`,
//! `waitsendpay`) never hold up other calls, and a dropped connection affects one call only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::{ClnTransport, RpcError, response_outcome};

/// Largest response accepted (a `listinvoices` without filter on a big node can be large).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The unix-socket JSON-RPC client.
#[derive(Debug)]
pub struct SocketTransport {
    path: PathBuf,
    next_id: AtomicU64,
}

impl SocketTransport {
    /// A client for the socket at `path` (nothing is opened until the first call).
    pub fn new(path: impl Into<PathBuf>) -> SocketTransport {
        SocketTransport {
            path: path.into(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn exchange(&self, id: u64, method: &str, params: Value) -> Result<Value, RpcError> {
        let transport = |what: &str, e: std::io::Error| {
            RpcError::Transport(format!("{what} {}: {e}", self.path.display()))
        };
        let mut stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| transport("connecting to", e))?;
        let request = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": method,
            "params": params,
        });
        let mut bytes = serde_json::to_vec(&request)
            .map_err(|e| RpcError::Transport(format!("encoding request: {e}")))?;
        bytes.push(b'\n');
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| transport("writing to", e))?;
        let mut reader = ObjectReader::default();
        loop {
            let message = reader.next(&mut stream).await?;
            match message.get("id") {
                Some(got) if *got == json!(id) => return response_outcome(message),
                // A notification (no id): not ours.
                None => continue,
                Some(other) => {
                    return Err(RpcError::Transport(format!(
                        "response for id {other}, expected {id}"
                    )));
                }
            }
        }
    }
}

#[async_trait]
impl ClnTransport for SocketTransport {
    async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(timeout, self.exchange(id, method, params)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(RpcError::Transport(format!(
                "{method}: no response within {timeout:?}"
            ))),
        }
    }
}

/// Splits a byte stream into JSON values as they complete: how [`SocketTransport`] reads
/// `lightningd`'s answers.
///
/// Public so that the fake `lightningd` in Satchel's test support (`satchel-fakes`) reads
/// requests with exactly this framing rather than a copy of it.
#[derive(Debug, Default)]
pub struct ObjectReader {
    buf: Vec<u8>,
}

impl ObjectReader {
    /// The next complete JSON value from `stream`.
    pub async fn next<R>(&mut self, stream: &mut R) -> Result<Value, RpcError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        loop {
            if let Some(v) = self.take()? {
                return Ok(v);
            }
            if self.buf.len() > MAX_RESPONSE_BYTES {
                return Err(RpcError::Transport("response too large".to_owned()));
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| RpcError::Transport(format!("reading response: {e}")))?;
            if n == 0 {
                return Err(RpcError::Transport(
                    "connection closed before a complete response".to_owned(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A complete value at the front of the buffer, if there is one.
    pub(crate) fn take(&mut self) -> Result<Option<Value>, RpcError> {
        let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match values.next() {
            None => {
                // Only whitespace so far.
                self.buf.clear();
                Ok(None)
            }
            Some(Ok(v)) => {
                let used = values.byte_offset();
                self.buf.drain(..used);
                Ok(Some(v))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(RpcError::Transport(format!("malformed JSON: {e}"))),
        }
    }

    /// Whether unread bytes (other than whitespace) remain.
    #[cfg(test)]
    pub(crate) fn has_pending(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// Appends bytes read elsewhere.
    #[cfg(test)]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reader_splits_objects_and_waits_for_more() {
        let mut r = ObjectReader::default();
        r.push(b"  {\"a\":1}\n\n{\"b\":");
        assert_eq!(r.take().unwrap(), Some(json!({"a": 1})));
        assert_eq!(r.take().unwrap(), None);
        assert!(r.has_pending());
        r.push(b"[2, \"}\"]}\n\n");
        assert_eq!(r.take().unwrap(), Some(json!({"b": [2, "}"]})));
        assert_eq!(r.take().unwrap(), None);
        assert!(!r.has_pending());
        r.push(b"}garbage");
        assert!(r.take().is_err());
    }
}
