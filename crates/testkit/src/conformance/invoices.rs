//! Scenarios about our invoices: identity, creation, lookup, outside payers, amountless and cancelled invoices.

use super::*;

/// Our node's identity and the peers: regtest, three named peers, none of them us; the peers
/// are distinct nodes where the harness says so, otherwise one node under three names.
pub async fn node_identity<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let info = h.backend().node_info().await.map_err(ctx("node_info"))?;
    ensure_eq!(info.network, Network::Regtest, "network");
    let again = h.backend().node_info().await.map_err(ctx("node_info"))?;
    ensure_eq!(again, info, "node_info is stable");
    let peers = h.devnet().peers().await.map_err(ctx("peers"))?;
    let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    for want in ["alice", "hub", "carol"] {
        ensure!(names.contains(&want), "peer {want} missing from {names:?}");
    }
    for p in &peers {
        ensure!(
            p.pubkey != info.pubkey,
            "peer {} has our own pubkey {}",
            p.name,
            info.pubkey
        );
    }
    let mut keys: Vec<NodePubkey> = peers.iter().map(|p| p.pubkey).collect();
    keys.sort();
    keys.dedup();
    if h.distinct_peers() {
        ensure_eq!(keys.len(), peers.len(), "distinct peer pubkeys");
    } else {
        ensure_eq!(keys.len(), 1, "one simulated outside node");
    }
    let unknown = h
        .devnet()
        .outside_invoice("mallory", Some(sats(1)?), "x")
        .await;
    ensure!(
        matches!(unknown, Err(LnError::Rejected(_))),
        "an unknown peer name must be Rejected, got {unknown:?}"
    );
    Ok(())
}

/// Invoices we issue: amount, description or description hash, payee = our node, lookup Open;
/// creating twice with one preimage gives one invoice; unknown hashes look up as `None`.
pub async fn invoice_create_and_lookup<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let me = our_pubkey(h).await?;

    let req = new_invoice(Some(sats(1234)?), "conformance: coffee");
    let hash = req.preimage.hash();
    let inv = b.create_invoice(req.clone()).await.map_err(ctx("create"))?;
    ensure!(
        inv.as_str().starts_with("lnbcrt"),
        "a regtest invoice starts with lnbcrt: {}",
        inv.as_str()
    );
    ensure_eq!(inv.network(), Network::Regtest, "invoice network");
    ensure_eq!(inv.payment_hash(), hash, "payment hash = sha256(preimage)");
    ensure_eq!(inv.amount(), Some(sats(1234)?), "invoice amount");
    ensure_eq!(
        inv.description(),
        Some("conformance: coffee".to_owned()),
        "description"
    );
    ensure_eq!(inv.description_hash(), None, "description hash");
    ensure_eq!(inv.payee(), me, "payee");
    ensure!(
        inv.expires_at_secs() - inv.timestamp_secs() == 3600,
        "expiry: expected 3600 s, got {}",
        inv.expires_at_secs() - inv.timestamp_secs()
    );
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Open),
        "new invoice state"
    );
    let twice = b.create_invoice(req).await;
    match twice {
        Ok(again) => ensure_eq!(again.as_str(), inv.as_str(), "creating twice"),
        Err(LnError::Rejected(_)) => {}
        Err(e) => return Err(format!("creating twice: {e}")),
    }

    let dh: [u8; 32] = Sha256::digest(b"{\"lnurl\":\"metadata\"}").into();
    let mut req = new_invoice(Some(sats(10)?), "ignored when a hash is given");
    req.description_hash = Some(dh);
    let inv = b.create_invoice(req).await.map_err(ctx("create"))?;
    ensure_eq!(inv.description_hash(), Some(dh), "description hash");
    ensure_eq!(inv.description(), None, "description with a hash");
    ensure_eq!(inv.payee(), me, "payee");

    let req = new_invoice(None, "amountless");
    let hash = req.preimage.hash();
    let inv = b.create_invoice(req).await.map_err(ctx("create"))?;
    ensure_eq!(inv.amount(), None, "amountless invoice amount");
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Open),
        "amountless invoice state"
    );

    let unknown = Preimage::random().hash();
    ensure_eq!(
        b.lookup_invoice(unknown).await.map_err(ctx("lookup"))?,
        None,
        "unknown invoice"
    );
    Ok(())
}

