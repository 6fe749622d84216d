//! [`ClnBackend`]: Satchel's backend traits on Core Lightning's JSON-RPC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::{OnceCell, OwnedMutexGuard, watch};
use tokio::time::Instant;

use satchel_domain::{
    Bolt11, CustomRecords, FailureReason, Msat, Network, NodePubkey, PaymentHash, Preimage,
    now_secs,
};
use satchel_lightning::{
    ChannelInfo, ChannelState, IncomingEvent, IncomingKind, InternalTake, InvoiceEvents,
    InvoiceState, Invoices, LnError, NewInvoice, NodeInfo, NodeInfoData, NodeStats, NodeStatus,
    PayOutcome, PayRequest, PayTarget, PaymentLookup, Payments, Route, RouteHop, Routes,
};

use crate::onion::{forward_payload, keysend_payload, parse_scid};
use crate::rpc::{self, ClnMsat, CreateOnion, GetInfo, GetRoute, GetRoutes, Invoice};
use crate::rpc::{InvoiceCreated, ListDatastore, ListInvoices, ListPeerChannels, ListSendPays};
use crate::rpc::{PayResult, PeerChannel, RouteEntry, SendPay, XpayResult};
use crate::transport::{ClnTransport, RestTransport, RpcError, SocketTransport};
use crate::version::ClnVersion;
use crate::{ClnConfig, ClnConnection, ClnError};

/// Final CLTV delta of our keysends (what LND uses; above LDK's and CLN's minimums).
pub const KEYSEND_FINAL_CLTV: u32 = 40;
/// How many routes a keysend tries before giving up.
const MAX_KEYSEND_ATTEMPTS: usize = 10;
/// `pay` may answer a little after `retry_for` (it waits for parts in flight).
const PAY_MARGIN: Duration = Duration::from_secs(5);
/// How long our connection waits for a `pay` beyond `retry_for` before dropping it (the
/// command carries on in `lightningd`; lookups then report it).
const PAY_RPC_GRACE: Duration = Duration::from_secs(600);
/// How long the release `getinfo` reported is trusted before it is asked again (an operator may
/// upgrade CLN under a running Satchel; a command the node does not know also drops it).
const VERSION_TTL: Duration = Duration::from_secs(60);
/// What an unreadable `getinfo` version (a custom build string) is taken for: the newest
/// release known, whose commands (`xpay`, `getroutes`) exist on every release from v24.11.
const ASSUMED_VERSION: ClnVersion = ClnVersion::REMOVES_PAY;
/// The final CLTV delta `queryroutes` asks `getroutes` for (`getroute`'s default).
const QUERY_FINAL_CLTV: u32 = 9;
/// The fee `queryroutes` lets a route cost at most: the amount itself, or this much when
/// that is more (LND's `queryroutes` has no limit; a route dearer than this is not worth
/// showing).
const QUERY_MIN_MAXFEE_MSAT: u64 = 1_000_000;
/// How many unsent failures are remembered (the map is cleared when it grows past this).
const MAX_UNSENT_FAILURES: usize = 100_000;
/// `datastore` key under which cancelled invoices are remembered: `[.., <payment hash hex>]`.
pub const CANCELLED_DATASTORE_KEY: [&str; 2] = ["satchel", "cancelled-invoices"];
/// Label prefix of our invoices.
pub const INVOICE_LABEL_PREFIX: &str = "satchel-";
/// Label prefix of the invoices CLN's keysend plugin creates for received keysends.
pub const KEYSEND_LABEL_PREFIX: &str = "keysend-";
/// The TLV type of a keysend chat message (WhatSat / Sphinx); CLN's keysend plugin puts it in
/// the description as `keysend: <message>`.
pub const KEYSEND_MESSAGE_TLV: u64 = 34_349_334;

/// The label of Satchel's invoice for `hash`.
pub fn invoice_label(hash: &PaymentHash) -> String {
    format!("{INVOICE_LABEL_PREFIX}{}", hash.to_hex())
}

type RpcOutcome = Result<Value, RpcError>;
type Running =
    Arc<Mutex<HashMap<PaymentHash, (&'static str, watch::Receiver<Option<RpcOutcome>>)>>>;

/// Satchel's Lightning backend on a Core Lightning node. See the crate documentation.
pub struct ClnBackend {
    rpc: Arc<dyn ClnTransport>,
    network: Network,
    request_timeout: Duration,
    info: OnceCell<NodeInfoData>,
    /// The node's release and when `getinfo` said so (see [`VERSION_TTL`]).
    version: Mutex<Option<(ClnVersion, Instant)>>,
    /// Serialises `pay` calls per payment hash within this process.
    hash_locks: Mutex<HashMap<PaymentHash, Arc<tokio::sync::Mutex<()>>>>,
    /// `pay` commands of ours still running in `lightningd`, by payment hash.
    running: Running,
    /// Definite failures we reported for payments of which `lightningd` keeps no trace
    /// (refused before any HTLC left: no route within the fee limit, amount too large). Only
    /// consulted when `listsendpays` knows nothing of the hash.
    unsent_failures: Mutex<HashMap<PaymentHash, FailureReason>>,
}

impl std::fmt::Debug for ClnBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClnBackend")
            .field("rpc", &self.rpc)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An [`RpcError`] of a call that does not move money.
fn ln_error(e: RpcError) -> LnError {
    match e {
        RpcError::Transport(m) => LnError::Transport(m),
        RpcError::Rpc { code, message, .. } => {
            LnError::Rejected(format!("{message} (CLN error {code})"))
        }
        RpcError::Unauthorized(m) => LnError::Rejected(format!("CLNRest refused the rune: {m}")),
    }
}

fn parse<T: DeserializeOwned>(method: &str, v: Value) -> Result<T, LnError> {
    serde_json::from_value(v)
        .map_err(|e| LnError::Transport(format!("{method}: unexpected result: {e}")))
}

fn msat(m: ClnMsat) -> Result<Msat, LnError> {
    Msat::from_msat(m.0).map_err(|e| LnError::Transport(format!("amount {}: {e}", m.0)))
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn preimage_for(hash: PaymentHash, hex_str: Option<&str>) -> Result<Preimage, LnError> {
    let p = hex_str.and_then(Preimage::from_hex).ok_or_else(|| {
        LnError::Transport("payment complete without a valid preimage".to_owned())
    })?;
    if p.hash() != hash {
        return Err(LnError::Transport(
            "CLN reported a preimage that does not match the payment hash".to_owned(),
        ));
    }
    Ok(p)
}

/// What `listsendpays` says about a payment hash.
enum Summary {
    NotFound,
    InFlight,
    Succeeded { preimage: Preimage, fee: Msat },
    Failed(SendPay),
}

fn summarize(hash: PaymentHash, parts: &[SendPay]) -> Result<Summary, LnError> {
    if let Some(done) = parts.iter().find(|p| p.status == "complete") {
        let group: Vec<&SendPay> = parts.iter().filter(|p| p.groupid == done.groupid).collect();
        if group.iter().any(|p| p.status == "pending") {
            // Paid, but some parts still settling: the fee is not final yet.
            return Ok(Summary::InFlight);
        }
        let preimage = preimage_for(hash, done.payment_preimage.as_deref())?;
        let (mut sent, mut delivered) = (0u64, 0u64);
        for p in group.iter().filter(|p| p.status == "complete") {
            let s = p.amount_sent_msat.map_or(0, |m| m.0);
            sent = sent.saturating_add(s);
            delivered = delivered.saturating_add(p.amount_msat.map_or(s, |m| m.0));
        }
        return Ok(Summary::Succeeded {
            preimage,
            fee: msat(ClnMsat(sent.saturating_sub(delivered)))?,
        });
    }
    if parts.iter().any(|p| p.status == "pending") {
        return Ok(Summary::InFlight);
    }
    Ok(parts
        .iter()
        .filter(|p| p.status == "failed")
        .max_by_key(|p| p.id)
        .cloned()
        .map_or(Summary::NotFound, Summary::Failed))
}

fn pay_outcome(l: PaymentLookup) -> PayOutcome {
    match l {
        PaymentLookup::Succeeded { preimage, fee } => PayOutcome::Succeeded { preimage, fee },
        PaymentLookup::Failed(r) => PayOutcome::Failed(r),
        PaymentLookup::InFlight | PaymentLookup::NotFound => PayOutcome::InFlight,
    }
}

/// Records carried by a received keysend, as far as CLN exposes them: the keysend plugin turns
/// a chat message (TLV 34349334) into the description `keysend: <message>`; other TLVs are not
/// exposed by `listinvoices`/`waitanyinvoice`.
fn keysend_records(description: Option<&str>) -> CustomRecords {
    let mut records = CustomRecords::default();
    if let Some(msg) = description.and_then(|d| d.strip_prefix("keysend: ")) {
        records
            .0
            .insert(KEYSEND_MESSAGE_TLV, msg.as_bytes().to_vec());
    }
    records
}

/// A paid invoice from `waitanyinvoice` as an event.
fn incoming_event(inv: &Invoice) -> Result<IncomingEvent, LnError> {
    let seq = inv.pay_index.ok_or_else(|| {
        LnError::Transport("waitanyinvoice: paid invoice without pay_index".into())
    })?;
    let payment_hash = PaymentHash::from_hex(&inv.payment_hash)
        .ok_or_else(|| LnError::Transport(format!("bad payment_hash {}", inv.payment_hash)))?;
    let amount_received = msat(inv.amount_received_msat.unwrap_or(ClnMsat(0)))?;
    let settled_at_secs = inv.paid_at.unwrap_or_else(now_secs);
    let keysend_preimage = inv
        .label
        .starts_with(KEYSEND_LABEL_PREFIX)
        .then(|| inv.payment_preimage.as_deref().and_then(Preimage::from_hex))
        .flatten()
        .filter(|p| p.hash() == payment_hash);
    let kind = match keysend_preimage {
        Some(preimage) => IncomingKind::KeysendReceived {
            payment_hash,
            preimage,
            amount_received,
            custom_records: keysend_records(inv.description.as_deref()),
            settled_at_secs,
        },
        None => IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            settled_at_secs,
        },
    };
    Ok(IncomingEvent { seq, kind })
}

fn invoice_state(inv: &Invoice) -> Result<InvoiceState, LnError> {
    Ok(match inv.status.as_str() {
        "paid" => InvoiceState::Settled {
            amount_received: msat(inv.amount_received_msat.unwrap_or(ClnMsat(0)))?,
            settled_at_secs: inv.paid_at.unwrap_or(0),
        },
        "expired" => InvoiceState::Canceled,
        _ if inv.expires_at.is_some_and(|t| t <= now_secs()) => InvoiceState::Canceled,
        _ => InvoiceState::Open,
    })
}

/// Holds the per-hash lock; removes the map entry when nobody else wants it.
struct HashGuard<'a> {
    map: &'a Mutex<HashMap<PaymentHash, Arc<tokio::sync::Mutex<()>>>>,
    hash: PaymentHash,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for HashGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = lock(self.map);
        if map
            .get(&self.hash)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.hash);
        }
    }
}

