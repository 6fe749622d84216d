//! The OpenAPI 3.1 document of the LNPay v1 API, generated from the code so it cannot drift:
//! every handler in [`crate::routes`] carries a `#[utoipa::path]` attribute, every response DTO
//! in [`crate::dto`] derives `ToSchema`, and the examples are the golden fixtures of real
//! responses (`crates/server/tests/golden/`, embedded at build time).
//!
//! What the attributes cannot say is added here once for every operation: the security schemes
//! (the three key transports), the error envelope for each 4xx/5xx an operation can answer, the
//! pagination headers of list endpoints and the golden examples.
//!
//! Served at `GET /v1/openapi.json` (no key needed); `GET /docs` renders it (see [`crate::docs`]).
#![allow(non_snake_case)]

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::http::ApiError;
use crate::http::error::JSON_CONTENT_TYPE;

/// The document's root: paths come from the handlers' `#[utoipa::path]` attributes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Satchel LNPay v1 API",
        description = "A self-hostable, LNPay-compatible Lightning wallet API. Amounts named `num_satoshis`/`balance` are sats (rounded down from msat); `*_msat` fields are millisatoshis. Request bodies may be JSON or form-encoded. Errors use LNPay's envelope `{name, message, code, status}`.",
    ),
    paths(
        crate::routes::create_wallet,
        crate::routes::list_wallets,
        crate::routes::account_transactions,
        crate::routes::get_wallet,
        crate::routes::wallet_transactions,
        crate::routes::create_invoice,
        crate::routes::withdraw,
        crate::routes::keysend,
        crate::routes::transfer,
        crate::events::events,
        crate::routes::get_lntx,
        crate::routes::get_job,
        crate::routes::decode_invoice,
        crate::routes::query_routes,
        crate::routes::create_webhook,
        crate::routes::list_webhooks,
        crate::routes::delete_webhook,
        crate::routes::webhook_deliveries,
        crate::routes::redeliver,
        crate::lnurlw::withdraw_once,
        crate::lnurlw::withdraw_static,
        crate::lnurlw::process,
        crate::lnurlp::create,
        crate::lnurlp::get_link,
        crate::lnurlp::update,
        crate::lnurlp::pay_request,
        crate::lnurlp::verify,
        crate::lnurlp::well_known_lnurlp,
        crate::lnurlp::well_known_keysend,
        crate::lnurlp_pay::probe,
        crate::lnurlp_pay::pay,
        crate::nodes::list,
        crate::nodes::get_node,
        openapi_json,
    ),
    components(schemas(ErrorEnvelope)),
    security(("api_key" = []), ("access_token" = []), ("basic" = [])),
    tags(
        (name = "wallets", description = "Wallets and their keys"),
        (name = "transactions", description = "Wallet transactions (WTX) and Lightning transactions (lnTx)"),
        (name = "payments", description = "Receiving and sending: invoices, withdrawals, keysend, transfers, async jobs"),
        (name = "node", description = "The node, and node utilities (decode an invoice, query routes)"),
        (name = "lnurl", description = "LNURL-withdraw links (LUD-03), LNURL-pay links and Lightning Addresses (LUD-06/12/16/21), keysend addresses, and their public endpoints; paying LNURL-pay links and Lightning Addresses"),
        (name = "webhooks", description = "Webhook subscriptions and their delivery log (Satchel's addition)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// LNPay's (Yii's) error envelope, the body of every 4xx/5xx.
#[derive(ToSchema)]
#[schema(example = json!({"name": "Bad Request", "message": "Num Satoshis must be an integer.", "code": 0, "status": 400, "request_id": "6f1c2a40d3b94e0c8a7f5e21b9c4d083"}))]
pub struct ErrorEnvelope {
    /// The HTTP reason phrase.
    pub name: String,
    /// What went wrong (internal causes are never sent).
    pub message: String,
    /// Always 0.
    pub code: i64,
    /// The HTTP status, repeated.
    pub status: i64,
    /// The request's id (`X-Request-Id`), to quote when asking the operator.
    pub request_id: String,
}

/// `POST /v1/wallet` body.
#[derive(ToSchema)]
pub struct CreateWalletBody {
    /// Internal label of the wallet.
    pub user_label: Option<String>,
}

/// `POST /v1/wallet/{key}/lnurlp` body (every field optional).
#[derive(ToSchema)]
pub struct LnurlpBody {
    /// Smallest amount a payer may send, msat (at least 1000; default 1000).
    #[schema(minimum = 1000)]
    pub lnurlp_minSendable_msat: Option<i64>,
    /// Largest amount, msat (default: the operator's `max_receive_sats`, else 100,000 sats).
    #[schema(minimum = 1000)]
    pub lnurlp_maxSendable_msat: Option<i64>,
    /// The `text/plain` metadata wallets show (at most 255 characters).
    pub lnurlp_short_desc: Option<String>,
    /// Your label (at most 255 characters).
    pub user_label: Option<String>,
    /// LUD-12: longest payer comment, in characters (0 to 639; default 0).
    #[schema(minimum = 0, maximum = 639)]
    pub lnurlp_commentAllowed: Option<i64>,
    /// Lightning Address username: a-z, 0-9, `.`, `-`, `_` (case-insensitive, at most 64).
    pub lnurlp_identifier: Option<String>,
    /// LNPay's custom domains: not offered (any value is refused).
    pub custy_domain_id: Option<String>,
}

/// `POST|PUT|PATCH /v1/lnurlp/{id}` body: the create fields, plus `status`.
#[derive(ToSchema)]
pub struct LnurlpUpdateBody {
    /// msat (at least 1000).
    #[schema(minimum = 1000)]
    pub lnurlp_minSendable_msat: Option<i64>,
    /// msat.
    #[schema(minimum = 1000)]
    pub lnurlp_maxSendable_msat: Option<i64>,
    /// The `text/plain` metadata.
    pub lnurlp_short_desc: Option<String>,
    /// Your label.
    pub user_label: Option<String>,
    /// LUD-12 comment length.
    #[schema(minimum = 0, maximum = 639)]
    pub lnurlp_commentAllowed: Option<i64>,
    /// Username; empty removes it.
    pub lnurlp_identifier: Option<String>,
    /// `lnurl_active` or `lnurl_inactive`.
    pub status: Option<String>,
    /// Not offered.
    pub custy_domain_id: Option<String>,
}

/// `POST /v1/wallet/{key}/invoice` body.
#[derive(ToSchema)]
pub struct CreateInvoiceBody {
    /// Amount in sats (0 or absent: any amount). Digit strings are accepted too.
    #[schema(minimum = 0)]
    pub num_satoshis: Option<i64>,
    /// Invoice description.
    pub memo: Option<String>,
    /// Seconds until the invoice expires.
    #[schema(minimum = 0)]
    pub expiry: Option<i64>,
    /// SHA-256 of the description, 32 bytes as hex (or base64).
    pub description_hash: Option<String>,
    /// Any JSON object, returned with the lnTx and in webhooks (a JSON string in form bodies).
    #[schema(value_type = Option<Object>)]
    pub passThru: Option<Value>,
}

/// `POST /v1/wallet/{key}/lnurlp/pay` body: `lnurlpay_encoded` or `ln_address`.
#[derive(ToSchema)]
pub struct LnurlPayBody {
    /// The LNURL-pay link (`LNURL1…`).
    pub lnurlpay_encoded: Option<String>,
    /// The Lightning Address (`user@domain`).
    pub ln_address: Option<String>,
    /// Amount in msat, within the link's minSendable..maxSendable.
    #[schema(minimum = 1)]
    pub amt_msat: i64,
    /// LUD-12 comment, at most the link's commentAllowed characters.
    pub comment: Option<String>,
    /// Any JSON object (a JSON string in form bodies).
    #[schema(value_type = Option<Object>)]
    pub passThru: Option<Value>,
}

/// `POST /v1/wallet/{key}/withdraw` body.
#[derive(ToSchema)]
pub struct WithdrawBody {
    /// The BOLT 11 invoice to pay.
    pub payment_request: String,
    /// Most the routing fee may be, in msat.
    pub fee_limit_msat: Option<i64>,
    /// Any JSON object (a JSON string in form bodies).
    #[schema(value_type = Option<Object>)]
    pub passThru: Option<Value>,
}

/// `POST /v1/wallet/{key}/keysend` body.
#[derive(ToSchema)]
pub struct KeysendBody {
    /// The recipient node's public key (33 bytes, hex).
    pub dest_pubkey: String,
    /// Amount in sats.
    #[schema(minimum = 0)]
    pub num_satoshis: i64,
    /// Most the routing fee may be, in msat.
    pub fee_limit_msat: Option<i64>,
    /// Extra TLV records: type (decimal) → value (hex).
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub custom_records: Option<Value>,
    /// Any JSON object (a JSON string in form bodies).
    #[schema(value_type = Option<Object>)]
    pub passThru: Option<Value>,
}

/// `POST /v1/wallet/{key}/transfer` body.
#[derive(ToSchema)]
pub struct TransferBody {
    /// The receiving wallet's id (`wal_…`).
    pub dest_wallet_id: String,
    /// Amount in sats.
    #[schema(minimum = 0)]
    pub num_satoshis: i64,
    /// Label of both WTXs.
    pub memo: Option<String>,
    /// Any JSON object (a JSON string in form bodies).
    #[schema(value_type = Option<Object>)]
    pub passThru: Option<Value>,
    /// LNPay's extra parameters object (accepted, stored nowhere).
    #[schema(value_type = Option<Object>)]
    pub lnPayParams: Option<Value>,
}

/// `POST /v1/webhooks` body.
#[derive(ToSchema)]
pub struct CreateWebhookBody {
    /// Where the events are POSTed (public http(s) URL).
    pub endpoint_url: String,
    /// Event names (a JSON list, a comma-separated string, or `events[]=` in forms).
    pub events: Option<Vec<String>>,
    /// Subscribe to every event.
    pub default_all: Option<bool>,
    /// HMAC secret of the signature header.
    pub secret: Option<String>,
}

/// `DELETE /v1/webhooks/{id}` answer.
#[derive(ToSchema)]
pub struct WebhookDeletedDto {
    /// The webhook's id.
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// Paging of list endpoints (Yii's `Pagination`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page; a page past the end is moved to the last page.
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Items per page, clamped to the endpoint's maximum.
    #[param(rename = "per-page", minimum = 1)]
    pub per_page: Option<i64>,
}

/// `?fields=a,b`: only these top-level fields of each item (Yii's `rest\Serializer`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FieldsQuery {
    /// Comma-separated field names; omitted: every field.
    pub fields: Option<String>,
}

/// `GET /v1/openapi.json`: this document (no key needed).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json")),
)]
pub async fn openapi_json() -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, JSON_CONTENT_TYPE),
            (CACHE_CONTROL, "no-cache"),
        ],
        document_bytes(),
    )
        .into_response()
}

