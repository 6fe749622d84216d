//! LNPay v1 routes. Each handler: authenticate, parse into domain values, call one service
//! method, map the result to an LNPay DTO.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, OriginalUri, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use satchel_domain::Msat;
use satchel_service::auth::Caller;
use satchel_service::idempotency::Rebuilt;
use satchel_service::payments::{KeysendRequest, PaymentResult, WithdrawRequest};
use satchel_service::records::TransferDone;
use satchel_service::wallets::{InvoiceRequest, TransferRequest};
use satchel_service::{ErrorClass, ServiceError, Services};

use crate::dto::*;
use crate::http::{
    ApiError, Fields, Lnpay, Params, extract_api_key, pagination_headers, parse_page, truthy_header,
};
use crate::idempotency::Idem;

/// Shared state of the routes.
#[derive(Clone)]
pub struct AppState {
    /// The services.
    pub services: Services,
    /// Live event streams.
    pub events: std::sync::Arc<crate::events::EventHub>,
}

impl FromRef<AppState> for std::sync::Arc<crate::events::EventHub> {
    fn from_ref(s: &AppState) -> Self {
        s.events.clone()
    }
}

impl FromRef<AppState> for Services {
    fn from_ref(s: &AppState) -> Services {
        s.services.clone()
    }
}

/// `Retry-After` of a 503 while the database is unreachable: a Postgres restart takes seconds.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

/// Maps a service error to LNPay's envelope.
pub fn api_error(e: ServiceError) -> ApiError {
    match e.class() {
        ErrorClass::InvalidCredentials => ApiError::invalid_credentials(),
        ErrorClass::Unauthorized => ApiError::unauthorized(e.to_string()),
        ErrorClass::BadRequest => ApiError::bad_request(e.to_string()),
        ErrorClass::NotFound => ApiError::with_status(StatusCode::NOT_FOUND, e.to_string()),
        ErrorClass::NotImplemented => {
            ApiError::with_status(StatusCode::NOT_IMPLEMENTED, e.to_string())
        }
        ErrorClass::Internal => ApiError::internal(e),
        ErrorClass::TooManyRequests => {
            ApiError::with_status(StatusCode::TOO_MANY_REQUESTS, e.to_string())
        }
        ErrorClass::Unavailable => ApiError::unavailable(e, UNAVAILABLE_RETRY_AFTER_SECS),
    }
}

/// [`api_error`] as a response, with `Retry-After` when the error carries one (the envelope
/// type has no headers of its own).
pub(crate) fn error_response(e: ServiceError) -> Response {
    let retry_after = e.retry_after_secs();
    let mut r = api_error(e).into_response();
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
    }
    r
}

/// The authenticated caller (X-Api-Key, `?access-token=` or Basic username).
pub struct Authed(pub Caller);

impl<S> FromRequestParts<S> for Authed
where
    S: Send + Sync,
    Services: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let services = Services::from_ref(state);
        let key = extract_api_key(&parts.headers, parts.uri.query());
        let presented = key.is_some();
        services
            .auth
            .authenticate(key.as_deref())
            .await
            .map(Authed)
            .map_err(|e| {
                // A presented key that is unknown is a guess: the auth throttle counts it.
                let guess = presented && e.class() == ErrorClass::InvalidCredentials;
                let err = api_error(e);
                if guess {
                    err.rejected_credential()
                } else {
                    err
                }
            })
    }
}

type Q = Query<HashMap<String, String>>;

/// One path segment. A segment that is not valid UTF-8 cannot name anything (LNPay routes
/// match `\w+`), so it is a 404 in the LNPay envelope rather than axum's plain-text 400.
pub struct Seg(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Seg {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Seg(s))
            .map_err(|_| ApiError::not_found_route())
    }
}
type ApiResult = Result<Response, ApiError>;

fn sats(params: &Params, name: &str, label: &str) -> Result<Option<Msat>, ApiError> {
    match params.uint(name, label)? {
        Some(v) => Msat::from_sats(v)
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{label} is too big."))),
        None => Ok(None),
    }
}

