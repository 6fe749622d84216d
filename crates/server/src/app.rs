//! Wiring: the one place that names concrete backends. Used by `satchel serve` and by the
//! integration tests (which start the real server on a random port).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use satchel_lightning::{DevnetControl, LightningBackend};
use satchel_service::{ServiceConfig, Services};
use satchel_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Expired idempotency keys deleted per statement.
const IDEMPOTENCY_PURGE_BATCH: u64 = 1_000;
/// Pause between purges once no backlog is left.
const IDEMPOTENCY_PURGE_EVERY: Duration = Duration::from_secs(60);

/// What to start.
pub struct StartOptions {
    /// Database URL.
    pub database_url: String,
    /// Listen address (`127.0.0.1:0` for a random port).
    pub listen: String,
    /// Lightning backend.
    pub backend: Arc<dyn LightningBackend>,
    /// A development network to expose under `/devnet` (loopback only).
    pub devnet: Option<Arc<dyn DevnetControl>>,
    /// Service settings.
    pub service: ServiceConfig,
    /// Webhook delivery settings; `None` runs no dispatcher (events still queue in the outbox).
    pub webhooks: Option<satchel_api::webhooks::DispatcherConfig>,
}

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
    /// The services (tests drive workers directly).
    pub services: Services,
    /// The store.
    pub store: Store,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The operator cookie written at start, and its secret: removed at a clean shutdown.
    operator_cookie: Option<(std::path::PathBuf, String)>,
}

impl Running {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, drains in-flight ones, stops workers. Payments still pending
    /// stay recorded and resume on the next start.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        self.store.close().await;
        // Removed only if it still holds our secret (another server may have started since).
        if let Some((path, secret)) = &self.operator_cookie
            && std::fs::read_to_string(path).is_ok_and(|t| t.trim() == secret)
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(error = %e, path = %path.display(), "removing the operator cookie");
        }
    }

    /// Resolves when a shutdown was requested from elsewhere (never, for now).
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// The HTTP edge: the listener's connection limits and timeouts, and the API's auth throttle
/// and trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Connection limits and timeouts.
    pub listener: crate::listener::ListenerSettings,
    /// Auth throttle and trusted proxies.
    pub api: satchel_api::ApiOptions,
    /// Where to serve Prometheus `/metrics` (its own listener); `None`: no metrics.
    pub metrics_listen: Option<String>,
    /// How often the stored-state gauges are re-read (`None`: every 15 s).
    pub metrics_refresh: Option<Duration>,
    /// The operator API and console (`None`: not served).
    pub operator: Option<OperatorSettings>,
}

/// Where the operator secret goes and who may present it.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// The cookie file (`<data_dir>/.operator_cookie`), rewritten with a new secret at each start.
    pub cookie_path: std::path::PathBuf,
    /// Accept operator requests from non-loopback peers (`operator_allow_remote`).
    pub allow_remote: bool,
}

/// Name of the operator cookie file in the data dir.
pub const OPERATOR_COOKIE_FILE: &str = ".operator_cookie";

/// Writes a fresh 256-bit operator secret (hex) to `path`, mode 0600, replacing the old one.
fn write_operator_cookie(path: &std::path::Path) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let secret = hex::encode(bytes);
    satchel_lightning::fs_private::write_private(path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("writing the operator cookie {}", path.display()))?;
    Ok(secret)
}

/// Opens the database, starts the workers and the HTTP server (default HTTP limits).
pub async fn start(opts: StartOptions) -> anyhow::Result<Running> {
    start_with_http(opts, HttpOptions::default()).await
}

