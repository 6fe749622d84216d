//! The outgoing payment state machine. One detached task per payment (`spawn_drive`) moves it
//! `reserved` → `dispatched` (only the driver that wins that move sends), calls the node, and
//! books what the node proves: success settles with the real fee, a failure is refunded only
//! when a fresh lookup agrees, anything else is `unknown` and polled (backing off to
//! [`MAX_POLL`]) until the node says how it ended. The request that started the payment only
//! waits for the task up to its deadline (`wait_opt`), then answers from our books.

use std::time::Duration;

use satchel_domain::{FailureReason, LnTxId, Msat, PaymentStatus, Preimage, WtxId, now_secs};
use satchel_lightning::{LnError, PayOutcome, PayRequest, PayTarget, PaymentLookup};
use satchel_store::{LnTxRecord, PaymentSettled, PaymentStateError, SettleCmd};
use serde_json::Value;

use super::{Final, PaymentResult, PaymentService, failure_of};
use crate::ServiceError;
use crate::passthru::PassThru;

/// Longest pause between two lookups of an unresolved payment.
const MAX_POLL: Duration = Duration::from_secs(30);

impl PaymentService {
    pub(super) async fn done_of(&self, l: &LnTxRecord) -> Result<PaymentResult, ServiceError> {
        let mut w = self.ctx.store.wtxs_of_lntx(&l.id).await?.into_iter();
        let wtx = w
            .next()
            .ok_or_else(|| ServiceError::Internal("succeeded payment without WTX".into()))?;
        Ok(PaymentResult::Done {
            wtx,
            fee_wtx: w.next(),
        })
    }

    pub(super) async fn wait(
        &self,
        lntx: LnTxRecord,
        target: PayTarget,
        wait: Duration,
    ) -> Result<PaymentResult, ServiceError> {
        self.wait_opt(lntx, target, Some(wait)).await
    }