fn required_sats(params: &Params, name: &str, label: &str) -> Result<Msat, ApiError> {
    sats(params, name, label)?
        .ok_or_else(|| ApiError::bad_request(format!("{label} cannot be blank.")))
}

/// `description_hash`: 32 bytes as hex (LNPay's code) or base64 (LNPay's docs).
fn description_hash(params: &Params) -> Result<Option<([u8; 32], String)>, ApiError> {
    let Some(text) = params
        .string("description_hash", "Description Hash")?
        .filter(|s| !s.trim().is_empty())
    else {
        return Ok(None);
    };
    let text = text.trim().to_owned();
    let mut out = [0u8; 32];
    if text.len() == 64 && hex::decode_to_slice(&text, &mut out).is_ok() {
        return Ok(Some((out, text.to_ascii_lowercase())));
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        if let Ok(bytes) = engine.decode(&text)
            && let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(Some((arr, hex::encode(arr))));
        }
    }
    Err(ApiError::bad_request(
        "Description Hash must be a 32-byte hash, hex (or base64) encoded.",
    ))
}

/// The request URI for pagination links, without the `access-token` secret.
fn link_uri(OriginalUri(uri): &OriginalUri) -> Uri {
    let Some(q) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| !kv.starts_with("access-token="))
        .collect();
    let pq = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    pq.parse().unwrap_or_else(|_| uri.clone())
}

/// Yii moves a page past the end to the last page; true if `page` changed (re-query then).
fn clamp(page: &mut crate::http::Page, total: u64) -> bool {
    let clamped = page.clamp_to_total(total);
    let changed = clamped.page != page.page;
    *page = clamped;
    changed
}

/// One page of a listing, as LNPay's serializer serves it: `fetch(offset, per_page)` gives a page
/// and the total; a page past the end is clamped to the last one and fetched again. Returns the
/// items and the pagination headers (`X-Pagination-*`, `Link`).
async fn paged<T, F, Fut>(
    q: &HashMap<String, String>,
    uri: &OriginalUri,
    default_per_page: u64,
    max_per_page: u64,
    fetch: F,
) -> Result<(Vec<T>, HeaderMap), ApiError>
where
    F: Fn(u64, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, u64), ServiceError>>,
{
    let mut page = parse_page(q, default_per_page, max_per_page);
    let (mut list, total) = fetch(page.offset(), page.per_page)
        .await
        .map_err(api_error)?;
    if clamp(&mut page, total) {
        list = fetch(page.offset(), page.per_page)
            .await
            .map_err(api_error)?
            .0;
    }
    let mut h = HeaderMap::new();
    pagination_headers(&mut h, &link_uri(uri), &page, total);
    Ok((list, h))
}

pub(crate) fn payment_response(r: PaymentResult) -> Response {
    match r {
        PaymentResult::Done { wtx, .. } => Lnpay::created(WtxDto::from(&wtx)).into_response(),
        PaymentResult::Pending(l) => Lnpay {
            status: StatusCode::ACCEPTED,
            ..Lnpay::ok(PendingPaymentDto {
                status: "pending",
                lnTx: LnTxDto::full(&l),
            })
        }
        .into_response(),
    }
}

#[utoipa::path(
    post, path = "/v1/wallet", tag = "wallets",
    description = "Creates a wallet of the account (account key). The answer is the only time its access keys are shown.",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer what the first request did (1 to 255 printable ASCII characters)")),
    request_body(content((crate::openapi::CreateWalletBody = "application/json"), (crate::openapi::CreateWalletBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "The wallet and its access keys", body = WalletCreatedDto, content_type = "application/json")),
)]
async fn create_wallet(
    State(s): State<Services>,
    Authed(c): Authed,
    idem: Idem,
    p: Params,
) -> ApiResult {
    idem.run(&s, &c, &p, async {
        s.auth.require_account_key(&c).map_err(api_error)?;
        let label = p
            .string("user_label", "Internal Label")?
            .unwrap_or_default();
        let created = s
            .wallets
            .create_wallet(&c, &label)
            .await
            .map_err(api_error)?;
        Ok(Lnpay::created(WalletCreatedDto::from(&created)).into_response())
    })
    .await
}

