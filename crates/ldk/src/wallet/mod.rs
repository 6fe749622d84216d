//! The node's on-chain wallet ([`OnchainWallet`]) on [BDK](https://bitcoindevkit.org).
//!
//! # Keys
//!
//! The wallet's keys come from the node seed (`<data_dir>/keys_seed`, 32 bytes) like LDK's, but
//! on paths LDK never uses: the seed is the BIP32 master seed (as it is for LDK's
//! `KeysManager`), and the wallet takes BIP84's P2WPKH accounts under it,
//! `m/84'/c'/0'/0/*` for receive and `m/84'/c'/0'/1/*` for change (`c` = 0 on mainnet, 1 on the
//! test networks). LDK 0.2 derives its node key, destination and shutdown keys, channel keys
//! and the rest from `m/0'` … `m/8'`, so no wallet key is an LDK key, while the wallet is
//! the standard BIP84 wallet of that seed: the same seed always gives the same addresses, and
//! any BIP84 wallet given the master key recovers the coins.
//!
//! # Durability
//!
//! Everything BDK changes (revealed indices, transactions, checkpoints) is staged and written to
//! `<wallet_dir>/changeset.json` (see `store.rs`: fsynced, atomic rename) *before* an address
//! is handed out or a transaction is returned, so a revealed address is never handed out twice
//! and the inputs of a returned transaction are never spent again by this wallet, even across a
//! crash.
//!
//! # Chain sources
//!
//! [`ChainSource::Esplora`] syncs with `bdk_esplora` (a full scan with a stop gap on the
//! first sync after opening, which also finds coins of a restored seed, then the revealed
//! scripts only). [`ChainSource::BitcoindRpc`] walks every block from the newest
//! checkpoint that bitcoind still has to its tip (`rpc.rs` for the calls), keeps the
//! transactions paying our scripts (revealed or within BDK's lookahead) or spending our
//! outputs, and hands BDK one update per 500 blocks with sparse checkpoints; then it looks at
//! the mempool (new transactions fetched once; ours no longer there count as evicted). A new
//! wallet's first walk starts at genesis: quick on regtest, long on mainnet until a wallet
//! birthday exists.
//!
//! # Transactions the wallet builds
//!
//! [`OnchainWallet::send_to_address`] and [`OnchainWallet::build_funding_tx`] return a signed
//! transaction and do not broadcast it: the caller does (the node's broadcaster, or LDK itself
//! for a channel funding). The wallet records it as unconfirmed at once, so its inputs are not
//! selected again. A transaction that the chain source does not know by a later sync counts as
//! evicted and its inputs become spendable again: broadcast before the next sync.

mod rpc;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bdk_esplora::EsploraAsyncExt;
use bdk_esplora::esplora_client;
use bdk_wallet::chain::{BlockId, ChainPosition, CheckPoint, ConfirmationBlockTime, TxUpdate};
use bdk_wallet::error::CreateTxError;
use bdk_wallet::template::Bip84;
use bdk_wallet::{KeychainKind, PersistedWallet, SignOptions, Wallet};
use bitcoin::address::NetworkUnchecked;
use bitcoin::bip32::Xpriv;
use bitcoin::{
    Address, Amount, Block, BlockHash, FeeRate, Network, OutPoint, ScriptBuf, Transaction, Txid,
};
use lightning::sign::ChangeDestinationSource;
use lightning::util::async_poll::AsyncResult;

use crate::chain_source::ChainSource;
use rpc::RpcClient;
pub use store::StoreError;
use store::WalletFile;

/// Addresses past the last used one that a full scan looks at before it stops.
const STOP_GAP: usize = 20;
/// Esplora requests a sync keeps in flight.
const PARALLEL_REQUESTS: usize = 4;
/// Blocks the bitcoind walk looks at between two updates (and writes) of the wallet.
const BLOCKS_PER_BATCH: u32 = 500;
/// Times the bitcoind walk starts again when the chain changes under it.
const WALK_ATTEMPTS: u32 = 3;

