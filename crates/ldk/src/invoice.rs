//! Building and signing our BOLT11 invoices.
//!
//! Why not `ChannelManager::create_bolt11_invoice`? It creates a fresh secp256k1 context for
//! every signature (context randomization is a point multiplication) and then verifies the
//! signature it just made with another fresh context: about a quarter of an invoice request's
//! CPU. Here the node key signs with one long-lived context and the builder's output is used as
//! is. Everything else is what LDK does: the payment secret comes from
//! `create_inbound_payment_for_hash` (so LDK accepts the payment), the payee key, basic MPP,
//! LDK's minimum final CLTV delta, and route hints chosen by the rules of LDK's
//! `sort_and_filter_channels` (a test compares both on a live node).

use std::collections::BTreeMap;
use std::time::Duration;

use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey, SignOnly};
use lightning::ln::channel_state::ChannelDetails;
use lightning::ln::channelmanager::MIN_FINAL_CLTV_EXPIRY_DELTA;
use lightning::routing::gossip::RoutingFees;
use lightning::routing::router::{RouteHint, RouteHintHop};
use lightning::types::payment::PaymentHash as LdkPaymentHash;
use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Currency, InvoiceBuilder};

use crate::node::NETWORK;
use crate::support::ChannelManagerT;

/// At most this many route hints (LDK's limit).
const MAX_HINTS: usize = 3;
/// Confirmations after which an announced channel is expected in the payer's graph.
const ANNOUNCED_CONFIRMATIONS: u32 = 7;

/// Signs invoices with the node key through one reusable context.
pub(crate) struct InvoiceSigner {
    secp: Secp256k1<SignOnly>,
    secret: SecretKey,
    payee: PublicKey,
}

/// What an invoice is for.
pub(crate) struct InvoiceParams {
    pub(crate) hash: [u8; 32],
    pub(crate) amount_msat: Option<u64>,
    pub(crate) description: Bolt11InvoiceDescription,
    pub(crate) expiry_secs: u32,
}

impl InvoiceSigner {
    pub(crate) fn new(secret: SecretKey, payee: PublicKey) -> InvoiceSigner {
        InvoiceSigner {
            secp: Secp256k1::signing_only(),
            secret,
            payee,
        }
    }

    /// Builds and signs an invoice the channel manager will accept payment for.
    pub(crate) fn create(
        &self,
        cm: &ChannelManagerT,
        p: InvoiceParams,
        now: Duration,
    ) -> Result<Bolt11Invoice, String> {
        let secret = cm
            .create_inbound_payment_for_hash(
                LdkPaymentHash(p.hash),
                p.amount_msat,
                p.expiry_secs,
                None,
            )
            .map_err(|()| "invalid amount".to_owned())?;
        let builder = InvoiceBuilder::new(Currency::from(NETWORK));
        let builder = match p.description {
            Bolt11InvoiceDescription::Direct(d) => builder.description(d.into_inner().0),
            Bolt11InvoiceDescription::Hash(h) => builder.description_hash(h.0),
        };
        let mut builder = builder
            .duration_since_epoch(now)
            .payee_pub_key(self.payee)
            .payment_hash(sha256::Hash::from_byte_array(p.hash))
            .payment_secret(secret)
            .basic_mpp()
            .min_final_cltv_expiry_delta(u64::from(MIN_FINAL_CLTV_EXPIRY_DELTA))
            .expiry_time(Duration::from_secs(u64::from(p.expiry_secs)));
        if let Some(a) = p.amount_msat {
            builder = builder.amount_milli_satoshis(a);
        }
        for hint in route_hints(cm.list_channels(), p.amount_msat) {
            builder = builder.private_route(hint);
        }
        builder
            .build_signed(|msg| self.secp.sign_ecdsa_recoverable(msg, &self.secret))
            .map_err(|e| e.to_string())
    }
}

