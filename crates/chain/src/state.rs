//! The chain's in-memory state: the active chain, its indexes, the UTXO set and the mempool.
//! No I/O here; `Chain` persists around it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use bitcoin::hashes::{Hash, sha256};
use bitcoin::pow::Work;
use bitcoin::{Amount, Block, BlockHash, OutPoint, ScriptBuf, Transaction, TxOut, Txid};

use crate::block::{BlockError, check_block};
use crate::params::{COINBASE_WEIGHT_RESERVE, INCREMENTAL_RELAY_SAT_PER_VB, MAX_BLOCK_WEIGHT};
use crate::validate::{Coin, Context, TxError, check_shape, check_with_coins, subsidy};

/// One block of the active chain (or a stale one, after a reorg).
#[derive(Debug, Clone)]
pub struct Entry {
    pub block: Block,
    pub hash: BlockHash,
    pub height: u32,
    /// Cumulative work up to and including this block.
    pub chainwork: Work,
    /// Median time past of this block (median of its own and the 10 previous times).
    pub mtp: u32,
}

/// A transaction waiting in the mempool.
#[derive(Debug, Clone)]
pub struct MempoolEntry {
    pub tx: Transaction,
    pub txid: Txid,
    pub fee_sats: u64,
    pub vsize: u64,
    pub weight: u64,
    pub time_secs: u64,
    /// Chain height when it entered.
    pub height: u32,
}

/// Who spends an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spender {
    pub txid: Txid,
    pub vin: u32,
    /// Height of the spending block; `None` while the spender is in the mempool.
    pub height: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Mempool {
    /// Arrival order; always topological (parents first).
    pub order: Vec<Txid>,
    pub entries: HashMap<Txid, MempoolEntry>,
    /// Outpoint → (spending mempool tx, input index).
    pub spent: HashMap<OutPoint, (Txid, u32)>,
}

impl Mempool {
    fn insert(&mut self, entry: MempoolEntry) {
        for (vin, input) in entry.tx.input.iter().enumerate() {
            self.spent
                .insert(input.previous_output, (entry.txid, vin as u32));
        }
        self.order.push(entry.txid);
        self.entries.insert(entry.txid, entry);
    }

    fn remove(&mut self, txid: &Txid) -> Option<MempoolEntry> {
        let entry = self.entries.remove(txid)?;
        for input in &entry.tx.input {
            if self.spent.get(&input.previous_output).map(|(t, _)| t) == Some(txid) {
                self.spent.remove(&input.previous_output);
            }
        }
        self.order.retain(|t| t != txid);
        Some(entry)
    }

    /// `roots` and every mempool transaction that spends (transitively) one of their outputs.
    pub fn with_descendants(&self, roots: impl IntoIterator<Item = Txid>) -> BTreeSet<Txid> {
        let mut out = BTreeSet::new();
        let mut queue: VecDeque<Txid> = roots.into_iter().collect();
        while let Some(txid) = queue.pop_front() {
            if !out.insert(txid) {
                continue;
            }
            let Some(entry) = self.entries.get(&txid) else {
                continue;
            };
            for vout in 0..entry.tx.output.len() as u32 {
                if let Some((child, _)) = self.spent.get(&OutPoint { txid, vout }) {
                    queue.push_back(*child);
                }
            }
        }
        out
    }

    /// A mempool transaction's output as a coin of the next block.
    fn coin(&self, op: &OutPoint, next_height: u32) -> Option<Coin> {
        let entry = self.entries.get(&op.txid)?;
        let output = entry.tx.output.get(op.vout as usize)?.clone();
        Some(Coin {
            output,
            height: next_height,
            is_coinbase: false,
        })
    }
}

/// Outcome of a successful mempool check: the fee and what a replacement evicts.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub txid: Txid,
    pub fee_sats: u64,
    pub vsize: u64,
    pub evicts: BTreeSet<Txid>,
}

pub struct State {
    pub entries: Vec<Entry>,
    pub by_hash: HashMap<BlockHash, u32>,
    /// Blocks removed by reorgs (kept in memory for lookups by hash; not persisted).
    pub stale: HashMap<BlockHash, Entry>,
    /// Confirmed txid → (height, index in block).
    pub tx_index: HashMap<Txid, (u32, usize)>,
    pub utxos: HashMap<OutPoint, Coin>,
    /// Confirmed spends of outputs.
    pub spends: HashMap<OutPoint, Spender>,
    /// sha256(scriptPubKey) → confirmed txids that fund or spend it, chain order.
    pub script_index: HashMap<sha256::Hash, Vec<Txid>>,
    pub mempool: Mempool,
}

