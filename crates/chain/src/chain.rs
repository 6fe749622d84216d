//! `Chain`: the shared handle over the state, with mining, the faucet, reorgs, persistence and
//! the new-tip subscription.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, Block, BlockHash, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness, absolute, transaction,
};
use tokio::sync::{Notify, watch};

use crate::block::{BlockError, assemble};
use crate::state::State;
use crate::validate::{TxError, subsidy};

const BLOCKS_FILE: &str = "blocks.dat";
const MEMPOOL_FILE: &str = "mempool.dat";
const KEY_FILE: &str = "faucet.key";
/// The faucet pays this fee rate (sat/vB).
const FAUCET_FEE_SAT_PER_VB: u64 = 2;
/// Outputs below this are not created as change (P2WPKH dust at 3 sat/vB, as Core computes it).
const DUST_SATS: u64 = 294;
/// Largest record accepted when reading the blocks file (the consensus weight limit is 4 MWU,
/// so a block is at most 4 MB serialized).
const MAX_RECORD_BYTES: usize = 4_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("chain directory i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("chain data is corrupt: {0}")]
    Corrupt(String),
    #[error("block rejected: {0}")]
    Block(#[from] BlockError),
    #[error("transaction rejected: {0}")]
    Tx(#[from] TxError),
    #[error("faucet has {available_sats} spendable sats, needs {needed_sats}")]
    InsufficientFunds {
        available_sats: u64,
        needed_sats: u64,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// Settings of a chain.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    /// What `estimatesmartfee` and `/fee-estimates` answer, sat/vB.
    pub fee_rate_sat_per_vb: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            fee_rate_sat_per_vb: 2,
        }
    }
}

/// The best block, as subscribers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub height: u32,
    pub hash: BlockHash,
}

struct Faucet {
    key: SecretKey,
    pubkey: CompressedPublicKey,
    script: ScriptBuf,
}

struct Inner {
    dir: PathBuf,
    config: ChainConfig,
    state: Mutex<State>,
    faucet: Faucet,
    tip: watch::Sender<Tip>,
    mempool_changed: Notify,
    /// Added to the wall clock for block timestamps (tests of time locks).
    time_offset_secs: AtomicI64,
    /// Distinguishes coinbases of blocks mined at the same height (reorgs).
    coinbase_tag: AtomicU32,
}

