//! JSON shapes shared by the two dialects: bitcoind's decoded transactions and headers, and
//! Esplora's transactions, statuses and blocks.

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hashes::{Hash, HashEngine, sha256d};
use bitcoin::{Address, Amount, Network, Script, Transaction, Txid};
use serde_json::{Value, json};

use crate::state::{Entry, State};

pub fn btc(sats: u64) -> Value {
    json!(Amount::from_sat(sats).to_btc())
}

pub fn address_of(script: &Script) -> Option<String> {
    Address::from_script(script, Network::Regtest)
        .ok()
        .map(|a| a.to_string())
}

/// bitcoind's `scriptPubKey.type`.
pub fn core_script_type(s: &Script) -> &'static str {
    if s.is_p2wpkh() {
        "witness_v0_keyhash"
    } else if s.is_p2wsh() {
        "witness_v0_scripthash"
    } else if s.is_p2tr() {
        "witness_v1_taproot"
    } else if s.is_p2pkh() {
        "pubkeyhash"
    } else if s.is_p2sh() {
        "scripthash"
    } else if s.is_op_return() {
        "nulldata"
    } else if s.is_p2pk() {
        "pubkey"
    } else if s.is_multisig() {
        "multisig"
    } else if s.witness_version().is_some() {
        "witness_unknown"
    } else {
        "nonstandard"
    }
}

/// Esplora's `scriptpubkey_type`.
pub fn esplora_script_type(s: &Script) -> &'static str {
    if s.is_p2wpkh() {
        "v0_p2wpkh"
    } else if s.is_p2wsh() {
        "v0_p2wsh"
    } else if s.is_p2tr() {
        "v1_p2tr"
    } else if s.is_p2pkh() {
        "p2pkh"
    } else if s.is_p2sh() {
        "p2sh"
    } else if s.is_op_return() {
        "op_return"
    } else if s.is_p2pk() {
        "p2pk"
    } else if s.is_multisig() {
        "multisig"
    } else {
        "unknown"
    }
}

/// bitcoind's decoded transaction (`decoderawtransaction` / verbose `getrawtransaction`).
pub fn core_tx(tx: &Transaction) -> Value {
    let vin: Vec<Value> = tx
        .input
        .iter()
        .map(|i| {
            let witness: Vec<String> = i.witness.iter().map(hex::encode).collect();
            let mut v = if tx.is_coinbase() {
                json!({ "coinbase": hex::encode(i.script_sig.as_bytes()) })
            } else {
                json!({
                    "txid": i.previous_output.txid.to_string(),
                    "vout": i.previous_output.vout,
                    "scriptSig": { "asm": i.script_sig.to_asm_string(), "hex": hex::encode(i.script_sig.as_bytes()) },
                })
            };
            if !witness.is_empty() {
                v["txinwitness"] = json!(witness);
            }
            v["sequence"] = json!(i.sequence.0);
            v
        })
        .collect();
    let vout: Vec<Value> = tx
        .output
        .iter()
        .enumerate()
        .map(|(n, o)| {
            let mut spk = json!({
                "asm": o.script_pubkey.to_asm_string(),
                "hex": hex::encode(o.script_pubkey.as_bytes()),
                "type": core_script_type(&o.script_pubkey),
            });
            if let Some(a) = address_of(&o.script_pubkey) {
                spk["address"] = json!(a);
            }
            json!({ "value": btc(o.value.to_sat()), "n": n, "scriptPubKey": spk })
        })
        .collect();
    json!({
        "txid": tx.compute_txid().to_string(),
        "hash": tx.compute_wtxid().to_string(),
        "version": tx.version.0,
        "size": tx.total_size(),
        "vsize": tx.vsize(),
        "weight": tx.weight().to_wu(),
        "locktime": tx.lock_time.to_consensus_u32(),
        "vin": vin,
        "vout": vout,
        "hex": serialize_hex(tx),
    })
}

pub fn chainwork_hex(e: &Entry) -> String {
    hex::encode(e.chainwork.to_be_bytes())
}

/// bitcoind's verbose `getblockheader` (and the header part of `getblock`).
pub fn core_header(state: &State, e: &Entry) -> Value {
    let h = &e.block.header;
    let active = state.is_active(&e.hash);
    let confirmations: i64 = if active {
        i64::from(state.height()) - i64::from(e.height) + 1
    } else {
        -1
    };
    let mut v = json!({
        "hash": e.hash.to_string(),
        "confirmations": confirmations,
        "height": e.height,
        "version": h.version.to_consensus(),
        "versionHex": format!("{:08x}", h.version.to_consensus()),
        "merkleroot": h.merkle_root.to_string(),
        "time": h.time,
        "mediantime": e.mtp,
        "nonce": h.nonce,
        "bits": format!("{:08x}", h.bits.to_consensus()),
        "difficulty": h.difficulty_float(),
        "chainwork": chainwork_hex(e),
        "nTx": e.block.txdata.len(),
    });
    if e.height > 0 {
        v["previousblockhash"] = json!(h.prev_blockhash.to_string());
    }
    if active && let Some(next) = state.entries.get(e.height as usize + 1) {
        v["nextblockhash"] = json!(next.hash.to_string());
    }
    v
}

