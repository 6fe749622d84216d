//! Where the node learns about the chain: a bitcoind JSON-RPC server or an Esplora server,
//! through LDK's own clients.
//!
//! * **bitcoind RPC** (`lightning-block-sync`): at start, `init::synchronize_listeners` brings
//!   the channel manager and every channel monitor from the block each was persisted at to the
//!   source's tip (disconnecting blocks a reorg removed); then an [`SpvClient`] polls the tip
//!   every `chain_poll_interval` and connects or disconnects whole blocks (`Listen`). Headers
//!   are checked (proof of work, links, BIP141 witness commitment) by the poller.
//! * **Esplora** (`lightning-transaction-sync`): the [`EsploraSyncClient`] is the chain
//!   monitor's `Filter` (LDK registers the transactions and outputs it cares about), and a loop
//!   calls `sync` for the channel manager and the chain monitor (`Confirm`) every
//!   `chain_poll_interval`; it notices reorgs of the confirmed transactions itself.
//!
//! Both feed the fee estimator ([`crate::fees`]) and the broadcaster
//! ([`crate::broadcast`]) from the same connection settings.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bitcoin::{BlockHash, Transaction};
use lightning::chain::channelmonitor::ChannelMonitor;
use lightning::chain::{BestBlock, Confirm, Filter, Listen};
use lightning::sign::InMemorySigner;
use lightning_block_sync::http::{HttpEndpoint, JsonResponse};
use lightning_block_sync::init::{synchronize_listeners, validate_best_block_header};
use lightning_block_sync::poll::{ChainPoller, ValidatedBlockHeader};
use lightning_block_sync::rpc::{RpcClient, RpcError};
use lightning_block_sync::{SpvClient, UnboundedCache};
use lightning_transaction_sync::EsploraSyncClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::LdkError;
use crate::broadcast::ChainBroadcaster;
use crate::fees::{ChainFeeEstimator, blocks_targets, sat_per_vb_to_sat_per_kw};
use crate::node::NETWORK;
use crate::support::{ChainMonitorT, ChannelManagerT, Logr, SweeperT};

/// Where an [`crate::LdkNode`] gets its chain from.
#[derive(Clone, PartialEq, Eq)]
pub enum ChainSource {
    /// A bitcoind (or compatible) JSON-RPC server over plain HTTP, e.g.
    /// `http://127.0.0.1:18443/`, with basic-auth credentials (`rpcuser`/`rpcpassword`, or the
    /// two halves of the `.cookie` file).
    BitcoindRpc {
        /// `http://host:port[/path]`.
        url: String,
        /// RPC user.
        user: String,
        /// RPC password.
        password: String,
    },
    /// An Esplora REST server, e.g. `http://127.0.0.1:3002` or `https://blockstream.info/api`.
    Esplora {
        /// Base URL (without a trailing `/`).
        url: String,
    },
}

impl std::fmt::Debug for ChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainSource::BitcoindRpc { url, user, .. } => f
                .debug_struct("BitcoindRpc")
                .field("url", url)
                .field("user", user)
                .finish_non_exhaustive(),
            ChainSource::Esplora { url } => f.debug_struct("Esplora").field("url", url).finish(),
        }
    }
}

pub(crate) type EsploraSync = EsploraSyncClient<Logr>;

/// A connected chain source. Cheap to clone.
#[derive(Clone)]
pub(crate) enum ChainClient {
    Rpc(Arc<RpcClient>),
    Esplora(Arc<EsploraSync>),
}

/// A refused broadcast.
pub(crate) struct BroadcastError {
    pub(crate) message: String,
    /// The chain has it already (in a block or in the mempool).
    pub(crate) already_known: bool,
}

/// A JSON-RPC result as plain JSON (`RpcClient::call_method` converts into any type that a
/// `JsonResponse` converts into).
struct RpcValue(serde_json::Value);

impl TryFrom<JsonResponse> for RpcValue {
    type Error = std::io::Error;
    fn try_from(r: JsonResponse) -> std::io::Result<RpcValue> {
        Ok(RpcValue(r.0))
    }
}

/// bitcoind's "already known" answers to `sendrawtransaction`: -27 (already in the chain) and
/// the mempool's duplicate rejection.
fn rpc_already_known(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<RpcError>())
        .is_some_and(|r| r.code == -27 || r.message.contains("txn-already-in-mempool"))
}

fn source_err(what: &str, e: impl std::fmt::Display) -> LdkError {
    LdkError::Chain(format!("{what}: {e}"))
}

