//! A stateful, model-based fuzz test of the HTTP API.
//!
//! The real `satchel serve` binary (scripted backend, child process over one data dir and one
//! database) is driven by random sequences of operations across two accounts: wallet create,
//! invoice, internal payments (also across accounts), outside receives (`/devnet/pay`), outside
//! payments (carol's invoices succeed with the node's routing fee, a foreign node's invoices fail
//! with no route), keysend out (sync and `X-LNPAY-ASYNC` jobs), keysend to our own node, keysend
//! in (TLV 696969 naming a wallet, or nobody), transfers, webhook create, restarts (SIGTERM or
//! SIGKILL, then the same data dir and database; some runs keep carol's payments in flight and
//! the next start completes them), and adversarial ones: the other account's wallets, lnTxs,
//! jobs and webhooks, amounts over the balance, zero and negative amounts, paying an invoice
//! twice, two payers of one invoice at once, two transfers out of one wallet at once.
//!
//! A plain model (balances in msat, each wallet's history, invoice states, payments in flight)
//! predicts every answer. After every step: no 5xx anywhere, the ledger audit is clean (the
//! store's `audit()` in this process; `satchel audit` itself every [`CLI_AUDIT_EVERY`] steps,
//! after each restart and at the end), each account lists exactly its own wallets with the
//! model's balances (msat and sats), and the wallets the step touched show the model's balance
//! and history length. Every [`FULL_CHECK_EVERY`] steps, every wallet's whole history (type and
//! amount of each entry) and each account's combined history are compared with the model. At the
//! end every webhook delivery is checked to name only its own account's wallets.
//!
//! Generation is a seeded RNG, replayable without shrinking: the seed is printed; set
//! `SATCHEL_MODEL_SEED` to replay it (outcomes of the concurrent ops depend on timing, and the
//! model follows whichever outcome is legal, so a replay may drift after one). The run is bounded
//! by steps and wall time per database: `SATCHEL_MODEL_STEPS` (default [`DEFAULT_STEPS`]) and
//! `SATCHEL_MODEL_SECS` (default [`DEFAULT_SECS`]); a long manual run is e.g.
//! `SATCHEL_MODEL_STEPS=100000 SATCHEL_MODEL_SECS=1800`. `SATCHEL_MODEL_VERBOSE=1` prints every
//! step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use satchel_domain::{Msat, Network};
use satchel_scripted::ScriptedBackend;
use satchel_store::Store;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

use child::{Proc, satchel_cmd};

/// Steps per database in a default (CI) run.
const DEFAULT_STEPS: u64 = 500;
/// Wall-time bound per database in a default (CI) run, in seconds.
const DEFAULT_SECS: u64 = 60;
/// `satchel audit` (the binary) runs every this many steps.
const CLI_AUDIT_EVERY: u64 = 50;
/// Every this many steps, every wallet's own GET and history length are checked (otherwise
/// only those the step touched; the wallet lists check every balance after every step).
const FULL_CHECK_EVERY: u64 = 10;
/// Wallets per account, at most.
const MAX_WALLETS: usize = 4;
/// Webhooks per account, at most.
const MAX_WEBHOOKS: usize = 2;
/// How long an incoming credit may take to show.
const CREDIT_WAIT: Duration = Duration::from_secs(20);

struct Settings {
    seed: u64,
    steps: u64,
    secs: u64,
    verbose: bool,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer, not {v:?}"))
    })
}

