//! The account page, `/account`: log in with the secret key (a form POST; the key never travels
//! in a URL), then the account's wallets, a form to create one (its keys are shown once, with
//! links to their wallet pages), key suspension, webhooks with their delivery log and
//! redelivery, and the recent API errors. Server-rendered HTML; every form carries the
//! session's CSRF token and a POST without it (or with another) is refused with 403.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use satchel_domain::KeyRole;
use satchel_service::auth::Caller;
use satchel_service::wallets::CreatedWallet;
use satchel_service::{ErrorClass, Services};

use super::session::{
    LOGIN_COOKIE, LOGIN_FORM_TTL_SECS, SESSION_COOKIE, SESSION_TTL, Session, cookie, random_token,
    same, set_cookie,
};
use super::{Ui, esc, html, page as frame};
use crate::http::Params;

/// Deliveries shown per webhook.
const DELIVERIES_SHOWN: u64 = 10;
/// Wallets shown.
const WALLETS_SHOWN: u64 = 50;

fn with_cookie(mut r: Response, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

fn see_other(to: &'static str) -> Response {
    let mut r = html(StatusCode::SEE_OTHER, String::new());
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    r
}

fn login_form(ui: &Ui, status: StatusCode, message: Option<&str>) -> Response {
    let token = random_token();
    let msg = message
        .map(|m| format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Account</h1>{msg}<section><form id=\"login-form\" method=\"post\" action=\"/account/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
<label>Secret key (<code class=\"inline\">sak_…</code>) <input id=\"sak\" name=\"sak\" type=\"password\" autocomplete=\"off\" required></label>\
<button id=\"login-button\" type=\"submit\">Log in</button></form></section>"
    );
    with_cookie(
        html(status, frame("Account", &body, None)),
        &set_cookie(LOGIN_COOKIE, &token, LOGIN_FORM_TTL_SECS, ui.secure_cookies),
    )
}

fn forbidden() -> Response {
    html(
        StatusCode::FORBIDDEN,
        frame(
            "Refused",
            "<p class=\"error\" id=\"csrf-error\">Refused: the form's CSRF token is missing or wrong. Reload the page and try again.</p>",
            None,
        ),
    )
}

fn caller(session: &Session) -> Caller {
    Caller {
        account_id: session.account_id.clone(),
        role: KeyRole::Secret,
    }
}

/// Why a form POST was not accepted.
enum Refused {
    /// No live session: back to the login form.
    NoSession,
    /// The CSRF token is missing or wrong.
    Csrf,
}

impl Refused {
    fn response(self) -> Response {
        match self {
            Refused::NoSession => see_other("/account"),
            Refused::Csrf => forbidden(),
        }
    }
}

/// The session of a form POST whose CSRF token matches, or the refusal.
fn checked(ui: &Ui, headers: &HeaderMap, p: &Params) -> Result<Session, Refused> {
    let session = ui.sessions.get(headers).ok_or(Refused::NoSession)?;
    let token = p.string("csrf", "csrf").ok().flatten().unwrap_or_default();
    if same(&token, &session.csrf) {
        Ok(session)
    } else {
        Err(Refused::Csrf)
    }
}

/// `GET /account`.
pub async fn page(
    Extension(ui): Extension<Arc<Ui>>,
    State(s): State<Services>,
    headers: HeaderMap,
) -> Response {
    match ui.sessions.get(&headers) {
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
    let token = p.string("csrf", "csrf").ok().flatten().unwrap_or_default();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&token, &expected) {
        return forbidden();
    }
    let sak = p.string("sak", "sak").ok().flatten().unwrap_or_default();
    let authed = s
        .auth
        .authenticate(Some(&sak))
        .await
        .and_then(|c| s.auth.require_secret(&c).map(|()| c));
    match authed {
        Ok(c) => {
            let id = ui.sessions.create(c.account_id);
            let r = with_cookie(
                see_other("/account"),
                &set_cookie(
                    SESSION_COOKIE,
                    &id,
                    SESSION_TTL.as_secs(),
                    ui.secure_cookies,
                ),
            );
            with_cookie(r, &set_cookie(LOGIN_COOKIE, "", 0, ui.secure_cookies))
        }
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
    if let Err(r) = checked(&ui, &headers, &p) {
        return r.response();
    }
    ui.sessions.end(&headers);
    with_cookie(
        see_other("/account"),
        &set_cookie(SESSION_COOKIE, "", 0, ui.secure_cookies),
    )
}

/// `POST /account/wallet`: `user_label`.
pub async fn create_wallet(
    Extension(ui): Extension<Arc<Ui>>,
    State(s): State<Services>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let session = match checked(&ui, &headers, &p) {
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
    let session = match checked(&ui, &headers, &p) {
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
    let session = match checked(&ui, &headers, &p) {
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

fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

async fn render(ui: &Ui, s: &Services, session: &Session, notice: &str) -> Response {
    let c = caller(session);
    let csrf = csrf_field(session);
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
    for e in ui.errors.recent(&session.account_id) {
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
