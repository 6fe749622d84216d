//! Integration-test harness: the real `satchel` HTTP server on a random loopback port, backed by
//! a fresh database (SQLite or Postgres) and the scripted Lightning backend, plus a small client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use satchel::app::{HttpOptions, Running, StartOptions, start_with_http};
use satchel_domain::{Bolt11, Msat, Network};
use satchel_scripted::ScriptedBackend;
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

/// The keys of a wallet created through the API.
#[derive(Debug, Clone)]
pub struct WalletKeys {
    pub id: String,
    pub waka: String,
    pub waki: String,
    pub wakr: String,
    pub waklw: String,
    pub waklp: String,
    pub wakewa: String,
    pub wakewv: String,
}

/// A response: status, headers, JSON body (Null if not JSON), raw text.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

/// A running server with its scripted node and an account.
pub struct TestServer {
    pub running: Option<Running>,
    pub scripted: Arc<ScriptedBackend>,
    pub http: reqwest::Client,
    pub base: String,
    pub sak: String,
    pub pak: String,
    pub db: TestDb,
}

/// Webhook delivery for tests: loopback receivers allowed, fast polling, 1 s retries.
pub fn test_dispatcher_config() -> satchel_api::webhooks::DispatcherConfig {
    satchel_api::webhooks::DispatcherConfig {
        allow_private: true,
        poll: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        retry: satchel_service::webhooks::RetryPolicy {
            first_retry_secs: 1,
            max_retry_secs: 2,
            window_secs: 3600,
        },
        ..Default::default()
    }
}

/// HTTP limits of the test servers: the defaults, except an auth throttle loose enough for
/// tests that send many unknown keys on purpose from 127.0.0.1 (bad input, permissions);
/// `hardening.rs` tests the throttle with its own settings.
pub fn test_http_options() -> HttpOptions {
    let mut http = HttpOptions::default();
    http.api.auth_throttle.max_failures = 100_000;
    http
}

/// Settings tests usually want: short waits so pending paths are quick to reach.
pub fn test_service_config() -> ServiceConfig {
    ServiceConfig {
        payment_wait: Duration::from_secs(10),
        reconcile_every: Duration::from_millis(500),
        allow_private_webhook_targets: true,
        lnurl_allow_private_targets: true,
        ..ServiceConfig::default()
    }
}

impl TestServer {
    /// Starts a server on `db` with default test settings.
    pub async fn start(db: TestDb) -> TestServer {
        Self::start_with(db, test_service_config()).await
    }

