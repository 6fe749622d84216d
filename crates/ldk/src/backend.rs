//! Satchel's backend traits for [`LdkNode`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::hashes::{Hash as _, sha256};
use lightning::chain::chaininterface::{BroadcasterInterface, ConfirmationTarget, FeeEstimator};
use lightning::ln::channelmanager::{
    Bolt11PaymentError, PaymentId, RecentPaymentDetails, RecipientOnionFields, Retry,
    RetryableSendFailure,
};
use lightning::routing::router::{
    PaymentParameters, RouteParameters, RouteParametersConfig, Router,
};
use lightning::types::payment::PaymentPreimage;
use lightning_invoice::{Bolt11InvoiceDescription, Description};
use satchel_domain::{
    Bolt11, FailureReason, KEYSEND_PREIMAGE_TLV, Msat, Network, NodePubkey, PaymentHash, now_secs,
};
use satchel_lightning::{
    ChannelInfo, ChannelState, IncomingEvent, IncomingKind, InternalTake, InvoiceEvents,
    InvoiceState, Invoices, LnError, NewInvoice, NodeAdmin, NodeInfo, NodeInfoData, NodeStats,
    NodeStatus, OnchainBalance, PayOutcome, PayRequest, PayTarget, PaymentLookup, Payments, Route,
    RouteHop, Routes, TakeKind,
};

use crate::invoice::InvoiceParams;
use crate::node::{LdkNode, from_node_pubkey};
use crate::records::{
    EVENTS, EventRec, INVOICES, InvState, InvoiceRec, PAYMENTS, PayState, PaymentRec, event_key,
};

/// Final CLTV delta of our keysends.
const KEYSEND_FINAL_CLTV_DELTA: u32 = 40;
/// Smallest custom TLV record type a keysend may carry.
const MIN_CUSTOM_RECORD_TYPE: u64 = 65_536;
/// Longest an invoice cancellation waits for its flush to disk (see `cancel_invoices`).
const CANCEL_FLUSH_DELAY: Duration = Duration::from_secs(1);

/// What `pay` does after its synchronous part.
enum Started {
    /// Sent (or already in flight/done): wait for the outcome.
    Wait,
    /// Already decided.
    Done(PayOutcome),
    /// A payment to ourselves.
    SelfPay,
}

/// What became of a send LDK refused.
enum SendRefusal {
    /// Nothing was sent and nothing will be: a definite failure.
    Failed(FailureReason),
    /// The request itself was invalid; nothing was sent.
    Rejected(String),
    /// LDK already has a payment with this id.
    Duplicate,
}

fn lookup_of(outcome: PayOutcome) -> PaymentLookup {
    match outcome {
        PayOutcome::InFlight => PaymentLookup::InFlight,
        PayOutcome::Succeeded { preimage, fee } => PaymentLookup::Succeeded { preimage, fee },
        PayOutcome::Failed(r) => PaymentLookup::Failed(r),
    }
}

impl LdkNode {
    /// Rejections that happen before anything is recorded or sent.
    fn validate(&self, target: &PayTarget) -> Result<(), LnError> {
        match target {
            PayTarget::Bolt11 { invoice, amount } => {
                if invoice.network() != Network::Regtest {
                    return Err(LnError::Rejected(format!(
                        "invoice is for {}, this node runs on regtest",
                        invoice.network().name()
                    )));
                }
                if amount.is_zero() {
                    return Err(LnError::Rejected("amount must be positive".to_owned()));
                }
                if invoice.amount().is_some_and(|a| *amount < a) {
                    return Err(LnError::Rejected(
                        "amount below the invoice amount".to_owned(),
                    ));
                }
            }
            PayTarget::Keysend {
                dest,
                amount,
                custom_records,
                ..
            } => {
                if amount.is_zero() {
                    return Err(LnError::Rejected("amount must be positive".to_owned()));
                }
                if let Some(t) = custom_records.0.keys().find(|t| {
                    **t < MIN_CUSTOM_RECORD_TYPE || **t == KEYSEND_PREIMAGE_TLV || **t == 77_777
                }) {
                    return Err(LnError::Rejected(format!(
                        "custom record type {t} not allowed"
                    )));
                }
                from_node_pubkey(dest).map_err(LnError::Rejected)?;
            }
        }
        Ok(())
    }

