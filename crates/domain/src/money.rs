//! Millisatoshi amounts.
//!
//! Inside Satchel every amount is a [`Msat`]. There is deliberately no `impl Add`/`Sub`: every
//! arithmetic step is checked and says what happens on overflow. Satoshis only exist at the LNPay
//! edge, converted with [`Msat::from_sats`] (exact) and [`sats_floor`] (the one display rule).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of millisatoshis. Never negative; signed movements live in ledger postings.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Msat(u64);

/// Arithmetic on money that would overflow or go negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The result does not fit the representation.
    #[error("amount overflow")]
    Overflow,
    /// A subtraction would have gone below zero.
    #[error("amount underflow")]
    Underflow,
}

/// The largest amount Satchel accepts anywhere: 21 million BTC in msat. Anything above is a bug or
/// an attack; keeping amounts below it also guarantees they fit in an `i64` column.
pub const MAX_MSAT: u64 = 21_000_000 * 100_000_000 * 1_000;

impl Msat {
    /// Zero.
    pub const ZERO: Msat = Msat(0);

    /// From millisatoshis; errors above [`MAX_MSAT`].
    pub fn from_msat(amount_msat: u64) -> Result<Msat, MoneyError> {
        if amount_msat > MAX_MSAT {
            Err(MoneyError::Overflow)
        } else {
            Ok(Msat(amount_msat))
        }
    }

    /// From whole satoshis (exact: 1 sat = 1000 msat); errors on overflow.
    pub fn from_sats(amount_sats: u64) -> Result<Msat, MoneyError> {
        amount_sats
            .checked_mul(1000)
            .ok_or(MoneyError::Overflow)
            .and_then(Msat::from_msat)
    }

    /// From a database `i64` column; negative values are rejected.
    pub fn from_i64(amount_msat: i64) -> Result<Msat, MoneyError> {
        u64::try_from(amount_msat)
            .map_err(|_| MoneyError::Underflow)
            .and_then(Msat::from_msat)
    }

    /// The amount in millisatoshis.
    pub const fn as_msat(self) -> u64 {
        self.0
    }

    /// The amount as an `i64` (always fits, see [`MAX_MSAT`]).
    pub fn as_i64(self) -> i64 {
        // MAX_MSAT < i64::MAX, and every constructor enforces it.
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Whole satoshis, rounded down (the LNPay display rule for a non-negative amount).
    pub const fn sats_floor(self) -> u64 {
        self.0 / 1000
    }

    /// Whole satoshis, rounded down, back in msat: what a wallet is credited for an amount
    /// received (the sub-sat rest goes to the operator's revenue account).
    pub const fn floor_to_sat(self) -> Msat {
        Msat(self.0 - self.0 % 1000)
    }

    /// Whole satoshis, rounded up, back in msat: what a wallet is charged for an amount it
    /// sends (the sub-sat part above the real cost goes to the operator's revenue account).
    pub fn ceil_to_sat(self) -> Result<Msat, MoneyError> {
        self.0
            .checked_next_multiple_of(1000)
            .ok_or(MoneyError::Overflow)
            .and_then(Msat::from_msat)
    }

    /// True when the amount is a whole number of satoshis.
    pub const fn is_whole_sats(self) -> bool {
        self.0.is_multiple_of(1000)
    }

    /// `self + other`, checked.
    pub fn checked_add(self, other: Msat) -> Result<Msat, MoneyError> {
        self.0
            .checked_add(other.0)
            .ok_or(MoneyError::Overflow)
            .and_then(Msat::from_msat)
    }

    /// `self - other`, checked (never negative).
    pub fn checked_sub(self, other: Msat) -> Result<Msat, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Msat)
            .ok_or(MoneyError::Underflow)
    }

    /// True for zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Msat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

/// The one rounding rule at the LNPay edge: a signed msat amount is shown as whole sats rounded
/// toward negative infinity. A balance or credit is never overstated, a debit never understated
/// (a 1001 msat routing fee shows as -2 sats, exactly what LNPay booked for it).
pub fn sats_floor(amount_msat: i64) -> i64 {
    amount_msat.div_euclid(1000)
}

/// What an outgoing payment of `amount` with fee limit `fee_limit` holds in reserve: the worst
/// case the wallet can be charged, `amount + fee_limit` rounded up to the whole sat (wallets
/// are only ever charged whole sats; see [`payment_charge`]).
pub fn payment_reserve(amount: Msat, fee_limit: Msat) -> Result<Msat, MoneyError> {
    amount.checked_add(fee_limit)?.ceil_to_sat()
}

/// What a wallet is charged for a payment of `amount` that cost `fee` in routing fees, split as
/// it is shown: `(withdrawal, network_fee)`, both whole sats. The total is `amount + fee`
/// rounded up to the whole sat; the withdrawal entry shows `amount` rounded up, the fee entry
/// the rest (for a whole-sat amount: the fee rounded up). Never more than
/// [`payment_reserve`] for any `fee` within the limit.
pub fn payment_charge(amount: Msat, fee: Msat) -> Result<(Msat, Msat), MoneyError> {
    let total = amount.checked_add(fee)?.ceil_to_sat()?;
    let shown = amount.ceil_to_sat()?;
    Ok((shown, total.checked_sub(shown)?))
}

