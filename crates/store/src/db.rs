//! A thin layer that lets every ledger operation be written once for both databases: SQLite
//! through rusqlite, in place (see [`crate::sqlite`]), and Postgres through sqlx.
//!
//! SQL text uses `$1…$n` placeholders, which both SQLite (bound by number) and Postgres accept.
//! Dialect differences are confined to [`Dialect`] helpers (row locks, schema DDL).
//!
//! The methods are `async` for Postgres; on SQLite they complete without suspending (the
//! statement runs synchronously on the connection the [`Conn`] holds).

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row as _, Transaction};

use crate::StoreError;
use crate::sqlite::{self, ReadConn, SqliteRow};

/// Which database we are talking to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (single writer, serialised by `BEGIN IMMEDIATE`).
    Sqlite,
    /// PostgreSQL (row locks).
    Postgres,
}

impl Dialect {
    /// Suffix that takes a row lock in a SELECT. SQLite needs none: its single writer already
    /// serialises every write transaction. On Postgres the lock is `FOR NO KEY UPDATE`, the
    /// mode an `UPDATE` of non-key columns takes: it serialises balance and state changes
    /// exactly as `FOR UPDATE` would, but does not block other transactions inserting rows that
    /// reference the locked row (a foreign key check takes `FOR KEY SHARE`).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE",
        }
    }
}

/// A bound argument.
#[derive(Debug, Clone)]
pub enum Arg {
    /// Integer.
    I64(i64),
    /// Nullable integer.
    OptI64(Option<i64>),
    /// Text.
    Text(String),
    /// Nullable text.
    OptText(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::I64(v)
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::OptI64(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_owned())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(v.clone())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::OptText(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::OptText(v.map(str::to_owned))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::I64(i64::from(v))
    }
}

/// Builds a `Vec<Arg>` from heterogeneous values.
#[macro_export]
#[doc(hidden)]
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::db::Arg::from($v)),*] };
}

/// A result row, read by column index.
pub enum Row {
    /// From SQLite (values copied out of the statement).
    Sqlite(SqliteRow),
    /// From Postgres.
    Pg(PgRow),
}

impl Row {
    /// Non-null integer column.
    pub fn i64(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_i64(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("NULL in integer column {i}")))
    }
    /// Nullable integer column. On Postgres, `INTEGER` columns (flags, WTX type codes) are
    /// `INT4`, which sqlx will not decode as `i64`: those are widened.
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Row::Sqlite(r) => r.opt_i64(i)?,
            Row::Pg(r) => match r.try_get::<Option<i64>, _>(i) {
                Ok(v) => v,
                Err(e) => match r.try_get::<Option<i32>, _>(i) {
                    Ok(v) => v.map(i64::from),
                    Err(_) => return Err(e.into()),
                },
            },
        })
    }
    /// Non-null text column.
    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self {
            Row::Sqlite(r) => r
                .opt_text(i)?
                .ok_or_else(|| StoreError::Corrupt(format!("NULL in text column {i}"))),
            Row::Pg(r) => Ok(r.try_get(i)?),
        }
    }
    /// Nullable text column.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(match self {
            Row::Sqlite(r) => r.opt_text(i)?,
            Row::Pg(r) => r.try_get(i)?,
        })
    }
    /// Integer column read as a boolean (0 = false).
    pub fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.i64(i)? != 0)
    }
}

/// A connection, inside a transaction or not. Dropping a transaction variant without
/// [`Conn::commit`] rolls it back (SQLite: at once, synchronously; Postgres: sqlx queues the
/// ROLLBACK), so `?` is always safe.
pub enum Conn {
    /// SQLite write operation inside a group-commit batch (its own savepoint), with the
    /// wallets it wrote events for (rung after commit).
    SqliteBatch(crate::group_commit::BatchOp, crate::events::Pending),
    /// SQLite read connection: a read transaction (one snapshot) or autocommit.
    SqliteRead(ReadConn),
    /// Postgres transaction, with the wallets it wrote events for (rung after commit).
    PgTx(Transaction<'static, Postgres>, crate::events::Pending),
    /// Postgres connection in autocommit mode.
    Pg(PoolConnection<Postgres>),
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::I64(v) => q.bind(v),
                Arg::OptI64(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
                Arg::OptText(v) => q.bind(v),
            };
        }
        q
    }};
}