#[utoipa::path(
    get, path = "/v1/wallet/{key}", tag = "wallets",
    params(("key" = String, Path, description = "The wallet: one of its access keys (`waka_…`, `waki_…`, `wakr_…`, …; the role must allow the call) or, with the secret key, its id (`wal_…`)"), crate::openapi::FieldsQuery),
    responses((status = 200, description = "The wallet", body = WalletDto, content_type = "application/json")),
)]
async fn get_wallet(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    Query(q): Q,
) -> ApiResult {
    let w = s.wallets.get(&c, &key).await.map_err(api_error)?;
    Ok(Lnpay::ok(WalletDto::from(&w))
        .with_fields(Fields::from_query(&q))
        .into_response())
}

#[utoipa::path(
    get, path = "/v1/wallets", tag = "wallets",
    description = "The account's wallets (secret key), 50 per page at most.",
    params(crate::openapi::PageQuery, crate::openapi::FieldsQuery),
    responses((status = 200, description = "One page of wallets", body = Vec<WalletDto>, content_type = "application/json")),
)]
async fn list_wallets(
    State(s): State<Services>,
    Authed(c): Authed,
    uri: OriginalUri,
    Query(q): Q,
) -> ApiResult {
    s.auth.require_secret(&c).map_err(api_error)?;
    let (list, h) = paged(&q, &uri, 50, 50, |off, n| s.wallets.list(&c, off, n)).await?;
    let body: Vec<WalletDto> = list.iter().map(WalletDto::from).collect();
    Ok(Lnpay::ok(body)
        .with_fields(Fields::from_query(&q))
        .with_headers(h)
        .into_response())
}

#[utoipa::path(
    get, path = "/v1/wallet/{key}/transactions", tag = "transactions",
    description = "The wallet's WTXs, newest first, 500 per page at most.",
    params(("key" = String, Path, description = "The wallet: one of its access keys (`waka_…`, `waki_…`, `wakr_…`, …; the role must allow the call) or, with the secret key, its id (`wal_…`)"), crate::openapi::PageQuery, crate::openapi::FieldsQuery),
    responses((status = 200, description = "One page of WTXs", body = Vec<WtxDto>, content_type = "application/json")),
)]
async fn wallet_transactions(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    uri: OriginalUri,
    Query(q): Q,
) -> ApiResult {
    let (list, h) = paged(&q, &uri, 100, 500, |off, n| {
        s.wallets.transactions(&c, &key, off, n)
    })
    .await?;
    let body: Vec<WtxDto> = list.iter().map(WtxDto::from).collect();
    Ok(Lnpay::ok(body)
        .with_fields(Fields::from_query(&q))
        .with_headers(h)
        .into_response())
}

#[utoipa::path(
    get, path = "/v1/wallet-transactions", tag = "transactions",
    description = "The WTXs of all the account's wallets (secret key), newest first, 50 per page at most.",
    params(crate::openapi::PageQuery, ("wallet_id" = Option<String>, Query, description = "Only this wallet's WTXs (`wal_…`)"), crate::openapi::FieldsQuery),
    responses((status = 200, description = "One page of WTXs", body = Vec<WtxDto>, content_type = "application/json")),
)]
async fn account_transactions(
    State(s): State<Services>,
    Authed(c): Authed,
    uri: OriginalUri,
    Query(q): Q,
) -> ApiResult {
    s.auth.require_secret(&c).map_err(api_error)?;
    let wallet = q.get("wallet_id").map(String::as_str);
    let (list, h) = paged(&q, &uri, 20, 50, |off, n| {
        s.wallets.account_transactions(&c, wallet, off, n)
    })
    .await?;
    let body: Vec<WtxDto> = list.iter().map(WtxDto::from).collect();
    Ok(Lnpay::ok(body)
        .with_fields(Fields::from_query(&q))
        .with_headers(h)
        .into_response())
}