    /// What our channels can send right now, msat.
    fn sendable_msat(&self) -> u64 {
        self.channel_manager
            .list_usable_channels()
            .iter()
            .map(|c| c.next_outbound_htlc_limit_msat)
            .fold(0u64, u64::saturating_add)
    }

    fn classify_send_failure(&self, e: RetryableSendFailure, amount: Msat) -> SendRefusal {
        match e {
            RetryableSendFailure::RouteNotFound => {
                // LND says INSUFFICIENT_BALANCE when the amount exceeds what our channels can
                // send at all; anything else (fee limit, remote liquidity) is NO_ROUTE.
                if amount.as_msat() > self.sendable_msat() {
                    SendRefusal::Failed(FailureReason::InsufficientBalance)
                } else {
                    SendRefusal::Failed(FailureReason::NoRoute)
                }
            }
            RetryableSendFailure::PaymentExpired => {
                SendRefusal::Failed(FailureReason::IncorrectPaymentDetails)
            }
            RetryableSendFailure::DuplicatePayment => SendRefusal::Duplicate,
            RetryableSendFailure::OnionPacketSizeExceeded => {
                SendRefusal::Rejected("custom records too large for the onion".to_owned())
            }
        }
    }

    /// Hands the payment to LDK. Called with our record already written.
    fn send(&self, req: &PayRequest) -> Result<(), SendRefusal> {
        let hash = req.target.payment_hash();
        let payment_id = PaymentId(hash.0);
        let retry = Retry::Timeout(req.timeout);
        match &req.target {
            PayTarget::Bolt11 { invoice, amount } => {
                let params = RouteParametersConfig {
                    max_total_routing_fee_msat: Some(req.fee_limit.as_msat()),
                    ..RouteParametersConfig::default()
                };
                self.channel_manager
                    .pay_for_bolt11_invoice(
                        invoice.inner(),
                        payment_id,
                        Some(amount.as_msat()),
                        params,
                        retry,
                    )
                    .map_err(|e| match e {
                        Bolt11PaymentError::InvalidAmount => {
                            SendRefusal::Rejected("invalid amount for this invoice".to_owned())
                        }
                        Bolt11PaymentError::SendingFailed(e) => {
                            self.classify_send_failure(e, *amount)
                        }
                    })
            }
            PayTarget::Keysend {
                dest,
                amount,
                preimage,
                custom_records,
            } => {
                let dest = from_node_pubkey(dest).map_err(SendRefusal::Rejected)?;
                let tlvs: Vec<(u64, Vec<u8>)> = custom_records
                    .0
                    .iter()
                    .map(|(t, v)| (*t, v.clone()))
                    .collect();
                let onion = RecipientOnionFields::spontaneous_empty()
                    .with_custom_tlvs(tlvs)
                    .map_err(|()| SendRefusal::Rejected("invalid custom records".to_owned()))?;
                let mut route_params = RouteParameters::from_payment_params_and_value(
                    PaymentParameters::for_keysend(dest, KEYSEND_FINAL_CLTV_DELTA, false),
                    amount.as_msat(),
                );
                route_params.max_total_routing_fee_msat = Some(req.fee_limit.as_msat());
                self.channel_manager
                    .send_spontaneous_payment(
                        Some(PaymentPreimage(preimage.0)),
                        onion,
                        payment_id,
                        route_params,
                        retry,
                    )
                    .map(|_| ())
                    .map_err(|e| self.classify_send_failure(e, *amount))
            }
        }
    }

