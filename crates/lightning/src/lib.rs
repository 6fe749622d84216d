//! Lightning backend interface.
//!
//! Satchel talks to a Lightning node only through the small capability traits here. Each method's
//! doc states what the implementor promises and what the caller may assume; every backend (the
//! scripted test backend, the embedded LDK node, LND, Core Lightning) must pass the same
//! conformance scenarios.
//!
//! The one rule that protects money: **an error is not a failure**. `Err(LnError::Transport)` from
//! [`Payments::pay`] means "we do not know": the payment may still complete. Only
//! [`PayOutcome::Failed`] or a [`PaymentLookup::Failed`] from a fresh lookup proves failure.
#![deny(missing_docs)]

pub mod fs_private;
#[cfg(feature = "pinned-tls")]
pub mod pinned_tls;

use std::time::Duration;

use async_trait::async_trait;
use satchel_domain::{
    Bolt11, CustomRecords, FailureReason, Msat, Network, NodePubkey, PaymentHash, Preimage,
};

/// Errors talking to a node. None of them says a payment failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LnError {
    /// The node could not be reached or answered garbage; the effect of the call is unknown.
    #[error("node transport error: {0}")]
    Transport(String),
    /// The node refused the request before doing anything (bad parameters, unknown invoice...).
    #[error("node rejected request: {0}")]
    Rejected(String),
    /// This backend cannot do that.
    #[error("not supported by this backend")]
    NotSupported,
}

/// Static facts about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfoData {
    /// The node's public key (our invoices' payee).
    pub pubkey: NodePubkey,
    /// The chain it runs on.
    pub network: Network,
    /// Human-readable alias.
    pub alias: String,
}

/// What to put in a new invoice. Satchel chooses the preimage so that it can settle internal
/// payments of the invoice without asking the node.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    /// Amount, or `None` for an amountless invoice.
    pub amount: Option<Msat>,
    /// Description (`d`), used when `description_hash` is `None`.
    pub memo: String,
    /// Description hash (`h`); when set it replaces the description in the BOLT11.
    pub description_hash: Option<[u8; 32]>,
    /// Seconds until expiry.
    pub expiry_secs: u32,
    /// The preimage; the invoice's payment hash is its SHA-256.
    pub preimage: Preimage,
}

/// State of an invoice we issued, as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceState {
    /// Not paid yet.
    Open,
    /// Paid; the node holds the money.
    Settled {
        /// What was actually received (may exceed the invoice amount).
        amount_received: Msat,
        /// Unix seconds.
        settled_at_secs: i64,
    },
    /// Cancelled or expired; can no longer be paid.
    Canceled,
}

/// What [`Invoices::take_for_internal`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalTake {
    /// The node will not accept a payment of the invoice any more (it was open and is now
    /// taken, or it was cancelled, expired or unknown): Satchel may settle it internally.
    Taken,
    /// The node already accepted or settled an HTLC for it: it is paid from outside, and
    /// settling it internally too would charge two payers.
    NodePaid,
}

/// How a backend's [`Invoices::take_for_internal`] holds an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeKind {
    /// The take is the node's own cancel: durable and final. Satchel checks everything it can
    /// before taking (a refused internal payment cannot give the invoice back), and needs no
    /// cancel afterwards.
    Final,
    /// The take is a mark in the node's memory, checked whenever an HTLC for the invoice
    /// arrives. It is undone by [`Invoices::release_internal`] if the internal payment is
    /// refused, and made durable by [`Invoices::cancel_invoices`] after it is booked.
    Provisional,
}

/// An outgoing payment.
#[derive(Debug, Clone)]
pub enum PayTarget {
    /// Pay a BOLT11 invoice.
    Bolt11 {
        /// The invoice.
        invoice: Bolt11,
        /// Amount to pay (the invoice amount; Satchel refuses amountless invoices).
        amount: Msat,
    },
    /// Spontaneous payment; the preimage travels in TLV 5482373484.
    Keysend {
        /// Destination node.
        dest: NodePubkey,
        /// Amount delivered to the destination.
        amount: Msat,
        /// Our preimage; payment hash = SHA-256 of it.
        preimage: Preimage,
        /// Extra TLV records (types >= 65536, never 5482373484: the backend adds that one).
        custom_records: CustomRecords,
    },
}

