//! The double-entry core: balanced postings and the stored balances they move.
//!
//! Only this module writes `postings`, `wallets.balance_msat` and `system_accounts.balance_msat`,
//! and always together, inside the caller's write transaction.

use std::collections::BTreeMap;

use satchel_domain::{EventName, LnTxId, WalletId, WtxId, WtxType};

use crate::outbox::{Emit, WebhookRecord, active_hooks, emit_to};

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

/// Reads and locks several wallets in one statement, in id order (Postgres locks the rows as
/// the sorted scan returns them), so two transactions locking the same pair in opposite roles
/// (A→B and B→A) cannot deadlock. Answers in the order asked; a repeated id gets its record
/// again.
pub(crate) async fn lock_wallets(
    conn: &mut Conn,
    ids: &[&WalletId],
) -> Result<Vec<Option<WalletRecord>>, StoreError> {
    let mut sql = format!("SELECT {WALLET_COLS} FROM wallets WHERE id IN (");
    for i in 1..=ids.len() {
        if i > 1 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${i}"));
    }
    sql.push_str(") ORDER BY id");
    sql.push_str(conn.dialect().for_update());
    let values = ids.iter().map(|w| w.as_str().into()).collect();
    let found: Vec<WalletRecord> = conn
        .fetch_all(&sql, values)
        .await?
        .iter()
        .map(|r| WalletRecord::from_row(r, 0))
        .collect::<Result<_, _>>()?;
    Ok(ids
        .iter()
        .map(|id| found.iter().find(|w| &w.id == *id).cloned())
        .collect())
}

/// Appends one balanced ledger transaction, moves the stored balances with it and records the
/// user-visible entries (`entries`) it produces, with their events. Refuses (as `Corrupt`, a
/// programming error) any set of legs that does not sum to zero.
///
/// Each touched account is updated once: its legs are summed, and a wallet's `wtx_count` moves
/// in the same `UPDATE` as its balance, by the number of entries in that wallet.
pub(crate) async fn post(
    conn: &mut Conn,
    kind: &str,
    reference: &str,
    now: i64,
    legs: &[Posting<'_>],
    entries: &[NewWtx<'_>],
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
    let mut touched: BTreeMap<(bool, &str), Touch> = BTreeMap::new();
    let mut postings: Vec<&Posting<'_>> = Vec::with_capacity(legs.len());
    for l in legs.iter().filter(|l| l.amount_msat != 0) {
        let t = touched
            .entry((matches!(l.account, Account::Sys(_)), l.account.code()))
            .or_default();
        // Per account, a partial sum can overflow even when the whole sums to zero.
        t.delta_msat = t
            .delta_msat
            .checked_add(l.amount_msat)
            .ok_or_else(|| StoreError::Corrupt("posting overflow".into()))?;
        postings.push(l);
    }
    for e in entries {
        touched
            .entry((false, e.wallet_id.as_str()))
            .or_default()
            .entries += 1;
    }
    postings.sort_by_key(|p| (matches!(p.account, Account::Sys(_)), p.account.code()));
    // All legs in one statement.
    if !postings.is_empty() {
        let mut sql = String::from("INSERT INTO postings (txn_id, account, amount_msat) VALUES ");
        let mut values = args![txn_id];
        for (i, l) in postings.iter().enumerate() {
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
    for ((sys, code), t) in &touched {
        let n = if *sys {
            conn.exec(
                "UPDATE system_accounts SET balance_msat = balance_msat + $1 WHERE code = $2",
                args![t.delta_msat, *code],
            )
            .await?
        } else {
            conn.exec(
                "UPDATE wallets SET balance_msat = balance_msat + $1, wtx_count = wtx_count + $2, \
                 updated_at = $3 WHERE id = $4",
                args![t.delta_msat, t.entries, now, *code],
            )
            .await?
        };
        if n != 1 {
            return Err(StoreError::Corrupt(format!("no ledger account {code}")));
        }
    }
    insert_wtxs(conn, entries).await
}

/// What one ledger transaction does to one account.
#[derive(Default)]
struct Touch {
    delta_msat: i64,
    entries: i64,
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

/// Inserts user-visible wallet transactions (in order, one statement) and their events. Only
/// [`post`] calls this, after counting them in their wallets.
async fn insert_wtxs(conn: &mut Conn, entries: &[NewWtx<'_>]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO wtxs (id, wallet_id, account_id, created_at, amount_msat, wtx_type, \
         user_label, lntx_id, pass_thru) VALUES ",
    );
    let mut values = Vec::with_capacity(entries.len() * 9);
    for (i, w) in entries.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let n = values.len();
        sql.push('(');
        for c in 1..=9 {
            if c > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", n + c));
        }
        sql.push(')');
        values.extend(args![
            w.id.as_str(),
            w.wallet_id.as_str(),
            w.account_id,
            w.now,
            w.amount_msat,
            w.wtx_type.code(),
            w.user_label,
            w.lntx_id,
            w.pass_thru
        ]);
    }
    conn.exec(&sql, values).await?;
    // Every user-visible entry is also an event, in this same transaction (the outbox). The
    // subscriptions of an account are read once per ledger transaction.
    let mut hooks: Vec<(&str, Vec<WebhookRecord>)> = Vec::new();
    for w in entries {
        let event = match w.wtx_type {
            WtxType::LnDeposit => EventName::WalletReceive,
            WtxType::LnWithdrawal => EventName::WalletSend,
            WtxType::LnTransferIn => EventName::WalletTransferIn,
            WtxType::LnTransferOut => EventName::WalletTransferOut,
            WtxType::NetworkFee => EventName::NetworkFeeIncurred,
            WtxType::BalanceRollUp => continue,
        };
        let at = match hooks.iter().position(|(a, _)| *a == w.account_id) {
            Some(i) => i,
            None => {
                hooks.push((w.account_id, active_hooks(conn, w.account_id).await?));
                hooks.len() - 1
            }
        };
        let lntx = w.lntx_id.map(|l| LnTxId::from_db(l.to_owned()));
        emit_to(
            conn,
            &hooks[at].1,
            Emit {
                name: event,
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
