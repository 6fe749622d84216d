//! Starting an outgoing payment: the requests (`withdraw`, `keysend`, and the BOLT11 path that
//! LNURL-withdraw and LNURL-pay share), their validation (fee limit, send limit, keysend
//! destination and records) and the reservation that commits the intent before the node hears
//! of it. An invoice of our own is handed to `internal.rs` instead; everything reserved is
//! handed to the driver (`driver.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use satchel_domain::{
    Bolt11, CustomRecords, KEYSEND_PREIMAGE_TLV, LnTxId, Msat, NodePubkey, PaymentStatus,
    Permission, Preimage, PubkeyError, WalletId, WtxType, fee_limit_default, now_secs,
    parse_tlv_type,
};
use satchel_lightning::PayTarget;
use satchel_store::{LinkClaim, ReserveCmd, ReserveError, WalletRecord};
use serde_json::{Map, Value};

use super::{
    KeysendRequest, PaymentResult, PaymentService, ValidKeysend, WithdrawRequest, failure_of,
};
use crate::ServiceError;
use crate::auth::{AuthService, Caller};
use crate::passthru::PassThru;

/// Expiry LNPay reports on keysend lnTx.
const KEYSEND_EXPIRY_SECS: i64 = 432_000;

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

impl PaymentService {
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
}
