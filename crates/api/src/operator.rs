//! The operator surface: a JSON API under `/operator/v1/…` (what `satchel node …` calls) and
//! the console pages under `/operator` (`crate::ui::operator`). It is not part of the LNPay
//! API and not in its OpenAPI document.
//!
//! **Who gets in.** Only the holder of the operator secret, which `satchel serve` writes at
//! each start to `<data_dir>/.operator_cookie` (mode 0600, like bitcoind's `.cookie`): reading
//! that file is the proof of being the operator. The API takes it as
//! `Authorization: Bearer <secret>`, compared in constant time; the console takes it once in a
//! login form and then uses a session cookie. API keys (sak/pak/wallet keys) are never
//! consulted here, so no key of any kind reaches these routes.
//!
//! **Where from.** By default only from loopback peers, and only when the request carries no
//! forwarding header (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`): a reverse proxy on the
//! same host connects from loopback, and the public requests it forwards must not count as
//! local. Everything else gets the same 404 as an unknown route. `operator_allow_remote = true`
//! lifts the address rule (the secret is still needed).
//!
//! **Why on the main listener** rather than a listener of its own: the CLI then needs only the
//! address the operator already configured (`listen`) and the data dir, the connection limits
//! and timeouts of the main listener apply, and there is no second port to firewall. The
//! loopback rule above keeps it as private as a loopback-only listener would be, provided the
//! operator's reverse proxy adds a forwarding header (every common one does by default).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use satchel_service::Services;
use satchel_service::operator::{NodeOverview, ResolveRequest};
use satchel_service::records::{
    AccountSummary, AuditReport, ChannelInfo, LnTxRecord, OperatorAction,
};
use serde::Serialize;

use crate::http::{ApiError, Params};
use crate::routes::{AppState, Seg, api_error};

/// Headers a forwarding proxy adds; a request carrying one is not treated as local.
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];
/// Operator audit-trail entries returned at most.
pub const ACTIONS_SHOWN: u64 = 100;
/// Accounts per page at most.
pub const ACCOUNTS_PAGE_MAX: u64 = 500;

/// The operator secret and the address rule. `Debug` does not show the secret.
#[derive(Clone)]
pub struct OperatorAccess {
    secret: Arc<str>,
    allow_remote: bool,
}

impl std::fmt::Debug for OperatorAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorAccess")
            .field("secret", &"<redacted>")
            .field("allow_remote", &self.allow_remote)
            .finish()
    }
}

impl OperatorAccess {
    /// Access with `secret` (the cookie file's content, trimmed); `allow_remote` lifts the
    /// loopback rule.
    pub fn new(secret: &str, allow_remote: bool) -> OperatorAccess {
        OperatorAccess {
            secret: Arc::from(secret.trim()),
            allow_remote,
        }
    }

    /// Whether `presented` is the secret (constant time in the content).
    pub fn matches(&self, presented: &str) -> bool {
        !self.secret.is_empty() && crate::ui::same_secret(presented.trim(), &self.secret)
    }

