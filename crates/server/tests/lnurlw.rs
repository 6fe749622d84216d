//! LNURL-withdraw (LNPay §6.1–6.3, LUD-03) over the HTTP API, on SQLite and Postgres: link
//! creation and its permissions, the public `lnurl-process` endpoint (offer, callback, errors),
//! one-time links paying at most once (also under two racing callbacks), links surviving a
//! restart, and URLs built only from `public_url`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{TestServer, WalletKeys, test_service_config};
use reqwest::StatusCode;
use satchel_domain::{Bolt11, Msat, decode_lnurl};
use satchel_service::ServiceConfig;
use satchel_service::lnurlw::PublicUrl;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

const PUBLIC: &str = "https://pay.example.com";
/// A mainnet invoice from the LNPay docs; our node runs on regtest.
const MAINNET_DOC_INVOICE: &str = "lnbc10n1p09yafzpp5ens55wl8pfm6n2222pyyxjhx9rwcj4zl8pcyhsr2qzlklke4qfvsdq423jhxapqvehhygzyfap4xxqyz5vqcqzyssp52vyh6djmjt644fygwr54cs9vv82d2zc67tmkeun3c40ypzrvqe4srzjqt0pr36g7ke9elfvaqq3wmfey6laun0z8v0lg0nf9fdhdncxsp0y5zxkp5qqnsgqqqqqqqqqqqqq05qqrc9qy9qsqq3a4p9tvmy3sf7h2mlfpd5rcdldsyaksf8e0rk09yxtzvhcyzjrsg2janexechmzaqmnz9c7de04et7jkhmvkkjdnzn3txnz2a204ucplr595s";

fn cfg() -> ServiceConfig {
    ServiceConfig {
        public_url: Some(PublicUrl::parse(PUBLIC).unwrap()),
        ..test_service_config()
    }
}

async fn on_each_db_with<F, Fut>(cfg: fn() -> ServiceConfig, f: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: std::future::Future<Output = TestServer>,
{
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let srv = TestServer::start_with(db, cfg()).await;
        let srv = f(srv).await;
        srv.assert_audit_clean().await;
        srv.stop().await;
    }
}

/// `GET {path}` with `key` as X-Api-Key.
async fn create(s: &TestServer, key: &str, path: &str) -> common::Resp {
    s.get(key, path).await
}

/// The URL inside an LNURL, pointed at the test server instead of `public_url` (what a wallet
/// would reach through the operator's proxy).
fn local(s: &TestServer, url: &str) -> String {
    assert!(
        url.starts_with(PUBLIC),
        "{url} is not built from public_url"
    );
    format!("{}{}", s.base, &url[PUBLIC.len()..])
}

async fn fetch(s: &TestServer, url: &str) -> common::Resp {
    s.send(s.http.get(url)).await
}

/// Creates a one-time link (sak + waka); returns (lnurl, ott, decoded URL).
async fn once(s: &TestServer, w: &WalletKeys, query: &str) -> (String, String, String) {
    let r = create(
        s,
        &s.sak,
        &format!("/wallet/{}/lnurl/withdraw{query}", w.waka),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let lnurl = r.json["lnurl"].as_str().unwrap().to_owned();
    let ott = r.json["ott"].as_str().unwrap().to_owned();
    let url = decode_lnurl(&lnurl).unwrap();
    (lnurl, ott, url)
}

/// Scans a link: the LUD-03 offer.
async fn scan(s: &TestServer, url: &str) -> Value {
    let r = fetch(s, &local(s, url)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

/// The callback URL with `k1` and `pr`.
fn callback(s: &TestServer, offer: &Value, pr: &str) -> String {
    let cb = offer["callback"].as_str().unwrap();
    let sep = if cb.contains('?') { '&' } else { '?' };
    format!(
        "{}{sep}k1={}&pr={pr}",
        local(s, cb),
        offer["k1"].as_str().unwrap()
    )
}

async fn submit(s: &TestServer, offer: &Value, pr: &str) -> common::Resp {
    fetch(s, &callback(s, offer, pr)).await
}

fn ok(r: &common::Resp) {
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json, json!({"status": "OK"}));
}

fn error(r: &common::Resp, reason_part: &str) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "ERROR", "{}", r.text);
    let reason = r.json["reason"].as_str().unwrap();
    assert!(
        reason.contains(reason_part),
        "{reason:?} lacks {reason_part:?}"
    );
    assert_eq!(r.json.as_object().unwrap().len(), 2, "{}", r.text);
}

