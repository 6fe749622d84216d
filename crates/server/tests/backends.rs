//! `satchel serve --backend lnd | cln` end to end: the real binary configured with flags, talking
//! to a fake LND (REST) / fake Core Lightning (JSON-RPC socket and CLNRest) that speak the daemons'
//! wire formats and are backed by an LDK devnet node, so the money really moves. Through the LNPay
//! API: alice funds a wallet, the wallet pays carol through the hub, the routed fee is booked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use satchel_domain::{Bolt11, Msat};
use satchel_ldk::{Devnet, DevnetOptions};
use satchel_lightning::{DevnetControl, LightningBackend, PayOutcome};
use satchel_testkit::conformance::SwitchPolicy;
use serde_json::{Value, json};

use child::{Proc, satchel_cmd};

/// A running `satchel serve` and the development account's key.
struct Server {
    _proc: Proc,
    base: String,
    sak: String,
}

/// `satchel serve` on SQLite in `dir` with `backend_args`, answering.
async fn serve(dir: &Path, backend_args: &[String]) -> Server {
    let db = format!("sqlite://{}", dir.join("satchel.db").display());
    let (dir, backend_args) = (dir.to_owned(), backend_args.to_vec());
    let mut p = Proc::serve("satchel", move |cmd| {
        cmd.args(["--network", "regtest", "--database-url", &db, "--data-dir"])
            .arg(&dir)
            .args(&backend_args);
    });
    p.wait_ready().await;
    let sak = p.sak().await;
    Server {
        base: p.base(),
        sak,
        _proc: p,
    }
}

async fn devnet(dir: &std::path::Path) -> Arc<Devnet> {
    Arc::new(
        Devnet::start_with(
            dir,
            DevnetOptions {
                incoming_policy: Some(Arc::new(SwitchPolicy::new(true))),
            },
        )
        .await
        .unwrap(),
    )
}