impl ClnBackend {
    /// A backend on `config`'s connection. Does no I/O; see [`ClnBackend::connect`].
    pub fn new(config: &ClnConfig) -> Result<ClnBackend, ClnError> {
        let rpc: Arc<dyn ClnTransport> = match &config.connection {
            ClnConnection::Socket { path } => Arc::new(SocketTransport::new(path.clone())),
            ClnConnection::Rest {
                url,
                rune,
                tls_cert_pem,
            } => Arc::new(RestTransport::new(url, rune, tls_cert_pem)?),
        };
        Ok(ClnBackend::with_transport(
            rpc,
            config.network,
            config.request_timeout,
        ))
    }

    /// A backend on `config`'s connection, checked: calls `getinfo` and refuses a node on
    /// another network than `config.network`. The node info is cached.
    pub async fn connect(config: &ClnConfig) -> Result<ClnBackend, ClnError> {
        let backend = ClnBackend::new(config)?;
        let gi = backend.getinfo().await?;
        let version = backend.version_of(&gi);
        if version < ClnVersion::MIN_SUPPORTED {
            return Err(ClnError::TooOld { found: version });
        }
        if gi.network.parse::<Network>().ok() != Some(config.network) {
            return Err(ClnError::WrongNetwork {
                configured: config.network,
                node: gi.network,
            });
        }
        backend.node_info().await?;
        Ok(backend)
    }

    /// A backend over any transport (tests, custom transports).
    pub fn with_transport(
        rpc: Arc<dyn ClnTransport>,
        network: Network,
        request_timeout: Duration,
    ) -> ClnBackend {
        ClnBackend {
            rpc,
            network,
            request_timeout,
            info: OnceCell::new(),
            version: Mutex::new(None),
            hash_locks: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            unsent_failures: Mutex::new(HashMap::new()),
        }
    }

