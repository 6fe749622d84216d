#![allow(clippy::unwrap_used, clippy::expect_used)]

//! One of our invoices paid at once from outside (alice, through the node) and from inside (a
//! wallet's withdraw), over the embedded LDK node, LND (fake) and Core Lightning (fake), each on
//! the in-process devnet, on SQLite and Postgres. The invoice is taken away from the node before
//! it is settled internally, so every round charges exactly one payer, credits the payee once,
//! and nothing lands in `sys:unclaimed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use satchel::app::{Running, StartOptions, start};
use satchel_domain::{Bolt11, Network};
use satchel_ldk::Devnet;
use satchel_lightning::{DevnetControl, LightningBackend, PayOutcome};
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

const ROUNDS: u64 = 50;
const INVOICE_SATS: u64 = 100;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ldk,
    Lnd,
    Cln,
}

/// The devnet, the node front Satchel talks to, and the server.
struct Env {
    devnet: Arc<Devnet>,
    running: Option<Running>,
    http: reqwest::Client,
    base: String,
    sak: String,
    _lnd: Option<satchel_fakes::lnd::FakeLnd>,
    _cln: Option<(satchel_fakes::cln::FakeCln, satchel_fakes::cln::FakeSocket)>,
    _dir: tempfile::TempDir,
}

struct Wallet {
    id: String,
    waka: String,
}

