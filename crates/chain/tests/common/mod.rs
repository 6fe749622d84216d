#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
//! Test helpers: a key of our own and hand-built, signed P2WPKH spends.

use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Witness, absolute, transaction,
};
use satchel_chain::Chain;

pub struct Key {
    pub sk: SecretKey,
    pub pk: CompressedPublicKey,
}

impl Key {
    pub fn new(byte: u8) -> Key {
        let sk = SecretKey::from_slice(&[byte; 32]).unwrap();
        let pk = CompressedPublicKey(sk.public_key(&Secp256k1::new()));
        Key { sk, pk }
    }
    pub fn address(&self) -> Address {
        Address::p2wpkh(&self.pk, Network::Regtest)
    }
    pub fn script(&self) -> ScriptBuf {
        self.address().script_pubkey()
    }
}

/// Options for a hand-built spend.
pub struct Spend {
    pub version: i32,
    pub lock_time: u32,
    pub sequence: Sequence,
}

impl Default for Spend {
    fn default() -> Self {
        Spend {
            version: 2,
            lock_time: 0,
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
        }
    }
}

/// Spends `prev` (a P2WPKH output of `key` worth `value`) to `to` with `out_sats`.
pub fn spend(
    key: &Key,
    prev: OutPoint,
    value: Amount,
    to: ScriptBuf,
    out_sats: u64,
    opts: Spend,
) -> Transaction {
    let mut tx = Transaction {
        version: transaction::Version(opts.version),
        lock_time: absolute::LockTime::from_consensus(opts.lock_time),
        input: vec![TxIn {
            previous_output: prev,
            script_sig: ScriptBuf::new(),
            sequence: opts.sequence,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(out_sats),
            script_pubkey: to,
        }],
    };
    let sighash = SighashCache::new(&tx)
        .p2wpkh_signature_hash(0, &key.script(), value, EcdsaSighashType::All)
        .unwrap();
    let sig = Secp256k1::new().sign_ecdsa(&Message::from(sighash), &key.sk);
    let sig = bitcoin::ecdsa::Signature {
        signature: sig,
        sighash_type: EcdsaSighashType::All,
    };
    tx.input[0].witness = Witness::p2wpkh(&sig, &key.pk.0);
    tx
}

/// Mines one block paying `key`, then 100 more so its coinbase is spendable; returns the
/// coinbase outpoint and value.
pub fn mature_coin(chain: &Chain, key: &Key) -> (OutPoint, Amount) {
    let hash = chain.mine(1, Some(&key.address())).unwrap()[0];
    chain.mine(100, None).unwrap();
    chain.with_state(|st| {
        let e = st.entry_by_hash(&hash).unwrap();
        let cb = &e.block.txdata[0];
        (
            OutPoint {
                txid: cb.compute_txid(),
                vout: 0,
            },
            cb.output[0].value,
        )
    })
}
