//! LNURL-withdraw routes (LNPay spec §6.1–6.3, LUD-03): link creation for API clients (LNPay
//! envelope on errors) and the public `lnurl-process` endpoint wallets call (LUD-03 JSON only:
//! a wallet understands `{"status":"ERROR","reason":…}`, not Yii's envelope).

#![allow(non_snake_case)]

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use satchel_domain::Msat;
use satchel_service::Services;
use satchel_service::lnurlw::{NewLinkRequest, ProcessAnswer, ProcessQuery};
use satchel_service::records::LnurlwKind;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::http::{ApiError, Lnpay, Params};
use crate::routes::{AppState, Authed, Seg, api_error};

/// `GET /lnurl/withdraw` answer (LNPay: 200 `{"lnurl","ott"}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LnurlOnceDto {
    /// `LNURL1…`.
    pub lnurl: String,
    /// One-time token.
    pub ott: String,
}

/// `GET /lnurl/withdraw-static` answer (LNPay: 200 `{"lnurl"}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LnurlStaticDto {
    /// `LNURL1…`.
    pub lnurl: String,
}

/// LUD-03 `withdrawRequest`, in LNPay's key order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WithdrawRequestDto {
    /// Callback URL.
    pub callback: String,
    /// k1.
    pub k1: String,
    /// msat.
    pub maxWithdrawable: u64,
    /// Memo.
    pub defaultDescription: String,
    /// msat.
    pub minWithdrawable: u64,
    /// Always `withdrawRequest`.
    pub tag: &'static str,
}

/// LUD-03 status answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LnurlStatusDto {
    /// `OK` or `ERROR`.
    pub status: &'static str,
    /// Why (errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `lnurl-process` answers with 200: the offer, or an error.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum LnurlProcessAnswer {
    /// The offer (first call).
    Offer(WithdrawRequestDto),
    /// `{"status":"ERROR","reason":…}`.
    Error(LnurlStatusDto),
}

type Q = Query<HashMap<String, String>>;

/// `passThru` in a query: base64 of a JSON object (LNPay §6.1; standard or URL-safe alphabet,
/// padding optional).
fn b64_pass_thru(p: &Params) -> Result<Option<Map<String, Value>>, ApiError> {
    let Some(text) = p
        .string("passThru", "passThru")?
        .filter(|s| !s.trim().is_empty())
    else {
        return Ok(None);
    };
    let invalid = || ApiError::bad_request("passThru must be base64-encoded JSON");
    let t = text.trim();
    let bytes = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ]
    .iter()
    .find_map(|e| e.decode(t).ok())
    .ok_or_else(invalid)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(Value::Null) => Ok(None),
        Ok(Value::Array(a)) if a.is_empty() => Ok(None),
        _ => Err(invalid()),
    }
}