/// A transaction found by txid.
pub enum Found<'a> {
    Confirmed {
        tx: &'a Transaction,
        entry: &'a Entry,
        index: usize,
    },
    Mempool(&'a MempoolEntry),
}

impl Found<'_> {
    pub fn tx(&self) -> &Transaction {
        match self {
            Found::Confirmed { tx, .. } => tx,
            Found::Mempool(e) => &e.tx,
        }
    }
}

pub fn script_hash(script: &ScriptBuf) -> sha256::Hash {
    sha256::Hash::hash(script.as_bytes())
}

impl State {
    /// A chain holding only the regtest genesis block (whose coinbase is unspendable).
    pub fn genesis() -> State {
        let block = bitcoin::constants::genesis_block(bitcoin::Network::Regtest);
        let hash = block.block_hash();
        let entry = Entry {
            chainwork: block.header.work(),
            mtp: block.header.time,
            hash,
            height: 0,
            block,
        };
        State {
            by_hash: HashMap::from([(hash, 0)]),
            entries: vec![entry],
            stale: HashMap::new(),
            tx_index: HashMap::new(),
            utxos: HashMap::new(),
            spends: HashMap::new(),
            script_index: HashMap::new(),
            mempool: Mempool::default(),
        }
    }

    pub fn tip(&self) -> &Entry {
        // `entries` always holds at least genesis.
        &self.entries[self.entries.len() - 1]
    }

    pub fn height(&self) -> u32 {
        self.tip().height
    }

    pub fn mtp_at(&self, height: u32) -> u32 {
        self.entries
            .get(height as usize)
            .map(|e| e.mtp)
            .unwrap_or(self.tip().mtp)
    }

    /// The context of the next block.
    pub fn next_context(&self) -> Context {
        Context {
            height: self.height() + 1,
            prev_mtp: self.tip().mtp,
        }
    }

    pub fn entry_by_hash(&self, hash: &BlockHash) -> Option<&Entry> {
        match self.by_hash.get(hash) {
            Some(h) => self.entries.get(*h as usize),
            None => self.stale.get(hash),
        }
    }

    pub fn is_active(&self, hash: &BlockHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub fn find_tx(&self, txid: &Txid) -> Option<Found<'_>> {
        if let Some(e) = self.mempool.entries.get(txid) {
            return Some(Found::Mempool(e));
        }
        let (height, index) = *self.tx_index.get(txid)?;
        let entry = self.entries.get(height as usize)?;
        Some(Found::Confirmed {
            tx: entry.block.txdata.get(index)?,
            entry,
            index,
        })
    }

    /// Any known output (spent or not), for showing prevouts.
    pub fn output(&self, op: &OutPoint) -> Option<TxOut> {
        self.find_tx(&op.txid)?
            .tx()
            .output
            .get(op.vout as usize)
            .cloned()
    }

    pub fn spender(&self, op: &OutPoint) -> Option<Spender> {
        if let Some((txid, vin)) = self.mempool.spent.get(op) {
            return Some(Spender {
                txid: *txid,
                vin: *vin,
                height: None,
            });
        }
        self.spends.get(op).copied()
    }

    /// Connects `block` on top of the tip after checking it fully.
    pub fn connect(&mut self, block: Block, verify_scripts: bool) -> Result<(), BlockError> {
        let tip = self.tip();
        if block.header.prev_blockhash != tip.hash {
            return Err(BlockError::PrevNotTip);
        }
        let height = tip.height + 1;
        if block.header.time <= tip.mtp {
            return Err(BlockError::TimeTooOld);
        }
        check_block(&block, height)?;
        let ctx = Context {
            height,
            prev_mtp: tip.mtp,
        };
        // Coins created and spent by the block so far, over the UTXO set.
        let mut created: HashMap<OutPoint, Coin> = HashMap::new();
        let mut spent: HashSet<OutPoint> = HashSet::new();
        let mut fees: u64 = 0;
        let mut all_coins: Vec<Vec<Coin>> = Vec::with_capacity(block.txdata.len());
        for tx in block.txdata.iter().skip(1) {
            let mut coins = Vec::with_capacity(tx.input.len());
            for input in &tx.input {
                let op = input.previous_output;
                if spent.contains(&op) {
                    return Err(TxError::MissingInputs.into());
                }
                let coin = created
                    .get(&op)
                    .or_else(|| self.utxos.get(&op))
                    .cloned()
                    .ok_or(TxError::MissingInputs)?;
                coins.push(coin);
            }
            let fee = check_with_coins(tx, &coins, ctx, &|h| self.mtp_at(h), verify_scripts)?;
            fees = fees
                .checked_add(fee)
                .ok_or(TxError::InputValuesOutOfRange)?;
            for input in &tx.input {
                spent.insert(input.previous_output);
                created.remove(&input.previous_output);
            }
            let txid = tx.compute_txid();
            for (vout, output) in tx.output.iter().enumerate() {
                let coin = Coin {
                    output: output.clone(),
                    height,
                    is_coinbase: false,
                };
                created.insert(
                    OutPoint {
                        txid,
                        vout: vout as u32,
                    },
                    coin,
                );
            }
            all_coins.push(coins);
        }
        let cb = block.txdata.first().ok_or(BlockError::NoCoinbase)?;
        let cb_value: u64 = cb.output.iter().map(|o| o.value.to_sat()).sum();
        let allowed = subsidy(height)
            .to_sat()
            .checked_add(fees)
            .ok_or(BlockError::BadCoinbaseAmount)?;
        if cb_value > allowed {
            return Err(BlockError::BadCoinbaseAmount);
        }
        self.apply(block, height, &all_coins);
        Ok(())
    }