    /// The synchronous part of `pay`: idempotency check, record, hand-off to LDK.
    fn start_payment(
        &self,
        req: &PayRequest,
        hash: PaymentHash,
        to_self: bool,
    ) -> Result<Started, LnError> {
        let mut st = self.lock();
        if let Some(p) = st.payments.get(&hash)
            && !matches!(p.state, PayState::Failed { .. })
        {
            // Idempotency: in flight or succeeded, never send twice.
            return Ok(Started::Wait);
        }
        if to_self {
            return Ok(Started::SelfPay);
        }
        if self.ldk_pending(hash) {
            // LDK still tracks an attempt we have no live record of.
            return Ok(Started::Wait);
        }
        let rec = PaymentRec {
            state: PayState::InFlight,
            sends: st
                .payments
                .get(&hash)
                .map_or(0, |p| p.sends)
                .saturating_add(1),
            amount_msat: req.target.amount().as_msat(),
            fee_limit_msat: req.fee_limit.as_msat(),
            keysend: matches!(req.target, PayTarget::Keysend { .. }),
            updated_at: now_secs(),
        };
        let previous = st.payments.get(&hash).cloned();
        // Written before LDK hears of the payment: a crash in between leaves an in-flight
        // record that the next start reconciles with LDK's list of payments.
        self.kv
            .put(PAYMENTS, &hash.to_hex(), &rec)
            .map_err(|e| LnError::Transport(format!("persisting payment: {e}")))?;
        st.payments.insert(hash, rec.clone());
        match self.send(req) {
            Ok(()) => Ok(Started::Wait),
            Err(SendRefusal::Failed(reason)) => {
                let mut rec = rec;
                rec.state = PayState::failed(reason);
                self.kv
                    .put(PAYMENTS, &hash.to_hex(), &rec)
                    .map_err(|e| LnError::Transport(format!("persisting payment: {e}")))?;
                st.payments.insert(hash, rec);
                drop(st);
                self.payments_notify.notify_waiters();
                Ok(Started::Done(PayOutcome::Failed(reason)))
            }
            Err(SendRefusal::Rejected(msg)) => {
                // Nothing was sent: back to the state before this call.
                let restored = match &previous {
                    Some(prev) => self.kv.put(PAYMENTS, &hash.to_hex(), prev),
                    None => self.kv.remove(PAYMENTS, &hash.to_hex()),
                };
                if restored.is_ok() {
                    match previous {
                        Some(prev) => st.payments.insert(hash, prev),
                        None => st.payments.remove(&hash),
                    };
                }
                Err(LnError::Rejected(msg))
            }
            // LDK is still finishing an earlier attempt (its PaymentFailed/PaymentSent is on
            // the way): report that attempt.
            Err(SendRefusal::Duplicate) => Ok(Started::Wait),
        }
    }

    /// Whether LDK is tracking a pending payment with this hash as id.
    fn ldk_pending(&self, hash: PaymentHash) -> bool {
        self.channel_manager
            .list_recent_payments()
            .into_iter()
            .any(|p| match p {
                RecentPaymentDetails::Pending { payment_id, .. }
                | RecentPaymentDetails::Abandoned { payment_id, .. } => payment_id.0 == hash.0,
                _ => false,
            })
    }

    fn payment_outcome(&self, hash: PaymentHash) -> Option<PayOutcome> {
        self.lock().payments.get(&hash).map(|p| p.state.outcome())
    }

    /// Waits until the payment is no longer in flight or the deadline passes.
    async fn wait_payment(&self, hash: PaymentHash, deadline: tokio::time::Instant) -> PayOutcome {
        loop {
            let notified = self.payments_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.payment_outcome(hash) {
                Some(PayOutcome::InFlight) | None => {}
                Some(done) => return done,
            }
            if self.is_stopped() {
                return PayOutcome::InFlight;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.payment_outcome(hash).unwrap_or(PayOutcome::InFlight);
            }
        }
    }

