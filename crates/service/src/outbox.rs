//! The event outbox as its two readers see it: the webhook dispatcher (claim due deliveries,
//! freeze a body, record an attempt) and the live event hub (read a wallet's events after a
//! cursor, hear the after-commit bell). Both render an event from what it is about
//! ([`Outbox::subject`]): which rows that is, and the balance the body shows, is decided here,
//! so the API only turns records into LNPay JSON and never reads the store itself.

use std::sync::Arc;

use satchel_domain::{EventId, EventName, Msat, WalletId, WebhookId};
use satchel_store::{
    AttemptOutcome, AttemptRecord, DueDelivery, EventRecord, LnTxRecord, Store, WalletRecord,
    WtxRecord,
};

use crate::ServiceError;

/// The store's after-commit bell (rung with the wallets a transaction wrote events for) and
/// the guard that marks someone as listening. Re-exported because the live event hub in the
/// API waits on it; the bell itself is the store's, since only the store knows when a
/// transaction committed.
pub use satchel_store::events::{BellListener, EventBell};

/// What an event's body shows, read as it is now except for the wallet's balance, which is
/// the balance right after the change (the event's own snapshot, when it has one).
// Built once per rendered event, never stored in bulk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum EventSubject {
    /// `wallet_created`: the wallet.
    Wallet(WalletRecord),
    /// `wallet_send_failure`: the failed payment and its wallet.
    SendFailure {
        /// The failed payment.
        lntx: LnTxRecord,
        /// Its wallet.
        wallet: WalletRecord,
    },
    /// Every other event: the wallet transaction (with its wallet).
    Wtx(WtxRecord),
}

/// Reads and updates the outbox for the dispatcher and the live event hub.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
}

fn missing(what: &str) -> ServiceError {
    ServiceError::Internal(format!("event refers to a missing {what}"))
}

impl Outbox {
    pub(crate) fn new(store: Store) -> Outbox {
        Outbox { store }
    }

    /// The after-commit bell of this process's transactions.
    pub fn bell(&self) -> Arc<EventBell> {
        self.store.event_bell()
    }

    /// Up to `limit` events of `wallet` after `after_seq`, with their `seq`, in order.
    pub async fn wallet_events_after(
        &self,
        wallet: &WalletId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<(i64, EventRecord)>, ServiceError> {
        Ok(self
            .store
            .wallet_events_after(wallet, after_seq, limit)
            .await?)
    }

    /// Up to `limit` events of several wallets, each after its own cursor, in `seq` order.
    pub async fn wallets_events_after(
        &self,
        cursors: &[(WalletId, i64)],
        limit: u64,
    ) -> Result<Vec<(i64, EventRecord)>, ServiceError> {
        Ok(self.store.wallets_events_after(cursors, limit).await?)
    }

    /// The `seq` of `wallet`'s latest event (0 if none).
    pub async fn wallet_event_head(&self, wallet: &WalletId) -> Result<i64, ServiceError> {
        Ok(self.store.wallet_event_head(wallet).await?)
    }

    /// What event `e` is about (see [`EventSubject`]).
    pub async fn subject(&self, e: &EventRecord) -> Result<EventSubject, ServiceError> {
        let snapshot = |mut w: WalletRecord| {
            if let Some(b) = e.balance_msat.and_then(|b| Msat::from_i64(b).ok()) {
                w.balance = b;
            }
            w
        };
        Ok(match e.name {
            EventName::WalletCreated => EventSubject::Wallet(snapshot(self.wallet_of(e).await?)),
            EventName::WalletSendFailure => {
                let lntx = self
                    .store
                    .lntx(e.lntx_id.as_ref().ok_or_else(|| missing("lntx"))?)
                    .await?
                    .ok_or_else(|| missing("lntx"))?;
                let wallet = snapshot(self.wallet_of(e).await?);
                EventSubject::SendFailure { lntx, wallet }
            }
            _ => {
                let mut wtx = self
                    .store
                    .wtx(e.wtx_id.as_ref().ok_or_else(|| missing("wtx"))?)
                    .await?
                    .ok_or_else(|| missing("wtx"))?;
                wtx.wallet = snapshot(wtx.wallet);
                EventSubject::Wtx(wtx)
            }
        })
    }

    async fn wallet_of(&self, e: &EventRecord) -> Result<WalletRecord, ServiceError> {
        let id = e.wallet_id.as_ref().ok_or_else(|| missing("wallet"))?;
        let w = self.store.wallet(id).await?;
        w.ok_or_else(|| missing("wallet"))
    }

    /// Freezes `body` as event `id`'s body unless one was frozen first; returns the frozen
    /// body (every delivery and every later reader then sends the same bytes).
    pub async fn freeze_body(&self, id: &EventId, body: &str) -> Result<String, ServiceError> {
        Ok(self.store.set_event_body(id, body).await?)
    }

    /// Leases up to `limit` deliveries due at `now` for `lease_secs`, skipping the webhooks in
    /// `exclude` (those already being delivered to).
    pub async fn claim_due_deliveries(
        &self,
        now: i64,
        limit: u64,
        lease_secs: i64,
        exclude: &[WebhookId],
    ) -> Result<Vec<DueDelivery>, ServiceError> {
        Ok(self
            .store
            .claim_due_deliveries(now, limit, lease_secs, exclude)
            .await?)
    }

    /// Records an attempt and what it leads to (delivered, retry at, dead).
    pub async fn finish_attempt(
        &self,
        a: &AttemptRecord,
        outcome: AttemptOutcome,
    ) -> Result<(), ServiceError> {
        Ok(self.store.finish_attempt(a, outcome).await?)
    }
}
