//! Wallets and their history: creating (with keys and the default LNURL-pay link) and
//! importing a wallet, reading and listing wallets, and the reads of wallet transactions
//! (WTXs) and Lightning transactions by id.

use satchel_domain::{AccountId, EventName, LnTxId, Msat, NodeId, WalletId, WtxId, WtxType};

use super::keys::{NewKey, insert_key};
use super::{lntx_in, to_u64, wallet_in, wtx_in, wtxs_of_lntx};
use crate::idempotency;
use crate::ledger::{Account, NewWtx, SYS_OPENING, leg, post};
use crate::outbox::{Emit, emit};
use crate::records::{LnTxRecord, WALLET_COLS, WalletRecord, WtxRecord, WtxRow, wtx_select};
use crate::{Store, StoreError, args};

/// A wallet to create.
#[derive(Debug, Clone)]
pub struct NewWallet {
    /// Id.
    pub id: WalletId,
    /// Owner.
    pub account_id: AccountId,
    /// Label.
    pub user_label: String,
    /// Node.
    pub node_id: NodeId,
    /// Unix seconds.
    pub now: i64,
    /// Its access keys.
    pub keys: Vec<NewKey>,
}

impl Store {
    /// Creates a wallet with its keys.
    pub async fn create_wallet(&self, w: &NewWallet) -> Result<WalletRecord, StoreError> {
        self.create_wallet_with_lnurlp(w, None).await
    }

