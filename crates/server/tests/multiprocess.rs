//! Two `satchel serve` processes on ONE Postgres database.
//!
//! The ledger's promises must hold without any in-process lock: each money movement takes its
//! row locks inside its own transaction, so concurrent requests spread over two processes can
//! neither overdraw a wallet, nor pay an invoice twice, nor deadlock.
//!
//! Each process runs the scripted backend with its own data dir (node state file), both with the
//! same node seed so they are "the same node" as far as invoices go (same pubkey, same carol).
//! Every process pays only carol invoices its own node issued. Incoming payments are made only
//! through the first process: the incoming cursor lives in the shared database while each
//! scripted node has its own event stream (real deployments share one node and one stream).
//!
//! Postgres only (`SATCHEL_SKIP_PG=1` skips these tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

use child::{Proc, satchel_cmd};

// ====================================================================== processes

/// `satchel serve --backend scripted` on `data_dir` and `db_url`.
fn spawn(label: &str, data_dir: &Path, db_url: &str) -> Proc {
    let (data_dir, db_url) = (data_dir.to_owned(), db_url.to_owned());
    Proc::serve(label, move |cmd| {
        cmd.args(["--backend", "scripted", "--data-dir"])
            .arg(&data_dir)
            .arg("--database-url")
            .arg(&db_url)
            .args(["--payment-wait-secs", "1"])
            // Every payment to carol succeeds without a routing fee.
            .env("SATCHEL_SCRIPTED_DEFAULT", "succeed:0");
    })
}

/// Two processes sharing one Postgres database, with their own node state but one node seed.
struct Cluster {
    db: TestDb,
    dirs: [tempfile::TempDir; 2],
    procs: Vec<Proc>,
    sak: String,
}

