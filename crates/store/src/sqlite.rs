//! SQLite in place: statements run synchronously on a rusqlite connection, inside the async
//! operation that issues them.
//!
//! A statement on a warm connection takes microseconds, so running it inline on the tokio worker
//! is cheaper than shipping it to a connection thread and back (what sqlx-sqlite does: two
//! thread hand-offs per statement). The one slow step, the fsync of a `COMMIT` (or a wait for
//! another process's write lock), runs through [`blocking`], which tells the runtime first.
//!
//! This module holds the pieces shared by the writer ([`crate::group_commit`]) and the readers:
//! URL parsing, opening a connection with Satchel's pragmas, binding [`Arg`]s, copying rows out,
//! and a small pool of read connections.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Statement};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::StoreError;
use crate::db::Arg;

/// How long a connection waits for a lock held by another connection before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Prepared statements kept per connection (the store issues roughly a hundred distinct ones).
const STATEMENT_CACHE: usize = 256;

/// Read connections per store.
pub(crate) const READERS: usize = 8;

/// Where the database is, as a SQLite URI filename (`file:…?mode=…`), parsed once from the
/// `sqlite:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    uri: String,
    /// The database file, when it is one this process may create (not in memory, not `ro`).
    file: Option<PathBuf>,
}

/// The database file a `sqlite:` URL names (`None` for an in-memory database or a bad URL).
/// For the server's start-up check of file modes.
pub fn database_file(url: &str) -> Option<PathBuf> {
    Target::parse(url).ok()?.file
}

static IN_MEMORY_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Target {
    /// Parses the URL forms sqlx accepts: `sqlite://path`, `sqlite:///abs/path`, `sqlite:path`,
    /// `sqlite::memory:`, with optional `?mode=ro|rw|rwc|memory&cache=shared|private&immutable=…&vfs=…`.
    /// The path is percent-decoded. The file is created if missing (unless `mode=ro`).
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        let rest = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let (database, params) = match rest.split_once('?') {
            Some((d, p)) => (d, Some(p)),
            None => (rest, None),
        };
        let mut in_memory = database == ":memory:";
        let mut read_only = false;
        let mut cache: Option<&'static str> = None;
        let mut immutable = false;
        let mut vfs: Option<String> = None;
        for pair in params.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(&value.replace('+', " "))?;
            match (key, value.as_str()) {
                ("mode", "ro") => read_only = true,
                ("mode", "rw" | "rwc") => {}
                ("mode", "memory") => in_memory = true,
                ("cache", "shared") => cache = Some("shared"),
                ("cache", "private") => cache = Some("private"),
                ("immutable", "true" | "1") => immutable = true,
                ("immutable", "false" | "0") => immutable = false,
                ("vfs", v) => vfs = Some(v.to_owned()),
                ("mode" | "cache" | "immutable", v) => {
                    return Err(StoreError::Config(format!(
                        "unknown value {v:?} for `{key}` in the SQLite URL"
                    )));
                }
                _ => {
                    return Err(StoreError::Config(format!(
                        "unknown query parameter `{key}` in the SQLite URL"
                    )));
                }
            }
        }
        let mut uri = String::from("file:");
        let mut file = None;
        if database == ":memory:" {
            let n = IN_MEMORY_SEQ.fetch_add(1, Ordering::Relaxed);
            uri.push_str(&format!("satchel-in-memory-{}-{n}", std::process::id()));
        } else {
            let path = percent_decode(database)?;
            if path.is_empty() {
                return Err(StoreError::Config(format!("no database path in {url:?}")));
            }
            // An absolute path gets an empty authority (`file:///abs`), so a path starting with
            // `//` is never read as a host name.
            if path.starts_with('/') {
                uri.push_str("//");
            }
            percent_encode_into(&path, &mut uri);
            if !in_memory && !read_only {
                file = Some(PathBuf::from(path));
            }
        }
        let mode = if in_memory {
            "memory"
        } else if read_only {
            "ro"
        } else {
            "rwc"
        };
        uri.push_str("?mode=");
        uri.push_str(mode);
        // Connections of one process share an in-memory database only through a shared cache.
        if let Some(c) = cache.or(in_memory.then_some("shared")) {
            uri.push_str("&cache=");
            uri.push_str(c);
        }
        if immutable {
            uri.push_str("&immutable=1");
        }
        if let Some(v) = vfs {
            uri.push_str("&vfs=");
            percent_encode_into(&v, &mut uri);
        }
        Ok(Target { uri, file })
    }

    /// Opens a connection with Satchel's settings: WAL, `synchronous=FULL` (a commit is durable
    /// before anything is acknowledged), foreign keys on, 30 s busy timeout, statement cache.
    pub(crate) fn open(&self) -> Result<Connection, StoreError> {
        if let Some(f) = &self.file {
            create_private(f);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.uri, flags)
            .map_err(|e| StoreError::Config(format!("cannot open {}: {e}", self.uri)))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Returns the resulting mode ("wal", or "memory" for an in-memory database).
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        // temp_store=MEMORY keeps savepoint sub-journals and statement journals in memory: a
        // write operation runs in a SAVEPOINT (see `group_commit`) and its sub-journal
        // otherwise spills past 64 KiB to a temporary file (open + unlink + writes + close per
        // operation). Those journals only serve rollback inside the open transaction; durability
        // is the WAL's, which this does not touch.
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        )?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }
}