/// The wallet's `ln_withdrawal` WTXs.
async fn withdrawals(s: &TestServer, w: &WalletKeys) -> Vec<Value> {
    let r = s
        .get(&s.sak, &format!("/wallet/{}/transactions", w.id))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["wtxType"]["name"] == "ln_withdrawal")
        .cloned()
        .collect()
}

fn keys_of(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn one_time_link_shapes_payout_and_second_use() {
    on_each_db_with(cfg, |s| async move {
        let w = s.create_wallet("lnurlw").await;
        s.fund(&w, 10_000).await;
        let pass = base64::engine::general_purpose::STANDARD.encode(r#"{"order":"A-1"}"#);
        let (lnurl, ott, url) = once(
            &s,
            &w,
            &format!("?num_satoshis=1000&memo=Prize&passThru={pass}"),
        )
        .await;
        // LUD-01: bech32, hrp lnurl, upper case; the URL is public_url + the link's path.
        assert!(lnurl.starts_with("LNURL1"), "{lnurl}");
        assert_eq!(lnurl, lnurl.to_uppercase());
        let prefix = format!("{PUBLIC}/v1/wallet/lnurlw_");
        assert!(url.starts_with(&prefix), "{url}");
        let id = url[PUBLIC.len() + "/v1/wallet/".len()..]
            .split('/')
            .next()
            .unwrap();
        assert_eq!(
            url,
            format!("{PUBLIC}/v1/wallet/{id}/lnurl-process?tag=withdraw&ott={ott}")
        );
        // No wallet key of any kind in the link.
        for k in [&w.waka, &w.waklw, &w.wakr, &w.waki, &w.id] {
            assert!(!url.contains(k.as_str()));
        }
        assert_eq!(ott.len(), 24);

        let offer = scan(&s, &url).await;
        assert_eq!(
            keys_of(&offer),
            [
                "callback",
                "k1",
                "maxWithdrawable",
                "defaultDescription",
                "minWithdrawable",
                "tag"
            ]
        );
        assert_eq!(offer["tag"], "withdrawRequest");
        assert_eq!(offer["maxWithdrawable"], 1_000_000);
        assert_eq!(offer["minWithdrawable"], 1_000_000);
        assert_eq!(offer["defaultDescription"], "Prize");
        assert_eq!(
            offer["callback"],
            format!("{PUBLIC}/v1/wallet/{id}/lnurl-process?ott={ott}")
        );
        assert_eq!(offer["k1"].as_str().unwrap().len(), 64);
        // Scanning twice changes nothing.
        assert_eq!(scan(&s, &url).await, offer);

        let inv = s.external_invoice(1000, "carol");
        ok(&submit(&s, &offer, inv.as_str()).await);
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 1);
        assert_eq!(s.balance(&w).await, 9_000);
        let wd = withdrawals(&s, &w).await;
        assert_eq!(wd.len(), 1);
        assert_eq!(wd[0]["num_satoshis"], -1000);
        assert_eq!(wd[0]["lnTx"]["payment_request"], inv.as_str());
        let pt = &wd[0]["passThru"];
        assert_eq!(pt["order"], "A-1");
        assert_eq!(pt["method"], "lnurl");
        assert_eq!(pt["ott"], ott.as_str());
        assert_eq!(pt["k1"], offer["k1"]);

        // The wallet retrying the same callback is told OK again; nothing more is paid.
        ok(&submit(&s, &offer, inv.as_str()).await);
        // A second use, scan or callback, is refused.
        let r = fetch(&s, &local(&s, &url)).await;
        error(&r, "already been used");
        let inv2 = s.external_invoice(1000, "carol again");
        error(
            &submit(&s, &offer, inv2.as_str()).await,
            "already been used",
        );
        assert_eq!(s.scripted.pay_count(inv2.payment_hash()), 0);
        assert_eq!(s.balance(&w).await, 9_000);
        assert_eq!(withdrawals(&s, &w).await.len(), 1);
        s
    })
    .await;
}

#[tokio::test]
async fn callback_errors_write_nothing() {
    on_each_db_with(cfg, |s| async move {
        let w = s.create_wallet("lnurlw").await;
        s.fund(&w, 5_000).await;
        let (_, ott, url) = once(&s, &w, "?num_satoshis=1000").await;
        let offer = scan(&s, &url).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let cases: Vec<(String, &str)> = vec![
            ("lnbc1garbage".into(), "invalid payment request"),
            (MAINNET_DOC_INVOICE.into(), "invoice is for bitcoin"),
            (
                s.external_invoice(999, "less").as_str().into(),
                "is not the 1000000 msat",
            ),
            (
                s.external_invoice(1001, "more").as_str().into(),
                "is not the 1000000 msat",
            ),
            (
                s.external_invoice(0, "any").as_str().into(),
                "Cannot process any amount invoices",
            ),
            (
                s.scripted
                    .external_invoice_at(
                        Some(Msat::from_sats(1000).unwrap()),
                        "old",
                        now - 7200,
                        60,
                    )
                    .as_str()
                    .into(),
                "invoice expired",
            ),
        ];
        for (pr, reason) in &cases {
            error(&submit(&s, &offer, pr).await, reason);
        }
        // Wrong k1, missing k1, wrong or missing ott, another link's id.
        let inv = s.external_invoice(1000, "ok");
        let cb = local(&s, offer["callback"].as_str().unwrap());
        error(
            &fetch(&s, &format!("{cb}&k1=00&pr={}", inv.as_str())).await,
            "Invalid k1",
        );
        error(
            &fetch(&s, &format!("{cb}&pr={}", inv.as_str())).await,
            "Invalid k1",
        );
        let wrong_ott = cb.replace(&ott, "x".repeat(24).as_str());
        error(
            &fetch(
                &s,
                &format!(
                    "{wrong_ott}&k1={}&pr={}",
                    offer["k1"].as_str().unwrap(),
                    inv.as_str()
                ),
            )
            .await,
            "no longer valid",
        );
        let no_ott = cb.split('?').next().unwrap().to_owned();
        error(&fetch(&s, &no_ott).await, "no longer valid");
        let (_, _, other) = once(&s, &w, "?num_satoshis=5").await;
        let other_id = other[PUBLIC.len() + "/v1/wallet/".len()..]
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let swapped = local(&s, &url).replace(
            url[PUBLIC.len() + "/v1/wallet/".len()..]
                .split('/')
                .next()
                .unwrap(),
            &other_id,
        );
        error(&fetch(&s, &swapped).await, "no longer valid");
        assert_eq!(s.balance(&w).await, 5_000);
        assert!(withdrawals(&s, &w).await.is_empty());
        // After all that the link still pays, once.
        ok(&submit(&s, &offer, inv.as_str()).await);
        assert_eq!(s.balance(&w).await, 4_000);
        // A link larger than the spendable balance is refused at scan time.
        let (_, _, big) = once(&s, &w, "?num_satoshis=4000").await;
        error(&fetch(&s, &local(&s, &big)).await, "balance is too low");
        s
    })
    .await;
}

#[tokio::test]
async fn whole_balance_link_and_static_link() {
    on_each_db_with(cfg, |s| async move {
        let w = s.create_wallet("lnurlw").await;
        s.fund(&w, 2_100).await;
        // No amount: the spendable balance (amount + 5% fee limit fits): 2000 sats.
        let (_, _, url) = once(&s, &w, "").await;
        let offer = scan(&s, &url).await;
        assert_eq!(offer["maxWithdrawable"], 2_000_000);
        assert_eq!(offer["minWithdrawable"], 2_000_000);
        assert_eq!(offer["defaultDescription"], "LNPAY Wallet Withdraw");
        // Asking more than the wallet covers is refused by the reserve (nothing written).
        let inv = s.external_invoice(2_050, "too much");
        error(&submit(&s, &offer, inv.as_str()).await, "Invoice too large");
        let inv = s.external_invoice(1_500, "part");
        ok(&submit(&s, &offer, inv.as_str()).await);
        assert_eq!(s.balance(&w).await, 600);

        // Static: waka only, reusable, {"lnurl"} only, no ott in the payout's passThru.
        let r = create(
            &s,
            &s.sak,
            &format!("/wallet/{}/lnurl/withdraw-static?num_satoshis=100", w.waka),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(keys_of(&r.json), ["lnurl"]);
        let url = decode_lnurl(r.json["lnurl"].as_str().unwrap()).unwrap();
        for i in 0..2 {
            let offer = scan(&s, &url).await;
            assert_eq!(offer["maxWithdrawable"], 100_000);
            let inv = s.external_invoice(100, &format!("static {i}"));
            ok(&submit(&s, &offer, inv.as_str()).await);
        }
        assert_eq!(s.balance(&w).await, 400);
        let wd = withdrawals(&s, &w).await;
        assert_eq!(wd.len(), 3);
        assert!(
            wd[0]["passThru"].get("ott").is_none(),
            "{}",
            wd[0]["passThru"]
        );
        assert_eq!(wd[0]["passThru"]["method"], "lnurl");
        s
    })
    .await;
}

#[tokio::test]
async fn create_parameters_and_permissions() {
    on_each_db_with(cfg, |s| async move {
        let w = s.create_wallet("perm").await;
        let path = |key: &str, kind: &str| format!("/wallet/{key}/lnurl/{kind}?num_satoshis=10");
        // pak + each wallet key: one-time links need wallet_withdraw, static ones Wallet Admin.
        let roles: [(&str, &str, bool, bool); 7] = [
            ("waka", &w.waka, true, true),
            ("waki", &w.waki, false, false),
            ("wakr", &w.wakr, false, false),
            ("waklw", &w.waklw, true, false),
            ("waklp", &w.waklp, false, false),
            ("wakewa", &w.wakewa, true, false),
            ("wakewv", &w.wakewv, false, false),
        ];
        for (prefix, key, once_ok, static_ok) in roles {
            let r = create(&s, &s.pak, &path(key, "withdraw")).await;
            if once_ok {
                assert_eq!(r.status, StatusCode::OK, "{prefix}: {}", r.text);
            } else {
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{prefix}: {}", r.text);
                assert_eq!(
                    r.json["message"],
                    format!("{prefix}_ access key provided does not permission to do this: wallet_withdraw")
                );
            }
            let r = create(&s, &s.pak, &path(key, "withdraw-static")).await;
            if static_ok {
                assert_eq!(r.status, StatusCode::OK, "{prefix}: {}", r.text);
            } else {
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{prefix}: {}", r.text);
                let m = r.json["message"].as_str().unwrap();
                assert!(m.starts_with(&format!("{prefix}_ access key provided does not permission to do this:")), "{m}");
            }
        }
        // sak with the wallet id; pak with the wallet id; no key; a wallet key as API key.
        for kind in ["withdraw", "withdraw-static"] {
            assert_eq!(create(&s, &s.sak, &path(&w.id, kind)).await.status, StatusCode::OK);
            let r = create(&s, &s.pak, &path(&w.id, kind)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert!(r.json["message"].as_str().unwrap().starts_with("Invalid Wallet Access Key"));
            let r = s.send(s.http.get(s.v1(&path(&w.waka, kind)))).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            let r = create(&s, &w.waka, &path(&w.waka, kind)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
        // Bad parameters: LNPay envelope, 400, nothing stored.
        for (q, msg) in [
            ("?num_satoshis=-1", "Num Satoshis must be no less than 0."),
            ("?num_satoshis=abc", "Num Satoshis must be an integer."),
            ("?passThru=%25%25", "passThru must be base64-encoded JSON"),
            ("?passThru=WzFd", "passThru must be base64-encoded JSON"),
        ] {
            let r = create(&s, &s.sak, &format!("/wallet/{}/lnurl/withdraw{q}", w.waka)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text);
            assert_eq!(r.json["message"], msg, "{q}");
        }
        let long = "m".repeat(640);
        let r = create(&s, &s.sak, &format!("/wallet/{}/lnurl/withdraw?memo={long}", w.waka)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        // Unknown link id on lnurl-process: LUD-03 error, not the envelope.
        let r = fetch(&s, &s.v1("/wallet/lnurlw_nope/lnurl-process?ott=abc")).await;
        error(&r, "no longer valid");
        s
    })
    .await;
}

#[tokio::test]
async fn without_public_url_lnurl_is_disabled() {
    on_each_db_with(test_service_config, |s| async move {
        let w = s.create_wallet("off").await;
        let r = create(&s, &s.sak, &format!("/wallet/{}/lnurl/withdraw", w.waka)).await;
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{}", r.text);
        let mut body = r.json.clone();
        let id = body.as_object_mut().unwrap().remove("request_id");
        assert!(id.is_some_and(|v| v.is_string()), "{}", r.text);
        assert_eq!(
            body,
            json!({"name": "Not Implemented", "message": "LNURL is not enabled on this server: the operator has not configured public_url.", "code": 0, "status": 501})
        );
        // Permissions are still judged first.
        let r = create(&s, &s.pak, &format!("/wallet/{}/lnurl/withdraw", w.waki)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = fetch(&s, &s.v1("/wallet/lnurlw_x/lnurl-process?ott=abc")).await;
        error(&r, "LNURL is not enabled");
        s
    })
    .await;
}

#[tokio::test]
async fn expired_link_is_refused() {
    fn short() -> ServiceConfig {
        ServiceConfig {
            lnurlw_expiry: Duration::from_secs(1),
            ..cfg()
        }
    }
    on_each_db_with(short, |s| async move {
        let w = s.create_wallet("exp").await;
        s.fund(&w, 1_000).await;
        let (_, _, url) = once(&s, &w, "?num_satoshis=10").await;
        let offer = scan(&s, &url).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        error(&fetch(&s, &local(&s, &url)).await, "expired");
        let inv = s.external_invoice(10, "late");
        error(&submit(&s, &offer, inv.as_str()).await, "expired");
        assert_eq!(s.scripted.pay_count(inv.payment_hash()), 0);
        assert_eq!(s.balance(&w).await, 1_000);
        s
    })
    .await;
}

#[tokio::test]
async fn link_survives_restart() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = TestServer::start_with(db, cfg()).await;
        let w = s.create_wallet("restart").await;
        s.fund(&w, 1_000).await;
        let (_, _, url) = once(&s, &w, "?num_satoshis=100").await;
        let (scripted, sak) = (s.scripted.clone(), s.sak.clone());
        let db = s.stop().await;
        let mut s = TestServer::start_on(db, cfg(), scripted).await;
        s.sak = sak;
        let offer = scan(&s, &url).await;
        assert_eq!(offer["maxWithdrawable"], 100_000);
        let inv = s.external_invoice(100, "after restart");
        ok(&submit(&s, &offer, inv.as_str()).await);
        assert_eq!(s.balance(&w).await, 900);
        // Spent state survives a restart too.
        let scripted = s.scripted.clone();
        let db = s.stop().await;
        let s = TestServer::start_on(db, cfg(), scripted).await;
        error(&fetch(&s, &local(&s, &url)).await, "already been used");
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn racing_callbacks_pay_once() {
    on_each_db_with(cfg, |s| async move {
        let w = s.create_wallet("race").await;
        s.fund(&w, 10_000).await;
        for round in 0..5 {
            let (_, _, url) = once(&s, &w, "?num_satoshis=100").await;
            let offer = scan(&s, &url).await;
            // Two wallets scanned the same QR code and call back at once with their invoices;
            // on odd rounds one of them is an invoice of our own node (internal settlement).
            let a = s.external_invoice(100, "wallet A");
            let b: Bolt11 = if round % 2 == 1 {
                let other = s.create_wallet(&format!("payee {round}")).await;
                Bolt11::parse(
                    s.invoice(&other, 100).await["payment_request"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap()
            } else {
                s.external_invoice(100, "wallet B")
            };
            let (ra, rb) = tokio::join!(
                submit(&s, &offer, a.as_str()),
                submit(&s, &offer, b.as_str())
            );
            let oks = [&ra, &rb]
                .iter()
                .filter(|r| r.status == StatusCode::CREATED)
                .count();
            assert_eq!(oks, 1, "round {round}: {} / {}", ra.text, rb.text);
            let loser = if ra.status == StatusCode::CREATED {
                &rb
            } else {
                &ra
            };
            error(loser, "already been used");
            let paid_out =
                s.scripted.pay_count(a.payment_hash()) + s.scripted.pay_count(b.payment_hash());
            assert!(paid_out <= 1, "round {round}: node paid {paid_out} times");
            assert_eq!(withdrawals(&s, &w).await.len(), round + 1, "round {round}");
            assert_eq!(
                s.balance(&w).await,
                10_000 - 100 * (i64::try_from(round).unwrap() + 1)
            );
        }
        s
    })
    .await;
}

/// Our LNURL and LUD-03 answers as a third-party implementation reads them: the LNbits team's
/// `lnurl` package (PyPI). Skipped with a message when python3 or the package is missing, except
/// in CI (`CI=true`), where `.ci/run` installs it and the check must run.
#[tokio::test]
async fn third_party_lnurl_accepts_our_answers() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lnurl/check_lnurlw.py");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import lnurl"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the third-party LNURL check: python3 with PyPI `lnurl` is missing"
        );
        eprintln!(
            "SKIPPED: python3 with the PyPI `lnurl` package is not installed (pip install lnurl)"
        );
        return;
    }
    on_each_db_with(cfg, |s| async move {
        let w = s.create_wallet("3rd party").await;
        s.fund(&w, 1_000).await;
        let (lnurl, _, url) = once(&s, &w, "?num_satoshis=100&memo=Third%20party").await;
        let offer = scan(&s, &url).await;
        let inv = s.external_invoice(100, "ok");
        let okr = submit(&s, &offer, inv.as_str()).await;
        ok(&okr);
        let err = submit(&s, &offer, s.external_invoice(100, "again").as_str()).await;
        error(&err, "already been used");
        let out = std::process::Command::new("python3")
            .args([
                script,
                &lnurl,
                &url,
                &offer.to_string(),
                &okr.text,
                &err.text,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python lnurl refused our answers:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        s
    })
    .await;
}

#[tokio::test]
async fn failed_payout_reopens_the_link() {
    on_each_db_with(cfg, |s| async move {
        let w = s.create_wallet("reopen").await;
        s.fund(&w, 1_000).await;
        let (_, _, url) = once(&s, &w, "?num_satoshis=100").await;
        let offer = scan(&s, &url).await;
        let bad = s.external_invoice(100, "no route");
        s.scripted.script(
            bad.payment_hash(),
            satchel_scripted::Script::Fail(satchel_domain::FailureReason::NoRoute),
        );
        error(
            &submit(&s, &offer, bad.as_str()).await,
            "FAILURE_REASON_NO_ROUTE",
        );
        assert_eq!(s.balance(&w).await, 1_000);
        // The node proved the payment failed and it was refunded: the link may be used again.
        let offer = scan(&s, &url).await;
        let good = s.external_invoice(100, "works");
        ok(&submit(&s, &offer, good.as_str()).await);
        assert_eq!(s.balance(&w).await, 900);
        error(&fetch(&s, &local(&s, &url)).await, "already been used");
        s
    })
    .await;
}

mod devnet_server;

/// Issue 18: LNURL-withdraw end to end over the LDK devnet. A link is made and scanned, carol's
/// invoice is submitted to the callback and paid through the hub; the second use is refused;
/// two simultaneous uses of another link pay once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_time_link_over_the_devnet() {
    use satchel_lightning::{InvoiceState, Invoices as _};
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let server = devnet_server::DevnetServer::start(&db, cfg()).await;
        let s = &server;
        let carol = s.devnet.peer("carol").unwrap();
        let w = s.create_wallet("devnet LNURL-withdraw").await;
        s.fund(&w, 20_000).await;
        let to_local = |url: &str| {
            assert!(url.starts_with(PUBLIC), "{url}");
            format!("{}{}", s.base, &url[PUBLIC.len()..])
        };
        let make = || async {
            let r = s
                .get(&format!(
                    "/v1/wallet/{}/lnurl/withdraw?num_satoshis=1000",
                    w.waka
                ))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            decode_lnurl(r.json["lnurl"].as_str().unwrap()).unwrap()
        };
        let scan = |url: String| {
            let local = to_local(&url);
            async move {
                let r = s.send(s.http.get(local)).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                assert_eq!(r.json["tag"], "withdrawRequest", "{}", r.text);
                r.json
            }
        };
        let submit_url = |offer: &Value, pr: &str| {
            let cb = offer["callback"].as_str().unwrap();
            let sep = if cb.contains('?') { '&' } else { '?' };
            format!(
                "{}{sep}k1={}&pr={pr}",
                to_local(cb),
                offer["k1"].as_str().unwrap()
            )
        };

        // Made, scanned, carol's invoice submitted and paid.
        let offer = scan(make().await).await;
        assert_eq!(offer["maxWithdrawable"], 1_000_000);
        let inv = s.carol_invoice(1_000, "lnurlw over devnet").await;
        let r = s.send(s.http.get(submit_url(&offer, inv.as_str()))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json, json!({"status": "OK"}));
        // 1000 sats + the hub's 2000 msat fee (1000 + 1000 ppm), rounded up to the sat.
        s.wait_balance_msat(&w, 20_000_000 - 1_000_000 - 2_000)
            .await;
        assert!(matches!(
            carol.lookup_invoice(inv.payment_hash()).await.unwrap(),
            Some(InvoiceState::Settled { amount_received, .. })
                if amount_received.as_msat() == 1_000_000
        ));

        // The second use is refused, and pays nothing.
        let again = s.carol_invoice(1_000, "second use").await;
        let r = s.send(s.http.get(submit_url(&offer, again.as_str()))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "ERROR", "{}", r.text);
        assert!(
            r.json["reason"]
                .as_str()
                .unwrap()
                .contains("already been used"),
            "{}",
            r.text
        );
        assert_eq!(
            carol.lookup_invoice(again.payment_hash()).await.unwrap(),
            Some(InvoiceState::Open)
        );

        // Two simultaneous uses of a fresh link: one pays, the other is refused.
        let offer = scan(make().await).await;
        let a = s.carol_invoice(1_000, "race A").await;
        let b = s.carol_invoice(1_000, "race B").await;
        let (ra, rb) = tokio::join!(
            s.send(s.http.get(submit_url(&offer, a.as_str()))),
            s.send(s.http.get(submit_url(&offer, b.as_str())))
        );
        let oks = [&ra, &rb]
            .iter()
            .filter(|r| r.status == StatusCode::CREATED)
            .count();
        assert_eq!(oks, 1, "{} / {}", ra.text, rb.text);
        let settled = |st: Option<InvoiceState>| matches!(st, Some(InvoiceState::Settled { .. }));
        let paid = [
            settled(carol.lookup_invoice(a.payment_hash()).await.unwrap()),
            settled(carol.lookup_invoice(b.payment_hash()).await.unwrap()),
        ];
        // The winner's payment may still be completing after the OK (LUD-03 allows it).
        s.wait_balance_msat(&w, 20_000_000 - 2 * 1_002_000).await;
        let paid_after = [
            settled(carol.lookup_invoice(a.payment_hash()).await.unwrap()),
            settled(carol.lookup_invoice(b.payment_hash()).await.unwrap()),
        ];
        assert_eq!(
            paid_after.iter().filter(|p| **p).count(),
            1,
            "carol was paid {paid:?} then {paid_after:?}"
        );
        server.stop().await;
    }
}
