//! The double-entry core: balanced postings and the stored balances they move.
//!
//! Only this module writes `postings`, `wallets.balance_msat` and `system_accounts.balance_msat`,
//! and always together, inside the caller's write transaction.

use std::collections::BTreeMap;

use satchel_domain::{EventName, LnTxId, Msat, WalletId, WtxId, WtxType};

use crate::outbox::{Emit, WebhookRecord, active_hooks, emit_all};

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
/// System account: the operator's revenue from rounding. Wallets move only in whole sats; the
/// sub-sat difference between what a wallet is charged (rounded up) or credited (rounded down)
/// and what the node actually paid or received lands here.
pub(crate) const SYS_REVENUE: &str = "sys:revenue";
/// The one kind of ledger transaction allowed to move a wallet by a sub-sat amount: the upgrade
/// sweep (`sats.rs`) that takes the msat remainders an older version left in wallets.
pub(crate) const KIND_SATS_SWEEP: &str = "sats_sweep";

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

/// Reads several wallets in one statement, without locking them; answers in the order asked
/// (a repeated id gets its record again). For operations whose only balance check that counts
/// is [`post`]'s guarded update (transfers, internal payments): ownership never changes, and
/// the balance read here only lets an obviously short payer be refused early. On Postgres the
/// wallets' row locks are then taken by `post`'s balance updates, at the end of the
/// transaction, not at its start.
pub(crate) async fn read_wallets(
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
    sql.push(')');
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
/// in the same `UPDATE` as its balance, by the number of entries in that wallet. A wallet
/// update carries the overdraft guard (`balance_msat + delta >= 0`); if it does not hold on
/// the row as locked, nothing more is written and the answer is [`StoreError::Overdraft`] with
/// the balance held (the caller's transaction is rolled back). Balances are updated last, after
/// every insert, so that on Postgres a caller that did not lock its wallets earlier holds their
/// row locks only from here to its commit.
pub(crate) async fn post(
    conn: &mut Conn,
    kind: &str,
    reference: &str,
    now: i64,
    legs: &[Posting<'_>],
    entries: &[NewWtx<'_>],
) -> Result<Posted, StoreError> {
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
    // Wallets hold and show whole sats (the history-sum invariant, checked by the audit): every
    // wallet leg and every entry is a multiple of 1000 msat. A sub-sat amount here is a
    // programming error, refused before anything is written.
    if kind != KIND_SATS_SWEEP {
        let wallet_legs = legs
            .iter()
            .filter(|l| matches!(l.account, Account::Wallet(_)))
            .map(|l| l.amount_msat);
        if let Some(bad) = wallet_legs
            .chain(entries.iter().map(|e| e.amount_msat))
            .find(|a| a % 1000 != 0)
        {
            return Err(StoreError::Corrupt(format!(
                "{kind} transaction moves a wallet by {bad} msat, not whole sats"
            )));
        }
    }
    let row = conn
        .fetch_one(
            "INSERT INTO ledger_txns (kind, ref, created_at) VALUES ($1, $2, $3) RETURNING id",
            args![kind, reference, now],
        )
        .await?;
    let txn_id = row.i64(0)?;
    // Balances are updated (row-locked, on Postgres) in one global order: wallets by id, then
    // system accounts by code. Every operation locks its payment/invoice row first, and either
    // locks its one wallet before calling this or leaves every wallet lock to the updates
    // here, so no two transactions can wait on each other in a cycle (a settle taking
    // `sys:in_flight` then a wallet while a reserve holds the wallet and wants `sys:in_flight`
    // would deadlock; so would two transfers locking one pair in opposite orders).
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
    // The rows a concurrent writer may also want come last: the entries and the ledger rows
    // above lock nothing anybody else waits for, so on Postgres a hot wallet's row lock is held
    // only for its balance updates (and any events) and the commit.
    let hooks = insert_wtxs(conn, entries).await?;
    let mut after = Posted {
        now,
        wallets: Vec::new(),
    };
    for ((sys, code), t) in &touched {
        if *sys {
            let n = conn
                .exec(
                    "UPDATE system_accounts SET balance_msat = balance_msat + $1 WHERE code = $2",
                    args![t.delta_msat, *code],
                )
                .await?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!("no ledger account {code}")));
            }
            continue;
        }
        // The guard is the overdraft check that counts: evaluated on the row as it is once the
        // row lock is held (Postgres re-reads a concurrently updated row before applying it).
        let row = conn
            .fetch_opt(
                "UPDATE wallets SET balance_msat = balance_msat + $1, wtx_count = wtx_count + $2, \
                 updated_at = $3 WHERE id = $4 AND balance_msat + $1 >= 0 \
                 RETURNING balance_msat, wtx_count",
                args![t.delta_msat, t.entries, now, *code],
            )
            .await?;
        match row {
            Some(r) => after.wallets.push(WalletAfter {
                id: (*code).to_owned(),
                balance_msat: r.i64(0)?,
                wtx_count: r.i64(1)?,
            }),
            None => {
                let held = conn
                    .fetch_opt(
                        "SELECT balance_msat FROM wallets WHERE id = $1",
                        args![*code],
                    )
                    .await?;
                return Err(match held {
                    Some(r) => StoreError::Overdraft(Msat::from_i64(r.i64(0)?)?),
                    None => StoreError::Corrupt(format!("no ledger account {code}")),
                });
            }
        }
    }
    // Events carry the wallet's balance after this transaction, so they follow the updates.
    emit_entries(conn, entries, &hooks, &after).await?;
    Ok(after)
}

