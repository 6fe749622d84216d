//! Paying one of our own invoices: settled inside the ledger (no node, no fee), after taking
//! the invoice away from the node so that an outside payer and a wallet can never both pay it;
//! and the batched cancelling on the node of invoices settled that way.

use std::time::Duration;

use satchel_domain::{Bolt11, LnTxId, PaymentHash, WalletId, WtxId, WtxType, now_secs};
use satchel_lightning::{InternalTake, TakeKind};
use satchel_store::{InternalPayCmd, InternalPayError, LinkClaim, LnTxRecord};

use super::{PaymentResult, PaymentService};
use crate::ServiceError;
use crate::auth::Caller;

/// How long internally settled invoices gather before the node is asked to cancel them.
const CANCEL_GATHER: Duration = Duration::from_millis(20);

fn internal_pay_err(e: InternalPayError, path_key: &str) -> ServiceError {
    match e {
        InternalPayError::AlreadyPaid => ServiceError::AlreadyPaid,
        InternalPayError::Expired => ServiceError::Invoice(satchel_domain::Bolt11Error::Expired),
        InternalPayError::ZeroAmount => {
            ServiceError::Invoice(satchel_domain::Bolt11Error::ZeroAmount)
        }
        InternalPayError::InsufficientBalance(b) => {
            ServiceError::InsufficientBalance(b.sats_floor())
        }
        InternalPayError::WalletNotFound => ServiceError::WalletNotFound(path_key.to_owned()),
        InternalPayError::NotInternal => ServiceError::Internal("internal invoice vanished".into()),
        InternalPayError::OverLimit(max) => ServiceError::Invalid(format!(
            "Sends are limited to: {} satoshi per request",
            max.sats_floor()
        )),
        InternalPayError::LinkSpent => ServiceError::LinkSpent,
        InternalPayError::Store(s) => s.into(),
    }
}

impl PaymentService {
    /// Asks the node to cancel an invoice the ledger settled internally, so that the outside
    /// world cannot pay it too. One task drains the queue and cancels whatever has gathered in
    /// one call (one write on the embedded node, flushed within a second). Best effort: if it
    /// fails, an outside payment still cannot be credited twice (it lands in `sys:unclaimed`).
    fn cancel_on_node(&self, hash: PaymentHash) {
        let tx = self.cancels.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PaymentHash>();
            let ln = self.ctx.ln.clone();
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    // Let a batch gather: one durable node write per batch, not per payment.
                    tokio::time::sleep(CANCEL_GATHER).await;
                    let mut batch = vec![first];
                    while let Ok(h) = rx.try_recv() {
                        batch.push(h);
                    }
                    if let Err(e) = ln.cancel_invoices(&batch).await {
                        tracing::warn!(invoices = batch.len(), error = %e, "could not cancel internally settled invoices on the node");
                    }
                }
            });
            tx
        });
        if tx.send(hash).is_err() {
            tracing::warn!(%hash, "invoice canceller stopped; the node invoice stays open");
        }
    }

    /// Whether `invoice` (signature checked) is the invoice we issued as `stored`: its payee
    /// (explicit or recovered from the signature) is our node, and its amount, hash and
    /// description are the ones we signed.
    pub(super) fn is_our_invoice(&self, invoice: &Bolt11, stored: &LnTxRecord) -> bool {
        if stored.is_keysend || invoice.payee() != self.ctx.pubkey() {
            return false;
        }
        if invoice.as_str() == stored.payment_request {
            return true;
        }
        let Ok(ours) = Bolt11::parse(&stored.payment_request) else {
            return false;
        };
        invoice.payee() == ours.payee()
            && invoice.amount() == ours.amount()
            && invoice.payment_hash() == ours.payment_hash()
            && invoice.description() == ours.description()
            && invoice.description_hash() == ours.description_hash()
    }

    /// Settles one of our invoices inside the ledger. With `expect_request`, `Ok(None)` means
    /// the hash is not one of our invoices with exactly that text (nothing was written).
    ///
    /// The invoice is first taken away from the node ([`satchel_lightning::Invoices::
    /// take_for_internal`]), so that an outside payer and a wallet can never both pay it: if
    /// the node was paid first, the wallet is refused and not debited.
    // The withdraw path's inputs plus the optional link claim; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pay_internal(
        &self,
        caller: &Caller,
        path_key: &str,
        wallet_id: &WalletId,
        hash: PaymentHash,
        pass_thru: String,
        expect_request: Option<String>,
        claim: Option<&LinkClaim>,
        wtx_type: WtxType,
    ) -> Result<Option<PaymentResult>, ServiceError> {
        let checked_text = expect_request.is_some();
        let cmd = InternalPayCmd {
            account_id: caller.account_id.clone(),
            payer: wallet_id.clone(),
            payment_hash: hash,
            out_lntx_id: LnTxId::generate(),
            payer_wtx_id: WtxId::generate(),
            payee_wtx_id: WtxId::generate(),
            payer_pass_thru: pass_thru,
            now: now_secs(),
            expect_request,
            send_limit: self.ctx.cfg.max_send,
            payer_wtx_type: wtx_type,
        };
        let ln = &self.ctx.ln;
        let kind = ln.take_kind();
        let refused = |e: InternalPayError| match e {
            InternalPayError::NotInternal if checked_text => Ok(None),
            e => Err(internal_pay_err(e, path_key)),
        };
        // A cancel on the node cannot be undone: refuse first what the ledger would refuse,
        // so that nobody can cancel somebody else's invoice by failing to pay it.
        if kind == TakeKind::Final
            && let Err(e) = self.ctx.store.check_internal_claiming(&cmd, claim).await
        {
            return refused(e);
        }
        match ln.take_for_internal(hash).await {
            Ok(InternalTake::Taken) => {}
            Ok(InternalTake::NodePaid) => {
                if kind == TakeKind::Provisional && checked_text {
                    // The text was not checked yet; the checked path decides what it is.
                    return Ok(None);
                }
                tracing::info!(%hash, "invoice already paid through the node; internal payment refused");
                return Err(ServiceError::AlreadyPaid);
            }
            Err(e) => {
                tracing::error!(%hash, error = %e, "could not take the invoice from the node; internal payment refused");
                if kind == TakeKind::Provisional {
                    ln.release_internal(hash).await;
                }
                return Err(ServiceError::Internal(format!(
                    "taking invoice {hash} from the node: {e}"
                )));
            }
        }
        let paid = match self.ctx.store.pay_internal_claiming(&cmd, claim).await {
            Ok(p) => p,
            Err(e) => {
                if kind == TakeKind::Provisional {
                    ln.release_internal(hash).await;
                }
                return refused(e);
            }
        };
        // The ledger says paid. A provisional take is made durable on the node in batches; a
        // final one already is.
        if kind == TakeKind::Provisional {
            self.cancel_on_node(hash);
        }
        crate::count_payment("internal", "succeeded");
        Ok(Some(PaymentResult::Done {
            wtx: paid.payer_wtx,
            fee_wtx: None,
        }))
    }
}