#[utoipa::path(
    post, path = "/v1/wallet/{key}/invoice", tag = "payments",
    description = "Creates an invoice that credits the wallet when paid.",
    params(("key" = String, Path, description = "The wallet: one of its access keys (`waka_…`, `waki_…`, `wakr_…`, …; the role must allow the call) or, with the secret key, its id (`wal_…`)"), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer what the first request did (1 to 255 printable ASCII characters)")),
    request_body(content((crate::openapi::CreateInvoiceBody = "application/json"), (crate::openapi::CreateInvoiceBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "The invoice's lnTx", body = LnTxDto, content_type = "application/json")),
)]
async fn create_invoice(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    idem: Idem,
    p: Params,
) -> ApiResult {
    idem.run(&s, &c, &p, async {
        let req = InvoiceRequest {
            amount: sats(&p, "num_satoshis", "Num Satoshis")?.unwrap_or(Msat::ZERO),
            memo: p.string("memo", "Memo")?,
            expiry_secs: p.uint("expiry", "Expiry")?,
            description_hash: description_hash(&p)?,
            pass_thru: p.json_object("passThru", "passThru data must be valid json")?,
        };
        let l = s
            .wallets
            .create_invoice(&c, &key, req)
            .await
            .map_err(api_error)?;
        Ok(Lnpay::created(LnTxDto::full(&l)).into_response())
    })
    .await
}

#[utoipa::path(
    post, path = "/v1/wallet/{key}/withdraw", tag = "payments",
    description = "Pays a BOLT 11 invoice from the wallet. Waits for the outcome up to `payment_wait_secs`, then answers 202 pending (poll `GET /v1/lntx/{id}`). A definite failure is a 400 and refunds the wallet.",
    params(("key" = String, Path, description = "The wallet: one of its access keys (`waka_…`, `waki_…`, `wakr_…`, …; the role must allow the call) or, with the secret key, its id (`wal_…`)"), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer what the first request did (1 to 255 printable ASCII characters)")),
    request_body(content((crate::openapi::WithdrawBody = "application/json"), (crate::openapi::WithdrawBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 201, description = "Paid: the withdrawal's WTX", body = WtxDto, content_type = "application/json"),
        (status = 202, description = "Still in flight", body = PendingPaymentDto, content_type = "application/json"),
    ),
)]
async fn withdraw(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    idem: Idem,
    p: Params,
) -> ApiResult {
    idem.run(&s, &c, &p, async {
        let req = WithdrawRequest {
            payment_request: p.required_string("payment_request", "Payment Request")?,
            fee_limit_msat: p.int("fee_limit_msat", "Fee Limit Msat")?,
            pass_thru: p.json_object("passThru", "passThru data must be valid json")?,
        };
        let r = s
            .payments
            .withdraw(&c, &key, req)
            .await
            .map_err(api_error)?;
        Ok(payment_response(r))
    })
    .await
}

