//! API keys: stored by the SHA-256 of their text, looked up by that hash, suspended and
//! resumed. Keys are also written with the account or wallet they belong to (see
//! [`Store::create_account`], [`Store::create_wallet`]) through [`insert_key`].

use satchel_domain::{AccountId, KeyHash, KeyRole, WalletId};

use crate::db::Conn;
use crate::records::KeyRecord;
use crate::{Store, StoreError, args};

/// A key to store with a new account or wallet.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Role.
    pub role: KeyRole,
    /// SHA-256 of the key text.
    pub hash: KeyHash,
    /// Text before the first `_`.
    pub prefix: String,
}

/// Inserts a key row inside the caller's transaction.
pub(super) async fn insert_key(
    conn: &mut Conn,
    account: &AccountId,
    wallet: Option<&WalletId>,
    k: &NewKey,
    now: i64,
) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO api_keys (key_hash, account_id, wallet_id, role, prefix, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            k.hash.to_hex(),
            account.as_str(),
            wallet.map(WalletId::as_str),
            k.role.code(),
            k.prefix.as_str(),
            now
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Adds a key (e.g. an imported legacy key) to an account or wallet.
    pub async fn add_key(
        &self,
        account: &AccountId,
        wallet: Option<&WalletId>,
        key: &NewKey,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_key(&mut tx, account, wallet, key, now).await?;
        tx.commit().await
    }

    /// Sets or clears a key's suspension.
    pub async fn set_key_suspended(
        &self,
        hash: &KeyHash,
        suspended: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = tx
            .exec(
                "UPDATE api_keys SET suspended = $1 WHERE key_hash = $2",
                args![suspended, hash.to_hex()],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Finds a key by the hash of its text. The lookup is an index probe on the SHA-256 of the
    /// presented key, so response timing depends only on the hash, never on how many characters
    /// of a real key an attacker guessed.
    pub async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let Some(r) = c
            .fetch_opt(
                "SELECT account_id, wallet_id, role, prefix, suspended FROM api_keys WHERE key_hash = $1",
                args![hash.to_hex()],
            )
            .await?
        else {
            return Ok(None);
        };
        let role_code = r.text(2)?;
        Ok(Some(KeyRecord {
            account_id: AccountId::from_db(r.text(0)?),
            wallet_id: r.opt_text(1)?.map(WalletId::from_db),
            role: KeyRole::from_code(&role_code)
                .ok_or_else(|| StoreError::Corrupt(format!("key role {role_code}")))?,
            prefix: r.text(3)?,
            suspended: r.flag(4)?,
        }))
    }
}
