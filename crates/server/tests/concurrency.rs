//! Concurrency: parallel requests against one server must never overdraw a wallet, pay a hash
//! twice, credit an invoice twice, deadlock, or lose a satoshi. Every scenario runs on SQLite and
//! Postgres and ends with a clean audit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{TestServer, WalletKeys, on_each_db, test_service_config};
use reqwest::StatusCode;
use satchel_domain::{Bolt11, FailureReason, Msat};
use satchel_scripted::Script;
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

/// A request that can be moved into a spawned task.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    sak: String,
}

impl Client {
    fn of(s: &TestServer) -> Client {
        Client {
            http: s.http.clone(),
            base: s.base.clone(),
            sak: s.sak.clone(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/v1{path}", self.base))
            .header("X-Api-Key", &self.sak)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn withdraw(
        &self,
        w: &WalletKeys,
        inv: &Bolt11,
        fee_limit: Option<i64>,
    ) -> (StatusCode, Value) {
        let mut body = json!({ "payment_request": inv.as_str() });
        if let Some(f) = fee_limit {
            body["fee_limit_msat"] = json!(f);
        }
        self.post(&format!("/wallet/{}/withdraw", w.waka), body)
            .await
    }

    async fn transfer(&self, from: &WalletKeys, to: &WalletKeys, sats: u64) -> (StatusCode, Value) {
        self.post(
            &format!("/wallet/{}/transfer", from.waka),
            json!({ "dest_wallet_id": to.id, "num_satoshis": sats, "memo": "c" }),
        )
        .await
    }

    async fn balance_msat(&self, w: &WalletKeys) -> i64 {
        let r = self
            .http
            .get(format!("{}/v1/wallet/{}", self.base, w.id))
            .header("X-Api-Key", &self.sak)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["balance_msat"].as_i64().unwrap()
    }
}

async fn on_each_db_with<F, Fut>(cfg: ServiceConfig, f: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: Future<Output = TestServer>,
{
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let srv = TestServer::start_with(db, cfg.clone()).await;
        let srv = f(srv).await;
        srv.assert_audit_clean().await;
        srv.stop().await;
    }
}

fn sats(n: u64) -> Msat {
    Msat::from_sats(n).unwrap()
}

fn carol_invoice(s: &TestServer, n: u64) -> Bolt11 {
    s.scripted.external_invoice(Some(sats(n)), "c", 3600).0
}

async fn our_invoice(s: &TestServer, w: &WalletKeys, n: u64) -> Bolt11 {
    let inv = s.invoice(w, n).await;
    Bolt11::parse(inv["payment_request"].as_str().unwrap()).unwrap()
}

/// Watches a wallet's balance until stopped; returns the smallest value seen.
fn watch_min_balance(
    c: Client,
    w: WalletKeys,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let min = AtomicI64::new(i64::MAX);
        while !stop.load(Ordering::Relaxed) {
            let b = c.balance_msat(&w).await;
            min.fetch_min(b, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        min.load(Ordering::Relaxed)
    })
}

async fn sum_balances(s: &TestServer, ws: &[WalletKeys]) -> i64 {
    let mut t = 0;
    for w in ws {
        t += s.balance_msat(w).await;
    }
    t
}

// ------------------------------------------------------------------------------------ overdraw

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_withdraws_never_overdraw() {
    on_each_db(|s| async move {
        let a = s.create_wallet("A").await;
        s.fund(&a, 1000).await;
        let c = Client::of(&s);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch_min_balance(c.clone(), a.clone(), stop.clone());

        let invoices: Vec<Bolt11> = (0..50).map(|_| carol_invoice(&s, 100)).collect();
        let tasks: Vec<_> = invoices
            .iter()
            .cloned()
            .map(|inv| {
                let c = c.clone();
                let a = a.clone();
                tokio::spawn(async move { c.withdraw(&a, &inv, Some(0)).await })
            })
            .collect();
        let mut created = 0;
        let mut refused = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                StatusCode::CREATED => {
                    assert_eq!(body["num_satoshis"], -100);
                    created += 1;
                }
                StatusCode::BAD_REQUEST => {
                    let m = body["message"].as_str().unwrap();
                    assert!(
                        m.starts_with("Invoice too large :) Max balance: "),
                        "{body}"
                    );
                    refused += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let min = watcher.await.unwrap();
        assert_eq!((created, refused), (10, 40));
        assert!(min >= 0, "balance went negative: {min}");
        assert_eq!(s.balance_msat(&a).await, 0);
        let sent: usize = invoices
            .iter()
            .map(|i| s.scripted.pay_count(i.payment_hash()))
            .sum();
        assert_eq!(sent, 10, "only paid invoices reach the node");
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", a.waka))
            .await;
        assert_eq!(r.headers["x-pagination-total-count"], "11");
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ same hash

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_external_invoice_from_two_wallets_is_paid_once() {
    on_each_db(|s| async move {
        let a = s.create_wallet("A").await;
        let b = s.create_wallet("B").await;
        s.fund(&a, 5000).await;
        s.fund(&b, 5000).await;
        let c = Client::of(&s);
        let rounds: i64 = 10;
        for _ in 0..rounds {
            let inv = carol_invoice(&s, 100);
            let t1 = {
                let (c, a, inv) = (c.clone(), a.clone(), inv.clone());
                tokio::spawn(async move { c.withdraw(&a, &inv, None).await })
            };
            let t2 = {
                let (c, b, inv) = (c.clone(), b.clone(), inv.clone());
                tokio::spawn(async move { c.withdraw(&b, &inv, None).await })
            };
            let results = [t1.await.unwrap(), t2.await.unwrap()];
            let ok = results
                .iter()
                .filter(|(st, _)| *st == StatusCode::CREATED)
                .count();
            assert_eq!(ok, 1, "{results:?}");
            for (st, body) in &results {
                if *st != StatusCode::CREATED {
                    assert_eq!(*st, StatusCode::BAD_REQUEST, "{body}");
                    let m = body["message"].as_str().unwrap();
                    assert!(
                        m == "invoice is already paid"
                            || m == "Payment is already in flight for this invoice",
                        "{body}"
                    );
                }
            }
            assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        }
        let total = s.balance_msat(&a).await + s.balance_msat(&b).await;
        assert_eq!(total, 10_000_000 - rounds * 100_000);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_internal_invoice_from_two_wallets_is_paid_once() {
    on_each_db(|s| async move {
        let a = s.create_wallet("A").await;
        let b = s.create_wallet("B").await;
        let payee = s.create_wallet("C").await;
        s.fund(&a, 5000).await;
        s.fund(&b, 5000).await;
        let c = Client::of(&s);
        let rounds: i64 = 10;
        for round in 1..=rounds {
            let inv = our_invoice(&s, &payee, 100).await;
            let t1 = {
                let (c, a, inv) = (c.clone(), a.clone(), inv.clone());
                tokio::spawn(async move { c.withdraw(&a, &inv, None).await })
            };
            let t2 = {
                let (c, b, inv) = (c.clone(), b.clone(), inv.clone());
                tokio::spawn(async move { c.withdraw(&b, &inv, None).await })
            };
            let results = [t1.await.unwrap(), t2.await.unwrap()];
            let ok = results
                .iter()
                .filter(|(st, _)| *st == StatusCode::CREATED)
                .count();
            assert_eq!(ok, 1, "{results:?}");
            for (st, body) in &results {
                if *st != StatusCode::CREATED {
                    assert_eq!(*st, StatusCode::BAD_REQUEST, "{body}");
                    assert_eq!(body["message"], "invoice is already paid", "{body}");
                }
            }
            assert_eq!(s.balance_msat(&payee).await, round * 100_000);
            assert_eq!(s.scripted.pay_count(inv.payment_hash()), 0);
        }
        let total = s.balance_msat(&a).await + s.balance_msat(&b).await;
        assert_eq!(total, 10_000_000 - rounds * 100_000);
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", payee.waka))
            .await;
        assert_eq!(r.headers["x-pagination-total-count"], rounds.to_string());
        s
    })
    .await;
}

/// An internal payment racing the outside world paying the same invoice on the node: the
/// invoice is taken off the node before it is settled internally, so exactly one of the two
/// payers is charged, the payee is credited once and nothing lands in `sys:unclaimed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_and_outside_payment_of_one_invoice_credit_once() {
    on_each_db(|s| async move {
        let a = s.create_wallet("A").await;
        let payee = s.create_wallet("C").await;
        s.fund(&a, 5000).await;
        let c = Client::of(&s);
        let before = s.running().store.audit().await.unwrap().unclaimed_msat;
        let rounds: i64 = 50;
        let mut outside_paid = 0;
        for _ in 0..rounds {
            let inv = our_invoice(&s, &payee, 100).await;
            let t = {
                let (c, a, inv) = (c.clone(), a.clone(), inv.clone());
                tokio::spawn(async move { c.withdraw(&a, &inv, None).await })
            };
            let scripted = s.scripted.clone();
            let inv2 = inv.clone();
            let o = tokio::spawn(async move { scripted.pay_our_invoice(&inv2, None).is_ok() });
            let (st, body) = t.await.unwrap();
            let outside = o.await.unwrap();
            assert!(
                st == StatusCode::CREATED
                    || (st == StatusCode::BAD_REQUEST
                        && body["message"] == "invoice is already paid"),
                "{st}: {body}"
            );
            assert_ne!(st == StatusCode::CREATED, outside, "{st}: {body}");
            if outside {
                outside_paid += 1;
            }
        }
        s.wait_balance_msat(&payee, rounds * 100_000).await;
        s.wait_balance_msat(&a, 5_000_000 - (rounds - outside_paid) * 100_000)
            .await;
        let unclaimed = s.running().store.audit().await.unwrap().unclaimed_msat - before;
        assert_eq!(unclaimed, 0);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ transfers

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_transfers_do_not_deadlock() {
    on_each_db(|s| async move {
        let a = s.create_wallet("A").await;
        let b = s.create_wallet("B").await;
        s.fund(&a, 1000).await;
        s.fund(&b, 1000).await;
        let c = Client::of(&s);
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (c, a, b) = (c.clone(), a.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    c.transfer(&a, &b, 10).await
                } else {
                    c.transfer(&b, &a, 10).await
                }
            }));
        }
        let all = tokio::time::timeout(Duration::from_secs(60), async {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
        .await
        .expect("transfers deadlocked");
        for (st, body) in &all {
            assert_eq!(*st, StatusCode::CREATED, "{body}");
        }
        assert_eq!(s.balance_msat(&a).await, 1_000_000);
        assert_eq!(s.balance_msat(&b).await, 1_000_000);
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", a.waka))
            .await;
        assert_eq!(r.headers["x-pagination-total-count"], "101");
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ many wallets

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_wallets_mixed_traffic_conserves_money() {
    on_each_db(|s| async move {
        let n = 10;
        let mut ws = Vec::new();
        for i in 0..n {
            let w = s.create_wallet(&format!("W{i}")).await;
            s.fund(&w, 1000).await;
            ws.push(w);
        }
        // The node's fee is 1,234 msat; wallets are charged it rounded up to the sat.
        let fee_msat: i64 = 2000;
        let c = Client::of(&s);
        let mut tasks = Vec::new();
        for i in 0..n {
            let me = ws[i].clone();
            let next = ws[(i + 1) % n].clone();
            let c = c.clone();
            // Everything a wallet does, prepared outside the task (the node is shared).
            let deposit = our_invoice(&s, &me, 500).await;
            let out = carol_invoice(&s, 200);
            s.scripted.script(
                out.payment_hash(),
                Script::Succeed {
                    fee: Msat::from_msat(1234).unwrap(),
                },
            );
            let bad = carol_invoice(&s, 50);
            s.scripted
                .script(bad.payment_hash(), Script::Fail(FailureReason::NoRoute));
            let scripted = s.scripted.clone();
            tasks.push(tokio::spawn(async move {
                scripted.pay_our_invoice(&deposit, None).unwrap();
                let (st, body) = c.transfer(&me, &next, 100).await;
                assert_eq!(st, StatusCode::CREATED, "{body}");
                let (st, body) = c.withdraw(&me, &out, None).await;
                assert_eq!(st, StatusCode::CREATED, "{body}");
                let (st, body) = c.withdraw(&me, &bad, None).await;
                assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
                let (st, body) = c.transfer(&me, &next, 1).await;
                assert_eq!(st, StatusCode::CREATED, "{body}");
            }));
        }
        tokio::time::timeout(Duration::from_secs(60), async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .await
        .expect("mixed traffic stalled");
        let n = i64::try_from(n).unwrap();
        let expected = n * 1_500_000 - n * 200_000 - n * fee_msat;
        for _ in 0..200 {
            if sum_balances(&s, &ws).await == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(sum_balances(&s, &ws).await, expected);
        for w in &ws {
            // Each: +1000 +500 deposits, -101 +101 transfers, -200 withdrawal, -2 fee (1.234).
            assert_eq!(s.balance_msat(w).await, 1_300_000 - fee_msat);
        }
        let audit = s.running().store.audit().await.unwrap();
        assert_eq!(audit.in_flight_msat, 0);
        assert_eq!(audit.liabilities_msat, expected);
        assert_eq!(audit.revenue_msat, n * 766);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ recovery race

/// The reconciler re-drives live payments from a snapshot of the database. A payment that
/// failed (and was refunded) between that snapshot and the re-drive must not be sent again.
/// Many payments left in flight make each reconciler pass long, and a tight reconcile loop with
/// many quickly-failing payments makes the window likely.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciler_never_resends_a_failed_payment() {
    let cfg = ServiceConfig {
        reconcile_every: Duration::from_millis(1),
        payment_wait: Duration::from_millis(100),
        ..test_service_config()
    };
    on_each_db_with(cfg, |s| async move {
        let a = s.create_wallet("A").await;
        s.fund(&a, 10_000).await;
        let c = Client::of(&s);
        // Payments that stay in flight (each pass of the reconciler walks them all).
        let stuck: Vec<Bolt11> = (0..150).map(|_| carol_invoice(&s, 1)).collect();
        for inv in &stuck {
            s.scripted.script(inv.payment_hash(), Script::Unknown);
        }
        let tasks: Vec<_> = stuck
            .iter()
            .cloned()
            .map(|inv| {
                let (c, a) = (c.clone(), a.clone());
                tokio::spawn(async move { c.withdraw(&a, &inv, Some(0)).await })
            })
            .collect();
        for t in tasks {
            let (st, body) = t.await.unwrap();
            assert_eq!(st, StatusCode::ACCEPTED, "{body}");
        }
        // Payments that fail at once; a second send of any of them would succeed.
        let failing: Vec<Bolt11> = (0..60).map(|_| carol_invoice(&s, 100)).collect();
        for inv in &failing {
            s.scripted
                .script(inv.payment_hash(), Script::Fail(FailureReason::NoRoute));
        }
        let tasks: Vec<_> = failing
            .iter()
            .cloned()
            .map(|inv| {
                let (c, a) = (c.clone(), a.clone());
                tokio::spawn(async move { c.withdraw(&a, &inv, None).await })
            })
            .collect();
        for t in tasks {
            let (st, body) = t.await.unwrap();
            assert!(
                st == StatusCode::BAD_REQUEST || st == StatusCode::ACCEPTED,
                "{st}: {body}"
            );
        }
        // Every failing payment reaches the node once (a 202 may answer before it is sent;
        // on a loaded host that took longer than a fixed sleep), then the reconciler gets
        // time to resend one wrongly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while failing
            .iter()
            .any(|i| s.scripted.pay_count(i.payment_hash()) == 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let resent: Vec<usize> = failing
            .iter()
            .map(|i| s.scripted.pay_count(i.payment_hash()))
            .filter(|n| *n != 1)
            .collect();
        for inv in &stuck {
            s.scripted.complete(
                inv.payment_hash(),
                satchel_scripted::Completion::Fail(FailureReason::NoRoute),
            );
        }
        assert!(
            resent.is_empty(),
            "payments sent again after failing: {resent:?}"
        );
        s.wait_balance_msat(&a, 10_000_000).await;
        s
    })
    .await;
}

/// With the reconciler running constantly, a payment that resolves at once is still answered
/// synchronously (201 / 400), never 202 "pending".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_reconciler_does_not_turn_quick_payments_into_pending() {
    let cfg = ServiceConfig {
        reconcile_every: Duration::from_millis(1),
        ..test_service_config()
    };
    on_each_db_with(cfg, |s| async move {
        let a = s.create_wallet("A").await;
        s.fund(&a, 10_000).await;
        let c = Client::of(&s);
        let mut answers = Vec::new();
        for _ in 0..40 {
            let inv = carol_invoice(&s, 10);
            let (st, _) = c.withdraw(&a, &inv, None).await;
            answers.push(st.as_u16());
        }
        assert!(answers.iter().all(|s| *s == 201), "{answers:?}");
        s.wait_balance_msat(&a, 10_000_000 - 400_000).await;
        s
    })
    .await;
}
