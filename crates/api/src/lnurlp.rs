//! LNURL-pay routes (LNPay spec §4.6, §6.4; LUD-06, 12, 16, 21) and keysend addresses: link
//! management for API clients (LNPay envelope on errors), and the public endpoints wallets
//! call, which always answer LUD JSON (`{"status":"ERROR","reason":…}` with 200, as LNPay's
//! did: a wallet reads `status`, not Yii's envelope).

#![allow(non_snake_case)]

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use satchel_domain::Msat;
use satchel_service::Services;
use satchel_service::lnurlp::{LinkFields, LinkView, PayAnswer, PayQuery};
use serde::Serialize;

use crate::http::{ApiError, Lnpay, Params};
use crate::lnurlw::LnurlStatusDto;
use crate::routes::{AppState, Authed, Seg, api_error};

/// `statusType` of a link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LnurlpStatusTypeDto {
    r#type: &'static str,
    name: &'static str,
    display_name: &'static str,
}

/// LNPay's WalletLnurlpay object (§4.6), in its key order, plus `lnurlp_commentAllowed` and
/// `lightning_address` (Satchel's additions).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LnurlpDto {
    id: String,
    created_at: i64,
    updated_at: i64,
    wallet_id: String,
    #[schema(required = true)]
    user_label: Option<String>,
    /// `LNURL1…`.
    lnurl_encoded: String,
    /// The payRequest URL inside it.
    lnurl_decoded: String,
    lnurlp_minSendable_msat: u64,
    lnurlp_maxSendable_msat: u64,
    lnurlp_short_desc: String,
    /// The Lightning Address's username (lower case), or null.
    #[schema(required = true)]
    lnurlp_identifier: Option<String>,
    /// LUD-12: longest comment a payer may send (0: none).
    lnurlp_commentAllowed: u32,
    /// `username@domain`, or null.
    #[schema(required = true)]
    lightning_address: Option<String>,
    statusType: LnurlpStatusTypeDto,
    /// LNPay's custom domains are not offered: always null.
    #[schema(required = true, value_type = Option<Object>)]
    custyDomain: Option<()>,
}

impl From<LinkView> for LnurlpDto {
    fn from(v: LinkView) -> Self {
        let l = v.link;
        let (name, display_name) = if l.active {
            ("lnurl_active", "LNURL Active")
        } else {
            ("lnurl_inactive", "LNURL Inactive")
        };
        LnurlpDto {
            id: l.id,
            created_at: l.created_at,
            updated_at: l.updated_at,
            wallet_id: l.wallet_id.to_string(),
            user_label: l.user_label,
            lnurl_encoded: v.lnurl_encoded,
            lnurl_decoded: v.lnurl_decoded,
            lnurlp_minSendable_msat: l.min_sendable.as_msat(),
            lnurlp_maxSendable_msat: l.max_sendable.as_msat(),
            lnurlp_short_desc: l.short_desc,
            lnurlp_identifier: l.username.map(|u| u.as_str().to_owned()),
            lnurlp_commentAllowed: l.comment_allowed,
            lightning_address: v.lightning_address,
            statusType: LnurlpStatusTypeDto {
                r#type: "lnurl",
                name,
                display_name,
            },
            custyDomain: None,
        }
    }
}

/// LUD-06 `payRequest`, in LNPay's key order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayRequestDto {
    /// msat.
    pub minSendable: u64,
    /// msat.
    pub maxSendable: u64,
    /// LUD-12.
    pub commentAllowed: u32,
    /// Always `payRequest`.
    pub tag: &'static str,
    /// JSON array text; its SHA-256 is the invoices' description hash.
    pub metadata: String,
    /// Where to ask for an invoice (`?amount=<msat>[&comment=…]`).
    pub callback: String,
}

/// LUD-06 callback answer (with LUD-21 `verify`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayInvoiceDto {
    /// BOLT11, amount = `amount`, description hash = SHA-256 of the metadata.
    pub pr: String,
    /// Always empty.
    pub routes: Vec<String>,
    /// LUD-21: GET it to learn whether the invoice was paid.
    pub verify: String,
}

