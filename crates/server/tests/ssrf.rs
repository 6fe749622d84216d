//! Webhook SSRF, caps and redelivery limits against the real server (SQLite and Postgres).
//!
//! The corpus test runs a listener on every local address of this host (dual-stack `[::]`, so
//! 127.x, 0.0.0.0, ::1, ::ffff:127.0.0.1 and the host's own addresses all land there) and
//! counts TCP connections. Every URL form must be refused at `POST /v1/webhooks`; and when the
//! subscription check is bypassed (rows stored before it existed, or a name that resolved to a
//! public address then), delivery must refuse them too. The listener must see nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestServer, test_dispatcher_config, test_service_config};
use reqwest::StatusCode;
use satchel_domain::Network;
use satchel_scripted::ScriptedBackend;
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a body a tenant must never read back.
    Secret,
    /// 200 with a body that never ends.
    Endless,
}

/// Counts connections on every local address.
struct Listener {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Listener {
    async fn start(answer: Answer) -> Listener {
        let l6 = TcpListener::bind("[::]:0").await.unwrap();
        let port = l6.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let mut listeners = vec![l6];
        // Only binds where IPv6 sockets are v6-only; otherwise `[::]` already has IPv4.
        if let Ok(l4) = TcpListener::bind(("0.0.0.0", port)).await {
            listeners.push(l4);
        }
        for l in listeners {
            let hits = hits.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = l.accept().await {
                    hits.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(sock, answer));
                }
            });
        }
        Listener { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(mut sock: TcpStream, answer: Answer) {
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    match answer {
        Answer::Secret => {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 22\r\nconnection: close\r\n\r\nINTERNAL-ONLY-SECRET-1",
                )
                .await;
        }
        Answer::Endless => {
            if sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let chunk = vec![b'x'; 16 * 1024];
            while sock.write_all(&chunk).await.is_ok() {}
        }
    }
}

/// URL forms aimed at this host (port `p` where the form can carry one), the metadata service,
/// private networks and embedded-IPv4 IPv6 forms; plus tricks that hide the real host.
fn corpus(p: u16) -> Vec<String> {
    [
        // From the report.
        "http://127.0.0.1:{p}\\@1.2.3.4/",
        "http://[::1]:{p}\\@1.2.3.4/",
        "http://169.254.169.254\\@1.2.3.4/",
        "http://[::127.0.0.1]:{p}/",
        "http://[64:ff9b::7f00:1]:{p}/",
        "http://[2002:7f00:1::]:{p}/",
        "http://[fec0::1]:{p}/",
        // Loopback, spelled every way the WHATWG parser accepts.
        "http://127.0.0.1:{p}/",
        "http://127.0.0.2:{p}/",
        "http://127.1:{p}/",
        "http://2130706433:{p}/",
        "http://0x7f.1:{p}/",
        "http://0177.0.0.1:{p}/",
        "http://0x7f000001:{p}/",
        "http://017700000001:{p}/",
        "http://127.000.000.001:{p}/",
        "http://0x7f.0x0.0x0.0x1:{p}/",
        "http://127.0.0.1.:{p}/",
        "http://%31%32%37.0.0.1:{p}/",
        "http://127\u{3002}0\u{3002}0\u{3002}1:{p}/",
        "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1:{p}/",
        "HTTP://127.0.0.1:{p}/",
        "http:127.0.0.1:{p}/",
        "http:/127.0.0.1:{p}/",
        "http:\\\\127.0.0.1:{p}\\",
        "https://127.0.0.1:{p}/",
        " http://127.0.0.1:{p}/ ",
        "http://127.0.0.1:{p}#@1.2.3.4/",
        "http://127.0.0.1:{p}?@1.2.3.4/",
        "http://127.0.0.1:{p}\\\\@1.2.3.4/",
        // Unspecified (Linux connects it to this host).
        "http://0:{p}/",
        "http://0.0.0.0:{p}/",
        "http://[::]:{p}/",
        // IPv6 loopback and forms embedding IPv4.
        "http://[::1]:{p}/",
        "http://[0:0:0:0:0:0:0:1]:{p}/",
        "http://[::ffff:127.0.0.1]:{p}/",
        "http://[::ffff:7f00:1]:{p}/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/",
        "http://[::ffff:0:7f00:1]:{p}/",
        "http://[64:ff9b:1::7f00:1]:{p}/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/",
        // Local names.
        "http://localhost:{p}/",
        "http://localhost.:{p}/",
        "http://LOCALHOST:{p}/",
        "http://api.localhost:{p}/",
        // Credentials (and `@` tricks).
        "http://user:pass@127.0.0.1:{p}/",
        "http://1.2.3.4@127.0.0.1:{p}/",
        "http://example.com@127.0.0.1:{p}/",
        "http://127.0.0.1:{p}%2f@1.2.3.4/",
        // Metadata, private, CGNAT, link-local, unique-local (fd00::2 is this host's own),
        // multicast, broadcast, Teredo.
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1:{p}/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fc00::1]/",
        "http://[fd00::2]:{p}/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://255.255.255.255/",
        "http://[2001::1]/",
        // Other schemes, and what does not parse.
        "ftp://127.0.0.1:{p}/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{p}/_GET%20/",
        "dict://127.0.0.1:{p}/",
        "ws://127.0.0.1:{p}/",
        "http://[::1%25lo]:{p}/",
        "//127.0.0.1:{p}/",
    ]
    .iter()
    .map(|u| u.replace("{p}", &p.to_string()))
    .collect()
}

