//! Satchel's persistence: a double-entry ledger plus the records around it, on SQLite or Postgres.
//!
//! Every method that moves money is **one database transaction** that:
//! 1. appends balanced postings (they sum to zero) and writes the user-visible records (wallet
//!    transactions, Lightning transactions),
//! 2. moves each stored balance by one guarded update (`balance_msat + delta >= 0`), judged on
//!    the row as locked (SQLite's single writer; the row lock the update takes on Postgres,
//!    where some operations lock their wallet earlier with `SELECT … FOR NO KEY UPDATE`).
//!
//! `CHECK (balance_msat >= 0)` is the second net; unique indexes make every credit and every live
//! payment unique per payment hash. No process-wide mutex guards money, so several Satchel
//! processes may share one Postgres database.
//!
//! Chart of accounts (signed postings, credits to a wallet positive):
//! - `wal_…`: what we owe a wallet's owner (never negative);
//! - `sys:lightning`: the node's holdings on behalf of users (negative of what came in);
//! - `sys:in_flight`: outgoing payments reserved but not settled (amount + fee limit);
//! - `sys:unclaimed`: money the node received that belongs to no wallet;
//! - `sys:revenue`: the operator's sub-sat rounding revenue (wallets move in whole sats only).

pub mod audit;
pub mod crash;
pub mod db;
pub mod events;
mod gauges;
#[doc(hidden)]
pub mod group_commit;
pub mod idempotency;
mod ledger;
pub mod lnurlp;
pub mod lnurlw;
pub mod outbox;
mod records;
mod repo;
pub mod request_id;
mod sats;
pub mod schema;
#[doc(hidden)]
pub mod sqlite;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// A pooled Postgres connection idle at least this long is pinged before it is handed out.
///
/// sqlx already pings every connection when it goes back to the pool, and closes it if that
/// fails, so a connection used moments ago is known good. Pinging it again on acquire (sqlx's
/// default) added a round trip to every request: without it GET wallet went from 14,185-14,458
/// to 19,589-21,225/s (docs/benchmarks.md). A connection that sat idle, possibly across a
/// Postgres restart, is still tested first.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

pub use audit::AuditReport;
use db::Conn;
pub use db::Dialect;
pub use gauges::Gauges;
pub use idempotency::{IdemClaim, IdemRecord, StoredResponse};
pub use lnurlp::{LnurlpInvoice, LnurlpLink, LnurlpWriteError};
pub use lnurlw::{LinkClaim, LnurlwKind, LnurlwLink};
pub use outbox::{
    AttemptOutcome, AttemptRecord, DEFAULT_ALL, DeliveryRecord, DeliveryStatus, DueDelivery,
    EventRecord, WebhookRecord,
};
pub use records::*;
pub use repo::*;

/// Failures of the storage layer itself (not business rule violations).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row that must exist does not.
    #[error("not found")]
    NotFound,
    /// A constraint fired (unique, check, foreign key).
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// A ledger transaction would take a wallet below zero: its balance as held when the guarded
    /// update ran. Callers that checked the balance under a row lock never see this; callers
    /// that checked an earlier read report it as insufficient balance.
    #[error("overdraft refused (balance {0})")]
    Overdraft(satchel_domain::Msat),
    /// A stored value could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database could not be opened or the URL is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Anything else from the driver (Postgres).
    #[error("database error: {0}")]
    Db(sqlx::Error),
    /// Anything else from SQLite.
    #[error("database error: {0}")]
    Sqlite(String),
}

impl StoreError {
    /// Whether the database could not be reached, as opposed to refusing or failing the
    /// statement: the connection was refused, lost or timed out, the pool had no connection
    /// to give in time or is closed, or Postgres is shutting down, starting up or out of
    /// connection slots (`57P01`–`57P03`, class `08`, `53300`). The API answers these 503 with
    /// `Retry-After`. A write that saw one may still have committed (the connection can drop
    /// during `COMMIT`), so this never means "nothing happened".
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|code| {
                code.starts_with("08")
                    || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(d) = &e {
            use sqlx::error::ErrorKind;
            match d.kind() {
                ErrorKind::UniqueViolation
                | ErrorKind::CheckViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation => {
                    return StoreError::Constraint(d.message().to_owned());
                }
                _ => {}
            }
        }
        StoreError::Db(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    /// The same classification as sqlx's for SQLite: UNIQUE / PRIMARY KEY, CHECK, FOREIGN KEY
    /// and NOT NULL violations are [`StoreError::Constraint`] (with SQLite's message, e.g.
    /// `UNIQUE constraint failed: wtxs.id`); everything else is [`StoreError::Sqlite`].
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ffi;
        if let rusqlite::Error::SqliteFailure(f, msg) = &e
            && matches!(
                f.extended_code,
                ffi::SQLITE_CONSTRAINT_UNIQUE
                    | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    | ffi::SQLITE_CONSTRAINT_CHECK
                    | ffi::SQLITE_CONSTRAINT_FOREIGNKEY
                    | ffi::SQLITE_CONSTRAINT_NOTNULL
            )
        {
            return StoreError::Constraint(msg.clone().unwrap_or_else(|| e.to_string()));
        }
        StoreError::Sqlite(e.to_string())
    }
}

impl From<satchel_domain::MoneyError> for StoreError {
    fn from(e: satchel_domain::MoneyError) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }
}

