//! [`LdkNode`]: one LDK node, its persistence, event loop and networking.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::BlockHash;
use bitcoin::Network as BtcNetwork;
use bitcoin::constants::ChainHash;
use bitcoin::secp256k1::PublicKey;
use lightning::chain::chaininterface::{ConfirmationTarget, FeeEstimator};
use lightning::chain::chainmonitor::ChainMonitor;
use lightning::chain::{BestBlock, Listen};
use lightning::events::{Event, PaymentPurpose, ReplayEvent};
use lightning::ln::channelmanager::{
    ChainParameters, ChannelManager, ChannelManagerReadArgs, RecentPaymentDetails,
};
use lightning::ln::msgs::UnsignedChannelUpdate;
use lightning::ln::peer_handler::{IgnoringMessageHandler, MessageHandler, PeerManager};
use lightning::ln::types::ChannelId;
use lightning::onion_message::messenger::DefaultMessageRouter;
use lightning::routing::gossip::{NetworkGraph, NodeId};
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::{
    ProbabilisticScorer, ProbabilisticScoringDecayParameters, ProbabilisticScoringFeeParameters,
    ScoreUpdate,
};
use lightning::sign::{KeysManager, NodeSigner};
use lightning::types::features::ChannelFeatures;
use lightning::types::payment::{PaymentHash as LdkHash, PaymentPreimage};
use lightning::util::config::{MaxDustHTLCExposure, UserConfig};
use lightning::util::errors::APIError;
use lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, KVStoreSync, KVStoreSyncWrapper,
    NETWORK_GRAPH_PERSISTENCE_KEY, NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
    NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE, OUTPUT_SWEEPER_PERSISTENCE_KEY,
    OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE, OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
    SCORER_PERSISTENCE_KEY, SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
    SCORER_PERSISTENCE_SECONDARY_NAMESPACE, read_channel_monitors,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::sweep::OutputSweeper;
use lightning_persister::fs_store::FilesystemStore;

use crate::invoice::InvoiceSigner;
use satchel_domain::{
    CustomRecords, KEYSEND_PREIMAGE_TLV, Msat, NodePubkey, PaymentHash, Preimage,
};
use satchel_lightning::{IncomingEvent, IncomingKind, IncomingPolicy, LnError};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::LdkError;
use crate::broadcast::ChainBroadcaster;
use crate::chain_source::{self, ChainClient, ChainSource, SyncParts};
use crate::fees::{ChainFeeEstimator, FEERATE_FLOOR_SAT_PER_KW};
use crate::records::{
    EVENTS, EventRec, HELD, HeldRec, INVOICES, InvState, Kv, PAYMENTS, PEERS, PayState, PeerRec,
    State, event_key,
};
use crate::support::{
    ChainMonitorT, ChannelManagerT, Graph, LdkLogger, PeerManagerT, RouterT, Scorer, SweeperT,
    load_or_create_seed, std_io, synthetic_funding_tx,
};
use crate::wallet::{OnchainWallet, WalletError};

/// How long an [`IncomingPolicy`] may take before an incoming keysend is refused.
const POLICY_TIMEOUT: Duration = Duration::from_secs(10);
/// Fallback wake-up of the event loop.
const LOOP_TICK: Duration = Duration::from_millis(100);
/// LDK's `timer_tick_occurred` cadence.
const FRESHNESS_TIMER: Duration = Duration::from_secs(60);
/// Peer pings.
const PING_TIMER: Duration = Duration::from_secs(10);
/// Network graph and scorer persistence.
const GRAPH_PERSIST_TIMER: Duration = Duration::from_secs(600);
/// Reconnection attempts to known peers.
const RECONNECT_TIMER: Duration = Duration::from_secs(2);

/// The fee target our channel funding transactions are built for: LDK has no funding target;
/// a non-urgent spend of our own outputs is the closest.
const FUNDING_FEE_TARGET: ConfirmationTarget = ConfirmationTarget::OutputSpendingFee;
/// The wallet syncs at most this often (the chain poll interval may be shorter).
const WALLET_SYNC_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The network the node runs on: regtest (the devnet, and the chain sources it runs against).
pub(crate) const NETWORK: BtcNetwork = BtcNetwork::Regtest;

/// Configuration of an [`LdkNode`].
#[derive(Clone)]
pub struct LdkConfig {
    /// Directory holding the seed (`keys_seed`), LDK's state (`kv/`) and Satchel's records (`records.log`).
    /// Created if missing.
    pub data_dir: PathBuf,
    /// Alias reported by `node_info` and used in logs.
    pub alias: String,
    /// Listen address. `None`: 127.0.0.1 on the port used last time (remembered in the data
    /// directory), or any free port if that one is taken or this is the first start.
    pub listen: Option<SocketAddr>,
    /// Base fee we charge for forwarding, msat.
    pub forwarding_fee_base_msat: u32,
    /// Proportional fee we charge for forwarding, millionths.
    pub forwarding_fee_proportional_millionths: u32,
    /// CLTV delta we require for forwarding.
    pub cltv_expiry_delta: u16,
    /// Forward payments into unannounced channels (the devnet hub).
    pub accept_forwards_to_priv_channels: bool,
    /// Accept incoming channels as zero-conf (trusting every peer: development networks only).
    pub accept_inbound_0conf: bool,
    /// Policy asked before claiming incoming keysends; can also be set later with
    /// [`LdkNode::set_incoming_policy`]. Without one, keysends are refused.
    pub incoming_policy: Option<Arc<dyn IncomingPolicy>>,
    /// Where the node follows the chain, estimates fees and broadcasts (see
    /// [`ChainSource`]). `None` is the chainless development mode, kept only so that
    /// setups without a chain keep working: the best block stays the regtest genesis, fees
    /// are a constant 253 sat/kw and nothing is broadcast. Development only: such a node
    /// cannot notice a channel closing on chain.
    pub chain_source: Option<ChainSource>,
    /// How often the chain source is polled for new blocks (bitcoind) or synced (Esplora).
    pub chain_poll_interval: Duration,
    /// How often fee estimates are refreshed from the chain source.
    pub fee_refresh_interval: Duration,
}

impl LdkConfig {
    /// Defaults: alias `satchel-ldk`, loopback on a remembered or free port, LDK's default
    /// forwarding policy (1000 msat + 0 ppm, CLTV delta 72), no forwards into private channels,
    /// zero-conf inbound channels accepted, no incoming policy.
    pub fn new(data_dir: impl Into<PathBuf>) -> LdkConfig {
        LdkConfig {
            data_dir: data_dir.into(),
            alias: "satchel-ldk".to_owned(),
            listen: None,
            forwarding_fee_base_msat: 1000,
            forwarding_fee_proportional_millionths: 0,
            cltv_expiry_delta: 72,
            accept_forwards_to_priv_channels: false,
            accept_inbound_0conf: true,
            incoming_policy: None,
            chain_source: None,
            chain_poll_interval: Duration::from_secs(5),
            fee_refresh_interval: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for LdkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdkConfig")
            .field("data_dir", &self.data_dir)
            .field("alias", &self.alias)
            .field("listen", &self.listen)
            .field("forwarding_fee_base_msat", &self.forwarding_fee_base_msat)
            .field(
                "forwarding_fee_proportional_millionths",
                &self.forwarding_fee_proportional_millionths,
            )
            .field("cltv_expiry_delta", &self.cltv_expiry_delta)
            .field(
                "accept_forwards_to_priv_channels",
                &self.accept_forwards_to_priv_channels,
            )
            .field("accept_inbound_0conf", &self.accept_inbound_0conf)
            .field("incoming_policy", &self.incoming_policy.is_some())
            .field("chain_source", &self.chain_source)
            .field("chain_poll_interval", &self.chain_poll_interval)
            .field("fee_refresh_interval", &self.fee_refresh_interval)
            .finish()
    }
}

/// One channel as [`LdkNode::list_channels`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    /// The peer.
    pub counterparty: NodePubkey,
    /// Channel size in sats.
    pub capacity_sats: u64,
    /// What we can send over it now, msat.
    pub outbound_msat: u64,
    /// What we can receive over it now, msat.
    pub inbound_msat: u64,
    /// Ready and the peer connected.
    pub usable: bool,
    /// The peer's forwarding policy is known (needed for route hints).
    pub forwarding_known: bool,
    /// The SCID (or our alias for it) used to send over this channel.
    pub outbound_scid: Option<u64>,
    /// The SCID alias our peer assigned, used in route hints for payments to us.
    pub inbound_scid: Option<u64>,
    /// LDK's channel id (hex).
    pub channel_id: String,
    /// The funding transaction's id (synthetic in the chainless mode), once known.
    pub funding_txid: Option<bitcoin::Txid>,
    /// Confirmations of the funding transaction (`Some(0)` while unconfirmed).
    pub confirmations: Option<u32>,
}

