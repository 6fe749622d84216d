//! The chain's own rules: blocks (PoW, BIP34, witness commitment), double spends, timelocks,
//! coinbase maturity, scripts, reorgs and persistence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitcoin::{Amount, OutPoint, Sequence};
use common::{Key, Spend, mature_coin, spend};
use satchel_chain::block::{bip34_prefix, has_valid_witness_commitment};
use satchel_chain::{Chain, ChainError, TxError};

fn open() -> (tempfile::TempDir, Chain) {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open(dir.path()).unwrap();
    (dir, chain)
}

fn rejected(r: Result<bitcoin::Txid, ChainError>) -> TxError {
    match r {
        Err(ChainError::Tx(e)) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn blocks_have_pow_bip34_height_and_witness_commitment() {
    let (_d, chain) = open();
    let hashes = chain.mine(20, None).unwrap();
    // A block with a segwit transaction too.
    chain.fund(&Key::new(1).address(), 10_000).unwrap_err(); // nothing mature yet
    chain.mine(100, None).unwrap();
    chain.fund(&Key::new(1).address(), 10_000).unwrap();
    let last = chain.mine(1, None).unwrap();
    chain.with_state(|st| {
        for hash in hashes.iter().chain(&last) {
            let e = st.entry_by_hash(hash).unwrap();
            let b = &e.block;
            assert_eq!(b.header.bits.to_consensus(), 0x207f_ffff);
            assert_eq!(b.header.validate_pow(b.header.target()).unwrap(), *hash);
            assert!(b.check_merkle_root());
            assert!(b.check_witness_commitment());
            assert!(
                has_valid_witness_commitment(b),
                "commitment present even without segwit txs"
            );
            let sig = b.txdata[0].input[0].script_sig.as_bytes();
            assert!(sig.starts_with(bip34_prefix(e.height).as_bytes()));
            if e.height > 16 {
                assert_eq!(b.bip34_block_height().unwrap(), u64::from(e.height));
            }
            assert!(b.header.time > st.entries[e.height as usize - 1].mtp);
        }
        let e = st.entry_by_hash(&last[0]).unwrap();
        assert_eq!(e.block.txdata.len(), 2);
        assert!(e.block.txdata[1].input[0].witness.len() == 2);
    });
    // Subsidy halves at 150 on regtest.
    chain.mine(30, None).unwrap();
    chain.with_state(|st| {
        assert_eq!(
            st.entries[149].block.txdata[0].output[0].value,
            Amount::from_sat(50 * 100_000_000)
        );
        assert_eq!(
            st.entries[150].block.txdata[0].output[0].value,
            Amount::from_sat(25 * 100_000_000)
        );
    });
}

#[test]
fn double_spends_are_rejected_in_mempool_and_block() {
    let (_d, chain) = open();
    let key = Key::new(2);
    let (coin, value) = mature_coin(&chain, &key);
    let a = spend(
        &key,
        coin,
        value,
        Key::new(3).script(),
        value.to_sat() - 1_000,
        Spend::default(),
    );
    let b = spend(
        &key,
        coin,
        value,
        Key::new(4).script(),
        value.to_sat() - 1_000,
        Spend::default(),
    );
    let a_id = chain.send_transaction(a.clone()).unwrap();
    // Same fee: not a valid replacement.
    assert!(matches!(
        rejected(chain.send_transaction(b.clone())),
        TxError::ReplacementFee { .. }
    ));
    // Sending the same transaction again is fine (bitcoind answers with the txid).
    assert_eq!(chain.send_transaction(a.clone()).unwrap(), a_id);
    // A replacement paying more (BIP125 full RBF) evicts the original and its child.
    let child = spend(
        &Key::new(3),
        OutPoint {
            txid: a_id,
            vout: 0,
        },
        a.output[0].value,
        Key::new(5).script(),
        a.output[0].value.to_sat() - 1_000,
        Spend::default(),
    );
    chain.send_transaction(child.clone()).unwrap();
    let c = spend(
        &key,
        coin,
        value,
        Key::new(4).script(),
        value.to_sat() - 5_000,
        Spend::default(),
    );
    let c_id = chain.send_transaction(c).unwrap();
    chain.with_state(|st| {
        assert_eq!(st.mempool.order, vec![c_id]);
    });
    let hash = chain.mine(1, None).unwrap()[0];
    // Confirmed: spending the coin again is a missing input.
    assert_eq!(
        rejected(chain.send_transaction(a.clone())),
        TxError::MissingInputs
    );
    chain.with_state(|st| assert!(st.entry_by_hash(&hash).unwrap().block.txdata.len() == 2));

    // A block spending one coin twice is refused.
    let key2 = Key::new(6);
    let (coin2, value2) = mature_coin(&chain, &key2);
    let x = spend(
        &key2,
        coin2,
        value2,
        Key::new(3).script(),
        value2.to_sat() - 1_000,
        Spend::default(),
    );
    let y = spend(
        &key2,
        coin2,
        value2,
        Key::new(4).script(),
        value2.to_sat() - 2_000,
        Spend::default(),
    );
    let tip = chain.tip();
    let block = satchel_chain::block::assemble(
        tip.hash,
        tip.height + 1,
        u32::MAX / 2,
        Key::new(7).script(),
        Amount::from_sat(25 * 100_000_000),
        vec![x, y],
        1,
    );
    match chain.submit_block(block) {
        Err(ChainError::Block(satchel_chain::block::BlockError::Tx(TxError::MissingInputs))) => {}
        other => panic!("double spend in block accepted: {other:?}"),
    }
    assert_eq!(chain.tip(), tip);
}

#[test]
fn value_maturity_and_scripts_are_checked() {
    let (_d, chain) = open();
    let key = Key::new(8);
    let hash = chain.mine(1, Some(&key.address())).unwrap()[0];
    let (coin, value) = chain.with_state(|st| {
        let cb = &st.entry_by_hash(&hash).unwrap().block.txdata[0];
        (
            OutPoint {
                txid: cb.compute_txid(),
                vout: 0,
            },
            cb.output[0].value,
        )
    });
    chain.mine(98, None).unwrap();
    let tx = spend(
        &key,
        coin,
        value,
        Key::new(9).script(),
        value.to_sat() - 1_000,
        Spend::default(),
    );
    // Next block is 100: depth 99 < 100.
    assert!(matches!(
        rejected(chain.send_transaction(tx.clone())),
        TxError::PrematureCoinbaseSpend { depth: 99 }
    ));
    chain.mine(1, None).unwrap();
    // Outputs exceeding inputs.
    let greedy = spend(
        &key,
        coin,
        value,
        Key::new(9).script(),
        value.to_sat() + 1,
        Spend::default(),
    );
    assert!(matches!(
        rejected(chain.send_transaction(greedy)),
        TxError::InBelowOut { .. }
    ));
    // A signature by the wrong key.
    let forged = spend(
        &Key::new(10),
        coin,
        value,
        Key::new(9).script(),
        value.to_sat() - 1_000,
        Spend::default(),
    );
    assert!(matches!(
        rejected(chain.send_transaction(forged)),
        TxError::Script { input: 0, .. }
    ));
    // Missing input.
    let ghost = spend(
        &key,
        OutPoint {
            txid: coin.txid,
            vout: 7,
        },
        value,
        Key::new(9).script(),
        1_000,
        Spend::default(),
    );
    assert_eq!(
        rejected(chain.send_transaction(ghost)),
        TxError::MissingInputs
    );
    // Value overflow.
    let mut huge = tx.clone();
    huge.output[0].value = Amount::from_sat(21_000_001 * 100_000_000);
    assert_eq!(
        rejected(chain.send_transaction(huge)),
        TxError::OutputTooLarge
    );
    chain.send_transaction(tx).unwrap();
}

#[test]
fn absolute_and_relative_timelocks_are_enforced() {
    let (_d, chain) = open();
    let key = Key::new(11);
    let (coin, value) = mature_coin(&chain, &key);
    let h = chain.tip().height;

    // nLockTime by height: final only in a block above the lock height.
    let locked = Spend {
        lock_time: h + 3,
        sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
        ..Spend::default()
    };
    let tx = spend(
        &key,
        coin,
        value,
        key.script(),
        value.to_sat() - 1_000,
        locked,
    );
    assert_eq!(
        rejected(chain.send_transaction(tx.clone())),
        TxError::NonFinal
    );
    chain.mine(2, None).unwrap(); // next block = h + 3: still not > lock
    assert_eq!(
        rejected(chain.send_transaction(tx.clone())),
        TxError::NonFinal
    );
    chain.mine(1, None).unwrap();
    let id = chain.send_transaction(tx.clone()).unwrap();
    chain.mine(1, None).unwrap();
    let coin = OutPoint { txid: id, vout: 0 };
    let value = tx.output[0].value;

    // nLockTime by time (BIP113: against the median time past).
    let mtp = chain.with_state(|st| st.tip().mtp);
    let by_time = Spend {
        lock_time: mtp + 3_600,
        sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
        ..Spend::default()
    };
    let tx_t = spend(
        &key,
        coin,
        value,
        key.script(),
        value.to_sat() - 1_000,
        by_time,
    );
    assert_eq!(
        rejected(chain.send_transaction(tx_t.clone())),
        TxError::NonFinal
    );

    // BIP68 by height: 5 blocks after the coin's block.
    let rel = Spend {
        sequence: Sequence::from_height(5),
        ..Spend::default()
    };
    let tx_r = spend(&key, coin, value, key.script(), value.to_sat() - 1_000, rel);
    assert_eq!(
        rejected(chain.send_transaction(tx_r.clone())),
        TxError::NonBip68Final
    );
    chain.mine(3, None).unwrap(); // next block is coin height + 4: not yet
    assert_eq!(
        rejected(chain.send_transaction(tx_r.clone())),
        TxError::NonBip68Final
    );
    chain.mine(1, None).unwrap();
    // Version 1 ignores sequence locks.
    let v1 = Spend {
        version: 1,
        sequence: Sequence::from_height(500),
        ..Spend::default()
    };
    assert!(
        chain
            .test_accept(&spend(
                &key,
                coin,
                value,
                key.script(),
                value.to_sat() - 1_000,
                v1
            ))
            .is_ok()
    );
    let id = chain.send_transaction(tx_r.clone()).unwrap();
    chain.mine(1, None).unwrap();

    // BIP68 by time: 2 × 512 s after the median time past before the coin's block.
    let coin = OutPoint { txid: id, vout: 0 };
    let value = tx_r.output[0].value;
    let rel_t = Spend {
        sequence: Sequence::from_512_second_intervals(2),
        ..Spend::default()
    };
    let tx_rt = spend(
        &key,
        coin,
        value,
        key.script(),
        value.to_sat() - 1_000,
        rel_t,
    );
    assert_eq!(
        rejected(chain.send_transaction(tx_rt.clone())),
        TxError::NonBip68Final
    );
    chain.advance_time(4_000);
    chain.mine(11, None).unwrap(); // the median time past moves past both time locks
    chain.send_transaction(tx_rt).unwrap();
    // tx_t's coin is spent by now; its nLockTime is final in the next block.
    assert!(chain.with_state(|st| satchel_chain::validate::is_final(&tx_t, st.next_context())));
}

#[test]
fn reorg_returns_transactions_to_the_mempool_and_rebuilds_utxos() {
    let (_d, chain) = open();
    let key = Key::new(12);
    let (coin, value) = mature_coin(&chain, &key);
    let tx = spend(
        &key,
        coin,
        value,
        Key::new(13).script(),
        value.to_sat() - 1_000,
        Spend::default(),
    );
    let id = chain.send_transaction(tx).unwrap();
    let mined = chain.mine(1, None).unwrap()[0];
    // A coinbase in the block to be removed: its spenders would be dropped.
    let before = chain.tip();
    let mut tips = chain.subscribe();
    let new = chain.reorg(2).unwrap();
    assert_eq!(new.len(), 3);
    let after = chain.tip();
    assert_eq!(after.height, before.height + 1);
    assert_eq!(*tips.borrow_and_update(), after);
    chain.with_state(|st| {
        assert!(!st.is_active(&mined));
        assert!(
            st.entry_by_hash(&mined).is_some(),
            "stale block still answers by hash"
        );
        assert!(
            st.mempool.entries.contains_key(&id),
            "tx back in the mempool"
        );
        assert!(!st.tx_index.contains_key(&id));
        assert!(st.utxos.contains_key(&coin), "its input is unspent again");
        assert!(!st.utxos.contains_key(&OutPoint { txid: id, vout: 0 }));
    });
    chain.mine(1, None).unwrap();
    chain.with_state(|st| {
        assert!(st.tx_index.contains_key(&id));
        assert!(st.mempool.entries.is_empty());
        assert!(!st.utxos.contains_key(&coin));
    });

    // A transaction spending a coinbase that a reorg removes is dropped (the coin is gone).
    let key2 = Key::new(14);
    let first = chain.mine(1, Some(&key2.address())).unwrap()[0];
    chain.mine(99, None).unwrap();
    let (c2, v2) = chain.with_state(|st| {
        let cb = &st.entry_by_hash(&first).unwrap().block.txdata[0];
        (
            OutPoint {
                txid: cb.compute_txid(),
                vout: 0,
            },
            cb.output[0].value,
        )
    });
    let t2 = spend(
        &key2,
        c2,
        v2,
        key2.script(),
        v2.to_sat() - 1_000,
        Spend::default(),
    );
    let t2_id = chain.send_transaction(t2).unwrap();
    chain.reorg(100).unwrap();
    chain.with_state(|st| {
        assert!(!st.mempool.entries.contains_key(&t2_id));
        assert!(!st.utxos.contains_key(&c2));
    });
}

#[test]
fn persistence_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (tip, utxos, mempool, faucet) = {
        let chain = Chain::open(dir.path()).unwrap();
        chain.mine(105, None).unwrap();
        chain.fund(&Key::new(15).address(), 50_000).unwrap();
        chain.mine(1, None).unwrap();
        chain.reorg(1).unwrap(); // rewritten file, tx back in the mempool
        let id = chain.fund(&Key::new(16).address(), 70_000).unwrap();
        let utxos = chain.with_state(|st| st.utxos.len());
        let mempool = chain.with_state(|st| st.mempool.order.clone());
        assert!(mempool.contains(&id));
        (chain.tip(), utxos, mempool, chain.faucet_address())
    };
    let chain = Chain::open(dir.path()).unwrap();
    assert_eq!(chain.tip(), tip);
    assert_eq!(chain.faucet_address(), faucet);
    chain.with_state(|st| {
        assert_eq!(st.utxos.len(), utxos);
        assert_eq!(st.mempool.order, mempool);
    });
    // A torn trailing record (crash mid-append) is cut off.
    let path = dir.path().join("blocks.dat");
    drop(chain);
    let mut data = std::fs::read(&path).unwrap();
    data.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    std::fs::write(&path, &data).unwrap();
    let chain = Chain::open(dir.path()).unwrap();
    assert_eq!(chain.tip(), tip);
    let hashes = chain.mine(2, None).unwrap();
    drop(chain);
    assert_eq!(Chain::open(dir.path()).unwrap().tip().hash, hashes[1]);
}
