//! [`Devnet`]: our node plus `alice`, `hub` and `carol`, all in this process, on an
//! in-process regtest chain.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, BlockHash, Txid};
use satchel_chain::{AutoMiner, Chain, ChainError, ChainServer};
use satchel_domain::{Bolt11, CustomRecords, Msat, NodePubkey, PaymentHash, Preimage};
use satchel_lightning::{
    DevnetChainTip, DevnetControl, DevnetPeer, IncomingPolicy, Invoices, LnError, NewInvoice,
    PayOutcome, PayRequest, PayTarget, Payments,
};

use crate::LdkError;
use crate::chain_source::ChainSource;
use crate::node::{GraphEdge, LdkConfig, LdkNode};

/// Peer names of the devnet.
pub const DEVNET_PEERS: [&str; 3] = ["alice", "hub", "carol"];

/// Channel sizes (sats) and what the funder pushes to the other side (msat).
const ALICE_US_SATS: u64 = 10_000_000;
const ALICE_US_PUSH_MSAT: u64 = 5_000_000_000;
const US_HUB_SATS: u64 = 10_000_000;
const US_HUB_PUSH_MSAT: u64 = 1_000_000_000;
const HUB_CAROL_SATS: u64 = 10_000_000;
const HUB_CAROL_PUSH_MSAT: u64 = 1_000_000_000;

/// What each devnet node's wallet gets from the faucet at the first start: enough for its
/// channels and for operator experiments (opens, sends).
const WALLET_FUNDS_SATS: u64 = 100_000_000;

/// The hub's forwarding policy.
pub(crate) const HUB_FEE_BASE_MSAT: u32 = 1000;
pub(crate) const HUB_FEE_PPM: u32 = 1000;

/// How long outside payments may take before `outside_pay`/`outside_keysend` give up waiting.
const OUTSIDE_PAY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long start waits for the channels to become usable.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long existing channels get to become usable again before a replacement is opened.
const REPLACE_AFTER: Duration = Duration::from_secs(5);

/// How often the devnet's nodes poll the chain: short, so a mined block is seen at once.
const CHAIN_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often they refresh fee estimates (the devnet chain's rate is a constant).
const FEE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The auto-miner mines a block this long after a transaction enters the mempool.
const AUTO_MINE_DELAY: Duration = Duration::from_millis(500);
/// Most blocks one `mine` or `reorg` call may add (each block is written and synced).
pub const MAX_BLOCKS_PER_CALL: u32 = 1008;
/// How long `mine`/`reorg` wait for the nodes to reach the new tip before answering anyway.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// Which dialect of the devnet chain our node speaks (the peers always use bitcoind RPC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DevnetChain {
    /// bitcoind JSON-RPC (`lightning-block-sync`).
    #[default]
    BitcoindRpc,
    /// Esplora REST (`lightning-transaction-sync`).
    Esplora,
}

/// Options of [`Devnet::start_with`].
#[derive(Clone, Default)]
pub struct DevnetOptions {
    /// Policy for keysends arriving at our node, in force from the first event handled (events
    /// that LDK replays at start included). Can also be set later on [`Devnet::node`].
    pub incoming_policy: Option<Arc<dyn IncomingPolicy>>,
}

/// Accepts every keysend (the devnet peers are wallets of their own).
struct AcceptAll;

#[async_trait]
impl IncomingPolicy for AcceptAll {
    async fn accept_keysend(&self, _records: &CustomRecords) -> bool {
        true
    }
}