fn scripted() -> Arc<ScriptedBackend> {
    Arc::new(ScriptedBackend::new(Network::Regtest, [11u8; 32]))
}

/// Server settings: the operator override off (the default), room for the whole corpus.
fn strict() -> ServiceConfig {
    ServiceConfig {
        allow_private_webhook_targets: false,
        webhook_max_per_account: 1000,
        ..test_service_config()
    }
}

async fn deliveries(s: &TestServer, sak: &str, hook: &str) -> Vec<Value> {
    let r = s.get(sak, &format!("/webhooks/{hook}/deliveries")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json.as_array().unwrap().clone()
}

/// Waits until every hook's only delivery has at least `n` attempts or is no longer pending;
/// returns them.
async fn wait_attempts(s: &TestServer, sak: &str, hooks: &[String], n: i64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        let mut all = Vec::new();
        for h in hooks {
            if let Some(d) = deliveries(s, sak, h).await.first()
                && (d["attempts"].as_i64().unwrap_or(0) >= n || d["status"] != "pending")
            {
                all.push(d.clone());
            }
        }
        if all.len() == hooks.len() {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every delivery reached {n} attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssrf_corpus_never_reaches_a_local_listener() {
    let l = Listener::start(Answer::Secret).await;
    let urls = corpus(l.port);
    assert!(urls.len() >= 40, "{} forms", urls.len());
    let mut dcfg = test_dispatcher_config();
    dcfg.allow_private = false;

    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        // 1. Default settings: every form is refused at subscription, nothing is written.
        let s = TestServer::start_custom(db, strict(), scripted(), Some(dcfg.clone())).await;
        for u in &urls {
            let r = s
                .post(
                    &s.sak,
                    "/webhooks",
                    json!({"endpoint_url": u, "default_all": true}),
                )
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{u:?}: {}", r.text);
            assert_eq!(r.json["name"], "Bad Request", "{}", r.text);
            assert_eq!(r.json["status"], 400);
            let msg = r.json["message"].as_str().unwrap();
            assert!(msg.starts_with("endpoint_url "), "{u:?}: {msg}");
            assert!(!msg.contains("INTERNAL-ONLY"), "{msg}");
        }
        assert_eq!(s.get(&s.sak, "/webhooks").await.json, json!([]));
        let db = s.stop().await;

        // 2. Subscriptions the check did not stop (stored before it existed, or a name that
        //    resolved publicly at the time): delivery refuses them when it connects.
        let mut lax = strict();
        lax.allow_private_webhook_targets = true;
        // No retry falls due before this server stops: a delivery claimed at the moment of a
        // stop keeps its lease (120 s) after the restart, which made the wait below flaky.
        let mut first_dcfg = dcfg.clone();
        first_dcfg.retry.first_retry_secs = 12;
        first_dcfg.retry.max_retry_secs = 12;
        let s = TestServer::start_custom(db, lax, scripted(), Some(first_dcfg)).await;
        let sak = s.sak.clone();
        let mut hooks = Vec::new();
        for u in &urls {
            let r = s
                .post(
                    &sak,
                    "/webhooks",
                    json!({"endpoint_url": u, "default_all": true}),
                )
                .await;
            match r.status {
                StatusCode::CREATED => hooks.push(r.json["id"].as_str().unwrap().to_owned()),
                // Not a URL the client could send to at all (scheme, credentials, syntax,
                // names that do not resolve here).
                StatusCode::BAD_REQUEST => {}
                other => panic!("{u:?}: {other} {}", r.text),
            }
        }
        eprintln!(
            "{} of {} forms subscribed with the check off",
            hooks.len(),
            urls.len()
        );
        assert!(hooks.len() >= 40, "only {} forms subscribed", hooks.len());
        s.create_wallet("event for every hook").await;
        let first = wait_attempts(&s, &sak, &hooks, 1).await;
        let db = s.stop().await;

        // After a restart the retries are refused the same way.
        let s = TestServer::start_custom(db, strict(), scripted(), Some(dcfg.clone())).await;
        let done = wait_attempts(&s, &sak, &hooks, 2).await;
        for d in first.iter().chain(&done) {
            assert_eq!(d["status"], "pending", "{d}");
            for a in d["requests"].as_array().unwrap() {
                assert_eq!(a["status_code"], Value::Null, "{d}");
                assert_eq!(a["response_excerpt"], Value::Null, "{d}");
                let err = a["error"].as_str().unwrap();
                assert!(err.contains("are refused"), "{d}");
            }
        }
        assert_eq!(l.hits(), 0, "a corpus URL reached the local listener");
        s.assert_audit_clean().await;
        s.stop().await;
    }

    // Control: the listener does see a delivery when the operator allows private targets, so
    // zero above means refused, not unreachable.
    let db = TestDb::sqlite().await;
    let s = TestServer::start(db).await;
    let r = s
        .post(
            &s.sak,
            "/webhooks",
            json!({"endpoint_url": format!("http://0x7f.1:{}/", l.port), "default_all": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["endpoint_url"],
        format!("http://127.0.0.1:{}/", l.port),
        "stored normalized"
    );
    let hook = r.json["id"].as_str().unwrap().to_owned();
    s.create_wallet("control").await;
    let sak = s.sak.clone();
    let d = wait_attempts(&s, &sak, &[hook], 1).await;
    assert_eq!(d[0]["requests"][0]["status_code"], 200, "{}", d[0]);
    assert_eq!(
        d[0]["requests"][0]["response_excerpt"],
        "INTERNAL-ONLY-SECRET-1"
    );
    assert!(l.hits() >= 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_per_account_are_capped() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        // Default cap (20); 30 concurrent requests may not overshoot it.
        let s = TestServer::start(db).await;
        let sak = s.sak.clone();
        let reqs = (0..30).map(|i| {
            s.post(
                &sak,
                "/webhooks",
                json!({"endpoint_url": format!("http://127.0.0.1:9/h{i}"), "default_all": true}),
            )
        });
        let results = futures::future::join_all(reqs).await;
        let created = results
            .iter()
            .filter(|r| r.status == StatusCode::CREATED)
            .count();
        assert_eq!(created, 20);
        for r in results.iter().filter(|r| r.status != StatusCode::CREATED) {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
            assert_eq!(
                r.json["message"],
                "Webhook limit reached: an account can have at most 20 webhooks. Delete one first."
            );
        }
        let list = s.get(&sak, "/webhooks").await.json;
        assert_eq!(list.as_array().unwrap().len(), 20);

        // Deleted webhooks don't count.
        let gone = list[0]["id"].as_str().unwrap().to_owned();
        let r = s
            .send(
                s.http
                    .delete(s.v1(&format!("/webhooks/{gone}")))
                    .header("X-Api-Key", &sak),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let add = |n: &str| {
            s.post(
                &sak,
                "/webhooks",
                json!({"endpoint_url": format!("http://127.0.0.1:9/{n}"), "default_all": true}),
            )
        };
        assert_eq!(add("again").await.status, StatusCode::CREATED);
        assert_eq!(add("one-too-many").await.status, StatusCode::BAD_REQUEST);
        let db = s.stop().await;

        // The cap counts stored webhooks, so it holds across a restart.
        let mut cfg = test_service_config();
        let s2 = TestServer::start_custom(db, cfg.clone(), scripted(), None).await;
        let r = s2
            .post(
                &sak,
                "/webhooks",
                json!({"endpoint_url": "http://127.0.0.1:9/after-restart", "default_all": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            s2.get(&sak, "/webhooks")
                .await
                .json
                .as_array()
                .unwrap()
                .len(),
            20
        );
        // The cap is per account: the restarted server's fresh account has its own.
        let r = s2
            .post(
                &s2.sak,
                "/webhooks",
                json!({"endpoint_url": "http://127.0.0.1:9/other", "default_all": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let db = s2.stop().await;

        // Configurable.
        cfg.webhook_max_per_account = 1;
        let s3 = TestServer::start_custom(db, cfg, scripted(), None).await;
        let one = |n: &str| {
            s3.post(
                &s3.sak,
                "/webhooks",
                json!({"endpoint_url": format!("http://127.0.0.1:9/{n}"), "default_all": true}),
            )
        };
        assert_eq!(one("a").await.status, StatusCode::CREATED);
        let r = one("b").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(
            r.json["message"]
                .as_str()
                .unwrap()
                .contains("at most 1 webhooks")
        );
        s3.assert_audit_clean().await;
        s3.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_is_rate_limited_per_account() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let cfg = ServiceConfig {
            webhook_redeliveries_per_minute: 2,
            ..test_service_config()
        };
        let s = TestServer::start_custom(db, cfg, scripted(), Some(test_dispatcher_config())).await;
        // Nothing listens on port 9: the delivery exists and keeps failing, which is enough.
        let r = s
            .post(
                &s.sak,
                "/webhooks",
                json!({"endpoint_url": "http://127.0.0.1:9/hook", "events": ["wallet_created"]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let hook = r.json["id"].as_str().unwrap().to_owned();
        s.create_wallet("A").await;
        let d = deliveries(&s, &s.sak, &hook).await;
        assert_eq!(d.len(), 1);
        let did = d[0]["id"].as_str().unwrap().to_owned();
        let path = format!("/webhooks/deliveries/{did}/redeliver");

        for _ in 0..2 {
            let r = s.post(&s.sak, &path, json!({})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        let r = s.post(&s.sak, &path, json!({})).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
        assert_eq!(r.json["name"], "Too Many Requests");
        assert_eq!(r.json["status"], 429);
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&retry), "Retry-After {retry}");
        assert_eq!(
            r.json["message"],
            format!("Too many requests; try again in {retry} seconds.")
        );
        // The refused request wrote nothing.
        assert_eq!(deliveries(&s, &s.sak, &hook).await.len(), 3);
        // Unknown deliveries are still 404, not 429 (the limit counts real redeliveries).
        let r = s
            .post(
                &s.sak,
                "/webhooks/deliveries/iwhd_nope/redeliver",
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_excerpt_is_bounded() {
    let endless = Listener::start(Answer::Endless).await;
    for (kind, db) in TestDb::all().await {
        eprintln!("--- {kind}");
        let s = TestServer::start_custom(
            db,
            test_service_config(),
            scripted(),
            Some(test_dispatcher_config()),
        )
        .await;
        let r = s
            .post(
                &s.sak,
                "/webhooks",
                json!({"endpoint_url": format!("http://127.0.0.1:{}/", endless.port), "default_all": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let hook = r.json["id"].as_str().unwrap().to_owned();
        s.create_wallet("A").await;
        let sak = s.sak.clone();
        let d = wait_attempts(&s, &sak, &[hook], 1).await;
        let a = &d[0]["requests"][0];
        assert_eq!(d[0]["status"], "delivered", "{}", d[0]);
        assert_eq!(a["status_code"], 200);
        let excerpt = a["response_excerpt"].as_str().unwrap();
        assert_eq!(excerpt, "x".repeat(satchel_api::webhooks::EXCERPT_CHARS));
        // Read up to the limit, not until the (never-ending) body ends.
        assert!(a["duration_ms"].as_i64().unwrap() < 1500, "{a}");
        s.stop().await;
    }
}
