//! Webhooks end to end: a real HTTP receiver on loopback that succeeds, fails, hangs and
//! recovers. Every event arrives (at least once), signed, in LNPay's shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::post;
use common::{TestServer, on_each_db, test_dispatcher_config, test_service_config};
use reqwest::StatusCode;
use satchel_domain::{FailureReason, Msat, Network};
use satchel_scripted::{Script, ScriptedBackend};
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

/// What the receiver does with the next requests.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    /// Answer 500 to this many requests, then Ok.
    Fail(u32),
    /// Never answer.
    Hang,
}

#[derive(Clone, Debug)]
struct Got {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<Got>>>,
    url: String,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let r = Receiver {
            mode: Arc::new(Mutex::new(mode)),
            got: Arc::new(Mutex::new(Vec::new())),
            url: String::new(),
        };
        let app = axum::Router::new()
            .route("/hook", post(handle))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hook"),
            ..r
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        self.got()
            .iter()
            .map(|g| serde_json::from_slice(&g.body).unwrap())
            .collect()
    }

    /// Waits until `pred(events)` holds (up to 20 s).
    async fn wait_for(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..400 {
            let e = self.events();
            if pred(&e) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("receiver never saw {what}; got {:?}", names(&self.events()));
    }
}

async fn handle(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxStatus {
    let mode = *r.mode.lock().unwrap();
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            AxStatus::OK
        }
        Mode::Fail(n) => {
            r.got.lock().unwrap().push(Got { headers, body });
            *r.mode.lock().unwrap() = if n <= 1 { Mode::Ok } else { Mode::Fail(n - 1) };
            AxStatus::INTERNAL_SERVER_ERROR
        }
        Mode::Ok => {
            r.got.lock().unwrap().push(Got { headers, body });
            AxStatus::OK
        }
    }
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"]["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn count(events: &[Value], name: &str) -> usize {
    events.iter().filter(|e| e["event"]["name"] == name).count()
}