fn document_bytes() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_vec_pretty(&document()).unwrap_or_default())
}

/// The whole document as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    decorate(&mut doc);
    doc
}

/// A golden fixture with its placeholders replaced by plausible values of the real types
/// (timestamps are integers, ids keep their prefix).
pub fn golden_example(text: &str) -> Value {
    const TS: &str = "1767225600";
    // `decodeinvoice` sends its timestamp as a string (LND's int64 style); the others are numbers.
    let mut t = text
        .replace(
            "\"timestamp\": \"<ts>\"",
            &format!("\"timestamp\": \"{TS}\""),
        )
        .replace("\"<ts>\"", TS)
        .replace("<bolt11>", EXAMPLE_BOLT11)
        .replace("<request_id>", EXAMPLE_REQUEST_ID)
        .replace(
            "<pubkey>",
            "02c3ec7d9dbbf37a5a0d0c1de3fc7f9a3b2b44a3e1f1f0a2b3c4d5e6f7a8b9c0d1",
        )
        .replace(
            "<hex64>",
            "9e3f1c0a5b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5b7d9f2a4c6e8b0d1f",
        )
        .replace("<b64>", "nj8cCltXLk9qjAsdPl96nCtNbo8KHD5bfZ8qTG6LDR8=");
    for (placeholder, value) in [
        ("<wal>", "wal_K7dM2pQx9Vb4"),
        ("<wtx>", "wtx_0Q3mZbX1aPq7Hc9RtYv2LkW5"),
        ("<lntx>", "lntx_0Q3mZbX1nE4sJd8UfGh6MzA3"),
        ("<job>", "job_0Q3mZbX1rT5yBw2KcNp8QeV4"),
        ("<waka>", "waka_Hq2Lr8Yt4Nd6Vm1Xc9"),
        ("<waki>", "waki_Bf7Kp3Wz5Rj1Gs8Ue2"),
        ("<wakr>", "wakr_Mx4Tn9Qc2Ld7Ha5Yv3"),
        ("<waklw>", "waklw_Pz6Dk1Fs8Wr3Jb9Nq4"),
        ("<waklp>", "waklp_Ce5Vh2Xm7Tg4Ka1Rz8"),
        ("<wakewa>", "wakewa_Ly3Bq8Ns5Df2Wp6Hm"),
        ("<wakewv>", "wakewv_Gt9Rc4Zk1Vx7Ej3Ub"),
        ("<lnurlp>", "lnurlp_Xk3Fq9Zt2Lm8Vb4Nc7"),
        ("<verify_id>", "Qx7upUSBysgk49pF5Fn73240DjfhAxw1"),
        (
            "<lnurl>",
            "LNURL1DP68GURN8GHJ7URP0YHXZMTWD9HXGTNRDAKJ7AMPD3JKX6Z4WPSHJTMPDAMKZ7TWWDJ8QCTWDAZ8YVTVD3SHJMT0W4HZ7MRFW3EKZUR5WDJHXAR9WPSHJ7MPDAMKZ7TWWDJ8QCTWDAZ8YVTVD3SHJMT0W4HZ7",
        ),
    ] {
        t = t.replace(placeholder, value);
    }
    serde_json::from_str(&t).unwrap_or(Value::Null)
}

