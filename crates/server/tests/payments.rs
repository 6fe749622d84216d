//! Outgoing and incoming payments end to end: withdraw (success, fees, definite failures, pending,
//! unknown outcomes, transport errors, hangs, client disconnects), idempotency per payment hash,
//! internal settlement, incoming invoices and keysends, keysend out (sync and async) and recovery
//! after a restart. Every scenario runs on SQLite and Postgres and ends with a clean audit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{Resp, TestServer, WalletKeys, on_each_db, test_service_config};
use reqwest::StatusCode;
use satchel_domain::{
    Bolt11, CustomRecords, FailureReason, KEYSEND_PREIMAGE_TLV, LnTxId, Msat, NodeId, PaymentHash,
    PaymentStatus, Preimage, WalletId, now_secs,
};
use satchel_lightning::{IncomingEvent, IncomingKind, InvoiceState, Invoices as _};
use satchel_scripted::{Completion, Script};
use satchel_service::ServiceConfig;
use satchel_store::{CreditOutcome, ReserveCmd};
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------------ helpers

/// Test settings with a short payment wait, so unresolved payments answer 202 quickly.
fn fast_cfg() -> ServiceConfig {
    ServiceConfig {
        payment_wait: Duration::from_millis(300),
        ..test_service_config()
    }
}

/// Like `on_each_db`, with explicit service settings.
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

fn msat(n: u64) -> Msat {
    Msat::from_msat(n).unwrap()
}

/// An invoice of carol's and the preimage that paying it reveals.
fn carol_invoice(s: &TestServer, n: u64, memo: &str) -> (Bolt11, Preimage) {
    s.scripted.external_invoice(Some(sats(n)), memo, 3600)
}

async fn withdraw(s: &TestServer, w: &WalletKeys, inv: &Bolt11, fee_limit: Option<i64>) -> Resp {
    let mut body = json!({ "payment_request": inv.as_str() });
    if let Some(f) = fee_limit {
        body["fee_limit_msat"] = json!(f);
    }
    s.post(&s.sak, &format!("/wallet/{}/withdraw", w.waka), body)
        .await
}

async fn keysend(s: &TestServer, w: &WalletKeys, body: Value) -> Resp {
    s.post(&s.sak, &format!("/wallet/{}/keysend", w.waka), body)
        .await
}