fn new_link_request(q: HashMap<String, String>) -> Result<NewLinkRequest, ApiError> {
    let p = Params::from_map(q.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    let amount = match p.uint("num_satoshis", "Num Satoshis")? {
        Some(v) => Some(
            Msat::from_sats(v).map_err(|_| ApiError::bad_request("Num Satoshis is too big."))?,
        ),
        None => None,
    };
    Ok(NewLinkRequest {
        amount,
        memo: p.string("memo", "Memo")?,
        pass_thru: b64_pass_thru(&p)?,
    })
}

#[utoipa::path(
    get, path = "/v1/wallet/{key}/lnurl/withdraw", tag = "lnurl",
    description = "A one-time LNURL-withdraw link (LUD-03) paying out of the wallet: the wallet's withdraw key, or the secret key. The link names no key: it carries its own id and a one-time token.",
    params(
        ("key" = String, Path, description = "The wallet: an access key allowed to withdraw, or with the secret key its id"),
        ("num_satoshis" = Option<u64>, Query, description = "The amount the link pays; absent: up to the spendable balance at scan time"),
        ("memo" = Option<String>, Query, description = "The link's default description"),
        ("passThru" = Option<String>, Query, description = "Base64 of a JSON object, merged into the payout's passThru"),
    ),
    responses((status = 200, description = "The link", body = LnurlOnceDto, content_type = "application/json")),
)]
pub(crate) async fn withdraw_once(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let req = new_link_request(q)?;
    let l = s
        .lnurlw
        .create(&c, &key, LnurlwKind::Once, req)
        .await
        .map_err(api_error)?;
    Ok(Lnpay::ok(LnurlOnceDto {
        lnurl: l.lnurl,
        ott: l.ott,
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/v1/wallet/{key}/lnurl/withdraw-static", tag = "lnurl",
    description = "A reusable LNURL-withdraw link (wallet admin key, or the secret key).",
    params(
        ("key" = String, Path, description = "The wallet: its admin key, or with the secret key its id"),
        ("num_satoshis" = Option<u64>, Query, description = "The amount each use pays; absent: up to the spendable balance"),
        ("memo" = Option<String>, Query, description = "The link's default description"),
        ("passThru" = Option<String>, Query, description = "Base64 of a JSON object, merged into each payout's passThru"),
    ),
    responses((status = 200, description = "The link", body = LnurlStaticDto, content_type = "application/json")),
)]
pub(crate) async fn withdraw_static(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let req = new_link_request(q)?;
    let l = s
        .lnurlw
        .create(&c, &key, LnurlwKind::Static, req)
        .await
        .map_err(api_error)?;
    Ok(Lnpay::ok(LnurlStaticDto { lnurl: l.lnurl }).into_response())
}

fn status(status: &'static str, reason: Option<String>) -> LnurlStatusDto {
    LnurlStatusDto { status, reason }
}

/// Public: no credentials. LNPay's status codes: 200 for the offer and for errors, 201 for OK.
#[utoipa::path(
    get, path = "/v1/wallet/{key}/lnurl-process", tag = "lnurl",
    description = "The LUD-03 service endpoint a wallet calls (no key): without `pr` the withdrawRequest offer; with `k1` and `pr` it pays the invoice. Errors are LUD-03 `{\"status\":\"ERROR\",\"reason\":…}` with status 200.",
    security(()),
    params(
        ("key" = String, Path, description = "The link's id (`lnurlw_…`)"),
        ("ott" = Option<String>, Query, description = "The one-time link's token"),
        ("k1" = Option<String>, Query, description = "The offer's k1 (callback)"),
        ("pr" = Option<String>, Query, description = "The BOLT11 invoice to pay (callback)"),
    ),
    responses(
        (status = 200, description = "The withdrawRequest offer, or an LUD-03 error", content_type = "application/json",
            body = inline(LnurlProcessAnswer)),
        (status = 201, description = "Paid (or in flight)", body = LnurlStatusDto, content_type = "application/json"),
    ),
)]
pub(crate) async fn process(State(s): State<Services>, Seg(key): Seg, Query(q): Q) -> Response {
    let get = |n: &str| q.get(n).cloned();
    let query = ProcessQuery {
        ott: get("ott"),
        k1: get("k1"),
        pr: get("pr").filter(|p| !p.trim().is_empty()),
    };
    match s.lnurlw.process(&key, query).await {
        Ok(ProcessAnswer::Offer(o)) => Lnpay::ok(WithdrawRequestDto {
            callback: o.callback,
            k1: o.k1,
            maxWithdrawable: o.max_withdrawable.as_msat(),
            defaultDescription: o.default_description,
            minWithdrawable: o.min_withdrawable.as_msat(),
            tag: "withdrawRequest",
        })
        .into_response(),
        Ok(ProcessAnswer::Ok) => Lnpay::created(status("OK", None)).into_response(),
        Ok(ProcessAnswer::Error(reason)) => {
            Lnpay::ok(status("ERROR", Some(reason))).into_response()
        }
        Err(e) => {
            // Logged, never sent (as for every 5xx); a wallet shows `reason`.
            tracing::error!(link = %key, error = %e, "lnurl-process failed");
            Lnpay {
                status: StatusCode::OK,
                ..Lnpay::ok(status(
                    "ERROR",
                    Some("Internal error; please try again later".into()),
                ))
            }
            .into_response()
        }
    }
}

/// The LNURL-withdraw routes, merged into the v1 router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/wallet/{key}/lnurl/withdraw", get(withdraw_once))
        .route("/wallet/{key}/lnurl/withdraw-static", get(withdraw_static))
        .route("/wallet/{key}/lnurl-process", get(process))
}
