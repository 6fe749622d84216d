//! The scripted backend's own behaviour: what it signs, how scripts drive payments, idempotency
//! per hash, the outside world it simulates, and persistence across reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use std::path::Path;
use std::time::Duration;

use satchel_domain::*;
use satchel_lightning::*;
use satchel_scripted::*;

fn backend() -> ScriptedBackend {
    ScriptedBackend::new(Network::Regtest, [7u8; 32])
}

fn sats(n: u64) -> Msat {
    Msat::from_sats(n).unwrap()
}

fn pay_invoice(invoice: &Bolt11, fee_limit: Msat) -> PayRequest {
    PayRequest {
        target: PayTarget::Bolt11 {
            invoice: invoice.clone(),
            amount: invoice.amount().unwrap(),
        },
        fee_limit,
        timeout: Duration::from_secs(30),
    }
}

fn keysend(dest: NodePubkey, amount: Msat, preimage: Preimage) -> PayRequest {
    PayRequest {
        target: PayTarget::Keysend {
            dest,
            amount,
            preimage,
            custom_records: CustomRecords::default(),
        },
        fee_limit: sats(10),
        timeout: Duration::from_secs(30),
    }
}

fn new_invoice(amount: Option<Msat>, memo: &str) -> NewInvoice {
    NewInvoice {
        amount,
        memo: memo.to_owned(),
        description_hash: None,
        expiry_secs: 3600,
        preimage: Preimage::random(),
    }
}

/// The cheap payment-hash reader agrees with the checked parse on every shape of invoice
/// we issue (with and without amount, description hash, long memo) and on outside ones.
#[tokio::test]
async fn payment_hash_hint_matches_the_checked_parse() {
    let b = backend();
    let mut invoices = Vec::new();
    for (amount, memo) in [
        (Some(sats(1)), "a"),
        (None, ""),
        (Some(sats(21_000_000)), &"m".repeat(639)[..]),
    ] {
        invoices.push(b.create_invoice(new_invoice(amount, memo)).await.unwrap());
    }
    let mut hashed = new_invoice(Some(sats(5)), "");
    hashed.description_hash = Some([9u8; 32]);
    invoices.push(b.create_invoice(hashed).await.unwrap());
    invoices.push(b.external_invoice(Some(sats(3)), "outside", 60).0);
    for inv in invoices {
        assert_eq!(
            Bolt11::payment_hash_hint(inv.as_str()),
            Some(inv.payment_hash()),
            "{}",
            inv.as_str()
        );
    }
}

#[test]
fn keys_are_deterministic_and_distinct() {
    let a = backend();
    let b = backend();
    let c = ScriptedBackend::new(Network::Regtest, [8u8; 32]);
    assert_eq!(a.pubkey(), b.pubkey());
    assert_eq!(a.external_pubkey(), b.external_pubkey());
    assert_ne!(a.pubkey(), a.external_pubkey());
    assert_ne!(a.pubkey(), c.pubkey());
    assert!(format!("{a:?}").contains("ScriptedBackend"));
}

#[tokio::test]
async fn node_info_reports_identity() {
    let b = backend();
    let info = b.node_info().await.unwrap();
    assert_eq!(info.pubkey, b.pubkey());
    assert_eq!(info.network, Network::Regtest);
    assert_eq!(info.alias, "satchel-scripted");
}

