//! Suspended keys: `satchel key suspend` on the server's database, and LNPay's messages for a
//! suspended API key and a suspended wallet key in the URL.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Command;

use common::on_each_db;
use reqwest::StatusCode;

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