/// What the public payRequest endpoints answer with 200.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PayRequestAnswer {
    /// The payRequest.
    Offer(PayRequestDto),
    /// The invoice (callback).
    Invoice(PayInvoiceDto),
    /// `{"status":"ERROR","reason":…}`.
    Error(LnurlStatusDto),
}

/// LUD-21 answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyDto {
    /// `OK`.
    pub status: &'static str,
    /// Paid.
    pub settled: bool,
    /// Hex, once paid.
    #[schema(required = true)]
    pub preimage: Option<String>,
    /// The invoice.
    pub pr: String,
}

/// What the verify endpoint answers with 200.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum VerifyAnswerDto {
    /// Found.
    Found(VerifyDto),
    /// `{"status":"ERROR","reason":"Not found"}`.
    Error(LnurlStatusDto),
}

/// One `customData` entry of a keysend address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustomDataDto {
    /// TLV type, decimal.
    pub customKey: String,
    /// TLV value.
    pub customValue: String,
}

/// `/.well-known/keysend/:username` (the format podcast apps read).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeysendAddressDto {
    /// `OK`.
    pub status: &'static str,
    /// `keysend`.
    pub tag: &'static str,
    /// Our node.
    pub pubkey: String,
    /// The record that routes the keysend to the address's wallet.
    pub customData: Vec<CustomDataDto>,
}

/// What the keysend-address endpoint answers with 200.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum KeysendAddressAnswer {
    /// Found.
    Found(KeysendAddressDto),
    /// `{"status":"ERROR","reason":…}`.
    Error(LnurlStatusDto),
}

fn msat(p: &Params, name: &str, label: &str) -> Result<Option<Msat>, ApiError> {
    match p.uint(name, label)? {
        Some(v) => Msat::from_msat(v)
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{label} is too big."))),
        None => Ok(None),
    }
}

fn link_fields(p: &Params) -> Result<LinkFields, ApiError> {
    // LNPay's code reads `lnurlp_identifier`; its docs name it `identifier`.
    let identifier = match p.string("lnurlp_identifier", "Lnurlp Identifier")? {
        Some(i) => Some(i),
        None => p.string("identifier", "Lnurlp Identifier")?,
    };
    let active = match p.string("status", "Status")?.as_deref() {
        None => None,
        Some("lnurl_active") => Some(true),
        Some("lnurl_inactive") => Some(false),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Status must be lnurl_active or lnurl_inactive.",
            ));
        }
    };
    Ok(LinkFields {
        min_sendable: msat(p, "lnurlp_minSendable_msat", "Lnurlp Min Sendable Msat")?,
        max_sendable: msat(p, "lnurlp_maxSendable_msat", "Lnurlp Max Sendable Msat")?,
        short_desc: p.string("lnurlp_short_desc", "Lnurlp Short Desc")?,
        user_label: p.string("user_label", "User Label")?,
        comment_allowed: p.uint("lnurlp_commentAllowed", "Lnurlp Comment Allowed")?,
        identifier,
        active,
        custy_domain_id: p.string("custy_domain_id", "Custy Domain Id")?,
    })
}

#[utoipa::path(
    post, path = "/v1/wallet/{key}/lnurlp", tag = "lnurl",
    description = "A new LNURL-pay link (and, with `lnurlp_identifier`, Lightning Address username@<public_url host>) paying into the wallet: its admin key with the public key, or the secret key. The wallet's first link becomes its `default_lnurlpay_id` if it has none.",
    params(("key" = String, Path, description = "The wallet: its admin key, or with the secret key its id")),
    request_body(content((crate::openapi::LnurlpBody = "application/json"), (crate::openapi::LnurlpBody = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "The link", body = LnurlpDto, content_type = "application/json")),
)]
pub(crate) async fn create(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    p: Params,
) -> Result<Response, ApiError> {
    let fields = link_fields(&p)?;
    let v = s.lnurlp.create(&c, &key, fields).await.map_err(api_error)?;
    Ok(Lnpay::ok(LnurlpDto::from(v)).into_response())
}

