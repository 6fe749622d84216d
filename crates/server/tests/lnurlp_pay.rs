//! Paying LNURL-pay links and Lightning Addresses (LNPay §6.5; LUD-06, LUD-12, LUD-16) over
//! the HTTP API, on SQLite and Postgres, against a test LNURL server on loopback whose invoices
//! are the scripted backend's outside node's ("carol"): paying by address and by LNURL (also
//! asynchronously, and across a restart), and every refusal (wrong amount, wrong description
//! hash, another network's invoice, a private target without the operator's setting, an
//! over-size answer, a redirect, a comment too long, an amount out of range, an unknown address
//! of our own domain); our own addresses settle inside,
//! each of which pays nothing and leaves the wallet as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod lnurl_server;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, WalletKeys, test_service_config};
use lnurl_server::{COMMENT_ALLOWED, Lnurl, MAX_MSAT, MIN_MSAT, lnurl_server};
use reqwest::StatusCode;
use satchel_domain::encode_lnurl;
use satchel_scripted::ScriptedBackend;
use satchel_service::ServiceConfig;
use satchel_service::lnurlw::PublicUrl;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

fn cfg() -> ServiceConfig {
    ServiceConfig {
        public_url: Some(PublicUrl::parse("https://pay.example.com").unwrap()),
        ..test_service_config()
    }
}

/// Runs `f` on SQLite and Postgres with a funded wallet and a test LNURL server.
async fn on_each_db_with<F, Fut>(cfg: fn(&Lnurl) -> ServiceConfig, f: F)
where
    F: Fn(TestServer, Lnurl, WalletKeys) -> Fut,
    Fut: std::future::Future<Output = TestServer>,
{
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let scripted = Arc::new(ScriptedBackend::new(
            satchel_domain::Network::Regtest,
            [7u8; 32],
        ));
        let lnurl = lnurl_server(scripted.clone()).await;
        let srv = TestServer::start_on(db, cfg(&lnurl), scripted).await;
        let w = srv.create_wallet("Payer").await;
        srv.fund(&w, 1_000).await;
        let srv = f(srv, lnurl, w).await;
        srv.assert_audit_clean().await;
        srv.stop().await;
    }
}

async fn pay(s: &TestServer, w: &WalletKeys, body: Value) -> common::Resp {
    s.post(&s.sak, &format!("/wallet/{}/lnurlp/pay", w.waka), body)
        .await
}

async fn history(s: &TestServer, w: &WalletKeys) -> Vec<Value> {
    let r = s
        .get(&s.sak, &format!("/wallet/{}/transactions", w.id))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json.as_array().unwrap().clone()
}