/// Splits `http://host:port/path` for `lightning-block-sync`'s HTTP client (plain HTTP only).
fn rpc_endpoint(url: &str) -> Result<HttpEndpoint, LdkError> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(LdkError::Chain(format!(
                "bitcoind RPC URL {url:?}: scheme {scheme:?} is not supported (plain http only)"
            )));
        }
        None => url,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .map_err(|_| LdkError::Chain(format!("bitcoind RPC URL {url:?}: bad port")))?;
            (h, port)
        }
        // bitcoind's regtest default.
        None => (authority, 18443),
    };
    if host.is_empty() {
        return Err(LdkError::Chain(format!(
            "bitcoind RPC URL {url:?}: no host"
        )));
    }
    Ok(HttpEndpoint::for_host(host.to_owned())
        .with_port(port)
        .with_path(path.to_owned()))
}

fn base64_credentials(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

impl ChainClient {
    pub(crate) fn connect(source: &ChainSource, logger: Logr) -> Result<ChainClient, LdkError> {
        match source {
            ChainSource::BitcoindRpc {
                url,
                user,
                password,
            } => Ok(ChainClient::Rpc(Arc::new(RpcClient::new(
                &base64_credentials(user, password),
                rpc_endpoint(url)?,
            )))),
            ChainSource::Esplora { url } => {
                // The wallet's HTTP client (TLS on the workspace's provider): esplora-client's own
                // builder would ask rustls for a process-wide default provider, which is unset.
                let http = crate::wallet::esplora_http_client()
                    .map_err(|e| source_err("Esplora client", e))?;
                let client = esplora_client::AsyncClient::from_client(
                    url.trim_end_matches('/').to_owned(),
                    http,
                );
                Ok(ChainClient::Esplora(Arc::new(
                    EsploraSyncClient::from_client(client, logger),
                )))
            }
        }
    }

    /// What the chain monitor registers its transactions and outputs with (Esplora only: a
    /// block source delivers whole blocks).
    pub(crate) fn filter(&self) -> Option<Arc<dyn Filter + Send + Sync>> {
        match self {
            ChainClient::Rpc(_) => None,
            ChainClient::Esplora(s) => Some(Arc::clone(s) as Arc<dyn Filter + Send + Sync>),
        }
    }

    /// The source's best block.
    pub(crate) async fn tip(&self) -> Result<BestBlock, LdkError> {
        match self {
            ChainClient::Rpc(rpc) => {
                let h = validate_best_block_header(&**rpc)
                    .await
                    .map_err(|e| source_err("bitcoind tip", e.into_inner()))?;
                Ok(BestBlock::new(h.header.block_hash(), h.height))
            }
            ChainClient::Esplora(s) => {
                let height = s
                    .client()
                    .get_height()
                    .await
                    .map_err(|e| source_err("Esplora tip height", e))?;
                let hash = s
                    .client()
                    .get_block_hash(height)
                    .await
                    .map_err(|e| source_err("Esplora tip hash", e))?;
                Ok(BestBlock::new(hash, height))
            }
        }
    }

    /// The source's fee estimates, sat/kw by confirmation target in blocks; a target the source
    /// has no estimate for is left out.
    pub(crate) async fn fee_rates(&self) -> Result<HashMap<u16, u32>, LdkError> {
        let mut out = HashMap::new();
        match self {
            ChainClient::Rpc(rpc) => {
                for blocks in blocks_targets() {
                    let RpcValue(v) = rpc
                        .call_method::<RpcValue>("estimatesmartfee", &[serde_json::json!(blocks)])
                        .await
                        .map_err(|e| source_err("estimatesmartfee", e))?;
                    // BTC per 1000 vB; absent (with "errors") when bitcoind has no estimate.
                    if let Some(btc_per_kvb) = v.get("feerate").and_then(|f| f.as_f64())
                        && let Some(kw) = sat_per_vb_to_sat_per_kw(btc_per_kvb * 100_000.0)
                    {
                        out.insert(blocks, kw);
                    }
                }
            }
            ChainClient::Esplora(s) => {
                let estimates = s
                    .client()
                    .get_fee_estimates()
                    .await
                    .map_err(|e| source_err("Esplora fee estimates", e))?;
                for blocks in blocks_targets() {
                    // Esplora's keys are "confirm within k blocks": the largest k ≤ our target.
                    let best = estimates
                        .iter()
                        .filter(|(k, _)| **k <= blocks)
                        .max_by_key(|(k, _)| **k)
                        .map(|(_, rate)| *rate);
                    if let Some(kw) = best.and_then(sat_per_vb_to_sat_per_kw) {
                        out.insert(blocks, kw);
                    }
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn broadcast(&self, tx: &Transaction) -> Result<(), BroadcastError> {
        match self {
            ChainClient::Rpc(rpc) => {
                let hex = bitcoin::consensus::encode::serialize_hex(tx);
                rpc.call_method::<RpcValue>("sendrawtransaction", &[serde_json::json!(hex)])
                    .await
                    .map(|_| ())
                    .map_err(|e| BroadcastError {
                        already_known: rpc_already_known(&e),
                        message: e.to_string(),
                    })
            }
            ChainClient::Esplora(s) => s.client().broadcast(tx).await.map_err(|e| {
                let message = e.to_string();
                BroadcastError {
                    already_known: message.contains("already")
                        || message.contains("-27")
                        || message.contains("txn-already-in-mempool"),
                    message,
                }
            }),
        }
    }
}

/// Brings the channel manager and the channel monitors (each paired with the block it was
/// persisted at) to the tip of a bitcoind source. Returns the tip to start polling from and
/// the monitors, ready to be loaded into the chain monitor.
pub(crate) async fn synchronize_rpc(
    rpc: &RpcClient,
    cache: &mut UnboundedCache,
    // The channel manager and the sweeper, each with the block it is at.
    mut listeners: Vec<(BlockHash, &(dyn Listen + Send + Sync))>,
    monitors: Vec<(BlockHash, ChannelMonitor<InMemorySigner>)>,
    broadcaster: &Arc<ChainBroadcaster>,
    fee_estimator: &Arc<ChainFeeEstimator>,
    logger: &Logr,
) -> Result<(ValidatedBlockHeader, Vec<ChannelMonitor<InMemorySigner>>), LdkError> {
    let wrapped: Vec<(BlockHash, MonitorListener)> = monitors
        .into_iter()
        .map(|(hash, m)| {
            (
                hash,
                (
                    m,
                    Arc::clone(broadcaster),
                    Arc::clone(fee_estimator),
                    Arc::clone(logger),
                ),
            )
        })
        .collect();
    for (hash, l) in &wrapped {
        listeners.push((*hash, l as &(dyn Listen + Send + Sync)));
    }
    let tip = synchronize_listeners(rpc, NETWORK, cache, listeners)
        .await
        .map_err(|e| {
            source_err(
                "catching up with the chain (is the chain the one this node was on?)",
                e.into_inner(),
            )
        })?;
    Ok((tip, wrapped.into_iter().map(|(_, l)| l.0).collect()))
}

type MonitorListener = (
    ChannelMonitor<InMemorySigner>,
    Arc<ChainBroadcaster>,
    Arc<ChainFeeEstimator>,
    Logr,
);

/// What the sync and fee tasks need.
/// Everything the block poller feeds, in order: monitors first (they may broadcast on a
/// block), then the manager, then the sweeper.
struct Listeners {
    chain_monitor: Arc<ChainMonitorT>,
    channel_manager: Arc<ChannelManagerT>,
    sweeper: Option<Arc<SweeperT>>,
}

impl Listen for Listeners {
    fn filtered_block_connected(
        &self,
        header: &bitcoin::block::Header,
        txdata: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        self.chain_monitor
            .filtered_block_connected(header, txdata, height);
        self.channel_manager
            .filtered_block_connected(header, txdata, height);
        if let Some(s) = &self.sweeper {
            s.filtered_block_connected(header, txdata, height);
        }
    }

    fn blocks_disconnected(&self, fork_point: BestBlock) {
        self.chain_monitor.blocks_disconnected(fork_point);
        self.channel_manager.blocks_disconnected(fork_point);
        if let Some(s) = &self.sweeper {
            s.blocks_disconnected(fork_point);
        }
    }
}

pub(crate) struct SyncParts {
    pub(crate) alias: String,
    pub(crate) client: ChainClient,
    pub(crate) channel_manager: Arc<ChannelManagerT>,
    pub(crate) chain_monitor: Arc<ChainMonitorT>,
    /// Follows the chain too (it waits for its sweeps to confirm), when the node has one.
    pub(crate) sweeper: Option<Arc<SweeperT>>,
    pub(crate) interval: Duration,
    /// Set after each successful round (the node's view equals the source's tip as of that
    /// round), cleared after a failed one.
    pub(crate) synced: Arc<AtomicBool>,
}

/// Spawns the chain sync loop. `rpc_start` (bitcoind only) is the tip the listeners are at and
/// the header cache `synchronize_rpc` filled.
pub(crate) fn spawn_sync(
    parts: SyncParts,
    rpc_start: Option<(ValidatedBlockHeader, UnboundedCache)>,
    mut stop_rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let SyncParts {
            alias,
            client,
            channel_manager,
            chain_monitor,
            sweeper,
            interval,
            synced,
        } = parts;
        let mut last_error: Option<String> = None;
        let mut report = |res: Result<(), String>| match res {
            Ok(()) => {
                if last_error.take().is_some() {
                    tracing::info!(node = %alias, "chain sync recovered");
                }
                synced.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                synced.store(false, Ordering::SeqCst);
                // Once per distinct error, not once per poll.
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(node = %alias, error = %e, "chain sync failed; retrying");
                    last_error = Some(e);
                }
            }
        };
        match (client, rpc_start) {
            (ChainClient::Rpc(rpc), Some((tip, mut cache))) => {
                let listener = Listeners {
                    chain_monitor: Arc::clone(&chain_monitor),
                    channel_manager: Arc::clone(&channel_manager),
                    sweeper: sweeper.clone(),
                };
                let poller = ChainPoller::new(Arc::clone(&rpc), NETWORK);
                let mut spv = SpvClient::new(tip, poller, &mut cache, &listener);
                loop {
                    report(
                        spv.poll_best_tip()
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("{:?}: {}", e.kind(), e.into_inner())),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop_rx.changed() => break,
                    }
                }
            }
            (ChainClient::Esplora(sync), _) => loop {
                let mut confirmables: Vec<&(dyn Confirm + Send + Sync)> = vec![
                    &*channel_manager as &(dyn Confirm + Send + Sync),
                    &*chain_monitor as &(dyn Confirm + Send + Sync),
                ];
                if let Some(s) = &sweeper {
                    confirmables.push(&**s as &(dyn Confirm + Send + Sync));
                }
                report(sync.sync(confirmables).await.map_err(|e| format!("{e:?}")));
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop_rx.changed() => break,
                }
            },
            (ChainClient::Rpc(_), None) => {
                tracing::error!(node = %alias, "bitcoind sync started without a starting tip");
            }
        }
    })
}

