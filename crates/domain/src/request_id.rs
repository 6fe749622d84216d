//! Request ids: the `X-Request-Id` that ties a request's log lines, its answer, its error body
//! and the webhooks it caused together.
//!
//! A client's id is kept only if it is short and made of characters that are safe in a header, a
//! log line and a JSON string without escaping (`A–Z a–z 0–9 - _ . : @ /`, 1–[`MAX_LEN`]). Any
//! other value (too long, empty, spaces, quotes, control characters, non-ASCII) is replaced by a
//! generated id rather than cleaned up, so a hostile value never reaches a log or a receiver.

use std::fmt;

/// Longest client-supplied id kept (a UUID is 36, a W3C trace id 32).
pub const MAX_LEN: usize = 64;

/// A validated request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// The client's id if it is acceptable (see the module docs), else `None`.
    pub fn parse(s: &str) -> Option<RequestId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@/".contains(&b));
        ok.then(|| RequestId(s.to_owned()))
    }

    /// A fresh id: 128 random bits as 32 lowercase hex characters.
    pub fn generate() -> RequestId {
        RequestId(hex::encode(rand::random::<[u8; 16]>()))
    }

    /// The client's id if acceptable, else a fresh one.
    pub fn from_client(s: Option<&str>) -> RequestId {
        s.and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id read back from our own database (written by [`RequestId::parse`] or
    /// [`RequestId::generate`]); re-validated anyway, `None` if it no longer passes.
    pub fn from_db(s: &str) -> Option<RequestId> {
        RequestId::parse(s)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keeps_safe_client_ids() {
        for ok in [
            "abc",
            "6f1c2a40-7d1e-4c43-9a57-0b0c4b1f8e21",
            "req_1:retry/2@edge.x",
            &"a".repeat(MAX_LEN),
        ] {
            assert_eq!(RequestId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_hostile_ids() {
        for bad in [
            "",
            " ",
            "a b",
            "a\"b",
            "a\nb",
            "a\rb",
            "a\u{0}b",
            "<script>",
            "é",
            "a,b",
            "a;b",
            "{\"x\":1}",
            &"a".repeat(MAX_LEN + 1),
        ] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
            let replaced = RequestId::from_client(Some(bad));
            assert_eq!(replaced.as_str().len(), 32);
            assert!(
                replaced
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn generated_ids_are_distinct() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(RequestId::from_client(None).as_str().len(), 32);
    }
}
