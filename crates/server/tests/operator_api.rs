//! The operator API (`/operator/v1/…`) against the real server: the cookie file (mode 0600, a
//! new secret each start, removed at a clean stop), refusals (no secret, a wrong one, any API
//! key, a forwarded request, a non-loopback peer), node and channels, the stuck-payment flow
//! (list, resolve failed and succeeded, refusals, audit trail, audit) and accounts, on SQLite
//! and Postgres; node info and channels on the LDK devnet, and `satchel node info --json` /
//! `satchel node channels` against it; the node's on-chain wallet (address, balance, send and
//! its refusals) over the API and `satchel node onchain …` on the devnet.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod child;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, test_dispatcher_config, test_http_options, test_service_config};
use reqwest::StatusCode;
use satchel::app::{OPERATOR_COOKIE_FILE, OperatorSettings, StartOptions, start_with_http};
use satchel_domain::{Msat, Network};
use satchel_lightning::{ChannelInfo, ChannelState, DevnetControl, LightningBackend};
use satchel_scripted::{Script, ScriptedBackend};
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

fn operator_http(dir: &Path, allow_remote: bool) -> satchel::app::HttpOptions {
    let mut http = test_http_options();
    http.operator = Some(OperatorSettings {
        cookie_path: dir.join(OPERATOR_COOKIE_FILE),
        allow_remote,
    });
    http
}

fn secret(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(OPERATOR_COOKIE_FILE))
        .unwrap()
        .trim()
        .to_owned()
}

struct Op {
    http: reqwest::Client,
    base: String,
}