impl PayTarget {
    /// The payment hash that identifies this payment everywhere.
    pub fn payment_hash(&self) -> PaymentHash {
        match self {
            PayTarget::Bolt11 { invoice, .. } => invoice.payment_hash(),
            PayTarget::Keysend { preimage, .. } => preimage.hash(),
        }
    }

    /// Amount delivered to the recipient.
    pub fn amount(&self) -> Msat {
        match self {
            PayTarget::Bolt11 { amount, .. } | PayTarget::Keysend { amount, .. } => *amount,
        }
    }
}

/// Smallest custom TLV type a keysend may carry (lower types are reserved by the BOLTs).
pub const MIN_CUSTOM_RECORD_TYPE: u64 = 65_536;

/// The checks every backend makes on a keysend before sending anything: a positive amount, and
/// no custom record of a reserved type (below 65536, or 5482373484, which the backend itself adds
/// to carry the preimage).
pub fn check_keysend(amount: Msat, custom_records: &CustomRecords) -> Result<(), LnError> {
    if amount.is_zero() {
        return Err(LnError::Rejected("amount must be positive".to_owned()));
    }
    if let Some(t) = custom_records
        .0
        .keys()
        .find(|t| **t < MIN_CUSTOM_RECORD_TYPE || **t == satchel_domain::KEYSEND_PREIMAGE_TLV)
    {
        return Err(LnError::Rejected(format!(
            "custom record type {t} not allowed"
        )));
    }
    Ok(())
}

/// A request to pay.
#[derive(Debug, Clone)]
pub struct PayRequest {
    /// What to pay.
    pub target: PayTarget,
    /// Maximum routing fee. The backend must pass it to the node's pathfinding: a route that
    /// costs more is never used.
    pub fee_limit: Msat,
    /// How long the node may keep trying before it gives up and fails the payment.
    pub timeout: Duration,
}

/// Result of [`Payments::pay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid. `fee` is the routing fee actually paid (never above the limit).
    Succeeded {
        /// Proof of payment.
        preimage: Preimage,
        /// Routing fee paid.
        fee: Msat,
    },
    /// Definitely failed: no HTLC is outstanding and none will be.
    Failed(FailureReason),
    /// Sent, outcome not known yet (HTLCs in flight). Ask again with [`Payments::lookup_payment`].
    InFlight,
}

/// Result of [`Payments::lookup_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentLookup {
    /// The node has no payment with this hash: it was never sent.
    NotFound,
    /// HTLCs are in flight.
    InFlight,
    /// Paid.
    Succeeded {
        /// Proof of payment.
        preimage: Preimage,
        /// Routing fee paid.
        fee: Msat,
    },
    /// Definitely failed.
    Failed(FailureReason),
}

/// Something the node received, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    /// Position in the node's stream; strictly increasing. Callers persist the last one processed
    /// and resume after it.
    pub seq: u64,
    /// What happened.
    pub kind: IncomingKind,
}

/// Kinds of incoming payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingKind {
    /// One of our invoices was paid.
    InvoiceSettled {
        /// Its payment hash.
        payment_hash: PaymentHash,
        /// Amount received.
        amount_received: Msat,
        /// Unix seconds.
        settled_at_secs: i64,
    },
    /// A keysend arrived.
    KeysendReceived {
        /// Payment hash (SHA-256 of the preimage).
        payment_hash: PaymentHash,
        /// The preimage the sender chose.
        preimage: Preimage,
        /// Amount received.
        amount_received: Msat,
        /// The sender's custom records (without 5482373484).
        custom_records: CustomRecords,
        /// Unix seconds.
        settled_at_secs: i64,
    },
}

/// One hop of a route (LND `QueryRoutes` vocabulary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHop {
    /// Short channel id.
    pub chan_id: u64,
    /// Channel capacity in sats (0 if unknown).
    pub chan_capacity_sats: u64,
    /// Amount this hop forwards.
    pub amt_to_forward: Msat,
    /// Fee this hop charges.
    pub fee: Msat,
    /// Absolute CLTV at this hop.
    pub expiry: u32,
    /// Next node.
    pub pub_key: NodePubkey,
}

/// A candidate route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Absolute CLTV of the first hop.
    pub total_time_lock: u32,
    /// Total fees.
    pub total_fees: Msat,
    /// Amount plus fees.
    pub total_amt: Msat,
    /// The hops.
    pub hops: Vec<RouteHop>,
}

