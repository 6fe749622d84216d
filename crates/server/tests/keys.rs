//! Suspended keys: `satchel key suspend` on the server's database, and LNPay's messages for a
//! suspended API key and a suspended wallet key in the URL. The entropy of new keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Command;

use common::on_each_db;
use reqwest::StatusCode;
use satchel_domain::KeyRole;

fn satchel(db_url: &str, args: &[&str]) -> bool {
    Command::new(env!("CARGO_BIN_EXE_satchel"))
        .args(args)
        .args(["--database-url", db_url])
        .env("RUST_LOG", "warn")
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspended_keys_get_lnpays_messages() {
    on_each_db(|s| async move {
        let w = s.create_wallet("keys").await;
        let url = s.db.url.clone();
        // Suspend keys this server has never seen (so nothing is cached yet).
        assert!(satchel(&url, &["key", "suspend", &s.pak]));
        assert!(satchel(&url, &["key", "suspend", &w.wakr]));
        assert!(!satchel(&url, &["key", "suspend", "sak_doesnotexist"]));

        let r = s.get(&s.pak, &format!("/wallet/{}", w.waka)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["message"], "Something went wrong, please reach out.");
        let r = s.get(&s.sak, &format!("/wallet/{}", w.wakr)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["message"], "Key has been suspended");
        // Other keys are unaffected.
        let r = s.get(&s.sak, &format!("/wallet/{}", w.waka)).await;
        assert_eq!(r.status, StatusCode::OK);

        // Reinstating through the running server's service takes effect at once.
        assert!(
            s.running()
                .services
                .auth
                .set_suspended(&s.pak, false)
                .await
                .unwrap()
        );
        let r = s.get(&s.pak, &format!("/wallet/{}", w.waka)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(satchel(&url, &["key", "reinstate", &w.wakr]));
        s
    })
    .await;
}

/// Every key the server hands out (the account's `sak_`/`pak_`, each wallet's seven keys,
/// `wakewa_` and `wakewv_` included) carries at least 128 bits: base-62 characters after the
/// prefix, 5.95 bits each. All are distinct, and the long external keys work in the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_keys_carry_at_least_128_bits() {
    on_each_db(|s| async move {
        let mut all = vec![s.sak.clone(), s.pak.clone()];
        let mut wallets = Vec::new();
        for label in ["entropy 1", "entropy 2"] {
            let w = s.create_wallet(label).await;
            all.extend([
                w.waka.clone(),
                w.waki.clone(),
                w.wakr.clone(),
                w.waklw.clone(),
                w.waklp.clone(),
                w.wakewa.clone(),
                w.wakewv.clone(),
            ]);
            wallets.push(w);
        }
        for k in &all {
            let (prefix, random) = k.split_once('_').unwrap();
            assert!(KeyRole::from_code(prefix).is_some(), "{k}");
            assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{k}");
            let bits = random.len() as f64 * 62f64.log2();
            assert!(bits >= 128.0, "{k}: {bits:.1} bits");
        }
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        for w in &wallets {
            for k in [&w.wakewa, &w.wakewv] {
                let r = s.get(&s.sak, &format!("/wallet/{k}")).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                assert_eq!(r.json["id"], w.id.as_str());
            }
        }
        s
    })
    .await;
}
