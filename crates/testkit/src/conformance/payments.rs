//! Scenarios about paying invoices: direct and routed payments, idempotency per hash, fee limits, refusals, unknown hashes and routes.

use super::*;

/// We pay alice's invoice over our direct channel: succeeded, no routing fee, the preimage
/// hashes to the payment hash, lookup agrees.
pub async fn pay_alice_direct<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(2000)?;
    let inv = h
        .devnet()
        .outside_invoice("alice", Some(amount), "conformance: to alice")
        .await
        .map_err(ctx("alice's invoice"))?;
    if h.distinct_peers() {
        ensure_eq!(
            inv.payee(),
            peer_pubkey(h, "alice").await?,
            "alice's invoice payee"
        );
    }
    let limit = sats(10)?;
    let out = pay(h, pay_bolt11(&inv, limit)?, SendPath::Direct).await?;
    let (preimage, fee) = check_success(
        &out,
        inv.payment_hash(),
        amount,
        limit,
        SendPath::Direct,
        "paying alice",
    )?;
    ensure_eq!(
        h.backend()
            .lookup_payment(inv.payment_hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded { preimage, fee },
        "lookup after paying alice"
    );
    check_sends(h, inv.payment_hash(), 1, "paying alice")
}

/// We pay carol's invoice through the hub: the fee is the hub's (> 0, within the limit), the
/// preimage is carol's, lookup agrees, and carol got exactly the amount.
pub async fn pay_carol_via_hub<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(10_000)?;
    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: to carol")
        .await
        .map_err(ctx("carol's invoice"))?;
    ensure_eq!(
        inv.payee(),
        peer_pubkey(h, "carol").await?,
        "carol's invoice payee"
    );
    let before = settled_balances(h).await?;
    let limit = sats(100)?;
    let out = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    let (preimage, fee) = check_success(
        &out,
        inv.payment_hash(),
        amount,
        limit,
        SendPath::ViaHub,
        "paying carol",
    )?;
    ensure_eq!(
        h.backend()
            .lookup_payment(inv.payment_hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded { preimage, fee },
        "lookup after paying carol"
    );
    check_sends(h, inv.payment_hash(), 1, "paying carol")?;
    if tracks_balances(&before) {
        // Carol got the amount, the hub earned the fee.
        let want = after_receiving(&before, "carol", amount.as_msat())?;
        let want = after_receiving(&want, "hub", fee.as_msat())?;
        expect_balances(h, &want, "carol received the amount, the hub the fee").await?;
    }
    Ok(())
}

/// Paying the same invoice twice sends once: the second call reports the first payment's
/// state, and nothing more leaves the node.
pub async fn pay_twice_is_idempotent<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(3000)?;
    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: twice")
        .await
        .map_err(ctx("carol's invoice"))?;
    let limit = sats(100)?;
    let first = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    check_success(
        &first,
        inv.payment_hash(),
        amount,
        limit,
        SendPath::ViaHub,
        "first payment",
    )?;
    let after_first = settled_balances(h).await?;
    let second = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    ensure_eq!(second, first, "second pay of the same hash");
    // A third attempt with another fee limit changes nothing either.
    let third = pay(h, pay_bolt11(&inv, sats(1)?)?, SendPath::ViaHub).await?;
    ensure_eq!(third, first, "third pay of the same hash");
    check_sends(h, inv.payment_hash(), 1, "paying twice")?;
    let lookup = h
        .backend()
        .lookup_payment(inv.payment_hash())
        .await
        .map_err(ctx("lookup_payment"))?;
    match (&first, &lookup) {
        (
            PayOutcome::Succeeded { preimage, fee },
            PaymentLookup::Succeeded {
                preimage: p2,
                fee: f2,
            },
        ) if preimage == p2 && fee == f2 => {}
        _ => return Err(format!("lookup {lookup:?} disagrees with {first:?}")),
    }
    tokio::time::sleep(QUIET).await;
    expect_balances(h, &after_first, "after paying the same invoice again").await
}

/// A fee limit below the hub's fee: `Failed(NoRoute)` for an invoice and for a keysend, the
/// lookup agrees, nothing left the node; after that definite failure the same invoice may be
/// paid again with a sufficient limit.
pub async fn fee_limit_too_low<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(1000)?;
    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: too cheap")
        .await
        .map_err(ctx("carol's invoice"))?;
    let hash = inv.payment_hash();
    let before = settled_balances(h).await?;
    let out = pay(h, pay_bolt11(&inv, Msat::ZERO)?, SendPath::ViaHub).await?;
    ensure_eq!(
        out,
        PayOutcome::Failed(FailureReason::NoRoute),
        "fee limit 0 via the hub"
    );
    ensure_eq!(
        h.backend()
            .lookup_payment(hash)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Failed(FailureReason::NoRoute),
        "lookup after fee limit 0"
    );
    // One msat short of the hub's fee, as a keysend.
    let carol = peer_pubkey(h, "carol").await?;
    let short = msat(hub_fee(amount)?.as_msat().saturating_sub(1))?;
    let (req, preimage) = keysend(carol, amount, CustomRecords::default(), short);
    let out = pay(h, req, SendPath::ViaHub).await?;
    ensure_eq!(
        out,
        PayOutcome::Failed(FailureReason::NoRoute),
        "keysend with a fee limit 1 msat below the hub's fee"
    );
    ensure_eq!(
        h.backend()
            .lookup_payment(preimage.hash())
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Failed(FailureReason::NoRoute),
        "lookup of the keysend"
    );
    expect_balances(h, &before, "nothing sent with a too low fee limit").await?;
    // A router that checks the fee limit before sending (CLN's xpay/askrene) sends nothing;
    // one that tries the route (LDK, LND) sends once and gets it back.
    let failed_sends = h.send_count(hash);
    if let Some(n) = failed_sends {
        ensure!(n <= 1, "the too-cheap payment was sent {n} times");
    }

    // After a definite failure, a new attempt is allowed.
    let limit = sats(10)?;
    let out = pay(h, pay_bolt11(&inv, limit)?, SendPath::ViaHub).await?;
    check_success(&out, hash, amount, limit, SendPath::ViaHub, "retry")?;
    check_sends(
        h,
        hash,
        failed_sends.unwrap_or(0) + 1,
        "failed then retried",
    )
}

