//! Wire conventions of the LNPay v1 API (spec §2, §3, §10, §13): credential transports, status
//! codes, HEAD/OPTIONS/CORS, JSON and form bodies, passThru merging, `?fields=`, pagination,
//! wallet addressing, and the LNbits funding-source flow. Every test runs on SQLite and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Resp, TestServer, WalletKeys, on_each_db};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use satchel_domain::{Bolt11, CustomRecords, Msat};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INVALID_CREDENTIALS: &str = "Your request was made with invalid credentials.";
const PAK_NEEDS_WALLET_KEY: &str = "Invalid Wallet Access Key. Keys prefixed with waka_, waki_, wakr, waklw are valid when using pak_";
/// sha256("") in hex and base64.
const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const EMPTY_SHA256_B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing header {name} in {h:?}"))
        .to_str()
        .unwrap()
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut u = reqwest::Url::parse("http://x/").unwrap();
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    u.query().unwrap_or_default().to_owned()
}

/// POST a raw body with `X-Api-Key` and an optional `Content-Type`.
async fn post_raw(
    s: &TestServer,
    key: &str,
    path: &str,
    body: String,
    content_type: Option<&str>,
) -> Resp {
    let mut rb = s.http.post(s.v1(path)).header("X-Api-Key", key).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("Content-Type", ct);
    }
    s.send(rb).await
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
const NO_CT: Option<&str> = None;

/// Asserts the Yii error envelope, plus Satchel's `request_id` (last, equal to the
/// `X-Request-Id` header).
fn assert_envelope(r: &Resp, status: StatusCode, message: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    let name = status.canonical_reason().unwrap();
    let request_id = header(&r.headers, "x-request-id");
    assert_eq!(
        r.json,
        json!({ "name": name, "message": message, "code": 0, "status": status.as_u16(),
                "request_id": request_id }),
        "{}",
        r.text
    );
    let keys: Vec<&String> = r.json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "message", "code", "status", "request_id"]);
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            header(&r.headers, "www-authenticate"),
            "Basic realm=\"api\""
        );
    }
}

fn assert_invalid_credentials(r: &Resp) {
    assert_envelope(r, StatusCode::UNAUTHORIZED, INVALID_CREDENTIALS);
}

fn keys_of(v: &Value) -> Vec<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// A GET over a raw TCP connection (to send header names exactly as written).
async fn raw_get(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text}"));
    (status, text)
}

