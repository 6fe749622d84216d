//! Safe retries: the `Idempotency-Key` of a money-moving request.
//!
//! The key's row is written by the store inside the transaction of the request's money
//! movement (see `satchel_store::idempotency`), so an operation commits at most once per key,
//! across processes and crashes. This service looks keys up, stores answers, and rebuilds an
//! answer from what the operation created when the process died before storing it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use satchel_domain::{FailureReason, JobId, LnTxId, PaymentStatus, WalletId, WtxId, now_secs};
use satchel_store::{IdemClaim, IdemRecord, LnTxRecord, StoredResponse, TransferDone};

use crate::auth::Caller;
use crate::payments::PaymentResult;
use crate::{Ctx, ServiceError};

/// What a keyed request's operation created, read back as it is now.
// Returned once per rebuilt answer, never stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Rebuilt {
    /// A wallet (its keys were shown once and are not stored: they cannot be shown again).
    Wallet(WalletId),
    /// An invoice.
    Invoice(LnTxRecord),
    /// A withdraw or keysend: its current state.
    Payment(PaymentResult),
    /// A withdraw or keysend that failed for good.
    PaymentFailed(FailureReason),
    /// A transfer.
    Transfer(TransferDone),
    /// An asynchronous keysend job.
    Job(JobId),
}

/// Idempotency keys.
#[derive(Clone)]
pub struct IdempotencyService {
    ctx: Arc<Ctx>,
}

impl IdempotencyService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> IdempotencyService {
        IdempotencyService { ctx }
    }

    /// The unexpired record of `key` in the caller's account.
    pub async fn record(
        &self,
        caller: &Caller,
        key: &str,
    ) -> Result<Option<IdemRecord>, ServiceError> {
        Ok(self
            .ctx
            .store
            .idempotency_record(&caller.account_id, key, now_secs())
            .await?)
    }

    /// The record of `key` as a request that just failed must see it: including a concurrent
    /// request's operation committed but not yet visible to readers (SQLite's group commit).
    pub async fn record_after_failure(
        &self,
        caller: &Caller,
        key: &str,
    ) -> Result<Option<IdemRecord>, ServiceError> {
        Ok(self
            .ctx
            .store
            .idempotency_record_after_write(&caller.account_id, key, now_secs())
            .await?)
    }

    /// A fresh claim of `key` for one attempt of a request with this fingerprint.
    pub fn claim(&self, caller: &Caller, key: &str, fingerprint: String) -> IdemClaim {
        let now = now_secs();
        let keep = i64::try_from(self.ctx.cfg.idempotency_retention.as_secs()).unwrap_or(i64::MAX);
        IdemClaim {
            account_id: caller.account_id.clone(),
            key: key.to_owned(),
            fingerprint,
            token: satchel_domain::ids::random_alnum(24),
            now,
            expires_at: now.saturating_add(keep),
        }
    }

    /// Runs `op` (one keyed request's work) with `claim` visible to the store operations it
    /// makes, so the key's row is written in the transaction of its money movement. Passes the
    /// `before_idempotent_answer` kill point once `op` has returned (see `satchel_store::crash`).
    pub async fn run_claimed<F: Future>(&self, claim: IdemClaim, op: F) -> F::Output {
        let out = satchel_store::idempotency::with_claim(claim, op).await;
        satchel_store::crash::crash_point("before_idempotent_answer");
        out
    }

    /// Stores the answer of the attempt that wrote the key's row; false if it was not this
    /// attempt's (its operation did not commit).
    pub async fn finish(
        &self,
        claim: &IdemClaim,
        response: &StoredResponse,
    ) -> Result<bool, ServiceError> {
        Ok(self
            .ctx
            .store
            .finish_idempotency(&claim.account_id, &claim.key, &claim.token, response)
            .await?)
    }

    /// Rebuilds what a keyed request did from its record's `effect`, as it is now.
    pub async fn rebuild(&self, caller: &Caller, effect: &str) -> Result<Rebuilt, ServiceError> {
        let corrupt = || ServiceError::Internal(format!("bad idempotency effect {effect}"));
        let (kind, ids) = effect.split_once(':').ok_or_else(corrupt)?;
        let store = &self.ctx.store;
        let lntx = |id: &str| {
            let id = LnTxId::from_db(id.to_owned());
            async move {
                store
                    .lntx(&id)
                    .await?
                    .filter(|l| l.account_id == caller.account_id)
                    .ok_or_else(|| ServiceError::Internal(format!("idempotent lnTx {id} gone")))
            }
        };
        Ok(match kind {
            "wallet" => Rebuilt::Wallet(WalletId::from_db(ids.to_owned())),
            "job" => Rebuilt::Job(JobId::from_db(ids.to_owned())),
            "invoice" => Rebuilt::Invoice(lntx(ids).await?),
            "payment" => {
                let l = lntx(ids).await?;
                match l.status {
                    Some(PaymentStatus::Succeeded) => {
                        let mut w = store.wtxs_of_lntx(&l.id).await?.into_iter();
                        let wtx = w.next().ok_or_else(|| {
                            ServiceError::Internal("succeeded payment without WTX".into())
                        })?;
                        Rebuilt::Payment(PaymentResult::Done {
                            wtx,
                            fee_wtx: w.next(),
                        })
                    }
                    Some(PaymentStatus::Failed) => Rebuilt::PaymentFailed(
                        l.failure_reason
                            .as_deref()
                            .and_then(FailureReason::from_lnd_name)
                            .unwrap_or(FailureReason::Error),
                    ),
                    _ => Rebuilt::Payment(PaymentResult::Pending(l)),
                }
            }
            "transfer" => {
                let (out_id, in_id) = ids.split_once(':').ok_or_else(corrupt)?;
                let wtx = |id: &str| {
                    let id = WtxId::from_db(id.to_owned());
                    async move {
                        store
                            .wtx(&id)
                            .await?
                            .ok_or_else(|| ServiceError::Internal(format!("transfer {id} gone")))
                    }
                };
                Rebuilt::Transfer(TransferDone {
                    wtx_out: wtx(out_id).await?,
                    wtx_in: wtx(in_id).await?,
                })
            }
            _ => return Err(corrupt()),
        })
    }

    /// Deletes keys past their retention, at most `limit` per call; returns how many.
    pub async fn purge_expired(&self, limit: u64) -> Result<u64, ServiceError> {
        Ok(self.ctx.store.purge_idempotency(now_secs(), limit).await?)
    }
}

/// How long keys are kept by default: LNPay clients may retry for a day.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(86_400);