    /// A payment to ourselves: LDK cannot route to itself, so settle our own invoice (or
    /// record the keysend) directly, as if it had arrived over a channel. Fee 0. Everything
    /// happens under one lock, so concurrent calls settle once.
    fn pay_self(&self, req: &PayRequest) -> Result<PayOutcome, LnError> {
        let hash = req.target.payment_hash();
        let now = now_secs();
        let transport = |e: std::io::Error| LnError::Transport(e.to_string());
        let mut st = self.lock();
        if let Some(p) = st.payments.get(&hash)
            && !matches!(p.state, PayState::Failed { .. })
        {
            return Ok(p.state.outcome());
        }
        let (kind, preimage) = match &req.target {
            PayTarget::Bolt11 { amount, .. } => {
                let payable = st.invoices.get(&hash).filter(|r| {
                    r.state == InvState::Open
                        && now < r.expires_at
                        && r.amount_msat.is_none_or(|a| amount.as_msat() >= a)
                });
                let Some((mut rec, preimage)) =
                    payable.and_then(|r| Some((r.clone(), r.preimage()?)))
                else {
                    return Ok(PayOutcome::Failed(FailureReason::IncorrectPaymentDetails));
                };
                rec.state = InvState::Settled {
                    amount_msat: amount.as_msat(),
                    settled_at: now,
                };
                self.kv
                    .put(INVOICES, &hash.to_hex(), &rec)
                    .map_err(transport)?;
                st.invoices.insert(hash, rec);
                (
                    IncomingKind::InvoiceSettled {
                        payment_hash: hash,
                        amount_received: *amount,
                        settled_at_secs: now,
                    },
                    preimage,
                )
            }
            PayTarget::Keysend {
                amount,
                preimage,
                custom_records,
                ..
            } => (
                IncomingKind::KeysendReceived {
                    payment_hash: hash,
                    preimage: *preimage,
                    amount_received: *amount,
                    custom_records: custom_records.clone(),
                    settled_at_secs: now,
                },
                *preimage,
            ),
        };
        if !st.event_hashes.contains(&hash) {
            let event = IncomingEvent {
                seq: st.next_seq(),
                kind,
            };
            self.kv
                .put(EVENTS, &event_key(event.seq), &EventRec::from_event(&event))
                .map_err(transport)?;
            st.event_hashes.insert(hash);
            st.events.push(event);
        }
        let rec = PaymentRec {
            state: PayState::Succeeded {
                preimage: preimage.to_hex(),
                fee_msat: 0,
            },
            sends: st
                .payments
                .get(&hash)
                .map_or(0, |p| p.sends)
                .saturating_add(1),
            amount_msat: req.target.amount().as_msat(),
            fee_limit_msat: req.fee_limit.as_msat(),
            keysend: matches!(req.target, PayTarget::Keysend { .. }),
            updated_at: now,
        };
        self.kv
            .put(PAYMENTS, &hash.to_hex(), &rec)
            .map_err(transport)?;
        st.payments.insert(hash, rec);
        drop(st);
        self.events_notify.notify_waiters();
        self.payments_notify.notify_waiters();
        Ok(PayOutcome::Succeeded {
            preimage,
            fee: Msat::ZERO,
        })
    }

    fn collect_events(&self, after: u64, limit: usize) -> Vec<IncomingEvent> {
        self.lock()
            .events
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }
}

/// How soon an operator's on-chain send should confirm: the same normal-priority target the
/// node funds its channels at.
const ONCHAIN_SEND_FEE_TARGET: ConfirmationTarget = ConfirmationTarget::OutputSpendingFee;

fn wallet_of(node: &LdkNode) -> Result<&Arc<crate::wallet::OnchainWallet>, LnError> {
    node.wallet().ok_or_else(|| {
        LnError::Rejected("the node has no on-chain wallet (no chain source)".to_owned())
    })
}

/// The operator's channel and peer commands: LDK answers them synchronously, and an error
/// means it refused before changing anything (a stopped node aside, which is a transport error).
fn refused(e: crate::LdkError) -> LnError {
    match e {
        crate::LdkError::Stopped | crate::LdkError::Io(_) | crate::LdkError::Corrupt(_) => {
            LnError::Transport(e.to_string())
        }
        other => LnError::Rejected(other.to_string()),
    }
}

/// The on-chain wallet of the node (`None` without a chain source: then every call is
/// `Rejected`, nothing to do). Sends are broadcast through the node's own broadcaster, the one
/// LDK uses, so they reach the chain source the same way channel transactions do.
#[async_trait]
impl NodeAdmin for LdkNode {
    async fn onchain_address(&self) -> Result<String, LnError> {
        let address = wallet_of(self)?
            .new_address()
            .await
            .map_err(|e| LnError::Transport(e.to_string()))?;
        Ok(address.to_string())
    }

    async fn onchain_balance(&self) -> Result<OnchainBalance, LnError> {
        let b = wallet_of(self)?.balance().await;
        let unconfirmed = b
            .trusted_pending
            .checked_add(b.untrusted_pending)
            .ok_or_else(|| LnError::Transport("balance overflows".to_owned()))?;
        Ok(OnchainBalance {
            confirmed_sats: b.confirmed.to_sat(),
            unconfirmed_sats: unconfirmed.to_sat(),
            immature_sats: b.immature.to_sat(),
        })
    }

