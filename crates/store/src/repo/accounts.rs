//! Accounts: creating one with its account-level keys, counting them, and the operator's list
//! of accounts (the console and `/operator/v1/accounts`).

use satchel_domain::AccountId;

use super::keys::{NewKey, insert_key};
use super::to_u64;
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
    /// Creates an account with its account-level keys.
    pub async fn create_account(
        &self,
        id: &AccountId,
        label: &str,
        now: i64,
        keys: &[NewKey],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "INSERT INTO accounts (id, label, created_at) VALUES ($1, $2, $3)",
            args![id.as_str(), label, now],
        )
        .await?;
        for k in keys {
            insert_key(&mut tx, id, None, k, now).await?;
        }
        tx.commit().await
    }

    /// Number of accounts.
    pub async fn account_count(&self) -> Result<u64, StoreError> {
        let mut c = self.read_conn().await?;
        Ok(to_u64(
            c.fetch_one("SELECT COUNT(*) FROM accounts", args![])
                .await?
                .i64(0)?,
        ))
    }

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
