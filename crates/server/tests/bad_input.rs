//! Every bad input gets a 4xx in LNPay's envelope `{name,message,code,status}` (never a 500) and
//! writes nothing, on both databases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Resp, TestServer, WalletKeys, on_each_db};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A mainnet invoice from the LNPay docs (1 sat, "Test for DOCS"); our node runs on regtest.
const MAINNET_DOC_INVOICE: &str = "lnbc10n1p09yafzpp5ens55wl8pfm6n2222pyyxjhx9rwcj4zl8pcyhsr2qzlklke4qfvsdq423jhxapqvehhygzyfap4xxqyz5vqcqzyssp52vyh6djmjt644fygwr54cs9vv82d2zc67tmkeun3c40ypzrvqe4srzjqt0pr36g7ke9elfvaqq3wmfey6laun0z8v0lg0nf9fdhdncxsp0y5zxkp5qqnsgqqqqqqqqqqqqq05qqrc9qy9qsqq3a4p9tvmy3sf7h2mlfpd5rcdldsyaksf8e0rk09yxtzvhcyzjrsg2janexechmzaqmnz9c7de04et7jkhmvkkjdnzn3txnz2a204ucplr595s";

const INVALID_JSON: &str = "Invalid JSON data in request body: Syntax error.";
const NOT_OBJECT: &str = "Invalid JSON data in request body: expected an object.";
const TOO_LARGE: &str = "Request body too large (limit 65536 bytes).";
const MULTIPART: &str = "multipart bodies are not supported; send JSON or form-encoded";
const NOT_INT: &str = "Num Satoshis must be an integer.";
const NEGATIVE: &str = "Num Satoshis must be no less than 0.";
const TOO_BIG: &str = "Num Satoshis is too big.";

/// Funded balance of the wallet under test.
const BALANCE: u64 = 1_000;
/// The largest amount Satchel accepts, in sats (21M BTC).
const MAX_SATS: u64 = 2_100_000_000_000_000;

// ------------------------------------------------------------------------------------- model

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

#[derive(Debug, Clone)]
enum Msg {
    Exact(String),
    Prefix(String),
    /// Wording left open; only the envelope is checked.
    Any,
}

#[derive(Debug, Clone)]
struct Bad {
    what: String,
    method: Method,
    /// Under `/v1`, or absolute when it starts with `!`.
    path: String,
    body: Body,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    msg: Msg,
}

impl Bad {
    fn new(what: &str, method: Method, path: &str, body: Body, status: u16, msg: Msg) -> Bad {
        Bad {
            what: what.to_owned(),
            method,
            path: path.to_owned(),
            body,
            headers: Vec::new(),
            status,
            msg,
        }
    }

    fn header(mut self, k: &'static str, v: &'static str) -> Bad {
        self.headers.push((k, v));
        self
    }
}

fn exact(m: &str) -> Msg {
    Msg::Exact(m.to_owned())
}

fn prefix(m: &str) -> Msg {
    Msg::Prefix(m.to_owned())
}

/// POST a JSON value; 400 with `msg`.
fn post(what: &str, path: &str, body: Value, msg: Msg) -> Bad {
    Bad::new(what, Method::POST, path, Body::Json(body), 400, msg)
}

/// POST raw bytes as `application/json`.
fn post_raw(what: &str, path: &str, raw: &str, status: u16, msg: Msg) -> Bad {
    Bad::new(
        what,
        Method::POST,
        path,
        Body::Raw("application/json", raw.as_bytes().to_vec()),
        status,
        msg,
    )
}

/// POST a form body.
fn post_form(what: &str, path: &str, form: &str, msg: Msg) -> Bad {
    Bad::new(
        what,
        Method::POST,
        path,
        Body::Raw(
            "application/x-www-form-urlencoded",
            form.as_bytes().to_vec(),
        ),
        400,
        msg,
    )
}

fn get(what: &str, path: &str, status: u16, msg: Msg) -> Bad {
    Bad::new(what, Method::GET, path, Body::None, status, msg)
}

// ------------------------------------------------------------------------------------- cases

struct Ctx<'a> {
    s: &'a TestServer,
    w: &'a WalletKeys,
    w2: &'a WalletKeys,
    /// A wallet of another account: id and admin key.
    foreign_wallet: (String, String),
}

