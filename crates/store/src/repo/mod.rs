//! The store's operations, one file per aggregate. Each public method is one database
//! transaction; each file holds its aggregate's methods (in its own `impl Store`) and the
//! command, record and error types that belong to them. This file holds the reads and helpers
//! several aggregates share.

mod accounts;
mod cursors;
mod internal;
mod invoices;
mod jobs;
mod keys;
mod payments;
mod transfers;
mod wallets;

pub use accounts::AccountSummary;
pub use internal::{InternalPaid, InternalPayCmd, InternalPayError};
pub use invoices::{CreditOutcome, KeysendCredit, NewInvoiceRecord};
pub(crate) use invoices::{insert_invoice_in, invoice_record};
pub use keys::NewKey;
pub use payments::{
    ManualResolution, OperatorAction, PaymentSettled, PaymentStateError, ReserveCmd, ReserveError,
    SettleCmd,
};
pub use transfers::{TransferCmd, TransferDone, TransferError};
pub use wallets::NewWallet;

use satchel_domain::{LnTxId, PaymentStatus, WalletId, WtxId};

use crate::db::Conn;
use crate::ledger::NewWtx;
use crate::records::{
    LNTX_COLS, LnTxRecord, WALLET_COLS, WalletRecord, WtxRecord, WtxRow, wtx_select,
};
use crate::{StoreError, args};

fn status_list(s: &[PaymentStatus]) -> String {
    s.iter()
        .map(|s| format!("'{}'", s.code()))
        .collect::<Vec<_>>()
        .join(",")
}

const LIVE_OR_DONE: [PaymentStatus; 4] = [
    PaymentStatus::Reserved,
    PaymentStatus::Dispatched,
    PaymentStatus::Unknown,
    PaymentStatus::Succeeded,
];

async fn lntx_in(conn: &mut Conn, id: &str) -> Result<Option<LnTxRecord>, StoreError> {
    let sql = format!("SELECT {LNTX_COLS} FROM ln_txs l WHERE l.id = $1");
    match conn.fetch_opt(&sql, args![id]).await? {
        Some(r) => Ok(Some(LnTxRecord::from_row(&r, 0)?)),
        None => Ok(None),
    }
}

async fn wallet_in(conn: &mut Conn, id: &WalletId) -> Result<WalletRecord, StoreError> {
    let sql = format!("SELECT {WALLET_COLS} FROM wallets WHERE id = $1");
    let r = conn.fetch_one(&sql, args![id.as_str()]).await?;
    WalletRecord::from_row(&r, 0)
}

async fn wtx_in(conn: &mut Conn, id: &WtxId) -> Result<WtxRecord, StoreError> {
    let sql = format!("{} WHERE t.id = $1", wtx_select());
    let r = conn.fetch_one(&sql, args![id.as_str()]).await?;
    let row = WtxRow::from_row(&r)?;
    let wallet = wallet_in(conn, &row.wallet_id).await?;
    Ok(row.with_wallet(wallet))
}

/// The record of a WTX this transaction just inserted, built from what was inserted (no
/// re-read), with its wallet and Lightning transaction as they are now.
fn wtx_written(w: &NewWtx<'_>, wallet: WalletRecord, lntx: Option<LnTxRecord>) -> WtxRecord {
    WtxRecord {
        id: w.id.clone(),
        wallet,
        created_at: w.now,
        amount_msat: w.amount_msat,
        wtx_type: w.wtx_type,
        user_label: w.user_label.to_owned(),
        lntx,
        pass_thru: w.pass_thru.to_owned(),
    }
}

async fn wtxs_of_lntx(conn: &mut Conn, lntx: &LnTxId) -> Result<Vec<WtxRecord>, StoreError> {
    let sql = format!("{} WHERE t.lntx_id = $1 ORDER BY t.seq", wtx_select());
    let rows = conn.fetch_all(&sql, args![lntx.as_str()]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let row = WtxRow::from_row(&r)?;
        let wallet = wallet_in(conn, &row.wallet_id).await?;
        out.push(row.with_wallet(wallet));
    }
    Ok(out)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
