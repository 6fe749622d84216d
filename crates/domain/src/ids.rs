//! Typed identifiers. LNPay ids are opaque prefixed strings (`wal_…`, `wtx_…`, `lntx_…`); imported
//! data keeps legacy forms such as `w_…`, so parsing accepts any stored-looking id and only new ids
//! are generated with the current prefixes.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;

/// An id string that cannot be a Satchel/LNPay id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id: {0}")]
pub struct IdError(pub String);

/// `len` random alphanumeric characters (62 symbols: ~5.95 bits each).
pub fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// LNPay route segments match `\w+`; ids are that plus a bounded length.
fn valid_chars(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

macro_rules! prefixed_id {
    ($(#[$m:meta])* $name:ident, $prefix:literal, $len:literal) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix of newly generated ids.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_alnum($len)))
            }

            /// Parses an id as stored (any `\w+` string; legacy prefixes allowed).
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if valid_chars(s) { Ok(Self(s.to_owned())) } else { Err(IdError(s.to_owned())) }
            }

            /// Wraps a value read back from our own database.
            pub fn from_db(s: String) -> Self {
                Self(s)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A wallet (`wal_` + 14; legacy `w_…`).
    WalletId, "wal_", 14
);
prefixed_id!(
    /// A wallet transaction: one user-visible, balance-affecting entry (`wtx_` + 24).
    WtxId, "wtx_", 24
);
prefixed_id!(
    /// A Lightning transaction: an invoice we issued or a payment we sent (`lntx_` + 24).
    LnTxId, "lntx_", 24
);
prefixed_id!(
    /// An account (LNPay "user") that owns wallets and API keys (`usr_` + 14).
    AccountId, "usr_", 14
);
prefixed_id!(
    /// An asynchronous job (`job_` + 24).
    JobId, "job_", 24
);
prefixed_id!(
    /// A webhook subscription (`iwh_` + 14).
    WebhookId, "iwh_", 14
);
prefixed_id!(
    /// A webhook event (`evt_` + 24).
    EventId, "evt_", 24
);
prefixed_id!(
    /// The delivery of one event to one webhook (`iwhd_` + 24).
    DeliveryId, "iwhd_", 24
);
prefixed_id!(
    /// One HTTP request of a delivery; sent as `X-LNPay-HookId` (`iwhr_` + 24).
    AttemptId, "iwhr_", 24
);
prefixed_id!(
    /// A Lightning node as LNPay names it (`lnod_…`).
    NodeId, "lnod_", 7
);

impl WalletId {
    /// True if the string looks like a wallet *id* rather than an access key: `wal_`, `walx_`
    /// (deterministic ids) or legacy `w_`.
    pub fn looks_like_id(s: &str) -> bool {
        s.starts_with("wal_") || s.starts_with("walx_") || s.starts_with("w_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_prefix_and_length() {
        let w = WalletId::generate();
        assert!(w.as_str().starts_with("wal_"));
        assert_eq!(w.as_str().len(), 4 + 14);
        assert_eq!(LnTxId::generate().as_str().len(), 5 + 24);
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(WalletId::parse("w_legacy123").is_ok());
        assert!(WalletId::parse("wal_a/b").is_err());
        assert!(WalletId::parse("").is_err());
        assert!(WalletId::looks_like_id("w_abc"));
        assert!(!WalletId::looks_like_id("waka_abc"));
    }
}
