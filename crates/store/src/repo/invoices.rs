//! Incoming money: invoices we issue, and crediting what the node received for them or as a
//! keysend (money no wallet may claim is booked to `sys:unclaimed`).

use satchel_domain::{
    AccountId, LnTxId, Msat, NodeId, PaymentHash, Preimage, WalletId, WtxId, WtxType,
};

use super::wtx_in;
use crate::db::Conn;
use crate::idempotency;
use crate::ledger::{
    Account, NewWtx, SYS_LIGHTNING, SYS_REVENUE, SYS_UNCLAIMED, leg, lock_wallet, post,
};
use crate::records::{Direction, LNTX_COLS, LNTX_NCOLS, LnTxRecord, WtxRecord};
use crate::{Store, StoreError, args};

/// An invoice we issued, to record.
#[derive(Debug, Clone)]
pub struct NewInvoiceRecord {
    /// Id.
    pub id: LnTxId,
    /// Owner.
    pub account_id: AccountId,
    /// Receiving wallet.
    pub wallet_id: WalletId,
    /// Unix seconds.
    pub now: i64,
    /// Node.
    pub node_id: NodeId,
    /// Our pubkey (hex).
    pub dest_pubkey: String,
    /// BOLT11.
    pub payment_request: String,
    /// Hash.
    pub payment_hash: PaymentHash,
    /// Our preimage (revealed to an internal payer, shown once settled).
    pub preimage: Preimage,
    /// Memo.
    pub memo: String,
    /// Description hash (hex).
    pub description_hash: Option<String>,
    /// Payment secret (hex).
    pub payment_addr: Option<String>,
    /// Amount (zero for amountless).
    pub amount: Msat,
    /// Expiry seconds.
    pub expiry_secs: i64,
    /// Absolute expiry.
    pub expires_at: i64,
    /// passThru JSON object text.
    pub pass_thru: String,
}

/// What crediting an incoming payment did.
// Returned once per credit, never stored in bulk: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditOutcome {
    /// The wallet was credited by this call.
    Credited(WtxRecord),
    /// Already processed earlier (a replayed event): nothing changed.
    AlreadyCredited,
    /// The node received money no wallet may claim (unknown hash, or an invoice already settled
    /// internally); it was booked to `sys:unclaimed` so the ledger matches the node.
    Unclaimed,
}

/// A keysend that arrived, to credit.
#[derive(Debug, Clone)]
pub struct KeysendCredit {
    /// Id of the incoming LnTx to create.
    pub lntx_id: LnTxId,
    /// WTX id to create.
    pub wtx_id: WtxId,
    /// Target wallet, if routing found one.
    pub wallet_id: Option<WalletId>,
    /// Hash.
    pub payment_hash: PaymentHash,
    /// Preimage.
    pub preimage: Preimage,
    /// Amount.
    pub amount: Msat,
    /// Custom records as JSON object text.
    pub custom_records: String,
    /// Memo to show.
    pub memo: String,
    /// Node.
    pub node_id: NodeId,
    /// Our pubkey.
    pub dest_pubkey: String,
    /// Unix seconds.
    pub settled_at: i64,
}

impl Store {
    /// Records an invoice we issued.
    pub async fn insert_invoice(&self, inv: &NewInvoiceRecord) -> Result<LnTxRecord, StoreError> {
        // One statement: on Postgres it commits itself (no BEGIN/COMMIT round trips), unless
        // a keyed request's row must be written with it.
        let mut tx = if idempotency::claim_active() {
            self.begin_write().await?
        } else {
            self.begin_one_statement_write().await?
        };
        insert_invoice_in(&mut tx, inv).await?;
        idempotency::mark(&mut tx, &format!("invoice:{}", inv.id)).await?;
        tx.commit().await?;
        // The record as inserted (built, not re-read; the store tests compare it with a read).
        Ok(invoice_record(inv))
    }

