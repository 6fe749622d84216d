#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Stopping and starting the devnet on the same directory.

mod common;

use std::time::{Duration, Instant};

use common::*;
use satchel_domain::{FailureReason, Msat};
use satchel_ldk::{Devnet, DevnetOptions};
use satchel_lightning::{
    DevnetControl, IncomingKind, InvoiceEvents, InvoiceState, Invoices, LnError, PayOutcome,
    PayRequest, PaymentLookup, Payments,
};

fn balances(devnet: &Devnet) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for (name, node) in [
        ("satchel", devnet.node()),
        ("alice", devnet.peer("alice").unwrap()),
        ("hub", devnet.peer("hub").unwrap()),
        ("carol", devnet.peer("carol").unwrap()),
    ] {
        let chans = node.list_channels();
        out.push((
            name.to_owned(),
            chans.iter().map(|c| c.outbound_msat).sum(),
            chans.iter().map(|c| c.inbound_msat).sum(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_channels_invoices_events_and_payments_in_flight() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let node = devnet.node();
    let pubkeys: Vec<_> = devnet
        .peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.pubkey)
        .collect();

    // Settled before the restart.
    let paid = node
        .create_invoice(new_invoice(Some(sats(1_000)), "before"))
        .await
        .unwrap();
    assert!(matches!(
        devnet.outside_pay("alice", &paid, None).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
    // Created before, paid after.
    let later = node
        .create_invoice(new_invoice(Some(sats(2_000)), "after"))
        .await
        .unwrap();

    // A payment in flight across the restart: carol holds the HTLC.
    let carol = devnet.peer("carol").unwrap();
    carol.set_hold_incoming(true);
    let held_req = new_invoice(Some(sats(3_000)), "held");
    let held_preimage = held_req.preimage;
    let held = carol.create_invoice(held_req).await.unwrap();
    let mut req = pay_invoice(&held, sats(10));
    req.timeout = Duration::from_millis(500);
    assert_eq!(node.pay(req.clone()).await.unwrap(), PayOutcome::InFlight);
    assert_eq!(
        node.lookup_payment(held.payment_hash()).await.unwrap(),
        PaymentLookup::InFlight
    );
    // A second one that will fail after the restart.
    let doomed = carol
        .create_invoice(new_invoice(Some(sats(4_000)), "doomed"))
        .await
        .unwrap();
    let mut doomed_req = pay_invoice(&doomed, sats(10));
    doomed_req.timeout = Duration::from_millis(500);
    assert_eq!(
        node.pay(doomed_req.clone()).await.unwrap(),
        PayOutcome::InFlight
    );
    // Wait until carol really holds them (the HTLCs reached her).
    let t = Instant::now();
    while carol.held_payments().len() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "carol never saw the HTLC"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = balances(&devnet);
    let events_before = node.events_after(0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(events_before.len(), 1);

    let t = Instant::now();
    devnet.stop().await.unwrap();
    // A stopped node answers with transport errors (the outcome of anything is unknown).
    assert!(matches!(
        node.lookup_payment(held.payment_hash()).await,
        Err(LnError::Transport(_))
    ));
    let devnet = Devnet::start_with(
        dir.path(),
        DevnetOptions {
            incoming_policy: Some(policy(true)),
        },
    )
    .await
    .unwrap();
    eprintln!("restarted in {:?}", t.elapsed());
    let node = devnet.node();

    // Same nodes, same channels, same balances.
    let after_pubkeys: Vec<_> = devnet
        .peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.pubkey)
        .collect();
    assert_eq!(pubkeys, after_pubkeys);
    assert_eq!(node.list_channels().len(), 2);
    assert_eq!(balances(&devnet), before);

    // The old events, with their old seqs, and nothing new.
    assert_eq!(
        node.events_after(0, 100, Duration::ZERO).await.unwrap(),
        events_before
    );
    assert!(matches!(
        node.lookup_invoice(paid.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { .. })
    ));

    // The payment is still in flight; pay() does not send it again.
    assert_eq!(
        node.lookup_payment(held.payment_hash()).await.unwrap(),
        PaymentLookup::InFlight
    );
    assert_eq!(node.pay(req.clone()).await.unwrap(), PayOutcome::InFlight);
    assert_eq!(node.send_count(held.payment_hash()), 1);

    // Carol releases it: it completes after the restart.
    let carol = devnet.peer("carol").unwrap();
    let mut held_now = carol.held_payments();
    held_now.sort();
    let mut expected = vec![held.payment_hash(), doomed.payment_hash()];
    expected.sort();
    assert_eq!(held_now, expected);

    // Carol cancels one and releases it: it fails, after the restart, definitely.
    carol.cancel_invoice(doomed.payment_hash()).await.unwrap();
    assert!(carol.release_held(doomed.payment_hash()).await.unwrap());
    let mut wait = doomed_req.clone();
    wait.timeout = Duration::from_secs(10);
    assert_eq!(
        node.pay(wait.clone()).await.unwrap(),
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
    assert_eq!(
        node.lookup_payment(doomed.payment_hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::IncorrectPaymentDetails)
    );
    assert_eq!(node.send_count(doomed.payment_hash()), 1);
    assert!(carol.release_held(held.payment_hash()).await.unwrap());
    let mut wait = req.clone();
    wait.timeout = Duration::from_secs(10);
    let expected_fee = msat(1000 + 3_000_000 / 1000);
    assert_eq!(
        node.pay(wait).await.unwrap(),
        PayOutcome::Succeeded {
            preimage: held_preimage,
            fee: expected_fee
        }
    );
    assert_eq!(
        node.lookup_payment(held.payment_hash()).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage: held_preimage,
            fee: expected_fee
        }
    );
    assert_eq!(node.send_count(held.payment_hash()), 1);

    // The invoice created before the restart can be paid now, and is credited once.
    assert!(matches!(
        devnet.outside_pay("alice", &later, None).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
    let events = node
        .events_after(1, 100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 2);
    assert!(matches!(
        &events[0].kind,
        IncomingKind::InvoiceSettled { payment_hash, amount_received, .. }
            if *payment_hash == later.payment_hash() && *amount_received == sats(2_000)
    ));
    // Paying it again from another node is refused, and books nothing.
    let hub_pays = devnet.outside_pay("hub", &later, None).await.unwrap();
    assert_eq!(
        hub_pays,
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
    assert_eq!(node.events_len(), 2);

    // Balances moved by exactly what happened after the restart.
    let now = balances(&devnet);
    let ours_before = before[0].1;
    let ours_now = now[0].1;
    assert_eq!(
        ours_now,
        ours_before
            + 2_000_000 // received from alice
            + 4_000_000 + 1000 + 4000 // the failed payment's HTLC (amount + hub fee) came back
    );
    devnet.stop().await.unwrap();

    // A third start on the same directory still works.
    let devnet = Devnet::start(dir.path()).await.unwrap();
    assert_eq!(devnet.node().events_len(), 2);
    let inv = devnet
        .outside_invoice("carol", Some(Msat::from_sats(10).unwrap()), "third")
        .await
        .unwrap();
    let out = devnet
        .node()
        .pay(PayRequest {
            timeout: Duration::from_secs(10),
            ..pay_invoice(&inv, sats(10))
        })
        .await
        .unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_invoices_stay_cancelled_after_a_restart() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Devnet::start(dir.path()).await.unwrap();
    let node = devnet.node();
    let mut cancelled = Vec::new();
    for memo in ["one", "two"] {
        cancelled.push(
            node.create_invoice(new_invoice(Some(sats(100)), memo))
                .await
                .unwrap(),
        );
    }
    let open = node
        .create_invoice(new_invoice(Some(sats(100)), "open"))
        .await
        .unwrap();
    // One batch, written at once (its flush to disk is deferred; stop makes it durable, which
    // only a power cut could tell apart from the page cache).
    let hashes: Vec<_> = cancelled.iter().map(|i| i.payment_hash()).collect();
    node.cancel_invoices(&hashes).await.unwrap();
    devnet.stop().await.unwrap();
    drop(devnet);

    let devnet = Devnet::start(dir.path()).await.unwrap();
    let node = devnet.node();
    for inv in &cancelled {
        assert_eq!(
            node.lookup_invoice(inv.payment_hash()).await.unwrap(),
            Some(InvoiceState::Canceled)
        );
        assert_eq!(
            devnet.outside_pay("alice", inv, None).await.unwrap(),
            PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
        );
    }
    assert_eq!(
        node.lookup_invoice(open.payment_hash()).await.unwrap(),
        Some(InvoiceState::Open)
    );
    devnet.stop().await.unwrap();
}
