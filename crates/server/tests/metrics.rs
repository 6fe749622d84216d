//! `/metrics`: the real server with its metrics listener on a random port. After traffic the
//! counters moved by exactly what was done, the gauges agree with the books, no label carries a
//! key or id, and `promtool check metrics` accepts the text (required in CI).
//!
//! The Prometheus recorder is process-wide, so everything here runs in ONE test, one database
//! after the other, and compares differences between scrapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode as AxStatus;
use axum::routing::post;
use common::{TestServer, test_dispatcher_config, test_http_options, test_service_config};
use reqwest::StatusCode;
use satchel_domain::{Bolt11, FailureReason, Msat, Network};
use satchel_lightning::NodeStats;
use satchel_scripted::{Script, ScriptedBackend};
use satchel_service::ServiceConfig;
use satchel_testkit::db::TestDb;
use serde_json::json;

/// One sample: metric name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Parses Prometheus' text format (what the exporter writes: no escapes in our label values).
fn parse(text: &str) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let inner = rest.strip_suffix('}').unwrap();
                let mut m = BTreeMap::new();
                for kv in inner.split("\",").filter(|s| !s.is_empty()) {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    m.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (n.to_owned(), m)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap(),
        };
        out.insert(Series { name, labels }, v);
    }
    out
}

struct Scrape {
    text: String,
    samples: BTreeMap<Series, f64>,
}

impl Scrape {
    /// The value of `name` with exactly `labels` (0 if absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = Series {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.samples.get(&key).copied().unwrap_or(0.0)
    }

    /// Sum of `name` over every label set.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(s, _)| s.name == name)
            .map(|(_, v)| v)
            .sum()
    }
}

async fn scrape(url: &str) -> Scrape {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    let samples = parse(&text);
    Scrape { text, samples }
}

/// `promtool check metrics` on `text`; panics on any problem it reports. Without promtool the
/// check is skipped locally (with a note) and fails in CI, where `.ci/run` installs it.
fn promtool_check(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "promtool is required in CI (Debian package `prometheus`): {e}"
            );
            eprintln!(
                "NOTE: promtool not found ({e}); `apt-get install prometheus` to run this check"
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}\n--- scraped text ---\n{text}"
    );
}

const REQS: &str = "satchel_http_requests_total";
const PAYMENTS: &str = "satchel_payments_total";

async fn start(db: TestDb) -> TestServer {
    let mut http = test_http_options();
    http.metrics_listen = Some("127.0.0.1:0".into());
    http.metrics_refresh = Some(Duration::from_millis(100));
    let cfg = ServiceConfig {
        backend_name: "scripted",
        ..test_service_config()
    };
    let scripted = Arc::new(ScriptedBackend::new(Network::Regtest, [7u8; 32]));
    TestServer::start_full(db, cfg, scripted, Some(test_dispatcher_config()), http).await
}

