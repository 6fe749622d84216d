#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The fake CLN playing several releases ([`FakeOptions`]): which methods, parameters and
//! layers each release has, `getroutes`' hop format and arithmetic, askrene layers, and `xpay`'s
//! results and failure codes. Calls go straight to [`FakeCln::handle`] over the scripted
//! simulation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use satchel_cln::ClnVersion;
use satchel_cln::rpc;
use satchel_domain::{Bolt11, FailureReason, Msat, Network, NodePubkey, PaymentHash, now_secs};
use satchel_fakes::cln::{FakeChannel, FakeCln, FakeOptions, RpcFailure};
use satchel_lightning::{
    IncomingEvent, InvoiceEvents, InvoiceState, Invoices, LightningBackend, LnError, NewInvoice,
    NodeInfo, NodeInfoData, PayOutcome, PayRequest, PaymentLookup, Payments, Route, RouteHop,
    Routes,
};
use satchel_scripted::{Script, ScriptedBackend};
use serde_json::{Value, json};

const SEED: [u8; 32] = [7u8; 32];
/// What our one channel can send.
const SPENDABLE: u64 = 500_000_000;
const ALICE: NodePubkey = NodePubkey([2u8; 33]);
const BOB: NodePubkey = NodePubkey([3u8; 33]);
const SCID_A: u64 = (101 << 40) | (1 << 16);
const SCID_B: u64 = (102 << 40) | (2 << 16);
const SCID_C: u64 = (103 << 40) | (3 << 16);

fn v(major: u32, minor: u32) -> ClnVersion {
    ClnVersion::new(major, minor)
}

/// What `query_routes` answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// The scripted simulation's own one-hop, fee-free route.
    Scripted,
    /// us -> alice -> bob -> dest: alice charges 100 msat (CLTV delta 34), bob 50 (delta 40).
    ThreeHops,
    /// No route anywhere.
    Nothing,
}

/// The scripted simulation with a chosen routing answer.
struct Node {
    inner: Arc<ScriptedBackend>,
    routing: Routing,
}

/// The three-hop route for `amount` to `dest` in LND's vocabulary (as the backends report it);
/// block height 0, final CLTV 144.
fn three_hops(dest: NodePubkey, amount: u64) -> Route {
    let m = |x: u64| Msat::from_msat(x).unwrap();
    let hop = |chan_id, amt, fee, expiry, pub_key| RouteHop {
        chan_id,
        chan_capacity_sats: 0,
        amt_to_forward: m(amt),
        fee: m(fee),
        expiry,
        pub_key,
    };
    Route {
        total_time_lock: 219,
        total_fees: m(150),
        total_amt: m(amount + 150),
        hops: vec![
            hop(SCID_A, amount + 50, 100, 185, ALICE),
            hop(SCID_B, amount, 50, 145, BOB),
            hop(SCID_C, amount, 0, 145, dest),
        ],
    }
}

impl satchel_lightning::NodeAdmin for Node {}

#[async_trait]
impl NodeInfo for Node {
    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        self.inner.node_info().await
    }
}

#[async_trait]
impl Invoices for Node {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        self.inner.create_invoice(req).await
    }
    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        self.inner.cancel_invoice(hash).await
    }
    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        self.inner.lookup_invoice(hash).await
    }
}

#[async_trait]
impl Payments for Node {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        self.inner.pay(req).await
    }
    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        self.inner.lookup_payment(hash).await
    }
}

#[async_trait]
impl InvoiceEvents for Node {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        self.inner.events_after(after, limit, wait).await
    }
}

#[async_trait]
impl Routes for Node {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        match self.routing {
            Routing::Scripted => self.inner.query_routes(dest, amount).await,
            Routing::ThreeHops => Ok(vec![three_hops(dest, amount.as_msat())]),
            Routing::Nothing => Ok(Vec::new()),
        }
    }
}

struct T {
    fake: FakeCln,
    node: Arc<ScriptedBackend>,
    ours: NodePubkey,
    carol: NodePubkey,
}

impl T {
    async fn call(&self, method: &str, params: Value) -> Result<Value, RpcFailure> {
        self.fake.handle(method, params).await
    }

    async fn ok(&self, method: &str, params: Value) -> Value {
        match self.call(method, params.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{method} {params}: {e:?}"),
        }
    }

    async fn err(&self, method: &str, params: Value) -> RpcFailure {
        match self.call(method, params.clone()).await {
            Ok(v) => panic!("{method} {params} succeeded: {v}"),
            Err(e) => e,
        }
    }

    /// A `getroutes` call to carol for `amount` with `layers` and `extra` parameters.
    fn getroutes(&self, amount: u64, layers: &[&str], extra: Value) -> Value {
        let mut p = json!({
            "source": self.ours.to_hex(),
            "destination": self.carol.to_hex(),
            "amount_msat": amount,
            "layers": layers,
            "maxfee_msat": 10_000,
            "final_cltv": 144,
        });
        if let Value::Object(m) = extra {
            for (k, x) in m {
                p[k] = x;
            }
        }
        p
    }

    /// An invoice from carol; the next payment of it follows `script`.
    fn invoice(&self, amount: Option<u64>, script: Script) -> (Bolt11, PaymentHash) {
        let (b, _) = self.node.external_invoice(
            amount.map(|a| Msat::from_msat(a).unwrap()),
            "fake versions",
            3600,
        );
        let hash = b.payment_hash();
        self.node.script(hash, script);
        (b, hash)
    }
}