/// Creates a missing database file empty with mode 0600 before SQLite opens it (SQLite would
/// create it 0644 less the umask). SQLite gives the `-wal` and `-shm` files the database file's
/// mode, so they are private too. An existing file is left alone, and any error here is left
/// for SQLite's own open to report.
fn create_private(path: &Path) {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let _ = o.open(path);
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|e| StoreError::Config(format!("SQLite URL: {e}")))
}

/// Escapes what would end or alter a URI filename's path (`%`, `?`, `#`, controls, space).
fn percent_encode_into(s: &str, out: &mut String) {
    for &c in s.as_bytes() {
        if c == b'%' || c == b'?' || c == b'#' || c <= b' ' || c == 0x7f {
            out.push_str(&format!("%{c:02X}"));
        } else {
            // Non-escaped bytes are copied whole (multi-byte UTF-8 sequences stay intact
            // because none of their bytes is in the escaped set).
            out.push(char::from(c));
        }
    }
}

/// Runs `f`, which may block (an fsync, a lock wait), without stalling a runtime worker
/// unannounced: on a multi-threaded runtime through `block_in_place` (the worker's other tasks
/// move to another thread); elsewhere (current-thread runtime, no runtime) directly.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs a fixed statement (transaction control) through the statement cache.
pub(crate) fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// True for `SQLITE_BUSY` (another connection holds the lock).
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// Binds `args` the way sqlx-sqlite does: a parameter named `$N` or `?N` takes `args[N-1]`, an
/// anonymous `?` the next argument; a parameter with no argument stays NULL.
fn bind(stmt: &mut Statement<'_>, args: &[Arg]) -> Result<(), StoreError> {
    let mut next = 0usize;
    for i in 1..=stmt.parameter_count() {
        let n = match stmt.parameter_name(i) {
            Some(name) => name
                .strip_prefix('$')
                .or_else(|| name.strip_prefix('?'))
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or_else(|| StoreError::Sqlite(format!("unsupported SQL parameter {name:?}")))?,
            None => {
                next += 1;
                next
            }
        };
        let Some(arg) = n.checked_sub(1).and_then(|k| args.get(k)) else {
            continue;
        };
        match arg {
            Arg::I64(v) => stmt.raw_bind_parameter(i, *v)?,
            Arg::OptI64(v) => stmt.raw_bind_parameter(i, *v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(i, v.as_str())?,
            Arg::OptText(v) => stmt.raw_bind_parameter(i, v.as_deref())?,
        }
    }
    Ok(())
}

/// Executes one statement; returns the rows it changed. Any rows it returns are stepped through
/// and dropped.
pub(crate) fn exec(conn: &Connection, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, args)?;
    let mut rows = stmt.raw_query();
    while rows.next()?.is_some() {}
    drop(rows);
    Ok(conn.changes())
}