/// A regtest invoice of the right shape for examples (checksum not meaningful).
const EXAMPLE_BOLT11: &str = "lnbcrt1u1p5example0pp5nclrcz5m05hy7638pvvd8e0m4xfxkm8ugdqq70hwm6zjfnzwxhgsdqqcqzzsxqyz5vqsp5g3kvz8y2k6n0qtm0q0n9f3j8u8p4y4w5s6m7d8x9c0v1b2n3m4qs9qyyssq";

macro_rules! golden {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../server/tests/golden/", $name, ".json")),
        )
    };
}

/// Golden fixtures used as examples: (method, path, status, [fixtures]).
type ExampleRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const EXAMPLES: &[ExampleRow] = &[
    ("post", "/v1/wallet", "201", &[golden!("wallet_create")]),
    ("get", "/v1/wallets", "200", &[golden!("wallets_list")]),
    (
        "get",
        "/v1/wallet-transactions",
        "200",
        &[
            golden!("wallet_transactions_all"),
            golden!("wallet_transactions_all_filtered"),
        ],
    ),
    (
        "get",
        "/v1/wallet/{key}",
        "200",
        &[golden!("wallet_get"), golden!("wallet_get_empty")],
    ),
    (
        "get",
        "/v1/wallet/{key}/transactions",
        "200",
        &[
            golden!("wallet_transactions"),
            golden!("wallet_transactions_deposit"),
            golden!("wallet_transactions_keysend_in"),
            golden!("wallet_transactions_network_fee"),
            golden!("wallet_transactions_lnurl_pay"),
        ],
    ),
    (
        "post",
        "/v1/wallet/{key}/invoice",
        "201",
        &[
            golden!("invoice_create"),
            golden!("invoice_create_defaults"),
            golden!("invoice_create_description_hash"),
        ],
    ),
    (
        "post",
        "/v1/wallet/{key}/withdraw",
        "201",
        &[golden!("withdraw"), golden!("withdraw_with_fee")],
    ),
    (
        "post",
        "/v1/wallet/{key}/withdraw",
        "202",
        &[golden!("withdraw_pending")],
    ),
    (
        "post",
        "/v1/wallet/{key}/withdraw",
        "400",
        &[golden!("error_400_payment_failed")],
    ),
    (
        "post",
        "/v1/wallet/{key}/keysend",
        "201",
        &[golden!("keysend")],
    ),
    (
        "get",
        "/v1/lnurlp/probe/{lnurl_or_address}",
        "200",
        &[golden!("lnurlp_probe")],
    ),
    (
        "post",
        "/v1/wallet/{key}/lnurlp/pay",
        "201",
        &[golden!("lnurlp_pay")],
    ),
    (
        "post",
        "/v1/wallet/{key}/lnurlp/pay",
        "200",
        &[golden!("lnurlp_pay_async")],
    ),
    (
        "post",
        "/v1/wallet/{key}/lnurlp/pay",
        "400",
        &[golden!("error_400_lnurlp_pay")],
    ),
    ("get", "/v1/nodes", "200", &[golden!("nodes_list")]),
    ("get", "/v1/node/{node}", "200", &[golden!("node_get")]),
    (
        "post",
        "/v1/wallet/{key}/keysend",
        "200",
        &[golden!("keysend_async")],
    ),
    (
        "post",
        "/v1/wallet/{key}/transfer",
        "201",
        &[golden!("transfer"), golden!("transfer_minimal")],
    ),
    (
        "get",
        "/v1/lntx/{id}",
        "200",
        &[
            golden!("lntx_invoice_open"),
            golden!("lntx_invoice_settled"),
            golden!("lntx_keysend"),
            golden!("lntx_keysend_incoming"),
            golden!("lntx_payment"),
            golden!("lntx_payment_failed"),
        ],
    ),
    (
        "get",
        "/v1/lntx/{id}",
        "401",
        &[golden!("error_401_lntx_not_found")],
    ),
    (
        "get",
        "/v1/job/{id}",
        "200",
        &[golden!("job"), golden!("job_failed")],
    ),
    (
        "get",
        "/v1/node/{node}/payments/decodeinvoice",
        "200",
        &[golden!("decodeinvoice")],
    ),
    (
        "get",
        "/v1/node/{node}/payments/decodeinvoice",
        "400",
        &[golden!("error_400_decodeinvoice")],
    ),
    (
        "get",
        "/v1/node/{node}/payments/queryroutes",
        "200",
        &[golden!("queryroutes")],
    ),
    (
        "get",
        "/v1/node/{node}/payments/queryroutes",
        "400",
        &[golden!("error_400_queryroutes_missing")],
    ),
    (
        "post",
        "/v1/wallet/{key}/lnurlp",
        "200",
        &[golden!("lnurlp_create")],
    ),
    (
        "get",
        "/v1/lnurlp/{id}",
        "200",
        &[golden!("lnurlp_get_default")],
    ),
    (
        "get",
        "/v1/wallet/{key}/lnurlp/{id}",
        "200",
        &[
            golden!("lnurlp_pay_request"),
            golden!("lnurlp_callback"),
            golden!("lnurlp_error"),
        ],
    ),
    (
        "get",
        "/.well-known/lnurlp/{username}",
        "200",
        &[golden!("lnurlp_pay_request")],
    ),
    (
        "get",
        "/v1/lnurlp/verify/{verify_id}",
        "200",
        &[golden!("lnurlp_verify")],
    ),
    (
        "get",
        "/.well-known/keysend/{username}",
        "200",
        &[golden!("keysend_address")],
    ),
];