/// The development network: our node (`satchel`) plus three LDK peers in this process, over
/// loopback, with zero-conf channels funded by real signed transactions from each funder's
/// on-chain wallet (every wallet gets coins from the chain's faucet at the first start; the
/// auto-miner confirms the funding transactions), all following one
/// in-process regtest chain (`satchel-chain`, persisted in `data_dir/chain`, served on a
/// loopback port as bitcoind RPC and Esplora, mined automatically shortly after a transaction
/// arrives, and on demand with [`Devnet::mine`]):
///
/// ```text
///  alice ──10M sat (5M pushed to us)──▶ satchel ──10M sat (1M pushed)──▶ hub ──10M sat (1M pushed)──▶ carol
/// ```
///
/// The hub charges 1000 msat + 1000 ppm and forwards into private channels. Channels are
/// created on the first start and persisted under the data directory (one subdirectory per
/// node); later starts reload them and reconnect. All channels are unannounced; the devnet
/// injects the topology into every node's network graph so that our router can reach carol.
pub struct Devnet {
    dir: PathBuf,
    chain: Chain,
    /// Dropped (stopped) by [`Devnet::stop`], so that a new devnet may open the chain.
    chain_server: Mutex<Option<ChainServer>>,
    auto_miner: Mutex<Option<AutoMiner>>,
    /// Held while the devnet runs: one devnet (and so one writer of the chain) per directory.
    lock_file: Mutex<Option<std::fs::File>>,
    node: Arc<LdkNode>,
    alice: Arc<LdkNode>,
    hub: Arc<LdkNode>,
    carol: Arc<LdkNode>,
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet")
            .field("dir", &self.dir)
            .field("node", &self.node.pubkey())
            .finish_non_exhaustive()
    }
}

fn config(dir: &Path, name: &str, source: ChainSource) -> LdkConfig {
    let mut c = LdkConfig::new(dir.join(name));
    c.alias = name.to_owned();
    c.chain_source = Some(source);
    c.chain_poll_interval = CHAIN_POLL_INTERVAL;
    c.fee_refresh_interval = FEE_REFRESH_INTERVAL;
    c
}