    async fn onchain_send(&self, address: &str, amount_sats: u64) -> Result<String, LnError> {
        use crate::wallet::WalletError as W;
        let wallet = wallet_of(self)?;
        if amount_sats == 0 {
            return Err(LnError::Rejected("amount must be positive".to_owned()));
        }
        let address: bitcoin::Address<bitcoin::address::NetworkUnchecked> = address
            .parse()
            .map_err(|e| LnError::Rejected(format!("bad address: {e}")))?;
        let fee_rate = bitcoin::FeeRate::from_sat_per_kwu(u64::from(
            self.fee_estimator()
                .get_est_sat_per_1000_weight(ONCHAIN_SEND_FEE_TARGET),
        ));
        let tx = wallet
            .send_to_address(&address, bitcoin::Amount::from_sat(amount_sats), fee_rate)
            .await
            .map_err(|e| match e {
                W::WrongNetwork { .. } | W::Dust { .. } | W::InsufficientFunds { .. } => {
                    LnError::Rejected(e.to_string())
                }
                other => LnError::Transport(other.to_string()),
            })?;
        self.broadcaster().broadcast_transactions(&[&tx]);
        Ok(tx.compute_txid().to_string())
    }

    async fn connect_peer(&self, pubkey: NodePubkey, addr: &str) -> Result<(), LnError> {
        let addr: std::net::SocketAddr = addr
            .trim()
            .parse()
            .map_err(|e| LnError::Rejected(format!("bad peer address {addr:?}: {e}")))?;
        self.connect(pubkey, addr).await.map_err(refused)
    }

    async fn open_channel(
        &self,
        peer: NodePubkey,
        capacity_sats: u64,
        push_msat: u64,
    ) -> Result<(), LnError> {
        if capacity_sats == 0 {
            return Err(LnError::Rejected("capacity must be positive".to_owned()));
        }
        LdkNode::open_channel(self, peer, capacity_sats, push_msat)
            .await
            .map_err(refused)
    }

    async fn close_channel(&self, channel_id: &str, force: bool) -> Result<(), LnError> {
        LdkNode::close_channel(self, channel_id, force).map_err(refused)
    }
}

#[async_trait]
impl NodeInfo for LdkNode {
    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        Ok(NodeInfoData {
            pubkey: self.pubkey(),
            network: Network::Regtest,
            alias: self.alias().to_owned(),
        })
    }

    /// The best block the channel manager has processed, and whether the last round of chain
    /// sync succeeded (`None` without a chain source: the chainless development mode).
    async fn node_status(&self) -> Result<NodeStatus, LnError> {
        Ok(NodeStatus {
            block_height: Some(self.channel_manager.current_best_block().height),
            synced: self.chain_synced(),
        })
    }

    async fn list_channels(&self) -> Result<Vec<ChannelInfo>, LnError> {
        Ok(self
            .channel_manager
            .list_channels()
            .into_iter()
            .map(|c| {
                use lightning::ln::channel_state::ChannelShutdownState as S;
                let closing = c
                    .channel_shutdown_state
                    .is_some_and(|s| s != S::NotShuttingDown);
                let state = if closing {
                    ChannelState::Closing
                } else if !c.is_channel_ready {
                    ChannelState::Pending
                } else if c.is_usable {
                    ChannelState::Active
                } else {
                    ChannelState::Inactive
                };
                ChannelInfo {
                    channel_id: c.channel_id.to_string(),
                    short_channel_id: c.short_channel_id,
                    peer: crate::node::to_node_pubkey(&c.counterparty.node_id),
                    capacity_sats: c.channel_value_satoshis,
                    local_balance_msat: c.outbound_capacity_msat,
                    remote_balance_msat: c.inbound_capacity_msat,
                    state,
                    confirmations: c.confirmations,
                }
            })
            .collect())
    }

    /// Channels and balances from the channel manager; the block height it has seen. Sync lag
    /// is 0 when the last chain sync round caught up with the source, unknown otherwise.
    async fn node_stats(&self) -> Result<NodeStats, LnError> {
        let chans = self.list_channels();
        let active = chans.iter().filter(|c| c.usable).count();
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        Ok(NodeStats {
            channels_active: Some(n(active)),
            channels_inactive: Some(n(chans.len() - active)),
            local_balance_msat: Some(chans.iter().map(|c| c.outbound_msat).sum()),
            remote_balance_msat: Some(chans.iter().map(|c| c.inbound_msat).sum()),
            block_height: Some(u64::from(self.channel_manager.current_best_block().height)),
            sync_lag_secs: (self.chain_synced() == Some(true)).then_some(0),
        })
    }
}