#[tokio::test]
async fn pays_an_address_and_an_lnurl() {
    on_each_db_with(
        |_| cfg(),
        |s, lnurl, w| async move {
            // The probe: the payRequest with its metadata decoded.
            let r = s
                .get(&s.pak, &format!("/lnurlp/probe/{}", lnurl.address("Alice")))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.json["minSendable"], MIN_MSAT);
            assert_eq!(r.json["maxSendable"], MAX_MSAT);
            assert_eq!(r.json["commentAllowed"], COMMENT_ALLOWED);
            assert_eq!(r.json["tag"], "payRequest");
            assert_eq!(r.json["metadata"][0], json!(["text/plain", "Pay alice"]));
            assert_eq!(r.json["callback"], format!("{}/cb/alice?k=v", lnurl.base));

            // By address, with a comment and passThru.
            let r = pay(
                &s,
                &w,
                json!({"ln_address": lnurl.address("alice"), "amt_msat": 100_000,
                "comment": "thanks", "passThru": {"order": "7"}}),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            assert_eq!(r.json["wtxType"]["name"], "ln_lnurl_pay_outbound");
            assert_eq!(r.json["wtxType"]["display_name"], "LNURL Pay Outbound");
            assert_eq!(r.json["num_satoshis"], -100);
            let pt = &r.json["passThru"];
            assert_eq!(pt["target_ln_address"], lnurl.address("alice"));
            assert_eq!(pt["method"], "lnurlpay");
            assert_eq!(pt["lnurlp_comment"], "thanks");
            assert_eq!(pt["order"], "7");
            {
                let seen = lnurl.seen.lock().unwrap();
                let cb = seen.callbacks.last().unwrap();
                assert_eq!(
                    cb.get("k").map(String::as_str),
                    Some("v"),
                    "callback query kept"
                );
                assert_eq!(cb.get("amount").map(String::as_str), Some("100000"));
                assert_eq!(cb.get("comment").map(String::as_str), Some("thanks"));
            }
            assert_eq!(s.balance(&w).await, 900);

            // By LNURL (form body, as the PHP SDK sends).
            let encoded = encode_lnurl(&format!("{}/lnurlp/bob", lnurl.base)).unwrap();
            let r = s
                .send(
                    s.http
                        .post(s.v1(&format!("/wallet/{}/lnurlp/pay", w.waklw)))
                        .header("X-Api-Key", &s.pak)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(format!("lnurlpay_encoded={encoded}&amt_msat=50000")),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            assert_eq!(r.json["passThru"]["target_lnurlp_encoded"], encoded);
            assert!(r.json["passThru"].get("lnurlp_comment").is_none());
            assert_eq!(s.balance(&w).await, 850);

            // Asynchronously: checked now, paid by a job.
            let r = s
                .post_with(
                    &s.sak,
                    &format!("/wallet/{}/lnurlp/pay", w.waka),
                    json!({"ln_address": lnurl.address("carl"), "amt_msat": 10_000}),
                    &[("X-LNPAY-ASYNC", "1")],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.json["success"], 1);
            let job = r.json["id"].as_str().unwrap().to_owned();
            let mut done = Value::Null;
            for _ in 0..200 {
                let j = s.get(&s.sak, &format!("/job/{job}")).await;
                if j.json.to_string().contains("ln_lnurl_pay_outbound") {
                    done = j.json;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(!done.is_null(), "the async LNURL payment never finished");
            s.wait_balance_msat(&w, 840_000).await;

            // The WTX type survives a restart.
            let (scripted, sak) = (s.scripted.clone(), s.sak.clone());
            let db = s.stop().await;
            let mut s = TestServer::start_on(db, cfg(), scripted).await;
            s.sak = sak;
            let h = history(&s, &w).await;
            let kinds: Vec<&str> = h
                .iter()
                .map(|t| t["wtxType"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                kinds,
                [
                    "ln_lnurl_pay_outbound",
                    "ln_lnurl_pay_outbound",
                    "ln_lnurl_pay_outbound",
                    "ln_deposit"
                ]
            );
            s
        },
    )
    .await;
}

/// Asserts a refusal: 400 with `message` containing `expect`, and the wallet untouched.
async fn refused(s: &TestServer, w: &WalletKeys, body: Value, expect: &str) {
    let before = history(s, w).await;
    let balance = s.balance_msat(w).await;
    let r = pay(s, w, body.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    let msg = r.json["message"].as_str().unwrap_or_default();
    assert!(msg.contains(expect), "{body}: {msg:?} lacks {expect:?}");
    assert_eq!(history(s, w).await, before, "{body} wrote history");
    assert_eq!(s.balance_msat(w).await, balance, "{body} moved money");
}

#[tokio::test]
async fn refusals_pay_nothing() {
    on_each_db_with(
        |_| cfg(),
        |s, lnurl, w| async move {
            let a = |u: &str| lnurl.address(u);
            refused(
                &s,
                &w,
                json!({"ln_address": a("wrongamt"), "amt_msat": 10_000}),
                "Requested invoice (10000) and invoice generated (11000) do not match.",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("wronghash"), "amt_msat": 10_000}),
                "description hash is not the SHA-256 of the LNURL metadata",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("othernet"), "amt_msat": 10_000}),
                "invoice is for bitcoin, this node runs on regtest",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("big"), "amt_msat": 10_000}),
                "larger than 65536 bytes",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("redirect"), "amt_msat": 10_000}),
                "redirect",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("cbredirect"), "amt_msat": 10_000}),
                "redirect",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("down"), "amt_msat": 10_000}),
                "Lnurlpay service:Service down",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("alice"), "amt_msat": 10_000, "comment": "x".repeat(21)}),
                "Comment length is too long (21) - endpoint supports (20) characters",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("alice"), "amt_msat": MAX_MSAT + 1}),
                "LNURL cannot accept more than 500000 msat",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("alice"), "amt_msat": 999}),
                "LNURL cannot accept less than 1000 msat",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"ln_address": "not an address", "amt_msat": 10_000}),
                "Ln Address is not a valid email address.",
            )
            .await;
            refused(
                &s,
                &w,
                json!({"lnurlpay_encoded": "LNURL1NOTBECH32", "amt_msat": 10_000}),
                "Invalid Address / LNURL",
            )
            .await;
            refused(&s, &w, json!({"amt_msat": 10_000}), "cannot be blank").await;
            refused(
                &s,
                &w,
                json!({"ln_address": a("alice")}),
                "Amt Msat cannot be blank.",
            )
            .await;
            // A public host is never spoken to in http, whatever the setting.
            let http_public = encode_lnurl("http://example.com/lnurlp/x").unwrap();
            refused(
                &s,
                &w,
                json!({"lnurlpay_encoded": http_public, "amt_msat": 10_000}),
                "must use https",
            )
            .await;
            // No invoice was ever paid: the scripted node sent nothing.
            assert_eq!(s.balance(&w).await, 1_000);
            // The probe refuses as the payment does (400, LNPay's message first).
            let r = s
                .get(&s.sak, &format!("/lnurlp/probe/{}", a("redirect")))
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
            assert!(
                r.json["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid Address / LNURL")
            );
            s
        },
    )
    .await;
}

