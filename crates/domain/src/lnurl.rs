//! LNURL encoding (LUD-01): a URL's UTF-8 bytes as bech32 with the human-readable part `lnurl`,
//! shown in upper case (QR codes encode upper case alphanumerics more compactly). LNURLs are
//! longer than the 90 characters BIP-173 allows for addresses; the plain bech32 checksum is
//! defined up to 1023 characters, which is the bound used here.

use bech32::{Bech32, Hrp};

/// Longest URL an LNURL may carry here: 1023 bech32 characters minus `lnurl1` and the
/// 6-character checksum leave 1011 data characters of 5 bits each.
pub const MAX_LNURL_URL_BYTES: usize = 1011 * 5 / 8;

/// Why a text is not an LNURL we can read, or a URL cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LnurlError {
    /// Too long for a bech32 string.
    #[error("URL too long for an LNURL")]
    TooLong,
    /// Not bech32 with a valid checksum.
    #[error("not a valid LNURL: {0}")]
    Bech32(String),
    /// Another human-readable part than `lnurl`.
    #[error("not an LNURL (prefix {0})")]
    Hrp(String),
    /// The payload is not UTF-8.
    #[error("LNURL payload is not UTF-8")]
    Utf8,
}

fn hrp() -> Hrp {
    Hrp::parse_unchecked("lnurl")
}

/// `LNURL1…` (upper case) of `url`.
pub fn encode_lnurl(url: &str) -> Result<String, LnurlError> {
    if url.len() > MAX_LNURL_URL_BYTES {
        return Err(LnurlError::TooLong);
    }
    bech32::encode_upper::<Bech32>(hrp(), url.as_bytes())
        .map_err(|e| LnurlError::Bech32(e.to_string()))
}

/// The URL inside an LNURL (either case; an optional `lightning:` scheme is removed).
pub fn decode_lnurl(text: &str) -> Result<String, LnurlError> {
    let t = text.trim();
    let t = t
        .get(..10)
        .filter(|p| p.eq_ignore_ascii_case("lightning:"))
        .map_or(t, |_| &t[10..]);
    let checked = bech32::primitives::decode::CheckedHrpstring::new::<Bech32>(t)
        .map_err(|e| LnurlError::Bech32(e.to_string()))?;
    if checked.hrp() != hrp() {
        return Err(LnurlError::Hrp(checked.hrp().to_string()));
    }
    String::from_utf8(checked.byte_iter().collect()).map_err(|_| LnurlError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lud01_example_round_trips() {
        // The example of LUD-01.
        let url = "https://service.com/api?q=3fc3645b439ce8e7f2553a69e5267081d96dcd340693afabe04be7b0ccd178df";
        let lnurl = "LNURL1DP68GURN8GHJ7UM9WFMXJCM99E3K7MF0V9CXJ0M385EKVCENXC6R2C35XVUKXEFCV5MKVV34X5EKZD3EV56NYD3HXQURZEPEXEJXXEPNXSCRVWFNV9NXZCN9XQ6XYEFHVGCXXCMYXYMNSERXFQ5FNS";
        assert_eq!(encode_lnurl(url).unwrap(), lnurl);
        assert_eq!(decode_lnurl(lnurl).unwrap(), url);
        assert_eq!(decode_lnurl(&lnurl.to_lowercase()).unwrap(), url);
        assert_eq!(decode_lnurl(&format!("lightning:{lnurl}")).unwrap(), url);
    }

    #[test]
    fn refuses_other_prefixes_and_bad_checksums() {
        let other = bech32::encode::<Bech32>(Hrp::parse_unchecked("lnbc"), b"x").unwrap();
        assert!(matches!(decode_lnurl(&other), Err(LnurlError::Hrp(_))));
        let mut bad = encode_lnurl("https://a.example/").unwrap();
        bad.pop();
        bad.push('Q');
        assert!(decode_lnurl(&bad).is_err());
        let long = format!("https://a.example/{}", "x".repeat(MAX_LNURL_URL_BYTES));
        assert_eq!(encode_lnurl(&long), Err(LnurlError::TooLong));
        let max = format!("https://a.example/{}", "x".repeat(MAX_LNURL_URL_BYTES - 18));
        assert_eq!(decode_lnurl(&encode_lnurl(&max).unwrap()).unwrap(), max);
    }
}