/// A second invoice for one preimage is refused (the trait allows it): the invoice text is not
/// kept in memory, where it was most of each open invoice's footprint.
fn exists() -> LnError {
    LnError::Rejected("an invoice for this payment hash already exists".into())
}

#[async_trait]
impl Invoices for LdkNode {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        self.check_running()?;
        let hash = req.preimage.hash();
        if self.lock().invoices.contains_key(&hash) {
            return Err(exists());
        }
        let description = match req.description_hash {
            Some(h) => Bolt11InvoiceDescription::Hash(lightning_invoice::Sha256(
                sha256::Hash::from_byte_array(h),
            )),
            None => Bolt11InvoiceDescription::Direct(
                Description::new(req.memo).map_err(|e| LnError::Rejected(e.to_string()))?,
            ),
        };
        let invoice = self
            .invoice_signer
            .create(
                &self.channel_manager,
                InvoiceParams {
                    hash: hash.0,
                    amount_msat: req.amount.map(Msat::as_msat),
                    description,
                    expiry_secs: req.expiry_secs,
                },
                crate::node::now_duration(),
            )
            .map_err(|e| LnError::Rejected(format!("creating invoice: {e}")))?;
        let bolt11 = Bolt11::from_invoice(invoice);
        let rec = InvoiceRec {
            preimage: req.preimage.to_hex(),
            amount_msat: req.amount.map(Msat::as_msat),
            expires_at: bolt11.expires_at_secs(),
            state: InvState::Open,
        };
        let ticket = {
            let mut st = self.lock();
            // A concurrent call with the same preimage may have won the race: keep its invoice.
            if st.invoices.contains_key(&hash) {
                return Err(exists());
            }
            let ticket = self
                .kv
                .put_later(INVOICES, &hash.to_hex(), &rec)
                .map_err(|e| LnError::Transport(format!("persisting invoice: {e}")))?;
            st.invoices.insert(hash, rec);
            ticket
        };
        // Durable before anyone can see the invoice; the flush is shared with concurrent calls.
        self.kv
            .journal
            .wait_async(ticket)
            .await
            .map_err(|e| LnError::Transport(format!("persisting invoice: {e}")))?;
        Ok(bolt11)
    }

    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        self.cancel_invoices(&[hash]).await
    }

    async fn cancel_invoices(&self, hashes: &[PaymentHash]) -> Result<(), LnError> {
        self.check_running()?;
        let persist = |e: std::io::Error| LnError::Transport(format!("persisting invoice: {e}"));
        {
            let mut st = self.lock();
            let mut canceled = Vec::with_capacity(hashes.len());
            for hash in hashes {
                if let Some(rec) = st.invoices.get_mut(hash)
                    && rec.state == InvState::Open
                {
                    rec.state = InvState::Canceled;
                    canceled.push((*hash, rec.clone()));
                }
            }
            if canceled.is_empty() {
                let mut taken = self.lock_taken();
                for hash in hashes {
                    taken.remove(hash);
                }
                return Ok(());
            }
            let items: Vec<(String, &InvoiceRec)> =
                canceled.iter().map(|(h, r)| (h.to_hex(), r)).collect();
            // One write for the batch, under the state lock so the log keeps the state's order.
            match self.kv.put_many_later(INVOICES, &items) {
                // Cancelled in the records: the invoice state refuses HTLCs from now on.
                Ok(_) => {
                    let mut taken = self.lock_taken();
                    for hash in hashes {
                        taken.remove(hash);
                    }
                }
                Err(e) => {
                    // Not written: keep memory as the log says (open), so a retry can cancel.
                    for (hash, _) in &canceled {
                        if let Some(r) = st.invoices.get_mut(hash) {
                            r.state = InvState::Open;
                        }
                    }
                    return Err(persist(e));
                }
            }
        }
        // The node refuses these invoices from now on (memory), and the cancellation is in the
        // OS's hands (it survives the process being killed). Its flush to disk is not waited
        // for: it rides on the next durable write to the log, or on a flush at most
        // CANCEL_FLUSH_DELAY from now. Only an OS crash inside that window can forget it, and
        // then an outside payment of the invoice lands in `sys:unclaimed`, never in a wallet.
        // (An fsync per batch cost ~20% of internal-payment throughput.)
        if !self.cancel_flush_pending.swap(true, Ordering::SeqCst) {
            let journal = Arc::clone(&self.kv.journal);
            let pending = Arc::clone(&self.cancel_flush_pending);
            tokio::spawn(async move {
                tokio::time::sleep(CANCEL_FLUSH_DELAY).await;
                pending.store(false, Ordering::SeqCst);
                let flushed = tokio::task::spawn_blocking(move || journal.flush()).await;
                if !matches!(flushed, Ok(Ok(()))) {
                    tracing::warn!(
                        "could not flush invoice cancellations; the next durable write retries"
                    );
                }
            });
        }
        Ok(())
    }

    /// A mark in memory, under the state lock that `decide_claim` judges an HTLC under: cheap
    /// (no write per internal payment), and an HTLC arriving after it is failed back. It is made
    /// durable by the batched `cancel_invoices` after the ledger booked the payment; a restart
    /// before that forgets it, and the invoice is open on the node again (an outside payment
    /// then lands in `sys:unclaimed`, never in a wallet twice).
    async fn take_for_internal(&self, hash: PaymentHash) -> Result<InternalTake, LnError> {
        self.check_running()?;
        let st = self.lock();
        Ok(match st.invoices.get(&hash).map(|r| &r.state) {
            // An HTLC was claimed (or is being claimed): the outside paid it.
            Some(InvState::Claiming | InvState::Settled { .. }) => InternalTake::NodePaid,
            Some(InvState::Open) => {
                *self.lock_taken().entry(hash).or_insert(0) += 1;
                InternalTake::Taken
            }
            Some(InvState::Canceled) | None => InternalTake::Taken,
        })
    }

    async fn release_internal(&self, hash: PaymentHash) {
        let _st = self.lock();
        let mut taken = self.lock_taken();
        if let Some(n) = taken.get_mut(&hash) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                taken.remove(&hash);
            }
        }
    }

    fn take_kind(&self) -> TakeKind {
        TakeKind::Provisional
    }

    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        self.check_running()?;
        let now = now_secs();
        Ok(self.lock().invoices.get(&hash).map(|rec| match &rec.state {
            InvState::Open if now >= rec.expires_at => InvoiceState::Canceled,
            // Claimed but LDK has not confirmed yet: still open from the outside.
            InvState::Open | InvState::Claiming => InvoiceState::Open,
            InvState::Settled {
                amount_msat,
                settled_at,
            } => InvoiceState::Settled {
                amount_received: Msat::from_msat(*amount_msat).unwrap_or(Msat::ZERO),
                settled_at_secs: *settled_at,
            },
            InvState::Canceled => InvoiceState::Canceled,
        }))
    }
}