/// Spawns the fee refresh loop (the first refresh is done at start, before LDK asks).
pub(crate) fn spawn_fee_refresh(
    alias: String,
    client: ChainClient,
    estimator: Arc<ChainFeeEstimator>,
    interval: Duration,
    mut stop_rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop_rx.changed() => break,
            }
            refresh_fees(&alias, &client, &estimator).await;
        }
    })
}

/// How long one fee refresh may take; a slow source keeps the previous estimates.
pub(crate) const FEE_REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn refresh_fees(alias: &str, client: &ChainClient, estimator: &ChainFeeEstimator) {
    match tokio::time::timeout(FEE_REFRESH_TIMEOUT, client.fee_rates()).await {
        Ok(Ok(rates)) => estimator.update(rates),
        Ok(Err(e)) => {
            tracing::warn!(node = %alias, error = %e, "fee estimates unavailable; keeping the previous ones")
        }
        Err(_) => {
            tracing::warn!(node = %alias, "fee estimates timed out; keeping the previous ones")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_urls_split_into_host_port_and_path() {
        let e = rpc_endpoint("http://127.0.0.1:18443/").map_err(|e| e.to_string());
        let e = e.as_ref().map(|e| (e.host(), e.port(), e.path()));
        assert_eq!(e, Ok(("127.0.0.1", 18443, "/")));
        let e = rpc_endpoint("localhost:8332/wallet/w").map_err(|e| e.to_string());
        let e = e.as_ref().map(|e| (e.host(), e.port(), e.path()));
        assert_eq!(e, Ok(("localhost", 8332, "/wallet/w")));
        let e = rpc_endpoint("http://node").map_err(|e| e.to_string());
        let e = e.as_ref().map(|e| (e.host(), e.port(), e.path()));
        assert_eq!(e, Ok(("node", 18443, "/")));
        assert!(rpc_endpoint("https://node:1/").is_err());
        assert!(rpc_endpoint("http://node:x/").is_err());
        assert!(rpc_endpoint("http://:1/").is_err());
    }
}
