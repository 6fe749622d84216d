//! Prometheus metrics: the recorder, the `/metrics` listener and the gauge refresher.
//!
//! The crates record through the `metrics` facade (a no-op until a recorder is installed):
//! HTTP requests in `satchel_api::http::observe`, payment outcomes in `satchel_service`,
//! webhook deliveries in `satchel_api::webhooks`, group commits in `satchel_store::group_commit`.
//! This module installs the Prometheus recorder (once per process), serves its text on a listener
//! of its own (`metrics_listen`, never the API port: the figures are for the operator, and the API
//! port may face the internet), and refreshes the gauges that describe stored state
//! (liabilities, unclaimed, reserves in flight, the webhook queue) from one cheap query, and the
//! Lightning node's channels, balances, block height and sync lag from
//! [`NodeInfo::node_stats`] (where the backend has them),
//! ([`satchel_store::Store::gauges`]) every [`DEFAULT_REFRESH`]: counting in the write paths
//! would put work on the hot path and drift after a restart or next to another process sharing
//! the database; a periodic read is exact, costs one statement per period whatever the load,
//! and sees what other processes did.
//!
//! Labels are bounded: route templates, methods, status codes, backend names, outcomes. No
//! wallet id, key, hash or raw path is ever a label.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use satchel_lightning::{LightningBackend, NodeInfo};
use satchel_store::Store;
use tokio::sync::watch;

/// How often the stored-state gauges are refreshed by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(15);

/// Gauge names (the others live next to the code that records them).
pub const LIABILITIES_MSAT: &str = "satchel_ledger_liabilities_msat";
/// `sys:unclaimed`.
pub const UNCLAIMED_MSAT: &str = "satchel_ledger_unclaimed_msat";
/// `sys:in_flight`.
pub const IN_FLIGHT_MSAT: &str = "satchel_payments_in_flight_msat";
/// Payments holding a reserve.
pub const IN_FLIGHT: &str = "satchel_payments_in_flight";
/// Pending webhook deliveries.
pub const WEBHOOK_QUEUE_DEPTH: &str = "satchel_webhook_queue_depth";
/// Age of the oldest pending delivery's event.
pub const WEBHOOK_OLDEST_AGE: &str = "satchel_webhook_queue_oldest_age_seconds";
/// Unix time of the last successful refresh of the gauges above.
pub const GAUGES_REFRESHED: &str = "satchel_gauges_last_refresh_timestamp_seconds";
/// Failed refreshes.
pub const GAUGES_REFRESH_ERRORS: &str = "satchel_gauges_refresh_errors_total";
/// Constant 1, labelled with the backend and network.
pub const NODE_INFO: &str = "satchel_node_info";
/// Channels, by `state` (`active`, `inactive`).
pub const NODE_CHANNELS: &str = "satchel_node_channels";
/// Channel balances, by `side` (`local`: sendable, `remote`: receivable), msat.
pub const NODE_BALANCE_MSAT: &str = "satchel_node_channel_balance_msat";
/// Best block height the node knows.
pub const NODE_BLOCK_HEIGHT: &str = "satchel_node_block_height";
/// How far behind the chain the node is, in seconds.
pub const NODE_SYNC_LAG: &str = "satchel_node_sync_lag_seconds";
/// Failed reads of the node's figures.
pub const NODE_STATS_ERRORS: &str = "satchel_node_stats_errors_total";

/// How long one read of the node's figures may take before the refresher gives up on it.
const NODE_STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// Latency buckets (seconds): 0.5 ms … 60 s. Payments may wait up to `payment_wait_secs`.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Operations per group commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (first call) and returns its handle. Later calls (several
/// servers in one test process) share it.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .context("metric buckets")?
        .set_buckets_for_metric(
            Matcher::Full(satchel_store::group_commit::BATCH_SIZE.into()),
            BATCH_BUCKETS,
        )
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    Ok(handle)
}

