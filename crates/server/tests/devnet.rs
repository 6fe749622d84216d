#![allow(clippy::unwrap_used, clippy::expect_used)]

//! End to end through the LNPay HTTP API over the embedded LDK node and its in-process devnet
//! (real Lightning payments: alice ──▶ us ──▶ hub (1000 msat + 1000 ppm) ──▶ carol), on SQLite
//! and on Postgres, each with a fresh devnet in its own temporary directory. The server is wired
//! as `satchel serve` wires it: `backend = devnet.node()`, the devnet as `DevnetControl`, and the
//! service's `KeysendPolicy` installed on the node after start.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use satchel::app::{Running, StartOptions, start};
use satchel_domain::{Bolt11, CustomRecords, KEYSEND_PREIMAGE_TLV, Msat, PaymentHash};
use satchel_ldk::Devnet;
use satchel_lightning::{
    DevnetControl, IncomingKind, InvoiceEvents, InvoiceState, Invoices, LightningBackend,
    PayOutcome,
};
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The hub's fee for forwarding `amount_msat` (1000 msat + 1000 ppm, rounded down).
fn hub_fee_msat(amount_msat: i64) -> i64 {
    1000 + amount_msat * 1000 / 1_000_000
}

/// What a wallet is charged for a routing fee (on a whole-sat amount): rounded up to the sat,
/// the sub-sat rest going to the operator's revenue account.
fn charged_fee_msat(fee_msat: i64) -> i64 {
    (fee_msat + 999) / 1000 * 1000
}

fn sats(n: u64) -> Msat {
    Msat::from_sats(n).unwrap()
}

fn sha256_hex(hex_preimage: &str) -> String {
    hex::encode(Sha256::digest(hex::decode(hex_preimage).unwrap()))
}

fn records(pairs: &[(u64, &str)]) -> CustomRecords {
    CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    )
}

/// A response: status, JSON body (Null if not JSON), raw text.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    json: Value,
    text: String,
}

/// The real server over a fresh devnet, with one account.
struct DevnetServer {
    devnet: Arc<Devnet>,
    running: Option<Running>,
    http: reqwest::Client,
    base: String,
    sak: String,
    _dir: tempfile::TempDir,
}

/// A wallet created through the API.
struct Wallet {
    id: String,
    waka: String,
}