#[async_trait]
impl Payments for LdkNode {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        self.check_running()?;
        self.validate(&req.target)?;
        let hash = req.target.payment_hash();
        let deadline = tokio::time::Instant::now() + req.timeout;
        let to_self = match &req.target {
            PayTarget::Bolt11 { invoice, .. } => invoice.payee() == self.pubkey(),
            PayTarget::Keysend { dest, .. } => *dest == self.pubkey(),
        };
        match self.start_payment(&req, hash, to_self)? {
            Started::Wait => Ok(self.wait_payment(hash, deadline).await),
            Started::Done(outcome) => Ok(outcome),
            Started::SelfPay => self.pay_self(&req),
        }
    }

    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        self.check_running()?;
        let pending = self.ldk_pending(hash);
        match self.payment_outcome(hash) {
            Some(PayOutcome::Failed(_)) if pending => Ok(PaymentLookup::InFlight),
            Some(outcome) => Ok(lookup_of(outcome)),
            None if pending => Ok(PaymentLookup::InFlight),
            None => Ok(PaymentLookup::NotFound),
        }
    }
}

#[async_trait]
impl InvoiceEvents for LdkNode {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        self.check_running()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let notified = self.events_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let events = self.collect_events(after, limit);
        if !events.is_empty() || wait.is_zero() {
            return Ok(events);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        Ok(self.collect_events(after, limit))
    }
}

