//! Keysends with our own preimage: route, `createonion`, `sendonion`, `waitsendpay`.
//!
//! CLN's own `keysend`/`xkeysend` draw a random preimage, which would break Satchel's
//! idempotency per payment hash, so the onion is built here, one path per attempt, and the
//! channel (or node) a failed attempt blames is excluded from the next route.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use satchel_domain::{FailureReason, PaymentHash};
use satchel_lightning::{LnError, NodeInfo as _, PayOutcome, PayRequest, PayTarget};

use super::routes::RouteAnswer;
use super::{ClnBackend, KEYSEND_FINAL_CLTV, ceil_secs, ln_error, parse};
use crate::onion::{forward_payload, keysend_payload, parse_scid};
use crate::rpc::{self, CreateOnion, SendPay};
use crate::transport::RpcError;

/// How many routes a keysend tries before giving up.
const MAX_KEYSEND_ATTEMPTS: usize = 10;

impl ClnBackend {
    /// Keysend with *our* preimage: a route (`getroutes`, or `getroute` before v24.11), then
    /// `createonion` with the keysend TLVs in the final hop's payload, `sendonion` under our
    /// payment hash and `waitsendpay`. (CLN's own `keysend`/`xkeysend` draw a random preimage,
    /// which would break Satchel's idempotency per payment hash.) One path per attempt; a
    /// failing channel (or node) is excluded and the next route tried until `req.timeout`:
    /// `getroute` takes the exclusions as a parameter, `getroutes` through an askrene layer of
    /// this payment's own, removed again at the end.
    pub(super) async fn pay_keysend(
        &self,
        req: &PayRequest,
        deadline: Instant,
    ) -> Result<PayOutcome, LnError> {
        let mut layer = None;
        let outcome = self.keysend_attempts(req, deadline, &mut layer).await;
        if let Some(name) = layer
            && let Err(e) = self
                .call("askrene-remove-layer", json!({ "layer": name }))
                .await
        {
            // A leftover layer only holds this payment's exclusions; CLN forgets
            // non-persistent layers when it restarts.
            tracing::warn!(layer = name, error = %e, "could not remove a keysend's askrene layer");
        }
        outcome
    }