/// The node's view of the chain, for the operator (`satchel node info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Height of the best block the node has processed, if it knows one.
    pub block_height: Option<u32>,
    /// Whether the node says it is synced to the chain; `None` when it cannot tell (a node
    /// without a chain source).
    pub synced: Option<bool>,
}

/// Where a channel is in its life, as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Funding not yet confirmed or `channel_ready` not yet exchanged.
    Pending,
    /// Ready, peer connected: payments can use it.
    Active,
    /// Ready, but the peer is disconnected (or the channel is otherwise unusable now).
    Inactive,
    /// A cooperative close is under way.
    Closing,
}

impl ChannelState {
    /// The operator API's name.
    pub fn name(self) -> &'static str {
        match self {
            ChannelState::Pending => "pending",
            ChannelState::Active => "active",
            ChannelState::Inactive => "inactive",
            ChannelState::Closing => "closing",
        }
    }
}

/// One of our channels, for the operator (`satchel node channels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel id (hex), as the node names it.
    pub channel_id: String,
    /// The short channel id, once known.
    pub short_channel_id: Option<u64>,
    /// The peer.
    pub peer: NodePubkey,
    /// Channel size in sats.
    pub capacity_sats: u64,
    /// What we could send over it now, in msat (channel reserve and in-flight HTLCs excluded).
    pub local_balance_msat: u64,
    /// What we could receive over it now, in msat (same exclusions).
    pub remote_balance_msat: u64,
    /// State.
    pub state: ChannelState,
    /// Confirmations of the funding transaction, where the node knows them.
    pub confirmations: Option<u32>,
}

/// Channel and chain figures for the operator's metrics. Each is `None` where the backend
/// cannot tell (the metric is then not exported rather than exported as a made-up 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Channels ready and with the peer connected.
    pub channels_active: Option<u64>,
    /// Other open (or opening) channels.
    pub channels_inactive: Option<u64>,
    /// What we could send over all channels now, msat.
    pub local_balance_msat: Option<u64>,
    /// What we could receive over all channels now, msat.
    pub remote_balance_msat: Option<u64>,
    /// Height of the best block the node knows.
    pub block_height: Option<u64>,
    /// How far the node's view of the chain is behind, in seconds (0: synced).
    pub sync_lag_secs: Option<u64>,
}

/// Node identity.
#[async_trait]
pub trait NodeInfo: Send + Sync {
    /// Our node's pubkey, network and alias. Cheap; may be cached by the implementor.
    async fn node_info(&self) -> Result<NodeInfoData, LnError>;

    /// Block height and sync state. The default knows neither.
    async fn node_status(&self) -> Result<NodeStatus, LnError> {
        Ok(NodeStatus::default())
    }

    /// Our channels. The default: `NotSupported` (the backend cannot list them yet).
    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, LnError> {
        Err(LnError::NotSupported)
    }

    /// Channel and chain figures for metrics, as far as this backend knows them (default:
    /// none). Read every metrics refresh (15 s), so it must be cheap.
    async fn node_stats(&self) -> Result<NodeStats, LnError> {
        Ok(NodeStats::default())
    }
}

/// The node's on-chain wallet balance, in sats, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnchainBalance {
    /// Confirmed and spendable.
    pub confirmed_sats: u64,
    /// Unconfirmed: our own change and what others sent us.
    pub unconfirmed_sats: u64,
    /// Coinbase outputs that have not matured.
    pub immature_sats: u64,
}

/// The operator's control of the node's own funds (`/operator/v1/onchain/*`). Only a node that
/// holds an on-chain wallet can do this: the embedded LDK node implements it; LND, Core
/// Lightning and the scripted backend keep the defaults, which answer
/// [`LnError::NotSupported`] ("not supported by this backend") and do nothing.
#[async_trait]
pub trait NodeAdmin: Send + Sync {
    /// A receive address of the node's wallet that was never handed out before. It is durably
    /// revealed before it is returned, so the wallet watches it across restarts.
    async fn onchain_address(&self) -> Result<String, LnError> {
        Err(LnError::NotSupported)
    }

    /// The wallet's balance as of its last chain sync.
    async fn onchain_balance(&self) -> Result<OnchainBalance, LnError> {
        Err(LnError::NotSupported)
    }