async fn start(version: ClnVersion, deprecated_apis: bool, routing: Routing) -> T {
    let node = Arc::new(ScriptedBackend::new(Network::Regtest, SEED));
    let backend: Arc<dyn LightningBackend> = Arc::new(Node {
        inner: node.clone(),
        routing,
    });
    let fake = FakeCln::start_with(
        backend,
        FakeOptions {
            version,
            deprecated_apis,
        },
    );
    let carol = node.external_pubkey();
    fake.set_channels(Arc::new(move || {
        vec![FakeChannel {
            peer_id: carol,
            short_channel_id: 1 << 40,
            spendable_msat: SPENDABLE,
            receivable_msat: SPENDABLE,
            total_msat: 2 * SPENDABLE,
        }]
    }));
    T {
        fake,
        ours: node.pubkey(),
        carol,
        node,
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_unknown_command(e: &RpcFailure, method: &str) {
    assert_eq!(e.code, rpc::JSONRPC2_METHOD_NOT_FOUND, "{e:?}");
    assert_eq!(e.message, format!("Unknown command '{method}'"));
}

fn assert_unknown_param(e: &RpcFailure, name: &str) {
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS, "{e:?}");
    assert!(
        e.message
            .starts_with(&format!("unknown parameter: {name},")),
        "{e:?}"
    );
}

/// Whether the release runs `method` at all (it then complains about the empty parameters).
async fn has_method(t: &T, method: &str) -> bool {
    match t.call(method, json!({})).await {
        Err(e) if e.code == rpc::JSONRPC2_METHOD_NOT_FOUND => false,
        Err(e) => {
            assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS, "{method}: {e:?}");
            assert!(e.message.starts_with("missing required parameter"), "{e:?}");
            true
        }
        Ok(v) => panic!("{method} with no parameters succeeded: {v}"),
    }
}

// ----------------------------------------------------------------------------- releases

#[tokio::test]
async fn default_options_play_v27_03_with_deprecated_apis() {
    assert_eq!(
        FakeOptions::default(),
        FakeOptions {
            version: ClnVersion::REMOVES_PAY,
            deprecated_apis: true
        }
    );
    let node = Arc::new(ScriptedBackend::new(Network::Regtest, SEED));
    let fake = FakeCln::start(node);
    assert_eq!(fake.options(), FakeOptions::default());
    let info = fake.handle("getinfo", json!({})).await.unwrap();
    assert_eq!(info["version"], "v27.03");
}

#[tokio::test]
async fn getinfo_reports_the_release_as_cln_prints_it() {
    for (version, text) in [
        (v(23, 8), "v23.08"),
        (v(24, 11), "v24.11"),
        (v(26, 6), "v26.06"),
        (v(27, 3), "v27.03"),
    ] {
        let t = start(version, true, Routing::Scripted).await;
        let info = t.ok("getinfo", json!({})).await;
        assert_eq!(info["version"], text);
        assert_eq!(
            ClnVersion::parse(info["version"].as_str().unwrap()),
            Some(version)
        );
    }
}

#[tokio::test]
async fn each_release_has_its_methods() {
    const NEW: [&str; 6] = [
        "xpay",
        "getroutes",
        "askrene-create-layer",
        "askrene-update-channel",
        "askrene-disable-node",
        "askrene-remove-layer",
    ];
    // v23.08: none of the successors; pay and getroute are there.
    let t = start(v(23, 8), true, Routing::Scripted).await;
    for m in NEW {
        assert_unknown_command(&t.err(m, json!({})).await, m);
    }
    assert!(has_method(&t, "pay").await);
    assert!(has_method(&t, "getroute").await);
    // v24.08: getroutes only.
    let t = start(v(24, 8), true, Routing::Scripted).await;
    assert!(has_method(&t, "getroutes").await);
    assert_unknown_command(&t.err("xpay", json!({})).await, "xpay");
    assert_unknown_command(
        &t.err("askrene-create-layer", json!({})).await,
        "askrene-create-layer",
    );
    // v24.11 and v26.06 (deprecated APIs on): everything.
    for version in [v(24, 11), v(26, 6)] {
        let t = start(version, true, Routing::Scripted).await;
        for m in NEW.iter().chain(&["pay", "getroute"]) {
            assert!(has_method(&t, m).await, "{version}: {m}");
        }
    }
    // v26.06 with deprecated APIs off: pay and getroute refused as deprecated.
    let t = start(v(26, 6), false, Routing::Scripted).await;
    for m in ["pay", "getroute"] {
        let e = t.err(m, json!({})).await;
        assert_eq!(e.code, rpc::JSONRPC2_METHOD_NOT_FOUND);
        assert_eq!(e.message, format!("Command \"{m}\" is deprecated"));
    }
    for m in NEW {
        assert!(has_method(&t, m).await, "{m}");
    }
    // v27.03: pay and getroute are gone, whatever deprecated_apis says.
    for deprecated in [true, false] {
        let t = start(v(27, 3), deprecated, Routing::Scripted).await;
        for m in ["pay", "getroute"] {
            assert_unknown_command(&t.err(m, json!({})).await, m);
        }
        for m in NEW {
            assert!(has_method(&t, m).await, "{m}");
        }
    }
    // Methods the fake never had stay unknown.
    assert_unknown_command(&t.err("keysend", json!({})).await, "keysend");
}