#[async_trait]
impl Routes for LdkNode {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        self.check_running()?;
        let payee = from_node_pubkey(&dest).map_err(LnError::Rejected)?;
        if dest == self.pubkey() || amount.is_zero() {
            return Ok(Vec::new());
        }
        let mut payment_params =
            PaymentParameters::for_keysend(payee, KEYSEND_FINAL_CLTV_DELTA, false);
        payment_params.max_path_count = 1;
        let mut route_params =
            RouteParameters::from_payment_params_and_value(payment_params, amount.as_msat());
        route_params.max_total_routing_fee_msat = None;
        let first_hops = self.channel_manager.list_usable_channels();
        let first_refs: Vec<_> = first_hops.iter().collect();
        let route = match self.router.find_route(
            &self.pubkey,
            &route_params,
            Some(&first_refs),
            self.channel_manager.compute_inflight_htlcs(),
        ) {
            Ok(r) => r,
            Err(_) => return Ok(Vec::new()),
        };
        let height = self.channel_manager.current_best_block().height;
        let graph = self.network_graph.read_only();
        let capacity = |scid: u64| -> u64 {
            first_hops
                .iter()
                .find(|c| c.get_outbound_payment_scid() == Some(scid))
                .map(|c| c.channel_value_satoshis)
                .or_else(|| graph.channel(scid).and_then(|c| c.capacity_sats))
                .unwrap_or(0)
        };
        let mut routes = Vec::new();
        for path in &route.paths {
            let hops = &path.hops;
            let Some(last) = hops.len().checked_sub(1) else {
                continue;
            };
            // LDK: hop[i].fee_msat is what node i charges to forward over channel i+1 (the last
            // hop's is the amount delivered); cltv_expiry_delta likewise (the last one is the
            // final delta). LND: hop i is channel i, fee is what its end node charges,
            // amt_to_forward/expiry what that node sends on (the final values for the last).
            let mut cltv = vec![0u32; hops.len()];
            cltv[last] = height.saturating_add(hops[last].cltv_expiry_delta);
            for i in (0..last).rev() {
                cltv[i] = cltv[i + 1].saturating_add(hops[i].cltv_expiry_delta);
            }
            // amounts[i]: what node i sends on (node i+1 receives it plus its own fee).
            let mut amounts = vec![0u64; hops.len()];
            amounts[last] = hops[last].fee_msat;
            for i in (0..last).rev() {
                let next_fee = if i + 1 < last {
                    hops[i + 1].fee_msat
                } else {
                    0
                };
                amounts[i] = amounts[i + 1].saturating_add(next_fee);
            }
            let mut out = Vec::with_capacity(hops.len());
            for (i, hop) in hops.iter().enumerate() {
                let fee = if i == last { 0 } else { hop.fee_msat };
                let expiry = if i == last { cltv[last] } else { cltv[i + 1] };
                out.push(RouteHop {
                    chan_id: hop.short_channel_id,
                    chan_capacity_sats: capacity(hop.short_channel_id),
                    amt_to_forward: Msat::from_msat(amounts[i]).unwrap_or(Msat::ZERO),
                    fee: Msat::from_msat(fee).unwrap_or(Msat::ZERO),
                    expiry,
                    pub_key: crate::node::to_node_pubkey(&hop.pubkey),
                });
            }
            let total_fees = path.fee_msat();
            let total_amt = path.final_value_msat().saturating_add(total_fees);
            routes.push(Route {
                total_time_lock: cltv[0],
                total_fees: Msat::from_msat(total_fees).unwrap_or(Msat::ZERO),
                total_amt: Msat::from_msat(total_amt).unwrap_or(Msat::ZERO),
                hops: out,
            });
        }
        Ok(routes)
    }
}
