//! The operator console, `/operator`: log in by pasting the secret from
//! `<data_dir>/.operator_cookie`, then the node, its channels, the unresolved payments with the
//! manual-resolution form, the audit with the recent operator actions, and the accounts with a
//! form to create one. Each part calls the same service method as the operator API
//! (`crate::operator`) and the `satchel` commands: the console can do nothing they cannot.
//!
//! Server-rendered HTML without script, the UI's CSP and headers, a CSRF token in every form
//! (synchronizer token per session; double-submit cookie on the login form), and a session
//! cookie (`HttpOnly`, `SameSite=Strict`) of its own, separate from account sessions. Sessions
//! live in memory; the secret changes at every start, and so a restart ends them all.
//! The address rule (loopback only by default) is applied by `crate::operator` to every route
//! here.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use satchel_service::{ErrorClass, ServiceError, Services};

use super::session::{Gate, Session, Sessions, login_error};
use super::{esc, html, page as frame};
use crate::http::Params;
use crate::operator::{ACTIONS_SHOWN, OperatorAccess};
use crate::routes::AppState;

/// The console's session cookie.
pub const OPERATOR_SESSION_COOKIE: &str = "satchel_operator_session";
/// The login form's double-submit cookie.
pub const OPERATOR_LOGIN_COOKIE: &str = "satchel_operator_login";
/// Sessions kept at most (an operator has few browsers); past this the oldest is dropped.
const MAX_SESSIONS: usize = 64;
/// Accounts shown.
const ACCOUNTS_SHOWN: u64 = 200;
/// Audit-trail entries shown.
const ACTIONS_ON_PAGE: u64 = 20;

/// A console session: it proves only that the operator secret was presented.
type OpSession = Session<()>;

struct Inner {
    access: OperatorAccess,
    gate: Gate<()>,
}

/// The console's state: the secret it checks logins against and its sessions.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

impl Console {
    /// The console of a server.
    pub fn new(access: OperatorAccess, services: &Services) -> Console {
        Console(Arc::new(Inner {
            access,
            gate: Gate {
                home: "/operator",
                session_cookie: OPERATOR_SESSION_COOKIE,
                login_cookie: OPERATOR_LOGIN_COOKIE,
                secure_cookies: super::secure_cookies(services),
                sessions: Sessions::new(MAX_SESSIONS),
            },
        }))
    }

    fn gate(&self) -> &Gate<()> {
        &self.0.gate
    }
}

fn login_form(c: &Console, status: StatusCode, message: Option<&str>) -> Response {
    c.gate().login_page(|token| {
        let msg = login_error(message);
        let body = format!(
            "<h1>Operator console</h1>{msg}<section><form id=\"operator-login\" method=\"post\" action=\"/operator/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
<label>Operator secret (the content of <code class=\"inline\">&lt;data_dir&gt;/.operator_cookie</code>) \
<input id=\"secret\" name=\"secret\" type=\"password\" autocomplete=\"off\" required></label>\
<button id=\"operator-login-button\" type=\"submit\">Log in</button></form></section>"
        );
        html(status, frame("Operator", &body, None))
    })
}

fn error_html(e: &ServiceError) -> String {
    let text = match e.class() {
        ErrorClass::Internal | ErrorClass::Unavailable => {
            tracing::error!(error = %e, "operator console");
            "Something went wrong; see the server log.".to_owned()
        }
        _ => e.to_string(),
    };
    format!("<p class=\"error\">{}</p>", esc(&text))
}

/// `GET /operator`.
pub async fn page(
    Extension(c): Extension<Console>,
    State(s): State<Services>,
    headers: HeaderMap,
) -> Response {
    match c.gate().session(&headers) {
        Some(session) => render(&s, &session, "").await,
        None => login_form(&c, StatusCode::OK, None),
    }
}

/// `POST /operator/login`: `secret`, `csrf`.
pub async fn login(Extension(c): Extension<Console>, headers: HeaderMap, p: Params) -> Response {
    if let Err(r) = c.gate().check_login_form(&headers, &p) {
        return r.response();
    }
    let secret = p
        .string("secret", "secret")
        .ok()
        .flatten()
        .unwrap_or_default();
    if !c.0.access.matches(&secret) {
        let mut r = login_form(
            &c,
            StatusCode::UNAUTHORIZED,
            Some("That is not the operator secret of this server (it changes at every start)."),
        );
        if !secret.trim().is_empty() {
            r.extensions_mut()
                .insert(crate::http::error::RejectedCredential);
        }
        return r;
    }
    c.gate().logged_in(())
}

/// `POST /operator/logout`.
pub async fn logout(Extension(c): Extension<Console>, headers: HeaderMap, p: Params) -> Response {
    c.gate().logout(&headers, &p)
}

/// `POST /operator/resolve`: `lntx_id`, `outcome`, `preimage`, `fee_msat`, `reason`,
/// `operator` (the fields of `satchel payments resolve`).
pub async fn resolve(
    Extension(c): Extension<Console>,
    State(s): State<Services>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let session = match c.gate().checked(&headers, &p) {
        Ok(x) => x,
        Err(r) => return r.response(),
    };
    let id = p
        .string("lntx_id", "lntx_id")
        .ok()
        .flatten()
        .unwrap_or_default();
    let notice = match crate::operator::resolve_request(&id, &p) {
        Err(e) => format!("<p class=\"error\">{}</p>", esc(e.message())),
        Ok(req) => match s.operator.resolve(&req).await {
            Ok(rec) => format!(
                "<p class=\"notice\" id=\"resolved\">{} is now {}.</p>",
                esc(&rec.id.to_string()),
                rec.status.map(|x| x.code()).unwrap_or("-")
            ),
            Err(e) => error_html(&e),
        },
    };
    render(&s, &session, &notice).await
}

/// `POST /operator/account`: `label`.
pub async fn create_account(
    Extension(c): Extension<Console>,
    State(s): State<Services>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let session = match c.gate().checked(&headers, &p) {
        Ok(x) => x,
        Err(r) => return r.response(),
    };
    let label = p
        .string("label", "label")
        .ok()
        .flatten()
        .unwrap_or_default();
    let notice = match s.operator.create_account(&label).await {
        Ok(a) => format!(
            "<section id=\"created-account\"><h2>New account {}</h2><p class=\"notice\">Its keys are shown only this once: keep them now.</p>\
<table><tr><td>Secret key</td><td><code class=\"inline key\">{}</code></td></tr><tr><td>Public key</td><td><code class=\"inline key\">{}</code></td></tr></table></section>",
            esc(&a.id.to_string()),
            esc(a.secret_key.expose()),
            esc(a.public_key.expose())
        ),
        Err(e) => error_html(&e),
    };
    render(&s, &session, &notice).await
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |x| x.to_string())
}

