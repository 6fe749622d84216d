//! LNURL-pay receiving and Lightning Addresses (LNPay §4.6, §6.4; LUD-06/12/16/21) and keysend
//! addresses over the HTTP API, on SQLite and Postgres: link CRUD, validation and permissions,
//! the default link of new wallets, the public payRequest / callback / well-known / verify
//! endpoints, an invoice paid from outside booked as `ln_lnurl_pay_inbound`, its description
//! hash, internal payment of such an invoice, keysend addresses routing to their own wallets,
//! and everything surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, WalletKeys, test_service_config};
use reqwest::StatusCode;
use satchel_domain::{Bolt11, CustomRecords, Msat, decode_lnurl};
use satchel_service::ServiceConfig;
use satchel_service::lnurlw::PublicUrl;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PUBLIC: &str = "https://pay.example.com";

fn cfg() -> ServiceConfig {
    ServiceConfig {
        public_url: Some(PublicUrl::parse(PUBLIC).unwrap()),
        ..test_service_config()
    }
}

async fn on_each_db<F, Fut>(f: F)
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

/// A URL built from `public_url`, pointed at the test server.
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

async fn well_known(s: &TestServer, kind: &str, name: &str) -> common::Resp {
    fetch(s, &format!("{}/.well-known/{kind}/{name}", s.base)).await
}

