//! Crash injection against the real `satchel` binary.
//!
//! Each scenario starts `satchel serve` as a child process with `SATCHEL_CRASH_AT=<kill point>`
//! (see `satchel_store::crash`), drives it over HTTP until the child announces
//! `SATCHEL_CRASHPOINT <name>` on stderr (the thread that reached it is blocked there), SIGKILLs
//! it, inspects what survived (our books through `satchel payments list`, the scripted node's
//! own state file), restarts it without the kill point and checks that every payment ended with
//! exactly one outcome, that balances match what the node really did, and that
//! `satchel audit` is clean. Every scenario runs on SQLite and Postgres (concurrently); the
//! ones at the end run on the embedded LDK devnet instead of the scripted node (withdrawals to
//! carol, and incoming keysends with custom records killed at each step of their booking).
//!
//! The scripted node persists its state under the data dir (`scripted-node.json`), as a real
//! node keeps its own, so the outside world remembers what happened while Satchel was dead.
//! Payment outcomes of the child are chosen with `SATCHEL_SCRIPTED_DEFAULT` and, for payments
//! still in flight at a restart, `SATCHEL_SCRIPTED_COMPLETE_INFLIGHT`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

use child::{Proc, free_port, satchel_cmd, sigterm};

/// Routing fee the scripted node reports for carol's invoices in these tests (1 sat + 100 msat,
/// the devnet hub's fee for 100 sat: 1000 msat + 1000 ppm).
const FEE_MSAT: i64 = 1_100;
/// What the wallet is charged for it: rounded up to the sat.
const CHARGED_FEE_MSAT: i64 = 2_000;
const FUNDED_SATS: i64 = 1_000;
const PAY_SATS: i64 = 100;

// ====================================================================== child processes

/// One Satchel installation: a data dir (node state, seed) and a database.
struct Install {
    kind: &'static str,
    backend: &'static str,
    dir: tempfile::TempDir,
    db: TestDb,
}

impl Install {
    fn new(db: TestDb, backend: &'static str) -> Install {
        Install {
            kind: db.kind(),
            backend,
            dir: tempfile::Builder::new()
                .prefix("satchel-crash-")
                .tempdir()
                .unwrap(),
            db,
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> &str {
        &self.db.url
    }

    fn label(&self, what: &str) -> String {
        format!("{}/{}/{what}", self.kind, self.backend)
    }
}

/// How to start `serve`.
#[derive(Default, Clone)]
struct Launch {
    crash_at: Option<&'static str>,
    scripted_default: Option<String>,
    complete_inflight: Option<String>,
    payment_wait_secs: Option<u64>,
}

fn spawn(inst: &Install, what: &str, l: &Launch) -> Proc {
    let (backend, data_dir, url) = (
        inst.backend,
        inst.data_dir().to_owned(),
        inst.url().to_owned(),
    );
    let l = l.clone();
    Proc::serve(inst.label(what), move |cmd| {
        cmd.arg("--backend")
            .arg(backend)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--database-url")
            .arg(&url)
            .arg("--payment-wait-secs")
            .arg(l.payment_wait_secs.unwrap_or(1).to_string())
            .arg("--webhook-allow-private")
            .arg("true");
        if let Some(c) = l.crash_at {
            cmd.env("SATCHEL_CRASH_AT", c);
        }
        if let Some(d) = &l.scripted_default {
            cmd.env("SATCHEL_SCRIPTED_DEFAULT", d);
        }
        if let Some(c) = &l.complete_inflight {
            cmd.env("SATCHEL_SCRIPTED_COMPLETE_INFLIGHT", c);
        }
    })
}

// ====================================================================== CLI

async fn cli(inst: &Install, args: &[&str]) -> (bool, String) {
    let mut cmd = tokio::process::Command::from(satchel_cmd());
    cmd.args(args)
        .arg("--database-url")
        .arg(inst.url())
        .arg("--data-dir")
        .arg(inst.data_dir());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("CLI timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "satchel {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), stdout)
}

/// `satchel audit` exits 0 and says "audit clean".
async fn assert_audit_clean(inst: &Install) {
    let (ok, out) = cli(inst, &["audit"]).await;
    assert!(
        ok && out.contains("audit clean"),
        "{}: audit failed:\n{out}",
        inst.label("audit")
    );
}

#[derive(Debug)]
struct Unresolved {
    id: String,
    status: String,
    hash: String,
}

/// `satchel payments list`: outgoing payments still holding a reserve.
async fn unresolved(inst: &Install) -> Vec<Unresolved> {
    let (ok, out) = cli(inst, &["payments", "list"]).await;
    assert!(ok, "payments list failed:\n{out}");
    out.lines()
        .filter(|l| l.starts_with("lntx_"))
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            Unresolved {
                id: t[0].to_owned(),
                status: t[t.len() - 3].to_owned(),
                hash: t[t.len() - 1].to_owned(),
            }
        })
        .collect()
}