#[utoipa::path(
    post, path = "/v1/wallet/{key}/keysend", tag = "payments",
    description = "Sends a spontaneous payment to a node. With `X-LNPAY-ASYNC: 1` it is queued as a job (`GET /v1/job/{id}`).",
    params(("key" = String, Path, description = "The wallet: one of its access keys (`waka_…`, `waki_…`, `wakr_…`, …; the role must allow the call) or, with the secret key, its id (`wal_…`)"), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer what the first request did (1 to 255 printable ASCII characters)"), ("X-LNPAY-ASYNC" = Option<String>, Header, description = "`1` or `true`: queue the payment and answer the job id")),
    request_body(content((crate::openapi::KeysendBody = "application/json"), (crate::openapi::KeysendBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Queued (X-LNPAY-ASYNC)", body = AsyncDto, content_type = "application/json"),
        (status = 201, description = "Paid: the keysend's WTX", body = WtxDto, content_type = "application/json"),
        (status = 202, description = "Still in flight", body = PendingPaymentDto, content_type = "application/json"),
    ),
)]
async fn keysend(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    headers: HeaderMap,
    idem: Idem,
    p: Params,
) -> ApiResult {
    idem.run(&s, &c, &p, async {
        let req = KeysendRequest {
            dest_pubkey: p.required_string("dest_pubkey", "Dest Pubkey")?,
            amount: required_sats(&p, "num_satoshis", "Num Satoshis")?,
            fee_limit_msat: p.int("fee_limit_msat", "Fee Limit Msat")?,
            custom_records: p.json_object(
                "custom_records",
                "custom_records must be an object of TLV type to string value",
            )?,
            pass_thru: p.json_object("passThru", "passThru data must be valid json")?,
        };
        if truthy_header(&headers, "x-lnpay-async") {
            let id = s
                .jobs
                .enqueue_keysend(&c, &key, req)
                .await
                .map_err(api_error)?;
            return Ok(async_response(id.to_string()));
        }
        let r = s.payments.keysend(&c, &key, req).await.map_err(api_error)?;
        Ok(payment_response(r))
    })
    .await
}

pub(crate) fn async_response(id: String) -> Response {
    Lnpay::ok(AsyncDto { success: 1, id }).into_response()
}

fn transfer_response(done: &TransferDone) -> Response {
    Lnpay::created(TransferDto {
        wtx_transfer_in: WtxDto::from(&done.wtx_in),
        wtx_transfer_out: WtxDto::from(&done.wtx_out),
    })
    .into_response()
}

/// The answer a keyed request would have given, rebuilt from what its operation created (see
/// [`crate::idempotency`]); a wallet's answer cannot be rebuilt (its keys are not stored).
pub(crate) fn rebuilt_response(r: Rebuilt) -> Response {
    match r {
        Rebuilt::Invoice(l) => Lnpay::created(LnTxDto::full(&l)).into_response(),
        Rebuilt::Payment(p) => payment_response(p),
        Rebuilt::PaymentFailed(reason) => {
            api_error(ServiceError::PaymentFailed(reason)).into_response()
        }
        Rebuilt::Transfer(done) => transfer_response(&done),
        Rebuilt::Job(id) => async_response(id.to_string()),
        Rebuilt::Wallet(id) => {
            ApiError::internal(format_args!("wallet {id} cannot be rebuilt")).into_response()
        }
    }
}

#[utoipa::path(
    post, path = "/v1/wallet/{key}/transfer", tag = "payments",
    description = "Moves sats to another wallet of this server, at once and without fees.",
    params(("key" = String, Path, description = "The wallet: one of its access keys (`waka_…`, `waki_…`, `wakr_…`, …; the role must allow the call) or, with the secret key, its id (`wal_…`)"), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key answer what the first request did (1 to 255 printable ASCII characters)")),
    request_body(content((crate::openapi::TransferBody = "application/json"), (crate::openapi::TransferBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "The two WTXs", body = TransferDto, content_type = "application/json")),
)]
async fn transfer(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(key): Seg,
    idem: Idem,
    p: Params,
) -> ApiResult {
    idem.run(&s, &c, &p, async {
        let req = TransferRequest {
            dest: p.required_string("dest_wallet_id", "Dest Wallet Id")?,
            amount: required_sats(&p, "num_satoshis", "Num Satoshis")?,
            memo: p.string("memo", "Memo")?,
            pass_thru: p.json_object("passThru", "Invalid passThru json specified")?,
            lnpay_params: p.json_object("lnPayParams", "Invalid lnPayParams json specified")?,
        };
        let done = s.wallets.transfer(&c, &key, req).await.map_err(api_error)?;
        Ok(transfer_response(&done))
    })
    .await
}

#[utoipa::path(
    get, path = "/v1/lntx/{id}", tag = "transactions",
    description = "An invoice or payment of the account (account key). An unknown id is LNPay's 401 \"LnTx not found\".",
    params(("id" = String, Path, description = "The lnTx id (`lntx_…`)"), crate::openapi::FieldsQuery),
    responses((status = 200, description = "The lnTx", body = LnTxDto, content_type = "application/json")),
)]
async fn get_lntx(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(id): Seg,
    Query(q): Q,
) -> ApiResult {
    s.auth.require_account_key(&c).map_err(api_error)?;
    let l = s.wallets.lntx(&c, &id).await.map_err(api_error)?;
    Ok(Lnpay::ok(LnTxDto::full(&l))
        .with_fields(Fields::from_query(&q))
        .into_response())
}

