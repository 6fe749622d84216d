//! The request body extractor [`Params`].
//!
//! LNPay (Yii2) parsed `application/json` bodies with its `JsonParser` and everything else
//! with PHP's form parsing. Clients depend on both: LNbits, the Python and JS SDKs send JSON,
//! the PHP SDK sends `form_params` (with `passThru` as a JSON *string* and PHP-style nested
//! keys such as `custom_records[7629169]=...`). [`Params`] accepts both and exposes lenient,
//! Yii-validator-like accessors that produce Yii's validation messages.

use std::collections::HashMap;
use std::pin::Pin;

use axum::body::{Body, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value};

use super::error::{ApiError, BODY_LIMIT};

/// Message for a JSON body that does not parse (Yii `JsonParser` + `json_last_error_msg`).
pub const INVALID_JSON_MESSAGE: &str = "Invalid JSON data in request body: Syntax error.";

/// Message for a JSON body that parses but is not an object.
pub const JSON_NOT_OBJECT_MESSAGE: &str = "Invalid JSON data in request body: expected an object.";

/// Message of the 415 answered for `multipart/form-data` bodies.
pub const MULTIPART_MESSAGE: &str = "multipart bodies are not supported; send JSON or form-encoded";

/// PHP's default `max_input_nesting_level`: deeper form keys are discarded.
const MAX_FORM_NESTING: usize = 64;

/// Parsed request body parameters (JSON object or form fields), in body order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    map: Map<String, Value>,
}

