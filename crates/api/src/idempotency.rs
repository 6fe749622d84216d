//! `Idempotency-Key` on money-moving POSTs: a retried request answers what the first one did
//! and moves no money twice.
//!
//! - The key (1–255 printable ASCII characters, else 400) is scoped to the caller's account.
//! - The request's fingerprint is SHA-256 over the method, the route, the path (which holds the
//!   wallet key), the content type, the `X-LNPAY-ASYNC` flag and the parsed body with object keys
//!   sorted; the same key with another fingerprint is answered 422 and does nothing.
//! - The key's row is written by the store in the transaction of the operation's money
//!   movement (see `satchel_store::idempotency`): at most one operation per key commits, in one
//!   process or several, and a crash leaves both or neither.
//! - After the operation, its answer (status, content type, body) is stored and replayed to
//!   every later request with that key, marked `Idempotent-Replayed: true`. Stored: every answer
//!   given after the operation committed, except a 5xx (a 202 "pending" withdraw stays the
//!   answer even after the payment completes). Errors of a request that committed nothing
//!   (bad input, insufficient balance, …) are not stored: a retry runs afresh, so it sees the
//!   balance as it is then.
//! - A duplicate that arrives while the first request is still running, or after a crash that
//!   lost the first answer, gets the answer rebuilt from what the operation created, as it is
//!   now (a withdraw still in flight: 202 pending). A wallet's keys are shown only once, so a
//!   wallet creation whose answer was not stored is answered 409 (`Retry-After: 1`).

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_service::Services;
use satchel_service::auth::Caller;
use satchel_service::idempotency::Rebuilt;
use satchel_service::records::{IdemRecord, StoredResponse};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::http::{ApiError, Params, truthy_header};
use crate::routes::{api_error, rebuilt_response};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on an answer that was replayed (or rebuilt) rather than produced by this request.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// Largest answer kept (LNPay answers of the wrapped routes are a few KiB at most).
const MAX_STORED_BODY: usize = 1 << 20;

/// The `Idempotency-Key` of a request, with what identifies the request apart from its body.
pub struct Idem {
    key: Option<String>,
    head: Vec<u8>,
}

impl<S: Send + Sync> FromRequestParts<S> for Idem {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(Idem {
                key: None,
                head: Vec::new(),
            });
        };
        let bad = || {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters, sent once."
            ))
        };
        let key = value.to_str().map_err(|_| bad())?;
        if values.next().is_some()
            || key.is_empty()
            || key.len() > MAX_KEY_LEN
            || !key.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(bad());
        }
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
            .unwrap_or_default();
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let is_async = truthy_header(&parts.headers, "x-lnpay-async");
        // Length-prefixed, so no two different requests can concatenate to the same bytes.
        let mut head = Vec::new();
        for field in [
            parts.method.as_str(),
            route,
            parts.uri.path(),
            content_type.as_str(),
            if is_async { "async" } else { "sync" },
        ] {
            head.extend_from_slice(&(field.len() as u64).to_be_bytes());
            head.extend_from_slice(field.as_bytes());
        }
        Ok(Idem {
            key: Some(key.to_owned()),
            head,
        })
    }
}

