#![allow(clippy::unwrap_used, clippy::expect_used)]

//! `ClnBackend` against the fake CLN on a real LDK devnet node: money moves over real channels
//! (alice ──▶ us ──▶ hub ──▶ carol). Each test starts its own devnet.

mod common;

use std::time::{Duration, Instant};

use common::*;
use satchel_cln::{ClnVersion, KEYSEND_MESSAGE_TLV};
use satchel_domain::{FailureReason, Preimage};
use satchel_fakes::cln::{FakeOptions, Fault};
use satchel_lightning::{
    DevnetControl, IncomingKind, InvoiceEvents, InvoiceState, Invoices, LnError, NodeInfo,
    PayOutcome, PaymentLookup, Payments, Routes,
};
use sha2::{Digest as _, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_create_lookup_cancel() {
    let env = Env::start().await;
    let me = env.devnet.node().pubkey();
    for kind in ["socket", "rest"] {
        let cln = env.backend(kind).await;
        assert_eq!(cln.node_info().await.unwrap().pubkey, me);

        let req = new_invoice(Some(sats(1234)), "coffee");
        let hash = req.preimage.hash();
        let inv = cln.create_invoice(req.clone()).await.unwrap();
        assert_eq!(inv.payment_hash(), hash, "{kind}: our preimage");
        assert_eq!(inv.payee(), me);
        assert_eq!(inv.amount(), Some(sats(1234)));
        assert_eq!(inv.description(), Some("coffee".to_owned()));
        assert_eq!(inv.expires_at_secs() - inv.timestamp_secs(), 3600);
        assert_eq!(
            cln.lookup_invoice(hash).await.unwrap(),
            Some(InvoiceState::Open)
        );
        // Same preimage again: CLN refuses the duplicate label; the first invoice comes back.
        let again = cln.create_invoice(req).await.unwrap();
        assert_eq!(again.as_str(), inv.as_str());

        // A description hash CLN can make: the hash of the memo (deschashonly).
        let memo = r#"[["text/plain","lnurl"]]"#;
        let dh: [u8; 32] = Sha256::digest(memo.as_bytes()).into();
        let mut req = new_invoice(Some(sats(10)), memo);
        req.description_hash = Some(dh);
        let inv = cln.create_invoice(req).await.unwrap();
        assert_eq!(inv.description_hash(), Some(dh));
        // A bare hash it cannot.
        let mut req = new_invoice(Some(sats(10)), "something else");
        req.description_hash = Some(dh);
        let err = cln.create_invoice(req).await.unwrap_err();
        assert!(
            matches!(&err, LnError::Rejected(m) if m.contains("description")),
            "{err:?}"
        );

        let req = new_invoice(None, "amountless");
        let inv = cln.create_invoice(req).await.unwrap();
        assert_eq!(inv.amount(), None);

        // Cancel: unpayable, looks up Canceled; twice and unknown are fine.
        let req = new_invoice(Some(sats(500)), "cancel me");
        let hash = req.preimage.hash();
        let inv = cln.create_invoice(req).await.unwrap();
        cln.cancel_invoice(hash).await.unwrap();
        cln.cancel_invoice(hash).await.unwrap();
        assert_eq!(
            cln.lookup_invoice(hash).await.unwrap(),
            Some(InvoiceState::Canceled)
        );
        let out = env.devnet.outside_pay("alice", &inv, None).await;
        assert!(
            !matches!(out, Ok(PayOutcome::Succeeded { .. })),
            "a cancelled invoice was paid: {out:?}"
        );
        let unknown = Preimage::random().hash();
        cln.cancel_invoice(unknown).await.unwrap();
        assert_eq!(cln.lookup_invoice(unknown).await.unwrap(), None);
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_payments_replay_and_resume_after_restart() {
    let env = Env::start().await;
    let first = env.backend("socket").await;
    let inv1 = first
        .create_invoice(new_invoice(Some(sats(1000)), "one"))
        .await
        .unwrap();
    let inv2 = first
        .create_invoice(new_invoice(Some(sats(2000)), "two"))
        .await
        .unwrap();
    let t = Instant::now();
    let out = env.devnet.outside_pay("alice", &inv1, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let events = first
        .events_after(0, 10, Duration::from_secs(10))
        .await
        .unwrap();
    eprintln!("paid and seen in {:?}", t.elapsed());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 1);
    assert!(matches!(
        &events[0].kind,
        IncomingKind::InvoiceSettled { payment_hash, amount_received, settled_at_secs }
            if *payment_hash == inv1.payment_hash() && *amount_received == sats(1000) && *settled_at_secs > 0
    ));
    assert!(matches!(
        first.lookup_invoice(inv1.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { amount_received, .. }) if amount_received == sats(1000)
    ));
    // The consumer persists its cursor, then the process stops.
    let cursor = events[0].seq;
    drop(first);

    // While no adapter runs: invoice two is paid, a keysend arrives.
    env.devnet.outside_pay("alice", &inv2, None).await.unwrap();
    let (ks_hash, out) = env
        .devnet
        .outside_keysend(
            "alice",
            env.devnet.node().pubkey(),
            sats(21),
            records(&[(KEYSEND_MESSAGE_TLV, "hi"), (696_969, "wal_x")]),
        )
        .await
        .unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");

    // A new adapter instance (over CLNRest this time) resumes from the persisted cursor.
    let second = env.backend("rest").await;
    let resumed = second
        .events_after(cursor, 10, Duration::from_secs(10))
        .await
        .unwrap();
    let resumed = if resumed.len() < 2 {
        // The second event may land just after the first read.
        let mut all = resumed.clone();
        all.extend(
            second
                .events_after(
                    resumed.last().map_or(cursor, |e| e.seq),
                    10,
                    Duration::from_secs(10),
                )
                .await
                .unwrap(),
        );
        all
    } else {
        resumed
    };
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert_eq!(resumed[0].seq, 2);
    assert_eq!(resumed[1].seq, 3);
    assert!(matches!(
        &resumed[0].kind,
        IncomingKind::InvoiceSettled { payment_hash, amount_received, .. }
            if *payment_hash == inv2.payment_hash() && *amount_received == sats(2000)
    ));
    match &resumed[1].kind {
        IncomingKind::KeysendReceived {
            payment_hash,
            preimage,
            amount_received,
            custom_records,
            ..
        } => {
            assert_eq!(*payment_hash, ks_hash);
            assert_eq!(preimage.hash(), ks_hash);
            assert_eq!(*amount_received, sats(21));
            // CLN keeps only the chat message (as the description); 696969 is lost.
            assert_eq!(*custom_records, records(&[(KEYSEND_MESSAGE_TLV, "hi")]));
        }
        other => panic!("expected a keysend, got {other:?}"),
    }
    // Replays from 0 give the same three events; nothing after the last; limits apply.
    let replay = second.events_after(0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(replay.len(), 3);
    assert_eq!(replay[0], events[0]);
    assert_eq!(&replay[1..], &resumed[..]);
    assert_eq!(
        second.events_after(0, 2, Duration::ZERO).await.unwrap(),
        replay[..2]
    );
    assert!(
        second
            .events_after(0, 0, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    let t = Instant::now();
    assert!(
        second
            .events_after(3, 10, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_carol_via_hub_with_the_real_fee_once() {
    let env = Env::start().await;
    let carol = env.devnet.peer("carol").unwrap();
    for (i, kind) in ["socket", "rest"].into_iter().enumerate() {
        let cln = env.backend(kind).await;
        let amount = sats(10_000);
        let inv = env
            .devnet
            .outside_invoice("carol", Some(amount), "to carol")
            .await
            .unwrap();
        let t = Instant::now();
        let out = cln.pay(pay_invoice(&inv, sats(100))).await.unwrap();
        eprintln!("{kind}: paid carol in {:?}", t.elapsed());
        let fee = hub_fee(amount.as_msat());
        let PayOutcome::Succeeded { preimage, fee: got } = out.clone() else {
            panic!("{kind}: {out:?}");
        };
        assert_eq!(preimage.hash(), inv.payment_hash());
        assert_eq!(got, fee, "{kind}: the hub's fee");
        assert_eq!(
            cln.lookup_payment(inv.payment_hash()).await.unwrap(),
            PaymentLookup::Succeeded { preimage, fee }
        );
        assert!(matches!(
            carol.lookup_invoice(inv.payment_hash()).await.unwrap(),
            Some(InvoiceState::Settled { amount_received, .. }) if amount_received == amount
        ));
        // Twice, and with another fee limit: the first payment is reported, nothing is sent.
        assert_eq!(cln.pay(pay_invoice(&inv, sats(100))).await.unwrap(), out);
        assert_eq!(cln.pay(pay_invoice(&inv, sats(1))).await.unwrap(), out);
        // A new adapter instance knows it too.
        let fresh = env.backend(kind).await;
        assert_eq!(fresh.pay(pay_invoice(&inv, sats(100))).await.unwrap(), out);
        assert_eq!(
            env.fake.calls("xpay"),
            i as u64 + 1,
            "one `xpay` per invoice"
        );
        assert_eq!(env.devnet.node().send_count(inv.payment_hash()), 1);
    }

    // Concurrent calls for one hash send once.
    let cln = env.backend("socket").await;
    let inv = env
        .devnet
        .outside_invoice("carol", Some(sats(3000)), "concurrent")
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        cln.pay(pay_invoice(&inv, sats(100))),
        cln.pay(pay_invoice(&inv, sats(100)))
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(env.devnet.node().send_count(inv.payment_hash()), 1);

    // Routes to carol go through the hub and add up.
    let routes = cln.query_routes(carol.pubkey(), sats(1000)).await.unwrap();
    assert_eq!(routes.len(), 1);
    let r = &routes[0];
    assert_eq!(r.hops.len(), 2);
    assert_eq!(r.hops[0].pub_key, env.devnet.peer("hub").unwrap().pubkey());
    assert_eq!(r.hops[1].pub_key, carol.pubkey());
    assert_eq!(r.hops[1].amt_to_forward, sats(1000));
    assert_eq!(r.total_fees, hub_fee(1_000_000));
    assert_eq!(r.hops[0].fee, hub_fee(1_000_000));
    assert_eq!(r.total_amt.as_msat(), 1_000_000 + r.total_fees.as_msat());
    assert!(r.total_time_lock > r.hops[1].expiry);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysend_with_extratlvs_keeps_our_preimage() {
    let env = Env::start().await;
    let carol = env.devnet.peer("carol").unwrap();
    for kind in ["rest", "socket"] {
        let cln = env.backend(kind).await;
        let recs = records(&[
            (65_537, "odd"),
            (65_538, "even"),
            (7_629_169, r#"{"podcast":"x","action":"boost"}"#),
            (34_349_334, "hello carol"),
            (112_111_100, "wal_carol"),
            (112_111_100_102, "wal_carol_f"),
        ]);
        let amount = sats(100);
        let (req, preimage) = keysend(carol.pubkey(), amount, recs.clone(), sats(10));
        let hash = preimage.hash();
        let sent_before = env.fake.calls("sendonion");
        let out = cln.pay(req.clone()).await.unwrap();
        let fee = hub_fee(amount.as_msat());
        assert_eq!(
            out,
            PayOutcome::Succeeded { preimage, fee },
            "{kind}: our preimage, the hub's fee"
        );
        assert_eq!(
            cln.lookup_payment(hash).await.unwrap(),
            PaymentLookup::Succeeded { preimage, fee }
        );
        // Carol got our preimage, the amount and exactly our records.
        let events = carol
            .events_after(0, 100, Duration::from_secs(5))
            .await
            .unwrap();
        let got = events
            .iter()
            .find_map(|e| match &e.kind {
                IncomingKind::KeysendReceived {
                    payment_hash,
                    preimage,
                    amount_received,
                    custom_records,
                    ..
                } if *payment_hash == hash => {
                    Some((*preimage, *amount_received, custom_records.clone()))
                }
                _ => None,
            })
            .expect("carol received the keysend");
        assert_eq!(got, (preimage, amount, recs));
        // Idempotent per hash.
        assert_eq!(cln.pay(req).await.unwrap(), out);
        assert_eq!(env.fake.calls("sendonion"), sent_before + 1);
        assert_eq!(env.devnet.node().send_count(hash), 1);

        // Invalid record types never leave.
        for bad in [1u64, 65_535, satchel_domain::KEYSEND_PREIMAGE_TLV] {
            let (req, preimage) = keysend(carol.pubkey(), amount, records(&[(bad, "x")]), sats(10));
            assert!(matches!(cln.pay(req).await, Err(LnError::Rejected(_))));
            assert_eq!(
                cln.lookup_payment(preimage.hash()).await.unwrap(),
                PaymentLookup::NotFound
            );
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_limit_too_low_is_no_route_and_too_large_is_insufficient() {
    let env = Env::start().await;
    let carol = env.devnet.peer("carol").unwrap().pubkey();
    let cln = env.backend("socket").await;
    let amount = sats(1000);
    let inv = env
        .devnet
        .outside_invoice("carol", Some(amount), "too cheap")
        .await
        .unwrap();
    let out = cln
        .pay(pay_invoice(&inv, satchel_domain::Msat::ZERO))
        .await
        .unwrap();
    assert_eq!(out, PayOutcome::Failed(FailureReason::NoRoute));
    assert_eq!(
        cln.lookup_payment(inv.payment_hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );
    let short = msat(hub_fee(amount.as_msat()).as_msat() - 1);
    let (req, preimage) = keysend(carol, amount, Default::default(), short);
    assert_eq!(
        cln.pay(req).await.unwrap(),
        PayOutcome::Failed(FailureReason::NoRoute)
    );
    assert_eq!(
        cln.lookup_payment(preimage.hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );
    // After a definite failure the same invoice may be paid.
    let out = cln.pay(pay_invoice(&inv, sats(10))).await.unwrap();
    assert!(
        matches!(out, PayOutcome::Succeeded { fee, .. } if fee == hub_fee(amount.as_msat())),
        "{out:?}"
    );

    // More than our channels hold.
    let huge = sats(20_000_000);
    let (req, preimage) = keysend(carol, huge, Default::default(), sats(100_000));
    assert_eq!(
        cln.pay(req).await.unwrap(),
        PayOutcome::Failed(FailureReason::InsufficientBalance)
    );
    assert_eq!(
        cln.lookup_payment(preimage.hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::InsufficientBalance)
    );
    let inv = env
        .devnet
        .outside_invoice("carol", Some(huge), "too large")
        .await
        .unwrap();
    assert_eq!(
        cln.pay(pay_invoice(&inv, sats(100_000))).await.unwrap(),
        PayOutcome::Failed(FailureReason::InsufficientBalance)
    );
    env.stop().await;
}

/// On the newest release (invoices paid with `xpay`, keysends routed with `getroutes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_faults_are_unknown_outcomes_and_lookup_tells_the_truth() {
    transport_faults(FakeOptions::default(), "xpay").await;
}

/// On the oldest supported release (`pay`, `getroute`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_faults_on_v23_08() {
    transport_faults(
        FakeOptions {
            version: ClnVersion::MIN_SUPPORTED,
            deprecated_apis: true,
        },
        "pay",
    )
    .await;
}

async fn transport_faults(options: FakeOptions, pay_method: &str) {
    let env = Env::start_with(options).await;
    let carol = env.devnet.peer("carol").unwrap().pubkey();
    for kind in ["socket", "rest"] {
        let cln = env.backend(kind).await;

        // The node pays, but the answer is lost.
        let inv = env
            .devnet
            .outside_invoice("carol", Some(sats(2000)), "lost answer")
            .await
            .unwrap();
        env.fake.inject_fault(pay_method, Fault::DropResponse);
        let err = cln.pay(pay_invoice(&inv, sats(100))).await.unwrap_err();
        assert!(matches!(err, LnError::Transport(_)), "{kind}: {err:?}");
        let fee = hub_fee(2_000_000);
        let truth = cln.lookup_payment(inv.payment_hash()).await.unwrap();
        assert!(
            matches!(truth, PaymentLookup::Succeeded { fee: f, .. } if f == fee),
            "{kind}: {truth:?}"
        );
        // Recovery pays "again": nothing is sent.
        let again = cln.pay(pay_invoice(&inv, sats(100))).await.unwrap();
        assert!(matches!(again, PayOutcome::Succeeded { .. }));
        assert_eq!(env.devnet.node().send_count(inv.payment_hash()), 1);

        // The request never arrives: the node knows nothing, so re-sending is right.
        let inv = env
            .devnet
            .outside_invoice("carol", Some(sats(1500)), "lost request")
            .await
            .unwrap();
        env.fake.inject_fault(pay_method, Fault::DropRequest);
        let err = cln.pay(pay_invoice(&inv, sats(100))).await.unwrap_err();
        assert!(matches!(err, LnError::Transport(_)), "{kind}: {err:?}");
        assert_eq!(
            cln.lookup_payment(inv.payment_hash()).await.unwrap(),
            PaymentLookup::NotFound
        );
        let out = cln.pay(pay_invoice(&inv, sats(100))).await.unwrap();
        assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
        assert_eq!(env.devnet.node().send_count(inv.payment_hash()), 1);

        // A keysend whose sendonion answer is lost: in flight or done, never sent twice.
        let (req, preimage) = keysend(carol, sats(50), records(&[(65_537, "x")]), sats(10));
        env.fake.inject_fault("sendonion", Fault::DropResponse);
        let err = cln.pay(req.clone()).await.unwrap_err();
        assert!(matches!(err, LnError::Transport(_)), "{kind}: {err:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match cln.lookup_payment(preimage.hash()).await.unwrap() {
                PaymentLookup::Succeeded { preimage: p, .. } => {
                    assert_eq!(p, preimage);
                    break;
                }
                PaymentLookup::InFlight if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("{kind}: keysend after a lost answer: {other:?}"),
            }
        }
        assert!(matches!(
            cln.pay(req).await.unwrap(),
            PayOutcome::Succeeded { .. }
        ));
        assert_eq!(env.devnet.node().send_count(preimage.hash()), 1);

        // Garbage instead of an answer.
        env.fake.inject_fault("listinvoices", Fault::Garbage);
        let err = cln
            .lookup_invoice(Preimage::random().hash())
            .await
            .unwrap_err();
        assert!(matches!(err, LnError::Transport(_)), "{kind}: {err:?}");
        env.fake.inject_fault("listsendpays", Fault::DropResponse);
        let err = cln
            .lookup_payment(Preimage::random().hash())
            .await
            .unwrap_err();
        assert!(matches!(err, LnError::Transport(_)), "{kind}: {err:?}");
    }

    // The node is gone: every call is a transport error, never a failure.
    let cln = env.backend("socket").await;
    let inv = env
        .devnet
        .outside_invoice("carol", Some(sats(1000)), "node down")
        .await
        .unwrap();
    let path = env.socket.path().to_path_buf();
    drop(env.socket);
    assert!(!path.exists());
    assert!(matches!(
        cln.pay(pay_invoice(&inv, sats(100))).await,
        Err(LnError::Transport(_))
    ));
    assert!(matches!(
        cln.lookup_payment(inv.payment_hash()).await,
        Err(LnError::Transport(_))
    ));
    env.devnet.stop().await.unwrap();
}

/// The operator's view through CLN (`getinfo`, `listpeerchannels`) matches the devnet node:
/// on a fake that answers from the node itself (socket and CLNRest), and on the usual test
/// fake whose channels the harness set from the node. Checked again after money moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_status_channels_and_stats() {
    use satchel_lightning::{ChannelInfo, ChannelState};
    let env = Env::start().await;
    let node = env.devnet.node();
    // A second fake on the same node, with no channels set: it lists the node's own.
    let direct = satchel_fakes::cln::FakeCln::start(node.clone());
    let direct_socket = direct
        .serve_socket(env.dir.path().join("direct-rpc"))
        .await
        .unwrap();
    let direct_cln = satchel_cln::ClnBackend::connect(&satchel_cln::ClnConfig::socket(
        direct_socket.path(),
        satchel_domain::Network::Regtest,
    ))
    .await
    .unwrap();
    let ldk_status = NodeInfo::node_status(&*node).await.unwrap();

    let check = |ldk: &[ChannelInfo], ours: &[ChannelInfo], same_ids: bool| {
        assert_eq!(ours.len(), ldk.len());
        assert!(!ours.is_empty());
        for l in ldk {
            let o = ours
                .iter()
                .find(|o| o.peer == l.peer)
                .unwrap_or_else(|| panic!("channel {l:?} not listed: {ours:?}"));
            // The harness's fake is given the node's SCIDs for sending (aliases) and makes
            // up channel ids; the direct one reports the node's own.
            if same_ids {
                assert_eq!(o.channel_id, l.channel_id);
                assert_eq!(o.short_channel_id, l.short_channel_id);
            }
            assert_eq!(o.peer, l.peer);
            assert_eq!(o.capacity_sats, l.capacity_sats);
            assert_eq!(o.state, l.state);
            assert_eq!(o.local_balance_msat, l.local_balance_msat);
            assert_eq!(o.remote_balance_msat, l.remote_balance_msat);
        }
    };
    let mut before = None;
    for (name, cln, same_ids) in [
        ("direct", direct_cln, true),
        ("socket", env.backend("socket").await, false),
        ("rest", env.backend("rest").await, false),
    ] {
        let status = cln.node_status().await.unwrap();
        assert_eq!(status.block_height, ldk_status.block_height, "{name}");
        assert_eq!(status.synced, Some(true), "{name}");
        let ldk = NodeInfo::list_channels(&*node).await.unwrap();
        let ours = cln.list_channels().await.unwrap();
        check(&ldk, &ours, same_ids);
        assert!(ours.iter().all(|c| c.state == ChannelState::Active));
        let stats = cln.node_stats().await.unwrap();
        let sum = |f: fn(&ChannelInfo) -> u64| ldk.iter().map(f).sum::<u64>();
        assert_eq!(stats.channels_active, Some(ldk.len() as u64), "{name}");
        assert_eq!(stats.channels_inactive, Some(0), "{name}");
        assert_eq!(
            stats.local_balance_msat,
            Some(sum(|c| c.local_balance_msat))
        );
        assert_eq!(
            stats.remote_balance_msat,
            Some(sum(|c| c.remote_balance_msat))
        );
        assert_eq!(stats.block_height, ldk_status.block_height.map(u64::from));
        // CLN's getinfo names no block time: no lag figure.
        assert_eq!(stats.sync_lag_secs, None, "{name}");
        before.get_or_insert(stats);
    }

    // Alice pays us 20,000 sats: the direct fake's figures follow the node's.
    let cln = env.backend("socket").await;
    let inv = cln
        .create_invoice(new_invoice(Some(sats(20_000)), "balance"))
        .await
        .unwrap();
    let out = env.devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    let direct_cln = satchel_cln::ClnBackend::connect(&satchel_cln::ClnConfig::socket(
        direct_socket.path(),
        satchel_domain::Network::Regtest,
    ))
    .await
    .unwrap();
    let before = before.unwrap().local_balance_msat.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = direct_cln.node_stats().await.unwrap();
        if s.local_balance_msat != Some(before) || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let grew = after.local_balance_msat.unwrap() - before;
    assert!(grew.abs_diff(20_000_000) <= 1000, "grew by {grew} msat");
    check(
        &NodeInfo::list_channels(&*node).await.unwrap(),
        &direct_cln.list_channels().await.unwrap(),
        true,
    );
    env.stop().await;
}
