//! An in-process Bitcoin regtest chain, served over loopback HTTP as a bitcoind JSON-RPC subset
//! and an Esplora REST subset.
//!
//! # Why
//! The embedded Lightning node and its on-chain wallet must run against the same chain clients
//! production uses (`lightning-block-sync`, `lightning-transaction-sync`, BDK), but no bitcoind
//! or electrs binary can be installed here. This crate is a small full-validating regtest
//! "node" without networking: devnet and tests open a [`Chain`], start a [`ChainServer`] on a
//! loopback port and point the clients at it. Mining is instant (regtest difficulty).
//!
//! # What is validated
//! * Blocks: proof of work at regtest bits (`0x207fffff`), merkle root, BIP34 height, the BIP141
//!   witness commitment (our miner always writes one), one coinbase, coinbase amount ≤ subsidy
//!   (halving every 150 blocks) + fees, weight ≤ 4 MWU, timestamp > median time past.
//! * Transactions, in blocks and in the mempool: inputs exist and are unspent (double spends are
//!   refused), no duplicate inputs, value ranges (each output and the totals ≤ 21 M BTC, inputs ≥
//!   outputs), coinbase maturity (100 blocks), absolute lock time (`nLockTime` against height or
//!   BIP113 median time past; final sequences), BIP68 relative lock times (height and time), and
//!   scripts through Bitcoin Core's own interpreter (`bitcoinconsensus` 26: P2SH, DERSIG,
//!   NULLDUMMY, CLTV, CSV, segwit v0 and taproot).
//! * Mempool: chained unconfirmed transactions are allowed; replacement is full RBF by BIP125's
//!   fee rules (a conflicting transaction replaces the ones it conflicts with, and their
//!   descendants, if it pays a higher fee rate than each direct conflict and at least their total
//!   fees plus 1 sat/vB of its own size). First-seen otherwise.
//!
//! # What is not validated
//! Sigop limits, standardness policy (dust, standard scripts, `max-tx-weight`, minimum relay fee
//! outside replacements), package limits (ancestor/descendant counts), the BIP30 duplicate-txid
//! rule (BIP34 makes it moot for our blocks), the 2-hour future block time limit, and difficulty
//! adjustment (regtest has none). Side chains are not kept: blocks only extend the tip; a reorg
//! is done on demand with [`Chain::reorg`]. Blocks removed by a reorg stay queryable by hash in
//! memory (as bitcoind keeps stale blocks) but are not persisted.
//!
//! # Persistence
//! `dir/blocks.dat` (length-prefixed blocks, appended and synced per block, rewritten on reorg),
//! `dir/mempool.dat` (rewritten on each change) and `dir/faucet.key` (mode 0600, the key mined
//! coins go to). [`Chain::open`] replays every block with full validation to rebuild the UTXO
//! set, then re-admits the saved mempool.
#![forbid(unsafe_code)]

pub mod block;
mod chain;
mod json;
pub mod params;
mod server;
pub mod state;
pub mod validate;

pub use chain::{AutoMiner, Chain, ChainConfig, ChainError, Tip};
pub use server::{ChainServer, RpcCredentials};
pub use validate::TxError;
