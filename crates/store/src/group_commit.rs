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
//! * the first operation to release into a batch queues one flusher task for the writer lock,
//!   behind the operations already waiting; it performs that `COMMIT`. Under load the queue is
//!   long and one commit covers many operations; at concurrency 1 every operation is committed on
//!   its own.
//!
//! If a statement error aborts the whole transaction (SQLite does this only for I/O and similar
//! errors, not for constraint violations), every operation waiting on that batch gets an error,
//! never a false success: their savepoints went with the transaction.
//!
//! The fsync is taken out of the writer lock. The writer connection runs with
//! `synchronous=NORMAL`, so its `COMMIT` only appends the batch's frames to the WAL; after
//! releasing the writer, the committer `fdatasync`s the WAL file itself ([`WalSync`]) and only
//! then answers the batch's operations. The next batch runs its statements while the previous
//! one is being flushed, and one flush covers every batch committed before it. A crash before
//! that flush can lose only unanswered batches: SQLite's WAL checksums make recovery stop at
//! the last intact commit. (NORMAL still syncs the WAL before every checkpoint and the database
//! after it, so checkpoints never copy unsynced frames.) Where the WAL file cannot be opened
//! (an in-memory database), the writer keeps `synchronous=FULL`.
//!
//! The writer is a rusqlite connection used in place (see [`crate::sqlite`]): statements run
//! synchronously while the operation holds the writer lock. The WAL flush and a wait for
//! another process's write lock run through [`crate::sqlite::blocking`]. An abandoned
//! operation is rolled back to its savepoint synchronously when it is dropped (an in-memory
//! step); if nobody else's work is in the batch, the batch transaction ends there too, so the
//! database's write lock is never left held by an idle writer.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use crate::StoreError;
use crate::sqlite::{BUSY_TIMEOUT, blocking, is_busy, run};

type Waiters = Vec<oneshot::Sender<Result<(), String>>>;

/// The writer connection and the state of its open batch.
pub(crate) struct WriterState {
    conn: Connection,
    in_tx: bool,
    /// Operations whose savepoint was released, waiting for the batch's COMMIT.
    waiters: Waiters,
    /// Batches committed so far (by this writer).
    committed: u64,
    /// A flusher task is queued for the writer and will commit the open batch.
    flush_queued: bool,
    /// The connection's change counter (`sqlite3_total_changes`) when the open batch began:
    /// a batch that leaves it unchanged wrote no row, and its commit has nothing to flush.
    changes_at_begin: u64,
    wal: Arc<WalSync>,
}

/// The single SQLite writer.
pub(crate) struct Writer {
    state: Arc<Mutex<WriterState>>,
    /// Whether commits are made durable by flushing the WAL here (see the module docs).
    flushes_wal: bool,
}

/// Makes committed batches durable by flushing the WAL file, outside the writer lock.
pub(crate) struct WalSync {
    /// The WAL file; `None` when the connection syncs its own commits (`synchronous=FULL`).
    file: Option<File>,
    /// Highest batch number known durable. Held during a flush: concurrent committers queue
    /// behind one flush and usually find their batch already covered.
    synced: Mutex<u64>,
    /// `fdatasync`s of the WAL made so far.
    #[cfg_attr(not(test), allow(dead_code))]
    flushes: std::sync::atomic::AtomicU64,
}

