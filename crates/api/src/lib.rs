//! Satchel's LNPay-v1-compatible HTTP API: routes, wire DTOs and the HTTP plumbing that makes
//! them behave like LNPay's (error envelope, body parsing, pagination, `?fields=`, CORS).
//!
//! The API layer holds no SQL and names no concrete backend: handlers parse input into domain
//! values, call one service method and map the result to a DTO.

pub mod docs;
pub mod dto;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod lnurlp;
pub mod lnurlp_pay;
pub mod lnurlw;
pub mod nodes;
pub mod openapi;
pub mod operator;
pub mod routes;
pub mod ui;
pub mod webhooks;

pub use routes::{ApiOptions, AppState, app, app_with, app_with_events};
