//! Who is calling, and which wallet the URL's `:wallet_key` names (LNPay spec §3.3–3.5).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use satchel_domain::{AccountId, KeyHash, KeyRole, Permission, WalletId};
use satchel_store::{KeyRecord, WalletRecord};

use crate::{Ctx, ServiceError};

/// How long a cached key may be trusted. Keys never change except for suspension; a suspension
/// made by another process takes effect here within this time (at once in this process).
const KEY_TTL: Duration = Duration::from_secs(60);
/// Entries kept before the cache is emptied (a crude bound against floods of distinct keys).
const MAX_ENTRIES: usize = 100_000;

/// Known keys by hash. Only keys that exist are cached, so a flood of made-up keys costs
/// database lookups but cannot fill memory with negatives.
#[derive(Default)]
pub struct AuthCache {
    keys: Mutex<HashMap<KeyHash, (KeyRecord, Instant)>>,
}

impl AuthCache {
    fn get(&self, h: &KeyHash) -> Option<KeyRecord> {
        let m = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        m.get(h)
            .filter(|(_, at)| at.elapsed() < KEY_TTL)
            .map(|(k, _)| k.clone())
    }

    fn put(&self, h: KeyHash, k: KeyRecord) {
        let mut m = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(h, (k, Instant::now()));
    }

    /// Forgets a key (after its suspension changed).
    pub fn invalidate(&self, h: &KeyHash) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(h);
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account the key belongs to.
    pub account_id: AccountId,
    /// The API key's role.
    pub role: KeyRole,
}

/// Authentication and authorization.
#[derive(Clone)]
pub struct AuthService {
    ctx: Arc<Ctx>,
}

