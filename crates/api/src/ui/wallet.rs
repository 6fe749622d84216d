//! The wallet page, `/wallet/<wallet key>`, and the JSON its script calls.
//!
//! The page is rendered for the key's role: the receive section only for a key that may create
//! invoices, the send section and LNURL-withdraw only for one that may withdraw; a read key
//! gets neither (the server refuses those calls for it anyway). The JSON endpoints take the
//! wallet key in `X-Api-Key` and act through `AuthService::wallet_page_caller`.

use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use satchel_domain::{KeyRole, Msat, Permission};
use satchel_service::auth::Caller;
use satchel_service::lnurlp_pay::{LnurlPayRequest, PayTo};
use satchel_service::lnurlw::NewLinkRequest;
use satchel_service::payments::WithdrawRequest;
use satchel_service::records::LnurlwKind;
use satchel_service::wallets::InvoiceRequest;
use satchel_service::{ErrorClass, Services};
use serde::Serialize;

use super::{WALLET_HTML, esc, html, page as frame, qr, secure};
use crate::dto::{LnTxDto, WalletDto, WtxDto};
use crate::http::{ApiError, Lnpay, Params, extract_api_key};
use crate::routes::{api_error, payment_response};

/// Longest key accepted in a page address (real keys are far shorter).
pub(crate) const MAX_KEY_LEN: usize = 128;
/// Entries of history the page shows.
const HISTORY_LEN: u64 = 25;

fn can(role: KeyRole) -> (bool, bool, bool) {
    (
        role.has(Permission::WalletRead),
        role.has(Permission::WalletDeposit),
        role.has(Permission::WalletWithdraw),
    )
}

/// `GET /wallet/<key>`.
pub async fn page(State(s): State<Services>, Path(key): Path<String>) -> Response {
    let found = if key.len() <= MAX_KEY_LEN {
        s.auth.wallet_page_caller(&key).await
    } else {
        Err(satchel_service::ServiceError::InvalidCredentials)
    };
    let role = match found {
        Ok((_, role)) => role,
        Err(e) => {
            let (status, text) = match e.class() {
                ErrorClass::InvalidCredentials => (StatusCode::NOT_FOUND, "No such wallet key."),
                ErrorClass::Unauthorized => {
                    (StatusCode::FORBIDDEN, "This wallet key is suspended.")
                }
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The wallet cannot be shown right now.",
                ),
            };
            let mut r = html(
                status,
                frame(
                    "Wallet",
                    &format!("<p class=\"error\">{}</p>", esc(text)),
                    None,
                ),
            );
            if e.class() == ErrorClass::InvalidCredentials {
                // A guessed key: the auth throttle counts it like one presented to the API.
                r.extensions_mut()
                    .insert(crate::http::error::RejectedCredential);
            }
            return r;
        }
    };
    let (_, deposit, withdraw) = can(role);
    let section = |on: bool, name: &str| -> String {
        if on {
            section_html(name)
        } else {
            String::new()
        }
    };
    let body = WALLET_HTML
        .replace("{{ROLE}}", &esc(role.display_name()))
        .replace("{{RECEIVE}}", &section(deposit, "receive"))
        .replace("{{SEND}}", &section(withdraw, "send"));
    html(
        StatusCode::OK,
        frame("Wallet", &body, Some("/ui/wallet.js")),
    )
}

fn section_html(name: &str) -> String {
    match name {
        "receive" => RECEIVE_HTML.to_owned(),
        _ => SEND_HTML.to_owned(),
    }
}

const RECEIVE_HTML: &str = r#"<section id="receive"><h2>Receive</h2>
<form id="invoice-form"><label>Amount (sats) <input id="invoice-amount" name="num_satoshis" type="number" min="0" step="1" required></label>
<label>Memo <input id="invoice-memo" name="memo" maxlength="200"></label>
<button id="invoice-button" type="submit">Create invoice</button></form>
<div id="invoice-out" hidden><img id="invoice-qr" alt="Invoice QR code" width="320" height="320"><code id="invoice-text"></code></div>
<div id="address-slot" hidden><h3 id="address-title">Lightning Address</h3><p><code id="address-text"></code></p><img id="address-qr" alt="LNURL-pay QR code" width="256" height="256"></div>
</section>"#;