enum Pools {
    Sqlite {
        read: Arc<sqlite::ReadPool>,
        write: group_commit::Writer,
        /// The background checkpointer runs while this lives.
        _checkpointer: Arc<()>,
    },
    Postgres(PgPool),
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pools: Arc<Pools>,
    /// Rings after commits that wrote events (see [`events::EventBell`]).
    bell: Arc<events::EventBell>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.dialect())
    }
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `postgres://…`) and
    /// brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::open(url, None).await
    }

    /// Opens the database at `url` migrating it only up to schema version `version`: how an
    /// older Satchel left it. For upgrade tests, which write rows as that version would and
    /// then open the database with [`Store::connect`].
    #[doc(hidden)]
    pub async fn connect_at_schema(url: &str, version: i64) -> Result<Store, StoreError> {
        Store::open(url, Some(version)).await
    }

    async fn open(url: &str, up_to: Option<i64>) -> Result<Store, StoreError> {
        let pools = if url.starts_with("sqlite:") {
            // Created if missing; WAL; synchronous=FULL, except on the writer, whose batches the
            // group commit makes durable itself before acknowledging anything (see
            // `group_commit`); foreign keys; 30 s busy timeout; temp_store=MEMORY (see
            // `sqlite::Target::open`).
            let target = sqlite::Target::parse(url)?;
            // One writer connection: SQLite has a single write lock anyway. Writes queue on it in
            // order and are committed in groups (see `group_commit`). Opened first: it switches
            // a new database to WAL before any reader opens it.
            let write = group_commit::Writer::new(sqlite::blocking(|| target.open())?)?;
            let alive = Arc::new(());
            if write.flushes_wal() {
                group_commit::spawn_checkpointer(target.clone(), Arc::downgrade(&alive));
            }
            let read = sqlite::ReadPool::new(target, sqlite::READERS);
            Pools::Sqlite {
                read,
                write,
                _checkpointer: alive,
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts =
                PgConnectOptions::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
            // Postgres allows 100 connections by default; several Satchel processes (and test
            // servers) must fit, so each keeps a modest pool and closes idle connections.
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .idle_timeout(Duration::from_secs(30))
                // While Postgres is unreachable sqlx keeps retrying until this runs out; the
                // request then gets 503 + Retry-After. 60 s outlasted every client's timeout.
                .acquire_timeout(Duration::from_secs(15))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_IF_IDLE_FOR {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await?;
            Pools::Postgres(pool)
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL (use sqlite:// or postgres://): {url}"
            )));
        };
        let store = Store {
            pools: Arc::new(pools),
            bell: Arc::default(),
        };
        let mut tx = store.begin_write().await?;
        schema::migrate_to(&mut tx, up_to).await?;
        tx.commit().await?;
        Ok(store)
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match &*self.pools {
            Pools::Sqlite { .. } => Dialect::Sqlite,
            Pools::Postgres(_) => Dialect::Postgres,
        }
    }

    fn pending(&self) -> events::Pending {
        events::Pending::new(Some(self.bell.clone()))
    }

    /// Starts a write transaction holding the write lock (SQLite: `BEGIN IMMEDIATE`).
    pub(crate) async fn begin_write(&self) -> Result<Conn, StoreError> {
        Ok(match &*self.pools {
            Pools::Sqlite { write, .. } => Conn::SqliteBatch(write.begin().await?, self.pending()),
            Pools::Postgres(p) => Conn::PgTx(p.begin().await?, self.pending()),
        })
    }

    /// Starts a write that is one statement. On Postgres the statement runs in autocommit mode:
    /// it is its own transaction, durable when it returns (`synchronous_commit` on, the
    /// default), and the `BEGIN` and `COMMIT` round trips are saved. On SQLite it joins the
    /// group commit like any write. The caller must issue exactly one statement.
    pub(crate) async fn begin_one_statement_write(&self) -> Result<Conn, StoreError> {
        Ok(match &*self.pools {
            Pools::Sqlite { write, .. } => Conn::SqliteBatch(write.begin().await?, self.pending()),
            Pools::Postgres(p) => Conn::Pg(p.acquire().await?),
        })
    }

    /// Starts a read-only snapshot (several queries see one consistent state).
    pub(crate) async fn begin_read(&self) -> Result<Conn, StoreError> {
        Ok(match &*self.pools {
            Pools::Sqlite { read, .. } => {
                let mut c = read.lease().await?;
                c.begin()?;
                Conn::SqliteRead(c)
            }
            // Postgres' default READ COMMITTED takes a new snapshot per statement; the audit
            // compares results of several statements, so it needs one snapshot for all.
            Pools::Postgres(p) => Conn::PgTx(
                p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
                events::Pending::default(),
            ),
        })
    }

    /// A connection for single-statement reads.
    pub(crate) async fn read_conn(&self) -> Result<Conn, StoreError> {
        Ok(match &*self.pools {
            Pools::Sqlite { read, .. } => Conn::SqliteRead(read.lease().await?),
            Pools::Postgres(p) => Conn::Pg(p.acquire().await?),
        })
    }

    /// Durable SQLite commits made by this process so far (each covers one or more operations).
    pub fn sqlite_commits() -> u64 {
        group_commit::COMMITS.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes all connections.
    pub async fn close(&self) {
        match &*self.pools {
            Pools::Sqlite { read, write, .. } => {
                write.flush().await;
                read.close();
            }
            Pools::Postgres(p) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn unreachable_database_is_unavailable() {
        use std::io::{Error, ErrorKind};
        for e in [
            sqlx::Error::Io(Error::from(ErrorKind::ConnectionRefused)),
            sqlx::Error::Io(Error::from(ErrorKind::UnexpectedEof)),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(StoreError::from(e).is_unavailable());
        }
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::NotFound.is_unavailable());
        assert!(!StoreError::Sqlite("database is locked".into()).is_unavailable());
        assert!(!StoreError::Constraint("x".into()).is_unavailable());
    }
}
