//! HTTP-level hardening: connection timeouts and caps, many held idle connections, the auth
//! throttle (with trusted proxies), no credential echoed in `Link`, and 503 while the
//! database is unreachable.
//!
//! The connection tests speak raw TCP to the real server; what they check does not touch the
//! database, so they run on SQLite only. The throttle and `Link` tests run on SQLite and
//! Postgres; the outage test needs a network database (Postgres behind a TCP proxy the test
//! can cut, so that the outage is this server's alone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod child;
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, test_dispatcher_config, test_service_config};
use reqwest::StatusCode;
use satchel::app::{HttpOptions, StartOptions, start_with_http};
use satchel::listener::ListenerSettings;
use satchel_api::ApiOptions;
use satchel_api::http::throttle::{AuthThrottleConfig, TrustedProxies};
use satchel_domain::Network;
use satchel_scripted::ScriptedBackend;
use satchel_testkit::db::TestDb;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;

/// Starts a test server (scripted node, an account) with these HTTP settings.
async fn server_with(db: TestDb, http: HttpOptions) -> TestServer {
    let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [7u8; 32]));
    let running = start_with_http(
        StartOptions {
            database_url: db.url.clone(),
            listen: "127.0.0.1:0".into(),
            backend: scripted.clone(),
            devnet: Some(scripted.clone()),
            service: test_service_config(),
            webhooks: Some(test_dispatcher_config()),
        },
        http,
    )
    .await
    .expect("server starts");
    let acct = satchel_service::wallets::create_account(&running.store, "test")
        .await
        .expect("account");
    TestServer {
        base: running.url(),
        running: Some(running),
        scripted,
        http: reqwest::Client::new(),
        sak: acct.secret_key.expose().to_owned(),
        pak: acct.public_key.expose().to_owned(),
        db,
    }
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Reads until the peer closes (or `limit` passes); returns what was read and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn addr_of(s: &TestServer) -> SocketAddr {
    s.running().addr
}