    /// Pays `amount_sats` to `address` from the wallet (fee on top, change back to the wallet)
    /// and hands the transaction to the node's broadcaster; returns its txid (hex). A bad
    /// address (unparsable, other network), a zero or dust amount, or more than the wallet can
    /// pay is `Rejected`, and then nothing was built or sent. `Ok` means the transaction was
    /// signed and queued for broadcast, not that it confirmed.
    async fn onchain_send(&self, address: &str, amount_sats: u64) -> Result<String, LnError> {
        let _ = (address, amount_sats);
        Err(LnError::NotSupported)
    }

    /// Connects to peer `pubkey` at `addr` (`host:port`, an IP address) and returns once the
    /// handshake is done; the node keeps reconnecting to it. `Rejected` when it cannot (bad
    /// address, unreachable, wrong key).
    async fn connect_peer(&self, pubkey: NodePubkey, addr: &str) -> Result<(), LnError> {
        let _ = (pubkey, addr);
        Err(LnError::NotSupported)
    }

    /// Asks a connected peer for a channel of `capacity_sats` funded from the node's wallet,
    /// pushing `push_msat` to it. Returns once the node accepted the request (the channel shows
    /// in `list_channels` as pending); `Rejected` when it refused before doing anything (peer
    /// not connected, wallet too small, bad amounts).
    async fn open_channel(
        &self,
        peer: NodePubkey,
        capacity_sats: u64,
        push_msat: u64,
    ) -> Result<(), LnError> {
        let _ = (peer, capacity_sats, push_msat);
        Err(LnError::NotSupported)
    }

    /// Starts closing channel `channel_id` (as `list_channels` names it): cooperatively, or
    /// with `force` by broadcasting our latest commitment. `Rejected` for an unknown channel or
    /// when the node refused; then nothing changed.
    async fn close_channel(&self, channel_id: &str, force: bool) -> Result<(), LnError> {
        let _ = (channel_id, force);
        Err(LnError::NotSupported)
    }
}

/// Invoices we issue.
#[async_trait]
pub trait Invoices: Send + Sync {
    /// Creates and signs an invoice for `req.preimage.hash()`. Calling it twice with the same
    /// preimage must not create two invoices (return the existing one or `Rejected`).
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError>;

    /// Makes an open invoice unpayable (used after Satchel settled it internally). Cancelling an
    /// unknown, settled or already cancelled invoice is not an error.
    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError>;

    /// [`Invoices::cancel_invoice`] for several hashes; a backend may share one durable write
    /// among them, and may make it durable shortly after returning (the embedded node flushes
    /// within a second). Stops at the first error.
    async fn cancel_invoices(&self, hashes: &[PaymentHash]) -> Result<(), LnError> {
        for hash in hashes {
            self.cancel_invoice(*hash).await?;
        }
        Ok(())
    }

    /// Current state of one of our invoices; `None` if the node does not know the hash.
    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError>;

    /// Takes one of our invoices away from the node before Satchel settles it internally, so
    /// that it is paid once: from `Ok(Taken)` on, the node fails back every HTLC for it. The
    /// check and the take are one step on the node: an HTLC the node accepted or settled before
    /// it makes the answer `Ok(NodePaid)`, and then the invoice must not be settled internally.
    /// `Err` means it is not known whether the invoice was taken; do not settle internally.
    ///
    /// The default cancels and then looks the invoice up; backends whose cancel can race an
    /// incoming HTLC must make the two one step.
    async fn take_for_internal(&self, hash: PaymentHash) -> Result<InternalTake, LnError> {
        if let Some(InvoiceState::Settled { .. }) = self.lookup_invoice(hash).await? {
            return Ok(InternalTake::NodePaid);
        }
        self.cancel_invoice(hash).await?;
        Ok(match self.lookup_invoice(hash).await? {
            Some(InvoiceState::Settled { .. }) => InternalTake::NodePaid,
            _ => InternalTake::Taken,
        })
    }

    /// Gives back an invoice taken by [`Invoices::take_for_internal`] whose internal payment
    /// was refused (only [`TakeKind::Provisional`] takes can be given back; a cancelled invoice
    /// stays cancelled).
    async fn release_internal(&self, hash: PaymentHash) {
        let _ = hash;
    }

    /// How [`Invoices::take_for_internal`] holds an invoice on this backend.
    fn take_kind(&self) -> TakeKind {
        TakeKind::Final
    }
}

/// Outgoing payments.
#[async_trait]
pub trait Payments: Send + Sync {
    /// Pays. **Idempotent per payment hash**: if a payment with this hash is already in flight or
    /// done, the implementor must not send a second one; it reports that payment's state instead.
    /// Implementors return `InFlight` rather than blocking for longer than `req.timeout` plus a
    /// small margin. `Err(Transport)` means the outcome is unknown.
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError>;

