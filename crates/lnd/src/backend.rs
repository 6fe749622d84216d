//! Satchel's backend traits over LND's REST API.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use satchel_domain::{Bolt11, KEYSEND_PREIMAGE_TLV, Msat, NodePubkey, PaymentHash, now_secs};
use satchel_lightning::{
    ChannelInfo, ChannelState, IncomingEvent, InternalTake, InvoiceEvents, InvoiceState, Invoices,
    LnError, NewInvoice, NodeInfo, NodeInfoData, NodeStats, NodeStatus, PayOutcome, PayRequest,
    PayTarget, PaymentLookup, Payments, Route, RouteHop, Routes,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::LndRest;
use crate::rest::{CallError, LndStatus, UNARY_TIMEOUT, code};
use crate::wire::{
    AddInvoiceResponse, Channel, Invoice, ListChannelsResponse, Payment, PendingChannel,
    PendingChannelsResponse, QueryRoutesResponse, b64, b64url, payment_state,
};

/// Final CLTV delta of our keysends (LND's default for invoices is 80; keysend senders commonly
/// use 40).
pub(crate) const KEYSEND_FINAL_CLTV_DELTA: u32 = 40;
/// How long `pay` reads LND's answer beyond the payment timeout it gave LND.
const PAY_MARGIN: Duration = Duration::from_secs(3);
/// The lookup `pay` makes when its deadline passes.
const LATE_LOOKUP: Duration = Duration::from_secs(3);
/// Fee ceiling for route queries (they have no fee limit of their own): the amount, but at
/// least this.
const ROUTE_FEE_FLOOR_MSAT: u64 = 100_000;

/// Every error of `pay` is "unknown outcome" unless proven otherwise.
fn unknown(e: CallError) -> LnError {
    match e.into_ln() {
        LnError::Rejected(m) => LnError::Transport(m),
        other => other,
    }
}

fn is_invoice_not_found(s: &LndStatus) -> bool {
    s.code == code::NOT_FOUND
        || s.message_has("unable to locate invoice")
        || s.message_has("no existing invoices")
}

fn is_payment_not_found(s: &LndStatus) -> bool {
    !s.is_auth()
        && (s.code == code::NOT_FOUND
            || s.message_has("payment isn't initiated")
            || s.message_has("payment not initiated"))
}

/// LND refused a send because a payment with this hash is in flight or succeeded.
fn is_duplicate_payment(s: &LndStatus) -> bool {
    s.code == code::ALREADY_EXISTS
        || s.message_has("already paid")
        || s.message_has("in transition")
        || s.message_has("payment already exists")
        || s.message_has("already succeeded")
}

fn outcome_of(l: PaymentLookup) -> Option<PayOutcome> {
    match l {
        PaymentLookup::Succeeded { preimage, fee } => Some(PayOutcome::Succeeded { preimage, fee }),
        PaymentLookup::Failed(r) => Some(PayOutcome::Failed(r)),
        PaymentLookup::InFlight | PaymentLookup::NotFound => None,
    }
}

/// An invoice's state in Satchel's words. An `OPEN` invoice past its expiry is reported
/// cancelled: LND refuses HTLCs for it and its expiry watcher cancels it shortly after.
pub(crate) fn invoice_state(inv: &Invoice, now: i64) -> InvoiceState {
    match inv.state.as_str() {
        "SETTLED" => InvoiceState::Settled {
            amount_received: Msat::from_msat(inv.amt_paid_msat).unwrap_or(Msat::ZERO),
            settled_at_secs: inv.settle_date,
        },
        "CANCELED" => InvoiceState::Canceled,
        "OPEN" if inv.expiry > 0 && now >= inv.creation_date.saturating_add(inv.expiry) => {
            InvoiceState::Canceled
        }
        // OPEN, ACCEPTED (HTLCs held, not settled yet).
        _ => InvoiceState::Open,
    }
}

impl LndRest {
    /// Rejections that happen before LND is asked.
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
                match invoice.amount() {
                    Some(a) if *amount < a => {
                        return Err(LnError::Rejected(
                            "amount below the invoice amount".to_owned(),
                        ));
                    }
                    Some(a) if *amount > a => {
                        return Err(LnError::Rejected(
                            "LND pays exactly the amount of an invoice that has one".to_owned(),
                        ));
                    }
                    _ => {}
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

    /// `routerrpc.SendPaymentRequest` for `req`.
    pub(crate) fn send_body(req: &PayRequest) -> Value {
        let timeout_secs = req
            .timeout
            .as_secs()
            .saturating_add(u64::from(req.timeout.subsec_nanos() > 0))
            .clamp(1, i32::MAX as u64);
        let mut body = json!({
            "fee_limit_msat": req.fee_limit.as_msat().to_string(),
            "timeout_seconds": timeout_secs,
            "allow_self_payment": true,
            "no_inflight_updates": true,
        });
        match &req.target {
            PayTarget::Bolt11 { invoice, amount } => {
                body["payment_request"] = json!(invoice.as_str());
                if invoice.amount().is_none() {
                    body["amt_msat"] = json!(amount.as_msat().to_string());
                }
            }
            PayTarget::Keysend {
                dest,
                amount,
                preimage,
                custom_records,
            } => {
                let mut records = serde_json::Map::new();
                for (t, v) in &custom_records.0 {
                    records.insert(t.to_string(), json!(b64(v)));
                }
                records.insert(KEYSEND_PREIMAGE_TLV.to_string(), json!(b64(&preimage.0)));
                body["dest"] = json!(b64(&dest.0));
                body["amt_msat"] = json!(amount.as_msat().to_string());
                body["payment_hash"] = json!(b64(&preimage.hash().0));
                body["final_cltv_delta"] = json!(KEYSEND_FINAL_CLTV_DELTA);
                body["dest_custom_records"] = Value::Object(records);
            }
        }
        body
    }

    /// Reads a payment stream until a final state; `Ok(None)` if the stream ended without one.
    async fn final_state(
        mut stream: crate::rest::NdJson,
        hash: PaymentHash,
    ) -> Result<Option<PayOutcome>, CallError> {
        while let Some(p) = stream.next::<Payment>().await? {
            if let Some(o) = outcome_of(payment_state(&p, hash).map_err(CallError::Transport)?) {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    async fn send_and_follow(
        &self,
        body: &Value,
        hash: PaymentHash,
    ) -> Result<PayOutcome, CallError> {
        let stream = self
            .rest
            .stream(Method::POST, "/v2/router/send", Some(body))
            .await?;
        Self::final_state(stream, hash).await?.ok_or_else(|| {
            CallError::Transport("LND ended the payment stream without a final state".to_owned())
        })
    }

    /// The payment hash as URL-safe base64, its padding percent-encoded.
    fn lookup_invoice_path(hash: PaymentHash) -> String {
        format!(
            "/v2/invoices/lookup?payment_hash={}",
            b64url(&hash.0).replace('=', "%3D")
        )
    }

    fn track_path(hash: PaymentHash, no_inflight_updates: bool) -> String {
        format!(
            "/v2/router/track/{}?no_inflight_updates={no_inflight_updates}",
            b64url(&hash.0)
        )
    }

    /// Follows an existing payment until it is final or `deadline` passes.
    async fn track_until(
        &self,
        hash: PaymentHash,
        deadline: Instant,
    ) -> Result<PayOutcome, LnError> {
        let follow = async {
            let stream = self
                .rest
                .stream(Method::GET, &Self::track_path(hash, true), None)
                .await?;
            Self::final_state(stream, hash).await
        };
        match tokio::time::timeout_at(deadline, follow).await {
            Err(_) => Ok(PayOutcome::InFlight),
            Ok(Ok(Some(o))) => Ok(o),
            Ok(Ok(None)) => Err(LnError::Transport(
                "LND ended the payment stream without a final state".to_owned(),
            )),
            Ok(Err(CallError::Lnd(s))) if is_payment_not_found(&s) => Err(LnError::Transport(
                "LND refused a second send of this payment but cannot track it".to_owned(),
            )),
            Ok(Err(e)) => Err(unknown(e)),
        }
    }

    /// LND answered the send with an error: decide what it means.
    async fn after_send_error(
        &self,
        hash: PaymentHash,
        status: LndStatus,
        deadline: Instant,
    ) -> Result<PayOutcome, LnError> {
        if status.is_auth() || status.is_unavailable() {
            return Err(CallError::Lnd(status).into_ln());
        }
        if is_duplicate_payment(&status) {
            // Idempotency: a payment with this hash is in flight or done; never send again,
            // report it.
            return self.track_until(hash, deadline).await;
        }
        // LND refused before initiating (invalid or expired invoice, bad parameters...). Only if
        // LND has no payment with this hash is that a clean rejection; otherwise an earlier
        // attempt's state is the truth.
        match self.lookup_payment(hash).await {
            Ok(PaymentLookup::NotFound) => Err(LnError::Rejected(status.message)),
            Ok(PaymentLookup::InFlight) => Ok(PayOutcome::InFlight),
            Ok(PaymentLookup::Succeeded { preimage, fee }) => {
                Ok(PayOutcome::Succeeded { preimage, fee })
            }
            Ok(PaymentLookup::Failed(r)) => Ok(PayOutcome::Failed(r)),
            Err(e) => Err(LnError::Transport(format!(
                "LND refused the payment ({}) and the lookup failed: {e}",
                status.message
            ))),
        }
    }

    /// `GET /v2/invoices/lookup?payment_hash=…` (`LookupInvoiceV2`, LND 0.16+; the hex path
    /// parameter of `GET /v1/invoice/{r_hash_str}` is deprecated).
    async fn fetch_invoice(&self, hash: PaymentHash) -> Result<Option<Invoice>, CallError> {
        match self
            .rest
            .call::<Invoice>(Method::GET, &Self::lookup_invoice_path(hash), None)
            .await
        {
            Ok(inv) => Ok(Some(inv)),
            Err(CallError::Lnd(s)) if is_invoice_not_found(&s) && !s.is_auth() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn bolt11_of(payment_request: &str, hash: PaymentHash) -> Result<Bolt11, LnError> {
    let bolt11 = Bolt11::parse(payment_request)
        .map_err(|e| LnError::Transport(format!("LND returned an invalid invoice: {e}")))?;
    if bolt11.payment_hash() != hash {
        return Err(LnError::Transport(
            "LND returned an invoice for another payment hash".to_owned(),
        ));
    }
    Ok(bolt11)
}

/// Whole sats less a reserve, as msat (what can move over the channel now; LND reports no
/// finer figure).
fn spendable_msat(balance_sat: u64, reserve_sat: u64) -> u64 {
    balance_sat.saturating_sub(reserve_sat).saturating_mul(1000)
}

fn peer_of(hex: &str) -> Result<NodePubkey, LnError> {
    NodePubkey::from_hex(hex)
        .ok_or_else(|| LnError::Transport(format!("LND channel: bad peer pubkey {hex:?}")))
}

/// An open channel (`lnrpc.Channel`) for the operator.
pub(crate) fn open_channel_info(c: &Channel) -> Result<ChannelInfo, LnError> {
    let reserve =
        |x: &Option<crate::wire::ChannelConstraints>| x.as_ref().map_or(0, |k| k.chan_reserve_sat);
    Ok(ChannelInfo {
        channel_id: c.channel_point.clone(),
        short_channel_id: (c.chan_id != 0).then_some(c.chan_id),
        peer: peer_of(&c.remote_pubkey)?,
        capacity_sats: c.capacity,
        local_balance_msat: spendable_msat(c.local_balance, reserve(&c.local_constraints)),
        remote_balance_msat: spendable_msat(c.remote_balance, reserve(&c.remote_constraints)),
        state: if c.active {
            ChannelState::Active
        } else {
            ChannelState::Inactive
        },
        confirmations: None,
    })
}

/// A channel of `GET /v1/channels/pending` (opening or waiting for its close to confirm).
pub(crate) fn pending_channel_info(
    c: &PendingChannel,
    state: ChannelState,
) -> Result<ChannelInfo, LnError> {
    Ok(ChannelInfo {
        channel_id: c.channel_point.clone(),
        short_channel_id: None,
        peer: peer_of(&c.remote_node_pub)?,
        capacity_sats: c.capacity,
        local_balance_msat: spendable_msat(c.local_balance, c.local_chan_reserve_sat),
        remote_balance_msat: spendable_msat(c.remote_balance, c.remote_chan_reserve_sat),
        state,
        confirmations: None,
    })
}

/// How far LND's view of the chain is behind, from what `getinfo` says: 0 while LND says it is
/// synced; otherwise the age of the best header it knows; `None` when it names no header.
pub(crate) fn sync_lag_secs(synced: bool, best_header_timestamp: i64, now: i64) -> Option<u64> {
    if synced {
        Some(0)
    } else if best_header_timestamp <= 0 {
        None
    } else {
        Some(u64::try_from(now.saturating_sub(best_header_timestamp)).unwrap_or(0))
    }
}

/// Channel counts and balances for metrics: active; inactive = open but inactive, or still
/// opening; closing channels are neither, and their balances are not counted.
pub(crate) fn channel_stats(channels: &[ChannelInfo]) -> NodeStats {
    let live = || channels.iter().filter(|c| c.state != ChannelState::Closing);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let active = live().filter(|c| c.state == ChannelState::Active).count();
    let all = live().count();
    NodeStats {
        channels_active: Some(count(active)),
        channels_inactive: Some(count(all - active)),
        local_balance_msat: Some(
            live()
                .map(|c| c.local_balance_msat)
                .fold(0, u64::saturating_add),
        ),
        remote_balance_msat: Some(
            live()
                .map(|c| c.remote_balance_msat)
                .fold(0, u64::saturating_add),
        ),
        block_height: None,
        sync_lag_secs: None,
    }
}

/// On-chain commands are not wired to LND yet: "not supported by this backend".
impl satchel_lightning::NodeAdmin for LndRest {}

#[async_trait]
impl NodeInfo for LndRest {
    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        self.info
            .get_or_try_init(|| async { self.fetch_info().await.map(|(info, _)| info) })
            .await
            .cloned()
    }

    async fn node_status(&self) -> Result<NodeStatus, LnError> {
        let gi = self.get_info().await?;
        Ok(NodeStatus {
            block_height: Some(gi.block_height),
            synced: Some(gi.synced_to_chain),
        })
    }

    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, LnError> {
        let (open, pending) = tokio::try_join!(
            self.rest
                .call::<ListChannelsResponse>(Method::GET, "/v1/channels", None),
            self.rest
                .call::<PendingChannelsResponse>(Method::GET, "/v1/channels/pending", None),
        )
        .map_err(CallError::into_ln)?;
        let mut out = Vec::with_capacity(
            open.channels.len()
                + pending.pending_open_channels.len()
                + pending.waiting_close_channels.len(),
        );
        for c in &open.channels {
            out.push(open_channel_info(c)?);
        }
        for c in pending
            .pending_open_channels
            .iter()
            .filter_map(|p| p.channel.as_ref())
        {
            out.push(pending_channel_info(c, ChannelState::Pending)?);
        }
        for c in pending
            .waiting_close_channels
            .iter()
            .filter_map(|p| p.channel.as_ref())
        {
            out.push(pending_channel_info(c, ChannelState::Closing)?);
        }
        Ok(out)
    }

    /// Three requests (`getinfo`, `channels`, `channels/pending`), made together.
    async fn node_stats(&self) -> Result<NodeStats, LnError> {
        let (gi, channels) = tokio::try_join!(self.get_info(), self.list_channels())?;
        Ok(NodeStats {
            block_height: Some(u64::from(gi.block_height)),
            sync_lag_secs: sync_lag_secs(gi.synced_to_chain, gi.best_header_timestamp, now_secs()),
            ..channel_stats(&channels)
        })
    }
}

#[async_trait]
impl Invoices for LndRest {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        let hash = req.preimage.hash();
        let mut body = json!({
            "r_preimage": b64(&req.preimage.0),
            "expiry": req.expiry_secs.to_string(),
            "private": true,
        });
        if let Some(a) = req.amount {
            body["value_msat"] = json!(a.as_msat().to_string());
        }
        match req.description_hash {
            Some(h) => body["description_hash"] = json!(b64(&h)),
            None => body["memo"] = json!(req.memo),
        }
        match self
            .rest
            .call::<AddInvoiceResponse>(Method::POST, "/v1/invoices", Some(&body))
            .await
        {
            Ok(r) => bolt11_of(&r.payment_request, hash),
            Err(CallError::Lnd(s)) if !s.is_auth() && s.message_has("already exists") => {
                // Same preimage twice: the invoice LND already has.
                match self.fetch_invoice(hash).await {
                    Ok(Some(inv)) => bolt11_of(&inv.payment_request, hash),
                    Ok(None) => Err(LnError::Rejected(s.message)),
                    Err(e) => Err(e.into_ln()),
                }
            }
            // LND's validation errors arrive as code 2 (Unknown); nothing was created.
            Err(CallError::Lnd(s))
                if !s.is_auth() && !s.is_unavailable() && s.code == code::UNKNOWN =>
            {
                Err(LnError::Rejected(s.message))
            }
            Err(e) => Err(e.into_ln()),
        }
    }

    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        let body = json!({ "payment_hash": b64(&hash.0) });
        match self
            .rest
            .call::<Value>(Method::POST, "/v2/invoices/cancel", Some(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Lnd(s))
                if !s.is_auth()
                    && (is_invoice_not_found(&s)
                        || s.message_has("already settled")
                        || s.message_has("already canceled")
                        || s.message_has("already cancelled")) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into_ln()),
        }
    }

    /// LND's `CancelInvoice` judges and cancels in one step in its invoice registry, the same
    /// place an HTLC settles the invoice: it fails with "invoice already settled" when an HTLC
    /// got there first. A cancelled invoice is final (LND fails every later HTLC for it).
    async fn take_for_internal(&self, hash: PaymentHash) -> Result<InternalTake, LnError> {
        let body = json!({ "payment_hash": b64(&hash.0) });
        match self
            .rest
            .call::<Value>(Method::POST, "/v2/invoices/cancel", Some(&body))
            .await
        {
            Ok(_) => Ok(InternalTake::Taken),
            Err(CallError::Lnd(s)) if !s.is_auth() && s.message_has("already settled") => {
                Ok(InternalTake::NodePaid)
            }
            Err(CallError::Lnd(s))
                if !s.is_auth()
                    && (is_invoice_not_found(&s)
                        || s.message_has("already canceled")
                        || s.message_has("already cancelled")) =>
            {
                Ok(InternalTake::Taken)
            }
            Err(e) => Err(e.into_ln()),
        }
    }

    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        let inv = self.fetch_invoice(hash).await.map_err(CallError::into_ln)?;
        Ok(inv.map(|i| invoice_state(&i, now_secs())))
    }
}

#[async_trait]
impl Payments for LndRest {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        self.validate(&req.target)?;
        let hash = req.target.payment_hash();
        let body = Self::send_body(&req);
        let deadline = Instant::now() + req.timeout + PAY_MARGIN;
        match tokio::time::timeout_at(deadline, self.send_and_follow(&body, hash)).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(CallError::Lnd(status))) => self.after_send_error(hash, status, deadline).await,
            Ok(Err(e)) => Err(unknown(e)),
            Err(_) => {
                // No final answer in time. LND keeps paying (the stream is only our view).
                match tokio::time::timeout(LATE_LOOKUP, self.lookup_payment(hash)).await {
                    Ok(Ok(PaymentLookup::InFlight)) => Ok(PayOutcome::InFlight),
                    Ok(Ok(PaymentLookup::Succeeded { preimage, fee })) => {
                        Ok(PayOutcome::Succeeded { preimage, fee })
                    }
                    Ok(Ok(PaymentLookup::Failed(r))) => Ok(PayOutcome::Failed(r)),
                    Ok(Ok(PaymentLookup::NotFound)) => Err(LnError::Transport(
                        "LND did not answer the payment in time and has no record of it yet"
                            .to_owned(),
                    )),
                    Ok(Err(e)) => Err(LnError::Transport(format!(
                        "LND did not answer the payment in time: {e}"
                    ))),
                    Err(_) => Err(LnError::Transport(
                        "LND did not answer the payment in time".to_owned(),
                    )),
                }
            }
        }
    }

    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        // TrackPaymentV2 sends the payment's current state first (then updates, which we do
        // not wait for).
        let first = async {
            let mut stream = self
                .rest
                .stream(Method::GET, &Self::track_path(hash, false), None)
                .await?;
            stream.next::<Payment>().await
        };
        match tokio::time::timeout(UNARY_TIMEOUT, first).await {
            Err(_) => Err(LnError::Transport(
                "LND did not answer the payment lookup in time".to_owned(),
            )),
            Ok(Ok(Some(p))) => payment_state(&p, hash).map_err(LnError::Transport),
            Ok(Ok(None)) => Err(LnError::Transport(
                "LND ended the payment lookup without an answer".to_owned(),
            )),
            Ok(Err(CallError::Lnd(s))) if is_payment_not_found(&s) => Ok(PaymentLookup::NotFound),
            Ok(Err(e)) => Err(unknown(e)),
        }
    }
}

