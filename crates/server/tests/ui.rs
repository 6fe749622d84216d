#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The web UI in headless Chromium, driven over WebDriver (`chromedriver`), against the real
//! server on the LDK devnet (alice ──▶ us ──▶ hub ──▶ carol), on SQLite and on Postgres:
//! log in on the account page with the secret key and create a wallet there; open its wallet
//! page; make an invoice, read its QR code back from a screenshot and pay it from alice; see
//! the balance change without a reload; pay carol's invoice from the page; check that a read
//! key's page has no send form; and that forms without their CSRF token are refused.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test fails when `CI=true`
//! and is skipped (loudly) otherwise. Screenshots go to `target/ui-screenshots/`.

mod webdriver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use satchel::app::{Running, StartOptions, start};
use satchel_domain::{Bolt11, Msat};
use satchel_ldk::Devnet;
use satchel_lightning::{DevnetControl, InvoiceState, Invoices, LightningBackend, PayOutcome};
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use webdriver::{browser, el, screenshots_dir, start_driver, tools_present};

struct Server {
    devnet: Arc<Devnet>,
    running: Option<Running>,
    base: String,
    sak: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
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
                ..ServiceConfig::default()
            },
            webhooks: None,
        })
        .await
        .expect("server starts");
        let acct = satchel_service::wallets::create_account(&running.store, "ui")
            .await
            .expect("account");
        Server {
            devnet,
            base: running.url(),
            running: Some(running),
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
}

/// Waits (up to 30 s) until the element's text satisfies `ok`; returns it.
async fn wait_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ok(&t) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what} ({css}); last text {last:?}");
}

/// Decodes the one QR code in a PNG screenshot.
fn read_qr(png_bytes: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let stride = info.line_size;
    let grey = |x: usize, y: usize| -> u8 {
        let p = &buf[y * stride + x * channels..];
        if channels >= 3 {
            ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8
        } else {
            p[0]
        }
    };
    // The browser scales the SVG to a fractional module size; enlarged, the finder patterns
    // are easier for the detector.
    for scale in [1, 2, 3] {
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * scale, h * scale, |x, y| {
            grey(x / scale, y / scale)
        });
        let grids = img.detect_grids();
        if let Some(g) = grids.first() {
            return g.decode().expect("the QR code decodes").1;
        }
    }
    panic!("no QR code found in the screenshot");
}