#[tokio::test]
async fn parameters_newer_than_the_release_are_unknown() {
    // getroutes maxdelay (v25.02), maxparts (v25.09).
    let t = start(v(24, 11), true, Routing::Scripted).await;
    let e = t
        .err(
            "getroutes",
            t.getroutes(1000, &[], json!({"maxdelay": 100})),
        )
        .await;
    assert_unknown_param(&e, "maxdelay");
    let t = start(v(25, 2), true, Routing::Scripted).await;
    t.ok(
        "getroutes",
        t.getroutes(1000, &[], json!({"maxdelay": 1000})),
    )
    .await;
    let e = t
        .err("getroutes", t.getroutes(1000, &[], json!({"maxparts": 1})))
        .await;
    assert_unknown_param(&e, "maxparts");
    let t = start(v(25, 9), true, Routing::Scripted).await;
    t.ok(
        "getroutes",
        t.getroutes(1000, &[], json!({"maxdelay": 1000, "maxparts": 1})),
    )
    .await;

    // xpay maxdelay (v25.02), payer_note (v26.04), label (v26.06).
    let t = start(v(24, 11), true, Routing::Scripted).await;
    let (b, _) = t.invoice(Some(10_000), Script::Succeed { fee: Msat::ZERO });
    let e = t
        .err("xpay", json!({"invstring": b.as_str(), "maxdelay": 2000}))
        .await;
    assert_unknown_param(&e, "maxdelay");
    let t = start(v(25, 9), true, Routing::Scripted).await;
    let (b, hash) = t.invoice(Some(10_000), Script::Succeed { fee: Msat::ZERO });
    for (name, value) in [("payer_note", json!("hi")), ("label", json!("l1"))] {
        let mut p = json!({"invstring": b.as_str()});
        p[name] = value;
        assert_unknown_param(&t.err("xpay", p).await, name);
    }
    assert_eq!(t.node.pay_count(hash), 0, "a refused call sent nothing");
    let e = t
        .err("xpay", json!({"invstring": b.as_str(), "maxdelay": 2017}))
        .await;
    assert_eq!(e.code, 217, "PAY_USER_ERROR: {e:?}");
    assert_eq!(e.message, "Failed: maximum delay allowed is 2016");
    t.ok("xpay", json!({"invstring": b.as_str(), "maxdelay": 2000}))
        .await;
    let t = start(v(26, 6), true, Routing::Scripted).await;
    let (b, hash) = t.invoice(Some(10_000), Script::Succeed { fee: Msat::ZERO });
    t.ok(
        "xpay",
        json!({"invstring": b.as_str(), "label": "mine", "payer_note": "hi"}),
    )
    .await;
    let sent = t
        .ok("listsendpays", json!({"payment_hash": hash.to_hex()}))
        .await;
    assert_eq!(sent["payments"][0]["label"], "mine");

    // listsendpays paging (v23.11).
    let t = start(v(23, 8), true, Routing::Scripted).await;
    assert_unknown_param(&t.err("listsendpays", json!({"limit": 5})).await, "limit");
    let t = start(v(23, 11), true, Routing::Scripted).await;
    t.ok("listsendpays", json!({"limit": 5})).await;
}

// ----------------------------------------------------------------------------- getroutes

const OLD_HOP: [&str; 4] = [
    "short_channel_id_dir",
    "next_node_id",
    "amount_msat",
    "delay",
];
const NEW_HOP: [&str; 7] = [
    "short_channel_id_dir",
    "node_id_in",
    "node_id_out",
    "amount_in_msat",
    "amount_out_msat",
    "cltv_in",
    "cltv_out",
];

fn both_hop_fields() -> BTreeSet<String> {
    OLD_HOP
        .iter()
        .chain(&NEW_HOP)
        .map(|s| (*s).to_owned())
        .collect()
}

#[tokio::test]
async fn getroutes_hop_fields_follow_the_release() {
    for (version, deprecated, expected) in [
        (v(24, 11), true, set(&OLD_HOP)),
        (v(25, 9), false, set(&OLD_HOP)),
        (v(26, 6), true, both_hop_fields()),
        (v(26, 6), false, set(&NEW_HOP)),
        (v(27, 3), true, both_hop_fields()),
        (v(27, 6), true, set(&NEW_HOP)),
    ] {
        let t = start(version, deprecated, Routing::ThreeHops).await;
        let r = t
            .ok("getroutes", t.getroutes(1_000_000, &[], json!({})))
            .await;
        assert_eq!(
            keys(&r),
            set(&["probability_ppm", "routes"]),
            "{version} {deprecated}"
        );
        let routes = r["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(
            keys(&routes[0]),
            set(&["probability_ppm", "amount_msat", "final_cltv", "path"])
        );
        let path = routes[0]["path"].as_array().unwrap();
        assert_eq!(path.len(), 3);
        for hop in path {
            assert_eq!(keys(hop), expected, "{version} deprecated={deprecated}");
        }
    }
}

