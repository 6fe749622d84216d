//! [`Lnpay`]: a JSON success response in LNPay's wire format.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, JSON_CONTENT_TYPE};
use super::query::Fields;

/// A JSON success response: status, body (serialized with `serde_json`, key order kept),
/// optional `?fields=` filter and extra headers.
#[derive(Debug, Clone)]
pub struct Lnpay<T: Serialize> {
    /// HTTP status (200 or 201 for LNPay's success responses).
    pub status: StatusCode,
    /// The body.
    pub body: T,
    /// `?fields=` filter applied to the serialized body.
    pub fields: Fields,
    /// Extra response headers (e.g. pagination headers).
    pub headers: HeaderMap,
}

impl<T: Serialize> Lnpay<T> {
    /// 200 OK.
    pub fn ok(body: T) -> Self {
        Self::with_status_code(StatusCode::OK, body)
    }

    /// 201 Created.
    pub fn created(body: T) -> Self {
        Self::with_status_code(StatusCode::CREATED, body)
    }

    fn with_status_code(status: StatusCode, body: T) -> Self {
        Self {
            status,
            body,
            fields: Fields::none(),
            headers: HeaderMap::new(),
        }
    }

    /// Applies a `?fields=` filter.
    #[must_use]
    pub fn with_fields(mut self, f: Fields) -> Self {
        self.fields = f;
        self
    }

    /// Adds response headers (a header already present is replaced).
    #[must_use]
    pub fn with_headers(mut self, h: HeaderMap) -> Self {
        self.headers.extend(h);
        self
    }

    fn body_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        if self.fields.is_none() {
            serde_json::to_vec(&self.body)
        } else {
            let value = serde_json::to_value(&self.body)?;
            serde_json::to_vec(&self.fields.apply(value))
        }
    }
}

impl<T: Serialize> IntoResponse for Lnpay<T> {
    fn into_response(self) -> Response {
        let bytes = match self.body_bytes() {
            Ok(bytes) => bytes,
            Err(err) => {
                return ApiError::internal(format_args!("response serialization failed: {err}"))
                    .into_response();
            }
        };
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
        headers.extend(self.headers);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use serde::ser::Error as _;
    use serde_json::json;

    async fn render(r: impl IntoResponse) -> (StatusCode, HeaderMap, String) {
        let response = r.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[derive(Serialize)]
    struct LnTx {
        id: &'static str,
        num_satoshis: u64,
        settled: u8,
    }

    #[tokio::test]
    async fn ok_and_created() {
        let (s, h, b) = render(Lnpay::ok(json!({"z":1,"a":2}))).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h[CONTENT_TYPE], "application/json; charset=UTF-8");
        assert_eq!(b, r#"{"z":1,"a":2}"#);

        let tx = LnTx {
            id: "lntx_1",
            num_satoshis: 5,
            settled: 1,
        };
        let (s, _, b) = render(Lnpay::created(tx)).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(b, r#"{"id":"lntx_1","num_satoshis":5,"settled":1}"#);
    }

    #[tokio::test]
    async fn fields_and_headers() {
        let tx = LnTx {
            id: "lntx_1",
            num_satoshis: 5,
            settled: 1,
        };
        let mut extra = HeaderMap::new();
        extra.insert("x-pagination-total-count", HeaderValue::from(3u64));
        let r = Lnpay::ok(vec![tx])
            .with_fields(Fields::new(["settled", "num_satoshis"]))
            .with_headers(extra);
        let (s, h, b) = render(r).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, r#"[{"num_satoshis":5,"settled":1}]"#);
        assert_eq!(h["x-pagination-total-count"], "3");
        assert_eq!(h[CONTENT_TYPE], "application/json; charset=UTF-8");
    }

    struct Broken;
    impl Serialize for Broken {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("boom"))
        }
    }

    #[tokio::test]
    async fn serialization_failure_is_internal_error() {
        let (s, _, b) = render(Lnpay::ok(Broken)).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            b,
            r#"{"name":"Internal Server Error","message":"An internal server error occurred.","code":0,"status":500}"#
        );
        let (s, _, _) = render(Lnpay::ok(Broken).with_fields(Fields::new(["a"]))).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