/// More than our channels can carry: `Failed(InsufficientBalance | NoRoute)` for a keysend and
/// an invoice, the lookup agrees, nothing left the node.
pub async fn amount_too_large<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let amount = sats(TOO_LARGE_SATS)?;
    let carol = peer_pubkey(h, "carol").await?;
    let before = settled_balances(h).await?;
    let definite = |out: &PayOutcome| {
        matches!(
            out,
            PayOutcome::Failed(FailureReason::InsufficientBalance | FailureReason::NoRoute)
        )
    };

    let (req, preimage) = keysend(carol, amount, CustomRecords::default(), sats(100_000)?);
    let out = pay(h, req, SendPath::Unpayable).await?;
    ensure!(
        definite(&out),
        "keysend of {amount} msat: expected Failed(InsufficientBalance|NoRoute), got {out:?}"
    );
    let lookup = h
        .backend()
        .lookup_payment(preimage.hash())
        .await
        .map_err(ctx("lookup_payment"))?;
    ensure!(
        matches!(lookup, PaymentLookup::Failed(r) if PayOutcome::Failed(r) == out),
        "lookup {lookup:?} disagrees with {out:?}"
    );

    let inv = h
        .devnet()
        .outside_invoice("carol", Some(amount), "conformance: too large")
        .await
        .map_err(ctx("carol's invoice"))?;
    let out = pay(h, pay_bolt11(&inv, sats(100_000)?)?, SendPath::Unpayable).await?;
    ensure!(
        definite(&out),
        "invoice of {amount} msat: expected Failed(InsufficientBalance|NoRoute), got {out:?}"
    );
    let lookup = h
        .backend()
        .lookup_payment(inv.payment_hash())
        .await
        .map_err(ctx("lookup_payment"))?;
    ensure!(
        matches!(lookup, PaymentLookup::Failed(r) if PayOutcome::Failed(r) == out),
        "lookup {lookup:?} disagrees with {out:?}"
    );
    expect_balances(h, &before, "nothing sent for a too large amount").await
}

/// Hashes the node never saw: payment lookup `NotFound`, invoice lookup `None`, cancel is a
/// no-op.
pub async fn unknown_hash<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let unknown = Preimage::random().hash();
    ensure_eq!(
        b.lookup_payment(unknown)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::NotFound,
        "payment lookup of an unknown hash"
    );
    ensure_eq!(
        b.lookup_invoice(unknown).await.map_err(ctx("lookup"))?,
        None,
        "invoice lookup of an unknown hash"
    );
    b.cancel_invoice(unknown)
        .await
        .map_err(ctx("cancel unknown"))?;
    ensure_eq!(
        b.lookup_invoice(unknown).await.map_err(ctx("lookup"))?,
        None,
        "invoice lookup after cancelling an unknown hash"
    );
    ensure_eq!(
        b.lookup_payment(unknown)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::NotFound,
        "lookups create nothing"
    );
    Ok(())
}

/// Route queries: a route to carol ends at carol and adds up; a node nobody knows has none.
pub async fn query_routes<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let carol = peer_pubkey(h, "carol").await?;
    let amount = sats(1000)?;
    let routes = h
        .backend()
        .query_routes(carol, amount)
        .await
        .map_err(ctx("query_routes"))?;
    ensure!(!routes.is_empty(), "no route to carol");
    for r in &routes {
        let last = r.hops.last().ok_or("a route without hops")?;
        ensure_eq!(last.pub_key, carol, "last hop");
        ensure_eq!(last.amt_to_forward, amount, "amount delivered");
        ensure_eq!(
            r.total_amt.as_msat(),
            amount.as_msat().saturating_add(r.total_fees.as_msat()),
            "total_amt = amount + fees"
        );
        let hop_fees: u64 = r.hops.iter().map(|x| x.fee.as_msat()).sum();
        ensure_eq!(hop_fees, r.total_fees.as_msat(), "sum of hop fees");
        if h.distinct_peers() {
            ensure_eq!(r.hops.len(), 2, "hops to carol (via the hub)");
            ensure_eq!(r.hops[0].pub_key, peer_pubkey(h, "hub").await?, "first hop");
            ensure_eq!(r.total_fees, hub_fee(amount)?, "route fee");
        }
    }
    let stranger =
        NodePubkey::from_hex(&format!("02{}", "ab".repeat(32))).ok_or("bad stranger pubkey")?;
    let none = h
        .backend()
        .query_routes(stranger, amount)
        .await
        .map_err(ctx("query_routes"))?;
    ensure!(none.is_empty(), "routes to an unknown node: {none:?}");
    Ok(())
}
