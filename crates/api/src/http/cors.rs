//! CORS and `OPTIONS` handling (Yii `filters\Cors` defaults + `rest\OptionsAction`).
//!
//! Recommended composition (the fallback outermost):
//!
//! ```text
//! router
//!     .layer(cors_layer())
//!     .layer(axum::middleware::from_fn(options_fallback))
//! ```
//!
//! * [`options_fallback`] answers **every** `OPTIONS` request (any path, no authentication)
//!   with `200`, an empty body and `Allow`; when the request carries an `Origin` it also adds
//!   the CORS preflight headers itself, with the same policy as [`cors_layer`], so browser
//!   preflights work even though the request never reaches the CORS layer.
//! * [`cors_layer`] decorates all other responses (`Access-Control-Allow-Origin`,
//!   `Access-Control-Expose-Headers`, `Vary`).
//!
//! The reverse order also works (tower-http's `CorsLayer` answers every `OPTIONS` request
//! itself with `200` and an empty body), but then the `Allow` header is not sent.

use std::time::Duration;

use axum::extract::Request;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ALLOW, LINK, ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::query::{CURRENT_PAGE_HEADER, PAGE_COUNT_HEADER, PER_PAGE_HEADER, TOTAL_COUNT_HEADER};

/// Methods allowed by the CORS policy and listed in `Allow`.
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";

/// `Access-Control-Max-Age` (Yii Cors default), in seconds.
pub const CORS_MAX_AGE_SECS: u64 = 86_400;

const VARY_VALUE: &str = "origin, access-control-request-method, access-control-request-headers";

/// The CORS layer with Yii's `Cors` defaults: the request `Origin` is echoed, methods
/// GET/POST/PUT/PATCH/DELETE/HEAD/OPTIONS, any request headers (mirrored), max-age 86400,
/// and the `X-Pagination-*` headers plus `Link` exposed.
pub fn cors_layer() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(CORS_MAX_AGE_SECS))
        .expose_headers([
            TOTAL_COUNT_HEADER,
            PAGE_COUNT_HEADER,
            CURRENT_PAGE_HEADER,
            PER_PAGE_HEADER,
            LINK,
            // A browser client retrying with an `Idempotency-Key` can tell a replay.
            crate::idempotency::REPLAYED,
            axum::http::header::RETRY_AFTER,
            // What to quote when reporting a problem.
            super::observe::REQUEST_ID_HEADER,
        ])
}

/// Middleware (for `axum::middleware::from_fn`): answers every `OPTIONS` request with `200`,
/// an empty body and `Allow: GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS` without running
/// authentication or routing; other methods pass through.
pub async fn options_fallback(req: Request, next: Next) -> Response {
    if req.method() != Method::OPTIONS {
        return next.run(req).await;
    }
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    // Yii's OptionsAction sets this one too.
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    headers.insert(VARY, HeaderValue::from_static(VARY_VALUE));
    if let Some(origin) = req.headers().get(ORIGIN) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(CORS_MAX_AGE_SECS));
        if let Some(requested) = req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::http::header::ACCESS_CONTROL_EXPOSE_HEADERS;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/v1/wallet/{key}", get(|| async { "wallet" }))
            .layer(cors_layer())
            .layer(axum::middleware::from_fn(options_fallback))
    }

    fn bare_app() -> Router {
        Router::new()
            .route(
                "/v1/wallet/{key}",
                get(|| async { "wallet" }).post(|| async { "posted" }),
            )
            .layer(axum::middleware::from_fn(options_fallback))
    }

    async fn send(
        app: Router,
        req: axum::http::Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = app.oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn options(uri: &str) -> axum::http::request::Builder {
        axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri(uri)
    }

    #[tokio::test]
    async fn plain_options_on_known_and_unknown_paths() {
        for uri in [
            "/v1/wallet/wal_x",
            "/v1/does/not/exist",
            "/v1/wallet/wal_x/invoice",
        ] {
            for app in [app(), bare_app()] {
                let (s, h, b) = send(app, options(uri).body(Body::empty()).unwrap()).await;
                assert_eq!(s, StatusCode::OK, "{uri}");
                assert_eq!(b, "");
                assert_eq!(h[ALLOW], "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS");
                assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            }
        }
    }

    #[tokio::test]
    async fn browser_preflight_gets_cors_headers() {
        let req = options("/v1/wallet/wal_x")
            .header(ORIGIN, "https://example.com")
            .header("access-control-request-method", "POST")
            .header(ACCESS_CONTROL_REQUEST_HEADERS, "x-api-key,content-type")
            .body(Body::empty())
            .unwrap();
        let (s, h, b) = send(app(), req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-api-key,content-type");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "86400");
        assert!(
            h[ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }

    #[tokio::test]
    async fn cors_layer_outermost_also_answers_options() {
        let app = Router::new()
            .route("/v1/wallet/{key}", get(|| async { "wallet" }))
            .layer(axum::middleware::from_fn(options_fallback))
            .layer(cors_layer());
        let req = options("/v1/nowhere")
            .header(ORIGIN, "https://a.example")
            .header(ACCESS_CONTROL_REQUEST_HEADERS, "x-api-key")
            .body(Body::empty())
            .unwrap();
        let (s, h, b) = send(app, req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-api-key");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "86400");
    }

    #[tokio::test]
    async fn other_methods_pass_through_with_cors_headers() {
        let req = axum::http::Request::builder()
            .uri("/v1/wallet/wal_x")
            .header(ORIGIN, "https://example.com")
            .body(Body::empty())
            .unwrap();
        let (s, h, b) = send(app(), req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "wallet");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://example.com");
        let expose = h[ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for name in [
            "x-pagination-total-count",
            "x-pagination-page-count",
            "x-pagination-current-page",
            "x-pagination-per-page",
            "link",
        ] {
            assert!(expose.contains(name), "{expose}");
        }
        assert!(h.get(ALLOW).is_none());

        let req = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/v1/wallet/wal_x")
            .body(Body::empty())
            .unwrap();
        let (s, _, b) = send(bare_app(), req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b, "posted");

        let req = axum::http::Request::builder()
            .uri("/v1/nope")
            .body(Body::empty())
            .unwrap();
        let (s, _, _) = send(bare_app(), req).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