#[utoipa::path(
    get, path = "/v1/job/{id}", tag = "payments",
    params(("id" = String, Path, description = "The job id (`job_…`)")),
    responses((status = 200, description = "The job and, once it succeeded, its WTX", body = JobDto, content_type = "application/json")),
)]
async fn get_job(State(s): State<Services>, Authed(c): Authed, Seg(id): Seg) -> ApiResult {
    s.auth.require_account_key(&c).map_err(api_error)?;
    let (job, wtx) = s.jobs.get(&c, &id).await.map_err(api_error)?;
    Ok(Lnpay::ok(JobDto::new(&job, wtx.as_ref())).into_response())
}

fn check_node(s: &Services, c: &Caller, node: &str) -> Result<(), ApiError> {
    s.auth.require_account_key(c).map_err(api_error)?;
    if node == "default" || node == s.ctx.cfg.node_id.as_str() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("Node not found: {node}")))
    }
}

fn missing(q: &HashMap<String, String>, names: &[&str]) -> Result<(), ApiError> {
    let absent: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| q.get(*n).is_none_or(|v| v.is_empty()))
        .collect();
    if absent.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Missing required parameters: {}",
            absent.join(", ")
        )))
    }
}

#[utoipa::path(
    get, path = "/v1/node/{node}/payments/decodeinvoice", tag = "node",
    description = "Decodes a BOLT 11 invoice (LND's `PayReq` shape: 64-bit integers as strings).",
    params(("node" = String, Path, description = "`default` or this node's id"), ("payment_request" = String, Query, description = "The BOLT 11 invoice")),
    responses((status = 200, description = "The decoded invoice", body = DecodedInvoiceDto, content_type = "application/json")),
)]
async fn decode_invoice(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(node): Seg,
    Query(q): Q,
) -> ApiResult {
    check_node(&s, &c, &node)?;
    missing(&q, &["payment_request"])?;
    let pr = q
        .get("payment_request")
        .map(String::as_str)
        .unwrap_or_default();
    let b = s.wallets.decode_invoice(pr).map_err(api_error)?;
    Ok(Lnpay::ok(DecodedInvoiceDto::from(&b)).into_response())
}

#[utoipa::path(
    get, path = "/v1/node/{node}/payments/queryroutes", tag = "node",
    description = "Routes from this node to a node for an amount.",
    params(("node" = String, Path, description = "`default` or this node's id"), ("pub_key" = String, Query, description = "Destination node's public key (hex)"), ("amt" = String, Query, description = "Amount in sats (digits)")),
    responses((status = 200, description = "The routes found", body = QueryRoutesDto, content_type = "application/json")),
)]
async fn query_routes(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(node): Seg,
    Query(q): Q,
) -> ApiResult {
    check_node(&s, &c, &node)?;
    missing(&q, &["pub_key", "amt"])?;
    let amt = q.get("amt").map(|a| a.trim()).unwrap_or_default();
    let sats: u64 = amt
        .parse()
        .map_err(|_| ApiError::bad_request("Amt must be an integer."))?;
    let amount = Msat::from_sats(sats).map_err(|_| ApiError::bad_request("Amt is too big."))?;
    let pub_key = q.get("pub_key").map(String::as_str).unwrap_or_default();
    let routes = s
        .wallets
        .query_routes(pub_key, amount)
        .await
        .map_err(api_error)?;
    Ok(Lnpay::ok(QueryRoutesDto::new(&routes)).into_response())
}

