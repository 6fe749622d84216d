#![allow(clippy::unwrap_used, clippy::expect_used)]

//! `take_for_internal` on the embedded node: a mark in memory, judged under the lock an
//! incoming HTLC is judged under. A taken invoice fails alice's HTLC back; a released one is
//! payable again; one alice paid is reported paid; the batched cancel makes a take durable.

mod common;

use std::sync::Arc;

use common::*;
use satchel_domain::Preimage;
use satchel_ldk::Devnet;
use satchel_lightning::{
    DevnetControl, InternalTake, InvoiceState, Invoices, PayOutcome, TakeKind,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_for_internal_fails_htlcs_back_until_released() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let devnet = Arc::new(Devnet::start(dir.path()).await.unwrap());
    let node = devnet.node();
    assert_eq!(node.take_kind(), TakeKind::Provisional);

    // Taken by two payers, released by the one the ledger refused: still taken, alice's
    // payment is failed back, the invoice stays open (nothing written yet).
    let inv = node
        .create_invoice(new_invoice(Some(sats(100)), "take me"))
        .await
        .unwrap();
    let hash = inv.payment_hash();
    for _ in 0..2 {
        assert_eq!(
            node.take_for_internal(hash).await.unwrap(),
            InternalTake::Taken
        );
    }
    node.release_internal(hash).await;
    let out = devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Failed(_)), "{out:?}");
    assert_eq!(
        node.lookup_invoice(hash).await.unwrap(),
        Some(InvoiceState::Open)
    );

    // Released by the other payer too: payable from outside again, and once paid, the node
    // reports it paid.
    node.release_internal(hash).await;
    let out = devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    assert_eq!(
        node.take_for_internal(hash).await.unwrap(),
        InternalTake::NodePaid
    );

    // Taken, then cancelled in the records (the batch after the ledger booked it): refused
    // from outside, and still refused after the mark is gone.
    let inv = node
        .create_invoice(new_invoice(Some(sats(100)), "settled inside"))
        .await
        .unwrap();
    let hash = inv.payment_hash();
    assert_eq!(
        node.take_for_internal(hash).await.unwrap(),
        InternalTake::Taken
    );
    node.cancel_invoices(&[hash]).await.unwrap();
    node.release_internal(hash).await;
    assert_eq!(
        node.lookup_invoice(hash).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    let out = devnet.outside_pay("alice", &inv, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Failed(_)), "{out:?}");
    assert_eq!(
        node.take_for_internal(hash).await.unwrap(),
        InternalTake::Taken
    );

    // Unknown to the node: nothing to take.
    assert_eq!(
        node.take_for_internal(Preimage::random().hash())
            .await
            .unwrap(),
        InternalTake::Taken
    );
    devnet.stop().await.unwrap();
}
