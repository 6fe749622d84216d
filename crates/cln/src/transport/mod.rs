//! How JSON-RPC calls reach `lightningd`: the unix socket or CLNRest.
//!
//! Both transports implement [`ClnTransport`], so the backend logic in [`crate::ClnBackend`] is
//! written once against CLN's method names, parameter names and result fields.

mod rest;
mod socket;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use rest::{RestTransport, pinned_tls_config};
pub use socket::{ObjectReader, SocketTransport};

/// What a call to `lightningd` can end in, besides a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// No answer (connection refused or lost, TLS failure, timeout, unparseable reply). The
    /// command may or may not have run on the node.
    #[error("transport error: {0}")]
    Transport(String),
    /// `lightningd` answered with a JSON-RPC error object: the command ran and failed.
    #[error("CLN error {code}: {message}")]
    Rpc {
        /// CLN's error code (`-32602` bad parameters, `200`–`219` payment errors, `900`–`908`
        /// invoice errors, ...).
        code: i64,
        /// Its message.
        message: String,
        /// Its `data` member, if any.
        data: Option<Value>,
    },
    /// CLNRest refused the request (HTTP 401/403: missing, wrong or insufficient rune). The
    /// command was not run.
    #[error("CLNRest refused the rune: {0}")]
    Unauthorized(String),
}

impl RpcError {
    /// The CLN error code, if `lightningd` answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            RpcError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One JSON-RPC 2.0 call to `lightningd`.
#[async_trait]
pub trait ClnTransport: Send + Sync + std::fmt::Debug {
    /// Calls `method` with named `params` (a JSON object) and returns the `result` member.
    /// `timeout` bounds the whole call; when it expires the answer is
    /// [`RpcError::Transport`] and the command may still be running on the node (`lightningd`
    /// does not cancel a command whose client went away).
    async fn call(&self, method: &str, params: Value, timeout: Duration)
    -> Result<Value, RpcError>;
}

/// Turns a parsed JSON-RPC response object into the call's outcome.
pub(crate) fn response_outcome(mut response: Value) -> Result<Value, RpcError> {
    let Some(obj) = response.as_object_mut() else {
        return Err(RpcError::Transport(
            "response is not a JSON object".to_owned(),
        ));
    };
    if let Some(err) = obj.remove("error") {
        return Err(error_object(err));
    }
    match obj.remove("result") {
        Some(result) => Ok(result),
        None => Err(RpcError::Transport(
            "response has neither result nor error".to_owned(),
        )),
    }
}

/// A JSON-RPC error object `{code, message, data}` as an [`RpcError`].
pub(crate) fn error_object(err: Value) -> RpcError {
    let code = err.get("code").and_then(Value::as_i64);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match code {
        Some(code) => RpcError::Rpc {
            code,
            message,
            data: err.get("data").cloned(),
        },
        None => RpcError::Transport(format!("malformed error object: {err}")),
    }
}