#[utoipa::path(
    get, path = "/v1/lnurlp/{id}", tag = "lnurl",
    description = "One of the account's LNURL-pay links (secret or public key).",
    params(("id" = String, Path, description = "The link id (`lnurlp_…`)")),
    responses((status = 200, description = "The link", body = LnurlpDto, content_type = "application/json")),
)]
pub(crate) async fn get_link(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(id): Seg,
) -> Result<Response, ApiError> {
    let v = s.lnurlp.get(&c, &id).await.map_err(api_error)?;
    Ok(Lnpay::ok(LnurlpDto::from(v)).into_response())
}

/// `POST`, `PUT` and `PATCH` of a link: LNPay answers all three alike (fields left out keep
/// their value, so every method is a partial update), hence one handler mounted three times.
#[utoipa::path(
    method(post, put, patch), path = "/v1/lnurlp/{id}", tag = "lnurl",
    description = "Changes a link (secret key); `POST`, `PUT` and `PATCH` are the same. Fields left out keep their value; an empty `lnurlp_identifier` removes the username; `status` is `lnurl_active` or `lnurl_inactive`. The metadata is recomputed.",
    params(("id" = String, Path, description = "The link id (`lnurlp_…`)")),
    request_body(content((crate::openapi::LnurlpUpdateBody = "application/json"), (crate::openapi::LnurlpUpdateBody = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "The link", body = LnurlpDto, content_type = "application/json")),
)]
pub(crate) async fn update(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(id): Seg,
    p: Params,
) -> Response {
    let run = async {
        let fields = link_fields(&p)?;
        let v = s.lnurlp.update(&c, &id, fields).await.map_err(api_error)?;
        Ok::<_, ApiError>(Lnpay::ok(LnurlpDto::from(v)).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

fn lud_error(reason: String) -> Response {
    Lnpay::ok(LnurlStatusDto {
        status: "ERROR",
        reason: Some(reason),
    })
    .into_response()
}

fn internal(what: &str, e: satchel_service::ServiceError) -> Response {
    // Logged, never sent (as for every 5xx); a wallet shows `reason`.
    tracing::error!(error = %e, "{what} failed");
    lud_error("Internal error; please try again later".into())
}

fn pay_answer(a: PayAnswer) -> Response {
    match a {
        PayAnswer::Offer(o) => Lnpay::ok(PayRequestDto {
            minSendable: o.min_sendable.as_msat(),
            maxSendable: o.max_sendable.as_msat(),
            commentAllowed: o.comment_allowed,
            tag: "payRequest",
            metadata: o.metadata,
            callback: o.callback,
        })
        .into_response(),
        PayAnswer::Invoice(i) => Lnpay::ok(PayInvoiceDto {
            pr: i.pr,
            routes: Vec::new(),
            verify: i.verify,
        })
        .into_response(),
        PayAnswer::Error(r) | PayAnswer::NotFound(r) => lud_error(r),
    }
}

/// Two path segments; a segment that is not UTF-8 names nothing (LNPay-shaped 404).
pub struct Segs(pub String, pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|Path((a, b))| Segs(a, b))
            .map_err(|_| ApiError::not_found_route())
    }
}

#[utoipa::path(
    get, path = "/v1/wallet/{key}/lnurlp/{id}", tag = "lnurl",
    description = "The LUD-06 endpoint a wallet calls (no key): without `amount` the payRequest; with `amount` (msat) and an optional `comment` (LUD-12) an invoice whose description hash is SHA-256 of the metadata, with a LUD-21 `verify` URL. Errors are `{\"status\":\"ERROR\",\"reason\":…}` with status 200.",
    security(()),
    params(
        ("key" = String, Path, description = "The link id again (where LNPay put a `waklp_` key)"),
        ("id" = String, Path, description = "The link id (`lnurlp_…`)"),
        ("amount" = Option<u64>, Query, description = "msat (callback)"),
        ("comment" = Option<String>, Query, description = "LUD-12 comment (callback)"),
    ),
    responses((status = 200, description = "payRequest, invoice, or an LUD error", content_type = "application/json", body = inline(PayRequestAnswer))),
)]
pub(crate) async fn pay_request(
    State(s): State<Services>,
    Segs(key, id): Segs,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let query = PayQuery {
        amount: q.get("amount").cloned(),
        comment: q.get("comment").cloned(),
    };
    match s.lnurlp.pay_request(&key, &id, query).await {
        Ok(a) => pay_answer(a),
        Err(e) => internal("lnurlp payRequest", e),
    }
}

