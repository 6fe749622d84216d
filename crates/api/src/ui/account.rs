//! The account page, `/account`: log in with the secret key (a form POST; the key never travels
//! in a URL), then the account's wallets, a form to create one (its keys are shown once, with
//! links to their wallet pages), key suspension, webhooks with their delivery log and
//! redelivery, and the recent API errors. Server-rendered HTML; every form carries the
//! session's CSRF token and a POST without it (or with another) is refused with 403.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use satchel_domain::{AccountId, KeyRole};
use satchel_service::auth::Caller;
use satchel_service::wallets::CreatedWallet;
use satchel_service::{ErrorClass, Services};

use super::session::{Session, login_error};
use super::{Ui, esc, html, page as frame};
use crate::http::Params;

/// Session cookie name.
pub const SESSION_COOKIE: &str = "satchel_session";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "satchel_login_csrf";
/// Deliveries shown per webhook.
const DELIVERIES_SHOWN: u64 = 10;
/// Wallets shown.
const WALLETS_SHOWN: u64 = 50;

fn login_form(ui: &Ui, status: StatusCode, message: Option<&str>) -> Response {
    ui.gate.login_page(|token| {
        let msg = login_error(message);
        let body = format!(
            "<h1>Account</h1>{msg}<section><form id=\"login-form\" method=\"post\" action=\"/account/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
<label>Secret key (<code class=\"inline\">sak_…</code>) <input id=\"sak\" name=\"sak\" type=\"password\" autocomplete=\"off\" required></label>\
<button id=\"login-button\" type=\"submit\">Log in</button></form></section>"
        );
        html(status, frame("Account", &body, None))
    })
}

fn caller(session: &Session<AccountId>) -> Caller {
    Caller {
        account_id: session.who.clone(),
        role: KeyRole::Secret,
    }
}

/// `GET /account`.
pub async fn page(
    Extension(ui): Extension<Arc<Ui>>,
    State(s): State<Services>,
    headers: HeaderMap,
) -> Response {
    match ui.gate.session(&headers) {
        Some(session) => render(&ui, &s, &session, "").await,
        None => login_form(&ui, StatusCode::OK, None),
    }
}

/// `POST /account/login`: `sak`, `csrf` (the double-submit token of the login form).
pub async fn login(
    Extension(ui): Extension<Arc<Ui>>,
    State(s): State<Services>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    if let Err(r) = ui.gate.check_login_form(&headers, &p) {
        return r.response();
    }
    let sak = p.string("sak", "sak").ok().flatten().unwrap_or_default();
    let authed = s
        .auth
        .authenticate(Some(&sak))
        .await
        .and_then(|c| s.auth.require_secret(&c).map(|()| c));
    match authed {
        Ok(c) => ui.gate.logged_in(c.account_id),
        Err(e) => {
            let mut r = login_form(
                &ui,
                StatusCode::UNAUTHORIZED,
                Some("That is not a secret key of an account here."),
            );
            if e.class() == ErrorClass::InvalidCredentials && !sak.trim().is_empty() {
                r.extensions_mut()
                    .insert(crate::http::error::RejectedCredential);
            }
            r
        }
    }
}

/// `POST /account/logout`.
pub async fn logout(Extension(ui): Extension<Arc<Ui>>, headers: HeaderMap, p: Params) -> Response {
    ui.gate.logout(&headers, &p)
}

/// `POST /account/wallet`: `user_label`.
pub async fn create_wallet(
    Extension(ui): Extension<Arc<Ui>>,
    State(s): State<Services>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let session = match ui.gate.checked(&headers, &p) {
        Ok(x) => x,
        Err(r) => return r.response(),
    };
    let label = p
        .string("user_label", "Internal Label")
        .ok()
        .flatten()
        .unwrap_or_default();
    let notice = match s.wallets.create_wallet(&caller(&session), &label).await {
        Ok(created) => created_html(&created),
        Err(e) => error_html(&e),
    };
    render(&ui, &s, &session, &notice).await
}

/// `POST /account/key/suspend`: `key`, `action` (`suspend` or `reinstate`).
pub async fn suspend_key(
    Extension(ui): Extension<Arc<Ui>>,
    State(s): State<Services>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let session = match ui.gate.checked(&headers, &p) {
        Ok(x) => x,
        Err(r) => return r.response(),
    };
    let key = p.string("key", "key").ok().flatten().unwrap_or_default();
    let suspend = p.string("action", "action").ok().flatten().as_deref() != Some("reinstate");
    let notice = match s
        .auth
        .set_own_key_suspended(&caller(&session), &key, suspend)
        .await
    {
        Ok(true) if suspend => "<p class=\"notice\">Key suspended.</p>".to_owned(),
        Ok(true) => "<p class=\"notice\">Key reinstated.</p>".to_owned(),
        Ok(false) => {
            "<p class=\"error\">No change: not a key of this account, or already in that state.</p>"
                .to_owned()
        }
        Err(e) => error_html(&e),
    };
    render(&ui, &s, &session, &notice).await
}

/// `POST /account/redeliver`: `delivery`.
pub async fn redeliver(
    Extension(ui): Extension<Arc<Ui>>,
    State(s): State<Services>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let session = match ui.gate.checked(&headers, &p) {
        Ok(x) => x,
        Err(r) => return r.response(),
    };
    let id = p
        .string("delivery", "delivery")
        .ok()
        .flatten()
        .unwrap_or_default();
    let notice = match s.webhooks.redeliver(&caller(&session), &id).await {
        Ok(d) => format!(
            "<p class=\"notice\">Queued again as delivery {}.</p>",
            esc(&d.delivery.id.to_string())
        ),
        Err(e) => error_html(&e),
    };
    render(&ui, &s, &session, &notice).await
}

fn error_html(e: &satchel_service::ServiceError) -> String {
    let text = if e.class() == ErrorClass::Internal || e.class() == ErrorClass::Unavailable {
        tracing::error!(error = %e, "account page");
        "Something went wrong; try again later.".to_owned()
    } else {
        e.to_string()
    };
    format!("<p class=\"error\">{}</p>", esc(&text))
}

fn created_html(c: &CreatedWallet) -> String {
    let mut rows = String::new();
    for k in &c.keys {
        let text = esc(k.expose());
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code class=\"inline key\">{text}</code></td><td><a href=\"/wallet/{text}\">wallet page</a></td></tr>",
            esc(k.role().display_name())
        ));
    }
    format!(
        "<section id=\"created\"><h2>New wallet <span id=\"created-id\">{}</span></h2>\
<p class=\"notice\">Its keys are shown only this once: keep them now.</p><table id=\"created-keys\">{rows}</table></section>",
        esc(&c.wallet.id.to_string())
    )
}