fn describe() {
    use satchel_api::http::observe::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a request reaching the router to its response, by method and route template."
    );
    describe_counter!(
        satchel_service::PAYMENTS_TOTAL,
        "Outgoing payments that reached a final outcome in this process, by backend (internal: between wallets of this server) and outcome."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Outgoing payments holding a reserve (reserved, dispatched or unknown)."
    );
    describe_gauge!(
        IN_FLIGHT_MSAT,
        "Amount plus fee limit reserved for payments in flight (sys:in_flight), in millisatoshis."
    );
    describe_gauge!(
        LIABILITIES_MSAT,
        "Sum of all wallet balances: what the operator owes its users, in millisatoshis."
    );
    describe_gauge!(
        UNCLAIMED_MSAT,
        "Money received that belongs to no wallet (sys:unclaimed), in millisatoshis."
    );
    describe_gauge!(
        WEBHOOK_QUEUE_DEPTH,
        "Webhook deliveries neither delivered nor given up."
    );
    describe_gauge!(
        WEBHOOK_OLDEST_AGE,
        Unit::Seconds,
        "Age of the event of the oldest pending webhook delivery (0 when none is pending)."
    );
    describe_counter!(
        satchel_api::webhooks::DELIVERIES_TOTAL,
        "Webhook delivery attempts, by outcome (delivered, retry, dead)."
    );
    describe_histogram!(
        satchel_store::group_commit::BATCH_SIZE,
        "Operations covered by one SQLite group commit."
    );
    describe_histogram!(
        satchel_store::group_commit::FLUSH_SECONDS,
        Unit::Seconds,
        "Time from a SQLite group commit's COMMIT until its operations are answered (WAL flush included)."
    );
    describe_gauge!(
        GAUGES_REFRESHED,
        Unit::Seconds,
        "Unix time of the last refresh of the ledger and queue gauges."
    );
    describe_counter!(
        GAUGES_REFRESH_ERRORS,
        "Refreshes of the ledger and queue gauges that failed (the gauges keep their last values)."
    );
    describe_counter!(
        satchel_api::events::CATCH_UPS_TOTAL,
        "Times a live event stream fell behind and caught up from the outbox."
    );
    describe_gauge!(
        satchel_api::events::STREAMS_OPEN,
        "Live event streams (SSE) open in this process."
    );
    describe_gauge!(
        NODE_CHANNELS,
        "The Lightning node's channels, by state (active: usable now; inactive: the others). Absent when the backend cannot tell."
    );
    describe_gauge!(
        NODE_BALANCE_MSAT,
        "What the node can send (local) and receive (remote) over its channels, in millisatoshis."
    );
    describe_gauge!(
        NODE_BLOCK_HEIGHT,
        "Height of the best block the Lightning node knows."
    );
    describe_gauge!(
        NODE_SYNC_LAG,
        Unit::Seconds,
        "How far the Lightning node's view of the chain is behind (0: synced)."
    );
    describe_counter!(
        NODE_STATS_ERRORS,
        "Reads of the node's channel and chain figures that failed or timed out."
    );
    describe_gauge!(
        NODE_INFO,
        "Always 1; the labels name the Lightning backend and network."
    );
}

/// Reads the stored-state gauges once.
pub async fn refresh(store: &Store) {
    match store.gauges().await {
        Ok(g) => {
            #[allow(clippy::cast_precision_loss)]
            // gauges are floats; msat sums stay far below 2^53
            {
                metrics::gauge!(LIABILITIES_MSAT).set(g.liabilities_msat as f64);
                metrics::gauge!(UNCLAIMED_MSAT).set(g.unclaimed_msat as f64);
                metrics::gauge!(IN_FLIGHT_MSAT).set(g.in_flight_msat as f64);
                metrics::gauge!(IN_FLIGHT).set(g.in_flight_payments as f64);
                metrics::gauge!(WEBHOOK_QUEUE_DEPTH).set(g.webhook_pending as f64);
                let now = satchel_domain::now_secs();
                let age = g
                    .webhook_oldest_pending_at
                    .map_or(0, |t| now.saturating_sub(t).max(0));
                metrics::gauge!(WEBHOOK_OLDEST_AGE).set(age as f64);
                metrics::gauge!(GAUGES_REFRESHED).set(now as f64);
            }
        }
        Err(e) => {
            metrics::counter!(GAUGES_REFRESH_ERRORS).increment(1);
            tracing::warn!(error = %e, "refreshing the metrics gauges failed");
        }
    }
}

/// Reads the node's channel and chain figures once (bounded in time); figures the backend
/// does not have are left unset.
#[allow(clippy::cast_precision_loss)] // gauges are floats; these stay far below 2^53
pub async fn refresh_node(node: &dyn NodeInfo) {
    let stats = match tokio::time::timeout(NODE_STATS_TIMEOUT, node.node_stats()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics::counter!(NODE_STATS_ERRORS).increment(1);
            tracing::warn!(error = %e, "reading the node's figures for metrics failed");
            return;
        }
        Err(_) => {
            metrics::counter!(NODE_STATS_ERRORS).increment(1);
            tracing::warn!("reading the node's figures for metrics timed out");
            return;
        }
    };
    if let Some(v) = stats.channels_active {
        metrics::gauge!(NODE_CHANNELS, "state" => "active").set(v as f64);
    }
    if let Some(v) = stats.channels_inactive {
        metrics::gauge!(NODE_CHANNELS, "state" => "inactive").set(v as f64);
    }
    if let Some(v) = stats.local_balance_msat {
        metrics::gauge!(NODE_BALANCE_MSAT, "side" => "local").set(v as f64);
    }
    if let Some(v) = stats.remote_balance_msat {
        metrics::gauge!(NODE_BALANCE_MSAT, "side" => "remote").set(v as f64);
    }
    if let Some(v) = stats.block_height {
        metrics::gauge!(NODE_BLOCK_HEIGHT).set(v as f64);
    }
    if let Some(v) = stats.sync_lag_secs {
        metrics::gauge!(NODE_SYNC_LAG).set(v as f64);
    }
}

/// Refreshes the gauges every `every` (and runs the exporter's upkeep, which bounds the memory
/// its histograms hold) until `shutdown` flips.
pub async fn refresher(
    store: Store,
    node: Arc<dyn LightningBackend>,
    handle: PrometheusHandle,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        refresh(&store).await;
        refresh_node(&*node).await;
        handle.run_upkeep();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The `/metrics` router (anything else is 404).
pub fn router(handle: PrometheusHandle) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Binds `addr` and serves `/metrics` until `shutdown` flips; returns the bound address.
pub async fn serve(
    addr: &str,
    handle: PrometheusHandle,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router(handle))
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    Ok((bound, task))
}
