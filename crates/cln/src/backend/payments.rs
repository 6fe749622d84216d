//! Paying bolt11 invoices and keysends ([`Payments`]), and what became of a payment.
//!
//! `pay` validates the target, serialises calls per payment hash, refuses to send again while
//! a payment of the hash is in flight or done (`listsendpays`), then runs `xpay` (or `pay`
//! before v24.11) in the background so a caller who stops waiting does not stop the command,
//! or hands keysends to [`super::keysend`]. CLN's error codes become Satchel's failure
//! reasons here, always after a fresh `listsendpays`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{OwnedMutexGuard, watch};
use tokio::time::Instant;

use satchel_domain::{Bolt11, FailureReason, Msat, PaymentHash, Preimage};
use satchel_lightning::{LnError, PayOutcome, PayRequest, PayTarget, PaymentLookup, Payments};

use super::{ClnBackend, RpcOutcome, ceil_secs, ln_error, lock, msat, parse};
use crate::rpc::{self, ClnMsat, ListPeerChannels, ListSendPays, PayResult, SendPay, XpayResult};
use crate::transport::RpcError;

/// `pay` may answer a little after `retry_for` (it waits for parts in flight).
const PAY_MARGIN: Duration = Duration::from_secs(5);
/// How long our connection waits for a `pay` beyond `retry_for` before dropping it (the
/// command carries on in `lightningd`; lookups then report it).
const PAY_RPC_GRACE: Duration = Duration::from_secs(600);
/// How many unsent failures are remembered (the map is cleared when it grows past this).
const MAX_UNSENT_FAILURES: usize = 100_000;

fn preimage_for(hash: PaymentHash, hex_str: Option<&str>) -> Result<Preimage, LnError> {
    let p = hex_str.and_then(Preimage::from_hex).ok_or_else(|| {
        LnError::Transport("payment complete without a valid preimage".to_owned())
    })?;
    if p.hash() != hash {
        return Err(LnError::Transport(
            "CLN reported a preimage that does not match the payment hash".to_owned(),
        ));
    }
    Ok(p)
}

/// What `listsendpays` says about a payment hash.
enum Summary {
    NotFound,
    InFlight,
    Succeeded { preimage: Preimage, fee: Msat },
    Failed(SendPay),
}

fn summarize(hash: PaymentHash, parts: &[SendPay]) -> Result<Summary, LnError> {
    if let Some(done) = parts.iter().find(|p| p.status == "complete") {
        let group: Vec<&SendPay> = parts.iter().filter(|p| p.groupid == done.groupid).collect();
        if group.iter().any(|p| p.status == "pending") {
            // Paid, but some parts still settling: the fee is not final yet.
            return Ok(Summary::InFlight);
        }
        let preimage = preimage_for(hash, done.payment_preimage.as_deref())?;
        let (mut sent, mut delivered) = (0u64, 0u64);
        for p in group.iter().filter(|p| p.status == "complete") {
            let s = p.amount_sent_msat.map_or(0, |m| m.0);
            sent = sent.saturating_add(s);
            delivered = delivered.saturating_add(p.amount_msat.map_or(s, |m| m.0));
        }
        return Ok(Summary::Succeeded {
            preimage,
            fee: msat(ClnMsat(sent.saturating_sub(delivered)))?,
        });
    }
    if parts.iter().any(|p| p.status == "pending") {
        return Ok(Summary::InFlight);
    }
    Ok(parts
        .iter()
        .filter(|p| p.status == "failed")
        .max_by_key(|p| p.id)
        .cloned()
        .map_or(Summary::NotFound, Summary::Failed))
}

fn pay_outcome(l: PaymentLookup) -> PayOutcome {
    match l {
        PaymentLookup::Succeeded { preimage, fee } => PayOutcome::Succeeded { preimage, fee },
        PaymentLookup::Failed(r) => PayOutcome::Failed(r),
        PaymentLookup::InFlight | PaymentLookup::NotFound => PayOutcome::InFlight,
    }
}