    /// Whether a request from `peer` with `headers` may reach the operator routes.
    pub fn place_allowed(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
        if self.allow_remote {
            return true;
        }
        let Some(peer) = peer else {
            return false;
        };
        peer.ip().to_canonical().is_loopback()
            && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
    }
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The address rule for every operator route (API and console).
async fn place_gate(State(access): State<OperatorAccess>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if access.place_allowed(peer, req.headers()) {
        next.run(req).await
    } else {
        tracing::warn!(
            peer = ?peer,
            "operator route refused: not a local request (see operator_allow_remote)"
        );
        ApiError::not_found_route().into_response()
    }
}

/// The secret rule for the JSON API.
async fn secret_gate(State(access): State<OperatorAccess>, req: Request, next: Next) -> Response {
    match bearer(req.headers()) {
        Some(token) if access.matches(token) => next.run(req).await,
        presented => {
            let err = ApiError::with_status(
                StatusCode::UNAUTHORIZED,
                "Operator endpoints need the operator secret from <data_dir>/.operator_cookie as `Authorization: Bearer <secret>`.",
            );
            // A wrong secret is a guess: the auth throttle counts it.
            if presented.is_some_and(|t| !t.is_empty()) {
                err.rejected_credential().into_response()
            } else {
                err.into_response()
            }
        }
    }
}

type OpResult<T> = Result<Json<T>, ApiError>;

/// `GET /operator/v1/node`.
#[derive(Debug, Serialize)]
pub struct NodeDto {
    /// Configured backend.
    pub backend: &'static str,
    /// Network name.
    pub network: &'static str,
    /// Node pubkey (hex).
    pub pubkey: String,
    /// Alias.
    pub alias: String,
    /// Best block the node processed, if known.
    pub block_height: Option<u32>,
    /// Synced to the chain, if the node can tell.
    pub synced: Option<bool>,
}

impl From<&NodeOverview> for NodeDto {
    fn from(n: &NodeOverview) -> NodeDto {
        NodeDto {
            backend: n.backend,
            network: n.info.network.name(),
            pubkey: n.info.pubkey.to_string(),
            alias: n.info.alias.clone(),
            block_height: n.status.block_height,
            synced: n.status.synced,
        }
    }
}

/// One channel.
#[derive(Debug, Serialize)]
pub struct ChannelDto {
    /// Channel id (hex).
    pub channel_id: String,
    /// Short channel id, once known.
    pub short_channel_id: Option<u64>,
    /// Peer pubkey (hex).
    pub peer: String,
    /// Size, sats.
    pub capacity_sats: u64,
    /// Sendable now, msat.
    pub local_balance_msat: u64,
    /// Receivable now, msat.
    pub remote_balance_msat: u64,
    /// `pending`, `active`, `inactive`, `closing`.
    pub state: &'static str,
    /// Funding confirmations, where known.
    pub confirmations: Option<u32>,
}

impl From<&ChannelInfo> for ChannelDto {
    fn from(c: &ChannelInfo) -> ChannelDto {
        ChannelDto {
            channel_id: c.channel_id.clone(),
            short_channel_id: c.short_channel_id,
            peer: c.peer.to_string(),
            capacity_sats: c.capacity_sats,
            local_balance_msat: c.local_balance_msat,
            remote_balance_msat: c.remote_balance_msat,
            state: c.state.name(),
            confirmations: c.confirmations,
        }
    }
}

/// `GET /operator/v1/channels`.
#[derive(Debug, Serialize)]
pub struct ChannelsDto {
    /// The channels.
    pub channels: Vec<ChannelDto>,
}

/// An unresolved (or just resolved) outgoing payment.
#[derive(Debug, Serialize)]
pub struct PaymentDto {
    /// `lntx_…`.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Paying wallet.
    pub wallet_id: Option<String>,
    /// Amount, msat.
    pub amount_msat: u64,
    /// Fee limit reserved, msat.
    pub fee_limit_msat: u64,
    /// Fee paid, msat.
    pub fee_msat: u64,
    /// `reserved`, `dispatched`, `unknown`, `succeeded`, `failed`.
    pub status: &'static str,
    /// Created, unix seconds.
    pub created_at_secs: i64,
    /// Payment hash (hex).
    pub payment_hash: String,
    /// Destination pubkey.
    pub dest_pubkey: String,
}

impl From<&LnTxRecord> for PaymentDto {
    fn from(p: &LnTxRecord) -> PaymentDto {
        PaymentDto {
            id: p.id.to_string(),
            account_id: p.account_id.to_string(),
            wallet_id: p.wallet_id.as_ref().map(|w| w.to_string()),
            amount_msat: p.amount.as_msat(),
            fee_limit_msat: p.fee_limit.as_msat(),
            fee_msat: p.fee.as_msat(),
            status: p.status.map(|s| s.code()).unwrap_or("-"),
            created_at_secs: p.created_at,
            payment_hash: p.payment_hash.to_string(),
            dest_pubkey: p.dest_pubkey.clone(),
        }
    }
}

/// `GET /operator/v1/payments`.
#[derive(Debug, Serialize)]
pub struct PaymentsDto {
    /// Unresolved payments, oldest first.
    pub payments: Vec<PaymentDto>,
}

/// One audit-trail entry.
#[derive(Debug, Serialize)]
pub struct ActionDto {
    /// When, unix seconds.
    pub at_secs: i64,
    /// Who.
    pub operator: String,
    /// `resolve_succeeded`, `resolve_failed`.
    pub action: String,
    /// The payment.
    pub lntx_id: Option<String>,
    /// Why.
    pub reason: String,
    /// Details as recorded (JSON text).
    pub details: String,
}

impl From<&OperatorAction> for ActionDto {
    fn from(a: &OperatorAction) -> ActionDto {
        ActionDto {
            at_secs: a.at,
            operator: a.operator.clone(),
            action: a.action.clone(),
            lntx_id: a.lntx_id.as_ref().map(|l| l.to_string()),
            reason: a.reason.clone(),
            details: a.details.clone(),
        }
    }
}

/// `GET /operator/v1/actions`.
#[derive(Debug, Serialize)]
pub struct ActionsDto {
    /// Newest first.
    pub actions: Vec<ActionDto>,
}

/// `GET /operator/v1/audit`: the same report as `satchel audit`.
#[derive(Debug, Serialize)]
pub struct AuditDto {
    /// No problem found.
    pub clean: bool,
    /// Wallets checked.
    pub wallets: u64,
    /// Ledger transactions checked.
    pub transactions: u64,
    /// Postings checked.
    pub postings: u64,
    /// What the wallets are owed, msat.
    pub liabilities_msat: i64,
    /// Reserved for payments in flight, msat.
    pub in_flight_msat: i64,
    /// Received for no wallet, msat.
    pub unclaimed_msat: i64,
    /// Rounding revenue, msat.
    pub revenue_msat: i64,
    /// Every discrepancy, in words.
    pub problems: Vec<String>,
}

impl From<&AuditReport> for AuditDto {
    fn from(r: &AuditReport) -> AuditDto {
        AuditDto {
            clean: r.is_clean(),
            wallets: r.wallets,
            transactions: r.transactions,
            postings: r.postings,
            liabilities_msat: r.liabilities_msat,
            in_flight_msat: r.in_flight_msat,
            unclaimed_msat: r.unclaimed_msat,
            revenue_msat: r.revenue_msat,
            problems: r.problems.clone(),
        }
    }
}

/// One account.
#[derive(Debug, Serialize)]
pub struct AccountDto {
    /// `usr_…`.
    pub id: String,
    /// Label.
    pub label: String,
    /// Created, unix seconds.
    pub created_at_secs: i64,
    /// Number of wallets.
    pub wallets: u64,
    /// Sum of its wallets' balances, msat.
    pub balance_msat: i64,
}

impl From<&AccountSummary> for AccountDto {
    fn from(a: &AccountSummary) -> AccountDto {
        AccountDto {
            id: a.id.to_string(),
            label: a.label.clone(),
            created_at_secs: a.created_at_secs,
            wallets: a.wallets,
            balance_msat: a.balance_msat,
        }
    }
}

/// `GET /operator/v1/accounts`.
#[derive(Debug, Serialize)]
pub struct AccountsDto {
    /// Accounts on this page, oldest first.
    pub accounts: Vec<AccountDto>,
    /// All accounts.
    pub total: u64,
}

/// `POST /operator/v1/accounts`: the keys, shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedAccountDto {
    /// `usr_…`.
    pub id: String,
    /// `sak_…`.
    pub secret_key: String,
    /// `pak_…`.
    pub public_key: String,
}

