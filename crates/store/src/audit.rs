//! The auditor: recomputes everything from the postings and compares.

use crate::sats::{LIVE, RESERVE_MSAT, SHOWN_SATS};
use crate::{Store, StoreError, args};

/// What the audit found. `problems` empty means the books are clean.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Wallets checked.
    pub wallets: u64,
    /// Ledger transactions checked.
    pub transactions: u64,
    /// Postings checked.
    pub postings: u64,
    /// Sum of all wallet balances (msat): what the operator owes.
    pub liabilities_msat: i64,
    /// Reserved for in-flight payments (msat).
    pub in_flight_msat: i64,
    /// Received but belonging to no wallet (msat).
    pub unclaimed_msat: i64,
    /// The operator's revenue from rounding wallet amounts to whole sats (msat).
    pub revenue_msat: i64,
    /// Every discrepancy, in words.
    pub problems: Vec<String>,
}

impl AuditReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How many checks [`Store::audit_reporting`] reports.
pub const AUDIT_STEPS: u64 = 4;

impl Store {
    /// Recomputes every balance from the postings and checks:
    /// each ledger transaction sums to zero; all postings sum to zero; every stored wallet and
    /// system balance equals the sum of its postings; no wallet is negative; every wallet
    /// balance is whole sats; each wallet's visible history, as clients see it (the sum of its
    /// WTXs' `num_satoshis`, each rounded toward −∞ as shown), equals its balance plus its live
    /// reserves in sats; `sys:in_flight` equals the live reserves.
    ///
    /// The history check is made on the amounts as shown, not on their msat: entries written
    /// since wallets move in whole sats are exact either way, and for entries an older version
    /// wrote with a sub-sat part (routing fees) what counts is what a client adds up. The
    /// upgrade sweep (`sats.rs`) booked the difference as a visible correction entry.
    pub async fn audit(&self) -> Result<AuditReport, StoreError> {
        self.audit_reporting(&|_, _| {}).await
    }

    /// [`Store::audit`], calling `step(done, what)` as each of its [`AUDIT_STEPS`] checks
    /// starts (for a progress display: on a large database each is a scan of a big table).
    pub async fn audit_reporting(
        &self,
        step: &(dyn Fn(u64, &'static str) + Sync),
    ) -> Result<AuditReport, StoreError> {
        step(0, "counting");
        let mut tx = self.begin_read().await?;
        let mut rep = AuditReport::default();
        let counts = tx
            .fetch_one("SELECT (SELECT COUNT(*) FROM ledger_txns), (SELECT COUNT(*) FROM postings), (SELECT COUNT(*) FROM wallets)", args![])
            .await?;
        rep.transactions = u64::try_from(counts.i64(0)?).unwrap_or(0);
        rep.postings = u64::try_from(counts.i64(1)?).unwrap_or(0);
        rep.wallets = u64::try_from(counts.i64(2)?).unwrap_or(0);

        step(1, "ledger transactions balance");
        for r in tx
            .fetch_all("SELECT txn_id, CAST(SUM(amount_msat) AS BIGINT) FROM postings GROUP BY txn_id HAVING SUM(amount_msat) <> 0", args![])
            .await?
        {
            rep.problems.push(format!("ledger transaction {} sums to {} msat", r.i64(0)?, r.i64(1)?));
        }
        let total = tx
            .fetch_one(
                "SELECT CAST(COALESCE(SUM(amount_msat), 0) AS BIGINT) FROM postings",
                args![],
            )
            .await?;
        let total = total.i64(0)?;
        if total != 0 {
            rep.problems
                .push(format!("all postings sum to {total} msat, not 0"));
        }

        step(2, "wallets against their postings and history");
        let wallets = tx
            .fetch_all(
                &format!(
                    "SELECT w.id, w.balance_msat, \
                     CAST(COALESCE((SELECT SUM(p.amount_msat) FROM postings p WHERE p.account = w.id), 0) AS BIGINT), \
                     CAST(COALESCE((SELECT SUM({SHOWN_SATS}) FROM wtxs t WHERE t.wallet_id = w.id), 0) AS BIGINT), \
                     CAST(COALESCE((SELECT SUM({RESERVE_MSAT}) FROM ln_txs l WHERE l.wallet_id = w.id \
                        AND l.direction = 'out' AND l.status IN {LIVE}), 0) AS BIGINT), \
                     w.wtx_count, (SELECT COUNT(*) FROM wtxs t WHERE t.wallet_id = w.id) \
                     FROM wallets w"
                ),
                args![],
            )
            .await?;
        let mut live_total: i64 = 0;
        for r in wallets {
            let id = r.text(0)?;
            let (stored, posted, history, live) = (r.i64(1)?, r.i64(2)?, r.i64(3)?, r.i64(4)?);
            rep.liabilities_msat = rep.liabilities_msat.saturating_add(stored);
            live_total = live_total.saturating_add(live);
            if stored != posted {
                rep.problems.push(format!(
                    "wallet {id}: stored balance {stored} != postings {posted}"
                ));
            }
            if stored < 0 {
                rep.problems
                    .push(format!("wallet {id}: negative balance {stored}"));
            }
            if stored % 1000 != 0 {
                rep.problems.push(format!(
                    "wallet {id}: balance {stored} msat is not a whole number of sats"
                ));
            }
            // `history` is in sats as shown; reserves are whole sats by construction.
            let held = stored.saturating_add(live);
            if history.checked_mul(1000) != Some(held) {
                rep.problems.push(format!(
                    "wallet {id}: history shows {history} sats but balance {stored} + reserved {live} msat"
                ));
            }
            if r.i64(5)? != r.i64(6)? {
                rep.problems.push(format!(
                    "wallet {id}: wtx_count {} != {}",
                    r.i64(5)?,
                    r.i64(6)?
                ));
            }
        }
        step(3, "system accounts and orphan postings");
        for r in tx
            .fetch_all(
                "SELECT s.code, s.balance_msat, CAST(COALESCE((SELECT SUM(p.amount_msat) FROM postings p WHERE p.account = s.code), 0) AS BIGINT) FROM system_accounts s",
                args![],
            )
            .await?
        {
            let code = r.text(0)?;
            let (stored, posted) = (r.i64(1)?, r.i64(2)?);
            if stored != posted {
                rep.problems.push(format!("{code}: stored balance {stored} != postings {posted}"));
            }
            match code.as_str() {
                "sys:in_flight" => {
                    rep.in_flight_msat = stored;
                    if stored != live_total {
                        rep.problems.push(format!("sys:in_flight {stored} != live reserves {live_total}"));
                    }
                }
                "sys:unclaimed" => rep.unclaimed_msat = stored,
                "sys:revenue" => rep.revenue_msat = stored,
                _ => {}
            }
        }
        let orphans = tx
            .fetch_one("SELECT COUNT(*) FROM postings p WHERE p.account NOT LIKE 'sys:%' AND NOT EXISTS (SELECT 1 FROM wallets w WHERE w.id = p.account)", args![])
            .await?
            .i64(0)?;
        if orphans != 0 {
            rep.problems
                .push(format!("{orphans} postings to unknown accounts"));
        }
        tx.commit().await?;
        Ok(rep)
    }
}
