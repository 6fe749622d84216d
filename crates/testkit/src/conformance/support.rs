//! Helpers the scenarios share: assertions that return `Err` instead of panicking, amounts,
//! requests, and waiting for events and balances.

#![allow(unused_macros)]

use super::*;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($msg:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            let what = format!($($msg)+);
            return Err(format!("{what}: expected {want:?}, got {got:?}"));
        }
    }};
}

pub(super) fn msat(n: u64) -> Result<Msat, String> {
    Msat::from_msat(n).map_err(|e| format!("bad amount {n} msat: {e}"))
}

pub(super) fn sats(n: u64) -> Result<Msat, String> {
    Msat::from_sats(n).map_err(|e| format!("bad amount {n} sat: {e}"))
}

pub(super) fn ctx(what: &'static str) -> impl FnOnce(LnError) -> String {
    move |e| format!("{what}: {e}")
}

pub(super) fn sha256(preimage: &Preimage) -> [u8; 32] {
    Sha256::digest(preimage.0).into()
}

pub(super) fn new_invoice(amount: Option<Msat>, memo: &str) -> NewInvoice {
    NewInvoice {
        amount,
        memo: memo.to_owned(),
        description_hash: None,
        expiry_secs: 3600,
        preimage: Preimage::random(),
    }
}

pub(super) fn pay_bolt11(invoice: &Bolt11, fee_limit: Msat) -> Result<PayRequest, String> {
    let amount = invoice
        .amount()
        .ok_or("the suite pays only invoices with an amount")?;
    Ok(PayRequest {
        target: PayTarget::Bolt11 {
            invoice: invoice.clone(),
            amount,
        },
        fee_limit,
        timeout: PAY_TIMEOUT,
    })
}

pub(super) fn keysend(
    dest: NodePubkey,
    amount: Msat,
    records: CustomRecords,
    fee_limit: Msat,
) -> (PayRequest, Preimage) {
    let preimage = Preimage::random();
    (
        PayRequest {
            target: PayTarget::Keysend {
                dest,
                amount,
                preimage,
                custom_records: records,
            },
            fee_limit,
            timeout: PAY_TIMEOUT,
        },
        preimage,
    )
}

pub(super) fn records(pairs: &[(u64, &str)]) -> CustomRecords {
    CustomRecords(
        pairs
            .iter()
            .map(|(t, v)| (*t, v.as_bytes().to_vec()))
            .collect(),
    )
}

/// Pays (after telling the harness where the payment goes).
pub(super) async fn pay<H: Harness + ?Sized>(
    h: &H,
    req: PayRequest,
    path: SendPath,
) -> Result<PayOutcome, String> {
    h.before_send(req.target.payment_hash(), req.target.amount(), path);
    h.backend().pay(req).await.map_err(ctx("pay"))
}

/// Checks a success: the preimage proves payment and the fee is what the path costs and within
/// the limit. Returns the fee.
pub(super) fn check_success(
    outcome: &PayOutcome,
    hash: PaymentHash,
    amount: Msat,
    fee_limit: Msat,
    path: SendPath,
    what: &str,
) -> Result<(Preimage, Msat), String> {
    let PayOutcome::Succeeded { preimage, fee } = outcome else {
        return Err(format!("{what}: expected Succeeded, got {outcome:?}"));
    };
    ensure!(
        sha256(preimage) == hash.0,
        "{what}: sha256(preimage) != payment hash {hash}"
    );
    ensure!(
        *fee <= fee_limit,
        "{what}: fee {fee} msat exceeds the limit {fee_limit} msat"
    );
    if let Some(expected) = path.fee(amount)? {
        ensure_eq!(*fee, expected, "{what}: routing fee");
    }
    if path == SendPath::ViaHub {
        ensure!(
            !fee.is_zero(),
            "{what}: a payment through the hub paid no fee"
        );
    }
    Ok((*preimage, *fee))
}

pub(super) async fn our_pubkey<H: Harness + ?Sized>(h: &H) -> Result<NodePubkey, String> {
    Ok(h.backend()
        .node_info()
        .await
        .map_err(ctx("node_info"))?
        .pubkey)
}

pub(super) async fn peer_pubkey<H: Harness + ?Sized>(
    h: &H,
    name: &str,
) -> Result<NodePubkey, String> {
    h.devnet()
        .peers()
        .await
        .map_err(ctx("peers"))?
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.pubkey)
        .ok_or_else(|| format!("the devnet has no peer {name:?}"))
}

/// Every event of the backend (or of a peer), oldest first.
pub(super) async fn all_events(b: &dyn InvoiceEvents) -> Result<Vec<IncomingEvent>, String> {
    let mut out: Vec<IncomingEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = b
            .events_after(after, 500, Duration::ZERO)
            .await
            .map_err(ctx("events_after"))?;
        if page.is_empty() {
            return Ok(out);
        }
        for e in page {
            ensure!(
                e.seq > out.last().map_or(0, |l| l.seq),
                "event seqs not strictly increasing: {} after {:?}",
                e.seq,
                out.last().map(|l| l.seq)
            );
            out.push(e);
        }
    }
}

