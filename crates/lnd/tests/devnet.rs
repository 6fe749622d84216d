#![allow(clippy::unwrap_used, clippy::expect_used)]

//! LndRest against the fake LND, backed by the LDK devnet: real payments through the adapter.
//! Each test starts its own devnet in a temporary directory.

mod common;

use std::time::{Duration, Instant};

use common::*;
use satchel_domain::{FailureReason, KEYSEND_PREIMAGE_TLV, Msat, NodePubkey, Preimage};
use satchel_fakes::lnd::Fault;
use satchel_lightning::{
    ChannelInfo, ChannelState, DevnetControl, IncomingKind, InvoiceEvents, InvoiceState, Invoices,
    LnError, NodeInfo, PayOutcome, PayRequest, PayTarget, PaymentLookup, Payments, Routes,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_and_the_incoming_stream() {
    let env = Env::start().await;
    let lnd = &env.lnd;
    let node = env.devnet.node();
    let t = Instant::now();

    let info = lnd.node_info().await.unwrap();
    assert_eq!(info.pubkey, node.pubkey());

    // Create, look up, create twice with one preimage.
    let req = new_invoice(Some(sats(1000)), "coffee");
    let inv1 = lnd.create_invoice(req.clone()).await.unwrap();
    assert!(inv1.as_str().starts_with("lnbcrt"));
    assert_eq!(inv1.payee(), node.pubkey());
    assert_eq!(inv1.payment_hash(), req.preimage.hash());
    assert_eq!(inv1.description().as_deref(), Some("coffee"));
    assert_eq!(
        lnd.lookup_invoice(inv1.payment_hash()).await.unwrap(),
        Some(InvoiceState::Open)
    );
    let again = lnd.create_invoice(req).await.unwrap();
    assert_eq!(again.as_str(), inv1.as_str());
    let mut dh = new_invoice(Some(sats(5)), "unused");
    dh.description_hash = Some([7u8; 32]);
    let with_hash = lnd.create_invoice(dh).await.unwrap();
    assert_eq!(with_hash.description_hash(), Some([7u8; 32]));
    assert_eq!(with_hash.description(), None);

    // Cancel: twice, unknown, then unpayable.
    let cancel_me = lnd
        .create_invoice(new_invoice(Some(sats(500)), "cancel me"))
        .await
        .unwrap();
    lnd.cancel_invoice(cancel_me.payment_hash()).await.unwrap();
    lnd.cancel_invoice(cancel_me.payment_hash()).await.unwrap();
    lnd.cancel_invoice(Preimage::random().hash()).await.unwrap();
    assert_eq!(
        lnd.lookup_invoice(cancel_me.payment_hash()).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    let out = env
        .devnet
        .outside_pay("alice", &cancel_me, None)
        .await
        .unwrap();
    assert!(matches!(out, PayOutcome::Failed(_)), "{out:?}");
    assert_eq!(
        lnd.lookup_invoice(Preimage::random().hash()).await.unwrap(),
        None
    );

    // Alice pays: one settled event with seq = settle_index 1.
    let out = env.devnet.outside_pay("alice", &inv1, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let events = wait_events(lnd, 0, 1, Duration::from_secs(10)).await;
    assert_eq!(events[0].seq, 1);
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            settled_at_secs,
        } => {
            assert_eq!(*payment_hash, inv1.payment_hash());
            assert_eq!(*amount_received, sats(1000));
            assert!(*settled_at_secs > 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        lnd.lookup_invoice(inv1.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { amount_received, .. }) if amount_received == sats(1000)
    ));
    // Cancelling a settled invoice is not an error and changes nothing.
    lnd.cancel_invoice(inv1.payment_hash()).await.unwrap();
    assert!(matches!(
        lnd.lookup_invoice(inv1.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { .. })
    ));
    // A second payment of a settled invoice is refused and books nothing.
    let twice = env.devnet.outside_pay("hub", &inv1, None).await;
    assert!(
        !matches!(twice, Ok(PayOutcome::Succeeded { .. })),
        "{twice:?}"
    );

    let inv2 = lnd
        .create_invoice(new_invoice(Some(sats(2000)), "second"))
        .await
        .unwrap();
    env.devnet.outside_pay("alice", &inv2, None).await.unwrap();
    let events2 = wait_events(lnd, 1, 1, Duration::from_secs(10)).await;
    assert_eq!(events2[0].seq, 2);
    let all = vec![events[0].clone(), events2[0].clone()];

    // Replays from 0 and from an older cursor give the same events.
    assert_eq!(lnd.events_after(0, 10, Duration::ZERO).await.unwrap(), all);
    assert_eq!(
        lnd.events_after(0, 1, Duration::ZERO).await.unwrap(),
        all[..1]
    );
    assert_eq!(
        lnd.events_after(1, 10, Duration::ZERO).await.unwrap(),
        all[1..]
    );
    assert!(
        lnd.events_after(0, 0, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    let w = Instant::now();
    assert!(
        lnd.events_after(2, 10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(w.elapsed() >= Duration::from_millis(250));

    // Satchel restarts with its persisted cursor 1: a new adapter resumes from LND's replay
    // (no scan), sees event 2 once, then new events, nothing twice.
    let scans = env.fake.requests("GET /v1/invoices?");
    let subs = env
        .fake
        .requests("GET /v1/invoices/subscribe?settle_index=1");
    let lnd2 = env.client();
    assert_eq!(
        lnd2.events_after(1, 10, Duration::ZERO).await.unwrap(),
        all[1..]
    );
    assert_eq!(
        env.fake.requests("GET /v1/invoices?"),
        scans,
        "resumed without a scan"
    );
    assert_eq!(
        env.fake
            .requests("GET /v1/invoices/subscribe?settle_index=1"),
        subs + 1
    );
    assert!(
        lnd2.events_after(2, 10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    let inv3 = lnd2
        .create_invoice(new_invoice(Some(sats(3000)), "third"))
        .await
        .unwrap();
    env.devnet.outside_pay("alice", &inv3, None).await.unwrap();
    let events3 = wait_events(&lnd2, 2, 1, Duration::from_secs(10)).await;
    assert_eq!(events3[0].seq, 3);
    assert!(matches!(
        &events3[0].kind,
        IncomingKind::InvoiceSettled { payment_hash, .. } if *payment_hash == inv3.payment_hash()
    ));
    // The first adapter's live subscription saw it too.
    assert_eq!(
        lnd.events_after(2, 10, Duration::from_secs(5))
            .await
            .unwrap(),
        events3
    );

    // Alice keysends to us with custom records.
    let recs = records(&[(696_969, "wal_x"), (7_629_169, "{\"podcast\":\"x\"}")]);
    let (hash, out) = env
        .devnet
        .outside_keysend("alice", node.pubkey(), sats(21), recs.clone())
        .await
        .unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let ks = wait_events(&lnd2, 3, 1, Duration::from_secs(10)).await;
    assert_eq!(ks[0].seq, 4);
    match &ks[0].kind {
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
            assert!(!custom_records.0.contains_key(&KEYSEND_PREIMAGE_TLV));
            assert_eq!(*custom_records, recs);
        }
        other => panic!("unexpected {other:?}"),
    }

    // A third adapter replaying from 0 (full scan) sees all four, in order.
    let lnd3 = env.client();
    let mut want = all.clone();
    want.extend(events3.clone());
    want.extend(ks.clone());
    assert_eq!(
        lnd3.events_after(0, 100, Duration::ZERO).await.unwrap(),
        want
    );
    // The resumed adapter (buffer from cursor 1) asked to replay from 0 starts over from 0.
    assert_eq!(
        lnd2.events_after(0, 100, Duration::ZERO).await.unwrap(),
        want
    );
    assert_eq!(
        lnd2.events_after(3, 100, Duration::ZERO).await.unwrap(),
        want[3..]
    );
    drop((lnd2, lnd3));
    eprintln!("scenario took {:?}", t.elapsed());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_through_lnd() {
    let env = Env::start().await;
    let lnd = &env.lnd;
    let node = env.devnet.node();
    let carol = env.devnet.peer("carol").unwrap();
    let hub = env.devnet.peer("hub").unwrap();
    let t = Instant::now();

    // Carol via the hub: the hub's fee, carol's preimage.
    let creq = new_invoice(Some(sats(10_000)), "from carol");
    let carol_preimage = creq.preimage;
    let inv = carol.create_invoice(creq).await.unwrap();
    let out = lnd.pay(pay_invoice(&inv, sats(100))).await.unwrap();
    assert_eq!(
        out,
        PayOutcome::Succeeded {
            preimage: carol_preimage,
            fee: hub_fee(10_000_000)
        }
    );
    assert_eq!(
        lnd.lookup_payment(inv.payment_hash()).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage: carol_preimage,
            fee: hub_fee(10_000_000)
        }
    );
    // Twice (and with another fee limit): LND refuses the second send; the adapter reports the
    // first payment. Nothing is sent again.
    assert_eq!(lnd.pay(pay_invoice(&inv, sats(100))).await.unwrap(), out);
    assert_eq!(lnd.pay(pay_invoice(&inv, sats(1))).await.unwrap(), out);
    assert_eq!(env.fake.send_count(inv.payment_hash()), 1);
    assert_eq!(node.send_count(inv.payment_hash()), 1);

    // Alice directly: no fee.
    let ainv = env
        .devnet
        .outside_invoice("alice", Some(sats(2000)), "to alice")
        .await
        .unwrap();
    let out = lnd.pay(pay_invoice(&ainv, sats(10))).await.unwrap();
    assert!(
        matches!(out, PayOutcome::Succeeded { fee, .. } if fee == Msat::ZERO),
        "{out:?}"
    );

    // Keysend to carol with odd and even records: she receives exactly them.
    let recs = records(&[
        (65_537, "odd"),
        (65_538, "even"),
        (7_629_169, "{\"podcast\":\"x\"}"),
        (34_349_334, "hello carol"),
    ]);
    let req = keysend(carol.pubkey(), sats(100), recs.clone(), sats(10));
    let PayTarget::Keysend { preimage, .. } = req.target.clone() else {
        unreachable!()
    };
    let out = lnd.pay(req).await.unwrap();
    assert_eq!(
        out,
        PayOutcome::Succeeded {
            preimage,
            fee: hub_fee(100_000)
        }
    );
    let carol_events = wait_events(&*carol, 1, 1, Duration::from_secs(10)).await;
    match &carol_events[0].kind {
        IncomingKind::KeysendReceived {
            payment_hash,
            preimage: theirs,
            amount_received,
            custom_records,
            ..
        } => {
            assert_eq!(*payment_hash, preimage.hash());
            assert_eq!(*theirs, preimage);
            assert_eq!(*amount_received, sats(100));
            assert_eq!(*custom_records, recs);
        }
        other => panic!("unexpected {other:?}"),
    }

    // Invalid record types: rejected before LND is asked.
    for bad in [1u64, 65_535, KEYSEND_PREIMAGE_TLV] {
        let req = keysend(carol.pubkey(), sats(1), records(&[(bad, "x")]), sats(10));
        let hash = req.target.payment_hash();
        assert!(matches!(lnd.pay(req).await, Err(LnError::Rejected(_))));
        assert_eq!(
            lnd.lookup_payment(hash).await.unwrap(),
            PaymentLookup::NotFound
        );
    }

    // Fee limit too low: definite NoRoute, then a retry with enough fee succeeds.
    let cheap = carol
        .create_invoice(new_invoice(Some(sats(1000)), "too cheap"))
        .await
        .unwrap();
    let out = lnd.pay(pay_invoice(&cheap, Msat::ZERO)).await.unwrap();
    assert_eq!(out, PayOutcome::Failed(FailureReason::NoRoute));
    assert_eq!(
        lnd.lookup_payment(cheap.payment_hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );
    let req = keysend(
        carol.pubkey(),
        sats(1000),
        Default::default(),
        msat(hub_fee(1_000_000).as_msat() - 1),
    );
    assert_eq!(
        lnd.pay(req).await.unwrap(),
        PayOutcome::Failed(FailureReason::NoRoute)
    );
    let out = lnd.pay(pay_invoice(&cheap, sats(10))).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    assert_eq!(env.fake.send_count(cheap.payment_hash()), 2);

    // More than our channels hold.
    let req = keysend(
        hub.pubkey(),
        sats(20_000_000),
        Default::default(),
        sats(1000),
    );
    let hash = req.target.payment_hash();
    assert_eq!(
        lnd.pay(req).await.unwrap(),
        PayOutcome::Failed(FailureReason::InsufficientBalance)
    );
    assert_eq!(
        lnd.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Failed(FailureReason::InsufficientBalance)
    );

    // An invoice for another network is rejected locally.
    assert_eq!(
        lnd.lookup_payment(Preimage::random().hash()).await.unwrap(),
        PaymentLookup::NotFound
    );

    // Routes: carol through the hub; nobody to a stranger.
    let routes = lnd.query_routes(carol.pubkey(), sats(1000)).await.unwrap();
    assert_eq!(routes.len(), 1);
    let r = &routes[0];
    assert_eq!(r.hops.len(), 2);
    assert_eq!(r.hops[0].pub_key, hub.pubkey());
    assert_eq!(r.hops[1].pub_key, carol.pubkey());
    assert_eq!(r.total_fees, hub_fee(1_000_000));
    assert_eq!(r.total_amt, msat(1_000_000 + hub_fee(1_000_000).as_msat()));
    assert_eq!(r.hops[1].amt_to_forward, sats(1000));
    assert_eq!(r.hops[0].chan_capacity_sats, 10_000_000);
    // Sub-satoshi amounts go as amt_msat.
    let odd = lnd
        .query_routes(carol.pubkey(), msat(1_000_500))
        .await
        .unwrap();
    assert_eq!(odd[0].hops[1].amt_to_forward, msat(1_000_500));
    let stranger = NodePubkey::from_hex(&format!("02{}", "ab".repeat(32))).unwrap();
    assert!(
        lnd.query_routes(stranger, sats(1))
            .await
            .unwrap()
            .is_empty()
    );
    eprintln!("scenario took {:?}", t.elapsed());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_across_an_adapter_restart() {
    let env = Env::start().await;
    let node = env.devnet.node();
    let carol = env.devnet.peer("carol").unwrap();
    let t = Instant::now();
    carol.set_hold_incoming(true);
    let creq = new_invoice(Some(sats(5000)), "held");
    let carol_preimage = creq.preimage;
    let inv = carol.create_invoice(creq).await.unwrap();
    let hash = inv.payment_hash();

    // The payment hangs at carol: pay answers InFlight after its timeout (+ margin).
    let mut req = pay_invoice(&inv, sats(100));
    req.timeout = Duration::from_secs(2);
    let started = Instant::now();
    assert_eq!(
        env.lnd.pay(req.clone()).await.unwrap(),
        PayOutcome::InFlight
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "pay blocked for {took:?}");

    // Satchel restarts: a new adapter sees it in flight, and paying again sends nothing.
    let Env {
        dir,
        devnet,
        fake,
        lnd,
    } = env;
    drop(lnd);
    let lnd2 = satchel_lnd::LndRest::new(fake.config(satchel_domain::Network::Regtest)).unwrap();
    assert_eq!(
        lnd2.lookup_payment(hash).await.unwrap(),
        PaymentLookup::InFlight
    );
    req.timeout = Duration::from_secs(1);
    assert_eq!(lnd2.pay(req.clone()).await.unwrap(), PayOutcome::InFlight);
    assert_eq!(fake.send_count(hash), 1);
    assert_eq!(node.send_count(hash), 1);

    // Carol releases it: one outcome, the same everywhere.
    eventually(Duration::from_secs(10), || {
        let carol = carol.clone();
        async move { carol.held_payments().contains(&hash).then_some(()) }
    })
    .await;
    assert!(carol.release_held(hash).await.unwrap());
    let want = PaymentLookup::Succeeded {
        preimage: carol_preimage,
        fee: hub_fee(5_000_000),
    };
    let got = eventually(Duration::from_secs(15), || {
        let lnd2 = &lnd2;
        async move {
            match lnd2.lookup_payment(hash).await.unwrap() {
                PaymentLookup::InFlight => None,
                other => Some(other),
            }
        }
    })
    .await;
    assert_eq!(got, want);
    assert_eq!(
        lnd2.pay(req).await.unwrap(),
        PayOutcome::Succeeded {
            preimage: carol_preimage,
            fee: hub_fee(5_000_000)
        }
    );
    assert_eq!(fake.send_count(hash), 1);
    assert_eq!(node.send_count(hash), 1);
    eprintln!("scenario took {:?}", t.elapsed());
    drop(lnd2);
    drop(fake);
    devnet.stop().await.unwrap();
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_faults_are_not_failures() {
    let env = Env::start().await;
    let lnd = &env.lnd;
    let node = env.devnet.node();
    let carol = env.devnet.peer("carol").unwrap();
    let t = Instant::now();

    // The connection drops after LND took the payment: unknown outcome, not a failure; the
    // truth comes from a later lookup, and paying again does not send again.
    let creq = new_invoice(Some(sats(4000)), "dropped");
    let carol_preimage = creq.preimage;
    let inv = carol.create_invoice(creq).await.unwrap();
    env.fake.inject("/v2/router/send", Fault::DropAfter);
    let res = lnd.pay(pay_invoice(&inv, sats(100))).await;
    assert!(matches!(res, Err(LnError::Transport(_))), "{res:?}");
    let want = PaymentLookup::Succeeded {
        preimage: carol_preimage,
        fee: hub_fee(4_000_000),
    };
    let got = eventually(Duration::from_secs(15), || async {
        match lnd.lookup_payment(inv.payment_hash()).await.unwrap() {
            PaymentLookup::InFlight => None,
            other => Some(other),
        }
    })
    .await;
    assert_eq!(got, want);
    assert!(matches!(
        lnd.pay(pay_invoice(&inv, sats(100))).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
    assert_eq!(env.fake.send_count(inv.payment_hash()), 1);
    assert_eq!(node.send_count(inv.payment_hash()), 1);

    // The connection drops before LND got it: unknown too; the lookup says NotFound, so Satchel
    // may send (once).
    let inv = carol
        .create_invoice(new_invoice(Some(sats(1000)), "never arrived"))
        .await
        .unwrap();
    env.fake.inject("/v2/router/send", Fault::DropBefore);
    let res = lnd.pay(pay_invoice(&inv, sats(100))).await;
    assert!(matches!(res, Err(LnError::Transport(_))), "{res:?}");
    assert_eq!(
        lnd.lookup_payment(inv.payment_hash()).await.unwrap(),
        PaymentLookup::NotFound
    );
    assert!(matches!(
        lnd.pay(pay_invoice(&inv, sats(100))).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
    assert_eq!(env.fake.send_count(inv.payment_hash()), 1);

    // A proxy's 500 page: Transport, for every kind of call.
    env.fake.inject("/v2/router/send", Fault::Http500);
    let inv = carol
        .create_invoice(new_invoice(Some(sats(1000)), "500"))
        .await
        .unwrap();
    assert!(matches!(
        lnd.pay(pay_invoice(&inv, sats(100))).await,
        Err(LnError::Transport(_))
    ));
    env.fake.inject("/v2/router/track", Fault::Http500);
    assert!(matches!(
        lnd.lookup_payment(inv.payment_hash()).await,
        Err(LnError::Transport(_))
    ));
    env.fake.inject("/v2/invoices/lookup", Fault::Http500);
    assert!(matches!(
        lnd.lookup_invoice(inv.payment_hash()).await,
        Err(LnError::Transport(_))
    ));
    env.fake.inject("/v1/invoices", Fault::Http500);
    assert!(matches!(
        lnd.create_invoice(new_invoice(Some(sats(1)), "x")).await,
        Err(LnError::Transport(_))
    ));

    // Invoice created but the answer lost: creating it again returns the same invoice.
    let req = new_invoice(Some(sats(700)), "lost answer");
    env.fake.inject("/v1/invoices", Fault::DropAfter);
    assert!(matches!(
        lnd.create_invoice(req.clone()).await,
        Err(LnError::Transport(_))
    ));
    let ours = lnd.create_invoice(req.clone()).await.unwrap();
    assert_eq!(ours.payment_hash(), req.preimage.hash());

    // The invoice subscription breaks: the adapter resubscribes from its last settle index and
    // misses nothing.
    assert!(
        lnd.events_after(0, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    let a = lnd
        .create_invoice(new_invoice(Some(sats(10)), "a"))
        .await
        .unwrap();
    env.devnet.outside_pay("alice", &a, None).await.unwrap();
    let first = wait_events(lnd, 0, 1, Duration::from_secs(10)).await;
    let subscriptions = env.fake.requests("GET /v1/invoices/subscribe");
    env.fake.break_streams();
    env.devnet.outside_pay("alice", &ours, None).await.unwrap();
    let b = lnd
        .create_invoice(new_invoice(Some(sats(11)), "b"))
        .await
        .unwrap();
    env.fake.break_streams();
    env.devnet.outside_pay("alice", &b, None).await.unwrap();
    let next = wait_events(lnd, first[0].seq, 2, Duration::from_secs(15)).await;
    let hashes: Vec<_> = next
        .iter()
        .map(|e| match &e.kind {
            IncomingKind::InvoiceSettled { payment_hash, .. } => *payment_hash,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(hashes, [ours.payment_hash(), b.payment_hash()]);
    assert_eq!(next[0].seq, 2);
    assert_eq!(next[1].seq, 3);
    assert!(env.fake.requests("GET /v1/invoices/subscribe") > subscriptions);
    eprintln!("scenario took {:?}", t.elapsed());
    env.stop().await;
}

/// Expired invoices look cancelled; a bad invoice is rejected by LND and, as nothing was sent,
/// that is a `Rejected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lnd_refusals_are_rejections() {
    let env = Env::start().await;
    let lnd = &env.lnd;
    let carol = env.devnet.peer("carol").unwrap();
    let mut req = new_invoice(Some(sats(10)), "short");
    req.expiry_secs = 1;
    let short = lnd.create_invoice(req).await.unwrap();
    let mut creq = new_invoice(Some(sats(10)), "carol short");
    creq.expiry_secs = 1;
    let carol_short = carol.create_invoice(creq).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        lnd.lookup_invoice(short.payment_hash()).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    // LND refuses to pay an expired invoice before sending anything.
    let res = lnd.pay(pay_invoice(&carol_short, sats(10))).await;
    assert!(
        matches!(&res, Err(LnError::Rejected(m)) if m.contains("expired")),
        "{res:?}"
    );
    assert_eq!(
        lnd.lookup_payment(carol_short.payment_hash())
            .await
            .unwrap(),
        PaymentLookup::NotFound
    );
    // Memo too long for LND: Rejected.
    let res = lnd
        .create_invoice(new_invoice(Some(sats(1)), &"x".repeat(1100)))
        .await;
    assert!(matches!(res, Err(LnError::Rejected(_))), "{res:?}");
    // An invoice for another network never reaches LND.
    let mainnet = "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq8rkx3yf5tcsyz3d73gafnh3cax9rn449d9p5uxz9ezhhypd0elx87sjle52x86fux2ypatgddc6k63n7erqz25le42c4u4ecky03ylcqca784w";
    if let Ok(inv) = satchel_domain::Bolt11::parse(mainnet) {
        let res = lnd
            .pay(PayRequest {
                target: PayTarget::Bolt11 {
                    invoice: inv,
                    amount: sats(1),
                },
                fee_limit: sats(1),
                timeout: Duration::from_secs(5),
            })
            .await;
        assert!(matches!(res, Err(LnError::Rejected(_))), "{res:?}");
    }
    env.stop().await;
}

/// The operator's view through LND (`getinfo`, `channels`, `channels/pending`) matches the
/// devnet node behind the fake: height, channel count, peers, and balances (LND reports whole
/// sats), before and after money moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_status_channels_and_stats() {
    let env = Env::start().await;
    let lnd = &env.lnd;
    let node = env.devnet.node();

    let status = lnd.node_status().await.unwrap();
    let ldk_status = NodeInfo::node_status(&*node).await.unwrap();
    assert_eq!(status.block_height, ldk_status.block_height);
    assert_eq!(status.synced, Some(true));

    let check = |ldk: &[ChannelInfo], ours: &[ChannelInfo]| {
        assert_eq!(ours.len(), ldk.len());
        assert!(!ours.is_empty());
        for l in ldk {
            let o = ours
                .iter()
                .find(|o| o.channel_id == format!("{}:0", l.channel_id))
                .unwrap_or_else(|| panic!("channel {} not listed: {ours:?}", l.channel_id));
            assert_eq!(o.peer, l.peer);
            assert_eq!(o.short_channel_id, l.short_channel_id);
            assert_eq!(o.capacity_sats, l.capacity_sats);
            assert_eq!(o.state, l.state);
            assert_eq!(o.local_balance_msat, l.local_balance_msat / 1000 * 1000);
            assert_eq!(o.remote_balance_msat, l.remote_balance_msat / 1000 * 1000);
        }
    };
    let ldk = NodeInfo::list_channels(&*node).await.unwrap();
    let ours = lnd.list_channels().await.unwrap();
    check(&ldk, &ours);
    assert!(ours.iter().all(|c| c.state == ChannelState::Active));

    let stats = lnd.node_stats().await.unwrap();
    let sum = |f: fn(&ChannelInfo) -> u64| ours.iter().map(f).sum::<u64>();
    assert_eq!(stats.channels_active, Some(ours.len() as u64));
    assert_eq!(stats.channels_inactive, Some(0));
    assert_eq!(
        stats.local_balance_msat,
        Some(sum(|c| c.local_balance_msat))
    );
    assert_eq!(
        stats.remote_balance_msat,
        Some(sum(|c| c.remote_balance_msat))
    );
    assert_eq!(stats.block_height, ldk_status.block_height.map(u64::from));
    assert_eq!(stats.sync_lag_secs, Some(0));

    // Alice pays us 20,000 sats: our side grows by that much.
    let inv = lnd
        .create_invoice(new_invoice(Some(sats(20_000)), "balance"))
        .await
        .unwrap();
    let out = env.devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let after = eventually(Duration::from_secs(10), || async {
        let s = lnd.node_stats().await.unwrap();
        (s.local_balance_msat != stats.local_balance_msat).then_some(s)
    })
    .await;
    // Whole sats per channel: each may round the other way.
    let grew = after.local_balance_msat.unwrap() - stats.local_balance_msat.unwrap();
    let slack = 1000 * ours.len() as u64;
    assert!(grew.abs_diff(20_000_000) <= slack, "grew by {grew} msat");
    check(
        &NodeInfo::list_channels(&*node).await.unwrap(),
        &lnd.list_channels().await.unwrap(),
    );
    env.stop().await;
}