#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body(content((crate::openapi::CreateWebhookBody = "application/json"), (crate::openapi::CreateWebhookBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "The subscription", body = WebhookDto, content_type = "application/json")),
)]
async fn create_webhook(State(s): State<Services>, Authed(c): Authed, p: Params) -> ApiResult {
    // `events` as a JSON array, a comma-separated string, or PHP-style events[]=…
    let events: Vec<String> = match p.get("events") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(t)) => t
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect(),
        Some(serde_json::Value::Null) | None => Vec::new(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "events must be a list of event names.",
            ));
        }
    };
    let default_all = matches!(
        p.get("default_all"),
        Some(serde_json::Value::Bool(true)) | Some(serde_json::Value::Number(_))
    ) || p
        .string("default_all", "Default All")?
        .is_some_and(|v| v == "1" || v == "true");
    let req = satchel_service::webhooks::NewWebhook {
        endpoint_url: p.required_string("endpoint_url", "Endpoint Url")?,
        events,
        default_all,
        secret: p.string("secret", "Secret")?,
    };
    let w = s.webhooks.create(&c, req).await.map_err(api_error)?;
    Ok(Lnpay::created(WebhookDto::from(&w)).into_response())
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "The account's subscriptions", body = Vec<WebhookDto>, content_type = "application/json")),
)]
async fn list_webhooks(State(s): State<Services>, Authed(c): Authed) -> ApiResult {
    let list = s.webhooks.list(&c).await.map_err(api_error)?;
    Ok(Lnpay::ok(list.iter().map(WebhookDto::from).collect::<Vec<_>>()).into_response())
}

#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook id")),
    responses((status = 200, description = "Deleted", body = crate::openapi::WebhookDeletedDto, content_type = "application/json")),
)]
async fn delete_webhook(State(s): State<Services>, Authed(c): Authed, Seg(id): Seg) -> ApiResult {
    let w = s.webhooks.delete(&c, &id).await.map_err(api_error)?;
    Ok(Lnpay::ok(serde_json::json!({ "id": w.id.to_string(), "deleted": true })).into_response())
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    description = "The delivery log of a subscription, newest first, 100 per page at most.",
    params(("id" = String, Path, description = "The webhook id"), crate::openapi::PageQuery),
    responses((status = 200, description = "One page of deliveries", body = Vec<DeliveryDto>, content_type = "application/json")),
)]
async fn webhook_deliveries(
    State(s): State<Services>,
    Authed(c): Authed,
    Seg(id): Seg,
    uri: OriginalUri,
    Query(q): Q,
) -> ApiResult {
    let (list, h) = paged(&q, &uri, 50, 100, |off, n| {
        s.webhooks.deliveries(&c, &id, off, n)
    })
    .await?;
    Ok(
        Lnpay::ok(list.iter().map(DeliveryDto::from).collect::<Vec<_>>())
            .with_headers(h)
            .into_response(),
    )
}

