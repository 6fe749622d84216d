//! Outgoing Lightning payments: the reserve committed before the node is called, the moves
//! between live states, settlement and refund, the operator's manual resolution with its
//! audit trail, and the reads recovery and the payment driver need.

use satchel_domain::{
    AccountId, EventName, LnTxId, Msat, NodeId, PaymentHash, PaymentStatus, Preimage, WalletId,
    WtxId, WtxType, payment_charge, payment_reserve,
};

use super::{LIVE_OR_DONE, lntx_in, status_list, wtx_in, wtxs_of_lntx};
use crate::db::Conn;
use crate::idempotency;
use crate::ledger::{
    Account, NewWtx, SYS_IN_FLIGHT, SYS_LIGHTNING, SYS_REVENUE, SYS_UNCLAIMED, leg, lock_wallet,
    post,
};
use crate::lnurlw::LinkClaim;
use crate::outbox::{Emit, emit};
use crate::records::{LNTX_COLS, LNTX_NCOLS, LnTxRecord, WtxRecord};
use crate::{Store, StoreError, args};

/// Reserve funds for an outgoing payment and record it.
#[derive(Debug, Clone)]
pub struct ReserveCmd {
    /// Id of the outgoing LnTx.
    pub lntx_id: LnTxId,
    /// Owner.
    pub account_id: AccountId,
    /// Paying wallet.
    pub wallet_id: WalletId,
    /// Unix seconds.
    pub now: i64,
    /// Node.
    pub node_id: NodeId,
    /// Destination pubkey.
    pub dest_pubkey: String,
    /// BOLT11 or `<pubkey>:<sats>`.
    pub payment_request: String,
    /// Hash.
    pub payment_hash: PaymentHash,
    /// Memo.
    pub memo: String,
    /// Description hash of the invoice (hex).
    pub description_hash: Option<String>,
    /// Payment secret (hex).
    pub payment_addr: Option<String>,
    /// Amount to deliver.
    pub amount: Msat,
    /// Maximum routing fee (reserved too).
    pub fee_limit: Msat,
    /// Expiry seconds.
    pub expiry_secs: Option<i64>,
    /// Absolute expiry.
    pub expires_at: Option<i64>,
    /// Keysend preimage (we know it up front for keysend).
    pub preimage: Option<Preimage>,
    /// Keysend.
    pub is_keysend: bool,
    /// Custom records JSON object text.
    pub custom_records: Option<String>,
    /// passThru JSON object text.
    pub pass_thru: String,
    /// The WTX type the payment books when it settles (`ln_withdrawal`, or
    /// `ln_lnurl_pay_outbound` for LNURL-pay); stored with the payment.
    pub wtx_type: WtxType,
}

/// Why a reserve was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Unknown wallet.
    #[error("wallet not found")]
    WalletNotFound,
    /// Balance below amount + fee limit. Carries the balance.
    #[error("insufficient balance")]
    InsufficientBalance(Msat),
    /// This payment hash was already paid (by us, internally or externally).
    #[error("invoice is already paid")]
    AlreadyPaid,
    /// A payment of this hash is in flight.
    #[error("payment already in flight")]
    InFlight(LnTxId),
    /// The one-time LNURL-withdraw link to spend is already spent, expired or unknown.
    #[error("LNURL link is no longer valid")]
    LinkSpent,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settle a successful outgoing payment.
#[derive(Debug, Clone)]
pub struct SettleCmd {
    /// Payment.
    pub lntx_id: LnTxId,
    /// Proof of payment.
    pub preimage: Preimage,
    /// Routing fee actually paid.
    pub fee: Msat,
    /// WTX id for the withdrawal.
    pub wtx_id: WtxId,
    /// WTX id for the network fee (used only if fee > 0).
    pub fee_wtx_id: WtxId,
    /// Label of the withdrawal WTX.
    pub user_label: String,
    /// passThru of the withdrawal WTX.
    pub pass_thru: String,
    /// passThru of the fee WTX.
    pub fee_pass_thru: String,
    /// Unix seconds.
    pub now: i64,
}

