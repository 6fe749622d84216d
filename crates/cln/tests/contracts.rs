#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Contract tests: every JSON-RPC call `ClnBackend` makes and every result the fake CLN returns,
//! checked against Core Lightning's own JSON Schemas (`doc/schemas/<method>.json`, vendored
//! verbatim in `tests/contracts/`, upstream commit in its README).
//!
//! * The conformance suite runs through the fake (over the scripted simulation, so it takes
//!   seconds) with the fake's recorder on; each call's `params` is validated against the
//!   method's `request` schema and each result against its `response` schema:
//!   `additionalProperties: false`, `required`, `enum`, `allOf` / `if` / `then` / `else`,
//!   `oneOf`, and CLN's own type names (`msat`, `u64`, `u32`, `u16`, `hex`, `hash`, `secret`,
//!   `pubkey`, `short_channel_id`, `txid`, ...).
//! * Every field of the adapter's result structs (`src/rpc.rs`) must be defined in the schema of
//!   the result it is read from.
//! * This runs once per emulated release (v23.08, v24.11, v26.06 with and without deprecated
//!   APIs, v27.03): a method or request field CLN added after that release, and a method or
//!   field the adapter sends that is deprecated at that release, fail the test.
//! * A deprecated field the adapter reads is allowed only where listed ([`READ_DEPRECATED`]:
//!   read for older releases, when the new field is absent).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use satchel_cln::{ClnBackend, ClnConfig, ClnVersion};
use satchel_domain::{FailureReason, Msat, Network, PaymentHash};
use satchel_fakes::cln::{Call, FakeChannel, FakeCln, FakeOptions};
use satchel_lightning::{
    ChannelInfo, ChannelState, DevnetControl, LightningBackend, LnError, NodeInfo,
};
use satchel_scripted::{Script, ScriptedBackend};
use satchel_testkit::conformance::{self, Harness, SendPath};
use serde_json::Value;

/// Methods the adapter calls whose schema is vendored.
const METHODS: [&str; 18] = [
    "getinfo",
    "invoice",
    "listinvoices",
    "delinvoice",
    "waitanyinvoice",
    "pay",
    "xpay",
    "listsendpays",
    "waitsendpay",
    "getroute",
    "getroutes",
    "askrene-create-layer",
    "askrene-update-channel",
    "askrene-disable-node",
    "askrene-remove-layer",
    "createonion",
    "sendonion",
    "listpeerchannels",
];

/// Methods the adapter calls for which Core Lightning publishes no schema in the vendored set
/// (the `datastore` family is Satchel's own bookkeeping of cancelled invoices).
const UNSCHEMED: [&str; 2] = ["datastore", "listdatastore"];

fn contracts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contracts")
}

