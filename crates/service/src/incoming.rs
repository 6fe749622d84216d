//! Money arriving from the node: settled invoices and keysends, credited exactly once.
//!
//! The node's event stream is replayable from a cursor. We persist the cursor *after* booking a
//! batch, so a crash replays some events; every credit is idempotent per payment hash, so a replay
//! changes nothing.

use std::sync::Arc;
use std::time::Duration;

use satchel_domain::{CustomRecords, LnTxId, WalletId, WtxId};
use satchel_lightning::{IncomingEvent, IncomingKind};
use satchel_store::{CreditOutcome, KeysendCredit};
use serde_json::{Map, Value};

use crate::{Ctx, ServiceError};

/// Name of the persisted cursor of the node's incoming stream.
pub const CURSOR: &str = "ln_incoming";

/// TLVs whose values are JSON documents (Podcasting 2.0 / satoshis.stream metadata); shown to
/// clients decoded, as LNPay did.
const JSON_TLVS: [u64; 2] = [7_629_169, 55_555_555];

/// Custom records as clients see them: text values, JSON-decoded for [`JSON_TLVS`].
fn shown_records(records: &CustomRecords) -> Map<String, Value> {
    let mut shown = Map::new();
    for (t, v) in &records.0 {
        let text = CustomRecords::display_value(*t, v);
        let value = if JSON_TLVS.contains(t) {
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        shown.insert(t.to_string(), value);
    }
    shown
}

/// LNPay's memo for an incoming keysend: names the wallet-routing record.
fn keysend_memo(records: &CustomRecords) -> String {
    match satchel_domain::WALLET_ROUTING_TLVS
        .iter()
        .find_map(|t| records.0.get(t).map(|v| (t, v)))
    {
        Some((t, v)) => format!(
            "keysend/amp: custom record [{t}] [{}]",
            CustomRecords::display_value(*t, v)
        ),
        None => "keysend/amp: custom record [] []".to_owned(),
    }
}

/// Decides, before the node claims a keysend, whether it has a wallet to land in: a routing TLV
/// (696969, 112111100, 112111100102) naming one of our wallets, TLV 696969 holding an active
/// keysend address's value (its link id), or the configured default keysend wallet. Anything else is rejected by the node, so no money arrives for nobody.
pub struct KeysendPolicy {
    store: satchel_store::Store,
    default_wallet: Option<WalletId>,
}

impl KeysendPolicy {
    /// A policy over our wallets.
    pub fn new(store: satchel_store::Store, default_wallet: Option<WalletId>) -> KeysendPolicy {
        KeysendPolicy {
            store,
            default_wallet,
        }
    }
}

#[async_trait::async_trait]
impl satchel_lightning::IncomingPolicy for KeysendPolicy {
    async fn accept_keysend(&self, records: &CustomRecords) -> bool {
        if let Some(w) = records.routed_wallet()
            && let Ok(id) = WalletId::parse(&w)
        {
            match self.store.wallet(&id).await {
                Ok(Some(_)) => return true,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "keysend policy: database error; refusing");
                    return false;
                }
            }
        }
        match crate::lnurlp::keysend_address_wallet(&self.store, records).await {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "keysend policy: database error; refusing");
                return false;
            }
        }
        self.default_wallet.is_some()
    }
}

/// Incoming payment processing.
#[derive(Clone)]
pub struct IncomingService {
    ctx: Arc<Ctx>,
}

impl IncomingService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> IncomingService {
        IncomingService { ctx }
    }

    /// Processes the events after the stored cursor (waiting up to `wait` for some); returns how
    /// many were processed.
    pub async fn process_batch(&self, wait: Duration) -> Result<usize, ServiceError> {
        let after = self.ctx.store.cursor(CURSOR).await?;
        let events = self
            .ctx
            .ln
            .events_after(after, 256, wait)
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let n = events.len();
        let mut last = after;
        for ev in events {
            self.process(&ev).await?;
            last = last.max(ev.seq);
        }
        if last > after {
            self.ctx.store.set_cursor(CURSOR, last).await?;
        }
        Ok(n)
    }

    /// Books one event (idempotent).
    pub async fn process(&self, ev: &IncomingEvent) -> Result<CreditOutcome, ServiceError> {
        let out = match &ev.kind {
            IncomingKind::InvoiceSettled {
                payment_hash,
                amount_received,
                settled_at_secs,
            } => {
                self.ctx
                    .store
                    .credit_invoice(
                        payment_hash,
                        *amount_received,
                        *settled_at_secs,
                        &WtxId::generate(),
                    )
                    .await?
            }
            IncomingKind::KeysendReceived {
                payment_hash,
                preimage,
                amount_received,
                custom_records,
                settled_at_secs,
            } => {
                // Kill point: the node claimed the keysend and recorded it, nothing is booked.
                satchel_store::crash::crash_point("keysend_before_credit");
                let wallet_id = self.route(custom_records).await?;
                let shown = shown_records(custom_records);
                let memo = keysend_memo(custom_records);
                let out = self
                    .ctx
                    .store
                    .credit_keysend(&KeysendCredit {
                        lntx_id: LnTxId::generate(),
                        wtx_id: WtxId::generate(),
                        wallet_id,
                        payment_hash: *payment_hash,
                        preimage: *preimage,
                        amount: *amount_received,
                        custom_records: Value::Object(shown).to_string(),
                        memo,
                        node_id: self.ctx.cfg.node_id.clone(),
                        dest_pubkey: self.ctx.pubkey().to_hex(),
                        settled_at: *settled_at_secs,
                    })
                    .await?;
                // Kill point: booked and committed, the cursor not yet past the event.
                satchel_store::crash::crash_point("keysend_after_credit");
                out
            }
        };
        if matches!(out, CreditOutcome::Unclaimed) {
            tracing::warn!(
                seq = ev.seq,
                "node received a payment that no wallet can claim; booked to sys:unclaimed"
            );
        }
        Ok(out)
    }

    /// The wallet an incoming keysend is for: a routing TLV naming one of our wallets, else a
    /// keysend address's link (TLV 696969), else the configured default keysend wallet.
    async fn route(&self, records: &CustomRecords) -> Result<Option<WalletId>, ServiceError> {
        if let Some(w) = records.routed_wallet()
            && let Ok(id) = WalletId::parse(&w)
            && self.ctx.store.wallet(&id).await?.is_some()
        {
            return Ok(Some(id));
        }
        // A keysend address (`/.well-known/keysend/<username>`): TLV 696969 names the link.
        if let Some(id) = crate::lnurlp::keysend_address_wallet(&self.ctx.store, records).await? {
            return Ok(Some(id));
        }
        Ok(self.ctx.cfg.default_keysend_wallet.clone())
    }

    /// Consumes the node's stream until `shutdown` flips to true.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                r = self.process_batch(Duration::from_secs(5)) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "incoming payment processing failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}
