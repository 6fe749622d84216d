//! Issue 18, "history that adds up, in sats", over the HTTP API on SQLite and Postgres: routing
//! fees with a sub-sat part are charged rounded up to the sat (the rest to the operator's
//! revenue account), so the `num_satoshis` of a wallet's history add up to its balance; and
//! `min_fee_limit_msat` lets a small payment pay a hub's base fee.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Command;

use common::{TestServer, WalletKeys, test_service_config};
use reqwest::StatusCode;
use satchel_domain::Msat;
use satchel_scripted::Script;
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

fn msat(n: u64) -> Msat {
    Msat::from_msat(n).unwrap()
}

/// Every entry of a wallet's history (`GET /v1/wallet/:key/transactions`, all pages; the
/// total count header says when to stop, since a page past the end repeats the last one).
async fn history(s: &TestServer, w: &WalletKeys) -> Vec<Value> {
    let mut all = Vec::new();
    for page in 1..=100 {
        let r = s
            .get(
                &s.sak,
                &format!("/wallet/{}/transactions?per-page=50&page={page}", w.waka),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let total: usize = r.headers["x-pagination-total-count"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        all.extend(r.json.as_array().unwrap().iter().cloned());
        if all.len() >= total {
            assert_eq!(all.len(), total);
            return all;
        }
    }
    panic!("history of {} longer than 100 pages", w.id);
}

/// The invariant as a client checks it: the `num_satoshis` of the history add up to the
/// wallet's `balance`, and `balance_msat` is whole sats. Returns the balance in sats.
async fn assert_history_adds_up(s: &TestServer, w: &WalletKeys) -> i64 {
    let r = s.get(&s.sak, &format!("/wallet/{}", w.waka)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (sats, msat) = (
        r.json["balance"].as_i64().unwrap(),
        r.json["balance_msat"].as_i64().unwrap(),
    );
    assert_eq!(msat % 1000, 0, "balance_msat {msat} is not whole sats");
    assert_eq!(sats * 1000, msat);
    let h = history(s, w).await;
    let sum: i64 = h.iter().map(|v| v["num_satoshis"].as_i64().unwrap()).sum();
    assert_eq!(
        sum, sats,
        "history adds up to {sum} sats, balance is {sats}"
    );
    sats
}

/// `satchel audit`, the binary, against the database the server used.
fn cli_audit(db_url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_satchel"))
        .args(["audit", "--database-url", db_url])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("audit clean"),
        "{text}"
    );
    text
}

/// The scenario: 40 withdrawals of 500 sats through a hub whose fee has a sub-sat part
/// (1,500 msat). Before: the balance was 29,940 sats and the history added up to 29,920. Now
/// each fee is charged as the 2 sats it shows, the balance is 29,920 sats, the history adds
/// up to it after every payment, and the 40 × 500 msat are in the revenue account.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdrawals_through_a_hub_add_up_in_sats() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = TestServer::start(db).await;
        let w = s.create_wallet("Hub payer").await;
        s.fund(&w, 50_000).await;
        let revenue_before = s.running().store.audit().await.unwrap().revenue_msat;
        for i in 0..40 {
            let inv = s.external_invoice(500, &format!("through the hub {i}"));
            s.scripted
                .script(inv.payment_hash(), Script::Succeed { fee: msat(1_500) });
            let r = s
                .post(
                    &s.sak,
                    &format!("/wallet/{}/withdraw", w.waka),
                    json!({ "payment_request": inv.as_str() }),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "[{kind}] {}", r.text);
            assert_eq!(r.json["num_satoshis"], -500);
            // The lnTx tells the fee the node really paid.
            assert_eq!(r.json["lnTx"]["fee_msat"], 1_500);
            assert_eq!(r.json["wal"]["balance_msat"].as_i64().unwrap() % 1000, 0);
            if i % 8 == 0 {
                assert_history_adds_up(&s, &w).await;
            }
        }
        assert_eq!(assert_history_adds_up(&s, &w).await, 29_920, "[{kind}]");
        let h = history(&s, &w).await;
        let fees: Vec<i64> = h
            .iter()
            .filter(|v| v["wtxType"]["name"] == "network_fee")
            .map(|v| v["num_satoshis"].as_i64().unwrap())
            .collect();
        assert_eq!(fees, vec![-2; 40], "[{kind}]");
        let rep = s.running().store.audit().await.unwrap();
        assert!(rep.is_clean(), "[{kind}] {:?}", rep.problems);
        assert_eq!(rep.revenue_msat - revenue_before, 40 * 500, "[{kind}]");

        // The books as `satchel audit` sees them, after the server stopped.
        let db = s.stop().await;
        let out = cli_audit(&db.url);
        assert!(out.contains("revenue 20000 msat"), "[{kind}] {out}");
        // And after a restart the API still adds up.
        let s = TestServer::start(db).await;
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

/// A keysend of 10 sats under LNPay's rule has a 1-sat fee limit: a hub charging 1,500 msat
/// cannot be paid. With `min_fee_limit_msat = 2000` the default limit is 2 sats and it goes
/// through, charged 10 + 2 sats. An explicit limit is still the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_fee_limit_lets_a_small_keysend_pay_a_base_fee() {
    for min in [0u64, 2_000] {
        for (kind, db) in TestDb::all().await {
            let cfg = ServiceConfig {
                min_fee_limit: msat(min),
                ..test_service_config()
            };
            let s = TestServer::start_with(db, cfg).await;
            let w = s.create_wallet("Streamer").await;
            s.fund(&w, 100).await;
            let carol = s.scripted.external_pubkey().to_hex();
            s.scripted
                .set_default_script(Script::Succeed { fee: msat(1_500) });
            let r = s
                .post(
                    &s.sak,
                    &format!("/wallet/{}/keysend", w.waka),
                    json!({ "dest_pubkey": carol, "num_satoshis": 10 }),
                )
                .await;
            if min == 0 {
                // LNPay's rule: ceil(5% of 10 sats) = 1 sat, below the hub's fee: refused by
                // the node, refunded.
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "[{kind}] {}", r.text);
                assert_eq!(s.balance_msat(&w).await, 100_000);
            } else {
                assert_eq!(r.status, StatusCode::CREATED, "[{kind}] {}", r.text);
                assert_eq!(s.balance_msat(&w).await, 100_000 - 10_000 - 2_000);
                // An explicit limit below the fee is still refused.
                let r = s
                    .post(
                        &s.sak,
                        &format!("/wallet/{}/keysend", w.waka),
                        json!({ "dest_pubkey": carol, "num_satoshis": 10, "fee_limit_msat": 1000 }),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "[{kind}] {}", r.text);
                assert_eq!(s.balance_msat(&w).await, 88_000);
            }
            assert_history_adds_up(&s, &w).await;
            s.assert_audit_clean().await;
            s.stop().await;
        }
    }
}