impl DevnetServer {
    async fn start(db: &TestDb) -> DevnetServer {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let devnet = Arc::new(Devnet::start(dir.path()).await.expect("devnet starts"));
        eprintln!("devnet started in {:?}", t.elapsed());
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
                ..ServiceConfig::default()
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
            .expect("account");
        DevnetServer {
            devnet,
            base: running.url(),
            running: Some(running),
            http: reqwest::Client::new(),
            sak: acct.secret_key.expose().to_owned(),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.devnet.stop().await.unwrap();
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    async fn into_resp(r: reqwest::Response) -> Resp {
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, json, text }
    }

    async fn get(&self, path: &str) -> Resp {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-Api-Key", &self.sak)
            .send()
            .await
            .unwrap();
        Self::into_resp(r).await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Api-Key", &self.sak)
            .json(&body)
            .send()
            .await
            .unwrap();
        Self::into_resp(r).await
    }

    async fn create_wallet(&self, label: &str) -> Wallet {
        let r = self
            .post("/v1/wallet", json!({ "user_label": label }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        Wallet {
            id: r.json["id"].as_str().unwrap().to_owned(),
            waka: r.json["access_keys"]["Wallet Admin"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    async fn balance_msat(&self, w: &Wallet) -> i64 {
        let r = self.get(&format!("/v1/wallet/{}", w.id)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["balance_msat"].as_i64().unwrap()
    }

    /// Polls the wallet until its balance is `msat` (up to 15 s).
    async fn wait_balance_msat(&self, w: &Wallet, msat: i64) {
        wait_until(&format!("balance of {} = {msat} msat", w.id), || async {
            self.balance_msat(w).await == msat
        })
        .await;
    }

    /// The wallet's history, newest first.
    async fn history(&self, w: &Wallet) -> Vec<Value> {
        let r = self
            .get(&format!("/v1/wallet/{}/transactions", w.waka))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json.as_array().unwrap().clone()
    }

    async fn withdraw(&self, w: &Wallet, inv: &Bolt11, fee_limit_msat: Option<i64>) -> Resp {
        let mut body = json!({ "payment_request": inv.as_str() });
        if let Some(f) = fee_limit_msat {
            body["fee_limit_msat"] = json!(f);
        }
        self.post(&format!("/v1/wallet/{}/withdraw", w.waka), body)
            .await
    }

    async fn unclaimed_msat(&self) -> i64 {
        self.running().store.audit().await.unwrap().unclaimed_msat
    }
}

/// Polls `f` every 50 ms for up to 15 s.
async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn wtx_names(h: &[Value]) -> Vec<&str> {
    h.iter()
        .map(|t| t["wtxType"]["name"].as_str().unwrap())
        .collect()
}

#[track_caller]
fn assert_400(r: &Resp, message: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["message"], message, "{}", r.text);
}

async fn scenario(s: &DevnetServer) {
    let node = s.devnet.node();
    let carol = s.devnet.peer("carol").unwrap();

    // /devnet/info shows the same network the server pays over.
    let info = s.get("/devnet/info").await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text);
    assert_eq!(info.json["backend"], "ldk-devnet", "{}", info.text);
    assert_eq!(info.json["node_pubkey"], node.pubkey().to_hex());
    let carol_hex = info.json["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "carol")
        .unwrap()["pubkey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(carol_hex, carol.pubkey().to_hex());

    let w = s.create_wallet("devnet e2e").await;

    // ------------------------------------------------------------ a wallet invoice paid by alice
    let r = s
        .post(
            &format!("/v1/wallet/{}/invoice", w.waka),
            json!({ "num_satoshis": 50_000, "memo": "funding from alice" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let inv = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
    assert_eq!(inv.payee(), node.pubkey());
    assert_eq!(inv.amount(), Some(sats(50_000)));
    let out = s.devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    s.wait_balance_msat(&w, 50_000_000).await;
    let h = s.history(&w).await;
    assert_eq!(wtx_names(&h), ["ln_deposit"]);
    assert_eq!(h[0]["num_satoshis"], 50_000);
    assert_eq!(h[0]["lnTx"]["settled"], 1);
    assert_eq!(h[0]["lnTx"]["r_hash_decoded"], inv.payment_hash().to_hex());
    let mut balance = 50_000_000i64;

    // ------------------------------------------------------------ withdraw to carol via the hub
    let amount_msat = 12_345_000i64;
    let carol_inv = s
        .devnet
        .outside_invoice("carol", Some(sats(12_345)), "withdraw to carol")
        .await
        .unwrap();
    let r = s.withdraw(&w, &carol_inv, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let fee = hub_fee_msat(amount_msat); // 1000 + 12_345 = 13_345 msat
    assert_eq!(fee, 13_345);
    let l = &r.json["lnTx"];
    assert_eq!(r.json["wtxType"]["name"], "ln_withdrawal");
    assert_eq!(r.json["num_satoshis"], -12_345);
    assert_eq!(l["settled"], 1, "{}", r.text);
    assert_eq!(l["fee_msat"], fee, "the fee actually routed: {}", r.text);
    assert_eq!(l["r_hash_decoded"], carol_inv.payment_hash().to_hex());
    assert_eq!(
        sha256_hex(l["payment_preimage"].as_str().unwrap()),
        carol_inv.payment_hash().to_hex()
    );
    balance -= amount_msat + charged_fee_msat(fee);
    assert_eq!(s.balance_msat(&w).await, balance);
    let h = s.history(&w).await;
    assert_eq!(
        wtx_names(&h),
        ["network_fee", "ln_withdrawal", "ln_deposit"]
    );
    // -13.345 sats shows rounded toward negative infinity.
    assert_eq!(h[0]["num_satoshis"], -14);
    let full = s
        .get(&format!("/v1/lntx/{}", l["id"].as_str().unwrap()))
        .await;
    assert_eq!(full.status, StatusCode::OK, "{}", full.text);
    assert_eq!(full.json["fee_msat"], fee);
    assert!(matches!(
        carol.lookup_invoice(carol_inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { amount_received, .. }) if amount_received == sats(12_345)
    ));

    // ------------------------------------------------------------ keysend to carol with records
    let r = s
        .post(
            &format!("/v1/wallet/{}/keysend", w.waka),
            json!({
                "dest_pubkey": carol_hex,
                "num_satoshis": 100,
                "custom_records": {
                    "7629169": "{\"podcast\":\"devnet\",\"action\":\"boost\"}",
                    "34349334": "hello carol",
                    "65537": "odd type"
                }
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let l = &r.json["lnTx"];
    assert_eq!(l["is_keysend"], 1);
    assert_eq!(l["settled"], 1);
    let fee = hub_fee_msat(100_000);
    assert_eq!(l["fee_msat"], fee, "{}", r.text);
    let preimage = l["payment_preimage"].as_str().unwrap().to_owned();
    let hash_hex = l["r_hash_decoded"].as_str().unwrap().to_owned();
    assert_eq!(sha256_hex(&preimage), hash_hex);
    assert_eq!(l["custom_records"]["34349334"], "hello carol");
    assert_eq!(
        l["custom_records"][KEYSEND_PREIMAGE_TLV.to_string()],
        preimage
    );
    balance -= 100_000 + charged_fee_msat(fee);
    assert_eq!(s.balance_msat(&w).await, balance);
    // Carol received it, with exactly our records (the preimage record is not a custom one).
    let hash = PaymentHash::from_hex(&hash_hex).unwrap();
    let events = carol
        .events_after(0, 100, Duration::from_secs(5))
        .await
        .unwrap();
    let got = events
        .iter()
        .find_map(|e| match &e.kind {
            IncomingKind::KeysendReceived {
                payment_hash,
                amount_received,
                custom_records,
                preimage,
                ..
            } if *payment_hash == hash => {
                Some((*amount_received, custom_records.clone(), *preimage))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("carol never received the keysend: {events:?}"));
    assert_eq!(got.0, sats(100));
    assert_eq!(
        got.1,
        records(&[
            (7_629_169, "{\"podcast\":\"devnet\",\"action\":\"boost\"}"),
            (34_349_334, "hello carol"),
            (65_537, "odd type"),
        ])
    );
    assert_eq!(got.2.to_hex(), preimage);

    // ------------------------------------------------------------ fee limit too low
    let cheap = s
        .devnet
        .outside_invoice("carol", Some(sats(1000)), "too cheap")
        .await
        .unwrap();
    let r = s.withdraw(&w, &cheap, Some(0)).await;
    assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE");
    assert_eq!(s.balance_msat(&w).await, balance, "refunded to the msat");
    let cheap2 = s
        .devnet
        .outside_invoice("carol", Some(sats(1000)), "one msat short")
        .await
        .unwrap();
    let r = s
        .withdraw(&w, &cheap2, Some(hub_fee_msat(1_000_000) - 1))
        .await;
    assert_400(&r, "Failure reason: FAILURE_REASON_NO_ROUTE");
    assert_eq!(s.balance_msat(&w).await, balance, "refunded to the msat");
    // Exactly the hub's fee is enough.
    let r = s.withdraw(&w, &cheap2, Some(hub_fee_msat(1_000_000))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["lnTx"]["fee_msat"], hub_fee_msat(1_000_000));
    balance -= 1_000_000 + charged_fee_msat(hub_fee_msat(1_000_000));
    assert_eq!(s.balance_msat(&w).await, balance);

    // ------------------------------------------------------------ incoming keysends from alice
    let unclaimed_before = s.unclaimed_msat().await;
    let events_before = node.events_len();
    let (hash, out) = s
        .devnet
        .outside_keysend(
            "alice",
            node.pubkey(),
            sats(21),
            records(&[(696_969, w.id.as_str()), (7_629_169, "{\"a\":1}")]),
        )
        .await
        .unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    balance += 21_000;
    s.wait_balance_msat(&w, balance).await;
    let h = s.history(&w).await;
    assert_eq!(h[0]["wtxType"]["name"], "ln_deposit");
    assert_eq!(h[0]["num_satoshis"], 21);
    let l = &h[0]["lnTx"];
    assert_eq!(l["is_keysend"], 1);
    assert_eq!(l["settled"], 1);
    assert_eq!(l["r_hash_decoded"], hash.to_hex());
    assert_eq!(l["custom_records"]["696969"], w.id.as_str());
    assert_eq!(l["custom_records"]["7629169"], json!({ "a": 1 }));
    assert_eq!(
        sha256_hex(l["payment_preimage"].as_str().unwrap()),
        hash.to_hex()
    );

    // Naming a wallet that does not exist: the node refuses it, alice's payment fails, nothing
    // is credited anywhere (not even to sys:unclaimed: the money never arrived).
    let (_, out) = s
        .devnet
        .outside_keysend(
            "alice",
            node.pubkey(),
            sats(33),
            records(&[(696_969, "wal_doesnotexist")]),
        )
        .await
        .unwrap();
    assert!(matches!(out, PayOutcome::Failed(_)), "{out:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.balance_msat(&w).await, balance);
    assert_eq!(node.events_len(), events_before + 1);
    assert_eq!(s.unclaimed_msat().await, unclaimed_before);
    assert_eq!(s.history(&w).await.len(), h.len());

    // ------------------------------------------------------------ not a public key
    // 66 hex characters whose x coordinate is on no point: a 400 before LDK sees it (LDK's own
    // conversion failed as a 500), for queryroutes and keysend alike; nothing is written.
    for x in ["00", "cd"] {
        let not_a_point = format!("02{}", x.repeat(32));
        let r = s
            .get(&format!(
                "/v1/node/default/payments/queryroutes?pub_key={not_a_point}&amt=10"
            ))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "pub_key must be a 66-character hex node public key."
        );
        let r = s
            .post(
                &format!("/v1/wallet/{}/keysend", w.waka),
                json!({ "dest_pubkey": not_a_point, "num_satoshis": 10 }),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            r.json["message"],
            "Dest Pubkey must be a hex-encoded node public key."
        );
    }
    assert_eq!(s.balance_msat(&w).await, balance);
    assert_eq!(s.history(&w).await.len(), h.len());

    // ------------------------------------------------------------ the books
    let rep = s.running().store.audit().await.unwrap();
    assert!(rep.is_clean(), "audit problems: {:?}", rep.problems);
    assert_eq!(rep.liabilities_msat, balance);
    assert_eq!(rep.in_flight_msat, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lnpay_api_over_the_ldk_devnet() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let t = Instant::now();
        let s = DevnetServer::start(&db).await;
        scenario(&s).await;
        s.stop().await;
        eprintln!("--- {kind} done in {:?}", t.elapsed());
    }
}

/// Any custom record type >= 65536 (other than 5482373484) is accepted by the API and must reach
/// the recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
/// LDK 0.2 reserves TLV 77777 (invoice requests of async payments) and refuses to send it. On the
/// LDK backend such a keysend is refused before anything is sent and the reserve is returned.
async fn keysend_with_custom_record_type_77777_is_refused_and_refunded() {
    let db = TestDb::sqlite().await;
    let s = DevnetServer::start(&db).await;
    let w = s.create_wallet("77777").await;
    let r = s
        .post(
            &format!("/v1/wallet/{}/invoice", w.waka),
            json!({ "num_satoshis": 1000 }),
        )
        .await;
    let inv = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
    let out = s.devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    s.wait_balance_msat(&w, 1_000_000).await;
    let carol = s.devnet.peer("carol").unwrap();
    let r = s
        .post(
            &format!("/v1/wallet/{}/keysend", w.waka),
            json!({
                "dest_pubkey": carol.pubkey().to_hex(),
                "num_satoshis": 10,
                "custom_records": { "77777": "a valid odd type" }
            }),
        )
        .await;
    let balance = s.balance_msat(&w).await;
    let rep = s.running().store.audit().await.unwrap();
    s.stop().await;
    assert!(rep.is_clean(), "audit problems: {:?}", rep.problems);
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["message"], "Failure reason: FAILURE_REASON_ERROR");
    assert_eq!(balance, 1_000_000, "nothing sent, the reserve is back");
}

/// The embedded node's channel and chain figures reach `/metrics` (the refresher reads
/// `NodeInfo::node_stats`), and `promtool check metrics` accepts the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_metrics_from_the_embedded_node() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let devnet = Arc::new(Devnet::start(dir.path()).await.expect("devnet starts"));
    let backend: Arc<dyn LightningBackend> = devnet.node();
    let mut http = satchel::app::HttpOptions {
        metrics_listen: Some("127.0.0.1:0".into()),
        metrics_refresh: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    http.api.auth_throttle.max_failures = 1000;
    let running = satchel::app::start_with_http(
        StartOptions {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            backend,
            devnet: Some(devnet.clone()),
            service: ServiceConfig {
                backend_name: "devnet",
                ..ServiceConfig::default()
            },
            webhooks: None,
        },
        http,
    )
    .await
    .expect("server starts");
    let url = format!("http://{}/metrics", running.metrics_addr.unwrap());
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if value(&text, "satchel_node_channels{state=\"active\"}").is_some_and(|v| v >= 1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server's node (the hub's peer in the devnet) has its channel open and usable.
    assert!(
        value(&text, "satchel_node_channels{state=\"active\"}").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(value(&text, "satchel_node_channels{state=\"inactive\"}").is_some());
    assert!(value(&text, "satchel_node_channel_balance_msat{side=\"local\"}").is_some());
    assert!(
        value(&text, "satchel_node_channel_balance_msat{side=\"remote\"}").is_some_and(|v| v > 0.0)
    );
    // The node follows the devnet's chain: its height is the chain's, and a sync lag, when
    // claimed, is 0 (claimed only after a sync round that reached the source's tip).
    assert_eq!(
        value(&text, "satchel_node_block_height"),
        Some(f64::from(devnet.chain_tip().0)),
        "{text}"
    );
    assert!(
        value(&text, "satchel_node_sync_lag_seconds").is_none_or(|v| v == 0.0),
        "{text}"
    );
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "promtool is required in CI: {e}"
            );
            eprintln!("NOTE: promtool not found ({e})");
        }
    }
    running.shutdown().await;
    devnet.stop().await.unwrap();
}