/// Malformed bodies, the same for every POST endpoint.
fn body_cases(path: &str) -> Vec<Bad> {
    let big = format!("{{\"memo\":\"{}\"}}", "a".repeat(70_000));
    vec![
        post_raw(
            "truncated JSON",
            path,
            r#"{"num_satoshis":"#,
            400,
            exact(INVALID_JSON),
        ),
        post_raw(
            "not JSON at all",
            path,
            "num_satoshis=5",
            400,
            exact(INVALID_JSON),
        ),
        post_raw(
            "trailing garbage",
            path,
            r#"{"a":1} x"#,
            400,
            exact(INVALID_JSON),
        ),
        post_raw(
            "JSON array",
            path,
            r#"[{"num_satoshis":5}]"#,
            400,
            exact(NOT_OBJECT),
        ),
        post_raw("JSON number", path, "42", 400, exact(NOT_OBJECT)),
        post_raw("JSON string", path, r#""hello""#, 400, exact(NOT_OBJECT)),
        post_raw("JSON bool", path, "true", 400, exact(NOT_OBJECT)),
        Bad::new(
            "invalid UTF-8 in JSON",
            Method::POST,
            path,
            Body::Raw("application/json", b"{\"memo\":\"\xff\xfe\"}".to_vec()),
            400,
            exact(INVALID_JSON),
        ),
        post_raw("oversized body", path, &big, 413, exact(TOO_LARGE)),
        Bad::new(
            "oversized form body",
            Method::POST,
            path,
            Body::Raw(
                "application/x-www-form-urlencoded",
                format!("memo={}", "a".repeat(70_000)).into_bytes(),
            ),
            413,
            exact(TOO_LARGE),
        ),
        Bad::new(
            "multipart body",
            Method::POST,
            path,
            Body::Raw(
                "multipart/form-data; boundary=xyz",
                b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xyz--\r\n"
                    .to_vec(),
            ),
            415,
            exact(MULTIPART),
        ),
    ]
}

/// The string fields of `base` as a form body, plus `extra`.
fn form_with(base: &Value, extra: &str) -> String {
    let mut parts: Vec<String> = base
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    parts.push(extra.to_owned());
    parts.join("&")
}

/// Bad `num_satoshis` values (type, sign, overflow) for endpoints where it is an amount.
fn amount_cases(path: &str, base: &Value) -> Vec<Bad> {
    let with = |v: Value| {
        let mut b = base.clone();
        b["num_satoshis"] = v;
        b
    };
    let raw_with = |n: &str| {
        let mut b = base.clone();
        b["num_satoshis"] = json!("__N__");
        b.to_string().replace("\"__N__\"", n)
    };
    vec![
        post("amount object", path, with(json!({"a": 1})), exact(NOT_INT)),
        post("amount array", path, with(json!([5])), exact(NOT_INT)),
        post("amount bool", path, with(json!(true)), exact(NOT_INT)),
        post("amount float", path, with(json!(1.5)), exact(NOT_INT)),
        post(
            "amount float string",
            path,
            with(json!("1.5")),
            exact(NOT_INT),
        ),
        post("amount text", path, with(json!("abc")), exact(NOT_INT)),
        post(
            "amount blank string",
            path,
            with(json!("  ")),
            exact(NOT_INT),
        ),
        post("amount hex", path, with(json!("0x10")), exact(NOT_INT)),
        post(
            "amount exponent string",
            path,
            with(json!("1e3")),
            exact(NOT_INT),
        ),
        post("amount -1", path, with(json!(-1)), exact(NEGATIVE)),
        post("amount \"-5\"", path, with(json!("-5")), exact(NEGATIVE)),
        post("amount -1e30", path, with(json!(-1e30)), exact(NEGATIVE)),
        post_raw(
            "amount 2^64",
            path,
            &raw_with("18446744073709551616"),
            400,
            exact(TOO_BIG),
        ),
        post_raw("amount 1e30", path, &raw_with("1e30"), 400, exact(TOO_BIG)),
        post_raw(
            "amount u64::MAX",
            path,
            &raw_with("18446744073709551615"),
            400,
            exact(TOO_BIG),
        ),
        post(
            "amount u64::MAX as string",
            path,
            with(json!("18446744073709551615")),
            exact(TOO_BIG),
        ),
        post(
            "amount 10^30 as string",
            path,
            with(json!("1000000000000000000000000000000")),
            exact(TOO_BIG),
        ),
        post(
            "amount u64::MAX/1000+1 (msat overflows u64)",
            path,
            with(json!(u64::MAX / 1000 + 1)),
            exact(TOO_BIG),
        ),
        post(
            "amount above 21M BTC",
            path,
            with(json!(MAX_SATS + 1)),
            exact(TOO_BIG),
        ),
        post_form(
            "amount form array",
            path,
            &form_with(base, "num_satoshis[]=5"),
            exact(NOT_INT),
        ),
        post_form(
            "amount form text",
            path,
            &form_with(base, "num_satoshis=abc"),
            exact(NOT_INT),
        ),
        post_form(
            "amount form negative",
            path,
            &form_with(base, "num_satoshis=-3"),
            exact(NEGATIVE),
        ),
    ]
}

fn invoice_cases(c: &Ctx) -> Vec<Bad> {
    let p = format!("/wallet/{}/invoice", c.w.waka);
    let p = p.as_str();
    let mut v = body_cases(p);
    v.extend(amount_cases(p, &json!({"memo": "bad"})));
    let hd = "Description Hash must be a 32-byte hash, hex (or base64) encoded.";
    let expiry = "Expiry must be between 1 and 31536000 seconds.";
    v.extend([
        post(
            "description_hash not hex",
            p,
            json!({"num_satoshis": 1, "description_hash": "xyz"}),
            exact(hd),
        ),
        post(
            "description_hash 63 hex chars",
            p,
            json!({"num_satoshis": 1, "description_hash": "a".repeat(63)}),
            exact(hd),
        ),
        post(
            "description_hash 64 non-hex chars",
            p,
            json!({"num_satoshis": 1, "description_hash": "z".repeat(64)}),
            exact(hd),
        ),
        post(
            "description_hash 33 bytes",
            p,
            json!({"num_satoshis": 1, "description_hash": "ab".repeat(33)}),
            exact(hd),
        ),
        post(
            "description_hash object",
            p,
            json!({"num_satoshis": 1, "description_hash": {"a": 1}}),
            exact("Description Hash must be a string."),
        ),
        post(
            "expiry 0",
            p,
            json!({"num_satoshis": 1, "expiry": 0}),
            exact(expiry),
        ),
        post(
            "expiry \"0\"",
            p,
            json!({"num_satoshis": 1, "expiry": "0"}),
            exact(expiry),
        ),
        post(
            "expiry over a year",
            p,
            json!({"num_satoshis": 1, "expiry": 31_536_001}),
            exact(expiry),
        ),
        post(
            "expiry negative",
            p,
            json!({"num_satoshis": 1, "expiry": -60}),
            exact("Expiry must be no less than 0."),
        ),
        post(
            "expiry text",
            p,
            json!({"num_satoshis": 1, "expiry": "soon"}),
            exact("Expiry must be an integer."),
        ),
        post(
            "memo object",
            p,
            json!({"num_satoshis": 1, "memo": {"a": 1}}),
            exact("Memo must be a string."),
        ),
        post(
            "memo too long",
            p,
            json!({"num_satoshis": 1, "memo": "m".repeat(640)}),
            exact("Memo should contain at most 639 characters."),
        ),
        post(
            "passThru not JSON",
            p,
            json!({"num_satoshis": 1, "passThru": "{nope"}),
            exact("passThru data must be valid json"),
        ),
        post(
            "passThru JSON list",
            p,
            json!({"num_satoshis": 1, "passThru": "[1,2]"}),
            exact("passThru data must be valid json"),
        ),
        post(
            "passThru number",
            p,
            json!({"num_satoshis": 1, "passThru": 5}),
            exact("passThru data must be valid json"),
        ),
        post_raw(
            "JSON nested 5000 deep",
            p,
            &format!(
                "{{\"num_satoshis\":1,\"passThru\":{}{}}}",
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            400,
            exact(INVALID_JSON),
        ),
    ]);
    v
}

fn withdraw_cases(c: &Ctx) -> Vec<Bad> {
    let p = format!("/wallet/{}/withdraw", c.w.waka);
    let p = p.as_str();
    let s = c.s;
    let ok = || s.external_invoice(10, "bad input").as_str().to_owned();
    let expired = s
        .scripted
        .external_invoice_at(
            Some(satchel_domain::Msat::from_sats(10).unwrap()),
            "expired",
            1_600_000_000,
            60,
        )
        .as_str()
        .to_owned();
    let blank = "Payment Request cannot be blank.";
    let fee = |v: Value, msg: &str| {
        post(
            &format!("fee_limit_msat {v}"),
            p,
            json!({"payment_request": ok(), "fee_limit_msat": v}),
            exact(msg),
        )
    };
    let mut v = body_cases(p);
    v.extend([
        post("no payment_request", p, json!({}), exact(blank)),
        post(
            "empty payment_request",
            p,
            json!({"payment_request": ""}),
            exact(blank),
        ),
        post(
            "blank payment_request",
            p,
            json!({"payment_request": "  "}),
            exact(blank),
        ),
        post(
            "null payment_request",
            p,
            json!({"payment_request": null}),
            exact(blank),
        ),
        post(
            "payment_request object",
            p,
            json!({"payment_request": {"a": 1}}),
            exact("Payment Request must be a string."),
        ),
        post(
            "garbage payment_request",
            p,
            json!({"payment_request": "lnbc1garbage"}),
            prefix("invalid payment request"),
        ),
        post(
            "payment_request not an invoice",
            p,
            json!({"payment_request": "hello world"}),
            prefix("invalid payment request"),
        ),
        post(
            "payment_request number",
            p,
            json!({"payment_request": 12345}),
            prefix("invalid payment request"),
        ),
        post(
            "mainnet invoice",
            p,
            json!({"payment_request": MAINNET_DOC_INVOICE}),
            exact("invoice is for bitcoin, this node runs on regtest"),
        ),
        post(
            "expired invoice",
            p,
            json!({"payment_request": expired}),
            exact("invoice expired"),
        ),
        post(
            "zero-amount invoice",
            p,
            json!({"payment_request": s.external_invoice(0, "any amount").as_str()}),
            exact("Cannot process any amount invoices"),
        ),
        post(
            "invoice over the balance",
            p,
            json!({"payment_request": s.external_invoice(BALANCE + 1, "too much").as_str()}),
            exact(&format!("Invoice too large :) Max balance: {BALANCE}")),
        ),
        post(
            "invoice far over the balance",
            p,
            json!({"payment_request": s.external_invoice(1_000_000_000, "way too much").as_str()}),
            exact(&format!("Invoice too large :) Max balance: {BALANCE}")),
        ),
        fee(json!(-1), "Fee Limit Msat must be no less than 0."),
        fee(json!("-1000"), "Fee Limit Msat must be no less than 0."),
        fee(json!("abc"), "Fee Limit Msat must be an integer."),
        fee(json!(1.5), "Fee Limit Msat must be an integer."),
        fee(json!({"a": 1}), "Fee Limit Msat must be an integer."),
        fee(json!("9223372036854775808"), "Fee Limit Msat is too big."),
        fee(json!(i64::MAX), "Fee Limit Msat is too big."),
        post(
            "passThru not JSON",
            p,
            json!({"payment_request": ok(), "passThru": "nope"}),
            exact("passThru data must be valid json"),
        ),
    ]);
    v
}

/// Fee limits that parse but make amount + fee limit exceed 21M BTC: the balance check must
/// refuse them (400), not overflow into a 500.
fn overflowing_fee_limit_cases(c: &Ctx) -> Vec<Bad> {
    let carol = c.s.scripted.external_pubkey().to_hex();
    let max_msat = MAX_SATS * 1000;
    let too_large = format!("Invoice too large :) Max balance: {BALANCE}");
    vec![
        post(
            "withdraw with fee_limit_msat = 21M BTC",
            &format!("/wallet/{}/withdraw", c.w.waka),
            json!({"payment_request": c.s.external_invoice(10, "fee").as_str(), "fee_limit_msat": max_msat}),
            exact(&too_large),
        ),
        post(
            "keysend with fee_limit_msat = 21M BTC",
            &format!("/wallet/{}/keysend", c.w.waka),
            json!({"dest_pubkey": carol, "num_satoshis": 10, "fee_limit_msat": max_msat}),
            exact(&too_large),
        ),
        post(
            "keysend of 21M BTC (default fee limit on top)",
            &format!("/wallet/{}/keysend", c.w.waka),
            json!({"dest_pubkey": carol, "num_satoshis": MAX_SATS}),
            exact(&too_large),
        ),
    ]
}

fn keysend_cases(c: &Ctx) -> Vec<Bad> {
    let p = format!("/wallet/{}/keysend", c.w.waka);
    let p = p.as_str();
    let carol = c.s.scripted.external_pubkey().to_hex();
    let ks = |extra: Value| {
        let mut b = json!({"dest_pubkey": carol, "num_satoshis": 10});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let not_hex = "Dest Pubkey must be a hex-encoded node public key.";
    let cr_msg = "custom_records must be an object of TLV type to string value";
    let mut v = body_cases(p);
    v.extend(amount_cases(p, &json!({"dest_pubkey": carol})));
    v.extend([
        post(
            "no dest_pubkey",
            p,
            json!({"num_satoshis": 10}),
            exact("Dest Pubkey cannot be blank."),
        ),
        post(
            "dest_pubkey too short",
            p,
            ks(json!({"dest_pubkey": &carol[..64]})),
            exact("Dest Pubkey should contain 66 characters."),
        ),
        post(
            "dest_pubkey too long",
            p,
            ks(json!({"dest_pubkey": format!("{carol}00")})),
            exact("Dest Pubkey should contain 66 characters."),
        ),
        post(
            "dest_pubkey 66 non-hex chars",
            p,
            ks(json!({"dest_pubkey": "zz".repeat(33)})),
            exact(not_hex),
        ),
        post(
            "dest_pubkey 66 hex chars, not a point",
            p,
            ks(json!({"dest_pubkey": format!("05{}", "11".repeat(32))})),
            exact(not_hex),
        ),
        post(
            "dest_pubkey 66 hex chars, x = 0 is on no point",
            p,
            ks(json!({"dest_pubkey": format!("02{}", "00".repeat(32))})),
            exact(not_hex),
        ),
        post(
            "dest_pubkey 66 hex chars, x = cdcd…cd is on no point",
            p,
            ks(json!({"dest_pubkey": format!("03{}", "cd".repeat(32))})),
            exact(not_hex),
        ),
        post(
            "dest_pubkey 66 hex chars, x beyond the field prime",
            p,
            ks(json!({"dest_pubkey": format!("02{}", "ff".repeat(32))})),
            exact(not_hex),
        ),
        post(
            "dest_pubkey 66 multibyte chars",
            p,
            ks(json!({"dest_pubkey": "é".repeat(33)})),
            prefix("Dest Pubkey"),
        ),
        post(
            "no amount",
            p,
            json!({"dest_pubkey": carol}),
            exact("Num Satoshis cannot be blank."),
        ),
        post(
            "amount 0",
            p,
            ks(json!({"num_satoshis": 0})),
            exact("Num Satoshis must be greater than 0."),
        ),
        post(
            "amount over the balance",
            p,
            ks(json!({"num_satoshis": BALANCE + 1})),
            exact(&format!("Invoice too large :) Max balance: {BALANCE}")),
        ),
        post(
            "fee_limit_msat negative",
            p,
            ks(json!({"fee_limit_msat": -1})),
            exact("Fee Limit Msat must be no less than 0."),
        ),
        post(
            "fee_limit_msat text",
            p,
            ks(json!({"fee_limit_msat": "lots"})),
            exact("Fee Limit Msat must be an integer."),
        ),
        post(
            "custom_records key below 65536",
            p,
            ks(json!({"custom_records": {"100": "x"}})),
            prefix("custom_records key 100 must be an integer >= 65536"),
        ),
        post(
            "custom_records key 65535",
            p,
            ks(json!({"custom_records": {"65535": "x"}})),
            prefix("custom_records key 65535 must be an integer >= 65536"),
        ),
        post(
            "custom_records key 5482373484 (keysend preimage)",
            p,
            ks(json!({"custom_records": {"5482373484": "x"}})),
            prefix("custom_records key 5482373484 must be an integer >= 65536"),
        ),
        post(
            "custom_records non-integer key",
            p,
            ks(json!({"custom_records": {"abc": "x"}})),
            exact("custom_records key abc must be an integer >= 65536."),
        ),
        post(
            "custom_records negative key",
            p,
            ks(json!({"custom_records": {"-70000": "x"}})),
            prefix("custom_records key -70000 must be an integer >= 65536"),
        ),
        post(
            "custom_records key beyond u64",
            p,
            ks(json!({"custom_records": {"99999999999999999999999": "x"}})),
            prefix("custom_records key 99999999999999999999999 must be an integer >= 65536"),
        ),
        // TLV types: canonical decimal only, or `" 65537 "`, `"+65537"` and `"065537"` would all
        // name record 65537.
        post(
            "custom_records key with spaces",
            p,
            ks(json!({"custom_records": {" 65537 ": "x"}})),
            exact("custom_records key  65537  must be an integer >= 65536."),
        ),
        post(
            "custom_records key with a trailing newline",
            p,
            ks(json!({"custom_records": {"65537\n": "x"}})),
            exact("custom_records key 65537\n must be an integer >= 65536."),
        ),
        post(
            "custom_records key with a plus sign",
            p,
            ks(json!({"custom_records": {"+65537": "x"}})),
            exact("custom_records key +65537 must be an integer >= 65536."),
        ),
        post(
            "custom_records key with a leading zero",
            p,
            ks(json!({"custom_records": {"065537": "x"}})),
            exact("custom_records key 065537 must be an integer >= 65536."),
        ),
        post(
            "custom_records key 065537 next to 65537",
            p,
            ks(json!({"custom_records": {"65537": "a", "065537": "b"}})),
            exact("custom_records key 065537 must be an integer >= 65536."),
        ),
        post(
            "custom_records key in hex",
            p,
            ks(json!({"custom_records": {"0x10001": "x"}})),
            exact("custom_records key 0x10001 must be an integer >= 65536."),
        ),
        post(
            "custom_records key with a fraction",
            p,
            ks(json!({"custom_records": {"65537.0": "x"}})),
            exact("custom_records key 65537.0 must be an integer >= 65536."),
        ),
        post(
            "custom_records key in exponent form",
            p,
            ks(json!({"custom_records": {"1e6": "x"}})),
            exact("custom_records key 1e6 must be an integer >= 65536."),
        ),
        post(
            "custom_records empty key",
            p,
            ks(json!({"custom_records": {"": "x"}})),
            exact("custom_records key  must be an integer >= 65536."),
        ),
        post_form(
            "custom_records form key with a leading zero",
            p,
            &format!("dest_pubkey={carol}&num_satoshis=10&custom_records[065537]=x"),
            exact("custom_records key 065537 must be an integer >= 65536."),
        ),
        post_form(
            "custom_records form key with a plus sign",
            p,
            &format!("dest_pubkey={carol}&num_satoshis=10&custom_records[%2B65537]=x"),
            exact("custom_records key +65537 must be an integer >= 65536."),
        ),
        post_form(
            "custom_records form key with spaces",
            p,
            &format!("dest_pubkey={carol}&num_satoshis=10&custom_records[%2065537+]=x"),
            exact("custom_records key  65537  must be an integer >= 65536."),
        ),
        post(
            "custom_records number value",
            p,
            ks(json!({"custom_records": {"696969": 5}})),
            exact("custom_records value of 696969 must be a string."),
        ),
        post(
            "custom_records object value",
            p,
            ks(json!({"custom_records": {"696969": {"a": 1}}})),
            exact("custom_records value of 696969 must be a string."),
        ),
        post(
            "custom_records null value",
            p,
            ks(json!({"custom_records": {"696969": null}})),
            exact("custom_records value of 696969 must be a string."),
        ),
        post(
            "custom_records not JSON",
            p,
            ks(json!({"custom_records": "nope"})),
            exact(cr_msg),
        ),
        post(
            "custom_records list",
            p,
            ks(json!({"custom_records": [1, 2]})),
            exact(cr_msg),
        ),
        post_form(
            "custom_records form key below 65536",
            p,
            &format!("dest_pubkey={carol}&num_satoshis=10&custom_records[100]=x"),
            prefix("custom_records key 100 must be an integer >= 65536"),
        ),
        post(
            "passThru not JSON",
            p,
            ks(json!({"passThru": "nope"})),
            exact("passThru data must be valid json"),
        ),
        // Async: validation still answers synchronously, and no job runs.
        post(
            "async keysend, short pubkey",
            p,
            ks(json!({"dest_pubkey": "02ab"})),
            exact("Dest Pubkey should contain 66 characters."),
        )
        .header("X-LNPAY-ASYNC", "1"),
        post(
            "async keysend, pubkey not on the curve",
            p,
            ks(json!({"dest_pubkey": format!("02{}", "00".repeat(32))})),
            exact(not_hex),
        )
        .header("X-LNPAY-ASYNC", "1"),
        post(
            "async keysend, TLV key with a leading zero",
            p,
            ks(json!({"custom_records": {"065537": "x"}})),
            exact("custom_records key 065537 must be an integer >= 65536."),
        )
        .header("X-LNPAY-ASYNC", "1"),
        post(
            "async keysend, bad custom record",
            p,
            ks(json!({"custom_records": {"1": "x"}})),
            prefix("custom_records key 1 must be an integer >= 65536"),
        )
        .header("X-LNPAY-ASYNC", "1"),
    ]);
    v
}

fn transfer_cases(c: &Ctx) -> Vec<Bad> {
    let p = format!("/wallet/{}/transfer", c.w.waka);
    let p = p.as_str();
    let to = |dest: &str, n: Value| json!({"dest_wallet_id": dest, "num_satoshis": n});
    let same = "Source and destination wallets cannot be the same!";
    let invalid = "Invalid dest wallet id";
    let mut v = body_cases(p);
    v.extend(amount_cases(p, &json!({"dest_wallet_id": c.w2.id})));
    v.extend([
        post("to itself by id", p, to(&c.w.id, json!(5)), exact(same)),
        post("to itself by key", p, to(&c.w.wakr, json!(5)), exact(same)),
        post(
            "to an unknown wallet",
            p,
            to("wal_doesnotexist00", json!(5)),
            exact(invalid),
        ),
        post("to garbage", p, to("!!", json!(5)), exact(invalid)),
        post(
            "to a key-looking garbage",
            p,
            to("waka_nope", json!(5)),
            exact(invalid),
        ),
        post(
            "to another account's wallet",
            p,
            to(&c.foreign_wallet.0, json!(5)),
            exact(invalid),
        ),
        post(
            "to another account's wallet key",
            p,
            to(&c.foreign_wallet.1, json!(5)),
            exact(invalid),
        ),
        post(
            "no destination",
            p,
            json!({"num_satoshis": 5}),
            exact("Dest Wallet Id cannot be blank."),
        ),
        post(
            "destination object",
            p,
            json!({"dest_wallet_id": {"id": c.w2.id}, "num_satoshis": 5}),
            exact("Dest Wallet Id must be a string."),
        ),
        post(
            "amount 0",
            p,
            to(&c.w2.id, json!(0)),
            exact("Num Satoshis must be greater than 0."),
        ),
        post(
            "no amount",
            p,
            json!({"dest_wallet_id": c.w2.id}),
            exact("Num Satoshis cannot be blank."),
        ),
        post(
            "more than the balance",
            p,
            to(&c.w2.id, json!(BALANCE + 1)),
            exact("Insufficient balance in source wallet"),
        ),
        post(
            "21M BTC",
            p,
            to(&c.w2.id, json!(MAX_SATS)),
            exact("Insufficient balance in source wallet"),
        ),
        post(
            "lnPayParams not JSON",
            p,
            json!({"dest_wallet_id": c.w2.id, "num_satoshis": 5, "lnPayParams": "nope"}),
            exact("Invalid lnPayParams json specified"),
        ),
        post(
            "passThru not JSON",
            p,
            json!({"dest_wallet_id": c.w2.id, "num_satoshis": 5, "passThru": "nope"}),
            exact("Invalid passThru json specified"),
        ),
        post(
            "memo object",
            p,
            json!({"dest_wallet_id": c.w2.id, "num_satoshis": 5, "memo": ["x"]}),
            exact("Memo must be a string."),
        ),
        // Capped like invoice memos (a transfer memo labels two stored WTXs).
        post(
            "memo of 640 characters",
            p,
            json!({"dest_wallet_id": c.w2.id, "num_satoshis": 5, "memo": "m".repeat(640)}),
            exact("Memo should contain at most 639 characters."),
        ),
        post(
            "memo of 60 KB",
            p,
            json!({"dest_wallet_id": c.w2.id, "num_satoshis": 5, "memo": "m".repeat(60_000)}),
            exact("Memo should contain at most 639 characters."),
        ),
        post_form(
            "form memo of 640 characters",
            p,
            &format!(
                "dest_wallet_id={}&num_satoshis=5&memo={}",
                c.w2.id,
                "m".repeat(640)
            ),
            exact("Memo should contain at most 639 characters."),
        ),
    ]);
    v
}

fn create_wallet_cases() -> Vec<Bad> {
    let p = "/wallet";
    let blank = "Internal Label cannot be blank.";
    let long = "Internal Label should contain at most 255 characters.";
    let mut v = body_cases(p);
    v.extend([
        post("no user_label", p, json!({}), exact(blank)),
        post(
            "empty user_label",
            p,
            json!({"user_label": ""}),
            exact(blank),
        ),
        post(
            "blank user_label",
            p,
            json!({"user_label": " \t "}),
            exact(blank),
        ),
        post(
            "null user_label",
            p,
            json!({"user_label": null}),
            exact(blank),
        ),
        post(
            "misspelt user_label",
            p,
            json!({"label": "x"}),
            exact(blank),
        ),
        Bad::new("empty body", Method::POST, p, Body::None, 400, exact(blank)),
        post_form("empty form label", p, "user_label=", exact(blank)),
        post(
            "256-char user_label",
            p,
            json!({"user_label": "x".repeat(256)}),
            exact(long),
        ),
        post(
            "256 multibyte chars",
            p,
            json!({"user_label": "é".repeat(256)}),
            exact(long),
        ),
        post(
            "user_label object",
            p,
            json!({"user_label": {"a": 1}}),
            exact("Internal Label must be a string."),
        ),
        post(
            "user_label list",
            p,
            json!({"user_label": ["a"]}),
            exact("Internal Label must be a string."),
        ),
    ]);
    v
}

fn node_cases(c: &Ctx) -> Vec<Bad> {
    let d = "/node/default/payments/decodeinvoice";
    let q = "/node/default/payments/queryroutes";
    let carol = c.s.scripted.external_pubkey().to_hex();
    let pk = "pub_key must be a 66-character hex node public key.";
    vec![
        get(
            "decodeinvoice without payment_request",
            d,
            400,
            exact("Missing required parameters: payment_request"),
        ),
        get(
            "decodeinvoice with empty payment_request",
            &format!("{d}?payment_request="),
            400,
            exact("Missing required parameters: payment_request"),
        ),
        get(
            "decodeinvoice garbage",
            &format!("{d}?payment_request=lnbc1garbage"),
            400,
            prefix("Unable to decode invoice: "),
        ),
        get(
            "decodeinvoice on an unknown node",
            &format!(
                "/node/lnod_other/payments/decodeinvoice?payment_request={MAINNET_DOC_INVOICE}"
            ),
            400,
            exact("Node not found: lnod_other"),
        ),
        get(
            "queryroutes without parameters",
            q,
            400,
            exact("Missing required parameters: pub_key, amt"),
        ),
        get(
            "queryroutes without amt",
            &format!("{q}?pub_key={carol}"),
            400,
            exact("Missing required parameters: amt"),
        ),
        get(
            "queryroutes without pub_key",
            &format!("{q}?amt=10"),
            400,
            exact("Missing required parameters: pub_key"),
        ),
        get(
            "queryroutes amt text",
            &format!("{q}?pub_key={carol}&amt=abc"),
            400,
            exact("Amt must be an integer."),
        ),
        get(
            "queryroutes amt negative",
            &format!("{q}?pub_key={carol}&amt=-5"),
            400,
            prefix("Amt must be"),
        ),
        get(
            "queryroutes amt overflowing msat",
            &format!("{q}?pub_key={carol}&amt=18446744073709551615"),
            400,
            exact("Amt is too big."),
        ),
        get(
            "queryroutes amt beyond u64",
            &format!("{q}?pub_key={carol}&amt=99999999999999999999999"),
            400,
            prefix("Amt "),
        ),
        get(
            "queryroutes pub_key garbage",
            &format!("{q}?pub_key=zz&amt=10"),
            400,
            exact(pk),
        ),
        get(
            "queryroutes pub_key too short",
            &format!("{q}?pub_key={}&amt=10", &carol[..64]),
            400,
            exact(pk),
        ),
        get(
            "queryroutes pub_key 66 hex chars, x = 0 is on no point",
            &format!("{q}?pub_key=02{}&amt=10", "00".repeat(32)),
            400,
            exact(pk),
        ),
        get(
            "queryroutes pub_key 66 hex chars, x = cdcd…cd is on no point",
            &format!("{q}?pub_key=03{}&amt=10", "cd".repeat(32)),
            400,
            exact(pk),
        ),
        get(
            "queryroutes pub_key prefix 04",
            &format!("{q}?pub_key=04{}&amt=10", &carol[2..]),
            400,
            exact(pk),
        ),
        get(
            "queryroutes to a node nobody knows",
            &format!(
                "{q}?pub_key=02{}&amt=10",
                "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            ),
            400,
            exact("unable to find a path to destination"),
        ),
    ]
}

fn routing_cases(c: &Ctx) -> Vec<Bad> {
    let nf = || exact("Page not found.");
    let na = || exact("Method Not Allowed.");
    let k = &c.w.waka;
    let req = |what: &str, m: Method, path: &str, status: u16, msg: Msg| {
        Bad::new(what, m, path, Body::None, status, msg)
    };
    vec![
        get("unknown v1 route", "/nope", 404, nf()),
        get(
            "unknown wallet sub-route",
            &format!("/wallet/{k}/nope"),
            404,
            nf(),
        ),
        get(
            "too deep",
            &format!("/wallet/{k}/transactions/extra"),
            404,
            nf(),
        ),
        get("trailing slash", "/wallets/", 404, nf()),
        get("v1 root", "", 404, nf()),
        get("unknown version", "!/v2/wallets", 404, nf()),
        get("site root", "!/", 404, nf()),
        req("POST unknown route", Method::POST, "/nope", 404, nf()),
        req(
            "DELETE wallet",
            Method::DELETE,
            &format!("/wallet/{k}"),
            405,
            na(),
        ),
        req(
            "PUT wallet",
            Method::PUT,
            &format!("/wallet/{k}"),
            405,
            na(),
        ),
        req(
            "GET invoice",
            Method::GET,
            &format!("/wallet/{k}/invoice"),
            405,
            na(),
        ),
        req(
            "GET withdraw",
            Method::GET,
            &format!("/wallet/{k}/withdraw"),
            405,
            na(),
        ),
        req(
            "GET keysend",
            Method::GET,
            &format!("/wallet/{k}/keysend"),
            405,
            na(),
        ),
        req(
            "GET transfer",
            Method::GET,
            &format!("/wallet/{k}/transfer"),
            405,
            na(),
        ),
        req("GET create-wallet", Method::GET, "/wallet", 405, na()),
        req("POST wallets", Method::POST, "/wallets", 405, na()),
        req(
            "POST transactions",
            Method::POST,
            &format!("/wallet/{k}/transactions"),
            405,
            na(),
        ),
        req(
            "DELETE wallet-transactions",
            Method::DELETE,
            "/wallet-transactions",
            405,
            na(),
        ),
        req("PATCH lntx", Method::PATCH, "/lntx/lntx_x", 405, na()),
        req("POST job", Method::POST, "/job/x", 405, na()),
        req(
            "POST decodeinvoice",
            Method::POST,
            "/node/default/payments/decodeinvoice",
            405,
            na(),
        ),
    ]
}

fn all_cases(c: &Ctx) -> Vec<Bad> {
    let mut v = Vec::new();
    v.extend(invoice_cases(c));
    v.extend(withdraw_cases(c));
    v.extend(keysend_cases(c));
    v.extend(transfer_cases(c));
    v.extend(create_wallet_cases());
    v.extend(node_cases(c));
    v.extend(routing_cases(c));
    v
}

// ------------------------------------------------------------------------------------ runner

/// What a bad request must not change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    balance_msat: i64,
    balance2_msat: i64,
    wallet_txs: String,
    account_txs: String,
    wallets: String,
    ledger_txns: u64,
    postings: u64,
}

fn total(r: &Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.headers["x-pagination-total-count"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn snapshot(c: &Ctx<'_>) -> Snapshot {
    let s = c.s;
    let audit = s.running().store.audit().await.unwrap();
    Snapshot {
        balance_msat: s.balance_msat(c.w).await,
        balance2_msat: s.balance_msat(c.w2).await,
        wallet_txs: total(
            &s.get(&s.sak, &format!("/wallet/{}/transactions", c.w.id))
                .await,
        ),
        account_txs: total(&s.get(&s.sak, "/wallet-transactions").await),
        wallets: total(&s.get(&s.sak, "/wallets").await),
        ledger_txns: audit.transactions,
        postings: audit.postings,
    }
}

fn short(t: &str) -> String {
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

async fn send(c: &Ctx<'_>, b: &Bad) -> Resp {
    let s = c.s;
    let url = match b.path.strip_prefix('!') {
        Some(abs) => format!("{}{abs}", s.base),
        None => s.v1(&b.path),
    };
    let mut rb = s
        .http
        .request(b.method.clone(), url)
        .header("X-Api-Key", &s.sak);
    for (k, v) in &b.headers {
        rb = rb.header(*k, *v);
    }
    rb = match &b.body {
        Body::None => rb,
        Body::Json(v) => rb.json(v),
        Body::Raw(ct, bytes) => rb.header("Content-Type", *ct).body(bytes.clone()),
    };
    s.send(rb).await
}

/// Checks the LNPay envelope exactly: keys in order, reason phrase, code 0, status echoed, and
/// Satchel's `request_id` last, equal to the `X-Request-Id` header.
fn envelope_problem(b: &Bad, r: &Resp) -> Option<String> {
    let status = r.status.as_u16();
    // `status: 0` = any 4xx.
    if status != b.status && !(b.status == 0 && r.status.is_client_error()) {
        return Some(format!(
            "expected {} got {} {}",
            b.status,
            r.status,
            short(&r.text)
        ));
    }
    let Some(obj) = r.json.as_object() else {
        return Some(format!("not a JSON object: {}", short(&r.text)));
    };
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    if keys != ["name", "message", "code", "status", "request_id"] {
        return Some(format!("envelope keys {keys:?}: {}", short(&r.text)));
    }
    let header_id = r.headers.get("x-request-id").map(|h| h.to_str().unwrap());
    if obj["request_id"].as_str() != header_id {
        return Some(format!(
            "request_id {} but header {header_id:?}",
            obj["request_id"]
        ));
    }
    if obj["name"] != r.status.canonical_reason().unwrap()
        || obj["code"] != 0
        || obj["status"] != status
    {
        return Some(format!("bad envelope {}", short(&r.text)));
    }
    let ct = r
        .headers
        .get("content-type")
        .map(|h| h.to_str().unwrap())
        .unwrap_or_default();
    if ct != "application/json; charset=UTF-8" {
        return Some(format!("content-type {ct:?}"));
    }
    let msg = obj["message"].as_str().unwrap_or_default();
    let ok = match &b.msg {
        Msg::Exact(m) => msg == m,
        Msg::Prefix(p) => msg.starts_with(p.as_str()),
        Msg::Any => !msg.is_empty(),
    };
    (!ok).then(|| format!("expected message {:?}, got {msg:?}", b.msg))
}

async fn run(c: &Ctx<'_>, cases: &[Bad]) {
    let mut failures = Vec::new();
    for b in cases {
        let before = snapshot(c).await;
        let r = send(c, b).await;
        let after = snapshot(c).await;
        let label = format!("[{}] {} {}", b.what, b.method, short(&b.path));
        if let Some(p) = envelope_problem(b, &r) {
            failures.push(format!("{label}: {p}"));
        }
        if before != after {
            failures.push(format!("{label}: wrote something: {before:?} -> {after:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A funded wallet, a second one and a wallet of another account.
async fn setup(s: &TestServer) -> (WalletKeys, WalletKeys, (String, String)) {
    let w = s.create_wallet("bad input").await;
    let w2 = s.create_wallet("bad input 2").await;
    s.fund(&w, BALANCE).await;
    let b = satchel_service::wallets::create_account(&s.running().store, "B")
        .await
        .unwrap();
    let r = s
        .post(b.secret_key.expose(), "/wallet", json!({"user_label": "B"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let foreign = (
        r.json["id"].as_str().unwrap().to_owned(),
        r.json["access_keys"]["Wallet Admin"][0]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    (w, w2, foreign)
}

// ------------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_inputs_get_4xx_envelopes_and_write_nothing() {
    on_each_db(|s| async move {
        let (w, w2, foreign_wallet) = setup(&s).await;
        let c = Ctx {
            s: &s,
            w: &w,
            w2: &w2,
            foreign_wallet,
        };
        let cases = all_cases(&c);
        eprintln!("{} bad-input cases", cases.len());
        run(&c, &cases).await;
        // The wallet still works after all that.
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/transfer", w.waka),
                json!({"dest_wallet_id": w2.id, "num_satoshis": 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        s
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amounts_that_overflow_with_the_fee_limit_are_refused() {
    on_each_db(|s| async move {
        let (w, w2, foreign_wallet) = setup(&s).await;
        let c = Ctx {
            s: &s,
            w: &w,
            w2: &w2,
            foreign_wallet,
        };
        run(&c, &overflowing_fee_limit_cases(&c)).await;
        // Async: the request is accepted (the balance is checked in the job, §7), and the job
        // must end as failed with the balance message, not stay queued forever.
        let before = snapshot(&c).await;
        let r = s
            .post_with(
                &s.sak,
                &format!("/wallet/{}/keysend", w.waka),
                json!({"dest_pubkey": s.scripted.external_pubkey().to_hex(), "num_satoshis": MAX_SATS}),
                &[("X-LNPAY-ASYNC", "1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let mut job = Value::Null;
        for _ in 0..100 {
            job = s.get(&s.sak, &format!("/job/{id}")).await.json;
            if job["status"] == "failed" || job["status"] == "succeeded" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["error"], format!("Invoice too large :) Max balance: {BALANCE}"));
        assert_eq!(snapshot(&c).await, before);
        s
    })
    .await;
}

/// Pagination garbage is clamped, never refused (Yii `Pagination::setPageSize(validate=true)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pagination_garbage_still_answers_200() {
    on_each_db(|s| async move {
        let (w, w2, foreign_wallet) = setup(&s).await;
        let c = Ctx {
            s: &s,
            w: &w,
            w2: &w2,
            foreign_wallet,
        };
        let queries = [
            "page=abc",
            "per-page=-5",
            "page=-1",
            "page=0",
            "per-page=0",
            "per-page=abc",
            "per-page=100000",
            "page=99999999999999999999999",
            "page=9223372036854775807&per-page=500",
            "per-page=99999999999999999999999",
            "page-size=abc",
            "page-size=-1",
            "page=1.5&per-page=2.5",
            "page[]=1&per-page[x]=2",
            "sort=nonsense",
            "sort=-created_at;DROP TABLE wallets",
            "fields=nonexistent",
            "fields=",
            "expand=everything",
            "page=%00&per-page=%ff",
        ];
        let mut failures = Vec::new();
        for base in [
            format!("/wallet/{}/transactions", w.waka),
            "/wallets".to_owned(),
            "/wallet-transactions".to_owned(),
            format!("/wallet-transactions?wallet_id={}", w.id),
        ] {
            for q in queries {
                let sep = if base.contains('?') { '&' } else { '?' };
                let path = format!("{base}{sep}{q}");
                let before = snapshot(&c).await;
                let r = s.get(&s.sak, &path).await;
                let after = snapshot(&c).await;
                if r.status != StatusCode::OK || !r.json.is_array() {
                    failures.push(format!("{path}: {} {}", r.status, short(&r.text)));
                    continue;
                }
                for h in [
                    "x-pagination-total-count",
                    "x-pagination-page-count",
                    "x-pagination-current-page",
                    "x-pagination-per-page",
                ] {
                    let ok = r
                        .headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some();
                    if !ok {
                        failures.push(format!("{path}: header {h} = {:?}", r.headers.get(h)));
                    }
                }
                let per_page: u64 = r.headers["x-pagination-per-page"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                if per_page == 0 || r.json.as_array().unwrap().len() as u64 > per_page {
                    failures.push(format!(
                        "{path}: per-page {per_page}, {} rows",
                        r.json.as_array().unwrap().len()
                    ));
                }
                if before != after {
                    failures.push(format!("{path}: wrote something"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        s
    })
    .await;
}

/// LNPay checks the balance of an async keysend in the job, not in the request (§7): the request
/// answers 200 with a job id, the job fails with the balance message and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_keysend_over_the_balance_fails_in_the_job() {
    on_each_db(|s| async move {
        let (w, w2, foreign_wallet) = setup(&s).await;
        let c = Ctx {
            s: &s,
            w: &w,
            w2: &w2,
            foreign_wallet,
        };
        let before = snapshot(&c).await;
        let r = s
            .post_with(
                &s.sak,
                &format!("/wallet/{}/keysend", w.waka),
                json!({"dest_pubkey": s.scripted.external_pubkey().to_hex(), "num_satoshis": 5_000}),
                &[("X-LNPAY-ASYNC", "1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let mut job = Value::Null;
        for _ in 0..200 {
            job = s.get(&s.sak, &format!("/job/{id}")).await.json;
            if job["status"] != "queued" && job["status"] != "running" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(
            job["error"],
            format!("Invoice too large :) Max balance: {BALANCE}"),
            "{job}"
        );
        assert_eq!(snapshot(&c).await, before);
        s
    })
    .await;
}

/// A request refused before its body was read (413 for an oversized body, 401 for a bad key)
/// must not leave a keep-alive connection that the server then drops: the next request on the
/// same client must work. Today the server answers without `Connection: close` and closes the
/// socket, so a pooling client (reqwest, httpx in LNbits, node keep-alive agents) gets a
/// transport error on its *next* call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn early_rejection_keeps_the_connection_usable() {
    on_each_db(|s| async move {
        let w = s.create_wallet("conn").await;
        let client = reqwest::Client::new();
        let oversized = format!("{{\"memo\":\"{}\"}}", "a".repeat(70_000));
        let big_but_allowed = format!("{{\"memo\":\"{}\"}}", "a".repeat(60_000));
        let mut errors = Vec::new();
        for (key, body, status) in [
            (s.sak.as_str(), &oversized, StatusCode::PAYLOAD_TOO_LARGE),
            ("sak_unknown", &big_but_allowed, StatusCode::UNAUTHORIZED),
        ] {
            for i in 0..30 {
                let r = client
                    .post(s.v1(&format!("/wallet/{}/invoice", w.waka)))
                    .header("X-Api-Key", key)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == status => {}
                    Ok(r) => errors.push(format!("{status} round {i}: got {}", r.status())),
                    Err(e) => errors.push(format!("{status} round {i}: {e:?}")),
                }
                let r = client
                    .get(s.v1(&format!("/wallet/{}", w.id)))
                    .header("X-Api-Key", &s.sak)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::OK => {}
                    Ok(r) => errors.push(format!("after {status} round {i}: got {}", r.status())),
                    Err(e) => errors.push(format!("after {status} round {i}: {e:?}")),
                }
            }
        }
        assert!(
            errors.is_empty(),
            "{} failures:\n{}",
            errors.len(),
            errors.join("\n")
        );
        s
    })
    .await;
}

/// Invoice amounts that parse (at most 21M BTC) but that BOLT11 cannot carry (amount in pico-BTC
/// overflows u64 above ~1.8446744e15 sats): a 400, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoice_amounts_bolt11_cannot_carry_are_refused() {
    on_each_db(|s| async move {
        let (w, w2, foreign_wallet) = setup(&s).await;
        let c = Ctx {
            s: &s,
            w: &w,
            w2: &w2,
            foreign_wallet,
        };
        let p = format!("/wallet/{}/invoice", w.waka);
        let cases = [
            post(
                "21M BTC invoice",
                &p,
                json!({"num_satoshis": MAX_SATS}),
                Msg::Any,
            ),
            post(
                "invoice just above what BOLT11 encodes",
                &p,
                json!({"num_satoshis": 1_844_674_407_370_956u64}),
                Msg::Any,
            ),
        ];
        run(&c, &cases).await;
        s
    })
    .await;
}

/// Path segments that are not UTF-8 once percent-decoded: LNPay's routes only match `\w+`, so
/// these are a 4xx in the JSON envelope (axum's plain-text rejection is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_path_segments_get_the_envelope() {
    on_each_db(|s| async move {
        let (w, w2, foreign_wallet) = setup(&s).await;
        let c = Ctx {
            s: &s,
            w: &w,
            w2: &w2,
            foreign_wallet,
        };
        let cases = [
            get("wallet key %FF", "/wallet/%FF", 0, Msg::Any),
            get(
                "wallet key %FF, transactions",
                "/wallet/%FF/transactions",
                0,
                Msg::Any,
            ),
            post(
                "wallet key %FF, invoice",
                "/wallet/%FF/invoice",
                json!({"num_satoshis": 1}),
                Msg::Any,
            ),
            get("lntx id %FF", "/lntx/%FF", 0, Msg::Any),
            get("job id %C3%28", "/job/%C3%28", 0, Msg::Any),
            get(
                "node id %FF",
                "/node/%FF/payments/decodeinvoice?payment_request=x",
                0,
                Msg::Any,
            ),
        ];
        let cases: Vec<Bad> = cases
            .into_iter()
            .map(|mut b| {
                b.status = 0;
                b
            })
            .collect();
        run(&c, &cases).await;
        s
    })
    .await;
}

/// NUL characters in text fields: whatever Satchel decides (store or refuse), never a 500, and
/// the same on both databases. Postgres `TEXT` cannot hold U+0000, SQLite can.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_in_text_fields_is_never_a_500() {
    on_each_db(|s| async move {
        let (w, w2, foreign_wallet) = setup(&s).await;
        let c = Ctx {
            s: &s,
            w: &w,
            w2: &w2,
            foreign_wallet,
        };
        let calls = [
            (
                format!("/wallet/{}/invoice", w.waka),
                json!({"num_satoshis": 5, "memo": "a\u{0}b"}),
            ),
            ("/wallet".to_owned(), json!({"user_label": "a\u{0}b"})),
            (
                format!("/wallet/{}/transfer", w.waka),
                json!({"dest_wallet_id": w2.id, "num_satoshis": 1, "memo": "x\u{0}"}),
            ),
        ];
        let mut failures = Vec::new();
        for (path, body) in calls {
            let before = snapshot(&c).await;
            let r = s.post(&s.sak, &path, body).await;
            let after = snapshot(&c).await;
            if r.status.is_server_error() {
                failures.push(format!("{path}: {} {}", r.status, short(&r.text)));
            } else if r.status.is_client_error() {
                let b = post("NUL", &path, json!({}), Msg::Any);
                let mut b = b;
                b.status = r.status.as_u16();
                if let Some(p) = envelope_problem(&b, &r) {
                    failures.push(format!("{path}: {p}"));
                }
                if before != after {
                    failures.push(format!("{path}: refused but wrote something"));
                }
            } else if !r.status.is_success() {
                failures.push(format!("{path}: {}", r.status));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        s
    })
    .await;
}

/// The memo cap refuses only what is too long: a transfer memo of exactly 639 characters is
/// kept whole on both WTXs, and canonical TLV keys (65537, 696969) are still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_keep_what_is_within_them() {
    on_each_db(|s| async move {
        let (w, w2, _) = setup(&s).await;
        let memo = "m".repeat(639);
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/transfer", w.waka),
                json!({"dest_wallet_id": w2.id, "num_satoshis": 5, "memo": memo}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["wtx_transfer_out"]["user_label"], memo.as_str());
        assert_eq!(r.json["wtx_transfer_in"]["user_label"], memo.as_str());
        let r = s
            .get(&s.sak, &format!("/wallet/{}/transactions", w2.id))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json[0]["user_label"], memo.as_str());

        let carol = s.scripted.external_pubkey().to_hex();
        let r = s
            .post(
                &s.sak,
                &format!("/wallet/{}/keysend", w.waka),
                json!({
                    "dest_pubkey": carol,
                    "num_satoshis": 10,
                    "custom_records": {"65537": "a", "7629169": "b"}
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let records = &r.json["lnTx"]["custom_records"];
        assert_eq!(records["65537"], "a", "{}", r.text);
        assert_eq!(records["7629169"], "b", "{}", r.text);
        s
    })
    .await;
}