#[utoipa::path(
    post, path = "/v1/webhooks/deliveries/{id}/redeliver", tag = "webhooks",
    description = "Sends a delivery's event again, as a new delivery.",
    params(("id" = String, Path, description = "The delivery id")),
    responses((status = 201, description = "The new delivery", body = DeliveryDto, content_type = "application/json")),
)]
async fn redeliver(State(s): State<Services>, Authed(c): Authed, Seg(id): Seg) -> ApiResult {
    match s.webhooks.redeliver(&c, &id).await {
        Ok(d) => Ok(Lnpay::created(DeliveryDto::from(&d)).into_response()),
        Err(e) => Ok(error_response(e)),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found_route()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// The LNPay v1 API (served under `/v1`).
pub fn v1_router() -> Router<AppState> {
    Router::new()
        .route("/wallet", post(create_wallet))
        .route("/wallets", get(list_wallets))
        .route("/wallet-transactions", get(account_transactions))
        .route("/wallet/{key}", get(get_wallet))
        .route("/wallet/{key}/transactions", get(wallet_transactions))
        .route("/wallet/{key}/invoice", post(create_invoice))
        .route("/wallet/{key}/withdraw", post(withdraw))
        .route("/wallet/{key}/keysend", post(keysend))
        .route("/wallet/{key}/transfer", post(transfer))
        .route("/wallet/{key}/events", get(crate::events::events))
        .route("/lntx/{id}", get(get_lntx))
        .route("/job/{id}", get(get_job))
        .route("/node/{node}/payments/decodeinvoice", get(decode_invoice))
        .route("/node/{node}/payments/queryroutes", get(query_routes))
        .route("/webhooks", post(create_webhook).get(list_webhooks))
        .route("/webhooks/{id}", delete(delete_webhook))
        .route("/webhooks/{id}/deliveries", get(webhook_deliveries))
        .route("/webhooks/deliveries/{id}/redeliver", post(redeliver))
        .merge(crate::lnurlw::routes())
        .merge(crate::lnurlp::routes())
        .merge(crate::lnurlp_pay::routes())
        .merge(crate::nodes::routes())
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .method_not_allowed_fallback(method_not_allowed)
}

/// The full application: `/v1/...`, CORS, `OPTIONS` on every route, LNPay-shaped 404/405,
/// with the default auth throttle and no trusted proxy.
pub fn app(services: Services) -> Router {
    app_with(services, ApiOptions::default())
}

/// Settings of the HTTP edge that the routes apply (the listener's own are in the server).
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// Failed-authentication throttle.
    pub auth_throttle: crate::http::throttle::AuthThrottleConfig,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::http::throttle::TrustedProxies,
    /// The operator API and console (`crate::operator`); `None`: not served.
    pub operator: Option<crate::operator::OperatorAccess>,
}

/// [`app`] with explicit settings. Live event streams get a hub of their own that nobody runs:
/// they replay the outbox but receive nothing live (the server uses [`app_with_events`]).
pub fn app_with(services: Services, opts: ApiOptions) -> Router {
    let events =
        crate::events::EventHub::new(services.outbox.clone(), services.events.config(), None);
    app_with_events(services, opts, events)
}

/// [`app_with`] with the live event hub the caller runs ([`crate::events::EventHub::run`]) and
/// whose streams end on its shutdown signal.
pub fn app_with_events(
    services: Services,
    opts: ApiOptions,
    events: std::sync::Arc<crate::events::EventHub>,
) -> Router {
    let throttle = std::sync::Arc::new(crate::http::throttle::AuthThrottle::new(
        opts.auth_throttle,
        opts.trusted_proxies,
    ));
    let ui = crate::ui::Ui::new(&services);
    let mut router = Router::new()
        .nest("/v1", v1_router())
        .merge(crate::lnurlp::well_known_routes())
        .merge(crate::docs::router())
        .merge(crate::ui::router(ui.clone()));
    if let Some(access) = opts.operator {
        router = router.merge(crate::operator::router(access, &services));
    }
    router
        // Every route (nested and merged ones included) reports its template for the metrics.
        .route_layer(axum::middleware::from_fn(
            crate::http::observe::record_route,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState {
            services: services.clone(),
            events,
        })
        // Inside the throttle: the account page lists each account's recent 4xx/5xx.
        .layer(axum::middleware::from_fn_with_state(
            (ui, services),
            crate::ui::errors::record,
        ))
        // Inside `buffer_body`: a throttled request's body is still read off the connection.
        .layer(axum::middleware::from_fn_with_state(
            throttle,
            crate::http::throttle::throttle_auth,
        ))
        // CORS inside, OPTIONS outermost: tower-http's CorsLayer would otherwise answer every
        // OPTIONS itself, without the `Allow` header LNPay (Yii) sent.
        .layer(axum::middleware::from_fn(crate::http::buffer_body))
        .layer(crate::http::cors_layer())
        .layer(axum::middleware::from_fn(crate::http::options_fallback))
        // Outermost: every answer, OPTIONS and refusals included, has a request id and is
        // counted.
        .layer(axum::middleware::from_fn(crate::http::observe::observe))
}
