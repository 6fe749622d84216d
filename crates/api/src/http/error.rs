//! The Yii2 REST error envelope.
//!
//! LNPay answered every error with the body that Yii's `ErrorHandler::convertExceptionToArray`
//! produces in production mode:
//!
//! ```json
//! {"name":"Bad Request","message":"...","code":0,"status":400}
//! ```
//!
//! `name` is the HTTP reason phrase, `code` is always `0` and `status` repeats the HTTP status.
//! Satchel adds one member at the end, `request_id`: the id of the request (also in the
//! `X-Request-Id` header), so a user's report of an error can be found in the logs. LNPay's own
//! envelope grew members too (`type`, `file`, … in debug mode), and its SDKs read only `message`
//! (and the Go SDK decodes into a struct, which ignores unknown members).
//! Every `401` also carries `WWW-Authenticate: Basic realm="api"` (Yii's `CompositeAuth`
//! challenges with its `HttpBasicAuth` member).

use std::fmt;

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `Content-Type` of every JSON response (Yii's `JsonResponseFormatter`).
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";

/// The `WWW-Authenticate` challenge sent with every `401`.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"api\"";

/// Maximum accepted request body size, in bytes.
pub const BODY_LIMIT: usize = 65_536;

/// Message of [`ApiError::invalid_credentials`] (Yii `AuthMethod::handleFailure`).
pub const INVALID_CREDENTIALS_MESSAGE: &str = "Your request was made with invalid credentials.";

/// Message sent for every [`ApiError::internal`] error; the real cause is only logged.
pub const INTERNAL_ERROR_MESSAGE: &str = "An internal server error occurred.";

/// An error rendered as LNPay's (Yii's) JSON error envelope.
///
/// The `detail` is an internal description that is logged (with `tracing::error!`) when
/// the response is rendered and is never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    detail: Option<String>,
    /// Seconds for the `Retry-After` header (429, 503).
    retry_after_secs: Option<u64>,
    /// A presented API key was refused: the auth throttle counts the response.
    rejected_credential: bool,
}

/// Response extension set on a 401 for a presented but unknown API key; the auth throttle
/// (`super::throttle`) counts these per client address.
#[derive(Debug, Clone, Copy)]
pub struct RejectedCredential;

/// Message of [`ApiError::unavailable`].
pub const UNAVAILABLE_MESSAGE: &str = "The service is temporarily unavailable. Please retry later.";

/// Message of [`ApiError::too_many_requests`].
pub const THROTTLED_MESSAGE: &str = "Too many failed authentication attempts. Please retry later.";