/// The scripted node's own record of an outgoing payment (from its state file).
fn node_payment(inst: &Install, hash: &str) -> Option<Value> {
    let text = std::fs::read_to_string(inst.data_dir().join("scripted-node.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["payments"].get(hash).cloned()
}

fn node_sends(inst: &Install, hash: &str) -> u64 {
    node_payment(inst, hash).map_or(0, |p| p["sends"].as_u64().unwrap())
}

// ====================================================================== HTTP client

#[derive(Clone, Debug)]
struct Wallet {
    id: String,
    waka: String,
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    sak: String,
}

impl Api {
    fn new(p: &Proc, sak: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: p.base(),
            sak: sak.to_owned(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}/v1{path}", self.base))
                .header("X-Api-Key", &self.sak),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}/v1{path}", self.base))
                .header("X-Api-Key", &self.sak)
                .json(&body),
        )
        .await
    }

    async fn devnet(&self, path: &str, body: Value) -> Value {
        let (status, v) = self
            .send(
                self.http
                    .post(format!("{}/devnet/{path}", self.base))
                    .json(&body),
            )
            .await;
        assert!(status.is_success(), "/devnet/{path}: {status} {v}");
        v
    }

    async fn create_wallet(&self, label: &str) -> Wallet {
        let (status, v) = self.post("/wallet", json!({ "user_label": label })).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        Wallet {
            id: v["id"].as_str().unwrap().to_owned(),
            waka: v["access_keys"]["Wallet Admin"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        }
    }

    async fn balance_msat(&self, w: &Wallet) -> i64 {
        let (status, v) = self.get(&format!("/wallet/{}", w.id)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["balance_msat"].as_i64().unwrap()
    }

    async fn wait_balance(&self, w: &Wallet, msat: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let b = self.balance_msat(w).await;
            if b == msat {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "balance of {} never reached {msat} msat (is {b})",
                w.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An invoice of `w` (its lnTx).
    async fn invoice(&self, w: &Wallet, sats: i64) -> Value {
        let (status, v) = self
            .post(
                &format!("/wallet/{}/invoice", w.waka),
                json!({ "num_satoshis": sats, "memo": "crash test" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    /// Alice pays one of our invoices.
    async fn alice_pays(&self, payment_request: &str) {
        let v = self
            .devnet(
                "pay",
                json!({ "node": "alice", "payment_request": payment_request }),
            )
            .await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }

    /// Funds `w` through the outside world and waits for the credit.
    async fn fund(&self, w: &Wallet, sats: i64) {
        let before = self.balance_msat(w).await;
        let inv = self.invoice(w, sats).await;
        self.alice_pays(inv["payment_request"].as_str().unwrap())
            .await;
        self.wait_balance(w, before + sats * 1000).await;
    }

    /// An invoice of peer `node`: (payment request, payment hash).
    async fn outside_invoice(&self, node: &str, sats: i64) -> (String, String) {
        let v = self
            .devnet("invoice", json!({ "node": node, "sats": sats }))
            .await;
        (
            v["payment_request"].as_str().unwrap().to_owned(),
            v["payment_hash"].as_str().unwrap().to_owned(),
        )
    }

    async fn withdraw(&self, w: &Wallet, payment_request: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/wallet/{}/withdraw", w.waka),
            json!({ "payment_request": payment_request }),
        )
        .await
    }

    /// Fires a request that will never be answered (the server is killed while handling it).
    fn withdraw_in_background(&self, w: &Wallet, payment_request: &str) {
        let (api, w, pr) = (self.clone(), w.clone(), payment_request.to_owned());
        tokio::spawn(async move {
            let _ = api
                .http
                .post(format!("{}/v1/wallet/{}/withdraw", api.base, w.waka))
                .header("X-Api-Key", &api.sak)
                .json(&json!({ "payment_request": pr }))
                .send()
                .await;
        });
    }

    async fn lntx(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/lntx/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// Polls an outgoing payment until it is settled (1) or failed (-1).
    async fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let l = self.lntx(id).await;
            if l["settled"] != 0 {
                return l;
            }
            assert!(Instant::now() < deadline, "{id} never resolved: {l}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The wallet's history (WTXs), newest first.
    async fn wtxs(&self, w: &Wallet) -> Vec<Value> {
        let (status, v) = self.get(&format!("/wallet/{}/transactions", w.id)).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v.as_array().unwrap().clone()
    }
}

fn wtx_type(w: &Value) -> &str {
    w["wtxType"]["name"].as_str().unwrap()
}

fn count_type(wtxs: &[Value], name: &str) -> usize {
    wtxs.iter().filter(|w| wtx_type(w) == name).count()
}

/// Runs `f` on a fresh SQLite and a fresh Postgres installation (unless `SATCHEL_SKIP_PG=1`),
/// concurrently.
async fn on_each_db<F, Fut>(backend: &'static str, f: F)
where
    F: Fn(Install) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let installs: Vec<Install> = TestDb::all()
        .await
        .into_iter()
        .map(|(_, db)| Install::new(db, backend))
        .collect();
    let kinds: Vec<&str> = installs.iter().map(|i| i.kind).collect();
    futures::future::join_all(installs.into_iter().map(f)).await;
    eprintln!("{kinds:?} done in {:?}", started.elapsed());
}

/// First start: a server (with the given launch options), its sak and a wallet funded with
/// [`FUNDED_SATS`].
async fn first_start(inst: &Install, l: &Launch) -> (Proc, String, Wallet) {
    let mut p = spawn(inst, "first", l);
    p.wait_ready().await;
    let sak = p.sak().await;
    let api = Api::new(&p, &sak);
    let w = api.create_wallet("payer").await;
    api.fund(&w, FUNDED_SATS).await;
    (p, sak, w)
}

// ====================================================================== outgoing payments

/// Kills `serve` at `point` during a withdraw to carol whose node outcome is `script`, restarts
/// it and checks the payment ends exactly once, as the node says.
async fn withdraw_killed_at(inst: Install, point: &'static str, script: &str, succeeds: bool) {
    let l = Launch {
        crash_at: Some(point),
        scripted_default: Some(script.to_owned()),
        ..Launch::default()
    };
    let (mut p, sak, w) = first_start(&inst, &l).await;
    let api = Api::new(&p, &sak);
    let (pr, hash) = api.outside_invoice("carol", PAY_SATS).await;
    api.withdraw_in_background(&w, &pr);
    p.wait_crashpoint(point).await;
    p.kill();

    // Satchel is dead. Our books: the reserve is committed, the outcome is not.
    let live = unresolved(&inst).await;
    assert_eq!(live.len(), 1, "{}: {live:?}", inst.kind);
    assert_eq!(live[0].hash, hash);
    let expected_status = if point == "after_reserve" {
        "reserved"
    } else {
        "dispatched"
    };
    assert_eq!(live[0].status, expected_status, "{}", inst.kind);
    // The node: never heard of it (after_reserve) or sent it once and knows how it ended.
    let sent_before_restart = node_sends(&inst, &hash);
    assert_eq!(
        sent_before_restart,
        u64::from(point != "after_reserve"),
        "{}",
        inst.kind
    );

    // Restart without the kill point: recovery finishes the payment.
    let mut p = spawn(
        &inst,
        "restart",
        &Launch {
            scripted_default: Some(script.to_owned()),
            ..Launch::default()
        },
    );
    p.wait_ready().await;
    let api = Api::new(&p, &sak);
    let l = api.wait_final(&live[0].id).await;
    let wtxs = api.wtxs(&w).await;
    let mine: Vec<&Value> = wtxs
        .iter()
        .filter(|x| x["lnTx"]["id"] == live[0].id.as_str())
        .collect();
    if succeeds {
        assert_eq!(l["settled"], 1, "{l}");
        assert_eq!(l["fee_msat"], FEE_MSAT, "{l}");
        assert!(l["payment_preimage"].is_string(), "{l}");
        // Debited exactly once: amount + the fee actually routed, rounded up to the sat.
        assert_eq!(
            api.balance_msat(&w).await,
            (FUNDED_SATS - PAY_SATS) * 1000 - CHARGED_FEE_MSAT
        );
        assert_eq!(mine.len(), 1, "{wtxs:?}");
        assert_eq!(count_type(&wtxs, "ln_withdrawal"), 1);
        assert_eq!(count_type(&wtxs, "network_fee"), 1);
        let fee_wtx = wtxs.iter().find(|x| wtx_type(x) == "network_fee").unwrap();
        assert_eq!(
            fee_wtx["num_satoshis"], -2,
            "1100 msat is charged as 2 sats"
        );
        // A second attempt at the same invoice is refused by our books and never reaches the
        // node.
        let (status, v) = api.withdraw(&w, &pr).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(
            api.balance_msat(&w).await,
            (FUNDED_SATS - PAY_SATS) * 1000 - CHARGED_FEE_MSAT
        );
    } else {
        assert_eq!(l["settled"], -1, "{l}");
        // Refunded exactly once (amount + fee limit back).
        assert_eq!(api.balance_msat(&w).await, FUNDED_SATS * 1000);
        assert!(mine.is_empty(), "{wtxs:?}");
        assert_eq!(count_type(&wtxs, "ln_withdrawal"), 0);
    }
    // The node sent it exactly once in total.
    assert_eq!(node_sends(&inst, &hash), 1, "{}", inst.kind);
    let node = node_payment(&inst, &hash).unwrap();
    assert_eq!(
        node["state"]["kind"],
        if succeeds { "succeeded" } else { "failed" }
    );
    p.stop().await;
    assert!(unresolved(&inst).await.is_empty());
    assert_audit_clean(&inst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_reserve_then_restart_sends_once_and_settles() {
    on_each_db("scripted", |inst| {
        withdraw_killed_at(inst, "after_reserve", "succeed:1100", true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_dispatch_then_restart_settles_once() {
    on_each_db("scripted", |inst| {
        withdraw_killed_at(inst, "after_dispatch", "succeed:1100", true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_dispatch_of_a_failed_payment_then_restart_refunds_once() {
    on_each_db("scripted", |inst| {
        withdraw_killed_at(inst, "after_dispatch", "fail:NO_ROUTE", false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_before_settle_then_restart_debits_exactly_once() {
    on_each_db("scripted", |inst| {
        withdraw_killed_at(inst, "before_settle", "succeed:1100", true)
    })
    .await;
}

/// An async keysend (`X-LNPAY-ASYNC`) killed right after its reserve: after the restart the job
/// and the recovery both pick the payment up; it is sent once, with its custom records, and the
/// job reports success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_reserve_of_an_async_keysend_then_restart_pays_once() {
    on_each_db("scripted", |inst| async move {
        let script = format!("succeed:{FEE_MSAT}");
        let l = Launch {
            crash_at: Some("after_reserve"),
            scripted_default: Some(script.clone()),
            ..Launch::default()
        };
        let (mut p, sak, w) = first_start(&inst, &l).await;
        let api = Api::new(&p, &sak);
        let (status, info) = api
            .send(api.http.get(format!("{}/devnet/info", api.base)))
            .await;
        assert_eq!(status, StatusCode::OK, "{info}");
        let carol = info["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "carol")
            .unwrap()["pubkey"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, v) = api
            .send(
                api.http
                    .post(format!("{}/v1/wallet/{}/keysend", api.base, w.waka))
                    .header("X-Api-Key", &api.sak)
                    .header("X-LNPAY-ASYNC", "true")
                    .json(&json!({
                        "dest_pubkey": carol,
                        "num_satoshis": PAY_SATS,
                        "custom_records": { "7629169": "{\"podcast\":\"crash\"}" },
                    })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let job = v["id"].as_str().unwrap().to_owned();
        p.wait_crashpoint("after_reserve").await;
        p.kill();
        let live = unresolved(&inst).await;
        assert_eq!(live.len(), 1, "{live:?}");
        assert_eq!(live[0].status, "reserved");
        assert_eq!(
            node_sends(&inst, &live[0].hash),
            0,
            "never reached the node"
        );

        let mut p = spawn(
            &inst,
            "restart",
            &Launch {
                scripted_default: Some(script),
                ..Launch::default()
            },
        );
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        let l = api.wait_final(&live[0].id).await;
        assert_eq!(l["settled"], 1, "{l}");
        assert_eq!(l["is_keysend"], 1, "{l}");
        assert_eq!(
            l["custom_records"]["7629169"], "{\"podcast\":\"crash\"}",
            "{l}"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, j) = api.get(&format!("/job/{job}")).await;
            assert_eq!(status, StatusCode::OK, "{j}");
            if j["status"] != "queued" {
                assert_eq!(j["status"], "succeeded", "{j}");
                break;
            }
            assert!(Instant::now() < deadline, "job never finished: {j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(node_sends(&inst, &live[0].hash), 1);
        assert_eq!(
            api.balance_msat(&w).await,
            (FUNDED_SATS - PAY_SATS) * 1000 - CHARGED_FEE_MSAT
        );
        p.stop().await;
        assert!(unresolved(&inst).await.is_empty());
        assert_audit_clean(&inst).await;
    })
    .await;
}

// ====================================================================== internal payments

/// Killed inside `pay_internal`'s transaction: all or nothing, then exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_internal_payment_is_all_or_nothing() {
    on_each_db("scripted", |inst| async move {
        let l = Launch {
            crash_at: Some("during_internal"),
            ..Launch::default()
        };
        let (mut p, sak, payer) = first_start(&inst, &l).await;
        let api = Api::new(&p, &sak);
        let payee = api.create_wallet("payee").await;
        let inv = api.invoice(&payee, 300).await;
        let pr = inv["payment_request"].as_str().unwrap().to_owned();
        let inv_id = inv["id"].as_str().unwrap().to_owned();
        api.withdraw_in_background(&payer, &pr);
        p.wait_crashpoint("during_internal").await;
        p.kill();
        assert!(unresolved(&inst).await.is_empty());

        let mut p = spawn(&inst, "restart", &Launch::default());
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        // Nothing happened: the transaction was never committed.
        assert_eq!(api.balance_msat(&payer).await, FUNDED_SATS * 1000);
        assert_eq!(api.balance_msat(&payee).await, 0);
        assert_eq!(api.lntx(&inv_id).await["settled"], 0);
        assert_eq!(count_type(&api.wtxs(&payer).await, "ln_withdrawal"), 0);
        assert!(api.wtxs(&payee).await.is_empty());
        // Paying again works, exactly once.
        let (status, v) = api.withdraw(&payer, &pr).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        let (status, v) = api.withdraw(&payer, &pr).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(api.balance_msat(&payer).await, (FUNDED_SATS - 300) * 1000);
        assert_eq!(api.balance_msat(&payee).await, 300_000);
        assert_eq!(api.lntx(&inv_id).await["settled"], 1);
        assert_eq!(count_type(&api.wtxs(&payee).await, "ln_deposit"), 1);
        p.stop().await;
        assert_audit_clean(&inst).await;
    })
    .await;
}

// ====================================================================== incoming payments

/// Killed inside `credit_invoice`'s transaction: the node was paid, the credit happens exactly
/// once after the restart (the event is replayed from the cursor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_credit_then_restart_credits_exactly_once() {
    on_each_db("scripted", |inst| async move {
        let l = Launch {
            crash_at: Some("during_credit"),
            ..Launch::default()
        };
        let mut p = spawn(&inst, "first", &l);
        p.wait_ready().await;
        let sak = p.sak().await;
        let api = Api::new(&p, &sak);
        let w = api.create_wallet("payee").await;
        let inv = api.invoice(&w, 500).await;
        let inv_id = inv["id"].as_str().unwrap().to_owned();
        api.alice_pays(inv["payment_request"].as_str().unwrap())
            .await;
        p.wait_crashpoint("during_credit").await;
        p.kill();

        for round in ["restart", "second restart"] {
            let mut p = spawn(&inst, round, &Launch::default());
            p.wait_ready().await;
            let api = Api::new(&p, &sak);
            api.wait_balance(&w, 500_000).await;
            // Give a replay time to do harm, then look again.
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert_eq!(api.balance_msat(&w).await, 500_000, "{round}");
            let wtxs = api.wtxs(&w).await;
            assert_eq!(wtxs.len(), 1, "{round}: {wtxs:?}");
            assert_eq!(wtx_type(&wtxs[0]), "ln_deposit");
            assert_eq!(api.lntx(&inv_id).await["settled"], 1);
            p.stop().await;
        }
        assert_audit_clean(&inst).await;
    })
    .await;
}

// ====================================================================== webhook outbox

/// A loopback webhook receiver recording every body.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Starts listening on `port` (chosen before, while nothing listened there).
    async fn listen(&self, port: u16) {
        use axum::routing::post;
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        me.got.lock().unwrap().push(v);
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }

    fn event_ids(&self) -> HashSet<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Events committed while the receiver was down and right before a kill are all delivered
/// after the restart (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_committed_before_a_kill_are_delivered_after_restart() {
    on_each_db("scripted", |inst| async move {
        let receiver = Receiver::default();
        let port = free_port(); // nothing listens there yet: deliveries fail and stay queued
        let l = Launch {
            crash_at: Some("before_settle"),
            scripted_default: Some(format!("succeed:{FEE_MSAT}")),
            ..Launch::default()
        };
        let mut p = spawn(&inst, "first", &l);
        p.wait_ready().await;
        let sak = p.sak().await;
        let api = Api::new(&p, &sak);
        let (status, hook) = api
            .post(
                "/webhooks",
                json!({
                    "endpoint_url": format!("http://127.0.0.1:{port}/hook"),
                    "default_all": true,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{hook}");
        let hook_id = hook["id"].as_str().unwrap().to_owned();
        let w = api.create_wallet("hooked").await; // wallet_created
        api.fund(&w, FUNDED_SATS).await; // wallet_receive
        // Let both fail once (receiver down) so that they are queued for a retry, not leased
        // by an attempt in progress at the kill (a lease outlives a crash by up to 120 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, d) = api
                .get(&format!("/webhooks/{hook_id}/deliveries?per_page=100"))
                .await;
            let d = d.as_array().cloned().unwrap_or_default();
            let now = satchel_domain::now_secs();
            let queued = |x: &Value| {
                x["status"] == "pending"
                    && x["attempts"].as_i64().unwrap_or(0) >= 1
                    && x["next_attempt_at"].as_i64().is_some_and(|t| t < now + 60)
            };
            if d.len() >= 2 && d.iter().all(queued) {
                break;
            }
            assert!(Instant::now() < deadline, "deliveries never failed: {d:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (pr, _) = api.outside_invoice("carol", PAY_SATS).await;
        api.withdraw_in_background(&w, &pr);
        p.wait_crashpoint("before_settle").await;
        p.kill();
        let live = unresolved(&inst).await;
        assert_eq!(live.len(), 1);

        receiver.listen(port).await;
        let mut p = spawn(
            &inst,
            "restart",
            &Launch {
                scripted_default: Some(format!("succeed:{FEE_MSAT}")),
                ..Launch::default()
            },
        );
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        assert_eq!(api.wait_final(&live[0].id).await["settled"], 1);
        // Every event in the outbox reaches the receiver: the ones committed before the kill
        // (retried after their failed attempts) and the settlement's after the restart.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, deliveries) = api
                .get(&format!("/webhooks/{hook_id}/deliveries?per_page=100"))
                .await;
            assert_eq!(status, StatusCode::OK, "{deliveries}");
            let deliveries = deliveries.as_array().unwrap().clone();
            let names: HashSet<&str> = deliveries
                .iter()
                .map(|d| d["event"].as_str().unwrap())
                .collect();
            let wanted: HashSet<String> = deliveries
                .iter()
                .map(|d| d["event_id"].as_str().unwrap().to_owned())
                .collect();
            let got = receiver.event_ids();
            let all_names = [
                "wallet_created",
                "wallet_receive",
                "wallet_send",
                "network_fee_incurred",
            ]
            .iter()
            .all(|n| names.contains(n));
            // The receiver can hold an event a moment before the log records the delivery.
            if all_names
                && wanted.is_subset(&got)
                && deliveries.iter().all(|d| d["status"] == "delivered")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not every event was delivered; missing {:?}; deliveries {deliveries:#?}",
                inst.kind,
                wanted.difference(&got).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p.stop().await;
        assert_audit_clean(&inst).await;
    })
    .await;
}

// ====================================================================== SIGTERM

/// SIGTERM: `serve` stops accepting connections, finishes the request in progress, exits 0; the
/// payment still pending at that moment resumes after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_pending_payment_resumes_after_restart() {
    on_each_db("scripted", |inst| async move {
        let l = Launch {
            scripted_default: Some("unknown".into()),
            payment_wait_secs: Some(3),
            ..Launch::default()
        };
        let (mut p, sak, w) = first_start(&inst, &l).await;
        let api = Api::new(&p, &sak);
        let (pr, hash) = api.outside_invoice("carol", PAY_SATS).await;
        let in_progress = {
            let (api, w, pr) = (api.clone(), w.clone(), pr.clone());
            tokio::spawn(async move { api.withdraw(&w, &pr).await })
        };
        // The node has the payment in flight; the request is waiting for its outcome.
        let deadline = Instant::now() + Duration::from_secs(30);
        while node_sends(&inst, &hash) == 0 {
            assert!(Instant::now() < deadline, "payment never reached the node");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let signalled = Instant::now();
        sigterm(p.pid());
        // Stops accepting at once...
        let addr: std::net::SocketAddr = p.addr().parse().unwrap();
        let refused_by = Instant::now() + Duration::from_secs(2);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                break;
            }
            assert!(
                Instant::now() < refused_by,
                "still accepting connections after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!in_progress.is_finished(), "the request ended too early");
        // ...but answers the request in progress (202 pending once its wait is over).
        let (status, v) = in_progress.await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["status"], "pending");
        let id = v["lnTx"]["id"].as_str().unwrap().to_owned();
        let status = p.terminate().await;
        assert!(status.success(), "exit status after SIGTERM: {status}");
        eprintln!(
            "{}: exited {:?} after SIGTERM",
            inst.kind,
            signalled.elapsed()
        );
        // Still reserved, not refunded.
        let live = unresolved(&inst).await;
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id, id);
        assert_eq!(
            node_payment(&inst, &hash).unwrap()["state"]["kind"],
            "in_flight"
        );

        // While Satchel was down the node finished the payment.
        let mut p = spawn(
            &inst,
            "restart",
            &Launch {
                complete_inflight: Some(format!("succeed:{FEE_MSAT}")),
                ..Launch::default()
            },
        );
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        let l = api.wait_final(&id).await;
        assert_eq!(l["settled"], 1, "{l}");
        assert_eq!(
            api.balance_msat(&w).await,
            (FUNDED_SATS - PAY_SATS) * 1000 - CHARGED_FEE_MSAT
        );
        assert_eq!(node_sends(&inst, &hash), 1);
        p.stop().await;
        assert!(unresolved(&inst).await.is_empty());
        assert_audit_clean(&inst).await;
    })
    .await;
}

/// A withdraw whose outcome is unknown answers 202 once `payment_wait_secs` is over (README:
/// "how long withdraw/keysend wait for the outcome before answering 202 pending").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_answer_comes_after_payment_wait_not_twice() {
    on_each_db("scripted", |inst| async move {
        let l = Launch {
            scripted_default: Some("unknown".into()),
            payment_wait_secs: Some(2),
            ..Launch::default()
        };
        let (mut p, sak, w) = first_start(&inst, &l).await;
        let api = Api::new(&p, &sak);
        let (pr, _) = api.outside_invoice("carol", PAY_SATS).await;
        let t0 = Instant::now();
        let (status, v) = api.withdraw(&w, &pr).await;
        let took = t0.elapsed();
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert!(
            took < Duration::from_millis(3_500),
            "{}: 202 after {took:?} with payment_wait_secs = 2",
            inst.kind
        );
        p.stop().await;
    })
    .await;
}

// ====================================================================== LDK devnet

/// What peer `name` of the devnet can send, in msat (`/devnet/info`).
async fn peer_outbound_msat(api: &Api, name: &str) -> u64 {
    let (status, info) = api
        .send(api.http.get(format!("{}/devnet/info", api.base)))
        .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    info["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()["outbound_msat"]
        .as_u64()
        .unwrap()
}

/// Waits until peer `name` can send `msat`.
async fn wait_peer_outbound(api: &Api, name: &str, msat: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = peer_outbound_msat(api, name).await;
        if now == msat {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} can send {now} msat, expected {msat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills `serve` (its embedded LDK node and the devnet peers with it) at `point`. Satchel's own
/// state is frozen at the kill point; before the SIGKILL the simulated outside world (alice, hub,
/// carol run in the same process) is given time to finish the HTLC round trips and persist: the
/// peers stand in for other people's nodes, which a Satchel crash does not kill. (Killing them
/// mid-commitment can leave a peer's ChannelManager stale; see
/// `devnet_survives_kills_at_any_moment`.)
async fn devnet_withdraw_killed_at(inst: Install, point: &'static str) {
    let l = Launch {
        crash_at: Some(point),
        payment_wait_secs: Some(1),
        ..Launch::default()
    };
    let (mut p, sak, w) = first_start(&inst, &l).await;
    let api = Api::new(&p, &sak);
    let carol_before = peer_outbound_msat(&api, "carol").await;
    let (pr, hash) = api.outside_invoice("carol", PAY_SATS).await;
    api.withdraw_in_background(&w, &pr);
    p.wait_crashpoint(point).await;
    if point == "before_settle" {
        // The node reported success: carol has been paid.
        wait_peer_outbound(&api, "carol", carol_before + 100_000).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    p.kill();
    let live = unresolved(&inst).await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].hash, hash);
    assert_eq!(
        live[0].status,
        if point == "after_reserve" {
            "reserved"
        } else {
            "dispatched"
        }
    );

    let mut p = spawn(&inst, "restart", &Launch::default());
    p.wait_ready().await;
    let api = Api::new(&p, &sak);
    let l = api.wait_final(&live[0].id).await;
    assert_eq!(l["settled"], 1, "{l}");
    assert_eq!(l["fee_msat"], FEE_MSAT, "the hub's fee");
    assert_eq!(
        api.balance_msat(&w).await,
        (FUNDED_SATS - PAY_SATS) * 1000 - CHARGED_FEE_MSAT
    );
    // Carol was paid exactly once.
    wait_peer_outbound(&api, "carol", carol_before + 100_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        peer_outbound_msat(&api, "carol").await,
        carol_before + 100_000
    );
    let wtxs = api.wtxs(&w).await;
    assert_eq!(count_type(&wtxs, "ln_withdrawal"), 1, "{wtxs:?}");
    assert_eq!(count_type(&wtxs, "network_fee"), 1, "{wtxs:?}");
    // Paying the same invoice again is refused; nothing more leaves the wallet.
    let (status, v) = api.withdraw(&w, &pr).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        api.balance_msat(&w).await,
        (FUNDED_SATS - PAY_SATS) * 1000 - CHARGED_FEE_MSAT
    );
    p.stop().await;
    assert!(unresolved(&inst).await.is_empty());
    assert_audit_clean(&inst).await;
}

/// The embedded LDK node and its devnet keep their own state under the data dir: a withdraw to
/// carol (through the hub) killed right before its settlement commits settles exactly once after
/// the restart, with the fee the hub really charged (1000 msat + 1000 ppm of 100 sat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_kill_before_settle_then_restart_settles_once_with_routed_fee() {
    on_each_db("devnet", |inst| {
        devnet_withdraw_killed_at(inst, "before_settle")
    })
    .await;
}

/// Killed before the LDK node heard of the payment: recovery finds it unknown to the node
/// (`NotFound`) and sends it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_kill_after_reserve_then_restart_sends_once() {
    on_each_db("devnet", |inst| {
        devnet_withdraw_killed_at(inst, "after_reserve")
    })
    .await;
}

/// Our node's pubkey (`/devnet/info`).
async fn our_pubkey(api: &Api) -> String {
    let (status, info) = api
        .send(api.http.get(format!("{}/devnet/info", api.base)))
        .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    info["node_pubkey"].as_str().unwrap().to_owned()
}

/// Alice keysends 21 sat to a wallet with a Podcasting 2.0 boost's records (odd types) and an
/// even type; `serve` is killed at `point` inside the incoming keysend handling. After each of
/// two restarts (the first one used to fail: the node could not read its own keysend event
/// back), the keysend is credited exactly once, with its custom records intact, and the audit is
/// clean.
async fn devnet_keysend_killed_at(inst: Install, point: &'static str) {
    let l = Launch {
        crash_at: Some(point),
        ..Launch::default()
    };
    let mut p = spawn(&inst, "first", &l);
    p.wait_ready().await;
    let sak = p.sak().await;
    let api = Api::new(&p, &sak);
    let w = api.create_wallet("podcaster").await;
    let to = our_pubkey(&api).await;
    let boost = "{\"podcast\":\"x\",\"action\":\"boost\"}";
    let v = api
        .devnet(
            "keysend",
            json!({
                "node": "alice",
                "to": to,
                "sats": 21,
                "tlv": { "696969": w.id, "7629169": boost, "65538": "even" },
            }),
        )
        .await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let hash = v["payment_hash"].as_str().unwrap().to_owned();
    p.wait_crashpoint(point).await;
    // The peers stand in for other people's nodes: let them finish the HTLC round trip.
    tokio::time::sleep(Duration::from_millis(700)).await;
    p.kill();

    for round in ["restart", "second restart"] {
        let mut p = spawn(&inst, round, &Launch::default());
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        api.wait_balance(&w, 21_000).await;
        // Give a replay time to do harm, then look again.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(api.balance_msat(&w).await, 21_000, "{round}");
        let wtxs = api.wtxs(&w).await;
        assert_eq!(wtxs.len(), 1, "{round}: {wtxs:?}");
        assert_eq!(wtx_type(&wtxs[0]), "ln_deposit");
        let l = &wtxs[0]["lnTx"];
        assert_eq!(l["is_keysend"], 1, "{l}");
        assert_eq!(l["settled"], 1, "{l}");
        assert_eq!(l["r_hash_decoded"], hash.as_str(), "{l}");
        assert_eq!(l["custom_records"]["696969"], w.id.as_str(), "{l}");
        assert_eq!(
            l["custom_records"]["7629169"],
            json!({ "podcast": "x", "action": "boost" }),
            "{l}"
        );
        assert_eq!(l["custom_records"]["65538"], "even", "{l}");
        p.stop().await;
    }
    assert_audit_clean(&inst).await;
}

/// Killed after our node claimed and recorded the keysend, before anything is booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_kill_before_keysend_credit_then_restart_credits_once_with_records() {
    on_each_db("devnet", |inst| {
        devnet_keysend_killed_at(inst, "keysend_before_credit")
    })
    .await;
}

/// Killed inside the credit's transaction (postings written, not committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_kill_during_keysend_credit_then_restart_credits_once_with_records() {
    on_each_db("devnet", |inst| {
        devnet_keysend_killed_at(inst, "during_keysend_credit")
    })
    .await;
}

/// Killed after the credit committed, before the incoming cursor moved past it: the replay
/// after the restart books nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_kill_after_keysend_credit_then_restart_credits_once_with_records() {
    on_each_db("devnet", |inst| {
        devnet_keysend_killed_at(inst, "keysend_after_credit")
    })
    .await;
}

/// SIGKILL the whole devnet the moment our node reports a payment to carol succeeded (hub and
/// carol still exchanging commitment updates), five times: every restart must come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_survives_kills_at_any_moment() {
    let inst = Install::new(TestDb::sqlite().await, "devnet");
    let l = Launch {
        crash_at: Some("before_settle"),
        ..Launch::default()
    };
    let (mut p, sak, w) = first_start(&inst, &l).await;
    for round in 0..5 {
        let api = Api::new(&p, &sak);
        let (pr, _) = api.outside_invoice("carol", PAY_SATS).await;
        api.withdraw_in_background(&w, &pr);
        p.wait_crashpoint("before_settle").await;
        p.kill();
        p = spawn(&inst, &format!("round {round}"), &l);
        p.wait_ready().await;
    }
}

// ====================================================================== idempotency keys

impl Api {
    /// POST with an `Idempotency-Key`: (status, body, whether the answer was a replay).
    async fn keyed(&self, path: &str, body: &Value, key: &str) -> (StatusCode, Value, bool) {
        let r = self
            .http
            .post(format!("{}/v1{path}", self.base))
            .header("X-Api-Key", &self.sak)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let replayed = r.headers().contains_key("idempotent-replayed");
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            replayed,
        )
    }

    /// A keyed POST that will never be answered (the server is killed while handling it).
    fn keyed_in_background(&self, path: &str, body: &Value, key: &str) {
        let (api, path, body, key) = (self.clone(), path.to_owned(), body.clone(), key.to_owned());
        tokio::spawn(async move {
            let _ = api.keyed(&path, &body, &key).await;
        });
    }
}

/// Killed after the keyed withdraw's reserve (which wrote the key) and before any answer: the
/// retry after the restart is answered with that payment, never a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_withdraw_killed_after_reserve_is_retried_without_paying_twice() {
    on_each_db("scripted", |inst| async move {
        let script = format!("succeed:{FEE_MSAT}");
        let l = Launch {
            crash_at: Some("after_reserve"),
            scripted_default: Some(script.clone()),
            ..Launch::default()
        };
        let (mut p, sak, w) = first_start(&inst, &l).await;
        let api = Api::new(&p, &sak);
        let (pr, hash) = api.outside_invoice("carol", PAY_SATS).await;
        let path = format!("/wallet/{}/withdraw", w.waka);
        let body = json!({ "payment_request": pr });
        api.keyed_in_background(&path, &body, "crash-withdraw");
        p.wait_crashpoint("after_reserve").await;
        p.kill();
        let live = unresolved(&inst).await;
        assert_eq!(live.len(), 1, "{}: {live:?}", inst.kind);

        let mut p = spawn(
            &inst,
            "restart",
            &Launch {
                scripted_default: Some(script),
                ..Launch::default()
            },
        );
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        let (status, v, replayed) = api.keyed(&path, &body, "crash-withdraw").await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::ACCEPTED,
            "{status} {v}"
        );
        assert!(replayed, "{v}");
        assert_eq!(v["lnTx"]["id"], live[0].id.as_str(), "{v}");
        api.wait_final(&live[0].id).await;
        let (status, v, replayed) = api.keyed(&path, &body, "crash-withdraw").await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert!(replayed);
        assert_eq!(v["wtxType"]["name"], "ln_withdrawal", "{v}");
        assert_eq!(v["lnTx"]["id"], live[0].id.as_str(), "{v}");
        let (status, v, _) = api
            .keyed(
                &path,
                &json!({ "payment_request": pr, "fee_limit_msat": 1 }),
                "crash-withdraw",
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(
            api.balance_msat(&w).await,
            (FUNDED_SATS - PAY_SATS) * 1000 - CHARGED_FEE_MSAT
        );
        assert_eq!(count_type(&api.wtxs(&w).await, "ln_withdrawal"), 1);
        assert_eq!(node_sends(&inst, &hash), 1, "{}", inst.kind);
        p.stop().await;
        assert_audit_clean(&inst).await;
    })
    .await;
}

/// Killed inside the keyed internal payment's transaction: neither the payment nor the key
/// survived, so the retry pays, once, and later retries replay that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_internal_payment_killed_before_commit_is_retried_once() {
    on_each_db("scripted", |inst| async move {
        let l = Launch {
            crash_at: Some("during_internal"),
            ..Launch::default()
        };
        let (mut p, sak, payer) = first_start(&inst, &l).await;
        let api = Api::new(&p, &sak);
        let payee = api.create_wallet("payee").await;
        let inv = api.invoice(&payee, 300).await;
        let path = format!("/wallet/{}/withdraw", payer.waka);
        let body = json!({ "payment_request": inv["payment_request"] });
        api.keyed_in_background(&path, &body, "crash-internal");
        p.wait_crashpoint("during_internal").await;
        p.kill();

        let mut p = spawn(&inst, "restart", &Launch::default());
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        assert_eq!(api.balance_msat(&payer).await, FUNDED_SATS * 1000);
        let (status, first, replayed) = api.keyed(&path, &body, "crash-internal").await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert!(!replayed, "nothing of the first attempt survived");
        let (status, again, replayed) = api.keyed(&path, &body, "crash-internal").await;
        assert_eq!(status, StatusCode::CREATED, "{again}");
        assert!(replayed);
        assert_eq!(again, first);
        assert_eq!(api.balance_msat(&payer).await, (FUNDED_SATS - 300) * 1000);
        assert_eq!(api.balance_msat(&payee).await, 300_000);
        p.stop().await;
        assert_audit_clean(&inst).await;
    })
    .await;
}

/// A keyed transfer answered before a SIGKILL is replayed after the restart, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_transfer_answer_survives_a_kill() {
    on_each_db("scripted", |inst| async move {
        let (mut p, sak, a) = first_start(&inst, &Launch::default()).await;
        let api = Api::new(&p, &sak);
        let b = api.create_wallet("B").await;
        let path = format!("/wallet/{}/transfer", a.waka);
        let body = json!({ "dest_wallet_id": b.id, "num_satoshis": 10 });
        let (status, first, _) = api.keyed(&path, &body, "kill-transfer").await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        p.kill();
        let mut p = spawn(&inst, "restart", &Launch::default());
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        let (status, again, replayed) = api.keyed(&path, &body, "kill-transfer").await;
        assert_eq!(status, StatusCode::CREATED, "{again}");
        assert!(replayed);
        assert_eq!(again, first);
        assert_eq!(api.balance_msat(&b).await, 10_000);
        p.stop().await;
        assert_audit_clean(&inst).await;
    })
    .await;
}

/// Killed after keyed operations committed (with their keys) but before their answers were
/// stored: after the restart each retry is answered from what the operation created, and
/// nothing happens twice. A wallet's keys are never stored, so its retry is a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_operations_killed_before_their_answer_are_rebuilt_not_repeated() {
    on_each_db("scripted", |inst| async move {
        let point = "before_idempotent_answer";
        let l = Launch {
            crash_at: Some(point),
            ..Launch::default()
        };
        let (mut p, sak, a) = first_start(&inst, &l).await;
        let api = Api::new(&p, &sak);
        let b = api.create_wallet("B").await;
        let path = format!("/wallet/{}/transfer", a.waka);
        let body = json!({ "dest_wallet_id": b.id, "num_satoshis": 100 });
        api.keyed_in_background(&path, &body, "lost-transfer");
        p.wait_crashpoint(point).await;
        p.kill();

        let mut p = spawn(&inst, "restart-1", &l);
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        // The transfer committed with its key.
        assert_eq!(api.balance_msat(&b).await, 100_000);
        let (status, v, replayed) = api.keyed(&path, &body, "lost-transfer").await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert!(replayed);
        let out_id = v["wtx_transfer_out"]["id"].as_str().unwrap().to_owned();
        let history = api.wtxs(&a).await;
        assert_eq!(count_type(&history, "ln_transfer_out"), 1, "{history:?}");
        assert!(history.iter().any(|w| w["id"] == out_id.as_str()));
        assert_eq!(api.balance_msat(&a).await, (FUNDED_SATS - 100) * 1000);
        assert_eq!(api.balance_msat(&b).await, 100_000);

        // An invoice, then a wallet, each killed the same way.
        let inv_path = format!("/wallet/{}/invoice", b.waka);
        let inv_body = json!({ "num_satoshis": 5, "memo": "lost" });
        api.keyed_in_background(&inv_path, &inv_body, "lost-invoice");
        p.wait_crashpoint(point).await;
        p.kill();
        let mut p = spawn(&inst, "restart-2", &l);
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        let (status, inv, replayed) = api.keyed(&inv_path, &inv_body, "lost-invoice").await;
        assert_eq!(status, StatusCode::CREATED, "{inv}");
        assert!(replayed);
        assert_eq!(inv["memo"], "lost");
        let (_, again, _) = api.keyed(&inv_path, &inv_body, "lost-invoice").await;
        assert_eq!(again["id"], inv["id"]);

        let wallet_body = json!({ "user_label": "lost" });
        api.keyed_in_background("/wallet", &wallet_body, "lost-wallet");
        p.wait_crashpoint(point).await;
        p.kill();
        let mut p = spawn(&inst, "restart-3", &Launch::default());
        p.wait_ready().await;
        let api = Api::new(&p, &sak);
        let r = api
            .http
            .post(format!("{}/v1/wallet", api.base))
            .header("X-Api-Key", &api.sak)
            .header("Idempotency-Key", "lost-wallet")
            .json(&wallet_body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert!(r.headers().contains_key("retry-after"));
        let (_, wallets) = api.get("/wallets").await;
        let lost: Vec<&Value> = wallets
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["user_label"] == "lost")
            .collect();
        assert_eq!(lost.len(), 1, "{wallets}");
        p.stop().await;
        assert_audit_clean(&inst).await;
    })
    .await;
}
