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

/// Characters of [`time_ordered_alnum`]'s clock part, in ASCII order, so that byte order of the
/// text is time order.
const SORTED_ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Clock characters: milliseconds since 1970 in base 62 (62^8 ms is about 6,900 years).
const CLOCK_CHARS: usize = 8;

/// `len` alphanumeric characters that sort by creation time: the clock in milliseconds
/// ([`CLOCK_CHARS`] characters), then random ones.
///
/// Why: ids are primary keys and index keys. Random keys put every insert on a random B-tree
/// page, so a group commit of N operations writes N pages per index to the WAL; time-ordered
/// keys append to the same rightmost pages. The clock part only reveals the creation time,
/// which the API shows anyway.
pub fn time_ordered_alnum(len: usize) -> String {
    let mut ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut clock = [b'0'; CLOCK_CHARS];
    for c in clock.iter_mut().rev() {
        *c = SORTED_ALNUM[(ms % 62) as usize];
        ms /= 62;
    }
    let mut out: String = clock.iter().map(|b| char::from(*b)).collect();
    out.truncate(len);
    out.push_str(&random_alnum(len.saturating_sub(CLOCK_CHARS)));
    out
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

            /// A fresh id: random, or time-ordered then random for the high-volume records
            /// (24 characters; see [`time_ordered_alnum`]).
            pub fn generate() -> Self {
                let body = if $len >= 24 { time_ordered_alnum($len) } else { random_alnum($len) };
                Self(format!("{}{}", $prefix, body))
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
    fn high_volume_ids_sort_by_creation_time() {
        let a = WtxId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = WtxId::generate();
        assert!(a.as_str() < b.as_str(), "{a} then {b}");
        assert!(WtxId::parse(a.as_str()).is_ok());
        assert_eq!(a.as_str().len(), 4 + 24);
        // The random part still makes ids of the same millisecond distinct.
        let many: std::collections::HashSet<String> =
            (0..1000).map(|_| LnTxId::generate().to_string()).collect();
        assert_eq!(many.len(), 1000);
        // Base 62 in ASCII order: a later clock never sorts first.
        assert!(SORTED_ALNUM.windows(2).all(|w| w[0] < w[1]));
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
