//! Outgoing payments: a persisted state machine driven by a detached task.
//!
//! 1. `reserve_payment` commits the intent (amount + fee limit debited into `sys:in_flight`)
//!    **before** the node hears of it.
//! 2. A spawned task marks it `dispatched` and calls the node. The HTTP request only waits for
//!    that task with a timeout; a client disconnect or timeout never cancels it.
//! 3. Success books the real fee and releases the rest. A failure is refunded only when the node
//!    reports a definite failure *and* a fresh lookup agrees. Anything else (timeouts, transport
//!    errors, in-flight) stays pending and is polled until the node says how it ended.
//! 4. [`PaymentService::recover`] re-drives every live payment from our own records at startup and
//!    periodically, so a crash at any point resumes. Nothing is ever released on a timer.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use satchel_domain::{
    Bolt11, CustomRecords, FailureReason, KEYSEND_PREIMAGE_TLV, LnTxId, Msat, NodePubkey,
    PaymentHash, PaymentStatus, Permission, Preimage, PubkeyError, WalletId, WtxId, WtxType,
    fee_limit_default, now_secs, parse_tlv_type,
};
use satchel_lightning::{
    InternalTake, LnError, PayOutcome, PayRequest, PayTarget, PaymentLookup, TakeKind,
};
use satchel_store::{
    InternalPayCmd, InternalPayError, LinkClaim, LnTxRecord, PaymentSettled, PaymentStateError,
    ReserveCmd, ReserveError, SettleCmd, WalletRecord, WtxRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::{AuthService, Caller};
use crate::passthru::PassThru;
use crate::{Ctx, ServiceError};

/// Expiry LNPay reports on keysend lnTx.
const KEYSEND_EXPIRY_SECS: i64 = 432_000;
/// How long internally settled invoices gather before the node is asked to cancel them.
const CANCEL_GATHER: Duration = Duration::from_millis(20);

/// Longest pause between two lookups of an unresolved payment.
const MAX_POLL: Duration = Duration::from_secs(30);

/// `POST /wallet/:key/withdraw`.
#[derive(Debug, Clone, Default)]
pub struct WithdrawRequest {
    /// BOLT11.
    pub payment_request: String,
    /// Explicit fee limit (must be >= 0).
    pub fee_limit_msat: Option<i64>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
}

/// `POST /wallet/:key/keysend`, before validation.
#[derive(Debug, Clone, Default)]
pub struct KeysendRequest {
    /// 66 hex chars.
    pub dest_pubkey: String,
    /// Amount.
    pub amount: Msat,
    /// Explicit fee limit (must be >= 0).
    pub fee_limit_msat: Option<i64>,
    /// TLV type (decimal string) → value.
    pub custom_records: Option<Map<String, Value>>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
}

/// A keysend that passed validation; serialisable so async jobs can persist it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidKeysend {
    /// Destination (hex).
    pub dest_pubkey: String,
    /// Amount in msat.
    pub amount_msat: u64,
    /// Fee limit in msat.
    pub fee_limit_msat: u64,
    /// TLV type → UTF-8 value.
    pub records: BTreeMap<u64, String>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
    /// Preimage (hex), chosen once so a retried job pays the same hash.
    pub preimage: String,
}

/// What a payment request produced.
// Returned once per request and never stored in bulk: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum PaymentResult {
    /// Paid: the `ln_withdrawal` and the `network_fee` WTX if any.
    Done {
        /// Withdrawal.
        wtx: WtxRecord,
        /// Fee.
        fee_wtx: Option<WtxRecord>,
    },
    /// Not resolved within the wait; still reserved and being tracked.
    Pending(LnTxRecord),
}

/// How a driven payment ended.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Final {
    Settled(PaymentSettled),
    Failed(FailureReason),
}

fn failure_of(l: &LnTxRecord) -> FailureReason {
    l.failure_reason
        .as_deref()
        .and_then(FailureReason::from_lnd_name)
        .unwrap_or(FailureReason::Error)
}

/// Outgoing payment use cases.
#[derive(Clone)]
pub struct PaymentService {
    ctx: Arc<Ctx>,
    driving: Arc<Mutex<HashSet<LnTxId>>>,
    /// Invoices settled in the ledger, for the node to cancel (started on first use).
    cancels: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<PaymentHash>>,
}

