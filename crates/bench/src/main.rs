//! `satchel-bench`: a closed-loop load generator for Satchel.
//!
//! For each database it starts its own `satchel serve` (a child process on a temporary data dir
//! and a loopback port, default devnet backend), prepares wallets, then runs each scenario at
//! each concurrency: N connections, each sending its next request as soon as the previous one
//! answers, bounded by a request count and a time limit. It reports req/s, p50/p90/p99 latency,
//! the server's CPU time per request and its peak RSS (both read from /proc), writes a Markdown
//! table, and ends with `satchel audit`, which must be clean.
//!
//! Three scenarios are run only when named, because their setup is heavier: they pay between
//! a pool of `--wallets` wallets (10,000 by default), created through the API and funded by
//! transfers, once per database.
//! - `many_wallets`: internal payments between random pairs of the pool, so the writes spread
//!   over many rows instead of one hot pair;
//! - `hot_wallet`: the pool pays one merchant wallet, the row every payment locks;
//! - `two_process` (Postgres only): a second `satchel serve` on the same database, the load
//!   split between the two; then every acknowledged payment must be in the books, the pool's
//!   total unchanged and each balance what the replies add up to, and the audit clean.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

/// The load generator shares the machine's cores with the server under test; the allocator the
/// server uses (see its `main.rs`) keeps its own CPU share down too.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug, Clone)]
#[command(about = "Closed-loop benchmark of a Satchel server it starts itself")]
struct Args {
    /// Databases to run on: sqlite, postgres or both.
    #[arg(long, default_value = "both")]
    db: String,
    /// Concurrency levels (connections).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Scenarios to run (`-` and `_` are the same: `many-wallets` is `many_wallets`).
    /// Not in the default list: many_wallets, hot_wallet, two_process (see the module docs).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "get_wallet,create_invoice,internal_payment,transfer,keysend,withdraw,list_1m"
    )]
    scenarios: Vec<String>,
    /// Time limit per run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Request limit per run (fast scenarios).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Request limit per run for scenarios that move real Lightning payments.
    #[arg(long, default_value_t = 400)]
    ln_requests: usize,
    /// History rows for list_1m.
    #[arg(long, default_value_t = 1_000_000)]
    history_rows: u64,
    /// Wallets in the pool that many_wallets, hot_wallet and two_process pay between (created
    /// through the API, funded by transfers, once per database).
    #[arg(long, default_value_t = 10_000)]
    wallets: usize,
    /// The satchel binary (default: next to this one).
    #[arg(long)]
    satchel: Option<PathBuf>,
    /// Postgres admin URL (a fresh database is created on it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// Lightning backend of the server under test (devnet: real LDK payments; scripted:
    /// simulation, which isolates Satchel's own cost). Lightning scenarios need devnet.
    #[arg(long, default_value = "devnet")]
    backend: String,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone)]
struct Row {
    db: String,
    scenario: String,
    concurrency: usize,
    ok: usize,
    errors: usize,
    secs: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    cpu_ms_per_req: f64,
    rss_mb: f64,
}

