//! `xpay` (v24.11), as the fake plays it: routed once through the fake's `getroutes` (so
//! layers and the fee and delay limits apply), then sent by the backend as one part.

use serde_json::{Value, json};

use satchel_domain::{Bolt11, FailureReason, now_secs};
use satchel_lightning::LnError;

use super::askrene::{FoundRoute, MAX_DELAY, PAY_USER_ERROR, RouteQuery};
use super::{FakeCln, Params, Part, PartFate, PartStatus, RpcFailure, backend_failure};
use satchel_cln::rpc;

/// xpay's default `retry_for`, seconds.
const DEFAULT_RETRY_FOR: u64 = 60;
/// xpay's fee floor when no `maxfee` is given.
const MIN_DEFAULT_MAXFEE: u64 = 5000;

impl Part {
    /// `xpay`'s success result (one part, no failed ones).
    fn xpay_result(&self) -> Value {
        json!({
            "payment_preimage": self.preimage.map(|p| p.to_hex()),
            "failed_parts": 0,
            "successful_parts": 1,
            "amount_msat": self.amount_msat,
            "amount_sent_msat": self.amount_sent_msat,
        })
    }
}

/// What xpay says about the one attempt the fake made, when it failed on the way.
fn attempt_summary(route: &FoundRoute) -> String {
    route.hops.first().map_or_else(String::new, |h| {
        format!(
            "We got temporary_channel_failure for {}, assuming it can't carry {}msat. ",
            h.scidd_text(),
            h.amount_out
        )
    })
}

/// The error xpay ends with after its one attempt failed with `reason`.
fn xpay_failure(reason: FailureReason, route: &FoundRoute) -> RpcFailure {
    let prior = attempt_summary(route);
    match reason {
        FailureReason::IncorrectPaymentDetails => RpcFailure::new(
            rpc::PAY_DESTINATION_PERM_FAIL,
            "Destination said it doesn't know invoice: incorrect_or_unknown_payment_details",
        ),
        // CLN's own text, doubled "after" included.
        FailureReason::Timeout => RpcFailure::new(
            rpc::PAY_UNSPECIFIED_ERROR,
            format!("Timed out after after 1 attempts. {prior}"),
        ),
        FailureReason::NoRoute | FailureReason::InsufficientBalance | FailureReason::Error => {
            RpcFailure::new(
                rpc::PAY_UNSPECIFIED_ERROR,
                format!(
                    "Failed after 1 attempts. {prior}Then routing failed: We could not find a \
                     usable set of paths."
                ),
            )
        }
    }
}