    /// [`Store::create_wallet`] that also stores the wallet's default LNURL-pay link, in the
    /// same transaction (a wallet is never seen without the default link it was made with).
    pub async fn create_wallet_with_lnurlp(
        &self,
        w: &NewWallet,
        default_link: Option<&crate::lnurlp::LnurlpLink>,
    ) -> Result<WalletRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "INSERT INTO wallets (id, account_id, user_label, created_at, updated_at, balance_msat, \
             wtx_count, status, node_id) VALUES ($1, $2, $3, $4, $4, 0, 0, 'active', $5)",
            args![w.id.as_str(), w.account_id.as_str(), w.user_label.as_str(), w.now, w.node_id.as_str()],
        )
        .await?;
        for k in &w.keys {
            insert_key(&mut tx, &w.account_id, Some(&w.id), k, w.now).await?;
        }
        if let Some(link) = default_link {
            crate::lnurlp::insert_link_in(&mut tx, link).await?;
        }
        emit(
            &mut tx,
            Emit {
                name: EventName::WalletCreated,
                account_id: w.account_id.as_str(),
                wallet_id: &w.id,
                wtx_id: None,
                lntx_id: None,
                now: w.now,
                balance_msat: None,
            },
        )
        .await?;
        let rec = wallet_in(&mut tx, &w.id).await?;
        idempotency::mark(&mut tx, &format!("wallet:{}", w.id)).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Imports a wallet from another system under its original id (e.g. a legacy LNPay `w_…`
    /// id) with its keys, and books its opening balance against the `sys:opening` equity account
    /// as a `balance_roll_up` WTX, so history and ledger agree from the first day.
    pub async fn import_wallet(
        &self,
        w: &NewWallet,
        opening: Msat,
        wtx_id: &WtxId,
    ) -> Result<WalletRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "INSERT INTO wallets (id, account_id, user_label, created_at, updated_at, balance_msat, \
             wtx_count, status, node_id) VALUES ($1, $2, $3, $4, $4, 0, 0, 'active', $5)",
            args![
                w.id.as_str(),
                w.account_id.as_str(),
                w.user_label.as_str(),
                w.now,
                w.node_id.as_str()
            ],
        )
        .await?;
        for k in &w.keys {
            insert_key(&mut tx, &w.account_id, Some(&w.id), k, w.now).await?;
        }
        if !opening.is_zero() {
            let amount = opening.as_i64();
            post(
                &mut tx,
                "import",
                w.id.as_str(),
                w.now,
                &[
                    leg(Account::Sys(SYS_OPENING), -amount),
                    leg(Account::Wallet(&w.id), amount),
                ],
                &[NewWtx {
                    id: wtx_id,
                    wallet_id: &w.id,
                    account_id: w.account_id.as_str(),
                    now: w.now,
                    amount_msat: amount,
                    wtx_type: WtxType::BalanceRollUp,
                    user_label: "Imported balance",
                    lntx_id: None,
                    pass_thru: "{}",
                }],
            )
            .await?;
        }
        let rec = wallet_in(&mut tx, &w.id).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// A wallet by id.
    pub async fn wallet(&self, id: &WalletId) -> Result<Option<WalletRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let sql = format!("SELECT {WALLET_COLS} FROM wallets WHERE id = $1");
        match c.fetch_opt(&sql, args![id.as_str()]).await? {
            Some(r) => Ok(Some(WalletRecord::from_row(&r, 0)?)),
            None => Ok(None),
        }
    }

    /// A page of an account's wallets, newest first, and the total count.
    pub async fn list_wallets(
        &self,
        account: &AccountId,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<WalletRecord>, u64), StoreError> {
        let mut tx = self.begin_read().await?;
        let total = tx
            .fetch_one(
                "SELECT COUNT(*) FROM wallets WHERE account_id = $1",
                args![account.as_str()],
            )
            .await?
            .i64(0)?;
        let sql = format!(
            "SELECT {WALLET_COLS} FROM wallets WHERE account_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let rows = tx
            .fetch_all(&sql, args![account.as_str(), lim(limit), lim(offset)])
            .await?;
        let list = rows
            .iter()
            .map(|r| WalletRecord::from_row(r, 0))
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok((list, to_u64(total)))
    }

    /// A page of wallet transactions, newest first, with the total count: of one wallet, or of
    /// the whole account.
    pub async fn list_wtxs(
        &self,
        account: &AccountId,
        wallet: Option<&WalletId>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<WtxRecord>, u64), StoreError> {
        let mut tx = self.begin_read().await?;
        let (total, rows) = match wallet {
            Some(w) => {
                let Some(r) = tx
                    .fetch_opt(
                        "SELECT wtx_count FROM wallets WHERE id = $1 AND account_id = $2",
                        args![w.as_str(), account.as_str()],
                    )
                    .await?
                else {
                    return Ok((Vec::new(), 0));
                };
                let sql = format!(
                    "{} WHERE t.wallet_id = $1 ORDER BY t.seq DESC LIMIT $2 OFFSET $3",
                    wtx_select()
                );
                (
                    r.i64(0)?,
                    tx.fetch_all(&sql, args![w.as_str(), lim(limit), lim(offset)])
                        .await?,
                )
            }
            None => {
                let total = tx
                    .fetch_one(
                        "SELECT COUNT(*) FROM wtxs WHERE account_id = $1",
                        args![account.as_str()],
                    )
                    .await?
                    .i64(0)?;
                let sql = format!(
                    "{} WHERE t.account_id = $1 ORDER BY t.seq DESC LIMIT $2 OFFSET $3",
                    wtx_select()
                );
                (
                    total,
                    tx.fetch_all(&sql, args![account.as_str(), lim(limit), lim(offset)])
                        .await?,
                )
            }
        };
        let mut wallets: Vec<WalletRecord> = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let row = WtxRow::from_row(&r)?;
            let wallet = match wallets.iter().find(|w| w.id == row.wallet_id) {
                Some(w) => w.clone(),
                None => {
                    let w = wallet_in(&mut tx, &row.wallet_id).await?;
                    wallets.push(w.clone());
                    w
                }
            };
            out.push(row.with_wallet(wallet));
        }
        tx.commit().await?;
        Ok((out, to_u64(total)))
    }

    /// A Lightning transaction by id.
    pub async fn lntx(&self, id: &LnTxId) -> Result<Option<LnTxRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        lntx_in(&mut c, id.as_str()).await
    }

    /// A wallet transaction by id.
    pub async fn wtx(&self, id: &WtxId) -> Result<Option<WtxRecord>, StoreError> {
        let mut tx = self.begin_read().await?;
        let r = match wtx_in(&mut tx, id).await {
            Ok(w) => Some(w),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        Ok(r)
    }

    /// The WTXs booked for a Lightning transaction (withdrawal first, then its fee).
    pub async fn wtxs_of_lntx(&self, id: &LnTxId) -> Result<Vec<WtxRecord>, StoreError> {
        let mut tx = self.begin_read().await?;
        let r = wtxs_of_lntx(&mut tx, id).await?;
        tx.commit().await?;
        Ok(r)
    }
}

fn lim(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