#[tokio::test]
async fn getroutes_amounts_and_cltvs_chain_from_the_destination() {
    let t = start(v(26, 6), true, Routing::ThreeHops).await;
    let amount = 1_000_000u64;
    let r = t
        .ok(
            "getroutes",
            t.getroutes(amount, &["auto.sourcefree"], json!({})),
        )
        .await;
    let route = &r["routes"][0];
    assert_eq!(route["amount_msat"], amount);
    assert_eq!(route["final_cltv"], 144);
    let path = route["path"].as_array().unwrap();
    let nodes = [t.ours, ALICE, BOB, t.carol];
    let scids = ["101x1x0", "102x2x0", "103x3x0"];
    // Fees: our channel free, alice 100 (into bob's channel), bob 50 (into carol's).
    // CLTV deltas: ours 0, alice 34, bob 40; carol wants 144.
    let expected = [
        (amount + 150, amount + 150, 218, 218),
        (amount + 150, amount + 50, 218, 184),
        (amount + 50, amount, 184, 144),
    ];
    for (i, hop) in path.iter().enumerate() {
        let (from, to) = (nodes[i], nodes[i + 1]);
        let dir = u8::from(from.0 > to.0);
        assert_eq!(hop["short_channel_id_dir"], format!("{}/{dir}", scids[i]));
        assert_eq!(hop["node_id_in"], from.to_hex());
        assert_eq!(hop["node_id_out"], to.to_hex());
        let (a_in, a_out, c_in, c_out) = expected[i];
        assert_eq!(hop["amount_in_msat"], a_in, "hop {i}");
        assert_eq!(hop["amount_out_msat"], a_out, "hop {i}");
        assert_eq!(hop["cltv_in"], c_in, "hop {i}");
        assert_eq!(hop["cltv_out"], c_out, "hop {i}");
        // The deprecated fields say the same as their successors.
        assert_eq!(hop["next_node_id"], hop["node_id_out"]);
        assert_eq!(hop["amount_msat"], hop["amount_in_msat"]);
        assert_eq!(hop["delay"], hop["cltv_in"]);
        if let Some(next) = path.get(i + 1) {
            assert_eq!(hop["amount_out_msat"], next["amount_in_msat"]);
            assert_eq!(hop["cltv_out"], next["cltv_in"]);
        }
    }
    // What crosses each channel is what getroute says is sent over it.
    let old = t
        .ok(
            "getroute",
            json!({"id": t.carol.to_hex(), "amount_msat": amount, "riskfactor": 10}),
        )
        .await;
    for (i, hop) in old["route"].as_array().unwrap().iter().enumerate() {
        assert_eq!(hop["amount_msat"], path[i]["amount_out_msat"], "hop {i}");
        assert_eq!(hop["delay"], path[i]["cltv_out"], "hop {i}");
    }

    // The same path, in the pre-v26.06 form.
    let t = start(v(24, 11), true, Routing::ThreeHops).await;
    let r = t.ok("getroutes", t.getroutes(amount, &[], json!({}))).await;
    let old_path = r["routes"][0]["path"].as_array().unwrap().clone();
    for (i, hop) in old_path.iter().enumerate() {
        assert_eq!(hop["next_node_id"], nodes[i + 1].to_hex());
        assert_eq!(hop["amount_msat"], path[i]["amount_in_msat"]);
        assert_eq!(hop["delay"], path[i]["cltv_in"]);
    }
}

#[tokio::test]
async fn getroutes_refuses_what_askrene_refuses() {
    let t = start(v(26, 6), true, Routing::ThreeHops).await;
    // Fee 150 msat: a budget of 149 is too little, 150 enough.
    let e = t
        .err(
            "getroutes",
            t.getroutes(1_000_000, &[], json!({"maxfee_msat": 149})),
        )
        .await;
    assert_eq!(e.code, rpc::PAY_ROUTE_TOO_EXPENSIVE);
    assert_eq!(e.message, "Could not find route without excessive cost");
    t.ok(
        "getroutes",
        t.getroutes(1_000_000, &[], json!({"maxfee_msat": 150})),
    )
    .await;
    // Total delay 218 blocks.
    let e = t
        .err(
            "getroutes",
            t.getroutes(1_000_000, &[], json!({"maxdelay": 217})),
        )
        .await;
    assert_eq!(e.code, rpc::PAY_ROUTE_TOO_EXPENSIVE);
    t.ok(
        "getroutes",
        t.getroutes(1_000_000, &[], json!({"maxdelay": 218})),
    )
    .await;
    let e = t
        .err(
            "getroutes",
            t.getroutes(1_000_000, &[], json!({"maxdelay": 2017})),
        )
        .await;
    assert_eq!(e.code, 217, "PAY_USER_ERROR: {e:?}");
    // More than all our channels can send.
    let e = t
        .err("getroutes", t.getroutes(SPENDABLE + 1, &[], json!({})))
        .await;
    assert_eq!(e.code, rpc::PAY_INSUFFICIENT_FUNDS);
    assert_eq!(
        e.message,
        format!(
            "We could not find a usable set of paths. Total source capacity is only \
             {SPENDABLE}msat (in 1 channels)."
        )
    );
    // Unknown layers, a zero amount, a foreign source.
    let e = t
        .err("getroutes", t.getroutes(1000, &["nosuch"], json!({})))
        .await;
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
    assert_eq!(
        e.message,
        "layers: unknown layer: invalid token '\"nosuch\"'"
    );
    let e = t.err("getroutes", t.getroutes(0, &[], json!({}))).await;
    assert_eq!(e.message, "amount must be non-zero");
    let e = t
        .err(
            "getroutes",
            t.getroutes(1000, &[], json!({"source": ALICE.to_hex()})),
        )
        .await;
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);

    let t = start(v(26, 6), true, Routing::Nothing).await;
    let e = t.err("getroutes", t.getroutes(1000, &[], json!({}))).await;
    assert_eq!(e.code, rpc::PAY_ROUTE_NOT_FOUND);
    assert_eq!(
        e.message,
        "There is no connection between source and destination at all"
    );
}