impl AuthService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> AuthService {
        AuthService { ctx }
    }

    async fn key(&self, text: &str) -> Result<Option<KeyRecord>, ServiceError> {
        let h = KeyHash::of(text);
        if let Some(k) = self.ctx.auth_cache.get(&h) {
            return Ok(Some(k));
        }
        let found = self.ctx.store.find_key(&h).await?;
        if let Some(k) = &found {
            self.ctx.auth_cache.put(h, k.clone());
        }
        Ok(found)
    }

    /// Suspends or reinstates a key; takes effect at once in this process.
    pub async fn set_suspended(
        &self,
        key_text: &str,
        suspended: bool,
    ) -> Result<bool, ServiceError> {
        let h = KeyHash::of(key_text);
        let changed = self.ctx.store.set_key_suspended(&h, suspended).await?;
        self.ctx.auth_cache.invalidate(&h);
        Ok(changed)
    }

    /// Authenticates the API key (any transport). Unknown or missing → invalid credentials.
    pub async fn authenticate(&self, key: Option<&str>) -> Result<Caller, ServiceError> {
        let key = key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ServiceError::InvalidCredentials)?;
        let rec = self
            .key(key)
            .await?
            .ok_or(ServiceError::InvalidCredentials)?;
        if rec.suspended {
            return Err(if rec.role.is_wallet_key() {
                ServiceError::WalletKeySuspended
            } else {
                ServiceError::KeySuspended
            });
        }
        Ok(Caller {
            account_id: rec.account_id,
            role: rec.role,
        })
    }

    /// The web UI's wallet page (`/wallet/<key>`): the wallet key in the page's address speaks
    /// for its own wallet only, with exactly its role's permissions. The caller returned acts as
    /// the account's pak presenting that same key, so every service method applies the pak
    /// rules (ownership, suspension, the role's permission) to it; pass the same key as the path
    /// key. Anything but a live wallet key → invalid credentials. Also returns the key's role.
    pub async fn wallet_page_caller(&self, key: &str) -> Result<(Caller, KeyRole), ServiceError> {
        let rec = self
            .key(key.trim())
            .await?
            .filter(|r| r.role.is_wallet_key())
            .ok_or(ServiceError::InvalidCredentials)?;
        if rec.suspended {
            return Err(ServiceError::WalletKeySuspended);
        }
        let caller = Caller {
            account_id: rec.account_id,
            role: KeyRole::Public,
        };
        Ok((caller, rec.role))
    }

    /// Suspends or reinstates one of the caller's own keys (secret key only); `false` if the key
    /// is not the account's (unknown keys included) or was already in that state.
    pub async fn set_own_key_suspended(
        &self,
        caller: &Caller,
        key_text: &str,
        suspended: bool,
    ) -> Result<bool, ServiceError> {
        self.require_secret(caller)?;
        let key_text = key_text.trim();
        match self.ctx.store.find_key(&KeyHash::of(key_text)).await? {
            Some(rec) if rec.account_id == caller.account_id => {
                self.set_suspended(key_text, suspended).await
            }
            _ => Ok(false),
        }
    }

    /// Sak-only endpoints.
    pub fn require_secret(&self, c: &Caller) -> Result<(), ServiceError> {
        if c.role == KeyRole::Secret {
            Ok(())
        } else {
            Err(ServiceError::SecretKeyRequired)
        }
    }

    /// Account-level endpoints open to sak and pak (wallet keys may not act for the account).
    pub fn require_account_key(&self, c: &Caller) -> Result<(), ServiceError> {
        match c.role {
            KeyRole::Secret | KeyRole::Public => Ok(()),
            _ => Err(ServiceError::SecretKeyRequired),
        }
    }

    /// Resolves the `:wallet_key` path segment for a caller and checks `perm`.
    ///
    /// * sak: a wallet id (`wal_…`, legacy `w_…`) or any wallet key of the account;
    /// * pak: only a wallet key of the account, which must carry `perm`;
    /// * a wallet key used as the API key: refused (it does not speak for the account).
    pub async fn wallet_for(
        &self,
        caller: &Caller,
        path_key: &str,
        perm: Permission,
    ) -> Result<WalletRecord, ServiceError> {
        let wallet_id = self.wallet_id_for(caller, path_key, perm).await?;
        self.owned_wallet(caller, path_key, &wallet_id).await
    }

    /// Reads the wallet [`AuthService::wallet_id_for`] resolved `path_key` to, if it is still
    /// the caller's.
    pub async fn owned_wallet(
        &self,
        caller: &Caller,
        path_key: &str,
        wallet_id: &WalletId,
    ) -> Result<WalletRecord, ServiceError> {
        match self.ctx.store.wallet(wallet_id).await? {
            Some(w) if w.account_id == caller.account_id => Ok(w),
            _ => Err(ServiceError::WalletNotFound(path_key.to_owned())),
        }
    }

    /// [`AuthService::wallet_for`] without reading the wallet: the id the path names, for an
    /// operation that reads (and locks) the wallet itself and checks that it exists and belongs
    /// to `caller` there. Only the key checks are made here (from the key cache).
    pub async fn wallet_id_for(
        &self,
        caller: &Caller,
        path_key: &str,
        perm: Permission,
    ) -> Result<WalletId, ServiceError> {
        let not_found = || ServiceError::WalletNotFound(path_key.to_owned());
        let wallet_id = match caller.role {
            KeyRole::Secret => {
                if WalletId::looks_like_id(path_key) {
                    WalletId::parse(path_key).map_err(|_| not_found())?
                } else {
                    let rec = self.key(path_key).await?.ok_or_else(not_found)?;
                    if rec.account_id != caller.account_id {
                        return Err(not_found());
                    }
                    if rec.suspended {
                        return Err(ServiceError::WalletKeySuspended);
                    }
                    rec.wallet_id.ok_or_else(not_found)?
                }
            }
            KeyRole::Public => {
                if WalletId::looks_like_id(path_key) {
                    return Err(ServiceError::PakNeedsWalletKey);
                }
                let rec = self
                    .key(path_key)
                    .await?
                    .ok_or(ServiceError::PakNeedsWalletKey)?;
                if rec.account_id != caller.account_id || !rec.role.is_wallet_key() {
                    return Err(ServiceError::PakNeedsWalletKey);
                }
                if rec.suspended {
                    return Err(ServiceError::WalletKeySuspended);
                }
                if !rec.role.has(perm) {
                    return Err(ServiceError::PermissionDenied {
                        prefix: rec.prefix,
                        permission: perm.name(),
                    });
                }
                rec.wallet_id.ok_or(ServiceError::PakNeedsWalletKey)?
            }
            _ => return Err(not_found()),
        };
        Ok(wallet_id)
    }

    /// Resolves a transfer destination: a wallet id or any wallet key of the same account.
    pub async fn same_account_wallet(
        &self,
        caller: &Caller,
        id_or_key: &str,
    ) -> Result<Option<WalletRecord>, ServiceError> {
        let id = if WalletId::looks_like_id(id_or_key) {
            match WalletId::parse(id_or_key) {
                Ok(id) => id,
                Err(_) => return Ok(None),
            }
        } else {
            match self.key(id_or_key).await? {
                Some(KeyRecord {
                    wallet_id: Some(w),
                    account_id,
                    ..
                }) if account_id == caller.account_id => w,
                _ => return Ok(None),
            }
        };
        Ok(self
            .ctx
            .store
            .wallet(&id)
            .await?
            .filter(|w| w.account_id == caller.account_id))
    }
}