async fn make_link(s: &TestServer, w: &WalletKeys, body: Value) -> Value {
    let r = s
        .post(&s.sak, &format!("/wallet/{}/lnurlp", w.waka), body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

async fn callback(s: &TestServer, offer: &Value, query: &str) -> Value {
    let cb = local(s, offer["callback"].as_str().unwrap());
    let sep = if cb.contains('?') { '&' } else { '?' };
    let r = fetch(s, &format!("{cb}{sep}{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json
}

fn lud_error(v: &Value) -> &str {
    assert_eq!(v["status"], "ERROR", "{v}");
    v["reason"].as_str().unwrap()
}

fn bad(r: &common::Resp, msg: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["message"], msg, "{}", r.text);
}

#[tokio::test]
async fn new_wallets_get_a_default_link() {
    on_each_db(|s| async move {
        let w = s.create_wallet("Tips jar").await;
        let r = s.get(&s.sak, &format!("/wallet/{}", w.waka)).await;
        let id = r.json["default_lnurlpay_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("lnurlp_"), "{id}");
        let r = s.get(&s.pak, &format!("/lnurlp/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let l = &r.json;
        assert_eq!(l["wallet_id"], w.id.as_str());
        assert_eq!(l["user_label"], "LNURL-pay Tips jar");
        assert_eq!(l["lnurlp_short_desc"], "Tips jar");
        assert_eq!(l["lnurlp_minSendable_msat"], 1000);
        assert_eq!(l["lnurlp_maxSendable_msat"], 100_000_000);
        assert_eq!(l["lnurlp_identifier"], Value::Null);
        assert_eq!(l["statusType"]["name"], "lnurl_active");
        let url = l["lnurl_decoded"].as_str().unwrap();
        assert_eq!(url, format!("{PUBLIC}/v1/wallet/{id}/lnurlp/{id}"));
        assert_eq!(
            decode_lnurl(l["lnurl_encoded"].as_str().unwrap()).unwrap(),
            url
        );
        s
    })
    .await;
    // Without public_url LNURL is off: no default link, and links cannot be made.
    for (_, db) in TestDb::all().await {
        let s = TestServer::start_with(db, test_service_config()).await;
        let w = s.create_wallet("plain").await;
        let r = s.get(&s.sak, &format!("/wallet/{}", w.waka)).await;
        assert_eq!(r.json["default_lnurlpay_id"], Value::Null);
        let r = s
            .post(&s.sak, &format!("/wallet/{}/lnurlp", w.waka), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{}", r.text);
        let r = well_known(&s, "lnurlp", "x").await;
        assert_eq!(r.status, StatusCode::OK);
        lud_error(&r.json);
        s.stop().await;
    }
}

#[tokio::test]
async fn create_update_and_validation() {
    on_each_db(|s| async move {
        let w = s.create_wallet("addr").await;
        let l = make_link(
            &s,
            &w,
            json!({"lnurlp_identifier": "Bob.Tips", "lnurlp_short_desc": "Tips for Bob",
                   "lnurlp_minSendable_msat": 2000, "lnurlp_maxSendable_msat": "5000000",
                   "lnurlp_commentAllowed": 100, "user_label": "bob"}),
        )
        .await;
        assert_eq!(l["lnurlp_identifier"], "bob.tips");
        assert_eq!(l["lightning_address"], "bob.tips@pay.example.com");
        assert_eq!(l["lnurlp_minSendable_msat"], 2000);
        assert_eq!(l["lnurlp_maxSendable_msat"], 5_000_000);
        assert_eq!(l["lnurlp_commentAllowed"], 100);
        assert_eq!(l["custyDomain"], Value::Null);
        let id = l["id"].as_str().unwrap().to_owned();

        // Validation: clear 400s, nothing written.
        let p = format!("/wallet/{}/lnurlp", w.waka);
        let cases = [
            (json!({"lnurlp_identifier": "BOB.tips"}), "Lnurlp Identifier \"bob.tips\" has already been taken."),
            (json!({"lnurlp_identifier": "Admin"}), "Lnurlp Identifier \"admin\" is reserved."),
            (json!({"lnurlp_identifier": "lnurlp_x"}), "Lnurlp Identifier \"lnurlp_x\" is reserved."),
            (json!({"lnurlp_identifier": "a b"}), "Lnurlp Identifier may contain only letters a-z, digits, '.', '-' and '_'."),
            (json!({"lnurlp_identifier": "x".repeat(65)}), "Lnurlp Identifier should contain at most 64 characters."),
            (json!({"lnurlp_minSendable_msat": 999}), "Lnurlp Min Sendable Msat must be greater than or equal to \"1000\"."),
            (json!({"lnurlp_minSendable_msat": 5000, "lnurlp_maxSendable_msat": 4000}), "Lnurlp Max Sendable Msat must be greater than or equal to \"Lnurlp Min Sendable Msat\"."),
            (json!({"lnurlp_minSendable_msat": -1}), "Lnurlp Min Sendable Msat must be no less than 0."),
            (json!({"lnurlp_commentAllowed": 640}), "Lnurlp Comment Allowed must be no greater than 639."),
            (json!({"lnurlp_short_desc": "d".repeat(256)}), "Lnurlp Short Desc should contain at most 255 characters."),
            (json!({"lnurlp_short_desc": " "}), "Lnurlp Short Desc cannot be blank."),
            (json!({"custy_domain_id": "cdom_abc"}), "Invalid custy_domain_id"),
        ];
        for (body, msg) in cases {
            bad(&s.post(&s.sak, &p, body).await, msg);
        }

        // Update (sak only), through each method; fields left out keep their value.
        let r = s
            .post(&s.sak, &format!("/lnurlp/{id}"), json!({"lnurlp_short_desc": "New desc"}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["lnurlp_short_desc"], "New desc");
        assert_eq!(r.json["lnurlp_identifier"], "bob.tips");
        assert_eq!(r.json["lnurlp_minSendable_msat"], 2000);
        let r = s
            .send(
                s.http
                    .put(s.v1(&format!("/lnurlp/{id}")))
                    .header("X-Api-Key", &s.sak)
                    .json(&json!({"identifier": "robert"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["lightning_address"], "robert@pay.example.com");
        let r = s
            .send(
                s.http
                    .patch(s.v1(&format!("/lnurlp/{id}")))
                    .header("X-Api-Key", &s.sak)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body("status=lnurl_inactive"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["statusType"]["name"], "lnurl_inactive");
        assert_eq!(r.json["statusType"]["display_name"], "LNURL Inactive");
        // The old name is free again; the inactive link answers nothing.
        make_link(&s, &w, json!({"lnurlp_identifier": "bob.tips"})).await;
        let r = well_known(&s, "lnurlp", "robert").await;
        lud_error(&r.json);
        bad(
            &s.post(&s.sak, &format!("/lnurlp/{id}"), json!({"status": "on"})).await,
            "Status must be lnurl_active or lnurl_inactive.",
        );
        bad(
            &s.post(&s.sak, &format!("/lnurlp/{id}"), json!({"lnurlp_identifier": "BOB.TIPS"}))
                .await,
            "Lnurlp Identifier \"bob.tips\" has already been taken.",
        );

        // Permissions: update is sak-only; reads are the account's own.
        let r = s
            .post(&s.pak, &format!("/lnurlp/{id}"), json!({"user_label": "x"}))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "This resource can only be access with secret access key."
        );
        let r = s.get(&s.sak, "/lnurlp/lnurlp_unknown").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        assert_eq!(r.json["message"], "Unknown lnurlpay id");
        let other = satchel_service::wallets::create_account(&s.running().store, "other")
            .await
            .unwrap();
        let r = s.get(other.secret_key.expose(), &format!("/lnurlp/{id}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let r = s
            .post(&s.pak, &format!("/wallet/{}/lnurlp", w.waki), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "waki_ access key provided does not permission to do this: Wallet Admin"
        );
        let r = s
            .post(&s.pak, &format!("/wallet/{}/lnurlp", w.waka), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["lnurlp_short_desc"], "LNURL PAY (via Satchel)");
        s
    })
    .await;
}

/// The payRequest, its callback, the invoice's description hash, the payment from outside
/// booked as `ln_lnurl_pay_inbound`, LUD-21 verify, and all of it after a restart.
#[tokio::test]
async fn pay_from_outside_credits_lnurl_pay_inbound() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = TestServer::start_with(db, cfg()).await;
        let w = s.create_wallet("payee").await;
        let l = make_link(
            &s,
            &w,
            json!({"lnurlp_identifier": "carol", "lnurlp_short_desc": "Pay Carol",
                   "lnurlp_commentAllowed": 10, "lnurlp_maxSendable_msat": 50_000_000}),
        )
        .await;
        let url = l["lnurl_decoded"].as_str().unwrap().to_owned();
        let offer = fetch(&s, &local(&s, &url)).await.json;
        assert_eq!(offer["tag"], "payRequest");
        assert_eq!(offer["minSendable"], 1000);
        assert_eq!(offer["maxSendable"], 50_000_000);
        assert_eq!(offer["commentAllowed"], 10);
        let metadata = offer["metadata"].as_str().unwrap().to_owned();
        assert_eq!(
            metadata,
            r#"[["text/plain","Pay Carol"],["text/identifier","carol@pay.example.com"]]"#
        );
        assert_eq!(offer["callback"], url.as_str());
        // The address, in any case, answers the same payRequest.
        let r = well_known(&s, "lnurlp", "CaRoL").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json, offer);
        let r = well_known(&s, "lnurlp", l["id"].as_str().unwrap()).await;
        assert_eq!(r.json, offer);
        let r = well_known(&s, "lnurlp", "nobody").await;
        assert_eq!(
            lud_error(&r.json),
            "Invalid username (nobody) for domain:pay.example.com"
        );

        // Callback errors, in LUD format.
        let e = callback(&s, &offer, "amount=999").await;
        assert_eq!(
            lud_error(&e),
            "Amount 999 msat is not within 1000 - 50000000 msat"
        );
        let e = callback(&s, &offer, "amount=50000001").await;
        assert!(lud_error(&e).contains("not within"), "{e}");
        let e = callback(&s, &offer, "amount=abc").await;
        assert_eq!(
            lud_error(&e),
            "Amount must be a whole number of millisatoshis"
        );
        let e = callback(&s, &offer, "amount=5000&comment=elevenchars").await;
        assert_eq!(
            lud_error(&e),
            "Comment is too long (11 characters); this link accepts at most 10"
        );
        let wrong = local(&s, &url).replacen("/wallet/lnurlp_", "/wallet/lnurlp_x", 1);
        let e = fetch(&s, &wrong).await.json;
        assert_eq!(
            lud_error(&e),
            "Wallet or lnurlpay link is not valid or active"
        );

        // The invoice: exact amount, description hash = SHA-256 of the metadata served.
        let ans = callback(&s, &offer, "amount=21000&comment=thanks").await;
        assert_eq!(ans["routes"], json!([]));
        let pr = Bolt11::parse(ans["pr"].as_str().unwrap()).unwrap();
        assert_eq!(pr.amount(), Some(Msat::from_msat(21_000).unwrap()));
        let want: [u8; 32] = Sha256::digest(metadata.as_bytes()).into();
        assert_eq!(pr.description_hash(), Some(want));
        let verify_url = ans["verify"].as_str().unwrap().to_owned();
        let verify = local(&s, &verify_url);
        let v = fetch(&s, &verify).await.json;
        assert_eq!(
            v,
            json!({"status": "OK", "settled": false, "preimage": null, "pr": pr.as_str()})
        );
        let e = fetch(&s, &format!("{}/v1/lnurlp/verify/nope", s.base))
            .await
            .json;
        assert_eq!(lud_error(&e), "Not found");

        // Paid from outside: booked as ln_lnurl_pay_inbound, with the comment as memo.
        let preimage = s.scripted.pay_our_invoice(&pr, None).unwrap();
        s.wait_balance_msat(&w, 21_000).await;
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", w.waka))
            .await;
        let wtx = &r.json[0];
        assert_eq!(wtx["wtxType"]["name"], "ln_lnurl_pay_inbound");
        assert_eq!(wtx["wtxType"]["display_name"], "LNURL Pay");
        assert_eq!(wtx["num_satoshis"], 21);
        assert_eq!(wtx["user_label"], "thanks");
        assert_eq!(wtx["passThru"]["wallet_lnurlpay_id"], l["id"]);
        assert_eq!(wtx["passThru"]["comment"], "thanks");
        assert_eq!(wtx["lnTx"]["description_hash"], hex::encode(want));
        let v = fetch(&s, &verify).await.json;
        assert_eq!(v["settled"], true);
        assert_eq!(v["preimage"], preimage.to_hex());
        // Restart: links, addresses, invoices and verify ids are all still there.
        let (scripted, sak) = (s.scripted.clone(), s.sak.clone());
        s.assert_audit_clean().await;
        let db = s.stop().await;
        let mut s = TestServer::start_on(db, cfg(), scripted).await;
        s.sak = sak;
        let verify = local(&s, &verify_url);
        assert_eq!(fetch(&s, &local(&s, &url)).await.json, offer);
        assert_eq!(well_known(&s, "lnurlp", "carol").await.json, offer);
        let v = fetch(&s, &verify).await.json;
        assert_eq!(v["settled"], true);
        let r = s
            .get(&s.sak, &format!("/lnurlp/{}", l["id"].as_str().unwrap()))
            .await;
        assert_eq!(r.json["lnurlp_identifier"], "carol");
        // A second invoice after the restart pays too.
        let ans = callback(&s, &offer, "amount=3000").await;
        let pr = Bolt11::parse(ans["pr"].as_str().unwrap()).unwrap();
        s.scripted.pay_our_invoice(&pr, None).unwrap();
        s.wait_balance_msat(&w, 24_000).await;
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

/// Another wallet of this server pays a link's invoice through `/withdraw`: settled
/// internally, the payee's entry is still `ln_lnurl_pay_inbound`.
#[tokio::test]
async fn internal_payment_of_a_link_invoice() {
    on_each_db(|s| async move {
        let payer = s.create_wallet("payer").await;
        s.fund(&payer, 1_000).await;
        let payee = s.create_wallet("payee").await;
        let l = make_link(&s, &payee, json!({})).await;
        let offer = fetch(&s, &local(&s, l["lnurl_decoded"].as_str().unwrap()))
            .await
            .json;
        let ans = callback(&s, &offer, "amount=100000").await;
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", payer.waka),
                json!({"payment_request": ans["pr"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        s.wait_balance_msat(&payee, 100_000).await;
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", payee.waka))
            .await;
        assert_eq!(r.json[0]["wtxType"]["name"], "ln_lnurl_pay_inbound");
        let v = fetch(&s, &local(&s, ans["verify"].as_str().unwrap()))
            .await
            .json;
        assert_eq!(v["settled"], true);
        s
    })
    .await;
}

/// Keysend addresses: each address's TLV 696969 value credits its own wallet; a deactivated
/// address routes nothing.
#[tokio::test]
async fn keysend_addresses_route_to_their_own_wallets() {
    on_each_db(|s| async move {
        let main = s.create_wallet("main").await;
        let sub = s.create_wallet("sub").await;
        let a = make_link(&s, &main, json!({"lnurlp_identifier": "podcast"})).await;
        make_link(&s, &sub, json!({"lnurlp_identifier": "podcast.guest"})).await;
        let ka = well_known(&s, "keysend", "Podcast").await.json;
        let kb = well_known(&s, "keysend", "podcast.guest").await.json;
        assert_eq!(ka["status"], "OK");
        assert_eq!(ka["tag"], "keysend");
        assert_eq!(ka["pubkey"], s.scripted.pubkey().to_hex());
        assert_eq!(ka["customData"][0]["customKey"], "696969");
        let va = ka["customData"][0]["customValue"]
            .as_str()
            .unwrap()
            .to_owned();
        let vb = kb["customData"][0]["customValue"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(va, vb, "two addresses, two values");
        let e = well_known(&s, "keysend", "nobody").await.json;
        lud_error(&e);

        let send = |v: &str, sats: u64| {
            let mut r = CustomRecords::default();
            r.0.insert(696_969, v.as_bytes().to_vec());
            s.scripted
                .receive_keysend(Msat::from_sats(sats).unwrap(), r)
        };
        send(&va, 5);
        send(&vb, 7);
        s.wait_balance_msat(&main, 5_000).await;
        s.wait_balance_msat(&sub, 7_000).await;

        // Deactivated: the value no longer routes (no default keysend wallet: unclaimed).
        let r = s
            .post(
                &s.sak,
                &format!("/lnurlp/{}", a["id"].as_str().unwrap()),
                json!({"status": "lnurl_inactive"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        send(&va, 3);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(s.balance_msat(&main).await, 5_000);
        s
    })
    .await;
}

/// Our LNURL-pay and Lightning Address answers as a third-party implementation reads them
/// (the LNbits team's PyPI `lnurl`, as for LNURL-withdraw), and a pay request it completes
/// against the running server: its invoice, paid from outside, credits the wallet. Skipped with
/// a message when python3 or the package is missing, except in CI (`CI=true`).
#[tokio::test]
async fn third_party_lnurl_accepts_our_answers() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lnurl/check_lnurlp.py");
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
    on_each_db(|s| async move {
        let w = s.create_wallet("3rd party").await;
        let l = make_link(
            &s,
            &w,
            json!({"lnurlp_identifier": "python", "lnurlp_commentAllowed": 50}),
        )
        .await;
        let url = l["lnurl_decoded"].as_str().unwrap().to_owned();
        let offer = fetch(&s, &local(&s, &url)).await;
        let wk = well_known(&s, "lnurlp", "python").await;
        let err = fetch(&s, &format!("{}?amount=1", local(&s, &url))).await;
        let out = tokio::task::spawn_blocking({
            let args = [
                script.to_owned(),
                s.base.clone(),
                PUBLIC.to_owned(),
                l["lnurl_encoded"].as_str().unwrap().to_owned(),
                url.clone(),
                l["lightning_address"].as_str().unwrap().to_owned(),
                offer.text.clone(),
                wk.text.clone(),
                err.text.clone(),
            ];
            move || {
                std::process::Command::new("python3")
                    .args(args)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "python lnurl refused our answers:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{stdout}");
        let pr = stdout
            .lines()
            .find_map(|l| l.strip_prefix("pr="))
            .expect("the invoice python obtained");
        let pr = Bolt11::parse(pr).unwrap();
        s.scripted.pay_our_invoice(&pr, None).unwrap();
        s.wait_balance_msat(&w, 21_000).await;
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", w.waka))
            .await;
        assert_eq!(r.json[0]["wtxType"]["name"], "ln_lnurl_pay_inbound");
        assert_eq!(r.json[0]["user_label"], "from python");
        s
    })
    .await;
}

/// Over the embedded LDK node and its devnet (real Lightning payments), alice pays an invoice
/// from a Lightning Address's callback (credited as `ln_lnurl_pay_inbound`), and keysends to two
/// keysend addresses, each landing in its own wallet (the node's pre-claim policy accepts them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devnet_alice_pays_an_address_and_two_keysend_addresses() {
    use satchel::app::{StartOptions, start};
    use satchel_ldk::Devnet;
    use satchel_lightning::{DevnetControl, LightningBackend, PayOutcome};
    use std::sync::Arc;

    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let dir = tempfile::tempdir().unwrap();
        let devnet = Arc::new(Devnet::start(dir.path()).await.expect("devnet starts"));
        let backend: Arc<dyn LightningBackend> = devnet.node();
        let control: Arc<dyn DevnetControl> = devnet.clone();
        let running = start(StartOptions {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            backend,
            devnet: Some(control),
            service: ServiceConfig {
                payment_wait: Duration::from_secs(30),
                reconcile_every: Duration::from_millis(500),
                ..cfg()
            },
            webhooks: None,
        })
        .await
        .expect("server starts");
        devnet
            .node()
            .set_incoming_policy(Arc::new(satchel_service::incoming::KeysendPolicy::new(
                running.store.clone(),
                None,
            )));
        let acct = satchel_service::wallets::create_account(&running.store, "t")
            .await
            .unwrap();
        let sak = acct.secret_key.expose().to_owned();
        let base = running.url();
        let http = reqwest::Client::new();
        let api = |method: reqwest::Method, path: &str| {
            http.request(method, format!("{base}/v1{path}"))
                .header("X-Api-Key", &sak)
        };
        let json_of = |r: reqwest::Response| async move {
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            (status, v)
        };
        let mut wallets = Vec::new();
        for (label, name) in [("main", "show"), ("guest", "show.guest")] {
            let (st, w) = json_of(
                api(reqwest::Method::POST, "/wallet")
                    .json(&json!({"user_label": label}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(st, StatusCode::CREATED, "{w}");
            let waka = w["access_keys"]["Wallet Admin"][0]
                .as_str()
                .unwrap()
                .to_owned();
            let (st, l) = json_of(
                api(reqwest::Method::POST, &format!("/wallet/{waka}/lnurlp"))
                    .json(&json!({"lnurlp_identifier": name}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(st, StatusCode::OK, "{l}");
            wallets.push((waka, name));
        }
        let balance = |waka: String| {
            let rb = api(reqwest::Method::GET, &format!("/wallet/{waka}"));
            async move {
                rb.send().await.unwrap().json::<Value>().await.unwrap()["balance_msat"]
                    .as_i64()
                    .unwrap()
            }
        };
        let wait = |waka: String, want: i64| {
            let balance = &balance;
            async move {
                for _ in 0..300 {
                    if balance(waka.clone()).await == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("balance of {waka} never reached {want}");
            }
        };

        // alice pays the address's invoice.
        let offer: Value = http
            .get(format!("{base}/.well-known/lnurlp/show"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cb = offer["callback"].as_str().unwrap().replace(PUBLIC, &base);
        let ans: Value = http
            .get(format!("{cb}?amount=30000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pr = Bolt11::parse(ans["pr"].as_str().unwrap_or_else(|| panic!("{ans}"))).unwrap();
        let want: [u8; 32] = Sha256::digest(offer["metadata"].as_str().unwrap().as_bytes()).into();
        assert_eq!(pr.description_hash(), Some(want));
        let out = devnet.outside_pay("alice", &pr, None).await.unwrap();
        assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
        wait(wallets[0].0.clone(), 30_000).await;
        let h: Value = api(
            reqwest::Method::GET,
            &format!("/wallet/{}/transactions", wallets[0].0),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(h[0]["wtxType"]["name"], "ln_lnurl_pay_inbound");

        // alice keysends to both keysend addresses: each lands in its own wallet.
        for (i, (waka, name)) in wallets.iter().enumerate() {
            let k: Value = http
                .get(format!("{base}/.well-known/keysend/{name}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(k["pubkey"], devnet.node().pubkey().to_hex());
            let mut rec = CustomRecords::default();
            rec.0.insert(
                696_969,
                k["customData"][0]["customValue"]
                    .as_str()
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
            );
            let sats = 10 + u64::try_from(i).unwrap();
            let (_, out) = devnet
                .outside_keysend(
                    "alice",
                    devnet.node().pubkey(),
                    Msat::from_sats(sats).unwrap(),
                    rec,
                )
                .await
                .unwrap();
            assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
            let before = if i == 0 { 30_000 } else { 0 };
            wait(waka.clone(), before + i64::try_from(sats).unwrap() * 1000).await;
        }
        let audit = running.store.audit().await.unwrap();
        assert!(audit.is_clean(), "{:?}", audit.problems);
        running.shutdown().await;
        devnet.stop().await.unwrap();
    }
}