/// A wallet's stored state as a ledger transaction left it.
#[derive(Debug, Clone)]
struct WalletAfter {
    id: String,
    balance_msat: i64,
    wtx_count: i64,
}

/// What [`post`] did to the wallets it touched, read back from the balance updates themselves
/// (`RETURNING`), so callers can answer with the wallets as committed without re-reading them
/// and without having locked them first. Every touched wallet's `updated_at` is `now`.
#[derive(Debug, Clone)]
pub(crate) struct Posted {
    now: i64,
    wallets: Vec<WalletAfter>,
}

impl Posted {
    /// `wallet` (as read earlier in this transaction) with the balance, entry count and change
    /// time this ledger transaction gave it; unchanged if it was not touched.
    pub(crate) fn wallet(&self, wallet: &WalletRecord) -> Result<WalletRecord, StoreError> {
        let Some(a) = self.after(wallet.id.as_str()) else {
            return Ok(wallet.clone());
        };
        Ok(WalletRecord {
            balance: Msat::from_i64(a.balance_msat)?,
            wtx_count: u64::try_from(a.wtx_count)
                .map_err(|_| StoreError::Corrupt(format!("wtx_count of {}", a.id)))?,
            updated_at: self.now,
            ..wallet.clone()
        })
    }

    fn after(&self, wallet_id: &str) -> Option<&WalletAfter> {
        self.wallets.iter().find(|a| a.id == wallet_id)
    }
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

/// The webhooks of each account that has entries in a ledger transaction.
type Hooks<'a> = Vec<(&'a str, Vec<WebhookRecord>)>;

/// Inserts user-visible wallet transactions (in order, one statement) and reads the webhooks of
/// their accounts (once per account), for [`emit_entries`]. Only [`post`] calls this.
async fn insert_wtxs<'a>(conn: &mut Conn, entries: &[NewWtx<'a>]) -> Result<Hooks<'a>, StoreError> {
    let mut hooks: Hooks<'a> = Vec::new();
    if entries.is_empty() {
        return Ok(hooks);
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
    // The subscriptions of an account are read once per ledger transaction.
    for w in entries {
        if event_of(w.wtx_type).is_some() && !hooks.iter().any(|(a, _)| *a == w.account_id) {
            hooks.push((w.account_id, active_hooks(conn, w.account_id).await?));
        }
    }
    Ok(hooks)
}

/// The event a user-visible entry raises.
fn event_of(t: WtxType) -> Option<EventName> {
    Some(match t {
        WtxType::LnDeposit | WtxType::LnLnurlPayInbound => EventName::WalletReceive,
        WtxType::LnWithdrawal | WtxType::LnLnurlPayOutbound => EventName::WalletSend,
        WtxType::LnTransferIn => EventName::WalletTransferIn,
        WtxType::LnTransferOut => EventName::WalletTransferOut,
        WtxType::NetworkFee => EventName::NetworkFeeIncurred,
        WtxType::BalanceRollUp => return None,
    })
}

/// Every user-visible entry is also an event, in this same transaction (the outbox), delivered
/// to the webhooks [`insert_wtxs`] found (if any) and read by live event streams. Runs after the balance updates: an event carries the
/// wallet's balance as this transaction leaves it.
async fn emit_entries(
    conn: &mut Conn,
    entries: &[NewWtx<'_>],
    hooks: &Hooks<'_>,
    after: &Posted,
) -> Result<(), StoreError> {
    let lntx: Vec<Option<LnTxId>> = entries
        .iter()
        .map(|w| w.lntx_id.map(|l| LnTxId::from_db(l.to_owned())))
        .collect();
    let mut items = Vec::with_capacity(entries.len());
    for (w, lntx) in entries.iter().zip(&lntx) {
        let Some(name) = event_of(w.wtx_type) else {
            continue;
        };
        let subscribed: &[WebhookRecord] = hooks
            .iter()
            .find(|(a, _)| *a == w.account_id)
            .map_or(&[], |(_, h)| h.as_slice());
        items.push((
            Emit {
                name,
                account_id: w.account_id,
                wallet_id: w.wallet_id,
                wtx_id: Some(w.id),
                lntx_id: lntx.as_ref(),
                now: w.now,
                balance_msat: after.after(w.wallet_id.as_str()).map(|a| a.balance_msat),
            },
            subscribed,
        ));
    }
    emit_all(conn, &items).await
}
