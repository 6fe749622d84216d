//! Throw-away databases for tests (this crate's and other crates' integration tests).
//!
//! ```text
//! for (kind, db) in TestDb::all().await {
//!     let store = Store::connect(&db.url).await.unwrap();
//!     // … test `store`; `kind` is "sqlite" or "postgres" …
//! }
//! ```
//!
//! Postgres: the admin URL comes from `SATCHEL_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each [`TestDb`] creates its own database
//! `satchel_t_<random>` and drops it (`WITH (FORCE)`, best effort) when dropped. Setting
//! `SATCHEL_SKIP_PG=1` skips Postgres; otherwise an unreachable server is a panic, never a silent
//! skip.

use std::time::Duration;

use sqlx::{Connection as _, PgConnection};

/// Environment variable holding the Postgres admin URL.
pub const PG_URL_ENV: &str = "SATCHEL_TEST_PG_URL";
/// Environment variable that, set to `1`, skips Postgres tests.
pub const SKIP_PG_ENV: &str = "SATCHEL_SKIP_PG";
/// Admin URL used when [`PG_URL_ENV`] is not set.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database for one test. Dropping it removes it (best effort).
pub struct TestDb {
    /// URL to pass to `satchel_store::Store::connect`.
    pub url: String,
    kind: Kind,
}

enum Kind {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDb({})", self.url)
    }
}

/// 12 random lowercase alphanumeric characters (for unique database and record names).
pub fn random_suffix() -> String {
    satchel_domain::ids::random_alnum(12).to_ascii_lowercase()
}

/// The Postgres admin URL tests use.
pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
}

/// True when `SATCHEL_SKIP_PG=1`.
pub fn skip_pg() -> bool {
    std::env::var(SKIP_PG_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Replaces the database name (the path) of a Postgres URL, keeping user, host and query.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    // Everything after the scheme's "//" up to the first '/' is the authority.
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl TestDb {
    /// A new SQLite database file (`sqlite://<tmp>/satchel.db`) in its own temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = match tempfile::Builder::new().prefix("satchel-test-").tempdir() {
            Ok(d) => d,
            Err(e) => panic!("cannot create a temporary directory for a test database: {e}"),
        };
        let url = format!("sqlite://{}", dir.path().join("satchel.db").display());
        TestDb {
            url,
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    /// A new, empty Postgres database, or `None` if `SATCHEL_SKIP_PG=1`.
    ///
    /// # Panics
    /// If Postgres is not reachable or the database cannot be created.
    pub async fn postgres() -> Option<TestDb> {
        if skip_pg() {
            return None;
        }
        let admin_url = pg_admin_url();
        let connect =
            tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&admin_url));
        let mut conn = match connect.await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!(
                "Postgres not reachable at {admin_url} ({e}); start it or set {SKIP_PG_ENV}=1"
            ),
            Err(_) => panic!(
                "Postgres not reachable at {admin_url} (timed out); start it or set {SKIP_PG_ENV}=1"
            ),
        };
        let name = format!("satchel_t_{}", random_suffix());
        // The name is ours (fixed prefix + [a-z0-9]), so formatting it into DDL is safe.
        let ddl = format!("CREATE DATABASE {name}");
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&mut conn)
            .await
        {
            panic!("cannot create test database {name} at {admin_url}: {e}");
        }
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDb {
            url,
            kind: Kind::Postgres { admin_url, name },
        })
    }

    /// One database of each kind: `[("sqlite", …), ("postgres", …)]`, Postgres omitted only if
    /// `SATCHEL_SKIP_PG=1`.
    pub async fn all() -> Vec<(&'static str, TestDb)> {
        let mut out = vec![("sqlite", TestDb::sqlite().await)];
        if let Some(pg) = TestDb::postgres().await {
            out.push(("postgres", pg));
        }
        out
    }

    /// "sqlite" or "postgres".
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite { .. } => "sqlite",
            Kind::Postgres { .. } => "postgres",
        }
    }
}

/// Drops a Postgres test database, terminating any connections still open to it.
async fn drop_pg_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(admin_url).await?;
    let ddl = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, name } = &self.kind else {
            // SQLite: the TempDir removes the directory (database, WAL and SHM files).
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop may run inside a tokio runtime (where we must not block_on) or outside one, so the
        // DROP runs on its own thread with its own small runtime; we wait for it (bounded) so
        // the database is gone before the test process exits.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("satchel-testdb-drop".into())
            .spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    let dropped = rt.block_on(async {
                        tokio::time::timeout(
                            Duration::from_secs(20),
                            drop_pg_database(&admin_url, &name),
                        )
                        .await
                    });
                    match dropped {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            eprintln!("warning: could not drop test database {name}: {e}")
                        }
                        Err(_) => eprintln!("warning: timed out dropping test database {name}"),
                    }
                }
                let _ = done_tx.send(());
            });
        if spawned.is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaced_in_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "satchel_t_x"),
            "postgres://postgres@127.0.0.1:5432/satchel_t_x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "n"),
            "postgresql://u:p@h/n?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "n"),
            "postgres://h:5432/n"
        );
    }

    #[test]
    fn suffix_is_lowercase_alnum() {
        let s = random_suffix();
        assert_eq!(s.len(), 12);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}