#[tokio::test]
async fn include_fees_layer_exists_from_v26_04_and_takes_fees_from_the_amount() {
    let t = start(v(25, 12), true, Routing::ThreeHops).await;
    let e = t
        .err(
            "getroutes",
            t.getroutes(1_000_000, &["auto.include_fees"], json!({})),
        )
        .await;
    assert_eq!(
        e.message,
        "layers: unknown layer: invalid token '\"auto.include_fees\"'"
    );
    let t = start(v(26, 4), true, Routing::ThreeHops).await;
    let r = t
        .ok(
            "getroutes",
            t.getroutes(1_000_000, &["auto.include_fees"], json!({})),
        )
        .await;
    assert_eq!(r["routes"][0]["amount_msat"], 1_000_000 - 150);
    assert_eq!(r["routes"][0]["path"][0]["amount_msat"], 1_000_000);
}

#[tokio::test]
async fn no_mpp_support_layer_follows_its_deprecation() {
    for (version, deprecated, known) in [
        (v(24, 11), true, false),
        (v(25, 2), true, true),
        (v(25, 9), false, true),
        (v(26, 6), true, true),
        (v(26, 6), false, false),
        (v(27, 3), true, true),
        (v(27, 3), false, false),
        (v(27, 6), true, false),
    ] {
        let t = start(version, deprecated, Routing::Scripted).await;
        let r = t
            .call(
                "getroutes",
                t.getroutes(1000, &["auto.no_mpp_support"], json!({})),
            )
            .await;
        match r {
            Ok(r) => assert!(known, "{version} {deprecated}: {r}"),
            Err(e) => {
                assert!(!known, "{version} {deprecated}: {e:?}");
                assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
                assert_eq!(
                    e.message,
                    "layers: unknown layer: invalid token '\"auto.no_mpp_support\"'"
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------- layers

#[tokio::test]
async fn layers_take_channels_and_nodes_out_of_routes() {
    let t = start(v(24, 11), true, Routing::Scripted).await;
    // The scripted route: our channel 1x0x0 straight to carol.
    let dir = u8::from(t.ours.0 > t.carol.0);
    let scidd = format!("1x0x0/{dir}");
    let other = format!("1x0x0/{}", 1 - dir);
    let r = t.ok("getroutes", t.getroutes(1000, &[], json!({}))).await;
    assert_eq!(r["routes"][0]["path"][0]["short_channel_id_dir"], scidd);

    let created = t
        .ok("askrene-create-layer", json!({"layer": "block"}))
        .await;
    assert_eq!(created["layers"][0]["layer"], "block");
    assert_eq!(created["layers"][0]["persistent"], false);
    // The other direction does not matter.
    t.ok(
        "askrene-update-channel",
        json!({"layer": "block", "short_channel_id_dir": other, "enabled": false}),
    )
    .await;
    t.ok("getroutes", t.getroutes(1000, &["block"], json!({})))
        .await;
    let done = t
        .ok(
            "askrene-update-channel",
            json!({"layer": "block", "short_channel_id_dir": scidd, "enabled": false}),
        )
        .await;
    assert_eq!(done, json!({}));
    let e = t
        .err("getroutes", t.getroutes(1000, &["block"], json!({})))
        .await;
    assert_eq!(e.code, rpc::PAY_ROUTE_NOT_FOUND);
    assert_eq!(
        e.message,
        format!(
            "We could not find a usable set of paths. The shortest path is 1x0x0, but {scidd} \
             marked disabled by layer block."
        )
    );
    // Only when the layer is applied.
    t.ok(
        "getroutes",
        t.getroutes(1000, &["auto.localchans"], json!({})),
    )
    .await;
    // Enabled again.
    t.ok(
        "askrene-update-channel",
        json!({"layer": "block", "short_channel_id_dir": scidd, "enabled": true}),
    )
    .await;
    t.ok("getroutes", t.getroutes(1000, &["block"], json!({})))
        .await;

    // A disabled node.
    t.ok("askrene-create-layer", json!({"layer": "nodes"}))
        .await;
    let done = t
        .ok(
            "askrene-disable-node",
            json!({"layer": "nodes", "node": t.carol.to_hex()}),
        )
        .await;
    assert_eq!(done, json!({}));
    let e = t
        .err(
            "getroutes",
            t.getroutes(1000, &["block", "nodes"], json!({})),
        )
        .await;
    assert_eq!(e.code, rpc::PAY_ROUTE_NOT_FOUND);
    assert!(
        e.message.ends_with(&format!(
            "but {scidd} leads to node disabled by layer nodes."
        )),
        "{e:?}"
    );
    // xpay reports getroutes' failure as its own.
    let (b, hash) = t.invoice(Some(10_000), Script::Succeed { fee: Msat::ZERO });
    let e = t
        .err(
            "xpay",
            json!({"invstring": b.as_str(), "layers": ["nodes"]}),
        )
        .await;
    assert_eq!(e.code, rpc::PAY_ROUTE_NOT_FOUND);
    assert!(e.message.starts_with("Failed: We could not find"), "{e:?}");
    assert_eq!(t.node.pay_count(hash), 0);

    // Removing it: it is gone from getroutes and from the layer commands.
    assert_eq!(
        t.ok("askrene-remove-layer", json!({"layer": "nodes"}))
            .await,
        json!({})
    );
    let e = t
        .err("getroutes", t.getroutes(1000, &["nodes"], json!({})))
        .await;
    assert_eq!(
        e.message,
        "layers: unknown layer: invalid token '\"nodes\"'"
    );
    for (method, p) in [
        ("askrene-remove-layer", json!({"layer": "nodes"})),
        (
            "askrene-disable-node",
            json!({"layer": "nodes", "node": t.carol.to_hex()}),
        ),
        (
            "askrene-update-channel",
            json!({"layer": "nodes", "short_channel_id_dir": scidd, "enabled": false}),
        ),
    ] {
        let e = t.err(method, p).await;
        assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS, "{method}");
        assert_eq!(
            e.message, "layer: Unknown layer: invalid token '\"nodes\"'",
            "{method}"
        );
    }
    let e = t
        .err(
            "askrene-update-channel",
            json!({"layer": "block", "short_channel_id_dir": "1x0x0"}),
        )
        .await;
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
}

#[tokio::test]
async fn create_layer_answers_as_the_release_does() {
    let base = [
        "layer",
        "persistent",
        "disabled_nodes",
        "created_channels",
        "channel_updates",
        "constraints",
        "biases",
    ];
    for (version, extra) in [
        (v(24, 11), &[][..]),
        (v(25, 12), &["node_biases"][..]),
        (v(26, 6), &["node_biases"][..]),
        (v(27, 3), &["node_biases", "impressions"][..]),
    ] {
        let t = start(version, true, Routing::Scripted).await;
        let r = t.ok("askrene-create-layer", json!({"layer": "l"})).await;
        assert_eq!(keys(&r), set(&["layers"]));
        let layer = &r["layers"][0];
        let expected: BTreeSet<String> =
            base.iter().chain(extra).map(|s| (*s).to_owned()).collect();
        assert_eq!(keys(layer), expected, "{version}");
        // A second non-persistent creation fails, a persistent one returns the layer.
        let e = t.err("askrene-create-layer", json!({"layer": "l"})).await;
        assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
        assert_eq!(e.message, "Layer already exists");
        let again = t
            .ok(
                "askrene-create-layer",
                json!({"layer": "l", "persistent": true}),
            )
            .await;
        assert_eq!(again["layers"][0]["layer"], "l");
        // xpay's own layer is there from the start.
        let e = t
            .err("askrene-create-layer", json!({"layer": "xpay"}))
            .await;
        assert_eq!(e.message, "Layer already exists");
        t.ok("getroutes", t.getroutes(1000, &["xpay"], json!({})))
            .await;
        let e = t
            .err("askrene-create-layer", json!({"layer": "auto.mine"}))
            .await;
        assert_eq!(e.message, "Cannot create auto layer");
    }
}

// --------------------------------------------------------------------------------- xpay

#[tokio::test]
async fn xpay_pays_and_answers_with_its_own_result() {
    for version in [v(24, 11), v(27, 3)] {
        let t = start(version, true, Routing::Scripted).await;
        let (b, hash) = t.invoice(
            Some(100_000),
            Script::Succeed {
                fee: Msat::from_msat(7).unwrap(),
            },
        );
        let r = t.ok("xpay", json!({"invstring": b.as_str()})).await;
        assert_eq!(
            keys(&r),
            set(&[
                "payment_preimage",
                "failed_parts",
                "successful_parts",
                "amount_msat",
                "amount_sent_msat"
            ]),
            "{version}"
        );
        assert_eq!(r["amount_msat"], 100_000);
        assert_eq!(r["amount_sent_msat"], 100_007);
        assert_eq!(r["failed_parts"], 0);
        assert_eq!(r["successful_parts"], 1);
        let preimage =
            satchel_domain::Preimage::from_hex(r["payment_preimage"].as_str().unwrap()).unwrap();
        assert_eq!(preimage.hash(), hash);
        // The part is there for listsendpays and waitsendpay.
        let sent = t
            .ok("listsendpays", json!({"payment_hash": hash.to_hex()}))
            .await;
        let parts = sent["payments"].as_array().unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0]["status"], "complete");
        assert_eq!(parts[0]["amount_sent_msat"], 100_007);
        assert_eq!(parts[0]["bolt11"], b.as_str());
        let w = t
            .ok(
                "waitsendpay",
                json!({"payment_hash": hash.to_hex(), "partid": 1}),
            )
            .await;
        assert_eq!(w["payment_preimage"], r["payment_preimage"]);
        // Paying it again: already paid, nothing sent.
        let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
        assert_eq!(e.code, rpc::PAY_INVOICE_ALREADY_PAID);
        assert_eq!(e.message, "Already paid this invoice successfully");
        assert_eq!(t.node.pay_count(hash), 1);
    }
}

#[tokio::test]
async fn xpay_amount_rules() {
    let t = start(v(24, 11), true, Routing::Scripted).await;
    let (any, any_hash) = t.invoice(None, Script::Succeed { fee: Msat::ZERO });
    let e = t.err("xpay", json!({"invstring": any.as_str()})).await;
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
    assert_eq!(e.message, "amount_msat required");
    let r = t
        .ok(
            "xpay",
            json!({"invstring": any.as_str(), "amount_msat": 4242}),
        )
        .await;
    assert_eq!(r["amount_msat"], 4242);
    assert_eq!(t.node.pay_count(any_hash), 1);
    let (fixed, _) = t.invoice(Some(1000), Script::Succeed { fee: Msat::ZERO });
    let e = t
        .err(
            "xpay",
            json!({"invstring": fixed.as_str(), "amount_msat": 1000}),
        )
        .await;
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
    assert_eq!(e.message, "amount_msat unnecessary");
    let e = t
        .err(
            "xpay",
            json!({"invstring": fixed.as_str(), "partial_msat": 2000}),
        )
        .await;
    assert_eq!(
        e.message,
        "partial_msat must be less or equal to total amount 1000msat"
    );
    let e = t.err("xpay", json!({"invstring": "lnbcrt1garbage"})).await;
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
    assert!(e.message.starts_with("Invalid bolt11 invoice"), "{e:?}");
}

#[tokio::test]
async fn xpay_default_fee_limit_is_one_percent_or_5000_msat() {
    let t = start(v(24, 11), true, Routing::Scripted).await;
    let fee = |x| Script::Succeed {
        fee: Msat::from_msat(x).unwrap(),
    };
    // 1% of 100 000 msat is 1000: the floor of 5000 applies.
    let (b, _) = t.invoice(Some(100_000), fee(5000));
    t.ok("xpay", json!({"invstring": b.as_str()})).await;
    let (b, _) = t.invoice(Some(100_000), fee(5001));
    let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_UNSPECIFIED_ERROR, "{e:?}");
    // 1% of 2 000 000 msat is 20 000.
    let (b, _) = t.invoice(Some(2_000_000), fee(20_000));
    t.ok("xpay", json!({"invstring": b.as_str()})).await;
    let (b, _) = t.invoice(Some(2_000_000), fee(20_001));
    t.err("xpay", json!({"invstring": b.as_str()})).await;
    // An explicit maxfee replaces it.
    let (b, _) = t.invoice(Some(100_000), fee(20));
    let e = t
        .err("xpay", json!({"invstring": b.as_str(), "maxfee": 19}))
        .await;
    assert_eq!(e.code, rpc::PAY_UNSPECIFIED_ERROR);
}

#[tokio::test]
async fn xpay_failures_carry_xpays_codes() {
    let t = start(v(26, 6), true, Routing::Scripted).await;
    let dir = u8::from(t.ours.0 > t.carol.0);

    // The destination does not know the payment.
    let (b, hash) = t.invoice(
        Some(10_000),
        Script::Fail(FailureReason::IncorrectPaymentDetails),
    );
    let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_DESTINATION_PERM_FAIL);
    assert_eq!(
        e.message,
        "Destination said it doesn't know invoice: incorrect_or_unknown_payment_details"
    );
    let w = t
        .err(
            "waitsendpay",
            json!({"payment_hash": hash.to_hex(), "partid": 1}),
        )
        .await;
    assert_eq!(w.code, rpc::PAY_DESTINATION_PERM_FAIL);

    // Sent, then failed: 209 after one attempt; the part is left failed.
    let (b, hash) = t.invoice(Some(10_000), Script::Fail(FailureReason::NoRoute));
    let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_UNSPECIFIED_ERROR);
    assert!(e.message.starts_with("Failed after 1 attempts. "), "{e:?}");
    assert!(
        e.message
            .contains(&format!("1x0x0/{dir}, assuming it can't carry 10000msat")),
        "{e:?}"
    );
    let sent = t
        .ok("listsendpays", json!({"payment_hash": hash.to_hex()}))
        .await;
    assert_eq!(sent["payments"][0]["status"], "failed");
    // A failed hash may be paid again.
    t.node.script(hash, Script::Succeed { fee: Msat::ZERO });
    t.ok("xpay", json!({"invstring": b.as_str()})).await;

    // Timed out.
    let (b, _) = t.invoice(Some(10_000), Script::Fail(FailureReason::Timeout));
    let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_UNSPECIFIED_ERROR);
    assert!(
        e.message.starts_with("Timed out after after 1 attempts. "),
        "{e:?}"
    );

    // Expired.
    let old = t.node.external_invoice_at(
        Some(Msat::from_msat(10_000).unwrap()),
        "old",
        u64::try_from(now_secs()).unwrap() - 7200,
        60,
    );
    let e = t.err("xpay", json!({"invstring": old.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_INVOICE_EXPIRED);
    assert!(e.message.starts_with("Invoice expired "), "{e:?}");
    assert_eq!(t.node.pay_count(old.payment_hash()), 0);

    // More than our channels hold: nothing sent, getroutes' 215.
    let (b, hash) = t.invoice(Some(SPENDABLE + 1), Script::Succeed { fee: Msat::ZERO });
    let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_INSUFFICIENT_FUNDS);
    assert!(
        e.message
            .starts_with("Failed: We could not find a usable set of paths. Total source capacity"),
        "{e:?}"
    );
    assert_eq!(t.node.pay_count(hash), 0);
}

