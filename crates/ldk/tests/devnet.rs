#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Payments on a fresh devnet: each test starts its own in a temporary directory.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use satchel_domain::{CustomRecords, FailureReason, Msat, NodePubkey, Preimage};
use satchel_ldk::Devnet;
use satchel_lightning::{
    DevnetControl, IncomingKind, InvoiceEvents, InvoiceState, Invoices, PayOutcome, PayRequest,
    PayTarget, PaymentLookup, Payments, Routes,
};

async fn devnet() -> (tempfile::TempDir, Arc<Devnet>) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let devnet = Arc::new(Devnet::start(dir.path()).await.unwrap());
    eprintln!("devnet started in {:?}", t0.elapsed());
    (dir, devnet)
}

/// Hub fee for forwarding `amount_msat`: 1000 msat + 1000 ppm.
fn hub_fee(amount_msat: u64) -> Msat {
    msat(1000 + amount_msat * 1000 / 1_000_000)
}

fn keysend(dest: NodePubkey, amount: Msat, records: CustomRecords, fee_limit: Msat) -> PayRequest {
    PayRequest {
        target: PayTarget::Keysend {
            dest,
            amount,
            preimage: Preimage::random(),
            custom_records: records,
        },
        fee_limit,
        timeout: Duration::from_secs(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_pays_our_invoice() {
    let (_dir, devnet) = devnet().await;
    let node = devnet.node();
    let inv = node
        .create_invoice(new_invoice(Some(sats(1000)), "coffee"))
        .await
        .unwrap();
    assert!(inv.as_str().starts_with("lnbcrt"));
    assert_eq!(inv.payee(), node.pubkey());
    // Route hints for our private channels, so that outside nodes can find us.
    assert!(!inv.inner().route_hints().is_empty());
    let t1 = Instant::now();
    let out = devnet.outside_pay("alice", &inv, None).await.unwrap();
    eprintln!("paid in {:?}", t1.elapsed());
    assert!(matches!(out, PayOutcome::Succeeded { fee, .. } if fee == Msat::ZERO));
    let events = node
        .events_after(0, 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 1);
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            ..
        } => {
            assert_eq!(*payment_hash, inv.payment_hash());
            assert_eq!(*amount_received, sats(1000));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        node.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { amount_received, .. }) if amount_received == sats(1000)
    ));
    // Replays give the same events.
    assert_eq!(
        node.events_after(0, 10, Duration::ZERO).await.unwrap(),
        events
    );
    assert!(
        node.events_after(1, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    // A second invoice for the same preimage is refused (the first one stays valid).
    let req = new_invoice(Some(sats(5)), "same");
    let a = node.create_invoice(req.clone()).await.unwrap();
    assert!(matches!(
        node.create_invoice(req).await,
        Err(satchel_lightning::LnError::Rejected(_))
    ));
    assert_eq!(
        node.lookup_invoice(a.payment_hash()).await.unwrap(),
        Some(InvoiceState::Open)
    );
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_pay_carol_via_hub_once() {
    let (_dir, devnet) = devnet().await;
    let node = devnet.node();
    let carol = devnet.peer("carol").unwrap();
    let req = new_invoice(Some(sats(10_000)), "from carol");
    let carol_preimage = req.preimage;
    let inv = carol.create_invoice(req).await.unwrap();
    // Carol's invoice tells outside payers how to reach her through the hub.
    let hints = inv.inner().route_hints();
    assert_eq!(hints.len(), 1);
    assert_eq!(
        hints[0].0[0].src_node_id.serialize(),
        devnet.peer("hub").unwrap().pubkey().0
    );

    let expected_fee = hub_fee(10_000_000);
    let t = Instant::now();
    let out = node.pay(pay_invoice(&inv, sats(100))).await.unwrap();
    eprintln!("paid carol in {:?}: {out:?}", t.elapsed());
    assert_eq!(
        out,
        PayOutcome::Succeeded {
            preimage: carol_preimage,
            fee: expected_fee
        }
    );
    assert_eq!(
        node.lookup_payment(inv.payment_hash()).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage: carol_preimage,
            fee: expected_fee
        }
    );
    // Idempotent: a second pay reports the first one and sends nothing.
    assert_eq!(node.pay(pay_invoice(&inv, sats(100))).await.unwrap(), out);
    assert_eq!(node.send_count(inv.payment_hash()), 1);
    assert!(matches!(
        carol.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { amount_received, .. }) if amount_received == sats(10_000)
    ));
    assert_eq!(carol.events_len(), 1);

    // The same through the DevnetControl: an outside invoice.
    let inv = devnet
        .outside_invoice("carol", Some(sats(2_000)), "outside")
        .await
        .unwrap();
    let out = node.pay(pay_invoice(&inv, sats(100))).await.unwrap();
    assert!(
        matches!(out, PayOutcome::Succeeded { preimage, fee } if preimage.hash() == inv.payment_hash() && fee == hub_fee(2_000_000))
    );
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysend_to_carol_with_odd_and_even_records() {
    let (_dir, devnet) = devnet().await;
    let node = devnet.node();
    let carol = devnet.peer("carol").unwrap();
    let mut records = CustomRecords::default();
    records.0.insert(7_629_169, br#"{"podcast":"x"}"#.to_vec());
    records.0.insert(34_349_334, b"hello carol".to_vec());
    let req = keysend(carol.pubkey(), sats(100), records.clone(), sats(10));
    let hash = req.target.payment_hash();
    let out = node.pay(req).await.unwrap();
    assert!(
        matches!(out, PayOutcome::Succeeded { fee, .. } if fee == hub_fee(100_000)),
        "{out:?}"
    );
    let events = carol
        .events_after(0, 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    match &events[0].kind {
        IncomingKind::KeysendReceived {
            payment_hash,
            amount_received,
            custom_records,
            preimage,
            ..
        } => {
            assert_eq!(*payment_hash, hash);
            assert_eq!(preimage.hash(), hash);
            assert_eq!(*amount_received, sats(100));
            assert_eq!(*custom_records, records);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Our own log has nothing: we sent.
    assert!(
        node.events_after(0, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    // Routes to carol go through the hub.
    let routes = node
        .query_routes(carol.pubkey(), sats(1_000))
        .await
        .unwrap();
    assert_eq!(routes.len(), 1);
    let r = &routes[0];
    assert_eq!(r.hops.len(), 2);
    assert_eq!(r.hops[0].pub_key, devnet.peer("hub").unwrap().pubkey());
    assert_eq!(r.hops[1].pub_key, carol.pubkey());
    assert_eq!(r.total_fees, hub_fee(1_000_000));
    assert_eq!(r.total_amt, msat(1_000_000 + hub_fee(1_000_000).as_msat()));
    assert_eq!(r.hops[0].fee, hub_fee(1_000_000));
    assert_eq!(r.hops[0].amt_to_forward, sats(1_000));
    assert_eq!(r.hops[1].amt_to_forward, sats(1_000));
    assert_eq!(r.hops[1].fee, Msat::ZERO);
    assert!(r.total_time_lock > r.hops[1].expiry);
    assert_eq!(r.hops[0].chan_capacity_sats, 10_000_000);
    let stranger = NodePubkey::from_hex(&format!("02{}", "ab".repeat(32))).unwrap();
    assert!(
        node.query_routes(stranger, sats(1))
            .await
            .unwrap()
            .is_empty()
    );
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_keysend_follows_policy() {
    let (_dir, devnet) = devnet().await;
    let node = devnet.node();
    let mut records = CustomRecords::default();
    records.0.insert(696_969, b"wal_x".to_vec());

    // No policy yet: refused.
    let (_, out) = devnet
        .outside_keysend("alice", node.pubkey(), sats(21), records.clone())
        .await
        .unwrap();
    assert_eq!(
        out,
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );

    node.set_incoming_policy(policy(false));
    let (_, out) = devnet
        .outside_keysend("alice", node.pubkey(), sats(21), records.clone())
        .await
        .unwrap();
    assert_eq!(
        out,
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
    assert!(
        node.events_after(0, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    node.set_incoming_policy(policy(true));
    let (hash, out) = devnet
        .outside_keysend("alice", node.pubkey(), sats(21), records.clone())
        .await
        .unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let events = node
        .events_after(0, 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    match &events[0].kind {
        IncomingKind::KeysendReceived {
            payment_hash,
            preimage,
            amount_received,
            custom_records,
            ..
        } => {
            assert_eq!(*payment_hash, hash);
            assert_eq!(preimage.hash(), hash);
            assert_eq!(*amount_received, sats(21));
            assert_eq!(*custom_records, records);
        }
        other => panic!("unexpected {other:?}"),
    }
    // The policy sees the records: without the routing TLV it refuses.
    let mut other = CustomRecords::default();
    other.0.insert(7_629_169, b"x".to_vec());
    let (_, out) = devnet
        .outside_keysend("alice", node.pubkey(), sats(21), other)
        .await
        .unwrap();
    assert_eq!(
        out,
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
    assert_eq!(node.events_len(), 1);
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_definite_and_send_nothing() {
    let (_dir, devnet) = devnet().await;
    let node = devnet.node();
    let carol = devnet.peer("carol").unwrap();
    let before = node.list_channels();

    // Fee limit below the hub's fee: no route within the limit.
    let inv = devnet
        .outside_invoice("carol", Some(sats(1_000)), "too cheap")
        .await
        .unwrap();
    let out = node.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap();
    assert_eq!(out, PayOutcome::Failed(FailureReason::NoRoute));
    assert_eq!(
        node.lookup_payment(inv.payment_hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );
    // Same for a keysend one msat short of the hub fee.
    let out = node
        .pay(keysend(
            carol.pubkey(),
            sats(1_000),
            CustomRecords::default(),
            msat(hub_fee(1_000_000).as_msat() - 1),
        ))
        .await
        .unwrap();
    assert_eq!(out, PayOutcome::Failed(FailureReason::NoRoute));

    // After a definite failure a new attempt is allowed (and succeeds with enough fee).
    let out = node.pay(pay_invoice(&inv, sats(10))).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    assert_eq!(node.send_count(inv.payment_hash()), 2);

    // More than our channels can send.
    let hub = devnet.peer("hub").unwrap();
    let out = node
        .pay(keysend(
            hub.pubkey(),
            sats(20_000_000),
            CustomRecords::default(),
            sats(1_000),
        ))
        .await
        .unwrap();
    assert_eq!(out, PayOutcome::Failed(FailureReason::InsufficientBalance));
    let big = carol
        .create_invoice(new_invoice(Some(sats(20_000_000)), "big"))
        .await
        .unwrap();
    let out = node.pay(pay_invoice(&big, sats(100_000))).await.unwrap();
    assert_eq!(out, PayOutcome::Failed(FailureReason::InsufficientBalance));

    // Nothing left our channels except the one successful payment.
    let after = node.list_channels();
    let spent: u64 = before.iter().map(|c| c.outbound_msat).sum::<u64>()
        - after.iter().map(|c| c.outbound_msat).sum::<u64>();
    assert_eq!(spent, 1_000_000 + hub_fee(1_000_000).as_msat());

    // Unknown hashes.
    let unknown = Preimage::random().hash();
    assert_eq!(
        node.lookup_payment(unknown).await.unwrap(),
        PaymentLookup::NotFound
    );
    assert_eq!(node.lookup_invoice(unknown).await.unwrap(), None);
    node.cancel_invoice(unknown).await.unwrap();
    devnet.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_invoice_is_refused() {
    let (_dir, devnet) = devnet().await;
    let node = devnet.node();
    let inv = node
        .create_invoice(new_invoice(Some(sats(500)), "cancel me"))
        .await
        .unwrap();
    node.cancel_invoice(inv.payment_hash()).await.unwrap();
    assert_eq!(
        node.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    let out = devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert_eq!(
        out,
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
    assert!(
        node.events_after(0, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        node.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Canceled)
    );

    // Underpaying an amountless-free invoice is refused by LDK before it reaches us; an
    // expired invoice is refused by us.
    let mut req = new_invoice(Some(sats(500)), "expired");
    req.expiry_secs = 1;
    let inv = node.create_invoice(req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        node.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    let out = devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Failed(_)), "{out:?}");
    assert!(
        node.events_after(0, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    // The devnet's peers as `satchel devnet info` shows them.
    let peers = devnet.peers().await.unwrap();
    let names: Vec<_> = peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["alice", "hub", "carol"]);
    assert!(
        peers
            .iter()
            .all(|p| p.outbound_msat > 0 && p.inbound_msat > 0)
    );
    assert_eq!(devnet.kind(), "ldk-devnet");
    devnet.stop().await.unwrap();
}