/// Error examples every operation shares, by status.
const COMMON_ERROR_EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "400",
        &[golden!("error_400"), golden!("error_400_validation")],
    ),
    (
        "401",
        &[
            golden!("error_401_no_credentials"),
            golden!("error_401_invalid_credentials"),
            golden!("error_401_permission"),
            golden!("error_401_wallet_not_found"),
            golden!("error_401_sak_only"),
            golden!("error_401_pak_wallet_id"),
        ],
    ),
    ("404", &[golden!("error_404")]),
];

/// List endpoints: they send Yii's pagination headers.
const PAGINATED: &[&str] = &[
    "/v1/wallets",
    "/v1/wallet-transactions",
    "/v1/wallet/{key}/transactions",
    "/v1/webhooks/{id}/deliveries",
];

/// POSTs wrapped in the `Idempotency-Key` handling (it may answer 409 and 422).
const IDEMPOTENT: &[&str] = &[
    "/v1/wallet",
    "/v1/wallet/{key}/invoice",
    "/v1/wallet/{key}/withdraw",
    "/v1/wallet/{key}/keysend",
    "/v1/wallet/{key}/transfer",
    "/v1/wallet/{key}/lnurlp/pay",
];

fn envelope(e: &ApiError) -> Value {
    json!({"name": e.name(), "message": e.message(), "code": 0, "status": e.status().as_u16(),
        "request_id": EXAMPLE_REQUEST_ID})
}