/// Idle connections close after the idle timeout, header tricklers after the header timeout,
/// slow bodies get 408; a normal keep-alive client is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_header_and_body_timeouts() {
    let http = HttpOptions {
        listener: ListenerSettings {
            idle_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = server_with(TestDb::sqlite().await, http).await;
    let addr = addr_of(&s);

    // An idle connection: open for the idle timeout, then closed.
    let started = Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // A header trickler: one byte every 200 ms never completes its head.
    let mut trickler = TcpStream::connect(addr).await.unwrap();
    let trickle_started = Instant::now();
    let trickle = tokio::spawn(async move {
        let head =
            b"GET /v1/wallets HTTP/1.1\r\nHost: x\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if trickler.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (_, closed) = read_until_closed(&mut trickler, Duration::from_secs(5)).await;
        (closed, trickle_started.elapsed())
    });
    // A slow body: head complete, 10 of 100 body bytes, then nothing.
    let mut slow_body = TcpStream::connect(addr).await.unwrap();
    slow_body
        .write_all(
            format!(
                "POST /v1/wallet HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"user_la",
                s.sak
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let body_started = Instant::now();
    let (reply, closed) = read_until_closed(&mut slow_body, Duration::from_secs(5)).await;
    let body_elapsed = body_started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""status":408"#), "{reply}");
    assert!(closed, "connection left open after 408");
    assert!(
        body_elapsed >= Duration::from_millis(900) && body_elapsed < Duration::from_secs(3),
        "408 after {body_elapsed:?}"
    );

    let (closed, trickle_elapsed) = trickle.await.unwrap();
    assert!(closed, "header trickler never closed");
    // Closed by the header timeout (1 s after its first byte), well before the idle one (3 s).
    assert!(
        trickle_elapsed < Duration::from_millis(2500),
        "trickler closed after {trickle_elapsed:?}"
    );

    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(6)).await;
    let idle_elapsed = started.elapsed();
    assert!(closed, "idle connection never closed");
    assert!(
        idle_elapsed >= Duration::from_millis(2900) && idle_elapsed < Duration::from_secs(5),
        "idle closed after {idle_elapsed:?}"
    );

    // A keep-alive client making requests 1 s apart (under both timeouts) keeps working.
    for _ in 0..3 {
        let r = s.get(&s.sak, "/wallets").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    eprintln!(
        "idle closed after {idle_elapsed:?} (timeout 3 s), header trickler after \
         {trickle_elapsed:?} (timeout 1 s), slow body answered 408 after {body_elapsed:?} \
         (timeout 1 s)"
    );
    s.stop().await;
}

/// The per-address cap refuses a client's extra connections (503, closed) without touching
/// other addresses; at the total cap the longest-idle connection makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_address_and_total_caps() {
    let http = HttpOptions {
        listener: ListenerSettings {
            max_connections: Some(20),
            max_connections_per_ip: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    let s = server_with(TestDb::sqlite().await, http).await;
    let addr = addr_of(&s);

    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from(loopback(2), addr).await.unwrap());
    }
    let mut sixth = connect_from(loopback(2), addr).await.unwrap();
    let (reply, closed) = read_until_closed(&mut sixth, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("retry-after:"),
        "{reply}"
    );
    assert!(closed);
    // Another address is not affected.
    let r = s.get(&s.sak, "/wallets").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Fill the total cap (20) with idle connections from other addresses, then more: the
    // oldest idle ones are closed to make room, and a real request still answers.
    for n in 3..=8 {
        for _ in 0..5 {
            held.push(connect_from(loopback(n), addr).await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    // A fresh client: the pooled connection of the one above may have been evicted too.
    let r = s
        .send(
            reqwest::Client::new()
                .get(s.v1("/wallets"))
                .header("X-Api-Key", &s.sak),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The first connections held (the longest idle) were evicted.
    let (_, closed) = read_until_closed(&mut held[0], Duration::from_secs(2)).await;
    assert!(closed, "the longest-idle connection was not evicted");
    drop(held);
    s.stop().await;
}

/// The issue's scenario: 10,000 idle connections held from 127.0.0.2 and up (so that no
/// address reaches the per-address cap), and a normal request from 127.0.0.1 answers within
/// a second. The server runs as its own process (the binary, default limits) because the test
/// process holds the other 10,000 descriptors; the hard limit here is 20,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_idle_connections_do_not_lock_out_a_request() {
    const IDLE: usize = 10_000;
    const PER_ADDR: usize = 200;
    let limit = satchel::listener::raise_fd_limit();
    if limit.is_some_and(|l| l < (IDLE as u64) + 500) {
        panic!("this test needs an open-file limit above {IDLE} (hard limit: {limit:?})");
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut proc = child::Proc::serve("hardening", move |cmd| {
        cmd.args(["--backend", "scripted", "--data-dir"])
            .arg(&data_dir)
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}",
                data_dir.join("satchel.db").display()
            ));
    });
    proc.wait_ready().await;
    let sak = proc.sak().await;
    let addr: SocketAddr = proc.addr().parse().unwrap();

    let t = Instant::now();
    let mut held = Vec::with_capacity(IDLE);
    let addrs = IDLE.div_ceil(PER_ADDR);
    for a in 0..addrs {
        let from = loopback(u8::try_from(2 + a).unwrap());
        let batch = futures::future::join_all(
            (0..PER_ADDR.min(IDLE - held.len())).map(|_| connect_from(from, addr)),
        )
        .await;
        for c in batch {
            held.push(c.expect("idle connection"));
        }
    }
    let opened_in = t.elapsed();
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let http = reqwest::Client::builder()
        .local_address(loopback(1))
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let r = http
            .get(format!("{}/v1/wallets", proc.base()))
            .header("X-Api-Key", &sak)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(r.status(), StatusCode::OK);
        worst = worst.max(took);
    }
    assert!(
        worst < Duration::from_secs(1),
        "a request took {worst:?} with {IDLE} idle connections held"
    );
    // The idle connections are still held (not refused): a sample still answers a request.
    let mut sample = held.pop().unwrap();
    sample
        .write_all(b"GET /v1/wallets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (reply, _) = read_until_closed(&mut sample, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    proc.check_alive();
    assert!(
        proc.line(false, "accept failed").is_none(),
        "{}",
        proc.tail()
    );
    eprintln!(
        "{IDLE} idle connections from {addrs} addresses opened in {opened_in:?}; \
         worst of 5 requests from 127.0.0.1: {worst:?}"
    );
    drop(held);
    proc.stop().await;
}

fn throttle_options(trusted: &[&str]) -> HttpOptions {
    let trusted = TrustedProxies::parse(trusted).unwrap();
    HttpOptions {
        listener: ListenerSettings {
            trusted_proxies: trusted.clone(),
            ..Default::default()
        },
        api: ApiOptions {
            auth_throttle: AuthThrottleConfig {
                max_failures: 5,
                window: Duration::from_secs(60),
                ..Default::default()
            },
            trusted_proxies: trusted,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(loopback(n))
        .build()
        .unwrap()
}

async fn wallets_status(
    s: &TestServer,
    client: &reqwest::Client,
    key: &str,
    xff: Option<&str>,
) -> reqwest::Response {
    let mut rb = client.get(s.v1("/wallets")).header("X-Api-Key", key);
    if let Some(x) = xff {
        rb = rb.header("X-Forwarded-For", x);
    }
    rb.send().await.unwrap()
}

/// N wrong keys from one address => 429 with `Retry-After`, even for the right key; other
/// addresses unaffected; `X-Forwarded-For` ignored from untrusted peers and honoured from
/// trusted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_are_throttled_per_address() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = server_with(db, throttle_options(&["127.0.0.4"])).await;
        let wrong = "sak_wrongwrongwrongwrongwrong";

        // 127.0.0.2: five wrong keys are 401, the sixth attempt 429 (right key too).
        let a = client_from(2);
        for _ in 0..5 {
            let r = wallets_status(&s, &a, wrong, None).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        for key in [wrong, s.sak.as_str()] {
            let r = wallets_status(&s, &a, key, None).await;
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["name"], "Too Many Requests");
            assert_eq!(body["status"], 429);
            assert_eq!(body["code"], 0);
        }
        // Requests without a key are not throttled (they guess nothing).
        let r = a.get(s.v1("/wallets")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Another address is unaffected.
        let b = client_from(5);
        assert_eq!(
            wallets_status(&s, &b, &s.sak, None).await.status(),
            StatusCode::OK
        );

        // 127.0.0.3 is not a trusted proxy: its X-Forwarded-For is ignored, so changing it
        // does not escape the throttle.
        let c = client_from(3);
        for i in 0..5 {
            let r = wallets_status(&s, &c, wrong, Some(&format!("1.2.3.{i}"))).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = wallets_status(&s, &c, &s.sak, Some("9.9.9.9")).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

        // 127.0.0.4 is trusted: the client is the rightmost untrusted X-Forwarded-For entry.
        let p = client_from(4);
        for _ in 0..5 {
            let r = wallets_status(&s, &p, wrong, Some("6.6.6.6, 1.1.1.1")).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = wallets_status(&s, &p, &s.sak, Some("1.1.1.1")).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        // Another client behind the same proxy, and the proxy's own address, are not throttled.
        let r = wallets_status(&s, &p, &s.sak, Some("6.6.6.6, 2.2.2.2")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = wallets_status(&s, &p, &s.sak, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

/// A window later the address may try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttle_window_passes() {
    let mut http = throttle_options(&[]);
    http.api.auth_throttle.max_failures = 2;
    http.api.auth_throttle.window = Duration::from_secs(2);
    let s = server_with(TestDb::sqlite().await, http).await;
    let a = client_from(2);
    for _ in 0..2 {
        let r = wallets_status(&s, &a, "sak_nopenopenopenope", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = wallets_status(&s, &a, &s.sak, None).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = wallets_status(&s, &a, &s.sak, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

/// The secret never appears in a response, whatever encoding the query used for its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_never_echoed_in_link() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = TestServer::start(db).await;
        for i in 0..3 {
            s.create_wallet(&format!("w{i}")).await;
        }
        let secret = s.sak.clone();
        for name in [
            "access-token",
            "access%2Dtoken",
            "access%2dtoken",
            "%61%63%63%65%73%73%2D%74%6F%6B%65%6E",
            "access-token%00",
            "ACCESS-TOKEN",
            "access_token",
            "access-token[]",
        ] {
            let url = format!(
                "{}?{name}={secret}&per-page=1&page=2&fields=id",
                s.v1("/wallets")
            );
            // The key also goes as a header, so every variant is authenticated.
            let r = s.send(s.http.get(&url).header("X-Api-Key", &secret)).await;
            assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text);
            let link = r.headers["link"].to_str().unwrap();
            assert!(link.contains("fields=id"), "{link}");
            let secret_tail = &secret[4..];
            for (h, v) in &r.headers {
                let v = String::from_utf8_lossy(v.as_bytes());
                assert!(!v.contains(secret_tail), "{name}: {h}: {v}");
            }
            assert!(!r.text.contains(secret_tail), "{name}: {}", r.text);
        }
        s.stop().await;
    }
}

/// A TCP proxy in front of Postgres that the test can cut: cutting drops every proxied
/// connection and, until restored, closes new ones on accept (the database is unreachable
/// for this server only).
struct CuttableProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(upstream: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let pipes: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (cut2, pipes2) = (cut.clone(), pipes.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                pipes2.lock().await.push(pipe);
            }
        });
        CuttableProxy {
            addr,
            cut,
            pipes,
            accept,
        }
    }

    async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for p in self.pipes.lock().await.drain(..) {
            p.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// While the database is unreachable, requests get 503 with `Retry-After` in LNPay's envelope
/// (not 500), nothing is written, and the server recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_is_503_and_recovers() {
    let Some(mut db) = TestDb::postgres().await else {
        eprintln!("Postgres skipped");
        return;
    };
    // postgres://user@host:port/name?… -> the same through the proxy.
    let (scheme_user, rest) = db.url.split_once('@').unwrap();
    let (host_port, path) = rest.split_once('/').unwrap();
    let upstream: SocketAddr = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = CuttableProxy::start(upstream).await;
    db.url = format!("{scheme_user}@{}/{path}", proxy.addr);

    let s = server_with(db, HttpOptions::default()).await;
    let a = s.create_wallet("a").await;
    let b = s.create_wallet("b").await;
    s.fund(&a, 1_000).await;

    proxy.cut().await;
    let t = Instant::now();
    let r = s.get(&s.sak, &format!("/wallet/{}", a.id)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.headers["retry-after"], "2");
    assert_eq!(
        r.json,
        json!({"name": "Service Unavailable",
               "message": "The service is temporarily unavailable. Please retry later.",
               "code": 0, "status": 503,
               "request_id": r.headers["x-request-id"].to_str().unwrap()})
    );
    let r = s
        .post(
            &s.sak,
            &format!("/wallet/{}/transfer", a.waka),
            json!({"dest_wallet_id": b.id, "num_satoshis": 100}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    let outage_answers = t.elapsed();
    // A wrong key during the outage is 503 too (the key could not be checked), not 401.
    let r = s.get("sak_unknownunknownunknown", "/wallets").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);

    proxy.restore();
    let t = Instant::now();
    loop {
        let r = s.get(&s.sak, &format!("/wallet/{}", a.id)).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert!(t.elapsed() < Duration::from_secs(20), "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_in = t.elapsed();
    // The refused transfer wrote nothing; a retry works.
    assert_eq!(s.balance(&a).await, 1_000);
    assert_eq!(s.balance(&b).await, 0);
    let r = s
        .post(
            &s.sak,
            &format!("/wallet/{}/transfer", a.waka),
            json!({"dest_wallet_id": b.id, "num_satoshis": 100}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(s.balance(&b).await, 100);
    s.assert_audit_clean().await;
    eprintln!(
        "outage answers (3 requests) in {outage_answers:?}; recovered {recovered_in:?} after restore"
    );
    s.stop().await;
}