fn load(method: &str) -> Value {
    let text = std::fs::read_to_string(contracts_dir().join(format!("{method}.json")))
        .unwrap_or_else(|e| panic!("{method}.json: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn is_hex(s: &str) -> bool {
    s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_scid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('x').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Request-side `msat`: CLN's parser takes an integer or a string with `msat`/`sat`/`btc`.
fn is_msat_param(v: &Value) -> bool {
    v.is_u64()
        || v.as_str().is_some_and(|s| {
            let n = s
                .strip_suffix("msat")
                .or_else(|| s.strip_suffix("sat"))
                .or_else(|| s.strip_suffix("btc"))
                .unwrap_or(s);
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
}

#[derive(Default)]
struct Check {
    deprecated: BTreeSet<String>,
    /// Deprecated fields the adapter sent to a release that already deprecates them.
    sent_deprecated: BTreeSet<String>,
    /// Request fields the adapter sent that CLN added after the release: (place, version).
    too_new: BTreeSet<String>,
    /// The emulated release (`None`: [`MIN_CLN`]).
    release: Option<(u32, u32)>,
}

/// The oldest Core Lightning the adapter supports (`src/lib.rs`).
const MIN_CLN: (u32, u32) = (23, 8);

/// `"v23.08"`, `"v0.12.0"`, `"pre-v0.10.1"` → (major, minor).
fn version(v: &Value) -> Option<(u32, u32)> {
    let s = v.as_str()?;
    let s = s.trim_start_matches("pre-").trim_start_matches('v');
    let mut parts = s.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn newer_than_min(added: Option<&Value>) -> Option<String> {
    newer_than(added, MIN_CLN)
}

/// `Some(added)` if `added` is after `release`.
fn newer_than(added: Option<&Value>, release: (u32, u32)) -> Option<String> {
    let a = added?;
    match version(a) {
        Some(v) if v <= release => None,
        _ => Some(a.to_string()),
    }
}

/// Whether `deprecated` (`["v26.06", "v27.03"]`: deprecated in, removed in) applies at
/// `release`.
fn deprecated_at(deprecated: &Value, release: (u32, u32)) -> bool {
    let first = deprecated
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or(deprecated);
    version(first).is_none_or(|v| v <= release)
}

impl Check {
    /// Errors of `v` against `schema` (empty: valid). `request`: the adapter's parameters.
    fn validate(&mut self, schema: &Value, v: &Value, at: &str, request: bool) -> Vec<String> {
        let mut errs = Vec::new();
        let Some(s) = schema.as_object() else {
            return errs;
        };
        let release = self.release.unwrap_or(MIN_CLN);
        if request && let Some(a) = newer_than(s.get("added"), release) {
            self.too_new.insert(format!("{at} (added {a})"));
        }
        if let Some(d) = s.get("deprecated") {
            if request && deprecated_at(d, release) {
                self.sent_deprecated
                    .insert(format!("{at} (deprecated {d})"));
            }
            self.deprecated.insert(format!(
                "{at} (deprecated {d}, {})",
                if request {
                    "sent by the adapter"
                } else {
                    "answered by the fake"
                }
            ));
        }
        if let Some(ty) = s.get("type").and_then(Value::as_str) {
            let ok = match ty {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "boolean" => v.is_boolean(),
                "number" => v.is_number(),
                "integer" => v.is_i64() || v.is_u64(),
                "u64" => v.is_u64(),
                "u32" => v.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
                "u16" => v.as_u64().is_some_and(|n| u16::try_from(n).is_ok()),
                "u8" => v.as_u64().is_some_and(|n| u8::try_from(n).is_ok()),
                "msat" if request => is_msat_param(v),
                "msat" => v.is_u64(),
                "msat_or_any" => v.as_str() == Some("any") || is_msat_param(v),
                "hex" => v.as_str().is_some_and(is_hex),
                "hash" | "secret" | "txid" => {
                    v.as_str().is_some_and(|s| s.len() == 64 && is_hex(s))
                }
                "pubkey" => v.as_str().is_some_and(|s| {
                    s.len() == 66 && is_hex(s) && (s.starts_with("02") || s.starts_with("03"))
                }),
                "short_channel_id" => v.as_str().is_some_and(is_scid),
                "short_channel_id_dir" => v.as_str().is_some_and(|s| {
                    s.split_once('/')
                        .is_some_and(|(scid, d)| is_scid(scid) && (d == "0" || d == "1"))
                }),
                other => {
                    errs.push(format!("{at}: unknown schema type {other:?}"));
                    true
                }
            };
            if !ok {
                errs.push(format!("{at}: expected {ty}, got {}", short(v)));
                return errs;
            }
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            errs.push(format!("{at}: {} is not one of {allowed:?}", short(v)));
        }
        if let Some(obj) = v.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            if let Some(req) = s.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    // Required from the release that added it (the schema is today's).
                    let added = props.and_then(|p| p.get(r)).and_then(|p| p.get("added"));
                    if newer_than(added, release).is_some() {
                        continue;
                    }
                    if !obj.contains_key(r) {
                        errs.push(format!("{at}: required field {r:?} missing"));
                    }
                }
            }
            for (k, fv) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(p) => {
                        let sub = self.validate(p, fv, &format!("{at}.{k}"), request);
                        errs.extend(sub);
                    }
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errs.push(format!("{at}: field {k:?} is not allowed here"));
                        }
                        Some(ap @ Value::Object(_)) => {
                            let sub = self.validate(ap, fv, &format!("{at}.{k}"), request);
                            errs.extend(sub);
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, item) in arr.iter().enumerate() {
                let sub = self.validate(items, item, &format!("{at}[{i}]"), request);
                errs.extend(sub);
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                let sub_errs = self.validate(sub, v, at, request);
                errs.extend(sub_errs);
            }
        }
        if let Some(cond) = s.get("if") {
            let mut probe = Check::default();
            let branch = if probe.validate(cond, v, at, request).is_empty() {
                s.get("then")
            } else {
                s.get("else")
            };
            if let Some(b) = branch {
                let sub = self.validate(b, v, at, request);
                errs.extend(sub);
            }
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
            let mut matching = 0;
            let mut first = Vec::new();
            for sub in one {
                let mut probe = Check::default();
                let e = probe.validate(sub, v, at, request);
                if e.is_empty() {
                    matching += 1;
                } else if first.is_empty() {
                    first = e;
                }
            }
            if matching != 1 {
                errs.push(format!("{at}: matches {matching} of oneOf ({first:?})"));
            }
        }
        errs
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

/// Every property name a schema defines for an object: its own and its branches'.
fn defined_fields(schema: &Value, out: &mut BTreeMap<String, Value>) {
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in p {
            let e = out.entry(k.clone()).or_insert(Value::Null);
            if e.is_null() || v.get("deprecated").is_some() {
                *e = v.clone();
            }
        }
    }
    for key in ["allOf", "oneOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            defined_fields(sub, out);
        }
    }
    for key in ["then", "else"] {
        if let Some(sub) = schema.get(key) {
            defined_fields(sub, out);
        }
    }
}

/// `(struct, [field])` of each `pub struct` in `src/rpc.rs` (serde field names).
fn rpc_structs() -> BTreeMap<String, Vec<String>> {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rpc.rs"),
    )
    .unwrap();
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in src.lines() {
        let t = line.trim();
        if let Some((name, fields)) = current.as_mut() {
            if t == "}" {
                out.insert(name.clone(), std::mem::take(fields));
                current = None;
            } else if let Some(rest) = t.strip_prefix("pub ")
                && let Some((f, _)) = rest.split_once(':')
            {
                fields.push(f.trim().to_owned());
            }
        } else if let Some(rest) = t.strip_prefix("pub struct ")
            && let Some(name) = rest.strip_suffix(" {")
        {
            current = Some((name.trim().to_owned(), Vec::new()));
        }
    }
    out
}

/// Where each result struct of `src/rpc.rs` is read from: (method, path of property names
/// into the response; `[]` steps into array items).
const READ_FROM: &[(&str, &str, &[&str])] = &[
    ("GetInfo", "getinfo", &[]),
    ("InvoiceCreated", "invoice", &[]),
    ("ListInvoices", "listinvoices", &[]),
    ("Invoice", "listinvoices", &["invoices", "[]"]),
    ("Invoice", "waitanyinvoice", &[]),
    ("ListSendPays", "listsendpays", &[]),
    ("SendPay", "listsendpays", &["payments", "[]"]),
    ("SendPay", "sendonion", &[]),
    ("SendPay", "waitsendpay", &[]),
    ("PayResult", "pay", &[]),
    ("XpayResult", "xpay", &[]),
    ("GetRoute", "getroute", &[]),
    ("RouteEntry", "getroute", &["route", "[]"]),
    ("GetRoutes", "getroutes", &[]),
    ("GetRoutesRoute", "getroutes", &["routes", "[]"]),
    ("GetRoutesHop", "getroutes", &["routes", "[]", "path", "[]"]),
    ("CreateOnion", "createonion", &[]),
    ("ListPeerChannels", "listpeerchannels", &[]),
    ("PeerChannel", "listpeerchannels", &["channels", "[]"]),
];

/// Deprecated fields the adapter reads, and why that is right.
const READ_DEPRECATED: &[(&str, &str)] = &[
    // getroutes hops before v26.06 have only these; read when `node_id_out` /
    // `amount_out_msat` / `cltv_out` are absent (removed in v27.06).
    ("GetRoutesHop", "next_node_id"),
    ("GetRoutesHop", "amount_msat"),
    ("GetRoutesHop", "delay"),
];

/// Structs read from results of methods with no vendored schema.
const READ_UNSCHEMED: [&str; 2] = ["ListDatastore", "DatastoreEntry"];

#[test]
fn fields_the_adapter_reads_are_defined() {
    let structs = rpc_structs();
    let mut errors = Vec::new();
    let mut deprecated = Vec::new();
    let mut too_new = Vec::new();
    let mut n = 0;
    for name in structs.keys() {
        let mapped = READ_FROM.iter().any(|(s, _, _)| s == name)
            || READ_UNSCHEMED.contains(&name.as_str())
            || name == "ClnMsat";
        assert!(
            mapped,
            "rpc.rs: struct {name} is not mapped to a CLN result"
        );
    }
    for (name, method, path) in READ_FROM {
        let fields = structs
            .get(*name)
            .unwrap_or_else(|| panic!("rpc.rs has no struct {name}"));
        let mut schema = load(method)["response"].clone();
        for step in *path {
            schema = if *step == "[]" {
                schema["items"].clone()
            } else {
                let mut all = BTreeMap::new();
                defined_fields(&schema, &mut all);
                all.remove(*step).unwrap_or(Value::Null)
            };
        }
        let mut all = BTreeMap::new();
        defined_fields(&schema, &mut all);
        for f in fields {
            n += 1;
            match all.get(f) {
                None => errors.push(format!("{name}.{f} (from {method}): not in the schema")),
                Some(p)
                    if p.get("deprecated").is_some()
                        && !READ_DEPRECATED.contains(&(name, f.as_str())) =>
                {
                    deprecated.push(format!(
                        "{name}.{f} (from {method}): deprecated {}",
                        p["deprecated"]
                    ));
                }
                Some(p) => {
                    // A field newer than the oldest supported CLN must be optional to us.
                    if let Some(a) = newer_than_min(p.get("added")) {
                        too_new.push(format!("{name}.{f} (from {method}): added {a}"));
                    }
                }
            }
        }
    }
    eprintln!("{n} field reads checked");
    eprintln!("fields read that CLN added after v23.08 (must be optional): {too_new:#?}");
    assert!(deprecated.is_empty(), "{}", deprecated.join("\n"));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

// ------------------------------------------------------------------------------------ harness

const SEED: [u8; 32] = [42u8; 32];

struct Cln {
    node: Arc<ScriptedBackend>,
    config: ClnConfig,
    backend: Arc<ClnBackend>,
}

#[async_trait]
impl Harness for Cln {
    fn name(&self) -> String {
        "cln (fake CLN over the scripted simulation, recorded)".to_owned()
    }

    fn backend(&self) -> Arc<dyn LightningBackend> {
        self.backend.clone()
    }

    fn devnet(&self) -> Arc<dyn DevnetControl> {
        self.node.clone()
    }

    fn supports_restart(&self) -> bool {
        true
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.backend = Arc::new(
            ClnBackend::connect(&self.config)
                .await
                .map_err(|e| e.to_string())?,
        );
        Ok(())
    }

    fn set_policy(&self, _accept: bool) {}

    fn enforces_keysend_policy(&self) -> bool {
        false
    }

    fn distinct_peers(&self) -> bool {
        false
    }

    fn forgets_unsent_failures_on_restart(&self) -> bool {
        true
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

/// The releases the contract is checked at: (release, deprecated APIs allowed).
const RELEASES: [((u32, u32), bool); 6] = [
    ((23, 8), true),
    ((24, 11), true),
    ((25, 2), true),
    ((26, 6), true),
    ((26, 6), false),
    ((27, 3), true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_results_match_clns_schemas() {
    let mut failures = Vec::new();
    for (release, deprecated_apis) in RELEASES {
        if let Err(e) = check_release(release, deprecated_apis).await {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The conformance suite through a fake CLN emulating `release`, recorded and checked.
#[allow(clippy::too_many_lines)]
async fn check_release(release: (u32, u32), deprecated_apis: bool) -> Result<(), String> {
    let label = format!(
        "v{}.{:02}{}",
        release.0,
        release.1,
        if deprecated_apis {
            ""
        } else {
            " (deprecated APIs off)"
        }
    );
    eprintln!("==================== {label}");
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(ScriptedBackend::new(Network::Regtest, SEED));
    let fake = FakeCln::start_with(
        node.clone() as Arc<dyn LightningBackend>,
        FakeOptions {
            version: ClnVersion::new(release.0, release.1),
            deprecated_apis,
        },
    );
    let peer = node.external_pubkey();
    fake.set_channels(Arc::new(move || {
        vec![FakeChannel {
            peer_id: peer,
            short_channel_id: (103 << 40) | (1 << 16),
            spendable_msat: 500_000_000,
            receivable_msat: 500_000_000,
            total_msat: 1_000_000_000,
        }]
    }));
    let socket = fake
        .serve_socket(dir.path().join("lightning-rpc"))
        .await
        .unwrap();
    fake.record();
    let config = ClnConfig::socket(socket.path(), Network::Regtest);
    let backend = Arc::new(ClnBackend::connect(&config).await.unwrap());
    let mut h = Cln {
        node,
        config,
        backend,
    };
    // Scenarios that cannot pass on CLN whatever the transport (see tests/conformance.rs).
    let known = [
        (
            "invoice_create_and_lookup",
            "CLN cannot make an invoice from a bare description hash",
        ),
        (
            "keysend_in_follows_policy",
            "CLN does not expose a received keysend's custom TLVs",
        ),
        // Keysends (route, createonion, sendonion) are still exercised: by
        // keysend_in_follows_policy's own sends and restart_midway; over the devnet in
        // tests/conformance.rs.
        (
            "keysend_out_with_custom_records",
            "the fake's routes over the scripted simulation find no route to carol",
        ),
        (
            "keysend_custom_record_types",
            "the fake's routes over the scripted simulation find no route to carol",
        ),
    ];
    let report = conformance::run_all_except(&mut h, &known).await;
    match &report {
        Ok(r) => eprintln!("{r}"),
        Err(e) => eprintln!("{e}"),
    }
    // The operator's calls: over the channel set above, then over the node's own channels in
    // every state `listpeerchannels` shows.
    let operator_errors = operator_calls(&h.backend, &fake, &h.node).await;
    let calls: Vec<Call> = fake.captures();
    let mut error_answers = BTreeSet::new();
    for c in &calls {
        if let Err(e) = &c.result {
            error_answers.insert(format!("{}: {}", c.method, short(e)));
        }
    }
    eprintln!("error answers: {error_answers:#?}");

    let schemas: BTreeMap<&str, Value> = METHODS.iter().map(|m| (*m, load(m))).collect();
    let mut check = Check {
        release: Some(release),
        ..Check::default()
    };
    let mut errors = Vec::new();
    // method → (calls, results validated, errors answered)
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut deprecated_methods = BTreeSet::new();
    for c in &calls {
        let entry = counts.entry(c.method.clone()).or_default();
        entry.0 += 1;
        let Some(schema) = schemas.get(c.method.as_str()) else {
            if !UNSCHEMED.contains(&c.method.as_str()) {
                errors.push(format!(
                    "{}: the adapter calls a method with no schema",
                    c.method
                ));
            }
            continue;
        };
        if let Some(d) = schema.get("deprecated")
            && deprecated_at(d, release)
        {
            deprecated_methods.insert(format!("{} (deprecated {d})", c.method));
        }
        let at = format!("{} request", c.method);
        errors.extend(check.validate(&schema["request"], &c.params, &at, true));
        match &c.result {
            Ok(r) => {
                entry.1 += 1;
                let at = format!("{} response", c.method);
                errors.extend(check.validate(&schema["response"], r, &at, false));
            }
            Err(_) => entry.2 += 1,
        }
    }
    eprintln!("calls validated (calls, results validated, error answers):");
    for (m, (n, ok, err)) in &counts {
        eprintln!("  {m:<24} {n:>4} {ok:>4} {err:>4}");
    }
    eprintln!("deprecated fields seen: {:#?}", check.deprecated);
    let mut problems = Vec::new();
    if !deprecated_methods.is_empty() {
        problems.push(format!(
            "the adapter calls methods deprecated at {label}: {deprecated_methods:?}"
        ));
    }
    let mut new_methods = BTreeSet::new();
    for m in counts.keys() {
        if let Some(a) = schemas
            .get(m.as_str())
            .and_then(|s| newer_than(s.get("added"), release))
        {
            new_methods.insert(format!("{m} (added {a})"));
        }
    }
    if !new_methods.is_empty() {
        problems.push(format!(
            "the adapter calls methods {label} does not have: {new_methods:?}"
        ));
    }
    if !check.too_new.is_empty() {
        problems.push(format!(
            "the adapter sends fields {label} does not know: {:?}",
            check.too_new
        ));
    }
    if !check.sent_deprecated.is_empty() {
        problems.push(format!(
            "the adapter sends fields deprecated at {label}: {:?}",
            check.sent_deprecated
        ));
    }
    // What each release must be paid and routed with.
    let uses = |m: &str| counts.contains_key(m);
    let xpay = release >= (24, 11);
    let getroutes = release >= (25, 2);
    for (method, want) in [
        ("pay", !xpay),
        ("xpay", xpay),
        ("getroute", !getroutes),
        ("getroutes", getroutes),
    ] {
        if uses(method) != want {
            problems.push(format!(
                "{label}: {method} {}",
                if want { "never called" } else { "called" }
            ));
        }
    }
    let mut unique: Vec<String> = errors;
    unique.sort();
    unique.dedup();
    if !unique.is_empty() {
        problems.push(format!(
            "{label}: {} schema violations:\n{}",
            unique.len(),
            unique.join("\n")
        ));
    }
    for m in METHODS {
        if !uses(m) {
            eprintln!("note: the scenarios never called {m}");
        }
    }
    if let Err(e) = report {
        problems.push(format!("{label}: {e}"));
    }
    if let Err(e) = operator_errors {
        problems.push(format!("{label}: operator calls: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// `node_status`, `list_channels` and `node_stats` through the recorded fake: first over the
/// channels the test set, then over the node's own in each state.
async fn operator_calls(
    cln: &ClnBackend,
    fake: &FakeCln,
    node: &ScriptedBackend,
) -> Result<(), String> {
    let err = |e: LnError| e.to_string();
    let status = cln.node_status().await.map_err(err)?;
    if status.synced != Some(true) || status.block_height.is_none() {
        return Err(format!("node_status: {status:?}"));
    }
    let listed = cln.list_channels().await.map_err(err)?;
    if listed.len() != 1 || listed[0].state != ChannelState::Active {
        return Err(format!("list_channels (set by the test): {listed:?}"));
    }
    fake.clear_channels();
    let states = [
        ChannelState::Active,
        ChannelState::Inactive,
        ChannelState::Pending,
        ChannelState::Closing,
    ];
    node.set_channels(
        states
            .iter()
            .enumerate()
            .map(|(i, state)| ChannelInfo {
                channel_id: hex::encode([u8::try_from(i).unwrap() + 1; 32]),
                short_channel_id: (*state != ChannelState::Pending)
                    .then_some((103 << 40) | (u64::try_from(i).unwrap() << 16)),
                peer: node.external_pubkey(),
                capacity_sats: 1_000_000,
                local_balance_msat: 400_000_000,
                remote_balance_msat: 590_000_000,
                state: *state,
                confirmations: None,
            })
            .collect(),
    );
    let listed = cln.list_channels().await.map_err(err)?;
    let got: Vec<ChannelState> = listed.iter().map(|c| c.state).collect();
    if got != states {
        return Err(format!("list_channels (the node's): {listed:?}"));
    }
    let stats = cln.node_stats().await.map_err(err)?;
    if (stats.channels_active, stats.channels_inactive) != (Some(1), Some(2)) {
        return Err(format!("node_stats: {stats:?}"));
    }
    Ok(())
}

/// The checker itself: each rule catches what it is for.
#[test]
fn the_checker_refuses_what_cln_would_not_send() {
    let schema = load("waitsendpay")["response"].clone();
    let hash = "11".repeat(32);
    let good = serde_json::json!({
        "id": 1, "created_index": 1, "payment_hash": hash, "status": "complete",
        "created_at": 1_700_000_000u64, "amount_sent_msat": 1001, "amount_msat": 1000,
        "destination": format!("02{}", "22".repeat(32)), "payment_preimage": "33".repeat(32),
    });
    let errors = |v: &Value| Check::default().validate(&schema, v, "t", false);
    assert_eq!(errors(&good), Vec::<String>::new());
    let mut cases = Vec::new();
    for (field, value) in [
        ("amount_sent_msat", serde_json::json!("1001msat")),
        ("status", serde_json::json!("pending")),
        ("destination", serde_json::json!("22".repeat(33))),
        ("payment_hash", serde_json::json!("11")),
        ("created_at", serde_json::json!(-1)),
        ("extra_field", serde_json::json!(1)),
    ] {
        let mut v = good.clone();
        v[field] = value;
        cases.push(v);
    }
    // Required, also by an `if`/`then` branch (a complete payment has a preimage).
    for field in ["amount_sent_msat", "payment_preimage"] {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(field);
        cases.push(v);
    }
    for bad in cases {
        assert!(!errors(&bad).is_empty(), "accepted {bad}");
    }
    // Request-side msat accepts CLN's string forms.
    let pay = load("pay")["request"].clone();
    let req = serde_json::json!({ "bolt11": "lnbc1", "amount_msat": "1000msat" });
    assert_eq!(
        Check::default().validate(&pay, &req, "t", true),
        Vec::<String>::new()
    );
}
