//! The devnet on its chain: every node follows mined blocks and reorgs, the faucet funds
//! addresses (confirmed by the auto-miner), the chain survives a restart, and payments keep
//! working at real block heights, over both chain dialects of our node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{new_invoice, sats};
use satchel_ldk::{Devnet, DevnetChain, DevnetOptions};
use satchel_lightning::{DevnetControl, Invoices, NodeInfo, PayOutcome};

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn pay_us(devnet: &Devnet, amount_sats: u64) {
    let inv = devnet
        .node()
        .create_invoice(new_invoice(Some(sats(amount_sats)), "on a chain"))
        .await
        .unwrap();
    let outcome = devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(
        matches!(outcome, PayOutcome::Succeeded { .. }),
        "{outcome:?}"
    );
}

async fn mine_reorg_fund_and_pay(dialect: DevnetChain) {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Arc::new(
        Devnet::start_on(dir.path(), DevnetOptions::default(), dialect)
            .await
            .unwrap(),
    );
    let start = devnet.chain_tip();
    assert!(devnet.wait_nodes_on_tip().await);

    let mined = devnet.mine(3).await.unwrap();
    assert_eq!(mined.len(), 3);
    let tip = devnet.chain_tip();
    assert_eq!(tip, (start.0 + 3, mined[2]));
    assert_eq!(devnet.node().best_block(), tip);
    for name in ["alice", "hub", "carol"] {
        assert_eq!(devnet.peer(name).unwrap().best_block(), tip, "{name}");
    }
    let status = devnet.node().node_status().await.unwrap();
    assert_eq!(status.block_height, Some(tip.0));
    wait_for("our node reports synced", || {
        devnet.node().chain_synced() == Some(true)
    })
    .await;

    // Payments use the real height for their CLTV expiries.
    pay_us(&devnet, 1_000).await;

    let replaced = devnet.reorg(2).await.unwrap();
    let tip = devnet.chain_tip();
    assert_eq!(tip, (start.0 + 4, replaced[2]));
    assert_eq!(devnet.node().best_block(), tip);
    // The 0-conf channels (synthetic funding, never confirmed) are not touched by a reorg.
    assert!(devnet.node().channels_ready());
    pay_us(&devnet, 1_000).await;

    // A young chain: fund mines the faucet's coins to maturity first; the auto-miner then
    // confirms the payment.
    let address = devnet.chain().faucet_address().to_string();
    let txid = devnet.fund(&address, 25_000).await.unwrap();
    wait_for("the funding confirmed by the auto-miner", || {
        devnet
            .chain()
            .with_state(|st| st.tx_index.contains_key(&txid))
    })
    .await;
    assert!(devnet.wait_nodes_on_tip().await);
    assert!(devnet.chain_tip().0 > 101);
    let tip = devnet.chain_tip();
    assert_eq!(
        DevnetControl::chain_tip(&*devnet)
            .await
            .unwrap()
            .unwrap()
            .height,
        tip.0
    );

    // Refusals.
    assert!(devnet.fund("bc1qnotregtest", 1_000).await.is_err());
    assert!(devnet.mine(0).await.is_err());
    assert!(
        devnet
            .mine(satchel_ldk::MAX_BLOCKS_PER_CALL + 1)
            .await
            .is_err()
    );

    // The chain is persisted: a restart finds it, the nodes catch up with blocks mined in
    // between, and channels still carry payments.
    devnet.stop().await.unwrap();
    assert!(devnet.mine(1).await.is_err(), "stopped");
    devnet.chain().mine(4, None).unwrap();
    let tip = devnet.chain_tip();
    drop(devnet);
    let devnet = Devnet::start_on(dir.path(), DevnetOptions::default(), dialect)
        .await
        .unwrap();
    assert_eq!(devnet.chain_tip(), tip);
    assert!(devnet.wait_nodes_on_tip().await);
    pay_us(&devnet, 2_000).await;
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_over_bitcoind_rpc_follows_its_chain() {
    mine_reorg_fund_and_pay(DevnetChain::BitcoindRpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_with_our_node_on_esplora_follows_its_chain() {
    mine_reorg_fund_and_pay(DevnetChain::Esplora).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_devnet_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let err = Devnet::start(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    devnet.stop().await.unwrap();
}
