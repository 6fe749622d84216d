#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Contract tests: what `LndRest` sends and what the fake LND answers, checked against LND's own
//! OpenAPI 2.0 definitions of its REST proxy (vendored verbatim in `tests/contracts/`, upstream
//! commit in its README).
//!
//! * The conformance suite runs through the fake (over the scripted simulation, so it takes
//!   seconds) with the fake's recorder on. Every exchange is then checked: the path and method
//!   exist, every query and path parameter is defined and has the declared type, every request
//!   body field is defined with its type, and every unary answer and every stream line
//!   (`{"result": …}` / `{"error": …}`) matches the response definition.
//! * LND's REST quirks are the rules: `(u)int64` fields are JSON strings of digits, `bytes` are
//!   base64 (32 bytes for hashes and preimages, 33 for node keys, or empty when unset), enums
//!   are names, 32-bit integers and booleans are JSON numbers and booleans, an unset message
//!   field is `null` (the gateway emits unpopulated fields).
//! * Every field of the adapter's response structs (`src/wire.rs`, each marked with its proto
//!   message, e.g. `` `lnrpc.Invoice` ``) must be defined in that message's definition.
//! * A field the adapter sends or reads must not be deprecated in the definitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use satchel_domain::{FailureReason, Msat, Network, PaymentHash};
use satchel_fakes::lnd::{Exchange, FakeLnd};
use satchel_lightning::{
    ChannelInfo, ChannelState, DevnetControl, Invoices, LightningBackend, NodeInfo, Routes,
};
use satchel_lnd::LndRest;
use satchel_scripted::{Script, ScriptedBackend};
use satchel_testkit::conformance::{self, Harness, SendPath};
use serde_json::Value;

const SWAGGER_FILES: [&str; 3] = [
    "lightning.swagger.json",
    "router.swagger.json",
    "invoices.swagger.json",
];

/// The endpoints the adapter uses (method, swagger path).
const USED: [(&str, &str); 11] = [
    ("GET", "/v1/getinfo"),
    ("GET", "/v1/channels"),
    ("GET", "/v1/channels/pending"),
    ("POST", "/v1/invoices"),
    ("GET", "/v1/invoices"),
    ("GET", "/v2/invoices/lookup"),
    ("GET", "/v1/invoices/subscribe"),
    ("POST", "/v2/invoices/cancel"),
    ("POST", "/v2/router/send"),
    ("GET", "/v2/router/track/{payment_hash}"),
    ("GET", "/v1/graph/routes/{pub_key}/{amt}"),
];

fn contracts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contracts")
}

/// The three swagger files merged: paths and definitions.
struct Swagger {
    /// swagger path → method (lowercase) → operation.
    paths: BTreeMap<String, BTreeMap<String, Value>>,
    definitions: BTreeMap<String, Value>,
}

impl Swagger {
    fn load() -> Swagger {
        let mut paths: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        let mut definitions = BTreeMap::new();
        for f in SWAGGER_FILES {
            let text = std::fs::read_to_string(contracts_dir().join(f)).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["swagger"], "2.0", "{f}");
            for (p, ops) in v["paths"].as_object().unwrap() {
                for (m, op) in ops.as_object().unwrap() {
                    paths
                        .entry(p.clone())
                        .or_default()
                        .insert(m.clone(), op.clone());
                }
            }
            for (name, d) in v["definitions"].as_object().unwrap() {
                definitions.insert(name.clone(), d.clone());
            }
        }
        Swagger { paths, definitions }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/definitions/").expect(r);
                self.definitions
                    .get(name)
                    .unwrap_or_else(|| panic!("no definition {name}"))
            }
            None => schema,
        }
    }

    /// The swagger path a concrete path matches, with its path parameters.
    fn route(&self, method: &str, path: &str) -> Option<(String, Vec<(String, String)>)> {
        let segs: Vec<&str> = path.split('/').collect();
        let m = method.to_ascii_lowercase();
        'paths: for (tpl, ops) in &self.paths {
            if !ops.contains_key(&m) {
                continue;
            }
            let tsegs: Vec<&str> = tpl.split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut params = Vec::new();
            for (t, s) in tsegs.iter().zip(&segs) {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    params.push((name.to_owned(), (*s).to_owned()));
                } else if t != s {
                    continue 'paths;
                }
            }
            // Prefer a literal match (`/v1/invoices/subscribe` over `/v1/invoice/{x}`).
            return Some((tpl.clone(), params));
        }
        None
    }
}

