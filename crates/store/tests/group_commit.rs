//! Group commit on SQLite: concurrent operations share durable commits, each stays atomic, and
//! every acknowledged operation is visible to a brand-new connection (it reached the disk).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::Arc;

use common::*;
use satchel_store::{Store, TransferError};
use satchel_testkit::db::TestDb;
use sqlx::{Connection, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_operations_share_commits_and_stay_atomic() {
    let db = TestDb::sqlite().await;
    let store = connect(&db.url).await;
    let acct = account(&store).await;
    let ws = wallets(&store, &acct, 2).await;
    deposit(&store, &acct, &ws[0], sat(1000)).await;

    let commits_before = Store::sqlite_commits();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    // 300 transfers of 1 sat A→B plus 300 impossible ones (more than the balance) interleaved:
    // the failures roll back to their savepoints without touching the batch they were in.
    for i in 0..600u64 {
        let s = store.clone();
        let (a, b, acct) = (ws[0].clone(), ws[1].clone(), acct.clone());
        tasks.push(tokio::spawn(async move {
            let amount = if i % 2 == 0 { sat(1) } else { sat(1_000_000) };
            let cmd = transfer_cmd(&acct, &a, &b, amount);
            let ids = (cmd.wtx_out_id.clone(), cmd.wtx_in_id.clone());
            (i, s.transfer(&cmd).await.map(|_| ids))
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(ids)) => {
                assert_eq!(i % 2, 0);
                acked.push(ids);
            }
            (i, Err(TransferError::InsufficientBalance)) => assert_eq!(i % 2, 1),
            (i, Err(e)) => panic!("transfer {i}: {e}"),
        }
    }
    assert_eq!(acked.len(), 300);
    let commits = Store::sqlite_commits() - commits_before;
    assert!(
        commits < 600,
        "600 operations should share commits, made {commits}"
    );
    eprintln!("600 concurrent operations, {commits} durable commits");

    // Every acknowledged transfer is on disk: a fresh connection (not the writer) sees it.
    let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    for (out_id, in_id) in &acked {
        for id in [out_id, in_id] {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM wtxs WHERE id = $1")
                .bind(id.as_str())
                .fetch_one(&mut c)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
            assert_eq!(n, 1, "acknowledged {id} missing");
        }
    }
    assert_eq!(balance(&store, &ws[0]).await, 700_000);
    assert_eq!(balance(&store, &ws[1]).await, 300_000);
    let rep = store.audit().await.unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}