/// The fee limit of a payment: the caller's, else LNPay's default (5% rounded up to the sat)
/// raised to the operator's floor `min` (`min_fee_limit_msat`), so a small payment can still
/// pay a hub's base fee.
fn fee_limit(explicit: Option<i64>, amount: Msat, min: Msat) -> Result<Msat, ServiceError> {
    let too_big = || ServiceError::Invalid("Fee Limit Msat is too big.".into());
    let limit = match explicit {
        None => fee_limit_default(amount).max(min),
        Some(v) if v < 0 => {
            return Err(ServiceError::Invalid(
                "Fee Limit Msat must be no less than 0.".into(),
            ));
        }
        Some(v) => Msat::from_i64(v).map_err(|_| too_big())?,
    };
    // An amount + limit too large to represent is refused by the reserve as more than the
    // balance ("Invoice too large"), the message that explains it.
    Ok(limit)
}
fn reserve_err(e: ReserveError) -> ServiceError {
    match e {
        ReserveError::WalletNotFound => ServiceError::WalletNotFound(String::new()),
        ReserveError::InsufficientBalance(b) => ServiceError::InsufficientBalance(b.sats_floor()),
        ReserveError::AlreadyPaid => ServiceError::AlreadyPaid,
        ReserveError::InFlight(_) => ServiceError::PaymentInFlight,
        ReserveError::LinkSpent => ServiceError::LinkSpent,
        ReserveError::Store(s) => s.into(),
    }
}

fn internal_pay_err(e: InternalPayError, path_key: &str) -> ServiceError {
    match e {
        InternalPayError::AlreadyPaid => ServiceError::AlreadyPaid,
        InternalPayError::Expired => ServiceError::Invoice(satchel_domain::Bolt11Error::Expired),
        InternalPayError::ZeroAmount => {
            ServiceError::Invoice(satchel_domain::Bolt11Error::ZeroAmount)
        }
        InternalPayError::InsufficientBalance(b) => {
            ServiceError::InsufficientBalance(b.sats_floor())
        }
        InternalPayError::WalletNotFound => ServiceError::WalletNotFound(path_key.to_owned()),
        InternalPayError::NotInternal => ServiceError::Internal("internal invoice vanished".into()),
        InternalPayError::OverLimit(max) => ServiceError::Invalid(format!(
            "Sends are limited to: {} satoshi per request",
            max.sats_floor()
        )),
        InternalPayError::LinkSpent => ServiceError::LinkSpent,
        InternalPayError::Store(s) => s.into(),
    }
}

