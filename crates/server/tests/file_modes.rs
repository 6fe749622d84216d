//! File modes of the real `satchel serve`: a fresh data dir is 0700 and everything in it 0600
//! (seeds, node state, the SQLite database with its `-wal` and `-shm`); files an older install
//! left readable by others are reported at start with the `chmod` that fixes them. On SQLite in
//! the data dir, SQLite elsewhere and Postgres; once over the LDK devnet (its seed, kv store and
//! records log).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use child::Proc;
use reqwest::StatusCode;
use satchel_testkit::db::TestDb;
use serde_json::json;

/// The start-up warning's wording (see `satchel::file_modes`).
const WARNING: &str = "other local users can read it";

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every directory from `root` down (itself included) and every file in them, with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        out.push((d.clone(), true, mode(&d)));
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push((e.path(), false, mode(&e.path())));
            }
        }
    }
    out
}

/// Asserts that nothing under `root` is open to group or others, and returns the file names.
fn assert_private(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut wide = Vec::new();
    for (p, is_dir, m) in walk(root) {
        let want = if is_dir { 0o700 } else { 0o600 };
        if m != want {
            wide.push(format!("{} {m:o}", p.display()));
        }
        if !is_dir {
            files.push(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
    assert!(wide.is_empty(), "not private: {wide:#?}");
    files
}

fn serve(label: &str, data_dir: &Path, database_url: Option<&str>, backend: &str) -> Proc {
    let (data_dir, url, backend) = (
        data_dir.to_owned(),
        database_url.map(str::to_owned),
        backend.to_owned(),
    );
    Proc::serve(label, move |cmd| {
        cmd.arg("--backend")
            .arg(&backend)
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(u) = &url {
            cmd.arg("--database-url").arg(u);
        }
    })
}

/// Creates a wallet and moves money, so the database and the node state are written.
async fn write_something(p: &mut Proc, sak: &str) {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/wallet", p.base()))
        .header("X-Api-Key", sak)
        .json(&json!({"user_label": "modes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let w: serde_json::Value = r.json().await.unwrap();
    let waka = w["access_keys"]["Wallet Admin"][0].as_str().unwrap();
    let r = http
        .post(format!("{}/v1/wallet/{waka}/invoice", p.base()))
        .header("X-Api-Key", sak)
        .json(&json!({"num_satoshis": 10, "memo": "modes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_dir_files_are_private_and_wider_ones_are_reported() {
    let elsewhere = TestDb::sqlite().await;
    let mut dbs: Vec<(&str, Option<TestDb>)> = vec![
        ("sqlite-in-data-dir", None),
        ("sqlite-elsewhere", Some(elsewhere)),
    ];
    if let Some(pg) = TestDb::postgres().await {
        dbs.push(("postgres", Some(pg)));
    }
    for (kind, db) in dbs {
        let tmp = tempfile::tempdir().unwrap();
        // Two levels that do not exist yet: both are created 0700.
        let data = tmp.path().join("var/satchel");
        let url = db.as_ref().map(|d| d.url.clone());
        let db_file = match &url {
            None => Some(data.join("satchel.db")),
            Some(u) if u.starts_with("sqlite:") => {
                Some(PathBuf::from(u.trim_start_matches("sqlite://")))
            }
            Some(_) => None,
        };

        let mut p = serve(&format!("{kind} first"), &data, url.as_deref(), "scripted");
        p.wait_ready().await;
        let sak = p.sak().await;
        write_something(&mut p, &sak).await;
        assert_eq!(mode(&tmp.path().join("var")), 0o700, "{kind}");
        let files = assert_private(&data);
        for f in ["scripted-node.seed", "scripted-node.json"] {
            assert!(files.iter().any(|x| x == f), "{kind}: no {f} in {files:?}");
        }
        if let Some(db) = &db_file {
            // Checked while the server runs: the -wal and -shm exist only while it is open.
            for suffix in ["", "-wal", "-shm"] {
                let f = PathBuf::from(format!("{}{suffix}", db.display()));
                assert_eq!(mode(&f), 0o600, "{kind}: {}", f.display());
            }
        }
        assert_eq!(p.line(false, WARNING), None, "{kind}: {}", p.tail());
        p.stop().await;

        // What an older version left: a world-readable seed, database and data dir.
        let seed = data.join("scripted-node.seed");
        chmod(&seed, 0o644);
        chmod(&data, 0o755);
        if let Some(db) = &db_file {
            chmod(db, 0o644);
        }
        let mut p = serve(&format!("{kind} again"), &data, url.as_deref(), "scripted");
        p.wait_ready().await;
        let line = p
            .wait_line(
                false,
                &format!("fix with: chmod 600 {}", seed.display()),
                Duration::from_secs(10),
            )
            .await;
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("has mode 0644"), "{line}");
        assert!(
            p.line(false, &format!("fix with: chmod 700 {}", data.display()))
                .is_some(),
            "{kind}: {}",
            p.tail()
        );
        if let Some(db) = &db_file {
            assert!(
                p.line(false, &format!("fix with: chmod 600 {}", db.display()))
                    .is_some(),
                "{kind}: {}",
                p.tail()
            );
        }
        // Reported, not changed; the server still serves.
        assert_eq!(mode(&seed), 0o644);
        assert_eq!(mode(&data), 0o755);
        write_something(&mut p, &sak).await;
        p.stop().await;
    }
}

/// The embedded LDK node's files (seed, channel state in `kv/`, `records.log`) are created by
/// LDK's persister and the records journal; the binary's umask makes them private too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devnet_node_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut p = serve("devnet", &data, None, "devnet");
    p.wait_ready().await;
    let sak = p.sak().await;
    write_something(&mut p, &sak).await;
    let files = assert_private(&data);
    for f in [
        "devnet/satchel/keys_seed",
        "devnet/satchel/records.log",
        "devnet/carol/keys_seed",
    ] {
        assert!(files.iter().any(|x| x == f), "no {f} in {files:?}");
    }
    assert!(
        files.iter().any(|x| x.starts_with("devnet/satchel/kv/")),
        "no kv files in {files:?}"
    );
    assert_eq!(p.line(false, WARNING), None, "{}", p.tail());
    p.stop().await;
}
