//! Satchel's embedded Lightning node on [LDK](https://lightningdevkit.org), and an in-process
//! development network of LDK peers.
//!
//! * [`LdkNode`] is one real Lightning node: keys from a seed in its data directory, channel
//!   manager, channel monitors, network graph, scorer and router, BOLT 8 peer connections over
//!   TCP (loopback), and an event loop on the current tokio runtime. It implements Satchel's
//!   backend traits ([`satchel_lightning::LightningBackend`]). Everything it needs to resume is
//!   persisted under its data directory: stopping and starting again keeps channels, balances,
//!   invoices, the incoming event log and payments in flight.
//! * A node follows a chain through a [`ChainSource`] (bitcoind JSON-RPC with
//!   `lightning-block-sync`, or Esplora with `lightning-transaction-sync`): blocks and reorgs,
//!   fee estimates ([`ChainFeeEstimator`], cached and refreshed in the background) and
//!   broadcasts ([`ChainBroadcaster`], queued to a background task). Without one (a
//!   development-only mode) its best block is the regtest genesis block forever.
//! * [`Devnet`] runs our node plus three peers (`alice`, `hub`, `carol`) in the same process,
//!   connected over loopback with zero-conf channels funded from each funder's on-chain wallet
//!   (real signed transactions; the wallets get faucet coins at the first start), all on
//!   one in-process regtest chain (`satchel-chain`, persisted in the devnet's `chain/`
//!   directory, served on loopback as bitcoind RPC and Esplora). Blocks are mined on demand
//!   ([`Devnet::mine`], [`Devnet::reorg`]) and shortly after a transaction arrives (the
//!   faucet: [`Devnet::fund`]). A start returns once the funding transactions are confirmed;
//!   payments use the chain's real heights. It implements
//!   [`satchel_lightning::DevnetControl`].
//!
//! # Running the devnet as the server's backend
//!
//! ```no_run
//! use std::sync::Arc;
//! use satchel_ldk::{Devnet, LdkError};
//! use satchel_lightning::{DevnetControl, IncomingPolicy, LightningBackend};
//!
//! async fn wire(
//!     data_dir: &std::path::Path,
//!     policy: Arc<dyn IncomingPolicy>,
//! ) -> Result<(), LdkError> {
//!     let devnet = Arc::new(Devnet::start(&data_dir.join("devnet")).await?);
//!     let backend: Arc<dyn LightningBackend> = devnet.node();
//!     let control: Arc<dyn DevnetControl> = devnet.clone();
//!     // Once the service exists (keysends are refused until then):
//!     devnet.node().set_incoming_policy(policy);
//!     // ... serve with `backend` and `control` ...
//!     devnet.stop().await?; // on shutdown: flushes everything
//!     # let _ = (backend, control);
//!     Ok(())
//! }
//! ```
//!
//! # Payment failures
//!
//! [`satchel_lightning::Payments::pay`] reports `Failed` only when LDK proves that nothing is or
//! will be outstanding: either LDK refused to send before any HTLC left (no route within the fee
//! limit, expired invoice) or it emitted `PaymentFailed`. LDK reasons map to LND names as
//! follows:
//!
//! | LDK | Satchel |
//! |---|---|
//! | `RouteNotFound` (synchronous) while the amount exceeds what our channels can send | `InsufficientBalance` |
//! | `RouteNotFound` (synchronous or in `PaymentFailed`) | `NoRoute` |
//! | `PaymentExpired` (synchronous: the invoice had already expired) | `IncorrectPaymentDetails` |
//! | `RecipientRejected` (unknown hash, wrong amount, cancelled invoice, keysend refused) | `IncorrectPaymentDetails` |
//! | `RetriesExhausted`, `PaymentExpired` (in `PaymentFailed`) | `Timeout` |
//! | anything else | `Error` |
#![deny(missing_docs)]

mod backend;
mod broadcast;
mod chain_source;
mod devnet;
mod fees;
mod invoice;
mod journal;
mod node;
mod records;
mod support;
mod wallet;

pub use broadcast::ChainBroadcaster;
pub use chain_source::ChainSource;
pub use devnet::{DEVNET_PEERS, Devnet, DevnetChain, DevnetOptions, MAX_BLOCKS_PER_CALL};
pub use fees::{ChainFeeEstimator, FEERATE_FLOOR_SAT_PER_KW, fallback_sat_per_kw};
pub use node::{ChannelSummary, GraphEdge, LdkConfig, LdkNode};
pub use wallet::{
    OnchainWallet, StoreError as WalletStoreError, TxSummary, UtxoSummary, WalletBalance,
    WalletError,
};

/// Errors starting, stopping or driving an [`LdkNode`] or a [`Devnet`].
#[derive(Debug, thiserror::Error)]
pub enum LdkError {
    /// Reading or writing the data directory failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Persisted state could not be decoded.
    #[error("corrupt node data: {0}")]
    Corrupt(String),
    /// LDK refused an operation.
    #[error("LDK error: {0}")]
    Ldk(String),
    /// A peer could not be reached.
    #[error("could not connect to peer: {0}")]
    Connect(String),
    /// The chain source failed or answered something unusable.
    #[error("chain source: {0}")]
    Chain(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The on-chain wallet cannot fund what was asked (e.g. a channel larger than its
    /// spendable balance).
    #[error("funding: {0}")]
    Funding(#[from] WalletError),
    /// The node has been stopped.
    #[error("node stopped")]
    Stopped,
}