/// The LNPay flow over whatever node the server was given.
async fn lnpay_flow(p: &Server, devnet: &Devnet) {
    let http = reqwest::Client::new();
    let call = |req: reqwest::RequestBuilder| async move {
        let r = req.header("X-Api-Key", &p.sak).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (s, w) = call(
        http.post(format!("{}/v1/wallet", p.base))
            .json(&json!({"user_label": "over a real node"})),
    )
    .await;
    assert_eq!(s, 201, "{w}");
    let waka = w["access_keys"]["Wallet Admin"][0]
        .as_str()
        .unwrap()
        .to_owned();

    // alice pays our invoice: the node's stream credits the wallet.
    let (s, inv) = call(
        http.post(format!("{}/v1/wallet/{waka}/invoice", p.base))
            .json(&json!({"num_satoshis": 1000, "memo": "fund"})),
    )
    .await;
    assert_eq!(s, 201, "{inv}");
    let b = Bolt11::parse(inv["payment_request"].as_str().unwrap()).unwrap();
    let out = devnet.outside_pay("alice", &b, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let mut balance = Value::Null;
    for _ in 0..200 {
        let (_, wal) = call(http.get(format!("{}/v1/wallet/{waka}", p.base))).await;
        balance = wal["balance_msat"].clone();
        if balance == 1_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(balance, 1_000_000, "the deposit was credited");
    let (_, l) = call(http.get(format!(
        "{}/v1/lntx/{}",
        p.base,
        inv["id"].as_str().unwrap()
    )))
    .await;
    assert_eq!(l["settled"], 1);

    // Pay carol through the hub: 1000 msat + 1000 ppm of 100 sat = 1100 msat routed fee.
    let carol = devnet
        .outside_invoice("carol", Some(Msat::from_sats(100).unwrap()), "to carol")
        .await
        .unwrap();
    let (s, wtx) = call(
        http.post(format!("{}/v1/wallet/{waka}/withdraw", p.base))
            .json(&json!({"payment_request": carol.as_str()})),
    )
    .await;
    assert_eq!(s, 201, "{wtx}");
    assert_eq!(wtx["lnTx"]["fee_msat"], 1100);
    // Charged rounded up to the sat: 2 sats.
    assert_eq!(wtx["wal"]["balance_msat"], 1_000_000 - 100_000 - 2000);
    let (_, hist) = call(http.get(format!("{}/v1/wallet/{waka}/transactions", p.base))).await;
    let names: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["wtxType"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["network_fee", "ln_withdrawal", "ln_deposit"]);

    // A fee limit below the hub's fee: NO_ROUTE, refunded exactly.
    let carol = devnet
        .outside_invoice("carol", Some(Msat::from_sats(100).unwrap()), "too cheap")
        .await
        .unwrap();
    let (s, e) = call(
        http.post(format!("{}/v1/wallet/{waka}/withdraw", p.base))
            .json(&json!({"payment_request": carol.as_str(), "fee_limit_msat": 500})),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["message"], "Failure reason: FAILURE_REASON_NO_ROUTE");
    let (_, wal) = call(http.get(format!("{}/v1/wallet/{waka}", p.base))).await;
    assert_eq!(wal["balance_msat"], 1_000_000 - 100_000 - 2000);
}

fn audit_clean(dir: &Path) {
    let db = format!("sqlite://{}", dir.join("satchel.db").display());
    let out = satchel_cmd()
        .args(["audit", "--database-url", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_over_lnd_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dn = devnet(&tmp.path().join("devnet")).await;
    let node: Arc<dyn LightningBackend> = dn.node();
    let lnd = satchel_fakes::lnd::FakeLnd::start(node).await.unwrap();
    let cert = tmp.path().join("tls.cert");
    std::fs::write(&cert, lnd.cert_pem()).unwrap();
    let mac = tmp.path().join("admin.macaroon");
    std::fs::write(&mac, hex::decode(lnd.macaroon_hex()).unwrap()).unwrap();
    let dir = tmp.path().join("satchel");
    std::fs::create_dir_all(&dir).unwrap();
    let p = serve(
        &dir,
        &[
            "--backend".into(),
            "lnd".into(),
            "--lnd-rest-url".into(),
            lnd.url(),
            "--lnd-tls-cert".into(),
            cert.display().to_string(),
            "--lnd-macaroon".into(),
            mac.display().to_string(),
        ],
    )
    .await;
    lnd_node_metrics(&p, &dn).await;
    lnpay_flow(&p, &dn).await;
    drop(p);
    audit_clean(&dir);
    dn.stop().await.unwrap();
}

/// `/metrics` of a server on LND shows the node's figures, read through the LND adapter
/// (`getinfo`, `channels`, `channels/pending`): the devnet node's height, its channels and
/// their balances (whole sats, as LND reports them), and no lag (LND says it is synced).
async fn lnd_node_metrics(p: &Server, dn: &Devnet) {
    use satchel_lightning::NodeInfo;
    let url = p
        ._proc
        .line(true, "serving Prometheus metrics")
        .or_else(|| p._proc.line(false, "serving Prometheus metrics"))
        .and_then(|l| {
            let start = l.find("http://")?;
            let rest = &l[start..];
            Some(rest[..rest.find("/metrics")? + "/metrics".len()].to_owned())
        })
        .expect("the server logs its metrics address");
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let node = dn.node();
    let height = NodeInfo::node_status(&*node)
        .await
        .unwrap()
        .block_height
        .unwrap();
    let channels = NodeInfo::list_channels(&*node).await.unwrap();
    let local: u64 = channels
        .iter()
        .map(|c| c.local_balance_msat / 1000 * 1000)
        .sum();
    // The refresher reads the node at start (nothing has moved since) and every 15 s.
    let mut text = String::new();
    for _ in 0..200 {
        text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if value(&text, "satchel_node_channel_balance_msat{side=\"local\"}")
            .is_some_and(|v| v.abs_diff_u64(local) <= 1000 * channels.len() as u64)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        value(&text, "satchel_node_block_height"),
        Some(f64::from(height)),
        "{text}"
    );
    assert_eq!(
        value(&text, "satchel_node_channels{state=\"active\"}"),
        Some(channels.len() as f64),
        "{text}"
    );
    assert_eq!(
        value(&text, "satchel_node_channels{state=\"inactive\"}"),
        Some(0.0)
    );
    assert!(
        value(&text, "satchel_node_channel_balance_msat{side=\"local\"}")
            .is_some_and(|v| v.abs_diff_u64(local) <= 1000 * channels.len() as u64),
        "local balance: node {local} msat\n{text}"
    );
    assert_eq!(value(&text, "satchel_node_sync_lag_seconds"), Some(0.0));
}

/// |a − b| for a gauge reading and an msat figure.
trait AbsDiff {
    fn abs_diff_u64(self, b: u64) -> u64;
}

impl AbsDiff for f64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn abs_diff_u64(self, b: u64) -> u64 {
        (self as u64).abs_diff(b)
    }
}

fn cln_channels(fake: &satchel_fakes::cln::FakeCln, dn: &Devnet) {
    let node = dn.node();
    fake.set_channels(Arc::new(move || {
        node.list_channels()
            .into_iter()
            .filter(|c| c.usable)
            .map(|c| satchel_fakes::cln::FakeChannel {
                peer_id: c.counterparty,
                short_channel_id: c.outbound_scid.unwrap_or(0),
                spendable_msat: c.outbound_msat,
                receivable_msat: c.inbound_msat,
                total_msat: c.capacity_sats * 1000,
            })
            .collect()
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_over_core_lightning_socket_and_rest() {
    for via_rest in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dn = devnet(&tmp.path().join("devnet")).await;
        let node: Arc<dyn LightningBackend> = dn.node();
        let fake = satchel_fakes::cln::FakeCln::start(node);
        cln_channels(&fake, &dn);
        let dir = tmp.path().join("satchel");
        std::fs::create_dir_all(&dir).unwrap();
        let (_socket, _rest, args) = if via_rest {
            let (cert_pem, key_pem) = satchel_fakes::lnd::self_signed_cert().unwrap();
            let rest = fake
                .serve_rest(satchel_fakes::cln::FakeRestConfig {
                    rune: "test-rune".into(),
                    cert_pem: cert_pem.clone(),
                    key_pem,
                })
                .await
                .unwrap();
            let cert = tmp.path().join("server.pem");
            std::fs::write(&cert, &cert_pem).unwrap();
            let args: Vec<String> = vec![
                "--backend".into(),
                "cln".into(),
                "--cln-rest-url".into(),
                rest.url(),
                "--cln-rune".into(),
                "test-rune".into(),
                "--cln-rest-cert".into(),
                cert.display().to_string(),
            ];
            (None, Some(rest), args)
        } else {
            let path = tmp.path().join("lightning-rpc");
            let socket = fake.serve_socket(&path).await.unwrap();
            let args: Vec<String> = vec![
                "--backend".into(),
                "cln".into(),
                "--cln-rpc-path".into(),
                path.display().to_string(),
            ];
            (Some(socket), None, args)
        };
        eprintln!(
            "--- core lightning via {}",
            if via_rest { "CLNRest" } else { "socket" }
        );
        let p = serve(&dir, &args).await;
        lnpay_flow(&p, &dn).await;
        drop(p);
        audit_clean(&dir);
        dn.stop().await.unwrap();
    }
}

#[test]
fn wrong_backend_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (args, msg) in [
        (vec!["--backend", "lnd"], "lnd_rest_url"),
        (
            vec!["--backend", "lnd", "--lnd-rest-url", "https://127.0.0.1:1"],
            "lnd_macaroon",
        ),
        (vec!["--backend", "cln"], "cln_rpc_path"),
        (
            vec!["--backend", "cln", "--cln-rest-url", "https://127.0.0.1:1"],
            "cln_rune",
        ),
        (vec!["--backend", "nope"], "unknown backend"),
    ] {
        let out = satchel_cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}
