//! Satchel's use cases. The service layer owns transaction boundaries (through the store's
//! one-transaction operations), talks to the Lightning backend through its traits, and never
//! sees HTTP. Every method takes parsed domain values and returns records or a [`ServiceError`]
//! whose `Display` is the exact LNPay message a client should see.

pub mod auth;
mod error;
pub mod events;
pub mod idempotency;
pub mod incoming;
pub mod jobs;
pub mod lnurlp;
pub mod lnurlp_pay;
pub mod lnurlw;
pub mod nodes;
pub mod operator;
pub mod outbox;
pub mod passthru;
pub mod payments;
pub mod records;
pub mod wallets;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use satchel_domain::{Msat, Network, NodeId, NodePubkey, WalletId};
use satchel_lightning::{LightningBackend, NodeInfoData};
use satchel_store::Store;

pub use error::{ErrorClass, ServiceError};
/// The id of the HTTP request being served, as a task-local the store's outbox reads when it
/// writes an event. Re-exported because the API sets it around each request and reads it into
/// error bodies; it lives in the store since that is where events are written.
pub use satchel_store::request_id;

/// Operator settings the services need.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// LNPay node id shown on wallets and lnTx (`lnod_…`).
    pub node_id: NodeId,
    /// How long a withdraw/keysend request waits for the payment's outcome before answering
    /// "pending". The payment itself continues regardless.
    pub payment_wait: Duration,
    /// How long the node may keep trying a payment.
    pub node_pay_timeout: Duration,
    /// Wallet that receives keysends not addressed to a wallet by TLV.
    pub default_keysend_wallet: Option<WalletId>,
    /// Per-invoice receive limit (LNPay: 10,000 sats by default; Satchel: none unless set).
    pub max_receive: Option<Msat>,
    /// Per-request send limit.
    pub max_send: Option<Msat>,
    /// Floor of the default fee limit (a payment without an explicit limit may pay
    /// `max(LNPay's 5% default, this)`); zero keeps LNPay's rule.
    pub min_fee_limit: Msat,
    /// How often the reconciler re-asks the node about unresolved payments.
    pub reconcile_every: Duration,
    /// Let webhooks target loopback/private/link-local addresses (off: SSRF protection).
    pub allow_private_webhook_targets: bool,
    /// Active webhooks an account may have (deleted ones don't count).
    pub webhook_max_per_account: u32,
    /// Redeliveries an account may request per minute (also the burst).
    pub webhook_redeliveries_per_minute: u32,
    /// How long an `Idempotency-Key` is remembered (at least a day).
    pub idempotency_retention: Duration,
    /// Base of every LNURL and callback URL; `None`: the LNURL endpoints answer that LNURL is
    /// not enabled (a URL is never guessed from a request's `Host`).
    pub public_url: Option<lnurlw::PublicUrl>,
    /// Lifetime of a one-time LNURL-withdraw link.
    pub lnurlw_expiry: Duration,
    /// Lightning Address usernames nobody may take (lower case).
    pub reserved_usernames: Vec<String>,
    /// Let LNURL-pay requests reach loopback/private addresses, and speak http to such hosts
    /// (off: SSRF protection; see `lnurlp_pay`).
    pub lnurl_allow_private_targets: bool,
    /// The Lightning backend's name, the `backend` label of the payment metrics (`devnet`,
    /// `scripted`, `lnd`, `cln`).
    pub backend_name: &'static str,
    /// Live event streams (SSE).
    pub events: events::EventsConfig,
    /// How long finished webhook events and deliveries are kept.
    pub event_retention: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            node_id: NodeId::from_db("lnod_satchel".to_owned()),
            payment_wait: Duration::from_secs(30),
            node_pay_timeout: Duration::from_secs(60),
            default_keysend_wallet: None,
            max_receive: None,
            max_send: None,
            min_fee_limit: Msat::ZERO,
            reconcile_every: Duration::from_secs(30),
            allow_private_webhook_targets: false,
            webhook_max_per_account: 20,
            webhook_redeliveries_per_minute: 10,
            idempotency_retention: idempotency::DEFAULT_RETENTION,
            public_url: None,
            lnurlw_expiry: lnurlw::DEFAULT_LINK_EXPIRY,
            reserved_usernames: lnurlp::DEFAULT_RESERVED_USERNAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            lnurl_allow_private_targets: false,
            backend_name: "unknown",
            events: events::EventsConfig::default(),
            event_retention: events::DEFAULT_EVENT_RETENTION,
        }
    }
}