async fn render(ui: &Ui, s: &Services, session: &Session<AccountId>, notice: &str) -> Response {
    let c = caller(session);
    let csrf = session.csrf_field();
    let mut body = format!(
        "<h1>Account</h1><form method=\"post\" action=\"/account/logout\">{csrf}<button id=\"logout\" type=\"submit\">Log out</button></form>{notice}"
    );

    // Wallets.
    body.push_str("<section id=\"wallets\"><h2>Wallets</h2>");
    match s.wallets.list(&c, 0, WALLETS_SHOWN).await {
        Ok((list, total)) => {
            body.push_str(&format!(
                "<p class=\"muted\">{total} wallet(s). Keys are stored hashed, so they are shown only when a wallet is created.</p>\
<table><thead><tr><th>Id</th><th>Label</th><th>Balance (sats)</th></tr></thead><tbody>"
            ));
            for w in &list {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&w.id.to_string()),
                    esc(&w.user_label),
                    w.balance.as_msat() / 1000
                ));
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str(&format!(
        "<form id=\"create-wallet\" method=\"post\" action=\"/account/wallet\">{csrf}\
<label>Label <input name=\"user_label\" id=\"wallet-label-input\" maxlength=\"100\"></label>\
<button id=\"create-wallet-button\" type=\"submit\">Create wallet</button></form>\
<h3>Suspend or reinstate a key</h3><form id=\"suspend-key\" method=\"post\" action=\"/account/key/suspend\">{csrf}\
<label>Key <input name=\"key\" type=\"password\" autocomplete=\"off\" required></label>\
<button name=\"action\" value=\"suspend\" type=\"submit\">Suspend</button> \
<button name=\"action\" value=\"reinstate\" type=\"submit\">Reinstate</button></form></section>"
    ));

    // Webhooks and their delivery logs.
    body.push_str("<section id=\"webhooks\"><h2>Webhooks</h2>");
    match s.webhooks.list(&c).await {
        Ok(hooks) if hooks.is_empty() => body.push_str("<p class=\"muted\">None (create them with <code class=\"inline\">POST /v1/webhooks</code>).</p>"),
        Ok(hooks) => {
            for h in &hooks {
                let id = h.id.to_string();
                body.push_str(&format!(
                    "<h3>{} <span class=\"muted\">{} · {}</span></h3>",
                    esc(&h.endpoint_url),
                    esc(&id),
                    esc(&h.events.join(", "))
                ));
                match s.webhooks.deliveries(&c, &id, 0, DELIVERIES_SHOWN).await {
                    Ok((list, total)) => {
                        body.push_str(&format!("<p class=\"muted\">{total} deliveries; the newest:</p><table><thead><tr><th>Delivery</th><th>Event</th><th>Status</th><th>Attempts</th><th>Last HTTP</th><th></th></tr></thead><tbody>"));
                        for d in &list {
                            let did = d.delivery.id.to_string();
                            let last = d
                                .attempts
                                .last()
                                .and_then(|a| a.status_code)
                                .map_or_else(|| "–".to_owned(), |s| s.to_string());
                            body.push_str(&format!(
                                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{last}</td><td><form method=\"post\" action=\"/account/redeliver\">{csrf}<input type=\"hidden\" name=\"delivery\" value=\"{}\"><button type=\"submit\">Redeliver</button></form></td></tr>",
                                esc(&did),
                                esc(d.event.name()),
                                esc(d.delivery.status.name()),
                                d.delivery.attempts,
                                esc(&did)
                            ));
                        }
                        body.push_str("</tbody></table>");
                    }
                    Err(e) => body.push_str(&error_html(&e)),
                }
            }
        }
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str("</section>");

    // Recent API errors.
    body.push_str("<section id=\"errors\"><h2>Recent API errors</h2><p class=\"muted\">The last answers with status 4xx or 5xx to requests made with this account's keys, kept in memory since the server started.</p><table><thead><tr><th>When</th><th>Request</th><th>Status</th><th>Message</th><th>Request id</th></tr></thead><tbody>");
    for e in ui.errors.recent(&session.who) {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td><code class=\"inline\">{}</code></td></tr>",
            e.at_secs,
            esc(&e.method),
            esc(&e.route),
            e.status,
            esc(&e.message),
            esc(&e.request_id)
        ));
    }
    body.push_str("</tbody></table></section>");
    html(StatusCode::OK, frame("Account", &body, None))
}
