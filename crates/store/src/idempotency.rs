//! Idempotency keys: a client's `Idempotency-Key` on a money-moving request, scoped to its
//! account.
//!
//! The key's row is written **inside the transaction of the operation's money movement** (the
//! wallet, invoice, transfer, payment reserve, internal payment or job it creates), never in
//! a transaction of its own. So a crash leaves either both (the operation happened and the key
//! names what it created) or neither (nothing happened, a retry runs it afresh), and a unique
//! primary key on (account, key) makes two concurrent requests with one key (in one process or
//! several sharing a database) commit at most one movement: the loser's transaction fails on
//! the key and rolls back whole.
//!
//! The claim travels to the store operation in a task-local ([`with_claim`]) rather than as a
//! parameter of every service and store method on the way: the operations that honour it call
//! [`mark`] just before their commit, and every other path is untouched. The answer sent to the
//! client is stored afterwards ([`Store::finish_idempotency`]); a crash in between leaves the
//! row with its `effect` (what the operation created) and no answer, from which the service
//! layer rebuilds one.

use std::future::Future;

use satchel_domain::AccountId;

use crate::db::Conn;
use crate::{Store, StoreError, args};

/// What a request with an idempotency key claims: written by the first operation of the
/// request that moves money or creates something.
#[derive(Debug, Clone)]
pub struct IdemClaim {
    /// The caller's account (keys are scoped to it).
    pub account_id: AccountId,
    /// The client's key.
    pub key: String,
    /// SHA-256 (hex) of what identifies the request (method, route, path, content type, body).
    pub fingerprint: String,
    /// Random token of this attempt: tells this request's row from a concurrent one's.
    pub token: String,
    /// Unix seconds.
    pub now: i64,
    /// Unix seconds after which the row may be purged and the key reused.
    pub expires_at: i64,
}

tokio::task_local! {
    static CLAIM: IdemClaim;
}

/// Runs `f` (one request's service call) with `claim` visible to the store operations it makes.
/// Spawned tasks do not inherit it, so a payment driver or a job runner never claims the key.
pub async fn with_claim<F: Future>(claim: IdemClaim, f: F) -> F::Output {
    CLAIM.scope(claim, f).await
}

/// Writes the current request's key row, if it has one, in the caller's transaction. `effect`
/// names what the transaction creates (`kind:id[:id]`). An unexpired row of the same key
/// (another request's) refuses it with [`StoreError::Constraint`], which aborts the operation.
pub(crate) async fn mark(conn: &mut Conn, effect: &str) -> Result<(), StoreError> {
    let Ok(c) = CLAIM.try_with(Clone::clone) else {
        return Ok(());
    };
    // An expired row not yet purged is replaced: the key is free again.
    let written = conn
        .exec(
            "INSERT INTO idempotency_keys (account_id, idem_key, fingerprint, token, effect, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (account_id, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             token = excluded.token, effect = excluded.effect, created_at = excluded.created_at, \
             expires_at = excluded.expires_at, status_code = NULL, content_type = NULL, body = NULL \
             WHERE idempotency_keys.expires_at <= excluded.created_at",
            args![
                c.account_id.as_str(),
                c.key.as_str(),
                c.fingerprint.as_str(),
                c.token.as_str(),
                effect,
                c.now,
                c.expires_at
            ],
        )
        .await?;
    if written == 0 {
        return Err(StoreError::Constraint(
            "idempotency key already used".to_owned(),
        ));
    }
    Ok(())
}

/// Whether the current task carries a claim (operations that normally skip a transaction
/// need one to write the key row atomically with their record).
pub(crate) fn claim_active() -> bool {
    CLAIM.try_with(|_| ()).is_ok()
}

/// A stored idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// Fingerprint of the request that used the key first.
    pub fingerprint: String,
    /// That request's attempt token.
    pub token: String,
    /// What its operation created (`kind:id[:id]`).
    pub effect: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The answer sent, once stored: status, content type, body.
    pub response: Option<StoredResponse>,
}

/// An answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// Body (LNPay answers are JSON text).
    pub body: String,
}

impl Store {
    /// The unexpired row of `key` in `account`, if any.
    pub async fn idempotency_record(
        &self,
        account: &AccountId,
        key: &str,
        now: i64,
    ) -> Result<Option<IdemRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        record_in(&mut c, account, key, now).await
    }

    /// Like [`Store::idempotency_record`], but also sees a row whose transaction is committed
    /// in a SQLite batch not yet flushed (readers see it only after the flush): read through
    /// the writer, answered once that batch is durable. For a request that just lost the race
    /// for its key to a concurrent one, whose operation may sit in the same batch.
    pub async fn idempotency_record_after_write(
        &self,
        account: &AccountId,
        key: &str,
        now: i64,
    ) -> Result<Option<IdemRecord>, StoreError> {
        if self.dialect() == crate::Dialect::Postgres {
            // A Postgres write that collided with the row waited for its commit.
            return self.idempotency_record(account, key, now).await;
        }
        let mut tx = self.begin_write().await?;
        let rec = record_in(&mut tx, account, key, now).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Stores the answer of the request whose attempt `token` wrote the row. False if the row
    /// is not that attempt's (its operation did not commit, or the key was purged meanwhile).
    pub async fn finish_idempotency(
        &self,
        account: &AccountId,
        key: &str,
        token: &str,
        response: &StoredResponse,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_one_statement_write().await?;
        let n = tx
            .exec(
                "UPDATE idempotency_keys SET status_code = $1, content_type = $2, body = $3 \
                 WHERE account_id = $4 AND idem_key = $5 AND token = $6 AND status_code IS NULL",
                args![
                    i64::from(response.status),
                    response.content_type.clone(),
                    response.body.as_str(),
                    account.as_str(),
                    key,
                    token
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Deletes up to `limit` keys expired at `now`; returns how many. Bounded so that a large
    /// backlog never holds the SQLite writer (or many Postgres row locks) for long.
    pub async fn purge_idempotency(&self, now: i64, limit: u64) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tx = self.begin_one_statement_write().await?;
        let n = tx
            .exec(
                "DELETE FROM idempotency_keys WHERE (account_id, idem_key) IN \
                 (SELECT account_id, idem_key FROM idempotency_keys WHERE expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2)",
                args![now, limit],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}

async fn record_in(
    c: &mut Conn,
    account: &AccountId,
    key: &str,
    now: i64,
) -> Result<Option<IdemRecord>, StoreError> {
    let Some(r) = c
        .fetch_opt(
            "SELECT fingerprint, token, effect, created_at, status_code, content_type, body \
                 FROM idempotency_keys WHERE account_id = $1 AND idem_key = $2 AND expires_at > $3",
            args![account.as_str(), key, now],
        )
        .await?
    else {
        return Ok(None);
    };
    let response = match (r.opt_i64(4)?, r.opt_text(6)?) {
        (Some(status), Some(body)) => Some(StoredResponse {
            status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("idempotency status {status}")))?,
            content_type: r.opt_text(5)?,
            body,
        }),
        _ => None,
    };
    Ok(Some(IdemRecord {
        fingerprint: r.text(0)?,
        token: r.text(1)?,
        effect: r.text(2)?,
        created_at: r.i64(3)?,
        response,
    }))
}