#[tokio::test]
async fn invoice_roundtrips_through_parse() {
    let b = backend();
    let req = new_invoice(Some(sats(1234)), "coffee");
    let preimage = req.preimage;
    let inv = b.create_invoice(req).await.unwrap();
    assert!(inv.as_str().starts_with("lnbcrt"));
    let parsed = Bolt11::parse(inv.as_str()).unwrap();
    assert_eq!(parsed, inv);
    assert_eq!(parsed.network(), Network::Regtest);
    assert_eq!(parsed.amount(), Some(sats(1234)));
    assert_eq!(parsed.payment_hash(), preimage.hash());
    assert_eq!(parsed.payee(), b.pubkey());
    assert_eq!(parsed.description().as_deref(), Some("coffee"));
    assert_eq!(parsed.description_hash(), None);
    assert_eq!(parsed.expiry_secs(), 3600);
    assert_eq!(parsed.min_final_cltv_expiry_delta(), 144);
    assert!(parsed.check_payable(Network::Regtest, now_secs()).is_ok());
    assert_eq!(
        b.lookup_invoice(preimage.hash()).await.unwrap(),
        Some(InvoiceState::Open)
    );

    // Description hash and amountless.
    let dh = [0xabu8; 32];
    let mut req = new_invoice(None, "ignored");
    req.description_hash = Some(dh);
    let inv = b.create_invoice(req).await.unwrap();
    let parsed = Bolt11::parse(&inv.to_string().to_uppercase()).unwrap();
    assert_eq!(parsed.description(), None);
    assert_eq!(parsed.description_hash(), Some(dh));
    assert_eq!(parsed.amount(), None);
}

#[tokio::test]
async fn invoice_network_follows_backend() {
    let b = ScriptedBackend::new(Network::Bitcoin, [1u8; 32]);
    let inv = b
        .create_invoice(new_invoice(Some(sats(1)), "x"))
        .await
        .unwrap();
    assert!(inv.as_str().starts_with("lnbc1"));
    assert_eq!(
        Bolt11::parse(inv.as_str()).unwrap().network(),
        Network::Bitcoin
    );
    let (ext, _) = b.external_invoice(Some(sats(1)), "x", 60);
    assert_eq!(ext.network(), Network::Bitcoin);
}

#[tokio::test]
async fn create_invoice_is_idempotent_per_preimage() {
    let b = backend();
    let req = new_invoice(Some(sats(5)), "once");
    let first = b.create_invoice(req.clone()).await.unwrap();
    let mut again = req;
    again.memo = "twice".to_owned();
    let second = b.create_invoice(again).await.unwrap();
    assert_eq!(first.as_str(), second.as_str());
}

#[tokio::test]
async fn overlong_memo_is_rejected() {
    let b = backend();
    let err = b
        .create_invoice(new_invoice(Some(sats(5)), &"x".repeat(700)))
        .await;
    assert!(matches!(err, Err(LnError::Rejected(_))));
    // The simulated outside world truncates instead.
    let (ext, _) = b.external_invoice(Some(sats(5)), &"é".repeat(700), 60);
    assert!(ext.description().unwrap().len() <= 639);
}

#[tokio::test]
async fn external_invoice_is_signed_by_carol() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "from carol", 600);
    let parsed = Bolt11::parse(inv.as_str()).unwrap();
    assert_eq!(parsed.payee(), b.external_pubkey());
    assert_eq!(parsed.payment_hash(), preimage.hash());
    assert_eq!(parsed.amount(), Some(sats(100)));
    assert_eq!(parsed.description().as_deref(), Some("from carol"));
    // Not ours.
    assert_eq!(b.lookup_invoice(preimage.hash()).await.unwrap(), None);
}

#[tokio::test]
async fn pay_is_idempotent() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::NotFound
    );
    b.script(
        hash,
        Script::Succeed {
            fee: Msat::from_msat(500).unwrap(),
        },
    );
    let expected = PayOutcome::Succeeded {
        preimage,
        fee: Msat::from_msat(500).unwrap(),
    };
    assert_eq!(b.pay(pay_invoice(&inv, sats(1))).await.unwrap(), expected);
    assert_eq!(b.pay(pay_invoice(&inv, sats(1))).await.unwrap(), expected);
    assert_eq!(b.pay_count(hash), 1);
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage,
            fee: Msat::from_msat(500).unwrap()
        }
    );
}

#[tokio::test]
async fn default_script_applies_to_unscripted_payments() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    assert_eq!(
        b.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
    b.set_default_script(Script::Fail(FailureReason::InsufficientBalance));
    let (inv, _) = b.external_invoice(Some(sats(100)), "y", 600);
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::Failed(FailureReason::InsufficientBalance)
    );
}

