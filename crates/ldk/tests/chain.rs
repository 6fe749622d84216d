//! The embedded node against a real chain source, for both dialects: an in-process
//! `satchel-chain` served as bitcoind JSON-RPC and as Esplora, with the node's production chain
//! clients pointed at it. Nothing sleeps for a fixed time: every check waits for its condition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, BlockHash, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Witness, absolute, transaction,
};
use lightning::chain::chaininterface::{BroadcasterInterface, ConfirmationTarget, FeeEstimator};
use satchel_chain::{Chain, ChainConfig, ChainServer};
use satchel_ldk::{ChainSource, FEERATE_FLOOR_SAT_PER_KW, LdkConfig, LdkNode};

#[derive(Clone, Copy, Debug)]
enum Source {
    Rpc,
    Esplora,
}

struct World {
    dir: tempfile::TempDir,
    chain: Chain,
    server: ChainServer,
}

async fn world(fee_rate_sat_per_vb: u64) -> World {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open_with(
        dir.path().join("chain"),
        ChainConfig {
            fee_rate_sat_per_vb,
        },
    )
    .unwrap();
    let server = ChainServer::start(chain.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    chain.mine(101, None).unwrap();
    World { dir, chain, server }
}

impl World {
    fn config(&self, source: Source) -> LdkConfig {
        let mut c = LdkConfig::new(self.dir.path().join("node"));
        c.chain_source = Some(match source {
            Source::Rpc => ChainSource::BitcoindRpc {
                url: self.server.rpc_url.clone(),
                user: self.server.credentials.user.clone(),
                password: self.server.credentials.password.clone(),
            },
            Source::Esplora => ChainSource::Esplora {
                url: self.server.esplora_url.clone(),
            },
        });
        c.chain_poll_interval = Duration::from_millis(20);
        c.fee_refresh_interval = Duration::from_millis(50);
        c
    }

    fn tip(&self) -> (u32, BlockHash) {
        let t = self.chain.tip();
        (t.height, t.hash)
    }
}

/// Waits (polling) until `f` holds; panics with `what` after a minute, which only a broken
/// node reaches.
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_on_tip(node: &LdkNode, w: &World) {
    let tip = w.tip();
    wait_for(&format!("node at the chain tip {tip:?}"), || {
        node.best_block() == tip && node.chain_synced() == Some(true)
    })
    .await;
}

async fn follows_mined_blocks(source: Source) {
    let w = world(2).await;
    let node = LdkNode::start(w.config(source)).await.unwrap();
    // A new node starts at the tip, not at genesis.
    assert_eq!(node.best_block().0, 101);
    wait_on_tip(&node, &w).await;
    for n in [1, 5] {
        w.chain.mine(n, None).unwrap();
        wait_on_tip(&node, &w).await;
    }
    assert_eq!(node.best_block().0, 107);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_node_follows_mined_blocks() {
    follows_mined_blocks(Source::Rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esplora_node_follows_mined_blocks() {
    follows_mined_blocks(Source::Esplora).await;
}

async fn restart_catches_up(source: Source) {
    let w = world(2).await;
    let node = LdkNode::start(w.config(source)).await.unwrap();
    wait_on_tip(&node, &w).await;
    let before = node.best_block();
    node.stop().await.unwrap();

    // Blocks mined while the node is down, the last of those it saw among them replaced.
    w.chain.mine(6, None).unwrap();
    let node = LdkNode::start(w.config(source)).await.unwrap();
    wait_on_tip(&node, &w).await;
    assert_eq!(node.best_block().0, before.0 + 6);
    node.stop().await.unwrap();

    w.chain.reorg(3).unwrap();
    w.chain.mine(2, None).unwrap();
    let node = LdkNode::start(w.config(source)).await.unwrap();
    wait_on_tip(&node, &w).await;
    assert_eq!(node.best_block().0, before.0 + 6 + 1 + 2);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_node_catches_up_after_a_restart() {
    restart_catches_up(Source::Rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esplora_node_catches_up_after_a_restart() {
    restart_catches_up(Source::Esplora).await;
}

async fn handles_a_reorg(source: Source) {
    let w = world(2).await;
    let node = LdkNode::start(w.config(source)).await.unwrap();
    w.chain.mine(3, None).unwrap();
    wait_on_tip(&node, &w).await;
    let old = node.best_block();
    let new = w.chain.reorg(2).unwrap();
    wait_on_tip(&node, &w).await;
    assert_eq!(node.best_block(), (old.0 + 1, *new.last().unwrap()));
    assert!(!new.contains(&old.1));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_node_ends_on_the_new_tip_after_a_reorg() {
    handles_a_reorg(Source::Rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esplora_node_ends_on_the_new_tip_after_a_reorg() {
    handles_a_reorg(Source::Esplora).await;
}

/// A P2WPKH key of the test's own.
struct Key {
    sk: SecretKey,
    pk: CompressedPublicKey,
}

impl Key {
    fn new(byte: u8) -> Key {
        let sk = SecretKey::from_slice(&[byte; 32]).unwrap();
        let pk = CompressedPublicKey(sk.public_key(&Secp256k1::new()));
        Key { sk, pk }
    }
    fn address(&self) -> Address {
        Address::p2wpkh(&self.pk, Network::Regtest)
    }
    fn script(&self) -> ScriptBuf {
        self.address().script_pubkey()
    }

    /// Spends `prev` (an output of this key worth `value`) to `to`, paying `fee_sats`.
    fn spend(&self, prev: OutPoint, value: Amount, to: ScriptBuf, fee_sats: u64) -> Transaction {
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: prev,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: value - Amount::from_sat(fee_sats),
                script_pubkey: to,
            }],
        };
        let sighash = SighashCache::new(&tx)
            .p2wpkh_signature_hash(0, &self.script(), value, EcdsaSighashType::All)
            .unwrap();
        let sig = Secp256k1::new().sign_ecdsa(&Message::from(sighash), &self.sk);
        let sig = bitcoin::ecdsa::Signature {
            signature: sig,
            sighash_type: EcdsaSighashType::All,
        };
        tx.input[0].witness = Witness::p2wpkh(&sig, &self.pk.0);
        tx
    }
}

async fn broadcast_reaches_the_mempool(source: Source) {
    let w = world(2).await;
    let node = LdkNode::start(w.config(source)).await.unwrap();
    let key = Key::new(41);
    let funding = w.chain.fund(&key.address(), 50_000).unwrap();
    w.chain.mine(1, None).unwrap();
    // `fund` pays the recipient in output 0.
    let prev = OutPoint {
        txid: funding,
        vout: 0,
    };
    let tx = key.spend(prev, Amount::from_sat(50_000), Key::new(42).script(), 1_000);
    let txid = tx.compute_txid();
    node.broadcaster().broadcast_transactions(&[&tx]);
    wait_for("the transaction in the chain's mempool", || {
        w.chain
            .with_state(|st| st.mempool.entries.contains_key(&txid))
    })
    .await;
    // Again (the chain already has it) and an invalid one (spends nothing): logged, no panic,
    // and the broadcaster keeps working for the next one.
    let bogus = Key::new(43).spend(
        OutPoint {
            txid: bitcoin::hashes::Hash::from_byte_array([7; 32]),
            vout: 0,
        },
        Amount::from_sat(10_000),
        Key::new(42).script(),
        500,
    );
    node.broadcaster().broadcast_transactions(&[&tx, &bogus]);
    let mined = w.chain.mine(1, None).unwrap()[0];
    let key2 = Key::new(42);
    let next = key2.spend(
        OutPoint { txid, vout: 0 },
        Amount::from_sat(49_000),
        key.script(),
        1_000,
    );
    node.broadcaster().broadcast_transactions(&[&next]);
    let next_id = next.compute_txid();
    wait_for("the follow-up transaction in the mempool", || {
        w.chain
            .with_state(|st| st.mempool.entries.contains_key(&next_id))
    })
    .await;
    assert!(w.chain.with_state(|st| {
        st.entry_by_hash(&mined)
            .is_some_and(|e| e.block.txdata.iter().any(|t| t.compute_txid() == txid))
    }));
    assert!(
        !w.chain
            .with_state(|st| st.mempool.entries.contains_key(&bogus.compute_txid()))
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_broadcast_reaches_the_mempool() {
    broadcast_reaches_the_mempool(Source::Rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esplora_broadcast_reaches_the_mempool() {
    broadcast_reaches_the_mempool(Source::Esplora).await;
}

async fn fee_estimates_come_from_the_source(source: Source) {
    // 7 sat/vB = 1750 sat/kw for every target.
    let w = world(7).await;
    let node = LdkNode::start(w.config(source)).await.unwrap();
    let fees = node.fee_estimator();
    for target in [
        ConfirmationTarget::MaximumFeeEstimate,
        ConfirmationTarget::UrgentOnChainSweep,
        ConfirmationTarget::NonAnchorChannelFee,
        ConfirmationTarget::AnchorChannelFee,
        ConfirmationTarget::ChannelCloseMinimum,
        ConfirmationTarget::OutputSpendingFee,
    ] {
        assert!(fees.from_source_for(target), "{target:?}");
        assert_eq!(fees.get_est_sat_per_1000_weight(target), 1750, "{target:?}");
    }
    // The lower bounds on a peer's rate leave 250 sat/kw of slack.
    assert_eq!(
        fees.get_est_sat_per_1000_weight(ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee),
        1500
    );
    node.stop().await.unwrap();

    // 1 sat/vB is 250 sat/kw: below LDK's floor, so the floor is answered.
    let w = world(1).await;
    let node = LdkNode::start(w.config(source)).await.unwrap();
    for (target, rate) in node.fee_estimator().snapshot() {
        assert_eq!(rate, FEERATE_FLOOR_SAT_PER_KW, "{target:?}");
        assert!(node.fee_estimator().from_source_for(target), "{target:?}");
    }
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_fee_estimates_come_from_the_source_above_the_floor() {
    fee_estimates_come_from_the_source(Source::Rpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esplora_fee_estimates_come_from_the_source_above_the_floor() {
    fee_estimates_come_from_the_source(Source::Esplora).await;
}

/// A source that cannot be reached: a new node does not start (it needs the tip to start
/// from), over either dialect, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_source_is_reported_not_hidden() {
    let w = world(2).await;
    let port = w.server.addr.port();
    drop(w.server);
    let dir = w.dir.path().join("node");
    let mut c = LdkConfig::new(&dir);
    c.chain_source = Some(ChainSource::BitcoindRpc {
        url: format!("http://127.0.0.1:{port}/"),
        user: "u".into(),
        password: "p".into(),
    });
    let err = LdkNode::start(c).await.unwrap_err();
    assert!(err.to_string().contains("chain source"), "{err}");

    let mut c = LdkConfig::new(&dir);
    c.chain_source = Some(ChainSource::Esplora {
        url: format!("http://127.0.0.1:{port}/esplora"),
    });
    let err = LdkNode::start(c).await.unwrap_err();
    assert!(err.to_string().contains("chain source"), "{err}");
}
