//! A small harness for LNURL tests over the LDK devnet (alice ──▶ us ──▶ hub ──▶ carol): the
//! real server over a fresh devnet in a temporary directory, wired as `satchel serve` wires it
//! (see `tests/devnet.rs`), with the caller's service settings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use satchel::app::{Running, StartOptions, start};
use satchel_domain::{Bolt11, Msat};
use satchel_ldk::Devnet;
use satchel_lightning::{DevnetControl, LightningBackend, PayOutcome};
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
}

pub struct DevnetServer {
    pub devnet: Arc<Devnet>,
    running: Option<Running>,
    pub http: reqwest::Client,
    pub base: String,
    pub sak: String,
    _dir: tempfile::TempDir,
}

/// A wallet created through the API.
pub struct Wallet {
    pub id: String,
    pub waka: String,
}

impl DevnetServer {
    pub async fn start(db: &TestDb, cfg: ServiceConfig) -> DevnetServer {
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
                ..cfg
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

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            let rep = r.store.audit().await.unwrap();
            assert!(rep.is_clean(), "audit problems: {:?}", rep.problems);
            r.shutdown().await;
        }
        self.devnet.stop().await.unwrap();
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, json, text }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .header("X-Api-Key", &self.sak),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("X-Api-Key", &self.sak)
                .json(&body),
        )
        .await
    }

    pub async fn create_wallet(&self, label: &str) -> Wallet {
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

    pub async fn balance_msat(&self, w: &Wallet) -> i64 {
        let r = self.get(&format!("/v1/wallet/{}", w.id)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["balance_msat"].as_i64().unwrap()
    }

    /// Polls until the wallet's balance is `msat` (up to 15 s).
    pub async fn wait_balance_msat(&self, w: &Wallet, msat: i64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.balance_msat(w).await == msat {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "balance of {} never reached {msat} (is {})",
            w.id,
            self.balance_msat(w).await
        );
    }

    /// Funds the wallet: an API invoice paid by alice over her channel to us.
    pub async fn fund(&self, w: &Wallet, sats: u64) {
        let r = self
            .post(
                &format!("/v1/wallet/{}/invoice", w.waka),
                json!({ "num_satoshis": sats, "memo": "funding" }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let inv = Bolt11::parse(r.json["payment_request"].as_str().unwrap()).unwrap();
        let out = self.devnet.outside_pay("alice", &inv, None).await.unwrap();
        assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
        self.wait_balance_msat(w, i64::try_from(sats * 1000).unwrap())
            .await;
    }

    /// An invoice of carol's.
    pub async fn carol_invoice(&self, sats: u64, memo: &str) -> Bolt11 {
        self.devnet
            .outside_invoice("carol", Some(Msat::from_sats(sats).unwrap()), memo)
            .await
            .unwrap()
    }

    /// The wallet's history, newest first.
    pub async fn history(&self, w: &Wallet) -> Vec<Value> {
        let r = self
            .get(&format!("/v1/wallet/{}/transactions", w.waka))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json.as_array().unwrap().clone()
    }
}
