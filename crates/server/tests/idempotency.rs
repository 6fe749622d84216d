//! `Idempotency-Key` on money-moving POSTs: a retry answers the first answer and moves no money
//! twice; another body under the same key is 422; keys are per account, survive a restart and
//! expire after the retention. Every scenario runs on SQLite and Postgres and ends with a clean
//! audit. (Across processes: `multiprocess.rs`; across a crash: `crash.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Resp, TestServer, WalletKeys, on_each_db, test_service_config};
use futures::future::join_all;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use satchel_domain::{FailureReason, Msat, PaymentHash};
use satchel_scripted::Script;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

async fn keyed(s: &TestServer, idem: &str, path: &str, body: Value) -> Resp {
    s.post_with(&s.sak, path, body, &[("Idempotency-Key", idem)])
        .await
}

/// A keyed `X-LNPAY-ASYNC` request.
async fn keyed_async(s: &TestServer, idem: &str, path: &str, body: Value) -> Resp {
    s.post_with(
        &s.sak,
        path,
        body,
        &[("Idempotency-Key", idem), ("X-LNPAY-ASYNC", "true")],
    )
    .await
}

fn replayed(r: &Resp) -> bool {
    r.headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn funded(s: &TestServer, label: &str, sats: u64) -> WalletKeys {
    let w = s.create_wallet(label).await;
    s.fund(&w, sats).await;
    w
}

fn transfer_path(w: &WalletKeys) -> String {
    format!("/wallet/{}/transfer", w.waka)
}

async fn wtx_count(s: &TestServer, w: &WalletKeys) -> usize {
    let r = s
        .get(&s.sak, &format!("/wallet/{}/transactions", w.id))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json.as_array().unwrap().len()
}

/// Every money-moving POST: the second request with the key gets the first answer, byte for
/// byte, and nothing moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_same_body_replays_the_first_answer_and_moves_money_once() {
    on_each_db(|s| async move {
        let a = funded(&s, "A", 1_000).await;
        let b = s.create_wallet("B").await;

        // Transfer.
        let body = json!({ "dest_wallet_id": b.id, "num_satoshis": 100, "memo": "m" });
        let first = keyed(&s, "t-1", &transfer_path(&a), body.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        assert!(!replayed(&first));
        let again = keyed(&s, "t-1", &transfer_path(&a), body).await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
        assert!(replayed(&again));
        assert_eq!(again.text, first.text);
        assert_eq!(
            again.headers.get("content-type"),
            first.headers.get("content-type")
        );
        // The same body with its keys in another order: the same request.
        let form = s
            .send(
                s.http
                    .post(s.v1(&transfer_path(&a)))
                    .header("X-Api-Key", &s.sak)
                    .header("Idempotency-Key", "t-1")
                    .header("Content-Type", "application/json")
                    .body(format!(
                        r#"{{"memo":"m","num_satoshis":100,"dest_wallet_id":"{}"}}"#,
                        b.id
                    )),
            )
            .await;
        assert_eq!(form.status, StatusCode::CREATED, "{}", form.text);
        assert_eq!(form.text, first.text);
        assert_eq!(s.balance(&a).await, 900);
        assert_eq!(s.balance(&b).await, 100);
        assert_eq!(wtx_count(&s, &b).await, 1);

        // Invoice.
        let inv_path = format!("/wallet/{}/invoice", b.waka);
        let inv_body = json!({ "num_satoshis": 5, "memo": "once" });
        let i1 = keyed(&s, "i-1", &inv_path, inv_body.clone()).await;
        assert_eq!(i1.status, StatusCode::CREATED, "{}", i1.text);
        let i2 = keyed(&s, "i-1", &inv_path, inv_body).await;
        assert_eq!(i2.status, StatusCode::CREATED);
        assert!(replayed(&i2));
        assert_eq!(i2.json["id"], i1.json["id"]);
        assert_eq!(i2.text, i1.text);

        // Wallet creation: one wallet, the same keys shown again to the same caller.
        let w1 = keyed(&s, "w-1", "/wallet", json!({ "user_label": "C" })).await;
        assert_eq!(w1.status, StatusCode::CREATED, "{}", w1.text);
        let w2 = keyed(&s, "w-1", "/wallet", json!({ "user_label": "C" })).await;
        assert_eq!(w2.status, StatusCode::CREATED);
        assert_eq!(w2.text, w1.text);
        let list = s.get(&s.sak, "/wallets").await;
        assert_eq!(list.json.as_array().unwrap().len(), 3, "{}", list.text);

        // Withdraw to the outside world.
        s.scripted.set_default_script(Script::Succeed {
            fee: Msat::from_msat(1_000).unwrap(),
        });
        let inv = s.external_invoice(50, "out");
        let wd_path = format!("/wallet/{}/withdraw", a.waka);
        let wd_body = json!({ "payment_request": inv.as_str() });
        let d1 = keyed(&s, "d-1", &wd_path, wd_body.clone()).await;
        assert_eq!(d1.status, StatusCode::CREATED, "{}", d1.text);
        let after = s.balance_msat(&a).await;
        assert_eq!(after, 900_000 - 50_000 - 1_000);
        let d2 = keyed(&s, "d-1", &wd_path, wd_body).await;
        assert_eq!(d2.status, StatusCode::CREATED, "{}", d2.text);
        assert!(replayed(&d2));
        assert_eq!(d2.text, d1.text);
        assert_eq!(s.balance_msat(&a).await, after);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);

        // Withdraw of one of our own invoices (settled inside the ledger).
        let own = s.invoice(&b, 7).await;
        let own_body = json!({ "payment_request": own["payment_request"] });
        let o1 = keyed(&s, "d-2", &wd_path, own_body.clone()).await;
        assert_eq!(o1.status, StatusCode::CREATED, "{}", o1.text);
        let o2 = keyed(&s, "d-2", &wd_path, own_body).await;
        assert_eq!(o2.text, o1.text);
        assert!(replayed(&o2));
        assert_eq!(s.balance_msat(&a).await, after - 7_000);
        assert_eq!(s.balance(&b).await, 107);

        // Keysend, synchronous and asynchronous.
        let carol = s.scripted.external_pubkey().to_hex();
        let ks_path = format!("/wallet/{}/keysend", a.waka);
        let ks_body = json!({ "dest_pubkey": carol, "num_satoshis": 21 });
        let k1 = keyed(&s, "k-1", &ks_path, ks_body.clone()).await;
        assert_eq!(k1.status, StatusCode::CREATED, "{}", k1.text);
        let k2 = keyed(&s, "k-1", &ks_path, ks_body.clone()).await;
        assert_eq!(k2.text, k1.text);
        let hash =
            PaymentHash::from_hex(k1.json["lnTx"]["r_hash_decoded"].as_str().unwrap()).unwrap();
        assert_eq!(s.scripted.pay_count(hash), 1);
        let before_async = s.balance_msat(&a).await;
        assert_eq!(before_async, after - 7_000 - 21_000 - 1_000);
        let j1 = keyed_async(&s, "k-2", &ks_path, ks_body.clone()).await;
        assert_eq!(j1.status, StatusCode::OK, "{}", j1.text);
        let j2 = keyed_async(&s, "k-2", &ks_path, ks_body.clone()).await;
        assert_eq!(j2.text, j1.text);
        assert!(replayed(&j2));
        // The async flag is part of the request: the same key without it is another request.
        let sync_again = keyed(&s, "k-2", &ks_path, ks_body).await;
        assert_eq!(
            sync_again.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            sync_again.text
        );
        s.wait_balance_msat(&a, before_async - 21_000 - 1_000).await;
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_with_another_request_is_422_and_moves_nothing() {
    on_each_db(|s| async move {
        let a = funded(&s, "A", 1_000).await;
        let b = s.create_wallet("B").await;
        let c = funded(&s, "C", 1_000).await;
        let body = |sats: u64| json!({ "dest_wallet_id": b.id, "num_satoshis": sats });
        let r = keyed(&s, "k", &transfer_path(&a), body(100)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        // Another amount, another wallet in the path, another route.
        for (path, body) in [
            (transfer_path(&a), body(200)),
            (transfer_path(&c), body(100)),
            (
                format!("/wallet/{}/invoice", a.waka),
                json!({ "num_satoshis": 100 }),
            ),
        ] {
            let r = keyed(&s, "k", &path, body).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path}: {}",
                r.text
            );
            assert_eq!(r.json["status"], 422, "{}", r.text);
            assert!(
                r.json["message"]
                    .as_str()
                    .unwrap()
                    .contains("Idempotency-Key")
            );
        }
        assert_eq!(s.balance(&a).await, 900);
        assert_eq!(s.balance(&b).await, 100);
        assert_eq!(s.balance(&c).await, 1_000);
        assert_eq!(wtx_count(&s, &a).await, 2, "deposit and one transfer");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_scoped_to_the_account() {
    on_each_db(|s| async move {
        let other = satchel_service::wallets::create_account(&s.running().store, "other")
            .await
            .unwrap();
        let sak2 = other.secret_key.expose().to_owned();
        let mine = keyed(&s, "same", "/wallet", json!({ "user_label": "x" })).await;
        assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.text);
        let theirs = s
            .post_with(
                &sak2,
                "/wallet",
                json!({ "user_label": "x" }),
                &[("Idempotency-Key", "same")],
            )
            .await;
        assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.text);
        assert!(!replayed(&theirs));
        assert_ne!(theirs.json["id"], mine.json["id"]);
        // Each account sees its own wallet only, and its own replay.
        let again = s
            .post_with(
                &sak2,
                "/wallet",
                json!({ "user_label": "x" }),
                &[("Idempotency-Key", "same")],
            )
            .await;
        assert_eq!(again.text, theirs.text);
        assert_eq!(
            s.get(&s.sak, "/wallets")
                .await
                .json
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.get(&sak2, "/wallets")
                .await
                .json
                .as_array()
                .unwrap()
                .len(),
            1
        );

        // Money in both accounts under one key: both move, once each.
        let a = funded(&s, "A", 500).await;
        let b = s.create_wallet("B").await;
        let waka2 = theirs.json["access_keys"]["Wallet Admin"][0]
            .as_str()
            .unwrap();
        let inv = s
            .post_with(
                &sak2,
                &format!("/wallet/{waka2}/invoice"),
                json!({ "num_satoshis": 40 }),
                &[("Idempotency-Key", "money")],
            )
            .await;
        assert_eq!(inv.status, StatusCode::CREATED, "{}", inv.text);
        let t = keyed(
            &s,
            "money",
            &transfer_path(&a),
            json!({ "dest_wallet_id": b.id, "num_satoshis": 40 }),
        )
        .await;
        assert_eq!(t.status, StatusCode::CREATED, "{}", t.text);
        assert!(!replayed(&t));
        assert_eq!(s.balance(&b).await, 40);
        s
    })
    .await;
}

/// Twenty identical requests at once: one operation, every answer about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_move_money_once() {
    on_each_db(|s| async move {
        let a = funded(&s, "A", 1_000).await;
        let b = s.create_wallet("B").await;
        s.scripted.set_default_script(Script::Succeed {
            fee: Msat::from_msat(1_000).unwrap(),
        });
        let inv = s.external_invoice(100, "dup");
        let wd = json!({ "payment_request": inv.as_str() });
        let path = format!("/wallet/{}/withdraw", a.waka);
        let answers = join_all((0..20).map(|_| keyed(&s, "dup-withdraw", &path, wd.clone()))).await;
        let mut lntx_ids = std::collections::HashSet::new();
        for r in &answers {
            let id = match r.status {
                StatusCode::CREATED => r.json["lnTx"]["id"].clone(),
                StatusCode::ACCEPTED => r.json["lnTx"]["id"].clone(),
                other => panic!("{other}: {}", r.text),
            };
            lntx_ids.insert(id.as_str().unwrap().to_owned());
        }
        assert_eq!(lntx_ids.len(), 1, "one payment: {lntx_ids:?}");
        s.wait_balance_msat(&a, 1_000_000 - 100_000 - 1_000).await;
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);

        let body = json!({ "dest_wallet_id": b.id, "num_satoshis": 10 });
        let tpath = transfer_path(&a);
        let answers =
            join_all((0..20).map(|_| keyed(&s, "dup-transfer", &tpath, body.clone()))).await;
        let mut out_ids = std::collections::HashSet::new();
        for r in &answers {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            out_ids.insert(
                r.json["wtx_transfer_out"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(out_ids.len(), 1, "one transfer: {out_ids:?}");
        assert_eq!(s.balance(&b).await, 10);
        assert_eq!(
            s.balance_msat(&a).await,
            1_000_000 - 100_000 - 1_000 - 10_000
        );

        let answers = join_all(
            (0..10).map(|_| keyed(&s, "dup-wallet", "/wallet", json!({ "user_label": "d" }))),
        )
        .await;
        let mut ids = std::collections::HashSet::new();
        for r in &answers {
            match r.status {
                StatusCode::CREATED => {
                    ids.insert(r.json["id"].as_str().unwrap().to_owned());
                }
                // Lost the race while the winner's answer was not stored yet.
                StatusCode::CONFLICT => assert!(r.headers.contains_key("retry-after")),
                other => panic!("{other}: {}", r.text),
            }
        }
        assert_eq!(ids.len(), 1, "{ids:?}");
        assert_eq!(
            s.get(&s.sak, "/wallets")
                .await
                .json
                .as_array()
                .unwrap()
                .len(),
            3
        );
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_keys_are_400_and_move_nothing() {
    on_each_db(|s| async move {
        let a = funded(&s, "A", 1_000).await;
        let b = s.create_wallet("B").await;
        let body = json!({ "dest_wallet_id": b.id, "num_satoshis": 1 });
        let long = "k".repeat(256);
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_str(&long).unwrap(),
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        ] {
            let r = s
                .send(
                    s.http
                        .post(s.v1(&transfer_path(&a)))
                        .header("X-Api-Key", &s.sak)
                        .header("Idempotency-Key", bad.clone())
                        .json(&body),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.text);
            assert!(
                r.json["message"]
                    .as_str()
                    .unwrap()
                    .contains("Idempotency-Key")
            );
        }
        assert_eq!(s.balance(&b).await, 0);
        let ok = keyed(&s, &"k".repeat(255), &transfer_path(&a), body).await;
        assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
        assert_eq!(s.balance(&b).await, 1);
        s
    })
    .await;
}

/// A refusal that wrote nothing is not remembered (a retry sees the balance as it is then);
/// a final answer given after money moved is (a failed payment, refunded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_answers_of_committed_operations_are_stored() {
    on_each_db(|s| async move {
        let a = funded(&s, "A", 100).await;
        let b = s.create_wallet("B").await;
        let body = json!({ "dest_wallet_id": b.id, "num_satoshis": 300 });
        let poor = keyed(&s, "later", &transfer_path(&a), body.clone()).await;
        assert_eq!(poor.status, StatusCode::BAD_REQUEST, "{}", poor.text);
        s.fund(&a, 500).await;
        let rich = keyed(&s, "later", &transfer_path(&a), body.clone()).await;
        assert_eq!(rich.status, StatusCode::CREATED, "{}", rich.text);
        assert!(!replayed(&rich));
        assert_eq!(
            keyed(&s, "later", &transfer_path(&a), body).await.text,
            rich.text
        );
        assert_eq!(s.balance(&a).await, 300);

        s.scripted
            .set_default_script(Script::Fail(FailureReason::NoRoute));
        let inv = s.external_invoice(10, "fails");
        let path = format!("/wallet/{}/withdraw", a.waka);
        let wd = json!({ "payment_request": inv.as_str() });
        let failed = keyed(&s, "fail", &path, wd.clone()).await;
        assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{}", failed.text);
        // Now it would succeed, but the key's answer is the failure, and nothing is sent.
        s.scripted
            .set_default_script(Script::Succeed { fee: Msat::ZERO });
        let again = keyed(&s, "fail", &path, wd).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert!(replayed(&again));
        assert_eq!(again.text, failed.text);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        assert_eq!(s.balance(&a).await, 300);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_survive_a_restart_and_expire_after_the_retention() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = TestServer::start(db).await;
        let a = funded(&s, "A", 1_000).await;
        let b = s.create_wallet("B").await;
        let body = json!({ "dest_wallet_id": b.id, "num_satoshis": 100 });
        let first = keyed(&s, "r", &transfer_path(&a), body.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
        let sak = s.sak.clone();
        let db = s.stop().await;

        let s = TestServer::start_with(db, test_service_config()).await;
        let path = transfer_path(&a);
        let again = s
            .post_with(&sak, &path, body.clone(), &[("Idempotency-Key", "r")])
            .await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
        assert!(replayed(&again));
        assert_eq!(again.text, first.text);
        let balance = |w: &WalletKeys| {
            let (s, sak, id) = (&s, sak.clone(), w.id.clone());
            async move { s.get(&sak, &format!("/wallet/{id}")).await.json["balance"].clone() }
        };
        assert_eq!(balance(&a).await, 900);

        // Past the retention the purge deletes it and the key is free again.
        let later = satchel_domain::now_secs() + 86_400 + 60;
        let purged = s
            .running()
            .store
            .purge_idempotency(later, 1_000)
            .await
            .unwrap();
        assert_eq!(purged, 1);
        let fresh = s
            .post_with(&sak, &path, body, &[("Idempotency-Key", "r")])
            .await;
        assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.text);
        assert!(!replayed(&fresh));
        assert_ne!(
            fresh.json["wtx_transfer_out"]["id"],
            first.json["wtx_transfer_out"]["id"]
        );
        assert_eq!(balance(&a).await, 800);
        assert_eq!(balance(&b).await, 200);
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

/// Keys are kept for the configured retention (at least the default day), not less.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unexpired_keys_are_not_purged() {
    on_each_db(|s| async move {
        let w = keyed(&s, "keep", "/wallet", json!({ "user_label": "k" })).await;
        assert_eq!(w.status, StatusCode::CREATED, "{}", w.text);
        let almost = satchel_domain::now_secs() + 86_400 - 60;
        let purged = s
            .running()
            .store
            .purge_idempotency(almost, 1_000)
            .await
            .unwrap();
        assert_eq!(purged, 0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            keyed(&s, "keep", "/wallet", json!({ "user_label": "k" }))
                .await
                .text,
            w.text
        );
        s
    })
    .await;
}