impl Params {
    /// Wraps an already-parsed map (useful for tests and internal callers).
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self { map }
    }

    /// The underlying map.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Consumes the params, returning the underlying map.
    pub fn into_map(self) -> Map<String, Value> {
        self.map
    }

    /// Parses a JSON body (see the module docs for the rules).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self { map }),
            // Yii's `Json::decode` turns `null` into "no parameters".
            Ok(Value::Null) => Ok(Self::default()),
            Ok(_) => Err(ApiError::bad_request(JSON_NOT_OBJECT_MESSAGE)),
            Err(err) => Err(ApiError::bad_request(INVALID_JSON_MESSAGE).with_detail(err)),
        }
    }

    /// Parses an `application/x-www-form-urlencoded` body with PHP's rules: nested keys
    /// (`a[b][c]=1`) become objects, `a[]=x` appends to a list, repeated keys: last wins.
    pub fn from_form_bytes(bytes: &[u8]) -> Self {
        let mut root = PhpArray::default();
        for (key, value) in form_urlencoded::parse(bytes) {
            register_php_variable(&mut root, &key, value.into_owned());
        }
        Self {
            map: root.into_object(),
        }
    }

    /// `true` when the body carried no parameters.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The raw value of a parameter.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// A string parameter. Numbers and booleans are converted to their text; `null` and a
    /// missing parameter give `None`; objects and arrays are rejected with
    /// `"{label} must be a string."`.
    pub fn string(&self, name: &str, label: &str) -> Result<Option<String>, ApiError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            // Postgres TEXT cannot hold U+0000 and SQLite can: refuse it so both behave alike.
            Some(Value::String(s)) if s.contains('\0') => Err(ApiError::bad_request(format!(
                "{label} must not contain NUL characters."
            ))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(Value::Array(_) | Value::Object(_)) => {
                Err(ApiError::bad_request(format!("{label} must be a string.")))
            }
        }
    }

    /// A required string parameter: missing, `null`, empty containers and strings that are
    /// empty after trimming give `"{label} cannot be blank."`. The value is returned as sent
    /// (untrimmed), like Yii's `RequiredValidator`.
    pub fn required_string(&self, name: &str, label: &str) -> Result<String, ApiError> {
        let blank = || ApiError::bad_request(format!("{label} cannot be blank."));
        match self.map.get(name) {
            Some(Value::Array(a)) if a.is_empty() => Err(blank()),
            Some(Value::Object(o)) if o.is_empty() => Err(blank()),
            _ => match self.string(name, label)? {
                Some(s) if !s.trim().is_empty() => Ok(s),
                _ => Err(blank()),
            },
        }
    }

    /// A non-negative integer parameter (Yii `integer` + `min: 0`), lenient about strings.
    ///
    /// Accepts a JSON integer or a string of digits with optional sign and surrounding
    /// whitespace (LNbits sends `"num_satoshis":"100"`). `""`, `null` and a missing parameter
    /// give `None`. Errors: negative => `"{label} must be no less than 0."`; floats with a
    /// fraction, booleans, containers and garbage => `"{label} must be an integer."`; beyond
    /// `u64` => `"{label} is too big."`.
    pub fn uint(&self, name: &str, label: &str) -> Result<Option<u64>, ApiError> {
        let Some(n) = self.integer(name, label)? else {
            return Ok(None);
        };
        if n < 0 {
            return Err(ApiError::bad_request(format!(
                "{label} must be no less than 0."
            )));
        }
        u64::try_from(n).map(Some).map_err(|_| too_big(label))
    }

    /// A signed integer parameter; same rules as [`Params::uint`] but negative values are
    /// allowed. Values outside `i64` give `"{label} is too big."`.
    pub fn int(&self, name: &str, label: &str) -> Result<Option<i64>, ApiError> {
        let Some(n) = self.integer(name, label)? else {
            return Ok(None);
        };
        i64::try_from(n).map(Some).map_err(|_| too_big(label))
    }

    /// A JSON-object parameter such as `passThru`.
    ///
    /// Accepts a JSON object, or a string holding a JSON object (surrounding whitespace
    /// allowed, e.g. `" {\"ticketId\":\"556\"} "`). `""`, `null`, the JSON text `null`, an
    /// empty list (PHP cannot tell `[]` from `{}`) and a missing parameter give `None`.
    /// Anything else is rejected with a 400 carrying `err_msg`.
    pub fn json_object(
        &self,
        name: &str,
        err_msg: &str,
    ) -> Result<Option<Map<String, Value>>, ApiError> {
        let invalid = || ApiError::bad_request(err_msg);
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(Value::Array(list)) if list.is_empty() => Ok(None),
            Some(Value::String(s)) => {
                let text = s.trim();
                if text.is_empty() {
                    return Ok(None);
                }
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(map)) => Ok(Some(map)),
                    Ok(Value::Null) => Ok(None),
                    Ok(Value::Array(list)) if list.is_empty() => Ok(None),
                    _ => Err(invalid()),
                }
            }
            Some(_) => Err(invalid()),
        }
    }

    /// Shared integer parsing; the result is wide enough for both `u64` and `i64`.
    fn integer(&self, name: &str, label: &str) -> Result<Option<i128>, ApiError> {
        let not_integer = || ApiError::bad_request(format!("{label} must be an integer."));
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    Ok(Some(i128::from(u)))
                } else if let Some(i) = n.as_i64() {
                    Ok(Some(i128::from(i)))
                } else {
                    // A float. PHP renders integral floats without a fraction (5.0 => "5"),
                    // which Yii's integer pattern accepts.
                    let f = n.as_f64().ok_or_else(not_integer)?;
                    if !f.is_finite() || f.fract() != 0.0 {
                        return Err(not_integer());
                    }
                    if f.abs() >= 1.0e20 {
                        // Beyond u64/i64 either way; keep the sign for `uint`'s message.
                        return Ok(Some(if f < 0.0 { i128::MIN } else { i128::MAX }));
                    }
                    // In range and integral: the conversion is exact enough for the check.
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(Some(f as i128))
                }
            }
            Some(Value::String(s)) => {
                if s.is_empty() {
                    return Ok(None);
                }
                parse_integer_text(s).map(Some).ok_or_else(not_integer)
            }
            Some(Value::Bool(_) | Value::Array(_) | Value::Object(_)) => Err(not_integer()),
        }
    }
}

fn too_big(label: &str) -> ApiError {
    ApiError::bad_request(format!("{label} is too big."))
}

/// Parses Yii's integer pattern `^\s*[+-]?\d+\s*$`. Values too large for `i128`'s useful
/// range saturate (so that callers report "too big" / "no less than 0").
fn parse_integer_text(s: &str) -> Option<i128> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{0B}');
    let (negative, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    let magnitude: i128 = if significant.is_empty() {
        0
    } else if significant.len() > 30 {
        i128::MAX
    } else {
        significant.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// PHP truthiness of a header value (`if ($header)`): present, non-empty and not `"0"`.
pub fn truthy_header(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| !v.as_bytes().is_empty() && v.as_bytes() != b"0")
}

/// How a body is parsed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Multipart,
}

