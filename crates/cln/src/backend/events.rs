//! The incoming event stream ([`InvoiceEvents`]): paid invoices, and keysends CLN's keysend
//! plugin received, from `waitanyinvoice` in `pay_index` order.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use satchel_domain::{CustomRecords, PaymentHash, Preimage, now_secs};
use satchel_lightning::{IncomingEvent, IncomingKind, InvoiceEvents, LnError};

use super::{
    ClnBackend, KEYSEND_LABEL_PREFIX, KEYSEND_MESSAGE_TLV, ceil_secs, ln_error, msat, parse,
};
use crate::rpc::{self, ClnMsat, Invoice};
use crate::transport::RpcError;

/// Records carried by a received keysend, as far as CLN exposes them: the keysend plugin turns
/// a chat message (TLV 34349334) into the description `keysend: <message>`; other TLVs are not
/// exposed by `listinvoices`/`waitanyinvoice`.
fn keysend_records(description: Option<&str>) -> CustomRecords {
    let mut records = CustomRecords::default();
    if let Some(msg) = description.and_then(|d| d.strip_prefix("keysend: ")) {
        records
            .0
            .insert(KEYSEND_MESSAGE_TLV, msg.as_bytes().to_vec());
    }
    records
}

/// A paid invoice from `waitanyinvoice` as an event.
fn incoming_event(inv: &Invoice) -> Result<IncomingEvent, LnError> {
    let seq = inv.pay_index.ok_or_else(|| {
        LnError::Transport("waitanyinvoice: paid invoice without pay_index".into())
    })?;
    let payment_hash = PaymentHash::from_hex(&inv.payment_hash)
        .ok_or_else(|| LnError::Transport(format!("bad payment_hash {}", inv.payment_hash)))?;
    let amount_received = msat(inv.amount_received_msat.unwrap_or(ClnMsat(0)))?;
    let settled_at_secs = inv.paid_at.unwrap_or_else(now_secs);
    let keysend_preimage = inv
        .label
        .starts_with(KEYSEND_LABEL_PREFIX)
        .then(|| inv.payment_preimage.as_deref().and_then(Preimage::from_hex))
        .flatten()
        .filter(|p| p.hash() == payment_hash);
    let kind = match keysend_preimage {
        Some(preimage) => IncomingKind::KeysendReceived {
            payment_hash,
            preimage,
            amount_received,
            custom_records: keysend_records(inv.description.as_deref()),
            settled_at_secs,
        },
        None => IncomingKind::InvoiceSettled {
            payment_hash,
            amount_received,
            settled_at_secs,
        },
    };
    Ok(IncomingEvent { seq, kind })
}

#[async_trait]
impl InvoiceEvents for ClnBackend {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        let mut events = Vec::new();
        let mut cursor = after;
        while events.len() < limit {
            // Block (up to `wait`) only for the first event; then take what is already there.
            let secs = if events.is_empty() {
                ceil_secs(wait)
            } else {
                0
            };
            let call = self.rpc.call(
                "waitanyinvoice",
                json!({ "lastpay_index": cursor, "timeout": secs }),
                Duration::from_secs(secs) + self.request_timeout,
            );
            // CLN's timeout is whole seconds: honour a finer `wait` on our side. Dropping the
            // call loses nothing (the invoice is still returned by the next call).
            let answer = if secs > 0 && wait < Duration::from_secs(secs) {
                match tokio::time::timeout(wait, call).await {
                    Ok(answer) => answer,
                    Err(_) => break,
                }
            } else {
                call.await
            };
            let inv: Invoice = match answer {
                Ok(v) => parse("waitanyinvoice", v)?,
                Err(RpcError::Rpc {
                    code: rpc::INVOICE_WAIT_TIMED_OUT,
                    ..
                }) => break,
                Err(e) if events.is_empty() => return Err(ln_error(e)),
                // Keep what we have; the caller asks again from the last one.
                Err(_) => break,
            };
            let event = incoming_event(&inv)?;
            if event.seq <= cursor {
                return Err(LnError::Transport(format!(
                    "waitanyinvoice returned pay_index {} after {cursor}",
                    event.seq
                )));
            }
            cursor = event.seq;
            events.push(event);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keysend_invoice_becomes_keysend_event() {
        let pre = Preimage([3; 32]);
        let inv = Invoice {
            label: "keysend-1700000000.000000001".to_owned(),
            status: "paid".to_owned(),
            payment_hash: pre.hash().to_hex(),
            bolt11: Some("lnbcrt...".to_owned()),
            bolt12: None,
            description: Some("keysend: hello".to_owned()),
            expires_at: Some(1),
            amount_received_msat: Some(ClnMsat(21_000)),
            paid_at: Some(1_700_000_000),
            pay_index: Some(7),
            payment_preimage: Some(pre.to_hex()),
        };
        let ev = incoming_event(&inv).unwrap();
        assert_eq!(ev.seq, 7);
        match ev.kind {
            IncomingKind::KeysendReceived {
                preimage,
                amount_received,
                custom_records,
                ..
            } => {
                assert_eq!(preimage, pre);
                assert_eq!(amount_received.as_msat(), 21_000);
                assert_eq!(custom_records.0[&KEYSEND_MESSAGE_TLV], b"hello".to_vec());
            }
            other => panic!("{other:?}"),
        }
        let mut ours = inv;
        ours.label = "satchel-abc".to_owned();
        assert!(matches!(
            incoming_event(&ours).unwrap().kind,
            IncomingKind::InvoiceSettled { .. }
        ));
    }
}