    /// Updates every index with a block already checked.
    fn apply(&mut self, block: Block, height: u32, coins: &[Vec<Coin>]) {
        let hash = block.block_hash();
        for (index, tx) in block.txdata.iter().enumerate() {
            let txid = tx.compute_txid();
            self.tx_index.insert(txid, (height, index));
            let mut scripts: BTreeSet<sha256::Hash> = BTreeSet::new();
            if index > 0 {
                for (vin, input) in tx.input.iter().enumerate() {
                    let op = input.previous_output;
                    self.utxos.remove(&op);
                    self.spends.insert(
                        op,
                        Spender {
                            txid,
                            vin: vin as u32,
                            height: Some(height),
                        },
                    );
                    if let Some(coin) = coins.get(index - 1).and_then(|c| c.get(vin)) {
                        scripts.insert(script_hash(&coin.output.script_pubkey));
                    }
                }
            }
            for (vout, output) in tx.output.iter().enumerate() {
                scripts.insert(script_hash(&output.script_pubkey));
                // OP_RETURN outputs are provably unspendable and never enter the set.
                if !output.script_pubkey.is_op_return() {
                    let coin = Coin {
                        output: output.clone(),
                        height,
                        is_coinbase: index == 0,
                    };
                    self.utxos.insert(
                        OutPoint {
                            txid,
                            vout: vout as u32,
                        },
                        coin,
                    );
                }
            }
            for s in scripts {
                self.script_index.entry(s).or_default().push(txid);
            }
        }
        let prev = self.tip();
        let chainwork = prev.chainwork + block.header.work();
        let mut times: Vec<u32> = self
            .entries
            .iter()
            .rev()
            .take(10)
            .map(|e| e.block.header.time)
            .chain(std::iter::once(block.header.time))
            .collect();
        times.sort_unstable();
        let mtp = times[times.len() / 2];
        self.by_hash.insert(hash, height);
        self.entries.push(Entry {
            block,
            hash,
            height,
            chainwork,
            mtp,
        });
    }

