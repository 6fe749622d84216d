//! Nothing is acknowledged before it is durable: kill a real `satchel serve` with SIGKILL in the
//! middle of concurrent money movements, restart it, and every operation that got its 201 is
//! still there (on SQLite that is group commit's promise; on Postgres, its own commit's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use satchel_testkit::db::TestDb;
use serde_json::{Value, json};

use child::{Proc, satchel_cmd};

/// `satchel serve --backend scripted` on `data_dir` and `db_url`, answering.
async fn serve(data_dir: &Path, db_url: &str) -> Proc {
    let (data_dir, db_url) = (data_dir.to_owned(), db_url.to_owned());
    let mut p = Proc::serve("satchel", move |cmd| {
        cmd.args(["--backend", "scripted", "--data-dir"])
            .arg(&data_dir)
            .args(["--database-url", &db_url]);
    });
    p.wait_ready().await;
    p
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .post(format!("{base}/v1{path}"))
        .header("X-Api-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_no_acknowledged_operation() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let dir = tempfile::tempdir().unwrap();
        let mut p = serve(dir.path(), &db.url).await;
        let sak = p.sak().await;
        let base = p.base();
        let http = reqwest::Client::new();
        let (_, a) = post(&http, &base, &sak, "/wallet", json!({"user_label": "A"})).await;
        let (_, b) = post(&http, &base, &sak, "/wallet", json!({"user_label": "B"})).await;
        let a_key = a["access_keys"]["Wallet Admin"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let b_id = b["id"].as_str().unwrap().to_owned();
        let (_, inv) = post(
            &http,
            &base,
            &sak,
            &format!("/wallet/{a_key}/invoice"),
            json!({"num_satoshis": 100_000}),
        )
        .await;
        let r = http
            .post(format!("{}/devnet/pay", base))
            .json(&json!({"node": "alice", "payment_request": inv["payment_request"]}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        for _ in 0..100 {
            let w: Value = http
                .get(format!("{}/v1/wallet/{a_key}", base))
                .header("X-Api-Key", &sak)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if w["balance"] == 100_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // 32 connections transferring 1 sat each, as fast as they can; remember every 201.
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut loops = Vec::new();
        for _ in 0..32 {
            let (acked, stop) = (acked.clone(), stop.clone());
            let (base, sak, a_key, b_id) = (base.clone(), sak.clone(), a_key.clone(), b_id.clone());
            loops.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = http
                        .post(format!("{base}/v1/wallet/{a_key}/transfer"))
                        .header("X-Api-Key", &sak)
                        .json(&json!({"dest_wallet_id": b_id, "num_satoshis": 1}))
                        .send()
                        .await;
                    let Ok(r) = r else { break };
                    if r.status().as_u16() != 201 {
                        break;
                    }
                    let Ok(v) = r.json::<Value>().await else {
                        break;
                    };
                    acked
                        .lock()
                        .unwrap()
                        .push(v["wtx_transfer_out"]["id"].as_str().unwrap().to_owned());
                }
            }));
        }
        // Kill once a good number are acknowledged (operations are still in flight then).
        for _ in 0..1200 {
            if acked.lock().unwrap().len() >= 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        p.kill(); // SIGKILL, mid-flight
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in loops {
            let _ = l.await;
        }
        let acked: Vec<String> = acked.lock().unwrap().clone();
        assert!(
            acked.len() > 10,
            "too few operations before the kill: {}",
            acked.len()
        );

        // Restart on the same database: every acknowledged transfer is in the history.
        let p2 = serve(dir.path(), &db.url).await;
        let mut seen = std::collections::HashSet::new();
        for page in 1.. {
            let v: Value = http
                .get(format!(
                    "{}/v1/wallet/{a_key}/transactions?per-page=500&page={page}",
                    p2.base()
                ))
                .header("X-Api-Key", &sak)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let rows = v.as_array().unwrap().clone();
            for t in &rows {
                seen.insert(t["id"].as_str().unwrap().to_owned());
            }
            if rows.len() < 500 {
                break;
            }
        }
        let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged transfers lost: {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        let w: Value = http
            .get(format!("{}/v1/wallet/{a_key}", p2.base()))
            .header("X-Api-Key", &sak)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let transfers_done = i64::try_from(seen.len()).unwrap() - 1; // minus the deposit
        assert_eq!(
            w["balance"].as_i64().unwrap(),
            100_000 - transfers_done,
            "balance matches the surviving history"
        );
        eprintln!(
            "{kind}: {} acknowledged before SIGKILL, all present; {} committed in total",
            acked.len(),
            transfers_done
        );
        drop(p2);
        let out = satchel_cmd()
            .args(["audit", "--database-url", &db.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