impl WalSync {
    /// Switches `conn` to `synchronous=NORMAL` and opens its WAL file for flushing; if the WAL
    /// file cannot be opened, leaves the connection at `synchronous=FULL`.
    fn attach(conn: &Connection) -> Result<WalSync, StoreError> {
        let path = conn
            .path()
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(format!("{p}-wal")));
        // A read creates the WAL file if this is the first connection.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        let file = match path {
            Some(p) if mode.eq_ignore_ascii_case("wal") => {
                match std::fs::OpenOptions::new().read(true).write(true).open(&p) {
                    Ok(f) => {
                        // The WAL's directory entry must be durable before any flush counts.
                        if let Some(dir) = p.parent() {
                            let dir = if dir.as_os_str().is_empty() {
                                std::path::Path::new(".")
                            } else {
                                dir
                            };
                            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
                                StoreError::Config(format!("syncing {}: {e}", dir.display()))
                            })?;
                        }
                        Some(f)
                    }
                    Err(e) => {
                        tracing::warn!(wal = %p.display(), error = %e, "cannot open the WAL file; commits sync inside SQLite");
                        None
                    }
                }
            }
            _ => None,
        };
        if file.is_some() {
            // Checkpoints normally run in the background (`spawn_checkpointer`); the writer only
            // checkpoints itself if the WAL grows past this many pages (~40 MB) anyway.
            conn.execute_batch(&format!(
                "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
            ))?;
        }
        Ok(WalSync {
            file,
            synced: Mutex::new(0),
            flushes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Returns once batch `seq` (and every batch before it) is on disk.
    async fn sync_to(&self, seq: u64, committed_now: impl FnOnce() -> u64) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        // Waiting here must not hold a runtime worker: the next batch needs one.
        let mut synced = self.synced.lock().await;
        if *synced >= seq {
            return Ok(());
        }
        // Everything committed by now is covered by this flush.
        let target = committed_now().max(seq);
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match blocking(|| file.sync_data()) {
            Ok(()) => {
                *synced = target;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "flushing the WAL failed; the batch is not acknowledged");
                Err(format!("flushing the WAL failed: {e}"))
            }
        }
    }
}

/// WAL size (pages) past which the writer checkpoints inside its own commit.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;
/// How often the background checkpointer copies WAL frames into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts a thread that checkpoints the WAL of `target` in the background (`PASSIVE`: it never
/// blocks the writer or readers), so the copying and its two fsyncs stay out of the writer's
/// critical section. It ends when `alive` has no strong references left.
pub(crate) fn spawn_checkpointer(target: crate::sqlite::Target, alive: std::sync::Weak<()>) {
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let conn = match target.open() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "no background checkpointer; the writer checkpoints");
                    return;
                }
            };
            while alive.upgrade().is_some() {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    tracing::debug!(error = %e, "background checkpoint");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no background checkpointer; the writer checkpoints");
    }
}

/// A committed batch whose operations are told once the WAL is flushed.
#[must_use = "a committed batch must be made durable and answered"]
struct Committed {
    /// The last batch that wrote something, up to this one.
    seq: u64,
    /// Whether this batch itself changed anything (else it waits only for earlier batches).
    wrote: bool,
    /// When its `COMMIT` started (the flush latency metric runs to the answer).
    started: std::time::Instant,
    waiters: Waiters,
    wal: Arc<WalSync>,
    state: Arc<Mutex<WriterState>>,
}