impl Op {
    fn new(base: &str) -> Op {
        Op {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }
    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = r.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    async fn get(&self, secret: &str, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}/operator/v1{path}", self.base))
                .bearer_auth(secret),
        )
        .await
    }
    async fn post(&self, secret: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}/operator/v1{path}", self.base))
                .bearer_auth(secret)
                .json(&body),
        )
        .await
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_api_auth_node_payments_accounts() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let dir = tempfile::tempdir().unwrap();
        let cookie = dir.path().join(OPERATOR_COOKIE_FILE);
        let mut cfg = test_service_config();
        cfg.payment_wait = Duration::from_millis(300);
        let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [5u8; 32]));
        let s = TestServer::start_full(
            db,
            cfg.clone(),
            scripted.clone(),
            Some(test_dispatcher_config()),
            operator_http(dir.path(), false),
        )
        .await;
        let op = Op::new(&s.base);

        // The cookie: 0600, 256 bits of hex.
        #[cfg(unix)]
        assert_eq!(mode(&cookie), 0o600);
        let sec = secret(dir.path());
        assert_eq!(sec.len(), 64);
        assert!(sec.bytes().all(|b| b.is_ascii_hexdigit()));

        // Refusals: nothing, a wrong secret, API keys in every transport, a forwarded request.
        let url = format!("{}/operator/v1/node", s.base);
        let (st, body) = op.send(op.http.get(&url)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["message"].as_str().unwrap().contains("operator"));
        let (st, _) = op.get(&"0".repeat(64), "/node").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = op.get(&sec[..63], "/node").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        for key in [&s.sak, &s.pak] {
            let (st, _) = op.send(op.http.get(&url).header("X-Api-Key", key)).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            let (st, _) = op.get(key, "/node").await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            let (st, _) = op
                .send(op.http.get(format!("{url}?access-token={key}")))
                .await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            let (st, _) = op.send(op.http.get(&url).basic_auth(key, Some(""))).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
        }
        let w = s.create_wallet("ops").await;
        let (st, _) = op.get(&w.waka, "/node").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        for h in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
            let (st, _) = op
                .send(op.http.get(&url).bearer_auth(&sec).header(h, "203.0.113.9"))
                .await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{h}");
        }
        // The console is behind the same address rule.
        let r = op
            .http
            .get(format!("{}/operator", s.base))
            .header("X-Forwarded-For", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // Node and channels.
        let (st, n) = op.get(&sec, "/node").await;
        assert_eq!(st, StatusCode::OK, "{n}");
        assert_eq!(n["network"], "regtest");
        assert_eq!(n["pubkey"], s.running().services.ctx.pubkey().to_string());
        assert!(n["block_height"].is_null() && n["synced"].is_null(), "{n}");
        let (st, c) = op.get(&sec, "/channels").await;
        assert_eq!(
            (st, c["channels"].as_array().unwrap().len()),
            (StatusCode::OK, 0)
        );
        let peer = s.running().services.ctx.pubkey();
        scripted.set_channels(vec![ChannelInfo {
            channel_id: "ab".repeat(32),
            short_channel_id: Some(42),
            peer,
            capacity_sats: 1_000_000,
            local_balance_msat: 400_000_000,
            remote_balance_msat: 590_000_000,
            state: ChannelState::Active,
            confirmations: Some(6),
        }]);
        let (_, c) = op.get(&sec, "/channels").await;
        assert_eq!(
            c["channels"][0],
            json!({"channel_id": "ab".repeat(32), "short_channel_id": 42, "peer": peer.to_string(),
                   "capacity_sats": 1_000_000, "local_balance_msat": 400_000_000u64,
                   "remote_balance_msat": 590_000_000u64, "state": "active", "confirmations": 6})
        );

        // Two payments the node never resolves.
        s.fund(&w, 1000).await;
        let mut stuck = Vec::new();
        for sats in [100u64, 200] {
            let (inv, preimage) =
                scripted.external_invoice(Some(Msat::from_sats(sats).unwrap()), "stuck", 3600);
            scripted.script(inv.payment_hash(), Script::Unknown);
            let r = s
                .post(
                    &s.sak,
                    &format!("/wallet/{}/withdraw", w.waka),
                    json!({"payment_request": inv.as_str(), "fee_limit_msat": 0}),
                )
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
            stuck.push((r.json["lnTx"]["id"].as_str().unwrap().to_owned(), preimage));
        }
        let (st, p) = op.get(&sec, "/payments").await;
        assert_eq!(st, StatusCode::OK);
        let mut ids: Vec<&str> = p["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let mut want = vec![stuck[0].0.as_str(), stuck[1].0.as_str()];
        want.sort_unstable();
        assert_eq!(ids, want);
        let first = p["payments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == stuck[0].0.as_str())
            .unwrap();
        assert_eq!(first["amount_msat"], 100_000);
        assert_eq!(first["status"], "dispatched", "{first}");

        // Refused: no reason, a preimage that is not the proof, an unknown outcome, an API key.
        let resolve = |i: usize| format!("/payments/{}/resolve", stuck[i].0);
        let (st, e) = op
            .post(
                &sec,
                &resolve(0),
                json!({"outcome": "failed", "reason": " "}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        let (st, e) = op
            .post(
                &sec,
                &resolve(1),
                json!({"outcome": "succeeded", "preimage": "11".repeat(32), "reason": "x"}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("preimage does not match"),
            "{e}"
        );
        let (st, _) = op
            .post(
                &sec,
                &resolve(0),
                json!({"outcome": "maybe", "reason": "x"}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _) = op
            .post(
                &s.sak,
                &resolve(0),
                json!({"outcome": "failed", "reason": "x"}),
            )
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = op
            .post(
                &sec,
                "/payments/lntx_nope/resolve",
                json!({"outcome": "failed", "reason": "x"}),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(s.balance(&w).await, 700);

        // Failed (JSON): refunded. Succeeded (form body) with the proof: booked with its fee.
        let (st, r) = op
            .post(
                &sec,
                &resolve(0),
                json!({"outcome": "failed", "reason": "node has no record", "operator": "alice"}),
            )
            .await;
        assert_eq!(
            (st, r["status"].as_str()),
            (StatusCode::OK, Some("failed")),
            "{r}"
        );
        let (st, r) = op
            .send(
                op.http
                    .post(format!("{}/operator/v1{}", s.base, resolve(1)))
                    .bearer_auth(&sec)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!(
                        "outcome=succeeded&preimage={}&fee_msat=1000&reason=paid+per+node+logs&operator=bob",
                        stuck[1].1.to_hex()
                    )),
            )
            .await;
        assert_eq!(
            (st, r["status"].as_str()),
            (StatusCode::OK, Some("succeeded")),
            "{r}"
        );
        let (st, e) = op
            .post(
                &sec,
                &resolve(0),
                json!({"outcome": "failed", "reason": "again"}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(
            e["message"].as_str().unwrap().contains("already failed"),
            "{e}"
        );
        assert_eq!(s.balance(&w).await, 800);
        let (_, p) = op.get(&sec, "/payments").await;
        assert!(p["payments"].as_array().unwrap().is_empty());

        let (_, a) = op.get(&sec, "/actions").await;
        let a = a["actions"].as_array().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["operator"], "bob");
        assert_eq!(a[0]["action"], "resolve_succeeded");
        assert_eq!(a[0]["details"], "{\"fee_msat\":1000}");
        assert_eq!(a[1]["operator"], "alice");
        assert_eq!(a[1]["reason"], "node has no record");
        let (_, au) = op.get(&sec, "/audit").await;
        assert_eq!(au["clean"], true, "{au}");
        assert_eq!(au["unclaimed_msat"], -1_000);
        assert_eq!(au["liabilities_msat"], 800_000);

        // Accounts: list, create (keys shown once, and they work).
        let (st, ac) = op.get(&sec, "/accounts").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(ac["total"], 1);
        assert_eq!(ac["accounts"][0]["label"], "test");
        assert_eq!(ac["accounts"][0]["wallets"], 1);
        assert_eq!(ac["accounts"][0]["balance_msat"], 800_000);
        let (st, _) = op.post(&sec, "/accounts", json!({"label": " "})).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, created) = op.post(&sec, "/accounts", json!({"label": "shop"})).await;
        assert_eq!(st, StatusCode::CREATED, "{created}");
        let new_sak = created["secret_key"].as_str().unwrap();
        assert!(new_sak.starts_with("sak_"));
        let r = s.get(new_sak, "/wallets").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let mut labels = Vec::new();
        for offset in [0, 1, 2] {
            let (_, ac) = op
                .get(&sec, &format!("/accounts?limit=1&offset={offset}"))
                .await;
            assert_eq!(ac["total"], 2);
            for a in ac["accounts"].as_array().unwrap() {
                labels.push(a["label"].as_str().unwrap().to_owned());
            }
        }
        labels.sort();
        assert_eq!(labels, ["shop", "test"]);
        let (st, _) = op.get(&sec, "/accounts?limit=x").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);

        // Not in the LNPay OpenAPI document.
        let doc = s.get(&s.sak, "/openapi.json").await;
        assert!(!doc.text.contains("/operator"));

        // A clean stop removes the cookie; a restart writes a new secret and the old one is
        // refused. What was resolved stays resolved.
        let db = s.stop().await;
        assert!(!cookie.exists());
        let s = TestServer::start_full(
            db,
            cfg,
            scripted,
            Some(test_dispatcher_config()),
            operator_http(dir.path(), false),
        )
        .await;
        let op = Op::new(&s.base);
        let sec2 = secret(dir.path());
        assert_ne!(sec, sec2);
        let (st, _) = op.get(&sec, "/node").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (_, a) = op.get(&sec2, "/actions").await;
        assert_eq!(a["actions"].as_array().unwrap().len(), 2);
        let (_, au) = op.get(&sec2, "/audit").await;
        assert_eq!(au["clean"], true);
        let (_, ac) = op.get(&sec2, "/accounts").await;
        assert_eq!(ac["total"], 3, "{ac}"); // the harness adds an account at each start
        s.stop().await;
    }
}

/// This machine's address on its default route, if it has one that is not loopback.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

async fn start_on_all_interfaces(
    db: &TestDb,
    dir: &Path,
    allow_remote: bool,
) -> satchel::app::Running {
    let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [9u8; 32]));
    start_with_http(
        StartOptions {
            database_url: db.url.clone(),
            listen: "0.0.0.0:0".into(),
            backend: scripted.clone(),
            devnet: None,
            service: test_service_config(),
            webhooks: None,
        },
        operator_http(dir, allow_remote),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_api_refuses_non_loopback_peers_unless_allowed() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("!!!!!!!! SKIPPED: this machine has no non-loopback address to connect from");
        return;
    };
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    for allow_remote in [false, true] {
        let running = start_on_all_interfaces(&db, dir.path(), allow_remote).await;
        let sec = secret(dir.path());
        let port = running.addr.port();
        let http = reqwest::Client::new();
        let far = format!(
            "http://{}/operator/v1/node",
            std::net::SocketAddr::new(ip, port)
        );
        let near = format!("http://127.0.0.1:{port}/operator/v1/node");
        let r = http.get(&far).bearer_auth(&sec).send().await.unwrap();
        let expected = if allow_remote {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(
            r.status(),
            expected,
            "from {ip}, allow_remote {allow_remote}"
        );
        // The secret is needed either way.
        let r = http.get(&far).send().await.unwrap();
        assert_ne!(r.status(), StatusCode::OK);
        let r = http.get(&near).bearer_auth(&sec).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // The LNPay API itself still answers remote peers.
        let r = http
            .get(format!(
                "http://{}/v1/wallets",
                std::net::SocketAddr::new(ip, port)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        running.shutdown().await;
    }
}

fn satchel_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_satchel"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_info_and_channels_on_the_devnet_and_the_cli() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir: PathBuf = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let devnet = Arc::new(
        satchel_ldk::Devnet::start(&dir.path().join("devnet"))
            .await
            .expect("devnet starts"),
    );
    let backend: Arc<dyn LightningBackend> = devnet.node();
    let control: Arc<dyn DevnetControl> = devnet.clone();
    let running = start_with_http(
        StartOptions {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            backend,
            devnet: Some(control.clone()),
            service: satchel_service::ServiceConfig {
                backend_name: "devnet",
                ..test_service_config()
            },
            webhooks: None,
        },
        operator_http(&data_dir, false),
    )
    .await
    .unwrap();
    let op = Op::new(&running.url());
    let sec = secret(&data_dir);

    // The node follows the devnet's chain: its height is the chain's, and it says it is synced
    // once its first round of chain sync has run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let n = loop {
        let (st, n) = op.get(&sec, "/node").await;
        assert_eq!(st, StatusCode::OK, "{n}");
        if n["synced"] == true || tokio::time::Instant::now() >= deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(n["backend"], "devnet");
    assert_eq!(n["network"], "regtest");
    assert_eq!(n["pubkey"], running.services.ctx.pubkey().to_string());
    assert_eq!(n["block_height"], devnet.chain_tip().0, "{n}");
    assert_eq!(n["synced"], true, "{n}");

    // Our node's channels: to alice and to hub, as the devnet peers see them.
    let peers = control.peers().await.unwrap();
    let (st, c) = op.get(&sec, "/channels").await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let chans = c["channels"].as_array().unwrap();
    assert!(!chans.is_empty(), "{c}");
    for ch in chans {
        let peer = ch["peer"].as_str().unwrap();
        assert!(
            peers.iter().any(|p| p.pubkey.to_string() == peer),
            "{peer} is not a devnet peer: {peers:?}"
        );
        assert!(ch["capacity_sats"].as_u64().unwrap() > 0);
        let local = ch["local_balance_msat"].as_u64().unwrap();
        let remote = ch["remote_balance_msat"].as_u64().unwrap();
        assert!(local + remote <= ch["capacity_sats"].as_u64().unwrap() * 1000);
        assert_eq!(ch["state"], "active", "{ch}");
    }

    // The CLI, against the running server, with the cookie from the data dir.
    let base = running.url();
    let dd = data_dir.to_str().unwrap();
    let (ok, out) = satchel_cli(&[
        "node",
        "info",
        "--json",
        "--server",
        &base,
        "--data-dir",
        dd,
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(v, n);
    let (ok, out) = satchel_cli(&["node", "channels", "--server", &base, "--data-dir", dd]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{} channel(s)", chans.len())),
        "{out}"
    );
    assert!(out.contains(chans[0]["peer"].as_str().unwrap()), "{out}");
    let (ok, out) = satchel_cli(&[
        "node",
        "channels",
        "--json",
        "--server",
        &base,
        "--data-dir",
        dd,
    ]);
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap(), c);
    // Without the cookie (another data dir) it says why.
    let other = dir.path().join("elsewhere");
    let (ok, out) = satchel_cli(&[
        "node",
        "info",
        "--server",
        &base,
        "--data-dir",
        other.to_str().unwrap(),
    ]);
    assert!(!ok && out.contains(".operator_cookie"), "{out}");

    // `satchel devnet mine/reorg/fund` drive the chain; node info follows it.
    let (ok, out) = satchel_cli(&["devnet", "mine", "3", "--server", &base]);
    assert!(ok, "{out}");
    let (height, hash) = devnet.chain_tip();
    assert_eq!(
        out.trim(),
        format!("mined 3 block(s); tip {height} {hash}"),
        "{out}"
    );
    let (st, n) = op.get(&sec, "/node").await;
    assert_eq!(st, StatusCode::OK, "{n}");
    assert_eq!(
        n["block_height"], height,
        "mine returns once the nodes have the blocks"
    );
    let (ok, out) = satchel_cli(&["devnet", "reorg", "2", "--json", "--server", &base]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(v["blocks"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["tip"]["height"], height + 1, "{v}");
    assert_eq!(v["tip"]["hash"], devnet.chain_tip().1.to_string(), "{v}");
    let (_, n) = op.get(&sec, "/node").await;
    assert_eq!(n["block_height"], height + 1, "{n}");
    let address = devnet.chain().faucet_address().to_string();
    let (ok, out) = satchel_cli(&[
        "devnet", "fund", &address, "--sats", "20000", "--json", "--server", &base,
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    let txid: bitcoin::Txid = v["txid"].as_str().unwrap().parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !devnet
        .chain()
        .with_state(|st| st.tx_index.contains_key(&txid))
    {
        assert!(tokio::time::Instant::now() < deadline, "never confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, out) = satchel_cli(&["devnet", "mine", "0", "--server", &base]);
    assert!(!ok && out.contains("block count"), "{out}");
    let (ok, out) = satchel_cli(&[
        "devnet",
        "fund",
        "not-an-address",
        "--sats",
        "1000",
        "--server",
        &base,
    ]);
    assert!(!ok && out.contains("invalid address"), "{out}");
    // The devnet info shows the chain's tip.
    let (ok, out) = satchel_cli(&["devnet", "info", "--server", &base]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(v["chain"]["height"], devnet.chain_tip().0, "{v}");

    running.shutdown().await;
    devnet.stop().await.unwrap();
}

/// The real `satchel serve` (devnet backend): it writes the cookie (0600) into its data dir,
/// `satchel node info --json` finds the server from `--listen` and the secret from
/// `--data-dir`, and a clean stop (SIGTERM) removes the cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn satchel_serve_writes_the_cookie_and_node_info_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let dd = data_dir.clone();
    let mut p = child::Proc::serve("operator", move |cmd| {
        cmd.arg("--data-dir").arg(&dd);
    });
    p.wait_ready().await;
    let cookie = data_dir.join(OPERATOR_COOKIE_FILE);
    #[cfg(unix)]
    assert_eq!(mode(&cookie), 0o600);
    let (ok, out) = satchel_cli(&[
        "node",
        "info",
        "--json",
        "--listen",
        p.addr(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(v["backend"], "devnet");
    assert_eq!(v["network"], "regtest");
    assert_eq!(v["pubkey"].as_str().unwrap().len(), 66);
    let (ok, out) = satchel_cli(&[
        "node",
        "channels",
        "--listen",
        p.addr(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("active"), "{out}");
    let status = p.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(!cookie.exists());
}

/// Polls the operator's on-chain balance until `done` holds for it (the node's wallet syncs
/// on its own after each block), or fails after a minute.
async fn wait_balance(op: &Op, sec: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (st, b) = op.get(sec, "/onchain/balance").await;
        assert_eq!(st, StatusCode::OK, "{b}");
        if done(&b) {
            return b;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn onchain_address_balance_and_send_on_the_devnet() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir: PathBuf = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let devnet = Arc::new(
        satchel_ldk::Devnet::start(&dir.path().join("devnet"))
            .await
            .expect("devnet starts"),
    );
    let backend: Arc<dyn LightningBackend> = devnet.node();
    let control: Arc<dyn DevnetControl> = devnet.clone();
    let running = start_with_http(
        StartOptions {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            backend,
            devnet: Some(control.clone()),
            service: satchel_service::ServiceConfig {
                backend_name: "devnet",
                ..test_service_config()
            },
            webhooks: None,
        },
        operator_http(&data_dir, false),
    )
    .await
    .unwrap();
    let op = Op::new(&running.url());
    let sec = secret(&data_dir);
    let wallet = Arc::clone(
        devnet
            .node()
            .wallet()
            .expect("the devnet node has a wallet"),
    );
    let sats = |b: &Value, k: &str| b[k].as_u64().unwrap_or_else(|| panic!("{k} in {b}"));

    // Nothing pending to start from: the devnet's initial funding is confirmed.
    let start = wait_balance(&op, &sec, "initial funds confirm", |b| {
        sats(b, "unconfirmed_sats") == 0 && sats(b, "confirmed_sats") > 0
    })
    .await;
    let start_sats = sats(&start, "confirmed_sats");

    // A fresh address each time; fund one from the devnet faucet.
    let (st, a1) = op.post(&sec, "/onchain/address", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{a1}");
    let (st, a2) = op.post(&sec, "/onchain/address", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{a2}");
    let address = a1["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("bcrt1"), "{a1}");
    assert_ne!(a1["address"], a2["address"]);
    let funded_sats = 250_000;
    control.fund(&address, funded_sats).await.unwrap();
    control.mine(1).await.unwrap();
    let funded = wait_balance(&op, &sec, "the funding confirms", |b| {
        sats(b, "unconfirmed_sats") == 0 && sats(b, "confirmed_sats") == start_sats + funded_sats
    })
    .await;
    let funded_total = sats(&funded, "confirmed_sats");

    // Bad input is refused with a 4xx and nothing is built or sent.
    let txs_before = wallet.transactions().await.len();
    let faucet = devnet.chain().faucet_address().to_string();
    for (body, why) in [
        (
            json!({"address": "not-an-address", "sats": 1000}),
            "bad address",
        ),
        (
            json!({"address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "sats": 1000}),
            "mainnet address",
        ),
        (json!({"address": faucet, "sats": 0}), "zero"),
        (json!({"address": faucet}), "no amount"),
        (
            json!({"address": faucet, "sats": funded_total + 1}),
            "over the balance",
        ),
    ] {
        let (st, v) = op.post(&sec, "/onchain/send", body).await;
        assert!(st.is_client_error(), "{why}: {st} {v}");
    }
    assert_eq!(wallet.transactions().await.len(), txs_before);
    let (_, b) = op.get(&sec, "/onchain/balance").await;
    assert_eq!(b, funded, "refused sends write nothing");

    // Send to the faucet; once mined the balance is lower by the amount plus the fee.
    let sent_sats = 100_000;
    let (st, v) = op
        .post(
            &sec,
            "/onchain/send",
            json!({"address": faucet, "sats": sent_sats}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let txid: bitcoin::Txid = v["txid"].as_str().unwrap().parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !devnet
        .chain()
        .with_state(|st| st.mempool.entries.contains_key(&txid) || st.tx_index.contains_key(&txid))
    {
        assert!(tokio::time::Instant::now() < deadline, "never broadcast");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    control.mine(1).await.unwrap();
    let fee_sats = wallet
        .transactions()
        .await
        .iter()
        .find(|t| t.txid == txid)
        .and_then(|t| t.fee)
        .expect("the wallet knows its send and its fee")
        .to_sat();
    assert!(fee_sats > 0);
    let after_api = wait_balance(&op, &sec, "the send confirms", |b| {
        sats(b, "unconfirmed_sats") == 0
            && sats(b, "confirmed_sats") == funded_total - sent_sats - fee_sats
    })
    .await;
    let after_api = sats(&after_api, "confirmed_sats");

    // The same through `satchel node onchain …`.
    let base = running.url();
    let dd = data_dir.to_str().unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["node", "onchain"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &base, "--data-dir", dd]);
        satchel_cli(&all)
    };
    let (ok, out) = cli(&["balance", "--json"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(sats(&v, "confirmed_sats"), after_api, "{v}");
    let (ok, out) = cli(&["balance"]);
    assert!(
        ok && out.contains(&format!("confirmed_sats:   {after_api}")),
        "{out}"
    );
    let (ok, out) = cli(&["address"]);
    assert!(ok && out.trim().starts_with("bcrt1"), "{out}");
    let (ok, out) = cli(&["send", &faucet, "--sats", "0"]);
    assert!(!ok && out.contains("400"), "{out}");
    let cli_sent_sats = 40_000;
    let (ok, out) = cli(&["send", &faucet, "--sats", "40000", "--json"]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    let txid: bitcoin::Txid = v["txid"].as_str().unwrap().parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let fee_sats = loop {
        let fee = wallet
            .transactions()
            .await
            .iter()
            .find(|t| t.txid == txid)
            .and_then(|t| t.fee);
        if let Some(fee) = fee {
            break fee.to_sat();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the wallet never saw {txid}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    control.mine(1).await.unwrap();
    wait_balance(&op, &sec, "the CLI send confirms", |b| {
        sats(b, "unconfirmed_sats") == 0
            && sats(b, "confirmed_sats") == after_api - cli_sent_sats - fee_sats
    })
    .await;

    running.shutdown().await;
    devnet.stop().await.unwrap();
}

/// Polls `/operator/v1/channels` until `done` holds for the list, or fails after a minute.
async fn wait_channels(
    op: &Op,
    sec: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (st, v) = op.get(sec, "/channels").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let list = v["channels"].as_array().unwrap().clone();
        if done(&list) {
            return list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_and_close_a_channel_on_the_devnet() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir: PathBuf = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let devnet = Arc::new(
        satchel_ldk::Devnet::start(&dir.path().join("devnet"))
            .await
            .expect("devnet starts"),
    );
    let backend: Arc<dyn LightningBackend> = devnet.node();
    let control: Arc<dyn DevnetControl> = devnet.clone();
    let running = start_with_http(
        StartOptions {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            backend,
            devnet: Some(control.clone()),
            service: satchel_service::ServiceConfig {
                backend_name: "devnet",
                ..test_service_config()
            },
            webhooks: None,
        },
        operator_http(&data_dir, false),
    )
    .await
    .unwrap();
    let op = Op::new(&running.url());
    let sec = secret(&data_dir);
    let alice = control
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "alice")
        .expect("alice")
        .pubkey
        .to_string();
    let (_, v) = op.get(&sec, "/channels").await;
    let before: Vec<String> = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel_id"].as_str().unwrap().to_owned())
        .collect();

    // Refusals: 4xx, and no channel appears.
    for (path, body, why) in [
        (
            "/channels/open",
            json!({"pubkey": "nope", "sats": 100_000}),
            "bad pubkey",
        ),
        (
            "/channels/open",
            json!({"pubkey": alice, "sats": 0}),
            "zero capacity",
        ),
        ("/channels/open", json!({"pubkey": alice}), "no capacity"),
        (
            "/channels/close",
            json!({"channel_id": "00".repeat(32)}),
            "unknown channel",
        ),
        (
            "/channels/close",
            json!({"channel_id": "xyz"}),
            "not a channel id",
        ),
        (
            "/peers/connect",
            json!({"pubkey": alice, "address": "nowhere"}),
            "bad address",
        ),
    ] {
        let (st, v) = op.post(&sec, path, body).await;
        assert!(st.is_client_error(), "{why}: {st} {v}");
    }
    let (_, v) = op.get(&sec, "/channels").await;
    assert_eq!(v["channels"].as_array().unwrap().len(), before.len(), "{v}");

    // Open a channel to alice (already a peer), confirm it, then close it cooperatively.
    let capacity_sats = 150_000;
    let (st, v) = op
        .post(
            &sec,
            "/channels/open",
            json!({"pubkey": alice, "sats": capacity_sats}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let is_new = |c: &Value| !before.iter().any(|id| c["channel_id"] == id.as_str());
    let list = wait_channels(&op, &sec, "the new channel is listed", |l| {
        l.iter().any(&is_new)
    })
    .await;
    let new = list.iter().find(|c| is_new(c)).unwrap().clone();
    assert_eq!(new["peer"], alice.as_str(), "{new}");
    assert_eq!(new["capacity_sats"], capacity_sats, "{new}");
    // The id a pending channel shows is LDK's temporary one; the funded channel gets its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        control.mine(1).await.unwrap();
        let (_, v) = op.get(&sec, "/channels").await;
        let ch = v["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| is_new(c))
            .cloned()
            .unwrap_or_else(|| panic!("{v}"));
        if ch["state"] == "active" {
            break ch["channel_id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "never active: {ch}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (st, v) = op
        .post(
            &sec,
            "/channels/close",
            json!({"channel_id": id, "force": "yes"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // The rest through `satchel node …`.
    let base = running.url();
    let dd = data_dir.to_str().unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["node"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &base, "--data-dir", dd]);
        satchel_cli(&all)
    };
    let (ok, out) = cli(&["connect", &alice]);
    assert!(!ok && out.contains("PUBKEY@HOST:PORT"), "{out}");
    let (ok, out) = cli(&["connect", &format!("{alice}@nowhere")]);
    assert!(!ok && out.contains("400"), "{out}");
    let (ok, out) = cli(&["open-channel", "nope", "--sats", "100000"]);
    assert!(!ok && out.contains("400"), "{out}");
    let (ok, out) = cli(&["close-channel", &"00".repeat(32)]);
    assert!(!ok && out.contains("400"), "{out}");
    let (ok, out) = cli(&["close-channel", &id]);
    assert!(
        ok && out.contains(&format!("closing channel {id}")),
        "{out}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        control.mine(1).await.unwrap();
        let (_, v) = op.get(&sec, "/channels").await;
        let gone = !v["channels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["channel_id"] == id.as_str());
        if gone {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never closed: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_channels(&op, &sec, "the other channels stay", |l| {
        l.len() == before.len()
    })
    .await;

    running.shutdown().await;
    devnet.stop().await.unwrap();
}