/// Problems found, and the fields used (for the deprecation check and the report).
#[derive(Default)]
struct Check {
    errors: BTreeSet<String>,
    /// `definition.field` of every field seen in a request the adapter sent.
    sent_fields: BTreeSet<String>,
    /// `definition.field` described as deprecated, seen anywhere (where).
    deprecated_seen: BTreeSet<String>,
}

fn is_deprecated(prop: &Value) -> bool {
    let text = format!(
        "{} {}",
        prop.get("title").and_then(Value::as_str).unwrap_or(""),
        prop.get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
    .to_ascii_lowercase();
    text.contains("deprecated")
}

fn is_base64(s: &str) -> bool {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    STANDARD.decode(s).is_ok()
        || URL_SAFE.decode(s).is_ok()
        || STANDARD_NO_PAD.decode(s).is_ok()
        || URL_SAFE_NO_PAD.decode(s).is_ok()
}

/// The length a `bytes` field must have, by its name: hashes and preimages 32, node keys 33.
fn expected_len(at: &str) -> Option<usize> {
    let name = at.rsplit(['.', ' ']).next().unwrap_or(at);
    if name.ends_with("hash") || name.ends_with("preimage") {
        Some(32)
    } else if matches!(
        name,
        "dest" | "pub_key" | "identity_pubkey" | "last_hop_pubkey"
    ) {
        Some(33)
    } else {
        None
    }
}

fn decoded_len(s: &str) -> Option<usize> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
        .map(|b| b.len())
}

