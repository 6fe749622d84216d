//! What recording an outbox event for every wallet entry costs: internal payments (the store
//! operation alone) at concurrency 16, on both databases. A measurement, not a check: run with
//! `cargo test -p satchel-store --release --test events_cost -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::*;
use satchel_testkit::db::TestDb;

const PAIRS: usize = 16;
const PER_PAIR: usize = 250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn internal_payment_cost() {
    for (kind, db) in TestDb::all().await {
        let store = connect(&db.url).await;
        let acct = account(&store).await;
        let mut pairs = Vec::new();
        for _ in 0..PAIRS {
            let payer = wallet(&store, &acct).await;
            let payee = wallet(&store, &acct).await;
            deposit(&store, &acct, &payer, sat(1_000_000)).await;
            let mut hashes = Vec::with_capacity(PER_PAIR);
            for _ in 0..PER_PAIR {
                hashes.push(invoice(&store, &acct, &payee, sat(1)).await.1);
            }
            pairs.push((payer, hashes));
        }
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (payer, hashes) in pairs {
            let store = store.clone();
            let acct = acct.clone();
            tasks.push(tokio::spawn(async move {
                for h in hashes {
                    store
                        .pay_internal(&internal_cmd(&acct, &payer, h))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = t0.elapsed().as_secs_f64();
        let n = PAIRS * PER_PAIR;
        eprintln!(
            "{kind}: {n} internal payments in {secs:.2} s = {:.0}/s",
            n as f64 / secs
        );
        assert_clean(kind, &store).await;
    }
}