/// A JSON value with every object's keys in sorted order (whatever order the client sent).
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(x) = m.get(k) {
                    out.insert(k.clone(), canonical(x));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl Idem {
    fn fingerprint(&self, params: &Params) -> String {
        let body = canonical(&Value::Object(params.as_map().clone())).to_string();
        let mut h = Sha256::new();
        h.update(&self.head);
        h.update((body.len() as u64).to_be_bytes());
        h.update(body.as_bytes());
        hex::encode(h.finalize())
    }

    /// Runs `op` (the handler's work) at most once per key: see the module docs.
    pub async fn run<Fut>(
        self,
        s: &Services,
        caller: &Caller,
        params: &Params,
        op: Fut,
    ) -> Result<Response, ApiError>
    where
        Fut: Future<Output = Result<Response, ApiError>>,
    {
        let Some(key) = self.key.as_deref() else {
            return op.await;
        };
        let fingerprint = self.fingerprint(params);
        let idem = &s.idempotency;
        if let Some(rec) = idem.record(caller, key).await.map_err(api_error)? {
            return answer(s, caller, &fingerprint, rec).await;
        }
        let claim = idem.claim(caller, key, fingerprint.clone());
        let outcome = idem.run_claimed(claim.clone(), op).await;
        let response = match outcome {
            Ok(r) => r,
            Err(e) => {
                // A failed request may have lost a race for the key: then the winner's answer
                // is this request's too (its own failure, e.g. the refused key row, is moot).
                let rec = idem
                    .record_after_failure(caller, key)
                    .await
                    .map_err(api_error)?;
                match rec {
                    Some(rec) if rec.token != claim.token => {
                        return answer(s, caller, &fingerprint, rec).await;
                    }
                    Some(_) if !e.status().is_server_error() => e.into_response(),
                    // Nothing committed (or a 5xx after the commit, rebuilt on retry).
                    _ => return Err(e),
                }
            }
        };
        let status = response.status();
        if status.is_server_error() {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_STORED_BODY)
            .await
            .map_err(|e| ApiError::internal(format_args!("buffering an answer: {e}")))?;
        let stored = StoredResponse {
            status: status.as_u16(),
            content_type: parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        };
        match idem.finish(&claim, &stored).await {
            Ok(true) => {}
            Ok(false) if status.is_success() => {
                tracing::warn!(
                    %status,
                    "a keyed request succeeded without writing its idempotency key"
                );
            }
            Ok(false) => {}
            // The operation did commit: answer it; a retry rebuilds the answer.
            Err(e) => tracing::error!(error = %e, "storing an idempotent answer failed"),
        }
        Ok(Response::from_parts(parts, axum::body::Body::from(bytes)))
    }
}

/// The answer to a request whose key was already used.
async fn answer(
    s: &Services,
    caller: &Caller,
    fingerprint: &str,
    rec: IdemRecord,
) -> Result<Response, ApiError> {
    if rec.fingerprint != fingerprint {
        return Err(ApiError::with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This Idempotency-Key was already used with a different request.",
        ));
    }
    let mut response = match rec.response {
        Some(stored) => replay(stored),
        None => match s
            .idempotency
            .rebuild(caller, &rec.effect)
            .await
            .map_err(api_error)?
        {
            Rebuilt::Wallet(_) => {
                let mut r = ApiError::with_status(
                    StatusCode::CONFLICT,
                    "A request with this Idempotency-Key created a wallet whose answer is not \
                     available (in progress, or interrupted); its keys are never shown twice.",
                )
                .into_response();
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(r);
            }
            other => rebuilt_response(other),
        },
    };
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut r = (status, Bytes::from(stored.body)).into_response();
    if let Some(ct) = stored
        .content_type
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        r.headers_mut().insert(CONTENT_TYPE, ct);
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn idem(head: &str) -> Idem {
        Idem {
            key: Some("k".into()),
            head: head.as_bytes().to_vec(),
        }
    }

    fn params(json: &str) -> Params {
        Params::from_json_bytes(json.as_bytes()).unwrap()
    }

    #[test]
    fn fingerprint_ignores_key_order_at_every_depth() {
        let a = params(r#"{"a":1,"b":{"x":"1","y":[{"p":1,"q":2}]}}"#);
        let b = params(r#"{"b":{"y":[{"q":2,"p":1}],"x":"1"},"a":1}"#);
        assert_eq!(idem("h").fingerprint(&a), idem("h").fingerprint(&b));
    }

    #[test]
    fn fingerprint_tells_values_and_requests_apart() {
        let a = params(r#"{"num_satoshis":1}"#);
        let b = params(r#"{"num_satoshis":"1"}"#);
        let c = params(r#"{"num_satoshis":1,"memo":""}"#);
        let fa = idem("h").fingerprint(&a);
        assert_ne!(fa, idem("h").fingerprint(&b));
        assert_ne!(fa, idem("h").fingerprint(&c));
        assert_ne!(fa, idem("other route").fingerprint(&a));
    }
}