fn is_int_string(s: &str, signed: bool) -> bool {
    let digits = if signed {
        s.strip_prefix('-').unwrap_or(s)
    } else {
        s
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl Check {
    /// Validates `v` against `schema`; `at` names the place, `def` the enclosing definition.
    fn value(&mut self, sw: &Swagger, schema: &Value, v: &Value, at: &str, sent: bool) {
        let (schema, def_name) = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => (
                sw.resolve(schema),
                r.trim_start_matches("#/definitions/").to_owned(),
            ),
            None => (schema, String::new()),
        };
        let ty = schema.get("type").and_then(Value::as_str);
        let format = schema.get("format").and_then(Value::as_str);
        let fail = |c: &mut Check, what: &str| {
            c.errors.insert(format!("{at}: {what}, got {}", short(v)));
        };
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(v) {
                fail(self, &format!("not one of the enum {def_name} {allowed:?}"));
            }
            return;
        }
        match (ty, format) {
            (Some("string"), Some("int64" | "uint64")) => match v.as_str() {
                Some(s) if is_int_string(s, format == Some("int64")) => {}
                _ => fail(self, "expected a (u)int64 as a JSON string of digits"),
            },
            (Some("string"), Some("byte")) => match v.as_str() {
                Some(s) if is_base64(s) => {
                    // Empty: the field is unset (proto3 default).
                    if let Some(n) = expected_len(at)
                        && !s.is_empty()
                        && decoded_len(s) != Some(n)
                    {
                        fail(self, &format!("expected base64 of {n} bytes"));
                    }
                }
                _ => fail(self, "expected base64 bytes"),
            },
            (Some("string"), _) => {
                if !v.is_string() {
                    fail(self, "expected a string");
                }
            }
            (Some("integer"), Some("int64" | "uint64")) => {
                // grpc-gateway renders these as strings too.
                let ok = v.as_str().is_some_and(|s| is_int_string(s, true)) || v.is_i64();
                if !ok {
                    fail(self, "expected a 64-bit integer");
                }
            }
            (Some("integer"), _) => {
                let ok = match format {
                    Some("uint32") => v.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
                    _ => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                };
                if !ok {
                    fail(self, &format!("expected a JSON integer ({format:?})"));
                }
            }
            (Some("number"), _) => {
                if !v.is_number() {
                    fail(self, "expected a number");
                }
            }
            (Some("boolean"), _) => {
                if !v.is_boolean() {
                    fail(self, "expected a boolean");
                }
            }
            (Some("array"), _) => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.value(sw, &schema["items"], item, &format!("{at}[{i}]"), sent);
                    }
                }
                None => fail(self, "expected an array"),
            },
            (None, _)
                if schema.get("properties").is_none()
                    && schema.get("additionalProperties").is_none() =>
            {
                // `{}`: anything.
            }
            (Some("object") | None, _) => {
                // An unset message field: the gateway emits `null` (EmitUnpopulated).
                if v.is_null() && !def_name.is_empty() {
                    return;
                }
                let Some(obj) = v.as_object() else {
                    fail(self, "expected an object");
                    return;
                };
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (k, fv) in obj {
                        let place = if def_name.is_empty() {
                            format!("{at}.{k}")
                        } else {
                            format!("{def_name}.{k}")
                        };
                        match props.get(k) {
                            None => {
                                self.errors.insert(format!(
                                    "{at}: field {k:?} is not defined in {}",
                                    if def_name.is_empty() {
                                        "the schema"
                                    } else {
                                        &def_name
                                    }
                                ));
                            }
                            Some(p) => {
                                if sent {
                                    self.sent_fields.insert(place.clone());
                                }
                                if is_deprecated(p) {
                                    self.deprecated_seen.insert(format!(
                                        "{place} ({})",
                                        if sent {
                                            "sent by the adapter"
                                        } else {
                                            "answered"
                                        }
                                    ));
                                }
                                self.value(sw, p, fv, &format!("{at}.{k}"), sent);
                            }
                        }
                    }
                } else if let Some(ap) = schema.get("additionalProperties") {
                    // A map: keys are the proto map's keys (uint64 keys as decimal strings).
                    for (k, fv) in obj {
                        self.value(sw, ap, fv, &format!("{at}[{k}]"), sent);
                    }
                } else if !obj.is_empty() && ty == Some("object") && def_name != "protobufAny" {
                    self.errors.insert(format!(
                        "{at}: {def_name} defines no fields, got {}",
                        short(v)
                    ));
                }
            }
            (Some(other), _) => fail(self, &format!("unknown schema type {other}")),
        }
    }

    /// A path or query parameter (always text on the wire).
    fn param(&mut self, p: &Value, raw: &str, at: &str) {
        let ty = p.get("type").and_then(Value::as_str);
        let format = p.get("format").and_then(Value::as_str);
        let ok = match (ty, format) {
            (Some("string"), Some("int64")) => is_int_string(raw, true),
            (Some("string"), Some("uint64")) => is_int_string(raw, false),
            (Some("string"), Some("byte")) => {
                is_base64(raw) && expected_len(at).is_none_or(|n| decoded_len(raw) == Some(n))
            }
            (Some("integer"), _) => is_int_string(raw, true),
            (Some("boolean"), _) => raw == "true" || raw == "false",
            (Some("string"), _) => true,
            _ => false,
        };
        if !ok {
            self.errors
                .insert(format!("{at}: {raw:?} is not a {ty:?}/{format:?}"));
        }
        if is_deprecated(p) {
            self.deprecated_seen
                .insert(format!("{at} (parameter sent by the adapter)"));
        }
    }

    fn exchange(&mut self, sw: &Swagger, x: &Exchange) -> Option<String> {
        let Some((tpl, path_params)) = sw.route(&x.method, &x.path) else {
            self.errors
                .insert(format!("{} {}: no such operation", x.method, x.path));
            return None;
        };
        let key = format!("{} {tpl}", x.method);
        let op = &sw.paths[&tpl][&x.method.to_ascii_lowercase()];
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let find = |name: &str, kind: &str| {
            params
                .iter()
                .find(|p| p["name"] == name && p["in"] == kind)
                .cloned()
        };
        for (name, raw) in &path_params {
            match find(name, "path") {
                Some(p) => self.param(&p, raw, &format!("{key} path {name}")),
                None => {
                    self.errors
                        .insert(format!("{key}: path parameter {name} not defined"));
                }
            }
        }
        for (name, raw) in &x.query {
            match find(name, "query") {
                Some(p) => self.param(&p, raw, &format!("{key} query {name}")),
                None => {
                    self.errors
                        .insert(format!("{key}: query parameter {name:?} not defined"));
                }
            }
        }
        match (&x.request, find("body", "body")) {
            (None, _) => {}
            (Some(body), Some(p)) => {
                self.value(sw, &p["schema"], body, &format!("{key} request"), true);
            }
            (Some(_), None) => {
                self.errors
                    .insert(format!("{key}: a body was sent, the operation takes none"));
            }
        }
        let ok = &op["responses"]["200"]["schema"];
        let default = &op["responses"]["default"]["schema"];
        for (i, body) in x.response.iter().enumerate() {
            let at = format!(
                "{key} response {}",
                if x.stream {
                    i.to_string()
                } else {
                    String::new()
                }
            );
            if x.stream {
                // Each line is `{"result": …}` or `{"error": …}`, never both.
                let obj = body.as_object();
                let n = obj.map_or(0, |o| o.len());
                if n != 1 {
                    self.errors.insert(format!(
                        "{at}: a stream line must hold result or error: {}",
                        short(body)
                    ));
                }
                self.value(sw, ok, body, &at, false);
            } else if x.status == 200 {
                self.value(sw, ok, body, &at, false);
            } else {
                // Errors: google.rpc.Status (`default` response).
                self.value(
                    sw,
                    default,
                    body,
                    &format!("{at} (status {})", x.status),
                    false,
                );
            }
        }
        Some(key)
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

/// `(definition, [field])` of every response struct in `src/wire.rs` marked with its proto
/// message in its doc comment (`` /// `lnrpc.Invoice` ``).
fn wire_structs() -> Vec<(String, Vec<String>)> {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/wire.rs"),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut message: Option<String> = None;
    let mut current: Option<(String, Vec<String>)> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some((def, fields)) = current.as_mut() {
            if t == "}" {
                out.push((def.clone(), std::mem::take(fields)));
                current = None;
            } else if let Some(rest) = t.strip_prefix("pub ")
                && let Some((name, _)) = rest.split_once(':')
            {
                fields.push(name.trim().to_owned());
            }
            continue;
        }
        if let Some(doc) = t.strip_prefix("///") {
            if let Some(start) = doc.find('`') {
                let rest = &doc[start + 1..];
                if let Some(end) = rest.find('`') {
                    let name = &rest[..end];
                    if let Some((pkg, msg)) = name.split_once('.')
                        && ["lnrpc", "routerrpc", "invoicesrpc"].contains(&pkg)
                    {
                        // A nested message (`lnrpc.PendingChannelsResponse.PendingChannel`)
                        // is defined without its package (`PendingChannelsResponsePendingChannel`).
                        message = Some(if msg.contains('.') {
                            msg.replace('.', "")
                        } else {
                            format!("{pkg}{msg}")
                        });
                    }
                }
            }
        } else if t.starts_with("pub(crate) struct") && t.ends_with('{') {
            if let Some(def) = message.take() {
                current = Some((def, Vec::new()));
            }
        } else if !t.starts_with("#[") {
            message = None;
        }
    }
    out
}