/// Polls `GET /v1/lntx/:id?fields=settled` until it reads `want` (10 s max).
async fn wait_settled(s: &TestServer, id: &str, want: i64) {
    for _ in 0..200 {
        let r = s.get(&s.sak, &format!("/lntx/{id}?fields=settled")).await;
        if r.json["settled"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("lntx {id} never reached settled={want}");
}

/// Waits until the wallet has `n` transactions.
async fn wait_tx_count(s: &TestServer, w: &WalletKeys, n: usize) -> Value {
    for _ in 0..200 {
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", w.id))
            .await;
        if r.json.as_array().is_some_and(|a| a.len() == n) {
            return r.json;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("wallet {} never had {n} transactions", w.id);
}

// ---------------------------------------------------------------------------------------------
// Authentication (§3.1)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_transports_and_precedence() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Auth").await;
        let path = format!("/wallet/{}", w.id);
        let url = s.v1(&path);
        let ok = |r: &Resp| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.json["id"], w.id.as_str());
        };

        // 1. X-Api-Key, any header-name case.
        for name in ["X-Api-Key", "X-API-Key", "x-api-key", "X-API-KEY"] {
            ok(&s.send(s.http.get(&url).header(name, &s.sak)).await);
        }
        // On the wire, exactly as written (reqwest lowercases names).
        for name in ["X-API-KEY", "x-Api-kEy"] {
            let (status, text) = raw_get(&s, &format!("/v1{path}"), &[(name, &s.sak)]).await;
            assert_eq!(status, 200, "{text}");
        }

        // 2. ?access-token=
        ok(&s
            .send(s.http.get(format!("{url}?access-token={}", s.sak)))
            .await);

        // 3. Basic auth, key as username (`curl -u sak_x:`), password ignored.
        ok(&s.send(s.http.get(&url).basic_auth(&s.sak, Some(""))).await);
        ok(&s
            .send(s.http.get(&url).basic_auth(&s.sak, Some("whatever")))
            .await);
        ok(&s
            .send(s.http.get(&url).basic_auth(&s.sak, None::<&str>))
            .await);

        // Precedence: header, then query, then Basic. The first transport present decides.
        ok(&s
            .send(
                s.http
                    .get(format!("{url}?access-token=sak_bogus"))
                    .header("X-Api-Key", &s.sak)
                    .basic_auth("sak_bogus", Some("")),
            )
            .await);
        assert_invalid_credentials(
            &s.send(
                s.http
                    .get(format!("{url}?access-token={}", s.sak))
                    .header("X-Api-Key", "sak_bogus"),
            )
            .await,
        );
        ok(&s
            .send(
                s.http
                    .get(format!("{url}?access-token={}", s.sak))
                    .basic_auth("sak_bogus", Some("")),
            )
            .await);
        assert_invalid_credentials(
            &s.send(
                s.http
                    .get(format!("{url}?access-token=sak_bogus"))
                    .basic_auth(&s.sak, Some("")),
            )
            .await,
        );

        // Bad key on each transport, and no key at all: the same 401 + challenge.
        for r in [
            s.send(s.http.get(&url).header("X-Api-Key", "sak_bogus"))
                .await,
            s.send(s.http.get(format!("{url}?access-token=sak_bogus")))
                .await,
            s.send(s.http.get(&url).basic_auth("sak_bogus", Some("")))
                .await,
            s.send(s.http.get(&url)).await,
            s.send(
                s.http
                    .post(s.v1("/wallet"))
                    .json(&json!({"user_label": "x"})),
            )
            .await,
        ] {
            assert_invalid_credentials(&r);
        }
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wallet_key_as_api_key_is_rejected() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Wallet key as API key").await;
        for key in [&w.waka, &w.wakr] {
            let r = s.get(key, &format!("/wallet/{key}")).await;
            assert_envelope(
                &r,
                StatusCode::UNAUTHORIZED,
                &format!("Wallet not found: {key}"),
            );
        }
        let r = s
            .post(
                &w.waka,
                &format!("/wallet/{}/invoice", w.waka),
                json!({"num_satoshis": 1}),
            )
            .await;
        assert_envelope(
            &r,
            StatusCode::UNAUTHORIZED,
            &format!("Wallet not found: {}", w.waka),
        );
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Wallet addressing (§3.3) and permissions (§3.5)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sak_and_pak_wallet_addressing() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Addressing").await;
        let all = [
            &w.id, &w.waka, &w.waki, &w.wakr, &w.waklw, &w.waklp, &w.wakewa, &w.wakewv,
        ];
        // sak: wallet id or any of its keys.
        for k in all {
            let r = s.get(&s.sak, &format!("/wallet/{k}")).await;
            assert_eq!(r.status, StatusCode::OK, "{k}: {}", r.text);
            assert_eq!(r.json["id"], w.id.as_str(), "{k}");
        }
        // pak: never the wallet id.
        let r = s.get(&s.pak, &format!("/wallet/{}", w.id)).await;
        assert_envelope(&r, StatusCode::UNAUTHORIZED, PAK_NEEDS_WALLET_KEY);
        let r = s
            .post(
                &s.pak,
                &format!("/wallet/{}/invoice", w.id),
                json!({"num_satoshis": 1}),
            )
            .await;
        assert_envelope(&r, StatusCode::UNAUTHORIZED, PAK_NEEDS_WALLET_KEY);
        // pak + keys holding wallet_read.
        for k in [&w.waka, &w.wakr, &w.waklw, &w.wakewa, &w.wakewv] {
            let r = s.get(&s.pak, &format!("/wallet/{k}")).await;
            assert_eq!(r.status, StatusCode::OK, "{k}: {}", r.text);
            assert_eq!(r.json["id"], w.id.as_str());
        }
        // pak + keys without wallet_read.
        for (k, prefix) in [(&w.waki, "waki"), (&w.waklp, "waklp")] {
            let r = s.get(&s.pak, &format!("/wallet/{k}")).await;
            assert_envelope(
                &r,
                StatusCode::UNAUTHORIZED,
                &format!(
                    "{prefix}_ access key provided does not permission to do this: wallet_read"
                ),
            );
        }
        // pak + waki may create invoices (wallet_deposit) but not pay.
        let r = s
            .post(
                &s.pak,
                &format!("/wallet/{}/invoice", w.waki),
                json!({"num_satoshis": 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = s
            .post(
                &s.pak,
                &format!("/wallet/{}/withdraw", w.waki),
                json!({"payment_request": s.external_invoice(1, "x").as_str()}),
            )
            .await;
        assert_envelope(
            &r,
            StatusCode::UNAUTHORIZED,
            "waki_ access key provided does not permission to do this: wallet_withdraw",
        );
        // Unknown key with pak / sak.
        let r = s.get(&s.pak, "/wallet/waka_doesnotexist").await;
        assert_envelope(&r, StatusCode::UNAUTHORIZED, PAK_NEEDS_WALLET_KEY);
        let r = s.get(&s.sak, "/wallet/waka_doesnotexist").await;
        assert_envelope(
            &r,
            StatusCode::UNAUTHORIZED,
            "Wallet not found: waka_doesnotexist",
        );

        // Another account's keys see nothing of this wallet.
        let other = satchel_service::wallets::create_account(&s.running().store, "other")
            .await
            .unwrap();
        let other_sak = other.secret_key.expose().to_owned();
        let other_pak = other.public_key.expose().to_owned();
        for k in [&w.id, &w.waka] {
            let r = s.get(&other_sak, &format!("/wallet/{k}")).await;
            assert_envelope(
                &r,
                StatusCode::UNAUTHORIZED,
                &format!("Wallet not found: {k}"),
            );
        }
        let r = s.get(&other_pak, &format!("/wallet/{}", w.waka)).await;
        assert_envelope(&r, StatusCode::UNAUTHORIZED, PAK_NEEDS_WALLET_KEY);
        let inv = s.invoice(&w, 5).await;
        let r = s
            .get(
                &other_sak,
                &format!("/lntx/{}", inv["id"].as_str().unwrap()),
            )
            .await;
        assert_envelope(&r, StatusCode::UNAUTHORIZED, "LnTx not found");
        // ... but the owner's pak can read it.
        let r = s
            .get(&s.pak, &format!("/lntx/{}", inv["id"].as_str().unwrap()))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Status codes (§2.3, §2.4)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_codes() {
    on_each_db(|s| async move {
        let r = s.post(&s.sak, "/wallet", json!({"user_label": "A"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let r = s
            .post(&s.pak, "/wallet", json!({"user_label": "by pak"}))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "pak may create wallets: {}",
            r.text
        );
        let a = s.create_wallet("A2").await;
        let b = s.create_wallet("B").await;
        s.fund(&a, 1000).await;

        let get_ok = [
            format!("/wallet/{}", a.waka),
            "/wallets".to_owned(),
            format!("/wallet/{}/transactions", a.waka),
            "/wallet-transactions".to_owned(),
        ];
        for p in &get_ok {
            let r = s.get(&s.sak, p).await;
            assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.text);
            assert_eq!(
                header(&r.headers, "content-type"),
                "application/json; charset=UTF-8"
            );
        }

        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/invoice", a.waka),
                json!({"num_satoshis": 5}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let lntx = r.json["id"].as_str().unwrap().to_owned();
        assert_eq!(
            s.get(&s.sak, &format!("/lntx/{lntx}")).await.status,
            StatusCode::OK
        );

        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({"payment_request": s.external_invoice(10, "x").as_str()}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        let carol = s.scripted.external_pubkey().to_hex();
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/keysend", a.waka),
                json!({"dest_pubkey": carol, "num_satoshis": 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        for async_value in ["1", "true", "yes"] {
            let r = s
                .post_with(
                    &s.sak,
                    &format!("/wallet/{}/keysend", a.waka),
                    json!({"dest_pubkey": carol, "num_satoshis": 1}),
                    &[("X-LNPAY-ASYNC", async_value)],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{async_value}: {}", r.text);
            assert_eq!(r.json["success"], 1);
            let job = r.json["id"].as_str().unwrap();
            assert!(job.starts_with("job_"), "{job}");
            assert_eq!(
                s.get(&s.sak, &format!("/job/{job}")).await.status,
                StatusCode::OK
            );
        }
        // "0" is not async.
        let r = s
            .post_with(
                &s.sak,
                &format!("/wallet/{}/keysend", a.waka),
                json!({"dest_pubkey": carol, "num_satoshis": 1}),
                &[("X-LNPAY-ASYNC", "0")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/transfer", a.waka),
                json!({"dest_wallet_id": b.id, "num_satoshis": 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        let inv = s.external_invoice(3, "decode");
        let r = s
            .get(
                &s.pak,
                &format!(
                    "/node/default/payments/decodeinvoice?payment_request={}",
                    inv.as_str()
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = s
            .get(
                &s.pak,
                &format!("/node/default/payments/queryroutes?pub_key={carol}&amt=3"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);

        // Errors.
        assert_envelope(
            &s.get(&s.sak, "/lntx/lntx_unknown").await,
            StatusCode::UNAUTHORIZED,
            "LnTx not found",
        );
        assert_envelope(
            &s.get(&s.sak, "/job/job_unknown").await,
            StatusCode::UNAUTHORIZED,
            "You are not allowed to access this resource!",
        );
        assert_envelope(
            &s.get(&s.pak, "/wallet-transactions").await,
            StatusCode::UNAUTHORIZED,
            "This resource can only be access with secret access key.",
        );
        assert_envelope(
            &s.get(&s.sak, "/nope").await,
            StatusCode::NOT_FOUND,
            "Page not found.",
        );
        let r = s.send(s.http.get(format!("{}/not-v1", s.base))).await;
        assert_envelope(&r, StatusCode::NOT_FOUND, "Page not found.");
        assert_envelope(
            &s.post(
                &s.sak,
                &format!("/wallet/{}/invoice", a.waka),
                json!({"num_satoshis": "x"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "Num Satoshis must be an integer.",
        );
        assert_envelope(
            &s.post(&s.sak, &format!("/wallet/{}/withdraw", a.waka), json!({}))
                .await,
            StatusCode::BAD_REQUEST,
            "Payment Request cannot be blank.",
        );
        // A wrong method on a known route still gets a Yii-shaped error envelope.
        let r = s
            .send(
                s.http
                    .delete(s.v1(&format!("/wallet/{}", a.waka)))
                    .header("X-Api-Key", &s.sak),
            )
            .await;
        assert!(r.status.is_client_error(), "{}", r.status);
        assert_eq!(r.json["status"], r.status.as_u16());
        assert_eq!(r.json["code"], 0);
        assert_eq!(r.json["name"], r.status.canonical_reason().unwrap());
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// HEAD, OPTIONS, CORS (§2.5)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn head_options_and_cors() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Cors").await;

        let r = s
            .send(
                s.http
                    .head(s.v1(&format!("/wallet/{}", w.waka)))
                    .header("X-Api-Key", &s.sak),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text, "");
        let r = s
            .send(
                s.http
                    .head(s.v1(&format!("/wallet/{}", w.waka)))
                    .header("X-Api-Key", "sak_bad"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.text, "");

        // OPTIONS: every route, unauthenticated, 200 + Allow.
        for p in [
            format!("/v1/wallet/{}", w.waka),
            format!("/v1/wallet/{}/invoice", w.waka),
            format!("/v1/wallet/{}/withdraw", w.waka),
            format!("/v1/wallet/{}/keysend", w.waka),
            format!("/v1/wallet/{}/transfer", w.waka),
            format!("/v1/wallet/{}/transactions", w.waka),
            "/v1/wallet".to_owned(),
            "/v1/wallets".to_owned(),
            "/v1/wallet-transactions".to_owned(),
            "/v1/lntx/lntx_x".to_owned(),
            "/v1/job/job_x".to_owned(),
            "/v1/node/default/payments/decodeinvoice".to_owned(),
            "/v1/does/not/exist".to_owned(),
        ] {
            let r = s
                .send(
                    s.http
                        .request(reqwest::Method::OPTIONS, format!("{}{p}", s.base)),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.text);
            assert_eq!(r.text, "", "{p}");
            let allow = header(&r.headers, "allow");
            for m in ["GET", "POST", "HEAD", "OPTIONS"] {
                assert!(allow.contains(m), "{p}: Allow {allow}");
            }
        }

        // CORS preflight.
        let origin = "https://app.example.com";
        let r = s
            .send(
                s.http
                    .request(
                        reqwest::Method::OPTIONS,
                        s.v1(&format!("/wallet/{}/invoice", w.waka)),
                    )
                    .header("Origin", origin)
                    .header("Access-Control-Request-Method", "POST")
                    .header("Access-Control-Request-Headers", "x-api-key,content-type"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(header(&r.headers, "access-control-allow-origin"), origin);
        let methods = header(&r.headers, "access-control-allow-methods");
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allowed = header(&r.headers, "access-control-allow-headers").to_ascii_lowercase();
        assert!(
            allowed.contains("x-api-key") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert_eq!(header(&r.headers, "access-control-max-age"), "86400");

        // CORS on actual responses: success, list (pagination headers exposed) and errors.
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}", w.waka)))
                    .header("X-Api-Key", &s.sak)
                    .header("Origin", origin),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(header(&r.headers, "access-control-allow-origin"), origin);

        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}/transactions", w.waka)))
                    .header("X-Api-Key", &s.sak)
                    .header("Origin", "http://localhost:3000"),
            )
            .await;
        assert_eq!(
            header(&r.headers, "access-control-allow-origin"),
            "http://localhost:3000"
        );
        let exposed = header(&r.headers, "access-control-expose-headers").to_ascii_lowercase();
        for h in [
            "x-pagination-total-count",
            "x-pagination-page-count",
            "x-pagination-current-page",
            "x-pagination-per-page",
            "link",
        ] {
            assert!(exposed.contains(h), "{exposed}");
        }

        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}", w.waka)))
                    .header("X-Api-Key", "sak_bad")
                    .header("Origin", origin),
            )
            .await;
        assert_invalid_credentials(&r);
        assert_eq!(header(&r.headers, "access-control-allow-origin"), origin);
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bodies: invoice (§2.1, §5.6, §10)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoice_bodies_pass_thru_and_description_hash() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Invoice bodies").await;
        let path = format!("/wallet/{}/invoice", w.waka);
        let check = |r: &Resp, sats: i64, memo: &str| {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            assert_eq!(r.json["num_satoshis"], sats, "{}", r.text);
            assert_eq!(r.json["memo"], memo);
            let b = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
            assert_eq!(b.amount().map(|a| a.as_msat()), Some(sats as u64 * 1000));
        };

        // num_satoshis as a number and as a numeric string; JSON, form, no content type.
        check(
            &s.post(&s.sak, &path, json!({"num_satoshis": 11, "memo": "n"}))
                .await,
            11,
            "n",
        );
        check(
            &s.post(&s.sak, &path, json!({"num_satoshis": "12", "memo": "s"}))
                .await,
            12,
            "s",
        );
        check(
            &post_raw(
                &s,
                &s.sak,
                &path,
                form(&[("num_satoshis", "13"), ("memo", "f")]),
                FORM,
            )
            .await,
            13,
            "f",
        );
        check(
            &post_raw(
                &s,
                &s.sak,
                &path,
                form(&[("num_satoshis", "14"), ("memo", "no ct")]),
                NO_CT,
            )
            .await,
            14,
            "no ct",
        );
        check(
            &post_raw(
                &s,
                &s.sak,
                &path,
                r#"{"num_satoshis":15,"memo":"json charset"}"#.to_owned(),
                Some("application/json; charset=UTF-8"),
            )
            .await,
            15,
            "json charset",
        );

        // passThru: {wallet_id first, then the client's keys}, from an object or a JSON string.
        let expected = format!(
            r#"{{"wallet_id":"{}","ticketId":"556","x":{{"y":1}}}}"#,
            w.id
        );
        for r in [
            s.post(
                &s.sak,
                &path,
                json!({"num_satoshis": 1, "passThru": {"ticketId": "556", "x": {"y": 1}}}),
            )
            .await,
            s.post(
                &s.sak,
                &path,
                json!({"num_satoshis": 1, "passThru": " {\"ticketId\":\"556\",\"x\":{\"y\":1}} "}),
            )
            .await,
            post_raw(
                &s,
                &s.sak,
                &path,
                form(&[
                    ("num_satoshis", "1"),
                    ("passThru", r#"{"ticketId":"556","x":{"y":1}}"#),
                ]),
                FORM,
            )
            .await,
        ] {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            assert_eq!(r.json["passThru"].to_string(), expected);
            let got = s
                .get(
                    &s.sak,
                    &format!("/lntx/{}?fields=passThru", r.json["id"].as_str().unwrap()),
                )
                .await;
            assert_eq!(got.json["passThru"].to_string(), expected);
        }
        // Without passThru: just the wallet id.
        let r = s.post(&s.sak, &path, json!({"num_satoshis": 1})).await;
        assert_eq!(r.json["passThru"], json!({"wallet_id": w.id}));

        for bad in ["not json", "{\"a\":", "[1,2]", "5"] {
            let r = s
                .post(&s.sak, &path, json!({"num_satoshis": 1, "passThru": bad}))
                .await;
            assert_envelope(
                &r,
                StatusCode::BAD_REQUEST,
                "passThru data must be valid json",
            );
            let r = post_raw(&s, &s.sak, &path, form(&[("passThru", bad)]), FORM).await;
            assert_envelope(
                &r,
                StatusCode::BAD_REQUEST,
                "passThru data must be valid json",
            );
        }

        // description_hash: hex or base64 of 32 bytes; stored and returned as hex; in the BOLT11.
        for given in [EMPTY_SHA256_HEX, EMPTY_SHA256_B64] {
            let r = s
                .post(
                    &s.sak,
                    &path,
                    json!({"num_satoshis": "10", "description_hash": given}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{given}: {}", r.text);
            assert_eq!(r.json["description_hash"], EMPTY_SHA256_HEX);
            let b = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
            assert_eq!(
                b.description_hash().map(hex::encode).as_deref(),
                Some(EMPTY_SHA256_HEX)
            );
            let d = s
                .get(
                    &s.sak,
                    &format!(
                        "/node/default/payments/decodeinvoice?payment_request={}",
                        b.as_str()
                    ),
                )
                .await;
            assert_eq!(d.json["description_hash"], EMPTY_SHA256_HEX);
        }
        let r = post_raw(
            &s,
            &s.sak,
            &path,
            form(&[
                ("num_satoshis", "10"),
                ("description_hash", EMPTY_SHA256_B64),
            ]),
            FORM,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["description_hash"], EMPTY_SHA256_HEX);
        for bad in ["nothex", "abcd", &"f".repeat(63), &"zz".repeat(32), "AAAA"] {
            let r = s
                .post(
                    &s.sak,
                    &path,
                    json!({"num_satoshis": 1, "description_hash": bad}),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
            assert_eq!(r.json["name"], "Bad Request");
        }
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amountless_invoice_settles_with_paid_amount() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Amountless").await;
        let r = s
            .post(&s.sak, &format!("/wallet/{}/invoice", w.waki), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["num_satoshis"], 0);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let b = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
        assert_eq!(b.amount(), None);
        s.scripted
            .pay_our_invoice(&b, Some(Msat::from_sats(77).unwrap()))
            .unwrap();
        s.wait_balance_msat(&w, 77_000).await;
        wait_settled(&s, &id, 1).await;
        let r = s
            .get(&s.sak, &format!("/lntx/{id}?fields=num_satoshis,settled"))
            .await;
        assert_eq!(r.text, r#"{"num_satoshis":77,"settled":1}"#);
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bodies: withdraw (§5.7, §10)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdraw_bodies_and_pass_thru() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Withdraw bodies").await;
        s.fund(&w, 1000).await;
        let path = format!("/wallet/{}/withdraw", w.waka);

        let mut balance = 1000;
        for name in ["json object", "json string", "form", "no content type"] {
            let inv = s.external_invoice(10, name);
            let pr = inv.as_str();
            let form_body = form(&[("payment_request", pr), ("passThru", r#"{"orderId":"42"}"#)]);
            let (body, ct) = match name {
                "json object" => (
                    json!({"payment_request": pr, "passThru": {"orderId": "42"}}).to_string(),
                    Some("application/json"),
                ),
                "json string" => (
                    json!({"payment_request": pr, "passThru": " {\"orderId\":\"42\"} "})
                        .to_string(),
                    Some("application/json"),
                ),
                "form" => (form_body, FORM),
                _ => (form_body, NO_CT),
            };
            let r = post_raw(&s, &s.sak, &path, body, ct).await;
            assert_eq!(r.status, StatusCode::CREATED, "{name}: {}", r.text);
            balance -= 10;
            assert_eq!(r.json["num_satoshis"], -10);
            assert_eq!(r.json["user_label"], name);
            assert_eq!(r.json["wal"]["balance"], balance);
            assert_eq!(r.json["wtxType"]["name"], "ln_withdrawal");
            assert_eq!(r.json["passThru"]["orderId"], "42", "{name}");
            assert_eq!(r.json["passThru"]["method"], "api", "{name}");
            assert!(
                r.json["lnTx"].get("passThru").is_none(),
                "nested lnTx has no passThru"
            );
            let lntx = s
                .get(
                    &s.sak,
                    &format!("/lntx/{}", r.json["lnTx"]["id"].as_str().unwrap()),
                )
                .await;
            assert_eq!(lntx.json["passThru"]["orderId"], "42");
            assert_eq!(lntx.json["passThru"]["method"], "api");
            assert_eq!(lntx.json["settled"], 1);
        }

        let inv = s.external_invoice(10, "bad passThru");
        let r = s
            .post(
                &s.sak,
                &path,
                json!({"payment_request": inv.as_str(), "passThru": "nope"}),
            )
            .await;
        assert_envelope(
            &r,
            StatusCode::BAD_REQUEST,
            "passThru data must be valid json",
        );
        assert_eq!(s.balance(&w).await, balance);
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bodies: transfer (§5.9, §10)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_bodies_and_pass_thru() {
    on_each_db(|s| async move {
        let a = s.create_wallet("From").await;
        let b = s.create_wallet("To").await;
        s.fund(&a, 1000).await;
        let path = format!("/wallet/{}/transfer", a.waka);
        let expected_pt = format!(
            r#"{{"ticketId":"7","lnPayParams":{{"k":"v"}},"source_wallet_id":"{}","dest_wallet_id":"{}"}}"#,
            a.id, b.id
        );
        let check = |r: &Resp, sats: i64, memo: &str| {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            assert_eq!(keys_of(&r.json), ["wtx_transfer_in", "wtx_transfer_out"]);
            let tin = &r.json["wtx_transfer_in"];
            let tout = &r.json["wtx_transfer_out"];
            assert_eq!(tin["num_satoshis"], sats);
            assert_eq!(tout["num_satoshis"], -sats);
            assert_eq!(tin["wal"]["id"], b.id.as_str());
            assert_eq!(tout["wal"]["id"], a.id.as_str());
            assert_eq!(tin["wtxType"]["name"], "ln_transfer_in");
            assert_eq!(tout["wtxType"]["name"], "ln_transfer_out");
            assert!(tin["lnTx"].is_null() && tout["lnTx"].is_null());
            assert_eq!(tin["user_label"], memo);
            assert_eq!(tout["user_label"], memo);
            assert_eq!(tin["passThru"].to_string(), expected_pt);
            assert_eq!(tout["passThru"].to_string(), expected_pt);
        };

        check(
            &s.post(
                &s.sak,
                &path,
                json!({"dest_wallet_id": b.id, "num_satoshis": 5, "memo": "json",
                       "passThru": {"ticketId": "7"}, "lnPayParams": {"k": "v"}}),
            )
            .await,
            5,
            "json",
        );
        check(
            &s.post(
                &s.sak,
                &path,
                json!({"dest_wallet_id": b.id, "num_satoshis": "6", "memo": "json strings",
                       "passThru": " {\"ticketId\":\"7\"} ", "lnPayParams": "{\"k\":\"v\"}"}),
            )
            .await,
            6,
            "json strings",
        );
        for ct in [FORM, NO_CT] {
            check(
                &post_raw(
                    &s,
                    &s.sak,
                    &path,
                    form(&[
                        ("dest_wallet_id", &b.id),
                        ("num_satoshis", "7"),
                        ("memo", "form"),
                        ("passThru", r#"{"ticketId":"7"}"#),
                        ("lnPayParams", r#"{"k":"v"}"#),
                    ]),
                    ct,
                )
                .await,
                7,
                "form",
            );
        }
        // PHP nested keys instead of JSON strings.
        check(
            &post_raw(
                &s,
                &s.sak,
                &path,
                form(&[
                    ("dest_wallet_id", &b.id),
                    ("num_satoshis", "8"),
                    ("memo", "nested"),
                    ("passThru[ticketId]", "7"),
                    ("lnPayParams[k]", "v"),
                ]),
                FORM,
            )
            .await,
            8,
            "nested",
        );
        assert_eq!(s.balance(&a).await, 1000 - 5 - 6 - 7 - 7 - 8);
        assert_eq!(s.balance(&b).await, 5 + 6 + 7 + 7 + 8);

        // Destination given as a wallet access key (spec §15.12: accept both).
        let r = s
            .post(&s.sak, &path, json!({"dest_wallet_id": b.wakr, "num_satoshis": 1}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["wtx_transfer_in"]["wal"]["id"], b.id.as_str());
        assert_eq!(r.json["wtx_transfer_in"]["passThru"]["lnPayParams"], Value::Null);

        let r = s
            .post(
                &s.sak,
                &path,
                json!({"dest_wallet_id": b.id, "num_satoshis": 1, "passThru": "nope"}),
            )
            .await;
        assert_envelope(&r, StatusCode::BAD_REQUEST, "Invalid passThru json specified");
        let r = s
            .post(
                &s.sak,
                &path,
                json!({"dest_wallet_id": b.id, "num_satoshis": 1, "lnPayParams": "nope"}),
            )
            .await;
        assert_envelope(&r, StatusCode::BAD_REQUEST, "Invalid lnPayParams json specified");
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Bodies: keysend (§5.8) — form bodies with PHP nested keys, routed by TLV 696969
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keysend_bodies_and_php_nested_custom_records() {
    on_each_db(|s| async move {
        let a = s.create_wallet("Streamer").await;
        let b = s.create_wallet("Podcaster").await;
        s.fund(&a, 1000).await;
        let path = format!("/wallet/{}/keysend", a.waka);
        let our_node = s.scripted.pubkey().to_hex();
        let carol = s.scripted.external_pubkey().to_hex();

        // PHP SDK style: form body, `custom_records[696969]=wal_…` to our own node pubkey.
        let r = post_raw(
            &s,
            &s.sak,
            &path,
            form(&[
                ("dest_pubkey", &our_node),
                ("num_satoshis", "21"),
                ("custom_records[696969]", &b.id),
                ("custom_records[7629169]", r#"{"podcast":"p"}"#),
                ("passThru", r#"{"ticketId":"9"}"#),
            ]),
            FORM,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["num_satoshis"], -21);
        let lntx = &r.json["lnTx"];
        assert_eq!(lntx["is_keysend"], 1);
        assert_eq!(lntx["payment_request"], format!("{our_node}:21"));
        assert_eq!(lntx["custom_records"]["696969"], b.id.as_str());
        assert_eq!(lntx["custom_records"]["7629169"], r#"{"podcast":"p"}"#);
        let preimage = lntx["custom_records"]["5482373484"].as_str().unwrap();
        assert_eq!(lntx["payment_preimage"], preimage);
        assert_eq!(
            hex::encode(Sha256::digest(hex::decode(preimage).unwrap())),
            lntx["r_hash_decoded"].as_str().unwrap()
        );
        assert_eq!(r.json["passThru"]["ticketId"], "9");
        assert_eq!(r.json["passThru"]["method"], "api");
        // The node received it and booked it to the wallet named by TLV 696969.
        s.wait_balance_msat(&b, 21_000).await;
        let txs = wait_tx_count(&s, &b, 1).await;
        assert_eq!(txs[0]["wtxType"]["name"], "ln_deposit");
        assert_eq!(txs[0]["lnTx"]["is_keysend"], 1);
        assert_eq!(txs[0]["lnTx"]["custom_records"]["696969"], b.id.as_str());

        // JSON with num_satoshis as a string, and no content type.
        let r = s
            .post(
                &s.sak,
                &path,
                json!({"dest_pubkey": carol, "num_satoshis": "3"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["lnTx"]["num_satoshis"], 3);
        let r = post_raw(
            &s,
            &s.sak,
            &path,
            form(&[("dest_pubkey", &carol), ("num_satoshis", "4")]),
            NO_CT,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["lnTx"]["num_satoshis"], 4);
        // Async with a form body.
        let r = s
            .send(
                s.http
                    .post(s.v1(&path))
                    .header("X-Api-Key", &s.sak)
                    .header("X-LNPAY-ASYNC", "1")
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form(&[("dest_pubkey", &carol), ("num_satoshis", "5")])),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(keys_of(&r.json), ["success", "id"]);
        assert_eq!(r.json["success"], 1);
        s.wait_balance_msat(&a, (1000 - 21 - 3 - 4 - 5) * 1000)
            .await;

        let r = s
            .post(
                &s.sak,
                &path,
                json!({"dest_pubkey": "02abc", "num_satoshis": 1}),
            )
            .await;
        assert_envelope(
            &r,
            StatusCode::BAD_REQUEST,
            "Dest Pubkey should contain 66 characters.",
        );
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// ?fields= (§2.2)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fields_filter() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Fields").await;
        s.fund(&w, 100).await;
        let inv = s.invoice(&w, 5).await;
        let id = inv["id"].as_str().unwrap();

        let r = s
            .get(&s.sak, &format!("/lntx/{id}?fields=num_satoshis,settled"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text, r#"{"num_satoshis":5,"settled":0}"#);
        // Order is the object's, not the request's; unknown names are ignored.
        let r = s
            .get(
                &s.sak,
                &format!("/lntx/{id}?fields=settled,nope,num_satoshis"),
            )
            .await;
        assert_eq!(r.text, r#"{"num_satoshis":5,"settled":0}"#);
        let r = s.get(&s.sak, &format!("/lntx/{id}?fields=settled")).await;
        assert_eq!(r.text, r#"{"settled":0}"#);

        let r = s
            .get(
                &s.sak,
                &format!("/wallet/{}?fields=statusType,balance", w.waka),
            )
            .await;
        assert_eq!(keys_of(&r.json), ["balance", "statusType"]);
        assert_eq!(r.json["balance"], 100);

        for p in [
            format!("/wallet/{}/transactions?fields=num_satoshis,id", w.waka),
            "/wallet-transactions?fields=id,num_satoshis".to_owned(),
        ] {
            let r = s.get(&s.sak, &p).await;
            assert_eq!(r.status, StatusCode::OK, "{p}");
            let list = r.json.as_array().unwrap();
            assert_eq!(list.len(), 1);
            for item in list {
                assert_eq!(keys_of(item), ["id", "num_satoshis"], "{p}");
            }
        }
        let r = s.get(&s.sak, "/wallets?fields=user_label,id").await;
        for item in r.json.as_array().unwrap() {
            assert_eq!(keys_of(item), ["id", "user_label"]);
        }
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Pagination (§2.2, §5.3–5.5)
// ---------------------------------------------------------------------------------------------

/// Funds `a` once and makes 6 transfers to `b`: `a` then has 7 transactions, labelled (newest
/// first) t6, t5, …, t1, "test" (the deposit).
async fn seven_transactions(s: &TestServer) -> (WalletKeys, WalletKeys) {
    let a = s.create_wallet("Paged").await;
    let b = s.create_wallet("Sink").await;
    s.fund(&a, 1000).await;
    for i in 1..=6 {
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/transfer", a.waka),
                json!({"dest_wallet_id": b.id, "num_satoshis": i, "memo": format!("t{i}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    (a, b)
}

fn labels(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["user_label"].as_str().unwrap().to_owned())
        .collect()
}

fn pagination(h: &HeaderMap) -> [String; 4] {
    [
        "x-pagination-total-count",
        "x-pagination-page-count",
        "x-pagination-current-page",
        "x-pagination-per-page",
    ]
    .map(|n| header(h, n).to_owned())
}

/// `Link` header as `rel -> url`.
fn links(h: &HeaderMap) -> Vec<(String, String)> {
    header(h, "link")
        .split(", ")
        .map(|part| {
            let (url, rel) = part.split_once(">; rel=").unwrap();
            (rel.to_owned(), url.trim_start_matches('<').to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pagination_headers_links_and_order() {
    on_each_db(|s| async move {
        let (a, _b) = seven_transactions(&s).await;
        let all = s
            .get(&s.sak, &format!("/wallet/{}/transactions", a.waka))
            .await;
        assert_eq!(
            labels(&all.json),
            ["t6", "t5", "t4", "t3", "t2", "t1", "test"]
        );

        // access-token in the query: it must not leak into the Link URLs.
        let r = s
            .send(s.http.get(s.v1(&format!(
                "/wallet/{}/transactions?access-token={}&page=2&per-page=3",
                a.waka, s.sak
            ))))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(labels(&r.json), ["t3", "t2", "t1"]);
        assert_eq!(pagination(&r.headers), ["7", "3", "2", "3"]);
        let l = links(&r.headers);
        let rels: Vec<&str> = l.iter().map(|(rel, _)| rel.as_str()).collect();
        for rel in ["self", "first", "prev", "next", "last"] {
            assert!(rels.contains(&rel), "{rels:?}");
        }
        for (rel, url) in &l {
            assert!(url.starts_with("/v1/"), "{rel}: {url}");
            assert!(!url.contains("access-token"), "{rel}: {url}");
            assert!(!url.contains(&s.sak), "{rel}: {url}");
            assert!(url.contains("per-page=3"), "{rel}: {url}");
        }
        let find = |rel: &str| l.iter().find(|(r, _)| r == rel).unwrap().1.clone();
        assert!(find("next").contains("page=3"));
        assert!(find("prev").contains("page=1"));
        assert!(find("last").contains("page=3"));
        // Following a Link works (with the key as a header).
        let next = s
            .send(
                s.http
                    .get(format!("{}{}", s.base, find("next")))
                    .header("X-Api-Key", &s.sak),
            )
            .await;
        assert_eq!(labels(&next.json), ["test"]);
        assert_eq!(pagination(&next.headers), ["7", "3", "3", "3"]);
        let rels: Vec<String> = links(&next.headers).into_iter().map(|(r, _)| r).collect();
        assert!(!rels.contains(&"next".to_owned()), "{rels:?}");

        // First page: no prev.
        let r = s
            .get(
                &s.sak,
                &format!("/wallet/{}/transactions?per-page=3", a.waka),
            )
            .await;
        assert_eq!(labels(&r.json), ["t6", "t5", "t4"]);
        assert_eq!(pagination(&r.headers), ["7", "3", "1", "3"]);
        let rels: Vec<String> = links(&r.headers).into_iter().map(|(r, _)| r).collect();
        assert!(!rels.contains(&"prev".to_owned()), "{rels:?}");

        // Account-wide list has the same headers; 13 entries (a: 7, b: 6).
        let r = s
            .get(&s.sak, "/wallet-transactions?page=2&per-page=5")
            .await;
        assert_eq!(r.json.as_array().unwrap().len(), 5);
        assert_eq!(pagination(&r.headers), ["13", "3", "2", "5"]);
        let r = s
            .get(
                &s.sak,
                &format!("/wallet-transactions?wallet_id={}&per-page=5", a.id),
            )
            .await;
        assert_eq!(labels(&r.json), ["t6", "t5", "t4", "t3", "t2"]);
        assert_eq!(pagination(&r.headers), ["7", "2", "1", "5"]);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_page_defaults_and_clamping() {
    on_each_db(|s| async move {
        let (a, _b) = seven_transactions(&s).await;
        let per_page = |r: &Resp| header(&r.headers, "x-pagination-per-page").to_owned();
        let tx = |q: &str| format!("/wallet/{}/transactions{q}", a.waka);

        // Wallet transactions: default 100, max 500, `page-size` sets the default.
        assert_eq!(per_page(&s.get(&s.sak, &tx("")).await), "100");
        assert_eq!(per_page(&s.get(&s.sak, &tx("?per-page=1000")).await), "500");
        assert_eq!(per_page(&s.get(&s.sak, &tx("?per-page=0")).await), "1");
        let r = s.get(&s.sak, &tx("?page-size=2")).await;
        assert_eq!(per_page(&r), "2");
        assert_eq!(r.json.as_array().unwrap().len(), 2);
        assert_eq!(pagination(&r.headers), ["7", "4", "1", "2"]);
        let r = s.get(&s.sak, &tx("?page-size=2&per-page=3")).await;
        assert_eq!(per_page(&r), "3");

        // /wallets: at most 50 (default 100 clamped).
        assert_eq!(per_page(&s.get(&s.sak, "/wallets").await), "50");
        assert_eq!(
            per_page(&s.get(&s.sak, "/wallets?per-page=100").await),
            "50"
        );
        let r = s.get(&s.sak, "/wallets?per-page=1").await;
        assert_eq!(r.json.as_array().unwrap().len(), 1);
        assert_eq!(pagination(&r.headers), ["2", "2", "1", "1"]);

        // /wallet-transactions: default 20, max 50.
        assert_eq!(per_page(&s.get(&s.sak, "/wallet-transactions").await), "20");
        assert_eq!(
            per_page(&s.get(&s.sak, "/wallet-transactions?per-page=51").await),
            "50"
        );
        assert_eq!(
            per_page(&s.get(&s.sak, "/wallet-transactions?per-page=7").await),
            "7"
        );
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn page_beyond_last_is_clamped_to_last_page() {
    on_each_db(|s| async move {
        let (a, _b) = seven_transactions(&s).await;
        let r = s
            .get(
                &s.sak,
                &format!("/wallet/{}/transactions?page=99&per-page=3", a.waka),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(labels(&r.json), ["test"]);
        assert_eq!(pagination(&r.headers), ["7", "3", "3", "3"]);
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// LNbits LNPay funding source (§13c)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lnbits_funding_source_flow() {
    on_each_db(|s| async move {
        let w = s.create_wallet("LNbits").await;
        s.fund(&w, 500).await;
        let sak = s.sak.clone();
        let lnbits = |rb: reqwest::RequestBuilder| {
            rb.header("X-Api-Key", &sak)
                .header("User-Agent", "lnbits/1.0")
        };

        // status(): GET /wallet/{waka}
        let r = s
            .send(lnbits(s.http.get(s.v1(&format!("/wallet/{}", w.waka)))))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["statusType"]["name"], "active");
        assert_eq!(r.json["balance"].as_i64().unwrap() * 1000, 500_000);

        // create_invoice(): amount as a string, memo "" or a description hash.
        let r = s
            .send(
                lnbits(s.http.post(s.v1(&format!("/wallet/{}/invoice", w.waka))))
                    .json(&json!({"num_satoshis": "10", "memo": ""})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let checking_id = r.json["id"].as_str().unwrap().to_owned();
        assert!(checking_id.starts_with("lntx_"));
        let bolt11 = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
        assert_eq!(bolt11.amount(), Some(Msat::from_sats(10).unwrap()));

        let unhashed = "[[\"text/plain\",\"lnbits\"]]";
        let dh = hex::encode(Sha256::digest(unhashed.as_bytes()));
        let r = s
            .send(
                lnbits(s.http.post(s.v1(&format!("/wallet/{}/invoice", w.waka))))
                    .json(&json!({"num_satoshis": "10", "description_hash": dh})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(r.json["id"].as_str().unwrap().starts_with("lntx_"));
        let b = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
        assert_eq!(b.description_hash().map(hex::encode), Some(dh));

        // get_invoice_status(): ?fields=settled, 0 then 1.
        let status = |id: &str| lnbits(s.http.get(s.v1(&format!("/lntx/{id}?fields=settled"))));
        let r = s.send(status(&checking_id)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json, json!({"settled": 0}));
        s.scripted.pay_our_invoice(&bolt11, None).unwrap();
        wait_settled(&s, &checking_id, 1).await;
        assert_eq!(
            s.send(status(&checking_id)).await.json,
            json!({"settled": 1})
        );

        // pay_invoice(): {"payment_request"} only; reads lnTx.id and lnTx.payment_preimage.
        let inv = s.external_invoice(20, "paid by lnbits");
        let r = s
            .send(
                lnbits(s.http.post(s.v1(&format!("/wallet/{}/withdraw", w.waka))))
                    .json(&json!({"payment_request": inv.as_str()})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let pay_id = r.json["lnTx"]["id"].as_str().unwrap().to_owned();
        let preimage = r.json["lnTx"]["payment_preimage"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            hex::encode(Sha256::digest(hex::decode(&preimage).unwrap())),
            inv.payment_hash().to_hex()
        );

        // get_payment_status(): settled, fee_msat, payment_preimage.
        let r = s
            .send(lnbits(s.http.get(s.v1(&format!("/lntx/{pay_id}")))))
            .await;
        assert_eq!(r.json["settled"], 1);
        assert_eq!(r.json["fee_msat"], 0);
        assert_eq!(r.json["payment_preimage"], preimage.as_str());
        assert_eq!(s.send(status(&pay_id)).await.json, json!({"settled": 1}));

        // Errors carry `message` (LNbits reads data["message"]).
        let r = s
            .send(
                lnbits(s.http.post(s.v1(&format!("/wallet/{}/withdraw", w.waka)))).json(
                    &json!({"payment_request": s.external_invoice(100_000, "too big").as_str()}),
                ),
            )
            .await;
        assert_envelope(
            &r,
            StatusCode::BAD_REQUEST,
            "Invoice too large :) Max balance: 490",
        );
        s
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Incoming keysend details (§4.3, §11)
// ---------------------------------------------------------------------------------------------

async fn receive(s: &TestServer, w: &WalletKeys, sats: u64, records: &[(u64, &[u8])]) -> Value {
    let mut cr = CustomRecords::default();
    for (t, v) in records {
        cr.0.insert(*t, v.to_vec());
    }
    s.scripted
        .receive_keysend(Msat::from_sats(sats).unwrap(), cr);
    s.wait_balance_msat(w, i64::try_from(sats * 1000).unwrap())
        .await;
    wait_tx_count(s, w, 1).await[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incoming_keysend_data_tlvs_are_json_decoded() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Podcast").await;
        let wtx = receive(
            &s,
            &w,
            10,
            &[
                (696_969, w.id.as_bytes()),
                (7_629_169, br#"{"podcast":"P","ts":5}"#),
                (55_555_555, br#"{"ad":"x"}"#),
            ],
        )
        .await;
        let expected = json!({"podcast": "P", "ts": 5});
        assert_eq!(wtx["lnTx"]["custom_records"]["7629169"], expected);
        assert_eq!(
            wtx["lnTx"]["custom_records"]["55555555"],
            json!({"ad": "x"})
        );
        assert_eq!(wtx["passThru"]["custom_records"]["7629169"], expected);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incoming_keysend_memo_names_the_routing_tlv() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Podcast").await;
        let wtx = receive(
            &s,
            &w,
            10,
            &[
                (7_629_169, br#"{"podcast":"P"}"#),
                (112_111_100, w.id.as_bytes()),
            ],
        )
        .await;
        let memo = format!("keysend/amp: custom record [112111100] [{}]", w.id);
        assert_eq!(wtx["lnTx"]["memo"], memo.as_str());
        assert_eq!(wtx["user_label"], memo.as_str());
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incoming_keysend_payment_request_is_keysend_amp() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Podcast").await;
        let wtx = receive(&s, &w, 10, &[(696_969, w.id.as_bytes())]).await;
        assert_eq!(wtx["lnTx"]["payment_request"], "keysend/amp");
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_fee_wtx_has_no_lntx() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Fees").await;
        s.fund(&w, 1000).await;
        let inv = s.external_invoice(200, "with fee");
        s.scripted.script(
            inv.payment_hash(),
            satchel_scripted::Script::Succeed {
                fee: Msat::from_msat(1500).unwrap(),
            },
        );
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", w.waka),
                json!({"payment_request": inv.as_str()}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let txs = wait_tx_count(&s, &w, 3).await;
        assert_eq!(txs[0]["wtxType"]["name"], "network_fee");
        assert_eq!(txs[0]["num_satoshis"], -2);
        assert_eq!(txs[0]["lnTx"], Value::Null, "{}", txs[0]);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keysend_custom_record_values_must_be_strings() {
    // Satchel's rule (issue 2): values are strings; LNPay silently JSON-encoded objects.
    on_each_db(|s| async move {
        let w = s.create_wallet("Streamer").await;
        s.fund(&w, 100).await;
        let carol = s.scripted.external_pubkey().to_hex();
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/keysend", w.waka),
                json!({
                    "dest_pubkey": carol,
                    "num_satoshis": 1,
                    "custom_records": { "7629169": { "podcast": "P", "ts": 5 } }
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "custom_records value of 7629169 must be a string."
        );
        assert_eq!(s.balance(&w).await, 100);
        s
    })
    .await;
}
