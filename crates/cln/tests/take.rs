#![allow(clippy::unwrap_used, clippy::expect_used)]

//! `take_for_internal` through CLN's `delinvoice … unpaid` (fake CLN on the LDK devnet): an
//! open invoice is taken and alice can no longer pay it; an invoice alice paid is reported
//! paid by the node (from `delinvoice`'s error, even before `listinvoices` shows it paid).

mod common;

use common::*;
use satchel_domain::Preimage;
use satchel_lightning::{DevnetControl, InternalTake, InvoiceState, Invoices, PayOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_for_internal_is_clns_delinvoice() {
    let env = Env::start().await;
    let cln = env.backend("socket").await;

    let open = cln
        .create_invoice(new_invoice(Some(sats(100)), "take me"))
        .await
        .unwrap();
    let hash = open.payment_hash();
    assert_eq!(
        cln.take_for_internal(hash).await.unwrap(),
        InternalTake::Taken
    );
    assert_eq!(
        cln.lookup_invoice(hash).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    let out = env.devnet.outside_pay("alice", &open, None).await;
    assert!(
        !matches!(out, Ok(PayOutcome::Succeeded { .. })),
        "a taken invoice was paid: {out:?}"
    );
    assert_eq!(
        cln.take_for_internal(hash).await.unwrap(),
        InternalTake::Taken
    );
    assert_eq!(
        cln.take_for_internal(Preimage::random().hash())
            .await
            .unwrap(),
        InternalTake::Taken
    );

    let paid = cln
        .create_invoice(new_invoice(Some(sats(100)), "alice pays"))
        .await
        .unwrap();
    let out = env.devnet.outside_pay("alice", &paid, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    assert_eq!(
        cln.take_for_internal(paid.payment_hash()).await.unwrap(),
        InternalTake::NodePaid
    );
    // Still there and paid: nothing was deleted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !matches!(
        cln.lookup_invoice(paid.payment_hash()).await.unwrap(),
        Some(InvoiceState::Settled { .. })
    ) {
        assert!(std::time::Instant::now() < deadline, "never shown paid");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env.stop().await;
}
