//! Whole sats for wallets: the SQL that states what a wallet shows, and the upgrade sweep.
//!
//! Since wallets move in whole sats only (`ledger::post` refuses anything else), the sum of the
//! `num_satoshis` of a wallet's history is its balance in sats (plus its live reserves). An
//! older version charged routing fees to the msat and credited received msat as they came, so
//! an upgraded database can hold two kinds of leftovers, both handled once, by the migration
//! that introduced `sys:revenue`:
//!
//! - a wallet balance that is not a multiple of 1000 msat: the remainder (< 1 sat, invisible
//!   to clients, who see the balance rounded down) is swept to `sys:revenue`;
//! - a history whose shown amounts add up to less than the balance (each sub-sat entry is
//!   shown rounded toward −∞, so 40 fees of 1,500 msat showed as −80 sats for −60 sats
//!   charged): one visible `balance_roll_up` entry, "Rounding correction", shows the
//!   difference. It moves no money (the balance already holds it); it makes the history add
//!   up to the balance the client was always shown.
//!
//! A live payment reserved by an older version holds `amount + fee limit` to the msat; it is
//! topped up to the whole-sat reserve its settlement now expects, from `sys:revenue` (the
//! operator bears that part of a sat, not the wallet, whose balance may not have it).
//!
//! Why a step in Rust rather than SQL: each sweep is a balanced ledger transaction with its
//! postings, its balance updates and (for a correction) a WTX with its entry count, exactly what
//! `ledger::post` writes and checks; SQL statements would have to duplicate all of it, per
//! dialect. It runs inside the migration's transaction and schema version, so it runs once.

use satchel_domain::{WalletId, WtxId, WtxType, now_secs};

use crate::db::Conn;
use crate::ledger::{Account, KIND_SATS_SWEEP, NewWtx, SYS_IN_FLIGHT, SYS_REVENUE, leg, post};
use crate::{StoreError, args};

/// SQL: the sats a WTX aliased `t` shows, its msat rounded toward −∞ (as the API renders it).
pub(crate) const SHOWN_SATS: &str = "CASE WHEN t.amount_msat >= 0 THEN t.amount_msat / 1000 \
     ELSE -((999 - t.amount_msat) / 1000) END";

/// SQL: the reserve an outgoing payment aliased `l` holds while live: amount + fee limit,
/// rounded up to the whole sat (`satchel_domain::payment_reserve`).
pub(crate) const RESERVE_MSAT: &str = "((l.amount_msat + l.fee_limit_msat + 999) / 1000) * 1000";

/// SQL: the statuses of a payment that holds a reserve.
pub(crate) const LIVE: &str = "('reserved', 'dispatched', 'unknown')";

/// Label of the correction entry the sweep may add to a wallet's history.
pub(crate) const CORRECTION_LABEL: &str = "Rounding correction (history in whole sats)";

/// The upgrade sweep (see the module docs), inside the migration's transaction.
pub(crate) async fn sweep(conn: &mut Conn) -> Result<(), StoreError> {
    let now = now_secs();
    // Live reserves an older version took to the msat: top them up to whole sats.
    let short = conn
        .fetch_all(
            &format!(
                "SELECT l.id, CAST({RESERVE_MSAT} - l.amount_msat - l.fee_limit_msat AS BIGINT) \
                 FROM ln_txs l WHERE l.direction = 'out' AND l.status IN {LIVE} \
                 AND (l.amount_msat + l.fee_limit_msat) % 1000 <> 0 ORDER BY l.id"
            ),
            args![],
        )
        .await?;
    for r in short {
        let (id, top_up) = (r.text(0)?, r.i64(1)?);
        post(
            conn,
            KIND_SATS_SWEEP,
            &id,
            now,
            &[
                leg(Account::Sys(SYS_REVENUE), -top_up),
                leg(Account::Sys(SYS_IN_FLIGHT), top_up),
            ],
            &[],
        )
        .await?;
    }
    // Every wallet whose balance has a sub-sat part or whose shown history does not add up to
    // its balance plus its reserves.
    let wallets = conn
        .fetch_all(
            &format!(
                "SELECT w.id, w.account_id, w.balance_msat, \
                 CAST(COALESCE((SELECT SUM({SHOWN_SATS}) FROM wtxs t WHERE t.wallet_id = w.id), 0) AS BIGINT), \
                 CAST(COALESCE((SELECT SUM({RESERVE_MSAT}) FROM ln_txs l WHERE l.wallet_id = w.id \
                    AND l.direction = 'out' AND l.status IN {LIVE}), 0) AS BIGINT) \
                 FROM wallets w ORDER BY w.id"
            ),
            args![],
        )
        .await?;
    for r in wallets {
        let (id, account, balance, shown, reserved) =
            (r.text(0)?, r.text(1)?, r.i64(2)?, r.i64(3)?, r.i64(4)?);
        let remainder = balance.rem_euclid(1000);
        let whole = balance - remainder;
        // In sats: what the history must show more (never less: each shown amount is rounded
        // toward −∞, so shown sums only fall short of what was booked).
        let correction_msat = whole
            .checked_add(reserved)
            .and_then(|h| h.checked_sub(shown.checked_mul(1000)?))
            .ok_or_else(|| StoreError::Corrupt(format!("sweep of {id} overflows")))?;
        // A history showing more than the wallet holds is no rounding leftover: it is left for
        // the audit to report, never covered up by a negative correction.
        let correction_msat = correction_msat.max(0);
        if remainder == 0 && correction_msat == 0 {
            continue;
        }
        let wallet_id = WalletId::from_db(id);
        let wtx_id = WtxId::generate();
        let entry = NewWtx {
            id: &wtx_id,
            wallet_id: &wallet_id,
            account_id: &account,
            now,
            amount_msat: correction_msat,
            wtx_type: WtxType::BalanceRollUp,
            user_label: CORRECTION_LABEL,
            lntx_id: None,
            pass_thru: "{}",
        };
        let entries: &[NewWtx<'_>] = if correction_msat != 0 {
            std::slice::from_ref(&entry)
        } else {
            &[]
        };
        post(
            conn,
            KIND_SATS_SWEEP,
            wallet_id.as_str(),
            now,
            &[
                leg(Account::Wallet(&wallet_id), -remainder),
                leg(Account::Sys(SYS_REVENUE), remainder),
            ],
            entries,
        )
        .await?;
    }
    Ok(())
}