impl Committed {
    /// Flushes (sharing the flush with concurrent committers) and answers the operations.
    async fn finish(self) {
        let state = &self.state;
        let result = self
            .wal
            .sync_to(self.seq, || {
                // Batches committed after ours are covered too, if the writer is free to tell
                // us; otherwise ours is enough.
                state.try_lock().map_or(self.seq, |g| g.committed)
            })
            .await;
        if self.wrote {
            metrics::histogram!(FLUSH_SECONDS).record(self.started.elapsed().as_secs_f64());
        }
        for w in self.waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// Histogram: operations per group commit (metric name).
pub const BATCH_SIZE: &str = "satchel_store_group_commit_batch_size";
/// Histogram: seconds from a batch's `COMMIT` to its operations being answered, WAL flush
/// included (metric name).
pub const FLUSH_SECONDS: &str = "satchel_store_group_commit_flush_seconds";

/// Durable commits performed (for tests and the benchmark's batch-size figure).
pub(crate) static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Batches that changed no row, committed without a WAL flush (for tests).
pub(crate) static EMPTY_COMMITS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

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
        self.changes_at_begin = self.conn.total_changes();
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

    /// Commits the open batch (if any). Its operations are answered by [`Committed::finish`],
    /// to be called after the writer lock is released.
    ///
    /// A batch that changed no row (an idle worker's purge that found nothing to delete, an
    /// update whose `WHERE` matched nothing) appends nothing to the WAL, so it gets no batch
    /// number and no flush of its own: its operations are answered once the batches committed
    /// before it are durable (normally at once), since what they read may come from those.
    /// So an idle server calls no `fdatasync`.
    fn flush(&mut self, state: &Arc<Mutex<WriterState>>) -> Option<Committed> {
        self.flush_queued = false;
        if !self.in_tx {
            return None;
        }
        let conn = &self.conn;
        let started = std::time::Instant::now();
        // The counter counts rows changed by INSERT, UPDATE and DELETE, triggers included.
        // Schema changes are not counted, but they run only in migrations, whose transaction
        // always inserts their `schema_version` row too.
        let wrote = conn.total_changes() != self.changes_at_begin;
        // Without an fsync (unless checkpointing, or at synchronous=FULL): frames to the WAL.
        match blocking(|| run(conn, "COMMIT")) {
            Ok(()) => {
                self.in_tx = false;
                if wrote {
                    COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    #[allow(clippy::cast_precision_loss)] // a batch is far below 2^52 operations
                    metrics::histogram!(BATCH_SIZE).record(self.waiters.len() as f64);
                    self.committed = self.committed.saturating_add(1);
                } else {
                    EMPTY_COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Some(Committed {
                    seq: self.committed,
                    wrote,
                    started,
                    waiters: std::mem::take(&mut self.waiters),
                    wal: Arc::clone(&self.wal),
                    state: Arc::clone(state),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; the batch is rolled back");
                self.abort(&format!("commit failed: {e}"));
                None
            }
        }
    }
}

impl Writer {
    /// Wraps the writer connection (switching it to `synchronous=NORMAL` with the WAL flushed
    /// by the group commit; see the module docs).
    pub(crate) fn new(conn: Connection) -> Result<Writer, StoreError> {
        let wal = Arc::new(WalSync::attach(&conn)?);
        Ok(Writer {
            flushes_wal: wal.file.is_some(),
            state: Arc::new(Mutex::new(WriterState {
                conn,
                in_tx: false,
                waiters: Vec::new(),
                committed: 0,
                flush_queued: false,
                changes_at_begin: 0,
                wal,
            })),
        })
    }

    /// True when commits are made durable by flushing the WAL here (see the module docs).
    pub(crate) fn flushes_wal(&self) -> bool {
        self.flushes_wal
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

    /// (batches committed, batches known durable, the writer's `synchronous` setting).
    #[cfg(test)]
    async fn progress(&self) -> (u64, u64, i64) {
        let g = self.state.lock().await;
        let sync: i64 = g
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap_or(-1);
        let durable = *g.wal.synced.lock().await;
        (g.committed, durable, sync)
    }

    /// `fdatasync`s of the WAL so far.
    #[cfg(test)]
    async fn wal_flushes(&self) -> u64 {
        let g = self.state.lock().await;
        g.wal.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits whatever is open (used at shutdown).
    pub(crate) async fn flush(&self) {
        let committed = self.state.lock().await.flush(&self.state);
        if let Some(c) = committed {
            c.finish().await;
        }
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
        // One flusher per batch queues for the writer behind the operations already waiting
        // and commits them all; this operation does not queue again. The flusher is a task of
        // its own, so the batch is committed and answered even if this caller goes away.
        if !g.flush_queued {
            g.flush_queued = true;
            let state = self.state.clone();
            tokio::spawn(async move {
                let committed = state.lock().await.flush(&state);
                // The next batch runs while this one is flushed.
                if let Some(c) = committed {
                    c.finish().await;
                }
            });
        }
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
        Writer::new(c).unwrap()
    }

    async fn insert(w: &Writer, id: &str, n: i64) -> Result<(), StoreError> {
        let mut c = Conn::SqliteBatch(w.begin().await?, Default::default());
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
            let mut c = Conn::SqliteBatch(w.begin().await.unwrap(), Default::default());
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

    /// The writer commits at synchronous=NORMAL and flushes the WAL itself: every
    /// acknowledgement comes after a flush covering its batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_only_after_the_wal_flush() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let w = Arc::new(setup(&t));
        assert!(w.state.lock().await.wal.file.is_some());
        for i in 0..20 {
            insert(&w, &format!("s{i}"), i).await.unwrap();
            let (committed, durable, sync) = w.progress().await;
            assert_eq!(sync, 1, "writer runs at synchronous=NORMAL");
            assert!(committed > 0);
            assert!(
                durable >= committed,
                "acked before flush: {durable} < {committed}"
            );
        }
        // Concurrent operations: fewer flushes than operations, and all flushed at the end.
        let mut tasks = Vec::new();
        for i in 0..100 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                insert(&w, &format!("c{i}"), i).await.unwrap();
                // Whatever batch this one was in is durable by now.
                let (_, durable, _) = w.progress().await;
                durable
            }));
        }
        let (committed_before, _, _) = w.progress().await;
        for task in tasks {
            assert!(task.await.unwrap() > 0);
        }
        let (committed, durable, _) = w.progress().await;
        assert!(committed > committed_before);
        assert!(durable >= committed);
        assert_eq!(count(&t), 120);
    }

    /// A batch that changed no row (what an idle server's periodic purges are: a `DELETE` or
    /// `UPDATE` matching nothing) is committed without flushing the WAL; its operations are
    /// still answered, and the next batch that writes is flushed as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_changed_nothing_is_not_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(&dir);
        let w = Arc::new(setup(&t));
        insert(&w, "a", 1).await.unwrap();
        let (committed, durable, _) = w.progress().await;
        let flushes = w.wal_flushes().await;
        assert!(flushes > 0 && durable >= committed);

        for _ in 0..10 {
            let mut c = Conn::SqliteBatch(w.begin().await.unwrap(), Default::default());
            let n = c
                .exec("DELETE FROM t WHERE id = $1", args!["nobody"])
                .await
                .unwrap();
            assert_eq!(n, 0);
            c.exec("UPDATE t SET n = n + 1 WHERE id = $1", args!["nobody"])
                .await
                .unwrap();
            c.commit().await.unwrap();
        }
        // Concurrent empty operations share batches; none is flushed either.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::SqliteBatch(w.begin().await.unwrap(), Default::default());
                c.exec("DELETE FROM t WHERE n < 0", args![]).await.unwrap();
                c.commit().await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(w.wal_flushes().await, flushes, "an empty batch was flushed");
        assert_eq!(w.progress().await.0, committed);

        // A write after the idle spell is flushed before it is acknowledged.
        insert(&w, "b", 2).await.unwrap();
        let (after, durable, _) = w.progress().await;
        assert!(after > committed && durable >= after);
        assert!(w.wal_flushes().await > flushes);
        assert_eq!(count(&t), 2);
    }

    /// An in-memory database has no WAL file: commits stay synchronous inside SQLite.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_database_keeps_synchronous_full() {
        let t = Target::parse("sqlite::memory:").unwrap();
        let c = t.open().unwrap();
        c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT NOT NULL CHECK (n >= 0))")
            .unwrap();
        let w = Writer::new(c).unwrap();
        assert!(w.state.lock().await.wal.file.is_none());
        insert(&w, "a", 1).await.unwrap();
        let (_, _, sync) = w.progress().await;
        assert_eq!(sync, 2);
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