pub(super) async fn last_seq(b: &dyn InvoiceEvents) -> Result<u64, String> {
    Ok(all_events(b).await?.last().map_or(0, |e| e.seq))
}

/// Waits until at least `n` events exist after `after`; returns exactly those (fails if more
/// arrive within a short quiet period).
pub(super) async fn expect_new_events(
    b: &dyn LightningBackend,
    after: u64,
    n: usize,
) -> Result<Vec<IncomingEvent>, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!(
                "expected {n} new event(s) after seq {after}, got {}: {got:?}",
                got.len()
            ));
        }
        got = b
            .events_after(after, 100, deadline - now)
            .await
            .map_err(ctx("events_after"))?;
    }
    tokio::time::sleep(QUIET).await;
    let again = b
        .events_after(after, 100, Duration::ZERO)
        .await
        .map_err(ctx("events_after"))?;
    ensure!(
        again.len() == n,
        "expected exactly {n} new event(s) after seq {after}, got {}: {again:?}",
        again.len()
    );
    ensure_eq!(again, got, "events after seq {after} changed between reads");
    Ok(again)
}

/// Watches for a short while that no event appears after `after`.
pub(super) async fn expect_no_new_events(
    b: &dyn LightningBackend,
    after: u64,
    what: &str,
) -> Result<(), String> {
    let got = b
        .events_after(after, 100, QUIET)
        .await
        .map_err(ctx("events_after"))?;
    ensure!(
        got.is_empty(),
        "{what}: expected no new event after seq {after}, got {got:?}"
    );
    Ok(())
}

/// The peers' channel balances: (name, outbound msat, inbound msat).
pub(super) type Balances = Vec<(String, u64, u64)>;

pub(super) async fn peer_balances<H: Harness + ?Sized>(h: &H) -> Result<Balances, String> {
    Ok(h.devnet()
        .peers()
        .await
        .map_err(ctx("peers"))?
        .into_iter()
        .map(|p| (p.name, p.outbound_msat, p.inbound_msat))
        .collect())
}

/// Peer balances once they stopped moving (HTLCs of earlier payments fully resolved).
pub(super) async fn settled_balances<H: Harness + ?Sized>(h: &H) -> Result<Balances, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = peer_balances(h).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = peer_balances(h).await?;
        if now == last {
            return Ok(now);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "peer balances never settled: {last:?} then {now:?}"
            ));
        }
        last = now;
    }
}

/// Waits until the peer balances equal `want`.
pub(super) async fn expect_balances<H: Harness + ?Sized>(
    h: &H,
    want: &Balances,
    what: &str,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = peer_balances(h).await?;
        if &now == want {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{what}: peer balances expected {want:?}, got {now:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the outside world reports channel balances at all.
pub(super) fn tracks_balances(b: &Balances) -> bool {
    b.iter().any(|(_, out, inb)| *out > 0 || *inb > 0)
}

/// `b` with peer `name`'s outbound raised and inbound lowered by `received` msat.
pub(super) fn after_receiving(b: &Balances, name: &str, received: u64) -> Result<Balances, String> {
    let mut out = b.clone();
    let entry = out
        .iter_mut()
        .find(|(n, _, _)| n == name)
        .ok_or_else(|| format!("no balances for peer {name:?}"))?;
    entry.1 = entry.1.checked_add(received).ok_or("balance overflow")?;
    entry.2 = entry.2.checked_sub(received).ok_or("balance underflow")?;
    Ok(out)
}

pub(super) fn check_sends<H: Harness + ?Sized>(
    h: &H,
    hash: PaymentHash,
    want: u64,
    what: &str,
) -> Result<(), String> {
    if let Some(n) = h.send_count(hash) {
        ensure_eq!(n, want, "{what}: times the payment was sent");
    }
    Ok(())
}

/// The KeysendReceived event of `hash` at peer `name`, if the harness can observe the peer.
pub(super) async fn peer_keysend<H: Harness + ?Sized>(
    h: &H,
    name: &str,
    hash: PaymentHash,
) -> Result<Option<(Msat, CustomRecords, Preimage)>, String> {
    let Some(events) = h.peer_events(name) else {
        return Ok(None);
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut after = 0;
        loop {
            let page = events
                .events_after(after, 500, Duration::ZERO)
                .await
                .map_err(ctx("peer events_after"))?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in page {
                if let IncomingKind::KeysendReceived {
                    payment_hash,
                    preimage,
                    amount_received,
                    custom_records,
                    ..
                } = e.kind
                    && payment_hash == hash
                {
                    return Ok(Some((amount_received, custom_records, preimage)));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{name} never received the keysend {hash}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