/// A regtest chain living in this process, persisted in a directory. Cheap to clone.
#[derive(Clone)]
pub struct Chain {
    inner: Arc<Inner>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Chain {
    /// Opens (or creates) the chain stored in `dir`, replaying and re-validating every block.
    pub fn open(dir: impl AsRef<Path>) -> Result<Chain, ChainError> {
        Chain::open_with(dir, ChainConfig::default())
    }

    pub fn open_with(dir: impl AsRef<Path>, config: ChainConfig) -> Result<Chain, ChainError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        let secp = Secp256k1::signing_only();
        let pubkey = CompressedPublicKey(key.public_key(&secp));
        let faucet = Faucet {
            key,
            pubkey,
            script: ScriptBuf::new_p2wpkh(&pubkey.wpubkey_hash()),
        };

        let mut state = State::genesis();
        let (blocks, clean) = read_blocks(&dir.join(BLOCKS_FILE))?;
        let count = blocks.len();
        for (i, block) in blocks.into_iter().enumerate() {
            state
                .connect(block, true)
                .map_err(|e| ChainError::Corrupt(format!("block {} of {count}: {e}", i + 1)))?;
        }
        if !clean {
            // A torn last record (crash while appending): keep what was whole.
            write_blocks(&dir, &state)?;
        }
        let mempool = read_mempool(&dir.join(MEMPOOL_FILE))?;
        state.revalidate_mempool(mempool, now_secs());
        let tip = Tip {
            height: state.height(),
            hash: state.tip().hash,
        };
        let (tip_tx, _) = watch::channel(tip);
        Ok(Chain {
            inner: Arc::new(Inner {
                dir,
                config,
                state: Mutex::new(state),
                faucet,
                tip: tip_tx,
                mempool_changed: Notify::new(),
                time_offset_secs: AtomicI64::new(0),
                coinbase_tag: AtomicU32::new(rand::random()),
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as any other moment
        // (every mutation is a whole step), so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state (for the servers' read-only queries).
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &ChainConfig {
        &self.inner.config
    }

    pub fn tip(&self) -> Tip {
        let s = self.lock();
        Tip {
            height: s.height(),
            hash: s.tip().hash,
        }
    }

    /// A receiver that sees every new tip (after mining, a submitted block or a reorg).
    pub fn subscribe(&self) -> watch::Receiver<Tip> {
        self.inner.tip.subscribe()
    }

    /// The address mined coins go to by default, and the faucet pays from.
    pub fn faucet_address(&self) -> Address {
        Address::p2wpkh(&self.inner.faucet.pubkey, Network::Regtest)
    }

    /// Moves the clock used for new block timestamps forward (time-lock tests).
    pub fn advance_time(&self, secs: u32) {
        self.inner
            .time_offset_secs
            .fetch_add(i64::from(secs), Ordering::SeqCst);
    }

    fn block_time(&self, state: &State) -> u32 {
        let now = now_secs() as i64 + self.inner.time_offset_secs.load(Ordering::SeqCst);
        let now = u32::try_from(now.max(0)).unwrap_or(u32::MAX);
        now.max(state.tip().block.header.time.saturating_add(1))
            .max(state.tip().mtp.saturating_add(1))
    }

    /// Mines `n` blocks with the mempool's transactions, paying coinbases to `to` (default: the
    /// faucet). Returns their hashes.
    pub fn mine(&self, n: u32, to: Option<&Address>) -> Result<Vec<BlockHash>, ChainError> {
        let script = match to {
            Some(a) => a.script_pubkey(),
            None => self.inner.faucet.script.clone(),
        };
        let mut state = self.lock();
        let hashes = self.mine_locked(&mut state, n, &script, true)?;
        drop(state);
        self.publish_tip();
        Ok(hashes)
    }

    fn mine_locked(
        &self,
        state: &mut State,
        n: u32,
        script: &ScriptBuf,
        with_mempool: bool,
    ) -> Result<Vec<BlockHash>, ChainError> {
        let mut hashes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (txs, fees) = if with_mempool {
                state.template()
            } else {
                (Vec::new(), Amount::ZERO)
            };
            let height = state.height() + 1;
            let value = subsidy(height).checked_add(fees).unwrap_or(subsidy(height));
            let tag = self.inner.coinbase_tag.fetch_add(1, Ordering::SeqCst);
            let block = assemble(
                state.tip().hash,
                height,
                self.block_time(state),
                script.clone(),
                value,
                txs,
                tag,
            );
            let hash = block.block_hash();
            state.connect(block.clone(), false)?;
            append_block(&self.inner.dir, &block)?;
            state.revalidate_mempool(Vec::new(), now_secs());
            hashes.push(hash);
        }
        write_mempool(&self.inner.dir, state)?;
        Ok(hashes)
    }

    /// Connects a block built elsewhere (tests of invalid blocks). It must extend the tip.
    pub fn submit_block(&self, block: Block) -> Result<BlockHash, ChainError> {
        let hash = block.block_hash();
        let mut state = self.lock();
        state.connect(block.clone(), true)?;
        append_block(&self.inner.dir, &block)?;
        state.revalidate_mempool(Vec::new(), now_secs());
        write_mempool(&self.inner.dir, &state)?;
        drop(state);
        self.publish_tip();
        Ok(hash)
    }

    /// Replaces the last `n` blocks with `n + 1` new blocks holding only their coinbase. The
    /// removed blocks' transactions go back to the mempool when still valid (so a following
    /// `mine` confirms them again). Returns the new blocks' hashes.
    pub fn reorg(&self, n: u32) -> Result<Vec<BlockHash>, ChainError> {
        let mut state = self.lock();
        if n > state.height() {
            return Err(ChainError::Invalid(format!(
                "cannot remove {n} blocks from a chain of height {}",
                state.height()
            )));
        }
        let keep = (state.height() - n) as usize;
        let removed: Vec<_> = state.entries.drain(keep + 1..).collect();
        let blocks: Vec<Block> = state
            .entries
            .iter()
            .skip(1)
            .map(|e| e.block.clone())
            .collect();
        let mut rebuilt = State::rebuild(blocks)?;
        let back: Vec<Transaction> = removed
            .iter()
            .flat_map(|e| e.block.txdata.iter().skip(1).cloned())
            .collect();
        rebuilt.stale = std::mem::take(&mut state.stale);
        for e in removed {
            rebuilt.stale.insert(e.hash, e);
        }
        rebuilt.mempool = std::mem::take(&mut state.mempool);
        rebuilt.revalidate_mempool(back, now_secs());
        *state = rebuilt;
        write_blocks(&self.inner.dir, &state)?;
        let script = self.inner.faucet.script.clone();
        let hashes = self.mine_locked(&mut state, n + 1, &script, false)?;
        drop(state);
        self.publish_tip();
        Ok(hashes)
    }

    /// Validates `tx` and adds it to the mempool (bitcoind's `sendrawtransaction`).
    pub fn send_transaction(&self, tx: Transaction) -> Result<Txid, ChainError> {
        let mut state = self.lock();
        let accepted = state.accept(tx, now_secs())?;
        write_mempool(&self.inner.dir, &state)?;
        drop(state);
        self.inner.mempool_changed.notify_one();
        Ok(accepted.txid)
    }

    /// Checks `tx` as `send_transaction` would, without adding it. Returns (fee, vsize).
    pub fn test_accept(&self, tx: &Transaction) -> Result<(u64, u64), TxError> {
        let a = self.lock().check_accept(tx)?;
        Ok((a.fee_sats, a.vsize))
    }

    /// Pays `amount_sats` to `address` from the faucet's mature coins (coinbases and change),
    /// at 2 sat/vB. The transaction enters the mempool; mine to confirm it.
    pub fn fund(&self, address: &Address, amount_sats: u64) -> Result<Txid, ChainError> {
        if amount_sats < DUST_SATS {
            return Err(ChainError::Invalid(format!(
                "amount {amount_sats} sats is below dust"
            )));
        }
        let faucet = &self.inner.faucet;
        let mut state = self.lock();
        let next = state.next_context().height;
        // Spendable faucet coins: confirmed (mature) and unconfirmed change, not yet spent.
        let mut coins: Vec<(OutPoint, TxOut, u32)> = state
            .utxos
            .iter()
            .filter(|(op, c)| {
                c.output.script_pubkey == faucet.script
                    && (!c.is_coinbase || next - c.height >= crate::params::COINBASE_MATURITY)
                    && !state.mempool.spent.contains_key(op)
            })
            .map(|(op, c)| (*op, c.output.clone(), c.height))
            .collect();
        for e in state.mempool.entries.values() {
            for (vout, out) in e.tx.output.iter().enumerate() {
                let op = OutPoint {
                    txid: e.txid,
                    vout: vout as u32,
                };
                if out.script_pubkey == faucet.script && !state.mempool.spent.contains_key(&op) {
                    coins.push((op, out.clone(), next));
                }
            }
        }
        // Oldest first, deterministic.
        coins.sort_by_key(|c| (c.2, c.0));
        let recipient = TxOut {
            value: Amount::from_sat(amount_sats),
            script_pubkey: address.script_pubkey(),
        };
        let mut chosen: Vec<(OutPoint, TxOut)> = Vec::new();
        let mut total: u64 = 0;
        let fee_for = |inputs: usize| -> u64 {
            // P2WPKH input ≈ 68 vB, outputs ≈ 9 + script, change 31, overhead 11.
            let vbytes = 11 + 68 * inputs as u64 + 9 + recipient.script_pubkey.len() as u64 + 31;
            vbytes * FAUCET_FEE_SAT_PER_VB
        };
        for (op, out, _) in coins {
            if total >= amount_sats.saturating_add(fee_for(chosen.len())) {
                break;
            }
            total = total.saturating_add(out.value.to_sat());
            chosen.push((op, out));
        }
        let fee = fee_for(chosen.len());
        let needed = amount_sats.saturating_add(fee);
        if total < needed {
            return Err(ChainError::InsufficientFunds {
                available_sats: total,
                needed_sats: needed,
            });
        }
        let mut output = vec![recipient];
        let change = total - needed;
        if change >= DUST_SATS {
            output.push(TxOut {
                value: Amount::from_sat(change),
                script_pubkey: faucet.script.clone(),
            });
        }
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: chosen
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output,
        };
        let secp = Secp256k1::signing_only();
        let mut witnesses = Vec::with_capacity(chosen.len());
        {
            let mut cache = SighashCache::new(&tx);
            for (i, (_, out)) in chosen.iter().enumerate() {
                let sighash = cache
                    .p2wpkh_signature_hash(i, &out.script_pubkey, out.value, EcdsaSighashType::All)
                    .map_err(|e| ChainError::Invalid(format!("sighash: {e}")))?;
                let sig = secp.sign_ecdsa(&Message::from(sighash), &faucet.key);
                let sig = bitcoin::ecdsa::Signature {
                    signature: sig,
                    sighash_type: EcdsaSighashType::All,
                };
                witnesses.push(Witness::p2wpkh(&sig, &faucet.pubkey.0));
            }
        }
        for (input, w) in tx.input.iter_mut().zip(witnesses) {
            input.witness = w;
        }
        let accepted = state.accept(tx, now_secs())?;
        write_mempool(&self.inner.dir, &state)?;
        drop(state);
        self.inner.mempool_changed.notify_one();
        Ok(accepted.txid)
    }

    /// Mines one block whenever the mempool has been non-empty for `delay`, until the returned
    /// handle is dropped. Needs a Tokio runtime.
    pub fn spawn_auto_miner(&self, delay: Duration) -> AutoMiner {
        let chain = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                chain.inner.mempool_changed.notified().await;
                tokio::time::sleep(delay).await;
                let pending = !chain.lock().mempool.entries.is_empty();
                if pending && let Err(e) = chain.mine(1, None) {
                    tracing::warn!(error = %e, "auto-mining failed");
                }
            }
        });
        AutoMiner { handle }
    }