/// A settled outgoing payment's WTXs.
#[derive(Debug, Clone)]
pub struct PaymentSettled {
    /// The `ln_withdrawal`.
    pub wtx: WtxRecord,
    /// The `network_fee`, if a fee was paid.
    pub fee_wtx: Option<WtxRecord>,
    /// False if it had already been settled before this call.
    pub newly_settled: bool,
}

/// Why a payment transition was refused.
#[derive(Debug, thiserror::Error)]
pub enum PaymentStateError {
    /// No such payment.
    #[error("payment not found")]
    NotFound,
    /// It already failed and was refunded; a success now means the node contradicts itself.
    #[error("payment already failed")]
    AlreadyFailed,
    /// It already succeeded; it can never fail.
    #[error("payment already succeeded")]
    AlreadySucceeded,
    /// The preimage given does not hash to the payment hash.
    #[error("preimage does not match the payment hash")]
    BadProof,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an operator resolves a stuck payment.
#[derive(Debug, Clone)]
pub enum ManualResolution {
    /// The node did pay: book it with the real fee.
    Succeeded {
        /// Proof of payment (must hash to the payment hash).
        preimage: Preimage,
        /// Routing fee paid.
        fee: Msat,
        /// WTX id for the withdrawal.
        wtx_id: WtxId,
        /// WTX id for the fee.
        fee_wtx_id: WtxId,
    },
    /// The payment cannot have gone out: refund it.
    Failed,
}

/// One entry of the operator audit trail.
#[derive(Debug, Clone)]
pub struct OperatorAction {
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub operator: String,
    /// What (`resolve_succeeded`, `resolve_failed`).
    pub action: String,
    /// Which payment.
    pub lntx_id: Option<LnTxId>,
    /// Why, in the operator's words.
    pub reason: String,
    /// JSON details.
    pub details: String,
}

impl Store {
    /// Debits amount + fee limit into `sys:in_flight` and records the payment as `reserved`,
    /// committed before anyone talks to the node.
    pub async fn reserve_payment(&self, r: &ReserveCmd) -> Result<LnTxRecord, ReserveError> {
        self.reserve_payment_claiming(r, None).await
    }

