//! The outermost middleware: request ids and HTTP metrics.
//!
//! Every request gets an id ([`RequestId`]): the client's `X-Request-Id` if it is short and
//! safe, else a fresh one. The id is
//! - the `request_id` field of a tracing span around the request, so every log line of the
//!   request (JSON or human format) carries it;
//! - the current request id of the store (`satchel_service::request_id`), so events the request
//!   causes remember it and their webhooks send it;
//! - echoed in the `X-Request-Id` response header and in error bodies (`request_id`).
//!
//! Metrics are labelled with the **route template** (`/v1/wallet/{key}`), never the raw path:
//! paths carry wallet keys. [`record_route`], a route layer, copies axum's matched path into the
//! response; requests that matched no route are labelled `unmatched`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use satchel_domain::RequestId;
use tracing::Instrument as _;

/// The request id header (request and response).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Counter: HTTP requests answered, by `method`, `route` (template) and `status` (metric name).
pub const HTTP_REQUESTS_TOTAL: &str = "satchel_http_requests_total";
/// Histogram: seconds from a request's arrival at the router to its response head, by `method`
/// and `route` (metric name).
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "satchel_http_request_duration_seconds";

/// Route label of a request that matched no route (404s, scans).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The route template of the matched route, carried from [`record_route`] to [`observe`] in the
/// response's extensions.
#[derive(Debug, Clone)]
struct Route(MatchedPath);

/// The route template that answered, if one did (for the UI's recent-errors ring).
pub fn matched_route(resp: &Response) -> Option<&str> {
    resp.extensions().get::<Route>().map(|r| r.0.as_str())
}

/// Route layer (`Router::route_layer`): remembers which route answered.
pub async fn record_route(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Some(m) = matched {
        resp.extensions_mut().insert(Route(m));
    }
    resp
}

/// A bounded method label: the methods the API knows, everything else `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware (`axum::middleware::from_fn`), outermost: see the module docs.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = RequestId::from_client(
        req.headers()
            .get(&REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let method = method_label(req.method());
    // No path in the span: it carries wallet keys.
    let span = tracing::info_span!("request", request_id = %id, method);
    let mut resp = satchel_service::request_id::scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let route: String = resp
        .extensions()
        .get::<Route>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |r| r.0.as_str().to_owned());
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!(HTTP_REQUESTS_TOTAL, "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route.clone())
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            %route,
            status,
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "request answered"
        );
    });
    // The id is validated (or generated) to a header-safe charset, so this cannot fail.
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