    /// Checks `tx` for the mempool without changing anything.
    pub fn check_accept(&self, tx: &Transaction) -> Result<Accepted, TxError> {
        let txid = tx.compute_txid();
        check_shape(tx)?;
        if self.tx_index.contains_key(&txid) {
            return Err(TxError::AlreadyInChain);
        }
        let ctx = self.next_context();
        let mut coins = Vec::with_capacity(tx.input.len());
        let mut conflicts = BTreeSet::new();
        for input in &tx.input {
            let op = input.previous_output;
            if let Some((spender, _)) = self.mempool.spent.get(&op) {
                conflicts.insert(*spender);
            }
            let coin = self
                .mempool
                .coin(&op, ctx.height)
                .or_else(|| self.utxos.get(&op).cloned())
                .ok_or(TxError::MissingInputs)?;
            coins.push(coin);
        }
        let fee = check_with_coins(tx, &coins, ctx, &|h| self.mtp_at(h), true)?;
        let vsize = tx.vsize() as u64;
        let evicts = self.mempool.with_descendants(conflicts.iter().copied());
        if !conflicts.is_empty() {
            if tx
                .input
                .iter()
                .any(|i| evicts.contains(&i.previous_output.txid))
            {
                return Err(TxError::SpendsConflictingTx);
            }
            let replaced = conflicts
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(",");
            for c in &conflicts {
                if let Some(old) = self.mempool.entries.get(c) {
                    // fee/vsize <= old_fee/old_vsize, cross-multiplied.
                    if u128::from(fee) * u128::from(old.vsize)
                        <= u128::from(old.fee_sats) * u128::from(vsize)
                    {
                        return Err(TxError::ReplacementFee {
                            replaced,
                            detail: format!(
                                "new feerate {fee}/{vsize} sat/vB <= old feerate {}/{} sat/vB",
                                old.fee_sats, old.vsize
                            ),
                        });
                    }
                }
            }
            let old_fees: u64 = evicts
                .iter()
                .filter_map(|t| self.mempool.entries.get(t))
                .map(|e| e.fee_sats)
                .sum();
            let needed = old_fees.saturating_add(vsize * INCREMENTAL_RELAY_SAT_PER_VB);
            if fee < needed {
                return Err(TxError::ReplacementFee {
                    replaced,
                    detail: format!(
                        "fee {fee} sat < replaced fees {old_fees} + relay fee ({needed} sat)"
                    ),
                });
            }
        }
        Ok(Accepted {
            txid,
            fee_sats: fee,
            vsize,
            evicts,
        })
    }

    /// Adds `tx` to the mempool (replacing conflicts when it pays for it). Already known → Ok.
    pub fn accept(&mut self, tx: Transaction, time_secs: u64) -> Result<Accepted, TxError> {
        let txid = tx.compute_txid();
        if let Some(e) = self.mempool.entries.get(&txid) {
            return Ok(Accepted {
                txid,
                fee_sats: e.fee_sats,
                vsize: e.vsize,
                evicts: BTreeSet::new(),
            });
        }
        let accepted = self.check_accept(&tx)?;
        for t in &accepted.evicts {
            self.mempool.remove(t);
        }
        let weight = tx.weight().to_wu();
        self.mempool.insert(MempoolEntry {
            txid,
            fee_sats: accepted.fee_sats,
            vsize: accepted.vsize,
            weight,
            time_secs,
            height: self.height(),
            tx,
        });
        Ok(accepted)
    }

    /// Mempool transactions for the next block, in order, within the weight limit, and their
    /// fees.
    pub fn template(&self) -> (Vec<Transaction>, Amount) {
        let mut weight = COINBASE_WEIGHT_RESERVE + 80 * 4;
        let mut skipped: HashSet<Txid> = HashSet::new();
        let mut txs = Vec::new();
        let mut fees: u64 = 0;
        for txid in &self.mempool.order {
            let Some(e) = self.mempool.entries.get(txid) else {
                continue;
            };
            let parent_skipped =
                e.tx.input
                    .iter()
                    .any(|i| skipped.contains(&i.previous_output.txid));
            if parent_skipped || weight + e.weight > MAX_BLOCK_WEIGHT {
                skipped.insert(*txid);
                continue;
            }
            weight += e.weight;
            fees = fees.saturating_add(e.fee_sats);
            txs.push(e.tx.clone());
        }
        (txs, Amount::from_sat(fees))
    }

    /// Re-checks every mempool transaction against the current chain, in order, dropping those
    /// no longer valid (mined, conflicting, or spending coins that are gone). `extra` (txs of
    /// disconnected blocks) go first.
    pub fn revalidate_mempool(&mut self, extra: Vec<Transaction>, now_secs: u64) {
        let old = std::mem::take(&mut self.mempool);
        let mut candidates: Vec<(Transaction, u64)> =
            extra.into_iter().map(|tx| (tx, now_secs)).collect();
        let mut old_entries = old.entries;
        for txid in old.order {
            if let Some(e) = old_entries.remove(&txid) {
                candidates.push((e.tx, e.time_secs));
            }
        }
        for (tx, time) in candidates {
            let txid = tx.compute_txid();
            if self.tx_index.contains_key(&txid) {
                continue;
            }
            if let Err(e) = self.accept(tx, time) {
                tracing::debug!(%txid, error = %e, "dropped from the mempool");
            }
        }
    }

    /// Rebuilds the state from `blocks` (heights 1..), checked but without re-running scripts
    /// (they were verified when first connected). Used after a reorg.
    pub fn rebuild(blocks: Vec<Block>) -> Result<State, BlockError> {
        let mut state = State::genesis();
        for b in blocks {
            state.connect(b, false)?;
        }
        Ok(state)
    }
}
