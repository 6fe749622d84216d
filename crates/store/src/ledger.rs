//! The double-entry core: balanced postings and the stored balances they move.
//!
//! Only this module writes `postings`, `wallets.balance_msat` and `system_accounts.balance_msat`,
//! and always together, inside the caller's write transaction.

use satchel_domain::{EventName, LnTxId, WalletId, WtxId, WtxType};

use crate::outbox::{Emit, emit};

use crate::db::Conn;
use crate::records::{WALLET_COLS, WalletRecord};
use crate::{StoreError, args};

/// System account: node holdings on behalf of users.
pub(crate) const SYS_LIGHTNING: &str = "sys:lightning";
/// System account: reserved outgoing payments.
pub(crate) const SYS_IN_FLIGHT: &str = "sys:in_flight";
/// System account: received money that belongs to no wallet.
pub(crate) const SYS_UNCLAIMED: &str = "sys:unclaimed";
/// System account (equity): balances imported from another system.
pub(crate) const SYS_OPENING: &str = "sys:opening";

/// A ledger account.
#[derive(Debug, Clone)]
pub(crate) enum Account<'a> {
    Wallet(&'a WalletId),
    Sys(&'static str),
}

impl Account<'_> {
    fn code(&self) -> &str {
        match self {
            Account::Wallet(w) => w.as_str(),
            Account::Sys(s) => s,
        }
    }
}

/// One leg of a ledger transaction. Positive credits the account.
#[derive(Debug, Clone)]
pub(crate) struct Posting<'a> {
    pub account: Account<'a>,
    pub amount_msat: i64,
}

pub(crate) fn leg(account: Account<'_>, amount_msat: i64) -> Posting<'_> {
    Posting {
        account,
        amount_msat,
    }
}

/// Reads and locks a wallet row for the rest of the transaction.
pub(crate) async fn lock_wallet(
    conn: &mut Conn,
    id: &WalletId,
) -> Result<Option<WalletRecord>, StoreError> {
    let sql = format!(
        "SELECT {WALLET_COLS} FROM wallets WHERE id = $1{}",
        conn.dialect().for_update()
    );
    match conn.fetch_opt(&sql, args![id.as_str()]).await? {
        Some(r) => Ok(Some(WalletRecord::from_row(&r, 0)?)),
        None => Ok(None),
    }
}

/// Locks several wallets in id order, so two transactions locking the same pair in opposite
/// roles (A→B and B→A) cannot deadlock.
pub(crate) async fn lock_wallets(
    conn: &mut Conn,
    ids: &[&WalletId],
) -> Result<Vec<Option<WalletRecord>>, StoreError> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|a, b| ids[*a].cmp(ids[*b]));
    let mut out: Vec<Option<WalletRecord>> = vec![None; ids.len()];
    for i in order {
        out[i] = lock_wallet(conn, ids[i]).await?;
    }
    Ok(out)
}