impl PaymentService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> PaymentService {
        PaymentService {
            ctx,
            driving: Arc::new(Mutex::new(HashSet::new())),
            cancels: std::sync::OnceLock::new(),
        }
    }

    /// Asks the node to cancel an invoice the ledger settled internally, so that the outside
    /// world cannot pay it too. One task drains the queue and cancels whatever has gathered in
    /// one call (one write on the embedded node, flushed within a second). Best effort: if it
    /// fails, an outside payment still cannot be credited twice (it lands in `sys:unclaimed`).
    fn cancel_on_node(&self, hash: PaymentHash) {
        let tx = self.cancels.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PaymentHash>();
            let ln = self.ctx.ln.clone();
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    // Let a batch gather: one durable node write per batch, not per payment.
                    tokio::time::sleep(CANCEL_GATHER).await;
                    let mut batch = vec![first];
                    while let Ok(h) = rx.try_recv() {
                        batch.push(h);
                    }
                    if let Err(e) = ln.cancel_invoices(&batch).await {
                        tracing::warn!(invoices = batch.len(), error = %e, "could not cancel internally settled invoices on the node");
                    }
                }
            });
            tx
        });
        if tx.send(hash).is_err() {
            tracing::warn!(%hash, "invoice canceller stopped; the node invoice stays open");
        }
    }

    async fn wallet(&self, caller: &Caller, key: &str) -> Result<WalletRecord, ServiceError> {
        AuthService::new(self.ctx.clone())
            .wallet_for(caller, key, Permission::WalletWithdraw)
            .await
    }

    fn check_send_limit(&self, amount: Msat) -> Result<(), ServiceError> {
        match self.ctx.cfg.max_send {
            Some(max) if amount > max => Err(ServiceError::Invalid(format!(
                "Sends are limited to: {} satoshi per request",
                max.sats_floor()
            ))),
            _ => Ok(()),
        }
    }

    /// Pays a BOLT11 invoice from the wallet named by `key`.
    pub async fn withdraw(
        &self,
        caller: &Caller,
        key: &str,
        req: WithdrawRequest,
    ) -> Result<PaymentResult, ServiceError> {
        // The key is checked here; the wallet row is read (and locked) by whichever path pays.
        let auth = AuthService::new(self.ctx.clone());
        let wallet_id = auth
            .wallet_id_for(caller, key, Permission::WalletWithdraw)
            .await?;
        let text = Bolt11::normalize(&req.payment_request);
        let pass_thru = PassThru::from_user(req.pass_thru)
            .set("method", Value::String("api".into()))
            .to_json();
        self.pay_bolt11(
            caller,
            key,
            &wallet_id,
            text,
            req.fee_limit_msat,
            pass_thru,
            None,
            WtxType::LnWithdrawal,
        )
        .await
    }

    /// The payment path of `POST /withdraw`, shared with LNURL-withdraw callbacks and LNURL-pay:
    /// `text` is the normalized invoice, `key` only names the wallet in errors. With `claim`,
    /// the one-time link is spent in the transaction that reserves or settles the payment.
    /// `wtx_type` is what the payment books when it settles (stored with it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn pay_bolt11(
        &self,
        caller: &Caller,
        key: &str,
        wallet_id: &WalletId,
        text: String,
        fee_limit_msat: Option<i64>,
        pass_thru: String,
        claim: Option<&LinkClaim>,
        wtx_type: WtxType,
    ) -> Result<PaymentResult, ServiceError> {
        let auth = AuthService::new(self.ctx.clone());
        // One of our own invoices, exactly as we issued it: its signature is the one we made,
        // so skip re-verifying it and settle inside the ledger (no node, no fee). The ledger
        // checks, inside its transaction, that the stored text is exactly this one, expiry,
        // amount, the send limit and that it is still open. (With an invalid fee limit, the
        // checked path below reports it in the usual order.)
        if let Some(hash) = Bolt11::payment_hash_hint(&text)
            && fee_limit(fee_limit_msat, Msat::ZERO, Msat::ZERO).is_ok()
            && let Some(done) = self
                .pay_internal(
                    caller,
                    key,
                    wallet_id,
                    hash,
                    pass_thru.clone(),
                    Some(text.clone()),
                    claim,
                    wtx_type,
                )
                .await?
        {
            return Ok(done);
        }

        let wallet = auth.owned_wallet(caller, key, wallet_id).await?;
        let invoice = Bolt11::parse(&text)?;
        let now = now_secs();
        let amount = invoice.check_payable(self.ctx.network(), now)?;
        let fee_limit = fee_limit(fee_limit_msat, amount, self.ctx.cfg.min_fee_limit)?;
        self.check_send_limit(amount)?;
        let hash = invoice.payment_hash();

        // Our payment hash in another text: settled internally only if it is the invoice we
        // issued (re-encoded, say): payee our node, same amount, hash and description. Anything
        // else is somebody else's invoice carrying our hash (a rewritten amount, a dropped
        // payee...): it is paid like any outside invoice, for what it says, to whom it names,
        // never settled at the amount we stored.
        if let Some(stored) = self.ctx.store.incoming_by_hash(&hash).await?
            && self.is_our_invoice(&invoice, &stored)
        {
            return self
                .pay_internal(
                    caller, key, &wallet.id, hash, pass_thru, None, claim, wtx_type,
                )
                .await?
                .ok_or_else(|| ServiceError::Internal("internal invoice vanished".into()));
        }

        let lntx = self
            .ctx
            .store
            .reserve_payment_claiming(
                &ReserveCmd {
                    lntx_id: LnTxId::generate(),
                    account_id: caller.account_id.clone(),
                    wallet_id: wallet.id.clone(),
                    now,
                    node_id: self.ctx.cfg.node_id.clone(),
                    dest_pubkey: invoice.payee().to_hex(),
                    payment_request: invoice.as_str().to_owned(),
                    payment_hash: hash,
                    memo: invoice.description().unwrap_or_default(),
                    description_hash: invoice.description_hash().map(hex::encode),
                    payment_addr: Some(hex::encode(invoice.payment_secret())),
                    amount,
                    fee_limit,
                    expiry_secs: Some(invoice.expiry_secs()),
                    expires_at: Some(invoice.expires_at_secs()),
                    preimage: None,
                    is_keysend: false,
                    custom_records: None,
                    pass_thru,
                    wtx_type,
                },
                claim,
            )
            .await
            .map_err(reserve_err)?;
        satchel_store::crash::crash_point("after_reserve");
        let target = PayTarget::Bolt11 { invoice, amount };
        self.wait(lntx, target, self.ctx.cfg.payment_wait).await
    }

    /// Whether `invoice` (signature checked) is the invoice we issued as `stored`: its payee
    /// (explicit or recovered from the signature) is our node, and its amount, hash and
    /// description are the ones we signed.
    fn is_our_invoice(&self, invoice: &Bolt11, stored: &LnTxRecord) -> bool {
        if stored.is_keysend || invoice.payee() != self.ctx.pubkey() {
            return false;
        }
        if invoice.as_str() == stored.payment_request {
            return true;
        }
        let Ok(ours) = Bolt11::parse(&stored.payment_request) else {
            return false;
        };
        invoice.payee() == ours.payee()
            && invoice.amount() == ours.amount()
            && invoice.payment_hash() == ours.payment_hash()
            && invoice.description() == ours.description()
            && invoice.description_hash() == ours.description_hash()
    }

    /// Settles one of our invoices inside the ledger. With `expect_request`, `Ok(None)` means
    /// the hash is not one of our invoices with exactly that text (nothing was written).
    ///
    /// The invoice is first taken away from the node ([`satchel_lightning::Invoices::
    /// take_for_internal`]), so that an outside payer and a wallet can never both pay it: if
    /// the node was paid first, the wallet is refused and not debited.
    // The withdraw path's inputs plus the optional link claim; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    async fn pay_internal(
        &self,
        caller: &Caller,
        path_key: &str,
        wallet_id: &WalletId,
        hash: PaymentHash,
        pass_thru: String,
        expect_request: Option<String>,
        claim: Option<&LinkClaim>,
        wtx_type: WtxType,
    ) -> Result<Option<PaymentResult>, ServiceError> {
        let checked_text = expect_request.is_some();
        let cmd = InternalPayCmd {
            account_id: caller.account_id.clone(),
            payer: wallet_id.clone(),
            payment_hash: hash,
            out_lntx_id: LnTxId::generate(),
            payer_wtx_id: WtxId::generate(),
            payee_wtx_id: WtxId::generate(),
            payer_pass_thru: pass_thru,
            now: now_secs(),
            expect_request,
            send_limit: self.ctx.cfg.max_send,
            payer_wtx_type: wtx_type,
        };
        let ln = &self.ctx.ln;
        let kind = ln.take_kind();
        let refused = |e: InternalPayError| match e {
            InternalPayError::NotInternal if checked_text => Ok(None),
            e => Err(internal_pay_err(e, path_key)),
        };
        // A cancel on the node cannot be undone: refuse first what the ledger would refuse,
        // so that nobody can cancel somebody else's invoice by failing to pay it.
        if kind == TakeKind::Final
            && let Err(e) = self.ctx.store.check_internal_claiming(&cmd, claim).await
        {
            return refused(e);
        }
        match ln.take_for_internal(hash).await {
            Ok(InternalTake::Taken) => {}
            Ok(InternalTake::NodePaid) => {
                if kind == TakeKind::Provisional && checked_text {
                    // The text was not checked yet; the checked path decides what it is.
                    return Ok(None);
                }
                tracing::info!(%hash, "invoice already paid through the node; internal payment refused");
                return Err(ServiceError::AlreadyPaid);
            }
            Err(e) => {
                tracing::error!(%hash, error = %e, "could not take the invoice from the node; internal payment refused");
                if kind == TakeKind::Provisional {
                    ln.release_internal(hash).await;
                }
                return Err(ServiceError::Internal(format!(
                    "taking invoice {hash} from the node: {e}"
                )));
            }
        }
        let paid = match self.ctx.store.pay_internal_claiming(&cmd, claim).await {
            Ok(p) => p,
            Err(e) => {
                if kind == TakeKind::Provisional {
                    ln.release_internal(hash).await;
                }
                return refused(e);
            }
        };
        // The ledger says paid. A provisional take is made durable on the node in batches; a
        // final one already is.
        if kind == TakeKind::Provisional {
            self.cancel_on_node(hash);
        }
        crate::count_payment("internal", "succeeded");
        Ok(Some(PaymentResult::Done {
            wtx: paid.payer_wtx,
            fee_wtx: None,
        }))
    }

    /// Checks a keysend request and fixes its preimage.
    pub fn validate_keysend(&self, req: KeysendRequest) -> Result<ValidKeysend, ServiceError> {
        let dest = req.dest_pubkey.trim();
        NodePubkey::parse(dest).map_err(|e| {
            ServiceError::Invalid(match e {
                PubkeyError::Length => "Dest Pubkey should contain 66 characters.".into(),
                PubkeyError::Syntax | PubkeyError::NotOnCurve => {
                    "Dest Pubkey must be a hex-encoded node public key.".into()
                }
            })
        })?;
        if req.amount.is_zero() {
            return Err(ServiceError::Invalid(
                "Num Satoshis must be greater than 0.".into(),
            ));
        }
        self.check_send_limit(req.amount)?;
        let fee_limit = fee_limit(req.fee_limit_msat, req.amount, self.ctx.cfg.min_fee_limit)?;
        let mut records = BTreeMap::new();
        for (k, v) in req.custom_records.unwrap_or_default() {
            let t = parse_tlv_type(&k).ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "custom_records key {k} must be an integer >= 65536."
                ))
            })?;
            if t < 65_536 || t == KEYSEND_PREIMAGE_TLV {
                return Err(ServiceError::Invalid(format!(
                    "custom_records key {k} must be an integer >= 65536 (and not {KEYSEND_PREIMAGE_TLV})."
                )));
            }
            let Value::String(s) = v else {
                return Err(ServiceError::Invalid(format!(
                    "custom_records value of {k} must be a string."
                )));
            };
            records.insert(t, s);
        }
        Ok(ValidKeysend {
            dest_pubkey: dest.to_ascii_lowercase(),
            amount_msat: req.amount.as_msat(),
            fee_limit_msat: fee_limit.as_msat(),
            records,
            pass_thru: req.pass_thru,
            preimage: Preimage::random().to_hex(),
        })
    }

    /// Keysend from the wallet named by `key`, waiting up to the configured time.
    pub async fn keysend(
        &self,
        caller: &Caller,
        key: &str,
        req: KeysendRequest,
    ) -> Result<PaymentResult, ServiceError> {
        let wallet = self.wallet(caller, key).await?;
        let k = self.validate_keysend(req)?;
        self.execute_keysend(caller, &wallet, &k, Some(self.ctx.cfg.payment_wait))
            .await
    }

    /// Runs a validated keysend; `wait: None` waits for the final outcome. Idempotent for the
    /// same `ValidKeysend` (same preimage): a re-run reports the existing payment.
    pub async fn execute_keysend(
        &self,
        caller: &Caller,
        wallet: &WalletRecord,
        k: &ValidKeysend,
        wait: Option<Duration>,
    ) -> Result<PaymentResult, ServiceError> {
        let bad = |m: &str| ServiceError::Internal(format!("stored keysend invalid: {m}"));
        let dest = NodePubkey::from_hex(&k.dest_pubkey).ok_or_else(|| bad("pubkey"))?;
        let preimage = Preimage::from_hex(&k.preimage).ok_or_else(|| bad("preimage"))?;
        let amount = Msat::from_msat(k.amount_msat).map_err(|_| bad("amount"))?;
        let fee_limit = Msat::from_msat(k.fee_limit_msat).map_err(|_| bad("fee"))?;
        let sats = amount.sats_floor();
        let memo = format!("{sats} keysend to {}", k.dest_pubkey);
        let mut shown = Map::new();
        for (t, v) in &k.records {
            shown.insert(t.to_string(), Value::String(v.clone()));
        }
        shown.insert(
            KEYSEND_PREIMAGE_TLV.to_string(),
            Value::String(preimage.to_hex()),
        );
        let pass_thru = PassThru::from_user(k.pass_thru.clone())
            .set("method", Value::String("api".into()))
            .to_json();
        // A keysend's preimage is chosen once (an async job keeps it across restarts). If this
        // hash was already attempted, that attempt's outcome is the answer: a definite failure is
        // final, never a reason to send again.
        if let Some(prev) = self.ctx.store.latest_outgoing(&preimage.hash()).await? {
            return match prev.status {
                Some(PaymentStatus::Succeeded) => self.done_of(&prev).await,
                Some(PaymentStatus::Failed) => Err(ServiceError::PaymentFailed(failure_of(&prev))),
                _ => {
                    let target = self.target_of(&prev)?;
                    self.wait_opt(prev, target, wait).await
                }
            };
        }
        let reserved = self
            .ctx
            .store
            .reserve_payment(&ReserveCmd {
                lntx_id: LnTxId::generate(),
                account_id: caller.account_id.clone(),
                wallet_id: wallet.id.clone(),
                now: now_secs(),
                node_id: self.ctx.cfg.node_id.clone(),
                dest_pubkey: k.dest_pubkey.clone(),
                payment_request: format!("{}:{sats}", k.dest_pubkey),
                payment_hash: preimage.hash(),
                memo,
                description_hash: None,
                payment_addr: None,
                amount,
                fee_limit,
                expiry_secs: Some(KEYSEND_EXPIRY_SECS),
                expires_at: None,
                preimage: Some(preimage),
                is_keysend: true,
                custom_records: Some(Value::Object(shown).to_string()),
                pass_thru,
                wtx_type: WtxType::LnWithdrawal,
            })
            .await;
        let lntx = match reserved {
            Ok(l) => l,
            // Re-run of the same keysend (async job after a restart): report that payment.
            Err(ReserveError::InFlight(_)) | Err(ReserveError::AlreadyPaid) => {
                let existing = self.ctx.store.outgoing_by_hash(&preimage.hash()).await?;
                return match existing {
                    Some(l) if l.status == Some(PaymentStatus::Succeeded) => self.done_of(&l).await,
                    Some(l) => {
                        let target = self.target_of(&l)?;
                        self.wait_opt(l, target, wait).await
                    }
                    None => Err(ServiceError::AlreadyPaid),
                };
            }
            Err(e) => return Err(reserve_err(e)),
        };
        satchel_store::crash::crash_point("after_reserve");
        let custom_records = CustomRecords(
            k.records
                .iter()
                .map(|(t, v)| (*t, v.as_bytes().to_vec()))
                .collect(),
        );
        let target = PayTarget::Keysend {
            dest,
            amount,
            preimage,
            custom_records,
        };
        self.wait_opt(lntx, target, wait).await
    }

    async fn done_of(&self, l: &LnTxRecord) -> Result<PaymentResult, ServiceError> {
        let mut w = self.ctx.store.wtxs_of_lntx(&l.id).await?.into_iter();
        let wtx = w
            .next()
            .ok_or_else(|| ServiceError::Internal("succeeded payment without WTX".into()))?;
        Ok(PaymentResult::Done {
            wtx,
            fee_wtx: w.next(),
        })
    }

    async fn wait(
        &self,
        lntx: LnTxRecord,
        target: PayTarget,
        wait: Duration,
    ) -> Result<PaymentResult, ServiceError> {
        self.wait_opt(lntx, target, Some(wait)).await
    }

    async fn wait_opt(
        &self,
        lntx: LnTxRecord,
        target: PayTarget,
        wait: Option<Duration>,
    ) -> Result<PaymentResult, ServiceError> {
        let id = lntx.id.clone();
        // One deadline for the whole request, whoever ends up driving the payment.
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let handle = self.spawn_drive(lntx, target);
        let joined = match (handle, deadline) {
            (Some(h), Some(d)) => tokio::time::timeout_at(d, h).await.ok(),
            (Some(h), None) => Some(h.await),
            (None, _) => None,
        };
        match joined {
            Some(Ok(Ok(Final::Settled(s)))) => Ok(PaymentResult::Done {
                wtx: s.wtx,
                fee_wtx: s.fee_wtx,
            }),
            Some(Ok(Ok(Final::Failed(r)))) => Err(ServiceError::PaymentFailed(r)),
            // The driver stopped on an error (e.g. the database). The node may have paid, and
            // recovery will book it: follow our books like any pending payment, never report a
            // failure we do not know.
            Some(Ok(Err(_))) | Some(Err(_)) | None => {
                if let Some(Ok(Err(e))) = &joined {
                    tracing::error!(lntx = %id, error = %e, "payment driver error; answering from our books");
                }
                if let Some(Err(e)) = &joined {
                    tracing::error!(lntx = %id, error = %e, "payment driver task died; recovery resumes it");
                }
                let mut pause = Duration::from_millis(20);
                loop {
                    let current = self.current(&id).await?;
                    match current.status {
                        Some(PaymentStatus::Succeeded) => return self.done_of(&current).await,
                        Some(PaymentStatus::Failed) => {
                            return Err(ServiceError::PaymentFailed(failure_of(&current)));
                        }
                        _ => {}
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Ok(PaymentResult::Pending(current));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Rebuilds what to send from a stored payment (recovery after a restart).
    fn target_of(&self, l: &LnTxRecord) -> Result<PayTarget, ServiceError> {
        if l.is_keysend {
            let dest = NodePubkey::from_hex(&l.dest_pubkey)
                .ok_or_else(|| ServiceError::Internal("bad stored pubkey".into()))?;
            let preimage = l
                .preimage
                .ok_or_else(|| ServiceError::Internal("keysend without preimage".into()))?;
            let shown: Map<String, Value> = match &l.custom_records {
                Some(s) => {
                    serde_json::from_str(s).map_err(|e| ServiceError::Internal(e.to_string()))?
                }
                None => Map::new(),
            };
            let mut records = CustomRecords::default();
            for (k, v) in shown {
                if let (Ok(t), Value::String(s)) = (k.parse::<u64>(), v)
                    && t != KEYSEND_PREIMAGE_TLV
                {
                    records.0.insert(t, s.into_bytes());
                }
            }
            Ok(PayTarget::Keysend {
                dest,
                amount: l.amount,
                preimage,
                custom_records: records,
            })
        } else {
            let invoice = Bolt11::parse(&l.payment_request)
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            Ok(PayTarget::Bolt11 {
                invoice,
                amount: l.amount,
            })
        }
    }

    /// Starts driving a payment unless this process already is. The task is detached.
    fn spawn_drive(
        &self,
        lntx: LnTxRecord,
        target: PayTarget,
    ) -> Option<tokio::task::JoinHandle<Result<Final, ServiceError>>> {
        {
            let mut d = self.driving.lock().unwrap_or_else(|e| e.into_inner());
            if !d.insert(lntx.id.clone()) {
                return None;
            }
        }
        let this = self.clone();
        Some(crate::spawn_for_request(async move {
            let id = lntx.id.clone();
            let r = this.drive(lntx, target).await;
            if let Err(e) = &r {
                tracing::error!(lntx = %id, error = %e, "payment driver stopped; recovery will resume it");
            }
            this.driving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            r
        }))
    }

    /// Drives one payment until the node says how it ended.
    async fn drive(&self, listed: LnTxRecord, target: PayTarget) -> Result<Final, ServiceError> {
        let store = &self.ctx.store;
        let hash = listed.payment_hash;
        // The caller's copy may be stale (recovery lists payments, then drives them later; the
        // original driver may have finished meanwhile). Only the current record decides.
        let lntx = self.current(&listed.id).await?;
        if let Some(done) = self.final_of(&lntx).await? {
            return Ok(done);
        }
        let mut send = match lntx.status {
            // Only the driver that wins reserved -> dispatched sends; a loser re-reads.
            Some(PaymentStatus::Reserved) => {
                store
                    .mark_payment(
                        &lntx.id,
                        &[PaymentStatus::Reserved],
                        PaymentStatus::Dispatched,
                        now_secs(),
                    )
                    .await?
            }
            // Already dispatched before (restart): ask first, the node may have it.
            _ => false,
        };
        let mut pause = Duration::from_millis(200);
        loop {
            if send {
                send = false;
                // Never send a payment that is no longer live in our books: a refunded payment
                // sent again would be paid by the node while the wallet keeps its refund.
                let now = self.current(&lntx.id).await?;
                if let Some(done) = self.final_of(&now).await? {
                    return Ok(done);
                }
                let req = PayRequest {
                    target: target.clone(),
                    fee_limit: lntx.fee_limit,
                    timeout: self.ctx.cfg.node_pay_timeout,
                };
                let outcome = self.ctx.ln.pay(req).await;
                satchel_store::crash::crash_point("after_dispatch");
                match outcome {
                    Ok(PayOutcome::Succeeded { preimage, fee }) => {
                        return self.settle(&lntx, preimage, fee).await;
                    }
                    Ok(PayOutcome::Failed(reason)) => {
                        // Confirm with a fresh lookup before giving any money back.
                        match self.ctx.ln.lookup_payment(hash).await {
                            Ok(PaymentLookup::Failed(r)) => return self.fail(&lntx, r).await,
                            Ok(PaymentLookup::NotFound) => return self.fail(&lntx, reason).await,
                            Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                                return self.settle(&lntx, preimage, fee).await;
                            }
                            Ok(PaymentLookup::InFlight) | Err(_) => {
                                self.mark_unknown(&lntx).await?
                            }
                        }
                    }
                    Ok(PayOutcome::InFlight) => {}
                    Err(LnError::Rejected(msg)) => {
                        tracing::warn!(lntx = %lntx.id, %msg, "node rejected payment");
                        match self.ctx.ln.lookup_payment(hash).await {
                            Ok(PaymentLookup::NotFound) => {
                                return self.fail(&lntx, FailureReason::Error).await;
                            }
                            Ok(PaymentLookup::Failed(r)) => return self.fail(&lntx, r).await,
                            Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                                return self.settle(&lntx, preimage, fee).await;
                            }
                            Ok(PaymentLookup::InFlight) | Err(_) => {
                                self.mark_unknown(&lntx).await?
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(lntx = %lntx.id, error = %e, "payment outcome unknown; will keep asking the node");
                        self.mark_unknown(&lntx).await?;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
            match self.ctx.ln.lookup_payment(hash).await {
                Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                    return self.settle(&lntx, preimage, fee).await;
                }
                Ok(PaymentLookup::Failed(r)) => return self.fail(&lntx, r).await,
                Ok(PaymentLookup::InFlight) => {}
                // The node never got it (we crashed before the call, or the call never arrived):
                // sending now is safe because pay is idempotent per payment hash.
                Ok(PaymentLookup::NotFound) => send = true,
                Err(e) => tracing::debug!(lntx = %lntx.id, error = %e, "lookup failed; retrying"),
            }
        }
    }

    async fn current(&self, id: &LnTxId) -> Result<LnTxRecord, ServiceError> {
        self.ctx
            .store
            .lntx(id)
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("payment {id} vanished")))
    }

    /// The outcome of a payment that is already final in our books.
    async fn final_of(&self, l: &LnTxRecord) -> Result<Option<Final>, ServiceError> {
        Ok(match l.status {
            Some(PaymentStatus::Succeeded) => match self.done_of(l).await? {
                PaymentResult::Done { wtx, fee_wtx } => Some(Final::Settled(PaymentSettled {
                    wtx,
                    fee_wtx,
                    newly_settled: false,
                })),
                PaymentResult::Pending(_) => None,
            },
            Some(PaymentStatus::Failed) => Some(Final::Failed(failure_of(l))),
            _ => None,
        })
    }

    async fn mark_unknown(&self, l: &LnTxRecord) -> Result<(), ServiceError> {
        self.ctx
            .store
            .mark_payment(
                &l.id,
                &[PaymentStatus::Reserved, PaymentStatus::Dispatched],
                PaymentStatus::Unknown,
                now_secs(),
            )
            .await?;
        Ok(())
    }

    async fn settle(
        &self,
        l: &LnTxRecord,
        preimage: Preimage,
        fee: Msat,
    ) -> Result<Final, ServiceError> {
        satchel_store::crash::crash_point("before_settle");
        let wtx_id = WtxId::generate();
        let fee_pass_thru = PassThru::default()
            .set("source_transaction", Value::String(wtx_id.to_string()))
            .set("fee_target_wallet", Value::String("contained".into()))
            .to_json();
        let settled = self
            .ctx
            .store
            .settle_payment(&SettleCmd {
                lntx_id: l.id.clone(),
                preimage,
                fee,
                wtx_id,
                fee_wtx_id: WtxId::generate(),
                user_label: l.memo.clone(),
                pass_thru: l.pass_thru.clone(),
                fee_pass_thru,
                now: now_secs(),
            })
            .await
            .map_err(|e| match e {
                PaymentStateError::AlreadyFailed => {
                    tracing::error!(lntx = %l.id, "node reports success for a payment we refunded");
                    ServiceError::Internal(format!(
                        "payment {} succeeded after it was refunded",
                        l.id
                    ))
                }
                other => ServiceError::Internal(other.to_string()),
            })?;
        if settled.newly_settled {
            crate::count_payment(self.ctx.cfg.backend_name, "succeeded");
        }
        Ok(Final::Settled(settled))
    }

    async fn fail(&self, l: &LnTxRecord, reason: FailureReason) -> Result<Final, ServiceError> {
        match self
            .ctx
            .store
            .fail_payment(&l.id, reason.lnd_name(), now_secs())
            .await
        {
            Ok(_) => {
                // `fail_payment` is idempotent: only a payment that was still live is counted.
                if l.status.is_some_and(|s| s.is_live()) {
                    crate::count_payment(self.ctx.cfg.backend_name, "failed");
                }
                Ok(Final::Failed(reason))
            }
            Err(PaymentStateError::AlreadySucceeded) => {
                let s = self.done_of(l).await?;
                match s {
                    PaymentResult::Done { wtx, fee_wtx } => Ok(Final::Settled(PaymentSettled {
                        wtx,
                        fee_wtx,
                        newly_settled: false,
                    })),
                    PaymentResult::Pending(_) => {
                        Err(ServiceError::Internal("inconsistent payment".into()))
                    }
                }
            }
            Err(e) => Err(ServiceError::Internal(e.to_string())),
        }
    }

    /// Re-drives every live payment from our own records. Run at startup and periodically;
    /// payments already being driven by this process are skipped.
    pub async fn recover(&self) -> Result<usize, ServiceError> {
        let live = self.ctx.store.live_payments().await?;
        let mut started = 0;
        for l in live {
            let target = match self.target_of(&l) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(lntx = %l.id, error = %e, "cannot rebuild payment; needs an operator");
                    continue;
                }
            };
            if self.spawn_drive(l, target).is_some() {
                started += 1;
            }
        }
        Ok(started)
    }

    /// Number of payments this process is driving now.
    pub fn driving(&self) -> usize {
        self.driving.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