impl FakeCln {
    #[allow(clippy::too_many_lines)]
    pub(super) async fn xpay(&self, p: Params) -> super::RpcResult {
        let text = p.req_string("invstring")?;
        let msat = p.msat("amount_msat")?;
        let maxfee = p.msat("maxfee")?;
        let user_layers = p.strings("layers")?.unwrap_or_default();
        let retry_for = p.u64("retry_for")?.unwrap_or(DEFAULT_RETRY_FOR);
        let partial = p.msat("partial_msat")?;
        let maxdelay = match p.u64("maxdelay")? {
            None => MAX_DELAY,
            Some(d) => u32::try_from(d).map_err(|_| {
                Params::bad(
                    "maxdelay",
                    "an unsigned 32 bit integer",
                    p.get("maxdelay").unwrap_or(&Value::Null),
                )
            })?,
        };
        p.string("payer_note")?;
        let label = match p.get("label") {
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => p.string("label")?,
        };
        p.hash("localinvreqid")?;
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("lno") || lower.starts_with("lni") || text.contains('@') {
            return Err(RpcFailure::params(
                "the fake pays only bolt11 invoices (no offers, bolt12 invoices or BIP353)",
            ));
        }
        let invoice = Bolt11::parse(&text)
            .map_err(|e| RpcFailure::params(format!("Invalid bolt11 invoice: {e}")))?;
        let info = self
            .inner
            .backend
            .node_info()
            .await
            .map_err(|e| backend_failure(&e))?;
        if invoice.network() != info.network {
            return Err(RpcFailure::params(format!(
                "Invalid bolt11 invoice: invoice is for {}, not {}",
                invoice.network().name(),
                info.network.name()
            )));
        }
        if p.get("localinvreqid").is_some() {
            return Err(RpcFailure::params(
                "Cannot use localinvreqid with BOLT11 payment",
            ));
        }
        let amount = match (invoice.amount(), msat) {
            (None, None) => return Err(RpcFailure::params("amount_msat required")),
            (Some(_), Some(_)) => return Err(RpcFailure::params("amount_msat unnecessary")),
            (Some(a), None) => a.as_msat(),
            (None, Some(a)) => a,
        };
        if let Some(part) = partial {
            if part > amount {
                return Err(RpcFailure::params(format!(
                    "partial_msat must be less or equal to total amount {amount}msat"
                )));
            }
            if part == 0 {
                return Err(RpcFailure::params("partial_msat must be non-zero"));
            }
            if part < amount {
                return Err(RpcFailure::params(
                    "the fake cannot pay part of an invoice (partial_msat below the amount)",
                ));
            }
        }
        if amount == 0 {
            return Err(RpcFailure::params(
                "Cannot pay bolt11 invoice with zero amount",
            ));
        }
        let fee_limit = maxfee.unwrap_or_else(|| (amount / 100).max(MIN_DEFAULT_MAXFEE));
        let now = now_secs();
        let expires_at = invoice.expires_at_secs();
        if now > expires_at {
            return Err(RpcFailure::new(
                rpc::PAY_INVOICE_EXPIRED,
                format!("Invoice expired {} seconds ago", now - expires_at),
            ));
        }
        let hash = invoice.payment_hash();
        {
            let st = self.state();
            let mine = || st.parts.iter().filter(|x| x.payment_hash == hash);
            if mine().any(|x| x.status == PartStatus::Complete) {
                return Err(RpcFailure::new(
                    rpc::PAY_INVOICE_ALREADY_PAID,
                    "Already paid this invoice successfully",
                ));
            }
            if mine().any(|x| x.status == PartStatus::Pending) {
                return Err(RpcFailure::new(
                    rpc::PAY_IN_PROGRESS,
                    "There already is a payment with this payment_hash in progress",
                ));
            }
        }
        // xpay asks getroutes with its own layers added; a getroutes failure before any
        // attempt is xpay's answer, prefixed.
        let mut layers = user_layers;
        layers.extend(["auto.localchans", "auto.sourcefree"].map(str::to_owned));
        if self.options().has_xpay_layer() {
            layers.push("xpay".to_owned());
        }
        let failed = |e: RpcFailure| RpcFailure::new(e.code, format!("Failed: {}", e.message));
        if maxdelay > MAX_DELAY {
            return Err(failed(RpcFailure::new(
                PAY_USER_ERROR,
                format!("maximum delay allowed is {MAX_DELAY}"),
            )));
        }
        self.check_layers("layers", &layers).map_err(failed)?;
        let route = self
            .find_route(&RouteQuery {
                dest: invoice.payee(),
                amount,
                layers: &layers,
                maxfee: fee_limit,
                final_cltv: u32::try_from(invoice.min_final_cltv_expiry_delta())
                    .unwrap_or(u32::MAX),
                maxdelay,
            })
            .await
            .map_err(failed)?;
        let dest = invoice.payee().to_hex();
        let (id, outcome) = self
            .send_bolt11_part(&invoice, amount, fee_limit, retry_for, label)
            .await?;
        // A request the backend refused outright sent nothing: no part is left behind. Any
        // other failure was an attempt, and stays as a failed part.
        let refused = matches!(outcome, Err(LnError::Rejected(_) | LnError::NotSupported));
        match self.settle_part(id, &outcome, refused, &dest) {
            PartFate::Removed => {
                return Err(match outcome {
                    Err(e) => RpcFailure::new(rpc::PAY_UNSPECIFIED_ERROR, format!("Failed: {e}")),
                    Ok(_) => RpcFailure::new(rpc::PAY_UNSPECIFIED_ERROR, "payment vanished"),
                });
            }
            PartFate::Pending => self.spawn_resolver(id, hash, dest.clone()),
            PartFate::Final => {}
        }
        let part = self
            .wait_part_final(id, None)
            .await
            .ok_or_else(|| RpcFailure::new(-1, "payment vanished"))?;
        match part.status {
            PartStatus::Complete => Ok(part.xpay_result()),
            _ => Err(xpay_failure(
                part.reason.unwrap_or(FailureReason::Error),
                &route,
            )),
        }
    }
}