    fn publish_tip(&self) {
        let tip = self.tip();
        self.inner.tip.send_replace(tip);
    }
}

/// The auto-miner task; stops when dropped.
pub struct AutoMiner {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for AutoMiner {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn load_or_create_key(path: &Path) -> Result<SecretKey, ChainError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let bytes = hex::decode(s.trim())
                .map_err(|e| ChainError::Corrupt(format!("faucet key: {e}")))?;
            SecretKey::from_slice(&bytes)
                .map_err(|e| ChainError::Corrupt(format!("faucet key: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::new(&mut bitcoin::secp256k1::rand::thread_rng());
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(hex::encode(key.secret_bytes()).as_bytes())?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads `[u32 LE length][consensus-encoded block]` records. Returns the blocks and whether the
/// file ended on a record boundary.
fn read_blocks(path: &Path) -> Result<(Vec<Block>, bool), ChainError> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), true)),
        Err(e) => return Err(e.into()),
    }
    let mut blocks = Vec::new();
    let mut rest = data.as_slice();
    while !rest.is_empty() {
        let Some((len, body)) = rest.split_first_chunk::<4>() else {
            return Ok((blocks, false));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(ChainError::Corrupt(format!("block record of {len} bytes")));
        }
        if body.len() < len {
            return Ok((blocks, false));
        }
        let block: Block = deserialize(&body[..len])
            .map_err(|e| ChainError::Corrupt(format!("block {}: {e}", blocks.len() + 1)))?;
        blocks.push(block);
        rest = &body[len..];
    }
    Ok((blocks, true))
}

