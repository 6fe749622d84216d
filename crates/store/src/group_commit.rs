//! Group commit for SQLite: many write operations, one durable `COMMIT`.
//!
//! SQLite has one writer, and with `synchronous=FULL` every `COMMIT` waits for an fsync, so one
//! transaction per operation caps throughput at the disk's fsync rate. Here the single writer
//! connection keeps a transaction open while operations queue up:
//!
//! * each operation runs inside its own `SAVEPOINT`, so it is still atomic on its own: an error
//!   or early return rolls back to the savepoint and leaves the others untouched;
//! * [`BatchOp::commit`] releases the savepoint and then **waits for a `COMMIT` that covers it**,
//!   so nothing is acknowledged before it is durable;
//! * whoever takes the writer lock after the queued operations performs that `COMMIT`. Under load
//!   the queue is long and one fsync covers many operations; at concurrency 1 every operation is
//!   committed on its own, as before.
//!
//! If a statement error aborts the whole transaction (SQLite does this only for I/O and similar
//! errors, not for constraint violations), every operation waiting on that batch gets an error,
//! never a false success: their savepoints went with the transaction.

use std::sync::Arc;

use sqlx::{Executor, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use crate::StoreError;

/// The writer connection and the state of its open batch.
pub(crate) struct WriterState {
    pub(crate) conn: SqliteConnection,
    in_tx: bool,
    /// Operations whose savepoint was released, waiting for the batch's COMMIT.
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// The last operation ended without commit: its savepoint must be rolled back before the
    /// connection is used again.
    rollback_pending: bool,
}

/// The single SQLite writer.
pub(crate) struct Writer {
    state: Arc<Mutex<WriterState>>,
}

/// Durable commits performed (for tests and the benchmark's batch-size figure).
pub(crate) static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

const SAVEPOINT: &str = "SAVEPOINT satchel_op";
const RELEASE: &str = "RELEASE SAVEPOINT satchel_op";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT satchel_op";

impl WriterState {
    /// Rolls back an abandoned operation. If that fails, the transaction itself is gone (an
    /// aborting error): fail everyone waiting on it and start clean.
    async fn settle_pending(&mut self) {
        if !self.rollback_pending {
            return;
        }
        self.rollback_pending = false;
        let ok = self.conn.execute(ROLLBACK_TO).await.is_ok()
            && self.conn.execute(RELEASE).await.is_ok();
        if !ok {
            self.abort("the batch transaction was aborted by an earlier error")
                .await;
        }
    }

    async fn abort(&mut self, why: &str) {
        let _ = self.conn.execute("ROLLBACK").await;
        self.in_tx = false;
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(why.to_owned()));
        }
    }

    /// Commits the open batch (if any) and tells its operations.
    async fn flush(&mut self) {
        self.settle_pending().await;
        if !self.in_tx {
            return;
        }
        match self.conn.execute("COMMIT").await {
            Ok(_) => {
                COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.in_tx = false;
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; the batch is rolled back");
                self.abort(&format!("commit failed: {e}")).await;
            }
        }
    }
}

impl Writer {
    /// Wraps the writer connection.
    pub(crate) fn new(conn: SqliteConnection) -> Writer {
        Writer {
            state: Arc::new(Mutex::new(WriterState {
                conn,
                in_tx: false,
                waiters: Vec::new(),
                rollback_pending: false,
            })),
        }
    }

    /// Starts an operation: takes the writer (FIFO), opens the batch if needed, sets a savepoint.
    pub(crate) async fn begin(&self) -> Result<BatchOp, StoreError> {
        let mut g = self.state.clone().lock_owned().await;
        g.settle_pending().await;
        if !g.in_tx {
            g.conn.execute("BEGIN IMMEDIATE").await?;
            g.in_tx = true;
        }
        if let Err(e) = g.conn.execute(SAVEPOINT).await {
            g.abort("could not open a savepoint").await;
            return Err(e.into());
        }
        Ok(BatchOp {
            guard: Some(g),
            state: self.state.clone(),
        })
    }

    /// Commits whatever is open (used at shutdown).
    pub(crate) async fn flush(&self) {
        self.state.lock().await.flush().await;
    }
}

/// One operation inside a batch. Dropping it without [`BatchOp::commit`] rolls it back.
pub struct BatchOp {
    guard: Option<OwnedMutexGuard<WriterState>>,
    state: Arc<Mutex<WriterState>>,
}

impl BatchOp {
    /// The connection, for this operation's statements.
    pub(crate) fn conn(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        match self.guard.as_mut() {
            Some(g) => Ok(&mut g.conn),
            None => Err(StoreError::Corrupt("operation already finished".into())),
        }
    }

    /// Keeps this operation's changes and returns once they are durable.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let Some(mut g) = self.guard.take() else {
            return Err(StoreError::Corrupt("operation already finished".into()));
        };
        if let Err(e) = g.conn.execute(RELEASE).await {
            g.rollback_pending = true;
            drop(g);
            return Err(e.into());
        }
        let (tx, rx) = oneshot::channel();
        g.waiters.push(tx);
        drop(g);
        // Queue for the writer behind the operations already waiting, then commit them all.
        self.state.lock().await.flush().await;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(StoreError::Config(why)),
            Err(_) => Err(StoreError::Config("batch dropped before commit".into())),
        }
    }
}

impl Drop for BatchOp {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.rollback_pending = true;
            drop(g);
            // Make sure the batch does not stay open (holding SQLite's write lock) if no other
            // operation follows.
            let state = self.state.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { state.lock().await.flush().await });
            }
        }
    }
}
