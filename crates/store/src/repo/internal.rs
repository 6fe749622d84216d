//! Internal payments: paying one of our own invoices from a wallet, entirely inside the
//! ledger (payer debited, payee credited, invoice marked paid, in one transaction).

use satchel_domain::{
    AccountId, LnTxId, Msat, PaymentHash, PaymentStatus, WalletId, WtxId, WtxType,
};

use super::{LIVE_OR_DONE, status_list, wtx_written};
use crate::db::Conn;
use crate::idempotency;
use crate::ledger::{Account, NewWtx, SYS_REVENUE, leg, post, read_wallets};
use crate::lnurlw::LinkClaim;
use crate::records::{Direction, LNTX_COLS, LNTX_NCOLS, LnTxRecord, WalletRecord, WtxRecord};
use crate::{Store, StoreError, args};

/// Pay one of our own invoices from a wallet, entirely inside the ledger.
#[derive(Debug, Clone)]
pub struct InternalPayCmd {
    /// Owner of the paying wallet.
    pub account_id: AccountId,
    /// Paying wallet.
    pub payer: WalletId,
    /// Invoice hash.
    pub payment_hash: PaymentHash,
    /// Id of the payer's outgoing LnTx.
    pub out_lntx_id: LnTxId,
    /// Payer WTX id.
    pub payer_wtx_id: WtxId,
    /// Payee WTX id.
    pub payee_wtx_id: WtxId,
    /// Payer's passThru (JSON object text).
    pub payer_pass_thru: String,
    /// Unix seconds.
    pub now: i64,
    /// If set, the invoice's text must be exactly this (else [`InternalPayError::NotInternal`]):
    /// lets a caller that skipped verifying the invoice rely on it being the one we issued.
    pub expect_request: Option<String>,
    /// Largest amount the payer may send, if limited ([`InternalPayError::OverLimit`]).
    pub send_limit: Option<Msat>,
    /// The payer's WTX type (`ln_withdrawal`, or `ln_lnurl_pay_outbound` for LNURL-pay).
    pub payer_wtx_type: WtxType,
}

/// Result of an internal payment.
#[derive(Debug, Clone)]
pub struct InternalPaid {
    /// Payer's `ln_withdrawal`.
    pub payer_wtx: WtxRecord,
    /// Payee's `ln_deposit`.
    pub payee_wtx: WtxRecord,
}

/// Why an internal payment was refused.
#[derive(Debug, thiserror::Error)]
pub enum InternalPayError {
    /// Not one of our invoices: pay it over Lightning.
    #[error("not an internal invoice")]
    NotInternal,
    /// Already paid.
    #[error("invoice is already paid")]
    AlreadyPaid,
    /// Expired.
    #[error("invoice expired")]
    Expired,
    /// Unknown payer wallet.
    #[error("wallet not found")]
    WalletNotFound,
    /// Balance too low.
    #[error("insufficient balance")]
    InsufficientBalance(Msat),
    /// The invoice has no amount.
    #[error("Cannot process any amount invoices")]
    ZeroAmount,
    /// The amount is above the command's send limit.
    #[error("over the send limit")]
    OverLimit(Msat),
    /// The one-time LNURL-withdraw link to spend is already spent, expired or unknown.
    #[error("LNURL link is no longer valid")]
    LinkSpent,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// The refusals [`Store::pay_internal`] would make, read without writing. For a caller
    /// that must act on the node before paying (a cancel cannot be undone) and so should not
    /// act for a payment that would be refused anyway; `pay_internal` judges again.
    pub async fn check_internal(&self, c: &InternalPayCmd) -> Result<(), InternalPayError> {
        self.check_internal_claiming(c, None).await
    }

    /// [`Store::check_internal`], also checking that `claim` could spend its link now.
    pub async fn check_internal_claiming(
        &self,
        c: &InternalPayCmd,
        claim: Option<&LinkClaim>,
    ) -> Result<(), InternalPayError> {
        let mut conn = self.read_conn().await?;
        if let Some(l) = claim
            && !crate::lnurlw::claimable(&mut conn, l).await?
        {
            return Err(InternalPayError::LinkSpent);
        }
        internal_checks(&mut conn, c).await.map(|_| ())
    }

    /// Pays one of our own invoices inside one transaction: payer debited, payee credited,
    /// invoice marked paid. Cannot happen twice: the invoice is marked paid by an update that
    /// requires it open, the payer's outgoing row is unique per hash, and the debit is guarded.
    pub async fn pay_internal(&self, c: &InternalPayCmd) -> Result<InternalPaid, InternalPayError> {
        self.pay_internal_claiming(c, None).await
    }