fn record(block: &Block) -> Vec<u8> {
    let bytes = serialize(block);
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
    out
}

fn append_block(dir: &Path, block: &Block) -> Result<(), ChainError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(BLOCKS_FILE))?;
    f.write_all(&record(block))?;
    f.sync_data()?;
    Ok(())
}

/// Replaces a file atomically (write a temporary file, sync, rename).
fn replace_file(path: &Path, data: &[u8]) -> Result<(), ChainError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

fn write_blocks(dir: &Path, state: &State) -> Result<(), ChainError> {
    let mut data = Vec::new();
    for e in state.entries.iter().skip(1) {
        data.extend_from_slice(&record(&e.block));
    }
    replace_file(&dir.join(BLOCKS_FILE), &data)
}

/// The mempool as `[u32 LE length][tx]` records, in order.
fn write_mempool(dir: &Path, state: &State) -> Result<(), ChainError> {
    let mut data = Vec::new();
    for txid in &state.mempool.order {
        if let Some(e) = state.mempool.entries.get(txid) {
            let bytes = serialize(&e.tx);
            data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            data.extend_from_slice(&bytes);
        }
    }
    replace_file(&dir.join(MEMPOOL_FILE), &data)
}

fn read_mempool(path: &Path) -> Result<Vec<Transaction>, ChainError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut txs = Vec::new();
    let mut rest = data.as_slice();
    while let Some((len, body)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        if body.len() < len || len > MAX_RECORD_BYTES {
            break;
        }
        // A transaction that no longer decodes is dropped, like one that no longer validates.
        if let Ok(tx) = deserialize::<Transaction>(&body[..len]) {
            txs.push(tx);
        }
        rest = &body[len..];
    }
    Ok(txs)
}