    /// Starts a server on `db` with the given settings.
    pub async fn start_with(db: TestDb, cfg: ServiceConfig) -> TestServer {
        let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [7u8; 32]));
        Self::start_on(db, cfg, scripted).await
    }

    /// Starts a server on `db` with an existing scripted node (restart tests).
    pub async fn start_on(
        db: TestDb,
        cfg: ServiceConfig,
        scripted: Arc<ScriptedBackend>,
    ) -> TestServer {
        Self::start_custom(db, cfg, scripted, Some(test_dispatcher_config())).await
    }

    /// Full control, including the webhook dispatcher (`None`: events only queue).
    pub async fn start_custom(
        db: TestDb,
        cfg: ServiceConfig,
        scripted: Arc<ScriptedBackend>,
        webhooks: Option<satchel_api::webhooks::DispatcherConfig>,
    ) -> TestServer {
        Self::start_full(db, cfg, scripted, webhooks, test_http_options()).await
    }

    /// [`TestServer::start_custom`] with explicit HTTP options (e.g. a metrics listener).
    pub async fn start_full(
        db: TestDb,
        cfg: ServiceConfig,
        scripted: Arc<ScriptedBackend>,
        webhooks: Option<satchel_api::webhooks::DispatcherConfig>,
        http: HttpOptions,
    ) -> TestServer {
        let running = start_with_http(
            StartOptions {
                database_url: db.url.clone(),
                listen: "127.0.0.1:0".into(),
                backend: scripted.clone(),
                devnet: Some(scripted.clone()),
                service: cfg,
                webhooks,
            },
            http,
        )
        .await
        .expect("server starts");
        let acct = satchel_service::wallets::create_account(&running.store, "test")
            .await
            .expect("account");
        TestServer {
            base: running.url(),
            running: Some(running),
            scripted,
            http: reqwest::Client::new(),
            sak: acct.secret_key.expose().to_owned(),
            pak: acct.public_key.expose().to_owned(),
            db,
        }
    }

    /// Stops the server, keeping the database (returned) for a restart.
    pub async fn stop(mut self) -> TestDb {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.db
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// `http://127.0.0.1:port/v1{path}`.
    pub fn v1(&self, path: &str) -> String {
        format!("{}/v1{}", self.base, path)
    }

    async fn into_resp(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            json,
            text,
        }
    }

    /// GET with `X-Api-Key`.
    pub async fn get(&self, key: &str, path: &str) -> Resp {
        Self::into_resp(
            self.http
                .get(self.v1(path))
                .header("X-Api-Key", key)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// POST a JSON body with `X-Api-Key`.
    pub async fn post(&self, key: &str, path: &str, body: Value) -> Resp {
        Self::into_resp(
            self.http
                .post(self.v1(path))
                .header("X-Api-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// POST with extra headers.
    pub async fn post_with(
        &self,
        key: &str,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self
            .http
            .post(self.v1(path))
            .header("X-Api-Key", key)
            .json(&body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Self::into_resp(rb.send().await.unwrap()).await
    }

    /// A response already received, read whole.
    pub async fn send_response(&self, r: reqwest::Response) -> Resp {
        Self::into_resp(r).await
    }

    /// Any request built by the caller.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        Self::into_resp(rb.send().await.unwrap()).await
    }

    /// Creates a wallet with the sak and returns its keys.
    pub async fn create_wallet(&self, label: &str) -> WalletKeys {
        let r = self
            .post(&self.sak, "/wallet", json!({ "user_label": label }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let k = |role: &str| r.json["access_keys"][role][0].as_str().unwrap().to_owned();
        WalletKeys {
            id: r.json["id"].as_str().unwrap().to_owned(),
            waka: k("Wallet Admin"),
            waki: k("Wallet Invoice"),
            wakr: k("Wallet Read"),
            waklw: k("Wallet LNURL Withdraw"),
            waklp: k("Wallet LNURL Pay"),
            wakewa: k("Wallet External Website Admin"),
            wakewv: k("Wallet External Website View"),
        }
    }

    /// Balance in sats (GET wallet with the sak).
    pub async fn balance(&self, w: &WalletKeys) -> i64 {
        let r = self.get(&self.sak, &format!("/wallet/{}", w.id)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["balance"].as_i64().unwrap()
    }

    /// Balance in msat.
    pub async fn balance_msat(&self, w: &WalletKeys) -> i64 {
        let r = self.get(&self.sak, &format!("/wallet/{}", w.id)).await;
        r.json["balance_msat"].as_i64().unwrap()
    }

    /// Creates an invoice on `w` through the API (sak + waka); returns the lnTx JSON.
    pub async fn invoice(&self, w: &WalletKeys, sats: u64) -> Value {
        let r = self
            .post(
                &self.sak,
                &format!("/wallet/{}/invoice", w.waka),
                json!({ "num_satoshis": sats, "memo": "test" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json
    }

    /// Funds a wallet: API invoice, paid by the simulated outside world, waits for the credit.
    pub async fn fund(&self, w: &WalletKeys, sats: u64) {
        let before = self.balance_msat(w).await;
        let inv = self.invoice(w, sats).await;
        let b = Bolt11::parse(inv["payment_request"].as_str().unwrap()).unwrap();
        self.scripted.pay_our_invoice(&b, None).unwrap();
        self.wait_balance_msat(w, before + i64::try_from(sats * 1000).unwrap())
            .await;
    }

    /// Waits (up to 10 s) until the wallet's balance is `msat`.
    pub async fn wait_balance_msat(&self, w: &WalletKeys, msat: i64) {
        for _ in 0..200 {
            if self.balance_msat(w).await == msat {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "balance of {} never reached {msat} msat (is {})",
            w.id,
            self.balance_msat(w).await
        );
    }

    /// An invoice of the simulated outside node "carol".
    pub fn external_invoice(&self, sats: u64, memo: &str) -> Bolt11 {
        let amount = if sats == 0 {
            None
        } else {
            Some(Msat::from_sats(sats).unwrap())
        };
        self.scripted.external_invoice(amount, memo, 3600).0
    }

    /// Asserts the ledger audit is clean.
    pub async fn assert_audit_clean(&self) {
        let rep = self.running().store.audit().await.unwrap();
        assert!(rep.is_clean(), "audit problems: {:?}", rep.problems);
    }
}

/// Runs `f` against a fresh server on SQLite, then on Postgres (unless SATCHEL_SKIP_PG=1).
pub async fn on_each_db<F, Fut>(f: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: std::future::Future<Output = TestServer>,
{
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let srv = TestServer::start(db).await;
        let srv = f(srv).await;
        srv.assert_audit_clean().await;
        srv.stop().await;
    }
}
