//! Yii2 query-string helpers: `page` / `per-page` pagination with its response headers, and
//! the `?fields=` filter of `yii\rest\Serializer`.

use std::collections::HashMap;

use axum::http::header::{ACCESS_CONTROL_EXPOSE_HEADERS, LINK};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use serde_json::{Map, Value};

/// `X-Pagination-Total-Count`.
pub const TOTAL_COUNT_HEADER: HeaderName = HeaderName::from_static("x-pagination-total-count");
/// `X-Pagination-Page-Count`.
pub const PAGE_COUNT_HEADER: HeaderName = HeaderName::from_static("x-pagination-page-count");
/// `X-Pagination-Current-Page`.
pub const CURRENT_PAGE_HEADER: HeaderName = HeaderName::from_static("x-pagination-current-page");
/// `X-Pagination-Per-Page`.
pub const PER_PAGE_HEADER: HeaderName = HeaderName::from_static("x-pagination-per-page");

/// Value of `Access-Control-Expose-Headers` on paginated responses.
pub const PAGINATION_EXPOSE_HEADERS: &str = "X-Pagination-Total-Count, X-Pagination-Page-Count, \
     X-Pagination-Current-Page, X-Pagination-Per-Page, Link";

/// A requested page (Yii `Pagination` after validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: u64,
    /// Page size, already clamped into `[1, max]`.
    pub per_page: u64,
}

impl Page {
    /// Number of rows to skip.
    pub fn offset(&self) -> u64 {
        self.page.saturating_sub(1).saturating_mul(self.per_page)
    }

    /// Number of pages for `total_count` rows (0 when there are no rows).
    pub fn page_count(&self, total_count: u64) -> u64 {
        total_count.div_ceil(self.per_page.max(1))
    }

    /// Yii's `validatePage`: a page beyond the last one is moved to the last page (when there
    /// is at least one page). Call this once the total count is known, before fetching rows.
    #[must_use]
    pub fn clamp_to_total(self, total_count: u64) -> Page {
        let page_count = self.page_count(total_count);
        if page_count > 0 && self.page > page_count {
            Page {
                page: page_count,
                ..self
            }
        } else {
            self
        }
    }
}

