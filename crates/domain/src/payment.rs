//! Lightning payment vocabulary: hashes, preimages, pubkeys, custom records, outcomes.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

/// TLV record type carrying the keysend preimage (BOLT / LND convention).
pub const KEYSEND_PREIMAGE_TLV: u64 = 5_482_373_484;

/// TLV types whose value names the receiving wallet (`wal_…`) of an incoming keysend, in priority
/// order: LNPay's 696969, Podcasting 2.0's "pod" 112111100 and "podf" 112111100102.
pub const WALLET_ROUTING_TLVS: [u64; 3] = [696_969, 112_111_100, 112_111_100_102];

macro_rules! bytes32 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some(Self(out))
            }

            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

bytes32!(
    /// SHA-256 of a payment preimage; the idempotency key of every Lightning payment.
    PaymentHash
);
bytes32!(
    /// The secret whose revelation settles a payment.
    Preimage
);

impl fmt::Debug for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentHash({})", self.to_hex())
    }
}

impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Preimage(…)")
    }
}

impl Preimage {
    /// A fresh random preimage.
    pub fn random() -> Preimage {
        Preimage(rand::random())
    }

    /// Its payment hash.
    pub fn hash(&self) -> PaymentHash {
        PaymentHash(Sha256::digest(self.0).into())
    }
}

/// A node's compressed secp256k1 public key (33 bytes, 66 hex chars).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePubkey(pub [u8; 33]);

/// Why client text is not a node public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PubkeyError {
    /// Not 66 characters.
    #[error("a node public key has 66 hex characters")]
    Length,
    /// 66 characters, but not hex with a 02/03 prefix.
    #[error("a node public key is hex starting with 02 or 03")]
    Syntax,
    /// Well-formed, but no point on secp256k1 has this x coordinate.
    #[error("not a point on secp256k1")]
    NotOnCurve,
}

impl NodePubkey {
    /// Parses a public key given by a client: 66 hex characters with a 02/03 prefix whose x
    /// coordinate is on secp256k1. Every backend would refuse a non-point; checking here keeps
    /// that a 400 on all of them (LDK's conversion failed inside the backend, a 500).
    pub fn parse(s: &str) -> Result<NodePubkey, PubkeyError> {
        if s.len() != 66 {
            return Err(PubkeyError::Length);
        }
        let pk = NodePubkey::from_hex(s).ok_or(PubkeyError::Syntax)?;
        bitcoin::secp256k1::PublicKey::from_slice(&pk.0).map_err(|_| PubkeyError::NotOnCurve)?;
        Ok(pk)
    }

    /// Parses 66 hex characters with a 02/03 prefix, without the curve check of
    /// [`NodePubkey::parse`]: for keys a node reported or we stored after checking them.
    pub fn from_hex(s: &str) -> Option<NodePubkey> {
        let mut out = [0u8; 33];
        hex::decode_to_slice(s, &mut out).ok()?;
        if out[0] != 2 && out[0] != 3 {
            return None;
        }
        Some(NodePubkey(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for NodePubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodePubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePubkey({})", self.to_hex())
    }
}

/// Parses a TLV type written by a client: canonical decimal only (ASCII digits, no sign, no
/// whitespace, no leading zero), within `u64`.
///
/// Why strict: the text is a map key, so `" 65537 "`, `"+65537"` and `"065537"` would otherwise
/// all name record 65537 and silently overwrite one another in the same request.
pub fn parse_tlv_type(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return None;
    }
    s.parse().ok()
}

/// Keysend custom records: TLV type -> raw value bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomRecords(pub BTreeMap<u64, Vec<u8>>);

impl CustomRecords {
    /// The wallet id named by a routing TLV (696969, 112111100, 112111100102), if any.
    pub fn routed_wallet(&self) -> Option<String> {
        WALLET_ROUTING_TLVS.iter().find_map(|t| {
            let v = std::str::from_utf8(self.0.get(t)?).ok()?.trim();
            (v.starts_with("wal_") || v.starts_with("w_")).then(|| v.to_owned())
        })
    }

    /// Value shown to API clients: the keysend preimage as hex, everything else as (lossy) UTF-8.
    pub fn display_value(tlv_type: u64, value: &[u8]) -> String {
        if tlv_type == KEYSEND_PREIMAGE_TLV {
            hex::encode(value)
        } else {
            String::from_utf8_lossy(value).into_owned()
        }
    }
}

/// Why a payment definitely failed, in LND's vocabulary (what LNPay clients see).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// No route within the fee limit, or no path at all.
    NoRoute,
    /// Our node lacks outbound liquidity.
    InsufficientBalance,
    /// The recipient rejected the payment details (unknown hash, wrong amount, expired...).
    IncorrectPaymentDetails,
    /// The payment timed out before completing (definitely failed, all HTLCs resolved).
    Timeout,
    /// Another definite error.
    Error,
}