impl Env {
    async fn start(kind: Kind, db: &TestDb) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let devnet = Arc::new(Devnet::start(&dir.path().join("devnet")).await.unwrap());
        let node: Arc<dyn LightningBackend> = devnet.node();
        let (backend, lnd, cln): (Arc<dyn LightningBackend>, _, _) = match kind {
            Kind::Ldk => (node, None, None),
            Kind::Lnd => {
                let fake = satchel_fakes::lnd::FakeLnd::start(node).await.unwrap();
                let lnd = satchel_lnd::LndRest::connect(fake.config(Network::Regtest))
                    .await
                    .unwrap();
                (Arc::new(lnd), Some(fake), None)
            }
            Kind::Cln => {
                let fake = satchel_fakes::cln::FakeCln::start(node);
                let path = dir.path().join("lightning-rpc");
                let socket = fake.serve_socket(path.clone()).await.unwrap();
                let cln = satchel_cln::ClnBackend::connect(&satchel_cln::ClnConfig::socket(
                    path,
                    Network::Regtest,
                ))
                .await
                .unwrap();
                (Arc::new(cln), None, Some((fake, socket)))
            }
        };
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
        let acct = satchel_service::wallets::create_account(&running.store, "t")
            .await
            .unwrap();
        Env {
            devnet,
            base: running.url(),
            running: Some(running),
            http: reqwest::Client::new(),
            sak: acct.secret_key.expose().to_owned(),
            _lnd: lnd,
            _cln: cln,
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

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Api-Key", &self.sak)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn create_wallet(&self, label: &str) -> Wallet {
        let (st, j) = self
            .post("/v1/wallet", json!({ "user_label": label }))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{j}");
        Wallet {
            id: j["id"].as_str().unwrap().to_owned(),
            waka: j["access_keys"]["Wallet Admin"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    async fn invoice(&self, w: &Wallet, sats: u64) -> Bolt11 {
        let (st, j) = self
            .post(
                &format!("/v1/wallet/{}/invoice", w.waka),
                json!({ "num_satoshis": sats, "memo": "race" }),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{j}");
        Bolt11::parse(j["payment_request"].as_str().unwrap()).unwrap()
    }

    async fn balance_msat(&self, w: &Wallet) -> i64 {
        let r = self
            .http
            .get(format!("{}/v1/wallet/{}", self.base, w.id))
            .header("X-Api-Key", &self.sak)
            .send()
            .await
            .unwrap();
        let j: Value = r.json().await.unwrap();
        j["balance_msat"].as_i64().unwrap()
    }

    async fn wait_balance_msat(&self, w: &Wallet, msat: i64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let b = self.balance_msat(w).await;
            if b == msat {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "balance of {} is {b}, never reached {msat}",
                w.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn race(kind: Kind, db: &TestDb) {
    let t = Instant::now();
    let env = Env::start(kind, db).await;
    let payer = env.create_wallet("payer").await;
    let payee = env.create_wallet("payee").await;
    // The payer's funds come from alice.
    let funding = env.invoice(&payer, ROUNDS * INVOICE_SATS * 2).await;
    let paying = Instant::now();
    let out = env
        .devnet
        .outside_pay("alice", &funding, None)
        .await
        .unwrap();
    // How long alice's payment takes, to spread the withdraws around the moment it is claimed.
    let alice_takes = paying.elapsed();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let funded = i64::try_from(ROUNDS * INVOICE_SATS * 2 * 1000).unwrap();
    env.wait_balance_msat(&payer, funded).await;
    let amount_msat = i64::try_from(INVOICE_SATS * 1000).unwrap();
    let env = Arc::new(env);
    let (mut inside, mut outside) = (0i64, 0i64);
    for round in 0..ROUNDS {
        let inv = env.invoice(&payee, INVOICE_SATS).await;
        let alice = {
            let (env, inv) = (env.clone(), inv.clone());
            tokio::spawn(async move { env.devnet.outside_pay("alice", &inv, None).await })
        };
        // Stagger the withdraw so that both orders happen (alice's HTLC needs a while to
        // reach the node), including the withdraw landing while the HTLC is being claimed.
        let step = u32::try_from(round % 10).unwrap();
        tokio::time::sleep(alice_takes * step / 6).await;
        let (st, body) = env
            .post(
                &format!("/v1/wallet/{}/withdraw", payer.waka),
                json!({ "payment_request": inv.as_str() }),
            )
            .await;
        let alice_paid = matches!(alice.await.unwrap(), Ok(PayOutcome::Succeeded { .. }));
        let wallet_paid = st == StatusCode::CREATED;
        assert!(
            wallet_paid
                || (st == StatusCode::BAD_REQUEST && body["message"] == "invoice is already paid"),
            "{kind:?} round {round}: {st} {body}"
        );
        assert!(
            alice_paid != wallet_paid,
            "{kind:?} round {round}: alice paid {alice_paid}, wallet paid {wallet_paid} ({st} {body})"
        );
        if wallet_paid {
            inside += 1;
        } else {
            outside += 1;
        }
        let rounds = i64::try_from(round + 1).unwrap();
        env.wait_balance_msat(&payee, rounds * amount_msat).await;
        env.wait_balance_msat(&payer, funded - inside * amount_msat)
            .await;
    }
    eprintln!(
        "{kind:?}: {ROUNDS} rounds in {:?} (alice's payment: {alice_takes:?}): {inside} paid by the wallet, {outside} by alice",
        t.elapsed()
    );
    // Late settlements would show up here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rep = env.running().store.audit().await.unwrap();
    assert!(rep.is_clean(), "audit problems: {:?}", rep.problems);
    assert_eq!(
        rep.unclaimed_msat, 0,
        "{kind:?}: money stranded in sys:unclaimed"
    );
    assert_eq!(rep.in_flight_msat, 0);
    let total = i64::try_from(ROUNDS).unwrap() * amount_msat;
    assert_eq!(env.balance_msat(&payee).await, total);
    assert_eq!(
        env.balance_msat(&payer).await,
        funded - inside * amount_msat
    );
    match Arc::try_unwrap(env) {
        Ok(env) => env.stop().await,
        Err(_) => panic!("env still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_and_inside_race_over_ldk() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        race(Kind::Ldk, &db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_and_inside_race_over_fake_lnd() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        race(Kind::Lnd, &db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_and_inside_race_over_fake_cln() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        race(Kind::Cln, &db).await;
    }
}