/// Route hints for an invoice of `amount_msat`, by LDK's rules: none if an announced channel is
/// confirmed deeply enough to be in the payer's graph; only announced ones if some announced
/// channel is not yet; one channel per counterparty, preferring (in order) channels that can
/// take the amount while the peer is connected, that can take the amount, whose peer is
/// connected; among those, the smallest inbound capacity above 110% of the amount, else the
/// largest; at most three.
pub(crate) fn route_hints(
    channels: Vec<ChannelDetails>,
    amount_msat: Option<u64>,
) -> Vec<RouteHint> {
    let min = amount_msat.unwrap_or(0);
    let candidates: Vec<ChannelDetails> = channels
        .into_iter()
        .filter(|c| {
            c.is_channel_ready
                && c.get_inbound_payment_scid().is_some()
                && c.counterparty.forwarding_info.is_some()
        })
        .collect();
    let unconfirmed_public = |c: &ChannelDetails| {
        c.is_announced && c.confirmations.is_some_and(|n| n < ANNOUNCED_CONFIRMATIONS)
    };
    if candidates
        .iter()
        .any(|c| c.is_announced && !unconfirmed_public(c))
    {
        return Vec::new();
    }
    let public_only = candidates.iter().any(unconfirmed_public);
    let enough = |c: &ChannelDetails| c.inbound_capacity_msat >= min;
    let online_enough = candidates.iter().any(|c| enough(c) && c.is_usable);
    let any_enough = candidates.iter().any(enough);
    let any_online = candidates.iter().any(|c| c.is_usable);

    // One channel per counterparty.
    let mut best: BTreeMap<PublicKey, ChannelDetails> = BTreeMap::new();
    for c in candidates {
        let keep_current = match best.get(&c.counterparty.node_id) {
            None => false,
            Some(cur) if c.is_announced != cur.is_announced => cur.is_announced,
            Some(cur) => prefer_current(
                amount_msat,
                cur.inbound_capacity_msat,
                c.inbound_capacity_msat,
            ),
        };
        if !keep_current {
            best.insert(c.counterparty.node_id, c);
        }
    }
    let mut chosen: Vec<ChannelDetails> = best
        .into_values()
        .filter(|c| {
            if public_only {
                c.is_announced
            } else if online_enough {
                enough(c) && c.is_usable
            } else if any_enough {
                enough(c)
            } else if any_online {
                c.is_usable
            } else {
                true
            }
        })
        .collect();
    // Smallest first when a connected channel can take the amount, else largest first.
    if online_enough {
        chosen.sort_by_key(|c| c.inbound_capacity_msat);
    } else {
        chosen.sort_by_key(|c| std::cmp::Reverse(c.inbound_capacity_msat));
    }
    chosen
        .into_iter()
        .take(MAX_HINTS)
        .filter_map(|c| {
            let fwd = c.counterparty.forwarding_info.as_ref()?;
            Some(RouteHint(vec![RouteHintHop {
                src_node_id: c.counterparty.node_id,
                short_channel_id: c.get_inbound_payment_scid()?,
                fees: RoutingFees {
                    base_msat: fwd.fee_base_msat,
                    proportional_millionths: fwd.fee_proportional_millionths,
                },
                cltv_expiry_delta: fwd.cltv_expiry_delta,
                htlc_minimum_msat: c.inbound_htlc_minimum_msat,
                htlc_maximum_msat: c.inbound_htlc_maximum_msat,
            }]))
        })
        .collect()
}

/// LDK's choice between two channels with one counterparty (`prefer_current_channel`): with an
/// amount, the smaller channel that still covers 110% of it; otherwise (or if neither does) the
/// larger one. Ties go to the candidate.
fn prefer_current(amount_msat: Option<u64>, current: u64, candidate: u64) -> bool {
    let Some(amount) = amount_msat else {
        return current > candidate;
    };
    let scaled = u128::from(amount) * 110;
    let covers = |c: u64| u128::from(c) * 100 >= scaled;
    match (covers(current), covers(candidate)) {
        (true, true) => current < candidate,
        (true, false) => true,
        (false, true) => false,
        (false, false) => current > candidate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_preference_follows_ldk() {
        // No amount: the larger inbound capacity.
        assert!(prefer_current(None, 10, 5));
        assert!(!prefer_current(None, 5, 10));
        assert!(!prefer_current(None, 5, 5));
        // With an amount: the smallest that covers 110% of it.
        assert!(prefer_current(Some(100), 120, 500));
        assert!(!prefer_current(Some(100), 500, 120));
        assert!(!prefer_current(Some(100), 105, 500));
        // Neither covers it: the larger.
        assert!(prefer_current(Some(1000), 50, 40));
    }
}