/// Alice pays our invoice: one `InvoiceSettled` event with the amount, lookup `Settled`, the
/// stream replays identically from 0 and from older cursors, a second payment is refused and
/// books nothing.
pub async fn outside_pays_our_invoice<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    let before_all = all_events(&*b).await?;
    let amount = sats(1000)?;
    let inv = b
        .create_invoice(new_invoice(Some(amount), "conformance: paid by alice"))
        .await
        .map_err(ctx("create"))?;
    let hash = inv.payment_hash();
    let out = h
        .devnet()
        .outside_pay("alice", &inv, None)
        .await
        .map_err(ctx("alice pays"))?;
    match &out {
        PayOutcome::Succeeded { preimage, .. } => {
            ensure!(
                sha256(preimage) == hash.0,
                "alice's preimage does not match"
            )
        }
        other => return Err(format!("alice paying our invoice: {other:?}")),
    }
    let events = expect_new_events(&*b, cursor, 1).await?;
    let seq = events[0].seq;
    ensure!(seq > cursor, "new event seq {seq} not after {cursor}");
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            settled_at_secs,
        } => {
            ensure_eq!(*payment_hash, hash, "settled hash");
            ensure_eq!(*amount_received, amount, "settled amount");
            ensure!(*settled_at_secs > 0, "settled_at_secs {settled_at_secs}");
        }
        other => return Err(format!("expected InvoiceSettled, got {other:?}")),
    }
    match b.lookup_invoice(hash).await.map_err(ctx("lookup"))? {
        Some(InvoiceState::Settled {
            amount_received, ..
        }) => ensure_eq!(amount_received, amount, "lookup amount_received"),
        other => {
            return Err(format!(
                "lookup after payment: expected Settled, got {other:?}"
            ));
        }
    }

    // Replays: from 0, from the old cursor, and nothing after the new event.
    let replay = all_events(&*b).await?;
    let mut want = before_all;
    want.extend(events.iter().cloned());
    ensure_eq!(replay, want, "replay from cursor 0");
    let from_cursor = b
        .events_after(cursor, 100, Duration::ZERO)
        .await
        .map_err(ctx("events_after"))?;
    ensure_eq!(from_cursor, events, "replay from the old cursor");
    let limited = b
        .events_after(0, 1, Duration::ZERO)
        .await
        .map_err(ctx("events_after"))?;
    ensure_eq!(limited.len(), 1, "limit 1");
    ensure_eq!(
        b.events_after(0, 0, Duration::ZERO)
            .await
            .map_err(ctx("events_after"))?
            .len(),
        0,
        "limit 0"
    );
    // An empty stream waits up to `wait`, then answers empty.
    let t = tokio::time::Instant::now();
    let none = b
        .events_after(seq, 10, Duration::from_millis(200))
        .await
        .map_err(ctx("events_after"))?;
    ensure!(none.is_empty(), "events after the last one: {none:?}");
    ensure!(
        t.elapsed() >= Duration::from_millis(150),
        "events_after returned after {:?} instead of waiting",
        t.elapsed()
    );

    // Paying it again (from another peer) is refused and books nothing.
    let again = h.devnet().outside_pay("hub", &inv, None).await;
    ensure!(
        !matches!(again, Ok(PayOutcome::Succeeded { .. })),
        "a settled invoice was paid again: {again:?}"
    );
    expect_no_new_events(&*b, seq, "second payment of a settled invoice").await?;
    Ok(())
}

/// An amountless invoice: refused without an amount, settled with the amount the payer chose.
pub async fn amountless_invoice<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    let inv = b
        .create_invoice(new_invoice(None, "conformance: amountless"))
        .await
        .map_err(ctx("create"))?;
    let no_amount = h.devnet().outside_pay("alice", &inv, None).await;
    ensure!(
        matches!(
            no_amount,
            Err(LnError::Rejected(_)) | Ok(PayOutcome::Failed(_))
        ),
        "paying an amountless invoice without an amount: {no_amount:?}"
    );
    let amount = sats(1234)?;
    let out = h
        .devnet()
        .outside_pay("alice", &inv, Some(amount))
        .await
        .map_err(ctx("alice pays"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "alice paying {amount} msat: {out:?}"
    );
    let events = expect_new_events(&*b, cursor, 1).await?;
    match &events[0].kind {
        IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            ..
        } => {
            ensure_eq!(*payment_hash, inv.payment_hash(), "settled hash");
            ensure_eq!(*amount_received, amount, "amount received");
        }
        other => return Err(format!("expected InvoiceSettled, got {other:?}")),
    }
    match b
        .lookup_invoice(inv.payment_hash())
        .await
        .map_err(ctx("lookup"))?
    {
        Some(InvoiceState::Settled {
            amount_received, ..
        }) => ensure_eq!(amount_received, amount, "lookup amount_received"),
        other => return Err(format!("expected Settled, got {other:?}")),
    }
    Ok(())
}

/// A cancelled invoice looks up `Canceled`, cannot be paid and books nothing; cancelling twice
/// or cancelling an unknown hash is fine.
pub async fn cancelled_invoice_is_unpayable<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    let inv = b
        .create_invoice(new_invoice(Some(sats(500)?), "conformance: cancel me"))
        .await
        .map_err(ctx("create"))?;
    let hash = inv.payment_hash();
    b.cancel_invoice(hash).await.map_err(ctx("cancel"))?;
    b.cancel_invoice(hash).await.map_err(ctx("cancel twice"))?;
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Canceled),
        "cancelled invoice state"
    );
    let out = h.devnet().outside_pay("alice", &inv, None).await;
    ensure!(
        !matches!(out, Ok(PayOutcome::Succeeded { .. })),
        "a cancelled invoice was paid: {out:?}"
    );
    expect_no_new_events(&*b, cursor, "payment of a cancelled invoice").await?;
    ensure_eq!(
        b.lookup_invoice(hash).await.map_err(ctx("lookup"))?,
        Some(InvoiceState::Canceled),
        "cancelled invoice state after the attempt"
    );
    b.cancel_invoice(Preimage::random().hash())
        .await
        .map_err(ctx("cancel unknown"))?;
    Ok(())
}
