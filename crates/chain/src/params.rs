//! Regtest consensus parameters the chain follows (Bitcoin Core's `CRegTestParams`).

/// Regtest's proof-of-work limit in compact form: any hash below ~2^255 is valid, so a block
/// takes two nonces on average.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Regtest halves the subsidy every 150 blocks.
pub const HALVING_INTERVAL: u32 = 150;
/// A coinbase output can be spent in a block at least this many blocks above its own.
pub const COINBASE_MATURITY: u32 = 100;
/// 21 million BTC in sats.
pub const MAX_MONEY_SATS: u64 = 21_000_000 * 100_000_000;
/// Consensus block weight limit (BIP141).
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// Weight kept free in a block we mine for the coinbase.
pub const COINBASE_WEIGHT_RESERVE: u64 = 4_000;
/// The BIP141 witness commitment header (OP_RETURN, push 36, 0xaa21a9ed).
pub const WITNESS_COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
/// Incremental relay fee for replacements (BIP125 rule 4), sat/vB — Core's default.
pub const INCREMENTAL_RELAY_SAT_PER_VB: u64 = 1;