    /// Excludes `item` (`scid/dir` or a node id) from this keysend's later `getroutes` calls,
    /// in the askrene layer `layer` (created on first use).
    async fn exclude_in_layer(
        &self,
        layer: &mut Option<String>,
        hash: PaymentHash,
        item: &str,
    ) -> Result<(), LnError> {
        let name = match layer {
            Some(name) => name.clone(),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let name = format!("satchel-keysend-{}-{nanos}", hash.to_hex());
                self.call("askrene-create-layer", json!({ "layer": name }))
                    .await?;
                *layer = Some(name.clone());
                name
            }
        };
        if item.contains('/') {
            self.call(
                "askrene-update-channel",
                json!({ "layer": name, "short_channel_id_dir": item, "enabled": false }),
            )
            .await?;
        } else {
            self.call(
                "askrene-disable-node",
                json!({ "layer": name, "node": item }),
            )
            .await?;
        }
        Ok(())
    }

    /// After a failed keysend attempt: excludes what `data` blames from the next route.
    /// `false` if there is nothing new to exclude (the keysend gives up).
    async fn exclude_next(
        &self,
        exclude: &mut Vec<String>,
        layer: &mut Option<String>,
        hash: PaymentHash,
        data: Option<&Value>,
    ) -> Result<bool, LnError> {
        if !push_exclusion(exclude, data) {
            return Ok(false);
        }
        if self.version().await?.routes_with_getroutes()
            && let Some(item) = exclude.last()
        {
            // The attempt failed for good: nothing is outstanding if this fails.
            if let Err(e) = self.exclude_in_layer(layer, hash, item).await {
                tracing::warn!(payment_hash = %hash, error = %e, "cannot exclude a failed channel");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The attempts of [`ClnBackend::pay_keysend`]; `layer` receives the name of the askrene
    /// layer it created, if any.
    #[allow(clippy::too_many_lines)]
    async fn keysend_attempts(
        &self,
        req: &PayRequest,
        deadline: Instant,
        layer: &mut Option<String>,
    ) -> Result<PayOutcome, LnError> {
        let PayTarget::Keysend {
            dest,
            amount,
            preimage,
            custom_records: records,
        } = &req.target
        else {
            return Err(LnError::Rejected("not a keysend".to_owned()));
        };
        let (dest, amount, hash) = (*dest, *amount, preimage.hash());
        if dest == self.node_info().await?.pubkey {
            return Err(LnError::Rejected(
                "Core Lightning cannot route a keysend to itself".to_owned(),
            ));
        }
        let give_up = Instant::now() + req.timeout;
        let dest_hex = dest.to_hex();
        let mut exclude: Vec<String> = Vec::new();
        for attempt in 0..MAX_KEYSEND_ATTEMPTS {
            if attempt > 0 && Instant::now() >= give_up {
                // Every earlier attempt failed for good: nothing is outstanding.
                return Ok(PayOutcome::Failed(FailureReason::Timeout));
            }
            let height = self.blockheight().await?;
            let found = self
                .find_route(
                    &dest_hex,
                    amount,
                    req.fee_limit,
                    KEYSEND_FINAL_CLTV,
                    &exclude,
                    layer.as_deref(),
                )
                .await?;
            let route = match found {
                RouteAnswer::Found(route) => route,
                RouteAnswer::Refused { code, message } => {
                    let reason = match code {
                        rpc::PAY_INSUFFICIENT_FUNDS => FailureReason::InsufficientBalance,
                        rpc::PAY_ROUTE_NOT_FOUND
                        | rpc::PAY_ROUTE_TOO_EXPENSIVE
                        | rpc::PAY_DESTINATION_CAPACITY
                            if attempt == 0 =>
                        {
                            self.no_route_reason(amount).await
                        }
                        // Nothing sent yet: a refusal of the request itself.
                        _ if attempt == 0 => {
                            return Err(LnError::Rejected(format!("{message} (CLN error {code})")));
                        }
                        _ => FailureReason::NoRoute,
                    };
                    return Ok(PayOutcome::Failed(reason));
                }
            };
            let (Some(first), Some(last)) = (route.first(), route.last()) else {
                return Ok(PayOutcome::Failed(FailureReason::NoRoute));
            };
            if !last.id.eq_ignore_ascii_case(&dest_hex) || last.amount_msat.0 != amount.as_msat() {
                return Err(LnError::Transport(
                    "CLN returned a route to another node or amount".to_owned(),
                ));
            }
            let fee = first.amount_msat.0.saturating_sub(amount.as_msat());
            if fee > req.fee_limit.as_msat() {
                tracing::info!(
                    payment_hash = %hash,
                    fee,
                    limit = req.fee_limit.as_msat(),
                    "keysend route costs more than the fee limit"
                );
                return Ok(PayOutcome::Failed(FailureReason::NoRoute));
            }
            // getroute's delays are relative to (height + 1), as sendpay uses them.
            let base = height.saturating_add(1);
            let mut hops = Vec::with_capacity(route.len());
            for (i, hop) in route.iter().enumerate() {
                let payload = match route.get(i + 1) {
                    Some(next) => {
                        let scid = parse_scid(&next.channel).ok_or_else(|| {
                            LnError::Transport(format!("bad channel id {:?}", next.channel))
                        })?;
                        forward_payload(next.amount_msat.0, base.saturating_add(next.delay), scid)
                    }
                    None => keysend_payload(
                        amount.as_msat(),
                        base.saturating_add(hop.delay),
                        preimage,
                        records,
                    ),
                };
                hops.push(json!({ "pubkey": hop.id, "payload": hex::encode(payload) }));
            }
            let onion: CreateOnion = self
                .call_as(
                    "createonion",
                    json!({ "hops": hops, "assocdata": hash.to_hex() }),
                )
                .await?;
            let sent = self
                .rpc
                .call(
                    "sendonion",
                    json!({
                        "onion": onion.onion,
                        "first_hop": {
                            "id": first.id,
                            "amount_msat": first.amount_msat.0,
                            "delay": first.delay,
                        },
                        "payment_hash": hash.to_hex(),
                        "shared_secrets": onion.shared_secrets,
                        "label": "satchel-keysend",
                        "destination": dest_hex,
                        "amount_msat": amount.as_msat(),
                    }),
                    self.request_timeout,
                )
                .await;
            match sent {
                Ok(v) => {
                    let part: SendPay = parse("sendonion", v)?;
                    if part.status == "complete" {
                        return Self::succeeded(hash, &part, amount);
                    }
                }
                Err(RpcError::Rpc { code, data, .. }) if code == rpc::PAY_TRY_OTHER_ROUTE => {
                    if self
                        .exclude_next(&mut exclude, layer, hash, data.as_ref())
                        .await?
                    {
                        continue;
                    }
                    return Ok(PayOutcome::Failed(FailureReason::NoRoute));
                }
                Err(RpcError::Rpc { code, message, .. }) => {
                    return self
                        .classify_failure(hash, amount, "sendonion", code, &message)
                        .await;
                }
                Err(e) => return Err(ln_error(e)),
            }
            let wait = give_up.saturating_duration_since(Instant::now());
            let secs = ceil_secs(wait).max(1);
            let waited = self
                .rpc
                .call(
                    "waitsendpay",
                    json!({ "payment_hash": hash.to_hex(), "timeout": secs }),
                    Duration::from_secs(secs) + self.request_timeout,
                )
                .await;
            match waited {
                Ok(v) => {
                    let part: SendPay = parse("waitsendpay", v)?;
                    if part.status == "complete" {
                        return Self::succeeded(hash, &part, amount);
                    }
                    return Ok(self.wait_settled(hash, deadline).await);
                }
                Err(RpcError::Rpc { code, data, .. }) if code == rpc::PAY_TRY_OTHER_ROUTE => {
                    tracing::debug!(payment_hash = %hash, attempt, ?data, "keysend attempt failed");
                    if self
                        .exclude_next(&mut exclude, layer, hash, data.as_ref())
                        .await?
                    {
                        continue;
                    }
                    return Ok(PayOutcome::Failed(FailureReason::NoRoute));
                }
                Err(RpcError::Rpc { code, message, .. }) => {
                    return self
                        .classify_failure(hash, amount, "sendonion", code, &message)
                        .await;
                }
                Err(e) => return Err(ln_error(e)),
            }
        }
        Ok(PayOutcome::Failed(FailureReason::NoRoute))
    }
}

/// Adds the channel (or node) a failed attempt blamed to `getroute`'s `exclude` list. `false`
/// if there is nothing new to exclude.
fn push_exclusion(exclude: &mut Vec<String>, data: Option<&Value>) -> bool {
    let Some(data) = data else { return false };
    let item = match (
        data.get("erring_channel").and_then(Value::as_str),
        data.get("erring_direction").and_then(Value::as_u64),
        data.get("erring_node").and_then(Value::as_str),
    ) {
        (Some(chan), Some(dir), _) => format!("{chan}/{dir}"),
        (_, _, Some(node)) => node.to_owned(),
        _ => return false,
    };
    if exclude.contains(&item) {
        return false;
    }
    exclude.push(item);
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exclusions() {
        let mut ex = Vec::new();
        let d = json!({"erring_channel": "1x2x3", "erring_direction": 1});
        assert!(push_exclusion(&mut ex, Some(&d)));
        assert!(!push_exclusion(&mut ex, Some(&d)));
        assert!(push_exclusion(
            &mut ex,
            Some(&json!({"erring_node": "02ab"}))
        ));
        assert!(!push_exclusion(&mut ex, Some(&json!({}))));
        assert!(!push_exclusion(&mut ex, None));
        assert_eq!(ex, vec!["1x2x3/1".to_owned(), "02ab".to_owned()]);
    }
}
