//! Recent API errors per account, for the account page.
//!
//! There is no stored log of refused requests, so the server keeps a small ring in memory: the
//! last [`PER_ACCOUNT`] 4xx/5xx answers to requests whose API key names an account, for at most
//! [`MAX_ACCOUNTS`] accounts. What is kept is the route template (never the path: it carries
//! keys), method, status, the envelope's message and the request id. It is lost on restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use satchel_domain::AccountId;
use satchel_service::Services;

use super::Ui;
use crate::http::extract_api_key;

/// Errors kept per account.
pub const PER_ACCOUNT: usize = 50;
/// Accounts tracked at most (the table is emptied past this).
pub const MAX_ACCOUNTS: usize = 10_000;
/// Error bodies larger than this are not read for their message.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// One refused or failed request.
#[derive(Debug, Clone)]
pub struct RecentError {
    /// When (seconds since the epoch).
    pub at_secs: i64,
    /// HTTP method.
    pub method: String,
    /// Route template (`/v1/wallet/{key}/withdraw`), or `unmatched`.
    pub route: String,
    /// HTTP status.
    pub status: u16,
    /// The envelope's `message`.
    pub message: String,
    /// `X-Request-Id` of the answer.
    pub request_id: String,
}

/// The ring.
#[derive(Default)]
pub struct RecentErrors {
    map: Mutex<HashMap<AccountId, VecDeque<RecentError>>>,
}

impl RecentErrors {
    fn push(&self, account: AccountId, e: RecentError) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_ACCOUNTS && !m.contains_key(&account) {
            m.clear();
        }
        let q = m.entry(account).or_default();
        if q.len() >= PER_ACCOUNT {
            q.pop_back();
        }
        q.push_front(e);
    }

    /// The account's recent errors, newest first.
    pub fn recent(&self, account: &AccountId) -> Vec<RecentError> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Middleware: records the 4xx/5xx answers of `/v1` requests that carried a known key.
pub async fn record(
    State((ui, services)): State<(Arc<Ui>, Services)>,
    req: Request,
    next: Next,
) -> Response {
    let key = req
        .uri()
        .path()
        .starts_with("/v1/")
        .then(|| extract_api_key(req.headers(), req.uri().query()))
        .flatten();
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    let Some(key) = key else { return resp };
    // Unknown keys (already looked up once, and counted by the throttle) name no account.
    let unknown = resp
        .extensions()
        .get::<crate::http::error::RejectedCredential>()
        .is_some();
    if unknown || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // A known key (from the auth cache) names the account; unknown keys are not recorded.
    let account = match services.auth.authenticate(Some(&key)).await {
        Ok(c) => c.account_id,
        Err(_) => match services.auth.wallet_page_caller(&key).await {
            Ok((c, _)) => c.account_id,
            Err(_) => return resp,
        },
    };
    let route = crate::http::observe::matched_route(&resp)
        .unwrap_or(crate::http::observe::UNMATCHED_ROUTE)
        .to_owned();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Only a body of known, small length is read for its message (envelopes are); any other
    // passes through untouched.
    let small = resp
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= MAX_BODY_BYTES);
    let (parts, body) = resp.into_parts();
    let (message, body) = if small {
        match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(bytes) => {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                (message, Body::from(bytes))
            }
            Err(_) => (String::new(), Body::empty()),
        }
    } else {
        (String::new(), body)
    };
    ui.errors.push(
        account,
        RecentError {
            at_secs: satchel_domain::time::now_secs(),
            method,
            route,
            status: status.as_u16(),
            message,
            request_id,
        },
    );
    Response::from_parts(parts, body)
}