#[utoipa::path(
    get, path = "/v1/lnurlp/verify/{verify_id}", tag = "lnurl",
    description = "LUD-21 (no key): whether an invoice from an LNURL-pay callback was paid, with its preimage once it was.",
    security(()),
    params(("verify_id" = String, Path, description = "The id in the callback's `verify` URL")),
    responses((status = 200, description = "The invoice's state, or `{\"status\":\"ERROR\",\"reason\":\"Not found\"}`", content_type = "application/json", body = inline(VerifyAnswerDto))),
)]
pub(crate) async fn verify(State(s): State<Services>, Seg(id): Seg) -> Response {
    match s.lnurlp.verify(&id).await {
        Ok(Some(v)) => Lnpay::ok(VerifyDto {
            status: "OK",
            settled: v.settled,
            preimage: v.preimage.map(|p| p.to_hex()),
            pr: v.pr,
        })
        .into_response(),
        Ok(None) => lud_error("Not found".into()),
        Err(e) => internal("lnurlp verify", e),
    }
}

#[utoipa::path(
    get, path = "/.well-known/lnurlp/{username}", tag = "lnurl",
    description = "Lightning Address (LUD-16; no key): the payRequest of `username@<public_url host>` (any case; a link id `lnurlp_…` works too). Errors are LUD errors with status 200.",
    security(()),
    params(("username" = String, Path, description = "The address's local part")),
    responses((status = 200, description = "payRequest, or an LUD error", content_type = "application/json", body = inline(PayRequestAnswer))),
)]
pub(crate) async fn well_known_lnurlp(State(s): State<Services>, Seg(u): Seg) -> Response {
    match s.lnurlp.well_known(&u).await {
        Ok(a) => pay_answer(a),
        Err(e) => internal("well-known lnurlp", e),
    }
}

#[utoipa::path(
    get, path = "/.well-known/keysend/{username}", tag = "lnurl",
    description = "Keysend address for podcasting apps (no key): our node's pubkey and the TLV 696969 value that credits a keysend to this address's wallet (each address its own). Errors are LUD errors with status 200.",
    security(()),
    params(("username" = String, Path, description = "The address's local part")),
    responses((status = 200, description = "The keysend address, or an LUD error", content_type = "application/json", body = inline(KeysendAddressAnswer))),
)]
pub(crate) async fn well_known_keysend(State(s): State<Services>, Seg(u): Seg) -> Response {
    match s.lnurlp.keysend_address(&u).await {
        Ok(Ok(k)) => Lnpay::ok(KeysendAddressDto {
            status: "OK",
            tag: "keysend",
            pubkey: k.pubkey,
            customData: vec![CustomDataDto {
                customKey: satchel_service::lnurlp::KEYSEND_ADDRESS_TLV.to_string(),
                customValue: k.custom_value,
            }],
        })
        .into_response(),
        Ok(Err(reason)) => lud_error(reason),
        Err(satchel_service::ServiceError::LnurlDisabled) => {
            lud_error(satchel_service::ServiceError::LnurlDisabled.to_string())
        }
        Err(e) => internal("well-known keysend", e),
    }
}

/// The LNURL-pay routes, merged into the v1 router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/wallet/{key}/lnurlp", axum::routing::post(create))
        .route("/wallet/{key}/lnurlp/{id}", get(pay_request))
        .route("/lnurlp/verify/{verify_id}", get(verify))
        .route(
            "/lnurlp/{id}",
            get(get_link).post(update).put(update).patch(update),
        )
}

/// `/.well-known/…` routes, at the root (not under `/v1`): wallets derive them from addresses.
pub fn well_known_routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/lnurlp/{username}", get(well_known_lnurlp))
        .route("/.well-known/keysend/{username}", get(well_known_keysend))
}