    /// [`Store::pay_internal`] that first spends a one-time LNURL-withdraw link in the same
    /// transaction (see [`crate::lnurlw`]).
    pub async fn pay_internal_claiming(
        &self,
        c: &InternalPayCmd,
        claim: Option<&LinkClaim>,
    ) -> Result<InternalPaid, InternalPayError> {
        // The reads run inside the write transaction. On SQLite that keeps them on the
        // writer's warm page cache: a reader connection drops its whole cache whenever the
        // database changed, which under write load made every read a cold one (measured: more
        // CPU per payment, fewer payments per second than reading inside the writer).
        let mut tx = self.begin_write().await?;
        if let Some(l) = claim
            && !crate::lnurlw::claim_in(&mut tx, l).await?
        {
            return Err(InternalPayError::LinkSpent);
        }
        let checked = internal_checks(&mut tx, c).await?;
        let InternalChecked {
            inv,
            payer,
            payee: payee_read,
        } = checked;
        let payee = payee_read.id.clone();
        let hash = c.payment_hash.to_hex();
        let deposit_type = crate::lnurlp::deposit_type_in(&mut tx, inv.id.as_str()).await?;
        // The checks that count, made on the rows as this transaction locks them: the invoice
        // is still open (on Postgres a concurrent payer of the same invoice commits first, and
        // this update then finds it paid); no outgoing attempt of its hash is live or done (the
        // payer's outgoing row inserted below is unique per hash among those); the payer can
        // afford it (`post`'s guarded debit).
        if tx
            .exec(
                "UPDATE ln_txs SET settled = 1, settled_at = $1, updated_at = $1 \
                 WHERE id = $2 AND settled = 0",
                args![c.now, inv.id.as_str()],
            )
            .await?
            == 0
        {
            return Err(InternalPayError::AlreadyPaid);
        }
        let amount = inv.amount.as_i64();
        // Our invoices are issued in whole sats, so both sides move by the amount. Should one
        // carry msat, the payer pays it rounded up and the payee gets it rounded down; the
        // difference is the operator's, as for any payment.
        let debit = inv.amount.ceil_to_sat().map_err(StoreError::from)?.as_i64();
        let credit = inv.amount.floor_to_sat().as_i64();
        let preimage = inv.preimage.map(|p| p.to_hex());
        let entries = [
            NewWtx {
                id: &c.payer_wtx_id,
                wallet_id: &c.payer,
                account_id: c.account_id.as_str(),
                now: c.now,
                amount_msat: -debit,
                wtx_type: c.payer_wtx_type,
                user_label: &inv.memo,
                lntx_id: Some(c.out_lntx_id.as_str()),
                pass_thru: &c.payer_pass_thru,
            },
            NewWtx {
                id: &c.payee_wtx_id,
                wallet_id: &payee,
                account_id: inv.account_id.as_str(),
                now: c.now,
                amount_msat: credit,
                wtx_type: deposit_type,
                user_label: &inv.memo,
                lntx_id: Some(inv.id.as_str()),
                pass_thru: &inv.pass_thru,
            },
        ];
        let posted = post(
            &mut tx,
            "internal_payment",
            c.out_lntx_id.as_str(),
            c.now,
            &[
                leg(Account::Wallet(&c.payer), -debit),
                leg(Account::Wallet(&payee), credit),
                leg(Account::Sys(SYS_REVENUE), debit - credit),
            ],
            &entries,
        )
        .await
        .map_err(|e| match e {
            StoreError::Overdraft(held) => InternalPayError::InsufficientBalance(held),
            e => e.into(),
        })?;
        // The payer's record of the payment, after the wallets are locked: a reservation of the
        // same hash locks its wallet before it inserts its own outgoing row, so taking the
        // hash's unique index entry first here could deadlock with it.
        tx.exec(
            "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
             dest_pubkey, payment_request, payment_hash, memo, description_hash, payment_addr, \
             amount_msat, expiry_secs, expires_at, preimage, settled, settled_at, pass_thru, status, \
             wtx_type) \
             VALUES ($1, $2, $3, $4, $4, 'out', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $4, $16, 'succeeded', $17)",
            args![
                c.out_lntx_id.as_str(),
                c.account_id.as_str(),
                c.payer.as_str(),
                c.now,
                inv.node_id.as_str(),
                inv.dest_pubkey.as_str(),
                inv.payment_request.as_str(),
                hash.as_str(),
                inv.memo.as_str(),
                inv.description_hash.clone(),
                inv.payment_addr.clone(),
                amount,
                inv.expiry_secs,
                inv.expires_at,
                preimage,
                c.payer_pass_thru.as_str(),
                c.payer_wtx_type.code()
            ],
        )
        .await
        .map_err(|e| match e {
            StoreError::Constraint(_) => InternalPayError::AlreadyPaid,
            e => e.into(),
        })?;
        // The records to answer with, as this transaction leaves them (computed, not re-read):
        // the invoice now paid, the payment as inserted above, both wallets.
        let in_lntx = LnTxRecord {
            settled: true,
            settled_at: Some(c.now),
            ..inv.clone()
        };
        let out_lntx = LnTxRecord {
            id: c.out_lntx_id.clone(),
            account_id: c.account_id.clone(),
            wallet_id: Some(c.payer.clone()),
            created_at: c.now,
            direction: Direction::Outgoing,
            fee: Msat::ZERO,
            fee_limit: Msat::ZERO,
            is_keysend: false,
            custom_records: None,
            pass_thru: c.payer_pass_thru.clone(),
            status: Some(PaymentStatus::Succeeded),
            failure_reason: None,
            ..in_lntx.clone()
        };
        // Paying one's own invoice moves nothing and adds both entries to the one wallet.
        let payer_w = posted.wallet(&payer)?;
        let payee_w = posted.wallet(&payee_read)?;
        let payer_wtx = wtx_written(&entries[0], payer_w, Some(out_lntx));
        let payee_wtx = wtx_written(&entries[1], payee_w, Some(in_lntx));
        idempotency::mark(&mut tx, &format!("payment:{}", c.out_lntx_id)).await?;
        crate::crash::crash_point("during_internal");
        tx.commit().await?;
        Ok(InternalPaid {
            payer_wtx,
            payee_wtx,
        })
    }
}

