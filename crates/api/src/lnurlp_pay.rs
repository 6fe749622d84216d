//! Paying LNURL-pay links and Lightning Addresses (LNPay spec §6.5): `GET /lnurlp/probe/:x`
//! and `POST /wallet/:key/lnurlp/pay`. The checks and the outbound requests are in
//! `satchel_service::lnurlp_pay`.

#![allow(non_snake_case)]

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use satchel_domain::Msat;
use satchel_service::Services;
use satchel_service::lnurlp_pay::{LnurlPayRequest, PayTo};
use serde::Serialize;

use crate::http::{ApiError, Lnpay, Params, truthy_header};
use crate::idempotency::Idem;
use crate::routes::{AppState, Authed, Seg, api_error, async_response, payment_response};

/// The probe's answer: the remote payRequest (LUD-06) with `metadata` decoded into its
/// `[type, content]` pairs, in LNPay's key order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProbeDto {
    /// Smallest amount (msat).
    pub minSendable: u64,
    /// Largest amount (msat).
    pub maxSendable: u64,
    /// Longest comment accepted (LUD-12), 0: none.
    pub commentAllowed: u64,
    /// Always `payRequest`.
    pub tag: &'static str,
    /// The metadata, decoded: `[[type, content], …]`.
    pub metadata: Vec<[String; 2]>,
    /// The service's callback URL.
    pub callback: String,
}

#[utoipa::path(
    get, path = "/v1/lnurlp/probe/{lnurl_or_address}", tag = "lnurl",
    description = "Reads an LNURL-pay link (`LNURL1…`) or a Lightning Address (`user@domain`) and answers its payRequest (any account key). Nothing is paid. A link or address that cannot be read answers 400 `Invalid Address / LNURL: <why>` (LNPay: 500).",
    params(("lnurl_or_address" = String, Path, description = "`LNURL1…` or `user@domain`")),
    responses((status = 200, description = "The payRequest", body = ProbeDto, content_type = "application/json")),
)]
pub(crate) async fn probe(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(x): Seg,
) -> Result<Response, ApiError> {
    let pr = s.lnurlp_pay.probe(&c, &x).await.map_err(api_error)?;
    Ok(Lnpay::ok(ProbeDto {
        minSendable: pr.min_sendable.as_msat(),
        maxSendable: pr.max_sendable.as_msat(),
        commentAllowed: pr.comment_allowed,
        tag: "payRequest",
        callback: pr.callback_url(&s.ctx),
        metadata: pr
            .entries
            .into_iter()
            .map(|e| [e.mime, e.content])
            .collect(),
    })
    .into_response())
}

fn pay_request(p: &Params) -> Result<LnurlPayRequest, ApiError> {
    let lnurl = p
        .string("lnurlpay_encoded", "Lnurlpay Encoded")?
        .filter(|s| !s.trim().is_empty());
    let address = p
        .string("ln_address", "Ln Address")?
        .filter(|s| !s.trim().is_empty());
    let to = match (lnurl, address) {
        (Some(l), None) => PayTo::Lnurl(l),
        (None, Some(a)) => {
            if !a.contains('@') {
                return Err(ApiError::bad_request(
                    "Ln Address is not a valid email address.",
                ));
            }
            PayTo::Address(a)
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "Lnurlpay Encoded or Ln Address cannot be blank.",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Give either Lnurlpay Encoded or Ln Address, not both.",
            ));
        }
    };
    let amount_msat = p
        .uint("amt_msat", "Amt Msat")?
        .ok_or_else(|| ApiError::bad_request("Amt Msat cannot be blank."))?;
    let amount =
        Msat::from_msat(amount_msat).map_err(|_| ApiError::bad_request("Amt Msat is too big."))?;
    if amount.is_zero() {
        return Err(ApiError::bad_request("Amt Msat must be greater than 0."));
    }
    Ok(LnurlPayRequest {
        to,
        amount,
        comment: p.string("comment", "Comment")?,
        pass_thru: p.json_object("passThru", "passThru data must be valid json")?,
    })
}

#[utoipa::path(
    post, path = "/v1/wallet/{key}/lnurlp/pay", tag = "lnurl",
    description = "Pays an LNURL-pay link or Lightning Address from the wallet: reads its payRequest, asks its callback for an invoice of `amt_msat`, checks the invoice (amount, description hash = SHA-256 of the metadata, network, signature) and pays it as `/withdraw` does (WTX `ln_lnurl_pay_outbound`). Refusals are 400 and pay nothing. With `X-LNPAY-ASYNC: 1` the checks run first, then the payment is queued as a job.",
    params(
        ("key" = String, Path, description = "The wallet: an access key allowed to withdraw (`waka_…`, `waklw_…`), or with the secret key its id (`wal_…`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer what the first request did (1 to 255 printable ASCII characters)"),
        ("X-LNPAY-ASYNC" = Option<String>, Header, description = "`1` or `true`: check now, queue the payment and answer the job id"),
    ),
    request_body(content((crate::openapi::LnurlPayBody = "application/json"), (crate::openapi::LnurlPayBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Queued (X-LNPAY-ASYNC)", body = crate::dto::AsyncDto, content_type = "application/json"),
        (status = 201, description = "Paid: the payment's WTX (`ln_lnurl_pay_outbound`)", body = crate::dto::WtxDto, content_type = "application/json"),
        (status = 202, description = "Still in flight", body = crate::dto::PendingPaymentDto, content_type = "application/json"),
    ),
)]
pub(crate) async fn pay(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    headers: HeaderMap,
    idem: Idem,
    p: Params,
) -> Result<Response, ApiError> {
    idem.run(&s, &c, &p, async {
        let req = pay_request(&p)?;
        if truthy_header(&headers, "x-lnpay-async") {
            let id = s
                .lnurlp_pay
                .enqueue(&c, &key, req, &s.jobs)
                .await
                .map_err(api_error)?;
            return Ok(async_response(id.to_string()));
        }
        let r = s.lnurlp_pay.pay(&c, &key, req).await.map_err(api_error)?;
        Ok(payment_response(r))
    })
    .await
}

/// The LNURL-pay paying routes, merged into the v1 router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lnurlp/probe/{lnurl_or_address}", get(probe))
        .route("/wallet/{key}/lnurlp/pay", post(pay))
}
