//! The fee estimator: fee rates from the chain source, cached, refreshed in the background.
//!
//! LDK asks [`FeeEstimator::get_est_sat_per_1000_weight`] synchronously, often while holding
//! its own locks, so the answer must never wait on the network: it is read from a cache that a
//! background task ([`crate::chain_source`]) refreshes every `fee_refresh_interval`.
//!
//! # Targets and fallbacks
//! Each [`ConfirmationTarget`] is mapped to a confirmation target in blocks and asked of the
//! source (`estimatesmartfee <blocks>` over bitcoind RPC, the `/fee-estimates` entry at or below
//! `<blocks>` over Esplora). When the source has no estimate for it (bitcoind on regtest answers
//! "Insufficient data" until it has seen enough transactions confirm; a young Esplora answers
//! `{}`), or before the first refresh succeeds, the target's fallback below is used. Every
//! answer is at least [`FEERATE_FLOOR_SAT_PER_KW`].
//!
//! | target | blocks | fallback, sat/kw | why this fallback |
//! |---|---|---|---|
//! | `MaximumFeeEstimate` | 1 | 5000 (20 sat/vB) | an upper bound; set high so a peer's honest `update_fee` is not judged excessive |
//! | `UrgentOnChainSweep` | 6 | 5000 (20 sat/vB) | HTLC claims must confirm before their timeouts: overpaying is the cheap mistake |
//! | `MinAllowedAnchorChannelRemoteFee` | 1008 | 253 | a lower bound on the peer's rate: too high a bound force-closes channels over a disagreement about fees, so accept anything relayable |
//! | `MinAllowedNonAnchorChannelRemoteFee` | 1008 | 253 | as above |
//! | `AnchorChannelFee` | 1008 | 253 | anchor commitments are bumped at broadcast time, so they only need to be relayable |
//! | `NonAnchorChannelFee` | 12 | 1250 (5 sat/vB) | a commitment without anchors cannot be bumped: it must confirm within a few hours at whatever rate it was signed with |
//! | `ChannelCloseMinimum` | 144 | 253 | the least we accept for a cooperative close; a day's wait is fine |
//! | `OutputSpendingFee` | 12 | 1250 (5 sat/vB) | sweeping our own outputs is not urgent but should not linger |
//!
//! The two "minimum allowed" targets are also lowered by 250 sat/kw from the estimate (as LDK's
//! documentation recommends), so that a peer whose estimate is a little below ours is not
//! refused.

use std::collections::HashMap;
use std::sync::RwLock;

use lightning::chain::chaininterface::{
    ConfirmationTarget, FEERATE_FLOOR_SATS_PER_KW, FeeEstimator,
};

/// The smallest fee rate LDK accepts and bitcoind relays by default (1 sat/vB, rounded up).
pub const FEERATE_FLOOR_SAT_PER_KW: u32 = FEERATE_FLOOR_SATS_PER_KW;

/// Every target LDK asks about, with its confirmation target in blocks, its fallback rate
/// (sat/kw) and what is taken off the source's estimate.
pub(crate) const TARGETS: [(ConfirmationTarget, u16, u32, u32); 8] = [
    (ConfirmationTarget::MaximumFeeEstimate, 1, 5000, 0),
    (ConfirmationTarget::UrgentOnChainSweep, 6, 5000, 0),
    (
        ConfirmationTarget::MinAllowedAnchorChannelRemoteFee,
        1008,
        253,
        250,
    ),
    (
        ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee,
        1008,
        253,
        250,
    ),
    (ConfirmationTarget::AnchorChannelFee, 1008, 253, 0),
    (ConfirmationTarget::NonAnchorChannelFee, 12, 1250, 0),
    (ConfirmationTarget::ChannelCloseMinimum, 144, 253, 0),
    (ConfirmationTarget::OutputSpendingFee, 12, 1250, 0),
];