/// The request id shown in examples.
const EXAMPLE_REQUEST_ID: &str = "6f1c2a40d3b94e0c8a7f5e21b9c4d083";

/// The statuses (and what they mean) an operation may answer with the error envelope.
fn error_statuses(
    method: &str,
    path: &str,
    authed: bool,
) -> Vec<(&'static str, &'static str, Value)> {
    let mut out: Vec<(&'static str, &'static str, Value)> = vec![(
        "400",
        "Invalid input (LNPay's validation messages)",
        Value::Null,
    )];
    if authed {
        out.push((
            "401",
            "Missing, unknown or insufficient key; unknown wallet or record",
            Value::Null,
        ));
    }
    out.push((
        "404",
        "Page not found (a path segment names nothing)",
        Value::Null,
    ));
    if method == "post" {
        out.push((
            "408",
            "The request body was not received in time",
            envelope(&ApiError::request_timeout()),
        ));
        if IDEMPOTENT.contains(&path) {
            out.push((
                "409",
                "A request with the same Idempotency-Key is still running",
                Value::Null,
            ));
        }
        out.push((
            "413",
            "Request body too large",
            envelope(&ApiError::payload_too_large()),
        ));
        out.push((
            "415",
            "Unsupported body type (multipart)",
            envelope(&ApiError::unsupported_media_type(
                crate::http::body::MULTIPART_MESSAGE,
            )),
        ));
        if IDEMPOTENT.contains(&path) {
            out.push((
                "422",
                "The Idempotency-Key was used with a different request",
                Value::Null,
            ));
        }
    }
    if path.contains("/lnurl/") {
        out.push((
            "501",
            "LNURL is not enabled: the operator has not configured public_url",
            Value::Null,
        ));
    }
    out.push((
        "429",
        "Too many failed authentications from this address (see Retry-After)",
        envelope(&ApiError::too_many_requests(60)),
    ));
    out.push((
        "500",
        "Internal error (details are only logged)",
        envelope(&ApiError::internal("")),
    ));
    out.push((
        "503",
        "The database cannot be reached right now; retry (see Retry-After)",
        envelope(&ApiError::unavailable("", 2)),
    ));
    out
}

