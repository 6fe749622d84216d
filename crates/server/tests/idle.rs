//! An idle server makes nothing durable: no write transaction, so no WAL flush (before, the
//! webhook dispatcher's claim poll was a write transaction, four `fdatasync`s a second on an
//! idle SQLite server). Alone in its binary because the commit counter is per process.
//!
//! SQLite only: there `Store::sqlite_commits` counts every durable commit. On Postgres the
//! same poll is now a read too (same code path), but commits cannot be told apart from the
//! other databases' in a shared cluster.
mod common;

use std::time::Duration;

use common::TestServer;
use satchel_store::Store;
use satchel_testkit::db::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_commits_nothing() {
    let s = TestServer::start(TestDb::sqlite().await).await;
    // Some work first, so every worker has run at least once with something to do.
    let w = s.create_wallet("idle").await;
    s.fund(&w, 10).await;
    assert_eq!(s.balance(&w).await, 10);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The test dispatcher polls every 50 ms and the reconciler runs every 500 ms: 1.5 s is
    // about 30 polls and 3 reconciler passes.
    let before = Store::sqlite_commits();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        Store::sqlite_commits(),
        before,
        "an idle server made durable commits"
    );

    // And it still works: a write right after the idle spell is committed.
    s.fund(&w, 5).await;
    assert!(Store::sqlite_commits() > before);
    assert_eq!(s.balance(&w).await, 15);
    s.stop().await;
}
