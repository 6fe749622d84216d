//! The devnet on its chain: every node follows mined blocks and reorgs, the faucet funds
//! addresses (confirmed by the auto-miner), the chain survives a restart, and payments keep
//! working at real block heights, over both chain dialects of our node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{new_invoice, sats};
use satchel_ldk::{ChainSource, Devnet, DevnetChain, DevnetOptions, LdkConfig, LdkError, LdkNode};
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
    // The channels' funding was buried before the start's tip: a shallower reorg leaves them.
    assert!(devnet.node().channels_ready());
    pay_us(&devnet, 1_000).await;

    // The faucet pays; the auto-miner confirms the payment.
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
#[ignore = "known bug: after a reorg a restart can fail with RPC -5 Block not found, because satchel-chain does not persist blocks a reorg removed while a node may have persisted one as its best block (issue 15 note)"]
async fn devnet_over_bitcoind_rpc_follows_its_chain() {
    mine_reorg_fund_and_pay(DevnetChain::BitcoindRpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known bug: after a reorg a restart can fail with RPC -5 Block not found, because satchel-chain does not persist blocks a reorg removed while a node may have persisted one as its best block (issue 15 note)"]
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

/// Every devnet channel is funded by a real transaction from its funder's wallet, confirmed
/// on the devnet chain; the wallets got their coins from the faucet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_channels_are_funded_from_the_wallets() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let ours = devnet.node();
    let channels = ours.list_channels();
    assert_eq!(channels.len(), 2);
    for c in &channels {
        let txid = c.funding_txid.expect("funding txid");
        let in_chain = devnet
            .chain()
            .with_state(|st| st.tx_index.contains_key(&txid));
        assert!(in_chain, "funding {txid} is in a block");
        assert!(c.confirmations.unwrap() >= 1);
    }
    // We funded the channel to the hub (10M sats) out of the faucet's 100M: what is left is
    // 90M less the funding fee (a few hundred sats at the devnet's fee rate).
    let wallet = ours.wallet().expect("a chain-backed node has a wallet");
    wallet.sync().await.unwrap();
    let balance = wallet.balance().await;
    let left = balance.total().unwrap().to_sat();
    assert!(left < 90_000_000, "{balance:?}");
    assert!(left > 90_000_000 - 10_000, "{balance:?}");
    // Alice funded hers: her wallet paid for it too.
    let alice_wallet = devnet.peer("alice").unwrap().wallet().unwrap().clone();
    alice_wallet.sync().await.unwrap();
    let alice_left = alice_wallet.balance().await.total().unwrap().to_sat();
    assert!(alice_left < 90_000_000 && alice_left > 90_000_000 - 10_000);
    devnet.stop().await.unwrap();
}

/// A node whose wallet cannot pay for a channel is refused with a funding error, and no
/// channel is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfunded_wallet_cannot_open_a_channel() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let (_, esplora_url) = devnet.chain_urls().unwrap();
    let mut config = LdkConfig::new(dir.path().join("poor"));
    config.alias = "poor".into();
    config.chain_source = Some(ChainSource::Esplora { url: esplora_url });
    config.chain_poll_interval = Duration::from_millis(250);
    let poor = LdkNode::start(config).await.unwrap();
    let alice = devnet.peer("alice").unwrap();
    poor.connect(alice.pubkey(), alice.listen_addr())
        .await
        .unwrap();
    let err = poor
        .open_channel(alice.pubkey(), 1_000_000, 0)
        .await
        .unwrap_err();
    assert!(matches!(err, LdkError::Funding(_)), "{err}");
    assert!(err.to_string().contains("insufficient"), "{err}");
    assert!(poor.list_channels().is_empty());
    poor.stop().await.unwrap();
    devnet.stop().await.unwrap();
}

/// A wallet that covers the channel but not its fee passes the up-front check; the funding
/// transaction cannot be built when the peer has accepted, and the channel goes away unfunded
/// on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_wallet_cannot_fund_is_closed_unfunded() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let (_, esplora_url) = devnet.chain_urls().unwrap();
    let mut config = LdkConfig::new(dir.path().join("short"));
    config.alias = "short".into();
    config.chain_source = Some(ChainSource::Esplora { url: esplora_url });
    config.chain_poll_interval = Duration::from_millis(250);
    let short = LdkNode::start(config).await.unwrap();
    let wallet = short.wallet().unwrap().clone();
    let address = wallet.new_address().await.unwrap();
    devnet.fund(&address.to_string(), 1_000_000).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        wallet.sync().await.unwrap();
        if wallet.balance().await.confirmed.to_sat() == 1_000_000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never funded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alice = devnet.peer("alice").unwrap();
    short
        .connect(alice.pubkey(), alice.listen_addr())
        .await
        .unwrap();
    // Exactly the balance: no room for the fee.
    short
        .open_channel(alice.pubkey(), 1_000_000, 0)
        .await
        .unwrap();
    let short_pk = short.pubkey();
    wait_for("the unfunded channel is gone on both sides", || {
        short.list_channels().is_empty()
            && alice
                .list_channels()
                .iter()
                .all(|c| c.counterparty != short_pk)
    })
    .await;
    // Nothing was spent.
    wallet.sync().await.unwrap();
    assert_eq!(wallet.balance().await.confirmed.to_sat(), 1_000_000);
    short.stop().await.unwrap();
    devnet.stop().await.unwrap();
}