/// LNPay's default fee limit when the caller gives none: `ceil(5% of the amount in sats)` sats,
/// expressed in msat. 1-20 sats -> 1000 msat, 100 sats -> 5000 msat.
pub fn fee_limit_default(amount: Msat) -> Msat {
    // 5% in sats = amount_msat * 5 / 100 / 1000 = amount_msat / 20_000; take the ceiling.
    let fee_sats = amount.as_msat().div_ceil(20_000);
    // amount <= MAX_MSAT so fee_sats * 1000 <= MAX_MSAT / 20: cannot overflow.
    Msat(fee_sats.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fee_limit_matches_lnpay() {
        let f = |sats| fee_limit_default(Msat::from_sats(sats).unwrap()).as_msat();
        assert_eq!(f(0), 0);
        assert_eq!(f(1), 1000);
        assert_eq!(f(20), 1000);
        assert_eq!(f(21), 2000);
        assert_eq!(f(100), 5000);
        assert_eq!(f(1_000_000), 50_000_000);
    }

    #[test]
    fn sats_floor_rounds_toward_negative_infinity() {
        assert_eq!(sats_floor(1999), 1);
        assert_eq!(sats_floor(-1001), -2);
        assert_eq!(sats_floor(-1000), -1);
        assert_eq!(sats_floor(0), 0);
    }

    #[test]
    fn checked_arithmetic() {
        let a = Msat::from_sats(1).unwrap();
        assert_eq!(
            a.checked_sub(Msat::from_msat(1001).unwrap()),
            Err(MoneyError::Underflow)
        );
        assert_eq!(Msat::from_sats(u64::MAX), Err(MoneyError::Overflow));
        assert_eq!(Msat::from_msat(MAX_MSAT + 1), Err(MoneyError::Overflow));
        assert_eq!(Msat::from_i64(-1), Err(MoneyError::Underflow));
        let max = Msat::from_msat(MAX_MSAT).unwrap();
        assert_eq!(
            max.checked_add(Msat::from_msat(1).unwrap()),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn whole_sat_rounding() {
        let m = |v| Msat::from_msat(v).unwrap();
        assert_eq!(m(1500).ceil_to_sat().unwrap(), m(2000));
        assert_eq!(m(2000).ceil_to_sat().unwrap(), m(2000));
        assert_eq!(m(0).ceil_to_sat().unwrap(), m(0));
        assert_eq!(m(1999).floor_to_sat(), m(1000));
        assert!(m(3000).is_whole_sats() && !m(3001).is_whole_sats());
        assert_eq!(
            Msat::from_msat(MAX_MSAT - 1)
                .unwrap()
                .ceil_to_sat()
                .unwrap(),
            Msat::from_msat(MAX_MSAT).unwrap()
        );
        // A 1500 msat fee on 500 sats: the wallet pays 502 sats, shown as 500 + 2.
        assert_eq!(
            payment_charge(m(500_000), m(1500)).unwrap(),
            (m(500_000), m(2000))
        );
        // A sub-sat amount takes its rounding first: 1.5 sat + 1.5 sat fee = 3 sats, 2 + 1.
        assert_eq!(
            payment_charge(m(1500), m(1500)).unwrap(),
            (m(2000), m(1000))
        );
        assert_eq!(payment_reserve(m(500_000), m(25_000)).unwrap(), m(525_000));
        assert_eq!(payment_reserve(m(1500), m(1100)).unwrap(), m(3000));
    }

    proptest::proptest! {
        /// Whatever the amount and the fee (within the limit), the wallet is charged whole
        /// sats, at least the real cost, less than a sat more, and never more than the reserve.
        #[test]
        fn charge_is_whole_covers_cost_and_fits_reserve(
            a in 0..MAX_MSAT / 4, l in 0..MAX_MSAT / 4, f_ppm in 0u64..=1_000_000
        ) {
            let (a, l) = (Msat::from_msat(a).unwrap(), Msat::from_msat(l).unwrap());
            let f = u64::try_from(u128::from(l.as_msat()) * u128::from(f_ppm) / 1_000_000).unwrap();
            let f = Msat::from_msat(f).unwrap();
            let (shown, fee) = payment_charge(a, f).unwrap();
            let reserve = payment_reserve(a, l).unwrap();
            proptest::prop_assert!(shown.is_whole_sats() && fee.is_whole_sats() && reserve.is_whole_sats());
            let total = shown.checked_add(fee).unwrap();
            let cost = a.checked_add(f).unwrap();
            proptest::prop_assert!(total >= cost);
            proptest::prop_assert!(total.as_msat() - cost.as_msat() < 1000);
            proptest::prop_assert!(total <= reserve);
            proptest::prop_assert!(shown >= a);
        }

        #[test]
        fn add_sub_roundtrip(a in 0..MAX_MSAT / 2, b in 0..MAX_MSAT / 2) {
            let (a, b) = (Msat::from_msat(a).unwrap(), Msat::from_msat(b).unwrap());
            let s = a.checked_add(b).unwrap();
            proptest::prop_assert_eq!(s.checked_sub(b).unwrap(), a);
        }
    }
}