impl Cluster {
    /// `None` when Postgres is skipped.
    async fn start() -> Option<Cluster> {
        let db = TestDb::postgres().await?;
        let dirs = [
            tempfile::Builder::new()
                .prefix("satchel-mp1-")
                .tempdir()
                .unwrap(),
            tempfile::Builder::new()
                .prefix("satchel-mp2-")
                .tempdir()
                .unwrap(),
        ];
        let seed = hex::encode(rand::random::<[u8; 32]>());
        for d in &dirs {
            std::fs::write(d.path().join("scripted-node.seed"), &seed).unwrap();
        }
        // One after the other: the first creates the schema and the development account.
        let mut first = spawn("p1", dirs[0].path(), &db.url);
        first.wait_ready().await;
        let sak = first.sak().await;
        let mut second = spawn("p2", dirs[1].path(), &db.url);
        second.wait_ready().await;
        let mut c = Cluster {
            db,
            dirs,
            procs: vec![first, second],
            sak,
        };
        // The second start found the account and created none; the same sak works on both.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !c.procs[1].printed_sak(),
            "second process created an account"
        );
        for i in 0..2 {
            let (status, v) = c.api(i).get("/wallets").await;
            assert_eq!(status, StatusCode::OK, "p{}: {v}", i + 1);
        }
        c.procs[0].check_alive();
        Some(c)
    }

    fn api(&self, i: usize) -> Api {
        Api::new(&self.procs[i].base(), &self.sak)
    }

    /// How many times the node of process `i` sent `hash` (from its state file).
    fn node_sends(&self, i: usize, hash: &str) -> u64 {
        let text = std::fs::read_to_string(self.dirs[i].path().join("scripted-node.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["payments"]
            .get(hash)
            .map_or(0, |p| p["sends"].as_u64().unwrap())
    }

    async fn cli(&self, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::from(satchel_cmd());
        cmd.args(args)
            .arg("--database-url")
            .arg(&self.db.url)
            .arg("--data-dir")
            .arg(self.dirs[0].path());
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("CLI timed out")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "satchel {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Both processes stop cleanly; nothing is left unresolved; `satchel audit` is clean.
    async fn finish(mut self) {
        for p in &mut self.procs {
            p.stop().await;
        }
        let list = self.cli(&["payments", "list"]).await;
        assert!(list.contains("0 unresolved payment(s)"), "{list}");
        let audit = self.cli(&["audit"]).await;
        assert!(audit.contains("audit clean"), "{audit}");
    }
}

// ====================================================================== HTTP

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
    fn new(base: &str, sak: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.to_owned(),
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

    async fn invoice(&self, w: &Wallet, sats: i64) -> String {
        let (status, v) = self
            .post(
                &format!("/wallet/{}/invoice", w.waka),
                json!({ "num_satoshis": sats, "memo": "multiprocess" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["payment_request"].as_str().unwrap().to_owned()
    }

    /// Funds `w` from outside (alice pays an invoice of this process's node) and waits.
    async fn fund(&self, w: &Wallet, sats: i64) {
        let before = self.balance_msat(w).await;
        let pr = self.invoice(w, sats).await;
        let v = self
            .devnet("pay", json!({ "node": "alice", "payment_request": pr }))
            .await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.balance_msat(w).await != before + sats * 1000 {
            assert!(Instant::now() < deadline, "funding {} never arrived", w.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A carol invoice issued through this process's node: (payment request, hash).
    async fn carol_invoice(&self, sats: i64) -> (String, String) {
        let v = self
            .devnet("invoice", json!({ "node": "carol", "sats": sats }))
            .await;
        (
            v["payment_request"].as_str().unwrap().to_owned(),
            v["payment_hash"].as_str().unwrap().to_owned(),
        )
    }

    /// Withdraw with the default fee limit (5% of the amount).
    async fn withdraw(&self, w: &Wallet, pr: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/wallet/{}/withdraw", w.waka),
            json!({ "payment_request": pr }),
        )
        .await
    }

    async fn transfer(&self, from: &Wallet, to: &Wallet, sats: i64) -> (StatusCode, Value) {
        self.post(
            &format!("/wallet/{}/transfer", from.waka),
            json!({ "dest_wallet_id": to.id, "num_satoshis": sats, "memo": "mp" }),
        )
        .await
    }

    /// Resolves a withdraw answer: 201 paid, 202 polled until final, anything else refused.
    /// Returns whether the payment succeeded.
    async fn withdraw_succeeded(&self, status: StatusCode, v: &Value) -> bool {
        match status {
            StatusCode::CREATED => true,
            StatusCode::ACCEPTED => {
                let id = v["lnTx"]["id"].as_str().unwrap();
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let (_, l) = self.get(&format!("/lntx/{id}")).await;
                    match l["settled"].as_i64() {
                        Some(1) => return true,
                        Some(-1) => return false,
                        _ => {}
                    }
                    assert!(Instant::now() < deadline, "{id} never resolved");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            s => {
                assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
                false
            }
        }
    }
}

// ====================================================================== tests

/// Withdraw with an explicit fee limit (msat).
async fn withdraw_with_limit(api: &Api, w: &Wallet, pr: &str, limit: i64) -> bool {
    let (status, v) = api
        .post(
            &format!("/wallet/{}/withdraw", w.waka),
            json!({ "payment_request": pr, "fee_limit_msat": limit }),
        )
        .await;
    api.withdraw_succeeded(status, &v).await
}

async fn transfer_ok(api: &Api, from: &Wallet, to: &Wallet, sats: i64) -> bool {
    let (status, v) = api.transfer(from, to, sats).await;
    match status {
        StatusCode::CREATED => true,
        s => {
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            false
        }
    }
}

/// 1000 sat per wallet, 40 requests of 100 sat against each, split over both processes and all
/// fired at once. Withdraws reserve 100 sat + 1 msat of fee allowance (101 sat: reserves are
/// rounded up to the sat), so exactly 9 fit whatever
/// the interleaving; transfers cost exactly 100 sat, so exactly 10 fit. No overdraft, every
/// success booked and sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_spends_across_two_processes_never_overdraw() {
    let Some(c) = Cluster::start().await else {
        eprintln!("SATCHEL_SKIP_PG=1: skipped");
        return;
    };
    let started = Instant::now();
    let (a1, a2) = (c.api(0), c.api(1));
    let payer = a1.create_wallet("payer").await;
    let giver = a2.create_wallet("giver").await;
    let dest = a2.create_wallet("dest").await;
    a1.fund(&payer, 1_000).await;
    a1.fund(&giver, 1_000).await;

    let mut invoices = Vec::new();
    for i in 0..40 {
        let proc = i % 2;
        let (pr, hash) = c.api(proc).carol_invoice(100).await;
        invoices.push((proc, pr, hash));
    }
    let withdraws = invoices.iter().map(|(proc, pr, _)| {
        let (api, payer) = (c.api(*proc), payer.clone());
        async move { withdraw_with_limit(&api, &payer, pr, 1).await }
    });
    let transfers = (0..40).map(|i| {
        let (api, giver, dest) = (c.api(i % 2), giver.clone(), dest.clone());
        async move { transfer_ok(&api, &giver, &dest, 100).await }
    });
    let (withdrawn, transferred) = futures::join!(join_all(withdraws), join_all(transfers));
    let withdrawn = withdrawn.into_iter().filter(|x| *x).count();
    let transferred = transferred.into_iter().filter(|x| *x).count();
    eprintln!("{withdrawn} withdraws and {transferred} transfers succeeded");
    assert_eq!(withdrawn, 9, "100 sat + 1 msat each: 9 fit in 1000 sat");
    assert_eq!(transferred, 10, "100 sat each: 10 fit in 1000 sat");
    // What is left is exactly what no request could take.
    assert_eq!(a2.balance_msat(&payer).await, 100_000);
    assert_eq!(a1.balance_msat(&giver).await, 0);
    assert_eq!(a1.balance_msat(&dest).await, 1_000_000);
    assert!(transfer_ok(&a2, &payer, &dest, 100).await);
    assert!(!transfer_ok(&a1, &payer, &dest, 1).await);
    assert_eq!(a1.balance_msat(&payer).await, 0);
    // The nodes sent exactly the successful withdraws, each once.
    let sends: Vec<u64> = invoices
        .iter()
        .map(|(p, _, h)| c.node_sends(*p, h))
        .collect();
    assert!(sends.iter().all(|s| *s <= 1), "{sends:?}");
    assert_eq!(sends.iter().sum::<u64>(), 9);
    c.finish().await;
    eprintln!("done in {:?}", started.elapsed());
}

/// The mix on ONE wallet: 20 withdraws with a zero fee limit and 20 transfers, 100 sat each,
/// over both processes, three rounds: exactly 10 must succeed each round and no request may fail
/// with a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_fee_limit_withdraws_racing_transfers_on_one_wallet() {
    let Some(c) = Cluster::start().await else {
        eprintln!("SATCHEL_SKIP_PG=1: skipped");
        return;
    };
    let started = Instant::now();
    let (a1, a2) = (c.api(0), c.api(1));
    let dest = a2.create_wallet("dest").await;
    let mut transferred_total = 0;
    for round in 0..3 {
        let w = a1.create_wallet("spender").await;
        a1.fund(&w, 1_000).await;
        let mut invoices = Vec::new();
        for i in 0..20 {
            let (pr, hash) = c.api(i % 2).carol_invoice(100).await;
            invoices.push((i % 2, pr, hash));
        }
        let withdraws = invoices.iter().map(|(proc, pr, _)| {
            let (api, w) = (c.api(*proc), w.clone());
            async move { withdraw_with_limit(&api, &w, pr, 0).await }
        });
        let transfers = (0..20).map(|i| {
            let (api, w, dest) = (c.api((i + 1) % 2), w.clone(), dest.clone());
            async move { transfer_ok(&api, &w, &dest, 100).await }
        });
        let (withdrawn, transferred) = futures::join!(join_all(withdraws), join_all(transfers));
        let withdrawn = withdrawn.into_iter().filter(|x| *x).count();
        let transferred = transferred.into_iter().filter(|x| *x).count();
        eprintln!("round {round}: {withdrawn} withdraws and {transferred} transfers succeeded");
        assert_eq!(withdrawn + transferred, 10, "exactly the affordable number");
        assert_eq!(a1.balance_msat(&w).await, 0);
        transferred_total += transferred;
        let sends: u64 = invoices.iter().map(|(p, _, h)| c.node_sends(*p, h)).sum();
        assert_eq!(sends, u64::try_from(withdrawn).unwrap());
    }
    assert_eq!(
        a2.balance_msat(&dest).await,
        i64::try_from(transferred_total).unwrap() * 100_000
    );
    c.finish().await;
    eprintln!("done in {:?}", started.elapsed());
}

/// The same invoice, paid concurrently through both processes: by two wallets paying one of our
/// own invoices (internal), and by one wallet paying carol. Paid once, charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_invoice_raced_through_two_processes_is_paid_once() {
    let Some(c) = Cluster::start().await else {
        eprintln!("SATCHEL_SKIP_PG=1: skipped");
        return;
    };
    let started = Instant::now();
    let (a1, a2) = (c.api(0), c.api(1));
    let payer1 = a1.create_wallet("payer1").await;
    let payer2 = a1.create_wallet("payer2").await;
    let payee = a1.create_wallet("payee").await;
    a1.fund(&payer1, 1_000).await;
    a1.fund(&payer2, 1_000).await;

    // Internal: 12 attempts, both payers, both processes.
    let pr = a1.invoice(&payee, 300).await;
    let attempts = (0..12).map(|i| {
        let api = if i % 2 == 0 { a1.clone() } else { a2.clone() };
        let payer = if i % 3 == 0 {
            payer1.clone()
        } else {
            payer2.clone()
        };
        let pr = pr.clone();
        async move { api.withdraw(&payer, &pr).await }
    });
    let results = join_all(attempts).await;
    let paid = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    for (s, v) in &results {
        assert!(
            *s == StatusCode::CREATED || *s == StatusCode::BAD_REQUEST,
            "{s} {v}"
        );
    }
    assert_eq!(paid, 1, "{results:?}");
    assert_eq!(a2.balance_msat(&payee).await, 300_000);
    let left = a1.balance_msat(&payer1).await + a1.balance_msat(&payer2).await;
    assert_eq!(left, 2_000_000 - 300_000, "exactly one payer charged once");

    // External: carol's invoice from p1's node, raced by payer1 through both processes. p2's
    // node does not know carol's preimage and fails it (refund); at most one payment succeeds.
    let (carol_pr, carol_hash) = a1.carol_invoice(100).await;
    let before = a1.balance_msat(&payer1).await;
    let attempts = (0..10).map(|i| {
        let api = if i % 2 == 0 { a1.clone() } else { a2.clone() };
        let (payer, pr) = (payer1.clone(), carol_pr.clone());
        async move {
            let (s, v) = api.withdraw(&payer, &pr).await;
            api.withdraw_succeeded(s, &v).await
        }
    });
    let ok = join_all(attempts).await.into_iter().filter(|x| *x).count();
    assert!(ok <= 1, "{ok} payments of one invoice succeeded");
    let node_sent_ok = c.node_sends(0, &carol_hash);
    assert!(
        node_sent_ok <= 1,
        "p1's node sent carol's invoice {node_sent_ok} times"
    );
    assert_eq!(
        a1.balance_msat(&payer1).await,
        before - i64::try_from(ok).unwrap() * 100_000
    );
    c.finish().await;
    eprintln!("done in {:?}", started.elapsed());
}

/// A→B through one process while B→A through the other, many at once: no deadlock, every
/// transfer completes, the total is conserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_transfers_across_two_processes_do_not_deadlock() {
    let Some(c) = Cluster::start().await else {
        eprintln!("SATCHEL_SKIP_PG=1: skipped");
        return;
    };
    let started = Instant::now();
    let (a1, a2) = (c.api(0), c.api(1));
    let a = a1.create_wallet("A").await;
    let b = a1.create_wallet("B").await;
    a1.fund(&a, 1_000).await;
    a1.fund(&b, 1_000).await;
    let mut reqs = Vec::new();
    for i in 0..30 {
        // A→B on p1 (and some on p2), B→A on p2 (and some on p1), interleaved.
        let (ab, ba) = if i % 5 == 0 {
            (a2.clone(), a1.clone())
        } else {
            (a1.clone(), a2.clone())
        };
        let (a_, b_) = (a.clone(), b.clone());
        reqs.push(tokio::spawn(async move { ab.transfer(&a_, &b_, 10).await }));
        let (a_, b_) = (a.clone(), b.clone());
        reqs.push(tokio::spawn(async move { ba.transfer(&b_, &a_, 10).await }));
    }
    let all = tokio::time::timeout(Duration::from_secs(60), join_all(reqs))
        .await
        .expect("transfers deadlocked");
    for r in all {
        let (status, v) = r.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let (ba, bb) = (a1.balance_msat(&a).await, a2.balance_msat(&b).await);
    assert_eq!(ba + bb, 2_000_000, "total conserved");
    assert_eq!((ba, bb), (1_000_000, 1_000_000), "30 each way");
    c.finish().await;
    eprintln!("done in {:?}", started.elapsed());
}

/// One `Idempotency-Key`, the same transfer and the same keysend fired at both processes at
/// once and then retried on each: one movement, every answer about it, and the key's answer
/// is shared by both processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_across_two_processes_moves_money_once() {
    let Some(c) = Cluster::start().await else {
        eprintln!("SATCHEL_SKIP_PG=1: skipped");
        return;
    };
    let (a1, a2) = (c.api(0), c.api(1));
    let a = a1.create_wallet("A").await;
    let b = a1.create_wallet("B").await;
    a1.fund(&a, 1_000).await;
    let keyed = |api: &Api, key: &'static str, path: String, body: Value| {
        let api = api.clone();
        async move {
            let r = api
                .http
                .post(format!("{}/v1{path}", api.base))
                .header("X-Api-Key", &api.sak)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let replayed = r.headers().contains_key("idempotent-replayed");
            let text = r.text().await.unwrap();
            (status, replayed, text)
        }
    };
    let transfer = json!({ "dest_wallet_id": b.id, "num_satoshis": 100 });
    let path = format!("/wallet/{}/transfer", a.waka);
    let racing = (0..16).map(|i| {
        let api = if i % 2 == 0 { &a1 } else { &a2 };
        keyed(api, "mp-transfer", path.clone(), transfer.clone())
    });
    let answers = join_all(racing).await;
    let mut out_ids = std::collections::HashSet::new();
    for (status, _, text) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{text}");
        let v: Value = serde_json::from_str(text).unwrap();
        out_ids.insert(v["wtx_transfer_out"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(out_ids.len(), 1, "{out_ids:?}");
    // Sequential retries on both processes: the stored answer, byte for byte.
    let (s1, r1, t1) = keyed(&a1, "mp-transfer", path.clone(), transfer.clone()).await;
    let (s2, r2, t2) = keyed(&a2, "mp-transfer", path.clone(), transfer.clone()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert!(r1 && r2);
    assert_eq!(t1, t2);
    let other = json!({ "dest_wallet_id": b.id, "num_satoshis": 200 });
    let (s3, _, t3) = keyed(&a2, "mp-transfer", path, other).await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{t3}");
    assert_eq!(a2.balance_msat(&b).await, 100_000);
    assert_eq!(a1.balance_msat(&a).await, 900_000);

    // A withdraw of a carol invoice of p1's node, keyed, through both processes. p2's node
    // cannot pay it (it fails there, refunded); whichever process wins, it happens once.
    let (pr, hash) = a1.carol_invoice(50).await;
    let wd = json!({ "payment_request": pr });
    let wpath = format!("/wallet/{}/withdraw", a.waka);
    let racing = (0..10).map(|i| {
        let api = if i % 2 == 0 { &a1 } else { &a2 };
        keyed(api, "mp-withdraw", wpath.clone(), wd.clone())
    });
    let mut lntx_ids = std::collections::HashSet::new();
    for (status, _, text) in join_all(racing).await {
        let v: Value = serde_json::from_str(&text).unwrap();
        match status {
            StatusCode::CREATED | StatusCode::ACCEPTED => {
                lntx_ids.insert(v["lnTx"]["id"].as_str().unwrap().to_owned());
            }
            StatusCode::BAD_REQUEST => {}
            other => panic!("{other} {text}"),
        }
    }
    assert!(lntx_ids.len() <= 1, "{lntx_ids:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.node_sends(0, &hash) + c.node_sends(1, &hash) == 0
        || ![850_000, 900_000].contains(&a1.balance_msat(&a).await)
    {
        assert!(Instant::now() < deadline, "withdraw never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.node_sends(0, &hash) + c.node_sends(1, &hash), 1);
    let (_, r1, t1) = keyed(&a1, "mp-withdraw", wpath.clone(), wd.clone()).await;
    let (_, r2, t2) = keyed(&a2, "mp-withdraw", wpath, wd).await;
    assert!(r1 && r2);
    assert_eq!(t1, t2);
    c.finish().await;
}