#[tokio::test]
async fn xpay_routing_failures_before_any_attempt() {
    // No route: 205.
    let t = start(v(24, 11), true, Routing::Nothing).await;
    let (b, hash) = t.invoice(Some(10_000), Script::Succeed { fee: Msat::ZERO });
    let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_ROUTE_NOT_FOUND);
    assert_eq!(
        e.message,
        "Failed: There is no connection between source and destination at all"
    );
    assert_eq!(t.node.pay_count(hash), 0);
    let sent = t
        .ok("listsendpays", json!({"payment_hash": hash.to_hex()}))
        .await;
    assert_eq!(sent["payments"], json!([]));

    // Route fee 150 msat above maxfee: 206.
    let t = start(v(24, 11), true, Routing::ThreeHops).await;
    let (b, hash) = t.invoice(
        Some(1_000_000),
        Script::Succeed {
            fee: Msat::from_msat(150).unwrap(),
        },
    );
    let e = t
        .err("xpay", json!({"invstring": b.as_str(), "maxfee": 149}))
        .await;
    assert_eq!(e.code, rpc::PAY_ROUTE_TOO_EXPENSIVE);
    assert_eq!(
        e.message,
        "Failed: Could not find route without excessive cost"
    );
    assert_eq!(t.node.pay_count(hash), 0);
    let r = t
        .ok("xpay", json!({"invstring": b.as_str(), "maxfee": 150}))
        .await;
    assert_eq!(r["amount_sent_msat"], 1_000_150);
    // Unknown layers are getroutes' complaint too.
    let (b, _) = t.invoice(Some(1000), Script::Succeed { fee: Msat::ZERO });
    let e = t
        .err(
            "xpay",
            json!({"invstring": b.as_str(), "layers": ["nosuch"]}),
        )
        .await;
    assert_eq!(e.code, rpc::JSONRPC2_INVALID_PARAMS);
    assert_eq!(
        e.message,
        "Failed: layers: unknown layer: invalid token '\"nosuch\"'"
    );
}

