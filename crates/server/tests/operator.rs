//! The operator's tools for stuck payments: `satchel payments list | resolve | actions`, run as
//! the real binary against the database a server used.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, test_service_config};
use reqwest::StatusCode;
use satchel_domain::Network;
use satchel_scripted::{Script, ScriptedBackend};
use satchel_testkit::db::TestDb;
use serde_json::json;

fn satchel(db_url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_satchel"))
        .args(args)
        .arg("--database-url")
        .arg(db_url)
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
async fn stuck_payments_are_listed_and_resolved_with_an_audit_trail() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let mut cfg = test_service_config();
        cfg.payment_wait = Duration::from_millis(300);
        let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [5u8; 32]));
        let s = TestServer::start_on(db, cfg.clone(), scripted.clone()).await;
        let sak = s.sak.clone();
        let w = s.create_wallet("stuck").await;
        s.fund(&w, 1000).await;

        // Two payments the node never resolves.
        let mut stuck = Vec::new();
        for sats in [100u64, 200] {
            let (inv, preimage) = scripted.external_invoice(
                Some(satchel_domain::Msat::from_sats(sats).unwrap()),
                "stuck",
                3600,
            );
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
        assert_eq!(s.balance(&w).await, 700);
        let db = s.stop().await;
        let url = db.url.clone();

        let (ok, out) = satchel(&url, &["payments", "list"]);
        assert!(ok, "{out}");
        assert!(out.contains("2 unresolved payment(s)"), "{out}");
        assert!(
            out.contains(&stuck[0].0) && out.contains(&stuck[1].0),
            "{out}"
        );

        // Refuse without a reason, or with a preimage that is not the proof.
        let (ok, _) = satchel(
            &url,
            &[
                "payments",
                "resolve",
                &stuck[0].0,
                "--failed",
                "--reason",
                " ",
            ],
        );
        assert!(!ok);
        let wrong = "11".repeat(32);
        let (ok, out) = satchel(
            &url,
            &[
                "payments",
                "resolve",
                &stuck[1].0,
                "--succeeded",
                "--preimage",
                &wrong,
                "--reason",
                "x",
            ],
        );
        assert!(!ok && out.contains("preimage does not match"), "{out}");

        // Failed: refunded. Succeeded with the real preimage: booked with its fee.
        let (ok, out) = satchel(
            &url,
            &[
                "payments",
                "resolve",
                &stuck[0].0,
                "--failed",
                "--reason",
                "node has no record",
                "--operator",
                "alice",
            ],
        );
        assert!(ok && out.contains("is now failed"), "{out}");
        let preimage = stuck[1].1.to_hex();
        let (ok, out) = satchel(
            &url,
            &[
                "payments",
                "resolve",
                &stuck[1].0,
                "--succeeded",
                "--preimage",
                &preimage,
                "--fee-msat",
                "1000",
                "--reason",
                "paid per node logs",
                "--operator",
                "bob",
            ],
        );
        assert!(ok && out.contains("is now succeeded"), "{out}");
        // Final payments cannot be resolved again.
        let (ok, out) = satchel(
            &url,
            &[
                "payments",
                "resolve",
                &stuck[0].0,
                "--failed",
                "--reason",
                "again",
            ],
        );
        assert!(!ok && out.contains("already failed"), "{out}");

        let (ok, out) = satchel(&url, &["payments", "actions"]);
        assert!(ok, "{out}");
        assert!(
            out.contains("alice")
                && out.contains("resolve_failed")
                && out.contains("node has no record"),
            "{out}"
        );
        assert!(
            out.contains("bob")
                && out.contains("resolve_succeeded")
                && out.contains("\"fee_msat\":1000"),
            "{out}"
        );
        let (ok, out) = satchel(&url, &["audit"]);
        assert!(ok && out.contains("audit clean"), "{out}");

        // The server agrees after a restart. The payment's fee limit was 0, so the wallet is not
        // charged the 1000 msat the node paid: the operator's books absorb it.
        let s = TestServer::start_on(db, cfg, scripted).await;
        let r = s.get(&sak, &format!("/wallet/{}", w.id)).await;
        assert_eq!(r.json["balance_msat"], 1_000_000 - 200_000);
        let rep = s.running().store.audit().await.unwrap();
        assert_eq!(rep.unclaimed_msat, -1_000);
        assert_eq!(rep.in_flight_msat, 0);
        let r = s.get(&sak, &format!("/lntx/{}", stuck[0].0)).await;
        assert_eq!(r.json["settled"], -1);
        let r = s.get(&sak, &format!("/lntx/{}", stuck[1].0)).await;
        assert_eq!(r.json["settled"], 1);
        assert_eq!(r.json["payment_preimage"], preimage);
        s.assert_audit_clean().await;
        s.stop().await;
    }
}
