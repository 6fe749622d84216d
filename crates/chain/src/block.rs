//! Building and checking blocks: coinbase with BIP34 height and the BIP141 witness commitment,
//! merkle root, proof of work at regtest difficulty.

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Witness, absolute, transaction,
};

use crate::params::{REGTEST_BITS, WITNESS_COMMITMENT_MAGIC};

/// Why a block was refused (besides a transaction in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("prev-blk-not-found")]
    PrevNotTip,
    #[error("high-hash")]
    HighHash,
    #[error("bad-diffbits")]
    BadBits,
    #[error("bad-txnmrklroot")]
    BadMerkleRoot,
    #[error("bad-witness-merkle-match")]
    BadWitnessCommitment,
    #[error("time-too-old")]
    TimeTooOld,
    #[error("bad-cb-missing")]
    NoCoinbase,
    #[error("bad-cb-multiple")]
    MultipleCoinbase,
    #[error("bad-cb-height")]
    BadCoinbaseHeight,
    #[error("bad-cb-amount")]
    BadCoinbaseAmount,
    #[error("bad-blk-weight")]
    TooHeavy,
    #[error("bad-txns-duplicate")]
    DuplicateTx,
    #[error("{0}")]
    Tx(#[from] crate::validate::TxError),
}

/// The script prefix BIP34 requires: the height as Core's `CScript() << height` writes it
/// (OP_1..OP_16 for 1..16, else a minimal little-endian push).
pub fn bip34_prefix(height: u32) -> ScriptBuf {
    Builder::new().push_int(i64::from(height)).into_script()
}

/// A coinbase paying `value` to `script`, with the height, an extra tag, the witness reserved
/// value (32 zero bytes) and — added by [`assemble`] — the witness commitment.
fn coinbase(height: u32, script: ScriptBuf, value: Amount, tag: u32) -> Transaction {
    let mut sig = bip34_prefix(height).into_bytes();
    // An extra push keeps the scriptSig ≥ 2 bytes and makes coinbases of reorged heights differ.
    let extra = PushBytesBuf::try_from(tag.to_le_bytes().to_vec()).unwrap_or_default();
    sig.extend_from_slice(Builder::new().push_slice(extra).as_bytes());
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(sig),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 32]]),
        }],
        output: vec![TxOut {
            value,
            script_pubkey: script,
        }],
    }
}

/// Assembles a mined block on `prev` at `height` with `txs` (already valid, in order), the
/// coinbase paying subsidy + fees to `payout`, and solves its proof of work.
pub fn assemble(
    prev: BlockHash,
    height: u32,
    time: u32,
    payout: ScriptBuf,
    coinbase_value: Amount,
    txs: Vec<Transaction>,
    tag: u32,
) -> Block {
    let mut txdata = Vec::with_capacity(txs.len() + 1);
    txdata.push(coinbase(height, payout, coinbase_value, tag));
    txdata.extend(txs);
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: prev,
            merkle_root: TxMerkleNode::all_zeros(),
            time,
            bits: CompactTarget::from_consensus(REGTEST_BITS),
            nonce: 0,
        },
        txdata,
    };
    // Always commit, even with no segwit transaction (as Core's miner does).
    if let Some(root) = block.witness_root() {
        let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
        let mut script = WITNESS_COMMITMENT_MAGIC.to_vec();
        script.extend_from_slice(commitment.as_byte_array());
        if let Some(cb) = block.txdata.first_mut() {
            cb.output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::from_bytes(script),
            });
        }
    }
    if let Some(root) = block.compute_merkle_root() {
        block.header.merkle_root = root;
    }
    solve(&mut block.header);
    block
}

/// Increments the nonce until the header meets its target (≈2 tries at regtest difficulty).
pub fn solve(header: &mut Header) {
    while header.validate_pow(header.target()).is_err() {
        header.nonce = header.nonce.wrapping_add(1);
        if header.nonce == 0 {
            header.time = header.time.wrapping_add(1);
        }
    }
}

/// Context-free block checks: PoW at regtest bits, merkle root, one coinbase first, BIP34
/// height, witness commitment (required whenever any transaction has a witness), weight.
pub fn check_block(block: &Block, height: u32) -> Result<(), BlockError> {
    if block.header.bits != CompactTarget::from_consensus(REGTEST_BITS) {
        return Err(BlockError::BadBits);
    }
    if block.header.validate_pow(block.header.target()).is_err() {
        return Err(BlockError::HighHash);
    }
    if !block.check_merkle_root() {
        return Err(BlockError::BadMerkleRoot);
    }
    let cb = block.txdata.first().ok_or(BlockError::NoCoinbase)?;
    if !cb.is_coinbase() {
        return Err(BlockError::NoCoinbase);
    }
    if block.txdata.iter().skip(1).any(|t| t.is_coinbase()) {
        return Err(BlockError::MultipleCoinbase);
    }
    let prefix = bip34_prefix(height);
    let sig = cb
        .input
        .first()
        .map(|i| i.script_sig.as_bytes())
        .unwrap_or_default();
    if !sig.starts_with(prefix.as_bytes()) {
        return Err(BlockError::BadCoinbaseHeight);
    }
    if !block.check_witness_commitment() {
        return Err(BlockError::BadWitnessCommitment);
    }
    if block.weight().to_wu() > crate::params::MAX_BLOCK_WEIGHT {
        return Err(BlockError::TooHeavy);
    }
    let mut seen = std::collections::HashSet::new();
    if !block.txdata.iter().all(|t| seen.insert(t.compute_txid())) {
        return Err(BlockError::DuplicateTx);
    }
    Ok(())
}

/// Whether the coinbase carries a witness commitment output that matches the block (stricter
/// than `Block::check_witness_commitment`, which accepts a block of legacy transactions with
/// none): what our miner always writes.
pub fn has_valid_witness_commitment(block: &Block) -> bool {
    let Some(cb) = block.txdata.first() else {
        return false;
    };
    let Some(out) = cb.output.iter().rev().find(|o| {
        o.script_pubkey.len() >= 38 && o.script_pubkey.as_bytes()[..6] == WITNESS_COMMITMENT_MAGIC
    }) else {
        return false;
    };
    let reserved: Vec<&[u8]> = cb
        .input
        .first()
        .map(|i| i.witness.iter().collect())
        .unwrap_or_default();
    let [value] = reserved.as_slice() else {
        return false;
    };
    let Some(root) = block.witness_root() else {
        return false;
    };
    let commitment = Block::compute_witness_commitment(&root, value);
    out.script_pubkey.as_bytes()[6..38] == commitment.as_byte_array()[..]
}