#[tokio::test]
async fn failed_payment_may_be_retried() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(hash, Script::Fail(FailureReason::Timeout));
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::Failed(FailureReason::Timeout)
    );
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Failed(FailureReason::Timeout)
    );
    // The script was consumed: the retry uses the default (succeed, fee 0).
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
    assert_eq!(b.pay_count(hash), 2);
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
}

#[tokio::test]
async fn fee_over_limit_is_no_route() {
    let b = backend();
    let (inv, _) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(
        hash,
        Script::Succeed {
            fee: Msat::from_msat(1001).unwrap(),
        },
    );
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::Failed(FailureReason::NoRoute)
    );
    // Exactly at the limit is fine.
    b.script(hash, Script::Succeed { fee: sats(1) });
    assert!(matches!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));
}

#[tokio::test]
async fn transport_error_still_pays() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(
        hash,
        Script::TransportError {
            then: Box::new(Script::Succeed { fee: sats(1) }),
        },
    );
    assert!(matches!(
        b.pay(pay_invoice(&inv, sats(2))).await,
        Err(LnError::Transport(_))
    ));
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage,
            fee: sats(1)
        }
    );
    // A retry does not send again.
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(2))).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: sats(1)
        }
    );
    assert_eq!(b.pay_count(hash), 1);

    let (inv, _) = b.external_invoice(Some(sats(100)), "y", 600);
    let hash = inv.payment_hash();
    b.script(
        hash,
        Script::TransportError {
            then: Box::new(Script::Fail(FailureReason::NoRoute)),
        },
    );
    assert!(b.pay(pay_invoice(&inv, sats(2))).await.is_err());
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );

    let (inv, _) = b.external_invoice(Some(sats(100)), "z", 600);
    let hash = inv.payment_hash();
    b.script(
        hash,
        Script::TransportError {
            then: Box::new(Script::Unknown),
        },
    );
    assert!(b.pay(pay_invoice(&inv, sats(2))).await.is_err());
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::InFlight
    );
}

#[tokio::test]
async fn unknown_until_completed() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(hash, Script::Unknown);
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::InFlight
    );
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::InFlight
    );
    // Still in flight: a second pay does not send.
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::InFlight
    );
    assert_eq!(b.pay_count(hash), 1);
    // release() has nothing to apply for Unknown.
    assert!(b.release(hash));
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::InFlight
    );
    b.complete(
        hash,
        Completion::Succeed {
            fee: Msat::from_msat(7).unwrap(),
        },
    );
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage,
            fee: Msat::from_msat(7).unwrap()
        }
    );
    // Completing a resolved payment changes nothing.
    b.complete(hash, Completion::Fail(FailureReason::Error));
    assert!(matches!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Succeeded { .. }
    ));
    assert!(!b.release(hash));
}

#[tokio::test]
async fn pending_then_succeed() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(hash, Script::PendingThenSucceed { fee: sats(1) });
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::InFlight
    );
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::InFlight
    );
    assert!(b.release(hash));
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage,
            fee: sats(1)
        }
    );

    // complete() can fail it instead; a too-high completion fee is NoRoute.
    let (inv, _) = b.external_invoice(Some(sats(100)), "y", 600);
    let hash = inv.payment_hash();
    b.script(hash, Script::PendingThenSucceed { fee: sats(1) });
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::InFlight
    );
    b.complete(hash, Completion::Succeed { fee: sats(2) });
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );
}

#[tokio::test]
async fn hang_released_by_complete() {
    let b = Arc::new(backend());
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(
        hash,
        Script::Hang {
            then: Box::new(Script::Succeed { fee: Msat::ZERO }),
        },
    );
    let task = {
        let b = Arc::clone(&b);
        let inv = inv.clone();
        tokio::spawn(async move { b.pay(pay_invoice(&inv, sats(1))).await })
    };
    // Wait until the payment was sent.
    while b.pay_count(hash) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::InFlight
    );
    // A concurrent pay does not send again and does not block.
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::InFlight
    );
    assert!(!task.is_finished());
    b.complete(
        hash,
        Completion::Succeed {
            fee: Msat::from_msat(3).unwrap(),
        },
    );
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::from_msat(3).unwrap()
        }
    );
    assert_eq!(b.pay_count(hash), 1);
}