fn body_kind(headers: &HeaderMap) -> BodyKind {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return BodyKind::Form;
    };
    let raw = String::from_utf8_lossy(value.as_bytes());
    let essence = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        BodyKind::Json
    } else if essence.starts_with("multipart/") {
        BodyKind::Multipart
    } else {
        // `application/x-www-form-urlencoded`, no content type, and anything else: PHP form
        // parsing (the documented LNPay behaviour: "If no Content-Type is specified, the
        // request will be interpreted as Form Data").
        BodyKind::Form
    }
}

/// The error a request body yields when it was not received within the server's body timeout
/// (the HTTP listener wraps every request body in a deadline). [`buffer_body`] answers it 408.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimedOut;

/// Reads at most `limit` bytes of `body`; more => 413.
/// Middleware: reads the whole request body (up to the limit) before authentication and routing.
/// A request refused early (bad key, unknown route) then never leaves unread bytes on a
/// keep-alive connection, which would corrupt the client's next request. An oversized body is
/// answered 413 with `Connection: close`, since its remainder is left unread.
pub async fn buffer_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match read_limited(body, BODY_LIMIT).await {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => {
            let mut resp = e.into_response();
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            resp
        }
    }
}

async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|err| {
            if is_length_limit_error(&err) {
                ApiError::payload_too_large()
            } else if is_body_timeout(&err) {
                ApiError::request_timeout()
            } else {
                ApiError::bad_request("Failed to read the request body.").with_detail(err)
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ApiError::payload_too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Whether a body error is the listener's [`BodyTimedOut`].
fn is_body_timeout(err: &axum::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Whether a body error comes from an outer length limit (e.g. tower-http's
/// `RequestBodyLimitLayer`), whose error type is not nameable from here.
fn is_length_limit_error(err: &axum::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.to_string() == "length limit exceeded" {
            return true;
        }
        current = e.source();
    }
    false
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let kind = body_kind(&parts.headers);
        if kind == BodyKind::Multipart {
            return Err(ApiError::unsupported_media_type(MULTIPART_MESSAGE));
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > BODY_LIMIT as u64) {
            return Err(ApiError::payload_too_large());
        }
        let bytes = read_limited(body, BODY_LIMIT).await?;
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        match kind {
            BodyKind::Json => Self::from_json_bytes(&bytes),
            BodyKind::Form | BodyKind::Multipart => Ok(Self::from_form_bytes(&bytes)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// PHP form-variable registration (`php_register_variable_ex`).

/// A PHP array: ordered, string-keyed, with PHP's "next free integer index".
#[derive(Debug, Default)]
struct PhpArray {
    entries: Vec<(String, Node)>,
    index: HashMap<String, usize>,
    next_free: i64,
}

/// A form value: a scalar string, or (when `scalar` is `None`) a nested PHP array.
#[derive(Debug, Default)]
struct Node {
    scalar: Option<String>,
    array: PhpArray,
}

impl Node {
    fn scalar(value: String) -> Self {
        Self {
            scalar: Some(value),
            array: PhpArray::default(),
        }
    }

    fn into_value(self) -> Value {
        match self.scalar {
            Some(s) => Value::String(s),
            None => self.array.into_value(),
        }
    }
}

impl PhpArray {
    fn note_key(&mut self, key: &str) {
        if let Some(k) = php_int_key(key)
            && k >= self.next_free
        {
            self.next_free = k.saturating_add(1);
        }
    }

    /// Key for `name[]`.
    fn append_key(&self) -> String {
        self.next_free.to_string()
    }

    /// Inserts or replaces (keeping the original position, like PHP) and returns the slot.
    fn set(&mut self, key: String, node: Node) -> usize {
        if let Some(&i) = self.index.get(&key) {
            self.entries[i].1 = node;
            i
        } else {
            self.note_key(&key);
            let i = self.entries.len();
            self.index.insert(key.clone(), i);
            self.entries.push((key, node));
            i
        }
    }

    /// The sub-array at `key`, replacing a scalar (or creating it) when needed.
    fn child(&mut self, key: String) -> &mut PhpArray {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => self.set(key, Node::default()),
        };
        let node = &mut self.entries[i].1;
        if node.scalar.take().is_some() {
            node.array = PhpArray::default();
        }
        &mut node.array
    }

    fn into_object(self) -> Map<String, Value> {
        self.entries
            .into_iter()
            .map(|(k, v)| (k, v.into_value()))
            .collect()
    }

    /// PHP `json_encode`: a list (keys 0..n-1 in order) becomes an array, else an object.
    fn into_value(self) -> Value {
        let is_list = self
            .entries
            .iter()
            .enumerate()
            .all(|(i, (k, _))| *k == i.to_string());
        if is_list {
            Value::Array(
                self.entries
                    .into_iter()
                    .map(|(_, v)| v.into_value())
                    .collect(),
            )
        } else {
            Value::Object(self.into_object())
        }
    }
}

/// PHP treats canonical decimal integer strings as integer keys.
fn php_int_key(key: &str) -> Option<i64> {
    let digits = key.strip_prefix('-').unwrap_or(key);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || key == "-0"
    {
        return None;
    }
    key.parse().ok()
}

/// Splits a form key the way PHP does: `base[i1][i2]...`. Returns `None` for variables PHP
/// discards (empty base name, nesting beyond the limit).
fn split_php_key(raw: &str) -> Option<(String, Vec<String>)> {
    let name = raw.trim_start_matches(' ');
    let mut base = String::new();
    let mut rest = None;
    for (i, c) in name.char_indices() {
        match c {
            ' ' | '.' => base.push('_'),
            '[' => {
                rest = Some(i);
                break;
            }
            _ => base.push(c),
        }
    }
    let mut indices = Vec::new();
    if let Some(start) = rest {
        let tail = &name[start..];
        if !tail[1..].contains(']') {
            // Not an index: PHP "un-terminates" the name, turning the `[` into `_` and
            // keeping the rest verbatim.
            base.push('_');
            base.push_str(&tail[1..]);
        } else {
            let mut cursor = tail;
            while let Some(inner) = cursor.strip_prefix('[') {
                let Some(end) = inner.find(']') else {
                    break;
                };
                indices.push(inner[..end].to_owned());
                cursor = &inner[end + 1..];
            }
        }
    }
    if base.is_empty() || indices.len() > MAX_FORM_NESTING {
        return None;
    }
    Some((base, indices))
}

fn register_php_variable(root: &mut PhpArray, raw_key: &str, value: String) {
    let Some((base, indices)) = split_php_key(raw_key) else {
        return;
    };
    let mut key = base;
    let mut target = root;
    for index in indices {
        target = target.child(key);
        key = if index.is_empty() {
            target.append_key()
        } else {
            index
        };
    }
    target.set(key, Node::scalar(value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    fn request(content_type: Option<&str>, body: impl Into<Body>) -> Request {
        let mut builder = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/v1/x");
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(body.into()).unwrap()
    }

    async fn extract(
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Result<Params, ApiError> {
        Params::from_request(request(content_type, body), &()).await
    }

    fn params(v: Value) -> Params {
        match v {
            Value::Object(map) => Params::from_map(map),
            _ => panic!("not an object"),
        }
    }

    #[tokio::test]
    async fn json_body_keeps_order() {
        let p = extract(
            Some("application/json"),
            r#"{"num_satoshis":100,"memo":"hi","passThru":{"b":1,"a":2}}"#,
        )
        .await
        .unwrap();
        let keys: Vec<_> = p.as_map().keys().cloned().collect();
        assert_eq!(keys, ["num_satoshis", "memo", "passThru"]);
        assert_eq!(p.uint("num_satoshis", "Num Satoshis").unwrap(), Some(100));
        assert_eq!(p.string("memo", "Memo").unwrap().as_deref(), Some("hi"));
        assert_eq!(
            serde_json::to_string(p.get("passThru").unwrap()).unwrap(),
            r#"{"b":1,"a":2}"#
        );
    }

    #[tokio::test]
    async fn json_content_type_variants() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "application/vnd.api+json",
        ] {
            let p = extract(Some(ct), r#"{"a":"b"}"#).await.unwrap();
            assert_eq!(p.get("a"), Some(&json!("b")), "{ct}");
        }
    }

    #[tokio::test]
    async fn json_malformed_and_non_object() {
        let err = extract(Some("application/json"), "{\"a\":")
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.message(),
            "Invalid JSON data in request body: Syntax error."
        );

        for body in ["[1,2]", "42", "\"str\"", "true"] {
            let err = extract(Some("application/json"), body).await.unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                err.message(),
                "Invalid JSON data in request body: expected an object."
            );
        }
    }

    #[tokio::test]
    async fn empty_bodies() {
        assert!(
            extract(Some("application/json"), "")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            extract(Some("application/json"), "  \n")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            extract(Some("application/json"), "null")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(extract(None, "").await.unwrap().is_empty());
        assert!(
            extract(Some("application/x-www-form-urlencoded"), Body::empty())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn form_body() {
        let p = extract(
            Some("application/x-www-form-urlencoded"),
            "num_satoshis=100&memo=hello+world%21&passThru=%7B%22a%22%3A1%7D",
        )
        .await
        .unwrap();
        assert_eq!(p.get("num_satoshis"), Some(&json!("100")));
        assert_eq!(p.uint("num_satoshis", "Num Satoshis").unwrap(), Some(100));
        assert_eq!(
            p.string("memo", "Memo").unwrap().as_deref(),
            Some("hello world!")
        );
        let pass = p
            .json_object("passThru", "passThru data must be valid json")
            .unwrap()
            .unwrap();
        assert_eq!(Value::Object(pass), json!({"a":1}));
    }

    #[tokio::test]
    async fn form_without_content_type_and_last_wins() {
        let p = extract(None, "a=1&b=2&a=3").await.unwrap();
        assert_eq!(
            serde_json::to_string(p.as_map()).unwrap(),
            r#"{"a":"3","b":"2"}"#
        );
    }

    #[tokio::test]
    async fn form_nested_php_keys() {
        let p = extract(
            None,
            "dest_pubkey=03ab&custom_records%5B7629169%5D=abc&custom_records[696969]=wal_1\
             &a[b][c]=1&a[b][d]=2&a[e]=3",
        )
        .await
        .unwrap();
        assert_eq!(
            serde_json::to_string(p.as_map()).unwrap(),
            r#"{"dest_pubkey":"03ab","custom_records":{"7629169":"abc","696969":"wal_1"},"a":{"b":{"c":"1","d":"2"},"e":"3"}}"#
        );
        let records = p.json_object("custom_records", "bad").unwrap().unwrap();
        assert_eq!(records.get("7629169"), Some(&json!("abc")));
    }

    #[tokio::test]
    async fn form_arrays() {
        let p = extract(None, "a[]=x&a[]=y&b[0]=p&b[1]=q&c[]=1&c[k]=2&c[]=3")
            .await
            .unwrap();
        assert_eq!(p.get("a"), Some(&json!(["x", "y"])));
        assert_eq!(p.get("b"), Some(&json!(["p", "q"])));
        assert_eq!(
            serde_json::to_string(p.get("c").unwrap()).unwrap(),
            r#"{"0":"1","k":"2","1":"3"}"#
        );
        let p = extract(None, "m[a][]=1&m[a][]=2").await.unwrap();
        assert_eq!(p.get("m"), Some(&json!({"a":["1","2"]})));
    }

    #[tokio::test]
    async fn form_php_key_quirks() {
        // Scalars are replaced by arrays and vice versa (last wins).
        let p = extract(None, "a=1&a[b]=2&c[d]=1&c=2").await.unwrap();
        assert_eq!(p.get("a"), Some(&json!({"b":"2"})));
        assert_eq!(p.get("c"), Some(&json!("2")));
        // Dots and spaces in the base name become underscores; an unterminated `[` too.
        let p = extract(None, "x.y=1&p%20q=2&r[s=3&[t]=4").await.unwrap();
        assert_eq!(
            serde_json::to_string(p.as_map()).unwrap(),
            r#"{"x_y":"1","p_q":"2","r_s":"3"}"#
        );
        // Trailing garbage after the last index is ignored.
        let p = extract(None, "k[a]zz=1").await.unwrap();
        assert_eq!(p.get("k"), Some(&json!({"a":"1"})));
    }

    #[tokio::test]
    async fn too_large_bodies() {
        // `Request::builder` sets no Content-Length: this exercises the streaming check.
        let big = format!("memo={}", "a".repeat(BODY_LIMIT));
        let err = extract(None, big.clone()).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.message(), "Request body too large (limit 65536 bytes).");

        // Declared length over the limit is refused without reading.
        let req = axum::http::Request::builder()
            .method(Method::POST)
            .header(CONTENT_LENGTH, "70000")
            .body(Body::from("a=1"))
            .unwrap();
        let err = Params::from_request(req, &()).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);

        // Exactly at the limit is fine.
        let exact = format!("m={}", "a".repeat(BODY_LIMIT - 2));
        let p = extract(None, exact).await.unwrap();
        assert_eq!(
            p.string("m", "M").unwrap().map(|s| s.len()),
            Some(BODY_LIMIT - 2)
        );
    }

    #[tokio::test]
    async fn multipart_is_refused() {
        let err = extract(Some("multipart/form-data; boundary=xyz"), "--xyz--")
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(err.message(), MULTIPART_MESSAGE);
    }

    #[test]
    fn uint_lenient_cases() {
        let p = params(json!({
            "s": "100", "n": 100, "ws": " 7 ", "neg": -1, "negs": "-1", "float": 1.5,
            "floats": "1.5", "abc": "abc", "huge": "99999999999999999999999", "empty": "",
            "null": null, "bool": true, "arr": [1], "intf": 5.0, "plus": "+8",
            "hugenum": 99999999999999999999999u128 as f64, "negzero": "-0", "space": "  ",
            "hugeneg": "-99999999999999999999999", "max": "18446744073709551615",
            "tab": "\t12\n"
        }));
        let l = "Num Satoshis";
        let msg = |r: Result<Option<u64>, ApiError>| r.unwrap_err().message().to_owned();
        assert_eq!(p.uint("s", l).unwrap(), Some(100));
        assert_eq!(p.uint("n", l).unwrap(), Some(100));
        assert_eq!(p.uint("ws", l).unwrap(), Some(7));
        assert_eq!(p.uint("tab", l).unwrap(), Some(12));
        assert_eq!(p.uint("plus", l).unwrap(), Some(8));
        assert_eq!(p.uint("intf", l).unwrap(), Some(5));
        assert_eq!(p.uint("negzero", l).unwrap(), Some(0));
        assert_eq!(p.uint("max", l).unwrap(), Some(u64::MAX));
        assert_eq!(p.uint("empty", l).unwrap(), None);
        assert_eq!(p.uint("null", l).unwrap(), None);
        assert_eq!(p.uint("missing", l).unwrap(), None);
        assert_eq!(
            msg(p.uint("neg", l)),
            "Num Satoshis must be no less than 0."
        );
        assert_eq!(
            msg(p.uint("negs", l)),
            "Num Satoshis must be no less than 0."
        );
        assert_eq!(
            msg(p.uint("hugeneg", l)),
            "Num Satoshis must be no less than 0."
        );
        for k in ["float", "floats", "abc", "bool", "arr", "space"] {
            assert_eq!(msg(p.uint(k, l)), "Num Satoshis must be an integer.", "{k}");
        }
        assert_eq!(msg(p.uint("huge", l)), "Num Satoshis is too big.");
        assert_eq!(msg(p.uint("hugenum", l)), "Num Satoshis is too big.");
        let err = p.uint("neg", l).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn int_cases() {
        let p = params(json!({
            "neg": -5, "negs": " -12 ", "pos": "42", "huge": "9223372036854775808",
            "hugeneg": "-9223372036854775809", "min": "-9223372036854775808", "big": u64::MAX,
            "f": 2.5
        }));
        let l = "Fee Limit Msat";
        assert_eq!(p.int("neg", l).unwrap(), Some(-5));
        assert_eq!(p.int("negs", l).unwrap(), Some(-12));
        assert_eq!(p.int("pos", l).unwrap(), Some(42));
        assert_eq!(p.int("min", l).unwrap(), Some(i64::MIN));
        assert_eq!(
            p.int("huge", l).unwrap_err().message(),
            "Fee Limit Msat is too big."
        );
        assert_eq!(
            p.int("hugeneg", l).unwrap_err().message(),
            "Fee Limit Msat is too big."
        );
        assert_eq!(
            p.int("big", l).unwrap_err().message(),
            "Fee Limit Msat is too big."
        );
        assert_eq!(
            p.int("f", l).unwrap_err().message(),
            "Fee Limit Msat must be an integer."
        );
    }

    #[test]
    fn string_accessors() {
        let p = params(json!({
            "s": "abc", "n": 12, "f": 1.5, "b": true, "o": {"a": 1}, "a": [1], "blank": "  ",
            "null": null, "ea": [], "padded": " x "
        }));
        assert_eq!(p.string("s", "S").unwrap().as_deref(), Some("abc"));
        assert_eq!(p.string("n", "N").unwrap().as_deref(), Some("12"));
        assert_eq!(p.string("f", "F").unwrap().as_deref(), Some("1.5"));
        assert_eq!(p.string("b", "B").unwrap().as_deref(), Some("true"));
        assert_eq!(p.string("null", "Null").unwrap(), None);
        assert_eq!(p.string("missing", "M").unwrap(), None);
        assert_eq!(
            p.string("o", "Memo").unwrap_err().message(),
            "Memo must be a string."
        );
        assert_eq!(
            p.string("a", "Memo").unwrap_err().message(),
            "Memo must be a string."
        );

        assert_eq!(p.required_string("s", "S").unwrap(), "abc");
        assert_eq!(p.required_string("padded", "P").unwrap(), " x ");
        assert_eq!(p.required_string("n", "N").unwrap(), "12");
        for k in ["blank", "null", "missing", "ea"] {
            assert_eq!(
                p.required_string(k, "Payment Request")
                    .unwrap_err()
                    .message(),
                "Payment Request cannot be blank.",
                "{k}"
            );
        }
        assert_eq!(
            p.required_string("o", "Memo").unwrap_err().message(),
            "Memo must be a string."
        );
    }

    #[test]
    fn json_object_cases() {
        let msg = "passThru data must be valid json";
        let p = params(json!({
            "obj": {"ticketId": "556", "a": 1},
            "str": " {\"ticketId\":\"556\"} ",
            "bad": "{not json",
            "arrstr": "[1,2]",
            "num": 5,
            "arr": [1],
            "earr": [],
            "empty": "",
            "null": null,
            "nullstr": "null",
            "numstr": "5"
        }));
        assert_eq!(
            serde_json::to_string(&p.json_object("obj", msg).unwrap().unwrap()).unwrap(),
            r#"{"ticketId":"556","a":1}"#
        );
        assert_eq!(
            Value::Object(p.json_object("str", msg).unwrap().unwrap()),
            json!({"ticketId":"556"})
        );
        for k in ["bad", "arrstr", "num", "arr", "numstr"] {
            let err = p.json_object(k, msg).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.message(), msg, "{k}");
        }
        for k in ["earr", "empty", "null", "nullstr", "missing"] {
            assert_eq!(p.json_object(k, msg).unwrap(), None, "{k}");
        }
    }

    #[test]
    fn truthy_header_cases() {
        let mut h = HeaderMap::new();
        assert!(!truthy_header(&h, "X-LNPAY-ASYNC"));
        h.insert("x-lnpay-async", "".parse().unwrap());
        assert!(!truthy_header(&h, "X-LNPAY-ASYNC"));
        h.insert("x-lnpay-async", "0".parse().unwrap());
        assert!(!truthy_header(&h, "X-LNPAY-ASYNC"));
        for v in ["1", "true", "yes", "false", "00"] {
            h.insert("x-lnpay-async", v.parse().unwrap());
            assert!(truthy_header(&h, "X-LNPAY-ASYNC"), "{v}");
        }
    }
}