fn examples_object(fixtures: &[(&str, &str)]) -> Value {
    let mut m = Map::new();
    for (name, text) in fixtures {
        m.insert(
            (*name).to_owned(),
            json!({"summary": name.replace('_', " "), "value": golden_example(text)}),
        );
    }
    Value::Object(m)
}

/// Adds what the attributes cannot express (see the module docs).
fn decorate(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "api_key": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
            "description": "An account key (`sak_…` secret, `pak_…` public) or a wallet access key (`waka_…`, `waki_…`, `wakr_…`, …)."},
        "access_token": {"type": "apiKey", "in": "query", "name": crate::http::auth_header::ACCESS_TOKEN_PARAM,
            "description": "The same key as a query parameter."},
        "basic": {"type": "http", "scheme": "basic",
            "description": "HTTP Basic with the key as the username (the password is ignored)."},
    });
    let error_ref = json!({"$ref": "#/components/schemas/ErrorEnvelope"});
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    unique_operation_ids(paths);
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let authed = op.get("security") != Some(&json!([{}]));
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            if PAGINATED.contains(&path.as_str())
                && let Some(ok) = responses.get_mut("200")
            {
                ok["headers"] = pagination_headers();
            }
            for (status, description, example) in error_statuses(method, path, authed) {
                if responses.contains_key(status) {
                    continue;
                }
                let mut content = json!({"schema": error_ref});
                if let Some((_, fixtures)) =
                    COMMON_ERROR_EXAMPLES.iter().find(|(s, _)| *s == status)
                {
                    content["examples"] = examples_object(fixtures);
                } else if !example.is_null() {
                    content["example"] = example;
                }
                let mut response =
                    json!({"description": description, "content": {"application/json": content}});
                if matches!(status, "429" | "503") {
                    response["headers"] = json!({"Retry-After": {
                        "description": "Seconds to wait before retrying",
                        "schema": {"type": "integer"}}});
                }
                if status == "401" {
                    response["headers"] = json!({"WWW-Authenticate": {
                        "description": "Always `Basic realm=\"api\"`",
                        "schema": {"type": "string"}}});
                }
                responses.insert(status.to_owned(), response);
            }
        }
    }
    for (method, path, status, fixtures) in EXAMPLES {
        if let Some(content) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}/content/application~1json",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_object_mut)
        {
            content.remove("example");
            content.insert("examples".to_owned(), examples_object(fixtures));
        }
    }
}