#[tokio::test]
async fn hang_released_by_release_applies_then() {
    let b = Arc::new(backend());
    let (inv, _) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(
        hash,
        Script::Hang {
            then: Box::new(Script::Fail(FailureReason::Timeout)),
        },
    );
    let task = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.pay(pay_invoice(&inv, sats(1))).await })
    };
    while b.pay_count(hash) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(b.release(hash));
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.unwrap(), PayOutcome::Failed(FailureReason::Timeout));
}

#[tokio::test]
async fn hang_times_out_in_flight() {
    let b = backend();
    let (inv, preimage) = b.external_invoice(Some(sats(100)), "x", 600);
    let hash = inv.payment_hash();
    b.script(
        hash,
        Script::Hang {
            then: Box::new(Script::Succeed { fee: Msat::ZERO }),
        },
    );
    let mut req = pay_invoice(&inv, sats(1));
    req.timeout = Duration::from_millis(50);
    let started = Instant::now();
    assert_eq!(b.pay(req).await.unwrap(), PayOutcome::InFlight);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::InFlight
    );
    // It can still be released later.
    assert!(b.release(hash));
    assert_eq!(
        b.lookup_payment(hash).await.unwrap(),
        PaymentLookup::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
}

#[tokio::test]
async fn unknown_foreign_invoice_is_no_route() {
    let b = backend();
    // Signed by another backend's carol: its preimage is unknown here.
    let other = ScriptedBackend::new(Network::Regtest, [9u8; 32]);
    let (inv, _) = other.external_invoice(Some(sats(10)), "x", 600);
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::Failed(FailureReason::NoRoute)
    );
    assert_eq!(
        b.lookup_payment(inv.payment_hash()).await.unwrap(),
        PaymentLookup::Failed(FailureReason::NoRoute)
    );
    // Another node's own invoice too.
    let theirs = other
        .create_invoice(new_invoice(Some(sats(10)), "y"))
        .await
        .unwrap();
    assert_eq!(
        b.pay(pay_invoice(&theirs, sats(1))).await.unwrap(),
        PayOutcome::Failed(FailureReason::NoRoute)
    );
}

#[tokio::test]
async fn invalid_requests_are_rejected_without_sending() {
    let b = backend();
    let mainnet = ScriptedBackend::new(Network::Bitcoin, [7u8; 32]);
    let (inv, _) = mainnet.external_invoice(Some(sats(10)), "x", 600);
    assert!(matches!(
        b.pay(pay_invoice(&inv, sats(1))).await,
        Err(LnError::Rejected(_))
    ));
    assert_eq!(b.pay_count(inv.payment_hash()), 0);

    let (inv, _) = b.external_invoice(Some(sats(10)), "x", 600);
    let req = PayRequest {
        target: PayTarget::Bolt11 {
            invoice: inv.clone(),
            amount: sats(9),
        },
        fee_limit: sats(1),
        timeout: Duration::from_secs(1),
    };
    assert!(matches!(b.pay(req).await, Err(LnError::Rejected(_))));
    assert_eq!(
        b.lookup_payment(inv.payment_hash()).await.unwrap(),
        PaymentLookup::NotFound
    );

    let mut records = CustomRecords::default();
    records
        .0
        .insert(satchel_domain::KEYSEND_PREIMAGE_TLV, vec![0; 32]);
    let req = PayRequest {
        target: PayTarget::Keysend {
            dest: b.external_pubkey(),
            amount: sats(1),
            preimage: Preimage::random(),
            custom_records: records,
        },
        fee_limit: sats(1),
        timeout: Duration::from_secs(1),
    };
    assert!(matches!(b.pay(req).await, Err(LnError::Rejected(_))));
}

