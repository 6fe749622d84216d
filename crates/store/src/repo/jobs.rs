//! Async jobs (`X-LNPAY-ASYNC` requests): queued, read back, finished.

use satchel_domain::{JobId, WtxId};

use crate::idempotency;
use crate::records::{JOB_COLS, JobRecord, JobStatus};
use crate::{Store, StoreError, args};

impl Store {
    /// Records a queued job.
    pub async fn insert_job(&self, j: &JobRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            &format!(
                "INSERT INTO jobs ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            args![
                j.id.as_str(),
                j.account_id.as_str(),
                j.wallet_id.as_str(),
                j.kind.as_str(),
                j.request.as_str(),
                j.status.code(),
                j.result_wtx_id.as_ref().map(WtxId::as_str),
                j.error.clone(),
                j.created_at,
                j.updated_at
            ],
        )
        .await?;
        idempotency::mark(&mut tx, &format!("job:{}", j.id)).await?;
        tx.commit().await
    }

    /// A job by id.
    pub async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        match c
            .fetch_opt(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"),
                args![id.as_str()],
            )
            .await?
        {
            Some(r) => Ok(Some(JobRecord::from_row(&r)?)),
            None => Ok(None),
        }
    }

    /// Jobs not finished yet, oldest first.
    pub async fn queued_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut c = self.read_conn().await?;
        let rows = c
            .fetch_all(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE status = 'queued' ORDER BY created_at"),
                args![],
            )
            .await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// Finishes a queued job (no-op if already finished).
    pub async fn finish_job(
        &self,
        id: &JobId,
        status: JobStatus,
        result_wtx_id: Option<&WtxId>,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.exec(
            "UPDATE jobs SET status = $1, result_wtx_id = $2, error = $3, updated_at = $4 \
             WHERE id = $5 AND status = 'queued'",
            args![
                status.code(),
                result_wtx_id.map(WtxId::as_str),
                error,
                now,
                id.as_str()
            ],
        )
        .await?;
        tx.commit().await
    }
}
