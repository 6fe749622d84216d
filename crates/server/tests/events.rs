//! Live events over Server-Sent Events (`GET /v1/wallet/:key/events`), on SQLite and Postgres:
//! receiving, resuming with `Last-Event-ID` across a restart, a reader that never reads while
//! payments go on, tenancy, the stream caps, resume from a pruned id, shutdown, and a reader on
//! one server seeing events written by another server on the same database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, WalletKeys, test_service_config};
use reqwest::StatusCode;
use satchel_domain::{Msat, Network, WalletId, WtxId};
use satchel_scripted::ScriptedBackend;
use satchel_service::ServiceConfig;
use satchel_store::TransferCmd;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
struct SseEvent {
    id: i64,
    event: String,
    data: Value,
}

/// A minimal SSE client over reqwest's chunked body.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(s: &TestServer, key: &str, wallet: &str, last_id: Option<i64>) -> Sse {
        let mut rb = s
            .http
            .get(s.v1(&format!("/wallet/{wallet}/events")))
            .header("X-Api-Key", key);
        if let Some(id) = last_id {
            rb = rb.header("Last-Event-ID", id.to_string());
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), or `None` if none comes within `wait` or the stream
    /// ended.
    async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = take_event(&mut self.buf) {
                return Some(e);
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Exactly `n` events, each within `wait` of the previous one.
    async fn take(&mut self, n: usize, wait: Duration) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(wait).await {
                Some(e) => out.push(e),
                None => panic!("got {} of {n} events: {out:?}", out.len()),
            }
        }
        out
    }
}