struct Server {
    child: Child,
    base: String,
    sak: String,
    db_url: String,
    bin: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Server CPU time (user + system) in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the ")" that closes the command name: state is field 3; utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Peak resident set size of the server, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `satchel serve`. The first server on a database creates the account and prints its
/// key; pass that key as `sak` to start another server on the same database.
async fn start_server(
    bin: &Path,
    db_url: &str,
    data_dir: &Path,
    backend: &str,
    sak: Option<&str>,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--database-url",
            db_url,
            "--payment-wait-secs",
            "60",
            "--backend",
            backend,
            // Metrics on, as by default, but on a free port.
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(k) = line.split("secret key (sak): ").nth(1) {
                let _ = tx.send(k.trim().to_owned());
            }
        }
    });
    let sak = match sak {
        Some(k) => k.to_owned(),
        None => rx
            .recv_timeout(Duration::from_secs(120))
            .context("server printed no sak")?,
    };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        if http.get(format!("{base}/v1/wallets")).send().await.is_ok() {
            return Ok(Server {
                child,
                base,
                sak,
                db_url: db_url.to_owned(),
                bin: bin.to_owned(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("server did not come up")
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(base: &str, key: &str) -> anyhow::Result<Client> {
        // One connection per client: each worker is one closed-loop connection.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Client {
            http,
            base: base.to_owned(),
            key: key.to_owned(),
        })
    }

    /// A setup request: the reply parsed as JSON.
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.json_reply(
            self.http.post(format!("{}{path}", self.base)).json(&body),
            path,
        )
        .await
    }

    /// A setup request: the reply parsed as JSON.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json_reply(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    async fn json_reply(&self, req: reqwest::RequestBuilder, path: &str) -> anyhow::Result<Value> {
        let r = req.header("X-Api-Key", &self.key).send().await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }

    /// A measured request: the whole body is read (the reply is complete), but parsed only on
    /// an error status, so the load generator spends as little as it can of the cores it shares
    /// with the server.
    async fn hit(&self, req: reqwest::RequestBuilder, path: &str) -> anyhow::Result<()> {
        let r = req.header("X-Api-Key", &self.key).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// A measured POST whose reply is kept (unparsed) for checks after the run.
    async fn hit_post_keep(&self, path: &str, body: Value) -> anyhow::Result<Vec<u8>> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .header("X-Api-Key", &self.key)
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        if !status.is_success() {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(body.to_vec())
    }

    /// A measured GET (see [`Client::hit`]).
    async fn hit_get(&self, path: &str) -> anyhow::Result<()> {
        self.hit(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    /// A measured POST (see [`Client::hit`]).
    async fn hit_post(&self, path: &str, body: Value) -> anyhow::Result<()> {
        self.hit(
            self.http.post(format!("{}{path}", self.base)).json(&body),
            path,
        )
        .await
    }
}

#[derive(Clone)]
struct Wallet {
    id: String,
    waka: String,
}

async fn create_wallet(c: &Client, label: &str) -> anyhow::Result<Wallet> {
    let v = c.post("/v1/wallet", json!({ "user_label": label })).await?;
    Ok(Wallet {
        id: v["id"].as_str().context("id")?.to_owned(),
        waka: v["access_keys"]["Wallet Admin"][0]
            .as_str()
            .context("waka")?
            .to_owned(),
    })
}

/// Funds a wallet through the devnet (alice pays its invoice) and waits for the credit.
async fn fund(c: &Client, w: &Wallet, sats: u64) -> anyhow::Result<()> {
    let before = c.get(&format!("/v1/wallet/{}", w.waka)).await?["balance"]
        .as_i64()
        .unwrap_or(0);
    let inv = c
        .post(
            &format!("/v1/wallet/{}/invoice", w.waka),
            json!({ "num_satoshis": sats, "memo": "bench funding" }),
        )
        .await?;
    let pr = inv["payment_request"].as_str().context("pr")?;
    c.post(
        "/devnet/pay",
        json!({ "node": "alice", "payment_request": pr }),
    )
    .await?;
    for _ in 0..600 {
        let b = c.get(&format!("/v1/wallet/{}", w.waka)).await?["balance"]
            .as_i64()
            .unwrap_or(0);
        if b >= before + i64::try_from(sats)? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("funding of {} never arrived", w.id)
}

type Job = Arc<dyn Fn(Arc<Client>, usize) -> futures_like::BoxFut + Send + Sync>;

mod futures_like {
    /// A boxed request future.
    pub type BoxFut =
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;
}

/// One server's share of a run: `concurrency` connections to `base`, together sending `limit`
/// requests; request `i` (0-based within the lane) is `job(client, i)`.
struct Lane {
    base: String,
    concurrency: usize,
    limit: usize,
    job: Job,
}

/// What a run measured, over all its lanes.
struct Measured {
    ok: usize,
    errors: usize,
    secs: f64,
    /// Latencies of the successful requests, sorted (µs).
    lat: Vec<u64>,
    /// Server CPU (all `pids`) per request.
    cpu_ms: f64,
    /// The largest peak RSS among `pids`.
    rss_mb: f64,
}

/// Runs every lane closed-loop at once until each has sent its `limit` requests or `secs`
/// pass. CPU is summed over the server processes `pids`.
async fn run(key: &str, pids: &[u32], lanes: Vec<Lane>, secs: u64) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let ticks0: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for lane in lanes {
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..lane.concurrency {
            let client = Arc::new(Client::new(&lane.base, key)?);
            let next = next.clone();
            let job = lane.job.clone();
            let limit = lane.limit;
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                let mut first_error: Option<String> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= limit || Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    match job(client.clone(), i).await {
                        Ok(()) => {
                            lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (lat, errors, first_error)
            }));
        }
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e, fe) = h.await?;
        lat.extend(l);
        errors += e;
        if let Some(fe) = fe {
            eprintln!("    first error: {fe}");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let ticks1: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let ticks = ticks1.saturating_sub(ticks0) as f64;
    let ok = lat.len();
    let cpu_ms = if ok + errors > 0 {
        ticks * 1000.0 / clk_tck() / (ok + errors) as f64
    } else {
        0.0
    };
    lat.sort_unstable();
    let rss_mb = pids.iter().map(|&p| peak_rss_mb(p)).fold(0.0, f64::max);
    Ok(Measured {
        ok,
        errors,
        secs,
        lat,
        cpu_ms,
        rss_mb,
    })
}

fn pct(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx.min(sorted_us.len() - 1)] as f64 / 1000.0
}

/// Inserts `n` real transfers between `a` and `b` (alternating direction, 1 sat each, so both
/// balances are unchanged) straight into the database: full double-entry rows and WTXs, so the
/// audit stays exact. It exists only to give a wallet a million rows of history quickly.
async fn seed_history(db_url: &str, account: &str, a: &str, b: &str, n: u64) -> anyhow::Result<()> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let n = i64::try_from(n)?;
    let stmts: Vec<String> = if db_url.starts_with("postgres") {
        vec![
            "CREATE TEMP TABLE seed AS SELECT g, (SELECT COALESCE(MAX(id), 0) FROM ledger_txns) + g AS tid FROM generate_series(1, $N) g".into(),
            "INSERT INTO ledger_txns (id, kind, ref, created_at) SELECT tid, 'transfer', 'seed_' || g, $NOW FROM seed".into(),
            "INSERT INTO postings (txn_id, account, amount_msat) SELECT tid, '$A', CASE WHEN g % 2 = 1 THEN -1000 ELSE 1000 END FROM seed".into(),
            "INSERT INTO postings (txn_id, account, amount_msat) SELECT tid, '$B', CASE WHEN g % 2 = 1 THEN 1000 ELSE -1000 END FROM seed".into(),
            "INSERT INTO wtxs (id, wallet_id, account_id, created_at, amount_msat, wtx_type, user_label, lntx_id, pass_thru) SELECT 'wtx_seeda' || g, '$A', '$ACC', $NOW, CASE WHEN g % 2 = 1 THEN -1000 ELSE 1000 END, CASE WHEN g % 2 = 1 THEN 40 ELSE 30 END, 'seed', NULL, '{}' FROM seed ORDER BY g".into(),
            "INSERT INTO wtxs (id, wallet_id, account_id, created_at, amount_msat, wtx_type, user_label, lntx_id, pass_thru) SELECT 'wtx_seedb' || g, '$B', '$ACC', $NOW, CASE WHEN g % 2 = 1 THEN 1000 ELSE -1000 END, CASE WHEN g % 2 = 1 THEN 30 ELSE 40 END, 'seed', NULL, '{}' FROM seed ORDER BY g".into(),
            "SELECT setval(pg_get_serial_sequence('ledger_txns', 'id'), (SELECT MAX(id) FROM ledger_txns))".into(),
            "UPDATE wallets SET wtx_count = wtx_count + $N WHERE id IN ('$A', '$B')".into(),
            "ANALYZE".into(),
        ]
    } else {
        vec![
            "CREATE TEMP TABLE seed AS WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $N) SELECT g, (SELECT COALESCE(MAX(id), 0) FROM ledger_txns) + g AS tid FROM s".into(),
            "INSERT INTO ledger_txns (id, kind, ref, created_at) SELECT tid, 'transfer', 'seed_' || g, $NOW FROM seed".into(),
            "INSERT INTO postings (txn_id, account, amount_msat) SELECT tid, '$A', CASE WHEN g % 2 = 1 THEN -1000 ELSE 1000 END FROM seed".into(),
            "INSERT INTO postings (txn_id, account, amount_msat) SELECT tid, '$B', CASE WHEN g % 2 = 1 THEN 1000 ELSE -1000 END FROM seed".into(),
            "INSERT INTO wtxs (id, wallet_id, account_id, created_at, amount_msat, wtx_type, user_label, lntx_id, pass_thru) SELECT 'wtx_seeda' || g, '$A', '$ACC', $NOW, CASE WHEN g % 2 = 1 THEN -1000 ELSE 1000 END, CASE WHEN g % 2 = 1 THEN 40 ELSE 30 END, 'seed', NULL, '{}' FROM seed ORDER BY g".into(),
            "INSERT INTO wtxs (id, wallet_id, account_id, created_at, amount_msat, wtx_type, user_label, lntx_id, pass_thru) SELECT 'wtx_seedb' || g, '$B', '$ACC', $NOW, CASE WHEN g % 2 = 1 THEN 1000 ELSE -1000 END, CASE WHEN g % 2 = 1 THEN 30 ELSE 40 END, 'seed', NULL, '{}' FROM seed ORDER BY g".into(),
            "UPDATE wallets SET wtx_count = wtx_count + $N WHERE id IN ('$A', '$B')".into(),
            "ANALYZE".into(),
        ]
    };
    let fill = |s: &str| {
        s.replace("$NOW", &now.to_string())
            .replace("$N", &n.to_string())
            .replace("$ACC", account)
            .replace("$A", a)
            .replace("$B", b)
    };
    if db_url.starts_with("postgres") {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(db_url).await?;
        let mut tx = c.begin().await?;
        for s in &stmts {
            sqlx::query(sqlx::AssertSqlSafe(fill(s)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    } else {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(db_url).await?;
        sqlx::query("PRAGMA busy_timeout = 60000")
            .execute(&mut c)
            .await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await?;
        for s in &stmts {
            sqlx::query(sqlx::AssertSqlSafe(fill(s)))
                .execute(&mut c)
                .await?;
        }
        sqlx::query("COMMIT").execute(&mut c).await?;
    }
    Ok(())
}

async fn account_of(db_url: &str, wallet: &str) -> anyhow::Result<String> {
    use sqlx::{Connection, Row};
    let sql = "SELECT account_id FROM wallets WHERE id = $1";
    if db_url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(db_url).await?;
        Ok(sqlx::query(sql)
            .bind(wallet)
            .fetch_one(&mut c)
            .await?
            .try_get(0)?)
    } else {
        let mut c = sqlx::SqliteConnection::connect(db_url).await?;
        Ok(sqlx::query(sql)
            .bind(wallet)
            .fetch_one(&mut c)
            .await?
            .try_get(0)?)
    }
}

async fn fresh_pg(admin: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("satchel_bench_{}", std::process::id());
    let mut c = sqlx::PgConnection::connect(admin)
        .await
        .context("connecting to Postgres")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    Ok(format!("{base}/{name}"))
}

/// Acknowledged two_process requests: index and reply body.
type Acked = Arc<std::sync::Mutex<Vec<(usize, Vec<u8>)>>>;

/// What a two_process run must find in the books afterwards.
struct TwoProcess {
    /// (payer, payee) pool indexes of each request.
    pairs: Vec<(usize, usize)>,
    /// Acknowledged requests: index and reply body.
    acked: Acked,
    /// The pool's balances (msat) before the run.
    before: Vec<i64>,
}

/// Runs `satchel audit`; its report, or an error if the books do not balance.
fn audit(bin: &Path, db_url: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(["audit", "--database-url", db_url])
        .env("RUST_LOG", "warn")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        bail!("audit failed on {db_url}: {text}");
    }
    Ok(text)
}

/// Benchmarks one database; lines for the report's notes go to `notes`.
async fn bench_db(
    args: &Args,
    bin: &Path,
    db: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let tmp = std::env::temp_dir().join(format!("satchel-bench-{}-{db}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let db_url = match db {
        "sqlite" => format!("sqlite://{}", tmp.join("satchel.db").display()),
        "postgres" => fresh_pg(&args.pg_url).await?,
        other => bail!("unknown db {other}"),
    };
    eprintln!("== {db}: starting server ({db_url})");
    let srv = start_server(bin, &db_url, &tmp, &args.backend, None).await?;
    let pid = srv.child.id();
    let admin = Client::new(&srv.base, &srv.sak)?;
    let a = create_wallet(&admin, "bench A").await?;
    let b = create_wallet(&admin, "bench B").await?;
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1);
    let fast_total = args.requests * args.concurrency.len();
    // Enough for every internal payment and transfer at 1 sat, plus the Lightning scenarios.
    let scenarios: Vec<String> = args.scenarios.iter().map(|s| canonical(s)).collect();
    let pooled = scenarios.iter().any(|s| pool_scenario(s));
    if pooled && args.wallets < 2 {
        bail!("--wallets must be at least 2");
    }
    let pool_each = pool_sats_each(args);
    let pool_total = if pooled {
        pool_each * u64::try_from(args.wallets)?
    } else {
        0
    };
    let needed = u64::try_from(2 * fast_total + 10 * args.ln_requests * args.concurrency.len())?
        + 10_000
        + pool_total;
    eprintln!("   funding wallet A with {needed} sats from alice");
    let mut left = needed;
    while left > 0 {
        let chunk = left.min(1_000_000);
        fund(&admin, &a, chunk).await?;
        left -= chunk;
    }
    let carol = admin.get("/devnet/info").await?["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["name"] == "carol"))
        .and_then(|x| x["pubkey"].as_str().map(str::to_owned))
        .context("carol")?;
    let mut rows = Vec::new();
    // The list_1m wallet, seeded once and measured at every concurrency: (list path, GET path).
    let mut history: Option<(String, String)> = None;
    // The pool of wallets (many_wallets, hot_wallet, two_process), made once.
    let mut pool: Option<Arc<Vec<Wallet>>> = None;
    // hot_wallet's merchant.
    let mut merchant: Option<Wallet> = None;
    // two_process's second server on the same database.
    let mut second: Option<Server> = None;
    for scenario in &scenarios {
        if scenario == "two_process" && db != "postgres" {
            eprintln!("   two_process: Postgres only, skipped on {db}");
            continue;
        }
        for &c in &args.concurrency {
            let pool = if pool_scenario(scenario) {
                if pool.is_none() {
                    eprintln!("   pool: {} wallets", args.wallets);
                    let made =
                        make_pool(&srv.base, &srv.sak, &a, args.wallets, pool_each, max_c).await?;
                    pool = Some(Arc::new(made));
                }
                pool.clone().context("pool")?
            } else {
                Arc::new(Vec::new())
            };
            let mut pids = vec![pid];
            // two_process: what each acknowledged request was, for the checks after the run.
            let mut two: Option<TwoProcess> = None;
            let lanes: Vec<Lane> = match scenario.as_str() {
                "many_wallets" => {
                    let n = args.requests;
                    let pairs: Vec<(usize, usize)> =
                        (0..n).map(|i| pair(i, pool.len(), c as u64)).collect();
                    eprintln!("   {scenario} c={c}: preparing {n} invoices of random payees");
                    let payees = pairs.iter().map(|&(_, to)| pool[to].waka.clone()).collect();
                    let invoices =
                        Arc::new(make_invoices_for(&srv.base, &srv.sak, payees, max_c).await?);
                    let paths: Arc<Vec<String>> = Arc::new(
                        pairs
                            .iter()
                            .map(|&(from, _)| format!("/v1/wallet/{}/withdraw", pool[from].waka))
                            .collect(),
                    );
                    vec![Lane {
                        base: srv.base.clone(),
                        concurrency: c,
                        limit: n,
                        job: Arc::new(move |cl: Arc<Client>, i| {
                            let p = paths[i].clone();
                            let pr = invoices[i].clone();
                            Box::pin(async move {
                                cl.hit_post(&p, json!({"payment_request": pr})).await
                            })
                        }),
                    }]
                }
                "hot_wallet" => {
                    let m = match &merchant {
                        Some(m) => m.clone(),
                        None => merchant
                            .insert(create_wallet(&admin, "merchant").await?)
                            .clone(),
                    };
                    let n = args.requests;
                    eprintln!("   {scenario} c={c}: preparing {n} merchant invoices");
                    let invoices = Arc::new(
                        make_invoices_for(&srv.base, &srv.sak, vec![m.waka.clone(); n], max_c)
                            .await?,
                    );
                    // Payers take turns, so each pays about n / wallets times.
                    let paths: Arc<Vec<String>> = Arc::new(
                        pool.iter()
                            .map(|w| format!("/v1/wallet/{}/withdraw", w.waka))
                            .collect(),
                    );
                    vec![Lane {
                        base: srv.base.clone(),
                        concurrency: c,
                        limit: n,
                        job: Arc::new(move |cl: Arc<Client>, i| {
                            let p = paths[i % paths.len()].clone();
                            let pr = invoices[i].clone();
                            Box::pin(async move {
                                cl.hit_post(&p, json!({"payment_request": pr})).await
                            })
                        }),
                    }]
                }
                "two_process" => {
                    if second.is_none() {
                        eprintln!("   {scenario}: starting a second server on {db_url}");
                        let dir = tmp.join("second");
                        std::fs::create_dir_all(&dir)?;
                        second = Some(
                            start_server(bin, &db_url, &dir, &args.backend, Some(&srv.sak)).await?,
                        );
                    }
                    let other = second.as_ref().context("second server")?;
                    pids.push(other.child.id());
                    let n = args.requests;
                    // Connections and requests split between the two servers in proportion.
                    let c1 = c.div_ceil(2);
                    let n1 = n * c1 / c.max(1);
                    let pairs: Vec<(usize, usize)> = (0..n)
                        .map(|i| pair(i, pool.len(), (c as u64) | 1 << 20))
                        .collect();
                    eprintln!(
                        "   {scenario} c={c}: preparing {n} invoices, each on the server that pays it"
                    );
                    let payee_keys = |r: std::ops::Range<usize>| -> Vec<String> {
                        pairs[r]
                            .iter()
                            .map(|&(_, to)| pool[to].waka.clone())
                            .collect()
                    };
                    let mut invoices =
                        make_invoices_for(&srv.base, &srv.sak, payee_keys(0..n1), max_c).await?;
                    invoices.extend(
                        make_invoices_for(&other.base, &srv.sak, payee_keys(n1..n), max_c).await?,
                    );
                    let invoices = Arc::new(invoices);
                    let paths: Arc<Vec<String>> = Arc::new(
                        pairs
                            .iter()
                            .map(|&(from, _)| format!("/v1/wallet/{}/withdraw", pool[from].waka))
                            .collect(),
                    );
                    let acked = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
                    let before = pool_balances(&db_url, &pool).await?;
                    let lane = |base: &str, conns: usize, offset: usize, limit: usize| {
                        let (paths, invoices, acked) =
                            (paths.clone(), invoices.clone(), acked.clone());
                        Lane {
                            base: base.to_owned(),
                            concurrency: conns,
                            limit,
                            job: Arc::new(move |cl: Arc<Client>, i| {
                                let i = offset + i;
                                let p = paths[i].clone();
                                let pr = invoices[i].clone();
                                let acked = acked.clone();
                                Box::pin(async move {
                                    let body = cl
                                        .hit_post_keep(&p, json!({"payment_request": pr}))
                                        .await?;
                                    acked
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .push((i, body));
                                    anyhow::Ok(())
                                })
                            }),
                        }
                    };
                    let lanes = vec![
                        lane(&srv.base, c1, 0, n1),
                        lane(&other.base, c - c1, n1, n - n1),
                    ];
                    two = Some(TwoProcess {
                        pairs,
                        acked,
                        before,
                    });
                    lanes
                }
                _ => {
                    let (limit, job): (usize, Job) = match scenario.as_str() {
                        "get_wallet" => {
                            let p = format!("/v1/wallet/{}", a.waka);
                            (
                                args.requests,
                                Arc::new(move |cl: Arc<Client>, _| {
                                    let p = p.clone();
                                    Box::pin(async move { cl.hit_get(&p).await })
                                }),
                            )
                        }
                        "create_invoice" => {
                            let p = format!("/v1/wallet/{}/invoice", b.waka);
                            (
                                args.requests,
                                Arc::new(move |cl: Arc<Client>, _| {
                                    let p = p.clone();
                                    Box::pin(async move {
                                        cl.hit_post(&p, json!({"num_satoshis": 1, "memo": "bench"}))
                                            .await
                                    })
                                }),
                            )
                        }
                        "transfer" => {
                            let p = format!("/v1/wallet/{}/transfer", a.waka);
                            let dest = b.id.clone();
                            (
                                args.requests,
                                Arc::new(move |cl: Arc<Client>, _| {
                                    let p = p.clone();
                                    let d = dest.clone();
                                    Box::pin(async move {
                                        cl.hit_post(
                                            &p,
                                            json!({"dest_wallet_id": d, "num_satoshis": 1}),
                                        )
                                        .await
                                    })
                                }),
                            )
                        }
                        "internal_payment" => {
                            // Invoices of B are made before the clock starts; the run times A paying them.
                            let n = args.requests.min(c.max(1) * 2000);
                            eprintln!("   {scenario} c={c}: preparing {n} invoices");
                            let invoices =
                                Arc::new(make_invoices(&srv.base, &srv.sak, &b, n, max_c).await?);
                            let p = format!("/v1/wallet/{}/withdraw", a.waka);
                            (
                                n,
                                Arc::new(move |cl: Arc<Client>, i| {
                                    let p = p.clone();
                                    let pr = invoices[i].clone();
                                    Box::pin(async move {
                                        cl.hit_post(&p, json!({"payment_request": pr})).await
                                    })
                                }),
                            )
                        }
                        "keysend" => {
                            let p = format!("/v1/wallet/{}/keysend", a.waka);
                            let dest = carol.clone();
                            (
                                args.ln_requests,
                                Arc::new(move |cl: Arc<Client>, _| {
                                    let p = p.clone();
                                    let d = dest.clone();
                                    Box::pin(async move {
                                        cl.hit_post(&p, json!({"dest_pubkey": d, "num_satoshis": 1, "fee_limit_msat": 2000})).await
                                    })
                                }),
                            )
                        }
                        "withdraw" => {
                            let n = args.ln_requests;
                            eprintln!("   {scenario} c={c}: preparing {n} carol invoices");
                            let mut prs = Vec::with_capacity(n);
                            for _ in 0..n {
                                let v = admin
                                    .post(
                                        "/devnet/invoice",
                                        json!({"node": "carol", "sats": 1, "memo": "bench"}),
                                    )
                                    .await?;
                                prs.push(v["payment_request"].as_str().context("pr")?.to_owned());
                            }
                            let prs = Arc::new(prs);
                            let p = format!("/v1/wallet/{}/withdraw", a.waka);
                            (
                                n,
                                Arc::new(move |cl: Arc<Client>, i| {
                                    let p = p.clone();
                                    let pr = prs[i].clone();
                                    Box::pin(async move {
                                        cl.hit_post(
                                            &p,
                                            json!({"payment_request": pr, "fee_limit_msat": 2000}),
                                        )
                                        .await
                                    })
                                }),
                            )
                        }
                        "list_1m" => {
                            let (pl, pw) = match &history {
                                Some(paths) => paths.clone(),
                                None => {
                                    let h = create_wallet(&admin, "history").await?;
                                    let sink = create_wallet(&admin, "history sink").await?;
                                    eprintln!(
                                        "   {scenario}: seeding {} history rows",
                                        args.history_rows
                                    );
                                    let acct = account_of(&db_url, &h.id).await?;
                                    let t = Instant::now();
                                    seed_history(
                                        &db_url,
                                        &acct,
                                        &h.id,
                                        &sink.id,
                                        args.history_rows,
                                    )
                                    .await?;
                                    eprintln!("   seeded in {:.1}s", t.elapsed().as_secs_f64());
                                    let paths = (
                                        format!("/v1/wallet/{}/transactions", h.waka),
                                        format!("/v1/wallet/{}", h.waka),
                                    );
                                    history.insert(paths).clone()
                                }
                            };
                            (
                                args.requests,
                                Arc::new(move |cl: Arc<Client>, i| {
                                    let p = if i % 2 == 0 { pl.clone() } else { pw.clone() };
                                    Box::pin(async move { cl.hit_get(&p).await })
                                }),
                            )
                        }
                        other => bail!("unknown scenario {other}"),
                    };
                    vec![Lane {
                        base: srv.base.clone(),
                        concurrency: c,
                        limit,
                        job,
                    }]
                }
            };
            let Measured {
                ok,
                errors,
                secs,
                lat,
                cpu_ms: cpu,
                rss_mb: rss,
            } = run(&srv.sak, &pids, lanes, args.secs).await?;
            if let Some(t) = two {
                let acked = std::mem::take(&mut *t.acked.lock().unwrap_or_else(|e| e.into_inner()));
                let checked =
                    verify_two_process(&db_url, &pool, &t.pairs, &acked, &t.before, errors).await?;
                let audit = audit(&srv.bin, &srv.db_url)?.replace('\n', "; ");
                eprintln!("   {scenario} c={c}: {checked}; {audit}");
                notes.push(format!("{db} {scenario} c={c}: {checked}; {audit}."));
            }
            let row = Row {
                db: db.to_owned(),
                scenario: scenario.clone(),
                concurrency: c,
                ok,
                errors,
                secs,
                p50_ms: pct(&lat, 0.50),
                p90_ms: pct(&lat, 0.90),
                p99_ms: pct(&lat, 0.99),
                cpu_ms_per_req: cpu,
                rss_mb: rss,
            };
            eprintln!(
                "   {:<17} c={:<3} {:>6} ok {:>4} err {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>5.2} ms/req  rss {:>5.0} MB",
                row.scenario,
                c,
                ok,
                errors,
                ok as f64 / secs,
                row.p50_ms,
                row.p99_ms,
                cpu,
                rss
            );
            rows.push(row);
        }
    }
    // The books must balance after all of it.
    let text = audit(&srv.bin, &srv.db_url)?;
    eprintln!("   {}", text.replace('\n', "\n   "));
    drop(second);
    drop(srv);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(rows)
}

/// Scenarios that pay between the wallets of the pool (`--wallets`).
fn pool_scenario(s: &str) -> bool {
    matches!(s, "many_wallets" | "hot_wallet" | "two_process")
}

/// A scenario's name as given (`many-wallets`) in its canonical form (`many_wallets`).
fn canonical(s: &str) -> String {
    s.replace('-', "_")
}

/// Sats each pool wallet is given: four times the payments it makes on average over all pool
/// runs (payers are drawn at random), plus a margin.
fn pool_sats_each(args: &Args) -> u64 {
    let runs = args
        .scenarios
        .iter()
        .filter(|s| pool_scenario(&canonical(s)))
        .count()
        * args.concurrency.len();
    let per_wallet = (args.requests * runs).div_ceil(args.wallets.max(1));
    u64::try_from(4 * per_wallet + 20).unwrap_or(u64::MAX)
}

/// SplitMix64: a fixed pseudo-random sequence, so a run's pairs are repeatable.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Request `i`'s (payer, payee) among `n >= 2` wallets: two different wallets, uniform.
fn pair(i: usize, n: usize, salt: u64) -> (usize, usize) {
    let n64 = n as u64;
    let seed = (i as u64).wrapping_mul(2).wrapping_add(salt << 40);
    let payee = (mix(seed) % n64) as usize;
    let mut payer = (mix(seed + 1) % (n64 - 1)) as usize;
    if payer >= payee {
        payer += 1;
    }
    (payer, payee)
}

/// `f(client, i)` for every `i` in `0..n`, on `conns` connections at once; results in `i` order.
async fn par_map<T, F, Fut>(
    base: &str,
    key: &str,
    n: usize,
    conns: usize,
    f: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Arc<Client>, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..conns.clamp(1, n.max(1)) {
        let c = Arc::new(Client::new(base, key)?);
        let (f, next) = (f.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                out.push((i, f(c.clone(), i).await?));
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.await??);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Creates the pool's `n` wallets through the API and gives each `sats` by a transfer from
/// `funder`, on `conns` connections at once.
async fn make_pool(
    base: &str,
    sak: &str,
    funder: &Wallet,
    n: usize,
    sats: u64,
    conns: usize,
) -> anyhow::Result<Vec<Wallet>> {
    let t = Instant::now();
    let pool = par_map(base, sak, n, conns, |c, i| async move {
        create_wallet(&c, &format!("pool {i}")).await
    })
    .await?;
    eprintln!(
        "   created {n} wallets in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let ids = Arc::new(pool.iter().map(|w| w.id.clone()).collect::<Vec<_>>());
    let path = format!("/v1/wallet/{}/transfer", funder.waka);
    par_map(base, sak, n, conns, move |c, i| {
        let (ids, path) = (ids.clone(), path.clone());
        async move {
            c.post(
                &path,
                json!({"dest_wallet_id": ids[i], "num_satoshis": sats}),
            )
            .await
            .map(|_| ())
        }
    })
    .await?;
    eprintln!(
        "   funded them with {sats} sats each in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(pool)
}

/// Invoices of 1 sat, the `i`-th on the wallet whose admin key is `payees[i]`, in that order.
async fn make_invoices_for(
    base: &str,
    sak: &str,
    payees: Vec<String>,
    conns: usize,
) -> anyhow::Result<Vec<String>> {
    let payees = Arc::new(payees);
    let n = payees.len();
    par_map(base, sak, n, conns, move |c, i| {
        let payees = payees.clone();
        async move {
            let v = c
                .post(
                    &format!("/v1/wallet/{}/invoice", payees[i]),
                    json!({"num_satoshis": 1, "memo": "bench"}),
                )
                .await?;
            anyhow::Ok(
                v["payment_request"]
                    .as_str()
                    .context("payment_request")?
                    .to_owned(),
            )
        }
    })
    .await
}

/// Every pool wallet's balance (msat), read from the database.
async fn pool_balances(db_url: &str, pool: &[Wallet]) -> anyhow::Result<Vec<i64>> {
    use sqlx::{Connection, Row};
    let ids: Vec<String> = pool.iter().map(|w| w.id.clone()).collect();
    let mut c = sqlx::PgConnection::connect(db_url).await?;
    let rows = sqlx::query("SELECT id, balance_msat FROM wallets WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut c)
        .await?;
    let mut by_id = std::collections::HashMap::new();
    for r in rows {
        by_id.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
    }
    pool.iter()
        .map(|w| by_id.get(&w.id).copied().context("pool wallet missing"))
        .collect()
}

/// After a two_process run: every acknowledged payment is in the books as its reply said, the
/// pool's total is unchanged, and (if no request failed, so every payment's fate is known)
/// each wallet's balance is exactly what the acknowledged payments make it.
async fn verify_two_process(
    db_url: &str,
    pool: &[Wallet],
    pairs: &[(usize, usize)],
    acked: &[(usize, Vec<u8>)],
    before: &[i64],
    errors: usize,
) -> anyhow::Result<String> {
    use sqlx::{Connection, Row};
    let mut wtx_ids = Vec::with_capacity(acked.len());
    for (i, body) in acked {
        let v: Value = serde_json::from_slice(body).context("reply is not JSON")?;
        let (payer, _) = pairs[*i];
        if v["wal"]["id"].as_str() != Some(pool[payer].id.as_str()) {
            bail!("reply {i} names another wallet: {v}");
        }
        wtx_ids.push(v["id"].as_str().context("reply without id")?.to_owned());
    }
    let mut c = sqlx::PgConnection::connect(db_url).await?;
    let rows = sqlx::query("SELECT id, wallet_id, amount_msat FROM wtxs WHERE id = ANY($1)")
        .bind(&wtx_ids)
        .fetch_all(&mut c)
        .await?;
    let mut found = std::collections::HashMap::new();
    for r in rows {
        found.insert(
            r.try_get::<String, _>(0)?,
            (r.try_get::<String, _>(1)?, r.try_get::<i64, _>(2)?),
        );
    }
    let mut missing = 0usize;
    for ((i, _), id) in acked.iter().zip(&wtx_ids) {
        let (payer, _) = pairs[*i];
        match found.get(id) {
            Some((w, amount)) if *w == pool[payer].id && *amount == -1000 => {}
            _ => missing += 1,
        }
    }
    let after = pool_balances(db_url, pool).await?;
    let (sum_before, sum_after): (i64, i64) = (before.iter().sum(), after.iter().sum());
    let mut expected = before.to_vec();
    for (i, _) in acked {
        let (payer, payee) = pairs[*i];
        expected[payer] -= 1000;
        expected[payee] += 1000;
    }
    let off = expected.iter().zip(&after).filter(|(e, a)| e != a).count();
    if missing > 0 || sum_before != sum_after || (errors == 0 && off > 0) {
        bail!(
            "two_process lost or changed money: {missing} of {} acknowledged payments missing, pool total {sum_before} -> {sum_after} msat, {off} wallets off the model",
            acked.len()
        );
    }
    Ok(if errors == 0 {
        format!(
            "{} acknowledged payments all in the books; pool total unchanged ({sum_after} msat); all {} balances as the model",
            acked.len(),
            pool.len()
        )
    } else {
        format!(
            "{} acknowledged payments all in the books; pool total unchanged ({sum_after} msat); {errors} failed requests, so balances checked only in total",
            acked.len()
        )
    })
}

async fn make_invoices(
    base: &str,
    sak: &str,
    w: &Wallet,
    n: usize,
    conns: usize,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..conns.max(1) {
        let c = Client::new(base, sak)?;
        let next = next.clone();
        let p = format!("/v1/wallet/{}/invoice", w.waka);
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let v = c
                    .post(&p, json!({"num_satoshis": 1, "memo": "bench"}))
                    .await?;
                out.push(v["payment_request"].as_str().unwrap_or_default().to_owned());
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.await??);
    }
    Ok(all)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores ({cpu}), {mem:.0} GiB RAM, load generator on the same machine")
}

fn report(args: &Args, rows: &[Row], notes: &[String]) -> String {
    let cmd: Vec<String> = std::env::args().collect();
    let mut s = String::new();
    s.push_str("# Satchel benchmarks\n\n");
    s.push_str("Written by `satchel-bench` (crates/bench). Closed loop: each connection sends its next request as soon as the previous one answers. ");
    s.push_str("Each run is bounded by a request count and a time limit. The server is a separate `satchel serve` process (release build, devnet backend) on a fresh database; ");
    s.push_str("server CPU is its user+system time from /proc divided by the requests, RSS its peak resident set. Durability: SQLite group commit, every reply after an `fdatasync` of the WAL covering it (see ARCHITECTURE.md); Postgres default `fsync=on`.\n\n");
    s.push_str(&format!("- Command: `{}`\n", cmd.join(" ")));
    s.push_str(&format!("- Machine: {}\n", machine()));
    s.push_str(&format!("- Backend: {}\n", args.backend));
    s.push_str(&format!("- Limits: {} s or {} requests per run ({} for Lightning scenarios); history rows for list_1m: {}\n\n", args.secs, args.requests, args.ln_requests, args.history_rows));
    s.push_str("| db | scenario | conc. | ok | errors | req/s | p50 ms | p90 ms | p99 ms | server CPU ms/req | peak RSS MB |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {:.0} |\n",
            r.db,
            r.scenario,
            r.concurrency,
            r.ok,
            r.errors,
            r.ok as f64 / r.secs,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.cpu_ms_per_req,
            r.rss_mb
        ));
    }
    s.push_str("\nScenarios: `get_wallet` GET /v1/wallet/:key; `create_invoice` POST invoice; `internal_payment` wallet A pays wallet B's invoice (invoices made before the clock starts); ");
    s.push_str("`transfer` A→B 1 sat; `keysend` 1 sat to carol via hub (real LDK payments); `withdraw` A pays carol's invoices via hub; ");
    s.push_str("`list_1m` alternates GET /v1/wallet/:key and the first page of its transactions on a wallet with that many rows of history; ");
    s.push_str(&format!("`many_wallets`: internal payments of 1 sat between random pairs of {} wallets (the payee's invoices made before the clock starts); ", args.wallets));
    s.push_str(
        "`hot_wallet`: the same wallets, taking turns, pay one merchant wallet's invoices; ",
    );
    s.push_str("`two_process` (Postgres only): many_wallets' load split over two `satchel serve` processes on one database (connections and requests in halves, each paying invoices its own process issued); req/s is the combined rate, CPU both processes', RSS the larger one; afterwards every acknowledged payment must be in the books, the pool's total unchanged and each balance as a model of the replies says. ");
    s.push_str("Every run ends with `satchel audit`, which was clean.\n");
    for n in notes {
        s.push_str(&format!("\n- {n}"));
    }
    if !notes.is_empty() {
        s.push('\n');
    }
    s
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.satchel {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("satchel"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p satchel) or pass --satchel",
            bin.display()
        );
    }
    let dbs: Vec<&str> = match args.db.as_str() {
        "both" => vec!["sqlite", "postgres"],
        one => vec![one],
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for db in dbs {
        rows.extend(bench_db(&args, &bin, db, &mut notes).await?);
    }
    let text = report(&args, &rows, &notes);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &text)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random pairs are two different wallets of the pool, and every wallet is drawn both as
    /// payer and as payee (so many_wallets really spreads its writes).
    #[test]
    fn pairs_are_distinct_and_cover_the_pool() {
        let n = 50;
        let mut payers = vec![0usize; n];
        let mut payees = vec![0usize; n];
        for i in 0..20_000 {
            let (from, to) = pair(i, n, 64);
            assert!(from < n && to < n);
            assert_ne!(from, to);
            payers[from] += 1;
            payees[to] += 1;
        }
        assert!(payers.iter().all(|&k| k > 0));
        assert!(payees.iter().all(|&k| k > 0));
        // Another salt, another sequence: each concurrency level pays other pairs.
        let differs = (0..100)
            .filter(|&i| pair(i, n, 64) != pair(i, n, 16))
            .count();
        assert!(differs > 50);
    }

    #[test]
    fn scenario_names_take_either_separator() {
        assert_eq!(canonical("many-wallets"), "many_wallets");
        assert!(pool_scenario(&canonical("two-process")));
        assert!(!pool_scenario(&canonical("internal_payment")));
    }
}