/// What an internal payment read before writing, every refusal but the final ones made.
struct InternalChecked {
    inv: LnTxRecord,
    payer: WalletRecord,
    payee: WalletRecord,
}

/// The reads and refusals of an internal payment, in the order they are reported. The facts
/// judged here never change once written (the invoice's text, amount, expiry and wallet; the
/// wallets' owners), except three, each judged again on the locked rows: the invoice's
/// settlement (the payment's guarded invoice update), the hash's outgoing attempts (the unique
/// index the payer's outgoing row enters) and the payer's balance (`post`'s guarded debit). On
/// Postgres these reads take no lock, so a concurrent change may make them stale.
async fn internal_checks(
    conn: &mut Conn,
    c: &InternalPayCmd,
) -> Result<InternalChecked, InternalPayError> {
    let hash = c.payment_hash.to_hex();
    // The invoice, and whether an outgoing attempt of the same hash is live or done: an
    // external attempt may be under way (it will fail at the node, which knows the invoice is
    // ours); refuse rather than pay twice.
    let sql = format!(
        "SELECT {LNTX_COLS}, CASE WHEN EXISTS (SELECT 1 FROM ln_txs o \
         WHERE o.payment_hash = $1 AND o.direction = 'out' AND o.status IN ({})) \
         THEN 1 ELSE 0 END FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'in'",
        status_list(&LIVE_OR_DONE),
    );
    let Some(row) = conn.fetch_opt(&sql, args![hash.as_str()]).await? else {
        return Err(InternalPayError::NotInternal);
    };
    let inv = LnTxRecord::from_row(&row, 0)?;
    let attempted = row.flag(LNTX_NCOLS)?;
    let Some(payee) = inv.wallet_id.clone() else {
        return Err(InternalPayError::NotInternal);
    };
    if c.expect_request
        .as_ref()
        .is_some_and(|t| *t != inv.payment_request)
    {
        return Err(InternalPayError::NotInternal);
    }
    // The wallets are read before the invoice's state is judged, so that a wallet that is not
    // the caller's is reported as such whatever the invoice.
    let read = read_wallets(conn, &[&c.payer, &payee]).await?;
    let payer = match &read[0] {
        Some(w) if w.account_id == c.account_id => w.clone(),
        _ => return Err(InternalPayError::WalletNotFound),
    };
    let Some(payee) = read[1].clone() else {
        return Err(InternalPayError::NotInternal);
    };
    if inv.settled || inv.is_keysend {
        return Err(InternalPayError::AlreadyPaid);
    }
    if inv.expires_at.is_some_and(|e| c.now >= e) {
        return Err(InternalPayError::Expired);
    }
    if inv.amount.is_zero() {
        return Err(InternalPayError::ZeroAmount);
    }
    if let Some(max) = c.send_limit
        && inv.amount > max
    {
        return Err(InternalPayError::OverLimit(max));
    }
    if attempted {
        return Err(InternalPayError::AlreadyPaid);
    }
    if payer.balance < inv.amount.ceil_to_sat().map_err(StoreError::from)? {
        return Err(InternalPayError::InsufficientBalance(payer.balance));
    }
    Ok(InternalChecked { inv, payer, payee })
}