async fn node(State(s): State<Services>) -> OpResult<NodeDto> {
    let n = s.operator.node().await.map_err(api_error)?;
    Ok(Json(NodeDto::from(&n)))
}

async fn channels(State(s): State<Services>) -> OpResult<ChannelsDto> {
    let list = s.operator.channels().await.map_err(api_error)?;
    Ok(Json(ChannelsDto {
        channels: list.iter().map(ChannelDto::from).collect(),
    }))
}

/// `POST /operator/v1/onchain/address`.
#[derive(Debug, Serialize)]
pub struct OnchainAddressDto {
    /// A receive address of the node's wallet, never handed out before.
    pub address: String,
}

/// `GET /operator/v1/onchain/balance`, in sats.
#[derive(Debug, Serialize)]
pub struct OnchainBalanceDto {
    /// Confirmed and spendable.
    pub confirmed_sats: u64,
    /// Not confirmed yet (our change and incoming).
    pub unconfirmed_sats: u64,
    /// Immature coinbase outputs.
    pub immature_sats: u64,
}

/// `POST /operator/v1/onchain/send`.
#[derive(Debug, Serialize)]
pub struct OnchainSentDto {
    /// The transaction, queued for broadcast.
    pub txid: String,
}

async fn onchain_address(State(s): State<Services>) -> OpResult<OnchainAddressDto> {
    let address = s.operator.onchain_address().await.map_err(api_error)?;
    Ok(Json(OnchainAddressDto { address }))
}

