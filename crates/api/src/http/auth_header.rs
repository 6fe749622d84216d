//! Credential transport (Yii `CompositeAuth` of `HttpHeaderAuth`, `QueryParamAuth` and
//! `HttpBasicAuth`, tried in that order).
//!
//! The key is a secret: never log it.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Header of `HttpHeaderAuth`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Query parameter of `QueryParamAuth`.
pub const ACCESS_TOKEN_PARAM: &str = "access-token";

/// Standard alphabet, padding optional (PHP's `base64_decode` is lenient about padding).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Finds the API key of a request, trying in LNPay's order:
///
/// 1. header `X-Api-Key` (any case; non-empty value);
/// 2. query parameter `access-token` (percent-decoded; non-empty; last occurrence wins, as
///    in PHP's `$_GET`);
/// 3. HTTP Basic auth, the key being the **username** (`Basic base64("sak_xxx:")`; the
///    password is ignored, a missing colon is tolerated).
///
/// Returns the first one present, or `None`.
pub fn extract_api_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    from_header(headers)
        .or_else(|| query.and_then(from_query))
        .or_else(|| from_basic_auth(headers))
}

fn from_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(API_KEY_HEADER)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn from_query(query: &str) -> Option<String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == ACCESS_TOKEN_PARAM)
        .last()
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn from_basic_auth(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = LENIENT_BASE64.decode(credentials.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let username = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    (!username.is_empty()).then(|| username.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn basic(raw: &str) -> String {
        format!("Basic {}", STANDARD.encode(raw))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn header_transport_any_case() {
        for name in ["X-Api-Key", "X-API-Key", "x-api-key"] {
            let h = headers(&[(name, "sak_abc")]);
            assert_eq!(extract_api_key(&h, None).as_deref(), Some("sak_abc"));
        }
        // Empty header falls through.
        let h = headers(&[("X-Api-Key", "")]);
        assert_eq!(extract_api_key(&h, None), None);
        assert_eq!(
            extract_api_key(&h, Some("access-token=pak_q")).as_deref(),
            Some("pak_q")
        );
    }

    #[test]
    fn query_transport() {
        let h = HeaderMap::new();
        assert_eq!(
            extract_api_key(&h, Some("fields=id&access-token=sak_a%2Bb")).as_deref(),
            Some("sak_a+b")
        );
        assert_eq!(
            extract_api_key(&h, Some("access-token=1&access-token=2")).as_deref(),
            Some("2")
        );
        assert_eq!(extract_api_key(&h, Some("access-token=")), None);
        assert_eq!(extract_api_key(&h, Some("access_token=x")), None);
        assert_eq!(extract_api_key(&h, Some("")), None);
        assert_eq!(extract_api_key(&h, None), None);
    }

    #[test]
    fn basic_transport() {
        let h = headers(&[("Authorization", &basic("sak_XXX:"))]);
        assert_eq!(extract_api_key(&h, None).as_deref(), Some("sak_XXX"));
        let h = headers(&[("Authorization", &basic("sak_XXX:ignored"))]);
        assert_eq!(extract_api_key(&h, None).as_deref(), Some("sak_XXX"));
        let h = headers(&[("Authorization", &basic("sak_nocolon"))]);
        assert_eq!(extract_api_key(&h, None).as_deref(), Some("sak_nocolon"));
        // Unpadded base64 and lowercase scheme.
        let encoded = STANDARD.encode("sak_Y:");
        let h = headers(&[(
            "authorization",
            &format!("basic {}", encoded.trim_end_matches('=')),
        )]);
        assert_eq!(extract_api_key(&h, None).as_deref(), Some("sak_Y"));
        // Empty username, other schemes, garbage: nothing.
        for v in [
            basic(":pw"),
            "Bearer sak_Z".to_owned(),
            "Basic !!!".to_owned(),
            "Basic".to_owned(),
        ] {
            let h = headers(&[("Authorization", &v)]);
            assert_eq!(extract_api_key(&h, None), None, "{v}");
        }
    }

    #[test]
    fn precedence() {
        let all = headers(&[
            ("X-Api-Key", "from_header"),
            ("Authorization", &basic("from_basic:")),
        ]);
        assert_eq!(
            extract_api_key(&all, Some("access-token=from_query")).as_deref(),
            Some("from_header")
        );
        let no_header = headers(&[("Authorization", &basic("from_basic:"))]);
        assert_eq!(
            extract_api_key(&no_header, Some("access-token=from_query")).as_deref(),
            Some("from_query")
        );
        assert_eq!(
            extract_api_key(&no_header, Some("page=2")).as_deref(),
            Some("from_basic")
        );
    }
}