/// Executes one statement without caching it (schema DDL, run once).
pub(crate) fn exec_uncached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.raw_query();
    while rows.next()?.is_some() {}
    Ok(())
}

/// Runs a query and copies out up to `limit` rows (all if `None`).
pub(crate) fn fetch(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
    limit: Option<usize>,
) -> Result<Vec<SqliteRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, args)?;
    let width = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while limit.is_none_or(|l| out.len() < l) {
        let Some(r) = rows.next()? else { break };
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) => Value::Text(
                    String::from_utf8(t.to_vec())
                        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))?,
                ),
                ValueRef::Blob(_) => Value::Blob,
            });
        }
        out.push(SqliteRow { values });
    }
    Ok(out)
}

/// One column value, copied out of SQLite.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob,
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob => "a blob",
        }
    }
}

/// A SQLite result row, owned (read by column index through [`crate::db::Row`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteRow {
    values: Vec<Value>,
}

impl SqliteRow {
    fn get(&self, i: usize) -> Result<&Value, StoreError> {
        self.values
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {i}")))
    }

    /// Nullable integer column.
    pub(crate) fn opt_i64(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.get(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            v => Err(StoreError::Corrupt(format!(
                "column {i}: expected an integer, found {}",
                v.kind()
            ))),
        }
    }

    /// Nullable text column.
    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.get(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            v => Err(StoreError::Corrupt(format!(
                "column {i}: expected text, found {}",
                v.kind()
            ))),
        }
    }
}

/// Read connections: opened on demand, at most [`READERS`], reused.
pub(crate) struct ReadPool {
    target: Target,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(target: Target, size: usize) -> Arc<ReadPool> {
        Arc::new(ReadPool {
            target,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
        })
    }

    /// A connection in autocommit mode (waits while all are in use).
    pub(crate) async fn lease(self: &Arc<Self>) -> Result<ReadConn, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Sqlite("the store is closed".into()))?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => self.target.open()?,
        };
        Ok(ReadConn {
            conn: Some(conn),
            pool: self.clone(),
            in_tx: false,
            _permit: permit,
        })
    }

    /// Connections waiting in the pool (for tests).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes idle connections; leases fail from now on and connections in use are closed when
    /// returned.
    pub(crate) fn close(&self) {
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A leased read connection, in autocommit mode or inside a read transaction (one snapshot).
/// Dropping it rolls back an open transaction (in memory: a read transaction wrote nothing) and
/// returns the connection to the pool.
pub struct ReadConn {
    conn: Option<Connection>,
    pool: Arc<ReadPool>,
    in_tx: bool,
    // Released after `conn` went back to the pool (fields drop after `Drop::drop`).
    _permit: OwnedSemaphorePermit,
}

impl ReadConn {
    /// The connection.
    pub(crate) fn conn(&self) -> Result<&Connection, StoreError> {
        self.conn
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("read connection already returned".into()))
    }

    /// Opens a (deferred) transaction: the snapshot is taken by its first read and kept until
    /// [`ReadConn::commit`] or drop.
    pub(crate) fn begin(&mut self) -> Result<(), StoreError> {
        run(self.conn()?, "BEGIN")?;
        self.in_tx = true;
        Ok(())
    }

    /// Ends the read transaction, if any.
    pub(crate) fn commit(mut self) -> Result<(), StoreError> {
        if self.in_tx {
            run(self.conn()?, "COMMIT")?;
            self.in_tx = false;
        }
        Ok(())
    }
}