/// A handler mounted for several methods (`method(post, put, patch)`) gives each the same
/// `operationId` (the function's name), but OpenAPI wants them unique: each such id gets its
/// method appended (`update` becomes `update_post`, `update_put`, `update_patch`).
fn unique_operation_ids(paths: &mut Map<String, Value>) {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for op in paths
        .values()
        .filter_map(Value::as_object)
        .flat_map(|i| i.values())
    {
        if let Some(id) = op.get("operationId").and_then(Value::as_str) {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
    }
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for (method, op) in item.iter_mut() {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            if seen.get(id).is_some_and(|n| *n > 1) {
                op["operationId"] = Value::String(format!("{id}_{method}"));
            }
        }
    }
}

fn pagination_headers() -> Value {
    let int = json!({"type": "integer", "minimum": 0});
    json!({
        "X-Pagination-Total-Count": {"description": "Items in all pages", "schema": int},
        "X-Pagination-Page-Count": {"description": "Number of pages", "schema": int},
        "X-Pagination-Current-Page": {"description": "This page (1-based)", "schema": int},
        "X-Pagination-Per-Page": {"description": "Items per page", "schema": int},
        "Link": {"description": "RFC 8288 links: self, first, last, next, prev", "schema": {"type": "string"}},
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_handler_for_three_methods_is_three_operations_with_unique_ids() {
        let doc = document();
        let item = doc["paths"]["/v1/lnurlp/{id}"].as_object().unwrap();
        for method in ["post", "put", "patch"] {
            let op = &item[method];
            assert_eq!(op["operationId"], format!("update_{method}"));
            assert!(op["requestBody"].is_object(), "{method} has a body");
        }
        assert_eq!(item["get"]["operationId"], "get_link");
        let mut ids = std::collections::HashSet::new();
        for op in doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|i| i.as_object().unwrap().values())
        {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} is repeated");
        }
    }
}
