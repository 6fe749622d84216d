//! Figures for the metrics gauges, read in one statement on a reader connection.

use crate::{Store, StoreError, args};

/// The books and queues as they stand now (see `satchel::metrics` for the metric names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Sum of all wallet balances (msat): what the operator owes its users.
    pub liabilities_msat: i64,
    /// `sys:unclaimed` (msat): received money that belongs to no wallet.
    pub unclaimed_msat: i64,
    /// `sys:in_flight` (msat): amount plus fee limit of the payments still holding a reserve.
    pub in_flight_msat: i64,
    /// Outgoing payments still holding a reserve (reserved, dispatched or unknown).
    pub in_flight_payments: i64,
    /// Webhook deliveries not yet delivered nor given up.
    pub webhook_pending: i64,
    /// Unix seconds of the oldest pending delivery's event, if any is pending.
    pub webhook_oldest_pending_at: Option<i64>,
}

impl Store {
    /// Reads [`Gauges`]. Cost: one pass over the wallets' balances (no postings), the live
    /// payments and the pending deliveries through their partial/status indexes, and two system
    /// account rows; it runs on a reader connection, never in the SQLite writer.
    pub async fn gauges(&self) -> Result<Gauges, StoreError> {
        let mut c = self.read_conn().await?;
        let r = c
            .fetch_one(
                "SELECT \
                 (SELECT CAST(COALESCE(SUM(balance_msat), 0) AS BIGINT) FROM wallets), \
                 (SELECT CAST(COALESCE(SUM(balance_msat), 0) AS BIGINT) FROM system_accounts WHERE code = 'sys:unclaimed'), \
                 (SELECT CAST(COALESCE(SUM(balance_msat), 0) AS BIGINT) FROM system_accounts WHERE code = 'sys:in_flight'), \
                 (SELECT COUNT(*) FROM ln_txs WHERE status IN ('reserved', 'dispatched', 'unknown')), \
                 (SELECT COUNT(*) FROM deliveries WHERE status = 'pending'), \
                 (SELECT MIN(created_at) FROM deliveries WHERE status = 'pending')",
                args![],
            )
            .await?;
        Ok(Gauges {
            liabilities_msat: r.i64(0)?,
            unclaimed_msat: r.i64(1)?,
            in_flight_msat: r.i64(2)?,
            in_flight_payments: r.i64(3)?,
            webhook_pending: r.i64(4)?,
            webhook_oldest_pending_at: r.opt_i64(5)?,
        })
    }
}