/// Esplora's transaction status.
pub fn esplora_status(e: Option<&Entry>) -> Value {
    match e {
        Some(e) => json!({
            "confirmed": true,
            "block_height": e.height,
            "block_hash": e.hash.to_string(),
            "block_time": e.block.header.time,
        }),
        None => json!({ "confirmed": false }),
    }
}

/// Fee of a known transaction (0 for a coinbase), from its prevouts.
pub fn fee_of(state: &State, tx: &Transaction) -> u64 {
    if tx.is_coinbase() {
        return 0;
    }
    let ins: u64 = tx
        .input
        .iter()
        .filter_map(|i| state.output(&i.previous_output))
        .map(|o| o.value.to_sat())
        .sum();
    let outs: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    ins.saturating_sub(outs)
}

fn esplora_out(o: &bitcoin::TxOut) -> Value {
    let mut v = json!({
        "scriptpubkey": hex::encode(o.script_pubkey.as_bytes()),
        "scriptpubkey_asm": o.script_pubkey.to_asm_string(),
        "scriptpubkey_type": esplora_script_type(&o.script_pubkey),
        "value": o.value.to_sat(),
    });
    if let Some(a) = address_of(&o.script_pubkey) {
        v["scriptpubkey_address"] = json!(a);
    }
    v
}

/// Esplora's transaction object.
pub fn esplora_tx(state: &State, tx: &Transaction, block: Option<&Entry>) -> Value {
    let coinbase = tx.is_coinbase();
    let vin: Vec<Value> = tx
        .input
        .iter()
        .map(|i| {
            let prevout = if coinbase {
                None
            } else {
                state.output(&i.previous_output)
            };
            let mut v = json!({
                "txid": i.previous_output.txid.to_string(),
                "vout": i.previous_output.vout,
                "prevout": prevout.as_ref().map(esplora_out),
                "scriptsig": hex::encode(i.script_sig.as_bytes()),
                "scriptsig_asm": i.script_sig.to_asm_string(),
                "is_coinbase": coinbase,
                "sequence": i.sequence.0,
            });
            if !i.witness.is_empty() {
                v["witness"] = json!(i.witness.iter().map(hex::encode).collect::<Vec<_>>());
            }
            v
        })
        .collect();
    json!({
        "txid": tx.compute_txid().to_string(),
        "version": tx.version.0,
        "locktime": tx.lock_time.to_consensus_u32(),
        "vin": vin,
        "vout": tx.output.iter().map(esplora_out).collect::<Vec<_>>(),
        "size": tx.total_size(),
        "weight": tx.weight().to_wu(),
        "fee": fee_of(state, tx),
        "status": esplora_status(block),
    })
}

/// Esplora's block object.
pub fn esplora_block(e: &Entry) -> Value {
    let h = &e.block.header;
    let mut v = json!({
        "id": e.hash.to_string(),
        "height": e.height,
        "version": h.version.to_consensus(),
        "timestamp": h.time,
        "tx_count": e.block.txdata.len(),
        "size": e.block.total_size(),
        "weight": e.block.weight().to_wu(),
        "merkle_root": h.merkle_root.to_string(),
        "previousblockhash": null,
        "mediantime": e.mtp,
        "nonce": h.nonce,
        "bits": h.bits.to_consensus(),
        "difficulty": h.difficulty_float(),
    });
    if e.height > 0 {
        v["previousblockhash"] = json!(h.prev_blockhash.to_string());
    }
    v
}

/// The merkle branch of the transaction at `pos` (siblings, bottom up), as Electrum and Esplora
/// give it.
pub fn merkle_branch(txids: &[Txid], mut pos: usize) -> Vec<Txid> {
    let mut level: Vec<sha256d::Hash> = txids.iter().map(|t| t.to_raw_hash()).collect();
    let mut branch = Vec::new();
    while level.len() > 1 {
        if level.len() % 2 == 1
            && let Some(last) = level.last().copied()
        {
            level.push(last);
        }
        if let Some(sib) = level.get(pos ^ 1) {
            branch.push(Txid::from_raw_hash(*sib));
        }
        level = level
            .chunks(2)
            .map(|pair| {
                let mut engine = sha256d::Hash::engine();
                for h in pair {
                    engine.input(h.as_byte_array());
                }
                sha256d::Hash::from_engine(engine)
            })
            .collect();
        pos /= 2;
    }
    branch
}