fn chain_err(e: ChainError) -> LdkError {
    LdkError::Chain(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Devnet {
    /// Starts the devnet under `data_dir` (created if missing): our node in
    /// `data_dir/satchel`, the peers in `data_dir/{alice,hub,carol}`. Returns once every
    /// channel is usable. Must run inside a tokio runtime.
    pub async fn start(data_dir: &Path) -> Result<Devnet, LdkError> {
        Devnet::start_with(data_dir, DevnetOptions::default()).await
    }

    /// [`Devnet::start`] with options.
    pub async fn start_with(data_dir: &Path, opts: DevnetOptions) -> Result<Devnet, LdkError> {
        Devnet::start_on(data_dir, opts, DevnetChain::default()).await
    }

    /// [`Devnet::start_with`], our node speaking `dialect` to the chain.
    pub async fn start_on(
        data_dir: &Path,
        opts: DevnetOptions,
        dialect: DevnetChain,
    ) -> Result<Devnet, LdkError> {
        satchel_lightning::fs_private::ensure_private_dir(data_dir)?;
        let lock_file = satchel_lightning::fs_private::private_open_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("LOCK"))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LdkError::Ldk(format!(
                    "{} is in use by another running devnet",
                    data_dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let chain_dir = data_dir.join("chain");
        satchel_lightning::fs_private::ensure_private_dir(&chain_dir)?;
        let chain = Chain::open(&chain_dir).map_err(chain_err)?;
        let server =
            ChainServer::start(chain.clone(), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let rpc = ChainSource::BitcoindRpc {
            url: server.rpc_url.clone(),
            user: server.credentials.user.clone(),
            password: server.credentials.password.clone(),
        };
        let ours_source = match dialect {
            DevnetChain::BitcoindRpc => rpc.clone(),
            DevnetChain::Esplora => ChainSource::Esplora {
                url: server.esplora_url.clone(),
            },
        };
        let accept_all: Arc<dyn IncomingPolicy> = Arc::new(AcceptAll);
        let mut started: Vec<Arc<LdkNode>> = Vec::new();
        let result = async {
            let mut ours = config(data_dir, "satchel", ours_source);
            ours.incoming_policy = opts.incoming_policy.clone();
            let node = LdkNode::start(ours).await?;
            started.push(Arc::clone(&node));
            let mut c = config(data_dir, "alice", rpc.clone());
            c.incoming_policy = Some(Arc::clone(&accept_all));
            let alice = LdkNode::start(c).await?;
            started.push(Arc::clone(&alice));
            let mut c = config(data_dir, "hub", rpc.clone());
            c.incoming_policy = Some(Arc::clone(&accept_all));
            c.forwarding_fee_base_msat = HUB_FEE_BASE_MSAT;
            c.forwarding_fee_proportional_millionths = HUB_FEE_PPM;
            c.accept_forwards_to_priv_channels = true;
            let hub = LdkNode::start(c).await?;
            started.push(Arc::clone(&hub));
            let mut c = config(data_dir, "carol", rpc.clone());
            c.incoming_policy = Some(Arc::clone(&accept_all));
            let carol = LdkNode::start(c).await?;
            started.push(Arc::clone(&carol));
            let devnet = Devnet {
                dir: data_dir.to_path_buf(),
                auto_miner: Mutex::new(Some(chain.spawn_auto_miner(AUTO_MINE_DELAY))),
                chain: chain.clone(),
                chain_server: Mutex::new(Some(server)),
                lock_file: Mutex::new(Some(lock_file)),
                node,
                alice,
                hub,
                carol,
            };
            devnet.fund_wallets().await?;
            let existing = devnet.channel_ids();
            devnet.wire_up().await?;
            devnet.wait_funding_confirmed(&existing).await?;
            Ok(devnet)
        }
        .await;
        if result.is_err() {
            for n in started {
                let _ = n.stop().await;
            }
        }
        result
    }

    /// Gives every node's wallet [`WALLET_FUNDS_SATS`] from the faucet at the devnet's first
    /// start (a wallet that has ever held coins is left alone), in one confirmed block, so the
    /// channels are funded by real signed transactions. A young chain first mines past the
    /// coinbase maturity (the faucet pays from mature coinbase outputs).
    async fn fund_wallets(&self) -> Result<(), LdkError> {
        let mut wallets = Vec::new();
        for node in self.all_nodes() {
            let wallet = node
                .wallet()
                .cloned()
                .ok_or_else(|| LdkError::Chain("a devnet node has no on-chain wallet".into()))?;
            wallet.sync().await.map_err(LdkError::Funding)?;
            wallets.push(wallet);
        }
        let mut paid = false;
        for wallet in &wallets {
            if !wallet.transactions().await.is_empty() {
                continue;
            }
            let address = wallet.new_address().await.map_err(LdkError::Funding)?;
            if self.chain.tip().height <= satchel_chain::params::COINBASE_MATURITY {
                self.chain
                    .mine(satchel_chain::params::COINBASE_MATURITY + 1, None)
                    .map_err(chain_err)?;
            }
            self.chain
                .fund(&address, WALLET_FUNDS_SATS)
                .map_err(chain_err)?;
            paid = true;
        }
        if paid {
            self.chain.mine(1, None).map_err(chain_err)?;
            for wallet in &wallets {
                wallet.sync().await.map_err(LdkError::Funding)?;
            }
        }
        Ok(())
    }

    /// Waits until the auto-miner has confirmed every channel's funding transaction and every
    /// node has seen it, so the devnet starts on a chain where the channels' funding is buried
    /// (a later `reorg` shallower than the funding's depth leaves the channels alone; a deeper
    /// one un-confirms it and LDK force-closes those channels, as it would on any chain).
    ///
    /// Only channels opened by this start are waited for: `existing` ones may come from a
    /// devnet created before channels were funded on chain (synthetic funding, never confirmed).
    async fn wait_funding_confirmed(&self, existing: &HashSet<String>) -> Result<(), LdkError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let confirmed = self.all_nodes().iter().all(|n| {
                n.list_channels()
                    .iter()
                    .filter(|c| !existing.contains(&c.channel_id))
                    .all(|c| c.confirmations.is_some_and(|k| k >= 1))
            });
            if confirmed && self.wait_nodes_on_tip().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LdkError::Timeout(
                    "devnet funding transactions did not confirm".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The ids of every node's channels.
    fn channel_ids(&self) -> HashSet<String> {
        self.all_nodes()
            .iter()
            .flat_map(|n| n.list_channels())
            .map(|c| c.channel_id)
            .collect()
    }

    /// Connects the nodes, opens the channels that do not exist yet, waits until all are
    /// usable and shares the topology.
    async fn wire_up(&self) -> Result<(), LdkError> {
        self.node
            .connect(self.alice.pubkey(), self.alice.listen_addr())
            .await?;
        self.node
            .connect(self.hub.pubkey(), self.hub.listen_addr())
            .await?;
        self.hub
            .connect(self.carol.pubkey(), self.carol.listen_addr())
            .await?;
        // Each pair of the topology needs one usable channel whose peer policy is known. A node
        // killed mid-payment can come back with a channel LDK force-closes on load (its manager
        // was older than its monitors); such a pair gets a fresh channel instead of blocking.
        let pairs: [(&Arc<LdkNode>, &Arc<LdkNode>, u64, u64); 3] = [
            (&self.alice, &self.node, ALICE_US_SATS, ALICE_US_PUSH_MSAT),
            (&self.node, &self.hub, US_HUB_SATS, US_HUB_PUSH_MSAT),
            (&self.hub, &self.carol, HUB_CAROL_SATS, HUB_CAROL_PUSH_MSAT),
        ];
        let has_any = |a: &LdkNode, b: &LdkNode| {
            a.list_channels()
                .iter()
                .any(|c| c.counterparty == b.pubkey())
        };
        let ready = |a: &LdkNode, b: &LdkNode| {
            let side = |x: &LdkNode, y: &LdkNode| {
                x.list_channels()
                    .iter()
                    .any(|c| c.counterparty == y.pubkey() && c.usable && c.forwarding_known)
            };
            side(a, b) && side(b, a)
        };
        for (a, b, sats, push) in pairs {
            if !has_any(a, b) {
                a.open_channel(b.pubkey(), sats, push).await?;
            }
        }
        let start = tokio::time::Instant::now();
        let deadline = start + READY_TIMEOUT;
        let mut replaced = false;
        loop {
            if pairs.iter().all(|(a, b, _, _)| ready(a, b)) {
                break;
            }
            if !replaced && tokio::time::Instant::now() >= start + REPLACE_AFTER {
                replaced = true;
                for (a, b, sats, push) in pairs {
                    if !ready(a, b) {
                        tracing::warn!(
                            "devnet: a channel did not come back usable; opening a replacement"
                        );
                        a.open_channel(b.pubkey(), sats, push).await?;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LdkError::Timeout(
                    "devnet channels did not become usable".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.share_topology()
    }

    /// The devnet's gossip: every node learns every node's channel directions.
    pub fn share_topology(&self) -> Result<(), LdkError> {
        let edges: Vec<GraphEdge> = self
            .all_nodes()
            .iter()
            .flat_map(|n| n.local_graph_edges())
            .collect();
        for n in self.all_nodes() {
            n.add_graph_edges(&edges)?;
        }
        Ok(())
    }

    fn all_nodes(&self) -> [&Arc<LdkNode>; 4] {
        [&self.node, &self.alice, &self.hub, &self.carol]
    }

    /// Our node (use it as `Arc<dyn LightningBackend>`).
    pub fn node(&self) -> Arc<LdkNode> {
        Arc::clone(&self.node)
    }

    /// A peer by name (`alice`, `hub`, `carol`).
    pub fn peer(&self, name: &str) -> Option<Arc<LdkNode>> {
        match name {
            "alice" => Some(Arc::clone(&self.alice)),
            "hub" => Some(Arc::clone(&self.hub)),
            "carol" => Some(Arc::clone(&self.carol)),
            _ => None,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops all four nodes (persisting everything), then the chain's miner and server. A new
    /// devnet can then be started on the same directory.
    pub async fn stop(&self) -> Result<(), LdkError> {
        let mut first_err = None;
        for n in [&self.carol, &self.hub, &self.alice, &self.node] {
            if let Err(e) = n.stop().await
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        drop(lock(&self.auto_miner).take());
        drop(lock(&self.chain_server).take());
        if let Some(f) = lock(&self.lock_file).take() {
            let _ = f.unlock();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The devnet's chain (tests: inspect the mempool, build blocks).
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The chain's best block: (height, hash).
    pub fn chain_tip(&self) -> (u32, BlockHash) {
        let t = self.chain.tip();
        (t.height, t.hash)
    }

    /// Where the chain is served as bitcoind RPC and as Esplora: `(rpc_url, esplora_url)`;
    /// `None` once stopped.
    pub fn chain_urls(&self) -> Option<(String, String)> {
        lock(&self.chain_server)
            .as_ref()
            .map(|s| (s.rpc_url.clone(), s.esplora_url.clone()))
    }

    fn check_chain_running(&self) -> Result<(), LdkError> {
        if lock(&self.chain_server).is_none() {
            return Err(LdkError::Stopped);
        }
        Ok(())
    }

    /// Mines `blocks` blocks (with the mempool's transactions, coinbases to the faucet), then
    /// waits until all four nodes have processed the new tip (answering anyway after a while:
    /// the blocks are mined either way). At most [`MAX_BLOCKS_PER_CALL`].
    pub async fn mine(&self, blocks: u32) -> Result<Vec<BlockHash>, LdkError> {
        self.check_chain_running()?;
        check_count(blocks)?;
        let hashes = self.chain.mine(blocks, None).map_err(chain_err)?;
        self.wait_nodes_on_tip().await;
        Ok(hashes)
    }

    /// Replaces the last `blocks` blocks with `blocks + 1` empty ones (their transactions go
    /// back to the mempool), then waits as [`Devnet::mine`] does. Returns the new blocks.
    pub async fn reorg(&self, blocks: u32) -> Result<Vec<BlockHash>, LdkError> {
        self.check_chain_running()?;
        check_count(blocks)?;
        let hashes = self.chain.reorg(blocks).map_err(chain_err)?;
        self.wait_nodes_on_tip().await;
        Ok(hashes)
    }

    /// Pays `sats` to a regtest `address` from the faucet; the auto-miner confirms it shortly.
    /// A young chain's faucet has no mature coins yet: then 101 blocks are mined first.
    pub async fn fund(&self, address: &str, sats: u64) -> Result<Txid, LdkError> {
        self.check_chain_running()?;
        let address = address
            .trim()
            .parse::<Address<NetworkUnchecked>>()
            .map_err(|e| LdkError::Chain(format!("invalid address: {e}")))?
            .require_network(bitcoin::Network::Regtest)
            .map_err(|e| LdkError::Chain(format!("not a regtest address: {e}")))?;
        match self.chain.fund(&address, sats) {
            Err(ChainError::InsufficientFunds { .. })
                if self.chain.tip().height <= satchel_chain::params::COINBASE_MATURITY =>
            {
                self.chain
                    .mine(satchel_chain::params::COINBASE_MATURITY + 1, None)
                    .map_err(chain_err)?;
                self.chain.fund(&address, sats).map_err(chain_err)
            }
            other => other.map_err(chain_err),
        }
    }

    /// Waits until every node's best block is the chain's tip, up to [`FOLLOW_TIMEOUT`].
    /// Returns whether they got there.
    pub async fn wait_nodes_on_tip(&self) -> bool {
        let deadline = tokio::time::Instant::now() + FOLLOW_TIMEOUT;
        loop {
            let tip = self.chain_tip();
            if self.all_nodes().iter().all(|n| n.best_block() == tip) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn peer_or_reject(&self, name: &str) -> Result<Arc<LdkNode>, LnError> {
        self.peer(name).ok_or_else(|| {
            LnError::Rejected(format!(
                "unknown devnet node {name:?} (known: {})",
                DEVNET_PEERS.join(", ")
            ))
        })
    }
}

fn check_count(blocks: u32) -> Result<(), LdkError> {
    if blocks == 0 || blocks > MAX_BLOCKS_PER_CALL {
        return Err(LdkError::Chain(format!(
            "block count must be 1 to {MAX_BLOCKS_PER_CALL}"
        )));
    }
    Ok(())
}

/// An error of the chain controls in the trait's terms: what the caller asked wrong is a
/// refusal, the rest a backend error.
fn control_err(e: LdkError) -> LnError {
    match e {
        LdkError::Chain(m) => LnError::Rejected(m),
        LdkError::Stopped => LnError::Transport("the devnet is stopped".into()),
        other => LnError::Transport(other.to_string()),
    }
}

/// A generous fee limit for the outside world's payments: 1% + 10 sat.
fn outside_fee_limit(amount: Msat) -> Msat {
    Msat::from_msat(amount.as_msat() / 100 + 10_000).unwrap_or(amount)
}

#[async_trait]
impl DevnetControl for Devnet {
    fn kind(&self) -> &'static str {
        "ldk-devnet"
    }

    async fn peers(&self) -> Result<Vec<DevnetPeer>, LnError> {
        Ok(DEVNET_PEERS
            .iter()
            .filter_map(|name| self.peer(name).map(|n| (*name, n)))
            .map(|(name, n)| {
                let chans = n.list_channels();
                DevnetPeer {
                    name: name.to_owned(),
                    pubkey: n.pubkey(),
                    outbound_msat: chans.iter().map(|c| c.outbound_msat).sum(),
                    inbound_msat: chans.iter().map(|c| c.inbound_msat).sum(),
                }
            })
            .collect())
    }

    async fn outside_invoice(
        &self,
        node: &str,
        amount: Option<Msat>,
        memo: &str,
    ) -> Result<Bolt11, LnError> {
        let peer = self.peer_or_reject(node)?;
        let mut end = memo.len().min(639);
        while !memo.is_char_boundary(end) {
            end -= 1;
        }
        peer.create_invoice(NewInvoice {
            amount,
            memo: memo[..end].to_owned(),
            description_hash: None,
            expiry_secs: 3600,
            preimage: Preimage::random(),
        })
        .await
    }

    async fn outside_pay(
        &self,
        node: &str,
        invoice: &Bolt11,
        amount: Option<Msat>,
    ) -> Result<PayOutcome, LnError> {
        let peer = self.peer_or_reject(node)?;
        let amount = amount.or(invoice.amount()).ok_or_else(|| {
            LnError::Rejected("amount required for an amountless invoice".to_owned())
        })?;
        peer.pay(PayRequest {
            target: PayTarget::Bolt11 {
                invoice: invoice.clone(),
                amount,
            },
            fee_limit: outside_fee_limit(amount),
            timeout: OUTSIDE_PAY_TIMEOUT,
        })
        .await
    }

    async fn chain_tip(&self) -> Result<Option<DevnetChainTip>, LnError> {
        let (height, hash) = self.chain_tip();
        Ok(Some(DevnetChainTip {
            height,
            hash: hash.to_string(),
        }))
    }

    async fn mine(&self, blocks: u32) -> Result<Vec<String>, LnError> {
        Devnet::mine(self, blocks)
            .await
            .map(|h| h.iter().map(ToString::to_string).collect())
            .map_err(control_err)
    }

    async fn reorg(&self, blocks: u32) -> Result<Vec<String>, LnError> {
        Devnet::reorg(self, blocks)
            .await
            .map(|h| h.iter().map(ToString::to_string).collect())
            .map_err(control_err)
    }

    async fn fund(&self, address: &str, sats: u64) -> Result<String, LnError> {
        Devnet::fund(self, address, sats)
            .await
            .map(|t| t.to_string())
            .map_err(control_err)
    }

    async fn outside_keysend(
        &self,
        node: &str,
        dest: NodePubkey,
        amount: Msat,
        records: CustomRecords,
    ) -> Result<(PaymentHash, PayOutcome), LnError> {
        let peer = self.peer_or_reject(node)?;
        let preimage = Preimage::random();
        let outcome = peer
            .pay(PayRequest {
                target: PayTarget::Keysend {
                    dest,
                    amount,
                    preimage,
                    custom_records: records,
                },
                fee_limit: outside_fee_limit(amount),
                timeout: OUTSIDE_PAY_TIMEOUT,
            })
            .await?;
        Ok((preimage.hash(), outcome))
    }
}