impl Drop for ReadConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !conn.is_autocommit() {
            let _ = run(&conn, "ROLLBACK");
        }
        // A connection that cannot get back to autocommit is not reused.
        if !conn.is_autocommit() || self.pool.permits.is_closed() {
            return;
        }
        self.pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn url_forms() {
        let uri = |u: &str| Target::parse(u).unwrap().uri;
        assert_eq!(uri("sqlite:///tmp/a/s.db"), "file:///tmp/a/s.db?mode=rwc");
        assert_eq!(uri("sqlite://rel/s.db"), "file:rel/s.db?mode=rwc");
        assert_eq!(uri("sqlite:s.db"), "file:s.db?mode=rwc");
        assert_eq!(
            uri("sqlite:///tmp/a%3Fb/s%20t.db?mode=ro&cache=private"),
            "file:///tmp/a%3Fb/s%20t.db?mode=ro&cache=private"
        );
        assert!(uri("sqlite::memory:").starts_with("file:satchel-in-memory-"));
        assert!(uri("sqlite::memory:").ends_with("?mode=memory&cache=shared"));
        assert!(Target::parse("sqlite://a.db?bogus=1").is_err());
        assert!(Target::parse("sqlite://a.db?mode=bogus").is_err());
    }

    #[test]
    fn database_files() {
        assert_eq!(
            database_file("sqlite:///tmp/a%3Fb/s%20t.db?mode=rwc"),
            Some(PathBuf::from("/tmp/a?b/s t.db"))
        );
        assert_eq!(
            database_file("sqlite://rel/s.db"),
            Some(PathBuf::from("rel/s.db"))
        );
        assert_eq!(database_file("sqlite::memory:"), None);
        assert_eq!(database_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(database_file("sqlite://x.db?mode=ro"), None);
    }

    #[cfg(unix)]
    #[test]
    fn new_database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = Target::parse(&format!("sqlite://{}/x.db", dir.path().display())).unwrap();
        let c = t.open().unwrap();
        c.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        for name in ["x.db", "x.db-wal", "x.db-shm"] {
            let m = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn dollar_parameters_bind_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::parse(&format!("sqlite://{}/x.db", dir.path().display())).unwrap();
        let c = t.open().unwrap();
        // `$2` appears first: it must still take the second argument.
        let rows = fetch(
            &c,
            "SELECT $2, $1, $2 || 'x', $3",
            &[Arg::I64(7), Arg::Text("b".into())],
            None,
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].opt_text(0).unwrap().as_deref(), Some("b"));
        assert_eq!(rows[0].opt_i64(1).unwrap(), Some(7));
        assert_eq!(rows[0].opt_text(2).unwrap().as_deref(), Some("bx"));
        assert_eq!(rows[0].opt_i64(3).unwrap(), None);
        assert!(rows[0].opt_i64(0).is_err());
    }

    #[test]
    fn constraint_errors_map_to_constraint() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::parse(&format!("sqlite://{}/x.db", dir.path().display())).unwrap();
        let c = t.open().unwrap();
        c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT CHECK (n >= 0))")
            .unwrap();
        exec(
            &c,
            "INSERT INTO t VALUES ($1, $2)",
            &[Arg::Text("a".into()), Arg::I64(1)],
        )
        .unwrap();
        let dup = exec(
            &c,
            "INSERT INTO t VALUES ($1, $2)",
            &[Arg::Text("a".into()), Arg::I64(1)],
        );
        assert!(matches!(dup, Err(StoreError::Constraint(_))), "{dup:?}");
        let neg = exec(
            &c,
            "INSERT INTO t VALUES ($1, $2)",
            &[Arg::Text("b".into()), Arg::I64(-1)],
        );
        assert!(matches!(neg, Err(StoreError::Constraint(_))), "{neg:?}");
        let bad = exec(&c, "INSERT INTO nowhere VALUES (1)", &[]);
        assert!(matches!(bad, Err(StoreError::Sqlite(_))), "{bad:?}");
    }
}
