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
//!
//! The writer is a rusqlite connection used in place (see [`crate::sqlite`]): statements run
//! synchronously while the operation holds the writer lock. The `COMMIT` (an fsync) and a wait
//! for another process's write lock run through [`crate::sqlite::blocking`]. An abandoned
//! operation is rolled back to its savepoint synchronously when it is dropped (an in-memory
//! step); if nobody else's work is in the batch, the batch transaction ends there too, so the
//! database's write lock is never left held by an idle writer.

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use crate::StoreError;
use crate::sqlite::{BUSY_TIMEOUT, blocking, is_busy, run};

/// The writer connection and the state of its open batch.
pub(crate) struct WriterState {
    conn: Connection,
    in_tx: bool,
    /// Operations whose savepoint was released, waiting for the batch's COMMIT.
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
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
    /// Opens the batch transaction, taking SQLite's write lock. The lock is normally free (this
    /// is the only writer of this process), so the first attempt does not wait; if another
    /// process holds it, the wait (up to the busy timeout) runs off the runtime's workers.
    fn begin_immediate(&mut self) -> Result<(), StoreError> {
        let conn = &self.conn;
        conn.busy_timeout(std::time::Duration::ZERO)?;
        let first = run(conn, "BEGIN IMMEDIATE");
        conn.busy_timeout(BUSY_TIMEOUT)?;
        match first {
            Err(e) if is_busy(&e) => blocking(|| run(conn, "BEGIN IMMEDIATE"))?,
            r => r?,
        }
        self.in_tx = true;
        Ok(())
    }

    /// Undoes an operation that ended without commit. If that fails, the transaction itself is
    /// gone (an aborting error): fail everyone waiting on it and start clean. If no other
    /// operation's work is in the batch, ends the (now empty) batch.
    fn discard_op(&mut self) {
        if !self.in_tx {
            return;
        }
        let ok = run(&self.conn, ROLLBACK_TO).is_ok() && run(&self.conn, RELEASE).is_ok();
        if !ok {
            self.abort("the batch transaction was aborted by an earlier error");
        } else if self.waiters.is_empty() {
            // Nothing to keep: end the transaction now (in memory, no fsync), releasing the
            // database's write lock.
            if run(&self.conn, "ROLLBACK").is_err() && !self.conn.is_autocommit() {
                self.abort("the batch transaction could not be ended");
            }
            self.in_tx = false;
        }
    }

    fn abort(&mut self, why: &str) {
        if !self.conn.is_autocommit() {
            let _ = run(&self.conn, "ROLLBACK");
        }
        self.in_tx = false;
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(why.to_owned()));
        }
    }

    /// Commits the open batch (if any) and tells its operations.
    fn flush(&mut self) {
        if !self.in_tx {
            return;
        }
        let conn = &self.conn;
        match blocking(|| run(conn, "COMMIT")) {
            Ok(()) => {
                COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.in_tx = false;
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; the batch is rolled back");
                self.abort(&format!("commit failed: {e}"));
            }
        }
    }
}

impl Writer {
    /// Wraps the writer connection.
    pub(crate) fn new(conn: Connection) -> Writer {
        Writer {
            state: Arc::new(Mutex::new(WriterState {
                conn,
                in_tx: false,
                waiters: Vec::new(),
            })),
        }
    }

    /// Starts an operation: takes the writer (FIFO), opens the batch if needed, sets a savepoint.
    pub(crate) async fn begin(&self) -> Result<BatchOp, StoreError> {
        let mut g = self.state.clone().lock_owned().await;
        if !g.in_tx {
            g.begin_immediate()?;
        }
        if let Err(e) = run(&g.conn, SAVEPOINT) {
            g.abort("could not open a savepoint");
            return Err(e.into());
        }
        Ok(BatchOp {
            guard: Some(g),
            state: self.state.clone(),
        })
    }

    /// Commits whatever is open (used at shutdown).
    pub(crate) async fn flush(&self) {
        self.state.lock().await.flush();
    }
}

/// One operation inside a batch. Dropping it without [`BatchOp::commit`] rolls it back.
pub struct BatchOp {
    guard: Option<OwnedMutexGuard<WriterState>>,
    state: Arc<Mutex<WriterState>>,
}

impl BatchOp {
    /// The connection, for this operation's statements. Refused if the batch transaction is
    /// gone (an aborting error): a statement must never run outside the operation's savepoint.
    pub(crate) fn conn(&mut self) -> Result<&Connection, StoreError> {
        match self.guard.as_ref() {
            Some(g) if g.conn.is_autocommit() => Err(StoreError::Sqlite(
                "the batch transaction was aborted by an earlier error".into(),
            )),
            Some(g) => Ok(&g.conn),
            None => Err(StoreError::Corrupt("operation already finished".into())),
        }
    }

