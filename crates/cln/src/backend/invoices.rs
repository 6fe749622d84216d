//! Invoices ([`Invoices`]): created with our preimage under a `satchel-<hash>` label,
//! cancelled by deleting them (CLN has no cancelled state, so the cancellation is remembered
//! in the `datastore`), taken for an internal payment, and looked up.

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use satchel_domain::{Bolt11, PaymentHash, now_secs};
use satchel_lightning::{InternalTake, InvoiceState, Invoices, LnError, NewInvoice};

use super::{CANCELLED_DATASTORE_KEY, ClnBackend, invoice_label, ln_error, msat, parse};
use crate::rpc::{self, ClnMsat, Invoice, InvoiceCreated, ListDatastore, ListInvoices};
use crate::transport::RpcError;

fn invoice_state(inv: &Invoice) -> Result<InvoiceState, LnError> {
    Ok(match inv.status.as_str() {
        "paid" => InvoiceState::Settled {
            amount_received: msat(inv.amount_received_msat.unwrap_or(ClnMsat(0)))?,
            settled_at_secs: inv.paid_at.unwrap_or(0),
        },
        "expired" => InvoiceState::Canceled,
        _ if inv.expires_at.is_some_and(|t| t <= now_secs()) => InvoiceState::Canceled,
        _ => InvoiceState::Open,
    })
}

impl ClnBackend {
    async fn find_invoice(&self, hash: PaymentHash) -> Result<Option<Invoice>, LnError> {
        let list: ListInvoices = self
            .call_as("listinvoices", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        Ok(list.invoices.into_iter().next())
    }
}

#[async_trait]
impl Invoices for ClnBackend {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        let hash = req.preimage.hash();
        let mut params = json!({
            "amount_msat": req.amount.map_or_else(|| json!("any"), |a| json!(a.as_msat())),
            "label": invoice_label(&hash),
            "description": req.memo,
            "expiry": req.expiry_secs,
            "preimage": req.preimage.to_hex(),
        });
        if let Some(h) = req.description_hash {
            let memo_hash: [u8; 32] = Sha256::digest(req.memo.as_bytes()).into();
            if memo_hash != h {
                return Err(LnError::Rejected(
                    "Core Lightning cannot put a bare description hash in an invoice: it hashes \
                     the description itself. Send the full description (whose SHA-256 is the \
                     description_hash) as the memo."
                        .to_owned(),
                ));
            }
            params["deschashonly"] = json!(true);
        }
        match self.rpc.call("invoice", params, self.request_timeout).await {
            Ok(v) => {
                let created: InvoiceCreated = parse("invoice", v)?;
                let bolt11 = Bolt11::parse(&created.bolt11)
                    .map_err(|e| LnError::Transport(format!("invoice: {e}")))?;
                if bolt11.payment_hash() != hash {
                    return Err(LnError::Transport(
                        "CLN made an invoice for another payment hash".to_owned(),
                    ));
                }
                Ok(bolt11)
            }
            Err(RpcError::Rpc { code, message, .. })
                if code == rpc::INVOICE_LABEL_ALREADY_EXISTS
                    || code == rpc::INVOICE_PREIMAGE_ALREADY_EXISTS =>
            {
                // Created before (a retry): return that invoice.
                let existing = self
                    .find_invoice(hash)
                    .await?
                    .and_then(|inv| inv.bolt11)
                    .ok_or_else(|| LnError::Rejected(format!("{message} (CLN error {code})")))?;
                Bolt11::parse(&existing).map_err(|e| LnError::Transport(format!("invoice: {e}")))
            }
            Err(e) => Err(ln_error(e)),
        }
    }

    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        let list: ListInvoices = self
            .call_as("listinvoices", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        for inv in list.invoices.iter().filter(|i| i.status == "unpaid") {
            // Remembered first: CLN has no cancelled state, a deleted invoice is simply gone.
            self.call(
                "datastore",
                json!({
                    "key": cancelled_key(&hash),
                    "string": now_secs().to_string(),
                    "mode": "create-or-replace",
                }),
            )
            .await?;
            match self
                .rpc
                .call(
                    "delinvoice",
                    json!({ "label": inv.label, "status": "unpaid" }),
                    self.request_timeout,
                )
                .await
            {
                // Gone meanwhile, or paid/expired meanwhile: not an error.
                Ok(_) => {}
                Err(RpcError::Rpc { code, .. })
                    if code == rpc::INVOICE_NOT_FOUND || code == rpc::INVOICE_STATUS_UNEXPECTED => {
                }
                Err(e) => return Err(ln_error(e)),
            }
        }
        Ok(())
    }

    /// `delinvoice` with `status: unpaid` judges and deletes in one step inside `lightningd`,
    /// where an HTLC pays the invoice: if it was paid first, it fails with "Invoice status is
    /// paid not unpaid". A deleted invoice is final (CLN fails every later HTLC for it).
    async fn take_for_internal(&self, hash: PaymentHash) -> Result<InternalTake, LnError> {
        let list: ListInvoices = self
            .call_as("listinvoices", json!({ "payment_hash": hash.to_hex() }))
            .await?;
        for inv in &list.invoices {
            match inv.status.as_str() {
                "paid" => return Ok(InternalTake::NodePaid),
                "unpaid" => {}
                _ => continue,
            }
            // Remembered first, as `cancel_invoice` does: a deleted invoice is simply gone.
            self.call(
                "datastore",
                json!({
                    "key": cancelled_key(&hash),
                    "string": now_secs().to_string(),
                    "mode": "create-or-replace",
                }),
            )
            .await?;
            match self
                .rpc
                .call(
                    "delinvoice",
                    json!({ "label": inv.label, "status": "unpaid" }),
                    self.request_timeout,
                )
                .await
            {
                Ok(_) => {}
                Err(RpcError::Rpc { code, .. }) if code == rpc::INVOICE_NOT_FOUND => {}
                // Paid or expired meanwhile: the error says which (`current_status`); ask if
                // it does not.
                Err(RpcError::Rpc { code, data, .. }) if code == rpc::INVOICE_STATUS_UNEXPECTED => {
                    let current = match data
                        .as_ref()
                        .and_then(|d| d.get("current_status"))
                        .and_then(Value::as_str)
                    {
                        Some(s) => Some(s.to_owned()),
                        None => self.find_invoice(hash).await?.map(|i| i.status),
                    };
                    if current.as_deref() == Some("paid") {
                        return Ok(InternalTake::NodePaid);
                    }
                }
                Err(e) => return Err(ln_error(e)),
            }
        }
        Ok(InternalTake::Taken)
    }

    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        if let Some(inv) = self.find_invoice(hash).await? {
            return invoice_state(&inv).map(Some);
        }
        let list: ListDatastore = self
            .call_as("listdatastore", json!({ "key": cancelled_key(&hash) }))
            .await?;
        let key = cancelled_key(&hash);
        Ok(list
            .datastore
            .iter()
            .any(|e| e.key == key)
            .then_some(InvoiceState::Canceled))
    }
}

/// The `datastore` key recording that we cancelled (deleted) the invoice of `hash`.
fn cancelled_key(hash: &PaymentHash) -> Vec<String> {
    let mut key: Vec<String> = CANCELLED_DATASTORE_KEY
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    key.push(hash.to_hex());
    key
}