/// Errors of the on-chain wallet.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The wallet file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node seed could not be read.
    #[error("cannot read the node seed: {0}")]
    Seed(std::io::Error),
    /// The wallet file belongs to another seed or network, or the keys are unusable.
    #[error("wallet cannot be opened: {0}")]
    Open(String),
    /// The chain source failed or answered something unusable.
    #[error("chain source: {0}")]
    ChainSource(String),
    /// The chain source's chain does not connect to what the wallet has seen (another network).
    #[error("chain source does not share the wallet's chain: {0}")]
    ChainMismatch(String),
    /// The address is for another network than the wallet's.
    #[error("address is not a {expected} address")]
    WrongNetwork {
        /// The wallet's network.
        expected: Network,
    },
    /// The amount is below the output's dust limit.
    #[error("{amount} is below the dust limit of {min} for this output")]
    Dust {
        /// The requested amount.
        amount: Amount,
        /// The smallest amount this output script may carry.
        min: Amount,
    },
    /// The wallet cannot pay the amount plus fees.
    #[error("insufficient funds: {needed} needed, {available} available")]
    InsufficientFunds {
        /// Amount (with fees, when coin selection got that far) that was needed.
        needed: Amount,
        /// What the wallet could spend.
        available: Amount,
    },
    /// BDK refused to build the transaction for another reason.
    #[error("cannot build transaction: {0}")]
    Build(String),
    /// Signing failed or left inputs unsigned.
    #[error("cannot sign transaction: {0}")]
    Sign(String),
}

/// The wallet's balance. Each part in [`Amount`] (satoshis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalletBalance {
    /// Confirmed and spendable.
    pub confirmed: Amount,
    /// Unconfirmed outputs of our own transactions (change).
    pub trusted_pending: Amount,
    /// Unconfirmed outputs others sent us.
    pub untrusted_pending: Amount,
    /// Coinbase outputs that have not matured.
    pub immature: Amount,
}

impl WalletBalance {
    /// Everything the wallet sees, mature or not, confirmed or not (`None` on overflow).
    pub fn total(&self) -> Option<Amount> {
        self.confirmed
            .checked_add(self.trusted_pending)?
            .checked_add(self.untrusted_pending)?
            .checked_add(self.immature)
    }
}

/// An unspent output of the wallet, for operator listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtxoSummary {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value.
    pub value: Amount,
    /// Whether it is on the change keychain.
    pub is_change: bool,
    /// Height of the block confirming it, `None` while unconfirmed.
    pub confirmation_height: Option<u32>,
}

/// A transaction touching the wallet, for operator listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSummary {
    /// Its id.
    pub txid: Txid,
    /// Sum of our outputs it spends.
    pub sent: Amount,
    /// Sum of its outputs that are ours.
    pub received: Amount,
    /// Its fee, when every input's value is known.
    pub fee: Option<Amount>,
    /// Height of the block confirming it, `None` while unconfirmed.
    pub confirmation_height: Option<u32>,
    /// That block's time (seconds since the Unix epoch).
    pub confirmation_time_secs: Option<u64>,
}

enum Source {
    Esplora(esplora_client::AsyncClient),
    Rpc(RpcClient),
}

struct State {
    wallet: PersistedWallet<WalletFile>,
    file: WalletFile,
    /// Whether the first (full-scan) Esplora sync of this process has run.
    scanned: bool,
    /// Mempool txids the bitcoind path has already examined (fetched or found ours).
    mempool_seen: HashSet<Txid>,
}