    /// Keeps this operation's changes and returns once they are durable.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let Some(mut g) = self.guard.take() else {
            return Err(StoreError::Corrupt("operation already finished".into()));
        };
        if let Err(e) = run(&g.conn, RELEASE) {
            g.discard_op();
            return Err(e.into());
        }
        let (tx, rx) = oneshot::channel();
        g.waiters.push(tx);
        drop(g);
        // Queue for the writer behind the operations already waiting, then commit them all. If
        // this future is dropped while queued, the commit still happens (see `FlushOnDrop`).
        let mut pending = FlushOnDrop(Some(self.state.clone()));
        let mut g = self.state.lock().await;
        pending.0 = None;
        g.flush();
        drop(g);
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
            g.discard_op();
        }
    }
}

/// Flushes the batch from a new task if a committing operation is dropped while it queues for
/// the writer, so its released work neither waits for the next operation nor keeps the write
/// lock held.
struct FlushOnDrop(Option<Arc<Mutex<WriterState>>>);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        if let Some(state) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move { state.lock().await.flush() });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;
    use crate::args;
    use crate::db::Conn;
    use crate::sqlite::{ReadPool, Target};

    fn target(dir: &tempfile::TempDir) -> Target {
        Target::parse(&format!("sqlite://{}/t.db", dir.path().display())).unwrap()
    }

    fn setup(t: &Target) -> Writer {
        let c = t.open().unwrap();
        c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT NOT NULL CHECK (n >= 0))")
            .unwrap();
        Writer::new(c)
    }

    async fn insert(w: &Writer, id: &str, n: i64) -> Result<(), StoreError> {
        let mut c = Conn::SqliteBatch(w.begin().await?);
        c.exec("INSERT INTO t (id, n) VALUES ($1, $2)", args![id, n])
            .await?;
        c.commit().await
    }

    fn count(t: &Target) -> i64 {
        t.open()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_and_failed_operations_roll_back_and_free_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let w = setup(&t);
        insert(&w, "a", 1).await.unwrap();
        // A constraint violation rolls back only that operation; the batch ends (nothing else in
        // it), so another connection can take the write lock at once.
        let e = insert(&w, "a", 2).await.unwrap_err();
        assert!(matches!(e, StoreError::Constraint(_)), "{e:?}");
        {
            let mut c = Conn::SqliteBatch(w.begin().await.unwrap());
            c.exec("INSERT INTO t (id, n) VALUES ('b', 1)", args![])
                .await
                .unwrap();
            // dropped without commit
        }
        let other = t.open().unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").unwrap();
        assert_eq!(count(&t), 1);
        let g = w.state.lock().await;
        assert!(!g.in_tx && g.conn.is_autocommit() && g.waiters.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_off_the_workers_for_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let w = Arc::new(setup(&t));
        let other = t.open().unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let w2 = w.clone();
        let task = tokio::spawn(async move { insert(&w2, "a", 1).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished());
        other.execute_batch("COMMIT").unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(count(&t), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_operations_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let w = Arc::new(setup(&t));
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let w = w.clone();
            // Every third one violates the CHECK and must fail alone.
            let n = if i % 3 == 0 { -1 } else { i };
            tasks.push(tokio::spawn(async move {
                (n, insert(&w, &format!("k{i}"), n).await)
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                (n, Ok(())) => {
                    assert!(n >= 0);
                    ok += 1;
                }
                (n, Err(StoreError::Constraint(_))) => assert!(n < 0),
                (_, Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(count(&t), ok);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_transactions_see_one_snapshot_and_roll_back_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let w = setup(&t);
        insert(&w, "a", 1).await.unwrap();
        let pool = ReadPool::new(t.clone(), 2);
        let mut snap = pool.lease().await.unwrap();
        snap.begin().unwrap();
        let mut snap = Conn::SqliteRead(snap);
        let q = "SELECT COUNT(*) FROM t";
        assert_eq!(snap.fetch_one(q, args![]).await.unwrap().i64(0).unwrap(), 1);
        insert(&w, "b", 1).await.unwrap();
        // Same snapshot inside the transaction; a new autocommit read sees the new row.
        assert_eq!(snap.fetch_one(q, args![]).await.unwrap().i64(0).unwrap(), 1);
        let mut auto = Conn::SqliteRead(pool.lease().await.unwrap());
        assert_eq!(auto.fetch_one(q, args![]).await.unwrap().i64(0).unwrap(), 2);
        drop(auto);
        drop(snap);
        // Both connections came back to the pool in autocommit mode.
        let idle = pool.idle();
        assert_eq!(idle.len(), 2);
        assert!(idle.iter().all(Connection::is_autocommit));
    }

    #[tokio::test]
    async fn store_works_on_a_current_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = crate::Store::connect(&url).await.unwrap();
        let before = crate::Store::sqlite_commits();
        let mut c = store.begin_write().await.unwrap();
        c.exec(
            "INSERT INTO cursors (name, value) VALUES ($1, $2)",
            args!["x", 1i64],
        )
        .await
        .unwrap();
        c.commit().await.unwrap();
        assert!(crate::Store::sqlite_commits() > before);
        let mut r = store.read_conn().await.unwrap();
        let row = r
            .fetch_one("SELECT value FROM cursors WHERE name = $1", args!["x"])
            .await
            .unwrap();
        assert_eq!(row.i64(0).unwrap(), 1);
        store.close().await;
    }
}
