//! The restart scenario: a backend that keeps state remembers everything across a restart in the middle of the work.

use super::*;

/// Restart in the middle: an invoice created before can be paid after and is reported once
/// (with the next seq); a payment made before still looks up `Succeeded` and is not sent again;
/// the events keep their seqs; incoming keysends work again.
pub async fn restart_midway<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    if !h.supports_restart() {
        return Err(format!("{} does not support restarts", h.name()));
    }
    h.set_policy(true);
    let b = h.backend();
    let open_amount = sats(2000)?;
    let open = b
        .create_invoice(new_invoice(
            Some(open_amount),
            "conformance: across a restart",
        ))
        .await
        .map_err(ctx("create"))?;
    let paid_amount = sats(3000)?;
    let paid = h
        .devnet()
        .outside_invoice(
            "carol",
            Some(paid_amount),
            "conformance: paid before restart",
        )
        .await
        .map_err(ctx("carol's invoice"))?;
    let limit = sats(100)?;
    let before_out = pay(h, pay_bolt11(&paid, limit)?, SendPath::ViaHub).await?;
    let (preimage, fee) = check_success(
        &before_out,
        paid.payment_hash(),
        paid_amount,
        limit,
        SendPath::ViaHub,
        "payment before the restart",
    )?;
    let events_before = all_events(&*b).await?;
    let last = events_before.last().map_or(0, |e| e.seq);
    drop(b);

    h.restart().await?;
    let b = h.backend();

    ensure_eq!(
        all_events(&*b).await?,
        events_before,
        "events after the restart"
    );
    ensure_eq!(
        b.lookup_payment(paid.payment_hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded { preimage, fee },
        "payment made before the restart"
    );
    let again = pay(h, pay_bolt11(&paid, limit)?, SendPath::ViaHub).await?;
    ensure_eq!(again, before_out, "paying it again after the restart");
    check_sends(h, paid.payment_hash(), 1, "paid before the restart")?;
    ensure_eq!(
        b.lookup_invoice(open.payment_hash())
            .await
            .map_err(ctx("lookup"))?,
        Some(InvoiceState::Open),
        "invoice created before the restart"
    );

    let out = h
        .devnet()
        .outside_pay("alice", &open, None)
        .await
        .map_err(ctx("alice pays after the restart"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "alice paying the invoice created before the restart: {out:?}"
    );
    let events = expect_new_events(&*b, last, 1).await?;
    ensure_eq!(
        events[0].seq,
        last + 1,
        "seq of the first event after the restart"
    );
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            ..
        } => {
            ensure_eq!(*payment_hash, open.payment_hash(), "settled hash");
            ensure_eq!(*amount_received, open_amount, "settled amount");
        }
        other => return Err(format!("expected InvoiceSettled, got {other:?}")),
    }
    let seq = events[0].seq;
    let twice = h.devnet().outside_pay("hub", &open, None).await;
    ensure!(
        !matches!(twice, Ok(PayOutcome::Succeeded { .. })),
        "the invoice was paid twice: {twice:?}"
    );
    expect_no_new_events(&*b, seq, "second payment after the restart").await?;

    // The policy set before the restart is still in force.
    let me = our_pubkey(h).await?;
    let (hash, out) = h
        .devnet()
        .outside_keysend("alice", me, sats(5)?, records(&[(WALLET_TLV, "wal_x")]))
        .await
        .map_err(ctx("keysend after the restart"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "keysend after the restart: {out:?}"
    );
    let events = expect_new_events(&*b, seq, 1).await?;
    ensure!(
        matches!(&events[0].kind, IncomingKind::KeysendReceived { payment_hash, .. } if *payment_hash == hash),
        "expected the keysend, got {:?}",
        events[0]
    );
    Ok(())
}
