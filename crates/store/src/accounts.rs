//! The operator's list of accounts (the console and `/operator/v1/accounts`).

use satchel_domain::AccountId;

use crate::{Store, StoreError, args};

/// One account as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    /// The account.
    pub id: AccountId,
    /// Its label.
    pub label: String,
    /// When it was created (unix seconds).
    pub created_at_secs: i64,
    /// Its wallets.
    pub wallets: u64,
    /// The sum of its wallets' balances, in msat.
    pub balance_msat: i64,
}

impl Store {
    /// Accounts, oldest first, `limit` from `offset`, with the total count.
    pub async fn list_accounts(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<AccountSummary>, u64), StoreError> {
        let mut c = self.read_conn().await?;
        let total = c
            .fetch_one("SELECT COUNT(*) FROM accounts", args![])
            .await?
            .i64(0)?;
        let rows = c
            .fetch_all(
                "SELECT a.id, a.label, a.created_at, \
                 (SELECT COUNT(*) FROM wallets w WHERE w.account_id = a.id), \
                 CAST(COALESCE((SELECT SUM(w.balance_msat) FROM wallets w WHERE w.account_id = a.id), 0) AS BIGINT) \
                 FROM accounts a ORDER BY a.created_at, a.id LIMIT $1 OFFSET $2",
                args![
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    i64::try_from(offset).unwrap_or(i64::MAX)
                ],
            )
            .await?;
        let list = rows
            .iter()
            .map(|r| {
                Ok(AccountSummary {
                    id: AccountId::from_db(r.text(0)?),
                    label: r.text(1)?,
                    created_at_secs: r.i64(2)?,
                    wallets: u64::try_from(r.i64(3)?).unwrap_or(0),
                    balance_msat: r.i64(4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok((list, u64::try_from(total).unwrap_or(0)))
    }
}