async fn render(s: &Services, session: &OpSession, notice: &str) -> Response {
    let csrf = session.csrf_field();
    let mut body = format!(
        "<h1>Operator console</h1><form method=\"post\" action=\"/operator/logout\">{csrf}<button id=\"logout\" type=\"submit\">Log out</button></form>{notice}"
    );

    // Node.
    body.push_str("<section id=\"node\"><h2>Node</h2>");
    match s.operator.node().await {
        Ok(n) => body.push_str(&format!(
            "<table><tr><th>Backend</th><td>{}</td></tr><tr><th>Network</th><td>{}</td></tr>\
<tr><th>Pubkey</th><td><code class=\"inline\" id=\"node-pubkey\">{}</code></td></tr><tr><th>Alias</th><td>{}</td></tr>\
<tr><th>Block height</th><td>{}</td></tr><tr><th>Synced</th><td>{}</td></tr></table>\
<p class=\"muted\">On-chain balance: not available yet (the node has no on-chain wallet).</p>",
            esc(n.backend),
            esc(n.info.network.name()),
            esc(&n.info.pubkey.to_string()),
            esc(&n.info.alias),
            opt(n.status.block_height),
            opt(n.status.synced)
        )),
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str("</section>");

    // Channels.
    body.push_str("<section id=\"channels\"><h2>Channels</h2>");
    match s.operator.channels().await {
        Ok(list) if list.is_empty() => body.push_str("<p class=\"muted\">No channels.</p>"),
        Ok(list) => {
            body.push_str("<table><thead><tr><th>Peer</th><th>Capacity (sats)</th><th>Local (msat)</th><th>Remote (msat)</th><th>State</th><th>Confirmations</th></tr></thead><tbody>");
            for ch in &list {
                body.push_str(&format!(
                    "<tr class=\"channel\"><td><code class=\"inline\">{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&ch.peer.to_string()),
                    ch.capacity_sats,
                    ch.local_balance_msat,
                    ch.remote_balance_msat,
                    ch.state.name(),
                    opt(ch.confirmations)
                ));
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str("</section>");

    // Unresolved payments.
    body.push_str("<section id=\"payments\"><h2>Unresolved payments</h2><p class=\"muted\">Payments still holding a reserve. Resolve one only after checking the node: <em>succeeded</em> needs the preimage as proof and books the fee the node paid; <em>failed</em> refunds the wallet.</p>");
    match s.operator.unresolved().await {
        Ok(list) if list.is_empty() => {
            body.push_str("<p class=\"muted\" id=\"no-payments\">None.</p>")
        }
        Ok(list) => {
            let now = satchel_domain::now_secs();
            for p in &list {
                let id = esc(&p.id.to_string());
                body.push_str(&format!(
                    "<div class=\"payment\" id=\"payment-{id}\"><h3>{id}</h3><table>\
<tr><th>Wallet</th><td>{}</td></tr><tr><th>Amount (msat)</th><td>{}</td></tr><tr><th>Fee limit (msat)</th><td>{}</td></tr>\
<tr><th>Status</th><td>{}</td></tr><tr><th>Age (s)</th><td>{}</td></tr><tr><th>Payment hash</th><td><code class=\"inline\">{}</code></td></tr></table>\
<form class=\"resolve\" method=\"post\" action=\"/operator/resolve\">{csrf}<input type=\"hidden\" name=\"lntx_id\" value=\"{id}\">\
<label>Outcome <select name=\"outcome\"><option value=\"failed\">failed (refund)</option><option value=\"succeeded\">succeeded (paid)</option></select></label>\
<label>Preimage (hex, for succeeded) <input name=\"preimage\" autocomplete=\"off\" maxlength=\"64\"></label>\
<label>Fee paid (msat, for succeeded) <input name=\"fee_msat\" inputmode=\"numeric\" value=\"0\"></label>\
<label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
<label>Operator <input name=\"operator\" maxlength=\"64\" value=\"operator\"></label>\
<button type=\"submit\">Resolve</button></form></div>",
                    esc(&p.wallet_id.as_ref().map(|w| w.to_string()).unwrap_or_default()),
                    p.amount.as_msat(),
                    p.fee_limit.as_msat(),
                    p.status.map(|x| x.code()).unwrap_or("-"),
                    now.saturating_sub(p.created_at),
                    esc(&p.payment_hash.to_hex())
                ));
            }
        }
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str("</section>");

    // Audit and the trail.
    body.push_str("<section id=\"audit\"><h2>Audit</h2>");
    match s.operator.audit().await {
        Ok(r) => {
            body.push_str(&format!(
                "<p id=\"audit-result\" class=\"{}\">{}</p><table><tr><th>Wallets</th><td>{}</td></tr><tr><th>Ledger transactions</th><td>{}</td></tr>\
<tr><th>Liabilities (msat)</th><td>{}</td></tr><tr><th>In flight (msat)</th><td>{}</td></tr><tr><th>Unclaimed (msat)</th><td>{}</td></tr><tr><th>Revenue (msat)</th><td>{}</td></tr></table>",
                if r.is_clean() { "notice" } else { "error" },
                if r.is_clean() { "audit clean" } else { "AUDIT FAILED" },
                r.wallets,
                r.transactions,
                r.liabilities_msat,
                r.in_flight_msat,
                r.unclaimed_msat,
                r.revenue_msat
            ));
            for p in &r.problems {
                body.push_str(&format!("<p class=\"error\">{}</p>", esc(p)));
            }
            body.push_str("<p class=\"muted\">Solvency against the node's holdings needs the node's on-chain wallet, which is not wired yet.</p>");
        }
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str("<h3>Operator actions</h3>");
    match s.operator.actions(ACTIONS_ON_PAGE.min(ACTIONS_SHOWN)).await {
        Ok(list) => {
            body.push_str("<table id=\"actions\"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Payment</th><th>Reason</th><th>Details</th></tr></thead><tbody>");
            for a in &list {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    a.at,
                    esc(&a.operator),
                    esc(&a.action),
                    esc(&a
                        .lntx_id
                        .as_ref()
                        .map(|l| l.to_string())
                        .unwrap_or_default()),
                    esc(&a.reason),
                    esc(&a.details)
                ));
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str("</section>");

    // Accounts.
    body.push_str("<section id=\"accounts\"><h2>Accounts</h2>");
    match s.operator.accounts(0, ACCOUNTS_SHOWN).await {
        Ok((list, total)) => {
            body.push_str(&format!("<p class=\"muted\">{total} account(s); the oldest {ACCOUNTS_SHOWN} are shown.</p><table><thead><tr><th>Id</th><th>Label</th><th>Wallets</th><th>Balance (msat)</th></tr></thead><tbody>"));
            for a in &list {
                body.push_str(&format!(
                    "<tr class=\"account\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&a.id.to_string()),
                    esc(&a.label),
                    a.wallets,
                    a.balance_msat
                ));
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&error_html(&e)),
    }
    body.push_str(&format!(
        "<form id=\"create-account\" method=\"post\" action=\"/operator/account\">{csrf}\
<label>Label <input name=\"label\" id=\"account-label\" maxlength=\"100\" required></label>\
<button id=\"create-account-button\" type=\"submit\">Create account</button></form></section>"
    ));
    html(StatusCode::OK, frame("Operator", &body, None))
}

/// The console's routes (the address rule is layered on by `crate::operator::router`).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/operator", get(page))
        .route("/operator/login", post(login))
        .route("/operator/logout", post(logout))
        .route("/operator/resolve", post(resolve))
        .route("/operator/account", post(create_account))
}