/// PHP `(int)` cast of a query value: optional leading whitespace and sign, then leading
/// digits (`"3abc"` => 3). `None` when there are no digits at all ("garbage").
fn php_int(value: &str) -> Option<i64> {
    let t = value.trim_start_matches([' ', '\t', '\n', '\r', '\u{0B}', '\u{0C}']);
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len == 0 {
        return None;
    }
    let mut n: i64 = 0;
    for b in rest.as_bytes()[..digits_len].iter() {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    Some(if negative { -n } else { n })
}

fn clamp_size(value: i64, max: u64) -> u64 {
    u64::try_from(value).unwrap_or(0).clamp(1, max)
}

/// Parses Yii `Pagination` parameters.
///
/// * `page`: 1-based; below 1, or garbage => 1.
/// * `per-page`: clamped into `[1, max_per_page]`; missing or garbage => the default.
/// * `page-size` (non-standard, some clients send it): replaces the *default* page size
///   when `per-page` is absent; clamped the same way.
pub fn parse_page(
    query: &HashMap<String, String>,
    default_per_page: u64,
    max_per_page: u64,
) -> Page {
    let max = max_per_page.max(1);
    let page = query
        .get("page")
        .and_then(|v| php_int(v))
        .and_then(|p| u64::try_from(p).ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let default = query
        .get("page-size")
        .and_then(|v| php_int(v))
        .map(|v| clamp_size(v, max))
        .unwrap_or_else(|| default_per_page.clamp(1, max));
    let per_page = query
        .get("per-page")
        .and_then(|v| php_int(v))
        .map(|v| clamp_size(v, max))
        .unwrap_or(default);
    Page { page, per_page }
}

/// Whether a query parameter may carry a credential, judged after percent-decoding (the
/// caller passes decoded text): its name is `access-token` in any case, with `_`, `.` or
/// spaces for the dash and any PHP array suffix (`access_token[]`), or its value contains
/// something shaped like an API key (`sak_…`, `waka_…`, legacy `wa_…`). Such parameters are
/// never echoed (pagination `Link` URLs), whatever encoding the client used.
pub fn is_credential_param(name: &str, value: &str) -> bool {
    let base = name.split('[').next().unwrap_or(name).trim();
    let normalized: String = base
        .chars()
        .map(|c| match c {
            '_' | '.' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    if normalized == super::auth_header::ACCESS_TOKEN_PARAM
        || normalized == super::auth_header::API_KEY_HEADER
    {
        return true;
    }
    value
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|token| {
            satchel_domain::KeyRole::from_key(token).is_some()
                && token
                    .split_once('_')
                    .is_some_and(|(_, rest)| rest.len() >= 8)
        })
}

/// The request URL (path + query) with `page` and `per-page` set; other parameters keep
/// their order, `page`/`per-page` keep their position when present (PHP array semantics).
/// Parameters that may carry a credential ([`is_credential_param`]) are dropped: every
/// parameter is decoded and re-encoded, so no encoding of the name lets a key through.
fn page_url(uri: &Uri, page: u64, per_page: u64) -> String {
    let page_text = page.to_string();
    let per_page_text = per_page.to_string();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen_page = false;
    let mut seen_per_page = false;
    if let Some(query) = uri.query() {
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "page" if seen_page => {}
                "page" => {
                    seen_page = true;
                    pairs.push((k.into_owned(), page_text.clone()));
                }
                "per-page" if seen_per_page => {}
                "per-page" => {
                    seen_per_page = true;
                    pairs.push((k.into_owned(), per_page_text.clone()));
                }
                _ if is_credential_param(&k, &v) => {}
                _ => pairs.push((k.into_owned(), v.into_owned())),
            }
        }
    }
    if !seen_page {
        pairs.push(("page".to_owned(), page_text));
    }
    if !seen_per_page {
        pairs.push(("per-page".to_owned(), per_page_text));
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        serializer.append_pair(k, v);
    }
    format!("{}?{}", uri.path(), serializer.finish())
}

/// Adds Yii's `rest\Serializer` pagination headers to a response.
///
/// `X-Pagination-Total-Count`, `X-Pagination-Page-Count` (`ceil(total / per_page)`, 0 when
/// there are no rows), `X-Pagination-Current-Page`, `X-Pagination-Per-Page`, a `Link` header
/// (`self`, and when there is at least one page `first`, `prev` (page > 1), `next`
/// (page < page count), `last`; relative URLs) and `Access-Control-Expose-Headers`.
pub fn pagination_headers(headers: &mut HeaderMap, uri: &Uri, page: &Page, total_count: u64) {
    let page_count = page.page_count(total_count);
    headers.insert(TOTAL_COUNT_HEADER, HeaderValue::from(total_count));
    headers.insert(PAGE_COUNT_HEADER, HeaderValue::from(page_count));
    headers.insert(CURRENT_PAGE_HEADER, HeaderValue::from(page.page));
    headers.insert(PER_PAGE_HEADER, HeaderValue::from(page.per_page));

    let link = |n: u64, rel: &str| format!("<{}>; rel={rel}", page_url(uri, n, page.per_page));
    let mut links = vec![link(page.page, "self")];
    if page_count > 0 {
        links.push(link(1, "first"));
        if page.page > 1 {
            links.push(link((page.page - 1).min(page_count), "prev"));
        }
        if page.page < page_count {
            links.push(link(page.page + 1, "next"));
        }
        links.push(link(page_count, "last"));
    }
    // The URL pieces are percent-encoded ASCII, so this cannot fail in practice.
    if let Ok(value) = HeaderValue::from_str(&links.join(", ")) {
        headers.insert(LINK, value);
    }
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(PAGINATION_EXPOSE_HEADERS),
    );
}

/// The `?fields=a,b` filter (Yii `rest\Serializer::getRequestedFields`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Option<Vec<String>>);

impl Fields {
    /// No filtering.
    pub fn none() -> Self {
        Self(None)
    }

