//! Scenarios about keysend: custom records out, the record types a node accepts, and the incoming keysend policy.

use super::*;

/// A keysend to carol (through the hub) with odd and even custom records: succeeded with our
/// preimage and the hub's fee; carol received the amount and exactly our records (no
/// preimage record); record types below 65536 or equal to 5482373484 are rejected before
/// anything is sent.
pub async fn keysend_out_with_custom_records<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let carol = peer_pubkey(h, "carol").await?;
    let recs = records(&[
        (65_537, "odd"),
        (65_538, "even"),
        (
            7_629_169,
            "{\"podcast\":\"conformance\",\"action\":\"boost\"}",
        ),
        (34_349_334, "hello carol"),
    ]);
    let amount = sats(100)?;
    let limit = sats(10)?;
    let (req, preimage) = keysend(carol, amount, recs.clone(), limit);
    let hash = preimage.hash();
    let out = pay(h, req, SendPath::ViaHub).await?;
    let (got_preimage, fee) = check_success(
        &out,
        hash,
        amount,
        limit,
        SendPath::ViaHub,
        "keysend to carol",
    )?;
    ensure!(
        got_preimage == preimage,
        "keysend success with another preimage"
    );
    ensure_eq!(
        h.backend()
            .lookup_payment(hash)
            .await
            .map_err(ctx("lookup_payment"))?,
        PaymentLookup::Succeeded {
            preimage: got_preimage,
            fee
        },
        "lookup after the keysend"
    );
    check_sends(h, hash, 1, "keysend to carol")?;
    if let Some((received, got_records, their_preimage)) = peer_keysend(h, "carol", hash).await? {
        ensure_eq!(received, amount, "carol received");
        ensure_eq!(got_records, recs, "carol's custom records");
        ensure!(their_preimage == preimage, "carol saw another preimage");
    }

    // Invalid record types: rejected, nothing recorded.
    for bad in [1u64, 65_535, KEYSEND_PREIMAGE_TLV] {
        let (req, preimage) = keysend(carol, amount, records(&[(bad, "x")]), limit);
        let res = h.backend().pay(req).await;
        ensure!(
            matches!(res, Err(LnError::Rejected(_))),
            "custom record type {bad}: expected Rejected, got {res:?}"
        );
        ensure_eq!(
            h.backend()
                .lookup_payment(preimage.hash())
                .await
                .map_err(ctx("lookup_payment"))?,
            PaymentLookup::NotFound,
            "rejected keysend with record type {bad}"
        );
    }
    Ok(())
}

/// Any custom record type from 65536 up (other than 5482373484) can be sent: a keysend to
/// carol carrying a spread of such types succeeds and arrives with all of them.
pub async fn keysend_custom_record_types<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let carol = peer_pubkey(h, "carol").await?;
    let types: [u64; 8] = [
        65_536,
        65_539,
        70_000,
        77_777,
        100_001,
        696_969,
        112_111_100,
        5_482_373_485,
    ];
    let pairs: Vec<(u64, String)> = types.iter().map(|t| (*t, format!("type {t}"))).collect();
    let recs = CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    );
    let amount = sats(50)?;
    let limit = sats(10)?;
    let (req, preimage) = keysend(carol, amount, recs.clone(), limit);
    let out = pay(h, req, SendPath::ViaHub).await?;
    check_success(
        &out,
        preimage.hash(),
        amount,
        limit,
        SendPath::ViaHub,
        &format!("keysend with record types {types:?}"),
    )?;
    if let Some((_, got, _)) = peer_keysend(h, "carol", preimage.hash()).await? {
        ensure_eq!(got, recs, "carol's custom records");
    }
    Ok(())
}

/// Alice keysends to us: with the policy accepting, one `KeysendReceived` event with her
/// preimage, the amount and her records, odd and even types (without 5482373484); with the
/// policy refusing, a node that enforces it fails the payment and records nothing.
pub async fn keysend_in_follows_policy<H: Harness + ?Sized>(h: &mut H) -> Result<(), String> {
    let me = our_pubkey(h).await?;
    h.set_policy(true);
    let b = h.backend();
    let cursor = last_seq(&*b).await?;
    // A Podcasting 2.0 boost (odd types) plus an even type.
    let recs = records(&[
        (65_538, "even"),
        (WALLET_TLV, "wal_conformance"),
        (7_629_169, "{\"podcast\":\"x\"}"),
    ]);
    let amount = sats(21)?;
    let (hash, out) = h
        .devnet()
        .outside_keysend("alice", me, amount, recs.clone())
        .await
        .map_err(ctx("alice keysends"))?;
    ensure!(
        matches!(out, PayOutcome::Succeeded { .. }),
        "accepted keysend from alice: {out:?}"
    );
    let events = expect_new_events(&*b, cursor, 1).await?;
    match &events[0].kind {
        IncomingKind::KeysendReceived {
            payment_hash,
            preimage,
            amount_received,
            custom_records,
            settled_at_secs,
        } => {
            ensure_eq!(*payment_hash, hash, "keysend hash");
            ensure!(
                sha256(preimage) == hash.0,
                "keysend preimage does not match"
            );
            ensure_eq!(*amount_received, amount, "keysend amount");
            ensure!(
                !custom_records.0.contains_key(&KEYSEND_PREIMAGE_TLV),
                "the preimage record must not be among the custom records"
            );
            ensure_eq!(*custom_records, recs, "keysend custom records");
            ensure!(*settled_at_secs > 0, "settled_at_secs {settled_at_secs}");
        }
        other => return Err(format!("expected KeysendReceived, got {other:?}")),
    }
    let seq = events[0].seq;

    h.set_policy(false);
    let refused = h
        .devnet()
        .outside_keysend("alice", me, amount, recs.clone())
        .await;
    h.set_policy(true);
    let (_, out) = refused.map_err(ctx("alice keysends (refused)"))?;
    if h.enforces_keysend_policy() {
        ensure!(
            matches!(out, PayOutcome::Failed(_)),
            "keysend refused by the policy: expected Failed, got {out:?}"
        );
        expect_no_new_events(&*b, seq, "refused keysend").await?;
    } else {
        ensure!(
            matches!(out, PayOutcome::Succeeded { .. }),
            "a backend without a policy accepts every keysend: {out:?}"
        );
        expect_new_events(&*b, seq, 1).await?;
    }
    Ok(())
}