const SEND_HTML: &str = r#"<section id="send"><h2>Send</h2>
<form id="pay-form"><label>Invoice or Lightning Address <textarea id="pay-input" name="payment_request" rows="3" required></textarea></label>
<label>Amount (sats, for a Lightning Address) <input id="pay-amount" name="num_satoshis" type="number" min="1" step="1"></label>
<button id="pay-button" type="submit">Send</button></form>
<p id="pay-status" role="status"></p>
<h3>LNURL-withdraw</h3>
<form id="lnurlw-form"><label>Amount (sats; empty: up to the balance) <input id="lnurlw-amount" name="num_satoshis" type="number" min="1" step="1"></label>
<button id="lnurlw-button" type="submit">Make a withdraw QR</button></form>
<div id="lnurlw-out" hidden><img id="lnurlw-qr" alt="LNURL-withdraw QR code" width="256" height="256"><code id="lnurlw-text"></code></div>
</section>"#;

/// The wallet key in `X-Api-Key`, resolved for the wallet page.
pub struct PageKey {
    caller: Caller,
    role: KeyRole,
    key: String,
}

impl<S> FromRequestParts<S> for PageKey
where
    S: Send + Sync,
    Services: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let s = Services::from_ref(state);
        let key = extract_api_key(&parts.headers, None)
            .filter(|k| k.len() <= MAX_KEY_LEN)
            .ok_or_else(|| secure(ApiError::invalid_credentials().into_response()))?;
        match s.auth.wallet_page_caller(&key).await {
            Ok((caller, role)) => Ok(PageKey { caller, role, key }),
            Err(e) => {
                let guess = e.class() == ErrorClass::InvalidCredentials;
                let err = api_error(e);
                let err = if guess {
                    err.rejected_credential()
                } else {
                    err
                };
                Err(secure(err.into_response()))
            }
        }
    }
}

#[derive(Serialize)]
struct InfoDto {
    wallet: WalletDto,
    role: &'static str,
    can_read: bool,
    can_receive: bool,
    can_send: bool,
    /// The wallet's default LNURL-pay link, for keys that may receive.
    pay_link: Option<PayLinkDto>,
}

/// What the page shows to be paid without an invoice: the Lightning Address if the default link
/// has a username, and its LNURL-pay as a QR code (a wallet scanning it gets the same payRequest).
#[derive(Serialize)]
struct PayLinkDto {
    lightning_address: Option<String>,
    lnurl: String,
    qr: Option<String>,
}

type UiResult = Result<Response, UiError>;

/// An API error with the UI's headers.
pub struct UiError(ApiError);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        secure(self.0.into_response())
    }
}

fn fail(e: ApiError) -> UiError {
    UiError(e)
}

/// `GET /ui/wallet/info`.
pub async fn info(State(s): State<Services>, k: PageKey) -> UiResult {
    let w = s
        .wallets
        .get(&k.caller, &k.key)
        .await
        .map_err(|e| fail(api_error(e)))?;
    let (can_read, can_receive, can_send) = can(k.role);
    let pay_link = match (&w.default_lnurlp_id, can_receive) {
        (Some(id), true) => match s.lnurlp.get(&k.caller, id).await {
            Ok(v) => Some(PayLinkDto {
                qr: qr::svg_data_url(&v.lnurl_encoded),
                lightning_address: v.lightning_address,
                lnurl: v.lnurl_encoded,
            }),
            // E.g. `public_url` unset since the link was made: the page just shows no link.
            Err(e) => {
                tracing::debug!(wallet = %w.id, error = %e, "wallet page: no pay link to show");
                None
            }
        },
        _ => None,
    };
    Ok(secure(
        Lnpay::ok(InfoDto {
            wallet: WalletDto::from(&w),
            role: k.role.display_name(),
            can_read,
            can_receive,
            can_send,
            pay_link,
        })
        .into_response(),
    ))
}