#[async_trait]
impl InvoiceEvents for LndRest {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        self.feed.events_after(after, limit, wait).await
    }
}

fn msat(v: u64) -> Result<Msat, LnError> {
    Msat::from_msat(v).map_err(|e| LnError::Transport(format!("LND route amount: {e}")))
}

#[async_trait]
impl Routes for LndRest {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        if amount.is_zero() || self.info.get().is_some_and(|i| i.pubkey == dest) {
            return Ok(Vec::new());
        }
        let fee_limit = amount.as_msat().max(ROUTE_FEE_FLOOR_MSAT);
        let m = amount.as_msat();
        let path = if m.is_multiple_of(1000) {
            format!(
                "/v1/graph/routes/{}/{}?fee_limit.fixed_msat={fee_limit}",
                dest.to_hex(),
                m / 1000
            )
        } else {
            format!(
                "/v1/graph/routes/{}/0?amt_msat={m}&fee_limit.fixed_msat={fee_limit}",
                dest.to_hex()
            )
        };
        let resp = match self
            .rest
            .call::<QueryRoutesResponse>(Method::GET, &path, None)
            .await
        {
            Ok(r) => r,
            Err(CallError::Lnd(s))
                if !s.is_auth()
                    && (s.message_has("unable to find a path")
                        || s.message_has("no route")
                        || s.message_has("target not found")
                        || s.message_has("insufficient")) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into_ln()),
        };
        let mut routes = Vec::with_capacity(resp.routes.len());
        for r in resp.routes {
            let mut hops = Vec::with_capacity(r.hops.len());
            for h in r.hops {
                hops.push(RouteHop {
                    chan_id: h.chan_id,
                    chan_capacity_sats: h.chan_capacity,
                    amt_to_forward: msat(h.amt_to_forward_msat)?,
                    fee: msat(h.fee_msat)?,
                    expiry: h.expiry,
                    pub_key: NodePubkey::from_hex(&h.pub_key).ok_or_else(|| {
                        LnError::Transport(format!("LND route: bad pub_key {:?}", h.pub_key))
                    })?,
                });
            }
            routes.push(Route {
                total_time_lock: r.total_time_lock,
                total_fees: msat(r.total_fees_msat)?,
                total_amt: msat(r.total_amt_msat)?,
                hops,
            });
        }
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sync_lag_from_getinfo() {
        assert_eq!(sync_lag_secs(true, 1_000, 5_000), Some(0));
        assert_eq!(sync_lag_secs(true, 0, 5_000), Some(0));
        assert_eq!(sync_lag_secs(false, 1_000, 5_000), Some(4_000));
        assert_eq!(sync_lag_secs(false, 0, 5_000), None);
        // A header "from the future" (clock skew) is no lag.
        assert_eq!(sync_lag_secs(false, 6_000, 5_000), Some(0));
    }

    #[test]
    fn channels_from_lnds_wire() {
        let peer = "02".to_owned() + &"11".repeat(32);
        let open: ListChannelsResponse = serde_json::from_value(json!({"channels": [{
            "active": true, "remote_pubkey": peer, "channel_point": "ab:1", "chan_id": "123",
            "capacity": "100000", "local_balance": "60000", "remote_balance": "39000",
            "local_constraints": {"chan_reserve_sat": "1000"},
            "remote_constraints": {"chan_reserve_sat": "1500"},
        }, {
            "active": false, "remote_pubkey": peer, "channel_point": "cd:0", "chan_id": "0",
            "capacity": "5000", "local_balance": "100", "remote_balance": "0",
            "local_constraints": null, "remote_constraints": null,
        }]}))
        .unwrap();
        let a = open_channel_info(&open.channels[0]).unwrap();
        assert_eq!(a.channel_id, "ab:1");
        assert_eq!(a.short_channel_id, Some(123));
        assert_eq!(a.local_balance_msat, 59_000_000);
        assert_eq!(a.remote_balance_msat, 37_500_000);
        assert_eq!(a.state, ChannelState::Active);
        let b = open_channel_info(&open.channels[1]).unwrap();
        assert_eq!(
            (b.short_channel_id, b.state),
            (None, ChannelState::Inactive)
        );
        assert_eq!(b.local_balance_msat, 100_000);
        let pending: PendingChannelsResponse = serde_json::from_value(json!({
            "pending_open_channels": [{"channel": {"remote_node_pub": peer,
                "channel_point": "ef:0", "capacity": "2000", "local_balance": "1000",
                "remote_balance": "0", "local_chan_reserve_sat": "354"}}],
            "waiting_close_channels": [{"channel": {"remote_node_pub": peer,
                "channel_point": "01:0", "capacity": "9000", "local_balance": "9000"}}],
        }))
        .unwrap();
        let p = pending.pending_open_channels[0].channel.as_ref().unwrap();
        let p = pending_channel_info(p, ChannelState::Pending).unwrap();
        assert_eq!(p.local_balance_msat, 646_000);
        let w = pending.waiting_close_channels[0].channel.as_ref().unwrap();
        let w = pending_channel_info(w, ChannelState::Closing).unwrap();
        let stats = channel_stats(&[a, b, p, w]);
        assert_eq!(stats.channels_active, Some(1));
        assert_eq!(stats.channels_inactive, Some(2));
        assert_eq!(
            stats.local_balance_msat,
            Some(59_000_000 + 100_000 + 646_000)
        );
        assert_eq!(stats.remote_balance_msat, Some(37_500_000));
        let bad: Channel = serde_json::from_value(json!({"remote_pubkey": "zz"})).unwrap();
        assert!(matches!(
            open_channel_info(&bad),
            Err(LnError::Transport(_))
        ));
    }
}