#[tokio::test]
async fn private_targets_need_the_operator_setting() {
    fn strict(_: &Lnurl) -> ServiceConfig {
        ServiceConfig {
            lnurl_allow_private_targets: false,
            ..cfg()
        }
    }
    on_each_db_with(strict, |s, lnurl, w| async move {
        let before = lnurl.seen.lock().unwrap().requests;
        refused(
            &s,
            &w,
            json!({"ln_address": lnurl.address("alice"), "amt_msat": 10_000}),
            "Invalid Address / LNURL",
        )
        .await;
        let encoded = encode_lnurl(&format!("{}/lnurlp/alice", lnurl.base)).unwrap();
        refused(
            &s,
            &w,
            json!({"lnurlpay_encoded": encoded, "amt_msat": 10_000}),
            "Invalid Address / LNURL",
        )
        .await;
        // Also in https (the address form): the loopback address is refused before connecting.
        let https = encode_lnurl(&format!(
            "https://{}/lnurlp/alice",
            lnurl.base.trim_start_matches("http://")
        ))
        .unwrap();
        refused(
            &s,
            &w,
            json!({"lnurlpay_encoded": https, "amt_msat": 10_000}),
            "loopback",
        )
        .await;
        assert_eq!(
            lnurl.seen.lock().unwrap().requests,
            before,
            "the private target was contacted"
        );
        s
    })
    .await;
}

