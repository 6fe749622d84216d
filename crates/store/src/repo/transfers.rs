//! Transfers between two wallets of one account, entirely inside the ledger.

use satchel_domain::{AccountId, Msat, WalletId, WtxId, WtxType};

use super::wtx_written;
use crate::idempotency;
use crate::ledger::{Account, NewWtx, leg, post, read_wallets};
use crate::records::WtxRecord;
use crate::{Store, StoreError};

/// An internal transfer.
#[derive(Debug, Clone)]
pub struct TransferCmd {
    /// Account doing it (both wallets must be its own).
    pub account_id: AccountId,
    /// Source.
    pub from: WalletId,
    /// Destination.
    pub to: WalletId,
    /// Amount (> 0).
    pub amount: Msat,
    /// Label of both WTXs.
    pub memo: String,
    /// passThru of both WTXs.
    pub pass_thru: String,
    /// Id of the incoming WTX.
    pub wtx_in_id: WtxId,
    /// Id of the outgoing WTX.
    pub wtx_out_id: WtxId,
    /// Unix seconds.
    pub now: i64,
}

/// Why a transfer was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Unknown or foreign source wallet.
    #[error("Invalid source wallet id")]
    SourceNotFound,
    /// Unknown or foreign destination wallet.
    #[error("Invalid dest wallet id")]
    DestNotFound,
    /// Same wallet.
    #[error("Source and destination wallets cannot be the same!")]
    SameWallet,
    /// Balance too low.
    #[error("Insufficient balance in source wallet")]
    InsufficientBalance,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Both sides of a completed transfer.
#[derive(Debug, Clone)]
pub struct TransferDone {
    /// Credit.
    pub wtx_in: WtxRecord,
    /// Debit.
    pub wtx_out: WtxRecord,
}

impl Store {
    /// Moves money between two wallets of one account.
    pub async fn transfer(&self, t: &TransferCmd) -> Result<TransferDone, TransferError> {
        if t.from == t.to {
            return Err(TransferError::SameWallet);
        }
        let mut tx = self.begin_write().await?;
        let read = read_wallets(&mut tx, &[&t.from, &t.to]).await?;
        let src = match &read[0] {
            Some(w) if w.account_id == t.account_id => w.clone(),
            _ => return Err(TransferError::SourceNotFound),
        };
        let dst = match &read[1] {
            Some(w) if w.account_id == t.account_id => w.clone(),
            _ => return Err(TransferError::DestNotFound),
        };
        // An early refusal only: the check that matters is `post`'s guarded debit, made on the
        // locked row.
        if src.balance < t.amount {
            return Err(TransferError::InsufficientBalance);
        }
        let amount = t.amount.as_i64();
        let new_wtx = |id, wallet_id, amount_msat, wtx_type| NewWtx {
            id,
            wallet_id,
            account_id: t.account_id.as_str(),
            now: t.now,
            amount_msat,
            wtx_type,
            user_label: &t.memo,
            lntx_id: None,
            pass_thru: &t.pass_thru,
        };
        let entries = [
            new_wtx(&t.wtx_out_id, &t.from, -amount, WtxType::LnTransferOut),
            new_wtx(&t.wtx_in_id, &t.to, amount, WtxType::LnTransferIn),
        ];
        let posted = post(
            &mut tx,
            "transfer",
            t.wtx_out_id.as_str(),
            t.now,
            &[
                leg(Account::Wallet(&t.from), -amount),
                leg(Account::Wallet(&t.to), amount),
            ],
            &entries,
        )
        .await
        .map_err(|e| match e {
            StoreError::Overdraft(_) => TransferError::InsufficientBalance,
            e => e.into(),
        })?;
        let from = posted.wallet(&src)?;
        let to = posted.wallet(&dst)?;
        idempotency::mark(
            &mut tx,
            &format!("transfer:{}:{}", t.wtx_out_id, t.wtx_in_id),
        )
        .await?;
        tx.commit().await?;
        Ok(TransferDone {
            wtx_in: wtx_written(&entries[1], to, None),
            wtx_out: wtx_written(&entries[0], from, None),
        })
    }
}