    pub(super) async fn wait_opt(
        &self,
        lntx: LnTxRecord,
        target: PayTarget,
        wait: Option<Duration>,
    ) -> Result<PaymentResult, ServiceError> {
        let id = lntx.id.clone();
        // One deadline for the whole request, whoever ends up driving the payment.
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let handle = self.spawn_drive(lntx, target);
        let joined = match (handle, deadline) {
            (Some(h), Some(d)) => tokio::time::timeout_at(d, h).await.ok(),
            (Some(h), None) => Some(h.await),
            (None, _) => None,
        };
        match joined {
            Some(Ok(Ok(Final::Settled(s)))) => Ok(PaymentResult::Done {
                wtx: s.wtx,
                fee_wtx: s.fee_wtx,
            }),
            Some(Ok(Ok(Final::Failed(r)))) => Err(ServiceError::PaymentFailed(r)),
            // The driver stopped on an error (e.g. the database). The node may have paid, and
            // recovery will book it: follow our books like any pending payment, never report a
            // failure we do not know.
            Some(Ok(Err(_))) | Some(Err(_)) | None => {
                if let Some(Ok(Err(e))) = &joined {
                    tracing::error!(lntx = %id, error = %e, "payment driver error; answering from our books");
                }
                if let Some(Err(e)) = &joined {
                    tracing::error!(lntx = %id, error = %e, "payment driver task died; recovery resumes it");
                }
                let mut pause = Duration::from_millis(20);
                loop {
                    let current = self.current(&id).await?;
                    match current.status {
                        Some(PaymentStatus::Succeeded) => return self.done_of(&current).await,
                        Some(PaymentStatus::Failed) => {
                            return Err(ServiceError::PaymentFailed(failure_of(&current)));
                        }
                        _ => {}
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Ok(PaymentResult::Pending(current));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Starts driving a payment unless this process already is. The task is detached.
    pub(super) fn spawn_drive(
        &self,
        lntx: LnTxRecord,
        target: PayTarget,
    ) -> Option<tokio::task::JoinHandle<Result<Final, ServiceError>>> {
        {
            let mut d = self.driving.lock().unwrap_or_else(|e| e.into_inner());
            if !d.insert(lntx.id.clone()) {
                return None;
            }
        }
        let this = self.clone();
        Some(crate::spawn_for_request(async move {
            let id = lntx.id.clone();
            let r = this.drive(lntx, target).await;
            if let Err(e) = &r {
                tracing::error!(lntx = %id, error = %e, "payment driver stopped; recovery will resume it");
            }
            this.driving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            r
        }))
    }

    /// Drives one payment until the node says how it ended.
    async fn drive(&self, listed: LnTxRecord, target: PayTarget) -> Result<Final, ServiceError> {
        let store = &self.ctx.store;
        let hash = listed.payment_hash;
        // The caller's copy may be stale (recovery lists payments, then drives them later; the
        // original driver may have finished meanwhile). Only the current record decides.
        let lntx = self.current(&listed.id).await?;
        if let Some(done) = self.final_of(&lntx).await? {
            return Ok(done);
        }
        let mut send = match lntx.status {
            // Only the driver that wins reserved -> dispatched sends; a loser re-reads.
            Some(PaymentStatus::Reserved) => {
                store
                    .mark_payment(
                        &lntx.id,
                        &[PaymentStatus::Reserved],
                        PaymentStatus::Dispatched,
                        now_secs(),
                    )
                    .await?
            }
            // Already dispatched before (restart): ask first, the node may have it.
            _ => false,
        };
        let mut pause = Duration::from_millis(200);
        loop {
            if send {
                send = false;
                // Never send a payment that is no longer live in our books: a refunded payment
                // sent again would be paid by the node while the wallet keeps its refund.
                let now = self.current(&lntx.id).await?;
                if let Some(done) = self.final_of(&now).await? {
                    return Ok(done);
                }
                let req = PayRequest {
                    target: target.clone(),
                    fee_limit: lntx.fee_limit,
                    timeout: self.ctx.cfg.node_pay_timeout,
                };
                let outcome = self.ctx.ln.pay(req).await;
                satchel_store::crash::crash_point("after_dispatch");
                match outcome {
                    Ok(PayOutcome::Succeeded { preimage, fee }) => {
                        return self.settle(&lntx, preimage, fee).await;
                    }
                    Ok(PayOutcome::Failed(reason)) => {
                        // Confirm with a fresh lookup before giving any money back.
                        match self.ctx.ln.lookup_payment(hash).await {
                            Ok(PaymentLookup::Failed(r)) => return self.fail(&lntx, r).await,
                            Ok(PaymentLookup::NotFound) => return self.fail(&lntx, reason).await,
                            Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                                return self.settle(&lntx, preimage, fee).await;
                            }
                            Ok(PaymentLookup::InFlight) | Err(_) => {
                                self.mark_unknown(&lntx).await?
                            }
                        }
                    }
                    Ok(PayOutcome::InFlight) => {}
                    Err(LnError::Rejected(msg)) => {
                        tracing::warn!(lntx = %lntx.id, %msg, "node rejected payment");
                        match self.ctx.ln.lookup_payment(hash).await {
                            Ok(PaymentLookup::NotFound) => {
                                return self.fail(&lntx, FailureReason::Error).await;
                            }
                            Ok(PaymentLookup::Failed(r)) => return self.fail(&lntx, r).await,
                            Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                                return self.settle(&lntx, preimage, fee).await;
                            }
                            Ok(PaymentLookup::InFlight) | Err(_) => {
                                self.mark_unknown(&lntx).await?
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(lntx = %lntx.id, error = %e, "payment outcome unknown; will keep asking the node");
                        self.mark_unknown(&lntx).await?;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
            match self.ctx.ln.lookup_payment(hash).await {
                Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                    return self.settle(&lntx, preimage, fee).await;
                }
                Ok(PaymentLookup::Failed(r)) => return self.fail(&lntx, r).await,
                Ok(PaymentLookup::InFlight) => {}
                // The node never got it (we crashed before the call, or the call never arrived):
                // sending now is safe because pay is idempotent per payment hash.
                Ok(PaymentLookup::NotFound) => send = true,
                Err(e) => tracing::debug!(lntx = %lntx.id, error = %e, "lookup failed; retrying"),
            }
        }
    }

    async fn current(&self, id: &LnTxId) -> Result<LnTxRecord, ServiceError> {
        self.ctx
            .store
            .lntx(id)
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("payment {id} vanished")))
    }

    /// The outcome of a payment that is already final in our books.
    async fn final_of(&self, l: &LnTxRecord) -> Result<Option<Final>, ServiceError> {
        Ok(match l.status {
            Some(PaymentStatus::Succeeded) => match self.done_of(l).await? {
                PaymentResult::Done { wtx, fee_wtx } => Some(Final::Settled(PaymentSettled {
                    wtx,
                    fee_wtx,
                    newly_settled: false,
                })),
                PaymentResult::Pending(_) => None,
            },
            Some(PaymentStatus::Failed) => Some(Final::Failed(failure_of(l))),
            _ => None,
        })
    }

    async fn mark_unknown(&self, l: &LnTxRecord) -> Result<(), ServiceError> {
        self.ctx
            .store
            .mark_payment(
                &l.id,
                &[PaymentStatus::Reserved, PaymentStatus::Dispatched],
                PaymentStatus::Unknown,
                now_secs(),
            )
            .await?;
        Ok(())
    }

    async fn settle(
        &self,
        l: &LnTxRecord,
        preimage: Preimage,
        fee: Msat,
    ) -> Result<Final, ServiceError> {
        satchel_store::crash::crash_point("before_settle");
        let wtx_id = WtxId::generate();
        let fee_pass_thru = PassThru::default()
            .set("source_transaction", Value::String(wtx_id.to_string()))
            .set("fee_target_wallet", Value::String("contained".into()))
            .to_json();
        let settled = self
            .ctx
            .store
            .settle_payment(&SettleCmd {
                lntx_id: l.id.clone(),
                preimage,
                fee,
                wtx_id,
                fee_wtx_id: WtxId::generate(),
                user_label: l.memo.clone(),
                pass_thru: l.pass_thru.clone(),
                fee_pass_thru,
                now: now_secs(),
            })
            .await
            .map_err(|e| match e {
                PaymentStateError::AlreadyFailed => {
                    tracing::error!(lntx = %l.id, "node reports success for a payment we refunded");
                    ServiceError::Internal(format!(
                        "payment {} succeeded after it was refunded",
                        l.id
                    ))
                }
                other => ServiceError::Internal(other.to_string()),
            })?;
        if settled.newly_settled {
            crate::count_payment(self.ctx.cfg.backend_name, "succeeded");
        }
        Ok(Final::Settled(settled))
    }

    async fn fail(&self, l: &LnTxRecord, reason: FailureReason) -> Result<Final, ServiceError> {
        match self
            .ctx
            .store
            .fail_payment(&l.id, reason.lnd_name(), now_secs())
            .await
        {
            Ok(_) => {
                // `fail_payment` is idempotent: only a payment that was still live is counted.
                if l.status.is_some_and(|s| s.is_live()) {
                    crate::count_payment(self.ctx.cfg.backend_name, "failed");
                }
                Ok(Final::Failed(reason))
            }
            Err(PaymentStateError::AlreadySucceeded) => {
                let s = self.done_of(l).await?;
                match s {
                    PaymentResult::Done { wtx, fee_wtx } => Ok(Final::Settled(PaymentSettled {
                        wtx,
                        fee_wtx,
                        newly_settled: false,
                    })),
                    PaymentResult::Pending(_) => {
                        Err(ServiceError::Internal("inconsistent payment".into()))
                    }
                }
            }
            Err(e) => Err(ServiceError::Internal(e.to_string())),
        }
    }
}