/// Waits until the refresher has published `pred` (gauges are read every 100 ms here).
async fn scrape_until(url: &str, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..100 {
        let s = scrape(url).await;
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("metrics never showed {what}:\n{}", scrape(url).await.text);
}

async fn webhook_receiver() -> String {
    let app = axum::Router::new().route("/hook", post(|| async { AxStatus::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

async fn traffic_moves_the_numbers(s: &TestServer, sqlite: bool) {
    let url = format!("http://{}/metrics", s.running().metrics_addr.unwrap());
    // The API port does not serve metrics.
    let r = reqwest::get(format!("{}/metrics", s.base)).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let hook = webhook_receiver().await;
    let r = s
        .post(
            &s.sak,
            "/webhooks",
            json!({"endpoint_url": hook, "default_all": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let a = s.create_wallet("A").await;
    let b = s.create_wallet("B").await;
    s.fund(&a, 50_000).await;

    let before = scrape(&url).await;
    let get_wallet = [
        ("method", "GET"),
        ("route", "/v1/wallet/{key}"),
        ("status", "200"),
    ];
    for _ in 0..5 {
        let r = s.get(&s.sak, &format!("/wallet/{}", a.waka)).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Three unknown paths, one of them carrying a key-like segment.
    for p in ["/nope", "/v1/nope/waka_secret", "/v1/wallet/x/y/z"] {
        let r = reqwest::get(format!("{}{p}", s.base)).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // Payments: one over the node that succeeds, one that fails, one between wallets.
    let (ok_inv, _) = s
        .scripted
        .external_invoice(Some(Msat::from_sats(100).unwrap()), "ok", 3600);
    s.scripted.script(
        ok_inv.payment_hash(),
        Script::Succeed {
            fee: Msat::from_msat(1_000).unwrap(),
        },
    );
    let (bad_inv, _) =
        s.scripted
            .external_invoice(Some(Msat::from_sats(200).unwrap()), "bad", 3600);
    s.scripted
        .script(bad_inv.payment_hash(), Script::Fail(FailureReason::NoRoute));
    let internal = s.invoice(&b, 300).await;
    let internal = Bolt11::parse(internal["payment_request"].as_str().unwrap()).unwrap();
    for (inv, status) in [
        (&ok_inv, StatusCode::CREATED),
        (&bad_inv, StatusCode::BAD_REQUEST),
        (&internal, StatusCode::CREATED),
    ] {
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/withdraw", a.waka),
                json!({"payment_request": inv.as_str()}),
            )
            .await;
        assert_eq!(r.status, status, "{}", r.text);
    }

    // Gauges follow the books: liabilities = A + B, nothing unclaimed or in flight, and the
    // webhook queue drains (every event delivered).
    // (Read from the store: a GET through the API would count as traffic.)
    let mut balances = 0;
    for w in [&a, &b] {
        let id = satchel_domain::WalletId::parse(&w.id).unwrap();
        let rec = s.running().store.wallet(&id).await.unwrap().unwrap();
        balances += i64::try_from(rec.balance.as_msat()).unwrap();
    }
    #[allow(clippy::cast_precision_loss)]
    let expected = balances as f64;
    // The node's figures, as the backend reports them (the scripted node is told what to say).
    s.scripted.set_node_stats(NodeStats {
        channels_active: Some(2),
        channels_inactive: Some(1),
        local_balance_msat: Some(5_000_000),
        remote_balance_msat: Some(7_000_000),
        block_height: Some(840_000),
        sync_lag_secs: Some(0),
    });
    let after = scrape_until(&url, "the books and an empty webhook queue", |m| {
        m.get("satchel_node_block_height", &[]) == 840_000.0
            && m.get("satchel_ledger_liabilities_msat", &[]) == expected
            && m.get("satchel_webhook_queue_depth", &[]) == 0.0
            && m.get(
                "satchel_webhook_deliveries_total",
                &[("outcome", "delivered")],
            ) >= before.get(
                "satchel_webhook_deliveries_total",
                &[("outcome", "delivered")],
            ) + 4.0
    })
    .await;
    let d =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);

    assert_eq!(d(REQS, &get_wallet), 5.0, "{}", after.text);
    assert_eq!(
        d(
            REQS,
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        3.0
    );
    assert_eq!(
        d(
            REQS,
            &[
                ("method", "POST"),
                ("route", "/v1/wallet/{key}/withdraw"),
                ("status", "201")
            ]
        ),
        2.0
    );
    assert_eq!(
        d(
            "satchel_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/v1/wallet/{key}")]
        ),
        5.0
    );
    assert_eq!(
        d(
            PAYMENTS,
            &[("backend", "scripted"), ("outcome", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        d(PAYMENTS, &[("backend", "scripted"), ("outcome", "failed")]),
        1.0
    );
    assert_eq!(
        d(
            PAYMENTS,
            &[("backend", "internal"), ("outcome", "succeeded")]
        ),
        1.0
    );
    assert_eq!(after.get("satchel_ledger_unclaimed_msat", &[]), 0.0);
    assert_eq!(after.get("satchel_payments_in_flight", &[]), 0.0);
    assert_eq!(after.get("satchel_payments_in_flight_msat", &[]), 0.0);
    assert_eq!(
        after.get("satchel_webhook_queue_oldest_age_seconds", &[]),
        0.0
    );
    assert!(after.get("satchel_gauges_last_refresh_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(
        after.get(
            "satchel_node_info",
            &[("backend", "scripted"), ("network", "regtest")]
        ),
        1.0
    );
    assert_eq!(
        after.get("satchel_node_channels", &[("state", "active")]),
        2.0
    );
    assert_eq!(
        after.get("satchel_node_channels", &[("state", "inactive")]),
        1.0
    );
    assert_eq!(
        after.get("satchel_node_channel_balance_msat", &[("side", "local")]),
        5_000_000.0
    );
    assert_eq!(
        after.get("satchel_node_channel_balance_msat", &[("side", "remote")]),
        7_000_000.0
    );
    assert_eq!(after.get("satchel_node_sync_lag_seconds", &[]), 0.0);
    // Group commit (SQLite only): more batches, at least one operation each.
    let batches = |m: &Scrape| m.sum("satchel_store_group_commit_batch_size_count");
    let flushes = |m: &Scrape| m.sum("satchel_store_group_commit_flush_seconds_count");
    if sqlite {
        assert!(batches(&after) > batches(&before), "{}", after.text);
        assert!(flushes(&after) > flushes(&before));
        assert!(
            after.sum("satchel_store_group_commit_batch_size_sum")
                >= after.sum("satchel_store_group_commit_batch_size_count")
        );
    }

    // Bounded labels: no key, wallet id or hash anywhere in the text.
    for secret in [
        a.waka.as_str(),
        a.id.as_str(),
        b.id.as_str(),
        s.sak.as_str(),
        "waka_secret",
        ok_inv.as_str(),
    ] {
        assert!(!after.text.contains(secret), "{secret} leaked");
    }
    assert!(!after.text.contains(&hex_of(&ok_inv)));
    let routes: std::collections::BTreeSet<&String> = after
        .samples
        .keys()
        .filter_map(|s| s.labels.get("route"))
        .collect();
    for r in &routes {
        assert!(r.as_str() == "unmatched" || r.starts_with("/v1/"), "{r}");
    }

    if std::env::var("SATCHEL_TEST_SHOW_METRICS").is_ok() {
        eprintln!("{}", after.text);
    }
    promtool_check(&after.text);
}

fn hex_of(b: &Bolt11) -> String {
    b.payment_hash().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_traffic_and_pass_promtool() {
    for (kind, db) in TestDb::all().await {
        eprintln!("--- running on {kind}");
        let s = start(db).await;
        traffic_moves_the_numbers(&s, kind == "sqlite").await;
        s.assert_audit_clean().await;
        s.stop().await;
    }
}

#[test]
fn promtool_rejects_bad_text() {
    // The check is real: a counter without `_total` and a malformed line are reported.
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "promtool is required in CI");
        return;
    }
    let bad = "# HELP x_requests a counter\n# TYPE x_requests counter\nx_requests 1\n";
    let r = std::panic::catch_unwind(|| promtool_check(bad));
    assert!(r.is_err(), "promtool accepted a counter without _total");
}