/// Parses one complete event off the front of `buf` (skipping comment-only blocks).
fn take_event(buf: &mut String) -> Option<SseEvent> {
    loop {
        let end = buf.find("\n\n")?;
        let block: String = buf.drain(..end + 2).collect();
        let (mut id, mut event, mut data) = (None, None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        if let (Some(id), Some(event)) = (id, event) {
            return Some(SseEvent {
                id,
                event,
                data: serde_json::from_str(&data).unwrap(),
            });
        }
    }
}

async fn transfer(s: &TestServer, from: &WalletKeys, to: &WalletKeys, sats: u64) {
    let r = s
        .post(
            &s.sak,
            &format!("/wallet/{}/transfer", from.waka),
            json!({"dest_wallet_id": to.id, "num_satoshis": sats, "memo": "sse"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

fn assert_transfer_in(e: &SseEvent, wallet: &WalletKeys, sats: i64) {
    assert_eq!(e.event, "wallet_transfer_in", "{e:?}");
    // The webhook body: {id, created_at, event: {type, name, display_name}, data: {wtx}}.
    assert!(e.data["id"].as_str().unwrap().starts_with("evt_"), "{e:?}");
    assert_eq!(e.data["event"]["name"], "wallet_transfer_in");
    assert_eq!(e.data["data"]["wtx"]["wal"]["id"], wallet.id.as_str());
    assert_eq!(e.data["data"]["wtx"]["num_satoshis"], sats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receive_then_resume_after_restart() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [7u8; 32]));
        let s = TestServer::start_on(db, test_service_config(), scripted.clone()).await;
        let sak = s.sak.clone();
        let (a, b) = (s.create_wallet("a").await, s.create_wallet("b").await);
        s.fund(&b, 100).await;

        // A read-only key of the wallet, with the account's public key.
        let mut sse = Sse::open(&s, &s.pak, &a.wakr, None).await;
        for sats in [1, 2, 3] {
            transfer(&s, &b, &a, sats).await;
        }
        let got = sse.take(3, Duration::from_secs(10)).await;
        for (e, sats) in got.iter().zip([1, 2, 3]) {
            assert_transfer_in(e, &a, sats);
        }
        assert!(got.windows(2).all(|w| w[0].id < w[1].id), "{got:?}");
        // The balance right after each change, as in webhooks.
        assert_eq!(got[2].data["data"]["wtx"]["wal"]["balance"], 6);
        let first = got[0].id;
        let last = got[2].id;
        drop(sse);

        let db = s.stop().await;
        let s = TestServer::start_on(db, test_service_config(), scripted).await;
        let s = TestServer { sak, ..s };
        for sats in [4, 5] {
            transfer(&s, &b, &a, sats).await;
        }
        // Resume after the last event seen: exactly the two written since.
        let mut sse = Sse::open(&s, &s.sak, &a.id, Some(last)).await;
        let got = sse.take(2, Duration::from_secs(10)).await;
        assert_transfer_in(&got[0], &a, 4);
        assert_transfer_in(&got[1], &a, 5);
        assert!(got[0].id > last);
        assert!(sse.next(Duration::from_millis(500)).await.is_none());
        // Resume after the first: the four after it, in order.
        let mut sse = Sse::open(&s, &s.sak, &a.waka, Some(first)).await;
        let got = sse.take(4, Duration::from_secs(10)).await;
        let sats: Vec<i64> = got
            .iter()
            .map(|e| e.data["data"]["wtx"]["num_satoshis"].as_i64().unwrap())
            .collect();
        assert_eq!(sats, [2, 3, 4, 5]);
        // No Last-Event-ID: from now on only.
        let mut fresh = Sse::open(&s, &s.sak, &a.id, None).await;
        assert!(fresh.next(Duration::from_millis(300)).await.is_none());
        transfer(&s, &b, &a, 6).await;
        assert_transfer_in(&fresh.next(Duration::from_secs(10)).await.unwrap(), &a, 6);
        // A malformed Last-Event-ID is a 400 in LNPay's envelope.
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}/events", a.id)))
                    .header("X-Api-Key", &s.sak)
                    .header("Last-Event-ID", "evt_nope"),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.json["status"], 400);
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

/// Sends a raw HTTP/1.0 request for the stream on a socket with a tiny receive buffer, and does
/// not read it: the server cannot write, the reader's channel overflows.
async fn stalled_reader(s: &TestServer, wallet: &str) -> tokio::net::TcpStream {
    let addr = s.running().addr;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let mut conn = sock.connect(addr).await.unwrap();
    let req = format!(
        "GET /v1/wallet/{wallet}/events HTTP/1.0\r\nHost: {addr}\r\nX-Api-Key: {}\r\n\r\n",
        s.sak
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_never_reads_does_not_slow_payments() {
    const N: usize = 60;
    // Written straight through the store, enough to fill the socket buffers of a reader that
    // does not read (several MB on loopback), so its channel overflows.
    const BULK: usize = 3_000;
    let mut cfg = test_service_config();
    cfg.events.channel_capacity = 4;
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let s = TestServer::start_with(db, cfg.clone()).await;
        let (a, b) = (s.create_wallet("a").await, s.create_wallet("b").await);
        s.fund(&b, 10_000).await;
        // Baseline: the same payments with nobody watching.
        let t0 = Instant::now();
        for _ in 0..N {
            transfer(&s, &b, &a, 1).await;
        }
        let unwatched = t0.elapsed();

        let mut conn = stalled_reader(&s, &a.id).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        for _ in 0..N {
            transfer(&s, &b, &a, 2).await;
        }
        let watched = t0.elapsed();
        eprintln!(
            "{kind}: {N} transfers: {unwatched:?} unwatched, {watched:?} with a stalled reader"
        );
        assert!(
            watched < unwatched * 3 + Duration::from_secs(2),
            "payments slowed down: {watched:?} vs {unwatched:?}"
        );

        // Many more, straight through the store, from 8 tasks.
        let store = s.running().store.clone();
        let acct = store
            .wallet(&WalletId::parse(&b.id).unwrap())
            .await
            .unwrap()
            .unwrap()
            .account_id;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, acct, from, to) = (store.clone(), acct.clone(), b.id.clone(), a.id.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..BULK / 8 {
                    store
                        .transfer(&TransferCmd {
                            account_id: acct.clone(),
                            from: WalletId::parse(&from).unwrap(),
                            to: WalletId::parse(&to).unwrap(),
                            amount: Msat::from_sats(2).unwrap(),
                            memo: "bulk".into(),
                            pass_thru: "{}".into(),
                            wtx_in_id: WtxId::generate(),
                            wtx_out_id: WtxId::generate(),
                            now: satchel_domain::now_secs(),
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let total = N + BULK;

        // Now read: every event, in order, each once.
        let mut raw = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut events = Vec::new();
        let mut body = String::new();
        let mut in_body = false;
        while events.len() < total {
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
                .await
                .expect("all events in time")
                .unwrap();
            assert!(n > 0, "stream closed after {} events", events.len());
            raw.extend_from_slice(&chunk[..n]);
            if !in_body {
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some(i) = text.find("\r\n\r\n") {
                    body = text[i + 4..].to_owned();
                    raw.clear();
                    in_body = true;
                }
            } else if let Ok(t) = std::str::from_utf8(&raw) {
                body.push_str(t);
                raw.clear();
            }
            while let Some(e) = take_event(&mut body) {
                events.push(e);
            }
        }
        assert_eq!(events.len(), total);
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
        for e in &events {
            assert_transfer_in(e, &a, 2);
        }
        s.assert_audit_clean().await;
        s.stop().await;
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenancy_caps_reset_and_shutdown() {
    let mut cfg: ServiceConfig = test_service_config();
    cfg.events.max_streams_per_account = 2;
    // A closed stream is noticed at its next write: keep-alives come often here.
    cfg.events.keep_alive = Duration::from_millis(100);
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let s = TestServer::start_with(db, cfg.clone()).await;
        let (a, b) = (s.create_wallet("a").await, s.create_wallet("b").await);
        s.fund(&b, 100).await;

        // Another account watching its own wallet sees nothing of account A's payments.
        let other = satchel_service::wallets::create_account(&s.running().store, "other")
            .await
            .unwrap();
        let other_sak = other.secret_key.expose().to_owned();
        let r = s
            .post(&other_sak, "/wallet", json!({"user_label": "theirs"}))
            .await;
        let theirs = r.json["id"].as_str().unwrap().to_owned();
        let mut their_sse = Sse::open(&s, &other_sak, &theirs, None).await;
        // Its key cannot open account A's stream.
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}/events", a.id)))
                    .header("X-Api-Key", &other_sak),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

        let mut mine = Sse::open(&s, &s.sak, &a.id, None).await;
        transfer(&s, &b, &a, 7).await;
        assert_transfer_in(&mine.next(Duration::from_secs(10)).await.unwrap(), &a, 7);
        assert!(their_sse.next(Duration::from_millis(700)).await.is_none());

        // Per-account cap: two open (`mine`, and one more); a third is refused with 429.
        let second = Sse::open(&s, &s.sak, &b.id, None).await;
        let r = s
            .send(
                s.http
                    .get(s.v1(&format!("/wallet/{}/events", a.id)))
                    .header("X-Api-Key", &s.sak),
            )
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
        assert!(r.headers.contains_key("retry-after"));
        drop(second);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Resume from an id that retention deleted: `reset` first, then live events.
        let store = s.running().store.clone();
        let pruned = store
            .prune_events(satchel_domain::now_secs() + 10, 10_000)
            .await
            .unwrap();
        assert!(pruned.events > 0);
        drop(mine);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut resumed = Sse::open(&s, &s.sak, &a.id, Some(1)).await;
        let reset = resumed.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(reset.event, "reset", "{reset:?}");
        transfer(&s, &b, &a, 8).await;
        let e = resumed.next(Duration::from_secs(10)).await.unwrap();
        assert_transfer_in(&e, &a, 8);
        assert!(e.id > reset.id);

        // Shutdown ends the streams (and does not wait for them).
        let t0 = Instant::now();
        s.stop().await;
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert!(resumed.next(Duration::from_secs(5)).await.is_none());
        drop(their_sse);
    }
}

/// Two servers on one Postgres: a reader on the first sees payments made through the second
/// (found by the hub's outbox poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_sees_events_written_by_another_process() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let s1 = TestServer::start(db).await;
    let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [7u8; 32]));
    let second = satchel::app::start_with_http(
        satchel::app::StartOptions {
            database_url: s1.db.url.clone(),
            listen: "127.0.0.1:0".into(),
            backend: scripted.clone(),
            devnet: Some(scripted),
            service: test_service_config(),
            webhooks: None,
        },
        common::test_http_options(),
    )
    .await
    .unwrap();
    let (a, b) = (s1.create_wallet("a").await, s1.create_wallet("b").await);
    s1.fund(&b, 100).await;
    let mut sse = Sse::open(&s1, &s1.sak, &a.id, None).await;
    // Through the second server, with the first account's key.
    let t0 = Instant::now();
    let r = s1
        .http
        .post(format!("{}/v1/wallet/{}/transfer", second.url(), b.waka))
        .header("X-Api-Key", &s1.sak)
        .json(&json!({"dest_wallet_id": a.id, "num_satoshis": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let e = sse.next(Duration::from_secs(10)).await.unwrap();
    assert_transfer_in(&e, &a, 9);
    eprintln!("seen across servers after {:?}", t0.elapsed());
    second.shutdown().await;
    s1.stop().await;
}