impl FailureReason {
    /// `FAILURE_REASON_…` as LND and LNPay print it.
    pub fn lnd_name(self) -> &'static str {
        match self {
            FailureReason::NoRoute => "FAILURE_REASON_NO_ROUTE",
            FailureReason::InsufficientBalance => "FAILURE_REASON_INSUFFICIENT_BALANCE",
            FailureReason::IncorrectPaymentDetails => "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS",
            FailureReason::Timeout => "FAILURE_REASON_TIMEOUT",
            FailureReason::Error => "FAILURE_REASON_ERROR",
        }
    }

    /// Inverse of [`FailureReason::lnd_name`] (also accepts the bare suffix, e.g. `NO_ROUTE`).
    pub fn from_lnd_name(s: &str) -> Option<FailureReason> {
        let s = s.strip_prefix("FAILURE_REASON_").unwrap_or(s);
        Some(match s {
            "NO_ROUTE" => FailureReason::NoRoute,
            "INSUFFICIENT_BALANCE" => FailureReason::InsufficientBalance,
            "INCORRECT_PAYMENT_DETAILS" => FailureReason::IncorrectPaymentDetails,
            "TIMEOUT" => FailureReason::Timeout,
            "ERROR" => FailureReason::Error,
            _ => return None,
        })
    }
}

/// Lifecycle of an outgoing payment. Every transition is one database transaction.
///
/// ```text
///  Reserved ──dispatch──▶ Dispatched ──▶ Succeeded
///      │                      │  ▲
///      │                      ▼  │ fresh lookup
///      │                   Unknown ──▶ Succeeded | Failed
///      └──(never sent)──▶ Failed
/// ```
/// Funds leave the reserve only on `Succeeded` (fee booked, rest released) or `Failed` (refunded,
/// only after the node proved failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Amount + fee limit debited and committed; the node has not been asked yet.
    Reserved,
    /// Handed to the node; outcome not known yet.
    Dispatched,
    /// The node could not tell us the outcome; waiting for a lookup to settle it.
    Unknown,
    /// Paid; the real fee is booked.
    Succeeded,
    /// Definitely failed; the reserve was refunded.
    Failed,
}

impl PaymentStatus {
    /// Stable code stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            PaymentStatus::Reserved => "reserved",
            PaymentStatus::Dispatched => "dispatched",
            PaymentStatus::Unknown => "unknown",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        }
    }

    /// Inverse of [`PaymentStatus::code`].
    pub fn from_code(s: &str) -> Option<PaymentStatus> {
        Some(match s {
            "reserved" => PaymentStatus::Reserved,
            "dispatched" => PaymentStatus::Dispatched,
            "unknown" => PaymentStatus::Unknown,
            "succeeded" => PaymentStatus::Succeeded,
            "failed" => PaymentStatus::Failed,
            _ => return None,
        })
    }

    /// Still holding reserved funds.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            PaymentStatus::Reserved | PaymentStatus::Dispatched | PaymentStatus::Unknown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_wallet_priority() {
        let mut r = CustomRecords::default();
        r.0.insert(112_111_100, b"wal_pod".to_vec());
        assert_eq!(r.routed_wallet().as_deref(), Some("wal_pod"));
        r.0.insert(696_969, b"wal_lnpay".to_vec());
        assert_eq!(r.routed_wallet().as_deref(), Some("wal_lnpay"));
        r.0.insert(696_969, b"nonsense".to_vec());
        assert_eq!(r.routed_wallet().as_deref(), Some("wal_pod"));
    }

    #[test]
    fn pubkey_parsing() {
        let ok = format!("02{}", "ab".repeat(32));
        assert!(NodePubkey::from_hex(&ok).is_some());
        assert!(NodePubkey::parse(&ok).is_ok());
        assert!(NodePubkey::parse(&ok.to_ascii_uppercase()).is_ok());
        // Well-formed but not on the curve: x = 0 has no point, nor x = cdcd…cd.
        let zero = format!("02{}", "00".repeat(32));
        assert!(NodePubkey::from_hex(&zero).is_some());
        assert_eq!(NodePubkey::parse(&zero), Err(PubkeyError::NotOnCurve));
        let cd = format!("03{}", "cd".repeat(32));
        assert_eq!(NodePubkey::parse(&cd), Err(PubkeyError::NotOnCurve));
        // x at or above the field prime.
        let big = format!("02{}", "ff".repeat(32));
        assert_eq!(NodePubkey::parse(&big), Err(PubkeyError::NotOnCurve));
        assert_eq!(NodePubkey::parse(&ok[..64]), Err(PubkeyError::Length));
        assert_eq!(
            NodePubkey::parse(&format!("04{}", "ab".repeat(32))),
            Err(PubkeyError::Syntax)
        );
        assert_eq!(
            NodePubkey::parse(&format!("02{}", "zz".repeat(32))),
            Err(PubkeyError::Syntax)
        );
        assert!(NodePubkey::from_hex(&ok[..64]).is_none());
        assert!(NodePubkey::from_hex(&format!("05{}", "ab".repeat(32))).is_none());
    }

    #[test]
    fn tlv_types_are_canonical_decimal() {
        assert_eq!(parse_tlv_type("65537"), Some(65_537));
        assert_eq!(parse_tlv_type("0"), Some(0));
        assert_eq!(parse_tlv_type("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            " 65537 ",
            " 65537",
            "65537\n",
            "+65537",
            "-65537",
            "065537",
            "00",
            "6_5537",
            "65537.0",
            "0x10001",
            "1e5",
            "６５５３７",
            "18446744073709551616",
        ] {
            assert_eq!(parse_tlv_type(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn preimage_hash() {
        let p = Preimage([0u8; 32]);
        assert_eq!(
            p.hash().to_hex(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }
}