    /// Our invoice with this payment hash, if any.
    pub async fn incoming_by_hash(
        &self,
        hash: &PaymentHash,
    ) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!(
            "SELECT {LNTX_COLS} FROM ln_txs l WHERE l.payment_hash = $1 AND l.direction = 'in'"
        );
        match c.fetch_opt(&sql, args![hash.to_hex()]).await? {
            Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// Books a node-side settlement of one of our invoices. Idempotent: replaying the same
    /// settlement changes nothing. If the invoice was already settled internally, the money the
    /// node received goes to `sys:unclaimed` (once).
    pub async fn credit_invoice(
        &self,
        hash: &PaymentHash,
        amount_received: Msat,
        settled_at: i64,
        wtx_id: &WtxId,
    ) -> Result<CreditOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT {LNTX_COLS}, l.node_settled, l.deposit_wtx_type FROM ln_txs l \
             WHERE l.payment_hash = $1 AND l.direction = 'in'{}",
            tx.dialect().for_update()
        );
        let received = amount_received.as_i64();
        let Some(row) = tx.fetch_opt(&sql, args![hash.to_hex()]).await? else {
            // Not ours at all. Book it so the ledger still equals what the node holds.
            let reference = format!("unknown:{}", hash.to_hex());
            // Nothing else is locked for an unknown hash: serialise replays on the first system
            // account this posts to, so the duplicate check below sees any replay that
            // committed first (Postgres; SQLite's write lock already serialises).
            let lock = format!(
                "SELECT balance_msat FROM system_accounts WHERE code = $1{}",
                tx.dialect().for_update()
            );
            tx.fetch_one(&lock, args![SYS_LIGHTNING]).await?;
            let dup = tx
                .fetch_opt(
                    "SELECT id FROM ledger_txns WHERE ref = $1",
                    args![reference.as_str()],
                )
                .await?;
            if dup.is_some() {
                return Ok(CreditOutcome::AlreadyCredited);
            }
            post(
                &mut tx,
                "unclaimed_receive",
                &reference,
                settled_at,
                &[
                    leg(Account::Sys(SYS_LIGHTNING), -received),
                    leg(Account::Sys(SYS_UNCLAIMED), received),
                ],
                &[],
            )
            .await?;
            tx.commit().await?;
            return Ok(CreditOutcome::Unclaimed);
        };
        let lntx = LnTxRecord::from_row(&row, 0)?;
        if row.flag(LNTX_NCOLS)? {
            return Ok(CreditOutcome::AlreadyCredited);
        }
        let deposit_type = crate::lnurlp::deposit_type(row.opt_i64(LNTX_NCOLS + 1)?)?;
        tx.exec(
            "UPDATE ln_txs SET node_settled = 1 WHERE id = $1",
            args![lntx.id.as_str()],
        )
        .await?;
        let wallet_id = match (&lntx.wallet_id, lntx.settled) {
            (Some(w), false) => w.clone(),
            _ => {
                // Settled internally already (or walletless): the node's money is nobody's.
                post(
                    &mut tx,
                    "unclaimed_receive",
                    lntx.id.as_str(),
                    settled_at,
                    &[
                        leg(Account::Sys(SYS_LIGHTNING), -received),
                        leg(Account::Sys(SYS_UNCLAIMED), received),
                    ],
                    &[],
                )
                .await?;
                tx.commit().await?;
                return Ok(CreditOutcome::Unclaimed);
            }
        };
        tx.exec(
            "UPDATE ln_txs SET settled = 1, settled_at = $1, amount_msat = $2, updated_at = $1 WHERE id = $3",
            args![settled_at, received, lntx.id.as_str()],
        )
        .await?;
        // The wallet is credited whole sats (an amountless invoice or an overpayment may carry
        // msat); the sub-sat rest is the operator's. The lnTx keeps what the node received.
        let credited = amount_received.floor_to_sat().as_i64();
        post(
            &mut tx,
            "ln_deposit",
            lntx.id.as_str(),
            settled_at,
            &[
                leg(Account::Sys(SYS_LIGHTNING), -received),
                leg(Account::Wallet(&wallet_id), credited),
                leg(Account::Sys(SYS_REVENUE), received - credited),
            ],
            &[NewWtx {
                id: wtx_id,
                wallet_id: &wallet_id,
                account_id: lntx.account_id.as_str(),
                now: settled_at,
                amount_msat: credited,
                wtx_type: deposit_type,
                user_label: &lntx.memo,
                lntx_id: Some(lntx.id.as_str()),
                pass_thru: &lntx.pass_thru,
            }],
        )
        .await?;
        let wtx = wtx_in(&mut tx, wtx_id).await?;
        crate::crash::crash_point("during_credit");
        tx.commit().await?;
        Ok(CreditOutcome::Credited(wtx))
    }

    /// Books a received keysend. Idempotent per payment hash.
    pub async fn credit_keysend(&self, k: &KeysendCredit) -> Result<CreditOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists = tx
            .fetch_opt(
                "SELECT id FROM ln_txs WHERE payment_hash = $1 AND direction = 'in'",
                args![k.payment_hash.to_hex()],
            )
            .await?;
        if exists.is_some() {
            return Ok(CreditOutcome::AlreadyCredited);
        }
        // The wallet must exist; otherwise the money is unclaimed.
        let (wallet, account) = match &k.wallet_id {
            Some(w) => match lock_wallet(&mut tx, w).await? {
                Some(rec) => (Some(rec.id), rec.account_id.as_str().to_owned()),
                None => (None, String::new()),
            },
            None => (None, String::new()),
        };
        let received = k.amount.as_i64();
        let pass_thru = match &wallet {
            Some(w) => format!(
                "{{\"wallet_id\":{},\"custom_records\":{}}}",
                json_str(w.as_str()),
                k.custom_records
            ),
            None => "{}".to_owned(),
        };
        let inserted = tx.exec(
            "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
             dest_pubkey, payment_request, payment_hash, memo, amount_msat, preimage, settled, \
             settled_at, node_settled, is_keysend, custom_records, pass_thru) \
             VALUES ($1, $2, $3, $4, $4, 'in', $5, $6, 'keysend/amp', $7, $8, $9, $10, 1, $4, 1, 1, $11, $12)",
            args![
                k.lntx_id.as_str(),
                account.as_str(),
                wallet.as_ref().map(WalletId::as_str),
                k.settled_at,
                k.node_id.as_str(),
                k.dest_pubkey.as_str(),
                k.payment_hash.to_hex(),
                k.memo.as_str(),
                received,
                k.preimage.to_hex(),
                k.custom_records.as_str(),
                pass_thru.as_str()
            ],
        )
        .await;
        match inserted {
            Ok(_) => {}
            // Postgres: a concurrent replay of the same keysend committed first.
            Err(StoreError::Constraint(_)) => return Ok(CreditOutcome::AlreadyCredited),
            Err(e) => return Err(e),
        }
        let Some(wallet_id) = wallet else {
            post(
                &mut tx,
                "unclaimed_receive",
                k.lntx_id.as_str(),
                k.settled_at,
                &[
                    leg(Account::Sys(SYS_LIGHTNING), -received),
                    leg(Account::Sys(SYS_UNCLAIMED), received),
                ],
                &[],
            )
            .await?;
            tx.commit().await?;
            return Ok(CreditOutcome::Unclaimed);
        };
        // Whole sats to the wallet, the sub-sat rest to the operator (as for invoices).
        let credited = k.amount.floor_to_sat().as_i64();
        post(
            &mut tx,
            "ln_deposit",
            k.lntx_id.as_str(),
            k.settled_at,
            &[
                leg(Account::Sys(SYS_LIGHTNING), -received),
                leg(Account::Wallet(&wallet_id), credited),
                leg(Account::Sys(SYS_REVENUE), received - credited),
            ],
            &[NewWtx {
                id: &k.wtx_id,
                wallet_id: &wallet_id,
                account_id: &account,
                now: k.settled_at,
                amount_msat: credited,
                wtx_type: WtxType::LnDeposit,
                user_label: &k.memo,
                lntx_id: Some(k.lntx_id.as_str()),
                pass_thru: &pass_thru,
            }],
        )
        .await?;
        let wtx = wtx_in(&mut tx, &k.wtx_id).await?;
        crate::crash::crash_point("during_keysend_credit");
        tx.commit().await?;
        Ok(CreditOutcome::Credited(wtx))
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Inserts the row of an invoice we issued (inside the caller's transaction).
pub(crate) async fn insert_invoice_in(
    tx: &mut Conn,
    inv: &NewInvoiceRecord,
) -> Result<(), StoreError> {
    tx.exec(
            "INSERT INTO ln_txs (id, account_id, wallet_id, created_at, updated_at, direction, node_id, \
             dest_pubkey, payment_request, payment_hash, memo, description_hash, payment_addr, \
             amount_msat, expiry_secs, expires_at, preimage, pass_thru) \
             VALUES ($1, $2, $3, $4, $4, 'in', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            args![
                inv.id.as_str(),
                inv.account_id.as_str(),
                inv.wallet_id.as_str(),
                inv.now,
                inv.node_id.as_str(),
                inv.dest_pubkey.as_str(),
                inv.payment_request.as_str(),
                inv.payment_hash.to_hex(),
                inv.memo.as_str(),
                inv.description_hash.clone(),
                inv.payment_addr.clone(),
                inv.amount.as_i64(),
                inv.expiry_secs,
                inv.expires_at,
                inv.preimage.to_hex(),
                inv.pass_thru.as_str()
            ],
        )
        .await?;
    Ok(())
}

/// The record [`insert_invoice_in`] wrote.
pub(crate) fn invoice_record(inv: &NewInvoiceRecord) -> LnTxRecord {
    LnTxRecord {
        id: inv.id.clone(),
        account_id: inv.account_id.clone(),
        wallet_id: Some(inv.wallet_id.clone()),
        created_at: inv.now,
        direction: Direction::Incoming,
        node_id: inv.node_id.clone(),
        dest_pubkey: inv.dest_pubkey.clone(),
        payment_request: inv.payment_request.clone(),
        payment_hash: inv.payment_hash,
        memo: inv.memo.clone(),
        description_hash: inv.description_hash.clone(),
        payment_addr: inv.payment_addr.clone(),
        amount: inv.amount,
        fee: Msat::ZERO,
        fee_limit: Msat::ZERO,
        expiry_secs: Some(inv.expiry_secs),
        expires_at: Some(inv.expires_at),
        preimage: Some(inv.preimage),
        settled: false,
        settled_at: None,
        is_keysend: false,
        custom_records: None,
        pass_thru: inv.pass_thru.clone(),
        status: None,
        failure_reason: None,
    }
}