/// The confirmation targets (blocks) the refresh asks the source about, without repeats.
pub(crate) fn blocks_targets() -> Vec<u16> {
    let mut v: Vec<u16> = TARGETS.iter().map(|t| t.1).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The fallback of a target (see the module table).
pub fn fallback_sat_per_kw(target: ConfirmationTarget) -> u32 {
    TARGETS
        .iter()
        .find(|t| t.0 == target)
        .map_or(FEERATE_FLOOR_SAT_PER_KW, |t| t.2)
}

/// A fee rate in sat/vB (as Esplora and `estimatesmartfee`, per 1000) as sat/kw, rounded up:
/// a vbyte is four weight units.
pub(crate) fn sat_per_vb_to_sat_per_kw(sat_per_vb: f64) -> Option<u32> {
    if !sat_per_vb.is_finite() || sat_per_vb <= 0.0 {
        return None;
    }
    let kw = (sat_per_vb * 250.0).ceil();
    if kw >= f64::from(u32::MAX) {
        Some(u32::MAX)
    } else {
        Some(kw as u32)
    }
}

/// What LDK reads. Before any refresh, or in chainless mode, it answers the fallbacks; with
/// `fixed`, one constant for every target (the chainless development mode: every devnet node
/// uses the same number, so peers never disagree about commitment fees).
pub struct ChainFeeEstimator {
    fixed: Option<u32>,
    /// The source's estimates (sat/kw) by confirmation target in blocks; a target the source
    /// had no estimate for is absent.
    by_blocks: RwLock<HashMap<u16, u32>>,
}

impl ChainFeeEstimator {
    /// An estimator fed by a chain source (starts on the fallbacks).
    pub(crate) fn from_source() -> ChainFeeEstimator {
        ChainFeeEstimator {
            fixed: None,
            by_blocks: RwLock::new(HashMap::new()),
        }
    }

    /// One rate for everything (no chain).
    pub(crate) fn fixed(sat_per_kw: u32) -> ChainFeeEstimator {
        ChainFeeEstimator {
            fixed: Some(sat_per_kw.max(FEERATE_FLOOR_SAT_PER_KW)),
            by_blocks: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the cached estimates (sat/kw by blocks target). Targets missing from `rates`
    /// fall back.
    pub(crate) fn update(&self, rates: HashMap<u16, u32>) {
        *self.by_blocks.write().unwrap_or_else(|e| e.into_inner()) = rates;
    }

    /// The current answer for every target LDK asks about.
    pub fn snapshot(&self) -> Vec<(ConfirmationTarget, u32)> {
        TARGETS
            .iter()
            .map(|t| (t.0, self.get_est_sat_per_1000_weight(t.0)))
            .collect()
    }

    /// Whether the answer for `target` comes from the source (not a fallback).
    pub fn from_source_for(&self, target: ConfirmationTarget) -> bool {
        let Some(t) = TARGETS.iter().find(|t| t.0 == target) else {
            return false;
        };
        self.fixed.is_none()
            && self
                .by_blocks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&t.1)
    }
}

impl FeeEstimator for ChainFeeEstimator {
    fn get_est_sat_per_1000_weight(&self, target: ConfirmationTarget) -> u32 {
        if let Some(rate) = self.fixed {
            return rate;
        }
        let Some(&(_, blocks, fallback, adjust)) = TARGETS.iter().find(|t| t.0 == target) else {
            return FEERATE_FLOOR_SAT_PER_KW;
        };
        let cached = self
            .by_blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&blocks)
            .copied();
        let rate = match cached {
            Some(r) => r.saturating_sub(adjust),
            None => fallback,
        };
        rate.max(FEERATE_FLOOR_SAT_PER_KW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_until_the_source_answers_then_estimates_above_the_floor() {
        let est = ChainFeeEstimator::from_source();
        for (target, _, fallback, _) in TARGETS {
            assert_eq!(est.get_est_sat_per_1000_weight(target), fallback);
            assert!(!est.from_source_for(target));
        }
        // 2 sat/vB for every target but 6 blocks (no estimate).
        let rates: HashMap<u16, u32> = blocks_targets()
            .into_iter()
            .filter(|b| *b != 6)
            .map(|b| (b, sat_per_vb_to_sat_per_kw(2.0).unwrap_or(0)))
            .collect();
        est.update(rates);
        let get = |t| est.get_est_sat_per_1000_weight(t);
        assert_eq!(get(ConfirmationTarget::NonAnchorChannelFee), 500);
        assert_eq!(get(ConfirmationTarget::UrgentOnChainSweep), 5000);
        // 500 − 250 is at the floor's level; 1 sat/vB − 250 would be below it.
        assert_eq!(
            get(ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee),
            253
        );
        est.update(HashMap::from([(1008, 250)]));
        assert_eq!(get(ConfirmationTarget::AnchorChannelFee), 253);
        assert_eq!(
            get(ConfirmationTarget::MinAllowedAnchorChannelRemoteFee),
            253
        );
    }

    #[test]
    fn conversion_rounds_up_and_refuses_nonsense() {
        assert_eq!(sat_per_vb_to_sat_per_kw(1.0), Some(250));
        assert_eq!(sat_per_vb_to_sat_per_kw(1.001), Some(251));
        assert_eq!(sat_per_vb_to_sat_per_kw(0.0), None);
        assert_eq!(sat_per_vb_to_sat_per_kw(f64::NAN), None);
        assert_eq!(sat_per_vb_to_sat_per_kw(1e12), Some(u32::MAX));
    }

    #[test]
    fn fixed_mode_answers_one_rate() {
        let est = ChainFeeEstimator::fixed(100);
        for (target, ..) in TARGETS {
            assert_eq!(est.get_est_sat_per_1000_weight(target), 253);
        }
    }
}