/// Shared context of all services.
pub struct Ctx {
    /// Database.
    pub store: Store,
    /// Node.
    pub ln: Arc<dyn LightningBackend>,
    /// Settings.
    pub cfg: ServiceConfig,
    /// Node facts read once at start.
    pub node: NodeInfoData,
    /// Known API keys (see [`auth::AuthCache`]).
    pub auth_cache: auth::AuthCache,
}

/// Spawns work that a request started (a payment driver, an async job) so that it keeps the
/// request's id (the outbox tags the events it causes) and its tracing span (its log lines carry
/// the id). Spawned tasks inherit neither by themselves.
pub(crate) fn spawn_for_request<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument as _;
    let fut = fut.instrument(tracing::Span::current());
    match satchel_store::request_id::current() {
        Some(id) => tokio::spawn(satchel_store::request_id::scope(id, fut)),
        None => tokio::spawn(fut),
    }
}

/// Counter: payments that reached a final outcome in this process, by `backend` (the node's
/// backend name, or `internal` for payments between wallets of this server) and `outcome`
/// (`succeeded`, `failed`). Metric name.
pub const PAYMENTS_TOTAL: &str = "satchel_payments_total";

/// Counts a payment outcome (see [`PAYMENTS_TOTAL`]).
pub(crate) fn count_payment(backend: &'static str, outcome: &'static str) {
    metrics::counter!(PAYMENTS_TOTAL, "backend" => backend, "outcome" => outcome).increment(1);
}

impl Ctx {
    /// Our network.
    pub fn network(&self) -> Network {
        self.node.network
    }
    /// Our pubkey.
    pub fn pubkey(&self) -> NodePubkey {
        self.node.pubkey
    }
}

/// The services, as the API and workers use them.
#[derive(Clone)]
pub struct Services {
    /// Authentication and wallet-key resolution.
    pub auth: auth::AuthService,
    /// Wallets, invoices, transfers, history.
    pub wallets: wallets::WalletService,
    /// Outgoing payments.
    pub payments: payments::PaymentService,
    /// Asynchronous jobs.
    pub jobs: jobs::JobService,
    /// Incoming payments.
    pub incoming: incoming::IncomingService,
    /// Webhook subscriptions.
    pub webhooks: webhooks::WebhookService,
    /// Idempotency keys of money-moving requests.
    pub idempotency: idempotency::IdempotencyService,
    /// LNURL-withdraw links and their service endpoint.
    pub lnurlw: lnurlw::LnurlwService,
    /// LNURL-pay links, Lightning Addresses and keysend addresses.
    pub lnurlp: lnurlp::LnurlpService,
    /// Paying LNURL-pay links and Lightning Addresses.
    pub lnurlp_pay: lnurlp_pay::LnurlpPayService,
    /// The node endpoints.
    pub nodes: nodes::NodeService,
    /// The operator's use cases (guarded by the operator cookie in the API).
    pub operator: operator::OperatorService,
    /// Live event streams.
    pub events: events::EventService,
    /// The event outbox, for the webhook dispatcher and the live event hub.
    pub outbox: outbox::Outbox,
    /// The shared context.
    pub ctx: Arc<Ctx>,
}

impl Services {
    /// Builds the services; asks the node for its identity once.
    pub async fn new(
        store: Store,
        ln: Arc<dyn LightningBackend>,
        cfg: ServiceConfig,
    ) -> Result<Services, ServiceError> {
        let node = ln
            .node_info()
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let ctx = Arc::new(Ctx {
            store,
            ln,
            cfg,
            node,
            auth_cache: auth::AuthCache::default(),
        });
        let payments = payments::PaymentService::new(ctx.clone());
        let lnurlp = lnurlp::LnurlpService::new(ctx.clone());
        let lnurlp_pay =
            lnurlp_pay::LnurlpPayService::new(ctx.clone(), payments.clone(), lnurlp.clone())?;
        Ok(Services {
            auth: auth::AuthService::new(ctx.clone()),
            wallets: wallets::WalletService::new(ctx.clone(), payments.clone()),
            jobs: jobs::JobService::new(ctx.clone(), payments.clone(), lnurlp_pay.clone()),
            incoming: incoming::IncomingService::new(ctx.clone()),
            webhooks: webhooks::WebhookService::new(ctx.clone()),
            idempotency: idempotency::IdempotencyService::new(ctx.clone()),
            lnurlw: lnurlw::LnurlwService::new(ctx.clone(), payments.clone()),
            lnurlp,
            lnurlp_pay,
            nodes: nodes::NodeService::new(ctx.clone()),
            operator: operator::OperatorService::new(ctx.clone()),
            events: events::EventService::new(ctx.clone()),
            outbox: outbox::Outbox::new(ctx.store.clone()),
            payments,
            ctx,
        })
    }
}