impl Conn {
    /// The database kind.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::SqliteBatch(..) | Conn::SqliteRead(_) => Dialect::Sqlite,
            Conn::PgTx(..) | Conn::Pg(_) => Dialect::Postgres,
        }
    }

    /// Executes a statement; returns rows affected. SQL text is always ours (values travel as
    /// bound arguments), which is what `AssertSqlSafe` asserts.
    pub async fn exec(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        Ok(match self {
            Conn::SqliteBatch(op, _) => sqlite::exec(op.conn()?, sql, &args)?,
            Conn::SqliteRead(c) => sqlite::exec(c.conn()?, sql, &args)?,
            Conn::PgTx(c, _) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
                .execute(&mut **c)
                .await?
                .rows_affected(),
            Conn::Pg(c) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
                .execute(&mut **c)
                .await?
                .rows_affected(),
        })
    }

    /// Runs several statements with no arguments (schema DDL).
    pub async fn exec_script(&mut self, sql: &str) -> Result<(), StoreError> {
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            match self {
                // Run once: not worth a place in the statement cache.
                Conn::SqliteBatch(op, _) => sqlite::exec_uncached(op.conn()?, stmt)?,
                Conn::SqliteRead(c) => sqlite::exec_uncached(c.conn()?, stmt)?,
                Conn::PgTx(..) | Conn::Pg(_) => {
                    self.exec(stmt, Vec::new()).await?;
                }
            }
        }
        Ok(())
    }

    /// At most one row.
    pub async fn fetch_opt(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Option<Row>, StoreError> {
        Ok(match self {
            Conn::SqliteBatch(op, _) => sqlite::fetch(op.conn()?, sql, &args, Some(1))?
                .pop()
                .map(Row::Sqlite),
            Conn::SqliteRead(c) => sqlite::fetch(c.conn()?, sql, &args, Some(1))?
                .pop()
                .map(Row::Sqlite),
            Conn::PgTx(c, _) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
                .fetch_optional(&mut **c)
                .await?
                .map(Row::Pg),
            Conn::Pg(c) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
                .fetch_optional(&mut **c)
                .await?
                .map(Row::Pg),
        })
    }

    /// Exactly one row.
    pub async fn fetch_one(&mut self, sql: &str, args: Vec<Arg>) -> Result<Row, StoreError> {
        self.fetch_opt(sql, args).await?.ok_or(StoreError::NotFound)
    }

    /// All rows.
    pub async fn fetch_all(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        Ok(match self {
            Conn::SqliteBatch(op, _) => sqlite::fetch(op.conn()?, sql, &args, None)?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            Conn::SqliteRead(c) => sqlite::fetch(c.conn()?, sql, &args, None)?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            Conn::PgTx(c, _) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(Row::Pg)
                .collect(),
            Conn::Pg(c) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
                .fetch_all(&mut **c)
                .await?
                .into_iter()
                .map(Row::Pg)
                .collect(),
        })
    }

    /// Commits a transaction (no-op for autocommit connections). For a SQLite write operation,
    /// returns once a durable `COMMIT` covers it.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Conn::SqliteBatch(op, pending) => {
                op.commit().await?;
                pending.committed();
            }
            Conn::SqliteRead(c) => c.commit()?,
            Conn::PgTx(t, pending) => {
                t.commit().await?;
                pending.committed();
            }
            Conn::Pg(_) => {}
        }
        Ok(())
    }

    /// Notes that this write transaction wrote an event for `wallet`: the store's
    /// [`crate::events::EventBell`] rings for it once the transaction commits.
    pub(crate) fn note_event(&mut self, wallet: &str) {
        match self {
            Conn::SqliteBatch(_, p) | Conn::PgTx(_, p) => p.note(wallet),
            Conn::SqliteRead(_) | Conn::Pg(_) => {}
        }
    }
}