#[tokio::test]
async fn xpay_refuses_a_hash_with_a_pending_part() {
    let t = start(v(24, 11), true, Routing::Scripted).await;
    let (b, hash) = t.invoice(
        Some(10_000),
        Script::PendingThenSucceed {
            fee: Msat::from_msat(3).unwrap(),
        },
    );
    let first = {
        let fake = t.fake.clone();
        let p = json!({"invstring": b.as_str()});
        tokio::spawn(async move { fake.handle("xpay", p).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sent = t
            .ok("listsendpays", json!({"payment_hash": hash.to_hex()}))
            .await;
        if sent["payments"][0]["status"] == "pending" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pending part");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = t.err("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(e.code, rpc::PAY_IN_PROGRESS);
    assert!(t.node.release(hash));
    let r = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r["amount_sent_msat"], 10_003);
    assert_eq!(t.node.pay_count(hash), 1);
}

#[tokio::test]
async fn xpay_needs_no_description_for_a_description_hash_invoice() {
    let t = start(v(24, 11), true, Routing::Scripted).await;
    // One of our own invoices, made with deschashonly: a self-payment the scripted node
    // settles.
    let inv = t
        .ok(
            "invoice",
            json!({"amount_msat": 5000, "label": "dh", "description": "hashed", "deschashonly": true}),
        )
        .await;
    let b = Bolt11::parse(inv["bolt11"].as_str().unwrap()).unwrap();
    assert!(b.description_hash().is_some());
    let r = t.ok("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(r["amount_msat"], 5000);
}

// ---------------------------------------------------------------------------------- pay

#[tokio::test]
async fn pay_still_works_where_it_exists() {
    for (version, deprecated) in [(v(23, 8), true), (v(24, 11), true), (v(26, 6), true)] {
        let t = start(version, deprecated, Routing::Scripted).await;
        let (b, hash) = t.invoice(
            Some(20_000),
            Script::Succeed {
                fee: Msat::from_msat(2).unwrap(),
            },
        );
        let r = t.ok("pay", json!({"bolt11": b.as_str()})).await;
        assert_eq!(r["status"], "complete", "{version}");
        assert_eq!(r["amount_sent_msat"], 20_002);
        assert_eq!(r["payment_hash"], hash.to_hex());
        let route = t
            .ok(
                "getroute",
                json!({"id": t.carol.to_hex(), "amount_msat": 1000, "riskfactor": 1}),
            )
            .await;
        assert_eq!(route["route"].as_array().unwrap().len(), 1);
    }
    let t = start(v(26, 6), false, Routing::Scripted).await;
    let (b, hash) = t.invoice(Some(20_000), Script::Succeed { fee: Msat::ZERO });
    let e = t.err("pay", json!({"bolt11": b.as_str()})).await;
    assert_eq!(e.message, "Command \"pay\" is deprecated");
    assert_eq!(t.node.pay_count(hash), 0);
    let t = start(v(27, 3), true, Routing::Scripted).await;
    let (b, hash) = t.invoice(Some(20_000), Script::Succeed { fee: Msat::ZERO });
    assert_unknown_command(&t.err("pay", json!({"bolt11": b.as_str()})).await, "pay");
    assert_eq!(t.node.pay_count(hash), 0);
    // Its successor pays the same invoice.
    t.ok("xpay", json!({"invstring": b.as_str()})).await;
    assert_eq!(t.node.pay_count(hash), 1);
}