    /// Filter to the given fields (an empty list means no filtering).
    pub fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list: Vec<String> = fields.into_iter().map(Into::into).collect();
        Self(if list.is_empty() { None } else { Some(list) })
    }

    /// Reads `?fields=`: comma-separated, trimmed, empty items dropped; nothing => `None`.
    pub fn from_query(query: &HashMap<String, String>) -> Fields {
        let list = query
            .get("fields")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Self::new(list)
    }

    /// `true` when no filtering is requested.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// The requested fields, if any.
    pub fn as_slice(&self) -> Option<&[String]> {
        self.0.as_deref()
    }

    fn wants(list: &[String], key: &str) -> bool {
        // Yii's `extractRootFields`: `lnTx.id` selects the root field `lnTx`.
        list.iter()
            .any(|f| f == key || f.split('.').next() == Some(key))
    }

    fn filter_object(list: &[String], map: Map<String, Value>) -> Map<String, Value> {
        map.into_iter()
            .filter(|(k, _)| Self::wants(list, k))
            .collect()
    }

    /// Keeps only the requested top-level keys of an object, in the object's original order
    /// (unknown names are ignored); applied to each object element of an array. Other values
    /// and `None` leave the value unchanged.
    pub fn apply(&self, v: Value) -> Value {
        let Some(list) = &self.0 else {
            return v;
        };
        match v {
            Value::Object(map) => Value::Object(Self::filter_object(list, map)),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| match item {
                        Value::Object(map) => Value::Object(Self::filter_object(list, map)),
                        other => other,
                    })
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn link_never_echoes_a_credential() {
        let key = "sak_Abcdefgh12345678";
        for query in [
            format!("access-token={key}"),
            format!("access%2Dtoken={key}"),
            format!("access%2dtoken={key}"),
            format!("%61ccess-token={key}"),
            format!("ACCESS-TOKEN={key}"),
            format!("access_token={key}"),
            format!("access.token={key}"),
            format!("access-token[]={key}"),
            format!("access-token%5B%5D={key}"),
            format!("x-api-key={key}"),
            format!("memo=hi%20{key}"),
            format!("foo=waka_{}", &key[4..]),
            format!("foo=%73ak_{}", &key[4..]),
        ] {
            let uri: Uri = format!("/v1/wallets?fields=id&{query}&page=2")
                .parse()
                .unwrap();
            let mut h = HeaderMap::new();
            pagination_headers(
                &mut h,
                &uri,
                &Page {
                    page: 2,
                    per_page: 1,
                },
                3,
            );
            let link = h[LINK].to_str().unwrap();
            assert!(!link.contains(&key[4..]), "{query}: {link}");
            assert!(link.contains("fields=id"), "{query}: {link}");
        }
        // Ordinary parameters survive, including ones that merely look alike.
        assert!(!is_credential_param("wallet_id", "wal_Abcdefgh12345678"));
        assert!(!is_credential_param("memo", "sak_short"));
        assert!(!is_credential_param("token", "x"));
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn page_defaults_and_clamps() {
        assert_eq!(
            parse_page(&q(&[]), 20, 100),
            Page {
                page: 1,
                per_page: 20
            }
        );
        assert_eq!(parse_page(&q(&[("page", "3")]), 20, 100).page, 3);
        for bad in ["0", "-2", "abc", ""] {
            assert_eq!(parse_page(&q(&[("page", bad)]), 20, 100).page, 1, "{bad}");
        }
        assert_eq!(parse_page(&q(&[("page", "3abc")]), 20, 100).page, 3);
        assert_eq!(parse_page(&q(&[("page", " 2")]), 20, 100).page, 2);

        assert_eq!(parse_page(&q(&[("per-page", "50")]), 20, 100).per_page, 50);
        assert_eq!(
            parse_page(&q(&[("per-page", "500")]), 20, 100).per_page,
            100
        );
        assert_eq!(parse_page(&q(&[("per-page", "0")]), 20, 100).per_page, 1);
        assert_eq!(parse_page(&q(&[("per-page", "-5")]), 20, 100).per_page, 1);
        assert_eq!(parse_page(&q(&[("per-page", "abc")]), 20, 100).per_page, 20);
        assert_eq!(parse_page(&q(&[("per-page", "")]), 20, 100).per_page, 20);
        assert_eq!(
            parse_page(&q(&[("per-page", "99999999999999999999999")]), 20, 100).per_page,
            100
        );
        // Default itself is clamped.
        assert_eq!(parse_page(&q(&[]), 500, 100).per_page, 100);
    }

    #[test]
    fn page_size_overrides_default_only() {
        assert_eq!(parse_page(&q(&[("page-size", "5")]), 20, 100).per_page, 5);
        assert_eq!(
            parse_page(&q(&[("page-size", "500")]), 20, 100).per_page,
            100
        );
        assert_eq!(parse_page(&q(&[("page-size", "x")]), 20, 100).per_page, 20);
        assert_eq!(
            parse_page(&q(&[("page-size", "5"), ("per-page", "7")]), 20, 100).per_page,
            7
        );
        assert_eq!(
            parse_page(&q(&[("page-size", "5"), ("per-page", "x")]), 20, 100).per_page,
            5
        );
    }

    #[test]
    fn offset_and_clamp_to_total() {
        let p = Page {
            page: 3,
            per_page: 20,
        };
        assert_eq!(p.offset(), 40);
        assert_eq!(
            Page {
                page: 1,
                per_page: 20
            }
            .offset(),
            0
        );
        assert_eq!(p.page_count(41), 3);
        assert_eq!(p.page_count(0), 0);
        assert_eq!(
            Page {
                page: 9,
                per_page: 20
            }
            .clamp_to_total(41)
            .page,
            3
        );
        assert_eq!(
            Page {
                page: 9,
                per_page: 20
            }
            .clamp_to_total(0)
            .page,
            9
        );
        assert_eq!(
            Page {
                page: 2,
                per_page: 20
            }
            .clamp_to_total(41)
            .page,
            2
        );
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn pagination_header_values() {
        let uri: Uri = "/v1/wallet/wal_x/transactions?fields=id&page=2&per-page=10"
            .parse()
            .unwrap();
        let page = Page {
            page: 2,
            per_page: 10,
        };
        let mut h = HeaderMap::new();
        pagination_headers(&mut h, &uri, &page, 35);
        assert_eq!(header(&h, "X-Pagination-Total-Count"), "35");
        assert_eq!(header(&h, "X-Pagination-Page-Count"), "4");
        assert_eq!(header(&h, "X-Pagination-Current-Page"), "2");
        assert_eq!(header(&h, "X-Pagination-Per-Page"), "10");
        let base = "/v1/wallet/wal_x/transactions?fields=id";
        assert_eq!(
            header(&h, "Link"),
            format!(
                "<{base}&page=2&per-page=10>; rel=self, <{base}&page=1&per-page=10>; rel=first, \
                 <{base}&page=1&per-page=10>; rel=prev, <{base}&page=3&per-page=10>; rel=next, \
                 <{base}&page=4&per-page=10>; rel=last"
            )
        );
        assert_eq!(
            header(&h, "Access-Control-Expose-Headers"),
            "X-Pagination-Total-Count, X-Pagination-Page-Count, X-Pagination-Current-Page, \
             X-Pagination-Per-Page, Link"
        );
    }

    #[test]
    fn pagination_first_last_and_empty() {
        let uri: Uri = "/v1/wallets".parse().unwrap();
        let mut h = HeaderMap::new();
        pagination_headers(
            &mut h,
            &uri,
            &Page {
                page: 1,
                per_page: 20,
            },
            20,
        );
        assert_eq!(header(&h, "X-Pagination-Page-Count"), "1");
        assert_eq!(
            header(&h, "Link"),
            "</v1/wallets?page=1&per-page=20>; rel=self, </v1/wallets?page=1&per-page=20>; \
             rel=first, </v1/wallets?page=1&per-page=20>; rel=last"
        );

        let mut h = HeaderMap::new();
        pagination_headers(
            &mut h,
            &uri,
            &Page {
                page: 1,
                per_page: 20,
            },
            0,
        );
        assert_eq!(header(&h, "X-Pagination-Total-Count"), "0");
        assert_eq!(header(&h, "X-Pagination-Page-Count"), "0");
        assert_eq!(
            header(&h, "Link"),
            "</v1/wallets?page=1&per-page=20>; rel=self"
        );

        // Last page: prev but no next; page param order preserved, duplicates collapsed.
        let uri: Uri = "/v1/wallets?per-page=5&a=b%20c&page=1&page=7"
            .parse()
            .unwrap();
        let mut h = HeaderMap::new();
        pagination_headers(
            &mut h,
            &uri,
            &Page {
                page: 3,
                per_page: 5,
            },
            11,
        );
        assert_eq!(
            header(&h, "Link"),
            "</v1/wallets?per-page=5&a=b+c&page=3>; rel=self, \
             </v1/wallets?per-page=5&a=b+c&page=1>; rel=first, \
             </v1/wallets?per-page=5&a=b+c&page=2>; rel=prev, \
             </v1/wallets?per-page=5&a=b+c&page=3>; rel=last"
        );
    }

    #[test]
    fn fields_parsing() {
        assert!(Fields::from_query(&q(&[])).is_none());
        assert!(Fields::from_query(&q(&[("fields", "")])).is_none());
        assert!(Fields::from_query(&q(&[("fields", " , ")])).is_none());
        assert_eq!(
            Fields::from_query(&q(&[("fields", " num_satoshis , settled,")])).as_slice(),
            Some(&["num_satoshis".to_owned(), "settled".to_owned()][..])
        );
    }

    #[test]
    fn fields_filter_keeps_original_order() {
        let v = json!({"id":"lntx_1","num_satoshis":5,"settled":1,"memo":"m"});
        let f = Fields::from_query(&q(&[("fields", "settled,num_satoshis,nope")]));
        assert_eq!(
            serde_json::to_string(&f.apply(v.clone())).unwrap(),
            r#"{"num_satoshis":5,"settled":1}"#
        );
        assert_eq!(Fields::none().apply(v.clone()), v);

        let list = json!([{"id":1,"a":2,"b":3},{"b":4,"id":5},7]);
        let f = Fields::new(["b", "id"]);
        assert_eq!(
            serde_json::to_string(&f.apply(list)).unwrap(),
            r#"[{"id":1,"b":3},{"b":4,"id":5},7]"#
        );

        // Dotted fields select their root.
        let v = json!({"id":"wtx_1","lnTx":{"id":"lntx_1","x":1},"wal":{}});
        let f = Fields::new(["lnTx.id"]);
        assert_eq!(f.apply(v), json!({"lnTx":{"id":"lntx_1","x":1}}));

        assert_eq!(Fields::new(["a"]).apply(json!(5)), json!(5));
    }
}
