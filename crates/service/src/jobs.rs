//! Durable asynchronous jobs (`X-LNPAY-ASYNC`). A job is committed before the client gets its id;
//! a restart resumes queued jobs, and a re-run pays the same payment hash, so it cannot pay twice.

use std::sync::Arc;
use std::time::Duration;

use satchel_domain::{JobId, KeyRole, Permission, now_secs};
use satchel_store::{JobRecord, JobStatus, WtxRecord};

use crate::auth::{AuthService, Caller};
use crate::payments::{KeysendRequest, PaymentResult, PaymentService, ValidKeysend};
use crate::{Ctx, ErrorClass, ServiceError};

/// Job kind: keysend.
pub const KIND_KEYSEND: &str = "keysend";

/// Asynchronous jobs.
#[derive(Clone)]
pub struct JobService {
    ctx: Arc<Ctx>,
    payments: PaymentService,
    lnurlp_pay: crate::lnurlp_pay::LnurlpPayService,
}

impl JobService {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        payments: PaymentService,
        lnurlp_pay: crate::lnurlp_pay::LnurlpPayService,
    ) -> JobService {
        JobService {
            ctx,
            payments,
            lnurlp_pay,
        }
    }

    /// Stores a validated job and starts it (the job kinds of other services).
    pub(crate) async fn start(&self, job: JobRecord) -> Result<JobId, ServiceError> {
        self.ctx.store.insert_job(&job).await?;
        let this = self.clone();
        let id = job.id.clone();
        crate::spawn_for_request(async move { this.run(job).await });
        Ok(id)
    }

    /// Validates a keysend now (so bad input still gets a 400), stores it as a job and starts it.
    pub async fn enqueue_keysend(
        &self,
        caller: &Caller,
        key: &str,
        req: KeysendRequest,
    ) -> Result<JobId, ServiceError> {
        let wallet = AuthService::new(self.ctx.clone())
            .wallet_for(caller, key, Permission::WalletWithdraw)
            .await?;
        let k = self.payments.validate_keysend(req)?;
        let now = now_secs();
        let job = JobRecord {
            id: JobId::generate(),
            account_id: caller.account_id.clone(),
            wallet_id: wallet.id,
            kind: KIND_KEYSEND.to_owned(),
            request: serde_json::to_string(&k)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
            status: JobStatus::Queued,
            result_wtx_id: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        self.start(job).await
    }

    /// A job of the caller's account, with its result WTX if it succeeded.
    pub async fn get(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(JobRecord, Option<WtxRecord>), ServiceError> {
        let id = JobId::parse(id).map_err(|_| ServiceError::JobNotFound)?;
        let job = match self.ctx.store.job(&id).await? {
            Some(j) if j.account_id == caller.account_id => j,
            _ => return Err(ServiceError::JobNotFound),
        };
        let wtx = match &job.result_wtx_id {
            Some(w) => self.ctx.store.wtx(w).await?,
            None => None,
        };
        Ok((job, wtx))
    }

    /// Starts every queued job (after a restart).
    pub async fn resume(&self) -> Result<usize, ServiceError> {
        let jobs = self.ctx.store.queued_jobs().await?;
        let n = jobs.len();
        for job in jobs {
            let this = self.clone();
            tokio::spawn(async move { this.run(job).await });
        }
        Ok(n)
    }

    async fn run(&self, job: JobRecord) {
        let id = job.id.clone();
        let (status, wtx, err) = match self.execute(&job).await {
            Ok(w) => (JobStatus::Succeeded, Some(w), None),
            Err(e) if matches!(e.class(), ErrorClass::Internal | ErrorClass::Unavailable) => {
                // Not the client's fault and not a payment outcome: leave it queued for the next
                // start rather than report a failure we are not sure of.
                tracing::error!(job = %id, error = %e, "job interrupted; it stays queued");
                return;
            }
            Err(e) => (JobStatus::Failed, None, Some(e.to_string())),
        };
        if let Err(e) = self
            .ctx
            .store
            .finish_job(
                &id,
                status,
                wtx.as_ref().map(|w| &w.id),
                err.as_deref(),
                now_secs(),
            )
            .await
        {
            tracing::error!(job = %id, error = %e, "could not record job result");
        }
    }

    async fn execute(&self, job: &JobRecord) -> Result<WtxRecord, ServiceError> {
        if job.kind == crate::lnurlp_pay::JOB_KIND {
            return self.lnurlp_pay.run_job(job).await;
        }
        let k: ValidKeysend = serde_json::from_str(&job.request)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let wallet = self
            .ctx
            .store
            .wallet(&job.wallet_id)
            .await?
            .ok_or_else(|| ServiceError::WalletNotFound(job.wallet_id.to_string()))?;
        let caller = Caller {
            account_id: job.account_id.clone(),
            role: KeyRole::Secret,
        };
        let mut pause = Duration::from_millis(200);
        loop {
            match self
                .payments
                .execute_keysend(&caller, &wallet, &k, None)
                .await?
            {
                PaymentResult::Done { wtx, .. } => return Ok(wtx),
                // Another driver (recovery) owns the payment; check back until it ends.
                PaymentResult::Pending(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