/// Appends one balanced ledger transaction and moves the stored balances with it.
/// Refuses (as `Corrupt`, a programming error) any set of legs that does not sum to zero.
pub(crate) async fn post(
    conn: &mut Conn,
    kind: &str,
    reference: &str,
    now: i64,
    legs: &[Posting<'_>],
) -> Result<(), StoreError> {
    let mut sum: i64 = 0;
    for l in legs {
        sum = sum
            .checked_add(l.amount_msat)
            .ok_or_else(|| StoreError::Corrupt("posting overflow".into()))?;
    }
    if sum != 0 {
        return Err(StoreError::Corrupt(format!(
            "unbalanced {kind} transaction: sum {sum}"
        )));
    }
    let row = conn
        .fetch_one(
            "INSERT INTO ledger_txns (kind, ref, created_at) VALUES ($1, $2, $3) RETURNING id",
            args![kind, reference, now],
        )
        .await?;
    let txn_id = row.i64(0)?;
    // Balances are updated (row-locked, on Postgres) in one global order: wallets by id, then
    // system accounts by code. Every operation locks its payment/invoice row and its wallets
    // before calling this, so no two transactions can wait on each other in a cycle (a settle
    // taking `sys:in_flight` then a wallet while a reserve holds the wallet and wants
    // `sys:in_flight` would deadlock).
    let mut ordered: Vec<&Posting<'_>> = legs.iter().filter(|l| l.amount_msat != 0).collect();
    ordered.sort_by(|a, b| {
        let key = |p: &Posting<'_>| {
            (
                matches!(p.account, Account::Sys(_)),
                p.account.code().to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    // All legs in one statement.
    if !ordered.is_empty() {
        let mut sql = String::from("INSERT INTO postings (txn_id, account, amount_msat) VALUES ");
        let mut values = args![txn_id];
        for (i, l) in ordered.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let n = values.len();
            sql.push_str(&format!("($1, ${}, ${})", n + 1, n + 2));
            values.push(l.account.code().into());
            values.push(l.amount_msat.into());
        }
        conn.exec(&sql, values).await?;
    }
    for l in ordered {
        let n = match &l.account {
            Account::Wallet(w) => {
                conn.exec(
                    "UPDATE wallets SET balance_msat = balance_msat + $1, updated_at = $2 WHERE id = $3",
                    args![l.amount_msat, now, w.as_str()],
                )
                .await?
            }
            Account::Sys(code) => {
                conn.exec(
                    "UPDATE system_accounts SET balance_msat = balance_msat + $1 WHERE code = $2",
                    args![l.amount_msat, *code],
                )
                .await?
            }
        };
        if n != 1 {
            return Err(StoreError::Corrupt(format!(
                "no ledger account {}",
                l.account.code()
            )));
        }
    }
    Ok(())
}

/// A wallet transaction to insert.
pub(crate) struct NewWtx<'a> {
    pub id: &'a WtxId,
    pub wallet_id: &'a WalletId,
    pub account_id: &'a str,
    pub now: i64,
    pub amount_msat: i64,
    pub wtx_type: WtxType,
    pub user_label: &'a str,
    pub lntx_id: Option<&'a str>,
    pub pass_thru: &'a str,
}

/// Inserts a user-visible wallet transaction and bumps the wallet's counter.
pub(crate) async fn insert_wtx(conn: &mut Conn, w: &NewWtx<'_>) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO wtxs (id, wallet_id, account_id, created_at, amount_msat, wtx_type, user_label, \
         lntx_id, pass_thru) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        args![
            w.id.as_str(),
            w.wallet_id.as_str(),
            w.account_id,
            w.now,
            w.amount_msat,
            w.wtx_type.code(),
            w.user_label,
            w.lntx_id,
            w.pass_thru
        ],
    )
    .await?;
    conn.exec(
        "UPDATE wallets SET wtx_count = wtx_count + 1 WHERE id = $1",
        args![w.wallet_id.as_str()],
    )
    .await?;
    // Every user-visible entry is also an event, in this same transaction (the outbox).
    let event = match w.wtx_type {
        WtxType::LnDeposit => Some(EventName::WalletReceive),
        WtxType::LnWithdrawal => Some(EventName::WalletSend),
        WtxType::LnTransferIn => Some(EventName::WalletTransferIn),
        WtxType::LnTransferOut => Some(EventName::WalletTransferOut),
        WtxType::NetworkFee => Some(EventName::NetworkFeeIncurred),
        WtxType::BalanceRollUp => None,
    };
    if let Some(name) = event {
        let lntx = w.lntx_id.map(|l| LnTxId::from_db(l.to_owned()));
        emit(
            conn,
            Emit {
                name,
                account_id: w.account_id,
                wallet_id: w.wallet_id,
                wtx_id: Some(w.id),
                lntx_id: lntx.as_ref(),
                now: w.now,
            },
        )
        .await?;
    }
    Ok(())
}