async fn lntx(s: &TestServer, id: &str) -> Value {
    let r = s.get(&s.sak, &format!("/lntx/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

/// The wallet's history, newest first.
async fn history(s: &TestServer, w: &WalletKeys) -> Vec<Value> {
    let r = s
        .get(&s.sak, &format!("/wallet/{}/transactions", w.waka))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json.as_array().unwrap().clone()
}

fn wtx_names(h: &[Value]) -> Vec<String> {
    h.iter()
        .map(|t| t["wtxType"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn assert_400(r: &Resp, message: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["message"], message, "{}", r.text);
    assert_eq!(r.json["status"], 400, "{}", r.text);
}

/// Polls `f` every 50 ms for up to 10 s.
async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Watches for `d` that the balance stays at `msat` (a reserve is never released on a timer).
async fn assert_balance_stays(s: &TestServer, w: &WalletKeys, msat: i64, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        assert_eq!(s.balance_msat(w).await, msat, "balance moved while pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Funds a fresh wallet and returns it with its balance in msat.
async fn funded(s: &TestServer, label: &str, n: u64) -> (WalletKeys, i64) {
    let w = s.create_wallet(label).await;
    s.fund(&w, n).await;
    let b = s.balance_msat(&w).await;
    assert_eq!(b, i64::try_from(n * 1000).unwrap());
    (w, b)
}

fn hash_hex(b: &Bolt11) -> String {
    b.payment_hash().to_hex()
}

fn sha256_hex(hex_preimage: &str) -> String {
    hex::encode(Sha256::digest(hex::decode(hex_preimage).unwrap()))
}

// ------------------------------------------------------------------------------------ 1. success

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdraw_success_books_amount_and_network_fee() {
    on_each_db(|s| async move {
        let (a, start) = funded(&s, "A", 10_000).await;
        let (inv, preimage) = carol_invoice(&s, 1000, "coffee");
        s.scripted
            .script(inv.payment_hash(), Script::Succeed { fee: msat(1500) });
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({ "payment_request": inv.as_str(), "passThru": { "order": "42" } }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let w = &r.json;
        assert_eq!(w["num_satoshis"], -1000);
        assert_eq!(w["user_label"], "coffee");
        assert_eq!(w["wtxType"]["name"], "ln_withdrawal");
        assert_eq!(w["passThru"]["order"], "42");
        assert_eq!(w["passThru"]["method"], "api");
        assert_eq!(w["lnTx"]["fee_msat"], 1500);
        assert_eq!(w["lnTx"]["settled"], 1);
        assert_eq!(w["lnTx"]["num_satoshis"], 1000);
        assert_eq!(w["lnTx"]["r_hash_decoded"], hash_hex(&inv));
        assert_eq!(w["lnTx"]["payment_preimage"], preimage.to_hex());
        assert_eq!(w["lnTx"]["payment_request"], inv.as_str());
        // wal shows the balance after the withdrawal and its fee.
        assert_eq!(w["wal"]["balance_msat"], start - 1_000_000 - 2000);

        // Charged amount + real fee rounded up to the sat (the 500 msat above the real fee go
        // to the operator's revenue account), not the fee limit.
        assert_eq!(s.balance_msat(&a).await, start - 1_000_000 - 2000);
        assert_eq!(s.balance(&a).await, 8998);

        let h = history(&s, &a).await;
        assert_eq!(
            wtx_names(&h),
            ["network_fee", "ln_withdrawal", "ln_deposit"]
        );
        let fee = &h[0];
        assert_eq!(
            fee["num_satoshis"], -2,
            "a 1500 msat fee is charged as 2 sats"
        );
        assert_eq!(fee["user_label"], "Network fee");
        assert_eq!(fee["passThru"]["source_transaction"], w["id"]);
        assert_eq!(fee["passThru"]["fee_target_wallet"], "contained");
        assert_eq!(h[1]["id"], w["id"]);
        assert_eq!(h[1]["num_satoshis"], -1000);

        let l = lntx(&s, w["lnTx"]["id"].as_str().unwrap()).await;
        assert_eq!(l["settled"], 1);
        assert_eq!(l["fee_msat"], 1500);
        assert_eq!(l["payment_preimage"], preimage.to_hex());
        assert_eq!(l["passThru"]["order"], "42");
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);

        // A payment with no fee books no network_fee entry.
        let (inv2, _) = carol_invoice(&s, 10, "no fee");
        let r = withdraw(&s, &a, &inv2, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["lnTx"]["fee_msat"], 0);
        assert_eq!(s.balance_msat(&a).await, start - 1_010_000 - 2000);
        assert_eq!(
            wtx_names(&history(&s, &a).await),
            [
                "ln_withdrawal",
                "network_fee",
                "ln_withdrawal",
                "ln_deposit"
            ]
        );
        s
    })
    .await;
}

/// LNPay spec §4.4: `lnTx` is null on fee entries (only the withdrawal carries the payment).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_fee_wtx_has_null_lntx() {
    on_each_db(|s| async move {
        let (a, _) = funded(&s, "A", 2000).await;
        let (inv, _) = carol_invoice(&s, 1000, "fee");
        s.scripted
            .script(inv.payment_hash(), Script::Succeed { fee: msat(1500) });
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let h = history(&s, &a).await;
        assert_eq!(h[0]["wtxType"]["name"], "network_fee");
        assert_eq!(h[0]["lnTx"], Value::Null, "{}", h[0]);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 2-3. failures

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fee_limit_is_enforced_and_refunded_exactly() {
    on_each_db(|s| async move {
        let (a, start) = funded(&s, "A", 5000).await;

        // Explicit limit below the route's fee: NO_ROUTE, nothing charged.
        let (inv, _) = carol_invoice(&s, 1000, "too dear");
        s.scripted
            .script(inv.payment_hash(), Script::Succeed { fee: msat(5000) });
        let r = withdraw(&s, &a, &inv, Some(1000)).await;
        assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE");
        assert_eq!(s.balance_msat(&a).await, start);

        // Default limit: ceil(5% of 1000 sats) = 50 sats; one msat more is refused...
        let (inv, _) = carol_invoice(&s, 1000, "default limit");
        s.scripted
            .script(inv.payment_hash(), Script::Succeed { fee: msat(50_001) });
        let r = withdraw(&s, &a, &inv, None).await;
        assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE");
        assert_eq!(s.balance_msat(&a).await, start);

        // ...and exactly the limit is paid.
        let (inv, _) = carol_invoice(&s, 1000, "at the limit");
        s.scripted
            .script(inv.payment_hash(), Script::Succeed { fee: msat(50_000) });
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(s.balance_msat(&a).await, start - 1_050_000);
        let start = start - 1_050_000;

        // A fee limit of 0 allows only free routes.
        let (inv, _) = carol_invoice(&s, 100, "zero limit");
        s.scripted
            .script(inv.payment_hash(), Script::Succeed { fee: msat(1) });
        let r = withdraw(&s, &a, &inv, Some(0)).await;
        assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE");
        assert_eq!(s.balance_msat(&a).await, start);

        // Negative limits are refused before anything is reserved.
        let (inv, _) = carol_invoice(&s, 100, "negative");
        let r = withdraw(&s, &a, &inv, Some(-1)).await;
        assert_400(&r, "Fee Limit Msat must be no less than 0.");
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 0);

        // Amount + fee limit must fit the balance (3950 sats left).
        let (inv, _) = carol_invoice(&s, 3900, "too big");
        let r = withdraw(&s, &a, &inv, Some(50_001)).await;
        assert_400(&r, "Invoice too large :) Max balance: 3950");
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 0);
        // Exactly the balance is fine; the unused limit comes back.
        let r = withdraw(&s, &a, &inv, Some(50_000)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(s.balance_msat(&a).await, 50_000);
        assert_eq!(
            wtx_names(&history(&s, &a).await),
            [
                "ln_withdrawal",
                "network_fee",
                "ln_withdrawal",
                "ln_deposit"
            ]
        );
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn definite_failures_answer_lnd_reason_and_refund_exactly() {
    on_each_db(|s| async move {
        let (a, start) = funded(&s, "A", 3000).await;
        for reason in [
            FailureReason::NoRoute,
            FailureReason::IncorrectPaymentDetails,
            FailureReason::InsufficientBalance,
            FailureReason::Timeout,
            FailureReason::Error,
        ] {
            let (inv, _) = carol_invoice(&s, 777, "fails");
            s.scripted.script(inv.payment_hash(), Script::Fail(reason));
            let r = withdraw(&s, &a, &inv, Some(1234)).await;
            assert_400(&r, &format!("Failure reason: {}", reason.lnd_name()));
            assert_eq!(s.balance_msat(&a).await, start, "{reason:?}");
            assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        }
        // An expired invoice is refused before anything is reserved or sent.
        let old = u64::try_from(now_secs() - 7200).unwrap();
        let inv = s
            .scripted
            .external_invoice_at(Some(sats(10)), "old", old, 60);
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 0);
        // Refused payments leave no trace in the history.
        assert_eq!(wtx_names(&history(&s, &a).await), ["ln_deposit"]);
        assert_eq!(s.balance_msat(&a).await, start);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 4-5. pending

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_payment_answers_202_keeps_reserve_then_settles() {
    on_each_db_with(fast_cfg(), |s| async move {
        let (a, start) = funded(&s, "A", 10_000).await;

        // PendingThenSucceed, resolved by `release`.
        let (inv, preimage) = carol_invoice(&s, 1000, "slow");
        s.scripted.script(
            inv.payment_hash(),
            Script::PendingThenSucceed { fee: msat(700) },
        );
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(r.json["status"], "pending");
        let l = &r.json["lnTx"];
        assert_eq!(l["settled"], 0);
        assert_eq!(l["payment_preimage"], Value::Null);
        assert_eq!(l["r_hash_decoded"], hash_hex(&inv));
        assert_eq!(l["num_satoshis"], 1000);
        let id = l["id"].as_str().unwrap().to_owned();
        // amount + fee limit (50 sats) stay reserved; no WTX while pending.
        let reserved = start - 1_000_000 - 50_000;
        assert_eq!(s.balance_msat(&a).await, reserved);
        assert_eq!(s.balance(&a).await, 8950);
        assert_eq!(wtx_names(&history(&s, &a).await), ["ln_deposit"]);
        assert_eq!(lntx(&s, &id).await["settled"], 0);
        let audit = s.running().store.audit().await.unwrap();
        assert_eq!(audit.in_flight_msat, 1_050_000);
        assert!(audit.is_clean(), "{:?}", audit.problems);

        assert!(s.scripted.release(inv.payment_hash()));
        // The 700 msat fee is charged as 1 sat.
        s.wait_balance_msat(&a, start - 1_000_000 - 1000).await;
        let l = lntx(&s, &id).await;
        assert_eq!(l["settled"], 1);
        assert_eq!(l["fee_msat"], 700);
        assert_eq!(l["payment_preimage"], preimage.to_hex());
        let h = history(&s, &a).await;
        assert_eq!(
            wtx_names(&h),
            ["network_fee", "ln_withdrawal", "ln_deposit"]
        );
        assert_eq!(h[0]["num_satoshis"], -1);
        assert_eq!(h[1]["lnTx"]["id"], id.as_str());
        let start = start - 1_000_000 - 1000;

        // Unknown, resolved by `complete`.
        let (inv, preimage) = carol_invoice(&s, 2000, "unknown");
        s.scripted.script(inv.payment_hash(), Script::Unknown);
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let id = r.json["lnTx"]["id"].as_str().unwrap().to_owned();
        assert_eq!(s.balance_msat(&a).await, start - 2_100_000);
        s.scripted
            .complete(inv.payment_hash(), Completion::Succeed { fee: msat(2500) });
        s.wait_balance_msat(&a, start - 2_003_000).await;
        let l = lntx(&s, &id).await;
        assert_eq!(l["settled"], 1);
        assert_eq!(l["fee_msat"], 2500);
        assert_eq!(l["payment_preimage"], preimage.to_hex());
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        assert_eq!(s.running().store.audit().await.unwrap().in_flight_msat, 0);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_outcome_is_refunded_only_after_proven_failure() {
    on_each_db_with(fast_cfg(), |s| async move {
        let (a, start) = funded(&s, "A", 2000).await;
        let (inv, _) = carol_invoice(&s, 1000, "unknown then fail");
        s.scripted.script(inv.payment_hash(), Script::Unknown);
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let id = r.json["lnTx"]["id"].as_str().unwrap().to_owned();
        let reserved = start - 1_050_000;
        // Several driver polls and reconciler passes: still reserved.
        assert_balance_stays(&s, &a, reserved, Duration::from_millis(1500)).await;
        assert_eq!(lntx(&s, &id).await["settled"], 0);

        s.scripted
            .complete(inv.payment_hash(), Completion::Fail(FailureReason::Timeout));
        s.wait_balance_msat(&a, start).await;
        let l = lntx(&s, &id).await;
        assert_eq!(l["settled"], -1, "a failed payment shows settled -1: {l}");
        assert_eq!(l["payment_preimage"], Value::Null);
        assert_eq!(wtx_names(&history(&s, &a).await), ["ln_deposit"]);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);

        // A success whose fee exceeds the limit is a failure too, and refunded.
        let (inv, _) = carol_invoice(&s, 1000, "unknown, too dear");
        s.scripted.script(inv.payment_hash(), Script::Unknown);
        let r = withdraw(&s, &a, &inv, Some(3000)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_eq!(s.balance_msat(&a).await, start - 1_003_000);
        s.scripted
            .complete(inv.payment_hash(), Completion::Succeed { fee: msat(3001) });
        s.wait_balance_msat(&a, start).await;
        let id = r.json["lnTx"]["id"].as_str().unwrap();
        assert_eq!(lntx(&s, id).await["settled"], -1);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 6. transport

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transport_errors_never_refund_until_the_node_says_so() {
    on_each_db_with(fast_cfg(), |s| async move {
        let (a, start) = funded(&s, "A", 10_000).await;

        // The call errs but the payment went through: settled, never refunded.
        let (inv, preimage) = carol_invoice(&s, 1000, "te ok");
        s.scripted.script(
            inv.payment_hash(),
            Script::TransportError {
                then: Box::new(Script::Succeed { fee: msat(1000) }),
            },
        );
        let r = withdraw(&s, &a, &inv, None).await;
        let id = match r.status {
            StatusCode::CREATED => r.json["lnTx"]["id"].as_str().unwrap().to_owned(),
            StatusCode::ACCEPTED => r.json["lnTx"]["id"].as_str().unwrap().to_owned(),
            _ => panic!("unexpected answer {}", r.text),
        };
        s.wait_balance_msat(&a, start - 1_001_000).await;
        let l = lntx(&s, &id).await;
        assert_eq!(l["settled"], 1);
        assert_eq!(l["payment_preimage"], preimage.to_hex());
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        let start = start - 1_001_000;

        // The call errs and the payment is still in flight: 202, stays reserved.
        let (inv, _) = carol_invoice(&s, 1000, "te pending");
        s.scripted.script(
            inv.payment_hash(),
            Script::TransportError {
                then: Box::new(Script::Unknown),
            },
        );
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_balance_stays(&s, &a, start - 1_050_000, Duration::from_millis(1200)).await;
        s.scripted
            .complete(inv.payment_hash(), Completion::Succeed { fee: msat(1) });
        // A 1 msat fee is charged as 1 sat.
        s.wait_balance_msat(&a, start - 1_001_000).await;
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        let start = start - 1_001_000;

        // Same, ending in a proven failure: refunded after the node says so.
        let (inv, _) = carol_invoice(&s, 1000, "te pending fail");
        s.scripted.script(
            inv.payment_hash(),
            Script::TransportError {
                then: Box::new(Script::Unknown),
            },
        );
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert_balance_stays(&s, &a, start - 1_050_000, Duration::from_millis(600)).await;
        s.scripted
            .complete(inv.payment_hash(), Completion::Fail(FailureReason::NoRoute));
        s.wait_balance_msat(&a, start).await;

        // The call errs and the payment had failed: refunded once the lookup proves it.
        let (inv, _) = carol_invoice(&s, 1000, "te fail");
        s.scripted.script(
            inv.payment_hash(),
            Script::TransportError {
                then: Box::new(Script::Fail(FailureReason::NoRoute)),
            },
        );
        let r = withdraw(&s, &a, &inv, None).await;
        match r.status {
            StatusCode::BAD_REQUEST => assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE"),
            StatusCode::ACCEPTED => {}
            _ => panic!("unexpected answer {}", r.text),
        }
        s.wait_balance_msat(&a, start).await;
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        assert_eq!(
            wtx_names(&history(&s, &a).await),
            [
                "network_fee",
                "ln_withdrawal",
                "network_fee",
                "ln_withdrawal",
                "ln_deposit"
            ]
        );
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 7. hang

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hanging_payment_survives_client_disconnect() {
    on_each_db_with(fast_cfg(), |s| async move {
        let (a, start) = funded(&s, "A", 5000).await;

        // A hanging node call: the request answers 202 after the wait.
        let (inv, _) = carol_invoice(&s, 1000, "hang");
        s.scripted.script(
            inv.payment_hash(),
            Script::Hang {
                then: Box::new(Script::Succeed { fee: msat(300) }),
            },
        );
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let id = r.json["lnTx"]["id"].as_str().unwrap().to_owned();
        assert_eq!(s.balance_msat(&a).await, start - 1_050_000);
        assert!(s.scripted.release(inv.payment_hash()));
        s.wait_balance_msat(&a, start - 1_001_000).await;
        assert_eq!(lntx(&s, &id).await["settled"], 1);
        let start = start - 1_001_000;

        // The client gives up (its request future is dropped) while the node call hangs.
        let (inv, preimage) = carol_invoice(&s, 1000, "hang, client gone");
        s.scripted.script(
            inv.payment_hash(),
            Script::Hang {
                then: Box::new(Script::Unknown),
            },
        );
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let sent = impatient
            .post(s.v1(&format!("/wallet/{}/withdraw", a.waka)))
            .header("X-Api-Key", &s.sak)
            .json(&json!({ "payment_request": inv.as_str() }))
            .send()
            .await;
        assert!(sent.is_err(), "the client should have timed out");
        // The payment goes on: reserved, then settled once the node completes it.
        s.wait_balance_msat(&a, start - 1_050_000).await;
        assert_balance_stays(&s, &a, start - 1_050_000, Duration::from_millis(500)).await;
        s.scripted
            .complete(inv.payment_hash(), Completion::Succeed { fee: msat(10) });
        s.wait_balance_msat(&a, start - 1_001_000).await;
        let h = history(&s, &a).await;
        assert_eq!(h[1]["wtxType"]["name"], "ln_withdrawal");
        assert_eq!(h[1]["lnTx"]["payment_preimage"], preimage.to_hex());
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 8. idempotency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_payment_per_hash() {
    // Long enough that a scripted success or failure is always answered synchronously, short
    // enough for the one pending attempt.
    let cfg = ServiceConfig {
        payment_wait: Duration::from_secs(1),
        ..test_service_config()
    };
    on_each_db_with(cfg, |s| async move {
        let (a, start_a) = funded(&s, "A", 5000).await;
        let (b, start_b) = funded(&s, "B", 5000).await;

        // Paid once; a second attempt (any wallet) is refused and sends nothing.
        let (inv, _) = carol_invoice(&s, 100, "once");
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_400(
            &withdraw(&s, &a, &inv, None).await,
            "invoice is already paid",
        );
        assert_400(
            &withdraw(&s, &b, &inv, None).await,
            "invoice is already paid",
        );
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        assert_eq!(s.balance_msat(&a).await, start_a - 100_000);
        assert_eq!(s.balance_msat(&b).await, start_b);
        let start_a = start_a - 100_000;

        // While the first attempt is in flight, no second one is sent or reserved.
        let (inv, _) = carol_invoice(&s, 200, "in flight");
        s.scripted.script(inv.payment_hash(), Script::Unknown);
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let in_flight = "Payment is already in flight for this invoice";
        assert_400(&withdraw(&s, &a, &inv, None).await, in_flight);
        assert_400(&withdraw(&s, &b, &inv, None).await, in_flight);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        assert_eq!(s.balance_msat(&a).await, start_a - 210_000);
        assert_eq!(s.balance_msat(&b).await, start_b);
        s.scripted
            .complete(inv.payment_hash(), Completion::Succeed { fee: msat(0) });
        s.wait_balance_msat(&a, start_a - 200_000).await;
        assert_400(
            &withdraw(&s, &b, &inv, None).await,
            "invoice is already paid",
        );
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        let start_a = start_a - 200_000;

        // After a definite failure, a retry is a new attempt and may succeed (charged once).
        let (inv, _) = carol_invoice(&s, 300, "retry");
        s.scripted
            .script(inv.payment_hash(), Script::Fail(FailureReason::NoRoute));
        assert_400(
            &withdraw(&s, &a, &inv, None).await,
            "Failure reason: FAILURE_REASON_NO_ROUTE",
        );
        assert_eq!(s.balance_msat(&a).await, start_a);
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 2);
        assert_eq!(s.balance_msat(&a).await, start_a - 300_000);
        assert_400(
            &withdraw(&s, &b, &inv, None).await,
            "invoice is already paid",
        );
        assert_eq!(
            wtx_names(&history(&s, &a).await),
            [
                "ln_withdrawal",
                "ln_withdrawal",
                "ln_withdrawal",
                "ln_deposit"
            ]
        );
        assert_eq!(wtx_names(&history(&s, &b).await), ["ln_deposit"]);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 9. internal

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_invoice_settles_in_the_ledger_once() {
    on_each_db(|s| async move {
        let (a, start_a) = funded(&s, "A", 1000).await;
        let b = s.create_wallet("B").await;
        let (c, start_c) = funded(&s, "C", 1000).await;
        let unclaimed_before = s.running().store.audit().await.unwrap().unclaimed_msat;

        let inv_json = s.invoice(&b, 300).await;
        let inv_id = inv_json["id"].as_str().unwrap().to_owned();
        let inv = Bolt11::parse(inv_json["payment_request"].as_str().unwrap()).unwrap();
        let r = withdraw(&s, &a, &inv, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["num_satoshis"], -300);
        assert_eq!(r.json["wtxType"]["name"], "ln_withdrawal");
        assert_eq!(r.json["lnTx"]["fee_msat"], 0);
        assert_eq!(r.json["lnTx"]["settled"], 1);
        let preimage = r.json["lnTx"]["payment_preimage"]
            .as_str()
            .expect("payer sees the preimage")
            .to_owned();
        assert_eq!(sha256_hex(&preimage), hash_hex(&inv));

        // No fee, no fee-limit reserve left behind, nothing sent over Lightning.
        assert_eq!(s.balance_msat(&a).await, start_a - 300_000);
        assert_eq!(s.balance_msat(&b).await, 300_000);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 0);
        let l = lntx(&s, &inv_id).await;
        assert_eq!(l["settled"], 1);
        assert_eq!(l["payment_preimage"], preimage.as_str());
        let hb = history(&s, &b).await;
        assert_eq!(wtx_names(&hb), ["ln_deposit"]);
        assert_eq!(hb[0]["num_satoshis"], 300);
        assert_eq!(
            wtx_names(&history(&s, &a).await),
            ["ln_withdrawal", "ln_deposit"]
        );

        // The node invoice gets cancelled, so the outside world can no longer pay it.
        let hash = inv.payment_hash();
        let scripted = s.scripted.clone();
        wait_until("invoice cancelled on the node", || {
            let scripted = scripted.clone();
            async move {
                scripted.lookup_invoice(hash).await.unwrap() == Some(InvoiceState::Canceled)
            }
        })
        .await;
        assert!(s.scripted.pay_our_invoice(&inv, None).is_err());

        // Nobody can pay it again.
        assert_400(
            &withdraw(&s, &c, &inv, None).await,
            "invoice is already paid",
        );
        assert_400(
            &withdraw(&s, &a, &inv, None).await,
            "invoice is already paid",
        );
        assert_eq!(s.balance_msat(&c).await, start_c);

        // Had the outside world paid it before the cancel landed, the node's settlement would
        // reach us as an event: it must not credit B a second time (the money is unclaimed).
        let ev = IncomingEvent {
            seq: 1_000_000,
            kind: IncomingKind::InvoiceSettled {
                payment_hash: hash,
                amount_received: sats(300),
                settled_at_secs: now_secs(),
            },
        };
        let incoming = &s.running().services.incoming;
        assert_eq!(
            incoming.process(&ev).await.unwrap(),
            CreditOutcome::Unclaimed
        );
        assert_eq!(
            incoming.process(&ev).await.unwrap(),
            CreditOutcome::AlreadyCredited
        );
        assert_eq!(s.balance_msat(&b).await, 300_000);
        assert_eq!(wtx_names(&history(&s, &b).await), ["ln_deposit"]);
        let audit = s.running().store.audit().await.unwrap();
        assert_eq!(audit.unclaimed_msat - unclaimed_before, 300_000);

        // Internal payments reserve no fee limit: the whole balance can be spent, not more.
        let big = s.invoice(&b, 1001).await;
        let big = Bolt11::parse(big["payment_request"].as_str().unwrap()).unwrap();
        assert_400(
            &withdraw(&s, &c, &big, None).await,
            "Invoice too large :) Max balance: 1000",
        );
        let exact = s.invoice(&b, 1000).await;
        let exact = Bolt11::parse(exact["payment_request"].as_str().unwrap()).unwrap();
        let r = withdraw(&s, &c, &exact, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(s.balance_msat(&c).await, 0);
        assert_eq!(s.balance_msat(&b).await, 1_300_000);
        s
    })
    .await;
}

/// Our invoice recognized by its exact text skips signature re-verification; a re-cased text is
/// the same invoice. Our payment hash re-signed by somebody else is *their* invoice: it is paid
/// to them over the network like any outside invoice (for what it says, never at our stored
/// amount) and our invoice stays open. (`tests/ownpay.rs` rewrites every field.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn own_invoices_are_recognized_in_any_wrapping() {
    on_each_db(|s| async move {
        let (a, start_a) = funded(&s, "A", 1000).await;
        let b = s.create_wallet("B").await;

        // Upper case with a URI prefix: the same invoice once normalized.
        let inv = s.invoice(&b, 100).await;
        let text = inv["payment_request"].as_str().unwrap().to_owned();
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({"payment_request": format!("LIGHTNING:{}", text.to_uppercase())}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["lnTx"]["fee_msat"], 0);
        assert_eq!(s.balance_msat(&b).await, 100_000);

        // Our hash inside an invoice carol signed: carol's invoice, sent to the node, which
        // fails it (carol does not know the preimage); refunded, nobody credited.
        let inv = s.invoice(&b, 200).await;
        let ours = Bolt11::parse(inv["payment_request"].as_str().unwrap()).unwrap();
        let rewrapped = s.scripted.external_invoice_with_hash(
            ours.payment_hash(),
            Some(sats(200)),
            "rewrapped",
        );
        assert_ne!(rewrapped.as_str(), ours.as_str());
        let r = withdraw(&s, &a, &rewrapped, None).await;
        assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE");
        assert_eq!(s.scripted.pay_count(ours.payment_hash()), 1);
        assert_eq!(s.balance_msat(&b).await, 100_000);
        assert_eq!(s.balance_msat(&a).await, start_a - 100_000);
        // Our invoice itself is still open, and settles internally once.
        let r = withdraw(&s, &a, &ours, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["lnTx"]["fee_msat"], 0);
        assert_eq!(s.scripted.pay_count(ours.payment_hash()), 1);
        assert_eq!(s.balance_msat(&b).await, 300_000);
        assert_eq!(s.balance_msat(&a).await, start_a - 300_000);

        // A fee limit is still checked on the fast path.
        let inv = s.invoice(&b, 10).await;
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({"payment_request": inv["payment_request"], "fee_limit_msat": -1}),
            )
            .await;
        assert_400(&r, "Fee Limit Msat must be no less than 0.");
        assert_eq!(s.balance_msat(&a).await, start_a - 300_000);
        s
    })
    .await;
}

/// A configured send limit refuses larger payments, internal (fast path) or outside, before
/// anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_limit_applies_to_internal_and_outside_invoices() {
    let cfg = ServiceConfig {
        max_send: Some(sats(100)),
        ..fast_cfg()
    };
    on_each_db_with(cfg, |s| async move {
        let (a, start_a) = funded(&s, "A", 1000).await;
        let b = s.create_wallet("B").await;
        let big = s.invoice(&b, 101).await;
        let big = Bolt11::parse(big["payment_request"].as_str().unwrap()).unwrap();
        let msg = "Sends are limited to: 100 satoshi per request";
        assert_400(&withdraw(&s, &a, &big, None).await, msg);
        let (outside, _) = carol_invoice(&s, 101, "outside");
        assert_400(&withdraw(&s, &a, &outside, None).await, msg);
        assert_eq!(s.scripted.pay_count(outside.payment_hash()), 0);
        assert_eq!(s.balance_msat(&a).await, start_a);
        assert_eq!(s.balance_msat(&b).await, 0);
        // At the limit: paid.
        let ok = s.invoice(&b, 100).await;
        let ok = Bolt11::parse(ok["payment_request"].as_str().unwrap()).unwrap();
        let r = withdraw(&s, &a, &ok, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(s.balance_msat(&b).await, 100_000);
        s
    })
    .await;
}

/// A wallet paying its own invoice: no money is made or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paying_own_invoice_from_the_same_wallet_mints_nothing() {
    on_each_db(|s| async move {
        let (a, start) = funded(&s, "A", 1000).await;
        let inv = s.invoice(&a, 400).await;
        let inv = Bolt11::parse(inv["payment_request"].as_str().unwrap()).unwrap();
        let r = withdraw(&s, &a, &inv, None).await;
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::BAD_REQUEST,
            "{}",
            r.text
        );
        assert_eq!(s.balance_msat(&a).await, start);
        // And the invoice cannot be paid again by anyone, in or out.
        let b = s.create_wallet("B").await;
        s.fund(&b, 1000).await;
        let r2 = withdraw(&s, &b, &inv, None).await;
        if r.status == StatusCode::CREATED {
            assert_400(&r2, "invoice is already paid");
            assert_eq!(s.balance_msat(&b).await, 1_000_000);
        }
        assert_eq!(
            s.balance_msat(&a).await + s.balance_msat(&b).await,
            start + 1_000_000
        );
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 10. incoming

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incoming_invoices_are_credited_exactly_once() {
    on_each_db(|s| async move {
        let a = s.create_wallet("A").await;
        let inv_json = s.invoice(&a, 250).await;
        assert_eq!(inv_json["settled"], 0);
        assert_eq!(inv_json["payment_preimage"], Value::Null);
        let inv = Bolt11::parse(inv_json["payment_request"].as_str().unwrap()).unwrap();
        s.scripted.pay_our_invoice(&inv, None).unwrap();
        s.wait_balance_msat(&a, 250_000).await;
        let h = history(&s, &a).await;
        assert_eq!(wtx_names(&h), ["ln_deposit"]);
        assert_eq!(h[0]["num_satoshis"], 250);
        assert_eq!(h[0]["lnTx"]["settled"], 1);
        let l = lntx(&s, inv_json["id"].as_str().unwrap()).await;
        assert_eq!(l["settled"], 1);
        assert_eq!(
            sha256_hex(l["payment_preimage"].as_str().unwrap()),
            hash_hex(&inv)
        );

        // The node replays its events (e.g. after a crash before the cursor was saved).
        let replay = IncomingEvent {
            seq: 1,
            kind: IncomingKind::InvoiceSettled {
                payment_hash: inv.payment_hash(),
                amount_received: sats(250),
                settled_at_secs: now_secs(),
            },
        };
        let incoming = &s.running().services.incoming;
        for _ in 0..3 {
            assert_eq!(
                incoming.process(&replay).await.unwrap(),
                CreditOutcome::AlreadyCredited
            );
        }
        // Paying it again from outside is refused by the node.
        assert!(s.scripted.pay_our_invoice(&inv, None).is_err());
        assert_eq!(s.balance_msat(&a).await, 250_000);
        assert_eq!(wtx_names(&history(&s, &a).await), ["ln_deposit"]);

        // Amountless invoice paid with 1500 msat: 1 sat credited, the 500 msat rest goes to the
        // operator's revenue account (wallets hold whole sats; the lnTx keeps what came in).
        let revenue = s.running().store.audit().await.unwrap().revenue_msat;
        let inv_json = s.invoice(&a, 0).await;
        assert_eq!(inv_json["num_satoshis"], 0);
        let inv = Bolt11::parse(inv_json["payment_request"].as_str().unwrap()).unwrap();
        assert!(inv.amount().is_none());
        s.scripted.pay_our_invoice(&inv, Some(msat(1500))).unwrap();
        s.wait_balance_msat(&a, 251_000).await;
        assert_eq!(s.balance(&a).await, 251);
        let l = lntx(&s, inv_json["id"].as_str().unwrap()).await;
        assert_eq!(l["settled"], 1);
        assert_eq!(l["num_satoshis"], 1);
        assert_eq!(history(&s, &a).await[0]["num_satoshis"], 1);

        // Overpaying a fixed invoice credits the whole sats of what was received.
        let inv_json = s.invoice(&a, 10).await;
        let inv = Bolt11::parse(inv_json["payment_request"].as_str().unwrap()).unwrap();
        s.scripted
            .pay_our_invoice(&inv, Some(msat(12_345)))
            .unwrap();
        s.wait_balance_msat(&a, 263_000).await;
        assert_eq!(
            lntx(&s, inv_json["id"].as_str().unwrap()).await["num_satoshis"],
            12
        );
        assert_eq!(
            s.running().store.audit().await.unwrap().revenue_msat - revenue,
            500 + 345
        );

        // An event for a hash that is not ours books to sys:unclaimed, once.
        let before = s.running().store.audit().await.unwrap().unclaimed_msat;
        let stranger = IncomingEvent {
            seq: 1_000_000,
            kind: IncomingKind::InvoiceSettled {
                payment_hash: PaymentHash([9u8; 32]),
                amount_received: msat(4242),
                settled_at_secs: now_secs(),
            },
        };
        assert_eq!(
            incoming.process(&stranger).await.unwrap(),
            CreditOutcome::Unclaimed
        );
        assert_eq!(
            incoming.process(&stranger).await.unwrap(),
            CreditOutcome::AlreadyCredited
        );
        let after = s.running().store.audit().await.unwrap().unclaimed_msat;
        assert_eq!(after - before, 4242);
        assert_eq!(s.balance_msat(&a).await, 263_000);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 11. keysend

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keysend_out_sync() {
    on_each_db(|s| async move {
        let (a, start) = funded(&s, "A", 1000).await;
        let carol = s.scripted.external_pubkey().to_hex();
        s.scripted
            .set_default_script(Script::Succeed { fee: msat(1200) });
        let r = keysend(
            &s,
            &a,
            json!({
                "dest_pubkey": carol,
                "num_satoshis": 21,
                "custom_records": { "696969": "wal_elsewhere", "7629169": "{\"podcast\":\"x\"}" },
                "passThru": { "episode": 7 }
            }),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let w = &r.json;
        assert_eq!(w["num_satoshis"], -21);
        assert_eq!(w["wtxType"]["name"], "ln_withdrawal");
        assert_eq!(w["passThru"]["episode"], 7);
        assert_eq!(w["passThru"]["method"], "api");
        let l = &w["lnTx"];
        assert_eq!(l["is_keysend"], 1);
        assert_eq!(l["settled"], 1);
        assert_eq!(l["dest_pubkey"], carol.as_str());
        assert_eq!(l["payment_request"], format!("{carol}:21"));
        assert_eq!(l["memo"], format!("21 keysend to {carol}"));
        assert_eq!(l["fee_msat"], 1200);
        let preimage = l["payment_preimage"].as_str().unwrap();
        assert_eq!(sha256_hex(preimage), l["r_hash_decoded"].as_str().unwrap());
        let cr = &l["custom_records"];
        assert_eq!(cr["696969"], "wal_elsewhere");
        assert_eq!(cr["7629169"], "{\"podcast\":\"x\"}");
        assert_eq!(cr[KEYSEND_PREIMAGE_TLV.to_string()], preimage);
        // Default fee limit: ceil(5% of 21 sats) = 2 sats, enough for the 1200 msat fee.
        // Charged as 2 sats.
        assert_eq!(s.balance_msat(&a).await, start - 21_000 - 2000);
        let hash = PaymentHash::from_hex(l["r_hash_decoded"].as_str().unwrap()).unwrap();
        assert_eq!(s.scripted.pay_count(hash), 1);
        let full = lntx(&s, l["id"].as_str().unwrap()).await;
        assert_eq!(full["custom_records"][KEYSEND_PREIMAGE_TLV.to_string()], preimage);

        // Failing keysend: refunded, LND reason.
        s.scripted
            .set_default_script(Script::Fail(FailureReason::NoRoute));
        let r = keysend(&s, &a, json!({ "dest_pubkey": carol, "num_satoshis": 10 })).await;
        assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE");
        assert_eq!(s.balance_msat(&a).await, start - 23_000);

        // Invalid input.
        let r = keysend(&s, &a, json!({ "dest_pubkey": "02abc", "num_satoshis": 10 })).await;
        assert_400(&r, "Dest Pubkey should contain 66 characters.");
        let r = keysend(
            &s,
            &a,
            json!({ "dest_pubkey": carol, "num_satoshis": 10, "custom_records": { "5482373484": "x" } }),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        let r = keysend(&s, &a, json!({ "dest_pubkey": carol, "num_satoshis": 5000 })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(r.json["message"].as_str().unwrap().starts_with("Invoice too large"));
        assert_eq!(s.balance_msat(&a).await, start - 23_000);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_keysend_reveals_preimage_only_once_settled() {
    on_each_db_with(fast_cfg(), |s| async move {
        let (a, start) = funded(&s, "A", 1000).await;
        let carol = s.scripted.external_pubkey().to_hex();
        s.scripted.set_default_script(Script::Unknown);
        let r = keysend(
            &s,
            &a,
            json!({ "dest_pubkey": carol, "num_satoshis": 100, "custom_records": { "65537": "x" } }),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let l = &r.json["lnTx"];
        assert_eq!(l["is_keysend"], 1);
        assert_eq!(l["settled"], 0);
        assert_eq!(l["payment_preimage"], Value::Null);
        assert_eq!(l["custom_records"]["65537"], "x");
        assert_eq!(
            l["custom_records"][KEYSEND_PREIMAGE_TLV.to_string()],
            Value::Null,
            "preimage leaked while pending: {l}"
        );
        let id = l["id"].as_str().unwrap().to_owned();
        assert_eq!(s.balance_msat(&a).await, start - 105_000);
        let hash = PaymentHash::from_hex(l["r_hash_decoded"].as_str().unwrap()).unwrap();
        s.scripted
            .complete(hash, Completion::Succeed { fee: msat(4000) });
        s.wait_balance_msat(&a, start - 104_000).await;
        let full = lntx(&s, &id).await;
        assert_eq!(full["settled"], 1, "{full}");
        let pre = full["payment_preimage"].as_str().unwrap();
        assert_eq!(full["custom_records"][KEYSEND_PREIMAGE_TLV.to_string()], pre);
        assert_eq!(sha256_hex(pre), hash.to_hex());
        assert_eq!(s.scripted.pay_count(hash), 1);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 12. async

async fn wait_job(s: &TestServer, key: &str, id: &str) -> Value {
    for _ in 0..200 {
        let r = s.get(key, &format!("/job/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        if r.json["status"] != "queued" {
            return r.json;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never finished");
}

async fn async_keysend(s: &TestServer, w: &WalletKeys, body: Value) -> Resp {
    s.post_with(
        &s.sak,
        &format!("/wallet/{}/keysend", w.waka),
        body,
        &[("X-LNPAY-ASYNC", "1")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_keysend_jobs() {
    on_each_db(|s| async move {
        let (a, start) = funded(&s, "A", 1000).await;
        let carol = s.scripted.external_pubkey().to_hex();

        let r = async_keysend(
            &s,
            &a,
            json!({ "dest_pubkey": carol, "num_satoshis": 50, "custom_records": { "65537": "hi" } }),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["success"], 1);
        let id = r.json["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("job_"), "{id}");
        let job = wait_job(&s, &s.sak, &id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["error"], Value::Null);
        assert_eq!(job["wtx"]["num_satoshis"], -50);
        assert_eq!(job["wtx"]["lnTx"]["is_keysend"], 1);
        assert_eq!(job["wtx"]["lnTx"]["custom_records"]["65537"], "hi");
        assert_eq!(s.balance_msat(&a).await, start - 50_000);

        // A failing async keysend: job failed with the LND reason, wallet refunded.
        s.scripted
            .set_default_script(Script::Fail(FailureReason::NoRoute));
        let r = async_keysend(&s, &a, json!({ "dest_pubkey": carol, "num_satoshis": 60 })).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let job = wait_job(&s, &s.sak, &id).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["error"], "Failure reason: FAILURE_REASON_NO_ROUTE");
        assert_eq!(job["wtx"], Value::Null);
        s.wait_balance_msat(&a, start - 50_000).await;

        // Invalid input is still refused synchronously, and no job is created.
        let r = async_keysend(&s, &a, json!({ "dest_pubkey": "nope", "num_satoshis": 1 })).await;
        assert_400(&r, "Dest Pubkey should contain 66 characters.");
        let r = async_keysend(&s, &a, json!({ "dest_pubkey": carol })).await;
        assert_400(&r, "Num Satoshis cannot be blank.");
        let r = async_keysend(&s, &a, json!({ "dest_pubkey": carol, "num_satoshis": 0 })).await;
        assert_400(&r, "Num Satoshis must be greater than 0.");
        // Permission is checked synchronously too (a read-only key cannot spend).
        let r = s
            .post_with(
                &s.pak,
                &format!("/wallet/{}/keysend", a.wakr),
                json!({ "dest_pubkey": carol, "num_satoshis": 1 }),
                &[("X-LNPAY-ASYNC", "1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        // Another account cannot read the job.
        let other = satchel_service::wallets::create_account(&s.running().store, "other")
            .await
            .unwrap();
        let r = s
            .get(other.secret_key.expose(), &format!("/job/{id}"))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(s.balance_msat(&a).await, start - 50_000);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 13. keysend in

fn records(pairs: &[(u64, &str)]) -> CustomRecords {
    CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incoming_keysend_is_routed_by_tlv() {
    on_each_db(|s| async move {
        let x = s.create_wallet("X").await;
        let y = s.create_wallet("Y").await;

        // 696969 = wal_X.
        s.scripted.receive_keysend(
            msat(21_500),
            records(&[(696_969, x.id.as_str()), (7_629_169, "{\"a\":1}")]),
        );
        // 21,500 msat received: 21 sats credited, 500 msat to the operator's revenue.
        s.wait_balance_msat(&x, 21_000).await;
        let h = history(&s, &x).await;
        assert_eq!(wtx_names(&h), ["ln_deposit"]);
        assert_eq!(h[0]["num_satoshis"], 21);
        let l = &h[0]["lnTx"];
        assert_eq!(l["is_keysend"], 1);
        assert_eq!(l["settled"], 1);
        assert_eq!(l["custom_records"]["696969"], x.id.as_str());
        // Spec §11: TLV 7629169 (Podcasting 2.0) is shown JSON-decoded.
        assert_eq!(l["custom_records"]["7629169"], json!({ "a": 1 }));
        assert_eq!(sha256_hex(l["payment_preimage"].as_str().unwrap()), l["r_hash_decoded"]);

        // 112111100 ("pod") = wal_Y.
        s.scripted
            .receive_keysend(msat(3000), records(&[(112_111_100, y.id.as_str())]));
        s.wait_balance_msat(&y, 3000).await;
        // 112111100102 ("podf") = wal_Y.
        s.scripted
            .receive_keysend(msat(4000), records(&[(112_111_100_102, y.id.as_str())]));
        s.wait_balance_msat(&y, 7000).await;

        // Unknown wallet, or no routing TLV: nobody's (sys:unclaimed), no wallet changes.
        let before = s.running().store.audit().await.unwrap().unclaimed_msat;
        let events_before = s.scripted.events_len();
        s.scripted
            .receive_keysend(msat(5000), records(&[(696_969, "wal_doesnotexist")]));
        s.scripted
            .receive_keysend(msat(6000), records(&[(65_537, "hello")]));
        s.scripted.receive_keysend(msat(7000), CustomRecords::default());
        let store = s.running().store.clone();
        let target = before + 18_000;
        wait_until("unclaimed keysends booked", || {
            let store = store.clone();
            async move { store.audit().await.unwrap().unclaimed_msat == target }
        })
        .await;
        assert_eq!(s.scripted.events_len(), events_before + 3);
        assert_eq!(s.balance_msat(&x).await, 21_000);
        assert_eq!(s.balance_msat(&y).await, 7000);
        assert_eq!(wtx_names(&history(&s, &x).await), ["ln_deposit"]);
        assert_eq!(wtx_names(&history(&s, &y).await), ["ln_deposit", "ln_deposit"]);

        // Replaying a keysend event credits nothing more.
        let hash = s.scripted.receive_keysend(msat(1000), records(&[(696_969, x.id.as_str())]));
        s.wait_balance_msat(&x, 22_000).await;
        let seq = u64::try_from(s.scripted.events_len()).unwrap();
        let replay = IncomingEvent {
            seq,
            kind: IncomingKind::KeysendReceived {
                payment_hash: hash,
                preimage: Preimage::random(),
                amount_received: msat(1000),
                custom_records: records(&[(696_969, x.id.as_str())]),
                settled_at_secs: now_secs(),
            },
        };
        assert_eq!(
            s.running().services.incoming.process(&replay).await.unwrap(),
            CreditOutcome::AlreadyCredited
        );
        assert_eq!(s.balance_msat(&x).await, 22_000);

        // A keysend from one of our wallets to our own node, addressed to another wallet.
        s.fund(&x, 100).await;
        let ours = s.scripted.pubkey().to_hex();
        let r = keysend(
            &s,
            &x,
            json!({ "dest_pubkey": ours, "num_satoshis": 40, "custom_records": { "696969": y.id } }),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        s.wait_balance_msat(&y, 47_000).await;
        assert_eq!(s.balance_msat(&x).await, 122_000 - 40_000);
        s
    })
    .await;
}

// ------------------------------------------------------------------------------------ 14. restart

/// Runs `f` once per database with a server using `fast_cfg()`; `f` may restart it.
async fn each_db_fast<F, Fut>(f: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: Future<Output = TestServer>,
{
    on_each_db_with(fast_cfg(), f).await
}

/// Stops `s` and starts a new server on the same database and scripted node.
async fn restart(s: TestServer, between: impl FnOnce()) -> TestServer {
    let scripted = s.scripted.clone();
    let db = s.stop().await;
    between();
    TestServer::start_on(db, fast_cfg(), scripted).await
}

/// Reads a wallet of the account that existed before a restart.
async fn balance_with(s: &TestServer, sak: &str, w: &WalletKeys) -> i64 {
    let r = s.get(sak, &format!("/wallet/{}", w.id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json["balance_msat"].as_i64().unwrap()
}

async fn wait_balance_with(s: &TestServer, sak: &str, w: &WalletKeys, msat: i64) {
    for _ in 0..200 {
        if balance_with(s, sak, w).await == msat {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "balance of {} never reached {msat} (is {})",
        w.id,
        balance_with(s, sak, w).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_resolves_pending_payments_exactly_once() {
    each_db_fast(|s| async move {
        let (a, start) = funded(&s, "A", 5000).await;
        let sak = s.sak.clone();
        let (ok, ok_pre) = carol_invoice(&s, 1000, "succeeds while down");
        let (ko, _) = carol_invoice(&s, 2000, "fails while down");
        s.scripted.script(ok.payment_hash(), Script::Unknown);
        s.scripted.script(ko.payment_hash(), Script::Unknown);
        let r1 = withdraw(&s, &a, &ok, None).await;
        assert_eq!(r1.status, StatusCode::ACCEPTED, "{}", r1.text);
        let r2 = withdraw(&s, &a, &ko, None).await;
        assert_eq!(r2.status, StatusCode::ACCEPTED, "{}", r2.text);
        let ok_id = r1.json["lnTx"]["id"].as_str().unwrap().to_owned();
        let ko_id = r2.json["lnTx"]["id"].as_str().unwrap().to_owned();
        assert_eq!(s.balance_msat(&a).await, start - 1_050_000 - 2_100_000);

        // The node resolves both while we are down.
        let scripted = s.scripted.clone();
        let s = restart(s, || {
            scripted.complete(ok.payment_hash(), Completion::Succeed { fee: msat(900) });
            scripted.complete(ko.payment_hash(), Completion::Fail(FailureReason::NoRoute));
        })
        .await;

        wait_balance_with(&s, &sak, &a, start - 1_001_000).await;
        let l = s.get(&sak, &format!("/lntx/{ok_id}")).await.json;
        assert_eq!(l["settled"], 1);
        assert_eq!(l["fee_msat"], 900);
        assert_eq!(l["payment_preimage"], ok_pre.to_hex());
        let l = s.get(&sak, &format!("/lntx/{ko_id}")).await.json;
        assert_eq!(l["settled"], -1);
        // Exactly once: history has one withdrawal and one fee.
        let h = s
            .get(&sak, &format!("/wallet/{}/transactions", a.waka))
            .await
            .json;
        assert_eq!(
            wtx_names(h.as_array().unwrap()),
            ["network_fee", "ln_withdrawal", "ln_deposit"]
        );
        assert_eq!(s.scripted.pay_count(ok.payment_hash()), 1);
        assert_eq!(s.scripted.pay_count(ko.payment_hash()), 1);
        assert_eq!(s.running().store.audit().await.unwrap().in_flight_msat, 0);
        // Still settled after more reconciler passes.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(balance_with(&s, &sak, &a).await, start - 1_001_000);

        // A payment still unresolved at the restart is picked up by the new process.
        let (late, _) = carol_invoice(&s, 500, "resolves after restart");
        s.scripted.script(late.payment_hash(), Script::Unknown);
        let r = withdraw(&s, &a, &late, None).await;
        // `a`'s keys belong to the old account; the old sak still works.
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "new account must not see A: {}",
            r.text
        );
        let r = s
            .post(
                &sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({ "payment_request": late.as_str() }),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let s = restart(s, || {}).await;
        s.scripted
            .complete(late.payment_hash(), Completion::Succeed { fee: msat(0) });
        wait_balance_with(&s, &sak, &a, start - 1_501_000).await;
        assert_eq!(s.scripted.pay_count(late.payment_hash()), 1);
        s
    })
    .await;
}

/// Starts an async keysend that stays in flight; returns (job id, payment hash).
async fn start_stuck_job(s: &TestServer, w: &WalletKeys, sats_: u64) -> (String, PaymentHash) {
    s.scripted.set_default_script(Script::Unknown);
    let carol = s.scripted.external_pubkey().to_hex();
    let r = async_keysend(s, w, json!({ "dest_pubkey": carol, "num_satoshis": sats_ })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let store = s.running().store.clone();
    let mut hash = None;
    for _ in 0..200 {
        let live = store.live_payments().await.unwrap();
        if let Some(l) = live.iter().find(|l| l.is_keysend) {
            hash = Some(l.payment_hash);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hash = hash.expect("job's payment reserved");
    // Sent to the node once.
    for _ in 0..200 {
        if s.scripted.pay_count(hash) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(s.scripted.pay_count(hash), 1);
    (id, hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_resumes_queued_async_job() {
    each_db_fast(|s| async move {
        let (a, start) = funded(&s, "A", 1000).await;
        let sak = s.sak.clone();
        let (id, hash) = start_stuck_job(&s, &a, 100).await;
        assert_eq!(
            s.get(&sak, &format!("/job/{id}")).await.json["status"],
            "queued"
        );
        assert_eq!(s.balance_msat(&a).await, start - 105_000);

        let scripted = s.scripted.clone();
        let s = restart(s, || {
            scripted.complete(hash, Completion::Succeed { fee: msat(1000) });
        })
        .await;
        let job = wait_job(&s, &sak, &id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["wtx"]["num_satoshis"], -100);
        wait_balance_with(&s, &sak, &a, start - 101_000).await;
        assert_eq!(s.scripted.pay_count(hash), 1);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_failed_async_job_ends_failed_and_is_not_resent() {
    each_db_fast(|s| async move {
        let (a, start) = funded(&s, "A", 1000).await;
        let sak = s.sak.clone();
        let (id, hash) = start_stuck_job(&s, &a, 100).await;

        let scripted = s.scripted.clone();
        let s = restart(s, || {
            scripted.complete(hash, Completion::Fail(FailureReason::NoRoute));
            // If anything sends it again, it would go through.
            scripted.set_default_script(Script::Succeed { fee: msat(0) });
        })
        .await;
        let job = wait_job(&s, &sak, &id).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["error"], "Failure reason: FAILURE_REASON_NO_ROUTE");
        wait_balance_with(&s, &sak, &a, start).await;
        assert_eq!(
            s.scripted.pay_count(hash),
            1,
            "the failed keysend was sent again"
        );
        s
    })
    .await;
}

/// A crash right after the reserve was committed (never dispatched), or right after it was
/// marked dispatched (the node never heard of it): recovery works from our own records, sends
/// each exactly once and settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_sends_payments_the_node_never_heard_of() {
    each_db_fast(|s| async move {
        let (a, start) = funded(&s, "A", 5000).await;
        let sak = s.sak.clone();
        let store = s.running().store.clone();
        let wallet = store
            .wallet(&WalletId::parse(&a.id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let reserve = |inv: &Bolt11| ReserveCmd {
            lntx_id: LnTxId::generate(),
            account_id: wallet.account_id.clone(),
            wallet_id: wallet.id.clone(),
            now: now_secs(),
            node_id: NodeId::from_db("lnod_satchel".to_owned()),
            dest_pubkey: inv.payee().to_hex(),
            payment_request: inv.as_str().to_owned(),
            payment_hash: inv.payment_hash(),
            memo: "crashed".to_owned(),
            description_hash: None,
            payment_addr: Some(hex::encode(inv.payment_secret())),
            amount: inv.amount().unwrap(),
            fee_limit: sats(10),
            expiry_secs: Some(inv.expiry_secs()),
            expires_at: Some(inv.expires_at_secs()),
            preimage: None,
            is_keysend: false,
            custom_records: None,
            pass_thru: "{\"method\":\"api\"}".to_owned(),
            wtx_type: satchel_domain::WtxType::LnWithdrawal,
        };
        let (p1, pre1) = carol_invoice(&s, 1000, "reserved only");
        let (p2, pre2) = carol_invoice(&s, 2000, "dispatched, never sent");
        s.scripted
            .script(p1.payment_hash(), Script::Succeed { fee: msat(100) });
        s.scripted
            .script(p2.payment_hash(), Script::Succeed { fee: msat(200) });
        let l1 = store.reserve_payment(&reserve(&p1)).await.unwrap();
        let l2 = store.reserve_payment(&reserve(&p2)).await.unwrap();
        assert!(
            store
                .mark_payment(
                    &l2.id,
                    &[PaymentStatus::Reserved],
                    PaymentStatus::Dispatched,
                    now_secs()
                )
                .await
                .unwrap()
        );
        assert_eq!(s.balance_msat(&a).await, start - 3_020_000);

        let s = restart(s, || {}).await;
        // Fees of 100 and 200 msat are charged as 1 sat each.
        wait_balance_with(&s, &sak, &a, start - 3_002_000).await;
        for (l, pre, inv) in [(&l1, pre1, &p1), (&l2, pre2, &p2)] {
            let j = s.get(&sak, &format!("/lntx/{}", l.id)).await.json;
            assert_eq!(j["settled"], 1, "{j}");
            assert_eq!(j["payment_preimage"], pre.to_hex());
            assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        }
        s
    })
    .await;
}