#[tokio::test]
async fn pay_our_invoice_events_and_replay() {
    let b = backend();
    let inv1 = b
        .create_invoice(new_invoice(Some(sats(10)), "a"))
        .await
        .unwrap();
    let inv2 = b.create_invoice(new_invoice(None, "b")).await.unwrap();
    b.pay_our_invoice(&inv1, None).unwrap();
    assert!(matches!(
        b.pay_our_invoice(&inv2, None),
        Err(LnError::Rejected(_))
    ));
    b.pay_our_invoice(&inv2, Some(sats(3))).unwrap();
    assert_eq!(b.events_len(), 2);

    let events = b.events_after(0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].seq, 1);
    assert_eq!(events[1].seq, 2);
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            ..
        } => {
            assert_eq!(*payment_hash, inv1.payment_hash());
            assert_eq!(*amount_received, sats(10));
        }
        other => panic!("unexpected {other:?}"),
    }
    match &events[1].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            ..
        } => {
            assert_eq!(*payment_hash, inv2.payment_hash());
            assert_eq!(*amount_received, sats(3));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Replays return the same events; cursors and limits work.
    assert_eq!(
        b.events_after(0, 100, Duration::ZERO).await.unwrap(),
        events
    );
    assert_eq!(
        b.events_after(1, 100, Duration::ZERO).await.unwrap(),
        events[1..].to_vec()
    );
    assert_eq!(
        b.events_after(0, 1, Duration::ZERO).await.unwrap(),
        events[..1].to_vec()
    );
    assert!(
        b.events_after(2, 100, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        b.events_after(99, 100, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    match b.lookup_invoice(inv1.payment_hash()).await.unwrap() {
        Some(InvoiceState::Settled {
            amount_received, ..
        }) => {
            assert_eq!(amount_received, sats(10));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn paying_settled_or_unknown_invoice_is_rejected() {
    let b = backend();
    let inv = b
        .create_invoice(new_invoice(Some(sats(10)), "a"))
        .await
        .unwrap();
    b.pay_our_invoice(&inv, None).unwrap();
    assert!(matches!(
        b.pay_our_invoice(&inv, None),
        Err(LnError::Rejected(_))
    ));
    assert!(matches!(
        b.pay_our_invoice(&inv, Some(sats(20))),
        Err(LnError::Rejected(_))
    ));
    let inv2 = b
        .create_invoice(new_invoice(Some(sats(10)), "b"))
        .await
        .unwrap();
    assert!(matches!(
        b.pay_our_invoice(&inv2, Some(sats(9))),
        Err(LnError::Rejected(_))
    ));
    let (ext, _) = b.external_invoice(Some(sats(10)), "c", 600);
    assert!(matches!(
        b.pay_our_invoice(&ext, None),
        Err(LnError::Rejected(_))
    ));
    assert_eq!(b.events_len(), 1);
}

#[tokio::test]
async fn cancel_semantics() {
    let b = backend();
    let inv = b
        .create_invoice(new_invoice(Some(sats(10)), "a"))
        .await
        .unwrap();
    let hash = inv.payment_hash();
    b.cancel_invoice(hash).await.unwrap();
    assert_eq!(
        b.lookup_invoice(hash).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    b.cancel_invoice(hash).await.unwrap();
    assert!(matches!(
        b.pay_our_invoice(&inv, None),
        Err(LnError::Rejected(_))
    ));

    // Settled invoices stay settled.
    let inv = b
        .create_invoice(new_invoice(Some(sats(10)), "b"))
        .await
        .unwrap();
    b.pay_our_invoice(&inv, None).unwrap();
    b.cancel_invoice(inv.payment_hash()).await.unwrap();
    assert!(matches!(
        b.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { .. })
    ));

    // Unknown hash: fine, and still unknown.
    let unknown = Preimage::random().hash();
    b.cancel_invoice(unknown).await.unwrap();
    assert_eq!(b.lookup_invoice(unknown).await.unwrap(), None);
}

#[tokio::test]
async fn expired_invoices() {
    let b = backend();
    let past = u64::try_from(now_secs()).unwrap() - 7200;
    let ext = b.external_invoice_at(Some(sats(10)), "old", past, 3600);
    assert_eq!(
        Bolt11::parse(ext.as_str()).unwrap().timestamp_secs(),
        i64::try_from(past).unwrap()
    );
    assert!(ext.is_expired_at(now_secs()));
    assert_eq!(
        b.pay(pay_invoice(&ext, sats(1))).await.unwrap(),
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
    // A fresh one with the same helper is payable.
    let fresh = b.external_invoice_at(Some(sats(10)), "new", past + 7200, 3600);
    assert!(matches!(
        b.pay(pay_invoice(&fresh, sats(1))).await.unwrap(),
        PayOutcome::Succeeded { .. }
    ));

    // Our own invoice with expiry 0 is expired at once: lookup says Canceled, paying fails.
    let mut req = new_invoice(Some(sats(10)), "short");
    req.expiry_secs = 0;
    let inv = b.create_invoice(req).await.unwrap();
    assert_eq!(
        b.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    assert!(matches!(
        b.pay_our_invoice(&inv, None),
        Err(LnError::Rejected(_))
    ));
    assert_eq!(
        b.pay(pay_invoice(&inv, sats(1))).await.unwrap(),
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
}

#[tokio::test]
async fn self_payment_settles_our_invoice() {
    let b = backend();
    let req = new_invoice(Some(sats(10)), "self");
    let preimage = req.preimage;
    let inv = b.create_invoice(req).await.unwrap();
    // Scripts are not consulted for self-payments.
    b.set_default_script(Script::Fail(FailureReason::Error));
    assert_eq!(
        b.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
    assert!(matches!(
        b.lookup_invoice(inv.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { .. })
    ));
    assert_eq!(b.events_len(), 1);
    // Idempotent: no second settlement.
    assert_eq!(
        b.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
    assert_eq!(b.events_len(), 1);
    assert_eq!(b.pay_count(inv.payment_hash()), 1);

    // A canceled own invoice fails.
    let inv = b
        .create_invoice(new_invoice(Some(sats(10)), "canceled"))
        .await
        .unwrap();
    b.cancel_invoice(inv.payment_hash()).await.unwrap();
    assert_eq!(
        b.pay(pay_invoice(&inv, Msat::ZERO)).await.unwrap(),
        PayOutcome::Failed(FailureReason::IncorrectPaymentDetails)
    );
}

#[tokio::test]
async fn keysend_to_self_appends_event() {
    let b = backend();
    let preimage = Preimage::random();
    let mut req = keysend(b.pubkey(), sats(21), preimage);
    let mut records = CustomRecords::default();
    records.0.insert(696_969, b"wal_abc".to_vec());
    if let PayTarget::Keysend { custom_records, .. } = &mut req.target {
        *custom_records = records.clone();
    }
    assert_eq!(
        b.pay(req).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO
        }
    );
    let events = b.events_after(0, 10, Duration::ZERO).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].kind,
        IncomingKind::KeysendReceived {
            payment_hash: preimage.hash(),
            preimage,
            amount_received: sats(21),
            custom_records: records,
            settled_at_secs: match &events[0].kind {
                IncomingKind::KeysendReceived {
                    settled_at_secs, ..
                } => *settled_at_secs,
                IncomingKind::InvoiceSettled { .. } => unreachable!(),
            },
        }
    );
}

#[tokio::test]
async fn keysend_out_follows_script() {
    let b = backend();
    let preimage = Preimage::random();
    let dest = NodePubkey::from_hex(&format!("02{}", "ab".repeat(32))).unwrap();
    b.script(
        preimage.hash(),
        Script::Succeed {
            fee: Msat::from_msat(10).unwrap(),
        },
    );
    assert_eq!(
        b.pay(keysend(dest, sats(5), preimage)).await.unwrap(),
        PayOutcome::Succeeded {
            preimage,
            fee: Msat::from_msat(10).unwrap()
        }
    );
    assert_eq!(b.events_len(), 0);
}

#[tokio::test]
async fn receive_keysend_appends_event() {
    let b = backend();
    let mut records = CustomRecords::default();
    records.0.insert(696_969, b"wal_x".to_vec());
    let hash = b.receive_keysend(sats(2), records.clone());
    let events = b.events_after(0, 10, Duration::ZERO).await.unwrap();
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
            assert_eq!(*amount_received, sats(2));
            assert_eq!(*custom_records, records);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn events_after_waits_then_returns_empty() {
    let b = backend();
    let started = Instant::now();
    let events = b
        .events_after(0, 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(events.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn events_after_wakes_on_new_event() {
    let b = Arc::new(backend());
    let task = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.events_after(0, 10, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let hash = b.receive_keysend(sats(1), CustomRecords::default());
    let events = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let events = events.unwrap();
    assert_eq!(events.len(), 1);
    assert!(matches!(
        &events[0].kind,
        IncomingKind::KeysendReceived { payment_hash, .. } if *payment_hash == hash
    ));
}

#[tokio::test]
async fn query_routes_knows_us_and_carol() {
    let b = backend();
    for dest in [b.pubkey(), b.external_pubkey()] {
        let routes = b.query_routes(dest, sats(10)).await.unwrap();
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!(r.total_amt, sats(10));
        assert_eq!(r.total_fees, Msat::ZERO);
        assert_eq!(r.total_time_lock, 144);
        assert_eq!(r.hops.len(), 1);
        assert_eq!(r.hops[0].pub_key, dest);
        assert_eq!(r.hops[0].chan_id, SCRIPTED_CHAN_ID);
        assert_eq!(r.hops[0].amt_to_forward, sats(10));
    }
    let stranger = NodePubkey::from_hex(&format!("03{}", "cd".repeat(32))).unwrap();
    assert!(b.query_routes(stranger, sats(10)).await.unwrap().is_empty());
}

// ------------------------------------------------------------------ persistence

fn open_at(path: &Path) -> ScriptedBackend {
    ScriptedBackend::open(Network::Regtest, [7u8; 32], path.to_path_buf()).unwrap()
}

#[tokio::test]
async fn persistent_node_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let fee = Msat::from_msat(1_100).unwrap();

    let b = open_at(&path);
    assert_eq!(b.state_path(), Some(path.as_path()));
    assert!(path.exists(), "open writes an empty state at once");
    b.set_default_script(Script::Succeed { fee });
    // Ours: one paid from outside, one open, one cancelled.
    let paid = b
        .create_invoice(new_invoice(Some(sats(10)), "paid"))
        .await
        .unwrap();
    let open_req = new_invoice(Some(sats(20)), "open");
    let open_preimage = open_req.preimage;
    let open = b.create_invoice(open_req).await.unwrap();
    let cancelled = b
        .create_invoice(new_invoice(Some(sats(30)), "x"))
        .await
        .unwrap();
    b.cancel_invoice(cancelled.payment_hash()).await.unwrap();
    b.pay_our_invoice(&paid, None).unwrap();
    let mut records = CustomRecords::default();
    records.0.insert(696_969, b"wal_x".to_vec());
    let ks = b.receive_keysend(sats(5), records.clone());
    // Outgoing: one succeeded by default, one in flight, one scripted for later, carol's
    // invoice not yet paid.
    let (done, done_preimage) = b.external_invoice(Some(sats(100)), "done", 600);
    b.pay(pay_invoice(&done, sats(5))).await.unwrap();
    let (pending, _) = b.external_invoice(Some(sats(100)), "pending", 600);
    b.script(pending.payment_hash(), Script::Unknown);
    assert_eq!(
        b.pay(pay_invoice(&pending, sats(5))).await.unwrap(),
        PayOutcome::InFlight
    );
    let (later, later_preimage) = b.external_invoice(Some(sats(100)), "later", 600);
    b.script(later.payment_hash(), Script::Fail(FailureReason::Timeout));
    let (unpaid, unpaid_preimage) = b.external_invoice(Some(sats(100)), "unpaid", 600);
    let events_before = b.events_after(0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(events_before.len(), 2);
    drop(b);

    let b = open_at(&path);
    // Invoices.
    assert!(matches!(
        b.lookup_invoice(paid.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { .. })
    ));
    assert_eq!(
        b.lookup_invoice(cancelled.payment_hash()).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    assert_eq!(
        b.lookup_invoice(open.payment_hash()).await.unwrap(),
        Some(InvoiceState::Open)
    );
    assert_eq!(b.pay_our_invoice(&open, None).unwrap(), open_preimage);
    assert!(b.pay_our_invoice(&paid, None).is_err(), "paid stays paid");
    // Events: the same stream, continued without gaps.
    let events = b.events_after(0, 100, Duration::ZERO).await.unwrap();
    assert_eq!(events[..2], events_before[..]);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].seq, 3);
    match &events[1].kind {
        IncomingKind::KeysendReceived {
            payment_hash,
            custom_records,
            ..
        } => {
            assert_eq!(*payment_hash, ks);
            assert_eq!(*custom_records, records);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Payments: the succeeded one is not sent again.
    let expected = PaymentLookup::Succeeded {
        preimage: done_preimage,
        fee,
    };
    assert_eq!(
        b.lookup_payment(done.payment_hash()).await.unwrap(),
        expected
    );
    b.pay(pay_invoice(&done, sats(5))).await.unwrap();
    assert_eq!(b.pay_count(done.payment_hash()), 1);
    // The in-flight one is still in flight and can be completed.
    assert_eq!(b.in_flight_payments(), vec![pending.payment_hash()]);
    assert_eq!(
        b.lookup_payment(pending.payment_hash()).await.unwrap(),
        PaymentLookup::InFlight
    );
    b.complete(pending.payment_hash(), Completion::Succeed { fee });
    assert!(matches!(
        b.lookup_payment(pending.payment_hash()).await.unwrap(),
        PaymentLookup::Succeeded { .. }
    ));
    // Scripts and carol's invoices survive.
    assert_eq!(
        b.pay(pay_invoice(&later, sats(5))).await.unwrap(),
        PayOutcome::Failed(FailureReason::Timeout)
    );
    assert_eq!(
        b.pay(pay_invoice(&unpaid, sats(5))).await.unwrap(),
        PayOutcome::Succeeded {
            preimage: unpaid_preimage,
            fee
        }
    );
    let _ = later_preimage;
    drop(b);

    // The completion above was persisted too.
    let b = open_at(&path);
    assert!(b.in_flight_payments().is_empty());
    assert_eq!(b.pay_count(unpaid.payment_hash()), 1);
    assert!(
        !path.with_extension("json.tmp").exists(),
        "no temporary file left behind"
    );
}

#[tokio::test]
async fn persistent_node_refuses_a_foreign_or_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.json");
    let b = open_at(&path);
    b.create_invoice(new_invoice(Some(sats(1)), "x"))
        .await
        .unwrap();
    drop(b);
    let err = ScriptedBackend::open(Network::Regtest, [8u8; 32], path.clone()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    std::fs::write(&path, b"{ not json").unwrap();
    let err = ScriptedBackend::open(Network::Regtest, [7u8; 32], path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn script_specs_parse() {
    let fee = |m| Msat::from_msat(m).unwrap();
    assert_eq!(
        "succeed:1100".parse::<Script>().unwrap(),
        Script::Succeed { fee: fee(1_100) }
    );
    assert_eq!(
        "succeed".parse::<Script>().unwrap(),
        Script::Succeed { fee: Msat::ZERO }
    );
    assert_eq!(
        "fail:NO_ROUTE".parse::<Script>().unwrap(),
        Script::Fail(FailureReason::NoRoute)
    );
    assert_eq!(
        "fail:FAILURE_REASON_TIMEOUT".parse::<Script>().unwrap(),
        Script::Fail(FailureReason::Timeout)
    );
    assert_eq!("unknown".parse::<Script>().unwrap(), Script::Unknown);
    assert_eq!(
        "pending:7".parse::<Script>().unwrap(),
        Script::PendingThenSucceed { fee: fee(7) }
    );
    assert_eq!(
        "transport:fail:error".parse::<Script>().unwrap(),
        Script::TransportError {
            then: Box::new(Script::Fail(FailureReason::Error))
        }
    );
    for bad in ["", "fail", "fail:NOPE", "succeed:-1", "unknown:1", "maybe"] {
        assert!(bad.parse::<Script>().is_err(), "{bad:?}");
    }
    assert_eq!(
        "succeed:5".parse::<Completion>().unwrap(),
        Completion::Succeed { fee: fee(5) }
    );
    assert!("unknown".parse::<Completion>().is_err());
}