/// The node's BDK wallet: BIP84 keys from the node seed, persisted in its own directory,
/// synced from Esplora or bitcoind. Cheap to share behind an `Arc`; its methods lock one
/// async mutex and never hold it across a network request.
pub struct OnchainWallet {
    network: Network,
    source: Source,
    state: tokio::sync::Mutex<State>,
    /// One sync at a time (a sync releases `state` during its requests).
    syncing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OnchainWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnchainWallet")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// How long one Esplora request may take.
const ESPLORA_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client for Esplora: HTTPS on the workspace's rustls provider (aws-lc-rs) with the
/// platform's trust store, or plain HTTP (a local Esplora).
pub(crate) fn esplora_http_client() -> Result<reqwest_esplora::Client, WalletError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let failed = |e: String| WalletError::ChainSource(format!("Esplora client: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| failed(e.to_string()))?
        .with_no_client_auth();
    reqwest_esplora::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(ESPLORA_TIMEOUT)
        .build()
        .map_err(|e| failed(e.to_string()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn confirmation_height(pos: &ChainPosition<ConfirmationBlockTime>) -> Option<u32> {
    match pos {
        ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
        ChainPosition::Unconfirmed { .. } => None,
    }
}

impl OnchainWallet {
    /// Opens the wallet of the node whose data directory is `node_data_dir`: the seed is its
    /// `keys_seed` (created if missing, exactly as the node does) and the wallet lives in
    /// `<node_data_dir>/wallet/`.
    pub async fn open_for_node(
        node_data_dir: &Path,
        network: Network,
        source: ChainSource,
    ) -> Result<OnchainWallet, WalletError> {
        satchel_lightning::fs_private::ensure_private_dir(node_data_dir)
            .map_err(WalletError::Seed)?;
        let seed = crate::support::load_or_create_seed(&node_data_dir.join("keys_seed"))
            .map_err(WalletError::Seed)?;
        OnchainWallet::open(&node_data_dir.join("wallet"), &seed, network, source).await
    }

    /// Opens (or creates) the wallet of `seed` on `network` in `wallet_dir`. A wallet file of
    /// another seed or network is refused.
    pub async fn open(
        wallet_dir: &Path,
        seed: &[u8; 32],
        network: Network,
        source: ChainSource,
    ) -> Result<OnchainWallet, WalletError> {
        satchel_lightning::fs_private::ensure_private_dir(wallet_dir).map_err(|e| {
            WalletError::Store(StoreError::Io {
                path: wallet_dir.to_owned(),
                source: e,
            })
        })?;
        let source = match source {
            ChainSource::Esplora { url } => {
                Source::Esplora(esplora_client::AsyncClient::from_client(
                    url.trim_end_matches('/').to_owned(),
                    esplora_http_client()?,
                ))
            }
            ChainSource::BitcoindRpc {
                url,
                user,
                password,
            } => Source::Rpc(RpcClient::new(&url, &user, &password)?),
        };
        let master = Xpriv::new_master(network, seed)
            .map_err(|e| WalletError::Open(format!("bad seed: {e}")))?;
        let mut file = WalletFile::new(wallet_dir);
        let loaded = Wallet::load()
            .descriptor(
                KeychainKind::External,
                Some(Bip84(master, KeychainKind::External)),
            )
            .descriptor(
                KeychainKind::Internal,
                Some(Bip84(master, KeychainKind::Internal)),
            )
            .extract_keys()
            .check_network(network)
            .load_wallet_async(&mut file)
            .await
            .map_err(|e| match e {
                bdk_wallet::LoadWithPersistError::Persist(e) => WalletError::Store(e),
                other => WalletError::Open(other.to_string()),
            })?;
        let wallet = match loaded {
            Some(w) => w,
            None => Wallet::create(
                Bip84(master, KeychainKind::External),
                Bip84(master, KeychainKind::Internal),
            )
            .network(network)
            .create_wallet_async(&mut file)
            .await
            .map_err(|e| match e {
                bdk_wallet::CreateWithPersistError::Persist(e) => WalletError::Store(e),
                other => WalletError::Open(other.to_string()),
            })?,
        };
        Ok(OnchainWallet {
            network,
            source,
            state: tokio::sync::Mutex::new(State {
                wallet,
                file,
                scanned: false,
                mempool_seen: HashSet::new(),
            }),
            syncing: tokio::sync::Mutex::new(()),
        })
    }

    /// The wallet's network.
    pub fn network(&self) -> Network {
        self.network
    }

    async fn persist(st: &mut State) -> Result<(), WalletError> {
        let State { wallet, file, .. } = st;
        wallet.persist_async(file).await?;
        Ok(())
    }

    /// A receive address never handed out before (durably revealed before it is returned).
    pub async fn new_address(&self) -> Result<Address, WalletError> {
        let mut st = self.state.lock().await;
        let info = st.wallet.reveal_next_address(KeychainKind::External);
        Self::persist(&mut st).await?;
        Ok(info.address)
    }

    /// A fresh change script for funds coming back to us from the node (LDK's sweeps of
    /// closed channels: the `ChangeDestinationSource`). Durably revealed before it is returned,
    /// so later syncs watch it.
    pub async fn sweep_script(&self) -> Result<ScriptBuf, WalletError> {
        let mut st = self.state.lock().await;
        let info = st.wallet.reveal_next_address(KeychainKind::Internal);
        Self::persist(&mut st).await?;
        Ok(info.address.script_pubkey())
    }

    /// The balance as of the last sync (plus the wallet's own unbroadcast transactions).
    pub async fn balance(&self) -> WalletBalance {
        let st = self.state.lock().await;
        let b = st.wallet.balance();
        WalletBalance {
            confirmed: b.confirmed,
            trusted_pending: b.trusted_pending,
            untrusted_pending: b.untrusted_pending,
            immature: b.immature,
        }
    }

    /// Height of the last block the wallet has synced to.
    pub async fn synced_height(&self) -> u32 {
        self.state.lock().await.wallet.latest_checkpoint().height()
    }

    /// Unspent outputs, oldest confirmation first.
    pub async fn list_unspent(&self) -> Vec<UtxoSummary> {
        let st = self.state.lock().await;
        let mut out: Vec<UtxoSummary> = st
            .wallet
            .list_unspent()
            .map(|u| UtxoSummary {
                outpoint: u.outpoint,
                value: u.txout.value,
                is_change: u.keychain == KeychainKind::Internal,
                confirmation_height: confirmation_height(&u.chain_position),
            })
            .collect();
        out.sort_by_key(|u| (u.confirmation_height.unwrap_or(u32::MAX), u.outpoint));
        out
    }

    /// Transactions touching the wallet (canonical ones: not replaced or evicted), oldest
    /// confirmation first, unconfirmed last.
    pub async fn transactions(&self) -> Vec<TxSummary> {
        let st = self.state.lock().await;
        let mut out: Vec<TxSummary> = st
            .wallet
            .transactions()
            .map(|t| {
                let (sent, received) = st.wallet.sent_and_received(&t.tx_node.tx);
                let (height, time) = match &t.chain_position {
                    ChainPosition::Confirmed { anchor, .. } => {
                        (Some(anchor.block_id.height), Some(anchor.confirmation_time))
                    }
                    ChainPosition::Unconfirmed { .. } => (None, None),
                };
                TxSummary {
                    txid: t.tx_node.txid,
                    sent,
                    received,
                    fee: st.wallet.calculate_fee(&t.tx_node.tx).ok(),
                    confirmation_height: height,
                    confirmation_time_secs: time,
                }
            })
            .collect();
        out.sort_by_key(|t| (t.confirmation_height.unwrap_or(u32::MAX), t.txid));
        out
    }

    /// A signed transaction paying `amount` to `address` at `fee_rate`, change back to us. Not
    /// broadcast: the caller broadcasts it. Its inputs are reserved durably before it is
    /// returned.
    pub async fn send_to_address(
        &self,
        address: &Address<NetworkUnchecked>,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let address = address.clone().require_network(self.network).map_err(|_| {
            WalletError::WrongNetwork {
                expected: self.network,
            }
        })?;
        self.pay_script(address.script_pubkey(), amount, fee_rate)
            .await
    }

    /// A signed transaction with an output of exactly `amount_sats` to `output_script` (a
    /// channel's funding output from LDK's `FundingGenerationReady`), change back to us, only
    /// segwit inputs. Not broadcast: it goes to `funding_transaction_generated` and LDK
    /// broadcasts it. Its inputs are reserved durably before it is returned.
    pub async fn build_funding_tx(
        &self,
        output_script: ScriptBuf,
        amount_sats: u64,
        fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        self.pay_script(output_script, Amount::from_sat(amount_sats), fee_rate)
            .await
    }

    async fn pay_script(
        &self,
        script: ScriptBuf,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let min = script.minimal_non_dust();
        if amount < min {
            return Err(WalletError::Dust { amount, min });
        }
        let mut st = self.state.lock().await;
        let available = st.wallet.balance().trusted_spendable();
        if amount > available {
            return Err(WalletError::InsufficientFunds {
                needed: amount,
                available,
            });
        }
        // Others' unconfirmed payments stay out of coin selection (they may never confirm, and
        // a channel funded from them would hang), as they stay out of `available`. Our own
        // unconfirmed change may be spent.
        let untrusted: Vec<OutPoint> = st
            .wallet
            .list_unspent()
            .filter(|u| !u.chain_position.is_confirmed() && u.keychain == KeychainKind::External)
            .map(|u| u.outpoint)
            .collect();
        let mut builder = st.wallet.build_tx();
        builder
            .add_recipient(script, amount)
            .fee_rate(fee_rate)
            .unspendable(untrusted);
        let mut psbt = builder.finish().map_err(|e| match e {
            CreateTxError::CoinSelection(e) => WalletError::InsufficientFunds {
                needed: e.needed,
                available: e.available,
            },
            CreateTxError::OutputBelowDustLimit(_) => WalletError::Dust { amount, min },
            other => WalletError::Build(other.to_string()),
        })?;
        let finalized = st
            .wallet
            .sign(&mut psbt, SignOptions::default())
            .map_err(|e| WalletError::Sign(e.to_string()))?;
        if !finalized {
            return Err(WalletError::Sign("not every input could be signed".into()));
        }
        let tx = psbt
            .extract_tx()
            .map_err(|e| WalletError::Build(e.to_string()))?;
        // Ours from now on: its inputs count as spent and its change as trusted pending.
        st.wallet
            .apply_unconfirmed_txs([(Arc::new(tx.clone()), now_secs())]);
        Self::persist(&mut st).await?;
        Ok(tx)
    }

    /// Brings the wallet up to the chain source's tip (blocks and mempool) and persists it.
    pub async fn sync(&self) -> Result<(), WalletError> {
        let _one_at_a_time = self.syncing.lock().await;
        match &self.source {
            Source::Esplora(client) => self.sync_esplora(client).await,
            Source::Rpc(rpc) => {
                for _ in 0..WALK_ATTEMPTS {
                    if self.sync_rpc(rpc).await? == Walk::Done {
                        return Ok(());
                    }
                }
                Err(WalletError::ChainSource(format!(
                    "bitcoind's chain changed under {WALK_ATTEMPTS} syncs in a row"
                )))
            }
        }
    }

    async fn sync_esplora(&self, client: &esplora_client::AsyncClient) -> Result<(), WalletError> {
        let failed =
            |e: Box<esplora_client::Error>| WalletError::ChainSource(format!("Esplora: {e}"));
        let (full, sync) = {
            let st = self.state.lock().await;
            if st.scanned {
                (
                    None,
                    Some(st.wallet.start_sync_with_revealed_spks().build()),
                )
            } else {
                (Some(st.wallet.start_full_scan().build()), None)
            }
        };
        let update: bdk_wallet::Update = match (full, sync) {
            (Some(req), _) => client
                .full_scan(req, STOP_GAP, PARALLEL_REQUESTS)
                .await
                .map_err(failed)?
                .into(),
            (None, Some(req)) => client
                .sync(req, PARALLEL_REQUESTS)
                .await
                .map_err(failed)?
                .into(),
            (None, None) => return Ok(()),
        };
        let mut st = self.state.lock().await;
        st.wallet
            .apply_update(update)
            .map_err(|e| WalletError::ChainMismatch(e.to_string()))?;
        Self::persist(&mut st).await?;
        st.scanned = true;
        Ok(())
    }

    /// One bitcoind walk: from the newest checkpoint bitcoind still has to its tip, handing
    /// BDK only the blocks that matter (sparse checkpoints, like an Esplora update): the start,
    /// bitcoind's hashes at our other checkpoint heights (which invalidates what a reorg
    /// replaced), the blocks with our transactions, and the end of each batch.
    async fn sync_rpc(&self, rpc: &RpcClient) -> Result<Walk, WalletError> {
        // Newest first.
        let local: Vec<BlockId> = {
            let st = self.state.lock().await;
            st.wallet.checkpoints().map(|cp| cp.block_id()).collect()
        };
        let tip = rpc.block_count().await?;
        let mut agreed = None;
        for cp in local.iter().filter(|cp| cp.height <= tip) {
            if rpc.block_hash(cp.height).await? == cp.hash {
                agreed = Some(*cp);
                break;
            }
        }
        let Some(agreed) = agreed else {
            return Err(WalletError::ChainMismatch(
                "bitcoind has none of the wallet's blocks, not even its genesis".into(),
            ));
        };
        let replaced: HashSet<u32> = local
            .iter()
            .map(|cp| cp.height)
            .filter(|h| *h > agreed.height)
            .collect();
        let mut ours = {
            let st = self.state.lock().await;
            Ours::of(&st.wallet)
        };
        let mut batch = Batch::new(agreed);
        let mut prev = agreed;
        for height in agreed.height.saturating_add(1)..=tip {
            let hash = rpc.block_hash(height).await?;
            let block = rpc.block(&hash).await?;
            if block.header.prev_blockhash != prev.hash || block.block_hash() != hash {
                // A reorg under the walk: keep what connects, start again from agreement.
                self.apply_batch(batch, prev).await?;
                return Ok(Walk::ChainMoved);
            }
            let id = BlockId { height, hash };
            if replaced.contains(&height) {
                batch.blocks.insert(height, hash);
            }
            {
                let st = self.state.lock().await;
                ours.scan(&st.wallet, &block, id, &mut batch);
            }
            prev = id;
            if height == tip || height - batch.base_height >= BLOCKS_PER_BATCH {
                self.apply_batch(std::mem::replace(&mut batch, Batch::new(id)), id)
                    .await?;
            }
        }
        self.sync_rpc_mempool(rpc).await?;
        Ok(Walk::Done)
    }

    /// Applies a batch of the walk, ending at `end`, and persists it.
    async fn apply_batch(&self, mut batch: Batch, end: BlockId) -> Result<(), WalletError> {
        if end.height == batch.base_height {
            return Ok(());
        }
        batch.blocks.insert(end.height, end.hash);
        let chain = CheckPoint::from_block_ids(
            batch
                .blocks
                .into_iter()
                .map(|(height, hash)| BlockId { height, hash }),
        )
        .map_err(|_| WalletError::ChainSource("bitcoind walk: blocks out of order".into()))?;
        let mut tx_update = TxUpdate::default();
        tx_update.txs = batch.txs;
        tx_update.anchors = batch.anchors;
        let mut st = self.state.lock().await;
        st.wallet
            .apply_update(bdk_wallet::Update {
                last_active_indices: batch.last_active,
                tx_update,
                chain: Some(chain),
            })
            .map_err(|e| WalletError::ChainMismatch(e.to_string()))?;
        Self::persist(&mut st).await
    }

    async fn sync_rpc_mempool(&self, rpc: &RpcClient) -> Result<(), WalletError> {
        let in_mempool = rpc.mempool_txids().await?;
        let unseen: Vec<Txid> = {
            let st = self.state.lock().await;
            in_mempool
                .iter()
                .filter(|t| !st.mempool_seen.contains(*t) && st.wallet.get_tx(**t).is_none())
                .copied()
                .collect()
        };
        let mut fetched = Vec::with_capacity(unseen.len());
        for txid in &unseen {
            if let Some(tx) = rpc.transaction(txid).await? {
                fetched.push(Arc::new(tx));
            }
        }
        let now = now_secs();
        let mut st = self.state.lock().await;
        // Our unconfirmed transactions: still seen now, or gone (replaced, dropped, never sent).
        let (ours_seen, ours_gone): (Vec<_>, Vec<_>) = st
            .wallet
            .transactions()
            .filter(|t| !t.chain_position.is_confirmed())
            .map(|t| (t.tx_node.txid, t.tx_node.tx.clone()))
            .partition(|(txid, _)| in_mempool.contains(txid));
        st.wallet.apply_unconfirmed_txs(
            fetched
                .into_iter()
                .chain(ours_seen.into_iter().map(|(_, tx)| tx))
                .map(|tx| (tx, now)),
        );
        st.wallet
            .apply_evicted_txs(ours_gone.into_iter().map(|(txid, _)| (txid, now)));
        st.mempool_seen = in_mempool;
        Self::persist(&mut st).await
    }
}

/// What one batch of the bitcoind walk hands BDK.
struct Batch {
    base_height: u32,
    /// The checkpoints of the update (height → hash), the batch's base included.
    blocks: BTreeMap<u32, BlockHash>,
    txs: Vec<Arc<Transaction>>,
    anchors: BTreeSet<(ConfirmationBlockTime, Txid)>,
    last_active: BTreeMap<KeychainKind, u32>,
}

impl Batch {
    fn new(base: BlockId) -> Batch {
        Batch {
            base_height: base.height,
            blocks: [(base.height, base.hash)].into(),
            txs: Vec::new(),
            anchors: BTreeSet::new(),
            last_active: BTreeMap::new(),
        }
    }
}

/// The outputs the walk knows to be ours: the wallet's, plus those it finds on the way (a
/// block may pay us and spend that output again).
struct Ours {
    outpoints: HashSet<OutPoint>,
}

impl Ours {
    fn of(wallet: &Wallet) -> Ours {
        Ours {
            outpoints: wallet
                .spk_index()
                .outpoints()
                .iter()
                .map(|(_, op)| *op)
                .collect(),
        }
    }

    /// Adds `block`'s transactions that pay one of our scripts (revealed or within the
    /// lookahead) or spend one of our outputs to `batch`.
    fn scan(&mut self, wallet: &Wallet, block: &Block, id: BlockId, batch: &mut Batch) {
        let mut any = false;
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            let mut relevant = tx
                .input
                .iter()
                .any(|i| self.outpoints.contains(&i.previous_output));
            for (vout, out) in tx.output.iter().enumerate() {
                if let Some(&(keychain, index)) =
                    wallet.spk_index().index_of_spk(out.script_pubkey.clone())
                {
                    relevant = true;
                    let vout = u32::try_from(vout).unwrap_or(u32::MAX);
                    self.outpoints.insert(OutPoint { txid, vout });
                    let last = batch.last_active.entry(keychain).or_insert(index);
                    *last = (*last).max(index);
                }
            }
            if relevant {
                any = true;
                batch.txs.push(Arc::new(tx.clone()));
                batch.anchors.insert((
                    ConfirmationBlockTime {
                        block_id: id,
                        confirmation_time: u64::from(block.header.time),
                    },
                    txid,
                ));
            }
        }
        if any {
            batch.blocks.insert(id.height, id.hash);
        }
    }
}

/// How a bitcoind walk ended.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// At bitcoind's tip, mempool looked at.
    Done,
    /// A block did not connect to the one before it (a reorg during the walk): walk again.
    ChainMoved,
}

impl ChangeDestinationSource for OnchainWallet {
    fn get_change_destination_script<'a>(&'a self) -> AsyncResult<'a, ScriptBuf, ()> {
        Box::pin(async move {
            self.sweep_script().await.map_err(|e| {
                tracing::error!(error = %e, "on-chain wallet: no change script for a sweep");
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_esplora_client_builds_with_the_platform_trust_store() {
        // No `ring` beside aws-lc-rs and a loadable trust store: building must not fail or
        // panic for want of a process-wide rustls provider.
        assert!(esplora_http_client().is_ok());
    }
}