/// Holds the per-hash lock; removes the map entry when nobody else wants it.
struct HashGuard<'a> {
    map: &'a Mutex<HashMap<PaymentHash, Arc<tokio::sync::Mutex<()>>>>,
    hash: PaymentHash,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for HashGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = lock(self.map);
        if map
            .get(&self.hash)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.hash);
        }
    }
}

impl ClnBackend {
    async fn hash_lock(&self, hash: PaymentHash, deadline: Instant) -> Option<HashGuard<'_>> {
        let m = Arc::clone(lock(&self.hash_locks).entry(hash).or_default());
        let guard = tokio::time::timeout_at(deadline, m.lock_owned()).await.ok();
        let held = HashGuard {
            map: &self.hash_locks,
            hash,
            guard,
        };
        held.guard.is_some().then_some(held)
    }

    fn validate(&self, target: &PayTarget) -> Result<(), LnError> {
        match target {
            PayTarget::Bolt11 { invoice, amount } => {
                if invoice.network() != self.network {
                    return Err(LnError::Rejected(format!(
                        "invoice is for {}, this node runs on {}",
                        invoice.network().name(),
                        self.network.name()
                    )));
                }
                if amount.is_zero() {
                    return Err(LnError::Rejected("amount must be positive".to_owned()));
                }
                if invoice.amount().is_some_and(|a| a != *amount) {
                    return Err(LnError::Rejected(
                        "Core Lightning pays exactly the invoice amount".to_owned(),
                    ));
                }
            }
            PayTarget::Keysend {
                amount,
                custom_records,
                ..
            } => {
                satchel_lightning::check_keysend(*amount, custom_records)?;
            }
        }
        Ok(())
    }

    /// Starts `method` in the background; its outcome arrives on the receiver. The command
    /// keeps running if our caller stops waiting.
    fn spawn_rpc(
        &self,
        hash: PaymentHash,
        method: &'static str,
        params: Value,
        timeout: Duration,
    ) -> watch::Receiver<Option<RpcOutcome>> {
        let (tx, rx) = watch::channel(None);
        lock(&self.running).insert(hash, (method, rx.clone()));
        let rpc = Arc::clone(&self.rpc);
        let running = Arc::clone(&self.running);
        tokio::spawn(async move {
            let outcome = rpc.call(method, params, timeout).await;
            lock(&running).remove(&hash);
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    /// Waits for a background `pay`/`xpay` (`method`) until `deadline`, then interprets it.
    /// `None`: the node does not know `method` (nothing was sent).
    async fn await_pay(
        &self,
        hash: PaymentHash,
        amount: Msat,
        method: &str,
        mut rx: watch::Receiver<Option<RpcOutcome>>,
        deadline: Instant,
    ) -> Result<Option<PayOutcome>, LnError> {
        let outcome = loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                break o;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Ok(Some(PayOutcome::InFlight)),
                Ok(Err(_)) => {
                    // The task ended without a word (runtime shutting down).
                    return Ok(Some(pay_outcome(self.lookup_payment(hash).await?)));
                }
                Ok(Ok(())) => {}
            }
        };
        match outcome {
            Ok(v) if method == "xpay" => {
                // xpay answers only once the payment succeeded.
                let r: XpayResult = parse("xpay", v)?;
                Ok(Some(PayOutcome::Succeeded {
                    preimage: preimage_for(hash, Some(&r.payment_preimage))?,
                    fee: msat(ClnMsat(
                        r.amount_sent_msat.0.saturating_sub(r.amount_msat.0),
                    ))?,
                }))
            }
            Ok(v) => {
                let r: PayResult = parse("pay", v)?;
                if r.status == "complete" {
                    Ok(Some(PayOutcome::Succeeded {
                        preimage: preimage_for(hash, r.payment_preimage.as_deref())?,
                        fee: msat(ClnMsat(
                            r.amount_sent_msat.0.saturating_sub(r.amount_msat.0),
                        ))?,
                    }))
                } else {
                    Ok(Some(pay_outcome(self.lookup_payment(hash).await?)))
                }
            }
            Err(RpcError::Rpc { code, .. }) if code == rpc::JSONRPC2_METHOD_NOT_FOUND => {
                tracing::warn!(method, "Core Lightning does not know this payment command");
                self.forget_version();
                Ok(None)
            }
            Err(RpcError::Rpc { code, message, .. }) => self
                .classify_failure(hash, amount, method, code, &message)
                .await
                .map(Some),
            Err(e) => Err(ln_error(e)),
        }
    }

    /// A payment command (`method`) failed with `code`: what became of the payment,
    /// according to a fresh `listsendpays`.
    pub(super) async fn classify_failure(
        &self,
        hash: PaymentHash,
        amount: Msat,
        method: &str,
        code: i64,
        message: &str,
    ) -> Result<PayOutcome, LnError> {
        tracing::info!(payment_hash = %hash, method, code, message, "CLN payment command failed");
        let sent = match self.lookup_payment(hash).await? {
            PaymentLookup::Succeeded { preimage, fee } => {
                return Ok(PayOutcome::Succeeded { preimage, fee });
            }
            PaymentLookup::InFlight => return Ok(PayOutcome::InFlight),
            PaymentLookup::Failed(_) => true,
            PaymentLookup::NotFound => false,
        };
        let reason = match code {
            rpc::PAY_IN_PROGRESS => return Ok(PayOutcome::InFlight),
            // Paid already, yet `listsendpays` shows no success of ours: nothing was sent.
            rpc::PAY_RHASH_ALREADY_USED | rpc::PAY_INVOICE_ALREADY_PAID => {
                return Err(LnError::Rejected(format!("{message} (CLN error {code})")));
            }
            rpc::PAY_DESTINATION_PERM_FAIL | rpc::PAY_INVOICE_EXPIRED => {
                FailureReason::IncorrectPaymentDetails
            }
            rpc::PAY_TRY_OTHER_ROUTE
            | rpc::PAY_ROUTE_NOT_FOUND
            | rpc::PAY_ROUTE_TOO_EXPENSIVE
            | rpc::PAY_DESTINATION_CAPACITY => self.no_route_reason(amount).await,
            rpc::PAY_INSUFFICIENT_FUNDS => FailureReason::InsufficientBalance,
            // xpay ends every failure after an attempt with 209: "Timed out after after N
            // attempts" when `retry_for` ran out, "Failed after N attempts. … Then routing
            // failed" when no route is left.
            rpc::PAY_UNSPECIFIED_ERROR if method == "xpay" => {
                if message.starts_with("Timed out") {
                    FailureReason::Timeout
                } else if message.starts_with("Failed after") {
                    self.no_route_reason(amount).await
                } else {
                    FailureReason::Error
                }
            }
            rpc::PAY_STOPPED_RETRYING => {
                let m = message.to_ascii_lowercase();
                if ["timed out", "timeout", "deadline", "retry_for"]
                    .iter()
                    .any(|w| m.contains(w))
                {
                    FailureReason::Timeout
                } else {
                    self.no_route_reason(amount).await
                }
            }
            rpc::PAY_UNSPECIFIED_ERROR | rpc::PAY_UNPARSEABLE_ONION => FailureReason::Error,
            // Bad parameters and the like: nothing was sent.
            _ if !sent => return Err(LnError::Rejected(format!("{message} (CLN error {code})"))),
            _ => FailureReason::Error,
        };
        Ok(PayOutcome::Failed(reason))
    }

    /// LND says INSUFFICIENT_BALANCE when the amount exceeds what our channels can send at
    /// all; any other route failure is NO_ROUTE.
    pub(super) async fn no_route_reason(&self, amount: Msat) -> FailureReason {
        match self
            .call_as::<ListPeerChannels>("listpeerchannels", json!({}))
            .await
        {
            Ok(list) => {
                let spendable = list
                    .channels
                    .iter()
                    .filter(|c| c.state == "CHANNELD_NORMAL" && c.peer_connected != Some(false))
                    .map(|c| c.spendable_msat.map_or(0, |m| m.0))
                    .fold(0u64, u64::saturating_add);
                if amount.as_msat() > spendable {
                    FailureReason::InsufficientBalance
                } else {
                    FailureReason::NoRoute
                }
            }
            Err(_) => FailureReason::NoRoute,
        }
    }

    /// Why a failed part failed: `waitsendpay` on a finished part returns its stored error.
    async fn failure_reason(
        &self,
        hash: PaymentHash,
        part: &SendPay,
    ) -> Result<FailureReason, LnError> {
        let mut params = json!({ "payment_hash": hash.to_hex(), "timeout": 0 });
        if let Some(p) = part.partid {
            params["partid"] = json!(p);
        }
        if let Some(g) = part.groupid {
            params["groupid"] = json!(g);
        }
        Ok(
            match self
                .rpc
                .call("waitsendpay", params, self.request_timeout)
                .await
            {
                Err(RpcError::Rpc { code, .. }) => match code {
                    rpc::PAY_DESTINATION_PERM_FAIL | rpc::PAY_INVOICE_EXPIRED => {
                        FailureReason::IncorrectPaymentDetails
                    }
                    rpc::PAY_TRY_OTHER_ROUTE
                    | rpc::PAY_ROUTE_NOT_FOUND
                    | rpc::PAY_ROUTE_TOO_EXPENSIVE => FailureReason::NoRoute,
                    rpc::PAY_STOPPED_RETRYING => FailureReason::Timeout,
                    _ => FailureReason::Error,
                },
                Err(RpcError::Transport(m)) => return Err(LnError::Transport(m)),
                _ => FailureReason::Error,
            },
        )
    }

    /// Polls until the payment leaves the in-flight state or `deadline` passes.
    pub(super) async fn wait_settled(&self, hash: PaymentHash, deadline: Instant) -> PayOutcome {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.lookup_payment(hash).await {
                Ok(PaymentLookup::InFlight | PaymentLookup::NotFound) | Err(_) => {}
                Ok(done) => return pay_outcome(done),
            }
            let now = Instant::now();
            if now >= deadline {
                return PayOutcome::InFlight;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn pay_bolt11(
        &self,
        hash: PaymentHash,
        invoice: &Bolt11,
        amount: Msat,
        req: &PayRequest,
        deadline: Instant,
    ) -> Result<PayOutcome, LnError> {
        // Asked again once if the node does not know the command (upgraded meanwhile).
        for _ in 0..2 {
            // xpay where it exists (v24.11+): `pay` is deprecated from v26.06 and gone in
            // v27.03. Both take `maxfee` in msat and `retry_for` in seconds.
            let (method, invoice_param) = if self.version().await?.has_xpay() {
                ("xpay", "invstring")
            } else {
                ("pay", "bolt11")
            };
            let mut params = json!({
                invoice_param: invoice.as_str(),
                "maxfee": req.fee_limit.as_msat(),
                "retry_for": ceil_secs(req.timeout).max(1),
            });
            if invoice.amount().is_none() {
                params["amount_msat"] = json!(amount.as_msat());
            }
            let rx = self.spawn_rpc(hash, method, params, req.timeout + PAY_RPC_GRACE);
            if let Some(outcome) = self.await_pay(hash, amount, method, rx, deadline).await? {
                return Ok(outcome);
            }
        }
        Err(LnError::Rejected(
            "Core Lightning knows neither xpay nor pay".to_owned(),
        ))
    }

    pub(super) fn succeeded(
        hash: PaymentHash,
        part: &SendPay,
        amount: Msat,
    ) -> Result<PayOutcome, LnError> {
        let sent = part.amount_sent_msat.map_or(amount.as_msat(), |m| m.0);
        let delivered = part.amount_msat.map_or(amount.as_msat(), |m| m.0);
        Ok(PayOutcome::Succeeded {
            preimage: preimage_for(hash, part.payment_preimage.as_deref())?,
            fee: msat(ClnMsat(sent.saturating_sub(delivered)))?,
        })
    }
}

#[async_trait]
impl Payments for ClnBackend {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        self.validate(&req.target)?;
        let hash = req.target.payment_hash();
        let deadline = Instant::now() + req.timeout + PAY_MARGIN;
        let Some(_guard) = self.hash_lock(hash, deadline).await else {
            // Another call is paying this hash right now.
            return Ok(PayOutcome::InFlight);
        };
        // A `pay` of ours still running in lightningd (an earlier caller stopped waiting).
        let running = lock(&self.running).get(&hash).cloned();
        if let Some((method, rx)) = running {
            return self
                .await_pay(hash, req.target.amount(), method, rx, deadline)
                .await?
                .ok_or_else(|| {
                    LnError::Rejected(format!("Core Lightning does not know {method}"))
                });
        }
        // Idempotency: never send while a payment with this hash is in flight or done.
        match self.lookup_payment(hash).await? {
            PaymentLookup::Succeeded { preimage, fee } => {
                return Ok(PayOutcome::Succeeded { preimage, fee });
            }
            PaymentLookup::InFlight => return Ok(self.wait_settled(hash, deadline).await),
            PaymentLookup::Failed(_) | PaymentLookup::NotFound => {}
        }
        lock(&self.unsent_failures).remove(&hash);
        let outcome = match &req.target {
            PayTarget::Bolt11 { invoice, amount } => {
                self.pay_bolt11(hash, invoice, *amount, &req, deadline)
                    .await
            }
            PayTarget::Keysend { .. } => self.pay_keysend(&req, deadline).await,
        };
        if let Ok(PayOutcome::Failed(reason)) = &outcome {
            let mut unsent = lock(&self.unsent_failures);
            if unsent.len() >= MAX_UNSENT_FAILURES {
                unsent.clear();
            }
            unsent.insert(hash, *reason);
        }
        outcome
    }

    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        let list: ListSendPays = self
            .call_as("listsendpays", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        Ok(match summarize(hash, &list.payments)? {
            Summary::NotFound => match lock(&self.unsent_failures).get(&hash) {
                Some(reason) => PaymentLookup::Failed(*reason),
                None => PaymentLookup::NotFound,
            },
            Summary::InFlight => PaymentLookup::InFlight,
            Summary::Succeeded { preimage, fee } => PaymentLookup::Succeeded { preimage, fee },
            Summary::Failed(part) => PaymentLookup::Failed(self.failure_reason(hash, &part).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn part(
        id: u64,
        group: u64,
        status: &str,
        amount: u64,
        sent: u64,
        pre: Option<&Preimage>,
    ) -> SendPay {
        SendPay {
            id,
            groupid: Some(group),
            partid: Some(id),
            status: status.to_owned(),
            amount_msat: Some(ClnMsat(amount)),
            amount_sent_msat: Some(ClnMsat(sent)),
            payment_preimage: pre.map(Preimage::to_hex),
        }
    }

    #[test]
    fn summary_of_parts() {
        let pre = Preimage([9; 32]);
        let hash = pre.hash();
        assert!(matches!(summarize(hash, &[]).unwrap(), Summary::NotFound));
        let failed = part(1, 1, "failed", 1000, 1010, None);
        assert!(
            matches!(summarize(hash, std::slice::from_ref(&failed)).unwrap(), Summary::Failed(p) if p.id == 1)
        );
        let pending = part(2, 2, "pending", 1000, 1010, None);
        assert!(matches!(
            summarize(hash, &[failed.clone(), pending]).unwrap(),
            Summary::InFlight
        ));
        // Two parts of one group, both complete: fees add up.
        let a = part(3, 3, "complete", 600, 606, Some(&pre));
        let b = part(4, 3, "complete", 400, 405, Some(&pre));
        match summarize(hash, &[failed.clone(), a.clone(), b]).unwrap() {
            Summary::Succeeded { preimage, fee } => {
                assert_eq!(preimage, pre);
                assert_eq!(fee.as_msat(), 11);
            }
            _ => panic!("expected success"),
        }
        // A part of the succeeded group still pending: not final yet.
        let c = part(5, 3, "pending", 400, 405, None);
        assert!(matches!(
            summarize(hash, &[a, c]).unwrap(),
            Summary::InFlight
        ));
        // A preimage that does not match is refused.
        let wrong = part(6, 4, "complete", 1, 1, Some(&Preimage([1; 32])));
        assert!(summarize(hash, &[wrong]).is_err());
    }
}
