//! What recording an outbox event for every wallet entry costs: internal payments (the store
//! operation alone) at concurrency 16, on both databases. A measurement, not a check: run with
//! `cargo test -p satchel-store --release --test events_cost -- --ignored --nocapture`.
//!
//! Besides the rate it prints the process's CPU time per payment: on SQLite all the work is in
//! this process, and on a shared, loaded host CPU time varies less than the wall clock.
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
        let cpu0 = cpu_secs();
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
        let cpu = cpu_secs() - cpu0;
        let n = PAIRS * PER_PAIR;
        eprintln!(
            "{kind}: {n} internal payments in {secs:.2} s = {:.0}/s, process CPU {:.0} us/payment",
            n as f64 / secs,
            cpu * 1e6 / n as f64
        );
        assert_clean(kind, &store).await;
    }
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (Linux; clock ticks of
/// 1/100 s, the kernel's `USER_HZ`).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}