    /// The transport, for raw calls.
    pub fn transport(&self) -> &Arc<dyn ClnTransport> {
        &self.rpc
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, LnError> {
        self.rpc
            .call(method, params, self.request_timeout)
            .await
            .map_err(ln_error)
    }

    async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, LnError> {
        parse(method, self.call(method, params).await?)
    }

    /// `getinfo`, noting the node's release.
    async fn getinfo(&self) -> Result<GetInfo, LnError> {
        let gi: GetInfo = self.call_as("getinfo", json!({})).await?;
        self.version_of(&gi);
        Ok(gi)
    }

    /// The release in `gi` (remembered for [`VERSION_TTL`]).
    fn version_of(&self, gi: &GetInfo) -> ClnVersion {
        let version = match gi.version.as_deref().map(|s| (s, ClnVersion::parse(s))) {
            Some((_, Some(v))) => v,
            other => {
                tracing::warn!(
                    version = other.map(|(s, _)| s),
                    assumed = %ASSUMED_VERSION,
                    "cannot read Core Lightning's release from getinfo; assuming the newest"
                );
                ASSUMED_VERSION
            }
        };
        *lock(&self.version) = Some((version, Instant::now()));
        version
    }

    /// The node's release: which payment and routing commands it has.
    async fn version(&self) -> Result<ClnVersion, LnError> {
        let cached = *lock(&self.version);
        match cached {
            Some((v, at)) if at.elapsed() < VERSION_TTL => Ok(v),
            _ => Ok(self.version_of(&self.getinfo().await?)),
        }
    }

    /// Drops the remembered release (the node did not know a command it should have).
    fn forget_version(&self) {
        *lock(&self.version) = None;
    }

    async fn blockheight(&self) -> Result<u32, LnError> {
        Ok(self.getinfo().await?.blockheight)
    }

    async fn find_invoice(&self, hash: PaymentHash) -> Result<Option<Invoice>, LnError> {
        let list: ListInvoices = self
            .call_as("listinvoices", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        Ok(list.invoices.into_iter().next())
    }

    async fn hash_lock(&self, hash: PaymentHash, deadline: Instant) -> Option<HashGuard<'_>> {
        let m = Arc::clone(lock(&self.hash_locks).entry(hash).or_default());
        let guard = tokio::time::timeout_at(deadline, m.lock_owned()).await.ok();
        let held = HashGuard {
            map: &self.hash_locks,
            hash,
            guard,
        };
        held.guard.is_some().then_some(held)
    }

    fn validate(&self, target: &PayTarget) -> Result<(), LnError> {
        match target {
            PayTarget::Bolt11 { invoice, amount } => {
                if invoice.network() != self.network {
                    return Err(LnError::Rejected(format!(
                        "invoice is for {}, this node runs on {}",
                        invoice.network().name(),
                        self.network.name()
                    )));
                }
                if amount.is_zero() {
                    return Err(LnError::Rejected("amount must be positive".to_owned()));
                }
                if invoice.amount().is_some_and(|a| a != *amount) {
                    return Err(LnError::Rejected(
                        "Core Lightning pays exactly the invoice amount".to_owned(),
                    ));
                }
            }
            PayTarget::Keysend {
                amount,
                custom_records,
                ..
            } => {
                satchel_lightning::check_keysend(*amount, custom_records)?;
            }
        }
        Ok(())
    }

    /// Starts `method` in the background; its outcome arrives on the receiver. The command
    /// keeps running if our caller stops waiting.
    fn spawn_rpc(
        &self,
        hash: PaymentHash,
        method: &'static str,
        params: Value,
        timeout: Duration,
    ) -> watch::Receiver<Option<RpcOutcome>> {
        let (tx, rx) = watch::channel(None);
        lock(&self.running).insert(hash, (method, rx.clone()));
        let rpc = Arc::clone(&self.rpc);
        let running = Arc::clone(&self.running);
        tokio::spawn(async move {
            let outcome = rpc.call(method, params, timeout).await;
            lock(&running).remove(&hash);
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    /// Waits for a background `pay`/`xpay` (`method`) until `deadline`, then interprets it.
    /// `None`: the node does not know `method` (nothing was sent).
    async fn await_pay(
        &self,
        hash: PaymentHash,
        amount: Msat,
        method: &str,
        mut rx: watch::Receiver<Option<RpcOutcome>>,
        deadline: Instant,
    ) -> Result<Option<PayOutcome>, LnError> {
        let outcome = loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                break o;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Ok(Some(PayOutcome::InFlight)),
                Ok(Err(_)) => {
                    // The task ended without a word (runtime shutting down).
                    return Ok(Some(pay_outcome(self.lookup_payment(hash).await?)));
                }
                Ok(Ok(())) => {}
            }
        };
        match outcome {
            Ok(v) if method == "xpay" => {
                // xpay answers only once the payment succeeded.
                let r: XpayResult = parse("xpay", v)?;
                Ok(Some(PayOutcome::Succeeded {
                    preimage: preimage_for(hash, Some(&r.payment_preimage))?,
                    fee: msat(ClnMsat(
                        r.amount_sent_msat.0.saturating_sub(r.amount_msat.0),
                    ))?,
                }))
            }
            Ok(v) => {
                let r: PayResult = parse("pay", v)?;
                if r.status == "complete" {
                    Ok(Some(PayOutcome::Succeeded {
                        preimage: preimage_for(hash, r.payment_preimage.as_deref())?,
                        fee: msat(ClnMsat(
                            r.amount_sent_msat.0.saturating_sub(r.amount_msat.0),
                        ))?,
                    }))
                } else {
                    Ok(Some(pay_outcome(self.lookup_payment(hash).await?)))
                }
            }
            Err(RpcError::Rpc { code, .. }) if code == rpc::JSONRPC2_METHOD_NOT_FOUND => {
                tracing::warn!(method, "Core Lightning does not know this payment command");
                self.forget_version();
                Ok(None)
            }
            Err(RpcError::Rpc { code, message, .. }) => self
                .classify_failure(hash, amount, method, code, &message)
                .await
                .map(Some),
            Err(e) => Err(ln_error(e)),
        }
    }

    /// A payment command (`method`) failed with `code`: what became of the payment,
    /// according to a fresh `listsendpays`.
    async fn classify_failure(
        &self,
        hash: PaymentHash,
        amount: Msat,
        method: &str,
        code: i64,
        message: &str,
    ) -> Result<PayOutcome, LnError> {
        tracing::info!(payment_hash = %hash, method, code, message, "CLN payment command failed");
        let sent = match self.lookup_payment(hash).await? {
            PaymentLookup::Succeeded { preimage, fee } => {
                return Ok(PayOutcome::Succeeded { preimage, fee });
            }
            PaymentLookup::InFlight => return Ok(PayOutcome::InFlight),
            PaymentLookup::Failed(_) => true,
            PaymentLookup::NotFound => false,
        };
        let reason = match code {
            rpc::PAY_IN_PROGRESS => return Ok(PayOutcome::InFlight),
            // Paid already, yet `listsendpays` shows no success of ours: nothing was sent.
            rpc::PAY_RHASH_ALREADY_USED | rpc::PAY_INVOICE_ALREADY_PAID => {
                return Err(LnError::Rejected(format!("{message} (CLN error {code})")));
            }
            rpc::PAY_DESTINATION_PERM_FAIL | rpc::PAY_INVOICE_EXPIRED => {
                FailureReason::IncorrectPaymentDetails
            }
            rpc::PAY_TRY_OTHER_ROUTE
            | rpc::PAY_ROUTE_NOT_FOUND
            | rpc::PAY_ROUTE_TOO_EXPENSIVE
            | rpc::PAY_DESTINATION_CAPACITY => self.no_route_reason(amount).await,
            rpc::PAY_INSUFFICIENT_FUNDS => FailureReason::InsufficientBalance,
            // xpay ends every failure after an attempt with 209: "Timed out after after N
            // attempts" when `retry_for` ran out, "Failed after N attempts. … Then routing
            // failed" when no route is left.
            rpc::PAY_UNSPECIFIED_ERROR if method == "xpay" => {
                if message.starts_with("Timed out") {
                    FailureReason::Timeout
                } else if message.starts_with("Failed after") {
                    self.no_route_reason(amount).await
                } else {
                    FailureReason::Error
                }
            }
            rpc::PAY_STOPPED_RETRYING => {
                let m = message.to_ascii_lowercase();
                if ["timed out", "timeout", "deadline", "retry_for"]
                    .iter()
                    .any(|w| m.contains(w))
                {
                    FailureReason::Timeout
                } else {
                    self.no_route_reason(amount).await
                }
            }
            rpc::PAY_UNSPECIFIED_ERROR | rpc::PAY_UNPARSEABLE_ONION => FailureReason::Error,
            // Bad parameters and the like: nothing was sent.
            _ if !sent => return Err(LnError::Rejected(format!("{message} (CLN error {code})"))),
            _ => FailureReason::Error,
        };
        Ok(PayOutcome::Failed(reason))
    }

    /// LND says INSUFFICIENT_BALANCE when the amount exceeds what our channels can send at
    /// all; any other route failure is NO_ROUTE.
    async fn no_route_reason(&self, amount: Msat) -> FailureReason {
        match self
            .call_as::<ListPeerChannels>("listpeerchannels", json!({}))
            .await
        {
            Ok(list) => {
                let spendable = list
                    .channels
                    .iter()
                    .filter(|c| c.state == "CHANNELD_NORMAL" && c.peer_connected != Some(false))
                    .map(|c| c.spendable_msat.map_or(0, |m| m.0))
                    .fold(0u64, u64::saturating_add);
                if amount.as_msat() > spendable {
                    FailureReason::InsufficientBalance
                } else {
                    FailureReason::NoRoute
                }
            }
            Err(_) => FailureReason::NoRoute,
        }
    }

    /// Why a failed part failed: `waitsendpay` on a finished part returns its stored error.
    async fn failure_reason(
        &self,
        hash: PaymentHash,
        part: &SendPay,
    ) -> Result<FailureReason, LnError> {
        let mut params = json!({ "payment_hash": hash.to_hex(), "timeout": 0 });
        if let Some(p) = part.partid {
            params["partid"] = json!(p);
        }
        if let Some(g) = part.groupid {
            params["groupid"] = json!(g);
        }
        Ok(
            match self
                .rpc
                .call("waitsendpay", params, self.request_timeout)
                .await
            {
                Err(RpcError::Rpc { code, .. }) => match code {
                    rpc::PAY_DESTINATION_PERM_FAIL | rpc::PAY_INVOICE_EXPIRED => {
                        FailureReason::IncorrectPaymentDetails
                    }
                    rpc::PAY_TRY_OTHER_ROUTE
                    | rpc::PAY_ROUTE_NOT_FOUND
                    | rpc::PAY_ROUTE_TOO_EXPENSIVE => FailureReason::NoRoute,
                    rpc::PAY_STOPPED_RETRYING => FailureReason::Timeout,
                    _ => FailureReason::Error,
                },
                Err(RpcError::Transport(m)) => return Err(LnError::Transport(m)),
                _ => FailureReason::Error,
            },
        )
    }

    /// Polls until the payment leaves the in-flight state or `deadline` passes.
    async fn wait_settled(&self, hash: PaymentHash, deadline: Instant) -> PayOutcome {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.lookup_payment(hash).await {
                Ok(PaymentLookup::InFlight | PaymentLookup::NotFound) | Err(_) => {}
                Ok(done) => return pay_outcome(done),
            }
            let now = Instant::now();
            if now >= deadline {
                return PayOutcome::InFlight;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn pay_bolt11(
        &self,
        hash: PaymentHash,
        invoice: &Bolt11,
        amount: Msat,
        req: &PayRequest,
        deadline: Instant,
    ) -> Result<PayOutcome, LnError> {
        // Asked again once if the node does not know the command (upgraded meanwhile).
        for _ in 0..2 {
            // xpay where it exists (v24.11+): `pay` is deprecated from v26.06 and gone in
            // v27.03. Both take `maxfee` in msat and `retry_for` in seconds.
            let (method, invoice_param) = if self.version().await?.has_xpay() {
                ("xpay", "invstring")
            } else {
                ("pay", "bolt11")
            };
            let mut params = json!({
                invoice_param: invoice.as_str(),
                "maxfee": req.fee_limit.as_msat(),
                "retry_for": ceil_secs(req.timeout).max(1),
            });
            if invoice.amount().is_none() {
                params["amount_msat"] = json!(amount.as_msat());
            }
            let rx = self.spawn_rpc(hash, method, params, req.timeout + PAY_RPC_GRACE);
            if let Some(outcome) = self.await_pay(hash, amount, method, rx, deadline).await? {
                return Ok(outcome);
            }
        }
        Err(LnError::Rejected(
            "Core Lightning knows neither xpay nor pay".to_owned(),
        ))
    }

    fn succeeded(hash: PaymentHash, part: &SendPay, amount: Msat) -> Result<PayOutcome, LnError> {
        let sent = part.amount_sent_msat.map_or(amount.as_msat(), |m| m.0);
        let delivered = part.amount_msat.map_or(amount.as_msat(), |m| m.0);
        Ok(PayOutcome::Succeeded {
            preimage: preimage_for(hash, part.payment_preimage.as_deref())?,
            fee: msat(ClnMsat(sent.saturating_sub(delivered)))?,
        })
    }

    /// Keysend with *our* preimage: a route (`getroutes`, or `getroute` before v24.11), then
    /// `createonion` with the keysend TLVs in the final hop's payload, `sendonion` under our
    /// payment hash and `waitsendpay`. (CLN's own `keysend`/`xkeysend` draw a random preimage,
    /// which would break Satchel's idempotency per payment hash.) One path per attempt; a
    /// failing channel (or node) is excluded and the next route tried until `req.timeout`:
    /// `getroute` takes the exclusions as a parameter, `getroutes` through an askrene layer of
    /// this payment's own, removed again at the end.
    async fn pay_keysend(
        &self,
        req: &PayRequest,
        deadline: Instant,
    ) -> Result<PayOutcome, LnError> {
        let mut layer = None;
        let outcome = self.keysend_attempts(req, deadline, &mut layer).await;
        if let Some(name) = layer
            && let Err(e) = self
                .call("askrene-remove-layer", json!({ "layer": name }))
                .await
        {
            // A leftover layer only holds this payment's exclusions; CLN forgets
            // non-persistent layers when it restarts.
            tracing::warn!(layer = name, error = %e, "could not remove a keysend's askrene layer");
        }
        outcome
    }

    /// A route for `amount` to `dest_hex` that avoids `exclude` (`getroute`) or what `layer`
    /// disables (`getroutes`), with a final CLTV delta of `final_cltv` and a fee of at most
    /// `max_fee` (`getroutes` only; the keysend checks the fee of either itself).
    async fn find_route(
        &self,
        dest_hex: &str,
        amount: Msat,
        max_fee: Msat,
        final_cltv: u32,
        exclude: &[String],
        layer: Option<&str>,
    ) -> Result<RouteAnswer, LnError> {
        let version = self.version().await?;
        let (method, params) = if version.routes_with_getroutes() {
            // askrene: our own channels as they are now, free to use, one path only.
            let mut layers = vec!["auto.localchans", "auto.sourcefree"];
            let mut params = json!({
                "source": self.node_info().await?.pubkey.to_hex(),
                "destination": dest_hex,
                "amount_msat": amount.as_msat(),
                "maxfee_msat": max_fee.as_msat(),
                "final_cltv": final_cltv,
            });
            if version >= ClnVersion::MAXPARTS {
                params["maxparts"] = json!(1);
            } else {
                layers.push("auto.no_mpp_support");
            }
            layers.extend(layer);
            params["layers"] = json!(layers);
            ("getroutes", params)
        } else {
            (
                "getroute",
                json!({
                    "id": dest_hex,
                    "amount_msat": amount.as_msat(),
                    "riskfactor": 1,
                    "cltv": final_cltv,
                    "fuzzpercent": 0,
                    "exclude": exclude,
                }),
            )
        };
        match self.rpc.call(method, params, self.request_timeout).await {
            Ok(v) if method == "getroutes" => {
                Ok(RouteAnswer::Found(route_entries(parse::<GetRoutes>(
                    method, v,
                )?)?))
            }
            Ok(v) => Ok(RouteAnswer::Found(parse::<GetRoute>(method, v)?.route)),
            Err(RpcError::Rpc { code, message, .. }) => {
                if code == rpc::JSONRPC2_METHOD_NOT_FOUND {
                    self.forget_version();
                }
                Ok(RouteAnswer::Refused { code, message })
            }
            Err(e) => Err(ln_error(e)),
        }
    }

    /// Excludes `item` (`scid/dir` or a node id) from this keysend's later `getroutes` calls,
    /// in the askrene layer `layer` (created on first use).
    async fn exclude_in_layer(
        &self,
        layer: &mut Option<String>,
        hash: PaymentHash,
        item: &str,
    ) -> Result<(), LnError> {
        let name = match layer {
            Some(name) => name.clone(),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let name = format!("satchel-keysend-{}-{nanos}", hash.to_hex());
                self.call("askrene-create-layer", json!({ "layer": name }))
                    .await?;
                *layer = Some(name.clone());
                name
            }
        };
        if item.contains('/') {
            self.call(
                "askrene-update-channel",
                json!({ "layer": name, "short_channel_id_dir": item, "enabled": false }),
            )
            .await?;
        } else {
            self.call(
                "askrene-disable-node",
                json!({ "layer": name, "node": item }),
            )
            .await?;
        }
        Ok(())
    }

    /// After a failed keysend attempt: excludes what `data` blames from the next route.
    /// `false` if there is nothing new to exclude (the keysend gives up).
    async fn exclude_next(
        &self,
        exclude: &mut Vec<String>,
        layer: &mut Option<String>,
        hash: PaymentHash,
        data: Option<&Value>,
    ) -> Result<bool, LnError> {
        if !push_exclusion(exclude, data) {
            return Ok(false);
        }
        if self.version().await?.routes_with_getroutes()
            && let Some(item) = exclude.last()
        {
            // The attempt failed for good: nothing is outstanding if this fails.
            if let Err(e) = self.exclude_in_layer(layer, hash, item).await {
                tracing::warn!(payment_hash = %hash, error = %e, "cannot exclude a failed channel");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The attempts of [`ClnBackend::pay_keysend`]; `layer` receives the name of the askrene
    /// layer it created, if any.
    #[allow(clippy::too_many_lines)]
    async fn keysend_attempts(
        &self,
        req: &PayRequest,
        deadline: Instant,
        layer: &mut Option<String>,
    ) -> Result<PayOutcome, LnError> {
        let PayTarget::Keysend {
            dest,
            amount,
            preimage,
            custom_records: records,
        } = &req.target
        else {
            return Err(LnError::Rejected("not a keysend".to_owned()));
        };
        let (dest, amount, hash) = (*dest, *amount, preimage.hash());
        if dest == self.node_info().await?.pubkey {
            return Err(LnError::Rejected(
                "Core Lightning cannot route a keysend to itself".to_owned(),
            ));
        }
        let give_up = Instant::now() + req.timeout;
        let dest_hex = dest.to_hex();
        let mut exclude: Vec<String> = Vec::new();
        for attempt in 0..MAX_KEYSEND_ATTEMPTS {
            if attempt > 0 && Instant::now() >= give_up {
                // Every earlier attempt failed for good: nothing is outstanding.
                return Ok(PayOutcome::Failed(FailureReason::Timeout));
            }
            let height = self.blockheight().await?;
            let found = self
                .find_route(
                    &dest_hex,
                    amount,
                    req.fee_limit,
                    KEYSEND_FINAL_CLTV,
                    &exclude,
                    layer.as_deref(),
                )
                .await?;
            let route = match found {
                RouteAnswer::Found(route) => route,
                RouteAnswer::Refused { code, message } => {
                    let reason = match code {
                        rpc::PAY_INSUFFICIENT_FUNDS => FailureReason::InsufficientBalance,
                        rpc::PAY_ROUTE_NOT_FOUND
                        | rpc::PAY_ROUTE_TOO_EXPENSIVE
                        | rpc::PAY_DESTINATION_CAPACITY
                            if attempt == 0 =>
                        {
                            self.no_route_reason(amount).await
                        }
                        // Nothing sent yet: a refusal of the request itself.
                        _ if attempt == 0 => {
                            return Err(LnError::Rejected(format!("{message} (CLN error {code})")));
                        }
                        _ => FailureReason::NoRoute,
                    };
                    return Ok(PayOutcome::Failed(reason));
                }
            };
            let (Some(first), Some(last)) = (route.first(), route.last()) else {
                return Ok(PayOutcome::Failed(FailureReason::NoRoute));
            };
            if !last.id.eq_ignore_ascii_case(&dest_hex) || last.amount_msat.0 != amount.as_msat() {
                return Err(LnError::Transport(
                    "CLN returned a route to another node or amount".to_owned(),
                ));
            }
            let fee = first.amount_msat.0.saturating_sub(amount.as_msat());
            if fee > req.fee_limit.as_msat() {
                tracing::info!(
                    payment_hash = %hash,
                    fee,
                    limit = req.fee_limit.as_msat(),
                    "keysend route costs more than the fee limit"
                );
                return Ok(PayOutcome::Failed(FailureReason::NoRoute));
            }
            // getroute's delays are relative to (height + 1), as sendpay uses them.
            let base = height.saturating_add(1);
            let mut hops = Vec::with_capacity(route.len());
            for (i, hop) in route.iter().enumerate() {
                let payload = match route.get(i + 1) {
                    Some(next) => {
                        let scid = parse_scid(&next.channel).ok_or_else(|| {
                            LnError::Transport(format!("bad channel id {:?}", next.channel))
                        })?;
                        forward_payload(next.amount_msat.0, base.saturating_add(next.delay), scid)
                    }
                    None => keysend_payload(
                        amount.as_msat(),
                        base.saturating_add(hop.delay),
                        preimage,
                        records,
                    ),
                };
                hops.push(json!({ "pubkey": hop.id, "payload": hex::encode(payload) }));
            }
            let onion: CreateOnion = self
                .call_as(
                    "createonion",
                    json!({ "hops": hops, "assocdata": hash.to_hex() }),
                )
                .await?;
            let sent = self
                .rpc
                .call(
                    "sendonion",
                    json!({
                        "onion": onion.onion,
                        "first_hop": {
                            "id": first.id,
                            "amount_msat": first.amount_msat.0,
                            "delay": first.delay,
                        },
                        "payment_hash": hash.to_hex(),
                        "shared_secrets": onion.shared_secrets,
                        "label": "satchel-keysend",
                        "destination": dest_hex,
                        "amount_msat": amount.as_msat(),
                    }),
                    self.request_timeout,
                )
                .await;
            match sent {
                Ok(v) => {
                    let part: SendPay = parse("sendonion", v)?;
                    if part.status == "complete" {
                        return Self::succeeded(hash, &part, amount);
                    }
                }
                Err(RpcError::Rpc { code, data, .. }) if code == rpc::PAY_TRY_OTHER_ROUTE => {
                    if self
                        .exclude_next(&mut exclude, layer, hash, data.as_ref())
                        .await?
                    {
                        continue;
                    }
                    return Ok(PayOutcome::Failed(FailureReason::NoRoute));
                }
                Err(RpcError::Rpc { code, message, .. }) => {
                    return self
                        .classify_failure(hash, amount, "sendonion", code, &message)
                        .await;
                }
                Err(e) => return Err(ln_error(e)),
            }
            let wait = give_up.saturating_duration_since(Instant::now());
            let secs = ceil_secs(wait).max(1);
            let waited = self
                .rpc
                .call(
                    "waitsendpay",
                    json!({ "payment_hash": hash.to_hex(), "timeout": secs }),
                    Duration::from_secs(secs) + self.request_timeout,
                )
                .await;
            match waited {
                Ok(v) => {
                    let part: SendPay = parse("waitsendpay", v)?;
                    if part.status == "complete" {
                        return Self::succeeded(hash, &part, amount);
                    }
                    return Ok(self.wait_settled(hash, deadline).await);
                }
                Err(RpcError::Rpc { code, data, .. }) if code == rpc::PAY_TRY_OTHER_ROUTE => {
                    tracing::debug!(payment_hash = %hash, attempt, ?data, "keysend attempt failed");
                    if self
                        .exclude_next(&mut exclude, layer, hash, data.as_ref())
                        .await?
                    {
                        continue;
                    }
                    return Ok(PayOutcome::Failed(FailureReason::NoRoute));
                }
                Err(RpcError::Rpc { code, message, .. }) => {
                    return self
                        .classify_failure(hash, amount, "sendonion", code, &message)
                        .await;
                }
                Err(e) => return Err(ln_error(e)),
            }
        }
        Ok(PayOutcome::Failed(FailureReason::NoRoute))
    }
}

/// What `getroute`/`getroutes` answered.
enum RouteAnswer {
    /// A route, in `getroute`'s shape (empty: none).
    Found(Vec<RouteEntry>),
    /// An error object.
    Refused {
        /// CLN's error code.
        code: i64,
        /// Its message.
        message: String,
    },
}

/// A one-path `getroutes` answer in `getroute`'s shape: for each channel, the node at its far
/// end, what crosses it and the CLTV of the HTLC on it. From v26.06 a hop says so itself
/// (`node_id_out`, `amount_out_msat`, `cltv_out`); before, a hop gives what enters its start
/// node (`amount_msat`, `delay`), so what crosses channel i is what enters hop i + 1, and the
/// path's own `amount_msat` and `final_cltv` for the last channel.
fn route_entries(answer: GetRoutes) -> Result<Vec<RouteEntry>, LnError> {
    let bad = |what: &str| LnError::Transport(format!("getroutes: {what}"));
    let mut routes = answer.routes.into_iter();
    let Some(route) = routes.next() else {
        return Ok(Vec::new());
    };
    if routes.next().is_some() {
        return Err(bad("split the payment although asked for one path"));
    }
    let mut out = Vec::with_capacity(route.path.len());
    for (i, hop) in route.path.iter().enumerate() {
        let next = route.path.get(i + 1);
        let (channel, direction) = hop
            .short_channel_id_dir
            .split_once('/')
            .and_then(|(c, d)| Some((c.to_owned(), d.parse::<u8>().ok()?)))
            .ok_or_else(|| bad("bad short_channel_id_dir"))?;
        let id = hop
            .node_id_out
            .clone()
            .or_else(|| hop.next_node_id.clone())
            .ok_or_else(|| bad("hop without its far node"))?;
        let amount_msat = hop
            .amount_out_msat
            .or_else(|| next.map_or(Some(route.amount_msat), |n| n.amount_msat))
            .ok_or_else(|| bad("hop without amounts"))?;
        let delay = hop
            .cltv_out
            .or_else(|| next.map_or(Some(route.final_cltv), |n| n.delay))
            .ok_or_else(|| bad("hop without CLTVs"))?;
        out.push(RouteEntry {
            id,
            channel,
            direction,
            amount_msat,
            delay,
        });
    }
    Ok(out)
}

/// Adds the channel (or node) a failed attempt blamed to `getroute`'s `exclude` list. `false`
/// if there is nothing new to exclude.
fn push_exclusion(exclude: &mut Vec<String>, data: Option<&Value>) -> bool {
    let Some(data) = data else { return false };
    let item = match (
        data.get("erring_channel").and_then(Value::as_str),
        data.get("erring_direction").and_then(Value::as_u64),
        data.get("erring_node").and_then(Value::as_str),
    ) {
        (Some(chan), Some(dir), _) => format!("{chan}/{dir}"),
        (_, _, Some(node)) => node.to_owned(),
        _ => return false,
    };
    if exclude.contains(&item) {
        return false;
    }
    exclude.push(item);
    true
}

/// Where a channel `listpeerchannels` lists is in its life; `None` for channels that are
/// closed (on chain, or a unilateral close under way: CLN lists them until it forgets them)
/// or in a state this adapter does not know.
pub(crate) fn channel_state(state: &str, peer_connected: Option<bool>) -> Option<ChannelState> {
    Some(match state {
        "CHANNELD_NORMAL" | "CHANNELD_AWAITING_SPLICE" if peer_connected == Some(false) => {
            ChannelState::Inactive
        }
        "CHANNELD_NORMAL" | "CHANNELD_AWAITING_SPLICE" => ChannelState::Active,
        "OPENINGD"
        | "CHANNELD_AWAITING_LOCKIN"
        | "DUALOPEND_OPEN_INIT"
        | "DUALOPEND_OPEN_COMMITTED"
        | "DUALOPEND_OPEN_COMMIT_READY"
        | "DUALOPEND_AWAITING_LOCKIN" => ChannelState::Pending,
        "CHANNELD_SHUTTING_DOWN" | "CLOSINGD_SIGEXCHANGE" | "CLOSINGD_COMPLETE" => {
            ChannelState::Closing
        }
        _ => return None,
    })
}

/// A `listpeerchannels` entry for the operator (`None`: closed, or no channel id yet).
pub(crate) fn channel_info(c: &PeerChannel) -> Result<Option<ChannelInfo>, LnError> {
    let Some(state) = channel_state(&c.state, c.peer_connected) else {
        return Ok(None);
    };
    let Some(channel_id) = c.channel_id.clone() else {
        return Ok(None);
    };
    let peer = NodePubkey::from_hex(&c.peer_id).ok_or_else(|| {
        LnError::Transport(format!("listpeerchannels: bad peer_id {:?}", c.peer_id))
    })?;
    let short_channel_id = match &c.short_channel_id {
        Some(s) => Some(parse_scid(s).ok_or_else(|| {
            LnError::Transport(format!("listpeerchannels: bad short_channel_id {s:?}"))
        })?),
        None => None,
    };
    let msat = |m: Option<ClnMsat>| m.map_or(0, |m| m.0);
    Ok(Some(ChannelInfo {
        channel_id,
        short_channel_id,
        peer,
        capacity_sats: msat(c.total_msat) / 1000,
        local_balance_msat: msat(c.spendable_msat),
        remote_balance_msat: msat(c.receivable_msat),
        state,
        confirmations: None,
    }))
}

/// Channel counts and balances for metrics: active; inactive = ready but the peer is away, or
/// still opening; closing channels are neither, and their balances are not counted.
pub(crate) fn channel_stats(channels: &[ChannelInfo]) -> NodeStats {
    let live = || channels.iter().filter(|c| c.state != ChannelState::Closing);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let active = live().filter(|c| c.state == ChannelState::Active).count();
    NodeStats {
        channels_active: Some(count(active)),
        channels_inactive: Some(count(live().count() - active)),
        local_balance_msat: Some(
            live()
                .map(|c| c.local_balance_msat)
                .fold(0, u64::saturating_add),
        ),
        remote_balance_msat: Some(
            live()
                .map(|c| c.remote_balance_msat)
                .fold(0, u64::saturating_add),
        ),
        block_height: None,
        sync_lag_secs: None,
    }
}

#[async_trait]
impl NodeInfo for ClnBackend {
    /// `getinfo`: its `blockheight`; synced unless it carries `warning_bitcoind_sync` or
    /// `warning_lightningd_sync`.
    async fn node_status(&self) -> Result<NodeStatus, LnError> {
        let gi = self.getinfo().await?;
        Ok(NodeStatus {
            block_height: Some(gi.blockheight),
            synced: Some(
                gi.warning_bitcoind_sync.is_none() && gi.warning_lightningd_sync.is_none(),
            ),
        })
    }

    /// `listpeerchannels`, closed channels left out (see [`channel_state`]).
    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, LnError> {
        let list: ListPeerChannels = self.call_as("listpeerchannels", json!({})).await?;
        let mut out = Vec::with_capacity(list.channels.len());
        for c in &list.channels {
            if let Some(info) = channel_info(c)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// `getinfo` and `listpeerchannels`. No sync lag: CLN's `getinfo` names no block time.
    async fn node_stats(&self) -> Result<NodeStats, LnError> {
        let (gi, channels) = tokio::try_join!(self.getinfo(), self.list_channels())?;
        Ok(NodeStats {
            block_height: Some(u64::from(gi.blockheight)),
            ..channel_stats(&channels)
        })
    }

    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        self.info
            .get_or_try_init(|| async {
                let gi = self.getinfo().await?;
                let pubkey = NodePubkey::from_hex(&gi.id)
                    .ok_or_else(|| LnError::Transport(format!("getinfo: bad id {}", gi.id)))?;
                Ok(NodeInfoData {
                    pubkey,
                    network: gi.network.parse().unwrap_or(self.network),
                    alias: gi.alias.unwrap_or_default(),
                })
            })
            .await
            .cloned()
    }
}

#[async_trait]
impl Invoices for ClnBackend {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        let hash = req.preimage.hash();
        let mut params = json!({
            "amount_msat": req.amount.map_or_else(|| json!("any"), |a| json!(a.as_msat())),
            "label": invoice_label(&hash),
            "description": req.memo,
            "expiry": req.expiry_secs,
            "preimage": req.preimage.to_hex(),
        });
        if let Some(h) = req.description_hash {
            let memo_hash: [u8; 32] = Sha256::digest(req.memo.as_bytes()).into();
            if memo_hash != h {
                return Err(LnError::Rejected(
                    "Core Lightning cannot put a bare description hash in an invoice: it hashes \
                     the description itself. Send the full description (whose SHA-256 is the \
                     description_hash) as the memo."
                        .to_owned(),
                ));
            }
            params["deschashonly"] = json!(true);
        }
        match self.rpc.call("invoice", params, self.request_timeout).await {
            Ok(v) => {
                let created: InvoiceCreated = parse("invoice", v)?;
                let bolt11 = Bolt11::parse(&created.bolt11)
                    .map_err(|e| LnError::Transport(format!("invoice: {e}")))?;
                if bolt11.payment_hash() != hash {
                    return Err(LnError::Transport(
                        "CLN made an invoice for another payment hash".to_owned(),
                    ));
                }
                Ok(bolt11)
            }
            Err(RpcError::Rpc { code, message, .. })
                if code == rpc::INVOICE_LABEL_ALREADY_EXISTS
                    || code == rpc::INVOICE_PREIMAGE_ALREADY_EXISTS =>
            {
                // Created before (a retry): return that invoice.
                let existing = self
                    .find_invoice(hash)
                    .await?
                    .and_then(|inv| inv.bolt11)
                    .ok_or_else(|| LnError::Rejected(format!("{message} (CLN error {code})")))?;
                Bolt11::parse(&existing).map_err(|e| LnError::Transport(format!("invoice: {e}")))
            }
            Err(e) => Err(ln_error(e)),
        }
    }

    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        let list: ListInvoices = self
            .call_as("listinvoices", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        for inv in list.invoices.iter().filter(|i| i.status == "unpaid") {
            // Remembered first: CLN has no cancelled state, a deleted invoice is simply gone.
            self.call(
                "datastore",
                json!({
                    "key": cancelled_key(&hash),
                    "string": now_secs().to_string(),
                    "mode": "create-or-replace",
                }),
            )
            .await?;
            match self
                .rpc
                .call(
                    "delinvoice",
                    json!({ "label": inv.label, "status": "unpaid" }),
                    self.request_timeout,
                )
                .await
            {
                // Gone meanwhile, or paid/expired meanwhile: not an error.
                Ok(_) => {}
                Err(RpcError::Rpc { code, .. })
                    if code == rpc::INVOICE_NOT_FOUND || code == rpc::INVOICE_STATUS_UNEXPECTED => {
                }
                Err(e) => return Err(ln_error(e)),
            }
        }
        Ok(())
    }

    /// `delinvoice` with `status: unpaid` judges and deletes in one step inside `lightningd`,
    /// where an HTLC pays the invoice: if it was paid first, it fails with "Invoice status is
    /// paid not unpaid". A deleted invoice is final (CLN fails every later HTLC for it).
    async fn take_for_internal(&self, hash: PaymentHash) -> Result<InternalTake, LnError> {
        let list: ListInvoices = self
            .call_as("listinvoices", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        for inv in &list.invoices {
            match inv.status.as_str() {
                "paid" => return Ok(InternalTake::NodePaid),
                "unpaid" => {}
                _ => continue,
            }
            // Remembered first, as `cancel_invoice` does: a deleted invoice is simply gone.
            self.call(
                "datastore",
                json!({
                    "key": cancelled_key(&hash),
                    "string": now_secs().to_string(),
                    "mode": "create-or-replace",
                }),
            )
            .await?;
            match self
                .rpc
                .call(
                    "delinvoice",
                    json!({ "label": inv.label, "status": "unpaid" }),
                    self.request_timeout,
                )
                .await
            {
                Ok(_) => {}
                Err(RpcError::Rpc { code, .. }) if code == rpc::INVOICE_NOT_FOUND => {}
                // Paid or expired meanwhile: the error says which (`current_status`); ask if
                // it does not.
                Err(RpcError::Rpc { code, data, .. }) if code == rpc::INVOICE_STATUS_UNEXPECTED => {
                    let current = match data
                        .as_ref()
                        .and_then(|d| d.get("current_status"))
                        .and_then(Value::as_str)
                    {
                        Some(s) => Some(s.to_owned()),
                        None => self.find_invoice(hash).await?.map(|i| i.status),
                    };
                    if current.as_deref() == Some("paid") {
                        return Ok(InternalTake::NodePaid);
                    }
                }
                Err(e) => return Err(ln_error(e)),
            }
        }
        Ok(InternalTake::Taken)
    }

    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        if let Some(inv) = self.find_invoice(hash).await? {
            return invoice_state(&inv).map(Some);
        }
        let list: ListDatastore = self
            .call_as("listdatastore", json!({ "key": cancelled_key(&hash) }))
            .await?;
        let key = cancelled_key(&hash);
        Ok(list
            .datastore
            .iter()
            .any(|e| e.key == key)
            .then_some(InvoiceState::Canceled))
    }
}

/// The `datastore` key recording that we cancelled (deleted) the invoice of `hash`.
fn cancelled_key(hash: &PaymentHash) -> Vec<String> {
    let mut key: Vec<String> = CANCELLED_DATASTORE_KEY
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    key.push(hash.to_hex());
    key
}

#[async_trait]
impl Payments for ClnBackend {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        self.validate(&req.target)?;
        let hash = req.target.payment_hash();
        let deadline = Instant::now() + req.timeout + PAY_MARGIN;
        let Some(_guard) = self.hash_lock(hash, deadline).await else {
            // Another call is paying this hash right now.
            return Ok(PayOutcome::InFlight);
        };
        // A `pay` of ours still running in lightningd (an earlier caller stopped waiting).
        let running = lock(&self.running).get(&hash).cloned();
        if let Some((method, rx)) = running {
            return self
                .await_pay(hash, req.target.amount(), method, rx, deadline)
                .await?
                .ok_or_else(|| {
                    LnError::Rejected(format!("Core Lightning does not know {method}"))
                });
        }
        // Idempotency: never send while a payment with this hash is in flight or done.
        match self.lookup_payment(hash).await? {
            PaymentLookup::Succeeded { preimage, fee } => {
                return Ok(PayOutcome::Succeeded { preimage, fee });
            }
            PaymentLookup::InFlight => return Ok(self.wait_settled(hash, deadline).await),
            PaymentLookup::Failed(_) | PaymentLookup::NotFound => {}
        }
        lock(&self.unsent_failures).remove(&hash);
        let outcome = match &req.target {
            PayTarget::Bolt11 { invoice, amount } => {
                self.pay_bolt11(hash, invoice, *amount, &req, deadline)
                    .await
            }
            PayTarget::Keysend { .. } => self.pay_keysend(&req, deadline).await,
        };
        if let Ok(PayOutcome::Failed(reason)) = &outcome {
            let mut unsent = lock(&self.unsent_failures);
            if unsent.len() >= MAX_UNSENT_FAILURES {
                unsent.clear();
            }
            unsent.insert(hash, *reason);
        }
        outcome
    }

    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        let list: ListSendPays = self
            .call_as("listsendpays", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        Ok(match summarize(hash, &list.payments)? {
            Summary::NotFound => match lock(&self.unsent_failures).get(&hash) {
                Some(reason) => PaymentLookup::Failed(*reason),
                None => PaymentLookup::NotFound,
            },
            Summary::InFlight => PaymentLookup::InFlight,
            Summary::Succeeded { preimage, fee } => PaymentLookup::Succeeded { preimage, fee },
            Summary::Failed(part) => PaymentLookup::Failed(self.failure_reason(hash, &part).await?),
        })
    }
}

#[async_trait]
impl InvoiceEvents for ClnBackend {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        let mut events = Vec::new();
        let mut cursor = after;
        while events.len() < limit {
            // Block (up to `wait`) only for the first event; then take what is already there.
            let secs = if events.is_empty() {
                ceil_secs(wait)
            } else {
                0
            };
            let call = self.rpc.call(
                "waitanyinvoice",
                json!({ "lastpay_index": cursor, "timeout": secs }),
                Duration::from_secs(secs) + self.request_timeout,
            );
            // CLN's timeout is whole seconds: honour a finer `wait` on our side. Dropping the
            // call loses nothing (the invoice is still returned by the next call).
            let answer = if secs > 0 && wait < Duration::from_secs(secs) {
                match tokio::time::timeout(wait, call).await {
                    Ok(answer) => answer,
                    Err(_) => break,
                }
            } else {
                call.await
            };
            let inv: Invoice = match answer {
                Ok(v) => parse("waitanyinvoice", v)?,
                Err(RpcError::Rpc {
                    code: rpc::INVOICE_WAIT_TIMED_OUT,
                    ..
                }) => break,
                Err(e) if events.is_empty() => return Err(ln_error(e)),
                // Keep what we have; the caller asks again from the last one.
                Err(_) => break,
            };
            let event = incoming_event(&inv)?;
            if event.seq <= cursor {
                return Err(LnError::Transport(format!(
                    "waitanyinvoice returned pay_index {} after {cursor}",
                    event.seq
                )));
            }
            cursor = event.seq;
            events.push(event);
        }
        Ok(events)
    }
}

#[async_trait]
impl Routes for ClnBackend {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        if amount.is_zero() || dest == self.node_info().await?.pubkey {
            return Ok(Vec::new());
        }
        let height = self.blockheight().await?;
        let max_fee = Msat::from_msat(amount.as_msat().max(QUERY_MIN_MAXFEE_MSAT))
            .map_err(|e| LnError::Rejected(e.to_string()))?;
        let route = match self
            .find_route(&dest.to_hex(), amount, max_fee, QUERY_FINAL_CLTV, &[], None)
            .await?
        {
            RouteAnswer::Found(route) => route,
            RouteAnswer::Refused { code, .. }
                if [
                    rpc::PAY_ROUTE_NOT_FOUND,
                    rpc::PAY_ROUTE_TOO_EXPENSIVE,
                    rpc::PAY_INSUFFICIENT_FUNDS,
                    rpc::PAY_DESTINATION_CAPACITY,
                ]
                .contains(&code) =>
            {
                return Ok(Vec::new());
            }
            RouteAnswer::Refused { code, message } => {
                return Err(LnError::Rejected(format!("{message} (CLN error {code})")));
            }
        };
        let (Some(first), Some(last)) = (route.first(), route.last()) else {
            return Ok(Vec::new());
        };
        let base = height.saturating_add(1);
        let mut hops = Vec::with_capacity(route.len());
        for (i, hop) in route.iter().enumerate() {
            // LND's hop i: the channel into node i; amt_to_forward/expiry are what node i
            // sends on (the final values for the last hop); fee is what node i keeps.
            let (forward, expiry) = match route.get(i + 1) {
                Some(next) => (next.amount_msat.0, base.saturating_add(next.delay)),
                None => (hop.amount_msat.0, base.saturating_add(hop.delay)),
            };
            hops.push(RouteHop {
                chan_id: parse_scid(&hop.channel).ok_or_else(|| {
                    LnError::Transport(format!("getroute: bad channel {:?}", hop.channel))
                })?,
                chan_capacity_sats: 0,
                amt_to_forward: msat(ClnMsat(forward))?,
                fee: msat(ClnMsat(hop.amount_msat.0.saturating_sub(forward)))?,
                expiry,
                pub_key: NodePubkey::from_hex(&hop.id)
                    .ok_or_else(|| LnError::Transport(format!("getroute: bad id {}", hop.id)))?,
            });
        }
        Ok(vec![Route {
            total_time_lock: base.saturating_add(first.delay),
            total_fees: msat(ClnMsat(
                first.amount_msat.0.saturating_sub(last.amount_msat.0),
            ))?,
            total_amt: msat(first.amount_msat)?,
            hops,
        }])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn part(
        id: u64,
        group: u64,
        status: &str,
        amount: u64,
        sent: u64,
        pre: Option<&Preimage>,
    ) -> SendPay {
        SendPay {
            id,
            groupid: Some(group),
            partid: Some(id),
            status: status.to_owned(),
            amount_msat: Some(ClnMsat(amount)),
            amount_sent_msat: Some(ClnMsat(sent)),
            payment_preimage: pre.map(Preimage::to_hex),
        }
    }

    #[test]
    fn summary_of_parts() {
        let pre = Preimage([9; 32]);
        let hash = pre.hash();
        assert!(matches!(summarize(hash, &[]).unwrap(), Summary::NotFound));
        let failed = part(1, 1, "failed", 1000, 1010, None);
        assert!(
            matches!(summarize(hash, std::slice::from_ref(&failed)).unwrap(), Summary::Failed(p) if p.id == 1)
        );
        let pending = part(2, 2, "pending", 1000, 1010, None);
        assert!(matches!(
            summarize(hash, &[failed.clone(), pending]).unwrap(),
            Summary::InFlight
        ));
        // Two parts of one group, both complete: fees add up.
        let a = part(3, 3, "complete", 600, 606, Some(&pre));
        let b = part(4, 3, "complete", 400, 405, Some(&pre));
        match summarize(hash, &[failed.clone(), a.clone(), b]).unwrap() {
            Summary::Succeeded { preimage, fee } => {
                assert_eq!(preimage, pre);
                assert_eq!(fee.as_msat(), 11);
            }
            _ => panic!("expected success"),
        }
        // A part of the succeeded group still pending: not final yet.
        let c = part(5, 3, "pending", 400, 405, None);
        assert!(matches!(
            summarize(hash, &[a, c]).unwrap(),
            Summary::InFlight
        ));
        // A preimage that does not match is refused.
        let wrong = part(6, 4, "complete", 1, 1, Some(&Preimage([1; 32])));
        assert!(summarize(hash, &[wrong]).is_err());
    }

    #[test]
    fn keysend_invoice_becomes_keysend_event() {
        let pre = Preimage([3; 32]);
        let inv = Invoice {
            label: "keysend-1700000000.000000001".to_owned(),
            status: "paid".to_owned(),
            payment_hash: pre.hash().to_hex(),
            bolt11: Some("lnbcrt...".to_owned()),
            bolt12: None,
            description: Some("keysend: hello".to_owned()),
            expires_at: Some(1),
            amount_received_msat: Some(ClnMsat(21_000)),
            paid_at: Some(1_700_000_000),
            pay_index: Some(7),
            payment_preimage: Some(pre.to_hex()),
        };
        let ev = incoming_event(&inv).unwrap();
        assert_eq!(ev.seq, 7);
        match ev.kind {
            IncomingKind::KeysendReceived {
                preimage,
                amount_received,
                custom_records,
                ..
            } => {
                assert_eq!(preimage, pre);
                assert_eq!(amount_received.as_msat(), 21_000);
                assert_eq!(custom_records.0[&KEYSEND_MESSAGE_TLV], b"hello".to_vec());
            }
            other => panic!("{other:?}"),
        }
        let mut ours = inv;
        ours.label = "satchel-abc".to_owned();
        assert!(matches!(
            incoming_event(&ours).unwrap().kind,
            IncomingKind::InvoiceSettled { .. }
        ));
    }

    #[test]
    fn exclusions() {
        let mut ex = Vec::new();
        let d = json!({"erring_channel": "1x2x3", "erring_direction": 1});
        assert!(push_exclusion(&mut ex, Some(&d)));
        assert!(!push_exclusion(&mut ex, Some(&d)));
        assert!(push_exclusion(
            &mut ex,
            Some(&json!({"erring_node": "02ab"}))
        ));
        assert!(!push_exclusion(&mut ex, Some(&json!({}))));
        assert!(!push_exclusion(&mut ex, None));
        assert_eq!(ex, vec!["1x2x3/1".to_owned(), "02ab".to_owned()]);
    }

    #[test]
    fn channels_from_listpeerchannels() {
        let peer = "02".to_owned() + &"11".repeat(32);
        let list: ListPeerChannels = serde_json::from_value(json!({"channels": [
            {"peer_id": peer, "peer_connected": true, "state": "CHANNELD_NORMAL",
             "short_channel_id": "103x1x0", "channel_id": "aa", "total_msat": 1_000_000_000u64,
             "to_us_msat": 400_000_000u64, "spendable_msat": 390_000_000u64,
             "receivable_msat": "580000000msat"},
            {"peer_id": peer, "peer_connected": false, "state": "CHANNELD_NORMAL",
             "channel_id": "bb", "total_msat": 5_000_000u64, "spendable_msat": 1_000u64},
            {"peer_id": peer, "peer_connected": true, "state": "DUALOPEND_AWAITING_LOCKIN",
             "channel_id": "cc", "total_msat": 2_000_000u64, "spendable_msat": 7_000u64},
            {"peer_id": peer, "peer_connected": true, "state": "CLOSINGD_COMPLETE",
             "channel_id": "dd", "total_msat": 9_000_000u64, "spendable_msat": 9_000u64},
            {"peer_id": peer, "peer_connected": false, "state": "ONCHAIN", "channel_id": "ee"},
            {"peer_id": peer, "peer_connected": true, "state": "OPENINGD"},
        ]}))
        .unwrap();
        let infos: Vec<ChannelInfo> = list
            .channels
            .iter()
            .filter_map(|c| channel_info(c).unwrap())
            .collect();
        let states: Vec<ChannelState> = infos.iter().map(|c| c.state).collect();
        assert_eq!(
            states,
            [
                ChannelState::Active,
                ChannelState::Inactive,
                ChannelState::Pending,
                ChannelState::Closing
            ]
        );
        assert_eq!(infos[0].short_channel_id, Some((103 << 40) | (1 << 16)));
        assert_eq!(infos[0].capacity_sats, 1_000_000);
        assert_eq!(infos[0].local_balance_msat, 390_000_000);
        assert_eq!(infos[0].remote_balance_msat, 580_000_000);
        assert_eq!(infos[1].short_channel_id, None);
        let stats = channel_stats(&infos);
        assert_eq!(stats.channels_active, Some(1));
        assert_eq!(stats.channels_inactive, Some(2));
        assert_eq!(stats.local_balance_msat, Some(390_000_000 + 1_000 + 7_000));
        let bad: PeerChannel = serde_json::from_value(
            json!({"peer_id": "zz", "state": "CHANNELD_NORMAL", "channel_id": "aa"}),
        )
        .unwrap();
        assert!(matches!(channel_info(&bad), Err(LnError::Transport(_))));
    }
}