async fn onchain_balance(State(s): State<Services>) -> OpResult<OnchainBalanceDto> {
    let b = s.operator.onchain_balance().await.map_err(api_error)?;
    Ok(Json(OnchainBalanceDto {
        confirmed_sats: b.confirmed_sats,
        unconfirmed_sats: b.unconfirmed_sats,
        immature_sats: b.immature_sats,
    }))
}

async fn onchain_send(State(s): State<Services>, p: Params) -> OpResult<OnchainSentDto> {
    let address = p.required_string("address", "address")?;
    let sats = p
        .uint("sats", "sats")?
        .ok_or_else(|| ApiError::bad_request("sats is required."))?;
    let txid = s
        .operator
        .onchain_send(&address, sats)
        .await
        .map_err(api_error)?;
    Ok(Json(OnchainSentDto { txid }))
}

/// Answer of the peer and channel commands: the node accepted the request.
#[derive(Debug, Serialize)]
pub struct AcceptedDto {
    /// Always `true` (a refusal is an error answer).
    pub accepted: bool,
}

async fn connect_peer(State(s): State<Services>, p: Params) -> OpResult<AcceptedDto> {
    let pubkey = p.required_string("pubkey", "pubkey")?;
    let address = p.required_string("address", "address")?;
    s.operator
        .connect_peer(&pubkey, &address)
        .await
        .map_err(api_error)?;
    Ok(Json(AcceptedDto { accepted: true }))
}

async fn open_channel(State(s): State<Services>, p: Params) -> OpResult<AcceptedDto> {
    let pubkey = p.required_string("pubkey", "pubkey")?;
    let sats = p
        .uint("sats", "sats")?
        .ok_or_else(|| ApiError::bad_request("sats is required."))?;
    let push_msat = p.uint("push_msat", "push_msat")?.unwrap_or(0);
    s.operator
        .open_channel(&pubkey, sats, push_msat)
        .await
        .map_err(api_error)?;
    Ok(Json(AcceptedDto { accepted: true }))
}

async fn close_channel(State(s): State<Services>, p: Params) -> OpResult<AcceptedDto> {
    let channel_id = p.required_string("channel_id", "channel_id")?;
    let force = match p.get("force") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("force must be true or false.")),
    };
    s.operator
        .close_channel(&channel_id, force)
        .await
        .map_err(api_error)?;
    Ok(Json(AcceptedDto { accepted: true }))
}

async fn payments(State(s): State<Services>) -> OpResult<PaymentsDto> {
    let list = s.operator.unresolved().await.map_err(api_error)?;
    Ok(Json(PaymentsDto {
        payments: list.iter().map(PaymentDto::from).collect(),
    }))
}

/// Parses a resolution from a form or JSON body (`outcome`, `preimage`, `fee_msat`,
/// `reason`, `operator`).
pub(crate) fn resolve_request(id: &str, p: &Params) -> Result<ResolveRequest, ApiError> {
    let outcome = p.string("outcome", "outcome")?.unwrap_or_default();
    let preimage = p.string("preimage", "preimage")?;
    let fee_msat = p.uint("fee_msat", "fee_msat")?.unwrap_or(0);
    let reason = p.string("reason", "reason")?.unwrap_or_default();
    let operator = p.string("operator", "operator")?.unwrap_or_default();
    ResolveRequest::parse(
        id,
        &outcome,
        preimage.as_deref(),
        fee_msat,
        &operator,
        &reason,
    )
    .map_err(api_error)
}

