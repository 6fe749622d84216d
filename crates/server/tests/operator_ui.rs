#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The operator console (`/operator`) in headless Chromium over WebDriver, against the real
//! server on the scripted node (whose channel list the test sets), on SQLite and Postgres: a
//! wrong secret is refused; log in with the cookie file's secret; the node and its channels
//! are shown; a stuck payment is resolved through the form (the wallet is refunded, the audit
//! trail and the audit agree); a form without its CSRF token is refused and changes nothing;
//! the session cookie is HttpOnly and SameSite=Strict.
//!
//! Needs Debian's `chromium` and `chromium-driver` (fails without them when `CI=true`, skips
//! loudly otherwise). Screenshots go to `target/ui-screenshots/`.
mod common;
mod webdriver;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, test_dispatcher_config, test_http_options, test_service_config};
use fantoccini::Client;
use reqwest::StatusCode;
use satchel::app::{OPERATOR_COOKIE_FILE, OperatorSettings};
use satchel_domain::{Msat, Network};
use satchel_lightning::{ChannelInfo, ChannelState};
use satchel_scripted::{Script, ScriptedBackend};
use satchel_testkit::db::TestDb;
use serde_json::json;
use webdriver::{browser, el, screenshots_dir, start_driver, tools_present};

async fn text(c: &Client, css: &str) -> String {
    el(c, css).await.text().await.unwrap()
}

async fn scenario(kind: &str, db: TestDb, c: &Client) {
    let shots = screenshots_dir();
    let dir = tempfile::tempdir().unwrap();
    let mut http_opts = test_http_options();
    http_opts.operator = Some(OperatorSettings {
        cookie_path: dir.path().join(OPERATOR_COOKIE_FILE),
        allow_remote: false,
    });
    let mut cfg = test_service_config();
    cfg.payment_wait = Duration::from_millis(300);
    let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [6u8; 32]));
    let s = TestServer::start_full(
        db,
        cfg,
        scripted.clone(),
        Some(test_dispatcher_config()),
        http_opts,
    )
    .await;
    let secret = std::fs::read_to_string(dir.path().join(OPERATOR_COOKIE_FILE))
        .unwrap()
        .trim()
        .to_owned();
    let peer = scripted.external_pubkey();
    scripted.set_channels(vec![ChannelInfo {
        channel_id: "cd".repeat(32),
        short_channel_id: Some(7),
        peer,
        capacity_sats: 2_000_000,
        local_balance_msat: 1_500_000_000,
        remote_balance_msat: 490_000_000,
        state: ChannelState::Active,
        confirmations: Some(3),
    }]);

    // A stuck payment.
    let w = s.create_wallet("console").await;
    s.fund(&w, 1000).await;
    let (inv, _) = scripted.external_invoice(Some(Msat::from_sats(300).unwrap()), "stuck", 3600);
    scripted.script(inv.payment_hash(), Script::Unknown);
    let r = s
        .post(
            &s.sak,
            &format!("/wallet/{}/withdraw", w.waka),
            json!({"payment_request": inv.as_str(), "fee_limit_msat": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let lntx = r.json["lnTx"]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.balance(&w).await, 700);

    // Headers of the page: the UI's CSP; the session cookie HttpOnly + SameSite=Strict.
    let raw = reqwest::Client::new()
        .get(format!("{}/operator", s.base))
        .send()
        .await
        .unwrap();
    let csp = raw.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("form-action 'self'"));

    // A wrong secret is refused.
    c.goto(&format!("{}/operator", s.base)).await.unwrap();
    el(c, "#secret")
        .await
        .send_keys(&"0".repeat(64))
        .await
        .unwrap();
    el(c, "#operator-login-button").await.click().await.unwrap();
    el(c, "#login-error").await;

    // Log in.
    el(c, "#secret").await.send_keys(&secret).await.unwrap();
    el(c, "#operator-login-button").await.click().await.unwrap();
    el(c, "#logout").await;
    assert!(!c.current_url().await.unwrap().as_str().contains(&secret));
    let cookie = c
        .get_named_cookie("satchel_operator_session")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    // Node and channels.
    let node = text(c, "#node-pubkey").await;
    assert_eq!(node, s.running().services.ctx.pubkey().to_string());
    let chans = text(c, "#channels").await;
    assert!(chans.contains(&peer.to_string()), "{chans}");
    assert!(
        chans.contains("2000000") && chans.contains("active"),
        "{chans}"
    );
    assert!(text(c, "#payments").await.contains(&lntx));
    assert!(text(c, "#audit-result").await.contains("audit clean"));
    assert!(text(c, "#accounts").await.contains("test"));
    std::fs::write(
        shots.join(format!("{kind}-operator-console.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // A resolve form without its CSRF token is refused and changes nothing.
    let form = format!("#payment-{lntx} form.resolve");
    c.execute(
        &format!("document.querySelector('{form} input[name=csrf]').remove();"),
        vec![],
    )
    .await
    .unwrap();
    el(c, &format!("{form} input[name=reason]"))
        .await
        .send_keys("csrf check")
        .await
        .unwrap();
    el(c, &format!("{form} button"))
        .await
        .click()
        .await
        .unwrap();
    el(c, "#csrf-error").await;
    assert_eq!(s.balance(&w).await, 700);
    assert!(
        s.running()
            .store
            .operator_actions(10)
            .await
            .unwrap()
            .is_empty()
    );

    // Resolve it as failed through the form: refunded, on the trail, audit clean.
    c.goto(&format!("{}/operator", s.base)).await.unwrap();
    el(c, &format!("{form} input[name=reason]"))
        .await
        .send_keys("node has no record of it")
        .await
        .unwrap();
    let op_field = el(c, &format!("{form} input[name=operator]")).await;
    op_field.clear().await.unwrap();
    op_field.send_keys("console-op").await.unwrap();
    el(c, &format!("{form} button"))
        .await
        .click()
        .await
        .unwrap();
    let done = text(c, "#resolved").await;
    assert!(done.contains(&lntx) && done.contains("failed"), "{done}");
    el(c, "#no-payments").await;
    let trail = text(c, "#actions").await;
    assert!(
        trail.contains("console-op") && trail.contains("resolve_failed"),
        "{trail}"
    );
    assert!(text(c, "#audit-result").await.contains("audit clean"));
    assert_eq!(s.balance(&w).await, 1000);
    std::fs::write(
        shots.join(format!("{kind}-operator-resolved.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();

    // Create an account from the console: its keys, once.
    el(c, "#account-label")
        .await
        .send_keys("shop")
        .await
        .unwrap();
    el(c, "#create-account-button").await.click().await.unwrap();
    let created = text(c, "#created-account").await;
    assert!(
        created.contains("sak_") && created.contains("pak_"),
        "{created}"
    );

    // Log out: the console asks for the secret again.
    el(c, "#logout").await.click().await.unwrap();
    el(c, "#secret").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_console_in_headless_chromium() {
    if !tools_present("the operator console test") {
        return;
    }
    let driver = start_driver().await;
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let c = browser(&driver, 2400).await;
        scenario(kind, db, &c).await;
        c.close().await.unwrap();
    }
}