/// [`start`] with explicit HTTP limits.
pub async fn start_with_http(opts: StartOptions, http: HttpOptions) -> anyhow::Result<Running> {
    // Before anything records: metrics recorded with no recorder installed are dropped.
    let metrics_handle = match http.metrics_listen {
        Some(_) => Some(crate::metrics::install()?),
        None => None,
    };
    let store = Store::connect(&opts.database_url)
        .await
        .context("opening database")?;
    let services = Services::new(store.clone(), opts.backend.clone(), opts.service.clone())
        .await
        .map_err(|e| anyhow::anyhow!("starting services: {e}"))?;
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // Incoming payments.
    tasks.push(tokio::spawn(services.incoming.clone().run(rx.clone())));

    // Outgoing payments and jobs interrupted by the last stop resume now.
    let recovered = services
        .payments
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("recovery: {e}"))?;
    let resumed = services
        .jobs
        .resume()
        .await
        .map_err(|e| anyhow::anyhow!("jobs: {e}"))?;
    if recovered + resumed > 0 {
        tracing::info!(recovered, resumed, "resumed unfinished payments and jobs");
    }

    // Reconciler: keeps asking the node about unresolved payments (never releases on a timer).
    {
        let payments = services.payments.clone();
        let every = opts.service.reconcile_every;
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = rx.changed() => return,
                    _ = tokio::time::sleep(every) => {
                        if let Err(e) = payments.recover().await {
                            tracing::error!(error = %e, "reconciler pass failed");
                        }
                    }
                }
            }
        }));
    }

    // Idempotency keys past their retention: deleted in bounded batches, a batch at a time
    // until the backlog is gone, then once a minute.
    {
        let idem = services.idempotency.clone();
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let pause = match idem.purge_expired(IDEMPOTENCY_PURGE_BATCH).await {
                    Ok(n) if n >= IDEMPOTENCY_PURGE_BATCH => Duration::from_millis(100),
                    Ok(_) => IDEMPOTENCY_PURGE_EVERY,
                    Err(e) => {
                        tracing::error!(error = %e, "purging expired idempotency keys failed");
                        IDEMPOTENCY_PURGE_EVERY
                    }
                };
                tokio::select! {
                    _ = rx.changed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }));
    }

    // Webhook deliveries (the outbox is filled by the store, in the ledger's transactions).
    if let Some(cfg) = opts.webhooks.clone() {
        let dispatcher = satchel_api::webhooks::Dispatcher::new(services.outbox.clone(), cfg)
            .context("building the webhook HTTP client")?;
        tasks.push(tokio::spawn(dispatcher.run(rx.clone())));
    }

    let mut api_opts = http.api;
    let mut operator_cookie = None;
    if let Some(op) = &http.operator {
        let secret = write_operator_cookie(&op.cookie_path)?;
        api_opts.operator = Some(satchel_api::operator::OperatorAccess::new(
            &secret,
            op.allow_remote,
        ));
        if op.allow_remote {
            tracing::warn!("operator endpoints accept non-loopback peers (operator_allow_remote)");
        }
        operator_cookie = Some((op.cookie_path.clone(), secret));
    }
    // Live events (SSE): the hub publishes after commit; streams end on shutdown.
    let hub = satchel_api::events::EventHub::new(
        services.outbox.clone(),
        services.events.config(),
        Some(rx.clone()),
    );
    tasks.push(tokio::spawn(hub.clone().run()));
    tasks.push(tokio::spawn(crate::retention::run(
        services.events.clone(),
        rx.clone(),
    )));
    let mut app = satchel_api::app_with_events(services.clone(), api_opts, hub);
    if let Some(d) = &opts.devnet {
        app = app.merge(crate::devnet::router(d.clone(), services.ctx.node.clone()));
    }
    let mut metrics_addr = None;
    if let (Some(handle), Some(addr)) = (metrics_handle, &http.metrics_listen) {
        metrics::gauge!(
            crate::metrics::NODE_INFO,
            "backend" => opts.service.backend_name,
            "network" => services.ctx.network().name()
        )
        .set(1.0);
        let (bound, task) = crate::metrics::serve(addr, handle.clone(), rx.clone()).await?;
        tracing::info!(url = %format!("http://{bound}/metrics"), "serving Prometheus metrics");
        metrics_addr = Some(bound);
        tasks.push(task);
        tasks.push(tokio::spawn(crate::metrics::refresher(
            store.clone(),
            opts.backend.clone(),
            handle,
            http.metrics_refresh
                .unwrap_or(crate::metrics::DEFAULT_REFRESH),
            rx.clone(),
        )));
    }
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(crate::listener::serve(
        listener,
        app,
        http.listener,
        rx.clone(),
    )));
    Ok(Running {
        addr,
        metrics_addr,
        services,
        store,
        shutdown: tx,
        tasks,
        operator_cookie,
    })
}
