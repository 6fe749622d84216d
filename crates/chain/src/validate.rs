//! Consensus checks of one transaction against a view of spendable coins.
//!
//! The same function checks a transaction entering the mempool (against the confirmed UTXO set
//! plus unconfirmed mempool outputs, as if it were in the next block) and a transaction inside a
//! block being connected (against the UTXO set as updated by the block's earlier transactions).

use bitcoin::consensus::encode::serialize;
use bitcoin::locktime::relative;
use bitcoin::{Amount, OutPoint, Transaction, TxOut};

use crate::params::{COINBASE_MATURITY, MAX_MONEY_SATS};

/// Why a transaction (or a block) was refused. `Display` is Bitcoin Core's reject reason, so the
/// servers can pass it through verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("coinbase")]
    Coinbase,
    #[error("bad-txns-vin-empty")]
    NoInputs,
    #[error("bad-txns-vout-empty")]
    NoOutputs,
    #[error("bad-txns-inputs-duplicate")]
    DuplicateInputs,
    #[error("bad-txns-vout-toolarge")]
    OutputTooLarge,
    #[error("bad-txns-txouttotal-toolarge")]
    OutputTotalTooLarge,
    #[error("bad-txns-inputvalues-outofrange")]
    InputValuesOutOfRange,
    #[error("bad-txns-in-belowout, value in ({in_sats}) < value out ({out_sats})")]
    InBelowOut { in_sats: u64, out_sats: u64 },
    /// An input's coin does not exist or is already spent (in a block, this is how a double spend
    /// shows).
    #[error("bad-txns-inputs-missingorspent")]
    MissingInputs,
    #[error("Transaction already in block chain")]
    AlreadyInChain,
    #[error("bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth {depth}")]
    PrematureCoinbaseSpend { depth: u32 },
    /// nLockTime not yet reached (and not every input has a final sequence).
    #[error("non-final")]
    NonFinal,
    /// A BIP68 relative lock time not yet reached.
    #[error("non-BIP68-final")]
    NonBip68Final,
    #[error("mandatory-script-verify-flag-failed (input {input}: {error})")]
    Script { input: usize, error: String },
    /// Spends an output of a transaction it would replace.
    #[error("bad-txns-spends-conflicting-tx")]
    SpendsConflictingTx,
    /// Conflicts with mempool transactions and does not pay enough to replace them (BIP125 rules
    /// 3 and 4, full RBF: every transaction is replaceable).
    #[error("insufficient fee, rejecting replacement {replaced}: {detail}")]
    ReplacementFee { replaced: String, detail: String },
}

impl TxError {
    /// bitcoind's RPC error code for `sendrawtransaction`.
    pub fn rpc_code(&self) -> i64 {
        match self {
            TxError::MissingInputs => -25,
            TxError::AlreadyInChain => -27,
            _ => -26,
        }
    }
}

/// A spendable coin as the view sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    pub output: TxOut,
    /// Height of the block that created it; for a mempool coin, the height of the next block.
    pub height: u32,
    pub is_coinbase: bool,
}

/// Where the transaction would be included.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Height of the block the transaction would be in.
    pub height: u32,
    /// Median time past of the previous block (BIP113: time locks compare against it).
    pub prev_mtp: u32,
}