    /// The node's current view of a payment. Must come from the node (no cached stale failure
    /// from an earlier attempt while a newer attempt is in flight).
    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError>;
}

/// The replayable stream of money received by the node.
#[async_trait]
pub trait InvoiceEvents: Send + Sync {
    /// Events with `seq > after`, oldest first, at most `limit`. Waits up to `wait` when there are
    /// none yet, then returns an empty list. Replaying from an older cursor returns the same
    /// events again: consumers must be idempotent.
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError>;
}

/// Route queries (LNPay's `queryroutes`).
#[async_trait]
pub trait Routes: Send + Sync {
    /// Routes that could deliver `amount` to `dest`; empty if none.
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError>;
}

/// Satchel's say over what the node accepts, asked *before* the node claims an incoming payment
/// (a node that claims first and asks later would hold money no wallet can be credited with).
#[async_trait]
pub trait IncomingPolicy: Send + Sync {
    /// Whether a keysend carrying `records` has a wallet to land in (a routing TLV naming one of
    /// our wallets, or a configured default keysend wallet). `false` makes the node reject it.
    async fn accept_keysend(&self, records: &CustomRecords) -> bool;
}

/// A peer of the development network, as `satchel devnet info` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnetPeer {
    /// Name (`alice`, `hub`, `carol`).
    pub name: String,
    /// Its pubkey.
    pub pubkey: NodePubkey,
    /// What it can send over its channels, in msat (0 if unknown).
    pub outbound_msat: u64,
    /// What it can receive, in msat (0 if unknown).
    pub inbound_msat: u64,
}

/// The best block of a development network's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnetChainTip {
    /// Height.
    pub height: u32,
    /// Block hash (hex, as bitcoind shows it).
    pub hash: String,
}

/// The development network's outside world: nodes other than ours that tests and the
/// `satchel devnet` commands use to pay us, be paid by us and keysend to us; and, for a devnet
/// with a chain, the chain's controls (the defaults answer that there is no chain).
#[async_trait]
pub trait DevnetControl: Send + Sync {
    /// Backend name (`scripted`, `ldk-devnet`).
    fn kind(&self) -> &'static str;

    /// Our node's pubkey and the peers.
    async fn peers(&self) -> Result<Vec<DevnetPeer>, LnError>;

    /// An invoice issued by peer `node`.
    async fn outside_invoice(
        &self,
        node: &str,
        amount: Option<Msat>,
        memo: &str,
    ) -> Result<Bolt11, LnError>;

    /// Peer `node` pays `invoice` (one of ours). Returns when the payment is final.
    async fn outside_pay(
        &self,
        node: &str,
        invoice: &Bolt11,
        amount: Option<Msat>,
    ) -> Result<PayOutcome, LnError>;

    /// Peer `node` keysends `amount` to `dest` with `records`. Returns when the payment is final.
    async fn outside_keysend(
        &self,
        node: &str,
        dest: NodePubkey,
        amount: Msat,
        records: CustomRecords,
    ) -> Result<(PaymentHash, PayOutcome), LnError>;

    /// The chain's best block; `None` for a devnet without a chain.
    async fn chain_tip(&self) -> Result<Option<DevnetChainTip>, LnError> {
        Ok(None)
    }

    /// Mines `blocks` blocks; returns their hashes.
    async fn mine(&self, _blocks: u32) -> Result<Vec<String>, LnError> {
        Err(LnError::NotSupported)
    }

    /// Replaces the last `blocks` blocks with `blocks + 1` new ones; returns the new hashes.
    async fn reorg(&self, _blocks: u32) -> Result<Vec<String>, LnError> {
        Err(LnError::NotSupported)
    }

    /// Pays `sats` on chain to `address` from the devnet's faucet; returns the txid.
    async fn fund(&self, _address: &str, _sats: u64) -> Result<String, LnError> {
        Err(LnError::NotSupported)
    }
}

/// Everything Satchel needs from a node.
pub trait LightningBackend:
    NodeInfo + NodeAdmin + Invoices + Payments + InvoiceEvents + Routes
{
}

impl<T: NodeInfo + NodeAdmin + Invoices + Payments + InvoiceEvents + Routes> LightningBackend
    for T
{
}