/// `GET /ui/wallet/transactions`: the newest entries.
pub async fn transactions(State(s): State<Services>, k: PageKey) -> UiResult {
    let (list, _) = s
        .wallets
        .transactions(&k.caller, &k.key, 0, HISTORY_LEN)
        .await
        .map_err(|e| fail(api_error(e)))?;
    let body: Vec<WtxDto> = list.iter().map(WtxDto::from).collect();
    Ok(secure(Lnpay::ok(body).into_response()))
}

#[derive(Serialize)]
struct InvoiceDto {
    #[serde(rename = "lnTx")]
    ln_tx: LnTxDto,
    qr: Option<String>,
}

fn sats(p: &Params) -> Result<Option<Msat>, UiError> {
    match p.uint("num_satoshis", "Num Satoshis").map_err(fail)? {
        Some(0) | None => Ok(None),
        Some(v) => Msat::from_sats(v)
            .map(Some)
            .map_err(|_| fail(ApiError::bad_request("Num Satoshis is too big."))),
    }
}

/// `POST /ui/wallet/invoice`: `num_satoshis`, `memo`.
pub async fn invoice(State(s): State<Services>, k: PageKey, p: Params) -> UiResult {
    let req = InvoiceRequest {
        amount: sats(&p)?.unwrap_or(Msat::ZERO),
        memo: p.string("memo", "Memo").map_err(fail)?,
        expiry_secs: None,
        description_hash: None,
        pass_thru: None,
    };
    let l = s
        .wallets
        .create_invoice(&k.caller, &k.key, req)
        .await
        .map_err(|e| fail(api_error(e)))?;
    Ok(secure(
        Lnpay::created(InvoiceDto {
            qr: qr::svg_data_url(&l.payment_request),
            ln_tx: LnTxDto::full(&l),
        })
        .into_response(),
    ))
}

/// `POST /ui/wallet/pay`: either `payment_request` (BOLT 11; the path of `POST /v1/…/withdraw`)
/// or `ln_address` with `num_satoshis` (a Lightning Address; the path of
/// `POST /v1/…/lnurlp/pay`).
pub async fn pay(State(s): State<Services>, k: PageKey, p: Params) -> UiResult {
    if let Some(address) = p.string("ln_address", "Ln Address").map_err(fail)? {
        let amount = sats(&p)?.ok_or_else(|| {
            fail(ApiError::bad_request(
                "Num Satoshis is required for a Lightning Address.",
            ))
        })?;
        let req = LnurlPayRequest {
            to: PayTo::Address(address.trim().to_owned()),
            amount,
            comment: None,
            pass_thru: None,
        };
        let r = s
            .lnurlp_pay
            .pay(&k.caller, &k.key, req)
            .await
            .map_err(|e| fail(api_error(e)))?;
        return Ok(secure(payment_response(r)));
    }
    let req = WithdrawRequest {
        payment_request: p
            .required_string("payment_request", "Payment Request")
            .map_err(fail)?
            .trim()
            .to_owned(),
        fee_limit_msat: None,
        pass_thru: None,
    };
    let r = s
        .payments
        .withdraw(&k.caller, &k.key, req)
        .await
        .map_err(|e| fail(api_error(e)))?;
    Ok(secure(payment_response(r)))
}

#[derive(Serialize)]
struct LnurlDto {
    lnurl: String,
    qr: Option<String>,
}

/// `POST /ui/wallet/lnurlw`: a one-time LNURL-withdraw link (`num_satoshis` optional).
pub async fn lnurlw(State(s): State<Services>, k: PageKey, p: Params) -> UiResult {
    let req = NewLinkRequest {
        amount: sats(&p)?,
        memo: None,
        pass_thru: None,
    };
    let l = s
        .lnurlw
        .create(&k.caller, &k.key, LnurlwKind::Once, req)
        .await
        .map_err(|e| fail(api_error(e)))?;
    Ok(secure(
        Lnpay::ok(LnurlDto {
            qr: qr::svg_data_url(&l.lnurl),
            lnurl: l.lnurl,
        })
        .into_response(),
    ))
}