#[tokio::test]
async fn own_domain_addresses_settle_inside_and_never_go_over_http() {
    // Our public_url is the test LNURL server's address: an address on that domain is resolved
    // by our own receive side, paid inside the ledger (no node, no fee), and the LNURL server
    // sees no request.
    fn own(l: &Lnurl) -> ServiceConfig {
        ServiceConfig {
            public_url: Some(PublicUrl::parse(&l.base).unwrap()),
            ..test_service_config()
        }
    }
    on_each_db_with(own, |s, lnurl, w| async move {
        let payee = s.create_wallet("Own address").await;
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/lnurlp", payee.waka),
                json!({"lnurlp_identifier": "alice", "lnurlp_commentAllowed": 20}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);

        // Probe: our own payRequest, with our callback.
        let r = s
            .get(&s.sak, &format!("/lnurlp/probe/{}", lnurl.address("Alice")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["tag"], "payRequest");
        assert!(
            r.json["callback"]
                .as_str()
                .unwrap()
                .starts_with(&lnurl.base),
            "{}",
            r.text
        );

        let r = pay(
            &s,
            &w,
            json!({"ln_address": lnurl.address("alice"), "amt_msat": 10_000, "comment": "hi"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["wtxType"]["name"], "ln_lnurl_pay_outbound");
        assert_eq!(r.json["num_satoshis"], -10);
        s.wait_balance_msat(&payee, 10_000).await;
        s.wait_balance_msat(&w, 990_000).await;
        let got = history(&s, &payee).await;
        assert_eq!(got[0]["wtxType"]["name"], "ln_lnurl_pay_inbound");
        assert_eq!(got[0]["num_satoshis"], 10);
        let hash = satchel_domain::PaymentHash::from_hex(
            r.json["lnTx"]["r_hash_decoded"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(s.scripted.pay_count(hash), 0, "the node sent something");
        assert_eq!(r.json["lnTx"]["fee_msat"], 0, "{}", r.text);

        // An address nobody holds here is unknown, still without HTTP.
        refused(
            &s,
            &w,
            json!({"ln_address": lnurl.address("bob"), "amt_msat": 10_000}),
            "Invalid Address / LNURL: unknown address bob",
        )
        .await;
        let r = s
            .get(&s.sak, &format!("/lnurlp/probe/{}", lnurl.address("Bob")))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "Invalid Address / LNURL: unknown address bob"
        );
        assert_eq!(lnurl.seen.lock().unwrap().requests, 0);
        s
    })
    .await;
}

mod devnet_server;

/// End to end over the LDK devnet: a Lightning Address served by the loopback LNURL server
/// whose invoices are carol's, paid through the hub with real HTLCs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pays_carols_address_over_the_devnet() {
    use satchel_lightning::{InvoiceState, Invoices as _};
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = devnet_server::DevnetServer::start(&db, cfg()).await;
        let carol = s.devnet.peer("carol").unwrap();
        let lnurl =
            lnurl_server::lnurl_server_with(lnurl_server::Issuer::Node(carol.clone())).await;
        let w = s.create_wallet("devnet LNURL payer").await;
        s.fund(&w, 50_000).await;
        let amount_msat: i64 = 400_000;
        let r = s
            .post(
                &format!("/v1/wallet/{}/lnurlp/pay", w.waka),
                json!({"ln_address": lnurl.address("carol"), "amt_msat": amount_msat,
                    "comment": "over the devnet"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["wtxType"]["name"], "ln_lnurl_pay_outbound");
        assert_eq!(r.json["num_satoshis"], -400);
        let l = &r.json["lnTx"];
        // The hub's fee: 1000 msat + 1000 ppm.
        let fee = 1000 + amount_msat / 1000;
        assert_eq!(l["fee_msat"], fee, "{}", r.text);
        let hash =
            satchel_domain::PaymentHash::from_hex(l["r_hash_decoded"].as_str().unwrap()).unwrap();
        assert!(matches!(
            carol.lookup_invoice(hash).await.unwrap(),
            Some(InvoiceState::Settled { amount_received, .. })
                if amount_received.as_msat() == 400_000
        ));
        let charged_fee = (fee + 999) / 1000 * 1000;
        assert_eq!(
            s.balance_msat(&w).await,
            50_000_000 - amount_msat - charged_fee
        );
        let names: Vec<String> = s
            .history(&w)
            .await
            .iter()
            .map(|t| t["wtxType"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["network_fee", "ln_lnurl_pay_outbound", "ln_deposit"]
        );
        s.stop().await;
    }
}