// ------------------------------------------------------------------------------------ harness

const SEED: [u8; 32] = [42u8; 32];

struct Lnd {
    node: Arc<ScriptedBackend>,
    fake: FakeLnd,
    lnd: Arc<LndRest>,
}

#[async_trait]
impl Harness for Lnd {
    fn name(&self) -> String {
        "lnd-rest (fake LND over the scripted simulation, recorded)".to_owned()
    }

    fn backend(&self) -> Arc<dyn LightningBackend> {
        self.lnd.clone()
    }

    fn devnet(&self) -> Arc<dyn DevnetControl> {
        self.node.clone()
    }

    fn supports_restart(&self) -> bool {
        true
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.lnd =
            Arc::new(LndRest::new(self.fake.config(Network::Regtest)).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn set_policy(&self, _accept: bool) {}

    fn enforces_keysend_policy(&self) -> bool {
        false
    }

    fn distinct_peers(&self) -> bool {
        false
    }

    fn before_send(&self, hash: PaymentHash, amount: Msat, path: SendPath) {
        let script = match path.fee(amount) {
            Ok(Some(fee)) => Script::Succeed { fee },
            Ok(None) => Script::Fail(FailureReason::InsufficientBalance),
            Err(e) => panic!("fee of {amount}: {e}"),
        };
        self.node.script(hash, script);
    }
}

#[test]
fn vendored_definitions_cover_every_endpoint_used() {
    let sw = Swagger::load();
    for (m, p) in USED {
        assert!(
            sw.paths
                .get(p)
                .is_some_and(|ops| ops.contains_key(&m.to_ascii_lowercase())),
            "{m} {p} is not in the vendored definitions"
        );
    }
}

#[test]
fn fields_the_adapter_reads_are_defined_and_current() {
    let sw = Swagger::load();
    let structs = wire_structs();
    let names: Vec<&str> = structs.iter().map(|(d, _)| d.as_str()).collect();
    for expected in [
        "lnrpcGetInfoResponse",
        "lnrpcChain",
        "lnrpcAddInvoiceResponse",
        "lnrpcInvoice",
        "lnrpcInvoiceHTLC",
        "lnrpcListInvoiceResponse",
        "lnrpcPayment",
        "lnrpcQueryRoutesResponse",
        "lnrpcRoute",
        "lnrpcHop",
        "lnrpcListChannelsResponse",
        "lnrpcChannel",
        "lnrpcChannelConstraints",
        "lnrpcPendingChannelsResponse",
        "PendingChannelsResponsePendingOpenChannel",
        "PendingChannelsResponseWaitingCloseChannel",
        "PendingChannelsResponsePendingChannel",
    ] {
        assert!(
            names.contains(&expected),
            "wire.rs: no struct for {expected} ({names:?})"
        );
    }
    let mut errors = Vec::new();
    let mut n = 0;
    for (def, fields) in &structs {
        let Some(d) = sw.definitions.get(def) else {
            errors.push(format!("{def}: no such definition"));
            continue;
        };
        for f in fields {
            n += 1;
            match d["properties"].get(f) {
                None => errors.push(format!("{def}.{f}: read by the adapter, not defined")),
                Some(p) if is_deprecated(p) => {
                    errors.push(format!("{def}.{f}: read by the adapter, deprecated"));
                }
                Some(_) => {}
            }
        }
    }
    eprintln!(
        "{n} fields of {} messages read by the adapter checked",
        structs.len()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_answers_match_lnds_definitions() {
    let sw = Swagger::load();
    let node = Arc::new(ScriptedBackend::new(Network::Regtest, SEED));
    let fake = FakeLnd::start(node.clone() as Arc<dyn LightningBackend>)
        .await
        .unwrap();
    fake.record();
    let lnd = Arc::new(
        LndRest::connect(fake.config(Network::Regtest))
            .await
            .unwrap(),
    );
    let mut h = Lnd { node, fake, lnd };
    let report = conformance::run_all(&mut h).await;
    match &report {
        Ok(r) => eprintln!("{r}"),
        Err(e) => eprintln!("{e}"),
    }
    // Paths the scenarios do not take: a lookup LND answers NotFound, and a route for an
    // amount that is not whole satoshis (`amt` 0 + `amt_msat`).
    let _ = h.lnd.lookup_invoice(PaymentHash([7u8; 32])).await;
    let dest = h.node.external_pubkey();
    h.lnd
        .query_routes(dest, Msat::from_msat(1_500).unwrap())
        .await
        .unwrap();
    // The operator's calls, over a channel in each state the two channel endpoints list.
    let states = [
        ChannelState::Active,
        ChannelState::Inactive,
        ChannelState::Pending,
        ChannelState::Closing,
    ];
    h.node.set_channels(
        states
            .iter()
            .enumerate()
            .map(|(i, state)| ChannelInfo {
                channel_id: hex::encode([u8::try_from(i).unwrap() + 1; 32]),
                short_channel_id: Some((103 << 40) | (u64::try_from(i).unwrap() << 16)),
                peer: dest,
                capacity_sats: 1_000_000,
                local_balance_msat: 400_000_000,
                remote_balance_msat: 590_000_000,
                state: *state,
                confirmations: None,
            })
            .collect(),
    );
    let status = h.lnd.node_status().await.unwrap();
    assert_eq!(status.synced, Some(true));
    let listed = h.lnd.list_channels().await.unwrap();
    let listed_states: Vec<ChannelState> = listed.iter().map(|c| c.state).collect();
    assert_eq!(listed_states, states);
    let stats = h.lnd.node_stats().await.unwrap();
    assert_eq!(
        (stats.channels_active, stats.channels_inactive),
        (Some(1), Some(2))
    );
    let captures = h.fake.captures();

    let mut check = Check::default();
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for x in &captures {
        if let Some(key) = check.exchange(&sw, x) {
            let c = counts.entry(key).or_default();
            c.0 += 1;
            c.1 += usize::from(x.request.is_some()) + x.query.len();
            c.2 += x.response.len();
        }
    }
    eprintln!("exchanges validated (requests, request bodies + query parameters, answers/lines):");
    for (k, (n, q, r)) in &counts {
        eprintln!("  {k:<45} {n:>4} {q:>5} {r:>5}");
    }
    eprintln!("deprecated fields seen: {:#?}", check.deprecated_seen);
    for (m, p) in USED {
        assert!(
            counts.contains_key(&format!("{m} {p}")),
            "the scenarios never exercised {m} {p}"
        );
    }
    assert!(
        check.errors.is_empty(),
        "{} contract violations:\n{}",
        check.errors.len(),
        check.errors.iter().cloned().collect::<Vec<_>>().join("\n")
    );
    let deprecated_sent: Vec<&String> = check
        .deprecated_seen
        .iter()
        .filter(|d| !d.ends_with("(answered)"))
        .collect();
    assert!(
        deprecated_sent.is_empty(),
        "the adapter sends deprecated fields: {deprecated_sent:?}"
    );
    if let Err(e) = report {
        panic!("{e}");
    }
}

/// The checker itself: each rule catches what it is for.
#[test]
fn the_checker_refuses_what_lnd_would_not_send() {
    let sw = Swagger::load();
    let invoice = serde_json::json!({ "$ref": "#/definitions/lnrpcInvoice" });
    let hash = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    let errors = |v: Value| {
        let mut c = Check::default();
        c.value(&sw, &invoice, &v, "t", false);
        c.errors
    };
    assert!(
        errors(serde_json::json!({
            "value_msat": "1000", "state": "SETTLED", "r_hash": hash, "private": true,
            "description_hash": "", "htlcs": [{ "amp": null, "custom_records": { "65537": "aGk=" } }]
        }))
        .is_empty()
    );
    for bad in [
        serde_json::json!({ "value_msat": 1000 }),
        serde_json::json!({ "value_msat": "1e3" }),
        serde_json::json!({ "state": "PAID" }),
        serde_json::json!({ "no_such_field": 1 }),
        serde_json::json!({ "r_hash": "not base64!" }),
        serde_json::json!({ "r_hash": "AAAA" }),
        serde_json::json!({ "private": "true" }),
        serde_json::json!({ "cltv_expiry": 40 }),
        serde_json::json!({ "htlcs": [{ "expiry_height": "40" }] }),
        serde_json::json!({ "htlcs": [{ "custom_records": { "65537": 5 } }] }),
        serde_json::json!({ "htlcs": {} }),
    ] {
        assert!(!errors(bad.clone()).is_empty(), "accepted {bad}");
    }
    // Deprecated fields are noticed.
    let mut c = Check::default();
    c.value(
        &sw,
        &invoice,
        &serde_json::json!({ "settled": true }),
        "t",
        true,
    );
    assert_eq!(
        c.deprecated_seen.into_iter().collect::<Vec<_>>(),
        ["lnrpcInvoice.settled (sent by the adapter)"]
    );
}