async fn resolve(State(s): State<Services>, Seg(id): Seg, p: Params) -> OpResult<PaymentDto> {
    let req = resolve_request(&id, &p)?;
    let rec = s.operator.resolve(&req).await.map_err(api_error)?;
    Ok(Json(PaymentDto::from(&rec)))
}

async fn actions(State(s): State<Services>) -> OpResult<ActionsDto> {
    let list = s.operator.actions(ACTIONS_SHOWN).await.map_err(api_error)?;
    Ok(Json(ActionsDto {
        actions: list.iter().map(ActionDto::from).collect(),
    }))
}

async fn audit(State(s): State<Services>) -> OpResult<AuditDto> {
    let r = s.operator.audit().await.map_err(api_error)?;
    Ok(Json(AuditDto::from(&r)))
}

#[derive(Debug, serde::Deserialize)]
struct AccountsQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

async fn accounts(
    State(s): State<Services>,
    q: Result<Query<AccountsQuery>, axum::extract::rejection::QueryRejection>,
) -> OpResult<AccountsDto> {
    let Query(q) = q.map_err(|_| ApiError::bad_request("offset and limit must be integers."))?;
    let limit = q.limit.unwrap_or(100).clamp(1, ACCOUNTS_PAGE_MAX);
    let (list, total) = s
        .operator
        .accounts(q.offset.unwrap_or(0), limit)
        .await
        .map_err(api_error)?;
    Ok(Json(AccountsDto {
        accounts: list.iter().map(AccountDto::from).collect(),
        total,
    }))
}

async fn create_account(State(s): State<Services>, p: Params) -> Result<Response, ApiError> {
    let label = p.required_string("label", "label")?;
    let a = s.operator.create_account(&label).await.map_err(api_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAccountDto {
            id: a.id.to_string(),
            secret_key: a.secret_key.expose().to_owned(),
            public_key: a.public_key.expose().to_owned(),
        }),
    )
        .into_response())
}

/// The operator API and console, behind the address rule; the API also behind the secret.
pub fn router(access: OperatorAccess, services: &Services) -> Router<AppState> {
    let api = Router::new()
        .route("/operator/v1/node", get(node))
        .route("/operator/v1/channels", get(channels))
        .route("/operator/v1/onchain/address", post(onchain_address))
        .route("/operator/v1/onchain/balance", get(onchain_balance))
        .route("/operator/v1/onchain/send", post(onchain_send))
        .route("/operator/v1/peers/connect", post(connect_peer))
        .route("/operator/v1/channels/open", post(open_channel))
        .route("/operator/v1/channels/close", post(close_channel))
        .route("/operator/v1/payments", get(payments))
        .route("/operator/v1/payments/{id}/resolve", post(resolve))
        .route("/operator/v1/actions", get(actions))
        .route("/operator/v1/audit", get(audit))
        .route("/operator/v1/accounts", get(accounts).post(create_account))
        .route_layer(axum::middleware::from_fn_with_state(
            access.clone(),
            secret_gate,
        ));
    let console = crate::ui::operator::Console::new(access.clone(), services);
    api.merge(crate::ui::operator::router())
        .layer(Extension(console))
        .layer(axum::middleware::from_fn_with_state(access, place_gate))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn place_rule() {
        let a = OperatorAccess::new("s3cret\n", false);
        let h = HeaderMap::new();
        let lo: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        let far: SocketAddr = "192.0.2.7:5".parse().unwrap();
        assert!(a.place_allowed(Some(lo), &h));
        assert!(a.place_allowed(Some(lo6), &h));
        assert!(a.place_allowed(Some(mapped), &h));
        assert!(!a.place_allowed(Some(far), &h));
        assert!(!a.place_allowed(None, &h));
        let mut fwd = HeaderMap::new();
        fwd.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert!(!a.place_allowed(Some(lo), &fwd));
        let remote = OperatorAccess::new("s3cret", true);
        assert!(remote.place_allowed(Some(far), &fwd));
        assert!(a.matches("s3cret") && !a.matches("s3cre") && !a.matches(""));
        assert!(!OperatorAccess::new("", false).matches(""));
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn bearer_only() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