async fn subscribe(s: &TestServer, url: &str, body: Value) -> Value {
    let mut b = body;
    b["endpoint_url"] = Value::String(url.to_owned());
    let r = s.post(&s.sak, "/webhooks", b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_delivered_signed_in_lnpay_shape() {
    on_each_db(|s| async move {
        let rx = Receiver::start(Mode::Ok).await;
        let hook = subscribe(
            &s,
            &rx.url,
            json!({"default_all": true, "secret": "s3cret"}),
        )
        .await;
        assert_eq!(hook["events"], json!(["default_all"]));
        assert_eq!(hook["has_secret"], true);
        assert!(hook["id"].as_str().unwrap().starts_with("iwh_"));

        let a = s.create_wallet("A").await;
        let b = s.create_wallet("B").await;
        s.fund(&a, 10_000).await;

        // A payment with a routing fee: wallet_send + network_fee_incurred.
        let inv = s.external_invoice(1000, "with fee");
        s.scripted.script(
            inv.payment_hash(),
            Script::Succeed {
                fee: Msat::from_msat(1500).unwrap(),
            },
        );
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({"payment_request": inv.as_str()}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        // A definite failure: wallet_send_failure.
        let inv = s.external_invoice(10, "fails");
        s.scripted
            .script(inv.payment_hash(), Script::Fail(FailureReason::NoRoute));
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({"payment_request": inv.as_str()}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

        // A transfer: transfer_out then transfer_in.
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/transfer", a.waka),
                json!({"dest_wallet_id": b.id, "num_satoshis": 7}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        let events = rx.wait_for("all 8 events", |e| e.len() >= 8).await;
        for (name, n) in [
            ("wallet_created", 2),
            ("wallet_receive", 1),
            ("wallet_send", 1),
            ("network_fee_incurred", 1),
            ("wallet_send_failure", 1),
            ("wallet_transfer_out", 1),
            ("wallet_transfer_in", 1),
        ] {
            assert_eq!(count(&events, name), n, "{name} in {:?}", names(&events));
        }

        // Headers and signatures of every request.
        let mut hook_ids = std::collections::HashSet::new();
        for g in rx.got() {
            let h = &g.headers;
            let body: Value = serde_json::from_slice(&g.body).unwrap();
            assert_eq!(h["user-agent"], "LNPay-HookBot");
            assert_eq!(h["content-type"], "application/json");
            assert_eq!(
                h["x-lnpay-event"].to_str().unwrap(),
                body["event"]["name"].as_str().unwrap()
            );
            let hid = h["x-lnpay-hookid"].to_str().unwrap().to_owned();
            assert!(hid.starts_with("iwhr_"), "{hid}");
            assert!(hook_ids.insert(hid), "HookId reused");
            let sig = h["x-lnpay-signature"].to_str().unwrap();
            assert_eq!(sig, satchel_api::webhooks::sign("s3cret", &g.body));
            assert_eq!(sig, sig.to_lowercase());
            // Envelope shape and key order.
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["id", "created_at", "event", "data"]);
            assert!(body["id"].as_str().unwrap().starts_with("evt_"));
            let ev_keys: Vec<&String> = body["event"].as_object().unwrap().keys().collect();
            assert_eq!(ev_keys, ["type", "name", "display_name"]);
        }

        // Payload contents.
        let find = |n: &str| {
            events
                .iter()
                .find(|e| e["event"]["name"] == n)
                .unwrap()
                .clone()
        };
        let created = find("wallet_created");
        assert_eq!(created["event"]["display_name"], "Wallet Created");
        assert!(
            created["data"]["wal"]["id"]
                .as_str()
                .unwrap()
                .starts_with("wal_")
        );
        let recv = find("wallet_receive");
        assert_eq!(recv["data"]["wtx"]["num_satoshis"], 10_000);
        assert_eq!(
            recv["data"]["wtx"]["wal"]["balance"], 10_000,
            "balance right after the credit"
        );
        let send = find("wallet_send");
        assert_eq!(send["data"]["wtx"]["wtxType"]["name"], "ln_withdrawal");
        assert_eq!(send["data"]["wtx"]["num_satoshis"], -1000);
        let fee = find("network_fee_incurred");
        assert_eq!(fee["event"]["type"], "network_fee");
        assert_eq!(fee["data"]["wtx"]["num_satoshis"], -2);
        let fail = find("wallet_send_failure");
        assert_eq!(fail["data"]["failureReason"], "FAILURE_REASON_NO_ROUTE");
        assert_eq!(fail["data"]["spontaneous"], 0);
        let t_out = find("wallet_transfer_out");
        let t_in = find("wallet_transfer_in");
        assert_eq!(t_out["data"]["wtx"]["num_satoshis"], -7);
        assert_eq!(t_in["data"]["wtx"]["num_satoshis"], 7);
        let pos = |n: &str| events.iter().position(|e| e["event"]["name"] == n).unwrap();
        assert!(pos("wallet_transfer_out") < pos("wallet_transfer_in"));

        // The delivery log.
        let hid = hook["id"].as_str().unwrap();
        let r = s.get(&s.sak, &format!("/webhooks/{hid}/deliveries")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.headers["x-pagination-total-count"], "8");
        for d in r.json.as_array().unwrap() {
            assert_eq!(d["status"], "delivered", "{d}");
            assert_eq!(d["requests"][0]["status_code"], 200);
        }
        let r = s.get(&s.sak, "/webhooks").await;
        assert_eq!(r.json.as_array().unwrap().len(), 1);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_receiver_is_retried_until_it_recovers() {
    on_each_db(|s| async move {
        let rx = Receiver::start(Mode::Fail(2)).await;
        let hook = subscribe(&s, &rx.url, json!({"events": ["wallet_created"]})).await;
        s.create_wallet("retry me").await;
        rx.wait_for("the third attempt", |e| e.len() >= 3).await;
        let hid = hook["id"].as_str().unwrap();
        let mut delivered = Value::Null;
        for _ in 0..100 {
            let r = s.get(&s.sak, &format!("/webhooks/{hid}/deliveries")).await;
            if r.json[0]["status"] == "delivered" {
                delivered = r.json[0].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(delivered["attempts"], 3, "{delivered}");
        let codes: Vec<i64> = delivered["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status_code"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, [500, 500, 200]);
        // Same event id each time; a new HookId per request.
        let got = rx.got();
        let ids: Vec<Value> = got
            .iter()
            .map(|g| serde_json::from_slice::<Value>(&g.body).unwrap()["id"].clone())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(
            got.iter()
                .map(|g| g.body.clone())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            1,
            "byte-identical bodies"
        );
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_receiver_does_not_hold_up_others_or_payments() {
    on_each_db(|s| async move {
        let slow = Receiver::start(Mode::Hang).await;
        let fast = Receiver::start(Mode::Ok).await;
        subscribe(&s, &slow.url, json!({"default_all": true})).await;
        subscribe(&s, &fast.url, json!({"default_all": true})).await;
        let a = s.create_wallet("A").await;
        s.fund(&a, 1000).await;
        for _ in 0..5 {
            let inv = s.external_invoice(10, "x");
            let r = s
                .post(
                    &s.sak,
                    &format!("/wallet/{}/withdraw", a.waka),
                    json!({"payment_request": inv.as_str(), "fee_limit_msat": 0}),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "payments go on while a receiver hangs: {}",
                r.text
            );
        }
        // 1 created + 1 receive + 5 sends reach the healthy receiver.
        fast.wait_for("7 events", |e| e.len() >= 7).await;
        assert!(slow.got().is_empty());
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_committed_while_no_dispatcher_ran_are_delivered_after_restart() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let rx = Receiver::start(Mode::Ok).await;
        let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [9u8; 32]));
        // First run: the outbox fills but nothing is sent (as if the process died right after
        // each commit).
        let s = TestServer::start_custom(db, test_service_config(), scripted.clone(), None).await;
        let sak = s.sak.clone();
        subscribe(&s, &rx.url, json!({"default_all": true, "secret": "k"})).await;
        let a = s.create_wallet("A").await;
        s.fund(&a, 500).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.got().is_empty());
        let db = s.stop().await;

        let s = TestServer::start_custom(
            db,
            test_service_config(),
            scripted,
            Some(test_dispatcher_config()),
        )
        .await;
        let events = rx.wait_for("both queued events", |e| e.len() >= 2).await;
        assert_eq!(count(&events, "wallet_created"), 1);
        assert_eq!(count(&events, "wallet_receive"), 1);
        for g in rx.got() {
            assert_eq!(
                g.headers["x-lnpay-signature"].to_str().unwrap(),
                satchel_api::webhooks::sign("k", &g.body)
            );
        }
        let r = s.get(&sak, &format!("/wallet/{}", a.id)).await;
        assert_eq!(r.json["balance"], 500);
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeliver_delete_and_dead_deliveries() {
    on_each_db(|s| async move {
        let rx = Receiver::start(Mode::Ok).await;
        let hook = subscribe(
            &s,
            &rx.url,
            json!({"events": "wallet_created,wallet_receive"}),
        )
        .await;
        assert_eq!(hook["events"], json!(["wallet_created", "wallet_receive"]));
        s.create_wallet("A").await;
        rx.wait_for("one event", |e| e.len() == 1).await;
        let hid = hook["id"].as_str().unwrap();
        let r = s.get(&s.sak, &format!("/webhooks/{hid}/deliveries")).await;
        let did = r.json[0]["id"].as_str().unwrap().to_owned();
        let r = s
            .post(
                &s.sak,
                &format!("/webhooks/deliveries/{did}/redeliver"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_ne!(r.json["id"].as_str().unwrap(), did);
        let events = rx.wait_for("the redelivery", |e| e.len() == 2).await;
        assert_eq!(events[0]["id"], events[1]["id"], "same event");
        let got = rx.got();
        assert_ne!(
            got[0].headers["x-lnpay-hookid"],
            got[1].headers["x-lnpay-hookid"]
        );

        // Deleting stops further deliveries.
        let r = s
            .send(
                s.http
                    .delete(s.v1(&format!("/webhooks/{hid}")))
                    .header("X-Api-Key", &s.sak),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["deleted"], true);
        s.create_wallet("B").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rx.got().len(), 2);
        let r = s.get(&s.sak, "/webhooks").await;
        assert_eq!(r.json, json!([]));
        let r = s
            .send(
                s.http
                    .delete(s.v1(&format!("/webhooks/{hid}")))
                    .header("X-Api-Key", &s.sak),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_never_recovers_ends_dead() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let rx = Receiver::start(Mode::Fail(u32::MAX)).await;
        let mut dcfg = test_dispatcher_config();
        dcfg.retry.window_secs = 2;
        let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [3u8; 32]));
        let s = TestServer::start_custom(db, test_service_config(), scripted, Some(dcfg)).await;
        let hook = subscribe(&s, &rx.url, json!({"default_all": true})).await;
        s.create_wallet("A").await;
        let hid = hook["id"].as_str().unwrap();
        let mut last = Value::Null;
        for _ in 0..100 {
            let r = s.get(&s.sak, &format!("/webhooks/{hid}/deliveries")).await;
            last = r.json[0].clone();
            if last["status"] == "dead" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last["status"], "dead", "{last}");
        assert!(last["attempts"].as_i64().unwrap() >= 1);
        assert_eq!(last["last_status"], 500);
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscription_rules() {
    // Default server settings: private targets are refused (SSRF).
    let mut cfg = test_service_config();
    cfg.allow_private_webhook_targets = false;
    let db = TestDb::sqlite().await;
    let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [4u8; 32]));
    let s = TestServer::start_custom(db, cfg, scripted, Some(test_dispatcher_config())).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/x",
        "http://10.0.0.5/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
    ] {
        let r = s
            .post(
                &s.sak,
                "/webhooks",
                json!({"endpoint_url": url, "default_all": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text);
        assert!(
            r.json["message"].as_str().unwrap().contains("private"),
            "{}",
            r.text
        );
    }
    let cases = [
        (
            json!({"endpoint_url": "ftp://example.com/x", "default_all": true}),
            "http or https",
        ),
        (
            json!({"default_all": true}),
            "Endpoint Url cannot be blank.",
        ),
        (
            json!({"endpoint_url": "http://8.8.8.8/x", "events": ["nope"]}),
            "Unknown event",
        ),
    ];
    for (body, msg) in cases {
        let r = s.post(&s.sak, "/webhooks", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(
            r.json["message"].as_str().unwrap().contains(msg),
            "{}",
            r.text
        );
    }
    // pak may not manage webhooks.
    let r = s
        .post(
            &s.pak,
            "/webhooks",
            json!({"endpoint_url": "http://example.com/x", "default_all": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json["message"],
        "This resource can only be access with secret access key."
    );
    let r = s.get(&s.pak, "/webhooks").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}
