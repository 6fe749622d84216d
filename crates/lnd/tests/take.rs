#![allow(clippy::unwrap_used, clippy::expect_used)]

//! `take_for_internal` through LND's `/v2/invoices/cancel` (fake LND on the LDK devnet): an
//! open invoice is taken and alice can no longer pay it; an invoice alice paid is reported
//! paid by the node, and is not taken.

mod common;

use common::*;
use satchel_domain::Preimage;
use satchel_lightning::{DevnetControl, InternalTake, InvoiceState, Invoices, PayOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_for_internal_is_lnds_cancel() {
    let env = Env::start().await;
    let lnd = &env.lnd;

    let open = lnd
        .create_invoice(new_invoice(Some(sats(100)), "take me"))
        .await
        .unwrap();
    let hash = open.payment_hash();
    assert_eq!(
        lnd.take_for_internal(hash).await.unwrap(),
        InternalTake::Taken
    );
    assert_eq!(
        lnd.lookup_invoice(hash).await.unwrap(),
        Some(InvoiceState::Canceled)
    );
    let out = env.devnet.outside_pay("alice", &open, None).await;
    assert!(
        !matches!(out, Ok(PayOutcome::Succeeded { .. })),
        "a taken invoice was paid: {out:?}"
    );
    // Taking twice, or an unknown invoice: taken (the node will not be paid for it).
    assert_eq!(
        lnd.take_for_internal(hash).await.unwrap(),
        InternalTake::Taken
    );
    assert_eq!(
        lnd.take_for_internal(Preimage::random().hash())
            .await
            .unwrap(),
        InternalTake::Taken
    );

    // Paid by alice: the node says so at once (before the settlement reaches the invoice list
    // LND shows), and the invoice stays paid.
    let paid = lnd
        .create_invoice(new_invoice(Some(sats(100)), "alice pays"))
        .await
        .unwrap();
    let out = env.devnet.outside_pay("alice", &paid, None).await.unwrap();
    assert!(matches!(out, PayOutcome::Succeeded { .. }), "{out:?}");
    assert_eq!(
        lnd.take_for_internal(paid.payment_hash()).await.unwrap(),
        InternalTake::NodePaid
    );
    eventually(std::time::Duration::from_secs(10), || async {
        matches!(
            lnd.lookup_invoice(paid.payment_hash()).await.unwrap(),
            Some(InvoiceState::Settled { .. })
        )
        .then_some(())
    })
    .await;
    env.stop().await;
}