/// One direction of a channel, as injected into a node's network graph by
/// [`LdkNode::add_graph_edges`] (the devnet's stand-in for gossip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphEdge {
    /// SCID the forwarding node `from` recognises for this channel.
    pub scid: u64,
    /// Forwarding node.
    pub from: NodePubkey,
    /// Next node.
    pub to: NodePubkey,
    /// Channel size in sats.
    pub capacity_sats: u64,
    /// `from`'s base fee, msat.
    pub fee_base_msat: u32,
    /// `from`'s proportional fee, millionths.
    pub fee_proportional_millionths: u32,
    /// `from`'s CLTV delta.
    pub cltv_expiry_delta: u16,
    /// Smallest HTLC, msat.
    pub htlc_minimum_msat: u64,
    /// Largest HTLC, msat.
    pub htlc_maximum_msat: u64,
}

/// An embedded LDK Lightning node. Start it with [`LdkNode::start`]; stop it with
/// [`LdkNode::stop`] before starting another node on the same data directory.
pub struct LdkNode {
    pub(crate) config: LdkConfig,
    pub(crate) pubkey: PublicKey,
    pub(crate) node_pubkey: NodePubkey,
    listen_addr: SocketAddr,
    pub(crate) kv: Kv,
    /// Signs our invoices (see [`crate::invoice`]).
    pub(crate) invoice_signer: InvoiceSigner,
    store: Arc<FilesystemStore>,
    pub(crate) channel_manager: Arc<ChannelManagerT>,
    chain_monitor: Arc<ChainMonitorT>,
    pub(crate) peer_manager: Arc<PeerManagerT>,
    pub(crate) network_graph: Arc<Graph>,
    scorer: Arc<RwLock<Scorer>>,
    pub(crate) router: Arc<RouterT>,
    fee_estimator: Arc<ChainFeeEstimator>,
    broadcaster: Arc<ChainBroadcaster>,
    /// `None` without a chain source; else whether the last sync round succeeded.
    chain_synced: Option<Arc<AtomicBool>>,
    /// The on-chain wallet that funds our channels; `None` in the chainless mode (whose
    /// channels are funded by synthetic transactions).
    wallet: Option<Arc<OnchainWallet>>,
    /// Sweeps closed channels' outputs into `wallet` (`None` with it).
    sweeper: Option<Arc<SweeperT>>,
    state: Mutex<State>,
    policy: RwLock<Option<Arc<dyn IncomingPolicy>>>,
    /// Woken when an incoming event is appended.
    pub(crate) events_notify: Notify,
    /// Woken when an outgoing payment changes state.
    pub(crate) payments_notify: Notify,
    hold_incoming: AtomicBool,
    /// A flush of the record log is scheduled for invoice cancellations (see
    /// `cancel_invoices`).
    pub(crate) cancel_flush_pending: Arc<AtomicBool>,
    /// Open invoices taken for an internal settlement (`take_for_internal`) and not cancelled
    /// in the records yet, with the number of takes not released: an HTLC for one of them is
    /// failed back. (Counted: a concurrent payer the ledger refuses releases only its own take,
    /// not the winner's.) Only read or changed while `state` is locked, so a take and a claim
    /// decision never interleave.
    pub(crate) taken: Mutex<HashMap<PaymentHash, u32>>,
    stopped: AtomicBool,
    stop_tx: watch::Sender<bool>,
    /// Held (locked) while the node runs.
    lock_file: Mutex<Option<std::fs::File>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    event_loop: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl LdkNode {
    /// Test support: compares the route hints Satchel puts in an invoice of `amount_msat` with
    /// the ones LDK's own `create_bolt11_invoice` would choose right now, and checks that an
    /// invoice we build passes the full signature check. `Err` describes a difference.
    #[doc(hidden)]
    pub fn check_invoices_against_ldk(&self, amount_msat: Option<u64>) -> Result<(), String> {
        use lightning::ln::channelmanager::Bolt11InvoiceParameters;
        use lightning_invoice::{Bolt11InvoiceDescription, Description};
        let hops = |hints: Vec<lightning::routing::router::RouteHint>| {
            let mut v: Vec<(PublicKey, u64, u32, u32, u16)> = hints
                .into_iter()
                .flat_map(|h| h.0)
                .map(|h| {
                    (
                        h.src_node_id,
                        h.short_channel_id,
                        h.fees.base_msat,
                        h.fees.proportional_millionths,
                        h.cltv_expiry_delta,
                    )
                })
                .collect();
            v.sort();
            v
        };
        let ldk = self
            .channel_manager
            .create_bolt11_invoice(Bolt11InvoiceParameters {
                amount_msats: amount_msat,
                description: Bolt11InvoiceDescription::Direct(Description::empty()),
                invoice_expiry_delta_secs: Some(600),
                min_final_cltv_expiry_delta: None,
                payment_hash: Some(lightning::types::payment::PaymentHash(rand::random())),
            })
            .map_err(|e| format!("LDK: {e:?}"))?;
        let ours = self.invoice_signer.create(
            &self.channel_manager,
            crate::invoice::InvoiceParams {
                hash: rand::random(),
                amount_msat,
                description: Bolt11InvoiceDescription::Direct(Description::empty()),
                expiry_secs: 600,
            },
            now_duration(),
        )?;
        let (l, o) = (hops(ldk.route_hints()), hops(ours.route_hints()));
        if l != o {
            return Err(format!("route hints differ: LDK {l:?}, ours {o:?}"));
        }
        if ours.min_final_cltv_expiry_delta() != ldk.min_final_cltv_expiry_delta()
            || ours.features() != ldk.features()
            || ours.payee_pub_key() != ldk.payee_pub_key()
        {
            return Err("invoice fields differ from LDK's".into());
        }
        satchel_domain::Bolt11::parse(&ours.to_string())
            .map(|_| ())
            .map_err(|e| format!("our invoice does not verify: {e}"))
    }
}

impl fmt::Debug for LdkNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdkNode")
            .field("alias", &self.config.alias)
            .field("pubkey", &self.node_pubkey)
            .field("listen_addr", &self.listen_addr)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_duration() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

pub(crate) fn to_node_pubkey(pk: &PublicKey) -> NodePubkey {
    NodePubkey(pk.serialize())
}

pub(crate) fn from_node_pubkey(pk: &NodePubkey) -> Result<PublicKey, String> {
    PublicKey::from_slice(&pk.0).map_err(|e| format!("invalid pubkey {pk}: {e}"))
}

fn read_optional(
    store: &FilesystemStore,
    ns1: &str,
    ns2: &str,
    key: &str,
) -> io::Result<Option<Vec<u8>>> {
    match KVStoreSync::read(store, ns1, ns2, key) {
        Ok(buf) => Ok(Some(buf)),
        Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(std_io(e)),
    }
}

fn user_config(config: &LdkConfig) -> UserConfig {
    let mut c = UserConfig::default();
    c.channel_handshake_config.announce_for_forwarding = false;
    c.channel_handshake_config
        .negotiate_anchors_zero_fee_htlc_tx = false;
    c.channel_handshake_config
        .max_inbound_htlc_value_in_flight_percent_of_channel = 100;
    c.channel_handshake_config.minimum_depth = 0;
    // LDK accepts only 50 HTLCs in flight per channel by default; a wallet server streaming many
    // small payments (keysend podcasts) needs the protocol maximum.
    c.channel_handshake_config.our_max_accepted_htlcs = 483;
    c.channel_handshake_limits
        .force_announced_channel_preference = false;
    c.channel_handshake_limits.trust_own_funding_0conf = true;
    c.channel_config.forwarding_fee_base_msat = config.forwarding_fee_base_msat;
    c.channel_config.forwarding_fee_proportional_millionths =
        config.forwarding_fee_proportional_millionths;
    c.channel_config.cltv_expiry_delta = config.cltv_expiry_delta;
    // Development-sized limit: dust HTLCs would be lost to fees only if a channel force-closes
    // with them in flight; do not let the limit refuse small payments.
    c.channel_config.max_dust_htlc_exposure = MaxDustHTLCExposure::FixedLimitMsat(1_000_000_000);
    c.accept_forwards_to_priv_channels = config.accept_forwards_to_priv_channels;
    c.manually_accept_inbound_channels = true;
    c
}

fn custom_records_of(tlvs: &[(u64, Vec<u8>)]) -> CustomRecords {
    let mut records = CustomRecords::default();
    for (t, v) in tlvs {
        if *t != KEYSEND_PREIMAGE_TLV {
            records.0.insert(*t, v.clone());
        }
    }
    records
}

impl LdkNode {
    /// Starts a node on `config.data_dir`: creates the seed on first start, otherwise reloads
    /// channel monitors, channel manager, network graph, scorer and Satchel's records; listens
    /// on loopback; replays LDK's pending events (payments that completed while stopped); and
    /// reconnects to the peers it connected to before. Must run inside a tokio runtime.
    pub async fn start(config: LdkConfig) -> Result<Arc<LdkNode>, LdkError> {
        satchel_lightning::fs_private::ensure_private_dir(&config.data_dir)?;
        // One node per data directory, across processes and within this one.
        let lock_file = satchel_lightning::fs_private::private_open_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.data_dir.join("LOCK"))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LdkError::Ldk(format!(
                    "{} is in use by another running node",
                    config.data_dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let seed = load_or_create_seed(&config.data_dir.join("keys_seed"))?;
        let now = now_duration();
        let keys = Arc::new(KeysManager::new(
            &seed,
            now.as_secs(),
            now.subsec_nanos(),
            true,
        ));
        let pubkey = keys
            .get_node_id(lightning::sign::Recipient::Node)
            .map_err(|()| LdkError::Ldk("no node id".into()))?;
        let logger = Arc::new(LdkLogger {
            node: config.alias.clone(),
        });
        let store = Arc::new(FilesystemStore::new(config.data_dir.join("kv")));
        let chain = match &config.chain_source {
            Some(source) => Some(ChainClient::connect(source, Arc::clone(&logger))?),
            None => None,
        };
        let wallet = match &config.chain_source {
            Some(source) => Some(Arc::new(
                OnchainWallet::open(
                    &config.data_dir.join("wallet"),
                    &seed,
                    NETWORK,
                    source.clone(),
                )
                .await
                .map_err(|e| LdkError::Chain(format!("on-chain wallet: {e}")))?,
            )),
            None => None,
        };
        let (fee_est, broadcaster, broadcast_task) = match &chain {
            Some(client) => {
                let fees = Arc::new(ChainFeeEstimator::from_source());
                // Before LDK asks anything (a channel manager read checks fee rates).
                chain_source::refresh_fees(&config.alias, client, &fees).await;
                let (b, task) = ChainBroadcaster::spawn(&config.alias, client.clone());
                (fees, Arc::new(b), Some(task))
            }
            None => (
                Arc::new(ChainFeeEstimator::fixed(FEERATE_FLOOR_SAT_PER_KW)),
                Arc::new(ChainBroadcaster::none(&config.alias)),
                None,
            ),
        };

        let graph = match read_optional(
            &store,
            NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_KEY,
        )? {
            Some(buf) => NetworkGraph::read(&mut &buf[..], Arc::clone(&logger))
                .map_err(|e| LdkError::Corrupt(format!("network graph: {e:?}")))?,
            None => NetworkGraph::new(NETWORK, Arc::clone(&logger)),
        };
        let graph = Arc::new(graph);
        let decay = ProbabilisticScoringDecayParameters::default();
        let scorer = match read_optional(
            &store,
            SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
            SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
            SCORER_PERSISTENCE_KEY,
        )? {
            Some(buf) => ProbabilisticScorer::read(
                &mut &buf[..],
                (decay, Arc::clone(&graph), Arc::clone(&logger)),
            )
            .map_err(|e| LdkError::Corrupt(format!("scorer: {e:?}")))?,
            None => ProbabilisticScorer::new(decay, Arc::clone(&graph), Arc::clone(&logger)),
        };
        let scorer = Arc::new(RwLock::new(scorer));
        let router = Arc::new(DefaultRouter::new(
            Arc::clone(&graph),
            Arc::clone(&logger),
            Arc::clone(&keys),
            Arc::clone(&scorer),
            ProbabilisticScoringFeeParameters::default(),
        ));
        let msg_router = Arc::new(DefaultMessageRouter::new(
            Arc::clone(&graph),
            Arc::clone(&keys),
        ));
        let chain_monitor: Arc<ChainMonitorT> = Arc::new(ChainMonitor::new(
            chain.as_ref().and_then(ChainClient::filter),
            Arc::clone(&broadcaster),
            Arc::clone(&logger),
            Arc::clone(&fee_est),
            Arc::clone(&store),
            Arc::clone(&keys),
            keys.get_peer_storage_key(),
        ));

        let ucfg = user_config(&config);
        let monitors =
            read_channel_monitors(Arc::clone(&store), Arc::clone(&keys), Arc::clone(&keys))
                .map_err(std_io)?;
        let manager_bytes = read_optional(
            &store,
            CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_KEY,
        )?;
        // A new node starts at the chain's tip (bitcoind: the validated header the block
        // poller will start from).
        let mut rpc_start = None;
        let new_best_block = match (&chain, &manager_bytes) {
            (Some(ChainClient::Rpc(rpc)), None) => {
                let tip = lightning_block_sync::init::validate_best_block_header(&**rpc)
                    .await
                    .map_err(|e| LdkError::Chain(format!("bitcoind tip: {}", e.into_inner())))?;
                rpc_start = Some(tip);
                BestBlock::new(tip.header.block_hash(), tip.height)
            }
            (Some(client), None) => client.tip().await?,
            _ => BestBlock::from_network(NETWORK),
        };
        let mut manager_block = None;
        let channel_manager: Arc<ChannelManagerT> = match manager_bytes {
            Some(buf) => {
                let monitor_refs = monitors.iter().map(|(_, m)| m).collect();
                let args = ChannelManagerReadArgs::new(
                    Arc::clone(&keys),
                    Arc::clone(&keys),
                    Arc::clone(&keys),
                    Arc::clone(&fee_est),
                    Arc::clone(&chain_monitor),
                    Arc::clone(&broadcaster),
                    Arc::clone(&router),
                    Arc::clone(&msg_router),
                    Arc::clone(&logger),
                    ucfg,
                    monitor_refs,
                );
                let (hash, cm) = <(BlockHash, Arc<ChannelManagerT>)>::read(&mut &buf[..], args)
                    .map_err(|e| LdkError::Corrupt(format!("channel manager: {e:?}")))?;
                manager_block = Some(hash);
                cm
            }
            None if !monitors.is_empty() => {
                return Err(LdkError::Corrupt(
                    "channel monitors exist but the channel manager is missing".into(),
                ));
            }
            None => Arc::new(ChannelManager::new(
                Arc::clone(&fee_est),
                Arc::clone(&chain_monitor),
                Arc::clone(&broadcaster),
                Arc::clone(&router),
                Arc::clone(&msg_router),
                Arc::clone(&logger),
                Arc::clone(&keys),
                Arc::clone(&keys),
                Arc::clone(&keys),
                ucfg,
                ChainParameters {
                    network: NETWORK,
                    best_block: new_best_block,
                },
                u32::try_from(now.as_secs()).unwrap_or(u32::MAX),
            )),
        };
        // The sweeper (with a wallet to sweep into): persisted beside the manager; a new one
        // starts where the manager is.
        let sweeper: Option<Arc<SweeperT>> = match &wallet {
            Some(wallet) => {
                let filter = chain.as_ref().and_then(ChainClient::filter);
                let args = (
                    Arc::clone(&broadcaster),
                    Arc::clone(&fee_est),
                    filter.clone(),
                    Arc::clone(&keys),
                    Arc::clone(wallet),
                    Arc::new(KVStoreSyncWrapper(Arc::clone(&store))),
                    Arc::clone(&logger),
                );
                let sweeper = match read_optional(
                    &store,
                    OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE,
                    OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
                    OUTPUT_SWEEPER_PERSISTENCE_KEY,
                )? {
                    Some(buf) => {
                        <(BestBlock, SweeperT)>::read(&mut &buf[..], args)
                            .map_err(|e| LdkError::Corrupt(format!("output sweeper: {e:?}")))?
                            .1
                    }
                    None => OutputSweeper::new(
                        channel_manager.current_best_block(),
                        args.0,
                        args.1,
                        args.2,
                        args.3,
                        args.4,
                        args.5,
                        args.6,
                    ),
                };
                Some(Arc::new(sweeper))
            }
            None => None,
        };
        // bitcoind: replay the blocks each of them missed before the monitors are watched.
        let mut header_cache = lightning_block_sync::UnboundedCache::new();
        let monitors: Vec<_> = match (&chain, manager_block) {
            (Some(ChainClient::Rpc(rpc)), Some(hash)) => {
                let (tip, monitors) = chain_source::synchronize_rpc(
                    rpc,
                    &mut header_cache,
                    std::iter::once((hash, &*channel_manager as &(dyn Listen + Send + Sync)))
                        .chain(sweeper.as_ref().map(|s| {
                            (
                                s.current_best_block().block_hash,
                                &**s as &(dyn Listen + Send + Sync),
                            )
                        }))
                        .collect(),
                    monitors,
                    &broadcaster,
                    &fee_est,
                    &logger,
                )
                .await?;
                rpc_start = Some(tip);
                monitors
            }
            _ => monitors.into_iter().map(|(_, m)| m).collect(),
        };
        for monitor in monitors {
            let channel_id: ChannelId = monitor.channel_id();
            chain_monitor
                .load_existing_monitor(channel_id, monitor)
                .map_err(|()| LdkError::Ldk(format!("loading monitor {channel_id}")))?;
        }

        let ephemeral: [u8; 32] = rand::random();
        let peer_manager: Arc<PeerManagerT> = Arc::new(PeerManager::new(
            MessageHandler {
                chan_handler: Arc::clone(&channel_manager),
                route_handler: IgnoringMessageHandler {},
                onion_message_handler: IgnoringMessageHandler {},
                custom_message_handler: IgnoringMessageHandler {},
                send_only_message_handler: IgnoringMessageHandler {},
            },
            u32::try_from(now.as_secs()).unwrap_or(u32::MAX),
            &ephemeral,
            Arc::clone(&logger),
            Arc::clone(&keys),
        ));

        let (kv, state) = Kv::open(&config.data_dir, &store)?;

        let port_file = config.data_dir.join("listen_port");
        let listener = match config.listen {
            Some(addr) => tokio::net::TcpListener::bind(addr).await?,
            None => {
                let remembered = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u16>().ok());
                let bound = match remembered {
                    Some(port) => tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                        .await
                        .ok(),
                    None => None,
                };
                match bound {
                    Some(l) => l,
                    None => tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?,
                }
            }
        };
        let listen_addr = listener.local_addr()?;
        satchel_lightning::fs_private::write_private(
            &port_file,
            listen_addr.port().to_string().as_bytes(),
        )?;

        let (stop_tx, stop_rx) = watch::channel(false);
        let policy = config.incoming_policy.clone();
        let chain_synced = chain.as_ref().map(|_| Arc::new(AtomicBool::new(false)));
        let node = Arc::new(LdkNode {
            node_pubkey: to_node_pubkey(&pubkey),
            pubkey,
            listen_addr,
            kv,
            invoice_signer: InvoiceSigner::new(keys.get_node_secret_key(), pubkey),
            store,
            channel_manager,
            chain_monitor,
            peer_manager,
            network_graph: graph,
            scorer,
            router,
            fee_estimator: Arc::clone(&fee_est),
            broadcaster: Arc::clone(&broadcaster),
            chain_synced: chain_synced.clone(),
            wallet,
            sweeper: sweeper.clone(),
            state: Mutex::new(state),
            policy: RwLock::new(policy),
            events_notify: Notify::new(),
            payments_notify: Notify::new(),
            hold_incoming: AtomicBool::new(false),
            cancel_flush_pending: Arc::new(AtomicBool::new(false)),
            taken: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
            stop_tx,
            lock_file: Mutex::new(Some(lock_file)),
            tasks: Mutex::new(Vec::new()),
            event_loop: tokio::sync::Mutex::new(None),
            config,
        });

        // Replay what LDK queued before the last stop (PaymentSent/PaymentFailed of payments
        // that were in flight, claims), then forget in-flight records LDK never heard of.
        node.process_once().await;
        node.reconcile_payments();

        let accept = {
            let pm = Arc::clone(&node.peer_manager);
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        res = listener.accept() => match res {
                            Ok((stream, _)) => match stream.into_std() {
                                Ok(std_stream) => {
                                    let pm = Arc::clone(&pm);
                                    tokio::spawn(async move {
                                        lightning_net_tokio::setup_inbound(pm, std_stream).await;
                                    });
                                }
                                Err(e) => tracing::warn!(error = %e, "inbound connection"),
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        },
                        _ = stop_rx.changed() => break,
                    }
                }
            })
        };
        let reconnect = {
            let node = Arc::clone(&node);
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    node.reconnect_known_peers().await;
                    tokio::select! {
                        _ = tokio::time::sleep(RECONNECT_TIMER) => {}
                        _ = stop_rx.changed() => break,
                    }
                }
            })
        };
        let event_loop = {
            let node = Arc::clone(&node);
            let stop_rx = stop_rx.clone();
            tokio::spawn(async move { node.run_event_loop(stop_rx).await })
        };
        node.lock_tasks().extend([accept, reconnect]);
        if let (Some(client), Some(synced)) = (chain, chain_synced) {
            let sync = chain_source::spawn_sync(
                SyncParts {
                    alias: node.config.alias.clone(),
                    client: client.clone(),
                    channel_manager: Arc::clone(&node.channel_manager),
                    chain_monitor: Arc::clone(&node.chain_monitor),
                    sweeper: node.sweeper.clone(),
                    interval: node.config.chain_poll_interval,
                    synced,
                },
                rpc_start.map(|tip| (tip, header_cache)),
                stop_rx.clone(),
            );
            let fees = chain_source::spawn_fee_refresh(
                node.config.alias.clone(),
                client,
                Arc::clone(&node.fee_estimator),
                node.config.fee_refresh_interval,
                stop_rx.clone(),
            );
            node.lock_tasks().extend([sync, fees]);
        }
        if let Some(wallet) = node.wallet.clone() {
            let wallet_sync = {
                let node = Arc::clone(&node);
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    let interval = node
                        .config
                        .chain_poll_interval
                        .max(WALLET_SYNC_MIN_INTERVAL);
                    loop {
                        if let Err(e) = wallet.sync().await {
                            tracing::debug!(node = %node.config.alias, error = %e, "wallet sync");
                        }
                        // Broadcasts (or re-broadcasts) due sweeps and persists the sweeper.
                        if let Some(s) = &node.sweeper
                            && s.regenerate_and_broadcast_spend_if_necessary()
                                .await
                                .is_err()
                        {
                            tracing::warn!(node = %node.config.alias, "sweeping failed; retrying");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(interval) => {}
                            _ = stop_rx.changed() => break,
                        }
                    }
                })
            };
            node.lock_tasks().push(wallet_sync);
        }
        node.lock_tasks().extend(broadcast_task);
        *node.event_loop.lock().await = Some(event_loop);
        tracing::info!(
            node = %node.config.alias,
            pubkey = %node.node_pubkey,
            listen = %node.listen_addr,
            channels = node.channel_manager.list_channels().len(),
            "LDK node started"
        );
        Ok(node)
    }

    /// Stops the node: finishes the event loop (handling what is queued), disconnects all
    /// peers, stops listening and persists the channel manager, network graph and scorer. Safe
    /// to call twice. Afterwards every backend call answers `LnError::Transport`, and a new node
    /// may be started on the same data directory (in this process or another).
    pub async fn stop(&self) -> Result<(), LdkError> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.stop_tx.send(true);
        let handle = self.event_loop.lock().await.take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.lock_tasks());
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.peer_manager.disconnect_all_peers();
        // Let the connection tasks notice; no more messages are handled for closed peers.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let persisted = self
            .persist_manager()
            .and_then(|()| self.persist_graph_and_scorer());
        // Cancellations whose flush was deferred.
        if let Err(e) = self.kv.journal.flush() {
            tracing::warn!(error = %e, "could not flush the record log at stop");
        }
        // Released even if persisting failed: the last good state is on disk either way.
        if let Some(f) = self
            .lock_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = f.unlock();
        }
        persisted?;
        self.payments_notify.notify_waiters();
        self.events_notify.notify_waiters();
        tracing::info!(node = %self.config.alias, "LDK node stopped");
        Ok(())
    }

    /// Our node id.
    pub fn pubkey(&self) -> NodePubkey {
        self.node_pubkey
    }

    /// The alias from the configuration.
    pub fn alias(&self) -> &str {
        &self.config.alias
    }

    /// Where the node accepts peer connections.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Whether [`LdkNode::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// The best block the node has processed: (height, hash).
    pub fn best_block(&self) -> (u32, BlockHash) {
        let b = self.channel_manager.current_best_block();
        (b.height, b.block_hash)
    }

    /// `None` without a chain source; else whether the last round of chain sync succeeded
    /// (the node had caught up with the source's tip as of that round).
    pub fn chain_synced(&self) -> Option<bool> {
        self.chain_synced.as_ref().map(|s| s.load(Ordering::SeqCst))
    }

    /// The fee estimator LDK uses (cached estimates from the chain source).
    pub fn fee_estimator(&self) -> &ChainFeeEstimator {
        &self.fee_estimator
    }

    /// The broadcaster LDK uses (queues to the chain source).
    pub fn broadcaster(&self) -> &ChainBroadcaster {
        &self.broadcaster
    }

    /// Sets (or replaces) the policy asked before claiming incoming keysends.
    pub fn set_incoming_policy(&self, policy: Arc<dyn IncomingPolicy>) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Some(policy);
    }

    /// Connects to a peer (BOLT 8 over TCP) and waits for the handshake, up to 10 s. The peer is
    /// remembered: the node reconnects to it after disconnections and restarts.
    pub async fn connect(&self, pubkey: NodePubkey, addr: SocketAddr) -> Result<(), LdkError> {
        if self.is_stopped() {
            return Err(LdkError::Stopped);
        }
        let pk = from_node_pubkey(&pubkey).map_err(LdkError::Connect)?;
        {
            let rec = PeerRec {
                addr: addr.to_string(),
            };
            let mut st = self.lock();
            self.kv.put(PEERS, &pubkey.to_hex(), &rec)?;
            st.peers.insert(pubkey.to_hex(), rec);
        }
        if self.peer_manager.peer_by_node_id(&pk).is_some() {
            return Ok(());
        }
        let fut = lightning_net_tokio::connect_outbound(Arc::clone(&self.peer_manager), pk, addr)
            .await
            .ok_or_else(|| LdkError::Connect(format!("{pubkey}@{addr}: TCP connect failed")))?;
        tokio::spawn(fut);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.peer_manager.peer_by_node_id(&pk).is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(LdkError::Connect(format!(
                    "{pubkey}@{addr}: handshake timed out"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Whether the peer is connected right now.
    pub fn is_connected(&self, pubkey: &NodePubkey) -> bool {
        from_node_pubkey(pubkey)
            .map(|pk| self.peer_manager.peer_by_node_id(&pk).is_some())
            .unwrap_or(false)
    }

    /// Opens a channel of `capacity_sats` to a connected peer, pushing `push_msat` to it
    /// (zero-conf if the peer accepts that). With a chain source the funding transaction is
    /// built and signed by our on-chain wallet ([`LdkNode::wallet`]) and broadcast by LDK; a
    /// wallet that cannot pay `capacity_sats` now refuses here (`LdkError::Funding`), and one
    /// that cannot when the peer has accepted makes the channel close unfunded. Without a
    /// chain source the channel is funded by a synthetic transaction that is never broadcast
    /// (development only). Returns when LDK accepted the request; the channel becomes usable
    /// once the peer accepts it (see [`LdkNode::list_channels`]).
    ///
    /// Right after a connection the peer manager may already list the peer while the channel
    /// manager has not processed its `Init` yet and refuses with "Not connected" (seen when the
    /// host is loaded: a devnet start failed in CI). That refusal is retried for up to 10 s.
    pub async fn open_channel(
        &self,
        counterparty: NodePubkey,
        capacity_sats: u64,
        push_msat: u64,
    ) -> Result<(), LdkError> {
        let pk = from_node_pubkey(&counterparty).map_err(LdkError::Ldk)?;
        if let Some(wallet) = &self.wallet {
            // Refuse early what the wallet cannot fund, rather than after the peer's accept.
            let b = wallet.balance().await;
            let available = b
                .confirmed
                .checked_add(b.trusted_pending)
                .unwrap_or(bitcoin::Amount::MAX_MONEY);
            if available.to_sat() < capacity_sats {
                return Err(LdkError::Funding(WalletError::InsufficientFunds {
                    needed: bitcoin::Amount::from_sat(capacity_sats),
                    available,
                }));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.is_stopped() {
                return Err(LdkError::Stopped);
            }
            let user_channel_id: u128 = rand::random();
            match self.channel_manager.create_channel(
                pk,
                capacity_sats,
                push_msat,
                user_channel_id,
                None,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(APIError::APIMisuseError { err })
                    if err.starts_with("Not connected")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(LdkError::Ldk(format!("{e:?}"))),
            }
        }
    }

    /// Closes our channel `channel_id` (hex, as in [`ChannelSummary::channel_id`]):
    /// cooperatively (the peer must be connected; the closing transaction pays our balance to
    /// us) or, with `force`, by broadcasting our latest commitment transaction (our balance
    /// comes back after its CSV delay). Either way the sweeper moves what is ours into the
    /// wallet.
    pub fn close_channel(&self, channel_id: &str, force: bool) -> Result<(), LdkError> {
        self.check_running().map_err(|_| LdkError::Stopped)?;
        let bytes: [u8; 32] = hex::decode(channel_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| LdkError::Ldk(format!("not a channel id: {channel_id:?}")))?;
        let id = ChannelId(bytes);
        let channel = self
            .channel_manager
            .list_channels()
            .into_iter()
            .find(|c| c.channel_id == id)
            .ok_or_else(|| LdkError::Ldk(format!("no channel {channel_id}")))?;
        let peer = channel.counterparty.node_id;
        let res = if force {
            self.channel_manager.force_close_broadcasting_latest_txn(
                &id,
                &peer,
                "closed by the operator".into(),
            )
        } else {
            self.channel_manager.close_channel(&id, &peer)
        };
        res.map_err(|e| LdkError::Ldk(format!("{e:?}")))
    }

    /// The node's on-chain wallet (funds our channels, receives sweeps); `None` without a
    /// chain source.
    pub fn wallet(&self) -> Option<&Arc<OnchainWallet>> {
        self.wallet.as_ref()
    }

    /// Our channels.
    pub fn list_channels(&self) -> Vec<ChannelSummary> {
        self.channel_manager
            .list_channels()
            .into_iter()
            .map(|c| ChannelSummary {
                counterparty: to_node_pubkey(&c.counterparty.node_id),
                capacity_sats: c.channel_value_satoshis,
                outbound_msat: c.outbound_capacity_msat,
                inbound_msat: c.inbound_capacity_msat,
                usable: c.is_usable,
                forwarding_known: c.counterparty.forwarding_info.is_some(),
                outbound_scid: c.get_outbound_payment_scid(),
                inbound_scid: c.get_inbound_payment_scid(),
                channel_id: c.channel_id.to_string(),
                funding_txid: c.funding_txo.map(|o| o.txid),
                confirmations: c.confirmations,
            })
            .collect()
    }

    /// Whether every channel is usable and has received its peer's forwarding policy (needed
    /// for route hints in our invoices).
    pub fn channels_ready(&self) -> bool {
        let chans = self.channel_manager.list_channels();
        !chans.is_empty()
            && chans
                .iter()
                .all(|c| c.is_usable && c.counterparty.forwarding_info.is_some())
    }

    /// This node's side of its ready channels as graph edges: the forwarding policy this node
    /// applies when sending over each of them.
    pub fn local_graph_edges(&self) -> Vec<GraphEdge> {
        self.channel_manager
            .list_channels()
            .into_iter()
            .filter(|c| c.is_channel_ready)
            .filter_map(|c| {
                let scid = c.get_outbound_payment_scid()?;
                let cfg = c.config.unwrap_or_default();
                let capacity_msat = c.channel_value_satoshis.saturating_mul(1000);
                Some(GraphEdge {
                    scid,
                    from: self.node_pubkey,
                    to: to_node_pubkey(&c.counterparty.node_id),
                    capacity_sats: c.channel_value_satoshis,
                    fee_base_msat: cfg.forwarding_fee_base_msat,
                    fee_proportional_millionths: cfg.forwarding_fee_proportional_millionths,
                    cltv_expiry_delta: cfg.cltv_expiry_delta,
                    htlc_minimum_msat: c
                        .counterparty
                        .outbound_htlc_minimum_msat
                        .unwrap_or(1)
                        .max(1),
                    htlc_maximum_msat: capacity_msat,
                })
            })
            .collect()
    }

    /// Adds channel directions to this node's network graph as if they had been gossiped (the
    /// devnet's channels are unannounced, so without this our router would not know the
    /// channels beyond our own). LDK's router only uses a channel whose both directions are
    /// known; a direction no edge describes is added disabled (each side of an unconfirmed
    /// channel forwards under its own SCID alias, so the alias is only usable one way). The
    /// graph is persisted.
    pub fn add_graph_edges(&self, edges: &[GraphEdge]) -> Result<(), LdkError> {
        let ts = u32::try_from(now_duration().as_secs()).unwrap_or(u32::MAX);
        let mut by_scid: std::collections::BTreeMap<u64, Vec<&GraphEdge>> =
            std::collections::BTreeMap::new();
        for e in edges {
            by_scid.entry(e.scid).or_default().push(e);
        }
        for (scid, group) in by_scid {
            let Some(first) = group.first() else {
                continue;
            };
            let from = from_node_pubkey(&first.from).map_err(LdkError::Ldk)?;
            let to = from_node_pubkey(&first.to).map_err(LdkError::Ldk)?;
            let (a, b) = (NodeId::from_pubkey(&from), NodeId::from_pubkey(&to));
            let (one, two) = if a < b { (a, b) } else { (b, a) };
            let known = self
                .network_graph
                .read_only()
                .channel(scid)
                .map(|c| (c.node_one, c.node_two));
            match known {
                Some((n1, n2)) if n1 == one && n2 == two => {}
                Some(_) => {
                    // Same SCID, other nodes: an alias from an older run. Replace it.
                    self.network_graph.channel_failed_permanent(scid);
                    self.add_partial_channel(first, one, two, ts)?;
                }
                None => self.add_partial_channel(first, one, two, ts)?,
            }
            for direction in [0u8, 1u8] {
                let source = if direction == 0 { one } else { two };
                let own = group.iter().find(|e| {
                    from_node_pubkey(&e.from).is_ok_and(|pk| NodeId::from_pubkey(&pk) == source)
                });
                let (policy, disabled) = match own {
                    Some(e) => (*e, 0u8),
                    None => (*first, 2u8),
                };
                let update = UnsignedChannelUpdate {
                    chain_hash: ChainHash::using_genesis_block(NETWORK),
                    short_channel_id: scid,
                    timestamp: ts,
                    message_flags: 1,
                    channel_flags: direction | disabled,
                    cltv_expiry_delta: policy.cltv_expiry_delta,
                    htlc_minimum_msat: policy.htlc_minimum_msat,
                    htlc_maximum_msat: policy.htlc_maximum_msat,
                    fee_base_msat: policy.fee_base_msat,
                    fee_proportional_millionths: policy.fee_proportional_millionths,
                    excess_data: Vec::new(),
                };
                if let Err(err) = self.network_graph.update_channel_unsigned(&update) {
                    // Same or newer timestamp already applied (e.g. two starts within a second).
                    tracing::debug!(node = %self.config.alias, scid, err = %err.err, "graph update skipped");
                }
            }
        }
        self.persist_graph_and_scorer()
    }

    fn add_partial_channel(
        &self,
        e: &GraphEdge,
        one: NodeId,
        two: NodeId,
        ts: u32,
    ) -> Result<(), LdkError> {
        self.network_graph
            .add_channel_from_partial_announcement(
                e.scid,
                Some(e.capacity_sats),
                u64::from(ts),
                ChannelFeatures::empty(),
                one,
                two,
            )
            .map_err(|err| LdkError::Ldk(format!("graph: {}", err.err)))
    }

    /// Test and development hook: while `true`, incoming payments (invoice payments and
    /// keysends) are neither claimed nor failed but held (persisted), so the payer sees them in
    /// flight. Release them with [`LdkNode::release_held`].
    pub fn set_hold_incoming(&self, hold: bool) {
        self.hold_incoming.store(hold, Ordering::SeqCst);
    }

    /// Payment hashes currently held (see [`LdkNode::set_hold_incoming`]).
    pub fn held_payments(&self) -> Vec<PaymentHash> {
        self.lock().held.keys().copied().collect()
    }

    /// Decides a held payment as if it had just arrived (claim if acceptable, else fail).
    /// Returns `false` if no payment with this hash is held.
    pub async fn release_held(&self, hash: PaymentHash) -> Result<bool, LdkError> {
        if self.is_stopped() {
            return Err(LdkError::Stopped);
        }
        let held = self.lock().held.get(&hash).cloned();
        let Some(held) = held else {
            return Ok(false);
        };
        let mut records = CustomRecords::default();
        for (t, v) in &held.custom_records {
            if let Ok(bytes) = hex::decode(v) {
                records.0.insert(*t, bytes);
            }
        }
        let keysend_preimage = held
            .keysend_preimage
            .as_deref()
            .and_then(Preimage::from_hex);
        self.decide_claim(hash, held.amount_msat, keysend_preimage, records)
            .await;
        {
            let mut st = self.lock();
            st.held.remove(&hash);
            self.kv.remove(HELD, &hash.to_hex())?;
        }
        Ok(true)
    }

    /// How many times `pay` handed this payment hash to LDK (idempotent replays not counted).
    pub fn send_count(&self, hash: PaymentHash) -> u32 {
        self.lock().payments.get(&hash).map_or(0, |p| p.sends)
    }

    /// Incoming events recorded so far.
    pub fn events_len(&self) -> usize {
        self.lock().events.len()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The invoices taken for internal settlement. Lock `state` first (see `taken`).
    pub(crate) fn lock_taken(&self) -> MutexGuard<'_, HashMap<PaymentHash, u32>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn check_running(&self) -> Result<(), LnError> {
        if self.is_stopped() {
            Err(LnError::Transport(format!(
                "LDK node {} is stopped",
                self.config.alias
            )))
        } else {
            Ok(())
        }
    }

    fn persist_manager(&self) -> Result<(), LdkError> {
        KVStoreSync::write(
            &*self.store,
            CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_KEY,
            self.channel_manager.encode(),
        )
        .map_err(std_io)?;
        Ok(())
    }

    fn persist_graph_and_scorer(&self) -> Result<(), LdkError> {
        KVStoreSync::write(
            &*self.store,
            NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
            NETWORK_GRAPH_PERSISTENCE_KEY,
            self.network_graph.encode(),
        )
        .map_err(std_io)?;
        let scorer_bytes = self
            .scorer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .encode();
        KVStoreSync::write(
            &*self.store,
            SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
            SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
            SCORER_PERSISTENCE_KEY,
            scorer_bytes,
        )
        .map_err(std_io)?;
        Ok(())
    }

    /// In-flight records whose payment LDK does not know were never sent (a crash between
    /// writing our record and LDK persisting the payment): forget them so that a lookup says
    /// `NotFound` and the caller may send again.
    fn reconcile_payments(&self) {
        let known: HashSet<[u8; 32]> = self
            .channel_manager
            .list_recent_payments()
            .into_iter()
            .map(|p| match p {
                RecentPaymentDetails::Pending { payment_id, .. }
                | RecentPaymentDetails::Fulfilled { payment_id, .. }
                | RecentPaymentDetails::Abandoned { payment_id, .. }
                | RecentPaymentDetails::AwaitingInvoice { payment_id } => payment_id.0,
            })
            .collect();
        let mut st = self.lock();
        let stale: Vec<PaymentHash> = st
            .payments
            .iter()
            .filter(|(h, p)| p.state == PayState::InFlight && !known.contains(&h.0))
            .map(|(h, _)| *h)
            .collect();
        for h in stale {
            tracing::warn!(node = %self.config.alias, hash = %h, "in-flight payment unknown to LDK after restart: it was never sent");
            if self.kv.remove(PAYMENTS, &h.to_hex()).is_ok() {
                st.payments.remove(&h);
            }
        }
    }

    async fn reconnect_known_peers(&self) {
        let peers: Vec<(String, PeerRec)> = self
            .lock()
            .peers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, rec) in peers {
            let Some(pk) = NodePubkey::from_hex(&key).and_then(|p| from_node_pubkey(&p).ok())
            else {
                continue;
            };
            if self.peer_manager.peer_by_node_id(&pk).is_some() {
                continue;
            }
            let Ok(addr) = rec.addr.parse::<SocketAddr>() else {
                continue;
            };
            if let Some(fut) =
                lightning_net_tokio::connect_outbound(Arc::clone(&self.peer_manager), pk, addr)
                    .await
            {
                tokio::spawn(fut);
            }
        }
    }

    async fn run_event_loop(self: Arc<Self>, mut stop_rx: watch::Receiver<bool>) {
        let mut last_freshness = tokio::time::Instant::now();
        let mut last_ping = tokio::time::Instant::now();
        let mut last_graph = tokio::time::Instant::now();
        loop {
            self.process_once().await;
            let cm_fut = self
                .channel_manager
                .get_event_or_persistence_needed_future();
            let mon_fut = self.chain_monitor.get_update_future();
            tokio::select! {
                _ = cm_fut => {}
                _ = mon_fut => {}
                _ = tokio::time::sleep(LOOP_TICK) => {}
                _ = stop_rx.changed() => break,
            }
            if last_freshness.elapsed() >= FRESHNESS_TIMER {
                self.channel_manager.timer_tick_occurred();
                last_freshness = tokio::time::Instant::now();
            }
            if last_ping.elapsed() >= PING_TIMER {
                self.peer_manager.timer_tick_occurred();
                last_ping = tokio::time::Instant::now();
            }
            if last_graph.elapsed() >= GRAPH_PERSIST_TIMER {
                if let Err(e) = self.persist_graph_and_scorer() {
                    tracing::warn!(node = %self.config.alias, error = %e, "persisting graph");
                }
                last_graph = tokio::time::Instant::now();
            }
        }
        // Drain what is queued before stopping.
        self.process_once().await;
    }

    /// One round of what LDK's background processor does.
    async fn process_once(self: &Arc<Self>) {
        self.channel_manager
            .process_pending_events_async(|event| {
                let node = Arc::clone(self);
                async move { node.handle_event(event).await }
            })
            .await;
        // SpendableOutputs come from the monitors: the sweeper takes them (`handle_event`).
        self.chain_monitor
            .process_pending_events_async(|event| {
                let node = Arc::clone(self);
                async move { node.handle_event(event).await }
            })
            .await;
        if self.channel_manager.needs_pending_htlc_processing() {
            self.channel_manager.process_pending_htlc_forwards();
        }
        self.peer_manager.process_events();
        if self.channel_manager.get_and_clear_needs_persistence()
            && let Err(e) = self.persist_manager()
        {
            tracing::error!(node = %self.config.alias, error = %e, "persisting channel manager");
        }
    }

    async fn handle_event(self: Arc<Self>, event: Event) -> Result<(), ReplayEvent> {
        let alias = self.config.alias.as_str();
        match event {
            Event::FundingGenerationReady {
                temporary_channel_id,
                counterparty_node_id,
                channel_value_satoshis,
                output_script,
                ..
            } => {
                let tx = match &self.wallet {
                    None => synthetic_funding_tx(channel_value_satoshis, output_script),
                    Some(wallet) => {
                        let fee_rate = bitcoin::FeeRate::from_sat_per_kwu(u64::from(
                            self.fee_estimator
                                .get_est_sat_per_1000_weight(FUNDING_FEE_TARGET),
                        ));
                        match wallet
                            .build_funding_tx(output_script, channel_value_satoshis, fee_rate)
                            .await
                        {
                            Ok(tx) => tx,
                            Err(e) => {
                                tracing::warn!(
                                    node = alias,
                                    peer = %counterparty_node_id,
                                    error = %e,
                                    "cannot fund the channel; closing it"
                                );
                                // Nothing was signed or broadcast: the unfunded channel just
                                // goes away (the peer is told why).
                                if let Err(e) =
                                    self.channel_manager.force_close_broadcasting_latest_txn(
                                        &temporary_channel_id,
                                        &counterparty_node_id,
                                        format!("funding failed: {e}"),
                                    )
                                {
                                    tracing::warn!(node = alias, error = ?e, "closing unfunded channel");
                                }
                                return Ok(());
                            }
                        }
                    }
                };
                if let Err(e) = self.channel_manager.funding_transaction_generated(
                    temporary_channel_id,
                    counterparty_node_id,
                    tx,
                ) {
                    tracing::warn!(node = alias, error = ?e, "funding transaction refused");
                }
            }
            Event::SpendableOutputs {
                outputs,
                channel_id,
            } => match &self.sweeper {
                Some(s) => {
                    if s.track_spendable_outputs(outputs, channel_id, false, None)
                        .await
                        .is_err()
                    {
                        tracing::warn!(node = alias, "persisting outputs to sweep failed");
                        return Err(ReplayEvent());
                    }
                }
                None => {
                    tracing::warn!(
                        node = alias,
                        "spendable outputs but no wallet to sweep into"
                    );
                }
            },
            Event::OpenChannelRequest {
                temporary_channel_id,
                counterparty_node_id,
                ..
            } => {
                let user_channel_id: u128 = rand::random();
                let res = if self.config.accept_inbound_0conf {
                    self.channel_manager
                        .accept_inbound_channel_from_trusted_peer_0conf(
                            &temporary_channel_id,
                            &counterparty_node_id,
                            user_channel_id,
                            None,
                        )
                } else {
                    self.channel_manager.accept_inbound_channel(
                        &temporary_channel_id,
                        &counterparty_node_id,
                        user_channel_id,
                        None,
                    )
                };
                if let Err(e) = res {
                    tracing::warn!(node = alias, error = ?e, "accepting channel failed");
                }
            }
            Event::ChannelReady {
                channel_id,
                counterparty_node_id,
                ..
            } => {
                tracing::debug!(node = alias, %channel_id, peer = %counterparty_node_id, "channel ready");
            }
            Event::ChannelClosed {
                channel_id, reason, ..
            } => {
                tracing::warn!(node = alias, %channel_id, %reason, "channel closed");
            }
            Event::PaymentClaimable {
                payment_hash,
                onion_fields,
                amount_msat,
                purpose,
                ..
            } => {
                let hash = PaymentHash(payment_hash.0);
                let tlvs = onion_fields
                    .as_ref()
                    .map(|o| o.custom_tlvs().clone())
                    .unwrap_or_default();
                let records = custom_records_of(&tlvs);
                let keysend_preimage = match &purpose {
                    PaymentPurpose::SpontaneousPayment(p) => Some(Preimage(p.0)),
                    _ => None,
                };
                let is_bolt11 = matches!(purpose, PaymentPurpose::Bolt11InvoicePayment { .. });
                if !is_bolt11 && keysend_preimage.is_none() {
                    // BOLT 12: not supported.
                    self.channel_manager.fail_htlc_backwards(&payment_hash);
                    return Ok(());
                }
                if self.hold_incoming.load(Ordering::SeqCst) {
                    let rec = HeldRec {
                        amount_msat,
                        keysend_preimage: keysend_preimage.map(|p| p.to_hex()),
                        custom_records: records
                            .0
                            .iter()
                            .map(|(t, v)| (*t, hex::encode(v)))
                            .collect(),
                    };
                    let mut st = self.lock();
                    if self.kv.put(HELD, &hash.to_hex(), &rec).is_err() {
                        return Err(ReplayEvent());
                    }
                    st.held.insert(hash, rec);
                    tracing::info!(node = alias, %hash, "holding incoming payment");
                    return Ok(());
                }
                self.decide_claim(hash, amount_msat, keysend_preimage, records)
                    .await;
            }
            Event::PaymentClaimed {
                payment_hash,
                amount_msat,
                purpose,
                onion_fields,
                ..
            } => {
                let hash = PaymentHash(payment_hash.0);
                let tlvs = onion_fields
                    .as_ref()
                    .map(|o| o.custom_tlvs().clone())
                    .unwrap_or_default();
                self.on_claimed(hash, amount_msat, &purpose, custom_records_of(&tlvs))?;
            }
            Event::PaymentSent {
                payment_preimage,
                payment_hash,
                fee_paid_msat,
                ..
            } => {
                let hash = PaymentHash(payment_hash.0);
                let state = PayState::Succeeded {
                    preimage: Preimage(payment_preimage.0).to_hex(),
                    fee_msat: fee_paid_msat.unwrap_or(0),
                };
                self.set_payment_state(hash, state)?;
            }
            Event::PaymentFailed {
                payment_id,
                payment_hash,
                reason,
            } => {
                let hash = PaymentHash(payment_hash.map_or(payment_id.0, |h| h.0));
                let reason = crate::node::map_failure(reason);
                tracing::info!(node = alias, %hash, reason = reason.lnd_name(), "payment failed");
                self.set_payment_state(hash, PayState::failed(reason))?;
            }
            Event::PaymentPathFailed {
                ref path,
                short_channel_id,
                payment_failed_permanently,
                ..
            } => {
                let mut scorer = self.scorer.write().unwrap_or_else(|e| e.into_inner());
                match short_channel_id {
                    Some(scid) => scorer.payment_path_failed(path, scid, now_duration()),
                    None if payment_failed_permanently => {
                        scorer.probe_successful(path, now_duration())
                    }
                    None => {}
                }
            }
            Event::PaymentPathSuccessful { ref path, .. } => {
                self.scorer
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .payment_path_successful(path, now_duration());
            }
            Event::PaymentForwarded {
                total_fee_earned_msat,
                ..
            } => {
                tracing::debug!(node = alias, fee_msat = ?total_fee_earned_msat, "forwarded a payment");
            }
            Event::HTLCHandlingFailed { failure_type, .. } => {
                tracing::debug!(node = alias, ?failure_type, "HTLC handling failed");
            }
            other => {
                tracing::trace!(node = alias, event = ?other, "unhandled LDK event");
            }
        }
        Ok(())
    }

    /// Claims or fails a claimable payment.
    async fn decide_claim(
        &self,
        hash: PaymentHash,
        amount_msat: u64,
        keysend_preimage: Option<Preimage>,
        records: CustomRecords,
    ) {
        let ldk_hash = LdkHash(hash.0);
        match keysend_preimage {
            Some(preimage) => {
                let policy = self
                    .policy
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let accept = match policy {
                    Some(p) => tokio::time::timeout(POLICY_TIMEOUT, p.accept_keysend(&records))
                        .await
                        .unwrap_or(false),
                    None => false,
                };
                if accept && preimage.hash() == hash {
                    self.channel_manager
                        .claim_funds_with_known_custom_tlvs(PaymentPreimage(preimage.0));
                } else {
                    tracing::info!(node = %self.config.alias, %hash, "refusing keysend");
                    self.channel_manager.fail_htlc_backwards(&ldk_hash);
                }
            }
            None => {
                let now = satchel_domain::now_secs();
                let claim = {
                    let mut st = self.lock();
                    // An invoice taken for internal settlement is being paid by a wallet:
                    // this HTLC is failed back (checked under the lock the take holds).
                    let taken = self.lock_taken().contains_key(&hash);
                    match st.invoices.get(&hash).cloned() {
                        Some(mut rec)
                            if matches!(rec.state, InvState::Open | InvState::Claiming)
                                && !taken
                                && now < rec.expires_at
                                && rec.amount_msat.is_none_or(|a| amount_msat >= a)
                                && amount_msat > 0 =>
                        {
                            rec.state = InvState::Claiming;
                            match (rec.preimage(), self.kv.put(INVOICES, &hash.to_hex(), &rec)) {
                                (Some(p), Ok(())) => {
                                    st.invoices.insert(hash, rec);
                                    Some(p)
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    }
                };
                match claim {
                    Some(p) => self.channel_manager.claim_funds(PaymentPreimage(p.0)),
                    None => {
                        tracing::info!(node = %self.config.alias, %hash, amount_msat, "refusing payment for unknown, closed or underpaid invoice");
                        self.channel_manager.fail_htlc_backwards(&ldk_hash);
                    }
                }
            }
        }
    }

    fn on_claimed(
        &self,
        hash: PaymentHash,
        amount_msat: u64,
        purpose: &PaymentPurpose,
        records: CustomRecords,
    ) -> Result<(), ReplayEvent> {
        let now = satchel_domain::now_secs();
        let Ok(amount) = Msat::from_msat(amount_msat) else {
            return Ok(());
        };
        let kind = match purpose {
            PaymentPurpose::SpontaneousPayment(p) => IncomingKind::KeysendReceived {
                payment_hash: hash,
                preimage: Preimage(p.0),
                amount_received: amount,
                custom_records: records,
                settled_at_secs: now,
            },
            _ => IncomingKind::InvoiceSettled {
                payment_hash: hash,
                amount_received: amount,
                settled_at_secs: now,
            },
        };
        {
            let mut st = self.lock();
            if let Some(rec) = st.invoices.get(&hash).cloned()
                && !matches!(rec.state, InvState::Settled { .. })
            {
                let mut rec = rec;
                rec.state = InvState::Settled {
                    amount_msat,
                    settled_at: now,
                };
                if self.kv.put(INVOICES, &hash.to_hex(), &rec).is_err() {
                    return Err(ReplayEvent());
                }
                st.invoices.insert(hash, rec);
            }
            if st.event_hashes.contains(&hash) {
                // A replay of a claim we already recorded.
                return Ok(());
            }
            let event = IncomingEvent {
                seq: st.next_seq(),
                kind,
            };
            if self
                .kv
                .put(EVENTS, &event_key(event.seq), &EventRec::from_event(&event))
                .is_err()
            {
                return Err(ReplayEvent());
            }
            tracing::info!(node = %self.config.alias, %hash, amount_msat, seq = event.seq, "payment received");
            st.event_hashes.insert(hash);
            st.events.push(event);
        }
        self.events_notify.notify_waiters();
        Ok(())
    }

    fn set_payment_state(&self, hash: PaymentHash, state: PayState) -> Result<(), ReplayEvent> {
        {
            let mut st = self.lock();
            let now = satchel_domain::now_secs();
            let mut rec = st
                .payments
                .get(&hash)
                .cloned()
                .unwrap_or(crate::records::PaymentRec {
                    state: PayState::InFlight,
                    sends: 0,
                    amount_msat: 0,
                    fee_limit_msat: 0,
                    keysend: false,
                    updated_at: now,
                });
            // A success is final; a late failure of an older attempt must not overwrite it.
            if matches!(rec.state, PayState::Succeeded { .. }) && rec.state != state {
                return Ok(());
            }
            rec.state = state;
            rec.updated_at = now;
            if self.kv.put(PAYMENTS, &hash.to_hex(), &rec).is_err() {
                return Err(ReplayEvent());
            }
            st.payments.insert(hash, rec);
        }
        self.payments_notify.notify_waiters();
        Ok(())
    }
}

/// LDK's failure reasons in LND's vocabulary (see the crate docs).
pub(crate) fn map_failure(
    reason: Option<lightning::events::PaymentFailureReason>,
) -> satchel_domain::FailureReason {
    use lightning::events::PaymentFailureReason as R;
    use satchel_domain::FailureReason as F;
    match reason {
        Some(R::RouteNotFound) => F::NoRoute,
        Some(R::RecipientRejected) => F::IncorrectPaymentDetails,
        Some(R::RetriesExhausted | R::PaymentExpired) => F::Timeout,
        _ => F::Error,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use satchel_lightning::{PaymentLookup, Payments};

    use super::*;
    use crate::records::PaymentRec;

    /// A record written just before a crash, for a payment LDK never persisted, is forgotten
    /// at the next start: the payment was never sent and may be sent again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_record_unknown_to_ldk_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let node = LdkNode::start(LdkConfig::new(dir.path())).await.unwrap();
        let hash = Preimage::random().hash();
        let rec = PaymentRec {
            state: PayState::InFlight,
            sends: 1,
            amount_msat: 1000,
            fee_limit_msat: 0,
            keysend: true,
            updated_at: 0,
        };
        node.kv.put(PAYMENTS, &hash.to_hex(), &rec).unwrap();
        node.lock().payments.insert(hash, rec);
        assert_eq!(
            node.lookup_payment(hash).await.unwrap(),
            PaymentLookup::InFlight
        );
        node.stop().await.unwrap();
        let node = LdkNode::start(LdkConfig::new(dir.path())).await.unwrap();
        assert_eq!(
            node.lookup_payment(hash).await.unwrap(),
            PaymentLookup::NotFound
        );
        node.stop().await.unwrap();
    }
}
