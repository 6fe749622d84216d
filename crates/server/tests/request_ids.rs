//! Request ids: `X-Request-Id` kept when safe, generated when absent or hostile, echoed in the
//! response and in error bodies, sent with the webhooks a request caused (else the event id),
//! and on every JSON log line of the request (`--log-format json`, the real binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod child;
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::post;
use child::Proc;
use common::{TestServer, on_each_db};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

fn is_generated(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn rid(h: &reqwest::header::HeaderMap) -> String {
    h.get("x-request-id")
        .expect("every answer has X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn get_with(s: &TestServer, path: &str, id: Option<HeaderValue>) -> common::Resp {
    let mut rb = s.http.get(s.v1(path)).header("X-Api-Key", &s.sak);
    if let Some(v) = id {
        rb = rb.header("X-Request-Id", v);
    }
    s.send(rb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_ids_are_echoed_generated_or_replaced() {
    on_each_db(|s| async move {
        // A safe client id is kept, on success and on error alike.
        let r = get_with(
            &s,
            "/wallets",
            Some(HeaderValue::from_static("req-abc_1.2:3")),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(rid(&r.headers), "req-abc_1.2:3");
        let uuid = "6f1c2a40-7d1e-4c43-9a57-0b0c4b1f8e21";
        let r = get_with(&s, "/lntx/lntx_nope", Some(HeaderValue::from_static(uuid))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(rid(&r.headers), uuid);
        assert_eq!(r.json["request_id"], uuid);
        assert_eq!(r.json["message"], "LnTx not found");

        // Absent: generated, different each time.
        let a = get_with(&s, "/wallets", None).await;
        let b = get_with(&s, "/wallets", None).await;
        assert!(is_generated(&rid(&a.headers)), "{}", rid(&a.headers));
        assert_ne!(rid(&a.headers), rid(&b.headers));

        // Hostile: replaced by a generated id, never echoed.
        let long = "a".repeat(65);
        let hostile: Vec<HeaderValue> = vec![
            HeaderValue::from_str(&long).unwrap(),
            HeaderValue::from_static("a b"),
            HeaderValue::from_static("<script>alert(1)</script>"),
            HeaderValue::from_static("x\"}, \"admin\": true"),
            HeaderValue::from_static("a,b"),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
            HeaderValue::from_static(""),
        ];
        for v in hostile {
            // An error answer, so the body carries the id too.
            let r = get_with(&s, "/lntx/lntx_nope", Some(v.clone())).await;
            let id = rid(&r.headers);
            assert!(is_generated(&id), "{v:?} -> {id}");
            assert_eq!(r.json["request_id"], id.as_str(), "{}", r.text);
        }

        // Every answer carries one: no key (401), unknown route (404), OPTIONS, 413.
        let r = s.send(s.http.get(s.v1("/wallets"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["request_id"], rid(&r.headers).as_str());
        let r = s
            .send(
                s.http
                    .get(format!("{}/nowhere", s.base))
                    .header("X-Request-Id", "nf-1"),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json["request_id"], "nf-1");
        let r = s
            .send(
                s.http
                    .request(reqwest::Method::OPTIONS, s.v1("/wallets"))
                    .header("X-Request-Id", "opt-1"),
            )
            .await;
        assert_eq!(rid(&r.headers), "opt-1");
        let r = s
            .send(
                s.http
                    .post(s.v1("/wallet"))
                    .header("X-Api-Key", &s.sak)
                    .header("X-Request-Id", "big-1")
                    .body("x".repeat(70_000)),
            )
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.json["request_id"], "big-1");

        // Browsers may read it (CORS).
        let r = s
            .send(
                s.http
                    .get(s.v1("/wallets"))
                    .header("X-Api-Key", &s.sak)
                    .header("Origin", "https://example.com"),
            )
            .await;
        let exposed = r.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(exposed.contains("x-request-id"), "{exposed}");
        s
    })
    .await;
}

#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

async fn hook(State(h): State<Hook>, headers: HeaderMap, body: axum::body::Bytes) -> AxStatus {
    let v: Value = serde_json::from_slice(&body).unwrap();
    h.got.lock().unwrap().push((headers, v));
    AxStatus::OK
}

impl Hook {
    async fn start() -> (Hook, String) {
        let h = Hook::default();
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(h.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (h, format!("http://{addr}/hook"))
    }

    /// The first delivery of an event named `name` matching `pred` (waits up to 20 s).
    async fn wait(&self, name: &str, pred: impl Fn(&Value) -> bool) -> (HeaderMap, Value) {
        for _ in 0..400 {
            let found = self
                .got
                .lock()
                .unwrap()
                .iter()
                .find(|(_, v)| v["event"]["name"] == name && pred(v))
                .cloned();
            if let Some(f) = found {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {name} delivery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_carry_the_request_that_caused_them() {
    on_each_db(|s| async move {
        let (h, url) = Hook::start().await;
        let r = s
            .post(
                &s.sak,
                "/webhooks",
                json!({"endpoint_url": url, "default_all": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        // Caused by a request: its id.
        let r = s
            .post_with(
                &s.sak,
                "/wallet",
                json!({"user_label": "A"}),
                &[("X-Request-Id", "create-a-1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let a_id = r.json["id"].as_str().unwrap().to_owned();
        let a_waka = r.json["access_keys"]["Wallet Admin"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let (headers, _) = h
            .wait("wallet_created", |v| {
                v["data"]["wal"]["id"] == a_id.as_str()
            })
            .await;
        assert_eq!(headers["x-request-id"], "create-a-1");

        // Caused by the outside world (an incoming payment): the event's own id.
        let b = s.create_wallet("B").await;
        let a = common::WalletKeys {
            id: a_id.clone(),
            waka: a_waka.clone(),
            ..b.clone()
        };
        s.fund(&a, 1_000).await;
        let (headers, v) = h.wait("wallet_receive", |_| true).await;
        assert_eq!(headers["x-request-id"], v["id"].as_str().unwrap());
        assert!(v["id"].as_str().unwrap().starts_with("evt_"));

        // A payment finished by its driver task (spawned by the request) keeps the id too.
        let (inv, _) = s.scripted.external_invoice(
            Some(satchel_domain::Msat::from_sats(10).unwrap()),
            "out",
            3600,
        );
        let r = s
            .post_with(
                &s.sak,
                &format!("/wallet/{a_waka}/withdraw"),
                json!({"payment_request": inv.as_str()}),
                &[("X-Request-Id", "pay-1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let (headers, _) = h.wait("wallet_send", |_| true).await;
        assert_eq!(headers["x-request-id"], "pay-1");

        // A transfer: both sides' events name the request.
        let r = s
            .post_with(
                &s.sak,
                &format!("/wallet/{a_waka}/transfer"),
                json!({"dest_wallet_id": b.id, "num_satoshis": 5}),
                &[("X-Request-Id", "xfer-1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let (headers, _) = h.wait("wallet_transfer_in", |_| true).await;
        assert_eq!(headers["x-request-id"], "xfer-1");
        s
    })
    .await;
}

/// The real binary with `--log-format json`: every stderr line is a JSON object, and the lines
/// logged while serving a request carry its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let mut p = Proc::serve("json-logs", move |cmd| {
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--backend", "scripted", "--log-format", "json"])
            // The per-request line is at debug level.
            .env("RUST_LOG", "info,satchel_api=debug,sqlx=warn");
    });
    p.wait_ready().await;
    let sak = p.sak().await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v1/wallets", p.base()))
        .header("X-Api-Key", &sak)
        .header("X-Request-Id", "json-log-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-request-id"], "json-log-1");
    let line = p
        .wait_line(false, "json-log-1", Duration::from_secs(10))
        .await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["span"]["request_id"], "json-log-1", "{line}");
    assert_eq!(v["fields"]["message"], "request answered");
    assert_eq!(v["fields"]["route"], "/v1/wallets");
    assert_eq!(v["fields"]["status"], 200);
    assert_eq!(v["level"], "DEBUG");
    // Its metrics listener was announced (a free port, from the test harness).
    let announced = p.wait_line(false, "/metrics", Duration::from_secs(5)).await;
    let a: Value = serde_json::from_str(&announced).unwrap();
    let metrics_url = a["fields"]["url"].as_str().unwrap().to_owned();
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"satchel_http_requests_total{method="GET",route="/v1/wallets",status="200"}"#
        ),
        "{text}"
    );
    p.stop().await;
    let lines = p.lines(false);
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
    }
}
