//! HTTP plumbing shared by all LNPay v1 routes: the Yii2 error envelope, request body
//! parsing, query-string helpers (pagination, `?fields=`), JSON success responses, CORS /
//! `OPTIONS` handling and API-key extraction.

pub mod auth_header;
pub mod body;
pub mod cors;
pub mod error;
pub mod observe;
pub mod query;
pub mod response;
pub mod throttle;

pub use auth_header::extract_api_key;
pub use body::{BodyTimedOut, Params, buffer_body, truthy_header};
pub use cors::{cors_layer, options_fallback};
pub use error::ApiError;
pub use query::{Fields, Page, pagination_headers, parse_page};
pub use response::Lnpay;