fn settings() -> Settings {
    Settings {
        seed: env_u64("SATCHEL_MODEL_SEED").unwrap_or_else(rand::random),
        steps: env_u64("SATCHEL_MODEL_STEPS").unwrap_or(DEFAULT_STEPS),
        secs: env_u64("SATCHEL_MODEL_SECS").unwrap_or(DEFAULT_SECS),
        verbose: std::env::var("SATCHEL_MODEL_VERBOSE").is_ok_and(|v| v == "1"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_sqlite() {
    run(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_postgres() {
    match TestDb::postgres().await {
        Some(db) => run(db).await,
        None => eprintln!("model_postgres: skipped (SATCHEL_SKIP_PG=1)"),
    }
}

// ====================================================================== model

struct Account {
    sak: String,
    pak: String,
    /// Indexes into `World::wallets`.
    wallets: Vec<usize>,
    /// Webhook ids.
    webhooks: Vec<String>,
    /// lnTx ids this account created (invoices and payments).
    lntxs: Vec<String>,
    /// Async job ids.
    jobs: Vec<String>,
    /// A webhook subscribed to everything existed when one of its wallets' money moved.
    expects_delivery: bool,
    /// Other accounts' wallet ids this account itself put in a request (a keysend's TLV): its
    /// own records may show them.
    told: BTreeSet<String>,
}

#[derive(Clone)]
struct MWallet {
    account: usize,
    id: String,
    waka: String,
    waki: String,
    wakr: String,
    balance_msat: i64,
    /// Its visible history (WTXs): (type name, amount in msat), oldest first.
    history: Vec<(&'static str, i64)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum InvState {
    Open,
    /// Paid from outside (the node settled it).
    PaidOutside,
    /// Paid by one of our wallets inside the ledger.
    PaidInternal,
}

#[derive(Clone)]
struct MInvoice {
    wallet: usize,
    payment_request: String,
    /// 0: amountless.
    sats: i64,
    state: InvState,
}

/// An outside invoice our wallets paid (re-paying it must be refused).
struct PaidOut {
    wallet: usize,
    payment_request: String,
}

// ====================================================================== webhook receiver

type Deliveries = Arc<Mutex<Vec<(usize, String)>>>;

async fn hook(
    State(d): State<Deliveries>,
    AxPath(account): AxPath<usize>,
    body: String,
) -> &'static str {
    d.lock().unwrap().push((account, body));
    "ok"
}

/// A loopback receiver: `POST /hook/<account index>` records the body.
async fn start_receiver() -> (String, Deliveries) {
    let deliveries: Deliveries = Arc::default();
    let app = axum::Router::new()
        .route("/hook/{account}", axum::routing::post(hook))
        .with_state(deliveries.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, deliveries)
}

// ====================================================================== the world

struct Resp {
    status: StatusCode,
    json: Value,
    text: String,
    total: Option<u64>,
}

struct World {
    kind: &'static str,
    seed: u64,
    verbose: bool,
    rng: StdRng,
    db: TestDb,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
    base: String,
    http: reqwest::Client,
    /// This process's connection to the same database, for the audit after every step.
    store: Store,
    our_pubkey: String,
    carol_pubkey: String,
    /// Another node whose invoices our node cannot route to (payments to them fail).
    foreign: ScriptedBackend,
    /// Routing fee the scripted node charges for carol's invoices and keysends, in msat.
    fee_msat: i64,
    /// This run of the server keeps payments to carol in flight (see [`NodeMode`]).
    hold: bool,
    /// How this run's start completed the payments held in flight by the previous run.
    complete: Option<String>,
    /// Payments in flight: (wallet, amount msat, fee limit msat).
    held: Vec<(usize, i64, i64)>,
    hook_base: String,
    deliveries: Deliveries,

    accounts: Vec<Account>,
    wallets: Vec<MWallet>,
    invoices: Vec<MInvoice>,
    paid_out: Vec<PaidOut>,

    /// Wallets the current step touched (or tried to).
    dirty: BTreeSet<usize>,
    step: u64,
    op: String,
    counts: BTreeMap<&'static str, u64>,
    /// Milliseconds spent per operation kind, and in the checks after the steps.
    millis: BTreeMap<&'static str, u128>,
    restarts: u64,
    cli_audits: u64,
}

/// How the scripted node treats payments to carol during one server run.
#[derive(Clone)]
struct NodeMode {
    /// Routing fee of a success, in msat.
    fee_msat: i64,
    /// Payments stay in flight (outcome unknown) until the next restart completes them.
    hold: bool,
    /// At start, complete every payment still in flight: `succeed:<fee>` or `fail:NO_ROUTE`.
    complete: Option<String>,
}

fn spawn(dir: PathBuf, url: String, mode: NodeMode, label: String) -> Proc {
    Proc::serve(label, move |cmd| {
        cmd.arg("--backend")
            .arg("scripted")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--database-url")
            .arg(&url)
            .arg("--payment-wait-secs")
            // Held payments answer 202 after this wait; the others are answered at once.
            .arg(if mode.hold { "1" } else { "10" })
            .arg("--webhook-allow-private")
            .arg("true");
        if mode.hold {
            cmd.env("SATCHEL_SCRIPTED_DEFAULT", "unknown");
        } else {
            cmd.env(
                "SATCHEL_SCRIPTED_DEFAULT",
                format!("succeed:{}", mode.fee_msat),
            );
        }
        if let Some(c) = &mode.complete {
            cmd.env("SATCHEL_SCRIPTED_COMPLETE_INFLIGHT", c);
        }
    })
}

fn floor_sats(msat: i64) -> i64 {
    msat.div_euclid(1000)
}

/// LNPay's default fee limit: 5% of the amount, rounded up to whole sats.
fn default_fee_limit_msat(sats: i64) -> i64 {
    (sats * 1000 + 19_999) / 20_000 * 1000
}

/// What a payment holds while in flight: amount + fee limit, rounded up to the whole sat.
fn reserve_msat(amount_msat: i64, limit_msat: i64) -> i64 {
    (amount_msat + limit_msat + 999) / 1000 * 1000
}

/// What a wallet is charged for a routing fee (on a whole-sat amount): rounded up to the sat.
fn charged_fee_msat(fee_msat: i64) -> i64 {
    (fee_msat + 999) / 1000 * 1000
}

impl World {
    async fn new(db: TestDb, s: &Settings) -> World {
        let kind = db.kind();
        let dir = tempfile::Builder::new()
            .prefix("satchel-model-")
            .tempdir()
            .unwrap();
        let store = Store::connect(&db.url).await.expect("store");
        let mut accounts = Vec::new();
        for label in ["model-a", "model-b"] {
            let a = satchel_service::wallets::create_account(&store, label)
                .await
                .expect("account");
            accounts.push(Account {
                sak: a.secret_key.expose().to_owned(),
                pak: a.public_key.expose().to_owned(),
                wallets: Vec::new(),
                webhooks: Vec::new(),
                lntxs: Vec::new(),
                jobs: Vec::new(),
                expects_delivery: false,
                told: BTreeSet::new(),
            });
        }
        let (hook_base, deliveries) = start_receiver().await;
        let mut w = World {
            kind,
            seed: s.seed,
            verbose: s.verbose,
            rng: StdRng::seed_from_u64(s.seed),
            db,
            dir,
            proc: None,
            base: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            store,
            our_pubkey: String::new(),
            carol_pubkey: String::new(),
            foreign: ScriptedBackend::new(Network::Regtest, [0x42; 32]),
            fee_msat: 1_100,
            hold: false,
            complete: None,
            held: Vec::new(),
            hook_base,
            deliveries,
            accounts,
            wallets: Vec::new(),
            invoices: Vec::new(),
            paid_out: Vec::new(),
            dirty: BTreeSet::new(),
            step: 0,
            op: "start".into(),
            counts: BTreeMap::new(),
            millis: BTreeMap::new(),
            restarts: 0,
            cli_audits: 0,
        };
        w.launch().await;
        let info = w.devnet_get("info").await;
        w.our_pubkey = info["node_pubkey"].as_str().unwrap().to_owned();
        w.carol_pubkey = info["peers"][0]["pubkey"].as_str().unwrap().to_owned();
        w
    }

    /// Context for assertion messages: enough to replay.
    fn ctx(&self) -> String {
        format!(
            "[{} seed={} (SATCHEL_MODEL_SEED={} to replay) step={} op={}]",
            self.kind, self.seed, self.seed, self.step, self.op
        )
    }

    async fn launch(&mut self) {
        let mode = NodeMode {
            fee_msat: self.fee_msat,
            hold: self.hold,
            complete: self.complete.clone(),
        };
        let mut p = spawn(
            self.dir.path().to_owned(),
            self.db.url.clone(),
            mode,
            format!("{}/model#{}", self.kind, self.restarts),
        );
        p.wait_ready().await;
        self.base = p.base();
        self.proc = Some(p);
    }

    // ------------------------------------------------------------------ HTTP

    async fn send(&self, rb: reqwest::RequestBuilder, what: &str) -> Resp {
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {what}: request failed: {e}", self.ctx()));
        let status = r.status();
        let total = r
            .headers()
            .get("x-pagination-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = r.text().await.unwrap_or_default();
        assert!(
            !status.is_server_error(),
            "{} {what}: server error {status}: {text}",
            self.ctx()
        );
        Resp {
            status,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            total,
        }
    }

    async fn api(&self, method: Method, key: &str, path: &str, body: Option<Value>) -> Resp {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}/v1{path}", self.base))
            .header("X-Api-Key", key);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        self.send(rb, &format!("{method} {path}")).await
    }

    async fn get(&self, key: &str, path: &str) -> Resp {
        self.api(Method::GET, key, path, None).await
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> Resp {
        self.api(Method::POST, key, path, Some(body)).await
    }

    async fn devnet_get(&self, path: &str) -> Value {
        let r = self
            .send(
                self.http.get(format!("{}/devnet/{path}", self.base)),
                &format!("GET /devnet/{path}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{} {}", self.ctx(), r.text);
        r.json
    }

    async fn devnet_post(&self, path: &str, body: Value) -> Resp {
        self.send(
            self.http
                .post(format!("{}/devnet/{path}", self.base))
                .json(&body),
            &format!("POST /devnet/{path}"),
        )
        .await
    }

    fn expect(&self, r: &Resp, want: StatusCode, what: &str) {
        assert_eq!(r.status, want, "{} {what}: {}", self.ctx(), r.text);
    }

    // ------------------------------------------------------------------ model helpers

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn other(a: usize) -> usize {
        1 - a
    }

    /// Money moved on `w`: a webhook subscribed to everything will have something to deliver.
    fn moved(&mut self, w: usize) {
        self.dirty.insert(w);
        let a = self.wallets[w].account;
        if !self.accounts[a].webhooks.is_empty() {
            self.accounts[a].expects_delivery = true;
        }
    }

    /// Books history entries on `w`; its balance moves by their sum.
    fn book(&mut self, w: usize, entries: &[(&'static str, i64)]) {
        for &(name, msat) in entries {
            self.wallets[w].balance_msat += msat;
            self.wallets[w].history.push((name, msat));
        }
        self.moved(w);
    }

    /// (API key, path segment) allowed to spend from `w` (withdraw permission).
    fn spender(&mut self, w: usize) -> (String, String) {
        self.dirty.insert(w);
        let wal = self.wallets[w].clone();
        let acct = &self.accounts[wal.account];
        let (sak, pak) = (acct.sak.clone(), acct.pak.clone());
        match self.rng.random_range(0..3) {
            0 => (sak, wal.id),
            1 => (sak, wal.waka),
            _ => (pak, wal.waka),
        }
    }

    async fn balance_of(&self, w: usize) -> i64 {
        let wal = &self.wallets[w];
        let r = self
            .get(
                &self.accounts[wal.account].sak,
                &format!("/wallet/{}", wal.id),
            )
            .await;
        self.expect(&r, StatusCode::OK, "GET wallet");
        r.json["balance_msat"].as_i64().unwrap()
    }

    /// Waits for an asynchronous credit to show.
    async fn wait_balance(&self, w: usize) {
        let want = self.wallets[w].balance_msat;
        let deadline = Instant::now() + CREDIT_WAIT;
        loop {
            let b = self.balance_of(w).await;
            if b == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} balance of {} never reached {want} msat (is {b})",
                self.ctx(),
                self.wallets[w].id
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for a wallet's history to hold as many entries as the model booked.
    async fn wait_history_len(&self, w: usize) {
        let wal = &self.wallets[w];
        let want = Some(wal.history.len() as u64);
        let deadline = Instant::now() + CREDIT_WAIT;
        loop {
            let r = self
                .get(
                    &self.accounts[wal.account].sak,
                    &format!("/wallet/{}/transactions?per-page=1", wal.id),
                )
                .await;
            self.expect(&r, StatusCode::OK, "GET transactions");
            if r.total == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} history of {} never reached {want:?} entries (is {:?})",
                self.ctx(),
                wal.id,
                r.total
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    // ------------------------------------------------------------------ checks

    /// The invariants, after every step.
    async fn check(&mut self) {
        let t = Instant::now();
        let rep = self.store.audit().await.expect("audit");
        *self.millis.entry("(audit)").or_default() += t.elapsed().as_millis();
        assert!(
            rep.is_clean(),
            "{} audit problems: {:?}",
            self.ctx(),
            rep.problems
        );
        // The audit looked at the server's database (it sees every wallet).
        assert_eq!(
            rep.wallets,
            self.wallets.len() as u64,
            "{} audit saw another wallet count",
            self.ctx()
        );
        // Each account lists exactly its own wallets, with the model's balances.
        for (a, acct) in self.accounts.iter().enumerate() {
            let r = self.get(&acct.sak, "/wallets?per-page=50").await;
            self.expect(&r, StatusCode::OK, "GET wallets");
            let listed: BTreeMap<String, (Option<i64>, Option<i64>)> = r
                .json
                .as_array()
                .unwrap()
                .iter()
                .map(|w| {
                    (
                        w["id"].as_str().unwrap().to_owned(),
                        (w["balance_msat"].as_i64(), w["balance"].as_i64()),
                    )
                })
                .collect();
            let ours: BTreeMap<String, (Option<i64>, Option<i64>)> = acct
                .wallets
                .iter()
                .map(|&w| {
                    let wal = &self.wallets[w];
                    (
                        wal.id.clone(),
                        (Some(wal.balance_msat), Some(floor_sats(wal.balance_msat))),
                    )
                })
                .collect();
            assert_eq!(
                listed,
                ours,
                "{} account {a}: listed wallets (id -> balance msat, sats) differ from the model",
                self.ctx()
            );
        }
        // Each wallet on its own, and its history length: the wallets this step touched, and
        // all of them every FULL_CHECK_EVERY steps.
        let all = self.step.is_multiple_of(FULL_CHECK_EVERY) || self.op == "end";
        let dirty = std::mem::take(&mut self.dirty);
        for w in 0..self.wallets.len() {
            if !all && !dirty.contains(&w) {
                continue;
            }
            let wal = &self.wallets[w];
            let sak = &self.accounts[wal.account].sak;
            let r = self.get(sak, &format!("/wallet/{}", wal.id)).await;
            self.expect(&r, StatusCode::OK, "GET wallet");
            assert_eq!(
                (r.json["balance_msat"].as_i64(), r.json["balance"].as_i64()),
                (Some(wal.balance_msat), Some(floor_sats(wal.balance_msat))),
                "{} balance of wallet {w} ({})",
                self.ctx(),
                wal.id
            );
            // The whole history while it fits one page (the model keeps wallets small).
            let r = self
                .get(
                    sak,
                    &format!("/wallet/{}/transactions?per-page=500", wal.id),
                )
                .await;
            self.expect(&r, StatusCode::OK, "GET transactions");
            assert_eq!(
                r.total,
                Some(wal.history.len() as u64),
                "{} history length of wallet {w} ({})",
                self.ctx(),
                wal.id
            );
            // Issue 18's invariant: the `num_satoshis` of a wallet's history, added up as a
            // client does, equal its balance in sats (plus what payments held in flight have
            // reserved), and the balance is whole sats.
            // (The API's `balance_msat` was found equal to the model's just above.)
            let balance_msat = wal.balance_msat;
            assert_eq!(
                balance_msat % 1000,
                0,
                "{} balance_msat of wallet {w} ({}) is not whole sats",
                self.ctx(),
                wal.id
            );
            if wal.history.len() <= 500 {
                let shown: i64 = r
                    .json
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["num_satoshis"].as_i64().unwrap())
                    .sum();
                let reserved: i64 = self
                    .held
                    .iter()
                    .filter(|h| h.0 == w)
                    .map(|&(_, amount, limit)| reserve_msat(amount, limit))
                    .sum();
                assert_eq!(
                    shown * 1000,
                    balance_msat + reserved,
                    "{} wallet {w} ({}): history adds up to {shown} sats, balance {balance_msat} msat + held {reserved}",
                    self.ctx(),
                    wal.id
                );
            }
        }
        if all {
            self.check_histories().await;
        }
    }

    /// Every wallet's history (type and sats of each entry) and each account's combined
    /// history hold exactly what the model booked there, and nothing of another wallet.
    async fn check_histories(&self) {
        let entry = |v: &Value| {
            (
                v["wtxType"]["name"].as_str().unwrap_or("?").to_owned(),
                v["num_satoshis"].as_i64().unwrap_or(i64::MIN),
            )
        };
        for (w, wal) in self.wallets.iter().enumerate() {
            if wal.history.len() > 500 {
                continue;
            }
            let sak = &self.accounts[wal.account].sak;
            let r = self
                .get(
                    sak,
                    &format!("/wallet/{}/transactions?per-page=500", wal.id),
                )
                .await;
            self.expect(&r, StatusCode::OK, "GET full history");
            let list = r.json.as_array().unwrap();
            for v in list {
                assert_eq!(
                    v["wal"]["id"].as_str(),
                    Some(wal.id.as_str()),
                    "{} wallet {w}'s history holds another wallet's entry: {v}",
                    self.ctx()
                );
            }
            let mut got: Vec<(String, i64)> = list.iter().map(entry).collect();
            let mut want: Vec<(String, i64)> = wal
                .history
                .iter()
                .map(|&(n, msat)| (n.to_owned(), floor_sats(msat)))
                .collect();
            got.sort();
            want.sort();
            assert_eq!(
                got,
                want,
                "{} history of wallet {w} ({})",
                self.ctx(),
                wal.id
            );
        }
        for (a, acct) in self.accounts.iter().enumerate() {
            let r = self
                .get(&acct.sak, "/wallet-transactions?per-page=50")
                .await;
            self.expect(&r, StatusCode::OK, "GET account history");
            let booked: usize = acct
                .wallets
                .iter()
                .map(|&w| self.wallets[w].history.len())
                .sum();
            assert_eq!(
                r.total,
                Some(booked as u64),
                "{} account {a}'s history length",
                self.ctx()
            );
            let ours: BTreeSet<&str> = acct
                .wallets
                .iter()
                .map(|&w| self.wallets[w].id.as_str())
                .collect();
            for v in r.json.as_array().unwrap() {
                let id = v["wal"]["id"].as_str().unwrap_or("?");
                assert!(
                    ours.contains(id),
                    "{} account {a}'s history shows wallet {id}: {v}",
                    self.ctx()
                );
            }
        }
    }

    /// `satchel audit`, the binary, against the same database.
    async fn cli_audit(&mut self) {
        let mut cmd = tokio::process::Command::from(satchel_cmd());
        cmd.arg("audit")
            .arg("--database-url")
            .arg(&self.db.url)
            .arg("--data-dir")
            .arg(self.dir.path());
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("satchel audit timed out")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("audit clean"),
            "{} satchel audit failed:\n{stdout}\n{}",
            self.ctx(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.cli_audits += 1;
    }

    // ------------------------------------------------------------------ operations

    async fn op_create_wallet(&mut self, a: usize) {
        let key = if self.rng.random_bool(0.5) {
            self.accounts[a].sak.clone()
        } else {
            self.accounts[a].pak.clone()
        };
        let label = format!("w{}", self.wallets.len());
        let r = self
            .post(&key, "/wallet", json!({ "user_label": label }))
            .await;
        self.expect(&r, StatusCode::CREATED, "create wallet");
        let k = |role: &str| {
            r.json["access_keys"][role][0]
                .as_str()
                .unwrap_or_else(|| panic!("no {role} key: {}", r.text))
                .to_owned()
        };
        let wal = MWallet {
            account: a,
            id: r.json["id"].as_str().unwrap().to_owned(),
            waka: k("Wallet Admin"),
            waki: k("Wallet Invoice"),
            wakr: k("Wallet Read"),
            balance_msat: 0,
            history: Vec::new(),
        };
        self.wallets.push(wal);
        self.accounts[a].wallets.push(self.wallets.len() - 1);
        self.dirty.insert(self.wallets.len() - 1);
    }

    async fn op_invoice(&mut self, w: usize) {
        let wal = self.wallets[w].clone();
        let acct = &self.accounts[wal.account];
        let (key, seg) = match self.rng.random_range(0..4) {
            0 => (acct.sak.clone(), wal.id.clone()),
            1 => (acct.sak.clone(), wal.waki.clone()),
            2 => (acct.pak.clone(), wal.waki.clone()),
            _ => (acct.pak.clone(), wal.waka.clone()),
        };
        let sats: i64 = if self.rng.random_bool(0.1) {
            0
        } else {
            self.rng.random_range(1..=20_000)
        };
        let r = self
            .post(
                &key,
                &format!("/wallet/{seg}/invoice"),
                json!({ "num_satoshis": sats, "memo": format!("model step {}", self.step) }),
            )
            .await;
        self.expect(&r, StatusCode::CREATED, "create invoice");
        assert_eq!(
            r.json["num_satoshis"].as_i64(),
            Some(sats),
            "{}",
            self.ctx()
        );
        let pr = r.json["payment_request"].as_str().unwrap().to_owned();
        assert!(pr.starts_with("lnbcrt"), "{} {pr}", self.ctx());
        self.accounts[wal.account]
            .lntxs
            .push(r.json["id"].as_str().unwrap().to_owned());
        self.invoices.push(MInvoice {
            wallet: w,
            payment_request: pr,
            sats,
            state: InvState::Open,
        });
    }

    /// The outside world pays one of our invoices (sometimes one already paid).
    async fn op_outside_receive(&mut self) {
        let open: Vec<usize> = (0..self.invoices.len())
            .filter(|&i| self.invoices[i].state == InvState::Open)
            .collect();
        let dup = open.is_empty() || self.rng.random_bool(0.1);
        let i = if dup {
            self.rng.random_range(0..self.invoices.len())
        } else {
            self.pick(&open)
        };
        let inv = self.invoices[i].clone();
        let pay_sats = if inv.sats == 0 {
            self.rng.random_range(1..=5_000)
        } else {
            inv.sats
        };
        let mut body = json!({ "node": "alice", "payment_request": inv.payment_request });
        if inv.sats == 0 {
            body["sats"] = json!(pay_sats);
        }
        self.op = format!("{} (invoice {i} {:?})", self.op, inv.state);
        let r = self.devnet_post("pay", body).await;
        match inv.state {
            InvState::Open => {
                self.expect(&r, StatusCode::OK, "outside pays our invoice");
                assert_eq!(r.json["status"], "succeeded", "{} {}", self.ctx(), r.text);
                self.invoices[i].state = InvState::PaidOutside;
                self.book(inv.wallet, &[("ln_deposit", pay_sats * 1000)]);
                self.wait_balance(inv.wallet).await;
            }
            InvState::PaidOutside => {
                // The node itself refuses a second payment.
                self.expect(&r, StatusCode::BAD_REQUEST, "outside pays a paid invoice");
            }
            InvState::PaidInternal => {
                // Cancelled on the node (refused), or not yet: then the money lands in
                // sys:unclaimed, never in the wallet. Give the credit a moment to (not) show.
                assert!(
                    r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
                    "{} {}",
                    self.ctx(),
                    r.text
                );
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    }

    /// A wallet pays one of our invoices (any wallet's but its own, either account).
    async fn op_internal_pay(&mut self, payer: usize) {
        let candidates: Vec<usize> = (0..self.invoices.len())
            .filter(|&i| self.invoices[i].wallet != payer)
            .collect();
        if candidates.is_empty() {
            return;
        }
        // Mostly open invoices; sometimes a paid one (a second payment must be refused).
        let open: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| self.invoices[i].state == InvState::Open)
            .collect();
        let i = if open.is_empty() || self.rng.random_bool(0.15) {
            self.pick(&candidates)
        } else {
            self.pick(&open)
        };
        let inv = self.invoices[i].clone();
        let (key, seg) = self.spender(payer);
        self.op = format!(
            "{} (payer {payer}, invoice {i} of wallet {} {:?}, {} sats)",
            self.op, inv.wallet, inv.state, inv.sats
        );
        let r = self
            .post(
                &key,
                &format!("/wallet/{seg}/withdraw"),
                json!({ "payment_request": inv.payment_request }),
            )
            .await;
        let amount_msat = inv.sats * 1000;
        if inv.state != InvState::Open || inv.sats == 0 {
            self.expect(
                &r,
                StatusCode::BAD_REQUEST,
                "pay a paid or amountless invoice",
            );
        } else if self.wallets[payer].balance_msat < amount_msat {
            self.expect(&r, StatusCode::BAD_REQUEST, "internal payment over balance");
        } else {
            self.expect(&r, StatusCode::CREATED, "internal payment");
            self.invoices[i].state = InvState::PaidInternal;
            self.book(payer, &[("ln_withdrawal", -amount_msat)]);
            self.book(inv.wallet, &[("ln_deposit", amount_msat)]);
            let a = self.wallets[payer].account;
            if let Some(id) = r.json["lnTx"]["id"].as_str() {
                self.accounts[a].lntxs.push(id.to_owned());
            }
        }
    }

    /// A fee limit for a send of `sats`: None (LNPay's default), or explicit around the fee.
    fn fee_limit(&mut self) -> Option<i64> {
        let f = self.fee_msat;
        match self.rng.random_range(0..5) {
            0 => None,
            1 => Some(0),
            2 => Some(f),
            3 => Some((f - 1).max(0)),
            _ => Some(f + self.rng.random_range(0..5_000)),
        }
    }

    /// The outcome of a send of `sats` with `limit` through the scripted node, on the model.
    /// `routable`: false for a destination the node cannot reach.
    fn settle_send(
        &mut self,
        w: usize,
        r: &Resp,
        sats: i64,
        limit: Option<i64>,
        routable: bool,
        what: &str,
    ) -> bool {
        let amount = sats * 1000;
        let limit = limit.unwrap_or_else(|| default_fee_limit_msat(sats));
        if self.wallets[w].balance_msat < reserve_msat(amount, limit) {
            self.expect(r, StatusCode::BAD_REQUEST, &format!("{what} over balance"));
            return false;
        }
        if routable && self.hold {
            // The node reports it in flight: 202 pending, the reserve stays, no history yet.
            self.expect(r, StatusCode::ACCEPTED, &format!("{what} held in flight"));
            assert_eq!(r.json["status"], "pending", "{} {}", self.ctx(), r.text);
            self.wallets[w].balance_msat -= reserve_msat(amount, limit);
            self.held.push((w, amount, limit));
            self.count("(held in flight)");
            self.moved(w);
            false
        } else if routable && self.fee_msat <= limit {
            self.expect(r, StatusCode::CREATED, what);
            let fee = charged_fee_msat(self.fee_msat);
            self.book(w, &[("ln_withdrawal", -amount)]);
            if fee > 0 {
                self.book(w, &[("network_fee", -fee)]);
            }
            let a = self.wallets[w].account;
            if let Some(id) = r.json["lnTx"]["id"].as_str() {
                self.accounts[a].lntxs.push(id.to_owned());
            }
            true
        } else {
            // A definite failure: the reserve is refunded, nothing shows in the history.
            self.expect(r, StatusCode::BAD_REQUEST, &format!("{what} that fails"));
            self.moved(w);
            false
        }
    }

    fn send_sats(&mut self, w: usize) -> i64 {
        let cap = floor_sats(self.wallets[w].balance_msat) + 200;
        self.rng.random_range(1..=cap.max(1))
    }

    /// Withdraw to an outside invoice: carol's (pays the node's fee) or a foreign node's (fails).
    async fn op_outside_pay(&mut self, w: usize) {
        let sats = self.send_sats(w);
        let limit = self.fee_limit();
        let routable = self.rng.random_bool(0.8);
        let pr = if routable {
            let v = self
                .devnet_post(
                    "invoice",
                    json!({ "node": "carol", "sats": sats, "memo": "model" }),
                )
                .await;
            self.expect(&v, StatusCode::OK, "carol's invoice");
            v.json["payment_request"].as_str().unwrap().to_owned()
        } else {
            self.foreign
                .external_invoice(
                    Some(Msat::from_sats(u64::try_from(sats).unwrap()).unwrap()),
                    "foreign",
                    3600,
                )
                .0
                .as_str()
                .to_owned()
        };
        let (key, seg) = self.spender(w);
        self.op = format!(
            "{} (wallet {w}, {sats} sats, fee limit {limit:?}, fee {}, routable {routable})",
            self.op, self.fee_msat
        );
        let mut body = json!({ "payment_request": pr });
        if let Some(l) = limit {
            body["fee_limit_msat"] = json!(l);
        }
        let r = self
            .post(&key, &format!("/wallet/{seg}/withdraw"), body)
            .await;
        if self.settle_send(w, &r, sats, limit, routable, "outside payment") {
            self.paid_out.push(PaidOut {
                wallet: w,
                payment_request: pr,
            });
        }
    }

    /// Paying an outside invoice that was already paid: refused, nothing moves.
    async fn op_repay_outside(&mut self) {
        if self.paid_out.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.paid_out.len());
        let (w, pr) = (
            self.paid_out[i].wallet,
            self.paid_out[i].payment_request.clone(),
        );
        let (key, seg) = self.spender(w);
        let r = self
            .post(
                &key,
                &format!("/wallet/{seg}/withdraw"),
                json!({ "payment_request": pr }),
            )
            .await;
        self.expect(&r, StatusCode::BAD_REQUEST, "paying a paid outside invoice");
    }

    async fn op_keysend_out(&mut self, w: usize) {
        let sats = self.send_sats(w);
        let limit = self.fee_limit();
        let (key, seg) = self.spender(w);
        self.op = format!(
            "{} (wallet {w}, {sats} sats, fee limit {limit:?}, fee {})",
            self.op, self.fee_msat
        );
        let mut body = json!({ "dest_pubkey": self.carol_pubkey, "num_satoshis": sats });
        if let Some(l) = limit {
            body["fee_limit_msat"] = json!(l);
        }
        if self.rng.random_bool(0.3) {
            body["custom_records"] = json!({ "696969": "wal_somewhere_else" });
        }
        let r = self
            .post(&key, &format!("/wallet/{seg}/keysend"), body)
            .await;
        self.settle_send(w, &r, sats, limit, true, "keysend");
    }

    /// Two wallets pay the same open invoice at once: exactly one payment happens.
    async fn op_race_pay(&mut self) {
        let open: Vec<usize> = (0..self.invoices.len())
            .filter(|&i| self.invoices[i].state == InvState::Open && self.invoices[i].sats > 0)
            .collect();
        if open.is_empty() {
            return;
        }
        let i = self.pick(&open);
        let inv = self.invoices[i].clone();
        let payers: Vec<usize> = (0..self.wallets.len())
            .filter(|&w| w != inv.wallet)
            .collect();
        if payers.len() < 2 {
            return;
        }
        let p1 = self.pick(&payers);
        let p2 = loop {
            let p = self.pick(&payers);
            if p != p1 {
                break p;
            }
        };
        let (k1, s1) = self.spender(p1);
        let (k2, s2) = self.spender(p2);
        self.op = format!(
            "{} (wallets {p1} and {p2} pay invoice {i} of wallet {}, {} sats)",
            self.op, inv.wallet, inv.sats
        );
        let body = json!({ "payment_request": inv.payment_request });
        let (path1, path2) = (
            format!("/wallet/{s1}/withdraw"),
            format!("/wallet/{s2}/withdraw"),
        );
        let (r1, r2) = tokio::join!(
            self.post(&k1, &path1, body.clone()),
            self.post(&k2, &path2, body.clone())
        );
        let amount = inv.sats * 1000;
        let can = |w: usize| self.wallets[w].balance_msat >= amount;
        let mut winners = Vec::new();
        for (p, r) in [(p1, &r1), (p2, &r2)] {
            if r.status == StatusCode::CREATED {
                assert!(can(p), "{} wallet {p} paid beyond its balance", self.ctx());
                winners.push(p);
            } else {
                self.expect(r, StatusCode::BAD_REQUEST, "losing payer");
            }
        }
        let expected = usize::from(can(p1) || can(p2));
        assert_eq!(
            winners.len(),
            expected,
            "{} {} payments of one invoice: {} / {}",
            self.ctx(),
            winners.len(),
            r1.text,
            r2.text
        );
        if let Some(&p) = winners.first() {
            self.invoices[i].state = InvState::PaidInternal;
            self.book(p, &[("ln_withdrawal", -amount)]);
            self.book(inv.wallet, &[("ln_deposit", amount)]);
        }
    }

    /// Two transfers out of one wallet at once, each within its balance but maybe not both:
    /// every refusal is justified by what the other took, and the balance never goes negative.
    async fn op_race_spend(&mut self, w: usize) {
        let a = self.wallets[w].account;
        let mates: Vec<usize> = self.accounts[a]
            .wallets
            .iter()
            .copied()
            .filter(|&m| m != w)
            .collect();
        let have = floor_sats(self.wallets[w].balance_msat);
        if mates.is_empty() || have < 2 {
            return;
        }
        let d1 = self.pick(&mates);
        let d2 = self.pick(&mates);
        let a1 = self.rng.random_range(1..=have);
        let a2 = self.rng.random_range(1..=have);
        let (k1, s1) = self.spender(w);
        let (k2, s2) = self.spender(w);
        let (id1, id2) = (self.wallets[d1].id.clone(), self.wallets[d2].id.clone());
        self.op = format!(
            "{} (wallet {w} with {have} sats sends {a1} to {d1} and {a2} to {d2} at once)",
            self.op
        );
        let (path1, path2) = (
            format!("/wallet/{s1}/transfer"),
            format!("/wallet/{s2}/transfer"),
        );
        let (r1, r2) = tokio::join!(
            self.post(
                &k1,
                &path1,
                json!({ "dest_wallet_id": id1, "num_satoshis": a1 })
            ),
            self.post(
                &k2,
                &path2,
                json!({ "dest_wallet_id": id2, "num_satoshis": a2 })
            )
        );
        let before = self.wallets[w].balance_msat;
        let mut spent = 0;
        for (r, amount) in [(&r1, a1), (&r2, a2)] {
            if r.status == StatusCode::CREATED {
                spent += amount * 1000;
            } else {
                self.expect(r, StatusCode::BAD_REQUEST, "concurrent transfer refused");
            }
        }
        assert!(
            spent <= before,
            "{} overdraft: spent {spent} of {before} msat",
            self.ctx()
        );
        for (r, amount, d) in [(&r1, a1, d1), (&r2, a2, d2)] {
            if r.status == StatusCode::CREATED {
                self.book(w, &[("ln_transfer_out", -amount * 1000)]);
                self.book(d, &[("ln_transfer_in", amount * 1000)]);
            } else {
                assert!(
                    before - spent < amount * 1000,
                    "{} a transfer of {amount} sats was refused with {} msat left: {}",
                    self.ctx(),
                    before - spent,
                    r.text
                );
            }
        }
    }

    /// A keysend from one of our wallets to our own node, routed by TLV to a wallet: it leaves
    /// the payer over the node (fee 0) and arrives as an incoming keysend.
    async fn op_keysend_self(&mut self, w: usize) {
        let sats = self.send_sats(w);
        let target = self.rng.random_range(0..self.wallets.len());
        let (key, seg) = self.spender(w);
        let limit = self.fee_limit();
        self.op = format!(
            "{} ({w} -> {target} over our own node, {sats} sats, fee limit {limit:?})",
            self.op
        );
        let mut body = json!({
            "dest_pubkey": self.our_pubkey,
            "num_satoshis": sats,
            "custom_records": { "696969": self.wallets[target].id },
        });
        if let Some(l) = limit {
            body["fee_limit_msat"] = json!(l);
        }
        let payer_account = self.wallets[w].account;
        let target_id = self.wallets[target].id.clone();
        self.accounts[payer_account].told.insert(target_id);
        let r = self
            .post(&key, &format!("/wallet/{seg}/keysend"), body)
            .await;
        let amount = sats * 1000;
        let reserve = reserve_msat(
            amount,
            limit.unwrap_or_else(|| default_fee_limit_msat(sats)),
        );
        if self.wallets[w].balance_msat < reserve {
            self.expect(
                &r,
                StatusCode::BAD_REQUEST,
                "keysend to ourselves over balance",
            );
            return;
        }
        self.expect(&r, StatusCode::CREATED, "keysend to ourselves");
        self.book(w, &[("ln_withdrawal", -amount)]);
        self.book(target, &[("ln_deposit", amount)]);
        self.wait_balance(target).await;
        self.wait_balance(w).await;
    }

    /// `X-LNPAY-ASYNC` keysend to carol: a job, polled until it ends; it moves money exactly
    /// as a synchronous keysend would.
    async fn op_keysend_async(&mut self, w: usize) {
        let sats = self.send_sats(w);
        let limit = self.fee_limit();
        let (key, seg) = self.spender(w);
        self.op = format!(
            "{} (wallet {w}, {sats} sats, fee limit {limit:?}, fee {})",
            self.op, self.fee_msat
        );
        let mut body = json!({ "dest_pubkey": self.carol_pubkey, "num_satoshis": sats });
        if let Some(l) = limit {
            body["fee_limit_msat"] = json!(l);
        }
        let path = format!("/v1/wallet/{seg}/keysend");
        let r = self
            .send(
                self.http
                    .post(format!("{}{path}", self.base))
                    .header("X-Api-Key", &key)
                    .header("X-LNPAY-ASYNC", "1")
                    .json(&body),
                &format!("POST {path} (async)"),
            )
            .await;
        let amount = sats * 1000;
        let limit_msat = limit.unwrap_or_else(|| default_fee_limit_msat(sats));
        let reserve = reserve_msat(amount, limit_msat);
        let affordable = self.wallets[w].balance_msat >= reserve;
        if r.status == StatusCode::BAD_REQUEST {
            // Refused up front (over balance); nothing queued.
            assert!(
                !affordable,
                "{} async keysend refused: {}",
                self.ctx(),
                r.text
            );
            return;
        }
        self.expect(&r, StatusCode::OK, "async keysend");
        let job = r.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{} no job id: {}", self.ctx(), r.text))
            .to_owned();
        let a = self.wallets[w].account;
        self.accounts[a].jobs.push(job.clone());
        let sak = self.accounts[a].sak.clone();
        let deadline = Instant::now() + CREDIT_WAIT;
        let j = loop {
            let j = self.get(&sak, &format!("/job/{job}")).await;
            self.expect(&j, StatusCode::OK, "GET job");
            if j.json["status"] != "queued" {
                break j;
            }
            assert!(
                Instant::now() < deadline,
                "{} job {job} never ended",
                self.ctx()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let succeeded = affordable && self.fee_msat <= limit_msat;
        assert_eq!(
            j.json["status"],
            if succeeded { "succeeded" } else { "failed" },
            "{} job {job}: {}",
            self.ctx(),
            j.text
        );
        if succeeded {
            let fee = charged_fee_msat(self.fee_msat);
            self.book(w, &[("ln_withdrawal", -amount)]);
            if fee > 0 {
                self.book(w, &[("network_fee", -fee)]);
            }
        } else {
            self.moved(w);
        }
    }

    /// A transfer from a wallet to itself: refused, nothing moves.
    async fn op_transfer_self(&mut self, w: usize) {
        let sats = self.send_sats(w);
        let (key, seg) = self.spender(w);
        let id = self.wallets[w].id.clone();
        self.op = format!("{} ({sats} sats)", self.op);
        let r = self
            .post(
                &key,
                &format!("/wallet/{seg}/transfer"),
                json!({ "dest_wallet_id": id, "num_satoshis": sats }),
            )
            .await;
        self.expect(&r, StatusCode::BAD_REQUEST, "transfer to itself");
    }

    /// An outside node keysends to us, naming a wallet (or nobody: sys:unclaimed).
    async fn op_keysend_in(&mut self) {
        let sats = self.rng.random_range(1..=10_000);
        let target = if self.wallets.is_empty() || self.rng.random_bool(0.15) {
            None
        } else {
            Some(self.rng.random_range(0..self.wallets.len()))
        };
        let tlv = match target {
            Some(w) => json!({ "696969": self.wallets[w].id }),
            None if self.rng.random_bool(0.5) => json!({ "696969": "wal_nobody0000000000" }),
            None => json!({}),
        };
        self.op = format!("{} (to {target:?}, {sats} sats)", self.op);
        let r = self
            .devnet_post(
                "keysend",
                json!({ "node": "alice", "to": self.our_pubkey, "sats": sats, "tlv": tlv }),
            )
            .await;
        self.expect(&r, StatusCode::OK, "keysend to us");
        match target {
            Some(w) => {
                self.book(w, &[("ln_deposit", sats * 1000)]);
                self.wait_balance(w).await;
            }
            None => tokio::time::sleep(Duration::from_millis(150)).await,
        }
    }

    async fn op_transfer(&mut self, src: usize) {
        let a = self.wallets[src].account;
        let mates: Vec<usize> = self.accounts[a]
            .wallets
            .iter()
            .copied()
            .filter(|&w| w != src)
            .collect();
        if mates.is_empty() {
            return;
        }
        let dst = self.pick(&mates);
        let sats = self.send_sats(src);
        let (key, seg) = self.spender(src);
        let dest = match self.rng.random_range(0..3) {
            0 => self.wallets[dst].id.clone(),
            1 => self.wallets[dst].waka.clone(),
            _ => self.wallets[dst].waki.clone(),
        };
        self.op = format!("{} ({src} -> {dst}, {sats} sats)", self.op);
        let r = self
            .post(
                &key,
                &format!("/wallet/{seg}/transfer"),
                json!({ "dest_wallet_id": dest, "num_satoshis": sats, "memo": "model" }),
            )
            .await;
        if self.wallets[src].balance_msat < sats * 1000 {
            self.expect(&r, StatusCode::BAD_REQUEST, "transfer over balance");
        } else {
            self.expect(&r, StatusCode::CREATED, "transfer");
            self.book(src, &[("ln_transfer_out", -sats * 1000)]);
            self.book(dst, &[("ln_transfer_in", sats * 1000)]);
        }
    }

    async fn op_webhook(&mut self, a: usize) {
        let url = format!("{}/hook/{a}", self.hook_base);
        let body = if self.rng.random_bool(0.5) {
            json!({ "endpoint_url": url, "default_all": true })
        } else {
            json!({ "endpoint_url": url, "events": [
                "wallet_created", "wallet_send", "wallet_send_failure", "wallet_receive",
                "wallet_transfer_in", "wallet_transfer_out", "network_fee_incurred"
            ] })
        };
        let key = self.accounts[a].sak.clone();
        let r = self.post(&key, "/webhooks", body).await;
        self.expect(&r, StatusCode::CREATED, "create webhook");
        let id = r.json["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{} webhook without id: {}", self.ctx(), r.text))
            .to_owned();
        self.accounts[a].webhooks.push(id);
    }

    /// Stops (SIGTERM) or kills (SIGKILL) the server and starts it again over the same data dir
    /// and database, with another routing fee.
    async fn op_restart(&mut self) {
        let kill = self.rng.random_bool(0.5);
        let fee = self.pick(&[0i64, 1_000, 1_100, 2_500]) + self.rng.random_range(0..3) * 7;
        self.op = format!(
            "{} ({}, fee {} -> {fee})",
            self.op,
            if kill { "SIGKILL" } else { "SIGTERM" },
            self.fee_msat
        );
        let mut p = self.proc.take().unwrap();
        if kill {
            p.kill();
        } else {
            p.stop().await;
        }
        drop(p);
        self.fee_msat = fee;
        self.restarts += 1;
        // Payments left in flight end now, as the node says at this start.
        let held = std::mem::take(&mut self.held);
        let succeed = self.rng.random_bool(0.5);
        self.complete = if self.hold {
            Some(if succeed {
                format!("succeed:{fee}")
            } else {
                "fail:NO_ROUTE".to_owned()
            })
        } else {
            None
        };
        self.hold = self.rng.random_bool(0.25);
        self.op = format!(
            "{} ({} held payments complete {:?}; this run holds: {})",
            self.op,
            held.len(),
            self.complete,
            self.hold
        );
        self.launch().await;
        for &(w, amount, limit) in &held {
            if succeed && fee <= limit {
                self.wallets[w].balance_msat += reserve_msat(amount, limit);
                self.book(w, &[("ln_withdrawal", -amount)]);
                if fee > 0 {
                    self.book(w, &[("network_fee", -charged_fee_msat(fee))]);
                }
            } else {
                // A definite failure: the whole reserve comes back.
                self.wallets[w].balance_msat += reserve_msat(amount, limit);
                self.moved(w);
            }
        }
        for &(w, _, _) in &held {
            self.wait_balance(w).await;
            // A settlement can leave the balance where the reserve put it (a fee rounded up to
            // the sat may use the whole limit): wait for its entries too.
            self.wait_history_len(w).await;
        }
        self.cli_audit().await;
    }

    /// One request of account `x` at account `y`'s wallets, lnTxs or webhooks. Must be refused
    /// (401/403/404) without data; the balance checks after the step prove nothing moved.
    async fn op_cross_tenant(&mut self, x: usize) {
        let y = Self::other(x);
        if self.accounts[y].wallets.is_empty() {
            return;
        }
        let v = self.pick(&self.accounts[y].wallets.clone());
        let victim = self.wallets[v].clone();
        self.dirty.insert(v);
        let me = self.accounts[x].sak.clone();
        let my_pak = self.accounts[x].pak.clone();
        let my_wallet = self.accounts[x]
            .wallets
            .first()
            .map(|&w| self.wallets[w].clone());
        let some_pr = self
            .invoices
            .iter()
            .find(|i| i.state == InvState::Open && self.wallets[i.wallet].account == x)
            .map(|i| i.payment_request.clone())
            .unwrap_or_else(|| "lnbcrt1invalid".to_owned());
        let seg = match self.rng.random_range(0..4) {
            0 => victim.id.clone(),
            1 => victim.waka.clone(),
            2 => victim.waki.clone(),
            _ => victim.wakr.clone(),
        };
        let key = match self.rng.random_range(0..3) {
            0 => me.clone(),
            1 => my_pak.clone(),
            // A wallet key of our own used as the API key.
            _ => my_wallet.as_ref().map_or(me.clone(), |w| w.waka.clone()),
        };
        let probe = self.rng.random_range(0..11);
        let (method, path, body) = match probe {
            0 => (Method::GET, format!("/wallet/{seg}"), None),
            1 => (Method::GET, format!("/wallet/{seg}/transactions"), None),
            2 => (
                Method::POST,
                format!("/wallet/{seg}/invoice"),
                Some(json!({ "num_satoshis": 10 })),
            ),
            3 => (
                Method::POST,
                format!("/wallet/{seg}/withdraw"),
                Some(json!({ "payment_request": some_pr })),
            ),
            4 => (
                Method::POST,
                format!("/wallet/{seg}/keysend"),
                Some(json!({ "dest_pubkey": self.carol_pubkey, "num_satoshis": 1 })),
            ),
            5 => (
                Method::POST,
                format!("/wallet/{seg}/transfer"),
                Some(json!({
                    "dest_wallet_id": my_wallet.as_ref().map_or(victim.id.clone(), |w| w.id.clone()),
                    "num_satoshis": 1
                })),
            ),
            6 if !self.accounts[y].jobs.is_empty() => {
                let jobs = self.accounts[y].jobs.clone();
                (Method::GET, format!("/job/{}", jobs[jobs.len() - 1]), None)
            }
            6 | 7 => {
                let lntx = self.accounts[y].lntxs.clone();
                if lntx.is_empty() {
                    return;
                }
                let id = self
                    .pick(&lntx.iter().map(String::as_str).collect::<Vec<_>>())
                    .to_owned();
                (Method::GET, format!("/lntx/{id}"), None)
            }
            8 => {
                let hooks = self.accounts[y].webhooks.clone();
                if hooks.is_empty() {
                    return;
                }
                (Method::DELETE, format!("/webhooks/{}", hooks[0]), None)
            }
            9 => {
                let hooks = self.accounts[y].webhooks.clone();
                if hooks.is_empty() {
                    return;
                }
                (
                    Method::GET,
                    format!("/webhooks/{}/deliveries", hooks[0]),
                    None,
                )
            }
            _ => {
                // Transfer from our own wallet into theirs: another account is not a
                // transfer destination.
                let Some(mine) = my_wallet.clone() else {
                    return;
                };
                (
                    Method::POST,
                    format!("/wallet/{}/transfer", mine.id),
                    Some(json!({ "dest_wallet_id": victim.id, "num_satoshis": 1 })),
                )
            }
        };
        let key = if probe == 10 { me.clone() } else { key };
        self.op = format!("{} ({method} {path} as account {x})", self.op);
        let r = self.api(method, &key, &path, body).await;
        if probe == 10 {
            // The path is ours; the destination is the refused part: a 400 is the answer LNPay
            // gives for a bad destination.
            assert!(
                r.status.is_client_error(),
                "{} transfer to another account's wallet: {}",
                self.ctx(),
                r.text
            );
        } else {
            assert!(
                matches!(
                    r.status,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
                ),
                "{} cross-tenant request answered {}: {}",
                self.ctx(),
                r.status,
                r.text
            );
        }
        // An error envelope, never a record.
        assert!(
            r.json.get("id").is_none()
                && r.json.get("balance_msat").is_none()
                && r.json.get("payment_request").is_none(),
            "{} cross-tenant request returned data: {}",
            self.ctx(),
            r.text
        );
        for secret in [&victim.waka, &victim.waki, &victim.wakr] {
            assert!(
                !r.text.contains(secret.as_str()) || path.contains(secret.as_str()),
                "{} cross-tenant answer leaks a key: {}",
                self.ctx(),
                r.text
            );
        }
        // Our webhook listing never shows theirs.
        if probe == 8 || probe == 9 {
            let r = self.get(&me, "/webhooks").await;
            self.expect(&r, StatusCode::OK, "list webhooks");
            for h in &self.accounts[y].webhooks {
                assert!(!r.text.contains(h.as_str()), "{} {}", self.ctx(), r.text);
            }
        }
    }

    /// Zero, negative and malformed amounts: 400, nothing moves.
    async fn op_bad_amount(&mut self, w: usize) {
        let (key, seg) = self.spender(w);
        let mates: Vec<usize> = self.accounts[self.wallets[w].account]
            .wallets
            .iter()
            .copied()
            .filter(|&m| m != w)
            .collect();
        let dest = mates
            .first()
            .map_or(self.wallets[w].id.clone(), |&m| self.wallets[m].id.clone());
        let carol = self.carol_pubkey.clone();
        let n = self.pick(&[0i64, -1, -1000]);
        let roll = self.rng.random_range(0..8);
        // An amountless outside invoice: nothing says how much to pay.
        let amountless = if roll >= 6 {
            let v = self
                .devnet_post("invoice", json!({ "node": "carol", "sats": 0 }))
                .await;
            self.expect(&v, StatusCode::OK, "carol's amountless invoice");
            v.json["payment_request"].as_str().unwrap().to_owned()
        } else {
            String::new()
        };
        let (path, body) = match roll {
            6 | 7 => ("withdraw", json!({ "payment_request": amountless })),
            0 => ("invoice", json!({ "num_satoshis": -5 })),
            1 => (
                "transfer",
                json!({ "dest_wallet_id": dest, "num_satoshis": n }),
            ),
            2 => (
                "keysend",
                json!({ "dest_pubkey": carol, "num_satoshis": n }),
            ),
            3 => (
                "keysend",
                json!({ "dest_pubkey": carol, "num_satoshis": 1, "fee_limit_msat": -1 }),
            ),
            4 => (
                "withdraw",
                json!({ "payment_request": "lnbcrt1garbage", "fee_limit_msat": 0 }),
            ),
            _ => (
                "transfer",
                json!({ "dest_wallet_id": dest, "num_satoshis": "ten" }),
            ),
        };
        self.op = format!("{} ({path} {body})", self.op);
        let r = self
            .post(&key, &format!("/wallet/{seg}/{path}"), body)
            .await;
        self.expect(&r, StatusCode::BAD_REQUEST, "bad amount");
    }

    // ------------------------------------------------------------------ driver

    fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    async fn step_once(&mut self) {
        let a = self.rng.random_range(0..2);
        if self.accounts[a].wallets.is_empty() {
            self.op = format!("create_wallet a{a}");
            self.count("create_wallet");
            return self.op_create_wallet(a).await;
        }
        let w = self.pick(&self.accounts[a].wallets.clone());
        // Weighted choice of the next operation.
        let table: &[(&'static str, u32)] = &[
            ("create_wallet", 3),
            ("invoice", 14),
            ("outside_receive", 12),
            ("internal_pay", 12),
            ("outside_pay", 10),
            ("repay_outside", 2),
            ("keysend_out", 6),
            ("keysend_in", 7),
            ("transfer", 10),
            ("webhook", 1),
            ("restart", 2),
            ("cross_tenant", 10),
            ("bad_amount", 5),
            ("race_pay", 3),
            ("race_spend", 3),
            ("keysend_self", 3),
            ("keysend_async", 3),
            ("transfer_self", 1),
        ];
        let total: u32 = table.iter().map(|(_, n)| n).sum();
        let mut roll = self.rng.random_range(0..total);
        let mut name = table[0].0;
        for (n, weight) in table {
            if roll < *weight {
                name = n;
                break;
            }
            roll -= weight;
        }
        let name = match name {
            "create_wallet" if self.accounts[a].wallets.len() >= MAX_WALLETS => "invoice",
            "webhook" if self.accounts[a].webhooks.len() >= MAX_WEBHOOKS => "invoice",
            "outside_receive" | "internal_pay" if self.invoices.is_empty() => "invoice",
            n => n,
        };
        self.op = format!("{name} a{a} w{w}");
        if self.verbose {
            eprintln!("[{} step {}] {}", self.kind, self.step, self.op);
        }
        self.count(name);
        let t = Instant::now();
        match name {
            "create_wallet" => self.op_create_wallet(a).await,
            "invoice" => self.op_invoice(w).await,
            "outside_receive" => self.op_outside_receive().await,
            "internal_pay" => self.op_internal_pay(w).await,
            "outside_pay" => self.op_outside_pay(w).await,
            "repay_outside" => self.op_repay_outside().await,
            "keysend_out" => self.op_keysend_out(w).await,
            "keysend_in" => self.op_keysend_in().await,
            "transfer" => self.op_transfer(w).await,
            "webhook" => self.op_webhook(a).await,
            "restart" => self.op_restart().await,
            "cross_tenant" => self.op_cross_tenant(a).await,
            "bad_amount" => self.op_bad_amount(w).await,
            "race_pay" => self.op_race_pay().await,
            "race_spend" => self.op_race_spend(w).await,
            "keysend_self" => self.op_keysend_self(w).await,
            "keysend_async" if self.hold => self.op_keysend_out(w).await,
            "keysend_async" => self.op_keysend_async(w).await,
            "transfer_self" => self.op_transfer_self(w).await,
            other => unreachable!("{other}"),
        }
        *self.millis.entry(name).or_default() += t.elapsed().as_millis();
    }

    /// Every delivery names only wallets of the account that subscribed; an account whose
    /// money moved while it had a webhook got deliveries.
    async fn check_deliveries(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: BTreeSet<usize> = self
                .deliveries
                .lock()
                .unwrap()
                .iter()
                .map(|(a, _)| *a)
                .collect();
            let missing: Vec<usize> = (0..2)
                .filter(|&a| self.accounts[a].expects_delivery && !got.contains(&a))
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} no webhook delivery for account(s) {missing:?}",
                self.ctx()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deliveries = self.deliveries.lock().unwrap().clone();
        for (a, body) in &deliveries {
            for &w in &self.accounts[Self::other(*a)].wallets {
                let wal = &self.wallets[w];
                for secret in [&wal.id, &wal.waka, &wal.waki, &wal.wakr] {
                    assert!(
                        !body.contains(secret.as_str()) || self.accounts[*a].told.contains(secret),
                        "{} account {a}'s webhook got the other account's wallet {}: {body}",
                        self.ctx(),
                        wal.id
                    );
                }
            }
        }
        eprintln!(
            "model[{}]: {} webhook deliveries checked",
            self.kind,
            deliveries.len()
        );
    }
}

async fn run(db: TestDb) {
    let s = settings();
    let kind = db.kind();
    eprintln!(
        "model[{kind}]: seed {} (replay: SATCHEL_MODEL_SEED={}), up to {} steps / {} s",
        s.seed, s.seed, s.steps, s.secs
    );
    let started = Instant::now();
    let mut w = World::new(db, &s).await;
    let bound = Duration::from_secs(s.secs);
    while w.step < s.steps && started.elapsed() < bound {
        w.step += 1;
        w.step_once().await;
        let t = Instant::now();
        w.check().await;
        *w.millis.entry("(checks)").or_default() += t.elapsed().as_millis();
        if w.step.is_multiple_of(CLI_AUDIT_EVERY) {
            w.cli_audit().await;
        }
    }
    w.op = "end".into();
    w.cli_audit().await;
    w.check_deliveries().await;
    let moved: i64 = w.wallets.iter().map(|x| x.balance_msat).sum();
    eprintln!(
        "model[{kind}]: {} steps in {:.1} s (seed {}), {} restarts, {} `satchel audit` runs, {} wallets holding {moved} msat; ops: {:?}; ms per kind: {:?}",
        w.step,
        started.elapsed().as_secs_f64(),
        w.seed,
        w.restarts,
        w.cli_audits,
        w.wallets.len(),
        w.counts,
        w.millis
    );
    assert!(w.step >= 20, "only {} steps ran in {} s", w.step, s.secs);
    if let Some(mut p) = w.proc.take() {
        p.stop().await;
    }
}
