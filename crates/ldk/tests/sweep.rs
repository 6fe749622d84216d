//! What a closed channel leaves us comes back into the on-chain wallet through LDK's
//! `OutputSweeper`: after a cooperative close, after the peer force-closes, and exactly once
//! across a restart between the force close and the sweep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use satchel_ldk::{Devnet, LdkNode};

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wallet_sats(node: &LdkNode) -> u64 {
    let w = node.wallet().unwrap();
    w.sync().await.unwrap();
    w.balance().await.total().unwrap().to_sat()
}

/// Our channel with `peer`: (channel id, our balance in sats).
fn channel_with(devnet: &Devnet, peer: &str) -> (String, u64) {
    let pk = devnet.peer(peer).unwrap().pubkey();
    let c = devnet
        .node()
        .list_channels()
        .into_iter()
        .find(|c| c.counterparty == pk)
        .unwrap();
    (c.channel_id, c.outbound_msat / 1000)
}

/// Mines one block at a time until `f` holds (the sweeper waits for confirmations).
async fn mine_until(devnet: &Devnet, what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..40 {
        if f().await {
            return;
        }
        devnet.mine(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(f().await, "never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_close_comes_back_into_the_wallet() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let ours = devnet.node();
    let before = wallet_sats(&ours).await;
    // Our balance in the channel to the hub (we funded it and pushed 1M sats away).
    let (id, our_sats) = channel_with(&devnet, "hub");
    assert!(our_sats > 8_000_000, "{our_sats}");
    ours.close_channel(&id, false).unwrap();
    wait_until("the channel is closed", async || {
        ours.list_channels().iter().all(|c| c.channel_id != id)
    })
    .await;
    mine_until(&devnet, "the swept balance in our wallet", async || {
        wallet_sats(&ours).await > before + our_sats - 20_000
    })
    .await;
    let after = wallet_sats(&ours).await;
    // Our whole side (10M funded, 1M pushed; `outbound_msat` leaves out the channel reserve)
    // less the closing and sweeping fees.
    assert!(after - before <= 9_000_000, "{before} {after} {our_sats}");
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_close_by_the_peer_is_swept_exactly_once_across_a_restart() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let ours = devnet.node();
    let before = wallet_sats(&ours).await;
    let txs_before = ours.wallet().unwrap().transactions().await.len();
    // Alice pushed 5M sats to us when she opened the channel.
    let (id, our_sats) = channel_with(&devnet, "alice");
    assert!(our_sats >= 4_900_000, "{our_sats}");
    devnet
        .peer("alice")
        .unwrap()
        .close_channel(&id, true)
        .unwrap();
    wait_until("we see the channel closed", async || {
        ours.list_channels().iter().all(|c| c.channel_id != id)
    })
    .await;
    // The commitment transaction confirms and gets deep enough (6 blocks) for LDK to hand our
    // output to the sweeper; the devnet stops right then, before the sweep confirms (the
    // sweeper's state is persisted with the output, possibly with its broadcast sweep).
    devnet.mine(6).await.unwrap();
    devnet.stop().await.unwrap();
    drop(devnet);
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let ours = devnet.node();
    mine_until(&devnet, "our balance swept into the wallet", async || {
        wallet_sats(&ours).await > before + our_sats - 10_000
    })
    .await;
    // More blocks: nothing is swept twice.
    devnet.mine(10).await.unwrap();
    let after = wallet_sats(&ours).await;
    // At most the 5M sats pushed to us (the sweep paid its fee out of it).
    assert!(after - before <= 5_000_000, "{before} {after} {our_sats}");
    let sweeps = ours.wallet().unwrap().transactions().await.len() - txs_before;
    assert_eq!(sweeps, 1, "one sweep transaction");
    devnet.stop().await.unwrap();
}
