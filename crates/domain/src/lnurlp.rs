//! LNURL-pay (LUD-06) and Lightning Address (LUD-16) values: usernames and the metadata whose
//! SHA-256 is the description hash of every invoice a link issues.
//!
//! The metadata is a JSON array *text*; the wallet hashes exactly the text it was served and
//! compares it with the invoice's description hash. So it is computed by one deterministic
//! function ([`pay_metadata`]: compact JSON, fixed entry order), stored with the link and served
//! verbatim, never rebuilt at serve time.

use sha2::{Digest, Sha256};

/// Longest username (the local part of a Lightning Address).
pub const MAX_USERNAME_LEN: usize = 64;

/// Why a text is not a username.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Empty.
    #[error("is empty")]
    Empty,
    /// Longer than [`MAX_USERNAME_LEN`].
    #[error("is longer than {MAX_USERNAME_LEN} characters")]
    TooLong,
    /// A character outside `a-z 0-9 . - _` (after lower-casing), or a name LUD-16 would not
    /// resolve well (leading/trailing `.`, `..`).
    #[error("may contain only a-z, 0-9, '.', '-' and '_'")]
    Chars,
}

/// The local part of a Lightning Address: `a-z 0-9 . - _` (LUD-16), case-insensitive (stored
/// and compared in lower case), 1 to [`MAX_USERNAME_LEN`] characters, no leading or trailing
/// dot and no `..` (mail-style local parts that some wallets refuse).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Parses a username (upper case letters are folded to lower case).
    pub fn parse(text: &str) -> Result<Username, UsernameError> {
        if text.is_empty() {
            return Err(UsernameError::Empty);
        }
        if text.len() > MAX_USERNAME_LEN {
            return Err(UsernameError::TooLong);
        }
        let lower = text.to_ascii_lowercase();
        let ok = lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok || lower.starts_with('.') || lower.ends_with('.') || lower.contains("..") {
            return Err(UsernameError::Chars);
        }
        Ok(Username(lower))
    }

    /// A stored value (already validated).
    pub fn from_db(s: String) -> Username {
        Username(s)
    }

    /// The lower-case text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// LUD-06 metadata: `[["text/plain", short_desc]]`, plus `["text/identifier", address]` when
/// the link has a Lightning Address (LUD-16 requires it, so the payer's wallet can check the
/// invoice was made for the address it paid). Compact JSON, entries in this order.
pub fn pay_metadata(short_desc: &str, identifier: Option<&str>) -> String {
    let mut entries = vec![serde_json::json!(["text/plain", short_desc])];
    if let Some(id) = identifier {
        entries.push(serde_json::json!(["text/identifier", id]));
    }
    serde_json::Value::Array(entries).to_string()
}

/// SHA-256 of the metadata text: the invoices' description hash.
pub fn metadata_hash(metadata: &str) -> [u8; 32] {
    Sha256::digest(metadata.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(Username::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(Username::parse("a.b-c_9").unwrap().as_str(), "a.b-c_9");
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(Username::parse("a b"), Err(UsernameError::Chars));
        assert_eq!(Username::parse("a@b"), Err(UsernameError::Chars));
        assert_eq!(Username::parse("é"), Err(UsernameError::Chars));
        assert_eq!(Username::parse(".a"), Err(UsernameError::Chars));
        assert_eq!(Username::parse("a."), Err(UsernameError::Chars));
        assert_eq!(Username::parse("a..b"), Err(UsernameError::Chars));
        assert!(Username::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            Username::parse(&"a".repeat(65)),
            Err(UsernameError::TooLong)
        );
    }

    #[test]
    fn metadata_is_deterministic_compact_json() {
        assert_eq!(
            pay_metadata("Tip \"me\"", None),
            r#"[["text/plain","Tip \"me\""]]"#
        );
        let m = pay_metadata("Tips", Some("bob@pay.example.com"));
        assert_eq!(
            m,
            r#"[["text/plain","Tips"],["text/identifier","bob@pay.example.com"]]"#
        );
        assert_eq!(metadata_hash(&m), metadata_hash(&m.clone()));
        assert_eq!(
            hex::encode(metadata_hash("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
