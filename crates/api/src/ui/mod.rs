//! The web UI served by the binary: the wallet page (`/wallet/<wallet key>`), the account page
//! (`/account`, secret-key login) and their assets, all compiled in (no CDN, no build step).
//!
//! * `wallet`: the page whose address is a wallet key (as LNPay's `wakewa_`/`wakewv_` pages).
//!   Its script calls small JSON endpoints under `/ui/wallet/` that authenticate by that same
//!   key in `X-Api-Key` (`AuthService::wallet_page_caller`: the key acts for its own wallet
//!   with its own role's permissions, the rules a pak presenting it gets).
//! * `account`: server-rendered HTML forms; a session cookie after a form login with the secret
//!   key (the key is never in a URL), a CSRF token in every form (`session`).
//! * `errors`: a bounded in-memory ring of each account's recent 4xx/5xx API answers.
//! * `qr`: QR codes as SVG, rendered here with the `qrcode` crate.
//! * `operator`: the operator console (`/operator`), wired by `crate::operator`.
//!
//! Every HTML answer carries the headers of [`secure`]: a CSP without inline script or style,
//! `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer` (page addresses carry wallet keys).

use std::sync::Arc;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use satchel_service::Services;

use crate::routes::AppState;

mod account;
pub mod errors;
pub(crate) mod operator;
mod qr;
mod session;
mod wallet;
pub(crate) use wallet::MAX_KEY_LEN;

pub(crate) use session::same as same_secret;

/// The policy of every UI answer: only this server's own scripts, styles and fetches; images
/// from here or `data:` (the QR codes are SVG data URLs); forms post only here; no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

const WALLET_HTML: &str = include_str!("assets/wallet.html");
const WALLET_JS: &str = include_str!("assets/wallet.js");
const UI_CSS: &str = include_str!("assets/ui.css");

/// Account sessions kept at most.
const MAX_ACCOUNT_SESSIONS: usize = 10_000;

/// State of the UI: the account page's login and the recent-errors ring.
pub struct Ui {
    gate: session::Gate<satchel_domain::AccountId>,
    /// Recent 4xx/5xx answers per account (fed by [`errors::record`]).
    pub errors: errors::RecentErrors,
}

/// Whether cookies get `Secure`: when the server's public address is https.
fn secure_cookies(services: &Services) -> bool {
    services
        .ctx
        .cfg
        .public_url
        .as_ref()
        .is_some_and(|u| u.as_str().starts_with("https://"))
}

impl Ui {
    /// The UI state of a server.
    pub fn new(services: &Services) -> Arc<Ui> {
        Arc::new(Ui {
            gate: session::Gate {
                home: "/account",
                session_cookie: account::SESSION_COOKIE,
                login_cookie: account::LOGIN_COOKIE,
                secure_cookies: secure_cookies(services),
                sessions: session::Sessions::new(MAX_ACCOUNT_SESSIONS),
            },
            errors: errors::RecentErrors::default(),
        })
    }
}

/// Adds the security headers every UI answer carries.
pub fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An HTML page with the UI's headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(r)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(r)
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A whole page in the UI's frame.
fn page(title: &str, body: &str, script: Option<&str>) -> String {
    let script = script
        .map(|s| format!("<script src=\"{}\" defer></script>", esc(s)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · Satchel</title><link rel=\"stylesheet\" href=\"/ui/ui.css\">{script}</head>\
<body><header><a href=\"/docs\">API docs</a> <strong>Satchel</strong></header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

/// The UI's routes.
pub fn router(ui: Arc<Ui>) -> Router<AppState> {
    Router::new()
        .route("/wallet/{key}", get(wallet::page))
        .route("/ui/wallet/info", get(wallet::info))
        .route("/ui/wallet/transactions", get(wallet::transactions))
        .route("/ui/wallet/invoice", post(wallet::invoice))
        .route("/ui/wallet/pay", post(wallet::pay))
        .route("/ui/wallet/lnurlw", post(wallet::lnurlw))
        .route("/ui/wallet/{key}/events", get(crate::events::page_events))
        .route("/account", get(account::page))
        .route("/account/login", post(account::login))
        .route("/account/logout", post(account::logout))
        .route("/account/wallet", post(account::create_wallet))
        .route("/account/key/suspend", post(account::suspend_key))
        .route("/account/redeliver", post(account::redeliver))
        .route(
            "/ui/wallet.js",
            get(|| async { asset("text/javascript; charset=utf-8", WALLET_JS) }),
        )
        .route(
            "/ui/ui.css",
            get(|| async { asset("text/css; charset=utf-8", UI_CSS) }),
        )
        .layer(Extension(ui))
}