impl ApiError {
    /// 400 "Bad Request" with the given message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    /// 401 "Unauthorized" with the given message.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, msg)
    }

    /// 401 "Your request was made with invalid credentials." (missing or unknown API key).
    pub fn invalid_credentials() -> Self {
        Self::unauthorized(INVALID_CREDENTIALS_MESSAGE)
    }

    /// 404 "Page not found." (unknown route, Yii `UrlManager` miss).
    pub fn not_found_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Page not found.")
    }

    /// 405 "Method Not Allowed."
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed.")
    }

    /// 413 "Request body too large (limit 65536 bytes)."
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body too large (limit {BODY_LIMIT} bytes)."),
        )
    }

    /// 415 "Unsupported Media Type" with the given message.
    pub fn unsupported_media_type(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg)
    }

    /// 408 "Request body not received in time." (the connection is closed after it).
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "The request body was not received in time.",
        )
    }

    /// 429 with `Retry-After`: too many failed authentications from this client address.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, THROTTLED_MESSAGE);
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    /// 503 with `Retry-After`: a dependency (the database) cannot be reached right now. The
    /// outcome of a write caught in the outage may be unknown, so the client is told to retry
    /// (with its idempotency key), never that nothing happened. `detail` is logged only.
    pub fn unavailable(detail: impl fmt::Display, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE_MESSAGE);
        e.detail = Some(detail.to_string());
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    /// Marks a 401 as the refusal of a presented key, which the auth throttle counts.
    #[must_use]
    pub fn rejected_credential(mut self) -> Self {
        self.rejected_credential = true;
        self
    }

    /// The `Retry-After` seconds, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// 500 "An internal server error occurred.".
    ///
    /// `detail` is kept for the logs only (logged when the response is rendered).
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: INTERNAL_ERROR_MESSAGE.to_owned(),
            detail: Some(detail.to_string()),
            retry_after_secs: None,
            rejected_credential: false,
        }
    }

    /// Any 4xx/5xx status with the given (client-visible) message.
    ///
    /// A status that is not an error status (1xx/2xx/3xx) is a programming error; it is
    /// turned into a 500 so that an error can never be rendered as a success.
    pub fn with_status(status: StatusCode, msg: impl Into<String>) -> Self {
        Self::new(status, msg)
    }

    /// Attaches an internal detail that is logged (never sent) when the response is rendered.
    #[must_use]
    pub fn with_detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The client-visible message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The internal detail (for logs), if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The `name` member of the envelope: the canonical reason phrase of the status.
    pub fn name(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        let status = if status.is_client_error() || status.is_server_error() {
            status
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self {
            status,
            message: msg.into(),
            detail: None,
            retry_after_secs: None,
            rejected_credential: false,
        }
    }

    /// The exact body bytes of the envelope.
    fn body_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            name: &'a str,
            message: &'a str,
            code: u8,
            status: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            request_id: Option<&'a str>,
        }
        // Rendered inside the request (see `super::observe`); outside one there is no id.
        let request_id = satchel_service::request_id::current();
        let envelope = Envelope {
            name: self.name(),
            message: &self.message,
            code: 0,
            status: self.status.as_u16(),
            request_id: request_id.as_ref().map(satchel_domain::RequestId::as_str),
        };
        // Serializing two strings and two integers cannot fail; fall back to a fixed body
        // anyway so that no panic path exists.
        serde_json::to_vec(&envelope).unwrap_or_else(|_| {
            br#"{"name":"Internal Server Error","message":"An internal server error occurred.","code":0,"status":500}"#
                .to_vec()
        })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.name(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.detail {
            if self.status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(status = 503, detail = %detail, "request failed: unavailable");
            } else if self.status.is_server_error() {
                tracing::error!(status = self.status.as_u16(), detail = %detail, "request failed");
            } else {
                tracing::debug!(status = self.status.as_u16(), detail = %detail, "request rejected");
            }
        }
        let mut response = (self.status, self.body_bytes()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.rejected_credential {
            response.extensions_mut().insert(RejectedCredential);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn render(err: ApiError) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = err.into_response();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn bad_request_envelope_is_exact() {
        let (status, headers, body) = render(ApiError::bad_request("x")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            r#"{"name":"Bad Request","message":"x","code":0,"status":400}"#
        );
        assert_eq!(headers[CONTENT_TYPE], "application/json; charset=UTF-8");
        assert!(headers.get(WWW_AUTHENTICATE).is_none());
    }

    #[tokio::test]
    async fn unauthorized_carries_challenge() {
        let (status, headers, body) = render(ApiError::invalid_credentials()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[WWW_AUTHENTICATE], r#"Basic realm="api""#);
        assert_eq!(
            body,
            r#"{"name":"Unauthorized","message":"Your request was made with invalid credentials.","code":0,"status":401}"#
        );
        let (_, headers, body) = render(ApiError::unauthorized("LnTx not found")).await;
        assert_eq!(headers[WWW_AUTHENTICATE], r#"Basic realm="api""#);
        assert_eq!(
            body,
            r#"{"name":"Unauthorized","message":"LnTx not found","code":0,"status":401}"#
        );
    }

    #[tokio::test]
    async fn internal_hides_detail() {
        let err = ApiError::internal("db password=hunter2 connection refused");
        assert_eq!(err.detail(), Some("db password=hunter2 connection refused"));
        let (status, _, body) = render(err).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            r#"{"name":"Internal Server Error","message":"An internal server error occurred.","code":0,"status":500}"#
        );
        assert!(!body.contains("hunter2"));
    }

    #[tokio::test]
    async fn request_id_is_the_last_member_inside_a_request() {
        let id = satchel_domain::RequestId::parse("req-1").unwrap();
        let (_, _, body) =
            satchel_service::request_id::scope(id, render(ApiError::bad_request("x"))).await;
        assert_eq!(
            body,
            r#"{"name":"Bad Request","message":"x","code":0,"status":400,"request_id":"req-1"}"#
        );
    }

    #[tokio::test]
    async fn other_constructors() {
        let (s, _, b) = render(ApiError::not_found_route()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            b,
            r#"{"name":"Not Found","message":"Page not found.","code":0,"status":404}"#
        );

        let (s, _, b) = render(ApiError::method_not_allowed()).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            b,
            r#"{"name":"Method Not Allowed","message":"Method Not Allowed.","code":0,"status":405}"#
        );

        let (s, _, b) = render(ApiError::payload_too_large()).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            b,
            r#"{"name":"Payload Too Large","message":"Request body too large (limit 65536 bytes).","code":0,"status":413}"#
        );

        let (s, _, b) = render(ApiError::unsupported_media_type("nope")).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            b,
            r#"{"name":"Unsupported Media Type","message":"nope","code":0,"status":415}"#
        );

        let (s, _, b) = render(ApiError::with_status(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded.",
        ))
        .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            b,
            r#"{"name":"Too Many Requests","message":"Rate limit exceeded.","code":0,"status":429}"#
        );
    }

    #[test]
    fn accessors_and_non_error_status() {
        let err = ApiError::bad_request("Num Satoshis cannot be blank.");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.message(), "Num Satoshis cannot be blank.");
        assert_eq!(err.name(), "Bad Request");
        assert_eq!(
            err.to_string(),
            "400 Bad Request: Num Satoshis cannot be blank."
        );

        let err = ApiError::with_status(StatusCode::OK, "oops");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.message(), "oops");
    }

    #[tokio::test]
    async fn server_error_with_status_sends_message() {
        let err = ApiError::with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Please try again soon, wallet busy ID:wal_x",
        );
        let (_, _, b) = render(err).await;
        assert_eq!(
            b,
            r#"{"name":"Internal Server Error","message":"Please try again soon, wallet busy ID:wal_x","code":0,"status":500}"#
        );
    }
}