/// Checks that need no coins (Core's `CheckTransaction`).
pub fn check_shape(tx: &Transaction) -> Result<(), TxError> {
    if tx.input.is_empty() {
        return Err(TxError::NoInputs);
    }
    if tx.output.is_empty() {
        return Err(TxError::NoOutputs);
    }
    let mut total: u64 = 0;
    for out in &tx.output {
        let v = out.value.to_sat();
        if v > MAX_MONEY_SATS {
            return Err(TxError::OutputTooLarge);
        }
        total = total.checked_add(v).ok_or(TxError::OutputTotalTooLarge)?;
        if total > MAX_MONEY_SATS {
            return Err(TxError::OutputTotalTooLarge);
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(tx.input.len());
    for input in &tx.input {
        if !seen.insert(input.previous_output) {
            return Err(TxError::DuplicateInputs);
        }
    }
    if tx.is_coinbase() {
        return Err(TxError::Coinbase);
    }
    Ok(())
}

/// nLockTime finality (Core's `IsFinalTx` with BIP113 time).
pub fn is_final(tx: &Transaction, ctx: Context) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    let threshold = if lock < bitcoin::locktime::absolute::LOCK_TIME_THRESHOLD {
        ctx.height
    } else {
        ctx.prev_mtp
    };
    if lock < threshold {
        return true;
    }
    tx.input
        .iter()
        .all(|i| i.sequence == bitcoin::Sequence::MAX)
}

/// Full check of a non-coinbase transaction whose coins are `coins` (one per input, in order).
/// `mtp_at(h)` gives the median time past at height `h` (needed for time-based BIP68 locks).
/// Returns the fee in sats.
pub fn check_with_coins(
    tx: &Transaction,
    coins: &[Coin],
    ctx: Context,
    mtp_at: &dyn Fn(u32) -> u32,
    verify_scripts: bool,
) -> Result<u64, TxError> {
    check_shape(tx)?;
    if coins.len() != tx.input.len() {
        return Err(TxError::MissingInputs);
    }
    if !is_final(tx, ctx) {
        return Err(TxError::NonFinal);
    }
    let mut in_total: u64 = 0;
    for coin in coins {
        if coin.is_coinbase {
            let depth = ctx.height.saturating_sub(coin.height);
            if depth < COINBASE_MATURITY {
                return Err(TxError::PrematureCoinbaseSpend { depth });
            }
        }
        let v = coin.output.value.to_sat();
        if v > MAX_MONEY_SATS {
            return Err(TxError::InputValuesOutOfRange);
        }
        in_total = in_total
            .checked_add(v)
            .ok_or(TxError::InputValuesOutOfRange)?;
        if in_total > MAX_MONEY_SATS {
            return Err(TxError::InputValuesOutOfRange);
        }
    }
    let out_total = tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
    if in_total < out_total {
        return Err(TxError::InBelowOut {
            in_sats: in_total,
            out_sats: out_total,
        });
    }
    check_sequence_locks(tx, coins, ctx, mtp_at)?;
    if verify_scripts {
        verify_scripts_of(tx, coins)?;
    }
    Ok(in_total - out_total)
}

/// BIP68 relative lock times (Core's `CalculateSequenceLocks` + `EvaluateSequenceLocks`).
fn check_sequence_locks(
    tx: &Transaction,
    coins: &[Coin],
    ctx: Context,
    mtp_at: &dyn Fn(u32) -> u32,
) -> Result<(), TxError> {
    if tx.version.0 < 2 {
        return Ok(());
    }
    // -1 means "no constraint" in Core; i64 keeps the arithmetic exact.
    let mut min_height: i64 = -1;
    let mut min_time: i64 = -1;
    for (input, coin) in tx.input.iter().zip(coins) {
        match input.sequence.to_relative_lock_time() {
            None => {}
            Some(relative::LockTime::Blocks(h)) => {
                min_height = min_height.max(i64::from(coin.height) + i64::from(h.value()) - 1);
            }
            Some(relative::LockTime::Time(t)) => {
                let coin_time = i64::from(mtp_at(coin.height.saturating_sub(1)));
                min_time = min_time.max(coin_time + (i64::from(t.value()) << 9) - 1);
            }
        }
    }
    if min_height >= i64::from(ctx.height) || min_time >= i64::from(ctx.prev_mtp) {
        return Err(TxError::NonBip68Final);
    }
    Ok(())
}

/// Script verification with Bitcoin Core's interpreter (libbitcoinconsensus 26): P2SH, DERSIG,
/// NULLDUMMY, CLTV, CSV, witness and taproot — the consensus flags active on regtest from block 1.
fn verify_scripts_of(tx: &Transaction, coins: &[Coin]) -> Result<(), TxError> {
    let bytes = serialize(tx);
    // Raw pointers into `coins`' scripts; `coins` outlives every use below.
    let spent: Vec<bitcoinconsensus::Utxo> = coins
        .iter()
        .map(|c| bitcoinconsensus::Utxo {
            script_pubkey: c.output.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: c.output.script_pubkey.len() as u32,
            value: c.output.value.to_sat() as i64,
        })
        .collect();
    let flags = bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT;
    for (index, coin) in coins.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            coin.output.script_pubkey.as_bytes(),
            coin.output.value.to_sat(),
            &bytes,
            Some(&spent),
            index,
            flags,
        )
        .map_err(|e| TxError::Script {
            input: index,
            error: format!("{e:?}"),
        })?;
    }
    Ok(())
}

/// Block subsidy at `height` with regtest's halving interval.
pub fn subsidy(height: u32) -> Amount {
    let halvings = height / crate::params::HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat((50 * 100_000_000u64) >> halvings)
}

/// The outpoints a transaction spends.
pub fn prevouts(tx: &Transaction) -> impl Iterator<Item = OutPoint> + '_ {
    tx.input.iter().map(|i| i.previous_output)
}