async fn scenario(s: &Server, c: &Client, kind: &str) {
    let shots = screenshots_dir();
    let http = reqwest::Client::new();

    // ------------------------------------------------ account page: login (form POST) and a wallet
    c.goto(&format!("{}/account", s.base)).await.unwrap();
    el(c, "#sak").await.send_keys(&s.sak).await.unwrap();
    el(c, "#login-button").await.click().await.unwrap();
    el(c, "#create-wallet-button").await;
    assert!(!c.current_url().await.unwrap().as_str().contains("sak_"));
    el(c, "#wallet-label-input")
        .await
        .send_keys("ui wallet")
        .await
        .unwrap();
    el(c, "#create-wallet-button").await.click().await.unwrap();
    el(c, "#created-keys").await;
    let keys: Vec<String> = {
        let mut v = Vec::new();
        for e in c
            .find_all(Locator::Css("#created-keys code.key"))
            .await
            .unwrap()
        {
            v.push(e.text().await.unwrap());
        }
        v
    };
    let waka = keys
        .iter()
        .find(|k| k.starts_with("waka_"))
        .unwrap()
        .clone();
    let wakr = keys
        .iter()
        .find(|k| k.starts_with("wakr_"))
        .unwrap()
        .clone();
    std::fs::write(
        shots.join(format!("{kind}-account.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // A form whose CSRF token was removed is refused, and creates nothing.
    c.execute(
        "document.querySelector('#create-wallet input[name=csrf]').remove();",
        vec![],
    )
    .await
    .unwrap();
    el(c, "#create-wallet-button").await.click().await.unwrap();
    el(c, "#csrf-error").await;
    let r = http
        .get(format!("{}/v1/wallets", s.base))
        .header("X-Api-Key", &s.sak)
        .send()
        .await
        .unwrap();
    let wallets: serde_json::Value = r.json().await.unwrap();
    assert_eq!(wallets.as_array().unwrap().len(), 1, "{wallets}");
    // The login form without its double-submit token: refused as well.
    let r = http
        .post(format!("{}/account/login", s.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("sak={}", s.sak))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // ------------------------------------------------ the wallet page
    c.goto(&format!("{}/wallet/{waka}", s.base)).await.unwrap();
    wait_text(c, "#balance", "balance 0", |t| t == "0").await;
    let r = http
        .get(format!("{}/wallet/{waka}", s.base))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");

    // Receive: an invoice as a QR code, read back from a screenshot, paid by alice.
    el(c, "#invoice-amount")
        .await
        .send_keys("50000")
        .await
        .unwrap();
    el(c, "#invoice-memo")
        .await
        .send_keys("from alice")
        .await
        .unwrap();
    el(c, "#invoice-button").await.click().await.unwrap();
    let shown = wait_text(c, "#invoice-text", "the invoice", |t| t.starts_with("ln")).await;
    let qr = el(c, "#invoice-qr").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .execute("return document.getElementById('invoice-qr').complete && document.getElementById('invoice-qr').naturalWidth > 0;", vec![])
        .await
        .unwrap()
        != serde_json::Value::Bool(true)
    {
        assert!(Instant::now() < deadline, "QR image loads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let png = qr.screenshot().await.unwrap();
    std::fs::write(shots.join(format!("{kind}-invoice-qr.png")), &png).unwrap();
    let decoded = read_qr(&png).to_ascii_lowercase();
    assert_eq!(decoded, shown, "the QR code carries the invoice shown");
    let inv = Bolt11::parse(&decoded).unwrap();
    assert_eq!(inv.amount(), Some(Msat::from_sats(50_000).unwrap()));
    let out = s.devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");

    // The page sees the money arrive without a reload.
    let marker: serde_json::Value = c
        .execute("window.__noReload = 1; return 1;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, 1);
    wait_text(c, "#balance", "balance 50000", |t| t == "50000").await;
    // It came over the live stream: polling never started (it would have replaced this text).
    let live = el(c, "#live").await.text().await.unwrap();
    assert_eq!(live, "(live)", "the page fell back to polling");
    let still: serde_json::Value = c
        .execute("return window.__noReload === 1;", vec![])
        .await
        .unwrap();
    assert_eq!(still, true, "the page was not reloaded");
    wait_text(c, "#history tbody", "the deposit in the history", |t| {
        t.contains("50000")
    })
    .await;
    std::fs::write(
        shots.join(format!("{kind}-wallet.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // Send: pay carol's invoice from the page (12,345 sats; the hub's 13,345 msat fee → 14 sats).
    let carol_inv = s
        .devnet
        .outside_invoice(
            "carol",
            Some(Msat::from_sats(12_345).unwrap()),
            "ui to carol",
        )
        .await
        .unwrap();
    el(c, "#pay-input")
        .await
        .send_keys(carol_inv.as_str())
        .await
        .unwrap();
    el(c, "#pay-button").await.click().await.unwrap();
    wait_text(c, "#pay-status", "paid", |t| t == "Paid.").await;
    wait_text(c, "#balance", "balance after paying carol", |t| {
        t == "37641"
    })
    .await;
    let carol = s.devnet.peer("carol").unwrap();
    assert!(matches!(
        carol
            .lookup_invoice(carol_inv.payment_hash())
            .await
            .unwrap(),
        Some(InvoiceState::Settled { .. })
    ));
    std::fs::write(
        shots.join(format!("{kind}-wallet-paid.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // ------------------------------------------------ a read key: sees, cannot send or receive
    c.goto(&format!("{}/wallet/{wakr}", s.base)).await.unwrap();
    wait_text(c, "#balance", "read key's balance", |t| t == "37641").await;
    assert!(
        c.find(Locator::Css("#pay-button")).await.is_err(),
        "no send button"
    );
    assert!(
        c.find(Locator::Css("#pay-form")).await.is_err(),
        "no send form"
    );
    assert!(
        c.find(Locator::Css("#invoice-form")).await.is_err(),
        "no receive form"
    );
    std::fs::write(
        shots.join(format!("{kind}-wallet-read-key.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    // And the server refuses the read key's payment anyway.
    let r = http
        .post(format!("{}/ui/wallet/pay", s.base))
        .header("X-Api-Key", &wakr)
        .json(&serde_json::json!({ "payment_request": carol_inv.as_str() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "{}", r.text().await.unwrap());

    // An unknown key's page: 404.
    let r = http
        .get(format!("{}/wallet/waka_nope", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_ui_in_headless_chromium() {
    if !tools_present("the web UI test") {
        return;
    }
    let driver = start_driver().await;
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let t = Instant::now();
        let s = Server::start(&db).await;
        let c = browser(&driver, 1800).await;
        scenario(&s, &c, kind).await;
        c.close().await.unwrap();
        s.stop().await;
        eprintln!("--- {kind} done in {:?}", t.elapsed());
    }
}