    /// [`Store::reserve_payment`] that first spends a one-time LNURL-withdraw link in the same
    /// transaction (see [`crate::lnurlw`]): both happen or neither.
    pub async fn reserve_payment_claiming(
        &self,
        r: &ReserveCmd,
        claim: Option<&LinkClaim>,
    ) -> Result<LnTxRecord, ReserveError> {
        let mut tx = self.begin_write().await?;
        if let Some(c) = claim
            && !crate::lnurlw::claim_in(&mut tx, c).await?
        {
            return Err(ReserveError::LinkSpent);
        }
        let hash = r.payment_hash.to_hex();
        // A payment hash is paid at most once, by anyone: our own invoice settled internally,
        // or a live/successful outgoing payment.
        let paid_in = tx
            .fetch_opt(
                "SELECT settled FROM ln_txs WHERE payment_hash = $1 AND direction = 'in' AND settled = 1",
                args![hash.as_str()],
            )
            .await?;
        if paid_in.is_some() {
            return Err(ReserveError::AlreadyPaid);
        }
        let sql = format!(
            "SELECT id, status FROM ln_txs WHERE payment_hash = $1 AND direction = 'out' AND status IN ({})",
            status_list(&LIVE_OR_DONE)
        );
        if let Some(row) = tx.fetch_opt(&sql, args![hash.as_str()]).await? {
            return Err(if row.text(1)? == PaymentStatus::Succeeded.code() {
                ReserveError::AlreadyPaid
            } else {
                ReserveError::InFlight(LnTxId::from_db(row.text(0)?))
            });
        }
        let Some(wallet) = lock_wallet(&mut tx, &r.wallet_id).await? else {
            return Err(ReserveError::WalletNotFound);
        };
        if wallet.account_id != r.account_id {
            return Err(ReserveError::WalletNotFound);
        }
        // The worst case the wallet can be charged, in whole sats (`payment_reserve`). An
        // unrepresentable total is more than any wallet can hold.
        let total = payment_reserve(r.amount, r.fee_limit)
            .map_err(|_| ReserveError::InsufficientBalance(wallet.balance))?;
        if wallet.balance < total {
            return Err(ReserveError::InsufficientBalance(wallet.balance));
        }
        let inserted = tx
            .exec(
                "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
                 dest_pubkey, payment_request, payment_hash, memo, description_hash, payment_addr, \
                 amount_msat, fee_limit_msat, expiry_secs, expires_at, preimage, is_keysend, \
                 custom_records, pass_thru, status, wtx_type) VALUES ($1, $2, $3, $4, $4, 'out', $5, $6, $7, $8, \
                 $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, 'reserved', $20)",
                args![
                    r.lntx_id.as_str(),
                    r.account_id.as_str(),
                    r.wallet_id.as_str(),
                    r.now,
                    r.node_id.as_str(),
                    r.dest_pubkey.as_str(),
                    r.payment_request.as_str(),
                    hash.as_str(),
                    r.memo.as_str(),
                    r.description_hash.clone(),
                    r.payment_addr.clone(),
                    r.amount.as_i64(),
                    r.fee_limit.as_i64(),
                    r.expiry_secs,
                    r.expires_at,
                    r.preimage.map(|p| p.to_hex()),
                    r.is_keysend,
                    r.custom_records.clone(),
                    r.pass_thru.as_str(),
                    r.wtx_type.code()
                ],
            )
            .await;
        match inserted {
            Ok(_) => {}
            // Postgres: a concurrent payment of the same hash (a reserve, or an internal
            // payment) committed first. Report it as the sequential checks above would have.
            Err(StoreError::Constraint(_)) => {
                drop(tx);
                return Err(match self.outgoing_by_hash(&r.payment_hash).await? {
                    Some(p) if p.status == Some(PaymentStatus::Succeeded) => {
                        ReserveError::AlreadyPaid
                    }
                    Some(p) => ReserveError::InFlight(p.id),
                    None => ReserveError::InFlight(r.lntx_id.clone()),
                });
            }
            Err(e) => return Err(e.into()),
        }
        let total = total.as_i64();
        post(
            &mut tx,
            "payment_reserve",
            r.lntx_id.as_str(),
            r.now,
            &[
                leg(Account::Wallet(&r.wallet_id), -total),
                leg(Account::Sys(SYS_IN_FLIGHT), total),
            ],
            &[],
        )
        .await?;
        let rec = lntx_in(&mut tx, r.lntx_id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        idempotency::mark(&mut tx, &format!("payment:{}", r.lntx_id)).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Moves a live payment between non-final states (`reserved` → `dispatched` → `unknown`).
    /// Returns false if it was not in one of `from`.
    pub async fn mark_payment(
        &self,
        id: &LnTxId,
        from: &[PaymentStatus],
        to: PaymentStatus,
        now: i64,
    ) -> Result<bool, StoreError> {
        if !to.is_live() {
            return Err(StoreError::Corrupt(
                "mark_payment only moves between live states".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE ln_txs SET status = $1, updated_at = $2 WHERE id = $3 AND direction = 'out' AND status IN ({})",
            status_list(from)
        );
        let n = tx.exec(&sql, args![to.code(), now, id.as_str()]).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Books a successful payment: the real fee is charged, the rest of the reserve returns to the
    /// wallet, and `ln_withdrawal` (+ `network_fee`) WTXs appear. Idempotent.
    pub async fn settle_payment(&self, s: &SettleCmd) -> Result<PaymentSettled, PaymentStateError> {
        let mut tx = self.begin_write().await?;
        let r = settle_in(&mut tx, s).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Refunds a payment the node proved failed. Idempotent; refuses a succeeded payment.
    pub async fn fail_payment(
        &self,
        id: &LnTxId,
        reason: &str,
        now: i64,
    ) -> Result<LnTxRecord, PaymentStateError> {
        let mut tx = self.begin_write().await?;
        let r = fail_in(&mut tx, id, reason, now).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// An operator settles a stuck payment by hand. Succeeded needs the preimage (proof of
    /// payment); failed refunds the reserve. The resolution and its audit record are one
    /// transaction. Refuses payments that are already final.
    pub async fn resolve_payment(
        &self,
        id: &LnTxId,
        resolution: &ManualResolution,
        operator: &str,
        reason: &str,
        now: i64,
    ) -> Result<LnTxRecord, PaymentStateError> {
        let mut tx = self.begin_write().await?;
        let Some(p) = lntx_in(&mut tx, id.as_str()).await? else {
            return Err(PaymentStateError::NotFound);
        };
        match p.status {
            Some(PaymentStatus::Succeeded) => return Err(PaymentStateError::AlreadySucceeded),
            Some(PaymentStatus::Failed) => return Err(PaymentStateError::AlreadyFailed),
            None => return Err(PaymentStateError::NotFound),
            _ => {}
        }
        let (action, details) = match resolution {
            ManualResolution::Succeeded {
                preimage,
                fee,
                wtx_id,
                fee_wtx_id,
            } => {
                if preimage.hash() != p.payment_hash {
                    return Err(PaymentStateError::BadProof);
                }
                settle_in(&mut tx, &SettleCmd {
                    lntx_id: p.id.clone(),
                    preimage: *preimage,
                    fee: *fee,
                    wtx_id: wtx_id.clone(),
                    fee_wtx_id: fee_wtx_id.clone(),
                    user_label: p.memo.clone(),
                    pass_thru: p.pass_thru.clone(),
                    fee_pass_thru: format!(
                        "{{\"source_transaction\":\"{wtx_id}\",\"fee_target_wallet\":\"contained\"}}"
                    ),
                    now,
                })
                .await?;
                (
                    "resolve_succeeded",
                    format!("{{\"fee_msat\":{}}}", fee.as_msat()),
                )
            }
            ManualResolution::Failed => {
                fail_in(&mut tx, id, "FAILURE_REASON_ERROR", now).await?;
                ("resolve_failed", "{}".to_owned())
            }
        };
        tx.exec(
            "INSERT INTO operator_actions (at, operator, action, lntx_id, reason, details) VALUES ($1, $2, $3, $4, $5, $6)",
            args![now, operator, action, id.as_str(), reason, details],
        )
        .await?;
        let rec = lntx_in(&mut tx, id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(rec)
    }

    /// The operator audit trail, newest first.
    pub async fn operator_actions(&self, limit: u64) -> Result<Vec<OperatorAction>, StoreError> {
        let mut c = self.read_conn().await?;
        let rows = c
            .fetch_all(
                "SELECT at, operator, action, lntx_id, reason, details FROM operator_actions ORDER BY seq DESC LIMIT $1",
                args![i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(OperatorAction {
                    at: r.i64(0)?,
                    operator: r.text(1)?,
                    action: r.text(2)?,
                    lntx_id: r.opt_text(3)?.map(LnTxId::from_db),
                    reason: r.text(4)?,
                    details: r.text(5)?,
                })
            })
            .collect()
    }

    /// Outgoing payments still holding a reserve (for recovery).
    pub async fn live_payments(&self) -> Result<Vec<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.direction = 'out' AND l.status IN ({}) ORDER BY l.created_at",
            status_list(&[
                PaymentStatus::Reserved,
                PaymentStatus::Dispatched,
                PaymentStatus::Unknown
            ])
        );
        let rows = c.fetch_all(&sql, args![]).await?;
        rows.iter().map(|r| LnTxRecord::from_row(r, 0)).collect()
    }

    /// The newest outgoing payment of a hash that is live or succeeded.
    pub async fn outgoing_by_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'out' AND l.status IN ({})",
            status_list(&LIVE_OR_DONE)
        );
        match c.fetch_opt(&sql, args![hash.to_hex()]).await? {
            Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// The most recent outgoing attempt of a hash, whatever its state (failed included).
    pub async fn latest_outgoing(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'out' \
             ORDER BY l.created_at DESC, l.updated_at DESC LIMIT 1"
        );
        match c.fetch_opt(&sql, args![hash.to_hex()]).await? {
            Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }
}

/// Books a successful payment inside the caller's transaction (see [`Store::settle_payment`]).
pub(crate) async fn settle_in(
    tx: &mut Conn,
    s: &SettleCmd,
) -> Result<PaymentSettled, PaymentStateError> {
    let sql = format!(
        "SELECT {LNTX_COLS}, l.wtx_type FROM ln_txs l WHERE l.id = $1 AND l.direction = 'out'{}",
        tx.dialect().for_update()
    );
    let Some(row) = tx.fetch_opt(&sql, args![s.lntx_id.as_str()]).await? else {
        return Err(PaymentStateError::NotFound);
    };
    let p = LnTxRecord::from_row(&row, 0)?;
    // Rows from before the column existed are withdrawals.
    let wtx_type = match row.opt_i64(LNTX_NCOLS)? {
        Some(code) => WtxType::from_code(code)
            .ok_or_else(|| StoreError::Corrupt(format!("payment wtx_type {code}")))?,
        None => WtxType::LnWithdrawal,
    };
    match p.status {
        Some(PaymentStatus::Succeeded) => {
            let mut w = wtxs_of_lntx(tx, &p.id).await?.into_iter();
            let wtx = w.next().ok_or(StoreError::NotFound)?;
            return Ok(PaymentSettled {
                wtx,
                fee_wtx: w.next(),
                newly_settled: false,
            });
        }
        Some(PaymentStatus::Failed) => return Err(PaymentStateError::AlreadyFailed),
        _ => {}
    }
    let wallet_id = p.wallet_id.clone().ok_or(StoreError::NotFound)?;
    // Take the wallet's lock before any system account's, even when its posting is zero (fee ==
    // limit): every transaction locks wallets first, so none can wait on another in a cycle.
    lock_wallet(tx, &wallet_id).await?;
    let amount = p.amount.as_i64();
    let reserved = payment_reserve(p.amount, p.fee_limit)
        .map_err(StoreError::from)?
        .as_i64();
    let fee = s.fee.as_i64();
    // The node promised to stay within the limit. If it did not, the wallet is charged only
    // the limit and the operator absorbs the rest (sys:unclaimed goes down), so no wallet is
    // ever charged more than it agreed to.
    let within = s.fee.min(p.fee_limit);
    let charged_fee = within.as_i64();
    let overrun = fee - charged_fee;
    if overrun > 0 {
        tracing::error!(lntx = %p.id, fee, limit = p.fee_limit.as_i64(), "node paid more fee than the limit");
    }
    // The wallet pays whole sats: amount + fee rounded up (`payment_charge`); what that is
    // above the real cost (under a sat) is the operator's revenue. It fits the reserve.
    let (shown_amount, shown_fee) = payment_charge(p.amount, within).map_err(StoreError::from)?;
    let (shown_amount, shown_fee) = (shown_amount.as_i64(), shown_fee.as_i64());
    let rounding = shown_amount + shown_fee - amount - charged_fee;
    let withdrawal = NewWtx {
        id: &s.wtx_id,
        wallet_id: &wallet_id,
        account_id: p.account_id.as_str(),
        now: s.now,
        amount_msat: -shown_amount,
        wtx_type,
        user_label: &s.user_label,
        lntx_id: Some(p.id.as_str()),
        pass_thru: &s.pass_thru,
    };
    let fee_entry = NewWtx {
        id: &s.fee_wtx_id,
        wallet_id: &wallet_id,
        account_id: p.account_id.as_str(),
        now: s.now,
        amount_msat: -shown_fee,
        wtx_type: WtxType::NetworkFee,
        user_label: "Network fee",
        lntx_id: Some(p.id.as_str()),
        pass_thru: &s.fee_pass_thru,
    };
    let entries: &[NewWtx<'_>] = if shown_fee > 0 {
        &[withdrawal, fee_entry]
    } else {
        &[withdrawal]
    };
    tx.exec(
        "UPDATE ln_txs SET status = 'succeeded', settled = 1, settled_at = $1, updated_at = $1, \
         fee_msat = $2, preimage = $3 WHERE id = $4",
        args![s.now, fee, s.preimage.to_hex(), p.id.as_str()],
    )
    .await?;
    post(
        tx,
        "payment_settle",
        p.id.as_str(),
        s.now,
        &[
            leg(Account::Sys(SYS_IN_FLIGHT), -reserved),
            leg(
                Account::Wallet(&wallet_id),
                reserved - shown_amount - shown_fee,
            ),
            leg(Account::Sys(SYS_LIGHTNING), amount + fee),
            leg(Account::Sys(SYS_UNCLAIMED), -overrun),
            leg(Account::Sys(SYS_REVENUE), rounding),
        ],
        entries,
    )
    .await?;
    let wtx = wtx_in(tx, &s.wtx_id).await?;
    let fee_wtx = if shown_fee > 0 {
        Some(wtx_in(tx, &s.fee_wtx_id).await?)
    } else {
        None
    };
    Ok(PaymentSettled {
        wtx,
        fee_wtx,
        newly_settled: true,
    })
}

/// Refunds a failed payment inside the caller's transaction (see [`Store::fail_payment`]).
pub(crate) async fn fail_in(
    tx: &mut Conn,
    id: &LnTxId,
    reason: &str,
    now: i64,
) -> Result<LnTxRecord, PaymentStateError> {
    let sql = format!(
        "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.id = $1 AND l.direction = 'out'{}",
        tx.dialect().for_update()
    );
    let Some(row) = tx.fetch_opt(&sql, args![id.as_str()]).await? else {
        return Err(PaymentStateError::NotFound);
    };
    let p = LnTxRecord::from_row(&row, 0)?;
    match p.status {
        Some(PaymentStatus::Failed) => return Ok(p),
        Some(PaymentStatus::Succeeded) => return Err(PaymentStateError::AlreadySucceeded),
        _ => {}
    }
    let wallet_id = p.wallet_id.clone().ok_or(StoreError::NotFound)?;
    lock_wallet(tx, &wallet_id).await?;
    let reserved = payment_reserve(p.amount, p.fee_limit)
        .map_err(StoreError::from)?
        .as_i64();
    post(
        tx,
        "payment_refund",
        p.id.as_str(),
        now,
        &[
            leg(Account::Sys(SYS_IN_FLIGHT), -reserved),
            leg(Account::Wallet(&wallet_id), reserved),
        ],
        &[],
    )
    .await?;
    tx.exec(
        "UPDATE ln_txs SET status = 'failed', failure_reason = $1, updated_at = $2 WHERE id = $3",
        args![reason, now, p.id.as_str()],
    )
    .await?;
    emit(
        tx,
        Emit {
            name: EventName::WalletSendFailure,
            account_id: p.account_id.as_str(),
            wallet_id: &wallet_id,
            wtx_id: None,
            lntx_id: Some(&p.id),
            now,
            balance_msat: None,
        },
    )
    .await?;
    let rec = lntx_in(tx, id.as_str())
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(rec)
}
